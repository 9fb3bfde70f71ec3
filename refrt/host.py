"""This machine, as refrt and onnxruntime see it: one place to ask.

    >>> from refrt import host
    >>> h = host.info()
    >>> h.cpu_class, h.int8_kernel, h.ort_u8s8
    ('AVX2', 'avx2', 'saturating')
    >>> sess = refrt.InferenceSession(model, **host.ort_matching_options())

* which CPU class this is (``cpu_class``: "AMX", "AVX512-VNNI", "AVX-VNNI", "AVX-512", "AVX2" or
  "x86-64 without AVX2"; another architecture by its name);
* which int8 GEMM kernel refrt runs (``int8_kernel``, forced with ``REFRT_INT8_KERNEL``) and which
  it could (``int8_kernels``), and which float32 MatMul path (``float_matmul``);
* which path onnxruntime's u8 x s8 integer GEMM takes here (``ort_u8s8``): "exact", or
  "saturating" where MLAS runs ``vpmaddubsw``, which adds the two byte products of each pair
  (k, k+1) into a saturating int16 before widening -- on AVX2 and on AVX-512 without VNNI. It is
  measured by running onnxruntime on a product that saturates (``probe_ort_u8s8``) when
  onnxruntime is installed, and otherwise predicted from the CPU's features by MLAS's own
  dispatch rules (``predict_ort_u8s8``); ``ort_u8s8_source`` says which.

Tests and the debugger ask ``ort_matching_options()`` which refrt options reproduce onnxruntime on
this machine (``emulate_avx2_u8s8=True`` where its GEMM saturates) instead of guessing.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass

from .kernels import cpu as _cpu

__all__ = ["HostInfo", "info", "cpu_class", "U8S8_GEMM_OPS", "predict_ort_u8s8", "probe_ort_u8s8",
           "ort_u8s8_saturates", "ort_matching_options", "summary"]


@dataclass(frozen=True)
class HostInfo:
    machine: str              # platform.machine()
    cpu_name: str             # LLVM's name for the CPU, e.g. "znver3", "sapphirerapids"
    cpu_class: str
    features: tuple           # the features refrt decides on (LLVM names), sorted
    int8_kernel: str          # what gemm_int8(kernel="auto") runs
    int8_kernels: tuple       # what this process can run, fastest first
    float_matmul: str         # "packed" or "blas"
    ort_u8s8: str             # "exact", "saturating" or "unknown"
    ort_u8s8_source: str      # how ort_u8s8 was obtained

    def as_dict(self) -> dict:
        return asdict(self)


AVX512_CORE = {"avx512f", "avx512bw", "avx512dq", "avx512vl"}

# ops whose uint8 x int8 products onnxruntime runs on its integer GEMM (where ort_u8s8 applies)
U8S8_GEMM_OPS = frozenset({"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "QGemm",
                           "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
                           "DynamicQuantizeLSTM"})


def cpu_class(features, machine: str = "x86_64") -> str:
    """The CPU class of a feature set (LLVM feature names), as refrt's docs and benchmark tables
    name it."""
    f = set(features)
    if machine not in ("x86_64", "AMD64", "i386", "i686"):
        return machine
    if {"amx-tile", "amx-int8", "avx512vnni"} <= f:
        return "AMX"
    if "avx512vnni" in f:
        return "AVX512-VNNI"
    if AVX512_CORE <= f:
        return "AVX-512"
    if "avxvnni" in f:
        return "AVX-VNNI"
    if "avx2" in f:
        return "AVX2"
    return "x86-64 without AVX2"


def predict_ort_u8s8(features, machine: str = "x86_64", amx_granted: bool = True) -> str:
    """onnxruntime's u8 x s8 GEMM on a CPU with these features, by MLAS's dispatch rules
    (``MLAS_PLATFORM``'s constructor, onnxruntime 1.32): AMX tiles (when the OS grants the tile
    state) and the VNNI kernels are exact; AVX2 and AVX-512 without VNNI use ``vpmaddubsw`` and
    saturate; SSE widens to int16 and is exact; other architectures are exact."""
    f = set(features)
    if machine not in ("x86_64", "AMD64"):
        return "exact"
    if {"amx-tile", "amx-int8"} <= f and amx_granted and "avx2" in f:
        return "exact"
    if "avx2" not in f or "fma" not in f:
        return "exact"                  # the SSE kernels
    if AVX512_CORE <= f:                # AVX-512 core overrides the AVX-VNNI kernel
        return "exact" if "avx512vnni" in f else "saturating"
    return "exact" if "avxvnni" in f else "saturating"


# The probe: A all 255 (uint8), B all 127 (int8). Exact: 255 * 127 * K; saturated, each pair of
# products 2 * 32385 = 64770 becomes 32767.
_PROBE_M, _PROBE_K, _PROBE_N = 8, 64, 16


def probe_ort_u8s8() -> str | None:
    """Run onnxruntime's MatMulInteger on a u8 x s8 product whose pairs saturate in int16:
    "exact" or "saturating", or None when onnxruntime is not installed."""
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    b = numpy_helper.from_array(np.full((_PROBE_K, _PROBE_N), 127, np.int8), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "probe",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [_PROBE_M, _PROBE_K])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [_PROBE_M, _PROBE_N])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"A": np.full((_PROBE_M, _PROBE_K), 255, np.uint8)})
    if (y == 255 * 127 * _PROBE_K).all():
        return "exact"
    if (y == 32767 * (_PROBE_K // 2)).all():
        return "saturating"
    raise RuntimeError(f"onnxruntime's u8 x s8 probe gave neither the exact nor the saturated sum: "
                       f"{sorted(set(y.reshape(-1).tolist()))[:4]}")


@functools.cache
def info() -> HostInfo:
    """This machine (cached for the process; ``refresh()`` forgets it)."""
    name, feats = _cpu.features()
    machine = platform.machine()
    kernels = _cpu.runnable_int8_kernels()
    probed = probe_ort_u8s8()
    if probed is not None:
        import onnxruntime

        ort_path, source = probed, f"measured with onnxruntime {onnxruntime.__version__}"
    else:
        amx = {"amx-tile", "amx-int8"} <= feats
        ort_path = predict_ort_u8s8(feats, machine, amx_granted=not amx or "amx" in kernels)
        source = "predicted from the CPU's features (onnxruntime is not installed)"
    return HostInfo(machine, name, cpu_class(feats, machine), tuple(sorted(feats)),
                    _cpu.int8_kernel(), kernels, _cpu.float_matmul(), ort_path, source)


def refresh() -> None:
    """Forget the cached answers (after changing ``REFRT_INT8_KERNEL`` or the like)."""
    _cpu.reset()
    info.cache_clear()


def ort_u8s8_saturates() -> bool:
    """True where onnxruntime's u8 x s8 GEMM saturates int16 pairs on this machine."""
    return info().ort_u8s8 == "saturating"


def ort_matching_options() -> dict:
    """The refrt session options that reproduce onnxruntime's CPU results on this machine:
    ``{"emulate_avx2_u8s8": True}`` where its u8 x s8 GEMM saturates, else ``{}``."""
    return {"emulate_avx2_u8s8": True} if ort_u8s8_saturates() else {}


def summary(h: HostInfo | None = None) -> str:
    """One line for benchmark tables and reports."""
    h = h or info()
    return (f"CPU {h.cpu_name} ({h.cpu_class}); refrt int8 kernel {h.int8_kernel}, float32 MatMul "
            f"{h.float_matmul}; onnxruntime u8 x s8 GEMM {h.ort_u8s8}")
