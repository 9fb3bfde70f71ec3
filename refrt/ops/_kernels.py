"""The one door from refrt's ops to ``kernels/``: ``K.<name>`` is a Numba kernel, or its NumPy twin.

Ops call kernels as ``K.gemm_int8(...)``, ``K.layer_norm_rows(...)`` and so on, never by
importing ``kernels`` modules themselves. ``K`` looks the name up in ``KERNELS`` below and hands
out, for the run in progress:

* the Numba kernel (default), or
* in twin mode, its NumPy twin from ``kernels/twins.py``: the same arithmetic written the plain
  way, a few lines of NumPy that a Python debugger steps through (``pdb``, an IDE's breakpoints),
  giving the same bits as the kernel.

A session picks the mode when it is created (``SessionOptions.kernels = "twins"``, the config
entry ``refrt.kernels``, or the environment variable ``REFRT_KERNELS=twins``; see
``refrt.session.kernel_path``) and sets ``TWINS`` for the length of each of its runs. Nothing
else changes: the same ops, the same checks, the same fused steps, with a twin wherever a Numba
kernel would have run. Twins are slow (int64 matmuls, a Python loop over K for float32 fused
multiply-adds); they are for reading and debugging, not for speed.

Modules of ``kernels/`` are imported on first use, so importing refrt does not load Numba.
"""

from __future__ import annotations

import contextvars
import importlib

# True while a session in twin mode runs (set by InferenceSession.run).
TWINS: contextvars.ContextVar = contextvars.ContextVar("refrt_kernel_twins", default=False)

