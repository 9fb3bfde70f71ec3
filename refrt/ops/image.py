"""Image ops: resampling (Resize, Upsample, GridSample, AffineGrid), RoiAlign, NonMaxSuppression.

Resampling sums are computed in float64 and cast back to the input type once (integers
saturated; rounded half to even except in Resize, which truncates like onnxruntime). Resize's
source coordinates are computed in float32 as onnxruntime does, so that nearest-mode ties fall the
same way. Resize is separable: each resized axis is interpolated in turn, every output position
taking a weighted sum of a small window of input positions whose indices are clamped to the edge
(or whose weights are dropped with exclude_outside).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..registry import check_allocation, op
from ._common import as_int_list, normalize_axes, normalize_indices


def _cast_like(values, dtype):
    """float64 results -> dtype; integers are rounded half to even and saturated."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.round(values), info.min, info.max)
    elif dtype == np.bool_:
        values = values != 0
    return np.asarray(values).astype(dtype)


def _cubic_kernel(t, a):
    """Keys' cubic convolution kernel with coefficient a (support 2)."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _linear_kernel(t):
    return np.maximum(0.0, 1.0 - np.abs(t))


# ---------------------------------------------------------------- Resize / Upsample core

_COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                     "asymmetric", "tf_crop_and_resize")


def _source_coords(n_out, n_in, scale, mode, roi_start=0.0, roi_end=1.0):
    """Position in the input of each of the n_out output indices along one axis.

    Computed in float32 in onnxruntime's order of operations, so that rounding ties in nearest
    mode fall the same way. As in the spec, length_resized = scale * n_in, which is fractional
    when a scale does not divide evenly (n_out is its floor); onnxruntime uses n_out in
    align_corners and tf_crop_and_resize instead, so resizing by such a scale differs there
    (the backend test data follow the spec)."""
    f = np.float32
    y = np.arange(n_out, dtype=f)
    scale, n_in_f = f(scale), f(n_in)
    length = scale * n_in_f
    if mode == "half_pixel":
        x = (y + f(0.5)) / scale - f(0.5)
    elif mode == "half_pixel_symmetric":
        offset = n_in_f / f(2) * (f(1) - f(n_out) / length)
        x = offset + (y + f(0.5)) / scale - f(0.5)
    elif mode == "pytorch_half_pixel":
        x = (y + f(0.5)) / scale - f(0.5) if length > 1 else np.zeros(n_out, f)
    elif mode == "align_corners":
        x = y * (n_in_f - f(1)) / (length - f(1)) if length != 1 else np.zeros(n_out, f)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        start, end = f(roi_start), f(roi_end)
        if length != 1:
            x = start * (n_in_f - f(1)) + y * (end - start) * (n_in_f - f(1)) / (length - f(1))
        else:
            x = np.full(n_out, f(0.5) * (start + end) * (n_in_f - f(1)), dtype=f)
    else:
        raise ValueError(f"unknown coordinate_transformation_mode {mode!r}; expected one of "
                         f"{_COORDINATE_MODES}")
    return x.astype(np.float64)


def _nearest_index(x, nearest_mode, scale):
    if nearest_mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if nearest_mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if nearest_mode == "floor":
        return np.floor(x)
    if nearest_mode == "ceil":
        return np.ceil(x)
    if nearest_mode == "simple":  # Resize-10 / Upsample in onnxruntime: ceil when shrinking
        return np.ceil(x) if scale < 1 else np.trunc(x)
    raise ValueError(f"unknown nearest_mode {nearest_mode!r}")


def _scaled_dims(dims, scales):
    """floor(dim * scale), the product taken in float32 as onnxruntime does (so that 10 x 0.7
    gives 7, where float64 gives 6.9999999 and 6)."""
    return [int(np.floor(np.float32(d) * np.float32(s))) for d, s in zip(dims, scales)]


def _window_weights(x, n_in, mode, scale, cubic_coeff_a, antialias, exclude_outside):
    """(indices, weights), each (n_out, window): input positions floor(x) + j, j in [1-m, m],
    weighted by the kernel at (p - x) * s, where s = min(scale, 1) with antialias, else 1."""
    support = 2.0 if mode == "cubic" else 1.0
    s = min(scale, 1.0) if antialias else 1.0
    m = math.ceil(support / s)
    pos = np.floor(x)[:, None] + np.arange(1 - m, m + 1)[None, :]
    t = (pos - x[:, None]) * s
    w = _cubic_kernel(t, cubic_coeff_a) if mode == "cubic" else _linear_kernel(t)
    if exclude_outside:
        w = np.where((pos < 0) | (pos > n_in - 1), 0.0, w)
    if antialias or exclude_outside:
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(pos, 0, n_in - 1).astype(np.int64), w


def _interpolate(x, axes, scales, out_dims, *, mode, coordinate_mode, nearest_mode="simple",
                 cubic_coeff_a=-0.75, exclude_outside=0, antialias=0, roi=None,
                 extrapolation_value=0.0):
    """Resample `x` along `axes` to `out_dims` with the given per-axis `scales`."""
    shape = list(x.shape)
    for a, d in zip(axes, out_dims):
        shape[a] = d
    check_allocation(shape, np.float64 if mode != "nearest" else x.dtype)
    if mode not in ("nearest", "linear", "cubic"):
        raise ValueError(f"unknown mode {mode!r}; expected nearest, linear or cubic")
    out = x if mode == "nearest" else x.astype(np.float64)
    outside = np.zeros((1,) * x.ndim, dtype=bool)
    for i, (axis, scale, n_out) in enumerate(zip(axes, scales, out_dims)):
        n_in = x.shape[axis]
        if n_out == n_in and scale == 1 and coordinate_mode != "tf_crop_and_resize":
            continue
        if n_in == 0 and n_out > 0:
            raise ValueError(f"cannot resize an empty axis {axis} to {n_out}")
        start, end = (roi[i], roi[i + len(axes)]) if roi is not None else (0.0, 1.0)
        src = _source_coords(n_out, n_in, scale, coordinate_mode, start, end)
        if coordinate_mode == "tf_crop_and_resize":
            mask_shape = [1] * x.ndim
            mask_shape[axis] = n_out
            outside = outside | ((src < 0) | (src > n_in - 1)).reshape(mask_shape)
        if mode == "nearest":
            idx = np.clip(_nearest_index(src, nearest_mode, scale), 0, n_in - 1).astype(np.int64)
            out = np.take(out, idx, axis=axis)
            continue
        idx, w = _window_weights(src, n_in, mode, scale, cubic_coeff_a, antialias,
                                 exclude_outside)
        gathered = np.take(out, idx, axis=axis)          # axis -> (n_out, window)
        w = w.reshape(w.shape + (1,) * (x.ndim - axis - 1))
        out = (gathered * w).sum(axis=axis + 1)
    if mode != "nearest":   # integers: truncated toward zero, as onnxruntime does
        out = _cast_like(np.trunc(out) if x.dtype.kind in "iu" else out, x.dtype)
    if outside.any():
        out = np.where(outside, np.asarray(extrapolation_value).astype(x.dtype), out)
    return out


@op("Resize", since=(11, 13, 18, 19))
def resize(X, roi=None, scales=None, sizes=None, *, keep_aspect_ratio_policy="stretch",
           axes=None, antialias=0, extrapolation_value=0.0, exclude_outside=0,
           nearest_mode="round_prefer_floor", coordinate_transformation_mode="half_pixel",
           cubic_coeff_a=-0.75, mode="nearest"):
    """Y[o] = sum_p w(p - x(o)) X[p] per resized axis, x(o) from coordinate_transformation_mode,
    w the nearest / linear / cubic kernel (stretched by 1/scale with antialias when shrinking).

    Output size: `sizes` (adjusted by keep_aspect_ratio_policy, rounding half up), else
    floor(dim * scale). pytorch_half_pixel maps a 1-long output to 0 as the spec and
    onnxruntime do (onnx.reference uses -0.5). Integer inputs in linear / cubic mode are
    truncated toward zero like onnxruntime (onnx.reference rounds); as refrt interpolates in
    float64 and onnxruntime in float32, a value within float32 noise of an integer can still
    land one apart."""
    axes_ = list(range(X.ndim)) if axes is None else list(normalize_axes(axes, X.ndim))
    if len(set(axes_)) != len(axes_):
        raise ValueError(f"axes {axes} contain duplicates")
    scales = None if scales is None or np.size(scales) == 0 else np.asarray(scales, np.float64)
    sizes = None if sizes is None or np.size(sizes) == 0 else as_int_list(sizes, "sizes")
    if (scales is None) == (sizes is None):
        raise ValueError("Resize needs exactly one of 'scales' and 'sizes'")
    in_dims = [X.shape[a] for a in axes_]
    if sizes is not None:
        if len(sizes) != len(axes_):
            raise ValueError(f"sizes {sizes} must have {len(axes_)} values")
        scale_list = [float(np.float32(s) / np.float32(d)) if d else 1.0
                      for s, d in zip(sizes, in_dims)]
        if keep_aspect_ratio_policy != "stretch":
            if keep_aspect_ratio_policy not in ("not_larger", "not_smaller"):
                raise ValueError(f"unknown keep_aspect_ratio_policy "
                                 f"{keep_aspect_ratio_policy!r}")
            s = (min if keep_aspect_ratio_policy == "not_larger" else max)(scale_list)
            scale_list = [s] * len(axes_)
            sizes = [int(math.floor(s * d + 0.5)) for d in in_dims]
        out_dims = sizes
    else:
        scale_list = [float(s) for s in scales.reshape(-1)]
        if len(scale_list) != len(axes_) or not all(0 < s < math.inf for s in scale_list):
            raise ValueError(f"scales {scale_list} must be {len(axes_)} finite positive values")
        out_dims = _scaled_dims(in_dims, scale_list)
    roi_values = None
    if coordinate_transformation_mode == "tf_crop_and_resize":
        if roi is None or np.size(roi) != 2 * len(axes_):
            raise ValueError(f"tf_crop_and_resize needs roi with {2 * len(axes_)} values")
        roi_values = [float(v) for v in np.asarray(roi, np.float64).reshape(-1)]
    return _interpolate(X, axes_, scale_list, out_dims, mode=mode,
                        coordinate_mode=coordinate_transformation_mode,
                        nearest_mode=nearest_mode, cubic_coeff_a=cubic_coeff_a,
                        exclude_outside=exclude_outside, antialias=antialias, roi=roi_values,
                        extrapolation_value=extrapolation_value)


def _upsample(x, scales, mode):
    """Resize-10 / Upsample: floor(dim * scale) outputs, asymmetric coordinates, and (as
    onnxruntime does) nearest = truncation when enlarging, ceil when shrinking."""
    scales = [float(s) for s in np.asarray(scales, np.float64).reshape(-1)]
    if len(scales) != x.ndim or not all(0 < s < math.inf for s in scales):
        raise ValueError(f"scales {scales} must be {x.ndim} finite positive values")
    mode = {"bilinear": "linear"}.get(mode, mode)
    if mode not in ("nearest", "linear"):
        raise ValueError(f"unknown mode {mode!r}; expected nearest or linear")
    out_dims = _scaled_dims(x.shape, scales)
    return _interpolate(x, list(range(x.ndim)), scales, out_dims, mode=mode,
                        coordinate_mode="asymmetric")


@op("Resize", since=10)
def resize_v10(X, scales, *, mode="nearest"):
    """Y = X resampled by `scales` (nearest or linear), as Upsample-9 but shrinking allowed."""
    return _upsample(X, scales, mode)


@op("Upsample", since=1)
def upsample_v1(X, *, mode="nearest", height_scale, width_scale):
    """Y = the 4-D X enlarged by height_scale and width_scale (nearest or bilinear)."""
    if X.ndim != 4:
        raise ValueError(f"Upsample-1 needs a 4-D input, got shape {X.shape}")
    return _upsample(X, [1.0, 1.0, height_scale, width_scale], mode)


@op("Upsample", since=7)
def upsample_v7(X, *, mode="nearest", scales):
    """Y = X enlarged by the `scales` attribute (nearest or linear)."""
    return _upsample(X, scales, mode)


@op("Upsample", since=(9, 10))
def upsample(X, scales, *, mode="nearest"):
    """Y = X enlarged by `scales` (nearest or linear), output dims floor(dim * scale)."""
    return _upsample(X, scales, mode)


# ---------------------------------------------------------------- GridSample, AffineGrid

def _reflect(x, lo, hi):
    """Fold coordinates into [lo, hi] by reflecting at the borders as often as needed."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, lo)
    below, above = x < lo, x > hi
    dist = np.where(below, lo - x, np.where(above, x - hi, 0.0))
    flips = np.floor(dist / span)
    rest = dist - flips * span
    even = flips % 2 == 0
    return np.where(below, np.where(even, lo + rest, hi - rest),
                    np.where(above, np.where(even, hi - rest, lo + rest), x))


