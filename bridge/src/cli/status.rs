//! `rlclaw status`: from the running bridge over the signed protocol, or from the database
//! when the bridge is not running.

use std::path::Path;

use anyhow::Result;
use hyper::Method;

use super::{BridgeArgs, existing, runtime};
use crate::client::Client;
use crate::store::{self, Counts};

#[derive(clap::Args)]
pub struct Args {
    /// Print the status object as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    bridge: BridgeArgs,
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    let dir = existing(dir)?;
    let addr = args.bridge.addr(&dir);
    let key = dir.load_key()?;
    let live = runtime()?.block_on(async {
        let mut client = Client::connect(addr, key).await?;
        client.send(Method::GET, "/v1/status", None).await?.ok()
    });
    let (mut status, running) = match live {
        Ok(status) => (status, true),
        Err(e) => {
            tracing::debug!("bridge not reachable: {e:#}");
            (offline_status(&dir)?, false)
        }
    };
    status["bridge"] = serde_json::json!({"running": running, "address": addr.to_string()});
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    print_human(&status);
    Ok(())
}

/// The status object read straight from the database.
fn offline_status(dir: &crate::datadir::DataDir) -> Result<serde_json::Value> {
    let conn = store::open_ro(&dir.db_path())?;
    let control = crate::training::control_for(dir);
    let config = crate::config::Config::load(&dir.path(crate::datadir::CONFIG_FILE))?;
    let counts = Counts::load(&conn)?;
    Ok(crate::endpoints::status::report(
        &conn,
        counts,
        &config,
        &*control,
        crate::now_ms(),
    )?)
}

fn print_human(s: &serde_json::Value) {
    let n = |k: &str| s["counts"][k].as_u64().unwrap_or(0);
    let running = s["bridge"]["running"].as_bool().unwrap_or(false);
    println!(
        "bridge    {} ({})",
        if running { "running" } else { "not running" },
        s["bridge"]["address"].as_str().unwrap_or("?")
    );
    println!("turns     {}", n("turns"));
    println!("ratings   👍 {}  👎 {}", n("good"), n("bad"));
    let since = &s["since_last_run"];
    match since["ratings"].as_u64() {
        Some(r) => println!(
            "new       {r} ratings since the last run; {} turns to train on ({} ratings held out to check new versions)",
            since["to_train"].as_u64().unwrap_or(0),
            since["held_out"].as_u64().unwrap_or(0)
        ),
        None => println!("untrained {}", n("untrained")),
    }
    print_rewards(&s["rewards"]);
    let trend: Vec<f64> = s["reward_trend"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    if trend.is_empty() {
        println!("trend     (no ratings yet)");
    } else {
        println!(
            "trend     {}  {:+.2} → {:+.2}",
            sparkline(&trend),
            trend[0],
            trend[trend.len() - 1]
        );
    }
    println!(
        "adapter   {}",
        s["adapter"].as_str().unwrap_or("none (base model)")
    );
    if let Some(summary) = s["gate"]["active"]["summary"].as_str() {
        println!("          {summary}");
    }
    if let Some(summary) = s["gate"]["candidate"]["summary"].as_str() {
        println!("candidate {summary}");
        if let Some(v) = s["gate"]["candidate"]["version"].as_str() {
            println!("          `rlclaw promote {v}` serves it anyway.");
        }
    }
    let training = &s["training"];
    let mut line = training["state"].as_str().unwrap_or("idle").to_owned();
    if let Some(outcome) = training["last_run"]["outcome"].as_str() {
        line.push_str(&format!(" (last run: {outcome})"));
    }
    println!("training  {line}");
    if let Some(advice) = s["advice"].as_str() {
        println!("\n{advice}");
    }
}

/// Each source's count and mean, per worker, and the judge.
fn print_rewards(r: &serde_json::Value) {
    if r.is_null() {
        return;
    }
    println!("rewards   {}", crate::rewards::summary::sources_line(r));
    println!("          (human and blended in [-1, 1], automatic and judge in [0, 1])");
    for w in r["workers"].as_array().into_iter().flatten() {
        let line = crate::rewards::summary::sources_line(&serde_json::json!({"sources": w}));
        println!("  {:<14} {line}", w["worker"].as_str().unwrap_or("?"));
    }
    let j = &r["judge"];
    let state = j["state"].as_str().unwrap_or("off");
    if state == "off" {
        println!("judge     off");
        return;
    }
    println!(
        "judge     {state}: {} judged, {} failed ({}), {}/{} calls in the last hour",
        j["judged"],
        j["failures"]["total"],
        failures_text(&j["failures"]),
        j["calls_last_hour"],
        j["calls_per_hour"]
    );
    println!(
        "          turn text goes to {}",
        j["text_goes_to"].as_str().unwrap_or("?")
    );
}

fn failures_text(f: &serde_json::Value) -> String {
    let parts: Vec<String> = f
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "total")
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Mean rewards in [-1, 1] as block characters.
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    values
        .iter()
        .map(|v| {
            let t = ((v.clamp(-1.0, 1.0) + 1.0) / 2.0 * 7.0).round() as usize;
            BARS[t.min(7)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sparkline_maps_the_reward_range_onto_eight_bars() {
        assert_eq!(super::sparkline(&[-1.0, 0.0, 1.0]), "▁▅█");
    }
}
