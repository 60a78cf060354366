//! Cost of one plugin event in wasmtime (fuel and memory limits on), the way a host pays it:
//! lowering the event, the plugin's work, lifting the effects.
//!
//! `cargo bench -p rlclaw-tests --bench plugin_event`
//!
//! A scripted chat (questions, chunked replies, ratings by command and by reaction, ticks) runs
//! against an in-process stand-in for the bridge that answers every request at once with a
//! correctly signed 2xx, so the plugin's whole path (pairing, capture, signing, verification,
//! outbox) is exercised without network time. Each `handle` call is timed on its own.

use std::time::Instant;

use hmac::{Hmac, Mac};
use rlclaw_tests::wasm_host::{
    PluginHost, command, config, inbound, outbound, place, reaction, wit,
};
use sha2::{Digest, Sha256};

const KEY: &str = "5c1a9c0f1e2d3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f708192a3b4c5d6e";

fn answer(key: &[u8], req: &wit::BridgeRequest, now_s: u64) -> wit::BridgeResponse {
    let nonce = req
        .headers
        .iter()
        .find(|(k, _)| k == "x-rlclaw-nonce")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let (status, body): (u16, &[u8]) = match req.path.as_str() {
        "/v1/turns" => (201, br#"{"turn_id":"t"}"#),
        "/v1/ratings" => (
            200,
            br#"{"rating_id":"r","turn_id":"t","value":1.0,"counts":{"good":3,"bad":1,"untrained":4}}"#,
        ),
        "/v1/commands" => (200, br#"{"text":"3 good, 1 bad"}"#),
        _ => (200, br#"{"version":"0.1.0","counts":{"turns":1}}"#),
    };
    let canonical = format!(
        "rlclaw-v1-response\n{now_s}\n{nonce}\n{status}\n{}",
        hex::encode(Sha256::digest(body))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(canonical.as_bytes());
    wit::BridgeResponse {
        id: req.id,
        status,
        headers: vec![
            ("x-rlclaw-timestamp".into(), now_s.to_string()),
            (
                "x-rlclaw-signature".into(),
                format!("v1={}", hex::encode(mac.finalize().into_bytes())),
            ),
        ],
        body: body.to_vec(),
    }
}

struct Bench {
    host: PluginHost,
    key: Vec<u8>,
    /// (kind, nanoseconds, fuel) per handle call. Fuel counts the wasm instructions run, so it
    /// tells a change's effect without the machine's noise.
    samples: Vec<(&'static str, u64, u64)>,
    record: bool,
    errors: Vec<String>,
}

impl Bench {
    fn event(&mut self, kind: &'static str, ev: wit::Event) {
        let mut queue = vec![(kind, ev)];
        while let Some((kind, ev)) = queue.pop() {
            let t = Instant::now();
            let effects = self.host.call(&ev).expect("handle");
            let ns = t.elapsed().as_nanos() as u64;
            if self.record {
                self.samples.push((kind, ns, self.host.fuel_used()));
            }
            for fx in effects {
                match fx {
                    wit::Effect::Request(req) => {
                        let now_s = self.host.now_ms() / 1000;
                        queue.push((
                            "bridge-response",
                            wit::Event::BridgeResponse(answer(&self.key, &req, now_s)),
                        ));
                    }
                    wit::Effect::Log(l) if matches!(l.level, wit::LogLevel::Error) => {
                        self.errors.push(l.message)
                    }
                    _ => {}
                }
            }
        }
    }
}

fn stats(label: &str, v: &mut [u64], fuel: &mut [u64]) {
    if v.is_empty() {
        return;
    }
    v.sort_unstable();
    fuel.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "{label:<16} n={:>6}  min {:>6.2} µs  median {:>6.2} µs  p90 {:>6.2} µs  p99 {:>7.2} µs  fuel median {:>6}",
        v.len(),
        v[0] as f64 / 1000.0,
        p(0.5),
        p(0.9),
        p(0.99),
        fuel[fuel.len() / 2]
    );
}

fn main() {
    let t = Instant::now();
    let mut host = PluginHost::new(None);
    println!(
        "instantiate (component compiled and cached first): {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    host.configure(config(KEY));
    let mut b = Bench {
        host,
        key: hex::decode(KEY).unwrap(),
        samples: Vec::new(),
        record: false,
        errors: Vec::new(),
    };
    let rounds = 3000u64;
    let warmup = 300u64;
    let session = "agent:main:main";
    for i in 0..rounds + warmup {
        b.record = i >= warmup;
        let chat = format!("{}", 1000 + i % 50);
        let p = place("telegram", &chat, session);
        let sender = chat.clone();
        let q = format!("{}", i * 10);
        b.event(
            "inbound",
            inbound(
                &p,
                &sender,
                false,
                &q,
                "What's a good name for a cat? Something short.",
            ),
        );
        for c in 1..=2 {
            let id = format!("{}", i * 10 + c);
            b.event(
                "outbound",
                outbound(
                    &p,
                    &[&id],
                    "How about Miso, Pixel, or Juniper? Each is short and friendly.",
                ),
            );
        }
        match i % 4 {
            0 => b.event("command", command(&format!("c{i}"), &p, &sender, "good")),
            1 => {
                let mid = format!("{}", i * 10 + 1);
                let key = format!("telegram:reaction:add:{chat}:{mid}:{sender}:👍");
                let text = format!("Telegram reaction added: 👍 by A (@a) on msg {mid}");
                b.event(
                    "reaction",
                    reaction(&format!("r{i}"), session, &text, Some(&key)),
                );
            }
            2 => b.event(
                "command",
                command(&format!("c{i}"), &p, &sender, "bad too long 👎🏽"),
            ),
            _ => {}
        }
        b.host.advance(3_000);
        b.event("tick", wit::Event::Tick);
    }
    let mut all: Vec<u64> = b.samples.iter().map(|s| s.1).collect();
    let mut all_fuel: Vec<u64> = b.samples.iter().map(|s| s.2).collect();
    println!("per plugin event (wasmtime 48, release, fuel + memory limits on):");
    stats("all events", &mut all, &mut all_fuel);
    for kind in [
        "inbound",
        "outbound",
        "command",
        "reaction",
        "tick",
        "bridge-response",
    ] {
        let of_kind = || b.samples.iter().filter(|s| s.0 == kind);
        let mut v: Vec<u64> = of_kind().map(|s| s.1).collect();
        let mut fuel: Vec<u64> = of_kind().map(|s| s.2).collect();
        stats(kind, &mut v, &mut fuel);
    }
    assert!(b.errors.is_empty(), "{:?}", b.errors);
}
