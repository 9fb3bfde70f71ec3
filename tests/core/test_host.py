"""refrt.host and refrt.kernels.cpu: the CPU-dependent choices, with faked feature sets.

The decisions are pure functions of a feature set (``cpu_class``, ``predict_ort_u8s8``,
``cpu.pick``), so every CPU class is checked here whatever machine runs the suite; on this machine
the prediction is also held against what onnxruntime really does (``probe_ort_u8s8``).
"""

from __future__ import annotations

import numpy as np
import pytest

import refrt
from refrt import host
from refrt.kernels import cpu, twins

AVX2 = {"sse4.1", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512dq", "avx512vl"}
CLASSES = {   # name: (features, refrt's CPU class, onnxruntime's u8 x s8 GEMM)
    "Haswell / Zen 1-3": (AVX2, "AVX2", "saturating"),
    "Skylake-X": (AVX512, "AVX-512", "saturating"),
    "Cascade Lake": (AVX512 | {"avx512vnni"}, "AVX512-VNNI", "exact"),
    "Alder Lake": (AVX2 | {"avxvnni"}, "AVX-VNNI", "exact"),
    "Sapphire Rapids": (AVX512 | {"avx512vnni", "avxvnni", "amx-tile", "amx-int8"}, "AMX", "exact"),
    "Nehalem": ({"sse4.1"}, "x86-64 without AVX2", "exact"),
    "Sandy Bridge": ({"sse4.1", "avx"}, "x86-64 without AVX2", "exact"),
}


@pytest.mark.parametrize("name", CLASSES)
def test_cpu_class_and_onnxruntime_path_of_each_class(name):
    features, klass, ort_path = CLASSES[name]
    assert host.cpu_class(features) == klass
    assert host.predict_ort_u8s8(features) == ort_path


def test_onnxruntime_path_special_cases():
    # AMX refused by the OS: MLAS keeps the AVX512-VNNI kernel, which is exact
    sapphire = CLASSES["Sapphire Rapids"][0]
    assert host.predict_ort_u8s8(sapphire, amx_granted=False) == "exact"
    # AVX2 without FMA is not MLAS's AVX2 class: the SSE kernels, exact
    assert host.predict_ort_u8s8(AVX2 - {"fma"}) == "exact"
    # other architectures
    assert host.predict_ort_u8s8(set(), machine="aarch64") == "exact"
    assert host.cpu_class(set(), machine="aarch64") == "aarch64"


def test_prediction_matches_onnxruntime_on_this_machine():
    pytest.importorskip("onnxruntime")
    _, features = cpu.features()
    amx = {"amx-tile", "amx-int8"} <= features
    predicted = host.predict_ort_u8s8(features, amx_granted=not amx or "amx" in cpu.runnable_int8_kernels())
    assert host.probe_ort_u8s8() == predicted
    assert host.info().ort_u8s8 == predicted
    assert host.info().ort_u8s8_source.startswith("measured with onnxruntime")


def test_matching_options_follow_the_probe():
    pytest.importorskip("onnxruntime")
    saturating = host.probe_ort_u8s8() == "saturating"
    assert host.ort_matching_options() == ({"emulate_avx2_u8s8": True} if saturating else {})
    # the options reproduce onnxruntime's probe product here: A all 255, B all 127
    from onnx import TensorProto, helper, numpy_helper

    b = numpy_helper.from_array(np.full((64, 16), 127, np.int8), "B")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "g",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, [8, 64])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [8, 16])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    (y,) = refrt.run(model, {"A": np.full((8, 64), 255, np.uint8)}, **host.ort_matching_options())
    assert (y == (32767 * 32 if saturating else 255 * 127 * 64)).all()


def test_pick_a_kernel():
    assert cpu.pick(("avx2", "portable"), None, cpu.INT8_KERNELS, "V") == "avx2"
    assert cpu.pick(("avx2", "portable"), "portable", cpu.INT8_KERNELS, "V") == "portable"
    assert cpu.pick(("avx2", "portable"), " AVX2 ", cpu.INT8_KERNELS, "V") == "avx2"
    with pytest.raises(cpu.KernelUnavailable, match="V='vnni'.*cannot run it; it can run avx2, portable"):
        cpu.pick(("avx2", "portable"), "vnni", cpu.INT8_KERNELS, "V")
    with pytest.raises(cpu.KernelUnavailable, match="expected one of amx, vnni, avx2, portable"):
        cpu.pick(("avx2", "portable"), "sse", cpu.INT8_KERNELS, "V")