# name used by the ops -> (module of kernels/ and the Numba-side function there,
#                          the twin in kernels/twins.py, or None where the function is plain
#                          NumPy already and serves both modes)
KERNELS = {
    # quantization (kernels/quantize.py)
    "quantize_linear": ("quantize.quantize_linear", "quantize_linear_twin"),
    "dequantize_linear": ("quantize.dequantize_linear", "dequantize_linear_twin"),
    "dynamic_quantize_linear": ("quantize.dynamic_quantize_linear", "checked_dynamic_quantize_linear_twin"),
    "requantize": ("quantize.requantize", "requantize_twin"),
    "requantize_multiplier": ("quantize.requantize_multiplier", None),
    "scale_bias_int32": ("quantize.scale_bias_int32", "scale_bias_int32_twin"),
    "pair_lookup": ("quantize.pair_lookup", "pair_lookup_twin"),
    "byte_lookup": ("quantize.byte_lookup", "byte_lookup_twin"),
    # integer GEMM (kernels/gemm.py)
    "pack_b": ("gemm.pack_b", "pack_b_twin"),
    "gemm_int8": ("gemm.gemm_int8", "gemm_int8_twin"),
    "gemm_int8_scaled": ("gemm.gemm_int8_scaled", "gemm_int8_scaled_twin"),
    "gemm_u8s8_avx2_saturating": ("gemm.gemm_u8s8_avx2_saturating", "gemm_u8s8_avx2_saturating_twin"),
    "ScaledGemm": ("gemm.ScaledGemm", "ScaledGemmTwin"),
    # integer convolution (kernels/conv.py)
    "pack_conv_weights": ("conv.pack_weights", "pack_conv_weights_twin"),
    "conv_int8": ("conv.conv_int8", "conv_int8_packed_twin"),
    "conv_u8s8_avx2_saturating": ("conv.conv_u8s8_avx2_saturating", "conv_u8s8_avx2_saturating_twin"),
    "conv_integer_s8u8_avx2_saturating": ("conv.conv_integer_s8u8_avx2_saturating",
                                          "conv_integer_s8u8_avx2_saturating_twin"),
    # block-wise int8 GEMM (kernels/blockwise.py)
    "pack_blockwise_b": ("blockwise.pack_blockwise_b", "pack_blockwise_b_twin"),
    "blockwise_matmul_int8": ("blockwise.blockwise_matmul_int8", "blockwise_matmul_int8_twin"),
    # float32 element-wise (kernels/mathf.py, kernels/activations.py)
    "erf_f32": ("mathf.erf_f32", "erf_f32_twin"),
    "gelu_erf_f32": ("mathf.gelu_erf_f32", "gelu_erf_f32_twin"),
    "logistic_f32": ("activations.logistic_f32", "logistic_f32_twin"),
    "tanh_f32": ("activations.tanh_f32", "tanh_f32_twin"),
    "exp_f32": ("activations.exp_f32", "exp_f32_twin"),
    "log_f32": ("activations.log_f32", "log_f32_twin"),
    "clamp_f32": ("activations.clamp_f32", "clamp_f32_twin"),
    # float32 matrix products (kernels/fgemm.py); packed_available asks the CPU, not arithmetic
    "batched_matmul_f32": ("fgemm.batched_matmul_f32", "batched_matmul_f32_twin"),
    "sgemm": ("sgemm.sgemm", "sgemm_twin"),
    "sgemm_k_stride": ("sgemm.k_stride", None),
    "SGEMM_PACKED_STRIDE_K": ("sgemm.PACKED_STRIDE_K", None),
    "sgemm_column_segments": ("sgemm.column_segments", None),
    "conv_gemm": ("sgemm.conv_gemm", "conv_gemm_twin"),
    "sgemm_stack": ("sgemm.sgemm_stack", "sgemm_stack_twin"),
    "conv_segments": ("sgemm.conv_segments", None),
    "m1_groups": ("sgemm.m1_groups", "m1_groups_twin"),
    "depthwise_m1_2d": ("sgemm.depthwise_m1_2d", "depthwise_m1_2d_twin"),
    "float_packed_available": ("fgemm.packed_available", None),
    "float_tiles_available": ("fgemm.tiles_available", None),
    "pack_b_f32": ("fgemm.pack_b_f32", "pack_b_f32_twin"),
    "matmul_packed_f32": ("fgemm.matmul_packed_f32", "matmul_packed_f32_twin"),
    "im2col_panels": ("fgemm.im2col_panels", "im2col_panels_twin"),
    # recurrent layers in onnxruntime's order (kernels/recurrent.py)
    "rnn_gemm_plan": ("recurrent.gemm_plan", None),
    "lstm_layer": ("recurrent.lstm_layer", "lstm_layer_twin"),
    "gru_layer": ("recurrent.gru_layer", "gru_layer_twin"),
    "rnn_layer": ("recurrent.rnn_layer", "rnn_layer_twin"),
    # float32 rows (kernels/rows.py)
    "layer_norm_rows": ("rows.layer_norm_rows", "layer_norm_rows_twin"),
    "add_layer_norm_rows": ("rows.add_layer_norm_rows", "add_layer_norm_rows_twin"),
    "softmax_rows": ("rows.softmax_rows", "softmax_rows_twin"),
    "global_average_rows": ("rows.global_average_rows", "global_average_rows_twin"),
    "window_sums_2d": ("rows.window_sums_2d", "window_sums_2d_twin"),
    "window_column_sums_2d": ("rows.window_column_sums_2d", "window_column_sums_2d_twin"),
    "add_windows_2d": ("rows.add_windows_2d", "add_windows_2d_twin"),
    "eigen_row_sums": ("rows.eigen_row_sums", "eigen_row_sums_twin"),
    "scale_add_softmax_rows": ("rows.scale_add_softmax_rows", "scale_add_softmax_rows_twin"),
}

_PACKAGE = __name__.rsplit(".", 2)[0] + ".kernels"     # refrt.kernels (the kernels/ folder)
# (Numba side, twin side): name -> (module, attribute), found once. The attribute is read from
# the module on every look-up, so a test that patches a kernel module sees its patch used.
_resolved: tuple[dict, dict] = ({}, {})
_overrides: dict = {}        # name -> function set on K (see _Door.__setattr__)


def resolve(name: str, twins: bool) -> tuple:
    """(module, attribute) of the function ``name`` stands for on the Numba or the twin side."""
    where, twin = KERNELS[name]
    if twins and twin is not None:
        found = (importlib.import_module(_PACKAGE + ".twins"), twin)
    else:
        module, attr = where.rsplit(".", 1)
        found = (importlib.import_module(f"{_PACKAGE}.{module}"), attr)
    _resolved[twins][name] = found
    return found


