"""Models quantized by onnxruntime's own tool run in refrt as in onnxruntime.

* a BERT-style encoder (``bert_encoder``) through ``quantize_dynamic`` with int8 and with uint8
  weights (DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul);
* the bundled digits CNN through ``quantize_static`` (MinMax calibration on the bundled
  calibration images) in QDQ and QOperator formats, per tensor and per channel (QLinearConv,
  QLinearMatMul / QGemm, QuantizeLinear / DequantizeLinear, com.microsoft QLinear* ops);
* the encoder through onnxruntime's transformer optimizer (Attention, EmbedLayerNormalization,
  SkipLayerNormalization, BiasGelu) and then ``quantize_dynamic`` (QAttention,
  QEmbedLayerNormalization, DynamicQuantizeMatMul-style MatMulInteger chains);
* a hand-built quantization-aware-training graph: float Conv / MatMul with QuantizeLinear ->
  DequantizeLinear pairs around weights and activations, run as it is.

Each must match onnxruntime with graph optimizations disabled within 1e-5 relative L2 error.
The figure against onnxruntime with all optimizations on (which fuses Q/DQ pairs and dynamic
quantization chains into other kernels, so roundings move) is printed, not asserted.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import refrt

from ort_helpers import ort_session, refrt_like_ort, refrt_like_ort_unoptimized

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")

DATA = refrt.__path__[0] + "/data"


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def compare(model_path, feeds, label):
    """refrt vs onnxruntime, both with optimizations off, and both at their default levels
    (refrt's against onnxruntime's ORT_ENABLE_ALL): returns both errors, prints the second."""
    model = onnx.load(str(model_path))
    ours = refrt_like_ort_unoptimized(model).run(None, feeds)
    theirs = ort_session(model).run(None, feeds)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    optimized = ort.InferenceSession(str(model_path), so,
                                     providers=["CPUExecutionProvider"]).run(None, feeds)
    err = max(rel_l2(a, b) for a, b in zip(ours, theirs))
    err_opt = max(rel_l2(a, b) for a, b in zip(refrt_like_ort(model).run(None, feeds), optimized))
    print(f"\n{label}: rel L2 vs onnxruntime (no optimizations) {err:.2e}, "
          f"vs onnxruntime (all optimizations) {err_opt:.2e}")
    return err, err_opt


def op_types(path):
    return {f"{n.domain or 'ai.onnx'}.{n.op_type}" for n in onnx.load(str(path)).graph.node}


# ---------------------------------------------------------------- BERT, dynamic

@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
def test_bert_encoder_quantize_dynamic(tmp_path, weight_type):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from refrt.testing.models import bert_encoder, bert_feeds
    src, dst = tmp_path / "bert.onnx", tmp_path / "bert_q.onnx"
    onnx.save(bert_encoder(layers=2, hidden=64, heads=4), src)
    quantize_dynamic(str(src), str(dst), weight_type=getattr(QuantType, weight_type))
    assert "ai.onnx.MatMulInteger" in op_types(dst)
    err, _ = compare(dst, bert_feeds(batch=2, seq=16), f"BERT dynamic {weight_type}")
    assert err < 1e-5


# ---------------------------------------------------------------- digits CNN, static

class _Calibration(quantization.CalibrationDataReader):
    def __init__(self, images, name):
        self.batches = iter([{name: images[i:i + 16]} for i in range(0, len(images), 16)])

    def get_next(self):
        return next(self.batches, None)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_digits_cnn_quantize_static(tmp_path, fmt, per_channel):
    from onnxruntime.quantization import QuantFormat, quantize_static
    data = np.load(f"{DATA}/digits_test.npz")
    src = f"{DATA}/digits_cnn.onnx"
    name = onnx.load(src).graph.input[0].name
    dst = tmp_path / f"digits_{fmt}_{per_channel}.onnx"
    quantize_static(src, str(dst), _Calibration(data["calib"], name),
                    quant_format=getattr(QuantFormat, fmt), per_channel=per_channel)
    ops = op_types(dst)
    assert ("ai.onnx.QLinearConv" in ops) == (fmt == "QOperator")
    err, _ = compare(dst, {name: data["x"][:64]}, f"digits CNN {fmt} per_channel={per_channel}")
    assert err < 1e-5


# ---------------------------------------------------------------- BERT, fused, then dynamic

def test_bert_encoder_fused_then_quantize_dynamic(tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    from refrt.testing.models import bert_encoder, bert_feeds

    from ort_helpers import exporter_patterns, ort_optimize_bert
    fused = ort_optimize_bert(exporter_patterns(bert_encoder(layers=2, hidden=64, heads=4)), tmp_path,
                      "bert")
    src, dst = tmp_path / "fused.onnx", tmp_path / "fused_q.onnx"
    onnx.save(fused, src)
    quantize_dynamic(str(src), str(dst),
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})
    ops = op_types(dst)
    assert {"com.microsoft.QAttention", "com.microsoft.QEmbedLayerNormalization"} <= ops, ops
    err, _ = compare(dst, bert_feeds(batch=3, seq=16), "BERT fused + dynamic")
    assert err < 1e-5


# ---------------------------------------------------------------- quantization-aware training

def _qdq(name, scale, zp, axis=None):
    """Q -> DQ nodes around tensor ``name`` (the pair a QAT export leaves in the graph)."""
    attrs = {} if axis is None else {"axis": axis}
    return ([helper.make_node("QuantizeLinear", [name, f"{name}.s", f"{name}.z"], [f"{name}.q"],
                              **attrs),
             helper.make_node("DequantizeLinear", [f"{name}.q", f"{name}.s", f"{name}.z"],
                              [f"{name}.dq"], **attrs)],
            [numpy_helper.from_array(np.asarray(scale, np.float32), f"{name}.s"),
             numpy_helper.from_array(np.asarray(zp), f"{name}.z")])


def test_qat_qdq_graph_runs_as_is():
    rng = np.random.default_rng(5)
    w1 = (rng.standard_normal((8, 1, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((8 * 8 * 8, 10)) * 0.05).astype(np.float32)
    pairs = {name: _qdq(name, scale, zp, axis) for name, scale, zp, axis in [
        ("x", 1 / 128, np.uint8(128), None),
        ("w1", np.abs(w1).reshape(8, -1).max(axis=1) / 127, np.zeros(8, np.int8), 0),
        ("r1", 4 / 255, np.uint8(0), None),
        ("w2", np.abs(w2).max() / 127, np.int8(0), None)]}
    nodes = (pairs["x"][0] + pairs["w1"][0] + pairs["w2"][0]
             + [helper.make_node("Conv", ["x.dq", "w1.dq"], ["c1"], pads=[1, 1, 1, 1]),
                helper.make_node("Relu", ["c1"], ["r1"])] + pairs["r1"][0]
             + [helper.make_node("Reshape", ["r1.dq", "shape"], ["flat"]),
                helper.make_node("MatMul", ["flat", "w2.dq"], ["y"])])
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array([-1, 8 * 8 * 8], np.int64), "shape")]
    inits += [t for _, extra in pairs.values() for t in extra]
    graph = helper.make_graph(nodes, "qat", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 1, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    x = np.load(f"{DATA}/digits_test.npz")["x"][:32]
    ours = refrt_like_ort_unoptimized(model).run(None, {"x": x})[0]
    theirs = ort_session(model).run(None, {"x": x})[0]
    err = rel_l2(ours, theirs)
    print(f"\nQAT Q/DQ graph: rel L2 vs onnxruntime (no optimizations) {err:.2e}")
    assert err < 1e-5
