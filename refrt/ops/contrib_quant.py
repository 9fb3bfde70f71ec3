"""onnxruntime's quantized contrib ops (``com.microsoft`` domain): what ``onnxruntime.quantization``
writes into QOperator models and what ORT's graph optimizer fuses dynamic quantization into.

    integer GEMM ops:  y = float32(acc) * (a_scale * b_scale) (+ bias), or requantized as in
                       QLinearMatMul; acc = exact int32 sum of (a - a_zp) * (b - b_zp)
    lookup-table ops:  y = table[x], table[i] = quantize(f(dequantize(i)))   (256 entries)
    QLinearAdd / Mul:  onnxruntime's own float32 formulas (see their docstrings)

onnx.defs has no schemas for these ops: the signatures carry onnxruntime's documented defaults
(``docs/ContribOperators.md``), attributes without a documented default default to None. The
semantics are those of onnxruntime's CPU kernels (MLAS), checked against onnxruntime 1.32 in
``tests/test_contrib_quant_ort.py``; every docstring says where ORT departs from the textbook
formula. Integer sums run on the Numba kernels through ``quant.matmul_integer`` (MatMulNBits'
int8 compute on ``kernels.blockwise``); the session option ``emulate_avx2_u8s8`` switches
their u8 x s8 products to ORT's int16-saturating AVX2 arithmetic, as for MatMulInteger.

Float arithmetic that onnxruntime fuses (``vfmadd``) is reproduced with
:func:`refrt.kernels.fma.fma32`, an exact float32 fused multiply-add written in NumPy (float64
product, round-to-odd sum, one rounding).
"""

from __future__ import annotations

import numpy as np

from .. import kernels as K
from ..kernels.fma import fma32
from ..registry import op
from ._common import f32, normalize_axis, once_per_session, pool_window, window_taps
from .contrib import attention as _ms_attention
from .contrib import embed_layer_normalization as _ms_embed_layer_normalization
from .quant import dequantize, gemm_for, int8_operand, matmul_integer, packed_matrices, quantize
from .rnn import activation_functions

MS = "com.microsoft"
_F32 = np.float32
_INT8 = (np.dtype(np.uint8), np.dtype(np.int8))


# ---------------------------------------------------------------- small helpers

def _scalar(v, name, dtype=None):
    """A per-tensor parameter (scalar or one element) -> 0-d array; ORT refuses anything else."""
    arr = np.asarray(v)
    if arr.size != 1:
        raise ValueError(f"{name} must be a scalar or a 1-D tensor of one element, got shape "
                         f"{list(arr.shape)}")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must be {np.dtype(dtype).name}, got {arr.dtype.name}")
    return arr.reshape(())


def _zero_point(zp, dtype, name):
    """An optional per-tensor zero point of ``dtype`` (0 when absent) -> 0-d array."""
    if zp is None:
        return np.zeros((), dtype)
    return _scalar(zp, name, dtype)


def _float_scale(s, name):
    return _scalar(s, name, _F32)


def _dequantized_codes(scale, zp, dtype):
    """float32 x_scale * float32(i - zp) for the 256 codes of ``dtype`` laid out by their byte
    value (index = uint8 view of the code), as ORT's lookup-table builder computes it."""
    codes = np.arange(256, dtype=np.uint8).view(dtype).astype(np.int32)
    return _F32(scale) * (codes - np.int32(zp)).astype(_F32)


def _lookup_table(fn, x_scale, x_zp, y_scale, y_zp, dtype):
    """table[byte] = quantize(fn(dequantize(code)), y_scale, y_zp): onnxruntime's 8-bit
    lookup table (the quantization is QuantizeLinear's, float32 division)."""
    y = fn(_dequantized_codes(x_scale, x_zp, dtype))
    return quantize(y.astype(_F32), y_scale, y_zp, out_dtype=dtype)


def _apply_table(x, table):
    """table[x] with x read as bytes (int8 codes index by their uint8 bit pattern)."""
    return table[np.asarray(x, order="C").view(np.uint8)]


def _requantize_float(v, y_zp, dtype):
    """saturate(round_half_even(v)) for a float32 v that already includes the zero point."""
    info = np.iinfo(dtype)
    with np.errstate(invalid="ignore"):
        return np.clip(np.rint(v), info.min, info.max).astype(dtype)


# ---------------------------------------------------------------- QuantizeLinear / DequantizeLinear

@op("QuantizeLinear", domain=MS)
def ms_quantize_linear(x, y_scale, y_zero_point=None, *, axis=None):
    """y = saturate(round_half_even(x / y_scale) + y_zero_point), per tensor or per axis

    The contrib twin of the ONNX op (uint8, int8, uint16, int16, int4, uint4; float or float16
    x). ORT: the division runs in float32 (also for float16 x), axis defaults to 1."""
    out = y_zero_point.dtype if y_zero_point is not None else np.dtype(np.uint8)
    return quantize(x, y_scale, y_zero_point, axis=1 if axis is None else axis,
                    out_dtype=out, precision=_F32)


@op("DequantizeLinear", domain=MS)
def ms_dequantize_linear(x, x_scale, x_zero_point=None, *, axis=None):
    """y = (x - x_zero_point) * x_scale, per tensor or per axis, y of x_scale's type

    The contrib twin of the ONNX op; ORT multiplies in float32 and rounds once (also for a
    float16 scale); axis defaults to 1."""
    return dequantize(x, x_scale, x_zero_point, axis=1 if axis is None else axis)


# ---------------------------------------------------------------- QLinearAdd / QLinearMul

def _qlinear_binary_params(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale,
                           c_zero_point, op_type):
    a, b = int8_operand(a, "A"), int8_operand(b, "B")
    if a.dtype != b.dtype:
        raise TypeError(f"{op_type}: A and B must have the same type, got {a.dtype.name} and "
                        f"{b.dtype.name}")
    dt = a.dtype
    scales = [_float_scale(s, n) for s, n in ((a_scale, "A_scale"), (b_scale, "B_scale"),
                                              (c_scale, "C_scale"))]
    zps = [_zero_point(z, dt, n) for z, n in ((a_zero_point, "A_zero_point"),
                                              (b_zero_point, "B_zero_point"),
                                              (c_zero_point, "C_zero_point"))]
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op_type}: shapes {list(a.shape)} and {list(b.shape)} do not "
                         f"broadcast") from None
    return a, b, dt, scales, [np.float32(z) for z in zps], shape


def _a_is_span_scalar(a_shape, b_shape, out_shape):
    """Does onnxruntime's broadcast loop treat A as a scalar per span (and B as the span)?
    That is the case when A has one element, or when along the innermost output axis longer
    than 1 A is broadcast and B is not."""
    if int(np.prod(a_shape)) == 1:
        return True
    if int(np.prod(b_shape)) == 1:
        return False
    rank = len(out_shape)
    a_full = (1,) * (rank - len(a_shape)) + tuple(a_shape)
    b_full = (1,) * (rank - len(b_shape)) + tuple(b_shape)
    for d in reversed(range(rank)):
        if out_shape[d] > 1:
            return a_full[d] == 1 and b_full[d] > 1
    return False


