// A SOFARPC provider of com.sinew.test.EchoService on 127.0.0.1:PORT; every answer
// names the server (NAME) so a test can tell which endpoint served a call.
// Usage: node server.js PORT NAME
'use strict';
const { RpcServer } = require('sofa-rpc-node').server;

const port = Number(process.argv[2]);
const name = process.argv[3] || 'server';
const quiet = { info() {}, warn() {}, debug() {}, error() {} };
const server = new RpcServer({ logger: quiet, port });
server.addService({ interfaceName: 'com.sinew.test.EchoService' }, {
  async echo(s) { return `${name}:${s}`; },
  async fail(s) { throw new Error(`failed: ${s}`); },
  async slow(ms) {
    await new Promise(resolve => setTimeout(resolve, ms));
    return `${name}:slow`;
  },
});
server.start().then(() => console.log(`listening ${port}`));
