"""Where the code is: ``file:line`` of an op's body, of the Numba kernel it runs and of the NumPy
twin in ``kernels/twins.py`` that states the kernel's math in a few lines.

Kernels compiled with ``numba.njit`` are dispatchers; their Python function (``py_func``) is what
has a file and a line. Paths are given relative to the project folder (the one holding ``refrt/``
and ``kernels/``) when the code lives there.
"""

from __future__ import annotations

import importlib
import inspect
import os

from .result import CodeRef

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _relative(path: str) -> str:
    path = os.path.abspath(path)
    if path.startswith(_ROOT + os.sep):
        return os.path.relpath(path, _ROOT)
    return path


def _def_line(fn) -> tuple[str, int]:
    """File and the line of the ``def`` (not of its decorators)."""
    fn = inspect.unwrap(getattr(fn, "py_func", fn))
    path = inspect.getsourcefile(fn) or inspect.getfile(fn)
    lines, start = inspect.getsourcelines(fn)
    for offset, text in enumerate(lines):
        if text.lstrip().startswith(("def ", "async def ", "class ")):
            return path, start + offset
    return path, start


def locate(role: str, fn, name: str | None = None, detail: str = "") -> CodeRef:
    """A CodeRef for a function (or Numba dispatcher)."""
    path, line = _def_line(fn)
    raw = inspect.unwrap(getattr(fn, "py_func", fn))
    qual = name or f"{raw.__module__}.{raw.__qualname__}"
    return CodeRef(role, qual, _relative(path), line, detail)


def locate_name(role: str, dotted: str, detail: str = "") -> CodeRef | None:
    """A CodeRef for ``package.module:function`` (None if it does not exist on this install)."""
    module, _, attr = dotted.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return locate(role, obj, f"{module}.{attr}", detail)


# op (domain, type) -> [(role, "module:function", detail)], in the order the work happens
_K = "refrt.kernels"
_QUANTIZE = [("kernel", f"{_K}.quantize:_quantize_kernel", "float32 division, clamp, rint, + zp"),
             ("twin", f"{_K}.twins:quantize_linear_twin", "")]
_DEQUANTIZE = [("kernel", f"{_K}.quantize:_dequantize_kernel", "float32(x - zp) * scale"),
               ("twin", f"{_K}.twins:dequantize_linear_twin", "")]

