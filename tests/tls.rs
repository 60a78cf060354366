//! Beyond loopback only with TLS: `rlclaw tls init` makes a self-signed certificate and prints
//! its pin, `serve` speaks TLS on every non-loopback address (and refuses one without a
//! certificate, saying how to make it), and the standard-library client sends a rollout only to
//! the certificate it pinned.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rlclaw_tests::bridge::{free_port, rlclaw_bin, workspace_root};
use rlclaw_tests::http::{self, Body};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fresh(name: &str) -> Dir {
    let dir = std::env::temp_dir().join(format!("rlclaw-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Dir(dir)
}

fn rlclaw(data: &Path, args: &[&str]) -> Output {
    Command::new(rlclaw_bin())
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("rlclaw runs")
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data: &Path, plain: u16, tls: u16) -> Serve {
    let child = Command::new(rlclaw_bin())
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", &format!("127.0.0.1:{plain}")])
        .args([
            "--listen",
            &format!("0.0.0.0:{tls}"),
            "--allow-non-loopback",
        ])
        .env("RLCLAW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rlclaw serve starts");
    let mut serve = Serve(child);
    let addr = format!("127.0.0.1:{plain}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http::send(addr, "GET", "/healthz", &[], Body::None).is_ok_and(|r| r.status == 200) {
        assert!(
            serve.0.try_wait().unwrap().is_none(),
            "rlclaw serve exited early"
        );
        assert!(Instant::now() < deadline, "the bridge did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    serve
}

fn emit(bridge: &str, key: &str, pin: Option<&str>, id: &str) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(workspace_root().join("clients/rlclaw_emit.py"))
        .args(["--bridge", bridge, "--attempts", "1", "--rollout-id", id])
        .args([
            "--worker",
            "phone",
            "--prompt",
            "p",
            "--response",
            "r",
            "--json",
        ])
        .env("RLCLAW_KEY", key)
        .env_remove("RLCLAW_PIN");
    if let Some(pin) = pin {
        cmd.args(["--pin", pin]);
    }
    cmd.output().expect("python3 runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn turns(data: &Path) -> i64 {
    let conn = rusqlite::Connection::open(data.join("rlclaw.db")).expect("db opens");
    conn.query_row("SELECT count(*) FROM turns", [], |r| r.get(0))
        .expect("turns counted")
}

#[test]
fn a_non_loopback_listen_without_a_certificate_is_refused_with_the_fix() {
    let dir = fresh("refused");
    let out = Command::new(rlclaw_bin())
        .arg("--data-dir")
        .arg(&dir.0)
        .args(["serve", "--listen", &format!("0.0.0.0:{}", free_port())])
        .arg("--allow-non-loopback")
        .output()
        .expect("rlclaw runs");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("only with TLS"), "{err}");
    assert!(err.contains("rlclaw tls init"), "{err}");

    // Without --allow-non-loopback it is refused before anything else.
    let out = rlclaw(&dir.0, &["serve", "--listen", "0.0.0.0:1"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--allow-non-loopback"));
}

#[test]
fn a_pinned_client_sends_over_tls_and_a_wrong_pin_sends_nothing() {
    let dir = fresh("pinned");
    let init = rlclaw(
        &dir.0,
        &["tls", "init", "--name", "bridge.example", "--json"],
    );
    assert!(init.status.success(), "{}", text(&init.stderr));
    let made: serde_json::Value = serde_json::from_slice(&init.stdout).expect("--json");
    let pin = made["pin"].as_str().expect("a pin").to_string();
    assert!(pin.starts_with("sha256:") && pin.len() == 7 + 64, "{pin}");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.0.join("tls/key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600, "the TLS key is private");

    // Run again: the pinned certificate is kept, and `show` prints the same pin.
    let again = rlclaw(&dir.0, &["tls", "init"]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("--force"));
    let show = rlclaw(&dir.0, &["tls", "show", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("--json");
    assert_eq!(shown["pin"], pin.as_str());

    let (plain, tls) = (free_port(), free_port());
    let _serve = serve(&dir.0, plain, tls);
    let key = std::fs::read_to_string(dir.0.join("key")).unwrap();
    let remote = format!("https://127.0.0.1:{tls}");

    let ok = emit(&remote, key.trim(), Some(&pin), "ro-tls");
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(answer["stored"], "new");
    assert_eq!(turns(&dir.0), 1);

    let wrong = format!("sha256:{}", "0".repeat(64));
    let refused = emit(&remote, key.trim(), Some(&wrong), "ro-wrong-pin");
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("not the pinned one"));

    let unpinned = emit(&remote, key.trim(), None, "ro-no-pin");
    assert_eq!(unpinned.status.code(), Some(2));
    assert!(text(&unpinned.stderr).contains("needs --pin"));

    // Plain HTTP to the TLS address gets no answer the client can use.
    let plain_to_tls = emit(&format!("127.0.0.1:{tls}"), key.trim(), None, "ro-plain");
    assert_eq!(
        plain_to_tls.status.code(),
        Some(3),
        "{}",
        text(&plain_to_tls.stderr)
    );

    // The loopback address still speaks plain HTTP for the local plugin and CLI.
    let local = emit(&format!("127.0.0.1:{plain}"), key.trim(), None, "ro-local");
    assert!(local.status.success(), "{}", text(&local.stderr));
    assert_eq!(
        turns(&dir.0),
        2,
        "only the pinned and the local rollouts were stored"
    );
}
