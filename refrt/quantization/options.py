"""The knobs: quantized types, formats, calibration methods, and the ``extra_options`` dict.

The enums carry onnxruntime's names *and* values, so code written for
``onnxruntime.quantization`` keeps working after swapping the import. refrt also accepts
onnxruntime's own enum members, their names as strings, and ONNX element types (ints), wherever a
type, format or method is expected: see :func:`as_quant_type` and friends.

``extra_options`` keeps onnxruntime's keys. :data:`EXTRA_OPTIONS` lists every key refrt honours,
with its default and meaning; :data:`UNSUPPORTED_OPTIONS` lists onnxruntime keys refrt does not
implement (setting one to a non-default value is an error rather than being silently ignored).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from onnx import TensorProto


class QuantizationMode(Enum):
    IntegerOps = 0     # dynamic: DynamicQuantizeLinear -> MatMulInteger/ConvInteger -> Cast -> Mul
    QLinearOps = 1     # static: QLinearConv, QLinearMatMul, com.microsoft QLinear* ops

    def __str__(self):
        return self.name

    @staticmethod
    def from_string(mode):
        return _from_string(QuantizationMode, mode)


class QuantType(Enum):
    QInt8 = 0
    QUInt8 = 1
    QFLOAT8E4M3FN = 2
    QInt16 = 3
    QUInt16 = 4
    QInt4 = 5
    QUInt4 = 6

    def __str__(self):
        return self.name

    @staticmethod
    def from_string(t):
        return _from_string(QuantType, t)

    @property
    def tensor_type(self) -> int:
        """The ONNX element type (``TensorProto.INT8`` ...)."""
        return _TENSOR_TYPE[self]


class QuantFormat(Enum):
    QOperator = 0      # quantized operators (QLinearConv, QLinearMatMul, com.microsoft QLinear*)
    QDQ = 1            # float operators between QuantizeLinear -> DequantizeLinear pairs

    def __str__(self):
        return self.name

    @staticmethod
    def from_string(fmt):
        return _from_string(QuantFormat, fmt)


class CalibrationMethod(Enum):
    MinMax = 0
    Entropy = 1
    Percentile = 2
    Distribution = 3   # float8 only in onnxruntime; refrt does not implement it

    def __str__(self):
        return self.name


_TENSOR_TYPE = {
    QuantType.QInt8: TensorProto.INT8, QuantType.QUInt8: TensorProto.UINT8,
    QuantType.QInt16: TensorProto.INT16, QuantType.QUInt16: TensorProto.UINT16,
    QuantType.QInt4: TensorProto.INT4, QuantType.QUInt4: TensorProto.UINT4,
    QuantType.QFLOAT8E4M3FN: TensorProto.FLOAT8E4M3FN,
}
_FROM_TENSOR_TYPE = {v: k for k, v in _TENSOR_TYPE.items()}


def _from_string(enum_cls, value):
    try:
        return enum_cls[value]
    except KeyError:
        raise ValueError(f"{value!r} is not a {enum_cls.__name__}; choose from "
                         f"{', '.join(enum_cls.__members__)}") from None


def _coerce(enum_cls, value, what: str):
    """``value`` as a member of ``enum_cls``: a member, onnxruntime's member of the same name,
    or the name itself (case-insensitive)."""
    if isinstance(value, enum_cls):
        return value
    name = value.name if isinstance(value, Enum) else value
    if isinstance(name, str):
        for member_name, member in enum_cls.__members__.items():
            if member_name.lower() == name.lower():
                return member
    raise ValueError(f"{what} must be one of {', '.join(enum_cls.__members__)}, not {value!r}")


def as_quant_type(value, what: str = "quantization type") -> QuantType:
    """A QuantType from a QuantType, onnxruntime's QuantType, its name, or an ONNX element type."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if int(value) in _FROM_TENSOR_TYPE:
            return _FROM_TENSOR_TYPE[int(value)]
        raise ValueError(f"{what}: ONNX element type {value} cannot be a quantized type")
    qtype = _coerce(QuantType, value, what)
    if qtype is QuantType.QFLOAT8E4M3FN:
        raise NotImplementedError(f"{what} {qtype}: float8 quantization (with the Distribution "
                                  f"calibration it needs) is not implemented in refrt")
    return qtype


def as_quant_format(value) -> QuantFormat:
    return _coerce(QuantFormat, value, "quant_format")


def as_calibration_method(value) -> CalibrationMethod:
    method = _coerce(CalibrationMethod, value, "calibrate_method")
    if method is CalibrationMethod.Distribution:
        raise NotImplementedError("CalibrationMethod.Distribution (float8 quantization) is not "
                                  "implemented in refrt; use MinMax, Entropy or Percentile")
    return method


# ---------------------------------------------------------------- extra_options

