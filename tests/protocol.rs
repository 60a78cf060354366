//! PROTOCOL.md, spoken from outside against the real `rlclaw serve`: every documented outcome,
//! and for every refusal, proof that nothing was stored.

use std::time::Duration;

use rlclaw_tests::bridge::{Bridge, Signed, fresh_nonce, unix_now};
use rlclaw_tests::http::{self, Body};
use serde_json::{Value, json};

fn turn(id: &str) -> Value {
    json!({
        "turn_id": id, "session": "agent:main:main", "channel": "telegram", "chat": "42",
        "sender": "42", "message_ids": ["501", "502"], "prompt": "what is 2+2?",
        "response": "4", "context": [{"role": "user", "content": "hi"}], "at": 1795348055918i64,
    })
}

fn rate(event: &str, turn_id: &str, rater: &str, value: Value) -> Value {
    json!({"event_id": event, "target": {"turn_id": turn_id}, "rater": rater, "value": value, "source": "command"})
}

/// Row counts straight from the database file.
fn rows(bridge: &Bridge, table: &str) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        bridge.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("db opens");
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

#[test]
fn healthz_answers_without_authentication_and_reveals_only_the_version() {
    let bridge = Bridge::start("");
    let r = http::send(bridge.addr(), "GET", "/healthz", &[], Body::None).unwrap();
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["ok"], true);
    assert!(body["version"].is_string());
    assert_eq!(body.as_object().unwrap().len(), 2);
}

#[test]
fn a_turn_is_created_once_retried_idempotently_and_conflicts_on_other_content() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    let r = c.post("/v1/turns", turn("t1"));
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(r.json()["turn_id"], "t1");
    assert_eq!(c.post("/v1/turns", turn("t1")).status, 200);
    let mut other = turn("t1");
    other["response"] = json!("5");
    let r = c.post("/v1/turns", other);
    assert_eq!((r.status, r.code().as_str()), (409, "turn_conflict"));
    assert_eq!(rows(&bridge, "turns"), 1);
}

#[test]
fn a_turn_missing_a_field_or_with_a_wrong_type_is_invalid_and_not_stored() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    let mut missing = turn("t1");
    missing.as_object_mut().unwrap().remove("prompt");
    let mut ill_typed = turn("t2");
    ill_typed["group"] = json!("yes");
    let mut long_id = turn("t3");
    long_id["turn_id"] = json!("x".repeat(129));
    for body in [missing, ill_typed, long_id, json!([1, 2])] {
        let r = c.post("/v1/turns", body);
        assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"));
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(rows(&bridge, "turns"), 0);
}

#[test]
fn text_over_the_limit_is_rejected_never_cut() {
    let bridge = Bridge::start("max_text_bytes = 1000\n");
    let c = bridge.client();
    let mut big = turn("t1");
    big["response"] = json!("é".repeat(501));
    let r = c.post("/v1/turns", big);
    assert_eq!((r.status, r.code().as_str()), (413, "text_too_large"));
    let mut big_context = turn("t2");
    big_context["context"] = json!([{"role": "user", "content": "x".repeat(1001)}]);
    assert_eq!(c.post("/v1/turns", big_context).status, 413);
    assert_eq!(rows(&bridge, "turns"), 0);
}

#[test]
fn unknown_fields_are_ignored() {
    let bridge = Bridge::start("");
    let mut body = turn("t1");
    body["future_field"] = json!({"anything": [1, 2, 3]});
    assert_eq!(bridge.client().post("/v1/turns", body).status, 201);
}

#[test]
fn ratings_answer_with_counts_and_replace_the_same_raters_earlier_rating() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    c.post("/v1/turns", turn("t1"));
    let r = c.post("/v1/ratings", rate("e1", "t1", "42", json!(1.0)));
    assert_eq!(r.status, 200, "{:?}", r.json());
    let body = r.json();
    assert_eq!(body["turn_id"], "t1");
    assert_eq!(body["value"], 1.0);
    assert!(body["rating_id"].is_number());
    assert_eq!(body["counts"], json!({"good": 1, "bad": 0, "untrained": 1}));
    let r = c.post("/v1/ratings", rate("e2", "t1", "42", json!(-0.5)));
    assert_eq!(
        r.json()["counts"],
        json!({"good": 0, "bad": 1, "untrained": 1})
    );
}