def _grid_sample(X, grid, mode, padding_mode, align_corners):
    """PyTorch's grid_sample for any number of spatial dims: the padding mode is applied to the
    sampling coordinate first (except border padding in cubic mode, as in PyTorch and
    onnxruntime; onnx.reference clamps that coordinate too), then to each tap's index."""
    _finite(grid, "GridSample", "grid")
    if mode not in ("nearest", "linear", "cubic"):
        raise ValueError(f"unknown mode {mode!r}")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"unknown padding_mode {padding_mode!r}")
    k = X.ndim - 2
    if k < 1 or grid.ndim != k + 2 or grid.shape[-1] != k or grid.shape[0] != X.shape[0]:
        raise ValueError(f"grid shape {grid.shape} does not fit input shape {X.shape}")
    dims = X.shape[2:]
    taps = []  # per spatial dim: (index, weight) pairs, arrays shaped like the output
    for i, d in enumerate(dims):
        g = grid[..., k - 1 - i].astype(np.float64)      # grid's last entry is x (the last dim)
        lo, hi = (0.0, d - 1.0) if align_corners else (-0.5, d - 0.5)
        c = (g + 1) / 2 * (d - 1) if align_corners else ((g + 1) * d - 1) / 2
        if mode == "nearest":
            c = np.rint(c)
        outside = (c < lo) | (c > hi)
        if padding_mode == "border" and mode != "cubic":
            c = np.where(outside, np.clip(c, 0, d - 1), c)
        elif padding_mode == "reflection":
            c = np.where(outside, _reflect(c, lo, hi), c)
        if mode == "nearest":
            base, offsets, weights = np.trunc(c), [0], [np.ones_like(c)]
        else:
            base = np.floor(c)
            t = c - base
            offsets = [0, 1] if mode == "linear" else [-1, 0, 1, 2]
            weights = [_linear_kernel(t - o) if mode == "linear" else _cubic_kernel(t - o, -0.75)
                       for o in offsets]
        dim_taps = []
        for o, w in zip(offsets, weights):
            p = base + o
            if padding_mode == "zeros":         # taps outside the input read 0
                w = w * ((p >= 0) & (p <= d - 1))
            elif padding_mode == "border":
                p = np.clip(p, 0, d - 1)
            else:
                p = np.trunc(_reflect(p, lo, hi))
            dim_taps.append((np.clip(p, 0, d - 1).astype(np.int64), w))
        taps.append(dim_taps)
    batch = np.arange(X.shape[0]).reshape((-1,) + (1,) * k)
    out = np.zeros(grid.shape[:-1] + (X.shape[1],), dtype=np.float64)
    for combo in itertools.product(*taps):
        weight = math.prod(w for _, w in combo)
        out += weight[..., None] * X[(batch, slice(None)) + tuple(p for p, _ in combo)]
    return _cast_like(np.moveaxis(out, -1, 1), X.dtype)


