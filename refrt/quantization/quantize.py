"""The entry points: ``quantize_dynamic``, ``quantize_static`` and ``quantize(config)``.

Signatures, defaults and option names are onnxruntime's. Each returns a :class:`Summary`
(onnxruntime returns None) telling what was quantized and the size before and after.
"""

from __future__ import annotations

import logging
import os

import onnx

from . import model as M
from .base import Summary
from .calibrate import (
    CalibrationDataReader,
    CalibrationMethod,
    TensorsData,
    create_calibrator,
    load_tensors_data,
    save_tensors_data,
)
from .calibration_report import build_report, calibrator_histograms
from .options import (
    QuantFormat,
    QuantType,
    as_calibration_method,
    as_quant_format,
    as_quant_type,
    parse_extra_options,
)
from .qdq import RULES as QDQ_RULES
from .qdq import QDQQuantizer
from .qoperator import INTEGER_OPS, QLINEAR_OPS, OperatorQuantizer

log = logging.getLogger(__name__)

#: Op types each mode quantizes by default (onnxruntime's registries).
DYNAMIC_OP_TYPES = tuple(INTEGER_OPS)
QOPERATOR_OP_TYPES = tuple(QLINEAR_OPS)
QDQ_OP_TYPES = tuple(QDQ_RULES)
STATIC_OP_TYPES = tuple(sorted(set(QLINEAR_OPS) | set(QDQ_RULES)))


class QuantConfig:
    """Settings shared by the static and dynamic configurations."""

    def __init__(self, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                 op_types_to_quantize=None, nodes_to_quantize=None, nodes_to_exclude=None,
                 per_channel=False, reduce_range=False, use_external_data_format=False):
        self.op_types_to_quantize = op_types_to_quantize or []
        self.per_channel = per_channel
        self.reduce_range = reduce_range
        self.weight_type = weight_type
        self.activation_type = activation_type
        self.nodes_to_quantize = nodes_to_quantize or []
        self.nodes_to_exclude = nodes_to_exclude or []
        self.use_external_data_format = use_external_data_format


class StaticQuantConfig(QuantConfig):
    """Everything ``quantize_static`` takes, for ``quantize(model, out, config)``."""

    def __init__(self, calibration_data_reader: CalibrationDataReader,
                 calibrate_method=CalibrationMethod.MinMax, quant_format=QuantFormat.QDQ,
                 activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                 op_types_to_quantize=None, nodes_to_quantize=None, nodes_to_exclude=None,
                 per_channel=False, reduce_range=False, use_external_data_format=False,
                 calibration_providers=None, extra_options=None):
        super().__init__(activation_type, weight_type, op_types_to_quantize, nodes_to_quantize,
                         nodes_to_exclude, per_channel, reduce_range, use_external_data_format)
        self.calibration_data_reader = calibration_data_reader
        self.calibrate_method = calibrate_method
        self.quant_format = quant_format
        self.calibration_providers = calibration_providers
        self.extra_options = extra_options or {}


class DynamicQuantConfig(QuantConfig):
    """Everything ``quantize_dynamic`` takes, for ``quantize(model, out, config)``."""

    def __init__(self, weight_type=QuantType.QInt8, op_types_to_quantize=None,
                 nodes_to_quantize=None, nodes_to_exclude=None, per_channel=False,
                 reduce_range=False, use_external_data_format=False, extra_options=None):
        super().__init__(op_types_to_quantize=op_types_to_quantize, per_channel=per_channel,
                         reduce_range=reduce_range, weight_type=weight_type,
                         nodes_to_quantize=nodes_to_quantize, nodes_to_exclude=nodes_to_exclude,
                         use_external_data_format=use_external_data_format)
        self.extra_options = extra_options or {}


