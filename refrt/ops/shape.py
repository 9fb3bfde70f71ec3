"""Shape ops: tensors rearranged, cut, joined or created without arithmetic on their values.

Shape-like inputs (shape, axes, pads, starts, repeats, ...) are int64 tensors in ONNX; they are read
into Python ints with :func:`as_int_list`. Outputs keep the input's dtype exactly (strings too).
Several attributes became inputs over the versions (Reshape shape, Slice starts/ends/axes, Split
split, Squeeze/Unsqueeze axes, Pad pads/value, Tile tiles): each old form is a thin function that
calls the same body as the new one.
"""

from __future__ import annotations

import math

import numpy as np

from ..registry import check_allocation, op
from ._common import as_int_list, normalize_axes, normalize_axis, np_dtype

_LATEST = (21, 23, 24, 25)  # since-versions that only widened the type lists


# ---------------------------------------------------------------- Reshape, Flatten, Squeeze, ...

def _reshape_target(in_shape: tuple, shape: list[int], allowzero: int) -> list[int]:
    """Resolve 0 (copy the input dim unless allowzero) and -1 (inferred) in a Reshape target."""
    out = []
    for i, d in enumerate(shape):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                raise ValueError(f"shape {shape} copies dimension {i} (a 0) but the input has "
                                 f"rank {len(in_shape)}")
            d = in_shape[i]
        elif d < -1:
            raise ValueError(f"shape {shape} has an invalid dimension {d}")
        out.append(d)
    total = math.prod(in_shape)
    if out.count(-1) > 1:
        raise ValueError(f"shape {shape} has more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            raise ValueError(f"cannot infer the -1 in shape {shape} for an input of shape "
                             f"{tuple(in_shape)}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise ValueError(f"cannot reshape a tensor of shape {tuple(in_shape)} ({total} elements) "
                         f"into {shape} (resolved to {out})")
    return out


@op("Reshape", since=1)
def reshape_v1(data, *, consumed_inputs=None, shape=None):
    """Y = X viewed with the `shape` attribute (0 copies the input dim, one -1 is inferred)."""
    if shape is None:
        raise ValueError("Reshape-1 needs the 'shape' attribute")
    return data.reshape(_reshape_target(data.shape, list(shape), 0))


@op("Reshape", since=(5, 13, 14, 19) + _LATEST)
def reshape(data, shape, *, allowzero=0):
    """Y = X viewed with `shape`: 0 copies the input dim (or is a real 0 with allowzero=1), -1 is
    inferred."""
    target = as_int_list(shape, "shape")
    if allowzero and 0 in target and -1 in target:
        raise ValueError(f"shape {target} mixes 0 and -1 with allowzero=1")
    return data.reshape(_reshape_target(data.shape, target, allowzero))


@op("Flatten", since=(1, 9, 11, 13) + _LATEST)
def flatten(input, *, axis=1):
    """Y = X reshaped to (prod(shape[:axis]), prod(shape[axis:])); axis in [-r, r]."""
    r = input.ndim
    if not -r <= axis <= r:
        raise ValueError(f"axis {axis} is out of range [-{r}, {r}] for a tensor of rank {r}")
    axis = axis + r if axis < 0 else axis
    return input.reshape(math.prod(input.shape[:axis]), math.prod(input.shape[axis:]))


def _squeeze(data, axes):
    if axes is None:
        return data.reshape([d for d in data.shape if d != 1])
    axes = normalize_axes(as_int_list(axes, "axes"), data.ndim)
    for a in axes:
        if data.shape[a] != 1:
            raise ValueError(f"cannot squeeze axis {a} of size {data.shape[a]} "
                             f"(input shape {data.shape})")
    return data.reshape([d for i, d in enumerate(data.shape) if i not in axes])


@op("Squeeze", since=(1, 11))
def squeeze_v1(data, *, axes=None):
    """Y = X without the size-1 dims listed in the `axes` attribute (all size-1 dims if absent)."""
    return _squeeze(data, axes)


