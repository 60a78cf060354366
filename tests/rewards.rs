//! Rewards from more than a thumb, against the real bridge: each source kept on its own (the
//! person's ratings, the automatic score from a rollout's measurements, an LLM judge), their
//! blend with the person deciding the sign, the judge against a fake OpenAI-compatible server
//! on loopback (good JSON, malformed JSON, a timeout, the hourly budget), the scheduler counting
//! turns with machine rewards, and what status and history show.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rlclaw_tests::bridge::{Bridge, Signed, rlclaw_bin};
use rlclaw_tests::cli::{ok_json, rlclaw, tiny_model};
use rlclaw_trainer::is_held_out;
use serde_json::{Value, json};

// ---- helpers ----

/// `rlclaw history --json`, one object per turn id.
fn history(dir: &Path) -> Vec<Value> {
    let out = rlclaw(dir, &["history", "--json", "-n", "100"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn turn_in<'a>(rows: &'a [Value], id: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["turn_id"] == id)
        .unwrap_or_else(|| panic!("{id} is not in history: {rows:?}"))
}

fn close(v: &Value, expected: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - expected).abs() < 1e-3)
}

/// Ids that the evaluation gate does not hold out, so they are trained on and judged.
fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|id| !is_held_out(id))
        .take(n)
        .collect()
}

fn rollout(c: &Signed, id: &str, worker: &str, measures: Value) -> Value {
    let mut body = json!({"rollout_id": id, "worker": worker, "sender": "42",
                          "prompt": format!("task {id}"), "response": format!("done {id}")});
    for (k, v) in measures.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = c.post("/v1/rollouts", body);
    assert!(r.status == 201 || r.status == 200, "{:?}", r.json());
    r.json()
}

fn capture(c: &Signed, id: &str) {
    let r = c.post(
        "/v1/turns",
        json!({"turn_id": id, "session": "s", "channel": "telegram", "sender": "42",
               "prompt": format!("question {id}"), "response": format!("answer {id}")}),
    );
    assert_eq!(r.status, 201);
}

