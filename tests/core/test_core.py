"""Session surface, planning, executor and the typed error matrix."""

import gc
import os
import weakref

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import refrt
from refrt.errors import InputError, ModelError, NodeError, UnsupportedOpError

from helpers import F, const, model, readonly, vi

X = vi("x", F, ["N", 3])
Z = vi("z", F, ["N", 3])


def add_chain():
    """z = relu(x + c) * 2, nodes stored in reverse order."""
    nodes = [helper.make_node("Mul", ["r", "two"], ["z"], name="scale"),
             helper.make_node("Relu", ["s"], ["r"], name="relu"),
             helper.make_node("Add", ["x", "c"], ["s"], name="add")]
    inits = [const("c", np.array([-1, 0, 1], np.float32)), const("two", np.array(2, np.float32))]
    return model(nodes, [X], [Z], inits)


# ---------------------------------------------------------------- session surface

def test_ort_surface_and_topological_order():
    sess = refrt.InferenceSession(add_chain().SerializeToString())
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("x", "tensor(float)", ["N", 3])
    assert (out.name, out.type, out.shape) == ("z", "tensor(float)", ["N", 3])
    x = readonly(np.array([[0.5, -2, 3]], np.float32))
    (z,) = sess.run(None, {"x": x})
    np.testing.assert_array_equal(z, [[0, 0, 8]])
    assert z.dtype == np.float32
    assert sess.run(["z"], {"x": x})[0].shape == (1, 3)
    assert [s.node.name for s in sess._plan.steps] == ["add", "relu", "scale"]


