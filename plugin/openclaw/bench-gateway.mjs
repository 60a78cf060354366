// The gateway's message throughput and latency on the fake Telegram path, with and without
// rlclaw installed, side by side in one run.
//
//   node bench-gateway.mjs [--rounds 5] [--messages 40] [--users 4] [--warmup 8] [--mode slash_and_reactions]
//                          [--polls telegram]   (rating polls on: pollChannels, with --mode slash_reactions_prompt)
//
// Two real OpenClaw 2026.9.6 gateways run at once, each with its own home, its own fake Telegram
// Bot API and the same fake model server (answers at once): "without" has only the Telegram
// channel; "with" also has rlclaw (installed by scripts/install.mjs, in --mode) and the real
// bridge behind it. Each round drives both, one after the other (the order alternates): --users
// Telegram users in parallel, each sending its share of --messages DMs one after another, the
// next as soon as the bot's reply to the last has reached the fake Bot API (closed loop). A
// message's latency runs from the update being queued for getUpdates to the bot's sendMessage
// with the reply; a round's throughput is its messages over the time from the first to the
// last. Wall-clock figures follow whatever else the machine runs; the CPU time the gateway's
// processes (the gateway and its children, the plugin's worker thread included) spend per
// message, from /proc, follows it much less. Min and median over the rounds are printed, and
// every round. Needs .ci/setup-node
// (Node 24, openclaw, the transpiled component) and the rlclaw binary ($RLCLAW_BIN or cargo).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";

import { Bridge, OPENCLAW, OpenClawHome, PKG, freePort, until } from "./test/support/env.mjs";
import { startFakeModel, startFakeTelegram } from "./test/support/fakes.mjs";
import { gatewayConfig } from "./test/support/world.mjs";

function args(argv) {
  const o = { rounds: 5, messages: 40, users: 4, warmup: 8, mode: "slash_and_reactions", polls: "" };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, "");
    if (!(k in o)) throw new Error(`unknown argument ${argv[i]}`);
    const v = argv[++i];
    o[k] = typeof o[k] === "number" ? Number(v) : v;
    if (typeof o[k] === "number" && !(Number.isInteger(o[k]) && o[k] >= 0)) throw new Error(`--${k} needs a whole number`);
  }
  if (o.users < 1 || o.messages < o.users) throw new Error("--messages must be at least --users, and --users at least 1");
  return o;
}

const o = args(process.argv.slice(2));
const USERS = Array.from({ length: o.users }, (_, i) => 5001 + i);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const pct = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

/** One gateway: its home, fake Telegram and port; `plugin` says whether rlclaw is installed. */
async function startGateway({ name, model, bridge }) {
  const telegram = await startFakeTelegram();
  const oc = new OpenClawHome();
  const port = await freePort();
  const cfg = gatewayConfig({ model, telegram, port });
  cfg.channels.telegram.allowFrom = USERS.map(String);
  cfg.commands.allowFrom.telegram = USERS.map(String);
  cfg.plugins.allow = bridge ? ["telegram", "rlclaw"] : ["telegram"];
  oc.writeConfig(cfg);
  if (bridge) {
    const keyFile = path.join(oc.home, "bridge.key");
    fs.writeFileSync(keyFile, bridge.key, { mode: 0o600 });
    const r = await oc.run(process.execPath, [path.join(PKG, "scripts", "install.mjs"), "--key-file", keyFile,
      "--bridge-url", bridge.url, "--feedback-mode", o.mode, "--openclaw", OPENCLAW]);
    if (r.code !== 0) throw new Error(`install.mjs failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
    if (o.polls) {
      const withPolls = oc.readConfig();
      withPolls.plugins.entries.rlclaw.config.pollChannels = o.polls.split(",");
      oc.writeConfig(withPolls);
    }
  }
  const t0 = performance.now();
  await oc.startGateway({ telegram, port });
  process.stderr.write(`${name}: gateway polling Telegram after ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  return { name, telegram, oc };
}

/** Every reply to `chatId` that reaches the fake Bot API, in order, with its arrival time. */
function replyClock(telegram) {
  const waiting = new Map();
  telegram.sent.push = new Proxy(telegram.sent.push, {
    apply(push, arr, items) {
      const at = performance.now();
      for (const e of items) {
        if (e.method !== "sendMessage" || !/^Reply \d+/.test(e.params.text ?? "")) continue;
        const w = waiting.get(String(e.params.chat_id));
        if (w) {
          waiting.delete(String(e.params.chat_id));
          w(at);
        }
      }
      return Reflect.apply(push, arr, items);
    },
  });
  return (chatId) => new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      waiting.delete(String(chatId));
      reject(new Error(`no reply to ${chatId} within 120 s`));
    }, 120000);
    waiting.set(String(chatId), (at) => {
      clearTimeout(t);
      resolve(at);
    });
  });
}

const TICK_MS = 10; // /proc times are in clock ticks of 1/100 s (USER_HZ on Linux)

