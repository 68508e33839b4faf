#!/usr/bin/env bash
# The GPU checks of issue 3 in one script, for a machine with a CUDA device (H100/H200):
#   1. tests/gpu: bf16 steps, the micro-batch probe, CPU/GPU bit-identity of x' and of the cocktail
#      decode (encode on the GPU, decode on both);
#   2. benchmarks/codec.py --device cuda: 100M and 1B parameters, exact and sampled top-k, against the
#      memory floor; writes benchmarks/results/codec_cuda-<date>.{json,md} (and copies to $OUT if set).
# Usage (from the repository root, with a CUDA build of torch in .venv): bash benchmarks/gpu_check.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv
"$PY" -m pytest -q tests/gpu
"$PY" benchmarks/codec.py --device cuda --sizes 100000000 1000000000
if [ -n "${OUT:-}" ]; then cp benchmarks/results/codec_cuda-*.json benchmarks/results/codec_cuda-*.md "$OUT"/; fi
