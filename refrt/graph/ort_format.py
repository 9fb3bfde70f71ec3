"""Reading an ORT format model (a ``.ort`` file) into an ``onnx.ModelProto``.

onnxruntime's ``python -m onnxruntime.tools.convert_onnx_models_to_ort`` writes models in its own
format for its reduced-size builds: the graph after onnxruntime's optimizations (none, basic or
extended/all), serialized with FlatBuffers instead of protobuf. This module reads such a file
back into the ONNX structures the rest of refrt runs unchanged. It needs no FlatBuffers library:
the wire format is small enough to read with :mod:`struct` and NumPy, and the reader below is
written to be read.

The FlatBuffers wire format (all integers little-endian)
--------------------------------------------------------

* **The file** starts with a ``uoffset`` (uint32) to the root table, then the 4-byte *file
  identifier*: ``b"ORTM"`` for ORT models.
* A **uoffset** is unsigned and counted from its own position: the uint32 ``u`` stored at byte
  ``p`` refers to byte ``p + u``. References therefore only ever point forward.
* A **table** (a record whose fields may be absent) at byte ``t`` starts with an ``soffset``
  (int32 ``s``): its *vtable* is at ``t - s``. The vtable is a list of uint16: its own size in
  bytes, the table's size in bytes, then one entry per field id: the field's position relative to
  ``t``, or 0 when the field is absent (its default value applies: 0, ``None``, or the default the
  schema declares). Field ids count the fields in the order the schema declares them, so field
  ``i`` is the uint16 at vtable byte ``4 + 2 * i``. Tables with the same layout share a vtable.
* A **scalar** field (int8 ... int64, float32, bool, enums) is stored inline in the table.
* A **string**, **vector** or **sub-table** field holds a uoffset to it. A vector is a uint32
  element count followed by its elements: scalars inline, strings and tables as one uoffset
  each (counted from the element's own position). A string is a uint32 byte count, the bytes,
  then a NUL that is not counted.
* A **union** field takes two ids: a uint8 saying which table type the value is (0 = none), then
  the uoffset to that table.
* A **struct** (fixed layout, e.g. ``EdgeEnd``) is stored inline; this reader needs none.

The ORT schema (``onnxruntime/core/flatbuffers/schema/ort.fbs``), the parts read here
-------------------------------------------------------------------------------------

``InferenceSession`` (the root): ``ort_version`` (the format version, a string such as
``"6"``), ``model``; a kernel type-string resolver, which only onnxruntime's kernel lookup needs.

``Model``: ``ir_version``, ``opset_import`` (``OperatorSetId``: ``domain``, ``version``),
``producer_name``, ``producer_version``, ``domain``, ``model_version``, ``doc_string``,
``graph``, ``graph_doc_string``, ``metadata_props`` (``StringStringEntry``: ``key``, ``value``).
Model-local functions are not stored: onnxruntime inlines them before it saves.

``Graph``: ``initializers`` (``Tensor``), ``node_args`` (``ValueInfo``: the name and type of
every value the graph uses; those of graph inputs and outputs give their declared types, those of
node outputs become the graph's ``value_info``), ``nodes``, ``inputs`` and ``outputs`` (names; an
initializer appears in ``inputs`` only when the source model listed it there, as in ONNX),
``sparse_initializers`` (``SparseTensor``: ``values``, ``indices``, ``dims``; onnxruntime narrows
the indices to the smallest integer type that holds them, the reader widens them back to the
int64 ONNX requires), and ``runtime_optimizations``: fusions that onnxruntime may apply when it
loads the model (``--optimization_style Runtime``). The graph is complete without them, so they
are ignored here: refrt runs the graph as stored. A graph has no name in this format; ONNX
requires one, so the reader names the main graph ``main_graph`` and each subgraph after its
attribute (``then_branch``, ``body``, ...).

``Node``: ``name``, ``doc_string``, ``domain``, ``since_version``, ``index`` (nodes are stored
in no particular order; this reader sorts them by index, refrt's planner orders them
topologically anyway), ``op_type``, ``type`` (``Primitive``, or ``Fused`` for a node an execution
provider compiled, whose body the file does not hold: refused), ``execution_provider_type``,
``inputs`` and ``outputs`` (names, ``""`` for an omitted optional input), ``attributes``,
``input_arg_counts`` (how many of ``inputs`` each formal input takes; ONNX needs only the flat
list) and ``implicit_inputs`` (outer-scope values a subgraph reads; ONNX finds those by name).

``Attribute``: ``name``, ``doc_string``, ``type`` (ONNX's AttributeType numbers), then one
value field per kind: ``f``, ``i``, ``s``, ``t`` (a ``Tensor``), ``g`` (a ``Graph``: the
bodies of If, Loop and Scan), ``floats``, ``ints``, ``strings``, ``tensors``, ``graphs``.

``Tensor``: ``name``, ``doc_string``, ``dims`` (int64), ``data_type`` (ONNX's TensorProto data
type numbers), ``raw_data`` (the elements' little-endian bytes, as ONNX's ``raw_data``),
``string_data`` for string tensors, and ``external_data_offset``: data kept in a separate file
(used by onnxruntime's training checkpoints; its model converter does not write it; refused
here).

``ValueInfo``: ``name``, ``doc_string``, ``type`` (``TypeInfo``: ``denotation`` and a union of
``TensorTypeAndShape`` (``elem_type``, ``shape``), ``SequenceType`` (``elem_type``) and
``MapType`` (``key_type``, ``value_type``)). A ``Shape`` is a vector of ``Dimension``
(``value``: a ``DimensionValue`` with ``dim_type`` unknown / value / param, ``dim_value``,
``dim_param``; ``denotation``). An absent shape means an unknown rank.

Format versions: onnxruntime 1.32 writes version ``"6"`` and accepts 1 to 6; so does this reader
(the schema only ever gained fields, and the ones read here kept their ids; only version 6 files
are tested). A newer version is refused with a ModelError naming it. A damaged file (wrong
identifier, a reference outside the file, a string that is not UTF-8 where a name is expected,
subgraphs nested absurdly deep, references that share data so much that a small file would
unfold without end) is a ModelError naming the file and the place, e.g.
``InferenceSession.model.graph.nodes[3].inputs[1]``.
"""

