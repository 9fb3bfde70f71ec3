"""onnxruntime's fused ops (refrt/ops/contrib_fused.py) against onnxruntime's CPU provider.

One-node models run in refrt and in onnxruntime with graph optimizations disabled; the outputs
must be the same bits: FusedConv (every activation onnxruntime's kernel takes, with and without
the fused sum Z, K in one block and in several, depthwise, pointwise, 1-D, one output
position), FusedGemm, FusedMatMul (alpha, transposes, batch transposes, constant B, the M = 1
and N = 1 kernels), the channels-last QLinearConv (uint8 / int8, per-tensor and per-channel
weights) and NhwcMaxPool. FusedGemm's Elu, Selu, Softplus, ParametricSoftplus and ScaledTanh
are onnxruntime's Eigen exp / log / tanh, which refrt does not reproduce: those agree within
1e-6 + 1e-4 relative (docs/NUMERICS.md).

``test_fused_models.py`` (tests/core) runs whole models optimized by onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest

import refrt
from refrt.errors import NodeError

from helpers import one_node
from ort_helpers import ort_session, refrt_like_ort

pytest.importorskip("onnxruntime")

F = np.float32


def run_both(op_type, inputs, attrs=None, const=()):
    model, feeds = one_node(op_type, inputs, attrs, const=const)
    return refrt_like_ort(model).run(None, feeds)[0], ort_session(model).run(None, feeds)[0]


def assert_same_bits(ours, theirs):
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, \
        (ours.dtype, ours.shape, theirs.dtype, theirs.shape)
    if ours.dtype.kind == "f":
        differ = ours.view(np.uint32) != theirs.view(np.uint32)
        assert not differ.any(), f"{int(differ.sum())} of {ours.size} values differ"
    else:
        np.testing.assert_array_equal(ours, theirs)


# ---------------------------------------------------------------- FusedConv

CONV_ACTIVATIONS = [(None, None), ("Relu", None), ("Tanh", None), ("Sigmoid", None),
                    ("LeakyRelu", [0.1]), ("Clip", [-0.5, 0.7]), ("HardSigmoid", [0.2, 0.5]),
                    ("HardSwish", None)]

# (X shape, W shape, group, attributes)
CONV_SHAPES = [
    ((2, 3, 9, 9), (8, 3, 3, 3), 1, {"pads": [1, 1, 1, 1]}),
    ((1, 16, 12, 12), (16, 1, 3, 3), 16, {"pads": [1, 1, 1, 1]}),        # depthwise
    ((2, 16, 12, 12), (16, 1, 5, 5), 16, {"pads": [2, 2, 2, 2], "strides": [2, 2]}),
    ((1, 16, 7, 7), (32, 16, 1, 1), 1, {}),                               # pointwise
    ((2, 64, 10, 10), (32, 64, 3, 3), 1, {"pads": [1, 1, 1, 1]}),         # K = 576: 3 blocks
    ((1, 300, 4, 4), (20, 300, 1, 1), 1, {}),                             # pointwise, K = 300
    ((1, 8, 1, 1), (4, 8, 1, 1), 1, {}),                                  # one output position
    ((2, 4, 20), (6, 4, 3), 1, {"strides": [2], "dilations": [2]}),       # 1-D
    ((1, 8, 5, 6, 7), (4, 4, 3, 3, 3), 2, {"pads": [1, 0, 1, 1, 0, 1]}),  # 3-D, groups
]


def conv_case(index, seed=0):
    rng = np.random.default_rng(seed + index)
    xs, ws, group, attrs = CONV_SHAPES[index]
    x = (rng.standard_normal(xs) * 2).astype(F)
    w = (rng.standard_normal(ws) * 0.3).astype(F)
    b = rng.standard_normal(ws[0]).astype(F)
    return x, w, b, dict(attrs, group=group), rng


@pytest.mark.parametrize("shape", range(len(CONV_SHAPES)))
@pytest.mark.parametrize("activation, params", CONV_ACTIVATIONS)
def test_fused_conv_bit_exact(shape, activation, params):
    x, w, b, attrs, _ = conv_case(shape)
    if activation:
        attrs["activation"] = activation
    if params:
        attrs["activation_params"] = params
    assert_same_bits(*run_both("FusedConv", [x, w, b], attrs, const=(1, 2)))


@pytest.mark.parametrize("shape", range(len(CONV_SHAPES)))
@pytest.mark.parametrize("activation", [None, "Relu", "Sigmoid"])
def test_fused_conv_with_sum_bit_exact(shape, activation):
    """Z is where MLAS accumulates the product: with K in several blocks (576 values), adding Z
    to the finished convolution instead gives other bits (checked here too)."""
    x, w, b, attrs, rng = conv_case(shape, seed=10)
    y, _ = run_both("FusedConv", [x, w], attrs, const=(1,))
    z = rng.standard_normal(y.shape).astype(F)
    if activation:
        attrs["activation"] = activation
    ours, theirs = run_both("FusedConv", [x, w, b, z], attrs, const=(1, 2))
    assert_same_bits(ours, theirs)
    if shape == 4 and activation is None:
        naive = (y + z) + b.reshape(-1, 1, 1)
        assert (naive != theirs).any()


def test_fused_conv_without_bias_and_graph_input_weights():
    x, w, b, attrs, rng = conv_case(4, seed=20)
    assert_same_bits(*run_both("FusedConv", [x, w], dict(attrs, activation="Relu")))
    y, _ = run_both("FusedConv", [x, w], attrs)
    z = rng.standard_normal(y.shape).astype(F)
    assert_same_bits(*run_both("FusedConv", [x, w, None, z], dict(attrs, activation="Tanh")))


def test_fused_conv_activations_on_special_values():
    """NaN passes through every activation; infinities clamp as MLAS's min/max do (HardSwish of
    -inf is NaN: -inf * 0)."""
    x = np.zeros((1, 1, 2, 4), F)
    w = np.ones((4, 1, 1, 1), F)
    b = np.array([np.nan, -0.0, np.inf, -np.inf], F)
    for activation, params in CONV_ACTIVATIONS[1:]:
        attrs = {"activation": activation}
        if params:
            attrs["activation_params"] = params
        with np.errstate(invalid="ignore"):
            ours, theirs = run_both("FusedConv", [x, w, b], attrs, const=(1, 2))
        np.testing.assert_array_equal(ours, theirs)


def test_fused_conv_hard_swish_ignores_activation_params():
    x, w, b, attrs, _ = conv_case(0)
    plain, _ = run_both("FusedConv", [x, w, b], dict(attrs, activation="HardSwish"))
    ours, theirs = run_both("FusedConv", [x, w, b],
                            dict(attrs, activation="HardSwish", activation_params=[1.0, 0.0]))
    assert_same_bits(ours, theirs)
    assert_same_bits(ours, plain)


# ---------------------------------------------------------------- FusedGemm

GEMM_EXACT = [("Relu", {}), ("Tanh", {}), ("Sigmoid", {}),
              ("LeakyRelu", {"activation_alpha": 0.1}),
              ("HardSigmoid", {"activation_alpha": 0.2, "activation_beta": 0.5}),
              ("ThresholdedRelu", {"activation_alpha": 0.3}), ("Softsign", {})]
GEMM_EIGEN = [("Elu", {"activation_alpha": 1.0}),
              ("Selu", {"activation_alpha": 1.67326, "activation_gamma": 1.0507}),
              ("Softplus", {}),
              ("ParametricSoftplus", {"activation_alpha": 0.7, "activation_beta": 1.3}),
              ("ScaledTanh", {"activation_alpha": 0.7, "activation_beta": 1.3})]
# (M, K, N), transB, constant B and C, Gemm's alpha and beta
GEMM_SHAPES = [((8, 64, 32), 1, True, 1.0, 1.0), ((5, 300, 7), 0, False, 1.0, 1.0),
               ((1, 40, 10), 1, True, 1.0, 1.0), ((64, 16, 1), 0, False, 1.0, 0.5),
               ((16, 600, 40), 1, True, 1.0, 1.0), ((16, 600, 40), 0, False, 0.7, 1.0),
               ((1, 300, 9), 1, True, 1.3, 2.0), ((1, 300, 9), 0, False, 0.5, 0.0)]


def gemm_case(index):
    rng = np.random.default_rng(100 + index)
    (m, k, n), trans_b, const, alpha, beta = GEMM_SHAPES[index]
    a = rng.standard_normal((m, k)).astype(F)
    b = (rng.standard_normal((n, k) if trans_b else (k, n)) * 0.3).astype(F)
    c = rng.standard_normal(n).astype(F)
    attrs = {"transB": trans_b, "alpha": alpha, "beta": beta}
    return [a, b, c], attrs, (1, 2) if const else ()


@pytest.mark.parametrize("shape", range(len(GEMM_SHAPES)))
@pytest.mark.parametrize("activation, params", GEMM_EXACT)
def test_fused_gemm_bit_exact(shape, activation, params):
    inputs, attrs, const = gemm_case(shape)
    assert_same_bits(*run_both("FusedGemm", inputs, dict(attrs, activation=activation, **params),
                               const=const))


@pytest.mark.parametrize("shape", range(len(GEMM_SHAPES)))
@pytest.mark.parametrize("activation, params", GEMM_EIGEN)
def test_fused_gemm_eigen_activations_close(shape, activation, params):
    """onnxruntime's functors use Eigen's float32 exp, log and tanh: within 1e-6 + 1e-4 relative
    (the relative term for Softplus's log(e^X + 1), whose rounding of 1 + e^X turns a 1-ULP
    difference of e^X into 4e-5 relative for X near -7; the other activations stay within
    7e-6 relative, 2.4e-7 absolute)."""
    inputs, attrs, const = gemm_case(shape)
    ours, theirs = run_both("FusedGemm", inputs, dict(attrs, activation=activation, **params),
                            const=const)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- FusedMatMul

# (A shape, B shape, attributes, constant B)
MATMUL_CASES = [
    ((2, 4, 8, 16), (2, 4, 16, 8), {"alpha": 0.25}, False),                 # BERT's Q K^T
    ((2, 4, 8, 32), (2, 4, 8, 32), {"alpha": 0.1767767, "transB": 1}, False),
    ((2, 4, 8, 300), (2, 4, 300, 8), {"alpha": 0.3}, False),               # K in 3 blocks
    ((3, 40, 300), (300, 50), {"alpha": 0.3}, True),
    ((3, 40, 300), (300, 50), {"alpha": 0.3}, False),
    ((3, 40, 300), (50, 300), {"transB": 1}, True),
    ((3, 40, 300), (50, 300), {"transB": 1}, False),
    ((1, 300), (300, 50), {"alpha": 0.7}, False),                          # M = 1 with alpha
    ((1, 300), (50, 300), {"transB": 1}, False),                           # M = 1 kernel, B^T
    ((5, 300), (300, 1), {}, False),                                       # N = 1 kernel
    ((5, 300), (300, 1), {"alpha": 0.5}, False),
    ((300, 5), (300, 7), {"transA": 1}, False),
    ((300, 5), (300, 7), {"transA": 1, "alpha": 0.3}, False),
    ((300, 5), (300, 7), {"transA": 1}, True),
    ((2, 300, 1), (2, 300, 7), {"transA": 1}, False),
    ((8, 2, 4, 16), (8, 2, 4, 16), {"transBatchA": 1, "transBatchB": 1, "transB": 1,
                                     "alpha": 0.5}, False),
    ((8, 2, 16), (2, 8, 16), {"transBatchA": 1, "transB": 1}, False),
    ((16, 2, 8), (2, 16, 8), {"transBatchA": 1, "transA": 1}, False),
    ((300,), (300, 7), {"alpha": 0.3}, False),
    ((4, 300), (300,), {"alpha": 0.3}, False),
    ((2, 1, 8, 16), (1, 3, 16, 8), {"alpha": 0.3}, False),
    ((2, 64, 256), (1, 256, 300), {}, False),
    ((2, 64, 600), (600, 70), {"alpha": 1.3}, False),
]


@pytest.mark.parametrize("case", range(len(MATMUL_CASES)))
def test_fused_matmul_bit_exact(case):
    a_shape, b_shape, attrs, const = MATMUL_CASES[case]
    rng = np.random.default_rng(200 + case)
    a, b = rng.standard_normal(a_shape).astype(F), rng.standard_normal(b_shape).astype(F)
    assert_same_bits(*run_both("FusedMatMul", [a, b], attrs, const=(1,) if const else ()))


# ---------------------------------------------------------------- channels-last quantized ops

QCONV_SHAPES = [((1, 8, 8, 3), (16, 3, 3, 3), 1, {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
                ((2, 7, 7, 16), (16, 1, 3, 3), 16, {"pads": [1, 1, 1, 1]}),
                ((1, 5, 5, 32), (24, 32, 1, 1), 1, {}),
                ((1, 20, 6), (8, 6, 3), 1, {"dilations": [2]})]


def codes(rng, shape, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("shape", range(len(QCONV_SHAPES)))
@pytest.mark.parametrize("x_type, w_type", [(np.uint8, np.int8), (np.uint8, np.uint8),
                                            (np.int8, np.int8)])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("channels_last", [1, 0])
def test_ms_qlinear_conv_bit_exact(shape, x_type, w_type, per_channel, channels_last):
    rng = np.random.default_rng(300 + shape)
    xs, ws, group, attrs = QCONV_SHAPES[shape]
    x = codes(rng, xs, x_type)
    if not channels_last:
        x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    w = codes(rng, ws, w_type)
    m = ws[0]
    w_scale = rng.uniform(0.001, 0.02, m).astype(F) if per_channel else np.array(0.01, F)
    w_zp_value = 0 if w_type == np.int8 else 128
    w_zp = np.full(m, w_zp_value, w_type) if per_channel else np.array(w_zp_value, w_type)
    bias = rng.integers(-2000, 2000, m).astype(np.int32)
    inputs = [x, F(0.02), np.array(3, x_type), w, w_scale, w_zp, F(0.15), np.array(5, x_type), bias]
    assert_same_bits(*run_both("QLinearConv", inputs,
                               dict(attrs, group=group, channels_last=channels_last),
                               const=(1, 2, 3, 4, 5, 6, 7, 8)))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("shape, attrs", [
    ((2, 9, 9, 5), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((1, 10, 11, 3), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "ceil_mode": 1,
                      "strides": [2, 2]}),
    ((1, 12, 4), {"kernel_shape": [3], "dilations": [2]}),
    ((1, 8, 8, 4), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}),
    ((1, 4, 5, 6, 2), {"kernel_shape": [2, 2, 3], "strides": [1, 2, 2]}),
])
def test_nhwc_max_pool_bit_exact(dtype, shape, attrs):
    x = codes(np.random.default_rng(400), shape, dtype)
    assert_same_bits(*run_both("NhwcMaxPool", [x], attrs))


# ---------------------------------------------------------------- bad input


def refrt_run(op_type, inputs, attrs, const=()):
    model, feeds = one_node(op_type, inputs, attrs, const=const)
    return refrt.InferenceSession(model).run(None, feeds)


@pytest.mark.parametrize("op_type, inputs, attrs, message", [
    ("FusedConv", "conv", {"activation": "Gelu"}, r"unknown activation 'Gelu'.*Relu"),
    ("FusedConv", "conv", {"activation": "relu"}, r"unknown activation 'relu'"),
    ("FusedConv", "conv", {"activation": "LeakyRelu"}, r"LeakyRelu takes 1 activation_params, got 0"),
    ("FusedConv", "conv", {"activation": "Clip", "activation_params": [0.0]},
     r"Clip takes 2 activation_params, got 1"),
    ("FusedConv", "conv_rank2", {"activation": "Relu"}, r"X must have rank >= 3"),
    ("FusedConv", "conv_bad_sum", {}, r"Z \(the fused sum\) must have the output's shape"),
    ("FusedConv", "conv_bad_bias", {}, r"B must be 1-D with one value per output channel"),
    ("FusedGemm", "gemm", {"activation": "Swish"}, r"unknown activation 'Swish'"),
    ("FusedGemm", "gemm", {}, r"unknown activation None"),
    ("FusedGemm", "gemm", {"activation": "LeakyRelu"}, r"needs the attribute\(s\) activation_alpha"),
    ("FusedGemm", "gemm_rank3", {"activation": "Relu"}, r"A and B must be 2-D"),
    ("FusedMatMul", "matmul", {"transBatchA": 1}, r"same rank >= 3"),
    ("FusedMatMul", "matmul", {"transB": 1}, r"do not match"),
    ("QLinearConv", "qconv_rank2", {"channels_last": 1}, r"X must have rank >= 3"),
    ("NhwcMaxPool", "pool_float", {"kernel_shape": [2, 2]}, r"X must be uint8 or int8"),
    ("NhwcMaxPool", "pool_rank", {"kernel_shape": [2, 2]}, r"does not fit kernel_shape"),
])
def test_bad_input_is_a_node_error_naming_the_node(op_type, inputs, attrs, message):
    rng = np.random.default_rng(0)
    x4 = rng.standard_normal((1, 2, 5, 5)).astype(F)
    w4 = rng.standard_normal((3, 2, 3, 3)).astype(F)
    forms = {
        "conv": [x4, w4],
        "conv_rank2": [x4[0, 0], w4[0, 0]],
        "conv_bad_sum": [x4, w4, None, np.zeros((1, 3, 5, 5), F)],
        "conv_bad_bias": [x4, w4, np.zeros(2, F)],
        "gemm": [x4[0, 0], x4[0, 0]],
        "gemm_rank3": [x4[0], x4[0]],
        "matmul": [x4[0, 0, :, :3], x4[0, 0]],
        "qconv_rank2": [np.zeros((4, 3), np.uint8), F(0.1), np.uint8(0),
                        np.zeros((2, 3, 1), np.int8), F(0.1), np.int8(0), F(0.1), np.uint8(0)],
        "pool_float": [x4],
        "pool_rank": [np.zeros((1, 5, 5, 2, 2), np.uint8)],
    }
    with pytest.raises(NodeError, match=message) as e:
        refrt_run(op_type, forms[inputs], attrs)
    assert e.value.op_type == op_type and e.value.node_name in str(e.value)


# ---------------------------------------------------------------- other modes


def test_twin_kernels_give_the_same_bits():
    """The NumPy twins (SessionOptions.kernels = "twins") run the same arithmetic."""
    x, w, b, attrs, rng = conv_case(4, seed=30)
    y, _ = run_both("FusedConv", [x, w], attrs, const=(1,))
    z = rng.standard_normal(y.shape).astype(F)
    a, bm = rng.standard_normal((2, 4, 8, 300)).astype(F), rng.standard_normal((2, 4, 300, 8)).astype(F)
    for op_type, inputs, attributes in [("FusedConv", [x, w, b, z], dict(attrs, activation="Relu")),
                                        ("FusedMatMul", [a, bm], {"alpha": 0.3})]:
        model, feeds = one_node(op_type, inputs, attributes)
        options = refrt.SessionOptions()
        options.kernels = "twins"
        twins = refrt_like_ort(model, sess_options=options).run(None, feeds)[0]
        assert_same_bits(twins, refrt_like_ort(model).run(None, feeds)[0])


def test_spec_numerics_computes_the_formula():
    """numerics="spec": NumPy's products, the same formulas (close to onnxruntime)."""
    x, w, b, attrs, rng = conv_case(0, seed=31)
    y, _ = run_both("FusedConv", [x, w], attrs, const=(1,))
    z = rng.standard_normal(y.shape).astype(F)
    a, bm = rng.standard_normal((3, 40)).astype(F), rng.standard_normal((50, 40)).astype(F)
    for op_type, inputs, attributes in [
            ("FusedConv", [x, w, b, z], dict(attrs, activation="Sigmoid")),
            ("FusedGemm", [a, bm, b[:1]], {"activation": "Tanh", "transB": 1, "alpha": 0.5}),
            ("FusedMatMul", [a, bm], {"alpha": 0.3, "transB": 1})]:
        model, feeds = one_node(op_type, inputs, attributes)
        ours = refrt.InferenceSession(model, numerics="spec").run(None, feeds)[0]
        np.testing.assert_allclose(ours, ort_session(model).run(None, feeds)[0], rtol=1e-5,
                                   atol=1e-5)