def test_providers_like_onnxruntime():
    """A provider refrt does not have is dropped with a warning, as onnxruntime does on a build
    without it; get_providers() says what runs."""
    with pytest.warns(RuntimeWarning, match="CUDAExecutionProvider is not available"):
        sess = refrt.InferenceSession(add_chain(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]
    with pytest.warns(RuntimeWarning, match="TensorrtExecutionProvider, CUDAExecutionProvider are"):
        sess = refrt.InferenceSession(add_chain(), providers=[("TensorrtExecutionProvider", {}),
                                                              "CUDAExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert refrt.InferenceSession(add_chain(), providers=["CPUExecutionProvider"]).get_providers() == \
            ["CPUExecutionProvider"]


def test_session_options_refuse_unknown_attributes_and_warn_about_ignored_ones():
    so = refrt.SessionOptions()
    with pytest.raises(AttributeError, match="no attribute 'enable_profilng'"):
        so.enable_profilng = True          # a typo is not silently accepted
    with pytest.raises(TypeError, match="unknown session option"):
        refrt.SessionOptions(num_threads=2)
    so.enable_mem_pattern = False          # onnxruntime's, not implemented by refrt
    so.use_deterministic_compute = True
    with pytest.warns(RuntimeWarning, match="enable_mem_pattern=False, use_deterministic_compute=True"):
        refrt.InferenceSession(add_chain(), so)
    ort = pytest.importorskip("onnxruntime")
    o = ort.SessionOptions()               # onnxruntime's own object: its enums are read as ints
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    o.intra_op_num_threads = 3
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sess = refrt.InferenceSession(add_chain(), o)
    got = sess.get_session_options()
    assert got.graph_optimization_level == 0 and got.intra_op_num_threads == 3
    o.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    with pytest.warns(RuntimeWarning, match="execution_mode=1"):
        refrt.InferenceSession(add_chain(), o)


def test_path_bytes_and_proto_give_the_same(tmp_path):
    m = add_chain()
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    x = np.ones((2, 3), np.float32)
    results = [refrt.InferenceSession(src).run(None, {"x": x})[0]
               for src in (str(p), p, p.read_bytes(), m)]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    assert refrt.run(m, {"x": x})[0].shape == (2, 3)


def test_modelmeta_and_import_as_ort():
    m = add_chain()
    m.producer_name, m.model_version, m.doc_string = "tests", 7, "doc"
    helper.set_model_props(m, {"k": "v"})
    import refrt as ort
    meta = ort.InferenceSession(m).get_modelmeta()
    assert (meta.producer_name, meta.version, meta.description) == ("tests", 7, "doc")
    assert meta.custom_metadata_map == {"k": "v"}
    assert meta.graph_name == "g"


def test_initializer_as_overridable_input():
    m = model([helper.make_node("Add", ["x", "c"], ["z"])], [X, vi("c", F, [3])], [Z],
              [const("c", np.array([1, 1, 1], np.float32))])
    sess = refrt.InferenceSession(m)
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert [i.name for i in sess.get_overridable_initializers()] == ["c"]
    x = np.zeros((1, 3), np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], [[1, 1, 1]])
    np.testing.assert_array_equal(sess.run(None, {"x": x, "c": np.full(3, 5, np.float32)})[0],
                                  [[5, 5, 5]])


def test_feeds_are_not_mutated():
    sess = refrt.InferenceSession(add_chain())
    x = np.array([[1, 2, 3]], np.float32)
    before = x.copy()
    sess.run(None, {"x": x})
    np.testing.assert_array_equal(x, before)


# ---------------------------------------------------------------- executor and hooks

def test_hooks_see_every_node_and_intermediates_are_freed():
    sess = refrt.InferenceSession(add_chain())
    seen, refs = [], {}

    def hook(node, inputs, outputs):
        seen.append((node.op_type, [o.shape for o in outputs]))
        refs[node.output[0]] = weakref.ref(outputs[0])
        if node.name == "scale":
            gc.collect()
            assert refs["s"]() is None, "Add's output should be freed after Relu used it"

    sess.add_hook(hook)
    sess.run(None, {"x": np.ones((2, 3), np.float32)})
    assert seen == [("Add", [(2, 3)]), ("Relu", [(2, 3)]), ("Mul", [(2, 3)])]
    sess.remove_hook(hook)
    sess.run(None, {"x": np.ones((2, 3), np.float32)})
    assert len(seen) == 3


def test_before_node_hook_object():
    class H:
        def __init__(self):
            self.log = []

        def before_node(self, node, inputs):
            self.log.append(("before", node.name))

        def on_node(self, node, inputs, outputs):
            self.log.append(("after", node.name))

    h = H()
    sess = refrt.InferenceSession(add_chain())
    sess.add_hook(h)
    sess.run(None, {"x": np.ones((1, 3), np.float32)})
    assert h.log[:2] == [("before", "add"), ("after", "add")] and len(h.log) == 6


def test_if_subgraph_sees_outer_scope_values():
    then = helper.make_graph([helper.make_node("Add", ["x", "c"], ["t"])], "then", [],
                             [vi("t", F, None)])
    other = helper.make_graph([helper.make_node("Mul", ["x", "c"], ["e"])], "else", [],
                              [vi("e", F, None)])
    m = model([helper.make_node("Relu", ["x0"], ["x"]),
               helper.make_node("If", ["b"], ["o"], then_branch=then, else_branch=other)],
              [vi("b", TensorProto.BOOL, []), vi("x0", F, [3])], [vi("o", F, [3])],
              [const("c", np.array([1, 2, 3], np.float32))])
    sess = refrt.InferenceSession(m)
    x = np.array([1, -1, 2], np.float32)
    np.testing.assert_array_equal(sess.run(None, {"b": np.array(True), "x0": x})[0], [2, 2, 5])
    np.testing.assert_array_equal(sess.run(None, {"b": np.array(False), "x0": x})[0], [1, 0, 6])


def test_loop_with_outer_scope_and_scan_output():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "step"], ["acc_out"]),
         helper.make_node("Identity", ["acc_out"], ["scan_out"])],
        "body", [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []),
                 vi("acc_in", F, [2])],
        [vi("cond_out", TensorProto.BOOL, []), vi("acc_out", F, [2]), vi("scan_out", F, [2])])
    m = model([helper.make_node("Loop", ["n", "", "a0"], ["a", "hist"], body=body)],
              [vi("n", TensorProto.INT64, []), vi("a0", F, [2])],
              [vi("a", F, [2]), vi("hist", F, [None, 2])],
              [const("step", np.array([1, 10], np.float32))])
    a, hist = refrt.run(m, {"n": np.array(3, np.int64), "a0": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(a, [3, 30])
    np.testing.assert_array_equal(hist, [[1, 10], [2, 20], [3, 30]])


def _with_ref(node, name, attr_type):
    node.attribute.append(helper.make_attribute_ref(name, attr_type))
    return node


def test_model_local_function_with_attribute_reference():
    fn = helper.make_function(
        "custom", "AddThenLeaky", ["a", "b"], ["y"],
        [helper.make_node("Add", ["a", "b"], ["s"]),
         _with_ref(helper.make_node("LeakyRelu", ["s"], ["y"]), "alpha", onnx.AttributeProto.FLOAT)],
        [helper.make_opsetid("", 17)], attributes=["alpha"])
    m = model([helper.make_node("AddThenLeaky", ["x", "x"], ["z"], domain="custom", alpha=0.5)],
              [X], [Z], functions=[fn], extra_opsets=[("custom", 1)])
    z = refrt.run(m, {"x": np.array([[-1, 0, 2]], np.float32)})[0]
    np.testing.assert_allclose(z, [[-1, 0, 4]])


def test_model_local_function_shadows_nothing_else():
    fn = helper.make_function("custom", "Negate", ["a"], ["y"],
                              [helper.make_node("Neg", ["a"], ["y"])], [helper.make_opsetid("", 17)])
    m = model([helper.make_node("Negate", ["x"], ["z"], domain="custom")], [X], [Z],
              functions=[fn], extra_opsets=[("custom", 1)])
    np.testing.assert_array_equal(refrt.run(m, {"x": np.ones((1, 3), np.float32)})[0],
                                  -np.ones((1, 3)))


@pytest.mark.parametrize("op_type, attrs, opset", [
    ("HardSwish", {}, 14),                                   # plain function body
    ("LayerNormalization", {"axis": -1, "epsilon": 1e-3}, 17),   # context-dependent body
])
def test_schema_function_fallback(monkeypatch, op_type, attrs, opset):
    """With refrt's own body hidden, an op whose schema has a function body runs that body and
    agrees with refrt's implementation."""
    from refrt import registry
    inputs = [vi("x", F, [2, 3])]
    names = ["x"]
    inits = []
    if op_type == "LayerNormalization":
        inits = [const("s", np.array([1, 2, 3], np.float32)), const("b", np.array([0, 1, 0], np.float32))]
        names += ["s", "b"]
    m = model([helper.make_node(op_type, names, ["z"], **attrs)], inputs, [vi("z", F, [2, 3])],
              inits, opset=opset)
    x = np.array([[-4, -1, 0.5], [1, 2, 9]], np.float32)
    own = refrt.run(m, {"x": x})[0]
    real_lookup = registry.lookup
    monkeypatch.setattr(registry, "lookup",
                        lambda t, d, o: None if t == op_type else real_lookup(t, d, o))
    sess = refrt.InferenceSession(m)
    assert all(s.node.op_type == op_type for s in sess._plan.steps)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], own, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the error matrix

def _expect(exc_type, fn, *fragments):
    with pytest.raises(exc_type) as info:
        fn()
    msg = str(info.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return info.value


def test_unknown_op_names_op_domain_opset_and_versions():
    m = model([helper.make_node("Frobnicate", ["x"], ["z"], name="n1")], [X], [Z])
    e = _expect(UnsupportedOpError, lambda: refrt.InferenceSession(m),
                "Frobnicate", "ai.onnx", "opset 17", "n1")
    assert e.available == []
    # a known op at an opset older than every version refrt implements
    m = model([helper.make_node("Gelu", ["x"], ["z"], name="g")], [X], [Z], opset=17)
    e = _expect(UnsupportedOpError, lambda: refrt.InferenceSession(m), "Gelu", "opset 17",
                "implements versions 20")
    assert e.available == [20]


def test_unknown_domain_not_imported():
    m = model([helper.make_node("Foo", ["x"], ["z"], domain="com.example")], [X], [Z])
    _expect(ModelError, lambda: refrt.InferenceSession(m), "com.example", "opset_import")


def test_unknown_attribute_is_a_model_error():
    m = model([helper.make_node("Relu", ["x"], ["z"], name="r", bogus=1)], [X], [Z])
    _expect(ModelError, lambda: refrt.InferenceSession(m), "'r'", "bogus", "Relu")


def test_feed_errors():
    sess = refrt.InferenceSession(add_chain())
    ok = np.ones((2, 3), np.float32)
    _expect(InputError, lambda: sess.run(None, {}), "missing", "'x'", "tensor(float)")
    _expect(InputError, lambda: sess.run(None, {"x": ok, "y": ok}), "unknown input 'y'")
    _expect(InputError, lambda: sess.run(None, {"x": ok.astype(np.float64)}),
            "'x'", "tensor(float)", "float64")
    _expect(InputError, lambda: sess.run(None, {"x": np.ones(3, np.float32)}),
            "'x'", "rank 2", "rank 1")
    _expect(InputError, lambda: sess.run(None, {"x": np.ones((2, 4), np.float32)}),
            "'x'", "dimension 1 must be 3", "got 4")
    _expect(InputError, lambda: sess.run(None, {"x": [[1.0, 2.0, 3.0]]}), "'x'", "list")
    _expect(InputError, lambda: sess.run(["nope"], {"x": ok}), "unknown output name 'nope'")


@pytest.mark.parametrize("cut", [5, 0.5, -1])
def test_malformed_or_truncated_bytes(cut):
    data = add_chain().SerializeToString()
    end = int(len(data) * cut) if isinstance(cut, float) else cut
    _expect(ModelError, lambda: refrt.InferenceSession(data[:end]), "malformed or truncated")


def test_garbage_bytes_and_missing_file(tmp_path):
    _expect(ModelError, lambda: refrt.InferenceSession(b"\xff\xfe not a model"), "not a valid")
    _expect(ModelError, lambda: refrt.InferenceSession(str(tmp_path / "nope.onnx")),
            "cannot read", "nope.onnx")


def test_duplicate_value_names():
    m = model([helper.make_node("Relu", ["x"], ["z"], name="a"),
               helper.make_node("Neg", ["x"], ["z"], name="b")], [X], [Z])
    _expect(ModelError, lambda: refrt.InferenceSession(m), "'z'", "'a'", "'b'", "duplicate")
    m = model([helper.make_node("Relu", ["x"], ["x"], name="a")], [X], [X])
    _expect(ModelError, lambda: refrt.InferenceSession(m), "'x'", "graph input")


def test_missing_initializer_names_node_and_input():
    m = model([helper.make_node("Add", ["x", "w"], ["z"], name="adder")], [X], [Z])
    _expect(ModelError, lambda: refrt.InferenceSession(m), "'adder'", "'w'", "missing initializer")


def test_cycle_names_the_nodes():
    m = model([helper.make_node("Add", ["x", "b"], ["a"], name="n_a"),
               helper.make_node("Relu", ["a"], ["b"], name="n_b"),
               helper.make_node("Relu", ["x"], ["z"], name="free")], [X], [Z])
    _expect(ModelError, lambda: refrt.InferenceSession(m), "cycle", "n_a", "n_b")


def test_missing_required_input_and_attribute():
    m = model([helper.make_node("Add", ["x", ""], ["z"], name="half")], [X], [Z])
    _expect(ModelError, lambda: refrt.InferenceSession(m), "'half'", "required input #1")
    m = model([helper.make_node("Concat", ["x", "x"], ["z"], name="cat")], [X], [Z])
    _expect(ModelError, lambda: refrt.InferenceSession(m), "'cat'", "required attribute", "axis")


def test_runtime_failure_is_a_node_error_naming_the_node():
    shape = const("shape", np.array([4, 4], np.int64))
    m = model([helper.make_node("Reshape", ["x", "shape"], ["z"], name="bad_reshape")],
              [X], [vi("z", F, None)], [shape])
    sess = refrt.InferenceSession(m)
    e = _expect(NodeError, lambda: sess.run(None, {"x": np.ones((1, 3), np.float32)}),
                "bad_reshape", "Reshape")
    assert e.node_name == "bad_reshape" and e.__cause__ is not None


def test_a_run_raises_no_floating_point_warnings_and_restores_numpy_state():
    m = model([helper.make_node("Div", ["x", "x"], ["d"]),
               helper.make_node("Log", ["d"], ["l"]),
               helper.make_node("Sqrt", ["l"], ["s"]),
               helper.make_node("Exp", ["x"], ["e"]),
               helper.make_node("Add", ["s", "e"], ["z"])], [X], [Z])
    sess = refrt.InferenceSession(m)
    before = np.geterr()
    x = np.array([[0.0, -1.0, 1000.0]], np.float32)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (z,) = sess.run(None, {"x": x})
    assert np.geterr() == before
    # 0/0 -> nan; -1/-1 = 1 -> log 0 -> sqrt 0 = 0, + e^-1; 1000/1000 -> 0 -> 0 + e^1000 = inf
    # (e^-1 by onnxruntime's exp in the default numerics: here the correctly rounded value)
    import math
    assert np.isnan(z[0, 0]) and z[0, 1] == np.float32(math.exp(-1)) and z[0, 2] == np.inf


_TUNING_KEYS = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "MALLOC_MMAP_THRESHOLD_")

# Run in a fresh interpreter: record every mallopt call made through ctypes, and the environment
# before and after.
_IMPORT_PROBE = """
import ctypes, json, os, sys
calls = []
class Recorder(ctypes.CDLL):
    def __getattr__(self, name):
        fn = super().__getattr__(name)
        if name != "mallopt":
            return fn
        def mallopt(*args):
            calls.append(args)
            return fn(*args)
        setattr(self, name, mallopt)    # CDLL caches the function it found: cache the recorder
        return mallopt
ctypes.CDLL = Recorder
before = dict(os.environ)
{code}
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print(json.dumps({{"changed": changed, "mallopt": calls, "numpy": "numpy" in sys.modules, "out": out}}))
"""


def _probe(code, preset=None):
    import json
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in _TUNING_KEYS}
    env.update(preset or {})
    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE.format(code=code)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_import_leaves_the_process_alone():
    """A library does not reconfigure its host: importing refrt (and using it) changes no
    environment variable and makes no allocator call, and does not load NumPy by itself."""
    got = _probe("import refrt\nout = refrt.__version__")
    assert got == {"changed": [], "mallopt": [], "numpy": False, "out": refrt.__version__}
    got = _probe("import refrt, numpy as np\nsess = refrt.InferenceSession("
                 f"{os.path.join(os.path.dirname(refrt.__file__), 'data', 'digits_cnn.onnx')!r})\n"
                 "out = sess.run(None, {'input': np.zeros((1, 1, 8, 8), np.float32)})[0].shape")
    assert got["changed"] == [] and got["mallopt"] == [] and got["out"] == [1, 10]


