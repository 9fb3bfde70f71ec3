"""The operator registry: ``@op("Gemm", since=13)`` on a plain function.

An op is one function. Its Python signature *is* its spec:

* positional parameters are the node's inputs, in order; an optional input defaults to ``None``;
  ``*inputs`` takes a variadic input list;
* keyword-only parameters are the attributes, and their defaults are the spec's defaults (a test
  compares them with ``onnx.defs`` for every registered op); an attribute without a default is
  required, one that defaults to ``None`` is optional without a spec default;
* a keyword-only ``ctx`` parameter, if present, receives the :class:`NodeContext` (numerics mode,
  number of outputs, random generator, node name); other ops never see it.

``since`` lists every schema version the function implements (an int or a tuple). The registry
resolves a node to the highest registered version <= the model's opset for the op's domain, and
refuses to run a node whose schema has a newer version at that opset than refrt implements, so a
semantic change in the spec can never be run silently with an older body.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import AttributeProto, numpy_helper

from .errors import ModelError, UnsupportedOpError, node_label

# Canonical domain names: the default domain is spelled "" in protos and "ai.onnx" here.
DEFAULT_DOMAIN = "ai.onnx"
KNOWN_DOMAINS = ("ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training",
                 "ai.onnx.preview")

REQUIRED = inspect.Parameter.empty

# Ops onnxruntime registers in the ONNX domain although the ONNX spec has no such schema version;
# its transformer optimizer writes them, so refrt runs them too: (op_type, since).
ORT_ONNX_DOMAIN_EXTRAS = frozenset({("SimplifiedLayerNormalization", 1), ("LayerNormalization", 1)})


def canonical_domain(domain: str) -> str:
    return DEFAULT_DOMAIN if domain in ("", "ai.onnx") else domain


def is_default_domain(domain: str) -> bool:
    """The ONNX domain, however it is spelled ('' or 'ai.onnx')."""
    return canonical_domain(domain) == DEFAULT_DOMAIN


def proto_domain(domain: str) -> str:
    """The spelling onnx.defs uses ('' for the default domain)."""
    return "" if domain in ("", "ai.onnx") else domain


@dataclass
class NodeContext:
    """Run-time context handed to ops that declare a keyword-only ``ctx`` parameter."""
    node_name: str
    op_type: str
    domain: str
    opset: int
    n_outputs: int
    options: Any = None            # the session's SessionOptions
    outputs: tuple = ()            # the node's output names ('' for an omitted optional output)
    input_types: tuple = ()        # declared TypeProtos of the inputs where known, else None
    constant_inputs: tuple = ()    # True where the input is an initializer no feed can override
    cache: dict = field(default_factory=dict)  # per-node scratch (e.g. packed constant weights)

    @property
    def numerics(self) -> str:
        return getattr(self.options, "numerics", "ort")

    def rng(self, seed: float | None):
        """NumPy generator: deterministic when the op carries a ``seed`` attribute."""
        if seed is None:
            return np.random.default_rng()
        return np.random.default_rng(int(np.float32(seed).view(np.uint32)))

    def is_constant(self, i: int) -> bool:
        """Input ``i`` is the same array on every run (so it may be packed once into cache)."""
        return i < len(self.constant_inputs) and self.constant_inputs[i]

    def output_requested(self, i: int) -> bool:
        return i < len(self.outputs) and self.outputs[i] != ""


@dataclass
class OpImpl:
    op_type: str
    domain: str
    since: int
    fn: Callable
    n_inputs: int                      # positional parameters
    n_required: int                    # positional parameters without a default
    variadic: bool                     # takes *inputs
    attrs: dict[str, Any]              # attribute name -> default (REQUIRED if none)
    wants_ctx: bool

    @property
    def qualname(self) -> str:
        return f"{self.domain}.{self.op_type}-{self.since}"

    def parse_attributes(self, node, convert_graph: Callable | None = None) -> dict[str, Any]:
        """Node attributes -> keyword arguments, checked against the signature once at plan time."""
        kwargs: dict[str, Any] = {}
        for a in node.attribute:
            if a.name not in self.attrs:
                known = ", ".join(sorted(self.attrs)) or "none"
                raise ModelError(
                    f"node {node_label(node)!r} ({node.op_type}): unknown attribute {a.name!r}; "
                    f"{self.op_type}-{self.since} takes: {known}")
            if a.ref_attr_name:
                raise ModelError(f"node {node_label(node)!r} ({node.op_type}): attribute "
                                 f"{a.name!r} refers to {a.ref_attr_name!r} outside a function")
            expected = _schema_attribute_types(self.op_type, self.domain, self.since).get(a.name)
            if expected is not None and a.type != expected:
                raise ModelError(
                    f"node {node_label(node)!r} ({node.op_type}): attribute {a.name!r} is "
                    f"{AttributeProto.AttributeType.Name(a.type)}, the spec says "
                    f"{AttributeProto.AttributeType.Name(expected)}")
            try:
                kwargs[a.name] = attribute_value(a, convert_graph)
            except ModelError as e:
                raise ModelError(f"node {node_label(node)!r} ({node.op_type}), attribute {a.name!r}: "
                                 f"{e}") from e
        for name, default in self.attrs.items():
            if default is REQUIRED and name not in kwargs:
                raise ModelError(f"node {node_label(node)!r} ({node.op_type}): required attribute "
                                 f"{name!r} is missing")
        return kwargs

    def check_arity(self, node) -> None:
        n = len(node.input)
        while n and node.input[n - 1] == "":
            n -= 1
        label = f"node {node_label(node)!r} ({node.op_type})"
        if n > self.n_inputs and not self.variadic:
            raise ModelError(f"{label}: {n} inputs given, {self.op_type}-{self.since} takes at "
                             f"most {self.n_inputs}")
        for i in range(min(self.n_required, max(n, self.n_required))):
            if i >= len(node.input) or node.input[i] == "":
                raise ModelError(f"{label}: required input #{i} is missing")


_REGISTRY: dict[tuple[str, str], dict[int, OpImpl]] = {}
# (domain, op_type) -> the op family modules whose code registered a version of it
_ORIGIN: dict[tuple[str, str], set[str]] = {}


def op(op_type: str, since: int | tuple[int, ...] = 1, domain: str = DEFAULT_DOMAIN):
    """Register ``fn`` as the implementation of ``domain.op_type`` for each version in ``since``."""
    versions = (since,) if isinstance(since, int) else tuple(since)
    domain = canonical_domain(domain)

    def decorate(fn):
        impl_args = _describe(fn)
        table = _REGISTRY.setdefault((domain, op_type), {})
        _ORIGIN.setdefault((domain, op_type), set()).add(sys._getframe(1).f_globals["__name__"])
        for v in versions:
            if v in table and table[v].fn is not fn:
                raise RuntimeError(f"{domain}.{op_type}-{v} registered twice "
                                   f"({table[v].fn.__module__}.{table[v].fn.__name__} and "
                                   f"{fn.__module__}.{fn.__name__})")
            table[v] = OpImpl(op_type, domain, v, fn, **impl_args)
        return fn

    return decorate


def _describe(fn) -> dict:
    n_inputs = n_required = 0
    variadic = wants_ctx = False
    attrs: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n_inputs += 1
            if p.default is REQUIRED:
                n_required += 1
        elif p.kind is p.VAR_POSITIONAL:
            variadic = True
        elif p.kind is p.KEYWORD_ONLY:
            if p.name == "ctx":
                wants_ctx = True
            else:
                attrs[p.name] = p.default
    return dict(n_inputs=n_inputs, n_required=n_required, variadic=variadic, attrs=attrs,
                wants_ctx=wants_ctx)


def registered() -> dict[tuple[str, str], dict[int, OpImpl]]:
    """Everything registered: {(domain, op_type): {since: OpImpl}}. Loads all op families."""
    _load_ops()
    return _REGISTRY


def versions(op_type: str, domain: str) -> list[int]:
    _load_ops()
    return sorted(_REGISTRY.get((canonical_domain(domain), op_type), {}))


def registered_as(fn: Callable, op_type: str, domain: str = DEFAULT_DOMAIN) -> OpImpl | None:
    """The registered implementation of ``domain.op_type`` (any version) whose function is
    ``fn``, or None: how the planner tells a registered op from anything else that runs a node of
    that type (a model-local function, a schema's function body)."""
    _load_ops((canonical_domain(domain), op_type))
    for impl in _REGISTRY.get((canonical_domain(domain), op_type), {}).values():
        if impl.fn is fn:
            return impl
    return None


def _schema_since(op_type: str, domain: str, opset: int) -> int | None:
    try:
        return onnx.defs.get_schema(op_type, opset, proto_domain(domain)).since_version
    except Exception:
        return None


def lookup(op_type: str, domain: str, opset: int) -> OpImpl | None:
    """The implementation to run at ``opset``, or None when refrt has none that fits."""
    _load_ops((canonical_domain(domain), op_type))
    table = _REGISTRY.get((canonical_domain(domain), op_type))
    if not table:
        return None
    fitting = [v for v in table if v <= opset]
    if not fitting:
        return None
    impl = table[max(fitting)]
    spec_since = _schema_since(op_type, domain, opset)
    if spec_since is not None and spec_since > impl.since:
        return None  # the spec changed after the newest version refrt implements
    return impl


def resolve(node, opset: int) -> OpImpl:
    impl = lookup(node.op_type, node.domain, opset)
    if impl is None:
        raise UnsupportedOpError(node.op_type, canonical_domain(node.domain), opset,
                                 versions(node.op_type, node.domain), node_label(node))
    return impl


# ---------------------------------------------------------------- attribute values

def _decode(s: bytes):
    try:
        return s.decode("utf-8")
    except UnicodeDecodeError:
        return s


def attribute_value(a: AttributeProto, convert_graph: Callable | None = None):
    """AttributeProto -> Python value: int, float, str, ndarray, list of those, or a subgraph."""
    T = AttributeProto
    if a.type == T.FLOAT:
        return float(a.f)
    if a.type == T.INT:
        return int(a.i)
    if a.type == T.STRING:
        return _decode(a.s)
    if a.type == T.TENSOR:
        arr = tensor_to_array(a.t)
        arr.setflags(write=False)    # parsed once per session: outputs get a copy
        return arr
    if a.type == T.SPARSE_TENSOR:
        return sparse_to_dense(a.sparse_tensor)
    if a.type == T.GRAPH:
        return convert_graph(a.g) if convert_graph else a.g
    if a.type == T.TYPE_PROTO:
        return a.tp
    if a.type == T.FLOATS:
        return [float(x) for x in a.floats]
    if a.type == T.INTS:
        return [int(x) for x in a.ints]
    if a.type == T.STRINGS:
        return [_decode(x) for x in a.strings]
    if a.type == T.TENSORS:
        return [tensor_to_array(t) for t in a.tensors]
    if a.type == T.SPARSE_TENSORS:
        return [sparse_to_dense(t) for t in a.sparse_tensors]
    if a.type == T.GRAPHS:
        return [convert_graph(g) if convert_graph else g for g in a.graphs]
    if a.type == T.TYPE_PROTOS:
        return list(a.type_protos)
    raise ModelError(f"attribute {a.name!r} has unknown type {a.type}")


# ONNX types whose little-endian raw_data is exactly NumPy's memory layout
_RAW_VIEW_DTYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT16: np.int16,
    onnx.TensorProto.UINT16: np.uint16, onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.UINT32: np.uint32, onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.UINT64: np.uint64, onnx.TensorProto.COMPLEX64: np.complex64,
    onnx.TensorProto.COMPLEX128: np.complex128,
}


