"""The test-folder layout onnx's backend runner and onnxruntime's test runner read:

    FOLDER/model.onnx
    FOLDER/test_data_set_0/input_0.pb ... output_0.pb ...

Values are TensorProto, SequenceProto or OptionalProto files, in the order of the graph's inputs
(initializers excluded) and outputs.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["read_value", "write_value", "read_folder", "write_folder", "describe"]


def read_value(path: str, type_proto=None):
    """One value file; ``type_proto`` (the graph input's or output's type) says which proto."""
    with open(path, "rb") as f:
        data = f.read()
    if type_proto is not None and type_proto.HasField("sequence_type"):
        p = onnx.SequenceProto()
        p.ParseFromString(data)
        return numpy_helper.to_list(p)
    if type_proto is not None and type_proto.HasField("optional_type"):
        p = onnx.OptionalProto()
        p.ParseFromString(data)
        return numpy_helper.to_optional(p)
    t = onnx.TensorProto()
    t.ParseFromString(data)
    return numpy_helper.to_array(t)


def write_value(path: str, value, name: str = "") -> None:
    if isinstance(value, list):
        proto = numpy_helper.from_list([np.asarray(v) for v in value], name)
    else:
        proto = numpy_helper.from_array(np.asarray(value), name)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


def _graph_inputs(model: onnx.ModelProto) -> list:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def write_folder(folder: str, model: bytes | onnx.ModelProto, feeds: dict, outputs: list | None,
                 data_set: int = 0) -> str:
    """Write ``model`` and one data set (``outputs`` None: inputs only). Returns the folder."""
    m = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
    data_dir = os.path.join(folder, f"test_data_set_{data_set}")
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(folder, "model.onnx"), "wb") as f:
        f.write(m.SerializeToString())
    for i, vi in enumerate(_graph_inputs(m)):
        if vi.name in feeds:
            write_value(os.path.join(data_dir, f"input_{i}.pb"), feeds[vi.name], vi.name)
    for i, (vi, value) in enumerate(zip(m.graph.output, outputs or [])):
        if value is not None:
            write_value(os.path.join(data_dir, f"output_{i}.pb"), value, vi.name)
    return folder


def read_folder(folder: str, data_set: int = 0) -> tuple[bytes, dict, list | None]:
    """(model bytes, feeds by input name, expected outputs or None) of a test folder."""
    path = os.path.join(folder, "model.onnx")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder}: no model.onnx (expected a test folder: model.onnx and "
                                f"test_data_set_N/)")
    with open(path, "rb") as f:
        data = f.read()
    m = onnx.load_from_string(data)
    data_dir = os.path.join(folder, f"test_data_set_{data_set}")
    feeds = {}
    for i, vi in enumerate(_graph_inputs(m)):
        p = os.path.join(data_dir, f"input_{i}.pb")
        if os.path.exists(p):
            feeds[vi.name] = read_value(p, vi.type)
    outs = sorted(glob.glob(os.path.join(data_dir, "output_*.pb")))
    expected = None
    if outs:
        expected = [read_value(os.path.join(data_dir, f"output_{i}.pb"), vi.type)
                    if os.path.exists(os.path.join(data_dir, f"output_{i}.pb")) else None
                    for i, vi in enumerate(m.graph.output)]
    return data, feeds, expected


def describe(value) -> str:
    """``float32[2, 3]``, ``seq(2 x float32[3])``, ``map(3)``, ``None``: a value's type and
    shape, as the kit prints them."""
    if value is None:
        return "None"
    if isinstance(value, dict):
        return f"map({len(value)})"
    if isinstance(value, list):
        inner = describe(value[0]) if value else "empty"
        return f"seq({len(value)} x {inner})"
    a = np.asarray(value)
    return f"{'string' if a.dtype == object else a.dtype}{list(a.shape)}"
