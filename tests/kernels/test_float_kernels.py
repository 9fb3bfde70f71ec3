"""The float32 kernels: onnxruntime's erf, the layer-norm and softmax row kernels (and the ops
on them, against onnxruntime), and the FMA GEMM tiles."""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_data import (
    SETTINGS,
    K,
    T,
    same_bits,
)

# --------------------------------------------------------------------------- float32 erf

M = importlib.import_module(K.__name__ + ".mathf")
ERF_SPECIALS = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 0.921875, -0.921875,
                         np.nextafter(np.float32(0.921875), np.float32(1)), 3.925, -3.925, 3.9249999,
                         4.0, 1e-30, -1e-45, 1e30, -3.4028235e38], np.float32)


def same_float_bits(a, b):
    """Equal bits, or both NaN (NaN payloads are not compared)."""
    return a.shape == b.shape and bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))))


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(0, 5000), st.sampled_from(["normal", "bits", "range"]))
def test_erf_f32_matches_twin(seed, n, kind):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x = (rng.standard_normal(n) * 2).astype(np.float32)
    elif kind == "bits":  # every float32 bit pattern is possible, NaN and inf included
        x = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    else:
        x = rng.uniform(-5, 5, n).astype(np.float32)
    x = np.concatenate([x, ERF_SPECIALS])
    before = x.copy()
    assert same_float_bits(M.erf_f32(x), T.erf_f32_twin(x))
    assert same_float_bits(x, before)


