//! The daemon's scheduler: trains by itself when enough new ratings have come (or an admin
//! asked with `train`), training is not paused, and the machine is idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use super::run::{self, RunLock, RunOptions};
use super::samples;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::store;

const CHECK_EVERY: Duration = Duration::from_secs(5);
/// After a failed run, auto-training waits this long (an admin's `train` does not).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(600);
/// Above this one-minute load average per core the machine is busy and auto-training waits
/// (an admin's explicit `train` does not).
const BUSY_LOAD_PER_CORE: f64 = 0.75;

/// Runs until `stop` is set; cancels a run in progress then.
pub fn spawn(
    dir: DataDir,
    config: Arc<Config>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("rlclaw-scheduler".into())
        .spawn(move || {
            if let Err(e) = recover(&dir) {
                tracing::warn!("could not check for interrupted runs: {e:#}");
            }
            let mut last_failure: Option<std::time::Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                let backing_off = last_failure.is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE);
                match tick(&dir, &config, &stop, backing_off) {
                    Ok(Some(false)) => last_failure = Some(std::time::Instant::now()),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("scheduler: {e:#}"),
                }
                crate::sleep_unless(&stop, CHECK_EVERY);
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the scheduler thread: {e}"))
}

/// Marks runs a dead process left `running`, unless a live run holds the lock.
fn recover(dir: &DataDir) -> anyhow::Result<()> {
    if let Some(_lock) = RunLock::try_take(dir)? {
        let conn = store::open_rw(&dir.db_path())?;
        let n = run::mark_interrupted(&conn)?;
        if n > 0 {
            tracing::warn!("{n} training run(s) were interrupted; the active adapter is unchanged");
        }
    }
    Ok(())
}

/// Should a run start now? Only turns a run can train on count: held-out ones wait for it.
fn due(conn: &Connection, config: &Config, backing_off: bool) -> rusqlite::Result<bool> {
    let (paused, queued): (bool, bool) = conn.query_row(
        "SELECT paused, queued FROM training WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if paused {
        return Ok(false);
    }
    // Turns with a blended reward: new ratings, or machine scores where nobody rated.
    let untrained = samples::pending(conn, &config.rewards.weights)?.to_train;
    if untrained == 0 {
        return Ok(false);
    }
    if queued {
        return Ok(true);
    }
    let auto = config.training.auto_after;
    let idle = !config.training.wait_for_idle || machine_idle();
    Ok(!backing_off && auto > 0 && untrained >= auto as u64 && idle)
}

fn machine_idle() -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/loadavg") else {
        return true;
    };
    let load: f64 = text
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    load / cores < BUSY_LOAD_PER_CORE
}

/// Starts a run if one is due: `None` when none was, else whether it succeeded.
fn tick(
    dir: &DataDir,
    config: &Config,
    stop: &Arc<AtomicBool>,
    backing_off: bool,
) -> anyhow::Result<Option<bool>> {
    let conn = store::open_ro(&dir.db_path())?;
    if !due(&conn, config, backing_off)? {
        return Ok(None);
    }
    drop(conn);
    let options = RunOptions::from_config(config)?;
    tracing::info!("training started");
    let mut last_log = std::time::Instant::now();
    let outcome = run::run_once(
        dir,
        &options,
        &mut |p| {
            if last_log.elapsed() > Duration::from_secs(10) {
                tracing::info!(
                    "training step {}/{}: loss {:.4}, kl {:.5}, {:.0} tokens/s",
                    p.step,
                    p.total_steps,
                    p.loss,
                    p.kl,
                    p.tokens_per_sec
                );
                last_log = std::time::Instant::now();
            }
        },
        stop,
    );
    crate::memory::release_freed("training");
    match outcome {
        Ok(o) if o.promoted => {
            tracing::info!(
                "training finished: {} now serves ({} ratings). {}",
                o.version,
                o.samples,
                o.summary
            );
            Ok(Some(true))
        }
        Ok(o) => {
            tracing::warn!(
                "training finished ({} ratings), but {}",
                o.samples,
                o.summary
            );
            Ok(Some(true))
        }
        Err(e) => {
            tracing::warn!("training did not finish: {e:#}");
            Ok(Some(false))
        }
    }
}
