"""Normalizations: BatchNormalization, InstanceNormalization, LayerNormalization,
GroupNormalization, RMSNormalization, LRN, MeanVarianceNormalization.

Each one standardizes X over some axes, ``(X - mean) / sqrt(var + epsilon)`` with the population
variance, then scales and shifts. float16 / bfloat16 inputs compute in float32 (``stash_type``
where the op has it) and the result is cast back to X's type.
"""

from __future__ import annotations

import numpy as np

from ..registry import op
from ._common import compute_dtype, f32, normalize_axis, np_dtype
from ._kernels import K, sized_threads


def _moments(x, axes):
    """Mean and population variance of ``x`` over ``axes``, keeping the reduced axes."""
    mean = x.mean(axis=axes, keepdims=True)
    centered = x - mean
    return mean, (centered * centered).mean(axis=axes, keepdims=True)


def _channel_shape(x, spatial=1):
    """Shape that broadcasts a per-channel parameter against X (N, C, D1, ...): (C, 1, ..., 1);
    with spatial=0 (BatchNormalization-1..7) the parameters have shape (C, D1, ...)."""
    if x.ndim < 2:
        raise ValueError(f"X must be (N, C, ...), got shape {list(x.shape)}")
    return (x.shape[1],) + (1,) * (x.ndim - 2) if spatial else x.shape[1:]


# ---------------------------------------------------------------- BatchNormalization

def _batch_norm(x, scale, b, mean, var, epsilon, momentum, training, spatial, legacy_outputs):
    ct = compute_dtype(x.dtype)
    if not spatial and x.ndim > 2 and np.size(scale) == x.shape[1]:
        spatial = 1               # per-channel parameters despite spatial=0: nothing else fits
    shape = _channel_shape(x, spatial)
    scale, b, mean, var = (np.asarray(p, dtype=ct).reshape(shape) for p in (scale, b, mean, var))
    xc = x.astype(ct, copy=False)
    if training:
        axes = (0,) + (tuple(range(2, x.ndim)) if spatial else ())
        batch_mean, batch_var = _moments(xc, axes)
        batch_mean, batch_var = batch_mean.reshape(shape), batch_var.reshape(shape)
        use_mean, use_var = batch_mean, batch_var
    else:
        use_mean, use_var = mean, var
    inv_std = 1 / np.sqrt(use_var + ct.type(epsilon))
    factor = scale * inv_std
    y = (xc * factor + (b - use_mean * factor)).astype(x.dtype, copy=False)
    if not training:
        return y
    mom = ct.type(momentum)
    running_mean = (mean * mom + batch_mean * (1 - mom)).astype(x.dtype).reshape(-1)
    running_var = (var * mom + batch_var * (1 - mom)).astype(x.dtype).reshape(-1)
    if not legacy_outputs:
        return y, running_mean, running_var
    return (y, running_mean, running_var, batch_mean.astype(x.dtype).reshape(-1),
            inv_std.astype(x.dtype).reshape(-1))


def _statistics_requested(ctx):
    """Before version 14 a node asking for any output besides Y is a training node."""
    return any(ctx.output_requested(i) for i in range(1, 5))


@op("BatchNormalization", since=(6, 7, 9, 14, 15))
def batch_normalization(x, scale, b, input_mean, input_var, *, epsilon=f32(1e-5), is_test=0,
                        momentum=f32(0.9), spatial=1, training_mode=0, ctx):
    """Y = (X - mean) / sqrt(var + epsilon) * scale + B, per channel (axis 1).

    Inference uses the given mean and var. Training (training_mode=1 from version 14; before 14,
    more than one output requested and is_test=0) uses the batch's mean and population variance
    and returns running statistics ``input * momentum + batch * (1 - momentum)``. Versions before
    14 also return saved_mean and, as onnxruntime does, saved_var = 1 / sqrt(batch var + epsilon).
    """
    if ctx.opset >= 14:
        training, legacy = bool(training_mode), False
    else:
        training, legacy = _statistics_requested(ctx) and not is_test, True
    return _batch_norm(x, scale, b, input_mean, input_var, epsilon, momentum, training, spatial,
                       legacy)


@op("BatchNormalization", since=1)
def batch_normalization_1(x, scale, b, mean, var, *, consumed_inputs, epsilon=f32(1e-5),
                          is_test=0, momentum=f32(0.9), spatial=1, ctx):
    """BatchNormalization-1: as version 6 (consumed_inputs is a legacy hint and is ignored)."""
    return _batch_norm(x, scale, b, mean, var, epsilon, momentum,
                       _statistics_requested(ctx) and not is_test, spatial, True)


# ---------------------------------------------------------------- per-sample normalizations