@op("GridSample", since=16)
def grid_sample_v16(X, grid, *, align_corners=0, padding_mode="zeros", mode="bilinear"):
    """Y[n, c, h, w] = X[n, c] sampled at grid[n, h, w] = (x, y) in [-1, 1] (bilinear, nearest
    or bicubic), outside values by padding_mode."""
    if X.ndim != 4:
        raise ValueError(f"GridSample-16 needs a 4-D input, got shape {X.shape}")
    modes = {"bilinear": "linear", "bicubic": "cubic", "nearest": "nearest"}
    if mode not in modes:
        raise ValueError(f"unknown mode {mode!r}; expected bilinear, nearest or bicubic")
    return _grid_sample(X, grid, modes[mode], padding_mode, align_corners)


@op("GridSample", since=(20, 22))
def grid_sample(X, grid, *, align_corners=0, padding_mode="zeros", mode="linear"):
    """Y[n, c, o...] = X[n, c] sampled at grid[n, o...] (normalized (x, y[, z]) in [-1, 1]) by
    linear, nearest (half to even) or cubic interpolation; outside values by padding_mode."""
    return _grid_sample(X, grid, mode, padding_mode, align_corners)


def _finite(coords, op: str, name: str) -> None:
    """Sampling positions must be numbers: NaN or +-inf has no pixel (the spec is silent)."""
    bad = ~np.isfinite(np.asarray(coords, np.float64))
    if bad.any():
        raise ValueError(f"{op}: {name} holds {int(bad.sum())} NaN or infinite coordinates "
                         f"(first at flat index {int(np.argmax(bad.ravel()))})")


