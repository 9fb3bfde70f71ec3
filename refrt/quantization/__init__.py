"""refrt.quantization: onnxruntime's quantization tool, readable.

Swap one import and the same code quantizes with refrt::

    from refrt.quantization import quantize_dynamic, quantize_static, QuantFormat, QuantType
    quantize_dynamic("model.onnx", "model.int8.onnx")
    quantize_static("model.onnx", "model.qdq.onnx", reader, quant_format=QuantFormat.QDQ)

The result is the model onnxruntime's tool writes -- same nodes in the same order, same names,
same scales, zero points and quantized weights -- given the same calibrated ranges. Calibration
runs the float model in refrt and streams: memory holds the histograms, not the data.

Where to read what:

* :mod:`.params`     -- scale/zero point, weights, int32 biases (the arithmetic)
* :mod:`.calibrate`  -- MinMax, Percentile and Entropy calibration, batch by batch
* :mod:`.qoperator`  -- dynamic and QOperator rewriting, one handler per op type
* :mod:`.qdq`        -- QDQ rewriting: mark tensors, then insert Q/DQ pairs
* :mod:`.quantize`   -- the entry points; :mod:`.options` -- every knob;
  :mod:`.preprocess` -- shape inference and folding; :mod:`.cli` -- ``refrt quantize``

Deliberate differences from onnxruntime (everything else is meant to match, and the tests check
it on every op type of the three registries):

* A model that already carries QuantizeLinear/DequantizeLinear nodes (quantization-aware
  training) keeps them: a node whose data input comes from a DequantizeLinear, or whose output
  goes to a QuantizeLinear, is left alone, in every mode (onnxruntime quantizes such tensors a
  second time).
* Dynamic mode turns each Gemm into MatMul (+ Add) as onnxruntime does, and an excluded (or
  listed) Gemm name applies to its replacement nodes (onnxruntime then ignores the name).
* ``CalibMaxIntermediateOutputs`` merges each full chunk of batches into the ranges, as
  onnxruntime documents (its code drops those chunks).
* An excluded Where node is never quantized; 4-bit types are refused in QOperator format (the
  QLinear operators take 8 bits; onnxruntime fails later); invalid TensorQuantOverrides are
  reported for every tensor, not only the first; unknown ``extra_options`` keys give a warning,
  and onnxruntime keys refrt does not implement (SmoothQuant, BlockSize, ...) an error.
* Percentile ranges keep the full histogram in ``TensorData.hist``/``bins`` (onnxruntime stores
  its first two counts there); no quantized model depends on those fields.
* Not implemented: float8 types and the Distribution method, ``convert`` overrides (mixed
  precision), per-channel calibration, subgraph quantization, ``get_qdq_config``, weight-only
  (MatMulNBits) quantization.
"""

from .base import Summary
from .calibrate import (
    CalibraterBase,
    CalibrationDataReader,
    EntropyCalibrater,
    MinMaxCalibrater,
    NumpyDataReader,
    PercentileCalibrater,
    TensorData,
    TensorsData,
    create_calibrator,
    load_tensors_data,
    save_tensors_data,
)
from .options import CalibrationMethod, QuantFormat, QuantizationMode, QuantType
from .preprocess import quant_pre_process
from .qdq import QDQQuantizer
from .qoperator import OperatorQuantizer
from .quantize import (
    DYNAMIC_OP_TYPES,
    QDQ_OP_TYPES,
    QOPERATOR_OP_TYPES,
    STATIC_OP_TYPES,
    DynamicQuantConfig,
    QuantConfig,
    StaticQuantConfig,
    quantize,
    quantize_dynamic,
    quantize_static,
)

__all__ = [
    "quantize", "quantize_dynamic", "quantize_static", "quant_pre_process",
    "QuantConfig", "StaticQuantConfig", "DynamicQuantConfig",
    "QuantType", "QuantFormat", "QuantizationMode", "CalibrationMethod",
    "CalibrationDataReader", "NumpyDataReader", "CalibraterBase", "MinMaxCalibrater",
    "EntropyCalibrater", "PercentileCalibrater", "create_calibrator", "TensorData",
    "TensorsData", "load_tensors_data", "save_tensors_data", "Summary",
    "OperatorQuantizer", "QDQQuantizer",
    "DYNAMIC_OP_TYPES", "QOPERATOR_OP_TYPES", "QDQ_OP_TYPES", "STATIC_OP_TYPES",
]
