"""ORT format models (``.ort``) load and run in refrt.

The ``.ort`` files are written in the test run by onnxruntime's own
``python -m onnxruntime.tools.convert_onnx_models_to_ort``, from the bundled digits CNN, its
static (QDQ, QOperator) and dynamic quantizations, a BERT-style encoder with symbolic dims and a
model with If/Loop subgraphs, string, int64 and sparse tensors:

* with onnxruntime's optimizations disabled, refrt's outputs on the ``.ort`` equal its outputs on
  the source ``.onnx`` exactly, and agree with onnxruntime running the ``.ort`` itself;
* with onnxruntime's default optimizations (level "all"), every converted model runs (its fused
  com.microsoft operators included: FusedConv, FusedGemm, FusedMatMul, QLinearConv, ...) and
  gives onnxruntime's outputs on the same file bit for bit; an operator refrt lacks (a
  hand-written com.microsoft node) is refused with refrt's usual UnsupportedOpError;
* damaged files (truncated, another identifier, a future format version, offsets out of range,
  crafted sharing) are ModelErrors naming the file, never IndexError or a hang.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import refrt
from refrt import registry
from refrt.cli import main as cli_main
from refrt.errors import ModelError, UnsupportedOpError
from refrt.graph.load import load_model
from refrt.testing import models

from ort_helpers import refrt_like_ort, refrt_like_ort_unoptimized

ort = pytest.importorskip("onnxruntime")

DATA = os.path.join(os.path.dirname(refrt.__file__), "data")
DIGITS = os.path.join(DATA, "digits_cnn.onnx")


def _tool_available() -> bool:
    try:
        import onnxruntime.tools.convert_onnx_models_to_ort  # noqa: F401
    except Exception:
        return False
    return True


needs_tool = pytest.mark.skipif(not _tool_available(),
                                reason="onnxruntime.tools.convert_onnx_models_to_ort is not installed")


CONTROL_FLOW = """
<ir_version: 8, opset_import: ["" : 17], metadata_props: ["purpose": "ORT format test"]>
control_flow (float[batch, 4] x, int64[k] idx) => (float[batch, 4] out, float[?, batch, 4] scans,
                                                   string[k] names, int64[batch, 4] ints)
<int64 trips = {3}, int64 big = {1099511627779}, string[4] labels = {"zero", "one", "two", "drei"}>
{
    s = ReduceSum <keepdims = 0> (x)
    zero = Constant <value = float {0}> ()
    b = Greater (s, zero)
    y = If (b) <
        then_branch = then () => (float[batch, 4] t) <float[1] two = {2}> { t = Mul (x, two) },
        else_branch = else () => (float[batch, 4] e) { e = Neg (x) }
    >
    z, scans = Loop (trips, , y) <
        body = body (int64 i, bool cond, float[batch, 4] acc) => (bool cond2, float[batch, 4] acc2,
                                                                   float[batch, 4] scan) {
            acc2 = Add (acc, y)
            cond2 = Identity (cond)
            fi = Cast <to = 1> (i)
            scan = Mul (acc2, fi)
        }
    >
    out = Add (z, bias)
    names = Gather <axis = 0> (labels, idx)
    xshape = Shape (x)
    filled = ConstantOfShape <value = int64[1] {7}> (xshape)
    ints = Mul (filled, big)
}
"""


def control_flow_model() -> onnx.ModelProto:
    """If and Loop bodies (one with its own initializer), symbolic dims, a string initializer
    gathered by int64 indices, an int64 beyond 2**32, a TENSOR attribute (ConstantOfShape) and a
    sparse Constant (onnxruntime stores it as a sparse initializer)."""
    m = onnx.parser.parse_model(CONTROL_FLOW)
    sparse = h.make_sparse_tensor(nh.from_array(np.float32([1.5, -2.0]), "sp"),
                                  nh.from_array(np.int64([1, 3])), [4])
    nodes = [h.make_node("Constant", [], ["bias"], sparse_value=sparse), *m.graph.node]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.checker.check_model(m, full_check=True)
    return m


def _feeds(name: str, variant: int = 0) -> dict:
    """Two feeds per model, of different sizes where a dim is symbolic."""
    rng = np.random.default_rng(variant)
    if name.startswith("digits"):
        x = np.load(os.path.join(DATA, "digits_test.npz"))["x"]
        return {"input": x[:32] if variant == 0 else x[32:35]}
    if name == "bert":
        return models.bert_feeds(batch=2, seq=8) if variant == 0 else models.bert_feeds(3, 5)
    batch = 2 if variant == 0 else 5
    return {"x": rng.standard_normal((batch, 4)).astype(np.float32) - 0.3 * variant,
            "idx": np.int64([3, 0, 1, 3][: 3 + variant])}


NAMES = ["digits", "digits_QDQ", "digits_QOperator", "digits_dyn", "bert", "control_flow"]


def convert(src_dir, out_dir, level: str | None, style: str = "Fixed") -> dict:
    """onnxruntime's converter on every model in ``src_dir`` -> {model name: .ort path}.
    ``level`` None: onnxruntime's default optimizations."""
    env = dict(os.environ)
    env.pop("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", None)
    if level is not None:
        env["ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"] = level
    cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(src_dir),
           "--output_dir", str(out_dir), "--optimization_style", style]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    return {f.name.split(".")[0]: str(f) for f in out_dir.glob("*.ort")}


