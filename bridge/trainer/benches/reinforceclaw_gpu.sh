#!/bin/bash
# One training step on a CUDA machine, three stacks back to back in one run: rlclaw's train_step
# bench (prebuilt, see scripts/gpu-check.sh), ReinforceClaw 0.1.0's own trainer
# (benches/reinforceclaw_step.py) and the plain PyTorch + PEFT step (benches/peft_step.py), all on
# the same random SmolLM2-135M-shaped model (benches/random_model.py) and the same 256 token ids.
#
#   bridge/trainer/benches/reinforceclaw_gpu.sh BIN_DIR TEMPLATE_DIR WHEEL_DIR
#
# BIN_DIR holds the train_step executable built with --features cuda; TEMPLATE_DIR SmolLM2's
# config.json, tokenizer.json and tokenizer_config.json; WHEEL_DIR the wheels of reinforceclaw
# 0.1.0 and tomlkit (`pip download --no-deps reinforceclaw==0.1.0 tomlkit -d WHEEL_DIR`), installed
# with --no-deps into a private folder (torch, transformers, peft, safetensors, requests and rich
# come from the machine). Env: STEPS (20), WARMUP (3), ROUNDS (2), MODEL (/tmp/smollm2-random),
# OUT (logs, /tmp/rlclaw-gpu). Each round runs rlclaw, ReinforceClaw in float32, PEFT; then
# ReinforceClaw runs once more as it ships (its own dtype, bfloat16 here).
set -u
BIN=${1:?usage: $0 BIN_DIR TEMPLATE_DIR WHEEL_DIR}
TEMPLATE=${2:?usage: $0 BIN_DIR TEMPLATE_DIR WHEEL_DIR}
WHEELS=${3:?usage: $0 BIN_DIR TEMPLATE_DIR WHEEL_DIR}
OUT=${OUT:-/tmp/rlclaw-gpu}; mkdir -p "$OUT"
MEM=$(mktemp -d)
STEPS=${STEPS:-20}; WARMUP=${WARMUP:-3}; ROUNDS=${ROUNDS:-2}
MODEL=${MODEL:-/tmp/smollm2-random}
SITE=$(mktemp -d)
export HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl || exit 1
NV=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)
export LD_LIBRARY_PATH=$(find "$NV" -maxdepth 3 -type d -name lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}
echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
nproc
python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "peft", peft.__version__)'
PYTHONPATH=$SITE python3 -c 'import reinforceclaw; print("reinforceclaw", reinforceclaw.__version__, reinforceclaw.__file__)'
echo "== a random SmolLM2-135M-shaped model"
python3 bridge/trainer/benches/random_model.py --template "$TEMPLATE" --out "$MODEL" || exit 1
used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; }
watch_mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 20 > "$1" & MEMPID=$!; }
peak() {
  kill "$MEMPID"; wait "$MEMPID" 2>/dev/null
  echo "peak GPU memory used (nvidia-smi, whole GPU, CUDA context included): $(sort -n "$1" | tail -1) MiB (before: $2 MiB)"
}
# run NAME COMMAND...: one process, GPU memory sampled every 20 ms, per-step lines kept in the log
run() {
  local name=$1; shift
  local before; before=$(used)
  echo "== $name: $*"
  watch_mem "$MEM/$name.txt"
  "$@" 2>&1 | tee "$OUT/$name.log" | grep -v '^timed\|^warmup\|Loading weights\|warnings.warn\|FutureWarning\|deprecated'
  peak "$MEM/$name.txt" "$before"
}
for round in $(seq 1 "$ROUNDS"); do
  run "rlclaw_$round" env STEPS="$STEPS" WARMUP="$WARMUP" RLCLAW_DEVICE=cuda RLCLAW_BENCH_MODEL="$MODEL" "$BIN/train_step"
  run "reinforceclaw_$round" env PYTHONPATH="$SITE" PYTHONUNBUFFERED=1 python3 bridge/trainer/benches/reinforceclaw_step.py \
    --model "$MODEL" --steps "$STEPS" --warmup "$WARMUP"
  run "peft_$round" python3 bridge/trainer/benches/peft_step.py --model "$MODEL" --device cuda --steps "$STEPS" --warmup "$WARMUP"
done
run reinforceclaw_native env PYTHONPATH="$SITE" PYTHONUNBUFFERED=1 python3 bridge/trainer/benches/reinforceclaw_step.py \
  --model "$MODEL" --steps "$STEPS" --warmup "$WARMUP" --dtype native
