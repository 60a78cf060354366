//! Builds the plugin (`../plugin`) for wasm32-unknown-unknown in release with a nested cargo,
//! turns its core module into a component with the `wit-component` crate, and writes it to
//! `$OUT_DIR/rlclaw_plugin.wasm` (exposed to the tests as `RLCLAW_PLUGIN_WASM`). Plain
//! `cargo test` needs no wasm-tools CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let plugin = root.join("plugin");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());

    // One guest build shared by every profile of this crate: <target dir>/rlclaw-plugin-wasm.
    // OUT_DIR is <target dir>/<profile>/build/<pkg>-<hash>/out.
    let guest_target = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("rlclaw-plugin-wasm"))
        .unwrap_or_else(|| out.join("plugin-target"));

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "-p",
            "rlclaw-plugin",
        ])
        // Speed over size for the guest: hashing every body dominates an event's cost.
        .args([
            "--config",
            "profile.release.package.rlclaw-plugin.opt-level=3",
        ])
        .arg("--manifest-path")
        .arg(plugin.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&guest_target)
        // The host build's flags and target must not leak into the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        // A small guest: one LTO unit, no unwinding, no debug info.
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .status()
        .expect("spawn the nested cargo build of the plugin");
    assert!(
        status.success(),
        "building the plugin for {TARGET} failed (is the target installed? \
         `rustup target add {TARGET}`)"
    );

    let release = guest_target.join(TARGET).join("release");
    let core = std::fs::read(release.join("rlclaw_plugin.wasm")).expect("read the core module");
    let component = wit_component::ComponentEncoder::default()
        .module(&core)
        .expect("the core module carries its component type")
        .validate(true)
        .encode()
        .expect("encode the component");
    let dest = out.join("rlclaw_plugin.wasm");
    std::fs::write(&dest, component).expect("write the component");
    println!("cargo:rustc-env=RLCLAW_PLUGIN_WASM={}", dest.display());

    // Rebuild precisely when the guest's own sources change: the dep-info file lists them.
    println!(
        "cargo:rerun-if-changed={}",
        plugin.join("Cargo.toml").display()
    );
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-changed=build.rs");
    for p in dep_info_sources(&release.join("rlclaw_plugin.d"), &root) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

/// The paths inside the plugin crate that the guest's dep-info file names.
fn dep_info_sources(dep_file: &Path, root: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(dep_file) else {
        return vec![root.join("plugin").join("src")];
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((_, deps)) = line.split_once(": ") else {
            continue;
        };
        // Paths are space separated; a space inside a path is escaped as "\ ".
        let mut cur = String::new();
        let mut chars = deps.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => {
                    cur.push(' ');
                    chars.next();
                }
                ' ' => {
                    if !cur.is_empty() {
                        out.push(PathBuf::from(std::mem::take(&mut cur)));
                    }
                }
                _ => cur.push(c),
            }
        }
        if !cur.is_empty() {
            out.push(PathBuf::from(cur));
        }
    }
    let plugin = root.join("plugin");
    let plugin = plugin.canonicalize().unwrap_or(plugin);
    out.retain(|p| {
        p.canonicalize()
            .map(|c| c.starts_with(&plugin))
            .unwrap_or(false)
    });
    out.sort();
    out.dedup();
    out
}
