//! The model endpoint beside the bridge: the base model with the active adapter merged in,
//! served OpenAI-compatibly by mistral.rs (bridge/serve), reloaded whenever another adapter
//! version is promoted, rolled back or reset, by this process or by the CLI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rlclaw_trainer::AdapterStore;
use tokio::sync::watch;

/// How often the active-adapter pointer is checked.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The active adapter's folder, or `None` when the base model serves.
pub fn active_adapter_path(adapters: &Path) -> Option<PathBuf> {
    if !adapters.exists() {
        return None;
    }
    match AdapterStore::open(adapters).and_then(|s| s.active()) {
        Ok(active) => active.map(|v| v.path),
        Err(e) => {
            tracing::warn!("the active adapter cannot be read: {e}");
            None
        }
    }
}

/// Loads the model and serves it until the runtime stops; never takes the bridge down.
pub fn spawn(model: PathBuf, adapters: PathBuf, listen: SocketAddr, model_id: String) {
    tokio::spawn(async move {
        let adapter = active_adapter_path(&adapters);
        let mut config = rlclaw_serve::ServeConfig::new(&model);
        config.isq = match rlclaw_serve::isq_from_env() {
            Ok(isq) => isq,
            Err(e) => {
                tracing::error!("the model endpoint could not start: {e}");
                return;
            }
        };
        config.adapter = adapter.clone();
        config.listen = listen;
        config.model_id = model_id;
        let (tx, rx) = watch::channel(adapter.clone());
        tokio::spawn(watch_active(adapters, adapter, tx));
        tracing::info!("loading {} for the model endpoint", model.display());
        match rlclaw_serve::bind(&config).await {
            Ok(server) => {
                crate::memory::release_freed("loading the model");
                tokio::spawn(release_after_reloads(server.status()));
                eprintln!(
                    "rlclaw: model endpoint (OpenAI-compatible) on http://{listen}/v1, adapter {}",
                    config
                        .adapter
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "none (base model)".into())
                );
                if let Err(e) = server.run(rx).await {
                    tracing::error!("the model endpoint stopped: {e}");
                }
            }
            Err(e) => tracing::error!("the model endpoint could not start: {e}"),
        }
    });
}

/// A reload frees the previous model and the new one's load buffers: hand them back.
async fn release_after_reloads(mut status: watch::Receiver<rlclaw_serve::ReloadStatus>) {
    while status.changed().await.is_ok() {
        if !status.borrow_and_update().loading {
            let _ =
                tokio::task::spawn_blocking(|| crate::memory::release_freed("reloading the model"))
                    .await;
        }
    }
}

/// Sends the active adapter's path whenever it changes.
async fn watch_active(
    adapters: PathBuf,
    mut current: Option<PathBuf>,
    tx: watch::Sender<Option<PathBuf>>,
) {
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let dir = adapters.clone();
        let Ok(active) = tokio::task::spawn_blocking(move || active_adapter_path(&dir)).await
        else {
            continue;
        };
        if active != current {
            tracing::info!(
                "the active adapter changed to {}; reloading the model endpoint",
                active
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "the base model".into())
            );
            current = active.clone();
            if tx.send(active).is_err() {
                return;
            }
        }
    }
}
