#!/usr/bin/env bash
# Create .venv (if missing) and install refrt with its test extras into it. pip's output goes to
# .venv/install.log and is shown only if the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
echo "installing refrt and its test dependencies into .venv (log: .venv/install.log) ..."
if ! .venv/bin/python -m pip install -e ".[test]" > .venv/install.log 2>&1; then
    tail -n 40 .venv/install.log
    echo "refrt: pip install failed; the whole log is .venv/install.log" >&2
    exit 1
fi
