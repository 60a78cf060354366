//! The validated configuration.

use crate::emoji::EmojiMap;
use crate::signing::Key;
use crate::types::Config;

pub const DEFAULT_CONTEXT_MESSAGES: usize = 12;
pub const MAX_CONTEXT_MESSAGES: usize = 64;
pub const DEFAULT_MESSAGE_BYTES: usize = 4096;
pub const MAX_MESSAGE_BYTES: usize = 65536;
pub const MAX_RATERS: usize = 256;
pub const MAX_POLL_CHANNELS: usize = 64;

#[derive(Clone, Debug)]
pub struct Active {
    pub key: Key,
    /// "<sender id>" or "<channel>:<sender id>".
    pub raters: Vec<String>,
    pub emojis: EmojiMap,
    pub context_messages: usize,
    pub message_bytes: usize,
    /// Channels whose replies get a rating poll.
    pub poll_channels: Vec<String>,
}

impl Active {
    /// Validates a configuration; the error is one sentence for a log line.
    pub fn from_config(c: &Config) -> Result<Active, String> {
        let key = Key::from_hex(&c.key_hex)?;
        if c.raters.len() > MAX_RATERS {
            return Err(format!("at most {MAX_RATERS} raters may be configured"));
        }
        if let Some(bad) = c
            .raters
            .iter()
            .find(|r| r.trim().is_empty() || r.len() > 256)
        {
            return Err(format!("rater {bad:?} is not a sender id"));
        }
        if c.poll_channels.len() > MAX_POLL_CHANNELS {
            return Err(format!(
                "at most {MAX_POLL_CHANNELS} poll channels may be configured"
            ));
        }
        if let Some(bad) = c
            .poll_channels
            .iter()
            .find(|ch| ch.trim().is_empty() || ch.len() > 64)
        {
            return Err(format!("poll channel {bad:?} is not a channel id"));
        }
        let emojis = EmojiMap::new(c.emoji_preset, &c.emoji_overrides)?;
        let context_messages = match c.context_messages as usize {
            0 => DEFAULT_CONTEXT_MESSAGES,
            n => n.min(MAX_CONTEXT_MESSAGES),
        };
        let message_bytes = match c.message_bytes as usize {
            0 => DEFAULT_MESSAGE_BYTES,
            n => n.clamp(64, MAX_MESSAGE_BYTES),
        };
        Ok(Active {
            key,
            raters: c.raters.iter().map(|r| r.trim().to_string()).collect(),
            emojis,
            context_messages,
            message_bytes,
            poll_channels: c
                .poll_channels
                .iter()
                .map(|ch| ch.trim().to_string())
                .collect(),
        })
    }

    /// Whether replies on `channel` get a rating poll.
    pub fn polls_on(&self, channel: &str) -> bool {
        self.poll_channels.iter().any(|c| c == channel)
    }

    /// Whether `who` (on `channel`) is a configured rater.
    pub fn is_rater(&self, channel: &str, who: &str) -> bool {
        self.raters.iter().any(|r| {
            r == who
                || r.split_once(':')
                    .is_some_and(|(ch, id)| ch == channel && id == who)
        })
    }
}

/// Cuts `s` to at most `max` bytes at a UTF-8 character boundary.
pub fn cut_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EmojiPreset;

    fn cfg() -> Config {
        Config {
            key_hex: "ab".repeat(32),
            raters: vec!["7".into(), "slack:U9".into()],
            emoji_preset: EmojiPreset::Binary,
            emoji_overrides: vec![],
            context_messages: 0,
            message_bytes: 0,
            poll_channels: vec![],
        }
    }

    #[test]
    fn defaults_and_raters() {
        let a = Active::from_config(&cfg()).unwrap();
        assert_eq!(a.context_messages, 12);
        assert_eq!(a.message_bytes, 4096);
        assert!(a.is_rater("telegram", "7"));
        assert!(a.is_rater("slack", "U9"));
        assert!(!a.is_rater("discord", "U9"));
        assert!(!a.is_rater("telegram", "8"));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let mut c = cfg();
        c.key_hex = "xyz".into();
        assert!(Active::from_config(&c).is_err());
        let mut c = cfg();
        c.emoji_overrides = vec![("👍".into(), -2.0)];
        assert!(Active::from_config(&c).is_err());
        let mut c = cfg();
        c.raters = vec!["".into()];
        assert!(Active::from_config(&c).is_err());
        let mut c = cfg();
        c.poll_channels = vec![" ".into()];
        assert!(Active::from_config(&c).is_err());
    }

    #[test]
    fn cut_at_char_boundary() {
        assert_eq!(cut_utf8("héllo", 2), "h");
        assert_eq!(cut_utf8("héllo", 3), "hé");
        assert_eq!(cut_utf8("👍👍", 5), "👍");
        assert_eq!(cut_utf8("abc", 10), "abc");
    }
}
