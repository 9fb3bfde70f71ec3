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

from .errors import NodeError, node_error


def _is(step, *op_types: str) -> bool:
    return step.node.op_type in op_types and step.node.domain in ("", "ai.onnx") \
        and not step.kwargs.get("broadcast", 0)


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


def _f32_scalar(v) -> bool:
    return isinstance(v, np.ndarray) and v.dtype == np.float32 and v.size == 1


# ---------------------------------------------------------------- the chains


def _epilogue_operand(v, n: int, ndim: int) -> bool:
    """A float32 scale/bias that broadcasts along the last axis only: one element, or N."""
    return (isinstance(v, np.ndarray) and v.dtype == np.float32 and v.ndim <= ndim
            and (v.size == 1 or (v.shape[-1] == n and v.size == n)))


def _match_matmul_integer(steps, i, sole_reader):
    """MatMulInteger -> Cast(FLOAT) -> Mul(scale) [-> Add(bias)] starting at step i."""
    mm = steps[i]
    if not _is(mm, "MatMulInteger") or len(mm.outputs) != 1:
        return None
    j = sole_reader(mm.outputs[0])
    if j is None or not _is(steps[j], "Cast") or steps[j].kwargs.get("to") != TensorProto.FLOAT:
        return None
    k = sole_reader(steps[j].outputs[0])
    if k is None or not _is(steps[k], "Mul"):
        return None
    scale = _other(steps[k], steps[j].outputs[0])
    if scale is None:
        return None
    members, bias = [i, j, k], None
    a = sole_reader(steps[k].outputs[0])
    if a is not None and _is(steps[a], "Add") and _other(steps[a], steps[k].outputs[0]) is not None:
        bias = _other(steps[a], steps[k].outputs[0])
        members.append(a)
    n_mm = len(mm.inputs)
    inputs = tuple(mm.inputs) + (scale,) + ((bias,) if bias is not None else ())
    chain = [steps[m] for m in members]
    from .ops import quant

    # the registered op's own code, with the epilogue handed to the GEMM
    in_gemm = mm.fn is quant.matmul_integer_op and "ctx" in mm.kwargs

    def with_epilogue(A, B, a_zero_point=None, b_zero_point=None, *, ctx, epilogue):
        y = quant.matmul_integer_scaled(A, B, a_zero_point, b_zero_point, *epilogue, ctx=ctx)
        if y is None:
            y = quant.matmul_integer(A, B, a_zero_point, b_zero_point, ctx=ctx, epilogue=epilogue)
        return y

    def fused(*args):
        s = args[n_mm]
        b = args[n_mm + 1] if bias is not None else None
        a_in, b_in = args[0], args[1] if n_mm > 1 else None
        if (in_gemm and isinstance(a_in, np.ndarray) and isinstance(b_in, np.ndarray)
                and a_in.ndim >= 2 and b_in.ndim == 2
                and _epilogue_operand(s, b_in.shape[1], a_in.ndim)
                and (bias is None or _epilogue_operand(b, b_in.shape[1], a_in.ndim))):
            return _call(mm, args[:n_mm], fn=with_epilogue, epilogue=(s, b))
        c = _call(mm, args[:n_mm])
        if (isinstance(c, np.ndarray) and c.dtype == np.int32 and c.ndim >= 1
                and _epilogue_operand(s, c.shape[-1], c.ndim)
                and (bias is None or _epilogue_operand(b, c.shape[-1], c.ndim))):
            from .kernels import scale_bias_int32

            return scale_bias_int32(c, s, b)
        return _run_members(chain[1:], (mm.outputs[0],) + inputs[n_mm:], (c,) + args[n_mm:])

    return members, inputs, fused