@dataclass
class Options:
    """The parsed ``extra_options`` (onnxruntime's key in the comment)."""
    activation_symmetric: bool = False            # ActivationSymmetric
    activation_restricted_asymmetric: bool = False  # ActivationRestrictedAsymmetric
    weight_symmetric: bool | None = None          # WeightSymmetric (None: signed types symmetric)
    force_quantize_no_input_check: bool = False   # ForceQuantizeNoInputCheck
    matmul_const_b_only: bool = False             # MatMulConstBOnly (dynamic mode defaults to True)
    exclude_output_quantization: tuple = ()       # OpTypesToExcludeOutputQuantization
    add_qdq_pair_to_weight: bool = False          # AddQDQPairToWeight
    dedicated_qdq_pair: bool = False              # DedicatedQDQPair
    quantize_bias: bool = True                    # QuantizeBias
    keep_removable_activations: bool = False      # QDQKeepRemovableActivations
    per_channel_axis_by_op: dict = field(default_factory=dict)  # QDQOpTypePerChannelSupportToAxis
    use_qdq_contrib_ops: bool = False             # UseQDQContribOps
    min_real_range: float | None = None           # MinimumRealRange
    tensor_quant_overrides: dict = field(default_factory=dict)  # TensorQuantOverrides
    no_weight_adjust_for_int32_bias: bool = False  # QDQDisableWeightAdjustForInt32Bias
    sigmoid_nnapi: bool = False                   # extra.Sigmoid.nnapi
    calib_symmetric: bool | None = None           # CalibTensorRangeSymmetric
    calib_moving_average: bool = False            # CalibMovingAverage
    calib_moving_average_constant: float = 0.01   # CalibMovingAverageConstant
    calib_max_intermediate_outputs: int | None = None  # CalibMaxIntermediateOutputs
    calib_percentile: float = 99.999              # CalibPercentile
    calib_runtime: str = "refrt"                  # CalibRuntime (refrt only): or "onnxruntime"
    default_tensor_type: int | None = None        # DefaultTensorType


#: onnxruntime key -> (Options field, meaning)
EXTRA_OPTIONS = {
    "ActivationSymmetric": ("activation_symmetric",
                            "activations use a range symmetric around 0"),
    "ActivationRestrictedAsymmetric": ("activation_restricted_asymmetric",
                                       "uint8 activations: zero point snapped to 0 or the middle"),
    "WeightSymmetric": ("weight_symmetric",
                        "weights use a symmetric range (default: for signed types)"),
    "ForceQuantizeNoInputCheck": ("force_quantize_no_input_check",
                                  "quantize Transpose/MaxPool/... even if their input is float"),
    "MatMulConstBOnly": ("matmul_const_b_only", "only quantize MatMul whose B is an initializer"),
    "OpTypesToExcludeOutputQuantization": ("exclude_output_quantization",
                                           "op types whose outputs stay float (QDQ)"),
    "AddQDQPairToWeight": ("add_qdq_pair_to_weight", "keep float weights behind Q -> DQ (QDQ)"),
    "DedicatedQDQPair": ("dedicated_qdq_pair", "one Q -> DQ pair per consumer (QDQ)"),
    "QuantizeBias": ("quantize_bias", "quantize biases to int32 (QDQ)"),
    "QDQKeepRemovableActivations": ("keep_removable_activations",
                                    "keep Relu/Clip that a Q/DQ pair makes redundant (QDQ)"),
    "QDQOpTypePerChannelSupportToAxis": ("per_channel_axis_by_op",
                                         "per-channel axis by op type, e.g. {'MatMul': 1}"),
    "UseQDQContribOps": ("use_qdq_contrib_ops", "Q/DQ nodes in the com.microsoft domain"),
    "MinimumRealRange": ("min_real_range", "smallest rmax - rmin used for a scale"),
    "TensorQuantOverrides": ("tensor_quant_overrides", "per-tensor type/scale/range overrides"),
    "QDQDisableWeightAdjustForInt32Bias": ("no_weight_adjust_for_int32_bias",
                                           "never enlarge weight scales to fit an int32 bias"),
    "extra.Sigmoid.nnapi": ("sigmoid_nnapi", "QLinearSigmoid output scale 1/256, zero point 0"),
    "CalibTensorRangeSymmetric": ("calib_symmetric", "calibrated ranges symmetric around 0"),
    "CalibMovingAverage": ("calib_moving_average", "MinMax: average the per-batch ranges"),
    "CalibMovingAverageConstant": ("calib_moving_average_constant",
                                   "MinMax: smoothing between calibration chunks"),
    "CalibMaxIntermediateOutputs": ("calib_max_intermediate_outputs",
                                    "MinMax: batches per calibration chunk"),
    "CalibPercentile": ("calib_percentile", "Percentile: the percentile kept"),
    "CalibRuntime": ("calib_runtime", "refrt only: run the float model in 'refrt' (default) or "
                                      "'onnxruntime' during calibration"),
    "DefaultTensorType": ("default_tensor_type",
                          "element type (TensorProto code) of a tensor shape inference gives none, "
                          "e.g. an output of a com.microsoft op; usually TensorProto.FLOAT"),
}

#: onnxruntime keys refrt does not implement, with the value that means "off".
UNSUPPORTED_OPTIONS = {
    "EnableSubgraph": False, "SmoothQuant": False, "BlockSize": 0, "CalibStridedMinMax": None,
}


def parse_extra_options(extra_options: dict | None, **defaults) -> Options:
    """:class:`Options` from onnxruntime's ``extra_options`` dict; ``defaults`` are mode defaults
    (e.g. ``matmul_const_b_only=True`` for dynamic quantization)."""
    opts = Options(**defaults)
    for key, value in (extra_options or {}).items():
        if key in EXTRA_OPTIONS:
            setattr(opts, EXTRA_OPTIONS[key][0], value)
        elif key in UNSUPPORTED_OPTIONS:
            if value not in (UNSUPPORTED_OPTIONS[key], None, False):
                raise NotImplementedError(f"extra option {key}={value!r} is not implemented in "
                                          f"refrt")
        else:
            warnings.warn(f"unknown extra option {key!r} ignored; refrt understands "
                          f"{', '.join(EXTRA_OPTIONS)}", stacklevel=3)
    opts.exclude_output_quantization = tuple(opts.exclude_output_quantization or ())
    if opts.calib_runtime not in ("refrt", "onnxruntime"):
        raise ValueError(f"CalibRuntime must be 'refrt' or 'onnxruntime', not "
                         f"{opts.calib_runtime!r}")
    return opts
