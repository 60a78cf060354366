// rlclaw for OpenClaw: the entry OpenClaw loads (package.json `openclaw.extensions`).
//
// register() only registers (OpenClaw calls it many times per process: discovery, tool
// discovery, every reload); the component, its worker and the timers start with the service
// or on the first event, and stop with the service.
import { definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";
import { peekSystemEventEntries } from "openclaw/plugin-sdk/system-event-runtime";

import { ComponentHost } from "./lib/component.js";
import { readConfig } from "./lib/config.js";
import { NAMESPACE, Shim } from "./lib/shim.js";

const INTERACTIVE_CHANNELS = ["telegram", "slack", "discord"];

export default definePluginEntry({
  id: "rlclaw",
  name: "rlclaw",
  description: "Rate your agent's replies in chat; the ratings train a LoRA adapter for your own model.",
  register(api) {
    let shim = null;
    const get = () => {
      if (!shim) {
        const onLog = (level, msg) => (api.logger[level] ?? api.logger.info).call(api.logger, msg);
        const host = new ComponentHost({ onLog });
        // Rating polls go out through the channel's outbound adapter (adapter sends fire no
        // message hooks, so a poll is never taken for a reply). Not anonymous: OpenClaw routes
        // only votes that name the voter back into the conversation.
        const outbound = {
          async sendPoll({ channel, accountId, to, poll }) {
            const adapter = await api.runtime.channel.outbound.loadAdapter(channel);
            if (typeof adapter?.sendPoll !== "function") throw new Error(`OpenClaw has no polls on ${channel}`);
            return adapter.sendPoll({ cfg: api.runtime.config.current(), to, poll, accountId, isAnonymous: false });
          },
        };
        shim = new Shim({ config: api.pluginConfig, logger: api.logger, host, peek: peekSystemEventEntries, outbound });
        shim.start();
      }
      return shim;
    };
    // Observe hooks: the gateway does not wait for them; errors are logged, never thrown.
    const observe = (f) => (event, ctx) => {
      try {
        f(event, ctx);
      } catch (e) {
        api.logger.error(`rlclaw: ${e?.stack ?? e}`);
      }
    };

    api.on("message_received", observe((e, c) => get().onMessageReceived(e, c)));
    api.on("message_sent", observe((e, c) => get().onMessageSent(e, c)));
    api.on("reply_payload_sending", (e, c) => {
      try {
        return get().onReplyPayloadSending(e, c);
      } catch (err) {
        api.logger.error(`rlclaw: ${err?.stack ?? err}`);
        return undefined;
      }
    });

    // Votes on rating polls reach plugins as inbound messages, and the agent would answer them:
    // the component claims them, and this hook keeps them from the agent. Only registered when
    // polls are on (the gateway awaits a claiming hook on every message).
    if (readConfig(api.pluginConfig).component?.pollChannels.length) {
      api.on("before_dispatch", async (e, c) => {
        try {
          return await get().onBeforeDispatch(e, c);
        } catch (err) {
          api.logger.error(`rlclaw: ${err?.stack ?? err}`);
          return undefined;
        }
      });
    }

    for (const name of ["rl", "rc"]) {
      api.registerCommand({
        name,
        description: name === "rl"
          ? "Rate the agent's last reply: /rl good, /rl bad [why], /rl undo, /rl status"
          : "Same as /rl (rate the agent's last reply)",
        acceptsArgs: true,
        requireAuth: true,
        handler: async (ctx) => ({ text: await get().command(name, ctx) }),
      });
    }

    for (const channel of INTERACTIVE_CHANNELS) {
      api.registerInteractiveHandler({
        channel,
        namespace: NAMESPACE,
        handler: (ctx) => get().interactive(channel, ctx),
      });
    }

    api.registerService({
      id: "rlclaw",
      start: () => {
        get();
      },
      stop: async () => {
        const s = shim;
        shim = null;
        if (s) await s.stop();
      },
    });
  },
});
