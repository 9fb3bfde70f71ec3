"""The AMX int8 GEMM: u8 x s8 tile products with ``tdpbusd``, written as LLVM IR.

Intel AMX (Advanced Matrix Extensions; Sapphire Rapids and later) adds eight *tile* registers of
up to 16 rows x 64 bytes and one instruction that does a small matrix product on them:

    tdpbusd  C, A, B        C: 16 x 16 int32,  A: 16 rows x 64 uint8,  B: 16 rows x (16 x 4) int8
        C[i, j] += sum over g < 16, t < 4 of  A[i, 4g + t] * B[g, 4j + t]

that is 16 x 16 x 64 = 16,384 exact byte products per instruction, against 1,024 for one
``vpdpbusd`` (``vnni.py``).  B's tile is laid out exactly like the VNNI panels: for each group of
four k, the 4 bytes of each column side by side.  So this kernel reads the same ``VnniB`` panels
(32 columns wide, K padded to 64 here) and splits each panel row of 128 bytes into two B tiles of
16 columns (stride 128 bytes).

One call of the tile routine computes 16 or 32 rows x 32 columns of C over the whole K:

    C tiles (2 or 4) = 0
    for kb in range(K / 64):
        B0, B1 = panel[kb*16 : kb*16+16, columns 0-15 / 16-31]      (tileloadd, stride 128)
        for each 16-row block r:  A_r = A[rows, kb*64 : kb*64+64]   (tileloadd, stride lda)
                                  C[r][v] += A_r . B_v              (tdpbusd)
    store the C tiles to the int32 output                          (tilestored)

LLVM's ``llvm.x86.*.internal`` intrinsics take the tile shapes as operands; the backend allocates
the tile registers, writes the tile configuration (``ldtilecfg``) before the first tile
instruction and releases the tiles (``tilerelease``) on the way out.  Numba has no type for a
tile register, so the LLVM type ``x86_amx`` is named here directly.

Rows that do not fill a 16-row tile run on the VNNI tiles, and the zero points are folded in
exactly as in ``vnni.py`` (same ``prepare``/``fold_zero_points``), so every (u8/s8 x u8/s8) pair
is exact and gives the same numbers as the other kernels.

Linux hands out AMX tile state only to processes that ask for it (``arch_prctl`` with
``ARCH_REQ_XCOMP_PERM``); ``available()`` asks once, and says no if the kernel refuses, the CPU
lacks ``amx-tile``/``amx-int8``, or Numba compiles for a CPU other than this one.
"""

from __future__ import annotations

import platform
import sys

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import irgen, vnni

__all__ = ["available", "gemm", "K_ALIGN", "MIN_ROWS"]

K_ALIGN = 64    # bytes of K per A tile row: K is zero-padded to a multiple of this
MIN_ROWS = 16   # rows of one A tile; fewer rows than this run on the VNNI tiles only
_NR, _KG = vnni.NR, vnni.KGROUP


class _TileType(ir.Type):
    """LLVM's ``x86_amx``: a value held in an AMX tile register."""

    def _to_string(self):
        return "x86_amx"

    def __eq__(self, other):
        return isinstance(other, _TileType)

    def __hash__(self):
        return hash("x86_amx")


_TILE = _TileType()
_I16, _I64, _I8P = ir.IntType(16), ir.IntType(64), ir.IntType(8).as_pointer()

_PERMISSION = None


