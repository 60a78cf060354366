// Hosting the rlclaw plugin component (generated/ by `npm run build`).
//
// `loadInline()` instantiates it in this thread (used inside the worker, by tests and by the
// bench). `ComponentHost` runs it in a worker thread so that the gateway's event loop never
// runs guest code: every call has a deadline; a call that traps gets a fresh instance, a call
// that overruns its deadline gets a fresh worker; either way the last configuration is sent
// again before the next event.
import fs from "node:fs";
import { randomBytes } from "node:crypto";
import { Worker } from "node:worker_threads";

const GENERATED = new URL("../generated/", import.meta.url);

let compiled;
/** The compiled core modules, once per thread. */
function coreModule(name) {
  compiled ??= new Map();
  let m = compiled.get(name);
  if (!m) {
    m = new WebAssembly.Module(fs.readFileSync(new URL(name, GENERATED)));
    compiled.set(name, m);
  }
  return m;
}

/** Instantiates the component here; returns `{ handle(nowMs: bigint, entropy: Uint8Array, event) }`. */
export async function loadInline() {
  const url = new URL("rlclaw.js", GENERATED);
  if (!fs.existsSync(url)) {
    throw new Error("the rlclaw component is not built: run `npm run build` in plugin/openclaw (or .ci/setup-node)");
  }
  const { instantiate } = await import(url.href);
  const make = () => instantiate(coreModule, {});
  let root = make();
  return {
    handle(nowMs, entropy, event) {
      return root.plugin.handle(nowMs, entropy, event);
    },
    /** A new instance (after a trap the old one refuses every call). */
    reset() {
      root = make();
    },
  };
}

/** A fresh event envelope: the time and 32 random bytes, as the WIT contract asks. */
export function envelope() {
  return { nowMs: BigInt(Date.now()), entropy: new Uint8Array(randomBytes(32)) };
}

export class ComponentHost {
  /**
   * @param {{ callTimeoutMs?: number, onLog?: (level: string, msg: string) => void, module?: string }} opts
   *   `module`: the URL of a module exporting `loadInline` to use in the worker instead of this one.
   */
  constructor(opts = {}) {
    this.module = opts.module;
    this.callTimeoutMs = opts.callTimeoutMs ?? 2000;
    this.onLog = opts.onLog ?? (() => {});
    this.worker = null;
    this.ready = null;
    this.seq = 0;
    this.pending = new Map();
    this.config = null;
    this.needsConfig = false;
    this.closed = false;
    this.watchdog = null;
    this.restarts = 0;
  }

  /** Starts the worker (idempotent). */
  start() {
    if (this.closed) throw new Error("the component host is stopped");
    if (this.worker) return this.ready;
    const worker = new Worker(new URL("./worker.js", import.meta.url), { workerData: { module: this.module } });
    worker.unref();
    this.worker = worker;
    this.ready = new Promise((resolve, reject) => {
      const onMessage = (m) => {
        if (m.type === "ready") {
          worker.off("error", onError);
          resolve();
        } else if (m.type === "load-error") {
          reject(new Error(m.message));
        }
      };
      const onError = (e) => reject(e);
      worker.on("message", onMessage);
      worker.once("error", onError);
    });
    // A worker that never starts must not leave an unhandled rejection behind.
    this.ready.catch(() => {});
    worker.on("message", (m) => this.#onMessage(worker, m));
    worker.on("error", (e) => this.#onWorkerGone(worker, `the component worker failed: ${e?.message ?? e}`));
    worker.on("exit", () => this.#onWorkerGone(worker, "the component worker exited"));
    if (!this.watchdog) {
      this.watchdog = setInterval(() => this.#checkDeadline(), Math.max(50, Math.min(250, this.callTimeoutMs / 4)));
      this.watchdog.unref();
    }
    return this.ready;
  }

  /** Remembers the configuration; it is sent again whenever the component is re-created. */
  async configure(config) {
    this.config = config;
    this.needsConfig = false;
    return this.call({ tag: "configure", val: config });
  }

  /**
   * Feeds one event; resolves to the effects. Never rejects: a trap, a timeout or a dead worker
   * resolves to `[]` after a log line.
   */
  async call(event) {
    if (this.closed) return [];
    try {
      await this.start();
    } catch (e) {
      this.onLog("error", `rlclaw: the component could not be loaded: ${e.message}`);
      this.#discardWorker();
      return [];
    }
    // The configuration goes first, back to back with this event, so that no other event can
    // slip in between (the worker runs calls in the order they are posted).
    const first = this.needsConfig && this.config && event.tag !== "configure"
      ? this.#send({ tag: "configure", val: this.config })
      : null;
    this.needsConfig = false;
    const fx = await this.#send(event);
    return first ? (await first).concat(fx) : fx;
  }

  #send(event) {
    const id = ++this.seq;
    const { nowMs, entropy } = envelope();
    return new Promise((resolve) => {
      // The worker runs calls in order; a call's clock starts when the one before it ends.
      const startedAt = this.pending.size === 0 ? performance.now() : null;
      // While a call is out the worker keeps the process alive; idle, it does not.
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve, startedAt, tag: event.tag });
      try {
        this.worker.postMessage({ type: "call", id, nowMs, entropy, event });
      } catch (e) {
        this.pending.delete(id);
        this.onLog("error", `rlclaw: could not pass an event to the component: ${e.message}`);
        resolve([]);
      }
    });
  }

  #onMessage(worker, m) {
    if (worker !== this.worker || m.type !== "result") return;
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    const next = this.pending.values().next().value;
    if (next) next.startedAt = performance.now();
    else worker.unref();
    if (m.trapped) {
      this.restarts++;
      this.needsConfig = true;
      this.onLog("error", `rlclaw: the component trapped on a ${p.tag} event (${m.trapped}); it was re-created and its unsent state is lost`);
      p.resolve([]);
      return;
    }
    p.resolve(m.effects);
  }

  #checkDeadline() {
    const first = this.pending.values().next().value;
    if (!first || first.startedAt == null) return;
    const took = performance.now() - first.startedAt;
    if (took < this.callTimeoutMs) return;
    this.restarts++;
    this.onLog("error", `rlclaw: the component took over ${this.callTimeoutMs} ms on a ${first.tag} event; it was stopped and re-created`);
    this.#discardWorker();
  }

  #onWorkerGone(worker, why) {
    if (worker !== this.worker) return;
    if (!this.closed) this.onLog("error", `rlclaw: ${why}; it is re-created on the next event`);
    this.#discardWorker();
  }

  #discardWorker() {
    const w = this.worker;
    this.worker = null;
    this.ready = null;
    this.needsConfig = true;
    for (const p of this.pending.values()) p.resolve([]);
    this.pending.clear();
    if (w) w.terminate().catch(() => {});
  }

  /** Stops the worker for good. */
  async stop() {
    this.closed = true;
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    const w = this.worker;
    this.#discardWorker();
    if (w) await w.terminate().catch(() => {});
  }
}
