// The component's thread: one instance, calls in arrival order. A trap re-creates the instance
// and is reported with the call's result; the main thread then sends the configuration again.
import { parentPort, workerData } from "node:worker_threads";

let plugin;
try {
  // workerData.module: another module with the same `loadInline` (tests wrap the component).
  const { loadInline } = await import(workerData?.module ?? new URL("./component.js", import.meta.url).href);
  plugin = await loadInline();
  parentPort.postMessage({ type: "ready" });
} catch (e) {
  parentPort.postMessage({ type: "load-error", message: String(e?.message ?? e) });
}

parentPort.on("message", (m) => {
  if (m.type !== "call" || !plugin) return;
  let effects;
  try {
    effects = plugin.handle(m.nowMs, m.entropy, m.event);
  } catch (e) {
    let again = "";
    try {
      plugin.reset();
    } catch (e2) {
      again = `; re-creating it failed too: ${e2?.message ?? e2}`;
    }
    parentPort.postMessage({ type: "result", id: m.id, trapped: `${e?.message ?? e}${again}` });
    return;
  }
  parentPort.postMessage({ type: "result", id: m.id, effects });
});
