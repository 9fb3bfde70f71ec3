"""Whole models as onnxruntime's default optimizations leave them, run by refrt.

The bundled digits CNN, ``mobilenet_like`` (with symbolic and with fixed input dims: the fixed
ones let onnxruntime fuse a residual Add into FusedConv's sum input) and ``bert_encoder``, each
as float32 and in its static QDQ and QOperator quantizations (``quantize_static``), are
optimized by onnxruntime itself in two ways:

* saved by a session at ``ORT_ENABLE_ALL`` through ``optimized_model_filepath`` (FusedConv,
  FusedGemm, FusedMatMul, channels-last QLinearConv, NhwcMaxPool, QGemm, QLinear* ops, and
  com.microsoft.nchwc layouts for float convolutions);
* converted to ``.ort`` by ``python -m onnxruntime.tools.convert_onnx_models_to_ort`` at its
  default level (the same fusions without the NCHWc ones).

refrt runs each file as it is (``graph_optimization_level=0``) and must give onnxruntime's
outputs on that file bit for bit. The float MobileNet takes a ReduceMean over its channel axis,
whose summation order refrt does not reproduce (docs/NUMERICS.md): there the outputs agree to
1e-6 relative, and every node whose inputs are the same bits in both runtimes must give the same
bits (each intermediate value is compared, the NCHWc-ordered ones included), which holds for
every node but that ReduceMean.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

import refrt
from refrt.graph.load import load_model
from refrt.testing import models

from ort_helpers import refrt_like_ort

ort = pytest.importorskip("onnxruntime")

DATA = os.path.join(os.path.dirname(refrt.__file__), "data")
BASES = ["digits", "mobilenet", "mobilenet_fixed", "bert"]
NAMES = [f"{b}{s}" for b in BASES for s in ("", "_QDQ", "_QOperator")]
# ops whose float32 bits refrt does not reproduce (docs/NUMERICS.md): a ReduceMean over the
# channel axis (MobileNet's)
NOT_BIT_EXACT = {("", "ReduceMean")}


def _mobilenet_fixed():
    model = models.mobilenet_like()
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, (2, 3, 32, 32)):
        dim.ClearField("dim_param")
        dim.dim_value = value
    return model


def feeds(name: str, variant: int = 0) -> dict:
    if name.startswith("digits"):
        x = np.load(os.path.join(DATA, "digits_test.npz"))["x"]
        return {"input": x[16 * variant:16 * variant + 16]}
    if name.startswith("mobilenet"):
        rng = np.random.default_rng(50 + variant)
        return {"image": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}
    return models.bert_feeds(2, 12, seed=60 + variant)


def _calibration(base):
    if base == "digits":
        calib = np.load(os.path.join(DATA, "digits_test.npz"))["calib"]
        return [{"input": calib[i:i + 16]} for i in range(0, len(calib), 16)]
    if base.startswith("mobilenet"):
        return [feeds(base, 10 + i) for i in range(3)]
    return [models.bert_feeds(2, 12, seed=s) for s in range(3)]


def _ort_session(path, level):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def optimized(tmp_path_factory):
    """{"onnx": {name: ORT-saved optimized .onnx}, "ort": {name: default-level .ort}}"""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, batches):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    src = tmp_path_factory.mktemp("src")
    sources = {"digits": onnx.load(os.path.join(DATA, "digits_cnn.onnx")),
               "mobilenet": models.mobilenet_like(), "mobilenet_fixed": _mobilenet_fixed(),
               "bert": models.bert_encoder(layers=1, hidden=32, heads=4)}
    for base, model in sources.items():
        onnx.save(model, src / f"{base}.onnx")
        for fmt in ("QDQ", "QOperator"):
            quantize_static(str(src / f"{base}.onnx"), str(src / f"{base}_{fmt}.onnx"),
                            Reader(_calibration(base)), quant_format=getattr(QuantFormat, fmt))
    saved = tmp_path_factory.mktemp("saved")
    onnx_files = {}
    for name in NAMES:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(saved / f"{name}.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(str(src / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])
        onnx_files[name] = str(saved / f"{name}.onnx")
    out = tmp_path_factory.mktemp("ort")
    env = {k: v for k, v in os.environ.items()
           if k != "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"}
    subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort",
                    str(src), "--output_dir", str(out), "--optimization_style", "Fixed"],
                   env=env, check=True, capture_output=True, timeout=900)
    return {"onnx": onnx_files, "ort": {n: str(out / f"{n}.ort") for n in NAMES}}


def _ops(proto):
    return {(n.domain or "", n.op_type) for n in proto.graph.node}


def _all_values(proto, path_feeds):
    """Every node output of ``proto`` in refrt and in onnxruntime (optimizations off), as
    {name: (ours, theirs)}, and the nodes in the graph's order."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    names = [o for n in exposed.graph.node for o in n.output if o]
    del exposed.graph.output[:]
    exposed.graph.output.extend([onnx.helper.make_empty_tensor_value_info(o) for o in names])
    data = exposed.SerializeToString()
    ours = refrt_like_ort(data, graph_optimization_level=0).run(None, path_feeds)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    theirs = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, path_feeds)
    return dict(zip(names, zip(ours, theirs)))


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def check_file(path, name):
    """refrt on ``path`` vs onnxruntime on ``path``: bit for bit, or (where a NOT_BIT_EXACT op
    is in the graph) close, with every node fed the same bits giving the same bits."""
    proto = refrt.InferenceSession(path, graph_optimization_level=0).model
    inexact = _ops(proto) & NOT_BIT_EXACT
    level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for variant in (0, 1):
        f = feeds(name, variant)
        ours = refrt_like_ort(path, graph_optimization_level=0).run(None, f)
        theirs = _ort_session(path, level).run(None, f)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            if inexact and a.dtype.kind == "f":
                assert a.shape == b.shape and a.dtype == b.dtype
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
            else:
                assert _same(a, b), (name, path)
    if not inexact:
        return
    values = _all_values(proto, feeds(name))
    graph_inputs = {i.name for i in proto.graph.input} | {t.name for t in proto.graph.initializer}
    for node in proto.graph.node:
        same_inputs = all(i == "" or i in graph_inputs or _same(*values[i]) for i in node.input)
        if same_inputs and ((node.domain or ""), node.op_type) not in NOT_BIT_EXACT:
            for o in node.output:
                assert not o or _same(*values[o]), (name, node.name, node.op_type, o)


