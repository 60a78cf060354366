//! The real plugin component in wasmtime, fed scripted chat events, with its requests performed
//! against a real `rlclaw serve`.

use rlclaw_tests::bridge::Bridge;
use rlclaw_tests::wasm_host::{
    PluginHost, Sent, callback, command, config, inbound, outbound, place, reaction, wit,
};
use serde_json::Value;

const SESSION: &str = "agent:main:main";

fn start(config_toml: &str, raters: &[&str]) -> (Bridge, PluginHost) {
    let bridge = Bridge::start(config_toml);
    let mut host = PluginHost::new(Some(&bridge.url()));
    let mut cfg = config(bridge.key_hex());
    cfg.raters = raters.iter().map(|s| s.to_string()).collect();
    host.configure(cfg);
    assert!(host.errors().is_empty(), "{:?}", host.logs);
    (bridge, host)
}

fn status(bridge: &Bridge) -> Value {
    bridge
        .client()
        .call("GET", "/v1/status", &Value::Null)
        .json()
}

fn counts(bridge: &Bridge) -> (u64, u64, u64) {
    let s = status(bridge);
    let c = &s["counts"];
    (
        c["turns"].as_u64().unwrap_or(0),
        c["good"].as_u64().unwrap_or(0),
        c["bad"].as_u64().unwrap_or(0),
    )
}

fn last<'a>(host: &'a PluginHost, path: &str) -> &'a Sent {
    host.sent
        .iter()
        .rev()
        .find(|s| s.path == path)
        .unwrap_or_else(|| panic!("nothing was sent to {path}: {:?}", host.sent))
}

fn response(s: &Sent) -> Value {
    serde_json::from_slice(&s.response).unwrap_or(Value::Null)
}

fn rated_turn(host: &PluginHost) -> String {
    let r = last(host, "/v1/ratings");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.response));
    response(r)["turn_id"].as_str().unwrap().to_string()
}

#[test]
fn dm_turn_is_captured_with_context_and_rated_by_command() {
    let (bridge, mut host) = start("", &[]);
    let p = place("telegram", "42", SESSION);
    host.feed(inbound(&p, "42", false, "501", "hello bot, what is 2+2?"));
    host.feed(outbound(&p, &["502"], "4"));
    host.feed(inbound(&p, "42", false, "503", "and 3+3?"));
    host.feed(outbound(&p, &["504"], "6"));
    // the first turn was flushed by the second question
    let first = host.acked("/v1/turns");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].json()["prompt"], "hello bot, what is 2+2?");

    let replies = host.feed(command("c1", &p, "42", "good"));
    assert_eq!(replies.len(), 1, "{:?}", host.logs);
    assert!(
        replies[0].text.contains("rated good") && replies[0].text.contains("1 good"),
        "{}",
        replies[0].text
    );
    let turns = host.acked("/v1/turns");
    assert_eq!(turns.len(), 2);
    let body = turns[1].json();
    assert_eq!(body["prompt"], "and 3+3?");
    assert_eq!(body["response"], "6");
    assert_eq!(body["sender"], "42");
    assert_eq!(body["chat"], "42");
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["message_ids"], serde_json::json!(["504"]));
    let ctx = body["context"].as_array().unwrap();
    assert_eq!(ctx.len(), 2);
    assert_eq!(ctx[0]["content"], "hello bot, what is 2+2?");
    assert_eq!(ctx[1]["role"], "assistant");
    // the rating went to the second turn, after its capture was acknowledged
    assert_eq!(rated_turn(&host), body["turn_id"].as_str().unwrap());
    let order: Vec<&str> = host.sent.iter().map(|s| s.path.as_str()).collect();
    let cap = order.iter().rposition(|p| *p == "/v1/turns").unwrap();
    let rate = order.iter().rposition(|p| *p == "/v1/ratings").unwrap();
    assert!(cap < rate, "{order:?}");
    assert_eq!(counts(&bridge), (2, 1, 0));
}

