//! The evaluation gate from the bridge's side: which rated turns are held out of training
//! (`rlclaw_trainer::is_held_out`), the held-out samples a new version is checked on, forced
//! promotion, and what the gate measured in words a person understands.

use rlclaw_trainer::{
    AdapterStore, ChatMessage, GateReport, HoldReason, Sample, VersionInfo, is_held_out,
};
use rusqlite::{Connection, params};
use serde::Serialize;

/// Turns a stored context (JSON array of {role, content}) into messages; anything else is none.
pub fn parse_context(context: &str) -> Vec<ChatMessage> {
    let context: Vec<serde_json::Value> = serde_json::from_str(context).unwrap_or_default();
    context
        .iter()
        .filter_map(|m| {
            Some(ChatMessage::new(
                m["role"].as_str()?,
                m["content"].as_str()?,
            ))
        })
        .collect()
}

/// The held-out rated turns, newest rating first, at most `max`: one sample per turn with the
/// mean of its live ratings (turns whose ratings cancel out are left out). These turns are
/// never trained on.
pub fn held_out_samples(conn: &Connection, max: usize) -> rusqlite::Result<Vec<Sample>> {
    let mut stmt = conn.prepare(
        "SELECT t.turn_id, t.context, t.prompt, t.response, avg(r.value)
         FROM ratings r JOIN turns t ON t.seq = r.turn_seq
         WHERE r.removed_at IS NULL
         GROUP BY t.seq
         ORDER BY max(r.created_at) DESC, t.seq DESC",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while out.len() < max {
        let Some(row) = rows.next()? else { break };
        let turn_id: String = row.get(0)?;
        if !is_held_out(&turn_id) {
            continue;
        }
        let value: f64 = row.get(4)?;
        if value == 0.0 || !value.is_finite() {
            continue;
        }
        out.push(Sample {
            turn_id,
            context: parse_context(&row.get::<_, String>(1)?),
            prompt: row.get(2)?,
            response: row.get(3)?,
            reward: value.clamp(-1.0, 1.0) as f32,
            hint: None,
        });
    }
    Ok(out)
}

/// Marks the given ratings as used by a run (held-out ones: checked on, never trained).
pub fn mark_used(conn: &Connection, run_id: i64, ids: &[i64]) -> rusqlite::Result<()> {
    let mut mark =
        conn.prepare("UPDATE ratings SET trained_run = ?1 WHERE id = ?2 AND removed_at IS NULL")?;
    for id in ids {
        mark.execute(params![run_id, id])?;
    }
    Ok(())
}