from __future__ import annotations

import struct

import numpy as np
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto, TypeProto

from ..errors import ModelError

FILE_IDENTIFIER = b"ORTM"
SUPPORTED_VERSIONS = ("1", "2", "3", "4", "5", "6")   # what onnxruntime 1.32 loads; it writes "6"

# Field names in the order ort.fbs declares them: a field's id is its position here (a union
# takes two ids: its type byte, then its value). Only the tables this reader opens are listed.
FIELDS = {
    "InferenceSession": ("ort_version", "model", "session_state", "kernel_type_str_resolver"),
    "Model": ("ir_version", "opset_import", "producer_name", "producer_version", "domain",
              "model_version", "doc_string", "graph", "graph_doc_string", "metadata_props"),
    "OperatorSetId": ("domain", "version"),
    "StringStringEntry": ("key", "value"),
    "Graph": ("initializers", "node_args", "nodes", "max_node_index", "node_edges", "inputs",
              "outputs", "sparse_initializers", "runtime_optimizations"),
    "Node": ("name", "doc_string", "domain", "since_version", "index", "op_type", "type",
             "execution_provider_type", "inputs", "outputs", "attributes", "input_arg_counts",
             "implicit_inputs"),
    "Attribute": ("name", "doc_string", "type", "f", "i", "s", "t", "g", "floats", "ints",
                  "strings", "tensors", "graphs"),
    "Tensor": ("name", "doc_string", "dims", "data_type", "raw_data", "string_data",
               "external_data_offset"),
    "SparseTensor": ("values", "indices", "dims"),
    "ValueInfo": ("name", "doc_string", "type"),
    "TypeInfo": ("denotation", "value_type", "value"),
    "TensorTypeAndShape": ("elem_type", "shape"),
    "SequenceType": ("elem_type",),
    "MapType": ("key_type", "value_type"),
    "Shape": ("dim",),
    "Dimension": ("value", "denotation"),
    "DimensionValue": ("dim_type", "dim_value", "dim_param"),
}

FIELD_IDS = {kind: {name: i for i, name in enumerate(names)} for kind, names in FIELDS.items()}

MAIN_GRAPH_NAME = "main_graph"                     # the format stores no graph names
NO_MODEL_VERSION = 2**63 - 1                        # what onnxruntime writes for "not set"
NODE_FUSED = 1                                      # NodeType: Primitive = 0, Fused = 1
TYPE_INFO_KINDS = {1: "TensorTypeAndShape", 2: "SequenceType", 3: "MapType"}
DIM_VALUE, DIM_PARAM = 1, 2                         # DimensionValueType (0 = unknown)
SPARSE_INDEX_TYPES = {TensorProto.INT8: "i1", TensorProto.INT16: "<i2", TensorProto.INT32: "<i4",
                      TensorProto.UINT8: "u1", TensorProto.UINT16: "<u2", TensorProto.UINT32: "<u4"}
