//! Nothing acknowledged is ever lost: kill -9 the bridge under a stream of ratings, restart it,
//! and every rating it answered 200 to is in the database; the same while another process (the
//! `sqlite3` shell) reads the database every 100 ms.

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rlclaw_tests::bridge::{Bridge, Signed};
use serde_json::json;

const WRITERS: usize = 8;
const TURNS_PER_WRITER: usize = 4;

fn capture_turns(c: &Signed) {
    for w in 0..WRITERS {
        for t in 0..TURNS_PER_WRITER {
            let r = c.post(
                "/v1/turns",
                json!({"turn_id": format!("t{w}-{t}"), "session": "s", "channel": "telegram",
                       "sender": format!("u{w}"), "prompt": "p", "response": "r"}),
            );
            assert_eq!(r.status, 201);
        }
    }
}

/// Ratings from `WRITERS` threads until `stop`; returns the acknowledged event ids and the
/// number of answers that were neither 200 nor a refused connection.
fn rate_until(
    c: &Signed,
    stop: Arc<AtomicBool>,
) -> (
    std::thread::JoinHandle<()>,
    Arc<Mutex<Vec<String>>>,
    Arc<AtomicU64>,
) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let bad = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let (c, stop, acked, bad) = (c.clone(), stop.clone(), acked.clone(), bad.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let event = format!("e{w}-{i}");
                let body = json!({"event_id": event, "target": {"turn_id": format!("t{w}-{}", i % TURNS_PER_WRITER)},
                                  "rater": format!("u{w}"), "value": if i.is_multiple_of(2) { 1.0 } else { -1.0 },
                                  "source": "command"});
                let p = c.prepare("POST", "/v1/ratings", body.to_string().as_bytes());
                match rlclaw_tests::http::send(
                    c.addr,
                    "POST",
                    "/v1/ratings",
                    &p.headers,
                    rlclaw_tests::http::Body::Fixed(&p.body),
                ) {
                    Ok(r) if r.status == 200 => acked.lock().unwrap().push(event),
                    Ok(_) => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    // The bridge was killed mid-request: not acknowledged, nothing promised.
                    Err(_) => {}
                }
                i += 1;
            }
        }));
    }
    let joiner = std::thread::spawn(move || {
        for t in threads {
            let _ = t.join();
        }
    });
    (joiner, acked, bad)
}

fn stored_event_ids(bridge: &Bridge) -> HashSet<String> {
    let conn = rusqlite::Connection::open(bridge.db_path()).expect("db opens");
    let mut stmt = conn.prepare("SELECT event_id FROM ratings").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn kill_under_load_and_check(bridge: &mut Bridge, load_for: Duration) -> usize {
    let c = bridge.client();
    let stop = Arc::new(AtomicBool::new(false));
    let (joiner, acked, bad) = rate_until(&c, stop.clone());
    std::thread::sleep(load_for);
    bridge.kill9();
    stop.store(true, Ordering::Relaxed);
    joiner.join().unwrap();
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "the bridge answered with errors under load"
    );
    bridge.restart();
    let stored = stored_event_ids(bridge);
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "too few ratings acknowledged to mean anything: {}",
        acked.len()
    );
    let lost: Vec<&String> = acked.iter().filter(|e| !stored.contains(*e)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged ratings were lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // The restarted bridge is consistent with its database.
    let status = bridge
        .client()
        .call("GET", "/v1/status", &serde_json::Value::Null)
        .json();
    assert_eq!(
        status["counts"]["turns"],
        (WRITERS * TURNS_PER_WRITER) as u64
    );
    acked.len()
}

#[test]
fn every_acknowledged_rating_survives_kill_9() {
    let mut bridge = Bridge::start("");
    capture_turns(&bridge.client());
    for round in 0..2 {
        let n = kill_under_load_and_check(&mut bridge, Duration::from_millis(1500));
        eprintln!("round {round}: {n} acknowledged ratings, none lost");
    }
}

#[test]
fn an_outside_reader_every_100_ms_causes_no_errors_and_no_loss() {
    let mut bridge = Bridge::start("");
    capture_turns(&bridge.client());
    let db = bridge.db_path();
    let stop = Arc::new(AtomicBool::new(false));
    let reader_stop = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut reads = 0;
        let mut failures = Vec::new();
        let started = Instant::now();
        while !reader_stop.load(Ordering::Relaxed) {
            let out = Command::new("sqlite3")
                .arg("-cmd")
                .arg(".timeout 5000")
                .arg(&db)
                .arg("SELECT count(*) FROM ratings;")
                .output()
                .expect("the sqlite3 shell is installed (apt-get install sqlite3)");
            reads += 1;
            if !out.status.success() || !out.stderr.is_empty() {
                failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            std::thread::sleep(Duration::from_millis(100));
            assert!(started.elapsed() < Duration::from_secs(60));
        }
        (reads, failures)
    });
    let n = kill_under_load_and_check(&mut bridge, Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (reads, failures) = reader.join().unwrap();
    assert!(reads >= 10, "the reader ran {reads} times");
    assert!(
        failures.is_empty(),
        "the outside reader failed: {failures:?}"
    );
    eprintln!("{n} acknowledged ratings, {reads} outside reads, no errors");
}

#[test]
fn a_stopped_bridge_leaves_every_rating_in_the_database_and_no_wal() {
    let mut bridge = Bridge::start("");
    let c = bridge.client();
    capture_turns(&c);
    let db = bridge.db_path();
    let wal = std::path::PathBuf::from(format!("{}-wal", db.display()));
    for i in 0..400 {
        let r = c.post(
            "/v1/ratings",
            json!({"event_id": format!("w{i}"), "target": {"turn_id": format!("t{}-0", i % WRITERS)},
                   "rater": format!("u{}", i % WRITERS), "value": 1.0, "source": "command"}),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let status = bridge.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the bridge did not stop cleanly: {status:?}"
    );
    let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        wal_bytes, 0,
        "a stopped bridge left {wal_bytes} bytes of WAL"
    );
    let stored = stored_event_ids(&bridge);
    assert_eq!(stored.iter().filter(|e| e.starts_with('w')).count(), 400);
}
