"""Quantization kernels: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, requantization.

All arithmetic is float32, as in onnxruntime's CPU kernels:

* quantize:     y = clamp(rint(x / scale), qmin - zp, qmax - zp) + zp;  NaN -> qmin
* dequantize:   y = float32(x - zp) * scale
* requantize:   y = clamp(rint(float32(acc) * multiplier), qmin - zp, qmax - zp) + zp

``rint`` rounds half to even.  Clamping before rounding gives the same integers as rounding and
then saturating, and keeps infinities finite; a NaN quotient becomes ``qmin`` (ORT's result,
measured for uint8, int8, uint16 and int16 outputs, per tensor and per axis).

Scale and zero point layouts (``axis`` and ``block_size`` as in QuantizeLinear):
per tensor (one element), per axis (1-D, one per index of ``x.shape[axis]``) or blocked
(``block_size`` > 0: the shape of ``x`` with ``ceil(x.shape[axis] / block_size)`` along ``axis``).
The kernels view ``x`` as ``[outer, C, inner]`` around ``axis`` and the scale as
``[outer or 1, ceil(C / block) or 1, inner or 1]``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .vec import (
    LANES,
    keep_nan,
    lanes_max,
    lanes_min,
    lanes_sum,
    load,
    load_first,
    maximum,
    minimum,
    splat,
)

__all__ = [
    "pair_lookup",
    "quantize_linear",
    "dequantize_linear",
    "dynamic_quantize_linear",
    "requantize",
    "requantize_multiplier",
    "scale_bias_int32",
    "byte_lookup",
]

_QUANT_TYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16))


# --------------------------------------------------------------------------- element rules


@njit(inline="always")
def _quantize_value(q, lo, hi, zp, qmin):
    """q: float32 quotient; lo/hi: float32 (qmin - zp), (qmax - zp) -> int64 quantized value."""
    # selects, not branches: the loops calling this vectorize
    c = lo if q < lo else q
    c = hi if c > hi else c
    v = np.int64(np.rint(c)) + zp
    return qmin if q != q else v        # NaN -> qmin


# --------------------------------------------------------------------------- quantize

_FLAT_BLOCK = 4096      # elements per task of the per-tensor kernels


# Per tensor, with 8- and 16-bit values, the integer steps are done in float32 and exactly (every
# value involved is an integer below 2^18): float32 <-> int32 conversions vectorize on AVX2,
# conversions to and from int64 (what the general kernels use) do not.

@njit(inline="always")
def _quantize_block(xf, s, zf, lo, hi, q0, outf, b):
    xr = xf[b * _FLAT_BLOCK:(b + 1) * _FLAT_BLOCK]      # views indexed from 0: vectorized
    yr = outf[b * _FLAT_BLOCK:(b + 1) * _FLAT_BLOCK]
    for i in range(xr.shape[0]):
        q = xr[i] / s
        c = lo if q < lo else q
        c = hi if c > hi else c
        v = np.rint(c) + zf                 # an integer in [qmin, qmax], exact
        yr[i] = np.int32(q0 if q != q else v)


@njit(cache=True, parallel=True, error_model="numpy")
def _quantize_flat_kernel(xf, s, z, qmin, qmax, outf):
    """Per tensor: outf = clamp(rint(xf / s), qmin - z, qmax - z) + z, NaN -> qmin, over the flat
    arrays in blocks of _FLAT_BLOCK (one parallel task each)."""
    lo, hi = np.float32(qmin - z), np.float32(qmax - z)
    for b in prange((xf.shape[0] + _FLAT_BLOCK - 1) // _FLAT_BLOCK):
        _quantize_block(xf, s, np.float32(z), lo, hi, np.float32(qmin), outf, b)


# the same without a parallel region (a few blocks)
_quantize_flat_serial = njit(cache=True, error_model="numpy")(_quantize_flat_kernel.py_func)


@njit(inline="always")
def _dequantize_block(xf, s, zf, outf, b):
    xr = xf[b * _FLAT_BLOCK:(b + 1) * _FLAT_BLOCK]
    yr = outf[b * _FLAT_BLOCK:(b + 1) * _FLAT_BLOCK]
    for i in range(xr.shape[0]):
        yr[i] = (np.float32(xr[i]) - zf) * s    # the difference of two such integers: exact


@njit(cache=True, parallel=True)
def _dequantize_flat_kernel(xf, s, z, outf):
    """Per tensor, 8- and 16-bit x: outf = float32(xf - z) * s."""
    for b in prange((xf.shape[0] + _FLAT_BLOCK - 1) // _FLAT_BLOCK):
        _dequantize_block(xf, s, np.float32(z), outf, b)


_dequantize_flat_serial = njit(cache=True)(_dequantize_flat_kernel.py_func)


@njit(cache=True, parallel=True, error_model="numpy")
def _quantize_kernel(x3, scale3, zp3, block, qmin, qmax, out3):
    """out3[o, c, i] = clamp(rint(x3[o,c,i] / s), qmin - z, qmax - z) + z, NaN -> qmin,
    with s, z = scale3/zp3[o or 0, c // block, i or 0] (float32 division)."""
    n_outer, n_c, n_inner = x3.shape
    s_outer, _, s_inner = scale3.shape
    for oc in prange(n_outer * n_c):
        o = oc // n_c
        c = oc - o * n_c
        so = o if s_outer > 1 else 0
        cb = c // block
        if s_inner == 1:
            s = scale3[so, cb, 0]
            z = np.int64(zp3[so, cb, 0])
            lo = np.float32(qmin - z)
            hi = np.float32(qmax - z)
            xr, yr = x3[o, c], out3[o, c]      # rows indexed from 0: the loop vectorizes
            for i in range(n_inner):
                yr[i] = _quantize_value(xr[i] / s, lo, hi, z, qmin)
        else:
            for i in range(n_inner):
                s = scale3[so, cb, i]
                z = np.int64(zp3[so, cb, i])
                lo = np.float32(qmin - z)
                hi = np.float32(qmax - z)
                out3[o, c, i] = _quantize_value(x3[o, c, i] / s, lo, hi, z, qmin)


@njit(cache=True, parallel=True)
def _dequantize_kernel(x3, scale3, zp3, block, out3):
    """out3[o, c, i] = float32(x3[o,c,i] - z) * s, with s, z picked as in _quantize_kernel."""
    n_outer, n_c, n_inner = x3.shape
    s_outer, _, s_inner = scale3.shape
    for oc in prange(n_outer * n_c):
        o = oc // n_c
        c = oc - o * n_c
        so = o if s_outer > 1 else 0
        cb = c // block
        if s_inner == 1:
            s = scale3[so, cb, 0]
            z = np.int64(zp3[so, cb, 0])
            xr, yr = x3[o, c], out3[o, c]      # rows indexed from 0: the loop vectorizes
            for i in range(n_inner):
                yr[i] = np.float32(np.int64(xr[i]) - z) * s
        else:
            for i in range(n_inner):
                s = scale3[so, cb, i]
                z = np.int64(zp3[so, cb, i])
                out3[o, c, i] = np.float32(np.int64(x3[o, c, i]) - z) * s


def _integer_range(dtype, qmin, qmax):
    info = np.iinfo(dtype)
    qmin = info.min if qmin is None else int(qmin)
    qmax = info.max if qmax is None else int(qmax)
    if not info.min <= qmin <= qmax <= info.max:
        raise ValueError(f"[qmin, qmax] = [{qmin}, {qmax}] does not fit {np.dtype(dtype).name}")
    return qmin, qmax


def _three_d(x_shape, axis, block_size, param, name):
    """Reshape a scale or zero point for the [outer, C, inner] view of x; validate its layout.

    Returns (param3, block) where the kernels read param3[o or 0, c // block, i or 0].
    """
    ndim = len(x_shape)
    p = np.asarray(param)
    if block_size:
        if ndim == 0:
            raise ValueError("blocked quantization needs an input of rank >= 1")
        c = x_shape[axis]
        expected = list(x_shape)
        expected[axis] = -(-c // block_size)
        if list(p.shape) != expected:
            raise ValueError(
                f"{name} of shape {p.shape} does not match blocks of {block_size} along axis {axis} "
                f"of an input of shape {tuple(x_shape)} (expected {tuple(expected)})"
            )
        outer = math.prod(x_shape[:axis])
        inner = math.prod(x_shape[axis + 1:])
        return np.array(p.reshape(outer, expected[axis], inner)), block_size
    if p.size == 1:
        return np.array(p.reshape(1, 1, 1)), 1
    if p.ndim != 1 or ndim == 0 or p.shape[0] != x_shape[axis]:
        raise ValueError(
            f"{name} must be a scalar or 1-D of length x.shape[{axis}]"
            f"{' = ' + str(x_shape[axis]) if ndim else ''}, got shape {p.shape}"
        )
    return np.array(p.reshape(1, -1, 1)), 1  # copies: writable, so one specialization per dtype


def _x_view(x, axis, per_tensor):
    """x as a C-contiguous [outer, C, inner] array.  Per tensor: [1, rows, last dim], so that the
    kernels' parallel loop has rows to share out (parameters then come from index 0 throughout)."""
    if x.ndim == 0:
        return x.reshape(1, 1, 1)
    if per_tensor:
        last = x.shape[-1] if x.ndim > 1 and x.shape[-1] else x.size
        return x.reshape(1, -1, max(last, 1))
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1:])
    return x.reshape(outer, x.shape[axis], inner)


