"""Hostile and careless inputs: every outcome is a result or a typed refrt error naming what is at
fault; nothing hangs, and nothing refrt returns aliases the caller's data, another output or the
session's own state."""

from __future__ import annotations

import os
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

import refrt
from refrt.errors import ModelError

vi = helper.make_tensor_value_info


def mk(nodes, inputs, outputs, inits=(), opset=17, sparse=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits), sparse_initializer=list(sparse))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


# ---------------------------------------------------------------- loading never hangs

def _external_model(folder, location, **fields):
    m = mk([helper.make_node("Identity", ["w"], ["y"])], [], [vi("y", T.FLOAT, [3])],
           [numpy_helper.from_array(np.zeros(3, np.float32), "w")])
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = T.EXTERNAL
    for k, v in {"location": location, **fields}.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    path = folder / "m.onnx"
    onnx.save(m, path)
    return str(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_external_data_in_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "weights.bin")
    path = _external_model(tmp_path, "weights.bin")
    outcome = []

    def load():
        try:
            refrt.InferenceSession(path)
        except ModelError as e:
            outcome.append(str(e))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(timeout=30)
    if t.is_alive():                          # unblock the open() so the thread can end
        fd = os.open(tmp_path / "weights.bin", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("loading a model whose external data is a FIFO blocked")
    assert outcome and "not a regular file" in outcome[0] and "'w'" in outcome[0]


@pytest.mark.parametrize("fields, message", [({"offset": "abc"}, "whole numbers"),
                                             ({"length": "-16"}, "must not be negative"),
                                             ({"offset": "-4"}, "must not be negative")])
def test_bad_external_data_fields_are_model_errors(tmp_path, fields, message):
    (tmp_path / "weights.bin").write_bytes(np.zeros(3, np.float32).tobytes())
    with pytest.raises(ModelError, match=message):
        refrt.InferenceSession(_external_model(tmp_path, "weights.bin", **fields))


def test_nul_byte_in_external_location_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="NUL byte"):
        refrt.InferenceSession(_external_model(tmp_path, "weights\x00.bin"))


# ---------------------------------------------------------------- outputs are the caller's own

def test_sequence_outputs_do_not_alias_the_feeds():
    m = mk([helper.make_node("Identity", ["s"], ["t"])],
           [helper.make_tensor_sequence_value_info("s", T.FLOAT, None)],
           [helper.make_tensor_sequence_value_info("t", T.FLOAT, None)])
    feed = [np.ones(3, np.float32), np.zeros(2, np.float32)]
    (out,) = refrt.run(m, {"s": feed})
    assert all(not np.shares_memory(o, f) for o, f in zip(out, feed))
    feed[0][:] = 7
    assert (out[0] == 1).all()


def test_two_outputs_of_one_value_are_two_arrays():
    m = mk([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["b"])],
           [vi("x", T.FLOAT, [3])], [vi("a", T.FLOAT, [3]), vi("b", T.FLOAT, [3])])
    a, b = refrt.run(m, {"x": np.ones(3, np.float32)})
    assert not np.shares_memory(a, b)
    a[:] = 5
    assert (b == 1).all()


def test_views_given_out_never_reach_the_callers_memory_or_each_other():
    """Reshape returns a view of its input: a view of a fed view (the caller's base array), of a
    weight, or of another output is copied; a view of an array an op made for this run is
    returned as it is (no copy of every reshaped output)."""
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32), "w")
    shape = numpy_helper.from_array(np.array([2, 3], np.int64), "shape")
    m = mk([helper.make_node("Reshape", ["x", "shape"], ["from_feed"]),
            helper.make_node("Reshape", ["w", "shape"], ["from_weight"]),
            helper.make_node("Exp", ["x"], ["e"]),
            helper.make_node("Reshape", ["e", "shape"], ["e2"]),
            helper.make_node("Reshape", ["e", "shape"], ["e3"])],
           [vi("x", T.FLOAT, [6])],
           [vi(n, T.FLOAT, None) for n in ("from_feed", "from_weight", "e", "e2", "e3")], [w, shape])
    sess = refrt.InferenceSession(m)
    base = np.zeros(12, np.float32)
    x = base[::2]                                   # the feed is itself a view of the caller's array
    from_feed, from_weight, e, e2, e3 = sess.run(None, {"x": x})
    outs = [from_feed, from_weight, e, e2, e3]
    assert not np.shares_memory(from_feed, base)
    assert all(not np.shares_memory(a, b) for i, a in enumerate(outs) for b in outs[i + 1:])
    for o in outs:
        o[...] = 42                                 # every output is writable and the caller's own
    assert not base.any() and (sess.run(None, {"x": x})[1].ravel() == np.arange(6)).all()
    # a reshaped fresh result (Exp's output seen through Reshape) is not copied again
    m2 = mk([helper.make_node("Exp", ["x"], ["e"]), helper.make_node("Reshape", ["e", "shape"], ["y"])],
            [vi("x", T.FLOAT, [6])], [vi("y", T.FLOAT, None)], [shape])
    (y,) = refrt.InferenceSession(m2).run(None, {"x": x})
    assert y.base is not None and y.flags.writeable


