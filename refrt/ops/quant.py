"""Quantization ops: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
ConvInteger, QLinearMatMul, QLinearConv.

    quantize:    y = saturate(round_half_even(x / scale) + zero_point)
    dequantize:  y = (x - zero_point) * scale
    QLinear*:    y = saturate(round_half_even(float32(acc) * (a_scale * w_scale / y_scale)) + y_zp)
                 with acc the exact int32 sum of (a - a_zp) * (w - w_zp) (plus the int32 bias)

The integer work runs in the Numba kernels of ``refrt.kernels``: quantize/dequantize/requantize
element loops, the packed int8 GEMM and the int8 convolution. NumPy handles only what those do not
cover: float8/float4/float6 values, and the division or multiplication in float16/bfloat16 that
the spec (and onnxruntime from opset 23 on) asks for.

Scale and zero point layouts (QuantizeLinear / DequantizeLinear): per tensor (one element), per
axis (1-D, one per index of ``x.shape[axis]``), or blocked (``block_size`` > 0: the shape of x with
``ceil(x.shape[axis] / block_size)`` along ``axis``).

Numerics: the session's ``numerics`` option picks between onnxruntime's CPU results ("ort", the
default) and the letter of the spec ("spec"); each op's docstring lists where they differ. The
helpers ``quantize``, ``dequantize``, ``matmul_integer``, ``conv_integer`` and
``qlinear_requantize`` are public: the com.microsoft quantized ops build on them.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
from onnx import TensorProto

from ..registry import op
from ._common import normalize_axis, np_dtype, once_per_session, onnx_elem_type, window_geometry
from ._kernels import K, sized_product, sized_threads
from .elementwise import cast_array

# ---------------------------------------------------------------- quantized types

_INT8 = (np.dtype(np.uint8), np.dtype(np.int8))
_F32 = np.dtype(np.float32)

# integer quantized type -> (qmin, qmax, container dtype the kernels compute in)
_INT_TYPES = {
    np.dtype(np.uint8): (0, 255, np.dtype(np.uint8)),
    np.dtype(np.int8): (-128, 127, np.dtype(np.int8)),
    np.dtype(np.uint16): (0, 65535, np.dtype(np.uint16)),
    np.dtype(np.int16): (-32768, 32767, np.dtype(np.int16)),
    np.dtype(ml_dtypes.uint4): (0, 15, np.dtype(np.uint8)),
    np.dtype(ml_dtypes.int4): (-8, 7, np.dtype(np.int8)),
    np.dtype(ml_dtypes.uint2): (0, 3, np.dtype(np.uint8)),
    np.dtype(ml_dtypes.int2): (-2, 1, np.dtype(np.int8)),
}
_FLOAT8 = {np_dtype(t) for t in (TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ,
                                 TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ)}
_SMALL_FLOATS = {np_dtype(t) for t in (TensorProto.FLOAT4E2M1, TensorProto.FLOAT6E2M3,
                                       TensorProto.FLOAT6E3M2)}
_FLOAT_QUANT = _FLOAT8 | _SMALL_FLOATS
_E8M0 = np_dtype(TensorProto.FLOAT8E8M0)
_REQUANT_TYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16))


def _arithmetic_dtype(dtype) -> np.dtype:
    """The dtype a division or product 'in the precision of ``dtype``' runs in: the float types
    themselves; float8e8m0 scales (powers of two) in float32; integer scales in float64."""
    dtype = np.dtype(dtype)
    if dtype == _E8M0 or dtype in _FLOAT8:
        return _F32
    if dtype.kind in "iu":
        return np.dtype(np.float64)
    return dtype


def _type_name(dtype) -> str:
    return np.dtype(dtype).name


# ---------------------------------------------------------------- parameter layouts

def _layout(x_shape, scale, zp, axis, block_size, what="scale"):
    """Check scale / zero point against x; return the normalized axis, or None per tensor."""
    s_shape = np.shape(scale)
    one = math.prod(s_shape) == 1 and (zp is None or np.size(zp) == 1)
    if zp is not None and np.shape(zp) != s_shape and not (one and not block_size):
        raise ValueError(f"zero point shape {list(np.shape(zp))} differs from {what} shape "
                         f"{list(s_shape)}")
    if block_size < 0:
        raise ValueError(f"block_size must be >= 0, got {block_size}")
    if not block_size and one:
        return None
    rank = len(x_shape)
    if rank == 0:
        raise ValueError(f"a per-axis or blocked {what} needs an input of rank >= 1")
    axis = normalize_axis(axis, rank)
    if block_size:
        expected = list(x_shape)
        expected[axis] = -(-x_shape[axis] // block_size)
        if list(s_shape) != expected:
            raise ValueError(f"blocked {what} of shape {list(s_shape)} does not fit blocks of "
                             f"{block_size} along axis {axis} of an input of shape "
                             f"{list(x_shape)} (expected {expected})")
    elif len(s_shape) != 1 or s_shape[0] != x_shape[axis]:
        raise ValueError(f"{what} must be a scalar (per tensor) or 1-D of length "
                         f"x.shape[{axis}] = {x_shape[axis]} (per axis), got shape "
                         f"{list(s_shape)}; a blocked {what} needs block_size > 0")
    return axis


def _expand(param, x_shape, axis, block_size):
    """A scale or zero point laid out by ``_layout``, as an array that broadcasts against x."""
    p = np.asarray(param)
    if axis is None:
        return p.reshape(())
    if block_size:
        return np.repeat(p, block_size, axis=axis).take(np.arange(x_shape[axis]), axis=axis)
    shape = [1] * len(x_shape)
    shape[axis] = -1
    return p.reshape(shape)


def _round_saturate(q, zp, qmin, qmax, container):
    """saturate(round_half_even(q) + zp) for a float quotient q (NaN -> qmin), NumPy version of
    the kernels' element rule for quotients that are not float32."""
    with np.errstate(invalid="ignore"):
        q = np.asarray(q, dtype=np.float64)
        y = np.rint(q) + (0 if zp is None else zp.astype(np.float64))
        y = np.where(np.isnan(y), qmin, np.clip(y, qmin, qmax))
    return y.astype(container)