#[test]
fn quiet_period_flushes_a_turn_without_a_rating() {
    let (bridge, mut host) = start("", &[]);
    let p = place("webchat", "main", SESSION);
    host.feed(inbound(&p, "cli", false, "k1", "hi"));
    host.feed(outbound(&p, &[], "hello"));
    host.tick();
    assert!(host.acked("/v1/turns").is_empty());
    host.advance(2_500);
    host.tick();
    assert_eq!(host.acked("/v1/turns").len(), 1);
    assert_eq!(counts(&bridge).0, 1);
}

#[test]
fn group_ratings_count_only_from_the_owner_or_a_configured_rater() {
    let (bridge, mut host) = start("raters = [\"carol\"]\n", &["carol"]);
    let g = place("telegram", "-1001", SESSION);
    host.feed(inbound(&g, "alice", true, "10", "alice asks"));
    host.feed(outbound(&g, &["11"], "answer for alice"));
    host.feed(inbound(&g, "bob", true, "12", "bob asks"));
    host.feed(outbound(&g, &["13"], "answer for bob"));

    // bob reacts on alice's reply: ignored, without a word
    let before = host.sent.len();
    let replies = host.feed(reaction(
        "r1",
        SESSION,
        "Telegram reaction added: 👎 by Bob (@bob) on msg 11",
        Some("telegram:reaction:add:-1001:11:bob:👎"),
    ));
    assert!(replies.is_empty());
    assert!(
        host.sent[before..].iter().all(|s| s.path != "/v1/ratings"),
        "{:?}",
        &host.sent[before..]
    );

    // alice rates her own turn by command, with a reason
    let r = host.feed(command("c1", &g, "alice", "bad too long"));
    assert!(r[0].text.contains("rated bad"), "{}", r[0].text);
    let alice_turn = rated_turn(&host);
    let rating = last(&host, "/v1/ratings").json();
    assert_eq!(rating["reason"], "too long");
    assert_eq!(rating["rater"], "alice");
    assert_eq!(rating["value"], -1.0);

    // carol, a configured rater, may rate bob's reply with a reaction
    host.feed(reaction(
        "r2",
        SESSION,
        "Telegram reaction added: 👍 by Carol (@carol) on msg 13",
        Some("telegram:reaction:add:-1001:13:carol:👍"),
    ));
    let bob_turn = rated_turn(&host);
    assert_ne!(alice_turn, bob_turn);
    assert_eq!(last(&host, "/v1/ratings").json()["rater"], "carol");

    // bob's own /rl rates bob's turn, not alice's
    host.feed(command("c2", &g, "bob", "good"));
    assert_eq!(rated_turn(&host), bob_turn);
    assert_eq!(counts(&bridge), (2, 2, 1));
}

