//! The trainer on a CUDA GPU: the same gradient check against finite differences as on the CPU
//! (f64, every architecture, the device ops and the plain-op reference), GPU = CPU in values and
//! gradients, the loss terms on the GPU, and `train` end to end with the adapter back on the CPU
//! in PEFT format.
//!
//! Built without `--features cuda` these tests are ignored (cargo lists them as such). Built with
//! it on a machine without a usable GPU, each one prints `SKIPPED: …` and returns.

use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor, Var};
use rlclaw_trainer::lora::SplitMix64;
use rlclaw_trainer::objective::sample_loss;
use rlclaw_trainer::tiny::{random_weights, tiny_config, write_tiny_model};
use rlclaw_trainer::{
    Arch, Decoder, DeviceChoice, Kernels, LoadedModel, LoraSet, LoraWeights, ModelProfile,
    ModelSource, ObjectiveParams, Preset, Sample, TrainRequest, train,
};

/// GPU 0, or `None` after saying why the test is skipped.
fn gpu(test: &str) -> Option<Device> {
    if !DeviceChoice::cuda_compiled() {
        eprintln!("SKIPPED {test}: built without --features cuda");
        return None;
    }
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIPPED {test}: no usable CUDA device ({e})");
            None
        }
    }
}

fn randomise_b(lora: &LoraSet, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for l in &lora.layers {
        for p in l {
            let n = p.b.elem_count();
            let v: Vec<f64> = (0..n).map(|_| rng.uniform(0.2)).collect();
            let t = Tensor::from_vec(v, p.b.shape(), p.b.device())
                .and_then(|t| t.to_dtype(p.b.dtype()))
                .unwrap();
            p.b.set(&t).unwrap();
        }
    }
}

fn host(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn entry(v: &Var, idx: usize) -> f64 {
    host(v.as_tensor())[idx]
}

fn set_entry(v: &Var, idx: usize, x: f64) {
    let mut data = host(v.as_tensor());
    data[idx] = x;
    v.set(&Tensor::from_vec(data, v.shape(), v.device()).unwrap())
        .unwrap();
}

/// Log-probs and every LoRA gradient of `sum(w ⊙ logprobs)` on `dev` with `kernels`.
fn run(
    arch: Arch,
    dev: &Device,
    dtype: DType,
    kernels: Kernels,
    ids: &[u32],
    start: usize,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let cfg = tiny_config(arch);
    let weights = random_weights(&cfg, 5, DType::F64)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .to_device(dev)
        .unwrap();
    let dec = Decoder::new(&cfg, &weights).with_kernels(kernels);
    assert_eq!(dec.kernels(), kernels, "{kernels:?} runs on {dev:?}");
    let lora = LoraSet::init(&cfg, 4, 8.0, 9, dtype, dev).unwrap();
    randomise_b(&lora, 13);
    let n = ids.len() - start;
    let wv: Vec<f64> = (0..n)
        .map(|i| 0.5 + 0.25 * ((i % 5) as f64 - 2.0))
        .collect();
    let w = Tensor::from_vec(wv, n, dev)
        .and_then(|t| t.to_dtype(dtype))
        .unwrap();
    let lp = dec
        .response_logprobs(ids, start, Some(&lora), true)
        .unwrap();
    assert!(lp.device().same_device(dev));
    let g = (&lp * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let grads = lora
        .vars()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            host(
                g.get(v)
                    .unwrap_or_else(|| panic!("{arch:?} {kernels:?}: var {i} got no gradient")),
            )
        })
        .collect();
    (host(&lp), grads)
}

fn assert_close(
    what: &str,
    a: &(Vec<f64>, Vec<Vec<f64>>),
    b: &(Vec<f64>, Vec<Vec<f64>>),
    tol: f64,
) {
    for (x, y) in a.0.iter().zip(&b.0) {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}: log-prob {x} vs {y}"
        );
    }
    let scale =
        b.1.iter()
            .flatten()
            .fold(0.0f64, |m, v| m.max(v.abs()))
            .max(1e-30);
    for (va, vb) in a.1.iter().zip(&b.1) {
        for (x, y) in va.iter().zip(vb) {
            assert!(
                (x - y).abs() <= tol * (scale + y.abs()),
                "{what}: gradient {x} vs {y}"
            );
        }
    }
}

fn ids(n: usize) -> Vec<u32> {
    (0..n).map(|i| (i * 37 % 259) as u32).collect()
}

