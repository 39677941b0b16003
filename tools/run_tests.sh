#!/usr/bin/env bash
# The README's test command: installs .venv when it is missing or out of date, then runs the whole test suite and
# prints its wall time and the CPU it ran on.
#   bash tools/run_tests.sh [pytest options]
# The suite runs on as many pytest-xdist workers as the machine has CPUs (at most 2; VITATTN_TEST_WORKERS=N to
# choose, 0 for none), each with one torch thread (tests/conftest.py): most of the suite is single-threaded Python
# (imports, subprocess start-up, data pipelines, COCO evaluation), so two workers use both cores where one
# 2-thread process leaves one idle. Tests that share a trained model run on one worker (xdist_group marks).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
start=$(date +%s)
status=0
workers="${VITATTN_TEST_WORKERS:-$(( $(nproc) < 2 ? $(nproc) : 2 ))}"
"$ROOT/.venv/bin/python" -m pytest -n "$workers" --dist loadgroup tests "$@" || status=$?
echo "[run_tests] test suite wall time: $(( $(date +%s) - start )) s on ${cpu:-unknown CPU} ($(nproc) CPUs, $workers pytest workers), exit status $status"
exit $status
