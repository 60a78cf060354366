//! The plugin's state machine: one event in, effects out.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::commands::{self, Parsed};
use crate::config::{Active, DEFAULT_CONTEXT_MESSAGES, DEFAULT_MESSAGE_BYTES};
use crate::outbox::{Job, JobKind, Outbox, REQUEST_TIMEOUT_MS, backoff_ms};
use crate::polls::{self, Poll, Polls, Vote};
use crate::reactions;
use crate::signing::{Drbg, hex};
use crate::turns::{Capture, Limits, Turn, Turns};
use crate::types::*;

/// A bridge that proved itself is trusted this long without a new proof.
pub const PROOF_TTL_MS: u64 = 300_000;
pub const MAX_SEEN: usize = 4096;
pub const SEEN_TTL_MS: u64 = 24 * 3600 * 1000;
/// A rating of a message the plugin has not seen delivered yet (a tap that beat the host's
/// `message_sent`) waits at most this long for it, while a reply is on its way in that chat.
pub const HOLD_MS: u64 = 5_000;
/// At most this many such ratings wait; the oldest goes out as it is when one more comes.
pub const MAX_HELD: usize = 64;

/// Remembers recent event keys to drop duplicates; capped in count and age.
#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<(u64, u64)>,
    set: HashSet<u64, BuildHasherDefault<KeyHasher>>,
}

/// The keys are already hashes; no random seed is needed (nor available in the sandbox).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ (self.0 >> 56) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain([0xffu8]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

impl Seen {
    /// Records the key; false when it was seen already.
    fn insert(&mut self, now: u64, parts: &[&str]) -> bool {
        let h = fnv64(parts);
        if !self.set.insert(h) {
            return false;
        }
        if self.order.len() >= MAX_SEEN
            && let Some((old, _)) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back((h, now));
        true
    }

    fn contains(&self, parts: &[&str]) -> bool {
        self.set.contains(&fnv64(parts))
    }

    fn expire(&mut self, now: u64) {
        while let Some(&(h, at)) = self.order.front() {
            if now.saturating_sub(at) <= SEEN_TTL_MS {
                break;
            }
            self.order.pop_front();
            self.set.remove(&h);
        }
    }
}

#[derive(Debug)]
struct InFlight {
    id: u64,
    nonce: String,
    sent_at: u64,
    /// The proof request (`GET /v1/status`, no chat text) rather than the outbox's first job.
    proof: bool,
}

#[derive(Debug, Default)]
struct Link {
    in_flight: Option<InFlight>,
    /// When the bridge last answered with a valid signature.
    proven_at: Option<u64>,
    failures: u32,
    next_try_at: u64,
    down: bool,
}

/// A rating of one message of a reply: a button tap or a reaction. It waits in `held` while
/// the plugin has not seen that message delivered yet.
#[derive(Debug)]
struct MessageRating {
    /// When the tap or reaction came.
    at: u64,
    channel: String,
    chat: Option<String>,
    message_id: String,
    /// The person, when the event names them (a reaction may not: then only a direct chat's
    /// owner can have reacted).
    rater: Option<String>,
    /// None: take the rating back.
    value: Option<f64>,
    source: &'static str,
    emoji: Option<String>,
    event_id: String,
    /// The callback id of a person waiting for the answer.
    reply_to: Option<String>,
}

/// Which turn a rating is for, in `/v1/ratings`' own shapes.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Target<'a> {
    /// `{"turn_id": ...}`
    TurnId(&'a str),
    /// `{"latest": {"session": ..., "sender": ...}}`
    Latest { session: &'a str, sender: &'a str },
    /// `{"channel": ..., "chat": ..., "message_id": ...}`
    #[serde(untagged)]
    Message {
        channel: &'a str,
        chat: &'a str,
        message_id: &'a str,
    },
}

/// The body of one `POST` or `DELETE /v1/ratings`, serialised straight from borrowed fields.
#[derive(Serialize)]
struct RatingBody<'a> {
    event_id: &'a str,
    target: &'a Target<'a>,
    rater: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    emoji: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// What goes into one `POST` or `DELETE /v1/ratings`.
struct Rating<'a> {
    event_id: String,
    target: Target<'a>,
    rater: &'a str,
    /// None: take the rating back.
    value: Option<f64>,
    source: &'a str,
    emoji: Option<&'a str>,
    reason: Option<&'a str>,
    reply_to: Option<&'a str>,
    not_found: Option<&'static str>,
}

/// The whole plugin.
#[derive(Debug, Default)]
pub struct Plugin {
    cfg: Option<Active>,
    rng: Drbg,
    turns: Turns,
    outbox: Outbox,
    seen: Seen,
    next_id: u64,
    link: Link,
    polls: Polls,
    held: VecDeque<MessageRating>,
}

fn event_id(kind: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    format!("rl-{kind}-{}", &hex(&h.finalize())[..32])
}

/// Is this message text one of the plugin's own commands (`/rl`, `/rc`, `/rl@somebot ...`)?
fn is_own_command(text: &str) -> bool {
    let Some(rest) = text.trim_start().strip_prefix('/') else {
        return false;
    };
    let word = rest.split_whitespace().next().unwrap_or("");
    let name = word.split('@').next().unwrap_or("");
    name.eq_ignore_ascii_case("rl") || name.eq_ignore_ascii_case("rc")
}

fn log(fx: &mut Vec<Effect>, level: LogLevel, msg: impl Into<String>) {
    fx.push(Effect::log(level, msg));
}

/// The `error.message` (or code) of an error body, for a person.
fn error_message(status: u16, body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = v["error"]["code"].as_str().unwrap_or("").to_string();
    let msg = v["error"]["message"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| format!("the bridge answered {status}"));
    (code, msg)
}

