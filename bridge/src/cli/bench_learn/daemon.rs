//! One arm's daemon: `rlclaw serve` with its model endpoint, in a data folder of its own, and the
//! two ways the benchmark talks to it: the signed bridge protocol (captures, ratings, status)
//! and the OpenAI-compatible model endpoint (replies).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rlclaw_trainer::Preset;
use tokio::net::TcpStream;

use crate::client::Client;
use crate::datadir::DataDir;

/// How long the model endpoint may take to load (or reload) the model.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Daemon {
    child: Child,
    pub dir: PathBuf,
    pub bridge: SocketAddr,
    pub endpoint: SocketAddr,
}

/// What the daemon's config says for this arm.
pub struct ArmConfig<'a> {
    pub model: &'a Path,
    pub auto_after: usize,
    pub objective: &'a str,
    pub learning_rate: Option<f64>,
    pub preset: Preset,
}

/// A benchmark that is killed (Ctrl-C, `kill`, a CI timeout) takes its daemons with it
/// instead of leaving them holding ports, cores and a model in memory: the kernel sends them
/// SIGTERM when the thread that started them ends.
#[cfg(target_os = "linux")]
fn exit_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn exit_with_parent(_cmd: &mut Command) {}

fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("no free port on loopback")?;
    Ok(l.local_addr()?)
}

impl Daemon {
    /// Starts `rlclaw serve --model-endpoint` on a fresh data folder and waits for both ports.
    pub async fn start(dir: &Path, arm: &ArmConfig<'_>) -> Result<Daemon> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_config(dir, arm)?;
        Daemon::restart(dir).await
    }

    /// Starts `rlclaw serve` on a data folder as it is (for a fresh arm, or the folder an
    /// earlier run left) and waits for both ports.
    pub async fn restart(dir: &Path) -> Result<Daemon> {
        let (bridge, endpoint) = (free_port()?, free_port()?);
        // Appended: a resumed arm keeps the log of the run it continues.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))?;
        let mut cmd = Command::new(std::env::current_exe().context("cannot find rlclaw itself")?);
        cmd.args(["serve", "--listen", &bridge.to_string()])
            .args(["--model-endpoint", &endpoint.to_string()])
            .arg("--data-dir")
            .arg(dir)
            .env("RLCLAW_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        exit_with_parent(&mut cmd);
        let child = cmd.spawn().context("cannot start rlclaw serve")?;
        let mut d = Daemon {
            child,
            dir: dir.to_path_buf(),
            bridge,
            endpoint,
        };
        d.wait_for_endpoint(None).await?;
        Ok(d)
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "rlclaw serve exited ({status}); see {}",
                self.dir.join("serve.log").display()
            );
        }
        Ok(())
    }

    /// Waits until the model endpoint answers and serves `adapter` ("v3"; None: anything).
    pub async fn wait_for_endpoint(&mut self, adapter: Option<Option<&str>>) -> Result<()> {
        let deadline = Instant::now() + LOAD_TIMEOUT;
        loop {
            self.check_alive()?;
            if let Ok((200, v)) = http_json(self.endpoint, Method::GET, "/v1/models", None).await {
                let serving = v["data"][0]["rlclaw_adapter"].as_str();
                if adapter.is_none_or(|want| want == serving) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the model endpoint did not serve {adapter:?} in time");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A signed connection to the bridge (the daemon writes its key on first start).
    pub async fn client(&mut self) -> Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive()?;
            if let Ok(key) = DataDir::open(&self.dir).and_then(|d| d.load_key())
                && let Ok(c) = Client::connect(self.bridge, key).await
            {
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!("the bridge did not come up");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The model endpoint, for requests from many tasks.
    pub fn endpoint_handle(&self) -> Endpoint {
        Endpoint(self.endpoint)
    }
}

/// The OpenAI-compatible model endpoint of a daemon.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint(SocketAddr);

impl Endpoint {
    /// One sampled reply.
    pub async fn reply(self, prompt: &str, max_tokens: usize, temperature: f64) -> Result<String> {
        let body = serde_json::json!({
            "model": "rlclaw", "max_tokens": max_tokens, "temperature": temperature,
            "messages": [{"role": "user", "content": prompt}],
        });
        let (status, v) =
            http_json(self.0, Method::POST, "/v1/chat/completions", Some(&body)).await?;
        if status != 200 {
            bail!("the model endpoint answered {status}: {v}");
        }
        Ok(v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM lets the daemon cancel a run and close the store cleanly.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The arm's `config.toml`.
fn write_config(dir: &Path, arm: &ArmConfig<'_>) -> Result<()> {
    // The benchmark keeps the machine busy, so auto-training must not wait for idleness.
    let mut config = format!(
        "[training]\nauto_after = {}\npreset = \"{}\"\nmodel = {}\nobjective = \"{}\"\nwait_for_idle = false\n",
        arm.auto_after,
        arm.preset,
        toml_string(&arm.model.display().to_string()),
        arm.objective
    );
    if let Some(lr) = arm.learning_rate {
        config.push_str(&format!("learning_rate = {lr:e}\n"));
    }
    std::fs::write(dir.join(crate::datadir::CONFIG_FILE), config)?;
    Ok(())
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// A plain (unsigned) JSON request: the model endpoint is OpenAI's API, not the bridge's.
async fn http_json(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, v))
}
