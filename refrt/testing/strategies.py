"""Hypothesis strategies that draw valid ONNX test cases for every op refrt implements.

    from refrt.testing.strategies import node_cases
    @given(node_cases("Gather"))
    def test_gather(case): ...          # case.model (bytes), case.feeds, case.expected

A one-node case is drawn from three sources of truth:

* the **schema** (``onnx.defs``): which inputs exist, which are optional or variadic, the type
  constraint of each (one dtype drawn per type parameter), the attributes;
* the **constraint table** (:mod:`refrt.testing.constraints`, data): the op's shape family (how its
  inputs' shapes relate), the roles of inputs that are not plain data (axes, indices, shapes, scales,
  zero points) and the legal values of attributes;
* **refrt** itself, in "spec" numerics: a drawn case it refuses with a typed error is *rejected* (not
  reported), a case it runs is accepted and carries refrt's outputs as ``expected``.

Ops whose shape rules the table does not state (control flow, sequences, the ML domain, image and
signal ops, ...) are drawn from the ONNX backend test data instead: a node test of the op is picked
and its floating-point inputs are redrawn with the same shapes (``Case.source == "seed"``).

Edge cases come at a controlled rate (``edge_rate``, default 0.1 per class and draw), or always
(``edges={"zero_size", ...}``): ``scalar`` (0-d inputs), ``zero_size`` (a zero dimension),
``special`` (NaN, +-inf, -0.0, subnormals, the largest finite values), ``extreme_int`` (the type's
minimum and maximum), ``strings`` (empty and non-ASCII). Hypothesis shrinks toward no edge, small
ranks and small dimensions, so a failing case shrinks to a small reproducer.
"""

from __future__ import annotations

import functools
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from hypothesis import assume
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from .. import registry
from ..errors import RefrtError
from .constraints import TABLE
from .data_sets import describe
from .families import _TYPE_STR, DRAWN_TYPES, EDGE_CLASSES, FAMILIES, _Draw, _unwrap

__all__ = ["Case", "describe", "node_cases", "graph_cases", "implemented_ops", "acceptance",
           "EDGE_CLASSES", "FAMILIES", "case_from_model"]

_OLDEST_OPSET = 7                    # onnxruntime runs models from opset 7


@dataclass
class Case:
    """One drawn test case: a serialized model, its feeds and refrt's "spec" outputs."""
    op_type: str
    domain: str
    opset: int                       # the model's opset for the op's domain
    since: int                       # the op version that opset resolves to
    model: bytes
    feeds: dict
    expected: list
    source: str = "schema"           # "schema", "seed" or "graph"
    types: str = ""                  # e.g. "T=float32"
    edges: tuple = ()                # edge classes present in this case
    ops: tuple = ()                  # graph cases: the op types, in node order

    @property
    def key(self) -> str:
        dom = registry.canonical_domain(self.domain)
        prefix = "" if dom == registry.DEFAULT_DOMAIN else dom + "."
        return f"{prefix}{self.op_type}-{self.since}"

    def proto(self) -> onnx.ModelProto:
        return onnx.load_from_string(self.model)

    def __repr__(self) -> str:     # what hypothesis prints for a falsifying example
        shapes = ", ".join(f"{k}: {describe(v)}" for k, v in self.feeds.items())
        return (f"Case({self.key} opset {self.opset} [{self.types}] inputs {{{shapes}}}"
                f"{' edges ' + ','.join(self.edges) if self.edges else ''})")


def size_of(value) -> int:
    if isinstance(value, dict):
        return len(value)
    if isinstance(value, list):
        return sum(size_of(v) for v in value)
    return 0 if value is None else int(np.size(value))


# -- acceptance statistics ----------------------------------------------------------------------

_STATS: dict[str, Counter] = defaultdict(Counter)


def acceptance() -> dict[str, dict]:
    """Per op (``domain.Op`` key): drawn, accepted, and rejections by reason, since import."""
    return {op: dict(c) for op, c in sorted(_STATS.items())}


def _reject(op: str, reason: str):
    _STATS[op][f"rejected: {reason}"] += 1
    assume(False)


# -- which ops, which versions --------------------------------------------------------------------

