//! `rlclaw bench ingest`: a load tool that signs every request (generic tools cannot), with
//! coordinated-omission-corrected percentiles from hdrhistogram. It can drive ReinforceClaw's
//! bridge with the same workload, for side-by-side figures.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::existing;
use crate::client::Client;
use crate::keys::Key;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Signed captures or ratings against a running bridge.
    Ingest(IngestArgs),
    /// The simulated-user benchmark: scripted raters teach the model through the product's own
    /// path, arm beside arm; the held-out rate against ratings, with a plot.
    Learn(super::bench_learn::Args),
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Debug)]
enum Workload {
    /// `POST /v1/turns`, each a new ~1 KB turn.
    Captures,
    /// `POST /v1/ratings` on a pool of captured turns (the peer: capture, then rate it).
    Ratings,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Debug)]
enum Peer {
    /// rlclaw's signed protocol.
    Rlclaw,
    /// ReinforceClaw 0.1.0's bridge (`X-ReinforceClaw-Secret`).
    Reinforceclaw,
}

#[derive(clap::Args)]
struct IngestArgs {
    #[arg(long, value_enum, default_value = "ratings")]
    workload: Workload,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Hold this many requests per second in total (0: as fast as the bridge answers).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// The bridge's address (default: where `rlclaw serve` last listened).
    #[arg(long)]
    bridge: Option<SocketAddr>,
    /// Which server speaks at that address.
    #[arg(long, value_enum, default_value = "rlclaw")]
    peer: Peer,
    /// ReinforceClaw's shared secret (with --peer reinforceclaw).
    #[arg(long, env = "REINFORCECLAW_OPENCLAW_SECRET")]
    peer_secret: Option<String>,
    /// The server's process id, for its memory use (default: rlclaw's `bridge.pid`).
    #[arg(long)]
    pid: Option<u32>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    let args = match args.what {
        What::Ingest(args) => args,
        What::Learn(args) => return super::bench_learn::run(args),
    };
    let (addr, auth, pid) = match args.peer {
        Peer::Rlclaw => {
            let dir = existing(dir)?;
            let addr = args
                .bridge
                .unwrap_or_else(|| super::BridgeArgs { bridge: None }.addr(&dir));
            let pid = args.pid.or_else(|| {
                std::fs::read_to_string(dir.path(super::serve::PID_FILE))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
            });
            (addr, Auth::Signed(Box::new(dir.load_key()?)), pid)
        }
        Peer::Reinforceclaw => {
            let secret = args.peer_secret.clone().context(
                "--peer reinforceclaw needs --peer-secret (or REINFORCECLAW_OPENCLAW_SECRET)",
            )?;
            let addr = args
                .bridge
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8420)));
            (addr, Auth::Secret(secret), args.pid)
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(ingest(addr, Arc::new(auth), &args, pid))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

enum Auth {
    Signed(Box<Key>),
    Secret(String),
}

/// A request template: method, path, body.
struct Call {
    method: Method,
    path: &'static str,
    body: serde_json::Value,
}

/// The calls one iteration makes, and which of them counts as the measured operation.
fn iteration(
    auth: &Auth,
    workload: Workload,
    conn: usize,
    i: u64,
    pool: &[String],
) -> (Vec<Call>, usize) {
    let text = "x".repeat(900);
    match (auth, workload) {
        (Auth::Signed(_), Workload::Captures) => (
            vec![Call {
                method: Method::POST,
                path: "/v1/turns",
                body: serde_json::json!({
                    "turn_id": format!("bench-{conn}-{i}-{}", crate::now_ms()),
                    "session": format!("bench-{conn}"), "channel": "bench", "sender": format!("u{conn}"),
                    "message_ids": [format!("{conn}-{i}")],
                    "prompt": "How do I rate a reply?", "response": text,
                }),
            }],
            0,
        ),
        (Auth::Signed(_), Workload::Ratings) => (
            vec![Call {
                method: Method::POST,
                path: "/v1/ratings",
                body: serde_json::json!({
                    "event_id": format!("bench-{conn}-{i}-{}", crate::now_ms()),
                    "target": {"turn_id": pool[(i as usize) % pool.len()]},
                    "rater": format!("u{conn}"),
                    "value": if i.is_multiple_of(2) { 1.0 } else { -1.0 },
                    "source": "command",
                }),
            }],
            0,
        ),
        (Auth::Secret(_), workload) => {
            let capture = Call {
                method: Method::POST,
                path: "/feedback/capture",
                body: serde_json::json!({
                    "sessionKey": format!("bench-{conn}"), "channel": "bench",
                    "prompt": "How do I rate a reply?", "response": text,
                }),
            };
            if workload == Workload::Captures {
                (vec![capture], 0)
            } else {
                let rate = Call {
                    method: Method::POST,
                    path: "/feedback/command",
                    body: serde_json::json!({"sessionKey": format!("bench-{conn}"), "command": "good"}),
                };
                (vec![capture, rate], 1)
            }
        }
    }
}

