#!/usr/bin/env bash
# The GPU checks of issue 3 in one script, for a machine with a CUDA device (H100/H200):
#   1. tests/gpu: bf16 steps, the micro-batch probe, CPU/GPU bit-identity of x' and of the cocktail
#      decode (encode on the GPU, decode on both), and the fused Triton step (its bytes decode on the
#      CPU, its error buffer ends exactly (e + u) - C[e + u]);
#   2. benchmarks/codec.py --device cuda: 100M and 1B parameters; top-k exact, sampled (torch ops) and
#      fused (Triton kernels) against the memory floor; writes benchmarks/results/codec_cuda-<date>.{json,md}
#      (and copies them and the logs to $OUT if set);
#   3. benchmarks/member_round.py --device cuda: a GPU member's own side of a round (dense delta on
#      the host against the supports gathered and encoded on the GPU), 100M and 1B parameters; writes
#      benchmarks/results/member_round_cuda-<date>.{json,md} (copied to $OUT likewise);
#   4. where hivemind imports (on a box with no package index: benchmarks/gpu_wheels.sh, installed with
#      --target and put on PYTHONPATH), the mixed CPU/GPU pair: `swarm-node demo --devices cuda,cpu`
#      with the cocktail codec until round 25, x' digests compared in every shared round; writes
#      benchmarks/results/demo_run_mixed-<date>.{json,md}.
# Steps 1-3 need only torch (a CUDA build), numpy, pytest and Triton: none of the swarm's networking
# packages (tests/unit/test_gpu_check_imports.py keeps it so). Python: $PY, else .venv's, else python3.
# Usage, from the repository root: bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOGS=${OUT:-$(mktemp -d)}
SCRATCH=$(mktemp -d)  # the benchmarks' logs: their result files say the same ($OUT takes 8 files)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
"$PY" -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tee "$LOGS/gpu_tests.log"
tests=${PIPESTATUS[0]}
# Each step's results go to $OUT as soon as it ends, so that a run cut short keeps what it finished.
keep() { if [ -n "${OUT:-}" ]; then cp "$@" "$OUT"/ 2>/dev/null; fi; return 0; }
"$PY" benchmarks/codec.py --device cuda --sizes 100000000 1000000000 2>&1 | tee "$SCRATCH/codec_cuda.log"
bench=${PIPESTATUS[0]}
keep benchmarks/results/codec_cuda-*.json benchmarks/results/codec_cuda-*.md
"$PY" benchmarks/member_round.py --device cuda --sizes 100000000 1000000000 --repeats 3 2>&1 | tee "$SCRATCH/member_round_cuda.log"
member=${PIPESTATUS[0]}
keep benchmarks/results/member_round_cuda-*.json benchmarks/results/member_round_cuda-*.md
mixed=skipped
if "$PY" -c 'import hivemind' 2>/dev/null; then
    "$PY" benchmarks/demo_run.py --nodes 2 --devices cuda,cpu --codec cocktail --until-round 25 \
        --no-coordinator --name demo_run_mixed 2>&1 | tee "$LOGS/demo_run_mixed.log"
    mixed=${PIPESTATUS[0]}
    keep benchmarks/results/demo_run_mixed-*.json benchmarks/results/demo_run_mixed-*.md
else
    echo "hivemind does not import: the mixed CPU/GPU pair is skipped (benchmarks/gpu_wheels.sh)"
fi
echo "tests/gpu exit $tests, codec benchmark exit $bench, member round benchmark exit $member, mixed pair $mixed"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ] && [ "$member" -eq 0 ] && { [ "$mixed" = skipped ] || [ "$mixed" -eq 0 ]; }