fn percent(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

fn turns(n: usize) -> String {
    if n == 1 {
        "1 held-out turn".into()
    } else {
        format!("{n} held-out turns")
    }
}

/// Why only the drift was checked.
fn too_few(report: &GateReport) -> String {
    match report.held_out_turns {
        0 => format!(
            "there are no held-out turns yet ({} are needed to compare versions)",
            report.min_held_out
        ),
        n => format!(
            "only {} so far ({} are needed to compare versions)",
            turns(n),
            report.min_held_out
        ),
    }
}

/// One line on the drift from the base.
fn drift_sentence(report: &GateReport) -> String {
    let mut text = format!(
        "perplexity on neutral prompts {} against the base model (limit +{:.1}%)",
        percent(report.candidate.drift.perplexity_change),
        report.max_perplexity_change * 100.0
    );
    if let Some(kl) = report.candidate.drift.kl {
        text.push_str(&format!(
            ", its word predictions there {kl:.3} nats per token from the base's"
        ));
    }
    text
}

/// How one reason for holding a version back reads.
fn reason_text(reason: &HoldReason, against: &str) -> String {
    match reason {
        HoldReason::WorseOnHeldOut {
            turns: n,
            difference,
            noise,
            candidate_leans,
            active_leans,
        } => format!(
            "on your {} its log-probability margin between the replies you liked and the ones you did not is {:.3} per token below {against}'s, more than chance explains (the figures vary by {:.3}); it leans your way on {candidate_leans} of them, {against} on {active_leans}",
            turns(*n),
            difference.abs(),
            noise
        ),
        HoldReason::Drift {
            perplexity_change,
            bound,
        } => format!(
            "its perplexity on neutral prompts is {} against the base model, above the limit of +{:.1}%",
            percent(*perplexity_change),
            bound * 100.0
        ),
        HoldReason::Spread { kl, bound } => format!(
            "its word predictions on neutral prompts moved {kl:.3} nats per token from the base model's, above the limit of {bound:.3}: its replies would ramble"
        ),
    }
}

/// Why the gate held a version back, in words (empty when it did not).
pub fn reasons_text(report: &GateReport, compared_with: Option<&str>) -> String {
    let against = compared_with.unwrap_or("the base model");
    report
        .reasons
        .iter()
        .map(|r| reason_text(r, against))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the gate measured for `name`, in words: why it serves or why it is held back.
pub fn describe(name: &str, report: &GateReport, compared_with: Option<&str>) -> String {
    if !report.promoted() {
        let mut text = format!(
            "{name} is held back and not served: {}.",
            reasons_text(report, compared_with)
        );
        if report.drift_only {
            text.push_str(&format!(
                " The gate checked drift alone: {}.",
                too_few(report)
            ));
        }
        return text;
    }
    if report.drift_only {
        return format!(
            "{name} passed on the drift check alone: {}; {}.",
            too_few(report),
            drift_sentence(report)
        );
    }
    let n = report.held_out_turns;
    let leans = report.candidate.held_out.as_ref().map_or(0, |h| h.leans);
    let lead = format!(
        "{name} leans toward the replies you liked and away from the ones you did not on {leans} of your {}",
        turns(n)
    );
    let cmp = match (compared_with, &report.active) {
        (Some(v), Some(a)) => format!(
            "; {v} did on {}",
            a.held_out.as_ref().map_or(0, |h| h.leans)
        ),
        _ => ", measured from the base model".into(),
    };
    let margin = match (compared_with, report.difference, report.noise) {
        (Some(v), Some(diff), Some(noise)) => margin_sentence(v, diff, noise),
        _ => String::new(),
    };
    format!("{lead}{cmp}{margin}; {}.", drift_sentence(report))
}

/// How the candidate's margin compares with the version it replaces. The gate decides on the
/// margin, not on the count of turns, so a promoted version can lean the right way on fewer
/// turns than the one before: this says why it still serves.
fn margin_sentence(against: &str, difference: f64, noise: f64) -> String {
    if difference >= 0.0 {
        format!(
            "; its log-probability margin between the replies you liked and the ones you did not is {difference:.3} per token above {against}'s"
        )
    } else {
        format!(
            "; its log-probability margin between the replies you liked and the ones you did not is {:.3} per token below {against}'s, within what chance explains (the figures vary by {noise:.3})",
            difference.abs()
        )
    }
}

/// How a version came to serve (or not), with the gate's words.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    pub version: String,
    /// `gate` (the gate promoted it), `forced` (an admin served it although the gate held it
    /// back), `held` (a candidate, not served), or `ungated` (made before the gate existed).
    pub decision: &'static str,
    pub imported: bool,
    pub summary: String,
    pub report: Option<GateReport>,
    pub compared_with: Option<String>,
}

pub fn view(v: &VersionInfo) -> VersionView {
    let m = &v.metadata;
    let report = m.gate_report();
    let compared_with = m.compared_with();
    let decision = match (&report, &m.forced) {
        (None, _) => "ungated",
        (Some(_), Some(_)) => "forced",
        (Some(r), None) if r.promoted() => "gate",
        (Some(_), None) => "held",
    };
    let summary = match &report {
        None => format!(
            "{} has no gate figures (it was made before the gate).",
            v.name
        ),
        Some(r) => match &m.forced {
            Some(f) => format!(
                "{} was forced by an admin ({}, {}) although the gate held it back: {}.",
                v.name,
                f.by,
                f.created,
                reasons_text(r, compared_with.as_deref())
            ),
            None => describe(&v.name, r, compared_with.as_deref()),
        },
    };
    VersionView {
        version: v.name.clone(),
        decision,
        imported: m.imported.is_some(),
        summary,
        report,
        compared_with,
    }
}

/// The gate's view of the active version and of a held-back candidate, for `status`.
pub fn status_json(store: &AdapterStore) -> serde_json::Value {
    let active = match store.active() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("the active adapter cannot be read: {e}");
            None
        }
    };
    let candidate = store.latest_candidate().ok().flatten();
    serde_json::json!({
        "active": active.as_ref().map(view),
        "candidate": candidate.as_ref().map(view),
    })
}

