"""onnxruntime's quantized contrib ops (``com.microsoft`` domain) that work element by element or
window by window: what ``onnxruntime.quantization`` writes into QOperator models besides its
GEMMs.

    QuantizeLinear / DequantizeLinear (the com.microsoft versions)
    QLinearAdd / Mul:  onnxruntime's own float32 formulas (see their docstrings)
    lookup-table ops:  y = table[x], table[i] = quantize(f(dequantize(i)))   (256 entries)
    QLinearSoftmax, QLinearConcat, QLinearWhere, QLinearGlobalAveragePool, QLinearAveragePool

The ops built on an integer GEMM (QGemm, QAttention, DynamicQuantizeLSTM, ...) are in
``contrib_qgemm.py``, MatMulNBits in ``contrib_nbits.py``; they share the per-tensor parameter
checks here (:func:`per_tensor`, :func:`per_tensor_scale`, :func:`per_tensor_zero_point`).

onnx.defs has no schemas for these ops: the signatures carry onnxruntime's documented defaults
(``docs/ContribOperators.md``), attributes without a documented default default to None. The
semantics are those of onnxruntime's CPU kernels (MLAS), checked against onnxruntime 1.32 in
``tests/ops/test_contrib_quant_vs_ort.py``; every docstring says where ORT departs from the textbook
formula.

Float arithmetic that onnxruntime fuses (``vfmadd``) is reproduced with
:func:`refrt.kernels.fma.fma32`, an exact float32 fused multiply-add written in NumPy (float64
product, round-to-odd sum, one rounding).
"""

from __future__ import annotations

import numpy as np

from ..kernels.activations import mlas_logistic
from ..kernels.fma import fma32
from ..registry import op
from ._common import f32, normalize_axis, pool_window, window_taps
from ._kernels import K
from .quant import dequantize, int8_operand, quantize

MS = "com.microsoft"
_F32 = np.float32
_INT8 = (np.dtype(np.uint8), np.dtype(np.int8))


# ---------------------------------------------------------------- small helpers

def per_tensor(v, name, dtype=None):
    """A per-tensor parameter (scalar or one element) -> 0-d array; ORT refuses anything else."""
    arr = np.asarray(v)
    if arr.size != 1:
        raise ValueError(f"{name} must be a scalar or a 1-D tensor of one element, got shape "
                         f"{list(arr.shape)}")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must be {np.dtype(dtype).name}, got {arr.dtype.name}")
    return arr.reshape(())


def per_tensor_zero_point(zp, dtype, name):
    """An optional per-tensor zero point of ``dtype`` (0 when absent) -> 0-d array."""
    if zp is None:
        return np.zeros((), dtype)
    return per_tensor(zp, name, dtype)


def per_tensor_scale(s, name):
    """A per-tensor float32 scale (scalar or one element) -> 0-d array."""
    return per_tensor(s, name, _F32)


def _dequantized_codes(scale, zp, dtype):
    """float32 x_scale * float32(i - zp) for the 256 codes of ``dtype`` laid out by their byte
    value (index = uint8 view of the code), as ORT's lookup-table builder computes it."""
    codes = np.arange(256, dtype=np.uint8).view(dtype).astype(np.int32)
    return _F32(scale) * (codes - np.int32(zp)).astype(_F32)


_TABLES: dict = {}


def _lookup_table(fn, x_scale, x_zp, y_scale, y_zp, dtype, key=None):
    """table[byte] = quantize(fn(dequantize(code)), y_scale, y_zp): onnxruntime's 8-bit
    lookup table (the quantization is QuantizeLinear's, float32 division). With ``key`` (what
    names ``fn`` and its parameters) the table is built once per key and quantization
    parameters: building it runs MLAS's sigmoid in NumPy, hundreds of µs, on every call else."""
    if key is not None:
        key = (key, np.dtype(dtype).str, *(float(v) for v in (x_scale, x_zp, y_scale, y_zp)))
        table = _TABLES.get(key)
        if table is not None:
            return table
    y = fn(_dequantized_codes(x_scale, x_zp, dtype))
    table = quantize(y.astype(_F32), y_scale, y_zp, out_dtype=dtype)
    if key is not None:
        if len(_TABLES) >= 256:
            _TABLES.clear()
        table.flags.writeable = False
        _TABLES[key] = table
    return table


