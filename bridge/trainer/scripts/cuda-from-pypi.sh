#!/bin/bash
# Builds a CUDA 13.0 toolchain for `cargo build --features cuda` from NVIDIA's PyPI wheels, for
# machines without a CUDA install and without a GPU (the binary then runs where the driver is).
#
#   bridge/trainer/scripts/cuda-from-pypi.sh DIR      # once; downloads about 700 MB of wheels
#   source DIR/env.sh                                 # then build with --features cuda
#
# CUDA 13.0 matches the 580 driver of the machines we are lent: PTX from a newer nvcc would not
# load there. candle 0.10.2 links cudarc dynamically against libcuda, libcublas, libcublasLt,
# libcurand, libnvrtc and libcudart; at run time they come from the driver and from the
# nvidia-* wheels that PyTorch installs (LD_LIBRARY_PATH=.../site-packages/nvidia/cu13/lib).
# libcuda itself ships only with the driver, so a link-time stub is generated from cudarc's
# bindings.
set -euo pipefail
DIR=${1:?usage: $0 DIR}
mkdir -p "$DIR/wheels"
DIR=$(cd "$DIR" && pwd)
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  -d "$DIR/wheels" \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 \
  nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
  nvidia-curand==10.4.0.35 nvidia-cublas==13.0.0.19
rm -rf "$DIR/unz" "$DIR/cu13"
for w in "$DIR"/wheels/*.whl; do python3 -m zipfile -e "$w" "$DIR/unz"; done
mv "$DIR/unz/nvidia/cu13" "$DIR/cu13"
rm -rf "$DIR/unz"
chmod +x "$DIR"/cu13/bin/* "$DIR"/cu13/nvvm/bin/*
cd "$DIR/cu13/lib"
for l in cudart nvrtc cublas cublasLt; do ln -sf "lib$l.so.13" "lib$l.so"; done
ln -sf libcurand.so.10 libcurand.so
mkdir -p stubs
CUDARC=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -mindepth 2 -maxdepth 2 -type d -name 'cudarc-0.19.*' | sort -V | tail -1)
[ -n "$CUDARC" ] || { echo "cudarc 0.19 sources not found: run cargo fetch first" >&2; exit 1; }
grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$CUDARC/src/driver/sys/mod.rs" | awk '{print $4}' | sort -u |
  sed 's/.*/int &(void) { return 999; }/' > stubs/libcuda_stub.c
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o stubs/libcuda.so stubs/libcuda_stub.c
cat > "$DIR/env.sh" <<ENV
export CUDA_ROOT=$DIR/cu13 CUDA_HOME=$DIR/cu13 CUDA_PATH=$DIR/cu13
export PATH=$DIR/cu13/bin:\$PATH NVCC=$DIR/cu13/bin/nvcc
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$DIR/cu13/lib:$DIR/cu13/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}
ENV
"$DIR/cu13/bin/nvcc" --version | tail -2
echo "source $DIR/env.sh, then: cargo build --features cuda ..."
