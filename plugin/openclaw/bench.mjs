// Added cost per event of the shim + component in Node: inbound, outbound and command events.
//
//   node bench.mjs [iterations]
//
// Three figures per kind, in µs (min / median / p99):
//   component  the component's handle() called in this thread (the guest's own cost, jco glue);
//   shim       the hook handler as OpenClaw calls it: payload → event → postMessage to the
//              component's worker (what the gateway's event loop pays; the hook returns then;
//              for a command, until the handler returns its promise);
//   round trip that plus the worker running the component and its answer coming back.
// And, with rating polls on (pollChannels), what before_dispatch adds to every inbound message:
// the gateway awaits it, and it waits for the component's answer on that message.
// No bridge is involved: the configured bridge URL is a closed loopback port and requests are
// answered with status 0 by a stub fetch, so the figures are the shim's and the component's.
// Last, what one request to the bridge costs on top (once per captured turn or rating): the
// shim's real fetch of a 4 KB body to a loopback HTTP server that answers at once, and the
// answer fed back to the component.
import http from "node:http";
import { performance } from "node:perf_hooks";

import { ComponentHost, envelope, loadInline } from "./lib/component.js";
import { Shim } from "./lib/shim.js";

const N = Number(process.argv[2] || 2000);
const KEY = "5c1a9c0f1e2d3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f708192a3b4c5d6e";
const PROMPT = "hello bot, what is 2+2? ".repeat(8);
const REPLY = "Four. ".repeat(40);

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return `${s[0].toFixed(1).padStart(7)} ${q(0.5).toFixed(1).padStart(7)} ${q(0.99).toFixed(1).padStart(8)}`;
}

const place = (i) => ({ channel: "telegram", account: "default", chat: String(1000 + (i % 50)), session: `agent:main:telegram:direct:${1000 + (i % 50)}` });
const config = { keyHex: KEY, raters: [], emojiPreset: "binary", emojiOverrides: [], contextMessages: 12, messageBytes: 4096, pollChannels: [] };

// 1. The component alone, in this thread.
const c = await loadInline();
const call = (ev) => {
  const { nowMs, entropy } = envelope();
  return c.handle(nowMs, entropy, ev);
};
call({ tag: "configure", val: config });
const direct = { inbound: [], outbound: [], command: [] };
for (let i = 0; i < N; i++) {
  const p = place(i);
  let t = performance.now();
  call({ tag: "inbound", val: { place: p, sender: p.chat, group: false, messageId: String(2 * i), text: PROMPT } });
  direct.inbound.push((performance.now() - t) * 1000);
  t = performance.now();
  call({ tag: "outbound", val: { place: p, text: REPLY, messageIds: [String(2 * i + 1)] } });
  direct.outbound.push((performance.now() - t) * 1000);
  t = performance.now();
  call({ tag: "command", val: { id: `c${i}`, place: p, sender: p.chat, name: "rl", args: "good too long" } });
  direct.command.push((performance.now() - t) * 1000);
}

// 2. The shim, the component in its worker.
const host = new ComponentHost({ onLog: () => {} });
const shim = new Shim({
  config: { bridgeUrl: "http://127.0.0.1:9", key: KEY, commandTimeoutMs: 500 },
  logger: { debug() {}, info() {}, warn() {}, error() {} },
  host,
  fetch: async () => { throw new Error("no bridge in the bench"); },
  tickMs: 3_600_000,
});
shim.start();
await shim.settle();
const sync = { inbound: [], outbound: [], command: [] };
const trip = { inbound: [], outbound: [], command: [] };
for (let i = 0; i < N; i++) {
  const chat = String(1000 + (i % 50));
  const ctx = { channelId: "telegram", accountId: "default", conversationId: `telegram:${chat}`, sessionKey: `agent:main:telegram:direct:${chat}` };
  let t = performance.now();
  const a = shim.onMessageReceived({ from: `telegram:${chat}`, content: PROMPT, messageId: String(2 * i), senderId: chat, metadata: { senderName: "A" } }, { ...ctx, senderId: chat });
  sync.inbound.push((performance.now() - t) * 1000);
  await a;
  trip.inbound.push((performance.now() - t) * 1000);
  t = performance.now();
  const b = shim.onMessageSent({ to: `telegram:${chat}`, content: REPLY, success: true, messageId: String(2 * i + 1) }, ctx);
  sync.outbound.push((performance.now() - t) * 1000);
  await b;
  trip.outbound.push((performance.now() - t) * 1000);
  // A command: from the handler's call to the component's answer (the bridge is "down", so the
  // component answers at once that the rating waits).
  if (i % 10 === 0) {
    t = performance.now();
    const c = shim.command("rl", { channel: "telegram", senderId: chat, sessionKey: ctx.sessionKey, to: `telegram:${chat}`, args: "status" });
    sync.command.push((performance.now() - t) * 1000);
    await c;
    trip.command.push((performance.now() - t) * 1000);
  }
  await shim.settle();
}
await shim.stop();

