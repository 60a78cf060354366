//! Which reasons can serve as a hint for the teacher.
//!
//! A reason given with a bad rating ("too long", "start with 'Sure'") is added to the teacher's
//! context. One that says nothing about the reply (empty, a paragraph, only punctuation or
//! digits, a link, a command) would only add noise to the distillation term, so it is ignored:
//! the rating still counts, without a hint.

/// Longer reasons are more likely a pasted text than a hint about the reply.
pub const MAX_HINT_CHARS: usize = 200;

/// Words that are a command or a rating, not a reason.
const NOT_A_REASON: &[&str] = &[
    "good", "bad", "undo", "status", "train", "yes", "no", "ok", "okay", "test", "+1", "-1", "rl",
    "rc", "reset", "rollback", "pause", "resume",
];

/// The trimmed reason when it can serve as a hint, `None` when it is ignored.
pub fn usable_hint(reason: &str) -> Option<&str> {
    let r = reason.trim();
    if r.is_empty() || r.chars().count() > MAX_HINT_CHARS {
        return None;
    }
    // Only punctuation, digits or emoji: nothing a teacher can read as an instruction.
    if !r.chars().any(char::is_alphabetic) {
        return None;
    }
    // A command ("/rl good") or a link alone.
    if r.starts_with('/') {
        return None;
    }
    let single_word = !r.contains(char::is_whitespace);
    let lower = r.to_lowercase();
    if single_word
        && (lower.starts_with("http://")
            || lower.starts_with("https://")
            || lower.starts_with("www."))
    {
        return None;
    }
    let word = lower.trim_matches(|c: char| !c.is_alphanumeric() && c != '+' && c != '-');
    if single_word && NOT_A_REASON.contains(&word) {
        return None;
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reasons_about_the_reply_are_hints() {
        assert_eq!(usable_hint("  too long "), Some("too long"));
        assert_eq!(usable_hint("start with 'Sure'"), Some("start with 'Sure'"));
        assert_eq!(
            usable_hint("no exclamation marks!"),
            Some("no exclamation marks!")
        );
        assert_eq!(usable_hint("use a list"), Some("use a list"));
        assert_eq!(usable_hint("verbose"), Some("verbose"));
    }

    #[test]
    fn empty_and_very_long_reasons_are_ignored() {
        assert_eq!(usable_hint(""), None);
        assert_eq!(usable_hint("   \n\t"), None);
        assert_eq!(usable_hint(&"word ".repeat(60)), None);
        let edge = "a".repeat(MAX_HINT_CHARS);
        assert_eq!(usable_hint(&edge), Some(edge.as_str()));
    }

    #[test]
    fn punctuation_digits_links_and_commands_are_ignored() {
        assert_eq!(usable_hint("!!!"), None);
        assert_eq!(usable_hint("42"), None);
        assert_eq!(usable_hint("👎👎"), None);
        assert_eq!(usable_hint("https://example.com/x"), None);
        assert_eq!(usable_hint("www.example.com"), None);
        assert_eq!(usable_hint("/rl bad"), None);
        assert_eq!(usable_hint("undo"), None);
        assert_eq!(usable_hint("Bad."), None);
        assert_eq!(usable_hint("-1"), None);
        // A link inside a sentence about the reply is still a reason.
        assert!(usable_hint("cite https://example.com instead").is_some());
    }
}
