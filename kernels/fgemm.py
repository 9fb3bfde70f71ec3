"""Float32 matrix products in register tiles: stacks of small matrices (attention's Q K^T and
P V), and products with a constant weight matrix packed once (a model's MatMul layers).

``numpy.matmul`` on a stack of matrices calls the BLAS once per matrix; for the 12 heads of a
BERT layer (128 x 64 @ 64 x 128) each call is too small to amortize the BLAS threads' start and
stop, and the stack took 0.3-0.5 ms.  Here every (matrix, 8-row block, 32-column block) of the
stack is one parallel task, and each task is a register tile written in LLVM IR:

    for k in range(K):
        b[v] = B[k, j0 + 16v : j0 + 16v + 16]      # two 16-float vectors
        for r in range(MR):                         # MR = 8, 4, 2 or 1 rows
            acc[r][v] = fma(broadcast(A[i0 + r, k]), b[v], acc[r][v])

Each output is the sequential fused multiply-add over k, starting from 0 -- one rounding per
step, k in order (the tests compare with an exact emulation, bit for bit).  For BERT's attention
shapes that gave the same bits as NumPy's OpenBLAS on the AVX-512 machine of bench/RESULTS.md;
other BLAS builds may block K differently, so only closeness to numpy.matmul is tested.  Column
tails narrower than 32 use a 16-wide tile and then a scalar loop of the same fused multiply-adds.

A constant weight matrix B [K, N] (``pack_b_f32``) is copied once into panels of 32 columns,
each panel K rows of 32 contiguous floats ([ceil(N/32), K, 32], the last panel zero-padded), so a
tile reads its B vectors from one sequential stream instead of rows N floats apart
(``matmul_packed_f32``; one task per panel, or per (panel, chunk of rows) when there are few
panels).  The optional bias is added to the task's outputs while they are in cache: one float32
addition per output, the same as an Add node.
The tiles hold 16 accumulators of 16 floats, which fit AVX-512's 32 vector registers;
``packed_available()`` says whether this CPU has them (elsewhere the BLAS is faster).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .irgen import add_tile, element_pointers, store_tile
from .mathf import fma
from .rows import row_view

__all__ = ["batched_matmul_f32", "SMALL", "PackedF32", "pack_b_f32", "matmul_packed_f32", "im2col_panels",
           "packed_available"]

SMALL = 1 << 21  # M * N * K of one matrix product up to which the stack runs here
_F16 = ir.VectorType(ir.FloatType(), 16)


def _tile_intrinsic(mr: int, nv: int, accumulate: bool = False):
    """c[c_off + r*ldc + j] = sum_k a[a_off + r*lda + k] * b[b_off + k*ldb + j] for r < mr,
    j < 16 * nv (sequential fused multiply-adds over k, from 0); float32 1-D arrays, indices in
    bounds. ``accumulate``: the sum is added to what c holds (one float32 addition each)."""

    @intrinsic
    def tile(typingctx, a, a_off, lda, b, b_off, ldb, kdim, c, c_off, ldc):
        sig = types.void(a, types.intp, types.intp, b, types.intp, types.intp, types.intp, c,
                         types.intp, types.intp)

        def codegen(context, builder, signature, args):
            lda_v, ldb_v, k_v, ldc_v = args[2], args[5], args[6], args[9]
            a_base, b_base, c_base = element_pointers(context, builder, signature, args, (0, 3, 7))
            vfma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F16, [_F16] * 3),
                                                  "llvm.fma.v16f32")
            accs = [[cgutils.alloca_once_value(builder, ir.Constant(_F16, None)) for _ in range(nv)]
                    for _ in range(mr)]
            rows = [builder.gep(a_base, [builder.mul(lda_v, ir.Constant(lda_v.type, r))]) for r in range(mr)]
            lane0 = ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16)
            with cgutils.for_range(builder, k_v) as loop:
                k = loop.index
                b_row = builder.gep(b_base, [builder.mul(k, ldb_v)])
                b_vecs = [builder.load(builder.bitcast(builder.gep(b_row, [ir.Constant(k.type, 16 * v)]),
                                                       _F16.as_pointer()), align=4) for v in range(nv)]
                for r in range(mr):
                    x = builder.load(builder.gep(rows[r], [k]))
                    one = builder.insert_element(ir.Constant(_F16, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
                    bcast = builder.shuffle_vector(one, ir.Constant(_F16, ir.Undefined), lane0)
                    for v in range(nv):
                        builder.store(builder.call(vfma, [bcast, b_vecs[v], builder.load(accs[r][v])]), accs[r][v])
            if accumulate:
                add_tile(builder, c_base, ldc_v, accs)
            else:
                store_tile(builder, c_base, ldc_v, accs)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _rows_function(width: int, accumulate: bool = False):
    """rows(a, ao, lda, b, bo, ldb, k, c, co, ldc, i0, i1): rows i0..i1-1 of one ``width``-column
    block (32 or 16), in row tiles of 8, 4, 2 and 1 (``accumulate``: added to c)."""
    t8, t4, t2, t1 = (_tile_intrinsic(mr, width // 16, accumulate) for mr in (8, 4, 2, 1))

    @njit(inline="always")
    def rows(a, ao, lda, b, bo, ldb, k, c, co, ldc, i0, i1):
        i = i0
        while i + 8 <= i1:
            t8(a, ao + i * lda, lda, b, bo, ldb, k, c, co + i * ldc, ldc)
            i += 8
        if i + 4 <= i1:
            t4(a, ao + i * lda, lda, b, bo, ldb, k, c, co + i * ldc, ldc)
            i += 4
        if i + 2 <= i1:
            t2(a, ao + i * lda, lda, b, bo, ldb, k, c, co + i * ldc, ldc)
            i += 2
        if i < i1:
            t1(a, ao + i * lda, lda, b, bo, ldb, k, c, co + i * ldc, ldc)

    return rows


def _rows_function_ymm(width: int, accumulate: bool = False):
    """``_rows_function`` for CPUs with 16 vector registers of 8 floats (AVX2): each 16-column
    half of the block in row tiles of 6, 4, 2 and 1 (6 rows x 16 columns: 12 ymm accumulators,
    2 for B's row and the broadcast). The 8 x 32 tile would need 32 accumulators there: LLVM
    spilled them to the stack and a BERT-base MatMul ran at ~8 GFLOPS. Every output is the same
    chain of fused multiply-adds, so the same bits."""
    t6, t4, t2, t1 = (_tile_intrinsic(mr, 1, accumulate) for mr in (6, 4, 2, 1))

    @njit(inline="always")
    def rows(a, ao, lda, b, bo, ldb, k, c, co, ldc, i0, i1):
        for j in range(0, width, 16):
            i = i0
            while i + 6 <= i1:
                t6(a, ao + i * lda, lda, b, bo + j, ldb, k, c, co + i * ldc + j, ldc)
                i += 6
            if i + 4 <= i1:
                t4(a, ao + i * lda, lda, b, bo + j, ldb, k, c, co + i * ldc + j, ldc)
                i += 4
            if i + 2 <= i1:
                t2(a, ao + i * lda, lda, b, bo + j, ldb, k, c, co + i * ldc + j, ldc)
                i += 2
            if i < i1:
                t1(a, ao + i * lda, lda, b, bo + j, ldb, k, c, co + i * ldc + j, ldc)

    return rows


def _zmm_registers() -> bool:
    """True where Numba compiles for this CPU and it has AVX-512 (32 vector registers of 16
    floats)."""
    from .cpu import compiles_for_host, features

    return compiles_for_host() and "avx512f" in features()[1]


if _zmm_registers():
    _rows32 = _rows_function(32)
    _rows16 = _rows_function(16)
    _rows32_add = _rows_function(32, accumulate=True)
    _rows16_add = _rows_function(16, accumulate=True)
    _MB = 8    # rows per task block of a stack's product: one 8 x 32 tile
else:
    _rows32 = _rows_function_ymm(32)
    _rows16 = _rows_function_ymm(16)
    _rows32_add = _rows_function_ymm(32, accumulate=True)
    _rows16_add = _rows_function_ymm(16, accumulate=True)
    _MB = 6    # two 6 x 16 tiles


@njit(inline="always")
def _column_tail(a, ao, lda, b, bo, ldb, c, co, ldc, ncols, k, j0, i0, i1, accumulate=False):
    """Columns j0..ncols-1 (of a block whose B rows are ldb apart) of rows i0..i1-1 (A's rows lda
    apart): a 16-wide tile, then single outputs (``accumulate``: added to c)."""
    j = j0
    if ncols - j >= 16:
        if accumulate:
            _rows16_add(a, ao, lda, b, bo + j, ldb, k, c, co + j, ldc, i0, i1)
        else:
            _rows16(a, ao, lda, b, bo + j, ldb, k, c, co + j, ldc, i0, i1)
        j += 16
    for i in range(i0, i1):
        for jj in range(j, ncols):
            acc = np.float32(0)
            for kk in range(k):
                acc = fma(a[ao + i * lda + kk], b[bo + kk * ldb + jj], acc)
            if accumulate:
                c[co + i * ldc + jj] += acc
            else:
                c[co + i * ldc + jj] = acc


@njit(cache=True, parallel=True)
def _bmm_kernel(a, a_offs, lda, b, b_offs, ldb, c, nb, m, n, k):
    """c[t] = A_t @ B_t for t < nb, c a flat C-order stack [nb, m, n]; A_t's row i starts at
    a[a_offs[t] + i * lda], B_t's row kk at b[b_offs[t] + kk * ldb] (rows contiguous: strided
    views such as attention's transposed heads are read in place). One task per (matrix, block
    of ``_MB`` rows, 32-column block), then the row and column tails, one task per matrix."""
    mt, nt = m // _MB, n // 32
    full = nt * 32
    if m <= 32 and nt >= 8:
        # few rows, many columns: one task per (matrix, 32-column block) takes all the rows, so
        # the block of B is read once (from cache for every row tile after the first)
        for task in prange(nb * nt):
            t = task // nt
            j = (task - t * nt) * 32
            _rows32(a, a_offs[t], lda, b, b_offs[t] + j, ldb, k, c, t * m * n + j, n, 0, m)
        for t in prange(nb):
            _column_tail(a, a_offs[t], lda, b, b_offs[t], ldb, c, t * m * n, n, n, k, full, 0, m)
        return
    for task in prange(nb * mt * nt):
        t = task // (mt * nt)
        rest = task - t * mt * nt
        i = (rest // nt) * _MB
        j = (rest - (rest // nt) * nt) * 32
        _rows32(a, a_offs[t], lda, b, b_offs[t] + j, ldb, k, c, t * m * n + j, n, i, i + _MB)
    for t in prange(nb):
        ao, bo, co = a_offs[t], b_offs[t], t * m * n
        for j in range(0, full, 32):          # rows below the last full block
            _rows32(a, ao, lda, b, bo + j, ldb, k, c, co + j, n, mt * _MB, m)
        _column_tail(a, ao, lda, b, bo, ldb, c, co, n, n, k, full, 0, m)


@njit(cache=True, parallel=True)
def _bmm_bt_kernel(a, a_offs, lda, bt, bt_offs, ldbt, c, nb, m, n, k):
    """Like ``_bmm_kernel`` with B given transposed: B_t's column j is the contiguous row
    bt[bt_offs[t] + j * ldbt : ... + k] (the layout of attention's K^T). One task per (matrix,
    32-column block): the block of B is first copied into a [k, 32] scratch, which the tiles
    then read."""
    nt = (n + 31) // 32
    for task in prange(nb * nt):
        t = task // nt
        j0 = (task - t * nt) * 32
        w = min(32, n - j0)
        blk = np.zeros(k * 32, dtype=np.float32)
        for jj in range(w):
            src = bt_offs[t] + (j0 + jj) * ldbt
            for kk in range(k):
                blk[kk * 32 + jj] = bt[src + kk]
        ao, co = a_offs[t], t * m * n
        if w == 32:
            _rows32(a, ao, lda, blk, 0, 32, k, c, co + j0, n, 0, m)
        else:
            _column_tail(a, ao, lda, blk, 0, 32, c, co + j0, n, w, k, 0, 0, m)


def _copied_rows(x, shape):
    """x broadcast to ``shape`` and copied C-contiguous: (read-only flat array, matrix offsets,
    row stride), the form ``rows.row_view`` gives."""
    xx = np.ascontiguousarray(np.broadcast_to(x, shape), dtype=np.float32).reshape(-1)
    xx.flags.writeable = False
    r, c = shape[-2:]
    return xx, np.arange(xx.size // max(1, r * c), dtype=np.int64) * (r * c), c


def batched_matmul_f32(a, b) -> np.ndarray:
    """``numpy.matmul`` of two float32 stacks a [..., M, K] and b [..., K, N] whose leading axes
    broadcast (both at least 2-D), each product as sequential fused multiply-adds over k.
    Strided views whose rows (of A, and of B or of B^T) are contiguous are read in place."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    m, k = a.shape[-2:]
    n = b.shape[-1]
    if b.shape[-2] != k:
        raise ValueError(f"batched_matmul_f32: shapes {a.shape} and {b.shape} do not match")
    nb = int(np.prod(batch, dtype=np.int64))
    out = np.empty(batch + (m, n), dtype=np.float32)
    if not out.size:
        return out
    if k == 0:
        out[...] = 0
        return out
    av = row_view(a, batch) or _copied_rows(a, batch + (m, k))
    if k > 1 and b.strides[-2] == b.itemsize and b.strides[-1] != b.itemsize:
        # B stored transposed (attention's K^T): its columns are contiguous rows of B^T
        bt = np.swapaxes(b, -1, -2)
        bv = row_view(bt, batch) or _copied_rows(bt, batch + (n, k))
        _bmm_bt_kernel(*av, *bv, out.reshape(-1), nb, m, n, k)
    else:
        bv = row_view(b, batch) or _copied_rows(b, batch + (k, n))
        _bmm_kernel(*av, *bv, out.reshape(-1), nb, m, n, k)
    return out


