"""Sanity checks for the bundled trained model and its labelled test set.

Both files are produced by ``scripts/train_digits.py``.
"""

from pathlib import Path

import numpy as np
import onnx
import pytest

DATA_DIR = Path(__file__).resolve().parents[2] / "refrt" / "data"
MODEL_PATH = DATA_DIR / "digits_cnn.onnx"
TEST_SET_PATH = DATA_DIR / "digits_test.npz"


def _dims(value_info):
    """Shape of a graph input/output: ints for fixed dims, strings for symbolic ones."""
    return [
        d.dim_param if d.HasField("dim_param") else d.dim_value
        for d in value_info.type.tensor_type.shape.dim
    ]


@pytest.fixture(scope="module")
def model():
    return onnx.load(str(MODEL_PATH))


@pytest.fixture(scope="module")
def test_set():
    with np.load(TEST_SET_PATH) as data:
        return {k: data[k] for k in data.files}


def test_model_passes_checker(model):
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets in ({"": 13}, {"ai.onnx": 13})


def test_model_signature(model):
    graph = model.graph
    initializer_names = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    assert [i.name for i in inputs] == ["input"]
    assert [o.name for o in graph.output] == ["logits"]

    (inp,) = inputs
    (out,) = graph.output
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(inp) == ["N", 1, 8, 8]
    assert _dims(out) == ["N", 10]

    assert all(node.name for node in graph.node), "every node should have a name"
    assert all(init.data_type == onnx.TensorProto.FLOAT for init in graph.initializer)


def test_test_set_layout(test_set):
    x, y, calib = test_set["x"], test_set["y"], test_set["calib"]
    assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (1, 8, 8)
    assert y.dtype == np.int64 and y.shape == (x.shape[0],)
    assert calib.dtype == np.float32 and calib.shape[1:] == (1, 8, 8)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(y)) == set(range(10))


def test_onnxruntime_accuracy(test_set):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(["logits"], {"input": test_set["x"]})
    assert logits.shape == (len(test_set["y"]), 10)
    accuracy = float((logits.argmax(axis=1) == test_set["y"]).mean())
    assert accuracy >= 0.95, f"test accuracy {accuracy:.4f} < 0.95"
