//! Parsing of `/rl ...` and `/rc ...` arguments.

use crate::emoji::normalize;

/// The longest reason a rating may carry, in bytes.
pub const MAX_REASON_BYTES: usize = 1000;

#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// `good [reason]`, `bad [reason]` and their aliases.
    Rate { value: f64, reason: Option<String> },
    /// `undo` or `status`: answered by the bridge.
    Query { name: &'static str },
    /// `train`, `rollback [vN]`, `reset`, `pause`, `resume`: the bridge decides who may.
    Admin {
        name: &'static str,
        args: Vec<String>,
    },
    /// No subcommand, `help`, or one we do not know (`Some(word)`).
    Help { unknown: Option<String> },
    /// Input we understood but cannot accept; the text says why.
    Invalid(String),
}

const GOOD: &[&str] = &["good", "+1", "yes", "y", "👍", "+"];
const BAD: &[&str] = &["bad", "-1", "no", "n", "👎", "-"];

pub const HELP: &str = "rlclaw: rate the agent's last reply to you.\n\
/rl good [why] (or +1, yes, y, 👍): a good reply\n\
/rl bad [why] (or -1, no, n, 👎): a bad reply, e.g. /rl bad too long\n\
/rl undo: take back your last rating\n\
/rl status: ratings and training so far\n\
Admins: /rl train, /rl rollback [vN], /rl reset, /rl pause, /rl resume\n\
You can also react with 👍 or 👎 on a reply.";

/// Parses the arguments after the command name.
pub fn parse(args: &str) -> Parsed {
    let args = args.trim();
    let (word, rest) = match args.find(char::is_whitespace) {
        Some(i) => (&args[..i], args[i..].trim()),
        None => (args, ""),
    };
    if word.is_empty() {
        return Parsed::Help { unknown: None };
    }
    let norm = normalize(word).to_lowercase();
    let reason = || {
        if rest.is_empty() {
            Ok(None)
        } else if rest.len() > MAX_REASON_BYTES {
            Err(Parsed::Invalid(format!(
                "That reason is too long ({} bytes); please keep it under {MAX_REASON_BYTES}.",
                rest.len()
            )))
        } else {
            Ok(Some(rest.to_string()))
        }
    };
    if GOOD.contains(&norm.as_str()) {
        return match reason() {
            Ok(reason) => Parsed::Rate { value: 1.0, reason },
            Err(e) => e,
        };
    }
    if BAD.contains(&norm.as_str()) {
        return match reason() {
            Ok(reason) => Parsed::Rate {
                value: -1.0,
                reason,
            },
            Err(e) => e,
        };
    }
    let no_args = |name: &'static str, p: Parsed| {
        if rest.is_empty() {
            p
        } else {
            Parsed::Invalid(format!("/rl {name} takes no arguments."))
        }
    };
    match norm.as_str() {
        "undo" => no_args("undo", Parsed::Query { name: "undo" }),
        "status" => no_args("status", Parsed::Query { name: "status" }),
        "help" | "?" => Parsed::Help { unknown: None },
        "train" => no_args(
            "train",
            Parsed::Admin {
                name: "train",
                args: vec![],
            },
        ),
        "reset" => no_args(
            "reset",
            Parsed::Admin {
                name: "reset",
                args: vec![],
            },
        ),
        "pause" => no_args(
            "pause",
            Parsed::Admin {
                name: "pause",
                args: vec![],
            },
        ),
        "resume" => no_args(
            "resume",
            Parsed::Admin {
                name: "resume",
                args: vec![],
            },
        ),
        "rollback" => {
            if rest.is_empty() {
                Parsed::Admin {
                    name: "rollback",
                    args: vec![],
                }
            } else if is_version(rest) {
                Parsed::Admin {
                    name: "rollback",
                    args: vec![rest.to_ascii_lowercase()],
                }
            } else {
                Parsed::Invalid(
                    "/rl rollback takes an optional adapter version such as v3.".to_string(),
                )
            }
        }
        _ => Parsed::Help {
            unknown: Some(word.chars().take(32).collect()),
        },
    }
}

fn is_version(s: &str) -> bool {
    let digits = s.strip_prefix(['v', 'V']).unwrap_or("");
    !digits.is_empty() && digits.len() <= 9 && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(v: f64, r: Option<&str>) -> Parsed {
        Parsed::Rate {
            value: v,
            reason: r.map(String::from),
        }
    }

    #[test]
    fn good_and_bad_with_reasons() {
        assert_eq!(parse("good"), rate(1.0, None));
        assert_eq!(parse("  GOOD  "), rate(1.0, None));
        assert_eq!(parse("bad too long"), rate(-1.0, Some("too long")));
        assert_eq!(
            parse("good  clear and short "),
            rate(1.0, Some("clear and short"))
        );
    }

    #[test]
    fn aliases_in_every_form() {
        for a in ["+1", "yes", "y", "Y", "👍", "👍🏽", "👍️", "👍🏿\u{FE0E}"] {
            assert_eq!(parse(a), rate(1.0, None), "{a}");
        }
        for a in ["-1", "no", "n", "N", "👎", "👎🏻", "👎️"] {
            assert_eq!(parse(a), rate(-1.0, None), "{a}");
        }
        assert_eq!(parse("👎🏼 rude"), rate(-1.0, Some("rude")));
    }

    #[test]
    fn queries_and_admin_commands() {
        assert_eq!(parse("undo"), Parsed::Query { name: "undo" });
        assert_eq!(parse("status"), Parsed::Query { name: "status" });
        assert_eq!(
            parse("train"),
            Parsed::Admin {
                name: "train",
                args: vec![]
            }
        );
        assert_eq!(
            parse("rollback v3"),
            Parsed::Admin {
                name: "rollback",
                args: vec!["v3".into()]
            }
        );
        assert_eq!(
            parse("rollback"),
            Parsed::Admin {
                name: "rollback",
                args: vec![]
            }
        );
    }

    #[test]
    fn bad_input_gets_a_clear_message() {
        assert!(matches!(parse("rollback yesterday"), Parsed::Invalid(_)));
        assert!(matches!(parse("undo everything"), Parsed::Invalid(_)));
        assert!(matches!(parse("train now"), Parsed::Invalid(_)));
        let long = format!("bad {}", "x".repeat(MAX_REASON_BYTES + 1));
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }

    #[test]
    fn unknown_or_empty_is_help() {
        assert_eq!(parse(""), Parsed::Help { unknown: None });
        assert_eq!(parse("help"), Parsed::Help { unknown: None });
        assert_eq!(
            parse("frobnicate now"),
            Parsed::Help {
                unknown: Some("frobnicate".into())
            }
        );
    }
}
