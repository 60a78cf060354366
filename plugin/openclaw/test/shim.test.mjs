// The shim with the real component (in its worker) and the real bridge, driven with the hook
// payloads OpenClaw 2026.9.6 delivers, without a gateway: config checks, the Slack and Discord
// reaction shapes (added and removed), traps, hangs, an unreachable bridge, rating buttons.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { ComponentHost } from "../lib/component.js";
import { isLoopbackUrl, readConfig } from "../lib/config.js";
import { Shim, chatId, looksLikeGroup } from "../lib/shim.js";
import { Bridge, freePort, sleep, until } from "./support/env.mjs";

const FAULTY = new URL("./support/faulty-component.mjs", import.meta.url).href;

function logger() {
  const lines = [];
  const at = (level) => (m) => lines.push([level, m]);
  return { lines, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error"),
    has: (level, re) => lines.some(([l, m]) => l === level && re.test(m)) };
}

/** A shim on the real component; `events` is the system-event queue per session (peek). */
function makeShim(config, { module, callTimeoutMs, fetch, outbound } = {}) {
  const log = logger();
  const events = new Map();
  const host = new ComponentHost({ module, callTimeoutMs, onLog: (l, m) => log[l](m) });
  const shim = new Shim({ config, logger: log, host, fetch, outbound, peek: (s) => events.get(s) ?? [], tickMs: 200, pollMs: 60_000 });
  shim.start();
  return { shim, log, events, queue: (session, e) => events.set(session, [...(events.get(session) ?? []), e]) };
}

let bridge;
before(async () => {
  bridge = await Bridge.start({ configToml: 'admins = ["U0ADMIN"]\n' });
}, { timeout: 120000 });
after(async () => bridge && (await bridge.stop()));

const ratingsOf = (prompt) => bridge.ratings().filter((r) => r.prompt === prompt);

describe("config", () => {
  test("only a loopback http bridge is accepted", () => {
    for (const u of ["http://127.0.0.1:8420", "http://127.1.2.3:9", "http://localhost:8420/", "http://[::1]:8420"]) assert.ok(isLoopbackUrl(u), u);
    for (const u of ["http://10.0.0.1:8420", "https://127.0.0.1:8420", "http://example.com", "http://127.0.0.1.nip.io", "http://user:pw@127.0.0.1:1", "ftp://127.0.0.1", "nonsense"]) assert.ok(!isLoopbackUrl(u), u);
    const c = readConfig({ bridgeUrl: "http://192.168.1.5:8420", key: "ab".repeat(32) });
    assert.equal(c.fatal, true);
    assert.match(c.problems[0], /not a loopback/);
    assert.equal(readConfig({ key: "AB".repeat(32) }).fatal, true, "upper-case hex is refused");
    const ok = readConfig({ key: "ab".repeat(32), emojiMap: { "🎉": 0.5, "🙃": 3 }, raters: ["7", " "] });
    assert.equal(ok.fatal, false);
    assert.equal(ok.bridgeUrl, "http://127.0.0.1:8420");
    assert.deepEqual(ok.component.emojiOverrides, [["🎉", 0.5]]);
    assert.deepEqual(ok.component.raters, ["7"]);
    assert.equal(ok.problems.length, 1);
    // Rating polls only as the prompt of slash_reactions_prompt, on channel ids.
    const polls = readConfig({ key: "ab".repeat(32), feedbackMode: "slash_reactions_prompt", pollChannels: ["telegram", "whatsapp", "telegram", "Bad Id"] });
    assert.deepEqual(polls.component.pollChannels, ["telegram", "whatsapp"]);
    assert.match(polls.problems[0], /pollChannels/);
    assert.deepEqual(readConfig({ key: "ab".repeat(32), pollChannels: ["telegram"] }).component.pollChannels, []);
  });

  test("a refused config sends nothing and /rl says what is wrong", async () => {
    let fetched = 0;
    const { shim, log } = makeShim({ bridgeUrl: "http://203.0.113.9:8420", key: "ab".repeat(32) }, { fetch: async () => { fetched++; } });
    const text = await shim.command("rl", { channel: "telegram", senderId: "42", sessionKey: "s", args: "good", to: "telegram:42" });
    assert.match(text, /not set up.*not a loopback/);
    shim.onMessageReceived({ content: "hi", senderId: "42", messageId: "1" }, { channelId: "telegram", conversationId: "telegram:42", sessionKey: "s" });
    await shim.settle();
    assert.equal(fetched, 0);
    assert.ok(log.has("error", /not a loopback/));
    await shim.stop();
  });

  test("ids and groups from OpenClaw's conversation ids", () => {
    assert.equal(chatId("telegram", "telegram:42"), "42");
    assert.equal(chatId("slack", "slack:channel:C024"), "C024");
    assert.equal(chatId("discord", "channel:123"), "123");
    assert.equal(chatId("webchat", undefined), undefined);
    assert.equal(looksLikeGroup("telegram", "-100123", "42"), true);
    assert.equal(looksLikeGroup("telegram", "42", "42"), false);
    assert.equal(looksLikeGroup("whatsapp", "123@g.us", "+1555"), true);
    assert.equal(looksLikeGroup("slack", "D024", "U1"), false);
    assert.equal(looksLikeGroup("discord", "123", "9", { guildId: "7" }), true);
  });
});