def implemented_ops() -> list[tuple[str, str]]:
    """(domain, op_type) of every op refrt registers, default domain first, sorted."""
    ops = list(registry.registered())
    return sorted(ops, key=lambda k: (k[0] != registry.DEFAULT_DOMAIN, k[0], k[1]))


def _versions(op_type: str, domain: str, max_opset: int) -> list[tuple[int, int]]:
    """(since, opset) pairs: each registered version with an opset that resolves to it."""
    vs = registry.versions(op_type, domain)
    out = []
    for i, v in enumerate(vs):
        if domain in ("", registry.DEFAULT_DOMAIN):
            nxt = vs[i + 1] if i + 1 < len(vs) else None
            opset = max(v, _OLDEST_OPSET)
            if (nxt is not None and opset >= nxt) or opset > max_opset:
                continue
            # the opset must not resolve to a newer schema refrt refuses
            if registry.lookup(op_type, domain, opset) is None or \
                    _schema(op_type, domain, opset) is None:
                continue
            out.append((v, opset))
        else:
            out.append((v, v))
    return out


@dataclass
class _Param:
    name: str
    type_str: str
    option: str                      # "Single", "Optional" or "Variadic"
    homogeneous: bool = True         # a variadic input's values share one type


@dataclass
class _Schema:
    """The parts of an op schema the strategies read, from onnx.defs or (for com.microsoft ops)
    from onnxruntime's schema registry."""
    name: str
    since_version: int
    inputs: list
    outputs: list
    type_constraints: dict           # type parameter -> allowed type strings
    attributes: set


def _option(o) -> str:
    return getattr(o, "name", str(o)).split(".")[-1]


def _adapt(s) -> _Schema:
    def params(ps):
        return [_Param(p.name, getattr(p, "type_str", None) or getattr(p, "typeStr", ""),
                       _option(p.option), bool(getattr(p, "is_homogeneous",
                                                       getattr(p, "isHomogeneous", True))))
                for p in ps]
    return _Schema(s.name, s.since_version, params(s.inputs), params(s.outputs),
                   {t.type_param_str: list(t.allowed_type_strs) for t in s.type_constraints},
                   set(s.attributes))


@functools.lru_cache(maxsize=None)
def _ort_schemas() -> dict:
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as C
        return {(x.domain, x.name, x.since_version): x for x in C.get_all_operator_schema()}
    except Exception:   # noqa: BLE001 -- no onnxruntime: com.microsoft ops have no schema
        return {}


@functools.lru_cache(maxsize=None)
def _schema(op_type: str, domain: str, opset: int) -> _Schema | None:
    dom = registry.proto_domain(domain)
    try:
        return _adapt(onnx.defs.get_schema(op_type, opset, dom))
    except onnx.defs.SchemaError:
        pass
    found = [v for (d, n, v) in _ort_schemas() if d == dom and n == op_type and v <= opset]
    return _adapt(_ort_schemas()[(dom, op_type, max(found))]) if found else None


# -- types ----------------------------------------------------------------------------------------------

def _type_choices(schema, spec: dict, dtypes) -> dict[str, list[str]]:
    """Type parameter -> the dtypes that may be drawn for it."""
    out = {}
    for param, allowed_strs in schema.type_constraints.items():
        allowed = [_TYPE_STR[_unwrap(s)] for s in allowed_strs if _unwrap(s) in _TYPE_STR]
        if param in spec.get("types", {}):
            allowed = [t for t in spec["types"][param] if t in allowed]
        if dtypes is not None:
            allowed = [t for t in allowed if t in dtypes]
        out[param] = allowed
    return out


# -- building and checking a case ------------------------------------------------------------------------

def _opset_imports(domain: str, opset: int):
    dom = registry.proto_domain(domain)
    if dom == "":
        return [helper.make_opsetid("", opset)]
    return [helper.make_opsetid(dom, opset), helper.make_opsetid("", 17)]


def _map_type(value: dict):
    k = next(iter(value), 0)
    kt = TensorProto.STRING if isinstance(k, str) else TensorProto.INT64
    v = next(iter(value.values()), 0.0)
    vt = (TensorProto.STRING if isinstance(v, str) else TensorProto.INT64
          if isinstance(v, int) else TensorProto.FLOAT)
    return helper.make_map_type_proto(kt, helper.make_tensor_type_proto(vt, None))


