// End to end on a real OpenClaw 2026.9.6 gateway, offline: fake model and fake Telegram Bot API
// on loopback, the real bridge (`rlclaw serve`), rlclaw installed with
// `openclaw plugins install --link` and configured by editing the config file.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { until } from "./support/env.mjs";
import { GROUP, OTHER, OWNER, startWorld, stopWorld } from "./support/world.mjs";

let w;
let tg;
let bridge;

before(async () => {
  w = await startWorld({ feedbackMode: "slash_reactions_prompt" });
  tg = w.telegram;
  bridge = w.bridge;
}, { timeout: 360000 });

after(async () => {
  if (w) await stopWorld(w);
});

const isReply = (chatId) => (s) => s.method === "sendMessage" && String(s.params.chat_id) === String(chatId) && /^Reply \d+/.test(s.params.text ?? "");

/** A person's message and the bot's whole reply (every chunk). */
async function ask(text, { userId = OWNER, chatId = userId } = {}) {
  const from = tg.sent.length;
  const inboundId = tg.message({ text, userId, chatId });
  const first = await tg.waitSent(isReply(chatId), { from, timeoutMs: 60000 });
  // The chunks of one reply go out back to back; the buttons ride on the last one.
  await until("the reply's last chunk", () => tg.sentTo(chatId, from).some((s) => s.params.reply_markup), { timeoutMs: 10000 });
  const chunks = tg.sentTo(chatId, from).filter((s) => s.result.message_id >= first.result.message_id);
  return { inboundId, chunks, ids: chunks.map((c) => String(c.result.message_id)), text: chunks.map((c) => c.params.text).join("") };
}

/** A slash command and the bot's answer. */
async function command(text, { userId = OWNER, chatId = userId } = {}) {
  const from = tg.sent.length;
  tg.message({ text, userId, chatId });
  const r = await tg.waitSent((s) => s.method === "sendMessage" && String(s.params.chat_id) === String(chatId), { from, timeoutMs: 30000 });
  return r.params.text;
}

const turnOf = (prompt) => bridge.turns().find((t) => t.prompt === prompt);
const liveRatings = (prompt) => bridge.ratings().filter((r) => r.prompt === prompt && r.removed_at === null);