#[test]
#[cfg_attr(not(feature = "cuda"), ignore = "needs --features cuda and a GPU")]
fn lora_gradients_on_cuda_match_finite_differences() {
    let Some(dev) = gpu("lora_gradients_on_cuda_match_finite_differences") else {
        return;
    };
    let ids: Vec<u32> = vec![
        257, 10, 72, 101, 108, 108, 111, 258, 10, 257, 33, 200, 45, 7,
    ];
    let start = 9;
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3] {
        for kernels in [Kernels::Device, Kernels::Reference] {
            let cfg = tiny_config(arch);
            let weights = random_weights(&cfg, 7, DType::F64)
                .unwrap()
                .to_device(&dev)
                .unwrap();
            let dec = Decoder::new(&cfg, &weights).with_kernels(kernels);
            let lora = LoraSet::init(&cfg, 4, 8.0, 3, DType::F64, &dev).unwrap();
            randomise_b(&lora, 11);
            let n = ids.len() - start;
            let wv: Vec<f64> = (0..n)
                .map(|i| 0.3 + 0.2 * i as f64 * if i % 2 == 0 { 1.0 } else { -1.0 })
                .collect();
            let w = Tensor::from_vec(wv, n, &dev).unwrap();
            let objective = |track: bool| {
                dec.response_logprobs(&ids, start, Some(&lora), track)
                    .unwrap()
                    .mul(&w)
                    .unwrap()
                    .sum_all()
                    .unwrap()
            };
            let grads = objective(true).backward().unwrap();
            let eps = 1e-5;
            for layer in [0, cfg.num_layers - 1] {
                for m in 0..4 {
                    for (var, idx) in [
                        (&lora.layers[layer][m].a, 5usize),
                        (&lora.layers[layer][m].b, 3usize),
                    ] {
                        let auto = host(grads.get(var).unwrap())[idx];
                        let x0 = entry(var, idx);
                        set_entry(var, idx, x0 + eps);
                        let lp: f64 = objective(false).to_scalar().unwrap();
                        set_entry(var, idx, x0 - eps);
                        let lm: f64 = objective(false).to_scalar().unwrap();
                        set_entry(var, idx, x0);
                        let fd = (lp - lm) / (2.0 * eps);
                        let tol = 1e-6 * (1.0 + fd.abs().max(auto.abs()));
                        assert!(
                            (auto - fd).abs() <= tol,
                            "{arch:?} {kernels:?} layer {layer} module {m}: autograd {auto:e} vs finite difference {fd:e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
#[cfg_attr(not(feature = "cuda"), ignore = "needs --features cuda and a GPU")]
fn cuda_log_probs_and_gradients_equal_the_cpu_ones() {
    let Some(dev) = gpu("cuda_log_probs_and_gradients_equal_the_cpu_ones") else {
        return;
    };
    // 600 tokens: more than one block of logits on the GPU.
    for (n, start) in [(23usize, 7usize), (600, 5)] {
        let ids = ids(n);
        for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3] {
            let cpu = run(
                arch,
                &Device::Cpu,
                DType::F64,
                Kernels::FusedCpu,
                &ids,
                start,
            );
            for kernels in [Kernels::Device, Kernels::Reference] {
                let gpu = run(arch, &dev, DType::F64, kernels, &ids, start);
                assert_close(&format!("{arch:?} {kernels:?} f64 n={n}"), &gpu, &cpu, 1e-9);
            }
            let cpu32 = run(
                arch,
                &Device::Cpu,
                DType::F32,
                Kernels::FusedCpu,
                &ids,
                start,
            );
            let gpu32 = run(arch, &dev, DType::F32, Kernels::Device, &ids, start);
            assert_close(&format!("{arch:?} f32 n={n}"), &gpu32, &cpu32, 1e-3);
            assert_close(&format!("{arch:?} f32 vs f64 n={n}"), &gpu32, &cpu, 1e-3);
        }
    }
}

#[test]
#[cfg_attr(not(feature = "cuda"), ignore = "needs --features cuda and a GPU")]
fn the_loss_terms_on_cuda_equal_the_cpu_ones() {
    let Some(dev) = gpu("the_loss_terms_on_cuda_equal_the_cpu_ones") else {
        return;
    };
    let p = ObjectiveParams {
        kl_beta: 0.5,
        drift_band: 0.1,
        drift_hard: 0.5,
        ..Default::default()
    };
    let new = [-0.75f64, -0.7, -2.1, -0.2];
    let beh = [-1.0f32, -0.4, -2.0, -1.1];
    let rf = [-1.0f32, -0.9, -1.9, -0.6];
    let adv = [1.0, 0.5, -0.25, 1.5];
    let eval = |d: &Device| {
        let v = Var::from_vec(new.to_vec(), 4, d).unwrap();
        let s = sample_loss(&p, v.as_tensor(), &beh, &rf, &adv).unwrap();
        let g = s.loss.backward().unwrap();
        (
            s.actor,
            s.kl,
            s.scale,
            s.clipped_fraction,
            s.loss.to_scalar::<f64>().unwrap(),
            host(g.get(&v).unwrap()),
        )
    };
    let (a, b) = (eval(&Device::Cpu), eval(&dev));
    let close = |x: f64, y: f64| assert!((x - y).abs() < 1e-12, "{x} vs {y}");
    close(a.0, b.0);
    close(a.1, b.1);
    close(a.2, b.2);
    close(a.3, b.3);
    close(a.4, b.4);
    for (x, y) in a.5.iter().zip(&b.5) {
        close(*x, *y);
    }
    // Hand-computed, as in the CPU test of the same terms.
    let s = sample_loss(
        &p,
        &Tensor::from_vec(vec![-0.75f64, -0.75], 2, &dev).unwrap(),
        &[-1.0, -1.0],
        &[-1.0, -1.0],
        &[1.0, 1.0],
    )
    .unwrap();
    let actor = -0.25f64.exp();
    let kl = (-0.25f64).exp() + 0.25 - 1.0;
    close(s.actor, actor);
    close(s.kl, kl);
    close(s.scale, 0.4);
    close(s.loss.to_scalar::<f64>().unwrap(), 0.4 * actor + 0.5 * kl);
}

fn sample(id: &str, reward: f32, hint: Option<&str>) -> Sample {
    Sample {
        turn_id: id.into(),
        context: vec![],
        prompt: format!("question {id}"),
        response: format!("answer {id}, which is fine"),
        reward,
        hint: hint.map(str::to_string),
    }
}

#[test]
#[cfg_attr(not(feature = "cuda"), ignore = "needs --features cuda and a GPU")]
fn training_on_cuda_end_to_end_gives_the_cpu_result_and_a_cpu_peft_adapter() {
    if gpu("training_on_cuda_end_to_end_gives_the_cpu_result_and_a_cpu_peft_adapter").is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("rlclaw-cuda-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_tiny_model(&dir.join("model"), Arch::Qwen2, 3).unwrap();
    let mut req = TrainRequest::new(
        ModelSource::from_path(dir.join("model")).unwrap(),
        vec![
            sample("a", 1.0, None),
            sample("b", -1.0, Some("too long")),
            sample("c", 1.0, None),
        ],
    );
    let mut h =
        Preset::Balanced.hyper_params(&ModelProfile::new(rlclaw_trainer::ModelKind::Dense, 1, 1));
    h.rank = 4;
    h.alpha = 8.0;
    h.grad_accum = 2;
    h.max_steps = 3;
    h.lr = 1e-3;
    req.hyper = Some(h);
    req.seed = 7;
    let go = |d: DeviceChoice| {
        let mut r = req.clone();
        r.device = Some(d);
        let mut steps = 0;
        let rep = train(&r, &mut |_| steps += 1, &AtomicBool::new(false)).unwrap();
        assert_eq!(steps, 3);
        rep
    };
    let on_gpu = go(DeviceChoice::Cuda(0));
    let on_cpu = go(DeviceChoice::Cpu);
    let m = &on_gpu.metrics;
    assert!(m.first_loss.is_finite() && m.final_loss.is_finite() && m.mean_kl >= 0.0);
    assert!(
        (m.first_loss - on_cpu.metrics.first_loss).abs() < 1e-4 * (1.0 + m.first_loss.abs()),
        "first loss {} on the GPU vs {} on the CPU",
        m.first_loss,
        on_cpu.metrics.first_loss
    );
    // The adapter comes back on the CPU, in f32, and equals the CPU run's up to rounding.
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (lg, lc) in on_gpu.adapter.layers.iter().zip(&on_cpu.adapter.layers) {
        for ((ag, bg), (ac, bc)) in lg.iter().zip(lc) {
            for (g, c) in [(ag, ac), (bg, bc)] {
                assert!(g.device().is_cpu() && g.dtype() == DType::F32);
                for (x, y) in host(g).iter().zip(host(c)) {
                    diff += (x - y).powi(2);
                    norm += y * y;
                }
            }
        }
    }
    let rel = (diff / norm.max(1e-30)).sqrt();
    eprintln!("relative difference between the GPU and CPU adapters: {rel:.3e}");
    assert!(rel < 1e-2, "GPU and CPU adapters differ by {rel:e}");
    let out = dir.join("adapter");
    std::fs::create_dir_all(&out).unwrap();
    on_gpu.adapter.write_peft(&out, &on_gpu.base_model).unwrap();
    let (back, cfg) = LoraWeights::read_peft(&out).unwrap();
    assert_eq!(cfg.r, 4);
    // Continuing from it on the GPU, with it as the behaviour adapter too.
    let mut next = req.clone();
    next.device = Some(DeviceChoice::Cuda(0));
    next.parent_adapter = Some(out.clone());
    next.behaviour_adapter = Some(out.clone());
    let cont = train(&next, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    assert!(cont.metrics.final_loss.is_finite());
    assert_eq!(cont.adapter.rank, 4);
    assert_eq!(back.layers.len(), on_gpu.adapter.layers.len());
    // The adapter trained on the GPU loads and runs on the GPU and on the CPU alike.
    for d in [DeviceChoice::Cpu, DeviceChoice::Cuda(0)] {
        let model = LoadedModel::load_on(
            &ModelSource::from_path(dir.join("model")).unwrap(),
            &d.open().unwrap(),
        )
        .unwrap();
        let lora = LoraSet::from_weights(&back, &model.config, DType::F32, model.weights.device())
            .unwrap();
        let logits = Decoder::new(&model.config, &model.weights)
            .last_logits(&[257, 10, 72], Some(&lora))
            .unwrap();
        assert!(host(&logits).iter().all(|v| v.is_finite()), "{d}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