#[test]
fn rating_errors_come_in_the_documented_order() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    c.post("/v1/turns", turn("t1"));
    let cases = [
        (
            json!({"event_id": "a", "rater": "42", "value": 1, "source": "command"}),
            400,
            "invalid_request",
        ),
        (rate("b", "t1", "42", json!(true)), 400, "invalid_request"),
        (rate("c", "t1", "42", json!("1")), 400, "invalid_request"),
        (rate("d", "nope", "42", json!(1.5)), 422, "invalid_value"),
        (rate("e", "nope", "42", json!(1)), 404, "turn_not_found"),
        (rate("f", "t1", "99", json!(1)), 403, "not_owner"),
    ];
    for (body, status, code) in cases {
        let r = c.post("/v1/ratings", body.clone());
        assert_eq!((r.status, r.code().as_str()), (status, code), "{body}");
    }
    assert_eq!(rows(&bridge, "ratings"), 0);
}

#[test]
fn configured_raters_may_rate_any_turn() {
    let bridge = Bridge::start("raters = [\"admin-7\"]\n");
    let c = bridge.client();
    let mut group = turn("t1");
    group["group"] = json!(true);
    c.post("/v1/turns", group);
    assert_eq!(
        c.post("/v1/ratings", rate("e1", "t1", "admin-7", json!(-1)))
            .status,
        200
    );
    assert_eq!(
        c.post("/v1/ratings", rate("e2", "t1", "someone", json!(-1)))
            .status,
        403
    );
}

#[test]
fn message_targets_match_any_chunk_in_the_same_chat_and_latest_breaks_ties_by_capture_order() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    c.post("/v1/turns", turn("t1"));
    let hit = json!({"event_id": "m1", "target": {"channel": "telegram", "chat": "42", "message_id": "501"},
                     "rater": "42", "value": 1, "source": "reaction", "emoji": "👍"});
    assert_eq!(c.post("/v1/ratings", hit).json()["turn_id"], "t1");
    let other_chat = json!({"event_id": "m2", "target": {"channel": "telegram", "chat": "43", "message_id": "502"},
                            "rater": "42", "value": 1, "source": "reaction"});
    assert_eq!(c.post("/v1/ratings", other_chat).status, 404);
    // Two turns with the same `at`: the one captured last is the latest.
    let mut t2 = turn("t2");
    t2["message_ids"] = json!([]);
    c.post("/v1/turns", t2);
    let latest = json!({"event_id": "l1", "target": {"latest": {"session": "agent:main:main", "sender": "42"}},
                        "rater": "42", "value": -1, "source": "command"});
    assert_eq!(c.post("/v1/ratings", latest).json()["turn_id"], "t2");
}

#[test]
fn a_repeated_event_id_returns_the_first_answer_and_stores_nothing_new() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    c.post("/v1/turns", turn("t1"));
    let first = c.post("/v1/ratings", rate("same", "t1", "42", json!(1)));
    let again = c.post("/v1/ratings", rate("same", "t1", "42", json!(-1)));
    assert_eq!(first.body, again.body);
    assert_eq!(rows(&bridge, "ratings"), 1);
}

#[test]
fn deleting_a_rating_takes_it_back_once() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    c.post("/v1/turns", turn("t1"));
    c.post("/v1/ratings", rate("e1", "t1", "42", json!(1)));
    let del = |event: &str| {
        c.call(
            "DELETE",
            "/v1/ratings",
            &json!({"event_id": event, "target": {"turn_id": "t1"}, "rater": "42"}),
        )
    };
    assert_eq!(del("d1").json()["removed"], true);
    assert_eq!(del("d2").json()["removed"], false);
    let r = c.call(
        "DELETE",
        "/v1/ratings",
        &json!({"event_id": "d3", "target": {"turn_id": "zz"}, "rater": "42"}),
    );
    assert_eq!((r.status, r.code().as_str()), (404, "turn_not_found"));
    let status = c.call("GET", "/v1/status", &Value::Null).json();
    assert_eq!(status["counts"]["good"], 0);
}

#[test]
fn missing_or_malformed_auth_headers_are_refused_and_nothing_is_stored() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    let body = turn("t1").to_string();
    let p = c.prepare("POST", "/v1/turns", body.as_bytes());
    for drop in 0..4 {
        let mut bad = p.clone();
        bad.headers.remove(drop + 1);
        let r = c.send(&bad);
        assert_eq!((r.status, r.code().as_str()), (401, "missing_auth"));
    }
    let mut upper = p.clone();
    upper.headers[1].1 = upper.headers[1].1.to_uppercase();
    upper.headers[1].1.replace_range(0..1, "A");
    assert_eq!(c.send(&upper).code(), "missing_auth");
    let short = c.prepare_at("POST", "/v1/turns", body.as_bytes(), unix_now(), "short");
    assert_eq!(c.send(&short).code(), "missing_auth");
    assert_eq!(rows(&bridge, "turns"), 0);
}