impl Plugin {
    pub fn new() -> Plugin {
        Plugin::default()
    }

    fn limits(&self) -> Limits {
        match &self.cfg {
            Some(c) => Limits {
                context_messages: c.context_messages,
                message_bytes: c.message_bytes,
            },
            None => Limits {
                context_messages: DEFAULT_CONTEXT_MESSAGES,
                message_bytes: DEFAULT_MESSAGE_BYTES,
            },
        }
    }

    /// Number of requests waiting for the bridge (for tests and status).
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Number of ratings waiting for their reply to be seen (for tests).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Feeds one event; returns what the host must do.
    pub fn handle(&mut self, now: u64, entropy: &[u8], event: Event) -> Vec<Effect> {
        self.rng.reseed(entropy, now);
        let mut fx = Vec::new();
        match event {
            Event::Configure(c) => self.configure(&c, &mut fx),
            Event::Inbound(m) => self.inbound(now, &m, &mut fx),
            Event::Outbound(m) => self.outbound(now, &m, &mut fx),
            Event::Command(c) => self.command(now, &c, &mut fx),
            Event::Callback(c) => self.callback(now, &c, &mut fx),
            Event::Reaction(r) => self.reaction(now, &r, &mut fx),
            Event::BridgeResponse(r) => self.response(now, r, &mut fx),
            Event::Tick => self.tick(now, &mut fx),
        }
        self.pump(now, &mut fx);
        // Hosts report the plugin's own answers as outbound messages too: remember them, so
        // that they never become captured turns.
        for e in &fx {
            if let Effect::Reply { text, .. } = e {
                self.seen.insert(now, &["reply", text.trim()]);
            }
        }
        fx
    }

    fn configure(&mut self, c: &Config, fx: &mut Vec<Effect>) {
        match Active::from_config(c) {
            Ok(a) => {
                let key_changed = self.cfg.as_ref().is_none_or(|old| old.key != a.key);
                if key_changed {
                    self.link.proven_at = None;
                }
                log(
                    fx,
                    LogLevel::Info,
                    format!(
                        "rlclaw configured: key id {}, {} rater(s), {} context messages",
                        a.key.id(),
                        a.raters.len(),
                        a.context_messages
                    ),
                );
                self.cfg = Some(a);
            }
            Err(e) => log(
                fx,
                LogLevel::Error,
                format!(
                    "rlclaw configuration refused: {e}; {}",
                    if self.cfg.is_some() {
                        "keeping the previous configuration"
                    } else {
                        "nothing is sent until a valid one arrives"
                    }
                ),
            ),
        }
    }

    fn enqueue(&mut self, job: Job, fx: &mut Vec<Effect>) {
        let keep = usize::from(self.link.in_flight.as_ref().is_some_and(|f| !f.proof));
        for dropped in self.outbox.push(job, keep) {
            log(
                fx,
                LogLevel::Warn,
                format!(
                    "rlclaw outbox full: dropped the oldest waiting request ({:?})",
                    dropped.kind
                ),
            );
        }
    }

    fn enqueue_capture(&mut self, now: u64, cap: Option<Capture>, fx: &mut Vec<Effect>) {
        if let Some(c) = cap {
            self.enqueue(
                Job {
                    kind: JobKind::Capture { turn_id: c.turn_id },
                    method: "POST",
                    path: "/v1/turns",
                    body: c.body,
                    reply_to: None,
                    not_found: None,
                    created_at: now,
                },
                fx,
            );
        }
    }

    fn inbound(&mut self, now: u64, m: &InboundMessage, fx: &mut Vec<Effect>) {
        // `/rl ...` and `/rc ...` arrive as command events; as messages they are no prompt.
        if is_own_command(&m.text) {
            return;
        }
        // A vote on one of the plugin's polls is a rating, not a prompt: claim it, so that the
        // host keeps it from the agent.
        if let Some(vote) = polls::parse_vote(&m.text) {
            fx.push(Effect::Claim {
                place: m.place.clone(),
                message_id: m.message_id.clone(),
            });
            self.vote(now, m, vote, fx);
            return;
        }
        if let Some(id) = &m.message_id {
            let chat = m.place.chat.as_deref().unwrap_or("");
            if !self.seen.insert(now, &["in", &m.place.channel, chat, id]) {
                return;
            }
        }
        let lim = self.limits();
        let cap = self.turns.inbound(now, m, lim);
        self.enqueue_capture(now, cap, fx);
    }

    fn outbound(&mut self, now: u64, m: &OutboundMessage, fx: &mut Vec<Effect>) {
        if self.seen.contains(&["reply", m.text.trim()]) {
            return;
        }
        let chat = m.place.chat.as_deref().unwrap_or("");
        if !m.message_ids.is_empty()
            && m.message_ids
                .iter()
                .all(|id| self.seen.contains(&["out", &m.place.channel, chat, id]))
        {
            return;
        }
        for id in &m.message_ids {
            self.seen.insert(now, &["out", &m.place.channel, chat, id]);
        }
        let lim = self.limits();
        self.turns.outbound(now, m, lim);
        // A tap or reaction that came before this delivery report may be for it.
        self.retry_held(now, fx);
    }