def config_ops(out_dir) -> set[tuple[str, int, str]]:
    """(domain, since-version, op) of each line of the required-operators config onnxruntime
    wrote next to its .ort files."""
    (config,) = out_dir.glob("*.config")
    ops = set()
    for line in config.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            domain, version, names = line.split(";")
            ops |= {(domain, int(version), op) for op in names.split(",")}
    return ops


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The source models and their .ort conversions: with optimizations disabled, with
    onnxruntime's default ones, and the QDQ model in the Runtime optimization style."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Calibration(CalibrationDataReader):
        def __init__(self):
            calib = np.load(os.path.join(DATA, "digits_test.npz"))["calib"]
            self.batches = iter([{"input": calib[i:i + 16]} for i in range(0, len(calib), 16)])

        def get_next(self):
            return next(self.batches, None)

    src = tmp_path_factory.mktemp("onnx")
    shutil.copy(DIGITS, src / "digits.onnx")
    for fmt in ("QDQ", "QOperator"):
        quantize_static(DIGITS, str(src / f"digits_{fmt}.onnx"), Calibration(),
                        quant_format=getattr(QuantFormat, fmt))
    quantize_dynamic(DIGITS, str(src / "digits_dyn.onnx"), weight_type=QuantType.QInt8)
    onnx.save(models.bert_encoder(layers=1, hidden=32, heads=2), src / "bert.onnx")
    onnx.save(control_flow_model(), src / "control_flow.onnx")
    runtime_src = tmp_path_factory.mktemp("onnx_qdq")
    shutil.copy(src / "digits_QDQ.onnx", runtime_src)

    out = tmp_path_factory.mktemp("ort")
    return {
        "onnx": {name: str(src / f"{name}.onnx") for name in NAMES},
        "disabled": convert(src, out / "disabled", "disable"),
        "default": convert(src, out / "default", None),
        "default_ops": config_ops(out / "default"),
        "runtime": convert(runtime_src, out / "runtime", None, style="Runtime"),
    }