#[test]
fn a_wrong_key_is_unknown_and_a_tampered_body_fails_the_signature() {
    let bridge = Bridge::start("");
    let stranger = Signed::new(bridge.addr(), &"ab".repeat(32));
    let r =
        stranger.send(&stranger.prepare("POST", "/v1/turns", turn("t1").to_string().as_bytes()));
    assert_eq!((r.status, r.code().as_str()), (401, "unknown_key"));
    let c = bridge.client();
    let mut p = c.prepare("POST", "/v1/turns", turn("t1").to_string().as_bytes());
    p.body = turn("t1")
        .to_string()
        .replace("what is 2+2?", "what is 2+3?")
        .into_bytes();
    let r = c.send(&p);
    assert_eq!((r.status, r.code().as_str()), (401, "bad_signature"));
    // The refusal is still signed, so the client can tell the real bridge answered.
    assert!(c.response_verifies(&p.nonce, &r));
    // Signing another path than the one sent also fails.
    let mut moved = c.prepare("POST", "/v1/rollouts", turn("t1").to_string().as_bytes());
    moved.path = "/v1/turns".into();
    assert_eq!(c.send(&moved).code(), "bad_signature");
    assert_eq!(rows(&bridge, "turns"), 0);
}

#[test]
fn stale_and_future_timestamps_are_refused() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    let body = turn("t1").to_string();
    for skew in [-400, 400] {
        let p = c.prepare_at(
            "POST",
            "/v1/turns",
            body.as_bytes(),
            unix_now() + skew,
            &fresh_nonce(),
        );
        let r = c.send(&p);
        assert_eq!((r.status, r.code().as_str()), (401, "stale_timestamp"));
    }
    let within = c.prepare_at(
        "POST",
        "/v1/turns",
        body.as_bytes(),
        unix_now() - 200,
        &fresh_nonce(),
    );
    assert_eq!(c.send(&within).status, 201);
}

#[test]
fn a_replayed_request_is_refused_even_after_a_restart() {
    let mut bridge = Bridge::start("");
    let c = bridge.client();
    let p = c.prepare("POST", "/v1/turns", turn("t1").to_string().as_bytes());
    assert_eq!(c.send(&p).status, 201);
    let r = c.send(&p);
    assert_eq!((r.status, r.code().as_str()), (401, "replayed_nonce"));
    bridge.restart();
    let r = c.send(&p);
    assert_eq!((r.status, r.code().as_str()), (401, "replayed_nonce"));
    // A refused request does not use up its nonce.
    let nonce = fresh_nonce();
    let mut tampered = c.prepare_at(
        "POST",
        "/v1/turns",
        turn("t2").to_string().as_bytes(),
        unix_now(),
        &nonce,
    );
    tampered.body = turn("t3").to_string().into_bytes();
    assert_eq!(c.send(&tampered).code(), "bad_signature");
    let honest = c.prepare_at(
        "POST",
        "/v1/turns",
        turn("t2").to_string().as_bytes(),
        unix_now(),
        &nonce,
    );
    assert_eq!(c.send(&honest).status, 201);
}

#[test]
fn an_oversize_body_is_refused_before_it_is_read_whether_declared_or_chunked() {
    let bridge = Bridge::start("max_body_bytes = 4096\n");
    let c = bridge.client();
    let mut big = turn("t1");
    big["response"] = json!("x".repeat(10_000));
    let bytes = big.to_string().into_bytes();
    let p = c.prepare("POST", "/v1/turns", &bytes);
    let r = c.send(&p);
    assert_eq!((r.status, r.code().as_str()), (413, "body_too_large"));
    assert!(c.response_verifies(&p.nonce, &r), "413 is signed too");
    // No auth at all: the size still decides first.
    let r = http::send(bridge.addr(), "POST", "/v1/turns", &[], Body::Fixed(&bytes)).unwrap();
    assert_eq!(r.code(), "body_too_large");
    let p = c.prepare("POST", "/v1/turns", &bytes);
    let r = http::send(
        bridge.addr(),
        "POST",
        "/v1/turns",
        &p.headers,
        Body::Chunked(&bytes, 1000),
    )
    .unwrap();
    assert_eq!((r.status, r.code().as_str()), (413, "body_too_large"));
    assert_eq!(rows(&bridge, "turns"), 0);
}