#[test]
fn reaction_on_any_chunk_rates_the_reply_and_removal_takes_it_back() {
    let (bridge, mut host) = start("", &[]);
    // Slack: one outbound event per chunk
    let s = place("slack", "C024BE91L", "agent:main:slack");
    host.feed(inbound(&s, "U1", false, "1700000000.000100", "explain"));
    for (i, ts) in [
        "1700000001.000100",
        "1700000001.000200",
        "1700000001.000300",
    ]
    .iter()
    .enumerate()
    {
        host.feed(outbound(&s, &[ts], &format!("chunk {i}")));
    }
    host.feed(reaction(
        "ev1",
        "agent:main:slack",
        "Slack reaction added: :+1::skin-tone-3: by Una in #general msg 1700000001.000200",
        Some("slack:reaction:T1:added:C024BE91L:1700000001.000200:U1:+1::skin-tone-3:Ev1"),
    ));
    let turn = rated_turn(&host);
    let cap = host.acked("/v1/turns");
    assert_eq!(cap.len(), 1);
    assert_eq!(cap[0].json()["response"], "chunk 0\nchunk 1\nchunk 2");
    assert_eq!(cap[0].json()["turn_id"], turn.as_str());
    assert_eq!(
        last(&host, "/v1/ratings").json()["emoji"],
        "+1::skin-tone-3"
    );
    assert_eq!(counts(&bridge).1, 1);

    host.feed(reaction(
        "ev2",
        "agent:main:slack",
        "Slack reaction removed: :+1::skin-tone-3: by Una in #general msg 1700000001.000300",
        Some("slack:reaction:T1:removed:C024BE91L:1700000001.000300:U1:+1::skin-tone-3:Ev2"),
    ));
    let del = last(&host, "/v1/ratings");
    assert_eq!(del.method, "DELETE");
    assert_eq!(del.status, 200);
    assert_eq!(response(del)["removed"], true);
    assert_eq!(counts(&bridge).1, 0);

    // Telegram: one event with the last chunk's id; an earlier chunk's id still rates it
    let t = place("telegram", "42", SESSION);
    host.feed(inbound(&t, "42", false, "519", "long answer please"));
    host.feed(outbound(&t, &["524"], "five chunks"));
    host.feed(reaction(
        "tg1",
        SESSION,
        "Telegram reaction added: 👎 by Alice (@alice) on msg 521",
        Some("telegram:reaction:add:42:521:42:👎"),
    ));
    let tg_turn = rated_turn(&host);
    let cap = last(&host, "/v1/turns").json();
    assert_eq!(cap["turn_id"], tg_turn.as_str());
    assert_eq!(
        cap["message_ids"],
        serde_json::json!(["520", "521", "522", "523", "524"])
    );
    // an emoji outside the map is ignored
    let before = host.sent.len();
    host.feed(reaction(
        "tg2",
        SESSION,
        "Telegram reaction added: 🎉 by Alice (@alice) on msg 524",
        Some("telegram:reaction:add:42:524:42:🎉"),
    ));
    assert_eq!(host.sent.len(), before);
    assert_eq!(counts(&bridge), (2, 0, 1));
}

#[test]
fn discord_reactions_and_graded_emojis() {
    let bridge = Bridge::start("");
    let mut host = PluginHost::new(Some(&bridge.url()));
    let mut cfg = config(bridge.key_hex());
    cfg.emoji_preset = wit::EmojiPreset::AgentLightning;
    host.configure(cfg);
    let d = place("discord", "555", "agent:main:discord");
    host.feed(inbound(&d, "777", false, "900", "q"));
    host.feed(outbound(&d, &["901"], "a"));
    host.feed(reaction(
        "d1",
        "agent:main:discord",
        "Discord reaction added: 💯 by me#1 on dm #dm msg 901",
        Some("discord:reaction:added:901:777:💯"),
    ));
    rated_turn(&host);
    assert_eq!(last(&host, "/v1/ratings").json()["value"], 0.4);
    host.feed(reaction(
        "d2",
        "agent:main:discord",
        "Discord reaction removed: 💯 by me#1 on dm #dm msg 901",
        Some("discord:reaction:removed:901:777:💯"),
    ));
    assert_eq!(last(&host, "/v1/ratings").method, "DELETE");
    assert_eq!(response(last(&host, "/v1/ratings"))["removed"], true);
}

#[test]
fn aliases_and_emoji_forms_rate_the_latest_turn() {
    let (bridge, mut host) = start("", &[]);
    let p = place("telegram", "42", SESSION);
    host.feed(inbound(&p, "42", false, "1", "q"));
    host.feed(outbound(&p, &["2"], "a"));
    let cases = [
        ("+1", 1.0),
        ("y", 1.0),
        ("👍🏽", 1.0),
        ("👍\u{FE0F}", 1.0),
        ("no", -1.0),
        ("-1", -1.0),
        ("👎🏿 meh", -1.0),
        ("good", 1.0),
    ];
    let mut turn = None;
    for (i, (args, value)) in cases.iter().enumerate() {
        let r = host.feed(command(&format!("c{i}"), &p, "42", args));
        assert_eq!(r.len(), 1, "{args}: {:?}", host.logs);
        let rating = last(&host, "/v1/ratings");
        assert_eq!(rating.json()["value"], *value, "{args}");
        let t = rated_turn(&host);
        assert_eq!(turn.get_or_insert(t.clone()), &t);
    }
    assert_eq!(last(&host, "/v1/ratings").json().get("reason"), None);
    // a rating replaces the same rater's earlier one
    assert_eq!(counts(&bridge), (1, 1, 0));
}

