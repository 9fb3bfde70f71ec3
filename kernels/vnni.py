"""The VNNI int8 GEMM: u8 x s8 byte dot products with ``vpdpbusd``, written as LLVM vector IR.

LLVM's loop vectorizer turns the plain int16 dot product of ``gemm.py`` into 128-bit ``vpmaddwd``
at best; it never forms a register tile, and it never emits ``vpdpbusd`` (AVX512-VNNI), which
multiplies 64 unsigned bytes by 64 signed bytes and adds each group of four products straight into
16 int32 lanes -- exactly, with no int16 saturation step.  This module spells the tile out in LLVM
IR through a Numba ``@intrinsic``, so the inner loop is exactly what the hardware runs best:

    for g in range(K / 4):                       # one group of four K steps
        b[v]   = 64 bytes of packed B            # 16 columns x 4 k, for v in 0..NV-1
        for r in range(MR):
            a  = broadcast(A[r, 4g : 4g+4])      # 4 bytes of row r, copied to all 16 lanes
            acc[r][v] = vpdpbusd(acc[r][v], a, b[v])
    store acc                                     # MR x (16*NV) int32

Everything around the tile (packing, zero points, blocking, threads) is ordinary Numba code.

Packing (``pack_b``): B [K, N] becomes int8 panels ``[N/32][K/4][32][4]`` -- for each block
of 32 columns and each group of four k, the 4 bytes of column j are adjacent, which is the operand
layout of ``vpdpbusd``.  K is padded with zeros to a multiple of 4 and N to a multiple of 32.

Signedness: ``vpdpbusd`` wants unsigned A and signed B.  Other combinations are shifted into that
one and the shift is folded into the zero points, which ``gemm`` folds exactly in int64:

    int8 A:  a_stored = a + 128  (uint8),  a_zp -> a_zp + 128
    uint8 B: b_stored = b - 128  (int8),   b_zp -> b_zp - 128

so every (A, B) type pair runs the same exact kernel.  The int32 accumulators wrap modulo 2**32
like every int32 sum here.

The kernel needs AVX512-VNNI (``avx512vnni`` in LLVM's host features); ``available()`` says whether
this process may use it.  Without it, ``gemm.py``'s portable kernel runs instead.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .irgen import element_pointers, store_tile

__all__ = ["available", "VnniB", "pack_b", "prepare", "zero_point_terms", "run_panels", "finish", "gemm",
           "NR", "KGROUP"]

NR = 32  # columns per B panel (two 16-lane int32 vectors)
KGROUP = 4  # k steps per vpdpbusd
_NV = NR // 16
_I32X16 = ir.VectorType(ir.IntType(32), 16)
_I8X64 = ir.VectorType(ir.IntType(8), 64)


def available() -> bool:
    """True when this process can run the VNNI kernel: Numba compiles for this host CPU and the
    CPU has AVX512-VNNI (``cpu.runnable_int8_kernels``)."""
    from .cpu import runnable_int8_kernels

    return "vnni" in runnable_int8_kernels()


def _tile_intrinsic(mr: int):
    """A Numba intrinsic computing one MR x 32 int32 tile:

    tile(a, a_off, lda, bp, b_off, groups, c, c_off, ldc)
        c[c_off + r*ldc + j] = sum_g sum_t a[a_off + r*lda + 4g + t] * bp[b_off + (g*32 + j)*4 + t]

    a: uint8 1-D (rows of A, K padded to 4); bp: int8 1-D (one packed panel starts at b_off);
    c: int32 1-D.  The caller guarantees every index is in bounds.
    """

    @intrinsic
    def tile(typingctx, a, a_off, lda, bp, b_off, groups, c, c_off, ldc):
        sig = types.void(a, types.intp, types.intp, bp, types.intp, types.intp, c, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            lda_v, groups_v, ldc_v = args[2], args[5], args[8]
            a_base, b_base, c_base = element_pointers(context, builder, signature, args, (0, 3, 6))
            fn_ty = ir.FunctionType(_I32X16, [_I32X16, _I8X64, _I8X64])
            dpbusd = cgutils.get_or_insert_function(builder.module, fn_ty, "llvm.x86.avx512.vpdpbusd.512")
            zero = ir.Constant(_I32X16, None)
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(_NV)] for _ in range(mr)]
            row_ptrs = [builder.gep(a_base, [builder.mul(lda_v, ir.Constant(lda_v.type, r))]) for r in range(mr)]
            mask = ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16)
            with cgutils.for_range(builder, groups_v) as loop:
                g = loop.index
                b_group = builder.gep(b_base, [builder.mul(g, ir.Constant(g.type, NR * KGROUP))])
                b_vecs = []
                for v in range(_NV):
                    p = builder.gep(b_group, [ir.Constant(g.type, v * 64)])
                    b_vecs.append(builder.load(builder.bitcast(p, _I8X64.as_pointer()), align=1))
                a_off_g = builder.mul(g, ir.Constant(g.type, KGROUP))
                for r in range(mr):
                    p = builder.gep(row_ptrs[r], [a_off_g])
                    word = builder.load(builder.bitcast(p, ir.IntType(32).as_pointer()), align=1)
                    vec = builder.insert_element(ir.Constant(_I32X16, ir.Undefined), word, ir.Constant(ir.IntType(32), 0))
                    bcast = builder.bitcast(builder.shuffle_vector(vec, ir.Constant(_I32X16, ir.Undefined), mask), _I8X64)
                    for v in range(_NV):
                        acc = builder.load(accs[r][v])
                        builder.store(builder.call(dpbusd, [acc, bcast, b_vecs[v]]), accs[r][v])
            store_tile(builder, c_base, ldc_v, accs)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile8 = _tile_intrinsic(8)
_tile4 = _tile_intrinsic(4)
_tile2 = _tile_intrinsic(2)
_tile1 = _tile_intrinsic(1)


class VnniB:
    """B packed for ``gemm``: ``panels`` (int8, see ``pack_b``), ``colsum`` (int64 column sums of
    the stored values, zero-padded to ``npad`` = N rounded up to 32), ``shift`` (the zero-point
    shift of the stored values: -128 for uint8 B, else 0), ``kpad`` (K padded with zeros)."""

    __slots__ = ("panels", "colsum", "shift", "n", "npad", "kpad", "zero_terms")

    def __init__(self, panels, colsum, shift, n, kpad):
        self.panels, self.colsum, self.shift, self.n, self.kpad = panels, colsum, shift, n, kpad
        self.npad = colsum.shape[0]
        self.zero_terms = None   # (colterm, b_zp) as int32 for all-zero zero points, made once


def pack_b(bt, colsum, k_align: int = KGROUP) -> VnniB:
    """B^T [N, K] (uint8 or int8) and its int64 column sums -> ``VnniB``.  uint8 B is stored as
    b - 128 (int8); the panels are int8 ``[ceil(N/32)][Kp/4][32][4]``, K zero-padded to ``Kp``, a
    multiple of ``k_align`` (4 here; the AMX kernel wants 64)."""
    n, k = bt.shape
    shift = -128 if bt.dtype == np.uint8 else 0
    stored = (bt ^ np.uint8(0x80)).view(np.int8) if shift else bt
    npad, kpad = -(-n // NR) * NR, max(1, -(-k // k_align)) * k_align
    full = np.zeros((npad, kpad), dtype=np.int8)
    full[:n, :k] = stored
    panels = np.ascontiguousarray(full.reshape(npad // NR, NR, kpad // KGROUP, KGROUP).transpose(0, 2, 1, 3))
    stored_colsum = np.zeros(npad, dtype=np.int64)
    stored_colsum[:n] = colsum + np.int64(shift) * k
    return VnniB(panels.reshape(-1), stored_colsum, shift, n, kpad)


def prepare(a, b: VnniB, a_zp, b_zp):
    """A for the kernels on ``VnniB`` panels: uint8 rows padded to ``b.kpad`` (int8 A stored as
    a + 128, its zero points + 128), A's int64 row sums and the (shifted) zero points. The row
    sums are only multiplied by B's (shifted) zero points: where those are all 0 (symmetric int8
    weights) an A that needs no copy is not read here at all."""
    m, k = a.shape
    rowsum = np.empty(m, dtype=np.int64)
    flip = 0x80 if a.dtype == np.int8 else 0
    if flip:
        a_zp = a_zp + 128
    if not flip and k == b.kpad and a.flags.c_contiguous:
        a_u8 = a            # already uint8 rows of the padded width: only the row sums
        if b.shift == 0 and not np.any(b_zp):
            rowsum[:] = 0
        else:
            _row_sums(a, rowsum)
    else:
        a_u8 = np.empty((m, b.kpad), dtype=np.uint8)
        _pad_rows(a.view(np.uint8), flip, a_u8, rowsum)
    return a_u8, rowsum, a_zp


def zero_point_terms(b, k: int, rowsum, a_zp, b_zp, shift: int = 0) -> tuple:
    """(rowsum, colterm, a_zp, b_zp) as the panel kernels' fold takes them: B's column term
    ``colsum - K * b_zp`` and b_zp (+ ``shift``) padded to ``b.npad``, all reduced to int32 --
    the fold works modulo 2**32 like the int32 result.  For B's zero points all 0 and no shift
    (symmetric int8 weights) B's terms are the column sums, kept with the packed B."""
    if shift == 0 and not np.count_nonzero(b_zp):   # (np.any is ~3x slower on int64)
        if b.zero_terms is None:
            b.zero_terms = (b.colsum.astype(np.int32), np.zeros(b.npad, dtype=np.int32))
        colterm32, bzp32 = b.zero_terms
    else:
        bzp = np.zeros(b.npad, dtype=np.int64)
        bzp[: b.n] = b_zp + shift
        colterm32 = (b.colsum - np.int64(k) * bzp).astype(np.int32)
        bzp32 = bzp.astype(np.int32)
    return rowsum.astype(np.int32), colterm32, np.asarray(a_zp).astype(np.int32), bzp32