#[test]
fn malformed_json_is_invalid_and_still_uses_up_the_nonce() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    let p = c.prepare("POST", "/v1/ratings", b"{not json");
    let r = c.send(&p);
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"));
    assert_eq!(c.send(&p).code(), "replayed_nonce");
}

#[test]
fn an_impostor_cannot_produce_a_valid_response_signature() {
    // The client's side of mutual authentication: a response signed with another key, or not
    // signed at all, does not verify.
    let bridge = Bridge::start("");
    let c = bridge.client();
    let p = c.prepare("GET", "/v1/status", b"");
    let r = c.send(&p);
    assert!(c.response_verifies(&p.nonce, &r));
    let stranger = Signed::new(bridge.addr(), &"cd".repeat(32));
    assert!(!stranger.response_verifies(&p.nonce, &r));
    assert!(!c.response_verifies("another-nonce-123456", &r));
}

#[test]
fn status_reports_counts_trend_adapter_and_training() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    c.post("/v1/turns", turn("t1"));
    c.post("/v1/ratings", rate("e1", "t1", "42", json!(1)));
    let s = c.call("GET", "/v1/status", &Value::Null).json();
    assert!(s["version"].is_string());
    assert_eq!(
        s["counts"],
        json!({"good": 1, "bad": 0, "untrained": 1, "turns": 1})
    );
    assert_eq!(s["reward_trend"], json!([1.0]));
    assert!(s["adapter"].is_null());
    assert_eq!(s["training"]["state"], "idle");
}

#[test]
fn a_run_of_bad_ratings_without_a_reason_brings_advice_to_give_one() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    let bad = |i: usize, reason: Option<&str>| {
        let id = format!("t{i}");
        c.post("/v1/turns", turn(&id));
        let mut r = rate(&format!("e{i}"), &id, "42", json!(-1));
        if let Some(reason) = reason {
            r["reason"] = json!(reason);
        }
        assert_eq!(c.post("/v1/ratings", r).status, 200);
    };
    let advice = || c.call("GET", "/v1/status", &Value::Null).json()["advice"].clone();
    for i in 0..7 {
        bad(i, None);
    }
    assert!(advice().is_null(), "seven are not yet a run");
    // A reason that cannot serve as a hint counts as none.
    bad(7, Some("/rl bad"));
    let text = advice();
    assert!(
        text.as_str().unwrap().contains("/rl bad too long"),
        "{text}"
    );
    let chat = c.post(
        "/v1/commands",
        json!({"event_id": "c1", "name": "status", "sender": "42", "session": "agent:main:main", "args": []}),
    );
    assert!(
        chat.json()["text"]
            .as_str()
            .unwrap()
            .contains("with no reason")
    );
    bad(8, Some("too long"));
    assert!(advice().is_null(), "a reason ends the advice");
}

#[test]
fn commands_undo_and_status_are_open_to_everyone() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    c.post("/v1/turns", turn("t1"));
    c.post("/v1/ratings", rate("e1", "t1", "42", json!(-1)));
    let cmd = |event: &str, name: &str| {
        c.post("/v1/commands", json!({"event_id": event, "name": name, "sender": "42", "session": "agent:main:main", "args": []}))
    };
    let r = cmd("c1", "status");
    assert_eq!(r.status, 200);
    assert!(r.json()["text"].as_str().unwrap().contains("👎 1"));
    let r = cmd("c2", "undo");
    assert!(
        r.json()["text"].as_str().unwrap().starts_with("Took back"),
        "{:?}",
        r.json()
    );
    assert!(
        cmd("c3", "undo").json()["text"]
            .as_str()
            .unwrap()
            .starts_with("Nothing to undo")
    );
    let r = cmd("c4", "dance");
    assert_eq!((r.status, r.code().as_str()), (400, "unknown_command"));
}

