"""Elementwise ops: arithmetic, comparison, logic, bitwise, unary math, activations and casts.

House rules of this family:

* Binary ops broadcast like NumPy (multidirectional) from opset 7 on. Opsets 1 and 6 carried
  ``broadcast``/``axis`` attributes with the older unidirectional rule; :func:`legacy_broadcast`
  implements it once for every op that had them.
* Float math on float16, bfloat16 and the float8 types runs in float32 and is rounded once to the
  input type at the end (:func:`refrt.ops._common.compute_dtype`), as onnxruntime's CPU kernels do;
  float32 and float64 compute in their own type. Integer arithmetic wraps like C.
* Every op returns an ndarray of the type the spec requires (never a NumPy scalar) and leaves its
  inputs untouched.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
from onnx import TensorProto

from ..registry import op
from ._common import (
    compute_dtype,
    f32,
    is_f32_scalar,
    mlas_wide_kernels,
    normalize_axis,
    np_dtype,
    onnx_elem_type,
)
from ._kernels import K, sized_threads

_erf_impl = None


def _erf64(v):
    """erf in float64: SciPy's vectorized one when installed (imported on first use), else the
    standard library's, element by element (exact too, slower)."""
    global _erf_impl
    if _erf_impl is None:
        try:
            from scipy.special import erf as _erf_impl
        except ImportError:  # pragma: no cover - depends on the environment
            py = np.frompyfunc(math.erf, 1, 1)
            _erf_impl = lambda a: py(a).astype(np.float64)  # noqa: E731
    return _erf_impl(v)


# ---------------------------------------------------------------- helpers

def _is_float(dtype) -> bool:
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or (dtype.kind == "V" and "float" in dtype.name)


def _is_int(dtype) -> bool:
    """Integer dtypes, including ml_dtypes' int4/uint4/int2/uint2."""
    dtype = np.dtype(dtype)
    return dtype.kind in "iu" or (dtype.kind == "V" and "int" in dtype.name)


def _result(y, dtype) -> np.ndarray:
    """``y`` as an ndarray of ``dtype`` (NumPy returns scalars for 0-d operands)."""
    return np.asarray(y).astype(dtype, copy=False)


# The helpers below run inside the executor, which switches NumPy's floating-point warnings
# off for the whole run (overflow to inf, 0/0 to NaN are results here, not accidents).

# dtypes that are their own compute dtype (compute_dtype(d) == d): no conversion on the way in
_NATIVE = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.int8, np.int16, np.int32,
                                          np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                                          np.bool_))


def _unary(fn, x: np.ndarray) -> np.ndarray:
    """Y = fn(X) evaluated in X's compute dtype, rounded back to X's type."""
    if x.dtype in _NATIVE:     # the common case, without the no-op conversions
        y = fn(x)
        if type(y) is np.ndarray and y.dtype == x.dtype:
            return y
        return _result(y, x.dtype)
    return _result(fn(x.astype(compute_dtype(x.dtype), copy=False)), x.dtype)


def _binary(fn, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C = fn(A, B) with NumPy broadcasting, evaluated in A's compute dtype, result in A's type."""
    dt = a.dtype
    if dt in _NATIVE and b.dtype == dt:     # the common case, without the no-op conversions
        y = fn(a, b)
        if type(y) is np.ndarray and y.dtype == dt:
            return y
        return _result(y, dt)
    dt = compute_dtype(dt)
    return _result(fn(a.astype(dt, copy=False), b.astype(dt, copy=False)), a.dtype)


def _compare(fn, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean C = fn(A, B) with NumPy broadcasting."""
    if a.dtype != object:
        dt = compute_dtype(a.dtype)
        a, b = a.astype(dt, copy=False), b.astype(dt, copy=False)
    return _result(fn(a, b), np.bool_)


def legacy_broadcast(a: np.ndarray, b: np.ndarray, broadcast: int, axis: int | None) -> np.ndarray:
    """B shaped for the opset-1/6 ``broadcast``/``axis`` rule, ready for NumPy broadcasting.

    With ``broadcast=1`` the shape of B must match a contiguous run of A's dimensions starting at
    ``axis`` (by default the trailing ones; a dimension of 1 in B also matches), and B is stretched
    over the rest of A. B is returned reshaped with trailing 1s so that NumPy lines it up at
    ``axis``. With ``broadcast=0`` (and in opset >= 7, where the attributes are gone) B is returned
    as is and NumPy's multidirectional broadcasting applies; for the old ops that accepts more than
    the spec did (which wanted equal shapes) but computes the same result on every valid model.
    """
    if not broadcast or b.ndim == 0:
        return b
    if b.ndim > a.ndim:
        raise ValueError(f"broadcast=1: B has rank {b.ndim}, larger than A's rank {a.ndim}")
    start = a.ndim - b.ndim if axis is None else normalize_axis(axis, a.ndim)
    span = a.shape[start:start + b.ndim]
    if len(span) != b.ndim or any(db not in (1, da) for db, da in zip(b.shape, span)):
        raise ValueError(f"broadcast=1, axis={axis}: B's shape {b.shape} does not match A's "
                         f"shape {a.shape} starting at axis {start}")
    return b.reshape(b.shape + (1,) * (a.ndim - start - b.ndim))


def _fold(fn, inputs) -> np.ndarray:
    """fn applied pairwise over a variadic input list (with broadcasting), in the first's type."""
    if not inputs:
        raise ValueError("at least one input is required")
    dt = compute_dtype(inputs[0].dtype)
    acc = inputs[0].astype(dt)
    for x in inputs[1:]:
        acc = fn(acc, x.astype(dt, copy=False))
    return acc


def _sigmoid(v):
    """1 / (1 + e^-v) without overflow for large |v|."""
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, 1 / (1 + e), e / (1 + e))


