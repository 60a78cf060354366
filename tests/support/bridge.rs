//! A real bridge for a test: the `rlclaw` binary started as PROTOCOL.md's "Running a bridge for
//! a test" says, on an ephemeral loopback port with a temporary data folder, plus a client that
//! signs requests with an independent implementation of the protocol (RustCrypto, not ring).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::http::{self, Body, Response};

/// The `rlclaw` binary, built once per test process (a no-op when it is fresh).
///
/// In the dev profile it is built by `cargo test --workspace --no-run`, the same selection as
/// the README's test command, so its dependencies have the same features and are reused:
/// `cargo build -p rlclaw` alone unifies features differently and would compile candle and
/// mistral.rs a second time.
pub fn rlclaw_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("RLCLAW_BIN") {
            return PathBuf::from(path);
        }
        let root = workspace_root();
        let release = cfg!(not(debug_assertions));
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(&root);
        if release {
            // Benchmarks: the release build of the whole workspace would take far longer.
            cmd.args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "rlclaw",
                "--bin",
                "rlclaw",
            ]);
        } else {
            cmd.args(["test", "--workspace", "--no-run", "--quiet"]);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building rlclaw failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        target
            .join(if release { "release" } else { "debug" })
            .join("rlclaw")
    })
    .clone()
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// A running bridge in its own temporary data folder.
pub struct Bridge {
    child: Option<Child>,
    dir: PathBuf,
    _tmp: Option<tempdir::TempDir>,
    addr: SocketAddr,
    key_hex: String,
}

mod tempdir {
    /// A folder removed when dropped.
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn fresh_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "rlclaw-test-{}-{n}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Bridge {
    /// Starts a bridge with this `config.toml` (empty: none) in a fresh data folder.
    pub fn start(config_toml: &str) -> Bridge {
        let tmp = fresh_dir();
        let dir = tmp.join("data");
        if !config_toml.is_empty() {
            std::fs::create_dir_all(&dir).expect("data dir");
            std::fs::write(dir.join("config.toml"), config_toml).expect("config");
        }
        let mut bridge = Bridge {
            child: None,
            dir,
            _tmp: Some(tempdir::TempDir(tmp)),
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            key_hex: String::new(),
        };
        bridge.spawn();
        bridge
    }

    fn spawn(&mut self) {
        let child = Command::new(rlclaw_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--listen")
            .arg(self.addr.to_string())
            .env("RLCLAW_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rlclaw serve starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http::send(self.addr, "GET", "/healthz", &[], Body::None)
                && r.status == 200
            {
                break;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("rlclaw serve exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the bridge did not answer /healthz in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.key_hex = std::fs::read_to_string(self.dir.join("key"))
            .expect("serve wrote its key")
            .trim()
            .to_owned();
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn key_hex(&self) -> &str {
        &self.key_hex
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("rlclaw.db")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// A client that signs with the bridge's current key.
    pub fn client(&self) -> Signed {
        Signed::new(self.addr, &self.key_hex)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (at most `within`) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Kills (if running) and starts again on the same data folder and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Stops the process for good but keeps the data folder (for checks after a crash).
    pub fn stop_keep_data(&mut self) {
        self.kill9();
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Signs requests as PROTOCOL.md says, and checks the bridge's response signatures.
#[derive(Clone)]
pub struct Signed {
    pub addr: SocketAddr,
    pub key: Vec<u8>,
    pub key_id: String,
}

/// A signed request before it is sent, so a test can tamper with any part of it.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub nonce: String,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn fresh_nonce() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("n{}-{t:x}-{n}", std::process::id())
}

impl Signed {
    pub fn new(addr: SocketAddr, key_hex: &str) -> Signed {
        let key = hex::decode(key_hex.trim()).expect("a hex key");
        let key_id = sha256_hex(&key)[..16].to_owned();
        Signed { addr, key, key_id }
    }

    /// A signed request with the current time and a fresh nonce.
    pub fn prepare(&self, method: &str, path: &str, body: &[u8]) -> Prepared {
        self.prepare_at(method, path, body, unix_now(), &fresh_nonce())
    }

    pub fn prepare_at(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        timestamp: i64,
        nonce: &str,
    ) -> Prepared {
        let canonical = format!(
            "rlclaw-v1\n{timestamp}\n{nonce}\n{method}\n{path}\n{}",
            sha256_hex(body)
        );
        let signature = format!("v1={}", hmac_hex(&self.key, canonical.as_bytes()));
        Prepared {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-Rlclaw-Key-Id".into(), self.key_id.clone()),
                ("X-Rlclaw-Timestamp".into(), timestamp.to_string()),
                ("X-Rlclaw-Nonce".into(), nonce.to_owned()),
                ("X-Rlclaw-Signature".into(), signature),
            ],
            body: body.to_vec(),
            nonce: nonce.to_owned(),
        }
    }

    pub fn send(&self, p: &Prepared) -> Response {
        http::send(
            self.addr,
            &p.method,
            &p.path,
            &p.headers,
            if p.body.is_empty() {
                Body::None
            } else {
                Body::Fixed(&p.body)
            },
        )
        .expect("the bridge answers")
    }

    /// Signs, sends and checks that the answer is signed by this key.
    pub fn call(&self, method: &str, path: &str, body: &serde_json::Value) -> Response {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let p = self.prepare(method, path, &bytes);
        let r = self.send(&p);
        assert!(
            self.response_verifies(&p.nonce, &r),
            "the answer to {method} {path} is not signed by the bridge's key: {r:?}"
        );
        r
    }

    pub fn post(&self, path: &str, body: serde_json::Value) -> Response {
        self.call("POST", path, &body)
    }

    /// `GET /v1/status`, as JSON.
    pub fn status(&self) -> serde_json::Value {
        self.call("GET", "/v1/status", &serde_json::Value::Null)
            .json()
    }

    /// Does the response carry a valid signature over the request's nonce?
    pub fn response_verifies(&self, nonce: &str, r: &Response) -> bool {
        let (Some(ts), Some(sig)) = (
            r.header("x-rlclaw-timestamp"),
            r.header("x-rlclaw-signature"),
        ) else {
            return false;
        };
        let canonical = format!(
            "rlclaw-v1-response\n{ts}\n{nonce}\n{}\n{}",
            r.status,
            sha256_hex(&r.body)
        );
        sig == format!("v1={}", hmac_hex(&self.key, canonical.as_bytes()))
    }
}