def _value_info(name: str, value):
    if isinstance(value, dict):
        return helper.make_value_info(name, _map_type(value))
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return helper.make_value_info(name, helper.make_sequence_type_proto(_map_type(value[0])))
    if isinstance(value, list):
        et = helper.np_dtype_to_tensor_dtype(value[0].dtype) if value else TensorProto.FLOAT
        return helper.make_tensor_sequence_value_info(name, et, None)
    arr = np.asarray(value)
    et = TensorProto.STRING if arr.dtype == object else helper.np_dtype_to_tensor_dtype(arr.dtype)
    return helper.make_tensor_value_info(name, et, list(arr.shape))


def build_model(op_type: str, domain: str, opset: int, inputs: list, attrs: dict,
                n_outputs: int) -> tuple[onnx.ModelProto, dict]:
    """A one-node model whose inputs are all graph inputs; output types are left to be filled."""
    names = [n for n, _ in inputs]
    feeds = {n: v for n, v in inputs if n}
    node = helper.make_node(op_type, names, [f"out{i}" for i in range(n_outputs)],
                            domain=registry.proto_domain(domain))
    for k, v in attrs.items():
        if k.startswith("_"):
            continue                     # the drawing rules' own notes
        if isinstance(v, list) and not v:
            node.attribute.append(helper.make_attribute(k, v, attr_type=onnx.AttributeProto.INTS))
        else:
            node.attribute.append(helper.make_attribute(k, v))
    graph = helper.make_graph([node], f"{op_type}_case", [_value_info(n, v) for n, v in feeds.items()],
                              [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                               for o in node.output])
    model = helper.make_model(graph, opset_imports=_opset_imports(domain, opset))
    model.ir_version = min(model.ir_version, 10)
    return model, feeds


def run_refrt(model: bytes | onnx.ModelProto, feeds: dict, numerics: str = "spec", **options) -> list:
    from ..session import InferenceSession
    data = model if isinstance(model, bytes) else model.SerializeToString()
    sess = InferenceSession(data, numerics=numerics, **options)
    return sess.run(None, feeds)


_INFERRED_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def _onnx_inference(model: onnx.ModelProto, key: str) -> dict:
    """onnx's strict shape and type inference (default and ML domains): a model it refuses is
    rejected; returns output name -> inferred TypeProto."""
    if any(o.domain not in _INFERRED_DOMAINS for o in model.opset_import):
        return {}
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    for vi in bare.graph.output:
        vi.ClearField("type")
    try:
        inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True, data_prop=True)
    except Exception as e:   # noqa: BLE001 -- onnx says the model is invalid
        msg = str(e)
        if "is not a registered function/op" in msg or "No Op registered" in msg:
            return {}                 # an op onnx does not know (onnxruntime's own): no verdict
        _reject(key, "onnx shape inference")
    return {vi.name: vi.type for vi in inferred.graph.output}


def _finish(op_type: str, domain: str, opset: int, since: int, model: onnx.ModelProto, feeds: dict,
            source: str, types: str, edges, key: str, schema: _Schema | None = None,
            bound: dict | None = None) -> Case:
    try:
        expected = run_refrt(model, feeds)
    except RefrtError as e:
        reason = type(e).__name__
        cause = e.__cause__
        if cause is not None and not isinstance(cause, RefrtError):
            reason += f" ({type(cause).__name__})"
        _reject(key, reason)
    names = [o.name for o in model.graph.output]
    if any(v is None for v in expected):
        _reject(key, "an optional output left empty")
    if schema is not None and bound:
        for p, value in zip(schema.outputs, expected):
            want = bound.get(p.type_str)
            if want and isinstance(value, np.ndarray) and _dtype_name(value) != want:
                raise AssertionError(
                    f"refrt bug: {key} output {p.name!r} is {_dtype_name(value)}; the schema binds "
                    f"its type parameter {p.type_str} to {want} (inputs {types})")
    inferred = _onnx_inference(model, key)
    del model.graph.output[:]
    for name, value in zip(names, expected):
        vi = _value_info(name, value)
        want = inferred.get(name)
        if want is not None and want.WhichOneof("value") is not None:
            if not want.HasField("tensor_type"):
                vi.type.CopyFrom(want)          # sequences and optionals: the schema's type
        model.graph.output.append(vi)
    _STATS[key]["accepted"] += 1
    return Case(op_type, registry.canonical_domain(domain), opset, since, model.SerializeToString(),
                feeds, expected, source, types, tuple(sorted(edges)))


