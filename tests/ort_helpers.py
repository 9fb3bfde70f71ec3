"""onnxruntime helpers shared by the tests.

* ``ort_session(model)``: a CPU session with graph optimizations disabled (op-by-op comparisons).
* ``refrt_like_ort(model, **options)``: a refrt session with the options that reproduce
  onnxruntime on this machine (``refrt.host.ort_matching_options()``: ``emulate_avx2_u8s8`` where
  its u8 x s8 GEMM saturates). Every test that compares refrt's default numerics with onnxruntime
  run in this process builds its refrt session with it.
* ``avx2_ort_prefix()``: how to run an onnxruntime whose u8 x s8 GEMM saturates int16 pairs (an
  AVX2 CPU without VNNI): natively where this machine's does (``refrt.host``), else under
  user-mode QEMU emulating a Haswell (``qemu-x86_64 -cpu Haswell``), else not at all (with the
  reason).
* ``run_models_avx2(runs, tmp_path)``: run (model, feeds) pairs in such an onnxruntime, in a
  subprocess, and return their outputs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np

import refrt
from refrt import host

ORT_SATURATES_U8S8 = host.ort_u8s8_saturates()


def refrt_like_ort(model, **options):
    """``refrt.InferenceSession(model, ...)`` with the options that reproduce onnxruntime here."""
    return refrt.InferenceSession(model, **{**host.ort_matching_options(), **options})


def ort_session(model):
    """onnxruntime CPU session for a ModelProto, graph optimizations off."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4  # fatal only: expected failures must not print
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def avx2_ort_prefix():
    """-> (command prefix, reason): ``[]`` to run natively where onnxruntime's u8 x s8 GEMM
    saturates here, ``["qemu-x86_64", "-cpu", "Haswell"]`` where QEMU can emulate such a CPU, or
    ``None`` and the reason why neither is possible."""
    if ORT_SATURATES_U8S8:
        return [], f"{host.info().cpu_class}: onnxruntime's u8 x s8 GEMM saturates natively"
    if shutil.which("qemu-x86_64") and os.uname().machine == "x86_64":
        return ["qemu-x86_64", "-cpu", "Haswell"], "emulated Haswell"
    return None, (f"onnxruntime's u8 x s8 GEMM is exact on this CPU ({host.info().cpu_class}) and "
                  "qemu-x86_64 (Debian package qemu-user) is absent to emulate one where it saturates")


_RUN_MODELS_SCRIPT = r'''
import sys
import numpy as np
import onnxruntime as ort

data = np.load(sys.argv[1])
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
results = {}
for i in range(int(data["count"])):
    sess = ort.InferenceSession(data[f"model{i}"].tobytes(), so, providers=["CPUExecutionProvider"])
    names = [x.name for x in sess.get_inputs()]
    outs = sess.run(None, {name: data[f"in{i}_{name}"] for name in names})
    for j, out in enumerate(outs):
        results[f"out{i}_{j}"] = out
np.savez(sys.argv[2], **results)
'''


def run_models_avx2(runs, tmp_path, prefix, timeout=300):
    """Run each (ModelProto, feeds dict) of ``runs`` in onnxruntime behind ``prefix`` (from
    ``avx2_ort_prefix``); return one list of outputs per run."""
    arrays = {"count": np.array(len(runs))}
    for i, (model, feeds) in enumerate(runs):
        arrays[f"model{i}"] = np.frombuffer(model.SerializeToString(), dtype=np.uint8)
        for name, value in feeds.items():
            arrays[f"in{i}_{name}"] = value
    np.savez(tmp_path / "ort_in.npz", **arrays)
    (tmp_path / "run_models.py").write_text(_RUN_MODELS_SCRIPT)
    command = prefix + [sys.executable, str(tmp_path / "run_models.py"), str(tmp_path / "ort_in.npz"),
                        str(tmp_path / "ort_out.npz")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"onnxruntime subprocess failed: {proc.stderr[-2000:]}")
    out = np.load(tmp_path / "ort_out.npz")
    results = []
    for i in range(len(runs)):
        outs, j = [], 0
        while f"out{i}_{j}" in out:
            outs.append(out[f"out{i}_{j}"])
            j += 1
        results.append(outs)
    return results