def _ort_run(path, feeds, optimize=False):
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def assert_agree_with_ort(ours, theirs):
    """refrt vs onnxruntime as the other whole-model comparisons check them: exact for integers
    and strings, 1e-5 relative L2 error for floats."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype
        if a.dtype.kind == "f":
            assert _rel_l2(a, b) < 1e-5
        else:
            np.testing.assert_array_equal(a, b)


def assert_identical(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def _describe(args):
    return [(a.name, a.type, a.shape) for a in args]


# ---------------------------------------------------------------- optimizations disabled

@needs_tool
@pytest.mark.parametrize("name", NAMES)
def test_ort_file_runs_like_its_onnx_source(converted, name):
    path, src = converted["disabled"][name], converted["onnx"][name]
    assert path.endswith(".ort")
    # the .ort file was converted with optimizations off and runs as stored: so does the source
    ours, source = refrt_like_ort(path), refrt_like_ort_unoptimized(src)
    # the same inputs and outputs, symbolic dims included
    assert _describe(ours.get_inputs()) == _describe(source.get_inputs())
    assert _describe(ours.get_outputs()) == _describe(source.get_outputs())
    for variant in (0, 1):
        feeds = _feeds(name, variant)
        got = ours.run(None, feeds)
        assert_identical(got, source.run(None, feeds))
        assert_agree_with_ort(got, _ort_run(path, feeds))


@needs_tool
def test_symbolic_dims_and_types_survive(converted):
    sess = refrt.InferenceSession(converted["disabled"]["control_flow"])
    inputs = {a.name: (a.type, a.shape) for a in sess.get_inputs()}
    assert inputs == {"x": ("tensor(float)", ["batch", 4]), "idx": ("tensor(int64)", ["k"])}
    outputs = {a.name: (a.type, a.shape) for a in sess.get_outputs()}
    assert outputs["scans"] == ("tensor(float)", [None, "batch", 4])
    assert outputs["names"] == ("tensor(string)", ["k"])
    names, ints = sess.run(["names", "ints"], {"x": np.ones((3, 4), np.float32),
                                               "idx": np.int64([3, 1])})
    assert names.tolist() == ["drei", "one"]
    assert ints.dtype == np.int64 and (ints == 7 * (2**40 + 3)).all() and ints.shape == (3, 4)
    proto = sess.model
    onnx.checker.check_model(proto)
    # the sparse Constant, as onnxruntime keeps it, with the int64 indices ONNX requires
    (sparse,) = proto.graph.sparse_initializer
    assert nh.to_array(sparse.indices).tolist() == [1, 3] and sparse.indices.data_type == T.INT64
    # the types onnxruntime inferred for intermediate values come along as value_info
    inferred = {v.name: v.type.tensor_type for v in proto.graph.value_info}
    assert inferred["xshape"].elem_type == T.INT64
    assert [d.dim_value for d in inferred["xshape"].shape.dim] == [2]
    assert inferred["s"].elem_type == T.FLOAT and not inferred["s"].shape.dim
    assert set(inferred) <= {o for n in proto.graph.node for o in n.output}
    kinds = {n.op_type: n for n in proto.graph.node}
    assert {a.name for a in kinds["If"].attribute} == {"then_branch", "else_branch"}
    assert kinds["ConstantOfShape"].attribute[0].type == onnx.AttributeProto.TENSOR


@needs_tool
def test_metadata_and_model_property(converted):
    """Model metadata comes across; ``session.model`` is a valid ONNX model again (the large
    weights, read apart from the proto, are put back) that runs like the .ort file."""
    path = converted["disabled"]["control_flow"]
    meta = refrt.InferenceSession(path).get_modelmeta()
    assert meta.custom_metadata_map == {"purpose": "ORT format test"}
    digits = refrt.InferenceSession(converted["disabled"]["digits"])
    source = onnx.load(DIGITS)
    ours = digits.get_modelmeta()
    assert (ours.producer_name, ours.graph_description) == (source.producer_name,
                                                            source.graph.doc_string)
    model = digits.model
    onnx.checker.check_model(model)
    assert ({t.name: nh.to_array(t).tolist() for t in model.graph.initializer}
            == {t.name: nh.to_array(t).tolist() for t in source.graph.initializer})
    feeds = _feeds("digits")
    assert_identical(refrt.InferenceSession(model.SerializeToString()).run(None, feeds),
                     digits.run(None, feeds))


@needs_tool
def test_bytes_load_like_the_path(converted):
    path = converted["disabled"]["digits_QOperator"]
    with open(path, "rb") as f:
        data = f.read()
    feeds = _feeds("digits_QOperator")
    expected = refrt.InferenceSession(path).run(None, feeds)
    for form in (data, bytearray(data), memoryview(data)):
        assert_identical(refrt.InferenceSession(form).run(None, feeds), expected)
    # an .ort file under another name is recognised by its identifier
    other = os.path.join(os.path.dirname(path), "renamed.model")
    shutil.copy(path, other)
    assert_identical(refrt.InferenceSession(other).run(None, feeds), expected)


@needs_tool
def test_runtime_optimization_records_are_left_to_onnxruntime(converted):
    """The Runtime style stores the unfused QDQ graph plus fusions onnxruntime may apply at load;
    refrt runs the graph as stored, exactly like the source model."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession

    path = converted["runtime"]["digits_QDQ"]
    with open(path, "rb") as f:
        graph = InferenceSession.InferenceSession.GetRootAs(f.read(), 0).Model().Graph()
    assert graph.RuntimeOptimizations() is not None and graph.RuntimeOptimizations().RecordsLength()
    feeds = _feeds("digits_QDQ")
    got = refrt_like_ort(path).run(None, feeds)
    assert_identical(got, refrt_like_ort_unoptimized(converted["onnx"]["digits_QDQ"]).run(None, feeds))
    assert_agree_with_ort(got, _ort_run(path, feeds))