def check_static_quant_arguments(quant_format, activation_type, weight_type) -> None:
    """Combinations refused: int8 activations with uint8 weights, and 16-bit (and, unlike
    onnxruntime which fails later, 4-bit) types outside the QDQ format."""
    if activation_type is QuantType.QInt8 and weight_type is QuantType.QUInt8:
        raise ValueError("activation_type=QInt8 with weight_type=QUInt8 is not supported (the "
                         "integer kernels take u8 x s8, u8 x u8 and s8 x s8)")
    sixteen = (QuantType.QInt16, QuantType.QUInt16)
    if (activation_type in sixteen or weight_type in sixteen) and \
            quant_format is not QuantFormat.QDQ:
        raise ValueError("16-bit quantization types need quant_format=QuantFormat.QDQ")
    four = (QuantType.QInt4, QuantType.QUInt4)
    if (activation_type in four or weight_type in four) and quant_format is not QuantFormat.QDQ:
        raise ValueError("4-bit quantization types need quant_format=QuantFormat.QDQ (the "
                         "QLinear operators take 8-bit inputs)")
    if activation_type is QuantType.QInt8 and weight_type is QuantType.QInt8 and \
            quant_format is not QuantFormat.QDQ:
        log.warning("QOperator format with int8 activations and weights runs slowly on x64; "
                    "QuantFormat.QDQ is recommended")


def _update_opset(model, weight_type, activation_type=None, overrides=None):
    """16-bit types need opset 21 (ONNX QuantizeLinear of int16); below opset 10 there is no
    QuantizeLinear at all (the model is converted to 11)."""
    opset = M.opset_version(model)
    sixteen = (QuantType.QInt16, QuantType.QUInt16)
    override_types = {as_quant_type(d["quant_type"]) for entries in (overrides or {}).values()
                      for d in entries if isinstance(d, dict) and "quant_type" in d}
    needs_21 = (weight_type in sixteen or activation_type in sixteen
                or bool(override_types & set(sixteen)))
    target = 21 if (opset < 21 and needs_21) else (11 if opset < 10 else opset)
    if opset == 10:
        log.warning("opset 10 has no DynamicQuantizeLinear; consider opset 11 or later")
    if target == opset:
        return model
    log.warning("converting the model from opset %d to %d for quantization", opset, target)
    return M.infer_shapes(onnx.version_converter.convert_version(model, target), inplace=True)


