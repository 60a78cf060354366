//! The evaluation gate and adapters from elsewhere, driven the way a person drives them: ratings
//! reach the real bridge, `rlclaw train` and `rlclaw adapters import` put new versions through
//! the gate, `rlclaw status`, `/rl status` and `rlclaw adapters` say what it measured, and an
//! admin can force a held-back candidate. A tiny random model keeps every run to seconds.

use std::path::{Path, PathBuf};
use std::process::Command;

use rlclaw_tests::bridge::{Bridge, Signed, workspace_root};
use rlclaw_tests::cli::{ok, ok_json, rlclaw, scratch, tiny_model, training_config};
use rlclaw_trainer::{AdapterStore, LoraWeights, is_held_out};
use serde_json::{Value, json};

const LIKED: &str = "Sure: short answer.";
const DISLIKED: &str = "A very long and winding answer that goes on.";

fn chat(c: &Signed, event: &str, name: &str, sender: &str, args: &[&str]) -> Value {
    let r = c.post(
        "/v1/commands",
        json!({"event_id": event, "name": name, "sender": sender, "session": "s", "args": args}),
    );
    assert_eq!(r.status, 200, "{}", r.json());
    r.json()
}

/// Captures a turn and rates it: `liked` turns answer LIKED and are rated good, the others
/// answer DISLIKED and are rated bad with a reason. `flip` rates them the other way round.
fn turn(c: &Signed, id: &str, liked: bool, flip: bool) {
    let r = c.post(
        "/v1/turns",
        json!({"turn_id": id, "session": "s", "channel": "telegram", "sender": "42",
               "prompt": format!("question {id}"), "response": if liked { LIKED } else { DISLIKED },
               "context": [{"role": "user", "content": "hello"}]}),
    );
    assert_eq!(r.status, 201, "{}", r.json());
    let good = liked != flip;
    let mut rating = json!({"event_id": format!("e-{id}"), "target": {"turn_id": id},
                            "rater": "42", "value": if good { 1 } else { -1 }, "source": "command"});
    if !good {
        rating["reason"] = json!("too long");
    }
    assert_eq!(c.post("/v1/ratings", rating).status, 200);
}

/// `n` turns t0, t1, … alternating liked and disliked; returns the held-out ids among them.
fn rate_turns(c: &Signed, n: usize) -> Vec<String> {
    let mut held = Vec::new();
    for i in 0..n {
        let id = format!("t{i}");
        turn(c, &id, i % 2 == 0, false);
        if is_held_out(&id) {
            held.push(id);
        }
    }
    held
}

/// `n` more turns that are not held out, rated against the person's taste (liked replies rated
/// bad, disliked ones good): training on them moves away from the held-out ratings.
fn rate_against(c: &Signed, prefix: &str, n: usize) {
    let mut i = 0;
    let mut done = 0;
    while done < n {
        let id = format!("{prefix}{i}");
        i += 1;
        if is_held_out(&id) {
            continue;
        }
        turn(c, &id, done % 2 == 0, true);
        done += 1;
    }
}

fn store(bridge: &Bridge) -> AdapterStore {
    AdapterStore::open(bridge.data_dir().join("adapters")).unwrap()
}

