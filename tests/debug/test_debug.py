"""refrt.debug: the mismatch debugger (``refrt compare``).

Each cause code is produced by a constructed case. Most references are *saved* values computed
here independently (a perturbed weight, onnxruntime's saturation reproduced by refrt's emulation,
another summation order, float16 accumulation), so that the cases behave the same on every CPU;
the onnxruntime cases run against onnxruntime itself.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import refrt
from refrt import debug, host
from refrt.cli import main as cli_main
from refrt.debug.capture import capture_refrt
from refrt.debug.metrics import tensor_metrics, ulp_distance

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17):
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, elem, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def mlp(w2_scale=1.0):
    """x -> MatMul(w1) -> Relu -> MatMul(w2) -> Add(b) -> Sigmoid -> y"""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((16, 32)).astype(np.float32)
    w2 = (rng.standard_normal((32, 8)) * w2_scale).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["z"], name="mm2"),
             helper.make_node("Add", ["z", "b"], ["zb"], name="add"),
             helper.make_node("Sigmoid", ["zb"], ["y"], name="sig")]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(b, "b")]
    return _model(nodes, [_vi("x", F, ["N", 16])], [_vi("y", F)], inits)


X = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)


def _saved(tmp_path, values, name="ref.npz"):
    path = tmp_path / name
    np.savez(path, **values)
    return f"saved:{path}"


# ---------------------------------------------------------------- where: first, local, propagated

def test_an_injected_fault_is_the_first_divergence_and_its_successors_only_carry_it(tmp_path):
    ref = capture_refrt(mlp(w2_scale=1.01), {"x": X})      # the reference's w2 differs by 1 %
    result = debug.compare(mlp(), {"x": X}, _saved(tmp_path, ref))
    by_name = {n.name: n for n in result.nodes}
    assert [n.name for n in result.first_divergences] == ["mm2"]
    assert by_name["mm1"].status == by_name["relu"].status == "match"
    assert by_name["mm2"].origin == "local"
    assert by_name["add"].status == by_name["sig"].status == "differs"
    assert by_name["add"].origin == by_name["sig"].origin == "propagated"
    # refrt's two modes agree and are within float rounding of float64; the reference is far
    assert by_name["mm2"].cause.code == "reference_bug"
    assert not result.matches and result.summary()["first"] == 1


def test_same_model_matches_and_keeps_nothing_unless_asked():
    result = debug.compare(mlp(), {"x": X}, "spec", atol=0, rtol=0, numerics="spec")
    assert result.matches and result.kept == {}
    kept = debug.compare(mlp(), {"x": X}, "spec", keep=True, numerics="spec").kept
    assert set(kept) == {"h", "r", "z", "zb", "y"}


# ---------------------------------------------------------------- why: the cause codes

def _u8s8_model():
    rng = np.random.default_rng(3)
    b = rng.choice(np.array([-128, 127, -100, 90], np.int8), size=(64, 16))
    nodes = [helper.make_node("MatMulInteger", ["a", "b"], ["acc"], name="mmi"),
             helper.make_node("Cast", ["acc"], ["y"], to=F, name="cast")]
    return _model(nodes, [_vi("a", TensorProto.UINT8, [8, 64])], [_vi("y", F)],
                  [numpy_helper.from_array(b, "b")])


A_U8 = np.random.default_rng(4).integers(200, 256, (8, 64)).astype(np.uint8)


def test_cause_avx2_u8s8_saturation_from_saved_values(tmp_path):
    saturated = capture_refrt(_u8s8_model(), {"a": A_U8}, emulate_avx2_u8s8=True)
    result = debug.compare(_u8s8_model(), {"a": A_U8}, _saved(tmp_path, saturated), atol=0, rtol=0)
    (first,) = result.first_divergences
    assert first.name == "mmi" and first.origin == "local"
    assert first.cause.code == "avx2_u8s8_saturation" and first.cause.detail["reproduced"] == "bit for bit"
    assert {n.name: n.origin for n in result.differing}["cast"] == "propagated"
    # with the switch on, refrt is the reference
    assert debug.compare(_u8s8_model(), {"a": A_U8}, _saved(tmp_path, saturated),
                         emulate_avx2_u8s8=True, atol=0, rtol=0).matches


def test_cause_avx2_u8s8_saturation_against_onnxruntime():
    pytest.importorskip("onnxruntime")
    result = debug.compare(_u8s8_model(), {"a": A_U8}, "onnxruntime", atol=0, rtol=0)
    if not host.ort_u8s8_saturates():
        assert result.matches      # onnxruntime is exact on this CPU
        return
    (first,) = result.first_divergences
    assert first.cause.code == "avx2_u8s8_saturation"


def test_cause_spec_choice_names_the_numerics_row():
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dql")]
    m = _model(nodes, [_vi("x", F, [6])], [_vi("q", TensorProto.UINT8), _vi("s", F), _vi("z", TensorProto.UINT8)])
    result = debug.compare(m, {"x": np.zeros(6, np.float32)}, "spec")
    (first,) = result.first_divergences
    assert first.origin == "local" and first.cause.code == "spec_choice"
    assert first.cause.detail["numerics"] == "spec"
    assert "DynamicQuantizeLinear" in first.cause.detail["numerics_md"]


def test_cause_transcendental_approximation_against_onnxruntime():
    """onnxruntime's Atan is Eigen's polynomial; refrt's is NumPy's: a few ulp apart. (Its Exp is
    MLAS's polynomial, which refrt's "ort" numerics reproduce: no difference.)"""
    pytest.importorskip("onnxruntime")
    x = np.linspace(-20, 20, 2000).astype(np.float32)
    m = _model([helper.make_node("Exp", ["x"], ["y"], name="exp")], [_vi("x", F, [2000])], [_vi("y", F)])
    assert debug.compare(m, {"x": x}, "onnxruntime", atol=0, rtol=0).matches
    m = _model([helper.make_node("Atan", ["x"], ["y"], name="atan")], [_vi("x", F, [2000])], [_vi("y", F)])
    result = debug.compare(m, {"x": x}, "onnxruntime", atol=0, rtol=0)
    (first,) = result.first_divergences
    assert first.cause.code == "transcendental_approximation", first.cause


def test_cause_spec_choice_for_sigmoid_in_spec_numerics():
    """MLAS's logistic clamps its input to [-18, 18] and is a rational approximation: refrt's
    "ort" numerics are its bits; in "spec" numerics the debugger says that "ort" reproduces it."""
    pytest.importorskip("onnxruntime")
    m = _model([helper.make_node("Sigmoid", ["x"], ["y"], name="sig")], [_vi("x", F, [2000])], [_vi("y", F)])
    x = np.concatenate([np.linspace(-20, 20, 1996), [-18.3, -19, 18.5, 0.1]]).astype(np.float32)
    assert debug.compare(m, {"x": x}, "onnxruntime", atol=0, rtol=0).matches
    result = debug.compare(m, {"x": x}, "onnxruntime", atol=0, rtol=0, numerics="spec")
    (first,) = result.first_divergences
    assert first.cause.code == "spec_choice", first.cause


def test_cause_accumulation_order(tmp_path):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((8, 512)).astype(np.float32)
    b = rng.standard_normal((512, 8)).astype(np.float32)
    m = _model([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")], [_vi("a", F, [8, 512])],
               [_vi("y", F)], [numpy_helper.from_array(b, "b")])
    backwards = np.zeros((8, 8), np.float32)
    for k in range(511, -1, -1):                 # float32 sums from the last k to the first
        backwards += a[:, k:k + 1] * b[k:k + 1, :]
    result = debug.compare(m, {"a": a}, _saved(tmp_path, {"y": backwards}), atol=0, rtol=0)
    (first,) = result.first_divergences
    assert first.cause.code == "accumulation_order"
    assert first.cause.detail["refrt_eps_from_float64"] < 64 and first.cause.detail["reference_eps_from_float64"] < 64


def test_cause_float16_in_float32(tmp_path):
    x = np.random.default_rng(6).uniform(0.5, 1.5, (4, 300)).astype(np.float16)
    m = _model([helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum", keepdims=0)],
               [_vi("x", TensorProto.FLOAT16, [4, 300])], [_vi("y", TensorProto.FLOAT16)],
               [numpy_helper.from_array(np.array([1], np.int64), "axes")])
    in_half = np.zeros(4, np.float16)
    for k in range(300):                          # a float16 accumulator, rounded every step
        in_half = (in_half + x[:, k]).astype(np.float16)
    result = debug.compare(m, {"x": x}, _saved(tmp_path, {"y": in_half}), atol=0, rtol=0)
    (first,) = result.first_divergences
    assert first.cause.code == "float16_in_float32" and first.cause.detail == {"refrt": "float32 inside"}


def test_cause_requantization_rounding(tmp_path):
    """A reference that requantizes QLinearMatMul with a float64 multiplier (onnx.reference's
    way) differs by one step at ties."""
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (32, 64)).astype(np.uint8)
    b = rng.integers(-128, 128, (64, 32)).astype(np.int8)
    sa, sb, sy = np.float32(0.1), np.float32(0.07), np.float32(0.3)
    vals = {"as": sa, "az": np.uint8(0), "b": b, "bs": sb, "bz": np.int8(0), "ys": sy, "yz": np.uint8(128)}
    names = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]
    m = _model([helper.make_node("QLinearMatMul", names, ["y"], name="qmm")], [_vi("a", TensorProto.UINT8, [32, 64])],
               [_vi("y", TensorProto.UINT8)], [numpy_helper.from_array(np.asarray(v), k) for k, v in vals.items()])
    acc = a.astype(np.int64) @ b.astype(np.int64)
    m64 = float(sa) * float(sb) / float(sy)
    ref = np.clip(np.rint(acc * m64) + 128, 0, 255).astype(np.uint8)
    (ours,) = refrt.run(m, {"a": a})
    assert (ours != ref).any()   # the case does hit ties
    result = debug.compare(m, {"a": a}, _saved(tmp_path, {"y": ref}))
    (first,) = result.first_divergences
    assert first.cause.code == "requantization_rounding"


# ---------------------------------------------------------------- references, report, CLI

def test_onnxruntime_optimized_reports_fused_away_tensors():
    pytest.importorskip("onnxruntime")
    digits = f"{refrt.__path__[0]}/data/digits_cnn.onnx"
    x = np.random.default_rng(8).standard_normal((2, 1, 8, 8)).astype(np.float32)
    result = debug.compare(digits, {"input": x}, "onnxruntime-optimized")
    missing = {o.name: o.reason for n in result.nodes for o in n.outputs if o.tag == "missing"}
    assert missing and all("removed by onnxruntime's graph optimizations" in r for r in missing.values())
    logits = next(o for n in result.nodes for o in n.outputs if o.name == "logits")
    assert logits.tag in ("match", "differs") and logits.metrics is not None


def test_onnx_reference_and_onnxruntime_agree_on_the_digits_model_within_tolerance():
    pytest.importorskip("onnxruntime")
    digits = f"{refrt.__path__[0]}/data/digits_cnn.onnx"
    x = np.random.default_rng(9).standard_normal((3, 1, 8, 8)).astype(np.float32)
    for against in ("onnxruntime", "onnx-reference"):
        result = debug.compare(digits, {"input": x}, against, atol=1e-4, rtol=1e-4)
        assert result.matches, result.table()


def test_metrics_against_independent_numpy():
    rng = np.random.default_rng(10)
    ref = rng.standard_normal(1000).astype(np.float32)
    got = (ref + rng.standard_normal(1000).astype(np.float32) * 1e-3).astype(np.float32)
    m = tensor_metrics(got, ref, atol=1e-3, rtol=0)
    r64, g64 = ref.astype(np.float64), got.astype(np.float64)
    assert m.sqnr_db == pytest.approx(20 * np.log10(np.linalg.norm(r64) / np.linalg.norm(g64 - r64)))
    assert m.max_abs == np.abs(g64 - r64).max()
    assert m.mismatched == int((np.abs(g64 - r64) > 1e-3).sum())
    one = np.nextafter(np.float32(1), np.float32(2))
    assert ulp_distance(np.array([1, -0.0], np.float32), np.array([one, 0.0], np.float32)) == 1
    assert tensor_metrics(np.array([np.nan], np.float32), np.array([np.nan], np.float32), 0, 0).equal
    assert not tensor_metrics(np.zeros(2), np.zeros(3), 1, 1).matches


def test_json_record_and_cli_exit_codes(tmp_path, capsys):
    ref = capture_refrt(mlp(w2_scale=1.01), {"x": X})
    model_path = tmp_path / "mlp.onnx"
    onnx.save(mlp(), model_path)
    x_path = tmp_path / "x.npy"
    np.save(x_path, X)
    report = tmp_path / "report.json"
    rc = cli_main(["compare", str(model_path), "--input", f"x={x_path}", "--against",
                   _saved(tmp_path, ref), "--json", str(report)])
    out = capsys.readouterr().out
    assert rc == 3 and "FIRST" in out and "mm2" in out and "reference_bug" in out
    record = json.loads(report.read_text())
    assert record["schema"] == debug.SCHEMA and record["first_divergences"] == ["mm2"]
    nodes = {n["name"]: n for n in record["nodes"]}
    assert nodes["mm2"]["cause"]["code"] == "reference_bug" and nodes["sig"]["origin"] == "propagated"
    assert cli_main(["compare", str(model_path), "--input", f"x={x_path}", "--against", "spec"]) == 0
    assert cli_main(["compare", str(model_path), "--random-inputs", "--dim", "N=2", "--against", "nonsense"]) == 1
    assert "unknown reference" in capsys.readouterr().err


# ---------------------------------------------------------------- reduce

def test_reduce_cuts_to_the_node_that_creates_the_difference(tmp_path, capsys):
    ref = capture_refrt(mlp(w2_scale=1.01), {"x": X})
    against = _saved(tmp_path, ref)
    r = debug.reduce_model(mlp(), {"x": X}, against, out=str(tmp_path / "small" / "model.onnx"))
    assert (r.target, r.nodes_before, r.nodes_after) == ("z", 5, 1)
    assert [n.name for n in r.model.graph.node] == ["mm2"]
    # the test data beside it reproduces the divergence with no other input
    assert debug.load_test_data(str(tmp_path / "small" / "model.onnx")).keys() == {"r"}
    assert cli_main(["compare", str(tmp_path / "small" / "model.onnx"), "--against", against]) == 3
    assert "mm2" in capsys.readouterr().out
    # a target downstream: the bisection keeps the chain from the first divergence to it
    r = debug.reduce_model(mlp(), {"x": X}, against, target="y")
    assert r.nodes_before == 5 and 1 <= r.nodes_after <= 3 and r.model.graph.node[-1].name == "sig"


def test_reduced_case_loads_in_onnx_backend_runner_and_reproduces_with_onnxruntime(tmp_path):
    """onnx's test loader finds the reduced case; onnxruntime's backend reproduces the recorded
    outputs bit for bit, refrt's "spec" numerics do not (that is the divergence reported)."""
    pytest.importorskip("onnxruntime")
    import onnxruntime.backend as ort_backend
    from onnx.backend.test.loader import load_model_tests
    from onnx.backend.test.runner import Runner

    import refrt.backend as refrt_backend
    nodes = [helper.make_node("Add", ["x", "one"], ["s"], name="add"),
             helper.make_node("Sigmoid", ["s"], ["y"], name="sig")]
    m = _model(nodes, [_vi("x", F, [2000])], [_vi("y", F)],
               [numpy_helper.from_array(np.float32(1.0), "one")])
    x = np.linspace(-21, 19, 2000).astype(np.float32)
    out = tmp_path / "real" / "test_reduced" / "model.onnx"
    r = debug.reduce_model(m, {"x": x}, "onnxruntime", out=str(out), atol=0, rtol=0,
                           numerics="spec")
    assert r.nodes_after == 1 and r.model.graph.node[0].op_type == "Sigmoid"
    (case,) = load_model_tests(str(tmp_path), "real")
    assert case.model_dir == str(out.parent)
    inputs = [numpy_helper.to_array(onnx.load_tensor(str(out.parent / "test_data_set_0" / "input_0.pb")))]
    expected = [numpy_helper.to_array(onnx.load_tensor(str(out.parent / "test_data_set_0" / "output_0.pb")))]
    model = onnx.load(str(out))
    Runner.assert_similar_outputs(expected, list(ort_backend.prepare(model).run(inputs)), rtol=0, atol=0,
                                  model_dir=case.model_dir)
    with pytest.raises(AssertionError):
        Runner.assert_similar_outputs(expected, list(refrt_backend.prepare(model, numerics="spec")
                                                     .run(inputs)), rtol=0, atol=0,
                                      model_dir=case.model_dir)