# ---------------------------------------------------------------- arithmetic

@op("Add", since=(1, 6, 7, 13, 14))
def add(a, b, *, axis=None, broadcast=0, consumed_inputs=None):
    """C = A + B"""
    return _binary(np.add, a, legacy_broadcast(a, b, broadcast, axis))


@op("Sub", since=(1, 6, 7, 13, 14))
def sub(a, b, *, axis=None, broadcast=0, consumed_inputs=None):
    """C = A - B"""
    return _binary(np.subtract, a, legacy_broadcast(a, b, broadcast, axis))


@op("Mul", since=(1, 6, 7, 13, 14))
def mul(a, b, *, axis=None, broadcast=0, consumed_inputs=None):
    """C = A * B"""
    return _binary(np.multiply, a, legacy_broadcast(a, b, broadcast, axis))


def _trunc_divide(a, b):
    """Integer a / b rounded toward zero (C semantics); division by zero gives 0."""
    q = np.floor_divide(a, b)
    if a.dtype.kind == "i":
        inexact = np.fmod(a, b) != 0
        q = q + (inexact & ((a < 0) != (b < 0)))
    return q


@op("Div", since=(1, 6, 7, 13, 14))
def div(a, b, *, axis=None, broadcast=0, consumed_inputs=None):
    """C = A / B; integer division truncates toward zero (the spec's rule since opset 14 and
    onnxruntime's for every opset). Integer division by zero is undefined in the spec: refrt
    returns 0."""
    b = legacy_broadcast(a, b, broadcast, axis)
    if _is_int(a.dtype):
        return _binary(_trunc_divide, a, b)
    return _binary(np.divide, a, b)


@op("Mod", since=(10, 13, 28))
def mod(a, b, *, fmod=0):
    """fmod=0: C = A - floor(A / B) * B (sign of B, like Python's %);
    fmod=1: C = A - trunc(A / B) * B (sign of A, like C's fmod). Integer B = 0 gives 0."""
    if fmod not in (0, 1):
        raise ValueError(f"fmod must be 0 or 1, got {fmod}")
    return _binary(np.fmod if fmod else np.mod, a, b)


def _int_power(x, y):
    if np.all(y >= 0):  # exact, wrapping like C integer multiplication
        return np.power(x, y.astype(x.dtype), dtype=x.dtype)
    return np.trunc(np.power(x.astype(np.float64), y.astype(np.float64)))


def _ort_int_power(x, y):
    """onnxruntime's integer Pow: std::pow in double, converted to the type; a value out of the
    type's range (or NaN) becomes its minimum, as the x86 conversion gives."""
    z = np.trunc(np.power(x.astype(np.float64), y.astype(np.float64)))
    info = np.iinfo(x.dtype)
    bad = ~np.isfinite(z) | (z < info.min) | (z >= float(info.max) + 1)
    return np.where(bad, info.min, np.where(bad, 0, z).astype(x.dtype))


@op("Pow", since=(1, 7, 12, 13, 15))
def pow_(x, y, *, axis=None, broadcast=0, ctx=None):
    """Z = X ^ Y, in X's type. Mixed types follow onnxruntime: a float base with an integer
    exponent computes in the base's compute dtype; an integer base with a float exponent computes
    in float64 and truncates toward zero.

    ORT vs spec, integer ^ integer out of the type's range: "spec" is exact modulo 2^bits (C
    integer multiplication; negative exponents: float64 then truncation); "ort" computes in
    float64 as onnxruntime does and gives the type's minimum out of range (5^14 in int32)."""
    y = legacy_broadcast(x, y, broadcast, axis)
    with np.errstate(all="ignore"):
        if _is_int(x.dtype) and _is_int(y.dtype):
            if ctx is not None and ctx.numerics != "spec":
                return _result(_ort_int_power(x, y), x.dtype)
            return _result(_int_power(x, y), x.dtype)
        if _is_int(x.dtype):
            z = np.power(x.astype(np.float64), y.astype(np.float64))
            return _result(np.trunc(z), x.dtype)
        dt = compute_dtype(x.dtype)
        return _result(np.power(x.astype(dt, copy=False), y.astype(dt, copy=False)), x.dtype)


@op("Max", since=(1, 6, 8, 12, 13))
def max_(*data, consumed_inputs=None):
    """Y = elementwise maximum of all inputs (broadcast); NaN propagates"""
    return _result(_fold(np.maximum, data), data[0].dtype)


