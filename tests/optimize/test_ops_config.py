"""Reduced-operator configs: refrt's writer against onnxruntime's own tool, and the restricted
session (refusals, identical results, only the op families it needs imported)."""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import refrt
from refrt.cli import main as cli_main
from refrt.errors import OperatorNotInConfigError, TypeNotInConfigError
from refrt.graph.required_ops import parse_config
from refrt.optimize.ops_config import required_operators_config
from refrt.testing import models

DIGITS = os.path.join(os.path.dirname(refrt.__file__), "data", "digits_cnn.onnx")


def _ort_tool_available() -> bool:
    try:
        import onnxruntime.tools.convert_onnx_models_to_ort  # noqa: F401
    except Exception:
        return False
    return True


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def ort_config(paths, tmp_path, types: bool, level: str = "disable") -> list[str]:
    """The lines onnxruntime's convert_onnx_models_to_ort writes for ``paths``, optimizations
    disabled (or at ``level``)."""
    src = tmp_path / "ort_in"
    src.mkdir(exist_ok=True)
    for p in paths:
        shutil.copy(p, src)
    out = tmp_path / "ort_out"
    env = dict(os.environ, ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL=level)
    cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(src),
           "--output_dir", str(out), "--optimization_style", "Fixed"]
    if types:
        cmd.append("--enable_type_reduction")
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    (config,) = glob.glob(str(out / "*.config"))
    with open(config) as f:
        return _lines(f.read())