/** CPU time (user + system, ms) of a process and all its descendants, from /proc. */
function treeCpuMs(root) {
  const stats = new Map();
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    let raw;
    try {
      raw = fs.readFileSync(`/proc/${d}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    // The command name (field 2) may hold spaces: the fields after it follow the last ')'.
    const f = raw.slice(raw.lastIndexOf(")") + 2).split(" ");
    stats.set(Number(d), { ppid: Number(f[1]), cpu: Number(f[11]) + Number(f[12]) });
  }
  let total = 0;
  const todo = [root];
  const seen = new Set();
  while (todo.length) {
    const pid = todo.pop();
    if (seen.has(pid)) continue;
    seen.add(pid);
    total += stats.get(pid)?.cpu ?? 0;
    for (const [child, st] of stats) if (st.ppid === pid) todo.push(child);
  }
  return total * TICK_MS;
}

/** Sends `n` messages spread over the users, closed loop per user; returns latencies and elapsed. */
async function drive(g, n, label) {
  const latencies = [];
  const perUser = USERS.map((_, i) => Math.floor(n / USERS.length) + (i < n % USERS.length ? 1 : 0));
  const t0 = performance.now();
  await Promise.all(USERS.map(async (user, i) => {
    for (let k = 0; k < perUser[i]; k++) {
      const reply = g.nextReply(user);
      const sentAt = performance.now();
      g.telegram.message({ text: `${label} message ${k} from ${user}`, userId: user });
      latencies.push((await reply) - sentAt);
    }
  }));
  return { latencies, elapsedMs: performance.now() - t0 };
}

const model = await startFakeModel();
const bridge = await Bridge.start({});
const gateways = [];
try {
  gateways.push(await startGateway({ name: "without rlclaw", model }));
  gateways.push(await startGateway({ name: "with rlclaw", model, bridge }));
  for (const g of gateways) g.nextReply = replyClock(g.telegram);
  // Warm both up (the first turns load the agent's prompt, tools and session stores).
  for (const g of gateways) await drive(g, Math.max(o.warmup, o.users), "warmup");

  const results = new Map(gateways.map((g) => [g.name, []]));
  for (let r = 0; r < o.rounds; r++) {
    const order = r % 2 ? [...gateways].reverse() : gateways;
    for (const g of order) {
      const cpu0 = treeCpuMs(g.oc.gateway.pid);
      const bridge0 = g.name === "with rlclaw" ? treeCpuMs(bridge.child.pid) : 0;
      const { latencies, elapsedMs } = await drive(g, o.messages, `round ${r}`);
      const cpuPerMsg = (treeCpuMs(g.oc.gateway.pid) - cpu0) / latencies.length;
      const bridgePerMsg = g.name === "with rlclaw" ? (treeCpuMs(bridge.child.pid) - bridge0) / latencies.length : 0;
      const row = { msgsPerS: (latencies.length * 1000) / elapsedMs, p50: pct(latencies, 0.5), p95: pct(latencies, 0.95), cpuPerMsg, bridgePerMsg };
      results.get(g.name).push(row);
      process.stderr.write(`round ${r + 1} ${g.name.padEnd(15)} ${row.msgsPerS.toFixed(2)} msg/s  latency p50 ${row.p50.toFixed(0)} ms  p95 ${row.p95.toFixed(0)} ms  gateway CPU ${cpuPerMsg.toFixed(0)} ms/msg${g.name === "with rlclaw" ? `  bridge CPU ${bridgePerMsg.toFixed(1)} ms/msg` : ""}\n`);
    }
  }
  // The plugin really worked: the bridge holds the "with" gateway's turns.
  const sentWith = o.rounds * o.messages + Math.max(o.warmup, o.users);
  await until("the last captures", () => bridge.turns().length >= sentWith, { timeoutMs: 30000 }).catch(() => null);
  const captured = bridge.turns().length;

  console.log(`OpenClaw 2026.9.6 gateway on the fake Telegram path, node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? "?"})`);
  console.log(`${o.rounds} rounds x ${o.messages} DMs from ${o.users} users in parallel (closed loop), ${o.warmup} warm-up messages; rlclaw in ${o.mode}${o.polls ? `, rating polls on ${o.polls}` : ""}`);
  console.log(`${"".padEnd(16)}${"msg/s min".padStart(10)}${"msg/s med".padStart(10)}${"p50 ms med".padStart(12)}${"p95 ms med".padStart(12)}${"CPU ms/msg min".padStart(16)}${"CPU ms/msg med".padStart(16)}`);
  for (const [name, rows] of results) {
    const t = rows.map((x) => x.msgsPerS);
    const c = rows.map((x) => x.cpuPerMsg);
    console.log(`${name.padEnd(16)}${Math.min(...t).toFixed(2).padStart(10)}${median(t).toFixed(2).padStart(10)}${median(rows.map((x) => x.p50)).toFixed(0).padStart(12)}${median(rows.map((x) => x.p95)).toFixed(0).padStart(12)}${Math.min(...c).toFixed(0).padStart(16)}${median(c).toFixed(0).padStart(16)}`);
  }
  const [a, b] = [...results.values()].map((rows) => median(rows.map((x) => x.msgsPerS)));
  const [ca, cb] = [...results.values()].map((rows) => median(rows.map((x) => x.cpuPerMsg)));
  const bridgeCpu = median(results.get("with rlclaw").map((x) => x.bridgePerMsg));
  // A DM that arrives before OpenClaw has reported the previous reply (message_sent) joins that
  // turn's prompt: the closed loop sends the next DM the moment the reply reaches the Bot API.
  const merged = bridge.turns().filter((t) => t.prompt.includes("\n")).length;
  console.log(`with rlclaw / without, medians: throughput ${((b / a) * 100).toFixed(1)} %, gateway CPU per message ${((cb / ca) * 100).toFixed(1)} %; the bridge used ${bridgeCpu.toFixed(1)} ms CPU per message`);
  console.log(`turns the bridge captured: ${captured} of the ${sentWith} DMs sent to that gateway (${merged} turns hold two DMs: the next DM came before OpenClaw's message_sent for the reply)`);
} finally {
  for (const g of gateways) {
    await g.oc.stopGateway().catch(() => {});
    await g.telegram.close().catch(() => {});
    if (!process.env.RLCLAW_KEEP_TEST_HOME) g.oc.remove();
  }
  await bridge.stop().catch(() => {});
  await model.close().catch(() => {});
}