@op("Min", since=(1, 6, 8, 12, 13))
def min_(*data, consumed_inputs=None):
    """Y = elementwise minimum of all inputs (broadcast); NaN propagates"""
    return _result(_fold(np.minimum, data), data[0].dtype)


@op("Sum", since=(1, 6, 8, 13))
def sum_(*data, consumed_inputs=None):
    """Y = data_0 + data_1 + ... (broadcast)"""
    return _result(_fold(np.add, data), data[0].dtype)


@op("Mean", since=(1, 6, 8, 13))
def mean(*data, consumed_inputs=None):
    """Y = (data_0 + data_1 + ...) / n (broadcast)"""
    return _result(_fold(np.add, data) / len(data), data[0].dtype)


# ---------------------------------------------------------------- comparison and logic

@op("Equal", since=(1, 7, 11, 13, 19))
def equal(a, b, *, axis=None, broadcast=0):
    """C = (A == B)"""
    return _compare(np.equal, a, legacy_broadcast(a, b, broadcast, axis))


@op("Greater", since=(1, 7, 9, 13))
def greater(a, b, *, axis=None, broadcast=0):
    """C = (A > B)"""
    return _compare(np.greater, a, legacy_broadcast(a, b, broadcast, axis))


@op("Less", since=(1, 7, 9, 13))
def less(a, b, *, axis=None, broadcast=0):
    """C = (A < B)"""
    return _compare(np.less, a, legacy_broadcast(a, b, broadcast, axis))


@op("GreaterOrEqual", since=(12, 16))
def greater_or_equal(a, b):
    """C = (A >= B)"""
    return _compare(np.greater_equal, a, b)


@op("LessOrEqual", since=(12, 16))
def less_or_equal(a, b):
    """C = (A <= B)"""
    return _compare(np.less_equal, a, b)


@op("And", since=(1, 7))
def and_(a, b, *, axis=None, broadcast=0):
    """C = A and B"""
    return _result(np.logical_and(a, legacy_broadcast(a, b, broadcast, axis)), np.bool_)


@op("Or", since=(1, 7))
def or_(a, b, *, axis=None, broadcast=0):
    """C = A or B"""
    return _result(np.logical_or(a, legacy_broadcast(a, b, broadcast, axis)), np.bool_)


@op("Xor", since=(1, 7))
def xor(a, b, *, axis=None, broadcast=0):
    """C = A xor B"""
    return _result(np.logical_xor(a, legacy_broadcast(a, b, broadcast, axis)), np.bool_)


@op("Not", since=1)
def not_(x):
    """Y = not X"""
    return _result(np.logical_not(x), np.bool_)


@op("Where", since=(9, 16))
def where(condition, x, y):
    """Z = X where condition else Y (broadcast over all three)"""
    if condition.dtype != np.bool_:
        raise TypeError(f"condition must be a bool tensor, got {condition.dtype}")
    return _result(np.where(condition, x, y), x.dtype)


# ---------------------------------------------------------------- bitwise

@op("BitwiseAnd", since=18)
def bitwise_and(a, b):
    """C = A & B"""
    return _result(np.bitwise_and(a, b), a.dtype)


@op("BitwiseOr", since=18)
def bitwise_or(a, b):
    """C = A | B"""
    return _result(np.bitwise_or(a, b), a.dtype)


@op("BitwiseXor", since=18)
def bitwise_xor(a, b):
    """C = A ^ B"""
    return _result(np.bitwise_xor(a, b), a.dtype)


@op("BitwiseNot", since=18)
def bitwise_not(x):
    """Y = ~X"""
    return _result(np.invert(x), x.dtype)


@op("BitShift", since=(11, 28))
def bit_shift(x, y, *, direction):
    """Z = X << Y (direction LEFT) or X >> Y (direction RIGHT); shifting by the bit width or
    more gives 0 (arithmetic right shift of a negative signed value gives -1)."""
    if direction not in ("LEFT", "RIGHT"):
        raise ValueError(f"direction must be 'LEFT' or 'RIGHT', got {direction!r}")
    bits = x.dtype.itemsize * 8
    shift = np.broadcast_to(y, np.broadcast_shapes(x.shape, y.shape)).astype(np.uint64)
    too_far = shift >= bits
    safe = np.where(too_far, 0, shift).astype(x.dtype)
    if direction == "LEFT":
        z = np.where(too_far, 0, np.left_shift(x, safe))
    else:
        fill = np.where(x < 0, -1, 0) if x.dtype.kind == "i" else 0
        z = np.where(too_far, fill, np.right_shift(x, safe))
    return _result(z, x.dtype)


# ---------------------------------------------------------------- unary math

@op("Abs", since=(1, 6, 13))
def abs_(x, *, consumed_inputs=None):
    """Y = |X|"""
    return _unary(np.abs, x)


@op("Neg", since=(1, 6, 13))
def neg(x, *, consumed_inputs=None):
    """Y = -X"""
    return _unary(np.negative, x)


@op("Sign", since=(9, 13))
def sign(x):
    """Y = -1, 0 or 1 by the sign of X (NaN stays NaN)"""
    return _unary(np.sign, x)


