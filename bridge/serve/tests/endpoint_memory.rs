//! Memory a long-running endpoint keeps. A test binary of its own: resident memory is the
//! process's, and other tests loading models beside it would be counted.

mod common;

use common::smollm2_gguf;
use rlclaw_serve::{ServeConfig, load};

fn config() -> ServeConfig {
    let mut cfg = ServeConfig::new(smollm2_gguf());
    cfg.listen = "127.0.0.1:0".parse().expect("addr");
    cfg.isq = None;
    cfg
}

/// Resident memory of this process in MiB (Linux).
#[cfg(target_os = "linux")]
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// A daemon answers its agent for months: finished requests must not keep their KV caches. With
/// mistral.rs's CPU prefix cache each distinct request kept about 23 MiB for good.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_requests_do_not_keep_memory_after_they_finish() {
    let engine = load(&config()).await.expect("load the base GGUF");
    let ask = |i: usize| {
        vec![rlclaw_serve::ChatMessage::new(
            rlclaw_serve::Role::User,
            format!("Question {i}: what is the capital of France?"),
        )]
    };
    for i in 0..4 {
        engine.generate(&ask(i), 4, 0.0).await.expect("warm up");
    }
    let before = rss_mib();
    for i in 4..40 {
        engine.generate(&ask(i), 4, 0.0).await.expect("generate");
    }
    let grown = rss_mib() - before;
    // 36 kept caches would be about 830 MiB; allocator noise is tens.
    assert!(grown < 250.0, "36 requests left {grown:.0} MiB behind");
}