# ---------------------------------------------------------------- QuantizeLinear

def quantize(x, scale, zp=None, *, axis=1, block_size=0, out_dtype=None, saturate=1,
             precision=None, float8_zero_point=True):
    """y = saturate(round_half_even(x / scale) + zp), the division in ``precision``.

    ``out_dtype`` defaults to zp's dtype (uint8 without zp): uint8/int8/uint16/int16,
    int4/uint4/int2/uint2 (ml_dtypes), float8, float4e2m1 and float6 types. Integer outputs
    saturate to the type's range and send NaN to its minimum; float outputs are the rounded cast
    of ``x / scale + zp``, clamped to the largest finite value with ``saturate`` (float8; float4 and
    float6 always saturate). ``precision`` (a dtype; None = float32) is the type the division runs
    in: float32 quotients go through the Numba kernel. ``float8_zero_point=False`` ignores a
    float8 zero point (onnxruntime does).
    """
    x = np.asarray(x)
    scale = np.asarray(scale)
    if x.dtype.kind not in "fiuV" or x.dtype in _FLOAT_QUANT or x.dtype == _E8M0:
        raise TypeError(f"x must be a float or int32 tensor, got {_type_name(x.dtype)}")
    if scale.dtype.kind not in "fiuV":
        raise TypeError(f"scale must be a float tensor, got {_type_name(scale.dtype)}")
    out_dtype = np.dtype(out_dtype if out_dtype is not None else
                         (zp.dtype if zp is not None else np.uint8))
    if out_dtype not in _INT_TYPES and out_dtype not in _FLOAT_QUANT:
        raise TypeError(f"unsupported quantized type {_type_name(out_dtype)}")
    if zp is not None:
        zp = np.asarray(zp)
        if zp.dtype != out_dtype:
            raise TypeError(f"zero point type {_type_name(zp.dtype)} differs from the output "
                            f"type {_type_name(out_dtype)}")
    axis = _layout(x.shape, scale, zp, axis, block_size)
    if axis is None:  # per tensor: any one-element shapes
        scale, zp = scale.reshape(()), None if zp is None else zp.reshape(())
    prec = _arithmetic_dtype(precision if precision is not None else _F32)

    if out_dtype in _INT_TYPES:
        qmin, qmax, container = _INT_TYPES[out_dtype]
        zc = None if zp is None else zp.astype(container)
        if prec == _F32:
            y = sized_threads(x.size, K.quantize_linear, x, scale.astype(np.float32), zc,
                              axis=1 if axis is None else axis, qmin=qmin, qmax=qmax,
                              out_dtype=container, block_size=block_size)
        else:
            q = _divide(x, scale, axis, block_size, prec)
            ze = None if zc is None else _expand(zc, x.shape, axis, block_size)
            y = _round_saturate(q, ze, qmin, qmax, container)
        return y if container == out_dtype else y.astype(out_dtype)

    q = _divide(x, scale, axis, block_size, prec)
    if zp is not None and (float8_zero_point or out_dtype not in _FLOAT8):
        q = q + _expand(zp, x.shape, axis, block_size).astype(np.float32).astype(q.dtype)
    return cast_array(np.asarray(q), onnx_elem_type(out_dtype), saturate)


def _divide(x, scale, axis, block_size, dtype):
    """x / scale in ``dtype`` (NumPy), the scale expanded to x's layout."""
    s = _expand(scale, x.shape, axis, block_size)
    with np.errstate(all="ignore"):
        return np.asarray(x.astype(dtype) / s.astype(dtype), dtype=dtype)


def _quantized_type(zero_point, output_dtype) -> np.dtype:
    """Output type of QuantizeLinear: the zero point's type, else ``output_dtype``, else uint8."""
    if zero_point is not None:
        if output_dtype and np_dtype(output_dtype) != zero_point.dtype:
            raise TypeError(f"output_dtype {_type_name(np_dtype(output_dtype))} differs from "
                            f"the zero point type {_type_name(zero_point.dtype)}")
        return zero_point.dtype
    return np_dtype(output_dtype) if output_dtype else np.dtype(np.uint8)


def _check_version10_scale(scale, ctx, name):
    if ctx.opset < 13 and np.size(scale) != 1:
        raise ValueError(f"{name} must be a scalar before opset 13 (per-axis scales came with "
                         f"version 13), got shape {list(np.shape(scale))}")