@pytest.mark.parametrize("kind", ["sparse_value", "value"])
def test_constant_outputs_cannot_change_the_session(kind):
    if kind == "sparse_value":
        attr = helper.make_sparse_tensor(numpy_helper.from_array(np.array([5.0], np.float32), "v"),
                                         numpy_helper.from_array(np.array([1], np.int64), "i"), [3])
    else:
        attr = numpy_helper.from_array(np.array([0, 5, 0], np.float32), "v")
    sess = refrt.InferenceSession(mk([helper.make_node("Constant", [], ["y"], **{kind: attr})], [],
                                     [vi("y", T.FLOAT, [3])]))
    (y,) = sess.run(None, {})
    y[:] = -1
    assert sess.run(None, {})[0].tolist() == [0, 5, 0]


# ---------------------------------------------------------------- malformed tensors are model errors

def _with_tensor(t):
    return mk([helper.make_node("Identity", [t.name], ["y"])], [], [vi("y", T.FLOAT, None)], [t])


@pytest.mark.parametrize("data_type", [0, 33, 99])
def test_unknown_element_types(data_type):
    t = T()
    t.name, t.data_type = "w", data_type
    t.dims.extend([2])
    t.raw_data = b"\0" * 8
    with pytest.raises(ModelError, match="'w': data_type"):
        refrt.InferenceSession(_with_tensor(t))


def test_data_that_does_not_fit_the_dims():
    t = numpy_helper.from_array(np.zeros(3, np.float32), "w")
    t.dims[:] = [4]
    with pytest.raises(ModelError, match="'w'.*does not fit"):
        refrt.InferenceSession(_with_tensor(t))


def test_negative_dims():
    t = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    t.dims[:] = [2, -2]
    with pytest.raises(ModelError, match="negative dimension"):
        refrt.InferenceSession(_with_tensor(t))


@pytest.mark.parametrize("dims, index, message", [([3], [7], "outside shape"), ([3], [-1], "outside shape"),
                                                  ([10 ** 6, 10 ** 6], [7], "would take 4000000000000 bytes"),
                                                  ([2, 2], [[0, 0, 1]], "do not fit")])
def test_sparse_initializers_are_checked_before_densifying(dims, index, message):
    sp = helper.make_sparse_tensor(numpy_helper.from_array(np.array([5.0], np.float32), "w"),
                                   numpy_helper.from_array(np.array(index, np.int64), "i"), dims)
    m = mk([helper.make_node("Identity", ["w"], ["y"])], [], [vi("y", T.FLOAT, None)], sparse=[sp])
    with pytest.raises(ModelError, match=message):
        refrt.InferenceSession(m)


# ---------------------------------------------------------------- invalid models are refused at load

def test_attribute_of_the_wrong_type_names_node_and_attribute():
    m = mk([helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0.5, name="r")], [vi("x", T.FLOAT, [3])],
           [vi("y", T.FLOAT, None)], opset=11)
    with pytest.raises(ModelError, match="'r'.*'keepdims' is FLOAT, the spec says INT"):
        refrt.InferenceSession(m)


def test_versions_newer_than_onnx_and_graphs_without_outputs():
    relu = [helper.make_node("Relu", ["x"], ["y"])]
    with pytest.raises(ModelError, match="opset 99"):
        refrt.InferenceSession(mk(relu, [vi("x", T.FLOAT, [3])], [vi("y", T.FLOAT, None)], opset=99))
    m = mk(relu, [vi("x", T.FLOAT, [3])], [vi("y", T.FLOAT, None)])
    m.ir_version = 99
    with pytest.raises(ModelError, match="IR version is 99"):
        refrt.InferenceSession(m)
    with pytest.raises(ModelError, match="no outputs"):
        refrt.InferenceSession(mk(relu, [vi("x", T.FLOAT, [3])], []))