@needs_tool
def test_cli_runs_an_ort_file(converted, capsys):
    assert cli_main(["run", converted["disabled"]["control_flow"], "--random-inputs",
                     "--range", "idx=0:3", "--dim", "batch=2", "--dim", "k=3"]) == 0
    assert "names: object[3]" in capsys.readouterr().out
    assert cli_main(["run", converted["disabled"]["digits_QDQ"], "--random-inputs",
                     "--compare-ort"]) == 0
    assert "logits: max abs err 0" in capsys.readouterr().out


# ---------------------------------------------------------------- default optimizations

@needs_tool
@pytest.mark.parametrize("name", NAMES)
def test_default_optimizations_run_like_onnxruntime(converted, name):
    """onnxruntime's default level writes fused com.microsoft operators (FusedConv, FusedGemm,
    FusedMatMul, channels-last QLinearConv, NhwcMaxPool, QGemm, DynamicQuantizeMatMul, ...).
    refrt implements every operator each converted file uses (by onnxruntime's own config of
    the files), runs the file as stored and gives onnxruntime's outputs on it bit for bit."""
    path = converted["default"][name]
    in_model = {(n.domain or "ai.onnx", n.op_type) for n in _all_nodes(onnx_ops_of(path))}
    missing = {(d, op) for d, v, op in converted["default_ops"]
               if (d, op) in in_model and registry.lookup(op, d, v) is None}
    assert not missing
    for variant in (0, 1):
        feeds = _feeds(name, variant)
        assert_identical(refrt_like_ort(path).run(None, feeds), _ort_run(path, feeds))


@needs_tool
def test_default_optimizations_fuse_into_contrib_ops(converted):
    """What the parametrized test above covers: the digits CNN gets com.microsoft FusedConv and
    FusedGemm, its quantizations channels-last QLinearConv and NhwcMaxPool, the BERT-style
    encoder FusedMatMul, the dynamic quantization DynamicQuantizeMatMul; refrt runs them all."""
    ops = {(d, op) for d, _, op in converted["default_ops"]}
    for op_type in ("FusedConv", "FusedGemm", "FusedMatMul", "QLinearConv", "NhwcMaxPool",
                    "DynamicQuantizeMatMul"):
        assert ("com.microsoft", op_type) in ops, op_type
    nodes = {n.op_type: n for n in onnx_ops_of(converted["default"]["digits"])}
    assert nodes["FusedConv"].domain == "com.microsoft"
    assert {a.name: a.s for a in nodes["FusedConv"].attribute}["activation"] == b"Relu"
    feeds = _feeds("digits")
    assert_identical(refrt_like_ort(converted["default"]["digits"]).run(None, feeds),
                     _ort_run(converted["default"]["digits"], feeds))


