"""onnxruntime's NCHWc ops (``com.microsoft.nchwc`` domain): what its NchwcTransformer writes
into float32 convolutional graphs at ``ORT_ENABLE_ALL`` when a session saves its optimized
model (``optimized_model_filepath``; ``convert_onnx_models_to_ort`` leaves them out).

NCHWc is a blocked layout: a tensor of logical shape (N, C, H, W) has its channels padded to
C' (a multiple of the block B) and is stored as (N, C'/B, H, W, B), B channels side by side.
The graph declares it as (N, C', H, W); refrt keeps the stored order in an array of that shape,
as onnxruntime does, so element-wise ONNX ops between NCHWc tensors (Add, Tanh, ...) and every
intermediate value are the same bits in both runtimes. Filters are reordered once by the
transformer and stored reordered: OIHWBiBo (output block, input block, kernel position, input
channel, output channel) for convolutions over NCHWc input, OIHWBo for depthwise ones and for
those reading a plain NCHW input of fewer than B channels.

B is MLAS's NCHWc block size on the machine that optimized the model: 16 with AVX-512F, 8 with
AVX2. It is not written into the file (onnxruntime warns that such a file only runs where it was
optimized); refrt takes the block of its own host, as onnxruntime does when it runs the file.

The convolution follows MLAS's NCHWc kernels (``MlasNchwcConv``), which sum in an order of their
own: per output, a chain of fused multiply-adds from 0 over the kernel rows, columns and B input
channels of one input block (the NCHWc algorithm), over the kernel of one input channel (NCHW
input), over up to 128 input channels (1 x 1 kernels) or over the kernel of one channel
(depthwise); the chains are added in turn to the output, which starts as the Sum input when
given; then the bias and the activation (MLAS's). Pools: max, and averages summed row by row
in the window, divided by the count.
"""

from __future__ import annotations

import numpy as np

from ..registry import op
from ._common import pool_window, sliding_windows, window_geometry, window_taps
from ._kernels import K, sized_product
from .contrib_fused import _conv_activation, mlas_activation

NCHWC = "com.microsoft.nchwc"
_F32 = np.float32


def block_size() -> int:
    """MLAS's NCHWc block on this host (16 with AVX-512F, 8 with AVX2)."""
    from ..kernels import cpu

    have = cpu.features()[1]
    if "avx512f" in have:
        return 16
    if "avx2" in have and "fma" in have:
        return 8
    raise ValueError("onnxruntime's NCHWc ops need a CPU with AVX2 and FMA3 (MLAS has no NCHWc "
                     "block size without them); this one has neither")


def to_blocked(x, b):
    """Logical (N, C', H, W), C' a multiple of ``b`` -> the stored NCHWc order, same shape."""
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // b, b, h, w).transpose(0, 1, 3, 4, 2)
                                ).reshape(n, c, h, w)


def from_blocked(x, b):
    """The stored NCHWc order (N, C', H, W) -> logical channels, same shape."""
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // b, h, w, b).transpose(0, 1, 4, 2, 3)
                                ).reshape(n, c, h, w)


def _check_blocked(x, b, what):
    if x.ndim != 4:
        raise ValueError(f"{what}: X must be 4-D (N, C, H, W) in NCHWc order, got shape "
                         f"{list(x.shape)}")
    if x.shape[1] % b:
        raise ValueError(f"{what}: X has {x.shape[1]} channels, not a multiple of the NCHWc "
                         f"block {b}")


def _float32(x, what):
    if x.dtype != np.float32:
        raise TypeError(f"{what}: onnxruntime's NCHWc ops take float32, got {x.dtype}")
    return x