#[test]
fn undo_and_status_show_the_bridges_answer() {
    let (bridge, mut host) = start("", &[]);
    let p = place("telegram", "42", SESSION);
    host.feed(inbound(&p, "42", false, "1", "q"));
    host.feed(outbound(&p, &["2"], "a"));
    host.feed(command("c1", &p, "42", "bad"));
    assert_eq!(counts(&bridge).2, 1);
    let r = host.feed(command("c2", &p, "42", "undo"));
    assert_eq!(r.len(), 1);
    let cmd = last(&host, "/v1/commands");
    assert_eq!(cmd.status, 200);
    assert_eq!(cmd.json()["name"], "undo");
    assert_eq!(cmd.json()["sender"], "42");
    assert_eq!(r[0].text, response(cmd)["text"].as_str().unwrap());
    assert_eq!(counts(&bridge).2, 0);
    let r = host.feed(command("c3", &p, "42", "status"));
    assert_eq!(
        r[0].text,
        response(last(&host, "/v1/commands"))["text"]
            .as_str()
            .unwrap()
    );
    assert!(!r[0].text.is_empty());
}

#[test]
fn admin_commands_follow_the_bridges_allowlist_and_rate_limit() {
    let (_bridge, mut host) = start("admins = [\"42\"]\nadmin_per_minute = 2\n", &[]);
    let p = place("telegram", "42", SESSION);
    let r = host.feed(command("c1", &p, "99", "pause"));
    let cmd = last(&host, "/v1/commands");
    assert_eq!(cmd.status, 403);
    let msg = response(cmd)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(r[0].text.contains(&msg), "{} vs {msg}", r[0].text);

    let r = host.feed(command("c2", &p, "42", "pause"));
    assert_eq!(last(&host, "/v1/commands").status, 200, "{:?}", r);
    host.feed(command("c3", &p, "42", "resume"));
    assert_eq!(last(&host, "/v1/commands").status, 200);
    let r = host.feed(command("c4", &p, "42", "pause"));
    let cmd = last(&host, "/v1/commands");
    assert_eq!(cmd.status, 429);
    let msg = response(cmd)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(r[0].text.contains(&msg), "{}", r[0].text);
    // the forwarded body carries the sender and arguments
    host.feed(command("c5", &p, "99", "rollback v2"));
    let body = last(&host, "/v1/commands").json();
    assert_eq!(body["name"], "rollback");
    assert_eq!(body["args"], serde_json::json!(["v2"]));
    assert_eq!(body["sender"], "99");
}

#[test]
fn bridge_down_then_back_gets_everything_in_order() {
    let (mut bridge, mut host) = start("", &[]);
    bridge.kill9();
    let p = place("telegram", "42", SESSION);
    host.feed(inbound(&p, "42", false, "1", "question one"));
    host.feed(outbound(&p, &["2"], "answer one"));
    let r = host.feed(command("c1", &p, "42", "good"));
    assert!(r[0].text.contains("not reachable"), "{}", r[0].text);
    host.feed(reaction(
        "r1",
        SESSION,
        "Telegram reaction added: 👎 by Alice (@alice) on msg 2",
        Some("telegram:reaction:add:42:2:42:👎"),
    ));
    // a status command is answered at once while the bridge is down
    let r = host.feed(command("c2", &p, "42", "status"));
    assert!(r[0].text.contains("can't reach"), "{}", r[0].text);
    host.advance(1_500);
    host.tick();
    assert!(host.sent.iter().all(|s| s.status == 0));
    assert!(host.sent.iter().all(|s| s.path == "/v1/status"));

    bridge.restart();
    host.bridge_url = Some(bridge.url());
    host.advance(61_000);
    host.tick();
    let ok: Vec<(&str, &str)> = host
        .sent
        .iter()
        .filter(|s| (200..300).contains(&s.status))
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        ok,
        [
            ("GET", "/v1/status"),
            ("POST", "/v1/turns"),
            ("POST", "/v1/ratings"),
            ("POST", "/v1/ratings"),
        ]
    );
    // the reaction came last, so the turn stands rated bad
    assert_eq!(counts(&bridge), (1, 0, 1));
}

