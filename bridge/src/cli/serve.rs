//! `rlclaw serve`: the daemon.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::datadir::{CONFIG_FILE, DataDir};
use crate::server::{self, App};
use crate::store::Store;

/// Where `serve` records its listen address for the client commands.
pub const ADDR_FILE: &str = "bridge.addr";
/// Where `serve` records its process id (for `bench`'s memory figures and service managers).
pub const PID_FILE: &str = "bridge.pid";

#[derive(clap::Args)]
pub struct Args {
    /// An address to listen on; repeat for several. Loopback addresses speak plain HTTP; any
    /// other needs --allow-non-loopback and speaks TLS (`rlclaw tls init` first).
    #[arg(long, default_value = "127.0.0.1:8420", value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Allow listening on an address other machines can reach (with TLS).
    #[arg(long)]
    allow_non_loopback: bool,
    /// Also serve the model with the active adapter, OpenAI-compatible, at this address
    /// (default: config.toml's [serving] endpoint; off when neither is set).
    #[arg(long, value_name = "ADDR")]
    model_endpoint: Option<SocketAddr>,
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    let dir = DataDir::open(dir)?;
    let mut config = Config::load(&dir.path(CONFIG_FILE))?;
    // --model-endpoint counts as the configured endpoint, for the judge's `local` too.
    config.serving.endpoint = args.model_endpoint.or(config.serving.endpoint);
    let config = Arc::new(config);
    let key = dir.load_or_create_key()?;
    let previous_key = dir.load_previous_key()?;
    let control = crate::training::control_for(&dir);
    let (store, writer) = Store::start(&dir.db_path(), config.clone(), control)?;
    let stop_training = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scheduler =
        crate::training::scheduler::spawn(dir.clone(), config.clone(), stop_training.clone());
    let judge = start_judge(&dir, &config, &store, &stop_training)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut listeners = Vec::new();
        for addr in &args.listen {
            listeners.push(
                server::bind(*addr, args.allow_non_loopback, || crate::tls::acceptor(&dir))
                    .await?,
            );
        }
        // Client commands on this machine use the first plain (loopback) address.
        let mut shown = Vec::new();
        let mut local_addr = None;
        for l in &listeners {
            let local = l.tcp.local_addr()?;
            let scheme = if l.tls.is_some() { "https" } else { "http" };
            shown.push(format!("{scheme}://{local}"));
            if l.tls.is_none() && local_addr.is_none() {
                local_addr = Some(local);
            }
        }
        let local = match local_addr {
            Some(addr) => addr,
            None => listeners
                .first()
                .context("give at least one --listen address")?
                .tcp
                .local_addr()?,
        };
        crate::datadir::write_private(&dir.path(ADDR_FILE), format!("{local}\n").as_bytes())?;
        crate::datadir::write_private(
            &dir.path(PID_FILE),
            format!("{}\n", std::process::id()).as_bytes(),
        )?;
        eprintln!(
            "rlclaw: bridge {} listening on {} (data in {}, key id {})",
            crate::VERSION,
            shown.join(" and "),
            dir.root().display(),
            key.id()
        );
        if let Some(endpoint) = config.serving.endpoint {
            if !endpoint.ip().is_loopback() {
                anyhow::bail!("the model endpoint {endpoint} is not a loopback address; it serves loopback only");
            }
            #[cfg(feature = "model-endpoint")]
            crate::serving::spawn(
                crate::training::run::RunOptions::from_config(&config)?.model,
                crate::training::adapters_dir(&dir),
                endpoint,
                config.serving.model_id.clone().unwrap_or_else(|| "rlclaw".into()),
            );
            #[cfg(not(feature = "model-endpoint"))]
            anyhow::bail!("this build has no model endpoint (the model-endpoint feature is off)");
        }
        let app = Arc::new(App {
            store,
            config,
            keys: server::KeyRing::from_dir(dir.clone(), key, previous_key),
        });
        server::serve(listeners, app).await
    })?;
    // Every acknowledged request is already committed; give the writer a moment to finish
    // what it holds, then leave.
    runtime.shutdown_timeout(Duration::from_secs(1));
    stop_training.store(true, std::sync::atomic::Ordering::Relaxed);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Some(judge) = judge {
            let _ = judge.join();
        }
        writer.join();
        let _ = scheduler.join();
        let _ = done_tx.send(());
    });
    let _ = done_rx.recv_timeout(Duration::from_secs(2));
    eprintln!("rlclaw: stopped");
    Ok(())
}

/// Starts the background judge when `[rewards.judge]` names an endpoint; a judge configured
/// but unable to run is reported and left off (`status` says why).
fn start_judge(
    dir: &DataDir,
    config: &Config,
    store: &Store,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Result<Option<std::thread::JoinHandle<()>>> {
    let settings = &config.rewards.judge;
    let target = match settings.target(&config.serving) {
        Ok(Some(target)) => target,
        Ok(None) => return Ok(None),
        Err(e) => {
            eprintln!("rlclaw: the judge is off: {e}");
            return Ok(None);
        }
    };
    let place = if target.loopback {
        "on this machine".to_owned()
    } else {
        format!(
            "beyond this machine: the prompts and replies it scores go to {}",
            target.uri.authority().map(|a| a.as_str()).unwrap_or("?")
        )
    };
    eprintln!(
        "rlclaw: the judge is {} ({place}), at most {} calls an hour",
        target.uri, settings.calls_per_hour
    );
    let handle = crate::rewards::judging::spawn(
        dir.db_path(),
        store.clone(),
        target,
        settings.clone(),
        stop.clone(),
    )
    .context("cannot start the judge's thread")?;
    Ok(Some(handle))
}
