"""NumPy twins of the kernels: the same math written the obvious way, a few lines each.

Tests compare every kernel with its twin bit for bit.  Twins favour clarity over speed
(int64 matmuls, full broadcasting, explicit loops over kernel offsets).
"""

from __future__ import annotations

import numpy as np

from .fma import fma32

__all__ = [
    "gemm_int8_twin",
    "gemm_u8s8_avx2_saturating_twin",
    "im2col_int8_twin",
    "conv_int8_twin",
    "pair_lookup_twin",
    "byte_lookup_twin",
    "quantize_linear_twin",
    "dequantize_linear_twin",
    "requantize_twin",
    "dynamic_quantize_linear_twin",
    "scale_bias_int32_twin",
    "fma32",
    "erf_f32_twin",
    "layer_norm_rows_twin",
    "softmax_rows_twin",
]


def _column(zp, n):
    return np.broadcast_to(np.asarray(zp, dtype=np.int64).reshape(-1), (n,))


def gemm_int8_twin(a, b, a_zp=0, b_zp=0):
    """(a - a_zp[:, None]) @ (b - b_zp[None, :]) in int64, wrapped to int32."""
    a = a.astype(np.int64) - _column(a_zp, a.shape[0])[:, None]
    b = b.astype(np.int64) - _column(b_zp, b.shape[1])[None, :]
    return (a @ b).astype(np.int32)


def gemm_u8s8_avx2_saturating_twin(a, b, a_zp=0, b_zp=0):
    """Raw pair products (k even, k+1) saturated to int16 and summed; zero points folded after."""
    m, k = a.shape
    n = b.shape[1]
    a2 = np.zeros((m, k + k % 2), dtype=np.int64)
    a2[:, :k] = a
    b2 = np.zeros((k + k % 2, n), dtype=np.int64)
    b2[:k] = b
    pairs = a2[:, 0::2, None] * b2[None, 0::2, :] + a2[:, 1::2, None] * b2[None, 1::2, :]
    raw = np.clip(pairs, -32768, 32767).sum(axis=1)
    az = _column(a_zp, m)[:, None]
    bz = _column(b_zp, n)[None, :]
    rowsum = a.astype(np.int64).sum(axis=1, keepdims=True)
    colsum = b.astype(np.int64).sum(axis=0, keepdims=True)
    return (raw - bz * rowsum - az * colsum + k * az * bz).astype(np.int32)


def _out_size(size, k, pad_begin, pad_end, stride, dilation):
    return (size + pad_begin + pad_end - dilation * (k - 1) - 1) // stride + 1


def _conv_geometry(x, w, group, pads, strides, dilations):
    """(pads, strides, dilations with their defaults, output spatial sizes, channels per group,
    filters per group) of a convolution of x [N, C, *spatial] with w [M, C / group, *kernel]."""
    nd = x.ndim - 2
    pads = list(pads) if pads is not None else [0] * (2 * nd)
    strides = list(strides) if strides is not None else [1] * nd
    dilations = list(dilations) if dilations is not None else [1] * nd
    out = [_out_size(x.shape[2 + d], w.shape[2 + d], pads[d], pads[d + nd], strides[d], dilations[d])
           for d in range(nd)]
    return pads, strides, dilations, out, x.shape[1] // group, w.shape[0] // group


def im2col_int8_twin(x, kernel_shape, pads, strides, dilations, x_zp=0):
    """Pad x [C, *spatial] with x_zp, then take one strided slice per kernel offset.

    Row c * prod(kernel) + r holds channel c at kernel offset r (C order), column l output position l.
    """
    nd = len(kernel_shape)
    padded = np.pad(x, [(0, 0)] + [(pads[d], pads[d + nd]) for d in range(nd)], constant_values=x_zp)
    out_shape = [_out_size(x.shape[1 + d], kernel_shape[d], pads[d], pads[d + nd], strides[d], dilations[d])
                 for d in range(nd)]
    rows = []
    for offset in np.ndindex(*kernel_shape):
        index = tuple(slice(offset[d] * dilations[d], offset[d] * dilations[d] + (out_shape[d] - 1) * strides[d] + 1,
                            strides[d]) for d in range(nd))
        rows.append(padded[(slice(None),) + index].reshape(x.shape[0], -1))
    return np.stack(rows, axis=1).reshape(-1, int(np.prod(out_shape)))


def conv_int8_twin(x, w, x_zp=0, w_zp=0, group=1, pads=None, strides=None, dilations=None):
    """Direct convolution in int64: for every kernel offset, add w[:, :, offset] times the
    matching strided window of the zero-point-shifted, zero-padded input.  Wrapped to int32."""
    nd = x.ndim - 2
    pads, strides, dilations, out_shape, cg, mg = _conv_geometry(x, w, group, pads, strides, dilations)
    xs = np.pad(x.astype(np.int64) - int(x_zp), [(0, 0), (0, 0)] + [(pads[d], pads[d + nd]) for d in range(nd)])
    ws = w.astype(np.int64) - _column(w_zp, w.shape[0]).reshape((-1,) + (1,) * (nd + 1))
    n, m = x.shape[0], w.shape[0]
    y = np.zeros([n, m] + out_shape, dtype=np.int64)
    for g in range(group):
        for offset in np.ndindex(*w.shape[2:]):
            index = tuple(slice(offset[d] * dilations[d], offset[d] * dilations[d] + (out_shape[d] - 1) * strides[d] + 1,
                                strides[d]) for d in range(nd))
            window = xs[(slice(None), slice(g * cg, (g + 1) * cg)) + index]  # [N, Cg, *out]
            wk = ws[(slice(g * mg, (g + 1) * mg), slice(None)) + offset]  # [Mg, Cg]
            y[:, g * mg:(g + 1) * mg] += np.einsum("mc,nc...->nm...", wk, window)
    return y.astype(np.int32)


def _param_view(param, x_shape, axis, block_size):
    """Broadcast a per-tensor / per-axis / blocked parameter to x's shape."""
    param = np.asarray(param)
    if block_size:
        return np.repeat(param, block_size, axis=axis)[(slice(None),) * axis + (slice(0, x_shape[axis]),)]
    if param.size == 1:
        return param.reshape(())
    shape = [1] * len(x_shape)
    shape[axis] = -1
    return param.reshape(shape)