describe("rlclaw in a real OpenClaw gateway (Telegram)", () => {
  test("a DM and its reply are captured; /rl good and /rl bad too long land with the reason", async () => {
    const one = await ask("what is two plus two");
    assert.ok(one.chunks[one.chunks.length - 1].params.reply_markup.inline_keyboard[0].some((b) => b.callback_data === "rlclaw:good"),
      "slash_reactions_prompt puts rating buttons under the reply");
    const good = await command("/rl good");
    assert.match(good, /rated good/);
    const t1 = turnOf("what is two plus two");
    assert.ok(t1, JSON.stringify(bridge.turns()));
    assert.equal(t1.response, one.text);
    assert.equal(t1.sender, String(OWNER));
    assert.equal(t1.channel, "telegram");
    assert.equal(t1.model, "local/fake-model");
    assert.deepEqual(t1.message_ids, one.ids);
    assert.deepEqual(liveRatings("what is two plus two").map((r) => [r.rater, r.value, r.source]), [[String(OWNER), 1, "command"]]);

    await ask("tell me about the sea");
    const bad = await command("/rl bad too long");
    assert.match(bad, /rated bad/);
    const r = liveRatings("tell me about the sea");
    assert.equal(r.length, 1);
    assert.equal(r[0].value, -1);
    assert.equal(r[0].reason, "too long");
  });

  test("a 👍 on an earlier reply rates that exact turn", async () => {
    const first = await ask("first question for reactions");
    await ask("second question for reactions");
    tg.react({ messageId: first.ids[0], emoji: "👍", userId: OWNER });
    const r = await until("the reaction's rating", () => {
      const x = liveRatings("first question for reactions");
      return x.length ? x : null;
    }, { timeoutMs: 60000 });
    assert.deepEqual(r.map((x) => [x.rater, x.value, x.source, x.emoji]), [[String(OWNER), 1, "reaction", "👍"]]);
    assert.equal(liveRatings("second question for reactions").length, 0, "the later turn is untouched");
  });

  test("a 👍 on the first chunk of a chunked reply rates the whole turn", async () => {
    const long = await ask("give me a long answer please");
    assert.ok(long.ids.length >= 3, `a chunked reply (${long.ids.length} chunks)`);
    tg.react({ messageId: long.ids[0], emoji: "👍", userId: OWNER });
    const r = await until("the chunk reaction's rating", () => {
      const x = liveRatings("give me a long answer please");
      return x.length ? x : null;
    }, { timeoutMs: 60000 });
    assert.equal(r[0].value, 1);
    const turn = turnOf("give me a long answer please");
    assert.equal(turn.response.replace(/\s+/g, ""), long.text.replace(/\s+/g, ""), "the turn holds every chunk");
    for (const id of long.ids) assert.ok(turn.message_ids.includes(id), `chunk ${id} belongs to the turn`);
  });

  test("in a group a non-owner's reaction is ignored and the owner's counts", async () => {
    const g = await ask("group question from the owner", { userId: OWNER, chatId: GROUP });
    tg.react({ messageId: g.ids[0], emoji: "👎", userId: OTHER, chatId: GROUP });
    // The owner's reaction comes after the other's: once it has landed, the other's was seen.
    await new Promise((r) => setTimeout(r, 1500));
    tg.react({ messageId: g.ids[0], emoji: "👍", userId: OWNER, chatId: GROUP });
    const r = await until("the owner's group rating", () => {
      const x = liveRatings("group question from the owner");
      return x.length ? x : null;
    }, { timeoutMs: 60000 });
    await new Promise((r) => setTimeout(r, 1500));
    const all = bridge.ratings().filter((x) => x.prompt === "group question from the owner");
    assert.deepEqual(all.map((x) => [x.rater, x.value]), [[String(OWNER), 1]], "only the owner's reaction counted");
    const turn = turnOf("group question from the owner");
    assert.equal(turn.is_group, 1);
    assert.equal(turn.chat, String(GROUP));
  });

  test("a button tap rates the reply it hangs on", async () => {
    const one = await ask("question for the buttons");
    const last = one.chunks[one.chunks.length - 1];
    // Tapped the moment the reply reaches Telegram: the tap may beat OpenClaw's message_sent
    // hook, and then the component holds it until the reply is reported.
    const from = tg.sent.length;
    tg.tap({ messageId: last.result.message_id, data: "rlclaw:bad", userId: OWNER });
    const r = await until("the button's rating", () => {
      const x = liveRatings("question for the buttons");
      return x.length ? x : null;
    }, { timeoutMs: 60000 });
    assert.deepEqual(r.map((x) => [x.rater, x.value, x.source]), [[String(OWNER), -1, "button"]]);
    const answer = await tg.waitSent((s) => s.method === "sendMessage" && /rated bad/.test(s.params.text ?? ""), { from });
    assert.equal(String(answer.params.chat_id), String(OWNER));
  });

  test("/rl train from a non-admin is refused with a clear message", async () => {
    const text = await command("/rl train", { userId: OTHER });
    assert.match(text, /admin/i);
    assert.doesNotMatch(text, /Thanks|started|queued/i);
  });

  test("/rl status answers with counts", async () => {
    const text = await command("/rl status");
    const good = bridge.ratings().filter((r) => r.removed_at === null && r.value > 0).length;
    const bad = bridge.ratings().filter((r) => r.removed_at === null && r.value < 0).length;
    assert.ok(text.includes(`👍 ${good}`) && text.includes(`👎 ${bad}`), `${text} (expected ${good} good, ${bad} bad)`);
  });

  test("openclaw plugins inspect lists rlclaw with its config schema and the key hidden", async () => {
    const [inspect, list] = await Promise.all([
      w.oc.cli(["plugins", "inspect", "rlclaw", "--json"]),
      w.oc.cli(["plugins", "list"]),
    ]);
    assert.equal(inspect.code, 0, inspect.stderr);
    assert.ok(!inspect.stdout.includes(bridge.key) && !inspect.stderr.includes(bridge.key), "the key is not shown");
    const p = JSON.parse(inspect.stdout.slice(inspect.stdout.indexOf("{"))).plugin;
    assert.equal(p.id, "rlclaw");
    assert.equal(p.status, "loaded");
    assert.equal(p.enabled, true);
    const props = p.configJsonSchema.properties;
    for (const k of ["bridgeUrl", "key", "feedbackMode", "raters", "emojiPreset", "emojiMap"]) assert.ok(props[k], `schema has ${k}`);
    assert.deepEqual(props.feedbackMode.enum, ["slash_only", "slash_and_reactions", "slash_reactions_prompt"]);
    assert.equal(p.configUiHints.key.sensitive, true);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /rlclaw/);
    assert.ok(!list.stdout.includes(bridge.key));
  });

  test("commands and their answers are not captured as turns", () => {
    const junk = bridge.turns().filter((t) => /^\/r[lc]\b/.test(t.prompt) || /rated (good|bad)/.test(t.response));
    assert.deepEqual(junk.map((t) => [t.prompt, t.response]), []);
  });

  test("the gateway log shows no shim error and the key never", () => {
    assert.ok(!w.oc.gatewayLog.includes(bridge.key), "the key is not logged");
    const errors = w.oc.gatewayLog.split("\n").filter((l) => /rlclaw/.test(l) && /trapped|could not be loaded|worker failed|not set up|refusing the bridge/i.test(l));
    assert.deepEqual(errors, []);
  });
});
