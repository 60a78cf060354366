//! Pairing replies with the messages they answer, and the captured turns.
//!
//! A conversation is one (session, channel, account, chat). An inbound message opens a pending
//! turn; every outbound message before the next inbound one belongs to it (a chunked reply is
//! one turn). The turn is flushed as a capture when the next inbound message arrives, after a
//! quiet period, or when a rating needs it. Everything is capped in count and in age.

use std::collections::VecDeque;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::cut_utf8;
use crate::signing::hex;
use crate::types::{InboundMessage, OutboundMessage, Place};

pub const QUIET_MS: u64 = 2_000;
pub const MAX_CONVS: usize = 256;
pub const CONV_TTL_MS: u64 = 24 * 3600 * 1000;
pub const MAX_TURNS: usize = 512;
pub const TURN_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
pub const PENDING_TTL_MS: u64 = 3600 * 1000;
pub const MAX_TURN_MESSAGE_IDS: usize = 128;
/// The Telegram chunk workaround adds at most this many ids.
pub const TELEGRAM_RANGE: u64 = 64;
const MAX_INBOUND_IDS: usize = 64;
/// A prompt made of several messages from one person is capped at this many parts.
const MAX_PROMPT_PARTS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

#[derive(Clone, Debug)]
struct HistEntry {
    seq: u64,
    role: Role,
    text: String,
}

#[derive(Clone, Debug)]
struct Pending {
    turn_id: String,
    sender: String,
    group: bool,
    prompt: String,
    prompt_parts: usize,
    inbound_id: Option<String>,
    at: u64,
    /// History entries with a smaller sequence number are this turn's context.
    ctx_end: u64,
    response: String,
    message_ids: Vec<String>,
    model: Option<String>,
    last_out_at: Option<u64>,
}

#[derive(Clone, Debug)]
struct Conv {
    place: Place,
    history: VecDeque<HistEntry>,
    next_seq: u64,
    pending: Option<Pending>,
    /// The turn flushed last, until the next inbound message: late chunks still belong to it.
    last_turn: Option<String>,
    inbound_ids: VecDeque<String>,
    last_used: u64,
}

/// A captured turn, as the plugin remembers it for ratings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    pub turn_id: String,
    pub session: String,
    pub channel: String,
    pub chat: Option<String>,
    pub sender: String,
    pub group: bool,
    pub message_ids: Vec<String>,
    pub at: u64,
}

/// A turn to send to the bridge: `POST /v1/turns` with `body`.
#[derive(Clone, Debug)]
pub struct Capture {
    pub turn_id: String,
    pub body: Vec<u8>,
    /// Where the turn happened (a rating poll goes there).
    pub place: Place,
}

/// The `POST /v1/turns` body (PROTOCOL.md), serialised straight from borrowed fields: a flush
/// happens inside a chat event, so it should not copy the conversation into a JSON tree first.
#[derive(Serialize)]
struct CaptureBody<'a> {
    turn_id: &'a str,
    session: &'a str,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat: Option<&'a str>,
    sender: &'a str,
    group: bool,
    message_ids: &'a [String],
    prompt: &'a str,
    response: &'a str,
    context: Vec<ContextMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    at: u64,
}

#[derive(Serialize)]
struct ContextMessage<'a> {
    role: &'static str,
    content: &'a str,
}

/// Caps that come from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub context_messages: usize,
    pub message_bytes: usize,
}

#[derive(Default, Debug)]
pub struct Turns {
    convs: Vec<Conv>,
    captured: VecDeque<Turn>,
}

fn same_place(a: &Place, b: &Place) -> bool {
    a.session == b.session && a.channel == b.channel && a.account == b.account && a.chat == b.chat
}