@op("Reciprocal", since=(1, 6, 13))
def reciprocal(x, *, consumed_inputs=None):
    """Y = 1 / X"""
    return _unary(lambda v: 1 / v, x)


@op("Ceil", since=(1, 6, 13))
def ceil(x, *, consumed_inputs=None):
    """Y = ceil(X)"""
    return _unary(np.ceil, x)


@op("Floor", since=(1, 6, 13))
def floor(x, *, consumed_inputs=None):
    """Y = floor(X)"""
    return _unary(np.floor, x)


@op("Round", since=(11, 22))
def round_(x):
    """Y = X rounded to the nearest integer, halves to even"""
    return _unary(np.round, x)


@op("Sqrt", since=(1, 6, 13))
def sqrt(x, *, consumed_inputs=None):
    """Y = sqrt(X) (NaN for X < 0)"""
    return _unary(np.sqrt, x)


@op("Exp", since=(1, 6, 13))
def exp(x, *, consumed_inputs=None, ctx=None):
    """Y = e^X

    float32 in "ort" numerics: onnxruntime's MLAS exp (``kernels.activations.exp_f32``, its
    AVX-512F or AVX2/FMA3 kernel as this CPU makes onnxruntime pick); otherwise NumPy's exp."""
    if x.dtype == np.float32 and (ctx is None or ctx.numerics != "spec"):
        wide = mlas_wide_kernels()
        return sized_threads(x.size, K.exp_f32, x, wide)
    return _unary(np.exp, x)


@op("Log", since=(1, 6, 13))
def log(x, *, consumed_inputs=None, ctx=None):
    """Y = ln(X)

    float32 in "ort" numerics: onnxruntime's log (``kernels.activations.log_f32``: Eigen's
    rational approximation, without fused multiply-adds), bit for bit; otherwise NumPy's log."""
    if x.dtype == np.float32 and (ctx is None or ctx.numerics != "spec"):
        return sized_threads(x.size, K.log_f32, x)
    return _unary(np.log, x)


@op("Erf", since=(9, 13))
def erf(x, *, ctx):
    """Y = erf(X) = 2/sqrt(pi) * integral_0^X e^(-t^2) dt

    numerics "ort", float32 (float16, bfloat16 through float32): onnxruntime's MLAS
    approximation (a polynomial split at |x| = 0.921875, within ~2.4 ULP of erf), bit for bit,
    by a Numba kernel (``kernels/mathf.py``).  Otherwise (and for float64) computed in float64
    and rounded once."""
    if ctx.numerics == "ort" and compute_dtype(x.dtype) == np.float32:
        y = sized_threads(x.size, K.erf_f32, x)
        return _result(y, x.dtype)
    return _result(_erf64(x.astype(np.float64)), x.dtype)


def gelu_erf(x, c, one, half, *, divide, form, ctx):
    """GELU in the erf form exporters write, e.g. ``x * 0.5 * (1 + erf(x / c))``, as one step
    (``refrt.fusion``): one parallel pass with onnxruntime's float32 erf inline
    (``kernels.mathf.gelu_erf_f32``; ``form`` is the grouping of the Muls, one of
    ``kernels.mathf.GELU_FORMS``; ``divide``: x / c rather than x * c), or None where that does
    not apply (float32 x, float32 one-element c, one and half, the default numerics)."""
    if not (ctx is not None and ctx.numerics == "ort" and isinstance(x, np.ndarray)
            and x.dtype == np.float32 and all(is_f32_scalar(v) for v in (c, one, half))
            and all(np.ndim(v) <= x.ndim for v in (c, one, half))):
        return None
    return K.gelu_erf_f32(x, divide, c.reshape(-1)[0], one.reshape(-1)[0],
                                half.reshape(-1)[0], form)


@op("Sin", since=(7, 22))
def sin(x):
    """Y = sin(X)"""
    return _unary(np.sin, x)


@op("Cos", since=(7, 22))
def cos(x):
    """Y = cos(X)"""
    return _unary(np.cos, x)


@op("Tan", since=(7, 22))
def tan(x):
    """Y = tan(X)"""
    return _unary(np.tan, x)


@op("Asin", since=(7, 22))
def asin(x):
    """Y = arcsin(X)"""
    return _unary(np.arcsin, x)


@op("Acos", since=(7, 22))
def acos(x):
    """Y = arccos(X)"""
    return _unary(np.arccos, x)


@op("Atan", since=(7, 22))
def atan(x):
    """Y = arctan(X)"""
    return _unary(np.arctan, x)


@op("Sinh", since=(9, 22))
def sinh(x):
    """Y = sinh(X)"""
    return _unary(np.sinh, x)


@op("Cosh", since=(9, 22))
def cosh(x):
    """Y = cosh(X)"""
    return _unary(np.cosh, x)


@op("Tanh", since=(1, 6, 13))
def tanh(x, *, consumed_inputs=None, ctx=None):
    """Y = tanh(X)

    float32 in "ort" numerics: onnxruntime's MLAS rational approximation
    (``kernels.activations.tanh_f32``, bit for bit with onnxruntime, within 4 ULP of tanh);
    otherwise NumPy's tanh."""
    if x.dtype == np.float32 and (ctx is None or ctx.numerics != "spec"):
        return sized_threads(x.size, K.tanh_f32, x)
    return _unary(np.tanh, x)


