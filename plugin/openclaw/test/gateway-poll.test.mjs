// Rating polls on a real OpenClaw 2026.9.6 gateway, offline (fake model, fake Telegram Bot API,
// the real bridge): slash_reactions_prompt with pollChannels ["telegram"]. The component asks
// with a public poll after each reply (through Telegram's outbound adapter); OpenClaw turns a
// vote (poll_answer) into an inbound message, which the component reads and claims, so the
// vote rates the turn its poll was sent for and the agent never answers it.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { sleep, until } from "./support/env.mjs";
import { OWNER, startWorld, stopWorld } from "./support/world.mjs";

let w;
let tg;
let bridge;

before(async () => {
  w = await startWorld({ feedbackMode: "slash_reactions_prompt", pluginConfig: { pollChannels: ["telegram"] } });
  tg = w.telegram;
  bridge = w.bridge;
}, { timeout: 360000 });

after(async () => {
  if (w) await stopWorld(w);
});

const isReply = (chatId) => (s) => s.method === "sendMessage" && String(s.params.chat_id) === String(chatId) && /^Reply \d+/.test(s.params.text ?? "");
const isPoll = (chatId) => (s) => s.method === "sendPoll" && String(s.params.chat_id) === String(chatId);
const liveRatings = (prompt) => bridge.ratings().filter((r) => r.prompt === prompt && r.removed_at === null);
const parse = (v) => (typeof v === "string" ? JSON.parse(v) : v);

/** A person's message, the bot's reply, and the rating poll that follows it. */
async function askAndPoll(text, { userId = OWNER, chatId = userId } = {}) {
  const from = tg.sent.length;
  tg.message({ text, userId, chatId });
  const reply = await tg.waitSent(isReply(chatId), { from, timeoutMs: 60000 });
  const poll = await tg.waitSent(isPoll(chatId), { from, timeoutMs: 20000 });
  return { reply, poll };
}

describe("rating polls in a real OpenClaw gateway (Telegram)", () => {
  test("a vote on a rating poll rates the turn the poll was sent for, and the agent never answers it", async () => {
    const one = await askAndPoll("first question for the polls");
    assert.equal(one.reply.params.reply_markup, undefined, "no buttons where the prompt is a poll");
    assert.match(one.poll.params.question, /^How was this reply\? \(rlclaw #[0-9a-f]{8}\)$/);
    assert.deepEqual(parse(one.poll.params.options).map((o) => o.text ?? o), ["👍 Good", "👎 Bad"]);
    assert.equal(parse(one.poll.params.is_anonymous), false, "votes must name the voter to come back");
    assert.ok(one.poll.result.message_id > one.reply.result.message_id, "the poll follows the reply");
    const two = await askAndPoll("second question for the polls");
    assert.notEqual(two.poll.params.question, one.poll.params.question);

    const modelCalls = w.model.requests.length;
    const sentBefore = tg.sent.length;
    tg.vote({ pollId: one.poll.result.poll.id, optionIds: [0], userId: OWNER });
    const r = await until("the poll vote's rating", () => {
      const x = liveRatings("first question for the polls");
      return x.length ? x : null;
    }, { timeoutMs: 60000 });
    assert.deepEqual(r.map((x) => [x.rater, x.value, x.source]), [[String(OWNER), 1, "poll"]]);
    assert.equal(liveRatings("second question for the polls").length, 0, "the later turn is untouched");

    // A changed vote replaces the rating.
    tg.vote({ pollId: one.poll.result.poll.id, optionIds: [1], userId: OWNER });
    await until("the changed vote", () => liveRatings("first question for the polls").some((x) => x.value === -1), { timeoutMs: 60000 });
    assert.equal(liveRatings("first question for the polls").length, 1);

    // The votes went to rlclaw, not to the agent: no model call, no reply, no turn.
    await sleep(2500);
    assert.equal(w.model.requests.length, modelCalls, JSON.stringify(w.model.requests.slice(modelCalls)));
    // (Telegram's typing indicator may still go out: OpenClaw starts it before the hooks run.)
    const said = tg.sent.slice(sentBefore).filter((s) => s.method !== "sendChatAction");
    assert.deepEqual(said.map((s) => [s.method, s.params.text]), []);
    assert.deepEqual(bridge.turns().filter((t) => /Poll response/.test(t.prompt)).map((t) => t.prompt), []);
  });

  test("the gateway log shows no shim error", () => {
    const lines = w.oc.gatewayLog.split("\n").filter((l) => /rlclaw/.test(l) && /trapped|could not|failed|refusing the bridge/i.test(l));
    assert.deepEqual(lines, []);
  });
});
