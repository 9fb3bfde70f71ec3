"""refrt: a readable ONNX reference interpreter with onnxruntime's API.

    import refrt as ort
    sess = ort.InferenceSession("model.onnx")
    outputs = sess.run(None, {"input": x})

Importing refrt changes nothing in the process (environment, allocator, thread pools) and loads
NumPy only when a session or op is first used; ``refrt.tune_process()`` is the explicit tuning
the ``refrt`` command applies (``refrt/tuning.py``).
"""

import importlib as _importlib

from . import errors
from .errors import InputError, ModelError, NodeError, RefrtError, UnsupportedOpError
from .tuning import tune_process

__version__ = "0.1.0"

# name -> module that defines it, imported on first use (so that ``import refrt`` followed by
# ``refrt.tune_process()`` comes before NumPy)
_LAZY = {"InferenceSession": "session", "SessionOptions": "session", "RunOptions": "session",
         "GraphOptimizationLevel": "session",
         "NodeArg": "session", "ModelMetadata": "session", "run": "session",
         "explain": "explainer", "optimize_model": "optimize.transformer"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    elif not name.startswith("__"):
        try:
            value = _importlib.import_module(f"{__name__}.{name}")   # a submodule: refrt.kernels, ...
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def get_available_providers() -> list[str]:
    return ["CPUExecutionProvider"]


def get_device() -> str:
    return "CPU"


__all__ = ["InferenceSession", "SessionOptions", "RunOptions", "GraphOptimizationLevel", "NodeArg",
           "ModelMetadata", "run", "errors", "RefrtError", "ModelError", "InputError",
           "NodeError", "UnsupportedOpError", "get_available_providers", "get_device",
           "tune_process", "explain", "optimize_model"]