@op("QLinearAdd", domain=MS)
def qlinear_add(A, A_scale, A_zero_point=None, B=None, B_scale=None, B_zero_point=None,
                C_scale=None, C_zero_point=None):
    """C = saturate(round((A - A_zp) * A_scale / C_scale + (B - B_zp) * B_scale / C_scale) + C_zp)

    ORT (MLAS AVX2 kernel), all float32 with fused multiply-adds: rA = A_scale / C_scale,
    rB = B_scale / C_scale, F = C_zp - fma(rA, A_zp, rB * B_zp), C = round(fma(A, rA,
    fma(B, rB, F))), saturated. Where the broadcast makes A a scalar per span (and B the span),
    ORT swaps the operands: F = C_zp - fma(rB, B_zp, rA * A_zp), C = round(fma(B, rB, fma(A, rA,
    F))). These reproduce ORT bit for bit; the textbook formula differs from it by one step at
    rounding ties. Zero points absent = 0 (onnxruntime's type inference refuses an omitted A
    or B zero point); all parameters per tensor."""
    if B is None or B_scale is None or C_scale is None:
        raise ValueError("QLinearAdd: B, B_scale and C_scale are required")
    a, b, dt, (sa, sb, sc), (za, zb, zc), shape = _qlinear_binary_params(
        A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point, "QLinearAdd")
    ra, rb = sa / sc, sb / sc
    af, bf = a.astype(_F32), b.astype(_F32)
    if _a_is_span_scalar(a.shape, b.shape, shape):
        fixed = zc - fma32(rb, zb, ra * za)
        v = fma32(bf, rb, fma32(af, ra, fixed))
    else:
        fixed = zc - fma32(ra, za, rb * zb)
        v = fma32(af, ra, fma32(bf, rb, fixed))
    return _requantize_float(np.broadcast_to(v, shape), zc, dt)


@op("QLinearMul", domain=MS)
def qlinear_mul(A, A_scale, A_zero_point=None, B=None, B_scale=None, B_zero_point=None,
                C_scale=None, C_zero_point=None):
    """C = saturate(round((A - A_zp) * (B - B_zp) * (A_scale * B_scale / C_scale)) + C_zp)

    ORT: the integer product (A - A_zp) * (B - B_zp) is exact, converted to float32, multiplied
    by the float32 ratio A_scale * B_scale / C_scale (in that order), C_zp added in float32,
    rounded half to even and saturated (bit for bit)."""
    if B is None or B_scale is None or C_scale is None:
        raise ValueError("QLinearMul: B, B_scale and C_scale are required")
    a, b, dt, (sa, sb, sc), (za, zb, zc), shape = _qlinear_binary_params(
        A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point, "QLinearMul")
    ratio = sa * sb / sc
    prod = (a.astype(np.int32) - np.int32(za)) * (b.astype(np.int32) - np.int32(zb))
    return _requantize_float(prod.astype(_F32) * ratio + zc, zc, dt)


# ---------------------------------------------------------------- MLAS activations, lookup tables

_LOGISTIC = (np.float32(4.37031012579801e-11), np.float32(1.15627324459942e-07),
             np.float32(6.08574864600143e-05), np.float32(8.51377133304701e-03),
             np.float32(2.48287947061529e-01))
_LOGISTIC_Q = (np.float32(6.10247389755681e-13), np.float32(5.76102136993427e-09),
               np.float32(6.29106785017040e-06), np.float32(1.70198817374094e-03),
               np.float32(1.16817656904453e-01), np.float32(9.93151921023180e-01))
_TANH = (np.float32(-2.76076847742355e-16), np.float32(2.00018790482477e-13),
         np.float32(-8.60467152213735e-11), np.float32(5.12229709037114e-08),
         np.float32(1.48572235717979e-05), np.float32(6.37261928875436e-04),
         np.float32(4.89352455891786e-03))
_TANH_Q = (np.float32(1.19825839466702e-06), np.float32(1.18534705686654e-04),
           np.float32(2.26843463243900e-03), np.float32(4.89352518554385e-03))


def _horner_fma(x2, coefficients):
    """c0 * x2^n + ... + cn by Horner's rule in fused multiply-adds, first step x2 * c0 + c1."""
    p = fma32(x2, coefficients[0], coefficients[1])
    for c in coefficients[2:]:
        p = fma32(p, x2, c)
    return p


def mlas_logistic(x):
    """onnxruntime's float32 sigmoid (MLAS, FMA kernels): x clamped to [-18, 18], then
    p(x) / q(x) + 0.5 with odd / even polynomials in x^2 evaluated by fused multiply-adds,
    clamped to [0, 1]. It is within a few ULP of 1 / (1 + exp(-x))."""
    x = np.clip(np.asarray(x, _F32), _F32(-18), _F32(18))
    x2 = x * x
    p = _horner_fma(x2, _LOGISTIC) * x
    q = _horner_fma(x2, _LOGISTIC_Q)
    return np.clip(p / q + _F32(0.5), _F32(0), _F32(1))


def mlas_tanh(x):
    """onnxruntime's float32 tanh (MLAS, FMA kernels; ORT's Tanh op and its RNN cells):
    x clamped to [-9, 9] (NaN kept), then x * p(x^2) / q(x^2) with Eigen's rational
    coefficients evaluated by fused multiply-adds (bit for bit with ORT 1.32; within 4 ULP
    of tanh)."""
    x = np.minimum(_F32(9), np.maximum(_F32(-9), np.asarray(x, _F32)))
    x2 = x * x
    return (x * _horner_fma(x2, _TANH)) / _horner_fma(x2, _TANH_Q)


def _lookup_op(x, x_scale, x_zero_point, y_scale, y_zero_point, fn):
    x = int8_operand(x, "X")
    table = _lookup_table(fn, _float_scale(x_scale, "X_scale"),
                          _zero_point(x_zero_point, x.dtype, "X_zero_point"),
                          _float_scale(y_scale, "Y_scale"),
                          _zero_point(y_zero_point, x.dtype, "Y_zero_point"), x.dtype)
    return _apply_table(x, table)


@op("QLinearSigmoid", domain=MS)
def qlinear_sigmoid(X, X_scale, X_zero_point=None, Y_scale=None, Y_zero_point=None):
    """Y = quantize(sigmoid(dequantize(X))), through a 256-entry table

    ORT builds the table from the 256 dequantized codes with MLAS's sigmoid approximation
    (:func:`mlas_logistic`) and QuantizeLinear; refrt does the same, bit for bit."""
    if Y_scale is None:
        raise ValueError("QLinearSigmoid: Y_scale is required")
    return _lookup_op(X, X_scale, X_zero_point, Y_scale, Y_zero_point, mlas_logistic)


@op("QLinearLeakyRelu", domain=MS)
def qlinear_leaky_relu(X, X_scale, X_zero_point=None, Y_scale=None, Y_zero_point=None, *,
                       alpha=f32(0.01)):
    """Y = quantize(v >= 0 ? v : alpha * v), v = dequantize(X), through a 256-entry table
    (float32 throughout, as ORT builds it)."""
    if Y_scale is None:
        raise ValueError("QLinearLeakyRelu: Y_scale is required")
    a = _F32(alpha)
    return _lookup_op(X, X_scale, X_zero_point, Y_scale, Y_zero_point,
                      lambda v: np.where(v >= 0, v, a * v).astype(_F32))


# ---------------------------------------------------------------- QLinearSoftmax

