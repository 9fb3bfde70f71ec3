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
        b[v] = 16 int16 of packed B              # 8 columns x 2 k, for v in 0..2 (24 columns)
        for r in range(MR):                      # MR = 4, 2 or 1 rows
            a  = broadcast(A[r, 2p : 2p+2])      # 2 int16 of row r, copied to all 8 lanes
            acc[r][v] += vpmaddwd(a, b[v])
    store acc                                    # MR x 24 int32

4 rows x 3 vectors = 12 accumulators, plus 3 B vectors and the broadcast: 16 ymm registers.

Packing (``pack_b``): B [K, N] becomes int16 panels ``[N/24][Kp/2][24][2]`` (K padded to even, N
to a multiple of 24): for each pair of k, the two values of a column side by side -- the operand
layout of ``vpmaddwd``.  A is widened to int16 rows per call.  Zero points are folded in per
panel exactly as in ``vnni.py`` (``fold_zero_points``), and an ``epilogue`` adds the float
epilogue of ``vnni.fold_and_scale``; ``vnni.run_panels`` drives both.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import irgen, vnni

__all__ = ["available", "Avx2B", "pack_b", "gemm", "NR"]

_NV = 3
NR = 8 * _NV  # columns per B panel
_I16X16 = ir.VectorType(ir.IntType(16), 16)
_I32X8 = ir.VectorType(ir.IntType(32), 8)

def available() -> bool:
    """True when this CPU has AVX2 and Numba compiles for it (or for a named AVX2 CPU):
    ``cpu.runnable_int8_kernels``."""
    from .cpu import runnable_int8_kernels

    return "avx2" in runnable_int8_kernels()


