//! Autograd gradients of the LoRA parameters through the whole decoder agree with central
//! finite differences (tiny random model in f64), for every supported architecture.

use candle_core::{DType, Device, Tensor, Var};
use rlclaw_trainer::lora::SplitMix64;
use rlclaw_trainer::tiny::{random_weights, tiny_config};
use rlclaw_trainer::{Arch, Decoder, Kernels, LoraSet};

fn randomise_b(lora: &LoraSet, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for l in &lora.layers {
        for p in l {
            let n = p.b.elem_count();
            let v: Vec<f64> = (0..n).map(|_| rng.uniform(0.2)).collect();
            let t = Tensor::from_vec(v, p.b.shape(), &Device::Cpu).unwrap();
            p.b.set(&t).unwrap();
        }
    }
}

fn objective(
    dec: &Decoder<'_>,
    lora: &LoraSet,
    ids: &[u32],
    start: usize,
    w: &Tensor,
    track: bool,
) -> Tensor {
    let lp = dec
        .response_logprobs(ids, start, Some(lora), track)
        .unwrap();
    lp.mul(w).unwrap().sum_all().unwrap()
}

fn entry(v: &Var, idx: usize) -> f64 {
    v.flatten_all().unwrap().to_vec1::<f64>().unwrap()[idx]
}

fn set_entry(v: &Var, idx: usize, x: f64) {
    let mut data = v.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    data[idx] = x;
    v.set(&Tensor::from_vec(data, v.shape(), &Device::Cpu).unwrap())
        .unwrap();
}

fn check(arch: Arch, fused: bool) {
    let k = if fused {
        Kernels::FusedCpu
    } else {
        Kernels::Reference
    };
    check_kernels(arch, k);
}

fn check_kernels(arch: Arch, kernels: Kernels) {
    let ids: Vec<u32> = vec![
        257, 10, 72, 101, 108, 108, 111, 258, 10, 257, 33, 200, 45, 7,
    ];
    check_ids(arch, kernels, &ids, 9);
}

