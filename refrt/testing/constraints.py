"""What the ONNX schemas cannot say, as data: for each op, the *family* whose shape rule its inputs
follow, the roles of inputs that are not plain data (axes, indices, target shapes, scales, zero
points), the legal values of its attributes, and its tolerance class.

An entry is a dict with the keys below (all optional except ``family``):

``family``
    the shape rule, one of :data:`refrt.testing.strategies.FAMILIES` -- ``unary`` (one data input of
    any shape), ``broadcast`` (inputs mutually broadcastable), ``same`` (inputs of one shape),
    ``matmul``, ``gemm``, ``conv``, ``pool``, ``reduce``, ``norm``, ``concat``, ``quant``,
    ``seed`` (no rule: draw a valid node from the ONNX backend test data and redraw its values).
``inputs``
    roles of the inputs after the family's data inputs, in order: ``"axis_scalar"`` (an int64 0-d
    axis of input 0), ``"axes"`` (unique int64 axes of input 0), ``"new_axes"`` (axes of the
    result of Unsqueeze), ``"reshape"``, ``"expand"``, ``"shape"`` (a small int64 shape),
    ``"repeats"``, ``"pads"``, ``"k"`` (TopK), ``"indices"`` (int64, in range along ``axis``),
    ``"elem_indices"`` (GatherElements), ``"bool_like"`` (a bool mask of input 0's shape),
    ``"condition"`` (bool 1-D along ``axis``), ``"split"``, ``"starts"``/``"ends"``/``"slice_axes"``/
    ``"steps"``, ``"scalar"`` (0-d of input 0's type), ``"like"`` (a tensor of input 0's shape, any
    type), ``"scale"``, ``"zero_point"``, ``"depth"``, ``"onehot_values"``, ``"ratio"``,
    ``"int_scalar"``, ``"shape_input"`` (the int64 shape of a CenterCropPad result).
``optional``
    how many trailing inputs may be left out (drawn present or absent).
``attrs``
    name -> a list of legal values, or a rule: ``"axis"`` (in [-r, r-1] of input 0), ``"axis_incl"``
    ([-r, r]), ``"axes"``, ``"perm"``, ``"to_type"`` (a dtype code).
``types``
    type parameter -> the dtypes to draw from, where refrt's scope (or the candidates') is narrower
    than the schema's type constraint; otherwise the schema's list is used.
``rank``
    (lowest, highest) rank of input 0.
``tol``
    the tolerance class (:mod:`refrt.testing.tolerance`); default from the op's module.
"""

from __future__ import annotations

F = ["float32", "float64", "float16"]
I = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
NUM = F + I

_UNARY_EXACT = ["Abs", "Neg", "Sign", "Ceil", "Floor", "Round", "Relu", "IsNaN", "IsInf", "Not",
                "BitwiseNot", "Identity", "Size", "NonZero"]
_UNARY_ROUNDED = ["Reciprocal", "Sqrt"]
_UNARY_MATH = ["Exp", "Log", "Erf", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh",
               "Tanh", "Asinh", "Acosh", "Atanh", "Sigmoid", "Softplus", "Softsign", "Mish",
               "HardSwish"]
_BINARY_EXACT = ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor",
                 "BitwiseAnd", "BitwiseOr", "BitwiseXor"]
_REDUCE = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
           "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]

ALPHA = [0.01, 0.2, 1.0, 1.5]

TABLE: dict[str, dict] = {}
for _op in _UNARY_EXACT:
    TABLE[_op] = {"family": "unary", "tol": "exact"}
for _op in _UNARY_ROUNDED:
    TABLE[_op] = {"family": "unary", "tol": "rounded"}
for _op in _UNARY_MATH:
    TABLE[_op] = {"family": "unary", "tol": "ulp"}
for _op in _BINARY_EXACT:
    TABLE[_op] = {"family": "broadcast", "tol": "exact"}
for _op in _REDUCE:
    TABLE[_op] = {"family": "reduce", "attrs": {"keepdims": [0, 1], "noop_with_empty_axes": [0, 1]},
                  "tol": "exact" if _op in ("ReduceMax", "ReduceMin") else "sum"}
del _op

