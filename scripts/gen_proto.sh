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
# gRPC stubs only for files that declare a service (a stub module imports grpc), with their import of
# the messages pointed at the package they live in here.
mapfile -t services < <(cd proto && grep -l '^service ' "${files[@]}")
if [ ${#services[@]} -gt 0 ]; then
  python -m grpc_tools.protoc -I proto --grpc_python_out="$target" "${services[@]}"
  for f in "${services[@]}"; do
    stub="$target/${f%.proto}_pb2_grpc.py"
    package=$(dirname "$f" | tr / .)
    sed -i "s/^from ${package} import/from swarm.proto.${package} import/" "$stub"
  done
fi
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