def _normalized_positions(n, align_corners):
    """n evenly spaced positions in [-1, 1] (pixel centres; corners with align_corners)."""
    if align_corners:
        return np.linspace(-1.0, 1.0, n)
    return (2 * np.arange(n) + 1) / n - 1


@op("AffineGrid", since=20)
def affine_grid(theta, size, *, align_corners=0):
    """grid[n, (d,) h, w] = theta[n] @ (x_w, y_h, (z_d,) 1) with x, y, z evenly spaced in [-1, 1].

    A dimension of size 1 with align_corners=1 sits at -1, as in the spec's function body and
    onnx.reference (onnxruntime puts it at +1, PyTorch at 0)."""
    size = as_int_list(size, "size")
    spatial = size[2:]
    k = len(spatial)
    if k not in (2, 3) or theta.shape != (size[0], k, k + 1):
        raise ValueError(f"theta {theta.shape} and size {size} do not describe a 2-D or 3-D grid")
    axes = [_normalized_positions(n, align_corners) for n in spatial]   # (d,) h, w
    mesh = np.meshgrid(*axes, indexing="ij")
    points = np.stack(list(mesh[::-1]) + [np.ones(spatial)], axis=-1)        # (x, y, (z,) 1)
    grid = np.einsum("nij,...j->n...i", theta.astype(np.float64), points)
    return grid.astype(theta.dtype)


