//! One LoRA training step on SmolLM2-135M-Instruct: one 256-token sequence (16 prompt tokens,
//! 240 response tokens), LoRA r=16, alpha=32 on q/k/v/o, float32, forward + backward + AdamW.
//! The same shape as benches/peft_step.py (PyTorch + PEFT).
//!
//! `cargo bench -p rlclaw-trainer --bench train_step` (env: STEPS=10 WARMUP=2 SEQ=256;
//! `RLCLAW_DEVICE=cuda` with `--features cuda` for the GPU; `RLCLAW_BENCH_MODEL` for another
//! model file or Hugging Face folder of the same shape, by default the SmolLM2 GGUF;
//! `KERNELS=fused|device|reference` to pick the decoder's kernels, by default the device's;
//! `ANCHOR=32` adds the trainer's anchor term, the KL from the base's 32 likeliest tokens a
//! position, as a training run computes it). On a GPU
//! each phase ends with a device synchronisation, so the times are the GPU's.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use candle_core::DType;
use rlclaw_trainer::decoder::in_pool;
use rlclaw_trainer::optim::AdamW;
use rlclaw_trainer::{
    Decoder, DeviceChoice, Kernels, LoadedModel, LoraSet, ModelProfile, ModelSource, Preset,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU seconds (user + system) used by this process so far: a contention-proof companion to
/// wall time on a shared machine.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((ut + st) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (steps, warmup, seq) = (env("STEPS", 10), env("WARMUP", 2), env("SEQ", 256));
    let prompt_len = 16;
    let choice = DeviceChoice::from_env()?;
    let dev = choice.open()?;
    let path = match std::env::var_os("RLCLAW_BENCH_MODEL") {
        Some(p) => std::path::PathBuf::from(p),
        None => common::smollm2_gguf(),
    };
    let t = Instant::now();
    let m = LoadedModel::load_on(&ModelSource::from_path(&path)?, &dev)?;
    dev.synchronize()?;
    let load_s = t.elapsed().as_secs_f64();
    let text = "<|im_start|>user\nExplain how a hash map handles collisions.<|im_end|>\n<|im_start|>assistant\nA hash map stores key-value pairs in an array of buckets. When two keys hash to the same bucket, it resolves the collision by chaining (a list per bucket) or by open addressing (probing for the next free slot). ".repeat(20);
    let mut ids = m.encode(&text)?;
    ids.truncate(seq);
    assert_eq!(ids.len(), seq);
    println!(
        "model {} on {choice}; token ids: {} (sum {}, first {:?})",
        path.display(),
        ids.len(),
        ids.iter().map(|&i| i as u64).sum::<u64>(),
        &ids[..8]
    );
    let dec = Decoder::new(&m.config, &m.weights);
    let dec = match std::env::var("KERNELS").as_deref() {
        Ok("fused") => dec.with_kernels(Kernels::FusedCpu),
        Ok("device") => dec.with_kernels(Kernels::Device),
        Ok("reference") => dec.with_kernels(Kernels::Reference),
        Ok(other) => {
            return Err(format!("KERNELS={other}: expected fused, device or reference").into());
        }
        Err(_) => dec,
    };
    let mut h = Preset::Balanced.hyper_params(&ModelProfile::from_config(&m.config));
    h.lr = 1e-4;
    h.grad_clip = 1.0;
    let lora = LoraSet::init(&m.config, 16, 32.0, 1, DType::F32, &dev)?;
    let vars = lora.vars();
    let mut opt = AdamW::new(&vars)?;
    let anchor = match env("ANCHOR", 0) {
        0 => None,
        k => Some(dec.response_anchor(&ids, prompt_len, None, k)?.0),
    };
    let (mut fw, mut bw, mut op, mut tot, mut cpu) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..warmup + steps {
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        let loss = match &anchor {
            None => dec
                .response_logprobs(&ids, prompt_len, Some(&lora), true)?
                .mean_all()?
                .neg()?,
            Some(a) => {
                let (lp, kl) = dec.response_logprobs_anchored(&ids, prompt_len, &lora, a)?;
                (kl.mean_all()? - lp.mean_all()?)?
            }
        };
        dev.synchronize()?;
        let t1 = Instant::now();
        let g = in_pool(|| loss.backward())?;
        let grads = vars
            .iter()
            .map(|v| g.get(v).cloned().map_or_else(|| v.zeros_like(), Ok))
            .collect::<Result<Vec<_>, _>>()?;
        dev.synchronize()?;
        let t2 = Instant::now();
        opt.clip_and_step(&vars, &grads, &h)?;
        dev.synchronize()?;
        let t3 = Instant::now();
        let c = cpu_seconds() - c0;
        let s = |a: Instant, b: Instant| (b - a).as_secs_f64();
        let l: f32 = loss.to_scalar()?;
        eprintln!(
            "{} step {i}: forward {:.3}s backward {:.3}s optimiser {:.3}s total {:.3}s cpu {c:.2}s loss {l:.4}",
            if i < warmup { "warmup" } else { "timed" },
            s(t0, t1),
            s(t1, t2),
            s(t2, t3),
            s(t0, t3)
        );
        if i >= warmup {
            fw.push(s(t0, t1));
            bw.push(s(t1, t2));
            op.push(s(t2, t3));
            tot.push(s(t0, t3));
            cpu.push(c);
        }
    }
    let min = tot.iter().copied().fold(f64::INFINITY, f64::min);
    let med = median(&mut tot.clone());
    println!(
        "rlclaw-trainer (candle 0.10.2) SmolLM2-135M f32 on {choice} ({:?} kernels) seq={seq} LoRA r=16 q/k/v/o{}: {} trainable params, load {load_s:.2}s",
        dec.kernels(),
        anchor
            .as_ref()
            .map(|a| format!(" anchor top-{}", a.k))
            .unwrap_or_default(),
        lora.num_params()
    );
    println!(
        "train s/step min={min:.3} median={med:.3} (n={steps}) tok/s(median)={:.1} | forward median={:.3} backward median={:.3} optimiser median={:.4}",
        seq as f64 / med,
        median(&mut fw),
        median(&mut bw),
        median(&mut op)
    );
    println!(
        "cpu s/step (user+sys, all threads) median={:.2} min={:.2}",
        median(&mut cpu.clone()),
        cpu.iter().copied().fold(f64::INFINITY, f64::min)
    );
    println!(
        "peak_rss_MiB={:.0} threads={}",
        peak_rss_mib(),
        rayon_threads()
    );
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
