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
