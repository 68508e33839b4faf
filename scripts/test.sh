#!/usr/bin/env bash
# Installs everything the tests need and runs every check: lint, types, generated code, tests.
# This is the README's test command, and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
. .venv/bin/activate
echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; mypy
echo "== generated protobuf code"; scripts/gen_proto.sh --check
echo "== tests"; python -m pytest -v -p no:cacheprovider "$@"
