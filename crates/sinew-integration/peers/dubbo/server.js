// A Dubbo provider (sofa-rpc-node speaking Dubbo through dubbo-remoting) of
// com.sinew.test.EchoService at VERSION on 127.0.0.1:PORT; every answer names the
// server (NAME) so a test can tell which endpoint served a call.
// Usage: node server.js PORT NAME [VERSION]
'use strict';
const { RpcServer } = require('sofa-rpc-node').server;

const port = Number(process.argv[2]);
const name = process.argv[3] || 'server';
const version = process.argv[4] || '1.0.0';
const quiet = { info() {}, warn() {}, debug() {}, error() {} };
const server = new RpcServer({ logger: quiet, port, protocol: require('dubbo-remoting') });
server.addService({ interfaceName: 'com.sinew.test.EchoService', version }, {
  async echo(s) { return `${name}:${s}`; },
  async fail(s) { throw new Error(`failed: ${s}`); },
  async slow(ms) {
    await new Promise(resolve => setTimeout(resolve, ms));
    return `${name}:slow`;
  },
});
server.start().then(() => console.log(`listening ${port}`));
