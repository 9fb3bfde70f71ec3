"""onnxruntime's QDQ fusions (refrt/optimize/qdq.py) against onnxruntime itself.

Each rule is tested on the unfused pattern it replaces: the ops refrt's rewrite leaves must be
the ops onnxruntime's own optimized graph (``optimized_model_filepath`` at ORT_ENABLE_EXTENDED)
holds, and refrt's outputs must equal onnxruntime's at that level bit for bit. Whole models
quantized by onnxruntime's ``quantize_static`` (QDQ) are checked the same way at the default
level, where the fusions change results against ORT_DISABLE_ALL."""

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import refrt
from refrt.optimize.qdq import fuse_qdq
from refrt.testing import models

from ort_helpers import refrt_like_ort

ort = pytest.importorskip("onnxruntime")
Q, DQ = "QuantizeLinear", "DequantizeLinear"
NP = {T.UINT8: np.uint8, T.INT8: np.int8, T.INT32: np.int32}


def ort_run(model, feeds, level, save=None):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    if save:
        so.optimized_model_filepath = str(save)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def op_counts(model, skip=()):
    """Op types and their counts. onnxruntime's float FusedConv (its ConvActivationFusion, not a
    QDQ rewrite; the same values for Relu) counts as the Conv and activation it fused."""
    counts = Counter()
    for n in model.graph.node:
        if n.op_type in skip:
            continue
        if n.op_type == "FusedConv":
            act = next(a.s.decode() for a in n.attribute if a.name == "activation")
            counts.update(["Conv", act])
            continue
        counts[(n.domain + "." if n.domain not in ("", "ai.onnx") else "") + n.op_type] += 1
    return counts


