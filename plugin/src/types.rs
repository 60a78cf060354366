//! Plain Rust mirrors of the WIT types (`wit/rlclaw.wit`), so the core builds and is tested
//! natively. `component.rs` converts between these and the generated bindings.

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub channel: String,
    pub account: Option<String>,
    pub chat: Option<String>,
    pub session: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EmojiPreset {
    #[default]
    Binary,
    AgentLightning,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub key_hex: String,
    pub raters: Vec<String>,
    pub emoji_preset: EmojiPreset,
    pub emoji_overrides: Vec<(String, f64)>,
    pub context_messages: u32,
    pub message_bytes: u32,
    pub poll_channels: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundMessage {
    pub place: Place,
    pub sender: String,
    pub sender_name: Option<String>,
    pub group: bool,
    pub message_id: Option<String>,
    pub text: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundMessage {
    pub place: Place,
    pub text: String,
    pub message_ids: Vec<String>,
    pub model: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    pub id: String,
    pub place: Place,
    pub sender: String,
    pub name: String,
    pub args: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Callback {
    pub id: String,
    pub place: Place,
    pub sender: String,
    pub group: bool,
    pub message_id: Option<String>,
    pub data: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reaction {
    pub id: String,
    pub session: String,
    pub text: String,
    pub context_key: Option<String>,
}

pub type Header = (String, String);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeResponse {
    pub id: u64,
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Configure(Config),
    Inbound(InboundMessage),
    Outbound(OutboundMessage),
    Command(Command),
    Callback(Callback),
    Reaction(Reaction),
    BridgeResponse(BridgeResponse),
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeRequest {
    pub id: u64,
    pub method: String,
    pub path: String,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Request(BridgeRequest),
    Reply {
        to: String,
        text: String,
    },
    Log {
        level: LogLevel,
        message: String,
    },
    /// A rating poll to show after a reply.
    Poll {
        place: Place,
        question: String,
        options: Vec<String>,
    },
    /// The inbound message was the plugin's (a vote on its poll), not the agent's.
    Claim {
        place: Place,
        message_id: Option<String>,
    },
}

impl Effect {
    pub fn log(level: LogLevel, message: impl Into<String>) -> Effect {
        Effect::Log {
            level,
            message: message.into(),
        }
    }
    pub fn reply(to: &str, text: impl Into<String>) -> Effect {
        Effect::Reply {
            to: to.to_string(),
            text: text.into(),
        }
    }
}
