"""Elementwise and reduction ops: behaviour the ONNX backend suite does not pin down."""

import math

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto

from refrt import registry
from refrt.registry import NodeContext

from helpers import readonly

ELEMENTWISE_OPS = (
    "Abs Acos Acosh Add And Asin Asinh Atan Atanh BitShift BitwiseAnd BitwiseNot BitwiseOr "
    "BitwiseXor BitCast Cast CastLike Ceil Celu Clip Cos Cosh Div Elu Equal Erf Exp Floor Gelu "
    "Greater GreaterOrEqual HardSigmoid HardSwish IsInf IsNaN LeakyRelu Less LessOrEqual Log Max "
    "Mean Min Mish Mod Mul Neg Not Or PRelu Pow Reciprocal Relu Round Selu Shrink Sigmoid Sign Sin "
    "Sinh Softplus Softsign Sqrt Sub Sum Swish Tan Tanh ThresholdedRelu Where Xor").split()
REDUCE_OPS = (
    "ArgMax ArgMin ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
    "ReduceProd ReduceSum ReduceSumSquare Softmax LogSoftmax Hardmax CumSum CumProd TopK "
    "LpNormalization").split()


def call(op_type, opset, *inputs, **attrs):
    """Run the implementation refrt resolves for (op_type, opset) on arrays."""
    impl = registry.lookup(op_type, "", opset)
    assert impl is not None, f"{op_type} is not resolvable at opset {opset}"
    if impl.wants_ctx:
        attrs["ctx"] = NodeContext("n", op_type, "ai.onnx", opset, n_outputs=1)
    return impl.fn(*inputs, **attrs)


# ---------------------------------------------------------------- registration

@pytest.mark.parametrize("op_type", ELEMENTWISE_OPS + REDUCE_OPS)
def test_every_schema_version_is_registered(op_type):
    spec = sorted({s.since_version for s in onnx.defs.get_all_schemas_with_history()
                   if s.name == op_type and s.domain == ""})
    assert registry.versions(op_type, "") == spec


# ---------------------------------------------------------------- inputs, outputs, dtypes

def test_read_only_inputs_are_neither_mutated_nor_returned():
    x = readonly(np.array([[-1.5, 0.0, 2.5], [3.0, -4.0, 0.5]], np.float32))
    before = x.copy()
    outputs = [
        call("Relu", 14, x), call("Clip", 13, x), call("Sum", 13, x), call("Max", 13, x),
        call("Cast", 21, x, to=TensorProto.FLOAT), call("Softmax", 13, x),
        call("CumSum", 14, x, np.array(1), exclusive=1, reverse=1),
        call("ReduceSum", 13, x, np.array([], np.int64), noop_with_empty_axes=1),
        call("TopK", 11, x, np.array([2]))[0], call("Where", 16, readonly(x > 0), x, x),
    ]
    np.testing.assert_array_equal(x, before)
    for y in outputs:
        assert not np.shares_memory(y, x)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("op_type, opset, attrs", [
    ("LeakyRelu", 16, {"alpha": 0.1}), ("Sigmoid", 13, {}), ("Gelu", 20, {}), ("Erf", 13, {}),
    ("HardSigmoid", 22, {}), ("Softmax", 13, {}), ("Elu", 22, {}), ("Selu", 22, {}),
    ("ReduceMean", 18, {}), ("ReduceLogSumExp", 18, {}), ("LpNormalization", 22, {}),
])
def test_low_precision_floats_keep_their_dtype(dtype, op_type, opset, attrs):
    x = np.array([[-1.0, 0.5, 2.0], [3.0, -0.25, 1.0]], dtype)
    y = call(op_type, opset, x, **attrs)
    assert y.dtype == np.dtype(dtype)
    # computed in float32 and rounded once: equal to the float32 result rounded to dtype
    ref = call(op_type, opset, x.astype(np.float32), **attrs)
    np.testing.assert_array_equal(y.astype(np.float32), ref.astype(dtype).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_binary_ops_with_low_precision_floats_keep_their_dtype(dtype):
    a, b = np.array([1.5, -2.0], dtype), np.array([0.25, 3.0], dtype)
    for op_type in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Mean"):
        assert call(op_type, 14 if op_type != "Pow" else 15, a, b).dtype == np.dtype(dtype)


def test_scalar_inputs_give_arrays_not_numpy_scalars():
    a, b = np.array(7, np.int32), np.array(-2, np.int32)
    for y in (call("Add", 14, a, b), call("Div", 14, a, b), call("Neg", 13, a),
              call("Equal", 19, a, b), call("Pow", 15, a, b), call("Sum", 13, a, b)):
        assert isinstance(y, np.ndarray) and y.shape == ()


# ---------------------------------------------------------------- arithmetic semantics

def test_legacy_broadcast_aligns_b_at_axis():
    a = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    b = np.array([10, 20, 30], np.float32)
    y = call("Add", 6, a, b, broadcast=1, axis=1)
    np.testing.assert_array_equal(y, a + b[None, :, None])
    # without axis B lines up with A's trailing dimensions
    c = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(call("Mul", 1, a, c, broadcast=1), a * c)


def test_legacy_broadcast_rejects_a_shape_that_does_not_fit():
    a = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="does not match"):
        call("Sub", 6, a, np.zeros(4, np.float32), broadcast=1, axis=1)


