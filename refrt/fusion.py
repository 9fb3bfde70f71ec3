"""Fused steps: a chain of nodes run as one step, with bit for bit the same result.

Five chains are common in transformer models and cost more node by node than as one step:

1. A dynamically quantized MatMul (onnxruntime's ``quantize_dynamic``):

       MatMulInteger(A_q, W_q, a_zp, w_zp) -> Cast(to=FLOAT) -> Mul(., scale) [-> Add(., bias)]

   Node by node, the int32 product is written out, read back and converted, and the float result
   is written and read twice more, each element-wise node a full pass over memory on one thread.
   Fused, the GEMM applies the whole epilogue ``float32(c) * scale + bias`` to each 32-column
   panel of the product while it is in cache (``kernels.gemm_int8_scaled``; where the op's own
   code must run, ``kernels.scale_bias_int32`` does it in one pass afterwards).

2. GELU in its erf form, as exporters write it, e.g. ``x * 0.5 * (1 + erf(x / sqrt(2)))``:

       Div(x, c) or Mul(x, c) -> Erf -> Add(., one) -> the two Muls with x and 0.5

   in any of the three groupings of ``kernels.mathf.GELU_FORMS``. Fused, it is one parallel
   pass (``kernels.mathf.gelu_erf_f32``) with onnxruntime's float32 erf inline.

3. A residual connection and its layer norm, ``Add(a, b) -> LayerNormalization`` (onnxruntime's
   SkipLayerNormalization): the float32 sum is formed row by row inside the layer-norm kernel
   (``kernels.rows.add_layer_norm_rows``) instead of being written out and read back.

4. ``MatMul -> Add(bias)``: with a constant weight matrix packed for ``kernels.fgemm``, the
   bias is added to each tile of the product while it is in cache; otherwise it is added into the
   product's fresh array in place.

5. Attention's ``Mul(scores, c)`` (or ``Div``) ``-> Add(mask) -> Softmax`` over the last axis:
   each row is scaled, masked and softmaxed in one pass (``kernels.rows.scale_add_softmax_rows``)
   instead of three passes over the [batch, heads, seq, seq] scores.

A fused kernel does the same float32 operations in the same order as the nodes (each rounded
once; no multiply-add is fused that the nodes do not fuse), so every output bit is the one the
separate nodes give; the tests compare both ways on random inputs.

The planner keeps both step lists: the executor runs the fused list when nobody is watching and
the plain one when hooks are attached, so tracing, intermediate capture and the debugger still see
every node and every intermediate value.  ``SessionOptions.graph_optimization_level =
ORT_DISABLE_ALL`` turns fusion off altogether.

A chain is fused only where that cannot change anything observable: each intermediate value has
exactly one reader (no other node, no subgraph, not a graph output), the nodes are the standard
ai.onnx ones, and Mul/Add/Div use NumPy broadcasting (not the legacy ``broadcast`` attribute).
At run time the kernel is used only for the inputs it covers (float32, the shapes above, the
default numerics for Erf); anything else runs the nodes' own functions one after the other.
Errors name the node that failed, as without fusion.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from onnx import TensorProto

from . import registry
from .errors import NodeError, node_error


def _op(step, *op_types: str):
    """The registry's entry for the op ``step`` runs when that is the registered ai.onnx op of one
    of ``op_types`` with NumPy broadcasting (not the legacy ``broadcast`` attribute), else None
    (another op, a model-local function or a schema's function body of that name)."""
    node = step.node
    if (node.op_type not in op_types or step.kwargs.get("broadcast", 0)
            or not registry.is_default_domain(node.domain)):
        return None
    return registry.registered_as(step.fn, node.op_type)


def _call(step, args, fn=None, **extra):
    """Run one member of a fused chain (or ``fn`` in its place, with ``extra`` keywords); errors
    name that member, as the executor would."""
    try:
        return (fn or step.fn)(*args, **step.kwargs, **extra)
    except NodeError:
        raise
    except Exception as e:
        raise node_error(step.label, step.node.op_type, e) from e


def _run_members(members, inputs: tuple, values: tuple):
    """The chain node by node: ``values`` are the chain's external ``inputs`` by name."""
    env = dict(zip(inputs, values))
    out = None
    for step in members:
        out = _call(step, [env.get(n) if n else None for n in step.inputs])
        if not isinstance(out, tuple):
            out = (out,)
        env.update(zip(step.outputs, out))
    return out[0]


def _other(step, name: str):
    """The input of a binary step that is not ``name`` (None unless exactly one is)."""
    a, b = (list(step.inputs) + ["", ""])[:2]
    if len(step.inputs) != 2 or (a == name) == (b == name):
        return None
    return b if a == name else a


# ---------------------------------------------------------------- the rules
#
# A rule looks at step i: ``rule(steps, i, sole_reader, producer)`` -> None, or (the indices of
# the chain's steps in run order, the chain's external inputs, the function that runs it). The
# function calls the op family's fused entry point, which declines with None where its kernel
# does not apply; then the chain's own nodes run one after the other.


def _match_matmul_integer(steps, i, sole_reader, producer):
    """MatMulInteger -> Cast(FLOAT) -> Mul(scale) [-> Add(bias)] starting at step i."""
    mm = steps[i]
    if not _op(mm, "MatMulInteger") or len(mm.outputs) != 1:
        return None
    j = sole_reader(mm.outputs[0])
    if j is None or not _op(steps[j], "Cast") or steps[j].kwargs.get("to") != TensorProto.FLOAT:
        return None
    k = sole_reader(steps[j].outputs[0])
    if k is None or not _op(steps[k], "Mul"):
        return None
    scale = _other(steps[k], steps[j].outputs[0])
    if scale is None:
        return None
    members, bias = [i, j, k], None
    a = sole_reader(steps[k].outputs[0])
    if a is not None and _op(steps[a], "Add") and _other(steps[a], steps[k].outputs[0]) is not None:
        bias = _other(steps[a], steps[k].outputs[0])
        members.append(a)
    n_mm = len(mm.inputs)
    inputs = tuple(mm.inputs) + (scale,) + ((bias,) if bias is not None else ())
    chain = [steps[m] for m in members]

    from .ops import quant  # imported once a chain matches

    def fused(*args):
        s = args[n_mm]
        b = args[n_mm + 1] if bias is not None else None
        y = _call(mm, args[:n_mm], fn=quant.matmul_integer_dequantized, scale=s, bias=b)
        if y is not None:
            return y
        c = _call(mm, args[:n_mm])
        y = quant.dequantize_product(c, s, b)
        if y is not None:
            return y
        return _run_members(chain[1:], (mm.outputs[0],) + inputs[n_mm:], (c,) + args[n_mm:])

    return members, inputs, fused


def _match_gelu(steps, i, sole_reader, producer):
    """Div/Mul(x, c) -> Erf -> Add(one) -> GELU's two Muls, found from the Erf at step i."""
    erf = steps[i]
    if not _op(erf, "Erf") or len(erf.inputs) != 1:
        return None
    p = producer.get(erf.inputs[0])
    if p is None or not _op(steps[p], "Div", "Mul") or sole_reader(erf.inputs[0]) != i:
        return None
    pre = steps[p]
    x, c = pre.inputs[0], pre.inputs[1] if len(pre.inputs) == 2 else None
    divide = pre.node.op_type == "Div"   # x / c; for Mul either input may be x: the one that
    k = sole_reader(erf.outputs[0])      # comes back in the last Muls is
    if c is None or k is None or not _op(steps[k], "Add"):
        return None
    one = _other(steps[k], erf.outputs[0])
    a_name = steps[k].outputs[0]
    r = sole_reader(a_name)
    if one is None or r is None or not _op(steps[r], "Mul"):
        return None
    candidates = [(x, c)] if divide else [(x, c), (c, x)]
    for x, c in candidates:
        other = _other(steps[r], a_name)
        if other == x:                                   # (x * a) * h
            t = sole_reader(steps[r].outputs[0])
            if t is None or not _op(steps[t], "Mul"):
                continue
            half = _other(steps[t], steps[r].outputs[0])
            members, form = [p, i, k, r, t], "(x*a)*h"
        else:
            q = producer.get(other)
            if q is None or not _op(steps[q], "Mul") or sole_reader(other) != r:
                continue
            if x in steps[q].inputs and _other(steps[q], x) is not None:   # (x * h) * a
                half = _other(steps[q], x)
                members, form = sorted([p, i, k, q, r]), "(x*h)*a"
            else:
                continue
        if half is None or half == x:
            continue
        return _gelu_step(steps, members, form, divide, x, c, one, half)
    # x * (a * h): the Add's reader multiplies a by the constant, the next Mul brings x back
    h = _other(steps[r], a_name)
    t = sole_reader(steps[r].outputs[0])
    if h is not None and t is not None and _op(steps[t], "Mul"):
        for x, c in candidates:
            if _other(steps[t], steps[r].outputs[0]) == x and h != x:
                return _gelu_step(steps, [p, i, k, r, t], "x*(a*h)", divide, x, c, one, h)
    return None


def _gelu_step(steps, members, form, divide, x, c, one, half):
    erf = next(steps[m] for m in members if steps[m].node.op_type == "Erf")
    ctx = erf.kwargs.get("ctx")
    chain = [steps[m] for m in members]
    inputs = (x, c, one, half)

    from .ops import elementwise  # imported once a chain matches

    def fused(xv, cv, onev, halfv):
        y = elementwise.gelu_erf(xv, cv, onev, halfv, divide=divide, form=form, ctx=ctx)
        if y is not None:
            return y
        return _run_members(chain, inputs, (xv, cv, onev, halfv))

    return members, inputs, fused


def _match_add_layer_norm(steps, i, sole_reader, producer):
    """Add(a, b) -> LayerNormalization(sum, scale[, bias]) with only Y used: a residual
    connection and its layer norm (onnxruntime's SkipLayerNormalization)."""
    add = steps[i]
    if not _op(add, "Add") or len(add.inputs) != 2 or len(add.outputs) != 1:
        return None
    j = sole_reader(add.outputs[0])
    if j is None or not _op(steps[j], "LayerNormalization") or steps[j].inputs[0] != add.outputs[0] \
            or add.outputs[0] in steps[j].inputs[1:]:
        return None
    ln = steps[j]
    inputs = tuple(add.inputs) + tuple(ln.inputs[1:])
    chain = [add, ln]

    from .ops import norm  # imported once a chain matches

    def fused(a, b, scale, bias=None):
        y = norm.add_layer_normalization(a, b, scale, bias, **ln.kwargs)
        if y is not None:
            return y
        return _run_members(chain, inputs, (a, b, scale, bias))

    return [i, j], inputs, fused


def _match_scale_mask_softmax(steps, i, sole_reader, producer):
    """Mul(x, c) or Div(x, c) -> Add(., mask) -> Softmax over the last axis: attention's scaled and
    masked scores, softmaxed row by row in one pass (``reduce.scale_add_softmax``)."""
    pre = steps[i]
    if not _op(pre, "Mul", "Div") or len(pre.inputs) != 2 or len(pre.outputs) != 1:
        return None
    j = sole_reader(pre.outputs[0])
    if j is None or not _op(steps[j], "Add"):
        return None
    mask = _other(steps[j], pre.outputs[0])
    k = sole_reader(steps[j].outputs[0]) if mask is not None else None
    softmax = _op(steps[k], "Softmax") if k is not None else None
    if softmax is None or len(steps[k].inputs) != 1:
        return None
    sm = steps[k]
    axis = sm.kwargs.get("axis", softmax.attrs["axis"])   # the default differs by version
    divide = pre.node.op_type == "Div"
    inputs = tuple(pre.inputs) + (mask,)
    chain = [pre, steps[j], sm]

    from .ops import reduce  # imported once a chain matches

    def fused(a, b, m):
        y = reduce.scale_add_softmax(a, b, m, divide=divide, axis=axis, ctx=sm.kwargs.get("ctx"))
        if y is not None:
            return y
        return _run_members(chain, inputs, (a, b, m))

    return [i, j, k], inputs, fused


def _match_matmul_add(steps, i, sole_reader, producer):
    """MatMul(a, W) -> Add(., bias): the bias goes into the packed kernel's tiles (``nn.matmul_add``)
    or is added into MatMul's fresh result in place (the same float additions either way)."""
    mm = steps[i]
    if not _op(mm, "MatMul") or len(mm.outputs) != 1:
        return None
    j = sole_reader(mm.outputs[0])
    if j is None or not _op(steps[j], "Add"):
        return None
    bias = _other(steps[j], mm.outputs[0])
    if bias is None:
        return None
    add = steps[j]
    bias_first = add.inputs[0] == bias
    inputs = tuple(mm.inputs) + (bias,)

    from .ops import nn  # imported once a chain matches

    def fused(a, b, c):
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            y = _call(mm, (a, b), fn=nn.matmul_add, bias=c)
            if y is not None:
                return y
        y = _call(mm, (a, b))
        if (isinstance(y, np.ndarray) and isinstance(c, np.ndarray) and y.dtype == c.dtype
                and y.dtype in (np.float32, np.float64) and y.flags.owndata and y.flags.writeable
                and c.ndim <= y.ndim
                and all(dc in (1, dy) for dc, dy in zip(c.shape[::-1], y.shape[::-1]))):
            return np.add(y, c, out=y)
        return _call(add, (c, y) if bias_first else (y, c))

    return [i, j], inputs, fused


# Tried in this order at each step; the first that matches takes the chain.
RULES = (_match_matmul_integer, _match_gelu, _match_add_layer_norm, _match_matmul_add,
         _match_scale_mask_softmax)


def _first_match(steps, i, sole_reader, producer):
    for rule in RULES:
        found = rule(steps, i, sole_reader, producer)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------- planning


def fuse_steps(steps: list, reads: list, keep: set, make_step) -> tuple[list, list]:
    """(fused steps, what each reads) for ``steps`` (one per node, in run order; ``reads[i]`` every
    name step i reads, its subgraphs' included; ``keep`` the graph's outputs). A chain becomes one
    step at the place of its last node; ``make_step(**fields)`` builds it, with ``free=()``: the
    caller works out liveness for the new order. Other steps are returned as they are."""
    uses = Counter(name for names in reads for name in names)
    reader, producer = {}, {}
    for i, names in enumerate(reads):
        for name in names:
            reader[name] = i
    for i, s in enumerate(steps):
        for o in s.outputs:
            if o:
                producer[o] = i

    def sole_reader(name):
        if not name or name in keep or uses[name] != 1:
            return None
        return reader[name]

    replaced: dict[int, tuple] = {}   # index of a chain's last node -> (fused step, its reads)
    absorbed: set[int] = set()
    for i in range(len(steps)):
        if i in absorbed or i in replaced:
            continue
        found = _first_match(steps, i, sole_reader, producer)
        if found is None:
            continue
        members, inputs, fn = found
        if any(m in absorbed or m in replaced for m in members) or members != sorted(members):
            continue
        last = steps[members[-1]]
        inner = {o for m in members[:-1] for o in steps[m].outputs if o}
        if any(len([o for o in steps[m].outputs if o]) != 1 for m in members):
            continue
        names = "+".join(steps[m].node.op_type for m in members)
        step = make_step(node=last.node, fn=fn, inputs=inputs, outputs=last.outputs, kwargs={},
                         subgraphs=(), free=(), label=f"{last.label} (fused {names})")
        replaced[members[-1]] = (step, [n for m in members for n in reads[m] if n not in inner])
        absorbed.update(members[:-1])
    if not replaced:
        return steps, reads
    kept = [i for i in range(len(steps)) if i not in absorbed]
    return ([replaced[i][0] if i in replaced else steps[i] for i in kept],
            [replaced[i][1] if i in replaced else reads[i] for i in kept])