MAX_NESTING = 64                                    # subgraphs within subgraphs, types in types

# Each byte of the file is read about once when converting a model onnxruntime wrote. A damaged
# or crafted file can point many references at one large string or table (FlatBuffers allows
# sharing) and so make a small file expand without end; the reader stops at this many bytes read
# per byte of the file.
READ_BUDGET_PER_BYTE = 16


class _Reader:
    """Bounds-checked access to the bytes of one file. Every failure is a ModelError naming the
    file (``what``) and the place in the schema (``where``)."""

    def __init__(self, data: bytes, what: str):
        self.data, self.size, self.what = data, len(data), what
        self.budget = READ_BUDGET_PER_BYTE * len(data) + (1 << 16)

    def fail(self, where: str, message: str):
        raise ModelError(f"{self.what}: damaged ORT format model: {where}: {message}")

    def charge(self, n: int, where: str) -> None:
        self.budget -= n
        if self.budget < 0:
            self.fail(where, "the file refers to the same data far more often than a model "
                             "onnxruntime writes does (a damaged or crafted file)")

    def unpack(self, fmt: str, pos: int, where: str):
        n = struct.calcsize(fmt)
        if pos < 0 or pos + n > self.size:
            self.fail(where, f"it points to bytes {pos}..{pos + n} outside the file "
                             f"({self.size} bytes; truncated?)")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def follow(self, pos: int, where: str) -> int:
        """The position the uoffset stored at ``pos`` refers to."""
        return pos + self.unpack("<I", pos, where)

    def vector(self, pos: int, item_size: int, where: str) -> tuple[int, int]:
        """(element count, position of the first element) of the vector at ``pos``."""
        count = self.unpack("<I", pos, where)
        if pos + 4 + count * item_size > self.size:
            self.fail(where, f"a vector of {count} elements at byte {pos} runs past the end of "
                             f"the file ({self.size} bytes; truncated?)")
        self.charge(4 + count * item_size, where)
        return count, pos + 4

    def string(self, pos: int, where: str) -> bytes:
        length, start = self.vector(pos, 1, where)
        return self.data[start:start + length]

    def text(self, pos: int, where: str) -> str:
        raw = self.string(pos, where)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(where, f"the name {raw[:40]!r} is not valid UTF-8")

    def table(self, pos: int, kind: str, where: str) -> _Table:
        return _Table(self, pos, kind, where)


class _Table:
    """One table: its fields by name (see ``FIELDS``)."""

    def __init__(self, reader: _Reader, pos: int, kind: str, where: str):
        self.r, self.pos, self.kind, self.where = reader, pos, kind, where
        reader.charge(4, where)
        vtable = pos - reader.unpack("<i", pos, where)
        vsize = reader.unpack("<H", vtable, where)
        if vsize < 4 or vsize % 2:
            reader.fail(where, f"the {kind} table at byte {pos} has a vtable of {vsize} bytes")
        reader.unpack(f"<{vsize // 2}H", vtable, where)   # the whole vtable is inside the file
        self.vtable, self.vsize = vtable, vsize

    def _at(self, field: str) -> int | None:
        """Position of ``field``'s value, or None when the table lacks it."""
        slot = 4 + 2 * FIELD_IDS[self.kind][field]
        if slot >= self.vsize:
            return None             # written by an older schema that did not have the field yet
        offset = self.r.unpack("<H", self.vtable + slot, self.where)
        if offset == 0:
            return None
        if offset < 4:              # a field cannot overlap the table's own soffset
            self.r.fail(self._in(field), f"field offset {offset} inside the table header")
        return self.pos + offset

    def _in(self, field: str) -> str:
        return f"{self.where}.{field}"

    def scalar(self, field: str, fmt: str, default=0):
        at = self._at(field)
        return default if at is None else self.r.unpack(fmt, at, self._in(field))

    def has(self, field: str) -> bool:
        return self._at(field) is not None

    def bytes(self, field: str) -> bytes | None:
        at = self._at(field)
        return None if at is None else self.r.string(self.r.follow(at, self._in(field)),
                                                     self._in(field))

    def text(self, field: str) -> str:
        at = self._at(field)
        return "" if at is None else self.r.text(self.r.follow(at, self._in(field)),
                                                 self._in(field))

    def table(self, field: str, kind: str) -> _Table | None:
        at = self._at(field)
        if at is None:
            return None
        return self.r.table(self.r.follow(at, self._in(field)), kind, self._in(field))

    def _elements(self, field: str, item_size: int) -> tuple[int, int]:
        at = self._at(field)
        if at is None:
            return 0, 0
        return self.r.vector(self.r.follow(at, self._in(field)), item_size, self._in(field))

    def array(self, field: str, dtype: str) -> np.ndarray:
        """A vector of scalars (``dtype`` such as ``"<i8"``), copied out of the file."""
        count, start = self._elements(field, np.dtype(dtype).itemsize)
        return np.frombuffer(self.r.data, np.dtype(dtype), count, start).copy()

    def raw(self, field: str) -> tuple[int, int] | None:
        """(position, length) of a byte vector, without reading it; None when absent."""
        if not self.has(field):
            return None
        count, start = self._elements(field, 1)
        return start, count

    def _offsets(self, field: str):
        count, start = self._elements(field, 4)
        for i in range(count):
            yield f"{self._in(field)}[{i}]", self.r.follow(start + 4 * i, self._in(field))

    def tables(self, field: str, kind: str) -> list[_Table]:
        return [self.r.table(pos, kind, where) for where, pos in self._offsets(field)]

    def texts(self, field: str) -> list[str]:
        return [self.r.text(pos, where) for where, pos in self._offsets(field)]

    def byte_strings(self, field: str) -> list[bytes]:
        return [self.r.string(pos, where) for where, pos in self._offsets(field)]


