//! The evaluation gate on a tiny random model: adapters trained toward the held-out ratings
//! pass, adapters trained against them are held back with the figures, too few held-out turns
//! check the drift alone, and turns that cannot be scored are left out.

use std::sync::atomic::AtomicBool;

use rlclaw_trainer::eval::{GatePolicy, HoldReason, Verdict, evaluate, neutral_perplexity};
use rlclaw_trainer::tiny::write_tiny_model;
use rlclaw_trainer::{
    Arch, ChatMessage, LoadedModel, LoraWeights, ModelKind, ModelProfile, ModelSource, Preset,
    Sample, TrainRequest, train_with_model,
};

const LIKED: &str = "Sure: short answer.";
const DISLIKED: &str = "A very long and winding answer that goes on.";

fn model(name: &str) -> LoadedModel {
    let d = std::env::temp_dir().join(format!("rlclaw-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    write_tiny_model(&d, Arch::Llama, 3).unwrap();
    let m = LoadedModel::load(&ModelSource::from_path(&d).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&d);
    m
}

/// A turn answered with the liked or the disliked reply, rated the person's way (or `against`).
fn turn(i: usize, liked: bool, against: bool) -> Sample {
    let good = liked != against;
    Sample {
        turn_id: format!("t{i}"),
        context: vec![ChatMessage::new("user", "hello")],
        prompt: format!("question {i}"),
        response: if liked { LIKED } else { DISLIKED }.into(),
        reward: if good { 1.0 } else { -1.0 },
        hint: None,
    }
}

fn turns(range: std::ops::Range<usize>, against: bool) -> Vec<Sample> {
    range.map(|i| turn(i, i % 2 == 0, against)).collect()
}

fn trained(m: &LoadedModel, samples: Vec<Sample>, parent: Option<&LoraWeights>) -> LoraWeights {
    let dir = std::env::temp_dir().join(format!(
        "rlclaw-eval-parent-{}-{}",
        std::process::id(),
        samples.len()
    ));
    let mut req = TrainRequest::new(m.source.clone(), samples);
    let mut h = Preset::Balanced.hyper_params(&ModelProfile::new(ModelKind::Dense, 1, 1));
    h.rank = 4;
    h.alpha = 8.0;
    h.grad_accum = 2;
    h.max_steps = 8;
    h.lr = 3e-3;
    req.hyper = Some(h);
    req.seed = 5;
    if let Some(p) = parent {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        p.write_peft(&dir, &m.name).unwrap();
        req.parent_adapter = Some(dir.clone());
        req.behaviour_adapter = Some(dir.clone());
    }
    let r = train_with_model(m, &req, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    r.adapter
}

fn policy() -> GatePolicy {
    GatePolicy::for_preset(Preset::Aggressive)
}

#[test]
fn a_candidate_trained_toward_the_held_out_ratings_passes_and_one_trained_against_them_is_held() {
    let m = model("direction");
    let held_out = turns(100..108, false);
    let toward = trained(&m, turns(0..16, false), None);
    let r = evaluate(&m, &toward, None, &held_out, &policy()).unwrap();
    assert_eq!(r.verdict, Verdict::Promote, "{r:?}");
    assert!(!r.drift_only);
    assert_eq!(r.held_out_turns, 8);
    let h = r.candidate.held_out.as_ref().unwrap();
    assert_eq!((h.good, h.bad), (4, 4));
    assert!(h.margin_vs_base > 0.0, "{h:?}");
    assert_eq!(h.leans, 8, "{h:?}");
    assert!(r.difference.unwrap() > 0.0);
    assert!(r.active.is_none());
    assert!(r.candidate.drift.tokens > 500);

    // Continuing from it on ratings against the person's taste: worse than the active one.
    let against = trained(&m, turns(16..32, true), Some(&toward));
    let r = evaluate(&m, &against, Some(&toward), &held_out, &policy()).unwrap();
    assert_eq!(r.verdict, Verdict::Hold, "{r:?}");
    match &r.reasons[..] {
        [
            HoldReason::WorseOnHeldOut {
                turns,
                difference,
                noise,
                candidate_leans,
                active_leans,
            },
        ] => {
            assert_eq!(*turns, 8);
            assert!(*difference < -noise, "{difference} {noise}");
            assert_eq!(*active_leans, 8);
            assert!(candidate_leans < active_leans);
        }
        other => panic!("{other:?}"),
    }
    let a = r.active.as_ref().unwrap().held_out.as_ref().unwrap();
    let c = r.candidate.held_out.as_ref().unwrap();
    assert!(c.margin.unwrap() < a.margin.unwrap());
    assert!((r.difference.unwrap() - (c.margin_vs_base - a.margin_vs_base)).abs() < 1e-9);
}

#[test]
fn a_candidate_equal_to_the_active_adapter_is_not_worse() {
    let m = model("equal");
    let held_out = turns(100..106, false);
    let a = trained(&m, turns(0..8, false), None);
    let r = evaluate(&m, &a, Some(&a), &held_out, &policy()).unwrap();
    assert_eq!(r.verdict, Verdict::Promote, "{r:?}");
    assert_eq!(r.difference, Some(0.0));
    assert_eq!(r.noise, Some(0.0));
    assert_eq!(r.candidate, r.active.clone().unwrap());
}

#[test]
fn with_too_few_held_out_turns_only_the_drift_decides() {
    let m = model("few");
    let against = trained(&m, turns(0..16, true), None);
    let held_out = turns(100..103, false);
    let r = evaluate(&m, &against, None, &held_out, &policy()).unwrap();
    assert!(r.drift_only);
    assert_eq!(r.held_out_turns, 3);
    assert_eq!(r.min_held_out, 4);
    // Worse on the three turns, but three are too few to say: it passes on drift.
    assert!(r.difference.unwrap() < 0.0);
    assert_eq!(r.verdict, Verdict::Promote, "{r:?}");
    // The same adapter with a bound it cannot meet is held for its drift.
    let strict = GatePolicy {
        max_perplexity_change: -1.0,
        ..policy()
    };
    let r = evaluate(&m, &against, None, &held_out, &strict).unwrap();
    assert_eq!(r.verdict, Verdict::Hold);
    assert!(matches!(r.reasons[..], [HoldReason::Drift { .. }]), "{r:?}");
}

#[test]
fn unrated_held_out_turns_are_left_out_and_drift_matches_perplexity() {
    let m = model("odd");
    let a = trained(&m, turns(0..8, false), None);
    let mut held_out = turns(100..105, false);
    held_out[0].reward = 0.0;
    held_out[1].reward = f32::NAN;
    let r = evaluate(&m, &a, None, &held_out, &policy()).unwrap();
    assert_eq!(r.held_out_turns, 3);
    assert_eq!(r.skipped, 0);
    assert!(r.drift_only);
    let base = neutral_perplexity(&m, None).unwrap();
    let adapted = neutral_perplexity(&m, Some(&a)).unwrap();
    let change = adapted / base - 1.0;
    assert!(
        (change - r.candidate.drift.perplexity_change).abs() < 1e-6,
        "{change} vs {}",
        r.candidate.drift.perplexity_change
    );
}

/// A model, an adapter trained against the liked replies, and a text to read them on.
fn trained_on_a_text(name: &str) -> (LoadedModel, rlclaw_trainer::LoraSet, Vec<u32>) {
    let m = model(name);
    let a = trained(&m, turns(0..16, true), None);
    let lora = rlclaw_trainer::eval::lora_for(&m, &a).unwrap();
    let ids = m
        .encode("question 3: Sure: short answer. A very long one")
        .unwrap();
    (m, lora, ids)
}

/// The KL the gate reads is the divergence of whole next-token distributions: checked against
/// softmaxes of `last_logits` taken one prefix at a time.
#[test]
fn response_kl_matches_next_token_distributions_computed_one_prefix_at_a_time() {
    let (m, lora, ids) = trained_on_a_text("kl");
    let dec = rlclaw_trainer::Decoder::new(&m.config, &m.weights);
    let start = 4;
    let d = dec.response_kl(&ids, start, None, Some(&lora)).unwrap();
    let kl = &d.kl;
    assert_eq!(kl.len(), ids.len() - start);
    // The tokens' own log-probs come with it, as response_logprobs reads them.
    let lp = |l: Option<&rlclaw_trainer::LoraSet>| -> Vec<f32> {
        dec.response_logprobs(&ids, start, l, false)
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    for (got, want) in [
        (&d.logprobs, lp(Some(&lora))),
        (&d.reference_logprobs, lp(None)),
    ] {
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
    let softmax = |l: Option<&rlclaw_trainer::LoraSet>, upto: usize| -> Vec<f64> {
        let v: Vec<f32> = dec.last_logits(&ids[..upto], l).unwrap().to_vec1().unwrap();
        let max = v.iter().cloned().fold(f32::MIN, f32::max);
        let e: Vec<f64> = v.iter().map(|x| f64::from(x - max).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|x| x / z).collect()
    };
    for (i, got) in kl.iter().enumerate() {
        let (p, q) = (softmax(None, start + i), softmax(Some(&lora), start + i));
        let want: f64 = p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
        assert!((got - want).abs() < 1e-4, "position {i}: {got} vs {want}");
    }
    assert!(
        kl.iter().any(|&k| k > 1e-4),
        "the adapter changed nothing: {kl:?}"
    );
    let same = dec
        .response_kl(&ids, start, Some(&lora), Some(&lora))
        .unwrap()
        .kl;
    assert!(same.iter().all(|k| k.abs() < 1e-6), "{same:?}");
}

/// The anchor training holds a policy to reads the same divergence as the gate: keeping the
/// whole vocabulary it equals `response_kl`, keeping a few tokens it never reads more, and its
/// log-probs are `response_logprobs`'.
#[test]
fn an_anchor_reads_the_gates_kl_and_a_coarse_one_never_more() {
    let (m, lora, ids) = trained_on_a_text("anchor");
    let dec = rlclaw_trainer::Decoder::new(&m.config, &m.weights);
    let start = 4;
    let vals = |t: candle_core::Tensor| -> Vec<f32> {
        t.to_dtype(candle_core::DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let want_kl = dec.response_kl(&ids, start, None, Some(&lora)).unwrap().kl;
    let want_lp = vals(
        dec.response_logprobs(&ids, start, Some(&lora), false)
            .unwrap(),
    );
    let (whole, _) = dec
        .response_anchor(&ids, start, None, m.config.vocab_size)
        .unwrap();
    let (lp, kl) = dec
        .response_logprobs_anchored(&ids, start, &lora, &whole)
        .unwrap();
    let (lp, kl) = (vals(lp), vals(kl));
    for i in 0..want_kl.len() {
        assert!((lp[i] - want_lp[i]).abs() < 1e-5, "log-prob {i}");
        assert!(
            (f64::from(kl[i]) - want_kl[i]).abs() < 1e-4,
            "position {i}: {} vs {}",
            kl[i],
            want_kl[i]
        );
    }
    let (coarse, _) = dec.response_anchor(&ids, start, None, 4).unwrap();
    let (_, kl4) = dec
        .response_logprobs_anchored(&ids, start, &lora, &coarse)
        .unwrap();
    for (i, k) in vals(kl4).iter().enumerate() {
        assert!(f64::from(*k) <= want_kl[i] + 1e-5, "position {i}");
    }
    assert!(
        dec.response_logprobs_anchored(&ids, start + 1, &lora, &coarse)
            .is_err(),
        "an anchor of another length is refused"
    );
}

#[test]
fn a_candidate_whose_predictions_spread_beyond_the_kl_bound_is_held_with_the_figure() {
    let m = model("spread");
    let a = trained(&m, turns(0..16, false), None);
    let held_out = turns(100..108, false);
    let r = evaluate(&m, &a, None, &held_out, &policy()).unwrap();
    let kl = r.candidate.drift.kl.expect("the KL is measured");
    assert!(kl > 0.0 && kl.is_finite(), "{kl}");
    let strict = GatePolicy {
        max_kl: kl / 2.0,
        ..policy()
    };
    let r = evaluate(&m, &a, None, &held_out, &strict).unwrap();
    assert_eq!(r.verdict, Verdict::Hold);
    match &r.reasons[..] {
        [HoldReason::Spread { kl: got, bound }] => {
            assert!((got - kl).abs() < 1e-9);
            assert_eq!(*bound, kl / 2.0);
        }
        other => panic!("{other:?}"),
    }
    // Policies stored before the bound existed read the balanced preset's.
    let mut old = serde_json::to_value(policy()).unwrap();
    old.as_object_mut().unwrap().remove("max_kl");
    let old: GatePolicy = serde_json::from_value(old).unwrap();
    assert_eq!(old.max_kl, GatePolicy::default().max_kl);
}
