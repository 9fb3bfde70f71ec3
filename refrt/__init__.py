"""refrt: a readable ONNX reference interpreter with onnxruntime's API.

    import refrt as ort
    sess = ort.InferenceSession("model.onnx")
    outputs = sess.run(None, {"input": x})
"""

import os as _os
import sys as _sys

# Thread pools. refrt runs NumPy's OpenBLAS (float Gemm, float MatMul without packed weights) and
# Numba's OpenMP kernels (the int8 GEMMs, quantization, packed float MatMul) one after the other
# on the same cores. By default each pool keeps spinning after its work (OpenBLAS for 2**28
# cycles, libgomp for a while), so the next pool's threads wait for a core: the BERT-base encoder
# ran 1.4x (FP32) to 2.8x (INT8) slower that way on 2 cores. refrt therefore asks both pools to sleep when idle, unless the variable
# is already set. OpenBLAS reads its variable when NumPy is first imported, so that one only
# takes effect when refrt is imported before NumPy; libgomp reads its own when Numba first
# starts its threads.
WAIT_POLICY = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "OPENBLAS_THREAD_TIMEOUT": "4",      # idle OpenBLAS workers sleep after 2**4 cycles
}
for _k, _v in WAIT_POLICY.items():
    if _k != "OPENBLAS_THREAD_TIMEOUT" or "numpy" not in _sys.modules:
        _os.environ.setdefault(_k, _v)

from . import errors  # noqa: E402
from .errors import InputError  # noqa: E402, ModelError, NodeError, RefrtError, UnsupportedOpError
from .session import (GraphOptimizationLevel, InferenceSession, ModelMetadata,  # noqa: E402
                      NodeArg, SessionOptions, run)

__version__ = "0.1.0"


def get_available_providers() -> list[str]:
    return ["CPUExecutionProvider"]


def get_device() -> str:
    return "CPU"


__all__ = ["InferenceSession", "SessionOptions", "GraphOptimizationLevel", "NodeArg",
           "ModelMetadata", "run", "errors", "RefrtError", "ModelError", "InputError",
           "NodeError", "UnsupportedOpError", "get_available_providers", "get_device"]