/// Makes `version` serve; if the gate held it back, records that `by` forced it. Returns a
/// reply for a person.
pub fn force_promote(
    store: &AdapterStore,
    version: &str,
    by: &str,
) -> rlclaw_trainer::Result<String> {
    let before = store.get(version)?;
    if store.active()?.is_some_and(|a| a.name == version) {
        return Ok(format!("{version} already serves."));
    }
    let held = before
        .metadata
        .gate_report()
        .filter(|_| before.metadata.held_back());
    store.force_promote(version, by)?;
    Ok(match held {
        Some(r) => format!(
            "{version} now serves, by an admin's choice; the gate had held it back: {}.",
            reasons_text(&r, before.metadata.compared_with().as_deref())
        ),
        None => format!("{version} now serves."),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlclaw_trainer::Verdict;
    use rlclaw_trainer::eval::{AdapterFigures, DriftFigures, HeldOutFigures};

    fn figures(leans: usize) -> AdapterFigures {
        AdapterFigures {
            held_out: Some(HeldOutFigures {
                turns: 30,
                good: 15,
                bad: 15,
                mean_logprob_good: Some(-2.0),
                mean_logprob_bad: Some(-2.1),
                margin: Some(0.1),
                margin_vs_base: 0.05,
                leans,
            }),
            drift: DriftFigures {
                texts: 8,
                tokens: 800,
                mean_logprob_change: 0.06,
                mean_abs_change: 0.1,
                perplexity_change: -0.062,
                kl: Some(0.066),
            },
        }
    }

    fn promoted(difference: f64) -> GateReport {
        GateReport {
            verdict: Verdict::Promote,
            reasons: Vec::new(),
            held_out_turns: 30,
            min_held_out: 4,
            drift_only: false,
            candidate: figures(14),
            active: Some(figures(18)),
            base_margin: Some(0.02),
            difference: Some(difference),
            noise: Some(0.016),
            max_perplexity_change: 0.1,
            skipped: 0,
            seconds: 1.0,
        }
    }

    #[test]
    fn a_version_promoted_on_fewer_leaning_turns_says_its_margin_is_within_chance() {
        let text = describe("v29", &promoted(-0.019), Some("v25"));
        assert!(
            text.starts_with("v29 leans toward the replies you liked and away from the ones you did not on 14 of your 30 held-out turns; v25 did on 18; its log-probability margin between the replies you liked and the ones you did not is 0.019 per token below v25's, within what chance explains (the figures vary by 0.016); perplexity on neutral prompts -6.2%"),
            "{text}"
        );
    }

    #[test]
    fn a_version_promoted_on_a_better_margin_says_by_how_much() {
        let text = describe("v3", &promoted(0.042), Some("v2"));
        assert!(
            text.contains("; v2 did on 18; its log-probability margin between the replies you liked and the ones you did not is 0.042 per token above v2's; perplexity"),
            "{text}"
        );
    }

    #[test]
    fn a_version_measured_from_the_base_has_no_margin_comparison() {
        let mut report = promoted(0.03);
        report.active = None;
        let text = describe("v1", &report, None);
        assert!(
            text.contains("held-out turns, measured from the base model; perplexity"),
            "{text}"
        );
    }
}
