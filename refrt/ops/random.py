"""Random generators: RandomNormal, RandomUniform, their *Like forms, Multinomial, Bernoulli.

The draws come from ``ctx.rng(seed)``, a NumPy generator: with a ``seed`` attribute the output is
the same on every run (and differs between seeds); without one every run draws afresh. The values
cannot match another runtime's generator, only its distribution. Samples are drawn in float64 and
rounded to the output type.
"""

from __future__ import annotations

import numpy as np

from ..registry import op
from ._common import np_dtype

_FLOAT_KINDS = ("float16", "float32", "float64", "bfloat16")


def _float_dtype(dtype, what: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.name not in _FLOAT_KINDS:
        raise TypeError(f"{what} must be float16, float, double or bfloat16, got {dtype}")
    return dtype


def _like_dtype(x: np.ndarray, dtype) -> np.dtype:
    """The *Like ops' output type: the ``dtype`` attribute, else the input's type."""
    return _float_dtype(x.dtype if dtype is None else np_dtype(dtype), "the output type")


def _normal(rng, shape, dtype, mean, scale) -> np.ndarray:
    return (mean + scale * rng.standard_normal(shape)).astype(dtype)


def _uniform(rng, shape, dtype, low, high) -> np.ndarray:
    """low + (high - low) * U[0, 1), kept below ``high`` after rounding to ``dtype``."""
    if not high >= low:
        raise ValueError(f"high ({high}) must not be less than low ({low})")
    y = (low + (high - low) * rng.random(shape)).astype(dtype)
    top = np.asarray(high, dtype=np.float64).astype(dtype)
    if high > low:   # rounding may land on high itself: step back to the value just below it
        below = np.nextafter(top, np.asarray(low, dtype=np.float64).astype(dtype))
        y = np.where(y >= top, below, y).astype(dtype)
    return y


def _shape(shape) -> tuple:
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape {shape} has a negative dimension")
    return shape


@op("RandomNormal", since=(1, 22))
def random_normal(*, shape, dtype=1, mean=0.0, scale=1.0, seed=None, ctx):
    """Y ~ Normal(mean, scale^2) of the given shape and dtype"""
    return _normal(ctx.rng(seed), _shape(shape), _float_dtype(np_dtype(dtype), "dtype"), mean,
                   scale)


@op("RandomUniform", since=(1, 22))
def random_uniform(*, shape, dtype=1, high=1.0, low=0.0, seed=None, ctx):
    """Y ~ Uniform[low, high) of the given shape and dtype"""
    return _uniform(ctx.rng(seed), _shape(shape), _float_dtype(np_dtype(dtype), "dtype"), low,
                    high)


@op("RandomNormalLike", since=(1, 22))
def random_normal_like(x, *, dtype=None, mean=0.0, scale=1.0, seed=None, ctx):
    """Y ~ Normal(mean, scale^2) with X's shape; dtype defaults to X's type"""
    return _normal(ctx.rng(seed), x.shape, _like_dtype(x, dtype), mean, scale)


@op("RandomUniformLike", since=(1, 22))
def random_uniform_like(x, *, dtype=None, high=1.0, low=0.0, seed=None, ctx):
    """Y ~ Uniform[low, high) with X's shape; dtype defaults to X's type"""
    return _uniform(ctx.rng(seed), x.shape, _like_dtype(x, dtype), low, high)


@op("Multinomial", since=(7, 22))
def multinomial(x, *, dtype=6, sample_size=1, seed=None, ctx):
    """Y[b, s] ~ Categorical(softmax(X[b])): X [batch, classes] holds unnormalized log
    probabilities; Y [batch, sample_size] holds class indices (int32 or int64)."""
    out = np_dtype(dtype)
    if out not in (np.int32, np.int64):
        raise TypeError(f"dtype must be int32 or int64, got {out}")
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"input must have shape [batch_size, class_size >= 1], got {x.shape}")
    if sample_size < 0:
        raise ValueError(f"sample_size must be non-negative, got {sample_size}")
    logits = x.astype(np.float64)
    peak = logits.max(axis=1, keepdims=True)
    if not np.isfinite(peak).all():
        raise ValueError("every row of the input needs a finite maximum log probability")
    cdf = np.cumsum(np.exp(logits - peak), axis=1)
    u = ctx.rng(seed).random((x.shape[0], sample_size)) * cdf[:, -1:]
    # the first class whose cumulative weight exceeds u (never past the last class)
    idx = np.array([np.searchsorted(c, row, side="right") for c, row in zip(cdf, u)],
                   dtype=np.int64).reshape(x.shape[0], sample_size)
    return np.minimum(idx, x.shape[1] - 1).astype(out)


@op("Bernoulli", since=(15, 22))
def bernoulli(x, *, dtype=None, seed=None, ctx):
    """Y = 1 with probability X, else 0 (Y = U < X, U ~ Uniform[0, 1)); dtype defaults to X's type"""
    out = x.dtype if dtype is None else np_dtype(dtype)
    p = x.astype(np.float64)
    if ((p < 0) | (p > 1) | np.isnan(p)).any():
        raise ValueError("Bernoulli probabilities must lie in [0, 1]")
    return (ctx.rng(seed).random(x.shape) < p).astype(out)