class _Door:
    """``K.<name>``: the kernel or the twin for the run in progress (see the module docstring).

    Setting ``K.<name>`` (a test's monkeypatch) replaces the Numba-side function, as seen through
    the door only; setting it back to the kernel itself removes the replacement, so a restored
    patch leaves nothing behind. Twin mode always runs the twins."""

    __slots__ = ()

    def __getattr__(self, name):
        twins = TWINS.get()
        if _overrides and not twins and name in _overrides:
            return _overrides[name]
        try:
            module, attr = _resolved[twins][name]
        except KeyError:
            if name not in KERNELS:
                raise AttributeError(f"no kernel named {name!r} (refrt.ops._kernels.KERNELS)") from None
            module, attr = resolve(name, twins)
        return getattr(module, attr)

    def __setattr__(self, name, value):
        if name not in KERNELS:
            raise AttributeError(f"no kernel named {name!r} (refrt.ops._kernels.KERNELS)")
        module, attr = _resolved[False].get(name) or resolve(name, False)
        if value is getattr(module, attr):
            _overrides.pop(name, None)
        else:
            _overrides[name] = value

    def __dir__(self):
        return sorted(KERNELS)


K = _Door()


# Below this many elements a parallel element-wise or row kernel (softmax, layer norm, row sums,
# global average) runs on the calling thread alone.
# Waking Numba's thread pool costs about 50 µs where idle workers sleep (refrt.tune_process),
# more than logistic, tanh, quantize or dequantize take on one thread for 2^18 float32
# elements (measured on a 2-core AMD EPYC, znver4): for small tensors the pool only adds
# latency. The arithmetic is the same either way (each element is computed alone).
SERIAL_BELOW = 1 << 18

_threads: list = []     # (get, set) of Numba's per-thread count, found on first use


def _thread_count_functions() -> tuple:
    """Numba's get/set_num_threads. Each public call takes a lock and re-checks that the pool
    is up (about 3 µs); once it is up, the thread-layer's own two C functions do the same job,
    so those are used where this Numba exposes them."""
    import numba
    from numba.np.ufunc import parallel

    numba.set_num_threads(numba.get_num_threads())     # launches the pool if need be
    get, set_ = getattr(parallel, "_get_num_threads", None), getattr(parallel, "_set_num_threads", None)
    if callable(get) and callable(set_) and get() == numba.get_num_threads():
        return get, set_
    return numba.get_num_threads, numba.set_num_threads


def one_thread(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with Numba's parallel regions confined to the calling thread
    (Numba's thread count is per thread, so other threads are not affected). Twins (NumPy)
    are called as they are."""
    if TWINS.get():
        return fn(*args, **kwargs)
    if not _threads:
        _threads.extend(_thread_count_functions())
    get, set_ = _threads
    n = get()
    if n == 1:
        return fn(*args, **kwargs)
    set_(1)
    try:
        return fn(*args, **kwargs)
    finally:
        set_(n)


def sized_threads(size, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, on the calling thread alone below ``SERIAL_BELOW`` elements
    (the same bits either way; see ``one_thread``)."""
    if size >= SERIAL_BELOW:
        return fn(*args, **kwargs)
    return one_thread(fn, *args, **kwargs)


# One element of an element-wise kernel costs about as much as this many float32 multiply-adds
# of the matrix-product tiles: a product of fewer than SERIAL_BELOW * MACS_PER_ELEMENT (8M)
# multiply-adds runs on the calling thread (measured on a 2-core Xeon with AMX: the digits
# CNN's Gemm layers, 360 x 64 @ 64 x 32, took 0.2 ms through the pool, a few µs without).
MACS_PER_ELEMENT = 32


def sized_product(macs, fn, *args, **kwargs):
    """``sized_threads`` for a matrix product of ``macs`` multiply-adds."""
    return sized_threads(macs // MACS_PER_ELEMENT, fn, *args, **kwargs)
