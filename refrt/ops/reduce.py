"""Reductions: Reduce*, ArgMax/ArgMin, CumSum/CumProd, TopK, LpNormalization and the softmax
family (Softmax, LogSoftmax, Hardmax).

Float math on float16, bfloat16 and float8 runs in float32 and is rounded once at the end
(:func:`refrt.ops._common.compute_dtype`); integer sums and products wrap like C.
"""

from __future__ import annotations

import inspect

import numpy as np

from ..registry import op
from ._common import (
    ROW_KERNEL_MIN_SIZE,
    as_int_list,
    compute_dtype,
    is_f32_scalar,
    mlas_wide_kernels,
    normalize_axes,
    normalize_axis,
)
from ._kernels import K, sized_threads


def _result(y, dtype) -> np.ndarray:
    return np.asarray(y).astype(dtype, copy=False)


# ---------------------------------------------------------------- Reduce*

def reduction_axes(rank: int, axes, noop_with_empty_axes: int = 0) -> tuple[int, ...]:
    """The axes a Reduce* op reduces, normalized, from its ``axes`` attribute (older opsets) or
    input (newer ones). Absent or empty axes mean every axis, unless ``noop_with_empty_axes`` is
    set: then no axis is reduced, but (as the spec says) composite reductions still apply their
    elementwise steps: ReduceL1 gives |X|, ReduceSumSquare X^2, ReduceLogSum ln(X)."""
    axes = [] if axes is None else as_int_list(axes, "axes")
    if not axes:
        return () if noop_with_empty_axes else tuple(range(rank))
    axes = normalize_axes(axes, rank)
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes {list(axes)} name an axis more than once")
    return axes


# Integer sums that leave the type's range: the spec is silent. "spec" wraps modulo 2^bits, as an
# accumulator of the type does (and onnx.reference); "ort" gives the exact result clamped to the
# type's range, as onnxruntime does (its partial sums do not wrap: [2^30, 2^30, -2^30] is 2^30).
SATURATING_IN_ORT = {"ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceProd"}


def _reduce(kernel, data: np.ndarray, axes, keepdims: int, noop_with_empty_axes: int, saturate=False,
            ctx=None, takes_ctx=False):
    axes = reduction_axes(data.ndim, axes, noop_with_empty_axes)
    x = data.astype(compute_dtype(data.dtype), copy=False)
    with np.errstate(all="ignore"):
        y = kernel(x, axes, bool(keepdims), ctx) if takes_ctx else kernel(x, axes, bool(keepdims))
        if saturate and data.dtype.kind in "iu":
            info = np.iinfo(data.dtype)
            wide = kernel(data.astype(np.float64), axes, bool(keepdims))    # only for the range
            # bounds as exact float64 powers of two (info.max itself rounds up in float64)
            hi, lo = float(info.max) + 1.0, float(info.min)
            y = np.where(wide >= hi, info.max, np.where(wide < lo, info.min, y))
    return _result(y, data.dtype)


def _reduce_op(name: str, axes_attribute: tuple, axes_input: tuple):
    """Register ``kernel(x, axes, keepdims)`` as Reduce op ``name``: in the versions
    ``axes_attribute`` axes is an attribute, in ``axes_input`` it is an optional input and
    ``noop_with_empty_axes`` exists. Both share :func:`reduction_axes` and :func:`_reduce`."""

    def register(kernel):
        takes_ctx = "ctx" in inspect.signature(kernel).parameters   # its order depends on numerics

        def saturate(ctx):
            return name in SATURATING_IN_ORT and (ctx is None or ctx.numerics != "spec")

        def with_axes_attribute(data, *, axes=None, keepdims=1, ctx=None):
            return _reduce(kernel, data, axes, keepdims, 0, saturate(ctx), ctx, takes_ctx)

        def with_axes_input(data, axes=None, *, keepdims=1, noop_with_empty_axes=0, ctx=None):
            return _reduce(kernel, data, axes, keepdims, noop_with_empty_axes, saturate(ctx), ctx,
                           takes_ctx)

        for fn, suffix in ((with_axes_attribute, "axes_attribute"),
                           (with_axes_input, "axes_input")):
            fn.__name__ = fn.__qualname__ = f"{kernel.__name__}_{suffix}"
            fn.__doc__ = kernel.__doc__
        op(name, since=axes_attribute)(with_axes_attribute)
        op(name, since=axes_input)(with_axes_input)
        return kernel

    return register


def _lowest(dtype):
    """The identity of max: -inf, or the smallest integer, or False."""
    if dtype == np.bool_:
        return False
    return np.iinfo(dtype).min if dtype.kind in "iu" else -np.inf


