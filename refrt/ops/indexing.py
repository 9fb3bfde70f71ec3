"""Indexing ops: gather and scatter by index tensors, masks and one-hot codes.

Index tensors may hold negative values (counted from the end of their dimension). An index outside
[-dim, dim) raises ValueError naming the value and the dimension: refrt never wraps or clamps an
index silently (onnxruntime rejects them as well). OneHot is the exception the spec defines: an
out-of-range index there yields an all-off row.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from ..registry import op
from ._common import as_int_list, normalize_axis, normalize_indices

_REDUCTIONS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _element_index(indices, axis, dim):
    """Index tuple addressing, for each position p of `indices`, the element at p with coordinate
    `axis` replaced by indices[p] (GatherElements, ScatterElements)."""
    grid = list(np.indices(indices.shape, sparse=True))
    grid[axis] = normalize_indices(indices, dim)
    return tuple(grid)


def _check_element_shapes(data, indices, axis, what):
    if indices.ndim != data.ndim:
        raise ValueError(f"{what}: indices have rank {indices.ndim}, data has rank {data.ndim}")
    for i, (n, d) in enumerate(zip(indices.shape, data.shape)):
        if i != axis and n > d:
            raise ValueError(f"{what}: indices shape {indices.shape} exceeds data shape "
                             f"{data.shape} on axis {i}")


def _scatter(out, index, updates, reduction):
    """out[index] = updates, or combined with out[index] by `reduction` (repeated indices
    accumulate); `out` is a fresh copy owned by the caller."""
    if reduction == "none":
        out[index] = updates
    elif reduction in _REDUCTIONS:
        _REDUCTIONS[reduction].at(out, index, updates)
    else:
        raise ValueError(f"unknown reduction {reduction!r}; expected none, add, mul, max or min")
    return out


# ---------------------------------------------------------------- Gather family

@op("Gather", since=(1, 11, 13))
def gather(data, indices, *, axis=0):
    """Y = take(X, indices, axis): Y[i..., j..., k...] = X[i..., indices[j...], k...]."""
    axis = normalize_axis(axis, data.ndim)
    return np.take(data, normalize_indices(indices, data.shape[axis]), axis=axis)


@op("GatherElements", since=(11, 13))
def gather_elements(data, indices, *, axis=0):
    """Y[p] = X[p with p[axis] replaced by indices[p]]; Y has the shape of indices."""
    axis = normalize_axis(axis, data.ndim)
    _check_element_shapes(data, indices, axis, "GatherElements")
    return data[_element_index(indices, axis, data.shape[axis])]


def _nd_index(data_shape, indices, batch_dims, what):
    """indices[..., k] -> a tuple of k normalized index arrays (plus the batch coordinate)."""
    k = indices.shape[-1] if indices.ndim else 0
    if indices.ndim < 1 or k > len(data_shape) - batch_dims:
        raise ValueError(f"{what}: the last dim of indices ({k}) must be <= data rank "
                         f"{len(data_shape)} - batch_dims {batch_dims}")
    if indices.shape[:batch_dims] != tuple(data_shape[:batch_dims]):
        raise ValueError(f"{what}: the first {batch_dims} dims of indices {indices.shape} and "
                         f"data {tuple(data_shape)} differ")
    n_batch = math.prod(data_shape[:batch_dims])
    n_index = math.prod(indices.shape[batch_dims:-1])
    flat = indices.reshape(n_batch, n_index, k)
    coords = [normalize_indices(flat[..., j], data_shape[batch_dims + j], f"{what} indices")
              for j in range(k)]
    batch = np.broadcast_to(np.arange(n_batch)[:, None], (n_batch, n_index))
    return (batch,) + tuple(coords), n_batch


@op("GatherND", since=(11, 12, 13))
def gather_nd(data, indices, *, batch_dims=0):
    """Y[b..., i...] = X[b..., indices[b..., i..., :]], the first batch_dims dims shared."""
    index, n_batch = _nd_index(data.shape, indices, batch_dims, "GatherND")
    k = indices.shape[-1]
    flat = data.reshape((n_batch,) + data.shape[batch_dims:])
    return flat[index].reshape(indices.shape[:-1] + data.shape[batch_dims + k:])


# ---------------------------------------------------------------- Scatter family

def _scatter_elements(data, indices, updates, axis, reduction):
    axis = normalize_axis(axis, data.ndim)
    _check_element_shapes(data, indices, axis, "ScatterElements")
    if updates.shape != indices.shape:
        raise ValueError(f"updates shape {updates.shape} differs from indices shape "
                         f"{indices.shape}")
    index = _element_index(indices, axis, data.shape[axis])
    return _scatter(data.copy(), index, updates, reduction)


@op("Scatter", since=(9, 11))
def scatter(data, indices, updates, *, axis=0):
    """Deprecated alias of ScatterElements without reduction."""
    return _scatter_elements(data, indices, updates, axis, "none")


@op("ScatterElements", since=(11, 13, 16, 18))
def scatter_elements(data, indices, updates, *, reduction="none", axis=0):
    """Y = copy of X, then Y[p with p[axis] = indices[p]] (op)= updates[p] for every p.

    With reduction='none' and repeated indices the last update (in C order) wins; the spec
    leaves this case undefined."""
    return _scatter_elements(data, indices, updates, axis, reduction)


@op("ScatterND", since=(11, 13, 16, 18))
def scatter_nd(data, indices, updates, *, reduction="none"):
    """Y = copy of X, then Y[indices[i..., :]] (op)= updates[i...] for every i.

    With reduction='none' and repeated indices the last update (in C order) wins; the spec
    leaves this case undefined."""
    index, _ = _nd_index(data.shape, indices, 0, "ScatterND")
    k = indices.shape[-1]
    expected = indices.shape[:-1] + data.shape[k:]
    if updates.shape != expected:
        raise ValueError(f"updates shape {updates.shape} should be {expected}")
    index = tuple(i.reshape(-1) for i in index[1:])
    return _scatter(data.copy(), index, updates.reshape((-1,) + data.shape[k:]), reduction)


@op("TensorScatter", since=24)
def tensor_scatter(past_cache, update, write_indices=None, *, mode="linear", axis=-2):
    """Y = copy of past_cache with update[b] written along `axis` from write_indices[b] (0 when
    absent); mode 'circular' wraps positions modulo the cache length, 'linear' must fit."""
    axis = normalize_axis(axis, past_cache.ndim)
    if axis == 0:
        raise ValueError("TensorScatter axis cannot be the batch axis 0")
    if update.ndim != past_cache.ndim or any(
            u != c for i, (u, c) in enumerate(zip(update.shape, past_cache.shape)) if i != axis):
        raise ValueError(f"update shape {update.shape} must match cache shape "
                         f"{past_cache.shape} outside axis {axis}")
    if mode not in ("linear", "circular"):
        raise ValueError(f"unknown mode {mode!r}; expected 'linear' or 'circular'")
    batch, max_len, seq_len = past_cache.shape[0], past_cache.shape[axis], update.shape[axis]
    starts = (np.zeros(batch, dtype=np.int64) if write_indices is None
              else np.asarray(write_indices, dtype=np.int64).reshape(-1))
    if starts.shape != (batch,):
        raise ValueError(f"write_indices must hold {batch} values, got {starts.shape}")
    out = past_cache.copy()
    out_view, upd_view = np.moveaxis(out, axis, 1), np.moveaxis(update, axis, 1)
    for b in range(batch):
        pos = starts[b] + np.arange(seq_len)
        if mode == "circular":
            pos %= max_len
        elif starts[b] < 0 or (seq_len and pos[-1] >= max_len):
            raise ValueError(f"write index {starts[b]} + {seq_len} updates does not fit a cache "
                             f"of length {max_len} (batch {b})")
        out_view[b, pos] = upd_view[b]
    return out


# ---------------------------------------------------------------- masks and codes

@op("OneHot", since=(9, 11, 28))
def one_hot(indices, depth, values, *, axis=-1):
    """Y[..., j, ...] = values[1] if j == indices[...] (negative indices + depth) else values[0],
    with the new depth axis at `axis`; indices outside [-depth, depth) give all-off rows."""
    d = np.asarray(depth).reshape(-1)
    if d.size != 1:
        raise ValueError(f"depth must hold one value, got shape {np.shape(depth)}")
    depth = int(d[0])
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    values = np.asarray(values).reshape(-1)
    if values.size != 2:
        raise ValueError(f"values must be [off_value, on_value], got {values.size} values")
    axis = normalize_axis(axis, indices.ndim + 1)
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + depth, idx)
    hot = idx[..., None] == np.arange(depth)
    return np.moveaxis(np.where(hot, values[1], values[0]), -1, axis)


@op("NonZero", since=(9, 13))
def non_zero(X, *, ctx=None):
    """Y = int64 indices of the non-zero elements of X, shape (rank, count), in row-major order.

    ORT vs spec: a scalar has rank 0, so the spec's output is (0, count); onnxruntime treats it as a
    1-element vector, (1, count). "ort" numerics follow onnxruntime, "spec" the spec."""
    if X.ndim == 0 and ctx is not None and ctx.numerics == "spec":
        return np.zeros((0, int(bool(X.astype(bool)))), dtype=np.int64)
    x = X.reshape(1) if X.ndim == 0 else X
    if x.dtype == object:
        x = x.astype(bool)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@op("Compress", since=(9, 11, 28))
def compress(input, condition, *, axis=None):
    """Y = the slices of X along `axis` (of flattened X when absent) where condition is true.

    A condition shorter than the axis drops the remaining slices (spec); entries beyond the axis
    are ignored, as onnxruntime does (the spec does not say)."""
    cond = np.asarray(condition).reshape(-1).astype(bool)
    x = input.reshape(-1) if axis is None else input
    axis = 0 if axis is None else normalize_axis(axis, input.ndim)
    return np.compress(cond[:x.shape[axis]], x, axis=axis)


@op("Unique", since=(11, 28))
def unique(X, *, axis=None, sorted=1):
    """Y = the distinct elements of X (or slices along `axis`), ascending if sorted else in order
    of first occurrence; also int64 first-occurrence indices, inverse indices and counts.

    All NaNs count as one value (numpy's rule; onnxruntime's grouping of NaNs differs)."""
    x = X.reshape(-1) if axis is None else X
    ax = 0 if axis is None else normalize_axis(axis, X.ndim)
    if axis is not None and X.dtype == object:
        return _unique_string_slices(X, ax, sorted)
    y, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True,
                                          return_counts=True, axis=ax)
    inverse = inverse.reshape(-1)
    if not sorted:
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        y, first, counts, inverse = np.take(y, order, axis=ax), first[order], counts[order], \
            rank[inverse]
    return (y, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64))


def _unique_string_slices(X, ax: int, ascending: int):
    """Unique for string tensors along an axis (NumPy's unique has no axis for them): slices
    compared as tuples of their strings, ascending in that order (as NumPy orders numeric
    slices) or in order of first occurrence."""
    moved = np.moveaxis(X, ax, 0)
    keys = [tuple(piece.ravel().tolist()) for piece in moved]
    first_of: dict = {}
    for i, k in enumerate(keys):
        first_of.setdefault(k, i)
    distinct = builtins.sorted(first_of) if ascending else list(first_of)
    position = {k: j for j, k in enumerate(distinct)}
    first = np.array([first_of[k] for k in distinct], np.int64)
    inverse = np.array([position[k] for k in keys], np.int64)
    counts = np.bincount(inverse, minlength=len(distinct)).astype(np.int64)
    y = np.moveaxis(moved[first], 0, ax) if len(first) else np.moveaxis(moved[:0], 0, ax)
    return y, first, inverse, counts


@op("ReverseSequence", since=(10, 28))
def reverse_sequence(input, sequence_lens, *, batch_axis=1, time_axis=0):
    """Y = X with the first sequence_lens[b] steps along time_axis reversed for each batch b."""
    batch_axis = normalize_axis(batch_axis, input.ndim)
    time_axis = normalize_axis(time_axis, input.ndim)
    if {batch_axis, time_axis} != {0, 1}:
        raise ValueError(f"batch_axis and time_axis must be 0 and 1 in some order, got "
                         f"{batch_axis} and {time_axis}")
    lens = as_int_list(sequence_lens, "sequence_lens")
    n_batch, n_time = input.shape[batch_axis], input.shape[time_axis]
    if len(lens) != n_batch or any(not 0 <= n <= n_time for n in lens):
        raise ValueError(f"sequence_lens {lens} must hold {n_batch} values in [0, {n_time}]")
    out = input.copy()
    src = np.moveaxis(input, (batch_axis, time_axis), (0, 1))
    dst = np.moveaxis(out, (batch_axis, time_axis), (0, 1))
    for b, n in enumerate(lens):
        dst[b, :n] = src[b, :n][::-1]
    return out