def _softmax_exp_table(x_scale, reduce_len):
    """ORT's table: exp((i - 255 + shift) * x_scale) in float64, stored as float32, with
    shift = max(0, log(FLT_MAX / D) - 5) / x_scale keeping the row sums finite."""
    limit = float(np.float32(np.finfo(_F32).max / np.float32(reduce_len)))
    shift = max(0.0, np.log(limit) - 5.0) / float(x_scale)
    i = np.arange(256, dtype=np.float64)
    return np.exp((i - 255.0 + shift) * float(x_scale)).astype(_F32)


def _softmax_rows_quantized(x2, x_scale, y_scale, y_zp):
    """Rows of x2 (R, D) -> quantized softmax rows, ORT's arithmetic (see qlinear_softmax)."""
    dt = x2.dtype
    d = x2.shape[1]
    table = _softmax_exp_table(x_scale, d)
    xi = x2.astype(np.int32)
    top = xi.max(axis=1, keepdims=True)
    if dt == np.uint8:
        e = table[xi - top + 255]
    else:   # int8: index (127 - max + x) read as the byte of a table stored at i - 128
        e = table[(((127 - top + xi) & 0xFF) + 128) & 0xFF]
    total = np.cumsum(e, axis=1, dtype=_F32)[:, -1:]          # left-to-right float32 sum
    inv = np.floor(_F32(1) / _F32(y_scale)).astype(_F32)
    q = np.rint((e * inv) / total).astype(np.int64) + int(y_zp)
    info = np.iinfo(dt)
    return np.minimum(q, info.max).astype(dt)     # q >= y_zero_point >= the type's minimum


@op("QLinearSoftmax", domain=MS)
def qlinear_softmax(X, X_scale, x_zero_point=None, y_scale=None, y_zero_point=None, *,
                    axis=-1, opset):
    """Y = quantize(softmax(dequantize(X))) over ``axis`` (opset >= 13) or over the flattened
    axes [axis, rank) (opset < 13)

    ORT's integer-friendly algorithm, reproduced bit for bit: e_i = T[x_i - max + 255] from a
    256-entry float32 table T[i] = exp((i - 255 + shift) * X_scale) (float64, shift as in
    :func:`_softmax_exp_table`); the row sum is a left-to-right float32 sum;
    y_i = round((e_i * floor(1 / y_scale)) / sum) + y_zero_point. Neither x_zero_point nor the
    exact y_scale enter (softmax is shift invariant; y_scale is taken as 1/floor(1/y_scale)).
    Results saturate at the type's maximum (they cannot fall below y_zero_point)."""
    x = int8_operand(X, "X")
    if y_scale is None or y_zero_point is None:
        raise ValueError("QLinearSoftmax: y_scale and y_zero_point are required")
    xs = _float_scale(X_scale, "X_scale")
    ys = _float_scale(y_scale, "y_scale")
    yz = _zero_point(y_zero_point, x.dtype, "y_zero_point")
    if x.ndim == 0:
        raise ValueError("QLinearSoftmax: X must have rank >= 1")
    ax = normalize_axis(axis, x.ndim)
    if x.size == 0:
        return np.empty_like(x)
    if opset < 13:
        rows = x.reshape(int(np.prod(x.shape[:ax], dtype=np.int64)), -1)
        return _softmax_rows_quantized(rows, xs, ys, yz).reshape(x.shape)
    moved = np.moveaxis(x, ax, -1)
    y = _softmax_rows_quantized(moved.reshape(-1, moved.shape[-1]), xs, ys, yz)
    return np.moveaxis(y.reshape(moved.shape), -1, ax)


# ---------------------------------------------------------------- QLinearConcat / QLinearWhere

def _requantize_codes(x, x_scale, x_zp, y_scale, y_zp):
    """Codes of x re-expressed in (y_scale, y_zp) through ORT's identity lookup table."""
    return _apply_table(x, _lookup_table(lambda v: v, x_scale, x_zp, y_scale, y_zp, x.dtype))


@op("QLinearConcat", domain=MS)
def qlinear_concat(Y_scale, Y_zero_point, inputs0, *inputs, axis):
    """Y = concat(requantize(X_i, s_i, z_i -> Y_scale, Y_zero_point)) along ``axis``;
    inputs come as (X_i, s_i, z_i) triples

    ORT requantizes each input through an identity lookup table (dequantize, QuantizeLinear),
    bit for bit the same as dequantize -> quantize."""
    inputs = (inputs0,) + inputs
    if len(inputs) < 3 or len(inputs) % 3:
        raise ValueError(f"QLinearConcat: inputs must come as (tensor, scale, zero point) "
                         f"triples, got {len(inputs)} inputs after Y_scale and Y_zero_point")
    yz = _scalar(Y_zero_point, "Y_zero_point")
    if yz.dtype not in _INT8:
        raise TypeError(f"QLinearConcat: Y_zero_point must be uint8 or int8, got {yz.dtype.name}")
    ys = _float_scale(Y_scale, "Y_scale")
    parts = []
    for i in range(0, len(inputs), 3):
        x = int8_operand(inputs[i], f"input {i // 3}")
        if x.dtype != yz.dtype:
            raise TypeError(f"QLinearConcat: input {i // 3} is {x.dtype.name}, Y is "
                            f"{yz.dtype.name}")
        parts.append(_requantize_codes(x, _float_scale(inputs[i + 1], f"scale {i // 3}"),
                                       _zero_point(inputs[i + 2], x.dtype, f"zero point {i // 3}"),
                                       ys, yz))
    rank = parts[0].ndim
    return np.concatenate(parts, axis=normalize_axis(axis, rank))


@op("QLinearWhere", domain=MS)
def qlinear_where(condition, X, x_scale, x_zero_point, Y, y_scale, y_zero_point, z_scale,
                  z_zero_point):
    """Z = where(condition, requantize(X -> z), requantize(Y -> z)), broadcast like Where
    (requantization through ORT's identity lookup tables, bit for bit)."""
    x, y = int8_operand(X, "X"), int8_operand(Y, "Y")
    zz = _scalar(z_zero_point, "z_zero_point")
    if not x.dtype == y.dtype == zz.dtype:
        raise TypeError(f"QLinearWhere: X, Y and z_zero_point must share one type, got "
                        f"{x.dtype.name}, {y.dtype.name}, {zz.dtype.name}")
    zs = _float_scale(z_scale, "z_scale")
    xq = _requantize_codes(x, _float_scale(x_scale, "x_scale"),
                           _zero_point(x_zero_point, x.dtype, "x_zero_point"), zs, zz)
    yq = _requantize_codes(y, _float_scale(y_scale, "y_scale"),
                           _zero_point(y_zero_point, y.dtype, "y_zero_point"), zs, zz)
    return np.where(np.asarray(condition, dtype=bool), xq, yq)


# ---------------------------------------------------------------- pooling

def _global_average_codes(x3, x_scale, x_zp, y_scale, y_zp):
    """x3 (R, L) codes -> R averages: ORT's integer global average pool,
    y = saturate(round(float32(sum(x) - x_zp * L) * (x_scale / (y_scale * float32(L)))) + y_zp)."""
    n = x3.shape[1]
    mult = _F32(x_scale) / (_F32(y_scale) * _F32(n))
    if n >= 1 << 24 or not (2.0 ** -32 <= mult < 256.0):
        raise ValueError(f"QLinearGlobalAveragePool: parameters out of onnxruntime's range "
                         f"(image size {n}, x_scale / (y_scale * size) = {float(mult)})")
    acc = (x3.astype(np.int64).sum(axis=1) - int(x_zp) * n).astype(np.int32)
    return K.requantize(acc, mult, y_zp, out_dtype=x3.dtype, axis=0)