def _scale_and_zero_point(x, scale, zp, axis, block_size):
    """-> (float32 scale, int64 zero point, per_tensor, normalized axis); axis is unused per tensor."""
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.zeros(scale.shape, dtype=np.int64) if zp is None else np.asarray(zp)
    if zp.dtype.kind not in "iu":
        raise TypeError(f"zero point must be integer, got {zp.dtype}")
    if zp.shape != scale.shape:
        raise ValueError(f"zero point shape {zp.shape} differs from scale shape {scale.shape}")
    if block_size < 0:
        raise ValueError(f"block_size must be >= 0, got {block_size}")
    per_tensor = scale.size == 1 and not block_size
    axis = 0 if per_tensor else _normalize_axis(axis, x.ndim)
    return scale, zp.astype(np.int64), per_tensor, axis


def _normalize_axis(axis, ndim):
    if ndim == 0:
        return 0
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an input of rank {ndim}")
    return axis % ndim


def quantize_linear(x, scale, zp=None, axis=1, qmin=None, qmax=None, out_dtype=None, block_size=0):
    """QuantizeLinear with onnxruntime's numerics.

        y = clamp(rint(float32(x) / scale), qmin - zp, qmax - zp) + zp      (float32, half to even)

    NaN becomes qmin.  ``scale`` float32 and ``zp`` per tensor, per axis or blocked (see the module
    docstring).  ``out_dtype`` defaults to zp's dtype (uint8 when zp is None); ``qmin``/``qmax``
    default to out_dtype's range (pass e.g. -8/7 for int4 values kept in int8).  Inputs of other
    float types are converted to float32 first (ORT divides float16 in float32 too).
    """
    x = np.asarray(x, dtype=np.float32, order="C")   # keeps a 0-d x 0-d
    if out_dtype is None:
        out_dtype = np.asarray(zp).dtype if zp is not None else np.uint8
    out_dtype = np.dtype(out_dtype)
    if out_dtype not in _QUANT_TYPES:
        raise TypeError(f"unsupported quantized type {out_dtype}")
    qmin, qmax = _integer_range(out_dtype, qmin, qmax)
    scale, zp, per_tensor, axis = _scale_and_zero_point(x, scale, zp, axis, block_size)
    scale3, block = _three_d(x.shape, axis, block_size, scale, "scale")
    zp3, _ = _three_d(x.shape, axis, block_size, zp, "zero point")
    out = np.empty(x.shape, dtype=out_dtype)
    if x.size and per_tensor and out_dtype.itemsize <= 2:
        flat = (_quantize_flat_serial if x.size <= 4 * _FLAT_BLOCK else _quantize_flat_kernel)
        flat(x.reshape(-1), np.float32(scale.reshape(())), int(zp.reshape(())), qmin, qmax, out.reshape(-1))
    elif x.size:
        x3 = _x_view(x, axis, per_tensor)
        _quantize_kernel(x3, scale3, zp3, x3.shape[1] if per_tensor else block, qmin, qmax,
                         _x_view(out, axis, per_tensor))
    return out


