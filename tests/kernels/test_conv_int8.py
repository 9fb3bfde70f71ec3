"""The int8 convolution kernels (im2col, GEMM batching, depthwise, the AVX2 saturating form)
against their NumPy twins."""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_data import (
    FILLS,
    INT8,
    SETTINGS,
    K,
    T,
    int_array,
    zero_points,
)

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
    expected = T.conv_int8_twin(x, w, x_zp, w_zp, group, pads, strides, dil)
    conv = importlib.import_module(K.__name__ + ".conv")
    short = conv._FLOAT_EXACT_MAX_K
    try:    # short reductions both ways: in float32 (the default) and on the int8 GEMM
        for conv._FLOAT_EXACT_MAX_K in (short, 0):
            got = K.conv_int8(x, w, x_zp, w_zp, group, pads, strides, dil)
            assert got.dtype == np.int32 and got.shape == expected.shape
            assert np.array_equal(got, expected)
    finally:
        conv._FLOAT_EXACT_MAX_K = short


@pytest.mark.parametrize("group, w_shape", [(1, (6, 4, 3, 2)), (2, (6, 2, 6, 6))])  # GEMM paths
@pytest.mark.parametrize("patch_bytes", [1, 700 * 3, 1 << 30])
def test_conv_int8_images_batched_into_one_gemm(monkeypatch, patch_bytes, group, w_shape):
    # one image per GEMM, a few per GEMM with a remainder, all at once: the same numbers
    conv = importlib.import_module(K.__name__ + ".conv")
    monkeypatch.setattr(conv, "_PATCH_BYTES", patch_bytes)
    monkeypatch.setattr(conv, "_FLOAT_EXACT_MAX_K", 0)      # the GEMM path, not float32
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (7, 4, 7, 6)).astype(np.uint8)
    w = rng.integers(-128, 128, w_shape).astype(np.int8)
    args = (x, w, 17, np.arange(6) - 3, group, [1, 0, 1, 1], [1, 2], [1, 1])
    expected = T.conv_int8_twin(*args)
    assert np.array_equal(K.conv_int8(*args), expected)
    assert np.array_equal(K.conv_int8(*args, packed=conv.pack_weights(w, group)), expected)
    with pytest.raises(ValueError, match="packed weights"):
        K.conv_int8(*args, packed=conv.pack_weights(w, 3 - group))


def test_conv_int8_short_reductions_exact_at_the_extremes():
    """The float32 path at the bound of its exactness: every product 255 * 255 (uint8 x with
    zero point 0 against int8 w = -128 with zero point 127), K = 64."""
    x = np.full((2, 64, 3, 3), 255, np.uint8)
    w = np.full((3, 64, 1, 1), -128, np.int8)
    got = K.conv_int8(x, w, 0, 127)
    assert np.array_equal(got, T.conv_int8_twin(x, w, 0, 127))
    assert got[0, 0, 0, 0] == 64 * 255 * -255
    x3 = np.full((1, 7, 5, 5), 0, np.uint8)      # 3x3 taps, padding read as the zero point 255
    w3 = np.full((2, 7, 3, 3), 127, np.int8)
    args = (x3, w3, 255, -128, 1, [1, 1, 1, 1], [1, 1], [1, 1])
    assert np.array_equal(K.conv_int8(*args), T.conv_int8_twin(*args))


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
