#!/usr/bin/env bash
# Set up, then run every test: unit and property tests (tests/) and the ONNX backend suite
# (conformance/). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -rfEX "$@"
