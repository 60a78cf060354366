//! `train` end to end on a tiny random model written to disk (Hugging Face folder path).

use std::sync::atomic::AtomicBool;

use rlclaw_trainer::tiny::write_tiny_model;
use rlclaw_trainer::{
    AdapterStore, Arch, Baseline, ChatMessage, LoadedModel, LoraWeights, ModelProfile, ModelSource,
    NewVersion, Preset, Sample, TrainRequest, TrainerError, encode_sample, train, train_with_model,
};

/// A fresh folder, removed when the test ends.
fn tempdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("rlclaw-train-{name}-"))
        .tempdir()
        .unwrap()
}

fn sample(id: &str, reward: f32, hint: Option<&str>) -> Sample {
    Sample {
        turn_id: id.into(),
        context: vec![ChatMessage::new("system", "Be brief.")],
        prompt: format!("question {id}"),
        response: format!("answer {id}, which is fine"),
        reward,
        hint: hint.map(str::to_string),
    }
}

fn request(model: &std::path::Path) -> TrainRequest {
    let mut req = TrainRequest::new(
        ModelSource::from_path(model).unwrap(),
        vec![
            sample("a", 1.0, None),
            sample("b", -1.0, Some("too long")),
            sample("c", 1.0, None),
        ],
    );
    req.baseline = Baseline {
        value: 0.2,
        count: 10,
    };
    let mut h =
        Preset::Balanced.hyper_params(&ModelProfile::new(rlclaw_trainer::ModelKind::Dense, 1, 1));
    h.rank = 4;
    h.alpha = 8.0;
    h.grad_accum = 2;
    h.max_steps = 3;
    h.lr = 1e-2;
    req.hyper = Some(h);
    req
}

/// Balanced hyper-parameters cut down for a tiny model: rank 4, exactly `steps` steps.
fn small_hyper(grad_accum: usize, steps: usize, lr: f64) -> rlclaw_trainer::HyperParams {
    let mut h =
        Preset::Balanced.hyper_params(&ModelProfile::new(rlclaw_trainer::ModelKind::Dense, 1, 1));
    (h.rank, h.alpha, h.grad_accum) = (4, 8.0, grad_accum);
    (h.min_steps, h.max_steps, h.lr) = (steps, steps, lr);
    h
}

#[test]
fn training_a_tiny_model_reports_progress_baseline_and_a_writable_adapter() {
    let tmp = tempdir("ok");
    let dir = tmp.path();
    write_tiny_model(&dir.join("model"), Arch::Qwen3, 1).unwrap();
    let req = request(&dir.join("model"));
    let mut seen = Vec::new();
    let report = train(&req, &mut |p| seen.push(p.clone()), &AtomicBool::new(false)).unwrap();
    assert_eq!(report.metrics.steps, 3);
    assert_eq!(seen.len(), 3);
    assert_eq!(seen.last().unwrap().step, 3);
    assert!(
        seen.iter()
            .all(|p| p.total_steps == 3 && p.loss.is_finite() && p.kl >= 0.0)
    );
    assert_eq!(report.metrics.samples, 3);
    assert_eq!(report.metrics.hint_samples, 1);
    assert_eq!(report.turn_ids, vec!["a", "b", "c"]);
    // EMA baseline, folded in time order.
    let mut b = 0.2f64;
    for r in [1.0, -1.0, 1.0] {
        b = 0.99 * b + 0.01 * r;
    }
    assert!((report.baseline.value - b).abs() < 1e-12);
    assert_eq!(report.baseline.count, 13);
    // The adapter moved away from its zero-B start and can be stored and read back.
    let moved: f32 = report.adapter.layers[0][0]
        .1
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(moved > 0.0);
    let store = AdapterStore::open(dir.join("adapters")).unwrap();
    let v = store
        .save(
            &report.adapter,
            NewVersion {
                parent: None,
                ratings: report.turn_ids.clone(),
                metrics: serde_json::to_value(&report.metrics).unwrap(),
                base_model: report.base_model.clone(),
            },
        )
        .unwrap();
    let (w, cfg) = LoraWeights::read_peft(&v.path).unwrap();
    assert_eq!(
        cfg.base_model_name_or_path.as_deref(),
        Some("rlclaw-tiny-qwen3")
    );
    assert_eq!(w.rank, 4);
}