#[test]
fn duplicate_events_are_ignored_and_retries_are_idempotent() {
    let (bridge, mut host) = start("", &[]);
    let p = place("telegram", "42", SESSION);
    host.feed(inbound(&p, "42", false, "1", "q"));
    host.feed(inbound(&p, "42", false, "1", "q"));
    host.feed(outbound(&p, &["2"], "a"));
    host.feed(outbound(&p, &["2"], "a"));
    let key = Some("telegram:reaction:add:42:2:42:👍");
    let text = "Telegram reaction added: 👍 by Alice (@alice) on msg 2";
    host.feed(reaction("r1", SESSION, text, key));
    host.feed(reaction("r1", SESSION, text, key));
    assert_eq!(host.acked("/v1/ratings").len(), 1);
    assert_eq!(host.acked("/v1/turns").len(), 1);
    assert_eq!(host.acked("/v1/turns")[0].json()["response"], "a");
    assert_eq!(host.feed(command("c1", &p, "42", "status")).len(), 1);
    assert_eq!(host.feed(command("c1", &p, "42", "status")).len(), 0);

    // a second plugin instance that sees the same reaction derives the same event id
    let mut other = PluginHost::new(Some(&bridge.url()));
    other.configure(config(bridge.key_hex()));
    other.feed(reaction("r1", SESSION, text, key));
    let first = host.acked("/v1/ratings")[0].json();
    let again = last(&other, "/v1/ratings").json();
    assert_eq!(first["event_id"], again["event_id"]);
    assert_eq!(counts(&bridge), (1, 1, 0));
}

#[test]
fn buttons_rate_the_turn_that_owns_the_message() {
    let (bridge, mut host) = start("", &[]);
    let g = place("telegram", "-5", SESSION);
    host.feed(inbound(&g, "alice", true, "10", "q"));
    host.feed(outbound(&g, &["11"], "a"));
    let tap = |id: &str, who: &str, data: &str| {
        wit::Event::Callback(wit::Callback {
            id: id.into(),
            place: g.clone(),
            sender: who.into(),
            group: true,
            message_id: Some("11".into()),
            data: data.into(),
        })
    };
    let r = host.feed(tap("b1", "mallory", "bad"));
    assert!(r[0].text.contains("Only the person"), "{}", r[0].text);
    assert!(host.acked("/v1/ratings").is_empty());
    let r = host.feed(tap("b2", "alice", "good"));
    assert!(r[0].text.contains("rated good"), "{}", r[0].text);
    assert_eq!(last(&host, "/v1/ratings").json()["source"], "button");
    assert_eq!(counts(&bridge), (1, 1, 0));
    // a poll answer changes alice's mind
    let r = host.feed(tap("b3", "alice", "poll:bad"));
    assert!(r[0].text.contains("rated bad"), "{}", r[0].text);
    assert_eq!(last(&host, "/v1/ratings").json()["source"], "poll");
    assert_eq!(counts(&bridge), (1, 0, 1));
    // an unknown payload is answered, not sent
    let before = host.sent.len();
    let r = host.feed(tap("b4", "alice", "maybe"));
    assert_eq!(r.len(), 1);
    assert_eq!(host.sent.len(), before);
}

/// The vote text OpenClaw 2026.9.6 delivers for a Telegram `poll_answer` (as `message_received`).
fn vote_text(question: &str, option: &str) -> String {
    format!("Poll response to \"{question}\": {option}")
}