def test_an_operator_refrt_lacks_is_refused_clearly():
    """A com.microsoft node refrt has no implementation of (written here: onnxruntime's
    converter only writes operators its kernels have) is refused when the session is built,
    with UnsupportedOpError naming the operator, its domain and the node."""
    w = _Writer()
    node = w.node("NoSuchFusedOp", ["x"], ["y"], domain="com.microsoft")
    data = w.finish(w.graph([node], inputs=["x"]), opsets={"": 17, "com.microsoft": 1})
    with pytest.raises(UnsupportedOpError) as e:
        refrt.InferenceSession(data)
    assert (e.value.domain, e.value.op_type) == ("com.microsoft", "NoSuchFusedOp")
    assert "com.microsoft.NoSuchFusedOp" in str(e.value) and "y" in str(e.value)


def onnx_ops_of(path):
    """The converted model's main-graph nodes, as refrt reads them."""
    return list(load_model(path)[0].graph.node)


def _all_nodes(nodes):
    for n in nodes:
        yield n
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _all_nodes(g.node)


# ---------------------------------------------------------------- damaged files

def _version_position(data: bytes) -> int:
    """Where the format version string's single character is (a flatbuffers string: length 1,
    the character, a NUL)."""
    marker = b"\x01\x00\x00\x00" + b"6\x00"
    assert data.count(marker) == 1
    return data.index(marker) + 4


@needs_tool
def test_truncated_file_is_a_model_error(converted, tmp_path):
    path = converted["disabled"]["digits"]
    with open(path, "rb") as f:
        data = f.read()
    cuts = sorted({0, 3, 7, 8, 12, 20, 64, len(data) // 2, len(data) - 64,
                   *range(100, len(data) - 100, 997)})
    for cut in cuts:
        target = tmp_path / "cut.ort"
        target.write_bytes(data[:cut])
        with pytest.raises(ModelError) as e:
            refrt.InferenceSession(str(target))
        assert str(target) in str(e.value), cut
        if cut >= 8:
            with pytest.raises(ModelError):
                load_model(data[:cut])


@needs_tool
def test_wrong_identifier_and_onnx_named_ort(converted, tmp_path):
    with open(converted["disabled"]["digits"], "rb") as f:
        data = bytearray(f.read())
    data[4:8] = b"ONNX"
    target = tmp_path / "wrong.ort"
    target.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"wrong\.ort.*not an ORT format model.*b'ONNX'.*ORTM"):
        refrt.InferenceSession(str(target))
    onnx_named_ort = tmp_path / "digits.ort"
    shutil.copy(DIGITS, onnx_named_ort)
    with pytest.raises(ModelError, match="not an ORT format model"):
        refrt.InferenceSession(str(onnx_named_ort))
    empty = tmp_path / "empty.ort"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="too few"):
        refrt.InferenceSession(str(empty))


@needs_tool
def test_future_format_version_is_refused(converted, tmp_path):
    path = converted["disabled"]["digits"]
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[_version_position(bytes(data))] = ord("7")
    target = tmp_path / "future.ort"
    target.write_bytes(bytes(data))
    with pytest.raises(Exception, match="version"):   # onnxruntime refuses it too
        ort.InferenceSession(str(target))
    with pytest.raises(ModelError, match=r"future\.ort.*version '7' is not supported.*6"):
        refrt.InferenceSession(str(target))


@needs_tool
def test_random_corruption_is_a_model_error_or_loads(converted):
    """Overwriting bytes anywhere makes a session fail with a ModelError or load (the bytes were
    data, e.g. weights); nothing else escapes and nothing hangs."""
    with open(converted["disabled"]["control_flow"], "rb") as f:
        data = f.read()
    rng = np.random.default_rng(0)
    failures = 0
    started = time.monotonic()
    for _ in range(300):
        bad = bytearray(data)
        for pos in rng.integers(8, len(data), size=int(rng.integers(1, 4))):
            bad[pos] = int(rng.integers(0, 256))
        try:
            refrt.InferenceSession(bytes(bad))
        except ModelError:
            failures += 1
    assert failures > 0
    assert time.monotonic() - started < 60