fn rate(c: &Signed, id: &str, value: f64) {
    let r = c.post(
        "/v1/ratings",
        json!({"event_id": format!("e-{id}"), "target": {"turn_id": id}, "rater": "42",
               "value": value, "source": "command"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.json());
}

fn wait_for(c: &Signed, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c.status();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "waited for {what}: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn judge_scores(db: &Path) -> Vec<(String, f64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT t.turn_id, s.score FROM turn_scores s JOIN turns t ON t.seq = s.turn_seq
             WHERE s.source = 'judge' ORDER BY t.seq",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The turns the judge was asked about, in the order it asked.
fn judged_order(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT t.turn_id FROM judge_calls j JOIN turns t ON t.seq = j.turn_seq ORDER BY j.id",
        )
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

// ---- a fake OpenAI-compatible judge on loopback ----

#[derive(Clone, Copy)]
enum Answer {
    /// A chat completion whose content is this text.
    Content(&'static str),
    /// No answer for this long, then a good one.
    Slow(Duration),
}

const GOOD: &str = r#"{"conciseness": 0.9, "correctness": 0.6, "helpfulness": 0.3}"#;

struct FakeJudge {
    addr: SocketAddr,
    /// The request bodies it received.
    requests: Arc<Mutex<Vec<Value>>>,
}

impl FakeJudge {
    fn start(answer: Answer) -> FakeJudge {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || serve_one(stream, answer, &seen));
            }
        });
        FakeJudge { addr, requests }
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "[training]\nauto_after = 0\n\n[rewards.judge]\nurl = \"http://{}/v1\"\nmodel = \"grader\"\n{extra}\n",
            self.addr
        )
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_one(stream: TcpStream, answer: Answer, seen: &Mutex<Vec<Value>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (mut line, mut length) = (String::new(), 0usize);
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    seen.lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    let content = match answer {
        Answer::Content(text) => text,
        Answer::Slow(pause) => {
            std::thread::sleep(pause);
            GOOD
        }
    };
    let reply = json!({"id": "x", "object": "chat.completion",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop"}]})
    .to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
}

// ---- the automatic source, blending and the human's sign ----

#[test]
fn a_rollouts_automatic_reward_is_answered_kept_on_its_own_and_blended() {
    let bridge = Bridge::start("[training]\nauto_after = 0\n");
    let c = bridge.client();
    let id = &ids("ro", 1)[0];
    // The blog post's rollout: (1 - 45.2/300 + 1 - 3421/10000 + 0.5) / 2.5 = 0.80289.
    let answer = rollout(
        &c,
        id,
        "phone-aa",
        json!({"duration_s": 45.2, "tokens": 3421, "errors": 0}),
    );
    assert!(close(&answer["rewards"]["automatic"], 0.8029), "{answer}");
    // A retry answers the same and stores nothing twice.
    let again = rollout(
        &c,
        id,
        "phone-aa",
        json!({"duration_s": 45.2, "tokens": 3421, "errors": 0}),
    );
    assert_eq!(again, answer);

    let rows = history(bridge.data_dir());
    let row = turn_in(&rows, id);
    assert!(row["rewards"]["human"].is_null());
    assert!(close(&row["rewards"]["automatic"], 0.803), "{row}");
    // Automatic alone: 2 * 0.80289 - 1.
    assert!(close(&row["rewards"]["blended"], 0.606), "{row}");
    assert_eq!(row["worker"], "phone-aa");

    let s = c.status();
    assert_eq!(s["rewards"]["sources"]["automatic"]["turns"], 1, "{s}");
    assert_eq!(s["rewards"]["sources"]["human"]["turns"], 0);
    assert_eq!(
        s["since_last_run"]["to_train"], 1,
        "a machine reward waits to be trained"
    );
    assert_eq!(
        s["counts"]["untrained"], 0,
        "the ratings counts are the person's alone"
    );

    // `rlclaw emit` says the score too: tokens alone, 1 - 2500/10000.
    let out = Command::new(rlclaw_bin())
        .arg("--data-dir")
        .arg(bridge.data_dir())
        .args(["emit", "--worker", "w", "--prompt", "p", "--response", "r"])
        .args(["--tokens", "2500", "--rollout-id", &ids("emit", 1)[0]])
        .env_remove("RLCLAW_BRIDGE")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("(automatic reward 0.75 of 1)"),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_thumbs_down_is_never_trained_as_good_because_the_machines_liked_it() {
    let bridge = Bridge::start("[training]\nauto_after = 0\n");
    let c = bridge.client();
    let turn = ids("fast", 3);
    // Instant, no tokens, no errors: automatic 1.0, yet the person says 👎.
    rollout(
        &c,
        &turn[0],
        "build-bot@vm",
        json!({"duration_s": 0, "tokens": 0, "errors": 0}),
    );
    rate(&c, &turn[0], -1.0);
    // Slow, costly and failing: automatic 0.0, yet the person says 👍.
    rollout(
        &c,
        &turn[1],
        "build-bot@vm",
        json!({"duration_s": 900, "tokens": 50000, "errors": 2}),
    );
    rate(&c, &turn[1], 1.0);
    // Agreement strengthens: 👍 and automatic 1.0.
    rollout(
        &c,
        &turn[2],
        "laptop-ae",
        json!({"duration_s": 0, "tokens": 0, "errors": 0}),
    );
    rate(&c, &turn[2], 1.0);

    let rows = history(bridge.data_dir());
    // The machine's disagreeing word counts as neutral: -0.4 / (0.4 + 0.3).
    let down = &turn_in(&rows, &turn[0])["rewards"];
    assert!(close(&down["blended"], -0.5714), "{down}");
    assert!(close(&down["automatic"], 1.0) && close(&down["human"], -1.0));
    let up = &turn_in(&rows, &turn[1])["rewards"];
    assert!(close(&up["blended"], 0.5714), "{up}");
    let agreed = &turn_in(&rows, &turn[2])["rewards"];
    assert!(close(&agreed["blended"], 1.0), "{agreed}");

    // Status: per source and per worker.
    let s = c.status();
    let r = &s["rewards"];
    assert_eq!(r["sources"]["human"]["turns"], 3, "{r}");
    assert!(close(&r["sources"]["human"]["mean"], 0.333), "{r}");
    assert_eq!(r["sources"]["automatic"]["turns"], 3);
    assert!(close(&r["sources"]["automatic"]["mean"], 0.667), "{r}");
    assert_eq!(r["sources"]["blended"]["turns"], 3);
    let workers = r["workers"].as_array().unwrap();
    let vm = workers
        .iter()
        .find(|w| w["worker"] == "build-bot@vm")
        .expect("per worker");
    assert_eq!(vm["blended"]["turns"], 2);
    assert!(close(&vm["blended"]["mean"], 0.0), "{vm}");
    let ae = workers.iter().find(|w| w["worker"] == "laptop-ae").unwrap();
    assert!(close(&ae["automatic"]["mean"], 1.0), "{ae}");

    // The same figures in the chat's /rl status and the terminal's status.
    let chat = c.post(
        "/v1/commands",
        json!({"event_id": "st", "name": "status", "sender": "42", "session": "s", "args": []}),
    );
    let text = chat.json()["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("Rewards: human 3 (+0.33) · automatic 3 (0.67)"),
        "{text}"
    );
    assert!(text.contains("By worker: build-bot@vm 2"), "{text}");
    let out = rlclaw(bridge.data_dir(), &["status"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("rewards   human 3 (+0.33)"), "{printed}");
    assert!(printed.contains("laptop-ae"), "{printed}");
    assert!(printed.contains("judge     off"), "{printed}");
    let printed =
        String::from_utf8_lossy(&rlclaw(bridge.data_dir(), &["history"]).stdout).into_owned();
    assert!(
        printed.contains("human -1.00 · automatic 1.00 · judge — · blended -0.57"),
        "{printed}"
    );
}

#[test]
fn reward_settings_that_cannot_work_stop_serve_with_a_message_naming_them() {
    for (config, says) in [
        (
            "[rewards.weights]\nhuman = -1\n",
            "[rewards.weights] human must be a non-negative number",
        ),
        (
            "[rewards.automatic]\npreset = \"fastest\"\n",
            "preset must be \"agent-lightning\" or \"off\"",
        ),
        (
            "[rewards.judge]\nurl = \"ftp://x\"\n",
            "http:// or https://",
        ),
        ("[rewards]\nblend = 1\n", "unknown field `blend`"),
    ] {
        let dir = std::env::temp_dir().join(format!(
            "rlclaw-rewards-config-{}-{}",
            std::process::id(),
            says.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let out = Command::new(rlclaw_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{config} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{config}: {err}");
        assert!(!dir.join("rlclaw.db").exists(), "nothing was created");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

// ---- training on blended rewards ----

#[test]
fn turns_with_only_machine_rewards_count_toward_training_and_are_marked_trained() {
    let tmp = std::env::temp_dir().join(format!("rlclaw-rewards-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let model = tiny_model(&tmp);
    let bridge = Bridge::start(&format!(
        "admins = [\"42\"]\n[training]\nauto_after = 0\npreset = \"aggressive\"\nmodel = \"{}\"\n",
        model.display()
    ));
    let c = bridge.client();
    let turn = ids("m", 3);
    for (i, id) in turn.iter().enumerate() {
        rollout(
            &c,
            id,
            "cron@vm",
            json!({"duration_s": 10 * i, "tokens": 500, "errors": 0}),
        );
    }
    // A held-out rollout with only a machine score waits for nothing.
    let held = (0..)
        .map(|i| format!("h{i}"))
        .find(|id| is_held_out(id))
        .unwrap();
    rollout(&c, &held, "cron@vm", json!({"tokens": 10}));
    // A plain turn nobody rated has no reward at all.
    capture(&c, "plain");

    // The threshold the scheduler checks counts these turns, though nobody rated them.
    let s = c.status();
    assert_eq!(
        s["since_last_run"],
        json!({"ratings": 0, "to_train": 3, "held_out": 0}),
        "{s}"
    );
    let queued = c.post(
        "/v1/commands",
        json!({"event_id": "q", "name": "train", "sender": "42", "session": "s", "args": []}),
    );
    assert_eq!(
        queued.json()["text"],
        "Training queued on 3 turns with new rewards.",
        "{:?}",
        queued.json()
    );
    // The run the scheduler starts trains on them with their blended rewards.
    let s = wait_for(&c, "the queued run", |s| {
        s["training"]["last_run"]["outcome"] == "ok" && s["adapter"] == "v1"
    });
    assert_eq!(s["since_last_run"]["to_train"], 0, "{s}");
    let rows = history(bridge.data_dir());
    for id in &turn {
        assert!(
            turn_in(&rows, id)["trained_in_run"].is_number(),
            "{id} is marked trained"
        );
    }
    assert!(turn_in(&rows, &held)["trained_in_run"].is_null());

    // A person's rating on a trained turn is news: the turn waits again, with the human's sign.
    rate(&c, &turn[0], -1.0);
    let s = c.status();
    assert_eq!(
        s["since_last_run"],
        json!({"ratings": 1, "to_train": 1, "held_out": 0}),
        "{s}"
    );
    let outcome = ok_json(bridge.data_dir(), &["train", "--json"]);
    assert_eq!(outcome["samples"], 1, "{outcome}");
    assert_eq!(c.status()["since_last_run"]["to_train"], 0);
    let out = rlclaw(bridge.data_dir(), &["train"]);
    assert!(!out.status.success(), "nothing new is left");
    let _ = std::fs::remove_dir_all(&tmp);
}

// ---- the judge ----

#[test]
fn the_judge_scores_an_unrated_turn_in_the_background_and_status_says_text_stays_here() {
    let judge = FakeJudge::start(Answer::Content(GOOD));
    let bridge = Bridge::start(&judge.config(""));
    let c = bridge.client();
    let id = &ids("j", 1)[0];
    capture(&c, id);
    let s = wait_for(&c, "a judgement", |s| s["rewards"]["judge"]["judged"] == 1);
    let j = &s["rewards"]["judge"];
    assert_eq!(j["state"], "on", "{j}");
    assert_eq!(j["failures"]["total"], 0);
    assert!(
        j["text_goes_to"]
            .as_str()
            .unwrap()
            .starts_with("this machine only"),
        "{j}"
    );
    assert_eq!(j["calls_last_hour"], 1);
    // (0.9 + 0.6 + 0.3) / 3 = 0.6, kept on its own; alone it blends to 2 * 0.6 - 1.
    assert_eq!(judge_scores(&bridge.db_path()).len(), 1);
    assert!((judge_scores(&bridge.db_path())[0].1 - 0.6).abs() < 1e-9);
    let rows = history(bridge.data_dir());
    let row = &turn_in(&rows, id)["rewards"];
    assert!(
        close(&row["judge"], 0.6) && close(&row["blended"], 0.2),
        "{row}"
    );
    assert_eq!(s["since_last_run"]["to_train"], 1);

    // The judge was asked the strict-JSON question about this turn, with the model configured.
    let asked = judge.requests();
    assert_eq!(asked.len(), 1, "judged once: {asked:?}");
    assert_eq!(asked[0]["model"], "grader");
    let text = asked[0]["messages"].to_string();
    assert!(text.contains(&format!("question {id}")) && text.contains(&format!("answer {id}")));
    assert!(text.contains("conciseness") && text.contains("JSON"));
}

#[test]
fn a_malformed_judgement_stores_no_score_and_is_counted() {
    let judge = FakeJudge::start(Answer::Content("This reply is great, 10/10!"));
    let bridge = Bridge::start(&judge.config(""));
    let c = bridge.client();
    capture(&c, &ids("bad", 1)[0]);
    let s = wait_for(&c, "a failure", |s| {
        s["rewards"]["judge"]["failures"]["total"] == 1
    });
    assert_eq!(s["rewards"]["judge"]["failures"]["malformed"], 1, "{s}");
    assert_eq!(s["rewards"]["judge"]["judged"], 0);
    assert!(judge_scores(&bridge.db_path()).is_empty());
    assert_eq!(
        s["since_last_run"]["to_train"], 0,
        "no reward, nothing to train"
    );
    // A turn is judged once: the same model would answer the same way.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(judge.requests().len(), 1);
    let out = rlclaw(bridge.data_dir(), &["status"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("0 judged, 1 failed (1 malformed)"),
        "{printed}"
    );
}

#[test]
fn a_judge_that_does_not_answer_in_time_is_counted_as_a_timeout() {
    let judge = FakeJudge::start(Answer::Slow(Duration::from_secs(5)));
    let bridge = Bridge::start(&judge.config("timeout_s = 0.5"));
    let c = bridge.client();
    capture(&c, &ids("slow", 1)[0]);
    let s = wait_for(&c, "a timeout", |s| {
        s["rewards"]["judge"]["failures"]["timeout"] == 1
    });
    assert_eq!(s["rewards"]["judge"]["judged"], 0, "{s}");
    assert!(judge_scores(&bridge.db_path()).is_empty());
    // Ingest went on meanwhile: the bridge answers at once.
    let started = Instant::now();
    capture(&c, "during");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_judge_stops_when_the_hourly_budget_is_spent() {
    let judge = FakeJudge::start(Answer::Content(GOOD));
    let bridge = Bridge::start(&judge.config("calls_per_hour = 2"));
    let c = bridge.client();
    for id in ids("b", 4) {
        capture(&c, &id);
    }
    wait_for(&c, "two judgements", |s| {
        s["rewards"]["judge"]["judged"] == 2
    });
    std::thread::sleep(Duration::from_millis(1500));
    let s = c.status();
    let j = &s["rewards"]["judge"];
    assert_eq!(j["judged"], 2, "{j}");
    assert_eq!(j["calls_last_hour"], 2);
    assert_eq!(j["state"], "waiting: this hour's budget is spent");
    assert_eq!(judge.requests().len(), 2);
    assert_eq!(judge_scores(&bridge.db_path()).len(), 2);
}

#[test]
fn the_judge_picks_unrated_turns_first_then_where_automatic_and_human_disagree() {
    let judge = FakeJudge::start(Answer::Content(GOOD));
    // The turns are in place before the judge starts looking.
    let mut bridge = Bridge::start("[training]\nauto_after = 0\n");
    let c = bridge.client();
    let turn = ids("p", 3);
    let fast = json!({"duration_s": 0, "tokens": 0, "errors": 0});
    let slow = json!({"duration_s": 900, "tokens": 50000, "errors": 3});
    // Rated 👍 and fast: the person and the measurements agree; nothing to ask the judge.
    rollout(&c, &turn[0], "w", fast.clone());
    rate(&c, &turn[0], 1.0);
    // Rated 👍 but slow and failing: they disagree.
    rollout(&c, &turn[1], "w", slow);
    rate(&c, &turn[1], 1.0);
    // Nobody rated this one.
    rollout(&c, &turn[2], "w", fast);
    std::fs::write(
        bridge.data_dir().join("config.toml"),
        judge.config("calls_per_hour = 10"),
    )
    .unwrap();
    bridge.restart();
    let c = bridge.client();
    wait_for(&c, "two judgements", |s| {
        s["rewards"]["judge"]["judged"] == 2
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        judged_order(&bridge.db_path()),
        [turn[2].clone(), turn[1].clone()],
        "unrated first, then the disagreement; never the agreement"
    );
    // The judge liked the 👍 slow turn's reply; the sign stays the person's either way.
    let rows = history(bridge.data_dir());
    let r = &turn_in(&rows, &turn[1])["rewards"];
    // 0.4 * 1 + 0.3 * 0 (automatic disagrees: neutral) + 0.3 * (2 * 0.6 - 1), over 1.0.
    assert!(close(&r["blended"], 0.46), "{r}");
}

#[test]
fn status_says_when_turn_text_leaves_the_machine_for_a_remote_judge() {
    // 192.0.2.1 is a documentation address: nothing answers, nothing is sent.
    let bridge =
        Bridge::start("[rewards.judge]\nurl = \"http://192.0.2.1:9/v1\"\ntimeout_s = 0.5\n");
    let s = ok_json(bridge.data_dir(), &["status", "--json"]);
    let j = &s["rewards"]["judge"];
    assert_eq!(
        j["text_goes_to"],
        "192.0.2.1:9: the prompts and replies the judge scores leave this machine",
        "{j}"
    );
    let local = Bridge::start("[rewards.judge]\nurl = \"local\"\n");
    let s = ok_json(local.data_dir(), &["status", "--json"]);
    let state = s["rewards"]["judge"]["state"].as_str().unwrap();
    assert!(state.contains("the model endpoint is off"), "{state}");
}
