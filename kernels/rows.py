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
``add``, ``fma``, ``lanes_sum``, ...):

* lane k accumulates elements k, k + 16, k + 32, ... of the row, left to right;
* the last, partial block is read with a masked load: lanes past the row's end get a neutral
  value (0 for a sum, -inf for a maximum, the mean for a sum of squared deviations) and the
  memory behind them is not touched; results are written back with a masked store;
* the 16 lanes are then combined in halves: lanes k and k + 8, then k and k + 4, k + 2, k + 1.

So the result is the same bits on every x86 CPU (AVX-512: one zmm register per vector; AVX2: two
ymm; SSE: four xmm) and can be reproduced in NumPy (``tests/test_kernels.py`` does, bit for
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
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

__all__ = ["layer_norm_rows", "add_layer_norm_rows", "softmax_rows", "scale_add_softmax_rows", "exp_nonpositive",
           "row_view", "LANES", "EXP"]

LANES = 16
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


# --------------------------------------------------------------------------- a vector type

class _Vec(types.Type):
    """16 float32 lanes, held in SIMD registers (LLVM ``<16 x float>``)."""

    def __init__(self):
        super().__init__(name=f"f32x{LANES}")


VEC = _Vec()
_LL_F32 = ir.FloatType()
_LL_I32 = ir.IntType(32)
_LL_VEC = ir.VectorType(_LL_F32, LANES)
_LL_IVEC = ir.VectorType(_LL_I32, LANES)
_LL_MASK = ir.VectorType(ir.IntType(1), LANES)
_LANE_INDEX = ir.Constant(_LL_IVEC, list(range(LANES)))


@register_model(_Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _LL_VEC)


def _broadcast(builder, value, vector_type):
    """An LLVM vector with ``value`` in every lane."""
    v = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value,
                               ir.Constant(_LL_I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(_LL_IVEC, [0] * LANES))


def _is_row(t, writable=False):
    """A 1-D C-contiguous float32 array (a row of a C-contiguous matrix)."""
    return (isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.float32
            and t.layout == "C" and (t.mutable or not writable))


def _address(context, builder, arytype, ary, index, indextype):
    """Pointer to ``ary[index]``, cast to a pointer to 16 floats."""
    data = context.make_array(arytype)(context, builder, ary).data
    i = context.cast(builder, index, indextype, types.intp)
    return builder.bitcast(builder.gep(data, [i]), _LL_VEC.as_pointer())


def _first_lanes(builder, count, counttype, context):
    """Mask: lanes 0 .. count - 1 on."""
    c = context.cast(builder, count, counttype, types.int32)
    return builder.icmp_signed("<", _LANE_INDEX, _broadcast(builder, c, _LL_IVEC))


@intrinsic
def splat(typingctx, x):
    """VEC with x in every lane."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return _broadcast(builder, args[0], _LL_VEC)

    return VEC(x), codegen


@intrinsic
def load(typingctx, row, i):
    """row[i : i + 16] (the caller guarantees i + 16 <= len(row))."""
    if not (_is_row(row) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return builder.load(ptr, align=4)

    return VEC(row, i), codegen


@intrinsic
def load_first(typingctx, row, i, count, fill):
    """Lanes k < count: row[i + k]; the other lanes: fill (their memory is not read)."""
    if not (_is_row(row) and isinstance(i, types.Integer) and isinstance(count, types.Integer)
            and fill == types.float32):
        return None

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        mask = _first_lanes(builder, args[2], sig.args[2], context)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_LL_VEC, [ptr.type, _LL_I32, _LL_MASK, _LL_VEC]),
            f"llvm.masked.load.v{LANES}f32.p0")
        return builder.call(fn, [ptr, ir.Constant(_LL_I32, 4), mask,
                                 _broadcast(builder, args[3], _LL_VEC)])

    return VEC(row, i, count, fill), codegen


@intrinsic
def store(typingctx, row, i, v):
    """row[i : i + 16] = v."""
    if not (_is_row(row, writable=True) and isinstance(i, types.Integer) and v == VEC):
        return None

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(args[2], ptr, align=4)
        return context.get_dummy_value()

    return types.none(row, i, v), codegen


@intrinsic
def store_first(typingctx, row, i, count, v):
    """row[i + k] = v[k] for lanes k < count (memory past them is not written)."""
    if not (_is_row(row, writable=True) and isinstance(i, types.Integer)
            and isinstance(count, types.Integer) and v == VEC):
        return None

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        mask = _first_lanes(builder, args[2], sig.args[2], context)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [_LL_VEC, ptr.type, _LL_I32, _LL_MASK]),
            f"llvm.masked.store.v{LANES}f32.p0")
        builder.call(fn, [args[3], ptr, ir.Constant(_LL_I32, 4), mask])
        return context.get_dummy_value()

    return types.none(row, i, count, v), codegen


def _lanewise(build, doc):
    """An intrinsic VEC (op) VEC -> VEC, one float32 operation per lane."""

    @intrinsic
    def fn(typingctx, a, b):
        if not (a == VEC and b == VEC):
            return None

        def codegen(context, builder, sig, args):
            return build(builder, *args)

        return VEC(a, b), codegen

    fn.__doc__ = doc
    return fn


def _greater(builder, a, b):
    return builder.select(builder.fcmp_ordered(">", a, b), a, b)


add = _lanewise(lambda b, x, y: b.fadd(x, y), "a + b per lane")
sub = _lanewise(lambda b, x, y: b.fsub(x, y), "a - b per lane")
mul = _lanewise(lambda b, x, y: b.fmul(x, y), "a * b per lane")
div = _lanewise(lambda b, x, y: b.fdiv(x, y), "a / b per lane")
maximum = _lanewise(_greater, "a if a > b else b per lane (vmaxps: a NaN in a gives b)")
minimum = _lanewise(lambda b, x, y: b.select(b.fcmp_ordered("<", x, y), x, y),
                    "a if a < b else b per lane (vminps: a NaN in a gives b)")
keep_nan = _lanewise(lambda b, acc, x: b.select(b.fcmp_unordered("uno", x, x), x, acc),
                     "x where x is NaN, acc elsewhere, per lane (a NaN, once met, stays)")


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c per lane, rounded once (``llvm.fma``)."""
    if not (a == VEC and b == VEC and c == VEC):
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_LL_VEC, [_LL_VEC] * 3), f"llvm.fma.v{LANES}f32")
        return builder.call(fn, args)

    return VEC(a, b, c), codegen


