"""Cut a model down to the smallest subgraph that still shows a divergence.

    small = reduce_model("model.onnx", feeds, against="onnxruntime", out="small/model.onnx")

The target is one tensor that differs (by default the first output of the first node where a
difference starts). Every candidate subgraph ends at the target; the values it needs from the
rest of the model become graph inputs, fed with the *reference's* recorded values, so running
the small model in the reference gives the reference's target again, and running it in refrt shows
whether refrt still differs. The search:

1. **bisect** over the target's ancestors in topological order: the latest cut point whose
   suffix still differs (a suffix grows towards the inputs as the cut moves back);
2. **drop nodes one by one**: a node of the suffix whose outputs, fed from the reference instead,
   leave the divergence in place is not needed.

The result is saved with its inputs and the reference's target value as ``test_data_set_0/``
beside it (``input_N.pb``, ``output_0.pb``: the layout onnx's backend test runner and
onnxruntime's test runner read), so ``refrt compare small/model.onnx --against REF`` reproduces
it with no other file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from onnx import ModelProto, helper, numpy_helper

from ..graph import free_names
from ..types import type_proto_of
from .metrics import tensor_metrics
from .references import reference_values

__all__ = ["reduce_model", "Reduction", "load_test_data"]


@dataclass
class Reduction:
    target: str
    nodes_before: int
    nodes_after: int
    model: ModelProto
    feeds: dict
    expected: np.ndarray
    path: str | None = None
    steps: list = field(default_factory=list)     # (what was tried, nodes, still differs)


def _needs(node) -> set:
    needed = {i for i in node.input if i}
    for a in node.attribute:
        for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            needed |= free_names(g)
    return needed


def _topological(nodes) -> list:
    produced_by = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    order, state = [], {}

    def visit(i):
        if state.get(i) == 2:
            return
        if state.get(i) == 1:
            raise ValueError("the model has a cycle")
        state[i] = 1
        for name in sorted(_needs(nodes[i])):
            j = produced_by.get(name)
            if j is not None:
                visit(j)
        state[i] = 2
        order.append(i)

    for i in range(len(nodes)):
        visit(i)
    return order


def _ancestors(nodes, target: str) -> list:
    """Indices of the nodes ``target`` depends on (itself included), in topological order."""
    produced_by = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    keep, stack = set(), [produced_by[target]]
    while stack:
        i = stack.pop()
        if i in keep:
            continue
        keep.add(i)
        stack.extend(produced_by[n] for n in _needs(nodes[i]) if n in produced_by)
    return [i for i in _topological(nodes) if i in keep]


def _submodel(model: ModelProto, chosen: list, target: str, values: dict) -> tuple[ModelProto, dict]:
    """The nodes ``chosen`` (indices) with every value they read from outside them as a graph
    input (from ``values``) or an initializer; output ``target``."""
    nodes = [model.graph.node[i] for i in chosen]
    produced = {o for n in nodes for o in n.output if o}
    inits = {t.name: t for t in model.graph.initializer}
    needed = sorted({name for n in nodes for name in _needs(n)} - produced)
    graph_inputs, init_list, feeds = [], [], {}
    for name in needed:
        if name in values:
            graph_inputs.append(helper.make_value_info(name, type_proto_of(values[name])))
            feeds[name] = values[name]
        elif name in inits:
            init_list.append(inits[name])
        else:
            raise KeyError(name)
    graph = helper.make_graph(nodes, f"{model.graph.name or 'model'}_reduced", graph_inputs,
                              [helper.make_value_info(target, type_proto_of(values[target]))]
                              if target in values else [helper.make_empty_tensor_value_info(target)], init_list)
    small = helper.make_model(graph, opset_imports=list(model.opset_import))
    small.ir_version = model.ir_version
    small.functions.extend(model.functions)
    return small, feeds


def _differs(small, feeds, target, expected, options, atol, rtol) -> bool:
    from ..session import InferenceSession

    (got,) = InferenceSession(small, **options).run([target], feeds)
    return not tensor_metrics(got, expected, atol, rtol).matches


def reduce_model(model, feeds: dict, against: str = "onnxruntime", *, target: str | None = None,
                 out: str | None = None, atol: float = 1e-5, rtol: float = 1e-5, numerics: str = "ort",
                 emulate_avx2_u8s8: bool = False) -> Reduction:
    """The smallest subgraph ending at ``target`` (default: the first tensor where a difference
    starts) on which refrt still differs from ``against``; saved to ``out`` with its test data
    when given."""
    from ..session import InferenceSession
    from .capture import AS_WRITTEN
    from .compare import compare

    options = {"numerics": numerics, "emulate_avx2_u8s8": emulate_avx2_u8s8, **AS_WRITTEN}
    proto = InferenceSession(model, **options).model
    if target is None:
        result = compare(proto, feeds, against, atol=atol, rtol=rtol, explain=False,
                         numerics=numerics, emulate_avx2_u8s8=emulate_avx2_u8s8)
        firsts = result.first_divergences
        if not firsts:
            raise ValueError("refrt and the reference agree within tolerance: nothing to reduce")
        target = next(o.name for o in firsts[0].outputs if o.tag == "differs")
    ref = reference_values(proto, feeds, against, **options)
    if target not in ref.values:
        raise ValueError(f"the reference has no value for {target!r}")
    values = {**{k: np.asarray(v) for k, v in feeds.items()}, **ref.values}
    expected = ref.values[target]
    nodes = list(proto.graph.node)
    chain = _ancestors(nodes, target)
    steps = []

    def still_differs(chosen, what):
        try:
            small, small_feeds = _submodel(proto, chosen, target, values)
            verdict = _differs(small, small_feeds, target, expected, options, atol, rtol)
        except KeyError:
            verdict = False           # a needed value the reference did not record
        steps.append((what, len(chosen), verdict))
        return verdict

    if not still_differs(chain, "all ancestors"):
        raise ValueError(f"refrt matches the reference at {target!r} when run on its ancestors alone")
    lo, hi = 0, len(chain) - 1          # chain[lo:] differs; find the largest such start
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if still_differs(chain[mid:], f"bisect: from node {mid}"):
            lo = mid
        else:
            hi = mid - 1
    chosen = chain[lo:]
    for i in list(chosen[:-1]):          # the target's own node stays
        trial = [j for j in chosen if j != i]
        if still_differs(trial, f"without node {i}"):
            chosen = trial
    small, small_feeds = _submodel(proto, chosen, target, values)
    reduction = Reduction(target, len(nodes), len(chosen), small, small_feeds, expected, steps=steps)
    if out:
        save_with_test_data(small, small_feeds, {target: expected}, out)
        reduction.path = out
    return reduction


def save_with_test_data(model: ModelProto, feeds: dict, outputs: dict, path: str) -> None:
    """``path`` and ``test_data_set_0/`` beside it: ``input_N.pb`` in the graph's input order,
    ``output_N.pb`` in its output order (TensorProtos named after the values)."""
    import onnx

    folder = os.path.dirname(os.path.abspath(path))
    data = os.path.join(folder, "test_data_set_0")
    os.makedirs(data, exist_ok=True)
    onnx.save(model, path)
    for k, vi in enumerate(model.graph.input):
        with open(os.path.join(data, f"input_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(np.asarray(feeds[vi.name]), vi.name).SerializeToString())
    for k, vi in enumerate(model.graph.output):
        with open(os.path.join(data, f"output_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(np.asarray(outputs[vi.name]), vi.name).SerializeToString())


def load_test_data(model_path: str, which: str = "inputs") -> dict | None:
    """The inputs (or outputs) in ``test_data_set_0/`` beside a model, by name; None if absent."""
    import onnx

    data = os.path.join(os.path.dirname(os.path.abspath(model_path)), "test_data_set_0")
    prefix = "input_" if which == "inputs" else "output_"
    if not os.path.isdir(data):
        return None
    files = sorted((f for f in os.listdir(data) if f.startswith(prefix) and f.endswith(".pb")),
                   key=lambda f: int(f[len(prefix):-3]))
    if not files:
        return None
    model = onnx.load(model_path, load_external_data=False)
    names = [vi.name for vi in (model.graph.input if which == "inputs" else model.graph.output)]
    inits = {t.name for t in model.graph.initializer}
    names = [n for n in names if n not in inits] if which == "inputs" else names
    out = {}
    for k, f in enumerate(files):
        proto = onnx.TensorProto()
        with open(os.path.join(data, f), "rb") as fh:
            proto.ParseFromString(fh.read())
        out[proto.name or names[k]] = numpy_helper.to_array(proto)
    return out