@st.composite
def _node_case(draw, op_type, domain, opset, dtypes, edge_rate, edges, max_opset):
    dom = registry.canonical_domain(domain)
    key = (op_type if dom == registry.DEFAULT_DOMAIN else f"{dom}.{op_type}")
    spec = TABLE.get(op_type if dom == registry.DEFAULT_DOMAIN else f"{dom}.{op_type}")
    pairs = _versions(op_type, dom, max_opset)
    if opset is not None:
        impl = registry.lookup(op_type, dom, opset)
        pairs = [(impl.since, opset)] if impl else []
    if not pairs:
        raise ValueError(f"refrt implements no version of {key} at opset "
                         f"{opset if opset is not None else '<= %d' % max_opset}")
    _STATS[key]["drawn"] += 1
    if spec is None or spec["family"] == "seed":
        return _seed_case(draw, op_type, dom, pairs, edge_rate, edges, dtypes, key)
    since, op_opset = draw(st.sampled_from(pairs), label="version")
    schema = _schema(op_type, dom, op_opset)
    choices = _type_choices(schema, spec, dtypes)
    types = {}
    for param, allowed in choices.items():
        if not allowed:
            if dtypes is not None:
                _reject(key, "none of the requested dtypes")
            continue                   # maps and sequences of maps: the table gives the type
        types[param] = draw(st.sampled_from(allowed), label=f"type {param}")
    d = _Draw(draw, edge_rate, frozenset(edges), types)
    FAMILIES[spec["family"]](d, spec, schema)
    while d.inputs and d.inputs[-1][0] == "":
        d.inputs.pop()
    inputs = [(f"in{i}" if v is not None else "", v) for i, (_, v) in enumerate(d.inputs)]
    _check_arity(schema, inputs, key)
    _check_types(schema, inputs, key)
    n_out = _n_outputs(schema, spec, d, inputs)
    model, feeds = build_model(op_type, dom, op_opset, inputs, d.attrs, n_out)
    tstr = ",".join(f"{k}={v}" for k, v in sorted(types.items()))
    bound = {}
    for p, (name, v) in zip(schema.inputs, inputs):
        if name and isinstance(v, np.ndarray) and p.type_str in schema.type_constraints:
            bound.setdefault(p.type_str, _dtype_name(v))
    return _finish(op_type, dom, op_opset, since, model, feeds, "schema", tstr, d.edges, key,
                   schema, bound)


def _check_arity(schema: _Schema, inputs: list, key: str) -> None:
    """The schema's word on which inputs must be present (refrt's own check is its signature)."""
    variadic = bool(schema.inputs) and schema.inputs[-1].option == "Variadic"
    if len(inputs) > len(schema.inputs) and not variadic:
        _reject(key, "schema: too many inputs")
    for p, (name, _) in zip(schema.inputs, inputs + [("", None)] * len(schema.inputs)):
        if p.option == "Single" and not name:
            _reject(key, "schema: a required input is absent")


def _check_types(schema: _Schema, inputs: list, key: str) -> None:
    """Each input's dtype is allowed by its type constraint, and inputs sharing a type parameter
    share a dtype (refrt does not check this binding; onnxruntime refuses such models)."""
    bound: dict = {}
    for i, (name, v) in enumerate(inputs):
        if not name:
            continue
        p = schema.inputs[min(i, len(schema.inputs) - 1)]
        if p.option == "Variadic" and not p.homogeneous:
            continue
        arr = v[0] if isinstance(v, list) and v else v
        if (isinstance(v, list) and not v) or isinstance(v, dict):
            continue
        dt = _dtype_name(np.asarray(arr))
        allowed = schema.type_constraints.get(p.type_str, [p.type_str])
        names = {_TYPE_STR.get(_unwrap(t)) for t in allowed}
        if dt not in names:
            _reject(key, "schema: an input's type is outside its constraint")
        if p.type_str in schema.type_constraints and bound.setdefault(p.type_str, dt) != dt:
            _reject(key, "schema: one type parameter bound to two types")


