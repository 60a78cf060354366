// The real component, wrapped so that a test can make a call trap or hang: an inbound message
// whose text is "TRAP" throws as a wasm trap does; "SPIN" never returns.
import { loadInline as real } from "../../lib/component.js";

export async function loadInline() {
  const inner = await real();
  return {
    handle(nowMs, entropy, event) {
      const text = event?.val?.text;
      if (event.tag === "inbound" && text === "TRAP") throw new WebAssembly.RuntimeError("unreachable");
      if (event.tag === "inbound" && text === "SPIN") for (;;);
      return inner.handle(nowMs, entropy, event);
    },
    reset() {
      inner.reset();
    },
  };
}
