"""The mismatch debugger: where refrt and a reference part, whether a node creates the difference
or carries it, and why.

    from refrt import debug
    result = debug.compare("model.onnx", {"x": x}, against="onnxruntime")
    print(result.table())

Modules, in the order a comparison uses them: ``references`` (every tensor as the reference
computes it), ``capture`` (refrt's tensors through a hook), ``metrics`` (max abs/rel, mismatches,
SQNR, ULP), ``replay`` (one node alone on chosen inputs), ``causes`` (which alternative
reproduces the reference), ``compare`` (the whole comparison and its report), ``reduce`` (the
smallest subgraph that still differs, saved with its test data), ``quant_loss`` (each float
tensor against its quantized counterpart), ``html`` (the comparison as a page).
"""

from .causes import CODES, Cause
from .compare import SCHEMA, Comparison, NodeResult, OutputResult, compare
from .metrics import TensorMetrics, tensor_metrics
from .quant_loss import QuantLoss, TensorLoss, quant_loss
from .reduce import Reduction, load_test_data, reduce_model
from .references import KINDS, reference_values

__all__ = ["compare", "Comparison", "NodeResult", "OutputResult", "Cause", "CODES", "SCHEMA",
           "TensorMetrics", "tensor_metrics", "reference_values", "KINDS", "reduce_model", "Reduction",
           "load_test_data", "quant_loss", "QuantLoss", "TensorLoss"]
