"""Row kernels for float32 [rows, n] arrays: layer normalization and softmax over the last axis,
with onnxruntime's arithmetic (its MLAS kernels), so that refrt's default "ort" numerics give
onnxruntime's bits.

    layer norm:  mean = sum(x) / n,  var = sum((x - mean)^2) / n,  inv_std = 1 / sqrt(var + eps)
                 y = (x - mean) * inv_std * scale + bias
    softmax:     m = max(x),  e = exp(x - m),  y = e * (1 / sum(e))
    log-softmax: y = (x - m) - log(sum(e))

Rows are independent, so ``prange`` hands them to the threads.

**Why the kernels spell out their order.** A float32 sum's result depends on the order of its
additions; LLVM keeps a loop's order unless told otherwise (fast-math), and onnxruntime's kernels
each have an order of their own: SIMD lanes, then the lanes combined in a fixed pattern. The
kernels below write that order out, with scalar code or with the 16-lane float32 vector type of
``vec.py`` (``VEC``, an LLVM ``<16 x float>``, and intrinsics such as ``load``, ``add``,
``fma``), so every result is the same bits on every x86 CPU and can be reproduced in NumPy
(``kernels/twins.py`` does, and the tests compare both bit for bit). No multiply-add is fused
except where ``fma`` is written.

**Layer normalization** (``_layer_norm_row``) is onnxruntime's AVX2 kernel: the mean from a
float64 sum, the variance from the centered squares in 8 float32 lanes of fused multiply-adds, a
fused multiply-add for the scale and bias. On these inputs it matched onnxruntime 1.32 on every
row of 8 or more values whose length leaves 0-3 values past the last 8-block, and about 98% of the
rows leaving 4-7 (the order of that remainder could not be pinned down); docs/NUMERICS.md has the
details.

**Softmax** (``_mlas_softmax_row``) is MLAS's: its float32 exp polynomial (``MLAS_EXP``) on x - max,
the sum in 16 lanes (onnxruntime's AVX-512F kernel, ``wide``) or 8 lanes (its AVX2/FMA3 kernel),
the lanes folded in a fixed pattern, then e * (1 / sum), or (x - max) - logf(sum) for
log-softmax. The caller picks ``wide`` from the CPU, as onnxruntime does. A NaN or +inf in a row
makes the whole row NaN.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types

from .mathf import fma as fma1
from .vec import (
    LANES,
    add,
    add_halves,
    div,
    fma,
    horner,
    keep_first,
    lane,
    lanes_max,
    load,
    load_first,
    load_halves,
    maximum,
    mlas_fold,
    mul,
    pow2_of_integer,
    pow2_of_rounded,
    splat,
    square_halves,
    store,
    store_first,
    sub,
)

__all__ = ["layer_norm_rows", "add_layer_norm_rows", "softmax_rows", "scale_add_softmax_rows",
           "global_average_rows", "eigen_row_sums", "window_column_sums_2d", "add_windows_2d", "row_view", "LANES", "MLAS_EXP"]

_F = np.float32
_ONE = _F(1.0)


# --------------------------------------------------------------------------- layer normalization

@njit(inline="always")
def _layer_norm_row(xr, yr, scale, bias, has_bias, eps, n):
    """One row: yr = layer norm of xr (yr may be xr itself); returns (mean, inv_std).

    onnxruntime's AVX2 layer-norm kernel (MLAS), step for step:

    * mean: the row summed in float64 (4 lanes, combined (0 + 2) + (1 + 3), then the tail),
      divided by n, rounded to float32;
    * sum of squared deviations in float32: d = x - mean, 8 lanes of fused multiply-adds
      d * d + acc, lanes combined in halves (k + 4, k + 2, k + 1), then the tail's elements
      one fused multiply-add each;
    * inv_std = 1 / sqrt(sum / n + eps), each step rounded to float32;
    * y = fma((x - mean) * inv_std, scale, bias), or (x - mean) * inv_std * scale without bias.
    """
    s0 = s1 = s2 = s3 = 0.0
    i = 0
    while i + 4 <= n:
        s0 += np.float64(xr[i])
        s1 += np.float64(xr[i + 1])
        s2 += np.float64(xr[i + 2])
        s3 += np.float64(xr[i + 3])
        i += 4
    total = (s0 + s2) + (s1 + s3)
    for j in range(i, n):
        total += np.float64(xr[j])
    m = _F(total / n)

    full16 = n - n % LANES
    mv = splat(m)
    acc = splat(_F(0.0))                     # lanes 0..7: MLAS's 8 lanes
    for i in range(0, full16, LANES):
        acc = square_halves(acc, sub(load(xr, i), mv))
    full = n - n % 8
    if full > full16:                        # one more block of 8: the low half only
        acc = square_halves(acc, keep_first(sub(load_first(xr, full16, 8, m), mv), 8))
    sq = ((lane(acc, 0) + lane(acc, 4)) + (lane(acc, 2) + lane(acc, 6))) + \
        ((lane(acc, 1) + lane(acc, 5)) + (lane(acc, 3) + lane(acc, 7)))
    for j in range(full, n):
        d = xr[j] - m
        sq = fma1(d, d, sq)
    inv = _ONE / np.sqrt(sq / _F(n) + eps)

    iv = splat(inv)
    tail = n - full16
    for i in range(0, full16, LANES):
        t = mul(sub(load(xr, i), mv), iv)
        store(yr, i, fma(t, load(scale, i), load(bias, i)) if has_bias else mul(t, load(scale, i)))
    if tail:
        t = mul(sub(load_first(xr, full16, tail, m), mv), iv)
        s_ = load_first(scale, full16, tail, _F(0.0))
        y = fma(t, s_, load_first(bias, full16, tail, _F(0.0))) if has_bias else mul(t, s_)
        store_first(yr, full16, tail, y)
    return m, inv


@njit(cache=True, parallel=True)
def _layer_norm_kernel(x, scale, bias, has_bias, epsilon, y, mean, inv_std):
    rows, n = x.shape
    eps = _F(epsilon)
    for r in prange(rows):
        mean[r], inv_std[r] = _layer_norm_row(x[r], y[r], scale, bias, has_bias, eps, n)


@njit(cache=True, parallel=True)
def _add_layer_norm_kernel(a, b, scale, bias, has_bias, epsilon, y, mean, inv_std):
    """Rows of a + b (float32 sums, written to y first), then layer-normalized in place."""
    rows, n = a.shape
    eps = _F(epsilon)
    full = n - n % LANES
    tail = n - full
    for r in prange(rows):
        ar, br, yr = a[r], b[r], y[r]
        for i in range(0, full, LANES):
            store(yr, i, add(load(ar, i), load(br, i)))
        if tail:
            store_first(yr, full, tail, add(load_first(ar, full, tail, _F(0.0)),
                                            load_first(br, full, tail, _F(0.0))))
        mean[r], inv_std[r] = _layer_norm_row(yr, yr, scale, bias, has_bias, eps, n)


def _vector(v, n, what):
    v = np.ascontiguousarray(v, dtype=np.float32)
    if v.ndim != 1:
        v = v.reshape(-1)
    if v.shape[0] != n:
        raise ValueError(f"layer_norm_rows: {what} must have {n} values, got {v.shape[0]}")
    return v


def layer_norm_rows(x, scale, bias=None, epsilon=1e-5):
    """Layer normalization of each row of a 2-D float32 array, in float32.

    x: [rows, n]; scale, bias (optional): n values. Returns (y [rows, n], mean [rows],
    inv_std [rows]), all float32, with inv_std = 1 / sqrt(var + float32(epsilon)) and the
    population variance.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"layer_norm_rows: x must be [rows, n] with n >= 1, got {list(x.shape)}")
    params, outs = _layer_norm_buffers(x.shape, scale, bias)
    if x.shape[0]:
        _layer_norm_kernel(x, *params, float(epsilon), *outs)
    return outs