def dequantize_linear(x, scale, zp=None, axis=1, block_size=0):
    """DequantizeLinear: ``y = float32(x - zp) * scale`` (float32 result).

    The integer difference is exact (int64) and converted to float32 once, then multiplied by the
    float32 scale, as ORT does.  Layouts as in ``quantize_linear``.  A float16 scale is widened to
    float32; cast the result back if the model's output type is float16.
    """
    x = np.asarray(x, order="C")   # keeps a 0-d x 0-d (ascontiguousarray makes it 1-d)
    if x.dtype.kind not in "iu":
        raise TypeError(f"dequantize_linear expects an integer input, got {x.dtype}")
    scale, zp, per_tensor, axis = _scale_and_zero_point(x, scale, zp, axis, block_size)
    scale3, block = _three_d(x.shape, axis, block_size, scale, "scale")
    zp3, _ = _three_d(x.shape, axis, block_size, zp, "zero point")
    out = np.empty(x.shape, dtype=np.float32)
    if x.size and per_tensor and x.dtype.itemsize <= 2:
        flat = (_dequantize_flat_serial if x.size <= 4 * _FLAT_BLOCK else _dequantize_flat_kernel)
        flat(x.reshape(-1), np.float32(scale.reshape(())), int(zp.reshape(())), out.reshape(-1))
    elif x.size:
        x3 = _x_view(x, axis, per_tensor)
        _dequantize_kernel(x3, scale3, zp3, x3.shape[1] if per_tensor else block,
                           _x_view(out, axis, per_tensor))
    return out


