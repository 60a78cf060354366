//! The OpenAI-compatible endpoint, with adapter reloads swapped in while it keeps serving.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mistralrs::Response as MrsResponse;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::engine::{ChatMessage, Engine, Role, Sampling, ServeConfig, load, request};
use crate::error::{Result, ServeError};

/// Where the served model stands after the latest reload request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Counts the models swapped in; 0 is the one loaded at start.
    pub generation: u64,
    /// The adapter merged into the model now serving.
    pub adapter: Option<PathBuf>,
    /// Whether a new model is loading in the background.
    pub loading: bool,
    /// Why the latest reload failed (the previous model keeps serving); cleared on success.
    pub last_error: Option<String>,
}

struct Shared {
    current: RwLock<Arc<Engine>>,
    model_id: String,
    created: u64,
}

impl Shared {
    fn engine(&self) -> Arc<Engine> {
        // A poisoned lock still holds a whole Arc: the swap is a single assignment.
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn swap(&self, e: Engine) {
        let e = Arc::new(e);
        match self.current.write() {
            Ok(mut g) => *g = e,
            Err(p) => *p.into_inner() = e,
        }
    }
}

/// A bound endpoint with its first model loaded, not yet serving.
pub struct Server {
    cfg: ServeConfig,
    listener: TcpListener,
    shared: Arc<Shared>,
    status_tx: watch::Sender<ReloadStatus>,
}

/// Loads the model of `cfg` and binds its loopback address (port 0 picks a free port).
pub async fn bind(cfg: &ServeConfig) -> Result<Server> {
    if !cfg.listen.ip().is_loopback() {
        return Err(ServeError::NotLoopback(cfg.listen));
    }
    let engine = load(cfg).await?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (status_tx, _) = watch::channel(ReloadStatus {
        adapter: cfg.adapter.clone(),
        ..ReloadStatus::default()
    });
    Ok(Server {
        cfg: cfg.clone(),
        listener,
        shared: Arc::new(Shared {
            current: RwLock::new(Arc::new(engine)),
            model_id: cfg.model_id.clone(),
            created,
        }),
        status_tx,
    })
}

/// Serves `cfg` until the server fails. Each adapter path sent on `reload` (or `None` for the
/// base model alone) is loaded in the background and swapped in when ready; requests in flight
/// finish on the model they started on, and a failed load leaves the current model serving.
/// The value the channel holds at start is taken as seen: `cfg.adapter` is served first.
pub async fn serve(cfg: &ServeConfig, reload: watch::Receiver<Option<PathBuf>>) -> Result<()> {
    bind(cfg).await?.run(reload).await
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("model_id", &self.cfg.model_id)
            .field("listener", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> Result<std::net::SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| ServeError::Server(e.to_string()))
    }

    /// Follows the reload outcomes.
    pub fn status(&self) -> watch::Receiver<ReloadStatus> {
        self.status_tx.subscribe()
    }

    /// The axum router (routes `/v1/models`, `/v1/chat/completions`, `/health`).
    fn router(&self) -> Router {
        Router::new()
            .route("/v1/models", get(models))
            .route("/v1/chat/completions", post(chat_completions))
            .route("/health", get(health))
            .with_state(self.shared.clone())
    }

    /// Serves until the HTTP server fails; see [`serve`].
    pub async fn run(self, mut reload: watch::Receiver<Option<PathBuf>>) -> Result<()> {
        let app = self.router();
        let shared = self.shared.clone();
        let status_tx = self.status_tx.clone();
        let cfg = self.cfg.clone();
        reload.mark_unchanged();
        let reloader = tokio::spawn(async move {
            while reload.changed().await.is_ok() {
                let adapter = reload.borrow_and_update().clone();
                status_tx.send_modify(|s| s.loading = true);
                let next = ServeConfig {
                    adapter: adapter.clone(),
                    ..cfg.clone()
                };
                match load(&next).await {
                    Ok(engine) => {
                        shared.swap(engine);
                        tracing::info!(adapter = ?adapter, "swapped in a new model");
                        status_tx.send_modify(|s| {
                            s.generation += 1;
                            s.adapter = adapter;
                            s.loading = false;
                            s.last_error = None;
                        });
                    }
                    Err(e) => {
                        tracing::error!(adapter = ?adapter, error = %e, "reload failed; the previous model keeps serving");
                        status_tx.send_modify(|s| {
                            s.loading = false;
                            s.last_error = Some(e.to_string());
                        });
                    }
                }
            }
        });
        let served = axum::serve(self.listener, app)
            .await
            .map_err(|e| ServeError::Server(e.to_string()));
        reloader.abort();
        served
    }
}

