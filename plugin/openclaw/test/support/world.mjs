// One offline world for the gateway tests: fake model, fake Telegram, the real bridge, and a
// real OpenClaw gateway with rlclaw installed by `openclaw plugins install --link`.
import fs from "node:fs";
import path from "node:path";

import { Bridge, OPENCLAW, OpenClawHome, PKG, freePort } from "./env.mjs";
import { startFakeModel, startFakeTelegram } from "./fakes.mjs";

export const OWNER = 42;
export const OTHER = 99;
export const GROUP = -100123;

export function gatewayConfig({ model, telegram, port }) {
  return {
    agents: { defaults: { model: { primary: "local/fake-model" } } },
    gateway: { mode: "local", bind: "loopback", port, auth: { mode: "token", token: "test-token-rlclaw" } },
    models: {
      mode: "merge",
      providers: {
        local: {
          baseUrl: model.url, apiKey: "sk-local", api: "openai-completions", timeoutSeconds: 60,
          models: [{ id: "fake-model", name: "Fake Model", reasoning: false, input: ["text"],
            cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, contextWindow: 32000, maxTokens: 1024 }],
        },
      },
    },
    channels: {
      telegram: {
        enabled: true,
        botToken: "123456:FAKE-TOKEN",
        apiRoot: telegram.apiRoot,
        dmPolicy: "allowlist",
        allowFrom: [String(OWNER), String(OTHER)],
        groupPolicy: "open",
        groups: { "*": { requireMention: false } },
        reactionNotifications: "all",
        textChunkLimit: 200,
        network: { dangerouslyAllowPrivateNetwork: true },
      },
    },
    session: { dmScope: "per-channel-peer" },
    // Only what the tests need: startup and every agent turn are much faster without the
    // stock memory, browser, canvas, ... plugins.
    plugins: { allow: ["telegram", "rlclaw"] },
    bindings: [{ agentId: "main", match: { channel: "telegram", accountId: "default" } }],
    commands: { allowFrom: { telegram: [String(OWNER), String(OTHER)] }, ownerAllowFrom: [`telegram:${OWNER}`] },
  };
}

/**
 * `pluginConfig`: more of rlclaw's plugin config (e.g. pollChannels), merged into what the
 * install wrote, before the gateway starts.
 */
export async function startWorld({ feedbackMode = "slash_reactions_prompt", bridgeConfig = `admins = ["${OWNER}"]\n`, pluginConfig = {} } = {}) {
  const w = {};
  try {
    w.model = await startFakeModel();
    w.telegram = await startFakeTelegram();
    w.bridge = await Bridge.start({ configToml: bridgeConfig });
    w.oc = new OpenClawHome();
    w.port = await freePort();
    w.oc.writeConfig(gatewayConfig(w));
    const t0 = Date.now();
    // The install `rlclaw plugin install` performs: scripts/install.mjs links the plugin and
    // writes its config, key included, through a private batch file.
    fs.writeFileSync(path.join(w.oc.home, "bridge.key"), w.bridge.key, { mode: 0o600 });
    const install = await w.oc.run(process.execPath, [path.join(PKG, "scripts", "install.mjs"),
      "--key-file", path.join(w.oc.home, "bridge.key"), "--bridge-url", w.bridge.url,
      "--feedback-mode", feedbackMode, "--openclaw", OPENCLAW]);
    if (install.code !== 0) throw new Error(`install.mjs failed (${install.code}):\n${install.stdout}\n${install.stderr}`);
    w.install = install;
    if (Object.keys(pluginConfig).length) {
      const cfg = w.oc.readConfig();
      Object.assign(cfg.plugins.entries.rlclaw.config, pluginConfig);
      w.oc.writeConfig(cfg);
    }
    w.timings = { installMs: Date.now() - t0 };
    const t1 = Date.now();
    await w.oc.startGateway({ telegram: w.telegram, port: w.port });
    w.timings.gatewayMs = Date.now() - t1;
  } catch (e) {
    await stopWorld(w);
    throw e;
  }
  return w;
}

export async function stopWorld(w) {
  await w.oc?.stopGateway().catch(() => {});
  await w.bridge?.stop().catch(() => {});
  await w.telegram?.close().catch(() => {});
  await w.model?.close().catch(() => {});
  if (!process.env.RLCLAW_KEEP_TEST_HOME) w.oc?.remove();
}
