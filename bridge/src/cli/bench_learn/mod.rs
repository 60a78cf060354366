//! `rlclaw bench learn`: the simulated-user benchmark. A scripted rater with a hidden preference
//! rates replies through the product's own path: each arm runs its own `rlclaw serve` with the
//! model endpoint; replies come from that endpoint (the active adapter merged in), are captured
//! and rated over the signed bridge protocol, the daemon's scheduler trains at its threshold,
//! the gate decides what serves, and the endpoint reloads. After each round the preferred
//! style's rate on held-out prompts is read from the endpoint (several sampled replies per
//! prompt), with the log-prob margin and neutral perplexity from the trainer.
//!
//! Arms: `binary` (ratings only), `hints` (bad ratings carry the rater's reasons), `peer` (the
//! peer's objective, `[training] objective = "peer-mispo"`, ratings only).

mod daemon;
mod measure;
mod plot;
mod prompts;
mod raters;
mod resume;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use rlclaw_trainer::lora::SplitMix64;
use rlclaw_trainer::{Preset, is_held_out};
use serde::{Deserialize, Serialize};

use daemon::{ArmConfig, Daemon};
use measure::Scorer;
use prompts::{PromptSet, PromptStream};
use raters::Preference;

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    /// Good/bad ratings only.
    Binary,
    /// Good/bad ratings, some bad ones with the rater's reason (hints).
    Hints,
    /// The peer's objective (ReinforceClaw's MIS-PO) on good/bad ratings.
    Peer,
}

impl Arm {
    fn objective(self) -> &'static str {
        match self {
            Arm::Peer => "peer-mispo",
            Arm::Binary | Arm::Hints => "rlclaw",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Arm::Binary => "binary",
            Arm::Hints => "hints",
            Arm::Peer => "peer",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A small run that finishes in minutes (fewer prompts and rounds, short replies).
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Where the arms' data folders, results.json and the plots go.
    #[arg(long, default_value = "bench-learn")]
    out: PathBuf,
    /// Rater presets: starts-with:WORD, under:N, bullets, no-exclamation (repeatable).
    #[arg(long = "preset-rater")]
    raters: Vec<String>,
    /// Arms to run, side by side.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Arm::Binary, Arm::Hints, Arm::Peer])]
    arms: Vec<Arm>,
    /// Seed of the prompt order and of the rater's reasons (the same for every arm).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rounds per arm.
    #[arg(long)]
    rounds: Option<usize>,
    /// Trainable ratings per round; also the scheduler's threshold (`auto_after`).
    #[arg(long)]
    round_size: Option<usize>,
    /// Held-out prompts the rate is read on.
    #[arg(long)]
    heldout_prompts: Option<usize>,
    /// Sampled replies per held-out prompt.
    #[arg(long)]
    samples: Option<usize>,
    /// Longest reply in tokens.
    #[arg(long)]
    max_tokens: Option<usize>,
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Requests in flight to the model endpoint at once. One is fastest on a CPU: mistral.rs's
    /// batched decode there gives fewer tokens a second than one sequence at a time (BENCHMARKS.md).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// The GGUF or Hugging Face folder (default: the demo model, SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The trainer's learning rate in every arm (`[training] learning_rate`; default: the
    /// preset's).
    #[arg(long)]
    learning_rate: Option<f64>,
    /// The training preset of every arm (`[training] preset`): careful, balanced or aggressive.
    /// It sets the trainer's step and anchor and the gate's bounds on drift.
    #[arg(long, default_value = "balanced")]
    preset: Preset,
    /// Run nothing: report and plot from the points.json each arm wrote under --out (arms run
    /// as separate processes, or a run that stopped part way).
    #[arg(long, conflicts_with = "resume")]
    from_points: bool,
    /// Continue each arm from where an earlier run under --out stopped (its data folder,
    /// points.json and base.json) up to --rounds, instead of starting it over; a round cut off
    /// part way is finished. The other flags must be those it ran with. Arms with nothing
    /// saved start afresh.
    #[arg(long)]
    resume: bool,
}

/// The default rater: SmolLM2-135M-Instruct begins about one reply in six with "To" (measured
/// on the held-out prompts), so binary ratings have positives to learn from; with "Sure" it is
/// about one in twenty-five.
const QUICK_RATER: &str = "starts-with:To";

/// The sizes a run uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sizes {
    rounds: usize,
    round_size: usize,
    heldout_prompts: usize,
    samples: usize,
    max_tokens: usize,
    temperature: f64,
}