def test_html_report_is_self_contained(tmp_path):
    ref = capture_refrt(mlp(w2_scale=1.01), {"x": X})
    page = debug.compare(mlp(), {"x": X}, _saved(tmp_path, ref)).to_html(tmp_path / "r.html")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<script" not in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")   # nothing fetched
    assert page.count("<circle") == 5 and 'class="first"' in page and "reference_bug" in page
    assert (tmp_path / "r.html").read_text() == page


# ---------------------------------------------------------------- quantization loss

DIGITS = f"{refrt.__path__[0]}/data/digits_cnn.onnx"


@pytest.fixture(scope="module")
def quantized_digits(tmp_path_factory):
    import refrt.quantization as rq
    folder = tmp_path_factory.mktemp("qdigits")
    data = np.load(f"{refrt.__path__[0]}/data/digits_test.npz")
    calib = data["calib"][:32]
    paths = {"dynamic": folder / "dyn.onnx", "QDQ": folder / "qdq.onnx", "QOperator": folder / "qop.onnx"}
    rq.quantize_dynamic(DIGITS, paths["dynamic"])
    for fmt in ("QDQ", "QOperator"):
        rq.quantize_static(DIGITS, paths[fmt], rq.NumpyDataReader({"input": calib}, batch_size=16),
                           quant_format=fmt, activation_type="QUInt8", progress=False)
    return {k: str(v) for k, v in paths.items()}, {"input": data["x"][:48]}


