"""The AVX2 int8 GEMM: int16 pair products with ``vpmaddwd`` in register tiles, written as LLVM IR.

For CPUs with AVX2 but no AVX512-VNNI (Haswell to Comet Lake, Zen 1-3).  ``vpmaddwd`` multiplies
16 pairs of int16 and adds each pair of products into one of 8 int32 lanes:

    acc[j] += a[2p] * b[2p, j] + a[2p+1] * b[2p+1, j]        (exact: |product| < 2^15 * 2^8)

Every uint8 and int8 value fits int16, so any (u8/s8 x u8/s8) pair is multiplied exactly as it
is, with no shifts.  (onnxruntime's default AVX2 path uses ``vpmaddubsw`` on the bytes instead,
which saturates pairs in int16; ``gemm.gemm_u8s8_avx2_saturating`` reproduces that.)

The loop vectorizer turns ``gemm.py``'s portable dot product into ``vpmaddwd`` too, but with one
output per reduction it reloads both operands for every multiply and ends each dot product with
a horizontal sum.  The tile here keeps a block of C in registers instead:

    for p in range(K / 2):                       # one pair of k
        b[v] = widen(16 bytes of packed B)       # 8 columns x 2 k, for v in 0..1 (16 columns)
        for r in range(MR):                      # MR = 6, 4, 2 or 1 rows
            a  = broadcast(A[r, 2p : 2p+2])      # 2 int16 of row r, copied to all 8 lanes
            acc[r][v] += vpmaddwd(a, b[v])
    store acc                                    # MR x 16 int32

6 rows x 2 vectors = 12 accumulators, plus 2 B vectors, the broadcast and the product before
it is added: all 16 ymm registers and no more.  (A 4 x 24 tile needs 17: LLVM then spilled
accumulators to the stack inside the loop and the kernel ran at ~65 % of this one.)  Each
tile's loop is a function of its own that LLVM neither inlines nor unrolls
(``irgen.outlined``, ``irgen.loop_not_unrolled``): inlined into the panel loop, or unrolled,
its additions were reassociated across iterations and accumulators spilled again.

Packing (``pack_b``): B [K, N] keeps its bytes (uint8 or int8) in panels ``[N/16][Kp/2][16][2]``
(K padded to even, N to a multiple of 16): for each pair of k, the two values of a column side
by side -- the operand layout of ``vpmaddwd`` once each byte is widened (``vpmovsxbw`` or
``vpmovzxbw`` as it is loaded), half the memory traffic of int16 panels.  K is walked in blocks
of ``KC`` so that one block of a panel (512 k x 16 columns: 8 KiB of bytes) stays in L1 while
every row tile passes over it; the tiles of a later block add to C.  A is widened to
int16 rows per call.  Zero points are folded in per panel exactly as in ``vnni.py``
(``fold_zero_points``), and an ``epilogue`` adds the float epilogue of ``vnni.fold_and_scale``;
``vnni.run_panels`` drives both.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import irgen, vnni

__all__ = ["available", "Avx2B", "pack_b", "gemm", "NR", "KC"]

_NV = 2
NR = 8 * _NV  # columns per B panel
KC = 512      # k per block of a panel (even)
_I16X16 = ir.VectorType(ir.IntType(16), 16)
_I8X16 = ir.VectorType(ir.IntType(8), 16)
_I32X8 = ir.VectorType(ir.IntType(32), 8)

def available() -> bool:
    """True when this CPU has AVX2 and Numba compiles for it (or for a named AVX2 CPU):
    ``cpu.runnable_int8_kernels``."""
    from .cpu import runnable_int8_kernels

    return "avx2" in runnable_int8_kernels()


def _tile_intrinsic(mr: int, accumulate: bool):
    """A Numba intrinsic computing one MR x 16 int32 tile:

    tile(a, a_off, lda, bp, b_off, pairs, c, c_off, ldc)
        c[c_off + r*ldc + j] (+)= sum_p sum_t a[a_off + r*lda + 2p + t] * bp[b_off + (p*16 + j)*2 + t]

    a: int16 1-D (rows of A, K padded to even); bp: uint8 or int8 1-D (one packed panel block
    starts at b_off), widened as loaded; c: int32 1-D, stored to (``accumulate=False``) or added
    to (``accumulate=True``).  The caller guarantees every index is in bounds.
    """

    def body(builder, a_base, lda_v, b_base, pairs_v, c_base, ldc_v, signed):
        madd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I32X8, [_I16X16, _I16X16]), "llvm.x86.avx2.pmadd.wd")
        zero = ir.Constant(_I32X8, None)
        accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(_NV)] for _ in range(mr)]
        rows = [builder.gep(a_base, [builder.mul(lda_v, ir.Constant(lda_v.type, r))]) for r in range(mr)]
        lane0 = ir.Constant(_I32X8, [0] * 8)
        widen = builder.sext if signed else builder.zext

        def step(builder, p):
            b_pair = builder.gep(b_base, [builder.mul(p, ir.Constant(p.type, NR * 2))])
            b_vecs = [widen(builder.load(builder.bitcast(builder.gep(b_pair, [ir.Constant(p.type, 16 * v)]),
                                                         _I8X16.as_pointer()), align=1), _I16X16)
                      for v in range(_NV)]
            a_pair = builder.mul(p, ir.Constant(p.type, 2))
            for r in range(mr):
                word = builder.load(builder.bitcast(builder.gep(rows[r], [a_pair]),
                                                    ir.IntType(32).as_pointer()), align=2)
                vec = builder.insert_element(ir.Constant(_I32X8, ir.Undefined), word,
                                             ir.Constant(ir.IntType(32), 0))
                bcast = builder.bitcast(builder.shuffle_vector(vec, ir.Constant(_I32X8, ir.Undefined), lane0),
                                        _I16X16)
                for v in range(_NV):
                    acc = builder.load(accs[r][v])
                    builder.store(builder.add(acc, builder.call(madd, [bcast, b_vecs[v]])), accs[r][v])

        irgen.loop_not_unrolled(builder, pairs_v, step)
        # the sums start from zero either way: accumulators loaded from C before the loop made
        # LLVM spill registers inside it
        (irgen.add_tile if accumulate else irgen.store_tile)(builder, c_base, ldc_v, accs)

    @intrinsic
    def tile(typingctx, a, a_off, lda, bp, b_off, pairs, c, c_off, ldc):
        sig = types.void(a, types.intp, types.intp, bp, types.intp, types.intp, c, types.intp, types.intp)
        signed = bp.dtype.signed

        def codegen(context, builder, signature, args):
            # int16*, int8*, int32*
            a_base, b_base, c_base = irgen.element_pointers(context, builder, signature, args, (0, 3, 6))
            name = f"refrt_avx2_tile{mr}_{'add' if accumulate else 'store'}_{'s8' if signed else 'u8'}"
            fn = irgen.outlined(builder.module, name, [a_base.type, args[2].type, b_base.type, args[5].type,
                                                       c_base.type, args[8].type],
                                lambda b, xs: body(b, *xs, signed))
            builder.call(fn, [a_base, args[2], b_base, args[5], c_base, args[8]])
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile6, _tile4, _tile2, _tile1 = (_tile_intrinsic(mr, False) for mr in (6, 4, 2, 1))
_add6, _add4, _add2, _add1 = (_tile_intrinsic(mr, True) for mr in (6, 4, 2, 1))


class Avx2B:
    """B packed for ``gemm``: ``panels`` (B's bytes, see ``pack_b``), ``colsum`` (int64 column
    sums, zero-padded to ``npad`` = N rounded up to 16), ``kpad`` (K rounded up to even)."""

    __slots__ = ("panels", "colsum", "n", "npad", "kpad", "zero_terms")

    def __init__(self, panels, colsum, n, kpad):
        self.panels, self.colsum, self.n, self.kpad = panels, colsum, n, kpad
        self.npad = colsum.shape[0]
        self.zero_terms = None   # see vnni.zero_point_terms


def pack_b(bt, colsum) -> Avx2B:
    """B^T [N, K] (uint8 or int8) and its int64 column sums -> ``Avx2B``: panels of B's bytes
    ``[ceil(N/16)][Kp/2][16][2]``, zero padded."""
    n, k = bt.shape
    npad, kpad = -(-n // NR) * NR, max(2, k + (k & 1))
    full = np.zeros((npad, kpad), dtype=bt.dtype)
    full[:n, :k] = bt
    panels = np.ascontiguousarray(full.reshape(npad // NR, NR, kpad // 2, 2).transpose(0, 2, 1, 3))
    padded = np.zeros(npad, dtype=np.int64)
    padded[:n] = colsum
    return Avx2B(panels.reshape(-1), padded, n, kpad)


def gemm(a, b: Avx2B, a_zp, b_zp, epilogue=None) -> np.ndarray:
    """C [M, N] int32 = (a - a_zp) @ (B - b_zp) for a uint8/int8 [M, K] (K checked by the
    caller) and int64 zero-point vectors a_zp [M], b_zp [N]; ``epilogue`` as in ``vnni.gemm``."""
    m, k = a.shape
    a16 = np.empty((m, b.kpad), dtype=np.int16)
    rowsum = np.empty(m, dtype=np.int64)
    vnni.widen_rows(a, a16, rowsum)
    terms = vnni.zero_point_terms(b, k, rowsum, a_zp, b_zp)
    return vnni.run_panels(gemm_s16_avx2, gemm_s16_avx2_f32, a16, m, b, b.npad // NR, b.kpad // 2,
                           terms, epilogue)


@njit(cache=True)
def _tile(rows, add, a16, a_off, lda, bp, b_off, pairs, c, c_off, ldc):
    """One tile of ``rows`` (6, 4, 2 or 1) rows: stored to C, or added to it (``add``)."""
    if rows == 6:
        if add:
            _add6(a16, a_off, lda, bp, b_off, pairs, c, c_off, ldc)
        else:
            _tile6(a16, a_off, lda, bp, b_off, pairs, c, c_off, ldc)
    elif rows == 4:
        if add:
            _add4(a16, a_off, lda, bp, b_off, pairs, c, c_off, ldc)
        else:
            _tile4(a16, a_off, lda, bp, b_off, pairs, c, c_off, ldc)
    elif rows == 2:
        if add:
            _add2(a16, a_off, lda, bp, b_off, pairs, c, c_off, ldc)
        else:
            _tile2(a16, a_off, lda, bp, b_off, pairs, c, c_off, ldc)
    elif add:
        _add1(a16, a_off, lda, bp, b_off, pairs, c, c_off, ldc)
    else:
        _tile1(a16, a_off, lda, bp, b_off, pairs, c, c_off, ldc)


@njit(cache=True)
def panel_rows(a16, lda, m, bp, b_off, pairs, c, ldc, j0):
    """One 16-column panel of C (rows ldc apart from column j0): K in blocks of ``KC``, each
    block's rows in 6-, 4-, 2- and 1-row tiles; the first block stores, the later ones add."""
    step = KC // 2
    for p0 in range(0, pairs, step):
        n_p = min(step, pairs - p0)
        boff = b_off + p0 * NR * 2
        i = 0
        while i + 6 <= m:
            _tile(6, p0 > 0, a16, i * lda + 2 * p0, lda, bp, boff, n_p, c, i * ldc + j0, ldc)
            i += 6
        for rows in (4, 2, 1):
            if i + rows <= m:
                _tile(rows, p0 > 0, a16, i * lda + 2 * p0, lda, bp, boff, n_p, c, i * ldc + j0, ldc)
                i += rows