def _layer_norm_buffers(shape, scale, bias):
    """((scale, bias, has_bias) as the kernels take them, (y, mean, inv_std) to fill)."""
    rows, n = shape
    scale = _vector(scale, n, "scale")
    has_bias = bias is not None
    bias = _vector(bias, n, "bias") if has_bias else scale  # scale: a stand-in, not read
    outs = (np.empty((rows, n), np.float32), np.empty(rows, np.float32), np.empty(rows, np.float32))
    return (scale, bias, has_bias), outs


def add_layer_norm_rows(a, b, scale, bias=None, epsilon=1e-5):
    """``layer_norm_rows(a + b, ...)`` for two float32 [rows, n] arrays of one shape, in one pass
    over memory: each sum is the float32 a + b (so the result has the same bits as the Add then
    the layer norm), and it is never written to a separate array."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    if a.ndim != 2 or a.shape != b.shape or a.shape[1] < 1:
        raise ValueError(f"add_layer_norm_rows: a and b must be [rows, n] of one shape with n >= 1, "
                         f"got {list(a.shape)} and {list(b.shape)}")
    params, outs = _layer_norm_buffers(a.shape, scale, bias)
    if a.shape[0]:
        _add_layer_norm_kernel(a, b, *params, float(epsilon), *outs)
    return outs


# --------------------------------------------------------------------------- softmax

class MLAS_EXP:
    """The constants of onnxruntime's (MLAS's) float32 exp in its softmax kernels."""

    LOWER_WIDE = _F(-103.9720840454)     # AVX-512 kernel: clamp, then an exact scaling by 2^m
    LOWER = _F(-88.3762626647949)        # AVX2/FMA3 kernel: clamp, then 2^m from exponent bits
    ROUND = _F(12582912.0)               # 1.5 * 2^23: adding it rounds to an integer
    LOG2E = _F(1.44269504088896341)
    LN2_HI = _F(-6.93145752e-1)
    LN2_LO = _F(-1.42860677e-6)
    POLY = (_F(float.fromhex("0x1.694000p-10")), _F(float.fromhex("0x1.125edcp-7")),
            _F(float.fromhex("0x1.555b5ap-5")), _F(float.fromhex("0x1.555450p-3")),
            _F(float.fromhex("0x1.fffff6p-2")), _F(1.0), _F(1.0))


_M_LOWER_WIDE, _M_LOWER, _M_ROUND = MLAS_EXP.LOWER_WIDE, MLAS_EXP.LOWER, MLAS_EXP.ROUND
_M_LOG2E, _M_LN2_HI, _M_LN2_LO = MLAS_EXP.LOG2E, MLAS_EXP.LN2_HI, MLAS_EXP.LN2_LO
_M_P0, _M_P1, _M_P2, _M_P3, _M_P4, _M_P5, _M_P6 = MLAS_EXP.POLY


_M_POLY = (_M_P0, _M_P1, _M_P2, _M_P3, _M_P4, _M_P5, _M_P6)


@njit(inline="always")
def _mlas_exp_shifted_vec(x, negmax, wide):
    """e^(x + negmax) on 16 lanes, as MLAS's softmax kernels compute it (x + negmax <= 0):

        v = max(LOWER, x + negmax);  m = round(v / ln 2) by adding 1.5 * 2^23 in an fma
        r = v + m * LN2_HI + m * LN2_LO                  (two fmas)
        p = ((((P0 r + P1) r + P2) r + P3) r + P4) r + 1) r + 1   (Horner in fmas)
        e = p * 2^m

    ``wide`` (the AVX-512F kernel): LOWER = -103.97 and 2^m an exact scaling (vscalefps, so results
    reach the subnormals); otherwise (the AVX2/FMA3 kernel) LOWER = -88.38 and 2^m is built in
    the exponent bits ((biased << 23) + bits of 1.0), which gives 0 for m = -127."""
    v = add(x, negmax)
    v = maximum(splat(_M_LOWER_WIDE if wide else _M_LOWER), v)
    biased = fma(v, splat(_M_LOG2E), splat(_M_ROUND))
    m = sub(biased, splat(_M_ROUND))
    v = fma(m, splat(_M_LN2_HI), v)
    v = fma(m, splat(_M_LN2_LO), v)
    p = horner(v, _M_POLY)
    if wide:      # p * 2^m in two exact-then-rounded steps (m >= -150): vscalefps
        m1 = maximum(m, splat(_F(-125.0)))
        return mul(mul(p, pow2_of_integer(m1)), pow2_of_integer(sub(m, m1)))
    return mul(p, pow2_of_rounded(biased))


@njit(inline="always")
def _mlas_softmax_row(xr, yr, n, wide, log):
    """yr = softmax(xr) (``log``: log-softmax) as onnxruntime's MLAS kernels compute a row:

    * max over the row; negmax = -max (a NaN in the row makes it NaN whatever the max is);
    * e_i = ``_mlas_exp_shifted_vec(x_i, negmax)``; the sum in lanes: lane k adds e_k, e_(k + L),
      ... left to right, L = 16 (``wide``, AVX-512F) or 8 (AVX2/FMA3); the 16 lanes are first
      folded to 8 (lane k + lane k + 8); then ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
    * softmax: y_i = e_i * (1 / sum); log-softmax: y_i = (x_i + negmax) - log(sum) with the C
      library's logf, as onnxruntime's std::log."""
    full = n - n % LANES
    tail = n - full
    neg_inf = _F(-np.inf)
    top = splat(neg_inf)
    for i in range(0, full, LANES):
        top = maximum(top, load(xr, i))
    if tail:
        top = maximum(top, load_first(xr, full, tail, neg_inf))
    negmax = -lanes_max(top)
    nv = splat(negmax)
    accv = splat(_F(0.0))
    for i in range(0, full, LANES):
        e = _mlas_exp_shifted_vec(load(xr, i), nv, wide)
        if not log:
            store(yr, i, e)
        accv = add(accv, e) if wide else add_halves(accv, e)
    if tail:
        e = keep_first(_mlas_exp_shifted_vec(load_first(xr, full, tail, _F(0.0)), nv, wide), tail)
        if not log:
            store_first(yr, full, tail, e)
        accv = add(accv, e) if wide else add_halves(accv, e)
    total = mlas_fold(accv, True) if wide else mlas_fold(accv, False)
    if log:
        lg = np.log(total)
        for i in range(n):
            yr[i] = (xr[i] + negmax) - lg
    else:
        sv = splat(_ONE / total)
        for i in range(0, full, LANES):
            store(yr, i, mul(load(yr, i), sv))
        if tail:
            store_first(yr, full, tail, mul(load_first(yr, full, tail, _F(0.0)), sv))


@njit(inline="always")
def _softmax_row(xr, yr, n, wide):
    _mlas_softmax_row(xr, yr, n, wide, False)


@njit(cache=True, parallel=True)
def _softmax_kernel(x, y, wide, log):
    rows, n = x.shape
    for r in prange(rows):
        _mlas_softmax_row(x[r], y[r], n, wide, log)


@njit(cache=True, parallel=True)
def _scale_add_softmax_kernel(x, c, divide, mask, mask_offs, mask_ld, per_matrix, wide, y):
    """y[r] = softmax((x[r] * c or x[r] / c) + mask row) with the two float32 roundings of the
    Mul/Div and Add nodes, then ``_softmax_row`` in place; row r's mask starts at
    mask[mask_offs[r // per_matrix] + (r % per_matrix) * mask_ld]."""
    rows, n = x.shape
    full = n - n % LANES
    tail = n - full
    cv = splat(c)
    for r in prange(rows):
        xr = x[r]
        yr = y[r]
        mo = mask_offs[r // per_matrix] + (r % per_matrix) * mask_ld
        mr = mask[mo:mo + n]
        for i in range(0, full, LANES):
            v = load(xr, i)
            store(yr, i, add(div(v, cv) if divide else mul(v, cv), load(mr, i)))
        if tail:
            v = load_first(xr, full, tail, _F(0.0))
            t = add(div(v, cv) if divide else mul(v, cv), load_first(mr, full, tail, _F(0.0)))
            store_first(yr, full, tail, t)
        _softmax_row(yr, yr, n, wide)


def row_view(x, batch: tuple):
    """A float32 stack x [..., R, C] (batch axes broadcast to ``batch``) whose rows are contiguous
    (last stride one element, the others non-negative multiples of it) as (read-only flat view
    starting at x's first element, offset of each matrix [nb], row stride), without copying;
    None for any other layout."""
    if x.size and x.dtype == np.float32 and x.flags.c_contiguous and x.shape[:-2] == batch:
        # the common case, without broadcast_to and as_strided (tens of µs of NumPy's Python)
        flat = x.reshape(-1)
        flat.flags.writeable = False
        r, c = x.shape[-2:]
        return flat, np.arange(x.size // (r * c), dtype=np.int64) * (r * c), c
    xs = np.broadcast_to(x, batch + x.shape[-2:])
    item = xs.itemsize
    if xs.dtype != np.float32 or (xs.shape[-1] > 1 and xs.strides[-1] != item):
        return None
    if any(st < 0 or st % item for st in xs.strides):
        return None
    strides = [st // item for st in xs.strides]
    span = 1 + sum((d - 1) * st for d, st in zip(xs.shape, strides))
    flat = np.lib.stride_tricks.as_strided(xs, shape=(span,), strides=(item,), writeable=False)
    offs = np.zeros((), np.int64)
    for d, st in zip(batch, strides[:-2]):
        offs = offs[..., None] + np.arange(d, dtype=np.int64) * st
    return flat, offs.reshape(-1), strides[-2]


def scale_add_softmax_rows(x, c, divide: bool, mask, wide: bool = False):
    """softmax(x * c + mask) (``divide``: x / c + mask) along the last axis, each step a float32
    operation rounded once, as a Mul (or Div), an Add and a Softmax node give it (the softmax is
    ``softmax_rows``'). x float32 [..., R, n] (at least 2-D), c a float32 scalar, mask float32
    broadcasting to x's shape without widening it (attention's [B, 1, 1, S] bias). Returns a new
    array, or None where the layouts do not fit (the caller runs the nodes)."""
    if x.ndim < 2 or x.dtype != np.float32 or mask.dtype != np.float32:
        return None
    try:
        if np.broadcast_shapes(x.shape, mask.shape) != x.shape:
            return None
    except ValueError:
        return None
    view = row_view(np.broadcast_to(mask, x.shape), x.shape[:-2])
    if view is None:
        return None
    flat, offs, ld = view
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    y = np.empty(x2.shape, np.float32)
    if x2.size:
        _scale_add_softmax_kernel(x2, np.float32(c), bool(divide), flat, offs, ld, x.shape[-2],
                                  bool(wide), y)
    return y.reshape(x.shape)


def softmax_rows(x, wide: bool = False, log: bool = False) -> np.ndarray:
    """Softmax (``log``: log-softmax) of each row of a 2-D float32 array, in float32, as
    onnxruntime's MLAS kernel for AVX-512F CPUs (``wide``) or for AVX2/FMA3 CPUs computes it:
    a new [rows, n] array."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"softmax_rows: x must be [rows, n], got {list(x.shape)}")
    y = np.empty(x.shape, np.float32)
    if x.size:
        _softmax_kernel(x, y, bool(wide), bool(log))
    return y


def _vector_instructions(names=("vaddps", "vmulps", "vfmadd213ps", "vmaxps", "vmovups")) -> dict:
    """Count selected instructions (any register width) in fresh (uncached) compiles."""
    import re

    f2, f1 = types.float32[:, ::1], types.float32[::1]
    layer_norm_sig = (f2, f1, f1, types.boolean, types.float64, f2, f1, f1)
    counts = {}
    softmax_sig = (f2, f2, types.boolean, types.boolean)
    for kernel, sig in ((_layer_norm_kernel, layer_norm_sig), (_softmax_kernel, softmax_sig)):
        fresh = njit(cache=False, parallel=True)(kernel.py_func)
        fresh.compile(sig)
        asm = "\n".join(fresh.inspect_asm().values())
        counts[kernel.__name__] = {
            name: {reg: len(re.findall(rf"\b{name}\b[^\n]*%{reg}", asm)) for reg in ("zmm", "ymm")}
            for name in names}
    return counts


# --------------------------------------------------------------------------- pooling and reduction sums

@njit(inline="always")
def _lane_sums4(x, r0, nr, full, acc):
    """acc[4 q + l] = x[r0 + q, l] + x[r0 + q, l + 4] + ... (left to right, up to ``full``) for
    the ``nr`` rows from r0: with nr = 4 (a constant), 16 independent chains of additions, where
    one row's 4 would wait on each other's latency."""
    acc[:] = 0
    for i in range(0, full, 4):
        for q in range(nr):
            for j in range(4):
                acc[q * 4 + j] += x[r0 + q, i + j]


@njit(cache=True, parallel=True)
def _global_average_kernel(x, out):
    rows, n = x.shape
    full = n - n % 4
    for g in prange((rows + 3) // 4):
        r0 = g * 4
        nr = min(4, rows - r0)
        acc = np.empty(16, np.float32)
        if nr == 4:
            _lane_sums4(x, r0, 4, full, acc)
        else:
            _lane_sums4(x, r0, nr, full, acc)
        for q in range(nr):
            total = (acc[q * 4] + acc[q * 4 + 2]) + (acc[q * 4 + 1] + acc[q * 4 + 3])
            for i in range(full, n):
                total += x[r0 + q, i]
            out[r0 + q] = total / _F(n)


def global_average_rows(x) -> np.ndarray:
    """The mean of each row of float32 x [rows, n] as MLAS's global average pooling computes it:
    4 lanes (lane k adds values k, k + 4, ...), combined (0 + 2) + (1 + 3), then the last n mod 4
    values one by one, divided by n."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape[0], np.float32)
    if x.shape[0]:
        _global_average_kernel(x, out)
    return out


@njit(cache=True, parallel=True)
def _window_sums_kernel(x, out, kh, kw, sh, sw, dh, dw, pt, pl):
    planes, h, w = x.shape
    _, oh, ow = out.shape
    for t in prange(planes * oh):
        p, a = t // oh, t % oh
        acc = out[p, a]
        acc[:] = 0
        # tap by tap (row u, then column v), each added to the whole output row at once: every
        # output still adds its window's cells in row-major order
        for u in range(kh):
            i = a * sh - pt + u * dh
            if i < 0 or i >= h:
                continue
            for v in range(kw):
                j0 = v * dw - pl                           # column read by output b: b * sw + j0
                b0 = max(0, (-j0 + sw - 1) // sw)
                b1 = min(ow, (w - j0 + sw - 1) // sw)
                if b1 <= b0:
                    continue
                src = x[p, i, b0 * sw + j0:(b1 - 1) * sw + j0 + 1:sw]
                dst = acc[b0:b1]
                for b in range(dst.shape[0]):
                    dst[b] += src[b]


def window_sums_2d(x, kernel, strides, dilations, pads_begin, out_shape) -> np.ndarray:
    """Per output position of a 2-D pooling window over float32 x [planes, H, W], the sum of the
    window's cells inside x, from 0, added row by row and left to right (onnxruntime's generic
    pooling loops; the padding is skipped, not added) -> [planes, OH, OW]."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0],) + tuple(out_shape), np.float32)
    if out.size:
        _window_sums_kernel(x, out, kernel[0], kernel[1], strides[0], strides[1], dilations[0],
                            dilations[1], pads_begin[0], pads_begin[1])
    return out


@njit(inline="always")
def _column_cells(col, c0, ow, xf, row, i, h, w, j0, sw, inside, first):
    """col[c0 + b] = (col[c0 + b] +) the cell of row i, column b * sw + j0 of the plane starting
    at xf[row], for every output b < ow of the row; a cell outside the plane counts as +0 (added,
    as MLAS adds its padding). ``inside``: the outputs [b0, b1) whose column is in the plane.
    Flat arrays and offsets: no array views in the loop."""
    zero = np.float32(0.0)
    b0, b1 = ow, ow
    if 0 <= i < h:
        b0, b1 = inside
    start = row + i * w + j0
    # the cells inside as views indexed from 0 (so the loops vectorize, without Numba's check
    # for negative indices)
    dst = col[c0 + b0:c0 + b1]
    for b in range(b0):
        col[c0 + b] = zero if first else col[c0 + b] + zero
    if b1 > b0 and sw == 1:
        _row_into(dst, xf[start + b0:start + b1], first)       # contiguous: vectorized
    elif b1 > b0:
        _row_into(dst, xf[start + b0 * sw:start + (b1 - 1) * sw + 1:sw], first)
    for b in range(b1, ow):
        col[c0 + b] = zero if first else col[c0 + b] + zero


@njit(inline="always")
def _row_into(dst, src, first):
    """dst = src (first) or dst += src, element by element."""
    if first:
        for b in range(dst.shape[0]):
            dst[b] = src[b]
    else:
        for b in range(dst.shape[0]):
            dst[b] += src[b]


@njit(cache=True, parallel=True)
def _window_column_sums_kernel(xf, outf, planes, h, w, oh, ow, kh, kw, sh, sw, pt, pl):
    """outf, flat [planes, OH, OW]: per output row, window column v's cells summed down the
    kernel's rows into a scratch row (into the output itself for v = 0), then added to the
    output."""
    inside = np.empty((kw, 2), np.int64)       # per window column: outputs reading inside
    for v in range(kw):
        j0 = v - pl
        b0 = min(ow, max(0, (-j0 + sw - 1) // sw))
        inside[v, 0], inside[v, 1] = b0, max(b0, min(ow, (w - j0 + sw - 1) // sw))
    rows = max(1, min(oh, 4096 // max(1, ow)))        # output rows per task
    per_plane = (oh + rows - 1) // rows
    for t in prange(planes * per_plane):
        p, a0 = t // per_plane, (t % per_plane) * rows
        col = np.empty(ow, np.float32)
        for a in range(a0, min(oh, a0 + rows)):
            o0 = (p * oh + a) * ow
            for u in range(kh):
                _column_cells(outf, o0, ow, xf, p * h * w, a * sh - pt + u, h, w, -pl, sw,
                              (inside[0, 0], inside[0, 1]), u == 0)
            for v in range(1, kw):
                for u in range(kh):
                    _column_cells(col, 0, ow, xf, p * h * w, a * sh - pt + u, h, w, v - pl, sw,
                                  (inside[v, 0], inside[v, 1]), u == 0)
                total = outf[o0:o0 + ow]
                for b in range(ow):
                    total[b] += col[b]


@njit(cache=True, parallel=True)
def _add_windows_kernel(cols, acc, sh, sw, dh, dw):
    planes, kh, kw, oh, ow = cols.shape
    for p in prange(planes):
        for u in range(kh):
            for v in range(kw):
                for a in range(oh):
                    src = cols[p, u, v, a]
                    dst = acc[p, u * dh + a * sh, v * dw:v * dw + (ow - 1) * sw + 1:sw]
                    for b in range(ow):
                        dst[b] += src[b]


def add_windows_2d(cols, strides, dilations, full_shape) -> np.ndarray:
    """col2im for 2-D windows: float32 cols [planes, KH, KW, OH, OW] summed into a zero image
    [planes, *full_shape] (``full_shape`` covers every window, padding included), tap by tap in
    row-major order, each tap's values added where the window read them: every cell is 0 plus
    its taps' values in that order."""
    cols = np.ascontiguousarray(cols, dtype=np.float32)
    acc = np.zeros((cols.shape[0],) + tuple(full_shape), np.float32)
    if acc.size and cols.size:
        _add_windows_kernel(cols, acc, strides[0], strides[1], dilations[0], dilations[1])
    return acc


def window_column_sums_2d(x, kernel, strides, pads_begin, out_shape) -> np.ndarray:
    """Per output position of a 2-D pooling window (no dilation) over float32 x [planes, H, W],
    the window's sum in the order of MLAS's vectorized pooling kernel: each window column summed
    down the kernel's rows (from its first cell), then the column sums left to right; cells in
    the padding count as 0 -> [planes, OH, OW]."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0],) + tuple(out_shape), np.float32)
    if out.size:
        _window_column_sums_kernel(x.reshape(-1), out.reshape(-1), x.shape[0], x.shape[1], x.shape[2],
                                   out.shape[1], out.shape[2], kernel[0], kernel[1], strides[0],
                                   strides[1], pads_begin[0], pads_begin[1])
    return out


@njit(inline="always")
def _eigen_finish(x, r, start, blocks, p0, p1, p2, p3, q0, q1, q2, q3):
    """Row r's sum from Eigen's two 4-lane packets (p, q) as they stand after its blocks of 8
    values (see eigen_row_sums)."""
    n = x.shape[1]
    end = start + 4 * blocks
    pairs_end = start + 8 * (blocks // 2)
    if blocks > 1:
        p0, p1, p2, p3 = p0 + q0, p1 + q1, p2 + q2, p3 + q3
        if end > pairs_end:
            p0 += x[r, pairs_end]
            p1 += x[r, pairs_end + 1]
            p2 += x[r, pairs_end + 2]
            p3 += x[r, pairs_end + 3]
    total = (p0 + p2) + (p1 + p3)
    for i in range(start):
        total += x[r, i]
    for i in range(end, n):
        total += x[r, i]
    return total


@njit(inline="always")
def _eigen_rows(x, r, s, start, out):
    """out[r] and out[s] (s may be r) for rows that start alike relative to the 16-byte boundary
    (``start`` values before the first aligned one). Row r's 8 accumulators (Eigen's two 4-lane
    packets) are lanes 0-7 of one 16-lane vector, row s's lanes 8-15: one vector addition per 8
    values of each row, each lane adding in Eigen's order."""
    n = x.shape[1]
    blocks = (n - start) // 4
    if blocks == 0:
        for t in (r, s):
            total = x[t, 0]
            for i in range(1, n):
                total += x[t, i]
            out[t] = total
        return
    if blocks == 1:
        for t in (r, s):
            out[t] = _eigen_finish(x, t, start, 1, x[t, start], x[t, start + 1], x[t, start + 2],
                                   x[t, start + 3], _F(0.0), _F(0.0), _F(0.0), _F(0.0))
        return
    xr, xs = x[r], x[s]
    acc = load_halves(xr, start, xs, start)
    for i in range(start + 8, start + 8 * (blocks // 2), 8):
        acc = add(acc, load_halves(xr, i, xs, i))
    out[r] = _eigen_finish(x, r, start, blocks, lane(acc, 0), lane(acc, 1), lane(acc, 2),
                           lane(acc, 3), lane(acc, 4), lane(acc, 5), lane(acc, 6), lane(acc, 7))
    out[s] = _eigen_finish(x, s, start, blocks, lane(acc, 8), lane(acc, 9), lane(acc, 10),
                           lane(acc, 11), lane(acc, 12), lane(acc, 13), lane(acc, 14), lane(acc, 15))


@njit(cache=True, parallel=True)
def _eigen_sums_kernel(x, offsets, out):
    rows, n = x.shape
    for g in prange((rows + 1) // 2):
        r = 2 * g
        s = min(r + 1, rows - 1)
        start_r, start_s = min((-offsets[r]) % 4, n), min((-offsets[s]) % 4, n)
        if start_r == start_s:
            _eigen_rows(x, r, s, start_r, out)
        else:                   # aligned differently: each with itself
            _eigen_rows(x, r, r, start_r, out)
            _eigen_rows(x, s, s, start_s, out)


def eigen_row_sums(x, offsets) -> np.ndarray:
    """The sum of each row of float32 x [rows, n] as Eigen's vectorized sum (SSE) adds it, row r
    starting ``offsets[r]`` values past a 16-byte boundary: from the first aligned value, two
    4-lane accumulators over 8 values at a time, one more block of 4 if left, the two combined,
    the lanes as (0 + 2) + (1 + 3), then the values before the aligned start and after the last
    block, one by one."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape[0], np.float32)
    if x.shape[0] and x.shape[1]:
        _eigen_sums_kernel(x, np.ascontiguousarray(offsets, dtype=np.int64), out)
    elif x.shape[0]:
        out[:] = 0
    return out
