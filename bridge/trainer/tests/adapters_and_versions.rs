//! PEFT files and the version store: round trip, promote/rollback/reset, crash safety, and
//! clear errors for missing or corrupt adapters.

use std::path::Path;

use candle_core::{DType, Device};
use rlclaw_trainer::adapter::{CONFIG_FILE, WEIGHTS_FILE, peft_key};
use rlclaw_trainer::tiny::tiny_config;
use rlclaw_trainer::versions::{ACTIVE_FILE, METADATA_FILE};
use rlclaw_trainer::{AdapterStore, Arch, LoraSet, LoraWeights, NewVersion, TrainerError};

/// A fresh folder, removed when the test ends.
fn tempdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("rlclaw-trainer-{name}-"))
        .tempdir()
        .unwrap()
}

fn adapter(seed: u64) -> LoraWeights {
    let cfg = tiny_config(Arch::Qwen2);
    let set = LoraSet::init(&cfg, 4, 8.0, seed, DType::F32, &Device::Cpu).unwrap();
    // Non-zero B so that round trips are meaningful.
    for l in &set.layers {
        for p in l {
            let b = (p.b.ones_like().unwrap() * (seed as f64 * 0.01)).unwrap();
            p.b.set(&b).unwrap();
        }
    }
    set.to_weights().unwrap()
}

fn new_version(parent: Option<&str>, turns: &[&str]) -> NewVersion {
    NewVersion {
        parent: parent.map(str::to_string),
        ratings: turns.iter().map(|s| s.to_string()).collect(),
        metrics: serde_json::json!({"final_loss": 0.5}),
        base_model: "rlclaw-tiny-qwen2".into(),
    }
}

#[test]
fn peft_round_trip_keeps_keys_shapes_and_values() {
    let tmp = tempdir("peft");
    let dir = tmp.path();
    let a = adapter(3);
    a.write_peft(dir, "base/model").unwrap();
    let cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(cfg_json["peft_type"], "LORA");
    assert_eq!(cfg_json["task_type"], "CAUSAL_LM");
    assert_eq!(cfg_json["r"], 4);
    assert_eq!(cfg_json["lora_alpha"], 8.0);
    assert_eq!(cfg_json["base_model_name_or_path"], "base/model");
    assert_eq!(
        cfg_json["target_modules"],
        serde_json::json!(["q_proj", "k_proj", "v_proj", "o_proj"])
    );
    let raw = candle_core::safetensors::load(dir.join(WEIGHTS_FILE), &Device::Cpu).unwrap();
    assert_eq!(raw.len(), 2 * 4 * 2);
    let qa = &raw[&peft_key(1, "q_proj", 'A')];
    assert_eq!(qa.dims(), &[4, 32]);
    assert_eq!(raw[&peft_key(0, "k_proj", 'B')].dims(), &[16, 4]);
    assert_eq!(raw[&peft_key(0, "o_proj", 'A')].dims(), &[4, 32]);
    assert_eq!(
        peft_key(0, "v_proj", 'B'),
        "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"
    );
    let (b, cfg) = LoraWeights::read_peft(dir).unwrap();
    assert_eq!((b.rank, b.alpha, cfg.r), (4, 8.0, 4));
    b.check_compatible(&tiny_config(Arch::Qwen2)).unwrap();
    for (la, lb) in a.layers.iter().zip(&b.layers) {
        for ((aa, ab), (ba, bb)) in la.iter().zip(lb) {
            assert_eq!(aa.to_vec2::<f32>().unwrap(), ba.to_vec2::<f32>().unwrap());
            assert_eq!(ab.to_vec2::<f32>().unwrap(), bb.to_vec2::<f32>().unwrap());
        }
    }
    // Shapes that do not fit another model are refused.
    assert!(
        b.check_compatible(&rlclaw_trainer::tiny::tiny_config(Arch::Llama))
            .is_ok()
    );
    let mut other = tiny_config(Arch::Llama);
    other.hidden_size = 64;
    assert!(b.check_compatible(&other).is_err());
}

fn expect_adapter_error(dir: &Path, needle: &str) {
    match LoraWeights::read_peft(dir) {
        Err(e @ TrainerError::Adapter { .. }) => {
            assert!(e.to_string().contains(needle), "{e}");
        }
        Err(e) => panic!("wrong error kind: {e}"),
        Ok(_) => panic!("a broken adapter was accepted"),
    }
}

#[test]
fn missing_or_corrupt_adapters_give_clear_errors() {
    let tmp = tempdir("corrupt");
    let dir = tmp.path();
    expect_adapter_error(dir, "adapter_config.json");
    adapter(1).write_peft(dir, "m").unwrap();
    std::fs::write(
        dir.join(WEIGHTS_FILE),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"bad",
    )
    .unwrap();
    expect_adapter_error(dir, "corrupt");
    std::fs::remove_file(dir.join(WEIGHTS_FILE)).unwrap();
    expect_adapter_error(dir, "missing");
    std::fs::write(dir.join(CONFIG_FILE), b"{not json").unwrap();
    expect_adapter_error(dir, "not a PEFT LoRA config");
}