KERNELS = {
    ("ai.onnx", "QuantizeLinear"): _QUANTIZE,
    ("com.microsoft", "QuantizeLinear"): _QUANTIZE,
    ("ai.onnx", "DequantizeLinear"): _DEQUANTIZE,
    ("com.microsoft", "DequantizeLinear"): _DEQUANTIZE,
    ("ai.onnx", "DynamicQuantizeLinear"): [
        ("kernel", f"{_K}.quantize:_range_kernel", "min and max of x"),
        ("kernel", f"{_K}.quantize:_dynamic_params", "scale and zero point"),
        ("kernel", f"{_K}.quantize:_quantize_kernel", "the elements"),
        ("twin", f"{_K}.twins:dynamic_quantize_linear_twin", "")],
    ("ai.onnx", "MatMulInteger"): [
        ("kernel", f"{_K}.gemm:_gemm_dot_kernel", "portable int32 GEMM, zero points by row/column sums"),
        ("kernel", f"{_K}.gemm:_gemm_pair_saturating_kernel", "ORT's AVX2 u8 x s8 arithmetic (emulate_avx2_u8s8)"),
        ("twin", f"{_K}.twins:gemm_int8_twin", ""),
        ("twin", f"{_K}.twins:gemm_u8s8_avx2_saturating_twin", "")],
    ("ai.onnx", "ConvInteger"): [
        ("kernel", f"{_K}.conv:conv_int8", "im2col + int32 GEMM; depthwise: direct kernel"),
        ("kernel", f"{_K}.gemm:_gemm_dot_kernel", "the GEMM, zero points by row/column sums"),
        ("kernel", f"{_K}.conv:conv_integer_s8u8_avx2_saturating", "ORT's AVX2 arithmetic (emulate_avx2_u8s8)"),
        ("twin", f"{_K}.twins:conv_int8_twin", "")],
    ("ai.onnx", "QLinearMatMul"): [
        ("kernel", f"{_K}.gemm:_gemm_dot_kernel", "int32 GEMM"),
        ("kernel", f"{_K}.quantize:requantize_multiplier", "float32 multiplier"),
        ("kernel", f"{_K}.quantize:_requantize_kernel", "float32(acc) * m, rint, + zp, saturate"),
        ("twin", f"{_K}.twins:gemm_int8_twin", ""),
        ("twin", f"{_K}.twins:gemm_u8s8_avx2_saturating_twin", ""),
        ("twin", f"{_K}.twins:requantize_twin", "")],
    ("ai.onnx", "QLinearConv"): [
        ("kernel", f"{_K}.conv:conv_int8", "im2col + int32 GEMM; depthwise: direct kernel"),
        ("kernel", f"{_K}.conv:conv_u8s8_avx2_saturating", "ORT's AVX2 arithmetic (emulate_avx2_u8s8)"),
        ("kernel", f"{_K}.quantize:requantize_multiplier", "float32 multiplier"),
        ("kernel", f"{_K}.quantize:_requantize_kernel", "float32(acc) * m, rint, + zp, saturate"),
        ("twin", f"{_K}.twins:conv_int8_twin", ""),
        ("twin", f"{_K}.twins:conv_u8s8_avx2_saturating_twin", ""),
        ("twin", f"{_K}.twins:requantize_twin", "")],
    ("com.microsoft", "DynamicQuantizeMatMul"): [
        ("kernel", f"{_K}.quantize:dynamic_quantize_linear", "A to uint8"),
        ("kernel", f"{_K}.gemm:_gemm_dot_kernel", "int32 GEMM"),
        ("twin", f"{_K}.twins:dynamic_quantize_linear_twin", ""),
        ("twin", f"{_K}.twins:gemm_int8_twin", "")],
    ("com.microsoft", "MatMulIntegerToFloat"): [
        ("kernel", f"{_K}.gemm:_gemm_dot_kernel", "int32 GEMM"),
        ("twin", f"{_K}.twins:gemm_int8_twin", ""),
        ("twin", f"{_K}.twins:scale_bias_int32_twin", "float32(acc) * scale + bias")],
    ("com.microsoft", "QLinearAdd"): [
        ("helper", f"{_K}.fma:fma32", "float32 fused multiply-add in NumPy")],
    ("ai.onnx", "MatMul"): [
        ("kernel", f"{_K}.fgemm:batched_matmul_f32", "stacks of small float32 products"),
        ("kernel", f"{_K}.fgemm:matmul_packed_f32", "constant 2-D weights, AVX-512")],
    ("ai.onnx", "Softmax"): [
        ("kernel", f"{_K}.rows:softmax_rows", "float32 rows of 4096+ elements, numerics 'ort'")],
    ("ai.onnx", "LayerNormalization"): [
        ("kernel", f"{_K}.rows:layer_norm_rows", "float32 rows of 4096+ elements, numerics 'ort'")],
}

# ops whose registered function is a wrapper: point at the function that states the math
BODIES = {
    ("ai.onnx", "Softmax"): "refrt.ops.reduce:softmax",
}


def code_refs(domain: str, op_type: str, fn) -> list[CodeRef]:
    """The op body (and its helpers' kernels and twins) for one op."""
    refs = []
    body = BODIES.get((domain, op_type))
    ref = locate_name("op", body) if body else None
    refs.append(ref or locate("op", fn))
    for role, dotted, detail in KERNELS.get((domain, op_type), ()):
        ref = locate_name(role, dotted, detail)
        if ref is not None:
            refs.append(ref)
    return refs