def if_loop_model() -> onnx.ModelProto:
    """If and Loop bodies, Constant nodes inside and outside, a model-local function, and ops of
    the com.microsoft and ai.onnx.ml domains."""
    then_g = h.make_graph([h.make_node("Constant", [], ["c"], value=nh.from_array(np.float32([2]))),
                           h.make_node("Mul", ["x", "c"], ["t"])], "then", [],
                          [h.make_tensor_value_info("t", T.FLOAT, None)])
    else_g = h.make_graph([h.make_node("Neg", ["x"], ["e"])], "else", [],
                          [h.make_tensor_value_info("e", T.FLOAT, None)])
    body = h.make_graph(
        [h.make_node("Add", ["acc", "x"], ["acc2"]), h.make_node("Identity", ["cond"], ["cond2"]),
         h.make_node("Cast", ["i"], ["fi"], to=T.FLOAT), h.make_node("Sum", ["acc2", "fi"], ["scan"])],
        "body", [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond", T.BOOL, []),
                 h.make_tensor_value_info("acc", T.FLOAT, None)],
        [h.make_tensor_value_info("cond2", T.BOOL, []), h.make_tensor_value_info("acc2", T.FLOAT, None),
         h.make_tensor_value_info("scan", T.FLOAT, None)])
    fn = h.make_function("local", "Swishy", ["a"], ["b"],
                         [h.make_node("Sigmoid", ["a"], ["s"]), h.make_node("Mul", ["a", "s"], ["b"])],
                         [h.make_opsetid("", 13)])
    g = h.make_graph([
        h.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        h.make_node("Constant", [], ["zero"], value=nh.from_array(np.float32(0))),
        h.make_node("Greater", ["s", "zero"], ["b"]),
        h.make_node("If", ["b"], ["y"], then_branch=then_g, else_branch=else_g),
        h.make_node("Constant", [], ["n"], value=nh.from_array(np.int64(3))),
        h.make_node("Loop", ["n", "", "y"], ["z", "scans"], body=body),
        h.make_node("Swishy", ["z"], ["w"], domain="local"),
        h.make_node("FastGelu", ["w"], ["v"], domain="com.microsoft"),
        h.make_node("Normalizer", ["v"], ["out"], domain="ai.onnx.ml", norm="L2"),
    ], "g", [h.make_tensor_value_info("x", T.FLOAT, [3])],
        [h.make_tensor_value_info("out", T.FLOAT, None),
         h.make_tensor_value_info("scans", T.FLOAT, None)])
    m = h.make_model(g, functions=[fn], opset_imports=[
        h.make_opsetid("", 13), h.make_opsetid("local", 1), h.make_opsetid("com.microsoft", 1),
        h.make_opsetid("ai.onnx.ml", 3)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """The project's models, float and quantized (dynamic; static QDQ and QOperator)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    d = tmp_path_factory.mktemp("models")
    paths = {"digits": DIGITS}
    for name, m in [("bert", models.bert_encoder()), ("mobilenet", models.mobilenet_like()),
                    ("speech", models.speech_rnn()), ("ifloop", if_loop_model())]:
        paths[name] = str(d / f"{name}.onnx")
        onnx.save(m, paths[name])

    class Reader(CalibrationDataReader):
        def __init__(self, vi):
            shape = [x.dim_value or 1 for x in vi.type.tensor_type.shape.dim]
            rng = np.random.default_rng(0)
            self.it = iter([{vi.name: rng.standard_normal(shape).astype(np.float32)}
                            for _ in range(3)])

        def get_next(self):
            return next(self.it, None)

    for name in ("digits", "bert", "speech"):
        paths[f"{name}_dyn"] = str(d / f"{name}_dyn.onnx")
        quantize_dynamic(paths[name], paths[f"{name}_dyn"], weight_type=QuantType.QInt8)
    for name in ("digits", "mobilenet"):
        for fmt in ("QDQ", "QOperator"):
            out = paths[f"{name}_{fmt}"] = str(d / f"{name}_{fmt}.onnx")
            vi = onnx.load(paths[name]).graph.input[0]
            quantize_static(paths[name], out, Reader(vi), quant_format=getattr(QuantFormat, fmt))
    return paths


needs_tool = pytest.mark.skipif(not _ort_tool_available(),
                                reason="onnxruntime.tools.convert_onnx_models_to_ort is not installed")

CASES = [["digits"], ["digits_dyn"], ["digits_QDQ"], ["digits_QOperator"], ["bert"], ["bert_dyn"],
         ["mobilenet"], ["mobilenet_QDQ"], ["mobilenet_QOperator"], ["speech"], ["speech_dyn"],
         ["ifloop"], ["digits", "bert", "mobilenet", "speech", "ifloop", "digits_QOperator"]]


@needs_tool
@pytest.mark.parametrize("types", [False, True], ids=["ops", "types"])
@pytest.mark.parametrize("names", CASES, ids=["+".join(c) if len(c) == 1 else "merged" for c in CASES])
def test_config_matches_onnxruntime_tool(model_files, tmp_path, names, types):
    paths = [model_files[n] for n in names]
    assert _lines(required_operators_config(paths, types=types)) == ort_config(paths, tmp_path, types)


EXTENDED_CASES = [["digits_QDQ"], ["mobilenet_QDQ"], ["digits_QDQ", "mobilenet_QDQ", "digits_QOperator"]]


@needs_tool
@pytest.mark.parametrize("types", [False, True], ids=["ops", "types"])
@pytest.mark.parametrize("names", EXTENDED_CASES, ids=["digits_QDQ", "mobilenet_QDQ", "merged"])
def test_config_at_extended_matches_onnxruntime_tool_on_qdq_models(model_files, tmp_path, names, types):
    """At ``extended`` the QDQ units are onnxruntime's quantized ops (QLinearConv, QGemm, ...), in
    refrt's config as in onnxruntime's tool at its extended level."""
    paths = [model_files[n] for n in names]
    ours = _lines(required_operators_config(paths, types=types, level="extended"))
    assert ours == ort_config(paths, tmp_path, types, level="extended")
    assert any("QLinearConv" in ln for ln in ours) and ours != _lines(required_operators_config(paths))


def test_restricted_session_checks_the_graph_it_runs(model_files, tmp_path):
    """A QDQ model at the default level runs after the QDQ fusions: its config is the extended
    one; the config of the model as written fits a session at ORT_ENABLE_BASIC."""
    path = model_files["mobilenet_QDQ"]
    extended, plain = tmp_path / "extended.config", tmp_path / "disable.config"
    extended.write_text(required_operators_config(path, types=True, level="extended"))
    plain.write_text(required_operators_config(path, types=True))
    free = refrt.InferenceSession(path)
    feeds = {"image": np.random.default_rng(0).standard_normal([1, 3, 32, 32]).astype(np.float32)}
    restricted = refrt.InferenceSession(path, required_operators=str(extended))
    for a, b in zip(free.run(None, feeds), restricted.run(None, feeds)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(OperatorNotInConfigError, match="--level extended"):
        refrt.InferenceSession(path, required_operators=str(plain))
    basic = refrt.GraphOptimizationLevel.ORT_ENABLE_BASIC
    as_written = refrt.InferenceSession(path, required_operators=str(plain), graph_optimization_level=basic)
    for a, b in zip(refrt.InferenceSession(path, graph_optimization_level=basic).run(None, feeds),
                    as_written.run(None, feeds)):
        np.testing.assert_array_equal(a, b)


def test_config_format(model_files):
    text = required_operators_config(model_files["ifloop"], types=True)
    lines = _lines(text)
    # subgraph and function-body ops, Constant folded away, domains sorted
    assert lines[0].startswith("ai.onnx;13;Add{")
    ops = {op.split("{")[0] for ln in lines for op in ln.split(";")[2].split(",") if not op.startswith('"')}
    assert {"Neg", "Sigmoid", "If", "Loop", "Cast"} <= ops and "Constant" not in ops
    assert "Swishy" not in text
    assert [ln.split(";")[0] for ln in lines] == ["ai.onnx", "ai.onnx.ml", "com.microsoft"]
    cfg = parse_config(text)
    assert cfg.ops[("ai.onnx", 13)]["Cast"] == {"inputs": {"0": ["int64_t"]},
                                                "outputs": {"0": ["float"]}}


# ---------------------------------------------------------------- the restricted session

def _feeds(sess, seed=0):
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
            for i in sess.get_inputs()}


@pytest.mark.parametrize("name", ["digits", "digits_QOperator", "ifloop"])
def test_restricted_session_runs_allowed_models_identically(model_files, tmp_path, name):
    config = tmp_path / "required_operators.config"
    config.write_text(required_operators_config(model_files[name], types=True))
    free = refrt.InferenceSession(model_files[name])
    restricted = refrt.InferenceSession(model_files[name], required_operators=str(config))
    feeds = _feeds(free)
    for a, b in zip(free.run(None, feeds), restricted.run(None, feeds)):
        np.testing.assert_array_equal(a, b)


def test_op_outside_config_names_node(model_files, tmp_path):
    config = tmp_path / "digits.config"
    config.write_text(required_operators_config(DIGITS))
    with pytest.raises(OperatorNotInConfigError) as e:
        refrt.InferenceSession(model_files["mobilenet"], required_operators=str(config))
    err = e.value
    assert (err.domain, err.opset) == ("ai.onnx", 17)
    assert err.op_type in {n.op_type for n in onnx.load(model_files["mobilenet"]).graph.node}
    assert err.node in str(err) and err.op_type in str(err) and "ai.onnx;" in str(err)
    # a config line at another since-version does not admit the op
    config.write_text("ai.onnx;1;Conv,MaxPool,Flatten,Gemm,Relu\n")
    with pytest.raises(OperatorNotInConfigError, match=r"Conv .*since-version 11"):
        refrt.InferenceSession(DIGITS, required_operators=str(config))


def test_subgraph_op_outside_config(model_files, tmp_path):
    text = required_operators_config(model_files["ifloop"]).replace(",Neg", "")
    config = tmp_path / "c.config"
    config.write_text(text)
    with pytest.raises(OperatorNotInConfigError, match="Neg"):
        refrt.InferenceSession(model_files["ifloop"], required_operators=str(config))


def test_type_outside_config(tmp_path):
    g = h.make_graph([h.make_node("Relu", ["x"], ["y"], name="the_relu")], "g",
                     [h.make_tensor_value_info("x", T.DOUBLE, [2])],
                     [h.make_tensor_value_info("y", T.DOUBLE, [2])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 14)])
    config = tmp_path / "c.config"
    config.write_text('ai.onnx;14;Relu{"inputs": {"0": ["float"]}}\n')
    with pytest.raises(TypeNotInConfigError, match="the_relu.*double.*float") as e:
        refrt.InferenceSession(m.SerializeToString(), required_operators=str(config))
    assert e.value.type_name == "double" and e.value.node == "the_relu"
    config.write_text("ai.onnx;14;Relu\n")           # no types: any type
    out = refrt.InferenceSession(m.SerializeToString(), required_operators=str(config)).run(
        None, {"x": np.array([-1.0, 2.0])})
    np.testing.assert_array_equal(out[0], [0.0, 2.0])


def test_cli_ops_config_and_restricted_run(tmp_path, capsys):
    assert cli_main(["ops-config", DIGITS, "--types"]) == 0
    text = capsys.readouterr().out
    assert 'Conv{"inputs": {"0": ["float"]}}' in text
    config = tmp_path / "required_operators.config"
    config.write_text(text)
    assert cli_main(["run", DIGITS, "--random-inputs", "--required-operators", str(config)]) == 0
    capsys.readouterr()
    config.write_text(text.replace("Relu", "Sigmoid"))
    assert cli_main(["run", DIGITS, "--random-inputs", "--required-operators", str(config)]) == 1
    assert "Relu" in capsys.readouterr().err


def test_cli_ops_config_level(model_files, capsys):
    path = model_files["digits_QDQ"]
    assert cli_main(["ops-config", path, "--level", "extended"]) == 0
    text = capsys.readouterr().out
    assert "at level extended" in text
    assert _lines(text) == _lines(required_operators_config(path, level="extended"))
    assert "QLinearConv" in text and ";Conv" not in text


def test_restricted_session_imports_only_needed_families(tmp_path):
    config = tmp_path / "c.config"
    config.write_text(required_operators_config(DIGITS))
    code = f"""
import sys, json, numpy as np, refrt
s = refrt.InferenceSession({DIGITS!r}, required_operators={str(config)!r})
i = s.get_inputs()[0]
s.run(None, {{i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)}})
print(json.dumps(sorted(m for m in sys.modules if m.startswith("refrt.ops."))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {m.rsplit(".", 1)[1] for m in json.loads(out.stdout.splitlines()[-1])}
    assert {"conv", "pool", "nn", "elementwise", "shape"} >= (loaded - {"_common", "_kernels", "_index"}), loaded
    for unneeded in ("rnn", "contrib", "ml", "sequence", "strings", "quant", "signal"):
        assert unneeded not in loaded


def test_family_index_is_current():
    """refrt/ops/_index.py lists every registered op's families (scripts/write_ops_index.py),
    checked in a fresh interpreter (tests in this one register ops of their own)."""
    import subprocess
    import sys

    probe = ("from refrt import registry\nfrom refrt.ops._index import FAMILIES\n"
             "raise SystemExit(0 if registry.family_index() == FAMILIES else 1)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, ("refrt/ops/_index.py is stale: run scripts/write_ops_index.py",
                                  done.stderr[-2000:])