fn turn_id(place: &Place, sender: &str, inbound_id: Option<&str>, at: u64) -> String {
    let mut h = Sha256::new();
    for part in [
        place.session.as_str(),
        place.channel.as_str(),
        place.account.as_deref().unwrap_or(""),
        place.chat.as_deref().unwrap_or(""),
        sender,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    match inbound_id {
        Some(id) => {
            h.update(b"id");
            h.update(id.as_bytes());
        }
        None => {
            h.update(b"at");
            h.update(at.to_le_bytes());
        }
    }
    format!("t-{}", &hex(&h.finalize())[..32])
}

fn chat_matches(turn_chat: Option<&str>, chat: Option<&str>) -> bool {
    match (turn_chat, chat) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

impl Turns {
    pub fn new() -> Turns {
        Turns::default()
    }

    pub fn captured(&self) -> impl Iterator<Item = &Turn> {
        self.captured.iter()
    }

    fn conv_index(&mut self, place: &Place, now: u64) -> usize {
        if let Some(i) = self.convs.iter().position(|c| same_place(&c.place, place)) {
            self.convs[i].last_used = now;
            return i;
        }
        if self.convs.len() >= MAX_CONVS {
            // Evict the least recently used conversation (its pending turn is dropped).
            if let Some((i, _)) = self
                .convs
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.last_used)
            {
                self.convs.swap_remove(i);
            }
        }
        self.convs.push(Conv {
            place: place.clone(),
            history: VecDeque::new(),
            next_seq: 0,
            pending: None,
            last_turn: None,
            inbound_ids: VecDeque::new(),
            last_used: now,
        });
        self.convs.len() - 1
    }

    fn push_history(conv: &mut Conv, role: Role, text: &str, lim: Limits) {
        let text = cut_utf8(text, lim.message_bytes);
        match conv.history.back_mut() {
            // Chunks of one reply are one message.
            Some(last) if role == Role::Assistant && last.role == Role::Assistant => {
                if last.text.len() < lim.message_bytes {
                    last.text.push('\n');
                    last.text.push_str(text);
                    let cut = cut_utf8(&last.text, lim.message_bytes).len();
                    last.text.truncate(cut);
                }
            }
            _ => {
                conv.history.push_back(HistEntry {
                    seq: conv.next_seq,
                    role,
                    text: text.to_string(),
                });
                conv.next_seq += 1;
            }
        }
        while conv.history.len() > lim.context_messages + 2 {
            conv.history.pop_front();
        }
    }

    /// A person's message. Returns the capture of the turn it closes, if any.
    pub fn inbound(&mut self, now: u64, m: &InboundMessage, lim: Limits) -> Option<Capture> {
        let i = self.conv_index(&m.place, now);
        let mut capture = None;
        let conv = &mut self.convs[i];
        conv.last_turn = None;
        if let Some(id) = &m.message_id {
            if conv.inbound_ids.len() >= MAX_INBOUND_IDS {
                conv.inbound_ids.pop_front();
            }
            conv.inbound_ids.push_back(id.clone());
        }
        let merge = match &conv.pending {
            Some(p) if p.last_out_at.is_some() => {
                capture = self.flush_conv(i, lim);
                false
            }
            Some(p) => p.sender == m.sender && p.prompt_parts < MAX_PROMPT_PARTS,
            None => false,
        };
        let conv = &mut self.convs[i];
        let text = cut_utf8(&m.text, lim.message_bytes);
        if merge {
            let p = conv.pending.as_mut().expect("checked above");
            p.prompt.push('\n');
            p.prompt.push_str(text);
            let cut = cut_utf8(&p.prompt, lim.message_bytes).len();
            p.prompt.truncate(cut);
            p.prompt_parts += 1;
        } else {
            let ctx_end = conv.next_seq;
            conv.pending = Some(Pending {
                turn_id: turn_id(&m.place, &m.sender, m.message_id.as_deref(), now),
                sender: m.sender.clone(),
                group: m.group,
                prompt: text.to_string(),
                prompt_parts: 1,
                inbound_id: m.message_id.clone(),
                at: now,
                ctx_end,
                response: String::new(),
                message_ids: Vec::new(),
                model: None,
                last_out_at: None,
            });
        }
        Self::push_history(conv, Role::User, &m.text, lim);
        capture
    }

    /// The agent's reply (or one chunk of it).
    pub fn outbound(&mut self, now: u64, m: &OutboundMessage, lim: Limits) {
        let i = self.conv_index(&m.place, now);
        let conv = &mut self.convs[i];
        Self::push_history(conv, Role::Assistant, &m.text, lim);
        if let Some(p) = conv.pending.as_mut() {
            if !p.response.is_empty() {
                p.response.push('\n');
            }
            p.response.push_str(&m.text);
            let cut = cut_utf8(&p.response, lim.message_bytes).len();
            p.response.truncate(cut);
            for id in &m.message_ids {
                if p.message_ids.len() < MAX_TURN_MESSAGE_IDS && !p.message_ids.contains(id) {
                    p.message_ids.push(id.clone());
                }
            }
            if m.model.is_some() {
                p.model = m.model.clone();
            }
            p.last_out_at = Some(now);
        } else if let Some(tid) = conv.last_turn.clone() {
            // A late chunk of a turn already captured: remember its ids for reactions.
            let inbound_ids = conv.inbound_ids.clone();
            if let Some(t) = self.captured.iter_mut().rev().find(|t| t.turn_id == tid) {
                let mut ids = t.message_ids.clone();
                for id in &m.message_ids {
                    if !ids.contains(id) {
                        ids.push(id.clone());
                    }
                }
                t.message_ids = expand_ids(&t.channel, None, &ids, &inbound_ids);
            }
        }
    }

    /// Flushes the conversation's pending turn, and gives it back as remembered for ratings.
    fn flush_turn(&mut self, i: usize, lim: Limits) -> (Option<Capture>, Option<Turn>) {
        let cap = self.flush_conv(i, lim);
        let turn = cap.as_ref().and_then(|c| self.by_id(&c.turn_id));
        (cap, turn)
    }

    /// Flushes the conversation's pending turn if it has a reply.
    fn flush_conv(&mut self, i: usize, lim: Limits) -> Option<Capture> {
        let conv = &mut self.convs[i];
        conv.pending.as_ref()?.last_out_at?;
        let p = conv.pending.take()?;
        let message_ids = expand_ids(
            &conv.place.channel,
            p.inbound_id.as_deref(),
            &p.message_ids,
            &conv.inbound_ids,
        );
        let ctx: Vec<&HistEntry> = conv.history.iter().filter(|e| e.seq < p.ctx_end).collect();
        let skip = ctx.len().saturating_sub(lim.context_messages);
        let context: Vec<ContextMessage> = ctx[skip..]
            .iter()
            .map(|e| ContextMessage {
                role: if e.role == Role::User {
                    "user"
                } else {
                    "assistant"
                },
                content: cut_utf8(&e.text, lim.message_bytes),
            })
            .collect();
        let place = &conv.place;
        let body = serde_json::to_vec(&CaptureBody {
            turn_id: &p.turn_id,
            session: &place.session,
            channel: &place.channel,
            account: place.account.as_deref(),
            chat: place.chat.as_deref(),
            sender: &p.sender,
            group: p.group,
            message_ids: &message_ids,
            prompt: &p.prompt,
            response: &p.response,
            context,
            model: p.model.as_deref(),
            at: p.at,
        })
        .expect("a capture serialises");
        let turn = Turn {
            turn_id: p.turn_id.clone(),
            session: place.session.clone(),
            channel: place.channel.clone(),
            chat: place.chat.clone(),
            sender: p.sender.clone(),
            group: p.group,
            message_ids,
            at: p.at,
        };
        let place = place.clone();
        conv.last_turn = Some(p.turn_id.clone());
        if self.captured.len() >= MAX_TURNS {
            self.captured.pop_front();
        }
        // Kept in order of `at`, so that "the latest" is the first match from the back (a turn
        // that started earlier can be flushed later, by its quiet period).
        let pos = self
            .captured
            .iter()
            .rposition(|t| t.at <= turn.at)
            .map_or(0, |i| i + 1);
        self.captured.insert(pos, turn);
        Some(Capture {
            turn_id: p.turn_id,
            body,
            place,
        })
    }

    /// Flushes quiet turns and forgets what is too old.
    pub fn tick(&mut self, now: u64, lim: Limits) -> Vec<Capture> {
        let mut out = Vec::new();
        for i in 0..self.convs.len() {
            let quiet = match &self.convs[i].pending {
                Some(p) => p
                    .last_out_at
                    .is_some_and(|t| now.saturating_sub(t) >= QUIET_MS),
                None => false,
            };
            if quiet {
                out.extend(self.flush_conv(i, lim));
            }
            let conv = &mut self.convs[i];
            if conv
                .pending
                .as_ref()
                .is_some_and(|p| now.saturating_sub(p.at) > PENDING_TTL_MS)
            {
                conv.pending = None;
            }
        }
        self.convs
            .retain(|c| now.saturating_sub(c.last_used) <= CONV_TTL_MS || c.pending.is_some());
        while self
            .captured
            .front()
            .is_some_and(|t| now.saturating_sub(t.at) > TURN_TTL_MS)
        {
            self.captured.pop_front();
        }
        out
    }

    /// The sender's latest turn in a session (flushing it first when it is still pending).
    pub fn latest(
        &mut self,
        session: &str,
        sender: &str,
        lim: Limits,
    ) -> (Option<Capture>, Option<Turn>) {
        let pending = self
            .convs
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let p = c.pending.as_ref()?;
                (c.place.session == session && p.sender == sender && p.last_out_at.is_some())
                    .then_some((i, p.at))
            })
            .max_by_key(|(_, at)| *at);
        let captured = self
            .captured
            .iter()
            .rev()
            .find(|t| t.sender == sender && t.session == session);
        match (pending, captured) {
            (Some((i, at)), c) if c.is_none_or(|t| at >= t.at) => self.flush_turn(i, lim),
            (_, Some(t)) => (None, Some(t.clone())),
            _ => (None, None),
        }
    }

    /// A captured turn by its id.
    pub fn by_id(&self, turn_id: &str) -> Option<Turn> {
        self.captured
            .iter()
            .rev()
            .find(|t| t.turn_id == turn_id)
            .cloned()
    }

    /// Whether a reply may still be on its way in this conversation: a person's message waits
    /// for its reply, or for the quiet period after it.
    pub fn awaiting_reply(&self, channel: &str, chat: Option<&str>) -> bool {
        self.convs.iter().any(|c| {
            c.place.channel == channel
                && chat_matches(c.place.chat.as_deref(), chat)
                && c.pending.is_some()
        })
    }

    /// The turn one of whose reply messages has this id (flushing it first when pending).
    pub fn by_message(
        &mut self,
        channel: &str,
        chat: Option<&str>,
        message_id: &str,
        lim: Limits,
    ) -> (Option<Capture>, Option<Turn>) {
        let pending = self.convs.iter().position(|c| {
            c.place.channel == channel
                && chat_matches(c.place.chat.as_deref(), chat)
                && c.pending.as_ref().is_some_and(|p| {
                    p.last_out_at.is_some()
                        && expand_ids(
                            channel,
                            p.inbound_id.as_deref(),
                            &p.message_ids,
                            &c.inbound_ids,
                        )
                        .iter()
                        .any(|id| id == message_id)
                })
        });
        if let Some(i) = pending {
            return self.flush_turn(i, lim);
        }
        let t = self.captured.iter().rev().find(|t| {
            t.channel == channel
                && chat_matches(t.chat.as_deref(), chat)
                && t.message_ids.iter().any(|id| id == message_id)
        });
        (None, t.cloned())
    }
}

