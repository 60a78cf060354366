#!/usr/bin/env node
// Installs rlclaw into the person's OpenClaw and writes its configuration, key included,
// without putting the key on any command line (`rlclaw plugin install` runs this):
//
//   node plugin/openclaw/scripts/install.mjs --key-file <bridge data dir>/key
//        [--bridge-url http://127.0.0.1:8420] [--feedback-mode slash_and_reactions]
//        [--openclaw <path to the openclaw CLI>]
//
// 1. `openclaw plugins install --link <this package> --force --accept-capabilities`
// 2. `openclaw config set --batch-file <file>`: plugins.entries.rlclaw.{enabled,config}; the
//    file is created 0600 in a private 0700 folder and removed afterwards. OpenClaw parses its
//    JSON5 config, validates the result against the plugin's schema and writes it.
// The running gateway picks the change up (it watches its config); `openclaw plugins list`
// and `openclaw plugins inspect rlclaw` then show the plugin, the key hidden.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { FEEDBACK_MODES, isLoopbackUrl } from "../lib/config.js";

const PKG = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function fail(msg) {
  process.stderr.write(`rlclaw plugin install: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const o = { bridgeUrl: "http://127.0.0.1:8420", feedbackMode: "slash_and_reactions", openclaw: "openclaw" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => argv[++i] ?? fail(`${a} needs a value`);
    if (a === "--key-file") o.keyFile = next();
    else if (a === "--bridge-url") o.bridgeUrl = next();
    else if (a === "--feedback-mode") o.feedbackMode = next();
    else if (a === "--openclaw") o.openclaw = next();
    else fail(`unknown argument ${a}`);
  }
  return o;
}

const o = parseArgs(process.argv.slice(2));
if (!o.keyFile) fail("--key-file <bridge data dir>/key is required");
if (!isLoopbackUrl(o.bridgeUrl)) fail(`${o.bridgeUrl} is not a loopback http:// address`);
if (!FEEDBACK_MODES.includes(o.feedbackMode)) fail(`--feedback-mode must be one of ${FEEDBACK_MODES.join(", ")}`);
let key;
try {
  key = fs.readFileSync(o.keyFile, "utf8").trim();
} catch (e) {
  fail(`cannot read the key file ${o.keyFile}: ${e.message}`);
}
if (!/^[0-9a-f]{64}$/.test(key)) fail(`${o.keyFile} does not hold a key (64 lowercase hex characters)`);
if (!fs.existsSync(path.join(PKG, "generated", "rlclaw.js"))) {
  fail(`the component is not built in ${PKG}/generated: run \`npm run build\` there (or .ci/setup-node)`);
}

// The openclaw CLI may be a script (openclaw.mjs): run it with this Node.
const cli = o.openclaw.endsWith(".mjs") || o.openclaw.endsWith(".js") ? [process.execPath, o.openclaw] : [o.openclaw];
function openclaw(args) {
  const r = spawnSync(cli[0], [...cli.slice(1), ...args], { stdio: ["ignore", "inherit", "inherit"] });
  if (r.error) fail(`cannot run ${cli.join(" ")}: ${r.error.message}`);
  if (r.status !== 0) fail(`\`openclaw ${args.join(" ")}\` failed (exit ${r.status})`);
}

openclaw(["plugins", "install", "--link", PKG, "--force", "--accept-capabilities"]);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rlclaw-install-"));
fs.chmodSync(dir, 0o700);
const batch = path.join(dir, "config-set.json");
try {
  fs.writeFileSync(batch, JSON.stringify([
    { path: "plugins.entries.rlclaw.enabled", value: true },
    { path: "plugins.entries.rlclaw.config", value: { bridgeUrl: o.bridgeUrl, key, feedbackMode: o.feedbackMode } },
  ]), { mode: 0o600 });
  openclaw(["config", "set", "--batch-file", batch]);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(`rlclaw is installed in OpenClaw (bridge ${o.bridgeUrl}, ${o.feedbackMode}). A running gateway picks it up; check with \`openclaw plugins inspect rlclaw\`.\n`);
