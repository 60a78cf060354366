// The shim between OpenClaw and the rlclaw component. It translates OpenClaw's hook payloads,
// commands, button taps and reaction system events into the component's events (wit/rlclaw.wit)
// and performs the effects the component returns: signed requests to the bridge (sent as given,
// answered with status, lower-cased headers and raw body bytes; status 0 when the bridge cannot
// be reached), replies to show, log lines, rating polls to send (through the channel's outbound
// adapter) and claims on inbound messages (votes on those polls, kept from the agent). It reads
// no chat text: parsing commands, reactions and votes, pairing replies with prompts and signing
// are the component's job.
import { randomUUID } from "node:crypto";

import { readConfig } from "./config.js";

export const TICK_MS = 1000;
export const POLL_MS = 1000;
const MAX_SESSIONS = 512;
const SESSION_TTL_MS = 24 * 3600 * 1000;
const MAX_SEEN_EVENTS = 8192;
const MAX_PLACES = 2048;
const BUTTON_CHANNELS = new Set(["telegram", "slack", "discord"]);
export const NAMESPACE = "rlclaw";
const MAX_OWN_REPLIES = 256;
/** Inbound messages whose component answer before_dispatch may still ask about. */
const MAX_INBOUND_VERDICTS = 256;
/** How long before_dispatch waits for the component's answer on an inbound message. */
const VERDICT_WAIT_MS = 2000;

const str = (v) => (v === undefined || v === null || v === "" ? undefined : String(v));

/** The key of an inbound message, as message_received and before_dispatch both name it. */
function inboundKey(channel, messageId) {
  return `${channel ?? ""}\u0000${messageId ?? ""}`;
}

/** The channel's conversation id without OpenClaw's "<channel>:" or "channel:" prefixes. */
export function chatId(channel, conversation) {
  let c = str(conversation);
  if (!c) return undefined;
  if (channel && c.startsWith(`${channel}:`)) c = c.slice(channel.length + 1);
  for (const p of ["channel:", "group:", "chat:"]) if (c.startsWith(p)) c = c.slice(p.length);
  return c || undefined;
}

/** Whether a conversation is a group, from ids only (message hooks carry no isGroup flag). */
export function looksLikeGroup(channel, chat, sender, metadata) {
  if (metadata?.guildId) return true;
  if (!chat) return false;
  switch (channel) {
    case "telegram":
      return chat.startsWith("-");
    case "whatsapp":
      return chat.endsWith("@g.us");
    case "slack":
      return /^[CG]/.test(chat);
    case "discord":
      return false;
    default:
      return sender !== undefined && chat !== sender;
  }
}

function bytesOf(body) {
  return body instanceof Uint8Array ? body : new Uint8Array(body ?? []);
}

/** A bounded insertion-ordered set. */
class Recent {
  constructor(max) {
    this.max = max;
    this.map = new Map();
  }
  has(k) {
    return this.map.has(k);
  }
  add(k, v = true) {
    this.map.delete(k);
    this.map.set(k, v);
    while (this.map.size > this.max) this.map.delete(this.map.keys().next().value);
  }
  get(k) {
    return this.map.get(k);
  }
}

export class Shim {
  /**
   * @param {object} o
   * @param {object} o.config   the plugin config (api.pluginConfig)
   * @param {object} o.logger   {debug?, info, warn, error}
   * @param {object} o.host     a ComponentHost (or anything with configure/call/stop)
   * @param {Function} [o.fetch]
   * @param {Function} [o.peek] peekSystemEventEntries(sessionKey)
   * @param {object} [o.outbound] `{ sendPoll({channel, accountId, to, poll}) }`: sends a poll
   *   through the channel's outbound adapter (index.js: api.runtime.channel.outbound)
   */
  constructor({ config, logger, host, fetch = globalThis.fetch, peek = null, outbound = null, tickMs = TICK_MS, pollMs = POLL_MS }) {
    this.logger = logger;
    this.host = host;
    this.fetch = fetch;
    this.peek = peek;
    this.outbound = outbound;
    this.tickMs = tickMs;
    this.pollMs = pollMs;
    this.cfg = readConfig(config);
    this.waiters = new Map();
    this.sessions = new Recent(MAX_SESSIONS);
    this.seenEvents = new Recent(MAX_SEEN_EVENTS);
    this.sessionByChat = new Recent(MAX_PLACES);
    this.modelBySession = new Recent(MAX_PLACES);
    // Texts this plugin answered with: when OpenClaw delivers them, message_sent reports them
    // like any reply, and they are no reply of the agent's.
    this.ownReplies = new Recent(MAX_OWN_REPLIES);
    // For before_dispatch: the component's answer on each recent inbound message, and the
    // messages it claimed (votes on its polls).
    this.verdicts = new Recent(MAX_INBOUND_VERDICTS);
    this.claimed = new Recent(MAX_INBOUND_VERDICTS);
    this.timers = [];
    this.started = false;
    this.inflight = new Set();
    this.stats = { events: 0, requests: 0, unreachable: 0, polls: 0, claims: 0 };
  }