@pytest.mark.parametrize("first, preset, expected", [
    ("", {}, {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}),
    ("import numpy\n", {}, {"OMP_WAIT_POLICY": "PASSIVE"}),   # OpenBLAS already read its environment
    ("", {"OMP_WAIT_POLICY": "ACTIVE", "OPENBLAS_THREAD_TIMEOUT": "28"}, {}),
])
def test_tune_process_sets_what_is_not_set(first, preset, expected):
    got = _probe(f"{first}import refrt\nout = refrt.tune_process(malloc=False)", preset)
    assert got["changed"] == sorted(expected) and got["mallopt"] == []
    for key, value in expected.items():
        assert got["out"][key] == value


@pytest.mark.parametrize("preset, expected", [({}, True), ({"MALLOC_MMAP_THRESHOLD_": "131072"}, False)])
def test_tune_process_raises_glibc_mmap_threshold_unless_told_otherwise(preset, expected):
    import sys
    if not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
        pytest.skip("the mmap threshold is a glibc setting")
    got = _probe("import refrt\nout = refrt.tune_process(threads=False)", preset)
    assert got["changed"] == []
    assert (got["mallopt"] == [[-3, 32 << 20], [-1, 64 << 20]]) == expected
    assert got["out"]["malloc"].startswith("mmap threshold 32 MiB") == expected


