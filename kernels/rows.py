"""Row kernels for float32 [rows, n] arrays: layer normalization and softmax over the last axis.

    layer norm:  mean = sum(x) / n,  var = sum((x - mean)^2) / n,  inv_std = 1 / sqrt(var + eps)
                 y = (x - mean) * inv_std * scale + bias
    softmax:     m = max(x),  e = exp(x - m),  y = e * (1 / sum(e))

Rows are independent, so ``prange`` hands them to the threads; inside a row the work is sums,
maxima and element-wise arithmetic over a few hundred contiguous floats, which only pays off in
SIMD registers.

**Why the kernels spell out their vectors.** LLVM vectorizes element-wise loops by itself, but
not a float32 sum or maximum: adding in vector lanes changes the order of the additions, hence
the rounding, and LLVM only does it under fast-math, in an order of its own choosing that depends
on the CPU it compiles for. These kernels fix the order themselves with a small 16-lane float32
vector type (``VEC``, an LLVM ``<16 x float>``) and a handful of intrinsics on it (``load``,
``add``, ``fma``, ``lanes_sum``, ...), both in ``vec.py``:

* lane k accumulates elements k, k + 16, k + 32, ... of the row, left to right;
* the last, partial block is read with a masked load: lanes past the row's end get a neutral
  value (0 for a sum, -inf for a maximum, the mean for a sum of squared deviations) and the
  memory behind them is not touched; results are written back with a masked store;
* the 16 lanes are then combined in halves: lanes k and k + 8, then k and k + 4, k + 2, k + 1.

So the result is the same bits on every x86 CPU (AVX-512: one zmm register per vector; AVX2: two
ymm; SSE: four xmm) and can be reproduced in NumPy (``tests/kernels`` does, bit for
bit). No multiply-add is fused except where ``fma`` is written.

**Layer normalization** uses two passes over the row (the mean, then the mean of the squared
deviations), which stays accurate when the row's mean is large next to its spread.
onnxruntime's CPU kernel makes one pass (E[x^2] - mean^2, summed left to right) and divides by
sqrt(var + eps) instead of multiplying by its inverse: results agree within float32 rounding.
The output step is the NumPy expression ``(x - mean) * inv_std * scale + bias``, operation for
operation, so given the same statistics it gives the same bits.

**Softmax** needs exp, and ``np.exp`` inside Numba calls the C library's scalar expf for every
element. ``_exp_nonpositive`` is a vector exp for x <= 0 (after subtracting the row maximum no
input is larger):

    n = round(x / ln 2)           fma(x, log2(e), 1.5 * 2^23): the float32 sum's units digit is n
    r = x - n ln 2                ln 2 in two parts (ln 2 = LN2_HI + LN2_LO), two fmas
    e^r = 1 + r + r^2 q(r)        |r| <= 0.347, q of degree 4 (a minimax fit), Horner in fmas
    2^n                           exponent bits (n + 127) << 23, made from the rounded sum's bits
    e^x = e^r * 2^n;  0 where x < -87.33654 (e^x below 2^-126, the smallest normal float32)

At most 1 ULP from the correctly rounded result on the 6.4 million inputs in [-87.3, 0] the tests
check (they allow 2), and correctly rounded for 94% of them; -inf gives exactly 0 and NaN stays
NaN. A NaN in a row makes the whole row NaN, as does +inf
(inf - inf), as in NumPy.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types

from .vec import (
    LANES,
    add,
    div,
    fma,
    horner,
    lanes_max,
    lanes_sum,
    load,
    load_first,
    maximum,
    mul,
    pow2_of_rounded,
    splat,
    store,
    store_first,
    sub,
    zero_where_below,
)

__all__ = ["layer_norm_rows", "add_layer_norm_rows", "softmax_rows", "scale_add_softmax_rows", "exp_nonpositive",
           "row_view", "LANES", "EXP"]

_F = np.float32


class EXP:
    """The constants of the softmax's float32 exp (``_exp_nonpositive``)."""

    LOG2E = _F(1.44269504088896341)
    ROUND = _F(12582912.0)            # 1.5 * 2^23: adding it rounds a float32 to an integer
    LN2_HI = _F(0.693145751953125)    # ln 2 to 12 significant bits: n * LN2_HI is exact
    LN2_LO = _F(1.42860677e-06)       # ln 2 - LN2_HI
    POLY = (_F(1.38143089e-03), _F(8.36885627e-03), _F(4.16684002e-02), _F(1.66665196e-01),
            _F(4.99999940e-01))       # q(r) = POLY[0] r^4 + ... + POLY[4]: e^r ~ 1 + r + r^2 q(r)
    LOWER = _F(-87.33654)             # ln(2^-126): below it the result is flushed to 0


# --------------------------------------------------------------------------- exp for x <= 0

_LOG2E, _ROUND, _LOWER = EXP.LOG2E, EXP.ROUND, EXP.LOWER
_MINUS_LN2_HI, _MINUS_LN2_LO = -EXP.LN2_HI, -EXP.LN2_LO
_ONE = _F(1.0)
_EXP_POLY = EXP.POLY + (_ONE, _ONE)


@njit(inline="always")
def _exp_nonpositive(x):
    """e^x per lane of a VEC with x <= 0 (steps in the module docstring)."""
    t = fma(x, splat(_LOG2E), splat(_ROUND))
    n = sub(t, splat(_ROUND))
    r = fma(n, splat(_MINUS_LN2_HI), x)
    r = fma(n, splat(_MINUS_LN2_LO), r)
    p = horner(r, _EXP_POLY)              # 1 + r + r^2 q(r) = (q(r) r + 1) r + 1
    return zero_where_below(x, _LOWER, mul(p, pow2_of_rounded(t)))


