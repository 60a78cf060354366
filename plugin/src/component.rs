//! The WebAssembly component: the generated bindings for `wit/rlclaw.wit` and the conversions
//! between them and the core's types. Built only for wasm32.

use std::cell::RefCell;

wit_bindgen::generate!({
    world: "rlclaw-plugin",
    path: "../wit",
});

use exports::rlclaw::plugin::plugin::Guest;
use exports::rlclaw::plugin::types as w;

use crate::types as c;

thread_local! {
    static PLUGIN: RefCell<crate::Plugin> = RefCell::new(crate::Plugin::new());
}

struct Component;

fn place(p: w::Place) -> c::Place {
    c::Place {
        channel: p.channel,
        account: p.account,
        chat: p.chat,
        session: p.session,
    }
}

fn event(e: w::Event) -> c::Event {
    match e {
        w::Event::Configure(x) => c::Event::Configure(c::Config {
            key_hex: x.key_hex,
            raters: x.raters,
            emoji_preset: match x.emoji_preset {
                w::EmojiPreset::Binary => c::EmojiPreset::Binary,
                w::EmojiPreset::AgentLightning => c::EmojiPreset::AgentLightning,
            },
            emoji_overrides: x.emoji_overrides,
            context_messages: x.context_messages,
            message_bytes: x.message_bytes,
            poll_channels: x.poll_channels,
        }),
        w::Event::Inbound(x) => c::Event::Inbound(c::InboundMessage {
            place: place(x.place),
            sender: x.sender,
            sender_name: x.sender_name,
            group: x.group,
            message_id: x.message_id,
            text: x.text,
        }),
        w::Event::Outbound(x) => c::Event::Outbound(c::OutboundMessage {
            place: place(x.place),
            text: x.text,
            message_ids: x.message_ids,
            model: x.model,
        }),
        w::Event::Command(x) => c::Event::Command(c::Command {
            id: x.id,
            place: place(x.place),
            sender: x.sender,
            name: x.name,
            args: x.args,
        }),
        w::Event::Callback(x) => c::Event::Callback(c::Callback {
            id: x.id,
            place: place(x.place),
            sender: x.sender,
            group: x.group,
            message_id: x.message_id,
            data: x.data,
        }),
        w::Event::Reaction(x) => c::Event::Reaction(c::Reaction {
            id: x.id,
            session: x.session,
            text: x.text,
            context_key: x.context_key,
        }),
        w::Event::BridgeResponse(x) => c::Event::BridgeResponse(c::BridgeResponse {
            id: x.id,
            status: x.status,
            headers: x.headers,
            body: x.body,
        }),
        w::Event::Tick => c::Event::Tick,
    }
}

fn wit_place(p: c::Place) -> w::Place {
    w::Place {
        channel: p.channel,
        account: p.account,
        chat: p.chat,
        session: p.session,
    }
}

fn effect(e: c::Effect) -> w::Effect {
    match e {
        c::Effect::Request(r) => w::Effect::Request(w::BridgeRequest {
            id: r.id,
            method: r.method,
            path: r.path,
            headers: r.headers,
            body: r.body,
        }),
        c::Effect::Reply { to, text } => w::Effect::Reply(w::Reply { to, text }),
        c::Effect::Log { level, message } => w::Effect::Log(w::LogLine {
            level: match level {
                c::LogLevel::Debug => w::LogLevel::Debug,
                c::LogLevel::Info => w::LogLevel::Info,
                c::LogLevel::Warn => w::LogLevel::Warn,
                c::LogLevel::Error => w::LogLevel::Error,
            },
            message,
        }),
        c::Effect::Poll {
            place,
            question,
            options,
        } => w::Effect::Poll(w::PollRequest {
            place: wit_place(place),
            question,
            options,
        }),
        c::Effect::Claim { place, message_id } => w::Effect::Claim(w::ClaimedMessage {
            place: wit_place(place),
            message_id,
        }),
    }
}

impl Guest for Component {
    fn handle(now_ms: u64, entropy: Vec<u8>, ev: w::Event) -> Vec<w::Effect> {
        let fx = PLUGIN.with(|p| p.borrow_mut().handle(now_ms, &entropy, event(ev)));
        fx.into_iter().map(effect).collect()
    }
}

export!(Component);