impl Args {
    fn sizes(&self) -> Sizes {
        // --quick: the prefix rater reads only the first word, so short replies suffice.
        let (rounds, round_size, heldout, samples, max_tokens) = if self.quick {
            (2, 8, 6, 2, 24)
        } else {
            (16, 16, 32, 4, 96)
        };
        Sizes {
            rounds: self.rounds.unwrap_or(rounds),
            round_size: self.round_size.unwrap_or(round_size).max(1),
            heldout_prompts: self.heldout_prompts.unwrap_or(heldout).max(1),
            samples: self.samples.unwrap_or(samples).max(1),
            max_tokens: self.max_tokens.unwrap_or(max_tokens).max(1),
            temperature: self.temperature,
        }
    }

    fn raters(&self) -> Result<Vec<Preference>> {
        let names: Vec<String> = if !self.raters.is_empty() {
            self.raters.clone()
        } else if self.quick {
            vec![QUICK_RATER.into()]
        } else {
            vec![QUICK_RATER.into(), "under:40".into()]
        };
        names.iter().map(|n| Preference::parse(n)).collect()
    }
}

/// The figures after one round.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Point {
    round: usize,
    /// Ratings given so far (held-out turns included).
    ratings: usize,
    /// Share of held-out replies with the preferred style.
    rate: f64,
    margin: Option<f64>,
    neutral_perplexity: f64,
    /// KL(base ‖ serving) of next-token distributions on the neutral set, nats per token
    /// (None in points written before it was measured).
    #[serde(default)]
    neutral_kl: Option<f64>,
    /// The version serving when this was read (None: the base).
    serving: Option<String>,
    /// Training runs so far, and how many of their versions the gate held back.
    runs: usize,
    held_back: usize,
    /// Since the arm started.
    seconds: f64,
    /// Where this round's time went.
    phases: Phases,
}

/// Seconds of one round by phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Phases {
    /// Generating, capturing and rating the round's replies.
    rating: f64,
    /// From the last rating until the endpoint serves what the gate chose.
    training: f64,
    /// Generating the held-out replies.
    held_out: f64,
    /// The margin and neutral perplexity.
    scoring: f64,
}

#[derive(Debug, Clone, Serialize)]
struct ArmResult {
    rater: String,
    arm: Arm,
    points: Vec<Point>,
    /// Ratings until the rate passed 0.8 and stayed there for 3 rounds (None: not reached).
    ratings_to_align: Option<usize>,
    /// Rate rise over the base after at most 64 ratings.
    rise_within_64: Option<f64>,
    /// Relative change of neutral perplexity at the last round.
    perplexity_change: Option<f64>,
}

/// What an arm ran with, kept beside its points.json so `--from-points` reports the arms'
/// settings, not its own command line's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ArmSettings {
    model: String,
    seed: u64,
    sizes: Sizes,
    /// None: the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    learning_rate: Option<f64>,
    /// Arms saved before the flag existed ran with the default.
    #[serde(default)]
    preset: Preset,
}

