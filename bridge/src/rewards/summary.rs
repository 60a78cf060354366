//! What `status` says about rewards: how many turns each source scored and their mean, the
//! same per worker (the agent or machine a rollout came from; a chat turn counts under its
//! channel), how the judge is doing, and where the judge sends turn text.

use std::collections::BTreeMap;

use rusqlite::Connection;
use serde::Serialize;

use super::blend::{Sources, Weights, blended};
use super::scores::SOURCES_SQL;
use super::{Settings, judging};
use crate::config::Serving;

/// A count and a running mean.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Tally {
    pub turns: u64,
    pub mean: Option<f64>,
    #[serde(skip)]
    sum: f64,
}

impl Tally {
    fn add(&mut self, v: Option<f64>) {
        if let Some(v) = v {
            self.turns += 1;
            self.sum += v;
            self.mean = Some((self.sum / self.turns as f64 * 1000.0).round() / 1000.0);
        }
    }
}

/// Each source's tally, and the blended reward's.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BySource {
    /// Mean of the turns' ratings, in [-1, 1].
    pub human: Tally,
    /// In [0, 1].
    pub automatic: Tally,
    /// In [0, 1].
    pub judge: Tally,
    /// What training uses, in [-1, 1].
    pub blended: Tally,
}

impl BySource {
    fn add(&mut self, s: &Sources, w: &Weights) {
        self.human.add(s.human);
        self.automatic.add(s.automatic);
        self.judge.add(s.judge);
        self.blended.add(blended(s, w));
    }
}

/// The `rewards` object of `status`.
pub fn status_json(
    conn: &Connection,
    settings: &Settings,
    serving: &Serving,
    now_ms: i64,
) -> rusqlite::Result<serde_json::Value> {
    let mut all = BySource::default();
    let mut workers: BTreeMap<String, BySource> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT coalesce(t.worker, t.channel), {SOURCES_SQL}
         FROM (SELECT turn_seq FROM ratings WHERE removed_at IS NULL
               UNION SELECT turn_seq FROM turn_scores) x
         JOIN turns t ON t.seq = x.turn_seq"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let worker: String = r.get(0)?;
        let s = super::scores::sources_at(r, 1)?;
        all.add(&s, &settings.weights);
        workers
            .entry(worker)
            .or_default()
            .add(&s, &settings.weights);
    }
    let workers: Vec<serde_json::Value> = workers
        .into_iter()
        .map(|(worker, by)| {
            let mut v = serde_json::to_value(by).unwrap_or_default();
            v["worker"] = worker.into();
            v
        })
        .collect();
    Ok(serde_json::json!({
        "weights": settings.weights,
        "automatic_formula": settings.automatic.preset,
        "sources": all,
        "workers": workers,
        "judge": judge_json(conn, settings, serving, now_ms)?,
    }))
}

/// The judge's state, budget, failures, and where it sends turn text.
fn judge_json(
    conn: &Connection,
    settings: &Settings,
    serving: &Serving,
    now_ms: i64,
) -> rusqlite::Result<serde_json::Value> {
    let j = &settings.judge;
    let mut failures = serde_json::Map::new();
    let (mut judged, mut failed) = (0u64, 0u64);
    let mut stmt =
        conn.prepare_cached("SELECT outcome, count(*) FROM judge_calls GROUP BY outcome")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (outcome, n): (String, u64) = (r.get(0)?, r.get(1)?);
        if outcome == "ok" {
            judged = n;
        } else {
            failed += n;
            failures.insert(outcome, n.into());
        }
    }
    failures.insert("total".into(), failed.into());
    let calls = judging::calls_last_hour(conn, now_ms)?;
    let (state, text_goes_to, url, model) = match j.target(serving) {
        Ok(None) => (
            "off".to_owned(),
            "nowhere: the judge is off".to_owned(),
            None,
            None,
        ),
        Err(e) => (
            format!("off: {e}"),
            "nowhere: the judge is not running".to_owned(),
            j.url.clone(),
            j.model.clone(),
        ),
        Ok(Some(t)) => {
            let goes = if t.loopback {
                format!("this machine only ({})", t.uri)
            } else {
                format!(
                    "{}: the prompts and replies the judge scores leave this machine",
                    t.uri.authority().map(|a| a.as_str()).unwrap_or("?")
                )
            };
            let state = if calls >= j.calls_per_hour as u64 {
                "waiting: this hour's budget is spent"
            } else {
                "on"
            };
            (
                state.to_owned(),
                goes,
                Some(t.uri.to_string()),
                Some(t.model),
            )
        }
    };
    Ok(serde_json::json!({
        "state": state,
        "url": url,
        "model": model,
        "text_goes_to": text_goes_to,
        "calls_per_hour": j.calls_per_hour,
        "calls_last_hour": calls,
        "judged": judged,
        "failures": failures,
    }))
}

/// One line per source for a person: "human 12 turns, mean +0.50 · automatic …".
pub fn sources_line(rewards: &serde_json::Value) -> String {
    let part = |name: &str, signed: bool| {
        let t = &rewards["sources"][name];
        let n = t["turns"].as_u64().unwrap_or(0);
        // A mean that rounds to zero reads as +0.00, not -0.00.
        match t["mean"]
            .as_f64()
            .map(|m| if m.abs() < 0.005 { 0.0 } else { m })
        {
            Some(m) if signed => format!("{name} {n} ({m:+.2})"),
            Some(m) => format!("{name} {n} ({m:.2})"),
            None => format!("{name} {n}"),
        }
    };
    format!(
        "{} · {} · {} · {}",
        part("human", true),
        part("automatic", false),
        part("judge", false),
        part("blended", true)
    )
}