# --------------------------------------------------------------------------- int32 -> float epilogue


@njit(cache=True, parallel=True)
def _scale_bias_kernel(c2, s, b, has_bias, out2):
    """out2[i, j] = float32(c2[i, j]) * s[j] (+ b[j]): two float32 roundings, no fused multiply-add."""
    rows, n = c2.shape
    for i in prange(rows):
        if has_bias:
            for j in range(n):
                v = np.float32(c2[i, j]) * s[j]
                out2[i, j] = v + b[j]
        else:
            for j in range(n):
                out2[i, j] = np.float32(c2[i, j]) * s[j]


def scale_bias_int32(c, scale, bias=None) -> np.ndarray:
    """``float32(c) * scale (+ bias)`` for int32 ``c`` [..., N] and float32 ``scale`` / ``bias``
    with one element or N (along the last axis): the Cast -> Mul -> Add that follows an integer
    GEMM in dynamically quantized models, in one pass and bit for bit what the three NumPy steps
    give (each product rounded to float32, then the sum)."""
    n = c.shape[-1] if c.ndim else 1
    s = np.ascontiguousarray(np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (n,)))
    b = (np.zeros(n, np.float32) if bias is None
         else np.ascontiguousarray(np.broadcast_to(np.asarray(bias, np.float32).reshape(-1), (n,))))
    c2 = np.ascontiguousarray(c).reshape(-1, n)
    out = np.empty(c2.shape, dtype=np.float32)
    _scale_bias_kernel(c2, s, b, bias is not None, out)
    return out.reshape(c.shape)


# --------------------------------------------------------------------------- requantize


@njit(inline="always")
def _requantize_row(acc3, mult3, zp3, qmin, qmax, out3, oc):
    """Row oc = o * C + c of _requantize_kernel."""
    n_c, n_inner = acc3.shape[1], acc3.shape[2]
    o = oc // n_c
    c = oc - o * n_c
    m = mult3[0, c, 0]
    z = np.int64(zp3[0, c, 0])
    lo = np.float32(qmin - z)
    hi = np.float32(qmax - z)
    zf, q0 = np.float32(z), np.float32(qmin)
    ar, yr = acc3[o, c], out3[o, c]         # rows indexed from 0: the loop vectorizes
    for i in range(n_inner):
        # _quantize_value's steps in float32, exactly (integers below 2^18), whose conversions
        # to and from int32 vectorize on AVX2 (int64's do not)
        q = np.float32(ar[i]) * m
        v = lo if q < lo else q
        v = np.rint(hi if v > hi else v) + zf
        yr[i] = np.int32(q0 if q != q else v)


@njit(cache=True, parallel=True)
def _requantize_kernel(acc3, mult3, zp3, qmin, qmax, out3):
    """out3[o, c, i] = clamp(rint(float32(acc3[o,c,i]) * m[c]), qmin - z[c], qmax - z[c]) + z[c]."""
    for oc in prange(acc3.shape[0] * acc3.shape[1]):
        _requantize_row(acc3, mult3, zp3, qmin, qmax, out3, oc)