/** One turn through the hooks as OpenClaw delivers them. */
async function turn(shim, { channel, conversation, session, sender, inId, outId, prompt, reply }) {
  shim.onMessageReceived(
    { from: `${channel}:${sender}`, content: prompt, messageId: inId, senderId: sender, sessionKey: session, metadata: { provider: channel, senderName: "Someone" } },
    { channelId: channel, accountId: "default", conversationId: conversation, sessionKey: session, messageId: inId, senderId: sender },
  );
  shim.onMessageSent(
    { to: conversation, content: reply, success: true, messageId: outId, sessionKey: session },
    { channelId: channel, accountId: "default", conversationId: conversation, sessionKey: session, messageId: outId },
  );
  await shim.settle();
}

describe("reactions through the component (Slack and Discord shapes), with the real bridge", () => {
  test("Slack: a :+1: rates the reply; its removal takes the rating back", async () => {
    const { shim, queue } = makeShim({ bridgeUrl: bridge.url, key: bridge.key });
    const session = "agent:main:slack:channel:c024be91l";
    await turn(shim, { channel: "slack", conversation: "channel:C024BE91L", session, sender: "U1ALICE",
      inId: "1795348000.000100", outId: "1795348001.000200", prompt: "slack question", reply: "slack answer" });
    queue(session, { id: "ev-s1", ts: Date.now(), text: "Slack reaction added: :+1: by Alice in #general msg 1795348001.000200 from FakeBot",
      contextKey: "slack:reaction:T0TEAM:added:C024BE91L:1795348001.000200:U1ALICE:+1:Ev01" });
    shim.pollReactions();
    const r = await until("the Slack rating", async () => {
      await shim.settle();
      const x = ratingsOf("slack question");
      return x.length ? x : null;
    });
    assert.deepEqual(r.map((x) => [x.rater, x.value, x.source, x.removed_at]), [["U1ALICE", 1, "reaction", null]]);
    // The same entry seen again (OpenClaw keeps it queued until the next turn) is not sent twice.
    shim.pollReactions();
    queue(session, { id: "ev-s2", ts: Date.now(), text: "Slack reaction removed: :+1: by Alice in #general msg 1795348001.000200 from FakeBot",
      contextKey: "slack:reaction:T0TEAM:removed:C024BE91L:1795348001.000200:U1ALICE:+1:Ev02" });
    shim.pollReactions();
    await until("the Slack removal", async () => {
      await shim.settle();
      return ratingsOf("slack question").every((x) => x.removed_at !== null);
    });
    assert.equal(ratingsOf("slack question").length, 1);
    await shim.stop();
  });

  test("Discord: 👎 rates, its removal takes it back; another user's reaction does not count", async () => {
    const { shim, queue } = makeShim({ bridgeUrl: bridge.url, key: bridge.key });
    const session = "agent:main:discord:channel:1400";
    await turn(shim, { channel: "discord", conversation: "channel:1400", session, sender: "2001",
      inId: "3000000000000000001", outId: "3000000000000000002", prompt: "discord question", reply: "discord answer" });
    queue(session, { id: "ev-d0", ts: Date.now(), text: "Discord reaction added: 👍 by mallory#0 on guild-x #general msg 3000000000000000002",
      contextKey: "discord:reaction:add:3000000000000000002:2999:👍" });
    queue(session, { id: "ev-d1", ts: Date.now(), text: "Discord reaction added: 👎 by owner#0 on guild-x #general msg 3000000000000000002",
      contextKey: "discord:reaction:add:3000000000000000002:2001:👎" });
    shim.pollReactions();
    const r = await until("the Discord rating", async () => {
      await shim.settle();
      const x = ratingsOf("discord question");
      return x.length ? x : null;
    });
    assert.deepEqual(r.map((x) => [x.rater, x.value]), [["2001", -1]]);
    queue(session, { id: "ev-d2", ts: Date.now(), text: "Discord reaction removed: 👎 by owner#0 on guild-x #general msg 3000000000000000002",
      contextKey: "discord:reaction:remove:3000000000000000002:2001:👎" });
    shim.pollReactions();
    await until("the Discord removal", async () => {
      await shim.settle();
      return ratingsOf("discord question").every((x) => x.removed_at !== null);
    });
    await shim.stop();
  });

  test("slash_only reads no reactions", async () => {
    const { shim, events } = makeShim({ bridgeUrl: bridge.url, key: bridge.key, feedbackMode: "slash_only" });
    let peeks = 0;
    shim.peek = (s) => { peeks++; return events.get(s) ?? []; };
    await turn(shim, { channel: "telegram", conversation: "telegram:5", session: "agent:main:telegram:direct:5", sender: "5",
      inId: "10", outId: "11", prompt: "q5", reply: "a5" });
    shim.pollReactions();
    assert.equal(peeks, 0);
    await shim.stop();
  });
});