def _apply_table(x, table):
    """table[x] with x read as bytes (int8 codes index by their uint8 bit pattern)."""
    return K.byte_lookup(x, table)


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
    scales = [per_tensor_scale(s, n) for s, n in ((a_scale, "A_scale"), (b_scale, "B_scale"),
                                              (c_scale, "C_scale"))]
    zps = [per_tensor_zero_point(z, dt, n) for z, n in ((a_zero_point, "A_zero_point"),
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


def _pair_table(fn, dt, *params) -> np.ndarray:
    """table[(a << 8) | b] = fn(a, b) over every pair of 8-bit codes (as bytes): an element-wise
    op of two 8-bit tensors has only 65536 possible results. ``fn`` gets the codes of A and B as
    float32-convertible arrays of shape [256, 1] and [1, 256] and the per-tensor ``params``."""
    codes = np.arange(256, dtype=np.uint8).view(dt)
    return np.ascontiguousarray(fn(codes[:, None], codes[None, :], *params)).reshape(-1)


_PAIR_TABLES: dict = {}


def _by_pairs(a, b, shape, fn, *params):
    """fn(a, b, *params) broadcast to ``shape``, looked up per pair of codes once a table (built
    once per set of parameters, 64 KiB) costs less than the arithmetic: the same bits."""
    if a.size + b.size < (1 << 16):
        return np.broadcast_to(fn(a, b, *params), shape)
    key = (fn, a.dtype.str, *(float(p) for p in params))
    table = _PAIR_TABLES.get(key)
    if table is None:
        if len(_PAIR_TABLES) >= 256:
            _PAIR_TABLES.clear()
        table = _PAIR_TABLES[key] = _pair_table(fn, a.dtype, *params)
    return K.pair_lookup(a, b, table)


def _add_codes(a, b, ra, rb, fixed, zc, a_first):
    """QLinearAdd's float32 arithmetic on codes a, b (see qlinear_add)."""
    af, bf = np.asarray(a).astype(_F32), np.asarray(b).astype(_F32)
    v = fma32(bf, rb, fma32(af, ra, fixed)) if a_first else fma32(af, ra, fma32(bf, rb, fixed))
    return _requantize_float(v, zc, np.asarray(a).dtype)


def _mul_codes(a, b, za, zb, ratio, zc):
    """QLinearMul's arithmetic on codes a, b (see qlinear_mul)."""
    prod = (np.asarray(a).astype(np.int32) - np.int32(za)) * (np.asarray(b).astype(np.int32) - np.int32(zb))
    return _requantize_float(prod.astype(_F32) * _F32(ratio) + _F32(zc), zc, np.asarray(a).dtype)


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
    a_first = _a_is_span_scalar(a.shape, b.shape, shape)
    if a_first:
        fixed = zc - fma32(rb, zb, ra * za)
    else:
        fixed = zc - fma32(ra, za, rb * zb)
    return _by_pairs(a, b, shape, _add_codes, ra, rb, fixed, zc, a_first)


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
    return _by_pairs(a, b, shape, _mul_codes, za, zb, sa * sb / sc, zc)


# ---------------------------------------------------------------- MLAS activations, lookup tables

def _lookup_op(x, x_scale, x_zero_point, y_scale, y_zero_point, fn, key):
    x = int8_operand(x, "X")
    table = _lookup_table(fn, per_tensor_scale(x_scale, "X_scale"),
                          per_tensor_zero_point(x_zero_point, x.dtype, "X_zero_point"),
                          per_tensor_scale(y_scale, "Y_scale"),
                          per_tensor_zero_point(y_zero_point, x.dtype, "Y_zero_point"), x.dtype,
                          key)
    return _apply_table(x, table)


@op("QLinearSigmoid", domain=MS)
def qlinear_sigmoid(X, X_scale, X_zero_point=None, Y_scale=None, Y_zero_point=None):
    """Y = quantize(sigmoid(dequantize(X))), through a 256-entry table

    ORT builds the table from the 256 dequantized codes with MLAS's sigmoid approximation
    (:func:`mlas_logistic`) and QuantizeLinear; refrt does the same, bit for bit."""
    if Y_scale is None:
        raise ValueError("QLinearSigmoid: Y_scale is required")
    return _lookup_op(X, X_scale, X_zero_point, Y_scale, Y_zero_point, mlas_logistic, "sigmoid")


@op("QLinearLeakyRelu", domain=MS)
def qlinear_leaky_relu(X, X_scale, X_zero_point=None, Y_scale=None, Y_zero_point=None, *,
                       alpha=f32(0.01)):
    """Y = quantize(v >= 0 ? v : alpha * v), v = dequantize(X), through a 256-entry table
    (float32 throughout, as ORT builds it)."""
    if Y_scale is None:
        raise ValueError("QLinearLeakyRelu: Y_scale is required")
    a = _F32(alpha)
    return _lookup_op(X, X_scale, X_zero_point, Y_scale, Y_zero_point,
                      lambda v: np.where(v >= 0, v, a * v).astype(_F32), ("leaky_relu", float(a)))


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
    xs = per_tensor_scale(X_scale, "X_scale")
    ys = per_tensor_scale(y_scale, "y_scale")
    yz = per_tensor_zero_point(y_zero_point, x.dtype, "y_zero_point")
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
    return _apply_table(x, _lookup_table(lambda v: v, x_scale, x_zp, y_scale, y_zp, x.dtype,
                                         "identity"))


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
    yz = per_tensor(Y_zero_point, "Y_zero_point")
    if yz.dtype not in _INT8:
        raise TypeError(f"QLinearConcat: Y_zero_point must be uint8 or int8, got {yz.dtype.name}")
    ys = per_tensor_scale(Y_scale, "Y_scale")
    parts = []
    for i in range(0, len(inputs), 3):
        x = int8_operand(inputs[i], f"input {i // 3}")
        if x.dtype != yz.dtype:
            raise TypeError(f"QLinearConcat: input {i // 3} is {x.dtype.name}, Y is "
                            f"{yz.dtype.name}")
        parts.append(_requantize_codes(x, per_tensor_scale(inputs[i + 1], f"scale {i // 3}"),
                                       per_tensor_zero_point(inputs[i + 2], x.dtype, f"zero point {i // 3}"),
                                       ys, yz))
    rank = parts[0].ndim
    return np.concatenate(parts, axis=normalize_axis(axis, rank))


@op("QLinearWhere", domain=MS)
def qlinear_where(condition, X, x_scale, x_zero_point, Y, y_scale, y_zero_point, z_scale,
                  z_zero_point):
    """Z = where(condition, requantize(X -> z), requantize(Y -> z)), broadcast like Where
    (requantization through ORT's identity lookup tables, bit for bit)."""
    x, y = int8_operand(X, "X"), int8_operand(Y, "Y")
    zz = per_tensor(z_zero_point, "z_zero_point")
    if not x.dtype == y.dtype == zz.dtype:
        raise TypeError(f"QLinearWhere: X, Y and z_zero_point must share one type, got "
                        f"{x.dtype.name}, {y.dtype.name}, {zz.dtype.name}")
    zs = per_tensor_scale(z_scale, "z_scale")
    xq = _requantize_codes(x, per_tensor_scale(x_scale, "x_scale"),
                           per_tensor_zero_point(x_zero_point, x.dtype, "x_zero_point"), zs, zz)
    yq = _requantize_codes(y, per_tensor_scale(y_scale, "y_scale"),
                           per_tensor_zero_point(y_zero_point, y.dtype, "y_zero_point"), zs, zz)
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
    acc = (x3.sum(axis=1, dtype=np.int64) - int(x_zp) * n).astype(np.int32)
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
    y = _global_average_codes(xc.reshape(n * c, int(np.prod(xc.shape[2:]))), per_tensor_scale(x_scale, "x_scale"),
                              per_tensor_zero_point(x_zero_point, x.dtype, "x_zero_point"),
                              per_tensor_scale(y_scale, "y_scale"),
                              per_tensor_zero_point(y_zero_point, x.dtype, "y_zero_point"))
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
    xs, ys = per_tensor_scale(x_scale, "x_scale"), per_tensor_scale(y_scale, "y_scale")
    xz = per_tensor_zero_point(x_zero_point, x.dtype, "x_zero_point")
    yz = per_tensor_zero_point(y_zero_point, x.dtype, "y_zero_point")
    xc = _channels_first(x, channels_last)
    win = pool_window(xc, kernel_shape, strides, None, pads, auto_pad, ceil_mode)
    if (tuple(kernel_shape) == xc.shape[2:] and not any(win.pads_begin + win.pads_end)):
        n, c = xc.shape[:2]
        y = _global_average_codes(xc.reshape(n * c, int(np.prod(xc.shape[2:]))), xs, xz, ys, yz)
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
