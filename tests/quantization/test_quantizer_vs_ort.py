"""refrt.quantization against onnxruntime.quantization, on the bundled digits CNN and a BERT-style
encoder, dynamic and static (QDQ and QOperator), per tensor and per channel.

* Given the same calibrated ranges (onnxruntime writes its calibration cache, refrt reads it), the
  two tools write the same model: same nodes in the same order (op type, name, inputs, outputs,
  domain, attributes), same opsets, same initializers byte for byte (scales, zero points,
  quantized weights, int32 biases).
* With the float model run in onnxruntime during calibration (``CalibRuntime``), refrt's
  MinMax, Percentile and Entropy ranges are bit-identical to onnxruntime's calibrators, and the
  whole ``quantize_static`` pipeline writes the same bytes.
* With the float model run in refrt (the default), ranges differ only where refrt's float
  kernels differ from onnxruntime's in the last bits (MinMax within a few ULP; Percentile and
  Entropy within one histogram bin).
* The quantized models run in onnxruntime, and in refrt where it has the operators (refrt checks
  skip, naming the operator, while refrt raises UnsupportedOpError for it).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

import refrt
import refrt.quantization as rq
from refrt.testing.models import bert_encoder, bert_feeds

from ort_helpers import refrt_like_ort_unoptimized

ort = pytest.importorskip("onnxruntime")
oq = pytest.importorskip("onnxruntime.quantization")


class Reader:
    """The plainest calibration reader: anything with get_next()."""

    def __init__(self, feeds):
        self._it = iter(list(feeds))

    def get_next(self):
        return next(self._it, None)


@pytest.fixture(scope="module", autouse=True)
def quiet():
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    logging.disable(logging.NOTSET)


def _digits():
    import os
    here = os.path.join(os.path.dirname(refrt.__file__), "data")
    model = onnx.load(os.path.join(here, "digits_cnn.onnx"))
    data = np.load(os.path.join(here, "digits_test.npz"))
    calib = [{"input": data["calib"][i:i + 16]} for i in range(0, 64, 16)]
    return model, calib, {"input": data["x"][:64]}


def _bert():
    return bert_encoder(), [bert_feeds(seed=s) for s in range(3)], bert_feeds(seed=7)


MODELS = {"digits": _digits(), "bert": _bert()}


def ort_quantize_static(model, path, feeds, **kwargs):
    """onnxruntime's quantize_static (it rewrites the ModelProto it is given: pass a copy)."""
    with contextlib.redirect_stdout(io.StringIO()):
        oq.quantize_static(copy.deepcopy(model), str(path), Reader(feeds), **kwargs)


def assert_same_model(path_ort, path_refrt):
    a, b = onnx.load(str(path_ort)), onnx.load(str(path_refrt))

    def nodes(m):
        return [(n.op_type, n.name, list(n.input), list(n.output), n.domain,
                 sorted((x.name, repr(onnx.helper.get_attribute_value(x))) for x in n.attribute))
                for n in m.graph.node]

    na, nb = nodes(a), nodes(b)
    for i, (x, y) in enumerate(zip(na, nb)):
        assert x == y, f"node {i} differs:\n  onnxruntime {x}\n  refrt       {y}"
    assert len(na) == len(nb), f"{len(na)} nodes from onnxruntime, {len(nb)} from refrt"
    assert [(o.domain, o.version) for o in a.opset_import] == \
        [(o.domain, o.version) for o in b.opset_import]
    ia = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    ib = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert set(ia) == set(ib), (sorted(set(ia) - set(ib)), sorted(set(ib) - set(ia)))
    for name in ia:
        x, y = ia[name], ib[name]
        assert (x.dtype, x.shape) == (y.dtype, y.shape), name
        assert x.tobytes() == y.tobytes(), f"initializer {name} differs: {x} vs {y}"
    assert [o.name for o in a.graph.output] == [o.name for o in b.graph.output]


# ---------------------------------------------------------------- same ranges -> same model

