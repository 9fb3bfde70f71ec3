"""The fallback for ops without a step-by-step explainer: the formula, the input values that
feed the element where that is clear (element-wise ops: the broadcast elements), else the
inputs themselves when they are small, and the node's value."""

from __future__ import annotations

import numpy as np

from .arith import fmt, fmt_list
from .core import Context
from .qbinary import broadcast_at


def _feeds_elementwise(ctx: Context) -> bool:
    """Every tensor input broadcasts to the output's shape (an element-wise op's inputs do)."""
    shape = ctx.out.shape
    arrays = [v for v in ctx.inputs if isinstance(v, np.ndarray)]
    if not arrays:
        return False
    try:
        return np.broadcast_shapes(*(a.shape for a in arrays)) == shape
    except ValueError:
        return False


def explain_generic(ctx: Context):
    names = list(ctx.node.input)
    if _feeds_elementwise(ctx):
        lines = []
        for name, v in zip(names, ctx.inputs):
            if isinstance(v, np.ndarray):
                idx = broadcast_at(v.shape, ctx.out.shape, ctx.at)
                lines.append(f"{name}{list(idx)} = {fmt(v[idx])}  ({v.dtype.name})")
        ctx.step("the input elements at this position (broadcast)", lines,
                 note="if this op is element-wise, these are the values its formula combines")
    else:
        lines = []
        for name, v in zip(names, ctx.inputs):
            if not isinstance(v, np.ndarray):
                lines.append(f"{name or '(omitted)'}: {type(v).__name__ if v is not None else '-'}")
            elif v.size <= 64:
                lines.append(f"{name} = {fmt_list(v.reshape(-1), limit=64)}  "
                             f"({v.dtype.name}{list(v.shape)})")
            else:
                lines.append(f"{name}: {v.dtype.name}{list(v.shape)} (too large to list)")
        ctx.step("the inputs", lines,
                 note="which of their elements feed this output element depends on the op; "
                      "see its formula")
    ctx.step("the node's value", [f"{ctx.label}[{', '.join(map(str, ctx.at))}] = {fmt(ctx.actual)}"],
             value=ctx.actual,
             note=f"refrt has no step-by-step explanation of {ctx.node.op_type} yet: the value is "
                  f"the node's own, not recomputed")
    return None
