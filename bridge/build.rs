//! Link settings for the `rlclaw` binary.
//!
//! On Linux the relative relocations of this position-independent binary are packed (RELR):
//! the loader then reads a few kilobytes instead of an 850 KB `.rela.dyn` table at every start,
//! which is most of what an idle daemon keeps resident beyond its code. glibc 2.36 and binutils
//! 2.38 (or lld) understand it; older linkers warn and link as before.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
