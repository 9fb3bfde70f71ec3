"""onnxruntime's float32 logistic and tanh (MLAS, the FMA kernels): rational polynomials in x^2
evaluated by Horner's rule in fused multiply-adds.

    logistic(x) = clip(x * p(x^2) / q(x^2) + 0.5, 0, 1),  x clamped to [-18, 18]
    tanh(x)     = x * p(x^2) / q(x^2),                     x clamped to [-9, 9]
    (NaN stays NaN through the clamps, as in MLAS's max/min order)

``logistic_f32`` / ``tanh_f32`` are the Numba kernels (16 lanes at a time on ``kernels.vec``'s
vector type, each multiply-add one ``llvm.fma``); ``mlas_logistic`` / ``mlas_tanh`` are their
NumPy twins (exact float32 FMAs through :func:`refrt.kernels.fma.fma32`), used where arrays are
small (the QLinear lookup tables, RNN cells). Both are bit for bit onnxruntime 1.32's Sigmoid
and Tanh on float32 (on AVX-512 and AVX2 CPUs); refrt's "ort" numerics use them for those ops."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import vec as V
from .fma import fma32
from .mathf import bits_of, float_of, fma, wrap_int32

__all__ = ["mlas_logistic", "mlas_tanh", "logistic_f32", "tanh_f32", "exp_f32", "log_f32", "clamp_f32"]

_F32 = np.float32

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


# -- the Numba kernels ----------------------------------------------------------------------------

_ZERO, _HALF, _ONE = np.float32(0.0), np.float32(0.5), np.float32(1.0)
_LO_LOGISTIC, _HI_LOGISTIC = np.float32(-18.0), np.float32(18.0)
_LO_TANH, _HI_TANH = np.float32(-9.0), np.float32(9.0)
_BLOCK = 1024   # elements per parallel task


@njit(inline="always")
def _logistic_vec(v):
    # maximum(bound, v) keeps a NaN v (vmaxps returns its second operand), as MLAS's order does
    x = V.minimum(V.splat(_HI_LOGISTIC), V.maximum(V.splat(_LO_LOGISTIC), v))
    x2 = V.mul(x, x)
    r = V.add(V.div(V.mul(V.horner(x2, _LOGISTIC), x), V.horner(x2, _LOGISTIC_Q)),
              V.splat(_HALF))
    return V.minimum(V.splat(_ONE), V.maximum(V.splat(_ZERO), r))


@njit(inline="always")
def _tanh_vec(v):
    x = V.minimum(V.splat(_HI_TANH), V.maximum(V.splat(_LO_TANH), v))
    x2 = V.mul(x, x)
    return V.div(V.mul(x, V.horner(x2, _TANH)), V.horner(x2, _TANH_Q))


@njit(inline="always")
def _apply(which, v):
    return _logistic_vec(v) if which == 0 else _tanh_vec(v)


@njit(cache=True, parallel=True)
def _kernel(which, x, out):
    """out = logistic(x) (which 0) or tanh(x) (which 1), 16 lanes at a time."""
    n = x.shape[0]
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        i, end = b * _BLOCK, min(n, b * _BLOCK + _BLOCK)
        while i + V.LANES <= end:
            V.store(out, i, _apply(which, V.load(x, i)))
            i += V.LANES
        if i < end:
            V.store_first(out, i, end - i, _apply(which, V.load_first(x, i, end - i, _ZERO)))


# The kernels again without the parallel region, for arrays of a few tasks: entering a parallel
# region costs about 3 µs even on one thread, as much as the work on 1024 elements.
_FEW = 4 * _BLOCK
_kernel_serial = njit(cache=True)(_kernel.py_func)


def _run(which: int, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    if flat.size:
        (_kernel_serial if flat.size <= _FEW else _kernel)(which, flat, out)
    return out.reshape(x.shape)


def logistic_f32(x) -> np.ndarray:
    """onnxruntime's float32 Sigmoid, element-wise, as a new float32 array of x's shape."""
    return _run(0, x)


def tanh_f32(x) -> np.ndarray:
    """onnxruntime's float32 Tanh, element-wise, as a new float32 array of x's shape."""
    return _run(1, x)


# --------------------------------------------------------------------------- clamps

@njit(cache=True, parallel=True)
def _clamp_kernel(x, out, lo, hi, scale, shift, affine):
    """out = x (or the rounded x * scale, then + shift, rounded) raised to lo where below it,
    then lowered to hi where above it; NaN and values equal to a bound (-0 against 0) kept."""
    n = x.shape[0]
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        for i in range(b * _BLOCK, min(n, b * _BLOCK + _BLOCK)):
            v = x[i]
            if affine:
                v = v * scale + shift
            v = lo if v < lo else v
            out[i] = hi if v > hi else v


_clamp_serial = njit(cache=True)(_clamp_kernel.py_func)


def clamp_f32(x, lo, hi, scale=None, shift=None) -> np.ndarray:
    """float32 element-wise min(max(v, lo), hi) as MLAS's activations and onnxruntime's Relu and
    Clip compute it: a value is replaced only where it is strictly below ``lo`` (then above
    ``hi``), so NaN passes and -0 stays -0 against a bound of 0 (NumPy's maximum gives +0).
    With ``scale`` and ``shift``, v = x * scale + shift first (a rounded product, then a rounded
    sum: HardSigmoid). A new array of x's shape."""
    x = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    if flat.size:
        affine = scale is not None
        (_clamp_serial if flat.size <= _FEW else _clamp_kernel)(flat, out, _F32(lo), _F32(hi), _F32(scale if affine else 1),
                      _F32(shift if affine else 0), affine)
    return out.reshape(x.shape)


# --------------------------------------------------------------------------- exp

_EXP_LOWER = np.float32(-103.9720840454)
_EXP_UPPER = np.float32(88.7762626647950)
_EXP_CAP = np.float32(89.7)              # beyond it every kernel's result is +inf
_ROUND = np.float32(12582912.0)          # 1.5 * 2^23
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(-6.93145752e-1)
_LN2_LO = np.float32(-1.42860677e-6)
_EXP_POLY = (np.float32(float.fromhex("0x1.694000p-10")), np.float32(float.fromhex("0x1.125edcp-7")),
             np.float32(float.fromhex("0x1.555b5ap-5")), np.float32(float.fromhex("0x1.555450p-3")),
             np.float32(float.fromhex("0x1.fffff6p-2")), np.float32(1.0))
_MAX_EXPONENT = np.int32(0x3F800000)      # the bits of 1.0: 127 << 23
_MIN_EXPONENT = np.int32(-0x3F000000)     # -126 << 23 (0xC1000000)


@njit(inline="always")
def _exp_one(x, wide):
    """MLAS's float32 e^x (``MlasComputeExp``), one value:

        v = clamp(x, -103.97, 88.78)        (wide: the lower bound only)
        m = round(v / ln 2)                 fma(v, log2 e, 1.5 * 2^23) - 1.5 * 2^23
        r = v + m * LN2_HI + m * LN2_LO     two fmas
        p = Horner in fmas over POLY (degree 5), then one more step:
    * ``wide`` (its AVX-512F kernel): p = fma(p, r, 1), scaled exactly by 2^m (vscalefps);
    * else (its AVX2/FMA3 kernel): 2^m split into a normal factor 2^clamp(m, -126, 127) and an
      overflow factor 2^(m - that): p = fma(p, r * overflow, overflow) * normal."""
    v = x
    if _EXP_LOWER > v:
        v = _EXP_LOWER
    if wide:
        if v > _EXP_CAP:
            v = _EXP_CAP
    elif v > _EXP_UPPER:
        v = _EXP_UPPER
    biased = fma(v, _LOG2E, _ROUND)
    m = biased - _ROUND
    r = fma(m, _LN2_HI, v)
    r = fma(m, _LN2_LO, r)
    p = _EXP_POLY[0]
    p = fma(p, r, _EXP_POLY[1])
    p = fma(p, r, _EXP_POLY[2])
    p = fma(p, r, _EXP_POLY[3])
    p = fma(p, r, _EXP_POLY[4])
    p = fma(p, r, _EXP_POLY[5])
    if wide:
        return np.float32(math.ldexp(np.float64(fma(p, r, _EXP_POLY[5])), int(m)))
    shifted = wrap_int32(np.int64(bits_of(biased)) << 23)           # 32-bit lanes
    normal = min(max(shifted, _MIN_EXPONENT), _MAX_EXPONENT)
    overflow = float_of(shifted - normal + _MAX_EXPONENT)
    return fma(p, r * overflow, overflow) * float_of(normal + _MAX_EXPONENT)


_EXP_POLY_LAST = _EXP_POLY[:5]


@njit(inline="always")
def _exp_vec(x, wide):
    """``_exp_one`` on 16 lanes (the same operations, lane by lane)."""
    v = V.maximum(V.splat(_EXP_LOWER), x)                       # NaN stays (vmaxps order)
    v = V.minimum(V.splat(_EXP_CAP if wide else _EXP_UPPER), v)
    biased = V.fma(v, V.splat(_LOG2E), V.splat(_ROUND))
    m = V.sub(biased, V.splat(_ROUND))
    r = V.fma(m, V.splat(_LN2_HI), v)
    r = V.fma(m, V.splat(_LN2_LO), r)
    p = V.fma(V.horner(r, _EXP_POLY_LAST), r, V.splat(_EXP_POLY[5]))
    one = V.splat(_EXP_POLY[5])
    if wide:    # p = fma(p, r, 1), times 2^m exactly (m <= 129 here): in two exact-then-rounded steps
        p = V.fma(p, r, one)
        m1 = V.minimum(V.splat(np.float32(127.0)), V.maximum(m, V.splat(np.float32(-125.0))))
        return V.mul(V.mul(p, V.pow2_of_integer(m1)), V.pow2_of_integer(V.sub(m, m1)))
    overflow = V.exp_scales(biased, 1)
    return V.mul(V.fma(p, V.mul(r, overflow), overflow), V.exp_scales(biased, 0))


@njit(cache=True, parallel=True)
def _exp_kernel(x, out, wide):
    n = x.shape[0]
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        i, end = b * _BLOCK, min(n, b * _BLOCK + _BLOCK)
        while i + V.LANES <= end:
            V.store(out, i, _exp_vec(V.load(x, i), wide))
            i += V.LANES
        for j in range(i, end):
            out[j] = _exp_one(x[j], wide)


def exp_f32(x, wide: bool = False) -> np.ndarray:
    """onnxruntime's float32 Exp (MLAS's exp; ``wide``: its AVX-512F kernel, else its AVX2/FMA3
    kernel), element-wise, as a new float32 array of x's shape."""
    x = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    if flat.size:
        _exp_kernel(flat, out, bool(wide))
    return out.reshape(x.shape)


# --------------------------------------------------------------------------- log

class LOG:
    """The constants of onnxruntime's float32 Log (Eigen's plog_float: a rational (3, 3)
    approximation of log(1 + x) on [sqrt(1/2) - 1, sqrt(2) - 1])."""

    SQRT_HALF = np.float32(0.707106781186547524)
    P = (np.float32(1.0000000190281136), np.float32(1.0000000190281063), np.float32(0.18256296349849254))
    Q = (np.float32(1.4999999999999927), np.float32(0.59923249590823520), np.float32(0.049616247954120038))
    LN2 = np.float32(0.693147180559945309417)


_LOG_SQRT_HALF, _LOG_LN2 = LOG.SQRT_HALF, LOG.LN2
_LOG_P1, _LOG_P2, _LOG_P3 = LOG.P
_LOG_Q1, _LOG_Q2, _LOG_Q3 = LOG.Q


@njit(inline="always")
def _log_one(x):
    """onnxruntime's float32 ln(x): x = m 2^e with m in [0.5, 1) (moved to [sqrt(1/2), sqrt(2))
    and shifted by -1), r = m p(m) / q(m), ln x = e ln 2 + r; each multiply and add rounded on
    its own (no fused multiply-adds: onnxruntime's build does not use FMA there). Written
    without branches (selects) so that the loop vectorizes; 0 gives -inf, +inf itself, a
    negative x or NaN gives NaN."""
    sub = x < np.float32(1.1754944e-38)                          # subnormal (or 0, or negative)
    xs = x * np.float32(8388608.0) if sub else x                 # 2^23: exact
    b = bits_of(xs)
    e = np.float32(wrap_int32(((b >> np.int32(23)) & np.int32(0xFF)) - np.int32(126))) \
        - (np.float32(23.0) if sub else np.float32(0.0))
    m = float_of((b & np.int32(-0x7F800001)) | np.int32(0x3F000000))   # x = m 2^e, m in [0.5, 1)
    low = m < _LOG_SQRT_HALF
    e = e - _ONE if low else e
    m = (m - _ONE) + m if low else m - _ONE
    p = m * _LOG_P3 + _LOG_P2
    p = m * p + _LOG_P1
    p = m * p
    q = m * _LOG_Q3 + _LOG_Q2
    q = m * q + _LOG_Q1
    q = m * q + _ONE
    y = e * _LOG_LN2 + p / q
    y = x if x == np.float32(np.inf) else y
    y = np.float32(-np.inf) if x == _ZERO else y
    return np.float32(np.nan) if not (x >= _ZERO) else y


@njit(cache=True, parallel=True, error_model="numpy")
def _log_kernel(x, out):
    n = x.shape[0]
    full = n - n % 4
    for b in prange((full + _BLOCK - 1) // _BLOCK):
        # a block as views indexed from 0: indices known not to be negative (no wrap-around
        # test per element) and divisions without a zero check (error_model) let it vectorize
        xs = x[b * _BLOCK:min(full, b * _BLOCK + _BLOCK)]
        ys = out[b * _BLOCK:min(full, b * _BLOCK + _BLOCK)]
        for i in range(xs.shape[0]):
            ys[i] = _log_one(xs[i])
    for i in range(full, n):          # past the last packet of 4: the C library's logf
        out[i] = np.log(x[i])


def log_f32(x) -> np.ndarray:
    """onnxruntime's float32 Log, element-wise, as a new float32 array of x's shape: Eigen's
    packets of 4 (``_log_one``), and the C library's logf for the last n mod 4 values, as
    Eigen's loop leaves them. (onnxruntime splits large tensors between threads; at the edges of
    its chunks a few more values take the logf path, which this does not reproduce.)"""
    x = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    if flat.size:
        _log_kernel(flat, out)
    return out.reshape(x.shape)