def _channels_first(x, channels_last):
    return np.moveaxis(x, -1, 1) if channels_last else x


@op("QLinearGlobalAveragePool", domain=MS)
def qlinear_global_average_pool(X, x_scale, x_zero_point, y_scale, y_zero_point, *,
                                channels_last=0):
    """Y[n, c] = quantize(mean over the spatial axes of dequantize(X[n, c])), spatial axes kept
    as 1; X is NCHW... or, with channels_last, NHWC...

    ORT (MLAS) sums the integer codes exactly and requantizes once:
    Y = saturate(round(float32(sum X - L * x_zp) * (x_scale / (y_scale * L))) + y_zp),
    L = the number of spatial positions, the multiplier in float32 in that order; it refuses
    L >= 2^24 and multipliers outside [2^-32, 256). Bit for bit."""
    x = int8_operand(X, "X")
    if x.ndim < 3:
        raise ValueError(f"QLinearGlobalAveragePool: X must have rank >= 3, got {x.ndim}")
    xc = _channels_first(x, channels_last)
    n, c = xc.shape[:2]
    y = _global_average_codes(xc.reshape(n * c, -1), _float_scale(x_scale, "x_scale"),
                              _zero_point(x_zero_point, x.dtype, "x_zero_point"),
                              _float_scale(y_scale, "y_scale"),
                              _zero_point(y_zero_point, x.dtype, "y_zero_point"))
    y = y.reshape((n, c) + (1,) * (x.ndim - 2))
    return np.moveaxis(y, 1, -1) if channels_last else y


@op("QLinearAveragePool", domain=MS)
def qlinear_average_pool(X, x_scale, x_zero_point=None, y_scale=None, y_zero_point=None, *,
                         auto_pad="NOTSET", ceil_mode=0, channels_last=0, count_include_pad=0,
                         kernel_shape, pads=None, strides=None):
    """Y = quantize(AveragePool(dequantize(X))), NCHW... or, with channels_last, NHWC...

    ORT: X dequantized to float32 (x_scale * float32(x - x_zp)), each window summed left to
    right in float32 (row-major over the kernel), divided by the count (the kernel size with
    count_include_pad, else the cells inside the input), then y = round(v / y_scale + y_zp)
    saturated (float32 division, then the zero point added in float32). A kernel covering the
    whole unpadded input falls back to ORT's integer global average (see
    QLinearGlobalAveragePool). Bit for bit."""
    x = int8_operand(X, "X")
    if y_scale is None:
        raise ValueError("QLinearAveragePool: y_scale is required")
    xs, ys = _float_scale(x_scale, "x_scale"), _float_scale(y_scale, "y_scale")
    xz = _zero_point(x_zero_point, x.dtype, "x_zero_point")
    yz = _zero_point(y_zero_point, x.dtype, "y_zero_point")
    xc = _channels_first(x, channels_last)
    win = pool_window(xc, kernel_shape, strides, None, pads, auto_pad, ceil_mode)
    if (tuple(kernel_shape) == xc.shape[2:] and not any(win.pads_begin + win.pads_end)):
        n, c = xc.shape[:2]
        y = _global_average_codes(xc.reshape(n * c, -1), xs, xz, ys, yz)
        y = y.reshape((n, c) + (1,) * (x.ndim - 2))
    else:
        xf = xs * (xc.astype(np.int32) - np.int32(xz)).astype(_F32)
        taps = window_taps(xf, win, 0)                                # (K, N, C, *out)
        total = taps[0].copy()
        for t in taps[1:]:
            total += t
        if count_include_pad:
            count = _F32(np.prod(kernel_shape))
        else:
            count = window_taps(np.ones(xc.shape[:2] + xc.shape[2:], _F32), win, 0).sum(axis=0)
        v = total / count
        info = np.iinfo(x.dtype)
        y = np.clip(np.rint(v / ys + _F32(yz)), info.min, info.max).astype(x.dtype)
    return np.moveaxis(y, 1, -1) if channels_last else y


# ---------------------------------------------------------------- integer GEMMs, float epilogue

def _float_epilogue(acc, multiplier, bias=None):
    """float32(acc) * multiplier (+ bias), two roundings, as MLAS's scale-bias output stage."""
    y = acc.astype(_F32) * np.asarray(multiplier, _F32)
    if bias is not None:
        y = y + np.asarray(bias, _F32)
    return y.astype(_F32, copy=False)


def _b_scale_layout(b_scale, b, what):
    """b_scale as an array broadcasting against the last two axes of A @ B: a scalar, one per
    column ([N] for a 2-D B, or [..., 1, N]), as onnxruntime accepts."""
    s = np.asarray(b_scale, _F32)
    n = b.shape[-1]
    if s.size == 1:
        return s.reshape(())
    if s.ndim == 1 and s.shape[0] == n:
        return s
    if s.ndim >= 2 and s.shape[-2] == 1 and s.shape[-1] == n:
        return s
    raise ValueError(f"{what} must be a scalar or hold one value per column of B ({n}), got "
                     f"shape {list(s.shape)}")


def _b_zero_point_layout(b_zp, b, what):
    if b_zp is None:
        return None
    z = np.asarray(b_zp)
    if z.dtype != b.dtype:
        raise TypeError(f"{what} must have B's type {b.dtype.name}, got {z.dtype.name}")
    if z.size == 1:
        return z.reshape(())
    return z


@op("DynamicQuantizeMatMul", domain=MS)
def dynamic_quantize_matmul(A, B, b_scale, b_zero_point=None, bias=None, *, ctx):
    """Y = (a_scale * b_scale) * ((A_q - a_zp) @ (B - b_zero_point)) + bias, with (A_q, a_scale,
    a_zp) = DynamicQuantizeLinear(A) (uint8)

    ORT: A is quantized as DynamicQuantizeLinear does; the int32 GEMM is exact (u8 x s8
    saturating under ``emulate_avx2_u8s8``); the epilogue is float32(acc) * float32(a_scale *
    b_scale) then + bias, two roundings. b_scale / b_zero_point per tensor or per column."""
    if A.dtype != _F32:
        raise TypeError(f"DynamicQuantizeMatMul: A must be float32, got {A.dtype.name}")
    b = int8_operand(B, "B")
    aq, a_scale, a_zp = K.dynamic_quantize_linear(A, mode="ort")
    acc = matmul_integer(aq, b, np.asarray(a_zp, np.uint8),
                         _b_zero_point_layout(b_zero_point, b, "b_zero_point"), ctx, b_input=1)
    mult = _F32(a_scale) * _b_scale_layout(b_scale, b, "b_scale")
    return _float_epilogue(acc, mult, bias)