#[test]
fn a_status_command_read_after_its_commit_is_remembered_for_its_event_id() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    c.post("/v1/turns", turn("t1"));
    c.post("/v1/ratings", rate("e1", "t1", "42", json!(1)));
    let status = || {
        c.post(
            "/v1/commands",
            json!({"event_id": "s1", "name": "status", "sender": "42", "session": "agent:main:main", "args": []}),
        )
    };
    let first = status();
    assert_eq!(first.status, 200, "{:?}", first.json());
    assert!(first.json()["text"].as_str().unwrap().contains("👍 1"));
    assert_eq!(first.json()["counts"]["good"], 1);
    c.post("/v1/turns", turn("t2"));
    c.post("/v1/ratings", rate("e2", "t2", "42", json!(1)));
    // The retry gets the first answer, not a fresh report.
    assert_eq!(status().json(), first.json());
    assert_eq!(rows(&bridge, "audit"), 1);
    let live = c.call("GET", "/v1/status", &Value::Null).json();
    assert_eq!(live["counts"]["good"], 2);
}

#[test]
fn admin_commands_need_the_allowlist_and_are_rate_limited_per_sender() {
    let bridge = Bridge::start("admins = [\"42\"]\nadmin_per_minute = 3\n");
    let c = bridge.client();
    let cmd = |event: &str, sender: &str, name: &str| {
        c.post(
            "/v1/commands",
            json!({"event_id": event, "name": name, "sender": sender, "session": "s", "args": []}),
        )
    };
    let r = cmd("x1", "99", "pause");
    assert_eq!((r.status, r.code().as_str()), (403, "not_admin"));
    assert_eq!(cmd("a1", "42", "pause").status, 200);
    // A repeated event id replays its answer and does not count against the limit.
    assert_eq!(cmd("a1", "42", "pause").status, 200);
    assert_eq!(cmd("a2", "42", "resume").status, 200);
    assert_eq!(cmd("a3", "42", "pause").status, 200);
    let r = cmd("a4", "42", "resume");
    assert_eq!((r.status, r.code().as_str()), (429, "rate_limited"));
    let s = c.call("GET", "/v1/status", &Value::Null).json();
    assert_eq!(s["training"]["state"], "paused");
}

#[test]
fn rollouts_are_turns_with_measurements() {
    let bridge = Bridge::start("");
    let c = bridge.client();
    let rollout = json!({"rollout_id": "r1", "worker": "claude-code@laptop", "prompt": "fix the bug",
                         "response": "done", "duration_s": 45.2, "tokens": 3421, "errors": 0, "sender": "me"});
    assert_eq!(c.post("/v1/rollouts", rollout.clone()).status, 201);
    assert_eq!(c.post("/v1/rollouts", rollout.clone()).status, 200);
    let mut changed = rollout.clone();
    changed["errors"] = json!(2);
    assert_eq!(c.post("/v1/rollouts", changed).code(), "turn_conflict");
    let mut negative = rollout;
    negative["rollout_id"] = json!("r2");
    negative["tokens"] = json!(-1);
    assert_eq!(c.post("/v1/rollouts", negative).code(), "invalid_request");
    assert_eq!(
        c.post("/v1/ratings", rate("e1", "r1", "me", json!(0.5)))
            .status,
        200
    );
}

#[test]
fn a_rotated_key_is_picked_up_without_a_restart_and_the_previous_stays_valid() {
    let bridge = Bridge::start("");
    let old = bridge.client();
    let out = std::process::Command::new(rlclaw_tests::bridge::rlclaw_bin())
        .args(["key", "rotate", "--data-dir"])
        .arg(bridge.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success());
    let new_hex = std::fs::read_to_string(bridge.data_dir().join("key")).unwrap();
    let new = Signed::new(bridge.addr(), new_hex.trim());
    assert_ne!(old.key_id, new.key_id);
    assert_eq!(old.post("/v1/turns", turn("t1")).status, 201);
    assert_eq!(new.post("/v1/turns", turn("t2")).status, 201);
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let mut bridge = Bridge::start("");
    bridge.client().post("/v1/turns", turn("t1"));
    let status = bridge
        .terminate(Duration::from_secs(10))
        .expect("exits within 10 s");
    assert!(status.success(), "{status}");
}

#[test]
fn serve_refuses_a_non_loopback_address_and_a_malformed_config() {
    let bin = rlclaw_tests::bridge::rlclaw_bin();
    let dir = std::env::temp_dir().join(format!("rlclaw-cfg-{}", std::process::id()));
    let out = std::process::Command::new(&bin)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    std::fs::write(
        dir.join("config.toml"),
        "admins = [\"1\"]\nmax_body_bytes = \"big\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
