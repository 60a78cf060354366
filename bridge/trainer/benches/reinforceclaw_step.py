#!/usr/bin/env python3
"""ReinforceClaw 0.1.0's own CUDA training loop, timed step by step, on the shape of
benches/train_step.rs and benches/peft_step.py.

What runs is ReinforceClaw's `trainer.train_result(config, conn)`: the call behind
`reinforceclaw train` (foreground, so no 2-step background slicing; by default it lowers its own
priority to nice 19). It opens its SQLite store,
takes its training lock, picks its CUDA backend, loads the model with transformers, wraps it with
PEFT LoRA on its attention targets (q/k/v/o), plans the memory budget, computes the reference
log-probs with the adapter disabled, builds its fused AdamW and runs its own optimizer-step loop:
per step its telemetry and headroom checks, `loss_fn(idx) / grad_accum` (its MIS-PO loss with its
per-step diagnostics), `.item()`, `backward()`, `clip_grad_norm_(1.0)`, `optimizer.step()`,
`torch.cuda.synchronize()`, `torch.cuda.empty_cache()`, its JSONL step log and memory guard; then
it saves and registers the adapter. Nothing of that is re-implemented here. The config is its
auto-tuned "balanced" preset for this model (tiny bucket: batch 8, grad_accum 1, rank 16), so one
optimizer step is one sequence forward + backward, as in the other two benches.

Three things are substituted, and only these:
  * the ratings are 8 rows added with its own `db.add_feedback` (rating +1) to a private store
    under a temporary HOME;
  * its tokenisation (`trainer._tokenize_torch`) returns, for every rating, the same 256 token ids
    as the other benches (16 prompt tokens, 240 response tokens), in the dict layout its own
    function returns (CPU tensors `input_ids` and `attention_mask`, `response_start`, `rating`,
    `id`); its chat template would otherwise produce a different sequence;
  * with `--dtype float32` (the default) `CUDABackend.preferred_dtype` returns float32, as in the
    other benches; `--dtype native` keeps ReinforceClaw's own choice (bfloat16 on this GPU; the
    LoRA weights stay float32 either way).
Config overrides of its preset: steps (warm-up + timed + 1), lora_alpha 32 (the other benches'
scale; speed-neutral), batch_min 8, max_seq_len 256.

Timing: its loop logs an `opt_step` event right after its `torch.cuda.synchronize()`; the time
between two consecutive `opt_step` events is one whole iteration of its loop. Step 0 has no event
before it, so it is always warm-up; the first --warmup intervals are dropped too. The forward
share is the time of its `loss_fn` call (wrapped, with a synchronisation after it; its own
`.item()` follows at once, so this adds nothing). Cross-check: -mean of its reference response
log-probs equals the first loss of the other two benches (same model, same ids, LoRA B = 0).

Needs: torch, transformers, peft, safetensors, requests, rich, tomlkit and the wheel:
  pip install --no-deps reinforceclaw==0.1.0   (pip download --no-deps reinforceclaw==0.1.0 tomlkit)
Run:   python3 bridge/trainer/benches/reinforceclaw_step.py --model HF_FOLDER --steps 20 --warmup 3
CPU smoke test (no GPU; a CPU stand-in for its CUDA backend): add --device cpu --steps 2 --warmup 0
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

TEXT = (
    "<|im_start|>user\nExplain how a hash map handles collisions.<|im_end|>\n"
    "<|im_start|>assistant\nA hash map stores key-value pairs in an array of buckets. "
    "When two keys hash to the same bucket, it resolves the collision by chaining "
    "(a list per bucket) or by open addressing (probing for the next free slot). "
) * 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a Hugging Face folder (benches/random_model.py)")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8, help="ratings in the round (its preset: 8)")
    ap.add_argument("--dtype", choices=["float32", "native"], default="float32")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    a = ap.parse_args()

    # ReinforceClaw keeps everything under ~/.reinforceclaw, resolved at import time.
    home = tempfile.mkdtemp(prefix="rc-bench-home-")
    os.environ["HOME"] = home
    model_dir = os.path.abspath(a.model)

    import torch
    import transformers
    import peft
    from transformers import AutoTokenizer
    import reinforceclaw
    from reinforceclaw import backend_cuda, cli, db, presets, profile, trainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(TEXT, return_tensors="pt", add_special_tokens=False).input_ids[0, :a.seq].contiguous()
    assert ids.shape[0] == a.seq, ids.shape
    flat = ids.tolist()
    print(f"model {model_dir} on {a.device}; token ids: {len(flat)} (sum {sum(flat)}, first {flat[:8]})")

    def fixed_tokenize(tokenizer, item, torch_device):
        _ = tokenizer, torch_device  # its own function ignores the device too (CPU tensors)
        return {
            "input_ids": ids.clone(),
            "response_start": a.prompt,
            "rating": item["rating"],
            "id": item["id"],
            "attention_mask": torch.ones_like(ids),
        }

    trainer._tokenize_torch = fixed_tokenize

    if a.dtype == "float32":
        backend_cuda.CUDABackend.preferred_dtype = lambda self: self.torch.float32

    if a.device == "cpu":
        class CPUStandIn(backend_cuda.CUDABackend):
            """Only for a smoke test of this script without a GPU."""

            def __init__(self):
                self.torch = torch
                self.device = torch.device("cpu")

            def hardware(self):
                total = 64 * 2**30
                return backend_cuda.CUDAHardware("cpu", total, total, backend_cuda._system_total_bytes(),
                                                 backend_cuda._available_bytes())

            def apply_limits(self, limit_bytes, cache_fraction=0.25):
                pass

            def active_memory_bytes(self):
                return 0

            def cache_memory_bytes(self):
                return 0

            def peak_memory_bytes(self):
                return 0

            def current_memory_bytes(self):
                return 0

        trainer.CUDABackend = CPUStandIn

    cuda = a.device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    # Timing hooks: wrap, never replace, its functions.
    events, fwd, ref_first = [], [], []
    log_event = trainer._log_event

    def timed_log_event(event, **fields):
        if event == "opt_step":
            events.append((time.perf_counter(), fields))
        elif event in ("train_error", "skip"):
            print(f"reinforceclaw {event}: {fields}", flush=True)
        return log_event(event, **fields)

    trainer._log_event = timed_log_event

    make_loss_fn = trainer._make_loss_fn_torch

    def timed_make_loss_fn(*args, **kwargs):
        loss_fn = make_loss_fn(*args, **kwargs)

        def timed_loss_fn(idx):
            t0 = time.perf_counter()
            loss = loss_fn(idx)
            sync()
            fwd.append(time.perf_counter() - t0)
            return loss

        return timed_loss_fn

    trainer._make_loss_fn_torch = timed_make_loss_fn

    plan_strategy = trainer._plan_strategy

    def printed_plan(*args, **kwargs):
        plan = plan_strategy(*args, **kwargs)
        if plan is not None:
            print(f"its plan: batch {plan.effective_batch_size}, grad_accum {plan.grad_accum}, "
                  f"steps {plan.steps}, gradient checkpointing {plan.aggressive_checkpointing}, "
                  f"memory limit {plan.memory_limit_bytes / 2**30:.1f} GiB", flush=True)
        return plan

    trainer._plan_strategy = printed_plan

    compute_logprobs = trainer._compute_logprobs_torch

    def recording_logprobs(model, item, torch_module):
        lp = compute_logprobs(model, item, torch_module)
        if not ref_first:
            ref_first.append(lp)
        return lp

    trainer._compute_logprobs_torch = recording_logprobs

    # Its config: CLI defaults, then its auto-tuned preset for this model, as `reinforceclaw init`
    # writes them, then the bench shape.
    total_steps = a.warmup + a.steps + 1
    config = dict(cli.DEFAULTS)
    config.update({"model": model_dir, "preset": "balanced", "compute_backend": "cuda",
                   "server": "other"})
    prof = profile.detect(model_dir)
    config.update(presets.pick(prof, "balanced"))
    config.update({"steps": total_steps, "lora_alpha": 32, "batch_min": a.batch,
                   "batch_size": a.batch, "max_seq_len": a.seq})
    print(f"reinforceclaw {reinforceclaw.__version__}: profile {prof.size_bucket} "
          f"({prof.total_b:.3f}B), preset balanced: batch_size {config['batch_size']}, "
          f"grad_accum {config['grad_accum']}, rank {config['lora_rank']}, lr {config['lr']}, "
          f"loss {config['loss_fn']}, target {config['lora_target']}; steps {total_steps}")

    db.init()
    conn = db.connect()
    for i in range(a.batch):
        db.add_feedback(conn, model_dir, f"bench prompt {i}", "bench response", 1, source="cli")

    t0 = time.perf_counter()
    result = trainer.train_result(config, conn)
    run_s = time.perf_counter() - t0
    status = result.get("status")
    print(f"train_result: status {status}, reason {result.get('reason')}, "
          f"detail {result.get('detail')}, steps {result.get('steps')}, "
          f"avg_loss {result.get('avg_loss')}, peak_memory_gb (its reserved) "
          f"{result.get('peak_memory_gb')}; whole call {run_s:.1f}s")
    if ref_first:
        r = ref_first[0][a.prompt - 1:]
        print(f"reference -mean response log-prob (the other benches' first loss): {-r.mean().item():.4f}")

    times = [t for t, _ in events]
    steps = [b - c for b, c in zip(times[1:], times[:-1])]
    if len(steps) <= a.warmup:
        print(f"only {len(events)} opt_step events; nothing to time")
        sys.exit(1)
    timed = steps[a.warmup:]
    timed_fwd = fwd[1 + a.warmup:1 + a.warmup + len(timed)]
    for i, s in enumerate(steps):
        f = fwd[i + 1] if i + 1 < len(fwd) else float("nan")
        kind = "warmup" if i < a.warmup else "timed"
        print(f"{kind} step {i + 1}: {s:.3f}s (loss_fn {f:.3f}s) loss {events[i + 1][1].get('loss')}")
    med = statistics.median(timed)
    print(f"pytorch {torch.__version__} + peft {peft.__version__} + transformers "
          f"{transformers.__version__}, reinforceclaw {reinforceclaw.__version__} train_result, "
          f"SmolLM2-135M {a.dtype} on {a.device} seq={a.seq} LoRA r={config['lora_rank']} "
          f"{config['lora_target']}")
    print(f"train s/step min={min(timed):.3f} median={med:.3f} (n={len(timed)}) "
          f"tok/s(median)={a.seq / med:.1f} | loss_fn (forward + loss) median="
          f"{statistics.median(timed_fwd):.3f}, rest (backward, clip, AdamW, sync, empty_cache, "
          f"its checks and log) median={statistics.median(b - f for b, f in zip(timed, timed_fwd)):.3f}")
    if cuda:
        print(f"gpu {torch.cuda.get_device_name()}: peak allocated "
              f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB, reserved "
              f"{torch.cuda.max_memory_reserved() / 2**20:.0f} MiB (since its reset before the loop); "
              f"tf32 matmul {torch.backends.cuda.matmul.allow_tf32}")
    if status != "trained":
        sys.exit(1)


if __name__ == "__main__":
    main()
