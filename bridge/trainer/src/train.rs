//! One training run: samples → tokens → frozen log-probs (base, behaviour, hint teacher) →
//! steps of the objective with AdamW, gradient clipping and accumulation → LoRA weights.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::adapter::LoraWeights;
use crate::anchor::Anchor;
use crate::decoder::{Decoder, in_pool};
use crate::device::DeviceChoice;
use crate::error::{Result, TensorContext, TrainerError};
use crate::hint::usable_hint;
use crate::lora::{LoraSet, SplitMix64};
use crate::model::{ChatMessage, LoadedModel, ModelSource};
use crate::objective::{
    Baseline, advantages, anchor_loss, hint_positions, sample_loss, token_advantages,
};
use crate::optim::AdamW;
use crate::peer::{self, ObjectiveVariant, PeerParams};
use crate::preset::{HyperParams, ModelProfile, Preset};

/// One rated reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub turn_id: String,
    /// Messages before the prompt (system, earlier turns).
    pub context: Vec<ChatMessage>,
    /// The user message the reply answered.
    pub prompt: String,
    /// The rated reply.
    pub response: String,
    /// In [-1, 1].
    pub reward: f32,
    /// The reason given with a bad rating ("too long"), used as a hint for the teacher when
    /// [`usable_hint`] accepts it.
    pub hint: Option<String>,
}

/// What to train.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainRequest {
    pub model: ModelSource,
    pub preset: Preset,
    /// Replaces the preset's hyper-parameters when set.
    pub hyper: Option<HyperParams>,
    /// In time order, oldest first.
    pub samples: Vec<Sample>,
    /// EMA baseline of past rewards of this model.
    pub baseline: Baseline,
    /// The adapter that was active when these turns were last trained (None: the base).
    pub behaviour_adapter: Option<PathBuf>,
    /// Adapter to continue from (None: a fresh adapter).
    pub parent_adapter: Option<PathBuf>,
    pub seed: u64,
    /// Where [`train`] loads the model and trains; `None`: `RLCLAW_DEVICE`, else the CPU.
    /// ([`train_with_model`] trains where its model was loaded.)
    #[serde(default)]
    pub device: Option<DeviceChoice>,
    /// Our objective, or the peer's for comparison (`peer`).
    #[serde(default)]
    pub objective: ObjectiveVariant,
}

impl TrainRequest {
    pub fn new(model: ModelSource, samples: Vec<Sample>) -> Self {
        Self {
            model,
            preset: Preset::Balanced,
            hyper: None,
            samples,
            baseline: Baseline::default(),
            behaviour_adapter: None,
            parent_adapter: None,
            seed: 0,
            device: None,
            objective: ObjectiveVariant::default(),
        }
    }
}

/// Reported after every optimiser step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub step: usize,
    pub total_steps: usize,
    pub loss: f64,
    pub kl: f64,
    pub tokens_per_sec: f64,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainMetrics {
    pub steps: usize,
    pub samples: usize,
    /// Tokens through forward + backward.
    pub tokens: usize,
    pub first_loss: f64,
    pub final_loss: f64,
    pub mean_loss: f64,
    pub mean_kl: f64,
    pub final_kl: f64,
    /// Mean KL(base ‖ policy) of the whole next-token distribution over the replies trained
    /// on, nats per token (0 where the anchor is off, as for the peer's objective).
    #[serde(default)]
    pub mean_anchor_kl: f64,
    pub mean_advantage: f64,
    /// Mean drift scale (1 = no damping, 0 = filtered).
    pub mean_drift_scale: f64,
    /// Share of sample evaluations dropped by the drift filter.
    pub filtered_fraction: f64,
    /// Share of tokens whose ratio was outside [0.5, 2].
    pub clipped_fraction: f64,
    pub last_grad_norm: f64,
    pub hint_samples: usize,
    /// Share of the hinted replies' tokens the hint term acted on (0 without hints).
    #[serde(default)]
    pub hint_token_share: f64,
    /// Mean over hinted samples' passes of `mean_t m_t KL_t(teacher ‖ θ)`, the teacher's whole
    /// distribution at the positions the hint moves (0 without hints or with the term off).
    #[serde(default)]
    pub mean_teacher_kl: f64,
    pub seconds: f64,
    pub tokens_per_sec: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub metrics: TrainMetrics,
    /// The baseline after folding in these samples' rewards.
    pub baseline: Baseline,
    /// The trained adapter, ready for `write_peft` or `AdapterStore::save`.
    pub adapter: LoraWeights,
    pub hyper: HyperParams,
    /// `base_model_name_or_path` for the adapter.
    pub base_model: String,
    pub turn_ids: Vec<String>,
}

