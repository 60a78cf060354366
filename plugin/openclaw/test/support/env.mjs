// What the end-to-end tests run: the real bridge (`rlclaw serve`), the real OpenClaw gateway
// (openclaw@2026.9.6 from node_modules), each in a temporary folder, on free loopback ports.
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const PKG = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const ROOT = path.resolve(PKG, "..", "..");
/**
 * The OpenClaw CLI: openclaw@2026.9.6 installed by .ci/setup-node outside the plugin's folder
 * (OpenClaw refuses to link a plugin whose folder holds OpenClaw's own bundled plugins), or
 * $RLCLAW_OPENCLAW_DIR (the folder that holds node_modules/openclaw).
 */
export const OPENCLAW_DIR = process.env.RLCLAW_OPENCLAW_DIR || path.join(os.homedir(), ".cache", "rlclaw", "openclaw-2026.9.6");
export const OPENCLAW = path.join(OPENCLAW_DIR, "node_modules", "openclaw", "openclaw.mjs");

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(what, f, { timeoutMs = 20000, everyMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await sleep(everyMs);
  }
}

export function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** The rlclaw binary: $RLCLAW_BIN, or built with cargo (as tests/support/bridge.rs does). */
export function rlclawBin() {
  if (process.env.RLCLAW_BIN) return process.env.RLCLAW_BIN;
  execFileSync(process.env.CARGO || "cargo", ["build", "--quiet", "-p", "rlclaw", "--bin", "rlclaw"], { cwd: ROOT, stdio: "inherit" });
  return path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug", "rlclaw");
}

export class Bridge {
  static async start({ configToml = "" } = {}) {
    const b = new Bridge();
    b.bin = rlclawBin();
    b.tmp = tempDir("rlclaw-shim-bridge-");
    b.dir = path.join(b.tmp, "data");
    if (configToml) {
      fs.mkdirSync(b.dir, { recursive: true, mode: 0o700 });
      fs.writeFileSync(path.join(b.dir, "config.toml"), configToml);
    }
    b.port = await freePort();
    b.url = `http://127.0.0.1:${b.port}`;
    b.log = "";
    b.child = spawn(b.bin, ["serve", "--data-dir", b.dir, "--listen", `127.0.0.1:${b.port}`], {
      env: { ...process.env, RLCLAW_LOG: "warn" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    b.child.stderr.on("data", (d) => (b.log += d));
    await until("the bridge's /healthz", async () => {
      if (b.child.exitCode !== null) throw new Error(`rlclaw serve exited: ${b.log}`);
      const r = await fetch(`${b.url}/healthz`).catch(() => null);
      return r?.status === 200;
    }, { timeoutMs: 30000, everyMs: 50 });
    b.key = fs.readFileSync(path.join(b.dir, "key"), "utf8").trim();
    return b;
  }

  /** Rows of a read-only query on the bridge's database (sqlite3 -json). */
  query(sql) {
    const out = execFileSync("sqlite3", ["-readonly", "-json", path.join(this.dir, "rlclaw.db"), sql], { encoding: "utf8" });
    return out.trim() ? JSON.parse(out) : [];
  }

  turns() {
    return this.query("SELECT seq, turn_id, session, channel, chat, sender, is_group, prompt, response, model, (SELECT json_group_array(message_id) FROM turn_messages m WHERE m.turn_seq = t.seq) AS message_ids FROM turns t ORDER BY seq")
      .map((t) => ({ ...t, message_ids: JSON.parse(t.message_ids) }));
  }

  ratings() {
    return this.query("SELECT r.id, t.turn_id, t.prompt, t.response, r.rater, r.value, r.source, r.emoji, r.reason, r.removed_at FROM ratings r JOIN turns t ON t.seq = r.turn_seq ORDER BY r.id");
  }

  async stop() {
    if (this.child && this.child.exitCode === null) {
      this.child.kill("SIGTERM");
      await new Promise((r) => this.child.once("exit", r));
    }
    fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** An OpenClaw home (HOME, OPENCLAW_HOME) in a temp folder, and the CLI run inside it. */
export class OpenClawHome {
  constructor() {
    this.home = tempDir("rlclaw-shim-oc-");
    this.env = {
      ...process.env,
      HOME: this.home,
      OPENCLAW_HOME: this.home,
      NO_COLOR: "1",
      FORCE_COLOR: "0",
      npm_config_cache: path.join(this.home, ".npm"),
      npm_config_update_notifier: "false",
    };
    delete this.env.OPENCLAW_STATE_DIR;
    delete this.env.OPENCLAW_CONFIG_PATH;
    this.configPath = path.join(this.home, ".openclaw", "openclaw.json");
  }

  writeConfig(cfg) {
    fs.mkdirSync(path.dirname(this.configPath), { recursive: true });
    fs.writeFileSync(this.configPath, JSON.stringify(cfg, null, 2));
  }

  readConfig() {
    return JSON.parse(fs.readFileSync(this.configPath, "utf8"));
  }

  /** Runs `openclaw <args>`; returns {code, stdout, stderr}. */
  cli(args, opts) {
    return this.run(process.execPath, [OPENCLAW, ...args], opts);
  }

  /** Runs a program in this home; returns {code, stdout, stderr}. */
  run(program, args, { timeoutMs = 90000 } = {}) {
    return new Promise((resolve) => {
      const child = spawn(program, args, { env: this.env, cwd: this.home, stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      const t = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      child.on("exit", (code) => {
        clearTimeout(t);
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** Starts `openclaw gateway run` and waits until Telegram polls the fake. */
  async startGateway({ telegram, port }) {
    this.gatewayLog = "";
    const child = spawn(process.execPath, [OPENCLAW, "gateway", "run", "--port", String(port)], {
      env: this.env, cwd: this.home, stdio: ["ignore", "pipe", "pipe"],
    });
    this.gateway = child;
    child.stdout.on("data", (d) => (this.gatewayLog += d));
    child.stderr.on("data", (d) => (this.gatewayLog += d));
    await until("the gateway to poll Telegram", () => {
      if (child.exitCode !== null) throw new Error(`the gateway exited (${child.exitCode}):\n${this.gatewayLog.slice(-4000)}`);
      return telegram.calls.some((c) => c.method === "getUpdates");
    }, { timeoutMs: 180000, everyMs: 100 });
    return child;
  }

  async stopGateway() {
    const child = this.gateway;
    if (!child || child.exitCode !== null) return;
    child.kill("SIGTERM");
    const done = new Promise((r) => child.once("exit", r));
    const t = setTimeout(() => child.kill("SIGKILL"), 15000);
    await done;
    clearTimeout(t);
  }

  remove() {
    fs.rmSync(this.home, { recursive: true, force: true });
  }
}
