"""float32 transcendental kernels that reproduce onnxruntime's MLAS approximations bit for bit.

``erf_f32``: onnxruntime's float32 Erf (MLAS, AVX512F kernel; ORT 1.32 on an AVX-512 CPU), the
odd/even polynomial split of N. Juffa's faithfully rounded erff (max error ~2.4 ULP):

    a = min(|x|, 3.925)                        (NaN stays NaN)
    |x| <= 0.921875:  r = a + a * p(a^2)        p: degree-5 polynomial, Horner in FMAs
    |x| >  0.921875:  r = 1 - exp(-(a + a * q(a)))   q: degree-6 polynomial, Horner in FMAs
                      exp(t), t >= -88.376: n = round(t / ln 2) (by the 1.5 * 2^23 trick),
                      f = t - n ln 2 (ln 2 split in two), exp(f) by a degree-6 polynomial, times 2^n
    erf(x) = r with the sign of x

Every step is one float32 operation; the multiply-adds are fused (LLVM's ``llvm.fma``, a single
rounding), so the kernel and the NumPy twin in ``twins.py`` (which emulates the fused multiply-add
exactly) give the same bits. The kernels run 16 lanes at a time on ``kernels.rows``' vector type.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .vec import (
    LANES,
    VEC,
    add,
    div,
    horner,
    load,
    load_first,
    mul,
    pow2_of_rounded,
    splat,
    store,
    store_first,
    sub,
)
from .vec import fma as vfma

__all__ = ["erf_f32", "gelu_erf_f32", "GELU_FORMS", "ERF"]

_F = np.float32


class ERF:
    """The constants of MLAS's float32 erf."""

    UPPER = _F(3.925)
    SPLIT = _F(0.921875)
    SMALL = (_F(-5.99104969e-4), _F(4.99339588e-3), _F(-2.67667342e-2), _F(1.12818025e-1),
             _F(-3.76124859e-1), _F(1.28379151e-1))
    BIG = (_F(1.72948930e-5), _F(-3.83208680e-4), _F(3.88393435e-3), _F(-2.42545605e-2),
           _F(1.06777847e-1), _F(6.34846687e-1), _F(1.28717512e-1))
    EXP_LOWER = _F(-88.3762626647949)
    LOG2E = _F(1.44269504088896341)
    LN2_HI = _F(-6.93145752e-1)
    LN2_LO = _F(-1.42860677e-6)
    EXP = (_F(1.38319808e-3), _F(8.37550033e-3), _F(4.16689515e-2), _F(1.66664466e-1),
           _F(4.99999851e-1), _F(1.0), _F(1.0))
    ROUND = _F(1.25829120e7)  # 1.5 * 2^23: adding and subtracting it rounds to an integer


@intrinsic
def fma(typingctx, a, b, c):
    """float32 a * b + c with a single rounding (LLVM ``llvm.fma.f32``)."""
    if not all(t == types.float32 for t in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@intrinsic
def bits_of(typingctx, x):
    """The int32 whose bits are float32 ``x``'s."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def float_of(typingctx, i):
    """The float32 whose bits are the low 32 bits of integer ``i``."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if i.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(i), codegen


@intrinsic
def wrap_int32(typingctx, i):
    """The low 32 bits of integer ``i`` as an int32 (two's complement wrap-around)."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.trunc(args[0], ir.IntType(32)) if i.bitwidth > 32 else args[0]

    return types.int32(i), codegen


_SMALL, _BIG, _EXP = ERF.SMALL, ERF.BIG, ERF.EXP   # polynomial coefficients, highest power first
_UPPER, _SPLIT, _LOWER, _LOG2E = ERF.UPPER, ERF.SPLIT, ERF.EXP_LOWER, ERF.LOG2E
_LN2_HI, _LN2_LO, _ROUND = ERF.LN2_HI, ERF.LN2_LO, ERF.ROUND
_ONE = _F(1.0)


# the vector form: both branches are computed in every lane and the lane picks one (a select, as
# the branch would), so the loop runs 16 lanes at a time; the results are the branchy scalar
# code's bits (tests/kernels compares with the NumPy twin over every float32 range).
_I32 = ir.IntType(32)


def _lanes_int(builder, value, op, constant):
    """A float32 vector's bits, ``op``-ed with an int32 constant in every lane, as floats."""
    ivec = ir.VectorType(_I32, LANES)
    bits = builder.bitcast(value, ivec)
    return builder.bitcast(op(bits, ir.Constant(ivec, [constant] * LANES)), value.type)


@intrinsic
def _abs(typingctx, v):
    """|v| per lane (the sign bit cleared; NaN stays NaN)."""
    if v != VEC:
        return None

    def codegen(context, builder, sig, args):
        return _lanes_int(builder, args[0], builder.and_, 0x7FFFFFFF)

    return VEC(v), codegen


@intrinsic
def _sign_of(typingctx, r, v):
    """r with v's sign bit or-ed in (for r >= +0: -r where v is negative, r elsewhere)."""
    if not (r == VEC and v == VEC):
        return None

    def codegen(context, builder, sig, args):
        sign = _lanes_int(builder, args[1], builder.and_, -0x80000000)
        ivec = ir.VectorType(_I32, LANES)
        bits = builder.or_(builder.bitcast(args[0], ivec), builder.bitcast(sign, ivec))
        return builder.bitcast(bits, args[0].type)

    return VEC(r, v), codegen


@intrinsic
def _where_greater(typingctx, a, b, x, y):
    """x where a > b (ordered: a NaN gives y), y elsewhere, per lane."""
    if not all(t == VEC for t in (a, b, x, y)):
        return None

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[2], args[3])

    return VEC(a, b, x, y), codegen