def _match_gelu(steps, i, sole_reader, producer):
    """Div/Mul(x, c) -> Erf -> Add(one) -> GELU's two Muls, found from the Erf at step i."""
    erf = steps[i]
    if not _is(erf, "Erf") or len(erf.inputs) != 1:
        return None
    p = producer.get(erf.inputs[0])
    if p is None or not _is(steps[p], "Div", "Mul") or sole_reader(erf.inputs[0]) != i:
        return None
    pre = steps[p]
    x, c = pre.inputs[0], pre.inputs[1] if len(pre.inputs) == 2 else None
    divide = pre.node.op_type == "Div"   # x / c; for Mul either input may be x: the one that
    k = sole_reader(erf.outputs[0])      # comes back in the last Muls is
    if c is None or k is None or not _is(steps[k], "Add"):
        return None
    one = _other(steps[k], erf.outputs[0])
    a_name = steps[k].outputs[0]
    r = sole_reader(a_name)
    if one is None or r is None or not _is(steps[r], "Mul"):
        return None
    candidates = [(x, c)] if divide else [(x, c), (c, x)]
    for x, c in candidates:
        other = _other(steps[r], a_name)
        if other == x:                                   # (x * a) * h
            t = sole_reader(steps[r].outputs[0])
            if t is None or not _is(steps[t], "Mul"):
                continue
            half = _other(steps[t], steps[r].outputs[0])
            members, form = [p, i, k, r, t], "(x*a)*h"
        else:
            q = producer.get(other)
            if q is None or not _is(steps[q], "Mul") or sole_reader(other) != r:
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
    if h is not None and t is not None and _is(steps[t], "Mul"):
        for x, c in candidates:
            if _other(steps[t], steps[r].outputs[0]) == x and h != x:
                return _gelu_step(steps, [p, i, k, r, t], "x*(a*h)", divide, x, c, one, h)
    return None


def _gelu_step(steps, members, form, divide, x, c, one, half):
    erf = next(steps[m] for m in members if steps[m].node.op_type == "Erf")
    ctx = erf.kwargs.get("ctx")
    chain = [steps[m] for m in members]
    inputs = (x, c, one, half)

    def fused(xv, cv, onev, halfv):
        if (ctx is not None and ctx.numerics == "ort" and isinstance(xv, np.ndarray)
                and xv.dtype == np.float32 and all(_f32_scalar(v) for v in (cv, onev, halfv))
                and all(np.ndim(v) <= xv.ndim for v in (cv, onev, halfv))):
            from .kernels import mathf

            return mathf.gelu_erf_f32(xv, divide, cv.reshape(-1)[0], onev.reshape(-1)[0],
                                      halfv.reshape(-1)[0], form)
        return _run_members(chain, inputs, (xv, cv, onev, halfv))

    return members, inputs, fused


def _match_add_layer_norm(steps, i, sole_reader):
    """Add(a, b) -> LayerNormalization(sum, scale[, bias]) with only Y used: a residual
    connection and its layer norm (onnxruntime's SkipLayerNormalization)."""
    add = steps[i]
    if not _is(add, "Add") or len(add.inputs) != 2 or len(add.outputs) != 1:
        return None
    j = sole_reader(add.outputs[0])
    if j is None or not _is(steps[j], "LayerNormalization") or steps[j].inputs[0] != add.outputs[0] \
            or add.outputs[0] in steps[j].inputs[1:]:
        return None
    ln = steps[j]
    from .ops import norm
    from .ops._common import normalize_axis

    if ln.fn is not norm.layer_normalization:
        return None
    kw = ln.kwargs
    inputs = tuple(add.inputs) + tuple(ln.inputs[1:])
    chain = [add, ln]

    def fused(a, b, scale, bias=None):
        if (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == np.float32
                and b.dtype == np.float32 and a.shape == b.shape and a.ndim >= 1
                and isinstance(scale, np.ndarray) and (bias is None or isinstance(bias, np.ndarray))):
            axis = normalize_axis(kw.get("axis", -1), a.ndim)
            st = norm._stash_dtype(a, kw.get("stash_type", 1))
            if norm._fits_row_kernel(a, scale, bias, axis, st, kw.get("ctx")):
                from .kernels import rows

                n = a.shape[-1]
                y, mean, inv_std = rows.add_layer_norm_rows(
                    a.reshape(-1, n), b.reshape(-1, n), scale, bias, kw.get("epsilon", 1e-5))
                stats = a.shape[:-1] + (1,)
                return y.reshape(a.shape), mean.reshape(stats), inv_std.reshape(stats)
        return _run_members(chain, inputs, (a, b, scale, bias))

    return [i, j], inputs, fused


