"""Scale and zero point, weights and biases: the arithmetic of linear quantization.

    real = scale * (q - zero_point)

Everything here reproduces onnxruntime's ``quant_utils`` bit for bit:

* ``compute_scale_zp``: the range is widened to include 0 (so 0.0 is exactly representable),
  optionally stretched to ``min_real_range``, optionally made symmetric ``[-absmax, absmax]``;
  ``scale = (rmax - rmin) / (qmax - qmin)`` is computed in float64 and stored as float32; a scale
  below float32's smallest normal number becomes scale 1, zero point 0; the zero point is
  ``round((qmin + qmax) / 2)`` when symmetric (int8 0, uint8 128), else ``round(qmin - rmin /
  scale)``. ``round`` is round-half-to-even everywhere.
* weights: ``clip(round(w / scale) + zero_point)``, the division in float32.
* biases (int32): ``round(b / (input_scale * weight_scale))`` in float64, zero point 0.

Example: the range [-0.7, 1.3] in uint8 gives scale 2/255 and zero point round(0.7 * 127.5) = 89.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

# ONNX element type -> (full range, symmetric range, reduced range, storage dtype)
_RANGES = {
    TensorProto.UINT8: ((0, 255), None, (0, 127), np.uint8),
    TensorProto.INT8: ((-128, 127), (-127, 127), (-64, 64), np.int8),
    TensorProto.UINT16: ((0, 65535), None, (0, 32767), np.uint16),
    TensorProto.INT16: ((-32768, 32767), (-32767, 32767), (-16384, 16384), np.int16),
    TensorProto.UINT4: ((0, 15), None, (0, 7), np.uint8),
    TensorProto.INT4: ((-8, 7), None, (-4, 3), np.int8),
}
SIGNED = (TensorProto.INT4, TensorProto.INT8, TensorProto.INT16)


def storage_dtype(qtype: int) -> np.dtype:
    """The numpy dtype holding values of the ONNX quantized type (int4 lives in int8)."""
    return np.dtype(_RANGES[_check(qtype)][3])


def quant_range(qtype: int, reduce_range: bool = False, symmetric: bool = False) -> tuple[int, int]:
    """(qmin, qmax). int8: [-128, 127], symmetric [-127, 127], reduce_range [-64, 64];
    uint8: [0, 255], reduce_range [0, 127]. reduce_range wins over symmetric."""
    full, sym, reduced, _ = _RANGES[_check(qtype)]
    if reduce_range:
        return reduced
    if symmetric and sym is not None:
        return sym
    return full


def _check(qtype: int) -> int:
    if qtype not in _RANGES:
        raise ValueError(f"unsupported quantized type {TensorProto.DataType.Name(qtype)}: refrt "
                         f"quantizes to int8, uint8, int16, uint16, int4 and uint4")
    return qtype


def compute_scale_zp(rmin, rmax, qmin: int, qmax: int, symmetric: bool = False,
                     min_real_range: float | None = None, zp_dtype=np.int32):
    """(zero_point, scale) for real values in [rmin, rmax] mapped onto [qmin, qmax].

    ``rmin``/``rmax`` are float32 (or float16) scalars or arrays (one entry per channel); the
    result has their shape: zero points of ``zp_dtype``, scales of the ranges' float type."""
    if qmin > 0 or qmax < 0:
        raise ValueError(f"qmin <= 0 <= qmax is required, got [{qmin}, {qmax}]")
    rmin, rmax = np.asarray(rmin), np.asarray(rmax)
    float_type = rmax.dtype
    rmin = np.minimum(rmin, np.zeros((), rmin.dtype))           # 0 must be representable
    rmax = np.maximum(rmax, np.zeros((), rmax.dtype))
    if min_real_range is not None:
        rmax = np.maximum(rmax, rmin + np.asarray(min_real_range, dtype=rmin.dtype))
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, absmax

    scale = (rmax.astype(np.float64) - rmin.astype(np.float64)) / (float(qmax) - float(qmin))
    stored = scale.astype(float_type)
    if float_type == np.float16:     # float16 subnormal scales still work: data is divided in fp32
        too_small = stored < np.finfo(np.float16).smallest_subnormal
    else:
        too_small = scale < np.finfo(float_type).tiny
    if symmetric:
        zero_point = np.full(scale.shape, round((qmin + qmax) / 2.0))
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            zero_point = np.round(qmin - rmin.astype(np.float64) / scale)
    zero_point = np.where(too_small, 0, zero_point).astype(zp_dtype)
    stored = np.where(too_small, np.ones((), float_type), stored).astype(float_type)
    return zero_point, stored


