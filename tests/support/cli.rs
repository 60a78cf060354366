//! Running the `rlclaw` binary as a person would, and the scratch folders and tiny models that
//! the tests which train give it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::bridge::rlclaw_bin;

/// `rlclaw ARGS --data-dir DIR`, quiet but for warnings.
pub fn rlclaw(dir: &Path, args: &[&str]) -> Output {
    Command::new(rlclaw_bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("RLCLAW_LOG", "warn")
        .output()
        .expect("rlclaw runs")
}

/// Runs rlclaw, expects success, returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = rlclaw(dir, args);
    assert!(
        out.status.success(),
        "rlclaw {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs rlclaw, expects success and one JSON document on stdout.
pub fn ok_json(dir: &Path, args: &[&str]) -> Value {
    let text = ok(dir, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// An empty folder of this process's own under the temp dir.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlclaw-{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}

/// A tiny random Llama-family model in `dir/tiny-model`, for tests that need only shapes.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let model = dir.join("tiny-model");
    rlclaw_trainer::tiny::write_tiny_model(&model, rlclaw_trainer::model::Arch::Llama, 7)
        .expect("tiny model");
    model
}

/// A config that trains `model` only when asked, with the aggressive preset at the learning
/// rate these tests were written for: re-tuning a preset for real models must not move what a
/// tiny random model does here (its runs are seeded from the clock).
pub fn training_config(model: &Path, extra: &str) -> String {
    format!(
        "{extra}\n[training]\nauto_after = 0\npreset = \"aggressive\"\nlearning_rate = 2e-4\nmodel = \"{}\"\n",
        model.display()
    )
}
