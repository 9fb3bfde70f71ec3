"""The ``Gradient`` operator (ai.onnx.preview.training): reverse-mode differentiation of the graph.

``Gradient(xs=[...], zs=[...], y="Y")(x..., z...)`` returns dY/dx for each x. Unlike other ops it
needs the graph around it, so the planner hands it the *forward region*: the nodes between the
inputs named in ``xs``/``zs`` and ``y``, planned as a subgraph whose other inputs (weights,
constants) come from the enclosing scope. At run time the op re-runs that region on its own inputs,
records every node's inputs and outputs, then walks the records backwards applying one
vector-Jacobian rule per op type. A non-scalar ``y`` is seeded with ones (the gradient of sum(y)).
"""

from __future__ import annotations

import numpy as np
import onnx

from .errors import ModelError, node_label
from .executor import run_plan

# ---------------------------------------------------------------- vector-Jacobian rules
# rule(node, inputs, outputs, dy, attrs) -> one gradient per input (None: not differentiable)

def _unbroadcast(g, shape):
    """Sum a broadcast gradient back to the input's shape."""
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g.reshape(shape)


def _binary(fa, fb):
    def rule(node, ins, outs, dy, attrs):
        a, b = ins
        return [_unbroadcast(fa(a, b, outs[0], dy), a.shape),
                _unbroadcast(fb(a, b, outs[0], dy), b.shape)]
    return rule


def _unary(f):
    return lambda node, ins, outs, dy, attrs: [f(ins[0], outs[0], dy)]


def _matmul(node, ins, outs, dy, attrs):
    a, b = ins
    a2 = a if a.ndim > 1 else a[None, :]
    b2 = b if b.ndim > 1 else b[:, None]
    g = dy
    if a.ndim == 1:
        g = np.expand_dims(g, -2)
    if b.ndim == 1:
        g = np.expand_dims(g, -1)
    da = g @ np.swapaxes(b2, -1, -2)
    db = np.swapaxes(a2, -1, -2) @ g
    return [_unbroadcast(da, a2.shape).reshape(a.shape), _unbroadcast(db, b2.shape).reshape(b.shape)]


def _gemm(node, ins, outs, dy, attrs):
    a, b = ins[0], ins[1]
    ta, tb = attrs.get("transA", 0), attrs.get("transB", 0)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    A = a.T if ta else a
    B = b.T if tb else b
    dA = alpha * dy @ B.T
    dB = alpha * A.T @ dy
    grads = [dA.T if ta else dA, dB.T if tb else dB]
    if len(ins) > 2 and ins[2] is not None:
        grads.append(_unbroadcast(beta * dy, ins[2].shape))
    return grads


def _reduce_axes(node, ins, attrs):
    x = ins[0]
    axes = attrs.get("axes")
    if axes is None and len(ins) > 1 and ins[1] is not None:
        axes = [int(a) for a in np.asarray(ins[1]).ravel()]
    if not axes:
        return tuple(range(x.ndim)) if not attrs.get("noop_with_empty_axes", 0) else ()
    return tuple(a % x.ndim for a in axes)


def _reduce(mean: bool):
    def rule(node, ins, outs, dy, attrs):
        x = ins[0]
        axes = _reduce_axes(node, ins, attrs)
        g = dy if attrs.get("keepdims", 1) else np.expand_dims(dy, axes)
        g = np.broadcast_to(g, x.shape)
        if mean and axes:
            g = g / np.prod([x.shape[a] for a in axes])
        return [np.array(g, dtype=x.dtype)] + [None] * (len(ins) - 1)
    return rule


RULES = {
    "Add": _binary(lambda a, b, y, g: g, lambda a, b, y, g: g),
    "Sub": _binary(lambda a, b, y, g: g, lambda a, b, y, g: -g),
    "Mul": _binary(lambda a, b, y, g: g * b, lambda a, b, y, g: g * a),
    "Div": _binary(lambda a, b, y, g: g / b, lambda a, b, y, g: -g * a / (b * b)),
    "Neg": _unary(lambda x, y, g: -g),
    "Identity": _unary(lambda x, y, g: g),
    "Relu": _unary(lambda x, y, g: g * (x > 0)),
    "Sigmoid": _unary(lambda x, y, g: g * y * (1 - y)),
    "Tanh": _unary(lambda x, y, g: g * (1 - y * y)),
    "Exp": _unary(lambda x, y, g: g * y),
    "Log": _unary(lambda x, y, g: g / x),
    "Sqrt": _unary(lambda x, y, g: g / (2 * y)),
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Reshape": lambda node, ins, outs, dy, attrs: [dy.reshape(ins[0].shape), None],
    "Transpose": lambda node, ins, outs, dy, attrs: [
        np.transpose(dy, np.argsort(attrs.get("perm") or list(range(ins[0].ndim))[::-1]))],
    "Sum": lambda node, ins, outs, dy, attrs: [_unbroadcast(dy, x.shape) for x in ins],
    "ReduceSum": _reduce(mean=False),
    "ReduceMean": _reduce(mean=True),
}


