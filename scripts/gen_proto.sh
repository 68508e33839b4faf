#!/usr/bin/env bash
# Regenerates the Python code for every .proto under proto/ into swarm/proto/.
# `scripts/gen_proto.sh --check` fails if the checked-in code differs from a fresh generation.
set -euo pipefail
cd "$(dirname "$0")/.."
out=swarm/proto
mode=${1:-}
target=$out
if [ "$mode" = "--check" ]; then target=$(mktemp -d); fi
mapfile -t files < <(cd proto && find . -name '*.proto' | sed 's|^\./||' | sort)
python -m grpc_tools.protoc -I proto --python_out="$target" --pyi_out="$target" "${files[@]}"
# Every generated folder is a package.
find "$target" -type d -exec sh -c \
  'echo "\"\"\"Generated from proto/ by scripts/gen_proto.sh; do not edit.\"\"\"" > "$1/__init__.py"' _ {} \;
if [ "$mode" = "--check" ]; then
  if ! diff -r -x __pycache__ "$target" "$out"; then
    echo "generated protobuf code is stale: run scripts/gen_proto.sh" >&2
    exit 1
  fi
  rm -rf "$target"
  echo "protobuf code is up to date"
fi