@functools.cache
def _schema_attribute_types(op_type: str, domain: str, since: int) -> dict:
    """attribute name -> AttributeProto type from onnx.defs, {} where there is no schema."""
    try:
        schema = onnx.defs.get_schema(op_type, since, proto_domain(domain))
    except onnx.defs.SchemaError:
        return {}
    return {name: int(a.type) for name, a in schema.attributes.items()}


_KNOWN_TYPES = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}


# The session's limit on one tensor's bytes while it loads or runs (SessionOptions.max_tensor_bytes).
TENSOR_LIMIT: contextvars.ContextVar = contextvars.ContextVar("refrt_tensor_limit", default=None)


def dense_limit_bytes() -> int:
    """The most bytes refrt allocates for one tensor whose size comes from a model's description
    or data (a sparse tensor densified; ConstantOfShape, Expand, Tile, Range, Pad, Resize outputs):
    the session's ``max_tensor_bytes``, by default half the machine's memory."""
    limit = TENSOR_LIMIT.get()
    if limit is not None:
        return int(limit)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def check_allocation(shape, dtype, what: str = "output") -> None:
    """Refuse, before allocating, a tensor of ``shape`` and ``dtype`` over dense_limit_bytes()."""
    count = 1
    for d in shape:
        count *= int(d)
    need, limit = count * np.dtype(dtype).itemsize, dense_limit_bytes()
    if need > limit:
        raise ValueError(f"the {what} of shape {list(shape)} would take {need} bytes, over the limit "
                         f"of {limit} per tensor (SessionOptions.max_tensor_bytes)")


