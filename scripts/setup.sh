#!/usr/bin/env bash
# Creates .venv (Python 3.11 or 3.12) and installs Swarm with the pinned versions of constraints.txt.
# torch==2.13.0 goes in first, so that no multi-GB CUDA build is pulled in by accident; on a GPU
# machine, install the CUDA build of torch you want into .venv before running this.
# The parquet extra (pyarrow) comes with it: `--data` reads Parquet files. `scripts/setup.sh --dev`
# adds the test and lint tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))'; then
      python=$candidate; break
    fi
  done
fi
[ -n "$python" ] || { echo "setup: needs Python 3.11 or 3.12 (hivemind does not support 3.13)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
if ! echo '#include <gmp.h>' | ${CC:-cc} -E - >/dev/null 2>&1; then
  echo "setup: py-libp2p builds fastecdsa, which needs a C compiler and GMP's headers:" \
    "apt install gcc libgmp-dev (Debian/Ubuntu) or dnf install gcc gmp-devel (Fedora)" >&2
  exit 1
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c 'import torch' 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
extras="parquet" pins=()
if [ "${1:-}" = "--dev" ]; then
  extras="dev,parquet"
  # The tests run the fused codec's Triton kernels in its CPU interpreter. A CUDA build of torch
  # requires its own triton; with a CPU build, pin the version the kernels were written against.
  if .venv/bin/python -c 'import sys, torch; sys.exit(torch.version.cuda is not None)'; then
    pins=("triton==3.6.0; platform_system == 'Linux' and platform_machine == 'x86_64'")
  fi
fi
.venv/bin/python -m pip install -q -c constraints.txt -e ".[${extras}]" "${pins[@]}"
echo "setup: .venv ready ($(.venv/bin/python --version), torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