def run_panels(kernel, kernel_f32, a_op, m: int, b, n_panels: int, steps: int, terms: tuple,
               epilogue=None) -> np.ndarray:
    """Call a panel kernel pair (int32 result, or ``*_f32`` with ``epilogue=(scale, bias)``)
    on prepared operands and return C [M, N]: the driver every packed-panel kernel shares."""
    # the ``*_f32`` kernels keep each panel's int32 sums in a scratch of their own
    c = np.empty(m * b.npad if epilogue is None else 0, dtype=np.int32)
    args = (a_op.reshape(-1), b.kpad, m, b.panels, n_panels, steps) + terms + (c, b.npad)
    if epilogue is None:
        kernel(*args)
        return finish(c, m, b)
    scale, bias = epilogue
    s, bb = epilogue_vectors(b, scale, bias)
    out = np.empty(m * b.npad, np.float32)
    kernel_f32(*args, s, bb, bias is not None, out)
    return finish(out, m, b)


@njit(cache=True)
def _pad_rows(a, flip, out, rowsum):
    """out[i, :K] = a[i, :] ^ flip, zeros up to out's width; rowsum[i] = sum of out[i].
    (One thread: waking the pool costs more than this pass over A takes.)  With flip 0 and an
    int16 ``out``: A widened to int16 rows (``widen_rows``, the AVX2 kernel's operand)."""
    m, k = a.shape
    width = out.shape[1]
    for i in range(m):
        s = 0
        for j in range(k):
            v = a[i, j] ^ flip
            out[i, j] = v
            s += v
        for j in range(k, width):
            out[i, j] = 0
        rowsum[i] = s


