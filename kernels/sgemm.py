"""onnxruntime's float32 matrix product (MLAS's SGEMM) in its order of operations.

A float32 product's bits depend on the order of its additions. MLAS, onnxruntime's math library,
computes C = A @ B (optionally + C) like this on x86-64:

* **The general path.** K is cut into blocks of ``stride_k`` values. For each block, each output
  starts a fresh accumulator at 0 and adds a[m, k] * b[k, n] over the block's k in order, one
  fused multiply-add each (AVX2/FMA3 and AVX-512 kernels alike); the block's sum is then added
  to C (the first block is stored into C, unless C already holds a bias to accumulate into).
  ``stride_k`` is 256 when B was packed ahead of time (a constant weight), else 128: halved
  while K fits in half of it when N >= K, raised for N < K (while the column panel is wider
  than 16 and at least twice N, the panel is halved and ``stride_k`` doubled). N is the width
  of the columns one thread computes: MLAS splits a product between threads along N (in
  multiples of 16 columns) when N > M, so the blocking depends on the thread count.
* **One row of A (M = 1)**, B not packed: the AVX kernel ``SgemmKernelM1`` adds, for each group
  of 4 values of k, the 4 rounded products in order, and the group's sum to C; then a group of 2
  and a single one for the remainder. With B transposed (``SgemmKernelM1TransposeB``) each
  output keeps 8 lanes (lane l adds the rounded products of k = l, l + 8, ...), combined in a
  pattern that depends on the output's place in blocks of 4, 2 and 1 outputs.
* **One column of B (N = 1)**, contiguous: the same two kernels with A and B swapped.
* **Convolutions** (``conv_gemm``) multiply the filters by im2col columns in slices of K whose
  size follows the same rule, each slice's product (the M = 1 kernel for a single filter per
  group, as in a depthwise convolution) added to the output in turn.

``sgemm`` reproduces these paths bit for bit (the tests compare with onnxruntime). The general
path runs on the register tiles of ``fgemm.py``, one call per K block; the M = 1 kernels are a
few NumPy operations per group of k.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["sgemm", "sgemm_stack", "conv_gemm", "conv_segments", "m1_groups", "depthwise_m1_2d", "k_stride",
           "column_segments",
           "STRIDE_K", "PACKED_STRIDE_K"]

STRIDE_N = 128             # MLAS_SGEMM_STRIDEN
STRIDE_K = 128             # MLAS_SGEMM_STRIDEK
PACKED_STRIDE_K = 256      # MLAS_SGEMM_PACKED_STRIDEK
THREAD_ALIGN = 16          # MLAS_SGEMM_STRIDEN_THREAD_ALIGN
THREAD_COMPLEXITY = 64 * 1024
MAX_THREADS = 16           # MLAS_MAXIMUM_THREAD_COUNT
_F = np.float32


def k_stride(n: int, k: int, trans_a: bool = False, packed: bool = False) -> int:
    """How many values of k one block of MLAS's SGEMM adds up, for a thread's n columns."""
    if packed:
        return PACKED_STRIDE_K
    stride_n, stride_k = STRIDE_N, STRIDE_K
    if n >= k:
        while stride_k // 2 >= k:
            stride_n *= 2
            stride_k //= 2
    elif not trans_a:
        while stride_n > 16 and stride_n // 2 >= n:
            stride_k *= 2
            stride_n //= 2
    return stride_k


def _partition(index: int, count: int, total: int) -> tuple[int, int]:
    """MlasPartitionWork: (start, size) of part ``index`` of ``total`` split in ``count``."""
    per, extra = divmod(total, count)
    if index < extra:
        return (per + 1) * index, per + 1
    return per * index + extra, per


def column_segments(m: int, n: int, k: int, threads: int = 1, batch: int = 1) -> list:
    """The column ranges [(n0, n1), ...] MLAS's threads compute for one of ``batch`` products of
    M x N x K with ``threads`` threads (the whole range when it splits along M or not at all)."""
    complexity = float(m) * float(n) * float(k)
    if complexity < THREAD_COMPLEXITY * MAX_THREADS:
        target = int(complexity / THREAD_COMPLEXITY) + 1
    else:
        target = MAX_THREADS
    target = min(target, max(1, threads))
    per_gemm = (target + batch - 1) // batch
    if n <= m or per_gemm <= 1:
        return [(0, n)]
    blocks = (n + THREAD_ALIGN - 1) // THREAD_ALIGN
    count = min(per_gemm, blocks)
    out = []
    for t in range(count):
        start, size = _partition(t, count, blocks)
        n0, n1 = start * THREAD_ALIGN, min(n, (start + size) * THREAD_ALIGN)
        if n1 > n0:
            out.append((n0, n1))
    return out


def _k_blocked(a, b, stride, init, block_product):
    """a [M, K] @ each matrix of a stack b [S, K, N] -> [S, M, N]: K blocks of ``stride``, each a
    fresh chain of fused multiply-adds from 0 (``block_product``, a stack product such as
    ``fgemm.batched_matmul_f32``), added in turn to ``init`` [M, N] (or stored, for the first
    block without one)."""
    c = init
    for k0 in range(0, a.shape[1], stride):
        block = block_product(a[None, :, k0:k0 + stride], b[:, k0:k0 + stride])
        c = block if c is None else c + block
    if c is None:
        c = np.zeros((b.shape[0], a.shape[0], b.shape[2]), _F)
    return c


def _m1(a, b, init):
    """SgemmKernelM1: a [K] @ b [K, ...] (b's first axis is K; its other axes are independent
    outputs, e.g. [K, N] or a stack [K, S, N]) in groups of 4, 2 and 1 values of k (rounded
    products added in order within a group, each group's sum then added to C)."""
    k = a.shape[0]
    c = np.zeros(b.shape[1:], _F) if init is None else np.array(init, dtype=_F, copy=True)
    i = 0
    while i + 4 <= k:
        p = a[i] * b[i]
        p = p + a[i + 1] * b[i + 1]
        p = p + a[i + 2] * b[i + 2]
        p = p + a[i + 3] * b[i + 3]
        c = p + c
        i += 4
    if k - i >= 2:
        c = (a[i] * b[i] + a[i + 1] * b[i + 1]) + c
        i += 2
    if k - i == 1:
        c = a[i] * b[i] + c
    return c


def _m1_transposed_b(a, bt, init):
    """SgemmKernelM1TransposeB: c[n] = a [K] . bt[n, :] (``a`` may be a stack [S, K]: then c is
    [S, N]); 8 lanes of rounded products per output, combined by the output's place in MLAS's
    blocks of 4, 2 and 1 outputs (``_m1_transposed_b_kernel``; ``twins.m1_transposed_b_twin`` is
    the same in NumPy)."""
    n, k = bt.shape
    a = np.asarray(a, _F)
    lead = a.shape[:-1]
    a2 = np.ascontiguousarray(a.reshape(-1, k))
    out = np.empty((a2.shape[0], n), _F)
    _m1_transposed_b_kernel(a2, np.ascontiguousarray(bt, _F), out)
    out = out.reshape(lead + (n,))
    if init is not None:
        out = out + np.asarray(init, _F)
    return out


@njit(cache=True)
def _m1_transposed_b_kernel(a, bt, out):
    """out[s, n] for ``_m1_transposed_b`` (``m1_value`` of each row of a and of bt)."""
    rows = a.shape[0]
    n = bt.shape[0]
    for s in range(rows):
        for c in range(n):
            out[s, c] = m1_value(a[s], bt[c], c, n)


@njit(cache=True, inline="always")
def m1_value(a, b, q, count):
    """One output of SgemmKernelM1TransposeB, a [K] . b [K]: lane j sums the rounded products
    a[i] * b[i] of i = j (mod 8) in order (eight independent chains, vectorizable); the lanes
    are then added in the order of the output's place q among ``count`` outputs (MLAS's blocks
    of 4, 2 and 1: past the last multiple of 4, a pair and a single output pair them
    otherwise)."""
    k = a.shape[0]
    l0 = l1 = l2 = l3 = l4 = l5 = l6 = l7 = np.float32(0.0)
    i = 0
    while i + 8 <= k:
        l0 = l0 + a[i] * b[i]
        l1 = l1 + a[i + 1] * b[i + 1]
        l2 = l2 + a[i + 2] * b[i + 2]
        l3 = l3 + a[i + 3] * b[i + 3]
        l4 = l4 + a[i + 4] * b[i + 4]
        l5 = l5 + a[i + 5] * b[i + 5]
        l6 = l6 + a[i + 6] * b[i + 6]
        l7 = l7 + a[i + 7] * b[i + 7]
        i += 8
    r = k - i          # the tail: lanes past it keep their sums (adding 0 changes nothing)
    if r > 0:
        l0 = l0 + a[i] * b[i]
    if r > 1:
        l1 = l1 + a[i + 1] * b[i + 1]
    if r > 2:
        l2 = l2 + a[i + 2] * b[i + 2]
    if r > 3:
        l3 = l3 + a[i + 3] * b[i + 3]
    if r > 4:
        l4 = l4 + a[i + 4] * b[i + 4]
    if r > 5:
        l5 = l5 + a[i + 5] * b[i + 5]
    if r > 6:
        l6 = l6 + a[i + 6] * b[i + 6]
    full4 = count - count % 4
    if q < full4:
        return (((l0 + l1) + l2) + l3) + (((l4 + l5) + l6) + l7)
    if count % 4 >= 2 and q < full4 + 2:
        return ((l0 + l2) + (l4 + l6)) + ((l1 + l3) + (l5 + l7))
    return ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))