@njit(cache=True, parallel=True)
def gemm_s16_avx2(a16, lda, m, bp, n_panels, pairs, rowsum, colterm, a_zp, b_zp, c, ldc):
    """c[i, j] = sum_k a[i,k]*b[k,j] - b_zp[j]*rowsum[i] - a_zp[i]*colterm[j] for j < ldc (int32;
    one parallel task per 16-column panel)."""
    panel = pairs * NR * 2
    for jp in prange(n_panels):
        panel_rows(a16, lda, m, bp, jp * panel, pairs, c, ldc, jp * NR)
        vnni.fold_zero_points(c, m, ldc, jp * NR, rowsum, colterm, a_zp, b_zp, NR)


@njit(cache=True, parallel=True)
def gemm_s16_avx2_f32(a16, lda, m, bp, n_panels, pairs, rowsum, colterm, a_zp, b_zp, c, ldc,
                      scale, bias, has_bias, out):
    """``gemm_s16_avx2`` with ``vnni.fold_and_scale`` as each panel's epilogue, into ``out``
    (rows ldc apart; each task's int32 panel in a scratch of its own, ``c`` not used)."""
    panel = pairs * NR * 2
    for jp in prange(n_panels):
        scratch = np.empty(m * NR, dtype=np.int32)
        panel_rows(a16, lda, m, bp, jp * panel, pairs, scratch, NR, 0)
        vnni.fold_and_scale(scratch, NR, m, jp * NR, rowsum, colterm, a_zp, b_zp, scale, bias, has_bias,
                            out, ldc, NR)


def _instructions(names=("vpmaddwd", "vpdpwssd", "vpmulld", "vpdpbusd")) -> dict:
    """Count selected instructions in a fresh (uncached) compile of ``gemm_s16_avx2``, and the
    ymm destinations of ``vpmaddwd``."""
    import re

    fresh = njit(cache=False, parallel=True)(gemm_s16_avx2.py_func)
    s1, b1, i1, o1, n = types.int16[::1], types.int8[::1], types.int32[::1], types.int32[::1], types.int64
    fresh.compile((s1, n, n, b1, n, n, i1, i1, i1, i1, o1, n))
    asm = "\n".join(fresh.inspect_asm().values())
    counts = {name: len(re.findall(rf"\b{name}\b", asm)) for name in names}
    counts["vpmaddwd ymm"] = len(re.findall(r"\bvpmaddwd\b[^\n]*%ymm", asm))
    return counts
