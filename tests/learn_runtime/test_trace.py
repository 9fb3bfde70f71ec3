"""``refrt run --trace``: Numba's compile time apart from run time, scale and zero point of
quantized tensors, columns aligned whatever the names' lengths."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import refrt
from refrt.cli import Tracer, main
from refrt.profiling import CompileClock

numba = pytest.importorskip("numba")
DATA = os.path.join(os.path.dirname(refrt.__file__), "data")


def test_compile_clock_times_a_first_call_and_not_a_second():
    @numba.njit(cache=False)
    def fresh_kernel(x):
        return x * 2.0 + 1.0

    clock = CompileClock().start()
    try:
        fresh_kernel(np.ones(3))
        first, compiled = clock.seconds, list(clock.compiled)
        fresh_kernel(np.ones(3))
        assert clock.seconds == first and clock.compiled == compiled
    finally:
        clock.stop()
    assert first > 0
    assert any(c.startswith("fresh_kernel(") for c in compiled), compiled
    fresh_kernel(np.ones(3, np.int64))            # compiled after stop(): not counted
    assert clock.seconds == first


def erf_model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])
    g = helper.make_graph([helper.make_node("Erf", ["x"], ["y"], name="erf")], "g", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_tracer_reports_compile_time_apart_from_run_time(monkeypatch):
    """The Erf node's kernel swapped for a freshly defined Numba function: its first run compiles
    (reported as jit time, not run time), its second does not."""
    from refrt.ops import _kernels

    @numba.njit(cache=False)
    def erf_for_the_test(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out.flat[i] = np.float32(0.5) * x.flat[i]
        return out

    monkeypatch.setattr(_kernels.K, "erf_f32", erf_for_the_test)
    sess = refrt.InferenceSession(erf_model())
    out = io.StringIO()
    tracer = Tracer(out, session=sess)
    sess.add_hook(tracer)
    x = np.ones((4, 8), np.float32)
    try:
        sess.run(None, {"x": x})
        sess.run(None, {"x": x})
    finally:
        tracer.close()
    first, second = tracer.records
    assert first["compile_ms"] > 0 and any(c.startswith("erf_for_the_test(") for c in first["compiled"])
    assert second["compile_ms"] == 0 and second["compiled"] == []
    # the compile is not in the run time: the first run's "ms" is far below its jit time
    assert first["ms"] < first["compile_ms"]
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:4] == ["run", "ms", "jit", "ms"]
    assert re.match(r"\s*[\d.]+\s+[\d.]+\s+Erf\s", lines[1]) and re.match(r"\s*[\d.]+\s+-\s+Erf\s", lines[2])
    assert "no JIT compile" not in tracer.summary() and "Numba's JIT" in tracer.summary()


@pytest.fixture(scope="module")
def qoperator_digits(tmp_path_factory):
    from refrt.quantization.report import quantize

    data = np.load(os.path.join(DATA, "digits_test.npz"))
    path = tmp_path_factory.mktemp("q") / "digits_qop.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quantize(onnx.load(os.path.join(DATA, "digits_cnn.onnx")), str(path), "static QOperator",
                 {"input": data["calib"][:32]}, False)
    x_path = path.parent / "x.npy"
    np.save(x_path, data["x"][:4])
    return path, x_path


def test_trace_shows_scale_and_zero_point_of_quantized_tensors(qoperator_digits, capsys):
    path, x_path = qoperator_digits
    model = onnx.load(str(path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert main(["run", str(path), "--input", f"input={x_path}", "--trace"]) == 0
    out = capsys.readouterr().out
    conv = next(n for n in model.graph.node if n.op_type == "QLinearConv")
    line = next(li for li in out.splitlines() if f" {conv.name} " in li)
    w_name, w_scale, w_zp = conv.input[3], inits[conv.input[4]], inits[conv.input[5]]
    assert f"{w_name}: s={float(w_scale):.6g} zp={int(w_zp)}" in line
    y_scale, y_zp = inits[conv.input[6]], inits[conv.input[7]]
    assert f"{conv.output[0]}: s={float(y_scale):.6g} zp={int(y_zp)}" in line
    q = next(li for li in out.splitlines() if "QuantizeLinear " in li and "Dequantize" not in li)
    assert " s=" in q and " zp=" in q
    relu_free = [li for li in out.splitlines() if "MaxPool" in li]
    assert relu_free and all("s=" not in li for li in relu_free)     # not a quantized op
    # the JSON trace carries them as fields
    assert main(["run", str(path), "--input", f"input={x_path}", "--trace", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rec = next(r for r in report["trace"] if r["op"] == "QLinearConv")
    assert {q["tensor"] for q in rec["quant"]} == {conv.input[0], conv.input[3], conv.output[0]}
    assert all("compile_ms" in r and "ms" in r for r in report["trace"])


def test_trace_columns_stay_aligned_with_long_names(tmp_path, capsys):
    long = "encoder.layer.11.attention.self.query.bias_add_with_a_very_long_name"
    nodes = [helper.make_node("Relu", ["x"], ["out_a"], name="r"),
             helper.make_node("Neg", ["out_a"], ["out_b"], name=long),
             helper.make_node("Identity", ["out_b"], ["out_c"], name="")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("out_c", TensorProto.FLOAT, [2, 3])])
    p = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), p)
    assert main(["run", str(p), "--random-inputs", "--trace"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0], lines[1:4]
    starts = {row.index(name + ":") for row, name in zip(rows, ("out_a", "out_b", "out_c"))}
    assert len(starts) == 1 and header.index("outputs") in starts
    assert {row.index(op) for row, op in zip(rows, ("Relu", "Neg", "Identity"))} == {header.index("op")}
    assert long in rows[1]


def test_run_profile_flag_writes_the_file(tmp_path, capsys):
    prefix = tmp_path / "cli"
    assert main(["run", os.path.join(DATA, "digits_cnn.onnx"), "--random-inputs", "--dim", "N=2",
                 "--profile", str(prefix)]) == 0
    out = capsys.readouterr().out
    written = [f for f in os.listdir(tmp_path) if f.startswith("cli_") and f.endswith(".json")]
    assert len(written) == 1 and written[0] in out
    with open(tmp_path / written[0]) as f:
        events = json.load(f)
    assert sum(e["cat"] == "Node" for e in events) == len(onnx.load(os.path.join(DATA, "digits_cnn.onnx")).graph.node)