@op("Asinh", since=(9, 22))
def asinh(x):
    """Y = arcsinh(X)"""
    return _unary(np.arcsinh, x)


@op("Acosh", since=(9, 22))
def acosh(x):
    """Y = arccosh(X)"""
    return _unary(np.arccosh, x)


@op("Atanh", since=(9, 22))
def atanh(x):
    """Y = arctanh(X)"""
    return _unary(np.arctanh, x)


@op("IsNaN", since=(9, 13, 20))
def isnan(x):
    """Y = X is NaN"""
    return _result(np.isnan(x.astype(compute_dtype(x.dtype), copy=False)), np.bool_)


@op("IsInf", since=(10, 20))
def isinf(x, *, detect_negative=1, detect_positive=1):
    """Y = (X == +inf and detect_positive) or (X == -inf and detect_negative)"""
    v = x.astype(compute_dtype(x.dtype), copy=False)
    hit = np.isinf(v)
    if not detect_negative:
        hit &= v > 0
    if not detect_positive:
        hit &= v < 0
    return _result(hit, np.bool_)


# ---------------------------------------------------------------- activations

def _ort_f32(x, ctx) -> bool:
    """float32 in the "ort" numerics (where a kernel computes as onnxruntime does)."""
    return x.dtype == np.float32 and (ctx is None or ctx.numerics != "spec")


@op("Relu", since=(1, 6, 13, 14))
def relu(x, *, consumed_inputs=None, ctx=None):
    """Y = max(0, X)

    float32 in "ort" numerics: as onnxruntime computes it, X kept unless below 0
    (``kernels.activations.clamp_f32``: Relu(-0) is -0, NaN stays NaN); otherwise NumPy's
    maximum (which gives +0 for -0)."""
    if _ort_f32(x, ctx):
        return sized_threads(x.size, K.clamp_f32, x, 0, np.inf)
    return _unary(lambda v: np.maximum(v, 0), x)


@op("LeakyRelu", since=(1, 6, 16))
def leaky_relu(x, *, alpha=f32(0.01), consumed_inputs=None):
    """Y = alpha * X for X < 0, else X"""
    return _unary(lambda v: np.where(v < 0, alpha * v, v), x)


def _prelu(x, slope):
    if np.broadcast_shapes(x.shape, slope.shape) != x.shape:
        raise ValueError(f"slope of shape {slope.shape} does not broadcast to X's shape {x.shape}")
    return _binary(lambda v, s: np.where(v < 0, s * v, v), x, slope)


@op("PRelu", since=(7, 9, 16))
def prelu(x, slope):
    """Y = slope * X for X < 0, else X (slope broadcasts to X)"""
    return _prelu(x, slope)


@op("PRelu", since=(1, 6))
def prelu_6(x, slope, *, consumed_inputs=None):
    """Y = slope * X for X < 0, else X; a 1-D slope with one value per channel applies along
    axis 1 (the rule before opset 7, which onnxruntime keeps)."""
    if slope.ndim == 1 and x.ndim >= 2 and slope.shape[0] == x.shape[1] and slope.size > 1:
        slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
    return _prelu(x, slope)


@op("ThresholdedRelu", since=(10, 22))
def thresholded_relu(x, *, alpha=1.0):
    """Y = X for X > alpha, else 0"""
    return _unary(lambda v: np.where(v > alpha, v, 0), x)


# Elu, Celu and Selu compute e^X - 1 as expm1: near 0, exp(X) - 1 cancels (at X = -2^-8 in float32
# it loses 11 bits). onnxruntime computes exp(X) - 1 with its own exp (docs/NUMERICS.md).

@op("Elu", since=(1, 6, 22))
def elu(x, *, alpha=1.0, consumed_inputs=None):
    """Y = alpha * (e^X - 1) for X < 0, else X"""
    return _unary(lambda v: np.where(v < 0, alpha * np.expm1(v), v), x)


@op("Celu", since=(12, 28))
def celu(x, *, alpha=1.0):
    """Y = max(0, X) + min(0, alpha * (e^(X / alpha) - 1))"""
    return _unary(lambda v: np.maximum(v, 0) + np.minimum(0, alpha * np.expm1(v / alpha)), x)


def _selu(x, alpha, gamma):
    return _unary(lambda v: gamma * np.where(v > 0, v, alpha * np.expm1(v)), x)


@op("Selu", since=1)
def selu_1(x, *, alpha=f32(1.6732), gamma=f32(1.0507), consumed_inputs=None):
    """Y = gamma * (alpha * (e^X - 1) for X <= 0, else X) (opset 1 defaults)"""
    return _selu(x, alpha, gamma)


@op("Selu", since=(6, 22))
def selu(x, *, alpha=f32(1.67326319217681884765625), gamma=f32(1.05070102214813232421875)):
    """Y = gamma * (alpha * (e^X - 1) for X <= 0, else X)"""
    return _selu(x, alpha, gamma)