/// The reply's message ids. On Telegram, where a chunked reply reports only its last chunk's
/// id, every numeric id after the inbound message's id up to the last known one belongs to the
/// reply too (at most `TELEGRAM_RANGE` of them, skipping ids of messages people sent).
pub fn expand_ids(
    channel: &str,
    inbound_id: Option<&str>,
    ids: &[String],
    inbound_ids: &VecDeque<String>,
) -> Vec<String> {
    let mut out: Vec<String> = ids.to_vec();
    if channel != "telegram" {
        return out;
    }
    let nums: Vec<u64> = ids.iter().filter_map(|i| i.parse().ok()).collect();
    let (Some(&last), Some(&first_known)) = (nums.iter().max(), nums.iter().min()) else {
        return out;
    };
    let lower = match inbound_id.and_then(|i| i.parse::<u64>().ok()) {
        Some(i) if i < first_known => i,
        // No usable inbound id: the range cannot be known; keep what we have.
        _ => return out,
    };
    if last - lower > TELEGRAM_RANGE {
        return out;
    }
    for n in lower + 1..=last {
        let s = n.to_string();
        if !out.contains(&s) && !inbound_ids.contains(&s) {
            out.push(s);
        }
    }
    out.sort_by_key(|s| s.parse::<u64>().unwrap_or(u64::MAX));
    out.truncate(MAX_TURN_MESSAGE_IDS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const LIM: Limits = Limits {
        context_messages: 12,
        message_bytes: 4096,
    };

    fn place(chat: &str) -> Place {
        Place {
            channel: "telegram".into(),
            account: Some("default".into()),
            chat: Some(chat.into()),
            session: "agent:main:main".into(),
        }
    }

    fn inb(chat: &str, sender: &str, id: &str, text: &str) -> InboundMessage {
        InboundMessage {
            place: place(chat),
            sender: sender.into(),
            sender_name: None,
            group: false,
            message_id: Some(id.into()),
            text: text.into(),
        }
    }

    fn out(chat: &str, ids: &[&str], text: &str) -> OutboundMessage {
        OutboundMessage {
            place: place(chat),
            text: text.into(),
            message_ids: ids.iter().map(|s| s.to_string()).collect(),
            model: None,
        }
    }

    fn body(c: &Capture) -> Value {
        serde_json::from_slice(&c.body).unwrap()
    }

    #[test]
    fn reply_is_flushed_by_the_next_inbound() {
        let mut t = Turns::new();
        assert!(t.inbound(1, &inb("42", "42", "501", "2+2?"), LIM).is_none());
        t.outbound(2, &out("42", &["502"], "4"), LIM);
        let c = t
            .inbound(3, &inb("42", "42", "503", "thanks"), LIM)
            .unwrap();
        let b = body(&c);
        assert_eq!(b["prompt"], "2+2?");
        assert_eq!(b["response"], "4");
        assert_eq!(b["message_ids"], json!(["502"]));
        assert_eq!(b["sender"], "42");
        assert_eq!(b["chat"], "42");
        assert_eq!(b["context"], json!([]));
        assert_eq!(b["at"], 1);
    }

    #[test]
    fn chunked_reply_is_one_turn_and_quiet_period_flushes() {
        let mut t = Turns::new();
        t.inbound(0, &inb("42", "42", "10", "tell me"), LIM);
        t.outbound(100, &out("42", &["11"], "part one"), LIM);
        t.outbound(200, &out("42", &["12"], "part two"), LIM);
        assert!(t.tick(1500, LIM).is_empty());
        let caps = t.tick(2200, LIM);
        assert_eq!(caps.len(), 1);
        let b = body(&caps[0]);
        assert_eq!(b["response"], "part one\npart two");
        assert_eq!(b["message_ids"], json!(["11", "12"]));
    }

    #[test]
    fn telegram_last_chunk_id_covers_the_range() {
        let mut t = Turns::new();
        t.inbound(0, &inb("42", "42", "519", "long please"), LIM);
        t.outbound(10, &out("42", &["524"], "a long reply"), LIM);
        let (cap, turn) = t.by_message("telegram", Some("42"), "521", LIM);
        assert!(cap.is_some());
        let turn = turn.unwrap();
        assert_eq!(turn.message_ids, ["520", "521", "522", "523", "524"]);
        // already captured: found again without a second capture
        let (cap, turn2) = t.by_message("telegram", Some("42"), "520", LIM);
        assert!(cap.is_none());
        assert_eq!(turn2.unwrap().turn_id, turn.turn_id);
        // the person's message is not part of the reply
        assert!(t.by_message("telegram", Some("42"), "519", LIM).1.is_none());
    }

    #[test]
    fn telegram_range_is_bounded_and_skips_inbound_ids() {
        let inbound: VecDeque<String> = ["103".to_string()].into();
        let ids = expand_ids("telegram", Some("100"), &["105".into()], &inbound);
        assert_eq!(ids, ["101", "102", "104", "105"]);
        let far = expand_ids("telegram", Some("1"), &["1000".into()], &VecDeque::new());
        assert_eq!(far, ["1000"]);
        let slack = expand_ids("slack", Some("1"), &["3".into()], &VecDeque::new());
        assert_eq!(slack, ["3"]);
    }

    #[test]
    fn context_is_capped_in_count_and_bytes() {
        let lim = Limits {
            context_messages: 3,
            message_bytes: 8,
        };
        let mut t = Turns::new();
        for i in 0..5u64 {
            t.inbound(
                i * 10,
                &inb("42", "42", &format!("{}", i * 2), "héllo wörld"),
                lim,
            );
            t.outbound(
                i * 10 + 1,
                &out("42", &[&format!("{}", i * 2 + 1)], "réply"),
                lim,
            );
        }
        let c = t.inbound(100, &inb("42", "42", "99", "x"), lim).unwrap();
        let b = body(&c);
        let ctx = b["context"].as_array().unwrap();
        assert_eq!(ctx.len(), 3);
        assert_eq!(ctx[2]["role"], "assistant");
        assert_eq!(ctx[1]["role"], "user");
        assert_eq!(ctx[1]["content"], "héllo w");
        assert!(b["prompt"].as_str().unwrap().len() <= 8);
    }

    #[test]
    fn latest_targets_the_senders_own_turn() {
        let mut t = Turns::new();
        let mut g = inb("-100", "alice", "1", "q from alice");
        g.group = true;
        t.inbound(0, &g, LIM);
        t.outbound(1, &out("-100", &["2"], "to alice"), LIM);
        let mut g2 = inb("-100", "bob", "3", "q from bob");
        g2.group = true;
        let cap = t.inbound(5, &g2, LIM);
        assert!(cap.is_some());
        t.outbound(6, &out("-100", &["4"], "to bob"), LIM);
        let (cap, turn) = t.latest("agent:main:main", "alice", LIM);
        assert!(cap.is_none());
        assert_eq!(turn.unwrap().message_ids, ["2"]);
        let (cap, turn) = t.latest("agent:main:main", "bob", LIM);
        assert!(cap.is_some());
        let turn = turn.unwrap();
        assert_eq!(turn.sender, "bob");
        assert!(turn.group);
        assert!(t.latest("agent:main:main", "carol", LIM).1.is_none());
    }

    #[test]
    fn latest_is_the_turn_that_started_last_even_when_flushed_first() {
        let mut t = Turns::new();
        // One person in two chats of the same session: the older turn's reply comes last.
        t.inbound(0, &inb("a", "42", "1", "slow question"), LIM);
        t.inbound(5, &inb("b", "42", "2", "quick question"), LIM);
        t.outbound(6, &out("b", &["3"], "quick answer"), LIM);
        t.outbound(7, &out("a", &["4"], "slow answer"), LIM);
        assert!(t.inbound(8, &inb("b", "42", "5", "thanks"), LIM).is_some());
        assert_eq!(t.tick(7 + QUIET_MS, LIM).len(), 1);
        let order: Vec<u64> = t.captured().map(|turn| turn.at).collect();
        assert_eq!(order, [0, 5]);
        let (cap, turn) = t.latest("agent:main:main", "42", LIM);
        assert!(cap.is_none());
        assert_eq!(turn.unwrap().message_ids, ["3"]);
    }

    #[test]
    fn two_messages_before_a_reply_make_one_prompt() {
        let mut t = Turns::new();
        t.inbound(0, &inb("42", "42", "1", "first"), LIM);
        t.inbound(1, &inb("42", "42", "2", "second"), LIM);
        t.outbound(2, &out("42", &["3"], "answer"), LIM);
        let (cap, _) = t.latest("agent:main:main", "42", LIM);
        assert_eq!(body(&cap.unwrap())["prompt"], "first\nsecond");
    }

    #[test]
    fn late_chunks_join_the_captured_turn() {
        let mut t = Turns::new();
        t.inbound(0, &inb("42", "42", "1", "q"), LIM);
        t.outbound(1, &out("42", &["2"], "a"), LIM);
        assert_eq!(t.tick(5000, LIM).len(), 1);
        t.outbound(5001, &out("42", &["3"], "b"), LIM);
        let (cap, turn) = t.by_message("telegram", Some("42"), "3", LIM);
        assert!(cap.is_none());
        assert_eq!(turn.unwrap().message_ids, ["2", "3"]);
    }

    #[test]
    fn memory_is_capped_in_count_and_age() {
        let mut t = Turns::new();
        for i in 0..(MAX_TURNS as u64 + 10) {
            let chat = format!("{}", i % 300);
            t.inbound(i, &inb(&chat, "u", &format!("{}", i * 2), "q"), LIM);
            t.outbound(i, &out(&chat, &[&format!("{}", i * 2 + 1)], "a"), LIM);
            t.tick(i + QUIET_MS, LIM);
        }
        assert!(t.captured.len() <= MAX_TURNS);
        assert!(t.convs.len() <= MAX_CONVS);
        t.tick(TURN_TTL_MS + 10_000, LIM);
        assert_eq!(t.captured.len(), 0);
        assert_eq!(t.convs.len(), 0);
        // an unanswered message expires
        t.inbound(0, &inb("1", "u", "1", "q"), LIM);
        t.tick(PENDING_TTL_MS + 1, LIM);
        assert!(t.convs.iter().all(|c| c.pending.is_none()));
    }
}