fn check_ids(arch: Arch, kernels: Kernels, ids: &[u32], start: usize) {
    let cfg = tiny_config(arch);
    let weights = random_weights(&cfg, 7, DType::F64).unwrap();
    let dec = Decoder::new(&cfg, &weights).with_kernels(kernels);
    assert_eq!(dec.kernels(), kernels);
    let lora = LoraSet::init(&cfg, 4, 8.0, 3, DType::F64, &Device::Cpu).unwrap();
    randomise_b(&lora, 11);
    let n = ids.len() - start;
    let wv: Vec<f64> = (0..n)
        .map(|i| 0.3 + 0.2 * i as f64 * if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let w = Tensor::from_vec(wv, n, &Device::Cpu).unwrap();

    let loss = objective(&dec, &lora, ids, start, &w, true);
    let grads = loss.backward().unwrap();
    // Every LoRA variable is reached by the graph.
    for (i, v) in lora.vars().iter().enumerate() {
        let g = grads
            .get(v)
            .unwrap_or_else(|| panic!("{arch:?}: var {i} got no gradient"));
        let s: f64 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(s > 0.0, "{arch:?}: var {i} has a zero gradient");
    }
    let eps = 1e-5;
    let mut checked = 0;
    for layer in [0, cfg.num_layers - 1] {
        for m in 0..4 {
            for (var, idx) in [
                (&lora.layers[layer][m].a, 5usize),
                (&lora.layers[layer][m].b, 3usize),
            ] {
                let auto = entry(&Var::from_tensor(grads.get(var).unwrap()).unwrap(), idx);
                let x0 = entry(var, idx);
                set_entry(var, idx, x0 + eps);
                let lp: f64 = objective(&dec, &lora, ids, start, &w, false)
                    .to_scalar()
                    .unwrap();
                set_entry(var, idx, x0 - eps);
                let lm: f64 = objective(&dec, &lora, ids, start, &w, false)
                    .to_scalar()
                    .unwrap();
                set_entry(var, idx, x0);
                let fd = (lp - lm) / (2.0 * eps);
                let tol = 1e-6 * (1.0 + fd.abs().max(auto.abs()));
                assert!(
                    (auto - fd).abs() <= tol,
                    "{arch:?} layer {layer} module {m}: autograd {auto:e} vs finite difference {fd:e}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 16);
}

#[test]
fn lora_gradients_match_finite_differences_llama() {
    check(Arch::Llama, true);
}

#[test]
fn lora_gradients_match_finite_differences_llama_reference_ops() {
    check(Arch::Llama, false);
}

#[test]
fn lora_gradients_match_finite_differences_qwen2() {
    check(Arch::Qwen2, true);
}

#[test]
fn lora_gradients_match_finite_differences_qwen2_reference_ops() {
    check(Arch::Qwen2, false);
}

#[test]
fn lora_gradients_match_finite_differences_qwen3() {
    check(Arch::Qwen3, true);
}

#[test]
fn lora_gradients_match_finite_differences_qwen3_reference_ops() {
    check(Arch::Qwen3, false);
}

#[test]
fn fused_kernels_match_the_plain_op_reference_in_values_and_gradients() {
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3] {
        let cfg = tiny_config(arch);
        let weights = random_weights(&cfg, 5, DType::F64).unwrap();
        let lora = LoraSet::init(&cfg, 4, 8.0, 9, DType::F64, &Device::Cpu).unwrap();
        randomise_b(&lora, 13);
        let ids: Vec<u32> = (0..23).map(|i| (i * 37 % 259) as u32).collect();
        let run = |fused: bool| {
            let dec = Decoder::new(&cfg, &weights).with_fused_ops(fused);
            let lp = dec.response_logprobs(&ids, 7, Some(&lora), true).unwrap();
            let g = lp.sum_all().unwrap().backward().unwrap();
            let grads: Vec<Vec<f64>> = lora
                .vars()
                .iter()
                .map(|v| {
                    g.get(v)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap()
                })
                .collect();
            (lp.to_vec1::<f64>().unwrap(), grads)
        };
        let (la, ga) = run(true);
        let (lb, gb) = run(false);
        for (a, b) in la.iter().zip(&lb) {
            assert!((a - b).abs() < 1e-10, "{arch:?}: log-prob {a} vs {b}");
        }
        for (va, vb) in ga.iter().zip(&gb) {
            for (a, b) in va.iter().zip(vb) {
                assert!(
                    (a - b).abs() < 1e-9 * (1.0 + b.abs()),
                    "{arch:?}: gradient {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn long_responses_spanning_several_logit_blocks_have_exact_gradients() {
    let ids: Vec<u32> = (0..160).map(|i| (i * 53 % 259) as u32).collect();
    check_ids(Arch::Llama, Kernels::FusedCpu, &ids, 5);
}

// The device ops (the CUDA path) run on the CPU too: the same check for them here, so that CI
// covers their backward without a GPU.

#[test]
fn lora_gradients_match_finite_differences_llama_device_ops() {
    check_kernels(Arch::Llama, Kernels::Device);
}

#[test]
fn lora_gradients_match_finite_differences_qwen2_device_ops() {
    check_kernels(Arch::Qwen2, Kernels::Device);
}

#[test]
fn lora_gradients_match_finite_differences_qwen3_device_ops() {
    check_kernels(Arch::Qwen3, Kernels::Device);
}

#[test]
fn device_ops_match_the_fused_kernels_in_values_and_gradients() {
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3] {
        let cfg = tiny_config(arch);
        let weights = random_weights(&cfg, 5, DType::F64).unwrap();
        let lora = LoraSet::init(&cfg, 4, 8.0, 9, DType::F64, &Device::Cpu).unwrap();
        randomise_b(&lora, 13);
        let ids: Vec<u32> = (0..90).map(|i| (i * 37 % 259) as u32).collect();
        let run = |k: Kernels| {
            let dec = Decoder::new(&cfg, &weights).with_kernels(k);
            let lp = dec.response_logprobs(&ids, 7, Some(&lora), true).unwrap();
            let g = lp.sum_all().unwrap().backward().unwrap();
            let grads: Vec<Vec<f64>> = lora
                .vars()
                .iter()
                .map(|v| {
                    g.get(v)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap()
                })
                .collect();
            (lp.to_vec1::<f64>().unwrap(), grads)
        };
        let (la, ga) = run(Kernels::Device);
        let (lb, gb) = run(Kernels::FusedCpu);
        for (a, b) in la.iter().zip(&lb) {
            assert!((a - b).abs() < 1e-10, "{arch:?}: log-prob {a} vs {b}");
        }
        for (va, vb) in ga.iter().zip(&gb) {
            for (a, b) in va.iter().zip(vb) {
                assert!(
                    (a - b).abs() < 1e-9 * (1.0 + b.abs()),
                    "{arch:?}: gradient {a} vs {b}"
                );
            }
        }
    }
}