@op("QuantizeLinear", since=(10, 13, 19, 21, 23, 24, 25, 28))
def quantize_linear(x, y_scale, y_zero_point=None, *, axis=1, block_size=0, output_dtype=0,
                    precision=0, saturate=1, ctx):
    """y = saturate(round_half_even(x / y_scale) + y_zero_point), per tensor, per axis or blocked

    ORT vs spec: the spec divides in the scale's type (or ``precision``); onnxruntime (1.32)
    divides in float32 up to opset 21 and in the scale's type (or ``precision``) from 23 on, so a
    float16 scale gives different ties and roundings before opset 23 ("ort" follows onnxruntime
    per opset, "spec" always divides in the scale's type). A float8 zero point is ignored by
    onnxruntime and added by the spec's formula. Both send NaN to the type's minimum for integer
    outputs (the spec says nothing). float4/float6 outputs and int32 inputs exist only in
    refrt's spec reading (onnxruntime has no kernel for them).
    """
    _check_version10_scale(y_scale, ctx, "y_scale")
    out_dtype = _quantized_type(y_zero_point, output_dtype)
    if precision:
        prec = np_dtype(precision)
    elif ctx.numerics == "spec" or ctx.opset >= 23:
        prec = y_scale.dtype
    else:
        prec = _F32
    return quantize(x, y_scale, y_zero_point, axis=axis, block_size=block_size,
                    out_dtype=out_dtype, saturate=saturate, precision=prec,
                    float8_zero_point=ctx.numerics == "spec")


# ---------------------------------------------------------------- DequantizeLinear

def dequantize(x, scale, zp=None, *, axis=1, block_size=0, out_dtype=None,
               round_operands=False, wrap_int32=False):
    """y = (x - zp) * scale, as ``out_dtype`` (default: the scale's type).

    x: an integer type (uint8 ... int32, int4/uint4/int2/uint2) or a float8/float4/float6 type;
    zp the same type as x. The product is float32 and rounded once to ``out_dtype`` (the Numba
    kernel for integer x). ``round_operands=True`` rounds ``x - zp`` and the scale to a narrower
    ``out_dtype`` first, so that the product is the one computed in that type (the spec's reading
    of "the output type determines the precision of the multiplication"). ``wrap_int32=True``
    subtracts an int32 zero point with int32 wrap-around (onnxruntime) instead of exactly.
    """
    x = np.asarray(x)
    scale = np.asarray(scale)
    out_dtype = np.dtype(out_dtype if out_dtype is not None else scale.dtype)
    if out_dtype.kind != "f" and out_dtype != np.dtype(ml_dtypes.bfloat16):
        raise TypeError(f"DequantizeLinear produces float32, float16 or bfloat16, not "
                        f"{_type_name(out_dtype)} (set output_dtype)")
    is_int = x.dtype in _INT_TYPES or x.dtype == np.dtype(np.int32)
    if not is_int and x.dtype not in _FLOAT_QUANT:
        raise TypeError(f"x must be a quantized type, got {_type_name(x.dtype)}")
    if zp is not None:
        zp = np.asarray(zp)
        if zp.dtype != x.dtype:
            raise TypeError(f"zero point type {_type_name(zp.dtype)} differs from x's type "
                            f"{_type_name(x.dtype)}")
    axis = _layout(x.shape, scale, zp, axis, block_size)
    if axis is None:  # per tensor: any one-element shapes
        scale, zp = scale.reshape(()), None if zp is None else zp.reshape(())
    if wrap_int32 and zp is not None and x.dtype == np.dtype(np.int32):
        with np.errstate(over="ignore"):
            x, zp = x - _expand(zp, x.shape, axis, block_size), None
    narrow = round_operands and out_dtype != _F32
    if is_int and not narrow:
        container = np.dtype(np.int32) if x.dtype == np.dtype(np.int32) else _INT_TYPES[x.dtype][2]
        y = sized_threads(x.size, K.dequantize_linear, x.astype(container, copy=False),
                          scale.astype(np.float32),
                          None if zp is None else zp.astype(container),
                          axis=1 if axis is None else axis, block_size=block_size)
        with np.errstate(over="ignore"):
            return y.astype(out_dtype, copy=False)
    s = _expand(scale, x.shape, axis, block_size).astype(np.float32)
    if is_int:
        d = x.astype(np.int64)
        if zp is not None:
            d = d - _expand(zp, x.shape, axis, block_size).astype(np.int64)
    else:
        d = x.astype(np.float32)
        if zp is not None:
            d = d - _expand(zp, x.shape, axis, block_size).astype(np.float32)
    if narrow:
        with np.errstate(over="ignore"):
            d, s = d.astype(out_dtype), s.astype(out_dtype)
    with np.errstate(all="ignore"):
        y = d.astype(np.float32) * s.astype(np.float32)
        return np.asarray(y.astype(out_dtype, copy=False))