def quantize_static(model_input, model_output, calibration_data_reader=None,
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=None, per_channel=False,
                    reduce_range=False, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, nodes_to_quantize=None, nodes_to_exclude=None,
                    use_external_data_format=False, calibrate_method=CalibrationMethod.MinMax,
                    calibration_providers=None, extra_options=None, calibration_cache_path=None,
                    *, progress: bool | None = None, report=None) -> Summary:
    """Quantize weights and activations with ranges calibrated on ``calibration_data_reader``.

    * ``quant_format``: QDQ (float ops between Q/DQ pairs, the default) or QOperator.
    * ``activation_type`` / ``weight_type``: QInt8 (default), QUInt8, QInt16, QUInt16, QInt4,
      QUInt4 (16- and 4-bit types: QDQ only).
    * ``calibrate_method``: MinMax (default), Entropy or Percentile.
    * ``op_types_to_quantize``: default, every op type either format knows.
    * ``per_channel``: one scale per output channel for Conv (axis 0), ConvTranspose (1),
      Gemm (0 if transB else 1), MatMul (1).
    * ``reduce_range``: 7-bit weights (int8 [-64, 64]).
    * ``extra_options``: onnxruntime's keys (see ``refrt.quantization.options.EXTRA_OPTIONS``).
    * ``calibration_cache_path``: a JSON file of ranges (onnxruntime's format): read if it
      exists, else written after calibrating.
    * ``progress``: calibration progress bar on stderr (default: when stderr is a terminal).
    * ``report``: a path: write an HTML page with, per quantized activation, the calibration
      histogram, the range the written scale and zero point represent and the share they clip
      (:mod:`.calibration_report`; pictures need matplotlib). ``summary.report`` holds it too.
    """
    quant_format = as_quant_format(quant_format)
    activation_type = as_quant_type(activation_type, "activation_type")
    weight_type = as_quant_type(weight_type, "weight_type")
    method = as_calibration_method(calibrate_method)
    options = parse_extra_options(extra_options)
    check_static_quant_arguments(quant_format, activation_type, weight_type)
    op_types = list(op_types_to_quantize or STATIC_OP_TYPES)

    model = M.load(model_input)
    size_before = M.model_size(model)
    model = _update_opset(M.infer_shapes(model, inplace=True), weight_type, activation_type,
                          options.tensor_quant_overrides)
    ranges, histograms = _calibrate(model, op_types, calibration_data_reader, method, options,
                                    calibration_providers, calibration_cache_path, progress,
                                    keep_histograms=report is not None)
    # the quantizer adjusts ranges in place (a Relu folded into the op before it): keep the
    # calibrated ones for the report
    calibrated = {k: v.range_value for k, v in ranges.items()} if report is not None else None

    common = dict(per_channel=per_channel, reduce_range=reduce_range,
                  weight_type=weight_type.tensor_type, activation_type=activation_type.tensor_type,
                  tensors_range=ranges, nodes_to_quantize=nodes_to_quantize,
                  nodes_to_exclude=nodes_to_exclude, op_types_to_quantize=op_types,
                  options=options)
    if quant_format is QuantFormat.QOperator:
        quantizer = OperatorQuantizer(model, static=True, **common)
    else:
        quantizer = QDQQuantizer(model, **common)
    float_model = _copy(model) if report is not None else None
    summary, quantized = _finish(quantizer, f"static {quant_format}", model_output,
                                 use_external_data_format, size_before)
    if report is not None:
        notes = [] if histograms is not None else [
            f"The ranges were read from the calibration cache {calibration_cache_path}, which "
            f"keeps no histograms: run without the cache to see them."]
        summary.report = build_report(quantized, float_model, summary, histograms, calibrated,
                                      method, notes)
        summary.report.to_html(report)
    return summary


