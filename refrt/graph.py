"""Loading a model and turning a graph into a plan.

A :class:`Plan` is everything about a graph that does not change between runs: the nodes in a
topological order (the file's order is not trusted), each node's resolved implementation with its
attributes parsed once, and for every step the values that die there (so the executor can free
them). Subgraphs (If/Loop/Scan bodies) and model-local functions become plans of their own;
names a subgraph takes from the enclosing scopes are found here, at plan time.
"""

from __future__ import annotations

import heapq
import mmap
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import ModelProto, TensorProto

from . import fusion, protowire, registry
from .errors import ModelError, UnsupportedOpError, node_label
from .registry import NodeContext, canonical_domain, tensor_to_array

# ---------------------------------------------------------------- loading


def load_model(model) -> tuple[ModelProto, str | None, dict[str, np.ndarray]]:
    """Path, bytes or ModelProto -> (ModelProto, base folder, weights read on the side).

    The third item maps main-graph initializer names to their raw bytes (uint8 arrays) when
    they were read apart from the protobuf (see :mod:`refrt.protowire`): in the returned proto
    those initializers have no data, and :func:`build_plan` takes them from this dict.
    External data is loaded the same way."""
    base_dir, blobs = None, {}
    if isinstance(model, ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray, memoryview)):
        proto = _parse(bytes(model), "the model bytes")
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            with open(path, "rb") as f:
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


# ---------------------------------------------------------------- plan


@dataclass
class Step:
    """One node, ready to run."""
    node: Any                   # the NodeProto (handed to hooks)
    fn: Callable
    inputs: tuple[str, ...]     # '' for an omitted optional input
    outputs: tuple[str, ...]
    kwargs: dict
    subgraphs: tuple[str, ...]  # attribute names whose value is a Subgraph, bound per run
    free: tuple[str, ...]       # values whose last use is this step
    label: str

    def __post_init__(self):
        # what the executor's loop reads for every node, in one attribute
        self.fast = (self.fn, self.inputs, self.kwargs, self.outputs, self.free)


@dataclass
class Plan:
    inputs: list                # ValueInfoProto of inputs a caller may feed
    outputs: list               # ValueInfoProto of outputs
    initializers: dict          # name -> ndarray
    steps: list[Step]
    outer: frozenset = frozenset()   # names taken from enclosing scopes
    free_at_start: tuple = ()        # initializers/inputs nobody reads
    fused_steps: list = None         # steps with fused chains (fusion.py); run when no hooks

    def __post_init__(self):
        if self.fused_steps is None:
            self.fused_steps = self.steps

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]


@dataclass
class Subgraph:
    """A GRAPH attribute: a plan plus the names it reads from enclosing scopes.

    The executor binds it to the current values before calling the op, which then simply calls
    ``body(*inputs)`` and gets the list of outputs back.
    """
    plan: Plan
    run: Callable = None        # set by the executor module: run(plan, env, hooks) -> list

    def bind(self, env: dict, hooks) -> Callable:
        outer = {n: env[n] for n in self.plan.outer if n in env}
        plan, run = self.plan, self.run

        def body(*inputs):
            if len(inputs) != len(plan.inputs):
                raise ModelError(f"subgraph expects {len(plan.inputs)} inputs, got {len(inputs)}")
            local = dict(outer)
            local.update(plan.initializers)
            local.update(zip((i.name for i in plan.inputs), inputs))
            return run(plan, local, hooks)

        body.n_inputs = len(plan.inputs)
        body.n_outputs = len(plan.outputs)
        body.input_infos = plan.inputs
        body.output_infos = plan.outputs
        return body


@dataclass
class PlanContext:
    """What every graph of one model shares while it is being planned."""
    opsets: dict                # canonical domain -> version
    functions: dict             # (domain, name) -> FunctionProto (model-local)
    options: Any = None
    run: Callable = None        # executor.run_plan, injected to avoid an import cycle
    value_types: dict = field(default_factory=dict)   # name -> TypeProto where declared


def opset_map(opset_import) -> dict[str, int]:
    return {canonical_domain(o.domain): int(o.version) for o in opset_import}


