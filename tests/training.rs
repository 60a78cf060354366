//! Training driven the way a person drives it: ratings reach the real bridge, `rlclaw train` (or
//! an admin's `/rl train` through the daemon's scheduler) makes a new adapter that serves, and
//! nothing a crash or an undo does leaves the active adapter unusable.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rlclaw_tests::bridge::{Bridge, Signed, rlclaw_bin};
use rlclaw_tests::cli::{rlclaw, scratch, tiny_model, training_config};
use rlclaw_trainer::{AdapterStore, LoraWeights};
use serde_json::{Value, json};

fn capture_and_rate(c: &Signed, n: usize) {
    for i in 0..n {
        let r = c.post(
            "/v1/turns",
            json!({"turn_id": format!("t{i}"), "session": "s", "channel": "telegram", "sender": "42",
                   "prompt": format!("question {i}"), "response": if i % 2 == 0 { "Sure: short answer." } else { "A very long and winding answer." },
                   "context": [{"role": "user", "content": "hello"}]}),
        );
        assert_eq!(r.status, 201);
        let value = if i % 2 == 0 { 1.0 } else { -1.0 };
        let mut rating = json!({"event_id": format!("e{i}"), "target": {"turn_id": format!("t{i}")},
                                "rater": "42", "value": value, "source": "command"});
        if value < 0.0 {
            rating["reason"] = json!("too long");
        }
        assert_eq!(c.post("/v1/ratings", rating).status, 200);
    }
}