@op("MatMulIntegerToFloat", domain=MS)
def matmul_integer_to_float(A, B, a_scale, b_scale, a_zero_point=None, b_zero_point=None,
                            bias=None, *, ctx):
    """Y = (a_scale * b_scale) * ((A - a_zero_point) @ (B - b_zero_point)) + bias

    ORT: exact int32 GEMM (u8 x s8 saturating under ``emulate_avx2_u8s8``), then float32(acc) *
    float32(a_scale * b_scale) + bias (two roundings). b_scale / b_zero_point per tensor or per
    column; a_zero_point per tensor. A non-scalar a_scale (per row, [..., M, 1]) is applied
    after the bias, as ORT does: Y = (float32(acc) * b_scale + bias) * a_scale."""
    a, b = int8_operand(A, "A"), int8_operand(B, "B")
    a_s = np.asarray(a_scale, _F32)
    acc = matmul_integer(a, b, None if a_zero_point is None else
                         _scalar(a_zero_point, "a_zero_point", a.dtype),
                         _b_zero_point_layout(b_zero_point, b, "b_zero_point"), ctx, b_input=1)
    b_s = _b_scale_layout(b_scale, b, "b_scale")
    if a_s.size == 1:
        return _float_epilogue(acc, a_s.reshape(()) * b_s, bias)
    return (_float_epilogue(acc, b_s, bias) * a_s).astype(_F32, copy=False)


@op("QGemm", domain=MS)
def qgemm(A, a_scale, a_zero_point, B, b_scale, b_zero_point, C=None, y_scale=None,
          y_zero_point=None, *, alpha=1.0, transA=0, transB=0, ctx):
    """Y = alpha * (a_scale * b_scale) * ((A' - a_zp) @ (B' - b_zp) + C), float32, or
    quantized to (y_scale, y_zero_point)

    C is an int32 bias broadcast to (M, N) and added to the exact int32 accumulators (so it is in
    units of a_scale * b_scale). ORT's multiplier is float32((alpha * a_scale) * b_scale[n])
    (divided by y_scale when given), per column for per-column b parameters; the quantized
    output is float32(acc) * multiplier rounded half to even, plus y_zero_point, saturated;
    the float output is float32(acc) * multiplier. A y_scale without a y_zero_point gives a
    float output scaled by 1 / y_scale, as ORT does. u8 x s8 products saturate under
    ``emulate_avx2_u8s8``."""
    a, b = int8_operand(A, "A"), int8_operand(B, "B")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"QGemm: A and B must be 2-D, got {list(a.shape)} and {list(b.shape)}")
    a2 = a.T if transA else a
    b2 = b.T if transB else b
    m, n = a2.shape[0], b2.shape[1]
    az = _scalar(a_zero_point, "a_zero_point", a.dtype)
    bz = np.asarray(b_zero_point)
    bs = np.asarray(b_scale, _F32)
    for name, v in (("b_scale", bs), ("b_zero_point", bz)):
        if v.ndim > 1 or (v.ndim == 1 and v.shape[0] not in (1, n)):
            raise ValueError(f"QGemm: {name} must be a scalar or 1-D of length 1 or N={n}, got "
                             f"shape {list(v.shape)}")
    if bs.shape != bz.shape:
        raise ValueError(f"QGemm: b_scale {list(bs.shape)} and b_zero_point {list(bz.shape)} "
                         f"must have the same shape")
    acc = matmul_integer(a2, np.ascontiguousarray(b2), az,
                         bz.reshape(()) if bz.size == 1 else bz, ctx, b_input=3)
    if C is not None:
        if C.dtype != np.int32:
            raise TypeError(f"QGemm: C must be int32, got {C.dtype.name}")
        try:
            acc = acc + np.broadcast_to(C, (m, n))
        except ValueError:
            raise ValueError(f"QGemm: C of shape {list(C.shape)} does not broadcast to "
                             f"{[m, n]}") from None
    mult = (_F32(alpha) * _float_scale(a_scale, "a_scale")) * bs.reshape(-1)
    if y_scale is not None:
        mult = mult / _float_scale(y_scale, "y_scale")
    mult = mult.reshape(()) if mult.size == 1 else mult
    if y_zero_point is None:
        return _float_epilogue(acc, mult)
    yz = _scalar(y_zero_point, "y_zero_point")
    return K.requantize(acc, mult.astype(_F32), yz, out_dtype=yz.dtype, axis=-1)


# ---------------------------------------------------------------- QAttention

@op("QAttention", domain=MS)
def qattention(input, weight, bias, input_scale, weight_scale, mask_index=None,
               input_zero_point=None, weight_zero_point=None, past=None, *,
               do_rotary=None, mask_filter_value=None, num_heads,
               past_present_share_buffer=None, scale=None, unidirectional=0, ctx):
    """QKV = float32(acc) * (input_scale * weight_scale) + bias, acc = (input - input_zp) @
    (weight - weight_zp) in int32; then com.microsoft Attention on QKV (mask, past, present,
    unidirectional, scale as there)

    ORT's projection epilogue is exactly that (two float32 roundings; weight_scale and
    weight_zero_point per tensor or per column, i.e. 3 * hidden); the rest is the float
    Attention kernel, which refrt's Attention reproduces within its stated tolerance. The
    epilogue is handed to Attention as its projection, the diagonal matrix of the multipliers
    (each output then takes exactly one rounded product), so that the whole attention part is
    Attention's own code. u8 x s8 products saturate under ``emulate_avx2_u8s8``."""
    x = int8_operand(input, "input")
    w = int8_operand(weight, "weight")
    if x.ndim != 3 or w.ndim != 2:
        raise ValueError(f"QAttention: input must be (B, S, D) and weight (D, 3 * hidden), got "
                         f"{list(x.shape)} and {list(w.shape)}")
    xz = None if input_zero_point is None else _scalar(input_zero_point, "input_zero_point",
                                                       x.dtype)
    wz = _b_zero_point_layout(weight_zero_point, w, "weight_zero_point")
    acc = matmul_integer(x, w, xz, wz, ctx, b_input=1)
    mult = _float_scale(input_scale, "input_scale") * _b_scale_layout(weight_scale, w,
                                                                      "weight_scale")
    projection = np.diag(np.broadcast_to(mult, (w.shape[1],)).astype(_F32))
    return _ms_attention(acc.astype(_F32), projection, bias, mask_index, past,
                         do_rotary=do_rotary or 0,
                         mask_filter_value=(f32(-10000.0) if mask_filter_value is None
                                            else mask_filter_value),
                         num_heads=num_heads,
                         past_present_share_buffer=past_present_share_buffer or 0,
                         scale=scale, unidirectional=unidirectional, ctx=ctx)


# ---------------------------------------------------------------- QEmbedLayerNormalization