def test_integer_div_truncates_and_mod_follows_fmod():
    a = np.array([-7, 7, -7, 7, 6], np.int32)
    b = np.array([2, -2, -2, 2, -3], np.int32)
    np.testing.assert_array_equal(call("Div", 14, a, b), [-3, -3, 3, 3, -2])
    np.testing.assert_array_equal(call("Mod", 13, a, b), [1, -1, -1, 1, 0])  # sign of B
    np.testing.assert_array_equal(call("Mod", 13, a, b, fmod=1), [-1, 1, -1, 1, 0])  # sign of A
    assert call("Div", 14, a, b).dtype == np.int32


def test_pow_with_integer_base_keeps_the_base_type():
    y = call("Pow", 15, np.array([2, -3, 4], np.int64), np.array([10, 3, -1], np.int64))
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, [1024, -27, 0])
    y = call("Pow", 15, np.array([4, 9], np.int32), np.array([0.5, 0.5], np.float32))
    np.testing.assert_array_equal(y, np.array([2, 3], np.int32))


def test_clip_versions():
    x = np.array([-1e39, -2.0, 0.5, 2.0], np.float64)
    # opset 6 clips to the float32 range by default; opset 1 has no default bounds
    assert call("Clip", 6, x)[0] == -float(np.finfo(np.float32).max)
    assert call("Clip", 1, x)[0] == -1e39
    # min > max gives max everywhere (opset 13 text)
    np.testing.assert_array_equal(call("Clip", 13, x, np.array(1.0), np.array(0.0)), [0, 0, 0, 0])


def test_prelu_before_opset_7_applies_a_1d_slope_per_channel():
    x = -np.ones((1, 2, 2, 2), np.float32)
    slope = np.array([0.5, 0.25], np.float32)
    y = call("PRelu", 6, x, slope)
    np.testing.assert_array_equal(y[0, :, 0, 0], [-0.5, -0.25])
    np.testing.assert_array_equal(call("PRelu", 9, x, slope)[0, 0, 0], [-0.5, -0.25])


def test_bitshift_by_the_bit_width_or_more_gives_zero():
    x = np.array([1, 255, 128], np.uint8)
    np.testing.assert_array_equal(
        call("BitShift", 11, x, np.array([8, 9, 7], np.uint8), direction="LEFT"), [0, 0, 0])
    np.testing.assert_array_equal(
        call("BitShift", 11, x, np.array([8, 1, 7], np.uint8), direction="RIGHT"), [0, 127, 1])


# ---------------------------------------------------------------- casts

