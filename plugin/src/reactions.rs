//! Reading OpenClaw's reaction system events, per channel.
//!
//! OpenClaw queues a reaction as a system event with a text for the model and, usually, a
//! context key that carries the ids:
//!
//! * Telegram: `Telegram reaction added: 👍 by Alice (@alice) on msg 502`,
//!   key `telegram:reaction:add:<chatId>:<messageId>:<userId>:<emoji>` (additions only);
//! * Slack: `Slack reaction added: :+1: by <actor> in <label> msg <ts>[ from <author>]`,
//!   key `slack:reaction:[<teamId>:]<action>:<channel>:<ts>:<user>:<emoji>:<eventId>`;
//! * Discord: `Discord [super ]reaction added: 👍 by <tag> on <guild|dm> #<channel> msg <id>`,
//!   key `discord:reaction:<action>:<message_id>:<userId>:<emoji>[:burst]`.
//!
//! The key wins where it is present; the text alone gives no user id (and no chat id).

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedReaction {
    /// `telegram`, `slack`, `discord`, ...
    pub channel: String,
    pub chat: Option<String>,
    pub message_id: String,
    /// The reacting person's id, when the event names it.
    pub user: Option<String>,
    /// The emoji as received (Unicode, or a Slack name).
    pub emoji: String,
    /// false when the reaction was removed.
    pub added: bool,
}