/// One connection that reconnects when the server closes it (the peer closes after every answer).
struct Conn {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<u16> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(self.addr).await?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let Some(sender) = self.sender.as_mut() else {
            bail!("no connection");
        };
        sender.ready().await?;
        let res = sender.send_request(req).await;
        let res = match res {
            Ok(res) => res,
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        let status = res.status().as_u16();
        res.into_body().collect().await?;
        Ok(status)
    }
}

fn build(auth: &Auth, addr: SocketAddr, call: &Call) -> Result<Request<Full<Bytes>>> {
    let body = call.body.to_string().into_bytes();
    match auth {
        Auth::Signed(key) => crate::client::Signer::new(addr, (**key).clone()).sign(
            call.method.clone(),
            call.path,
            body,
        ),
        Auth::Secret(secret) => Ok(Request::builder()
            .method(call.method.clone())
            .uri(call.path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .header("x-reinforceclaw-secret", secret)
            .body(Full::new(Bytes::from(body)))?),
    }
}

#[derive(serde::Serialize)]
struct Report {
    peer: String,
    workload: String,
    connections: usize,
    duration_s: f64,
    target_rate: u64,
    ok: u64,
    errors: u64,
    ok_per_s: f64,
    latency_ms: Percentiles,
    /// At a fixed rate: how late tokio's timer sent requests that waited for nothing else.
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule_lag_ms: Option<Percentiles>,
    rss_idle_kb: Option<u64>,
    rss_peak_kb: Option<u64>,
}

#[derive(serde::Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Percentiles {
    fn of(micros: &Histogram<u64>) -> Percentiles {
        let ms = |q: f64| micros.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: micros.max() as f64 / 1000.0,
        }
    }
}