# below this many outputs one thread requantizes faster than two: waking the pool costs about
# 70 us on the 2-core VMs measured; 200k values take 57 us on one thread, 37 us on two
_PARALLEL_REQUANTIZE = 1 << 17


@njit(cache=True)
def _requantize_serial(acc3, mult3, zp3, qmin, qmax, out3):
    """``_requantize_kernel`` on the calling thread (small outputs: no pool to wake)."""
    for oc in range(acc3.shape[0] * acc3.shape[1]):
        _requantize_row(acc3, mult3, zp3, qmin, qmax, out3, oc)


def requantize_multiplier(in_scale, w_scale, out_scale) -> np.ndarray:
    """``in_scale * w_scale / out_scale`` in float32, in that order (ORT's QLinearConv/QLinearMatMul)."""
    in_scale = np.asarray(in_scale, dtype=np.float32)
    w_scale = np.asarray(w_scale, dtype=np.float32)
    out_scale = np.asarray(out_scale, dtype=np.float32)
    return (in_scale * w_scale / out_scale).astype(np.float32)


def requantize(acc, multiplier, y_zp=0, qmin=None, qmax=None, out_dtype=np.uint8, axis=1):
    """int32 accumulators -> quantized outputs, as ORT's QLinearMatMul / QLinearConv do it:

        y = clamp(rint(float32(acc) * multiplier), qmin - y_zp, qmax - y_zp) + y_zp

    float32 product, round half to even.  ``multiplier`` (float32, e.g. from
    ``requantize_multiplier``) and ``y_zp`` are scalars or 1-D along ``axis`` (per output channel:
    axis 1 for NCHW convolution outputs, -1 for matmul columns).  Any bias is added to ``acc``
    (int32) before this step.
    """
    acc = np.asarray(acc, order="C")
    if acc.dtype != np.int32:
        raise TypeError(f"requantize expects int32 accumulators, got {acc.dtype}")
    out_dtype = np.dtype(out_dtype)
    if out_dtype not in _QUANT_TYPES:
        raise TypeError(f"unsupported quantized type {out_dtype}")
    qmin, qmax = _integer_range(out_dtype, qmin, qmax)
    mult = np.asarray(multiplier, dtype=np.float32)
    zp = np.asarray(y_zp)
    if zp.dtype.kind not in "iu":
        raise TypeError(f"y_zp must be integer, got {zp.dtype}")
    channels = max(mult.size, zp.size)
    per_tensor = channels == 1
    axis = 0 if per_tensor else _normalize_axis(axis, acc.ndim)
    if not per_tensor and (acc.ndim == 0 or acc.shape[axis] != channels):
        raise ValueError(
            f"per-channel parameters of length {channels} do not match axis {axis} of shape {acc.shape}"
        )
    for arr, name in ((mult, "multiplier"), (zp, "y_zp")):
        if arr.size not in (1, channels) or (arr.size > 1 and arr.ndim != 1):
            raise ValueError(f"{name} must be a scalar or 1-D of length {channels}, got shape {arr.shape}")
    out = np.empty(acc.shape, dtype=out_dtype)
    if acc.size:
        acc3 = _x_view(acc, axis, per_tensor)
        rows = acc3.shape[1]  # per tensor: the parameters repeat over the view's rows
        mult3 = np.array(np.broadcast_to(mult.reshape(-1), (rows,))).reshape(1, -1, 1)
        zp3 = np.array(np.broadcast_to(zp.astype(np.int64).reshape(-1), (rows,))).reshape(1, -1, 1)
        kernel = _requantize_kernel if acc.size >= _PARALLEL_REQUANTIZE else _requantize_serial
        kernel(acc3, mult3, zp3, qmin, qmax, _x_view(out, axis, per_tensor))
    return out


# --------------------------------------------------------------------------- 8-bit pairs


@njit(cache=True, parallel=True)
def _pair_lookup_kernel(a, b, table, out):
    """out[i] = table[a[i] * 256 + b[i]] over flat uint8 arrays."""
    for i in prange(out.shape[0]):
        out[i] = table[np.int64(a[i]) * 256 + np.int64(b[i])]


