"""Integer GEMM kernels: exact u8/s8 matrix products with int32 results.

    C[m, n] = sum_k (A[m, k] - a_zp[m]) * (B[k, n] - b_zp[n])          (int32)

Serves MatMulInteger, QLinearMatMul, QGemm, DynamicQuantizeMatMul and MatMulIntegerToFloat
(the float/requantization epilogues live in ``quantize.py``) and, through im2col, ConvInteger and
QLinearConv (``conv.py``).

Four exact kernels compute the same numbers; ``gemm_int8(kernel="auto")`` picks the fastest
one this CPU can run (``default_kernel()``):

* "amx" (``amx.py``): AMX tile products (``tdpbusd``, 16 x 16 x 64 byte products per
  instruction) over 16- and 32-row blocks of A.  Needs AMX-INT8 and the OS's permission.
* "vnni" (``vnni.py``): register tiles of 8 rows x 32 columns built on ``vpdpbusd``, which adds
  four u8 x s8 byte products straight into each int32 lane.  Needs AVX512-VNNI.  About 4-8x the
  portable kernel (bench/RESULTS.md).
* "avx2" (``avx2.py``): register tiles of 6 rows x 16 columns built on ``vpmaddwd`` over
  int16-widened operands (B kept as bytes, widened as loaded).  Needs AVX2.
* "portable" (below): int16 dot products that LLVM vectorizes to ``vpmaddwd`` on any x86-64.

The portable kernel:

* B is packed once (``pack_b``): transposed to ``[N, Kp]`` int16 rows, K padded with zeros to a
  multiple of 16, plus its column sums. A session packs constant weights when it is built.
* Zero points are folded in through row and column sums instead of being subtracted from every
  element (raw products of the stored values are summed):

      sum_k (a - az)(b - bz) = sum_k a*b - bz * rowsum(a) - az * colsum(b) + K * az * bz

* The inner loop is one int16 dot product per output with a single explicit ``np.int32``
  accumulator.  LLVM turns exactly this shape (each multiply has its own sign-extended loads) into
  ``vpmaddwd`` reductions; sharing one loaded operand between several accumulators defeats that
  match (the multiply widens to 64 bits or falls back to ``vpmulld``), so register tiles are not
  written in Python here -- ``vnni.py`` writes them in LLVM IR instead.
* Work is split into independent (row block x column block) tasks run with ``prange``.  Inside a
  task the column loop is outside the row loop: the task's A rows (sized to stay in L1) are reused
  by every B column, and each B column is read from L2 once per task.

Integer overflow: the result is the exact sum reduced modulo 2**32 into int32 (two's complement
wraparound), which is what ORT's int32 accumulators produce too.  With 8-bit operands a wrap needs
K > 33,000 or so.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["PackedB", "pack_b", "gemm_int8", "gemm_int8_scaled", "ScaledGemm", "gemm_u8s8_avx2_saturating",
           "default_kernel"]

_K_ALIGN = 16  # K padding of packed operands (zeros), so vector loops have no remainder
_L1_BUDGET = 24 * 1024  # bytes of A rows kept hot in L1 while B columns stream past them
_COL_BLOCK = 64  # columns of B per parallel task
_INT8_TYPES = (np.dtype(np.uint8), np.dtype(np.int8))


class PackedB:
    """B [K, N] prepared for the GEMM kernels.

    ``bt`` is B transposed ``[N, K]`` (its own values, uint8 or int8), ``colsum`` the int64 column
    sums of B, ``dtype`` the original element type.  Each kernel's operand layout is built from
    ``bt`` on first use and kept: ``data`` (int16 ``[N, Kp]``, K padded with zeros to a multiple
    of 16) for the portable kernels, ``vnni`` (int8 panels, see ``vnni.py``) for the VNNI and AMX
    kernels (K padded to 64 where AMX is the default, which the VNNI tiles read as well).
    Build it with ``pack_b`` (which prepares the layout the default kernel uses) and pass it
    instead of ``b`` to reuse the packing across calls.
    """

    __slots__ = ("bt", "colsum", "k", "n", "dtype", "_data", "_vnni", "_avx2")

    def __init__(self, bt, colsum, k, n, dtype):
        self.bt = bt
        self.colsum = colsum
        self.k = k
        self.n = n
        self.dtype = np.dtype(dtype)
        self._data = None
        self._vnni = None
        self._avx2 = None

    @property
    def shape(self):
        return (self.k, self.n)

    @property
    def data(self) -> np.ndarray:
        """int16 B^T [N, Kp], K zero-padded to a multiple of 16 (portable kernels)."""
        if self._data is None:
            data = np.zeros((self.n, _padded_k(self.k)), dtype=np.int16)
            data[:, : self.k] = self.bt
            self._data = data
        return self._data

    @property
    def vnni(self):
        """B packed for the VNNI and AMX kernels (``vnni.VnniB``)."""
        if self._vnni is None:
            from . import amx, vnni

            k_align = amx.K_ALIGN if amx.available() else vnni.KGROUP
            self._vnni = vnni.pack_b(self.bt, self.colsum, k_align)
        return self._vnni

    @property
    def avx2(self):
        """B packed for the AVX2 kernel (``avx2.Avx2B``)."""
        if self._avx2 is None:
            from . import avx2

            self._avx2 = avx2.pack_b(self.bt, self.colsum)
        return self._avx2

    def __repr__(self):
        return f"PackedB(shape={self.shape}, dtype={self.dtype.name})"


def _padded_k(k: int) -> int:
    return -(-k // _K_ALIGN) * _K_ALIGN


def default_kernel() -> str:
    """The kernel ``gemm_int8`` runs by default: "amx" where this CPU has AMX-INT8 (and the OS
    grants the tile state), else "vnni" where it has AVX512-VNNI, else "avx2" where it has AVX2,
    else "portable" (each only when Numba compiles for a CPU that has it); the environment
    variable ``REFRT_INT8_KERNEL`` forces one of those this CPU can run (``cpu.int8_kernel``)."""
    from .cpu import int8_kernel

    return int8_kernel()


def _check_int8_matrix(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    if x.dtype not in _INT8_TYPES:
        raise TypeError(f"{name} must be uint8 or int8, got {x.dtype}")
    return x


def pack_b(b, transposed=False) -> PackedB:
    """Pack B [K, N] (uint8 or int8) once: transposed copy, column sums, and the operand layout
    of the default kernel.

    ``transposed=True`` takes B already as ``[N, K]`` (Gemm with transB=1, convolution weights).
    """
    if isinstance(b, PackedB):
        return b
    b = _check_int8_matrix(b, "b")
    bt = np.ascontiguousarray(b if transposed else b.T)
    n, k = bt.shape
    packed = PackedB(bt, bt.sum(axis=1, dtype=np.int64), k, n, b.dtype)
    if default_kernel() in ("amx", "vnni"):
        packed.vnni  # noqa: B018 -- build the layout now (session build), not on the first run
    elif default_kernel() == "avx2":
        packed.avx2  # noqa: B018
    else:
        packed.data  # noqa: B018
    return packed


def _prepare_a(a, kp: int):
    """A [M, K] -> (int16 copy [M, kp] zero-padded along K, int64 row sums)."""
    m, k = a.shape
    a16 = np.zeros((m, kp), dtype=np.int16)
    a16[:, :k] = a
    return a16, a.sum(axis=1, dtype=np.int64)


def _zero_point_vector(zp, length: int, name: str, what: str) -> np.ndarray:
    """Scalar / length-1 / length-`length` zero point -> int64 vector of `length`."""
    z = np.asarray(0 if zp is None else zp)
    if z.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got {z.dtype}")
    z = z.astype(np.int64).reshape(-1)
    if z.size == 1:
        return np.full(length, z[0], dtype=np.int64)
    if z.size != length:
        raise ValueError(f"{name} must have 1 or {length} ({what}) elements, got {z.size}")
    return z.copy()  # a fresh writable array: one compiled specialization for every caller


@njit(cache=True, parallel=True)
def _gemm_dot_kernel(a16, bt16, rowsum, colterm, a_zp, b_zp, out, row_block):
    """out[i, j] = int32( sum_k a16[i,k]*bt16[j,k]  - b_zp[j]*rowsum[i] - a_zp[i]*colterm[j] )

    with colterm[j] = colsum[j] - K*b_zp[j].  The dot product accumulates in int32 (wrapping);
    the fold is done in int64 and truncated, which is exact modulo 2**32.
    """
    m, kp = a16.shape
    n = bt16.shape[0]
    n_rb = (m + row_block - 1) // row_block
    n_cb = (n + _COL_BLOCK - 1) // _COL_BLOCK
    for task in prange(n_rb * n_cb):
        cb = task // n_rb
        rb = task - cb * n_rb
        i_end = min(m, (rb + 1) * row_block)
        j_end = min(n, (cb + 1) * _COL_BLOCK)
        for j in range(cb * _COL_BLOCK, j_end):
            for i in range(rb * row_block, i_end):
                rs = rowsum[i]
                az = a_zp[i]
                acc = np.int32(0)
                for k in range(kp):
                    acc = np.int32(acc + np.int32(a16[i, k]) * np.int32(bt16[j, k]))
                out[i, j] = np.int32(np.int64(acc) - b_zp[j] * rs - az * colterm[j])


@njit(cache=True, parallel=True)
def _gemm_pair_saturating_kernel(a16, bt16, rowsum, colterm, a_zp, b_zp, out, row_block):
    """Like _gemm_dot_kernel, but every pair (k, k+1), k even, of raw products is saturated:

        acc += clamp(a[2p]*b[2p] + a[2p+1]*b[2p+1], -32768, 32767)

    (K is zero-padded, so an odd K's last product pairs with 0.)
    """
    m, kp = a16.shape
    n = bt16.shape[0]
    half = kp // 2
    n_rb = (m + row_block - 1) // row_block
    n_cb = (n + _COL_BLOCK - 1) // _COL_BLOCK
    for task in prange(n_rb * n_cb):
        cb = task // n_rb
        rb = task - cb * n_rb
        i_end = min(m, (rb + 1) * row_block)
        j_end = min(n, (cb + 1) * _COL_BLOCK)
        for j in range(cb * _COL_BLOCK, j_end):
            for i in range(rb * row_block, i_end):
                rs = rowsum[i]
                az = a_zp[i]
                acc = np.int32(0)
                for p in range(half):
                    k = 2 * p
                    pair = np.int32(
                        np.int32(a16[i, k]) * np.int32(bt16[j, k])
                        + np.int32(a16[i, k + 1]) * np.int32(bt16[j, k + 1])
                    )
                    pair = min(max(pair, np.int32(-32768)), np.int32(32767))
                    acc = np.int32(acc + pair)
                out[i, j] = np.int32(np.int64(acc) - b_zp[j] * rs - az * colterm[j])


def _run(kernel, a, b, a_zp, b_zp, epilogue=None):
    a = _check_int8_matrix(a, "a")
    packed = pack_b(b)
    m, k = a.shape
    if k != packed.k:
        raise ValueError(f"inner dimensions differ: a is {a.shape}, b is {packed.shape}")
    n = packed.n
    az = _zero_point_vector(a_zp, m, "a_zp", "one per row of a")
    bz = _zero_point_vector(b_zp, n, "b_zp", "one per column of b")
    if m == 0 or n == 0:
        return np.empty((m, n), dtype=np.int32 if epilogue is None else np.float32)
    if kernel in ("vnni", "amx", "avx2"):
        from . import amx, avx2, vnni

        mod = {"amx": amx, "vnni": vnni, "avx2": avx2}[kernel]
        return mod.gemm(a, packed.avx2 if kernel == "avx2" else packed.vnni, az, bz, epilogue)
    out = np.empty((m, n), dtype=np.int32)
    a16, rowsum = _prepare_a(a, packed.data.shape[1])
    _gemm_prepared(kernel, a16, rowsum, packed.data, packed.colsum, k, az, bz, out)
    if epilogue is None:
        return out
    from .quantize import scale_bias_int32

    return scale_bias_int32(out, *epilogue)


def _gemm_prepared(kernel, a16, rowsum, bt16, colsum, k, a_zp, b_zp, out):
    """Run a GEMM kernel on prepared operands (shapes already checked by the caller):
    a16 int16 [M, Kp], rowsum int64 [M], bt16 int16 [N, Kp], colsum int64 [N], K, int64 zero point
    vectors [M] and [N], out int32 [M, N] (C-contiguous)."""
    colterm = colsum - np.int64(k) * b_zp
    row_block = max(1, min(64, _L1_BUDGET // (2 * max(1, a16.shape[1]))))
    kernel(a16, bt16, rowsum, colterm, a_zp, b_zp, out, row_block)


_KERNELS = ("auto", "amx", "vnni", "avx2", "portable")
_AMX_MIN_ROWS = 16  # "auto" runs the VNNI kernel below one 16-row AMX tile
_NEEDS = {"amx": "AMX-INT8, AVX512-VNNI, the OS's permission for tile data and Numba compiling for this CPU",
          "vnni": "AVX512-VNNI and Numba compiling for this CPU",
          "avx2": "AVX2 and Numba compiling for an AVX2 CPU"}


def gemm_int8(a, b, a_zp=0, b_zp=0, kernel="auto") -> np.ndarray:
    """Exact integer GEMM: ``C[m, n] = sum_k (a[m, k] - a_zp[m]) * (b[k, n] - b_zp[n])`` as int32.

    a: uint8 or int8 [M, K]; b: uint8 or int8 [K, N], or a ``PackedB`` from ``pack_b``.
    a_zp: integer scalar, or length 1 or M (per row); b_zp: scalar, or length 1 or N (per column).
    Sums wrap modulo 2**32 (int32 two's complement), like ORT's int32 accumulation.
    kernel: "amx" (``tdpbusd`` tile products, needs AMX-INT8), "vnni" (``vpdpbusd`` register
    tiles, needs AVX512-VNNI), "avx2" (``vpmaddwd`` register tiles, needs AVX2), "portable"
    (int16 dot products that LLVM vectorizes on any x86-64), or "auto" (``default_kernel()``,
    except that fewer than 16 rows of A run the VNNI kernel on an AMX CPU, which is faster
    there).  Every kernel gives the same exact
    result.
    """
    return _run(_choose(kernel, a), a, b, a_zp, b_zp)


def gemm_int8_scaled(a, b, a_zp=0, b_zp=0, scale=1.0, bias=None, kernel="auto") -> np.ndarray:
    """``float32(gemm_int8(a, b, a_zp, b_zp)) * scale (+ bias)`` as float32 [M, N], scale and
    bias float32 with one element or one per column: the int32 product is exact and the
    epilogue is ``quantize.scale_bias_int32``'s, bit for bit, but the VNNI and AMX kernels apply
    it to each 32-column panel while it is in cache (what a dynamically quantized MatMul's
    Cast -> Mul -> Add computes)."""
    return _run(_choose(kernel, a), a, b, a_zp, b_zp, epilogue=(scale, bias))


class ScaledGemm:
    """``gemm_int8_scaled`` against one packed B whose zero points and bias stay the same from call
    to call (a session's dynamically quantized MatMul), with everything about B prepared once:
    its column terms, zero points and bias as the panel kernels take them. A call then passes
    only what changes -- A, A's zero point (one for all rows) and the scale -- straight to the
    AMX, VNNI or AVX2 kernel, the same kernels and terms as ``gemm_int8_scaled``, so the same bits.

    Covers uint8 A [M, K], C-contiguous, on CPUs whose default kernel is "amx", "vnni" or "avx2"
    (on AMX and VNNI the rows must already be as wide as B's packed K: a multiple of 64 on AMX,
    of 4 on VNNI; the AVX2 kernel widens A to int16 rows itself); a call returns None for
    anything else and the caller takes ``gemm_int8_scaled``."""

    _KERNELS = ("amx", "vnni", "avx2")

    @staticmethod
    def runs_here() -> bool:
        """True where the default kernel is one the prepared GEMM drives ("amx", "vnni", "avx2")."""
        return default_kernel() in ScaledGemm._KERNELS

    def __init__(self, b: PackedB, b_zp=0, bias=None):
        from . import vnni

        self.kernel = default_kernel()
        self.n, self.k = b.n, b.k
        if self.kernel not in self._KERNELS:
            return
        vb = self.vb = b.avx2 if self.kernel == "avx2" else b.vnni
        shift = 0 if self.kernel == "avx2" else vb.shift
        bz = _zero_point_vector(b_zp, b.n, "b_zp", "one per column of b")
        self.row_sums = bool(shift) or bool(np.count_nonzero(bz))   # only multiplied by B's zero points
        none = np.zeros(0, dtype=np.int64)
        _, self.colterm, _, self.bzp = vnni.zero_point_terms(vb, b.k, none, none, bz, shift)
        _, self.bias = vnni.epilogue_vectors(vb, 1.0, bias)
        self.has_bias = bias is not None

    def __call__(self, a, a_zp, scale) -> np.ndarray | None:
        """float32 [M, N] = float32((a - a_zp) @ (B - b_zp)) * scale (+ bias), or None (see the
        class). ``a_zp`` an integer, ``scale`` float32 with one element or N."""
        if self.kernel not in self._KERNELS:
            return None
        from . import amx, avx2, vnni

        vb = self.vb
        width = self.k if self.kernel == "avx2" else vb.kpad
        if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != width or not a.flags.c_contiguous:
            return None
        m = a.shape[0]
        if m == 0:
            return np.empty((0, self.n), np.float32)
        rowsum = np.zeros(m, dtype=np.int64)
        if self.kernel == "avx2":
            a_op = np.empty((m, vb.kpad), dtype=np.int16)
            vnni.widen_rows(a, a_op, rowsum)
            kern, steps = avx2.gemm_s16_avx2_f32, vb.kpad // 2
        else:
            a_op = a
            if self.row_sums:
                vnni._row_sums(a, rowsum)
            kern = (amx.gemm_u8s8_amx_f32 if self.kernel == "amx" and m >= _AMX_MIN_ROWS
                    else vnni.gemm_u8s8_vnni_f32)
            steps = vb.kpad // vnni.KGROUP
        s = np.asarray(scale, dtype=np.float32).reshape(-1)
        if s.size == 1:
            scale_vec = np.full(vb.npad, s[0], dtype=np.float32)
        else:
            scale_vec, _ = vnni.epilogue_vectors(vb, s, None)
        out = np.empty(m * vb.npad, dtype=np.float32)
        kern(a_op.reshape(-1), vb.kpad, m, vb.panels, vb.npad // (avx2.NR if self.kernel == "avx2" else vnni.NR),
             steps, rowsum.astype(np.int32), self.colterm, np.full(m, a_zp, dtype=np.int32), self.bzp,
             _NO_C, vb.npad, scale_vec, self.bias, self.has_bias, out)
        return vnni.finish(out, m, vb)


_NO_C = np.zeros(0, dtype=np.int32)   # the *_f32 kernels keep their int32 sums in a scratch


def _choose(kernel, a):
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
    if kernel == "auto":
        kernel = default_kernel()
        rows = np.shape(a)[0] if np.ndim(a) == 2 else _AMX_MIN_ROWS
        if kernel == "amx" and rows < _AMX_MIN_ROWS:
            kernel = "vnni"
    from .cpu import KernelUnavailable, runnable_int8_kernels

    if kernel not in runnable_int8_kernels():
        raise KernelUnavailable(f"the {kernel} int8 kernel cannot run here (this CPU or this process "
                                f"runs {', '.join(runnable_int8_kernels())}): it needs "
                                + _NEEDS[kernel])
    return _gemm_dot_kernel if kernel == "portable" else kernel


def gemm_u8s8_avx2_saturating(a_u8, b_s8, a_zp=0, b_zp=0) -> np.ndarray:
    """Reproduce onnxruntime's AVX2 (no VNNI) u8 x s8 GEMM, saturation included.

    ORT's MLAS kernel (``vpmaddubsw`` then ``vpmaddwd`` with ones) multiplies the *stored* uint8
    and int8 values, adds the two products of each K pair (k, k+1) with k even (K is padded with
    zeros to a multiple of 4, so an odd K's last product stands alone) into a saturating int16,
    and sums those pairs in int32.  Zero points are folded in afterwards, exactly:

        C[m, n] = sum_p sat16(a[m,2p]*b[2p,n] + a[m,2p+1]*b[2p+1,n])
                  - b_zp[n]*rowsum(a)[m] - a_zp[m]*colsum(b)[n] + K*a_zp[m]*b_zp[n]

    with sat16(v) = clamp(v, -32768, 32767).  A pair saturates only when both products are
    large with the same sign (|b| > 64 with a near 255), so full-range int8 weights are needed to
    see it.  Checked bit for bit against onnxruntime 1.32 MatMulInteger (ORT_DISABLE_ALL, on a
    CPU without VNNI): M in {1, 7, 64}, K in {1, 3, 64, 255, 768}, N in {1, 5, 64}, B as a graph
    input and as a constant initializer, scalar and per-column b_zero_point.

    a_u8: uint8 [M, K]; b_s8: int8 [K, N] (or a ``PackedB`` of int8 data); zero points as in
    ``gemm_int8``.
    """
    a_u8 = _check_int8_matrix(a_u8, "a_u8")
    if a_u8.dtype != np.uint8:
        raise TypeError(f"a_u8 must be uint8, got {a_u8.dtype}")
    b_dtype = b_s8.dtype if isinstance(b_s8, PackedB) else np.asarray(b_s8).dtype
    if b_dtype != np.int8:
        raise TypeError(f"b_s8 must be int8, got {b_dtype}")
    return _run(_gemm_pair_saturating_kernel, a_u8, b_s8, a_zp, b_zp)


def _vector_instructions(kernel, names=("vpmaddwd", "vpdpwssd", "vpmulld")) -> dict:
    """Count selected instructions in a fresh (uncached) compile of `kernel` for 2-D int16 input."""
    import re

    from numba import types

    fresh = njit(cache=False, parallel=True)(kernel.py_func)
    a2, i1, o2 = types.int16[:, ::1], types.int64[::1], types.int32[:, ::1]
    fresh.compile((a2, a2, i1, i1, i1, i1, o2, types.int64))
    asm = "\n".join(fresh.inspect_asm().values())
    return {name: len(re.findall(rf"\b{name}\b", asm)) for name in names}


if __name__ == "__main__":  # quick throughput check: python kernels/gemm.py
    import time

    import numba

    M, K, N = 128, 768, 3072
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    b = rng.integers(-128, 128, (K, N), dtype=np.int8)
    packed = pack_b(b)
    af, bf = a.astype(np.float32), b.astype(np.float32)
    gemm_int8(a, packed, 3, -2)

    def best(f, reps=15):
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return 2.0 * M * N * K / min(times) / 1e9

    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(threads)
        print(f"gemm_int8 {M}x{K}x{N}, {threads} thread(s): {best(lambda: gemm_int8(a, packed, 3, -2)):.1f} GOPS")
    print(f"numpy float32 matmul (BLAS threads): {best(lambda: af @ bf):.1f} GOPS")
    print("instructions in the dot kernel:", _vector_instructions(_gemm_dot_kernel))