@op("Sigmoid", since=(1, 6, 13))
def sigmoid(x, *, consumed_inputs=None, ctx=None):
    """Y = 1 / (1 + e^-X)

    float32 in "ort" numerics: onnxruntime's MLAS logistic (``kernels.activations.logistic_f32``:
    X clamped to [-18, 18], a rational polynomial; bit for bit with onnxruntime, so 0 for
    X < -18 where the exact value is about 1.5e-8); otherwise computed from e^-X."""
    if x.dtype == np.float32 and (ctx is None or ctx.numerics != "spec"):
        return sized_threads(x.size, K.logistic_f32, x)
    return _unary(_sigmoid, x)


@op("HardSigmoid", since=(1, 6, 22))
def hard_sigmoid(x, *, alpha=f32(0.2), beta=0.5, consumed_inputs=None, ctx=None):
    """Y = max(0, min(1, alpha * X + beta))

    alpha * X and + beta each rounded to float32 (no fused multiply-add), as onnxruntime
    computes it; float32 in "ort" numerics by ``kernels.activations.clamp_f32`` (a value equal
    to a bound kept, as there)."""
    if _ort_f32(x, ctx):
        return sized_threads(x.size, K.clamp_f32, x, 0, 1, alpha, beta)
    return _unary(lambda v: np.clip(alpha * v + beta, 0, 1), x)


@op("HardSwish", since=(14, 22))
def hard_swish(x, *, ctx=None):
    """Y = X * max(0, min(1, X / 6 + 1 / 2))

    float32 in "ort" numerics: X * clip(X * float32(1/6) + 0.5, 0, 1), as onnxruntime computes
    it (a multiplication by the rounded 1/6, not a division by 6)."""
    if x.dtype == np.float32 and (ctx is None or ctx.numerics != "spec"):
        return x * np.clip(x * np.float32(1 / 6) + np.float32(0.5), np.float32(0), np.float32(1))
    return _unary(lambda v: v * np.clip(v / 6 + 0.5, 0, 1), x)


@op("Softplus", since=(1, 22))
def softplus(x):
    """Y = ln(e^X + 1)"""
    return _unary(lambda v: np.logaddexp(v, 0), x)


@op("Softsign", since=(1, 22))
def softsign(x):
    """Y = X / (1 + |X|)"""
    return _unary(lambda v: v / (1 + np.abs(v)), x)


@op("Mish", since=(18, 22))
def mish(x):
    """Y = X * tanh(ln(1 + e^X))

    Each of the spec's function-body steps (Softplus, Tanh, Mul) is rounded to X's type, as
    onnxruntime and onnx.reference evaluate it: for float16 this differs from one rounding of the
    float32 value by a unit in the last place (X = -13: -2.9445e-05, not -2.9385e-05)."""
    softplus = _unary(lambda v: np.logaddexp(v, 0), x)
    return _binary(np.multiply, x, _unary(np.tanh, softplus))


@op("Swish", since=24)
def swish(x, *, alpha=1.0):
    """Y = X * sigmoid(alpha * X)"""
    return _unary(lambda v: v * _sigmoid(alpha * v), x)


@op("SwiGLU", since=28)
def swiglu(a, b, *, alpha=1.0):
    """Y = Swish_alpha(A) * B = A * sigmoid(alpha * A) * B, for A and B of one shape (no
    broadcasting). float16 / bfloat16 round once at the end, where the spec's function body
    (Swish, then Mul) rounds the gate to the input type first."""
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"SwiGLU: A and B must have the same shape and type (no broadcasting), "
                         f"got {list(a.shape)} {a.dtype} and {list(b.shape)} {b.dtype}")
    return _binary(lambda u, v: u * _sigmoid(alpha * u) * v, a, b)


