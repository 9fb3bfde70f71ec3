"""float32 transcendental kernels that reproduce onnxruntime's MLAS approximations bit for bit.

``erf_f32``: onnxruntime's float32 Erf (MLAS, AVX512F kernel; ORT 1.32 on an AVX-512 CPU), the
odd/even polynomial split of N. Juffa's faithfully rounded erff (max error ~2.4 ULP):

    a = min(|x|, 3.925)                        (NaN stays NaN)
    |x| <= 0.921875:  r = a + a * p(a^2)        p: degree-5 polynomial, Horner in FMAs
    |x| >  0.921875:  r = 1 - exp(-(a + a * q(a)))   q: degree-6 polynomial, Horner in FMAs
                      exp(t), t >= -88.376: n = round(t / ln 2) (by the 1.5 * 2^23 trick),
                      f = t - n ln 2 (ln 2 split in two), exp(f) by a degree-6 polynomial, times 2^n
    erf(x) = r with the sign of x

Every step is one float32 operation; the multiply-adds are fused (``fma`` below emits LLVM's
``llvm.fma.f32``, a single rounding), so the kernel and the NumPy twin in ``twins.py`` (which
emulates the fused multiply-add exactly) give the same bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

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


# 2**n as float32 for n in [-149, 0] (index n + 149): the scale of exp's result, denormals included
_POW2 = np.ldexp(np.ones(150, np.float64), np.arange(-149, 1)).astype(np.float32)

_S0, _S1, _S2, _S3, _S4, _S5 = ERF.SMALL
_B0, _B1, _B2, _B3, _B4, _B5, _B6 = ERF.BIG
_E0, _E1, _E2, _E3, _E4, _E5, _E6 = ERF.EXP
_UPPER, _SPLIT, _LOWER, _LOG2E = ERF.UPPER, ERF.SPLIT, ERF.EXP_LOWER, ERF.LOG2E
_LN2_HI, _LN2_LO, _ROUND = ERF.LN2_HI, ERF.LN2_LO, ERF.ROUND
_ONE = _F(1.0)


@njit(inline="always")
def _erf(v, pow2):
    """onnxruntime's float32 erf of one value (``pow2[k + 149]`` = 2^k)."""
    a = abs(v)
    if a > _UPPER:
        a = _UPPER
    if a > _SPLIT:
        r = fma(_B0, a, _B1)
        r = fma(r, a, _B2)
        r = fma(r, a, _B3)
        r = fma(r, a, _B4)
        r = fma(r, a, _B5)
        r = fma(r, a, _B6)
        t = -fma(r, a, a)
        if t < _LOWER:
            t = _LOWER
        n = fma(_LOG2E, t, _ROUND) - _ROUND
        f = fma(n, _LN2_HI, t)
        f = fma(n, _LN2_LO, f)
        y = fma(_E0, f, _E1)
        y = fma(y, f, _E2)
        y = fma(y, f, _E3)
        y = fma(y, f, _E4)
        y = fma(y, f, _E5)
        y = fma(y, f, _E6)
        r = _ONE - y * pow2[np.int64(n) + 149]
    else:
        s = a * a
        r = fma(_S0, s, _S1)
        r = fma(r, s, _S2)
        r = fma(r, s, _S3)
        r = fma(r, s, _S4)
        r = fma(r, s, _S5)
        r = fma(r, a, a)
    return -r if np.signbit(v) else r


@njit(cache=True, parallel=True)
def _erf_kernel(x, out, pow2):
    for i in prange(x.shape[0]):
        out[i] = _erf(x[i], pow2)


# GELU forms: how the graph combines x, e = erf(x op c) + one and the constant `half`
GELU_FORMS = ("(x*a)*h", "(x*h)*a", "x*(a*h)")


@njit(cache=True, parallel=True)
def _gelu_kernel(x, divide, c, one, half, form, out, pow2):
    for i in prange(x.shape[0]):
        v = x[i]
        u = v / c if divide else v * c
        a = _erf(u, pow2) + one
        if form == 0:
            out[i] = (v * a) * half
        elif form == 1:
            out[i] = (v * half) * a
        else:
            out[i] = v * (a * half)


def gelu_erf_f32(x, divide: bool, c, one, half, form: str) -> np.ndarray:
    """The erf form of GELU as a graph spells it, each step one float32 operation, the erf
    onnxruntime's:  u = x / c (``divide``) or x * c;  a = erf(u) + one;  then ``form``, one of
    ``GELU_FORMS`` (h = half).  With c = sqrt(2) (or 1/sqrt(2)), one = 1, half = 0.5 this is
    x * Phi(x).  Bit for bit what the separate Div/Mul, Erf, Add and Mul nodes give."""
    x = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    if flat.size:
        _gelu_kernel(flat, bool(divide), _F(c), _F(one), _F(half), GELU_FORMS.index(form), out, _POW2)
    return out.reshape(x.shape)


def erf_f32(x) -> np.ndarray:
    """onnxruntime's float32 erf, element-wise, as a new float32 array of x's shape."""
    x = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    if flat.size:
        _erf_kernel(flat, out, _POW2)
    return out.reshape(x.shape)