fn turn_ids(host: &PluginHost) -> Vec<String> {
    host.acked("/v1/turns")
        .iter()
        .map(|s| s.json()["turn_id"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_vote_on_a_rating_poll_rates_the_turn_the_poll_was_sent_for() {
    let (bridge, mut host) = start("", &[]);
    let mut cfg = config(bridge.key_hex());
    cfg.poll_channels = vec!["telegram".into()];
    host.configure(cfg);
    let p = place("telegram", "42", SESSION);
    // Two turns, each complete after the quiet period: each gets its own poll.
    host.feed(inbound(&p, "42", false, "501", "first question"));
    host.feed(outbound(&p, &["502"], "first answer"));
    assert!(host.polls.is_empty(), "no poll while the reply may go on");
    host.advance(2_500);
    host.tick();
    host.feed(inbound(&p, "42", false, "503", "second question"));
    host.feed(outbound(&p, &["504"], "second answer"));
    host.advance(2_500);
    host.tick();
    assert_eq!(host.polls.len(), 2, "{:?}", host.logs);
    let (q1, q2) = (
        host.polls[0].question.clone(),
        host.polls[1].question.clone(),
    );
    assert_ne!(q1, q2, "each poll names its own turn");
    let asked = &host.polls[0].place;
    assert_eq!(
        (asked.channel.as_str(), asked.chat.as_deref()),
        ("telegram", Some("42"))
    );
    assert_eq!(host.polls[0].options, ["👍 Good", "👎 Bad"]);
    let turns = turn_ids(&host);
    assert_eq!(turns.len(), 2);

    // A vote on the first poll, after the second turn: it rates the first turn, is claimed
    // (so the host keeps it from the agent) and opens no turn.
    host.feed(inbound(&p, "42", false, "1001", &vote_text(&q1, "👍 Good")));
    assert_eq!(host.claims.len(), 1);
    assert_eq!(host.claims[0].message_id.as_deref(), Some("1001"));
    let r = last(&host, "/v1/ratings");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.response));
    assert_eq!(r.json()["source"], "poll");
    assert_eq!(r.json()["target"]["turn_id"], turns[0].as_str());
    assert_eq!(counts(&bridge), (2, 1, 0));
    // A changed vote replaces the rating.
    host.feed(inbound(&p, "42", false, "1002", &vote_text(&q1, "👎 Bad")));
    assert_eq!(rated_turn(&host), turns[0]);
    assert_eq!(counts(&bridge), (2, 0, 1));
    // The same vote reported again is a duplicate.
    let before = host.sent.len();
    host.feed(inbound(&p, "42", false, "1002", &vote_text(&q1, "👎 Bad")));
    assert_eq!(host.sent.len(), before);
    // A vote on the second poll rates the second turn.
    host.feed(inbound(&p, "42", false, "1003", &vote_text(&q2, "👍 Good")));
    assert_eq!(rated_turn(&host), turns[1]);
    assert_eq!(counts(&bridge), (2, 1, 1));
    host.advance(5_000);
    host.tick();
    assert_eq!(turn_ids(&host).len(), 2, "a vote is no prompt");
    assert!(host.errors().is_empty(), "{:?}", host.logs);
}

#[test]
fn poll_votes_from_others_or_on_unknown_polls_rate_nothing_and_other_polls_stay_the_agents() {
    let (bridge, mut host) = start("", &[]);
    let mut cfg = config(bridge.key_hex());
    cfg.poll_channels = vec!["telegram".into()];
    host.configure(cfg);
    let g = place("telegram", "-7", SESSION);
    host.feed(inbound(&g, "alice", true, "10", "group question"));
    host.feed(outbound(&g, &["11"], "group answer"));
    host.advance(2_500);
    host.tick();
    assert_eq!(host.polls.len(), 1);
    let q = host.polls[0].question.clone();
    // Someone else votes: claimed, but no rating.
    host.feed(inbound(
        &g,
        "mallory",
        true,
        "2001",
        &vote_text(&q, "👎 Bad"),
    ));
    assert_eq!(host.claims.len(), 1);
    assert!(host.acked("/v1/ratings").is_empty());
    // A vote on a poll the plugin never sent: claimed, nothing rated.
    let unknown = vote_text("How was this reply? (rlclaw #00000000)", "👍 Good");
    host.feed(inbound(&g, "alice", true, "2002", &unknown));
    assert_eq!(host.claims.len(), 2);
    assert!(host.acked("/v1/ratings").is_empty());
    // A vote on somebody else's poll is an ordinary message for the agent.
    host.feed(inbound(
        &g,
        "alice",
        true,
        "2003",
        "Poll response to \"Lunch?\": Pizza",
    ));
    assert_eq!(host.claims.len(), 2);
    // The owner's vote counts.
    host.feed(inbound(
        &g,
        "alice",
        true,
        "2004",
        &vote_text(&q, "👍 Good"),
    ));
    assert_eq!(last(&host, "/v1/ratings").status, 200);
    assert_eq!(counts(&bridge).1, 1);
    // No polls on channels not configured for them.
    let w = place("slack", "C1", SESSION);
    host.feed(inbound(&w, "U1", false, "1.1", "slack question"));
    host.feed(outbound(&w, &["1.2"], "slack answer"));
    host.advance(2_500);
    host.tick();
    assert_eq!(host.polls.len(), 1);
}

#[test]
fn a_tap_that_beats_the_replys_delivery_report_waits_for_it_and_rates_that_turn() {
    let (bridge, mut host) = start("", &[]);
    let p = place("telegram", "42", SESSION);
    host.feed(inbound(&p, "42", false, "501", "quick question"));
    // The person taps the button on 502 before the host has reported 502 as delivered.
    let r = host.feed(callback("tap1", &p, "42", "502", "good"));
    assert!(r.is_empty(), "the answer waits for the rating: {r:?}");
    assert!(host.acked("/v1/ratings").is_empty());
    let r = host.feed(outbound(&p, &["502"], "quick answer"));
    assert_eq!(r.len(), 1, "{:?}", host.logs);
    assert_eq!(r[0].to, "tap1");
    assert!(r[0].text.contains("rated good"), "{}", r[0].text);
    let turns = host.acked("/v1/turns");
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].json()["prompt"], "quick question");
    assert_eq!(
        rated_turn(&host),
        turns[0].json()["turn_id"].as_str().unwrap()
    );
    assert_eq!(counts(&bridge), (1, 1, 0));
    // A reaction that beats it waits the same way.
    host.feed(inbound(&p, "42", false, "503", "another one"));
    host.feed(reaction(
        "rx1",
        SESSION,
        "Telegram reaction added: 👎 by Alice (@alice) on msg 504",
        Some("telegram:reaction:add:42:504:42:👎"),
    ));
    assert_eq!(counts(&bridge), (1, 1, 0));
    host.feed(outbound(&p, &["504"], "another answer"));
    assert_eq!(counts(&bridge), (2, 1, 1));
}

