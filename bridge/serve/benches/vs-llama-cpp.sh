#!/usr/bin/env bash
# Serving speed side by side on one machine: rlclaw's model endpoint (mistral.rs, a LoRA adapter
# merged, streaming over loopback HTTP) and llama.cpp's llama-bench, on the same SmolLM2-135M
# GGUF with 2 threads, in alternating rounds so that both see the same machine.
#
#   bridge/serve/benches/vs-llama-cpp.sh [ROUNDS]          (default 3)
#
# ISQ="none q4_0 q8_0" picks the rlclaw configurations (none = float32 after the merge).
# llama-bench is built once from the llama-cpp-python sdist on PyPI (its vendored llama.cpp,
# about 7 minutes on 2 cores) into $LLAMA_DIR (default ~/.cache/rlclaw/llama.cpp).
# The rlclaw side is built for x86-64-v3 by the repository's .cargo/config.toml: candle compiles
# its AVX2 kernels only when the build targets AVX2 (BENCHMARKS.md, "Serving").
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
rounds="${1:-3}"
isq_modes="${ISQ:-none q4_0 q8_0}"
llama_dir="${LLAMA_DIR:-$HOME/.cache/rlclaw/llama.cpp}"
export RAYON_NUM_THREADS=2

"$root/.ci/fetch-model" >/dev/null
gguf="${RLCLAW_MODELS:-$HOME/.cache/rlclaw/models}/SmolLM2-135M-Instruct.Q4_1.gguf"

bench="$llama_dir/build/bin/llama-bench"
if [ ! -x "$bench" ]; then
    echo "building llama-bench into $llama_dir (once)" >&2
    mkdir -p "$llama_dir"
    python3 -m venv "$llama_dir/venv"
    "$llama_dir/venv/bin/pip" install --quiet cmake ninja scikit-build-core
    # Only the source archive is wanted; pip reads its metadata with the tools just installed.
    "$llama_dir/venv/bin/pip" download --quiet --no-deps --no-build-isolation \
        llama-cpp-python==0.3.36 -d "$llama_dir/sdist"
    tar xzf "$llama_dir"/sdist/llama_cpp_python-*.tar.gz -C "$llama_dir"
    src=$(ls -d "$llama_dir"/llama_cpp_python-*/vendor/llama.cpp)
    PATH="$llama_dir/venv/bin:$PATH" cmake -S "$src" -B "$llama_dir/build" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF >/dev/null
    PATH="$llama_dir/venv/bin:$PATH" cmake --build "$llama_dir/build" --target llama-bench -j 2
fi

cd "$root"
cargo bench -p rlclaw-serve --bench endpoint --no-run 2>/dev/null
for round in $(seq "$rounds"); do
    for mode in $isq_modes; do
        echo "== round $round: rlclaw, isq $mode"
        export RLCLAW_SERVE_ISQ="$mode"
        /usr/bin/time -f "peak RSS %M KB" cargo bench -q -p rlclaw-serve --bench endpoint -- 3 128 2>&1 |
            grep -E "model|median|peak RSS"
    done
    echo "== round $round: llama.cpp"
    /usr/bin/time -f "peak RSS %M KB" "$bench" -m "$gguf" -t 2 -p 40,64 -n 128 -r 3 2>&1 |
        grep -E "pp|tg|peak RSS"
done