def widen_rows(a, out, rowsum) -> None:
    """out[i, :K] = a[i, :] (uint8 or int8 into a wider integer type), zeros up to out's width;
    rowsum[i] = sum of a[i]."""
    _pad_rows(a, 0, out, rowsum)


@njit(cache=True)
def _row_sums(a, rowsum):
    for i in range(a.shape[0]):
        s = 0
        for j in range(a.shape[1]):
            s += a[i, j]
        rowsum[i] = s


def finish(c, m: int, b: VnniB) -> np.ndarray:
    c = c.reshape(m, b.npad)
    return c if b.npad == b.n else np.ascontiguousarray(c[:, : b.n])


def gemm(a, b: VnniB, a_zp, b_zp, epilogue=None) -> np.ndarray:
    """C [M, N] int32 = (a - a_zp) @ (B - b_zp) for a uint8/int8 [M, K] (K checked by the caller),
    int64 zero-point vectors a_zp [M] and b_zp [N].  int8 A is stored as a + 128 (its zero point
    + 128); the zero points fold both shifts back in, exactly.  With ``epilogue=(scale, bias)``:
    float32 C = float32(product) * scale (+ bias), the epilogue of ``kernels.scale_bias_int32``
    bit for bit, applied per panel while it is in cache."""
    a_u8, rowsum, a_zp = prepare(a, b, a_zp, b_zp)
    terms = zero_point_terms(b, a.shape[1], rowsum, a_zp, b_zp, b.shift)
    return run_panels(gemm_u8s8_vnni, gemm_u8s8_vnni_f32, a_u8, a.shape[0], b, b.npad // NR,
                      b.kpad // KGROUP, terms, epilogue)


@njit(cache=True)
def tile_rows(a_u8, i, m, lda, bp, b_off, groups, c, ldc, j0):
    """Rows i..m-1 of one 32-column panel with the 8-, 4-, 2- and 1-row tiles."""
    while i + 8 <= m:
        _tile8(a_u8, i * lda, lda, bp, b_off, groups, c, i * ldc + j0, ldc)
        i += 8
    if i + 4 <= m:
        _tile4(a_u8, i * lda, lda, bp, b_off, groups, c, i * ldc + j0, ldc)
        i += 4
    if i + 2 <= m:
        _tile2(a_u8, i * lda, lda, bp, b_off, groups, c, i * ldc + j0, ldc)
        i += 2
    if i < m:
        _tile1(a_u8, i * lda, lda, bp, b_off, groups, c, i * ldc + j0, ldc)


@njit(cache=True)
def fold_zero_points(c, m, ldc, j0, rowsum, colterm, a_zp, b_zp, width=NR):
    """c[i, j] -= b_zp[j]*rowsum[i] + a_zp[i]*colterm[j] on one panel's ``width`` columns, all int32.

    The result is exact modulo 2**32 (which is all an int32 result holds), so the terms need no
    64-bit products: int32 multiplies vectorize (``vpmulld``), int64 ones did not here."""
    bz = b_zp[j0:j0 + width]
    ct = colterm[j0:j0 + width]
    for r in range(m):
        rs = rowsum[r]
        az = a_zp[r]
        row = c[r * ldc + j0:r * ldc + j0 + width]
        for j in range(width):
            row[j] = row[j] - bz[j] * rs - az * ct[j]


@njit(cache=True)
def fold_and_scale(c, ldc, m, j0, rowsum, colterm, a_zp, b_zp, scale, bias, has_bias, out, ldo, width=NR):
    """``fold_zero_points`` and then out[i, j0 + j] = float32(c[i, j]) * scale[j0 + j] (+ bias)
    for one panel of ``width`` columns, in one pass while it is in cache: c is the panel's int32
    scratch (rows ldc apart), out the float32 result (rows ldo apart). The int32 value is the
    folded one, the float steps those of ``kernels.scale_bias_int32`` (two roundings, no fused
    multiply-add)."""
    bz = b_zp[j0:j0 + width]
    ct = colterm[j0:j0 + width]
    s = scale[j0:j0 + width]
    b = bias[j0:j0 + width]
    for r in range(m):
        rs = rowsum[r]
        az = a_zp[r]
        row = c[r * ldc:r * ldc + width]
        dst = out[r * ldo + j0:r * ldo + j0 + width]
        if has_bias:
            for j in range(width):
                v = np.float32(np.int32(row[j] - bz[j] * rs - az * ct[j])) * s[j]
                dst[j] = v + b[j]
        else:
            for j in range(width):
                dst[j] = np.float32(np.int32(row[j] - bz[j] * rs - az * ct[j])) * s[j]


def epilogue_vectors(b: VnniB, scale, bias):
    """scale and bias (one element or one per column) as float32 vectors of the panel width."""
    def vector(v):
        out = np.zeros(b.npad, np.float32)
        if v is not None:
            out[: b.n] = np.asarray(v, np.float32).reshape(-1)   # one element broadcasts
        return out

    return vector(scale), vector(bias)


@njit(cache=True, parallel=True)
def gemm_u8s8_vnni_f32(a_u8, lda, m, bp, n_panels, groups, rowsum, colterm, a_zp, b_zp, c, ldc,
                       scale, bias, has_bias, out):
    """``gemm_u8s8_vnni`` with ``fold_and_scale`` as each panel's epilogue, into ``out`` (rows
    ldc apart): each task's int32 panel lives in a scratch of its own (``c`` is not used)."""
    panel = groups * NR * KGROUP
    for jp in prange(n_panels):
        scratch = np.empty(m * NR, dtype=np.int32)
        tile_rows(a_u8, 0, m, lda, bp, jp * panel, groups, scratch, NR, 0)
        fold_and_scale(scratch, NR, m, jp * NR, rowsum, colterm, a_zp, b_zp, scale, bias, has_bias, out, ldc)


@njit(cache=True, parallel=True)
def gemm_u8s8_vnni(a_u8, lda, m, bp, n_panels, groups, rowsum, colterm, a_zp, b_zp, c, ldc):
    """c[i, j] = sum_k a[i,k]*b[k,j] - b_zp[j]*rowsum[i] - a_zp[i]*colterm[j]  for j < ldc, int32
    (rowsum, colterm and the zero points reduced to int32, see ``prepare``).

    a_u8: uint8 1-D, M rows of length lda (K padded to 4); bp: packed panels; c: int32 1-D [M*ldc]
    with ldc = 32 * n_panels.  One parallel task per B panel (32 columns); row tiles of 8, then
    4, 2, 1 for the rest, so no row of A is padded.
    """
    panel = groups * NR * KGROUP
    for jp in prange(n_panels):
        tile_rows(a_u8, 0, m, lda, bp, jp * panel, groups, c, ldc, jp * NR)
        fold_zero_points(c, m, ldc, jp * NR, rowsum, colterm, a_zp, b_zp)


def _instructions(names=("vpdpbusd", "vpdpbusds", "vpmaddwd", "vpmulld")) -> dict:
    """Count selected instructions in a fresh (uncached) compile of ``gemm_u8s8_vnni``."""
    import re

    fresh = njit(cache=False, parallel=True)(gemm_u8s8_vnni.py_func)
    u1, s1, i1, n = types.uint8[::1], types.int8[::1], types.int32[::1], types.int64
    fresh.compile((u1, n, n, s1, n, n, i1, i1, i1, i1, i1, n))
    asm = "\n".join(fresh.inspect_asm().values())
    return {name: len(re.findall(rf"\b{name}\b", asm)) for name in names}
