"""How far a candidate's output may be from refrt's, derived from the op and the dtype.

Each op has a tolerance class (``tol`` in :mod:`refrt.testing.constraints`):

``exact``    integer, boolean, string and data-movement results, comparisons, min/max, the INT8 ops:
             equal, NaN where NaN (``-0.0 == 0.0``).
``rounded``  one IEEE operation per element (Add, Sub, Mul, Div, Sqrt, Reciprocal, ...): the
             correctly rounded result is unique, so equal as well.
``ulp``      element-wise functions of a math library (Exp, Tanh, Erf, Sigmoid, Pow, ...):
             ``|d| <= k * (ulp(e) + eps * min(1, max|e|))`` with k = 4 (1 for float16, which
             runtimes compute in float32 and round once): a few units in the last place, and near
             zero a few eps at the output's scale (a logistic of -18 may be 0 or 1.5e-8).
``sum``      sums of products (MatMul, Gemm, Conv, reductions, pools): the classic a-priori bound
             ``|d| <= 2 * n * eps * M`` where ``M`` is refrt's output on the absolute values of the
             inputs (``sum |a_i b_i|``, the condition of the sum) and n the number of inputs'
             elements (at least the number of terms per output), plus one ulp.
``scale``    normalizations and other composite ops (Softmax, LayerNormalization, LRN, Det, ...):
             ``|d| <= 4 * n * eps * max|e| + ulp(e)``.
``random``   random generators: only the shapes and dtypes are compared.

Ops without a table entry (those drawn from backend test seeds) get ``exact`` for non-float
outputs and ``scale`` for float outputs.
"""

from __future__ import annotations

import numpy as np

from .constraints import TABLE
from .data_sets import describe

__all__ = ["tolerance_class", "compare_output", "Mismatch"]

# ops whose sum bound needs refrt's result on |inputs| (linear in each input)
_LINEAR = {"MatMul", "Gemm", "Conv", "ConvTranspose", "ReduceSum", "ReduceMean", "Sum", "Mean",
           "CumSum", "AveragePool", "GlobalAveragePool", "ReduceL1", "ReduceL2", "ReduceSumSquare",
           "LpPool", "GlobalLpPool", "CumProd", "ReduceProd", "Einsum"}


def tolerance_class(op_type: str, domain: str = "ai.onnx") -> str:
    entry = TABLE.get(op_type) if domain in ("", "ai.onnx") else None
    return (entry or {}).get("tol", "default")


class Mismatch:
    """Why one output differs: ``kind`` is a failure class, ``error``/``bound`` the worst element's
    measured difference and allowed difference."""

    def __init__(self, kind: str, detail: str, error: float | None = None,
                 bound: float | None = None, index=None):
        self.kind, self.detail, self.error, self.bound, self.index = kind, detail, error, bound, index

    def __repr__(self):
        return f"Mismatch({self.kind}: {self.detail})"


def _ulp(a: np.ndarray) -> np.ndarray:
    return np.spacing(np.abs(a).astype(a.dtype)).astype(np.float64)


