#!/usr/bin/env bash
# The README's test command: installs .venv when it is missing or out of date, then runs the whole test suite.
#   bash tools/run_tests.sh [pytest options]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
exec "$ROOT/.venv/bin/python" -m pytest tests "$@"
