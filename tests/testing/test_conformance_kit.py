"""refrt.testing as its users run it: strategies drawn from the schemas for every op, the tolerance
classes, candidates in a child process, failures shrunk to reproducer folders, the pytest plugin
and ``refrt fuzz``. A candidate equal to refrt passes; deliberately broken ones
(tests/kit_candidates.py) are caught, classified and shrunk to one small node."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings

from refrt import registry
from refrt.testing import strategies as S
from refrt.testing.candidates import Isolated, make_candidate
from refrt.testing.runner import fuzz, fuzz_op, rerun
from refrt.testing.tolerance import compare_output

from ort_helpers import ORT_SATURATES_U8S8

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # tests/: kit_candidates

# Ops the strategies do not draw; a test below keeps this set honest. onnxruntime's NCHWc ops
# work on its blocked layout, whose block size is the CPU's (16 with AVX-512, 8 with AVX2; refused
# without AVX2): only graphs onnxruntime wrote for this CPU hold valid ones.
NO_STRATEGY: set = {f"com.microsoft.nchwc.{op}" for op in (
    "AveragePool", "Conv", "GlobalAveragePool", "GlobalMaxPool", "MaxPool", "ReorderInput",
    "ReorderOutput")}


def _key(dom, op):
    return op if dom == "ai.onnx" else f"{dom}.{op}"


def _draw(op, dom="", n=4, **kw):
    cases = []

    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(S.node_cases(op, dom, **kw))
    def collect(case):
        cases.append(case)
    collect()
    return cases


# -- strategies ----------------------------------------------------------------------------------

def test_every_op_with_a_strategy_draws_cases_refrt_runs():
    drawn, without = {}, set()
    for dom, op in S.implemented_ops():
        key = _key(dom, op)
        try:
            cases = _draw(op, dom, n=3)
        except Exception as e:   # noqa: BLE001 -- hypothesis: nothing valid could be drawn
            assert "Unsatisfiable" in type(e).__name__ or "Unsatisfiable" in str(e) or \
                isinstance(e, ValueError), (key, e)
            without.add(key)
            continue
        assert cases, key
        for c in cases:
            # refrt ran it in "spec" numerics; the model is valid for onnx's checker too
            assert len(c.expected) == len(onnx.load_from_string(c.model).graph.output)
            try:
                onnx.checker.check_model(onnx.load_from_string(c.model))
            except onnx.checker.ValidationError as e:
                # GroupNormalization-18 is deprecated; onnxruntime's own LayerNormalization-1 in
                # the ONNX domain is unknown to onnx
                assert "deprecated" in str(e) or (op, c.since) in registry.ORT_ONNX_DOMAIN_EXTRAS, \
                    (key, e)
        drawn[key] = len(cases)
    assert without == NO_STRATEGY, ("newly drawable (remove from NO_STRATEGY)",
                                    without - NO_STRATEGY, "newly broken", NO_STRATEGY - without)
    assert len(drawn) == len(S.implemented_ops()) - len(NO_STRATEGY)


def test_cases_follow_the_schema_and_the_table():
    for c in _draw("Gather", n=20):
        data, idx = c.feeds["in0"], c.feeds["in1"]
        axis = next((a.i for a in c.proto().graph.node[0].attribute if a.name == "axis"), 0)
        n = data.shape[axis]
        assert idx.dtype in (np.int32, np.int64) and ((idx >= -n) & (idx < n)).all()
    for c in _draw("Conv", n=20):
        x, w = c.feeds["in0"], c.feeds["in1"]
        group = next((a.i for a in c.proto().graph.node[0].attribute if a.name == "group"), 1)
        assert x.shape[1] == w.shape[1] * group and w.shape[0] % group == 0
    assert {c.types for c in _draw("MatMulInteger", n=30)} >= {"T1=uint8,T2=int8,T3=int32",
                                                                "T1=int8,T2=int8,T3=int32"}


def test_forced_edge_classes_appear():
    assert all(0 in c.feeds["in0"].shape for c in _draw("Relu", n=5, edges={"zero_size"}))
    assert all(c.feeds["in0"].ndim == 0 for c in _draw("Abs", n=5, edges={"scalar"}))
    special = _draw("Sigmoid", n=30, edges={"special"}, dtypes={"float32"})
    assert all("special" in c.edges for c in special if c.feeds["in0"].size)
    assert any(np.isnan(c.feeds["in0"]).any() for c in special)
    assert any(np.isinf(c.feeds["in0"]).any() for c in special)
    with pytest.raises(ValueError, match="unknown edge classes"):
        S.node_cases("Relu", edges={"bogus"})
    with pytest.raises(ValueError, match="does not implement"):
        S.node_cases("NoSuchOp")


def test_graph_cases_chain_ops():
    cases = []

    @settings(max_examples=10, deadline=None, database=None, derandomize=True)
    @given(S.graph_cases(max_nodes=4))
    def collect(case):
        cases.append(case)
    collect()
    assert max(len(c.ops) for c in cases) > 1
    assert all(len(c.proto().graph.node) == len(c.ops) for c in cases)


# -- tolerance -------------------------------------------------------------------------------------

def test_tolerance_classes():
    e = np.array([1.0, 2.0, np.nan], np.float32)
    one_up = np.nextafter(e, np.float32(np.inf))
    assert compare_output(e, e.copy(), "exact") is None
    assert compare_output(e, one_up, "rounded").kind == "numeric"
    assert compare_output(e, one_up, "ulp") is None                   # 1 ulp within 4
    four = e.copy()
    for _ in range(8):
        four = np.nextafter(four, np.float32(np.inf))
    assert compare_output(e, four, "ulp").kind == "numeric"          # 8 ulp beyond 4
    assert compare_output(e, np.array([1, 2, 0], np.float32), "scale").kind == "nan_semantics"
    assert compare_output(e, e.astype(np.float64), "exact").kind == "wrong_shape_or_dtype"
    # the sum bound scales with the condition: a big cancellation allows a bigger error
    got = np.array([1e-3], np.float32)
    assert compare_output(np.array([0.0], np.float32), got, "sum", np.array([1e5]), 8) is None
    assert compare_output(np.array([0.0], np.float32), got, "sum", np.array([1.0]), 8) is not None
    assert compare_output(np.array(["a", ""], object), np.array(["a", "b"], object),
                          "exact").kind == "numeric"


# -- candidates and findings -------------------------------------------------------------------------

SMOKE_OPS = [("ai.onnx", op) for op in ("Add", "Relu", "MatMul", "Gather", "ReduceSum", "Conv",
                                        "Softmax", "Concat", "QuantizeLinear", "Where", "Cast",
                                        "Slice", "TopK", "LayerNormalization", "Mod")]


def test_refrt_as_candidate_has_no_false_positives():
    every = [k for k in S.implemented_ops() if _key(*k) not in NO_STRATEGY]
    report = fuzz("refrt", every, examples=4, isolate=False)
    assert report["findings"] == []
    assert report["totals"]["pass"] >= 4 * len(every)
    assert all(not r["error"] for r in report["ops"].values())
    smoke = fuzz("refrt", SMOKE_OPS, examples=15)          # in a child process too
    assert smoke["findings"] == [] and smoke["totals"]["pass"] >= 15 * len(SMOKE_OPS)


def test_metamorphic_mode_compares_two_settings():
    report = fuzz("refrt:spec", [("ai.onnx", "Add"), ("ai.onnx", "Sigmoid")], examples=10,
                  against="refrt:ort", isolate=False)
    assert report["findings"] == [] and report["against"] == "refrt:ort"


def _only_finding(rep, cls):
    assert [f["class"] for f in rep.findings] == [cls], rep.findings
    return rep.findings[0]


def test_an_add_one_ulp_off_is_caught_and_shrunk(tmp_path):
    cand = make_candidate("kit_candidates:add_off_by_one_ulp")
    f = _only_finding(fuzz_op("Add", "", cand, examples=30, out_dir=str(tmp_path)), "numeric")
    assert f["nodes"] == 1
    assert f["input_elements"] <= 2, f["inputs"]
    # the reproducer reruns in one command and loads in onnx's backend runner
    folder = f["reproducer"]
    assert f["command"] == f"refrt fuzz --rerun {folder} --candidate kit_candidates:add_off_by_one_ulp"
    _, out = rerun(folder, "kit_candidates:add_off_by_one_ulp", isolate=False)
    assert out.cls == "numeric"
    assert rerun(folder, "refrt", isolate=False)[1].cls == "pass"
    from onnx.backend.test.loader import load_model_tests
    assert [t.name for t in load_model_tests(str(tmp_path), "cases")] == [os.path.basename(folder)]


def test_a_relu_that_drops_nan_is_caught_as_nan_semantics():
    cand = make_candidate("kit_candidates:relu_drops_nan")
    f = _only_finding(fuzz_op("Relu", "", cand, examples=200), "nan_semantics")
    assert f["nodes"] == 1 and f["input_elements"] <= 2, f["inputs"]


def test_wrong_dtype_is_classified():
    cand = make_candidate("kit_candidates:wrong_dtype")
    f = _only_finding(fuzz_op("Sigmoid", "", cand, examples=20, dtypes={"float32"}),
                      "wrong_shape_or_dtype")
    assert "float64" in f["detail"]


def test_a_candidate_that_kills_its_process_is_a_crash_and_the_run_goes_on():
    cand = Isolated("kit_candidates:dies_on_zero_divisor", timeout=60)
    try:
        rep = fuzz_op("Mod", "", cand, examples=40, dtypes={"int32", "uint8"}, edge_rate=0.0)
    finally:
        cand.close()
    f = _only_finding(rep, "crash")
    assert "SIGFPE" in f["detail"]
    assert rep.classes["pass"] > 0          # cases after the crash still ran


def test_graph_failures_shrink_by_node_removal():
    cand = make_candidate("kit_candidates:add_plus_one")
    rep = fuzz_op("graph", "", cand, examples=60, graph=True, max_nodes=6)
    f = _only_finding(rep, "numeric")
    assert f["nodes"] == 1, f


@pytest.mark.skipif(not ORT_SATURATES_U8S8, reason="onnxruntime's u8 x s8 GEMM is exact on this "
                    "CPU: nothing for the 'known' class to explain")
def test_ort_avx2_saturation_is_known_not_failed():
    cand = make_candidate("onnxruntime")
    rep = fuzz_op("MatMulInteger", "", cand, examples=150, edge_rate=0.5,
                  dtypes={"uint8", "int8", "int32"})
    assert rep.classes["known"] > 0
    assert all(f["class"] == "known" and "MatMulInteger" in f["numerics_row"]
               for f in rep.findings)
    strict = fuzz_op("MatMulInteger", "", cand, examples=150, strict=True, edge_rate=0.5,
                     dtypes={"uint8", "int8", "int32"})
    assert "known" in {f["class"] for f in strict.findings}


def test_onnxruntime_agrees_on_add():
    report = fuzz("onnxruntime", [("ai.onnx", "Add")], examples=20)
    assert report["findings"] == [] and report["totals"]["pass"] >= 20


# -- the pytest plugin and the CLI ---------------------------------------------------------------------

def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


def test_plugin_runs_in_a_folder_without_tests(tmp_path):
    r = _run(["-m", "pytest", "-p", "no:cacheprovider", "--refrt-candidate", "refrt",
              "--refrt-ops", "Add,Relu", "--refrt-examples", "5", "--refrt-report", "r.json"],
             tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout and "refrt conformance: refrt" in r.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["ops"]) == {"Add", "Relu"} and report["findings"] == []


def test_plugin_reports_and_xfails_findings(tmp_path):
    args = ["-m", "pytest", "-p", "no:cacheprovider", "--refrt-candidate",
            "kit_candidates:add_off_by_one_ulp", "--refrt-ops", "Add,Relu",
            "--refrt-examples", "20", "--refrt-out", "out"]
    r = _run(args, tmp_path)
    assert r.returncode == 1 and "FAILED" in r.stdout and "rerun: refrt fuzz --rerun" in r.stdout
    (tmp_path / "xfail.txt").write_text("Add numeric  # this candidate's Add is one ulp off\n")
    r = _run(args + ["--refrt-xfail", "xfail.txt"], tmp_path)
    assert r.returncode == 0 and "1 xfailed" in r.stdout, r.stdout
    (tmp_path / "bad.txt").write_text("Add numeric\n")
    r = _run(args + ["--refrt-xfail", "bad.txt"], tmp_path)
    assert r.returncode != 0 and "needs a reason" in r.stderr


def test_cli_fuzz_and_rerun(tmp_path):
    r = _run(["-m", "refrt", "fuzz", "--candidate", "kit_candidates:add_off_by_one_ulp", "--op",
              "Add", "--examples", "20", "--out", str(tmp_path / "out"), "--json",
              str(tmp_path / "r.json")], tmp_path)
    assert r.returncode == 1, r.stderr
    assert "numeric" in r.stdout and "rerun: refrt fuzz --rerun" in r.stdout
    folder = json.loads((tmp_path / "r.json").read_text())["findings"][0]["reproducer"]
    assert _run(["-m", "refrt", "fuzz", "--rerun", folder, "--candidate", "refrt"],
                tmp_path).returncode == 0
    again = _run(["-m", "refrt", "fuzz", "--rerun", folder, "--candidate",
                  "kit_candidates:add_off_by_one_ulp"], tmp_path)
    assert again.returncode == 1 and "numeric" in again.stdout
    assert _run(["-m", "refrt", "fuzz", "--candidate", "refrt"], tmp_path).returncode == 1


# -- the edge classes, one op per family (the whole sweep: python -m conformance.edge_sweep) ------

FAMILY_OPS = ["Abs", "Exp", "Add", "Where", "Concat", "MatMul", "Gemm", "Conv", "MaxPool",
              "ReduceSum", "LayerNormalization", "QuantizeLinear", "Softmax", "Gather", "Reshape",
              "Slice", "Pad", "TopK", "Cast", "MatMulInteger", "QLinearConv", "DequantizeLinear"]


@pytest.mark.parametrize("edge", S.EDGE_CLASSES)
def test_every_family_runs_its_edge_cases_in_both_numerics(edge):
    """Cases holding the edge class run in refrt's "spec" (the strategy ran them) and "ort"
    numerics; a draw refrt refuses must be refused with a typed error, never another one."""
    held = 0
    # strings only appear in string tensors: draw those (beside the index and mask types)
    dtypes = {"string", "int32", "int64", "bool"} if edge == "strings" else None
    for op in FAMILY_OPS:
        try:
            cases = _draw(op, n=4, edges={edge}, edge_rate=0.0, dtypes=dtypes)
        except Exception as e:   # noqa: BLE001 -- the op's types cannot hold this class
            assert "Unsatisfiable" in type(e).__name__ or "Unsatisfiable" in str(e), (op, e)
            continue
        for c in cases:
            if edge in c.edges:
                held += 1
                S.run_refrt(c.model, c.feeds, numerics="ort")
    assert held > 0