def snap_zero_point_uint8(rmin, rmax, qmin: int = 0, qmax: int = 255,
                          min_real_range: float | None = None):
    """ActivationRestrictedAsymmetric: the uint8 zero point snapped to qmin (rmin >= 0) or to the
    middle of [qmin, qmax] (rmin < 0), with the scale recomputed to cover [rmin, rmax]."""
    mid = (qmin + qmax + 1) // 2
    lo = min(float(np.squeeze(rmin)), 0.0)
    hi = max(float(np.squeeze(rmax)), 0.0)
    if min_real_range is not None and min_real_range > 0:
        hi = max(hi, lo + float(min_real_range))
    floor = None if min_real_range is None else min_real_range / (qmax - qmin)
    if hi <= lo:                                      # degenerate: all zero
        zp = qmin if lo >= 0.0 else mid
        denom = (qmax - qmin) if zp == qmin else max(1, (qmax - qmin) // 2)
        absmax = max(abs(lo), abs(hi))
        scale = (absmax if absmax > 0 else 1.0) / max(1, denom)
    elif lo >= 0.0:
        zp, scale = qmin, hi / (qmax - qmin)
    else:
        zp, scale = mid, max(-lo / (mid - qmin), hi / (qmax - mid))
    if floor is not None and scale < floor:
        scale = floor
    return np.array(zp, np.uint8), np.array(scale, np.float32)


def quantize_values(data: np.ndarray, qtype: int, scale, zero_point) -> np.ndarray:
    """clip(round_half_even(data / scale) + zero_point) in the storage dtype of ``qtype``; the
    division in float32 as onnxruntime does (``scale``/``zero_point`` broadcast against data)."""
    qmin, qmax = quant_range(qtype)
    q = np.round(data.astype(np.float32) / np.asarray(scale, np.float32))
    q = q + np.asarray(zero_point).astype(np.float32)
    return np.clip(q, qmin, qmax).astype(storage_dtype(qtype))


def data_range(data: np.ndarray, axis: int | None = None):
    """(rmin, rmax) of a weight: over all of it, or per index along ``axis``."""
    if axis is None:
        if data.size == 0:
            return np.zeros((), data.dtype), np.zeros((), data.dtype)
        return np.asarray(data.min()), np.asarray(data.max())
    other = tuple(i for i in range(data.ndim) if i != axis)
    return data.min(axis=other), data.max(axis=other)


def weight_params(data: np.ndarray, qtype: int, symmetric: bool, reduce_range: bool = False,
                  min_real_range: float | None = None, axis: int | None = None,
                  rmin=None, rmax=None):
    """(zero_point, scale) of a weight, per tensor or per channel along ``axis``, from its range
    (``rmin``/``rmax`` override it: scalars, or one per channel)."""
    qmin, qmax = quant_range(qtype, reduce_range, symmetric)
    lo, hi = data_range(data, axis)
    if rmin is not None:
        lo = np.asarray(rmin, dtype=data.dtype).reshape(lo.shape)
    if rmax is not None:
        hi = np.asarray(rmax, dtype=data.dtype).reshape(hi.shape)
    return compute_scale_zp(lo, hi, qmin, qmax, symmetric, min_real_range,
                            zp_dtype=storage_dtype(qtype))


def quantize_weight(data: np.ndarray, qtype: int, symmetric: bool, reduce_range: bool = False,
                    min_real_range: float | None = None, axis: int | None = None,
                    rmin=None, rmax=None):
    """(zero_point, scale, quantized data) of a weight (see :func:`weight_params`)."""
    zero_point, scale = weight_params(data, qtype, symmetric, reduce_range, min_real_range, axis,
                                      rmin, rmax)
    return zero_point, scale, quantize_with(data, qtype, scale, zero_point, axis)


def _along(values: np.ndarray, axis: int | None, rank: int) -> np.ndarray:
    """Per-channel ``values`` shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    if axis is None:
        return values
    shape = [1] * rank
    shape[axis] = -1
    return values.reshape(shape)


def quantize_with(data: np.ndarray, qtype: int, scale, zero_point, axis: int | None = None):
    """Quantize ``data`` with given (per-tensor or per-channel) parameters."""
    return quantize_values(data, qtype, _along(np.asarray(scale), axis, data.ndim),
                           _along(np.asarray(zero_point), axis, data.ndim))


INT32_MIN, INT32_MAX = float(np.iinfo(np.int32).min), float(np.iinfo(np.int32).max)


def quantize_bias(bias: np.ndarray, input_scale, weight_scale, beta: float = 1.0):
    """(int32 bias, bias scale): scale = input_scale * weight_scale * beta (float32),
    q = round(bias / scale) computed in float64 and clipped to int32."""
    scale = np.asarray(input_scale) * np.asarray(weight_scale) * beta
    q = np.round(np.asarray(bias, np.float64) / np.asarray(scale, np.float64))
    if np.any(q < INT32_MIN) or np.any(q > INT32_MAX):
        import warnings
        warnings.warn("a quantized bias exceeds the int32 range: its scale is too small",
                      stacklevel=2)
    q = np.clip(q, INT32_MIN, INT32_MAX).astype(np.int32)
    return q, np.asarray(scale, dtype=bias.dtype).reshape(-1)


def bias_safe_weight_scale(bias: np.ndarray, input_scale, weight_scale: np.ndarray,
                           per_channel: bool):
    """Weight scale(s) enlarged where input_scale * weight_scale would be too small for the int32
    bias (the bias would saturate). Returns (changed, new scale). Follows onnxruntime (itself
    after TFLite): the bias scale must reach 1.0001 * 2 * |b| / (2**32 - 2)."""
    if not weight_scale.size:
        return False, weight_scale
    qrange = float(np.iinfo(np.int32).max) - float(np.iinfo(np.int32).min + 1)
    in_scale = float(np.asarray(input_scale).item())
    new_scale = np.array(weight_scale, copy=True)
    changed = False
    if not per_channel:      # the whole bias's range, in float64
        absmax = max(abs(min(float(bias.min()), 0.0)), abs(max(float(bias.max()), 0.0)))
        limits = [((), 1.0001 * (2.0 * absmax) / qrange)]
    elif weight_scale.ndim == 1:   # per channel: onnxruntime computes 1.0001 * 2|b| in float32
        limits = [((i,), float(np.float32(1.0001) * (np.float32(2.0) * np.abs(bias[i]))) / qrange)
                  for i in range(weight_scale.shape[0])]
    else:
        limits = []
    for index, smallest in limits:
        candidate = in_scale * float(weight_scale[index])
        if 0.0 < candidate < smallest:
            scaled = float(weight_scale[index]) * (smallest / candidate)
            rounded = np.asarray(scaled, dtype=weight_scale.dtype)
            if weight_scale.dtype == np.float16 and rounded < scaled:
                rounded = np.nextafter(rounded, np.asarray(np.inf, weight_scale.dtype))
            new_scale[index] = rounded
            changed = True
    return changed, new_scale


def pack_int4(values: np.ndarray) -> bytes:
    """Two 4-bit values per byte, the first in the low nibble (ONNX's int4/uint4 layout)."""
    flat = values.astype(np.uint8).ravel() & 0x0F
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()
