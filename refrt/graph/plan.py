"""Turning a graph into a plan.

A :class:`Plan` is everything about a graph that does not change between runs: the nodes in a
topological order (the file's order is not trusted), each node's resolved implementation with its
attributes parsed once, and for every step the values that die there (so the executor can free
them). Nodes whose inputs are all constant are run once here (:mod:`refrt.graph.fold`). Subgraphs (If/Loop/Scan bodies) and calls of functions (:mod:`refrt.graph.functions`)
become plans of their own; names a subgraph takes from the enclosing scopes are found here, at
plan time. Chains of nodes that run faster as one step are found by :mod:`refrt.fusion`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import onnx

from .. import fusion, registry
from ..autodiff import forward_region, gradient_step
from ..errors import ModelError, UnsupportedOpError, node_label
from ..executor import NO_HOOKS, run_plan
from ..registry import NodeContext, canonical_domain, tensor_to_array
from ..types import type_proto_of
from . import fold, functions


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
    # Run when no hooks are attached: the steps left once constants are folded (fold.py), with
    # chains fused (fusion.py); the folded values they read (and folded graph outputs); the
    # initializers and inputs none of them reads.
    fused_steps: list = None
    folded: dict = field(default_factory=dict)
    fused_free_at_start: tuple = None

    def __post_init__(self):
        if self.fused_steps is None:
            self.fused_steps = self.steps
        if self.fused_free_at_start is None:
            self.fused_free_at_start = self.free_at_start

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

    def bind(self, env: dict, hooks) -> Callable:
        outer = {n: env[n] for n in self.plan.outer if n in env}
        plan = self.plan

        def body(*inputs):
            if len(inputs) != len(plan.inputs):
                raise ModelError(f"subgraph expects {len(plan.inputs)} inputs, got {len(inputs)}")
            local = dict(outer)
            local.update(plan.initializers)
            local.update(zip((i.name for i in plan.inputs), inputs))
            return run_plan(plan, local, hooks)

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

    order = toposort(nodes, reads, producer)

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
    fused, folded, fused_free_at_start = steps, {}, free_at_start
    level = getattr(pctx.options, "graph_optimization_level", None)
    if level is None or int(level) > 0:   # ORT_DISABLE_ALL (0) keeps every node a step
        folded, fold_idx = fold.fold_constants(steps, {n: inits[n] for n in constants})
        gone = set(fold_idx)
        live = [s for i, s in enumerate(steps) if i not in gone]
        live_reads = [r for i, r in enumerate(step_reads) if i not in gone]
        fused, fused_reads = fusion.fuse_steps(live, live_reads, keep, Step)
        if fused is not steps:
            fused_free, read = _liveness(fused_reads, [s.outputs for s in fused], keep)
            fused = [replace(s, free=f) for s, f in zip(fused, fused_free)]
            folded = {n: v for n, v in folded.items() if n in read or n in keep}
            fused_free_at_start = tuple(n for n in list(inits) + input_names
                                        if n not in read and n not in keep)
    outer = frozenset(n for n in free_names(graph) if n in outer_scope)
    return Plan(inputs=list(graph.input), outputs=list(graph.output), initializers=inits, steps=steps,
                outer=outer, free_at_start=free_at_start, fused_steps=fused, folded=folded,
                fused_free_at_start=fused_free_at_start)


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


def toposort(nodes, reads, producer) -> list[int]:
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
        # the one op that needs the graph around it: the forward region it differentiates
        region = build_plan(forward_region(node, producers or {}), pctx, scope)
        fn, kwargs, subgraphs = gradient_step(node, region)
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
        return Subgraph(build_plan(g, pctx, scope))

    kwargs = impl.parse_attributes(node, convert_graph)
    subgraphs = tuple(k for k, v in kwargs.items() if isinstance(v, Subgraph))
    if impl.wants_ctx:
        kwargs["ctx"] = NodeContext(
            node_name=node_label(node), op_type=node.op_type, domain=domain, opset=opset,
            n_outputs=len(node.output), options=pctx.options, outputs=tuple(node.output),
            input_types=tuple(pctx.value_types.get(i) for i in node.input),
            constant_inputs=tuple(i in constants for i in node.input))
    return impl.fn, kwargs, subgraphs

# ---------------------------------------------------------------- calls of functions


def _function_step(node, fproto, pctx: PlanContext):
    """A call of a function: its body planned for this node's attributes."""
    functions.check_attributes(node, fproto)
    opsets = dict(pctx.opsets)
    opsets.update(opset_map(fproto.opset_import))
    sub = PlanContext(opsets=opsets, functions=pctx.functions, options=pctx.options)
    plan = build_plan(functions.function_graph(fproto, node), sub, frozenset())
    return _call_plan(plan, node), {}, ()


def _call_plan(plan: Plan, node):
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
        results = iter(run_plan(plan, env, NO_HOOKS))
        return tuple(next(results) if want else None for want in wanted)
    return call


def _schema_function(node, domain: str, opset: int, pctx: PlanContext):
    """Fall back to the function body the ONNX schema defines, if it has one."""
    schema = functions.schema_of(node, domain, opset)
    if schema is None:
        return None
    if schema.has_function:
        # a model-local function of the same name must not shadow the ops inside the body
        sub = PlanContext(opsets=dict(pctx.opsets), functions={}, options=pctx.options)
        return _function_step(node, functions.schema_body(node, schema, opset), sub)
    if schema.has_context_dependent_function:
        return _context_dependent_step(node, schema, opset, pctx), {}, ()
    return None


def _context_dependent_step(node, schema, opset: int, pctx: PlanContext):
    """Bodies that depend on input types are built on first call, once per input dtype tuple."""
    cache: dict = {}

    def call(*inputs):
        key = tuple(None if x is None else (getattr(x, "dtype", None), np.ndim(x)) for x in inputs)
        fn = cache.get(key)
        if fn is None:
            types = [type_proto_of(x).SerializeToString() for x in inputs if x is not None]
            fproto = functions.context_dependent_body(node, schema, opset, types)
            fn, _, _ = _function_step(node, fproto, pctx)
            cache[key] = fn
        return fn(*inputs)
    return call