def _copy(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


#: Bins of the histogram MinMax calibration keeps when a report is asked for.
REPORT_HISTOGRAM_BINS = 2048


def _calibrate(model, op_types, reader, method, options, providers, cache_path, progress,
               keep_histograms=False):
    """-> (ranges, histograms): histograms (tensor -> Histogram) only with ``keep_histograms``
    and when the ranges were calibrated, not read from the cache; else None."""
    if cache_path is not None and os.path.isfile(cache_path):
        ranges = load_tensors_data(cache_path)
        if ranges.calibration_method is not method:
            raise ValueError(f"the calibration cache {cache_path} holds {ranges.calibration_method}"
                             f" ranges, not {method}; delete it or pass a matching "
                             f"calibrate_method")
        return ranges, None
    if reader is None:
        raise ValueError("quantize_static needs a calibration_data_reader (or an existing "
                         "calibration_cache_path)")
    calib_options = {}
    if options.calib_symmetric is not None:
        calib_options["symmetric"] = options.calib_symmetric
    calib_options.update(moving_average=options.calib_moving_average,
                         averaging_constant=options.calib_moving_average_constant,
                         max_intermediate_outputs=options.calib_max_intermediate_outputs,
                         percentile=options.calib_percentile)
    if keep_histograms:
        calib_options["histogram_bins"] = REPORT_HISTOGRAM_BINS
    calibrator = create_calibrator(model, op_types, calibrate_method=method,
                                   providers=providers, extra_options=calib_options,
                                   runtime=options.calib_runtime, progress=progress)
    calibrator.collect_data(reader)
    ranges = calibrator.compute_data()
    if not isinstance(ranges, TensorsData):
        raise TypeError(f"the calibrator returned {type(ranges).__name__}, not TensorsData")
    if cache_path is not None:
        save_tensors_data(ranges, cache_path)
    return ranges, (calibrator_histograms(calibrator) if keep_histograms else None)


def _finish(quantizer, mode, model_output, use_external_data_format, size_before):
    """Write the quantized model; -> (Summary, the quantized ModelProto)."""
    model = quantizer.quantize_model()
    M.prune_value_info(model.graph)
    M.save(model, model_output, use_external_data_format)
    summary = quantizer.summary(mode, model)
    summary.size_before, summary.size_after = size_before, M.model_size(model)
    return summary, model


def quantize_dynamic(model_input, model_output, op_types_to_quantize=None, per_channel=False,
                     reduce_range=False, weight_type=QuantType.QInt8, nodes_to_quantize=None,
                     nodes_to_exclude=None, use_external_data_format=False,
                     extra_options=None, *, report=None) -> Summary:
    """Quantize weights ahead of time; activations are quantized (uint8) at run time by
    DynamicQuantizeLinear. Default op types: Conv, MatMul, Attention, LSTM, Gather, Transpose,
    EmbedLayerNormalization. ``MatMulConstBOnly`` defaults to True here. ``report``: a path for
    the HTML summary (no histograms: nothing is calibrated)."""
    weight_type = as_quant_type(weight_type, "weight_type")
    options = parse_extra_options(extra_options, matmul_const_b_only=True)
    model = M.load(model_input)
    size_before = M.model_size(model)
    model = _update_opset(M.infer_shapes(model, inplace=True), weight_type)
    quantizer = OperatorQuantizer(
        model, static=False, per_channel=per_channel, reduce_range=reduce_range,
        weight_type=weight_type.tensor_type, activation_type=QuantType.QUInt8.tensor_type,
        tensors_range=None, nodes_to_quantize=nodes_to_quantize,
        nodes_to_exclude=nodes_to_exclude,
        op_types_to_quantize=list(op_types_to_quantize or DYNAMIC_OP_TYPES), options=options)
    float_model = _copy(model) if report is not None else None
    summary, quantized = _finish(quantizer, "dynamic", model_output, use_external_data_format,
                                 size_before)
    if report is not None:
        summary.report = build_report(quantized, float_model, summary, None, None, notes=[
            "Dynamic quantization calibrates nothing: activations are quantized at run time "
            "(DynamicQuantizeLinear), so there are no histograms."])
        summary.report.to_html(report)
    return summary


def quantize(model_input, model_output, quant_config: QuantConfig) -> Summary:
    """Quantize with a :class:`StaticQuantConfig` or :class:`DynamicQuantConfig`."""
    c = quant_config
    if isinstance(c, StaticQuantConfig) or type(c).__name__ == "StaticQuantConfig":
        return quantize_static(
            model_input, model_output, c.calibration_data_reader,
            calibrate_method=c.calibrate_method, quant_format=c.quant_format,
            activation_type=c.activation_type, weight_type=c.weight_type,
            op_types_to_quantize=c.op_types_to_quantize, nodes_to_quantize=c.nodes_to_quantize,
            nodes_to_exclude=c.nodes_to_exclude, per_channel=c.per_channel,
            reduce_range=c.reduce_range, use_external_data_format=c.use_external_data_format,
            calibration_providers=c.calibration_providers, extra_options=c.extra_options)
    if isinstance(c, DynamicQuantConfig) or type(c).__name__ == "DynamicQuantConfig":
        return quantize_dynamic(
            model_input, model_output, weight_type=c.weight_type,
            op_types_to_quantize=c.op_types_to_quantize, nodes_to_quantize=c.nodes_to_quantize,
            nodes_to_exclude=c.nodes_to_exclude, per_channel=c.per_channel,
            reduce_range=c.reduce_range, use_external_data_format=c.use_external_data_format,
            extra_options=c.extra_options)
    raise TypeError("quant_config must be a StaticQuantConfig or a DynamicQuantConfig "
                    "(weight-only MatMulNBits quantization is not implemented in refrt)")
