"""Sequence ops: SequenceConstruct, SequenceEmpty, SequenceAt, SequenceInsert, SequenceErase,
SequenceLength, SplitToSequence, ConcatFromSequence, SequenceMap.

A sequence value is a Python list of numpy arrays. Ops never modify a list they receive: the ones
that "change" a sequence build a new list, so a sequence bound to several names (a Loop-carried
value, a graph input) never changes under another consumer. An empty sequence is ``[]``; it does
not remember its element type.
"""

from __future__ import annotations

import numpy as np

from ..registry import op
from ._common import as_int_list, as_scalar, normalize_axis, np_dtype


def _sequence(value, what: str = "input_sequence") -> list:
    if not isinstance(value, list):
        raise TypeError(f"{what} must be a sequence (a list of arrays), got {type(value).__name__}")
    return value


def _position(position, n: int, allow_end: bool, default: int) -> int:
    """A scalar position in [-n, n - 1] (or [-n, n] when ``allow_end``) -> index in [0, n]."""
    if position is None:
        return default
    p = as_scalar(position, "position")
    hi = n if allow_end else n - 1
    if not -n <= p <= hi:
        raise ValueError(f"position {p} is out of range for a sequence of length {n} "
                         f"(allowed: [{-n}, {hi}])")
    return p + n if p < 0 else p


def _check_same_dtype(seq: list, tensor) -> None:
    if seq and np.asarray(seq[0]).dtype != np.asarray(tensor).dtype:
        raise TypeError(f"cannot put a {np.asarray(tensor).dtype} tensor into a sequence of "
                        f"{np.asarray(seq[0]).dtype} tensors")


@op("SequenceConstruct", since=11)
def sequence_construct(*inputs):
    """S = [inputs...]; all tensors share one element type."""
    for x in inputs[1:]:
        _check_same_dtype(list(inputs[:1]), x)
    return list(inputs)


@op("SequenceEmpty", since=11)
def sequence_empty(*, dtype=None):
    """S = [] (of element type ``dtype``, float by default; the empty list does not record it)."""
    if dtype is not None:
        np_dtype(dtype)   # reject an unknown element type
    return []


@op("SequenceAt", since=11)
def sequence_at(input_sequence, position):
    """T = S[position], position in [-n, n - 1]."""
    seq = _sequence(input_sequence)
    return seq[_position(position, len(seq), allow_end=False, default=0)]


@op("SequenceInsert", since=11)
def sequence_insert(input_sequence, tensor, position=None):
    """S' = S[:p] + [tensor] + S[p:], p in [-n, n], default n (append). S itself is unchanged."""
    seq = _sequence(input_sequence)
    _check_same_dtype(seq, tensor)
    p = _position(position, len(seq), allow_end=True, default=len(seq))
    return seq[:p] + [tensor] + seq[p:]


@op("SequenceErase", since=11)
def sequence_erase(input_sequence, position=None):
    """S' = S without S[p], p in [-n, n - 1], default n - 1 (the last). S itself is unchanged."""
    seq = _sequence(input_sequence)
    if not seq:
        raise ValueError("SequenceErase on an empty sequence")
    p = _position(position, len(seq), allow_end=False, default=len(seq) - 1)
    return seq[:p] + seq[p + 1:]


@op("SequenceLength", since=11)
def sequence_length(input_sequence):
    """L = int64(len(S)), a scalar."""
    return np.array(len(_sequence(input_sequence)), dtype=np.int64)


@op("SplitToSequence", since=(11, 24))
def split_to_sequence(input, split=None, *, axis=0, keepdims=1):
    """S = parts of X along ``axis``: lengths ``split`` (1-D), chunks of ``split`` (scalar, the
    last one may be shorter), or chunks of 1 when ``split`` is absent, in which case
    ``keepdims=0`` drops the split axis from every part."""
    x = np.asarray(input)
    if x.ndim == 0:
        raise ValueError("SplitToSequence needs a tensor of rank >= 1, got a scalar")
    ax = normalize_axis(axis, x.ndim)
    dim = x.shape[ax]
    if split is None:
        if keepdims:
            return [x[(slice(None),) * ax + (slice(i, i + 1),)] for i in range(dim)]
        return [x[(slice(None),) * ax + (i,)] for i in range(dim)]
    s = np.asarray(split)
    if s.ndim == 0:
        size = as_int_list(s, "split")[0]
        if size <= 0:
            raise ValueError(f"split must be positive, got {size}")
        lengths = [size] * (dim // size) + ([dim % size] if dim % size else [])
    else:
        lengths = as_int_list(s, "split")
        if any(n < 0 for n in lengths) or sum(lengths) != dim:
            raise ValueError(f"split {lengths} must be non-negative and sum to the size {dim} "
                             f"of axis {axis}")
    bounds = np.cumsum([0] + lengths)
    return [x[(slice(None),) * ax + (slice(int(b), int(e)),)]
            for b, e in zip(bounds[:-1], bounds[1:])]


@op("ConcatFromSequence", since=11)
def concat_from_sequence(input_sequence, *, axis, new_axis=0):
    """Y = concatenate(S, axis), or stack(S, axis) when new_axis=1 (axis then in [-r-1, r])."""
    seq = [np.asarray(t) for t in _sequence(input_sequence)]
    if not seq:
        raise ValueError("ConcatFromSequence needs a non-empty sequence")
    rank = seq[0].ndim
    if new_axis:
        return np.stack(seq, axis=normalize_axis(axis, rank + 1))
    if rank == 0:
        raise ValueError("ConcatFromSequence cannot concatenate scalars without new_axis=1")
    ax = normalize_axis(axis, rank)
    rest = seq[0].shape[:ax] + seq[0].shape[ax + 1:]
    for i, t in enumerate(seq):
        if t.ndim != rank or t.shape[:ax] + t.shape[ax + 1:] != rest:
            raise ValueError(f"sequence element {i} has shape {list(t.shape)}, incompatible with "
                             f"{list(seq[0].shape)} for concatenation on axis {axis}")
    return np.concatenate(seq, axis=ax)


@op("SequenceMap", since=17)
def sequence_map(input_sequence, *additional_inputs, body):
    """out_k = [body(S[i], A_1[i] or A_1, ...)[k] for i in range(len(S))]: sequence inputs are
    taken element by element, tensor inputs whole."""
    seq = _sequence(input_sequence)
    n = len(seq)
    for j, a in enumerate(additional_inputs):
        if isinstance(a, list) and len(a) != n:
            raise ValueError(f"additional input {j} is a sequence of length {len(a)}, the input "
                             f"sequence has length {n}")
    outputs: list[list] = [[] for _ in range(body.n_outputs)]
    for i in range(n):
        args = [a[i] if isinstance(a, list) else a for a in additional_inputs]
        for acc, value in zip(outputs, body(seq[i], *args)):
            acc.append(value)
    return tuple(outputs)