#[derive(Serialize)]
struct Report {
    command: String,
    #[serde(flatten)]
    settings: ArmSettings,
    results: Vec<ArmResult>,
    plots: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let sizes = args.sizes();
    let raters = args.raters()?;
    if args.arms.is_empty() {
        bail!("--arms needs at least one of binary, hints, peer");
    }
    if let Some(lr) = args.learning_rate
        && !crate::training::run::learning_rate_in_range(lr)
    {
        bail!("--learning-rate must be above 0 and below 1 (got {lr})");
    }
    let model = args
        .model
        .clone()
        .unwrap_or_else(crate::training::demo_model_path);
    if !args.from_points && !model.exists() {
        bail!(
            "the model {} is missing: fetch the demo model with .ci/fetch-model, or pass --model",
            model.display()
        );
    }
    let prompts = PromptSet::shipped()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let out = std::fs::canonicalize(&args.out)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut scorer = if args.from_points {
        None
    } else {
        Some(Scorer::load(&model)?)
    };
    let mut settings = ArmSettings {
        model: model.display().to_string(),
        seed: args.seed,
        sizes,
        learning_rate: args.learning_rate,
        preset: args.preset,
    };
    let mut saved_settings: Vec<(String, ArmSettings)> = Vec::new();
    let mut results = Vec::new();
    let mut plots = Vec::new();
    for rater in &raters {
        let mut curves = Vec::new();
        let mut base = None;
        for &arm in &args.arms {
            let r = match scorer.as_mut() {
                None => {
                    let (r, s) = saved_arm(&out, rater, arm)?;
                    if let Some(s) = s {
                        saved_settings.push((format!("{rater} / {}", arm.name()), s));
                    }
                    r
                }
                Some(scorer) => runtime.block_on(run_arm(
                    &out, &model, &prompts, rater, arm, &settings, &args, scorer, &mut base,
                ))?,
            };
            curves.push(r);
        }
        let path = out.join(format!("learn-{}.svg", file_safe(&rater.to_string())));
        let lines: Vec<plot::Curve> = curves
            .iter()
            .map(|r| plot::Curve {
                label: r.arm.name(),
                points: r
                    .points
                    .iter()
                    .map(|p| (p.ratings as f64, p.rate))
                    .collect(),
            })
            .collect();
        plot::draw(
            &path,
            &format!("rater {rater}: rate against ratings"),
            &lines,
        )?;
        plots.push(path.display().to_string());
        results.extend(curves);
    }
    if let Some((first, s)) = saved_settings.first() {
        if let Some((other, _)) = saved_settings.iter().find(|(_, o)| o != s) {
            bail!(
                "{first} and {other} ran with different settings (see settings.json in their folders): report them separately"
            );
        }
        settings = s.clone();
    }
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        settings,
        results,
        plots,
    };
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Where an arm keeps its data folder and points.json.
fn arm_dir(out: &std::path::Path, rater: &Preference, arm: Arm) -> PathBuf {
    out.join(format!("{}-{}", file_safe(&rater.to_string()), arm.name()))
}

/// An arm's result from the points.json it wrote as it ran, and the settings it ran with
/// (None for arms run before they were kept).
fn saved_arm(
    out: &std::path::Path,
    rater: &Preference,
    arm: Arm,
) -> Result<(ArmResult, Option<ArmSettings>)> {
    let dir = arm_dir(out, rater, arm);
    let settings = read_saved(&dir.join(SETTINGS_FILE))?;
    let path = dir.join(resume::POINTS_FILE);
    let Some(points) = read_saved::<Vec<Point>>(&path)? else {
        bail!(
            "cannot read {} (run the arm first, with the same --out)",
            path.display()
        );
    };
    if points.is_empty() {
        bail!("{} holds no points", path.display());
    }
    Ok((summarise(rater, arm, points), settings))
}

const SETTINGS_FILE: &str = "settings.json";

/// A JSON file an arm wrote; None when it is not there.
fn read_saved<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is malformed", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context(format!("cannot read {}", path.display())),
    }
}

fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The base's held-out replies, judged, and its point.
type Base = (Vec<(String, String, bool)>, Point);