def test_cast_numbers_to_strings_like_onnxruntime():
    x = np.array([0.1, 1 / 3, 1e10, -0.0, np.inf, -np.inf, np.nan, 3.0], np.float32)
    y = call("Cast", 21, x, to=TensorProto.STRING)
    assert y.dtype == object
    assert y.tolist() == ["0.1", "0.33333334", "1e+10", "-0", "INF", "-INF", "NaN", "3"]
    big = np.array([2**64 - 1], np.uint64)
    assert call("Cast", 21, big, to=TensorProto.STRING).tolist() == ["18446744073709551615"]


def test_cast_strings_to_numbers():
    s = np.array(["1.5", "1e-5", "INF", "-inf", "+Inf", "NaN", " 7"], dtype=object)
    y = call("Cast", 21, s, to=TensorProto.FLOAT)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.array([1.5, 1e-5, np.inf, -np.inf, np.inf, np.nan, 7],
                                              np.float32))
    assert call("Cast", 21, np.array(["100.5"], dtype=object), to=TensorProto.INT32)[0] == 100
    with pytest.raises(ValueError, match="Hello"):
        call("Cast", 21, np.array(["Hello"], dtype=object), to=TensorProto.FLOAT)


def test_cast_to_float8_saturates_only_when_asked():
    x = np.array([1e6, -np.inf, np.nan], np.float32)
    sat = call("Cast", 21, x, to=TensorProto.FLOAT8E4M3FN).astype(np.float32)
    np.testing.assert_array_equal(sat, [448, -448, np.nan])
    raw = call("Cast", 21, x, to=TensorProto.FLOAT8E4M3FN, saturate=0).astype(np.float32)
    assert np.isnan(raw).all()
    e5m2 = call("Cast", 21, x[:2], to=TensorProto.FLOAT8E5M2, saturate=0).astype(np.float32)
    np.testing.assert_array_equal(e5m2, [np.inf, -np.inf])


@pytest.mark.parametrize("mode, expected", [
    ("up", [0.25, 2.0, 2.0, 4.0]), ("down", [0.125, 1.0, 1.0, 2.0]),
    ("nearest", [0.125, 1.0, 2.0, 4.0])])
def test_cast_to_float8e8m0_round_modes(mode, expected):
    x = np.array([0.13, 1.1, 1.5, 3.0], np.float32)
    y = call("Cast", 25, x, to=TensorProto.FLOAT8E8M0, round_mode=mode)
    assert y.dtype == np.dtype(ml_dtypes.float8_e8m0fnu)
    np.testing.assert_array_equal(y.astype(np.float32), expected)


def test_cast_1_takes_a_type_name():
    y = call("Cast", 1, np.array([1.7, -2.2], np.float32), to="INT32")
    assert y.dtype == np.int32 and y.tolist() == [1, -2]


def test_bitcast_keeps_bits_and_checks_widths():
    x = np.array([1.0, -2.0], np.float32)
    y = call("BitCast", 26, x, to=TensorProto.INT32)
    np.testing.assert_array_equal(y, x.view(np.int32))
    nibbles = call("BitCast", 26, np.array([-1, 7], ml_dtypes.int4), to=TensorProto.UINT4)
    assert nibbles.tolist() == [15, 7]
    with pytest.raises(ValueError, match="bit widths"):
        call("BitCast", 26, x, to=TensorProto.INT64)


# ---------------------------------------------------------------- reductions

def test_noop_with_empty_axes_still_applies_elementwise_steps():
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    empty = np.array([], np.int64)
    np.testing.assert_array_equal(call("ReduceSum", 13, x, empty, noop_with_empty_axes=1), x)
    np.testing.assert_array_equal(call("ReduceSumSquare", 18, x, empty, noop_with_empty_axes=1),
                                  x * x)
    np.testing.assert_array_equal(call("ReduceL1", 18, x, None, noop_with_empty_axes=1), abs(x))
    # without the flag empty axes reduce everything
    assert call("ReduceSum", 13, x, empty, keepdims=0).shape == ()