fn action(word: &str) -> Option<bool> {
    match word {
        "add" | "added" => Some(true),
        "remove" | "removed" => Some(false),
        _ => None,
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Parses a context key; None when it is not a reaction key we know.
pub fn parse_context_key(key: &str) -> Option<ParsedReaction> {
    let (channel, rest) = key.split_once(":reaction:")?;
    let parts: Vec<&str> = rest.split(':').collect();
    match channel {
        "telegram" => {
            // add:<chatId>:<messageId>:<userId>:<emoji>
            if parts.len() < 5 {
                return None;
            }
            let added = action(parts[0])?;
            let emoji = parts[4..].join(":");
            Some(ParsedReaction {
                channel: "telegram".into(),
                chat: non_empty(parts[1]),
                message_id: non_empty(parts[2])?,
                user: non_empty(parts[3]),
                emoji: non_empty(&emoji)?,
                added,
            })
        }
        "slack" => {
            // [<teamId>:]<action>:<channel>:<ts>:<user>:<emoji...>:<eventId>
            let skip = if action(parts.first()?).is_some() {
                0
            } else {
                1
            };
            let p = parts.get(skip..)?;
            if p.len() < 6 {
                return None;
            }
            let added = action(p[0])?;
            let emoji = p[4..p.len() - 1].join(":");
            Some(ParsedReaction {
                channel: "slack".into(),
                chat: non_empty(p[1]),
                message_id: non_empty(p[2])?,
                user: non_empty(p[3]),
                emoji: non_empty(&emoji)?,
                added,
            })
        }
        "discord" => {
            // <action>:<message_id>:<userId>:<emoji...>[:burst]
            if parts.len() < 4 {
                return None;
            }
            let added = action(parts[0])?;
            let mut tail = &parts[3..];
            if tail.len() > 1 && tail[tail.len() - 1] == "burst" {
                tail = &tail[..tail.len() - 1];
            }
            let emoji = tail.join(":");
            Some(ParsedReaction {
                channel: "discord".into(),
                chat: None,
                message_id: non_empty(parts[1])?,
                user: non_empty(parts[2]),
                emoji: non_empty(&emoji)?,
                added,
            })
        }
        _ => None,
    }
}

/// Parses the system event's text; None when it is not a reaction text we know.
pub fn parse_text(text: &str) -> Option<ParsedReaction> {
    let text = text.trim();
    // Tolerate the "System: [timestamp] " prefix the model sees.
    let text = match text.find("] ") {
        Some(i) if text.starts_with("System: [") => &text[i + 2..],
        _ => text,
    };
    let (head, rest) = text.split_once(": ")?;
    let mut words = head.split_whitespace();
    let channel = words.next()?.to_ascii_lowercase();
    let mut word = words.next()?;
    if word == "super" {
        word = words.next()?;
    }
    if word != "reaction" {
        return None;
    }
    let added = action(words.next()?)?;
    if words.next().is_some() {
        return None;
    }
    let (emoji, after) = rest.split_once(" by ")?;
    let (_, id_part) = after.rsplit_once(" msg ")?;
    let message_id = id_part.split_whitespace().next()?;
    if !matches!(channel.as_str(), "telegram" | "slack" | "discord") {
        return None;
    }
    Some(ParsedReaction {
        channel,
        chat: None,
        message_id: message_id.to_string(),
        user: None,
        emoji: non_empty(emoji.trim())?,
        added,
    })
}

/// The reaction an event describes: the context key when it parses, else the text.
pub fn parse(text: &str, context_key: Option<&str>) -> Option<ParsedReaction> {
    let from_key = context_key.and_then(parse_context_key);
    let from_text = parse_text(text);
    match (from_key, from_text) {
        (Some(k), _) => Some(k),
        (None, t) => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_key_and_text() {
        let r = parse(
            "Telegram reaction added: 👍 by Alice (@alice) on msg 502",
            Some("telegram:reaction:add:42:502:42:👍"),
        )
        .unwrap();
        assert_eq!(r.channel, "telegram");
        assert_eq!(r.chat.as_deref(), Some("42"));
        assert_eq!(r.message_id, "502");
        assert_eq!(r.user.as_deref(), Some("42"));
        assert_eq!(r.emoji, "👍");
        assert!(r.added);

        let t = parse(
            "Telegram reaction added: 👎 by Alice (@alice) on msg 504",
            None,
        )
        .unwrap();
        assert_eq!((t.message_id.as_str(), t.emoji.as_str()), ("504", "👎"));
        assert_eq!(t.user, None);
    }

    #[test]
    fn telegram_group_chat_ids_are_negative() {
        let r = parse_context_key("telegram:reaction:add:-1001234:77:99:👎🏽").unwrap();
        assert_eq!(r.chat.as_deref(), Some("-1001234"));
        assert_eq!(r.message_id, "77");
        assert_eq!(r.emoji, "👎🏽");
    }

    #[test]
    fn text_with_the_system_prefix() {
        let r = parse_text(
            "System: [2026-11-22 11:47:57 UTC] Telegram reaction added: 👍 by Alice (@alice) on msg 502",
        )
        .unwrap();
        assert_eq!(r.message_id, "502");
    }

    #[test]
    fn slack_keys_with_and_without_team() {
        let r =
            parse_context_key("slack:reaction:T01:added:C024BE91L:1700000000.000100:U123:+1:Ev01")
                .unwrap();
        assert_eq!(r.chat.as_deref(), Some("C024BE91L"));
        assert_eq!(r.message_id, "1700000000.000100");
        assert_eq!(r.user.as_deref(), Some("U123"));
        assert_eq!(r.emoji, "+1");
        assert!(r.added);
        let r = parse_context_key(
            "slack:reaction:removed:C024BE91L:1700000000.000100:U123:thumbsup::skin-tone-2:Ev02",
        )
        .unwrap();
        assert!(!r.added);
        assert_eq!(r.emoji, "thumbsup::skin-tone-2");
    }

    #[test]
    fn slack_text() {
        let r = parse_text(
            "Slack reaction removed: :-1: by Bob in #general msg 1700000000.000100 from rlclaw",
        )
        .unwrap();
        assert_eq!(r.channel, "slack");
        assert_eq!(r.message_id, "1700000000.000100");
        assert_eq!(r.emoji, ":-1:");
        assert!(!r.added);
    }

    #[test]
    fn discord_keys_and_text() {
        let r = parse_context_key("discord:reaction:added:1122334455:998877:👍:burst").unwrap();
        assert_eq!(r.message_id, "1122334455");
        assert_eq!(r.user.as_deref(), Some("998877"));
        assert_eq!(r.emoji, "👍");
        let r = parse_context_key("discord:reaction:removed:1122334455:998877:👎").unwrap();
        assert!(!r.added);
        let t = parse_text("Discord super reaction added: 🔥 by bob#1 on myguild #general msg 55")
            .unwrap();
        assert_eq!(
            (t.channel.as_str(), t.message_id.as_str()),
            ("discord", "55")
        );
    }

    #[test]
    fn other_texts_are_not_reactions() {
        assert_eq!(parse("Exec finished: ok", None), None);
        assert_eq!(parse("Telegram reaction added: 👍", None), None);
        assert_eq!(parse("x", Some("telegram:reaction:add:42")), None);
        assert_eq!(parse_context_key("whatsapp:reaction:add:1:2:3:👍"), None);
    }
}