_MINUS_ZERO = _F(-0.0)


@njit(inline="always")
def _erf_vec(v):
    """onnxruntime's float32 erf of 16 lanes (the module docstring's steps)."""
    upper = splat(_UPPER)
    a = _abs(v)
    a = _where_greater(a, upper, upper, a)
    r = horner(a, _BIG)
    t = sub(splat(_MINUS_ZERO), vfma(r, a, a))       # -(a + a q(a)), exactly
    lower = splat(_LOWER)
    t = _where_greater(lower, t, lower, t)
    rounded = vfma(splat(_LOG2E), t, splat(_ROUND))
    n = sub(rounded, splat(_ROUND))
    f = vfma(n, splat(_LN2_HI), t)
    f = vfma(n, splat(_LN2_LO), f)
    y = horner(f, _EXP)
    # 2^n from the rounded sum's bits: n >= -27 here (a <= 3.925 keeps t above -18.5), so it
    # is a normal float32 and equals the scalar code's table entry
    big = sub(splat(_ONE), mul(y, pow2_of_rounded(rounded)))
    s = mul(a, a)
    small = vfma(horner(s, _SMALL), a, a)
    return _sign_of(_where_greater(a, splat(_SPLIT), big, small), v)


@njit(inline="always")
def _gelu_vec(v, divide, c, one, half, form):
    u = div(v, c) if divide else mul(v, c)
    a = add(_erf_vec(u), one)
    if form == 0:
        return mul(mul(v, a), half)
    if form == 1:
        return mul(mul(v, half), a)
    return mul(v, mul(a, half))


_BLOCK = 1024   # elements per parallel task


@njit(cache=True, parallel=True)
def _erf_kernel(x, out):
    n = x.shape[0]
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        i, end = b * _BLOCK, min(n, b * _BLOCK + _BLOCK)
        while i + LANES <= end:
            store(out, i, _erf_vec(load(x, i)))
            i += LANES
        if i < end:
            store_first(out, i, end - i, _erf_vec(load_first(x, i, end - i, _F(0.0))))


# GELU forms: how the graph combines x, e = erf(x op c) + one and the constant `half`
GELU_FORMS = ("(x*a)*h", "(x*h)*a", "x*(a*h)")


@njit(cache=True, parallel=True)
def _gelu_kernel(x, divide, c, one, half, form, out):
    n = x.shape[0]
    cv, onev, halfv = splat(c), splat(one), splat(half)
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        i, end = b * _BLOCK, min(n, b * _BLOCK + _BLOCK)
        while i + LANES <= end:
            store(out, i, _gelu_vec(load(x, i), divide, cv, onev, halfv, form))
            i += LANES
        if i < end:
            v = load_first(x, i, end - i, _F(0.0))
            store_first(out, i, end - i, _gelu_vec(v, divide, cv, onev, halfv, form))


def gelu_erf_f32(x, divide: bool, c, one, half, form: str) -> np.ndarray:
    """The erf form of GELU as a graph spells it, each step one float32 operation, the erf
    onnxruntime's:  u = x / c (``divide``) or x * c;  a = erf(u) + one;  then ``form``, one of
    ``GELU_FORMS`` (h = half).  With c = sqrt(2) (or 1/sqrt(2)), one = 1, half = 0.5 this is
    x * Phi(x).  Bit for bit what the separate Div/Mul, Erf, Add and Mul nodes give."""
    x = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    if flat.size:
        _gelu_kernel(flat, bool(divide), _F(c), _F(one), _F(half), GELU_FORMS.index(form), out)
    return out.reshape(x.shape)


def erf_f32(x) -> np.ndarray:
    """onnxruntime's float32 erf, element-wise, as a new float32 array of x's shape."""
    x = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    if flat.size:
        _erf_kernel(flat, out)
    return out.reshape(x.shape)