def is_ort_format(data) -> bool:
    """Whether ``data`` (the first bytes of a file at least) carries the ORT file identifier."""
    return bytes(data[4:8]) == FILE_IDENTIFIER


def read_ort_model(data: bytes, what: str = "the model bytes",
                   blob_min_bytes: int | None = None) -> tuple[ModelProto, dict[str, np.ndarray]]:
    """ORT format bytes -> (ModelProto, weights read on the side).

    ``what`` names the source in errors. Main-graph initializers of at least ``blob_min_bytes``
    bytes are returned as uint8 arrays in the dict, with no data in the proto, as
    :func:`refrt.graph.load.load_model` returns large weights (None: every weight stays in the
    proto)."""
    if len(data) < 8:
        raise ModelError(f"{what}: not an ORT format model: {len(data)} bytes are too few to hold "
                         f"even the header (truncated?)")
    if not is_ort_format(data):
        raise ModelError(f"{what}: not an ORT format model: bytes 4..8 are {bytes(data[4:8])!r}, "
                         f"not the file identifier {FILE_IDENTIFIER!r}")
    r = _Reader(bytes(data), what)
    try:
        root = r.table(r.follow(0, "the root offset"), "InferenceSession", "InferenceSession")
        version = root.text("ort_version")
        if version not in SUPPORTED_VERSIONS:
            shown = repr(version) if version else "no version"
            raise ModelError(f"{what}: ORT format version {shown} is not supported: refrt reads "
                             f"versions {', '.join(SUPPORTED_VERSIONS)} (onnxruntime 1.32 writes "
                             f"{SUPPORTED_VERSIONS[-1]}); convert the .onnx model again or use "
                             f"the .onnx model itself")
        model = root.table("model", "Model")
        if model is None:
            r.fail("InferenceSession", "the file holds no model")
        blobs: dict[str, np.ndarray] = {}
        proto = _Converter(r, blobs, blob_min_bytes).model(model)
    except RecursionError:
        raise ModelError(f"{what}: the ORT format model is nested too deeply to read") from None
    return proto, blobs