def tile_permission() -> bool:
    """Ask Linux for the AMX tile-data state (once per process)."""
    global _PERMISSION
    if _PERMISSION is None:
        _PERMISSION = False
        if sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64"):
            import ctypes

            sys_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata = 158, 0x1023, 18
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                _PERMISSION = libc.syscall(sys_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0
            except (OSError, AttributeError):
                _PERMISSION = False
    return _PERMISSION


def available() -> bool:
    """True when this process can run the AMX kernel (``cpu.runnable_int8_kernels``): Numba
    compiles for this host CPU, the CPU has AMX-INT8 and AVX512-VNNI, and the OS granted the tile
    state."""
    from .cpu import runnable_int8_kernels

    return "amx" in runnable_int8_kernels()


def _tile_intrinsic(row_tiles: int):
    """A Numba intrinsic computing ``16 * row_tiles`` rows x 32 columns of int32 C:

    tile(a, a_off, lda, bp, b_off, kblocks, c, c_off, ldc)
        c[c_off + r*ldc + j] = sum_k a[a_off + r*lda + k] * B[k, j]   over k < 64 * kblocks

    a: uint8 1-D (rows of A, K padded to 64); bp: int8 1-D ``VnniB`` panels (one panel starts at
    b_off); c: int32 1-D.  kblocks >= 1; the caller guarantees every index is in bounds.
    """

    @intrinsic
    def tile(typingctx, a, a_off, lda, bp, b_off, kblocks, c, c_off, ldc):
        sig = types.void(a, types.intp, types.intp, bp, types.intp, types.intp, c, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            lda_v, kblocks_v, ldc_v = args[2], args[5], args[8]
            a_base, b_base, c_elem = irgen.element_pointers(context, builder, signature, args, (0, 3, 6))
            c_base = builder.bitcast(c_elem, _I8P)
            mod = builder.module
            load = cgutils.get_or_insert_function(
                mod, ir.FunctionType(_TILE, [_I16, _I16, _I8P, _I64]), "llvm.x86.tileloadd64.internal")
            dot = cgutils.get_or_insert_function(
                mod, ir.FunctionType(_TILE, [_I16, _I16, _I16, _TILE, _TILE, _TILE]), "llvm.x86.tdpbusd.internal")
            store = cgutils.get_or_insert_function(
                mod, ir.FunctionType(ir.VoidType(), [_I16, _I16, _I8P, _I64, _TILE]), "llvm.x86.tilestored64.internal")
            zero = cgutils.get_or_insert_function(
                mod, ir.FunctionType(_TILE, [_I16, _I16]), "llvm.x86.tilezero.internal")
            rows, width = ir.Constant(_I16, 16), ir.Constant(_I16, 64)   # every tile: 16 x 64 bytes

            def const(v):
                return ir.Constant(_I64, v)

            start = [[builder.call(zero, [rows, width]) for _ in range(2)] for _ in range(row_tiles)]
            entry = builder.block
            loop = builder.append_basic_block("amx.k")
            done = builder.append_basic_block("amx.store")
            builder.branch(loop)

            builder.position_at_end(loop)
            kb = builder.phi(_I64)
            kb.add_incoming(const(0), entry)
            acc = [[builder.phi(_TILE) for _ in range(2)] for _ in range(row_tiles)]
            for r in range(row_tiles):
                for v in range(2):
                    acc[r][v].add_incoming(start[r][v], entry)
            # 16 groups of 4 k of this panel: 16 rows of 128 bytes; columns 0-15 then 16-31
            b_k = builder.gep(b_base, [builder.mul(kb, const(16 * _NR * _KG))])
            b_tiles = [builder.call(load, [rows, width, builder.gep(b_k, [const(64 * v)]), const(_NR * _KG)])
                       for v in range(2)]
            a_k = builder.gep(a_base, [builder.mul(kb, const(K_ALIGN))])
            new = []
            for r in range(row_tiles):
                a_r = builder.gep(a_k, [builder.mul(lda_v, const(16 * r))])
                a_tile = builder.call(load, [rows, width, a_r, lda_v])
                new.append([builder.call(dot, [rows, width, width, acc[r][v], a_tile, b_tiles[v]])
                            for v in range(2)])
            kb_next = builder.add(kb, const(1))
            kb.add_incoming(kb_next, loop)
            for r in range(row_tiles):
                for v in range(2):
                    acc[r][v].add_incoming(new[r][v], loop)
            builder.cbranch(builder.icmp_signed("<", kb_next, kblocks_v), loop, done)

            builder.position_at_end(done)
            stride = builder.mul(ldc_v, const(4))   # bytes per row of C
            for r in range(row_tiles):
                c_r = builder.gep(c_base, [builder.mul(stride, const(16 * r))])
                for v in range(2):
                    builder.call(store, [rows, width, builder.gep(c_r, [const(64 * v)]), stride, new[r][v]])
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile32 = _tile_intrinsic(2)
_tile16 = _tile_intrinsic(1)


def gemm(a, b: vnni.VnniB, a_zp, b_zp, epilogue=None) -> np.ndarray:
    """C [M, N] = (a - a_zp) @ (B - b_zp), like ``vnni.gemm`` (``epilogue`` too); B's panels must
    have K padded to a multiple of 64 (``vnni.pack_b(..., k_align=K_ALIGN)``)."""
    if b.kpad % K_ALIGN:
        raise ValueError(f"the AMX kernel needs B packed with K padded to a multiple of {K_ALIGN}")
    a_u8, rowsum, a_zp = vnni.prepare(a, b, a_zp, b_zp)
    terms = vnni.zero_point_terms(b, a.shape[1], rowsum, a_zp, b_zp, b.shift)
    return vnni.run_panels(gemm_u8s8_amx, gemm_u8s8_amx_f32, a_u8, a.shape[0], b, b.npad // _NR,
                           b.kpad // _KG, terms, epilogue)


@njit(cache=True)
def _panel(a_u8, lda, m, bp, b_off, groups, c, ldc, j0, n_panels):
    """One 32-column panel of C: AMX tiles over 32 and then 16 rows, VNNI tiles for the rest.
    Before each 32-row tile a share of the next panel of B (if any) is prefetched: the tiles
    compute faster than B streams in from memory, and the hardware prefetcher does not cross
    into the next panel by itself early enough (measured 6-13 % on BERT's 72 GEMMs)."""
    kblocks = groups // (K_ALIGN // _KG)
    size = groups * _NR * _KG
    nxt = b_off + size
    share = size // max(1, m // 32) + 64
    i = 0
    while i + 32 <= m:
        if nxt < n_panels * size:
            irgen.prefetch_bytes(bp, nxt, min(share, n_panels * size - nxt))
            nxt += share
        _tile32(a_u8, i * lda, lda, bp, b_off, kblocks, c, i * ldc + j0, ldc)
        i += 32
    if i + 16 <= m:
        _tile16(a_u8, i * lda, lda, bp, b_off, kblocks, c, i * ldc + j0, ldc)
        i += 16
    vnni.tile_rows(a_u8, i, m, lda, bp, b_off, groups, c, ldc, j0)


@njit(cache=True, parallel=True)
def gemm_u8s8_amx_f32(a_u8, lda, m, bp, n_panels, groups, rowsum, colterm, a_zp, b_zp, c, ldc,
                      scale, bias, has_bias, out):
    """``gemm_u8s8_amx`` with ``vnni.fold_and_scale`` as each panel's epilogue, into ``out``
    (rows ldc apart; each task's int32 panel in a scratch of its own, ``c`` not used)."""
    panel = groups * _NR * _KG
    for jp in prange(n_panels):
        scratch = np.empty(m * _NR, dtype=np.int32)
        _panel(a_u8, lda, m, bp, jp * panel, groups, scratch, _NR, 0, n_panels)
        vnni.fold_and_scale(scratch, _NR, m, jp * _NR, rowsum, colterm, a_zp, b_zp, scale, bias, has_bias,
                            out, ldc)


@njit(cache=True, parallel=True)
def gemm_u8s8_amx(a_u8, lda, m, bp, n_panels, groups, rowsum, colterm, a_zp, b_zp, c, ldc):
    """``vnni.gemm_u8s8_vnni``'s contract (lda and groups from K padded to 64): one parallel task
    per 32-column panel; AMX tiles over 32 and then 16 rows, VNNI tiles for the last < 16 rows."""
    panel = groups * _NR * _KG
    for jp in prange(n_panels):
        _panel(a_u8, lda, m, bp, jp * panel, groups, c, ldc, jp * _NR, n_panels)
        vnni.fold_zero_points(c, m, ldc, jp * _NR, rowsum, colterm, a_zp, b_zp)


def _instructions(names=("tdpbusd", "tileloadd", "tilestored", "ldtilecfg", "tilerelease", "vpdpbusd")) -> dict:
    """Count selected instructions in a fresh (uncached) compile of ``gemm_u8s8_amx``."""
    import re

    fresh = njit(cache=False, parallel=True)(gemm_u8s8_amx.py_func)
    u1, s1, i1, n = types.uint8[::1], types.int8[::1], types.int32[::1], types.int64
    fresh.compile((u1, n, n, s1, n, n, i1, i1, i1, i1, i1, n))
    asm = "\n".join(fresh.inspect_asm().values())
    return {name: len(re.findall(rf"\b{name}\b", asm)) for name in names}