def _halves(reduce_pair, doc):
    """An intrinsic VEC -> float32 combining lanes k and k + w/2 for w = 16, 8, 4, 2."""

    @intrinsic
    def fn(typingctx, v):
        if v != VEC:
            return None

        def codegen(context, builder, sig, args):
            x, width = args[0], LANES
            while width > 1:
                half = width // 2
                pick = ir.VectorType(_LL_I32, half)
                lo = builder.shuffle_vector(x, x, ir.Constant(pick, list(range(half))))
                hi = builder.shuffle_vector(x, x, ir.Constant(pick, list(range(half, width))))
                x, width = reduce_pair(builder, lo, hi), half
            return builder.extract_element(x, ir.Constant(_LL_I32, 0))

        return types.float32(v), codegen

    fn.__doc__ = doc
    return fn


lanes_sum = _halves(lambda b, lo, hi: b.fadd(lo, hi),
                    "the lanes' sum: v[k] + v[k + 8], then lanes 4, 2 and 1 apart")
lanes_max = _halves(_greater, "the lanes' maximum, combined in halves as lanes_sum")
lanes_min = _halves(lambda b, lo, hi: b.select(b.fcmp_ordered("<", lo, hi), lo, hi),
                    "the lanes' minimum, combined in halves as lanes_sum")


@njit(inline="always")
def horner(x, coeffs):
    """coeffs[0] x^(n-1) + ... + coeffs[n-1] per lane (coeffs a tuple of n float32), by Horner's
    rule in fused multiply-adds: one rounding per step, highest power first."""
    p = splat(coeffs[0])
    for i in range(1, len(coeffs)):
        p = fma(p, x, splat(coeffs[i]))
    return p


@intrinsic
def pow2_of_rounded(typingctx, t):
    """2^n per lane, for t = 1.5 * 2^23 + n with -126 <= n <= 127: the float32 whose exponent bits
    are n + 127, i.e. (bits(t) << 23) + bits(1.0) (bits(t) = 0x4B400000 + n, whose high part the
    shift pushes out)."""
    if t != VEC:
        return None

    def codegen(context, builder, sig, args):
        bits = builder.shl(builder.bitcast(args[0], _LL_IVEC), _broadcast(
            builder, ir.Constant(_LL_I32, 23), _LL_IVEC))
        bits = builder.add(bits, _broadcast(builder, ir.Constant(_LL_I32, 0x3F800000), _LL_IVEC))
        return builder.bitcast(bits, _LL_VEC)

    return VEC(t), codegen


@intrinsic
def zero_where_below(typingctx, x, bound, y):
    """y per lane, but 0 where x < bound (a NaN x keeps y)."""
    if not (x == VEC and bound == types.float32 and y == VEC):
        return None

    def codegen(context, builder, sig, args):
        below = builder.fcmp_ordered("<", args[0], _broadcast(builder, args[1], _LL_VEC))
        return builder.select(below, ir.Constant(_LL_VEC, [0.0] * LANES), args[2])

    return VEC(x, bound, y), codegen


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