@njit(cache=True, parallel=True)
def _exp_kernel(x, y):
    n = x.shape[0]
    full = n - n % LANES
    for b in prange(full // LANES):
        store(y, b * LANES, _exp_nonpositive(load(x, b * LANES)))
    if full < n:
        store_first(y, full, n - full, _exp_nonpositive(load_first(x, full, n - full, _F(0.0))))


def exp_nonpositive(x) -> np.ndarray:
    """e^x element-wise for float32 x <= 0 (NaN and -inf allowed), computed as in the softmax
    kernel; a new float32 array of x's shape."""
    x = np.asarray(x, dtype=np.float32)
    if np.any(x > 0):
        raise ValueError("exp_nonpositive: inputs must be <= 0")
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    if flat.size:
        _exp_kernel(flat, out)
    return out.reshape(x.shape)


# --------------------------------------------------------------------------- layer normalization

@njit(inline="always")
def _layer_norm_row(xr, yr, scale, bias, has_bias, eps, n):
    """One row: yr = layer norm of xr (yr may be xr itself); returns (mean, inv_std)."""
    full = n - n % LANES
    tail = n - full
    zero = splat(_F(0.0))
    acc = zero
    for i in range(0, full, LANES):
        acc = add(acc, load(xr, i))
    if tail:
        acc = add(acc, load_first(xr, full, tail, _F(0.0)))
    m = lanes_sum(acc) / _F(n)

    mv = splat(m)
    acc = zero
    for i in range(0, full, LANES):
        d = sub(load(xr, i), mv)
        acc = add(acc, mul(d, d))
    if tail:
        d = sub(load_first(xr, full, tail, m), mv)
        acc = add(acc, mul(d, d))
    s = _ONE / np.sqrt(lanes_sum(acc) / _F(n) + eps)

    sv = splat(s)
    for i in range(0, full, LANES):
        v = mul(mul(sub(load(xr, i), mv), sv), load(scale, i))
        if has_bias:
            v = add(v, load(bias, i))
        store(yr, i, v)
    if tail:
        v = mul(mul(sub(load_first(xr, full, tail, m), mv), sv),
                load_first(scale, full, tail, _F(0.0)))
        if has_bias:
            v = add(v, load_first(bias, full, tail, _F(0.0)))
        store_first(yr, full, tail, v)
    return m, s


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

@njit(inline="always")
def _softmax_row(xr, yr, n):
    """yr = softmax(xr) over the row's n values (xr may be yr: each pass reads a value before it
    writes it)."""
    full = n - n % LANES
    tail = n - full
    neg_inf = _F(-np.inf)
    top = splat(neg_inf)
    for i in range(0, full, LANES):
        top = maximum(top, load(xr, i))
    if tail:
        top = maximum(top, load_first(xr, full, tail, neg_inf))
    mv = splat(lanes_max(top))

    acc = splat(_F(0.0))
    for i in range(0, full, LANES):
        e = _exp_nonpositive(sub(load(xr, i), mv))
        store(yr, i, e)
        acc = add(acc, e)
    if tail:  # lanes past the row read -inf: e = 0
        e = _exp_nonpositive(sub(load_first(xr, full, tail, neg_inf), mv))
        store_first(yr, full, tail, e)
        acc = add(acc, e)

    inv = splat(_ONE / lanes_sum(acc))
    for i in range(0, full, LANES):
        store(yr, i, mul(load(yr, i), inv))
    if tail:
        store_first(yr, full, tail, mul(load_first(yr, full, tail, _F(0.0)), inv))


@njit(cache=True, parallel=True)
def _softmax_kernel(x, y):
    rows, n = x.shape
    for r in prange(rows):
        _softmax_row(x[r], y[r], n)


@njit(cache=True, parallel=True)
def _scale_add_softmax_kernel(x, c, divide, mask, mask_offs, mask_ld, per_matrix, y):
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
        _softmax_row(yr, yr, n)


def row_view(x, batch: tuple):
    """A float32 stack x [..., R, C] (batch axes broadcast to ``batch``) whose rows are contiguous
    (last stride one element, the others non-negative multiples of it) as (read-only flat view
    starting at x's first element, offset of each matrix [nb], row stride), without copying;
    None for any other layout."""
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


def scale_add_softmax_rows(x, c, divide: bool, mask):
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
        _scale_add_softmax_kernel(x2, np.float32(c), bool(divide), flat, offs, ld, x.shape[-2], y)
    return y.reshape(x.shape)


def softmax_rows(x) -> np.ndarray:
    """Softmax of each row of a 2-D float32 array, in float32: a new [rows, n] array."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"softmax_rows: x must be [rows, n], got {list(x.shape)}")
    y = np.empty(x.shape, np.float32)
    if x.size:
        _softmax_kernel(x, y)
    return y


def _vector_instructions(names=("vaddps", "vmulps", "vfmadd213ps", "vmaxps", "vmovups")) -> dict:
    """Count selected instructions (any register width) in fresh (uncached) compiles."""
    import re

    f2, f1 = types.float32[:, ::1], types.float32[::1]
    layer_norm_sig = (f2, f1, f1, types.boolean, types.float64, f2, f1, f1)
    counts = {}
    for kernel, sig in ((_layer_norm_kernel, layer_norm_sig), (_softmax_kernel, (f2, f2))):
        fresh = njit(cache=False, parallel=True)(kernel.py_func)
        fresh.compile(sig)
        asm = "\n".join(fresh.inspect_asm().values())
        counts[kernel.__name__] = {
            name: {reg: len(re.findall(rf"\b{name}\b[^\n]*%{reg}", asm)) for reg in ("zmm", "ymm")}
            for name in names}
    return counts