def _n_outputs(schema, spec, d: _Draw, inputs) -> int:
    if spec.get("outputs") == "split":
        given = next((v for n, v in inputs[1:2] if v is not None), None)
        if given is not None:
            return len(given)
        n = d.integer(1, 3, "n outputs")
        if "num_outputs" in schema.attributes:
            d.attrs["num_outputs"] = n
        return n
    n = 0
    for p in schema.outputs:
        if p.option != "Single":
            break
        n += 1
    return max(n, 1)


def node_cases(op_type: str, domain: str = "", opset: int | None = None, *, dtypes=None,
               edge_rate: float = 0.15, edges=(), max_opset: int | None = None):
    """Valid one-node cases of ``domain.op_type`` (any version refrt implements, or the one
    ``opset`` resolves to), with refrt's "spec" outputs as ``Case.expected``.

    ``dtypes``: draw only these dtypes (names like ``"float32"``) where a type constraint allows;
    ``edge_rate``: the chance of each edge class per draw; ``edges``: classes always present;
    ``max_opset``: the newest opset to use (a candidate's limit)."""
    bad = set(edges) - set(EDGE_CLASSES)
    if bad:
        raise ValueError(f"unknown edge classes {sorted(bad)}; known: {', '.join(EDGE_CLASSES)}")
    if not registry.versions(op_type, domain):
        raise ValueError(f"refrt does not implement {op_type!r} in domain {domain or 'ai.onnx'!r}")
    return _node_case(op_type, domain, opset, None if dtypes is None else frozenset(dtypes),
                      edge_rate, frozenset(edges), max_opset or onnx.defs.onnx_opset_version())


# -- seeds from the ONNX backend test data ----------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _seed_index() -> dict[tuple[str, str], list]:
    """(domain, op_type) -> [(test name, model, feeds)]: the ONNX backend node tests (generated by
    the installed onnx package) whose model is that one node."""
    import warnings

    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = collect_testcases(None)
    index: dict = defaultdict(list)
    for tc in raw:
        m = tc.model
        if "_expanded" in tc.name or len(m.graph.node) != 1 or not tc.data_sets:
            continue
        inits = {t.name for t in m.graph.initializer}
        names = [i.name for i in m.graph.input if i.name not in inits]
        ins = tc.data_sets[0][0]
        feeds = {n: (numpy_helper.to_array(v) if isinstance(v, TensorProto) else v)
                 for n, v in zip(names, ins)}
        n = m.graph.node[0]
        index[(registry.canonical_domain(n.domain), n.op_type)].append((tc.name, m, feeds))
    return dict(index)


def _dtype_name(a: np.ndarray) -> str:
    return "string" if a.dtype == object or a.dtype.kind in "SU" else str(a.dtype)


def seed_ops() -> set:
    return set(_seed_index())


def _seed_case(draw, op_type, dom, pairs, edge_rate, edges, dtypes, key):
    folders = _seed_index().get((dom, op_type), [])
    if not folders:
        _reject(key, "no strategy (no table entry, no backend seed)")
    name, model, feeds = draw(st.sampled_from(folders), label="seed")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    feeds = {k: np.asarray(v) if isinstance(v, np.generic) else v for k, v in feeds.items()}
    if any(isinstance(v, np.ndarray) and _dtype_name(v) not in DRAWN_TYPES for v in feeds.values()):
        _reject(key, "seed has a type the kit does not draw (bfloat16, float8, ...)")
    dom_opset = {registry.canonical_domain(o.domain): o.version for o in model.opset_import}
    opset = dom_opset.get(dom, 1)
    impl = registry.lookup(op_type, dom, opset)
    if impl is None or opset > max(o for _, o in pairs) + 100:
        _reject(key, "seed's version not implemented")
    d = _Draw(draw, edge_rate, frozenset(edges), {})
    for name, v in list(feeds.items()):
        if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.dtype.itemsize >= 2:
            feeds[name] = d.values(str(v.dtype), v.shape, low=float(np.nanmin(v)) if v.size else None,
                                   high=float(np.nanmax(v)) if v.size else None) \
                if v.size and np.isfinite(v).all() and np.nanmin(v) < np.nanmax(v) else v
    if dtypes is not None and not any(str(getattr(v, "dtype", "")) in dtypes
                                      for v in feeds.values()):
        _reject(key, "seed has none of the requested dtypes")
    types = ",".join(sorted({str(v.dtype) for v in feeds.values() if isinstance(v, np.ndarray)}))
    return _finish(op_type, dom, opset, impl.since, model, feeds, f"seed:{name}", types, d.edges,
                   key)