@op("QEmbedLayerNormalization", domain=MS)
def qembed_layer_normalization(input_ids, segment_ids, word_embedding_quant,
                               position_embedding_quant, segment_embedding, gamma_quant,
                               beta_quant, mask, word_embedding_scale, position_embedding_scale,
                               segment_embedding_scale, gamma_scale, beta_scale,
                               word_embedding_zero_point, position_embedding_zero_point,
                               segment_embedding_zero_point, gamma_zero_point, beta_zero_point,
                               *, epsilon=f32(1e-12)):
    """EmbedLayerNormalization on the dequantized tables: word / position / segment embeddings,
    gamma and beta each (q - zero_point) * scale (per tensor); outputs the normalized sum and
    mask_index

    ORT dequantizes the same way (float32) but runs its own layer normalization loop (sum,
    mean, centred sum of squares, x / sqrt(var + eps) * gamma + beta, left-to-right float32
    sums): results agree within a few float32 ULP, not bit for bit. Positions are 0..S-1."""
    def dq(q, s, z, name):
        if q is None:
            return None
        q = int8_operand(q, name)
        return dequantize(q, _float_scale(s, f"{name} scale"), _zero_point(z, q.dtype, name))

    for name, v in (("word_embedding_quant", word_embedding_quant),
                    ("position_embedding_quant", position_embedding_quant),
                    ("gamma_quant", gamma_quant), ("beta_quant", beta_quant)):
        if v is None:
            raise ValueError(f"QEmbedLayerNormalization: {name} is required")
    y, mask_index, _ = _ms_embed_layer_normalization(
        input_ids, segment_ids,
        dq(word_embedding_quant, word_embedding_scale, word_embedding_zero_point, "word"),
        dq(position_embedding_quant, position_embedding_scale, position_embedding_zero_point,
           "position"),
        dq(segment_embedding, segment_embedding_scale, segment_embedding_zero_point, "segment"),
        dq(gamma_quant, gamma_scale, gamma_zero_point, "gamma"),
        dq(beta_quant, beta_scale, beta_zero_point, "beta"),
        mask, epsilon=epsilon)
    return y, mask_index


# ---------------------------------------------------------------- DynamicQuantizeLSTM

def _gate_params(q, scale, zp, name, num_dir):
    """W or R [num_dir, in, 4H] with its scale and zero point -> (q, per direction: the scale
    (float32) and the zero point (int64), each 0-d or one per column)."""
    q = int8_operand(q, name)
    if q.ndim != 3 or q.shape[0] != num_dir:
        raise ValueError(f"DynamicQuantizeLSTM: {name} must be [{num_dir}, in, 4 * hidden], got "
                         f"{list(q.shape)}")
    cols = q.shape[2]
    s = np.asarray(scale, _F32)
    z = np.asarray(zp)
    if z.dtype != q.dtype:
        raise TypeError(f"DynamicQuantizeLSTM: {name}_zero_point must be {q.dtype.name}")
    shapes = ((num_dir,), (num_dir, 1), (num_dir, cols))
    if s.shape not in shapes or z.shape not in shapes:
        raise ValueError(f"DynamicQuantizeLSTM: {name}_scale / {name}_zero_point must be "
                         f"[{num_dir}] or [{num_dir}, {cols}], got {list(s.shape)} and "
                         f"{list(z.shape)}")
    s, z = s.reshape(num_dir, -1), z.astype(np.int64).reshape(num_dir, -1)
    return (q, [v.reshape(()) if v.size == 1 else v for v in s],
            [v.reshape(()) if v.size == 1 else v for v in z])


def _dynamic_projection(pack, zp, scale, gemm):
    """v [rows, K] -> float32(acc) * float32(v_scale * scale), acc the int32 product of v
    quantized as one tensor (DynamicQuantizeLinear's uint8 formula: ORT's
    GetQuantizationParameter + MlasQuantizeLinear) with the packed weights."""
    def project(v):
        vq, v_scale, v_zp = K.dynamic_quantize_linear(v, mode="ort")
        return _float_epilogue(gemm(vq, pack, v_zp, zp), _F32(v_scale) * scale)
    return project