def _highest(dtype):
    if dtype == np.bool_:
        return True
    return np.iinfo(dtype).max if dtype.kind in "iu" else np.inf


# -- float32 sums in onnxruntime's order ------------------------------------------------------
#
# onnxruntime first merges the axes into runs of kept (K) and reduced (R) ones, ignoring axes of
# size 1, and has a fast path for the shapes R, KR, RK and KRK:
# * R and KR: each contiguous run of values summed by Eigen's vectorized sum (SSE, 4 lanes): from
#   the first 16-byte-aligned value on, two 4-lane accumulators over 8 values at a time, then one
#   more block of 4 if left, the two combined, the 4 lanes as (0 + 2) + (1 + 3), then the values
#   before the aligned start and after the last block one by one. Where a row starts depends on
#   its place in the buffer (onnxruntime's buffers are 64-byte aligned).
# * RK: the reduced rows added one after the other.
# * KRK: per index of the first kept run, a [1, R] x [R, N] matrix product of a row of ones by
#   the slice (MLAS's SGEMM on one thread, whose M = 1 kernel adds the rows in groups of 4, 2
#   and 1, each group's sum added to the output in turn).
# * the others: an order not reproduced here (NumPy's sum).

def _merged_runs(shape, axes):
    """("KR"-style kinds, sizes) of shape's runs of kept and reduced axes, size-1 axes left out."""
    kinds, sizes = [], []
    for i, d in enumerate(shape):
        if d == 1:
            continue
        kind = "R" if i in axes else "K"
        if kinds and kinds[-1] == kind:
            sizes[-1] *= d
        else:
            kinds.append(kind)
            sizes.append(d)
    return "".join(kinds), sizes


def ort_float_sum(x, axes):
    """sum(x) over ``axes`` (reduced axes kept as size 1) in onnxruntime's order, for float32 x;
    None for a shape whose order is not reproduced."""
    if x.dtype != np.float32 or x.size == 0:
        return None
    kinds, sizes = _merged_runs(x.shape, axes)
    out_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    if kinds in ("", "K"):
        return x.reshape(out_shape).copy()
    if kinds in ("R", "KR"):
        rows = np.ascontiguousarray(x).reshape(-1, sizes[-1])
        offsets = np.arange(len(rows), dtype=np.int64) * sizes[-1]
        return sized_threads(x.size, K.eigen_row_sums, rows, offsets).reshape(out_shape)
    if kinds == "RK":
        rows = np.ascontiguousarray(x).reshape(sizes[0], -1)
        total = rows[0].copy()
        for r in rows[1:]:
            total += r
        return total.reshape(out_shape)
    if kinds == "KRK":
        # the M = 1 kernel of every slice at once (m1_groups: one group per leading index, one
        # slice of K)
        slices = np.ascontiguousarray(x).reshape(sizes)
        ones = np.ones((sizes[0], sizes[1]), np.float32)
        return sized_threads(x.size, K.m1_groups, ones, slices, sizes[1]).reshape(out_shape)
    return None


def _float_sum(x, axes, keepdims, ctx):
    if ctx is None or ctx.numerics != "spec":
        total = ort_float_sum(x, axes)
        if total is not None:
            return total if keepdims else total.reshape([d for i, d in enumerate(x.shape) if i not in axes])
    return np.sum(x, axis=axes, keepdims=keepdims)


@_reduce_op("ReduceSum", axes_attribute=(1, 11), axes_input=(13,))
def reduce_sum(x, axes, keepdims, ctx=None):
    """Y = sum(X) over axes (0 for an empty set)

    float32 in the default numerics adds in onnxruntime's order where it is known
    (``ort_float_sum``); "spec" numerics: NumPy's sum."""
    return _float_sum(x, axes, keepdims, ctx)


@_reduce_op("ReduceMean", axes_attribute=(1, 11, 13), axes_input=(18,))
def reduce_mean(x, axes, keepdims, ctx=None):
    """Y = sum(X) / count over axes. The spec leaves an empty set undefined: refrt gives 0, as
    onnxruntime does. Integers: the mean truncated toward zero. float32 sums as ReduceSum."""
    count = int(np.prod([x.shape[a] for a in axes]))
    total = _float_sum(x, axes, keepdims, ctx)
    if total.dtype == np.float32:
        return total / np.float32(max(count, 1))
    return total / max(count, 1)



@_reduce_op("ReduceMax", axes_attribute=(1, 11, 12, 13), axes_input=(18, 20))
def reduce_max(x, axes, keepdims):
    """Y = max(X) over axes (the type's lowest value, -inf for floats, for an empty set)"""
    return np.max(x, axis=axes, keepdims=keepdims, initial=_lowest(x.dtype))