# ---------------------------------------------------------------- planning the forward region

def forward_region(node, producers: dict) -> onnx.GraphProto:
    """The nodes that compute ``y`` from the Gradient node's ``xs`` and ``zs``, as a graph whose
    inputs are xs + zs; anything else they read comes from the enclosing scope."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    xs = [v.decode() for v in attrs.get("xs", [])]
    zs = [v.decode() for v in attrs.get("zs", [])]
    y = attrs.get("y", b"").decode()
    label = f"node {node_label(node)!r} (Gradient)"
    if not xs or not y:
        raise ModelError(f"{label}: attributes 'xs' and 'y' are required")
    if len(node.input) != len(xs) + len(zs):
        raise ModelError(f"{label}: {len(node.input)} inputs for {len(xs)} xs and {len(zs)} zs")
    leaves = set(xs) | set(zs)
    # ancestors of y (stopping at the leaves) ...
    ancestors, seen, stack = [], set(), [y]
    while stack:
        name = stack.pop()
        if name in leaves or name in seen or name not in producers:
            continue
        seen.add(name)
        n = producers[name]
        if all(r is not n for r in ancestors):   # a node with several outputs is met again
            ancestors.append(n)
        stack.extend(i for i in n.input if i)
    # ... that depend on a leaf; the others' outputs are constants read from the enclosing scope
    varying, region, changed = set(leaves), [], True
    while changed:
        changed = False
        for n in ancestors:
            if all(r is not n for r in region) and any(i in varying for i in n.input):
                region.append(n)
                varying.update(o for o in n.output if o)
                changed = True
    if y not in varying:
        raise ModelError(f"{label}: {y!r} does not depend on any of {xs + zs}")
    for n in region:
        if n.op_type not in RULES:
            raise ModelError(f"{label}: cannot differentiate through {n.op_type} "
                             f"(node {node_label(n)!r}); refrt knows {sorted(RULES)}")
    g = onnx.GraphProto(name=f"{node_label(node)}_forward")
    g.node.extend(region)
    g.input.extend(onnx.helper.make_empty_tensor_value_info(n) for n in xs + zs)
    g.output.append(onnx.helper.make_empty_tensor_value_info(y))
    return g


class ForwardRegion:
    """Bound like a subgraph; calling it runs the region and returns the per-node records."""

    def __init__(self, plan):
        self.plan = plan

    def bind(self, env: dict, hooks):
        outer = {n: env[n] for n in self.plan.outer if n in env}
        plan = self.plan

        def forward(*inputs):
            records = []
            local = dict(outer)
            local.update(plan.initializers)
            local.update(zip((i.name for i in plan.inputs), inputs))
            (y,) = run_plan(plan, local, ((), (lambda n, i, o: records.append((n, i, o)),)))
            return y, records
        return forward


def gradient_step(node, plan):
    """What the planner runs for a Gradient node, given the plan of its :func:`forward_region`:
    (fn, kwargs, names of bound subgraphs)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    kwargs = {"forward": ForwardRegion(plan),
              "xs": [v.decode() for v in attrs["xs"]], "y": attrs["y"].decode()}
    return gradient, kwargs, ("forward",)


def gradient(*inputs, forward, xs, y):
    """dY/dX for every X in xs: re-run the forward region, then apply the rules in reverse."""
    y_value, records = forward(*inputs)
    grads = {y: np.ones_like(y_value)}
    for node, ins, outs in reversed(records):
        dy = grads.get(node.output[0])
        if dy is None:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
        for name, g in zip(node.input, RULES[node.op_type](node, ins, outs, dy, attrs)):
            if name and g is not None:
                grads[name] = grads[name] + g if name in grads else g
    out = []
    for name, x in zip(xs, inputs):
        g = grads.get(name)
        out.append(np.zeros_like(x) if g is None else np.asarray(g, dtype=np.asarray(x).dtype))
    return tuple(out)
