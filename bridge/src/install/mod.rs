//! Installing and operating rlclaw on a person's machine: the service unit, the OpenClaw
//! plugin and its config, the Claude Code and Codex hooks, and the small file helpers they
//! share. The `init`, `uninstall`, `service`, `plugin`, `hooks`, `hook` and `doctor` commands
//! (bridge/src/cli/) are thin layers over these modules.
//!
//! Every edit of a file that is not rlclaw's own (OpenClaw's config, Claude Code's settings,
//! Codex's hooks and config) merges into what is there, keeps the file's mode (tightening it
//! only where rlclaw writes its key), keeps the first original as `<file>.rlclaw-backup`, and
//! writes atomically. Nothing outside rlclaw's data folder is ever chmod-ed.

pub mod files;
pub mod hooks;
pub mod openclaw;
pub mod service;
pub mod transcript;

use std::path::PathBuf;

/// The person's home folder (`$HOME`).
pub fn home() -> anyhow::Result<PathBuf> {
    dirs::home_dir().ok_or_else(|| anyhow::anyhow!("cannot tell your home folder: set HOME"))
}

/// This machine's name, for naming a worker (`claude-code@laptop`); `localhost` if unknown.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.trim().is_empty() => name.trim().to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// The local user name: `$USER`, else `$LOGNAME`, else `uid-<n>`.
pub fn user_name() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(name) = std::env::var(var)
            && !name.trim().is_empty()
        {
            return name.trim().to_owned();
        }
    }
    // SAFETY: getuid cannot fail; getpwuid returns null or a pointer to a static record whose
    // name is a NUL-terminated string, read at once (the CLI is single-threaded here).
    unsafe {
        let uid = libc::getuid();
        let pw = libc::getpwuid(uid);
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy();
            if !name.is_empty() {
                return name.into_owned();
            }
        }
        format!("uid-{uid}")
    }
}

/// The running `rlclaw` binary, absolute (what services and hooks run).
pub fn current_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot tell where the rlclaw binary is: {e}"))?;
    Ok(exe.canonicalize().unwrap_or(exe))
}

/// Runs a prepared command with no input; its combined output, or an error that shows it under
/// `label` (how a person would type the command).
pub fn run_command(mut cmd: std::process::Command, label: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        anyhow::bail!("`{label}` failed ({}): {}", out.status, text.trim());
    }
    Ok(text)
}
