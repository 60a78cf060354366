//! Rollouts from outside the chat: the standard-library Python client in clients/ and
//! `rlclaw emit`, both against a real bridge. A stored rollout is a turn that every rating
//! target reaches (its message ids included), a retry is recognised, and a refusal or a wrong
//! key is a clear error that stores nothing.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use rlclaw_tests::bridge::{Bridge, rlclaw_bin, workspace_root};
use serde_json::{Value, json};

fn client_py() -> PathBuf {
    workspace_root().join("clients/rlclaw_emit.py")
}

fn python(bridge: &Bridge, key: &str, args: &[&str]) -> Output {
    Command::new("python3")
        .arg(client_py())
        .args(["--bridge", &bridge.addr().to_string()])
        .args(args)
        .env("RLCLAW_KEY", key)
        .env_remove("RLCLAW_BRIDGE")
        .output()
        .expect("python3 runs")
}

fn emit(bridge: &Bridge, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(rlclaw_bin())
        .arg("--data-dir")
        .arg(bridge.data_dir())
        .arg("emit")
        .args(args)
        .env_remove("RLCLAW_BRIDGE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rlclaw runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input
            .write_all(text.as_bytes())
            .expect("stdin takes the text");
    }
    drop(input);
    child.wait_with_output().expect("rlclaw finishes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stored(bridge: &Bridge, turn_id: &str) -> Option<(String, String, String, Option<String>)> {
    let conn = rusqlite::Connection::open(bridge.db_path()).expect("db opens");
    conn.query_row(
        "SELECT prompt, response, channel, measures FROM turns WHERE turn_id = ?1",
        [turn_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .ok()
}

#[test]
fn the_python_client_stores_a_rollout_once_and_a_reaction_on_its_message_rates_it() {
    let bridge = Bridge::start("");
    let args = [
        "--worker",
        "build-bot@vm",
        "--prompt",
        "fix the flaky test",
        "--response",
        "pinned the random seed",
        "--rollout-id",
        "ro-1",
        "--duration-s",
        "45.2",
        "--tokens",
        "3421",
        "--errors",
        "0",
        "--channel",
        "telegram",
        "--chat",
        "42",
        "--message-id",
        "901",
        "--sender",
        "42",
        "--json",
    ];
    let first = python(&bridge, bridge.key_hex(), &args);
    assert!(first.status.success(), "{}", stderr(&first));
    let answer: Value = serde_json::from_str(stdout(&first).trim()).expect("--json prints JSON");
    assert_eq!(answer["stored"], "new");
    assert_eq!(answer["turn_id"], "ro-1");
    let (prompt, response, channel, measures) = stored(&bridge, "ro-1").expect("stored as a turn");
    assert_eq!(
        (prompt.as_str(), response.as_str(), channel.as_str()),
        ("fix the flaky test", "pinned the random seed", "telegram")
    );
    let measures: Value = serde_json::from_str(&measures.expect("measures kept")).unwrap();
    assert_eq!(measures["tokens"], json!(3421.0));

    // The same rollout again (a retry after a lost answer) changes nothing.
    let again = python(&bridge, bridge.key_hex(), &args);
    assert!(again.status.success(), "{}", stderr(&again));
    let answer: Value = serde_json::from_str(stdout(&again).trim()).unwrap();
    assert_eq!(answer["stored"], "already");

    // A 👍 on the message the rollout was shown as rates it.
    let r = bridge.client().post(
        "/v1/ratings",
        json!({"event_id": "e1", "target": {"channel": "telegram", "chat": "42",
               "message_id": "901"}, "rater": "42", "value": 1.0, "source": "reaction",
               "emoji": "👍"}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["turn_id"], "ro-1");
}

#[test]
fn the_python_client_refuses_conflicts_and_bad_input_with_clear_errors() {
    let bridge = Bridge::start("");
    let base = [
        "--worker",
        "w",
        "--prompt",
        "p",
        "--response",
        "r",
        "--rollout-id",
        "ro-2",
    ];
    assert!(python(&bridge, bridge.key_hex(), &base).status.success());

    let mut changed = base.to_vec();
    changed[5] = "something else";
    let conflict = python(&bridge, bridge.key_hex(), &changed);
    assert_eq!(conflict.status.code(), Some(1), "{}", stderr(&conflict));
    assert!(
        stderr(&conflict).contains("409 turn_conflict"),
        "the error says what conflicts: {}",
        stderr(&conflict)
    );

    let negative = python(
        &bridge,
        bridge.key_hex(),
        &[&base[..], &["--tokens", "-3"]].concat(),
    );
    assert_eq!(negative.status.code(), Some(2));
    assert!(
        stderr(&negative).contains("negative"),
        "{}",
        stderr(&negative)
    );

    let wrong_key = "ab".repeat(32);
    let refused = python(
        &bridge,
        &wrong_key,
        &["--worker", "w", "--prompt", "p", "--response", "q"],
    );
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(
        stderr(&refused).to_lowercase().contains("key"),
        "{}",
        stderr(&refused)
    );

    let malformed = python(&bridge, "not-a-key", &base);
    assert_eq!(malformed.status.code(), Some(2));
    assert!(
        stderr(&malformed).contains("64 hex"),
        "{}",
        stderr(&malformed)
    );

    let conn = rusqlite::Connection::open(bridge.db_path()).unwrap();
    let turns: i64 = conn
        .query_row("SELECT count(*) FROM turns", [], |r| r.get(0))
        .unwrap();
    assert_eq!(turns, 1, "only the first rollout was stored");
}

#[test]
fn the_python_client_says_when_the_bridge_is_unreachable() {
    let bridge = Bridge::start("");
    let port = rlclaw_tests::bridge::free_port();
    let out = Command::new("python3")
        .arg(client_py())
        .args(["--bridge", &format!("127.0.0.1:{port}")])
        .args([
            "--worker",
            "w",
            "--prompt",
            "p",
            "--response",
            "r",
            "--attempts",
            "2",
        ])
        .env("RLCLAW_KEY", bridge.key_hex())
        .output()
        .expect("python3 runs");
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("cannot reach the bridge"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rlclaw_emit_sends_a_rollout_with_text_from_stdin() {
    let bridge = Bridge::start("");
    let out = emit(
        &bridge,
        &[
            "--worker",
            "claude-code@laptop",
            "--prompt",
            "summarise the log",
            "--response",
            "-",
            "--rollout-id",
            "ro-3",
            "--tokens",
            "12",
            "--bridge",
            &bridge.addr().to_string(),
        ],
        Some("three warnings, no errors"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Stored rollout ro-3"),
        "{}",
        stdout(&out)
    );
    let (_, response, channel, _) = stored(&bridge, "ro-3").expect("stored");
    assert_eq!(response, "three warnings, no errors");
    assert_eq!(channel, "rollout");

    let again = emit(
        &bridge,
        &[
            "--worker",
            "claude-code@laptop",
            "--prompt",
            "summarise the log",
            "--response",
            "something else",
            "--rollout-id",
            "ro-3",
            "--bridge",
            &bridge.addr().to_string(),
        ],
        None,
    );
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("turn_conflict"),
        "{}",
        stderr(&again)
    );

    let bad = emit(
        &bridge,
        &[
            "--worker",
            "w",
            "--prompt",
            "p",
            "--response",
            "r",
            "--duration-s",
            "-1",
        ],
        None,
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("non-negative"), "{}", stderr(&bad));
}