TABLE.update({
    # element-wise with attributes
    "LeakyRelu": {"family": "unary", "attrs": {"alpha": ALPHA}, "tol": "rounded"},
    "ThresholdedRelu": {"family": "unary", "attrs": {"alpha": ALPHA}, "tol": "exact"},
    "Elu": {"family": "unary", "attrs": {"alpha": ALPHA}, "tol": "ulp"},
    "Celu": {"family": "unary", "attrs": {"alpha": ALPHA}, "tol": "ulp"},
    "Selu": {"family": "unary", "attrs": {"alpha": [1.67326, 2.0], "gamma": [1.0507, 0.5]},
             "tol": "ulp"},
    "HardSigmoid": {"family": "unary", "attrs": {"alpha": [0.2, 0.5], "beta": [0.5, 0.1]},
                    "tol": "ulp"},
    "Shrink": {"family": "unary", "attrs": {"lambd": [0.5, 1.0], "bias": [0.0, 0.5, 2.0]},
               "tol": "rounded"},
    "Swish": {"family": "unary", "attrs": {"alpha": ALPHA}, "tol": "ulp"},
    "Clip": {"family": "unary", "inputs": ["scalar", "scalar"], "optional": 2, "tol": "exact"},
    "Cast": {"family": "unary", "attrs": {"to": "to_type"}, "tol": "exact"},
    "CastLike": {"family": "unary", "inputs": ["like"], "tol": "exact"},
    "Dropout": {"family": "unary", "tol": "exact"},
    "Softmax": {"family": "unary", "attrs": {"axis": "axis"}, "rank": (1, 4), "tol": "scale"},
    "LogSoftmax": {"family": "unary", "attrs": {"axis": "axis"}, "rank": (1, 4), "tol": "scale"},
    "Hardmax": {"family": "unary", "attrs": {"axis": "axis"}, "rank": (1, 4), "tol": "exact"},
    "LpNormalization": {"family": "unary", "attrs": {"axis": "axis", "p": [1, 2]}, "rank": (1, 4),
                        "tol": "scale"},
    "MeanVarianceNormalization": {"family": "unary", "rank": (3, 4), "tol": "scale"},
    "Trilu": {"family": "unary", "inputs": ["int_scalar"], "optional": 1,
              "attrs": {"upper": [0, 1]}, "rank": (2, 4), "tol": "exact"},
    "CumSum": {"family": "unary", "inputs": ["axis_scalar"], "attrs": {"exclusive": [0, 1],
               "reverse": [0, 1]}, "rank": (1, 4), "tol": "sum"},
    "CumProd": {"family": "unary", "inputs": ["axis_scalar"], "attrs": {"exclusive": [0, 1],
                "reverse": [0, 1]}, "rank": (1, 4), "tol": "sum"},
    "Flatten": {"family": "unary", "attrs": {"axis": "axis_incl"}, "tol": "exact"},
    "Transpose": {"family": "unary", "attrs": {"perm": "perm"}, "tol": "exact"},
    "Shape": {"family": "unary", "attrs": {"start": [0, 1, -1], "end": [-1, 2, 5]}, "tol": "exact"},
    "EyeLike": {"family": "unary", "attrs": {"k": [0, 1, -2]}, "rank": (2, 2), "tol": "exact"},
    "Det": {"family": "square", "tol": "scale"},
    "TopK": {"family": "unary", "inputs": ["k"], "attrs": {"axis": "axis", "largest": [0, 1],
             "sorted": [1]}, "rank": (1, 3), "tol": "exact"},
    "ArgMax": {"family": "unary", "attrs": {"axis": "axis", "keepdims": [0, 1],
               "select_last_index": [0, 1]}, "rank": (1, 4), "tol": "exact"},
    "ArgMin": {"family": "unary", "attrs": {"axis": "axis", "keepdims": [0, 1],
               "select_last_index": [0, 1]}, "rank": (1, 4), "tol": "exact"},
    "LRN": {"family": "unary", "attrs": {"size": [1, 3, 5], "alpha": [1e-4, 0.1],
            "beta": [0.75, 0.5], "bias": [1.0, 2.0]}, "rank": (4, 4), "tol": "scale"},
    "GlobalAveragePool": {"family": "unary", "rank": (3, 5), "tol": "sum"},
    "GlobalMaxPool": {"family": "unary", "rank": (3, 5), "tol": "exact"},
    "GlobalLpPool": {"family": "unary", "attrs": {"p": [1, 2]}, "rank": (3, 5), "tol": "sum"},
    "DepthToSpace": {"family": "unary", "attrs": {"blocksize": [1, 2], "mode": ["DCR", "CRD"]},
                     "rank": (4, 4), "tol": "exact"},
    "SpaceToDepth": {"family": "unary", "attrs": {"blocksize": [1, 2]}, "rank": (4, 4),
                     "tol": "exact"},
    "Unique": {"family": "unary", "attrs": {"axis": "axis", "sorted": [0, 1]}, "rank": (1, 3),
               "optional_attrs": ["axis"], "tol": "exact"},
    "Compress": {"family": "unary", "inputs": ["condition"], "attrs": {"axis": "axis"},
                 "optional_attrs": ["axis"], "rank": (1, 3), "tol": "exact"},
    "Gather": {"family": "unary", "inputs": ["indices"], "attrs": {"axis": "axis"}, "rank": (1, 4),
               "tol": "exact"},
    "GatherElements": {"family": "unary", "inputs": ["elem_indices"], "attrs": {"axis": "axis"},
                       "rank": (1, 4), "tol": "exact"},
    "Reshape": {"family": "unary", "inputs": ["reshape"], "attrs": {"allowzero": [0]},
                "tol": "exact"},
    "Squeeze": {"family": "unary", "inputs": ["axes"], "optional": 1, "tol": "exact"},
    "Unsqueeze": {"family": "unary", "inputs": ["new_axes"], "tol": "exact"},
    "Expand": {"family": "unary", "inputs": ["expand"], "tol": "exact"},
    "Tile": {"family": "unary", "inputs": ["repeats"], "tol": "exact"},
    "Pad": {"family": "unary", "inputs": ["pads", "scalar"], "optional": 1,
            "attrs": {"mode": ["constant", "edge", "reflect", "wrap"]}, "rank": (1, 4),
            "tol": "exact"},
    "Slice": {"family": "unary", "inputs": ["starts", "ends", "slice_axes", "steps"], "optional": 2,
              "rank": (1, 4), "tol": "exact"},
    "Split": {"family": "unary", "inputs": ["split"], "optional": 1, "attrs": {"axis": "axis"},
              "rank": (1, 4), "outputs": "split", "tol": "exact"},
    "CenterCropPad": {"family": "unary", "inputs": ["shape_input"], "rank": (1, 4), "tol": "exact"},
    "OneHot": {"family": "unary", "inputs": ["depth", "onehot_values"], "attrs": {"axis": "axis_incl"},
               "types": {"T1": ["int64", "int32", "float32"], "T2": ["int64"],
                         "T3": ["float32", "int64"]}, "tol": "exact"},
    "ConstantOfShape": {"family": "shape_only", "tol": "exact"},
    "Concat": {"family": "concat", "attrs": {"axis": "axis"}, "tol": "exact"},
    "Where": {"family": "broadcast", "tol": "exact"},
    "Max": {"family": "broadcast", "variadic": True, "tol": "exact"},
    "Min": {"family": "broadcast", "variadic": True, "tol": "exact"},
    "Sum": {"family": "broadcast", "variadic": True, "tol": "sum"},
    "Mean": {"family": "broadcast", "variadic": True, "tol": "sum"},
    "Add": {"family": "broadcast", "tol": "rounded"},
    "Sub": {"family": "broadcast", "tol": "rounded"},
    "Mul": {"family": "broadcast", "tol": "rounded"},
    "Div": {"family": "broadcast", "tol": "rounded"},
    "Pow": {"family": "broadcast", "tol": "ulp"},
    "Mod": {"family": "broadcast", "attrs": {"fmod": [0, 1]}, "tol": "exact"},
    "PRelu": {"family": "broadcast", "tol": "rounded"},
    "BitShift": {"family": "broadcast", "attrs": {"direction": ["LEFT", "RIGHT"]}, "tol": "exact"},
    # products
    "MatMul": {"family": "matmul", "tol": "sum"},
    "MatMulInteger": {"family": "matmul", "inputs": ["zero_point", "zero_point"], "optional": 2,
                      "tol": "exact"},
    "QLinearMatMul": {"family": "matmul", "quant": "qlinear", "tol": "exact"},
    "Gemm": {"family": "gemm", "attrs": {"alpha": [1.0, 0.5], "beta": [1.0, 2.0],
             "transA": [0, 1], "transB": [0, 1]}, "tol": "sum"},
    "Conv": {"family": "conv", "tol": "sum"},
    "ConvInteger": {"family": "conv", "tol": "exact"},
    "QLinearConv": {"family": "conv", "quant": "qlinear", "tol": "exact"},
    "MaxPool": {"family": "pool", "tol": "exact"},
    "AveragePool": {"family": "pool", "tol": "sum"},
    "LpPool": {"family": "pool", "attrs": {"p": [1, 2]}, "tol": "sum"},
    # normalizations
    "BatchNormalization": {"family": "norm", "tol": "scale"},
    "InstanceNormalization": {"family": "norm", "tol": "scale"},
    "LayerNormalization": {"family": "norm", "tol": "scale"},
    "GroupNormalization": {"family": "norm", "tol": "scale"},
    "RMSNormalization": {"family": "norm", "tol": "scale"},
    # quantization
    "QuantizeLinear": {"family": "quant", "tol": "exact"},
    "DequantizeLinear": {"family": "quant", "tol": "rounded"},
    "DynamicQuantizeLinear": {"family": "unary", "types": {"T1": ["float32"]}, "tol": "exact"},
    # random ops: only the shape and type of the result can be compared
    "RandomNormalLike": {"family": "unary", "types": {"T1": ["float32", "float64"]},
                         "tol": "random"},
    "RandomUniformLike": {"family": "unary", "types": {"T1": ["float32", "float64"]},
                          "tol": "random"},
    "Bernoulli": {"family": "unary", "tol": "random"},
})

