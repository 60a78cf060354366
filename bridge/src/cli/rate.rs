//! `rlclaw good|bad [--reason]` and `rlclaw undo`: rate from the terminal, through the bridge.

use std::path::Path;

use anyhow::{Context, Result, bail};
use hyper::Method;
use rusqlite::OptionalExtension;

use super::{BridgeArgs, existing, runtime};
use crate::client::Client;
use crate::endpoints::commands::snippet;
use crate::keys::random_bytes;
use crate::store;

#[derive(clap::Args)]
pub struct Args {
    /// Why: becomes a hint for training ("too long", "wrong language").
    #[arg(long, short)]
    reason: Option<String>,
    #[command(flatten)]
    bridge: BridgeArgs,
}

#[derive(clap::Args)]
pub struct UndoArgs {
    #[command(flatten)]
    bridge: BridgeArgs,
}

fn event_id() -> Result<String> {
    Ok(format!("cli-{}", hex::encode(random_bytes::<12>()?)))
}

pub fn run(dir: &Path, args: Args, value: f64) -> Result<()> {
    let dir = existing(dir)?;
    let conn = store::open_ro(&dir.db_path())?;
    let latest: Option<(String, String, String)> = conn
        .query_row(
            "SELECT turn_id, sender, response FROM turns ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((turn_id, sender, response)) = latest else {
        bail!("there is no captured reply to rate yet");
    };
    let body = serde_json::json!({
        "event_id": event_id()?,
        "target": {"turn_id": turn_id},
        "rater": sender,
        "value": value,
        "source": "cli",
        "reason": args.reason,
    });
    let addr = args.bridge.addr(&dir);
    let answer = runtime()?.block_on(async {
        let mut client = Client::connect(addr, dir.load_key()?).await?;
        client
            .send(Method::POST, "/v1/ratings", Some(&body))
            .await?
            .ok()
    })?;
    let label = if value > 0.0 { "👍 good" } else { "👎 bad" };
    println!("Rated {label}: “{}”", snippet(&response, 70));
    let counts = &answer["counts"];
    println!(
        "👍 {} · 👎 {} · {} waiting to train",
        counts["good"], counts["bad"], counts["untrained"]
    );
    Ok(())
}

pub fn undo(dir: &Path, args: UndoArgs) -> Result<()> {
    let dir = existing(dir)?;
    let conn = store::open_ro(&dir.db_path())?;
    let latest: Option<(String, String, String, f64)> = conn
        .query_row(
            "SELECT t.turn_id, r.rater, t.response, r.value FROM ratings r
             JOIN turns t ON t.seq = r.turn_seq
             WHERE r.removed_at IS NULL ORDER BY r.created_at DESC, r.id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .context("cannot read the ratings")?;
    let Some((turn_id, rater, response, value)) = latest else {
        bail!("there is no live rating to take back");
    };
    let body = serde_json::json!({
        "event_id": event_id()?,
        "target": {"turn_id": turn_id},
        "rater": rater,
    });
    let addr = args.bridge.addr(&dir);
    runtime()?.block_on(async {
        let mut client = Client::connect(addr, dir.load_key()?).await?;
        client
            .send(Method::DELETE, "/v1/ratings", Some(&body))
            .await?
            .ok()
    })?;
    let label = if value > 0.0 { "👍" } else { "👎" };
    println!("Took back {label} on “{}”", snippet(&response, 70));
    Ok(())
}