# ---------------------------------------------------------------- zero-size batches

def test_the_bundled_model_runs_a_zero_size_batch():
    from refrt.cli import DATA_DIR
    sess = refrt.InferenceSession(f"{DATA_DIR}/digits_cnn.onnx")
    (y,) = sess.run(None, {"input": np.zeros((0, 1, 8, 8), np.float32)})
    assert y.shape == (0, 10)


def test_compare_ort_on_a_model_onnxruntime_rejects_is_one_line(tmp_path, capsys):
    """refrt runs a per-row a_zero_point MatMulInteger (the spec allows it); onnxruntime refuses."""
    pytest.importorskip("onnxruntime")
    from refrt.cli import main
    a_zp = numpy_helper.from_array(np.array([1, 2], np.uint8), "az")
    m = mk([helper.make_node("MatMulInteger", ["a", "b", "az"], ["y"])],
           [vi("a", T.UINT8, [2, 3])], [vi("y", T.INT32, None)],
           [numpy_helper.from_array(np.ones((3, 2), np.uint8), "b"), a_zp], opset=13)
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    assert main(["run", str(path), "--random-inputs", "--compare-ort"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime cannot run this model" in err and "Traceback" not in err


# ---------------------------------------------------------------- a run can be stopped

def _endless_loop():
    body = helper.make_graph(
        [helper.make_node("Add", ["v", "one"], ["v2"], name="step"), helper.make_node("Identity", ["c"], ["c2"])],
        "b", [vi("i", T.INT64, []), vi("c", T.BOOL, []), vi("v", T.FLOAT, [])],
        [vi("c2", T.BOOL, []), vi("v2", T.FLOAT, [])], [helper.make_tensor("one", T.FLOAT, [], [1.0])])
    m = mk([helper.make_node("Loop", ["M", "cond", "v0"], ["vout"], body=body, name="forever")],
           [vi("M", T.INT64, []), vi("cond", T.BOOL, []), vi("v0", T.FLOAT, [])], [vi("vout", T.FLOAT, [])])
    feeds = {"M": np.array(10 ** 12, np.int64), "cond": np.array(True), "v0": np.array(0, np.float32)}
    return refrt.InferenceSession(m), feeds


def test_a_time_limit_stops_an_endless_loop():
    import time
    sess, feeds = _endless_loop()
    t0 = time.monotonic()
    with pytest.raises(refrt.errors.RunAborted, match="run stopped before node .*: its time limit passed"):
        sess.run(None, feeds, refrt.RunOptions(time_limit=0.3))
    assert time.monotonic() - t0 < 10
    ro = refrt.RunOptions()
    ro.add_run_config_entry("refrt.time_limit_s", "0.2")
    with pytest.raises(refrt.errors.RunAborted):
        sess.run(None, feeds, ro)


@pytest.mark.parametrize("kind", ["refrt", "onnxruntime"])
def test_terminate_from_another_thread(kind):
    sess, feeds = _endless_loop()
    if kind == "onnxruntime":
        options = pytest.importorskip("onnxruntime").RunOptions()
    else:
        options = refrt.RunOptions()
    timer = threading.Timer(0.2, lambda: setattr(options, "terminate", True))
    timer.start()
    with pytest.raises(refrt.errors.RunAborted, match="RunOptions.terminate was set"):
        sess.run(None, feeds, options)
    timer.join()
    options.terminate = False               # the session is usable again
    feeds["M"] = np.array(3, np.int64)
    assert sess.run(None, feeds, options)[0] == 3


# ---------------------------------------------------------------- sizes from data are checked first

HUGE = 10 ** 12


@pytest.mark.parametrize("op_type, inputs, attrs", [
    ("ConstantOfShape", [np.array([HUGE], np.int64)], {}),
    ("Expand", [np.ones(1, np.float32), np.array([HUGE], np.int64)], {}),
    ("Tile", [np.ones(2, np.float32), np.array([HUGE], np.int64)], {}),
    ("Range", [np.array(0, np.int64), np.array(HUGE, np.int64), np.array(1, np.int64)], {}),
    ("Range", [np.array(0, np.float32), np.array(1e12, np.float32), np.array(1, np.float32)], {}),
    ("Pad", [np.ones(2, np.float32), np.array([HUGE, 0], np.int64)], {}),
    ("Resize", [np.ones((1, 1, 2, 2), np.float32), np.array([], np.float32),
                np.array([1, 1, 10 ** 6, 10 ** 6], np.float32)], {"mode": "nearest"}),
])
def test_outputs_sized_from_data_are_refused_before_allocating(op_type, inputs, attrs):
    names = [f"i{k}" for k in range(len(inputs))]
    m = mk([helper.make_node(op_type, names, ["y"], name="big", **attrs)],
           [vi(n, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)) for n, v in zip(names, inputs)],
           [vi("y", helper.np_dtype_to_tensor_dtype(inputs[0].dtype), None)], opset=18)
    with pytest.raises(refrt.NodeError, match="'big'.*would take [0-9]+ bytes, over the limit"):
        refrt.run(m, dict(zip(names, inputs)))


def test_the_tensor_limit_is_a_session_option():
    m = mk([helper.make_node("ConstantOfShape", ["s"], ["y"], name="c")], [vi("s", T.INT64, [1])],
           [vi("y", T.FLOAT, None)])
    sess = refrt.InferenceSession(m, max_tensor_bytes=4000)
    assert sess.run(None, {"s": np.array([1000], np.int64)})[0].shape == (1000,)
    with pytest.raises(refrt.NodeError, match="4004 bytes, over the limit of 4000"):
        sess.run(None, {"s": np.array([1001], np.int64)})
    sp = helper.make_sparse_tensor(numpy_helper.from_array(np.array([5.0], np.float32), "w"),
                                   numpy_helper.from_array(np.array([1], np.int64), "i"), [2000])
    with pytest.raises(ModelError, match="8000 bytes"):
        refrt.InferenceSession(mk([helper.make_node("Identity", ["w"], ["y"])], [], [vi("y", T.FLOAT, None)],
                                  sparse=[sp]), max_tensor_bytes=4000)


def test_names_that_are_not_utf8_are_model_errors():
    """Found by scripts/fuzz.py (a bit flip in a name): protobuf returns such a name as bytes."""
    m = mk([helper.make_node("Relu", ["x"], ["y"], name="AAAAAAAA")], [vi("x", T.FLOAT, [3])],
           [vi("y", T.FLOAT, None)])
    data = m.SerializeToString().replace(b"AAAAAAAA", b"\xff\xfe\xfd\xfcAAAA")
    with pytest.raises(ModelError, match="not valid UTF-8"):
        refrt.InferenceSession(data)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:      # a length-delimited protobuf field
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_a_model_nested_too_deep_is_a_model_error():
    """Subgraphs 200 levels deep, written byte by byte (onnx's own helpers refuse to build it)."""
    graph = _field(1, _field(1, b"x") + _field(2, b"y") + _field(4, b"Relu"))      # GraphProto.node
    for _ in range(200):
        attribute = _field(1, b"then_branch") + _field(6, graph) + _varint(20 << 3) + _varint(5)
        graph = _field(1, _field(1, b"c") + _field(2, b"y") + _field(4, b"If") + _field(5, attribute))
    model = _varint(1 << 3) + _varint(8) + _field(7, graph) + _field(8, _field(2, b"") + _varint(2 << 3) + _varint(17))
    with pytest.raises(ModelError):
        refrt.InferenceSession(model)


@pytest.mark.parametrize("tail", ["Relu", "Clip"])
def test_a_q_without_its_scale_is_a_model_error_naming_the_node(tail):
    # the QDQ fusion at session creation read the scale of the Q after a DQ -> Conv -> Relu unit
    # without checking it was there (an IndexError, found by the mutation fuzzer): now the
    # planner names the node at fault
    s, zp = numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.uint8(128), "zp")
    w = numpy_helper.from_array(np.full((2, 1, 1, 1), 3, np.uint8), "w")
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "s", "zp"], ["wf"]),
             helper.make_node("Conv", ["xf", "wf"], ["c"]),
             helper.make_node(tail, ["c"], ["r"]),
             helper.make_node("QuantizeLinear", ["r"], ["q"], name="broken")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.UINT8, [1, 1, 2, 2])],
                          [helper.make_tensor_value_info("q", T.UINT8, None)], [s, zp, w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match="broken"):
        refrt.InferenceSession(model.SerializeToString())
