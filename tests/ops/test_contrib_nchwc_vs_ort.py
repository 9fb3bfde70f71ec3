"""onnxruntime's NCHWc ops (refrt/ops/contrib_nchwc.py) against onnxruntime, bit for bit.

Each case is a small graph as onnxruntime's NchwcTransformer writes it: ReorderInput, an NCHWc
op (its filter reordered as the transformer stores it, for this host's block size), ReorderOutput;
every value of the graph, the NCHWc-ordered intermediates included, must be the same bits in
refrt and in onnxruntime (graph optimizations off). The convolutions cover MLAS's four NCHWc
algorithms: NCHWc input (K in blocks of B channels), 1 x 1 kernels (chains of up to 128
channels), NCHW input with fewer channels than the block, depthwise; with bias, the Sum input and
activations.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import refrt
from refrt.errors import NodeError
from refrt.ops._common import window_geometry
from refrt.ops.contrib_nchwc import block_size, to_blocked

from ort_helpers import refrt_like_ort

ort = pytest.importorskip("onnxruntime")

NCHWC = "com.microsoft.nchwc"
F = np.float32

try:
    BLOCK = block_size()
except ValueError:                      # pragma: no cover - CPUs without AVX2
    BLOCK = 0
pytestmark = pytest.mark.skipif(not BLOCK, reason="no NCHWc block size on this CPU (no AVX2)")


def reorder_filter(w, layout):
    """OIHW -> the transformer's stored order (output channels padded to the block)."""
    m, c, kh, kw = w.shape
    mp = -(-m // BLOCK) * BLOCK
    full = np.zeros((mp, c, kh, kw), F)
    full[:m] = w
    if layout == "BiBo":
        t = full.reshape(mp // BLOCK, BLOCK, c // BLOCK, BLOCK, kh * kw)   # (ob, bo, ib, bi, k)
        return np.ascontiguousarray(t.transpose(0, 2, 4, 3, 1)).reshape(mp, c, kh, kw)
    t = full.reshape(mp // BLOCK, BLOCK, c, kh * kw)                        # (ob, bo, i, k)
    return np.ascontiguousarray(t.transpose(0, 2, 3, 1)).reshape(mp, c, kh, kw)


def graph_model(nodes, inputs, initializers, outputs):
    graph = helper.make_graph(
        nodes, "nchwc",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(v.shape))
         for name, v in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(NCHWC, 1)])
    model.ir_version = 8
    return model


def check(nodes, inputs, initializers):
    """Every node output of the graph, refrt against onnxruntime, bit for bit."""
    outputs = [o for n in nodes for o in n.output]
    model = graph_model(nodes, inputs, initializers, outputs)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    theirs = ort.InferenceSession(model.SerializeToString(), so,
                                  providers=["CPUExecutionProvider"]).run(None, inputs)
    ours = refrt_like_ort(model).run(None, inputs)
    for name, a, b in zip(outputs, ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        differ = a.view(np.uint32) != b.view(np.uint32)
        assert not differ.any(), f"{name}: {int(differ.sum())} of {a.size} values differ"
    return dict(zip(outputs, ours))


def conv_graph(x, w, b, attrs, *, nchw_input=False, depthwise=False, with_sum=False, seed=0):
    """ReorderInput -> nchwc.Conv [-> + Sum] -> ReorderOutput, as the transformer writes it."""
    m = w.shape[0]
    layout = "Bo" if (nchw_input or depthwise) else "BiBo"
    inits = {"w": reorder_filter(w, layout)}
    conv_in = ["x" if nchw_input else "xr", "w"]
    if b is not None:
        inits["b"] = np.zeros(inits["w"].shape[0], F)
        inits["b"][:m] = b
        conv_in.append("b")
    nodes = [] if nchw_input else [helper.make_node("ReorderInput", ["x"], ["xr"], domain=NCHWC)]
    feeds = {"x": x}
    if with_sum:
        if b is None:
            conv_in.append("")
        conv_in.append("sr")
        nodes.append(helper.make_node("ReorderInput", ["s"], ["sr"], domain=NCHWC))
    nodes.append(helper.make_node("Conv", conv_in, ["yr"], domain=NCHWC, **attrs))
    nodes.append(helper.make_node("ReorderOutput", ["yr"], ["y"], domain=NCHWC, channels=m))
    if with_sum:
        out = window_geometry(x.shape[2:], w.shape[2:], attrs.get("strides"),
                              attrs.get("dilations"), attrs.get("pads")).out
        feeds["s"] = np.random.default_rng(seed).standard_normal((x.shape[0], m) + out).astype(F)
    return nodes, feeds, inits


CONV_CASES = [
    # X shape, W shape, group, attributes, kind
    ((2, 32, 9, 9), (32, 32, 3, 3), 1, {"pads": [1, 1, 1, 1]}, "nchwc"),
    ((1, 48, 10, 11), (32, 48, 3, 3), 1, {"pads": [1, 0, 1, 2], "strides": [2, 2]}, "nchwc"),
    ((1, 32, 12, 12), (16, 32, 3, 3), 1, {"dilations": [2, 2], "pads": [2, 2, 2, 2]}, "nchwc"),
    ((1, 32, 8, 8), (32, 16, 3, 3), 2, {"pads": [1, 1, 1, 1]}, "nchwc"),
    ((2, 160, 6, 6), (48, 160, 1, 1), 1, {}, "nchwc"),                 # 1 x 1: chains of 128
    ((1, 32, 9, 9), (24, 32, 1, 1), 1, {"strides": [2, 2]}, "nchwc"),
    ((2, 3, 15, 15), (16, 3, 3, 3), 1, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, "nchw"),
    ((1, 4, 8, 8), (8, 4, 5, 5), 1, {"pads": [2, 2, 2, 2]}, "nchw"),
    ((2, 32, 12, 12), (32, 1, 3, 3), 32, {"pads": [1, 1, 1, 1]}, "depthwise"),
    ((1, 16, 13, 13), (16, 1, 5, 5), 16, {"pads": [2, 2, 2, 2], "strides": [2, 2]}, "depthwise"),
]
ACTIVATIONS = [(None, None), ("Relu", None), ("HardSwish", None), ("Sigmoid", None),
               ("Clip", [0.0, 6.0]), ("HardSigmoid", [0.2, 0.5])]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
@pytest.mark.parametrize("activation, params", ACTIVATIONS)
def test_nchwc_conv_bit_exact(case, activation, params):
    xs, ws, group, attrs, kind = CONV_CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(xs).astype(F)
    w = (rng.standard_normal(ws) * 0.2).astype(F)
    b = rng.standard_normal(ws[0]).astype(F)
    attrs = dict(attrs, group=group, kernel_shape=list(ws[2:]))
    if activation:
        attrs["activation"] = activation
    if params:
        attrs["activation_params"] = params
    check(*conv_graph(x, w, b, attrs, nchw_input=kind == "nchw", depthwise=kind == "depthwise"))


@pytest.mark.parametrize("case", [0, 4, 6, 8])
@pytest.mark.parametrize("bias", [True, False])
def test_nchwc_conv_with_sum_bit_exact(case, bias):
    """The Sum input (a fused Add) is where the chains accumulate, as in FusedConv."""
    xs, ws, group, attrs, kind = CONV_CASES[case]
    rng = np.random.default_rng(40 + case)
    x = rng.standard_normal(xs).astype(F)
    w = (rng.standard_normal(ws) * 0.2).astype(F)
    b = rng.standard_normal(ws[0]).astype(F) if bias else None
    attrs = dict(attrs, group=group, kernel_shape=list(ws[2:]))
    check(*conv_graph(x, w, b, attrs, nchw_input=kind == "nchw", depthwise=kind == "depthwise",
                      with_sum=True, seed=case))


@pytest.mark.parametrize("op_type, attrs", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
])
@pytest.mark.parametrize("channels", [16, 24])
def test_nchwc_pools_bit_exact(op_type, attrs, channels):
    x = np.random.default_rng(channels).standard_normal((2, channels, 11, 10)).astype(F)
    nodes = [helper.make_node("ReorderInput", ["x"], ["xr"], domain=NCHWC),
             helper.make_node(op_type, ["xr"], ["yr"], domain=NCHWC, **attrs),
             helper.make_node("ReorderOutput", ["yr"], ["y"], domain=NCHWC, channels=channels)]
    check(nodes, {"x": x}, {})


@pytest.mark.parametrize("channels_last", [0, 1])
@pytest.mark.parametrize("channels", [4, 16, 36])
def test_reorders_bit_exact(channels_last, channels):
    shape = (2, 5, 7, channels) if channels_last else (2, channels, 5, 7)
    x = np.random.default_rng(channels).standard_normal(shape).astype(F)
    nodes = [helper.make_node("ReorderInput", ["x"], ["xr"], domain=NCHWC,
                              channels_last=channels_last),
             helper.make_node("ReorderOutput", ["xr"], ["y"], domain=NCHWC, channels=channels,
                              channels_last=channels_last)]
    values = check(nodes, {"x": x}, {})
    np.testing.assert_array_equal(values["y"], x)
    if not channels_last:
        padded = np.zeros((2, values["xr"].shape[1], 5, 7), F)
        padded[:, :channels] = x
        np.testing.assert_array_equal(values["xr"], to_blocked(padded, BLOCK))


@pytest.mark.parametrize("nodes, feeds, message", [
    ([helper.make_node("ReorderInput", ["x"], ["y"], domain=NCHWC)],
     {"x": np.zeros((1, 6, 2, 2), F)}, "onnxruntime needs a multiple of 4"),
    ([helper.make_node("ReorderOutput", ["x"], ["y"], domain=NCHWC, channels=40)],
     {"x": np.zeros((1, 2 * 16, 2, 2), F)}, "does not fit"),
    ([helper.make_node("MaxPool", ["x"], ["y"], domain=NCHWC, kernel_shape=[2, 2])],
     {"x": np.zeros((1, 3, 4, 4), F)}, "not a multiple of the NCHWc block"),
    ([helper.make_node("Conv", ["x", "x"], ["y"], domain=NCHWC, activation="Gelu")],
     {"x": np.zeros((16, 16, 1, 1), F)}, "unknown activation 'Gelu'"),
    ([helper.make_node("Conv", ["x", "x", "b"], ["y"], domain=NCHWC)],
     {"x": np.zeros((16, 16, 1, 1), F), "b": np.zeros(8, F)}, r"B must be 1-D .*\[16\]"),
])
def test_bad_input_is_a_node_error(nodes, feeds, message):
    model = graph_model(nodes, feeds, {}, [nodes[-1].output[0]])
    with pytest.raises(NodeError, match=message):
        refrt.InferenceSession(model).run(None, feeds)