@op("Squeeze", since=(13,) + _LATEST)
def squeeze(data, axes=None, *, ctx=None):
    """Y = X without the size-1 dims listed in `axes` (all size-1 dims if absent).

    An empty `axes` tensor (the spec is silent): "ort" numerics treat it as absent and remove
    every size-1 dim, as onnxruntime does; "spec" removes none, as onnx.reference does."""
    if axes is not None and np.size(axes) == 0 and (ctx is None or ctx.numerics != "spec"):
        axes = None
    return _squeeze(data, axes)


def _unsqueeze(data, axes):
    axes = as_int_list(axes, "axes")
    rank = data.ndim + len(axes)
    axes = normalize_axes(axes, rank)
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes} contain duplicates")
    dims = iter(data.shape)
    return data.reshape([1 if i in axes else next(dims) for i in range(rank)])


@op("Unsqueeze", since=(1, 11))
def unsqueeze_v1(data, *, axes):
    """Y = X with size-1 dims inserted at the `axes` attribute (axes index the output)."""
    return _unsqueeze(data, axes)


@op("Unsqueeze", since=(13,) + _LATEST)
def unsqueeze(data, axes):
    """Y = X with size-1 dims inserted at `axes` (axes index the output)."""
    return _unsqueeze(data, axes)


@op("Transpose", since=(1, 13) + _LATEST)
def transpose(data, *, perm=None):
    """Y = X with dims permuted: Y.shape[i] = X.shape[perm[i]]; perm defaults to reversed."""
    if perm is None:
        perm = list(range(data.ndim))[::-1]
    if sorted(perm) != list(range(data.ndim)):
        raise ValueError(f"perm {perm} is not a permutation of the {data.ndim} axes")
    return np.transpose(data, perm)


# ---------------------------------------------------------------- Shape, Size, Identity, Constant

@op("Shape", since=(1, 13, 15, 19) + _LATEST)
def shape(data, *, end=None, start=0):
    """Y = int64(X.shape[start:end]), start and end clamped to [0, rank] after adding rank."""
    r = data.ndim

    def clamp(a):
        return min(max(a + r if a < 0 else a, 0), r)

    return np.array(data.shape[clamp(start):r if end is None else clamp(end)], dtype=np.int64)


@op("Size", since=(1, 13, 19) + _LATEST)
def size(data):
    """Y = int64(number of elements of X), a scalar."""
    return np.array(data.size, dtype=np.int64)


@op("Identity", since=(1, 13, 14, 16, 19) + _LATEST)
def identity(input):
    """Y = X. Works for any value: tensor, sequence (list) or optional (None)."""
    return input


@op("Constant", since=(1, 9))
def constant_v1(*, value):
    """Y = the `value` tensor attribute."""
    return value


@op("Constant", since=(11, 12, 13, 19) + _LATEST)
def constant(*, value_strings=None, value_string=None, value_floats=None, value_float=None,
             value_ints=None, value_int=None, sparse_value=None, value=None):
    """Y = the one value_* attribute given: value (tensor), sparse_value (densified),
    value_float(s) as float32, value_int(s) as int64, value_string(s) as strings; the singular
    forms give scalars."""
    given = {k: v for k, v in dict(value=value, sparse_value=sparse_value, value_int=value_int,
                                   value_ints=value_ints, value_float=value_float,
                                   value_floats=value_floats, value_string=value_string,
                                   value_strings=value_strings).items() if v is not None}
    if len(given) != 1:
        raise ValueError(f"Constant needs exactly one value attribute, got "
                         f"{sorted(given) or 'none'}")
    (name, v), = given.items()
    if name in ("value", "sparse_value"):
        return np.asarray(v)
    if name.startswith("value_int"):
        return np.array(v, dtype=np.int64)
    if name.startswith("value_float"):
        return np.array(v, dtype=np.float32)
    out = np.empty(len(v) if name == "value_strings" else (), dtype=object)
    out[...] = v if name == "value_string" else list(v)
    return out


@op("ConstantOfShape", since=(9, 20, 21, 23, 24, 25))
def constant_of_shape(input, *, value=None):
    """Y = a tensor of shape `input` filled with value[0] (float32 0 when value is absent)."""
    dims = as_int_list(input, "shape")
    if any(d < 0 for d in dims):
        raise ValueError(f"shape {dims} has a negative dimension")
    if value is None:
        value = np.zeros(1, dtype=np.float32)
    value = np.asarray(value)
    if value.size != 1:
        raise ValueError(f"'value' must hold one element, got shape {value.shape}")
    check_allocation(dims, value.dtype)
    return np.full(dims, value.reshape(-1)[0], dtype=value.dtype)