def _tile_intrinsic(mr: int):
    """A Numba intrinsic computing one MR x 24 int32 tile:

    tile(a, a_off, lda, bp, b_off, pairs, c, c_off, ldc)
        c[c_off + r*ldc + j] = sum_p sum_t a[a_off + r*lda + 2p + t] * bp[b_off + (p*24 + j)*2 + t]

    a: int16 1-D (rows of A, K padded to even); bp: int16 1-D (one packed panel starts at b_off);
    c: int32 1-D.  The caller guarantees every index is in bounds.
    """

    @intrinsic
    def tile(typingctx, a, a_off, lda, bp, b_off, pairs, c, c_off, ldc):
        sig = types.void(a, types.intp, types.intp, bp, types.intp, types.intp, c, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            lda_v, pairs_v, ldc_v = args[2], args[5], args[8]
            # int16*, int16*, int32*
            a_base, b_base, c_base = irgen.element_pointers(context, builder, signature, args, (0, 3, 6))
            madd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_I32X8, [_I16X16, _I16X16]), "llvm.x86.avx2.pmadd.wd")
            zero = ir.Constant(_I32X8, None)
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(_NV)] for _ in range(mr)]
            rows = [builder.gep(a_base, [builder.mul(lda_v, ir.Constant(lda_v.type, r))]) for r in range(mr)]
            lane0 = ir.Constant(_I32X8, [0] * 8)
            with cgutils.for_range(builder, pairs_v) as loop:
                p = loop.index
                b_pair = builder.gep(b_base, [builder.mul(p, ir.Constant(p.type, NR * 2))])
                b_vecs = [builder.load(builder.bitcast(builder.gep(b_pair, [ir.Constant(p.type, 16 * v)]),
                                                       _I16X16.as_pointer()), align=2)
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
            irgen.store_tile(builder, c_base, ldc_v, accs)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile4 = _tile_intrinsic(4)
_tile2 = _tile_intrinsic(2)
_tile1 = _tile_intrinsic(1)


class Avx2B:
    """B packed for ``gemm``: ``panels`` (int16, see ``pack_b``), ``colsum`` (int64 column sums,
    zero-padded to ``npad`` = N rounded up to 24), ``kpad`` (K rounded up to even)."""

    __slots__ = ("panels", "colsum", "n", "npad", "kpad", "zero_terms")

    def __init__(self, panels, colsum, n, kpad):
        self.panels, self.colsum, self.n, self.kpad = panels, colsum, n, kpad
        self.npad = colsum.shape[0]
        self.zero_terms = None   # see vnni.zero_point_terms


def pack_b(bt, colsum) -> Avx2B:
    """B^T [N, K] (uint8 or int8) and its int64 column sums -> ``Avx2B``: int16 panels
    ``[ceil(N/24)][Kp/2][24][2]``, zero padded."""
    n, k = bt.shape
    npad, kpad = -(-n // NR) * NR, max(2, k + (k & 1))
    full = np.zeros((npad, kpad), dtype=np.int16)
    full[:n, :k] = bt
    panels = np.ascontiguousarray(full.reshape(npad // NR, NR, kpad // 2, 2).transpose(0, 2, 1, 3))
    padded = np.zeros(npad, dtype=np.int64)
    padded[:n] = colsum
    return Avx2B(panels.reshape(-1), padded, n, kpad)


def gemm(a, b: Avx2B, a_zp, b_zp, epilogue=None) -> np.ndarray:
    """C [M, N] int32 = (a - a_zp) @ (B - b_zp) for a uint8/int8 [M, K] (K checked by the
    caller) and int64 zero-point vectors a_zp [M], b_zp [N]; ``epilogue`` as in ``vnni.gemm``."""
    m, k = a.shape
    a16 = np.zeros((m, b.kpad), dtype=np.int16)
    a16[:, :k] = a
    terms = vnni.zero_point_terms(b, k, a.sum(axis=1, dtype=np.int64), a_zp, b_zp)
    return vnni.run_panels(gemm_s16_avx2, gemm_s16_avx2_f32, a16, m, b, b.npad // NR, b.kpad // 2,
                           terms, epilogue)


@njit(cache=True)
def _panel(a16, lda, m, bp, b_off, pairs, c, ldc, j0):
    """One 24-column panel of C with the 4-, 2- and 1-row tiles."""
    i = 0
    while i + 4 <= m:
        _tile4(a16, i * lda, lda, bp, b_off, pairs, c, i * ldc + j0, ldc)
        i += 4
    if i + 2 <= m:
        _tile2(a16, i * lda, lda, bp, b_off, pairs, c, i * ldc + j0, ldc)
        i += 2
    if i < m:
        _tile1(a16, i * lda, lda, bp, b_off, pairs, c, i * ldc + j0, ldc)


@njit(cache=True, parallel=True)
def gemm_s16_avx2(a16, lda, m, bp, n_panels, pairs, rowsum, colterm, a_zp, b_zp, c, ldc):
    """c[i, j] = sum_k a[i,k]*b[k,j] - b_zp[j]*rowsum[i] - a_zp[i]*colterm[j] for j < ldc (int32;
    one parallel task per 24-column panel)."""
    panel = pairs * NR * 2
    for jp in prange(n_panels):
        _panel(a16, lda, m, bp, jp * panel, pairs, c, ldc, jp * NR)
        vnni.fold_zero_points(c, m, ldc, jp * NR, rowsum, colterm, a_zp, b_zp, NR)


@njit(cache=True, parallel=True)
def gemm_s16_avx2_f32(a16, lda, m, bp, n_panels, pairs, rowsum, colterm, a_zp, b_zp, c, ldc,
                      scale, bias, has_bias, out):
    """``gemm_s16_avx2`` with ``vnni.fold_and_scale`` as each panel's epilogue, into ``out``
    (rows ldc apart; each task's int32 panel in a scratch of its own, ``c`` not used)."""
    panel = pairs * NR * 2
    for jp in prange(n_panels):
        scratch = np.empty(m * NR, dtype=np.int32)
        _panel(a16, lda, m, bp, jp * panel, pairs, scratch, NR, 0)
        vnni.fold_and_scale(scratch, NR, m, jp * NR, rowsum, colterm, a_zp, b_zp, scale, bias, has_bias,
                            out, ldc, NR)


def _instructions(names=("vpmaddwd", "vpdpwssd", "vpmulld", "vpdpbusd")) -> dict:
    """Count selected instructions in a fresh (uncached) compile of ``gemm_s16_avx2``, and the
    ymm destinations of ``vpmaddwd``."""
    import re

    fresh = njit(cache=False, parallel=True)(gemm_s16_avx2.py_func)
    s1, i1, o1, n = types.int16[::1], types.int32[::1], types.int32[::1], types.int64
    fresh.compile((s1, n, n, s1, n, n, i1, i1, i1, i1, o1, n))
    asm = "\n".join(fresh.inspect_asm().values())
    counts = {name: len(re.findall(rf"\b{name}\b", asm)) for name in names}
    counts["vpmaddwd ymm"] = len(re.findall(r"\bvpmaddwd\b[^\n]*%ymm", asm))
    return counts