# ---------------------------------------------------------------- files written here

class _Writer:
    """Builds small ORT format files with onnxruntime's own schema bindings (and the flatbuffers
    package they use), for cases onnxruntime's converter never writes."""

    TABLES = ("InferenceSession", "Model", "OperatorSetId", "Graph", "Node", "NodeType",
              "Attribute", "AttributeType", "Tensor")

    def __init__(self):
        flatbuffers = pytest.importorskip("flatbuffers")
        package = "onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs"
        self.fbs = SimpleNamespace(**{t: pytest.importorskip(f"{package}.{t}") for t in self.TABLES})
        self.b = flatbuffers.Builder(0)

    def strings(self, values):
        offsets = [self.b.CreateString(v) for v in values]
        self.b.StartVector(4, len(offsets), 4)
        for o in reversed(offsets):
            self.b.PrependUOffsetTRelative(o)
        return self.b.EndVector()

    def tables(self, offsets):
        self.b.StartVector(4, len(offsets), 4)
        for o in reversed(offsets):
            self.b.PrependUOffsetTRelative(o)
        return self.b.EndVector()

    def node(self, op_type, inputs, outputs, index=0, fused=False, attributes=(), domain=""):
        N = self.fbs.Node
        op, ins, outs = self.b.CreateString(op_type), self.strings(inputs), self.strings(outputs)
        attrs = self.tables(list(attributes))
        dom = self.b.CreateString(domain) if domain else None
        N.Start(self.b)
        N.AddOpType(self.b, op)
        if dom is not None:
            N.AddDomain(self.b, dom)
        N.AddIndex(self.b, index)
        N.AddInputs(self.b, ins)
        N.AddOutputs(self.b, outs)
        N.AddAttributes(self.b, attrs)
        if fused:
            N.AddType(self.b, self.fbs.NodeType.NodeType.Fused)
        return N.End(self.b)

    def graph_attribute(self, name, graph):
        A = self.fbs.Attribute
        s = self.b.CreateString(name)
        A.Start(self.b)
        A.AddName(self.b, s)
        A.AddType(self.b, self.fbs.AttributeType.AttributeType.GRAPH)
        A.AddG(self.b, graph)
        return A.End(self.b)

    def tensor(self, name, dims, raw=None, external_offset=None):
        Ten = self.fbs.Tensor
        s = self.b.CreateString(name)
        d = self.b.CreateNumpyVector(np.asarray(dims, np.int64))
        r = None if raw is None else self.b.CreateByteVector(raw)
        Ten.Start(self.b)
        Ten.AddName(self.b, s)
        Ten.AddDims(self.b, d)
        Ten.AddDataType(self.b, T.FLOAT)
        if r is not None:
            Ten.AddRawData(self.b, r)
        if external_offset is not None:
            Ten.AddExternalDataOffset(self.b, external_offset)
        return Ten.End(self.b)

    def graph(self, nodes, inputs=(), outputs=("y",), initializers=()):
        G = self.fbs.Graph
        ins, outs = self.strings(inputs), self.strings(outputs)
        ns, inits = self.tables(nodes), self.tables(list(initializers))
        G.Start(self.b)
        G.AddInitializers(self.b, inits)
        G.AddNodes(self.b, ns)
        G.AddInputs(self.b, ins)
        G.AddOutputs(self.b, outs)
        return G.End(self.b)

    def finish(self, graph, version="6", opsets=None) -> bytes:
        fbs, b = self.fbs, self.b
        ids = []
        for name, number in (opsets or {"": 17}).items():
            domain = b.CreateString(name)
            fbs.OperatorSetId.Start(b)
            fbs.OperatorSetId.AddDomain(b, domain)
            fbs.OperatorSetId.AddVersion(b, number)
            ids.append(fbs.OperatorSetId.End(b))
        opsets = self.tables(ids)
        fbs.Model.Start(b)
        fbs.Model.AddIrVersion(b, 8)
        fbs.Model.AddOpsetImport(b, opsets)
        fbs.Model.AddGraph(b, graph)
        model = fbs.Model.End(b)
        v = b.CreateString(version)
        fbs.InferenceSession.Start(b)
        fbs.InferenceSession.AddOrtVersion(b, v)
        fbs.InferenceSession.AddModel(b, model)
        b.Finish(fbs.InferenceSession.End(b), file_identifier=b"ORTM")
        return bytes(b.Output())