fn api_error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body =
        json!({"error": {"message": message.into(), "type": kind, "param": null, "code": null}});
    (status, axum::Json(body)).into_response()
}

async fn health() -> &'static str {
    "ok"
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    // Which adapter version serves (its folder's name, "v3"), so a client can tell a reload
    // has been swapped in; OpenAI clients ignore the extra field.
    let adapter = s
        .engine()
        .adapter()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    axum::Json(json!({
        "object": "list",
        "data": [{"id": s.model_id, "object": "model", "created": s.created, "owned_by": "rlclaw",
                  "rlclaw_adapter": adapter}],
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<InMessage>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    n: Option<usize>,
}

fn to_messages(req: &[InMessage]) -> std::result::Result<Vec<ChatMessage>, String> {
    req.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = Role::parse(&m.role)
                .ok_or_else(|| format!("messages[{i}].role `{}` is not supported", m.role))?;
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut s = String::new();
                    for p in parts {
                        if p.kind != "text" {
                            return Err(format!(
                                "messages[{i}] has a `{}` part; only text is served",
                                p.kind
                            ));
                        }
                        s.push_str(p.text.as_deref().unwrap_or(""));
                    }
                    s
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

async fn chat_completions(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("bad request body: {e}"),
            );
        }
    };
    if req.n.is_some_and(|n| n != 1) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "only n = 1 is served",
        );
    }
    let messages = match to_messages(&req.messages) {
        Ok(m) if !m.is_empty() => m,
        Ok(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "messages is empty",
            );
        }
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "invalid_request_error", e),
    };
    let sampling = Sampling {
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        stop: match req.stop {
            None => Vec::new(),
            Some(Stop::One(x)) => vec![x],
            Some(Stop::Many(v)) => v,
        },
    };
    let rb = match request(&messages, &sampling) {
        Ok(rb) => rb,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                e.to_string(),
            );
        }
    };
    // The engine is pinned for the whole request: a swap meanwhile does not touch it.
    let engine = s.engine();
    if req.stream == Some(true) {
        return stream(engine, rb, s.model_id.clone());
    }
    match engine.model.send_chat_request(rb).await {
        Ok(mut r) => {
            r.model = s.model_id.clone();
            axum::Json(r).into_response()
        }
        Err(e) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        ),
    }
}

fn stream(engine: Arc<Engine>, rb: mistralrs::RequestBuilder, model_id: String) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let err_event = |m: String| {
            Event::default()
                .data(json!({"error": {"message": m, "type": "server_error"}}).to_string())
        };
        match engine.model.stream_chat_request(rb).await {
            Ok(mut st) => {
                while let Some(r) = st.next().await {
                    let (event, last) = match r {
                        MrsResponse::Chunk(mut c) => {
                            c.model = model_id.clone();
                            let done = c.choices.iter().any(|ch| ch.finish_reason.is_some());
                            match Event::default().json_data(&c) {
                                Ok(e) => (e, done),
                                Err(e) => (err_event(e.to_string()), true),
                            }
                        }
                        MrsResponse::InternalError(e) | MrsResponse::ValidationError(e) => {
                            (err_event(e.to_string()), true)
                        }
                        MrsResponse::ModelError(m, _) => (err_event(m), true),
                        _ => continue,
                    };
                    if tx.send(event).await.is_err() || last {
                        break;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(err_event(e.to_string())).await;
            }
        }
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(events).into_response()
}