#[test]
fn versions_promote_rollback_and_reset() {
    let tmp = tempdir("store");
    let root = tmp.path();
    let store = AdapterStore::open(root.join("adapters")).unwrap();
    assert!(store.active().unwrap().is_none());
    assert!(store.list().unwrap().is_empty());
    let v1 = store
        .save(&adapter(1), new_version(None, &["t1", "t2"]))
        .unwrap();
    assert_eq!(v1.name, "v1");
    assert!(
        store.active().unwrap().is_none(),
        "saving does not activate"
    );
    store.promote("v1").unwrap();
    let v2 = store
        .save(&adapter(2), new_version(Some("v1"), &["t3"]))
        .unwrap();
    assert_eq!(v2.name, "v2");
    store.promote("v2").unwrap();
    assert_eq!(store.active().unwrap().unwrap().name, "v2");
    let meta = store.get("v2").unwrap().metadata;
    assert_eq!(meta.parent.as_deref(), Some("v1"));
    assert_eq!(meta.ratings, vec!["t3".to_string()]);
    assert_eq!(meta.base_model, "rlclaw-tiny-qwen2");
    assert_eq!(meta.metrics["final_loss"], 0.5);
    assert_eq!(
        store
            .list()
            .unwrap()
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        ["v1", "v2"]
    );

    // Default rollback: to the active version's parent, then to the base.
    assert_eq!(store.rollback(None).unwrap().unwrap().name, "v1");
    assert_eq!(store.active().unwrap().unwrap().name, "v1");
    assert!(store.rollback(None).unwrap().is_none());
    assert!(store.active().unwrap().is_none());
    assert!(
        store.rollback(None).is_err(),
        "nothing to roll back from the base"
    );
    // Explicit rollback target.
    assert_eq!(store.rollback(Some("v2")).unwrap().unwrap().name, "v2");
    store.reset().unwrap();
    assert!(store.active().unwrap().is_none());
    assert_eq!(store.list().unwrap().len(), 2, "reset keeps versions");
    // Bad names and unknown versions are errors, and change nothing.
    store.promote("v2").unwrap();
    assert!(store.promote("v9").is_err());
    assert!(store.promote("../etc").is_err());
    assert!(
        store
            .save(&adapter(3), new_version(Some("v7"), &[]))
            .is_err()
    );
    assert_eq!(store.active().unwrap().unwrap().name, "v2");
    let w = store.load("v2").unwrap();
    assert_eq!(w.rank, 4);
}

#[test]
fn a_crashed_write_leaves_the_active_adapter_usable() {
    let tmp = tempdir("crash");
    let root = tmp.path();
    let dir = root.join("adapters");
    {
        let store = AdapterStore::open(&dir).unwrap();
        store.save(&adapter(1), new_version(None, &["t1"])).unwrap();
        store.promote("v1").unwrap();
    }
    // A writer killed mid-way: a temporary folder of a dead process with half the files, a
    // version folder without its weights (written by hand, not by the store), and a pointer
    // temporary.
    let tmp = dir.join(".tmp-999999999-1-v2");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join(CONFIG_FILE), b"{").unwrap();
    std::fs::write(dir.join(".tmp-999999999-2-active"), b"v2").unwrap();
    let broken = dir.join("v2");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join(METADATA_FILE), b"{}").unwrap();

    let store = AdapterStore::open(&dir).unwrap();
    assert!(!tmp.exists(), "stale temporaries are cleaned up");
    assert!(!dir.join(".tmp-999999999-2-active").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join(ACTIVE_FILE))
            .unwrap()
            .trim(),
        "v1"
    );
    let active = store.active().unwrap().unwrap();
    assert_eq!(active.name, "v1");
    assert_eq!(store.load("v1").unwrap().rank, 4);
    assert_eq!(
        store.list().unwrap().len(),
        1,
        "the incomplete v2 is not listed"
    );
    let e = store.promote("v2").unwrap_err().to_string();
    assert!(e.contains("incomplete"), "{e}");
    assert_eq!(store.active().unwrap().unwrap().name, "v1");
    // The next version skips the broken name.
    let v3 = store
        .save(&adapter(2), new_version(Some("v1"), &["t2"]))
        .unwrap();
    assert_eq!(v3.name, "v3");
    // A corrupt weights file in the active version is reported, not a panic.
    std::fs::write(dir.join("v1").join(WEIGHTS_FILE), b"garbage").unwrap();
    let e = store.load("v1").unwrap_err().to_string();
    assert!(e.contains("corrupt"), "{e}");
}