#[allow(clippy::too_many_arguments)]
async fn run_arm(
    out: &std::path::Path,
    model: &std::path::Path,
    prompts: &PromptSet,
    rater: &Preference,
    arm: Arm,
    settings: &ArmSettings,
    args: &Args,
    scorer: &mut Scorer,
    base: &mut Option<Base>,
) -> Result<ArmResult> {
    let sizes = &settings.sizes;
    let dir = arm_dir(out, rater, arm);
    let stopped = if args.resume {
        resume::load(&dir, settings)?
    } else {
        None
    };
    if let Some(s) = stopped.as_ref()
        && s.rounds_done() >= sizes.rounds
    {
        eprintln!(
            "{rater} / {}: all {} rounds are done already ({})",
            arm.name(),
            s.rounds_done(),
            dir.display()
        );
        return Ok(summarise(rater, arm, s.points.clone()));
    }
    // Seconds count from the arm's start, across resumes.
    let t0 = match stopped.as_ref().and_then(|s| s.points.last()) {
        Some(p) => Instant::now()
            .checked_sub(Duration::from_secs_f64(p.seconds))
            .unwrap_or_else(Instant::now),
        None => Instant::now(),
    };
    let bar = ProgressBar::new(sizes.rounds as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:20}] round {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!("{rater} / {}", arm.name()));
    bar.enable_steady_tick(Duration::from_secs(1));
    bar.set_message("starting the daemon and loading the model");
    let mut d = match stopped {
        Some(_) => Daemon::restart(&dir).await?,
        None => {
            Daemon::start(
                &dir,
                &ArmConfig {
                    model,
                    auto_after: sizes.round_size,
                    objective: arm.objective(),
                    learning_rate: settings.learning_rate,
                    preset: settings.preset,
                },
            )
            .await?
        }
    };
    write_json(&dir.join(SETTINGS_FILE), settings)?;
    let mut client = d.client().await?;
    let held: Vec<&String> = prompts
        .held_out
        .iter()
        .take(sizes.heldout_prompts)
        .collect();

    let mut points = match stopped.as_ref() {
        Some(s) => {
            scorer.set_reference(&s.base);
            *base = Some((s.base.clone(), s.points[0].clone()));
            s.points.clone()
        }
        None => {
            // The base is the same model in every arm: it is read once per rater.
            let (judged, first) = match base.clone() {
                Some(b) => b,
                None => {
                    bar.set_message("reading the base");
                    let t = Instant::now();
                    let judged =
                        held_out_replies(&d, &held, rater, sizes, args.concurrency).await?;
                    let phases = Phases {
                        held_out: t.elapsed().as_secs_f64(),
                        ..Phases::default()
                    };
                    scorer.set_reference(&judged);
                    let point = read_point(scorer, &d.dir, &judged, None, t0, phases)?;
                    *base = Some((judged.clone(), point.clone()));
                    (judged, point)
                }
            };
            scorer.set_reference(&judged);
            // Kept so that a stopped run can resume with the same reference.
            write_json(&dir.join(resume::BASE_FILE), &judged)?;
            write_json(&dir.join(resume::POINTS_FILE), &[&first])?;
            vec![first]
        }
    };

    let mut stream = PromptStream::new(prompts.train.len(), args.seed);
    let mut rng = SplitMix64::new(args.seed ^ 0x5A7E_5EED);
    let (mut given, mut turn) = (0usize, 0usize);
    let mut last_run = 0i64;
    // Trainable turns already rated in a round that was cut off.
    let mut carried = 0;
    if let Some(s) = stopped.as_ref() {
        // Replaying the stored turns brings the prompt order and the rater's random reasons to
        // where they were; a rating that never reached the store is sent now.
        bar.set_message("replaying the ratings given so far");
        for t in &s.turns {
            let id = turn_id(arm, turn);
            let prompt = &prompts.train[stream.next_index()];
            if t.id != id || t.prompt != *prompt {
                bail!(
                    "{}: turn {turn} is {} on {:?}, not {id} on {prompt:?}: the folder was \
                     written with another seed or prompt set; start it afresh without --resume",
                    dir.display(),
                    t.id,
                    t.prompt
                );
            }
            let verdict = rater.rate(&t.reply, &mut rng);
            if !t.rated {
                rate(&mut client, arm, &t.id, &verdict).await?;
            }
            turn += 1;
            given += 1;
            carried += usize::from(given > s.ratings_done() && !is_held_out(&t.id));
        }
        last_run = s.last_run;
    }
    let first_round = stopped.as_ref().map_or(1, |s| s.rounds_done() + 1);
    bar.set_position(first_round as u64 - 1);
    for round in first_round..=sizes.rounds {
        bar.set_message(format!("rating ({given} so far)"));
        let mut phases = Phases::default();
        let t = Instant::now();
        // One round: enough trainable turns to reach the scheduler's threshold; held-out turns
        // (one in eight, by id) are rated too and only check new versions.
        let mut batch = Vec::new();
        let mut trainable = std::mem::take(&mut carried);
        while trainable < sizes.round_size {
            let id = turn_id(arm, turn);
            turn += 1;
            trainable += usize::from(!is_held_out(&id));
            batch.push((id, prompts.train[stream.next_index()].clone()));
        }
        let texts: Vec<String> = batch.iter().map(|(_, p)| p.clone()).collect();
        let replies = generate(
            &d,
            &texts,
            sizes.max_tokens,
            sizes.temperature,
            args.concurrency,
        )
        .await?;
        for ((id, prompt), reply) in batch.iter().zip(&replies) {
            let verdict = rater.rate(reply, &mut rng);
            let capture = serde_json::json!({
                "turn_id": id, "session": "bench", "channel": "bench", "sender": "rater",
                "message_ids": [id], "prompt": prompt, "response": reply,
            });
            client
                .send(Method::POST, "/v1/turns", Some(&capture))
                .await?
                .ok()?;
            rate(&mut client, arm, id, &verdict).await?;
            given += 1;
        }
        phases.rating = t.elapsed().as_secs_f64();
        bar.set_message(format!("{given} ratings; the scheduler trains"));
        let t = Instant::now();
        let (serving, run_id) = wait_for_training(&mut d, &mut client, sizes.round_size, last_run)
            .await
            .with_context(|| format!("{rater} / {}: round {round}", arm.name()))?;
        last_run = run_id;
        phases.training = t.elapsed().as_secs_f64();
        bar.set_message(format!("{given} ratings; reading the held-out rate"));
        let t = Instant::now();
        let judged = held_out_replies(&d, &held, rater, sizes, args.concurrency).await?;
        phases.held_out = t.elapsed().as_secs_f64();
        let (runs, held_back) = count_runs(&d.dir)?;
        let p = Point {
            round,
            ratings: given,
            runs,
            held_back,
            ..read_point(scorer, &d.dir, &judged, serving, t0, phases)?
        };
        bar.set_message(format!("rate {:.2}", p.rate));
        points.push(p);
        // A long run shows its figures as it goes, and keeps them if it stops early.
        write_json(&dir.join(resume::POINTS_FILE), &points)?;
        bar.inc(1);
    }
    bar.finish_with_message(format!(
        "rate {:.2} → {:.2}",
        points[0].rate,
        points.last().map(|p| p.rate).unwrap_or_default()
    ));
    drop(client);
    drop(d);
    Ok(summarise(rater, arm, points))
}