@op("DequantizeLinear", since=(10, 13, 19, 21, 23, 24, 25, 28))
def dequantize_linear(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0,
                      ctx):
    """y = (x - x_zero_point) * x_scale, per tensor, per axis or blocked

    ORT vs spec: for a float16/bfloat16 output the spec multiplies in that type (x - zp and the
    scale rounded to it first: "spec"); onnxruntime (and onnx.reference) multiply in float32 and
    round once ("ort"). The two differ only where |x - zp| or the scale is not representable in
    the output type (int16/int32 inputs, or a float32 scale with a float16 output_dtype).
    onnxruntime refuses a non-zero float8 zero point; refrt subtracts it as the formula says.
    int32 inputs take a zero point too, which the spec excludes: "ort" subtracts it with int32
    wrap-around as onnxruntime does, "spec" exactly.
    """
    _check_version10_scale(x_scale, ctx, "x_scale")
    out_dtype = np_dtype(output_dtype) if output_dtype else None
    if out_dtype is None and x_scale.dtype == _E8M0:
        raise TypeError("a float8e8m0 x_scale needs output_dtype to name the output type")
    return dequantize(x, x_scale, x_zero_point, axis=axis, block_size=block_size,
                      out_dtype=out_dtype, round_operands=ctx.numerics == "spec",
                      wrap_int32=ctx.numerics != "spec")


# ---------------------------------------------------------------- DynamicQuantizeLinear

@op("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(x, *, ctx):
    """y = sat(round(x / s) + zp): s = (max(x, 0) - min(x, 0)) / 255, zp = round(-min(x, 0) / s)

    uint8 output; float32 throughout, rounding half to even, zp clamped to [0, 255].
    ORT vs spec: for an all-zero (or empty) x onnxruntime returns scale 1 and zero point 0
    ("ort"); the spec's function body divides 0 by 0 there: "spec" returns scale 0, zero point 0
    and y all zero (onnx.reference returns scale 1/255).
    """
    if x.dtype != _F32:
        raise TypeError(f"DynamicQuantizeLinear takes float32, got {_type_name(x.dtype)}")
    y, scale, zp = K.dynamic_quantize_linear(x, mode=ctx.numerics)
    return y, np.asarray(scale, dtype=np.float32), np.asarray(zp, dtype=np.uint8)


# ---------------------------------------------------------------- integer products

def int8_operand(v, name):
    v = np.asarray(v)
    if v.dtype not in _INT8:
        raise TypeError(f"{name} must be uint8 or int8, got {_type_name(v.dtype)}")
    return v


def _zero_point_of(zp, operand, name):
    """A zero point input: None, or an integer array of the operand's type."""
    if zp is None:
        return None
    zp = np.asarray(zp)
    if zp.dtype != operand.dtype:
        raise TypeError(f"{name} must have the type of its input ({_type_name(operand.dtype)}), "
                        f"got {_type_name(zp.dtype)}")
    return zp


def _matrix_zero_points(zp, length, per, name, shape_hint):
    """A MatMulInteger zero point -> int64 array broadcastable to (*batch, length): 0-D per
    tensor, (length,) per row (A) / column (B), or (*batch, length) from an N-D zero point of
    shape [..., M, 1] (A) or [..., 1, N] (B)."""
    if zp is None or zp.size == 1:
        return np.asarray(0 if zp is None else zp.reshape(()), dtype=np.int64)
    if zp.ndim == 1:
        if zp.shape[0] != length:
            raise ValueError(f"{name} must be a scalar or have {length} elements (one per {per}), "
                             f"got shape {list(zp.shape)}")
        return zp.astype(np.int64)
    unit_axis, len_axis = (-1, -2) if shape_hint == "M1" else (-2, -1)
    if zp.shape[unit_axis] != 1 or zp.shape[len_axis] not in (1, length):
        dims = f"[..., {length}, 1]" if shape_hint == "M1" else f"[..., 1, {length}]"
        raise ValueError(f"{name} must be a scalar, 1-D of length {length} (one per {per}) or "
                         f"{dims}, got shape {list(zp.shape)}")
    z = zp.astype(np.int64).reshape(zp.shape[:-2] + (zp.shape[len_axis],))
    return np.broadcast_to(z, z.shape[:-1] + (length,))


def gemm_for(a_dtype, b_dtype, ctx):
    """Exact GEMM, or onnxruntime's AVX2 u8 x s8 GEMM with its int16 saturation when the session
    asks for that emulation."""
    emulate = ctx is not None and getattr(ctx.options, "emulate_avx2_u8s8", False)
    if emulate and a_dtype == np.uint8 and b_dtype == np.int8:
        return K.gemm_u8s8_avx2_saturating
    return K.gemm_int8


def packed_matrices(b, ctx, b_input):
    """PackedB for every matrix of b [..., K, N] (batch flattened); packed once per session for
    a constant b (kept in the node's cache)."""
    return once_per_session(ctx, ("packed_b", b_input), [b_input],
                            lambda: [K.pack_b(m) for m in b.reshape((math.prod(b.shape[:-2]),) + b.shape[-2:])],
                            (b.shape, b.dtype.str))


def matmul_integer(a, b, a_zp=None, b_zp=None, ctx=None, b_input=1, epilogue=None):
    """int32 ``Y[..., m, n] = sum_k (A[..., m, k] - a_zp) * (B[..., k, n] - b_zp)``.

    Batched like numpy.matmul (leading axes broadcast; a 1-D A is a row, a 1-D B a column, the
    promoted axis removed). a, b: uint8 or int8; each zero point of its operand's type: a scalar,
    1-D (A: one per row, length M; B: one per column, length N) or N-D ([..., M, 1] for A,
    [..., 1, N] for B, broadcast over the batch). Sums are exact int32 (wrapping like an int32
    accumulator), computed by the packed GEMM kernel; with ``ctx`` (a NodeContext) a constant B
    (input number ``b_input`` of the node) is packed once and kept in ``ctx.cache``, and the
    session option ``emulate_avx2_u8s8`` switches u8 x s8 products to onnxruntime's saturating
    AVX2 arithmetic. ``epilogue=(scale, bias)`` (float32, one element or one per column; bias may
    be None) returns ``float32(Y) * scale (+ bias)`` instead, bit for bit the Cast, Mul and Add
    nodes that follow in a dynamically quantized model, applied inside the GEMM where it can.
    """
    a = int8_operand(a, "A")
    b = int8_operand(b, "B")
    az = _zero_point_of(a_zp, a, "a_zero_point")
    bz = _zero_point_of(b_zp, b, "b_zero_point")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("MatMulInteger inputs must have rank >= 1")
    a_vec, b_vec = a.ndim == 1, b.ndim == 1
    a2 = a.reshape(1, -1) if a_vec else a
    b2 = b.reshape(-1, 1) if b_vec else b
    (m, k), (k_b, n) = a2.shape[-2:], b2.shape[-2:]
    if k != k_b:
        raise ValueError(f"inner dimensions differ: A is {list(a.shape)}, B is {list(b.shape)}")
    if a_vec and az is not None and az.size > 1:
        raise ValueError("a 1-D A has one row: a_zero_point must be a scalar")
    if b_vec and bz is not None and bz.size > 1:
        raise ValueError("a 1-D B has one column: b_zero_point must be a scalar")
    azr = _matrix_zero_points(az, m, "row of A", "a_zero_point", "M1")
    bzr = _matrix_zero_points(bz, n, "column of B", "b_zero_point", "1N")
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2], azr.shape[:-1],
                                    bzr.shape[:-1])
    except ValueError:
        raise ValueError(f"batch dimensions of A {list(a.shape)}, B {list(b.shape)} and the zero "
                         f"points do not broadcast") from None
    gemm = gemm_for(a.dtype, b.dtype, ctx)
    packs = packed_matrices(b2, ctx, b_input)
    if b2.ndim == 2 and bzr.ndim <= 1 and batch == a2.shape[:-2]:
        # one GEMM: every matrix of A against the same B; rows keep their zero points
        rows = a2.reshape(math.prod(a2.shape[:-1]), k)   # explicit: k or m may be 0
        row_zp = np.broadcast_to(azr, a2.shape[:-1]).reshape(-1) if azr.ndim else azr
        macs = rows.shape[0] * k * n     # small products on the calling thread alone
        if epilogue is not None and gemm is K.gemm_int8 and not (a_vec or b_vec):
            return sized_product(macs, K.gemm_int8_scaled, rows, packs[0], row_zp, bzr,
                                 *epilogue).reshape(batch + (m, n))
        y = sized_product(macs, gemm, rows, packs[0], row_zp, bzr).reshape(batch + (m, n))
    else:
        y = np.empty(batch + (m, n), dtype=np.int32)
        a_b = np.broadcast_to(a2, batch + (m, k))
        b_index = np.broadcast_to(np.arange(len(packs)).reshape(b2.shape[:-2]), batch)
        az_b = np.broadcast_to(azr, batch + (m,)) if azr.ndim else None
        bz_b = np.broadcast_to(bzr, batch + (n,)) if bzr.ndim else None
        for idx in np.ndindex(*batch):
            y[idx] = sized_product(m * k * n, gemm, np.ascontiguousarray(a_b[idx]), packs[b_index[idx]],
                                   azr if az_b is None else az_b[idx], bzr if bz_b is None else bz_b[idx])
    if a_vec:
        y = y[..., 0, :]
    if b_vec:
        y = y[..., 0]
    return y if epilogue is None else K.scale_bias_int32(y, *epilogue)