/// A sample as token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedSample {
    pub ids: Vec<u32>,
    /// Index of the first response token.
    pub start: usize,
    /// The prompt conditioned on the hint, followed by the same response tokens.
    pub teacher: Option<(Vec<u32>, usize)>,
}

fn messages_for(sample: &Sample, hint: Option<&str>) -> Vec<ChatMessage> {
    let mut m = sample.context.clone();
    let prompt = match hint {
        Some(h) => format!(
            "{}\n\n[user's hint / instruction]\n{}",
            sample.prompt,
            h.trim()
        ),
        None => sample.prompt.clone(),
    };
    m.push(ChatMessage::new("user", prompt));
    m
}

/// Prompt ids and response ids (the response includes the template's end-of-turn tokens).
fn encode_pair(
    model: &LoadedModel,
    msgs: &[ChatMessage],
    response: &str,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let prompt_text = model.template.render(msgs, true)?;
    let mut full = msgs.to_vec();
    full.push(ChatMessage::new("assistant", response));
    let full_text = model.template.render(&full, false)?;
    if let Some(resp_text) = full_text.strip_prefix(&prompt_text) {
        return Ok((model.encode(&prompt_text)?, model.encode(resp_text)?));
    }
    // The template renders the prompt differently once a reply follows: split by tokens.
    let p = model.encode(&prompt_text)?;
    let f = model.encode(&full_text)?;
    let common = p.iter().zip(&f).take_while(|(a, b)| a == b).count();
    Ok((f[..common].to_vec(), f[common..].to_vec()))
}

fn fit(mut prompt: Vec<u32>, mut response: Vec<u32>, max_len: usize) -> Result<(Vec<u32>, usize)> {
    if response.is_empty() {
        return Err(TrainerError::Request("the response has no tokens".into()));
    }
    if prompt.is_empty() {
        return Err(TrainerError::Request("the prompt has no tokens".into()));
    }
    let max_len = max_len.max(2);
    if response.len() > max_len - 1 {
        response.truncate(max_len - 1);
    }
    let keep = (max_len - response.len()).min(prompt.len());
    prompt.drain(..prompt.len() - keep);
    let start = prompt.len();
    prompt.extend(response);
    Ok((prompt, start))
}

/// Renders a sample with the model's chat template and tokenizes it.
pub fn encode_sample(
    model: &LoadedModel,
    sample: &Sample,
    max_len: usize,
) -> Result<EncodedSample> {
    let (p, r) = encode_pair(model, &messages_for(sample, None), &sample.response)?;
    let (ids, start) = fit(p, r, max_len)?;
    let teacher = match sample.hint.as_deref().and_then(usable_hint) {
        Some(h) => {
            let (tp, _) = encode_pair(model, &messages_for(sample, Some(h)), &sample.response)?;
            // The teacher scores exactly the student's response tokens.
            Some(fit(tp, ids[start..].to_vec(), max_len)?)
        }
        None => None,
    };
    Ok(EncodedSample {
        ids,
        start,
        teacher,
    })
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.to_vec1())
        .ctx("reading log-probs")
}

