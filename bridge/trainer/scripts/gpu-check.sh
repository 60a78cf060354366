#!/bin/bash
# The trainer's checks and training-step figures on a CUDA machine, from prebuilt binaries (the
# GPU machines we are lent have no Rust toolchain). Build them elsewhere with the toolchain of
# cuda-from-pypi.sh:
#
#   source DIR/env.sh
#   cargo test --release --features cuda -p rlclaw-trainer --no-run \
#       --test cuda --test train_tiny --bench train_step
#
# and copy the three executables it lists into BIN_DIR as cuda_tests, train_tiny and
# train_step. TEMPLATE_DIR holds SmolLM2's config.json, tokenizer.json and tokenizer_config.json
# (see benches/random_model.py). Run from the repository root:
#
#   bridge/trainer/scripts/gpu-check.sh BIN_DIR TEMPLATE_DIR [all|tests|bench]
#
# Logs go to $OUT (default /tmp/rlclaw-gpu). Needs python3 with torch, transformers, peft and the
# nvidia-* CUDA 13 wheels PyTorch brings, whose lib folders serve the binaries' CUDA libraries.
set -u
BIN=${1:?usage: $0 BIN_DIR TEMPLATE_DIR [all|tests|bench]}
TEMPLATE=${2:?usage: $0 BIN_DIR TEMPLATE_DIR [all|tests|bench]}
MODE=${3:-all}
OUT=${OUT:-/tmp/rlclaw-gpu}; mkdir -p "$OUT"
MEM=$(mktemp -d)
STEPS=${STEPS:-20}; WARMUP=${WARMUP:-3}
MODEL=${MODEL:-/tmp/smollm2-random}
NV=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)
export LD_LIBRARY_PATH=$(find "$NV" -maxdepth 3 -type d -name lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}
echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "peft", peft.__version__)'
echo "== CUDA libraries of the binaries"
ldd "$BIN/cuda_tests" | grep -E "cuda|cublas|curand|nvrtc|not found"
if [ "$MODE" != bench ]; then
  echo "== cargo test --features cuda --test cuda"
  "$BIN/cuda_tests" --test-threads=1 2>&1 | tee "$OUT/cuda_tests.log"
  echo "== cargo test --features cuda --test train_tiny, with RLCLAW_DEVICE=cuda (train() on the GPU)"
  RLCLAW_DEVICE=cuda "$BIN/train_tiny" --test-threads=1 2>&1 | tee "$OUT/train_tiny.log"
fi
[ "$MODE" = tests ] && exit 0
echo "== a random SmolLM2-135M-shaped model"
python3 bridge/trainer/benches/random_model.py --template "$TEMPLATE" --out "$MODEL" || exit 1
used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; }
watch_mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 20 > "$1" & MEMPID=$!; }
peak() {
  kill "$MEMPID"; wait "$MEMPID" 2>/dev/null
  echo "peak GPU memory used (nvidia-smi, whole GPU, CUDA context included): $(sort -n "$1" | tail -1) MiB (before: $2 MiB)"
}
for round in 1 2; do
  before=$(used)
  echo "== round $round: rlclaw: STEPS=$STEPS WARMUP=$WARMUP RLCLAW_DEVICE=cuda RLCLAW_BENCH_MODEL=$MODEL train_step"
  watch_mem "$MEM/rlclaw_$round.txt"
  STEPS=$STEPS WARMUP=$WARMUP RLCLAW_DEVICE=cuda RLCLAW_BENCH_MODEL=$MODEL "$BIN/train_step" 2>&1 |
    tee "$OUT/rlclaw_$round.log" | grep -v '^timed\|^warmup'
  peak "$MEM/rlclaw_$round.txt" "$before"
  before=$(used)
  echo "== round $round: PyTorch + PEFT: peft_step.py --model $MODEL --device cuda --steps $STEPS --warmup $WARMUP"
  watch_mem "$MEM/peft_$round.txt"
  python3 bridge/trainer/benches/peft_step.py --model "$MODEL" --device cuda --steps "$STEPS" --warmup "$WARMUP" 2>&1 |
    tee "$OUT/peft_$round.log" | grep -v '^timed\|^warmup'
  peak "$MEM/peft_$round.txt" "$before"
done
echo "== rlclaw with the plain-op reference kernels: KERNELS=reference (same command)"
KERNELS=reference STEPS=$STEPS WARMUP=$WARMUP RLCLAW_DEVICE=cuda RLCLAW_BENCH_MODEL=$MODEL "$BIN/train_step" 2>&1 |
  tee "$OUT/rlclaw_reference.log" | grep -v '^timed\|^warmup'
