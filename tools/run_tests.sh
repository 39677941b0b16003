#!/usr/bin/env bash
# The README's test command: installs .venv when it is missing or out of date, then runs the whole test suite and
# prints its wall time and the CPU it ran on.
#   bash tools/run_tests.sh [pytest options]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
start=$(date +%s)
status=0
"$ROOT/.venv/bin/python" -m pytest tests "$@" || status=$?
echo "[run_tests] test suite wall time: $(( $(date +%s) - start )) s on ${cpu:-unknown CPU} ($(nproc) CPUs), exit status $status"
exit $status
