"""Blockwise int8 GEMM with per-block scales: the int8 compute path of MatMulNBits.

    dot[m, n, blk] = sum_{k in blk} a[m, k] * b[n, k]                     (exact int32)
    y[m, n]        = sum_blk float32(dot[m, n, blk]) * (a_scale[m, blk] * b_scale[n, blk])

K is cut into blocks of ``block_size`` consecutive values (the last one zero-padded). A holds
int8 codes (A quantized per block, one scale per row and block); B holds the weights as small
signed integers (4-bit or 8-bit codes minus their zero points, so int16) stored transposed,
one row per output column, with one scale per column and block. The float32 epilogue runs in a
fixed order: the block terms are added left to right into a float32 sum starting at 0, each
term being ``float32(dot) * float32(a_scale * b_scale)`` (two roundings, no fused multiply-add).

How the kernel is organised (as ``gemm.py``):

* Operands are widened to int16 and K padded to whole blocks once (``pack_blockwise_b`` for a
  constant B); a block's dot product is one int16 x int16 loop with a single explicit
  ``np.int32`` accumulator, which LLVM turns into ``vpmaddwd``.
* Work is split into independent (row block x column block) tasks run with ``prange``; inside a
  task the column loop is outside the row loop, so the task's A rows stay in L1 while B columns
  stream past them.

Integer overflow: a block sum wraps modulo 2**32 like an int32 accumulator; with int8 A and
|B| <= 255 a wrap needs blocks longer than 65,000 values.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["BlockwiseB", "pack_blockwise_b", "blockwise_matmul_int8"]

_COL_BLOCK = 64            # columns of B per parallel task
_L1_BUDGET = 24 * 1024     # bytes of A rows kept hot in L1 while B columns stream past them


class BlockwiseB:
    """B [N, K] prepared for ``blockwise_matmul_int8``: ``data`` int16 [N, blocks * block_size]
    (K zero-padded to whole blocks), ``k`` the true K, ``block_size``."""

    __slots__ = ("data", "k", "block_size")

    def __init__(self, data, k, block_size):
        self.data = data
        self.k = k
        self.block_size = block_size

    @property
    def shape(self):
        return (self.data.shape[0], self.k)

    def __repr__(self):
        return f"BlockwiseB(shape={self.shape}, block_size={self.block_size})"


def _blocks(k: int, block_size: int) -> int:
    return -(-k // block_size)


def _widen_padded(x, block_size: int) -> np.ndarray:
    """[R, K] integers -> int16 [R, blocks * block_size], zero-padded along K."""
    r, k = x.shape
    out = np.zeros((r, _blocks(k, block_size) * block_size), dtype=np.int16)
    out[:, :k] = x
    return out


def _check_block_size(block_size) -> int:
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    return int(block_size)


def pack_blockwise_b(b, block_size) -> BlockwiseB:
    """B [N, K] (int8, uint8 or int16 values within int16) -> ``BlockwiseB``, packed once."""
    if isinstance(b, BlockwiseB):
        return b
    block_size = _check_block_size(block_size)
    b = np.asarray(b)
    if b.ndim != 2:
        raise ValueError(f"b must be 2-D [N, K], got shape {b.shape}")
    if b.dtype not in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)):
        raise TypeError(f"b must be int8, uint8 or int16, got {b.dtype}")
    return BlockwiseB(_widen_padded(b, block_size), b.shape[1], block_size)


@njit(cache=True, parallel=True)
def _blockwise_kernel(a16, a_scale, b16, b_scale, block_size, out, row_block):
    """out[i, j] = sum_blk float32(dot(i, j, blk)) * (a_scale[i, blk] * b_scale[j, blk]), blocks
    added in order into a float32 sum; dot(i, j, blk) = int32 sum of a16[i, k] * b16[j, k] over
    the block."""
    m, kp = a16.shape
    n = b16.shape[0]
    n_blocks = kp // block_size
    n_rb = (m + row_block - 1) // row_block
    n_cb = (n + _COL_BLOCK - 1) // _COL_BLOCK
    for task in prange(n_rb * n_cb):
        cb = task // n_rb
        rb = task - cb * n_rb
        i_end = min(m, (rb + 1) * row_block)
        j_end = min(n, (cb + 1) * _COL_BLOCK)
        for j in range(cb * _COL_BLOCK, j_end):
            for i in range(rb * row_block, i_end):
                total = np.float32(0)
                for blk in range(n_blocks):
                    start = blk * block_size
                    a_blk = a16[i, start:start + block_size]
                    b_blk = b16[j, start:start + block_size]
                    dot = np.int32(0)
                    for k in range(block_size):   # (a 0-based loop over slices vectorizes)
                        dot = np.int32(dot + np.int32(a_blk[k]) * np.int32(b_blk[k]))
                    total = total + np.float32(dot) * (a_scale[i, blk] * b_scale[j, blk])
                out[i, j] = total


def blockwise_matmul_int8(a, a_scale, b, b_scale, block_size) -> np.ndarray:
    """``y[m, n] = sum_blk float32(dot) * (a_scale[m, blk] * b_scale[n, blk])`` as float32, with
    ``dot`` the exact int32 block dot product of ``a[m]`` and ``b[n]`` (see the module docstring).

    a: int8 [M, K] (uint8 and int16 values are taken as they are); a_scale: float32 [M, blocks];
    b: [N, K] (int8, uint8 or int16) or a ``BlockwiseB`` packed with the same block_size;
    b_scale: float32 [N, blocks]; blocks = ceil(K / block_size).
    """
    block_size = _check_block_size(block_size)
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"a must be 2-D [M, K], got shape {a.shape}")
    if a.dtype not in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)):
        raise TypeError(f"a must be int8, uint8 or int16, got {a.dtype}")
    packed = pack_blockwise_b(b, block_size)
    if packed.block_size != block_size:
        raise ValueError(f"b was packed with block_size {packed.block_size}, not {block_size}")
    m, k = a.shape
    n = packed.data.shape[0]
    if k != packed.k:
        raise ValueError(f"inner dimensions differ: a is {a.shape}, b is {packed.shape}")
    blocks = _blocks(k, block_size)
    a_s = np.ascontiguousarray(a_scale, dtype=np.float32)
    b_s = np.ascontiguousarray(b_scale, dtype=np.float32)
    if a_s.shape != (m, blocks) or b_s.shape != (n, blocks):
        raise ValueError(f"a_scale must be {[m, blocks]} and b_scale {[n, blocks]}, got "
                         f"{list(a_s.shape)} and {list(b_s.shape)}")
    out = np.empty((m, n), dtype=np.float32)
    if m == 0 or n == 0:
        return out
    if k == 0:
        out[:] = 0
        return out
    a16 = _widen_padded(a, block_size)
    row_block = max(1, min(64, _L1_BUDGET // (2 * a16.shape[1])))
    _blockwise_kernel(a16, a_s, packed.data, b_s, np.int64(block_size), out, np.int64(row_block))
    return out


def _vector_instructions(names=("vpmaddwd", "vpdpwssd", "vpmulld")) -> dict:
    """Count selected instructions in a fresh (uncached) compile of the kernel."""
    import re

    from numba import types

    fresh = njit(cache=False, parallel=True)(_blockwise_kernel.py_func)
    i2, f2 = types.int16[:, ::1], types.float32[:, ::1]
    fresh.compile((i2, f2, i2, f2, types.int64, f2, types.int64))
    asm = "\n".join(fresh.inspect_asm().values())
    return {name: len(re.findall(rf"\b{name}\b", asm)) for name in names}


if __name__ == "__main__":  # quick throughput check: python kernels/blockwise.py
    import time

    M, K, N, BS = 16, 4096, 4096, 32
    rng = np.random.default_rng(0)
    a = rng.integers(-127, 128, (M, K), dtype=np.int8)
    b = rng.integers(-8, 8, (N, K)).astype(np.int16)
    sa = rng.random((M, K // BS), dtype=np.float32)
    sb = rng.random((N, K // BS), dtype=np.float32)
    packed = pack_blockwise_b(b, BS)
    blockwise_matmul_int8(a, sa, packed, sb, BS)
    times = []
    for _ in range(10):
        t = time.perf_counter()
        blockwise_matmul_int8(a, sa, packed, sb, BS)
        times.append(time.perf_counter() - t)
    gops = 2.0 * M * N * K / min(times) / 1e9
    print(f"blockwise_matmul_int8 {M}x{K}x{N} block {BS}: {gops:.1f} GOPS")
    print("instructions in the kernel:", _vector_instructions())