@_reduce_op("ReduceMin", axes_attribute=(1, 11, 12, 13), axes_input=(18, 20))
def reduce_min(x, axes, keepdims):
    """Y = min(X) over axes (the type's highest value, inf for floats, for an empty set)"""
    return np.min(x, axis=axes, keepdims=keepdims, initial=_highest(x.dtype))


@_reduce_op("ReduceProd", axes_attribute=(1, 11, 13), axes_input=(18,))
def reduce_prod(x, axes, keepdims):
    """Y = product of X over axes (1 for an empty set)"""
    return np.prod(x, axis=axes, keepdims=keepdims)


@_reduce_op("ReduceL1", axes_attribute=(1, 11, 13), axes_input=(18,))
def reduce_l1(x, axes, keepdims):
    """Y = sum(|X|) over axes"""
    return np.sum(np.abs(x), axis=axes, keepdims=keepdims)


@_reduce_op("ReduceL2", axes_attribute=(1, 11, 13), axes_input=(18,))
def reduce_l2(x, axes, keepdims):
    """Y = sqrt(sum(X^2)) over axes (integers: computed in float64, truncated)"""
    x = x.astype(np.float64) if x.dtype.kind in "iub" else x
    return np.sqrt(np.sum(x * x, axis=axes, keepdims=keepdims))


@_reduce_op("ReduceSumSquare", axes_attribute=(1, 11, 13), axes_input=(18,))
def reduce_sum_square(x, axes, keepdims):
    """Y = sum(X^2) over axes"""
    return np.sum(x * x, axis=axes, keepdims=keepdims)


@_reduce_op("ReduceLogSum", axes_attribute=(1, 11, 13), axes_input=(18, 28))
def reduce_log_sum(x, axes, keepdims):
    """Y = ln(sum(X)) over axes (-inf for an empty set)"""
    return np.log(np.sum(x, axis=axes, keepdims=keepdims))


@_reduce_op("ReduceLogSumExp", axes_attribute=(1, 11, 13), axes_input=(18, 28))
def reduce_log_sum_exp(x, axes, keepdims):
    """Y = ln(sum(e^X)) over axes, computed as m + ln(sum(e^(X - m))) with m = max(X) so that it
    does not overflow (-inf for an empty set)"""
    if x.dtype.kind in "iub":
        x = x.astype(np.float64)
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0)
    y = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return y if keepdims else np.squeeze(y, axis=axes)


# ---------------------------------------------------------------- ArgMax, ArgMin

def _arg_extreme(data, axis, keepdims, select_last_index, largest, ctx=None):
    """Index of the first (or last) largest/smallest value along axis, int64. The spec says
    nothing about NaN. "ort" follows onnxruntime's scan, where a NaN never wins except when it
    comes first (then the index is 0); "spec" takes a NaN as the extreme, as ReduceMax/ReduceMin
    give NaN there: the index of the first NaN (the last with select_last_index), as NumPy and
    onnx.reference."""
    axis = normalize_axis(axis, data.ndim)
    if data.shape[axis] == 0:
        raise ValueError(f"cannot take the index of an extreme value over empty axis {axis}")
    x = data.astype(compute_dtype(data.dtype), copy=False)
    if ctx is not None and ctx.numerics == "spec" and x.dtype.kind == "f" and np.isnan(x).any():
        find = np.argmax if largest else np.argmin     # NumPy's: NaN is the extreme
        if select_last_index:
            idx = x.shape[axis] - 1 - find(np.flip(x, axis), axis=axis)
        else:
            idx = find(x, axis=axis)
        return _result(np.expand_dims(idx, axis) if keepdims else idx, np.int64)
    with np.errstate(invalid="ignore"):
        best = (np.fmax if largest else np.fmin).reduce(x, axis=axis, keepdims=True)
        hit = x == best
    if x.dtype.kind == "f":
        leading_nan = np.isnan(np.take(x, [0], axis=axis))
        first = np.arange(x.shape[axis]).reshape((-1,) + (1,) * (x.ndim - axis - 1)) == 0
        hit = np.where(leading_nan, first, hit)
    if select_last_index:
        idx = x.shape[axis] - 1 - np.argmax(np.flip(hit, axis), axis=axis)
    else:
        idx = np.argmax(hit, axis=axis)
    if keepdims:
        idx = np.expand_dims(idx, axis)
    return _result(idx, np.int64)