@op("InstanceNormalization", since=(1, 6, 22))
def instance_normalization(x, scale, b, *, consumed_inputs=None, epsilon=f32(1e-5)):
    """Y[n, c] = (X[n, c] - mean) / sqrt(var + epsilon) * scale[c] + B[c], moments of X[n, c]
    over the spatial axes"""
    if x.ndim < 3:
        raise ValueError(f"InstanceNormalization: X must be (N, C, D1, ...), got {list(x.shape)}")
    ct = compute_dtype(x.dtype)
    xc = x.astype(ct, copy=False)
    mean, var = _moments(xc, tuple(range(2, x.ndim)))
    shape = _channel_shape(x)
    y = ((xc - mean) / np.sqrt(var + ct.type(epsilon)) * scale.astype(ct).reshape(shape)
         + b.astype(ct).reshape(shape))
    return y.astype(x.dtype, copy=False)


def stash_dtype(x, stash_type):
    """The dtype of the first (standardizing) stage: float32 for stash_type=1 (the default)."""
    dtype = np_dtype(stash_type)
    if dtype.kind != "f" and dtype.kind != "V":
        raise ValueError(f"stash_type {stash_type} is not a float type")
    return np.promote_types(compute_dtype(dtype), compute_dtype(x.dtype))


def _fits_row_kernel(x, scale, b, axis, st, ctx):
    """onnxruntime's float32 layer norm (``kernels/rows.py``) applies: float32 X, statistics and
    parameters, the default numerics mode, and Scale and B holding exactly the normalized block
    X.shape[axis:] (so they flatten with it)."""
    block = x.shape[axis:]
    n = int(np.prod(block))

    def flattens_with_block(p):
        shape = tuple(np.shape(p))
        while shape and shape[0] == 1 and len(shape) > len(block):
            shape = shape[1:]
        return p.dtype == np.float32 and p.size == n and shape == block[len(block) - len(shape):]

    return (x.dtype == np.float32 and st == np.float32 and n >= 1
            and (ctx is None or ctx.numerics != "spec")
            and all(flattens_with_block(p) for p in (scale, b) if p is not None))


@op("LayerNormalization", since=17)
def layer_normalization(x, scale, b=None, *, axis=-1, epsilon=f32(1e-5), stash_type=1, ctx=None):
    """Y = (X - mean) / sqrt(var + epsilon) * Scale + B, moments over axes [axis, rank);
    Mean and InvStdDev (type of stash_type, reduced axes kept as 1) are the 2nd and 3rd outputs.

    In the default numerics, float32 runs onnxruntime's arithmetic (``kernels/rows.py``): one
    left-to-right float32 pass for sum(x) and sum(x^2), var = E[x^2] - mean^2, and a division by
    sqrt(var + epsilon). "spec" numerics: two passes with NumPy's sums, times 1 / sqrt(var +
    epsilon), as the spec's function body."""
    axis = normalize_axis(axis, x.ndim)
    st = stash_dtype(x, stash_type)
    if _fits_row_kernel(x, scale, b, axis, st, ctx):
        n = int(np.prod(x.shape[axis:]))
        y, mean, inv_std = sized_threads(x.size, K.layer_norm_rows, x.reshape(-1, n), scale, b, epsilon)
        stats_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
        return y.reshape(x.shape), mean.reshape(stats_shape), inv_std.reshape(stats_shape)
    xc = x.astype(st, copy=False)
    mean, var = _moments(xc, tuple(range(axis, x.ndim)))
    inv_std = 1 / np.sqrt(var + st.type(epsilon))
    y = (xc - mean) * inv_std * scale.astype(st, copy=False)
    if b is not None:
        y = y + b.astype(st, copy=False)
    # Y has Scale's type: the same as X's in the spec's op; onnxruntime's LayerNormalization-1
    # binds Y to Scale's type V, which may differ from X's
    return y.astype(scale.dtype, copy=False), mean, inv_std