def sgemm(a, b, init=None, *, trans_a: bool = False, trans_b: bool = False, packed: bool = False,
          threads: int = 1, batch: int = 1, block_product=None, m1_transposed_b=None) -> np.ndarray:
    """float32 C [M, N] = op(a) @ op(b) (+ ``init``, the bias C already holds: MLAS's beta = 1) as
    onnxruntime's MLAS computes it: ``a`` is [M, K] ([K, M] with ``trans_a``), ``b`` [K, N]
    ([N, K] with ``trans_b``); ``packed``: B was packed ahead of time (a constant weight);
    ``threads``: onnxruntime's intra-op thread count; ``batch``: how many products of this size
    the call computes together (a batched MatMul), which changes how threads are shared.
    ``block_product``: what multiplies one K block (default ``fgemm.batched_matmul_f32``; the
    twin passes its NumPy twin; ``m1_transposed_b`` likewise for ``_m1_transposed_b``)."""
    if block_product is None:
        from .fgemm import batched_matmul_f32 as block_product
    m1t = m1_transposed_b or _m1_transposed_b
    a = np.asarray(a, _F)
    b = np.asarray(b, _F)
    a_mk = a.T if trans_a else a
    b_kn = b.T if trans_b else b
    m, k = a_mk.shape
    n = b_kn.shape[1]
    if init is not None:
        init = np.broadcast_to(np.asarray(init, _F), (m, n))
    if m == 0 or n == 0:
        return np.zeros((m, n), _F)
    if k == 0:
        return np.zeros((m, n), _F) if init is None else np.array(init, _F)
    if not packed:
        if m == 1 and not trans_a:
            row = a_mk[0]
            c0 = None if init is None else init[0]
            c = m1t(row, b, c0) if trans_b else _m1(row, b_kn, c0)
            return c.reshape(1, n)
        if n == 1 and not trans_b:
            col = b_kn[:, 0]
            c0 = None if init is None else init[:, 0]
            c = _m1(col, a, c0) if trans_a else m1t(col, a, c0)
            return c.reshape(m, 1)
    ranges = _blocked_alike(column_segments(m, n, k, threads, batch), k, trans_a, packed)
    if len(ranges) == 1:
        return _k_blocked(a_mk, b_kn[None], ranges[0][2], None if init is None else init,
                          block_product)[0]
    out = np.empty((m, n), _F)
    for n0, n1, stride in ranges:
        out[:, n0:n1] = _k_blocked(a_mk, b_kn[None, :, n0:n1], stride,
                                   None if init is None else init[:, n0:n1], block_product)[0]
    return out