def _check_tensor_header(t) -> None:
    if t.data_type not in _KNOWN_TYPES:
        raise ModelError(f"tensor {t.name!r}: data_type {t.data_type} is not an ONNX element type")
    if any(d < 0 for d in t.dims):
        raise ModelError(f"tensor {t.name!r}: dims {list(t.dims)} has a negative dimension")


def tensor_to_array(t, raw: np.ndarray | None = None) -> np.ndarray:
    """TensorProto -> ndarray (strings become an object array of str/bytes).

    ``raw``: the tensor's raw_data, already read into a uint8 array (see :mod:`refrt.protowire`);
    plain numeric types become a view of it, the others go through onnx's converter. A tensor
    whose type, dims and data disagree is a ModelError naming it."""
    _check_tensor_header(t)
    if raw is not None:
        dims = tuple(int(d) for d in t.dims)
        dtype = _RAW_VIEW_DTYPES.get(t.data_type)
        if dtype is None or sys.byteorder != "little":
            full = onnx.TensorProto()
            full.CopyFrom(t)
            full.raw_data = raw.tobytes()
            return tensor_to_array(full)
        need = int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize
        if raw.size != need:
            raise ModelError(f"tensor {t.name!r}: raw_data holds {raw.size} bytes, but shape "
                             f"{list(dims)} of {onnx.TensorProto.DataType.Name(t.data_type)} "
                             f"needs {need}")
        return raw.view(dtype).reshape(dims)
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise ModelError(f"tensor {t.name!r} keeps its data externally; load the model from "
                         f"its path so that refrt can resolve it")
    try:
        arr = numpy_helper.to_array(t)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ModelError(f"tensor {t.name!r} ({onnx.TensorProto.DataType.Name(t.data_type)}, dims "
                         f"{list(t.dims)}): its data does not fit: {e}") from None
    if arr.dtype.kind in "SU" or (arr.dtype == object and t.data_type == onnx.TensorProto.STRING):
        arr = np.array([_decode(x) if isinstance(x, bytes) else x for x in arr.ravel()],
                       dtype=object).reshape(arr.shape)
    return arr