@op("ArgMax", since=(1, 11, 12, 13))
def arg_max(data, *, axis=0, keepdims=1, select_last_index=0, ctx=None):
    """Y = index of the largest value along axis (the first one, or the last with
    select_last_index), int64"""
    return _arg_extreme(data, axis, keepdims, select_last_index, largest=True, ctx=ctx)


@op("ArgMin", since=(1, 11, 12, 13))
def arg_min(data, *, axis=0, keepdims=1, select_last_index=0, ctx=None):
    """Y = index of the smallest value along axis (the first one, or the last with
    select_last_index), int64"""
    return _arg_extreme(data, axis, keepdims, select_last_index, largest=False, ctx=ctx)


# ---------------------------------------------------------------- Softmax, LogSoftmax, Hardmax

def _softmax_op(name: str, mlas: str | None = None):
    """Register ``kernel(x, axis)`` as ``name`` for both shapes of the spec: opsets 1 and 11
    flatten the input to 2-D at ``axis`` (default 1) and work on each row; opset 13 works along the
    single axis ``axis`` (default -1). ``mlas`` ("softmax" or "log_softmax") names the row
    computation of onnxruntime's MLAS kernel (``kernels.rows.softmax_rows``): it takes over for
    float32 inputs in the default numerics mode (along another axis than the last, on a
    transposed copy, as onnxruntime does)."""

    def register(kernel):
        def run(x, axis, ctx):
            if x.size == 0:
                return np.empty(x.shape, x.dtype)     # nothing to normalize (onnxruntime, the spec)
            if mlas is not None and x.dtype == np.float32 and (ctx is None or ctx.numerics != "spec"):
                moved = np.moveaxis(x, axis, -1)
                y = sized_threads(x.size, K.softmax_rows, moved.reshape(-1, moved.shape[-1]),
                                  mlas_wide_kernels(), mlas == "log_softmax")
                return np.moveaxis(y.reshape(moved.shape), -1, axis)
            # onnxruntime computes float16 in float32 and rounds once; numerics="spec" computes
            # in float16 itself, as the spec's reference code (and its test data) do.
            native = x.dtype == np.float16 and ctx is not None and ctx.numerics == "spec"
            with np.errstate(all="ignore"):
                y = kernel(x if native else x.astype(compute_dtype(x.dtype), copy=False), axis)
            return _result(y, x.dtype)

        def coerced_2d(input, *, axis=1, ctx=None):  # noqa: A002
            axis = normalize_axis(axis, input.ndim)
            rows = int(np.prod(input.shape[:axis]))
            cols = int(np.prod(input.shape[axis:]))
            return run(input.reshape(rows, cols), 1, ctx).reshape(input.shape)

        def single_axis(input, *, axis=-1, ctx=None):  # noqa: A002
            return run(input, normalize_axis(axis, input.ndim), ctx)

        for fn, suffix in ((coerced_2d, "coerced_2d"), (single_axis, "single_axis")):
            fn.__name__ = fn.__qualname__ = f"{kernel.__name__}_{suffix}"
            fn.__doc__ = kernel.__doc__
        op(name, since=(1, 11))(coerced_2d)
        op(name, since=13)(single_axis)
        return kernel

    return register


