//! `GET /v1/status`: counts, the reward trend, the active adapter, the training state, the
//! ratings since the last run, what the evaluation gate measured, and each reward source.

use crate::store::queries;
use crate::store::{Ctx, OpError, Reply};

/// Ratings per point of the reward trend, and how many points.
const TREND_BLOCK: usize = 8;
const TREND_POINTS: usize = 16;

pub fn status_json(ctx: &Ctx) -> Result<serde_json::Value, OpError> {
    let counts = ctx.state.counts;
    Ok(serde_json::json!({
        "version": crate::VERSION,
        "counts": counts,
        "reward_trend": queries::reward_trend(ctx.tx, TREND_POINTS, TREND_BLOCK)?,
        "adapter": ctx.control.active_adapter(),
        "training": queries::training_state(ctx.tx)?,
        "since_last_run": crate::training::samples::pending(ctx.tx, &ctx.config.rewards.weights)?,
        "gate": ctx.control.gate_status(),
        "rewards": crate::rewards::summary::status_json(
            ctx.tx,
            &ctx.config.rewards,
            &ctx.config.serving,
            ctx.now_ms,
        )?,
    }))
}

pub fn apply(ctx: &mut Ctx) -> Result<Reply, OpError> {
    Ok(Reply::json(200, status_json(ctx)?))
}
