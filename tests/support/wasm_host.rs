//! A wasmtime 48 host for the plugin component (the file `tests/build.rs` builds), as the
//! OpenClaw shim would host it: it feeds events with the time and fresh random bytes, performs
//! the `request` effects over HTTP against a bridge and feeds each `bridge-response` back, and
//! collects the replies, log lines, polls to send and claimed messages. Fuel and memory limits
//! are on; the compiled `Component` is shared by every host in a test binary.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};

wasmtime::component::bindgen!({
    world: "rlclaw-plugin",
    path: "../wit",
});

/// The WIT types (`wit/rlclaw.wit`), as the host sees them.
pub use self::exports::rlclaw::plugin::types as wit;
use wit::{
    BridgeRequest, BridgeResponse, ClaimedMessage, Effect, Event, LogLevel, LogLine, PollRequest,
    Reply,
};

/// Fuel for one event: generous for chat events, small enough to stop a runaway loop fast.
pub const FUEL_PER_EVENT: u64 = 200_000_000;
/// The most linear memory the plugin may grow to.
pub const MEMORY_LIMIT: usize = 64 << 20;

/// The path of the componentised plugin that `tests/build.rs` wrote.
pub fn component_path() -> &'static str {
    env!("RLCLAW_PLUGIN_WASM")
}

/// The engine (fuel on) and the compiled component, once per test binary.
pub fn engine_and_component() -> &'static (Engine, Component) {
    static CELL: OnceLock<(Engine, Component)> = OnceLock::new();
    CELL.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        config.max_wasm_stack(512 << 10);
        if std::env::var_os("RLCLAW_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).expect("wasmtime engine");
        let component = load_component(&engine);
        (engine, component)
    })
}

/// Compiles the component, or loads it precompiled from a cache file next to it. Compiling
/// takes seconds in an unoptimised test build; loading takes a millisecond. The cache file is
/// named after the component's bytes and the engine's compatibility hash, so a rebuilt
/// component or another wasmtime never loads a stale one.
fn load_component(engine: &Engine) -> Component {
    use std::hash::Hash;
    let bytes = std::fs::read(component_path()).expect("read the plugin component");
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    let cache = format!("{}.{:016x}.cwasm", component_path(), h.finish());
    if std::path::Path::new(&cache).exists() {
        // SAFETY: the file was written below by `Component::serialize` for these very bytes
        // and a compatible engine, in the build's own output folder.
        if let Ok(c) = unsafe { Component::deserialize_file(engine, &cache) } {
            return c;
        }
    }
    let component = Component::new(engine, &bytes).expect("compile the plugin component");
    if let Ok(serialized) = component.serialize() {
        // Write then rename, so a test binary running in parallel never reads half a file.
        let tmp = format!("{cache}.{}.tmp", std::process::id());
        if std::fs::write(&tmp, serialized).is_ok() {
            let _ = std::fs::rename(&tmp, &cache);
        }
    }
    component
}

/// Everything the component imports, by name, each with what it would grant: the names of its
/// items that are not plain type definitions (functions, resources, modules, ...). The world
/// imports nothing, so this is empty.
pub fn component_imports() -> Vec<(String, Vec<String>)> {
    use wasmtime::component::types::ComponentItem;
    let (engine, component) = engine_and_component();
    component
        .component_type()
        .imports(engine)
        .map(|(name, item)| {
            let grants = match item.ty {
                ComponentItem::Type(_) => Vec::new(),
                ComponentItem::ComponentInstance(inst) => inst
                    .exports(engine)
                    .filter(|(_, i)| !matches!(i.ty, ComponentItem::Type(_)))
                    .map(|(n, i)| format!("{n}: {:?}", i.ty))
                    .collect(),
                other => vec![format!("{other:?}")],
            };
            (name.to_string(), grants)
        })
        .collect()
}

struct State {
    limits: StoreLimits,
}

/// What the host did for one `request` effect.
#[derive(Clone, Debug)]
pub struct Sent {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// 0 when the bridge could not be reached.
    pub status: u16,
    pub response: Vec<u8>,
}