# ---------------------------------------------------------------- RoiAlign

def _roi_taps(coords, size):
    """Bilinear taps along one axis at RoiAlign's sample coordinates, onnxruntime's rules:
    a sample beyond [-1, size] contributes nothing, others are clamped into the feature map."""
    valid = (coords >= -1.0) & (coords <= size)
    c = np.clip(coords, 0.0, size)          # far outside (even 3e38) counts as outside
    low = np.floor(c).astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    frac = np.where(at_end, 0.0, c - low)
    return [(low, (1 - frac) * valid), (high, frac * valid)]


def _roi_align(X, rois, batch_indices, mode, output_height, output_width, sampling_ratio,
               spatial_scale, half_pixel):
    _finite(rois, "RoiAlign", "rois")
    if X.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 4:
        raise ValueError(f"expected X (N, C, H, W) and rois (R, 4), got {X.shape} and {rois.shape}")
    if mode not in ("avg", "max"):
        raise ValueError(f"unknown mode {mode!r}; expected 'avg' or 'max'")
    batch_indices = normalize_indices(np.asarray(batch_indices).reshape(-1), X.shape[0],
                                      "batch_indices")
    if batch_indices.size != rois.shape[0]:
        raise ValueError(f"{batch_indices.size} batch indices for {rois.shape[0]} rois")
    _, C, H, W = X.shape
    out = np.zeros((rois.shape[0], C, output_height, output_width), dtype=np.float64)
    offset = 0.5 if half_pixel else 0.0
    for r, (roi, b) in enumerate(zip(rois.astype(np.float64), batch_indices)):
        x1, y1, x2, y2 = roi * spatial_scale - offset
        roi_w, roi_h = x2 - x1, y2 - y1
        if not half_pixel:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / output_height, roi_w / output_width
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / output_height)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / output_width)
        if grid_h <= 0 or grid_w <= 0:
            continue
        # the adaptive sampling ratio of a huge roi asks for that many samples: checked first
        check_allocation((C, output_height, grid_h, output_width, grid_w), np.float64,
                         f"RoiAlign samples of roi {r}")
        ys = y1 + bin_h * (np.arange(output_height)[:, None] + (np.arange(grid_h) + 0.5) / grid_h)
        xs = x1 + bin_w * (np.arange(output_width)[:, None] + (np.arange(grid_w) + 0.5) / grid_w)
        fmap = X[b].astype(np.float64)
        terms = [wy[None, :, :, None, None] * wx[None, None, None, :, :]
                 * fmap[:, iy[:, :, None, None], ix[None, None, :, :]]
                 for iy, wy in _roi_taps(ys, H) for ix, wx in _roi_taps(xs, W)]
        if mode == "avg":   # (C, out_h, grid_h, out_w, grid_w) -> mean over the samples
            out[r] = sum(terms).sum(axis=(2, 4)) / (grid_h * grid_w)
        else:               # onnxruntime's max: the largest weighted tap over all samples
            out[r] = np.max(np.stack(terms), axis=0).max(axis=(2, 4))
    return out.astype(X.dtype)