describe("robustness", () => {
  test("a trap re-creates the component, which is configured again and keeps working", async () => {
    const { shim, log } = makeShim({ bridgeUrl: bridge.url, key: bridge.key }, { module: FAULTY });
    const place = { channel: "telegram", conversation: "telegram:77", session: "agent:main:telegram:direct:77", sender: "77" };
    shim.onMessageReceived({ content: "TRAP", senderId: "77", messageId: "1" }, { channelId: "telegram", conversationId: place.conversation, sessionKey: place.session });
    await shim.settle();
    assert.ok(log.has("error", /trapped/), JSON.stringify(log.lines));
    await turn(shim, { ...place, inId: "2", outId: "3", prompt: "after the trap", reply: "still here" });
    const text = await shim.command("rl", { channel: "telegram", senderId: "77", sessionKey: place.session, args: "good", to: place.conversation });
    assert.match(text, /rated good/);
    assert.equal(ratingsOf("after the trap").length, 1);
    await shim.stop();
  });

  test("a call that hangs is stopped at its deadline and the component comes back", async () => {
    const { shim, log } = makeShim({ bridgeUrl: bridge.url, key: bridge.key }, { module: FAULTY, callTimeoutMs: 400 });
    const t0 = Date.now();
    shim.onMessageReceived({ content: "SPIN", senderId: "78", messageId: "1" }, { channelId: "telegram", conversationId: "telegram:78", sessionKey: "s78" });
    await shim.settle();
    assert.ok(Date.now() - t0 < 5000, "the hang was cut short");
    assert.ok(log.has("error", /took over 400 ms/), JSON.stringify(log.lines));
    const text = await shim.command("rl", { channel: "telegram", senderId: "78", sessionKey: "s78", args: "status", to: "telegram:78" });
    assert.match(text, /👍/);
    await shim.stop();
  });

  test("an unreachable bridge: commands are answered in bounded time, ratings wait", async () => {
    const port = await freePort();
    const { shim } = makeShim({ bridgeUrl: `http://127.0.0.1:${port}`, key: bridge.key, commandTimeoutMs: 3000 });
    await turn(shim, { channel: "telegram", conversation: "telegram:79", session: "s79", sender: "79", inId: "1", outId: "2", prompt: "q", reply: "a" });
    const t0 = Date.now();
    const status = await shim.command("rl", { channel: "telegram", senderId: "79", sessionKey: "s79", args: "status", to: "telegram:79" });
    assert.match(status, /can't reach|not answered/);
    const good = await shim.command("rl", { channel: "telegram", senderId: "79", sessionKey: "s79", args: "good", to: "telegram:79" });
    assert.match(good, /not reachable|waits|not answered/);
    assert.ok(Date.now() - t0 < 8000);
    assert.ok(shim.stats.unreachable >= 1);
    await shim.stop();
  });

  test("rating buttons only in slash_reactions_prompt, on final text replies; the model is remembered", async () => {
    const base = { bridgeUrl: bridge.url, key: bridge.key };
    const ev = { payload: { text: "hello" }, kind: "final", channel: "telegram", sessionKey: "s1", usageState: { provider: "local", model: "m", resolvedRef: "local/m" } };
    const ctx = { channelId: "telegram", sessionKey: "s1" };
    const a = makeShim({ ...base, feedbackMode: "slash_and_reactions" });
    assert.equal(a.shim.onReplyPayloadSending(ev, ctx), undefined);
    assert.equal(a.shim.modelBySession.get("s1"), "local/m");
    await a.shim.stop();
    const b = makeShim({ ...base, feedbackMode: "slash_reactions_prompt" });
    const out = b.shim.onReplyPayloadSending(ev, ctx);
    assert.equal(out.payload.text, "hello");
    assert.deepEqual(out.payload.presentation.blocks[0].buttons.map((x) => x.value), ["rlclaw:good", "rlclaw:bad"]);
    assert.equal(b.shim.onReplyPayloadSending({ ...ev, kind: "block" }, ctx), undefined);
    assert.equal(b.shim.onReplyPayloadSending({ ...ev, channel: "whatsapp" }, { ...ctx, channelId: "whatsapp" }), undefined);
    assert.equal(b.shim.onReplyPayloadSending({ ...ev, payload: { text: "x", isError: true } }, ctx), undefined);
    await b.shim.stop();
  });

  test("a /rl message and its answer, as message hooks report them too, are no turn", async () => {
    const { shim } = makeShim({ bridgeUrl: bridge.url, key: bridge.key });
    const p = { channel: "telegram", conversation: "telegram:82", session: "s82", sender: "82" };
    await turn(shim, { ...p, inId: "1", outId: "2", prompt: "real question 82", reply: "real answer 82" });
    const hookCtx = { channelId: "telegram", conversationId: p.conversation, sessionKey: p.session };
    shim.onMessageReceived({ content: "/rl good", senderId: "82", messageId: "3" }, hookCtx);
    const text = await shim.command("rl", { channel: "telegram", senderId: "82", sessionKey: p.session, args: "good", to: p.conversation });
    assert.match(text, /rated good/);
    shim.onMessageSent({ to: p.conversation, content: text, success: true, messageId: "4", sessionKey: p.session }, hookCtx);
    await turn(shim, { ...p, inId: "5", outId: "6", prompt: "next question 82", reply: "next answer 82" });
    await shim.command("rl", { channel: "telegram", senderId: "82", sessionKey: p.session, args: "bad", to: p.conversation });
    const turns = bridge.turns().filter((t) => t.session === "s82");
    assert.deepEqual(turns.map((t) => [t.prompt, t.response]), [["real question 82", "real answer 82"], ["next question 82", "next answer 82"]]);
    await shim.stop();
  });

  test("a button tap is answered through the channel's respond", async () => {
    const { shim } = makeShim({ bridgeUrl: bridge.url, key: bridge.key });
    await turn(shim, { channel: "telegram", conversation: "telegram:80", session: "s80", sender: "80", inId: "1", outId: "2", prompt: "tap me", reply: "tapped" });
    const said = [];
    const r = await shim.interactive("telegram", { callbackId: "cb-80", conversationId: "80", senderId: "80", isGroup: false,
      callback: { messageId: 2, chatId: "80", data: "rlclaw:good", namespace: "rlclaw", payload: "good" },
      respond: { reply: async (m) => said.push(m.text) } });
    assert.deepEqual(r, { handled: true });
    assert.match(said[0], /rated good/);
    const someoneElse = await shim.interactive("telegram", { callbackId: "cb-81", conversationId: "80", senderId: "81", isGroup: false,
      callback: { messageId: 2, chatId: "80", payload: "bad" }, respond: { reply: async (m) => said.push(m.text) } });
    assert.deepEqual(someoneElse, { handled: true });
    assert.match(said[1], /Only the person who asked/);
    assert.deepEqual(ratingsOf("tap me").map((x) => [x.rater, x.value, x.source]), [["80", 1, "button"]]);
    await shim.stop();
  });
});

describe("rating polls and early taps, through the real component and the real bridge", () => {
  test("a quiet reply on a poll channel gets a public poll; a vote on it is rated and kept from the agent", async () => {
    const polls = [];
    const outbound = { sendPoll: async (p) => { polls.push(p); return { messageId: "90", pollId: "p1" }; } };
    const { shim } = makeShim({ bridgeUrl: bridge.url, key: bridge.key, feedbackMode: "slash_reactions_prompt", pollChannels: ["telegram"] }, { outbound });
    const session = "agent:main:telegram:direct:83";
    const ctx = { channelId: "telegram", accountId: "default", conversationId: "telegram:83", sessionKey: session };
    // No buttons on a poll channel.
    assert.equal(shim.onReplyPayloadSending({ payload: { text: "x" }, kind: "final", channel: "telegram" }, ctx), undefined);
    await turn(shim, { channel: "telegram", conversation: "telegram:83", session, sender: "83", inId: "1", outId: "2", prompt: "poll me", reply: "polled" });
    const p = await until("the rating poll", async () => {
      await shim.settle();
      return polls[0];
    });
    assert.deepEqual([p.channel, p.accountId, p.to, p.poll.options, p.poll.maxSelections], ["telegram", "default", "83", ["👍 Good", "👎 Bad"], 1]);
    assert.match(p.poll.question, /rlclaw #[0-9a-f]{8}/);
    // The vote as OpenClaw delivers it: message_received, then before_dispatch for the same id.
    const vote = { from: "telegram:83", content: `Poll response to "${p.poll.question}": 👍 Good`, messageId: "1007", senderId: "83", metadata: { provider: "telegram" } };
    shim.onMessageReceived(vote, { ...ctx, messageId: "1007", senderId: "83" });
    assert.deepEqual(await shim.onBeforeDispatch({ messageId: "1007", channel: "telegram", content: vote.content }, { ...ctx, messageId: "1007" }), { handled: true });
    const r = await until("the poll rating", async () => {
      await shim.settle();
      const x = ratingsOf("poll me");
      return x.length ? x : null;
    });
    assert.deepEqual(r.map((x) => [x.rater, x.value, x.source]), [["83", 1, "poll"]]);
    // An ordinary message goes on to the agent.
    shim.onMessageReceived({ content: "thanks", messageId: "3", senderId: "83" }, { ...ctx, messageId: "3" });
    assert.equal(await shim.onBeforeDispatch({ messageId: "3", channel: "telegram" }, ctx), undefined);
    assert.equal(shim.stats.polls, 1);
    await shim.stop();
  });

  test("a tap before the reply's message_sent waits for it and rates that reply", async () => {
    const { shim } = makeShim({ bridgeUrl: bridge.url, key: bridge.key });
    const ctx = { channelId: "telegram", accountId: "default", conversationId: "telegram:84", sessionKey: "s84" };
    shim.onMessageReceived({ content: "early tap question", messageId: "1", senderId: "84" }, { ...ctx, messageId: "1", senderId: "84" });
    const said = [];
    const tapped = shim.interactive("telegram", { callbackId: "cb-84", conversationId: "84", senderId: "84", isGroup: false,
      callback: { messageId: 2, chatId: "84", data: "rlclaw:good", namespace: "rlclaw", payload: "good" },
      respond: { reply: async (m) => said.push(m.text) } });
    await sleep(300);
    assert.deepEqual(said, [], "the tap waits for the reply");
    shim.onMessageSent({ to: "telegram:84", content: "early tap answer", success: true, messageId: "2" }, { ...ctx, messageId: "2" });
    assert.deepEqual(await tapped, { handled: true });
    assert.match(said[0], /rated good/);
    assert.deepEqual(ratingsOf("early tap question").map((x) => [x.rater, x.value, x.source]), [["84", 1, "button"]]);
    await shim.stop();
  });

  test("/rl reaches the component as a message too, and it is no turn", async () => {
    const { shim } = makeShim({ bridgeUrl: bridge.url, key: bridge.key });
    const inbound = [];
    const call = shim.host.call.bind(shim.host);
    shim.host.call = (ev) => {
      if (ev.tag === "inbound") inbound.push(ev.val.text);
      return call(ev);
    };
    shim.onMessageReceived({ content: "/rl good", senderId: "85", messageId: "1" }, { channelId: "telegram", conversationId: "telegram:85", sessionKey: "s85" });
    await shim.settle();
    assert.deepEqual(inbound, ["/rl good"], "the shim passes chat text on unread");
    assert.equal(bridge.turns().filter((t) => t.session === "s85").length, 0);
    await shim.stop();
  });
});