def compare_output(expected, got, tol: str, magnitude=None, n_terms: int = 1) -> Mismatch | None:
    """None if ``got`` is within the class's bound of ``expected``, else the Mismatch.

    ``magnitude``: for ``sum``, refrt's output on the absolute values of the inputs."""
    if isinstance(expected, list) or isinstance(got, list):
        if not isinstance(expected, list) or not isinstance(got, list) or len(expected) != len(got):
            return Mismatch("wrong_shape_or_dtype", f"sequence of {describe(got)}, expected "
                            f"{describe(expected)}")
        for i, (e, g) in enumerate(zip(expected, got)):
            m = compare_output(e, g, tol, None, n_terms)
            if m is not None:
                m.detail = f"sequence element {i}: {m.detail}"
                return m
        return None
    if isinstance(expected, dict) or isinstance(got, dict):
        def keys(m):
            return sorted(m, key=repr) if isinstance(m, dict) else describe(m)
        if not isinstance(expected, dict) or not isinstance(got, dict) or \
                keys(expected) != keys(got):
            return Mismatch("wrong_shape_or_dtype", f"map keys {keys(got)}, expected "
                            f"{keys(expected)}")
        for k in expected:
            m = compare_output(np.asarray(expected[k]), np.asarray(got[k]), tol, None, n_terms)
            if m is not None:
                m.detail = f"map key {k!r}: {m.detail}"
                return m
        return None
    if expected is None or got is None:
        if expected is None and got is None:
            return None
        return Mismatch("wrong_shape_or_dtype", f"got {describe(got)}, expected {describe(expected)}")
    e, g = np.asarray(expected), np.asarray(got)
    if e.dtype != g.dtype or e.shape != g.shape:
        return Mismatch("wrong_shape_or_dtype", f"got {g.dtype}{list(g.shape)}, expected "
                        f"{e.dtype}{list(e.shape)}")
    if tol == "random" or e.size == 0:
        return None
    e, g = e.ravel(), g.ravel()
    if magnitude is not None:
        magnitude = np.ravel(magnitude)
    if e.dtype.kind not in "fc":
        if e.dtype == object:
            bad = np.array([x != y for x, y in zip(e.ravel().tolist(), g.ravel().tolist())], bool)
        else:
            bad = (e != g).ravel()
        if bad.any():
            i = int(np.argmax(bad))
            return Mismatch("numeric", f"{int(bad.sum())} of {e.size} elements differ; first at flat "
                            f"index {i}: got {g.ravel()[i]!r}, expected {e.ravel()[i]!r}",
                            index=i)
        return None
    en, gn = np.isnan(e), np.isnan(g)
    if (en != gn).any():
        i = int(np.argmax((en != gn).ravel()))
        return Mismatch("nan_semantics", f"NaN where refrt has none or the reverse: "
                        f"{int((en != gn).sum())} of {e.size} elements; first at flat index {i}: "
                        f"got {g.ravel()[i]!r}, expected {e.ravel()[i]!r}", index=i)
    ok = en | (e == g)
    if ok.all():
        return None
    ef, gf = e.astype(np.float64), g.astype(np.float64)
    with np.errstate(all="ignore"):
        diff = np.abs(ef - gf)
    diff[ok] = 0.0
    inf_mismatch = (np.isinf(ef) | np.isinf(gf)) & ~ok
    bound = _bound(e, tol, magnitude, n_terms)
    bad = (diff > bound) | inf_mismatch
    if not bad.any():
        return None
    ratio = np.where(bound > 0, diff / np.where(bound > 0, bound, 1), np.inf)
    ratio[~bad] = 0
    i = int(np.argmax(ratio.ravel()))
    return Mismatch("numeric", f"{int(bad.sum())} of {e.size} elements beyond the {tol} bound; "
                    f"worst at flat index {i}: got {g.ravel()[i]!r}, expected {e.ravel()[i]!r} "
                    f"(|d| = {diff.ravel()[i]:.3g}, bound {float(np.ravel(bound)[i]):.3g})",
                    float(diff.ravel()[i]), float(np.ravel(bound)[i]), i)


def _bound(e: np.ndarray, tol: str, magnitude, n_terms: int) -> np.ndarray:
    eps = float(np.finfo(e.dtype).eps)
    finite = np.abs(e[np.isfinite(e)].astype(np.float64))
    scale = float(finite.max()) if finite.size else 0.0
    ulp = _ulp(np.where(np.isfinite(e), e, 0).astype(e.dtype))
    if tol in ("exact", "rounded"):
        return np.zeros(e.shape)
    if tol == "ulp":
        k = 1.0 if e.dtype == np.float16 else 4.0
        return k * (ulp + eps * min(1.0, scale))
    if tol == "sum" and magnitude is not None:
        m = np.abs(np.asarray(magnitude, np.float64))
        if m.shape == e.shape:
            m = np.where(np.isfinite(m), m, scale)
            return 2.0 * max(n_terms, 1) * eps * m + ulp
    # "scale", "default", and "sum" without a magnitude
    return 4.0 * max(n_terms, 1) * eps * scale + ulp


def needs_magnitude(op_type: str, tol: str) -> bool:
    return tol == "sum" and op_type in _LINEAR