# ---------------------------------------------------------------- Slice, Concat, Split

def _slice(data, starts, ends, axes, steps):
    """data[starts:ends:steps] on `axes`, with the spec's clamping: negative values add the dim,
    then starts and ends clamp to [0, dim] for positive steps and to [0, dim-1] / [-1, dim-1] for
    negative ones (end -1 means "through index 0")."""
    starts, ends = as_int_list(starts, "starts"), as_int_list(ends, "ends")
    if len(starts) != len(ends):
        raise ValueError(f"starts ({len(starts)}) and ends ({len(ends)}) differ in length")
    axes = list(range(len(starts))) if axes is None else as_int_list(axes, "axes")
    steps = [1] * len(starts) if steps is None else as_int_list(steps, "steps")
    if not len(axes) == len(steps) == len(starts):
        raise ValueError(f"starts, ends, axes and steps differ in length "
                         f"({len(starts)}, {len(ends)}, {len(axes)}, {len(steps)})")
    axes = normalize_axes(axes, data.ndim)
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes {list(axes)} contain duplicates")
    index = [slice(None)] * data.ndim
    for a, b, e, s in zip(axes, starts, ends, steps):
        if s == 0:
            raise ValueError("slice step cannot be 0")
        dim = data.shape[a]
        b, e = (b + dim if b < 0 else b), (e + dim if e < 0 else e)
        if s > 0:
            b, e = min(max(b, 0), dim), min(max(e, 0), dim)
        else:
            b, e = min(max(b, 0), dim - 1), min(max(e, -1), dim - 1)
        index[a] = slice(b, None if e < 0 else e, s)
    return data[tuple(index)]


@op("Slice", since=1)
def slice_v1(data, *, ends, starts, axes=None):
    """Y = X[starts:ends] along `axes` (attributes), indices clamped to each dim."""
    return _slice(data, starts, ends, axes, None)


@op("Slice", since=(10, 11, 13))
def slice_(data, starts, ends, axes=None, steps=None):
    """Y = X[starts:ends:steps] along `axes`; negative values count from the end; clamped to
    [0, dim] (to [-1, dim-1] for negative steps)."""
    return _slice(data, starts, ends, axes, steps)


def _concat(inputs, axis):
    if not inputs:
        raise ValueError("Concat needs at least one input")
    dtypes = {x.dtype for x in inputs}
    if len(dtypes) > 1:
        raise TypeError(f"Concat inputs have different dtypes: {sorted(map(str, dtypes))}")
    rank = inputs[0].ndim
    if any(x.ndim != rank for x in inputs):
        raise ValueError(f"Concat inputs have different ranks: {[x.shape for x in inputs]}")
    axis = normalize_axis(axis, rank)

    def others(x):
        return x.shape[:axis] + x.shape[axis + 1:]

    for x in inputs:
        if others(x) != others(inputs[0]):
            raise ValueError(f"Concat inputs differ outside axis {axis}: "
                             f"{[x.shape for x in inputs]}")
    return np.concatenate(inputs, axis=axis)


@op("Concat", since=1)
def concat_v1(*inputs, axis=None):
    """Y = the inputs joined along `axis` (1 when absent, as the version-1 spec says)."""
    return _concat(inputs, 1 if axis is None else axis)


@op("Concat", since=(4, 11, 13))
def concat(*inputs, axis):
    """Y = the inputs joined along `axis`."""
    return _concat(inputs, axis)


def _split(x, axis, sizes):
    axis = normalize_axis(axis, x.ndim)
    dim = x.shape[axis]
    if any(s < 0 for s in sizes) or sum(sizes) != dim:
        raise ValueError(f"split sizes {sizes} must be >= 0 and add up to {dim} (axis {axis} "
                         f"of shape {x.shape})")
    bounds = np.cumsum([0] + sizes)
    index = [slice(None)] * x.ndim
    parts = []
    for b, e in zip(bounds[:-1], bounds[1:]):
        index[axis] = slice(int(b), int(e))
        parts.append(x[tuple(index)])
    return tuple(parts)


