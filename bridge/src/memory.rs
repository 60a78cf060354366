//! Handing freed memory back to the system after the daemon's big, short-lived allocations.
//!
//! Training (a float copy of the model, activations, gradients) and every endpoint (re)load
//! (weights dequantised, then quantised) free gigabytes at once. glibc keeps what its per-thread
//! arenas freed unless it lies at the top of the heap, so a daemon that had trained a few times
//! sat at 1.5–2.5 GiB while it needed about 0.65 (BENCHMARKS.md, "Learning"). `malloc_trim`
//! returns those pages; other allocators return memory by themselves.

/// Returns the allocator's free pages to the system; `after` names what freed them, for the log.
pub fn release_freed(after: &str) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let before = status_kib(None, "VmRSS");
        // SAFETY: malloc_trim only walks glibc's own arenas and takes their locks.
        unsafe { libc::malloc_trim(0) };
        if let (Some(before), Some(now)) = (before, status_kib(None, "VmRSS")) {
            let (before, now) = (before / 1024, now / 1024);
            tracing::debug!("after {after}: resident memory {before} MiB -> {now} MiB");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = after;
}

/// A memory figure in KiB ("VmRSS", "VmHWM") from /proc/PID/status; `None` reads this process.
pub fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// The daemon's case in small: a worker thread frees most of what it allocated, but a few
    /// live blocks scattered through its arena keep glibc from returning the space by itself.
    #[test]
    fn release_freed_returns_a_fragmented_arenas_free_pages() {
        const BLOCK: usize = 4000;
        const BLOCKS: usize = 64_000; // about 256 MB
        let resident_before_trim = std::thread::spawn(|| {
            let mut blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![i as u8; BLOCK]).collect();
            let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
            drop(blocks);
            let rss = status_kib(None, "VmRSS").expect("VmRSS");
            (rss, kept)
        })
        .join()
        .expect("the allocating thread");
        let (before, kept) = resident_before_trim;
        release_freed("the test");
        let after = status_kib(None, "VmRSS").expect("VmRSS");
        let returned_mib = before.saturating_sub(after) / 1024;
        assert!(
            returned_mib > 128,
            "only {returned_mib} MiB came back ({} MiB before, {} MiB after)",
            before / 1024,
            after / 1024
        );
        drop(kept);
    }
}