#[test]
fn rlclaw_train_promotes_a_new_adapter_and_the_bridge_counts_its_ratings_as_trained() {
    let tmp = scratch("train", "cli");
    let model = tiny_model(&tmp);
    let bridge = Bridge::start(&training_config(&model, ""));
    let c = bridge.client();
    capture_and_rate(&c, 6);
    assert_eq!(c.status()["counts"]["untrained"], 6);

    let out = rlclaw(bridge.data_dir(), &["train", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome: Value = serde_json::from_slice(&out.stdout).expect("JSON outcome");
    assert_eq!(outcome["version"], "v1");
    // t5 is a held-out turn: it only checks new versions and is never trained on.
    assert_eq!(outcome["samples"], 5);
    assert_eq!(outcome["held_out_new"], 1);
    assert_eq!(outcome["promoted"], true, "{outcome}");

    let s = c.status();
    assert_eq!(s["adapter"], "v1");
    assert_eq!(
        s["counts"]["untrained"], 0,
        "the running bridge picked up the run: {s}"
    );
    assert_eq!(s["training"]["last_run"]["outcome"], "ok");
    let store = AdapterStore::open(bridge.data_dir().join("adapters")).unwrap();
    LoraWeights::read_peft(&store.active().unwrap().unwrap().path)
        .expect("a loadable PEFT adapter");

    // Nothing new: a second run says so and changes nothing.
    let out = rlclaw(bridge.data_dir(), &["train"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to train on"));
    assert_eq!(c.status()["adapter"], "v1");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn undoing_or_rerating_a_trained_rating_keeps_the_active_adapter_usable() {
    let tmp = scratch("train", "undo");
    let model = tiny_model(&tmp);
    let bridge = Bridge::start(&training_config(&model, ""));
    let c = bridge.client();
    capture_and_rate(&c, 4);
    assert!(rlclaw(bridge.data_dir(), &["train"]).status.success());
    let del = c.call(
        "DELETE",
        "/v1/ratings",
        &json!({"event_id": "u1", "target": {"turn_id": "t0"}, "rater": "42"}),
    );
    assert_eq!(del.json()["removed"], true);
    let again = c.post("/v1/ratings", json!({"event_id": "r1", "target": {"turn_id": "t1"}, "rater": "42", "value": 1, "source": "command"}));
    assert_eq!(again.status, 200);
    let s = c.status();
    assert_eq!(s["adapter"], "v1");
    assert_eq!(
        s["counts"]["untrained"], 1,
        "the re-rating is new; the undone one is gone: {s}"
    );
    let store = AdapterStore::open(bridge.data_dir().join("adapters")).unwrap();
    LoraWeights::read_peft(&store.active().unwrap().unwrap().path).expect("still loadable");
    // The re-rating trains into v2, on top of v1; rollback and reset move the pointer only.
    assert!(rlclaw(bridge.data_dir(), &["train"]).status.success());
    assert_eq!(c.status()["adapter"], "v2");
    assert!(rlclaw(bridge.data_dir(), &["rollback"]).status.success());
    assert_eq!(c.status()["adapter"], "v1");
    let out = rlclaw(bridge.data_dir(), &["reset"]);
    assert!(!out.status.success(), "reset asks first without a terminal");
    assert!(
        rlclaw(bridge.data_dir(), &["reset", "--yes"])
            .status
            .success()
    );
    assert!(c.status()["adapter"].is_null());
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn an_admins_train_command_queues_a_run_that_the_daemon_performs() {
    let tmp = scratch("train", "sched");
    let model = tiny_model(&tmp);
    let bridge = Bridge::start(&training_config(&model, "admins = [\"42\"]"));
    let c = bridge.client();
    capture_and_rate(&c, 4);
    let r = c.post(
        "/v1/commands",
        json!({"event_id": "c1", "name": "train", "sender": "42", "session": "s", "args": []}),
    );
    assert_eq!(r.status, 200);
    assert!(
        r.json()["text"].as_str().unwrap().contains("queued"),
        "{}",
        r.json()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = c.status();
        // The run is recorded first, then its version serves: wait for both.
        if s["training"]["last_run"]["outcome"] == "ok" && s["adapter"] == "v1" {
            assert_eq!(s["counts"]["untrained"], 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler did not train: {s}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Pause stops the scheduler from taking queued work.
    c.post(
        "/v1/commands",
        json!({"event_id": "c2", "name": "pause", "sender": "42", "session": "s", "args": []}),
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn kill_9_during_a_run_leaves_the_active_adapter_and_the_database_consistent() {
    let tmp = scratch("train", "kill");
    let model = tiny_model(&tmp);
    let mut bridge = Bridge::start(&training_config(&model, ""));
    let c = bridge.client();
    capture_and_rate(&c, 4);
    assert!(rlclaw(bridge.data_dir(), &["train"]).status.success());
    capture_and_rate_more(&c);
    // A run on the real model is slow enough to be caught in the middle.
    let real = rlclaw_tests::model::smollm2();
    let mut child = Command::new(rlclaw_bin())
        .args(["train", "--model"])
        .arg(&real)
        .arg("--data-dir")
        .arg(bridge.data_dir())
        .spawn()
        .unwrap();
    let db = bridge.db_path();
    let deadline = Instant::now() + Duration::from_secs(120);
    while running_runs(&db) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();

    let store = AdapterStore::open(bridge.data_dir().join("adapters")).unwrap();
    assert_eq!(store.active().unwrap().unwrap().name, "v1");
    assert_eq!(
        store.list().unwrap().len(),
        1,
        "no half-written version is visible"
    );
    assert_eq!(
        c.status()["counts"]["untrained"],
        2,
        "the killed run marked nothing"
    );
    // The bridge's next start records the run as interrupted; the next run succeeds.
    bridge.restart();
    let c = bridge.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.status()["training"]["last_run"]["outcome"] != "interrupted" {
        assert!(Instant::now() < deadline, "{}", c.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(rlclaw(bridge.data_dir(), &["train"]).status.success());
    assert_eq!(c.status()["adapter"], "v2");
    let _ = std::fs::remove_dir_all(&tmp);
}

fn capture_and_rate_more(c: &Signed) {
    for i in 100..102 {
        c.post("/v1/turns", json!({"turn_id": format!("t{i}"), "session": "s", "channel": "telegram", "sender": "42",
                                   "prompt": "more", "response": "Sure: yes."}));
        c.post(
            "/v1/ratings",
            json!({"event_id": format!("e{i}"), "target": {"turn_id": format!("t{i}")},
                                     "rater": "42", "value": 1, "source": "command"}),
        );
    }
}

fn running_runs(db: &Path) -> i64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|conn| {
            conn.query_row(
                "SELECT count(*) FROM runs WHERE outcome = 'running'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap_or(0)
}