fn load_adapter(path: &PathBuf, model: &LoadedModel) -> Result<LoraSet> {
    let (w, _) = LoraWeights::read_peft(path)?;
    w.check_compatible(&model.config)
        .map_err(|e| TrainerError::adapter(path, e.to_string()))?;
    LoraSet::from_weights(
        &w,
        &model.config,
        model.weights.dtype(),
        model.weights.device(),
    )
}

/// Loads the model named in the request on the request's device, then trains.
pub fn train(
    req: &TrainRequest,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<TrainReport> {
    let device = match req.device {
        Some(d) => d,
        None => DeviceChoice::from_env()?,
    };
    let model = LoadedModel::load_on(&req.model, &device.open()?)?;
    train_with_model(&model, req, progress, cancel)
}

/// Trains with an already loaded model (`req.model` is not read).
pub fn train_with_model(
    model: &LoadedModel,
    req: &TrainRequest,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<TrainReport> {
    let t0 = Instant::now();
    if req.samples.is_empty() {
        return Err(TrainerError::Request("no samples to train on".into()));
    }
    let h = req.hyper.clone().unwrap_or_else(|| {
        req.preset
            .hyper_params(&ModelProfile::from_config(&model.config))
    });
    let obj = h.objective;
    let rewards: Vec<f64> = req.samples.iter().map(|s| s.reward as f64).collect();
    let peer_params = PeerParams::for_preset(req.preset);
    let is_peer = req.objective == ObjectiveVariant::PeerMisPo;
    let (adv, baseline_out) = if is_peer {
        peer::advantages(
            &rewards,
            req.baseline,
            obj.ema_decay,
            peer_params.pos_weight,
        )?
    } else {
        advantages(&rewards, req.baseline, obj.ema_decay)?
    };
    let enc: Vec<EncodedSample> = req
        .samples
        .iter()
        .map(|s| {
            let mut e = encode_sample(model, s, h.max_seq_len)?;
            if is_peer {
                // The peer's objective takes no hints.
                e.teacher = None;
            }
            Ok(e)
        })
        .collect::<Result<_>>()?;
    let dec = Decoder::new(&model.config, &model.weights);
    let check_cancel = || {
        if cancel.load(Ordering::Relaxed) {
            Err(TrainerError::Cancelled)
        } else {
            Ok(())
        }
    };

    // Frozen log-probs: base (reference), behaviour, hint teacher.
    let behaviour = match &req.behaviour_adapter {
        Some(p) => Some(load_adapter(p, model)?),
        None => None,
    };
    let anchored = !is_peer && obj.anchor_beta > 0.0;
    let mut lp_ref = Vec::with_capacity(enc.len());
    let mut lp_beh = Vec::with_capacity(enc.len());
    let mut tok_adv = Vec::with_capacity(enc.len());
    let mut anchors = Vec::with_capacity(enc.len());
    let mut teacher_anchors: Vec<Option<Anchor>> = Vec::with_capacity(enc.len());
    // (tokens the hint term acted on, tokens of hinted replies)
    let mut hint_tokens = (0usize, 0usize);
    for (e, a) in enc.iter().zip(&adv) {
        check_cancel()?;
        // The base's pass gives its token log-probs and, when anchored, the anchor with them.
        let r = if anchored {
            let (mut anchor, r) = dec.response_anchor(&e.ids, e.start, None, obj.anchor_top_k)?;
            anchor.leave_free(obj.anchor_free_share);
            anchors.push(anchor);
            r
        } else {
            values(&dec.response_logprobs(&e.ids, e.start, None, false)?)?
        };
        let b = match &behaviour {
            Some(l) => values(&dec.response_logprobs(&e.ids, e.start, Some(l), false)?)?,
            None => r.clone(),
        };
        // The teacher is the student (base + behaviour adapter) with the hint in its context;
        // with `opd_dist_weight` its whole distribution is kept where the hint moves the reply.
        let (teacher, teacher_anchor) = match &e.teacher {
            Some((ids, start)) if obj.opd_dist_weight > 0.0 => {
                let (mut anchor, t) =
                    dec.response_anchor(ids, *start, behaviour.as_ref(), obj.anchor_top_k)?;
                anchor.hold_only(&hint_positions(&t, &b, &obj));
                (Some(t), Some(anchor))
            }
            Some((ids, start)) => {
                let t = dec.response_logprobs(ids, *start, behaviour.as_ref(), false)?;
                (Some(values(&t)?), None)
            }
            None => (None, None),
        };
        teacher_anchors.push(teacher_anchor);
        let t_adv = token_advantages(*a, teacher.as_deref(), &b, &obj);
        if teacher.is_some() {
            // The hint term is exactly 0 where it does not act.
            hint_tokens.0 += t_adv.iter().filter(|&&x| x != *a).count();
            hint_tokens.1 += t_adv.len();
        }
        tok_adv.push(t_adv);
        lp_ref.push(r);
        lp_beh.push(b);
    }
    drop(behaviour);

    let lora = match &req.parent_adapter {
        Some(p) => load_adapter(p, model)?,
        None => LoraSet::init(
            &model.config,
            h.rank,
            h.alpha,
            req.seed ^ 0x5EED_F00D,
            model.weights.dtype(),
            model.weights.device(),
        )?,
    };
    let vars = lora.vars();
    let mut opt = AdamW::new(&vars)?;
    let total_steps = h.steps_for(enc.len());
    let accum = h.grad_accum.max(1);
    let mut rng = SplitMix64::new(req.seed);
    let mut order: Vec<usize> = Vec::new();
    let mut next_sample = || -> usize {
        if order.is_empty() {
            order = (0..enc.len()).collect();
            for i in (1..order.len()).rev() {
                let j = rng.below(i + 1);
                order.swap(i, j);
            }
        }
        order.pop().unwrap_or(0)
    };

    let (mut tokens, mut evals, mut filtered) = (0usize, 0usize, 0usize);
    let (mut sum_loss, mut sum_kl, mut sum_scale, mut sum_clip) = (0.0, 0.0, 0.0, 0.0);
    let mut sum_anchor = 0.0;
    let (mut sum_teacher_kl, mut teacher_evals) = (0.0, 0usize);
    let (mut first_loss, mut final_loss, mut final_kl, mut last_norm) = (f64::NAN, 0.0, 0.0, 0.0);
    for step in 0..total_steps {
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let (mut step_loss, mut step_kl) = (0.0, 0.0);
        for _ in 0..accum {
            check_cancel()?;
            let i = next_sample();
            let e = &enc[i];
            let base_anchor = anchors.get(i);
            let teacher_anchor = teacher_anchors.get(i).and_then(Option::as_ref);
            let held: Vec<&Anchor> = base_anchor.into_iter().chain(teacher_anchor).collect();
            let (lp_new, mut kls) = if held.is_empty() {
                let lp = dec.response_logprobs(&e.ids, e.start, Some(&lora), true)?;
                (lp, Vec::new())
            } else {
                dec.response_logprobs_anchored_to(&e.ids, e.start, &lora, &held)?
            };
            let teacher_kl = teacher_anchor.and_then(|_| kls.pop());
            let anchor_kl = base_anchor.and_then(|_| kls.pop());
            let mut s = if is_peer {
                peer::sample_loss(
                    &peer_params,
                    (obj.ratio_clip_low, obj.ratio_clip_high),
                    obj.kl_beta,
                    &lp_new,
                    &lp_beh[i],
                    &lp_ref[i],
                    adv[i],
                )?
            } else {
                sample_loss(&obj, &lp_new, &lp_beh[i], &lp_ref[i], &tok_adv[i])?
            };
            let mut loss_val = s.scale * s.actor + obj.kl_beta * s.kl;
            if let Some(kl) = anchor_kl {
                let (term, mean) = anchor_loss(&kl, obj.anchor_beta)?;
                s.loss = (s.loss + term).ctx("sample loss")?;
                loss_val += obj.anchor_beta * mean;
                sum_anchor += mean;
            }
            if let Some(kl) = teacher_kl {
                let (term, mean) = anchor_loss(&kl, obj.opd_dist_weight)?;
                s.loss = (s.loss + term).ctx("sample loss")?;
                loss_val += obj.opd_dist_weight * mean;
                sum_teacher_kl += mean;
                teacher_evals += 1;
            }
            if !loss_val.is_finite() {
                return Err(TrainerError::NonFinite(format!(
                    "loss {loss_val} at step {step}"
                )));
            }
            step_loss += loss_val / accum as f64;
            step_kl += s.kl / accum as f64;
            sum_scale += s.scale;
            sum_clip += s.clipped_fraction;
            filtered += usize::from(s.scale == 0.0);
            evals += 1;
            tokens += e.ids.len();
            let gs =
                in_pool(|| (s.loss / accum as f64).and_then(|l| l.backward())).ctx("backward")?;
            for (slot, v) in grads.iter_mut().zip(&vars) {
                if let Some(g) = gs.get(v) {
                    let g = g.detach();
                    *slot = Some(match slot.take() {
                        Some(acc) => (acc + g).ctx("accumulating gradients")?,
                        None => g,
                    });
                }
            }
        }
        let grads: Vec<Tensor> = grads
            .into_iter()
            .zip(&vars)
            .map(|(g, v)| match g {
                Some(g) => Ok(g),
                None => v.zeros_like().ctx("zero gradient"),
            })
            .collect::<Result<_>>()?;
        // Clipped to h.grad_clip and applied, unless the norm is not finite.
        let norm = opt.clip_and_step(&vars, &grads, &h)?;
        if !norm.is_finite() {
            return Err(TrainerError::NonFinite(format!(
                "gradient norm {norm} at step {step}"
            )));
        }
        last_norm = norm;
        if first_loss.is_nan() {
            first_loss = step_loss;
        }
        final_loss = step_loss;
        final_kl = step_kl;
        sum_loss += step_loss;
        sum_kl += step_kl;
        let elapsed = t0.elapsed();
        progress(&Progress {
            step: step + 1,
            total_steps,
            loss: step_loss,
            kl: step_kl,
            tokens_per_sec: tokens as f64 / elapsed.as_secs_f64().max(1e-9),
            elapsed,
        });
    }
    check_cancel()?;
    let secs = t0.elapsed().as_secs_f64();
    let steps = total_steps.max(1) as f64;
    let evals_f = evals.max(1) as f64;
    let metrics = TrainMetrics {
        steps: total_steps,
        samples: enc.len(),
        tokens,
        first_loss,
        final_loss,
        mean_loss: sum_loss / steps,
        mean_kl: sum_kl / steps,
        final_kl,
        mean_anchor_kl: sum_anchor / evals_f,
        mean_advantage: adv.iter().sum::<f64>() / adv.len() as f64,
        mean_drift_scale: sum_scale / evals_f,
        filtered_fraction: filtered as f64 / evals_f,
        clipped_fraction: sum_clip / evals_f,
        last_grad_norm: last_norm,
        hint_samples: enc.iter().filter(|e| e.teacher.is_some()).count(),
        hint_token_share: hint_tokens.0 as f64 / hint_tokens.1.max(1) as f64,
        mean_teacher_kl: sum_teacher_kl / teacher_evals.max(1) as f64,
        seconds: secs,
        tokens_per_sec: tokens as f64 / secs.max(1e-9),
    };
    Ok(TrainReport {
        metrics,
        baseline: baseline_out,
        adapter: lora.to_weights()?,
        hyper: h,
        base_model: model.name.clone(),
        turn_ids: req.samples.iter().map(|s| s.turn_id.clone()).collect(),
    })
}
