"""Integer convolution (ConvInteger, QLinearConv) as im2col + exact integer GEMM, N-D, grouped.

    y[n, m, o] = sum_{c, r} (w[m, c, r] - w_zp[m]) * (x_pad[n, g*Cg + c, o*stride + r*dilation - pad] - x_zp)

with g = m // (M / group), Cg = C / group, o and r multi-indices over the spatial dimensions, and
padding filled with x_zp (so padded taps contribute zero).  Result int32 (wrapping like
``gemm_int8``).  Pads are explicit ``[begin_1, ..., begin_n, end_1, ..., end_n]``; resolving
``auto_pad`` belongs to the caller.

The column matrix has one row per (input channel c, kernel offset r) -- row ``c * prod(kernel) + r``
with r in C order, matching ``w.reshape(M, -1)`` -- and one column per output position.  Each group
is then a GEMM ``w_g [Mg, Kg] @ cols_g [Kg, L]`` with the weight zero point per row (output
channel) and the input zero point per column.  It runs transposed, as ``gemm_int8`` with the
patches as A and the weights as the packed B:

    y_g^T [L, Mg] = patches_g [L, Kg] @ w_g^T [Kg, Mg]

so the weights are packed once (``pack_weights``; a session does it when it is built) and the
patches, built in the input's own type, go straight to the fastest kernel of the CPU (AMX, VNNI
or the portable one).  The patches are built from a channels-last copy of the images, so their
reduction index is tap-major (``r * Cg + c``: each tap copies Cg contiguous bytes) and the
weights are packed in that order; ``im2col_int8`` keeps the channel-major order above.  Groups
with a short reduction (depthwise: Kg = prod of the kernel) skip the GEMM and use a direct
kernel.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit, prange

from .gemm import gemm_int8, pack_b

__all__ = ["im2col_int8", "conv_int8", "conv_output_shape", "pack_weights"]

_INT8_TYPES = (np.dtype(np.uint8), np.dtype(np.int8))
_DIRECT_MAX_K = 64  # groups whose reduction length is at most this use the direct kernel
# ungrouped reductions at most this long run as float32 products, exactly (see _float_exact)
_FLOAT_EXACT_MAX_K = 64
_FLOAT_BATCH_BYTES = 2 << 20
_PATCH_BYTES = 32 << 20  # patches built at a time (several images per GEMM while they fit)


def conv_output_shape(in_spatial, kernel_shape, pads, strides, dilations):
    """Output spatial shape: floor((in + pad_begin + pad_end - dilation*(k-1) - 1) / stride) + 1."""
    nd = len(kernel_shape)
    return tuple(
        (in_spatial[d] + pads[d] + pads[d + nd] - dilations[d] * (kernel_shape[d] - 1) - 1) // strides[d] + 1
        for d in range(nd)
    )


def _geometry(in_spatial, kernel_shape, pads, strides, dilations):
    """Validate and default the convolution attributes; return them as tuples plus the output shape."""
    nd = len(in_spatial)
    kernel_shape = tuple(int(k) for k in kernel_shape)
    pads = tuple(int(p) for p in (pads if pads is not None else [0] * (2 * nd)))
    strides = tuple(int(s) for s in (strides if strides is not None else [1] * nd))
    dilations = tuple(int(d) for d in (dilations if dilations is not None else [1] * nd))
    if len(kernel_shape) != nd or len(strides) != nd or len(dilations) != nd or len(pads) != 2 * nd:
        raise ValueError(
            f"for {nd} spatial dims expected kernel_shape/strides/dilations of length {nd} and pads of "
            f"length {2 * nd}, got {kernel_shape}, {strides}, {dilations}, {pads}"
        )
    if min(kernel_shape, default=1) < 1 or min(strides, default=1) < 1 or min(dilations, default=1) < 1:
        raise ValueError(f"kernel_shape, strides and dilations must be >= 1: {kernel_shape}, {strides}, {dilations}")
    if min(pads, default=0) < 0:
        raise ValueError(f"pads must be >= 0, got {pads}")
    out = conv_output_shape(in_spatial, kernel_shape, pads, strides, dilations)
    if min(out, default=1) < 1:
        raise ValueError(
            f"input spatial shape {tuple(in_spatial)} with kernel {kernel_shape}, pads {pads}, strides "
            f"{strides}, dilations {dilations} gives an empty output {out}"
        )
    return kernel_shape, pads, strides, dilations, out


def _gather_index(in_spatial, kernel_shape, pads, strides, dilations, out_spatial):
    """int64 [L, KK]: flat input position read by output position l at kernel offset r, -1 in
    padding. (Kept per geometry, read-only: a session's convolutions ask for the same ones on
    every run.)"""
    return _gather_index_cached(*(tuple(int(v) for v in a) for a in (
        in_spatial, kernel_shape, pads, strides, dilations, out_spatial)))


@functools.lru_cache(maxsize=64)
def _gather_index_cached(in_spatial, kernel_shape, pads, strides, dilations, out_spatial):
    nd = len(in_spatial)
    flat = np.zeros(tuple(out_spatial) + tuple(kernel_shape), dtype=np.int64)
    valid = np.ones(flat.shape, dtype=bool)
    in_strides = np.cumprod((1,) + tuple(in_spatial[:0:-1]))[::-1]  # C-order strides of the input
    for d in range(nd):
        shape = [1] * (2 * nd)
        shape[d] = out_spatial[d]
        shape[nd + d] = kernel_shape[d]
        coord = (np.arange(out_spatial[d])[:, None] * strides[d] - pads[d]
                 + np.arange(kernel_shape[d])[None, :] * dilations[d])
        coord = coord.reshape(shape)
        valid &= (coord >= 0) & (coord < in_spatial[d])
        flat += coord * int(in_strides[d])
    flat[~valid] = -1
    flat = flat.reshape(math.prod(out_spatial), math.prod(kernel_shape))
    flat.setflags(write=False)
    return flat


@njit(cache=True, parallel=True)
def _im2col_kernel(x2, index, x_zp, out):
    """out[c*KK + r, l] = x2[c, index[l, r]], or x_zp where index[l, r] < 0 (padding)."""
    n_l, kk = index.shape
    for cr in prange(x2.shape[0] * kk):
        c = cr // kk
        r = cr - c * kk
        for l in range(n_l):
            p = index[l, r]
            out[cr, l] = x2[c, p] if p >= 0 else x_zp


@njit(cache=True, parallel=True)
def _im2row_kernel(xt, i0, index, x_zp, c0, cg, out):
    """Patches of one group for images i0, i0 + 1, ..., one row per (image, output position),
    tap-major: out[j*L + l, r*Cg + c] = xt[i0 + j, index[l, r], c0 + c] (x_zp in padding), from
    channels-last images xt [N, positions, C]: each tap copies Cg contiguous bytes."""
    n_l, kk = index.shape
    for jl in prange(out.shape[0]):
        j = jl // n_l
        l = jl - j * n_l
        row = out[jl]
        for r in range(kk):
            p = index[l, r]
            dst = row[r * cg:(r + 1) * cg]
            if p >= 0:
                src = xt[i0 + j, p, c0:c0 + cg]
                for c in range(cg):
                    dst[c] = src[c]
            else:
                for c in range(cg):
                    dst[c] = x_zp


def _padded(x, spatial_pads, fill):
    """x [N, C, *spatial] with ``spatial_pads`` [(begin, end), ...] cells of ``fill`` around each
    spatial axis (one fill and one copy; numpy.pad takes several Python-level steps per axis)."""
    if not any(b or e for b, e in spatial_pads):
        return x
    shape = x.shape[:2] + tuple(d + b + e for d, (b, e) in zip(x.shape[2:], spatial_pads))
    out = np.full(shape, fill, dtype=x.dtype)
    out[(slice(None), slice(None)) + tuple(slice(b, b + d) for d, (b, _) in
                                           zip(x.shape[2:], spatial_pads))] = x
    return out


@functools.lru_cache(maxsize=64)
def _window_offsets(padded_spatial, kernel_shape, strides, dilations, out_spatial):
    """Flat positions in a padded input: window origin of each output position (int64 [L]) and
    offset of each kernel tap (int64 [KK]); output l reads tap r at origin[l] + tap[r]. (Kept
    per geometry, read-only: a session's convolutions ask for the same ones on every run.)"""
    strides_in = np.cumprod((1,) + tuple(padded_spatial[:0:-1]))[::-1].astype(np.int64)
    origin = np.zeros(tuple(out_spatial), dtype=np.int64)
    tap = np.zeros(tuple(kernel_shape), dtype=np.int64)
    for d in range(len(out_spatial)):
        shape = [1] * len(out_spatial)
        shape[d] = -1
        origin += (np.arange(out_spatial[d]) * strides[d] * strides_in[d]).reshape(shape)
        tap += (np.arange(kernel_shape[d]) * dilations[d] * strides_in[d]).reshape(shape)
    origin, tap = origin.reshape(-1), tap.reshape(-1)
    origin.setflags(write=False)
    tap.setflags(write=False)
    return origin, tap


@njit(cache=True, parallel=True)
def _grouped_direct_kernel(xpad, origin, tap, x_zp, w2, w_zp, group, out2):
    """out2[m, l] = sum_{c < Cg, r < KK} (w2[m, c*KK + r] - w_zp[m]) * (xpad[g*Cg + c, origin[l] + tap[r]] - x_zp)

    with g = m // (M / group) and xpad the flat input already padded with x_zp.  The sum of
    (w - w_zp) * x is first taken at every flat position p <= origin[-1] (a contiguous stride-1
    sweep, one tap at a time, int32 accumulation in a row buffer per output channel), then sampled
    at the output origins, and x_zp * sum(w - w_zp) is subtracted (exact modulo 2**32).  Strided
    convolutions compute prod(strides) times more positions than they keep: simple, and cheap for
    the short reductions this kernel serves.
    """
    m_total = w2.shape[0]
    kk = tap.shape[0]
    cg = w2.shape[1] // kk
    mg = m_total // group
    n_p = origin[-1] + 1  # the last origin plus the last tap is the last padded position read
    for m in prange(m_total):
        c0 = (m // mg) * cg
        wz = w_zp[m]
        acc = np.zeros(n_p, dtype=np.int32)  # one buffer per output channel, outside the hot loops
        w_sum = np.int64(0)
        for c in range(cg):
            xrow = xpad[c0 + c]
            for r in range(kk):
                wv = np.int32(np.int64(w2[m, c * kk + r]) - wz)
                w_sum += wv
                xs = xrow[tap[r]:tap[r] + n_p]  # a view: plain range indices below vectorize
                for p in range(n_p):
                    acc[p] = np.int32(acc[p] + wv * np.int32(xs[p]))
        correction = x_zp * w_sum
        for l in range(origin.shape[0]):
            out2[m, l] = np.int32(acc[origin[l]] - correction)


def _check_int8(x, name, min_ndim):
    x = np.asarray(x)
    if x.dtype not in _INT8_TYPES:
        raise TypeError(f"{name} must be uint8 or int8, got {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have rank >= {min_ndim}, got shape {x.shape}")
    return np.ascontiguousarray(x)


def _scalar_zero_point(zp, name):
    z = np.asarray(0 if zp is None else zp)
    if z.size != 1 or z.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer scalar, got {z.dtype} of shape {z.shape}")
    return int(z.reshape(-1)[0])


def im2col_int8(x, kernel_shape, pads=None, strides=None, dilations=None, x_zp=0):
    """Column matrix of one image x [C, *spatial] (uint8/int8), N-D.

    Returns ``cols [C * prod(kernel_shape), prod(out_spatial)]`` (x's dtype) with
    ``cols[c*KK + r, l] = x_pad[c, o_l * strides + r * dilations - pads_begin]`` (r, o_l as
    multi-indices in C order), padding read as ``x_zp``.
    """
    x = _check_int8(x, "x", 2)
    kernel_shape, pads, strides, dilations, out_spatial = _geometry(x.shape[1:], kernel_shape, pads, strides,
                                                                    dilations)
    index = _gather_index(x.shape[1:], kernel_shape, pads, strides, dilations, out_spatial)
    zp = _scalar_zero_point(x_zp, "x_zp")
    info = np.iinfo(x.dtype)
    if not info.min <= zp <= info.max:
        raise ValueError(f"x_zp {zp} does not fit {x.dtype}")
    cols = np.empty((x.shape[0] * index.shape[1], index.shape[0]), dtype=x.dtype)
    _im2col_kernel(x.reshape(x.shape[0], -1), index, x.dtype.type(zp), cols)
    return cols


def pack_weights(w, group=1) -> list:
    """w [M, C/group, *kernel] -> one ``PackedB`` per group for ``conv_int8``: w_g^T [Kg, Mg]
    with the reduction index tap-major (k = r * Cg + c), the order of the patches."""
    w = _check_int8(w, "w", 3)
    m = w.shape[0]
    group = int(group)
    if group < 1 or m % group:
        raise ValueError(f"group {group} must divide the output channels {m}")
    mg = m // group
    tap_major = np.moveaxis(w.reshape(m, w.shape[1], -1), 1, 2).reshape(m, -1)   # [M, KK * Cg]
    return [pack_b(np.ascontiguousarray(tap_major[g * mg:(g + 1) * mg]), transposed=True)
            for g in range(group)]


def conv_int8(x, w, x_zp=0, w_zp=0, group=1, pads=None, strides=None, dilations=None, packed=None):
    """Exact integer convolution: x [N, C, *spatial], w [M, C/group, *kernel] (uint8/int8 each),
    x_zp scalar, w_zp scalar or one per output channel (length M).  Returns int32 [N, M, *out].
    ``packed``: ``pack_weights(w, group)``, to reuse across calls with the same weights.
    """
    x = _check_int8(x, "x", 3)
    w = _check_int8(w, "w", 3)
    if w.ndim != x.ndim:
        raise ValueError(f"x has rank {x.ndim} but w has rank {w.ndim}")
    group = int(group)
    n, c = x.shape[:2]
    m = w.shape[0]
    if group < 1 or c % group or m % group:
        raise ValueError(f"group {group} must divide both input channels {c} and output channels {m}")
    cg, mg = c // group, m // group
    if w.shape[1] != cg:
        raise ValueError(f"w.shape[1] must be C / group = {cg}, got {w.shape[1]} (w shape {w.shape})")
    kernel_shape, pads, strides, dilations, out_spatial = _geometry(x.shape[2:], w.shape[2:], pads, strides,
                                                                    dilations)
    xz = _scalar_zero_point(x_zp, "x_zp")
    info = np.iinfo(x.dtype)
    if not info.min <= xz <= info.max:
        raise ValueError(f"x_zp {xz} does not fit {x.dtype}")
    wz = np.asarray(0 if w_zp is None else w_zp)
    if wz.dtype.kind not in "iu" or wz.size not in (1, m):
        raise ValueError(f"w_zp must be an integer scalar or have {m} elements, got shape {wz.shape}")
    wz = np.array(np.broadcast_to(wz.astype(np.int64).reshape(-1), (m,)))  # writable copy

    n_l = math.prod(out_spatial)
    kg = cg * math.prod(kernel_shape)
    y = np.empty((n, m) + tuple(out_spatial), dtype=np.int32)
    x3 = x.reshape(n, c, math.prod(x.shape[2:]))       # explicit: n may be 0
    w2 = w.reshape(m, kg)
    if group > 1 and kg <= _DIRECT_MAX_K:
        nd = x.ndim - 2
        padded = _padded(x, [(pads[d], pads[d + nd]) for d in range(nd)], xz)
        origin, tap = _window_offsets(padded.shape[2:], tuple(kernel_shape), tuple(strides),
                                      tuple(dilations), tuple(out_spatial))
        xp = padded.reshape(n, c, math.prod(padded.shape[2:]))
        for i in range(n):
            _grouped_direct_kernel(xp[i], origin, tap, np.int64(xz), w2, wz, group, y[i].reshape(m, n_l))
        return y

    if packed is not None and (len(packed) != group or any(p.shape != (kg, mg) for p in packed)):
        raise ValueError(f"packed weights do not match w {w.shape} with group {group}")
    if group == 1 and kg <= _FLOAT_EXACT_MAX_K:
        _float_exact(x, w2, xz, wz, kernel_shape, pads, strides, dilations, out_spatial, y)
        return y
    index = _gather_index(x.shape[2:], kernel_shape, pads, strides, dilations, out_spatial)
    if packed is None:
        packed = pack_weights(w, group)
    # several small images share one GEMM (one call per group, not per image and group); the
    # patches of a batch of images stay under _PATCH_BYTES
    per_batch = max(1, min(n, _PATCH_BYTES // max(1, n_l * kg)))
    y3 = y.reshape(n, m, n_l)
    # a pointwise convolution (1x1 kernel, stride 1, no padding) reads each position once, in
    # order: its patches are the channels-last image itself
    pointwise = (group == 1 and all(k == 1 for k in kernel_shape) and all(st == 1 for st in strides)
                 and not any(pads))
    for i0 in range(0, n, per_batch):
        nb = min(per_batch, n - i0)
        xt = np.ascontiguousarray(x3[i0:i0 + nb].transpose(0, 2, 1))   # channels last
        patches = xt.reshape(nb * n_l, kg) if pointwise else np.empty((nb * n_l, kg), dtype=x.dtype)
        for g in range(group):
            if not pointwise:
                _im2row_kernel(xt, 0, index, x.dtype.type(xz), g * cg, cg, patches)
            yt = gemm_int8(patches, packed[g], xz, wz[g * mg:(g + 1) * mg])   # [nb * L, Mg]
            y3[i0:i0 + nb, g * mg:(g + 1) * mg] = yt.reshape(nb, n_l, mg).transpose(0, 2, 1)
    return y


def _float_exact(x, w2, xz, wz, kernel_shape, pads, strides, dilations, out_spatial, y):
    """An ungrouped convolution with a short reduction (K = C * prod(kernel) <= 64) as float32
    products: y[n] = (w - w_zp) [M, K] @ (cols_n - x_zp) [K, L], several images per call.

    Exact: each factor is an integer of magnitude at most 255, so each product is at most 65025
    and each partial sum of K <= 258 of them stays below 2**24 -- a float32 holds every one
    exactly, whatever the order of summation. For so short a reduction float32 BLAS outruns the
    int8 kernels, whose tiles (64 bytes of K on AMX) would be mostly padding, and a pointwise
    convolution reads its images in place (no channels-last copy)."""
    n, c = x.shape[:2]
    m, kg = w2.shape
    wf = w2.astype(np.float32) - wz.astype(np.float32)[:, None]
    pointwise = (all(k == 1 for k in kernel_shape) and all(st == 1 for st in strides)
                 and not any(pads))
    n_l = math.prod(out_spatial)
    x3 = x.reshape(n, c, math.prod(x.shape[2:]))       # explicit: n may be 0
    y3 = y.reshape(n, m, n_l)
    index = None if pointwise else _gather_index(x.shape[2:], kernel_shape, pads, strides,
                                                 dilations, out_spatial)
    # small images go several to a call (one kernel launch, one batched product for them all);
    # the float columns of a batch stay near the caches' size
    per_batch = max(1, min(n, _FLOAT_BATCH_BYTES // max(1, 4 * n_l * kg)))
    for i0 in range(0, n, per_batch):
        nb = min(per_batch, n - i0)
        if pointwise:
            colsf = x3[i0:i0 + nb].astype(np.float32)
        else:       # the images' columns in one call: image j's rows are j*K ... j*K + K - 1
            cols = np.empty((nb * kg, n_l), dtype=x.dtype)
            _im2col_kernel(x3[i0:i0 + nb].reshape(nb * c, x3.shape[2]), index, x.dtype.type(xz),
                           cols)
            colsf = cols.reshape(nb, kg, n_l).astype(np.float32)
        colsf -= np.float32(xz)
        y3[i0:i0 + nb] = np.matmul(wf, colsf)   # integers below 2**24: exact as int32


# --------------------------------------------------------------------------- AVX2 u8 x s8 emulation

def _check_typed_pair(x, w, x_dtype, w_dtype, group):
    """x [N, C, ...] of ``x_dtype`` and w [M, C/group, ...] of ``w_dtype`` for the saturating
    convolutions -> (x, w, group, C/group, M/group)."""
    x = _check_int8(x, "x", 3)
    w = _check_int8(w, "w", 3)
    if x.dtype != x_dtype or w.dtype != w_dtype:
        raise TypeError(f"x must be {np.dtype(x_dtype)} and w {np.dtype(w_dtype)}, got {x.dtype} and {w.dtype}")
    c, m, group = x.shape[1], w.shape[0], int(group)
    if group < 1 or c % group or m % group or w.shape[1] != c // group or w.ndim != x.ndim:
        raise ValueError(f"w {w.shape} does not fit x {x.shape} with group {group}")
    return x, w, group, c // group, m // group


def _channel_zero_points(w_zp, m: int) -> np.ndarray:
    """w_zp (None, a scalar or one per output channel) as int64 [M]."""
    wz = np.asarray(0 if w_zp is None else w_zp)
    if wz.dtype.kind not in "iu" or wz.size not in (1, m):
        raise ValueError(f"w_zp must be an integer scalar or have {m} elements, got shape {wz.shape}")
    return np.broadcast_to(wz.astype(np.int64).reshape(-1), (m,))


def conv_u8s8_avx2_saturating(x, w, x_zp=0, w_zp=0, group=1, pads=None, strides=None, dilations=None):
    """Reproduce onnxruntime's QLinearConv on an AVX2 CPU without VNNI, int16 saturation included.

    ORT runs a uint8 x int8 convolution as a GEMM over channels-last columns: the reduction
    index is ``k = r * Cg + c`` (kernel tap r outer, input channel c of the group inner -- the
    opposite of ``im2col_int8``'s order), and its AVX2 GEMM adds the raw products of each pair
    (k, k+1), k even, in a saturating int16 (see ``gemm_u8s8_avx2_saturating``).  Groups with
    one input and one output channel (depthwise) run on ORT's exact depthwise kernel when the
    weight zero point is one value; with distinct per-channel weight zero points onnxruntime
    1.32 runs them as one GEMM per group like the others, which saturates.  Measured
    against onnxruntime 1.32 under ``qemu-x86_64 -cpu Haswell`` (C in {3, 4, 5, 7, 8, 12, 16},
    kernels 1x1 to 3x3, groups 1, 3 and depthwise, w_zp 0 and 3).

    x: uint8 [N, C, *spatial]; w: int8 [M, C/group, *kernel]; zero points as in ``conv_int8``.
    Returns int32 [N, M, *out].
    """
    from .gemm import gemm_u8s8_avx2_saturating

    x, w, group, cg, mg = _check_typed_pair(x, w, np.uint8, np.int8, group)
    n, m = x.shape[0], w.shape[0]
    one_w_zp = w_zp is None or np.unique(np.asarray(w_zp)).size <= 1
    if cg == 1 and mg == 1 and one_w_zp:
        return conv_int8(x, w, x_zp, w_zp, group, pads, strides, dilations)
    kernel_shape, pads, strides, dilations, out_spatial = _geometry(x.shape[2:], w.shape[2:], pads, strides,
                                                                    dilations)
    xz, wz = _scalar_zero_point(x_zp, "x_zp"), _channel_zero_points(w_zp, m)
    kk = math.prod(kernel_shape)
    n_l = math.prod(out_spatial)
    # weights as B [K, Mg] per group with k = r * Cg + c
    w_rc = w.reshape(group, mg, cg, kk).transpose(0, 3, 2, 1).reshape(group, kk * cg, mg)
    y = np.empty((n, m) + tuple(out_spatial), dtype=np.int32)
    for i in range(n):
        for g in range(group):
            cols = im2col_int8(x[i, g * cg:(g + 1) * cg], kernel_shape, pads, strides, dilations, xz)
            rows = np.ascontiguousarray(cols.reshape(cg, kk, n_l).transpose(2, 1, 0).reshape(n_l, kk * cg))
            acc = gemm_u8s8_avx2_saturating(rows, np.ascontiguousarray(w_rc[g]), xz, wz[g * mg:(g + 1) * mg])
            y[i, g * mg:(g + 1) * mg] = acc.T.reshape((mg,) + tuple(out_spatial))
    return y


def conv_integer_s8u8_avx2_saturating(x, w, x_zp=0, w_zp=0, group=1, pads=None, strides=None,
                                      dilations=None):
    """Reproduce onnxruntime's ConvInteger with int8 x and uint8 w on an AVX2 CPU without VNNI.

    ORT's ConvInteger runs each image and group as one GEMM with the weights as A [Mg, K] and the
    columns of x as B [K, L], the reduction index channel-major (k = c * KK + r, ``im2col_int8``'s
    order, padding read as x_zp). With uint8 w and int8 x that is its u8 x s8 GEMM, whose raw
    products of each pair (k, k+1), k even, add in a saturating int16
    (``gemm_u8s8_avx2_saturating``); the other type pairs are exact. Checked against onnxruntime
    1.32 on an AVX2 CPU (``tests/ops/test_quant_vs_ort.py``).

    x: int8 [N, C, *spatial]; w: uint8 [M, C/group, *kernel]; zero points as in ``conv_int8``.
    Returns int32 [N, M, *out].
    """
    from .gemm import gemm_u8s8_avx2_saturating

    x, w, group, cg, mg = _check_typed_pair(x, w, np.int8, np.uint8, group)
    n, m = x.shape[0], w.shape[0]
    kernel_shape, pads, strides, dilations, out_spatial = _geometry(x.shape[2:], w.shape[2:], pads, strides,
                                                                    dilations)
    xz, wz = _scalar_zero_point(x_zp, "x_zp"), _channel_zero_points(w_zp, m)
    w_rows = w.reshape(group, mg, -1)                      # [group, Mg, Cg * KK], k = c * KK + r
    y = np.empty((n, m) + tuple(out_spatial), dtype=np.int32)
    for i in range(n):
        for g in range(group):
            cols = im2col_int8(x[i, g * cg:(g + 1) * cg], kernel_shape, pads, strides, dilations, xz)
            acc = gemm_u8s8_avx2_saturating(np.ascontiguousarray(w_rows[g]), cols, wz[g * mg:(g + 1) * mg], xz)
            y[i, g * mg:(g + 1) * mg] = acc.reshape((mg,) + tuple(out_spatial))
    return y