def free_names(graph) -> set[str]:
    """Names a graph (with its nested subgraphs) reads but does not define itself."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {sp.values.name for sp in graph.sparse_initializer}
    used: set[str] = set()
    for node in graph.node:
        defined.update(o for o in node.output if o)
        used.update(i for i in node.input if i)
        for g in _node_graphs(node):
            used |= free_names(g)
    used.update(o.name for o in graph.output)
    return used - defined


def _node_graphs(node):
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def build_plan(graph, pctx: PlanContext, outer_scope: frozenset = frozenset(),
               blobs: dict | None = None) -> Plan:
    """Check a graph and build its plan (see the module docstring). ``blobs``: initializer
    bytes read apart from the proto (:func:`load_model`)."""
    inits: dict[str, np.ndarray] = {}
    blobs = blobs or {}
    for t in graph.initializer:
        if t.name in inits:
            raise ModelError(f"initializer {t.name!r} is defined twice")
        inits[t.name] = tensor_to_array(t, blobs.get(t.name))
    for sp in graph.sparse_initializer:
        inits[sp.values.name] = registry.sparse_to_dense(sp)
    for arr in inits.values():
        arr.setflags(write=False)   # an op writing into a weight would corrupt the next run

    input_names = [i.name for i in graph.input]
    if len(set(input_names)) != len(input_names):
        dup = sorted({n for n in input_names if input_names.count(n) > 1})
        raise ModelError(f"graph input names are not unique: {dup}")
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.WhichOneof("value") is not None:
            pctx.value_types.setdefault(vi.name, vi.type)
    available = set(input_names) | set(inits) | set(outer_scope)

    nodes = list(graph.node)
    producer: dict[str, int] = {}
    for idx, node in enumerate(nodes):
        for o in node.output:
            if not o:
                continue
            if o in producer:
                raise ModelError(f"value {o!r} is produced by two nodes: "
                                 f"{node_label(nodes[producer[o]])!r} and {node_label(node)!r} "
                                 f"(duplicate value names)")
            if o in input_names or o in inits:
                what = "a graph input" if o in input_names else "an initializer"
                raise ModelError(f"node {node_label(node)!r} ({node.op_type}) writes {o!r}, which is "
                                 f"also {what} (duplicate value names)")
            producer[o] = idx

    # Every value a node reads, including what its subgraphs take from this scope.
    producer_nodes = {name: nodes[idx] for name, idx in producer.items()}
    reads: list[list[str]] = []
    for node in nodes:
        names = [i for i in node.input if i]
        for g in _node_graphs(node):
            names.extend(sorted(free_names(g)))
        if node.op_type == "Gradient" and canonical_domain(node.domain) == "ai.onnx.preview.training":
            from .autodiff import forward_region
            names.extend(sorted(free_names(forward_region(node, producer_nodes))))
        reads.append(names)
        for i, name in enumerate(names):
            if name not in producer and name not in available:
                if name in node.input:
                    what = f"input {name!r}"
                else:
                    what = f"outer-scope value {name!r} used by its subgraph"
                raise ModelError(f"node {node_label(node)!r} ({node.op_type}): {what} is not "
                                 f"produced by any node, nor a graph input or initializer "
                                 f"(missing initializer?)")

    order = _toposort(nodes, reads, producer)

    output_names = [o.name for o in graph.output]
    for name in output_names:
        if name not in producer and name not in available:
            raise ModelError(f"graph output {name!r} is not produced by any node, nor a graph "
                             f"input or initializer")

    keep = set(output_names)
    step_reads = [reads[idx] for idx in order]
    free_lists, read_at_all = _liveness(step_reads, [nodes[idx].output for idx in order], keep)
    free_at_start = tuple(n for n in list(inits) + input_names
                          if n not in read_at_all and n not in keep)

    scope = frozenset(available | set(producer))
    constants = frozenset(n for n in inits if n not in input_names)
    steps = [_make_step(nodes[idx], pctx, scope, free_lists[pos], constants, producer_nodes)
             for pos, idx in enumerate(order)]
    fused = steps
    level = getattr(pctx.options, "graph_optimization_level", None)
    if level is None or int(level) > 0:   # ORT_DISABLE_ALL (0) keeps every node a step
        fused, fused_reads = fusion.fuse_steps(steps, step_reads, keep, Step)
        if fused is not steps:
            fused_free, _ = _liveness(fused_reads, [s.outputs for s in fused], keep)
            fused = [replace(s, free=f) for s, f in zip(fused, fused_free)]
    outer = frozenset(n for n in free_names(graph) if n in outer_scope)
    return Plan(inputs=list(graph.input), outputs=list(graph.output), initializers=inits, steps=steps,
                outer=outer, free_at_start=free_at_start, fused_steps=fused)


def _liveness(step_reads: list, step_outputs: list, keep: set) -> tuple[list[tuple], set]:
    """Per step, the values that die there (read for the last time, or produced and never read;
    graph outputs never die), and the set of every name read at all."""
    last_use: dict[str, int] = {}
    for pos, names in enumerate(step_reads):
        for name in names:
            last_use[name] = pos
    free_lists: list[list[str]] = [[] for _ in step_reads]
    for name, pos in last_use.items():
        if name not in keep:
            free_lists[pos].append(name)
    for pos, outs in enumerate(step_outputs):   # outputs nobody reads die where they are born
        for o in outs:
            if o and o not in keep and o not in last_use:
                free_lists[pos].append(o)
    return [tuple(f) for f in free_lists], set(last_use)


def _toposort(nodes, reads, producer) -> list[int]:
    """Kahn's algorithm; ties keep the file order. A cycle is an error naming its nodes."""
    n = len(nodes)
    indeg = [0] * n
    users: list[list[int]] = [[] for _ in range(n)]
    for idx in range(n):
        deps = {producer[name] for name in reads[idx] if name in producer}
        indeg[idx] = len(deps)
        for d in deps:
            users[d].append(idx)
    ready = [i for i in range(n) if indeg[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != n:
        stuck = [node_label(nodes[i]) for i in range(n) if indeg[i] > 0]
        raise ModelError(f"the graph has a cycle through nodes {stuck}")
    return order


def _make_step(node, pctx: PlanContext, scope: frozenset, free: tuple,
               constants: frozenset = frozenset(), producers: dict | None = None) -> Step:
    label = node_label(node)
    domain = canonical_domain(node.domain)
    if (domain, node.op_type) == ("ai.onnx.preview.training", "Gradient"):
        from .autodiff import gradient_step   # the one op that needs the graph around it
        fn, kwargs, subgraphs = gradient_step(node, producers or {}, pctx, scope, build_plan)
    else:
        fn, kwargs, subgraphs = _resolve(node, domain, pctx, scope, constants)
    return Step(node=node, fn=fn, inputs=tuple(node.input), outputs=tuple(node.output),
                kwargs=kwargs, subgraphs=subgraphs, free=free, label=label)


def _resolve(node, domain: str, pctx: PlanContext, scope: frozenset,
             constants: frozenset = frozenset()):
    """Find what runs a node: a registered op, a model-local function, or a schema's function."""
    opset = pctx.opsets.get(domain)
    if (domain, node.op_type) in pctx.functions:
        return _function_step(node, pctx.functions[(domain, node.op_type)], pctx)
    if opset is None:
        raise ModelError(f"node {node_label(node)!r} ({node.op_type}) uses domain {domain!r}, "
                         f"which the model does not import (opset_import)")
    impl = registry.lookup(node.op_type, domain, opset)
    if impl is None:
        body = _schema_function(node, domain, opset, pctx)
        if body is not None:
            return body
        raise UnsupportedOpError(node.op_type, domain, opset,
                                 registry.versions(node.op_type, domain), node_label(node))
    impl.check_arity(node)

    def convert_graph(g):
        return Subgraph(build_plan(g, pctx, scope), run=pctx.run)

    kwargs = impl.parse_attributes(node, convert_graph)
    subgraphs = tuple(k for k, v in kwargs.items() if isinstance(v, Subgraph))
    if impl.wants_ctx:
        kwargs["ctx"] = NodeContext(
            node_name=node_label(node), op_type=node.op_type, domain=domain, opset=opset,
            n_outputs=len(node.output), options=pctx.options, outputs=tuple(node.output),
            input_types=tuple(pctx.value_types.get(i) for i in node.input),
            constant_inputs=tuple(i in constants for i in node.input))
    return impl.fn, kwargs, subgraphs


# ---------------------------------------------------------------- functions


def _substitute(nodes, attrs: dict) -> list:
    """Copy a function body, replacing attributes that refer to the caller's (ref_attr_name)."""
    out = []
    for node in nodes:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.attribute[:]
        for a in node.attribute:
            if a.ref_attr_name:
                if a.ref_attr_name in attrs:
                    b = onnx.AttributeProto()
                    b.CopyFrom(attrs[a.ref_attr_name])
                    b.name = a.name
                    new.attribute.append(b)
                # an unset reference means the attribute is absent
                continue
            b = new.attribute.add()
            b.CopyFrom(a)
            if a.type == onnx.AttributeProto.GRAPH:
                g = onnx.GraphProto()
                g.CopyFrom(a.g)
                del g.node[:]
                g.node.extend(_substitute(a.g.node, attrs))
                b.g.CopyFrom(g)
        out.append(new)
    return out


def function_graph(fproto, node) -> onnx.GraphProto:
    """A FunctionProto called by ``node`` as a plain graph, attributes substituted."""
    attrs = {a.name: a for a in fproto.attribute_proto}          # declared defaults
    attrs.update({a.name: a for a in node.attribute})
    g = onnx.GraphProto()
    g.name = fproto.name
    g.node.extend(_substitute(fproto.node, attrs))
    g.input.extend(onnx.helper.make_empty_tensor_value_info(n) for n in fproto.input)
    # only the outputs the caller asks for: a body may skip computing the others
    g.output.extend(onnx.helper.make_empty_tensor_value_info(n)
                    for n, want in zip(fproto.output, node.output) if want)
    return g


def _function_step(node, fproto, pctx: PlanContext):
    """A call of a model-local function: its body planned for this node's attributes."""
    known = set(fproto.attribute) | {a.name for a in fproto.attribute_proto}
    for a in node.attribute:
        if a.name not in known:
            raise ModelError(f"node {node_label(node)!r} ({node.op_type}): unknown attribute "
                             f"{a.name!r}; function {fproto.name!r} takes: {sorted(known) or 'none'}")
    opsets = dict(pctx.opsets)
    opsets.update(opset_map(fproto.opset_import))
    sub = PlanContext(opsets=opsets, functions=pctx.functions, options=pctx.options, run=pctx.run)
    plan = build_plan(function_graph(fproto, node), sub, frozenset())
    return _call_plan(plan, pctx.run, node), {}, ()


def _call_plan(plan: Plan, run, node):
    n_in = len(plan.inputs)
    wanted = [bool(o) for o in node.output]

    def call(*inputs):
        env = dict(plan.initializers)
        for vi, value in zip(plan.inputs, inputs):
            if value is not None:
                env[vi.name] = value
        if len(inputs) > n_in:
            raise ModelError(f"node {node_label(node)!r}: {len(inputs)} inputs for a function of "
                             f"{n_in}")
        results = iter(run(plan, env, ((), ())))
        return tuple(next(results) if want else None for want in wanted)
    return call


def _schema_function(node, domain: str, opset: int, pctx: PlanContext):
    """Fall back to the function body the ONNX schema defines, if it has one."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, registry.proto_domain(domain))
    except Exception:
        return None
    if schema.has_function:
        try:   # the body as of the model's opset (bytes), else the schema's default body
            data = schema.get_function_with_opset_version(opset)
        except Exception:
            data = b""
        fproto = _as_function(data) if data else schema.function_body
        # a model-local function of the same name must not shadow the ops inside the body
        sub = PlanContext(opsets=dict(pctx.opsets), functions={}, options=pctx.options,
                          run=pctx.run)
        return _function_step(node, _with_signature(fproto, schema, node), sub)
    if schema.has_context_dependent_function:
        return _context_dependent_step(node, schema, opset, pctx), {}, ()
    return None


def _as_function(data) -> onnx.FunctionProto:
    f = onnx.FunctionProto()
    f.ParseFromString(data if isinstance(data, bytes) else data.encode())
    return f


def _with_signature(fproto, schema, node):
    """Schema function bodies declare their formal attributes by name only; the defaults live in
    the schema. Give every attribute with a schema default that default."""
    f = onnx.FunctionProto()
    f.CopyFrom(fproto)
    with_default = {a.name for a in f.attribute_proto}
    names = list(f.attribute)
    del f.attribute[:]
    for name in dict.fromkeys(names + list(schema.attributes)):
        if name in with_default:
            continue
        attr = schema.attributes.get(name)
        if attr is not None and attr.default_value.type != onnx.AttributeProto.UNDEFINED:
            d = onnx.AttributeProto()
            d.CopyFrom(attr.default_value)
            d.name = name
            f.attribute_proto.append(d)
        else:
            f.attribute.append(name)
    return f


def _context_dependent_step(node, schema, opset: int, pctx: PlanContext):
    """Bodies that depend on input types are built on first call, once per input dtype tuple."""
    from .types import type_proto_of   # local: types imports nothing from graph
    cache: dict = {}

    def call(*inputs):
        key = tuple(None if x is None else (getattr(x, "dtype", None), np.ndim(x)) for x in inputs)
        fn = cache.get(key)
        if fn is None:
            types = [type_proto_of(x).SerializeToString() for x in inputs if x is not None]
            data = schema.get_context_dependent_function_with_opset_version(
                opset, node.SerializeToString(), types)
            fproto = _with_signature(_as_function(data), schema, node)
            fn, _, _ = _function_step(node, fproto, pctx)
            cache[key] = fn
        return fn(*inputs)
    return call