def matmul_integer_scaled(a, b, a_zp, b_zp, scale, bias, *, ctx):
    """``matmul_integer(a, b, a_zp, b_zp, ctx=ctx, epilogue=(scale, bias))`` on the session's
    prepared GEMM (``kernels.gemm.ScaledGemm``, kept in the node's cache), or None where that
    does not apply: B and its zero point constant, A uint8 [..., K] with one zero point, the
    exact GEMM. The result is the same; a call skips the general path's checks and set-up,
    which the first call runs once for the constant inputs."""
    if (ctx is None or not ctx.is_constant(1) or (b_zp is not None and not ctx.is_constant(3))
            or not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim < 2
            or not isinstance(b, np.ndarray) or b.ndim != 2 or a.shape[-1] != b.shape[0]
            or (a_zp is not None and (not isinstance(a_zp, np.ndarray) or a_zp.dtype != np.uint8
                                      or a_zp.size != 1))):
        return None
    if not K.ScaledGemm.runs_here():
        return None

    def prepare():   # None where the plan does not apply (it never will for this node)
        if gemm_for(a.dtype, int8_operand(b, "B").dtype, ctx) is not K.gemm_int8:
            return None
        bz = _matrix_zero_points(_zero_point_of(b_zp, b, "b_zero_point"), b.shape[1], "column of B",
                                 "b_zero_point", "1N")
        if bz.ndim > 1:
            return None
        return K.ScaledGemm(packed_matrices(b, ctx, 1)[0], bz, bias)

    # the bias is kept beside the plan, so the id in the signature stays its own
    _, plan = once_per_session(ctx, ("scaled_gemm",), [1] + ([3] if b_zp is not None else []),
                               lambda: (bias, prepare()), (id(bias), b.shape, b.dtype.str))
    if plan is None:
        return None
    rows = a.reshape(-1, a.shape[-1])
    y = sized_product(rows.size * b.shape[1], plan, rows, 0 if a_zp is None else int(a_zp.reshape(-1)[0]),
                      scale)
    return None if y is None else y.reshape(a.shape[:-1] + (b.shape[1],))


