"""``refrt.explain(...)`` (this package's :func:`explain`): how one output element of one node is
computed, step by step, on real inputs.

    import refrt
    e = refrt.explain("model.onnx", "conv1_quant", at=(0, 3, 2, 2), inputs={"input": x})
    print(e)                      # formula, code locations, inputs, the steps, the check
    e.value, e.actual, e.match    # the recomputed element, the node's, bit-equal?

``refrt explain MODEL --node NAME --at I,J,...`` prints the same from the command line.

Modules: :mod:`.core` runs the model up to the node and dispatches to an explainer;
:mod:`.quant` (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear), :mod:`.integer`
(MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv, DynamicQuantizeMatMul,
MatMulIntegerToFloat), :mod:`.qbinary` (QLinearAdd, QLinearMul), :mod:`.floats` (MatMul, Gemm,
Conv, Softmax, LayerNormalization) and :mod:`.generic` (any other op) write the steps;
:mod:`.arith` holds the scalar arithmetic they share; :mod:`.source` finds ``file:line`` of op
bodies, kernels and twins; :mod:`.result` is the returned object; :mod:`.cli` the command.
"""

from .core import EXPLAINERS, explain
from .result import CodeRef, Explanation, InputInfo, Step

__all__ = ["explain", "Explanation", "Step", "CodeRef", "InputInfo", "EXPLAINERS"]

