"""refrt: a readable ONNX reference interpreter with onnxruntime's API.

    import refrt as ort
    sess = ort.InferenceSession("model.onnx")
    outputs = sess.run(None, {"input": x})
"""

from . import errors
from .errors import InputError, ModelError, NodeError, RefrtError, UnsupportedOpError
from .session import (GraphOptimizationLevel, InferenceSession, ModelMetadata, NodeArg,
                      SessionOptions, run)

__version__ = "0.1.0"


def get_available_providers() -> list[str]:
    return ["CPUExecutionProvider"]


def get_device() -> str:
    return "CPU"


__all__ = ["InferenceSession", "SessionOptions", "GraphOptimizationLevel", "NodeArg",
           "ModelMetadata", "run", "errors", "RefrtError", "ModelError", "InputError",
           "NodeError", "UnsupportedOpError", "get_available_providers", "get_device"]
