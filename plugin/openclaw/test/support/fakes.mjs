// Loopback fakes for an offline gateway: an OpenAI-compatible model server and the Telegram
// Bot API (DMs and a group, reactions from any user, button taps), in the test's own process.
import http from "node:http";

function listen(server) {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}

function readBody(req) {
  return new Promise((resolve) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      const ct = req.headers["content-type"] || "";
      try {
        if (ct.includes("json")) return resolve(raw ? JSON.parse(raw) : {});
        if (ct.includes("x-www-form-urlencoded")) return resolve(Object.fromEntries(new URLSearchParams(raw)));
      } catch {
        // fall through: an unreadable body is an empty one
      }
      resolve({});
    });
  });
}

/** The last user message's own text (OpenClaw wraps it in metadata lines). */
function lastUserText(body) {
  const last = [...(body.messages || [])].reverse().find((m) => m.role === "user" && !JSON.stringify(m.content).includes("INTERNAL_CONTEXT"));
  const text = typeof last?.content === "string" ? last.content
    : Array.isArray(last?.content) ? last.content.map((p) => p.text || "").join("") : "";
  return text;
}

/**
 * The model: answers "Reply <n>." — or, when the person's message contains "long", a reply
 * of about 700 characters (several chunks with a small textChunkLimit).
 */
export async function startFakeModel() {
  let n = 0;
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const body = await readBody(req);
    if (req.url.endsWith("/models")) {
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ object: "list", data: [{ id: "fake-model", object: "model", owned_by: "local" }] }));
    }
    if (!req.url.endsWith("/chat/completions")) {
      res.writeHead(404, { "content-type": "application/json" });
      return res.end(JSON.stringify({ error: { message: "not found" } }));
    }
    n += 1;
    const asked = lastUserText(body);
    requests.push({ n, asked });
    const text = /\blong\b/.test(asked)
      ? `Reply ${n}, a long one. ` + Array.from({ length: 16 }, (_, i) => `Sentence number ${i + 1} of this rather long reply.`).join(" ")
      : `Reply ${n}.`;
    const id = `chatcmpl-fake-${n}`;
    const created = Math.floor(Date.now() / 1000);
    const usage = { prompt_tokens: 10, completion_tokens: 8, total_tokens: 18 };
    if (body.stream) {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      const chunk = (delta, finish) => `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model: body.model, choices: [{ index: 0, delta, finish_reason: finish ?? null }] })}\n\n`;
      res.write(chunk({ role: "assistant", content: "" }));
      for (const piece of text.match(/.{1,24}/gs) || [text]) res.write(chunk({ content: piece }));
      res.write(chunk({}, "stop"));
      res.write(`data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model: body.model, choices: [], usage })}\n\n`);
      res.write("data: [DONE]\n\n");
      return res.end();
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ id, object: "chat.completion", created, model: body.model,
      choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }], usage }));
  });
  const port = await listen(server);
  return { port, url: `http://127.0.0.1:${port}/v1`, requests, close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }) };
}

export const BOT = { id: 7000000001, is_bot: true, first_name: "FakeBot", username: "fake_rl_bot",
  can_join_groups: true, can_read_all_group_messages: true, supports_inline_queries: false };
const NAMES = { 42: ["Alice", "alice"], 99: ["Bob", "bob"], 7: ["Carol", "carol"] };

function user(id) {
  const [first, username] = NAMES[id] ?? [`User${id}`, `user${id}`];
  return { id: Number(id), is_bot: false, first_name: first, username, language_code: "en" };
}

function chat(id) {
  const n = Number(id);
  if (n < 0) return { id: n, type: "supergroup", title: "Test group" };
  const [first, username] = NAMES[n] ?? [`User${n}`, `user${n}`];
  return { id: n, type: "private", first_name: first, username };
}