def _equal_sizes(x, axis, n):
    dim = x.shape[normalize_axis(axis, x.ndim)]
    if n <= 0 or dim % n:
        raise ValueError(f"cannot split a dimension of size {dim} into {n} equal parts")
    return [dim // n] * n


@op("Split", since=1)
def split_v1(input, split_input=None, *, axis=None, split=None, ctx):
    """Outputs = X cut along `axis` (0 when absent) into the lengths given by the second input or
    the `split` attribute, else into equal parts, one per output."""
    axis = 0 if axis is None else axis
    sizes = split_input if split_input is not None else split
    sizes = (as_int_list(sizes, "split") if sizes is not None
             else _equal_sizes(input, axis, ctx.n_outputs))
    return _split(input, axis, sizes)


@op("Split", since=(2, 11))
def split_v2(input, *, axis=0, split=None, ctx):
    """Outputs = X cut along `axis` into the `split` lengths, else into equal parts."""
    sizes = list(split) if split is not None else _equal_sizes(input, axis, ctx.n_outputs)
    return _split(input, axis, sizes)


@op("Split", since=(13, 18))
def split_(input, split=None, *, axis=0, num_outputs=None, ctx):
    """Outputs = X cut along `axis` into the `split` lengths; or into num_outputs parts of
    ceil(dim / num_outputs) with a smaller last one; or into equal parts, one per output."""
    if split is not None and num_outputs is not None:
        raise ValueError("Split takes either the 'split' input or 'num_outputs', not both")
    if split is not None:
        return _split(input, axis, as_int_list(split, "split"))
    if num_outputs is None:
        return _split(input, axis, _equal_sizes(input, axis, ctx.n_outputs))
    if num_outputs != ctx.n_outputs:
        raise ValueError(f"num_outputs={num_outputs} but the node has {ctx.n_outputs} outputs")
    dim = input.shape[normalize_axis(axis, input.ndim)]
    chunk = -(-dim // num_outputs)
    sizes = [chunk] * (num_outputs - 1) + [dim - chunk * (num_outputs - 1)]
    if num_outputs < 1 or sizes[-1] < 0:
        raise ValueError(f"cannot split a dimension of size {dim} into {num_outputs} outputs: chunks "
                         f"of ceil({dim}/{num_outputs}) = {chunk} leave a negative last one (onnxruntime "
                         f"refuses this case too; onnx.reference returns an empty last chunk)")
    return _split(input, axis, sizes)


# ---------------------------------------------------------------- Expand, Tile, Pad

@op("Expand", since=(8, 13))
def expand(input, shape):
    """Y = X broadcast with `shape` (bidirectionally: a 1 in `shape` keeps X's dim)."""
    dims = as_int_list(shape, "shape")
    try:
        out_shape = np.broadcast_shapes(input.shape, tuple(dims))
    except ValueError:
        raise ValueError(f"cannot expand shape {input.shape} to {dims}") from None
    check_allocation(out_shape, input.dtype)
    return np.array(np.broadcast_to(input, out_shape))


@op("Tile", since=1)
def tile_v1(input, tiles, axis):
    """Y = X repeated `tiles` times along `axis` (both scalar inputs)."""
    reps = [1] * input.ndim
    reps[normalize_axis(as_int_list(axis, "axis")[0], input.ndim)] = as_int_list(tiles, "tiles")[0]
    return tile(input, np.array(reps))


@op("Tile", since=(6, 13))
def tile(input, repeats):
    """Y = X repeated repeats[i] times along each dim i."""
    reps = as_int_list(repeats, "repeats")
    if len(reps) != input.ndim or any(r < 0 for r in reps):
        raise ValueError(f"repeats {reps} must be {input.ndim} non-negative values")
    check_allocation([d * r for d, r in zip(input.shape, reps)], input.dtype)
    return np.tile(input, reps)


_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad(data, pads, mode, value, axes):
    """Pad (or crop, for negative pads) `axes`; pads = [begin_0, ..., begin_k, end_0, ..., end_k].

    Negative pads crop first, then positive pads are added (as onnxruntime does)."""
    if mode not in _PAD_MODES:
        raise ValueError(f"unknown pad mode {mode!r}; expected one of {_PAD_MODES}")
    pads = as_int_list(pads, "pads")
    axes = list(range(data.ndim)) if axes is None else as_int_list(axes, "axes")
    axes = normalize_axes(axes, data.ndim)
    if len(pads) != 2 * len(axes):
        raise ValueError(f"pads has {len(pads)} values; expected 2 x {len(axes)} axes")
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes {list(axes)} contain duplicates")
    width = [(0, 0)] * data.ndim
    crop = [slice(None)] * data.ndim
    for i, a in enumerate(axes):
        b, e = pads[i], pads[i + len(axes)]
        crop[a] = slice(max(-b, 0), data.shape[a] - max(-e, 0))
        width[a] = (max(b, 0), max(e, 0))
    if any(s.start > s.stop for s in crop if s.start is not None):
        raise ValueError(f"negative pads {pads} crop more than the input shape {data.shape}")
    data = data[tuple(crop)]
    check_allocation([n + b + e for n, (b, e) in zip(data.shape, width)], data.dtype)
    if mode == "constant":
        if value is None or np.size(value) == 0:
            value = "" if data.dtype == object else 0
        fill = np.asarray(value).reshape(-1)[0]
        out = np.full([d + b + e for d, (b, e) in zip(data.shape, width)], fill, dtype=data.dtype)
        out[tuple(slice(b, b + d) for d, (b, _) in zip(data.shape, width))] = data
        return out
    for a, (b, e) in enumerate(width):
        if (b or e) and data.shape[a] == 0:
            raise ValueError(f"cannot pad an empty axis {a} in mode {mode!r}")
        if mode == "reflect" and max(b, e) >= data.shape[a]:
            raise ValueError(f"reflect pads ({b}, {e}) on axis {a} must be smaller than its size "
                             f"{data.shape[a]}")
    return np.pad(data, width, mode=mode)


@op("Pad", since=1)
def pad_v1(data, *, value=0.0, mode="constant", paddings):
    """Y = X padded by the `paddings` attribute with `value` (constant) or by reflect/edge."""
    return _pad(data, paddings, mode, value, None)


@op("Pad", since=2)
def pad_v2(data, *, value=0.0, mode="constant", pads):
    """Y = X padded by the `pads` attribute with `value` (constant) or by reflect/edge."""
    return _pad(data, pads, mode, value, None)


@op("Pad", since=(11, 13, 18, 19) + _LATEST)
def pad(data, pads, constant_value=None, axes=None, *, mode="constant"):
    """Y = X padded on `axes` by `pads` ([begins..., ends...]; negative crops) with
    constant_value, or by reflect / edge / wrap."""
    return _pad(data, pads, mode, constant_value, axes)


# ---------------------------------------------------------------- generators: Range, EyeLike, Trilu

@op("Range", since=(11, 27))
def range_(start, limit, delta, *, stash_type=1):
    """Y[i] = start + i * delta for i < max(ceil((limit - start) / delta), 0).

    Float values are computed in float64 and rounded once to the input type, which is at least as
    precise as any `stash_type` (it affects only float16 / bfloat16)."""
    dtype = np.asarray(start).dtype
    s, l, d = (np.asarray(v).reshape(-1) for v in (start, limit, delta))
    if not s.size == l.size == d.size == 1:
        raise ValueError("Range takes scalar start, limit and delta")
    if dtype.kind in "iu":
        s, l, d = int(s[0]), int(l[0]), int(d[0])
        if d == 0:
            raise ValueError("Range delta cannot be 0")
        n = max(-((s - l) // d), 0)
        check_allocation([n], np.int64)
        return (s + d * np.arange(n, dtype=np.int64)).astype(dtype)
    s, l, d = (float(np.float64(v[0])) for v in (s, l, d))
    if d == 0:
        raise ValueError("Range delta cannot be 0")
    if not all(math.isfinite(v) for v in (s, l, d)):
        raise ValueError(f"Range start {s}, limit {l} and delta {d} must be finite")
    n = max(math.ceil((l - s) / d), 0)
    check_allocation([n], np.float64)
    return (s + d * np.arange(n, dtype=np.float64)).astype(dtype)


@op("EyeLike", since=(9, 22))
def eye_like(input, *, dtype=None, k=0):
    """Y = a 2-D tensor shaped like X with ones on diagonal k, of `dtype` (X's when absent)."""
    if input.ndim != 2:
        raise ValueError(f"EyeLike needs a 2-D input, got shape {input.shape}")
    out_dtype = input.dtype if dtype is None else np_dtype(dtype)
    return np.eye(*input.shape, k=k, dtype=np.float64).astype(out_dtype)


@op("Trilu", since=14)
def trilu(input, k=None, *, upper=1):
    """Y = the upper (j - i >= k) or lower (j - i <= k) triangle of each matrix in X; rest zero."""
    if input.ndim < 2:
        raise ValueError(f"Trilu needs rank >= 2, got shape {input.shape}")
    k = 0 if k is None else as_int_list(k, "k")[0]
    rows, cols = input.shape[-2:]
    j_minus_i = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    keep = j_minus_i >= k if upper else j_minus_i <= k
    zero = np.zeros((), dtype=input.dtype) if input.dtype != object else ""
    return np.where(keep, input, zero).astype(input.dtype)


# ---------------------------------------------------------------- DepthToSpace, SpaceToDepth, crop

def _blocks(x, blocksize):
    if x.ndim != 4:
        raise ValueError(f"expected a 4-D (N, C, H, W) input, got shape {x.shape}")
    if blocksize < 1:
        raise ValueError(f"blocksize must be >= 1, got {blocksize}")
    return x.shape


@op("DepthToSpace", since=(1, 11, 13, 28))
def depth_to_space(input, *, mode="DCR", blocksize):
    """Y[n, c, h*b + i, w*b + j] = X[n, (i*b + j)*C' + c, h, w] (DCR) or X[n, c*b*b + i*b + j, h, w]
    (CRD), with C' = C / b^2."""
    n, c, h, w = _blocks(input, blocksize)
    b = blocksize
    if c % (b * b):
        raise ValueError(f"channels {c} are not a multiple of blocksize^2 = {b * b}")
    if mode == "DCR":
        t = input.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        t = input.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        raise ValueError(f"unknown mode {mode!r}; expected 'DCR' or 'CRD'")
    return t.reshape(n, c // (b * b), h * b, w * b)


@op("SpaceToDepth", since=(1, 13, 28))
def space_to_depth(input, *, mode="DCR", blocksize):
    """The inverse of DepthToSpace with the same mode: spatial b x b blocks move into channels."""
    n, c, h, w = _blocks(input, blocksize)
    b = blocksize
    if h % b or w % b:
        raise ValueError(f"spatial dims {(h, w)} are not multiples of blocksize {b}")
    t = input.reshape(n, c, h // b, b, w // b, b)
    if mode == "DCR":
        t = t.transpose(0, 3, 5, 1, 2, 4)
    elif mode == "CRD":
        t = t.transpose(0, 1, 3, 5, 2, 4)
    else:
        raise ValueError(f"unknown mode {mode!r}; expected 'DCR' or 'CRD'")
    return t.reshape(n, c * b * b, h // b, w // b)


@op("CenterCropPad", since=18)
def center_crop_pad(input_data, shape, *, axes=None):
    """Y = X centre-cropped (start rounded down) or zero-padded (extra pixel on the right) to
    `shape` on `axes`."""
    axes = list(range(input_data.ndim)) if axes is None else axes
    axes = normalize_axes(axes, input_data.ndim)
    target = as_int_list(shape, "shape")
    if len(target) != len(axes):
        raise ValueError(f"shape {target} has {len(target)} values for {len(axes)} axes")
    out_shape = list(input_data.shape)
    src = [slice(None)] * input_data.ndim
    dst = [slice(None)] * input_data.ndim
    for a, t in zip(axes, target):
        d = input_data.shape[a]
        if t < 0:
            raise ValueError(f"shape {target} has a negative dimension")
        out_shape[a] = t
        if d >= t:
            start = (d - t) // 2
            src[a] = slice(start, start + t)
        else:
            start = (t - d) // 2
            dst[a] = slice(start, start + d)
    out = np.zeros(out_shape, dtype=input_data.dtype)
    out[tuple(dst)] = input_data[tuple(src)]
    return out