@op("RoiAlign", since=10)
def roi_align_v10(X, rois, batch_indices, *, mode="avg", output_height=1, sampling_ratio=0,
                  output_width=1, spatial_scale=1.0):
    """RoiAlign with coordinate_transformation_mode='output_half_pixel' (no half-pixel shift,
    rois at least 1x1), the only behaviour of version 10."""
    return _roi_align(X, rois, batch_indices, mode, output_height, output_width,
                      sampling_ratio, spatial_scale, half_pixel=False)


@op("RoiAlign", since=(16, 22))
def roi_align(X, rois, batch_indices, *, coordinate_transformation_mode="half_pixel",
              mode="avg", output_height=1, sampling_ratio=0, output_width=1, spatial_scale=1.0):
    """Y[r, c, i, j] = mean (or max) over a grid of samples in bin (i, j) of roi r of the bilinear
    interpolation of X[batch_indices[r], c]; rois are (x1, y1, x2, y2) * spatial_scale.

    mode='max' follows onnxruntime (and onnx.reference): the maximum of the four weighted taps
    w_k * X[p_k] of each sample, not the maximum of interpolated values."""
    if coordinate_transformation_mode not in ("half_pixel", "output_half_pixel"):
        raise ValueError(f"unknown coordinate_transformation_mode "
                         f"{coordinate_transformation_mode!r}")
    return _roi_align(X, rois, batch_indices, mode, output_height, output_width,
                      sampling_ratio, spatial_scale,
                      half_pixel=coordinate_transformation_mode == "half_pixel")


# ---------------------------------------------------------------- NonMaxSuppression

def _corners(boxes, center_point_box):
    """(N, 4) boxes -> y_min, x_min, y_max, x_max."""
    if center_point_box:
        xc, yc, w, h = boxes.T
        return yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2
    y1, x1, y2, x2 = boxes.T
    return np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)


def _scalar(value, default, what):
    if value is None or np.size(value) == 0:
        return default
    if np.size(value) != 1:
        raise ValueError(f"{what} must hold one value, got shape {np.shape(value)}")
    return np.asarray(value).reshape(-1)[0]


@op("NonMaxSuppression", since=(10, 11))
def non_max_suppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                        score_threshold=None, *, center_point_box=0):
    """Y = int64 (batch, class, box) triples chosen greedily per batch and class: boxes in
    descending score order (ties: lower index first), scores > score_threshold when given, a box
    kept unless its IoU with a kept one is > iou_threshold, at most max_output_boxes_per_class."""
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 \
            or scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
        raise ValueError(f"boxes {boxes.shape} and scores {scores.shape} must be (B, N, 4) and "
                         f"(B, C, N)")
    if center_point_box not in (0, 1):
        raise ValueError(f"center_point_box must be 0 or 1, got {center_point_box}")
    max_out = max(int(_scalar(max_output_boxes_per_class, 0, "max_output_boxes_per_class")), 0)
    iou_thr = _scalar(iou_threshold, np.float32(0), "iou_threshold")
    score_thr = _scalar(score_threshold, None, "score_threshold")
    selected = []
    for b in range(boxes.shape[0]):
        y1, x1, y2, x2 = _corners(boxes[b], center_point_box)
        area = (y2 - y1) * (x2 - x1)
        for c in range(scores.shape[1]):
            s = scores[b, c]
            order = np.argsort(-s, kind="stable")
            if score_thr is not None:
                order = order[s[order] > score_thr]
            kept: list[int] = []
            for i in order:
                if len(kept) >= max_out:
                    break
                k = np.array(kept, dtype=np.int64)
                ih = np.minimum(y2[i], y2[k]) - np.maximum(y1[i], y1[k])
                iw = np.minimum(x2[i], x2[k]) - np.maximum(x1[i], x1[k])
                inter = np.where((ih > 0) & (iw > 0), ih * iw, 0)
                union = area[i] + area[k] - inter
                overlap = (inter > 0) & (area[i] > 0) & (area[k] > 0) & (union > 0)
                iou = np.divide(inter, union, out=np.zeros_like(inter), where=overlap)
                if not np.any(overlap & (iou > iou_thr)):
                    kept.append(int(i))
                    selected.append((b, c, int(i)))
    return np.array(selected, dtype=np.int64).reshape(-1, 3)
