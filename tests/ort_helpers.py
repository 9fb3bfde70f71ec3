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


def refrt_like_ort_unoptimized(model, **options):
    """``refrt_like_ort`` with graph optimizations off, to compare with ``ort_session``: at its
    default level refrt fuses QDQ node units as onnxruntime does at its own default level, and
    where onnxruntime's u8 x s8 GEMM saturates (AVX2 without VNNI) the fused integer kernels
    saturate like onnxruntime's, while the unfused DequantizeLinear -> float op -> QuantizeLinear
    of a session without optimizations does not."""
    return refrt_like_ort(model, graph_optimization_level=refrt.GraphOptimizationLevel.ORT_DISABLE_ALL,
                          **options)


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
level = sys.argv[3] if len(sys.argv) > 3 else "ORT_DISABLE_ALL"
so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
results = {}
for i in range(int(data["count"])):
    sess = ort.InferenceSession(data[f"model{i}"].tobytes(), so, providers=["CPUExecutionProvider"])
    names = [x.name for x in sess.get_inputs()]
    outs = sess.run(None, {name: data[f"in{i}_{name}"] for name in names})
    for j, out in enumerate(outs):
        results[f"out{i}_{j}"] = out
np.savez(sys.argv[2], **results)
'''


def run_models_avx2(runs, tmp_path, prefix, timeout=300, level="ORT_DISABLE_ALL"):
    """Run each (ModelProto, feeds dict) of ``runs`` in onnxruntime behind ``prefix`` (from
    ``avx2_ort_prefix``), at graph optimization ``level`` (a GraphOptimizationLevel name); return
    one list of outputs per run."""
    arrays = {"count": np.array(len(runs))}
    for i, (model, feeds) in enumerate(runs):
        arrays[f"model{i}"] = np.frombuffer(model.SerializeToString(), dtype=np.uint8)
        for name, value in feeds.items():
            arrays[f"in{i}_{name}"] = value
    np.savez(tmp_path / "ort_in.npz", **arrays)
    (tmp_path / "run_models.py").write_text(_RUN_MODELS_SCRIPT)
    command = prefix + [sys.executable, str(tmp_path / "run_models.py"), str(tmp_path / "ort_in.npz"),
                        str(tmp_path / "ort_out.npz"), level]
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


# -- onnxruntime's transformer optimizer on refrt.testing.models.bert_encoder ----------------

def exporter_patterns(model):
    """Rewrite three spots of ``bert_encoder`` into the forms onnxruntime's fusions look for
    (those of PyTorch's BERT export): the mask bias as (1 - float(mask[:, None, None, :])) *
    -10000, the scores divided by sqrt(head_size) rather than multiplied by its inverse, and GELU
    as Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5. The arithmetic is unchanged."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    g = model.graph
    consts = {"p.one": 1.0, "p.neg": -10000.0, "p.sqrt2": float(np.sqrt(2.0)), "p.half": 0.5}
    nodes, producer = [], {o: n for n in g.node for o in n.output}
    inits = {t.name: t for t in g.initializer}
    skip = set()
    for n in g.node:
        if n.name in ("mask.is_padding", "mask.bias"):
            continue
        if n.name == "mask.bias_4d":
            nodes += [helper.make_node("Unsqueeze", ["attention_mask", "p.axis1"], ["p.m1"]),
                      helper.make_node("Unsqueeze", ["p.m1", "p.axis2"], ["p.m2"]),
                      helper.make_node("Cast", ["p.m2"], ["p.m3"], to=TensorProto.FLOAT),
                      helper.make_node("Sub", ["p.one", "p.m3"], ["p.m4"]),
                      helper.make_node("Mul", ["p.m4", "p.neg"], list(n.output))]
            continue
        if n.op_type == "Mul" and n.name.endswith(".scale"):
            consts["p.sqrt_head"] = float(1 / numpy_helper.to_array(inits[n.input[1]]))
            n = helper.make_node("Div", [n.input[0], "p.sqrt_head"], list(n.output), name=n.name)
        if n.op_type == "Mul" and n.name.endswith(".gelu"):
            # gelu = Mul(Mul(x, half), Add(Erf(Mul(x, inv_sqrt2)), one))
            add = producer[n.input[1]]
            erf = producer[add.input[0]]
            pre = producer[erf.input[0]]
            x = pre.input[0]
            skip |= {producer[n.input[0]].name, add.name, erf.name, pre.name}
            p = n.name
            nodes += [helper.make_node("Div", [x, "p.sqrt2"], [p + ".div"]),
                      helper.make_node("Erf", [p + ".div"], [p + ".erf"]),
                      helper.make_node("Add", [p + ".erf", "p.one"], [p + ".add"]),
                      helper.make_node("Mul", [x, p + ".add"], [p + ".mul"]),
                      helper.make_node("Mul", [p + ".mul", "p.half"], list(n.output))]
            continue
        nodes.append(n)
    nodes = [n for n in nodes if n.name not in skip or not n.name]
    extra = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in consts.items()]
    extra += [numpy_helper.from_array(np.array([a], np.int64), f"p.axis{a}") for a in (1, 2)]
    g.ClearField("node")
    g.node.extend(nodes)
    g.initializer.extend(extra)
    onnx.checker.check_model(model)
    return model


def ort_optimize_bert(model, tmp_path, name, num_heads=4, hidden_size=64):
    """onnxruntime.transformers.optimizer.optimize_model at opt_level=1: onnxruntime's basic graph
    optimizations first (done here directly: optimize_model imports torch for that step), then
    the BERT fusions."""
    import onnx
    import onnxruntime as ort
    import pytest
    pytest.importorskip("sympy")   # the optimizer's symbolic shape inference needs it
    from onnxruntime.transformers.optimizer import optimize_model
    src, basic = tmp_path / f"{name}.onnx", tmp_path / f"{name}_basic.onnx"
    onnx.save(model, src)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(basic)
    so.log_severity_level = 3
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"],
                         disabled_optimizers=["ConstantSharing"])
    optimized = optimize_model(str(basic), model_type="bert", num_heads=num_heads,
                               hidden_size=hidden_size, opt_level=0)
    return optimized.model