def _ort_lstm_activations(activations, alphas, betas, num_dir):
    """[f, g, h] per direction; Sigmoid and Tanh are MLAS's (mlas_logistic, mlas_tanh) as in
    ORT's LSTM cells, the other names refrt's LSTM functions (alpha / beta bound in order)."""
    names = (list(activations) if activations is not None
             else ["Sigmoid", "Tanh", "Tanh"] * num_dir)
    if len(names) not in (3, 3 * num_dir):
        raise ValueError(f"DynamicQuantizeLSTM: activations must hold {3 * num_dir} names (3 per "
                         f"direction), got {len(names)}")
    funcs = activation_functions(names, alphas, betas, np.dtype(_F32))
    mlas = {"sigmoid": mlas_logistic, "tanh": mlas_tanh}
    funcs = [mlas.get(str(name).lower(), fn) for name, fn in zip(names, funcs)]
    funcs = funcs * (3 * num_dir // len(funcs))
    return [funcs[3 * d:3 * d + 3] for d in range(num_dir)]


def _ort_gate(v, extra, bias, clip):
    """A gate's pre-activation as ORT forms it: (v + extra) + bias, clipped to [-clip, clip]
    with its comparisons (std::min then std::max with a bias, where NaN becomes clip)."""
    if extra is not None:
        v = v + extra
    if bias is None:
        return np.where(v > clip, clip, np.where(v < -clip, -clip, v))
    v = v + bias
    v = np.where(v < clip, v, clip)
    return np.where(-clip < v, v, -clip)


def _ort_lstm_cell(gates, c_prev, bias, peep, acts, clip, input_forget):
    """One step of ORT's LSTM cell on gates = X W + H R ([rows, 4H], order i, o, f, c):
    i = f(gi + Pi C), forget = f(gf + Pf C) (1 - i with input_forget), C' = C forget + i g(gc),
    o = f(go + Po C'), H' = h(C') o; each gate's bias Wb + Rb added after the peephole, then
    clipped (float32, one rounding per operation, no fused multiply-add)."""
    f, g, h = acts
    gi, go, gf, gc = np.split(gates, 4, axis=-1)
    bi, bo, bf, bc = bias if bias is not None else (None,) * 4
    pi, po, pf = peep if peep is not None else (None,) * 3

    def peephole(p, c):
        return None if p is None else c * p

    i = f(_ort_gate(gi, peephole(pi, c_prev), bi, clip))
    forget = _F32(1) - i if input_forget else f(_ort_gate(gf, peephole(pf, c_prev), bf, clip))
    c = c_prev * forget + i * g(_ort_gate(gc, None, bc, clip))
    o = f(_ort_gate(go, peephole(po, c), bo, clip))
    return h(c) * o, c


def _ort_lstm_direction(xs, lens, x_proj, h_proj, h0, c0, cell, chunk, zero_finished):
    """One direction in ORT's order -> (y [seq, batch, H], final C). xs is already in the
    direction's time order. X W for the first max(lens) steps is one GEMM (one quantization);
    then each chunk of ``chunk`` batch rows runs its steps, quantizing its own H rows per step.
    A finished row keeps its C; its H reads as 0 when Y is produced (``zero_finished``), else
    keeps its last value (ORT's buffers); either way it still counts in its chunk's range."""
    seq, batch = xs.shape[:2]
    steps = int(lens.max(initial=0))
    y = np.zeros((seq, batch, h0.shape[-1]), _F32)
    h, c = h0.copy(), c0.copy()
    if steps == 0:
        return y, c
    x_gates = x_proj(xs[:steps].reshape(steps * batch, -1)).reshape(steps, batch, -1)
    for start in range(0, batch, chunk):
        rows = slice(start, start + chunk)
        for t in range(steps):
            live = (t < lens[rows])[:, None]
            h_new, c_new = cell(x_gates[t, rows] + h_proj(h[rows]), c[rows])
            y[t, rows] = np.where(live, h_new, 0)
            c[rows] = np.where(live, c_new, c[rows])
            h[rows] = y[t, rows] if zero_finished else np.where(live, h_new, h[rows])
    return y, c


def _ort_lstm_chunk(batch, hidden, ctx):
    """Batch rows whose H ORT quantizes together: its LSTM splits the batch into chunks of
    ceil(batch / threads) rows (threads = the session's intra-op threads) when batch > 4 or
    (batch >= 2 and hidden <= 256), else one chunk. refrt reads ``intra_op_num_threads``;
    its default 0 counts as 1 (ORT's default 0 means its number of physical cores: give that
    number to reproduce a default ORT session)."""
    threads = max(1, int(getattr(getattr(ctx, "options", None), "intra_op_num_threads", 0) or 0))
    if batch > 4 or (batch >= 2 and hidden <= 256):
        return max(1, -(-batch // threads))
    return max(1, batch)


@op("DynamicQuantizeLSTM", domain=MS)
def dynamic_quantize_lstm(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None,
                          P=None, W_scale=None, W_zero_point=None, R_scale=None,
                          R_zero_point=None, *, activation_alpha=None, activation_beta=None,
                          activations=None, clip=None, direction="forward", hidden_size=None,
                          input_forget=0, ctx):
    """LSTM (gates i, o, f, c; outputs Y, Y_h, Y_c) whose X W and H R products are integer
    GEMMs: W [D, in, 4H] and R [D, H, 4H] (transposed against LSTM's) int8/uint8 with a scale
    and zero point per direction or per column; X and H quantized dynamically to uint8.

    onnxruntime's kernel (DeepCPU LSTM), reproduced bit for bit (both numerics modes):

    * X W: for each direction, the first max(sequence_lens) steps of X (in the direction's time
      order) are quantized as ONE tensor with DynamicQuantizeLinear's formula (float32 scale
      (max(0, max) - min(0, min)) / 255, zero point rounded half to even, x / scale rounded
      half to even); gates = float32(acc) * float32(x_scale * w_scale).
    * H R: at every step, H_{t-1} is quantized the same way, per chunk of batch rows (see
      :func:`_ort_lstm_chunk`: the whole batch unless ORT runs several intra-op threads; set
      ``intra_op_num_threads`` as in ORT), and gates += float32(acc) * float32(h_scale *
      r_scale) (a product, then a sum: two roundings).
    * each gate: ((gates + P (.) C) + (Wb + Rb)) clipped, Wb + Rb summed first; the
      activations Sigmoid and Tanh are MLAS's approximations (:func:`mlas_logistic`,
      :func:`mlas_tanh`), also for h(C); C' = C f + i g, H' = h(C') o (:func:`_ort_lstm_cell`).
    * rows past their sequence length keep C, give Y = 0; Y_h / Y_c are the states after each
      sequence's last step (0 for an empty sequence).

    ORT refuses non-zero int8 weight zero points and per-column uint8 ones that differ;
    refrt computes them exactly. ORT reads uninitialized memory when Y is omitted and some
    sequence is empty (its results then vary from run to run); refrt reads zeros there. u8 x
    s8 products saturate under ``emulate_avx2_u8s8``."""
    for name, v in (("W_scale", W_scale), ("W_zero_point", W_zero_point), ("R_scale", R_scale),
                    ("R_zero_point", R_zero_point)):
        if v is None:
            raise ValueError(f"DynamicQuantizeLSTM: {name} is required")
    if X.dtype != _F32 or X.ndim != 3:
        raise TypeError(f"DynamicQuantizeLSTM: X must be float32 [seq, batch, in], got "
                        f"{X.dtype.name} {list(X.shape)}")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"DynamicQuantizeLSTM: direction must be forward, reverse or "
                         f"bidirectional, got {direction!r}")
    num_dir = 2 if direction == "bidirectional" else 1
    w, w_scale, w_zp = _gate_params(W, W_scale, W_zero_point, "W", num_dir)
    r, r_scale, r_zp = _gate_params(R, R_scale, R_zero_point, "R", num_dir)
    seq, batch, n_in = X.shape
    H = r.shape[1]
    if r.shape[2] != 4 * H or w.shape[1:] != (n_in, 4 * H) or hidden_size not in (None, H):
        raise ValueError(f"DynamicQuantizeLSTM: W must be [{num_dir}, {n_in}, 4H] and R "
                         f"[{num_dir}, H, 4H] (hidden_size {hidden_size}), got "
                         f"{list(w.shape)} and {list(r.shape)}")
    states = []
    for name, v, shape in (("B", B, (num_dir, 8 * H)), ("P", P, (num_dir, 3 * H)),
                           ("initial_h", initial_h, (num_dir, batch, H)),
                           ("initial_c", initial_c, (num_dir, batch, H))):
        if v is not None and tuple(v.shape) != shape:
            raise ValueError(f"DynamicQuantizeLSTM: {name} must be {list(shape)}, got "
                             f"{list(v.shape)}")
        states.append(None if v is None else np.asarray(v, _F32))
    b, p, h0, c0 = states
    if sequence_lens is None:
        lens = np.full(batch, seq, np.int64)
    else:
        lens = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
        if lens.shape != (batch,) or ((lens < 0) | (lens > seq)).any():
            raise ValueError(f"DynamicQuantizeLSTM: sequence_lens must hold {batch} lengths in "
                             f"[0, {seq}], got {lens.tolist()}")
    acts = _ort_lstm_activations(activations, activation_alpha, activation_beta, num_dir)
    clip_value = _F32(np.finfo(_F32).max if clip is None else clip)
    chunk = _ort_lstm_chunk(batch, H, ctx)
    gemm_w, gemm_r = gemm_for(np.uint8, w.dtype, ctx), gemm_for(np.uint8, r.dtype, ctx)
    packs_w, packs_r = packed_matrices(w, ctx, 1), packed_matrices(r, ctx, 2)

    t = np.arange(seq)[:, None]
    reverse_index = np.where(t < lens, lens - 1 - t, t)    # its own inverse
    cols = np.arange(batch)[None, :]
    y = np.zeros((seq, num_dir, batch, H), _F32)
    y_h = np.zeros((num_dir, batch, H), _F32)
    y_c = np.zeros((num_dir, batch, H), _F32)
    for d in range(num_dir):
        backwards = direction == "reverse" or d == 1
        bias = None if b is None else np.split(b[d, :4 * H] + b[d, 4 * H:], 4)
        peep = None if p is None else np.split(p[d], 3)

        def cell(gates, c_prev, bias=bias, peep=peep, acts=acts[d]):
            return _ort_lstm_cell(gates, c_prev, bias, peep, acts, clip_value, input_forget)

        yd, cd = _ort_lstm_direction(
            X[reverse_index, cols] if backwards else X, lens,
            _dynamic_projection(packs_w[d], w_zp[d], w_scale[d], gemm_w),
            _dynamic_projection(packs_r[d], r_zp[d], r_scale[d], gemm_r),
            np.zeros((batch, H), _F32) if h0 is None else h0[d],
            np.zeros((batch, H), _F32) if c0 is None else c0[d],
            cell, chunk, zero_finished=ctx is None or ctx.output_requested(0))
        y[:, d] = yd[reverse_index, cols] if backwards else yd
        last = np.maximum(lens - 1, 0)
        y_h[d] = np.where((lens > 0)[:, None], yd[last, np.arange(batch)], 0)
        y_c[d] = np.where((lens > 0)[:, None], cd, 0)
    return y, y_h, y_c


# ---------------------------------------------------------------- MatMulNBits

def _unpack_bits(packed, bits, count):
    """uint8 bytes -> the first ``count`` unsigned ``bits``-wide values along the last axis,
    low bits first (element 0 in the lowest bits of byte 0)."""
    per_byte = 8 // bits
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits).astype(np.uint8)
    vals = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return vals.reshape(packed.shape[:-1] + (-1,))[..., :count]


def _nbits_codes(b, zero_points, N, K, bits, block_size):
    """MatMulNBits' weights -> (codes uint8 [N, K], zero points float32 [N, blocks])."""
    blocks = -(-K // block_size)
    q = _unpack_bits(b.reshape(N, blocks, -1), bits, block_size).reshape(N, -1)[:, :K]
    if zero_points is None:
        return q, np.full((N, blocks), float(1 << (bits - 1)), _F32)
    zb = np.asarray(zero_points)
    if zb.dtype != np.uint8:
        if zb.size != N * blocks:
            raise ValueError(f"MatMulNBits: zero_points must hold N * blocks = {N * blocks} "
                             f"values, got {zb.size}")
        return q, zb.astype(_F32).reshape(N, blocks)
    per_row = -(-blocks * bits // 8)
    if zb.size != N * per_row:
        raise ValueError(f"MatMulNBits: packed zero_points must hold N * {per_row} bytes, got "
                         f"{zb.size}")
    return q, _unpack_bits(zb.reshape(N, per_row), bits, blocks).astype(_F32)


def _nbits_int8_weights(q, zp, block_size):
    """B - zp (integers: codes minus uint8 or default zero points) as int16 [N, K], packed for
    the blockwise int8 kernel."""
    zk = zp.astype(np.int16).repeat(block_size, axis=1)[:, :q.shape[1]]
    return K.blockwise.pack_blockwise_b(q.astype(np.int16) - zk, block_size)


def _nbits_int8_compute(a, packed, s, block_size):
    """accuracy_level 4 (ORT's CompInt8): each block of ``block_size`` values of an A row is
    quantized symmetrically to int8 (scale = max|a| / 127, a * (1 / scale) rounded half to
    even), the integer block dot products with (B - zp) (``packed``) are exact int32, and the
    blocks are summed left to right in float32 as dot * (a_scale * b_scale) (the Numba kernel
    :func:`refrt.kernels.blockwise.blockwise_matmul_int8`)."""
    n, k = packed.shape
    lead = a.shape[:-1]
    rows = a.reshape(-1, k)
    blocks = -(-k // block_size)
    ab = np.pad(rows, ((0, 0), (0, blocks * block_size - k)))
    ab = ab.reshape(rows.shape[0], blocks, block_size)
    a_scale = (np.abs(ab).max(axis=2, initial=_F32(0)) / _F32(127)).astype(_F32)
    with np.errstate(divide="ignore"):
        inv = np.where(a_scale != 0, _F32(1) / a_scale, _F32(0)).astype(_F32)
    aq = np.rint(ab * inv[..., None]).astype(np.int8).reshape(rows.shape[0], -1)[:, :k]
    return K.blockwise.blockwise_matmul_int8(aq, a_scale, packed, s, block_size).reshape(lead + (n,))


@op("MatMulNBits", domain=MS)
def matmul_nbits(A, B, scales, zero_points=None, g_idx=None, bias=None, *, K, N,
                 accuracy_level=0, bits=4, block_size, weight_prepacked=0, ctx):
    """Y = A @ dequantize(B)^T + bias, B [N, K] quantized in blocks of ``block_size`` along K to
    ``bits``-bit unsigned codes: W[n, k] = (B[n, k] - zp[n, g(k)]) * scales[n, g(k)], g(k) =
    k // block_size (or g_idx[k])

    Layouts as onnxruntime: B uint8 [N, ceil(K / block_size), block_size * bits / 8], codes
    packed low bits first; scales [N * blocks] (A's type); zero_points absent (2^(bits-1)),
    packed uint8 [N * ceil(blocks * bits / 8)] codes, or A's float type [N * blocks] (then W =
    (B - zp) * scale in float). float16/bfloat16 A computes in float32 and rounds once.
    accuracy_level 4 follows ORT's int8 compute (:func:`_nbits_int8_compute`: A quantized to
    int8 per block) where ORT 1.32 uses it on x86 (uint8 or default zero points, no g_idx, not
    2-bit blocks of 16); elsewhere W is dequantized and multiplied in float32, as ORT's fp32
    path. Float sums run in another order than MLAS's, so results agree within float32
    rounding (see the tests), not bit for bit. Constant weights are unpacked once per session.
    weight_prepacked=1 (an ORT-internal packed format) is refused."""
    if weight_prepacked:
        raise ValueError("MatMulNBits: weight_prepacked=1 (onnxruntime's internal packed "
                         "format) is not supported")
    if bits not in (2, 4, 8):
        raise ValueError(f"MatMulNBits: bits must be 2, 4 or 8, got {bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"MatMulNBits: block_size must be a power of 2 and >= 16, got "
                         f"{block_size}")
    b = np.asarray(B)
    if b.dtype != np.uint8:
        raise TypeError(f"MatMulNBits: B must be uint8, got {b.dtype.name}")
    blocks = -(-K // block_size)
    blob = block_size * bits // 8
    if b.shape not in ((N, blocks, blob), (N, blocks * blob)):
        raise ValueError(f"MatMulNBits: B must be [N, blocks, blob] = {[N, blocks, blob]}, got "
                         f"{list(b.shape)}")
    if A.shape[-1] != K:
        raise ValueError(f"MatMulNBits: A's last axis is {A.shape[-1]}, K is {K}")
    s = np.asarray(scales).astype(_F32)
    if s.size != N * blocks:
        raise ValueError(f"MatMulNBits: scales must hold N * blocks = {N * blocks} values, got "
                         f"{s.size}")
    s = s.reshape(N, blocks)
    if g_idx is None:
        group = np.arange(K) // block_size
    else:
        group = np.asarray(g_idx).astype(np.int64).reshape(-1)
        if group.shape != (K,) or group.min(initial=0) < 0 or group.max(initial=0) >= blocks:
            raise ValueError(f"MatMulNBits: g_idx must hold K = {K} block indices in "
                             f"[0, {blocks})")
    weights = [i for i, v in ((1, B), (3, zero_points)) if v is not None]
    float_zp = zero_points is not None and np.asarray(zero_points).dtype != np.uint8
    if accuracy_level == 4 and g_idx is None and not float_zp and (bits != 2 or block_size >= 32):
        packed = once_per_session(ctx, "nbits_int8", weights, lambda: _nbits_int8_weights(
            *_nbits_codes(b, zero_points, N, K, bits, block_size), block_size))
        y = _nbits_int8_compute(A.astype(_F32), packed, s, block_size)
    else:
        def dequantized():
            q, zp = _nbits_codes(b, zero_points, N, K, bits, block_size)
            return (q.astype(_F32) - zp[:, group]) * s[:, group]             # [N, K]
        w = once_per_session(ctx, "nbits_float", weights + [2] + ([4] if g_idx is not None
                                                                   else []), dequantized)
        y = np.matmul(A.astype(_F32), w.T)
    if bias is not None:
        y = y + np.asarray(bias).astype(_F32)
    return y.astype(A.dtype, copy=False)
