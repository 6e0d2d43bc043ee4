// A Dubbo consumer (sofa-rpc-node speaking Dubbo through dubbo-remoting) that calls
// through ADDR (host:port) directly, without a registry, and prints one line per call:
// `ok <result>` or `error <message>`.
// Usage: node client.js ADDR INTERFACE VERSION GROUP METHOD COUNT [ARG]
//   echo calls send `hi<i>`; slow calls send ARG (milliseconds).
'use strict';
const { RpcClient } = require('sofa-rpc-node').client;

const [addr, interfaceName, version, group, method, count, arg] = process.argv.slice(2);
const quiet = { info() {}, warn() {}, debug() {}, error() {} };

(async () => {
  const client = new RpcClient({ logger: quiet, protocol: require('dubbo-remoting') });
  const consumer = client.createConsumer({ interfaceName, version, group, serverHost: addr });
  await consumer.ready();
  for (let i = 0; i < Number(count); i++) {
    const args = method === 'slow' ? [Number(arg)] : [`hi${i}`];
    try {
      const result = await consumer.invoke(method, args, { responseTimeout: 3000 });
      console.log(`ok ${result}`);
    } catch (e) {
      console.log(`error ${String(e.message).split('\n')[0]}`);
    }
  }
  process.exit(0);
})().catch(e => {
  console.log(`fatal ${e.message}`);
  process.exit(1);
});
