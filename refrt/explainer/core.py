"""Run a model up to one node, capture that node's inputs and outputs, and explain one element
of one of its outputs.

    explanation = refrt.explain("model.onnx", "conv1", at=(0, 3, 2, 2), inputs={"input": x})
    print(explanation)

The run goes through an ordinary :class:`refrt.InferenceSession` with a hook (so every node runs
on its own, as :mod:`refrt.debug.capture` does) and stops right after the node. The element is
then recomputed by the explainer of the node's op (``EXPLAINERS``, filled by the modules of this
package), step by step in Python/NumPy scalars, and compared with what the node produced.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import registry
from ..errors import ExplainError, InputError
from ..session import InferenceSession
from .arith import fmt, fmt_list
from .result import Explanation, InputInfo, Step, verdict
from .source import code_refs

# (canonical domain, op_type) -> explainer(ctx) -> value
EXPLAINERS: dict[tuple[str, str], Callable] = {}


def explains(*op_types: str, domain: str = "ai.onnx"):
    """Register an explainer for one or more op types of ``domain``."""
    def register(fn):
        for t in op_types:
            EXPLAINERS[(domain, t)] = fn
        return fn
    return register


@dataclass
class Context:
    """What an explainer sees: the node, its resolved implementation, the actual input and output
    values, the attributes (defaults filled in), the element asked for and the session's numerics.
    Explainers add :class:`Step` s with :meth:`step` and notes with :meth:`note`, and return the
    value they computed (a NumPy scalar of the output's dtype, or None when they cannot)."""
    node: Any
    label: str
    impl: Any
    opset: int
    inputs: list
    outputs: list
    attrs: dict
    out_index: int
    at: tuple
    numerics: str
    emulate_avx2_u8s8: bool
    constants: frozenset = frozenset()
    steps: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    why_different: str = ""
    order_bound: float = 0.0    # float sums in a library's order: how far any order can be off

    @property
    def actual(self):
        return np.asarray(self.outputs[self.out_index])[self.at]

    @property
    def out(self) -> np.ndarray:
        return np.asarray(self.outputs[self.out_index])

    def input(self, i: int):
        return self.inputs[i] if i < len(self.inputs) else None

    def step(self, title: str, lines=(), value=None, note: str = "") -> Step:
        s = Step(title, list(lines), value, note)
        self.steps.append(s)
        return s

    def note(self, text: str) -> None:
        self.notes.append(text)


# ---------------------------------------------------------------- finding the node

def _label(node) -> str:
    return node.name or f"{node.op_type}->{next((o for o in node.output if o), '?')}"


def find_node(model, name: str):
    """The main-graph node named ``name`` (or, for nodes without a name, producing the tensor
    ``name``). ExplainError naming the node, with close names, when there is none."""
    nodes = list(model.graph.node)
    by_name = [n for n in nodes if n.name == name]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise ExplainError(f"{len(by_name)} nodes are named {name!r}; name one by an output "
                           f"tensor instead: {', '.join(repr(n.output[0]) for n in by_name)}")
    by_output = [n for n in nodes if name in n.output]
    if by_output:
        return by_output[0]
    names = [n.name for n in nodes if n.name] + [o for n in nodes for o in n.output if o]
    close = difflib.get_close_matches(name, names, n=4)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    shown = ", ".join(repr(_label(n)) for n in nodes[:12]) + (", ..." if len(nodes) > 12 else "")
    raise ExplainError(f"the model has no node named {name!r}, nor a node output of that name"
                       f"{hint}; its nodes: {shown}", node=name)


# ---------------------------------------------------------------- running up to the node

class _Stop(Exception):
    """Raised by the capture hook once the node has run: the rest of the model is not needed."""


class _Capture:
    def __init__(self, node):
        self.key = (node.op_type, tuple(node.output))
        self.inputs = self.outputs = None

    def on_node(self, node, inputs, outputs):
        if (node.op_type, tuple(node.output)) != self.key:
            return
        self.inputs = [_copy(v) for v in inputs]
        self.outputs = [_copy(v) for v in outputs]
        raise _Stop


def _copy(v):
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def _opset(model, domain: str) -> int:
    canon = registry.canonical_domain(domain)
    for o in model.opset_import:
        if registry.canonical_domain(o.domain) == canon:
            return int(o.version)
    return 1


def _feeds(sess, inputs, random_inputs: bool, seed: int, dims: dict | None) -> dict:
    from ..feeds import random_feed

    given = {} if inputs is None else dict(inputs)
    needed = [i.name for i in sess.get_inputs()]
    if random_inputs:
        feeds = random_feed(sess, dims or {}, seed)
        feeds.update(given)
        given = feeds
    missing = [n for n in needed if n not in given]
    if missing:
        raise InputError(f"explain needs values for the model's input(s) {missing}: pass them "
                         f"(inputs={{name: array}}, --input NAME=FILE.npy) or ask for random ones "
                         f"(random_inputs=True, --random-inputs)")
    # copies: nothing downstream may touch the caller's arrays
    return {k: np.array(v, copy=True) for k, v in given.items()}


def _parse_at(at, shape: tuple, output: str, label: str) -> tuple:
    if at is None:
        return (0,) * len(shape) if all(d > 0 for d in shape) else _empty(shape, output, label)
    if isinstance(at, str):
        parts = [p for p in at.replace(" ", "").split(",") if p != ""]
        try:
            at = [int(p) for p in parts]
        except ValueError:
            raise ExplainError(f"--at {at!r}: expected integers separated by commas, e.g. 0,3,2,2",
                               node=label) from None
    elif isinstance(at, (int, np.integer)):
        at = [int(at)]
    at = [int(i) for i in at]
    if any(d == 0 for d in shape):
        _empty(shape, output, label)
    if len(at) != len(shape):
        raise ExplainError(f"node {label!r}: output {output!r} has shape {list(shape)} (rank "
                           f"{len(shape)}); --at gave {len(at)} index(es) {at}", node=label)
    for axis, (i, d) in enumerate(zip(at, shape)):
        if not -d <= i < d:
            raise ExplainError(f"node {label!r}: index {i} on axis {axis} is out of range for "
                               f"output {output!r} of shape {list(shape)}", node=label)
    return tuple(i % d for i, d in zip(at, shape))


def _empty(shape, output, label):
    raise ExplainError(f"node {label!r}: output {output!r} has shape {list(shape)}: no element "
                       f"to explain", node=label)


def _constants(model) -> frozenset:
    """Initializers no feed can override (the inputs a session may pack once)."""
    fed = {vi.name for vi in model.graph.input}
    return frozenset(t.name for t in model.graph.initializer if t.name not in fed)


def _attributes(impl, node) -> dict:
    kwargs = impl.parse_attributes(node)
    attrs = {k: v for k, v in impl.attrs.items() if v is not registry.REQUIRED}
    attrs.update(kwargs)
    return attrs


def _summary(v) -> tuple[str | None, list | None, str]:
    if v is None:
        return None, None, "(omitted)"
    if isinstance(v, list):
        return "sequence", [len(v)], f"sequence of {len(v)}"
    a = np.asarray(v)
    head = f"{a.dtype.name}{list(a.shape)}"
    if a.size == 0:
        return a.dtype.name, list(a.shape), head + " (empty)"
    if a.size <= 8:
        vals = a.reshape(-1).tolist() if a.dtype != object else list(a.reshape(-1))
        return a.dtype.name, list(a.shape), f"{head} = {fmt_list(a.reshape(-1)) if a.dtype.kind in 'iufb' else vals}"
    if a.dtype.kind in "iuf":
        f = a.astype(np.float64)
        return a.dtype.name, list(a.shape), (f"{head}, min {fmt(a.reshape(-1)[np.nanargmin(f)])} "
                                             f"max {fmt(a.reshape(-1)[np.nanargmax(f)])}")
    return a.dtype.name, list(a.shape), head


def _formula(impl, op_type: str) -> tuple[str, str]:
    doc = inspect.getdoc(impl.fn) or ""
    if op_type == "Softmax":    # a wrapper: the docstring is the kernel's, first paragraph
        pass
    first = doc.split("\n\n")[0].strip() if doc else ""
    return (first or f"{op_type}: (no docstring)"), doc


# ---------------------------------------------------------------- the entry point

def explain(model, node: str, at=None, inputs: dict | None = None, *, output=0,
            random_inputs: bool = False, seed: int = 0, dims: dict | None = None,
            numerics: str = "ort", emulate_avx2_u8s8: bool = False) -> Explanation:
    """Explain one element of one output of one node, on real inputs.

    model: a path, bytes or ModelProto. node: the node's name (or the name of one of its output
    tensors). at: the element's index in the output (a tuple, a list or "i,j,..."; default all
    zeros). inputs: {input name: array} for the model's inputs (never modified); or
    ``random_inputs=True`` (``seed``, ``dims`` for symbolic dimensions, as ``refrt run``).
    output: which output of the node (index or tensor name). numerics / emulate_avx2_u8s8: the
    session options the node runs under.

    Returns an :class:`Explanation`; ``print()`` it for the text. Raises ExplainError for an
    unknown node or an index outside the output, InputError for missing inputs.
    """
    from ..debug.capture import AS_WRITTEN

    sess = InferenceSession(model, numerics=numerics, emulate_avx2_u8s8=emulate_avx2_u8s8, **AS_WRITTEN)
    proto = sess.model
    target = find_node(proto, node)
    label = _label(target)
    opset = _opset(proto, target.domain)
    impl = registry.resolve(target, opset)
    domain = registry.canonical_domain(target.domain)

    outs = list(target.output)
    if isinstance(output, str):
        if output not in outs:
            raise ExplainError(f"node {label!r} has no output {output!r}; its outputs are {outs}",
                               node=label)
        out_index = outs.index(output)
    else:
        out_index = int(output)
        if not 0 <= out_index < len(outs) or not outs[out_index]:
            raise ExplainError(f"node {label!r} has outputs {outs}: no output number {output}",
                               node=label)

    feeds = _feeds(sess, inputs, random_inputs, seed, dims)
    capture = _Capture(target)
    sess.add_hook(capture)
    try:
        sess.run(None, feeds)
    except _Stop:
        pass
    if capture.outputs is None:
        raise ExplainError(f"node {label!r} did not run (it sits in a branch or loop body, or "
                           f"no output needs it)", node=label)
    value = capture.outputs[out_index]
    if not isinstance(value, np.ndarray):
        raise ExplainError(f"node {label!r}: output {outs[out_index]!r} is not a tensor "
                           f"({type(value).__name__}); only tensor elements can be explained",
                           node=label)
    at_t = _parse_at(at, value.shape, outs[out_index], label)

    attrs = _attributes(impl, target)
    ctx = Context(target, label, impl, opset, capture.inputs, capture.outputs, attrs, out_index,
                  at_t, numerics, emulate_avx2_u8s8, _constants(proto))
    explainer = EXPLAINERS.get((domain, target.op_type))
    if explainer is None:
        from .generic import explain_generic
        explainer = explain_generic
    computed = explainer(ctx)

    params = [p for p in inspect.signature(impl.fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    infos = []
    for i, (name, v) in enumerate(zip(target.input, capture.inputs)):
        if i < len(params) and params[i].kind != params[i].VAR_POSITIONAL:
            param = params[i].name
        else:
            param = f"{params[-1].name if params else 'input'}[{i - len(params) + 1}]" \
                if params and params[-1].kind == params[-1].VAR_POSITIONAL else f"input {i}"
        dt, sh, summary = _summary(v)
        infos.append(InputInfo(i, name, param, dt, sh, summary))

    formula, doc = _formula(impl, target.op_type)
    actual = value[at_t]
    match, text = verdict(computed, actual, ctx.why_different)
    shown_attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()
                   if not hasattr(v, "bind")}
    return Explanation(
        node=label, op_type=target.op_type, domain=domain, since=impl.since, opset=opset,
        numerics=numerics, emulate_avx2_u8s8=emulate_avx2_u8s8, output=outs[out_index],
        output_index=out_index, output_dtype=value.dtype.name, output_shape=list(value.shape),
        at=at_t, formula=formula, doc=doc, code=code_refs(domain, target.op_type, impl.fn),
        inputs=infos, attributes=shown_attrs, steps=ctx.steps,
        value=None if computed is None else np.asarray(computed, dtype=value.dtype)[()],
        actual=actual, match=match, verdict=text, notes=ctx.notes,
        order_bound=ctx.order_bound or None)


def _load_explainers() -> None:
    from . import floats, generic, integer, qbinary, quant  # noqa: F401  (they register)


_load_explainers()