@njit(cache=True)
def _pair_lookup_serial(a, b, table, out):
    """``_pair_lookup_kernel`` on one thread."""
    for i in range(out.shape[0]):
        out[i] = table[np.int64(a[i]) * 256 + np.int64(b[i])]


def pair_lookup(a, b, table) -> np.ndarray:
    """``table[a * 256 + b]`` for 8-bit tensors a and b (their bytes, broadcast together) and a
    table of 65536 entries: an element-wise op of two 8-bit tensors has only that many results
    (QLinearAdd, QLinearMul). Returns an array of the broadcast shape and the table's dtype."""
    table = np.ascontiguousarray(table)
    if table.shape != (65536,):
        raise ValueError(f"the table must have 65536 entries, got shape {table.shape}")
    a, b = (np.asarray(v) for v in (a, b))
    if a.dtype.itemsize != 1 or b.dtype.itemsize != 1:
        raise TypeError(f"a and b must be 8-bit, got {a.dtype} and {b.dtype}")
    shape = np.broadcast_shapes(a.shape, b.shape)
    a8, b8 = (np.ascontiguousarray(np.broadcast_to(v.view(np.uint8), shape)).reshape(-1)
              for v in (a, b))
    out = np.empty(a8.shape[0], dtype=table.dtype)
    kernel = _pair_lookup_kernel if out.size >= _PARALLEL_QUANTIZE else _pair_lookup_serial
    kernel(a8, b8, table, out)
    return out.reshape(shape)


@njit(cache=True, parallel=True)
def _byte_lookup_kernel(x, table, out):
    """out[i] = table[x[i]] over a flat uint8 array."""
    for i in prange(out.shape[0]):
        out[i] = table[x[i]]


_byte_lookup_serial = njit(cache=True)(_byte_lookup_kernel.py_func)      # on one thread


def byte_lookup(x, table) -> np.ndarray:
    """``table[x]`` for an 8-bit tensor x (its bytes: int8 codes index by their bit pattern) and a
    table of 256 entries (QLinearSigmoid, QLinearLeakyRelu, ...). NumPy's fancy indexing took
    ~3 ns an element here. Returns an array of x's shape and the table's dtype."""
    table = np.ascontiguousarray(table)
    if table.shape != (256,):
        raise ValueError(f"the table must have 256 entries, got shape {table.shape}")
    x = np.asarray(x)
    if x.dtype.itemsize != 1:
        raise TypeError(f"x must be 8-bit, got {x.dtype}")
    flat = np.ascontiguousarray(x).view(np.uint8).reshape(-1)
    out = np.empty(flat.shape[0], dtype=table.dtype)
    kernel = _byte_lookup_kernel if out.size >= _PARALLEL_QUANTIZE else _byte_lookup_serial
    kernel(flat, table, out)
    return out.reshape(x.shape)


# --------------------------------------------------------------------------- dynamic quantization

@njit(inline="always")
def _quantize_u8_value(v, scale, lo, hi, z):
    """clamp(rint(v / scale), lo, hi) + z as uint8, for lo = -zp, hi = 255 - zp, z = zp.

    Written with selects rather than ``_quantize_value``'s branches so that LLVM vectorizes the
    loops below (1.6x faster at 128 x 3072).  ``not (q >= lo)`` also catches NaN, which the
    caller has already refused; it keeps the float -> int conversion away from NaN in any case."""
    q = v / scale
    q = lo if not (q >= lo) else q
    q = hi if q > hi else q
    return np.uint8(np.int32(np.rint(q)) + z)


@njit(cache=True, parallel=True)
def _quantize_u8_kernel(x, scale, zp, out):
    """out[i] = clamp(rint(x[i] / scale), -zp, 255 - zp) + zp  (flat float32 -> uint8)."""
    lo, hi, z = np.float32(0 - zp), np.float32(255 - zp), np.int32(zp)
    for i in prange(x.shape[0]):
        out[i] = _quantize_u8_value(x[i], scale, lo, hi, z)


@njit(cache=True)
def _quantize_u8_serial(x, scale, zp, out):
    """``_quantize_u8_kernel`` on one thread."""
    lo, hi, z = np.float32(0 - zp), np.float32(255 - zp), np.int32(zp)
    for i in range(x.shape[0]):
        out[i] = _quantize_u8_value(x[i], scale, lo, hi, z)