def sparse_to_dense(sp) -> np.ndarray:
    """SparseTensorProto -> a dense, read-only ndarray; indices and size checked first."""
    values = tensor_to_array(sp.values)
    idx = tensor_to_array(sp.indices)
    dims = tuple(int(d) for d in sp.dims)
    name = sp.values.name or "sparse tensor"
    if any(d < 0 for d in dims):
        raise ModelError(f"{name!r}: dims {list(dims)} has a negative dimension")
    if idx.dtype.kind not in "iu":
        raise ModelError(f"{name!r}: indices must be integers, got {idx.dtype}")
    idx = idx.astype(np.int64)
    try:
        check_allocation(dims, values.dtype, f"densified tensor {name!r}")
    except ValueError as e:
        raise ModelError(str(e)) from None
    size = int(np.prod(dims, dtype=object))
    nnz = values.reshape(-1).shape[0]
    linear = idx.ndim == 1
    if (linear and idx.shape[0] != nnz) or (not linear and idx.shape != (nnz, len(dims))):
        raise ModelError(f"{name!r}: indices of shape {list(idx.shape)} do not fit {nnz} values of a "
                         f"rank-{len(dims)} tensor")
    bounds = np.array([size], np.int64) if linear else np.array(dims, np.int64)
    if idx.size and ((idx < 0).any() or (idx >= bounds).any()):
        raise ModelError(f"{name!r}: an index is outside shape {list(dims)}")
    dense = np.zeros(dims, dtype=values.dtype)
    if linear:
        dense.reshape(-1)[idx] = values.reshape(-1)
    else:
        dense[tuple(idx.T)] = values.reshape(-1)
    dense.setflags(write=False)      # the session's own value: outputs get a copy
    return dense


# ---------------------------------------------------------------- loading op families

_loaded = False
_partial: set[tuple[str, str]] = set()   # ops whose families load_families() has imported


def _load_ops(key: tuple[str, str] | None = None):
    """Import every op family, unless ``key`` (domain, op_type) is an op whose families are
    imported already (:func:`load_families`)."""
    global _loaded
    if not _loaded and (key is None or key not in _partial):
        _loaded = True
        from . import ops

        ops.load_all()


def family_index() -> dict[tuple[str, str], tuple[str, ...]]:
    """(domain, op_type) -> the op family modules that register it, as loaded: every family is
    imported to build it (``python -m refrt.ops._index`` writes it to refrt/ops/_index.py)."""
    _load_ops()
    return {k: tuple(sorted(v)) for k, v in sorted(_ORIGIN.items())}


def load_families(keys) -> set[str]:
    """Import only the op families that register the ops ``keys`` ((domain, op_type) pairs),
    as refrt/ops/_index.py lists them; an op missing from that index makes every family load.
    Returns the modules imported for them."""
    import importlib

    from .ops._index import FAMILIES

    keys = {(canonical_domain(d), t) for d, t in keys}
    modules: set[str] = set()
    for key in keys:
        if key not in FAMILIES:
            _load_ops()
            return modules
        modules.update(FAMILIES[key])
    for name in sorted(modules):
        importlib.import_module(name)
    _partial.update(keys)
    return modules