@op("ReorderInput", domain=NCHWC)
def reorder_input(x, *, channels_last=0):
    """Y = X in NCHWc order, channels zero-padded to a multiple of the block; X is NCHW, or NHWC
    with ``channels_last``. As onnxruntime: rank 4, channels a multiple of 4."""
    b = block_size()
    _float32(x, "ReorderInput")
    if x.ndim != 4:
        raise ValueError(f"ReorderInput: X must be 4-D, got shape {list(x.shape)}")
    xc = np.moveaxis(x, -1, 1) if channels_last else x
    n, c, h, w = xc.shape
    if c % 4:
        raise ValueError(f"ReorderInput: X has {c} channels; onnxruntime needs a multiple of 4")
    padded = -(-c // b) * b
    full = np.zeros((n, padded, h, w), _F32)
    full[:, :c] = xc
    return to_blocked(full, b)


@op("ReorderOutput", domain=NCHWC)
def reorder_output(x, *, channels=0, channels_last=0):
    """Y = the first ``channels`` channels of NCHWc X, in NCHW order (NHWC with
    ``channels_last``). ``channels`` must leave less than one block of padding, as onnxruntime
    requires."""
    b = block_size()
    _float32(x, "ReorderOutput")
    _check_blocked(x, b, "ReorderOutput")
    if not (0 < channels <= x.shape[1] and x.shape[1] - channels < b):
        raise ValueError(f"ReorderOutput: channels={channels} does not fit X's {x.shape[1]} "
                         f"block-aligned channels (block {b})")
    y = from_blocked(x, b)[:, :channels]
    return np.ascontiguousarray(np.moveaxis(y, 1, -1) if channels_last else y)


def _logical_filter(w, b, layout):
    """The stored reordered filter (declared (M', C, KH, KW)) -> logical OIHW."""
    m, c, kh, kw = w.shape
    if layout == "BiBo":
        if c % b:
            raise ValueError(f"Conv: filter of shape {list(w.shape)} over NCHWc input needs a "
                             f"multiple of {b} input channels")
        t = w.reshape(m // b, c // b, kh * kw, b, b)             # (ob, ib, k, bi, bo)
        return t.transpose(0, 4, 1, 3, 2).reshape(m, c, kh, kw)
    t = w.reshape(m // b, c, kh * kw, b)                          # (ob, i, k, bo)
    return t.transpose(0, 3, 1, 2).reshape(m, c, kh, kw)


def _chain_products(windows, w, group, chains):
    """sum over ``chains`` (channel ranges of each group, in order) of the products of w with
    the windows, each chain one run of fused multiply-adds from 0 over (kernel row, kernel
    column, channel), the chains' sums added in turn -> list of (N, M, P) partial sums."""
    n, c = windows.shape[:2]
    out_sp = windows.shape[2:4]
    kh, kw = windows.shape[4:6]
    m, cg = w.shape[:2]
    mg = m // group
    p = out_sp[0] * out_sp[1]
    parts = []
    for c0, c1 in chains:
        part = np.empty((n, m, p), _F32)
        for g in range(group):
            cols = windows[:, g * cg + c0:g * cg + c1]                   # (N, c, OH, OW, KH, KW)
            cols = cols.transpose(0, 4, 5, 1, 2, 3).reshape(n, kh * kw * (c1 - c0), p)
            wk = w[g * mg:(g + 1) * mg, c0:c1].transpose(0, 2, 3, 1).reshape(1, mg, -1)
            part[:, g * mg:(g + 1) * mg] = sized_product(n * mg * p * wk.shape[2],
                                                         K.batched_matmul_f32,
                                                         np.ascontiguousarray(wk),
                                                         np.ascontiguousarray(cols))
        parts.append(part)
    return parts


@op("Conv", domain=NCHWC)
def nchwc_conv(x, w, b=None, sum_=None, *, activation=None, activation_params=None,
               auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
               strides=None):
    """Y = activation(Sum + Conv(X, W) + B) in NCHWc order, as MLAS's NCHWc convolution: X in
    NCHWc order, or plain NCHW with fewer channels than the block; W reordered (OIHWBiBo, or
    OIHWBo for a depthwise convolution or an NCHW input); B and Y padded to the block. See the
    module docstring for the order of the sums."""
    blk = block_size()
    kind, params = _conv_activation(activation, activation_params, "Conv")
    _float32(x, "Conv")
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"Conv: X and W must be 4-D, got shapes {list(x.shape)} and "
                         f"{list(w.shape)}")
    n, c = x.shape[:2]
    m = w.shape[0]
    if m % blk:
        raise ValueError(f"Conv: W has {m} filters, not a multiple of the NCHWc block {blk}")
    if c >= blk and c % blk:
        raise ValueError(f"Conv: X has {c} channels: fewer than the block {blk} (NCHW input) or "
                         f"a multiple of it (NCHWc input)")
    if group < 1 or c % group or m % group or w.shape[1] * group != c:
        raise ValueError(f"Conv: X has {c} channels and W shape {list(w.shape)}; with group="
                         f"{group}, W must be (M, C/group, KH, KW)")
    if kernel_shape is not None and tuple(kernel_shape) != w.shape[2:]:
        raise ValueError(f"Conv: kernel_shape {list(kernel_shape)} does not match W's "
                         f"{list(w.shape[2:])}")
    nchw_input = c < blk
    depthwise = group > 1 and w.shape[1] == 1 and m == group
    layout = "Bo" if (nchw_input or depthwise) else "BiBo"
    wl = _logical_filter(w.astype(_F32, copy=False), blk, layout)
    xl = x if nchw_input else from_blocked(x, blk)
    win = window_geometry(xl.shape[2:], w.shape[2:], strides, dilations, pads, auto_pad)
    windows = sliding_windows(xl, win, 0)                           # (N, C, OH, OW, KH, KW)
    p = win.out[0] * win.out[1]
    if depthwise:
        from ..kernels.fma import fma32

        acc = np.zeros((n, m) + win.out, _F32)
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                acc = fma32(windows[..., i, j], wl[None, :, 0, i, j, None, None], acc)
        parts = [acc.reshape(n, m, p)]
    else:
        cg = w.shape[1]
        pointwise = w.shape[2:] == (1, 1) and not any(win.pads_begin + win.pads_end)
        step = 1 if nchw_input else (128 if pointwise else blk)
        parts = _chain_products(windows, wl, group, [(s, min(cg, s + step))
                                                     for s in range(0, cg, step)])
    if sum_ is not None:
        if sum_.shape != (n, m) + win.out:
            raise ValueError(f"Conv: Sum must have the output's shape {[n, m, *win.out]}, got "
                             f"{list(sum_.shape)}")
        y = from_blocked(sum_.astype(_F32, copy=False), blk).reshape(n, m, p)
        for part in parts:
            y = y + part
    else:
        y = parts[0]
        for part in parts[1:]:
            y = y + part
    if b is not None:
        if b.shape != (m,):
            raise ValueError(f"Conv: B must be 1-D with one value per (block-padded) filter, "
                             f"[{m}], as onnxruntime requires; got shape {list(b.shape)}")
        y = y + b.astype(_F32, copy=False)[:, None]
    y = mlas_activation(y, kind, params)
    return to_blocked(np.asarray(y, _F32).reshape((n, m) + win.out), blk)


def _nchwc_pool(x, what, fn):
    blk = block_size()
    _float32(x, what)
    _check_blocked(x, blk, what)
    return to_blocked(np.ascontiguousarray(fn(from_blocked(x, blk)), dtype=_F32), blk)


def _max_taps(xl, win):
    return window_taps(xl, win, -np.inf).max(axis=0)


def _average_taps(xl, win, count_include_pad):
    """Each window summed row by row from its first cell (padding skipped), divided by the
    cells counted."""
    taps = window_taps(xl, win, 0)
    total = taps[0].copy()
    for t in taps[1:]:
        total += t
    if count_include_pad:
        count = _F32(np.prod(win.kernel))
    else:
        count = window_taps(np.ones((1, 1) + xl.shape[2:], _F32), win, 0).sum(axis=0)
    return total / count


@op("MaxPool", domain=NCHWC)
def nchwc_max_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape,
                   pads=None, storage_order=0, strides=None):
    """Y = MaxPool(X) over NCHWc X (no Indices output); padding never wins."""
    return _nchwc_pool(x, "MaxPool", lambda xl: _max_taps(xl, pool_window(
        xl, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)))


@op("AveragePool", domain=NCHWC)
def nchwc_average_pool(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0,
                       kernel_shape, pads=None, strides=None):
    """Y = AveragePool(X) over NCHWc X: each window summed row by row, divided by its count
    (the kernel size with count_include_pad, else the cells inside X)."""
    return _nchwc_pool(x, "AveragePool", lambda xl: _average_taps(xl, pool_window(
        xl, kernel_shape, strides, None, pads, auto_pad, ceil_mode), count_include_pad))


@op("GlobalMaxPool", domain=NCHWC)
def nchwc_global_max_pool(x):
    """Y[n, c] = max over H, W of NCHWc X (spatial dims kept as 1)."""
    return _nchwc_pool(x, "GlobalMaxPool", lambda xl: xl.max(axis=(2, 3), keepdims=True))


@op("GlobalAveragePool", domain=NCHWC)
def nchwc_global_average_pool(x):
    """Y[n, c] = (sum over H, W of NCHWc X, row by row) / (H * W) (spatial dims kept as 1)."""
    return _nchwc_pool(x, "GlobalAveragePool", lambda xl: _average_taps(
        xl, pool_window(xl, xl.shape[2:], None, None, None, "NOTSET"), 0))
