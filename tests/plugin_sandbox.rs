//! The plugin component in wasmtime without a bridge: what it imports (nothing), how it behaves
//! under fuel and memory limits, and that it sends no chat text to anything that cannot prove
//! it is the bridge.

use rlclaw_tests::wasm_host::{
    self, PlainServer, PluginHost, command, config, inbound, outbound, place, wit,
};

const KEY: &str = "5c1a9c0f1e2d3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f708192a3b4c5d6e";

#[test]
fn component_imports_nothing_at_all() {
    let imports = wasm_host::component_imports();
    assert!(
        imports.is_empty(),
        "the plugin world imports nothing (no WASI, no host functions, no types), \
         but the component imports {imports:?}"
    );
    let (engine, component) = wasm_host::engine_and_component();
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(
        exports,
        ["rlclaw:plugin/types@0.2.0", "rlclaw:plugin/plugin@0.2.0"]
    );
}

#[test]
fn component_is_small() {
    let size = std::fs::metadata(wasm_host::component_path())
        .unwrap()
        .len();
    assert!(size < 1 << 20, "the component is {size} bytes");
}

#[test]
fn unconfigured_plugin_sends_nothing_and_says_why() {
    let server = PlainServer::start(200, "{}");
    let mut host = PluginHost::new(Some(server.url()));
    let p = place("telegram", "42", "agent:main:main");
    host.feed(inbound(&p, "42", false, "501", "hello"));
    host.feed(outbound(&p, &["502"], "hi there"));
    let replies = host.feed(command("c1", &p, "42", "good"));
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0].text.contains("not set up"),
        "{}",
        replies[0].text
    );
    host.advance(5_000);
    host.tick();
    assert!(host.sent.is_empty());
    assert!(server.received().is_empty());
}

#[test]
fn invalid_configuration_is_refused_and_the_old_one_kept() {
    let mut host = PluginHost::new(None);
    host.configure(config("not-a-key"));
    assert_eq!(host.errors().len(), 1, "{:?}", host.logs);
    host.configure(config(KEY));
    let mut bad = config(KEY);
    bad.emoji_overrides = vec![("🎉".into(), 2.0)];
    host.configure(bad);
    assert_eq!(host.errors().len(), 2);
    assert!(host.errors()[1].message.contains("keeping the previous"));
    // still configured: a rating is attempted (and queued, as nothing answers)
    let p = place("telegram", "42", "agent:main:main");
    let replies = host.feed(command("c1", &p, "42", "good"));
    assert!(
        replies.iter().any(|r| r.text.contains("not reachable")),
        "{replies:?}"
    );
}

