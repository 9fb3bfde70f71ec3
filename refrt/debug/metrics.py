"""How far one tensor is from another: the numbers every comparison reports.

    m = tensor_metrics(got, ref, atol=1e-5, rtol=1e-5)
    m.equal        bit for bit (NaN equal to NaN)
    m.mismatched   elements with |got - ref| > atol + rtol * |ref| (NaN against a number counts)
    m.max_abs, m.max_rel, m.sqnr_db, m.max_ulp

* ``max_rel`` divides by ``max(|ref|, smallest normal)``;
* ``sqnr_db`` is the signal-to-quantization-noise ratio ``10 log10(sum ref^2 / sum (got - ref)^2)``
  (infinite when equal), what onnxruntime's quantization debugger reports;
* ``max_ulp`` counts representable values of the tensor's float type between the two (0 for
  integers: their ``max_abs`` says it all);
* ``error_at_scale(got, ref)``: the largest error in units of the type's epsilon at the tensor's
  scale (``max |got - ref| / (eps * max |ref|)``), the measure that says "summation order" (a few
  units) from "a different function" (thousands).

Integers, booleans and strings compare exactly; so does everything with ``atol = rtol = 0``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["TensorMetrics", "tensor_metrics", "ulp_distance", "error_at_scale", "is_float"]


@dataclass
class TensorMetrics:
    shape_ref: list
    shape_got: list
    dtype_ref: str
    dtype_got: str
    equal: bool
    mismatched: int
    size: int
    max_abs: float = 0.0
    max_rel: float = 0.0
    sqnr_db: float = float("inf")
    max_ulp: int = 0
    note: str = ""

    @property
    def matches(self) -> bool:
        """Within tolerance everywhere (and the same shape and type)."""
        return self.mismatched == 0 and not self.note

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("max_abs", "max_rel", "sqnr_db"):
            v = d[k]
            d[k] = None if v != v else ("inf" if v == float("inf") else v)   # JSON has no inf/NaN
        return d


def is_float(a: np.ndarray) -> bool:
    return a.dtype.kind == "f" or a.dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2",
                                                   "float8_e4m3fnuz", "float8_e5m2fnuz")


def tensor_metrics(got, ref, atol: float = 1e-5, rtol: float = 1e-5) -> TensorMetrics:
    """Compare ``got`` with the reference ``ref`` (see the module docstring)."""
    got, ref = np.asarray(got), np.asarray(ref)
    base = dict(shape_ref=list(ref.shape), shape_got=list(got.shape), dtype_ref=str(ref.dtype),
                dtype_got=str(got.dtype), size=int(ref.size))
    if got.shape != ref.shape:
        return TensorMetrics(**base, equal=False, mismatched=int(max(ref.size, got.size)),
                             note=f"shape {list(got.shape)} vs reference {list(ref.shape)}")
    note = "" if got.dtype == ref.dtype else f"type {got.dtype} vs reference {ref.dtype}"
    if not (is_float(ref) and is_float(got)):
        if ref.dtype.kind in "OUS" or got.dtype.kind in "OUS":
            diff = got.astype(object) != ref.astype(object)
            return TensorMetrics(**base, equal=not diff.any() and not note, mismatched=int(diff.sum()), note=note)
        g, r = got.astype(np.float64), ref.astype(np.float64)
        if ref.dtype.kind in "iub" and got.dtype.kind in "iub":
            d = np.abs(got.astype(object) - ref.astype(object)) if max(got.dtype.itemsize, ref.dtype.itemsize) == 8 \
                else np.abs(got.astype(np.int64) - ref.astype(np.int64))
            d = np.asarray(d, dtype=np.float64)
        else:
            d = np.abs(g - r)
        mism = int(np.count_nonzero(d))
        return TensorMetrics(**base, equal=mism == 0 and not note, mismatched=mism,
                             max_abs=float(d.max()) if d.size else 0.0,
                             max_rel=float((d / np.maximum(np.abs(r), 1)).max()) if d.size else 0.0,
                             sqnr_db=_sqnr(r, g), note=note)
    g, r = got.astype(np.float64), ref.astype(np.float64)
    nan_g, nan_r = np.isnan(g), np.isnan(r)
    both_nan = nan_g & nan_r
    one_nan = nan_g ^ nan_r
    with np.errstate(invalid="ignore", over="ignore"):
        same_inf = np.isinf(r) & (g == r)
        d = np.where(both_nan | same_inf, 0.0, np.abs(g - r))
        d = np.where(one_nan, np.inf, d)
        tiny = float(np.finfo(np.float32).tiny)
        rel = d / np.maximum(np.abs(np.where(np.isfinite(r), r, 0.0)), tiny)
        bad = one_nan | (d > atol + rtol * np.abs(np.where(np.isfinite(r), r, 0.0)))
    # bit for bit, any NaN equal to any NaN
    equal = not note and bool(np.all((got.view(_uint(got)) == ref.view(_uint(ref))) | both_nan))
    return TensorMetrics(**base, equal=equal, mismatched=int(bad.sum()),
                         max_abs=float(d.max()) if d.size else 0.0,
                         max_rel=float(rel.max()) if d.size else 0.0,
                         sqnr_db=_sqnr(np.where(both_nan, 0, r), np.where(both_nan, 0, g)),
                         max_ulp=ulp_distance(got, ref) if not note else 0, note=note)


def _uint(a: np.ndarray):
    return {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    with np.errstate(invalid="ignore", over="ignore"):
        noise = float(np.sum((got - ref) ** 2))
        signal = float(np.sum(ref ** 2))
    if noise != noise or signal != signal:
        return float("nan")
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10 * np.log10(signal / noise))


def ulp_distance(a, b) -> int:
    """The largest number of representable values between two float arrays of one type (NaN
    against anything: the type's whole range). float16, bfloat16, float32, float64."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.size == 0 or not is_float(a) or a.dtype.itemsize == 1:
        return 0
    ints = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
    bits = a.dtype.itemsize * 8

    def ordered(x):
        i = x.view(ints).astype(np.int64) if bits < 64 else x.view(np.int64).astype(object)
        lowest = -(1 << (bits - 1))
        return np.where(i < 0, lowest - i, i)

    with np.errstate(invalid="ignore"):
        nan = np.isnan(a.astype(np.float64)) ^ np.isnan(b.astype(np.float64))
        both = np.isnan(a.astype(np.float64)) & np.isnan(b.astype(np.float64))
    d = np.abs(ordered(a) - ordered(b))
    d = np.where(both, 0, d)
    if nan.any():
        return int((1 << bits) - 1)
    return int(np.max(d))


def error_at_scale(got, ref) -> float:
    """max |got - ref| in units of the type's epsilon at the scale of ``ref`` (its largest
    magnitude); 0 for equal tensors, inf where NaN or inf disagree."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref)
    eps = float(np.finfo(ref.dtype).eps) if ref.dtype.kind == "f" else float(np.finfo(np.float32).eps)
    r = ref.astype(np.float64)
    if got.shape != r.shape:
        return float("inf")
    finite = np.isfinite(r)
    if (np.isnan(got) != np.isnan(r)).any() or (~finite & (got != r) & ~np.isnan(r)).any():
        return float("inf")
    if not finite.any():
        return 0.0
    scale = float(np.abs(r[finite]).max()) or 1.0
    d = np.abs(got[finite] - r[finite])
    return float(d.max() / (eps * scale)) if d.size else 0.0
