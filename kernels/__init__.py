"""Numba kernels for refrt's INT8 hot paths, each with a NumPy twin in ``twins``.

This package depends on numpy and numba only.
"""

from .conv import conv_int8, conv_output_shape, im2col_int8
from .gemm import PackedB, gemm_int8, gemm_u8s8_avx2_saturating, pack_b
from .quantize import (
    dequantize_linear,
    dynamic_quantize_linear,
    quantize_linear,
    requantize,
    requantize_multiplier,
)

__all__ = [
    "PackedB",
    "pack_b",
    "gemm_int8",
    "gemm_u8s8_avx2_saturating",
    "im2col_int8",
    "conv_int8",
    "conv_output_shape",
    "quantize_linear",
    "dequantize_linear",
    "dynamic_quantize_linear",
    "requantize",
    "requantize_multiplier",
]
