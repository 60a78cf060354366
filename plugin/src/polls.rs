//! Rating polls: the rating prompt on channels without buttons, and their votes read back.
//!
//! The plugin asks with a poll whose question carries a reference of its own,
//! `How was this reply? (rlclaw #1a2b3c4d)`, with the options `👍 Good` and `👎 Bad`. The host
//! sends it after the reply it rates. OpenClaw 2026.9.6 hands a vote to plugins only on
//! Telegram, and only for a public poll: `poll_answer` becomes an inbound message for the
//! conversation, `Poll response to "<question>": <option>[, <option>...]`. The reference in the
//! quoted question names the poll (and so the turn), the option names the rating. (WhatsApp votes
//! reach no plugin in 2026.9.6: `@openclaw/whatsapp` drops a poll update before any hook.)

use std::collections::VecDeque;

use crate::turns::TURN_TTL_MS;

pub const QUESTION: &str = "How was this reply?";
pub const GOOD: &str = "👍 Good";
pub const BAD: &str = "👎 Bad";
const MARK: &str = "(rlclaw #";
/// Hex characters in a poll's reference.
pub const REF_LEN: usize = 8;
pub const MAX_POLLS: usize = 512;
pub const POLL_TTL_MS: u64 = TURN_TTL_MS;

/// The question of the poll with reference `poll_ref`.
pub fn question(poll_ref: &str) -> String {
    format!("{QUESTION} {MARK}{poll_ref})")
}

pub fn options() -> Vec<String> {
    vec![GOOD.to_string(), BAD.to_string()]
}

/// A vote on one of the plugin's polls, as read from a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Vote<'a> {
    pub poll_ref: &'a str,
    /// +1 or −1; None when the answer is not exactly one of the plugin's options.
    pub value: Option<f64>,
}

/// Reads a vote from a message's text; None when it names none of the plugin's polls.
pub fn parse_vote(text: &str) -> Option<Vote<'_>> {
    let t = text.trim();
    let start = t.find(MARK)? + MARK.len();
    let poll_ref = t.get(start..start + REF_LEN)?;
    if !poll_ref
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let rest = t.get(start + REF_LEN..)?.strip_prefix(')')?;
    // The answer follows the quoted question: `": <option>[, <option>...]`.
    let answer = rest.split_once(':').map(|(_, a)| a.trim()).unwrap_or("");
    let picked = |label: &str| answer.split(", ").any(|o| o.trim() == label);
    let value = match (picked(GOOD), picked(BAD)) {
        (true, false) => Some(1.0),
        (false, true) => Some(-1.0),
        _ => None,
    };
    Some(Vote { poll_ref, value })
}

/// A poll the plugin asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Poll {
    pub poll_ref: String,
    pub turn_id: String,
    pub channel: String,
    pub chat: Option<String>,
    pub at: u64,
}

/// The polls asked for lately, capped in count and age.
#[derive(Debug, Default)]
pub struct Polls {
    polls: VecDeque<Poll>,
}

impl Polls {
    pub fn len(&self) -> usize {
        self.polls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.polls.is_empty()
    }

    pub fn add(&mut self, poll: Poll) {
        if self.polls.len() >= MAX_POLLS {
            self.polls.pop_front();
        }
        self.polls.push_back(poll);
    }

    /// The poll with this reference in this conversation.
    pub fn find(&self, channel: &str, chat: Option<&str>, poll_ref: &str) -> Option<&Poll> {
        self.polls.iter().rev().find(|p| {
            p.poll_ref == poll_ref
                && p.channel == channel
                && match (p.chat.as_deref(), chat) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
    }

    pub fn expire(&mut self, now: u64) {
        while self
            .polls
            .front()
            .is_some_and(|p| now.saturating_sub(p.at) > POLL_TTL_MS)
        {
            self.polls.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_telegram_vote_names_the_poll_and_the_answer() {
        let q = question("0a1b2c3d");
        assert_eq!(q, "How was this reply? (rlclaw #0a1b2c3d)");
        let good = format!("Poll response to \"{q}\": 👍 Good");
        assert_eq!(
            parse_vote(&good),
            Some(Vote {
                poll_ref: "0a1b2c3d",
                value: Some(1.0)
            })
        );
        let bad = format!("Poll response to \"{q}\": 👎 Bad");
        assert_eq!(parse_vote(&bad).and_then(|v| v.value), Some(-1.0));
    }

    #[test]
    fn other_polls_and_odd_answers_are_no_ratings() {
        assert_eq!(
            parse_vote("Poll response to \"Lunch?\": Pizza, Salad"),
            None
        );
        assert_eq!(parse_vote("hello (rlclaw #xyz)"), None);
        assert_eq!(parse_vote("(rlclaw #0A1B2C3D)"), None, "upper case");
        let both = format!(
            "Poll response to \"{}\": 👍 Good, 👎 Bad",
            question("00000000")
        );
        assert_eq!(parse_vote(&both).map(|v| v.value), Some(None));
        let other = format!("Poll response to \"{}\": maybe", question("00000000"));
        assert_eq!(parse_vote(&other).map(|v| v.value), Some(None));
    }

    #[test]
    fn polls_are_capped_in_count_and_age() {
        let mut polls = Polls::default();
        for i in 0..MAX_POLLS as u64 + 5 {
            polls.add(Poll {
                poll_ref: format!("{i:08x}"),
                turn_id: format!("t-{i}"),
                channel: "telegram".into(),
                chat: Some("42".into()),
                at: i,
            });
        }
        assert_eq!(polls.len(), MAX_POLLS);
        assert!(polls.find("telegram", Some("42"), "00000000").is_none());
        assert!(polls.find("telegram", Some("42"), "00000010").is_some());
        assert!(polls.find("telegram", Some("43"), "00000010").is_none());
        assert!(polls.find("whatsapp", Some("42"), "00000010").is_none());
        polls.expire(POLL_TTL_MS + MAX_POLLS as u64 + 10);
        assert!(polls.is_empty());
    }
}
