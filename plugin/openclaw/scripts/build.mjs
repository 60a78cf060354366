// Builds the plugin component for the shim: the Rust crate rlclaw-plugin for
// wasm32-unknown-unknown (release, opt-level 3, LTO, panic=abort, stripped: the same flags
// tests/build.rs uses, so a shared target directory builds it once), `jco new` to turn the core module into a
// component, and `jco transpile` into generated/ (ESM, synchronous instantiation, no top-level
// await, no runtime npm dependency: the component imports nothing).
//
//   npm run build                     cargo build + jco new + jco transpile
//   RLCLAW_PLUGIN_CORE=x.wasm npm run build    skip cargo, componentise this core module
//
// The cargo target directory is $CARGO_TARGET_DIR/rlclaw-plugin-wasm (default: the
// workspace's target/).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, "..");
const root = path.resolve(pkg, "..", "..");
const gen = path.join(pkg, "generated");
const TARGET = "wasm32-unknown-unknown";

function run(cmd, args, opts = {}) {
  execFileSync(cmd, args, { stdio: "inherit", ...opts });
}

let core = process.env.RLCLAW_PLUGIN_CORE;
if (!core) {
  const targetDir = path.join(process.env.CARGO_TARGET_DIR || path.join(root, "target"), "rlclaw-plugin-wasm");
  const env = { ...process.env };
  for (const k of ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]) delete env[k];
  Object.assign(env, {
    CARGO_PROFILE_RELEASE_LTO: "true",
    CARGO_PROFILE_RELEASE_PANIC: "abort",
    CARGO_PROFILE_RELEASE_DEBUG: "false",
    CARGO_PROFILE_RELEASE_STRIP: "true",
  });
  run(process.env.CARGO || "cargo", [
    "build", "--quiet", "--release", "--target", TARGET, "-p", "rlclaw-plugin",
    // The same profile override as tests/build.rs, so that both share one guest build.
    "--config", "profile.release.package.rlclaw-plugin.opt-level=3",
    "--manifest-path", path.join(root, "plugin", "Cargo.toml"), "--target-dir", targetDir,
  ], { env, cwd: root });
  core = path.join(targetDir, TARGET, "release", "rlclaw_plugin.wasm");
}
if (!fs.existsSync(core)) throw new Error(`no core module at ${core}`);

const jco = path.join(pkg, "node_modules", "@bytecodealliance", "jco", "dist", "jco.js");
if (!fs.existsSync(jco)) throw new Error("jco is missing: run `npm install` in plugin/openclaw (or .ci/setup-node)");

const tmp = fs.mkdtempSync(path.join(pkg, ".build-"));
try {
  const component = path.join(tmp, "rlclaw.wasm");
  run(process.execPath, [jco, "new", core, "-o", component]);
  const out = path.join(tmp, "out");
  run(process.execPath, [jco, "transpile", component, "-o", out, "--name", "rlclaw",
    "--instantiation", "sync", "--no-typescript", "--quiet"]);
  fs.copyFileSync(component, path.join(out, "rlclaw.wasm"));
  fs.rmSync(gen, { recursive: true, force: true });
  fs.renameSync(out, gen);
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
console.log(`rlclaw: component transpiled into ${path.relative(process.cwd(), gen) || "."}`);
