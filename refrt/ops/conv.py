"""Convolutions: Conv, ConvTranspose, DeformConv, Col2Im.

Every convolution here is im2col + a matrix product per group: the input is viewed as windows
(``sliding_windows``), the windows are laid out as columns, and ``W @ columns`` gives the output.
In the default numerics a float32 Conv multiplies in onnxruntime's order (``_mlas_conv``: MLAS's
algorithm choice, K blocks and thread segments; on AVX-512 CPUs the columns are built straight
into the packed tiles' panels, ``_packed_conv``); "spec" numerics use one batched BLAS matmul.
ConvTranspose runs the same picture backwards: ``W^T @ X`` gives columns, which ``add_windows``
(col2im) sums into the image. float16 / bfloat16 compute in float32 and are cast back, as
onnxruntime does; float32 accumulates in float32.
"""

from __future__ import annotations

import math

import numpy as np

from ..registry import op
from ._common import (
    Window,
    add_windows,
    compute_dtype,
    ort_threads,
    pad_constant,
    sliding_windows,
    window_geometry,
)
from ._kernels import K, sized_product, sized_threads


def _check_conv_inputs(x, w, group, name):
    if x.ndim < 3:
        raise ValueError(f"{name}: X must have rank >= 3 (N, C, spatial...), got shape {x.shape}")
    if w.ndim != x.ndim:
        raise ValueError(f"{name}: W has rank {w.ndim}, X has rank {x.ndim}")
    if group < 1:
        raise ValueError(f"{name}: group must be >= 1, got {group}")


def _kernel_shape(w, kernel_shape, name):
    if kernel_shape is not None and tuple(kernel_shape) != w.shape[2:]:
        raise ValueError(f"{name}: kernel_shape {list(kernel_shape)} does not match W's spatial "
                         f"shape {list(w.shape[2:])}")
    return w.shape[2:]