def _epilogue_operand(v, n: int, ndim: int) -> bool:
    """A float32 scale/bias that broadcasts along the last axis only: one element, or N."""
    return (isinstance(v, np.ndarray) and v.dtype == np.float32 and v.ndim <= ndim
            and (v.size == 1 or (v.shape[-1] == n and v.size == n)))


def matmul_integer_dequantized(A, B, a_zero_point=None, b_zero_point=None, *, scale, bias, ctx):
    """MatMulInteger -> Cast(FLOAT) -> Mul(scale) [-> Add(bias)] as one step (``refrt.fusion``):
    ``float32(Y) * scale (+ bias)`` with the epilogue applied inside the GEMM, or None where that
    does not apply (A of rank >= 2, a 2-D B, float32 scale and bias of one element or one per
    column: then :func:`dequantize_product` may still apply to the op's own result)."""
    if not (isinstance(A, np.ndarray) and isinstance(B, np.ndarray) and A.ndim >= 2
            and B.ndim == 2 and _epilogue_operand(scale, B.shape[1], A.ndim)
            and (bias is None or _epilogue_operand(bias, B.shape[1], A.ndim))):
        return None
    y = matmul_integer_scaled(A, B, a_zero_point, b_zero_point, scale, bias, ctx=ctx)
    if y is None:
        y = matmul_integer(A, B, a_zero_point, b_zero_point, ctx=ctx, epilogue=(scale, bias))
    return y


def dequantize_product(c, scale, bias=None):
    """Cast(FLOAT) -> Mul(scale) [-> Add(bias)] after MatMulInteger, in one pass over its int32
    product ``c`` (``kernels.scale_bias_int32``), or None where that does not apply (float32
    scale and bias of one element or one per column of ``c``)."""
    if not (isinstance(c, np.ndarray) and c.dtype == np.int32 and c.ndim >= 1
            and _epilogue_operand(scale, c.shape[-1], c.ndim)
            and (bias is None or _epilogue_operand(bias, c.shape[-1], c.ndim))):
        return None
    return K.scale_bias_int32(c, scale, bias)


@op("MatMulInteger", since=10)
def matmul_integer_op(A, B, a_zero_point=None, b_zero_point=None, *, ctx):
    """Y = (A - a_zero_point) @ (B - b_zero_point) in int32, batched like MatMul

    ORT vs spec: the spec allows a per-row a_zero_point (1-D of length M, or [..., M, 1]);
    onnxruntime refuses it, refrt supports it. onnxruntime takes a per-column b_zero_point for a
    batched B only as [..., 1, N]; refrt also broadcasts a 1-D one. On AVX2 CPUs without VNNI
    onnxruntime's u8 x s8 products saturate in int16 pairs; refrt is exact unless the session
    option ``emulate_avx2_u8s8`` asks to reproduce that.
    """
    return matmul_integer(A, B, a_zero_point, b_zero_point, ctx, b_input=1)


def conv_integer(x, w, x_zp=None, w_zp=None, *, auto_pad="NOTSET", dilations=None, group=1,
                 kernel_shape=None, pads=None, strides=None, ctx=None, w_input=1,
                 ort_op="ConvInteger"):
    """int32 ``y[n, m, o] = sum_{c in group(m), r} (w[m, c, r] - w_zp[m]) * (x[n, c, o*s + r*d - pb]
    - x_zp)``, padding read as x_zp (so it contributes nothing).

    x [N, C, *spatial] and w [M, C/group, *kernel] uint8 or int8; x_zp a scalar of x's type, w_zp
    a scalar or one per output channel (length M) of w's type. Pads from ``auto_pad`` as for Conv.
    Runs on the Numba int8 convolution (im2col + packed GEMM; depthwise direct); with ``ctx`` a
    constant w (input number ``w_input`` of the node) is packed once and kept in ``ctx.cache``.
    Under the session option ``emulate_avx2_u8s8`` the u8 x s8 product saturates as onnxruntime's
    ``ort_op`` ("ConvInteger" or "QLinearConv") does on AVX2 without VNNI: its ConvInteger
    multiplies uint8 weights by int8 inputs, its QLinearConv uint8 inputs by int8 weights, each
    with its own order of the reduction (``kernels.conv``).
    """
    x = int8_operand(x, "x")
    w = int8_operand(w, "w")
    xz = _zero_point_of(x_zp, x, "x_zero_point")
    wz = _zero_point_of(w_zp, w, "w_zero_point")
    if x.ndim < 3:
        raise ValueError(f"x must have rank >= 3 (N, C, spatial...), got shape {list(x.shape)}")
    if w.ndim != x.ndim:
        raise ValueError(f"w has rank {w.ndim}, x has rank {x.ndim}")
    if kernel_shape is not None and tuple(kernel_shape) != w.shape[2:]:
        raise ValueError(f"kernel_shape {list(kernel_shape)} does not match w's spatial shape "
                         f"{list(w.shape[2:])}")
    if xz is not None and xz.size != 1:
        raise ValueError(f"x_zero_point must be a scalar (per tensor), got shape "
                         f"{list(xz.shape)}")
    m = w.shape[0]
    if wz is not None and wz.size != 1 and (wz.ndim != 1 or wz.shape[0] != m):
        raise ValueError(f"w_zero_point must be a scalar or 1-D with one value per output channel "
                         f"({m}), got shape {list(wz.shape)}")
    win = window_geometry(x.shape[2:], w.shape[2:], strides, dilations, pads, auto_pad)
    # onnxruntime's GEMM takes the weights as A in ConvInteger and the inputs as A in QLinearConv
    u8s8 = (w.dtype, x.dtype) if ort_op == "ConvInteger" else (x.dtype, w.dtype)
    saturating = gemm_for(*u8s8, ctx) is K.gemm_u8s8_avx2_saturating
    args = (x, w, 0 if xz is None else int(xz.reshape(-1)[0]), 0 if wz is None else wz,
            group, list(win.pads_begin + win.pads_end), list(win.strides), list(win.dilations))
    if saturating and ort_op == "ConvInteger":
        return K.conv_integer_s8u8_avx2_saturating(*args)
    if saturating:
        return K.conv_u8s8_avx2_saturating(*args)
    return K.conv_int8(*args, packed=_packed_conv_weights(w, group, ctx, w_input))


