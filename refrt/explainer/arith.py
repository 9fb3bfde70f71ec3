"""Scalar arithmetic for explanations, written out rather than borrowed from the ops.

Everything here works on Python integers, ``fractions.Fraction`` and NumPy scalars, one element at
a time, so that an explanation recomputes a node's output by its own route:

* :func:`round_f32` rounds an exact rational to float32 (nearest, ties to even): with it a fused
  multiply-add is ``round_f32(a * b + c)`` computed exactly;
* :func:`rint_even` rounds half to even and says whether the value was a tie;
* :func:`saturate` clamps to an integer type's range and says whether it clamped;
* :func:`ulp_distance` counts the float32 (or float16/float64) values between two results;
* the float32 sums in the orders kernels and libraries use (left to right, fused multiply-adds,
  NumPy's pairwise summation).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

F32 = np.float32
_TWO = Fraction(2)
_F32_MAX_EXP = 128          # 2^128 and above round to infinity
_F32_MIN_EXP = -126         # smallest normal exponent
_F32_MANT = 23              # stored significand bits


def exact(v) -> Fraction:
    """The exact rational value of a finite number (int, float, NumPy scalar)."""
    if isinstance(v, (int, np.integer)):
        return Fraction(int(v))
    return Fraction(float(v))


def round_f32(q: Fraction) -> np.float32:
    """``q`` rounded once to float32: nearest, ties to even, subnormals and overflow to inf."""
    if q == 0:
        return F32(0)
    sign = -1 if q < 0 else 1
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if _TWO ** e > a:
        e -= 1
    e = max(e, _F32_MIN_EXP)
    ulp = _TWO ** (e - _F32_MANT)
    v = round(a / ulp) * ulp            # Fraction.__round__ rounds half to even
    if v >= _TWO ** _F32_MAX_EXP:
        return F32(sign * np.inf)
    return F32(sign * float(v))         # v has at most 24 significant bits: float() is exact


def fma32(a, b, c) -> np.float32:
    """float32 fused multiply-add: ``a * b + c`` computed exactly, rounded once."""
    a, b, c = F32(a), F32(b), F32(c)
    if not (np.isfinite(a) and np.isfinite(b) and np.isfinite(c)):
        with np.errstate(all="ignore"):
            return F32(np.float64(a) * np.float64(b) + np.float64(c))
    return round_f32(exact(a) * exact(b) + exact(c))


def rint_even(v) -> tuple[int, bool]:
    """round half to even of a finite float -> (integer, was it a tie)."""
    q = exact(v)
    lower = q.numerator // q.denominator
    frac = q - lower
    tie = frac == Fraction(1, 2)
    if frac < Fraction(1, 2):
        r = lower
    elif frac > Fraction(1, 2):
        r = lower + 1
    else:
        r = lower if lower % 2 == 0 else lower + 1
    return int(r), bool(tie)


def int_range(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def saturate(v: int, lo: int, hi: int) -> tuple[int, bool]:
    """v clamped to [lo, hi] -> (value, did it clamp)."""
    if v < lo:
        return lo, True
    if v > hi:
        return hi, True
    return v, False


def wrap_int32(v: int) -> int:
    """Two's complement wrap of an exact integer to int32 (what an int32 accumulator holds)."""
    return (v + 2 ** 31) % 2 ** 32 - 2 ** 31


def _ordered_bits(x) -> int:
    """An integer that orders floats as their values do (adjacent floats differ by 1)."""
    x = np.asarray(x)
    width = {2: np.int16, 4: np.int32, 8: np.int64}[x.dtype.itemsize]
    i = int(x.view(width))
    return i if i >= 0 else -(i & ((1 << (8 * x.dtype.itemsize - 1)) - 1))


def ulp_distance(a, b) -> int | None:
    """How many representable values of a's float type lie between a and b (0 = same value);
    None when either is NaN."""
    a, b = np.asarray(a), np.asarray(b).astype(np.asarray(a).dtype)
    if np.isnan(a) or np.isnan(b):
        return None
    return abs(_ordered_bits(a) - _ordered_bits(b))