# -- a case from a model file -------------------------------------------------------------------------------

def case_from_model(model: bytes, feeds: dict, expected: list | None = None) -> Case:
    """Wrap an existing model (e.g. a reproducer folder) as a Case; expected from refrt if absent."""
    m = onnx.load_from_string(model)
    n = m.graph.node[0] if len(m.graph.node) == 1 else None
    dom = registry.canonical_domain(n.domain) if n is not None else registry.DEFAULT_DOMAIN
    opset = {registry.canonical_domain(o.domain): o.version for o in m.opset_import}.get(dom, 0)
    impl = registry.lookup(n.op_type, dom, opset) if n is not None else None
    if expected is None:
        expected = run_refrt(model, feeds)
    return Case(n.op_type if n is not None else "graph", dom, opset, impl.since if impl else 0,
                model, feeds, expected, "file", ops=tuple(x.op_type for x in m.graph.node))


# -- graphs -----------------------------------------------------------------------------------------------

_CHAIN_UNARY = ("Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Sqrt", "Softmax", "LeakyRelu",
                "Erf", "Identity", "Floor", "Transpose", "Softplus")
_CHAIN_BINARY = ("Add", "Sub", "Mul", "Div", "Max", "Min")


@st.composite
def _graph_case(draw, ops, max_nodes, opset, edge_rate):
    d = _Draw(draw, edge_rate, frozenset(), {})
    shape = d.shape(1, 3)
    x = d.values("float32", shape)
    feeds = {"x": x}
    nodes, inits = [], []
    current = "x"
    chosen = draw(st.lists(st.sampled_from(list(ops)), min_size=1, max_size=max_nodes),
                  label="ops")
    for i, op in enumerate(chosen):
        out = f"t{i}"
        if op in _CHAIN_BINARY:
            other = draw(st.sampled_from(["x", current, "const"]), label="operand")
            if other == "const":
                other = f"c{i}"
                inits.append(numpy_helper.from_array(d.values("float32", shape[-1:]), other))
            nodes.append(helper.make_node(op, [current, other], [out], name=f"n{i}"))
        elif op == "Transpose":
            nodes.append(helper.make_node(op, [current], [out], name=f"n{i}",
                                          perm=list(range(len(shape)))[::-1]))
            shape = shape[::-1]
        else:
            nodes.append(helper.make_node(op, [current], [out], name=f"n{i}"))
        current = out
    graph = helper.make_graph(nodes, "graph_case", [_value_info("x", x)],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, None)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    key = "graph"
    _STATS[key]["drawn"] += 1
    case = _finish("graph", registry.DEFAULT_DOMAIN, opset, opset, model, feeds, "graph",
                   "float32", d.edges, key)
    case.ops = tuple(chosen)
    return case


def graph_cases(ops=None, max_nodes: int = 6, opset: int = 17, edge_rate: float = 0.1):
    """Small float32 graphs chaining element-wise ops (``ops``: the op types to draw from; unary
    ops, Transpose and the binary ops Add/Sub/Mul/Div/Max/Min, whose second operand is the graph
    input, the previous result or a constant)."""
    ops = tuple(ops or _CHAIN_UNARY + _CHAIN_BINARY)
    unknown = set(ops) - set(_CHAIN_UNARY) - set(_CHAIN_BINARY)
    if unknown:
        raise ValueError(f"graph_cases chains {', '.join(_CHAIN_UNARY + _CHAIN_BINARY)}; "
                         f"not {sorted(unknown)}")
    return _graph_case(ops, max_nodes, opset, edge_rate)


def case_hash(case: Case) -> str:
    h = zlib.crc32(case.model)
    for k, v in case.feeds.items():
        if isinstance(v, dict):
            h = zlib.crc32(repr(sorted(v.items())).encode(), h)
            continue
        for part in (v if isinstance(v, list) else [v]):
            a = np.asarray(part)
            h = zlib.crc32(repr(a.tolist()).encode() if a.dtype == object else
                           np.ascontiguousarray(a).tobytes(), h)
    return f"{h:08x}"