#[test]
fn continuing_from_a_parent_with_zero_learning_rate_keeps_it_exactly() {
    let tmp = tempdir("parent");
    let dir = tmp.path();
    write_tiny_model(&dir.join("model"), Arch::Llama, 2).unwrap();
    let model = LoadedModel::load(&ModelSource::from_path(dir.join("model")).unwrap()).unwrap();
    let first = train_with_model(
        &model,
        &request(&dir.join("model")),
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let parent = dir.join("parent");
    std::fs::create_dir_all(&parent).unwrap();
    first
        .adapter
        .write_peft(&parent, &first.base_model)
        .unwrap();
    let mut req = request(&dir.join("model"));
    req.parent_adapter = Some(parent.clone());
    req.behaviour_adapter = Some(parent.clone());
    if let Some(h) = req.hyper.as_mut() {
        h.lr = 0.0;
    }
    let second = train_with_model(&model, &req, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    for (a, b) in first.adapter.layers.iter().zip(&second.adapter.layers) {
        for ((aa, ab), (ba, bb)) in a.iter().zip(b) {
            assert_eq!(aa.to_vec2::<f32>().unwrap(), ba.to_vec2::<f32>().unwrap());
            assert_eq!(ab.to_vec2::<f32>().unwrap(), bb.to_vec2::<f32>().unwrap());
        }
    }
    // Against its own behaviour policy every ratio starts at 1: nothing is clipped.
    assert_eq!(second.metrics.clipped_fraction, 0.0);
}

#[test]
fn cancelling_stops_the_run_without_a_result() {
    let tmp = tempdir("cancel");
    let dir = tmp.path();
    write_tiny_model(&dir.join("model"), Arch::Qwen2, 3).unwrap();
    let e = train(
        &request(&dir.join("model")),
        &mut |_| {},
        &AtomicBool::new(true),
    )
    .unwrap_err();
    assert!(matches!(e, TrainerError::Cancelled), "{e}");
}

#[test]
fn bad_requests_are_clear_errors() {
    let tmp = tempdir("bad");
    let dir = tmp.path();
    write_tiny_model(&dir.join("model"), Arch::Llama, 4).unwrap();
    let model = LoadedModel::load(&ModelSource::from_path(dir.join("model")).unwrap()).unwrap();
    let run =
        |req: &TrainRequest| train_with_model(&model, req, &mut |_| {}, &AtomicBool::new(false));
    let mut req = request(&dir.join("model"));
    req.samples.clear();
    assert!(matches!(run(&req), Err(TrainerError::Request(_))));
    let mut req = request(&dir.join("model"));
    req.samples[1].reward = 2.0;
    assert!(matches!(run(&req), Err(TrainerError::Request(_))));
    let mut req = request(&dir.join("model"));
    req.behaviour_adapter = Some(dir.join("no-such-adapter"));
    let e = run(&req).unwrap_err();
    assert!(matches!(e, TrainerError::Adapter { .. }), "{e}");
    assert!(ModelSource::from_path(dir.join("nothing-here")).is_err());
    let e =
        LoadedModel::load(&ModelSource::Gguf(dir.join("model").join("config.json"))).unwrap_err();
    assert!(e.to_string().contains("GGUF"), "{e}");
}

#[test]
fn samples_are_rendered_with_the_chat_template_and_hints_reach_only_the_teacher() {
    let tmp = tempdir("encode");
    let dir = tmp.path();
    write_tiny_model(&dir.join("model"), Arch::Llama, 5).unwrap();
    let model = LoadedModel::load(&ModelSource::from_path(dir.join("model")).unwrap()).unwrap();
    let s = sample("x", -1.0, Some("say less"));
    let e = encode_sample(&model, &s, 1024).unwrap();
    assert_eq!(
        model.decode(&e.ids[e.start..]).unwrap(),
        "answer x, which is fine<|im_end|>\n"
    );
    let prompt = model.decode(&e.ids[..e.start]).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nquestion x<|im_end|>\n<|im_start|>assistant\n"
    );
    let (tids, tstart) = e.teacher.clone().unwrap();
    assert!(model.decode(&tids[..tstart]).unwrap().contains("say less"));
    assert_eq!(
        &tids[tstart..],
        &e.ids[e.start..],
        "the teacher scores the same response tokens"
    );
    // Long prompts are cut from the left; the response is kept.
    let short = encode_sample(&model, &s, 40).unwrap();
    assert_eq!(short.ids.len(), 40);
    assert_eq!(&short.ids[short.start..], &e.ids[e.start..]);
}

/// A tiny model on disk and one reply with a hint, rated 0: against a zero baseline the
/// advantage is 0, so only the hint's terms act on it.
fn hinted_reply_on_a_tiny_model(name: &str) -> (tempfile::TempDir, LoadedModel, Sample) {
    let tmp = tempdir(name);
    write_tiny_model(&tmp.path().join("model"), Arch::Llama, 9).unwrap();
    let source = ModelSource::from_path(tmp.path().join("model")).unwrap();
    let model = LoadedModel::load(&source).unwrap();
    let s = Sample {
        response: "answer q, which is long and goes on and on".into(),
        ..sample("q", 0.0, Some("start with Sure and keep it short"))
    };
    (tmp, model, s)
}

#[test]
fn the_hint_term_moves_the_students_token_logprobs_toward_the_teachers() {
    use rlclaw_trainer::Decoder;
    let (_tmp, model, s) = hinted_reply_on_a_tiny_model("distill");
    let e = encode_sample(&model, &s, 1024).unwrap();
    let (tids, tstart) = e.teacher.clone().unwrap();
    let dec = Decoder::new(&model.config, &model.weights);
    let vals = |t: candle_core::Tensor| t.to_vec1::<f32>().unwrap();
    let teacher = vals(dec.response_logprobs(&tids, tstart, None, false).unwrap());
    let before = vals(dec.response_logprobs(&e.ids, e.start, None, false).unwrap());
    let mut req = TrainRequest::new(model.source.clone(), vec![s]);
    let mut h = small_hyper(1, 4, 3e-3);
    h.objective.kl_beta = 0.0;
    req.hyper = Some(h.clone());
    let report = train_with_model(&model, &req, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!(report.metrics.hint_samples, 1);
    // The hint term acts on the tokens it moved by at least the threshold, and says how many.
    let min_shift = h.objective.opd_min_shift;
    let moved = (0..before.len())
        .filter(|&t| (teacher[t] as f64 - before[t] as f64).abs() >= min_shift)
        .count();
    assert!(moved > 0, "the tiny teacher moved no token by {min_shift}");
    let share = moved as f64 / before.len() as f64;
    assert!((report.metrics.hint_token_share - share).abs() < 1e-9);
    let lora = rlclaw_trainer::eval::lora_for(&model, &report.adapter).unwrap();
    let after = vals(
        dec.response_logprobs(&e.ids, e.start, Some(&lora), false)
            .unwrap(),
    );
    // Each token moves in the direction of teacher − student, on the whole.
    let toward: f64 = (0..before.len())
        .map(|t| ((after[t] - before[t]) * (teacher[t] - before[t]).signum()) as f64)
        .sum();
    assert!(toward > 0.0, "moved {toward} toward the teacher");
    let gap = |lp: &[f32]| -> f64 {
        lp.iter()
            .zip(&teacher)
            .map(|(a, b)| (a - b).abs() as f64)
            .sum()
    };
    assert!(
        gap(&after) < gap(&before),
        "the gap to the teacher grew: {} -> {}",
        gap(&before),
        gap(&after)
    );
}

#[test]
fn the_peer_objective_trains_without_hints_and_with_z_scored_advantages() {
    let tmp = tempdir("peer");
    let dir = tmp.path();
    write_tiny_model(&dir.join("model"), Arch::Qwen3, 3).unwrap();
    let mut req = request(&dir.join("model"));
    req.objective = rlclaw_trainer::ObjectiveVariant::PeerMisPo;
    let report = train(&req, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!(report.metrics.hint_samples, 0);
    // 2 good + 1 bad, z-scored: the mean advantage is 0 whatever the baseline.
    assert!(report.metrics.mean_advantage.abs() < 1e-6);
    assert!(report.metrics.final_loss.is_finite());
    assert_eq!(report.baseline.count, 13);
}

/// The sampled-token hint term can only say the token there was worse; the teacher's whole
/// distribution at the positions the hint moved says which token it wanted instead.
#[test]
fn the_hint_teachers_whole_distribution_pulls_the_student_toward_it_where_the_hint_moved() {
    use rlclaw_trainer::Decoder;
    use rlclaw_trainer::objective::hint_positions;
    let (_tmp, model, s) = hinted_reply_on_a_tiny_model("distill-dist");
    let e = encode_sample(&model, &s, 1024).unwrap();
    let (tids, tstart) = e.teacher.clone().unwrap();
    let dec = Decoder::new(&model.config, &model.weights);
    // The teacher's whole distribution at every position, to measure against.
    let (teacher, teacher_lp) = dec
        .response_anchor(&tids, tstart, None, model.config.vocab_size)
        .unwrap();
    let student_lp = dec
        .response_logprobs(&e.ids, e.start, None, false)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let run = |weight: f64| -> (f64, f64) {
        let mut req = TrainRequest::new(model.source.clone(), vec![s.clone()]);
        let mut h = small_hyper(1, 4, 3e-3);
        h.objective.kl_beta = 0.0;
        h.objective.opd_dist_weight = weight;
        req.hyper = Some(h.clone());
        let report = train_with_model(&model, &req, &mut |_| {}, &AtomicBool::new(false)).unwrap();
        let lora = rlclaw_trainer::eval::lora_for(&model, &report.adapter).unwrap();
        let (_, kl) = dec
            .response_logprobs_anchored(&e.ids, e.start, &lora, &teacher)
            .unwrap();
        let kl = kl.to_vec1::<f32>().unwrap();
        let moved = hint_positions(&teacher_lp, &student_lp, &h.objective);
        assert!(moved.iter().any(|&m| m), "the tiny teacher moved no token");
        let at_moved: f64 = kl
            .iter()
            .zip(&moved)
            .filter(|(_, m)| **m)
            .map(|(k, _)| *k as f64)
            .sum();
        (at_moved, report.metrics.mean_teacher_kl)
    };
    let (tokens_only, off_reported) = run(0.0);
    let (whole, on_reported) = run(1.0);
    assert_eq!(off_reported, 0.0, "the term is off at weight 0");
    assert!(on_reported > 0.0);
    assert!(
        whole < tokens_only,
        "KL(teacher ‖ student) where the hint moved: {whole} with the whole distribution, \
         {tokens_only} with the sampled tokens alone"
    );
}

/// Disliked replies alone push a policy off them and onto everything else; the anchor on the
/// whole next-token distribution holds it nearer the base.
#[test]
fn the_anchor_holds_a_run_on_disliked_replies_nearer_the_base() {
    use rlclaw_trainer::Decoder;
    let tmp = tempdir("anchor");
    let dir = tmp.path();
    write_tiny_model(&dir.join("model"), Arch::Llama, 4).unwrap();
    let model = LoadedModel::load(&ModelSource::from_path(dir.join("model")).unwrap()).unwrap();
    let samples: Vec<Sample> = (0..6)
        .map(|i| sample(&format!("d{i}"), -1.0, None))
        .collect();
    let dec = Decoder::new(&model.config, &model.weights);
    let run = |beta: f64| -> (f64, f64) {
        let mut req = TrainRequest::new(model.source.clone(), samples.clone());
        let mut h = small_hyper(2, 8, 1e-2);
        h.objective.anchor_beta = beta;
        req.hyper = Some(h);
        let report = train_with_model(&model, &req, &mut |_| {}, &AtomicBool::new(false)).unwrap();
        let lora = rlclaw_trainer::eval::lora_for(&model, &report.adapter).unwrap();
        let (mut sum, mut n) = (0.0, 0);
        for s in &samples {
            let e = encode_sample(&model, s, 1024).unwrap();
            let kl = dec
                .response_kl(&e.ids, e.start, None, Some(&lora))
                .unwrap()
                .kl;
            sum += kl.iter().sum::<f64>();
            n += kl.len();
        }
        (sum / n as f64, report.metrics.mean_anchor_kl)
    };
    let (free, free_reported) = run(0.0);
    let (held, held_reported) = run(20.0);
    assert_eq!(free_reported, 0.0, "the anchor is off at beta 0");
    assert!(held_reported > 0.0);
    assert!(
        held < 0.5 * free,
        "KL from the base with the anchor {held}, without {free}"
    );
}
