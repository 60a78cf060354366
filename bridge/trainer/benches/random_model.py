#!/usr/bin/env python3
"""Writes a Llama-family model with random weights as a Hugging Face folder, for the training
benchmarks on a machine that cannot fetch the real weights (the GPU machines this project is lent
reach no registry, and the SmolLM2 GGUF is too large to send along).

The shape, tokenizer and chat template come from a template folder holding config.json,
tokenizer.json and tokenizer_config.json: for SmolLM2-135M-Instruct, the folder that
rlclaw-serve converts the GGUF into (~/.cache/rlclaw/serve/gguf-*/, without its weights). The
weights are transformers' own initialisation (normal, std = initializer_range) under a fixed
seed, in float32; step times depend on the shape, not on the values.

Needs: torch, transformers, safetensors
Run:   python3 bridge/trainer/benches/random_model.py --template DIR --out DIR
"""
import argparse
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

FILES = ["config.json", "tokenizer.json", "tokenizer_config.json"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--template", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    for f in FILES:
        shutil.copyfile(os.path.join(a.template, f), os.path.join(a.out, f))
    cfg = AutoConfig.from_pretrained(a.out)
    torch.manual_seed(a.seed)
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
    tied = getattr(cfg, "tie_word_embeddings", False)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()
          if not (tied and k == "lm_head.weight")}
    save_file(sd, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    n = sum(v.numel() for v in sd.values())
    print(f"wrote {a.out}: {type(model).__name__}, {n} parameters, seed {a.seed}")


if __name__ == "__main__":
    main()
