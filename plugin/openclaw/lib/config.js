// The plugin configuration (`plugins.entries.rlclaw.config`), checked again here: OpenClaw
// validates it against openclaw.plugin.json, but a config edited while the gateway runs or an
// older gateway must not make the shim send anything anywhere but a loopback bridge.

export const FEEDBACK_MODES = ["slash_only", "slash_and_reactions", "slash_reactions_prompt"];
export const DEFAULTS = {
  bridgeUrl: "http://127.0.0.1:8420",
  feedbackMode: "slash_and_reactions",
  emojiPreset: "binary",
  contextMessages: 12,
  messageBytes: 4096,
  requestTimeoutMs: 5000,
  commandTimeoutMs: 10000,
};

/** Whether a URL's host is a loopback address (127.0.0.0/8, ::1, localhost). */
export function isLoopbackUrl(text) {
  let u;
  try {
    u = new URL(text);
  } catch {
    return false;
  }
  if (u.protocol !== "http:" || u.username || u.password) return false;
  const h = u.hostname;
  if (h === "localhost" || h === "[::1]") return true;
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return Boolean(m && m.slice(1).every((x) => Number(x) <= 255));
}

function int(v, lo, hi, dflt) {
  return Number.isInteger(v) && v >= lo && v <= hi ? v : dflt;
}

/**
 * Normalises the plugin config. Returns `{ problems: string[], bridgeUrl, component, ... }`;
 * `component` is the WIT `config` record, or null when the shim must not talk to a bridge.
 */
export function readConfig(raw) {
  const c = raw && typeof raw === "object" ? raw : {};
  const problems = [];
  let bridgeUrl = typeof c.bridgeUrl === "string" && c.bridgeUrl ? c.bridgeUrl : DEFAULTS.bridgeUrl;
  if (!isLoopbackUrl(bridgeUrl)) {
    problems.push(`bridgeUrl ${JSON.stringify(bridgeUrl)} is not a loopback http:// address; rlclaw only talks to a bridge on this machine (e.g. http://127.0.0.1:8420)`);
    bridgeUrl = null;
  } else {
    bridgeUrl = bridgeUrl.replace(/\/+$/, "");
  }
  const key = typeof c.key === "string" ? c.key.trim() : "";
  if (!key) problems.push("the bridge key is missing; run `rlclaw plugin install` (or set plugins.entries.rlclaw.config.key)");
  else if (!/^[0-9a-f]{64}$/.test(key)) problems.push("the bridge key must be 64 lowercase hex characters");
  const feedbackMode = FEEDBACK_MODES.includes(c.feedbackMode) ? c.feedbackMode : DEFAULTS.feedbackMode;
  if (c.feedbackMode !== undefined && c.feedbackMode !== feedbackMode) {
    problems.push(`feedbackMode ${JSON.stringify(c.feedbackMode)} is not one of ${FEEDBACK_MODES.join(", ")}; using ${feedbackMode}`);
  }
  const askedPolls = Array.isArray(c.pollChannels) ? c.pollChannels : [];
  const validPolls = askedPolls.filter((ch) => typeof ch === "string" && /^[a-z0-9_-]{1,64}$/.test(ch));
  const pollChannels = [...new Set(validPolls)];
  if (validPolls.length !== askedPolls.length) {
    problems.push("pollChannels must be channel ids such as \"telegram\" or \"whatsapp\"; the others are ignored");
  }
  const raters = Array.isArray(c.raters) ? c.raters.filter((r) => typeof r === "string" && r.trim()).map((r) => r.trim()) : [];
  const emojiPreset = c.emojiPreset === "agent-lightning" ? "agent-lightning" : "binary";
  const emojiOverrides = [];
  if (c.emojiMap && typeof c.emojiMap === "object") {
    for (const [emoji, value] of Object.entries(c.emojiMap)) {
      if (typeof value === "number" && value >= -1 && value <= 1) emojiOverrides.push([emoji, value]);
      else problems.push(`emojiMap[${JSON.stringify(emoji)}] must be a number in [-1, 1]; ignored`);
    }
  }
  const fatal = bridgeUrl === null || !/^[0-9a-f]{64}$/.test(key);
  return {
    problems,
    fatal,
    bridgeUrl,
    feedbackMode,
    pollChannels,
    requestTimeoutMs: int(c.requestTimeoutMs, 200, 60000, DEFAULTS.requestTimeoutMs),
    commandTimeoutMs: int(c.commandTimeoutMs, 500, 60000, DEFAULTS.commandTimeoutMs),
    component: fatal
      ? null
      : {
          keyHex: key,
          raters,
          emojiPreset,
          emojiOverrides,
          contextMessages: int(c.contextMessages, 1, 64, DEFAULTS.contextMessages),
          messageBytes: int(c.messageBytes, 64, 65536, DEFAULTS.messageBytes),
          // Rating polls are the prompt of slash_reactions_prompt, on the channels named.
          pollChannels: feedbackMode === "slash_reactions_prompt" ? pollChannels : [],
        },
  };
}