#[test]
fn an_impostor_bridge_receives_no_chat_text() {
    // A plain local server on the bridge's port: it answers 200 but cannot sign.
    let server = PlainServer::start(200, r#"{"text":"all good","counts":{"good":1}}"#);
    let mut host = PluginHost::new(Some(server.url()));
    host.configure(config(KEY));
    let p = place("telegram", "42", "agent:main:main");
    host.feed(inbound(&p, "42", false, "501", "my secret question"));
    host.feed(outbound(&p, &["502"], "the secret answer"));
    let replies = host.feed(command("c1", &p, "42", "bad far too secret"));
    host.feed(command("c2", &p, "42", "status"));
    for _ in 0..5 {
        host.advance(61_000);
        host.tick();
    }
    let got = server.received();
    assert!(!got.is_empty(), "the plugin tried to prove the bridge");
    for r in &got {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/v1/status"));
        assert!(r.body.is_empty());
    }
    let all: Vec<u8> = got.iter().flat_map(|r| r.body.clone()).collect();
    assert!(!String::from_utf8_lossy(&all).contains("secret"));
    assert!(
        host.errors().iter().any(|l| l.message.contains("refusing")),
        "an error is logged: {:?}",
        host.logs
    );
    // nobody is told the impostor's text; the rating waits
    assert!(replies.iter().all(|r| !r.text.contains("all good")));
    assert!(host.replies.iter().all(|r| !r.text.contains("all good")));
}

#[test]
fn fuel_and_memory_limits_hold_for_huge_input() {
    let mut host = PluginHost::new(None);
    host.configure(config(KEY));
    let p = place("telegram", "42", "agent:main:main");
    let big = "ü".repeat(2 << 20); // 4 MiB of text
    host.feed(inbound(&p, "42", false, "1", &big));
    host.feed(outbound(&p, &["2"], &big));
    let used = host.fuel_used();
    assert!(used < wasm_host::FUEL_PER_EVENT, "{used}");
    // a normal event is cheap
    host.feed(inbound(&p, "42", false, "3", "short"));
    assert!(host.fuel_used() < 5_000_000, "{}", host.fuel_used());
}

#[test]
fn memory_beyond_the_limit_traps_and_the_host_survives() {
    let mut host = PluginHost::new(None);
    let p = place("telegram", "42", "agent:main:main");
    let huge = "x".repeat(wasm_host::MEMORY_LIMIT + 1);
    let ev = inbound(&p, "42", false, "1", &huge);
    assert!(
        host.call(&ev).is_err(),
        "a 64 MiB string cannot enter a 64 MiB memory"
    );
    // a fresh instance works
    let mut host = PluginHost::new(None);
    host.configure(config(KEY));
    let r = host.feed(command("c1", &p, "42", "help"));
    assert!(r[0].text.contains("/rl good"));
}

#[test]
fn help_and_bad_input_are_answered_without_the_bridge() {
    let server = PlainServer::start(200, "{}");
    let mut host = PluginHost::new(Some(server.url()));
    host.configure(config(KEY));
    let p = place("telegram", "42", "agent:main:main");
    let r = host.feed(command("c1", &p, "42", "frobnicate"));
    assert!(r[0].text.contains("Unknown command"), "{}", r[0].text);
    assert!(r[0].text.contains("/rl undo"));
    let r = host.feed(command("c2", &p, "42", "rollback yesterday"));
    assert!(r[0].text.contains("version"), "{}", r[0].text);
    let r = host.feed(command("c3", &p, "42", ""));
    assert!(r[0].text.contains("/rl bad"));
    assert!(server.received().is_empty());
    // the same command id again is a duplicate: no second answer
    assert!(host.feed(command("c1", &p, "42", "frobnicate")).is_empty());
}

#[test]
fn wit_types_round_trip_through_the_component() {
    // Every event case reaches the plugin and comes back as effects without a trap.
    let mut host = PluginHost::new(None);
    host.configure(wit::Config {
        key_hex: KEY.into(),
        raters: vec!["telegram:7".into()],
        emoji_preset: wit::EmojiPreset::AgentLightning,
        emoji_overrides: vec![("🎉".into(), 0.5)],
        context_messages: 4,
        message_bytes: 256,
        poll_channels: vec!["telegram".into()],
    });
    let p = place("telegram", "42", "agent:main:main");
    host.feed(wit::Event::Callback(wit::Callback {
        id: "cb1".into(),
        place: p.clone(),
        sender: "42".into(),
        group: false,
        message_id: Some("9".into()),
        data: "good".into(),
    }));
    host.feed(wasm_host::reaction(
        "r1",
        "agent:main:main",
        "Telegram reaction added: 🎉 by A (@a) on msg 9",
        None,
    ));
    host.feed(wit::Event::BridgeResponse(wit::BridgeResponse {
        id: 999,
        status: 200,
        headers: vec![],
        body: vec![],
    }));
    host.tick();
    // A quiet reply on a poll channel gets a poll; a vote on it is claimed.
    host.feed(inbound(&p, "42", false, "501", "q"));
    host.feed(outbound(&p, &["502"], "a"));
    host.advance(3_000);
    host.tick();
    assert_eq!(host.polls.len(), 1, "{:?}", host.logs);
    let asked = &host.polls[0].place;
    assert_eq!(
        (asked.channel.as_str(), asked.chat.as_deref()),
        ("telegram", Some("42"))
    );
    assert_eq!(host.polls[0].options, ["👍 Good", "👎 Bad"]);
    let vote = format!("Poll response to \"{}\": 👍 Good", host.polls[0].question);
    host.feed(inbound(&p, "42", false, "9001", &vote));
    assert_eq!(host.claims.len(), 1);
    assert_eq!(host.claims[0].message_id.as_deref(), Some("9001"));
    assert!(host.errors().is_empty(), "{:?}", host.logs);
}