class Builder:
    """A small QDQ graph: float inputs quantized, units of DQ -> op -> Q, results dequantized."""

    def __init__(self, qtype=T.UINT8):
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self.qtype, self.n = qtype, 0

    def name(self, base):
        self.n += 1
        return f"{base}{self.n}"

    def const(self, value, base="c"):
        name = self.name(base)
        self.inits.append(nh.from_array(np.asarray(value), name))
        return name

    def qparams(self, scale, zp, qtype=None):
        qtype = qtype or self.qtype
        return self.const(np.float32(scale), "s"), self.const(NP[qtype](zp), "zp")

    def q(self, x, scale=0.05, zp=None, qtype=None):
        qtype = qtype or self.qtype
        zp = (128 if qtype == T.UINT8 else 0) if zp is None else zp
        s, z = self.qparams(scale, zp, qtype)
        out = self.name("q")
        self.nodes.append(h.make_node(Q, [x, s, z], [out], name=out))
        return out, (s, z)

    def dq(self, xq, params):
        out = self.name("dq")
        self.nodes.append(h.make_node(DQ, [xq, *params], [out], name=out))
        return out

    def qdq(self, x, scale=0.05, zp=None, qtype=None):
        return self.dq(*self.q(x, scale, zp, qtype))

    def weight(self, shape, qtype=T.INT8, seed=0, axis=None):
        rng = np.random.default_rng(seed)
        lo, hi = (-127, 127) if qtype == T.INT8 else (0, 255)
        w = self.const(rng.integers(lo, hi + 1, shape).astype(NP[qtype]), "w")
        zp = self.const(NP[qtype](0 if qtype == T.INT8 else 128), "wzp")
        out = self.name("wdq")
        self.nodes.append(h.make_node(DQ, [w, self.const(np.float32(0.02), "ws"), zp], [out],
                                      name=out))
        return out

    def input(self, shape):
        name = self.name("x")
        self.inputs.append(h.make_tensor_value_info(name, T.FLOAT, shape))
        return name

    def op(self, op_type, inputs, n_out=1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(h.make_node(op_type, inputs, outs, name=outs[0], **attrs))
        return outs if n_out > 1 else outs[0]

    def output(self, x):
        self.outputs.append(h.make_tensor_value_info(x, T.FLOAT, None))

    def model(self, opset=17):
        g = h.make_graph(self.nodes, "qdq", self.inputs, self.outputs, self.inits)
        return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def feeds_for(model, seed=0, n=3):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = {}
        for vi in model.graph.input:
            shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            f[vi.name] = (rng.standard_normal(shape) * 2).astype(np.float32)
        out.append(f)
    return out


def check_against_ort(model, tmp_path, expect=None, feeds=None):
    """refrt's rewrite leaves onnxruntime's ops and gives its outputs, bit for bit. Returns the
    op counts of the rewritten graph."""
    feeds = feeds or feeds_for(model)
    saved = tmp_path / "ort_extended.onnx"
    ort_run(model, feeds[0], ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, saved)
    theirs = op_counts(onnx.load(saved))
    ours = op_counts(fuse_qdq(model).model)
    assert ours == theirs
    if expect is not None:
        for op, count in expect.items():
            assert ours[op] == count, (op, ours)
    # refrt_like_ort: where this CPU's onnxruntime saturates its u8 x s8 products, refrt does too
    sess = refrt_like_ort(model)
    plain = refrt_like_ort(model, graph_optimization_level=0)
    for f in feeds:
        want = ort_run(model, f, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        for got, exp in zip(sess.run(None, f), want):
            np.testing.assert_array_equal(got, exp)
        off = ort_run(model, f, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        for got, exp in zip(plain.run(None, f), off):
            np.testing.assert_array_equal(got, exp)
    return ours


# ---- one rule at a time ----------------------------------------------------------------------

def unary_case(op_type, **attrs):
    def build(b):
        x = b.qdq(b.input([1, 3, 8, 8]))
        return b.qdq(b.op(op_type, [x], **attrs), scale=0.02)
    return build


def binary_case(op_type):
    def build(b):
        x, y = b.qdq(b.input([2, 16])), b.qdq(b.input([2, 16]), scale=0.04)
        return b.qdq(b.op(op_type, [x, y]), scale=0.08)
    return build


def conv_case(bias=True, relu=False, q_zp=None, clip=None, q_scale=0.1):
    def build(b):
        x = b.qdq(b.input([1, 4, 9, 9]))
        w = b.weight([6, 4, 3, 3])
        ins = [x, w]
        if bias:
            bq = b.const(np.arange(-3, 3, dtype=np.int32) * 40, "bias")
            ins.append(b.dq(bq, (b.const(np.float32(0.05 * 0.02), "bs"), b.const(np.int32(0), "bz"))))
        y = b.op("Conv", ins, pads=[1, 1, 1, 1])
        if relu:
            y = b.op("Relu", [y])
        if clip is not None:
            y = b.op("Clip", [y, *(b.const(np.float32(v)) if v is not None else "" for v in clip)])
        return b.qdq(y, scale=q_scale, zp=q_zp)
    return build


def identity_case(b):
    """Identity nodes: one between a DQ and the Conv it feeds, one giving the graph output."""
    x = b.op("Identity", [b.qdq(b.input([1, 3, 6, 6]))])
    y = b.qdq(b.op("Conv", [x, b.weight([2, 3, 1, 1])]), scale=0.1)
    return b.op("Identity", [b.op("Relu", [y])])


def matmul_case(with_q=True):
    def build(b):
        x = b.qdq(b.input([3, 16]))
        y = b.op("MatMul", [x, b.weight([16, 8])])
        return b.qdq(y, scale=0.2) if with_q else y
    return build


def gemm_case(with_q=True, bias=True):
    def build(b):
        x = b.qdq(b.input([3, 16]))
        ins = [x, b.weight([8, 16])]
        if bias:
            bq = b.const(np.arange(8, dtype=np.int32) * 30 - 100, "bias")
            ins.append(b.dq(bq, (b.const(np.float32(0.05 * 0.02), "bs"), b.const(np.int32(0), "bz"))))
        y = b.op("Gemm", ins, transB=1)
        return b.qdq(y, scale=0.2) if with_q else y
    return build


def drop_case(op_type, scale=0.05, **attrs):
    def build(b):
        x = b.input([1, 2, 6, 6])
        xq, params = b.q(x, scale=scale)
        extra = []
        if op_type == "Reshape":
            extra = [b.const(np.array([1, 2, 36], np.int64))]
        y = b.op(op_type, [b.dq(xq, params), *extra], **attrs)
        s, z = params
        out = b.name("q")
        b.nodes.append(h.make_node(Q, [y, s, z], [out], name=out))
        return b.dq(out, params)
    return build


def split_case(b):
    x = b.input([2, 6])
    xq, params = b.q(x)
    parts = b.op("Split", [b.dq(xq, params), b.const(np.array([2, 4], np.int64))], n_out=2, axis=1)
    outs = []
    for p in parts:
        out = b.name("q")
        b.nodes.append(h.make_node(Q, [p, *params], [out], name=out))
        outs.append(b.dq(out, params))
    return b.op("Concat", outs, axis=1)


def concat_case(b):
    xs = [b.qdq(b.input([2, 3]), scale=s) for s in (0.05, 0.07, 0.03)]
    return b.qdq(b.op("Concat", xs, axis=1), scale=0.06)


def where_case(b):
    c = b.input([2, 5])
    cond = b.op("Greater", [c, b.const(np.float32(0))])
    x, y = b.qdq(b.input([2, 5])), b.qdq(b.input([2, 5]), scale=0.03)
    return b.qdq(b.op("Where", [cond, x, y]), scale=0.05)


def argmax_case(b):
    return b.op("Cast", [b.op("ArgMax", [b.qdq(b.input([3, 7]))], axis=1)], to=T.FLOAT)


CASES = {
    "Conv+bias": (conv_case(), {"QLinearConv": 1}),
    "Conv no bias": (conv_case(bias=False), {"QLinearConv": 1}),
    "Conv Relu redundant": (conv_case(relu=True, q_zp=0), {"QLinearConv": 1, "Relu": 0}),
    "Conv Relu kept": (conv_case(relu=True, q_zp=100), {"QLinearConv": 0, "Relu": 1}),
    "Conv Clip redundant": (conv_case(clip=(0, 6), q_zp=0, q_scale=6 / 255),
                            {"QLinearConv": 1, "Clip": 0}),
    "Conv Clip narrower kept": (conv_case(clip=(0, 3), q_zp=0, q_scale=6 / 255),
                                {"QLinearConv": 0, "Clip": 1}),
    "Conv Clip unbounded above": (conv_case(clip=(0, None), q_zp=0), {"QLinearConv": 1, "Clip": 0}),
    "Identity removed": (identity_case, {"QLinearConv": 1, "Identity": 0}),
    "MatMul -> Q": (matmul_case(), {"QLinearMatMul": 1}),
    "MatMul float out": (matmul_case(with_q=False), {"com.microsoft.MatMulIntegerToFloat": 1}),
    "Gemm -> Q": (gemm_case(), {"com.microsoft.QGemm": 1}),
    "Gemm float out": (gemm_case(with_q=False, bias=False), {"com.microsoft.QGemm": 1}),
    "Add": (binary_case("Add"), {"com.microsoft.QLinearAdd": 1}),
    "Mul": (binary_case("Mul"), {"com.microsoft.QLinearMul": 1}),
    "AveragePool": (unary_case("AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                    {"com.microsoft.QLinearAveragePool": 1}),
    "GlobalAveragePool": (unary_case("GlobalAveragePool"),
                          {"com.microsoft.QLinearGlobalAveragePool": 1}),
    "LeakyRelu": (unary_case("LeakyRelu", alpha=0.2), {"com.microsoft.QLinearLeakyRelu": 1}),
    "Sigmoid": (unary_case("Sigmoid"), {"com.microsoft.QLinearSigmoid": 1}),
    "Softmax": (unary_case("Softmax", axis=-1), {"com.microsoft.QLinearSoftmax": 1}),
    "Concat": (concat_case, {"com.microsoft.QLinearConcat": 1}),
    "Where": (where_case, {"com.microsoft.QLinearWhere": 1}),
    "Reshape dropped": (drop_case("Reshape"), {"Reshape": 1, Q: 1, DQ: 1}),
    "Transpose dropped": (drop_case("Transpose", perm=[0, 2, 3, 1]), {"Transpose": 1, Q: 1, DQ: 1}),
    "MaxPool dropped": (drop_case("MaxPool", kernel_shape=[2, 2]), {"MaxPool": 1, Q: 1, DQ: 1}),
    "MaxPool negative scale kept": (drop_case("MaxPool", scale=-0.05, kernel_shape=[2, 2]),
                                    {"MaxPool": 1, Q: 2, DQ: 2}),
    "Split": (split_case, {"Split": 1}),
    "ArgMax": (argmax_case, {"ArgMax": 1, DQ: 0}),
}


@pytest.mark.parametrize("qtype", [T.UINT8, T.INT8], ids=["u8", "s8"])
@pytest.mark.parametrize("case", list(CASES))
def test_each_rule_leaves_onnxruntimes_ops_and_values(case, qtype, tmp_path):
    build, expect = CASES[case]
    b = Builder(qtype)
    b.output(build(b))
    # the counts named are those of the uint8 form; int8 Conv/MatMul units stay unfused when their
    # Q -> DQ pairs cannot become uint8, which the comparison with onnxruntime covers
    check_against_ort(b.model(), tmp_path, expect if qtype == T.UINT8 else None)


def test_a_shared_dq_is_duplicated_per_reader_and_each_unit_fuses(tmp_path):
    b = Builder()
    x = b.qdq(b.input([1, 4, 6, 6]))                  # one DQ read by two Convs and an output
    y1 = b.qdq(b.op("Conv", [x, b.weight([4, 4, 1, 1], seed=1)]), scale=0.1)
    y2 = b.qdq(b.op("Conv", [x, b.weight([4, 4, 1, 1], seed=2)]), scale=0.1)
    b.output(b.op("Add", [y1, y2]))
    b.output(x)
    check_against_ort(b.model(), tmp_path, {"QLinearConv": 2})


def test_a_unit_whose_output_is_also_a_graph_output_is_not_fused(tmp_path):
    b = Builder()
    x = b.qdq(b.input([2, 8]))
    y = b.op("Sigmoid", [x])
    b.output(b.qdq(y))
    b.output(y)
    check_against_ort(b.model(), tmp_path, {"com.microsoft.QLinearSigmoid": 0, "Sigmoid": 1})


def test_int8_pair_read_twice_stays_int8_and_its_conv_unfused(tmp_path):
    """On x86-64 onnxruntime fuses Conv for uint8 activations only; an int8 Q whose DQ has two
    readers is not made uint8 (after DQ duplication the Q feeds two DQs)."""
    b = Builder(T.INT8)
    x = b.qdq(b.input([1, 3, 5, 5]))
    y1 = b.qdq(b.op("Conv", [x, b.weight([2, 3, 1, 1])]), scale=0.1)
    b.output(y1)
    b.output(b.op("Relu", [x]))
    check_against_ort(b.model(), tmp_path, {"QLinearConv": 0, "Conv": 1})


def test_the_input_model_is_not_modified():
    b = Builder()
    b.output(conv_case()(b))
    model = b.model()
    before = model.SerializeToString()
    result = fuse_qdq(model)
    assert model.SerializeToString() == before
    assert result.counts["QLinearConv"] == 1


# ---- whole models quantized by onnxruntime ---------------------------------------------------

class _Reader:
    def __init__(self, feeds):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)


def _quantized(model, calib, tmp_path, tool="onnxruntime", **kw):
    if tool == "refrt":
        from refrt.quantization import QuantFormat, quantize_static
    else:
        from onnxruntime.quantization import QuantFormat, quantize_static

    src, out = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(out), _Reader(calib), quant_format=QuantFormat.QDQ, **kw)
    return onnx.load(out)


def _image_feeds(name, shape, n, seed):
    rng = np.random.default_rng(seed)
    return [{name: (rng.standard_normal(shape) * 1.5).astype(np.float32)} for _ in range(n)]


QUANT_SETTINGS = {
    "s8s8": {},
    "s8s8 per channel": {"per_channel": True},
    "u8u8": {"activation_type": "QUInt8", "weight_type": "QUInt8"},
    "u8s8 per channel": {"activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": True},
}


def _settings(name, tool="onnxruntime"):
    if tool == "refrt":
        from refrt.quantization import QuantType
    else:
        from onnxruntime.quantization import QuantType

    return {k: (getattr(QuantType, v) if k.endswith("_type") else v)
            for k, v in QUANT_SETTINGS[name].items()}


@pytest.mark.parametrize("tool", ["onnxruntime", "refrt"])
@pytest.mark.parametrize("setting", list(QUANT_SETTINGS))
def test_mobilenet_style_qdq_model_matches_onnxruntimes_default_level(setting, tool, tmp_path):
    """Quantized by onnxruntime's quantize_static or refrt's (which writes the same bytes)."""
    model = _quantized(models.mobilenet_like(), _image_feeds("image", [2, 3, 32, 32], 4, 0),
                       tmp_path, tool, **_settings(setting, tool))
    feeds = _image_feeds("image", [2, 3, 32, 32], 4, 1)
    counts = check_against_ort(model, tmp_path, feeds=feeds)
    assert counts["QLinearConv"] >= 8
    # the fusions matter: onnxruntime's default results differ from its unoptimized ones here
    differs = [not all(np.array_equal(a, b) for a, b in zip(
        ort_run(model, f, ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        ort_run(model, f, ort.GraphOptimizationLevel.ORT_DISABLE_ALL))) for f in feeds]
    assert any(differs)
    for f in feeds:    # refrt's default level is onnxruntime's default level
        for got, exp in zip(refrt_like_ort(model).run(None, f),
                            ort_run(model, f, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
            np.testing.assert_array_equal(got, exp)


def test_fused_qdq_models_match_an_avx2_onnxruntime(tmp_path):
    """On an AVX2 CPU onnxruntime's QLinearConv/QGemm saturate their u8 x s8 products; at its
    default level (where the QDQ units become those ops) refrt with emulate_avx2_u8s8 gives its
    results bit for bit. onnxruntime runs natively where this CPU is such a CPU, else under
    qemu-x86_64 -cpu Haswell."""
    from ort_helpers import avx2_ort_prefix, run_models_avx2

    prefix, why = avx2_ort_prefix()
    if prefix is None:
        pytest.skip(why)
    runs, sessions = [], []
    for setting in ("s8s8", "u8s8 per channel"):
        folder = tmp_path / setting.replace(" ", "_")
        folder.mkdir()
        model = _quantized(models.mobilenet_like(), _image_feeds("image", [2, 3, 32, 32], 4, 0),
                           folder, **_settings(setting))
        sess = refrt.InferenceSession(model, emulate_avx2_u8s8=True)
        assert "QLinearConv" in {n.op_type for n in sess.optimized_model.graph.node}
        for f in _image_feeds("image", [2, 3, 32, 32], 3, 1):
            runs.append((model, f))
            sessions.append(sess)
    theirs = run_models_avx2(runs, tmp_path, prefix, timeout=900, level="ORT_ENABLE_ALL")
    for (model, f), sess, outs in zip(runs, sessions, theirs):
        for got, exp in zip(sess.run(None, f), outs):
            np.testing.assert_array_equal(got, exp)


@pytest.mark.parametrize("tool", ["onnxruntime", "refrt"])
@pytest.mark.parametrize("setting", ["s8s8", "u8s8 per channel"])
def test_digits_and_bert_style_qdq_models_match_onnxruntime(setting, tool, tmp_path):
    import os

    digits = onnx.load(os.path.join(os.path.dirname(refrt.__file__), "data", "digits_cnn.onnx"))
    name = digits.graph.input[0].name
    shape = [4] + [d.dim_value for d in digits.graph.input[0].type.tensor_type.shape.dim][1:]
    rng = np.random.default_rng(0)
    calib = [{name: rng.random(shape).astype(np.float32)} for _ in range(3)]
    model = _quantized(digits, calib, tmp_path, tool, **_settings(setting, tool))
    counts = check_against_ort(model, tmp_path,
                               feeds=[{name: rng.random(shape).astype(np.float32)} for _ in range(3)])
    assert counts["QLinearConv"] == 2 and counts["com.microsoft.QGemm"] == 2

    bert_dir = tmp_path / "bert"
    bert_dir.mkdir()
    model = _quantized(models.bert_encoder(), [models.bert_feeds(seed=s) for s in range(3)],
                       bert_dir, tool, **_settings(setting, tool))
    # onnxruntime's level-1 QDQ propagation adds a Q/DQ pair refrt does not (the same values):
    # compare the other ops and the outputs
    feeds = [models.bert_feeds(seed=s) for s in range(10, 13)]
    saved = bert_dir / "ort_extended.onnx"
    ort_run(model, feeds[0], ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, saved)
    skip = (Q, DQ)
    assert op_counts(fuse_qdq(model).model, skip) == op_counts(onnx.load(saved), skip)
    sess = refrt_like_ort(model)
    for f in feeds:
        for got, exp in zip(sess.run(None, f), ort_run(model, f, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
            np.testing.assert_array_equal(got, exp)


def test_optimized_model_is_the_graph_run_and_is_saved_where_asked(tmp_path):
    b = Builder()
    b.output(conv_case()(b))
    model = b.model()
    path = tmp_path / "opt.onnx"
    sess = refrt.InferenceSession(model, optimized_model_filepath=str(path))
    assert [n.op_type for n in sess.optimized_model.graph.node] == ["QuantizeLinear", "QLinearConv",
                                                                    "DequantizeLinear"]
    assert onnx.load(path).graph.node[1].op_type == "QLinearConv"
    assert sess.model.SerializeToString() == model.SerializeToString()
    off = refrt.InferenceSession(model, graph_optimization_level=refrt.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    assert off.optimized_model is off.model
    # onnxruntime's own enum values and SessionOptions mean the same levels
    levels = ort.GraphOptimizationLevel
    for level, fused in ((levels.ORT_ENABLE_EXTENDED, True), (levels.ORT_ENABLE_BASIC, False),
                         (levels.ORT_ENABLE_ALL, True), (levels.ORT_DISABLE_ALL, False)):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        for sess in (refrt.InferenceSession(model, so),
                     refrt.InferenceSession(model, graph_optimization_level=level)):
            ops = {n.op_type for n in sess.optimized_model.graph.node}
            assert ("QLinearConv" in ops) == fused, (level, ops)


def test_ort_format_models_run_as_stored_like_onnxruntime(tmp_path):
    """onnxruntime applies no graph optimizations to a .ort file when it loads it (they were
    applied, or not, when it was converted); refrt neither: a QDQ model converted with
    optimizations disabled keeps its unfused results in both."""
    import os
    import subprocess
    import sys

    pytest.importorskip("onnxruntime.tools.convert_onnx_models_to_ort")
    model = _quantized(models.mobilenet_like(), _image_feeds("image", [2, 3, 32, 32], 4, 0), tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(model, src / "mnet.onnx")
    env = dict(os.environ, ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL="disable")
    subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(src),
                    "--output_dir", str(tmp_path / "out"), "--optimization_style", "Fixed"],
                   env=env, check=True, capture_output=True, timeout=600)
    (path,) = (tmp_path / "out").glob("*.ort")
    sess = refrt_like_ort(str(path))
    assert not any(n.op_type == "QLinearConv" for n in sess.optimized_model.graph.node)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fused = refrt_like_ort(model)
    differs = False
    for f in _image_feeds("image", [2, 3, 32, 32], 4, 1):
        got = sess.run(None, f)
        for a, b in zip(got, theirs.run(None, f)):
            np.testing.assert_array_equal(a, b)
        differs |= not all(np.array_equal(a, b) for a, b in zip(got, fused.run(None, f)))
    assert differs       # the .onnx at the default level is fused, and that shows
