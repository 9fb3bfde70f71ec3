"""Numba kernels for refrt's INT8 hot paths, each with a NumPy twin in ``twins``.

This package depends on numpy and numba only.
"""

import importlib

# Numba is imported (and cached kernels loaded) on first use, not when refrt starts: a float
# model never pays for it. ``kernels.gemm_int8`` and ``kernels.conv`` both work.
_WHERE = {
    "conv_int8": "conv", "conv_output_shape": "conv", "im2col_int8": "conv",
    "PackedB": "gemm", "gemm_int8": "gemm", "gemm_int8_scaled": "gemm", "gemm_u8s8_avx2_saturating": "gemm", "pack_b": "gemm",
    "dequantize_linear": "quantize", "dynamic_quantize_linear": "quantize",
    "quantize_linear": "quantize", "requantize": "quantize", "requantize_multiplier": "quantize",
    "scale_bias_int32": "quantize", "pair_lookup": "quantize", "byte_lookup": "quantize",
}
_SUBMODULES = ("conv", "gemm", "quantize", "blockwise", "twins", "vnni", "amx", "avx2", "mathf", "rows", "fgemm", "fma", "irgen", "vec")


def __getattr__(name):
    if name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value   # found once; later lookups are plain attribute reads
    return value


__all__ = [
    "PackedB",
    "pack_b",
    "gemm_int8",
    "gemm_int8_scaled",
    "gemm_u8s8_avx2_saturating",
    "im2col_int8",
    "conv_int8",
    "conv_output_shape",
    "quantize_linear",
    "dequantize_linear",
    "dynamic_quantize_linear",
    "requantize",
    "requantize_multiplier",
    "scale_bias_int32",
    "pair_lookup",
    "byte_lookup",
]