def test_a_written_file_loads_and_runs():
    """The writer's plain case: Relu of an input plus an initializer, nodes stored out of index
    order."""
    w = _Writer()
    bias = w.tensor("bias", [2], raw=np.float32([1, -1]).tobytes())
    nodes = [w.node("Relu", ["s"], ["y"], index=1), w.node("Add", ["x", "bias"], ["s"], index=0)]
    data = w.finish(w.graph(nodes, inputs=["x"], initializers=[bias]))
    proto = load_model(data)[0]
    assert [n.op_type for n in proto.graph.node] == ["Add", "Relu"]
    (y,) = refrt.InferenceSession(data).run(None, {"x": np.float32([-3, 3])})
    np.testing.assert_array_equal(y, np.float32([0, 2]))


def test_fused_node_is_refused():
    w = _Writer()
    data = w.finish(w.graph([w.node("Relu", ["x"], ["y"], fused=True)], inputs=["x"]))
    with pytest.raises(ModelError, match="fused node"):
        refrt.InferenceSession(data)


def test_external_data_is_refused():
    w = _Writer()
    weight = w.tensor("w", [2], external_offset=0)
    data = w.finish(w.graph([w.node("Add", ["x", "w"], ["y"])], inputs=["x"],
                            initializers=[weight]))
    with pytest.raises(ModelError, match="'w' keeps its data outside the ORT format file"):
        refrt.InferenceSession(data)


def test_shared_subgraphs_cannot_make_a_small_file_expand():
    """FlatBuffers lets references share a table. Thirty If nodes, each with both branches the
    same table holding the next If, stay a small file but would unfold into 2**30 graphs: the
    reader stops with a ModelError at once."""
    w = _Writer()
    graph = w.graph([w.node("Identity", ["x"], ["y"])])
    for _ in range(30):
        branches = [w.graph_attribute(name, graph) for name in ("then_branch", "else_branch")]
        graph = w.graph([w.node("If", ["c"], ["y"], attributes=branches)])
    data = w.finish(graph)
    assert len(data) < 20_000
    started = time.monotonic()
    with pytest.raises(ModelError, match="refers to the same data"):
        load_model(data)
    assert time.monotonic() - started < 10


def test_too_deeply_nested_subgraphs_are_refused():
    w = _Writer()
    graph = w.graph([w.node("Identity", ["x"], ["y"])])
    for _ in range(80):
        graph = w.graph([w.node("If", ["c"], ["y"],
                                attributes=[w.graph_attribute("then_branch", graph)])])
    with pytest.raises(ModelError, match="nested more than"):
        load_model(w.finish(graph))


def test_out_of_range_offset_names_the_place():
    """A node's input name pointing past the end of the file."""
    w = _Writer()
    data = bytearray(w.finish(w.graph([w.node("Relu", ["x_input_name"], ["y"])], inputs=["x"])))
    name = data.index(b"x_input_name")
    data[name - 4:name] = (len(data) * 4).to_bytes(4, "little")     # the string's length
    with pytest.raises(ModelError, match=r"Model\.graph\.nodes\[0\]\.inputs\[0\].*outside|past"):
        load_model(bytes(data))
