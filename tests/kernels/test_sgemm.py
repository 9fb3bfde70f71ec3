"""kernels/sgemm.py: onnxruntime's float32 GEMM order (MLAS), against onnxruntime itself through
the Gemm and MatMul ops, and against its NumPy twin."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from kernel_data import K, T
from onnx import TensorProto, helper, numpy_helper

import refrt
from refrt.ops._common import physical_cores

SG = importlib.import_module(K.__name__ + ".sgemm")
SG_ROWS = importlib.import_module(K.__name__ + ".rows")
F = np.float32

MLAS_ONLY = pytest.mark.skipif(
    not {"avx2", "fma"} <= importlib.import_module(K.__name__ + ".cpu").features()[1],
    reason="refrt reproduces onnxruntime's AVX2/AVX-512 SGEMM kernels; without AVX2 and FMA "
           "onnxruntime runs its SSE kernels")


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _run_both(nodes, inputs: dict, constants: dict, opset=17):
    """The one-output model's result in onnxruntime (optimizations off, default threads) and in
    refrt."""
    import onnxruntime as ort

    graph = helper.make_graph(nodes, "g", [_vi(k, list(v.shape)) for k, v in inputs.items()],
                              [_vi("y", None)],
                              [numpy_helper.from_array(v, k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    expected = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    return expected, refrt.InferenceSession(model).run(None, inputs)[0]


def _same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


SHAPES = [(32, 300, 40), (8, 700, 100), (64, 64, 64), (1, 300, 40), (3, 1000, 20), (5, 77, 1),
          (1, 33, 7), (40, 513, 300), (2, 1500, 10), (1, 2049, 10), (7, 13, 129)]


@MLAS_ONLY
@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("constant_b", [False, True], ids=["b_input", "b_constant"])
def test_gemm_op_is_onnxruntime_bit_for_bit(m, k, n, constant_b):
    rng = np.random.default_rng(m * k + n)
    a = rng.standard_normal((m, k)).astype(F)
    for trans_b in (0, 1):
        b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(F)
        c = rng.standard_normal(n).astype(F)
        for bias in (False, True):
            inputs, constants = {"a": a}, {}
            (constants if constant_b else inputs)["b"] = b
            names = ["a", "b"]
            if bias:
                constants["c"] = c
                names.append("c")
            expected, got = _run_both([helper.make_node("Gemm", names, ["y"], transB=trans_b)],
                                      inputs, constants)
            assert _same(got, expected), (trans_b, bias)


@MLAS_ONLY
@pytest.mark.parametrize("a_shape,b_shape,constant_b", [
    ((4, 30, 300), (300, 40), True), ((4, 30, 300), (300, 40), False), ((2, 3, 9, 200), (2, 3, 200, 12), False),
    ((300,), (300, 17), False), ((6, 300), (300,), False), ((12, 128, 64), (12, 64, 128), False),
    ((2, 1, 600), (2, 600, 50), False), ((5, 700), (700, 3), True)])
def test_matmul_op_is_onnxruntime_bit_for_bit(a_shape, b_shape, constant_b):
    rng = np.random.default_rng(len(a_shape) * 7 + a_shape[-1])
    a = rng.standard_normal(a_shape).astype(F)
    b = rng.standard_normal(b_shape).astype(F)
    inputs, constants = {"a": a}, {}
    (constants if constant_b else inputs)["b"] = b
    expected, got = _run_both([helper.make_node("MatMul", ["a", "b"], ["y"])], inputs, constants)
    assert _same(got, expected)


def test_k_blocking_follows_mlas_rules():
    assert SG.k_stride(40, 300) == 256            # N < K: the panel narrows, K blocks grow
    assert SG.k_stride(8, 300) == 1024
    assert SG.k_stride(300, 100) == 128           # N >= K: one block
    assert SG.k_stride(40, 300, trans_a=True) == 128
    assert SG.k_stride(5, 5000, packed=True) == SG.PACKED_STRIDE_K
    # two threads share 40 columns as 32 + 8 when N > M; M >= N keeps the columns together
    assert SG.column_segments(32, 40, 300, threads=2) == [(0, 32), (32, 40)]
    assert SG.column_segments(64, 40, 300, threads=2) == [(0, 40)]
    assert SG.column_segments(4, 40, 30, threads=2) == [(0, 40)]      # too small to share
    assert SG.column_segments(32, 40, 300, threads=2, batch=4) == [(0, 40)]


@pytest.mark.parametrize("m,k,n", [(1, 37, 9), (9, 37, 1), (6, 300, 45), (1, 300, 45), (30, 600, 20)])
def test_sgemm_matches_its_twin_and_its_block_sums(m, k, n):
    rng = np.random.default_rng(k)
    a, b = rng.standard_normal((m, k)).astype(F), rng.standard_normal((k, n)).astype(F)
    init = rng.standard_normal((m, n)).astype(F)
    for kw in ({}, {"packed": True}, {"threads": 2}, {"trans_b": True}):
        bb = np.ascontiguousarray(b.T) if kw.get("trans_b") else b
        for c0 in (None, init):
            got = SG.sgemm(a, bb, c0, **kw)
            assert _same(got, T.sgemm_twin(a, bb, c0, **kw))
            np.testing.assert_allclose(got, a.astype(np.float64) @ b.astype(np.float64)
                                       + (0 if c0 is None else c0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_m1_transposed_b_kernel_matches_its_numpy_twin(seed):
    # MLAS's M = 1 transposed-B order (8 lanes, outputs in blocks of 4, 2, 1) compiled and in NumPy
    rng = np.random.default_rng(seed)
    for _ in range(20):
        s, n, k = (int(v) for v in (rng.integers(1, 4), rng.integers(1, 40), rng.integers(1, 300)))
        a = (rng.standard_normal((s, k)) * 10.0 ** rng.integers(-3, 3)).astype(F)
        bt = rng.standard_normal((n, k)).astype(F)
        init = rng.standard_normal((s, n)).astype(F) if rng.random() < 0.5 else None
        for x in (a, a[0]):
            got = SG._m1_transposed_b(x, bt, None if x.ndim == 1 else init)
            want = T.m1_transposed_b_twin(x, bt, None if x.ndim == 1 else init)
            assert got.shape == want.shape and np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_ort_threads_default_is_the_physical_core_count():
    from refrt.ops._common import ort_threads

    class Ctx:
        class options:  # noqa: N801
            intra_op_num_threads = 0

    assert ort_threads(Ctx) == physical_cores() >= 1
    Ctx.options.intra_op_num_threads = 3
    assert ort_threads(Ctx) == 3


CONVS = [  # x shape, w shape, attributes
    ((1, 32, 28, 28), (64, 32, 3, 3), {"pads": [1, 1, 1, 1]}),                 # K = 288, two segments
    ((2, 16, 20, 20), (24, 16, 3, 3), {"strides": [2, 2]}),                     # batch 2
    ((1, 64, 7, 7), (128, 64, 3, 3), {"pads": [1, 1, 1, 1]}),                   # more filters than outputs
    ((1, 48, 14, 14), (48, 1, 3, 3), {"group": 48, "pads": [1, 1, 1, 1]}),      # depthwise (M = 1 kernel)
    ((1, 24, 15, 15), (24, 1, 5, 5), {"group": 24, "strides": [2, 2], "pads": [2, 2, 2, 2]}),
    ((1, 96, 14, 14), (32, 96, 1, 1), {}),                                      # pointwise: one SGEMM
    ((2, 8, 9, 9), (8, 4, 3, 3), {"group": 2, "dilations": [2, 2]}),
    ((1, 3, 64, 64), (16, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # a stem
    ((1, 40, 50), (20, 40, 5), {"pads": [2, 2]}),                               # 1-D
    ((1, 4, 6, 6, 6), (8, 4, 3, 3, 3), {"pads": [1, 1, 1, 1, 1, 1]}),           # 3-D
    ((1, 300, 10, 10), (16, 300, 1, 1), {}),                                    # K > 256, pointwise
    ((2, 300, 10, 10), (16, 300, 1, 1), {}),                                    # the same, batch 2
    ((1, 64, 19, 6), (16, 64, 3, 3), {}),             # 2 segments of 48 and 20 outputs: K blocks 256, 512
    ((3, 64, 19, 6), (16, 32, 3, 3), {"group": 2}),                             # the same, 3 images
    ((1, 64, 10, 10), (32, 32, 1, 1), {"group": 2}),                            # pointwise, 2 groups
]


@MLAS_ONLY
@pytest.mark.parametrize("x_shape,w_shape,attrs", CONVS)
def test_conv_op_is_onnxruntime_bit_for_bit(x_shape, w_shape, attrs):
    rng = np.random.default_rng(int(np.prod(w_shape)) % 1000)
    x = rng.standard_normal(x_shape).astype(F)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(F)
    b = rng.standard_normal(w_shape[0]).astype(F)
    expected, got = _run_both([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)],
                              {"x": x}, {"w": w, "b": b})
    assert _same(got, expected)


CONV_TRANSPOSES = [  # x shape, w shape, attributes
    ((2, 32, 8, 8), (32, 16, 2, 2), {"strides": [2, 2]}),
    ((2, 300, 5, 5), (300, 8, 3, 3), {}),                                       # K = 300: blocks
    ((2, 520, 4, 4), (520, 3, 2, 2), {"strides": [2, 2]}),
    ((2, 8, 7, 7), (8, 4, 3, 3), {"group": 2, "strides": [2, 2]}),
    ((2, 600, 3, 3), (600, 4, 1, 1), {}),
    ((2, 1, 5, 5), (1, 4, 3, 3), {"strides": [2, 2]}),                          # one input channel
    ((2, 16, 6, 6), (16, 1, 1, 1), {}),                                         # one output column
    ((1, 64, 16, 16), (64, 64, 4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
]


@MLAS_ONLY
@pytest.mark.parametrize("constant_w", [True, False], ids=["w_constant", "w_input"])
@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV_TRANSPOSES)
def test_conv_transpose_op_is_onnxruntime_bit_for_bit(x_shape, w_shape, attrs, constant_w):
    # onnxruntime transposes a constant W once and multiplies it as it is, and passes any other W
    # transposed: MLAS blocks K differently for the two (both are reproduced, bit for bit)
    rng = np.random.default_rng(int(np.prod(w_shape)) % 1000)
    x = rng.standard_normal(x_shape).astype(F)
    w = rng.standard_normal(w_shape).astype(F)
    b = rng.standard_normal(w_shape[1] * attrs.get("group", 1)).astype(F)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)
    if constant_w:
        expected, got = _run_both([node], {"x": x}, {"w": w, "b": b})
    else:
        expected, got = _run_both([node], {"x": x, "w": w}, {"b": b})
    assert _same(got, expected)


def test_conv_segments_and_twin():
    assert SG.conv_segments(64, 784, 288, threads=2) == [(0, 400), (400, 784)]
    assert SG.conv_segments(64, 784, 288, threads=1) == [(0, 784)]
    assert SG.conv_segments(4, 20, 9, threads=2) == [(0, 20)]          # too small to share
    rng = np.random.default_rng(5)
    for f in (1, 5):
        w, cols = rng.standard_normal((f, 300)).astype(F), rng.standard_normal((300, 37)).astype(F)
        assert _same(SG.conv_gemm(w, cols, 128), T.conv_gemm_twin(w, cols, 128))


def test_float_kernels_match_onnxruntime_on_an_emulated_haswell(tmp_path):
    """On an AVX2/FMA3 CPU (emulated: QEMU's Haswell) onnxruntime runs MLAS's AVX2 kernels; refrt's
    "ort" numerics give the same bits (the softmax through its AVX2 variant, ``wide=False``)."""
    import shutil

    from ort_helpers import run_models_avx2

    if not shutil.which("qemu-x86_64") or __import__("os").uname().machine != "x86_64":
        pytest.skip("qemu-x86_64 (Debian package qemu-user) is needed to emulate an AVX2 CPU")
    rows = importlib.import_module(K.__name__ + ".rows")
    rng = np.random.default_rng(0)

    def model(nodes, inputs, constants=()):
        graph = helper.make_graph(nodes, "g", [_vi(k, list(v.shape)) for k, v in inputs.items()],
                                  [_vi("y", None)], [numpy_helper.from_array(v, k) for k, v in constants])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), inputs

    a, b = rng.standard_normal((32, 300)).astype(F), rng.standard_normal((300, 40)).astype(F)
    x = rng.standard_normal((1, 32, 28, 28)).astype(F)
    xl = (rng.standard_normal((64, 768)) * 2 + 1).astype(F)
    cases = [
        model([helper.make_node("Gemm", ["a", "b"], ["y"])], {"a": a, "b": b}),
        model([helper.make_node("Gemm", ["a", "b", "c"], ["y"])], {"a": a},
              [("b", b), ("c", rng.standard_normal(40).astype(F))]),
        model([helper.make_node("Gemm", ["a", "b"], ["y"], transB=1)], {"a": a[:1], "b": np.ascontiguousarray(b.T)}),
        model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], {"x": x},
              [("w", (rng.standard_normal((64, 32, 3, 3)) / 17).astype(F))]),
        model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=32)], {"x": x},
              [("w", (rng.standard_normal((32, 1, 3, 3)) / 3).astype(F))]),
        model([helper.make_node("LayerNormalization", ["x", "s", "bb"], ["y"])], {"x": xl},
              [("s", rng.standard_normal(768).astype(F)), ("bb", rng.standard_normal(768).astype(F))]),
        model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], {"x": x}),
        model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])], {"x": x}),
        model([helper.make_node("ReduceMean", ["x"], ["y"], axes=[-1])], {"x": xl}),
    ]
    softmax = [model([helper.make_node(op, ["x"], ["y"], axis=-1)], {"x": (xl * 3).astype(F)})
               for op in ("Softmax", "LogSoftmax")]
    wide_x = np.concatenate([xl.reshape(-1) * 20, [np.nan, np.inf, -np.inf, 88.73, -104]]).astype(F)
    exp = model([helper.make_node("Exp", ["x"], ["y"])], {"x": wide_x})
    outs = run_models_avx2(cases + softmax + [exp], tmp_path, ["qemu-x86_64", "-cpu", "Haswell"],
                           timeout=600)
    activations = importlib.import_module(K.__name__ + ".activations")
    got = activations.exp_f32(wide_x, False)
    assert np.array_equal(np.isnan(got), np.isnan(outs[-1][0]))
    assert _same(np.nan_to_num(got), np.nan_to_num(outs[-1][0]))
    for (m, feeds), got in zip(cases, outs[:len(cases)]):
        assert _same(refrt.InferenceSession(m).run(None, feeds)[0], got[0]), m.graph.node[0].op_type
    for (m, feeds), got, log in zip(softmax, outs[len(cases):len(cases) + 2], (False, True)):
        assert _same(rows.softmax_rows(feeds["x"], False, log), got[0])


def test_depthwise_kernel_matches_its_twin_and_m1_groups():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 13, 11)).astype(F)
    w = rng.standard_normal((5, 9)).astype(F)
    x[1, :, :2] = -0.0                      # zeros meeting the padding's zeros: signs kept
    for strides, dilations, pads in (((1, 1), (1, 1), (0, 0, 0, 0)), ((2, 2), (1, 1), (1, 1, 1, 1)),
                                     ((1, 2), (2, 1), (0, 2, 3, 1)), ((1, 1), (1, 1), (2, 2, 2, 2))):
        oh = (13 + pads[0] + pads[2] - (3 - 1) * dilations[0] - 1) // strides[0] + 1
        ow = (11 + pads[1] + pads[3] - (3 - 1) * dilations[1] - 1) // strides[1] + 1
        for stride_k in (128, 4, 3):
            got = SG.depthwise_m1_2d(x, w, (3, 3), strides, dilations, (oh, ow), stride_k, pads)
            assert _same(got, T.depthwise_m1_2d_twin(x, w, (3, 3), strides, dilations, (oh, ow),
                                                     stride_k, pads))


@pytest.mark.parametrize("n,c,h,w,kernel,strides,dilations", [
    (1, 8, 9, 9, (3, 3), (1, 1), (1, 1)),
    (3, 6, 11, 7, (3, 2), (2, 1), (1, 2)),
    (2, 5, 1, 40, (1, 5), (1, 3), (1, 1)),
])
def test_im2col_panels_match_the_twin_and_feed_the_packed_product(n, c, h, w, kernel, strides, dilations):
    """The panels hold the im2col matrix (unpacked through the packed product with an identity
    A), for a column range starting mid-panel; the packed product equals its twin's."""
    FG = importlib.import_module(K.__name__ + ".fgemm")
    x = np.random.default_rng(3).standard_normal((n, c, h, w)).astype(F)
    oh = (h - (kernel[0] - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (w - (kernel[1] - 1) * dilations[1] - 1) // strides[1] + 1
    g0, cg = 1, c - 2
    q0, q1 = 5, n * oh * ow
    panels = FG.im2col_panels(x, g0, cg, kernel, strides, dilations, (oh, ow), q0, q1)
    plain = T.im2col_panels_twin(x, g0, cg, kernel, strides, dilations, (oh, ow), q0, q1).b
    kk = cg * kernel[0] * kernel[1]
    assert plain.shape == (kk, q1 - q0) and (panels.k, panels.n) == plain.shape
    img, rest = divmod(q0 + 3, oh * ow)     # one element by its definition
    a, b = divmod(rest, ow)
    u, v = kernel[0] - 1, kernel[1] - 1     # the last tap of channel g0
    assert plain[u * kernel[1] + v, 3] == x[img, g0, a * strides[0] + u * dilations[0],
                                            b * strides[1] + v * dilations[1]]
    assert _same(FG.matmul_packed_f32(np.eye(kk, dtype=F), panels), plain)
    wts = np.random.default_rng(4).standard_normal((7, kk)).astype(F)
    assert _same(FG.matmul_packed_f32(wts, panels, k_block=4), T.matmul_packed_f32_twin(wts, T.PlainF32(plain), k_block=4))


@pytest.mark.parametrize("x_shape,w_shape,attrs", [CONVS[0], CONVS[1], CONVS[8], CONVS[12]])
def test_conv_op_twins_give_the_kernels_bits(x_shape, w_shape, attrs):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape).astype(F)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(F)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], "g",
                              [_vi("x", list(x_shape))], [_vi("y", None)],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fast = refrt.InferenceSession(model).run(None, {"x": x})[0]
    twin = refrt.InferenceSession(model, kernels="twins").run(None, {"x": x})[0]
    assert _same(fast, twin)


@MLAS_ONLY
@pytest.mark.parametrize("opset", [11, 17, 19, 22])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [2, 3], "strides": [2, 1]},
    {"kernel_shape": [3, 3], "dilations": [2, 3], "pads": [2, 1, 0, 2], "ceil_mode": 1, "strides": [2, 2]},
])
def test_average_pool_sums_in_the_order_of_onnxruntimes_kernel_for_the_version(opset, attrs):
    """onnxruntime runs AveragePool up to version 11 with MLAS's vector kernel (window columns
    first) and versions 19 and 22 with its generic loops (row by row): other bits."""
    if "dilations" in attrs and opset < 19:
        pytest.skip("AveragePool has dilations from version 19")
    x = np.random.default_rng(opset).standard_normal((2, 8, 20, 30)).astype(F)
    expected, got = _run_both([helper.make_node("AveragePool", ["x"], ["y"], **attrs)], {"x": x}, {},
                              opset=opset)
    assert _same(got, expected)


