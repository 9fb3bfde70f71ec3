#!/usr/bin/env bash
# Lint the tree with ruff (configured in pyproject.toml: [tool.ruff]). ruff is installed into
# .venv on first use (scripts/setup.sh creates .venv). Extra arguments go to `ruff check`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    bash scripts/setup.sh
fi
if ! .venv/bin/python -m ruff --version >/dev/null 2>&1; then
    echo "installing ruff into .venv ..."
    .venv/bin/python -m pip install -q ruff
fi
exec .venv/bin/python -m ruff check . "$@"
