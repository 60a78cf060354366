#!/usr/bin/env python3
"""One LoRA training step with PyTorch + PEFT, the same shape as benches/train_step.rs.

SmolLM2-135M-Instruct loaded from the same GGUF (transformers dequantises it), LoRA r=16,
alpha=32 on q/k/v/o, base frozen, float32, one 256-token sequence (16 prompt tokens, 240
response tokens), loss -(mean log-prob of the response tokens), AdamW, 2 threads. Reports
min and median seconds per step, CPU seconds per step, and peak RSS (on a GPU: peak memory
allocated by PyTorch; each step ends with a synchronisation).

Needs: pip install torch transformers peft gguf accelerate
Run:   python3 bridge/trainer/benches/peft_step.py --gguf ~/.cache/rlclaw/models/SmolLM2-135M-Instruct.Q4_1.gguf
GPU:   python3 bridge/trainer/benches/peft_step.py --model HF_FOLDER --device cuda
"""
import argparse
import os
import resource
import statistics
import time

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXT = (
    "<|im_start|>user\nExplain how a hash map handles collisions.<|im_end|>\n"
    "<|im_start|>assistant\nA hash map stores key-value pairs in an array of buckets. "
    "When two keys hash to the same bucket, it resolves the collision by chaining "
    "(a list per bucket) or by open addressing (probing for the next free slot). "
) * 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=os.path.expanduser(
        "~/.cache/rlclaw/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None,
                    help="a Hugging Face folder to load instead of --gguf")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    if a.model:
        tok = AutoTokenizer.from_pretrained(a.model)
        model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
    else:
        folder, name = os.path.split(a.gguf)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    model = model.to(dev)
    sync()
    load_s = time.perf_counter() - t0
    model = get_peft_model(model, LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, bias="none",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.0)

    ids = tok(TEXT, return_tensors="pt", add_special_tokens=False).input_ids[:, :a.seq]
    assert ids.shape[1] == a.seq, ids.shape
    flat = ids[0].tolist()
    print(f"model {a.model or a.gguf} on {dev}; token ids: {len(flat)} (sum {sum(flat)}, first {flat[:8]})")
    ids = ids.to(dev)
    targets = ids[:, a.prompt:]

    def step():
        logits = model(input_ids=ids).logits[:, a.prompt - 1:-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        loss = -lp.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        return loss.item()

    wall, cpu = [], []
    for i in range(a.warmup + a.steps):
        sync()
        c0, t0 = time.process_time(), time.perf_counter()
        loss = step()
        sync()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        print(f"{'warmup' if i < a.warmup else 'timed'} step {i}: {dt:.3f}s cpu {dc:.2f}s loss {loss:.4f}", flush=True)
        if i >= a.warmup:
            wall.append(dt)
            cpu.append(dc)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pytorch {torch.__version__} + peft {peft.__version__} + transformers "
          f"{transformers.__version__}, SmolLM2-135M f32 on {dev} seq={a.seq} LoRA r=16 q/k/v/o: "
          f"{sum(p.numel() for p in trainable)} trainable params, load {load_s:.2f}s")
    print(f"train s/step min={min(wall):.3f} median={statistics.median(wall):.3f} (n={a.steps}) "
          f"tok/s(median)={a.seq / statistics.median(wall):.1f}")
    print(f"cpu s/step (user+sys, all threads) median={statistics.median(cpu):.2f} min={min(cpu):.2f}")
    print(f"peak_rss_MiB={rss:.0f} threads={torch.get_num_threads()}")
    if cuda:
        print(f"gpu {torch.cuda.get_device_name()}: peak allocated "
              f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB, reserved "
              f"{torch.cuda.max_memory_reserved() / 2**20:.0f} MiB; "
              f"tf32 matmul {torch.backends.cuda.matmul.allow_tf32}")


if __name__ == "__main__":
    main()