async fn ingest(
    addr: SocketAddr,
    auth: Arc<Auth>,
    args: &IngestArgs,
    pid: Option<u32>,
) -> Result<Report> {
    let rss_idle = pid.and_then(|p| crate::memory::status_kib(Some(p), "VmRSS"));
    // Ratings need turns to rate: capture a pool first (not measured).
    let mut pool: Vec<Vec<String>> = Vec::new();
    if let (Auth::Signed(key), Workload::Ratings) = (&*auth, args.workload) {
        let mut client = Client::connect(addr, (**key).clone()).await?;
        let stamp = crate::now_ms();
        for c in 0..args.connections {
            pool.push(Vec::new());
            for i in 0..16 {
                let turn_id = format!("bench-pool-{stamp}-{c}-{i}");
                let body = serde_json::json!({
                    "turn_id": turn_id, "session": format!("bench-{c}"), "channel": "bench",
                    "sender": format!("u{c}"), "prompt": "p", "response": "r",
                });
                client
                    .send(Method::POST, "/v1/turns", Some(&body))
                    .await?
                    .ok()?;
                pool[c].push(turn_id);
            }
        }
    }
    let pool = Arc::new(pool);
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs(args.duration);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (auth, pool, ok, errors) = (auth.clone(), pool.clone(), ok.clone(), errors.clone());
        let (workload, connections, rate) = (args.workload, args.connections, args.rate);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut lag = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut conn = Conn { addr, sender: None };
            // At a fixed rate each connection has a schedule; a request that had to wait for the
            // previous answer is timed from its planned send time, so a stall is charged to every
            // request it delays (coordinated omission). One that waited only for tokio's timer,
            // which wakes on whole milliseconds, is timed from when it was sent: that lateness is
            // the tool's, and is reported apart as the schedule lag.
            let interval =
                (rate > 0).then(|| Duration::from_secs_f64(connections as f64 / rate as f64));
            let mut i = 0u64;
            let mut answered_at = start;
            let conn_pool: &[String] = pool.get(c).map(Vec::as_slice).unwrap_or(&[]);
            while start.elapsed() < duration {
                let planned = match interval {
                    Some(every) => {
                        let at = start
                            + every.mul_f64(i as f64)
                            + every.mul_f64(c as f64 / connections as f64);
                        if at > start + duration {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        if answered_at > at {
                            at
                        } else {
                            let sent = Instant::now();
                            let late = sent.duration_since(at).as_micros() as u64;
                            let _ = lag.record(late.clamp(1, 60_000_000));
                            sent
                        }
                    }
                    None => Instant::now(),
                };
                let (calls, measured) = iteration(&auth, workload, c, i, conn_pool);
                let mut good = true;
                for (k, call) in calls.iter().enumerate() {
                    let status = match build(&auth, addr, call) {
                        Ok(req) => conn.send(req).await.unwrap_or(0),
                        Err(_) => 0,
                    };
                    let success = (200..300).contains(&status);
                    good &= success;
                    if k == measured && success {
                        let us = planned.elapsed().as_micros().max(1) as u64;
                        let _ = hist.record(us.min(60_000_000));
                    }
                }
                answered_at = Instant::now();
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            anyhow::Ok((hist, lag))
        }));
    }
    let mut rss_peak = None;
    let sampler = async {
        while start.elapsed() < duration {
            if let Some(p) = pid {
                rss_peak = rss_peak.max(crate::memory::status_kib(Some(p), "VmRSS"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    sampler.await;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut lag = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        let (h, l) = t.await??;
        hist.add(&h)?;
        lag.add(&l)?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    Ok(Report {
        peer: format!(
            "{:?}",
            match &*auth {
                Auth::Signed(_) => Peer::Rlclaw,
                Auth::Secret(_) => Peer::Reinforceclaw,
            }
        )
        .to_lowercase(),
        workload: format!("{:?}", args.workload).to_lowercase(),
        connections: args.connections,
        duration_s: elapsed,
        target_rate: args.rate,
        ok,
        errors: errors.load(Ordering::Relaxed),
        ok_per_s: ok as f64 / elapsed,
        latency_ms: Percentiles::of(&hist),
        schedule_lag_ms: (args.rate > 0 && !lag.is_empty()).then(|| Percentiles::of(&lag)),
        rss_idle_kb: rss_idle,
        rss_peak_kb: rss_peak.max(pid.and_then(|p| crate::memory::status_kib(Some(p), "VmHWM"))),
    })
}

/// A memory figure (kB) from /proc/PID/status.
fn print_report(r: &Report) {
    println!(
        "{} {} · {} connections · {:.1} s{}",
        r.peer,
        r.workload,
        r.connections,
        r.duration_s,
        if r.target_rate > 0 {
            format!(" · target {} req/s", r.target_rate)
        } else {
            String::new()
        }
    );
    println!("  ok {} ({:.0}/s), errors {}", r.ok, r.ok_per_s, r.errors);
    let l = &r.latency_ms;
    println!(
        "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    if let Some(l) = &r.schedule_lag_ms {
        println!(
            "  the tool's schedule lag ms (not in the latency): p50 {:.2}  p99 {:.2}  max {:.2}",
            l.p50, l.p99, l.max
        );
    }
    if let (Some(idle), Some(peak)) = (r.rss_idle_kb, r.rss_peak_kb) {
        println!(
            "  server RSS: idle {:.1} MB, peak {:.1} MB",
            idle as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
}
