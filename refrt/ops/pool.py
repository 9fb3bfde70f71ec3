"""Pooling: MaxPool, AveragePool, LpPool, their Global* forms, MaxRoiPool, MaxUnpool.

All windowed pools share one picture: ``window_geometry`` gives the output shape and pads,
``sliding_windows`` views the padded input as (N, C, *out, *kernel), and the pool reduces the
kernel axes. Max pads with the lowest value of the dtype, average and Lp pad with zeros (the
average divides by a count of the cells it may include). float16 / bfloat16 sums run in float32.

auto_pad SAME_* with dilations follows the spec (pads from the dilated kernel); onnxruntime
computes those pads from the undilated kernel and so returns a smaller output.
"""

from __future__ import annotations

import math

import numpy as np

from ..registry import op
from ._common import compute_dtype, pool_window, window_taps
from ._kernels import K, sized_threads


def _lowest(dtype):
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return -np.inf


@op("MaxPool", since=(1, 8, 10, 11, 12, 22))
def max_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape, pads=None,
             storage_order=0, strides=None, ctx):
    """Y[n, c, o] = max_k X[n, c, o * s - pb + k * d] (pads never win);
    Indices = flat index of the max in X (row major over N, C; row or column major within a plane
    by storage_order), the first one in window order on ties, as onnxruntime."""
    win = pool_window(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    taps = window_taps(x, win, _lowest(x.dtype))               # (K, N, C, *out)
    if not ctx.output_requested(1):
        return taps.max(axis=0)
    best = taps.argmax(axis=0)[None]
    y = np.take_along_axis(taps, best, axis=0)[0]
    # where each tap reads from inside its (n, c) plane, in the storage order asked for
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    plane_size = math.prod(spatial)
    order = "F" if storage_order else "C"
    plane = np.arange(plane_size, dtype=np.int64).reshape((1, 1) + spatial, order=order)
    plane_taps = window_taps(plane, win, -1)                   # (K, 1, 1, *out)
    local = np.take_along_axis(plane_taps, best, axis=0)[0]
    plane_start = (np.arange(n * c, dtype=np.int64) * plane_size).reshape(
        (n, c) + (1,) * len(spatial))
    return y, local + plane_start


def _window_counts(in_shape, win, include_pad):
    """Per output position, how many cells of its window average over: inside the input, plus
    the declared pads when ``include_pad`` (never the part of a ceil_mode window beyond them)."""
    counts = np.ones((), dtype=np.int64)
    for size, b, e, o, s, k, d in zip(in_shape, win.pads_begin, win.pads_end, win.out,
                                      win.strides, win.kernel, win.dilations):
        pos = np.arange(o)[:, None] * s - b + np.arange(k)[None, :] * d
        low, high = (-b, size + e) if include_pad else (0, size)
        per_axis = ((pos >= low) & (pos < high)).sum(axis=1)
        counts = np.multiply.outer(counts, per_axis)
    return counts


def _sum_in_order(terms):
    """terms[0] + terms[1] + ... added one after the other along the first axis (each addition
    rounded to the type), as a loop over the window adds them."""
    total = terms[0].copy()
    for t in terms[1:]:
        total += t
    return total


def _mlas_window_order(x, win, count_include_pad, ceil_mode, ctx) -> bool:
    """Whether onnxruntime averages these windows with MLAS's vectorized pooling kernel (else its
    generic loops): AveragePool before version 19 (onnxruntime runs versions 19 and 22, which
    added dilations, in its generic loops), float32, 2 or 3 spatial axes, no dilation, a last
    stride of 1 or 2, kernels of at most 32, a padded row that fits MLAS's 2048-value buffer,
    and not ceil_mode together with count_include_pad (onnxruntime takes its generic path
    there)."""
    return (x.dtype == np.float32 and (ctx is None or (ctx.numerics != "spec" and ctx.opset < 19))
            and len(win.kernel) >= 2 and all(d == 1 for d in win.dilations)
            and win.strides[-1] <= 2 and max(win.kernel) <= 32
            and x.shape[-1] + win.pads_begin[-1] + win.pads_end[-1] <= 2048 - 3
            and not (ceil_mode and count_include_pad))


@op("AveragePool", since=(1, 7, 10, 11, 19, 22))
def average_pool(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                 kernel_shape, pads=None, strides=None, ctx=None):
    """Y[n, c, o] = sum_k X[n, c, o * s - pb + k * d] / count, count = cells of the window inside
    X (plus the pads with count_include_pad; a ceil_mode overhang never counts, as onnxruntime).

    The sum's order is onnxruntime's: where it runs MLAS's vectorized kernel (float32, 2-D and
    3-D windows, versions before 19, see ``_mlas_window_order``) each window column is summed
    down the kernel's rows first, then the column sums left to right; otherwise the window is
    added row by row, left to right."""
    win = pool_window(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    ct = compute_dtype(x.dtype)
    counts = _window_counts(x.shape[2:], win, count_include_pad)
    if (x.dtype == np.float32 and len(win.kernel) == 2 and ctx is not None and ctx.numerics != "spec"
            and not _mlas_window_order(x, win, count_include_pad, ceil_mode, ctx)):
        # onnxruntime's generic loops: each window row by row, the padding skipped
        n, c = x.shape[:2]
        total = sized_threads(x.size, K.window_sums_2d, x.reshape((n * c,) + x.shape[2:]), win.kernel,
                              win.strides, win.dilations, win.pads_begin, win.out)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total.reshape((n, c) + win.out) / counts.astype(np.float32)
    mlas_order = _mlas_window_order(x, win, count_include_pad, ceil_mode, ctx)
    if mlas_order and len(win.kernel) == 2:
        n, c = x.shape[:2]
        total = sized_threads(x.size, K.window_column_sums_2d, x.reshape((n * c,) + x.shape[2:]),
                              win.kernel, win.strides, win.pads_begin, win.out)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total.reshape((n, c) + win.out) / counts.astype(np.float32)
    taps = window_taps(x.astype(ct, copy=False), win, 0)          # (K, N, C, *out), row major
    if mlas_order:
        width = win.kernel[-1]
        columns = _sum_in_order(taps.reshape((len(taps) // width, width) + taps.shape[1:]))
        total = _sum_in_order(columns)                                        # then across
    else:
        total = _sum_in_order(taps)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = total / counts.astype(ct)
    return y.astype(x.dtype, copy=False)


def _lp_pool(x, p, win):
    ct = compute_dtype(x.dtype)
    taps = window_taps(np.abs(x.astype(ct, copy=False)), win, 0)
    y = np.power(np.power(taps, ct.type(p)).sum(axis=0), ct.type(1.0 / p))
    return y.astype(x.dtype, copy=False)


@op("LpPool", since=(2, 11, 18, 22))
def lp_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape, p=2, pads=None,
            strides=None):
    """Y[n, c, o] = (sum_k |X[n, c, o * s - pb + k * d]| ^ p) ^ (1 / p), pads read as 0"""
    return _lp_pool(x, p, pool_window(x, kernel_shape, strides, dilations, pads, auto_pad,
                                       ceil_mode))


@op("LpPool", since=1)
def lp_pool_1(x, *, auto_pad="NOTSET", kernel_shape=None, p=2.0, pads=None, strides=None):
    """LpPool-1: as LpPool-2 with a float p (kernel_shape was not yet marked required)."""
    return _lp_pool(x, p, pool_window(x, kernel_shape, strides, None, pads, auto_pad))


def _global(x, name):
    if x.ndim < 3:
        raise ValueError(f"{name}: input must be (N, C, spatial...), got shape {list(x.shape)}")
    return tuple(range(2, x.ndim))


@op("GlobalAveragePool", since=(1, 22))
def global_average_pool(x, *, ctx=None):
    """Y[n, c, 1, ...] = mean over the spatial axes of X[n, c]

    float32 in the default numerics sums as onnxruntime's MLAS global pooling kernel: 4 lanes
    (lane k adds values k, k + 4, ... of the plane), the lanes combined (0 + 2) + (1 + 3), the
    last (size mod 4) values added one by one, then divided by the size. "spec" numerics:
    NumPy's mean."""
    axes = _global(x, "GlobalAveragePool")
    if x.dtype == np.float32 and (ctx is None or ctx.numerics != "spec") and x.size:
        planes = x.reshape(x.shape[0] * x.shape[1], -1)
        return sized_threads(x.size, K.global_average_rows, planes).reshape(x.shape[:2] + (1,) * len(axes))
    return x.mean(axis=axes, keepdims=True, dtype=compute_dtype(x.dtype)).astype(x.dtype)


@op("GlobalMaxPool", since=(1, 22))
def global_max_pool(x):
    """Y[n, c, 1, ...] = max over the spatial axes of X[n, c]"""
    return x.max(axis=_global(x, "GlobalMaxPool"), keepdims=True)


@op("GlobalLpPool", since=(1, 2, 22))
def global_lp_pool(x, *, p=2):
    """Y[n, c, 1, ...] = (sum over the spatial axes of |X[n, c]| ^ p) ^ (1 / p)"""
    axes = _global(x, "GlobalLpPool")
    ct = compute_dtype(x.dtype)
    s = np.power(np.abs(x.astype(ct, copy=False)), ct.type(p)).sum(axis=axes, keepdims=True)
    return np.power(s, ct.type(1.0 / p)).astype(x.dtype, copy=False)


def _round_half_away(v: float) -> int:
    """C's round(): halves go away from zero (numpy rounds them to even)."""
    return int(np.sign(v) * np.floor(abs(v) + 0.5))


@op("MaxRoiPool", since=(1, 22))
def max_roi_pool(x, rois, *, pooled_shape, spatial_scale=1.0):
    """Y[r, c, i, j] = max of X[batch(r), c] over bin (i, j) of roi r scaled by spatial_scale,
    corners rounded half away from zero, bins floor/ceil-split as in Caffe's ROIPooling and
    onnxruntime; an empty bin gives 0."""
    if x.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"MaxRoiPool: X must be (N, C, H, W) and rois (R, 5), got "
                         f"{list(x.shape)} and {list(rois.shape)}")
    ph, pw = (int(v) for v in pooled_shape)
    height, width = x.shape[2:]
    y = np.zeros((rois.shape[0], x.shape[1], ph, pw), dtype=x.dtype)
    for r, (batch, x1, y1, x2, y2) in enumerate(rois.astype(np.float64)):
        start_w, start_h, end_w, end_h = (_round_half_away(v * spatial_scale)
                                          for v in (x1, y1, x2, y2))
        bin_h = max(end_h - start_h + 1, 1) / ph
        bin_w = max(end_w - start_w + 1, 1) / pw
        for i in range(ph):
            h0 = min(max(int(np.floor(i * bin_h)) + start_h, 0), height)
            h1 = min(max(int(np.ceil((i + 1) * bin_h)) + start_h, 0), height)
            for j in range(pw):
                w0 = min(max(int(np.floor(j * bin_w)) + start_w, 0), width)
                w1 = min(max(int(np.ceil((j + 1) * bin_w)) + start_w, 0), width)
                if h1 > h0 and w1 > w0:
                    y[r, :, i, j] = x[int(batch), :, h0:h1, w0:w1].max(axis=(1, 2))
    return y


@op("MaxUnpool", since=(9, 11, 22))
def max_unpool(x, indices, output_shape=None, *, kernel_shape, pads=None, strides=None, ctx):
    """Y = zeros(out), Y.flat[I] = X: the inverse of MaxPool's (Y, Indices); out defaults to
    (in - 1) * s - pb - pe + k per spatial axis (the "inferred" shape).

    With ``output_shape``, onnxruntime (and PyTorch's max_unpool) read I as flat indices into
    the output of that shape; refrt does the same. onnx.reference and the backend test data read
    I as indices into the inferred shape, whose result is then padded at the end up to
    ``output_shape``: numerics="spec" does that.
    """
    n_sp = len(kernel_shape)
    if x.ndim != n_sp + 2 or indices.shape != x.shape:
        raise ValueError(f"MaxUnpool: X {list(x.shape)} and I {list(indices.shape)} must have the "
                         f"same shape of rank {n_sp + 2}")
    strides = strides or [1] * n_sp
    pads = pads or [0] * (2 * n_sp)
    inferred = x.shape[:2] + tuple(
        (size - 1) * s - pads[i] - pads[n_sp + i] + k
        for i, (size, s, k) in enumerate(zip(x.shape[2:], strides, kernel_shape)))
    shape = inferred
    if output_shape is not None:
        shape = tuple(int(v) for v in np.asarray(output_shape).ravel())
        if len(shape) != x.ndim:
            raise ValueError(f"MaxUnpool: output_shape {list(shape)} must have rank {x.ndim}")
    scatter_shape = inferred if ctx.numerics == "spec" else shape
    y = np.zeros(math.prod(scatter_shape), dtype=x.dtype)
    flat_idx = indices.astype(np.int64).ravel()
    if flat_idx.size and (flat_idx.min() < 0 or flat_idx.max() >= y.size):
        raise ValueError(f"MaxUnpool: an index is outside the output of shape "
                         f"{list(scatter_shape)}")
    y[flat_idx] = x.ravel()
    y = y.reshape(scatter_shape)
    if scatter_shape != shape:
        if any(a > b for a, b in zip(scatter_shape, shape)):
            raise ValueError(f"MaxUnpool: output_shape {list(shape)} is smaller than the "
                             f"inferred shape {list(scatter_shape)}")
        y = np.pad(y, [(0, b - a) for a, b in zip(scatter_shape, shape)])
    return y
