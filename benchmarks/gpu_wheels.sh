#!/usr/bin/env bash
# Wheels of what a bare CUDA machine with torch, numpy and pytest lacks to run swarm nodes (hivemind and
# its dependencies, the gRPC extras, cryptography), for one Python version, into .whl/: for a GPU box
# with no package index, where `bash benchmarks/gpu_check.sh` then also runs the mixed CPU/GPU pair.
# Versions: those of this checkout's .venv (scripts/setup.sh), so the box runs what CI tests.
#   bash benchmarks/gpu_wheels.sh [3.12]      # then, on the GPU box:
#   python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
venv=.venv/bin/python
[ -x "$venv" ] || { echo "gpu_wheels: run scripts/setup.sh first (the versions come from .venv)" >&2; exit 1; }
mkdir -p .whl
binary=(annotated-types base58 blake3 cffi configargparse cryptography grpcio grpcio-health-checking
        grpcio-reflection grpcio-tools hivemind mmh3 morphys netaddr protobuf py-cid py-multibase
        py-multicodec py-multihash pycparser pydantic pydantic-core typing-inspection)
source_only=(prefetch-generator python-baseconv varint)  # sdists only: built here (pure Python)
platforms=()
for p in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
version() { "$venv" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
for name in "${binary[@]}"; do
    "$venv" -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
        "${platforms[@]}" -d .whl "$name==$(version "$name")"
done
for name in "${source_only[@]}"; do
    "$venv" -m pip wheel -q --no-deps -w .whl "$name==$(version "$name")"
done
echo "gpu_wheels: $(ls .whl/*.whl | wc -l) wheels in .whl ($(du -sh .whl | cut -f1)); keep .whl out of git (.git/info/exclude)"