def quantize_linear_twin(x, scale, zp=None, axis=1, qmin=None, qmax=None, out_dtype=None, block_size=0):
    """saturate(rint(x / scale) + zp) in float32; NaN -> qmin."""
    out_dtype = np.dtype(out_dtype or (np.asarray(zp).dtype if zp is not None else np.uint8))
    info = np.iinfo(out_dtype)
    qmin = info.min if qmin is None else qmin
    qmax = info.max if qmax is None else qmax
    x = np.asarray(x, dtype=np.float32)
    axis = axis % x.ndim if x.ndim else 0
    s = _param_view(np.asarray(scale, dtype=np.float32), x.shape, axis, block_size)
    z = _param_view(np.zeros(np.shape(scale)) if zp is None else zp, x.shape, axis, block_size).astype(np.float32)
    with np.errstate(invalid="ignore"):
        y = np.clip(np.rint(x / s) + z, qmin, qmax)
    return np.where(np.isnan(y), qmin, y).astype(out_dtype)


def dequantize_linear_twin(x, scale, zp=None, axis=1, block_size=0):
    """float32(x - zp) * scale."""
    x = np.asarray(x)
    axis = axis % x.ndim if x.ndim else 0
    s = _param_view(np.asarray(scale, dtype=np.float32), x.shape, axis, block_size)
    z = _param_view(np.zeros(np.shape(scale), dtype=np.int64) if zp is None else zp, x.shape, axis, block_size)
    return (x.astype(np.int64) - z.astype(np.int64)).astype(np.float32) * s


def requantize_twin(acc, multiplier, y_zp=0, qmin=None, qmax=None, out_dtype=np.uint8, axis=1):
    """saturate(rint(float32(acc) * multiplier) + y_zp), float32 product."""
    info = np.iinfo(out_dtype)
    qmin = info.min if qmin is None else qmin
    qmax = info.max if qmax is None else qmax
    acc = np.asarray(acc)
    axis = axis % acc.ndim if acc.ndim else 0
    m = _param_view(np.asarray(multiplier, dtype=np.float32), acc.shape, axis, 0)
    z = _param_view(y_zp, acc.shape, axis, 0).astype(np.float32)
    with np.errstate(invalid="ignore"):
        y = np.clip(np.rint(acc.astype(np.float32) * m) + z, qmin, qmax)
    return np.where(np.isnan(y), qmin, y).astype(out_dtype)


def scale_bias_int32_twin(c, scale, bias=None):
    """Cast int32 -> float32, multiply by scale, add bias: three float32 NumPy steps."""
    y = np.asarray(c).astype(np.float32) * np.asarray(scale, np.float32)
    return y if bias is None else (y + np.asarray(bias, np.float32)).astype(np.float32)


def pair_lookup_twin(a, b, table):
    """table[a * 256 + b] over the bytes of a and b, broadcast."""
    a8, b8 = np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8)
    return np.asarray(table)[a8.astype(np.int64) * 256 + b8.astype(np.int64)]


def byte_lookup_twin(x, table):
    """table[x] over the bytes of x."""
    return np.asarray(table)[np.asarray(x).view(np.uint8)]


def dynamic_quantize_linear_twin(x, mode="ort"):
    """The DynamicQuantizeLinear function body in float32 (ORT: scale 1 for an empty range)."""
    x = np.asarray(x, dtype=np.float32)
    lo = np.minimum(x.min(initial=np.float32(0)), np.float32(0))
    hi = np.maximum(x.max(initial=np.float32(0)), np.float32(0))
    if hi == lo:
        scale = np.float32(1 if mode == "ort" else 0)
        return np.zeros(x.shape, np.uint8), scale, np.uint8(0)
    scale = np.float32((hi - lo) / np.float32(255))
    zp = np.rint(np.clip(np.float32(0) - lo / scale, 0, 255)).astype(np.uint8)
    y = np.clip(np.rint(x / scale) + np.float32(zp), 0, 255).astype(np.uint8)
    return y, scale, zp


def conv_u8s8_avx2_saturating_twin(x, w, x_zp=0, w_zp=0, group=1, pads=None, strides=None, dilations=None):
    """NumPy twin of ``conv_u8s8_avx2_saturating``: padded windows in int64, reduction ordered
    tap-major (k = r * Cg + c), raw products summed in pairs saturated to int16, zero points
    folded in exactly afterwards; depthwise groups exact when the weight zero point is one value."""
    nd = x.ndim - 2
    pads, strides, dilations, out, cg, mg = _conv_geometry(x, w, group, pads, strides, dilations)
    n, c = x.shape[:2]
    m = w.shape[0]
    wz = np.broadcast_to(np.asarray(0 if w_zp is None else w_zp, np.int64).reshape(-1), (m,))
    xp = np.pad(x.astype(np.int64), [(0, 0), (0, 0)] + [(pads[d], pads[d + nd]) for d in range(nd)],
                constant_values=int(x_zp))
    taps = []
    for offset in np.ndindex(*w.shape[2:]):
        index = tuple(slice(offset[d] * dilations[d], offset[d] * dilations[d] + (out[d] - 1) * strides[d] + 1,
                            strides[d]) for d in range(nd))
        taps.append(xp[(slice(None), slice(None)) + index].reshape(n, c, -1))
    cols = np.stack(taps, axis=1)                                         # [N, KK, C, L]
    y = np.empty((n, m, int(np.prod(out))), dtype=np.int64)
    for g in range(group):
        a = cols[:, :, g * cg:(g + 1) * cg].reshape(n, -1, cols.shape[-1])  # [N, K, L], k = r * Cg + c
        b = w[g * mg:(g + 1) * mg].astype(np.int64).reshape(mg, cg, -1).transpose(0, 2, 1).reshape(mg, -1)
        zg = wz[g * mg:(g + 1) * mg][None, :, None]
        if cg == 1 and mg == 1 and np.unique(wz).size == 1:
            y[:, g * mg:(g + 1) * mg] = np.einsum("nkl,mk->nml", a - int(x_zp), b - zg[0])
            continue
        if a.shape[1] % 2:
            a = np.concatenate([a, np.zeros_like(a[:, :1])], axis=1)
            b = np.concatenate([b, np.zeros_like(b[:, :1])], axis=1)
        pairs = (a[:, None, 0::2, :] * b[None, :, 0::2, None] + a[:, None, 1::2, :] * b[None, :, 1::2, None])
        raw = np.clip(pairs, -32768, 32767).sum(axis=2)
        k = cg * int(np.prod(w.shape[2:]))
        rowsum = a.sum(axis=1)[:, None, :]
        colsum = b.sum(axis=1)[None, :, None]
        y[:, g * mg:(g + 1) * mg] = raw - zg * rowsum - int(x_zp) * colsum + k * int(x_zp) * zg
    return y.astype(np.int32).reshape((n, m) + tuple(out))


