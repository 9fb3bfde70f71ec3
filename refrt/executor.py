"""The executor walks a plan. It does nothing but: fetch inputs, call the op, store outputs, free
dead values, call hooks. Everything else (order, attributes, liveness) was settled by the planner.

A hook is a callable ``on_node(node, inputs, outputs)`` or an object with an ``on_node`` method
and optionally ``before_node(node, inputs)``; with no hooks the loop checks one empty tuple per
node and nothing more.
"""

from __future__ import annotations

import contextvars
import time

import numpy as np

from .errors import NodeError, RunAborted, node_error


def split_hooks(hooks) -> tuple[tuple, tuple]:
    before, after = [], []
    for h in hooks or ():
        if hasattr(h, "before_node"):
            before.append(h.before_node)
        after.append(h.on_node if hasattr(h, "on_node") else h)
    return tuple(before), tuple(after)


NO_HOOKS = ((), ())

# The guard of the run in progress (RunOptions.terminate, a time limit): set by the session for
# the duration of one run, read once per plan (subgraph bodies and Loop iterations included) and
# checked before each node. None costs nothing.
RUN_GUARD: contextvars.ContextVar = contextvars.ContextVar("refrt_run_guard", default=None)


class RunGuard:
    """Stops a run between two nodes when ``options.terminate`` becomes true (from any thread) or
    when ``deadline`` (time.monotonic) has passed."""

    def __init__(self, options, deadline: float | None):
        self.options, self.deadline = options, deadline

    def check(self, step) -> None:
        if getattr(self.options, "terminate", False):
            raise RunAborted(f"run terminated before node {step.label!r} ({step.node.op_type}): "
                             f"RunOptions.terminate was set")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RunAborted(f"run stopped before node {step.label!r} ({step.node.op_type}): its time "
                             f"limit passed")


def run_plan(plan, env: dict, hooks: tuple = NO_HOOKS) -> list:
    """Run ``plan`` over ``env`` (initializers, feeds and outer values; consumed) -> outputs.

    ``hooks`` is the pair (before_node callables, on_node callables) from :func:`split_hooks`.

    NumPy's floating-point warnings are off for the whole run: ONNX ops return inf and NaN
    where IEEE arithmetic gives them, silently, so op bodies need not each switch the warnings
    off (a ``np.errstate`` per node cost about a sixth of a cheap node's time).
    """
    with np.errstate(all="ignore"):
        return _run(plan, env, hooks)


def _run_unhooked(plan, env: dict) -> list:
    """The run with no hooks: constant nodes were run at plan time (their values are in
    plan.folded) and fused chains run as one step (the same results); the loop of ``_run`` with
    nothing for hooks."""
    guard = RUN_GUARD.get()
    if plan.folded:
        env.update(plan.folded)
    for name in plan.fused_free_at_start:
        env.pop(name, None)
    for step in plan.fused_steps:
        if guard is not None:
            guard.check(step)
        fn, inputs, kwargs, outs, free = step.fast
        args = [env[n] if n else None for n in inputs]
        if step.subgraphs:
            kwargs = dict(kwargs)
            for k in step.subgraphs:
                kwargs[k] = kwargs[k].bind(env, NO_HOOKS)
        try:
            result = fn(*args, **kwargs)
        except (NodeError, RunAborted):
            raise
        except Exception as e:
            raise node_error(step.label, step.node.op_type, e) from e
        if type(result) is np.ndarray and len(outs) == 1:   # the common case
            if outs[0]:
                env[outs[0]] = result
        else:
            _store(step, outs, result, env)
        for name in free:
            env.pop(name, None)
    return [env[o.name] for o in plan.outputs]


def _store(step, outs, result, env: dict) -> None:
    """Outputs other than one array: a tuple (or one sequence, map or None) by name."""
    if not isinstance(result, tuple):
        result = (result,)
    if len(result) < len(outs) and any(outs[len(result):]):
        raise NodeError(step.label, step.node.op_type,
                        f"produced {len(result)} outputs, the node wants {len(outs)}")
    for name, value in zip(outs, result):
        if name:
            if isinstance(value, np.generic):
                value = np.asarray(value)
            env[name] = value


def _run(plan, env: dict, hooks: tuple) -> list:
    before, after = hooks
    if not (before or after):
        return _run_unhooked(plan, env)
    # hooks see every node, as the graph has them (no folding, no fused chains)
    guard = RUN_GUARD.get()
    for name in plan.free_at_start:
        env.pop(name, None)
    for step in plan.steps:
        if guard is not None:
            guard.check(step)
        fn, inputs, kwargs, outs, free = step.fast
        args = [env[n] if n else None for n in inputs]
        if step.subgraphs:
            kwargs = dict(kwargs)
            for k in step.subgraphs:
                kwargs[k] = kwargs[k].bind(env, hooks)
        if before:
            for h in before:
                h(step.node, args)
        try:
            result = fn(*args, **kwargs)
        except (NodeError, RunAborted):
            raise
        except Exception as e:
            raise node_error(step.label, step.node.op_type, e) from e
        if type(result) is np.ndarray and len(outs) == 1:   # the common case
            if outs[0]:
                env[outs[0]] = result
        else:
            _store(step, outs, result, env)
        if after:
            produced = [env.get(n) if n else None for n in outs]
            for h in after:
                h(step.node, args, produced)
        for name in free:
            env.pop(name, None)
    return [env[o.name] for o in plan.outputs]