@op("Gelu", since=20)
def gelu(x, *, approximate="none", ctx=None):
    """approximate="none": Y = X/2 * (1 + erf(X / sqrt(2)));
    approximate="tanh": Y = X/2 * (1 + tanh(sqrt(2/pi) * (X + 0.044715 X^3)))

    float32 in "ort" numerics: onnxruntime's arithmetic, bit for bit: MLAS's erf of
    X * float32(1/sqrt(2)), or MLAS's tanh of X * (sqrt(2/pi) + (sqrt(2/pi) * 0.044715) * X * X)
    (float32 constants, each step rounded), then 0.5 * X * (1 + that). Otherwise float64 erf /
    NumPy's tanh."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    if x.dtype == np.float32 and (ctx is None or ctx.numerics != "spec"):
        f = np.float32
        if approximate == "none":
            inner, fn = x * f(1 / math.sqrt(2)), K.erf_f32
        else:
            k0 = f(math.sqrt(2 / math.pi))
            inner, fn = x * (k0 + (k0 * f(0.044715)) * x * x), K.tanh_f32
        t = sized_threads(x.size, fn, inner)
        return f(0.5) * x * (f(1) + t)
    if approximate == "none":
        return _unary(lambda v: 0.5 * v * (1 + _erf64(v / math.sqrt(2)).astype(v.dtype)), x)
    c = math.sqrt(2 / math.pi)
    return _unary(lambda v: 0.5 * v * (1 + np.tanh(c * (v + 0.044715 * v ** 3))), x)


@op("Shrink", since=9)
def shrink(x, *, bias=0.0, lambd=0.5):
    """Y = X - bias for X > lambd, X + bias for X < -lambd, else 0

    Integer X (the spec is silent): X -/+ bias in float32, the type of the float attributes, then
    truncated toward zero, as onnxruntime does (17 - 7.4e-07 is 17 in float32); int64 values
    beyond 2^24 lose precision there, as in onnxruntime."""
    def fn(v):
        return np.where(v < -lambd, v + bias, np.where(v > lambd, v - bias, 0))
    if _is_int(x.dtype):      # Python-float attributes stay float32 next to a float32 array
        with np.errstate(all="ignore"):
            return _result(np.trunc(fn(x.astype(np.float32))), x.dtype)
    return _unary(fn, x)


# ---------------------------------------------------------------- Clip

def _clip(x, lo, hi, ctx=None):
    """min(max(X, lo), hi); a bound of None is absent. With lo > hi every value becomes hi.

    float32 in "ort" numerics: as onnxruntime computes it, a value replaced only where strictly
    beyond a bound (``kernels.activations.clamp_f32``: -0 stays -0 against a bound of 0, NaN
    stays NaN), an absent bound being float32's lowest or largest finite value (so -inf becomes
    -3.4028235e38 without a min); elsewhere, and for a NaN bound, NumPy's maximum and minimum."""
    dt = compute_dtype(x.dtype)
    bounds = []
    for bound, name in ((lo, "min"), (hi, "max")):
        if bound is not None:
            bound = np.asarray(bound)
            if bound.size != 1:
                raise ValueError(f"Clip's {name} must be a scalar, got shape {bound.shape}")
            bound = bound.reshape(()).astype(dt)
        bounds.append(bound)
    lo, hi = bounds
    if _ort_f32(x, ctx) and not any(b is not None and np.isnan(b) for b in bounds):
        top = np.finfo(np.float32).max
        return sized_threads(x.size, K.clamp_f32, x, -top if lo is None else lo,
                             top if hi is None else hi)
    y = x.astype(dt)  # a copy even without bounds: the output never aliases the input
    for bound, fn in ((lo, np.maximum), (hi, np.minimum)):
        if bound is not None:
            y = fn(y, bound)
    return _result(y, x.dtype)


@op("Clip", since=1)
def clip_1(x, *, min=None, max=None, consumed_inputs=None, ctx=None):  # noqa: A002
    """Y = min(max(X, min), max); an absent bound does not clip"""
    return _clip(x, min, max, ctx)


@op("Clip", since=6)
def clip_6(x, *, min=-float(np.finfo(np.float32).max),  # noqa: A002
           max=float(np.finfo(np.float32).max), ctx=None):
    """Y = min(max(X, min), max), the bounds being float attributes"""
    return _clip(x, min, max, ctx)


@op("Clip", since=(11, 12, 13))
def clip(x, min=None, max=None, *, ctx=None):  # noqa: A002
    """Y = min(max(X, min), max), the bounds being optional scalar inputs"""
    return _clip(x, min, max, ctx)


# ---------------------------------------------------------------- Cast, CastLike, BitCast

_FLOAT8 = {TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
           TensorProto.FLOAT8E5M2FNUZ}


def _elem_type(to) -> int:
    """The ``to`` attribute: an element type number, or a type name (Cast-1 used strings)."""
    if isinstance(to, str):
        name = to.upper()
        if name not in TensorProto.DataType.keys():
            raise ValueError(f"unknown data type name {to!r}")
        return TensorProto.DataType.Value(name)
    return int(to)


def _format_number(v, is_float: bool) -> str:
    """A number as text the way onnxruntime writes it: "%.8g" for floats, INF/-INF/NaN."""
    if not is_float:
        return str(int(v))
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "INF" if v > 0 else "-INF"
    return "%.8g" % v


def _parse_number(s: str, integer: bool):
    """Text -> number: plain and scientific notation, INF/+INF/-INF/NaN in any case."""
    text = (s.decode() if isinstance(s, bytes) else str(s)).strip()
    try:
        if integer:
            try:
                return int(text)
            except ValueError:
                return int(float(text))  # "100.5" -> 100 (the spec leaves this undefined)
        return float(text)
    except (ValueError, OverflowError):
        raise ValueError(f"cannot cast string {s!r} to a number") from None