def blockwise_matmul_int8_twin(a, a_scale, b, b_scale, block_size):
    """Twin of ``blockwise.blockwise_matmul_int8``: block dot products of a [M, K] and b [N, K]
    in int64 (K zero-padded to whole blocks, wrapped to int32), then y = float32 sum over the
    blocks, left to right from 0, of float32(dot) * (a_scale * b_scale)."""
    m, k = a.shape
    n = b.shape[0]
    blocks = -(-k // block_size)
    pad = ((0, 0), (0, blocks * block_size - k))
    a3 = np.pad(a.astype(np.int64), pad).reshape(m, blocks, block_size)
    b3 = np.pad(b.astype(np.int64), pad).reshape(n, blocks, block_size)
    dots = np.einsum("mbk,nbk->mnb", a3, b3).astype(np.int32)
    a_scale = np.asarray(a_scale, dtype=np.float32)
    b_scale = np.asarray(b_scale, dtype=np.float32)
    y = np.zeros((m, n), dtype=np.float32)
    for blk in range(blocks):
        y = y + dots[:, :, blk].astype(np.float32) * (a_scale[:, None, blk] * b_scale[None, :, blk])
    return y


__all__ += ["blockwise_matmul_int8_twin"]


def _horner(x, coefficients):
    r = fma32(coefficients[0], x, coefficients[1])
    for c in coefficients[2:]:
        r = fma32(r, x, c)
    return r


def erf_f32_twin(x):
    """onnxruntime's float32 erf (``mathf.erf_f32``), both branches computed everywhere."""
    from .mathf import ERF

    f32 = np.float32
    x = np.asarray(x, f32)
    a = np.abs(x)
    a = np.where(a > ERF.UPPER, ERF.UPPER, a).astype(f32)  # NaN stays NaN
    with np.errstate(all="ignore"):
        small = fma32(_horner(a * a, ERF.SMALL), a, a)
        t = -fma32(_horner(a, ERF.BIG), a, a)
        t = np.where(t < ERF.EXP_LOWER, ERF.EXP_LOWER, t).astype(f32)
        n = fma32(ERF.LOG2E, t, ERF.ROUND) - ERF.ROUND
        f = fma32(n, ERF.LN2_LO, fma32(n, ERF.LN2_HI, t))
        exp = _horner(f, ERF.EXP) * np.ldexp(f32(1), np.nan_to_num(n).astype(np.int32)).astype(f32)
        r = np.where(a > ERF.SPLIT, f32(1) - exp, small).astype(f32)
    return np.where(np.signbit(x), -r, r).astype(f32)


# ---------------------------------------------------------------- twins for refrt's twin mode
#
# ``refrt.ops._kernels`` hands these out instead of the Numba kernels when a session runs in twin
# mode (``SessionOptions.kernels = "twins"``). Each takes the arguments its kernel takes and
# returns the same bits. Packing (a kernel's private weight layout) has nothing to do in NumPy:
# the pack twins return the plain matrix, which the GEMM twins take as it is.

_LANES = 16   # the float32 lanes of the row kernels (kernels.vec.LANES)


def _plain_b(b):
    """B [K, N] from a plain array or from ``gemm.PackedB`` (whose ``bt`` is B transposed)."""
    return b.bt.T if hasattr(b, "bt") else np.asarray(b)


def pack_b_twin(b, transposed=False):
    """No packing: B [K, N] itself (``transposed``: b given as [N, K])."""
    b = _plain_b(b)
    return b.T if transposed else b


def gemm_int8_scaled_twin(a, b, a_zp=0, b_zp=0, scale=1.0, bias=None, kernel="auto"):
    """float32((a - a_zp) @ (b - b_zp)) * scale (+ bias): the exact int32 product, then the
    Cast -> Mul -> Add epilogue."""
    return scale_bias_int32_twin(gemm_int8_twin(a, _plain_b(b), a_zp, b_zp), scale, bias)


class ScaledGemmTwin:
    """``gemm.ScaledGemm`` prepares B for the AMX, VNNI and AVX2 kernels; a twin has nothing to prepare, so
    ``runs_here`` says no and the caller takes ``gemm_int8_scaled`` (the same bits)."""

    @staticmethod
    def runs_here() -> bool:
        return False


def pack_conv_weights_twin(w, group=1):
    """No packing for the convolution twin (``conv_int8_twin`` reads w as it is)."""
    return None


def conv_int8_packed_twin(x, w, x_zp=0, w_zp=0, group=1, pads=None, strides=None, dilations=None,
                          packed=None):
    """``conv_int8_twin`` with ``conv_int8``'s signature (``packed`` is ignored)."""
    return conv_int8_twin(x, w, x_zp, w_zp, group, pads, strides, dilations)


def conv_integer_s8u8_avx2_saturating_twin(x, w, x_zp=0, w_zp=0, group=1, pads=None, strides=None,
                                           dilations=None):
    """onnxruntime's ConvInteger with int8 x and uint8 w on AVX2 without VNNI: per image and group,
    A = the weights [Mg, Cg * KK] (k = c * KK + r), B = im2col of x [Cg * KK, L] (padding read as
    x_zp), C = A @ B with each pair of raw byte products saturated to int16
    (``gemm_u8s8_avx2_saturating_twin``: the weights' zero points per row, x's for every column)."""
    pads, strides, dilations, out, cg, mg = _conv_geometry(x, w, group, pads, strides, dilations)
    n, m = x.shape[0], w.shape[0]
    wz = _column(0 if w_zp is None else w_zp, m)
    w_rows = w.reshape(group, mg, -1)
    y = np.empty((n, m) + tuple(out), dtype=np.int32)
    for i in range(n):
        for g in range(group):
            cols = im2col_int8_twin(x[i, g * cg:(g + 1) * cg], w.shape[2:], pads, strides, dilations, x_zp)
            acc = gemm_u8s8_avx2_saturating_twin(w_rows[g], cols, wz[g * mg:(g + 1) * mg], int(x_zp))
            y[i, g * mg:(g + 1) * mg] = acc.reshape((mg,) + tuple(out))
    return y


def pack_blockwise_b_twin(b, block_size):
    """No packing: B [N, K] itself (``blockwise_matmul_int8_twin`` reads it as it is)."""
    return np.asarray(b)


def checked_dynamic_quantize_linear_twin(x, mode="ort"):
    """``dynamic_quantize_linear_twin`` refusing what the kernel refuses: a NaN or an infinity
    makes the range (hence scale and zero point) undefined."""
    x = np.asarray(x, dtype=np.float32)
    if x.size and np.isnan(x).any():
        raise ValueError("x contains NaN: the quantization range is undefined")
    if x.size and not np.isfinite(x).all():
        raise ValueError("x contains an infinity: the quantization range is infinite")
    return dynamic_quantize_linear_twin(x, mode)


# -- float32 kernels


def gelu_erf_f32_twin(x, divide, c, one, half, form):
    """GELU's erf form step by step, each a float32 operation: u = x / c (``divide``) or x * c;
    a = erf(u) + one (onnxruntime's erf, ``erf_f32_twin``); then the graph's grouping ``form``:
    "(x*a)*h", "(x*h)*a" or "x*(a*h)" with h = half."""
    f32 = np.float32
    x = np.asarray(x, f32)
    c, one, half = f32(c), f32(one), f32(half)
    u = x / c if divide else x * c
    a = erf_f32_twin(u) + one
    if form == "(x*a)*h":
        return (x * a) * half
    if form == "(x*h)*a":
        return (x * half) * a
    return x * (a * half)


def logistic_f32_twin(x):
    """onnxruntime's float32 sigmoid: x clamped to [-18, 18], x * p(x^2) / q(x^2) + 0.5 with
    Horner's rule in fused multiply-adds, clamped to [0, 1] (``activations.mlas_logistic``)."""
    from .activations import mlas_logistic

    return mlas_logistic(x)


def tanh_f32_twin(x):
    """onnxruntime's float32 tanh: x clamped to [-9, 9], x * p(x^2) / q(x^2) with Horner's rule
    in fused multiply-adds (``activations.mlas_tanh``)."""
    from .activations import mlas_tanh

    return mlas_tanh(x)


def clamp_f32_twin(x, lo, hi, scale=None, shift=None):
    """float32 min(max(v, lo), hi), a value replaced only where strictly beyond a bound (NaN and
    -0 against 0 kept); v = x * scale + shift first when given (``activations.clamp_f32``)."""
    f = np.float32
    v = np.asarray(x, f)
    if scale is not None:
        v = v * f(scale) + f(shift)
    v = np.where(v < f(lo), f(lo), v)
    return np.where(v > f(hi), f(hi), v).astype(f)


def batched_matmul_f32_twin(a, b):
    """a [..., M, K] @ b [..., K, N] (batch axes broadcast), each output the fused multiply-add
    over k in order from 0: c = fma(a[m, k], b[k, n], c), one rounding per step."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:])
    c = np.zeros(batch + (a.shape[-2], b.shape[-1]), np.float32)
    for k in range(a.shape[-1]):
        c = fma32(a[..., :, k:k + 1], b[..., k:k + 1, :], c)
    return c


class PlainF32:
    """What ``pack_b_f32_twin`` returns: B [K, N] itself, with the sizes ``k`` and ``n`` that
    callers of ``fgemm.pack_b_f32`` read."""

    def __init__(self, b):
        self.b = np.asarray(b, np.float32)
        self.k, self.n = self.b.shape


def pack_b_f32_twin(b):
    """No packing: B [K, N] itself (``PlainF32``)."""
    return PlainF32(b)


def _tap(x, u, v, strides, dilations, out_hw):
    """The values tap (u, v) of a 2-D window reads for every output position: a strided view
    of x's last two axes, [..., OH, OW]."""
    (sh, sw), (dh, dw), (oh, ow) = strides, dilations, out_hw
    return x[..., u * dh:u * dh + (oh - 1) * sh + 1:sh, v * dw:v * dw + (ow - 1) * sw + 1:sw]


def im2col_panels_twin(x, c0, cg, kernel, strides, dilations, out_hw, q0, q1):
    """The im2col matrix B [cg * kh * kw, q1 - q0] of x [N, C, Hp, Wp] (zero-padded): row
    (c, u, v), column q = (image, oh, ow) holds x[image, c0 + c, oh * sh + u * dh,
    ow * sw + v * dw] (``PlainF32``: no packing)."""
    kh, kw = kernel
    xs = np.asarray(x, np.float32)[:, c0:c0 + cg]
    taps = [_tap(xs, u, v, strides, dilations, out_hw)
            for u in range(kh) for v in range(kw)]                       # each [N, cg, oh, ow]
    cols = np.stack(taps, axis=2)                                         # [N, cg, kh*kw, oh, ow]
    cols = cols.transpose(1, 2, 0, 3, 4).reshape(cg * kh * kw, -1)        # [K, N*oh*ow]
    return PlainF32(np.ascontiguousarray(cols[:, q0:q1]))


def matmul_packed_f32_twin(a, packed, bias=None, k_block=0, init=None):
    """a [..., K] @ B [K, N] as fused multiply-adds over k from 0 (``batched_matmul_f32_twin``),
    over blocks of ``k_block`` values of k (0: one block) whose sums are added in turn to
    ``init`` (or the first stored), then one float32 addition of ``bias``."""
    b = packed.b
    k = b.shape[0]
    a2 = np.asarray(a, np.float32).reshape(-1, k)
    step = k if k_block <= 0 else k_block
    y = None if init is None else np.array(np.broadcast_to(
        np.asarray(init, np.float32), np.shape(a)[:-1] + (b.shape[1],)), np.float32).reshape(-1, b.shape[1])
    for k0 in range(0, k, max(step, 1)):
        block = batched_matmul_f32_twin(a2[:, k0:k0 + step], b[k0:k0 + step])
        y = block if y is None else y + block
    if y is None:
        y = np.zeros((a2.shape[0], b.shape[1]), np.float32)
    y = y.reshape(np.shape(a)[:-1] + (b.shape[1],))
    return y if bias is None else y + np.asarray(bias, np.float32)


def _lane_sums(v, lanes):
    """Per row, lane k's left-to-right float sum of v[:, k], v[:, k + lanes], ... (the row padded
    with zeros to whole blocks): [rows, lanes]."""
    rows, n = v.shape
    padded = np.zeros((rows, -(-n // lanes) * lanes), v.dtype)
    padded[:, :n] = v
    blocks = padded.reshape(rows, -1, lanes)
    return np.cumsum(blocks, axis=1, dtype=v.dtype)[:, -1, :] if blocks.shape[1] else \
        np.zeros((rows, lanes), v.dtype)


def layer_norm_rows_twin(x, scale, bias=None, epsilon=1e-5):
    """``rows.layer_norm_rows``: onnxruntime's AVX2 layer norm, one vector operation per step."""
    f32 = np.float32
    x = np.asarray(x, f32)
    rows, n = x.shape
    xd = x.astype(np.float64)
    full4 = n - n % 4
    s = _lane_sums(xd[:, :full4], 4)
    total = (s[:, 0] + s[:, 2]) + (s[:, 1] + s[:, 3])
    for j in range(full4, n):
        total = total + xd[:, j]
    mean = (total / n).astype(f32)
    d = x - mean[:, None]
    full8 = n - n % 8
    acc = np.zeros((rows, 8), f32)
    for i in range(0, full8, 8):
        acc = fma32(d[:, i:i + 8], d[:, i:i + 8], acc)
    half = acc[:, :4] + acc[:, 4:]
    sq = (half[:, 0] + half[:, 2]) + (half[:, 1] + half[:, 3])
    for j in range(full8, n):
        sq = fma32(d[:, j], d[:, j], sq)
    inv = f32(1) / np.sqrt(sq / f32(n) + f32(epsilon))
    t = d * inv[:, None]
    scale = np.asarray(scale, f32).reshape(-1)
    y = t * scale if bias is None else fma32(t, scale, np.asarray(bias, f32).reshape(-1))
    return y, mean, inv


def _logf(v):
    """The C library's logf, element by element (what onnxruntime's std::log(float) calls)."""
    import ctypes
    import ctypes.util

    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.logf.restype, libm.logf.argtypes = ctypes.c_float, [ctypes.c_float]
    return np.array([libm.logf(float(t)) for t in np.asarray(v, np.float32).reshape(-1)],
                    np.float32).reshape(np.shape(v))


def softmax_rows_twin(x, wide=False, log=False):
    """``rows.softmax_rows``: MLAS's softmax (``wide``: its AVX-512F kernel, else AVX2/FMA3)."""
    from .rows import MLAS_EXP as E

    f32 = np.float32
    x = np.asarray(x, f32)
    if x.size == 0:
        return np.empty(x.shape, f32)
    negmax = -np.max(x, axis=1, keepdims=True)
    v = x + negmax
    lower = E.LOWER_WIDE if wide else E.LOWER
    v = np.where(lower > v, lower, v).astype(f32)          # NaN stays
    biased = fma32(v, E.LOG2E, E.ROUND)
    m = biased - E.ROUND
    v = fma32(m, E.LN2_HI, v)
    v = fma32(m, E.LN2_LO, v)
    p = np.full(v.shape, E.POLY[0], f32)
    for c in E.POLY[1:]:
        p = fma32(p, v, c)
    if wide:      # vscalefps: p * 2^m, exact in float64, rounded once
        e = np.ldexp(p.astype(np.float64), np.nan_to_num(m).astype(np.int64)).astype(f32)
        e = np.where(np.isnan(m), np.float32(np.nan), e)
    else:         # 2^m from the exponent bits of the rounded sum
        e = p * ((biased.view(np.uint32) << np.uint32(23)) + np.uint32(0x3F800000)).view(f32)
    acc = _lane_sums(e, 16 if wide else 8)
    if wide:
        acc = acc[:, 8:] + acc[:, :8]
    total = ((acc[:, 0] + acc[:, 1]) + (acc[:, 2] + acc[:, 3])) + \
        ((acc[:, 4] + acc[:, 5]) + (acc[:, 6] + acc[:, 7]))
    if log:
        return (x + negmax) - _logf(total)[:, None]
    return e * (f32(1) / total)[:, None]


def add_layer_norm_rows_twin(a, b, scale, bias=None, epsilon=1e-5):
    """``layer_norm_rows_twin(a + b, ...)``: the float32 sum, then the layer norm."""
    return layer_norm_rows_twin(np.asarray(a, np.float32) + np.asarray(b, np.float32), scale, bias, epsilon)


def scale_add_softmax_rows_twin(x, c, divide, mask, wide=False):
    """softmax((x / c if divide else x * c) + mask) along the last axis, each step a float32
    operation (``softmax_rows_twin``); None where the kernel declines (not float32, x below 2-D,
    a mask that would widen x)."""
    if x.ndim < 2 or x.dtype != np.float32 or mask.dtype != np.float32:
        return None
    try:
        if np.broadcast_shapes(x.shape, mask.shape) != x.shape:
            return None
    except ValueError:
        return None
    c = np.float32(c)
    t = (x / c if divide else x * c) + mask
    return softmax_rows_twin(t.reshape(-1, x.shape[-1]), wide).reshape(x.shape)


__all__ += ["pack_b_twin", "gemm_int8_scaled_twin", "ScaledGemmTwin", "pack_conv_weights_twin",
            "conv_int8_packed_twin", "conv_integer_s8u8_avx2_saturating_twin", "pack_blockwise_b_twin",
            "checked_dynamic_quantize_linear_twin", "gelu_erf_f32_twin", "logistic_f32_twin",
            "tanh_f32_twin", "clamp_f32_twin", "batched_matmul_f32_twin", "pack_b_f32_twin", "PlainF32", "matmul_packed_f32_twin",
            "add_layer_norm_rows_twin", "scale_add_softmax_rows_twin"]


def m1_transposed_b_twin(a, bt, init):
    """``sgemm._m1_transposed_b`` (MLAS's SgemmKernelM1TransposeB) in NumPy: c[n] = a [K] .
    bt[n, :] (a may be a stack [S, K]), 8 lanes of rounded products per output, combined by the
    output's place in MLAS's blocks of 4, 2 and 1 outputs."""
    n, k = bt.shape
    a = np.asarray(a, np.float32)
    lead = a.shape[:-1]
    full = k - k % 8
    lanes = np.zeros(lead + (n, 8), np.float32)
    for i in range(0, full, 8):
        lanes = lanes + a[..., None, i:i + 8] * bt[:, i:i + 8]
    if full < k:
        tail = np.zeros(lead + (n, 8), np.float32)
        tail[..., :k - full] = a[..., None, full:] * bt[:, full:]
        lanes = lanes + tail
    l0, l1, l2, l3, l4, l5, l6, l7 = (lanes[..., j] for j in range(8))
    four = (((l0 + l1) + l2) + l3) + (((l4 + l5) + l6) + l7)
    two = ((l0 + l2) + (l4 + l6)) + ((l1 + l3) + (l5 + l7))
    one = ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))
    out = four.copy()
    rest = n - n % 4
    if n % 4 >= 2:
        out[..., rest:rest + 2] = two[..., rest:rest + 2]
        rest += 2
    if n % 2:
        out[..., rest] = one[..., rest]
    if init is not None:
        out = out + np.asarray(init, np.float32)
    return out


def sgemm_twin(a, b, init=None, **kw):
    """``sgemm.sgemm`` (MLAS's float32 GEMM order) with each K block's chain of fused
    multiply-adds computed by ``batched_matmul_f32_twin``."""
    from .sgemm import sgemm

    return sgemm(a, b, init, block_product=batched_matmul_f32_twin, m1_transposed_b=m1_transposed_b_twin, **kw)


def conv_gemm_twin(w, cols, stride_k):
    """``sgemm.conv_gemm`` with each slice's chain of fused multiply-adds computed by
    ``batched_matmul_f32_twin``."""
    from .sgemm import conv_gemm

    return conv_gemm(w, cols, stride_k, block_product=batched_matmul_f32_twin)


def m1_groups_twin(w, cols, stride_k):
    """``sgemm.m1_groups``: each group through ``conv_gemm`` (one filter: the M = 1 kernel)."""
    from .sgemm import conv_gemm

    w = np.asarray(w, np.float32)
    return np.stack([conv_gemm(w[j:j + 1], cols[j], stride_k)[0] for j in range(len(w))]) \
        if len(w) else np.zeros((0, np.shape(cols)[2]), np.float32)


def depthwise_m1_2d_twin(x, w, kernel, strides, dilations, out_shape, stride_k, pads=(0, 0, 0, 0)):
    """``sgemm.depthwise_m1_2d``: the input zero-padded, the taps gathered (im2col) and
    ``m1_groups_twin``."""
    x = np.pad(np.asarray(x, np.float32), [(0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    g = x.shape[0]
    (kh, kw), (oh, ow) = kernel, out_shape
    cols = np.empty((g, kh * kw, oh * ow), np.float32)
    for r in range(kh):
        for s in range(kw):
            cols[:, r * kw + s] = _tap(x, r, s, strides, dilations, out_shape).reshape(g, -1)
    return m1_groups_twin(w, cols, stride_k).reshape(g, oh, ow)


def sgemm_stack_twin(a, b, threads=1):
    """``sgemm.sgemm_stack`` with each K block's chain of fused multiply-adds computed by
    ``batched_matmul_f32_twin``."""
    from .sgemm import sgemm_stack

    return sgemm_stack(a, b, threads=threads, block_product=batched_matmul_f32_twin,
                       m1_transposed_b=m1_transposed_b_twin)


__all__ += ["m1_transposed_b_twin", "sgemm_twin", "conv_gemm_twin", "m1_groups_twin", "depthwise_m1_2d_twin",
            "sgemm_stack_twin"]


def exp_f32_twin(x, wide=False):
    """``activations.exp_f32``: MLAS's float32 exp, one NumPy operation per step."""
    from .activations import (
        _EXP_CAP,
        _EXP_LOWER,
        _EXP_POLY,
        _EXP_UPPER,
        _LN2_HI,
        _LN2_LO,
        _LOG2E,
        _MAX_EXPONENT,
        _MIN_EXPONENT,
        _ROUND,
    )

    f32 = np.float32
    x = np.asarray(x, f32)
    v = np.where(_EXP_LOWER > x, _EXP_LOWER, x).astype(f32)                   # NaN stays
    upper = _EXP_CAP if wide else _EXP_UPPER
    v = np.where(v > upper, upper, v).astype(f32)
    biased = fma32(v, _LOG2E, _ROUND)
    m = biased - _ROUND
    r = fma32(m, _LN2_LO, fma32(m, _LN2_HI, v))
    p = np.full(x.shape, _EXP_POLY[0], f32)
    for c in _EXP_POLY[1:]:
        p = fma32(p, r, c)
    with np.errstate(all="ignore"):
        if wide:
            e = np.ldexp(fma32(p, r, _EXP_POLY[5]).astype(np.float64),
                         np.nan_to_num(m).astype(np.int64)).astype(f32)
            return np.where(np.isnan(m), f32(np.nan), e)
        shifted = (biased.view(np.int32).astype(np.int64) << 23).astype(np.int32)
        normal = np.clip(shifted, _MIN_EXPONENT, _MAX_EXPONENT)
        overflow = (shifted.astype(np.int64) - normal + _MAX_EXPONENT).astype(np.int32).view(f32)
        return fma32(p, r * overflow, overflow) * (normal + _MAX_EXPONENT).astype(np.int32).view(f32)


__all__ += ["exp_f32_twin"]


def global_average_rows_twin(x):
    """``rows.global_average_rows``: 4 lanes left to right (cumulative sums), (0 + 2) + (1 + 3),
    the rest one by one, / n."""
    x = np.asarray(x, np.float32)
    rows, n = x.shape
    full = n - n % 4
    if full:
        lanes = np.cumsum(x[:, :full].reshape(rows, -1, 4), axis=1, dtype=np.float32)[:, -1]
        total = (lanes[:, 0] + lanes[:, 2]) + (lanes[:, 1] + lanes[:, 3])
    else:
        total = np.zeros(rows, np.float32)
    for i in range(full, n):
        total = total + x[:, i]
    return total / np.float32(n)


def window_sums_2d_twin(x, kernel, strides, dilations, pads_begin, out_shape):
    """``rows.window_sums_2d``: the input zero-padded, the window's taps added to 0 one after the
    other, row by row (an added pad is +0, which changes no partial sum that starts from 0)."""
    x = np.asarray(x, np.float32)
    (kh, kw), (sh, sw), (dh, dw), (pt, pl), (oh, ow) = kernel, strides, dilations, pads_begin, out_shape
    pb = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - pt - x.shape[1])
    pr = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - pl - x.shape[2])
    xp = np.pad(x, [(0, 0), (pt, pb), (pl, pr)])
    total = np.zeros((x.shape[0], oh, ow), np.float32)
    for u in range(kh):
        for v in range(kw):
            total = total + _tap(xp, u, v, strides, dilations, out_shape)
    return total


def window_column_sums_2d_twin(x, kernel, strides, pads_begin, out_shape):
    """``rows.window_column_sums_2d``: the input zero-padded; per window column v, its taps added
    down the rows one after the other, then the columns' sums added left to right."""
    x = np.asarray(x, np.float32)
    (kh, kw), (sh, sw), (pt, pl), (oh, ow) = kernel, strides, pads_begin, out_shape
    pb = max(0, (oh - 1) * sh + kh - pt - x.shape[1])
    pr = max(0, (ow - 1) * sw + kw - pl - x.shape[2])
    xp = np.pad(x, [(0, 0), (pt, pb), (pl, pr)])
    total = None
    for v in range(kw):
        column = _tap(xp, 0, v, strides, (1, 1), out_shape)
        for u in range(1, kh):
            column = column + _tap(xp, u, v, strides, (1, 1), out_shape)
        total = column if total is None else total + column
    return np.array(total, np.float32)


def add_windows_2d_twin(cols, strides, dilations, full_shape):
    """``rows.add_windows_2d``: per tap (u, v) in row-major order, its [OH, OW] values added to
    the strided view of the zero image that the window read them from."""
    cols = np.asarray(cols, np.float32)
    (sh, sw), (dh, dw) = strides, dilations
    planes, kh, kw, oh, ow = cols.shape
    acc = np.zeros((planes,) + tuple(full_shape), np.float32)
    for u in range(kh):
        for v in range(kw):
            acc[:, u * dh:u * dh + (oh - 1) * sh + 1:sh, v * dw:v * dw + (ow - 1) * sw + 1:sw] += cols[:, u, v]
    return acc


def eigen_row_sums_twin(x, offsets):
    """``rows.eigen_row_sums``, with NumPy operations over the rows of one alignment at a time."""
    x = np.asarray(x, np.float32)
    offsets = np.asarray(offsets, np.int64)
    n = x.shape[1]
    out = np.empty(len(x), np.float32)
    for shift in range(4):
        pick = np.flatnonzero(offsets % 4 == shift)
        if not pick.size:
            continue
        v = x[pick]
        start = min((-shift) % 4, n)
        blocks = (n - start) // 4 if n else 0
        if blocks == 0:
            total = v[:, 0].copy() if n else np.zeros(len(pick), np.float32)
            for i in range(1, n):
                total = total + v[:, i]
            out[pick] = total
            continue
        end = start + 4 * blocks
        acc0 = v[:, start:start + 4].copy()
        if blocks > 1:
            acc1 = v[:, start + 4:start + 8].copy()
            pairs_end = start + 8 * (blocks // 2)
            for i in range(start + 8, pairs_end, 8):
                acc0 = acc0 + v[:, i:i + 4]
                acc1 = acc1 + v[:, i + 4:i + 8]
            acc0 = acc0 + acc1
            if end > pairs_end:
                acc0 = acc0 + v[:, pairs_end:end]
        total = (acc0[:, 0] + acc0[:, 2]) + (acc0[:, 1] + acc0[:, 3])
        for i in list(range(start)) + list(range(end, n)):
            total = total + v[:, i]
        out[pick] = total
    return out


__all__ += ["global_average_rows_twin", "eigen_row_sums_twin", "window_column_sums_2d_twin", "add_windows_2d_twin"]


def log_f32_twin(x):
    """``activations.log_f32``: onnxruntime's (Eigen's) float32 log with NumPy's frexp, each
    multiply and add rounded on its own."""
    from .activations import LOG

    f32 = np.float32
    x = np.asarray(x, f32)
    with np.errstate(all="ignore"):
        m, e = np.frexp(x)
        m, e = m.astype(f32), e.astype(f32)
        low = m < LOG.SQRT_HALF
        e = np.where(low, e - f32(1), e).astype(f32)
        m = np.where(low, (m - f32(1)) + m, m - f32(1)).astype(f32)
        p = m * LOG.P[2] + LOG.P[1]
        p = m * p + LOG.P[0]
        p = m * p
        q = m * LOG.Q[2] + LOG.Q[1]
        q = m * q + LOG.Q[0]
        q = m * q + f32(1)
        y = (e * LOG.LN2 + p / q).astype(f32)
    y = np.where(x == np.inf, x, y)
    y = np.where(x == 0, f32(-np.inf), y)
    y = np.where(x >= 0, y, f32(np.nan)).astype(f32)
    tail = x.size - x.size % 4                # the last n mod 4 values: the C library's logf
    if tail < x.size:
        flat = y.reshape(-1)
        flat[tail:] = _logf(x.reshape(-1)[tail:])
    return y


__all__ += ["log_f32_twin"]


__all__ += ["sgemm_twin", "conv_gemm_twin", "m1_groups_twin"]


# ---------------------------------------------------------------- recurrent layers (recurrent.py)

def _rnn_gemm_twin(a, b_kn, b_nk, c, plan, accumulate):
    """``recurrent._gemm``: c (+)= a @ B over the plan's pieces (rows, columns, K block; K block
    0: the M = 1 transposed-B kernel, ``m1_transposed_b_twin``), in place."""
    kdim = a.shape[1]
    for r0, r1, n0, n1, stride in np.asarray(plan).tolist():
        init = c[r0:r1, n0:n1].copy() if accumulate else None
        if stride == 0:
            c[r0, n0:n1] = m1_transposed_b_twin(a[r0], b_nk[n0:n1], None if init is None else init[0])
            continue
        out = init
        for k0 in range(0, kdim, stride):
            block = batched_matmul_f32_twin(a[r0:r1, k0:k0 + stride], b_kn[k0:k0 + stride, n0:n1])
            out = block if out is None else out + block
        c[r0:r1, n0:n1] = out


def _clip_bias_twin(x, bias, clip):
    """onnxruntime's clip_add_bias (x + b, min(clip, .), max(-clip, .): NaN becomes clip) or,
    without a bias, clip_ignore_bias (x bounded, NaN kept)."""
    f = np.float32
    if bias is not None:
        x = (x + bias).astype(f)
        x = np.where(x < clip, x, clip).astype(f)
        return np.where(-clip < x, x, -clip).astype(f)
    return np.where(x > clip, clip, np.where(x < -clip, -clip, x)).astype(f)


def _mlas_act_twin(code, x):
    from .activations import mlas_logistic, mlas_tanh

    return mlas_logistic(x) if code == 0 else mlas_tanh(x)


def _poly_tanh_twin(x):
    """onnxruntime's rnn_helpers tanh polynomial: MLAS's tanh coefficients, separate multiplies
    and adds (each rounded), no bound."""
    from .recurrent import GRU_TANH, GRU_TANH_Q

    f = np.float32
    x = np.asarray(x, f)
    x2 = x * x
    p = x2 * GRU_TANH[0] + GRU_TANH[1]
    for c in GRU_TANH[2:]:
        p = x2 * p + c
    q = x2 * GRU_TANH_Q[0] + GRU_TANH_Q[1]
    for c in GRU_TANH_Q[2:]:
        q = x2 * q + c
    return ((x * p) / q).astype(f)


def _bound_twin(x, b):
    return np.where(x < -b, -b, np.where(x > b, b, x)).astype(np.float32)


def lstm_layer_twin(x, w_kn, w_nk, plan_x, r_kn, r_nk, plan_r, bias, peep, h0, c0, lens, acts,
                    clip, input_forget):
    """``recurrent.lstm_layer`` step by step in NumPy (each gate's value as onnxruntime forms it:
    (X W^T + H R^T) + P (.) C, + (Wb + Rb), clipped, MLAS's logistic/tanh)."""
    f = np.float32
    seq, batch, _ = x.shape
    hidden = h0.shape[1]
    steps = int(lens.max()) if lens.size else 0
    clip = f(clip)
    xw = np.zeros((steps * batch, 4 * hidden), f)
    _rnn_gemm_twin(np.asarray(x[:steps], f).reshape(steps * batch, -1), w_kn, w_nk, xw, plan_x, False)
    y = np.zeros((seq, batch, hidden), f)
    h, c = np.array(h0, f), np.array(c0, f)
    part = [slice(k * hidden, (k + 1) * hidden) for k in range(4)]      # i, o, f, c
    bias_of = (lambda k: None) if bias is None else (lambda k: bias[part[k]])
    for t in range(steps):
        gates = xw[t * batch:(t + 1) * batch]
        _rnn_gemm_twin(h, r_kn, r_nk, gates, plan_r, True)
        live = t < lens
        gi, go, gf, gc = (gates[:, p] for p in part)
        if peep is not None:
            gi = gi + c * peep[:hidden]
        i = _mlas_act_twin(acts[0], _clip_bias_twin(gi, bias_of(0), clip))
        if input_forget:
            fg = (f(1) - i).astype(f)
        else:
            if peep is not None:
                gf = gf + c * peep[2 * hidden:]
            fg = _mlas_act_twin(acts[0], _clip_bias_twin(gf, bias_of(2), clip))
        g = _mlas_act_twin(acts[1], _clip_bias_twin(gc, bias_of(3), clip))
        cn = (c * fg + i * g).astype(f)
        if peep is not None:
            go = go + cn * peep[hidden:2 * hidden]
        o = _mlas_act_twin(acts[0], _clip_bias_twin(go, bias_of(1), clip))
        hn = (_mlas_act_twin(acts[2], cn) * o).astype(f)
        c = np.where(live[:, None], cn, c)
        h = np.where(live[:, None], hn, h)
        y[t] = np.where(live[:, None], hn, 0)
    done = (lens > 0)[:, None]
    return y, np.where(done, h, 0).astype(f), np.where(done, c, 0).astype(f)


def gru_layer_twin(x, w_kn, w_nk, plan_x, r_kn, r_nk, plan_zr, plan_h, b, h0, lens, acts, clip,
                   linear_before_reset):
    """``recurrent.gru_layer`` step by step in NumPy."""
    f = np.float32
    seq, batch, _ = x.shape
    hh = h0.shape[1]
    steps = int(lens.max()) if lens.size else 0
    clip = f(clip)
    xw = np.zeros((steps * batch, 3 * hh), f)
    _rnn_gemm_twin(np.asarray(x[:steps], f).reshape(steps * batch, -1), w_kn, w_nk, xw, plan_x, False)
    rzr_kn, rzr_nk = r_kn[:, :2 * hh], r_nk[:2 * hh]
    rh_kn, rh_nk = r_kn[:, 2 * hh:], r_nk[2 * hh:]
    if b is None:
        bz = br = bh = rbh = None
    else:
        bz = (b[:hh] + b[3 * hh:4 * hh]).astype(f)
        br = (b[hh:2 * hh] + b[4 * hh:5 * hh]).astype(f)
        rbh = b[5 * hh:]
        bh = b[2 * hh:3 * hh] if linear_before_reset else (b[2 * hh:3 * hh] + rbh).astype(f)
    y = np.zeros((seq, batch, hh), f)
    h = np.array(h0, f)
    for t in range(steps):
        rows = xw[t * batch:(t + 1) * batch]
        zr = rows[:, :2 * hh].copy()
        _rnn_gemm_twin(h, rzr_kn, rzr_nk, zr, plan_zr, True)
        if linear_before_reset:
            lin = np.zeros((batch, hh), f) if rbh is None else np.array(np.broadcast_to(rbh, (batch, hh)), f)
            _rnn_gemm_twin(h, rh_kn, rh_nk, lin, plan_h, rbh is not None)
        r = _clip_bias_twin(zr[:, hh:], br, clip)
        if acts[0] == 0:     # sigmoid(x) = 0.5 (1 + tanh(x / 2)), x bounded to [-20, 20]
            r = (f(0.5) * (f(1) + _poly_tanh_twin(f(0.5) * _bound_twin(r, f(20))))).astype(f)
        else:
            r = _poly_tanh_twin(_bound_twin(r, f(10)))
        cand = rows[:, 2 * hh:].copy()
        if linear_before_reset:
            cand = (cand + lin * r).astype(f)
        else:
            _rnn_gemm_twin((h * r).astype(f), rh_kn, rh_nk, cand, plan_h, True)
        z = _mlas_act_twin(acts[0], _clip_bias_twin(zr[:, :hh], bz, clip))
        v = _clip_bias_twin(cand, bh, clip)
        if acts[1] == 0:
            s = _poly_tanh_twin(f(0.5) * _bound_twin(v, f(20)))
            hn = (((f(1) - z) * f(0.5)).astype(f) * (f(1) + s) + z * h).astype(f)
        else:
            hn = ((f(1) - z) * _poly_tanh_twin(_bound_twin(v, f(10))) + z * h).astype(f)
        live = (t < lens)[:, None]
        h = np.where(live, hn, h)
        y[t] = np.where(live, hn, 0)
    return y, np.where((lens > 0)[:, None], h, 0).astype(f)


def _expf_twin(x):
    """The C library's float32 exp, element by element (what onnxruntime's RNN functors and
    Numba's ``math.exp`` on float32 call)."""
    import ctypes
    import ctypes.util

    lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    lib.expf.restype, lib.expf.argtypes = ctypes.c_float, [ctypes.c_float]
    x = np.asarray(x, np.float32)
    return np.array([lib.expf(float(v)) for v in x.reshape(-1)], np.float32).reshape(x.shape)


def _rnn_act_twin(code, x):
    f = np.float32

    def sigmoid(v):
        e_neg, e_pos = _expf_twin(-v), _expf_twin(v)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.where(v >= 0, f(1) / (f(1) + e_neg), e_pos / (f(1) + e_pos)).astype(f)

    if code == 1:
        return (f(2) * sigmoid((f(2) * x).astype(f)) - f(1)).astype(f)
    if code == 0:
        return sigmoid(x)
    return np.where(f(0) < x, x, f(0)).astype(f)


def rnn_layer_twin(x, w_kn, w_nk, plan_x, r_kn, r_nk, plan_r, bias, h0, lens, reverse, act, clip):
    """``recurrent.rnn_layer`` step by step in NumPy."""
    f = np.float32
    seq, batch, _ = x.shape
    hidden = r_nk.shape[1]
    clip = f(clip)
    xw = np.zeros((seq * batch, hidden), f) + (f(0) if bias is None else bias)
    _rnn_gemm_twin(np.asarray(x, f).reshape(seq * batch, -1), w_kn, w_nk, xw, plan_x, True)
    y = np.zeros((seq, batch, hidden), f)
    h = np.zeros((batch, hidden), f) if h0 is None else np.array(h0, f)
    for s in range(seq):
        t = seq - 1 - s if reverse else s
        frame = np.zeros((batch, hidden), f)
        if s > 0 or h0 is not None:
            _rnn_gemm_twin(h, r_kn, r_nk, frame, plan_r, False)
        v = (frame + xw[t * batch:(t + 1) * batch]).astype(f)
        if clip >= 0:
            v = np.where(clip < v, clip, v)
            v = np.where(v < -clip, -clip, v).astype(f)
        live = (t < lens)[:, None]
        hn = _rnn_act_twin(act, v)
        h = np.where(live, hn, h)
        y[t] = np.where(live, hn, 0)
    return y, np.where((lens > 0)[:, None], h, 0).astype(f)


__all__ += ["lstm_layer_twin", "gru_layer_twin", "rnn_layer_twin"]
