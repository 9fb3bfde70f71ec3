#!/usr/bin/env bash
# Set up, then run every test: unit and property tests (tests/) and the ONNX backend suite
# (conformance/); then, when no arguments are given, the CPU-dependent paths once more for each
# other int8 kernel this CPU can run and for the CPU classes below it (scripts/test_cpu_classes.sh).
# Extra arguments go to pytest (and skip the second part).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
.venv/bin/python -m pytest -q -rfEX "$@" || status=$?
if [ $# -eq 0 ] && [ $status -eq 0 ]; then
    bash scripts/test_cpu_classes.sh || status=$?
fi
exit $status
