// ws_node_client.js — drives ringbeatd with node's `ws` (Debian node-ws; NODE_PATH=/usr/share/nodejs):
// node ws_node_client.js PORT [ws|wss]; prints one JSON object of what it saw. Every step has a
// timeout. With wss, node's own tls module carries it (the test certificate is not verified).
'use strict';
const WebSocket = require('ws');

const port = Number(process.argv[2]);
const scheme = process.argv[3] || 'ws';
const url = `${scheme}://127.0.0.1:${port}`;
const out = {};
setTimeout(() => { console.log(JSON.stringify(Object.assign(out, { timeout: true }))); process.exit(2); }, 30000);

function open(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url + path, { perMessageDeflate: true, maxPayload: 0, rejectUnauthorized: false });
    const t = setTimeout(() => reject(new Error('open timeout')), 5000);
    ws.on('upgrade', (res) => { ws.upgradeHeaders = res.headers; });
    ws.on('open', () => { clearTimeout(t); resolve(ws); });
    ws.on('error', reject);
  });
}

function next(ws, event, ms = 3000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    ws.once(event, (...args) => { clearTimeout(t); resolve(args); });
  });
}

async function closedWith(send) {
  const ws = await open('/?mode=client&interval=1s');
  const closed = next(ws, 'close');
  send(ws);
  const [code, reason] = await closed;
  return [code, reason.toString()];
}

async function main() {
  const ws = await open('/node?mode=client&interval=1500ms&id=node-1');
  out.headers = ws.upgradeHeaders;
  out.extensions = ws.extensions; // permessage-deflate was offered: it must be declined
  const pongs = [];
  for (const p of ['a', '', 'b'.repeat(125)]) {
    const pong = next(ws, 'pong');
    ws.ping(Buffer.from(p));
    const [data] = await pong;
    pongs.push(data.toString() === p);
  }
  out.pongs = pongs;
  let msg = next(ws, 'message');
  ws.send('part one, ', { fin: false });
  ws.send('part two', { fin: true });
  let [data, isBinary] = await msg;
  out.fragmented_echo = [data.toString(), isBinary];
  const blob = Buffer.alloc(60000, 7);
  msg = next(ws, 'message', 5000);
  ws.send(blob);
  [data, isBinary] = await msg;
  out.large_echo_ok = isBinary && Buffer.compare(data, blob) === 0;
  const closed = next(ws, 'close');
  ws.close(4100, 'bye');
  const [code, reason] = await closed;
  out.close = [code, reason.toString()];
  out.invalid_utf8 = await closedWith((w) => w.send(Buffer.from([0x61, 0xc3, 0x28]), { binary: false }));
  out.oversized = await closedWith((w) => w.send(Buffer.alloc(60001)));
  // Server mode: ringbeatd's Pings are answered by the library itself.
  const s = await open('/?interval=1s&timeout=2500ms');
  let pings = 0;
  s.on('ping', () => { pings++; });
  await new Promise((r) => setTimeout(r, 4000));
  out.server_mode = [s.readyState === WebSocket.OPEN, pings];
  s.terminate();
  console.log(JSON.stringify(out));
  process.exit(0);
}

main().catch((e) => { console.log(JSON.stringify(Object.assign(out, { error: String(e) }))); process.exit(1); });