#[test]
fn a_tap_on_a_reply_that_is_never_seen_is_answered_clearly() {
    let (bridge, mut host) = start("", &[]);
    let p = place("telegram", "42", SESSION);
    // While a reply is on its way the tap waits, at most a few seconds.
    host.feed(inbound(&p, "42", false, "501", "question"));
    assert!(
        host.feed(callback("tap1", &p, "42", "777", "good"))
            .is_empty()
    );
    host.feed(outbound(&p, &["502"], "answer"));
    host.advance(1_000);
    assert!(host.tick().is_empty());
    host.advance(5_000);
    let r = host.tick();
    assert_eq!(r.len(), 1, "{:?}", host.logs);
    assert_eq!(r[0].to, "tap1");
    assert!(r[0].text.contains("never saw that reply"), "{}", r[0].text);
    // With no reply on its way it is answered at once (the bridge is asked first: it may know
    // the reply from before a restart).
    let r = host.feed(callback("tap2", &p, "42", "778", "bad"));
    assert_eq!(r.len(), 1);
    assert!(r[0].text.contains("never saw that reply"), "{}", r[0].text);
    assert_eq!(last(&host, "/v1/ratings").status, 404);
    assert_eq!(counts(&bridge), (1, 0, 0));
}

#[test]
fn waiting_taps_are_bounded_in_count() {
    let (_bridge, mut host) = start("", &[]);
    let p = place("telegram", "42", SESSION);
    host.feed(inbound(&p, "42", false, "501", "question"));
    let mut answered = 0;
    for i in 0..70 {
        answered += host
            .feed(callback(
                &format!("t{i}"),
                &p,
                "42",
                &format!("{}", 1000 + i),
                "good",
            ))
            .len();
    }
    // 64 wait; the oldest six went to the bridge as they were and were answered.
    assert_eq!(answered, 6, "{:?}", host.replies);
}