def same_bits(a, b) -> bool:
    """Bit-for-bit equality of two scalars of one dtype (NaN equals NaN; 0.0 differs from -0.0)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f" or a.dtype.kind == "V":
        return a.tobytes() == b.tobytes() or (a.dtype.kind == "f" and bool(np.isnan(a) and np.isnan(b)))
    return bool(a == b)


# ---------------------------------------------------------------- float32 sums in known orders

def sum_left_to_right(values) -> np.float32:
    """((v0 + v1) + v2) + ... in float32, starting from 0."""
    s = F32(0)
    for v in values:
        s = F32(s + F32(v))
    return s


def dot_products_then_sum(a, b) -> np.float32:
    """Each product rounded to float32, then summed left to right (no fused multiply-add)."""
    return sum_left_to_right([F32(F32(x) * F32(y)) for x, y in zip(a, b)])


def dot_fma(a, b, start=0.0) -> np.float32:
    """s = fma(a[k], b[k], s) for k = 0, 1, ...: one rounding per step, k in order."""
    s = F32(start)
    for x, y in zip(a, b):
        s = fma32(x, y, s)
    return s


def dot_exact(a, b) -> np.float32:
    """The exact sum of the exact products, rounded once to float32."""
    return round_f32(sum((exact(F32(x)) * exact(F32(y)) for x, y in zip(a, b)), Fraction(0)))


def _pairwise(v: list) -> np.float32:
    """NumPy's pairwise summation of float32 values (numpy/_core/src/umath/loops_utils.h)."""
    n = len(v)
    if n < 8:
        s = F32(-0.0)
        for x in v:
            s = F32(s + x)
        return s
    if n <= 128:
        r = list(v[:8])
        i = 8
        while i < n - n % 8:
            for j in range(8):
                r[j] = F32(r[j] + v[i + j])
            i += 8
        s = F32(F32(F32(r[0] + r[1]) + F32(r[2] + r[3])) + F32(F32(r[4] + r[5]) + F32(r[6] + r[7])))
        for x in v[i:]:
            s = F32(s + x)
        return s
    n2 = n // 2
    n2 -= n2 % 8
    return F32(_pairwise(v[:n2]) + _pairwise(v[n2:]))


def numpy_sum(values) -> np.float32:
    """``np.sum`` of a float32 vector contiguous in memory (NumPy's pairwise summation: blocks of
    up to 128 values summed in 8 interleaved partial sums, larger runs split in halves)."""
    return _pairwise([F32(x) for x in values])


# ---------------------------------------------------------------- formatting

def fmt(v) -> str:
    """A scalar as text: integers as they are, floats in the shortest form that reads back to the
    same value of their type."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, Fraction):
        return str(v)
    a = np.asarray(v)[()]
    if a.dtype.kind == "f":
        if not np.isfinite(a):
            return str(float(a))
        return np.format_float_positional(a, unique=True, trim="-") if abs(float(a)) >= 1e-4 \
            or a == 0 else np.format_float_scientific(a, unique=True, trim="-")
    return str(v)


def fmt_list(values, limit: int = 12) -> str:
    """[v0, v1, ...] with the middle left out past ``limit`` values."""
    vals = list(values)
    if len(vals) <= limit:
        return "[" + ", ".join(fmt(v) for v in vals) + "]"
    head, tail = vals[:limit - 4], vals[-3:]
    return ("[" + ", ".join(fmt(v) for v in head) + f", ... ({len(vals) - len(head) - len(tail)} more) ..., "
            + ", ".join(fmt(v) for v in tail) + "]")


def fmt_exact(v) -> str:
    """A float with its exact value when the short form hides digits (e.g. 0.1f = 0.100000001490116...)."""
    short = fmt(v)
    a = np.asarray(v)[()]
    if a.dtype.kind != "f" or not np.isfinite(a):
        return short
    if Fraction(short) == exact(a):
        return short
    return f"{short} (exactly {float(a)!r})" if a.dtype == np.float64 else \
        f"{short} (exactly {np.format_float_positional(np.float64(a), unique=False, precision=30, trim='-')})"