def _packed_conv_weights(w, group, ctx, w_input):
    """``conv.pack_weights`` for a constant w, kept in the node's cache; None (pack per call)
    otherwise, or for a group count that does not divide the output channels (conv_int8 reports
    it)."""
    if ctx is None or not ctx.is_constant(w_input) or group < 1 or w.shape[0] % group:
        return None
    return once_per_session(ctx, ("packed_conv", w_input, group), [w_input],
                            lambda: K.pack_conv_weights(w, group), (w.shape, w.dtype.str))


@op("ConvInteger", since=10)
def conv_integer_op(x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET",
                    dilations=None, group=1, kernel_shape=None, pads=None, strides=None, ctx=None):
    """y = conv(x - x_zero_point, w - w_zero_point) in int32 (zero-point padding contributes 0)

    ORT vs spec: onnxruntime refuses a per-channel w_zero_point and dilations with auto_pad
    SAME_*; refrt takes both. On AVX2 CPUs without VNNI onnxruntime's uint8 w x int8 x products
    saturate in int16 pairs; refrt is exact unless the session option ``emulate_avx2_u8s8`` asks
    to reproduce that. Results agree otherwise.
    """
    return conv_integer(x, w, x_zero_point, w_zero_point, auto_pad=auto_pad,
                        dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads,
                        strides=strides, ctx=ctx, w_input=1)


# ---------------------------------------------------------------- requantization

def qlinear_requantize(acc, a_scale, w_scale, y_scale, y_zp, axis=1):
    """int32 accumulators -> quantized y, onnxruntime's way:

        y = saturate(round_half_even(float32(acc) * m) + y_zp)
        m = float32(a_scale * w_scale / y_scale)

    The multiplier is float32, computed in that order (``kernels.requantize_multiplier``); the
    product, clamp and rounding run in the Numba requantize kernel. ``a_scale``, ``y_scale`` and
    ``y_zp`` are per tensor; ``w_scale`` is per tensor, 1-D along ``axis`` (per output channel,
    e.g. axis 1 for NCHW, -1 for matmul columns), or N-D of shape [..., 1, N] for a batched matmul
    (``axis`` must then be the last axis). y's type is y_zp's (uint8, int8, uint16 or int16).
    """
    acc = np.asarray(acc)
    y_zp = np.asarray(y_zp)
    if y_zp.dtype not in _REQUANT_TYPES:
        raise TypeError(f"y_zero_point must be uint8, int8, uint16 or int16, got "
                        f"{_type_name(y_zp.dtype)}")
    for name, s in (("a_scale", a_scale), ("y_scale", y_scale), ("y_zero_point", y_zp)):
        if np.size(s) != 1:
            raise ValueError(f"{name} must be a scalar (per tensor), got shape {list(np.shape(s))}")
    mult = K.requantize_multiplier(np.reshape(a_scale, ()), w_scale, np.reshape(y_scale, ()))
    zp = y_zp.reshape(())
    if mult.size == 1 or mult.ndim == 1:
        return K.requantize(acc, mult.reshape(-1) if mult.size > 1 else mult.reshape(()), zp,
                            out_dtype=y_zp.dtype, axis=axis)
    if normalize_axis(axis, acc.ndim) != acc.ndim - 1 or mult.shape[-2] != 1:
        raise ValueError(f"an N-D w_scale must have shape [..., 1, N] against the last axis of "
                         f"the result, got {list(mult.shape)} for a result of shape "
                         f"{list(acc.shape)}")
    try:
        mult_b = np.broadcast_to(mult, acc.shape[:-2] + (1, acc.shape[-1]))
    except ValueError:
        raise ValueError(f"w_scale of shape {list(np.shape(w_scale))} does not broadcast to the "
                         f"result of shape {list(acc.shape)}") from None
    y = np.empty(acc.shape, dtype=y_zp.dtype)
    for idx in np.ndindex(*acc.shape[:-2]):
        y[idx] = K.requantize(acc[idx], np.ascontiguousarray(mult_b[idx][0]), zp,
                              out_dtype=y_zp.dtype, axis=-1)
    return y