#[test]
fn held_out_turns_are_never_trained_on_and_only_check_new_versions() {
    let tmp = scratch("gate", "heldout");
    let model = tiny_model(&tmp);
    let bridge = Bridge::start(&training_config(&model, "admins = [\"42\"]"));
    let c = bridge.client();
    let held = rate_turns(&c, 40);
    assert_eq!(held, ["t5", "t20", "t27", "t28"], "the choice is stable");

    let s = ok_json(bridge.data_dir(), &["status", "--json"]);
    assert_eq!(
        s["since_last_run"],
        json!({"ratings": 40, "to_train": 36, "held_out": 4})
    );

    let outcome = ok_json(bridge.data_dir(), &["train", "--json"]);
    assert_eq!(outcome["samples"], 36, "{outcome}");
    assert_eq!(outcome["held_out_new"], 4);
    assert_eq!(outcome["gate"]["held_out_turns"], 4);
    assert_eq!(outcome["gate"]["drift_only"], false);

    // A second round with more ratings, some of them on held-out turns again.
    for i in 40..56 {
        turn(&c, &format!("t{i}"), i % 2 == 0, false);
    }
    let outcome = ok_json(bridge.data_dir(), &["train", "--json"]);
    assert_eq!(
        outcome["held_out_new"], 2,
        "t45 and t54 are held out: {outcome}"
    );
    assert_eq!(outcome["gate"]["held_out_turns"], 6);

    let versions = store(&bridge).list().unwrap();
    assert_eq!(versions.len(), 2);
    let mut trained: Vec<String> = Vec::new();
    for v in &versions {
        for t in &v.metadata.ratings {
            assert!(
                !is_held_out(t),
                "{} was trained on held-out turn {t}",
                v.name
            );
            trained.push(t.clone());
        }
    }
    trained.sort();
    let mut expected: Vec<String> = (0..56)
        .map(|i| format!("t{i}"))
        .filter(|t| !is_held_out(t))
        .collect();
    expected.sort();
    assert_eq!(trained, expected, "every other rated turn was trained once");

    // Nothing waits: the held-out ratings were used to check versions, not left pending.
    let s = c.status();
    assert_eq!(s["counts"]["untrained"], 0, "{s}");
    assert_eq!(s["since_last_run"]["ratings"], 0);
    // history marks them.
    let history: Vec<Value> = ok(bridge.data_dir(), &["history", "--json", "-n", "100"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for row in &history {
        let id = row["turn_id"].as_str().unwrap();
        assert_eq!(row["held_out"], is_held_out(id), "{row}");
        assert_eq!(row["trained_in_run"].is_null(), is_held_out(id), "{row}");
    }
    // A run with only held-out ratings waiting trains nothing and says why.
    turn(&c, "t87", true, false);
    assert!(is_held_out("t87"));
    let reply = chat(&c, "train1", "train", "42", &[]);
    assert_eq!(
        reply["text"],
        "Nothing new to train on yet (1 new on held-out turns, which only check new versions): rate a few replies first."
    );
    let out = rlclaw(bridge.data_dir(), &["train"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("held-out turns"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// v1 trained on ratings that agree with the held-out ones; v2 on ratings against them.
fn promoted_then_held(tag: &str, extra: &str) -> (PathBuf, Bridge, Value, Value) {
    let tmp = scratch("gate", tag);
    let model = tiny_model(&tmp);
    let bridge = Bridge::start(&training_config(&model, extra));
    let c = bridge.client();
    rate_turns(&c, 40);
    let first = ok_json(bridge.data_dir(), &["train", "--json"]);
    rate_against(&c, "x", 24);
    let second = ok_json(bridge.data_dir(), &["train", "--json"]);
    (tmp, bridge, first, second)
}

#[test]
fn the_gate_promotes_an_adapter_that_leans_your_way_and_keeps_a_worse_one_as_a_candidate_with_the_reason()
 {
    let (tmp, bridge, first, second) = promoted_then_held("promote", "");
    let c = bridge.client();

    // v1 against the base model: it leans the way the held-out turns were rated.
    assert_eq!(first["promoted"], true, "{first}");
    assert_eq!(first["serving"], "v1");
    let g = &first["gate"];
    assert_eq!(g["verdict"], "promote");
    assert_eq!(g["held_out_turns"], 4);
    assert!(g["difference"].as_f64().unwrap() > 0.0, "{g}");
    assert_eq!(g["candidate"]["held_out"]["leans"], 4, "{g}");
    assert!(
        first["summary"]
            .as_str()
            .unwrap()
            .contains("v1 leans toward the replies you liked and away from the ones you did not on 4 of your 4 held-out turns"),
        "{first}"
    );

    // v2, trained against those ratings, is worse on them: kept, not served.
    assert_eq!(second["promoted"], false, "{second}");
    assert_eq!(second["version"], "v2");
    assert_eq!(second["serving"], "v1");
    assert_eq!(second["compared_with"], "v1");
    let reasons = second["gate"]["reasons"].as_array().unwrap();
    assert_eq!(reasons[0]["kind"], "worse_on_held_out", "{second}");
    assert!(reasons[0]["difference"].as_f64().unwrap() < 0.0);
    let summary = second["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("v2 is held back and not served: on your 4 held-out turns"),
        "{summary}"
    );
    assert!(summary.contains("below v1's"), "{summary}");

    // Every place a person looks says so, with the figures.
    let s = c.status();
    assert_eq!(s["adapter"], "v1");
    assert_eq!(s["gate"]["active"]["version"], "v1");
    assert_eq!(s["gate"]["active"]["decision"], "gate");
    assert_eq!(s["gate"]["candidate"]["version"], "v2");
    assert_eq!(s["gate"]["candidate"]["decision"], "held");
    assert_eq!(s["training"]["last_run"]["detail"], summary);
    let human = ok(bridge.data_dir(), &["status"]);
    assert!(human.contains("on 4 of your 4 held-out turns"), "{human}");
    assert!(human.contains("candidate v2 is held back"), "{human}");
    assert!(human.contains("`rlclaw promote v2`"), "{human}");
    let text = chat(&c, "st1", "status", "42", &[])["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.contains("v1 leans toward the replies you liked"),
        "{text}"
    );
    assert!(text.contains("v2 is held back"), "{text}");
    assert!(text.contains("Reward trend"), "{text}");
    let listing = ok(bridge.data_dir(), &["adapters"]);
    assert!(
        listing.contains("v2") && listing.contains("candidate, held back by the gate"),
        "{listing}"
    );
    assert!(listing.contains("serving, passed the gate"), "{listing}");
    let json = ok_json(bridge.data_dir(), &["adapters", "--json"]);
    assert_eq!(json[1]["candidate"], true);
    assert_eq!(json[1]["metadata"]["gate"]["compared_with"], "v1");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn an_admin_can_force_a_held_back_candidate_from_the_terminal_or_the_chat() {
    let (tmp, bridge, _, second) = promoted_then_held("force", "admins = [\"42\"]");
    assert_eq!(second["promoted"], false, "{second}");
    let c = bridge.client();

    let out = ok_json(bridge.data_dir(), &["promote", "v2", "--json"]);
    assert_eq!(out["serving"], "v2");
    assert_eq!(out["forced"]["by"], "cli");
    assert!(
        out["text"]
            .as_str()
            .unwrap()
            .contains("by an admin's choice; the gate had held it back"),
        "{out}"
    );
    let s = c.status();
    assert_eq!(s["adapter"], "v2");
    assert_eq!(s["gate"]["active"]["decision"], "forced");
    assert!(s["gate"]["candidate"].is_null(), "{s}");
    assert!(
        s["gate"]["active"]["summary"]
            .as_str()
            .unwrap()
            .contains("forced by an admin (cli"),
        "{s}"
    );
    // Promoting what already serves changes nothing.
    assert!(ok(bridge.data_dir(), &["promote", "v2"]).contains("already serves"));

    // In chat, an admin's `/rl rollback vN` serves a candidate too, recorded with their id;
    // anyone else is refused.
    rate_against(&c, "y", 16);
    let third = ok_json(bridge.data_dir(), &["train", "--json"]);
    assert_eq!(
        third["promoted"], false,
        "further from the held-out ratings: {third}"
    );
    assert_eq!(third["compared_with"], "v2");
    let r = c.post(
        "/v1/commands",
        json!({"event_id": "r0", "name": "rollback", "sender": "99", "session": "s", "args": ["v3"]}),
    );
    assert_eq!(r.status, 403);
    let reply = chat(&c, "r1", "rollback", "42", &["v3"]);
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .contains("the gate had held it back"),
        "{reply}"
    );
    let info = store(&bridge).get("v3").unwrap();
    assert_eq!(info.metadata.forced.unwrap().by, "42");
    let v3 = "v3";
    assert_eq!(c.status()["adapter"], v3);
    // An unknown version is a clear error and changes nothing.
    let out = rlclaw(bridge.data_dir(), &["promote", "v9"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such version"));
    assert_eq!(c.status()["adapter"], v3);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn too_few_held_out_ratings_fall_back_to_the_drift_check_and_say_so() {
    let tmp = scratch("gate", "few");
    let model = tiny_model(&tmp);
    let bridge = Bridge::start(&training_config(&model, ""));
    let c = bridge.client();
    assert_eq!(rate_turns(&c, 8), ["t5"]);
    let outcome = ok_json(bridge.data_dir(), &["train", "--json"]);
    assert_eq!(outcome["promoted"], true, "{outcome}");
    let g = &outcome["gate"];
    assert_eq!(g["drift_only"], true);
    assert_eq!(g["held_out_turns"], 1);
    assert_eq!(g["min_held_out"], 4);
    assert!(
        g["candidate"]["drift"]["perplexity_change"]
            .as_f64()
            .unwrap()
            < 0.2
    );
    let summary = outcome["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(
            "v1 passed on the drift check alone: only 1 held-out turn so far (4 are needed to compare versions)"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("perplexity on neutral prompts"),
        "{summary}"
    );
    let text = chat(&c, "st", "status", "42", &[])["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("drift check alone"), "{text}");
    assert_eq!(c.status()["adapter"], "v1");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn history_shows_the_hints_given_with_ratings() {
    let tmp = scratch("gate", "history");
    let model = tiny_model(&tmp);
    let bridge = Bridge::start(&training_config(&model, ""));
    let c = bridge.client();
    rate_turns(&c, 3);
    let rows: Vec<Value> = ok(bridge.data_dir(), &["history", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let t1 = rows.iter().find(|r| r["turn_id"] == "t1").unwrap();
    assert_eq!(t1["hints"], json!(["too long"]), "{t1}");
    let t0 = rows.iter().find(|r| r["turn_id"] == "t0").unwrap();
    assert_eq!(t0["hints"], json!([]));
    let human = ok(bridge.data_dir(), &["history"]);
    assert!(human.contains("hint: too long"), "{human}");
    let _ = std::fs::remove_dir_all(&tmp);
}

// ---- adapters trained elsewhere ----------------------------------------------------------

/// The tiny model's projection shapes (out, in) for q, k, v, o.
const SHAPES: [(&str, usize, usize); 4] = [
    ("q_proj", 32, 32),
    ("k_proj", 16, 32),
    ("v_proj", 16, 32),
    ("o_proj", 32, 32),
];

struct Tensor {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
    /// Stored as f16 rather than f32.
    half: bool,
}

/// An f32 as IEEE half-precision bits (round toward zero; tiny values flush to zero).
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    sign | ((exp.min(30) as u16) << 10) | ((b & 0x7f_ffff) >> 13) as u16
}

fn values(n: usize, scale: f32, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// LoRA tensors under PEFT's names for the given modules of every layer of the tiny model.
fn lora_tensors(r: usize, modules: &[&str], layers: usize, scale: f32) -> Vec<Tensor> {
    lora_tensors_for(&SHAPES, r, modules, layers, scale)
}

/// LoRA tensors for a model with the given projection shapes (name, out, in).
fn lora_tensors_for(
    shapes: &[(&str, usize, usize)],
    r: usize,
    modules: &[&str],
    layers: usize,
    scale: f32,
) -> Vec<Tensor> {
    let mut seed = 11;
    let mut out = Vec::new();
    for layer in 0..layers {
        for (m, o, i) in shapes.iter().filter(|(m, _, _)| modules.contains(m)) {
            let key = |ab: &str| {
                format!("base_model.model.model.layers.{layer}.self_attn.{m}.lora_{ab}.weight")
            };
            out.push(Tensor {
                name: key("A"),
                shape: vec![r, *i],
                data: values(r * i, scale, &mut seed),
                half: false,
            });
            out.push(Tensor {
                name: key("B"),
                shape: vec![*o, r],
                data: values(o * r, scale, &mut seed),
                half: false,
            });
        }
    }
    out
}

/// adapter_config.json as PEFT 0.21 writes it (the fields that matter, nulls included).
fn peft_config(r: usize, modules: &[&str], base: Option<&str>) -> Value {
    json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r,
        "target_modules": modules, "base_model_name_or_path": base, "bias": "none",
        "fan_in_fan_out": false, "use_rslora": false, "use_dora": false, "lora_dropout": 0.0,
        "modules_to_save": null, "rank_pattern": {}, "alpha_pattern": {},
        "layers_to_transform": null, "inference_mode": true, "peft_version": "0.21.2",
        "lora_bias": false, "init_lora_weights": true
    })
}

fn python() -> String {
    std::env::var("RLCLAW_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether the Python `safetensors` package is there to write adapters the way PEFT does.
fn python_safetensors() -> bool {
    Command::new(python())
        .args(["-c", "import safetensors"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Writes a PEFT adapter folder: with the Python `safetensors` package when it is installed
/// (tests/support/write_peft.py), else with the small independent writer below. Returns which.
fn write_adapter(dir: &Path, config: &Value, tensors: Option<&[Tensor]>) -> &'static str {
    std::fs::create_dir_all(dir).unwrap();
    if python_safetensors() {
        let spec = json!({
            "config": config,
            "tensors": tensors.map(|ts| ts.iter().map(|t| json!({
                "name": t.name, "shape": t.shape, "data": t.data,
                "dtype": if t.half { "float16" } else { "float32" },
            })).collect::<Vec<_>>()),
        });
        let spec_path = dir.with_extension("spec.json");
        std::fs::write(&spec_path, spec.to_string()).unwrap();
        let out = Command::new(python())
            .arg(workspace_root().join("tests/support/write_peft.py"))
            .arg(&spec_path)
            .arg(dir)
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return "python safetensors";
    }
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec_pretty(config).unwrap(),
    )
    .unwrap();
    if let Some(ts) = tensors {
        write_safetensors(&dir.join("adapter_model.safetensors"), ts);
    }
    "the test's own safetensors writer"
}

/// The safetensors format by hand: u64 header length, JSON header, little-endian data.
fn write_safetensors(path: &Path, tensors: &[Tensor]) {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut data = Vec::new();
    for t in tensors {
        let start = data.len();
        for v in &t.data {
            if t.half {
                data.extend_from_slice(&f16_bits(*v).to_le_bytes());
            } else {
                data.extend_from_slice(&v.to_le_bytes());
            }
        }
        let dtype = if t.half { "F16" } else { "F32" };
        header.insert(
            t.name.clone(),
            json!({"dtype": dtype, "shape": t.shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

fn import(dir: &Path, adapter: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["adapters", "import", adapter.to_str().unwrap()];
    args.extend_from_slice(extra);
    rlclaw(dir, &args)
}

#[test]
fn an_imported_peft_adapter_is_checked_gated_and_served_like_a_trained_one() {
    let tmp = scratch("gate", "import");
    let model = tiny_model(&tmp);
    let bridge = Bridge::start(&training_config(&model, ""));
    let c = bridge.client();
    let adapter = tmp.join("peft-qv");
    // PEFT's default for Llama: q_proj and v_proj only; B saved in half precision.
    let mut tensors = lora_tensors(4, &["q_proj", "v_proj"], 2, 0.05);
    for t in tensors.iter_mut().filter(|t| t.name.contains("lora_B")) {
        t.half = true;
    }
    let how = write_adapter(
        &adapter,
        &peft_config(4, &["v_proj", "q_proj"], Some("rlclaw-tiny-llama")),
        Some(&tensors),
    );
    eprintln!("adapter written with {how}");

    let out = import(bridge.data_dir(), &adapter, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["version"], "v1");
    assert_eq!(outcome["promoted"], true, "{outcome}");
    assert_eq!(outcome["serving"], "v1");
    assert_eq!(
        outcome["imported"]["target_modules"],
        json!(["q_proj", "v_proj"])
    );
    assert_eq!(outcome["imported"]["layers_trained"], 2);
    assert_eq!(outcome["imported"]["dtype"], "F32+F16");
    assert_eq!(
        outcome["imported"]["base_model_name_or_path"],
        "rlclaw-tiny-llama"
    );
    assert_eq!(
        outcome["gate"]["drift_only"], true,
        "no held-out ratings yet"
    );

    // Stored like a trained version: a PEFT folder with all four projections (k and o zero),
    // metadata saying where it came from, serving.
    let st = store(&bridge);
    let v1 = st.active().unwrap().unwrap();
    assert_eq!(v1.name, "v1");
    let imported = v1.metadata.imported.as_ref().unwrap();
    assert_eq!(
        imported["from"].as_str().unwrap(),
        std::fs::canonicalize(&adapter).unwrap().to_str().unwrap()
    );
    let (w, _) = LoraWeights::read_peft(&v1.path).unwrap();
    assert_eq!(w.rank, 4);
    let k_b = w.layers[0][1].1.abs().unwrap().sum_all().unwrap();
    assert_eq!(k_b.to_scalar::<f32>().unwrap(), 0.0);
    let q_b = w.layers[0][0].1.abs().unwrap().sum_all().unwrap();
    assert!(q_b.to_scalar::<f32>().unwrap() > 0.0);
    assert_eq!(c.status()["adapter"], "v1");
    let listing = ok(bridge.data_dir(), &["adapters"]);
    assert!(listing.contains("imported from"), "{listing}");

    // A second import is gated against v1 and on the held-out ratings that have come in since.
    rate_turns(&c, 40);
    // Rank-stabilised: scaled by alpha/√r, stored here as a plain LoRA with alpha·√r.
    let again = tmp.join("peft-qkvo");
    let mut rslora = peft_config(
        8,
        &["q_proj", "k_proj", "v_proj", "o_proj"],
        Some("HuggingFaceTB/rlclaw-tiny-llama"),
    );
    rslora["use_rslora"] = json!(true);
    write_adapter(
        &again,
        &rslora,
        Some(&lora_tensors(
            8,
            &["q_proj", "k_proj", "v_proj", "o_proj"],
            2,
            0.02,
        )),
    );
    let outcome: Value =
        serde_json::from_slice(&import(bridge.data_dir(), &again, &["--json"]).stdout)
            .expect("JSON outcome");
    assert_eq!(outcome["version"], "v2");
    assert_eq!(outcome["compared_with"], "v1");
    assert_eq!(outcome["gate"]["held_out_turns"], 4);
    assert_eq!(outcome["gate"]["drift_only"], false);
    assert_eq!(outcome["imported"]["use_rslora"], true);
    let (w, _) = LoraWeights::read_peft(&store(&bridge).get("v2").unwrap().path).unwrap();
    assert!((w.alpha - 16.0 * 8f64.sqrt()).abs() < 1e-9, "{}", w.alpha);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn an_imported_adapter_that_drifts_beyond_the_presets_bound_is_kept_as_a_candidate() {
    let tmp = scratch("gate", "drift");
    let model = tiny_model(&tmp);
    let bridge = Bridge::start(&training_config(&model, ""));
    let adapter = tmp.join("wild");
    // On the tiny model this adapter raises neutral perplexity by about 50% (0.5 lowers it by
    // about 66%, which harms no one and holds nothing back).
    write_adapter(
        &adapter,
        &peft_config(
            4,
            &["q_proj", "k_proj", "v_proj", "o_proj"],
            Some("rlclaw-tiny-llama"),
        ),
        Some(&lora_tensors(
            4,
            &["q_proj", "k_proj", "v_proj", "o_proj"],
            2,
            0.2,
        )),
    );
    let out = import(bridge.data_dir(), &adapter, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("The evaluation gate held it back"), "{text}");
    assert!(
        text.contains("v1 is held back and not served: its perplexity on neutral prompts is +"),
        "{text}"
    );
    assert!(text.contains("above the limit of +20.0%"), "{text}");
    assert!(
        text.contains("The gate checked drift alone: there are no held-out turns yet"),
        "{text}"
    );
    assert!(text.contains("`rlclaw promote v1`"), "{text}");
    let s = bridge.client().status();
    assert!(s["adapter"].is_null(), "the base model still serves: {s}");
    assert_eq!(s["gate"]["candidate"]["version"], "v1");
    assert_eq!(
        s["gate"]["candidate"]["report"]["reasons"][0]["kind"],
        "drift"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_mismatched_adapter_is_refused_with_a_clear_error_and_changes_nothing() {
    let tmp = scratch("gate", "mismatch");
    let model = tiny_model(&tmp);
    let bridge = Bridge::start(&training_config(&model, ""));
    let qv = ["q_proj", "v_proj"];
    let fine = || lora_tensors(4, &qv, 2, 0.05);
    let cfg = |base: Option<&str>| peft_config(4, &qv, base);
    let mut wrong_shape = fine();
    wrong_shape[0].shape = vec![4, 64];
    wrong_shape[0].data = vec![0.0; 4 * 64];
    let mut extra_layer = fine();
    extra_layer.extend(
        lora_tensors(4, &qv, 3, 0.05)
            .into_iter()
            .filter(|t| t.name.contains("layers.2.")),
    );
    let mut stray = fine();
    stray.push(Tensor {
        name: "base_model.model.lm_head.weight".into(),
        shape: vec![4],
        data: vec![0.0; 4],
        half: false,
    });
    let mut missing_b = fine();
    missing_b.retain(|t| !t.name.ends_with("layers.1.self_attn.v_proj.lora_B.weight"));
    let mut mlp_cfg = cfg(Some("rlclaw-tiny-llama"));
    mlp_cfg["target_modules"] = json!(["q_proj", "v_proj", "gate_proj"]);
    let mut ia3 = cfg(Some("rlclaw-tiny-llama"));
    ia3["peft_type"] = json!("IA3");
    let mut dora = cfg(Some("rlclaw-tiny-llama"));
    dora["use_dora"] = json!(true);

    let cases: Vec<(&str, Value, Option<Vec<Tensor>>, &str)> = vec![
        (
            "other-base",
            cfg(Some("HuggingFaceTB/SmolLM2-360M-Instruct")),
            Some(fine()),
            "the adapter was trained on \"HuggingFaceTB/SmolLM2-360M-Instruct\" but the base model here is \"rlclaw-tiny-llama\"",
        ),
        (
            "shape",
            cfg(Some("rlclaw-tiny-llama")),
            Some(wrong_shape),
            "has shape [4, 64]; the base model needs [4, 32]",
        ),
        (
            "layer",
            cfg(Some("rlclaw-tiny-llama")),
            Some(extra_layer),
            "is for layer 2, but the base model has 2 layers",
        ),
        (
            "stray",
            cfg(Some("rlclaw-tiny-llama")),
            Some(stray),
            "tensor base_model.model.lm_head.weight is not a LoRA A/B weight",
        ),
        (
            "missing-b",
            cfg(Some("rlclaw-tiny-llama")),
            Some(missing_b),
            "layer 1 v_proj has no lora_B",
        ),
        (
            "mlp",
            mlp_cfg,
            Some(fine()),
            "it trains gate_proj; rlclaw serves LoRA on the attention projections only",
        ),
        (
            "ia3",
            ia3,
            Some(fine()),
            "not a PEFT LoRA adapter: peft_type is IA3",
        ),
        (
            "dora",
            dora,
            Some(fine()),
            "DoRA (use_dora) is not supported",
        ),
        (
            "no-weights",
            cfg(Some("rlclaw-tiny-llama")),
            None,
            "adapter_model.safetensors is missing",
        ),
    ];
    for (name, config, tensors, expected) in cases {
        let dir = tmp.join(name);
        write_adapter(&dir, &config, tensors.as_deref());
        let out = import(bridge.data_dir(), &dir, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(err.contains(expected), "{name}: {err}");
        assert!(err.contains("nothing was changed"), "{name}: {err}");
        let st = store(&bridge);
        assert!(
            st.list().unwrap().is_empty(),
            "{name} left a version behind"
        );
        assert!(st.active().unwrap().is_none());
    }
    let out = import(bridge.data_dir(), &tmp.join("absent"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open the adapter folder"));

    // The same weights recorded under another base name go in with --any-base.
    let dir = tmp.join("renamed");
    write_adapter(&dir, &cfg(Some("my-own-name")), Some(&fine()));
    assert!(!import(bridge.data_dir(), &dir, &[]).status.success());
    let out = import(bridge.data_dir(), &dir, &["--any-base", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(store(&bridge).list().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn an_adapter_trained_elsewhere_for_smollm2_fits_the_demo_model_by_its_hub_name() {
    let tmp = scratch("gate", "smollm2");
    let model = rlclaw_tests::model::smollm2();
    let bridge = Bridge::start(&format!(
        "[training]\nauto_after = 0\nmodel = \"{}\"\n",
        model.display()
    ));
    // SmolLM2-135M-Instruct: 30 layers, hidden 576, 9 query and 3 key-value heads of 64.
    let shapes = [("q_proj", 576, 576), ("v_proj", 192, 576)];
    let adapter = tmp.join("smollm2-lora");
    let how = write_adapter(
        &adapter,
        &peft_config(
            8,
            &["q_proj", "v_proj"],
            Some("HuggingFaceTB/SmolLM2-135M-Instruct"),
        ),
        Some(&lora_tensors_for(
            &shapes,
            8,
            &["q_proj", "v_proj"],
            30,
            0.01,
        )),
    );
    eprintln!("adapter written with {how}");
    let out = import(bridge.data_dir(), &adapter, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["promoted"], true, "{outcome}");
    assert_eq!(outcome["imported"]["layers_trained"], 30);
    let drift = &outcome["gate"]["candidate"]["drift"];
    assert!(drift["tokens"].as_u64().unwrap() > 500, "{drift}");
    assert!(
        drift["perplexity_change"].as_f64().unwrap().abs() < 0.01,
        "{drift}"
    );
    assert_eq!(bridge.client().status()["adapter"], "v1");
    let _ = std::fs::remove_dir_all(&tmp);
}
