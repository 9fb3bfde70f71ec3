#!/usr/bin/env bash
# Set up, then run the main job on the bundled model: refrt vs onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/refrt demo "$@"