fn turn_id(arm: Arm, n: usize) -> String {
    format!("{}-{n}", arm.name())
}

/// The rater's verdict on a captured turn, over the signed protocol; only the hints arm passes
/// the rater's reason on.
async fn rate(
    client: &mut crate::client::Client,
    arm: Arm,
    id: &str,
    verdict: &raters::Verdict,
) -> Result<()> {
    let reason = match arm {
        Arm::Hints => verdict.reason.clone(),
        Arm::Binary | Arm::Peer => None,
    };
    let rating = serde_json::json!({
        "event_id": format!("rate-{id}"), "target": {"turn_id": id}, "rater": "rater",
        "value": if verdict.good { 1.0 } else { -1.0 }, "source": "command",
        "reason": reason,
    });
    client
        .send(Method::POST, "/v1/ratings", Some(&rating))
        .await?
        .ok()?;
    Ok(())
}

fn write_json(path: &std::path::Path, value: &impl Serialize) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The rate, margin and perplexity of what serves; the caller fills in the round's counts.
fn read_point(
    scorer: &Scorer,
    dir: &std::path::Path,
    judged: &[(String, String, bool)],
    serving: Option<String>,
    t0: Instant,
    mut phases: Phases,
) -> Result<Point> {
    let t = Instant::now();
    let weights = Scorer::serving_weights(dir, serving.as_deref())?;
    let good = judged.iter().filter(|j| j.2).count();
    let margin = scorer.margin(weights.as_ref())?;
    let neutral_perplexity = scorer.perplexity(weights.as_ref())?;
    let neutral_kl = Some(scorer.kl(weights.as_ref())?);
    phases.scoring = t.elapsed().as_secs_f64();
    Ok(Point {
        round: 0,
        ratings: 0,
        rate: good as f64 / judged.len().max(1) as f64,
        margin,
        neutral_perplexity,
        neutral_kl,
        serving,
        runs: 0,
        held_back: 0,
        seconds: t0.elapsed().as_secs_f64(),
        phases,
    })
}