def _blocked_alike(segments, k: int, trans_a: bool = False, packed: bool = False) -> list:
    """MLAS's thread segments [(n0, n1)] of one product as [(n0, n1, K block size)], neighbours
    with the same K block size merged: their columns are computed alike (each a chain of fused
    multiply-adds per K block, the blocks added in turn), so one call computes them together,
    with the same bits and without a call and a copy per segment."""
    out = []
    for n0, n1 in segments:
        stride = k_stride(n1 - n0, k, trans_a, packed)
        if out and out[-1][2] == stride and out[-1][1] == n0:
            out[-1] = (out[-1][0], n1, stride)
        else:
            out.append((n0, n1, stride))
    return out


def conv_segments(filters: int, outputs: int, k: int, threads: int = 1) -> list:
    """The output ranges [(p0, p1), ...] MLAS's threads compute for one (image, group) of a
    convolution it segments (``MlasConvPrepare``): F x P x K of work, slices of 16 outputs."""
    complexity = float(filters) * float(outputs) * float(k)
    if complexity < THREAD_COMPLEXITY * MAX_THREADS:
        target = int(complexity / THREAD_COMPLEXITY) + 1
    else:
        target = MAX_THREADS
    target = min(target, max(1, threads))
    stride = -(-outputs // target)
    if target > 1:
        stride = (stride + THREAD_ALIGN - 1) // THREAD_ALIGN * THREAD_ALIGN
        if stride >= outputs:
            target = 1
        elif stride * (target - 1) >= outputs:
            target -= 1
    if target <= 1:
        return [(0, outputs)]
    return [(i * stride, min(outputs, (i + 1) * stride)) for i in range(target) if i * stride < outputs]


def conv_gemm(w, cols, stride_k: int, block_product=None) -> np.ndarray:
    """One (image, group) of MLAS's segmented convolution: w [F, K] @ cols [K, P] in slices of
    ``stride_k`` values of K, each slice's product added to the output in turn (a single filter,
    F = 1, runs the M = 1 kernel, which keeps adding its groups of products into the output).
    ``cols`` may be a stack [S, K, P] of images sharing the filters: then [S, F, P]."""
    if block_product is None:
        from .fgemm import batched_matmul_f32 as block_product
    w = np.asarray(w, _F)
    cols = np.asarray(cols, _F)
    stack = cols.ndim == 3
    c3 = cols if stack else cols[None]
    f, k = w.shape
    if f == 1:
        c = None
        for k0 in range(0, k, stride_k):
            c = _m1(w[0, k0:k0 + stride_k], np.moveaxis(c3[:, k0:k0 + stride_k], 1, 0), c)
        c = np.zeros((c3.shape[0], cols.shape[-1]), _F) if c is None else c
        c = c[:, None]
    else:
        c = _k_blocked(w, c3, stride_k, None, block_product)
    return c if stack else c[0]


def sgemm_stack(a, b, *, threads: int = 1, block_product=None, m1_transposed_b=None) -> np.ndarray:
    """``sgemm(a, b_s)`` for each matrix b_s of a stack b [S, K, N] sharing A [M, K] (one product
    per image of a convolution), computed together: -> [S, M, N], the same bits."""
    if block_product is None:
        from .fgemm import batched_matmul_f32 as block_product
    a = np.asarray(a, _F)
    b = np.asarray(b, _F)
    m, k = a.shape
    s_, _, n = b.shape
    if s_ == 0 or m == 0 or n == 0 or k == 0:
        return np.zeros((s_, m, n), _F)
    if m == 1:
        return _m1(a[0], np.moveaxis(b, 1, 0), None)[:, None, :]
    if n == 1:
        return (m1_transposed_b or _m1_transposed_b)(b[:, :, 0], a, None)[:, :, None]
    ranges = _blocked_alike(column_segments(m, n, k, threads), k)
    if len(ranges) == 1:
        return _k_blocked(a, b, ranges[0][2], None, block_product)
    out = np.empty((s_, m, n), _F)
    for n0, n1, stride in ranges:
        out[:, :, n0:n1] = _k_blocked(a, b[:, :, n0:n1], stride, None, block_product)
    return out


def m1_groups(w, cols, stride_k: int) -> np.ndarray:
    """``conv_gemm`` for many groups of one filter each (a depthwise convolution): w [G, K] and
    cols [G, K, P] -> [G, P], each group by the M = 1 kernel in slices of ``stride_k``."""
    w = np.ascontiguousarray(w, _F)
    cols = np.ascontiguousarray(cols, _F)
    out = np.empty((cols.shape[0], cols.shape[2]), _F)
    if out.size:
        _m1_groups_kernel(w, cols, out, max(1, stride_k))
    return out


@njit(cache=True, parallel=True)
def _m1_groups_kernel(w, cols, out, stride_k):
    """out[j, q] = the M = 1 kernel's sum of w[j, i] * cols[j, i, q] over i, in K slices of
    ``stride_k``: in each slice groups of 4, 2 and 1 rounded products added in order, each
    group's sum added to the output in turn. Rows at a time (the loop over q vectorizes)."""
    g, k, p = cols.shape
    for j in prange(g):
        c = out[j]
        c[:] = 0
        for k0 in range(0, k, stride_k):
            k1 = min(k, k0 + stride_k)
            i = k0
            while i + 4 <= k1:
                w0, w1, w2, w3 = w[j, i], w[j, i + 1], w[j, i + 2], w[j, i + 3]
                r0, r1, r2, r3 = cols[j, i], cols[j, i + 1], cols[j, i + 2], cols[j, i + 3]
                for q in range(p):
                    c[q] = (((w0 * r0[q] + w1 * r1[q]) + w2 * r2[q]) + w3 * r3[q]) + c[q]
                i += 4
            if k1 - i >= 2:
                w0, w1, r0, r1 = w[j, i], w[j, i + 1], cols[j, i], cols[j, i + 1]
                for q in range(p):
                    c[q] = (w0 * r0[q] + w1 * r1[q]) + c[q]
                i += 2
            if k1 - i == 1:
                w0, r0 = w[j, i], cols[j, i]
                for q in range(p):
                    c[q] = w0 * r0[q] + c[q]


# ---------------------------------------------------------------- one output element, for explaining

def element_plan(m: int, n: int, k: int, row: int, col: int, *, trans_a: bool = False,
                 trans_b: bool = False, packed: bool = False, threads: int = 1,
                 batch: int = 1) -> tuple:
    """How ``sgemm`` computes output (row, col) of an M x N x K product: ("blocks", stride) for
    chains of fused multiply-adds over K blocks of ``stride``, ("m1",) (or ("m1", stride), as
    ``m1_groups`` runs it in K slices) for the M = 1 kernel's
    groups of 4 rounded products (the vector operand the row of A, or B's column when N = 1),
    or ("m1_tb", pattern) for the transposed-B kernel's 8 lanes combined by ``pattern``
    ("four", "two" or "one": where the output falls in blocks of 4, 2 and 1)."""
    if not packed:
        if m == 1 and not trans_a:
            return ("m1_tb", _lane_pattern(n, col)) if trans_b else ("m1",)
        if n == 1 and not trans_b:
            return ("m1",) if trans_a else ("m1_tb", _lane_pattern(m, row))
    for n0, n1 in column_segments(m, n, k, threads, batch):
        if n0 <= col < n1:
            return ("blocks", k_stride(n1 - n0, k, trans_a, packed))
    return ("blocks", k_stride(n, k, trans_a, packed))


def _lane_pattern(count: int, index: int) -> str:
    full = count - count % 4
    if index < full:
        return "four"
    return "two" if count % 4 >= 2 and index < full + 2 else "one"


def element_value(a_row, b_col, plan: tuple, init=None, fma=None):
    """The output element ``plan`` (from ``element_plan``) gives for the K values of A's row and
    B's column, float32 scalars step by step (``fma``: an exact fused multiply-add, as the
    explainer's); -> (value, the partial results in order, for display)."""
    f32 = _F
    a = [f32(v) for v in a_row]
    b = [f32(v) for v in b_col]
    k = len(a)
    parts = []
    kind = plan[0]
    if kind == "blocks":
        c = None if init is None else f32(init)
        for k0 in range(0, k, plan[1]):
            s = f32(0)
            for i in range(k0, min(k, k0 + plan[1])):
                s = fma(a[i], b[i], s)
            parts.append(s)
            c = s if c is None else f32(c + s)
        return (f32(0) if c is None else c), parts
    if kind == "m1":
        c = f32(0) if init is None else f32(init)
        stride = plan[1] if len(plan) > 1 else max(k, 1)
        for k0 in range(0, k, stride):
            k1, i = min(k, k0 + stride), k0
            while i + 4 <= k1:
                p = f32(a[i] * b[i])
                for j in range(1, 4):
                    p = f32(p + f32(a[i + j] * b[i + j]))
                parts.append(p)
                c = f32(p + c)
                i += 4
            if k1 - i >= 2:
                p = f32(f32(a[i] * b[i]) + f32(a[i + 1] * b[i + 1]))
                parts.append(p)
                c = f32(p + c)
                i += 2
            if k1 - i == 1:
                p = f32(a[i] * b[i])
                parts.append(p)
                c = f32(p + c)
        return c, parts
    lanes = [f32(0)] * 8
    for i in range(k):
        lanes[i % 8] = f32(lanes[i % 8] + f32(a[i] * b[i]))
    l0, l1, l2, l3, l4, l5, l6, l7 = lanes
    if plan[1] == "four":
        v = f32(f32(f32(f32(l0 + l1) + l2) + l3) + f32(f32(f32(l4 + l5) + l6) + l7))
    elif plan[1] == "two":
        v = f32(f32(f32(l0 + l2) + f32(l4 + l6)) + f32(f32(l1 + l3) + f32(l5 + l7)))
    else:
        v = f32(f32(f32(l0 + l1) + f32(l2 + l3)) + f32(f32(l4 + l5) + f32(l6 + l7)))
    parts.extend(lanes)
    return (v if init is None else f32(v + f32(init))), parts


def depthwise_m1_2d(x, w, kernel, strides, dilations, out_shape, stride_k: int,
                    pads=(0, 0, 0, 0)) -> np.ndarray:
    """``m1_groups`` for a 2-D depthwise convolution, read straight from the input (no im2col):
    x [G, H, W], zero-padded by ``pads`` (top, left, bottom, right), w [G, KH * KW] ->
    [G, OH, OW], each output the M = 1 kernel's sum over its taps in order (kh, kw), in slices
    of ``stride_k`` taps."""
    x = np.ascontiguousarray(x, _F)
    w = np.ascontiguousarray(w, _F)
    if any(pads):
        padded = np.empty((x.shape[0], x.shape[1] + pads[0] + pads[2], x.shape[2] + pads[1] + pads[3]), _F)
        _pad_planes(x, padded, pads[0], pads[1])
        x = padded
    out = np.empty((x.shape[0],) + tuple(out_shape), _F)
    if out.size:
        _depthwise_kernel(x.reshape(-1), x.shape[1], x.shape[2], w, out.reshape(-1), *out.shape,
                          kernel[0], kernel[1], strides[0], strides[1], dilations[0], dilations[1],
                          max(1, stride_k))
    return out


@njit(cache=True, parallel=True)
def _pad_planes(x, out, top, left):
    """out [G, H + top + bottom, W + left + right] = x [G, H, W] with zeros around it."""
    g, h, w = x.shape
    for j in prange(g):
        out[j] = 0
        for i in range(h):
            row, src = out[j, top + i, left:left + w], x[j, i]
            for q in range(w):
                row[q] = src[q]


_U = np.uint64     # unsigned indices: no test for negative indices per read, no array views


@njit(inline="always")
def _taps_into(y, yo, n, x, s0, s1, s2, s3, sw, w0, w1, w2, w3, count):
    """y[yo + b] = (rounded products of the first ``count`` (4, 2 or 1) taps, added in order) +
    y[yo + b] for b < n, tap t's input for output b at x[s_t + b * sw] (flat arrays: a row's
    loop vectorizes for sw = 1, and short rows pay no view per tap)."""
    if sw == 1:
        if count == 4:
            for b in range(n):
                y[_U(yo + b)] = (((w0 * x[_U(s0 + b)] + w1 * x[_U(s1 + b)]) + w2 * x[_U(s2 + b)])
                                 + w3 * x[_U(s3 + b)]) + y[_U(yo + b)]
        elif count == 2:
            for b in range(n):
                y[_U(yo + b)] = (w0 * x[_U(s0 + b)] + w1 * x[_U(s1 + b)]) + y[_U(yo + b)]
        else:
            for b in range(n):
                y[_U(yo + b)] = w0 * x[_U(s0 + b)] + y[_U(yo + b)]
    elif count == 4:
        for b in range(n):
            y[_U(yo + b)] = (((w0 * x[_U(s0 + b * sw)] + w1 * x[_U(s1 + b * sw)]) + w2 * x[_U(s2 + b * sw)])
                             + w3 * x[_U(s3 + b * sw)]) + y[_U(yo + b)]
    elif count == 2:
        for b in range(n):
            y[_U(yo + b)] = (w0 * x[_U(s0 + b * sw)] + w1 * x[_U(s1 + b * sw)]) + y[_U(yo + b)]
    else:
        for b in range(n):
            y[_U(yo + b)] = w0 * x[_U(s0 + b * sw)] + y[_U(yo + b)]


@njit(cache=True, parallel=True)
def _depthwise_kernel(xf, h, wd, w, outf, g, oh, ow, kh, kw, sh, sw, dh, dw, stride_k):
    """outf (flat [G, OH, OW]) from xf (flat, zero-padded [G, H, W]), one output row per task:
    the taps' rounded products in groups of 4, 2 and 1 added to the row, in K slices of
    ``stride_k`` (MLAS's M = 1 kernel)."""
    k = kh * kw
    offset = np.empty(k, np.int64)           # tap i's input offset from the window's corner
    for i in range(k):
        offset[i] = (i // kw) * dh * wd + (i % kw) * dw
    for task in prange(g * oh):
        j, a = task // oh, task % oh
        yo = (j * oh + a) * ow
        for b in range(ow):
            outf[yo + b] = 0
        corner = j * h * wd + a * sh * wd
        for k0 in range(0, k, stride_k):
            k1 = min(k, k0 + stride_k)
            i = k0
            while i < k1:
                count = 4 if k1 - i >= 4 else (2 if k1 - i >= 2 else 1)
                # unused taps repeat tap i (their products are not added)
                t1, t2, t3 = i + min(1, count - 1), i + min(2, count - 1), i + min(3, count - 1)
                _taps_into(outf, yo, ow, xf, corner + offset[i], corner + offset[t1],
                           corner + offset[t2], corner + offset[t3], sw,
                           w[j, i], w[j, t1], w[j, t2], w[j, t3], count)
                i += count
