"""Kernels against their NumPy twins (bit for bit), and against onnxruntime where ORT is the reference.

Shapes, dtypes, zero points and fill patterns come from hypothesis; array contents come from a
NumPy generator seeded by hypothesis (fast for K in the thousands).  Float outputs are compared by
their bits: kernels and twins both compute in float32 with the same operation order.
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ort_helpers import avx2_ort_prefix

try:
    from refrt import kernels as K
except ImportError:  # rest of the package unavailable: load the kernels folder on its own
    _root = pathlib.Path(__file__).resolve().parents[1] / "kernels"
    _spec = importlib.util.spec_from_file_location("refrt_kernels", _root / "__init__.py",
                                                   submodule_search_locations=[str(_root)])
    K = importlib.util.module_from_spec(_spec)
    sys.modules["refrt_kernels"] = K
    _spec.loader.exec_module(K)
T = importlib.import_module(K.__name__ + ".twins")

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT8 = (np.uint8, np.int8)


# --------------------------------------------------------------------------- data helpers

FILLS = ("random", "random", "random", "min", "max", "zero", "extremes")


def int_array(rng, shape, dtype, fill):
    """Integer array of `dtype`: random full range, all min, all max, all 0, or a mix of min/max/0."""
    info = np.iinfo(dtype)
    if fill == "random":
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    if fill == "extremes":
        return rng.choice(np.array([info.min, info.max, 0, 0 if info.min else 1], dtype=dtype), size=shape)
    value = {"min": info.min, "max": info.max, "zero": 0}[fill]
    return np.full(shape, value, dtype=dtype)


def zero_points(rng, draw_kind, n, lo=-300, hi=300):
    """Per-tensor (length 1) or per-row/column (length n) int32 zero points, incl. edges."""
    if draw_kind == "scalar":
        return np.array([rng.choice([0, lo, hi, rng.integers(lo, hi)])], dtype=np.int32)
    return rng.integers(lo, hi, size=n, endpoint=True).astype(np.int32)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        a.view(np.uint8 if a.dtype.itemsize == 1 else f"u{a.dtype.itemsize}"),
        b.view(np.uint8 if b.dtype.itemsize == 1 else f"u{b.dtype.itemsize}"))


gemm_cases = st.fixed_dictionaries({
    "m": st.integers(1, 40),
    "k": st.one_of(st.integers(1, 80), st.integers(1000, 3000)),
    "n": st.integers(1, 40),
    "square": st.booleans(),  # M == K (catches row/column mix-ups)
    "a_dtype": st.sampled_from(INT8),
    "b_dtype": st.sampled_from(INT8),
    "a_fill": st.sampled_from(FILLS),
    "b_fill": st.sampled_from(FILLS),
    "a_zp": st.sampled_from(["scalar", "vector"]),
    "b_zp": st.sampled_from(["scalar", "vector"]),
    "seed": st.integers(0, 2**32 - 1),
})


def make_gemm_case(c):
    rng = np.random.default_rng(c["seed"])
    m, k, n = c["m"], c["k"], c["n"]
    if c["square"]:
        m = k = min(k, 300)
    a = int_array(rng, (m, k), c["a_dtype"], c["a_fill"])
    b = int_array(rng, (k, n), c["b_dtype"], c["b_fill"])
    return a, b, zero_points(rng, c["a_zp"], m), zero_points(rng, c["b_zp"], n)


# --------------------------------------------------------------------------- GEMM


def _vnni_available():
    return importlib.import_module(K.__name__ + ".vnni").available()


def _amx_available():
    return _vnni_available() and importlib.import_module(K.__name__ + ".amx").available()


NO_VNNI = "this CPU has no AVX512-VNNI (or Numba compiles for another CPU): the vnni kernel cannot run"
NO_AMX = ("this CPU has no AMX-INT8, the OS refused the tile state, or Numba compiles for another "
          "CPU: the amx kernel cannot run")
# every GEMM kernel refrt has; "vnni" and "amx" run only where the CPU has them
GEMM_KERNELS = [
    "portable",
    pytest.param("vnni", marks=pytest.mark.skipif(not _vnni_available(), reason=NO_VNNI)),
    pytest.param("amx", marks=pytest.mark.skipif(not _amx_available(), reason=NO_AMX)),
    pytest.param("avx2", marks=pytest.mark.skipif(
        not importlib.import_module(K.__name__ + ".avx2").available(),
        reason="this CPU has no AVX2 (or Numba compiles for a CPU without it): the avx2 kernel cannot run")),
]


@pytest.mark.parametrize("kernel", GEMM_KERNELS)
@SETTINGS
@given(case=gemm_cases)
def test_gemm_int8_matches_twin(kernel, case):
    a, b, az, bz = make_gemm_case(case)
    expected = T.gemm_int8_twin(a, b, az, bz)
    got = K.gemm_int8(a, b, az, bz, kernel=kernel)
    assert got.dtype == np.int32 and got.flags.c_contiguous and np.array_equal(got, expected)
    assert np.array_equal(K.gemm_int8(a, K.pack_b(b), az, bz, kernel=kernel), expected)  # packed once, reused
    bt = K.pack_b(np.ascontiguousarray(b.T), transposed=True)
    assert np.array_equal(K.gemm_int8(a, bt, az, bz, kernel=kernel), expected)


@pytest.mark.parametrize("kernel", GEMM_KERNELS)
@SETTINGS
@given(case=gemm_cases, per_column=st.booleans(), bias=st.booleans(), seed=st.integers(0, 2**31))
def test_gemm_int8_scaled_matches_twin(kernel, case, per_column, bias, seed):
    # the int32 product, then float32(c) * scale (+ bias): the same bits as the two twins
    a, b, az, bz = make_gemm_case(case)
    rng = np.random.default_rng(seed)
    n = b.shape[1]
    s = (rng.random(n if per_column else 1) * 10.0 ** rng.integers(-9, 2)).astype(np.float32)
    bb = (rng.standard_normal(n) * 100).astype(np.float32) if bias else None
    expected = T.scale_bias_int32_twin(T.gemm_int8_twin(a, b, az, bz), s, bb)
    got = K.gemm_int8_scaled(a, K.pack_b(b), az, bz, s, bb, kernel=kernel)
    assert got.dtype == np.float32 and got.flags.c_contiguous and same_bits(got, expected)


@pytest.mark.parametrize("kernel", GEMM_KERNELS)
@pytest.mark.parametrize("m", [1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 64, 79])
def test_gemm_int8_row_tiles_and_column_panels(kernel, m):
    # every row-tile decomposition (AMX 32, 16; VNNI 8, 4, 2, 1), column counts around the
    # 32-wide panels, K around the 64-byte AMX tile rows
    rng = np.random.default_rng(m)
    for n, k in [(31, 5), (32, 64), (33, 130), (96, 3), (1, 1), (40, 63), (17, 65), (64, 192)]:
        a = rng.integers(0, 256, (m, k)).astype(np.uint8)
        b = rng.integers(-128, 128, (k, n)).astype(np.int8)
        assert np.array_equal(K.gemm_int8(a, b, 7, -3, kernel=kernel), T.gemm_int8_twin(a, b, 7, -3))


@pytest.mark.parametrize("kernel", GEMM_KERNELS)
def test_gemm_int8_scalar_zero_points_and_wraparound(kernel):
    a = np.full((2, 3), 255, np.uint8)
    b = np.full((3, 2), -128, np.int8)
    assert np.array_equal(K.gemm_int8(a, b, 0, 0, kernel=kernel), np.full((2, 2), 3 * 255 * -128, np.int32))
    assert np.array_equal(K.gemm_int8(a, b, 255, 0, kernel=kernel), np.zeros((2, 2), np.int32))
    # 40,000 products of 255 * 255 overflow int32: the result wraps like an int32 accumulator
    big = K.gemm_int8(np.full((1, 40000), 255, np.uint8), np.full((40000, 1), 255, np.uint8), kernel=kernel)
    assert big[0, 0] == np.int64(40000 * 255 * 255).astype(np.int32)
    assert np.array_equal(big, T.gemm_int8_twin(np.full((1, 40000), 255, np.uint8),
                                                np.full((40000, 1), 255, np.uint8)))


def test_gemm_int8_rejects_bad_operands():
    a = np.zeros((2, 3), np.uint8)
    with pytest.raises(ValueError):
        K.gemm_int8(a, np.zeros((4, 2), np.int8))
    with pytest.raises(TypeError):
        K.gemm_int8(a.astype(np.int16), np.zeros((3, 2), np.int8))
    with pytest.raises(ValueError):
        K.gemm_int8(a, np.zeros((3, 2), np.int8), a_zp=[1, 2, 3])
    with pytest.raises(ValueError):
        K.gemm_int8(a, np.zeros((3, 2), np.int8), b_zp=[1, 2, 3])
    assert K.gemm_int8(np.zeros((0, 3), np.uint8), np.zeros((3, 2), np.int8)).shape == (0, 2)
    with pytest.raises(ValueError, match="kernel"):
        K.gemm_int8(a, np.zeros((3, 2), np.int8), kernel="sme")


@pytest.mark.skipif(not _vnni_available(), reason=NO_VNNI)
def test_vnni_kernel_is_vpdpbusd_register_tiles():
    V = importlib.import_module(K.__name__ + ".vnni")
    counts = V._instructions()
    # 8-row tile x 2 vectors: 16 vpdpbusd in the 8-row loop body, plus the 4-, 2- and 1-row tiles
    assert counts["vpdpbusd"] >= 16 + 8 + 4 + 2
    assert counts["vpmaddwd"] == 0 and counts["vpdpbusds"] == 0   # (vpmulld: the zero-point fold)


@SETTINGS
@given(m=st.integers(0, 50), n=st.integers(1, 50), per_column=st.booleans(), bias=st.booleans(),
       seed=st.integers(0, 2**31))
def test_scale_bias_int32_matches_twin(m, n, per_column, bias, seed):
    rng = np.random.default_rng(seed)
    c = rng.integers(-2**31, 2**31, (2, m, n)).astype(np.int32)
    s = (rng.random(n if per_column else 1) * 10.0 ** rng.integers(-8, 3)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) * 1e3 if bias else None
    b = np.where(rng.random(n) < 0.2, -0.0, b).astype(np.float32) if bias else None
    got = K.scale_bias_int32(c, s, b)
    assert same_bits(got, T.scale_bias_int32_twin(c, s, b))


@pytest.mark.skipif(not importlib.import_module(K.__name__ + ".avx2").available(),
                    reason="this CPU has no AVX2 (or Numba compiles for a CPU without it)")
def test_avx2_kernel_is_vpmaddwd_register_tiles():
    counts = importlib.import_module(K.__name__ + ".avx2")._instructions()
    # 4-row tile x 3 vectors: 12 pair products in the 4-row loop body, plus the 2- and 1-row
    # tiles; on a VNNI CPU LLVM may merge a product and its add into vpdpwssd
    assert counts["vpmaddwd"] + counts["vpdpwssd"] >= 12 + 6 + 3
    assert counts["vpdpbusd"] == 0


@pytest.mark.skipif(not _amx_available(), reason=NO_AMX)
def test_amx_kernel_is_tile_products():
    A = importlib.import_module(K.__name__ + ".amx")
    counts = A._instructions()
    # 32-row block: 4 tdpbusd, 16-row block: 2; the K loop may be unrolled
    assert counts["tdpbusd"] >= 6 and counts["tileloadd"] >= 3 + 2 and counts["tilestored"] >= 6
    assert counts["ldtilecfg"] >= 1 and counts["tilerelease"] >= 1
    assert counts["vpdpbusd"] >= 8 + 4 + 2 + 1   # rows below one tile: the VNNI tiles


def test_amx_kernel_refuses_panels_not_padded_to_64():
    A = importlib.import_module(K.__name__ + ".amx")
    V = importlib.import_module(K.__name__ + ".vnni")
    bt = np.ones((4, 10), np.int8)
    with pytest.raises(ValueError, match="multiple of 64"):
        A.gemm(np.ones((16, 10), np.uint8), V.pack_b(bt, bt.sum(axis=1, dtype=np.int64)),
               np.zeros(16, np.int64), np.zeros(4, np.int64))


@SETTINGS
@given(gemm_cases)
def test_gemm_u8s8_avx2_saturating_matches_twin(case):
    case = dict(case, a_dtype=np.uint8, b_dtype=np.int8)
    a, b, az, bz = make_gemm_case(case)
    got = K.gemm_u8s8_avx2_saturating(a, b, az, bz)
    assert np.array_equal(got, T.gemm_u8s8_avx2_saturating_twin(a, b, az, bz))


@SETTINGS
@given(st.integers(1, 30), st.integers(1, 600), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_saturation_never_triggers_for_weights_in_minus64_63(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (m, k), endpoint=True).astype(np.uint8)
    b = rng.integers(-64, 63, (k, n), endpoint=True).astype(np.int8)
    az, bz = int(rng.integers(0, 256)), int(rng.integers(-128, 128))
    assert np.array_equal(K.gemm_u8s8_avx2_saturating(a, b, az, bz), K.gemm_int8(a, b, az, bz))


def test_saturation_pairs_k_with_k_plus_1():
    a = np.array([[255, 255, 255]], np.uint8)
    b = np.array([[127], [127], [127]], np.int8)
    # pair (0, 1): 2 * 32385 = 64770 -> 32767; k = 2 pairs with the zero padding: 32385
    assert K.gemm_u8s8_avx2_saturating(a, b)[0, 0] == 32767 + 32385
    assert K.gemm_int8(a, b)[0, 0] == 3 * 32385
    b = np.array([[127], [-128], [-128]], np.int8)  # opposite signs in the first pair: no saturation
    assert K.gemm_u8s8_avx2_saturating(a, b)[0, 0] == 255 * (127 - 128) + 255 * -128
    with pytest.raises(TypeError):
        K.gemm_u8s8_avx2_saturating(a.astype(np.int8), b)


# --------------------------------------------------------------------------- convolution

conv_cases = st.fixed_dictionaries({
    "nd": st.integers(1, 3),
    "batch": st.integers(1, 2),
    "group": st.integers(1, 4),
    "cg": st.one_of(st.integers(1, 3), st.integers(8, 24)),
    "mg": st.integers(1, 3),
    "x_dtype": st.sampled_from(INT8),
    "w_dtype": st.sampled_from(INT8),
    "x_fill": st.sampled_from(FILLS),
    "w_fill": st.sampled_from(FILLS),
    "w_zp": st.sampled_from(["scalar", "vector"]),
    "seed": st.integers(0, 2**32 - 1),
})


def make_conv_case(c):
    rng = np.random.default_rng(c["seed"])
    nd = c["nd"]
    kernel = [int(rng.integers(1, 4 if nd < 3 else 3)) for _ in range(nd)]
    dil = [int(rng.integers(1, 3)) for _ in range(nd)]
    strides = [int(rng.integers(1, 3)) for _ in range(nd)]
    pads = [int(rng.integers(0, 3)) for _ in range(2 * nd)]
    spatial = [int(rng.integers(dil[d] * (kernel[d] - 1) + 1, dil[d] * (kernel[d] - 1) + (9 if nd < 3 else 5)))
               for d in range(nd)]
    g, cg, mg = c["group"], c["cg"], c["mg"]
    x = int_array(rng, [c["batch"], g * cg] + spatial, c["x_dtype"], c["x_fill"])
    w = int_array(rng, [g * mg, cg] + kernel, c["w_dtype"], c["w_fill"])
    info = np.iinfo(c["x_dtype"])
    x_zp = int(rng.choice([info.min, info.max, 0, rng.integers(info.min, info.max)]))
    w_zp = zero_points(rng, c["w_zp"], g * mg)
    return x, w, x_zp, w_zp, g, pads, strides, dil


@SETTINGS
@given(conv_cases)
def test_conv_int8_matches_twin(case):
    x, w, x_zp, w_zp, group, pads, strides, dil = make_conv_case(case)
    got = K.conv_int8(x, w, x_zp, w_zp, group, pads, strides, dil)
    expected = T.conv_int8_twin(x, w, x_zp, w_zp, group, pads, strides, dil)
    assert got.dtype == np.int32 and got.shape == expected.shape and np.array_equal(got, expected)


@pytest.mark.parametrize("group, w_shape", [(1, (6, 4, 3, 2)), (2, (6, 2, 6, 6))])  # GEMM paths
@pytest.mark.parametrize("patch_bytes", [1, 700 * 3, 1 << 30])
def test_conv_int8_images_batched_into_one_gemm(monkeypatch, patch_bytes, group, w_shape):
    # one image per GEMM, a few per GEMM with a remainder, all at once: the same numbers
    conv = importlib.import_module(K.__name__ + ".conv")
    monkeypatch.setattr(conv, "_PATCH_BYTES", patch_bytes)
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (7, 4, 7, 6)).astype(np.uint8)
    w = rng.integers(-128, 128, w_shape).astype(np.int8)
    args = (x, w, 17, np.arange(6) - 3, group, [1, 0, 1, 1], [1, 2], [1, 1])
    expected = T.conv_int8_twin(*args)
    assert np.array_equal(K.conv_int8(*args), expected)
    assert np.array_equal(K.conv_int8(*args, packed=conv.pack_weights(w, group)), expected)
    with pytest.raises(ValueError, match="packed weights"):
        K.conv_int8(*args, packed=conv.pack_weights(w, 3 - group))


@SETTINGS
@given(conv_cases)
def test_im2col_int8_matches_twin(case):
    x, w, x_zp, _, _, pads, strides, dil = make_conv_case(case)
    kernel = w.shape[2:]
    got = K.im2col_int8(x[0], kernel, pads, strides, dil, x_zp)
    expected = T.im2col_int8_twin(x[0], kernel, pads, strides, dil, x_zp)
    assert got.dtype == x.dtype and got.shape == expected.shape and np.array_equal(got, expected)


def test_conv_int8_depthwise_and_padding_contribute_zero():
    # depthwise 3x3 over a constant image equal to the zero point: every output is exactly 0
    x = np.full((1, 4, 5, 5), 7, np.uint8)
    w = np.random.default_rng(0).integers(-128, 128, (4, 1, 3, 3)).astype(np.int8)
    y = K.conv_int8(x, w, 7, 0, group=4, pads=[1, 1, 1, 1])
    assert y.shape == (1, 4, 5, 5) and not y.any()
    # 1-D, no padding: y[o] = sum_r (w[r] - wz) * (x[o + r] - xz)
    x1 = np.array([[[1, 2, 3, 4]]], np.uint8)
    w1 = np.array([[[1, -1]]], np.int8)
    assert K.conv_int8(x1, w1, 1, -1).tolist() == [[[2 * 0 + 0 * 1, 2 * 1 + 0 * 2, 2 * 2 + 0 * 3]]]


def test_conv_int8_validates_shapes():
    x = np.zeros((1, 4, 5, 5), np.uint8)
    with pytest.raises(ValueError):
        K.conv_int8(x, np.zeros((6, 3, 3, 3), np.int8))  # C/group mismatch
    with pytest.raises(ValueError):
        K.conv_int8(x, np.zeros((6, 2, 3, 3), np.int8), group=4)  # group does not divide M
    with pytest.raises(ValueError):
        K.conv_int8(x, np.zeros((4, 4, 7, 7), np.int8))  # empty output
    with pytest.raises(ValueError):
        K.conv_int8(x, np.zeros((4, 4, 3, 3), np.int8), pads=[1, 1])
    with pytest.raises(ValueError):
        K.conv_int8(x, np.zeros((4, 4, 3, 3), np.int8), w_zp=[1, 2])
    with pytest.raises(ValueError):
        K.conv_int8(x, np.zeros((4, 4, 3, 3), np.int8), x_zp=300)
    with pytest.raises(TypeError):
        K.conv_int8(x.astype(np.float32), np.zeros((4, 4, 3, 3), np.int8))


# --------------------------------------------------------------------------- quantization

QTYPES = (np.uint8, np.int8, np.uint16, np.int16)
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 1e30, -1e30], np.float32)

quant_cases = st.fixed_dictionaries({
    "shape": st.lists(st.integers(1, 7), min_size=1, max_size=4),
    "layout": st.sampled_from(["tensor", "axis", "block"]),
    "axis": st.integers(-4, 3),
    "block": st.integers(1, 4),
    "dtype": st.sampled_from(QTYPES),
    "magnitude": st.sampled_from([1.0, 100.0, 1e5]),
    "seed": st.integers(0, 2**32 - 1),
})


def make_quant_case(c):
    """x with specials and exact .5 ties, scale and zero point in the requested layout."""
    rng = np.random.default_rng(c["seed"])
    shape = tuple(c["shape"])
    axis = c["axis"] % len(shape)
    x = (rng.standard_normal(shape) * c["magnitude"]).astype(np.float32)
    info = np.iinfo(c["dtype"])
    if c["layout"] == "tensor":
        pshape, block = (), 0
    elif c["layout"] == "axis":
        pshape, block = (shape[axis],), 0
    else:
        block = c["block"]
        pshape = list(shape)
        pshape[axis] = -(-shape[axis] // block)
        pshape = tuple(pshape)
    scale = rng.choice(np.array([0.5, 1.0, 0.25, 2.0, 0.1, 3.7], np.float32), size=pshape)
    zp = rng.integers(info.min, info.max, size=pshape, endpoint=True).astype(c["dtype"])
    flat = x.reshape(-1)
    ties = rng.random(flat.size) < 0.3  # exact ties: (integer + 0.5) * power-of-two scale
    flat[ties] = (rng.integers(-300, 300, ties.sum()) + np.float32(0.5)) * np.float32(0.5)
    specials = rng.random(flat.size) < 0.15
    flat[specials] = rng.choice(SPECIALS, specials.sum())
    return x, scale, zp, axis, block


@SETTINGS
@given(quant_cases)
def test_quantize_linear_matches_twin(case):
    x, scale, zp, axis, block = make_quant_case(case)
    got = K.quantize_linear(x, scale, zp, axis=axis, block_size=block)
    assert same_bits(got, T.quantize_linear_twin(x, scale, zp, axis=axis, block_size=block))


@SETTINGS
@given(quant_cases)
def test_dequantize_linear_matches_twin(case):
    x, scale, zp, axis, block = make_quant_case(case)
    q = np.random.default_rng(case["seed"]).integers(np.iinfo(zp.dtype).min, np.iinfo(zp.dtype).max,
                                                     size=x.shape, endpoint=True).astype(zp.dtype)
    got = K.dequantize_linear(q, scale, zp, axis=axis, block_size=block)
    assert got.dtype == np.float32
    assert same_bits(got, T.dequantize_linear_twin(q, scale, zp, axis=axis, block_size=block))


@SETTINGS
@given(quant_cases, st.sampled_from(["tensor", "channel"]))
def test_requantize_matches_twin(case, per):
    rng = np.random.default_rng(case["seed"])
    shape = tuple(case["shape"])
    axis = case["axis"] % len(shape)
    acc = rng.integers(-2**31, 2**31, size=shape).astype(np.int32)
    small = rng.random(acc.size) < 0.3  # small accumulators: with multiplier 0.5, odd values are ties
    acc.reshape(-1)[small] = rng.integers(-1000, 1000, small.sum())
    n = shape[axis] if per == "channel" else 1
    mult = rng.choice(np.array([0.5, 0.25, 1e-3, 3e-5, 1.0], np.float32), size=n)  # 0.5 * odd = tie
    info = np.iinfo(case["dtype"])
    y_zp = rng.integers(info.min, info.max, size=n, endpoint=True)
    got = K.requantize(acc, mult, y_zp, out_dtype=case["dtype"], axis=axis)
    assert same_bits(got, T.requantize_twin(acc, mult, y_zp, out_dtype=case["dtype"], axis=axis))


@SETTINGS
@given(st.lists(st.integers(0, 9), min_size=0, max_size=3), st.sampled_from(["ort", "spec"]),
       st.sampled_from(["random", "zero", "positive", "negative", "ties"]), st.integers(0, 2**32 - 1))
def test_dynamic_quantize_linear_matches_twin(shape, mode, kind, seed):
    rng = np.random.default_rng(seed)
    x = np.array(rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 1e4]), dtype=np.float32)
    if kind == "zero":
        x[...] = 0
    elif kind == "positive":
        x = np.abs(x) + np.float32(1)
    elif kind == "negative":
        x = -np.abs(x) - np.float32(1)
    elif kind == "ties" and x.size:
        x = (rng.integers(-255, 256, x.shape) * np.float32(0.5)).astype(np.float32)
    y, scale, zp = K.dynamic_quantize_linear(x, mode)
    ey, escale, ezp = T.dynamic_quantize_linear_twin(x, mode)
    assert y.dtype == np.uint8 and isinstance(scale, np.float32) and isinstance(zp, np.uint8)
    assert same_bits(y, ey) and same_bits(scale, escale) and zp == ezp


def test_rounding_is_half_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -128.5, np.nan, np.inf, -np.inf], np.float32)
    assert K.quantize_linear(x, np.float32(1), np.int8(0)).tolist() == [0, 2, 2, 0, -2, -2, 126, 127, -128,
                                                                         -128, 127, -128]
    assert K.quantize_linear(x[:3], np.float32(1), np.uint8(10)).tolist() == [10, 12, 12]
    acc = np.array([1, 3, 5, -1, -3, 509, 511], np.int32)
    assert K.requantize(acc, np.float32(0.5), 0, out_dtype=np.int8).tolist() == [0, 2, 2, 0, -2, 127, 127]
    assert K.requantize(acc, np.float32(0.5), 100, out_dtype=np.uint8).tolist() == [100, 102, 102, 100, 98,
                                                                                   255, 255]


def test_dynamic_quantize_linear_all_zero_modes():
    x = np.zeros((3, 4), np.float32)
    y, scale, zp = K.dynamic_quantize_linear(x)
    assert scale == np.float32(1) and zp == 0 and not y.any()
    y, scale, zp = K.dynamic_quantize_linear(x, mode="spec")
    assert scale == np.float32(0) and zp == 0 and not y.any()
    y, scale, zp = K.dynamic_quantize_linear(np.array([-1.0, 0.0, 3.0], np.float32))
    assert scale == np.float32(4) / np.float32(255) and zp == 64 and y.tolist() == [0, 64, 255]


@pytest.mark.parametrize("where", [0, 1, 70000])
def test_dynamic_quantize_linear_refuses_nan(where):
    x = np.ones(70001, np.float32)
    x[where] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        K.dynamic_quantize_linear(x)


def test_quantize_layout_validation():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError):
        K.quantize_linear(x, np.ones(4, np.float32), np.zeros(4, np.uint8), axis=1)
    with pytest.raises(ValueError):
        K.quantize_linear(x, np.ones((2, 3, 4), np.float32), np.zeros((2, 3, 4), np.uint8), axis=2, block_size=2)
    with pytest.raises(ValueError):
        K.quantize_linear(x, np.ones(3, np.float32), np.zeros(2, np.uint8), axis=1)
    with pytest.raises(ValueError):
        K.requantize(np.zeros((2, 3), np.int32), np.ones(4, np.float32), 0, axis=1)
    with pytest.raises(TypeError):
        K.requantize(np.zeros((2, 3), np.int64), np.float32(1), 0)
    y = K.quantize_linear(np.array([1.0, 2.0], np.float32), np.float32(0.5), np.int8(0), axis=1)  # axis unused
    assert y.tolist() == [2, 4]


def test_requantize_multiplier_is_float32_in_ort_order():
    m = K.requantize_multiplier(np.float32(0.1), np.array([0.3, 0.7], np.float32), np.float32(0.9))
    expected = np.float32(0.1) * np.array([0.3, 0.7], np.float32) / np.float32(0.9)
    assert m.dtype == np.float32 and same_bits(m, expected)


# --------------------------------------------------------------------------- onnxruntime


def _ort_session(model):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _model(nodes, inputs, outputs, opset=13, initializers=()):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def ort_dql():
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    vi = helper.make_tensor_value_info
    return _ort_session(_model(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])],
        [vi("x", TensorProto.FLOAT, ["a", "b"])],
        [vi("y", TensorProto.UINT8, ["a", "b"]), vi("s", TensorProto.FLOAT, []), vi("z", TensorProto.UINT8, [])]))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from(["random", "zero", "positive", "negative", "ties"]),
       st.integers(0, 2**32 - 1))
def test_dynamic_quantize_linear_matches_onnxruntime(ort_dql, rows, cols, kind, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * rng.choice([1e-3, 1.0, 50.0])).astype(np.float32)
    if kind == "zero":
        x[...] = 0
    elif kind == "positive":
        x = np.abs(x) + np.float32(0.25)
    elif kind == "negative":
        x = -np.abs(x) - np.float32(0.25)
    elif kind == "ties":
        x = (rng.integers(-255, 256, x.shape) * np.float32(0.5)).astype(np.float32)
    y, s, z = ort_dql.run(None, {"x": x})
    got = K.dynamic_quantize_linear(x)
    assert same_bits(got[0], y) and same_bits(got[1], np.float32(s)) and got[2] == z


@pytest.fixture(scope="module")
def ort_quantize():
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    vi = helper.make_tensor_value_info
    sessions = {}
    for name, elem in (("uint8", TensorProto.UINT8), ("int8", TensorProto.INT8)):
        for per_axis in (False, True):
            pshape = ["c"] if per_axis else []
            sessions[name, per_axis] = _ort_session(_model(
                [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1)],
                [vi("x", TensorProto.FLOAT, ["a", "c", "b"]), vi("s", TensorProto.FLOAT, pshape),
                 vi("z", elem, pshape)],
                [vi("y", elem, ["a", "c", "b"])]))
    return sessions


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 40), st.sampled_from(["uint8", "int8"]),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_quantize_linear_matches_onnxruntime(ort_quantize, a, c, b, dtype, per_axis, seed):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    x = (rng.standard_normal((a, c, b)) * rng.choice([1.0, 100.0, 1e4])).astype(np.float32)
    flat = x.reshape(-1)
    ties = rng.random(flat.size) < 0.3
    flat[ties] = (rng.integers(-300, 300, ties.sum()) + np.float32(0.5)) * np.float32(0.25)
    specials = rng.random(flat.size) < 0.1
    flat[specials] = rng.choice(SPECIALS, specials.sum())
    pshape = (c,) if per_axis else ()
    scale = rng.choice(np.array([0.25, 0.5, 1.0, 0.1, 3.0], np.float32), size=pshape).astype(np.float32)
    zp = rng.integers(info.min, info.max, size=pshape, endpoint=True).astype(dtype)
    (expected,) = ort_quantize[dtype, per_axis].run(None, {"x": x, "s": scale, "z": zp})
    assert same_bits(K.quantize_linear(x, scale, zp, axis=1), expected)


# --- ORT's AVX2 u8 x s8 saturation -------------------------------------------------------------

_SAT_SHAPES = [(m, k, n) for m in (1, 7, 64) for k in (1, 3, 64, 255, 768) for n in (1, 5, 64)]

_ORT_MATMULINTEGER_SCRIPT = r'''
import sys
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

data = np.load(sys.argv[1])
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
results = {}
for i in range(int(data["count"])):
    a, b, az, bz = data[f"a{i}"], data[f"b{i}"], data[f"az{i}"], data[f"bz{i}"]
    for const_b in (False, True):
        vi = helper.make_tensor_value_info
        inputs = [vi("A", TensorProto.UINT8, list(a.shape)), vi("az", TensorProto.UINT8, []),
                  vi("bz", TensorProto.INT8, list(bz.shape))]
        inits = [numpy_helper.from_array(b, "B")] if const_b else []
        if not const_b:
            inputs.append(vi("B", TensorProto.INT8, list(b.shape)))
        graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B", "az", "bz"], ["Y"])], "g",
                                  inputs, [vi("Y", TensorProto.INT32, [a.shape[0], b.shape[1]])], initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feed = {"A": a, "az": az, "bz": bz}
        if not const_b:
            feed["B"] = b
        results[f"y{i}_{int(const_b)}"] = sess.run(None, feed)[0]
np.savez(sys.argv[2], **results)
'''


def _matmulinteger_cases():
    rng = np.random.default_rng(2024)
    cases = []
    for i, (m, k, n) in enumerate(_SAT_SHAPES):
        a = rng.integers(0, 255, (m, k), endpoint=True).astype(np.uint8)
        b = rng.integers(-128, 127, (k, n), endpoint=True).astype(np.int8)
        if i % 5 == 0:  # worst case for the int16 pairs
            a[:] = 255
            b[:] = rng.choice(np.array([-128, 127], np.int8), size=b.shape)
        az = np.array(rng.integers(0, 256), np.uint8)
        bz = (rng.integers(-128, 128, n).astype(np.int8) if i % 2 else np.array(rng.integers(-128, 128), np.int8))
        cases.append((a, b, az, bz))
    return cases


def test_avx2_saturation_emulation_matches_onnxruntime(tmp_path):
    """gemm_u8s8_avx2_saturating == ORT MatMulInteger (u8 x s8) bit for bit on a CPU without VNNI.

    On a VNNI CPU ORT's u8 x s8 GEMM is exact, so the comparison runs ORT under user-mode QEMU
    emulating a Haswell (AVX2, no VNNI) when qemu-x86_64 is installed, and is skipped otherwise.
    """
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    prefix, reason = avx2_ort_prefix()
    if prefix is None:
        pytest.skip(reason)
    cases = _matmulinteger_cases()
    np.savez(tmp_path / "in.npz", count=len(cases),
             **{f"{key}{i}": v for i, case in enumerate(cases) for key, v in zip(("a", "b", "az", "bz"), case)})
    (tmp_path / "run_ort.py").write_text(_ORT_MATMULINTEGER_SCRIPT)
    command = prefix + [sys.executable, str(tmp_path / "run_ort.py"), str(tmp_path / "in.npz"),
                        str(tmp_path / "out.npz")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    differing_from_exact = 0
    for i, (a, b, az, bz) in enumerate(cases):
        emulated = K.gemm_u8s8_avx2_saturating(a, b, int(az), bz.astype(np.int32))
        exact = K.gemm_int8(a, b, int(az), bz.astype(np.int32))
        for const_b in (0, 1):
            ort_y = out[f"y{i}_{const_b}"]
            assert np.array_equal(emulated, ort_y), (a.shape, b.shape, const_b)
        differing_from_exact += int((emulated != exact).sum())
    assert differing_from_exact > 0  # the cases do exercise saturation


# --------------------------------------------------------------------------- AVX2 u8 x s8 convolution

KC = importlib.import_module(K.__name__ + ".conv")


@SETTINGS
@given(conv_cases)
def test_conv_u8s8_avx2_saturating_matches_twin(case):
    case = dict(case, x_dtype=np.uint8, w_dtype=np.int8)
    x, w, x_zp, w_zp, group, pads, strides, dil = make_conv_case(case)
    x_zp = int(np.clip(x_zp, 0, 255))
    w_zp = np.clip(w_zp, -128, 127)
    got = KC.conv_u8s8_avx2_saturating(x, w, x_zp, w_zp, group, pads, strides, dil)
    expected = T.conv_u8s8_avx2_saturating_twin(x, w, x_zp, w_zp, group, pads, strides, dil)
    assert got.dtype == np.int32 and got.shape == expected.shape and np.array_equal(got, expected)
    if np.abs(w.astype(np.int64) - 0).max() <= 64:   # no pair can saturate: exact
        assert np.array_equal(got, K.conv_int8(x, w, x_zp, w_zp, group, pads, strides, dil))


def test_conv_u8s8_avx2_saturating_pairs_channels_within_a_tap():
    # 1x1 kernel, two channels: the pair (c0, c1) saturates, 255*127*2 > 32767
    x = np.full((1, 2, 1, 1), 255, np.uint8)
    w = np.full((1, 2, 1, 1), 127, np.int8)
    assert KC.conv_u8s8_avx2_saturating(x, w).reshape(-1).tolist() == [32767]
    assert K.conv_int8(x, w).reshape(-1).tolist() == [2 * 255 * 127]
    # one channel, 1x2 kernel: the two taps pair up (k = r * Cg + c) and saturate too
    x2 = np.full((1, 1, 1, 2), 255, np.uint8)
    w2 = np.full((2, 1, 1, 2), 127, np.int8)
    assert KC.conv_u8s8_avx2_saturating(x2, w2).reshape(-1).tolist() == [32767, 32767]
    # depthwise (one input and one output channel per group) is exact, as in onnxruntime
    x3 = np.full((1, 2, 1, 2), 255, np.uint8)
    w3 = np.full((2, 1, 1, 2), 127, np.int8)
    assert KC.conv_u8s8_avx2_saturating(x3, w3, group=2).reshape(-1).tolist() == [64770, 64770]
    with pytest.raises(TypeError):
        KC.conv_u8s8_avx2_saturating(x.view(np.int8), w)


# --------------------------------------------------------------------------- blockwise int8 (MatMulNBits)

KB = importlib.import_module(K.__name__ + ".blockwise")

blockwise_cases = st.fixed_dictionaries({
    "m": st.integers(1, 24),
    "k": st.one_of(st.integers(1, 300), st.integers(1000, 2500)),
    "n": st.integers(1, 24),
    "square": st.booleans(),  # M == K (catches row/column mix-ups)
    "block": st.one_of(st.sampled_from([16, 32, 64, 128, 256]), st.integers(16, 256)),
    "b_kind": st.sampled_from(["int4", "int8", "int8 - zp"]),
    "a_fill": st.sampled_from(FILLS),
    "b_fill": st.sampled_from(FILLS),
    "seed": st.integers(0, 2**32 - 1),
})


def make_blockwise_case(c):
    rng = np.random.default_rng(c["seed"])
    m, k, n, block = c["m"], c["k"], c["n"], c["block"]
    if c["square"]:
        m = k = min(k, 300)
    a = int_array(rng, (m, k), np.int8, c["a_fill"])
    if c["b_kind"] == "int4":        # 4-bit codes minus a 4-bit zero point: [-15, 15]
        b = (int_array(rng, (n, k), np.uint8, c["b_fill"]) % 16).astype(np.int16)
        b -= rng.integers(0, 16, (n, 1)).astype(np.int16)
    elif c["b_kind"] == "int8":
        b = int_array(rng, (n, k), np.int8, c["b_fill"])
    else:                            # uint8 codes minus a uint8 zero point: [-255, 255]
        b = int_array(rng, (n, k), np.uint8, c["b_fill"]).astype(np.int16)
        b -= rng.choice(np.array([0, 255, 128], np.int16), size=(n, 1))
    blocks = -(-k // block)
    a_scale = rng.choice(np.array([0, 1e-3, 0.5, 3.0], np.float32), size=(m, blocks))
    a_scale = np.where(rng.random((m, blocks)) < 0.5, rng.random((m, blocks)), a_scale)
    b_scale = (rng.standard_normal((n, blocks)) * 0.1).astype(np.float32)
    return a, a_scale.astype(np.float32), b, b_scale, block


@SETTINGS
@given(blockwise_cases)
def test_blockwise_matmul_int8_matches_twin(case):
    a, a_scale, b, b_scale, block = make_blockwise_case(case)
    expected = T.blockwise_matmul_int8_twin(a, a_scale, b, b_scale, block)
    got = KB.blockwise_matmul_int8(a, a_scale, b, b_scale, block)
    assert got.dtype == np.float32 and same_bits(got, expected)
    packed = KB.pack_blockwise_b(b, block)               # packed once, reused
    assert same_bits(KB.blockwise_matmul_int8(a, a_scale, packed, b_scale, block), expected)


def test_blockwise_matmul_int8_block_sums_are_exact_and_ordered():
    # one block of 256 products 127 * 255: 8,290,560, exact in int32 (and in float32)
    a = np.full((1, 256), 127, np.int8)
    b = np.full((1, 256), 255, np.int16)
    one = np.ones((1, 1), np.float32)
    assert KB.blockwise_matmul_int8(a, one, b, one, 256)[0, 0] == np.float32(256 * 127 * 255)
    # blocks are added left to right in float32: 2^24 + 1 - 1 loses the 1, 1 - 1 + 2^24 keeps
    a2, b2 = np.ones((1, 3), np.int8), np.ones((1, 3), np.int16)
    scales = np.array([[2.0 ** 24, 1.0, -1.0]], np.float32)
    ones3 = np.ones((1, 3), np.float32)
    assert KB.blockwise_matmul_int8(a2, scales, b2, ones3, 1)[0, 0] == np.float32(2.0 ** 24 - 1)
    assert KB.blockwise_matmul_int8(a2, scales[:, ::-1], b2, ones3, 1)[0, 0] == np.float32(2.0 ** 24)
    # K not a multiple of the block: the last block is zero-padded
    a3 = np.arange(1, 21, dtype=np.int8).reshape(1, 20)
    b3 = np.ones((2, 20), np.int16)
    s = np.array([[1.0, 10.0]], np.float32)
    y = KB.blockwise_matmul_int8(a3, s, b3, np.ones((2, 2), np.float32), 16)
    assert y.tolist() == [[136.0 + 10.0 * (17 + 18 + 19 + 20)] * 2]


def test_blockwise_matmul_int8_rejects_bad_operands():
    a = np.zeros((2, 40), np.int8)
    b = np.zeros((3, 40), np.int16)
    s2, s3 = np.ones((2, 3), np.float32), np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match="inner dimensions"):
        KB.blockwise_matmul_int8(a, s2, b[:, :39], s3, 16)
    with pytest.raises(ValueError, match="a_scale"):
        KB.blockwise_matmul_int8(a, s2[:, :2], b, s3, 16)
    with pytest.raises(ValueError, match="packed with block_size"):
        KB.blockwise_matmul_int8(a, s2, KB.pack_blockwise_b(b, 32), s3, 16)
    with pytest.raises(TypeError):
        KB.blockwise_matmul_int8(a.astype(np.float32), s2, b, s3, 16)
    with pytest.raises(ValueError, match="block_size"):
        KB.pack_blockwise_b(b, 0)
    assert KB.blockwise_matmul_int8(a[:0], s2[:0], b, s3, 16).shape == (0, 3)


def test_blockwise_kernel_uses_vpmaddwd():
    from refrt import host

    if "avx2" not in host.info().features:
        pytest.skip("needs an x86 CPU with AVX2")
    counts = KB._vector_instructions()
    assert counts["vpmaddwd"] + counts["vpdpwssd"] > 0 and counts["vpmulld"] == 0


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
# kernels/rows.py: layer norm and softmax over the last axis of [rows, n], 16 SIMD lanes per sum.
# Compared with float64 NumPy computations (tolerances in float32 ULPs, scaled by the number of
# additions a lane makes) and, through the ops, with onnxruntime.

ROWS = importlib.import_module(K.__name__ + ".rows")
EPS32 = float(np.finfo(np.float32).eps)  # 2^-23


def _additions(n):
    """Additions behind one row sum: n / 16 per lane, 4 levels combining the lanes, and slack."""
    return n // ROWS.LANES + 8


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


def test_exp_nonpositive_is_within_2_ulp_of_correctly_rounded():
    # every 257th float32 in [-87.3, -0.0] (4.4 million values) plus 2 million random ones
    lo = np.float32(-87.3).view(np.uint32)
    swept = np.arange(0x80000000, int(lo) + 1, 257, dtype=np.uint64).astype(np.uint32).view(np.float32)
    rng = np.random.default_rng(5)
    x = np.concatenate([swept, rng.uniform(-87.3, 0, 2_000_000).astype(np.float32),
                        np.array([0.0, -0.0, -87.3, -1e-45, -0.34657359, -0.34657362], np.float32)])
    y = ROWS.exp_nonpositive(x)
    exact = np.exp(x.astype(np.float64)).astype(np.float32)
    ulps = np.abs(y.astype(np.float64) - exact) / np.spacing(exact)
    assert ulps.max() <= 2
    assert np.mean(y == exact) > 0.9      # most results are the correctly rounded ones


def test_exp_nonpositive_special_values():
    x = np.array([-np.inf, np.nan, -0.0, 0.0, -87.4, -88.0, -1000.0, -3.4e38], np.float32)
    y = ROWS.exp_nonpositive(x.reshape(2, 4)).reshape(-1)
    assert y[0] == 0 and not np.signbit(y[0])
    assert np.isnan(y[1])
    assert y[2] == 1 and y[3] == 1
    assert np.all(y[4:] == 0)             # below ln(2^-126): flushed to zero
    low = np.float32(-87.33)              # the smallest normal results are still computed
    assert ROWS.exp_nonpositive(np.array([low]))[0] == np.float32(np.exp(np.float64(low)))
    with pytest.raises(ValueError, match="<= 0"):
        ROWS.exp_nonpositive(np.array([0.5], np.float32))


def _layer_norm_reference(x, scale, bias, eps, mean=None):
    """float64 layer norm of float32 data; with ``mean`` given, the variance and output use that
    mean (the kernel's, so the rest of its arithmetic can be checked on its own)."""
    xd = x.astype(np.float64)
    m = xd.mean(axis=1, keepdims=True) if mean is None else mean.astype(np.float64)[:, None]
    d = xd - m
    inv = 1 / np.sqrt((d * d).mean(axis=1, keepdims=True) + np.float64(np.float32(eps)))
    y = d * inv * scale
    return (y if bias is None else y + bias), m[:, 0], inv[:, 0]


def _lane_sum_twin(v):
    """Row sums as the kernels add them: 16 lanes over the row (the partial last block padded
    with zeros), then lanes k and k + 8, k + 4, k + 2, k + 1."""
    rows, n = v.shape
    lanes = ROWS.LANES
    padded = np.zeros((rows, -(-n // lanes) * lanes), np.float32)
    padded[:, :n] = v
    acc = padded[:, :lanes]
    for i in range(lanes, padded.shape[1], lanes):
        acc = acc + padded[:, i:i + lanes]
    while acc.shape[1] > 1:
        half = acc.shape[1] // 2
        acc = acc[:, :half] + acc[:, half:]
    return acc[:, 0]


def _layer_norm_twin(x, scale, bias, eps):
    n = np.float32(x.shape[1])
    mean = _lane_sum_twin(x) / n
    d = x - mean[:, None]
    inv_std = np.float32(1) / np.sqrt(_lane_sum_twin(d * d) / n + np.float32(eps))
    y = (x - mean[:, None]) * inv_std[:, None] * scale
    return (y if bias is None else y + bias), mean, inv_std


def _exp_twin(x):
    E, fma = ROWS.EXP, T.fma32
    t = fma(x, E.LOG2E, E.ROUND)
    n = t - E.ROUND
    r = fma(n, -E.LN2_HI, x)
    r = fma(n, -E.LN2_LO, r)
    p = fma(E.POLY[0], r, E.POLY[1])
    for c in E.POLY[2:] + (np.float32(1), np.float32(1)):
        p = fma(p, r, c)
    pow2 = ((t.view(np.uint32) << np.uint32(23)) + np.uint32(0x3F800000)).view(np.float32)
    return np.where(x < E.LOWER, np.float32(0), p * pow2)


def _softmax_twin(x):
    e = _exp_twin(x - x.max(axis=1, keepdims=True))
    return e * (np.float32(1) / _lane_sum_twin(e))[:, None]


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
                             _layer_norm_twin(x, scale, bias, case["eps"])):
            assert same_float_bits(got, want)
        assert same_float_bits(ROWS.softmax_rows(x), _softmax_twin(x))
        # the residual form: a + b summed in float32 first, then the same layer norm
        other = rng.standard_normal(x.shape).astype(np.float32)
        for got, want in zip(ROWS.add_layer_norm_rows(x, other, scale, bias, case["eps"]),
                             ROWS.layer_norm_rows(x + other, scale, bias, case["eps"])):
            assert same_float_bits(got, want)


def test_exp_nonpositive_matches_its_twin_bit_for_bit():
    rng = np.random.default_rng(9)
    x = np.concatenate([-rng.exponential(10, 200_000).astype(np.float32),
                        rng.integers(0x80000000, 0xC2B00000, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
                        np.array([-np.inf, np.nan, -0.0, 0.0, -87.33654, -87.3365, -87.34], np.float32)])
    with np.errstate(all="ignore"):
        assert same_float_bits(ROWS.exp_nonpositive(x), _exp_twin(x))


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
        x *= 30                                       # many results below 2^-126 flush to 0
    before = x.copy()
    y = ROWS.softmax_rows(x)
    assert same_float_bits(x, before)
    assert y.shape == x.shape and y.dtype == np.float32
    with np.errstate(all="ignore"):
        ref = _softmax_reference(x)
        numpy_f32 = np.exp(x - x.max(axis=1, keepdims=True))
        numpy_f32 = numpy_f32 / numpy_f32.sum(axis=1, keepdims=True)
    # NaN exactly where NumPy's float32 softmax has NaN (a NaN or +inf in the row: all of it)
    assert np.array_equal(np.isnan(y), np.isnan(numpy_f32))
    ok = ~np.isnan(numpy_f32)
    assert np.all(y[np.isneginf(x) & ok] == 0)          # -inf gives exactly 0
    ok &= np.isfinite(x)
    with np.errstate(all="ignore"):
        gap = np.abs(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    # x - max rounds to float32 (relative error 2^-24, i.e. |x - max| 2^-24 in e^x), e^x within
    # 2 ULP, the lane sum, 1 / sum and the product; results below 2^-126 may be 0
    tol = EPS32 * ref[ok] * (gap[ok] / 2 + _additions(n) + 6) + 2.0**-126
    assert np.all(np.abs(y[ok] - ref[ok]) <= tol)


@pytest.mark.parametrize("n", [1, 5, 16, 128, 129])
def test_softmax_rows_rows_sum_to_one(n):
    x = (np.random.default_rng(n).standard_normal((50, n)) * 4).astype(np.float32)
    y = ROWS.softmax_rows(x)
    assert np.all(y >= 0) and np.allclose(y.sum(axis=1, dtype=np.float64), 1, atol=1e-6)
    assert np.array_equal(ROWS.softmax_rows(np.zeros((3, 7), np.float32)), np.full((3, 7), np.float32(1 / 7)))
    assert ROWS.softmax_rows(np.zeros((0, 7), np.float32)).shape == (0, 7)


def test_row_kernels_are_vectorized():
    counts = ROWS._vector_instructions()
    for kernel in ("_layer_norm_kernel", "_softmax_kernel"):
        wide = {name: c["zmm"] + c["ymm"] for name, c in counts[kernel].items()}
        assert wide["vaddps"] and wide["vmulps"] and wide["vmovups"], (kernel, counts[kernel])
    assert counts["_softmax_kernel"]["vfmadd213ps"]["zmm"] + counts["_softmax_kernel"]["vfmadd213ps"]["ymm"]


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


@pytest.mark.parametrize("shape,offset", [((1, 128, 768), 0.0), ((2, 50, 100), 3.0), ((4096,), 0.5),
                                          ((300, 17), -1.0), ((8, 128, 768), 0.0)])
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
    # onnxruntime sums x and x^2 left to right in one pass and divides by the root
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-5)
    # numerics="spec" keeps the NumPy expression
    spec = InferenceSession(model, numerics="spec").run(None, feeds)
    assert row_kernel_calls["layer_norm_rows"] == 1
    np.testing.assert_allclose(spec[0], got[0], rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("shape,opset,axis", [((1, 12, 128, 128), 13, -1), ((2, 3, 40, 77), 13, 3),
                                              ((64, 128), 11, 1), ((8, 4, 200), 11, 2),
                                              ((8, 4, 200), 11, 1), ((2, 64, 64), 1, 1),
                                              ((5000,), 13, 0)])
def test_softmax_op_matches_onnxruntime(shape, opset, axis, row_kernel_calls):
    from refrt import InferenceSession

    from ort_helpers import ort_session

    rng = np.random.default_rng(opset + len(shape))
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    x.reshape(-1)[::97] = -np.inf
    model = _one_node_model("Softmax", [shape], opset, axis=axis)
    expected = ort_session(model).run(None, {"i0": x})[0]
    got = InferenceSession(model).run(None, {"i0": x})[0]
    assert row_kernel_calls["softmax_rows"] == 1
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.all(got[np.isneginf(x)] == 0)
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-9)
    spec = InferenceSession(model, numerics="spec").run(None, {"i0": x})[0]
    assert row_kernel_calls["softmax_rows"] == 1
    np.testing.assert_allclose(spec, got, rtol=1e-5, atol=1e-9)


def test_softmax_op_other_axes_and_small_inputs_keep_numpy(row_kernel_calls):
    from refrt.registry import lookup

    softmax13 = lookup("Softmax", "", 13).fn
    x = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    softmax13(x, axis=0)                                  # not the last axis
    softmax13(x[:8, :8].copy(), axis=-1)                  # 64 elements
    softmax13(x.astype(np.float64), axis=-1)              # float64
    softmax11 = lookup("Softmax", "", 11).fn
    softmax11(x.reshape(8, 8, 128), axis=1)               # rows over the trailing axes: kernel
    assert row_kernel_calls["softmax_rows"] == 1


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
    # other axes, stash types and small inputs stay in NumPy
    layer_norm(x, rng.standard_normal((32, 64)).astype(np.float32), axis=1)
    layer_norm(x, scale, axis=-1, stash_type=11)
    layer_norm(x[:1, :2], scale, axis=-1)
    assert row_kernel_calls["layer_norm_rows"] == 2


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
@given(nb=st.integers(1, 4), m=st.integers(1, 40), k=st.integers(0, 70), n=st.integers(1, 90),
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
       n=st.integers(1, 90), with_bias=st.booleans(), seed=st.integers(0, 2**31))
def test_matmul_packed_f32_is_sequential_fma_then_bias(lead, m, k, n, with_bias, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(lead + (m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    a_before, b_before = a.copy(), b.copy()
    packed = FG.pack_b_f32(b)
    got = FG.matmul_packed_f32(a, packed, bias)
    want = _sequential_fma_matmul(a, b)
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