# ---------------------------------------------------------------- constant weights, packed once


class PackedF32(NamedTuple):
    """B [K, N] float32 as panels [ceil(N/32), K, 32] (flat), zero-padded past column N."""
    panels: np.ndarray
    k: int
    n: int


def packed_available() -> bool:
    """True when the packed float32 kernel runs here (``cpu.float_matmul() == "packed"``): Numba
    compiles for this host CPU and the CPU has AVX-512 (32 vector registers of 16 floats: the
    8 x 32 tile's accumulators fit), unless ``REFRT_FLOAT_MATMUL=blas``."""
    from .cpu import float_matmul

    return float_matmul() == "packed"


def tiles_available() -> bool:
    """True where the register tiles fit this CPU's vector registers: the 8 x 32 tiles where
    ``packed_available()``, the 6 x 16 ymm tiles where Numba compiles for a CPU with AVX2 (unless
    ``REFRT_FLOAT_MATMUL=blas``). The convolutions of the default numerics use them there; the
    MatMul of the spec numerics only where ``packed_available()`` (elsewhere the BLAS is faster)."""
    from .cpu import FLOAT_ENV, compiles_with_avx2

    return packed_available() or (compiles_with_avx2() and os.environ.get(FLOAT_ENV) != "blas")


def pack_b_f32(b: np.ndarray) -> PackedF32:
    """Pack a 2-D float32 B [K, N] into 32-column panels for ``matmul_packed_f32``."""
    if b.ndim != 2 or b.dtype != np.float32:
        raise ValueError(f"pack_b_f32: B must be 2-D float32, got {b.dtype.name} {list(b.shape)}")
    k, n = b.shape
    panels = np.empty(((n + 31) // 32) * k * 32, dtype=np.float32)
    if panels.size:
        _pack_kernel(np.ascontiguousarray(b), panels)
    return PackedF32(panels, k, n)


@njit(cache=True, parallel=True)
def _pack_kernel(b, panels):
    """panels[p, kk, j] = b[kk, 32 p + j] (0 past column N), one task per panel: a session's
    weights are packed by both threads, each panel written once (no zero fill first)."""
    k, n = b.shape
    for p in prange((n + 31) // 32):
        j0 = p * 32
        w = min(32, n - j0)
        for kk in range(k):
            dst = (p * k + kk) * 32
            for j in range(w):
                panels[dst + j] = b[kk, j0 + j]
            for j in range(w, 32):
                panels[dst + j] = 0


def im2col_panels(x: np.ndarray, c0: int, cg: int, kernel, strides, dilations, out_hw,
                  q0: int, q1: int) -> PackedF32:
    """The im2col matrix of a 2-D convolution, built straight into ``pack_b_f32``'s panels:
    B [K, Q] with K = cg * kh * kw rows (channel c0 + c, tap (u, v), in that order) and one
    column per output position q0 <= q < q1, counted over (image, oh, ow) of x [N, C, Hp, Wp]
    (already zero-padded). One pass over the output instead of an im2col copy and a packing
    copy; each panel is one parallel task."""
    x = np.ascontiguousarray(x, np.float32)
    kh, kw = kernel
    k = cg * kh * kw
    panels = np.empty(((q1 - q0 + 31) // 32) * k * 32, dtype=np.float32)
    if panels.size:
        _im2col_panels_kernel(x.reshape(-1), x.shape[1], x.shape[2], x.shape[3], c0, cg, kh, kw,
                              strides[0], strides[1], dilations[0], dilations[1], out_hw[0],
                              out_hw[1], q0, q1, panels)
    return PackedF32(panels, k, q1 - q0)


@njit(cache=True, parallel=True)
def _im2col_panels_kernel(xf, c, hp, wp, c0, cg, kh, kw, sh, sw, dh, dw, oh, ow, q0, q1, panels):
    k = cg * kh * kw
    nq = q1 - q0
    hw = hp * wp
    per_img = oh * ow
    for p in prange((nq + 31) // 32):
        # where each column's tap (0, 0) of channel c0 is in xf, and the columns as runs along
        # one output row (first column, past the last): a run of a row with sw = 1 is a
        # contiguous copy; panels cut into many short runs (small images) gather instead
        col = np.empty(32, np.uint64)     # unsigned: no negative-index test per read
        starts = np.empty(33, np.int64)
        valid = min(32, nq - p * 32)
        runs = 0
        q = q0 + p * 32                   # divide once per panel, then count along
        img = q // per_img
        a = (q - img * per_img) // ow
        b = q - img * per_img - a * ow
        for j in range(valid):
            col[j] = (img * c + c0) * hw + a * sh * wp + b * sw
            if j == 0 or b == 0:
                starts[runs] = j
                runs += 1
            b += 1
            if b == ow:
                b = 0
                a += 1
                if a == oh:
                    a = 0
                    img += 1
        starts[runs] = valid
        o = p * k * 32
        for ci in range(cg):
            for u in range(kh):
                for v in range(kw):
                    d = np.uint64(ci * hw + u * dh * wp + v * dw)
                    if runs <= 2 and sw == 1:
                        for t in range(runs):
                            src = col[starts[t]] + d
                            for jj in range(starts[t + 1] - starts[t]):
                                panels[o + starts[t] + jj] = xf[src + jj]
                    else:
                        for j in range(valid):
                            panels[o + j] = xf[col[j] + d]
                    for j in range(valid, 32):
                        panels[o + j] = 0.0
                    o += 32


@njit(cache=True, parallel=True)
def _packed_kernel(a, bp, c, bias, m, n, k, chunks, kblock, accumulate):
    """c [m, n] = a [m, k] @ B (+ bias [n] when bias.size) from B's panels bp, all flat C-order:
    one task per (32-column panel, chunk of rows): the chunk's 8-row tiles reuse the panel from
    the core's cache. ``chunks`` (>= 1) row chunks per panel, each a multiple of 8 rows. K runs
    in blocks of ``kblock``: each block's sums start from 0 and are added to c in turn (the
    first stored, unless ``accumulate``: c holds a bias to add into)."""
    npan = (n + 31) // 32
    rows = ((m + chunks - 1) // chunks + 7) // 8 * 8
    for task in prange(npan * chunks):
        p = task // chunks
        i0 = (task - p * chunks) * rows
        i1 = min(i0 + rows, m)
        j0 = p * 32
        w = min(32, n - j0)
        for k0 in range(0, k, kblock):
            kk = min(kblock, k - k0)
            bo = p * k * 32 + k0 * 32
            add = accumulate or k0 > 0
            if w < 32:
                # the last, zero-padded panel: the full 32-column tiles into a scratch block
                # (rows i0..i1, 32 wide), of which the first w columns are kept; each kept
                # output is the same chain of fused multiply-adds
                tmp = np.zeros((i1 - i0) * 32, np.float32)
                if add:
                    for i in range(i0, i1):
                        for jj in range(w):
                            tmp[(i - i0) * 32 + jj] = c[i * n + j0 + jj]
                    _rows32_add(a, k0, k, bp, bo, 32, kk, tmp, -i0 * 32, 32, i0, i1)
                else:
                    _rows32(a, k0, k, bp, bo, 32, kk, tmp, -i0 * 32, 32, i0, i1)
                for i in range(i0, i1):
                    for jj in range(w):
                        c[i * n + j0 + jj] = tmp[(i - i0) * 32 + jj]
            elif add:
                _rows32_add(a, k0, k, bp, bo, 32, kk, c, j0, n, i0, i1)
            else:
                _rows32(a, k0, k, bp, bo, 32, kk, c, j0, n, i0, i1)
        if bias.size:
            for i in range(i0, i1):
                for j in range(w):
                    c[i * n + j0 + j] += bias[j0 + j]


_NO_BIAS = np.zeros(0, dtype=np.float32)
_TASKS = 8   # at least this many parallel tasks per product (when it has that many tiles)


def matmul_packed_f32(a: np.ndarray, packed: PackedF32, bias: np.ndarray | None = None,
                      k_block: int = 0, init: np.ndarray | None = None) -> np.ndarray:
    """``a @ B (+ bias)`` for float32 a [..., K] (at least 1-D) and B packed by ``pack_b_f32``:
    each output the sequential fused multiply-add over k from 0 (over each block of ``k_block``
    values of k, the blocks' sums added in turn; 0: one block), then one float32 addition of
    ``bias`` (float32 [N]) if given. ``init`` [..., N]: what the output starts from (the sums
    are added to it). Returns a new [..., N] array; ``a`` is not modified."""
    if a.dtype != np.float32 or a.ndim < 1 or a.shape[-1] != packed.k:
        raise ValueError(f"matmul_packed_f32: A {a.dtype.name} {list(a.shape)} does not match "
                         f"packed B [{packed.k}, {packed.n}]")
    if bias is not None and (bias.dtype != np.float32 or bias.shape != (packed.n,)):
        raise ValueError(f"matmul_packed_f32: bias must be float32 [{packed.n}], got "
                         f"{bias.dtype.name} {list(bias.shape)}")
    shape = a.shape[:-1] + (packed.n,)
    out = np.empty(shape, dtype=np.float32)
    if init is not None:
        out[...] = init
    if not out.size:
        return out
    if packed.k == 0:
        if init is None:
            out[...] = 0
        if bias is not None:
            out += bias
        return out
    a2 = np.ascontiguousarray(a.reshape(-1, packed.k))
    b_ = _NO_BIAS if bias is None else np.ascontiguousarray(bias)
    m, npan = a2.shape[0], (packed.n + 31) // 32
    # whole panels per task where there are enough of them to share out; else rows are split
    chunks = max(1, min((m + 7) // 8, -(-_TASKS // npan)))
    kblock = packed.k if k_block <= 0 else min(k_block, packed.k)
    _packed_kernel(a2.reshape(-1), packed.panels, out.reshape(-1), b_, m, packed.n, packed.k, chunks,
                   kblock, init is not None)
    return out
