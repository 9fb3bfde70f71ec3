"""ONNX value types: the strings ORT shows ("tensor(float)", "seq(tensor(int64))"), the check of a
fed value against a declared TypeProto, and the TypeProto of a run-time value."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, TypeProto

from .errors import InputError
from .ops._common import np_dtype, onnx_elem_type

_ELEM_NAMES = {
    TensorProto.FLOAT: "float", TensorProto.UINT8: "uint8", TensorProto.INT8: "int8",
    TensorProto.UINT16: "uint16", TensorProto.INT16: "int16", TensorProto.INT32: "int32",
    TensorProto.INT64: "int64", TensorProto.STRING: "string", TensorProto.BOOL: "bool",
    TensorProto.FLOAT16: "float16", TensorProto.DOUBLE: "double", TensorProto.UINT32: "uint32",
    TensorProto.UINT64: "uint64", TensorProto.COMPLEX64: "complex64",
    TensorProto.COMPLEX128: "complex128", TensorProto.BFLOAT16: "bfloat16",
}


def elem_name(elem_type: int) -> str:
    if elem_type in _ELEM_NAMES:
        return _ELEM_NAMES[elem_type]
    return TensorProto.DataType.Name(elem_type).lower()


def type_string(tp: TypeProto) -> str:
    """TypeProto -> ORT's spelling: tensor(float), seq(tensor(float)), optional(...), map(...)."""
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({elem_name(tp.tensor_type.elem_type)})"
    if kind == "sparse_tensor_type":
        return f"sparse_tensor({elem_name(tp.sparse_tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({type_string(tp.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({type_string(tp.optional_type.elem_type)})"
    if kind == "map_type":
        return f"map({elem_name(tp.map_type.key_type)},{type_string(tp.map_type.value_type)})"
    return "unknown"


def shape_of(tp: TypeProto) -> list | None:
    """Declared dims: ints, symbolic names, or None for an unnamed unknown dim."""
    kind = tp.WhichOneof("value")
    if kind not in ("tensor_type", "sparse_tensor_type"):
        return []
    t = getattr(tp, kind)
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def check_value(name: str, value, tp: TypeProto, where: str = "input"):
    """Raise InputError unless ``value`` fits the declared type. Returns the value to use."""
    kind = tp.WhichOneof("value")
    if kind is None:
        return value
    if kind == "optional_type":
        return None if value is None else check_value(name, value, tp.optional_type.elem_type, where)
    if kind == "sequence_type":
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where} {name!r}: expected {type_string(tp)} (a list of arrays), "
                             f"got {type(value).__name__}")
        return [check_value(f"{name}[{i}]", v, tp.sequence_type.elem_type, where)
                for i, v in enumerate(value)]
    if kind == "map_type":
        if not isinstance(value, dict):
            raise InputError(f"{where} {name!r}: expected {type_string(tp)} (a dict), got "
                             f"{type(value).__name__}")
        return value
    if kind != "tensor_type":
        return value
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise InputError(f"{where} {name!r}: expected a numpy array of {type_string(tp)}, got "
                         f"{type(value).__name__} (refrt never guesses a dtype)")
    et = tp.tensor_type.elem_type
    if et != TensorProto.UNDEFINED:
        want = np_dtype(et)
        if et == TensorProto.STRING:
            if value.dtype != object and value.dtype.kind not in "SU":
                raise InputError(f"{where} {name!r}: expected {type_string(tp)}, got an array "
                                 f"of {value.dtype}")
            if value.dtype.kind in "SU":
                value = value.astype(object)
        elif value.dtype != want:
            raise InputError(f"{where} {name!r}: expected {type_string(tp)} ({want}), got an "
                             f"array of {value.dtype} (no implicit casts)")
    dims = shape_of(tp)
    if dims is not None:
        if value.ndim != len(dims):
            raise InputError(f"{where} {name!r}: expected rank {len(dims)} (shape "
                             f"{_dims_str(dims)}), got rank {value.ndim} (shape {list(value.shape)})")
        for axis, (d, got) in enumerate(zip(dims, value.shape)):
            if isinstance(d, int) and d > 0 and d != got:
                raise InputError(f"{where} {name!r}: dimension {axis} must be {d} (shape "
                                 f"{_dims_str(dims)}), got {got} (shape {list(value.shape)})")
    return value


def _dims_str(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def type_proto_of(value) -> TypeProto:
    """The TypeProto of a run-time value (tensor, sequence, optional None)."""
    if isinstance(value, list):
        elem = type_proto_of(value[0]) if value else onnx.helper.make_tensor_type_proto(
            TensorProto.FLOAT, None)
        return onnx.helper.make_sequence_type_proto(elem)
    arr = np.asarray(value)
    return onnx.helper.make_tensor_type_proto(onnx_elem_type(arr.dtype), list(arr.shape))