def test_quantization_loss_matches_every_format(quantized_digits):
    paths, feeds = quantized_digits
    losses = {fmt: debug.quant_loss(DIGITS, path, feeds) for fmt, path in paths.items()}
    acts = {fmt: {t.name: t for t in loss.tensors if t.kind == "activation"} for fmt, loss in losses.items()}
    floats = {o for n in onnx.load(DIGITS).graph.node for o in n.output} | {"input"}
    assert set(acts["dynamic"]) == floats                      # every tensor stays or has a quantized form
    # static formats fold each Relu into the op before it: the Relu's output is matched, the op's is not
    for fmt in ("QDQ", "QOperator"):
        assert {"relu1_out", "relu2_out", "relu3_out", "pool1_out", "logits"} <= set(acts[fmt])
        assert {"conv1_out", "conv2_out", "fc1_out"} <= set(losses[fmt].unmatched)
    # the same quantization parameters in QDQ and QOperator form lose the same
    for name in ("relu1_out", "relu2_out", "pool2_out", "logits"):
        assert acts["QDQ"][name].sqnr_db == pytest.approx(acts["QOperator"][name].sqnr_db, abs=1e-6)
    weights = {t.name for t in losses["QDQ"].tensors if t.kind == "weight"}
    assert {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"} <= weights
    assert losses["QDQ"].suggestions() and all(isinstance(n, str) and n for n in losses["QDQ"].suggestions())


def test_quantization_loss_figures_equal_an_independent_numpy_computation(quantized_digits):
    pytest.importorskip("onnxruntime")
    from refrt.debug.references import reference_values
    paths, feeds = quantized_digits
    loss = debug.quant_loss(DIGITS, paths["QDQ"], feeds, runtime="onnxruntime")
    got = {t.name: t for t in loss.tensors}
    floats = capture_refrt(onnx.load(DIGITS), feeds)
    qdq = onnx.load(paths["QDQ"])
    ort_q = reference_values(qdq, feeds, "onnxruntime").values
    f = floats["relu2_out"].astype(np.float64)
    q = ort_q["relu2_out_DequantizeLinear_Output"].astype(np.float64)
    assert got["relu2_out"].sqnr_db == pytest.approx(20 * np.log10(np.linalg.norm(f) / np.linalg.norm(f - q)), rel=1e-9)
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    w = numpy_helper.to_array(next(t for t in onnx.load(DIGITS).graph.initializer if t.name == "conv1.weight"))
    wq = (inits["conv1.weight_quantized"].astype(np.float64) - inits["conv1.weight_zero_point"]) * \
        inits["conv1.weight_scale"]
    w64 = w.astype(np.float64)
    expect = 20 * np.log10(np.linalg.norm(w64) / np.linalg.norm(w64 - wq.astype(np.float32)))
    assert got["conv1.weight"].sqnr_db == pytest.approx(expect, rel=1e-6)
    # clipped: float logits outside [(0 - zp) s, (255 - zp) s] (half a step beyond)
    s, z = float(inits["logits_scale"]), float(inits["logits_zero_point"])
    logits = floats["logits"].astype(np.float64)
    share = np.mean((logits < (0 - z) * s - s / 2) | (logits > (255 - z) * s + s / 2))
    qop = {t.name: t for t in debug.quant_loss(DIGITS, paths["QOperator"], feeds).tensors}
    assert qop["logits"].clipped == pytest.approx(share)


def test_quantization_loss_on_the_command_line(quantized_digits, tmp_path, capsys):
    paths, feeds = quantized_digits
    x = tmp_path / "x.npy"
    np.save(x, feeds["input"])
    assert cli_main(["compare", DIGITS, "--quantized", paths["QOperator"], "--input", f"input={x}",
                     "--json", str(tmp_path / "q.json")]) == 0
    out = capsys.readouterr().out
    assert "SQNR dB" in out and "candidates for nodes_to_exclude" in out and "folded into" in out
    record = json.loads((tmp_path / "q.json").read_text())
    assert record["schema"] == "refrt.debug.quant_loss/1" and record["tensors"]


def test_cause_ort_graph_optimization_names_the_transformer(tmp_path):
    """A static QDQ model (int8 activations) against onnxruntime at its default level: where
    onnxruntime's own two levels disagree, the cause is its graph rewrite, and bisecting its
    disabled_optimizers names the transformer."""
    ort = pytest.importorskip("onnxruntime")
    import refrt.quantization as rq
    data = np.load(f"{refrt.__path__[0]}/data/digits_test.npz")
    path = str(tmp_path / "qdq.onnx")
    rq.quantize_static(DIGITS, path, rq.NumpyDataReader({"input": data["calib"][:32]}, batch_size=16),
                       progress=False)                     # onnxruntime's defaults: QDQ, int8 activations
    feeds = {"input": data["x"][:100]}
    levels = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        levels.append(ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, feeds)[0])
    result = debug.compare(path, feeds, "onnxruntime-optimized")
    causes = {n.cause.code for n in result.differing if n.cause}
    if np.array_equal(levels[0], levels[1]):
        assert "ort_graph_optimization" not in causes
        return
    (first,) = [n for n in result.first_divergences if n.cause and n.cause.code == "ort_graph_optimization"]
    transformer = first.cause.detail["transformer"]
    assert transformer
    so = ort.SessionOptions()
    fixed = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=[transformer]).run(None, feeds)[0]
    assert np.allclose(fixed, levels[0], atol=1e-5, rtol=1e-5)   # its absence restores the values


