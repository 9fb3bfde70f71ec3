"""Fused steps: a chain of nodes run as one step, with bit for bit the same result.

A dynamically quantized MatMul (onnxruntime's ``quantize_dynamic``) becomes

    MatMulInteger(A_q, W_q, a_zp, w_zp) -> Cast(to=FLOAT) -> Mul(., scale) -> Add(., bias)

Run node by node, the int32 product is written out, read back and converted, the float result is
written and read twice more; each of the three element-wise nodes is a full pass over memory on one
thread.  The fused step computes the product and then the whole epilogue
``float32(c) * scale + bias`` in one parallel pass (``kernels.scale_bias_int32``), doing the same
float32 operations in the same order (one rounding after the product, one after the sum; no
fused multiply-add), so every output bit is the one the separate nodes give.

The planner keeps both step lists: the executor runs the fused list when nobody is watching and
the plain one when hooks are attached, so tracing, intermediate capture and the debugger still see
every node and every intermediate value.  ``SessionOptions.graph_optimization_level =
ORT_DISABLE_ALL`` turns fusion off altogether.

A chain is fused only where that cannot change anything observable: each intermediate value has
exactly one reader (no other node, no subgraph, not a graph output), the nodes are the standard
ai.onnx ones, Cast goes to float32 and Mul/Add use NumPy broadcasting (not the legacy
``broadcast`` attribute).  At run time the fused kernel is used only for the shapes it covers
(int32 product, float32 scale and bias of one element or one per column); anything else runs the
nodes' own functions one after the other.  Errors name the node that failed, as without fusion.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from onnx import TensorProto

from .errors import NodeError, RefrtError


def _is(step, op_type: str) -> bool:
    return step.node.op_type == op_type and step.node.domain in ("", "ai.onnx")


def _call(step, args):
    """Run one member of a fused chain; errors name that member, as the executor would."""
    try:
        return step.fn(*args, **step.kwargs)
    except RefrtError as e:
        if isinstance(e, NodeError):
            raise
        raise NodeError(step.label, step.node.op_type, str(e)) from e
    except Exception as e:
        raise NodeError(step.label, step.node.op_type, f"{type(e).__name__}: {e}") from e


def _epilogue_operand(v, n: int, ndim: int) -> bool:
    """A float32 scale/bias that broadcasts along the last axis only: one element, or N."""
    return (isinstance(v, np.ndarray) and v.dtype == np.float32 and v.ndim <= ndim
            and (v.size == 1 or (v.shape[-1] == n and v.size == n)))


def _matmul_integer_epilogue(mm, cast, mul, add, scale_first: bool, bias_first: bool):
    n_mm = len(mm.inputs)

    def fused(*args):
        c = _call(mm, args[:n_mm])
        scale = args[n_mm]
        bias = args[n_mm + 1] if add is not None else None
        if (isinstance(c, np.ndarray) and c.dtype == np.int32 and c.ndim >= 1
                and _epilogue_operand(scale, c.shape[-1], c.ndim)
                and (add is None or _epilogue_operand(bias, c.shape[-1], c.ndim))):
            from .kernels import scale_bias_int32

            return scale_bias_int32(c, scale, bias)
        x = _call(cast, (c,))
        y = _call(mul, (scale, x) if scale_first else (x, scale))
        if add is None:
            return y
        return _call(add, (bias, y) if bias_first else (y, bias))

    return fused


def fuse_steps(steps: list, reads: list, keep: set, make_step) -> tuple[list, list]:
    """(fused steps, what each reads) for ``steps`` (one per node, in run order; ``reads[i]`` every
    name step i reads, its subgraphs' included; ``keep`` the graph's outputs). A chain becomes one
    step at the place of its last node; ``make_step(**fields)`` builds it, with ``free=()``: the
    caller works out liveness for the new order. Other steps are returned as they are."""
    uses = Counter(name for names in reads for name in names)
    reader = {}
    for i, names in enumerate(reads):
        for name in names:
            reader[name] = i

    def sole_reader(name):
        if not name or name in keep or uses[name] != 1:
            return None
        return reader[name]

    replaced: dict[int, tuple] = {}   # index of a chain's last node -> (fused step, its reads)
    absorbed: set[int] = set()
    for i, mm in enumerate(steps):
        if not _is(mm, "MatMulInteger") or len(mm.outputs) != 1 or i in absorbed:
            continue
        j = sole_reader(mm.outputs[0])
        if j is None or not _is(steps[j], "Cast") or steps[j].kwargs.get("to") != TensorProto.FLOAT:
            continue
        cast = steps[j]
        k = sole_reader(cast.outputs[0])
        if k is None or not _is(steps[k], "Mul") or steps[k].kwargs.get("broadcast", 0):
            continue
        mul = steps[k]
        if list(mul.inputs).count(cast.outputs[0]) != 1:
            continue
        scale_first = mul.inputs[1] == cast.outputs[0]
        scale = mul.inputs[0] if scale_first else mul.inputs[1]
        members, add, bias, bias_first = [i, j, k], None, None, False
        a = sole_reader(mul.outputs[0])
        if a is not None and _is(steps[a], "Add") and not steps[a].kwargs.get("broadcast", 0) \
                and list(steps[a].inputs).count(mul.outputs[0]) == 1:
            add = steps[a]
            bias_first = add.inputs[1] == mul.outputs[0]
            bias = add.inputs[0] if bias_first else add.inputs[1]
            members.append(a)
        last = steps[members[-1]]
        inner = {mm.outputs[0], cast.outputs[0]} | ({mul.outputs[0]} if add is not None else set())
        names = "+".join(steps[m].node.op_type for m in members)
        step = make_step(
            node=last.node, fn=_matmul_integer_epilogue(mm, cast, mul, add, scale_first, bias_first),
            inputs=tuple(mm.inputs) + (scale,) + ((bias,) if add is not None else ()),
            outputs=last.outputs, kwargs={}, subgraphs=(), free=(),
            label=f"{last.label} (fused {names})")
        replaced[members[-1]] = (step, [n for m in members for n in reads[m] if n not in inner])
        absorbed.update(members[:-1])
    if not replaced:
        return steps, reads
    keep_idx = [i for i in range(len(steps)) if i not in absorbed]
    return ([replaced[i][0] if i in replaced else steps[i] for i in keep_idx],
            [replaced[i][1] if i in replaced else reads[i] for i in keep_idx])