    fn target<'a>(turn: Option<&'a Turn>, session: &'a str, sender: &'a str) -> Target<'a> {
        match turn {
            Some(t) => Target::TurnId(&t.turn_id),
            None => Target::Latest { session, sender },
        }
    }

    fn enqueue_rating(&mut self, now: u64, r: Rating, fx: &mut Vec<Effect>) {
        let (kind, method) = match r.value {
            Some(v) => (JobKind::Rate { good: v > 0.0 }, "POST"),
            None => (JobKind::Unrate, "DELETE"),
        };
        // Taking a rating back names only the event, the turn and the rater.
        let rated = r.value.is_some();
        let body = RatingBody {
            event_id: &r.event_id,
            target: &r.target,
            rater: r.rater,
            value: r.value,
            source: Some(r.source).filter(|_| rated),
            emoji: r.emoji.filter(|_| rated),
            reason: r.reason.filter(|_| rated),
        };
        let mut reply_to = r.reply_to.map(String::from);
        if let Some(to) = &reply_to
            && self.link.down
        {
            fx.push(Effect::reply(to, QUEUED_TEXT));
            reply_to = None;
        }
        self.enqueue(
            Job {
                kind,
                method,
                path: "/v1/ratings",
                body: serde_json::to_vec(&body).expect("a rating serialises"),
                reply_to,
                not_found: r.not_found,
                created_at: now,
            },
            fx,
        );
    }

    fn command(&mut self, now: u64, c: &Command, fx: &mut Vec<Effect>) {
        if !self.seen.insert(now, &["cmd", &c.id]) {
            return;
        }
        if self.cfg.is_none() {
            fx.push(Effect::reply(&c.id, NOT_CONFIGURED_TEXT));
            return;
        }
        let session = c.place.session.as_str();
        match commands::parse(&c.args) {
            Parsed::Help { unknown } => {
                let text = match unknown {
                    Some(w) => format!("Unknown command “{w}”.\n{}", commands::HELP),
                    None => commands::HELP.to_string(),
                };
                fx.push(Effect::reply(&c.id, text));
            }
            Parsed::Invalid(msg) => fx.push(Effect::reply(&c.id, msg)),
            Parsed::Rate { value, reason } => {
                let lim = self.limits();
                let (cap, turn) = self.turns.latest(session, &c.sender, lim);
                self.enqueue_capture(now, cap, fx);
                let target = Self::target(turn.as_ref(), session, &c.sender);
                self.enqueue_rating(
                    now,
                    Rating {
                        event_id: event_id("cmd", &[&c.id]),
                        target,
                        rater: &c.sender,
                        value: Some(value),
                        source: "command",
                        emoji: None,
                        reason: reason.as_deref(),
                        reply_to: Some(&c.id),
                        not_found: None,
                    },
                    fx,
                );
            }
            Parsed::Query { name } => self.enqueue_command(now, c, name, vec![], fx),
            Parsed::Admin { name, args } => self.enqueue_command(now, c, name, args, fx),
        }
    }

    fn enqueue_command(
        &mut self,
        now: u64,
        c: &Command,
        name: &str,
        args: Vec<String>,
        fx: &mut Vec<Effect>,
    ) {
        if self.link.down && now < self.link.next_try_at {
            fx.push(Effect::reply(&c.id, UNREACHABLE_TEXT));
            return;
        }
        let body = json!({
            "event_id": event_id("cmd", &[&c.id]),
            "name": name,
            "sender": c.sender,
            "session": c.place.session,
            "args": args,
        });
        self.enqueue(
            Job {
                kind: JobKind::Command {
                    name: name.to_string(),
                },
                method: "POST",
                path: "/v1/commands",
                body: serde_json::to_vec(&body).expect("JSON serialises"),
                reply_to: Some(c.id.clone()),
                not_found: None,
                created_at: now,
            },
            fx,
        );
    }

    fn may_rate(&self, channel: &str, rater: &str, turn: &Turn) -> bool {
        rater == turn.sender
            || self
                .cfg
                .as_ref()
                .is_some_and(|c| c.is_rater(channel, rater))
    }

    fn callback(&mut self, now: u64, cb: &Callback, fx: &mut Vec<Effect>) {
        if !self.seen.insert(now, &["cb", &cb.id]) {
            return;
        }
        if self.cfg.is_none() {
            fx.push(Effect::reply(&cb.id, NOT_CONFIGURED_TEXT));
            return;
        }
        // "good", "bad", "good:<anything>", or from a poll "poll:good".
        let mut words = cb.data.split(':').map(str::trim);
        let mut word = words.next().unwrap_or("");
        let mut source = "button";
        if word == "poll" {
            source = "poll";
            word = words.next().unwrap_or("");
        }
        let value = match word {
            "good" => 1.0,
            "bad" => -1.0,
            _ => {
                fx.push(Effect::reply(&cb.id, "That button is not one of rlclaw's."));
                return;
            }
        };
        let Some(mid) = cb.message_id.as_deref() else {
            fx.push(Effect::reply(
                &cb.id,
                "I can't tell which reply that button belongs to.",
            ));
            return;
        };
        self.rate_message(
            now,
            MessageRating {
                at: now,
                channel: cb.place.channel.clone(),
                chat: cb.place.chat.clone(),
                message_id: mid.to_string(),
                rater: Some(cb.sender.clone()),
                value: Some(value),
                source,
                emoji: None,
                event_id: event_id("cb", &[&cb.id]),
                reply_to: Some(cb.id.clone()),
            },
            fx,
        );
    }

    fn reaction(&mut self, now: u64, r: &Reaction, fx: &mut Vec<Effect>) {
        if !self.seen.insert(now, &["rx", &r.id]) {
            return;
        }
        let Some(cfg) = &self.cfg else { return };
        let Some(p) = reactions::parse(&r.text, r.context_key.as_deref()) else {
            return;
        };
        let Some(value) = cfg.emojis.value(&p.emoji) else {
            return;
        };
        let key = r.context_key.as_deref().unwrap_or("");
        let event_id = event_id("rx", &[&r.id, key]);
        self.rate_message(
            now,
            MessageRating {
                at: now,
                channel: p.channel,
                chat: p.chat,
                message_id: p.message_id,
                rater: p.user,
                value: p.added.then_some(value),
                source: "reaction",
                emoji: Some(p.emoji),
                event_id,
                reply_to: None,
            },
            fx,
        );
    }

    /// Rates the turn one of whose messages was tapped or reacted to. A message the plugin has
    /// not seen delivered yet, while a reply is on its way in that chat, is most likely that
    /// reply (the tap beat the host's delivery report): the rating waits for it, at most
    /// `HOLD_MS`. Otherwise it goes to the bridge by message id, which may know the reply from
    /// before a restart; if the bridge does not either, the person is told so.
    fn rate_message(&mut self, now: u64, m: MessageRating, fx: &mut Vec<Effect>) {
        let lim = self.limits();
        let (cap, turn) = self
            .turns
            .by_message(&m.channel, m.chat.as_deref(), &m.message_id, lim);
        self.enqueue_capture(now, cap, fx);
        let Some(t) = turn else {
            if now.saturating_sub(m.at) < HOLD_MS
                && self.turns.awaiting_reply(&m.channel, m.chat.as_deref())
            {
                self.hold(now, m, fx);
            } else {
                self.rate_unknown_message(now, m, fx);
            }
            return;
        };
        let rater = match (&m.rater, t.group) {
            (Some(u), _) => u.clone(),
            // Without a user id only a direct chat's owner can have reacted.
            (None, false) => t.sender.clone(),
            (None, true) => return,
        };
        if !self.may_rate(&m.channel, &rater, &t) {
            match &m.reply_to {
                Some(to) => fx.push(Effect::reply(
                    to,
                    "Only the person who asked can rate this reply.",
                )),
                None => log(
                    fx,
                    LogLevel::Debug,
                    "rlclaw: ignored a reaction by someone other than the turn's owner",
                ),
            }
            return;
        }
        self.enqueue_rating(
            now,
            Rating {
                event_id: m.event_id,
                target: Target::TurnId(&t.turn_id),
                rater: &rater,
                value: m.value,
                source: m.source,
                emoji: m.emoji.as_deref(),
                reason: None,
                reply_to: m.reply_to.as_deref(),
                not_found: None,
            },
            fx,
        );
    }

    /// A rating of a message no captured turn holds: by message id, for the bridge to resolve.
    fn rate_unknown_message(&mut self, now: u64, m: MessageRating, fx: &mut Vec<Effect>) {
        let (Some(chat), Some(rater)) = (m.chat.as_deref(), m.rater.as_deref()) else {
            if let Some(to) = &m.reply_to {
                fx.push(Effect::reply(to, UNKNOWN_REPLY_TEXT));
            }
            return;
        };
        let target = Target::Message {
            channel: &m.channel,
            chat,
            message_id: &m.message_id,
        };
        self.enqueue_rating(
            now,
            Rating {
                event_id: m.event_id.clone(),
                target,
                rater,
                value: m.value,
                source: m.source,
                emoji: m.emoji.as_deref(),
                reason: None,
                reply_to: m.reply_to.as_deref(),
                not_found: Some(UNKNOWN_REPLY_TEXT),
            },
            fx,
        );
    }

    fn hold(&mut self, now: u64, m: MessageRating, fx: &mut Vec<Effect>) {
        if self.held.len() >= MAX_HELD
            && let Some(oldest) = self.held.pop_front()
        {
            self.rate_unknown_message(now, oldest, fx);
        }
        self.held.push_back(m);
    }

    /// Gives every waiting rating another chance: rated once its message is seen, sent by
    /// message id once it has waited `HOLD_MS` or no reply is on its way any more.
    fn retry_held(&mut self, now: u64, fx: &mut Vec<Effect>) {
        for m in std::mem::take(&mut self.held) {
            self.rate_message(now, m, fx);
        }
    }

    /// A vote on one of the plugin's polls: rates the turn the poll was sent for.
    fn vote(&mut self, now: u64, m: &InboundMessage, v: Vote, fx: &mut Vec<Effect>) {
        let chat = m.place.chat.as_deref().unwrap_or("");
        if let Some(id) = &m.message_id
            && !self.seen.insert(now, &["vote", &m.place.channel, chat, id])
        {
            return;
        }
        if self.cfg.is_none() {
            return;
        }
        let Some(value) = v.value else {
            log(
                fx,
                LogLevel::Debug,
                "rlclaw: a poll answer that is not one of its options was ignored",
            );
            return;
        };
        let found = self
            .polls
            .find(&m.place.channel, m.place.chat.as_deref(), v.poll_ref)
            .and_then(|p| self.turns.by_id(&p.turn_id));
        let Some(turn) = found else {
            log(
                fx,
                LogLevel::Info,
                "rlclaw: a vote on a rating poll it no longer remembers was ignored",
            );
            return;
        };
        if !self.may_rate(&m.place.channel, &m.sender, &turn) {
            log(
                fx,
                LogLevel::Debug,
                "rlclaw: ignored a poll vote by someone other than the turn's owner",
            );
            return;
        }
        let at = now.to_string();
        let id = m.message_id.as_deref().unwrap_or(&at);
        self.enqueue_rating(
            now,
            Rating {
                event_id: event_id("poll", &[&m.place.channel, chat, v.poll_ref, &m.sender, id]),
                target: Target::TurnId(&turn.turn_id),
                rater: &m.sender,
                value: Some(value),
                source: "poll",
                emoji: None,
                reason: None,
                reply_to: None,
                not_found: None,
            },
            fx,
        );
    }

    /// Asks for a rating with a poll after a captured reply, where the configuration says so.
    fn ask_with_poll(&mut self, now: u64, cap: &Capture, fx: &mut Vec<Effect>) {
        if !self
            .cfg
            .as_ref()
            .is_some_and(|c| c.polls_on(&cap.place.channel))
            || cap.place.chat.is_none()
        {
            return;
        }
        let mut poll_ref = self.rng.nonce();
        poll_ref.truncate(polls::REF_LEN);
        fx.push(Effect::Poll {
            place: cap.place.clone(),
            question: polls::question(&poll_ref),
            options: polls::options(),
        });
        self.polls.add(Poll {
            poll_ref,
            turn_id: cap.turn_id.clone(),
            channel: cap.place.channel.clone(),
            chat: cap.place.chat.clone(),
            at: now,
        });
    }

    fn tick(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let lim = self.limits();
        // A reply that went quiet is complete: it is captured, and rated by poll where asked.
        for cap in self.turns.tick(now, lim) {
            self.ask_with_poll(now, &cap, fx);
            self.enqueue_capture(now, Some(cap), fx);
        }
        self.retry_held(now, fx);
        self.seen.expire(now);
        self.polls.expire(now);
        let keep = usize::from(self.link.in_flight.as_ref().is_some_and(|f| !f.proof));
        for job in self.outbox.expire(now, keep) {
            log(
                fx,
                LogLevel::Warn,
                format!(
                    "rlclaw: gave up on a request that waited a day for the bridge ({:?})",
                    job.kind
                ),
            );
        }
        if let Some(f) = &self.link.in_flight
            && now.saturating_sub(f.sent_at) >= REQUEST_TIMEOUT_MS
        {
            self.link.in_flight = None;
            self.failure(now, "the bridge did not answer in time", fx);
        }
    }

    fn failure(&mut self, now: u64, reason: &str, fx: &mut Vec<Effect>) {
        self.link.proven_at = None;
        self.link.down = true;
        self.link.failures = self.link.failures.saturating_add(1);
        self.link.next_try_at = now + backoff_ms(self.link.failures);
        let level = if self.link.failures == 1 {
            LogLevel::Warn
        } else {
            LogLevel::Debug
        };
        log(
            fx,
            level,
            format!(
                "rlclaw: {reason}; {} request(s) wait, next try in {} s",
                self.outbox.len(),
                backoff_ms(self.link.failures) / 1000
            ),
        );
        // People waiting on a command are answered now; ratings stay queued.
        for job in self.outbox.take_where(0, |j| !j.retries()) {
            if let Some(to) = &job.reply_to {
                fx.push(Effect::reply(to, UNREACHABLE_TEXT));
            }
        }
        for job in self.outbox.iter_mut() {
            if let Some(to) = job.reply_to.take() {
                fx.push(Effect::reply(&to, QUEUED_TEXT));
            }
        }
    }

    fn response(&mut self, now: u64, r: BridgeResponse, fx: &mut Vec<Effect>) {
        let Some(f) = self.link.in_flight.take_if(|f| f.id == r.id) else {
            log(
                fx,
                LogLevel::Debug,
                format!("rlclaw: ignored an answer to unknown request {}", r.id),
            );
            return;
        };
        if r.status == 0 {
            self.failure(now, "the bridge could not be reached", fx);
            return;
        }
        let Some(cfg) = &self.cfg else { return };
        if let Err(e) = cfg
            .key
            .verify_response(now / 1000, &f.nonce, r.status, &r.headers, &r.body)
        {
            log(
                fx,
                LogLevel::Error,
                format!(
                    "rlclaw: refusing the bridge's answer ({e}): another program may be \
                     listening on the bridge's port, or the key is wrong. Nothing with chat \
                     text is sent until the bridge proves itself."
                ),
            );
            self.failure(now, "the bridge could not prove itself", fx);
            return;
        }
        self.link.proven_at = Some(now);
        let status = r.status;
        if status >= 500 {
            self.failure(now, &format!("the bridge answered {status}"), fx);
            return;
        }
        if status == 401 {
            let (code, msg) = error_message(status, &r.body);
            log(
                fx,
                LogLevel::Error,
                format!("rlclaw: the bridge refused our signature ({code}): {msg}"),
            );
            self.failure(now, "the bridge refused our signature", fx);
            return;
        }
        self.link.down = false;
        self.link.failures = 0;
        self.link.next_try_at = 0;
        if f.proof {
            return;
        }
        let Some(job) = self.outbox.pop() else { return };
        if (200..300).contains(&status) {
            self.success(&job, &r.body, fx);
        } else {
            let (code, msg) = error_message(status, &r.body);
            log(
                fx,
                LogLevel::Warn,
                format!(
                    "rlclaw: {} {} was refused ({status} {code}): {msg}",
                    job.method, job.path
                ),
            );
            if let Some(to) = &job.reply_to {
                let text = match job.not_found {
                    Some(t) if status == 404 && code == "turn_not_found" => t.to_string(),
                    _ => format!("⚠️ {msg}"),
                };
                fx.push(Effect::reply(to, text));
            }
        }
    }

    fn success(&mut self, job: &Job, body: &[u8], fx: &mut Vec<Effect>) {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let Some(to) = &job.reply_to else { return };
        let text = match &job.kind {
            JobKind::Rate { good } => {
                let counts = &v["counts"];
                let n = |k: &str| counts[k].as_u64().unwrap_or(0);
                format!(
                    "{} Thanks, rated {}. So far: {} good, {} bad, {} waiting for training.",
                    if *good { "👍" } else { "👎" },
                    if *good { "good" } else { "bad" },
                    n("good"),
                    n("bad"),
                    n("untrained")
                )
            }
            JobKind::Command { .. } => v["text"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| "Done.".to_string()),
            JobKind::Capture { .. } | JobKind::Unrate => return,
        };
        fx.push(Effect::reply(to, text));
    }

    /// Sends the next request when nothing is in flight and the bridge may be tried.
    fn pump(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let Some(cfg) = &self.cfg else { return };
        if self.link.in_flight.is_some() || now < self.link.next_try_at {
            return;
        }
        let Some(job) = self.outbox.front() else {
            return;
        };
        let proven = self
            .link
            .proven_at
            .is_some_and(|t| now.saturating_sub(t) < PROOF_TTL_MS);
        let (method, path, body, proof) = if proven {
            (job.method, job.path, job.body.clone(), false)
        } else {
            ("GET", "/v1/status", Vec::new(), true)
        };
        let nonce = self.rng.nonce();
        let headers = cfg
            .key
            .sign_request(now / 1000, &nonce, method, path, &body);
        self.next_id += 1;
        let id = self.next_id;
        self.link.in_flight = Some(InFlight {
            id,
            nonce,
            sent_at: now,
            proof,
        });
        fx.push(Effect::Request(BridgeRequest {
            id,
            method: method.to_string(),
            path: path.to_string(),
            headers,
            body,
        }));
    }
}

