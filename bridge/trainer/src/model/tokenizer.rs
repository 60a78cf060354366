//! Building a `tokenizers::Tokenizer` from GGUF metadata (GPT-2 style byte-level BPE), the way
//! SmolLM2, Llama 3 and Qwen GGUF files describe it.

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::error::{Result, TrainerError};

/// Token type codes in `tokenizer.ggml.token_type`.
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Pre-tokenizer JSON for a llama.cpp `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: Option<&str>) -> Value {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    match pre.unwrap_or("default") {
        "smollm" | "starcoder" | "refact" => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]
        }),
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" => json!({
            "type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]
        }),
        "qwen2" | "qwen35" | "deepseek-r1-qwen" => json!({
            "type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]
        }),
        _ => byte_level(true),
    }
}

/// The vocabulary part of a GGUF file's tokenizer metadata.
pub struct GgufVocab<'a> {
    pub model: &'a str,
    pub pre: Option<&'a str>,
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    pub token_types: Vec<i64>,
}

/// Builds a byte-level BPE tokenizer.json document.
pub fn bpe_tokenizer_json(v: &GgufVocab<'_>) -> Result<Value> {
    if v.model != "gpt2" {
        return Err(TrainerError::Tokenizer(format!(
            "GGUF tokenizer model {:?} is not supported (only byte-level BPE, \"gpt2\")",
            v.model
        )));
    }
    let mut vocab = serde_json::Map::with_capacity(v.tokens.len());
    let mut added = Vec::new();
    for (id, tok) in v.tokens.iter().enumerate() {
        vocab.insert(tok.clone(), json!(id));
        let ty = v.token_types.get(id).copied().unwrap_or(1);
        if ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED {
            added.push(json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == TOKEN_CONTROL
            }));
        }
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(v.pre),
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": v.merges
        }
    }))
}

/// Parses a tokenizer.json document.
pub fn tokenizer_from_json(doc: &Value) -> Result<Tokenizer> {
    let s = serde_json::to_string(doc).map_err(|e| TrainerError::Tokenizer(e.to_string()))?;
    s.parse::<Tokenizer>()
        .map_err(|e| TrainerError::Tokenizer(format!("cannot build tokenizer: {e}")))
}
