//! Scripted raters: a hidden preference a program can check, a good or bad rating for each
//! reply, and with some of the bad ones a short reason the way a person would give it.

use std::fmt;

use anyhow::{Result, bail};
use rlclaw_trainer::lora::SplitMix64;

/// A preference over replies.
#[derive(Debug, Clone, PartialEq)]
pub enum Preference {
    /// The reply's first word is this one (case and punctuation aside).
    StartsWith(String),
    /// Fewer than this many words.
    UnderWords(usize),
    /// At least two lines that are list items ("- ", "* ", "• ", "1. ").
    BulletedList,
    /// No '!' anywhere.
    NoExclamation,
}

/// What the rater says about one reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub good: bool,
    pub reason: Option<String>,
}

/// Share of bad ratings that come with a reason.
const REASON_SHARE: f64 = 0.5;

impl Preference {
    /// `starts-with:WORD`, `under:N`, `bullets`, `no-exclamation`.
    pub fn parse(name: &str) -> Result<Preference> {
        let lower = name.trim().to_ascii_lowercase();
        if lower.starts_with("starts-with:") {
            let word = name.trim()["starts-with:".len()..].trim();
            if word.is_empty() || word.contains(char::is_whitespace) {
                bail!("starts-with:WORD needs one word, got {name:?}");
            }
            return Ok(Preference::StartsWith(word.into()));
        }
        if let Some(n) = lower.strip_prefix("under:") {
            return match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Preference::UnderWords(n)),
                _ => bail!("under:N needs a positive number of words, got {name:?}"),
            };
        }
        match lower.as_str() {
            "bullets" => Ok(Preference::BulletedList),
            "no-exclamation" => Ok(Preference::NoExclamation),
            _ => bail!(
                "unknown rater preset {name:?} (starts-with:WORD, under:N, bullets, no-exclamation)"
            ),
        }
    }

    /// Whether the reply has the preferred style.
    pub fn check(&self, reply: &str) -> bool {
        match self {
            Preference::StartsWith(word) => {
                first_word(reply).is_some_and(|w| w.eq_ignore_ascii_case(word))
            }
            Preference::UnderWords(n) => reply.split_whitespace().count() < *n,
            Preference::BulletedList => reply.lines().filter(|l| is_list_item(l)).count() >= 2,
            Preference::NoExclamation => !reply.contains('!'),
        }
    }

    /// How many tokens of a reply (of at most `max_tokens`) `check` needs. The prefix rater reads
    /// only the first word: a word of n bytes takes at most n tokens, and 8 more cover leading
    /// markdown or blank lines and the character that ends the word.
    pub fn tokens_to_decide(&self, max_tokens: usize) -> usize {
        match self {
            Preference::StartsWith(word) => max_tokens.min(word.len() + 8),
            _ => max_tokens,
        }
    }

    /// Rates a reply; `rng` decides whether a bad rating comes with a reason, and which.
    pub fn rate(&self, reply: &str, rng: &mut SplitMix64) -> Verdict {
        if self.check(reply) {
            return Verdict {
                good: true,
                reason: None,
            };
        }
        let reason = (rng.next_f64() < REASON_SHARE).then(|| {
            let options = self.reasons();
            options[rng.below(options.len())].clone()
        });
        Verdict {
            good: false,
            reason,
        }
    }

    /// What a person says when the reply misses.
    fn reasons(&self) -> Vec<String> {
        match self {
            Preference::StartsWith(w) => vec![
                format!("start with '{w}'"),
                format!("begin your reply with {w}"),
                format!("say {w} first"),
            ],
            Preference::UnderWords(_) => vec![
                "too long".into(),
                "shorter please".into(),
                "way too wordy, keep it brief".into(),
            ],
            Preference::BulletedList => vec![
                "use a bulleted list".into(),
                "put it in bullet points".into(),
            ],
            Preference::NoExclamation => {
                vec!["no exclamation marks".into(), "calmer please, no !".into()]
            }
        }
    }
}

impl fmt::Display for Preference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Preference::StartsWith(w) => write!(f, "starts-with:{w}"),
            Preference::UnderWords(n) => write!(f, "under:{n}"),
            Preference::BulletedList => write!(f, "bullets"),
            Preference::NoExclamation => write!(f, "no-exclamation"),
        }
    }
}

fn first_word(reply: &str) -> Option<&str> {
    reply
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .find(|w| !w.is_empty())
}

fn is_list_item(line: &str) -> bool {
    let l = line.trim_start();
    if l.starts_with("- ") || l.starts_with("* ") || l.starts_with("• ") {
        return true;
    }
    let digits = l.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && (l[digits..].starts_with(". ") || l[digits..].starts_with(") "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_print_back() {
        for name in ["starts-with:Sure", "under:40", "bullets", "no-exclamation"] {
            assert_eq!(Preference::parse(name).unwrap().to_string(), name);
        }
        assert!(Preference::parse("under:0").is_err());
        assert!(Preference::parse("starts-with:").is_err());
        assert!(Preference::parse("polite").is_err());
    }

    #[test]
    fn each_preference_checks_what_it_says() {
        let sure = Preference::StartsWith("Sure".into());
        assert!(sure.check("**Sure!** Here you go."));
        assert!(sure.check("  sure, it works"));
        assert!(!sure.check("Of course. Sure."));
        let short = Preference::UnderWords(5);
        assert!(short.check("one two three four"));
        assert!(!short.check("one two three four five"));
        let list = Preference::BulletedList;
        assert!(list.check("Try:\n- water\n- light"));
        assert!(list.check("1. water\n2. light"));
        assert!(!list.check("- only one item"));
        assert!(Preference::NoExclamation.check("Calm."));
        assert!(!Preference::NoExclamation.check("Great!"));
    }

    #[test]
    fn only_the_prefix_rater_reads_part_of_a_reply() {
        assert_eq!(Preference::StartsWith("To".into()).tokens_to_decide(96), 10);
        assert_eq!(Preference::StartsWith("To".into()).tokens_to_decide(6), 6);
        assert_eq!(Preference::UnderWords(40).tokens_to_decide(96), 96);
        assert_eq!(Preference::NoExclamation.tokens_to_decide(96), 96);
    }

    #[test]
    fn good_replies_get_no_reason_and_some_bad_ones_do() {
        let p = Preference::UnderWords(3);
        let mut rng = SplitMix64::new(7);
        assert_eq!(
            p.rate("ok", &mut rng),
            Verdict {
                good: true,
                reason: None
            }
        );
        let bad: Vec<Verdict> = (0..40)
            .map(|_| p.rate("this is far too long", &mut rng))
            .collect();
        assert!(bad.iter().all(|v| !v.good));
        let with = bad.iter().filter(|v| v.reason.is_some()).count();
        assert!((5..35).contains(&with), "{with} of 40 came with a reason");
        let allowed = ["too long", "shorter please", "way too wordy, keep it brief"];
        assert!(
            bad.iter()
                .filter_map(|v| v.reason.as_deref())
                .all(|r| allowed.contains(&r))
        );
    }
}