  log(level, message) {
    const f = this.logger?.[level] ?? this.logger?.info;
    try {
      f?.call(this.logger, message);
    } catch {
      // A logger that throws must not stop the shim.
    }
  }

  /** Configures the component and starts the tick and reaction timers (idempotent). */
  start() {
    if (this.started) return;
    this.started = true;
    for (const p of this.cfg.problems) this.log(this.cfg.fatal ? "error" : "warn", `rlclaw: ${p}`);
    if (this.cfg.fatal) {
      this.log("error", "rlclaw: not sending anything to a bridge until the configuration is fixed; /rl answers with what is wrong");
      return;
    }
    this.#track(this.host.configure(this.cfg.component).then((fx) => this.perform(fx)));
    const tick = setInterval(() => this.feed({ tag: "tick" }), this.tickMs);
    tick.unref?.();
    this.timers.push(tick);
    if (this.peek && this.cfg.feedbackMode !== "slash_only") {
      const poll = setInterval(() => this.pollReactions(), this.pollMs);
      poll.unref?.();
      this.timers.push(poll);
    }
  }

  async stop() {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (const [, w] of this.waiters) w(null);
    this.waiters.clear();
    await this.host.stop();
  }

  /** Waits until every request and event started so far is done (for tests). */
  async settle() {
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  }

