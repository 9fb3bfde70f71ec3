"""tests/ is split by subject (core, ops, kernels, quantization, debug, testing); the modules the
subfolders share sit here (helpers.py: model builders and runners; ort_helpers.py: onnxruntime
sessions and the CPU's int8 behaviour; kit_candidates.py: broken runtimes for the conformance
kit). This puts tests/ on sys.path so that every subfolder imports them by name."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
