"""Helpers shared by the op families: dtypes, axes. Anything two families need lives here."""

from __future__ import annotations

import functools
import math

import numpy as np
from onnx import TensorProto, helper

from ._kernels import K, sized_threads


def np_dtype(elem_type: int) -> np.dtype:
    """ONNX TensorProto element type -> NumPy dtype (ml_dtypes for bfloat16, float8, int4, ...)."""
    if elem_type == TensorProto.STRING:
        return np.dtype(object)
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def onnx_elem_type(dtype) -> int:
    """NumPy dtype -> ONNX element type."""
    dtype = np.dtype(dtype)
    if dtype == object or dtype.kind in "SU":
        return TensorProto.STRING
    return helper.np_dtype_to_tensor_dtype(dtype)


def normalize_axis(axis: int, rank: int) -> int:
    """Map a possibly negative axis into [0, rank); raise ValueError when out of range."""
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for a tensor of rank {rank}")
    return axis + rank if axis < 0 else axis


def normalize_axes(axes, rank: int) -> tuple[int, ...]:
    return tuple(normalize_axis(int(a), rank) for a in axes)


def as_int_list(values, what: str = "value") -> list[int]:
    """A shape/axes/pads tensor (0-D or 1-D integer array, or a list) -> list of Python ints."""
    arr = np.asarray(values)
    if arr.ndim > 1:
        raise ValueError(f"{what} must be a 1-D tensor, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iub":
        raise TypeError(f"{what} must hold integers, got {arr.dtype}")
    return [int(v) for v in arr.reshape(-1)]


def normalize_indices(indices, dim: int, what: str = "indices") -> np.ndarray:
    """Map indices in [-dim, dim) into [0, dim) as int64; raise ValueError for any outside.

    Index tensors are never wrapped silently: an out-of-range index is a model or input error.
    """
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{what} must be an integer tensor, got {idx.dtype}")
    idx = idx.astype(np.int64)
    bad = (idx < -dim) | (idx >= dim)
    if bad.any():
        first = idx[bad].reshape(-1)[0]
        raise ValueError(f"{what} value {first} is out of range for a dimension of size {dim} "
                         f"(allowed: [{-dim}, {dim - 1}])")
    return np.where(idx < 0, idx + dim, idx)


# ---------------------------------------------------------------- float attributes, compute types

def f32(value: float) -> float:
    """``value`` rounded to float32, as a Python float. FLOAT attributes are float32 in ONNX, so
    the schema default ``epsilon=1e-5`` arrives as 9.999999747378752e-06: signatures say
    ``epsilon=f32(1e-5)``."""
    return float(np.float32(value))


# float32 LayerNormalization and Softmax over the last axis run in Numba row kernels
# (kernels/rows.py) from this many elements; below it the NumPy expression costs about as much as
# the kernel's call.
ROW_KERNEL_MIN_SIZE = 4096


def compute_dtype(dtype) -> np.dtype:
    """The dtype float arithmetic runs in, as onnxruntime's CPU kernels do it: float16, bfloat16 and
    the float8 types compute in float32 (callers cast the result back); float32, float64 and the
    integer types stay themselves."""
    dtype = np.dtype(dtype)
    if dtype == np.float64 or dtype == np.float32 or dtype.kind in "iub" or dtype == object:
        return dtype
    return np.dtype(np.float32)


def is_f32_scalar(v) -> bool:
    """A float32 array of one element (of any rank)."""
    return isinstance(v, np.ndarray) and v.dtype == np.float32 and v.size == 1


# ---------------------------------------------------------------- constant inputs


def once_per_session(ctx, key, inputs, build, signature=None):
    """``build()``, kept in the node's cache (``ctx.cache[key]``) when the node's inputs numbered
    ``inputs`` are all constant, so that a session prepares its weights once; rebuilt when
    ``signature`` (what the value was built from, e.g. a shape and dtype) differs from the kept
    one. Computed on every call when an input is not constant (or without ``ctx``)."""
    if ctx is None or not all(ctx.is_constant(i) for i in inputs):
        return build()
    hit = ctx.cache.get(key)
    if hit is not None and hit[0] == signature:
        return hit[1]
    value = build()
    ctx.cache[key] = (signature, value)
    return value


# ---------------------------------------------------------------- sliding windows (Conv, pools)

from typing import NamedTuple  # noqa: E402


class Window(NamedTuple):
    """Geometry of a sliding-window op over the spatial axes (all tuples, one entry per axis)."""
    kernel: tuple
    strides: tuple
    dilations: tuple
    pads_begin: tuple
    pads_end: tuple
    out: tuple        # output spatial shape

    @property
    def extent(self) -> tuple:
        """Dilated kernel size (k - 1) * d + 1 per axis."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))


def window_geometry(in_shape, kernel, strides=None, dilations=None, pads=None,
                    auto_pad: str = "NOTSET", ceil_mode: int = 0) -> Window:
    """Output shape and pads of a window op over spatial shape ``in_shape``; ek = (k - 1) * d + 1.

    NOTSET: out = floor((in + pb + pe - ek) / s) + 1 (ceil with ceil_mode, dropping a last window
    that would start inside the end padding, as onnxruntime and PyTorch do).
    SAME_UPPER / SAME_LOWER: out = ceil(in / s), total pad (out - 1) * s + ek - in split in halves,
    the odd one at the end (UPPER) or the beginning (LOWER). VALID: no pads.
    """
    n = len(in_shape)
    kernel = tuple(int(k) for k in kernel)
    strides = tuple(int(s) for s in strides) if strides else (1,) * n
    dilations = tuple(int(d) for d in dilations) if dilations else (1,) * n
    pads = tuple(int(p) for p in pads) if pads else (0,) * (2 * n)
    for name, v, size in (("kernel_shape", kernel, n), ("strides", strides, n),
                          ("dilations", dilations, n), ("pads", pads, 2 * n)):
        if len(v) != size:
            raise ValueError(f"{name} has {len(v)} entries, expected {size} for {n} spatial axes")
    if min(strides) < 1 or min(dilations) < 1 or min(kernel) < 1:
        raise ValueError(f"kernel_shape {kernel}, strides {strides} and dilations {dilations} "
                         f"must be positive")
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    begin, end, out = list(pads[:n]), list(pads[n:]), []
    for i in range(n):
        size, s, ek = int(in_shape[i]), strides[i], extent[i]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-size // s)
            total = max(0, (o - 1) * s + ek - size)
            small, large = total // 2, total - total // 2
            begin[i], end[i] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        elif auto_pad in ("NOTSET", "VALID"):
            if auto_pad == "VALID":
                begin[i] = end[i] = 0
            span = size + begin[i] + end[i] - ek
            if span < 0:
                raise ValueError(f"kernel extent {ek} is larger than the padded input "
                                 f"({size + begin[i] + end[i]}) on spatial axis {i}")
            o = (-(-span // s) if ceil_mode else span // s) + 1
            if ceil_mode and (o - 1) * s >= size + begin[i]:
                o -= 1
        else:
            raise ValueError(f"unknown auto_pad {auto_pad!r}")
        out.append(o)
    return Window(kernel, strides, dilations, tuple(begin), tuple(end), tuple(out))


def pad_constant(x: np.ndarray, pad_width, fill=0) -> np.ndarray:
    """``numpy.pad(x, pad_width, constant_values=fill)`` for non-negative pads: one new array
    filled with ``fill``, x copied into its middle (NumPy's pad runs several Python-level steps
    per axis: 0.5 ms for a 96 x 56 x 56 float32 image)."""
    shape = tuple(d + b + e for d, (b, e) in zip(x.shape, pad_width))
    out = np.full(shape, fill, dtype=x.dtype)
    out[tuple(slice(b, b + d) for d, (b, _) in zip(x.shape, pad_width))] = x
    return out


def sliding_windows(x: np.ndarray, win: Window, fill=0) -> np.ndarray:
    """Read-only view of ``x`` (N, C, *spatial) as (N, C, *win.out, *win.kernel):
    ``[n, c, o.., k..] = x[n, c, o * s - pb + k * d]``, reading ``fill`` outside the input."""
    n_sp = len(win.kernel)
    spatial = x.shape[2:]
    pad_width, start = [(0, 0), (0, 0)], []
    for i in range(n_sp):
        reach = (win.out[i] - 1) * win.strides[i] + win.extent[i]   # padded cells read
        need_end = reach - spatial[i] - win.pads_begin[i]
        pad_width.append((max(win.pads_begin[i], 0), max(need_end, 0)))
        start.append(max(-win.pads_begin[i], 0))
    if any(p != (0, 0) for p in pad_width):
        x = pad_constant(x, pad_width, fill)
    view = np.lib.stride_tricks.sliding_window_view(x, win.extent, axis=tuple(range(2, 2 + n_sp)))
    index = ((slice(None), slice(None))
             + tuple(slice(b, b + (o - 1) * s + 1, s)
                     for b, o, s in zip(start, win.out, win.strides))
             + tuple(slice(None, None, d) for d in win.dilations))
    return view[index]


def pool_window(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode=0) -> Window:
    """The window geometry of a pooling op over X (N, C, spatial...)."""
    if kernel_shape is None:
        raise ValueError("kernel_shape is required")
    n_sp = len(kernel_shape)
    if x.ndim != n_sp + 2:
        raise ValueError(f"input of shape {list(x.shape)} does not fit kernel_shape "
                         f"{list(kernel_shape)}: expected rank {n_sp + 2} (N, C, spatial...)")
    return window_geometry(x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad,
                           ceil_mode)


def window_taps(x, win, fill):
    """The windows of ``x`` laid out as (K, N, C, *out), one row per kernel tap: reducing over
    axis 0 then runs over contiguous rows (much faster than over the strided window axes)."""
    windows = sliding_windows(x, win, fill)                    # (N, C, *out, *kernel)
    n_sp = len(win.kernel)
    kernel_axes = tuple(range(2 + n_sp, 2 + 2 * n_sp))
    taps = np.moveaxis(windows, kernel_axes, tuple(range(n_sp)))
    taps_count = math.prod(windows.shape[2 + n_sp:])       # explicit: a zero-size batch has no -1
    return taps.reshape((taps_count,) + windows.shape[:2 + n_sp])


def add_windows(cols: np.ndarray, win: Window, in_shape) -> np.ndarray:
    """The adjoint of :func:`sliding_windows` (col2im): sum ``cols`` (N, C, *win.kernel, *win.out)
    into an array (N, C, *in_shape), each value going where sliding_windows read it from; values
    that fall in the padding are dropped. Loops over kernel positions only."""
    lead = cols.shape[:2]
    full = [max(b + size, (o - 1) * s + ek) for b, size, o, s, ek
            in zip(win.pads_begin, in_shape, win.out, win.strides, win.extent)]
    if min(win.pads_begin) < 0:
        raise ValueError(f"negative begin pads {win.pads_begin} are not supported")
    if cols.dtype == np.float32 and len(win.kernel) == 2:
        # the same additions in the same order, compiled (ConvTranspose's col2im)
        planes = math.prod(lead)
        acc = sized_threads(cols.size, K.add_windows_2d, cols.reshape((planes,) + cols.shape[2:]),
                            win.strides, win.dilations, full).reshape(lead + tuple(full))
        crop = tuple(slice(b, b + size) for b, size in zip(win.pads_begin, in_shape))
        return acc[(slice(None), slice(None)) + crop]
    acc = np.zeros(lead + tuple(full), dtype=cols.dtype)
    for k in np.ndindex(*win.kernel):
        index = (slice(None), slice(None)) + tuple(
            slice(ki * d, ki * d + (o - 1) * s + 1, s)
            for ki, d, o, s in zip(k, win.dilations, win.out, win.strides))
        acc[index] += cols[(slice(None), slice(None)) + k]
    crop = tuple(slice(b, b + size) for b, size in zip(win.pads_begin, in_shape))
    return acc[(slice(None), slice(None)) + crop]


# ---------------------------------------------------------------- scalar inputs

def as_scalar(value, what: str = "value", kinds: str = "iu"):
    """A scalar input tensor (0-D, or 1-D with one element) -> Python int/float.

    ``kinds`` lists the accepted NumPy dtype kinds ("iu" integers, "f" floats); anything else, or a
    tensor holding more than one value, raises with a message naming ``what``."""
    arr = np.asarray(value)
    if arr.ndim > 1 or arr.size != 1:
        raise ValueError(f"{what} must be a scalar, got a tensor of shape {arr.shape}")
    if arr.dtype.kind not in kinds and not (arr.dtype.kind == "V" and "f" in kinds):
        raise TypeError(f"{what} must be of kind {kinds!r}, got {arr.dtype}")
    item = arr.reshape(())
    return int(item) if arr.dtype.kind in "iub" else float(item.astype(np.float64))


# ---------------------------------------------------------------- string elements

def to_str(value) -> str:
    """One element of a string tensor as ``str``: UTF-8 ``bytes`` are decoded, ``str`` passes."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if not isinstance(value, str):
        raise TypeError(f"expected a string element, got {type(value).__name__}")
    return value


def mlas_wide_kernels() -> bool:
    """Whether onnxruntime's MLAS runs its AVX-512F float kernels on this CPU (else its AVX2/FMA3
    ones): the softmax and exp row kernels reproduce the one this host's onnxruntime uses."""
    from ..kernels import cpu

    return "avx512f" in cpu.features()[1]


def ort_threads(ctx) -> int:
    """The intra-op thread count onnxruntime would run this session with: the session's
    ``intra_op_num_threads`` when set, else onnxruntime's default, the number of physical cores.
    MLAS shares float GEMMs between threads by column ranges, which changes how it blocks K, so
    refrt's "ort" numerics need it."""
    n = int(getattr(getattr(ctx, "options", None), "intra_op_num_threads", 0) or 0)
    return n if n > 0 else physical_cores()


@functools.cache
def physical_cores() -> int:
    """Physical CPU cores (hyperthreads of one core counted once), from Linux's sysfs; the
    logical CPU count where sysfs does not say. Read once per process (ops ask on every run)."""
    import os

    count = os.cpu_count() or 1
    cores = set()
    for cpu in range(count):
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:
            return count
    return max(1, len(cores))