def test_window_sums_match_their_twin():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 9, 11)).astype(F)
    x[0, :4, :4] = -0.0
    for kernel, strides, dilations, pads, out in [((3, 3), (1, 1), (1, 1), (1, 1), (9, 11)),
                                                  ((2, 3), (2, 3), (2, 1), (0, 2), (4, 5)),
                                                  ((4, 4), (3, 3), (1, 1), (2, 2), (5, 5))]:
        got = SG_ROWS.window_sums_2d(x, kernel, strides, dilations, pads, out)
        assert _same(got, T.window_sums_2d_twin(x, kernel, strides, dilations, pads, out))
    assert not np.signbit(SG_ROWS.window_sums_2d(x, (2, 2), (1, 1), (1, 1), (0, 0), (8, 10))[0, 0, 0])


@MLAS_ONLY
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
@pytest.mark.parametrize("shape,axes", [((8, 32, 16, 16), [1]), ((3, 300, 50), [1]), ((4, 17, 33), [-2]),
                                        ((2, 3, 4, 5), [1, 2]), ((6, 7, 1, 9), [1]), ((2, 1000, 3), [1])])
def test_reduction_over_middle_axes_is_onnxruntime_bit_for_bit(op, shape, axes):
    # onnxruntime's KRK reduction: per leading index, a row of ones times the slice (MLAS's
    # SGEMM with M = 1, the rows in groups of 4, 2 and 1); NumPy's pairwise sum differs
    rng = np.random.default_rng(len(shape) * 100 + shape[1])
    x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)).astype(F)
    expected, got = _run_both([helper.make_node(op, ["x"], ["y"], axes=axes, keepdims=1)], {"x": x}, {},
                              opset=12)     # axes an attribute for both ops
    assert _same(got, expected)
    assert not _same(np.sum(x, axis=tuple(axes), keepdims=True, dtype=F), expected) or shape[1] < 8