// 3. Rating polls on: message_received, then before_dispatch awaited on the same message.
const pollShim = new Shim({
  config: { bridgeUrl: "http://127.0.0.1:9", key: KEY, feedbackMode: "slash_reactions_prompt", pollChannels: ["telegram"] },
  logger: { debug() {}, info() {}, warn() {}, error() {} },
  host: new ComponentHost({ onLog: () => {} }),
  fetch: async () => { throw new Error("no bridge in the bench"); },
  outbound: { sendPoll: async () => ({}) },
  tickMs: 3_600_000,
});
pollShim.start();
await pollShim.settle();
const dispatch = [];
for (let i = 0; i < N; i++) {
  const chat = String(1000 + (i % 50));
  const ctx = { channelId: "telegram", accountId: "default", conversationId: `telegram:${chat}`, sessionKey: `agent:main:telegram:direct:${chat}` };
  pollShim.onMessageReceived({ from: `telegram:${chat}`, content: PROMPT, messageId: String(2 * i), senderId: chat }, { ...ctx, senderId: chat });
  const t = performance.now();
  await pollShim.onBeforeDispatch({ messageId: String(2 * i), channel: "telegram", content: PROMPT }, { ...ctx, messageId: String(2 * i) });
  dispatch.push((performance.now() - t) * 1000);
  pollShim.onMessageSent({ to: `telegram:${chat}`, content: REPLY, success: true, messageId: String(2 * i + 1) }, ctx);
  await pollShim.settle();
}
await pollShim.stop();

// 4. One request to a loopback server through the shim's fetch, its answer fed back.
const server = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(201, { "content-type": "application/json" });
    res.end("{}");
  });
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const reqShim = new Shim({
  config: { bridgeUrl: `http://127.0.0.1:${server.address().port}`, key: KEY },
  logger: { debug() {}, info() {}, warn() {}, error() {} },
  host: new ComponentHost({ onLog: () => {} }),
  tickMs: 3_600_000,
});
reqShim.start();
await reqShim.settle();
const body = new TextEncoder().encode(JSON.stringify({ prompt: PROMPT, response: REPLY.repeat(16) }));
const requests = [];
for (let i = 0; i < Math.min(N, 1000); i++) {
  const headers = [["x-rlclaw-timestamp", "1"], ["x-rlclaw-nonce", "00"], ["x-rlclaw-signature", "00"]];
  const t = performance.now();
  await reqShim.request({ id: BigInt(i + 1), method: "POST", path: "/v1/turns", headers, body });
  requests.push((performance.now() - t) * 1000);
}
await reqShim.stop();
server.close();

console.log(`node ${process.version}, ${N} events of each kind (commands through the shim: ${trip.command.length}); µs: min / median / p99`);
console.log(`${"".padEnd(28)}${"min".padStart(7)} ${"median".padStart(7)} ${"p99".padStart(8)}`);
for (const k of ["inbound", "outbound", "command"]) console.log(`component  ${k.padEnd(17)}${stats(direct[k])}`);
for (const k of ["inbound", "outbound", "command"]) console.log(`shim       ${k.padEnd(17)}${stats(sync[k])}`);
for (const k of ["inbound", "outbound", "command"]) console.log(`round trip ${k.padEnd(17)}${stats(trip[k])}`);
console.log(`polls on   ${"before_dispatch".padEnd(17)}${stats(dispatch)}`);
console.log(`bridge     ${"request (4 KB)".padEnd(17)}${stats(requests)}`);