/// Several sampled replies per held-out prompt, judged by the rater, as (prompt, reply, good).
/// Each reply stops once the rater's verdict is decided (the prefix rater reads only the first
/// word): sampling runs left to right, so the rate is the same as with whole replies.
async fn held_out_replies(
    d: &Daemon,
    held: &[&String],
    rater: &Preference,
    sizes: &Sizes,
    concurrency: usize,
) -> Result<Vec<(String, String, bool)>> {
    let asks: Vec<String> = held
        .iter()
        .flat_map(|p| std::iter::repeat_n((*p).clone(), sizes.samples))
        .collect();
    let max_tokens = rater.tokens_to_decide(sizes.max_tokens);
    let replies = generate(d, &asks, max_tokens, sizes.temperature, concurrency).await?;
    Ok(asks
        .into_iter()
        .zip(replies)
        .map(|(p, r)| {
            let good = rater.check(&r);
            (p, r, good)
        })
        .collect())
}

/// Replies from the model endpoint, `concurrency` requests in flight (mistral.rs batches them).
async fn generate(
    d: &Daemon,
    prompts: &[String],
    max_tokens: usize,
    temperature: f64,
    concurrency: usize,
) -> Result<Vec<String>> {
    let mut out = vec![String::new(); prompts.len()];
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    loop {
        while tasks.len() < concurrency.max(1) && next < prompts.len() {
            let endpoint = d.endpoint_handle();
            let (i, p) = (next, prompts[next].clone());
            tasks.spawn(async move { (i, endpoint.reply(&p, max_tokens, temperature).await) });
            next += 1;
        }
        match tasks.join_next().await {
            Some(joined) => {
                let (i, reply) = joined?;
                out[i] = reply?;
            }
            None => break,
        }
    }
    Ok(out)
}

