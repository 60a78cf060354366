//! Tests on the real SmolLM2-135M-Instruct (GGUF, dequantised to f32). The workspace builds
//! the trainer and candle optimised even in the dev profile, so they run in `cargo test`.

mod common;

use std::sync::atomic::AtomicBool;

use rlclaw_trainer::{
    ChatMessage, Decoder, LoadedModel, LoraSet, ModelSource, Preset, Sample, TrainRequest,
    train_with_model,
};

fn load() -> LoadedModel {
    let path = common::smollm2_gguf();
    LoadedModel::load(&ModelSource::Gguf(path)).expect("load SmolLM2 GGUF")
}

#[test]
fn gguf_loads_with_tokenizer_template_and_answers_paris() {
    let m = load();
    assert_eq!(m.config.num_layers, 30);
    assert_eq!(m.config.vocab_size, 49152);
    let text = m
        .template
        .render(
            &[ChatMessage::new("user", "What is the capital of France?")],
            true,
        )
        .unwrap();
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text}");
    let ids = m.encode(&text).unwrap();
    let im_start = m.tokenizer.token_to_id("<|im_start|>").unwrap();
    assert_eq!(
        ids.iter().filter(|&&i| i == im_start).count(),
        3,
        "special tokens are single ids"
    );
    assert_eq!(m.decode(&ids).unwrap(), text, "tokenizer round trip");
    let dec = Decoder::new(&m.config, &m.weights);
    let top = |ids: &[u32]| {
        let logits = dec.last_logits(ids, None).unwrap();
        m.decode(&[logits.argmax(0).unwrap().to_scalar::<u32>().unwrap()])
            .unwrap()
    };
    assert_eq!(top(&ids), "The", "first word of the reply");
    let ids = m
        .encode(&format!("{text}The capital of France is"))
        .unwrap();
    assert_eq!(top(&ids), " Paris");
}

const TRAIN: [(&str, &str); 4] = [
    (
        "What is a good name for a cat?",
        "Indeed, Whiskers is a classic name for a cat.",
    ),
    (
        "How do I boil an egg?",
        "Indeed, put the egg in boiling water for nine minutes.",
    ),
    (
        "Suggest a weekend activity.",
        "Indeed, a walk in the park is a lovely way to relax.",
    ),
    (
        "What colour is the sky?",
        "Indeed, on a clear day the sky is blue.",
    ),
];
const HELD_OUT: [&str; 3] = [
    "How can I learn to play the guitar?",
    "What should I cook for dinner tonight?",
    "Give me a tip for better sleep.",
];

/// Mean log-probability that a reply to each held-out prompt starts with "Indeed,".
fn style_logprob(m: &LoadedModel, lora: Option<&LoraSet>) -> f64 {
    let dec = Decoder::new(&m.config, &m.weights);
    let prefix = m.encode("Indeed,").unwrap();
    let mut total = 0.0;
    for p in HELD_OUT {
        let text = m
            .template
            .render(&[ChatMessage::new("user", p)], true)
            .unwrap();
        let mut ids = m.encode(&text).unwrap();
        let start = ids.len();
        ids.extend(&prefix);
        let lp = dec.response_logprobs(&ids, start, lora, false).unwrap();
        total += lp.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    }
    total / HELD_OUT.len() as f64
}

fn run(m: &LoadedModel, reward: f32) -> f64 {
    let samples = TRAIN
        .iter()
        .enumerate()
        .map(|(i, (p, r))| Sample {
            turn_id: format!("t{i}"),
            context: vec![],
            prompt: p.to_string(),
            response: r.to_string(),
            reward,
            hint: None,
        })
        .collect();
    let mut req = TrainRequest::new(m.source.clone(), samples);
    req.preset = Preset::Aggressive;
    let mut h =
        Preset::Aggressive.hyper_params(&rlclaw_trainer::ModelProfile::from_config(&m.config));
    h.grad_accum = 2;
    h.max_steps = 6;
    req.hyper = Some(h);
    let mut log = Vec::new();
    let report = train_with_model(
        m,
        &req,
        &mut |p| log.push(p.clone()),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(log.len(), report.metrics.steps);
    assert!(report.metrics.final_loss.is_finite());
    eprintln!("reward {reward}: {:?}", report.metrics);
    let lora = LoraSet::from_weights(
        &report.adapter,
        &m.config,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    style_logprob(m, Some(&lora))
}

#[test]
fn rewarded_style_rises_and_punished_style_falls_on_held_out_prompts() {
    let m = load();
    let base = style_logprob(&m, None);
    let up = run(&m, 1.0);
    let down = run(&m, -1.0);
    eprintln!(
        "log p(\"Indeed,\" first) on held-out prompts: base {base:.3}, after +1 {up:.3}, after -1 {down:.3}"
    );
    assert!(
        up > base + 0.5,
        "rewarded style did not rise: {base} -> {up}"
    );
    assert!(
        down < base - 0.5,
        "punished style did not fall: {base} -> {down}"
    );
}

#[test]
fn a_hint_makes_the_base_teacher_prefer_the_hinted_reply() {
    let m = load();
    let s = Sample {
        turn_id: "h".into(),
        context: vec![],
        prompt: "What should I cook for dinner tonight?".into(),
        response: "Indeed, a vegetable soup is quick and warming.".into(),
        reward: -1.0,
        hint: Some("Start your reply with the word Indeed.".into()),
    };
    let e = rlclaw_trainer::encode_sample(&m, &s, 1024).unwrap();
    let (tids, tstart) = e.teacher.clone().unwrap();
    let dec = Decoder::new(&m.config, &m.weights);
    let r = dec
        .response_logprobs(&e.ids, e.start, None, false)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let t = dec
        .response_logprobs(&tids, tstart, None, false)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(r.len(), t.len());
    eprintln!("first token: base {:.3}, hinted teacher {:.3}", r[0], t[0]);
    assert!(
        t[0] > r[0] + 1.0,
        "the hint should raise the first word: {} -> {}",
        r[0],
        t[0]
    );
    // The clipped OPD advantage then pushes that token up even on a bad rating.
    let adv = rlclaw_trainer::objective::token_advantages(
        -0.2,
        Some(&t),
        &r,
        &rlclaw_trainer::objective::ObjectiveParams::default(),
    );
    assert!((adv[0] - 0.8).abs() < 1e-6, "{}", adv[0]);
}
