"""Constant folding at plan time: nodes whose every input is a constant run once, when the
session is built, instead of on every run.

A step is folded when

* it runs a registered op (not a model-local function, a schema's function body or Gradient),
  has no subgraph, its op is deterministic (not in ``NONDETERMINISTIC``) and not one of
  ``KEPT``;
* every input it names is an initializer that no feed can override (a graph input of the same
  name can), or the output of a step folded before it; a Constant node has no inputs at all;
* it succeeds, and every output it names is a tensor (a NumPy array: no sequence, map or
  optional), smaller than ``MAX_FOLDED_BYTES`` unless the op is Constant (whose value the plan
  holds anyway).

The step is run by the same function with the same parsed attributes (and ``ctx``) as the
executor would call, with floating-point warnings off as in a run, so the folded values are the
very arrays a run would compute. A step that fails is *not* folded: it stays in the plan and
fails on every run with the executor's error naming the node, as it did before folding existed.

Folded values are read-only (like initializers): an op that wrote into one would corrupt the
next run. Only the step list run without hooks (``Plan.fused_steps``) leaves the folded steps
out; with hooks attached (tracing, capture, the debugger, the profiler) every node runs and is
seen, Constant nodes included.
"""

from __future__ import annotations

import numpy as np

from .. import registry

# Ops whose output changes from run to run (random draws; Dropout in training mode).
NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike",
                              "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"})

# Ops kept in the plan although their inputs are constant: a weight's DequantizeLinear (QDQ
# models) would leave a float copy of int8 weights in memory for the session's life (4x their
# size), and onnxruntime keeps these nodes too (they form its QDQ node units).
KEPT = frozenset({"DequantizeLinear"})

# A folded value stays in memory for the session's life, where a run frees it after its last
# reader: values above this size are computed on every run instead.
MAX_FOLDED_BYTES = 16 << 20


def foldable(step) -> bool:
    """The step's op may be run once at plan time (see the module docstring)."""
    node = step.node
    if node.op_type in NONDETERMINISTIC or node.op_type in KEPT or step.subgraphs:
        return False
    return registry.registered_as(step.fn, node.op_type, node.domain) is not None


def fold_constants(steps: list, constants: dict) -> tuple[dict, list[int]]:
    """Run the foldable steps whose inputs are all constant. ``constants``: name -> array of the
    initializers no feed can override. Returns (name -> folded value for every output of a
    folded step, the indices of the folded steps)."""
    known = dict(constants)
    values: dict = {}
    folded: list[int] = []
    with np.errstate(all="ignore"):
        for i, step in enumerate(steps):
            if not all(n in known for n in step.inputs if n) or not foldable(step):
                continue
            outputs = _evaluate(step, [known[n] if n else None for n in step.inputs])
            if outputs is None:
                continue
            for name, value in outputs.items():
                value.setflags(write=False)
                known[name] = values[name] = value
            folded.append(i)
    return values, folded


def _evaluate(step, args) -> dict | None:
    """The step's named outputs, or None where it fails or gives something not to fold."""
    try:
        result = step.fn(*args, **step.kwargs)
    except Exception:   # the run reports it, naming the node
        return None
    if not isinstance(result, tuple):
        result = (result,)
    names = [n for n in step.outputs if n]
    if len(result) < len(step.outputs) and any(step.outputs[len(result):]):
        return None
    out, size = {}, 0
    for name, value in zip(step.outputs, result):
        if not name:
            continue
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if type(value) is not np.ndarray:
            return None
        out[name] = value
        size += value.nbytes
    if step.node.op_type != "Constant" and size > MAX_FOLDED_BYTES:
        return None
    return out if len(out) == len(names) else None