@_softmax_op("Softmax", mlas="softmax")
def softmax(x, axis):
    """Y = e^(X - max) / sum(e^(X - max)) along axis

    float32 in the default numerics runs onnxruntime's MLAS arithmetic (``kernels/rows.py``):
    its float32 polynomial e^x, the sum in 16 (AVX-512 CPUs) or 8 SIMD lanes, times 1 / sum.
    "spec" numerics: NumPy's exp, divided by the sum."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def scale_add_softmax(a, b, mask, *, divide, axis, ctx=None):
    """Mul(x, c) (either order) or Div(x, c) -> Add(., mask) -> Softmax along ``axis`` as one
    step (``refrt.fusion``; attention's scaled and masked scores): each row scaled, masked and
    softmaxed in one pass (``kernels.rows.scale_add_softmax_rows``), or None where that does not
    apply (float32 x, a float32 one-element c, an array mask, the last axis, the default
    numerics, from ROW_KERNEL_MIN_SIZE elements)."""
    x, c = a, b
    if not divide and is_f32_scalar(a) and not is_f32_scalar(b):
        x, c = b, a     # Mul(c, x)
    if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim >= 2
            and is_f32_scalar(c) and c.ndim <= x.ndim and isinstance(mask, np.ndarray)
            and x.size >= ROW_KERNEL_MIN_SIZE and (ctx is None or ctx.numerics != "spec")
            and normalize_axis(axis, x.ndim) == x.ndim - 1):
        return None
    return sized_threads(x.size, K.scale_add_softmax_rows, x, c.reshape(()), divide, mask,
                         mlas_wide_kernels())


@_softmax_op("LogSoftmax", mlas="log_softmax")
def log_softmax(x, axis):
    """Y = X - max - ln(sum(e^(X - max))) along axis

    float32 in the default numerics: onnxruntime's MLAS arithmetic, as Softmax's sum, then
    (X - max) - logf(sum)."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@_softmax_op("Hardmax")
def hardmax(x, axis):
    """Y = 1 at the first largest value along axis, 0 elsewhere"""
    y = np.zeros_like(x)
    if x.size:
        np.put_along_axis(y, np.expand_dims(np.argmax(x, axis=axis), axis), 1, axis=axis)
    return y


# ---------------------------------------------------------------- CumSum, CumProd

def _cumulative(accumulate, identity, x, axis, exclusive, reverse):
    axis = as_int_list(axis, "axis")
    if len(axis) != 1:
        raise ValueError(f"axis must hold one value, got {axis}")
    axis = normalize_axis(axis[0], x.ndim)
    v = x.astype(compute_dtype(x.dtype), copy=False)
    if reverse:
        v = np.flip(v, axis)
    with np.errstate(all="ignore"):
        y = accumulate(v, axis=axis)
    if exclusive:  # shift by one along axis, the identity coming in first
        shifted = np.full_like(y, identity)
        dst, src = [slice(None)] * y.ndim, [slice(None)] * y.ndim
        dst[axis], src[axis] = slice(1, None), slice(None, -1)
        shifted[tuple(dst)] = y[tuple(src)]
        y = shifted
    if reverse:
        y = np.flip(y, axis)
    return _result(y, x.dtype)


@op("CumSum", since=(11, 14))
def cum_sum(x, axis, *, exclusive=0, reverse=0):
    """Y[i] = sum of X[j] along axis for j <= i (j < i exclusive; j >= i / j > i reversed)"""
    return _cumulative(np.cumsum, 0, x, axis, exclusive, reverse)


@op("CumProd", since=26)
def cum_prod(x, axis, *, exclusive=0, reverse=0):
    """Y[i] = product of X[j] along axis for j <= i (j < i exclusive; j >= i / j > i reversed)"""
    return _cumulative(np.cumprod, 1, x, axis, exclusive, reverse)


# ---------------------------------------------------------------- TopK

def _top_k(x, k, axis, largest):
    """The k largest (or smallest) values along axis and their int64 indices, sorted; equal
    values keep their order (lower index first), as the spec requires."""
    axis = normalize_axis(axis, x.ndim)
    n = x.shape[axis]
    if not 0 <= k <= n:
        raise ValueError(f"k = {k} is outside [0, {n}] for axis {axis} of shape {x.shape}")
    v = x.astype(compute_dtype(x.dtype), copy=False)
    if largest:  # descending values, ties by ascending index: sort the reversed axis, reverse
        order = np.argsort(np.flip(v, axis), axis=axis, kind="stable")
        order = n - 1 - np.flip(order, axis)
    else:
        order = np.argsort(v, axis=axis, kind="stable")
    indices = np.take(order, np.arange(k), axis=axis).astype(np.int64)
    return np.take_along_axis(x, indices, axis=axis), indices


@op("TopK", since=1)
def top_k_1(x, *, k, axis=-1):
    """(Values, Indices) = the k largest entries of X along axis, sorted descending"""
    return _top_k(x, int(k), axis, True)


@op("TopK", since=(10, 11, 24))
def top_k(x, k, *, axis=-1, largest=1, sorted=1):  # noqa: A002
    """(Values, Indices) = the K largest (or smallest) entries of X along axis. refrt always
    returns them sorted, which sorted=0 allows."""
    ks = as_int_list(k, "K")
    if len(ks) != 1:
        raise ValueError(f"K must hold one value, got {ks}")
    return _top_k(x, ks[0], axis, largest)


# ---------------------------------------------------------------- LpNormalization

@op("LpNormalization", since=(1, 22))
def lp_normalization(input, *, axis=-1, p=2):  # noqa: A002
    """Y = X / ||X||_p along axis, p in {1, 2}; where the norm is 0 the output is 0 (as the
    backend test data expect)"""
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p}")
    axis = normalize_axis(axis, input.ndim)
    x = input.astype(compute_dtype(input.dtype), copy=False)
    with np.errstate(all="ignore"):
        norm = np.sum(np.abs(x) if p == 1 else x * x, axis=axis, keepdims=True)
        norm = norm if p == 1 else np.sqrt(norm)
        y = np.where(norm == 0, 0, x / norm)
    return _result(y, input.dtype)