export async function startFakeTelegram() {
  let updateId = 1000;
  let msgId = 500;
  const queue = [];
  const sent = [];
  const calls = [];
  const waiters = [];
  const listeners = new Set();
  const now = () => Math.floor(Date.now() / 1000);
  const push = (u) => {
    u.update_id = ++updateId;
    queue.push(u);
    while (waiters.length) waiters.shift()();
    return u;
  };
  const botMessage = (chatIdValue, extra) => ({ message_id: ++msgId, from: BOT, chat: chat(chatIdValue), date: now(), ...extra });
  const parse = (v) => (typeof v === "string" ? JSON.parse(v) : v);

  function method(name, p) {
    switch (name) {
      case "getMe": return BOT;
      case "getMyCommands": return [];
      case "getWebhookInfo": return { url: "", has_custom_certificate: false, pending_update_count: 0 };
      case "getChat": return chat(p.chat_id);
      case "getChatMember": return { status: "member", user: user(p.user_id ?? 42) };
      case "getChatAdministrators": return [];
      case "sendMessage": return botMessage(p.chat_id, { text: p.text, ...(p.reply_markup ? { reply_markup: parse(p.reply_markup) } : {}) });
      case "editMessageText": return botMessage(p.chat_id, { message_id: Number(p.message_id), text: p.text, edit_date: now() });
      case "editMessageReplyMarkup": return botMessage(p.chat_id, { message_id: Number(p.message_id) });
      case "sendPoll": return botMessage(p.chat_id, { poll: { id: `poll-${msgId}`, question: p.question, options: (parse(p.options) || []).map((o) => ({ text: o.text ?? o, voter_count: 0 })), total_voter_count: 0, is_closed: false, is_anonymous: false, type: "regular", allows_multiple_answers: false } });
      default: return true;
    }
  }

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    const body = await readBody(req);
    const params = { ...Object.fromEntries(url.searchParams), ...body };
    const json = (code, obj) => {
      res.writeHead(code, { "content-type": "application/json" });
      res.end(JSON.stringify(obj));
    };
    const m = url.pathname.match(/^\/bot([^/]+)\/([A-Za-z]+)$/);
    if (!m) return json(404, { ok: false, error_code: 404, description: "Not Found" });
    const name = m[2];
    if (name === "getUpdates") {
      const offset = Number(params.offset || 0);
      const timeout = Math.min(Number(params.timeout || 0), 2);
      const pick = () => queue.filter((u) => u.update_id >= offset);
      let out = pick();
      if (out.length === 0 && timeout > 0) {
        await new Promise((r) => {
          const t = setTimeout(r, timeout * 1000);
          waiters.push(() => { clearTimeout(t); r(); });
        });
        out = pick();
      }
      calls.push({ method: name, at: Date.now() });
      return json(200, { ok: true, result: out });
    }
    calls.push({ method: name, params, at: Date.now() });
    const result = method(name, params);
    if (/^(send|edit)/.test(name)) {
      const entry = { method: name, params, result };
      sent.push(entry);
      for (const l of listeners) l(entry);
    }
    return json(200, { ok: true, result });
  });
  const port = await listen(server);

  return {
    port,
    apiRoot: `http://127.0.0.1:${port}`,
    sent,
    calls,
    /** A person's message; returns its message id. */
    message({ text, userId = 42, chatId = userId }) {
      const id = ++msgId;
      push({ message: { message_id: id, from: user(userId), chat: chat(chatId), date: now(), text } });
      return id;
    },
    react({ messageId, emoji = "👍", userId = 42, chatId = userId }) {
      push({ message_reaction: { chat: chat(chatId), message_id: Number(messageId), user: user(userId), date: now(), old_reaction: [], new_reaction: [{ type: "emoji", emoji }] } });
    },
    /** A vote on a poll the bot sent (Telegram's poll_answer names the poll, not the chat). */
    vote({ pollId, optionIds, userId = 42 }) {
      push({ poll_answer: { poll_id: String(pollId), user: user(userId), option_ids: optionIds } });
    },
    tap({ messageId, data, userId = 42, chatId = userId }) {
      push({ callback_query: { id: `cb${++updateId}`, from: user(userId), chat_instance: `ci-${chatId}`, data,
        message: { message_id: Number(messageId), from: BOT, chat: chat(chatId), date: now(), text: "reply" } } });
    },
    /** Sent messages to `chatId` from index `from` on. */
    sentTo(chatId, from = 0) {
      return sent.slice(from).filter((s) => String(s.params.chat_id) === String(chatId) && s.method === "sendMessage");
    },
    /** Waits until `pred(sent entry)` holds for a message sent from index `from` on. */
    waitSent(pred, { from = 0, timeoutMs = 20000 } = {}) {
      return new Promise((resolve, reject) => {
        const hit = sent.slice(from).find(pred);
        if (hit) return resolve(hit);
        const t = setTimeout(() => {
          listeners.delete(l);
          reject(new Error(`no matching message sent within ${timeoutMs} ms; sent: ${JSON.stringify(sent.slice(from).map((s) => [s.params.chat_id, s.params.text]))}`));
        }, timeoutMs);
        const l = (e) => {
          if (pred(e)) {
            clearTimeout(t);
            listeners.delete(l);
            resolve(e);
          }
        };
        listeners.add(l);
      });
    },
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }),
  };
}