@pytest.mark.parametrize("name", NAMES)
def test_saved_optimized_onnx_runs_like_onnxruntime(optimized, name):
    check_file(optimized["onnx"][name], name)


@pytest.mark.parametrize("name", NAMES)
def test_default_level_ort_file_runs_like_onnxruntime(optimized, name):
    check_file(optimized["ort"][name], name)


def test_the_optimized_graphs_use_the_fused_ops(optimized):
    """What the runs above cover: each fused op appears in some file (FusedConv with its sum
    input in the fixed-shape MobileNet)."""
    def ops(path):
        proto = onnx.load(path) if path.endswith(".onnx") else load_model(path)[0]
        return {(n.domain, n.op_type, len(n.input)) for n in proto.graph.node}

    seen = set()
    for kind in ("onnx", "ort"):
        for path in optimized[kind].values():
            seen |= ops(path)
    names = {(d, op) for d, op, _ in seen}
    for op_type in ("FusedConv", "FusedGemm", "FusedMatMul", "QLinearConv", "NhwcMaxPool",
                    "QGemm"):
        assert ("com.microsoft", op_type) in names, op_type
    assert ("com.microsoft", "FusedConv", 4) in seen
    ort_fixed = ops(optimized["ort"]["mobilenet_fixed"])
    assert ("com.microsoft", "FusedConv", 4) in ort_fixed
    assert not any(d == "com.microsoft.nchwc" for d, _, _ in
                   set().union(*(ops(p) for p in optimized["ort"].values())))