# com.microsoft ops (schemas from onnxruntime's registry), every input by role
_MS = "com.microsoft."
_Q_UNARY = ["x", "scale", "zp?", "scale", "zp?"]
TABLE.update({
    _MS + "QLinearAdd": {"family": "roles", "roles": ["x", "scale", "zp?", "bx", "scale", "zp?",
                                                      "scale", "zp?"], "tol": "exact"},
    _MS + "QLinearMul": {"family": "roles", "roles": ["x", "scale", "zp?", "bx", "scale", "zp?",
                                                      "scale", "zp?"], "tol": "exact"},
    _MS + "QLinearSigmoid": {"family": "roles", "roles": _Q_UNARY, "tol": "exact"},
    _MS + "QLinearLeakyRelu": {"family": "roles", "roles": _Q_UNARY, "attrs": {"alpha": ALPHA},
                               "tol": "exact"},
    _MS + "QLinearSoftmax": {"family": "roles", "roles": ["x", "scale", "zp?", "scale", "zp"],
                             "attrs": {"axis": [-1], "opset": [13]}, "tol": "exact"},
    _MS + "QLinearGlobalAveragePool": {"family": "roles", "roles": _Q_UNARY, "rank": (3, 4),
                                       "attrs": {"channels_last": [0, 1]}, "tol": "exact"},
    _MS + "DynamicQuantizeMatMul": {"family": "roles", "roles": ["x", "w", "scale", "zp?", "n?"],
                                    "tol": "sum"},
    _MS + "MatMulIntegerToFloat": {"family": "roles", "roles": ["x", "w", "scale", "scale", "zp?",
                                                                "zp?", "n?"], "tol": "sum"},
    _MS + "QuantizeLinear": {"family": "roles", "roles": ["x", "scale", "zp"], "tol": "exact"},
    _MS + "DequantizeLinear": {"family": "roles", "roles": ["x", "scale", "zp"], "tol": "rounded"},
    _MS + "Gelu": {"family": "roles", "roles": ["x"], "tol": "ulp"},
    _MS + "QuickGelu": {"family": "roles", "roles": ["x"], "attrs": {"alpha": [1.702, 1.0]},
                        "tol": "ulp"},
    _MS + "FastGelu": {"family": "roles", "roles": ["x", "last?"], "tol": "ulp"},
    _MS + "BiasGelu": {"family": "roles", "roles": ["x", "last"], "tol": "ulp"},
    _MS + "BiasAdd": {"family": "roles", "roles": ["x", "last", "same"], "rank": (3, 3),
                      "tol": "rounded"},
    _MS + "SkipLayerNormalization": {"family": "roles", "roles": ["x", "same", "last", "last?",
                                                                 "last?"], "rank": (2, 3),
                                     "tol": "scale"},
    _MS + "SkipSimplifiedLayerNormalization": {"family": "roles", "roles": ["x", "same", "last",
                                                                           "last?"],
                                               "rank": (2, 3), "tol": "scale"},
})
