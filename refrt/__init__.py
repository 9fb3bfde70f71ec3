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


# Output arrays. Every run allocates fresh arrays of up to a few MB. glibc serves an allocation
# above its mmap threshold with a fresh mapping, whose pages fault in on first touch (about 2.4 us
# per 4 KiB page here); the threshold adapts upward only as such chunks are freed, and in the
# BERT-base FP32 encoder it stayed low: about 9,500 page faults per run, and 219 -> 207 ms per run
# (median of 4 alternating processes each) once it was raised. refrt raises it to 32 MiB, glibc's
# largest (and the heap's trim threshold to 64 MiB), unless glibc's own MALLOC_MMAP_THRESHOLD_ is
# set: freed arrays then stay in the heap for the next run.
def _raise_mmap_threshold() -> bool:
    if "MALLOC_MMAP_THRESHOLD_" in _os.environ or not _sys.platform.startswith("linux"):
        return False
    try:
        if not _os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        # M_MMAP_THRESHOLD (-3), and M_TRIM_THRESHOLD (-1) at twice it, as glibc's own adaptive
        # rule would set it (fixing one turns the adaptation off)
        return bool(libc.mallopt(-3, 32 << 20)) and bool(libc.mallopt(-1, 64 << 20))
    except (OSError, ValueError, AttributeError):
        return False


MMAP_THRESHOLD_RAISED = _raise_mmap_threshold()

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
