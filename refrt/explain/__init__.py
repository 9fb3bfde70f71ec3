"""``refrt.explain``: how one output element of one node is computed, step by step, on real
inputs.

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

The package itself can be called: ``refrt.explain(...)`` is :func:`explain`.
"""

import sys as _sys
import types as _types

from .core import EXPLAINERS, explain
from .result import CodeRef, Explanation, InputInfo, Step

__all__ = ["explain", "Explanation", "Step", "CodeRef", "InputInfo", "EXPLAINERS"]


class _CallableModule(_types.ModuleType):
    """``refrt.explain`` is both this package and its main function."""

    def __call__(self, *args, **kwargs):
        return explain(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