impl Sent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One plugin instance and what it has asked for so far.
pub struct PluginHost {
    store: Store<State>,
    plugin: RlclawPlugin,
    /// Where requests go, e.g. "http://127.0.0.1:8420"; None: nothing answers (status 0).
    pub bridge_url: Option<String>,
    /// Added to the wall clock, so tests can pass quiet periods and backoffs without sleeping.
    pub clock_offset_ms: u64,
    pub replies: Vec<Reply>,
    pub logs: Vec<LogLine>,
    pub sent: Vec<Sent>,
    /// Rating polls the plugin asked the host to show.
    pub polls: Vec<PollRequest>,
    /// Inbound messages the plugin claimed as its own (votes on its polls).
    pub claims: Vec<ClaimedMessage>,
    entropy: RandomState,
    counter: u64,
}

impl PluginHost {
    /// A fresh instance that sends to `bridge_url`.
    pub fn new(bridge_url: Option<&str>) -> PluginHost {
        let (engine, component) = engine_and_component();
        let limits = StoreLimitsBuilder::new()
            .memory_size(MEMORY_LIMIT)
            .instances(8)
            .tables(8)
            .table_elements(100_000)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(engine, State { limits });
        store.limiter(|s| &mut s.limits);
        store.set_fuel(FUEL_PER_EVENT).expect("fuel is on");
        let linker: Linker<State> = Linker::new(engine);
        let plugin = RlclawPlugin::instantiate(&mut store, component, &linker)
            .expect("instantiate the plugin with an empty linker");
        PluginHost {
            store,
            plugin,
            bridge_url: bridge_url.map(|u| u.trim_end_matches('/').to_string()),
            clock_offset_ms: 0,
            replies: Vec::new(),
            logs: Vec::new(),
            sent: Vec::new(),
            polls: Vec::new(),
            claims: Vec::new(),
            entropy: RandomState::new(),
            counter: 0,
        }
    }

    pub fn now_ms(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64;
        wall + self.clock_offset_ms
    }

    pub fn advance(&mut self, ms: u64) {
        self.clock_offset_ms += ms;
    }