def test_erf_f32_is_within_3_ulp_of_erf_and_keeps_shape():
    import math

    x = np.linspace(-6, 6, 21000, dtype=np.float32)
    y = M.erf_f32(x.reshape(7, -1, 3)).reshape(-1)
    exact = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.max(np.abs(y - exact) / np.spacing(np.abs(y).astype(np.float32))) <= 3
    assert M.erf_f32(np.zeros((0, 4), np.float32)).shape == (0, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_erf_op_matches_onnxruntime_bit_for_bit(dtype):
    from onnx import TensorProto, helper

    from refrt import InferenceSession

    from ort_helpers import ort_session

    et = TensorProto.FLOAT if dtype == np.float32 else TensorProto.FLOAT16
    graph = helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "erf",
                              [helper.make_tensor_value_info("x", et, [None])],
                              [helper.make_tensor_value_info("y", et, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    rng = np.random.default_rng(0)
    if dtype == np.float16:  # every float16 value
        x = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    else:
        x = np.concatenate([(rng.standard_normal(60000) * 2).astype(np.float32),
                            np.linspace(-4.5, 4.5, 9001, dtype=np.float32), ERF_SPECIALS,
                            rng.integers(0, 2**32, 30000, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    expected = ort_session(model).run(None, {"x": x})[0]
    got = InferenceSession(model).run(None, {"x": x})[0]
    assert got.dtype == expected.dtype
    assert np.all((got == expected) | (np.isnan(got) & np.isnan(expected)))
    assert np.array_equal(np.signbit(got), np.signbit(expected))


# --------------------------------------------------------------------------- row kernels (float32)
#
# kernels/rows.py: onnxruntime's layer norm and softmax over the last axis of [rows, n]. Compared
# with their NumPy twins bit for bit, with float64 NumPy computations (tolerances in float32 ULPs,
# scaled by the number of additions a lane makes) and, through the ops, with onnxruntime.

ROWS = importlib.import_module(K.__name__ + ".rows")
EPS32 = float(np.finfo(np.float32).eps)  # 2^-23


def _additions(n):
    """Additions behind one row sum: n / 8 per lane, the levels combining the lanes, and slack."""
    return n // 8 + 8


ROW_FILLS = ("normal", "normal", "constant", "large", "offset", "tiny", "specials")


def row_matrix(rng, rows, n, fill):
    """float32 [rows, n]; "specials" puts -inf, NaN or +inf into some rows of normal values."""
    x = rng.standard_normal((rows, n))
    if fill == "constant":
        x = np.repeat(rng.standard_normal((rows, 1)) * 10, n, axis=1)
    elif fill == "large":
        x = x * 1e15
    elif fill == "offset":      # mean far from zero next to the spread
        x = x + 1e4
    elif fill == "tiny":
        x = x * 1e-30
    x = x.astype(np.float32)
    if fill == "specials":
        for r in range(rows):
            kind = rng.integers(0, 4)
            if kind:
                x[r, rng.integers(0, n, size=rng.integers(1, 3))] = (-np.inf, np.nan, np.inf)[kind - 1]
    return x


def _layer_norm_reference(x, scale, bias, eps, mean=None):
    """float64 layer norm of float32 data; with ``mean`` given, the variance and output use that
    mean (the kernel's, so the rest of its arithmetic can be checked on its own)."""
    xd = x.astype(np.float64)
    m = xd.mean(axis=1, keepdims=True) if mean is None else mean.astype(np.float64)[:, None]
    d = xd - m
    inv = 1 / np.sqrt((d * d).mean(axis=1, keepdims=True) + np.float64(np.float32(eps)))
    y = d * inv * scale
    return (y if bias is None else y + bias), m[:, 0], inv[:, 0]


row_cases = st.fixed_dictionaries({
    "rows": st.one_of(st.just(1), st.integers(1, 40)),
    "n": st.one_of(st.integers(1, 40), st.sampled_from([15, 16, 17, 31, 32, 33, 127, 128, 768]),
                   st.integers(41, 1100)),
    "fill": st.sampled_from(ROW_FILLS),
    "bias": st.booleans(),
    "eps": st.sampled_from([1e-5, 1e-12, 1e-3]),
    "seed": st.integers(0, 2**32 - 1),
})


@SETTINGS
@given(row_cases)
def test_layer_norm_rows_matches_float64(case):
    rng = np.random.default_rng(case["seed"])
    rows, n, eps = case["rows"], case["n"], case["eps"]
    x = row_matrix(rng, rows, n, case["fill"])
    scale = rng.standard_normal(n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if case["bias"] else None
    before = x.copy()
    y, mean, inv_std = ROWS.layer_norm_rows(x, scale, bias, eps)
    assert same_float_bits(x, before)
    assert y.shape == x.shape and mean.shape == inv_std.shape == (rows,)
    assert y.dtype == mean.dtype == inv_std.dtype == np.float32

    finite = np.all(np.isfinite(x), axis=1)
    # a non-finite value in a row makes its statistics and outputs NaN, as in NumPy
    assert np.all(np.isnan(y[~finite])) and np.all(np.isnan(inv_std[~finite]))
    assert not np.any(np.isfinite(mean[~finite]))
    if not finite.any():
        return
    x, y, mean, inv_std = x[finite], y[finite], mean[finite], inv_std[finite]
    e = EPS32 * _additions(n)
    mean_abs = np.abs(x.astype(np.float64)).mean(axis=1)
    _, true_mean, _ = _layer_norm_reference(x, scale, bias, eps)
    assert np.all(np.abs(mean - true_mean) <= e * mean_abs)
    # given the kernel's mean: the variance sum (relative e), root and division, then y
    ref, _, ref_inv = _layer_norm_reference(x, scale, bias, eps, mean=mean)
    assert np.all(np.abs(inv_std - ref_inv) <= (e / 2 + 2 * EPS32) * ref_inv)
    t = np.abs((x.astype(np.float64) - mean[:, None]) * ref_inv[:, None] * scale)
    tol = (e / 2 + 4 * EPS32) * t + 2 * EPS32 * np.abs(ref) + 1e-45
    assert np.all(np.abs(y - ref) <= tol)


@SETTINGS
@given(row_cases)
def test_row_kernels_match_their_numpy_twins_bit_for_bit(case):
    rng = np.random.default_rng(case["seed"])
    x = row_matrix(rng, case["rows"], case["n"], case["fill"])
    scale = rng.standard_normal(case["n"]).astype(np.float32)
    bias = rng.standard_normal(case["n"]).astype(np.float32) if case["bias"] else None
    with np.errstate(all="ignore"):
        for got, want in zip(ROWS.layer_norm_rows(x, scale, bias, case["eps"]),
                             T.layer_norm_rows_twin(x, scale, bias, case["eps"])):
            assert same_float_bits(got, want)
        for wide in (False, True):
            for log in (False, True):
                assert same_float_bits(ROWS.softmax_rows(x, wide, log), T.softmax_rows_twin(x, wide, log))
        assert same_float_bits(ROWS.global_average_rows(x), T.global_average_rows_twin(x))
        # rows starting at any place relative to the 16-byte boundary, neighbours alike or not
        for offsets in (np.arange(len(x)) * x.shape[1], rng.integers(0, 9, len(x))):
            assert same_float_bits(ROWS.eigen_row_sums(x, offsets), T.eigen_row_sums_twin(x, offsets))
        # the residual form: a + b summed in float32 first, then the same layer norm
        other = rng.standard_normal(x.shape).astype(np.float32)
        for got, want in zip(ROWS.add_layer_norm_rows(x, other, scale, bias, case["eps"]),
                             ROWS.layer_norm_rows(x + other, scale, bias, case["eps"])):
            assert same_float_bits(got, want)


@pytest.mark.parametrize("rows,n", [(128, 768), (3, 5), (1, 1), (64, 100)])
def test_layer_norm_rows_well_conditioned_within_a_few_ulp(rows, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((rows, n)).astype(np.float32)
    scale, bias = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    y, mean, inv_std = ROWS.layer_norm_rows(x, scale, bias, 1e-5)
    ref, ref_mean, ref_inv = _layer_norm_reference(x, scale, bias, 1e-5)
    scaled = np.abs(scale) * (np.abs(ref - bias) / np.maximum(np.abs(scale), 1e-30) + 1) + np.abs(bias)
    assert np.max(np.abs(y - ref) / (EPS32 * scaled)) <= 8
    assert np.max(np.abs(inv_std - ref_inv) / (EPS32 * ref_inv)) <= 4


def test_layer_norm_rows_constant_rows_and_no_bias():
    x = np.repeat(np.array([[0.375], [-1.25], [0.0]], np.float32), 37, axis=1)  # exact sums
    scale = np.linspace(-2, 2, 37, dtype=np.float32)
    y, mean, inv_std = ROWS.layer_norm_rows(x, scale, None, 1e-5)
    assert np.array_equal(mean, x[:, 0])
    assert np.all(y == 0) and np.all(inv_std == np.float32(1) / np.sqrt(np.float32(1e-5)))


def test_layer_norm_rows_rejects_bad_operands():
    x = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="scale must have 8"):
        ROWS.layer_norm_rows(x, np.ones(7, np.float32))
    with pytest.raises(ValueError, match="bias must have 8"):
        ROWS.layer_norm_rows(x, np.ones(8, np.float32), np.ones(9, np.float32))
    with pytest.raises(ValueError, match=r"\[rows, n\]"):
        ROWS.layer_norm_rows(np.zeros(8, np.float32), np.ones(8, np.float32))
    assert ROWS.layer_norm_rows(np.zeros((0, 8), np.float32), np.ones(8, np.float32))[0].shape == (0, 8)


def _softmax_reference(x):
    xd = x.astype(np.float64)
    e = np.exp(xd - xd.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@SETTINGS
@given(row_cases)
def test_softmax_rows_matches_float64(case):
    rng = np.random.default_rng(case["seed"])
    rows, n = case["rows"], case["n"]
    x = row_matrix(rng, rows, n, case["fill"])
    if case["fill"] == "normal" and case["bias"]:
        x *= 30                                       # many results below 2^-126
    before = x.copy()
    with np.errstate(all="ignore"):
        ref = _softmax_reference(x)
        numpy_f32 = np.exp(x - x.max(axis=1, keepdims=True))
        numpy_f32 = numpy_f32 / numpy_f32.sum(axis=1, keepdims=True)
        gap = np.abs(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    for wide in (False, True):
        y = ROWS.softmax_rows(x, wide)
        assert same_float_bits(x, before)
        assert y.shape == x.shape and y.dtype == np.float32
        # NaN exactly where NumPy's float32 softmax has NaN (a NaN or +inf in the row: all of it)
        assert np.array_equal(np.isnan(y), np.isnan(numpy_f32))
        ok = ~np.isnan(numpy_f32)
        assert np.all(y[np.isneginf(x) & ok] <= 2.0**-149)   # -inf: 0, or the least subnormal
        ok &= np.isfinite(x)
        # x - max rounds to float32 (relative error 2^-24, i.e. |x - max| 2^-24 in e^x), MLAS's e^x
        # within a few ULP, the lane sum, 1 / sum and the product; results below 2^-126 may be 0
        tol = EPS32 * ref[ok] * (gap[ok] / 2 + _additions(n) + 8) + 2.0**-126
        assert np.all(np.abs(y[ok] - ref[ok]) <= tol)


@pytest.mark.parametrize("n", [1, 5, 16, 128, 129])
def test_softmax_rows_rows_sum_to_one(n):
    x = (np.random.default_rng(n).standard_normal((50, n)) * 4).astype(np.float32)
    y = ROWS.softmax_rows(x)
    assert np.all(y >= 0) and np.allclose(y.sum(axis=1, dtype=np.float64), 1, atol=1e-6)
    assert np.array_equal(ROWS.softmax_rows(np.zeros((3, 7), np.float32)), np.full((3, 7), np.float32(1 / 7)))
    assert ROWS.softmax_rows(np.zeros((0, 7), np.float32)).shape == (0, 7)


def test_row_kernels_are_vectorized():
    from refrt.kernels import cpu

    if not cpu.compiles_with_avx2():
        pytest.skip("Numba compiles for a CPU without AVX2 here: no ymm/zmm instructions to find")
    counts = ROWS._vector_instructions()
    wide = {kernel: {name: c["zmm"] + c["ymm"] for name, c in per.items()} for kernel, per in counts.items()}
    # layer norm: its output step (x - mean) * inv_std, then the fused scale and bias, in SIMD
    assert wide["_layer_norm_kernel"]["vmulps"] and wide["_layer_norm_kernel"]["vfmadd213ps"], counts
    assert wide["_layer_norm_kernel"]["vmovups"], counts
    # softmax: the exp polynomial, the lane sums and the scaling
    for name in ("vaddps", "vmulps", "vfmadd213ps", "vmaxps", "vmovups"):
        assert wide["_softmax_kernel"][name], (name, counts)


# --------------------------------------------------------------------------- the ops on the row kernels

def _one_node_model(op_type, shapes, opset, domain="", n_outputs=1, **attrs):
    from onnx import TensorProto, helper

    names = [f"i{k}" for k in range(len(shapes))]
    outs = [f"o{k}" for k in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, domain=domain, **attrs)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info(nm, TensorProto.FLOAT, s)
                               for nm, s in zip(names, shapes)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    return model


@pytest.fixture
def row_kernel_calls(monkeypatch):
    """Counts calls of the row kernels' entry functions."""
    calls = {"layer_norm_rows": 0, "softmax_rows": 0}
    for name in calls:
        original = getattr(ROWS, name)

        def counting(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(ROWS, name, counting)
    return calls


def _mlas_float_kernels_run_here():
    """onnxruntime's float32 layer norm and softmax run MLAS's AVX2/FMA3 (or AVX-512F) kernels,
    which the row kernels reproduce, on CPUs with AVX2 and FMA; elsewhere it runs other code."""
    return {"avx2", "fma"} <= importlib.import_module(K.__name__ + ".cpu").features()[1]


MLAS_ONLY = pytest.mark.skipif(not _mlas_float_kernels_run_here(),
                               reason="onnxruntime runs its MLAS AVX2/AVX-512 float kernels only on "
                                      "CPUs with AVX2 and FMA")


@MLAS_ONLY
@pytest.mark.parametrize("shape,offset", [((1, 128, 768), 0.0), ((2, 50, 99), 3.0), ((4096,), 0.5),
                                          ((300, 17), -1.0), ((8, 128, 768), 0.0), ((4, 100), 2.0),
                                          ((6, 3), 0.0)])
def test_layer_normalization_op_matches_onnxruntime(shape, offset, row_kernel_calls):
    from refrt import InferenceSession

    from ort_helpers import ort_session

    rng = np.random.default_rng(len(shape))
    n = shape[-1]
    x = (rng.standard_normal(shape) * 2 + offset).astype(np.float32)
    scale, bias = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    model = _one_node_model("LayerNormalization", [shape, (n,), (n,)], 17, n_outputs=3, axis=-1,
                            epsilon=1e-12)
    feeds = {"i0": x, "i1": scale, "i2": bias}
    expected = ort_session(model).run(None, feeds)
    got = InferenceSession(model).run(None, feeds)
    assert row_kernel_calls["layer_norm_rows"] == 1
    stats_shape = shape[:-1] + (1,)
    for g, e, shp in zip(got, expected, (shape, stats_shape, stats_shape)):
        assert g.dtype == np.float32 and g.shape == e.shape == shp
    if n >= 8 and n % 8 < 4:
        # onnxruntime's AVX2 kernel, bit for bit (docs/NUMERICS.md)
        for g, e in zip(got, expected):
            assert same_float_bits(g, e)
    else:
        # rows of fewer than 8 values take another path in onnxruntime, and a remainder of 4-7
        # values past the last 8-block is summed in an order not reproduced: the last bit or two
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(got[2], expected[2], rtol=1e-6)
    # numerics="spec" keeps the NumPy expression
    spec = InferenceSession(model, numerics="spec").run(None, feeds)
    assert row_kernel_calls["layer_norm_rows"] == 1
    np.testing.assert_allclose(spec[0], got[0], rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("shape,opset,axis", [((1, 12, 128, 128), 13, -1), ((2, 3, 40, 77), 13, 3),
                                              ((64, 128), 11, 1), ((8, 4, 200), 11, 2),
                                              ((8, 4, 200), 11, 1), ((2, 64, 64), 1, 1),
                                              ((5000,), 13, 0), ((3, 7), 13, -1)])
@pytest.mark.parametrize("log", [False, True], ids=["Softmax", "LogSoftmax"])
@MLAS_ONLY
def test_softmax_op_matches_onnxruntime(shape, opset, axis, log, row_kernel_calls):
    from refrt import InferenceSession

    from ort_helpers import ort_session

    rng = np.random.default_rng(opset + len(shape))
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    x.reshape(-1)[::97] = -np.inf
    model = _one_node_model("LogSoftmax" if log else "Softmax", [shape], opset, axis=axis)
    expected = ort_session(model).run(None, {"i0": x})[0]
    got = InferenceSession(model).run(None, {"i0": x})[0]
    assert row_kernel_calls["softmax_rows"] == 1
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert same_float_bits(got, expected)          # MLAS's exp, lanes and order (docs/NUMERICS.md)
    spec = InferenceSession(model, numerics="spec").run(None, {"i0": x})[0]
    assert row_kernel_calls["softmax_rows"] == 1
    np.testing.assert_allclose(spec, got, rtol=1e-5, atol=1e-9 if not log else 1e-5)


def test_softmax_op_runs_mlas_rows_for_float32_on_any_axis(row_kernel_calls):
    from refrt.registry import lookup

    softmax13 = lookup("Softmax", "", 13).fn
    x = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    from refrt.ops._common import mlas_wide_kernels

    y0 = softmax13(x, axis=0)                             # another axis: a transposed copy
    assert same_float_bits(y0, T.softmax_rows_twin(x.T, mlas_wide_kernels()).T)
    softmax13(x[:8, :8].copy(), axis=-1)                  # 64 elements
    softmax13(x.astype(np.float64), axis=-1)              # float64: NumPy
    softmax11 = lookup("Softmax", "", 11).fn
    softmax11(x.reshape(8, 8, 128), axis=1)               # rows over the trailing axes
    assert row_kernel_calls["softmax_rows"] == 3


def test_layer_normalization_op_fast_path_outputs(row_kernel_calls):
    from refrt.registry import lookup

    layer_norm = lookup("LayerNormalization", "", 17).fn
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 32, 64)).astype(np.float32)
    scale = rng.standard_normal((1, 64)).astype(np.float32)
    for a in (x, scale):
        a.flags.writeable = False
    before = x.copy()
    y, mean, inv_std = layer_norm(x, scale, None, axis=2, epsilon=1e-5)
    assert row_kernel_calls["layer_norm_rows"] == 1
    assert same_float_bits(x, before)
    assert y.shape == x.shape and mean.shape == inv_std.shape == (4, 32, 1)
    assert mean.dtype == inv_std.dtype == np.float32
    np.testing.assert_allclose(mean, x.mean(axis=-1, keepdims=True), atol=1e-6)
    # a transposed (non-contiguous) X gives the same result as its contiguous copy
    xt = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)
    assert same_float_bits(layer_norm(xt, scale, None, axis=-1, epsilon=1e-5)[0], y)
    # normalizing over several axes and small inputs run the kernel; another stash type, NumPy
    layer_norm(x, rng.standard_normal((32, 64)).astype(np.float32), axis=1)
    layer_norm(x[:1, :2], scale, axis=-1)
    layer_norm(x, scale, axis=-1, stash_type=11)
    assert row_kernel_calls["layer_norm_rows"] == 4


def test_skip_layer_normalization_on_the_row_kernel_matches_onnxruntime(row_kernel_calls):
    from refrt import InferenceSession

    from ort_helpers import ort_session

    rng = np.random.default_rng(3)
    x, skip = (rng.standard_normal((2, 64, 256)).astype(np.float32) for _ in range(2))
    gamma, beta = rng.standard_normal(256).astype(np.float32), rng.standard_normal(256).astype(np.float32)
    model = _one_node_model("SkipLayerNormalization", [x.shape, skip.shape, (256,), (256,)], 17,
                            domain="com.microsoft")
    feeds = {"i0": x, "i1": skip, "i2": gamma, "i3": beta}
    expected = ort_session(model).run(None, feeds)[0]
    got = InferenceSession(model).run(None, feeds)[0]
    assert row_kernel_calls["layer_norm_rows"] == 1
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6)


# --------------------------------------------------------------------------- float32 batched GEMM

FG = importlib.import_module(K.__name__ + ".fgemm")


def _sequential_fma_matmul(a, b):
    """Each output as fused multiply-adds over k in order, from 0 (exact float64 products and sums
    rounded once per step: fma32 from the twins)."""
    out = np.zeros(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]),
                   np.float32)
    a_b = np.broadcast_to(a, out.shape[:-2] + a.shape[-2:])
    b_b = np.broadcast_to(b, out.shape[:-2] + b.shape[-2:])
    for kk in range(a.shape[-1]):
        out = T.fma32(np.broadcast_to(a_b[..., :, kk:kk + 1], out.shape),
                      np.broadcast_to(b_b[..., kk:kk + 1, :], out.shape), out)
    return out


def _heads_view(x):
    """x [nb, r, c] as a strided view of a [r, nb, c] array (attention's transposed heads)."""
    return np.swapaxes(np.ascontiguousarray(np.swapaxes(x, 0, 1)), 0, 1)


@SETTINGS
@given(nb=st.integers(1, 4), m=st.integers(1, 40), k=st.integers(0, 70),
       n=st.one_of(st.integers(1, 90), st.integers(250, 300)),    # (8+ column blocks: all rows per task)
       broadcast=st.booleans(), b_transposed=st.booleans(), strided=st.booleans(),
       seed=st.integers(0, 2**31))
def test_batched_matmul_f32_is_sequential_fma(nb, m, k, n, broadcast, b_transposed, strided, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((nb, m, k)).astype(np.float32)
    b = rng.standard_normal((1 if broadcast else nb, k, n)).astype(np.float32)
    if strided:        # views read in place: heads split out of a [seq, heads, dim] array
        a = _heads_view(a)
    if b_transposed:   # stored as B^T, as attention's K^T is
        bt = np.ascontiguousarray(np.swapaxes(b, -1, -2))
        b = np.swapaxes(_heads_view(bt) if strided else bt, -1, -2)
    elif strided:
        b = _heads_view(b)
    a_before, b_before = a.copy(), b.copy()
    got = FG.batched_matmul_f32(a, b)
    assert got.shape == (nb, m, n) and got.dtype == np.float32
    assert same_bits(got, _sequential_fma_matmul(a, b))
    assert same_bits(a, a_before) and same_bits(b, b_before)


def test_batched_matmul_f32_attention_shapes_match_numpy():
    # the BERT attention products: the same bits as numpy.matmul (OpenBLAS) here
    rng = np.random.default_rng(5)
    for a_shape, b_shape in [((1, 12, 128, 64), (1, 12, 64, 128)), ((1, 12, 128, 128), (1, 12, 128, 64))]:
        a = rng.standard_normal(a_shape).astype(np.float32)
        b = rng.standard_normal(b_shape).astype(np.float32)
        got = FG.batched_matmul_f32(a, np.swapaxes(np.swapaxes(b, -1, -2).copy(), -1, -2))
        assert got.shape == np.matmul(a, b).shape
        np.testing.assert_allclose(got, np.matmul(a, b), rtol=1e-5, atol=1e-5)


@SETTINGS
@given(lead=st.sampled_from([(), (1,), (2, 3)]), m=st.integers(1, 40), k=st.integers(0, 70),
       n=st.integers(1, 90), with_bias=st.booleans(), k_block=st.sampled_from([0, 5, 32]),
       with_init=st.booleans(), seed=st.integers(0, 2**31))
def test_matmul_packed_f32_is_sequential_fma_then_bias(lead, m, k, n, with_bias, k_block, with_init, seed):
    """Each output: per block of k_block values of k (0: one block) a chain of fused
    multiply-adds from 0, the blocks added in turn to ``init`` (or the first stored), then the
    bias; full and narrow (zero-padded) column panels alike."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(lead + (m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    init = rng.standard_normal(lead + (m, n)).astype(np.float32) if with_init else None
    a_before, b_before = a.copy(), b.copy()
    packed = FG.pack_b_f32(b)
    got = FG.matmul_packed_f32(a, packed, bias, k_block=k_block, init=init)
    step = k if k_block <= 0 else k_block
    want = None if init is None else init.copy()
    for k0 in range(0, k, max(step, 1)):
        block = _sequential_fma_matmul(a[..., k0:k0 + step], b[k0:k0 + step])
        want = block if want is None else want + block
    if want is None:
        want = np.zeros(lead + (m, n), np.float32)
    if with_bias:
        want = want + bias     # one float32 addition, as an Add node
    assert got.shape == lead + (m, n) and got.dtype == np.float32
    assert same_bits(got, want)
    assert same_bits(a, a_before) and same_bits(b, b_before)


def test_matmul_packed_f32_rejects_mismatched_inputs():
    packed = FG.pack_b_f32(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="does not match"):
        FG.matmul_packed_f32(np.ones((2, 3), np.float32), packed)
    with pytest.raises(ValueError, match="bias"):
        FG.matmul_packed_f32(np.ones((2, 4), np.float32), packed, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="2-D float32"):
        FG.pack_b_f32(np.ones((4, 5), np.float64))


def test_batched_matmul_f32_reads_attention_views_in_place(monkeypatch):
    # Q, K, V as the Transpose ops hand them over: views of [1, 128, 12, 64] arrays
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((1, 128, 12, 64)).astype(np.float32) for _ in range(3))
    copies = []
    real = FG._copied_rows
    monkeypatch.setattr(FG, "_copied_rows", lambda *a: copies.append(a) or real(*a))
    scores = FG.batched_matmul_f32(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 3, 1))
    context = FG.batched_matmul_f32(scores, v.transpose(0, 2, 1, 3))
    assert not copies
    assert same_bits(scores, _sequential_fma_matmul(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 3, 1)))
    assert same_bits(context, _sequential_fma_matmul(scores, v.transpose(0, 2, 1, 3)))


def test_pack_b_f32_layout():
    b = np.arange(3 * 40, dtype=np.float32).reshape(3, 40)
    packed = FG.pack_b_f32(b)
    panels = packed.panels.reshape(2, 3, 32)
    assert (packed.k, packed.n) == (3, 40)
    assert same_bits(panels[0], b[:, :32]) and same_bits(panels[1, :, :8], b[:, 32:])
    assert not panels[1, :, 8:].any()      # the last panel's padding is zero


# --------------------------------------------------------------------------- MLAS logistic and tanh

def test_logistic_and_tanh_kernels_match_their_twins_bit_for_bit():
    from refrt.kernels.activations import logistic_f32, mlas_logistic, mlas_tanh, tanh_f32
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2 ** 32, 300_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 18, -18, 18.000002, -18.000002, 9, -9,
                      1e-30, -1e-45, 3e38, 0.5, -0.5], np.float32)
    for x in (bits, edges, (rng.standard_normal(4097) * 10).astype(np.float32), edges[:5]):
        for kernel, twin in ((logistic_f32, mlas_logistic), (tanh_f32, mlas_tanh)):
            with np.errstate(all="ignore"):
                assert same_bits(kernel(x), twin(x)), kernel.__name__
    assert logistic_f32(np.zeros((2, 0, 3), np.float32)).shape == (2, 0, 3)


def _has_fma():
    from refrt import host
    return "fma" in host.info().features


@pytest.mark.skipif(not _has_fma(), reason="without FMA, onnxruntime evaluates its logistic and "
                    "tanh polynomials with separate multiplies and adds (its SSE2 kernels): "
                    "refrt's ort numerics reproduce the FMA kernels of every AVX2 and later CPU")
@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
def test_sigmoid_and_tanh_ops_are_onnxruntimes_bits_in_ort_numerics(op):
    from onnx import TensorProto, helper

    from refrt import InferenceSession
    ort = pytest.importorskip("onnxruntime")
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    rng = np.random.default_rng(3)
    x = np.concatenate([(rng.standard_normal(20000) * 8).astype(np.float32),
                        np.array([-18.3, 18.3, -9.5, 0.0, -0.0, np.nan, np.inf, -np.inf],
                                 np.float32)])
    theirs = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ours = InferenceSession(model).run(None, {"x": x})[0]
    assert same_bits(np.nan_to_num(ours, nan=7.0), np.nan_to_num(theirs, nan=7.0))
    spec = InferenceSession(model, numerics="spec").run(None, {"x": x})[0]
    if op == "Sigmoid":     # MLAS clamps x to [-18, 18]: 0 where the exact value is ~1.1e-8
        assert ours[-8] == 0.0 and 1e-8 < spec[-8] < 1.2e-8


# --------------------------------------------------------------------------- Relu, Clip, HardSigmoid

CLAMP_EDGES = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 6.0, 6.000001,
                        -2.5, 2.5, 1e-45, -1e-45, 3e38, -3e38], np.float32)


def test_clamp_kernel_matches_its_twin_bit_for_bit():
    A = importlib.import_module(K.__name__ + ".activations")
    rng = np.random.default_rng(8)
    bits = rng.integers(0, 2 ** 32, 50_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    for x in (bits, CLAMP_EDGES, (rng.standard_normal(4097) * 4).astype(np.float32), CLAMP_EDGES[:3],
              np.zeros((2, 0), np.float32)):
        for args in ((0, np.inf), (-1, 2), (np.float32(-0.0), 6), (0, 1, 0.2, 0.5), (3, -3),
                     (-np.inf, np.inf, np.float32(1 / 6), 0.5), (np.nan, 1)):
            got = A.clamp_f32(x, *args)
            assert got.shape == x.shape and same_bits(got, T.clamp_f32_twin(x, *args)), args
    x = CLAMP_EDGES.copy()
    y = A.clamp_f32(x, 0, np.inf)       # a value equal to the bound is kept: Relu(-0) is -0
    assert np.signbit(y[5]) and np.isnan(y[0]) and y[3] == 0 and same_bits(x, CLAMP_EDGES)


@pytest.mark.parametrize("op,attrs,bounds", [
    ("Relu", {}, ()), ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}, ()),
    ("HardSigmoid", {"alpha": 1 / 6, "beta": -0.0}, ()), ("Clip", {}, (0.0, 6.0)),
    ("Clip", {}, (-0.0, 1.0)), ("Clip", {}, (None, 0.0)), ("Clip", {}, (2.0, -2.0))],
    ids=["relu", "hardsigmoid", "hardsigmoid-neg-zero-beta", "relu6", "clip-neg-zero", "clip-max-only",
         "clip-min-above-max"])
def test_relu_clip_hard_sigmoid_are_onnxruntimes_bits(op, attrs, bounds):
    # onnxruntime keeps a value equal to a bound (Relu(-0) is -0; NumPy's maximum gives +0) and
    # NaN; refrt's "ort" numerics do the same
    from onnx import TensorProto, helper, numpy_helper

    from refrt import InferenceSession

    from ort_helpers import ort_session

    rng = np.random.default_rng(9)
    x = np.concatenate([(rng.standard_normal(300_000) * 4).astype(np.float32), CLAMP_EDGES])
    names = ["x"] + [n if v is not None else "" for n, v in zip(("lo", "hi"), bounds)]
    inits = [numpy_helper.from_array(np.array(v, np.float32), n)
             for n, v in zip(names[1:], bounds) if v is not None]
    g = helper.make_graph([helper.make_node(op, names, ["y"], **attrs)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    for part in (x, x[-40:]):           # the parallel kernel and the one for a few elements
        expected = ort_session(model).run(None, {"x": part})[0]
        got = InferenceSession(model).run(None, {"x": part})[0]
        assert same_float_bits(got, expected)
    assert same_bits(x[-len(CLAMP_EDGES):], CLAMP_EDGES)       # the input is not changed


# --------------------------------------------------------------------------- float32 exp (MLAS)

@MLAS_ONLY
def test_exp_op_is_onnxruntime_bit_for_bit_and_the_twin_agrees():
    from refrt import InferenceSession
    from refrt.ops._common import mlas_wide_kernels

    from ort_helpers import ort_session

    rng = np.random.default_rng(12)
    x = np.concatenate([rng.standard_normal(100_000) * 20, rng.uniform(-110, 95, 10_000),
                        [np.nan, np.inf, -np.inf, 0.0, -0.0, 88.72, 88.73, -87.34, -103.9, -104.0]]
                       ).astype(np.float32)
    model = _one_node_model("Exp", [x.shape], 13)
    expected = ort_session(model).run(None, {"i0": x})[0]
    got = InferenceSession(model).run(None, {"i0": x})[0]
    assert same_float_bits(got, expected)
    A = importlib.import_module(K.__name__ + ".activations")
    for wide in (False, True):
        assert same_float_bits(A.exp_f32(x, wide), T.exp_f32_twin(x, wide))
    assert mlas_wide_kernels() in (False, True)
    # "spec" numerics: NumPy's exp, within a few ULP of MLAS's
    spec = InferenceSession(model, numerics="spec").run(None, {"i0": x})[0]
    finite = np.isfinite(spec) & (np.abs(spec) > 1e-37)
    np.testing.assert_allclose(spec[finite], got[finite], rtol=4e-7)


@MLAS_ONLY
@pytest.mark.parametrize("op,attrs", [("Gelu", {}), ("Gelu", {"approximate": "tanh"}), ("HardSwish", {})])
def test_gelu_and_hard_swish_are_onnxruntime_bit_for_bit(op, attrs):
    from onnx import TensorProto, helper

    from refrt import InferenceSession

    from ort_helpers import ort_session

    x = np.concatenate([np.random.default_rng(13).standard_normal(50_000) * 4,
                        [0.0, -0.0, -3.0, 3.0, 30.0, -30.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    model = helper.make_model(helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    expected = ort_session(model).run(None, {"x": x})[0]
    got = InferenceSession(model).run(None, {"x": x})[0]
    assert same_float_bits(got, expected)
    # "spec" numerics: float64 erf / NumPy's tanh, the spec's formula (1 + erf cancels for very
    # negative X, so compare near zero absolutely)
    spec = InferenceSession(model, numerics="spec").run(None, {"x": x})[0]
    ok = np.isfinite(spec)
    np.testing.assert_allclose(spec[ok], got[ok], rtol=1e-5, atol=2e-6)



@MLAS_ONLY
def test_log_op_is_onnxruntime_bit_for_bit_and_the_twin_agrees():
    from refrt import InferenceSession

    from ort_helpers import ort_session

    rng = np.random.default_rng(14)
    x = np.concatenate([np.abs(rng.standard_normal(100_000) * 5), rng.uniform(0, 1e-37, 1000),
                        [0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, 1e-45, 1.17e-38, 3.4e38, 1.0, 0.5]]
                       ).astype(np.float32)
    model = _one_node_model("Log", [x.shape], 13)
    expected = ort_session(model).run(None, {"i0": x})[0]
    got = InferenceSession(model).run(None, {"i0": x})[0]
    # onnxruntime's Eigen loop takes the C library's logf for values outside whole packets of 4:
    # the tail (reproduced) and the edges of the chunks its threads share (not reproduced)
    differ = ~((got.view(np.uint32) == expected.view(np.uint32)) | (np.isnan(got) & np.isnan(expected)))
    assert differ.sum() <= 32
    assert same_float_bits(T._logf(x[differ]), expected[differ])
    small = x[:1003]                       # one chunk: bit for bit, the 3 last values by logf
    model = _one_node_model("Log", [small.shape], 13)
    assert same_float_bits(InferenceSession(model).run(None, {"i0": small})[0],
                           ort_session(model).run(None, {"i0": small})[0])
    A = importlib.import_module(K.__name__ + ".activations")
    assert same_float_bits(A.log_f32(x), T.log_f32_twin(x))