def _check_scale(scale, name):
    if np.asarray(scale).dtype.kind != "f" and np.asarray(scale).dtype != ml_dtypes.bfloat16:
        raise TypeError(f"{name} must be a float tensor, got {_type_name(np.asarray(scale).dtype)}")


@op("QLinearMatMul", since=(10, 21))
def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point,
                   *, ctx):
    """y = saturate(round((a_scale * b_scale / y_scale) * ((a - a_zp) @ (b - b_zp))) + y_zp)

    Integer inputs: exact int32 GEMM (batched like MatMul), then ``qlinear_requantize`` (float32
    multiplier in onnxruntime's order, half to even, saturate) in both numerics modes: the spec
    does not fix that arithmetic. b_scale / b_zero_point: per tensor, per column (1-D, length N)
    or [..., 1, N]; a and y parameters per tensor. float8 inputs (version 21) run as the spec's
    composition: dequantize a and b to float32, float32 matmul, quantize (saturating) to y.
    The session option ``emulate_avx2_u8s8`` reproduces onnxruntime's int16-saturating u8 x s8
    GEMM of AVX2 CPUs without VNNI, as for MatMulInteger. ORT vs spec: onnxruntime needs y's
    type to equal a's and has no float8 kernel.
    """
    for name, s in (("a_scale", a_scale), ("b_scale", b_scale), ("y_scale", y_scale)):
        _check_scale(s, name)
    if a.dtype in _FLOAT8 or b.dtype in _FLOAT8 or y_zero_point.dtype in _FLOAT8:
        return _qlinear_matmul_float8(a, a_scale, a_zero_point, b, b_scale, b_zero_point,
                                      y_scale, y_zero_point, ctx)
    a_vec, b_vec = a.ndim == 1, b.ndim == 1
    a2 = a.reshape(1, -1) if a_vec else a
    b2 = b.reshape(-1, 1) if b_vec else b
    for name, s in (("a_scale", a_scale), ("a_zero_point", a_zero_point)):
        if np.size(s) != 1:
            raise ValueError(f"{name} must be a scalar (per tensor), got shape {list(np.shape(s))}")
    acc = matmul_integer(a2, b2, a_zero_point, b_zero_point, ctx, b_input=3)
    y = qlinear_requantize(acc, a_scale, b_scale, y_scale, y_zero_point, axis=-1)
    if a_vec:
        y = y[..., 0, :]
    if b_vec:
        y = y[..., 0]
    return y


def _qlinear_matmul_float8(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, ctx):
    """float8 QLinearMatMul: dequantize both sides to float32, matmul, quantize to y's type."""
    if b.ndim >= 2 and np.size(b_scale) > 1 and np.ndim(b_scale) == 1:
        b_axis = b.ndim - 1  # per column
    else:
        b_axis = 1
    af = dequantize(a, a_scale, a_zp, out_dtype=np.float32)
    bf = dequantize(b, b_scale, b_zp, axis=b_axis, out_dtype=np.float32)
    yf = np.matmul(af, bf)
    return quantize(yf, y_scale, y_zp, saturate=1, precision=_F32,
                    float8_zero_point=ctx.numerics == "spec")


@op("QLinearConv", since=10)
def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point,
                 B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                 pads=None, strides=None, ctx=None):
    """y = saturate(round((x_scale * w_scale / y_scale) * (conv(x - x_zp, w - w_zp) + B)) + y_zp)

    The int32 bias is added to the exact int32 accumulators; then ``qlinear_requantize`` (float32
    multiplier per output channel in onnxruntime's order, half to even, saturate). w_scale and
    w_zero_point may be per output channel. ORT vs spec: onnxruntime refuses dilations with
    auto_pad SAME_*, and needs y's type to equal x's; results agree otherwise (onnxruntime 1.32
    takes distinct per-channel weight zero points too). On AVX2 CPUs without VNNI
    onnxruntime's u8 x s8 products saturate in int16 pairs, which refrt does not emulate here.
    """
    for name, s in (("x_scale", x_scale), ("w_scale", w_scale), ("y_scale", y_scale)):
        _check_scale(s, name)
    m = w.shape[0] if w.ndim else 0
    if np.size(w_scale) != 1 and (np.ndim(w_scale) != 1 or np.size(w_scale) != m):
        raise ValueError(f"w_scale must be a scalar or 1-D with one value per output channel "
                         f"({m}), got shape {list(np.shape(w_scale))}")
    acc = conv_integer(x, w, x_zero_point, w_zero_point, auto_pad=auto_pad, dilations=dilations,
                       group=group, kernel_shape=kernel_shape, pads=pads, strides=strides, ctx=ctx,
                       w_input=3, ort_op="QLinearConv")
    if B is not None:
        if B.dtype != np.int32 or B.ndim != 1 or B.shape[0] != m:
            raise ValueError(f"B must be int32 of shape [{m}] (one per output channel), got "
                             f"{_type_name(B.dtype)} of shape {list(B.shape)}")
        acc += B.reshape((m,) + (1,) * (acc.ndim - 2))
    return qlinear_requantize(acc, x_scale, w_scale, y_scale, y_zero_point, axis=1)
