#!/usr/bin/env bash
# Installs everything the tests need and runs every check: lint, types, import contracts, structure,
# generated code, tests.
# This is the README's test command, and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
# The observability tests run a real Prometheus and headless Chromium (Debian's packages).
if ! command -v prometheus >/dev/null || ! command -v chromium >/dev/null || ! command -v iptables >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing prometheus, chromium and iptables (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus chromium iptables >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus chromium iptables >/dev/null; }
  else
    echo "== prometheus, chromium or iptables missing (apt install prometheus chromium iptables): their tests will be skipped"
  fi
fi
. .venv/bin/activate
echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; mypy
echo "== import contracts (pyproject.toml [tool.importlinter])"; lint-imports --no-cache --no-logo
echo "== structure (file and class sizes, module docstrings, private imports, literal timeouts)"; python scripts/check_structure.py
echo "== generated protobuf code"; scripts/gen_proto.sh --check
echo "== generated docs/configuration.md"; python -m node.config_docs --check
echo "== tests"; python -m pytest -v -p no:cacheprovider --durations=25 "$@"
