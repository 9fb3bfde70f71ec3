"""What the ONNX schemas cannot say, as data: for each op, the *family* whose shape rule its inputs
follow, the roles of inputs that are not plain data (axes, indices, target shapes, scales, zero
points), the legal values of its attributes, and its tolerance class.

An entry is a dict with the keys below (all optional except ``family``):

``family``
    the shape rule, one of :data:`refrt.testing.families.FAMILIES` -- ``unary`` (one data input of
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
``range``
    (low, high) of input 0's random values (Bernoulli's probabilities).
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
    "Max": {"family": "broadcast", "variadic": True, "broadcast_since": 8, "tol": "exact"},
    "Min": {"family": "broadcast", "variadic": True, "broadcast_since": 8, "tol": "exact"},
    "Sum": {"family": "broadcast", "variadic": True, "broadcast_since": 8, "tol": "sum"},
    "Mean": {"family": "broadcast", "variadic": True, "broadcast_since": 8, "tol": "sum"},
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
    "Bernoulli": {"family": "unary", "range": (0.0, 1.0), "tol": "random"},
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

# -- symbolic shapes: ops whose inputs are tied by several dimensions -------------------------------
# EmbedLayerNormalization's ids and tables (word, position, segment, gamma, beta)
_EMBED = {"family": "shapes", "tol": "scale", "attrs": {"epsilon": 1e-5},
          "dims": {"B": [1, 2], "S": [1, 4], "V": [1, 6], "H": [1, 5]}}
_EMBED_TABLES = [["int:0:V-1", ["B", "S"], "int32"], ["int:0:1", ["B", "S"], "int32"],
                 ["data", ["V", "H"]], ["data", ["S + 1", "H"]], ["data", ["2", "H"]],
                 ["data", ["H"]], ["data", ["H"]]]
_2D = {"N": [1, 3], "C": [1, 4]}
_X = [["data", ["N", "C"]]]
_ML = "ai.onnx.ml."
_TREE = {"nodes_treeids": "=[0, 0, 0]", "nodes_nodeids": "=[0, 1, 2]",
         "nodes_featureids": "=ints(1, 0, C - 1) + [0, 0]", "nodes_values": "=floats(1) + [0.0, 0.0]",
         "nodes_modes": [["BRANCH_LEQ", "LEAF", "LEAF"], ["BRANCH_LT", "LEAF", "LEAF"]],
         "nodes_truenodeids": "=[1, 0, 0]", "nodes_falsenodeids": "=[2, 0, 0]"}
TABLE.update({
    "SimplifiedLayerNormalization": {"family": "shapes", "dims": _2D, "tol": "scale",
                                     "inputs": [["data", ["N", "C"]], ["data", ["C"]]],
                                     "attrs": {"axis": -1, "epsilon": 1e-5}},
    "MaxRoiPool": {"family": "shapes", "tol": "exact",
                   "dims": {"N": [1, 2], "C": [1, 3], "H": [1, 6], "W": [1, 6], "R": [1, 3]},
                   "inputs": [["data", ["N", "C", "H", "W"]], ["rois", ["R", 5]]],
                   "attrs": {"pooled_shape": [[1, 1], [2, 2], [2, 3]], "spatial_scale": 1.0}},
    "RandomNormal": {"family": "shapes", "dims": {"A": [1, 3], "B": [0, 3]}, "inputs": [],
                     "attrs": {"shape": "=[A, B]", "dtype": [1, 11], "seed": 1.0}, "tol": "random"},
    "RandomUniform": {"family": "shapes", "dims": {"A": [1, 3], "B": [0, 3]}, "inputs": [],
                      "attrs": {"shape": "=[A, B]", "dtype": [1, 11], "seed": 1.0}, "tol": "random"},
    "Multinomial": {"family": "shapes", "dims": {"N": [1, 3], "C": [1, 4], "S": [1, 4]},
                    "inputs": _X, "attrs": {"sample_size": "=S", "seed": 1.0, "dtype": [6, 7]},
                    "tol": "random"},
    "SequenceEmpty": {"family": "shapes", "inputs": [], "attrs": {"dtype": [1, 6, 7]},
                      "tol": "exact"},
    "SequenceConstruct": {"family": "shapes", "dims": {"K": [1, 3], "A": [0, 3], "B": [1, 3]},
                          "inputs": [["repeat", "K", [["data", ["A", "B"]]]]], "tol": "exact"},
    "SequenceLength": {"family": "shapes", "dims": {"K": [0, 3], "A": [1, 3]},
                       "inputs": [["seq:K", ["A"]]], "tol": "exact"},
    "SequenceAt": {"family": "shapes", "dims": {"K": [1, 3], "A": [1, 3]}, "tol": "exact",
                   "inputs": [["seq:K", ["A"]], ["int:-K:K-1", [], "int64"]]},
    "SequenceErase": {"family": "shapes", "dims": {"K": [1, 3], "A": [1, 3]}, "tol": "exact",
                      "inputs": [["seq:K", ["A"]], ["int:-K:K-1?", [], "int64"]]},
    "ConcatFromSequence": {"family": "shapes", "dims": {"K": [1, 3], "A": [1, 3], "B": [1, 3]},
                           "inputs": [["seq:K", ["A", "B"]]], "tol": "exact",
                           "attrs": {"axis": [0, 1, -1], "new_axis": [0, 1]}},
    "Optional": {"family": "shapes", "dims": {"A": [0, 3]}, "inputs": [["data", ["A"]]],
                 "tol": "exact"},
    _ML + "Scaler": {"family": "shapes", "dims": _2D, "inputs": _X, "tol": "rounded",
                     "attrs": {"offset": "=floats(C)", "scale": "=floats(C)"}},
    _ML + "Normalizer": {"family": "shapes", "dims": _2D, "inputs": _X, "tol": "scale",
                         "attrs": {"norm": ["MAX", "L1", "L2"]}},
    _ML + "LinearRegressor": {"family": "shapes", "dims": dict(_2D, T=[1, 3]), "inputs": _X,
                              "tol": "sum", "attrs": {"coefficients": "=floats(C * T)",
                                                      "intercepts": "=floats(T)", "targets": "=T"}},
    _ML + "LinearClassifier": {"family": "shapes", "dims": dict(_2D, K=[2, 3]), "inputs": _X,
                               "tol": "scale", "attrs": {
                                   "coefficients": "=floats(C * K)", "intercepts": "=floats(K)",
                                   "classlabels_ints": "=list(range(K))",
                                   "post_transform": ["NONE", "SOFTMAX", "LOGISTIC"]}},
    _ML + "Imputer": {"family": "shapes", "dims": _2D, "inputs": _X, "tol": "exact",
                      "types": {"T": ["float32", "float64"]},
                      "attrs": {"imputed_value_floats": "=floats(C)",
                                "replaced_value_float": [0.0, 1.5]}},
    _ML + "OneHotEncoder": {"family": "shapes", "dims": _2D, "tol": "exact",
                            "inputs": [["int:0:5", ["N", "C"], "int64"]],
                            "attrs": {"cats_int64s": "=[0, 1, 2, 3]", "zeros": 1}},
    _ML + "CategoryMapper": {"family": "shapes", "dims": _2D, "tol": "exact",
                             "inputs": [["int:0:4", ["N", "C"], "int64"]],
                             "attrs": {"cats_int64s": "=[0, 1, 2]",
                                       "cats_strings": "=['a', 'b', 'c']",
                                       "default_string": "_"}},
    _ML + "FeatureVectorizer": {"family": "shapes", "dims": dict(_2D, K=[1, 3]), "tol": "exact",
                                "inputs": [["repeat", "K", [["data", ["N", "C"]]]]],
                                "attrs": {"inputdimensions": "=[C] * K"}},
    _ML + "TreeEnsembleRegressor": {"family": "shapes", "dims": _2D, "inputs": _X, "tol": "sum",
                                    "attrs": dict(_TREE, n_targets=1, target_ids="=[0, 0]",
                                                  target_nodeids="=[1, 2]",
                                                  target_treeids="=[0, 0]",
                                                  target_weights="=floats(2)")},
    _ML + "TreeEnsembleClassifier": {"family": "shapes", "dims": _2D, "inputs": _X, "tol": "scale",
                                     "attrs": dict(_TREE, class_ids="=[0, 1]",
                                                   class_nodeids="=[1, 2]",
                                                   class_treeids="=[0, 0]",
                                                   class_weights="=floats(2)",
                                                   classlabels_int64s="=[0, 1]")},
    _ML + "SVMRegressor": {"family": "shapes", "dims": dict(_2D, V=[1, 3]), "inputs": _X,
                           "tol": "scale", "attrs": {
                               "support_vectors": "=floats(V * C)", "coefficients": "=floats(V)",
                               "n_supports": "=V", "rho": "=floats(1)",
                               "kernel_type": ["LINEAR", "RBF", "POLY", "SIGMOID"]}},
    _ML + "SVMClassifier": {"family": "shapes", "dims": dict(_2D, V=[1, 2], W=[1, 2]),
                            "inputs": _X, "tol": "scale", "attrs": {
                                "support_vectors": "=floats((V + W) * C)",
                                "coefficients": "=floats(V + W)", "vectors_per_class": "=[V, W]",
                                "rho": "=floats(1)", "classlabels_ints": "=[0, 1]",
                                "kernel_type": ["LINEAR", "RBF"]}},
    _MS + "QGemm": {"family": "shapes", "dims": {"M": [1, 4], "K": [1, 5], "N": [1, 4]},
                    "tol": "exact", "attrs": {"alpha": [1.0, 0.5]},
                    "inputs": [["data", ["M", "K"]], ["scale", []], ["zp", []], ["data", ["K", "N"]],
                               ["scale", []], ["zp", []], ["int:-1000:1000?", ["N"]],
                               ["scale?", []], ["zp?", []]]},
    _MS + "QLinearAveragePool": {"family": "shapes", "tol": "exact",
                                 "dims": {"N": [1, 2], "C": [1, 3], "H": [2, 5], "W": [2, 5],
                                          "k": [1, 2]},
                                 "inputs": [["data", ["N", "C", "H", "W"]], ["scale", []],
                                            ["zp?", []], ["scale", []], ["zp?", []]],
                                 "attrs": {"kernel_shape": "=[k, k]",
                                           "strides": [[1, 1], [2, 2]],
                                           "count_include_pad": [0, 1]}},
    _MS + "QLinearConcat": {"family": "shapes", "tol": "exact",
                            "dims": {"K": [1, 3], "A": [1, 3], "B": [1, 3]},
                            "attrs": {"axis": [0, 1, -1]},
                            "inputs": [["scale", []], ["zp", []],
                                       ["repeat", "K", [["data", ["A", "B"], "uint8"],
                                                        ["scale", [], "float32"],
                                                        ["zp", [], "uint8"]]]],
                            "types": {"T8": ["uint8"]}},
    _MS + "QLinearWhere": {"family": "shapes", "tol": "exact", "dims": {"A": [1, 3], "B": [1, 3]},
                           "inputs": [["bool", ["A", "B"]], ["data", ["A", "B"]], ["scale", []],
                                      ["zp", []], ["data", ["A", "B"]], ["scale", []], ["zp", []],
                                      ["scale", []], ["zp", []]]},
    _MS + "RotaryEmbedding": {"family": "shapes", "tol": "scale",
                              "dims": {"B": [1, 2], "S": [1, 3], "N": [1, 2], "h": [1, 3]},
                              "let": {"D": "2 * h", "P": "S + 2"},
                              "attrs": {"num_heads": "=N", "interleaved": [0, 1]},
                              "inputs": [["data", ["B", "S", "N * D"]],
                                         ["int:0:P-1", ["B", "S"], "int64"],
                                         ["data", ["P", "h"]], ["data", ["P", "h"]]]},
    _MS + "Attention": {"family": "shapes", "tol": "scale",
                        "dims": {"B": [1, 2], "S": [1, 4], "N": [1, 2], "D": [1, 4]},
                        "let": {"H": "N * D"},
                        "attrs": {"num_heads": "=N", "unidirectional": [0, 1]},
                        "inputs": [["data", ["B", "S", "H"]], ["data", ["H", "3 * H"]],
                                   ["data?", ["3 * H"]]]},
    _MS + "MultiHeadAttention": {"family": "shapes", "tol": "scale",
                                 "dims": {"B": [1, 2], "S": [1, 4], "L": [1, 4], "N": [1, 2],
                                          "D": [1, 4]},
                                 "let": {"H": "N * D"}, "attrs": {"num_heads": "=N"},
                                 "inputs": [["data", ["B", "S", "H"]], ["data", ["B", "L", "H"]],
                                            ["data", ["B", "L", "H"]]]},
    _MS + "QAttention": {"family": "shapes", "tol": "scale",
                         "dims": {"B": [1, 2], "S": [1, 4], "N": [1, 2], "D": [1, 4]},
                         "let": {"H": "N * D"}, "attrs": {"num_heads": "=N"},
                         "inputs": [["data", ["B", "S", "H"]], ["data", ["H", "3 * H"]],
                                    ["data", ["3 * H"]], ["scale", []], ["scale", []],
                                    ["absent", []], ["zp?", []], ["zp?", []]]},
    _MS + "EmbedLayerNormalization": dict(_EMBED, inputs=_EMBED_TABLES + [
        ["int:0:1?", ["B", "S"], "int32"]]),
    # onnxruntime's fused ops of optimized graphs (FusedConv etc.: refrt/ops/contrib_fused.py)
    _MS + "FusedConv": {"family": "shapes", "tol": "scale", "types": {"T": ["float32"]},
                        "dims": {"N": [1, 2], "C": [1, 3], "M": [1, 3], "H": [3, 6], "W": [3, 6],
                                 "k": [1, 3]},
                        "attrs": {"kernel_shape": "=[k, k]", "strides": [[1, 1], [2, 2]],
                                  "pads": [[0, 0, 0, 0], [1, 1, 1, 1]],
                                  "activation": ["Relu", "Tanh", "Sigmoid"]},
                        "inputs": [["data", ["N", "C", "H", "W"]], ["data", ["M", "C", "k", "k"]],
                                   ["data?", ["M"]]]},
    _MS + "FusedGemm": {"family": "shapes", "tol": "scale", "types": {"T": ["float32"]},
                        "dims": {"M": [1, 4], "K": [1, 5], "N": [1, 4]},
                        "attrs": {"alpha": [1.0, 0.5], "activation": ["Relu", "Tanh", "Sigmoid",
                                                                      "LeakyRelu"],
                                  "activation_alpha": [0.01, 0.2]},
                        "inputs": [["data", ["M", "K"]], ["data", ["K", "N"]], ["data?", ["N"]]]},
    _MS + "FusedMatMul": {"family": "shapes", "tol": "scale", "types": {"T": ["float32"]},
                          "dims": {"B": [1, 3], "M": [1, 4], "K": [1, 5], "N": [1, 4],
                                   "ta": [0, 1], "tb": [0, 1]},
                          "attrs": {"alpha": [1.0, 0.5], "transA": "=ta", "transB": "=tb"},
                          "inputs": [["data", ["B", "ta * K + (1 - ta) * M",
                                               "ta * M + (1 - ta) * K"]],
                                     ["data", ["tb * N + (1 - tb) * K", "tb * K + (1 - tb) * N"]]]},
    _MS + "QLinearConv": {"family": "shapes", "tol": "exact",
                          "types": {"T1": ["uint8"], "T2": ["int8", "uint8"], "T3": ["uint8"]},
                          "dims": {"N": [1, 2], "C": [1, 3], "M": [1, 3], "H": [3, 6],
                                   "W": [3, 6], "k": [1, 3], "cl": [0, 1]},
                          "attrs": {"kernel_shape": "=[k, k]", "strides": [[1, 1], [2, 2]],
                                    "pads": [[0, 0, 0, 0], [1, 1, 1, 1]], "channels_last": "=cl"},
                          "inputs": [["data", ["N", "cl * H + (1 - cl) * C",
                                               "cl * W + (1 - cl) * H", "cl * C + (1 - cl) * W"]],
                                     ["scale", []], ["zp", []], ["data", ["M", "C", "k", "k"]],
                                     ["scale", []], ["zp", []], ["scale", []], ["zp", []],
                                     ["int:-1000:1000?", ["M"], "int32"]]},
    _MS + "NhwcMaxPool": {"family": "shapes", "tol": "exact",
                          "dims": {"N": [1, 2], "H": [2, 6], "W": [2, 6], "C": [1, 3], "k": [1, 2]},
                          "attrs": {"kernel_shape": "=[k, k]", "strides": [[1, 1], [2, 2]]},
                          "inputs": [["data", ["N", "H", "W", "C"]]]},
    _MS + "MatMulNBits": {"family": "shapes", "tol": "scale",
                          "dims": {"M": [1, 3], "N": [1, 4], "K": [1, 40]},
                          "let": {"blocks": "(K + 15) // 16"},
                          "attrs": {"K": "=K", "N": "=N", "bits": 4, "block_size": 16},
                          "inputs": [["data", ["M", "K"]],
                                     ["int:0:255", ["N", "blocks", 8], "uint8"],
                                     ["scale", ["N * blocks"]]]},
})
TABLE.update({
    _MS + "DynamicQuantizeLSTM": {
        "family": "shapes", "tol": "scale",
        "dims": {"T": [1, 3], "B": [1, 2], "I": [1, 4], "H": [1, 3]},
        "attrs": {"hidden_size": "=H", "direction": ["forward", "reverse"]},
        "inputs": [["data", ["T", "B", "I"]], ["data", ["1", "I", "4 * H"]],
                   ["data", ["1", "H", "4 * H"]], ["data?", ["1", "8 * H"]], ["absent", []],
                   ["absent", []], ["absent", []], ["absent", []], ["scale", ["1"]], ["zp", ["1"]],
                   ["scale", ["1"]], ["zp", ["1"]]]},
    # the same tables quantized: then a scale and a zero point per table
    _MS + "QEmbedLayerNormalization": dict(_EMBED, inputs=_EMBED_TABLES + [["absent", []]]
                                           + [["scale", []]] * 5 + [["zp", []]] * 5),
})
TABLE.update({
    _MS + "GroupQueryAttention": {
        "family": "shapes", "tol": "scale",
        "dims": {"B": [1, 2], "S": [1, 3], "KV": [1, 2], "G": [1, 2], "d8": [1, 2]},
        "let": {"D": "8 * d8"},                 # onnxruntime: head size a multiple of 8
        "attrs": {"num_heads": "=KV * G", "kv_num_heads": "=KV"},
        "inputs": [["data", ["B", "S", "KV * G * D"]], ["data", ["B", "S", "KV * D"]],
                   ["data", ["B", "S", "KV * D"]], ["absent", []], ["absent", []],
                   ["int:S-1:S-1", ["B"], "int32"], ["int:S:S", [], "int32"]]},
    _ML + "ZipMap": {"family": "shapes", "dims": _2D, "inputs": [["data", ["N", "C"], "float32"]],
                     "attrs": {"classlabels_int64s": "=list(range(C))"}, "tol": "exact"},
    _ML + "CastMap": {"family": "shapes", "dims": {"K": [1, 4]}, "tol": "exact",
                      "inputs": [["map:int64:float32", ["K"]]],
                      "attrs": {"cast_to": ["TO_FLOAT", "TO_INT64"]}},
    _ML + "DictVectorizer": {"family": "shapes", "dims": {"K": [1, 4]}, "tol": "exact",
                             "inputs": [["map:int64:float32", ["K"]]],
                             "attrs": {"int64_vocabulary": "=[0, 1, 2, 3, 5]"}},
})
