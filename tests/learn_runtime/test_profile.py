"""Profiling in onnxruntime's format: SessionOptions.enable_profiling / profile_file_prefix,
InferenceSession.end_profiling(), RunOptions; the file loaded back and set beside the one
onnxruntime writes for the same model."""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings

import numpy as np
import onnx
import pytest

import refrt
from refrt import executor

DATA = os.path.join(os.path.dirname(refrt.__file__), "data")
EVENT_KEYS = {"cat", "pid", "tid", "dur", "ts", "ph", "name", "args"}


class Capture:
    """Every node's inputs and outputs, in run order."""

    def __init__(self):
        self.nodes = []

    def on_node(self, node, inputs, outputs):
        self.nodes.append((node, [None if v is None else np.shape(v) for v in inputs],
                           [np.shape(v) for v in outputs]))


def profiled(model, feeds, prefix, runs=1, run_options=None):
    so = refrt.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(prefix)
    sess = refrt.InferenceSession(model, so)
    capture = Capture()
    sess.add_hook(capture)
    for _ in range(runs):
        sess.run(None, feeds, run_options)
    name = sess.end_profiling()
    with open(name) as f:
        return name, json.load(f), capture, sess


@pytest.fixture(scope="module")
def digits():
    data = np.load(os.path.join(DATA, "digits_test.npz"))
    return os.path.join(DATA, "digits_cnn.onnx"), {"input": data["x"][:4]}, data


def qdq_digits(tmp_path, data, mode="static QDQ"):
    from refrt.quantization.report import quantize

    path = tmp_path / "q.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quantize(onnx.load(os.path.join(DATA, "digits_cnn.onnx")), str(path), mode,
                 {"input": data["calib"][:32]}, False)
    return str(path)


@pytest.mark.parametrize("which", ["float", "static QDQ", "dynamic"])
def test_one_node_event_per_executed_node_with_op_names_and_shapes(digits, tmp_path, which):
    path, feeds, data = digits
    if which != "float":
        path = qdq_digits(tmp_path, data, which)
    name, events, capture, sess = profiled(path, feeds, tmp_path / "prof", runs=2)
    assert os.path.basename(name).startswith("prof_") and name.endswith(".json")
    assert all(set(e) == EVENT_KEYS and e["ph"] == "X" for e in events)
    nodes = [e for e in events if e["cat"] == "Node"]
    # the nodes run: the static QDQ model's units are onnxruntime's quantized ops at the default level
    graph_nodes = list(sess.optimized_model.graph.node)
    assert (which == "static QDQ") == (len(graph_nodes) < len(onnx.load(path).graph.node))
    assert len(nodes) == len(capture.nodes) == 2 * len(graph_nodes)
    for event, (node, in_shapes, out_shapes) in zip(nodes, capture.nodes):
        index = graph_nodes.index(node)
        assert event["name"] == f"{node.name or f'{node.op_type}_{index}'}_kernel_time"
        assert event["args"]["node_index"] == str(index)
        args = event["args"]
        assert args["op_name"] == node.op_type
        assert [list(s) for t in args["input_type_shape"] for s in t.values()] == \
            [list(s) for s in in_shapes if s is not None]
        assert [list(s) for t in args["output_type_shape"] for s in t.values()] == \
            [list(s) for s in out_shapes]
        assert int(args["output_size"]) > 0 and event["dur"] >= 0
    session = [e["name"] for e in events if e["cat"] == "Session"]
    assert session == ["model_loading_uri", "session_initialization"] + \
        ["SequentialExecutor::Execute", "model_run"] * 2
    # node events sit inside their run's events, in time order
    runs = [e for e in events if e["name"] == "model_run"]
    assert runs[0]["ts"] <= nodes[0]["ts"] and nodes[-1]["ts"] <= runs[1]["ts"] + runs[1]["dur"]


def test_types_are_named_as_onnxruntime_names_them(digits, tmp_path):
    path, feeds, data = digits
    _, events, _, _ = profiled(qdq_digits(tmp_path, data, "dynamic"), feeds, tmp_path / "p")
    dql = next(e for e in events if e["args"].get("op_name") == "DynamicQuantizeLinear")
    assert dql["args"]["input_type_shape"] == [{"float": [4, 1, 8, 8]}]
    assert dql["args"]["output_type_shape"] == [{"uint8": [4, 1, 8, 8]}, {"float": []}, {"uint8": []}]


def test_same_structure_as_onnxruntimes_profile(digits, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path, feeds, _ = digits
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "ort")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)
    ort_name = sess.end_profiling()
    assert sess.end_profiling() == ""
    with open(ort_name) as f:
        theirs = json.load(f)
    ours_name, ours, _, ours_sess = profiled(path, feeds, tmp_path / "refrt")
    assert ours_sess.end_profiling() == ""                # written once, as onnxruntime does
    assert os.path.dirname(ours_name) == os.path.dirname(ort_name)
    assert {k for e in theirs for k in e} == {k for e in ours for k in e} == EVENT_KEYS
    for cat in ("Session", "Node"):
        assert [e["name"] for e in theirs if e["cat"] == cat] == \
            [e["name"] for e in ours if e["cat"] == cat]
    ort_nodes = [e["args"] for e in theirs if e["cat"] == "Node"]
    our_nodes = [e["args"] for e in ours if e["cat"] == "Node"]
    for t, o in zip(ort_nodes, our_nodes):
        assert set(o) <= set(t), set(o) - set(t)          # no field onnxruntime does not write
        for key in ("op_name", "provider", "node_index", "output_type_shape", "output_size",
                    "activation_size"):
            assert o[key] == t[key], (key, o[key], t[key])


def test_profiling_off_writes_nothing_and_adds_no_hook(digits, tmp_path, monkeypatch):
    path, feeds, _ = digits
    monkeypatch.chdir(tmp_path)
    sess = refrt.InferenceSession(path)
    seen = []
    real = executor.run_plan
    monkeypatch.setattr(executor, "run_plan", lambda plan, env, hooks=executor.NO_HOOKS:
                        seen.append(hooks) or real(plan, env, hooks))
    sess.run(None, feeds)
    assert seen == [executor.NO_HOOKS]                    # the fused, hook-free plan
    assert sess.end_profiling() == "" and sess.get_profiling_start_time_ns() == 0
    assert os.listdir(tmp_path) == []


def test_default_prefix_and_onnxruntime_session_options(digits, tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    path, feeds, _ = digits
    monkeypatch.chdir(tmp_path)
    so = ort.SessionOptions()                             # onnxruntime's own object
    so.enable_profiling = True
    sess = refrt.InferenceSession(path, so)
    assert sess.get_profiling_start_time_ns() > 0
    sess.run(None, feeds)
    name = sess.end_profiling()
    assert name.startswith("onnxruntime_profile__") and os.path.exists(tmp_path / name)


def test_run_options_logid_tags_the_run_and_onnxruntimes_run_options_work(digits, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path, feeds, _ = digits
    ro = refrt.RunOptions(logid="batch-7", log_severity_level=3, only_execute_path_to_fetches=True)
    ro.add_run_config_entry("some.key", "1")
    ro.add_active_adapter("adapter")
    _, events, _, sess = profiled(path, feeds, tmp_path / "p", run_options=ro)
    run = next(e for e in events if e["name"] == "model_run")
    assert run["args"] == {"run_tag": "batch-7"}
    theirs = ort.RunOptions()
    theirs.logid = "x"
    sess.run(None, feeds, theirs)                         # accepted as it is
    theirs.terminate = True
    with pytest.raises(refrt.errors.RunAborted, match="terminate"):
        sess.run(None, feeds, theirs)
