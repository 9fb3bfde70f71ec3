"""float32 fused multiply-add in NumPy: ``float32(a * b + c)`` with one rounding, as a CPU's
``vfmadd`` computes it.

refrt reproduces float arithmetic that onnxruntime's kernels fuse with it: the NumPy twins of
the MLAS-approximation kernels (``twins``), and ops whose ORT formulas are written in FMAs
(QLinearAdd / QLinearMul, MLAS's logistic and tanh in ``refrt.ops.contrib_quant``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fma32"]


def fma32(a, b, c):
    """float32(a * b + c) with one rounding (a fused multiply-add), element-wise.

    The product of two float32 values is exact in float64; the float64 sum is rounded to odd
    (its last bit set when inexact), and rounding that to float32 then gives the correctly
    rounded result (53 bits >= 24 + 2)."""
    a, b, c = (np.asarray(v, np.float32).astype(np.float64) for v in (a, b, c))
    p = a * b
    s = p + c
    t = s - p
    err = (p - (s - t)) + (c - t)                        # s + err == p + c exactly (TwoSum)
    inexact_even = (err != 0) & ((s.view(np.int64) & 1) == 0)
    if inexact_even.any():
        s = np.where(inexact_even, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)