class _Converter:
    """Flatbuffers tables -> ONNX protos, one method per table kind."""

    def __init__(self, reader: _Reader, blobs: dict, blob_min_bytes: int | None):
        self.r, self.blobs, self.blob_min_bytes = reader, blobs, blob_min_bytes

    def model(self, m: _Table) -> ModelProto:
        proto = ModelProto(ir_version=m.scalar("ir_version", "<q"))
        for o in m.tables("opset_import", "OperatorSetId"):
            proto.opset_import.add(domain=o.text("domain"), version=o.scalar("version", "<q"))
        proto.producer_name = m.text("producer_name")
        proto.producer_version = m.text("producer_version")
        proto.domain = m.text("domain")
        version = m.scalar("model_version", "<q")
        if version != NO_MODEL_VERSION:
            proto.model_version = version
        proto.doc_string = m.text("doc_string")
        for e in m.tables("metadata_props", "StringStringEntry"):
            proto.metadata_props.add(key=e.text("key"), value=e.text("value"))
        graph = m.table("graph", "Graph")
        if graph is None:
            self.r.fail("Model", "the model has no graph")
        self.graph(graph, proto.graph, depth=0)
        proto.graph.doc_string = m.text("graph_doc_string")
        return proto

    def graph(self, g: _Table, out: GraphProto, depth: int, name: str = MAIN_GRAPH_NAME) -> None:
        if depth > MAX_NESTING:
            self.r.fail(g.where, f"subgraphs are nested more than {MAX_NESTING} deep")
        out.name = name
        main = depth == 0
        for t in g.tables("initializers", "Tensor"):
            self.tensor(t, out.initializer.add(), as_blob=main)
        for sp in g.tables("sparse_initializers", "SparseTensor"):
            self.sparse_tensor(sp, out.sparse_initializer.add())
        types = {}
        for vi in g.tables("node_args", "ValueInfo"):
            types[vi.text("name")] = vi
        for names, values in ((g.texts("inputs"), out.input), (g.texts("outputs"), out.output)):
            for name in names:
                self.value_info(name, types.get(name), values.add(), depth)
        nodes = g.tables("nodes", "Node")
        nodes.sort(key=lambda n: n.scalar("index", "<I"))
        for n in nodes:
            self.node(n, out.node.add(), depth)
        # the types onnxruntime inferred for the values the nodes compute
        declared = {vi.name for vi in out.output}
        for node in out.node:
            for name in node.output:
                vi = types.get(name)
                if name and name not in declared and vi is not None and vi.has("type"):
                    declared.add(name)
                    self.value_info(name, vi, out.value_info.add(), depth)

    def value_info(self, name: str, vi: _Table | None, out, depth: int) -> None:
        out.name = name
        if vi is None:
            return
        if vi.has("doc_string"):
            out.doc_string = vi.text("doc_string")
        t = vi.table("type", "TypeInfo")
        if t is not None:
            self.type_info(t, out.type, depth)

    def type_info(self, t: _Table, out: TypeProto, depth: int) -> None:
        if depth > MAX_NESTING:
            self.r.fail(t.where, f"types are nested more than {MAX_NESTING} deep")
        if t.has("denotation"):
            out.denotation = t.text("denotation")
        which = t.scalar("value_type", "<B")
        if which == 0:
            return                              # the type is not known
        kind = TYPE_INFO_KINDS.get(which)
        if kind is None:
            self.r.fail(t.where, f"unknown type kind {which} (a newer format?)")
        v = t.table("value", kind)
        if v is None:
            self.r.fail(t.where, f"a {kind} without its value")
        if kind == "TensorTypeAndShape":
            tt = out.tensor_type
            tt.elem_type = v.scalar("elem_type", "<i")
            shape = v.table("shape", "Shape")
            if shape is not None:
                tt.shape.SetInParent()          # present but possibly empty: a scalar
                for d in shape.tables("dim", "Dimension"):
                    self.dimension(d, tt.shape.dim.add())
        elif kind == "SequenceType":
            out.sequence_type.SetInParent()
            elem = v.table("elem_type", "TypeInfo")
            if elem is not None:
                self.type_info(elem, out.sequence_type.elem_type, depth + 1)
        else:
            out.map_type.key_type = v.scalar("key_type", "<i")
            value = v.table("value_type", "TypeInfo")
            if value is not None:
                self.type_info(value, out.map_type.value_type, depth + 1)

    @staticmethod
    def dimension(d: _Table, out) -> None:
        if d.has("denotation"):
            out.denotation = d.text("denotation")
        v = d.table("value", "DimensionValue")
        if v is None:
            return
        kind = v.scalar("dim_type", "<b")
        if kind == DIM_VALUE:
            out.dim_value = v.scalar("dim_value", "<q")
        elif kind == DIM_PARAM:
            out.dim_param = v.text("dim_param")

    def node(self, n: _Table, out, depth: int) -> None:
        out.op_type, out.domain = n.text("op_type"), n.text("domain")
        out.name = n.text("name")
        if n.has("doc_string"):
            out.doc_string = n.text("doc_string")
        if n.scalar("type", "<i") == NODE_FUSED:
            ep = n.text("execution_provider_type") or "an execution provider"
            raise ModelError(
                f"{self.r.what}: node {out.name!r} ({out.domain or 'ai.onnx'}.{out.op_type}) is "
                f"a fused node that {ep} compiled; the ORT format file does not hold its body, "
                f"so refrt cannot run it")
        out.input.extend(n.texts("inputs"))
        out.output.extend(n.texts("outputs"))
        for a in n.tables("attributes", "Attribute"):
            self.attribute(a, out.attribute.add(), depth)

    def attribute(self, a: _Table, out: AttributeProto, depth: int) -> None:
        out.name = a.text("name")
        if a.has("doc_string"):
            out.doc_string = a.text("doc_string")
        kind = a.scalar("type", "<i")
        A = AttributeProto
        if kind not in (A.FLOAT, A.INT, A.STRING, A.TENSOR, A.GRAPH, A.FLOATS, A.INTS,
                        A.STRINGS, A.TENSORS, A.GRAPHS):
            self.r.fail(a.where, f"attribute {out.name!r} has type {kind}, which the ORT format "
                                 f"does not store")
        out.type = kind
        if kind == A.FLOAT:
            out.f = a.scalar("f", "<f", 0.0)
        elif kind == A.INT:
            out.i = a.scalar("i", "<q")
        elif kind == A.STRING:
            out.s = a.bytes("s") or b""
        elif kind == A.TENSOR:
            self.tensor(self._required(a, "t", "Tensor"), out.t)
        elif kind == A.GRAPH:
            self.graph(self._required(a, "g", "Graph"), out.g, depth + 1, out.name)
        elif kind == A.FLOATS:
            out.floats.extend(a.array("floats", "<f4").tolist())
        elif kind == A.INTS:
            out.ints.extend(a.array("ints", "<i8").tolist())
        elif kind == A.STRINGS:
            out.strings.extend(a.byte_strings("strings"))
        elif kind == A.TENSORS:
            for t in a.tables("tensors", "Tensor"):
                self.tensor(t, out.tensors.add())
        else:
            for i, g in enumerate(a.tables("graphs", "Graph")):
                self.graph(g, out.graphs.add(), depth + 1, f"{out.name}_{i}")

    def _required(self, t: _Table, field: str, kind: str) -> _Table:
        value = t.table(field, kind)
        if value is None:
            self.r.fail(t.where, f"the {t.kind} has no {field!r} ({kind})")
        return value

    def tensor(self, t: _Table, out: TensorProto, as_blob: bool = False) -> None:
        out.name = t.text("name")
        if t.has("doc_string"):
            out.doc_string = t.text("doc_string")
        if not t.has("dims"):
            self.r.fail(t.where, f"tensor {out.name!r} has no dims")
        out.dims.extend(t.array("dims", "<i8").tolist())
        out.data_type = t.scalar("data_type", "<i")
        if out.data_type == TensorProto.STRING:
            out.string_data.extend(t.byte_strings("string_data"))
            return
        raw = t.raw("raw_data")
        if raw is None:
            offset = t.scalar("external_data_offset", "<q", -1)
            if offset >= 0:
                raise ModelError(
                    f"{self.r.what}: tensor {out.name!r} keeps its data outside the ORT format "
                    f"file (external_data_offset {offset}), which refrt does not read")
            if any(d == 0 for d in out.dims):
                return                          # an empty tensor has nothing to store
            self.r.fail(t.where, f"tensor {out.name!r} has no data")
        start, length = raw
        data = self.r.data
        if as_blob and self.blob_min_bytes is not None and length >= self.blob_min_bytes:
            self.blobs[out.name] = np.frombuffer(data, np.uint8, length, start).copy()
        else:
            out.raw_data = data[start:start + length]

    def sparse_tensor(self, sp: _Table, out) -> None:
        self.tensor(self._required(sp, "values", "Tensor"), out.values)
        indices = self._required(sp, "indices", "Tensor")
        self.tensor(indices, out.indices)
        out.dims.extend(sp.array("dims", "<i8").tolist())
        # onnxruntime stores indices in the narrowest integer type that holds them; ONNX wants int64
        narrow = SPARSE_INDEX_TYPES.get(out.indices.data_type)
        if narrow is not None:
            raw = out.indices.raw_data
            if len(raw) % np.dtype(narrow).itemsize:
                self.r.fail(indices.where, f"{len(raw)} bytes of {narrow} indices")
            wide = np.frombuffer(raw, narrow).astype("<i8")
            out.indices.data_type = TensorProto.INT64
            out.indices.raw_data = wide.tobytes()
