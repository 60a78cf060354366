//! `rlclaw bench learn` end to end at a tiny size: a scripted rater's ratings go through the
//! signed protocol to a real daemon, its scheduler trains at the threshold, the gate decides,
//! the model endpoint reloads, and the held-out rate, margin, perplexity and plot come out.
//! (The full run is a benchmark; see BENCHMARKS.md.)

use std::path::Path;
use std::process::Command;

use rlclaw_tests::bridge::rlclaw_bin;

/// One round of four ratings, two held-out prompts: the whole loop at its smallest.
const TINY: [&str; 6] = [
    "--rounds",
    "1",
    "--round-size",
    "4",
    "--heldout-prompts",
    "2",
];

/// `rlclaw bench learn --json` into `out` on `model`, with the length rater `under:20` and `arm`.
fn learn_under_20(out: &Path, model: &Path, arm: &str) -> Command {
    let mut cmd = Command::new(rlclaw_bin());
    cmd.args(["bench", "learn", "--json", "--out"])
        .arg(out)
        .arg("--model")
        .arg(model)
        .args(["--preset-rater", "under:20", "--arms", arm]);
    cmd
}

#[test]
fn a_tiny_learning_run_goes_through_the_whole_loop_and_draws_its_plot() {
    let model = rlclaw_tests::model::smollm2();
    let out = std::env::temp_dir().join(format!("rlclaw-bench-learn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = learn_under_20(&out, &model, "hints")
        .args(TINY)
        .args(["--samples", "1", "--max-tokens", "12", "--seed", "3"])
        .args(["--learning-rate", "2e-4", "--preset", "careful"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let arm = &report["results"][0];
    assert_eq!(arm["arm"], "hints");
    assert_eq!(arm["rater"], "under:20");
    let points = arm["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "the base and one round: {arm}");
    // The learning rate asked for is the daemon's, and the report says so.
    assert_eq!(report["learning_rate"], 2e-4);
    let config = std::fs::read_to_string(out.join("under-20-hints").join("config.toml")).unwrap();
    assert!(config.contains("learning_rate = 2e-4"), "{config}");
    assert_eq!(report["preset"], "careful");
    assert!(config.contains("preset = \"careful\""), "{config}");
    // Four trainable ratings, plus any held-out turns the round drew.
    assert!(points[1]["ratings"].as_u64().unwrap() >= 4);
    assert_eq!(points[1]["runs"], 1, "the scheduler trained once: {arm}");
    for p in points {
        let rate = p["rate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&rate));
        assert!(p["neutral_perplexity"].as_f64().unwrap() > 1.0);
        assert!(p["neutral_kl"].as_f64().unwrap() >= 0.0);
    }
    assert_eq!(points[0]["neutral_kl"], 0.0, "the base against itself");
    // What serves after the round is what the gate decided (a version, or the base if held).
    let serving = points[1]["serving"].as_str();
    let held_back = points[1]["held_back"].as_u64().unwrap();
    assert!(
        serving == Some("v1") || (serving.is_none() && held_back == 1),
        "{arm}"
    );
    assert!(points[1]["phases"]["training"].as_f64().unwrap() > 0.0);
    // Each round's figures are on disk as the run goes (a long run that stops keeps them).
    let saved = std::fs::read_to_string(out.join("under-20-hints").join("points.json")).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(&saved, &arm["points"]);
    let plot = report["plots"][0].as_str().unwrap();
    let svg = std::fs::read_to_string(plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("hints"));
    assert!(out.join("results.json").exists());

    // Arms run as separate processes are reported together from their points.json.
    let again = Command::new(rlclaw_bin())
        .args(["bench", "learn", "--json", "--from-points", "--out"])
        .arg(&out)
        .args(["--preset-rater", "under:20", "--arms", "hints"])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["results"][0]["points"], arm["points"]);
    assert_eq!(again["results"][0]["rise_within_64"], arm["rise_within_64"]);
    // The sizes reported are those the arm ran with, not --from-points' own defaults.
    assert_eq!(again["sizes"], report["sizes"]);
    assert_eq!(again["seed"], report["seed"]);
    assert_eq!(again["learning_rate"], report["learning_rate"]);
    assert_eq!(again["preset"], "careful");
    let missing = Command::new(rlclaw_bin())
        .args(["bench", "learn", "--from-points", "--out"])
        .arg(&out)
        .args(["--preset-rater", "under:20", "--arms", "binary"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("under-20-binary") && err.contains("run the arm first"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_learning_rate_out_of_range_or_an_unknown_preset_is_refused_before_anything_runs() {
    let out = std::env::temp_dir().join(format!("rlclaw-bench-lr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    for bad in ["0", "1.5", "-1e-4"] {
        let run = Command::new(rlclaw_bin())
            .args(["bench", "learn", "--quick", "--out"])
            .arg(&out)
            .arg(format!("--learning-rate={bad}"))
            .output()
            .unwrap();
        assert!(!run.status.success(), "{bad} was taken");
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            err.contains("--learning-rate must be above 0 and below 1"),
            "{err}"
        );
        assert!(!out.exists(), "{bad} left {}", out.display());
    }
    let run = Command::new(rlclaw_bin())
        .args(["bench", "learn", "--quick", "--preset", "wild", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success(), "an unknown preset was taken");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("unknown preset \"wild\""), "{err}");
    assert!(!out.exists());
}

/// The turns in an arm's store, in capture order.
fn stored_turn_ids(arm_dir: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(arm_dir.join("rlclaw.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT turn_id FROM turns ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn a_stopped_learning_run_resumes_where_it_stopped_and_finishes_its_cut_off_round() {
    let model = rlclaw_tests::model::smollm2();
    let out = std::env::temp_dir().join(format!("rlclaw-bench-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let arm_dir = out.join("under-20-binary");
    let bench = |rounds: &str, extra: &[&str]| {
        let run = learn_under_20(&out, &model, "binary")
            .args(&TINY[2..])
            .args(["--rounds", rounds, "--samples", "1", "--max-tokens", "12"])
            .args(["--seed", "3"])
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr).into_owned();
        let report = serde_json::from_slice::<serde_json::Value>(&run.stdout).ok();
        (run.status.success(), report, err)
    };
    let points_of = |report: &serde_json::Value| report["results"][0]["points"].clone();

    let (ok, first, err) = bench("1", &[]);
    assert!(ok, "{err}");
    let first = points_of(&first.unwrap());
    let given = first[1]["ratings"].as_u64().unwrap() as usize;
    assert!(
        arm_dir.join("base.json").exists(),
        "the base's replies are kept"
    );
    // Stopped after round 1's ratings and training but before its figures were written: the
    // resumed run finishes round 1 with the ratings already given, then runs round 2.
    std::fs::write(
        arm_dir.join("points.json"),
        serde_json::to_string(&[&first[0]]).unwrap(),
    )
    .unwrap();
    let (ok, resumed, err) = bench("2", &["--resume"]);
    assert!(ok, "{err}");
    let resumed = points_of(&resumed.unwrap());
    let resumed = resumed.as_array().unwrap();
    assert_eq!(resumed.len(), 3, "the base and two rounds: {resumed:?}");
    assert_eq!(resumed[0], first[0], "the base is not read again");
    assert_eq!(resumed[1]["ratings"], given, "round 1 took no new ratings");
    assert_eq!(resumed[1]["runs"], 1, "round 1's run is not repeated");
    assert_eq!(resumed[2]["runs"], 2);
    let total = resumed[2]["ratings"].as_u64().unwrap() as usize;
    assert!(
        total >= given + 4,
        "round 2 rated its own turns: {resumed:?}"
    );
    // The turns go on where they stopped: one of each id, in order.
    let ids = stored_turn_ids(&arm_dir);
    let expected: Vec<String> = (0..total).map(|n| format!("binary-{n}")).collect();
    assert_eq!(ids, expected);
    let settings = std::fs::read_to_string(arm_dir.join("settings.json")).unwrap();
    assert!(settings.contains("\"rounds\": 2"), "{settings}");

    // Nothing left to run: the figures come back as they are, and no daemon starts.
    let (ok, again, err) = bench("2", &["--resume"]);
    assert!(ok, "{err}");
    assert!(err.contains("all 2 rounds are done already"), "{err}");
    assert_eq!(points_of(&again.unwrap()).as_array().unwrap(), resumed);

    // Other settings than the arm ran with are refused, and change nothing.
    let before = std::fs::read(arm_dir.join("points.json")).unwrap();
    let (ok, _, err) = bench("3", &["--resume", "--temperature", "0.5"]);
    assert!(!ok, "a resume with another temperature was taken");
    assert!(
        err.contains("ran with other settings") && err.contains("temperature 0.8 → 0.5"),
        "{err}"
    );
    assert_eq!(std::fs::read(arm_dir.join("points.json")).unwrap(), before);
    assert_eq!(stored_turn_ids(&arm_dir).len(), total);
    let _ = std::fs::remove_dir_all(&out);
}

/// The processes whose parent is `pid`, from /proc.
#[cfg(target_os = "linux")]
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let ppid = stat_fields(child).and_then(|f| f.get(1).cloned());
        if ppid.as_deref() == Some(&pid.to_string()) {
            out.push(child);
        }
    }
    out
}

/// Gone, or a zombie nobody has reaped yet: either way no longer running.
#[cfg(target_os = "linux")]
fn is_running(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// The fields of /proc/PID/stat after the command ("state ppid ..."); None once it is gone.
/// The command may hold spaces and brackets, so the fields start after its last ')'.
#[cfg(target_os = "linux")]
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

#[cfg(target_os = "linux")]
#[test]
fn a_killed_learning_run_takes_its_daemon_with_it() {
    use std::time::{Duration, Instant};
    let model = rlclaw_tests::model::smollm2();
    let out = std::env::temp_dir().join(format!("rlclaw-bench-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut bench = Command::new(rlclaw_bin())
        .args(["bench", "learn", "--out"])
        .arg(&out)
        .arg("--model")
        .arg(&model)
        .args(["--preset-rater", "under:20", "--arms", "binary"])
        .args(TINY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let daemon = loop {
        if let Some(&pid) = children_of(bench.id()).first() {
            break pid;
        }
        assert!(
            bench.try_wait().unwrap().is_none(),
            "the benchmark ended before it started a daemon"
        );
        assert!(Instant::now() < deadline, "no daemon started");
        std::thread::sleep(Duration::from_millis(100));
    };
    // SIGKILL: the benchmark gets no chance to stop the daemon itself.
    bench.kill().unwrap();
    bench.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while is_running(daemon) {
        assert!(
            Instant::now() < deadline,
            "the daemon {daemon} outlived the benchmark"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_dir_all(&out);
}