def test_nodes_to_exclude_candidates_are_measured(quantized_digits):
    import refrt.quantization as rq
    from refrt.debug.quant_loss import measure_exclusions
    paths, feeds = quantized_digits
    calib = np.load(f"{refrt.__path__[0]}/data/digits_test.npz")["calib"][:32]

    def quantize(path, exclude):
        rq.quantize_static(DIGITS, path, rq.NumpyDataReader({"input": calib}, batch_size=16), quant_format="QDQ",
                           activation_type="QUInt8", nodes_to_exclude=exclude, progress=False)

    loss = debug.quant_loss(DIGITS, paths["QDQ"], feeds)
    before = loss.output_sqnr(["logits"])
    measured = measure_exclusions(DIGITS, feeds, quantize, loss)
    assert [e["node"] for e in measured] == loss.suggestions()
    for e in measured:
        assert e["change_db"] == pytest.approx(e["output_sqnr_db"] - before)
    assert max(e["change_db"] for e in measured) > 1.0      # one of them does help, measurably
    assert "re-quantized with nodes_to_exclude" in loss.table()


def test_polygraphy_saved_inputs_and_outputs(tmp_path):
    """A Polygraphy run with every tensor marked as an output (onnxruntime runner) is a saved
    reference; its saved inputs are the feeds."""
    import os
    import subprocess
    import sys
    pytest.importorskip("polygraphy")
    pytest.importorskip("onnxruntime")
    model = tmp_path / "mlp.onnx"
    onnx.save(mlp(), model)
    tool = os.path.join(os.path.dirname(sys.executable), "polygraphy")
    proc = subprocess.run([tool, "run", str(model), "--onnxrt", "--onnx-outputs", "mark", "all",
                           "--input-shapes", "x:[3,16]", "--save-inputs", str(tmp_path / "in.json"),
                           "--save-outputs", str(tmp_path / "out.json")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from refrt.debug.references import load_polygraphy, load_polygraphy_inputs
    feeds = load_polygraphy_inputs(str(tmp_path / "in.json"))
    assert feeds["x"].shape == (3, 16)
    saved = load_polygraphy(str(tmp_path / "out.json"), "onnxrt")
    assert {"h", "r", "z", "zb", "y"} <= set(saved)
    ours = debug.compare(mlp(), feeds, f"saved:{tmp_path / 'out.json'}")
    theirs = debug.compare(mlp(), feeds, "onnxruntime", atol=0, rtol=0)
    assert ours.matches                                       # within 1e-5: the same onnxruntime run
    for a, b in zip(ours.nodes, theirs.nodes):                # bit for bit the values compare gets itself
        assert [o.metrics.max_abs for o in a.outputs] == [o.metrics.max_abs for o in b.outputs]
    assert cli_main(["compare", str(model), "--load-inputs", str(tmp_path / "in.json"), "--against",
                     f"saved:{tmp_path / 'out.json'}#onnxrt"]) == 0


def test_a_data_reader_stops_at_the_first_batch_that_differs():
    """DynamicQuantizeLinear's all-zero input is where refrt's "ort" and "spec" modes differ:
    only that batch shows a difference."""
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dql")]
    m = _model(nodes, [_vi("x", F, [6])], [_vi("q", TensorProto.UINT8), _vi("s", F), _vi("z", TensorProto.UINT8)])
    rng = np.random.default_rng(11)

    class Reader:                      # onnxruntime's CalibrationDataReader protocol
        def __init__(self, batches):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    plain = [{"x": rng.standard_normal(6).astype(np.float32)} for _ in range(3)]
    result = debug.compare(m, Reader(plain), "spec")
    assert result.matches and (result.batch, result.batches) == (2, 3)
    zeros = {"x": np.zeros(6, np.float32)}
    result = debug.compare(m, Reader([plain[0], plain[1], zeros, plain[2]]), "spec")
    assert not result.matches and (result.batch, result.batches) == (2, 3)
    assert "batch 2 of the 3 compared (the first that differs)" in result.table()
    assert result.first_divergences[0].cause.code == "spec_choice"


def test_a_reference_that_cannot_run_the_model_is_one_typed_error(quantized_digits):
    from refrt.debug.references import ReferenceUnavailable
    paths, feeds = quantized_digits
    with pytest.raises(ReferenceUnavailable, match="onnx-reference.*cannot run this model"):
        debug.compare(paths["QOperator"], feeds, "onnx-reference")
