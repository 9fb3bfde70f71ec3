"""The README's main job: `refrt demo` on the bundled model."""

import json
import os

import pytest

from refrt.cli import main

pytest.importorskip("onnxruntime")


def test_demo_reports_accuracy_agreement_and_quantized_models(capsys):
    assert main(["demo", "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    fp32 = {r["runtime"]: r for r in report["rows"]}
    assert fp32["refrt"]["accuracy"] >= 0.95
    assert fp32["refrt"]["accuracy"] == fp32["onnxruntime"]["accuracy"]
    assert report["agreement"]["same_prediction"] == 1.0
    from refrt import host as _host
    assert report["host"]["cpu_class"] == _host.info().cpu_class
    modes = [r["mode"] for r in report["quantized"]]
    assert modes == ["dynamic", "static QDQ", "static QOperator"]
    for row in report["quantized"]:
        assert row["int8"]["refrt"] == row["int8"]["onnxruntime"], row
        assert row["int8"]["refrt"] >= 0.9
        assert row["size_int8"] < row["size_fp32"]


def test_quantize_command(tmp_path, capsys):
    from refrt.cli import DATA_DIR
    out = tmp_path / "q.onnx"
    rc = main(["quantize", f"{DATA_DIR}/digits_cnn.onnx", str(out), "--mode", "dynamic", "--json"])
    assert rc == 0 and out.exists()
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "dynamic"
    assert summary["op_types"]["Conv"] == {"nodes": 2, "quantized": 2, "float": 0, "removed": 0}
    assert summary["size_after"] < summary["size_before"]


# ---------------------------------------------------------------- refrt run, refrt quantize, refrt host

import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from refrt import host  # noqa: E402


def _save(tmp_path, nodes, inputs, outputs, inits=(), name="m.onnx", opset=13):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, path)
    return str(path)


def _run_json(capsys, *argv):
    assert main(["run", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_random_integer_inputs_span_their_type(tmp_path, capsys):
    vi = helper.make_tensor_value_info
    path = _save(tmp_path, [helper.make_node("Identity", ["a"], ["ya"]), helper.make_node("Identity", ["b"], ["yb"]),
                            helper.make_node("Identity", ["f"], ["yf"])],
                 [vi("a", TensorProto.UINT8, ["n", 64]), vi("b", TensorProto.INT8, ["n", 64]),
                  vi("f", TensorProto.FLOAT, ["n", 64])],
                 [vi("ya", TensorProto.UINT8, None), vi("yb", TensorProto.INT8, None),
                  vi("yf", TensorProto.FLOAT, None)])
    out = _run_json(capsys, path, "--random-inputs", "--dim", "n=32")["outputs"]
    assert out["ya"]["shape"] == [32, 64]
    assert out["ya"]["min"] <= 2 and out["ya"]["max"] >= 253      # not just 0 and 1
    assert out["yb"]["min"] <= -126 and out["yb"]["max"] >= 125
    out = _run_json(capsys, path, "--random-inputs", "--range", "a=3:5", "--range=-0.5:0.5")["outputs"]
    assert 3 <= out["ya"]["min"] and out["ya"]["max"] <= 5
    assert -1 <= out["yb"]["min"] and out["yb"]["max"] <= 0           # [-0.5, 0.5] holds -0 only
    assert -0.5 <= out["yf"]["min"] and out["yf"]["max"] < 0.5
    assert main(["run", path, "--random-inputs", "--range", "a=-3:5"]) == 1
    assert "not inside uint8's range" in capsys.readouterr().err
    assert main(["run", path, "--random-inputs", "--range", "zz=1:2"]) == 1
    assert "no such input" in capsys.readouterr().err


def test_unknown_dim_names_are_errors_and_the_readme_example_runs(capsys):
    from refrt.cli import DATA_DIR
    model = f"{DATA_DIR}/digits_cnn.onnx"
    assert main(["run", model, "--random-inputs", "--dim", "batch=4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--dim batch" in err and "symbolic dimensions are N" in err
    out = _run_json(capsys, model, "--random-inputs", "--dim", "N=4")   # as the README says
    assert out["outputs"]["logits"]["shape"] == [4, 10]
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    digits_lines = [line for line in readme.splitlines() if "digits_cnn.onnx" in line and "--dim" in line]
    assert digits_lines and all("--dim N=" in line and "--dim batch" not in line for line in digits_lines)


def test_quantize_and_run_report_errors_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    for argv in (["quantize", str(bad), str(tmp_path / "o.onnx"), "--mode", "dynamic"],
                 ["quantize", str(tmp_path / "missing.onnx"), str(tmp_path / "o.onnx"), "--mode", "dynamic"],
                 ["run", str(bad)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err, err


def test_a_closed_pipe_ends_quietly():
    """`refrt run --json | head`: the reader goes away; no broken-pipe message."""
    from refrt.cli import DATA_DIR
    p = subprocess.Popen([sys.executable, "-m", "refrt.cli", "run", f"{DATA_DIR}/digits_cnn.onnx",
                          "--random-inputs", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read()
    p.stderr.close()
    assert p.wait(timeout=120) == 1
    assert err == b"", err


def test_quantize_summary_says_when_the_file_grows(tmp_path, capsys):
    vi = helper.make_tensor_value_info
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    path = _save(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", TensorProto.FLOAT, [1, 2])],
                 [vi("y", TensorProto.FLOAT, None)], [w])
    assert main(["quantize", path, str(tmp_path / "q.onnx"), "--mode", "dynamic"]) == 0
    text = capsys.readouterr().out
    assert "x larger" in text and "smaller" not in text
    assert "MatMul       1          1      0        0" in text
    assert "output model: " in text and "MatMulInteger x1" in text


def _u8s8_matmul(tmp_path):
    vi = helper.make_tensor_value_info
    rng = np.random.default_rng(3)
    b = rng.choice(np.array([-128, 127, -100, 90], np.int8), size=(64, 16))
    return _save(tmp_path, [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
                 [vi("a", TensorProto.UINT8, [8, 64])], [vi("y", TensorProto.INT32, None)],
                 [numpy_helper.from_array(b, "b")])


def test_compare_ort_explains_the_avx2_saturation(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    path = _u8s8_matmul(tmp_path)
    report = _run_json(capsys, path, "--random-inputs", "--compare-ort")
    if host.ort_u8s8_saturates():
        assert not report["compare_ort"]["y"]["equal"]
        assert report["compare_ort_emulated"]["y"]["equal"]
        assert "saturating int16" in report["hint"] and "bit for bit" in report["hint"]
        text_argv = ["run", path, "--random-inputs", "--compare-ort"]
        assert main(text_argv) == 0
        assert "--emulate-avx2-u8s8" in capsys.readouterr().out
    else:   # onnxruntime is exact here: nothing to explain
        assert report["compare_ort"]["y"]["equal"] and "hint" not in report
    # with the switch on, refrt reproduces onnxruntime on this machine in every case
    report = _run_json(capsys, path, "--random-inputs", "--compare-ort",
                       *(["--emulate-avx2-u8s8"] if host.ort_u8s8_saturates() else []))
    assert report["compare_ort"]["y"]["equal"]


def test_numerics_and_emulation_flags_reach_the_session(tmp_path, capsys):
    vi = helper.make_tensor_value_info
    path = _save(tmp_path, [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])],
                 [vi("x", TensorProto.FLOAT, [4])], [vi(n, t, None) for n, t in
                                                     (("y", TensorProto.UINT8), ("s", TensorProto.FLOAT),
                                                      ("z", TensorProto.UINT8))])
    x = tmp_path / "x.npy"
    np.save(x, np.zeros(4, np.float32))   # all zero: onnxruntime's scale 1, the spec's 0
    assert _run_json(capsys, path, "--input", f"x={x}")["outputs"]["s"]["max"] == 1.0
    assert _run_json(capsys, path, "--input", f"x={x}", "--numerics", "spec")["outputs"]["s"]["max"] == 0.0
    a = tmp_path / "a.npy"
    np.save(a, np.full((8, 64), 255, np.uint8))
    mm = _u8s8_matmul(tmp_path)
    exact = _run_json(capsys, mm, "--input", f"a={a}")["outputs"]["y"]
    emulated = _run_json(capsys, mm, "--input", f"a={a}", "--emulate-avx2-u8s8")["outputs"]["y"]
    assert exact != emulated


def test_host_command(capsys):
    assert main(["host", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cpu_class"] == host.info().cpu_class and info["int8_kernel"] in info["int8_kernels"]
    assert main(["host"]) == 0
    assert "int8 kernel" in capsys.readouterr().out


def test_backend_takes_session_options():
    import refrt.backend as backend
    vi = helper.make_tensor_value_info
    model = helper.make_model(helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "g",
        [vi("x", TensorProto.FLOAT, [4])], [vi(n, t, None) for n, t in
                                            (("y", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8))]),
        opset_imports=[helper.make_opsetid("", 13)])
    x = np.zeros(4, np.float32)
    assert backend.prepare(model).run([x])[1] == 1.0
    rep = backend.prepare(model, numerics="spec")
    assert rep.session.get_session_options().numerics == "spec" and rep.run([x])[1] == 0.0
    assert backend.run_model(model, [x], numerics="spec")[1] == 0.0
    node = model.graph.node[0]
    assert backend.run_node(node, [x], numerics="spec")[1] == 0.0
    assert backend.prepare(model, emulate_avx2_u8s8=True).session.get_session_options().emulate_avx2_u8s8