def test_add_windows_matches_its_twin():
    # col2im: every cell 0 plus its taps' values, tap by tap in row-major order (overlapping
    # windows add several values to a cell, in that order)
    rng = np.random.default_rng(10)
    for (kh, kw), strides, dilations, (oh, ow) in [((2, 2), (2, 2), (1, 1), (7, 9)), ((3, 3), (1, 1), (1, 1), (6, 5)),
                                                   ((3, 2), (2, 3), (2, 1), (4, 4)), ((1, 1), (1, 1), (1, 1), (3, 3))]:
        cols = (rng.standard_normal((3, kh, kw, oh, ow)) * 10.0 ** rng.integers(-3, 4, (3, kh, kw, oh, ow))).astype(F)
        cols[0, 0] = -0.0
        full = ((oh - 1) * strides[0] + (kh - 1) * dilations[0] + 1, (ow - 1) * strides[1] + (kw - 1) * dilations[1] + 1)
        got = SG_ROWS.add_windows_2d(cols, strides, dilations, full)
        assert _same(got, T.add_windows_2d_twin(cols, strides, dilations, full))


def test_window_column_sums_match_their_twin():
    # MLAS's order: each window column down the rows from its first cell, then the columns
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 9, 11)).astype(F)
    x[0, :4, :4] = -0.0
    for kernel, strides, pads, out in [((3, 3), (1, 1), (1, 1), (9, 11)), ((2, 3), (2, 1), (0, 2), (4, 13)),
                                       ((4, 4), (3, 3), (2, 2), (5, 5)), ((1, 1), (1, 1), (0, 0), (9, 11)),
                                       ((3, 3), (2, 2), (0, 0), (5, 6))]:   # the last: a ceil_mode overhang
        got = SG_ROWS.window_column_sums_2d(x, kernel, strides, pads, out)
        assert _same(got, T.window_column_sums_2d_twin(x, kernel, strides, pads, out))
    assert np.signbit(SG_ROWS.window_column_sums_2d(x, (2, 2), (1, 1), (0, 0), (8, 10))[0, 0, 0])
