"""Quantize, dequantize, requantize and dynamic quantization kernels against their twins and
against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_data import (
    SETTINGS,
    K,
    T,
    _model,
    _ort_session,
    same_bits,
)

from helpers import dql_input

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


@pytest.mark.parametrize("dtype", QTYPES)
@pytest.mark.parametrize("n", [40_000, 9_999])      # the parallel and the serial per-tensor kernel
def test_per_tensor_quantize_and_dequantize_match_twins_on_large_tensors(dtype, n):
    # per tensor the kernels work in float32 (exact for 8- and 16-bit values): every extreme
    # zero point, ties, specials and values far outside the range
    rng = np.random.default_rng(n + np.dtype(dtype).itemsize)
    info = np.iinfo(dtype)
    x = (rng.standard_normal(n) * 300).astype(np.float32)
    x[::7] = (rng.integers(-70000, 70000, x[::7].size) + np.float32(0.5)) * np.float32(0.5)
    x[::13] = rng.choice(SPECIALS, x[::13].size)
    q = rng.integers(info.min, info.max, size=n, endpoint=True).astype(dtype)
    for zp in (info.min, info.max, 0, (info.min + info.max) // 2):
        for scale in (np.float32(0.5), np.float32(3.7), np.float32(1e-3)):
            zp_ = np.array(zp, dtype)
            assert same_bits(K.quantize_linear(x, scale, zp_), T.quantize_linear_twin(x, scale, zp_))
            assert same_bits(K.dequantize_linear(q, scale, zp_), T.dequantize_linear_twin(q, scale, zp_))


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
    x = dql_input(rng, shape, kind, scales=(1e-3, 1.0, 1e4), offset=1)
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


@pytest.mark.parametrize("shape, axis", [((2, 24, 3000), 1), ((400, 700), -1), ((5, 3, 7), 1)])
def test_requantize_threaded_and_serial_paths_match_twin(shape, axis):
    """Outputs above and below the size where the requantization runs on two threads."""
    rng = np.random.default_rng(3)
    acc = rng.integers(-200000, 200000, size=shape).astype(np.int32)
    n = shape[axis]
    mult = rng.choice(np.array([0.5, 1e-3, 3e-5], np.float32), size=n)
    y_zp = rng.integers(0, 255, size=n, endpoint=True).astype(np.uint8)
    for m, z in ((mult, y_zp), (mult[:1], y_zp[:1])):
        got = K.requantize(acc, m, z, out_dtype=np.uint8, axis=axis)
        assert same_bits(got, T.requantize_twin(acc, m, z, out_dtype=np.uint8, axis=axis))


def test_requantize_multiplier_is_float32_in_ort_order():
    m = K.requantize_multiplier(np.float32(0.1), np.array([0.3, 0.7], np.float32), np.float32(0.9))
    expected = np.float32(0.1) * np.array([0.3, 0.7], np.float32) / np.float32(0.9)
    assert m.dtype == np.float32 and same_bits(m, expected)



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
    x = dql_input(rng, (rows, cols), kind)
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


@pytest.mark.parametrize("a_shape, b_shape", [((7,), (7,)), ((3, 1, 5), (1, 4, 1)), ((), (6,)),
                                              ((600, 500), (600, 500)), ((4, 16, 80, 80), (4, 16, 1, 1)),
                                              ((0, 3), (1, 3))])
def test_pair_lookup_matches_twin(a_shape, b_shape):
    """Serial (small) and threaded (at least 2**18 results) lookups, broadcast both ways."""
    rng = np.random.default_rng(5)
    table = rng.integers(-128, 128, 65536).astype(np.int8)
    a = rng.integers(0, 256, a_shape).astype(np.uint8)
    b = rng.integers(-128, 128, b_shape).astype(np.int8)
    for x, y in ((a, b), (b, a)):
        got = K.pair_lookup(x, y, table)
        want = T.pair_lookup_twin(x, y, table)
        assert got.dtype == np.int8 and got.shape == want.shape and np.array_equal(got, want)
    with pytest.raises(ValueError, match="65536"):
        K.pair_lookup(a, b, table[:10])


@pytest.mark.parametrize("shape", [(3, 5), (2, 16, 96, 96), (0, 4)])
def test_byte_lookup_matches_twin(shape):
    """Serial and threaded (at least 2**18 values) lookups of uint8 and int8 codes (by their byte)."""
    rng = np.random.default_rng(6)
    for x in (rng.integers(0, 256, shape).astype(np.uint8), rng.integers(-128, 128, shape).astype(np.int8)):
        for table in (rng.integers(0, 256, 256).astype(np.uint8), rng.integers(-128, 128, 256).astype(np.int8)):
            got = K.byte_lookup(x, table)
            want = T.byte_lookup_twin(x, table)
            assert got.dtype == table.dtype and got.shape == x.shape and np.array_equal(got, want)
    assert np.array_equal(K.byte_lookup(np.array([-1, 0, 1], np.int8), np.arange(256, dtype=np.uint8)),
                          [255, 0, 1])
    with pytest.raises(ValueError, match="256"):
        K.byte_lookup(x, table[:10])
    with pytest.raises(TypeError, match="8-bit"):
        K.byte_lookup(x.astype(np.int16), table)