def add_layer_normalization(a, b, scale, bias=None, *, axis=-1, epsilon=f32(1e-5), stash_type=1,
                            ctx=None):
    """Add(a, b) -> LayerNormalization as one step (``refrt.fusion``; onnxruntime's
    SkipLayerNormalization): the float32 sum is formed row by row inside the layer-norm kernel
    (``kernels.rows.add_layer_norm_rows``) instead of being written out and read back. None where
    that kernel does not apply (a and b float32 of one shape, and what
    :func:`layer_normalization`'s row kernel needs)."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == np.float32
            and b.dtype == np.float32 and a.shape == b.shape and a.ndim >= 1
            and isinstance(scale, np.ndarray) and (bias is None or isinstance(bias, np.ndarray))):
        return None
    axis = normalize_axis(axis, a.ndim)
    if not _fits_row_kernel(a, scale, bias, axis, stash_dtype(a, stash_type), ctx):
        return None
    n = int(np.prod(a.shape[axis:]))
    y, mean, inv_std = sized_threads(a.size, K.add_layer_norm_rows, a.reshape(-1, n),
                                     b.reshape(-1, n), scale, bias, epsilon)
    stats_shape = a.shape[:axis] + (1,) * (a.ndim - axis)
    return y.reshape(a.shape), mean.reshape(stats_shape), inv_std.reshape(stats_shape)


def _group_standardize(x, num_groups, epsilon, st):
    """X (N, C, ...) standardized over each group of C / num_groups channels and the spatial
    axes."""
    if x.ndim < 2 or num_groups < 1 or x.shape[1] % num_groups:
        raise ValueError(f"GroupNormalization: {x.shape[1] if x.ndim > 1 else '?'} channels "
                         f"cannot be split in num_groups={num_groups}")
    per_group = (x.shape[1] // num_groups) * int(np.prod(x.shape[2:]))   # explicit: N may be 0
    grouped = x.astype(st, copy=False).reshape(x.shape[0], num_groups, per_group)
    mean, var = _moments(grouped, (2,))
    return ((grouped - mean) / np.sqrt(var + st.type(epsilon))).reshape(x.shape)


@op("GroupNormalization", since=21)
def group_normalization(x, scale, bias, *, epsilon=f32(1e-5), num_groups, stash_type=1):
    """Y[n, c] = standardize(X[n, group(c)]) * scale[c] + bias[c] (scale and bias per channel)"""
    st = stash_dtype(x, stash_type)
    shape = _channel_shape(x)
    y = (_group_standardize(x, num_groups, epsilon, st) * scale.astype(st).reshape(shape)
         + bias.astype(st).reshape(shape))
    return y.astype(x.dtype, copy=False)


@op("GroupNormalization", since=18)
def group_normalization_18(x, scale, bias, *, epsilon=f32(1e-5), num_groups):
    """GroupNormalization-18: scale and bias have one entry per group (shape (num_groups,))."""
    ct = compute_dtype(x.dtype)
    per_channel = x.shape[1] // num_groups if num_groups else 0
    shape = _channel_shape(x)
    y = (_group_standardize(x, num_groups, epsilon, ct)
         * np.repeat(scale.astype(ct), per_channel).reshape(shape)
         + np.repeat(bias.astype(ct), per_channel).reshape(shape))
    return y.astype(x.dtype, copy=False)


@op("RMSNormalization", since=23)
def rms_normalization(x, scale, *, axis=-1, epsilon=f32(1e-5), stash_type=1):
    """Y = X / sqrt(mean(X^2 over axes [axis, rank)) + epsilon) * scale"""
    axis = normalize_axis(axis, x.ndim)
    st = stash_dtype(x, stash_type)
    xc = x.astype(st, copy=False)
    mean_square = (xc * xc).mean(axis=tuple(range(axis, x.ndim)), keepdims=True)
    y = xc / np.sqrt(mean_square + st.type(epsilon)) * scale.astype(st, copy=False)
    return y.astype(scale.dtype, copy=False)      # the schema's type V (Scale's), as onnxruntime


@op("MeanVarianceNormalization", since=(9, 13))
def mean_variance_normalization(x, *, axes=[0, 2, 3]):
    """Y = (X - E[X]) / (sqrt(E[(X - E[X])^2]) + 1e-9), moments over ``axes`` (the 1e-9 is the
    function body's)"""
    axes = tuple(sorted(set(normalize_axis(a, x.ndim) for a in axes)))
    ct = compute_dtype(x.dtype)
    xc = x.astype(ct, copy=False)
    mean, var = _moments(xc, axes)
    return ((xc - mean) / (np.sqrt(var) + ct.type(1e-9))).astype(x.dtype, copy=False)


@op("LRN", since=(1, 13))
def lrn(x, *, alpha=f32(1e-4), beta=0.75, bias=1.0, size):
    """Y[n, c] = X[n, c] / (bias + alpha / size * sum_{c' in window(c)} X[n, c']^2) ^ beta,
    window(c) = [c - floor((size - 1) / 2), c + ceil((size - 1) / 2)] clipped to the channels"""
    if x.ndim < 2 or size < 1:
        raise ValueError(f"LRN: X must be (N, C, ...) and size >= 1, got {list(x.shape)}, {size}")
    ct = compute_dtype(x.dtype)
    xc = x.astype(ct, copy=False)
    before = (size - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[1] = (before, size - 1 - before)
    padded = np.pad(xc * xc, pad)
    square_sum = np.lib.stride_tricks.sliding_window_view(padded, size, axis=1).sum(axis=-1)
    y = xc / np.power(ct.type(bias) + ct.type(alpha) / ct.type(size) * square_sum, ct.type(beta))
    return y.astype(x.dtype, copy=False)