/// Waits until the scheduler has trained on this round (the peer's arm may take several runs
/// and leaves the newest ratings waiting), nothing more is due, and the endpoint serves the
/// active version. Returns that version and the latest run's id.
async fn wait_for_training(
    d: &mut Daemon,
    client: &mut crate::client::Client,
    threshold: usize,
    last_run: i64,
) -> Result<(Option<String>, i64)> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let s = client.send(Method::GET, "/v1/status", None).await?.ok()?;
        let run = &s["training"]["last_run"];
        let id = run["id"].as_i64().unwrap_or(0);
        let waiting = s["since_last_run"]["to_train"]
            .as_u64()
            .or_else(|| s["counts"]["untrained"].as_u64())
            .unwrap_or(0) as usize;
        let idle = s["training"]["state"] == "idle";
        if id > last_run && idle && waiting < threshold {
            if run["outcome"] != "ok" {
                bail!(
                    "the training run ended {}: {}",
                    run["outcome"],
                    run["detail"].as_str().unwrap_or("")
                );
            }
            // The run is recorded before its version is promoted: wait for the promotion.
            let serving = s["adapter"].as_str().map(str::to_owned);
            let version = run["adapter"].as_str();
            let promoted = match version {
                Some(v) => gate_passed(&d.dir, v)?,
                None => false,
            };
            if !promoted || serving.as_deref() == version {
                d.wait_for_endpoint(Some(serving.as_deref())).await?;
                return Ok((serving, id));
            }
        }
        if Instant::now() > deadline {
            bail!("the scheduler did not train within an hour: {s}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether the gate let a version serve.
fn gate_passed(dir: &std::path::Path, version: &str) -> Result<bool> {
    let store = rlclaw_trainer::AdapterStore::open(dir.join("adapters"))?;
    let info = store.get(version)?;
    Ok(info
        .metadata
        .gate
        .as_ref()
        .is_some_and(|g| g["verdict"] == "promote"))
}

/// Runs so far in an arm's data folder, and how many of their versions never served.
fn count_runs(dir: &std::path::Path) -> Result<(usize, usize)> {
    let conn = crate::store::open_ro(&dir.join(crate::datadir::DB_FILE))?;
    let runs: i64 = conn.query_row("SELECT count(*) FROM runs WHERE outcome = 'ok'", [], |r| {
        r.get(0)
    })?;
    let store = rlclaw_trainer::AdapterStore::open(dir.join("adapters"))?;
    let held_back = store
        .list()?
        .iter()
        .filter(|v| {
            v.metadata
                .gate
                .as_ref()
                .is_some_and(|g| g["verdict"] == "hold")
        })
        .count();
    Ok((runs as usize, held_back))
}

fn summarise(rater: &Preference, arm: Arm, points: Vec<Point>) -> ArmResult {
    let base = points.first().map(|p| p.rate).unwrap_or(0.0);
    let rise_within_64 = points
        .iter()
        .filter(|p| p.ratings > 0 && p.ratings <= 64)
        .map(|p| p.rate - base)
        .reduce(f64::max);
    let ratings_to_align = points.iter().enumerate().find_map(|(i, p)| {
        let next3 = points.get(i..i + 3)?;
        next3.iter().all(|q| q.rate >= 0.8).then_some(p.ratings)
    });
    let perplexity_change = match (points.first(), points.last()) {
        (Some(a), Some(b)) if points.len() > 1 => {
            Some(b.neutral_perplexity / a.neutral_perplexity - 1.0)
        }
        _ => None,
    };
    ArmResult {
        rater: rater.to_string(),
        arm,
        points,
        ratings_to_align,
        rise_within_64,
        perplexity_change,
    }
}

fn print_report(r: &Report) {
    println!(
        "rlclaw bench learn: {} ratings per round, {} rounds, {} held-out prompts x {} replies, max {} tokens, seed {}",
        r.settings.sizes.round_size,
        r.settings.sizes.rounds,
        r.settings.sizes.heldout_prompts,
        r.settings.sizes.samples,
        r.settings.sizes.max_tokens,
        r.settings.seed
    );
    println!("preset {}", r.settings.preset);
    if let Some(lr) = r.settings.learning_rate {
        println!("learning rate {lr:e} (not the preset's)");
    }
    for a in &r.results {
        println!("\nrater {} / arm {}:", a.rater, a.arm.name());
        println!("  ratings  rate   margin   neutral ppl  KL/token  serving  runs  held back");
        for p in &a.points {
            println!(
                "  {:>7}  {:.2}  {:>7}  {:>11.3}  {:>8}  {:>7}  {:>4}  {:>9}",
                p.ratings,
                p.rate,
                p.margin.map(|m| format!("{m:+.3}")).unwrap_or("-".into()),
                p.neutral_perplexity,
                p.neutral_kl
                    .map(|k| format!("{k:.3}"))
                    .unwrap_or("-".into()),
                p.serving.as_deref().unwrap_or("base"),
                p.runs,
                p.held_back
            );
        }
        println!(
            "  rise within 64 ratings: {}; ratings to align (>= 0.8 for 3 rounds): {}; neutral perplexity change: {}",
            a.rise_within_64
                .map(|x| format!("{x:+.2}"))
                .unwrap_or("-".into()),
            a.ratings_to_align
                .map(|x| x.to_string())
                .unwrap_or("not reached".into()),
            a.perplexity_change
                .map(|x| format!("{:+.1}%", 100.0 * x))
                .unwrap_or("-".into())
        );
        let total = |f: fn(&Phases) -> f64| a.points.iter().map(|p| f(&p.phases)).sum::<f64>();
        println!(
            "  time: {:.0} s rating, {:.0} s training, {:.0} s held-out replies, {:.0} s scoring",
            total(|p| p.rating),
            total(|p| p.training),
            total(|p| p.held_out),
            total(|p| p.scoring)
        );
    }
    for p in &r.plots {
        println!("plot: {p}");
    }
}