def _conv_columns(x, win, group):
    """X (N, C, *in) -> columns (N, group, C/group * prod(kernel), prod(out)) for ``W @ cols``."""
    n, c = x.shape[:2]
    if (len(win.kernel) and max(win.kernel) == 1 and max(win.strides) == 1 and not any(win.pads_begin)
            and not any(win.pads_end)):
        return x.reshape(n, group, c // group, math.prod(win.out))   # 1 x 1: X's own layout
    windows = sliding_windows(x, win, 0)                       # (N, C, *out, *kernel)
    n_sp = len(win.kernel)
    # (N, C, *out, *kernel) -> (N, C, *kernel, *out): each column is one output position
    order = (0, 1) + tuple(range(2 + n_sp, 2 + 2 * n_sp)) + tuple(range(2, 2 + n_sp))
    k_size, p_size = math.prod(win.kernel), math.prod(win.out)
    return windows.transpose(order).reshape(n, group, (c // group) * k_size, p_size)


def _mlas_conv(x, wg, win, group, threads):
    """The products W_g @ columns in onnxruntime's order (MLAS's convolution) -> (N, G, Mg, P)
    (``_mlas_conv_plan`` decides how, once per shape)."""
    return _mlas_conv_plan(x.shape, wg.shape, win, threads)(x, wg)


def _pointwise(win) -> bool:
    """A 1 x 1 kernel with unit strides and no padding: the columns are X itself."""
    return (all(s == 1 for s in win.strides) and not any(win.pads_begin) and not any(win.pads_end)
            and math.prod(win.kernel) == 1)


def _mlas_conv_plan(x_shape, wg_shape, win, threads):
    """How ``_mlas_conv`` multiplies X of ``x_shape`` by W_g of ``wg_shape`` (G, Mg, K) over the
    window ``win``: a function (x, wg) -> (N, G, Mg, P), settled once per shape (a session keeps
    it in the node's cache, ``conv_sum``), in onnxruntime's order:

    * a 1 x 1 kernel with unit strides and no padding, or more filters than outputs: one SGEMM
      per (image, group) (``sgemm``), its columns shared between threads -- except for a 1 x 1
      kernel over several images or groups, where each (image, group) is one thread's whole
      SGEMM;
    * otherwise the outputs are shared between threads (for a single image and group) and K is
      multiplied in slices whose size follows SGEMM's rule for the thread's outputs; each output
      a chain of fused multiply-adds per slice, the slices added in turn (``conv_gemm``); a
      single filter per group (depthwise) runs MLAS's M = 1 kernel.

    The kernels are looked up (``K``) when the function runs, not when it is planned."""
    n = x_shape[0]
    g, mg, k = wg_shape
    p = math.prod(win.out)
    direct = _pointwise(win)
    if n * g * mg * p == 0 or k == 0:
        return lambda x, wg: np.zeros((n, g, mg, p), np.float32)
    if mg == 1 and not direct and len(win.kernel) == 2 and k == math.prod(win.kernel):
        # depthwise 2-D: MLAS's M = 1 kernel on the taps, read from the input (the padding as
        # zeros), every (image, channel) plane in one call
        (pt, pl), (pb, pr) = win.pads_begin, win.pads_end
        stride_k, planes = K.sgemm_k_stride(p, k), (n * g,) + tuple(x_shape[2:])

        def depthwise(x, wg):
            taps = wg[:, 0] if n == 1 else np.tile(wg[:, 0], (n, 1))
            y = K.depthwise_m1_2d(x.reshape(planes), taps, win.kernel, win.strides,
                                  win.dilations, win.out, stride_k, (pt, pl, pb, pr))
            return y.reshape(n, g, 1, p)
        return depthwise
    macs = n * mg * p * k    # of one group: small products run on the calling thread alone
    # the register tiles: everywhere they fit the vector registers, except that with 16 of them
    # (AVX2) a pointwise convolution measured faster as MLAS's own SGEMM below (bench/conv.py)
    tiles = K.float_packed_available() or (K.float_tiles_available() and not direct)
    if mg > 1 and p > 1 and len(win.kernel) <= 2 and tiles:
        segments = _segments(n, g, mg, p, k, direct, threads)
        if not (direct and all(s >= k for _, _, s in segments)):
            return lambda x, wg: _packed_conv(x, wg, win, segments)
        # a pointwise convolution whose products are one chain of fused multiply-adds each:
        # the images are the B matrices of one stack product, read in place
        if g == 1:
            return lambda x, wg: sized_product(macs, K.batched_matmul_f32, wg[0][None],
                                               x.reshape(n, k, p))[:, None]

        def pointwise_groups(x, wg):
            xs, out = x.reshape(n, g, k, p), np.empty((n, g, mg, p), np.float32)
            for j in range(g):
                out[:, j] = sized_product(macs // g, K.batched_matmul_f32, wg[j][None], xs[:, j])
            return out
        return pointwise_groups
    if mg == 1 and not direct:
        stride_k = K.sgemm_k_stride(p, k)
        return lambda x, wg: K.m1_groups(np.tile(wg[:, 0], (n, 1)), _conv_columns(x, win, g).reshape(
            n * g, k, p), stride_k).reshape(n, g, 1, p)
    if direct or mg > p:
        # one SGEMM per image (MlasGemm), the images' products computed together; a pointwise
        # convolution of several images or groups gives each (image, group) to one thread, its
        # SGEMM unsplit
        t = 1 if direct and n * g > 1 else threads
        if g == 1:
            return lambda x, wg: sized_product(macs, K.sgemm_stack, wg[0], _conv_columns(x, win, 1)[:, 0],
                                               threads=t)[:, None]
        return _per_group(n, g, mg, p, win, lambda w, cols: sized_product(macs, K.sgemm_stack, w, cols,
                                                                           threads=t))
    if n * g > 1:
        # several images or groups: each image's segment is all of its outputs
        stride_k = K.sgemm_k_stride(p, k)
        return _per_group(n, g, mg, p, win, lambda w, cols: sized_product(macs, K.conv_gemm, w, cols,
                                                                           stride_k))
    segments = [(p0, p1, K.sgemm_k_stride(p1 - p0, k)) for p0, p1 in K.conv_segments(mg, p, k, threads)]

    def segmented(x, wg):
        cols, out = _conv_columns(x, win, 1), np.empty((1, 1, mg, p), np.float32)
        for p0, p1, stride_k in segments:
            out[0, 0, :, p0:p1] = sized_product(macs, K.conv_gemm, wg[0], cols[0, 0, :, p0:p1], stride_k)
        return out
    return segmented


def _per_group(n, g, mg, p, win, product):
    """(x, wg) -> (N, G, Mg, P) with ``product(W_g, columns of every image)`` per group."""
    def run(x, wg):
        cols, out = _conv_columns(x, win, g), np.empty((n, g, mg, p), np.float32)
        for j in range(g):
            out[:, j] = product(wg[j], cols[:, j])
        return out
    return run


def _segments(n, g, mg, p, k, direct, threads):
    """The output ranges of one (image, group) product that MLAS's threads compute and the K
    block size each of them uses, [(p0, p1, stride_k)] (the rule ``_mlas_conv`` follows)."""
    if direct and n * g > 1:
        ranges = [(0, p)]         # one (image, group) per thread, each a whole single-thread SGEMM
    elif direct or mg > p:
        ranges = K.sgemm_column_segments(mg, p, k, threads)
    elif n * g > 1:
        ranges = [(0, p)]
    else:
        ranges = K.conv_segments(mg, p, k, threads)
    return [(p0, p1, K.sgemm_k_stride(p1 - p0, k)) for p0, p1 in ranges]


def _packed_conv(x, wg, win, segments):
    """``_mlas_conv`` with the products on the packed AVX-512 tiles (``matmul_packed_f32``):
    per group, W_g [Mg, K] @ the im2col columns of every image side by side, built straight into
    panels (``im2col_panels``), each column's K blocks as its segment says (one product for all
    columns when every segment blocks K alike) -> (N, G, Mg, P), the same bits."""
    n = x.shape[0]
    g, mg, k = wg.shape
    cg = x.shape[1] // g
    if len(win.kernel) == 1:        # a 1-D convolution is a 2-D one of height 1
        x = x[:, :, None]
        win = Window((1,) + win.kernel, (1,) + win.strides, (1,) + win.dilations,
                     (0,) + win.pads_begin, (0,) + win.pads_end, (1,) + win.out)
    xp = x
    if any(win.pads_begin) or any(win.pads_end):
        xp = pad_constant(x, [(0, 0), (0, 0)] + list(zip(win.pads_begin, win.pads_end)))
    p = win.out[0] * win.out[1]
    if len({s for _, _, s in segments}) == 1:
        ranges = [(0, n * p, segments[0][2])]
    else:
        ranges = [(i * p + p0, i * p + p1, s) for i in range(n) for p0, p1, s in segments]
    out = None if n == g == 1 else np.empty((n, g, mg, p), np.float32)
    for j in range(g):
        w = np.ascontiguousarray(wg[j])
        parts = []                                                    # each [Mg, q1 - q0]
        for q0, q1, stride in ranges:
            # small steps on the calling thread (the panels by the values written)
            panels = sized_threads(k * (q1 - q0), K.im2col_panels, xp, j * cg, cg, win.kernel,
                                   win.strides, win.dilations, win.out, q0, q1)
            parts.append(sized_product(mg * k * (q1 - q0), K.matmul_packed_f32, w, panels,
                                       k_block=stride))
        y = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if out is None:
            return y.reshape(1, 1, mg, p)
        out[:, j] = y.reshape(mg, n, p).transpose(1, 0, 2)
    return out


def _mlas_conv_into(x, wg, win, group, threads, init):
    """``_mlas_conv`` with the output starting from ``init`` (N, G, Mg, P) instead of 0: MLAS's
    convolution with beta = 1, as onnxruntime runs a Conv whose output buffer already holds
    the sum of a fused Add (com.microsoft FusedConv's input Z). Each thread's segment of each
    (image, group) product is an SGEMM whose K blocks (or, for a single filter, the M = 1
    kernel's groups of products) are added to the init in turn, so Z enters before the first
    block -- not after the product, which rounds differently once K spans several blocks."""
    n = x.shape[0]
    g, mg, k = wg.shape
    p = math.prod(win.out)
    out = np.array(init, dtype=np.float32, copy=True)
    if out.size == 0 or k == 0:
        return out
    direct = _pointwise(win)
    cols = x.reshape(n, g, k, p) if direct else _conv_columns(x, win, group)
    if len(win.kernel) > 3:       # onnxruntime: im2col and one threaded SGEMM per (image, group)
        segments = [(p0, p1, 0) for p0, p1 in K.sgemm_column_segments(mg, p, k, threads)]
    else:
        segments = _segments(n, g, mg, p, k, direct, threads)
    for i in range(n):
        for j in range(g):
            for p0, p1, _ in segments:
                out[i, j, :, p0:p1] = K.sgemm(wg[j], cols[i, j, :, p0:p1], out[i, j, :, p0:p1])
    return out


def conv_sum(x, w, b=None, z=None, *, auto_pad="NOTSET", dilations=None, group=1,
             kernel_shape=None, pads=None, strides=None, ctx=None, name="Conv"):
    """Conv's Y, plus ``z`` (of Y's shape) when given: ``z`` + the product + B, in onnxruntime's
    order (the product accumulated into z, then B added). The body of Conv and of
    com.microsoft FusedConv (before its activation).

    In a session the checks, the window and the product's plan are settled once per input
    shape and kept in the node's cache (``ctx.cache["conv"]``): a node run again on the same
    shapes goes straight to its kernels."""
    key = (x.shape, x.dtype, w.shape, w.dtype, None if b is None else b.shape,
           None if z is None else z.shape)
    hit = ctx.cache.get("conv") if ctx is not None else None
    if hit is not None and hit[0] == key:
        _, win, ct, product = hit
    else:
        win, ct, product = _conv_plan(x, w, b, z, auto_pad, dilations, group, kernel_shape, pads,
                                      strides, ctx, name)
        if ctx is not None:
            ctx.cache["conv"] = (key, win, ct, product)
    n, m = x.shape[0], w.shape[0]
    wg = w.astype(ct, copy=False).reshape(group, m // group, -1)     # (G, Mg, Cg*K)
    if product is not None:
        y = product(x, wg).reshape((n, m) + win.out)
    elif x.dtype == np.float32 and w.dtype == np.float32 and (ctx is None or ctx.numerics != "spec"):
        init = z.astype(np.float32, copy=False).reshape(n, group, m // group, -1)
        y = _mlas_conv_into(x, wg, win, group, ort_threads(ctx), init).reshape((n, m) + win.out)
    else:
        cols = _conv_columns(x.astype(ct, copy=False), win, group)   # (N, G, Cg*K, P)
        y = np.matmul(wg, cols).reshape((n, m) + win.out)
        if z is not None:
            y += z.astype(ct, copy=False)
    if b is not None:
        y += b.astype(ct, copy=False).reshape((m,) + (1,) * len(win.kernel))
    return y.astype(x.dtype, copy=False)


def _conv_plan(x, w, b, z, auto_pad, dilations, group, kernel_shape, pads, strides, ctx, name):
    """``conv_sum``'s checks of its inputs' shapes, and what depends on nothing else: (the
    window, the compute dtype, the float32 product's plan ``_mlas_conv_plan`` or None)."""
    _check_conv_inputs(x, w, group, name)
    n, c = x.shape[:2]
    m = w.shape[0]
    if c % group or m % group or w.shape[1] * group != c:
        raise ValueError(f"{name}: X has {c} channels and W shape {list(w.shape)}; with group="
                         f"{group}, W must be (M, C/group, ...) with M and C divisible by group")
    kernel = _kernel_shape(w, kernel_shape, name)
    win = window_geometry(x.shape[2:], kernel, strides, dilations, pads, auto_pad)
    if b is not None and (b.ndim != 1 or b.shape[0] != m):
        raise ValueError(f"{name}: B must be 1-D with one value per output channel ({m}), got "
                         f"shape {list(b.shape)}")
    if z is not None and z.shape != (n, m) + win.out:
        raise ValueError(f"{name}: Z (the fused sum) must have the output's shape "
                         f"{[n, m, *win.out]}, got {list(z.shape)}")
    product = None
    if (x.dtype == np.float32 and w.dtype == np.float32 and z is None
            and (ctx is None or ctx.numerics != "spec")):
        k = (c // group) * math.prod(kernel)
        product = _mlas_conv_plan(x.shape, (group, m // group, k), win, ort_threads(ctx))
    return win, compute_dtype(x.dtype), product


@op("Conv", since=(1, 11, 22))
def conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
         pads=None, strides=None, ctx=None):
    """Y[n, m] = sum_{c in group(m), k} W[m, c, k] * X[n, c, o * s - pb + k * d] + B[m]

    float32 in the default numerics multiplies in onnxruntime's (MLAS's) order, then adds B
    (``_mlas_conv``); "spec" numerics: NumPy's matmul."""
    return conv_sum(x, w, b, auto_pad=auto_pad, dilations=dilations, group=group,
                    kernel_shape=kernel_shape, pads=pads, strides=strides, ctx=ctx)


def _transpose_geometry(in_shape, kernel, strides, dilations, pads, output_padding, output_shape,
                        auto_pad) -> tuple[Window, tuple]:
    """Window of the equivalent forward conv (output image -> X) and the output image shape.

    Natural size: s * (in - 1) + output_padding + ek - pb - pe. With ``output_shape`` (or SAME_*,
    target in * s) the total padding is natural size without pads - target, split in halves with
    the odd one at the end for SAME_UPPER and at the beginning otherwise (spec and onnxruntime);
    for SAME_* a negative total becomes 0 (the output stays smaller than in * s), as onnxruntime.
    """
    n = len(in_shape)
    strides = tuple(strides) if strides else (1,) * n
    dilations = tuple(dilations) if dilations else (1,) * n
    out_pad = tuple(output_padding) if output_padding else (0,) * n
    pads = list(pads) if pads else [0] * (2 * n)
    if len(out_pad) != n or len(pads) != 2 * n:
        raise ValueError(f"ConvTranspose: output_padding {list(out_pad)} / pads {pads} do not fit "
                         f"{n} spatial axes")
    if output_shape is not None:
        target = tuple(output_shape)[-n:]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = tuple(size * s for size, s in zip(in_shape, strides))
    else:
        target = None
    begin, end, image = [], [], []
    for i in range(n):
        ek = (kernel[i] - 1) * dilations[i] + 1
        natural = strides[i] * (in_shape[i] - 1) + out_pad[i] + ek
        if target is not None:
            total = natural - target[i]
            if output_shape is None:      # SAME_*: never negative pads (onnxruntime)
                total = max(total, 0)
            small, large = total // 2, total - total // 2
            head, tail = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        elif auto_pad == "VALID":
            head, tail = 0, 0
        else:
            head, tail = pads[i], pads[n + i]
        size = natural - head - tail
        if size < 1 or head < 0:
            raise ValueError(f"ConvTranspose: output size {size} with pads ({head}, {tail}) on "
                             f"spatial axis {i} is invalid")
        begin.append(head)
        end.append(tail - out_pad[i])      # output_padding: extra rows at the end, no input there
        image.append(size)
    win = Window(tuple(kernel), strides, dilations, tuple(begin), tuple(end), tuple(in_shape))
    return win, tuple(image)


@op("ConvTranspose", since=(1, 11, 22))
def conv_transpose(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1,
                   kernel_shape=None, output_padding=None, output_shape=None, pads=None,
                   strides=None, ctx=None):
    """Y[n, m, i * s - pb + k * d] += sum_{c in group(m)} X[n, c, i] * W[c, m, k], then + B[m]"""
    _check_conv_inputs(x, w, group, "ConvTranspose")
    n, c = x.shape[:2]
    if c != w.shape[0] or c % group:
        raise ValueError(f"ConvTranspose: X has {c} channels, W shape {list(w.shape)} must be "
                         f"(C, M/group, ...) with C divisible by group={group}")
    mg = w.shape[1]
    m = mg * group
    kernel = _kernel_shape(w, kernel_shape, "ConvTranspose")
    win, image = _transpose_geometry(x.shape[2:], kernel, strides, dilations, pads,
                                     output_padding, output_shape, auto_pad)
    ct = compute_dtype(x.dtype)
    p_size = math.prod(x.shape[2:])
    xg = x.astype(ct, copy=False).reshape(n, group, c // group, p_size)      # (N, G, Cg, P)
    wg = w.astype(ct, copy=False).reshape(group, c // group, -1)             # (G, Cg, Mg*K)
    if x.dtype == np.float32 and w.dtype == np.float32 and (ctx is None or ctx.numerics != "spec"):
        # onnxruntime: one SGEMM W_g^T @ X_g per (image, group), in MLAS's order; a constant W
        # (more than one row and column per group) is transposed once when the session is
        # built and multiplied as it is, any other W is passed transposed (MLAS blocks K
        # differently for the two)
        pre_t = ctx is not None and ctx.is_constant(1) and wg.shape[1] > 1 and wg.shape[2] > 1
        cols = np.empty((n, group, wg.shape[2], p_size), np.float32)
        for j in range(group):
            macs = wg.shape[1] * wg.shape[2] * p_size      # of one image: small on one thread
            if pre_t:       # every image's SGEMM in one call (sgemm_stack: the same bits)
                cols[:, j] = sized_product(n * macs, K.sgemm_stack, np.ascontiguousarray(wg[j].T),
                                           xg[:, j], threads=ort_threads(ctx))
                continue
            for i in range(n):
                cols[i, j] = sized_product(macs, K.sgemm, wg[j], xg[i, j], trans_a=True,
                                           threads=ort_threads(ctx))
    else:
        cols = np.matmul(wg.transpose(0, 2, 1), xg)                          # (N, G, Mg*K, P)
    cols = cols.reshape((n, m) + tuple(kernel) + tuple(x.shape[2:]))
    y = add_windows(cols, win, image)
    if b is not None:
        y = y + b.astype(ct, copy=False).reshape((m,) + (1,) * len(kernel))
    return y.astype(x.dtype, copy=False)


@op("Col2Im", since=18)
def col2im(x, image_shape, block_shape, *, dilations=None, pads=None, strides=None):
    """Y[n, c, o * s - pb + k * d] += X[n, c * prod(block) + k, o]: the inverse layout of im2col"""
    image = tuple(int(v) for v in np.asarray(image_shape).ravel())
    block = tuple(int(v) for v in np.asarray(block_shape).ravel())
    if len(image) != len(block):
        raise ValueError(f"Col2Im: image_shape {list(image)} and block_shape {list(block)} "
                         f"differ in length")
    if x.ndim != 3:
        raise ValueError(f"Col2Im: input must be (N, C * prod(block_shape), L), got {x.shape}")
    k_size = math.prod(block)
    win = window_geometry(image, block, strides, dilations, pads)
    n, ck, length = x.shape
    if ck % k_size or length != math.prod(win.out):
        raise ValueError(f"Col2Im: input shape {list(x.shape)} does not fit block_shape "
                         f"{list(block)} and {math.prod(win.out)} blocks")
    cols = x.reshape((n, ck // k_size) + block + win.out)
    return add_windows(cols, win, image).astype(x.dtype, copy=False)


def _multilinear_sample(planes, coords):
    """Sample planes (N, G, Cg, *spatial) at real-valued positions coords (N, G, n_sp, *grid):
    multilinear interpolation over the 2^n_sp surrounding cells, cells outside the input read as
    0 (so a point a whole cell or more outside reads 0, as torchvision's deform_conv2d)."""
    n, g, cg = planes.shape[:3]
    spatial = planes.shape[3:]
    n_sp = len(spatial)
    grid = coords.shape[3:]
    flat = planes.reshape(n, g, cg, -1)
    low = np.floor(coords)
    frac = coords - low
    low = low.astype(np.int64)
    out = np.zeros((n, g, cg) + grid, dtype=planes.dtype)
    for corner in np.ndindex(*(2,) * n_sp):
        weight = np.ones((n, g) + grid, dtype=planes.dtype)
        index = np.zeros((n, g) + grid, dtype=np.int64)
        valid = np.ones((n, g) + grid, dtype=bool)
        for a in range(n_sp):
            pos = low[:, :, a] + corner[a]
            weight *= frac[:, :, a] if corner[a] else 1 - frac[:, :, a]
            valid &= (pos >= 0) & (pos < spatial[a])
            index = index * spatial[a] + np.clip(pos, 0, spatial[a] - 1)
        gathered = np.take_along_axis(flat, index.reshape(n, g, 1, -1), axis=3)
        out += (gathered.reshape((n, g, cg) + grid) * (weight * valid)[:, :, None])
    return out


@op("DeformConv", since=(19, 22))
def deform_conv(x, w, offset, b=None, mask=None, *, dilations=None, group=1, kernel_shape=None,
                offset_group=1, pads=None, strides=None):
    """Y[n, m, o] = sum_{c, k} W[m, c, k] * mask[n, k, o] * X[n, c](o * s - pb + k * d + off)
    (off = offset[n, k, o]) with X read at real positions by multilinear interpolation (0 outside), as torchvision's
    deform_conv2d; offsets and mask are shared by the channels of each offset group."""
    _check_conv_inputs(x, w, group, "DeformConv")
    n, c = x.shape[:2]
    m = w.shape[0]
    if c % group or m % group or w.shape[1] * group != c or c % offset_group:
        raise ValueError(f"DeformConv: X has {c} channels, W shape {list(w.shape)}, group={group}, "
                         f"offset_group={offset_group} do not fit")
    kernel = _kernel_shape(w, kernel_shape, "DeformConv")
    n_sp = len(kernel)
    win = window_geometry(x.shape[2:], kernel, strides, dilations, pads)
    k_size, grid = math.prod(kernel), win.out
    ct = compute_dtype(x.dtype)
    expected = (n, offset_group * k_size * n_sp) + grid
    if offset.shape != expected:
        raise ValueError(f"DeformConv: offset shape {list(offset.shape)}, expected "
                         f"{list(expected)}")
    # sampling positions (N, offset_group, K, n_sp, *out) = base grid + kernel tap + learned offset
    off = offset.astype(ct).reshape((n, offset_group, k_size, n_sp) + grid)
    taps = np.array(list(np.ndindex(*kernel)), dtype=ct) * np.array(win.dilations, dtype=ct)
    base = np.stack(np.meshgrid(*[np.arange(o, dtype=ct) * s - b for o, s, b in
                                  zip(grid, win.strides, win.pads_begin)], indexing="ij"))
    pos = (off + taps.reshape((1, 1, k_size, n_sp) + (1,) * n_sp) + base[None, None, None])
    # (N, OG, n_sp, K, *out): one sampling grid of shape (K, *out) per offset group
    pos = np.moveaxis(pos, 3, 2)
    planes = x.astype(ct, copy=False).reshape((n, offset_group, c // offset_group) + x.shape[2:])
    sampled = _multilinear_sample(planes, pos)                 # (N, OG, C/OG, K, *out)
    if mask is not None:
        mk = mask.astype(ct, copy=False).reshape((n, offset_group, 1, k_size) + grid)
        sampled = sampled * mk
    cols = sampled.reshape(n, group, (c // group) * k_size, -1)
    y = np.matmul(w.astype(ct, copy=False).reshape(group, m // group, -1), cols)
    y = y.reshape((n, m) + grid)
    if b is not None:
        y += b.astype(ct, copy=False).reshape((m,) + (1,) * n_sp)
    return y.astype(x.dtype, copy=False)