def _strings_to(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    integer = _is_int(dtype) or dtype == np.bool_
    values = [_parse_number(s, integer) for s in x.reshape(-1)]
    if dtype == np.bool_:
        return np.array([v != 0 for v in values], dtype=np.bool_).reshape(x.shape)
    wide = np.int64 if integer else np.float64
    if integer and dtype == np.uint64:
        wide = np.uint64
    try:
        return np.array(values, dtype=wide).reshape(x.shape)
    except OverflowError:
        raise ValueError(f"a string in the input is out of range for {dtype}") from None


def _to_strings(x: np.ndarray) -> np.ndarray:
    if x.dtype == object:
        return x.copy()
    floating = _is_float(x.dtype)
    # float64 holds every float type exactly; ints go through Python ints (uint64 included)
    wide = np.float64 if floating else x.dtype if x.dtype.kind in "iub" else np.int64
    values = x.astype(wide).reshape(-1)
    out = np.array([_format_number(v, floating) for v in values.tolist()], dtype=object)
    return out.reshape(x.shape)


def _to_float8e8m0(x: np.ndarray, saturate: int, round_mode: str) -> np.ndarray:
    """float -> float8e8m0, a power of two 2^(c - 127) with c in 0..254 (255 is NaN).

    With X = (1 + frac) * 2^e: "down" gives e, "up" gives e + 1 when frac > 0, "nearest" gives
    e + 1 when frac >= 1/2. X above 2^127 (infinity too) gives 2^127 with saturate, NaN without;
    X below 2^-127 (zero too) gives 2^-127 with saturate, NaN without. Negative X is undefined in
    the spec; refrt treats it as below the range, as onnxruntime does.
    """
    if round_mode not in ("up", "down", "nearest"):
        raise ValueError(f"round_mode must be 'up', 'down' or 'nearest', got {round_mode!r}")
    v = x.astype(np.float64)
    f, p = np.frexp(v)                       # v = f * 2^p with f in [0.5, 1)
    frac = 2 * f - 1                         # v = (1 + frac) * 2^(p - 1)
    bump = {"up": frac > 0, "down": False, "nearest": frac >= 0.5}[round_mode]
    code = p.astype(np.int64) + 126 + bump
    low = ~(v >= 2.0 ** -127)                # also NaN, which the last line sets
    high = v > 2.0 ** 127
    code = np.where(low, 0 if saturate else 255, np.where(high, 254 if saturate else 255, code))
    code = np.where(np.isnan(v), 255, code)
    return code.astype(np.uint8).view(ml_dtypes.float8_e8m0fnu)


def cast_array(x: np.ndarray, to, saturate: int = 1, round_mode: str = "up") -> np.ndarray:
    """X converted to ONNX element type ``to`` (a number or, as in Cast-1, a type name).

    Numbers -> numbers as NumPy/ml_dtypes ``astype`` does: round to nearest even between floats,
    truncation float -> int, wrap-around int -> narrower int (onnxruntime rounds float -> int4 /
    int2 to nearest instead; refrt truncates as for every other integer type, as onnx's test data
    do). With ``saturate`` a conversion to a float8 type clamps to the type's largest finite value
    (infinities too) instead of giving NaN or infinity; float8e8m0 uses ``round_mode``.

    Strings parse as plain or scientific numbers (INF, -INF, NaN in any case); numbers become text
    as onnxruntime writes them: "%.8g" for floats (the spec only asks for a "plain floating-point
    representation"), INF, -INF, NaN, and 1/0 for bools.
    """
    to = _elem_type(to)
    if to == TensorProto.STRING:
        return _to_strings(x)
    dtype = np_dtype(to)
    if x.dtype == object:
        x = _strings_to(x, dtype)
    with np.errstate(all="ignore"):
        if to == TensorProto.FLOAT8E8M0:
            return _to_float8e8m0(x, saturate, round_mode)
        if to in _FLOAT8 and saturate:
            limit = float(ml_dtypes.finfo(dtype).max)
            x = np.clip(x.astype(np.float64), -limit, limit)
        return np.asarray(x.astype(dtype))


@op("Cast", since=(1, 6, 9, 13, 19, 21, 23, 24, 25, 28))
def cast(x, *, to, saturate=1, round_mode="up"):
    """Y = X converted to type `to` (see cast_array for the exact rules)"""
    return cast_array(x, to, saturate, round_mode)


@op("CastLike", since=(15, 19, 21, 23, 24, 25))
def cast_like(x, target_type, *, saturate=1, round_mode="up"):
    """Y = X converted to the element type of target_type"""
    return cast_array(x, onnx_elem_type(target_type.dtype), saturate, round_mode)


def _bit_width(dtype: np.dtype) -> int:
    if dtype.kind == "V" and dtype.name.endswith(("int4", "float4_e2m1fn")):
        return 4
    if dtype.kind == "V" and dtype.name.endswith("int2"):
        return 2
    return dtype.itemsize * 8


@op("BitCast", since=26)
def bitcast(x, *, to):
    """Y = the bits of X reinterpreted as type `to` (same bit width, little endian)"""
    dtype = np_dtype(int(to))
    if x.dtype == object or dtype == object:
        raise TypeError("BitCast does not take strings")
    width, target = _bit_width(x.dtype), _bit_width(dtype)
    if width != target:
        raise ValueError(f"BitCast needs equal bit widths: {x.dtype} has {width} bits, "
                         f"{dtype} has {target}")
    x = np.array(x, order="C", copy=True)  # a contiguous copy: the output owns its buffer
    if width < 8:  # sub-byte types live one per byte in their low bits
        code = x.view(np.uint8) & ((1 << width) - 1)
        return code.view(dtype)
    return x.view(dtype).reshape(x.shape)