def test_reduce_axes_attribute_and_input_agree():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    old = call("ReduceMax", 13, x, axes=[0, -1], keepdims=0)
    new = call("ReduceMax", 18, x, np.array([0, -1]), keepdims=0)
    np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(new, x.max(axis=(0, 2)))


def test_reduce_rejects_bad_axes_with_a_clear_message():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        call("ReduceSum", 13, x, np.array([2]))
    with pytest.raises(ValueError, match="more than once"):
        call("ReduceMean", 18, x, np.array([1, -1]))


def test_reductions_over_an_empty_set():
    x = np.zeros((2, 0), np.float32)
    axes = np.array([1])
    assert call("ReduceMax", 18, x, axes).ravel().tolist() == [-np.inf, -np.inf]
    assert call("ReduceProd", 18, x, axes).ravel().tolist() == [1, 1]
    assert call("ReduceMean", 18, x, axes).ravel().tolist() == [0, 0]  # as onnxruntime
    assert call("ReduceMin", 18, np.zeros((0,), np.int32), axes=None).tolist() == [2**31 - 1]


def test_integer_sums_out_of_range_saturate_in_ort_and_wrap_in_spec():
    """The spec is silent; onnxruntime clamps the exact sum to the type's range, an accumulator of
    the type (and onnx.reference) wraps."""
    from refrt.session import SessionOptions
    x = np.array([100, 100], np.int8)
    y = call("ReduceSum", 13, x, keepdims=0)
    assert y.dtype == np.int8 and int(y) == 127
    impl = registry.lookup("ReduceSum", "", 13)
    spec = NodeContext("n", "ReduceSum", "ai.onnx", 13, n_outputs=1, options=SessionOptions(numerics="spec"))
    y = impl.fn(x, keepdims=0, ctx=spec)
    assert y.dtype == np.int8 and int(y) == -56


def test_argmax_nan_and_last_index():
    x = np.array([[1, np.nan, 3, 3], [np.nan, 5, 1, 0]], np.float32)
    np.testing.assert_array_equal(call("ArgMax", 13, x, axis=1, keepdims=0), [2, 0])
    np.testing.assert_array_equal(call("ArgMax", 13, x, axis=1, keepdims=0, select_last_index=1),
                                  [3, 0])
    np.testing.assert_array_equal(call("ArgMin", 13, x, axis=1, keepdims=0), [0, 0])


def test_topk_ties_keep_lower_indices_first():
    x = np.array([2, 5, 5, 1, 2, 5], np.uint8)
    values, indices = call("TopK", 11, x, np.array([4]))
    assert values.tolist() == [5, 5, 5, 2] and indices.tolist() == [1, 2, 5, 0]
    values, indices = call("TopK", 11, x, np.array([3]), largest=0)
    assert values.tolist() == [1, 2, 2] and indices.tolist() == [3, 0, 4]
    with pytest.raises(ValueError, match="outside"):
        call("TopK", 11, x, np.array([7]))


def test_softmax_opset_13_is_per_axis_but_older_opsets_flatten():
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    per_axis = call("Softmax", 13, x, axis=1)
    flattened = call("Softmax", 11, x, axis=1)
    np.testing.assert_allclose(per_axis.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(flattened.sum(axis=(1, 2)), 1, rtol=1e-6)
    assert not np.allclose(per_axis, flattened)


def test_cumsum_exclusive_reverse():
    x = np.array([1, 2, 3, 4], np.int32)
    y = call("CumSum", 14, x, np.array(0), exclusive=1, reverse=1)
    assert y.dtype == np.int32 and y.tolist() == [9, 7, 4, 0]
    assert call("CumProd", 26, x, np.array([0]), exclusive=1).tolist() == [1, 1, 2, 6]


def test_gelu_matches_the_erf_formula():
    x = np.linspace(-4, 4, 9)
    expected = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]
    np.testing.assert_allclose(call("Gelu", 20, x), expected, rtol=1e-12, atol=1e-15)