def test_the_refrt_command_tunes_its_process():
    import json
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in _TUNING_KEYS}
    out = subprocess.run([sys.executable, "-m", "refrt", "host", "--json"], env=env,
                         capture_output=True, text=True, check=True)
    tuning = json.loads(out.stdout)["process_tuning"]
    assert tuning["OMP_WAIT_POLICY"] == "PASSIVE" and tuning["OPENBLAS_THREAD_TIMEOUT"] == "4"


# ---------------------------------------------------------------- external data

def _save_external(tmp_path, location):
    w = np.arange(3, dtype=np.float32)
    m = model([helper.make_node("Add", ["x", "w"], ["z"])], [X], [Z], [const("w", w)])
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(m, folder / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    loaded = onnx.load(folder / "m.onnx", load_external_data=False)
    for t in loaded.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(loaded, folder / "m.onnx")
    return folder / "m.onnx"


def test_external_data_relative_to_model_folder(tmp_path, monkeypatch):
    path = _save_external(tmp_path, "weights.bin")
    monkeypatch.chdir(tmp_path)     # resolution must not depend on the working directory
    z = refrt.InferenceSession(str(path)).run(None, {"x": np.zeros((1, 3), np.float32)})[0]
    np.testing.assert_array_equal(z, [[0, 1, 2]])


@pytest.mark.parametrize("location", ["../weights.bin", "/etc/passwd", "sub/../../weights.bin"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, location):
    path = _save_external(tmp_path, location)
    (tmp_path / "weights.bin").write_bytes(np.zeros(3, np.float32).tobytes())
    _expect(ModelError, lambda: refrt.InferenceSession(str(path)), "'w'", location)


def test_external_data_from_bytes_needs_a_path(tmp_path):
    path = _save_external(tmp_path, "weights.bin")
    _expect(ModelError, lambda: refrt.InferenceSession(path.read_bytes()), "external")


def test_external_data_is_put_back_into_the_model_property(tmp_path):
    sess = refrt.InferenceSession(str(_save_external(tmp_path, "weights.bin")))
    (w,) = sess.model.graph.initializer
    assert w.data_location == TensorProto.DEFAULT
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(w), np.arange(3, dtype=np.float32))


# ---------------------------------------------------------------- large model files

def _big_model():
    """A model file over 1 MiB whose weights take every path of the loader: plain types viewed
    in place, bfloat16/bool converted by onnx, a small tensor left in the proto, a Constant
    node's tensor, metadata around the graph."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 100_000)).astype(np.float32)
    inits = [const("w", w), const("b", np.arange(3, dtype=np.float32)),
             const("h", rng.standard_normal((3, 700)).astype(np.float16)),
             const("q", rng.integers(-128, 128, (3, 900), dtype=np.int64).astype(np.int8)),
             helper.make_tensor("bf", TensorProto.BFLOAT16, [3, 600],
                                (rng.standard_normal(1800).astype(np.float32).view(np.uint32)
                                 >> 16).astype(np.uint16).tobytes(), raw=True),
             const("mask", rng.random((3, 2000)) > 0.5)]
    nodes = [helper.make_node("Constant", [], ["k"], name="k", value=onnx.numpy_helper.from_array(
                 rng.standard_normal(2000).astype(np.float32))),
             helper.make_node("ReduceSum", ["w"], ["ws"], name="rw", keepdims=0),
             helper.make_node("Add", ["x", "ws"], ["xw"]),
             helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["q"], ["qf"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["bf"], ["bff"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Concat", ["hf", "qf", "bff", "mf"], ["cat"], axis=1),
             helper.make_node("ReduceSum", ["cat"], ["cs"], keepdims=0, name="rc"),
             helper.make_node("Add", ["xw", "cs"], ["xc"]),
             helper.make_node("ReduceSum", ["k"], ["kk"], keepdims=1, name="rk"),
             helper.make_node("Add", ["xc", "kk"], ["xk"]),
             helper.make_node("Add", ["xk", "b"], ["z"])]
    m = model(nodes, [X], [Z], inits)
    m.doc_string = "large"
    onnx.helper.set_model_props(m, {"k": "v"})
    return m


def test_large_model_file_matches_the_proto_and_keeps_it_whole(tmp_path):
    m = _big_model()
    path = tmp_path / "big.onnx"
    onnx.save(m, path)
    assert path.stat().st_size > 1 << 20
    x = np.ones((2, 3), np.float32)
    from_file = refrt.InferenceSession(str(path))
    expected = refrt.InferenceSession(m).run(None, {"x": x})[0]
    np.testing.assert_array_equal(from_file.run(None, {"x": x})[0], expected)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    w_plan = from_file._plan.initializers
    for name, arr in weights.items():
        assert w_plan[name].dtype == arr.dtype and w_plan[name].shape == arr.shape
        assert w_plan[name].tobytes() == arr.tobytes() and w_plan[name].flags.aligned
    assert from_file.get_modelmeta().custom_metadata_map == {"k": "v"}
    assert from_file.model.SerializeToString() == m.SerializeToString()


def test_split_model_reassembles_to_the_same_bytes():
    from refrt import protowire
    data = _big_model().SerializeToString()
    skeleton, where = protowire.split_model(memoryview(data))
    assert len(skeleton) < 100_000 and {"w", "h", "q", "bf", "mask"} <= set(where)
    assert "b" not in where   # 12 bytes: left in the proto
    back = onnx.ModelProto()
    back.ParseFromString(skeleton)
    for t in back.graph.initializer:
        if t.name in where:
            off, n = where[t.name]
            assert not t.raw_data
            t.raw_data = data[off:off + n]
    assert back.SerializeToString() == data


@pytest.mark.parametrize("cut", [0.3, 0.9, -3])
def test_large_model_file_truncated(tmp_path, cut):
    data = _big_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:int(len(data) * cut) if isinstance(cut, float) else cut])
    _expect(ModelError, lambda: refrt.InferenceSession(str(path)), "malformed or truncated")


def test_large_model_file_with_a_wrong_sized_weight_names_it(tmp_path):
    m = _big_model()
    w = next(t for t in m.graph.initializer if t.name == "w")
    w.dims[1] = 99_999
    onnx.save(m, tmp_path / "bad.onnx")
    _expect(ModelError, lambda: refrt.InferenceSession(str(tmp_path / "bad.onnx")),
            "'w'", "1200000 bytes", "[3, 99999]")


def test_large_model_file_with_a_duplicate_weight_name(tmp_path):
    m = _big_model()
    m.graph.initializer.append(m.graph.initializer[0])
    onnx.save(m, tmp_path / "dup.onnx")
    _expect(ModelError, lambda: refrt.InferenceSession(str(tmp_path / "dup.onnx")),
            "'w'", "defined twice")


def test_backend_interface():
    import refrt.backend as backend
    rep = backend.prepare(add_chain())
    (z,) = rep.run([np.ones((1, 3), np.float32)])
    np.testing.assert_array_equal(z, [[0, 2, 4]])
    node = helper.make_node("Relu", ["a"], ["b"])
    (b,) = backend.run_node(node, [np.array([-1.0, 2.0], np.float32)])
    np.testing.assert_array_equal(b, [0, 2])
    assert backend.supports_device("CPU") and not backend.supports_device("CUDA")


def test_cli_run_json(tmp_path, capsys):
    import json

    from refrt.cli import main
    p = tmp_path / "m.onnx"
    onnx.save(add_chain(), p)
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    assert main(["run", str(p), "--input", f"x={tmp_path / 'x.npy'}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"]["z"]["shape"] == [2, 3] and report["outputs"]["z"]["max"] == 4.0
    assert main(["run", str(p), "--random-inputs", "--dim", "N=4", "--trace"]) == 0
    out = capsys.readouterr().out
    assert "Relu" in out and "z: float32[4, 3]" in out
    assert main(["run", str(tmp_path / "missing.onnx")]) == 1


def test_outputs_do_not_alias_weights_or_feeds():
    w = const("w", np.array([1, 2, 3], np.float32))
    m = model([helper.make_node("Identity", ["w"], ["z"]), helper.make_node("Identity", ["x"], ["y"])],
              [vi("x", F, [3])], [vi("z", F, [3]), vi("y", F, [3])], [w])
    sess = refrt.InferenceSession(m)
    x = np.zeros(3, np.float32)
    z, y = sess.run(None, {"x": x})
    z[:] = 99
    y[:] = 7
    assert x.tolist() == [0, 0, 0]
    assert sess.run(None, {"x": x})[0].tolist() == [1, 2, 3]
