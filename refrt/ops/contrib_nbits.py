"""onnxruntime's MatMulNBits (``com.microsoft``): a float A times a weight matrix quantized in
blocks to 2, 4 or 8 bits, the layout ORT's weight-only quantizers write (see the op's docstring).
Checked against onnxruntime 1.32 in ``tests/ops/test_contrib_quant_vs_ort.py``.
"""

from __future__ import annotations

import numpy as np

from ..registry import op
from ._common import once_per_session
from ._kernels import K
from .contrib_quant import MS

_F32 = np.float32


# ---------------------------------------------------------------- MatMulNBits

def _unpack_bits(packed, bits, count):
    """uint8 bytes -> the first ``count`` unsigned ``bits``-wide values along the last axis,
    low bits first (element 0 in the lowest bits of byte 0)."""
    per_byte = 8 // bits
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits).astype(np.uint8)
    vals = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return vals.reshape(packed.shape[:-1] + (-1,))[..., :count]


def _nbits_codes(b, zero_points, N, K, bits, block_size):
    """MatMulNBits' weights -> (codes uint8 [N, K], zero points float32 [N, blocks])."""
    blocks = -(-K // block_size)
    q = _unpack_bits(b.reshape(N, blocks, -1), bits, block_size).reshape(N, -1)[:, :K]
    if zero_points is None:
        return q, np.full((N, blocks), float(1 << (bits - 1)), _F32)
    zb = np.asarray(zero_points)
    if zb.dtype != np.uint8:
        if zb.size != N * blocks:
            raise ValueError(f"MatMulNBits: zero_points must hold N * blocks = {N * blocks} "
                             f"values, got {zb.size}")
        return q, zb.astype(_F32).reshape(N, blocks)
    per_row = -(-blocks * bits // 8)
    if zb.size != N * per_row:
        raise ValueError(f"MatMulNBits: packed zero_points must hold N * {per_row} bytes, got "
                         f"{zb.size}")
    return q, _unpack_bits(zb.reshape(N, per_row), bits, blocks).astype(_F32)


def _nbits_int8_weights(q, zp, block_size):
    """B - zp (integers: codes minus uint8 or default zero points) as int16 [N, K], packed for
    the blockwise int8 kernel."""
    zk = zp.astype(np.int16).repeat(block_size, axis=1)[:, :q.shape[1]]
    return K.pack_blockwise_b(q.astype(np.int16) - zk, block_size)


def _nbits_int8_compute(a, packed, s, block_size):
    """accuracy_level 4 (ORT's CompInt8): each block of ``block_size`` values of an A row is
    quantized symmetrically to int8 (scale = max|a| / 127, a * (1 / scale) rounded half to
    even), the integer block dot products with (B - zp) (``packed``) are exact int32, and the
    blocks are summed left to right in float32 as dot * (a_scale * b_scale) (the Numba kernel
    :func:`refrt.kernels.blockwise.blockwise_matmul_int8`)."""
    n, k = packed.shape
    lead = a.shape[:-1]
    rows = a.reshape(-1, k)
    blocks = -(-k // block_size)
    ab = np.pad(rows, ((0, 0), (0, blocks * block_size - k)))
    ab = ab.reshape(rows.shape[0], blocks, block_size)
    a_scale = (np.abs(ab).max(axis=2, initial=_F32(0)) / _F32(127)).astype(_F32)
    with np.errstate(divide="ignore"):
        inv = np.where(a_scale != 0, _F32(1) / a_scale, _F32(0)).astype(_F32)
    aq = np.rint(ab * inv[..., None]).astype(np.int8).reshape(rows.shape[0], -1)[:, :k]
    return K.blockwise_matmul_int8(aq, a_scale, packed, s, block_size).reshape(lead + (n,))


@op("MatMulNBits", domain=MS)
def matmul_nbits(A, B, scales, zero_points=None, g_idx=None, bias=None, *, K, N,
                 accuracy_level=0, bits=4, block_size, weight_prepacked=0, ctx):
    """Y = A @ dequantize(B)^T + bias, B [N, K] quantized in blocks of ``block_size`` along K to
    ``bits``-bit unsigned codes: W[n, k] = (B[n, k] - zp[n, g(k)]) * scales[n, g(k)], g(k) =
    k // block_size (or g_idx[k])

    Layouts as onnxruntime: B uint8 [N, ceil(K / block_size), block_size * bits / 8], codes
    packed low bits first; scales [N * blocks] (A's type); zero_points absent (2^(bits-1)),
    packed uint8 [N * ceil(blocks * bits / 8)] codes, or A's float type [N * blocks] (then W =
    (B - zp) * scale in float). float16/bfloat16 A computes in float32 and rounds once.
    accuracy_level 4 follows ORT's int8 compute (:func:`_nbits_int8_compute`: A quantized to
    int8 per block) where ORT 1.32 uses it on x86 (uint8 or default zero points, no g_idx, not
    2-bit blocks of 16); elsewhere W is dequantized and multiplied in float32, as ORT's fp32
    path. Float sums run in another order than MLAS's, so results agree within float32
    rounding (see the tests), not bit for bit. Constant weights are unpacked once per session.
    weight_prepacked=1 (an ORT-internal packed format) is refused."""
    if weight_prepacked:
        raise ValueError("MatMulNBits: weight_prepacked=1 (onnxruntime's internal packed "
                         "format) is not supported")
    if bits not in (2, 4, 8):
        raise ValueError(f"MatMulNBits: bits must be 2, 4 or 8, got {bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"MatMulNBits: block_size must be a power of 2 and >= 16, got "
                         f"{block_size}")
    b = np.asarray(B)
    if b.dtype != np.uint8:
        raise TypeError(f"MatMulNBits: B must be uint8, got {b.dtype.name}")
    blocks = -(-K // block_size)
    blob = block_size * bits // 8
    if b.shape not in ((N, blocks, blob), (N, blocks * blob)):
        raise ValueError(f"MatMulNBits: B must be [N, blocks, blob] = {[N, blocks, blob]}, got "
                         f"{list(b.shape)}")
    if A.shape[-1] != K:
        raise ValueError(f"MatMulNBits: A's last axis is {A.shape[-1]}, K is {K}")
    s = np.asarray(scales).astype(_F32)
    if s.size != N * blocks:
        raise ValueError(f"MatMulNBits: scales must hold N * blocks = {N * blocks} values, got "
                         f"{s.size}")
    s = s.reshape(N, blocks)
    if g_idx is None:
        group = np.arange(K) // block_size
    else:
        group = np.asarray(g_idx).astype(np.int64).reshape(-1)
        if group.shape != (K,) or group.min(initial=0) < 0 or group.max(initial=0) >= blocks:
            raise ValueError(f"MatMulNBits: g_idx must hold K = {K} block indices in "
                             f"[0, {blocks})")
    weights = [i for i, v in ((1, B), (3, zero_points)) if v is not None]
    float_zp = zero_points is not None and np.asarray(zero_points).dtype != np.uint8
    if accuracy_level == 4 and g_idx is None and not float_zp and (bits != 2 or block_size >= 32):
        packed = once_per_session(ctx, "nbits_int8", weights, lambda: _nbits_int8_weights(
            *_nbits_codes(b, zero_points, N, K, bits, block_size), block_size))
        y = _nbits_int8_compute(A.astype(_F32), packed, s, block_size)
    else:
        def dequantized():
            q, zp = _nbits_codes(b, zero_points, N, K, bits, block_size)
            return (q.astype(_F32) - zp[:, group]) * s[:, group]             # [N, K]
        w = once_per_session(ctx, "nbits_float", weights + [2] + ([4] if g_idx is not None
                                                                   else []), dequantized)
        y = np.matmul(A.astype(_F32), w.T)
    if bias is not None:
        y = y + np.asarray(bias).astype(_F32)
    return y.astype(A.dtype, copy=False)