  #track(p) {
    const q = p.catch((e) => this.log("error", `rlclaw: ${e?.stack ?? e}`)).finally(() => this.inflight.delete(q));
    this.inflight.add(q);
    return q;
  }

  /** Feeds one event and performs its effects; resolves when the component has answered. */
  feed(event) {
    if (!this.started) this.start();
    if (this.cfg.fatal) return Promise.resolve();
    this.stats.events++;
    return this.#track(this.host.call(event).then((fx) => this.perform(fx)));
  }

  perform(effects) {
    for (const fx of effects ?? []) {
      switch (fx.tag) {
        case "request":
          this.#track(this.request(fx.val));
          break;
        case "reply": {
          const w = this.waiters.get(fx.val.to);
          if (w) {
            this.waiters.delete(fx.val.to);
            w(fx.val.text);
          } else {
            this.log("info", `rlclaw: a late answer (the person was told to wait): ${fx.val.text}`);
          }
          break;
        }
        case "log":
          this.log(fx.val.level, fx.val.message);
          break;
        case "poll":
          this.#track(this.sendPoll(fx.val));
          break;
        case "claim":
          this.stats.claims++;
          this.claimed.add(inboundKey(fx.val.place?.channel, fx.val.messageId));
          break;
        default:
          this.log("warn", `rlclaw: unknown effect ${fx?.tag}`);
      }
    }
  }

  /** Performs one signed request for the component and hands it the answer. */
  async request(req) {
    this.stats.requests++;
    const headers = new Headers();
    for (const [k, v] of req.headers) headers.append(k, v);
    const body = bytesOf(req.body);
    if (body.length && !headers.has("content-type")) headers.set("content-type", "application/json");
    let answer;
    try {
      const res = await this.fetch(this.cfg.bridgeUrl + req.path, {
        method: req.method,
        headers,
        body: body.length ? body : undefined,
        redirect: "manual",
        signal: AbortSignal.timeout(this.cfg.requestTimeoutMs),
      });
      const raw = new Uint8Array(await res.arrayBuffer());
      const hs = [];
      res.headers.forEach((v, k) => hs.push([k.toLowerCase(), v]));
      answer = { id: req.id, status: res.status, headers: hs, body: raw };
    } catch (e) {
      this.stats.unreachable++;
      this.log("debug", `rlclaw: bridge request ${req.method} ${req.path} failed: ${e?.cause?.code ?? e?.name ?? e}`);
      answer = { id: req.id, status: 0, headers: [], body: new Uint8Array() };
    }
    await this.feed({ tag: "bridge-response", val: answer });
  }

  /** Sends one of the component's rating polls through the channel's outbound adapter. */
  async sendPoll(req) {
    const { place, question, options } = req;
    if (!this.outbound) {
      this.log("warn", `rlclaw: no outbound adapter to send a rating poll on ${place.channel}`);
      return;
    }
    let timer;
    try {
      const sent = this.outbound.sendPoll({
        channel: place.channel,
        accountId: place.account,
        to: place.chat,
        poll: { question, options, maxSelections: 1 },
      });
      const limit = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${this.cfg.requestTimeoutMs} ms`)), this.cfg.requestTimeoutMs);
        timer.unref?.();
      });
      const r = await Promise.race([sent, limit]);
      this.stats.polls++;
      // OpenClaw says when votes cannot come back (an anonymous poll, a group where the bot is
      // no administrator, ...): the person then rates with /rl.
      if (r?.warning) this.log("warn", `rlclaw: rating poll on ${place.channel}: ${r.warning}`);
    } catch (e) {
      this.log("warn", `rlclaw: could not send a rating poll on ${place.channel}: ${e?.message ?? e}`);
    } finally {
      clearTimeout(timer);
    }
  }

  #seeSession(session, channel, chat) {
    if (!session) return;
    this.sessions.add(session, Date.now());
    if (channel && chat) this.sessionByChat.add(`${channel}\u0000${chat}`, session);
  }

  #place(channel, ctx, conversation, session) {
    const chat = chatId(channel, conversation);
    const s = str(session) ?? (chat ? `${channel}:${chat}` : channel);
    this.#seeSession(s, channel, chat);
    return { channel, account: str(ctx?.accountId), chat, session: s };
  }

  /** `message_received`: a person's message. */
  onMessageReceived(event, ctx) {
    if (!event || typeof event.content !== "string") return;
    const md = event.metadata ?? {};
    const channel = str(ctx?.channelId) ?? str(md.provider) ?? "unknown";
    // A reaction queued just before this message is drained into the agent's prompt: read it now.
    this.pollReactions();
    const place = this.#place(channel, ctx, ctx?.conversationId ?? md.originatingTo ?? md.to, ctx?.sessionKey ?? event.sessionKey);
    const sender = str(event.senderId) ?? str(ctx?.senderId) ?? str(md.senderId) ?? str(event.from) ?? "unknown";
    const messageId = str(event.messageId) ?? str(ctx?.messageId);
    const done = this.feed({
      tag: "inbound",
      val: {
        place,
        sender,
        senderName: str(md.senderName) ?? str(md.senderUsername),
        group: looksLikeGroup(channel, place.chat, sender, md),
        messageId,
        text: event.content,
      },
    });
    if (this.cfg.component?.pollChannels.length && messageId) this.verdicts.add(inboundKey(channel, messageId), done);
    return done;
  }

  /**
   * `before_dispatch`: keeps a message the component claimed (a vote on one of its rating
   * polls) from the agent. Waits for the component's answer on that message, briefly.
   */
  async onBeforeDispatch(event, ctx) {
    const channel = str(event?.channel) ?? str(ctx?.channelId);
    const key = inboundKey(channel, str(event?.messageId) ?? str(ctx?.messageId));
    const pending = this.verdicts.get(key);
    if (!pending) return undefined;
    let timer;
    const limit = new Promise((resolve) => {
      timer = setTimeout(resolve, VERDICT_WAIT_MS);
      timer.unref?.();
    });
    await Promise.race([pending, limit]);
    clearTimeout(timer);
    this.verdicts.map.delete(key);
    return this.claimed.has(key) ? { handled: true } : undefined;
  }

  /** `reply_payload_sending`: remembers the model; adds rating buttons when the mode asks. */
  onReplyPayloadSending(event, ctx) {
    const session = str(ctx?.sessionKey) ?? str(event?.sessionKey);
    const u = event?.usageState;
    if (session && u && (u.resolvedRef || u.model)) {
      this.modelBySession.add(session, String(u.resolvedRef ?? (u.provider ? `${u.provider}/${u.model}` : u.model)));
    }
    if (this.cfg.feedbackMode !== "slash_reactions_prompt" || this.cfg.fatal) return undefined;
    const channel = str(event?.channel) ?? str(ctx?.channelId);
    const p = event?.payload;
    // Where the rating prompt is a poll, the component asks with one after the reply.
    if (this.cfg.pollChannels.includes(channel)) return undefined;
    if (event?.kind !== "final" || !BUTTON_CHANNELS.has(channel) || !p || typeof p.text !== "string" || !p.text.trim()) return undefined;
    if (p.isError || p.isReasoning || p.isCommentary || p.presentation || p.interactive) return undefined;
    return {
      payload: {
        ...p,
        presentation: {
          blocks: [
            { type: "buttons", buttons: [
              { label: "👍 Good", value: `${NAMESPACE}:good`, style: "success" },
              { label: "👎 Bad", value: `${NAMESPACE}:bad`, style: "danger" },
            ] },
          ],
        },
      },
    };
  }

  /** `message_sent`: the agent's reply as delivered (a chunked reply: the last chunk's id). */
  onMessageSent(event, ctx) {
    if (!event || event.success === false || typeof event.content !== "string") return;
    const own = event.content.trim();
    if (this.ownReplies.has(own)) {
      this.ownReplies.map.delete(own);
      return;
    }
    const session = str(ctx?.sessionKey) ?? str(event.sessionKey);
    // A send with no session (a CLI `message send`) answers nobody's message.
    if (!session) return;
    const channel = str(ctx?.channelId) ?? "unknown";
    const place = this.#place(channel, ctx, ctx?.conversationId ?? event.to, session);
    const id = str(event.messageId) ?? str(ctx?.messageId);
    const model = this.modelBySession.get(session);
    return this.feed({
      tag: "outbound",
      val: { place, text: event.content, messageIds: id ? [id] : [], model },
    });
  }

  /** Waits for the component's reply to `id`, at most the configured time. */
  #awaitReply(id) {
    let timer;
    const reply = new Promise((resolve) => {
      this.waiters.set(id, resolve);
      timer = setTimeout(() => {
        this.waiters.delete(id);
        resolve(null);
      }, this.cfg.commandTimeoutMs);
      timer.unref?.();
    });
    return reply.finally(() => clearTimeout(timer));
  }

  notSetUpText() {
    return `⚠️ rlclaw is not set up: ${this.cfg.problems.join("; ")}.`;
  }

  /** `/rl` and `/rc` (registerCommand, requireAuth): resolves to the text to answer with. */
  async command(name, ctx) {
    if (this.cfg.fatal) return this.notSetUpText();
    const channel = str(ctx?.channel) ?? str(ctx?.channelId) ?? "unknown";
    const place = this.#place(channel, ctx, ctx?.to ?? ctx?.from, ctx?.sessionKey);
    const id = `cmd-${randomUUID()}`;
    const reply = this.#awaitReply(id);
    this.feed({
      tag: "command",
      val: { id, place, sender: str(ctx?.senderId) ?? "unknown", name, args: typeof ctx?.args === "string" ? ctx.args : "" },
    });
    const text = (await reply) ?? "⏳ The rlclaw bridge has not answered yet; a rating is kept and sent when it does.";
    this.ownReplies.add(text.trim());
    return text;
  }

  /** A tap on one of our buttons (registerInteractiveHandler, namespace "rlclaw"). */
  async interactive(channel, ctx) {
    const respond = async (text) => {
      if (!text) return;
      this.ownReplies.add(text.trim());
      const r = ctx?.respond;
      try {
        if (typeof r?.reply === "function") await r.reply(channel === "slack" ? { text, responseType: "ephemeral" } : { text });
        else if (typeof r?.followUp === "function") await r.followUp({ text });
      } catch (e) {
        this.log("warn", `rlclaw: could not answer a button tap: ${e?.message ?? e}`);
      }
    };
    if (this.cfg.fatal) {
      await respond(this.notSetUpText());
      return { handled: true };
    }
    const it = ctx?.callback ?? ctx?.interaction ?? {};
    const chat = chatId(channel, ctx?.conversationId ?? it.chatId);
    const messageId = str(it.messageId) ?? str(it.messageTs);
    const session = str(ctx?.sessionKey) ?? this.sessionByChat.get(`${channel}\u0000${chat}`) ?? (chat ? `${channel}:${chat}` : channel);
    const id = `cb-${str(ctx?.callbackId) ?? str(ctx?.interactionId) ?? randomUUID()}`;
    const reply = this.#awaitReply(id);
    this.feed({
      tag: "callback",
      val: {
        id,
        place: { channel, account: str(ctx?.accountId), chat, session },
        sender: str(ctx?.senderId) ?? "unknown",
        group: Boolean(ctx?.isGroup ?? ctx?.guildId ?? looksLikeGroup(channel, chat, str(ctx?.senderId))),
        messageId,
        data: String(it.payload ?? ""),
      },
    });
    await respond(await reply);
    return { handled: true };
  }

  /** Reads the reaction system events queued for the sessions seen so far. */
  pollReactions() {
    if (!this.peek || this.cfg.fatal || this.cfg.feedbackMode === "slash_only") return;
    const now = Date.now();
    for (const [session, seenAt] of this.sessions.map) {
      if (now - seenAt > SESSION_TTL_MS) continue;
      let entries;
      try {
        entries = this.peek(session);
      } catch (e) {
        this.log("debug", `rlclaw: reading system events failed: ${e?.message ?? e}`);
        continue;
      }
      for (const e of entries ?? []) {
        const id = str(e?.id) ?? `${e?.ts}:${e?.contextKey ?? e?.text}`;
        if (this.seenEvents.has(id)) continue;
        this.seenEvents.add(id);
        const key = str(e?.contextKey);
        const text = typeof e?.text === "string" ? e.text : "";
        if (!(key?.includes(":reaction:") || text.includes(" reaction "))) continue;
        this.feed({ tag: "reaction", val: { id, session, text, contextKey: key } });
      }
    }
  }
}