def _match_scale_mask_softmax(steps, i, sole_reader):
    """Mul(x, c) or Div(x, c) -> Add(., mask) -> Softmax over the last axis: attention's scaled and
    masked scores, softmaxed row by row in one pass (``kernels.rows.scale_add_softmax_rows``)."""
    pre = steps[i]
    if not _is(pre, "Mul", "Div") or len(pre.inputs) != 2 or len(pre.outputs) != 1:
        return None
    j = sole_reader(pre.outputs[0])
    if j is None or not _is(steps[j], "Add"):
        return None
    mask = _other(steps[j], pre.outputs[0])
    k = sole_reader(steps[j].outputs[0]) if mask is not None else None
    if k is None or not _is(steps[k], "Softmax") or len(steps[k].inputs) != 1:
        return None
    sm = steps[k]
    if sm.fn.__name__ not in ("softmax_coerced_2d", "softmax_single_axis"):
        return None   # not the registered op (a model-local function, say)
    from .ops._common import ROW_KERNEL_MIN_SIZE, normalize_axis

    default_axis = -1 if sm.fn.__name__ == "softmax_single_axis" else 1
    divide = pre.node.op_type == "Div"
    inputs = tuple(pre.inputs) + (mask,)
    chain = [pre, steps[j], sm]

    def fused(a, b, m):
        x, c = a, b
        if not divide and _f32_scalar(a) and not _f32_scalar(b):
            x, c = b, a     # Mul(c, x)
        ctx = sm.kwargs.get("ctx")
        if (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim >= 2 and _f32_scalar(c)
                and c.ndim <= x.ndim and isinstance(m, np.ndarray) and x.size >= ROW_KERNEL_MIN_SIZE
                and (ctx is None or ctx.numerics != "spec")
                and normalize_axis(sm.kwargs.get("axis", default_axis), x.ndim) == x.ndim - 1):
            from .kernels import rows

            y = rows.scale_add_softmax_rows(x, c.reshape(()), divide, m)
            if y is not None:
                return y
        return _run_members(chain, inputs, (a, b, m))

    return [i, j, k], inputs, fused


def _match_matmul_add(steps, i, sole_reader):
    """MatMul(a, W) -> Add(., bias): the bias goes into the packed kernel's tiles (``nn.matmul_add``)
    or is added into MatMul's fresh result in place (the same float additions either way)."""
    mm = steps[i]
    if not _is(mm, "MatMul") or len(mm.outputs) != 1:
        return None
    j = sole_reader(mm.outputs[0])
    if j is None or not _is(steps[j], "Add"):
        return None
    bias = _other(steps[j], mm.outputs[0])
    if bias is None:
        return None
    add = steps[j]
    bias_first = add.inputs[0] == bias
    inputs = tuple(mm.inputs) + (bias,)
    from .ops import nn

    in_kernel = mm.fn is nn.matmul and "ctx" in mm.kwargs   # the registered op: bias in its tiles

    def fused(a, b, c):
        if in_kernel and isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
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
        found = (_match_matmul_integer(steps, i, sole_reader) or _match_gelu(steps, i, sole_reader, producer)
                 or _match_add_layer_norm(steps, i, sole_reader) or _match_matmul_add(steps, i, sole_reader)
                 or _match_scale_mask_softmax(steps, i, sole_reader))
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
