//! Emoji normalisation and the reaction → reward maps.
//!
//! Every emoji is compared in a canonical form: variation selectors (U+FE0E, U+FE0F) and skin-tone
//! modifiers (U+1F3FB–U+1F3FF) are removed, so 👍, 👍️ and 👍🏽 are the same. Slack reports
//! reactions by name (`:+1:`, `thumbsup::skin-tone-3`); those names are mapped to the Unicode
//! emoji first.

use crate::types::EmojiPreset;

/// Removes variation selectors and skin-tone modifiers, and surrounding whitespace.
pub fn normalize(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|&c| !matches!(c, '\u{FE0E}' | '\u{FE0F}' | '\u{1F3FB}'..='\u{1F3FF}'))
        .collect()
}

/// Slack's names for the emojis the presets know.
const SLACK_NAMES: &[(&str, &str)] = &[
    ("+1", "👍"),
    ("thumbsup", "👍"),
    ("-1", "👎"),
    ("thumbsdown", "👎"),
    ("white_check_mark", "✅"),
    ("heavy_check_mark", "✔"),
    ("100", "💯"),
    ("heart", "❤"),
    ("fire", "🔥"),
    ("x", "❌"),
    ("heavy_multiplication_x", "✖"),
    ("hankey", "💩"),
    ("poop", "💩"),
    ("shit", "💩"),
    ("brain", "🧠"),
    ("zap", "⚡"),
    ("dart", "🎯"),
    ("warning", "⚠"),
];

/// The canonical emoji for a reaction as received: Unicode, or a Slack name with or without
/// colons and with an optional `::skin-tone-N` suffix.
pub fn canonical(raw: &str) -> String {
    let t = raw.trim();
    let name = t.trim_matches(':');
    let name = name.split("::").next().unwrap_or(name);
    if !name.is_empty() && name.is_ascii() {
        let lower = name.to_ascii_lowercase();
        if let Some((_, e)) = SLACK_NAMES.iter().find(|(n, _)| *n == lower) {
            return (*e).to_string();
        }
        return lower;
    }
    normalize(t)
}

const BINARY: &[(&str, f64)] = &[
    ("👍", 1.0),
    ("✅", 1.0),
    ("✔", 1.0),
    ("💯", 1.0),
    ("❤", 1.0),
    ("🔥", 1.0),
    ("👎", -1.0),
    ("❌", -1.0),
    ("✖", -1.0),
    ("💩", -1.0),
];

/// The graded scale from the Agent Lightning write-up (shared/seeds).
const AGENT_LIGHTNING: &[(&str, f64)] = &[
    ("💯", 0.4),
    ("❤", 0.3),
    ("🔥", 0.3),
    ("🧠", 0.3),
    ("👍", 0.2),
    ("⚡", 0.2),
    ("🎯", 0.2),
    ("⚠", -0.1),
    ("👎", -0.3),
    ("❌", -0.4),
    ("💩", -0.5),
];

/// A reaction → value map: a preset with overrides on top.
#[derive(Clone, Debug, PartialEq)]
pub struct EmojiMap {
    entries: Vec<(String, f64)>,
}

impl EmojiMap {
    /// Builds the map; an override that is not an emoji or whose value is outside [−1, 1] is an
    /// error naming it.
    pub fn new(preset: EmojiPreset, overrides: &[(String, f64)]) -> Result<EmojiMap, String> {
        let base = match preset {
            EmojiPreset::Binary => BINARY,
            EmojiPreset::AgentLightning => AGENT_LIGHTNING,
        };
        let mut entries: Vec<(String, f64)> =
            base.iter().map(|(e, v)| (e.to_string(), *v)).collect();
        for (emoji, value) in overrides {
            let key = canonical(emoji);
            if key.is_empty() || key.chars().count() > 16 {
                return Err(format!("emoji override {emoji:?} is not an emoji"));
            }
            if !value.is_finite() || !(-1.0..=1.0).contains(value) {
                return Err(format!(
                    "emoji override for {emoji} has value {value}, outside [-1, 1]"
                ));
            }
            match entries.iter_mut().find(|(e, _)| *e == key) {
                Some(entry) => entry.1 = *value,
                None => entries.push((key, *value)),
            }
        }
        Ok(EmojiMap { entries })
    }

    /// The value of a reaction, or None when the map does not know it.
    pub fn value(&self, raw: &str) -> Option<f64> {
        let key = canonical(raw);
        self.entries
            .iter()
            .find(|(e, _)| *e == key)
            .map(|(_, v)| *v)
    }
}

impl Default for EmojiMap {
    fn default() -> Self {
        EmojiMap::new(EmojiPreset::Binary, &[]).expect("the binary preset is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skin_tones_and_variation_selectors_are_stripped() {
        assert_eq!(normalize("👍🏽"), "👍");
        assert_eq!(normalize("👍\u{FE0F}"), "👍");
        assert_eq!(normalize("❤️"), "❤");
        assert_eq!(normalize("👎🏿\u{FE0E}"), "👎");
        for tone in '\u{1F3FB}'..='\u{1F3FF}' {
            assert_eq!(normalize(&format!("👍{tone}")), "👍");
        }
    }

    #[test]
    fn binary_preset_values() {
        let m = EmojiMap::default();
        for e in ["👍", "✅", "✔️", "💯", "❤️", "🔥", "👍🏻"] {
            assert_eq!(m.value(e), Some(1.0), "{e}");
        }
        for e in ["👎", "❌", "✖️", "💩", "👎🏾"] {
            assert_eq!(m.value(e), Some(-1.0), "{e}");
        }
        assert_eq!(m.value("🎉"), None);
        assert_eq!(m.value("🧠"), None);
    }

    #[test]
    fn slack_names_map_to_emojis() {
        let m = EmojiMap::default();
        assert_eq!(m.value(":+1:"), Some(1.0));
        assert_eq!(m.value("thumbsup::skin-tone-4"), Some(1.0));
        assert_eq!(m.value(":-1:"), Some(-1.0));
        assert_eq!(m.value("white_check_mark"), Some(1.0));
        assert_eq!(m.value(":tada:"), None);
    }

    #[test]
    fn agent_lightning_is_graded() {
        let m = EmojiMap::new(EmojiPreset::AgentLightning, &[]).unwrap();
        assert_eq!(m.value("💯"), Some(0.4));
        assert_eq!(m.value("⚠️"), Some(-0.1));
        assert_eq!(m.value("💩"), Some(-0.5));
        assert_eq!(m.value("✅"), None);
    }

    #[test]
    fn overrides_replace_and_add() {
        let m = EmojiMap::new(
            EmojiPreset::Binary,
            &[("👍🏼".into(), 0.5), ("🎉".into(), 0.8)],
        )
        .unwrap();
        assert_eq!(m.value("👍"), Some(0.5));
        assert_eq!(m.value("🎉"), Some(0.8));
    }

    #[test]
    fn out_of_range_or_empty_overrides_are_rejected() {
        assert!(EmojiMap::new(EmojiPreset::Binary, &[("🎉".into(), 1.5)]).is_err());
        assert!(EmojiMap::new(EmojiPreset::Binary, &[("🎉".into(), f64::NAN)]).is_err());
        assert!(EmojiMap::new(EmojiPreset::Binary, &[(" ".into(), 0.5)]).is_err());
    }
}