    fn fresh_entropy(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        for _ in 0..4 {
            self.counter += 1;
            let mut h = self.entropy.build_hasher();
            h.write_u64(self.counter);
            h.write_u128(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            out.extend_from_slice(&h.finish().to_le_bytes());
        }
        out
    }

    /// Calls `handle` once, with fresh fuel; returns its effects as they are.
    pub fn call(&mut self, event: &Event) -> wasmtime::Result<Vec<Effect>> {
        self.store.set_fuel(FUEL_PER_EVENT)?;
        let now = self.now_ms();
        let entropy = self.fresh_entropy();
        self.plugin
            .rlclaw_plugin_plugin()
            .call_handle(&mut self.store, now, &entropy, event)
    }

    /// Fuel the last call used.
    pub fn fuel_used(&self) -> u64 {
        FUEL_PER_EVENT - self.store.get_fuel().unwrap_or(0)
    }

    /// Feeds an event and performs what it asks, feeding bridge answers back until the plugin
    /// asks for nothing more. Replies and logs are collected; the replies of this call are
    /// returned.
    pub fn feed(&mut self, event: Event) -> Vec<Reply> {
        let first_reply = self.replies.len();
        let mut queue = vec![event];
        while let Some(ev) = queue.pop() {
            let effects = self.call(&ev).expect("the plugin handles the event");
            for fx in effects {
                match fx {
                    Effect::Request(req) => queue.push(Event::BridgeResponse(self.perform(req))),
                    Effect::Reply(r) => self.replies.push(r),
                    Effect::Log(l) => self.logs.push(l),
                    Effect::Poll(p) => self.polls.push(p),
                    Effect::Claim(c) => self.claims.push(c),
                }
            }
        }
        self.replies[first_reply..].to_vec()
    }

    pub fn tick(&mut self) -> Vec<Reply> {
        self.feed(Event::Tick)
    }

    fn perform(&mut self, req: BridgeRequest) -> BridgeResponse {
        let (status, headers, body) = match &self.bridge_url {
            Some(url) => http(url, &req.method, &req.path, &req.headers, &req.body),
            None => (0, Vec::new(), Vec::new()),
        };
        self.sent.push(Sent {
            method: req.method.clone(),
            path: req.path.clone(),
            body: req.body.clone(),
            status,
            response: body.clone(),
        });
        BridgeResponse {
            id: req.id,
            status,
            headers,
            body,
        }
    }

    /// Requests that reached `path` with a 2xx answer.
    pub fn acked(&self, path: &str) -> Vec<&Sent> {
        self.sent
            .iter()
            .filter(|s| s.path == path && (200..300).contains(&s.status))
            .collect()
    }

    pub fn errors(&self) -> Vec<&LogLine> {
        self.logs
            .iter()
            .filter(|l| matches!(l.level, LogLevel::Error))
            .collect()
    }

    pub fn configure(&mut self, config: wit::Config) -> Vec<Reply> {
        self.feed(Event::Configure(config))
    }
}

/// A configuration with the given key and defaults for the rest.
pub fn config(key_hex: &str) -> wit::Config {
    wit::Config {
        key_hex: key_hex.to_string(),
        raters: Vec::new(),
        emoji_preset: wit::EmojiPreset::Binary,
        emoji_overrides: Vec::new(),
        context_messages: 12,
        message_bytes: 4096,
        poll_channels: Vec::new(),
    }
}

pub fn place(channel: &str, chat: &str, session: &str) -> wit::Place {
    wit::Place {
        channel: channel.to_string(),
        account: Some("default".to_string()),
        chat: Some(chat.to_string()),
        session: session.to_string(),
    }
}

pub fn inbound(place: &wit::Place, sender: &str, group: bool, id: &str, text: &str) -> Event {
    Event::Inbound(wit::InboundMessage {
        place: place.clone(),
        sender: sender.to_string(),
        sender_name: None,
        group,
        message_id: Some(id.to_string()),
        text: text.to_string(),
    })
}

pub fn outbound(place: &wit::Place, ids: &[&str], text: &str) -> Event {
    Event::Outbound(wit::OutboundMessage {
        place: place.clone(),
        text: text.to_string(),
        message_ids: ids.iter().map(|s| s.to_string()).collect(),
        model: Some("test-model".to_string()),
    })
}

pub fn command(id: &str, place: &wit::Place, sender: &str, args: &str) -> Event {
    Event::Command(wit::Command {
        id: id.to_string(),
        place: place.clone(),
        sender: sender.to_string(),
        name: "rl".to_string(),
        args: args.to_string(),
    })
}

/// A tap on one of the plugin's buttons on message `message_id`.
pub fn callback(id: &str, place: &wit::Place, sender: &str, message_id: &str, data: &str) -> Event {
    Event::Callback(wit::Callback {
        id: id.to_string(),
        place: place.clone(),
        sender: sender.to_string(),
        group: false,
        message_id: Some(message_id.to_string()),
        data: data.to_string(),
    })
}

pub fn reaction(id: &str, session: &str, text: &str, key: Option<&str>) -> Event {
    Event::Reaction(wit::Reaction {
        id: id.to_string(),
        session: session.to_string(),
        text: text.to_string(),
        context_key: key.map(String::from),
    })
}

/// A minimal HTTP/1.1 client: one request per connection. Status 0 when the peer cannot be
/// reached or answers with something that is not HTTP.
pub fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    try_http(base, method, path, headers, body).unwrap_or_default()
}

type HttpAnswer = (u16, Vec<(String, String)>, Vec<u8>);

fn try_http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<HttpAnswer> {
    let authority = base
        .strip_prefix("http://")
        .unwrap_or(base)
        .split('/')
        .next()
        .unwrap_or("");
    let mut stream = TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    let mut resp_headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            resp_headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |name: &str| {
        resp_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut resp_body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            resp_body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        resp_body.resize(len, 0);
        reader.read_exact(&mut resp_body)?;
    } else {
        reader.read_to_end(&mut resp_body)?;
    }
    Ok((status, resp_headers, resp_body))
}

/// A request a [`PlainServer`] received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// A plain local HTTP server that is not the bridge: it answers every request with a fixed,
/// unsigned answer and records what it got (an impostor on the bridge's port).
pub struct PlainServer {
    url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl PlainServer {
    pub fn start(status: u16, body: &'static str) -> PlainServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = serve_one(stream, status, body, &log);
            }
        });
        PlainServer { url, received }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn serve_one(
    stream: TcpStream,
    status: u16,
    body: &str,
    log: &Mutex<Vec<Received>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut req_body = vec![0; len];
    reader.read_exact(&mut req_body)?;
    log.lock().unwrap().push(Received {
        method,
        path,
        body: req_body,
    });
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
