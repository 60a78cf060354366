//! `POST /v1/turns`: capture one assistant turn.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{check_id, check_text, parse_json};
use crate::keys::sha256_hex;
use crate::protocol::ApiError;
use crate::store::{Ctx, OpError, Reply};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Capture {
    pub turn_id: String,
    pub session: String,
    pub channel: String,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub chat: Option<String>,
    pub sender: String,
    #[serde(default)]
    pub group: bool,
    #[serde(default)]
    pub message_ids: Vec<String>,
    pub prompt: String,
    pub response: String,
    #[serde(default)]
    pub context: Vec<Message>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub at: Option<i64>,
}

pub fn parse(body: &[u8], max_text: usize) -> Result<Capture, ApiError> {
    let capture: Capture = parse_json(body)?;
    check_id("turn_id", &capture.turn_id, 128)?;
    check_texts(
        &capture.prompt,
        &capture.response,
        &capture.context,
        max_text,
    )?;
    Ok(capture)
}

pub fn check_texts(
    prompt: &str,
    response: &str,
    context: &[Message],
    max_text: usize,
) -> Result<(), ApiError> {
    check_text("prompt", prompt, max_text)?;
    check_text("response", response, max_text)?;
    for (i, m) in context.iter().enumerate() {
        check_text(&format!("context[{i}].content"), &m.content, max_text)?;
    }
    Ok(())
}

/// A new turn row; shared with rollouts, which are stored as turns.
pub struct NewTurn<'a> {
    pub turn_id: &'a str,
    pub kind: &'a str,
    pub session: &'a str,
    pub channel: &'a str,
    pub account: Option<&'a str>,
    pub chat: Option<&'a str>,
    pub sender: &'a str,
    pub group: bool,
    pub message_ids: &'a [String],
    pub prompt: &'a str,
    pub response: &'a str,
    pub context: &'a [Message],
    pub model: Option<&'a str>,
    pub at: Option<i64>,
    pub worker: Option<&'a str>,
    pub measures: Option<serde_json::Value>,
    /// A hash of every field as the client sent it: equal for a retry of the same body.
    pub digest: String,
}

/// Inserts a turn: `201` when new, `200` for a retry of the same content, `409` otherwise.
pub fn insert(turn: NewTurn, ctx: &mut Ctx, extra: serde_json::Value) -> Result<Reply, OpError> {
    let existing: Option<String> = ctx
        .tx
        .query_row(
            "SELECT digest FROM turns WHERE turn_id = ?1",
            params![turn.turn_id],
            |r| r.get(0),
        )
        .optional()?;
    let mut body = serde_json::json!({"turn_id": turn.turn_id});
    if let (Some(obj), Some(more)) = (body.as_object_mut(), extra.as_object()) {
        obj.extend(more.clone());
    }
    match existing {
        Some(digest) if digest == turn.digest => return Ok(Reply::json(200, body)),
        Some(_) => {
            return Err(ApiError::new(
                409,
                "turn_conflict",
                "A turn with this id was already captured with other content.",
            )
            .into());
        }
        None => {}
    }
    let context =
        serde_json::to_string(turn.context).map_err(|e| ApiError::internal(e.to_string()))?;
    ctx.tx.execute(
        "INSERT INTO turns (turn_id, kind, session, channel, account, chat, sender, is_group,
                            prompt, response, context, model, at, worker, measures, digest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            turn.turn_id,
            turn.kind,
            turn.session,
            turn.channel,
            turn.account,
            turn.chat,
            turn.sender,
            turn.group,
            turn.prompt,
            turn.response,
            context,
            turn.model,
            turn.at.unwrap_or(ctx.now_ms),
            turn.worker,
            turn.measures.map(|m| m.to_string()),
            turn.digest,
        ],
    )?;
    let seq = ctx.tx.last_insert_rowid();
    let mut stmt = ctx.tx.prepare_cached(
        "INSERT OR IGNORE INTO turn_messages (channel, message_id, turn_seq) VALUES (?1, ?2, ?3)",
    )?;
    for id in turn.message_ids {
        stmt.execute(params![turn.channel, id, seq])?;
    }
    ctx.state.counts.turns += 1;
    Ok(Reply::json(201, body))
}

pub fn apply(c: &Capture, ctx: &mut Ctx) -> Result<Reply, OpError> {
    let digest = sha256_hex(
        serde_json::to_string(c)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .as_bytes(),
    );
    insert(
        NewTurn {
            turn_id: &c.turn_id,
            kind: "turn",
            session: &c.session,
            channel: &c.channel,
            account: c.account.as_deref(),
            chat: c.chat.as_deref(),
            sender: &c.sender,
            group: c.group,
            message_ids: &c.message_ids,
            prompt: &c.prompt,
            response: &c.response,
            context: &c.context,
            model: c.model.as_deref(),
            at: c.at,
            worker: None,
            measures: None,
            digest,
        },
        ctx,
        serde_json::json!({}),
    )
}