pub const NOT_CONFIGURED_TEXT: &str = "rlclaw is not set up yet: its bridge key is missing. Run `rlclaw init` and add the key to the plugin's config.";
pub const UNREACHABLE_TEXT: &str =
    "rlclaw can't reach its bridge right now (is `rlclaw serve` running?). Please try again later.";
pub const UNKNOWN_REPLY_TEXT: &str = "⚠️ rlclaw never saw that reply being delivered (it may be older than rlclaw's setup), so it can't rate it. /rl good or /rl bad rates your latest reply.";
pub const QUEUED_TEXT: &str = "⏳ Noted. The rlclaw bridge is not reachable right now, so your rating waits and is sent when it is back.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::Key;

    const KEY: &str = "5c1a9c0f1e2d3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f708192a3b4c5d6e";
    const S: &str = "agent:main:main";

    fn place(chat: &str) -> Place {
        Place {
            channel: "telegram".into(),
            account: None,
            chat: Some(chat.into()),
            session: S.into(),
        }
    }

    fn configured() -> Plugin {
        let mut p = Plugin::new();
        let fx = p.handle(
            1_000_000,
            &[1; 16],
            Event::Configure(Config {
                key_hex: KEY.into(),
                ..Config::default()
            }),
        );
        assert!(matches!(
            fx[0],
            Effect::Log {
                level: LogLevel::Info,
                ..
            }
        ));
        p
    }

    fn requests(fx: &[Effect]) -> Vec<&BridgeRequest> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Request(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn replies(fx: &[Effect]) -> Vec<&str> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Reply { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// A signed answer to `req`, as the bridge would give it.
    fn answer(now: u64, req: &BridgeRequest, status: u16, body: &str) -> Event {
        let key = Key::from_hex(KEY).unwrap();
        let nonce = &req
            .headers
            .iter()
            .find(|(k, _)| k == "x-rlclaw-nonce")
            .unwrap()
            .1;
        let ts = now / 1000;
        Event::BridgeResponse(BridgeResponse {
            id: req.id,
            status,
            headers: vec![
                ("x-rlclaw-timestamp".into(), ts.to_string()),
                (
                    "x-rlclaw-signature".into(),
                    key.sign_response(ts, nonce, status, body.as_bytes()),
                ),
            ],
            body: body.as_bytes().to_vec(),
        })
    }

    fn turn(p: &mut Plugin, now: u64) {
        p.handle(
            now,
            &[2; 16],
            Event::Inbound(InboundMessage {
                place: place("42"),
                sender: "42".into(),
                message_id: Some("1".into()),
                text: "secret prompt".into(),
                ..Default::default()
            }),
        );
        p.handle(
            now,
            &[3; 16],
            Event::Outbound(OutboundMessage {
                place: place("42"),
                text: "secret reply".into(),
                message_ids: vec!["2".into()],
                model: None,
            }),
        );
    }

    fn rate(p: &mut Plugin, now: u64, id: &str) -> Vec<Effect> {
        p.handle(
            now,
            &[4; 16],
            Event::Command(Command {
                id: id.into(),
                place: place("42"),
                sender: "42".into(),
                name: "rl".into(),
                args: "good".into(),
            }),
        )
    }

    #[test]
    fn rating_bodies_take_the_protocols_shapes() {
        let body = |target: Target, value: Option<f64>| {
            let rated = value.is_some();
            let b = RatingBody {
                event_id: "e1",
                target: &target,
                rater: "42",
                value,
                source: Some("reaction").filter(|_| rated),
                emoji: Some("👍").filter(|_| rated),
                reason: None,
            };
            serde_json::to_value(&b).unwrap()
        };
        assert_eq!(
            body(Target::TurnId("t-1"), Some(1.0)),
            json!({"event_id": "e1", "target": {"turn_id": "t-1"}, "rater": "42",
                   "value": 1.0, "source": "reaction", "emoji": "👍"})
        );
        assert_eq!(
            body(
                Target::Latest {
                    session: S,
                    sender: "42"
                },
                Some(-0.5)
            )["target"],
            json!({"latest": {"session": S, "sender": "42"}})
        );
        let by_message = Target::Message {
            channel: "telegram",
            chat: "42",
            message_id: "7",
        };
        assert_eq!(
            body(by_message, None),
            json!({"event_id": "e1", "rater": "42",
                   "target": {"channel": "telegram", "chat": "42", "message_id": "7"}})
        );
    }

    #[test]
    fn own_commands_and_own_replies_never_become_turns() {
        assert!(is_own_command("/rl good"));
        assert!(is_own_command("  /RC@rlclaw_bot bad too long"));
        assert!(!is_own_command("/rlx good"));
        assert!(!is_own_command("rl good"));
        let mut p = configured();
        let fx = rate(&mut p, 1_000_000, "c1");
        let said: Vec<String> = replies(&fx).iter().map(|t| t.to_string()).collect();
        let before = p.queued();
        // The command and the plugin's answer come back as messages; neither opens a turn.
        p.handle(
            1_000_100,
            &[5; 16],
            Event::Inbound(InboundMessage {
                place: place("42"),
                sender: "42".into(),
                message_id: Some("9".into()),
                text: "/rl good".into(),
                ..Default::default()
            }),
        );
        for text in &said {
            p.handle(
                1_000_200,
                &[6; 16],
                Event::Outbound(OutboundMessage {
                    place: place("42"),
                    text: text.clone(),
                    message_ids: vec!["10".into()],
                    model: None,
                }),
            );
        }
        p.handle(1_010_000, &[7; 16], Event::Tick);
        assert_eq!(
            p.queued(),
            before,
            "a command or the plugin's own answer was captured"
        );
        // An ordinary exchange is captured by the same path.
        turn(&mut p, 1_020_000);
        p.handle(1_030_000, &[8; 16], Event::Tick);
        assert_eq!(p.queued(), before + 1);
    }

    #[test]
    fn the_duplicate_filter_is_capped_in_count_and_age() {
        let mut seen = Seen::default();
        assert!(seen.insert(0, &["a"]));
        assert!(!seen.insert(1, &["a"]));
        for i in 0..MAX_SEEN {
            seen.insert(2, &["k", &i.to_string()]);
        }
        assert_eq!(seen.order.len(), MAX_SEEN);
        assert_eq!(seen.set.len(), MAX_SEEN);
        assert!(seen.insert(3, &["a"]), "the oldest key was forgotten");
        seen.expire(SEEN_TTL_MS + 10);
        assert!(seen.order.is_empty() && seen.set.is_empty());
    }

    #[test]
    fn nothing_is_sent_before_a_valid_key() {
        let mut p = Plugin::new();
        turn(&mut p, 1000);
        let fx = rate(&mut p, 1000, "c1");
        assert!(requests(&fx).is_empty());
        assert_eq!(replies(&fx), [NOT_CONFIGURED_TEXT]);
        let fx = p.handle(
            5000,
            &[0; 16],
            Event::Configure(Config {
                key_hex: "nope".into(),
                ..Config::default()
            }),
        );
        assert!(matches!(
            fx[0],
            Effect::Log {
                level: LogLevel::Error,
                ..
            }
        ));
        assert!(requests(&p.handle(9000, &[0; 16], Event::Tick)).is_empty());
    }

    #[test]
    fn the_bridge_proves_itself_before_any_chat_text_and_order_holds() {
        let mut p = configured();
        let now = 1_000_000;
        turn(&mut p, now);
        let fx = rate(&mut p, now, "c1");
        let reqs = requests(&fx);
        assert_eq!(reqs.len(), 1);
        assert_eq!(
            (reqs[0].method.as_str(), reqs[0].path.as_str()),
            ("GET", "/v1/status")
        );
        assert!(reqs[0].body.is_empty());
        let proof = reqs[0].clone();
        // an unsigned answer: nothing more is sent
        let fx = p.handle(
            now,
            &[5; 16],
            Event::BridgeResponse(BridgeResponse {
                id: proof.id,
                status: 200,
                headers: vec![],
                body: b"{}".to_vec(),
            }),
        );
        assert!(requests(&fx).is_empty());
        assert!(fx.iter().any(|e| matches!(
            e,
            Effect::Log {
                level: LogLevel::Error,
                ..
            }
        )));
        assert_eq!(replies(&fx), [QUEUED_TEXT], "the person hears it waits");
        assert_eq!(p.queued(), 2);
        // after the backoff it proves again; this time with a signature
        let fx = p.handle(now + 1_000, &[6; 16], Event::Tick);
        let proof = requests(&fx)[0].clone();
        assert_eq!(proof.path, "/v1/status");
        let fx = p.handle(
            now + 1_000,
            &[7; 16],
            answer(now + 1_000, &proof, 200, "{}"),
        );
        let cap = requests(&fx)[0].clone();
        assert_eq!(cap.path, "/v1/turns");
        assert!(String::from_utf8_lossy(&cap.body).contains("secret prompt"));
        // a 5xx keeps it queued and needs a new proof
        let fx = p.handle(now + 1_000, &[8; 16], answer(now + 1_000, &cap, 503, "{}"));
        assert!(requests(&fx).is_empty());
        let fx = p.handle(now + 3_000, &[9; 16], Event::Tick);
        let proof = requests(&fx)[0].clone();
        assert_eq!(proof.path, "/v1/status");
        let fx = p.handle(
            now + 3_000,
            &[1; 16],
            answer(now + 3_000, &proof, 200, "{}"),
        );
        let cap2 = requests(&fx)[0].clone();
        assert_eq!(cap2.body, cap.body, "a retry resends the same body");
        let fx = p.handle(now + 3_000, &[2; 16], answer(now + 3_000, &cap2, 201, "{}"));
        let rating = requests(&fx)[0].clone();
        assert_eq!(rating.path, "/v1/ratings");
        let fx = p.handle(
            now + 3_000,
            &[3; 16],
            answer(
                now + 3_000,
                &rating,
                200,
                r#"{"counts":{"good":5,"bad":2,"untrained":1}}"#,
            ),
        );
        // the person was told already; nothing more is said
        assert!(replies(&fx).is_empty());
        assert_eq!(p.queued(), 0);
    }

    #[test]
    fn a_rating_reply_shows_the_bridges_counts() {
        let mut p = configured();
        let now = 1_000_000;
        turn(&mut p, now);
        let fx = rate(&mut p, now, "c1");
        let proof = requests(&fx)[0].clone();
        let fx = p.handle(now, &[1; 16], answer(now, &proof, 200, "{}"));
        let cap = requests(&fx)[0].clone();
        let fx = p.handle(now, &[1; 16], answer(now, &cap, 201, "{}"));
        let rating = requests(&fx)[0].clone();
        let body: Value = serde_json::from_slice(&rating.body).unwrap();
        assert_eq!(
            body["target"]["turn_id"],
            serde_json::from_slice::<Value>(&cap.body).unwrap()["turn_id"]
        );
        assert_eq!(body["source"], "command");
        let fx = p.handle(
            now,
            &[3; 16],
            answer(
                now,
                &rating,
                200,
                r#"{"counts":{"good":5,"bad":2,"untrained":1}}"#,
            ),
        );
        let r = replies(&fx);
        assert!(
            r.iter().any(|t| t.contains("5 good, 2 bad, 1 waiting")),
            "{r:?}"
        );
    }

    #[test]
    fn client_errors_are_final_and_shown() {
        let mut p = configured();
        let now = 1_000_000;
        let fx = rate(&mut p, now, "c1");
        let proof = requests(&fx)[0].clone();
        let fx = p.handle(now, &[1; 16], answer(now, &proof, 200, "{}"));
        let rating = requests(&fx)[0].clone();
        assert!(String::from_utf8_lossy(&rating.body).contains("latest"));
        let body = r#"{"error":{"code":"turn_not_found","message":"No turn to rate yet."}}"#;
        let fx = p.handle(now, &[1; 16], answer(now, &rating, 404, body));
        assert_eq!(replies(&fx), ["⚠️ No turn to rate yet."]);
        assert_eq!(p.queued(), 0);
    }

    #[test]
    fn a_late_or_stale_answer_is_refused() {
        let mut p = configured();
        let now = 1_000_000;
        let fx = rate(&mut p, now, "c1");
        let proof = requests(&fx)[0].clone();
        // signed, but 10 minutes off our clock
        let fx = p.handle(now, &[1; 16], answer(now - 600_000, &proof, 200, "{}"));
        assert!(requests(&fx).is_empty());
        assert!(fx.iter().any(|e| matches!(
            e,
            Effect::Log {
                level: LogLevel::Error,
                ..
            }
        )));
        // an answer to a request that is not in flight is ignored
        let fx = p.handle(now, &[1; 16], answer(now, &proof, 200, "{}"));
        assert!(requests(&fx).is_empty());
    }

    #[test]
    fn unanswered_requests_time_out_and_are_retried() {
        let mut p = configured();
        let now = 1_000_000;
        let fx = rate(&mut p, now, "c1");
        assert_eq!(requests(&fx).len(), 1);
        assert!(requests(&p.handle(now + 1_000, &[1; 16], Event::Tick)).is_empty());
        let fx = p.handle(now + REQUEST_TIMEOUT_MS, &[1; 16], Event::Tick);
        assert!(replies(&fx).contains(&QUEUED_TEXT));
        let fx = p.handle(now + REQUEST_TIMEOUT_MS + 1_000, &[1; 16], Event::Tick);
        assert_eq!(requests(&fx)[0].path, "/v1/status");
    }

    #[test]
    fn group_reactions_from_others_are_ignored_silently() {
        let mut p = configured();
        let now = 1_000_000;
        let g = place("-100");
        p.handle(
            now,
            &[1; 16],
            Event::Inbound(InboundMessage {
                place: g.clone(),
                sender: "alice".into(),
                group: true,
                message_id: Some("10".into()),
                text: "q".into(),
                ..Default::default()
            }),
        );
        p.handle(
            now,
            &[1; 16],
            Event::Outbound(OutboundMessage {
                place: g,
                text: "a".into(),
                message_ids: vec!["11".into()],
                model: None,
            }),
        );
        let ev = |id: &str, user: &str| {
            Event::Reaction(Reaction {
                id: id.into(),
                session: S.into(),
                text: String::new(),
                context_key: Some(format!("telegram:reaction:add:-100:11:{user}:👍")),
            })
        };
        let fx = p.handle(now, &[1; 16], ev("r1", "bob"));
        // the turn is captured (proof first), but no rating is queued and nobody is answered
        assert!(replies(&fx).is_empty());
        assert_eq!(p.queued(), 1);
        // a text-only reaction in a group names nobody: ignored
        let fx = p.handle(
            now,
            &[1; 16],
            Event::Reaction(Reaction {
                id: "r2".into(),
                session: S.into(),
                text: "Telegram reaction added: 👍 by A (@a) on msg 11".into(),
                context_key: None,
            }),
        );
        assert!(replies(&fx).is_empty());
        assert_eq!(p.queued(), 1);
        p.handle(now, &[1; 16], ev("r3", "alice"));
        assert_eq!(p.queued(), 2);
        // the same reaction event again is a duplicate
        p.handle(now, &[1; 16], ev("r3", "alice"));
        assert_eq!(p.queued(), 2);
    }
}