@pytest.fixture
def forced(monkeypatch):
    """Set REFRT_INT8_KERNEL / REFRT_FLOAT_MATMUL for one test; the cached choices are forgotten
    before and after."""
    def force(var, value):
        monkeypatch.setenv(var, value)
        host.refresh()
    yield force
    monkeypatch.delenv(cpu.INT8_ENV, raising=False)
    monkeypatch.delenv(cpu.FLOAT_ENV, raising=False)
    host.refresh()


@pytest.mark.parametrize("kernel", cpu.INT8_KERNELS)
def test_forcing_the_int8_kernel(forced, kernel):
    if kernel not in cpu.runnable_int8_kernels():
        forced(cpu.INT8_ENV, kernel)
        with pytest.raises(cpu.KernelUnavailable, match=cpu.INT8_ENV):
            cpu.int8_kernel()
        return
    forced(cpu.INT8_ENV, kernel)
    assert cpu.int8_kernel() == kernel == host.info().int8_kernel
    assert refrt.kernels.gemm.default_kernel() == kernel
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (33, 100)).astype(np.uint8)
    b = rng.integers(-128, 128, (100, 40)).astype(np.int8)
    assert np.array_equal(refrt.kernels.gemm_int8(a, b, 7, -3), twins.gemm_int8_twin(a, b, 7, -3))


def test_forcing_the_float_matmul(forced):
    forced(cpu.FLOAT_ENV, "blas")
    assert cpu.float_matmul() == "blas" and not refrt.kernels.fgemm.packed_available()
    forced(cpu.FLOAT_ENV, "packed")
    if "avx512f" in cpu.features()[1] and cpu.compiles_for_host():
        assert cpu.float_matmul() == "packed"
    else:
        with pytest.raises(cpu.KernelUnavailable):
            cpu.float_matmul()


def test_a_kernel_this_cpu_cannot_run_is_refused_by_name():
    missing = [k for k in cpu.INT8_KERNELS if k not in cpu.runnable_int8_kernels()]
    if not missing:
        pytest.skip("this CPU runs every int8 kernel")
    a, b = np.zeros((4, 8), np.uint8), np.zeros((8, 4), np.int8)
    with pytest.raises(cpu.KernelUnavailable, match=f"the {missing[0]} int8 kernel cannot run here"):
        refrt.kernels.gemm_int8(a, b, kernel=missing[0])


def test_info_and_summary():
    h = host.info()
    assert h.int8_kernel in h.int8_kernels and h.int8_kernels[-1] == "portable"
    assert h.float_matmul in cpu.FLOAT_MATMULS and h.ort_u8s8 in ("exact", "saturating")
    assert set(h.features) <= set(cpu.FEATURES)
    line = host.summary()
    assert h.cpu_class in line and h.int8_kernel in line and h.ort_u8s8 in line
    assert h.as_dict()["cpu_class"] == h.cpu_class


_PROBE_SCRIPT = """
from refrt import host
from refrt.kernels import cpu
_, features = cpu.features()
print(host.cpu_class(features), host.predict_ort_u8s8(features), host.probe_ort_u8s8())
"""


@pytest.mark.parametrize("qemu_cpu, klass, ort_path", [("Haswell", "AVX2", "saturating"),
                                                       ("Nehalem", "x86-64 without AVX2", "exact")])
def test_prediction_matches_onnxruntime_on_emulated_cpus(qemu_cpu, klass, ort_path):
    """Under user-mode QEMU the CPU class, the prediction and onnxruntime's real behaviour agree
    for classes this machine may not be (QEMU's TCG has no AVX-512, so only these two)."""
    import os
    import shutil
    import subprocess
    import sys

    pytest.importorskip("onnxruntime")
    if not shutil.which("qemu-x86_64") or os.uname().machine != "x86_64":
        pytest.skip("qemu-x86_64 (Debian package qemu-user) is needed to emulate another x86-64 CPU")
    proc = subprocess.run(["qemu-x86_64", "-cpu", qemu_cpu, sys.executable, "-c", _PROBE_SCRIPT],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got_class, predicted, probed = proc.stdout.strip().rsplit("\n", 1)[-1].rsplit(" ", 2)
    assert (got_class, predicted, probed) == (klass, ort_path, ort_path)