# below this many elements one thread quantizes faster than two (waking the second thread costs
# more than it saves: 128 x 768 took 27 us on one thread, 37 us on two)
_PARALLEL_QUANTIZE = 1 << 18


@njit(cache=True)
def _range_kernel(x):
    """(min, max, NaN marker) of a flat float32 array in one pass, 16 lanes at a time (a plain
    compare loop stays scalar: LLVM may not reorder float compares without fast-math). The last,
    partial block is read with 0 in the missing lanes: the range DynamicQuantizeLinear uses
    always includes 0. NaN is left out of min/max and shows in the marker (NaN if any)."""
    n = x.shape[0]
    lo, hi, nan = splat(np.float32(np.inf)), splat(np.float32(-np.inf)), splat(np.float32(0))
    i = 0
    while i + LANES <= n:
        v = load(x, i)
        lo, hi, nan = minimum(v, lo), maximum(v, hi), keep_nan(nan, v)
        i += LANES
    if i < n:
        v = load_first(x, i, n - i, np.float32(0))
        lo, hi, nan = minimum(v, lo), maximum(v, hi), keep_nan(nan, v)
    return lanes_min(lo), lanes_max(hi), lanes_sum(nan)


@njit(cache=True)
def _dynamic_params(lo, hi, ort_mode):
    """uint8 scale and zero point from the data range, all in float32:

        lo' = min(lo, 0), hi' = max(hi, 0), scale = (hi' - lo') / 255
        zp = rint(clamp(0 - lo' / scale, 0, 255))

    ort_mode: an empty range (hi' == lo') gives scale 1 and zp 0 (ORT).  Otherwise (spec mode)
    it gives scale 0 and zp 0: the spec's function body divides 0 / 0 there and casts the NaN.
    """
    lo = min(lo, np.float32(0))
    hi = max(hi, np.float32(0))
    if hi == lo:
        return (np.float32(1) if ort_mode else np.float32(0)), 0
    scale = (hi - lo) / np.float32(255)
    z = np.float32(0) - lo / scale
    if z < np.float32(0):
        z = np.float32(0)
    elif z > np.float32(255):
        z = np.float32(255)
    return scale, np.int64(np.rint(z))


def dynamic_quantize_linear(x, mode="ort"):
    """DynamicQuantizeLinear: fused min/max and uint8 quantization, float32 throughout.

        scale = (max(0, max x) - min(0, min x)) / 255
        zp    = rint(clamp(0 - min(0, min x) / scale, 0, 255))
        y     = clamp(rint(x / scale), -zp, 255 - zp) + zp

    Returns ``(y uint8, scale float32 scalar, zp uint8 scalar)``.  The two modes differ only for an
    all-zero (or empty) input: ``"ort"`` gives scale 1.0, zp 0 (onnxruntime); ``"spec"`` follows the
    spec's function body, whose scale is 0 / 255 = 0 and whose zero point 0 / 0 is NaN cast to
    uint8 (undefined); refrt returns scale 0.0, zp 0 and y all zero there.  (onnx.reference returns
    scale 1/255 in that case.)  A NaN input raises ValueError: ORT's result depends on where the
    NaN sits in its vector lanes; an infinite input raises too (the scale would be inf).
    """
    if mode not in ("ort", "spec"):
        raise ValueError(f"mode must be 'ort' or 'spec', got {mode!r}")
    x = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    if flat.size:
        lo, hi, nan = _range_kernel(flat)
        lo, hi = np.float32(lo), np.float32(hi)    # Numba hands float32 back as Python floats
        if np.isnan(nan):
            raise ValueError("x contains NaN: the quantization range is undefined (onnxruntime's "
                             "result depends on where the NaN falls in its vector lanes)")
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("x contains an infinity: the quantization range is infinite, so the "
                             "scale is inf and the zero point undefined")
    else:
        lo = hi = np.float32(0)
    scale, zp = _dynamic_params(lo, hi, mode == "ort")
    out = np.empty(flat.shape, dtype=np.uint8)
    if scale == 0:
        out[:] = 0
    elif flat.size:
        kernel = _quantize_u8_kernel if flat.size >= _PARALLEL_QUANTIZE else _quantize_u8_serial
        kernel(flat, np.float32(scale), zp, out)
    return out.reshape(x.shape), np.float32(scale), np.uint8(zp)