@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_model_of_an_optimized_transformer_is_identical(tmp_path, per_channel):
    """refrt's optimizer, then each tool's quantize_dynamic with DefaultTensorType (the types of
    com.microsoft ops' outputs are unknown to shape inference): QAttention and
    QEmbedLayerNormalization, the same model from both."""
    from ort_helpers import exporter_patterns

    fused = refrt.optimize_model(exporter_patterns(bert_encoder()), model_type="bert",
                                 num_heads=4, hidden_size=64).model
    extra = {"DefaultTensorType": T.FLOAT}
    oq.quantize_dynamic(copy.deepcopy(fused), str(tmp_path / "ort.onnx"), per_channel=per_channel,
                        extra_options=extra)
    rq.quantize_dynamic(fused, tmp_path / "refrt.onnx", per_channel=per_channel,
                        extra_options=extra)
    assert_same_model(tmp_path / "ort.onnx", tmp_path / "refrt.onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "refrt.onnx")).graph.node}
    assert {"QAttention", "QEmbedLayerNormalization"} <= ops
    with pytest.raises(RuntimeError, match="DefaultTensorType"):
        rq.quantize_dynamic(fused, tmp_path / "no_default.onnx")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_model_is_identical(tmp_path, name, per_channel):
    model = MODELS[name][0]
    oq.quantize_dynamic(copy.deepcopy(model), str(tmp_path / "ort.onnx"), per_channel=per_channel)
    rq.quantize_dynamic(model, tmp_path / "refrt.onnx", per_channel=per_channel)
    assert_same_model(tmp_path / "ort.onnx", tmp_path / "refrt.onnx")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("activation", ["QInt8", "QUInt8"])
def test_static_model_is_identical_given_the_same_ranges(tmp_path, name, fmt, per_channel,
                                                         activation):
    model, calib, _ = MODELS[name]
    cache = tmp_path / "ranges.json"
    ort_quantize_static(model, tmp_path / "ort.onnx", calib,
                        quant_format=getattr(oq.QuantFormat, fmt), per_channel=per_channel,
                        activation_type=getattr(oq.QuantType, activation),
                        calibration_cache_path=str(cache))
    assert cache.exists()
    rq.quantize_static(model, tmp_path / "refrt.onnx", None, quant_format=fmt,
                       per_channel=per_channel, activation_type=activation,
                       calibration_cache_path=cache)
    assert_same_model(tmp_path / "ort.onnx", tmp_path / "refrt.onnx")


@pytest.mark.parametrize("name,fmt,method", [
    ("digits", "QDQ", "MinMax"), ("digits", "QDQ", "Percentile"), ("digits", "QDQ", "Entropy"),
    ("digits", "QOperator", "Percentile"), ("bert", "QDQ", "MinMax"),
    ("bert", "QOperator", "Percentile")])
def test_whole_pipeline_is_identical_with_onnxruntime_running_the_float_model(tmp_path, name,
                                                                              fmt, method):
    model, calib, _ = MODELS[name]
    ort_quantize_static(model, tmp_path / "ort.onnx", calib,
                        quant_format=getattr(oq.QuantFormat, fmt),
                        calibrate_method=getattr(oq.CalibrationMethod, method))
    rq.quantize_static(model, tmp_path / "refrt.onnx", Reader(calib), quant_format=fmt,
                       calibrate_method=method, extra_options={"CalibRuntime": "onnxruntime"})
    assert_same_model(tmp_path / "ort.onnx", tmp_path / "refrt.onnx")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("option", [
    {"extra_options": {"ForceQuantizeNoInputCheck": True}},
    {"extra_options": {"OpTypesToExcludeOutputQuantization": ["Conv", "MatMul", "Gemm"]}},
    {"extra_options": {"ActivationSymmetric": True, "WeightSymmetric": False}},
    {"extra_options": {"MatMulConstBOnly": True}, "reduce_range": True},
    {"nodes_to_exclude": ["conv2", "layer0.qk", "layer1.softmax"]},
    {"op_types_to_quantize": ["Conv", "MatMul", "Gemm"]},
    {"activation_type": "QUInt16", "weight_type": "QInt16"},
])
def test_options_give_the_same_model(tmp_path, name, option):
    model, calib, _ = MODELS[name]
    cache = tmp_path / "ranges.json"
    ort_kwargs = {k: (getattr(oq.QuantType, v) if k.endswith("_type") else v)
                  for k, v in option.items()}
    ort_quantize_static(model, tmp_path / "ort.onnx", calib, calibration_cache_path=str(cache),
                        **ort_kwargs)
    rq.quantize_static(model, tmp_path / "refrt.onnx", None, calibration_cache_path=cache,
                       **option)
    assert_same_model(tmp_path / "ort.onnx", tmp_path / "refrt.onnx")


def test_tensor_overrides_give_the_same_model(tmp_path):
    model, calib, _ = MODELS["bert"]
    overrides = {"layer0.query.bias_add_out": [{"quant_type": oq.QuantType.QUInt16,
                                                "symmetric": True}],
                 "layer0.key.weight_22": [{"axis": 1, "symmetric": False}],
                 "layer1.softmax_out": [{"scale": np.array(1 / 255, np.float32),
                                         "zero_point": np.array(-128, np.int8)}]}
    cache = tmp_path / "ranges.json"
    ort_quantize_static(model, tmp_path / "ort.onnx", calib, calibration_cache_path=str(cache),
                        extra_options={"TensorQuantOverrides": copy.deepcopy(overrides)})
    rq.quantize_static(model, tmp_path / "refrt.onnx", None, calibration_cache_path=cache,
                       extra_options={"TensorQuantOverrides": overrides})
    assert_same_model(tmp_path / "ort.onnx", tmp_path / "refrt.onnx")


# ---------------------------------------------------------------- every registry op type

def zoo_model(seed=0):
    """One model touching every op type of onnxruntime's quantization registries (but the
    com.microsoft fused ones)."""
    rng = np.random.default_rng(seed)
    f = lambda a, n: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    i = lambda a, n: numpy_helper.from_array(np.asarray(a, np.int64), n)  # noqa: E731
    inits = [f(rng.standard_normal((4, 4, 3, 3)) * 0.3, "w"), f(rng.standard_normal(4) * 0.1, "b"),
             f(rng.standard_normal((4, 2, 2, 2)) * 0.3, "wt"),
             f([-0.5], "lo"), f([0.8], "hi"), i([0, 0, 1, 1, 0, 0, 1, 1], "pads"), f(0.0, "zero"),
             f(1.5, "padval"), f([], "roi"), f([1, 1, 2, 2], "scales"), i([2, 2], "split"),
             i([2, 3], "axes23"), i([0, 0], "starts"), i([2, 3], "ends"), i([2, 3], "slice_axes"),
             i([2], "k"), i([[1, 0, 3, 2]], "gidx"), i(1, "one"),
             f(rng.random(4) + 0.5, "gamma"), f(rng.standard_normal(4) * 0.1, "beta"),
             f(rng.standard_normal(4) * 0.1, "mean"), f(rng.random(4) + 0.5, "var"),
             f(rng.standard_normal((4, 6)) * 0.5, "wm"), f(rng.standard_normal(6) * 0.1, "bm"),
             f(rng.standard_normal((6, 3)) * 0.5, "wg"), f(rng.standard_normal(3) * 0.1, "bg"),
             f(0.25, "quarter")]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        n("ConvTranspose", ["c", "wt"], ["ct"], name="convt", strides=[2, 2]),
        n("AveragePool", ["c"], ["ap"], name="avgpool", kernel_shape=[2, 2], strides=[2, 2]),
        n("MaxPool", ["c"], ["mp"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        n("GlobalAveragePool", ["c"], ["gap"], name="gap"),
        n("LeakyRelu", ["c"], ["lr"], name="leaky", alpha=0.1),
        n("Sigmoid", ["lr"], ["sg"], name="sigmoid"),
        n("Clip", ["sg", "lo", "hi"], ["cl"], name="clip"),
        n("Pad", ["cl", "pads", "zero"], ["pz"], name="pad_zero"),
        n("Pad", ["cl", "pads", "padval"], ["pv"], name="pad_value"),
        n("Pad", ["c", "pads"], ["pr"], name="pad_reflect", mode="reflect"),
        n("Resize", ["c", "roi", "scales"], ["rs"], name="resize", mode="nearest"),
        n("Split", ["c", "split"], ["s0", "s1"], name="split", axis=1),
        n("Concat", ["s1", "s0"], ["cc"], name="concat", axis=1),
        n("Squeeze", ["gap", "axes23"], ["sq"], name="squeeze"),
        n("ArgMax", ["sq"], ["am"], name="argmax", axis=1),
        n("Slice", ["c", "starts", "ends", "slice_axes"], ["sl"], name="slice"),
        n("TopK", ["sq", "k"], ["tk", "tki"], name="topk"),
        n("GatherElements", ["sq", "gidx"], ["ge"], name="gather_elements", axis=1),
        n("CumSum", ["sq", "one"], ["cs"], name="cumsum"),
        n("InstanceNormalization", ["c", "gamma", "beta"], ["inorm"], name="inorm"),
        n("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
        n("Greater", ["sq", "ge"], ["cond"], name="greater"),
        n("Where", ["cond", "sq", "cs"], ["wh"], name="where"),
        n("Unsqueeze", ["wh", "one"], ["wu"], name="unsqueeze"),
        n("Flatten", ["wu"], ["fl"], name="flatten"),
        n("MatMul", ["fl", "wm"], ["mm"], name="matmul"),
        n("Add", ["mm", "bm"], ["ma"], name="add"),
        n("Mul", ["ma", "quarter"], ["mu"], name="mul"),
        n("Relu", ["mu"], ["re"], name="relu"),
        n("Gemm", ["re", "wg", "bg"], ["gm"], name="gemm"),
        n("Softmax", ["gm"], ["sm"], name="softmax", axis=-1),
        n("Transpose", ["pz"], ["tp"], name="transpose", perm=[0, 2, 3, 1]),
        n("Reshape", ["tp", "rshape"], ["rr"], name="reshape"),
    ]
    inits.append(i([1, -1], "rshape"))
    outs = ["ct", "ap", "mp", "pv", "pr", "rs", "cc", "am", "sl", "tk", "inorm", "bn", "sm", "rr"]
    g = helper.make_graph(nodes, "zoo", [helper.make_tensor_value_info("x", T.FLOAT, [1, 4, 6, 6])],
                          [helper.make_tensor_value_info(o, T.INT64 if o == "am" else T.FLOAT, None)
                           for o in outs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    feeds = [{"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)} for _ in range(3)]
    return m, feeds


@pytest.mark.parametrize("mode", ["dynamic", "QDQ", "QOperator"])
@pytest.mark.parametrize("extra", [{}, {"ForceQuantizeNoInputCheck": True},
                                   {"ActivationSymmetric": True},
                                   {"OpTypesToExcludeOutputQuantization": ["Conv", "Add"]}])
def test_every_registry_op_type_gives_the_same_model(tmp_path, mode, extra):
    model, calib = zoo_model()
    for per_channel in (False, True):
        if mode == "dynamic":
            oq.quantize_dynamic(copy.deepcopy(model), str(tmp_path / "ort.onnx"),
                                per_channel=per_channel, extra_options=dict(extra))
            rq.quantize_dynamic(model, tmp_path / "refrt.onnx", per_channel=per_channel,
                                extra_options=extra)
        else:
            cache = tmp_path / f"ranges{per_channel}.json"
            ort_quantize_static(model, tmp_path / "ort.onnx", calib,
                                quant_format=getattr(oq.QuantFormat, mode),
                                per_channel=per_channel, extra_options=dict(extra),
                                activation_type=oq.QuantType.QUInt8,
                                calibration_cache_path=str(cache))
            rq.quantize_static(model, tmp_path / "refrt.onnx", None, quant_format=mode,
                               per_channel=per_channel, extra_options=extra,
                               activation_type="QUInt8", calibration_cache_path=cache)
        assert_same_model(tmp_path / "ort.onnx", tmp_path / "refrt.onnx")


# ---------------------------------------------------------------- calibrators

CALIBRATIONS = [("MinMax", {}), ("MinMax", {"moving_average": True}),
                ("MinMax", {"symmetric": True}), ("Percentile", {}),
                ("Percentile", {"symmetric": False}), ("Entropy", {}),
                ("Entropy", {"num_bins": 256, "num_quantized_bins": 64})]


def _ort_ranges(tmp_path, model, calib, method, extra):
    from onnxruntime.quantization.calibrate import create_calibrator
    path = tmp_path / "float.onnx"
    onnx.save(model, str(path))
    with contextlib.redirect_stdout(io.StringIO()):
        c = create_calibrator(str(path), list(rq.STATIC_OP_TYPES),
                              augmented_model_path=str(tmp_path / "augmented.onnx"),
                              calibrate_method=getattr(oq.CalibrationMethod, method),
                              extra_options=dict(extra))
        c.collect_data(Reader(calib))
        return c.compute_data()


def _refrt_ranges(model, calib, method, extra, runtime):
    c = rq.create_calibrator(model, list(rq.STATIC_OP_TYPES), calibrate_method=method,
                             extra_options=extra, runtime=runtime)
    c.collect_data(Reader(calib))
    return c.compute_data()


def _pairs(ranges):
    return {k: np.array([np.asarray(v.lowest).item(), np.asarray(v.highest).item()],
                        np.float32) for k, v in ranges.items()}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method,extra", CALIBRATIONS)
def test_calibration_is_bit_identical_on_the_same_activations(tmp_path, name, method, extra):
    model, calib, _ = MODELS[name]
    theirs = _pairs(_ort_ranges(tmp_path, model, calib, method, extra))
    ours = _pairs(_refrt_ranges(model, calib, method, extra, "onnxruntime"))
    assert set(theirs) == set(ours)
    differ = [k for k in theirs if theirs[k].tobytes() != ours[k].tobytes()]
    assert not differ, {k: (theirs[k], ours[k]) for k in differ[:3]}


@pytest.mark.parametrize("method,extra", CALIBRATIONS[1:2] + CALIBRATIONS[3:5] + CALIBRATIONS[6:])
def test_chunks_merge_like_onnxruntime(tmp_path, method, extra):
    """Several collect_data calls whose ranges grow and shrink: histograms widen and ranges
    merge exactly as in onnxruntime."""
    from onnxruntime.quantization.calibrate import create_calibrator
    model, calib, _ = MODELS["digits"]
    chunks = [[{"input": calib[0]["input"][:8] * s}] for s in (1.0, 0.5, 3.0, 0.1, 6.0)]
    path = tmp_path / "float.onnx"
    onnx.save(model, str(path))
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = create_calibrator(str(path), list(rq.STATIC_OP_TYPES),
                                   augmented_model_path=str(tmp_path / "augmented.onnx"),
                                   calibrate_method=getattr(oq.CalibrationMethod, method),
                                   extra_options=dict(extra))
        for chunk in chunks:
            theirs.collect_data(Reader(chunk))
        theirs = _pairs(theirs.compute_data())
    ours = rq.create_calibrator(model, list(rq.STATIC_OP_TYPES), calibrate_method=method,
                                extra_options=extra, runtime="onnxruntime")
    for chunk in chunks:
        ours.collect_data(Reader(chunk))
    ours = _pairs(ours.compute_data())
    assert set(theirs) == set(ours)
    assert all(theirs[k].tobytes() == ours[k].tobytes() for k in theirs), \
        {k: (theirs[k], ours[k]) for k in theirs if theirs[k].tobytes() != ours[k].tobytes()}


MLAS_ONLY = pytest.mark.skipif(
    not {"avx2", "fma"} <= __import__("refrt.kernels.cpu", fromlist=["features"]).features()[1],
    reason="refrt's \"ort\" numerics reproduce onnxruntime's MLAS AVX2/AVX-512 float kernels; "
           "without AVX2 and FMA onnxruntime runs other code (within float32 rounding)")


@MLAS_ONLY
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method,extra", [CALIBRATIONS[0], CALIBRATIONS[3],
                                          CALIBRATIONS[6]])
def test_calibration_in_refrt_gives_onnxruntimes_ranges_bit_for_bit(tmp_path, name, method, extra):
    # refrt runs the float model itself; its "ort" numerics give onnxruntime's bits for every
    # op of these models, so the ranges (and the histograms behind them) are the same
    model, calib, _ = MODELS[name]
    theirs = _pairs(_ort_ranges(tmp_path, model, calib, method, extra))
    ours = _pairs(_refrt_ranges(model, calib, method, extra, "refrt"))
    assert set(theirs) == set(ours)
    assert all(theirs[k].tobytes() == ours[k].tobytes() for k in theirs), \
        {k: (theirs[k], ours[k]) for k in theirs if theirs[k].tobytes() != ours[k].tobytes()}


@MLAS_ONLY
def test_calibration_of_a_conv_net_in_refrt_gives_onnxruntimes_ranges(tmp_path):
    from refrt.testing.models import mobilenet_like
    rng = np.random.default_rng(0)
    model = mobilenet_like()
    calib = [{"image": rng.standard_normal((2, 3, 64, 64)).astype(np.float32)} for _ in range(3)]
    method, extra = CALIBRATIONS[0]
    theirs = _pairs(_ort_ranges(tmp_path, model, calib, method, extra))
    ours = _pairs(_refrt_ranges(model, calib, method, extra, "refrt"))
    differ = {k for k in theirs if theirs[k].tobytes() != ours[k].tobytes()}
    # the one exception: "center_out" comes from a ReduceMean over the channel axis (keeping axes
    # on both sides), whose order in onnxruntime is not reproduced (docs/NUMERICS.md)
    assert len(theirs) > 40 and differ <= {"center_out"}, differ
    for k in differ:
        ulp = np.abs(theirs[k].view(np.int32).astype(np.int64) - ours[k].view(np.int32).astype(np.int64))
        assert ulp.max() <= 8, (k, theirs[k], ours[k])


def test_refrt_calibration_gives_the_same_weights_and_nearly_the_same_scales(tmp_path):
    model, calib, _ = MODELS["bert"]
    ort_quantize_static(model, tmp_path / "ort.onnx", calib)
    rq.quantize_static(model, tmp_path / "refrt.onnx", Reader(calib))
    a, b = onnx.load(str(tmp_path / "ort.onnx")), onnx.load(str(tmp_path / "refrt.onnx"))
    assert [(n.op_type, n.name) for n in a.graph.node] == \
        [(n.op_type, n.name) for n in b.graph.node]
    ia = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    ib = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert set(ia) == set(ib)
    weights = [k for k in ia if k.endswith("_quantized") and ia[k].dtype == np.int8]
    assert weights and all(np.array_equal(ia[k], ib[k]) for k in weights)
    scales = [k for k in ia if k.endswith("_scale")]
    for k in scales:
        np.testing.assert_allclose(ib[k], ia[k], rtol=1e-5, err_msg=k)
    if {"avx2", "fma"} <= __import__("refrt.kernels.cpu", fromlist=["features"]).features()[1]:
        # with onnxruntime's float bits in refrt's "ort" numerics, byte for byte
        assert all(ia[k].tobytes() == ib[k].tobytes() for k in scales)


# ---------------------------------------------------------------- the quantized models run

def _ort_run(path, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None,
                                                                                      feeds)


def _refrt_run(path, feeds):
    try:     # as _ort_run: no optimizations
        return refrt_like_ort_unoptimized(str(path)).run(None, feeds)
    except refrt.errors.UnsupportedOpError as e:
        pytest.skip(f"refrt cannot run {e.domain}.{e.op_type} yet (the quantized model needs it)")


def _output_step(path) -> float:
    """The scale of the DequantizeLinear the graph output comes from (0 if it is float)."""
    m = onnx.load(str(path))
    producer = {o: n for n in m.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    node = producer.get(m.graph.output[0].name)
    while node is not None and node.op_type in ("Identity", "Reshape", "Flatten"):
        node = producer.get(node.input[0])
    if node is not None and node.op_type == "DequantizeLinear":
        return float(np.max(inits[node.input[1]]))
    return 0.0


def _quantized(tmp_path, name, mode, per_channel):
    model, calib, test = MODELS[name]
    path = tmp_path / f"{name}.{mode}.onnx"
    if mode == "dynamic":
        rq.quantize_dynamic(model, path, per_channel=per_channel)
    else:
        rq.quantize_static(model, path, Reader(calib), quant_format=mode,
                           per_channel=per_channel, activation_type="QUInt8")
    return path, test


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode", ["dynamic", "QDQ", "QOperator"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_onnxruntime_runs_refrt_models_like_its_own(tmp_path, name, mode, per_channel):
    path, test = _quantized(tmp_path, name, mode, per_channel)
    model, calib, _ = MODELS[name]
    theirs = tmp_path / "ort.onnx"
    if mode == "dynamic":
        oq.quantize_dynamic(copy.deepcopy(model), str(theirs), per_channel=per_channel)
    else:
        ort_quantize_static(model, theirs, calib, quant_format=getattr(oq.QuantFormat, mode),
                            per_channel=per_channel, activation_type=oq.QuantType.QUInt8)
    ours_out, theirs_out = _ort_run(path, test)[0], _ort_run(theirs, test)[0]
    step = max(_output_step(path), _output_step(theirs))
    # the two models differ only in scales a few ULP apart (refrt ran the float model)
    np.testing.assert_allclose(ours_out, theirs_out, rtol=1e-4, atol=1e-4 + step)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode", ["dynamic", "QDQ", "QOperator"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_refrt_runs_the_quantized_models_like_onnxruntime(tmp_path, name, mode, per_channel):
    path, test = _quantized(tmp_path, name, mode, per_channel)
    expected = _ort_run(path, test)[0]
    got = _refrt_run(path, test)[0]
    assert got.shape == expected.shape and got.dtype == expected.dtype
    step = _output_step(path)
    atol = step if step else 1e-5 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
    if name == "digits":
        assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.98
