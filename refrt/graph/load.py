"""Loading a model: a path, bytes or a ModelProto -> the proto, its folder and its weights.

ONNX models are protobuf; ORT format models (``.ort`` files, FlatBuffers with the identifier
``ORTM`` at bytes 4..8) are read by :mod:`refrt.graph.ort_format` into the same ModelProto. A
large file's weights are read straight into arrays beside the protobuf (:mod:`refrt.protowire`);
external data is read from files inside the model's folder only, and every name is checked to
be text.
"""

from __future__ import annotations

import mmap
import os
import sys

import numpy as np
from google.protobuf.message import DecodeError
from onnx import ModelProto, TensorProto

from .. import protowire
from ..errors import ModelError
from .ort_format import is_ort_format, read_ort_model


def load_model(model) -> tuple[ModelProto, str | None, dict[str, np.ndarray]]:
    """Path, bytes or ModelProto -> (ModelProto, base folder, weights read on the side).

    The third item maps main-graph initializer names to their raw bytes (uint8 arrays) when
    they were read apart from the protobuf (see :mod:`refrt.protowire`): in the returned proto
    those initializers have no data, and :func:`refrt.graph.plan.build_plan` takes them from
    this dict. External data is loaded the same way.

    A path ending in ``.ort``, or a file or bytes with ORT's file identifier, is read as an
    ORT format model (see :mod:`refrt.graph.ort_format`)."""
    base_dir, blobs = None, {}
    if isinstance(model, ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if is_ort_model(data):
            proto, _ = read_ort_model(data, "the model bytes")
        else:
            proto = _parse(data, "the model bytes")
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            with open(path, "rb") as f:
                if _ort_file(path, f):
                    f.seek(0)
                    proto, blobs = read_ort_model(f.read(), repr(path),
                                                  blob_min_bytes=protowire.MIN_SPLIT_BYTES)
                else:
                    proto, blobs = _read_model_file(f, repr(path))
        except OSError as e:
            raise ModelError(f"cannot read model file {path!r}: {e.strerror}") from e
        base_dir = os.path.dirname(os.path.abspath(path))
    else:
        raise TypeError(f"model must be a path, bytes or onnx.ModelProto, not {type(model).__name__}")
    if not proto.HasField("graph"):
        raise ModelError("the model has no graph (malformed or truncated model bytes?)")
    _check_text(proto.graph)
    if _has_external_data(proto):
        if proto is model:
            copy = ModelProto()
            copy.CopyFrom(proto)   # never modify the caller's proto
            proto = copy
        _load_external_data(proto, base_dir, blobs)
    return proto, base_dir, blobs


def is_ort_model(model) -> bool:
    """Whether ``model`` (a path, bytes or ModelProto) is an ORT format model: a path ending in
    ``.ort``, or a file or bytes with ORT's file identifier. onnxruntime applies no graph
    optimizations to those when it loads them (they were optimized when converted), and neither
    does refrt."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return is_ort_format(bytes(model[:8]))
    if isinstance(model, (str, os.PathLike)):
        try:
            with open(os.fspath(model), "rb") as f:
                return _ort_file(os.fspath(model), f)
        except OSError:
            return False
    return False


def _ort_file(path, f) -> bool:
    return os.fsdecode(path).lower().endswith(".ort") or is_ort_format(f.read(8))


SPLIT_MIN_FILE_BYTES = 1 << 20   # smaller files are parsed whole


def _read_model_file(f, what: str) -> tuple[ModelProto, dict]:
    """Parse a model file; for a large one, weights are read straight into arrays (one copy)
    and protobuf parses only the rest."""
    size = os.fstat(f.fileno()).st_size
    if size >= SPLIT_MIN_FILE_BYTES and sys.byteorder == "little":
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            mm = None
        if mm is not None:
            try:
                split = protowire.split_model(mm)
            finally:
                mm.close()
            if split is not None:
                skeleton, where = split
                proto = _parse(skeleton, what)
                try:
                    blobs = protowire.read_blobs(f, where)
                except EOFError as e:   # the file changed while it was being read
                    raise ModelError(f"{what}: {e}") from e
                return proto, blobs
    f.seek(0)
    return _parse(f.read(), what), {}


def _parse(data: bytes, what: str) -> ModelProto:
    proto = ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelError(f"{what}: not a valid ONNX model (malformed or truncated): {e}") from e
    if not data:
        raise ModelError(f"{what}: empty model")
    return proto


def _check_text(graph) -> None:
    """ONNX names are UTF-8 strings; protobuf hands back bytes for one that is not (a damaged
    file), which nothing downstream expects."""
    fields = [graph.name, *(v.name for v in (*graph.input, *graph.output, *graph.value_info)),
              *(t.name for t in graph.initializer)]
    for node in graph.node:
        fields += [node.name, node.op_type, node.domain, *node.input, *node.output,
                   *(a.name for a in node.attribute)]
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _check_text(g)
    bad = next((f for f in fields if not isinstance(f, str)), None)
    if bad is not None:
        raise ModelError(f"graph {graph.name!r}: the name {bad!r} is not valid UTF-8 (a damaged file?)")


def _all_tensors(graph):
    """Every TensorProto stored in a graph, its subgraphs and Constant attributes."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def _has_external_data(proto: ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in _all_tensors(proto.graph))


def _load_external_data(proto: ModelProto, base_dir: str | None, blobs: dict) -> None:
    if base_dir is None:
        raise ModelError("the model keeps tensors in external files; load it from its path so "
                         "that refrt knows which folder they are in")
    root = os.path.realpath(base_dir)
    n_main = len(proto.graph.initializer)   # _all_tensors yields these first; their bytes go
    for i, t in enumerate(_all_tensors(proto.graph)):   # to blobs, the others' into the proto
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        if "\x00" in loc:
            raise ModelError(f"tensor {t.name!r}: external data location {loc!r} holds a NUL byte")
        if not loc or os.path.isabs(loc) or loc.startswith(("/", "\\")) or ":" in loc:
            raise ModelError(f"tensor {t.name!r}: external data location {loc!r} must be a path "
                             f"relative to the model's folder")
        full = os.path.realpath(os.path.join(root, loc))
        if os.path.commonpath([root, full]) != root:
            raise ModelError(f"tensor {t.name!r}: external data location {loc!r} escapes the "
                             f"model's folder {root!r}")
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError:
            raise ModelError(f"tensor {t.name!r}: external data offset {info.get('offset')!r} and "
                             f"length {info.get('length')!r} must be whole numbers") from None
        if offset < 0 or (length is not None and length < 0):
            raise ModelError(f"tensor {t.name!r}: external data offset {offset} and length {length} "
                             f"must not be negative")
        # only a regular file: opening a FIFO (or a device) would block or never end
        if not os.path.isfile(full):
            raise ModelError(f"tensor {t.name!r}: external data {loc!r} is not a regular file"
                             + ("" if os.path.exists(full) else " (it does not exist)"))
        try:
            with open(full, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                n = length if length is not None else max(0, size - offset)
                if offset + n > size:
                    raise ModelError(f"tensor {t.name!r}: external data {loc!r} is truncated "
                                     f"({max(0, size - offset)} of {n} bytes)")
                raw = protowire.read_blob(f, offset, n)
        except OSError as e:
            raise ModelError(f"tensor {t.name!r}: cannot read external data {loc!r}: "
                             f"{e.strerror}") from e
        except EOFError as e:
            raise ModelError(f"tensor {t.name!r}: external data {loc!r}: {e}") from e
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT
        if i < n_main:
            blobs[t.name] = raw
        else:
            t.raw_data = raw.tobytes()
