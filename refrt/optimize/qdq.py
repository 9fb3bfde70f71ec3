"""onnxruntime's QDQ node-unit fusions: what its CPU provider turns a static QDQ model into at
``ORT_ENABLE_EXTENDED`` and above, so that refrt at those levels gives onnxruntime's default results.

A QDQ model carries float ops between DequantizeLinear (DQ) and QuantizeLinear (Q) nodes:

    x_q -> DQ -> Conv -> Q -> y_q          w_q -> DQ --^

Run as written, the Conv works in float32 and its result is rounded to 8 bits by Q. onnxruntime
does not run it as written above ``ORT_ENABLE_BASIC``: it replaces each such *node unit* (the
target op, the DQ nodes feeding it and the Q nodes reading it) by one quantized op, here
QLinearConv, whose integer arithmetic and single requantization round differently from float32
Conv + Q by up to one quantization step. :func:`fuse_qdq` makes the same replacements, so refrt
then runs the same ops onnxruntime runs, on the same inputs.

The passes, in onnxruntime's order, each named after the onnxruntime transformer it mirrors
(``onnxruntime/core/optimizer/qdq_transformer``):

0. ``EliminateIdentity``, ``ReluQuantFusion`` and ``ClipQuantFusion`` (level-1 rewrite rules): an
   Identity goes (its readers read its input); a Relu read only by a Q
   whose zero point is the type's minimum, or a Clip read only by a Q whose range lies within
   the Clip's (to float32 epsilon), is removed: Q clamps as much.
1. ``EnsureUniqueDQForNodeUnit`` (level 1): a DQ read by several nodes is duplicated, one DQ per
   reading input, so that every node unit owns its DQ nodes.
2. ``QDQS8ToU8Transformer`` (level 2, x86-64 builds): an int8 ``Q -> DQ`` pair whose Q feeds only
   that DQ becomes uint8 (both zero points + 128: the same values). On x86-64 onnxruntime fuses
   Conv and MatMul units with uint8 activations only, so this pass decides which units the next
   one can fuse. (In its AVX2 precision mode it also turns int8 weights into uint8 unless they
   fit in 7 bits; onnxruntime 1.32 keeps them int8 by default, measured.)
3. ``QDQSelectorActionTransformer`` (level 2): one rule per op, each a selector (which units
   qualify) and an action (what replaces them). The rules and their conditions are in ``RULES``
   and the ``_select_*`` functions below; in short:

   ==========================================  ==============================================
   unit                                        becomes
   ==========================================  ==============================================
   DQ -> Reshape/Transpose/Gather/... -> Q     the op on the 8-bit values (Q and DQ dropped,
   (same scale and zero point on both sides)   MaxPool/ReduceMax/ReduceMin also need scale > 0)
   DQ -> Split -> Q per output                 Split on the 8-bit values
   DQ -> ArgMax                                ArgMax on the 8-bit values
   DQ -> AveragePool/GlobalAveragePool/        com.microsoft QLinear<op>
   LeakyRelu/Sigmoid/Softmax -> Q
   DQ, DQ -> Add/Mul -> Q                      com.microsoft QLinearAdd / QLinearMul
   DQ... -> Concat -> Q                        com.microsoft QLinearConcat
   DQ x, DQ w [, DQ int32 bias] -> Conv -> Q   QLinearConv (uint8 x only, on x86-64)
   DQ, DQ -> MatMul -> Q                       QLinearMatMul (uint8 x only, on x86-64)
   DQ, DQ -> MatMul (no Q)                     com.microsoft MatMulIntegerToFloat
   DQ A, DQ B [, DQ int32 C] -> Gemm [-> Q]    com.microsoft QGemm (float output without Q)
   cond, DQ, DQ -> Where -> Q                  com.microsoft QLinearWhere
   ==========================================  ==============================================

   A Relu, or a Clip whose range covers the whole 8-bit range, between the op and its Q is
   dropped with the unit when Q's clamp makes it redundant (Relu: Q's zero point is the type's
   minimum).
4. ``QDQFinalCleanupTransformer`` (level 2): a ``DQ -> Q`` pair with the same scale and zero
   point (the identity on 8-bit values) is removed.

A unit qualifies only when it can vanish without changing anything else: each DQ feeds only the
target, each output of the target feeds only Q nodes (one per output) and is not a graph output,
and scales and zero points are constant scalars where a rule needs them (constant: an
initializer that is not also a graph input). Units are matched in topological order, as
onnxruntime does, and each replacement takes the target's place and name.

Not mirrored (they change no value on the models measured, or need ops refrt lacks): the level-1
``QDQPropagationTransformer`` and ``DoubleQDQPairsRemover``, int4 weights into MatMulNBits
(``DQMatMulToMatMulNBits``), and the level-3 layout transformers (NCHWc, NHWC), which change
the layout, not the values. Main-graph nodes only: units inside If/Loop/Scan bodies stay as they
are.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from .rewrite import Graph, attr, is_op, subgraph_reads

MS = "com.microsoft"
Q_OP, DQ_OP = "QuantizeLinear", "DequantizeLinear"
INT8, UINT8, INT32 = TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32
BITS16 = (TensorProto.INT16, TensorProto.UINT16)
BITS4 = (TensorProto.INT4, TensorProto.UINT4)
TYPE_RANGE = {INT8: (-128, 127), UINT8: (0, 255), TensorProto.INT16: (-32768, 32767),
              TensorProto.UINT16: (0, 65535)}
# onnxruntime's CPU kernels take uint8 activations only for QLinearConv/QLinearMatMul on x86-64
INT8_ACTIVATIONS_ALLOWED = False


class _Graph(Graph):
    """The main graph opened for rewriting (:class:`refrt.optimize.rewrite.Graph`), with what
    the QDQ passes also keep: element types of values, counts of the replacements made, and the
    values whose type a pass changed (their value_info goes)."""

    def __init__(self, model: onnx.ModelProto, blobs: dict | None, since):
        super().__init__(model, blobs)
        self.since = since           # node -> the since-version of its op at the model's opset
        self.counts: Counter = Counter()
        self.retyped: set = set()
        self._serial = 0
        g = model.graph
        self.types = {t.name: t.data_type for t in g.initializer}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                self.types.setdefault(vi.name, vi.type.tensor_type.elem_type)

    def edges(self, name: str) -> list:
        """(node, input slot) of every read of ``name``, onnxruntime's edges: a node reading it
        twice counts twice; slot -1: read inside the node's subgraphs."""
        out = []
        for n in self.readers(name):
            out += [(n, i) for i, x in enumerate(n.input) if x == name]
            if name in subgraph_reads(n):
                out.append((n, -1))
        return out

    def fresh(self, base: str) -> str:
        self._serial += 1
        return f"{base}/qdq_{self._serial}"

    def add_initializer(self, name: str, value: np.ndarray) -> str:
        super().add_initializer(name, value)
        self.types[name] = self.inits[name].data_type
        return name

    def zero_point(self, elem_type: int) -> str:
        """A shared scalar zero point 0 of ``elem_type`` (onnxruntime's SetOptionalZeroPoint)."""
        name = f"qdq_optional_zero_point_{TensorProto.DataType.Name(elem_type).lower()}"
        if name not in self.inits:
            self.add_initializer(name, np.zeros((), helper.tensor_dtype_to_np_dtype(elem_type)))
        return name


# ---- the pieces of a node unit ---------------------------------------------------------------

def _scalar(g: _Graph, name: str) -> np.ndarray | None:
    """A constant scalar (rank 0, or rank 1 of one element), else None."""
    if not name:
        return None
    v = g.constant(name)
    if v is None or v.size != 1 or v.ndim > 1:
        return None
    return v


def _dq_type(g: _Graph, dq) -> int | None:
    return g.types.get(dq.input[0])


def _q_type(g: _Graph, q) -> int:
    """A Q's output type: its zero point's, else ``output_dtype``, else uint8."""
    if len(q.input) > 2 and q.input[2] and q.input[2] in g.types:
        return g.types[q.input[2]]
    return attr(q, "output_dtype", 0) or UINT8


def _same_qparams(g: _Graph, q, dq) -> bool:
    """onnxruntime's IsQDQPairSupported: both with constant scalar scale and zero point, equal."""
    if len(q.input) != 3 or len(dq.input) != 3:
        return False
    qs, qz, ds, dz = (_scalar(g, x) for x in (q.input[1], q.input[2], dq.input[1], dq.input[2]))
    if qs is None or qz is None or ds is None or dz is None:
        return False
    return (qz.dtype == dz.dtype and qs.dtype == ds.dtype and qz.tobytes() == dz.tobytes()
            and qs.reshape(()) == ds.reshape(()))


def _positive_scale(g: _Graph, node) -> bool:
    s = _scalar(g, node.input[1])
    return s is not None and float(s.reshape(())) > 0


def _dq_parents(g: _Graph, node) -> list:
    """The DQ nodes feeding ``node``, in input-slot order (onnxruntime's FindParentsByType)."""
    out = []
    for name in node.input:
        p = g.producer(name) if name else None
        if is_op(p, DQ_OP) and not any(p is d for d in out):
            out.append(p)
    return out


def _q_children(g: _Graph, node) -> list:
    """The Q nodes reading ``node``'s outputs, in output order (FindChildrenByType)."""
    out = []
    for name in node.output:
        for r, slot in g.edges(name):
            if slot >= 0 and is_op(r, Q_OP) and not any(r is q for q in out):
                out.append(r)
    return out


def _edges_out(g: _Graph, node) -> int:
    return sum(len(g.edges(name)) for name in node.output if name)


def _makes_graph_output(g: _Graph, node) -> bool:
    return any(g.is_output(name) for name in node.output)


def _clip_made_redundant(g: _Graph, clip, q) -> bool:
    """onnxruntime's IsClipMadeRedundantByQ: Q's clamp does all the Relu or Clip does."""
    scale = _scalar(g, q.input[1])
    if scale is None or scale.dtype != np.float32:
        return False
    if len(q.input) > 2 and q.input[2]:
        zp = _scalar(g, q.input[2])
        if zp is None or g.types.get(q.input[2]) not in TYPE_RANGE:
            return False
        lo, hi = TYPE_RANGE[g.types[q.input[2]]]
        zp = int(zp.reshape(()))
    else:
        lo, hi = TYPE_RANGE.get(attr(q, "output_dtype", 0) or UINT8, (None, None))
        zp = 0
        if lo is None:
            return False
    if clip.op_type == "Relu":
        return zp == lo
    bounds = _clip_bounds(g, clip)
    if bounds is None:
        return False
    s = np.float32(scale.reshape(()))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        q_min = _to_int32(np.float32(bounds[0]) / s) + zp
        q_max = _to_int32(np.float32(bounds[1]) / s) + zp
    return q_min <= lo and q_max >= hi


def _to_int32(v) -> int:
    """C's ``static_cast<int32_t>(rint(v))`` as x86-64 computes it: a value out of int32's range
    (an unbounded Clip's float max over the scale, infinities, NaN) becomes INT32_MIN, so a Clip
    without an upper bound is never redundant."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.rint(np.float64(v))
    if not np.isfinite(r) or not -2.0 ** 31 <= r < 2.0 ** 31:
        return -2 ** 31
    return int(r)


def _clip_bounds(g: _Graph, clip):
    f32 = np.finfo(np.float32)
    if not clip.input[1:] and (attr(clip, "min") is not None or attr(clip, "max") is not None):
        return attr(clip, "min", float(f32.min)), attr(clip, "max", float(f32.max))
    bounds = []
    for k, default in ((1, f32.min), (2, f32.max)):
        name = clip.input[k] if len(clip.input) > k else ""
        if not name:
            bounds.append(float(default))
            continue
        v = _scalar(g, name)
        if v is None:
            return None
        bounds.append(float(v.reshape(())))
    return bounds


@dataclass
class Unit:
    """A selected node unit: the target, its DQ and Q nodes and a redundant Relu/Clip."""
    target: onnx.NodeProto
    dqs: list
    qs: list
    clip: onnx.NodeProto | None = None


def _unit(g: _Graph, node) -> Unit | None:
    """onnxruntime's GetQDQSelection: the DQ parents, the redundant clip and the Q children."""
    clip = None
    if _edges_out(g, node) == 1:
        (nxt, _slot), = [e for name in node.output if name for e in g.edges(name)]
        if (nxt.op_type in ("Relu", "Clip") and nxt.domain in ("", "ai.onnx")
                and _edges_out(g, nxt) == 1 and not _makes_graph_output(g, nxt)):
            clip = nxt
    qs = _q_children(g, clip if clip is not None else node)
    if clip is not None and (len(qs) != 1 or not _clip_made_redundant(g, clip, qs[0])):
        return None
    return Unit(node, _dq_parents(g, node), qs, clip)


def _group_ok(g: _Graph, u: Unit) -> bool:
    """onnxruntime's NodeGroup::CanCreateNodeGroup."""
    for d in u.dqs:
        if _makes_graph_output(g, d):
            return False
        reads = [r for name in d.output for r, _ in g.edges(name)]
        if len(reads) != 1 or reads[0] is not u.target:
            return False
    if u.qs:
        source = u.clip if u.clip is not None else u.target
        for name in source.output:
            kinds = {is_op(r, Q_OP) for r, _ in g.edges(name)}
            if len(kinds) > 1:
                return False
            if kinds == {True} and g.is_output(name):
                return False
    return True


def _check_qdq(g: _Graph, u: Unit, num_dq: int = -1, empty_q_ok: bool = False) -> bool:
    """onnxruntime's CheckQDQNodes: the unit's shape (DQ count, one Q per output, no other
    reader of the target's outputs, no graph output)."""
    if num_dq == -1:
        num_dq = sum(1 for x in u.target.input if x)
    if num_dq != len(u.dqs) or not _group_ok(g, u):
        return False
    if not u.qs:
        return empty_q_ok
    outputs = sum(1 for x in u.target.output if x)
    return (outputs == len(u.qs) == _edges_out(g, u.target)
            and not _makes_graph_output(g, u.target))


def _types(g: _Graph, u: Unit) -> tuple[list, list]:
    return [_dq_type(g, d) for d in u.dqs], [_q_type(g, q) for q in u.qs]


# ---- selectors: one per family of rules ------------------------------------------------------

def _select_drop(g, u, allow16=True, positive_scale=False):
    """DQ -> op -> Q around an op that moves or picks values (DropQDQNodesSelector)."""
    if u.clip is not None or not _check_qdq(g, u, 1):
        return False
    (t_in,), (t_out,) = _types(g, u)
    if t_in is None or t_in != t_out or (not allow16 and t_in in BITS16) or t_in in BITS4:
        return False
    if u.target.input[0] != u.dqs[0].output[0]:
        return False
    q, dq = u.qs[0], u.dqs[0]
    if positive_scale and not _positive_scale(g, q):
        return False
    return _same_qparams(g, q, dq)


def _select_split(g, u):
    """DQ -> Split -> one Q per output, each with the DQ's scale and zero point (SplitSelector)."""
    if u.clip is not None or not _check_qdq(g, u, 1):
        return False
    dq = u.dqs[0]
    t_in = _dq_type(g, dq)
    if t_in is None or t_in in BITS4:
        return False
    return all(_q_type(g, q) == t_in and _same_qparams(g, q, dq) for q in u.qs)


def _select_drop_dq(g, u):
    """DQ -> ArgMax (DropDQNodesSelector): the DQ's zero point must be given."""
    if u.clip is not None or len(u.dqs) != 1 or not _group_ok(g, u):
        return False
    dq = u.dqs[0]
    t_in = _dq_type(g, dq)
    if t_in is None or t_in in BITS16 or t_in in BITS4:
        return False
    return (_scalar(g, dq.input[1]) is not None and len(dq.input) > 2
            and _scalar(g, dq.input[2]) is not None)


def _select_same_types(g, u, num_dq=-1):
    """Unary, binary, variadic and Where units: every DQ input and Q output of one 8-bit type."""
    if not _check_qdq(g, u, num_dq):
        return False
    ins, outs = _types(g, u)
    kinds = set(ins) | set(outs)
    return len(kinds) == 1 and None not in kinds and not kinds & set(BITS16 + BITS4)


def _select_conv(g, u):
    """DQ x, DQ w [, DQ bias] -> Conv -> Q (ConvNodeGroupSelector)."""
    if not _check_qdq(g, u):
        return False
    ins, (t_out,) = _types(g, u)
    t_x, t_w = ins[0], ins[1]
    if t_x is None or t_x != t_out or t_w in BITS4 or t_x in BITS16 or t_w in BITS16:
        return False
    if t_x == INT8 and (not INT8_ACTIVATIONS_ALLOWED or t_w != t_x):
        return False
    return len(ins) < 3 or ins[2] == INT32


def _select_matmul(g, u):
    """DQ, DQ -> MatMul [-> Q] (MatMulNodeGroupSelector)."""
    if len(u.dqs) != 2:
        return False
    t_a, t_b = _types(g, u)[0]
    if t_a is None or t_b is None:
        return False
    if t_a == INT8 and (not INT8_ACTIVATIONS_ALLOWED or t_b != t_a):
        return False
    if {t_a, t_b} & set(BITS16 + BITS4):
        return False
    if not u.qs:
        return True            # MatMulIntegerToFloat
    return _check_qdq(g, u) and t_a == _q_type(g, u.qs[0])


def _select_gemm(g, u):
    """DQ A, DQ B [, DQ C] -> Gemm [-> Q] (GemmNodeGroupSelector)."""
    if not _check_qdq(g, u, empty_q_ok=True):
        return False
    ins, outs = _types(g, u)
    t_a, t_b = ins[0], ins[1]
    if t_a is None or t_b is None or (t_a == INT8 and t_b != INT8):
        return False
    if outs and outs[0] != t_a:
        return False
    if {t_a, t_b} & set(BITS16 + BITS4):
        return False
    if len(ins) < 3:
        return True
    return attr(u.target, "beta", 1.0) == 1.0 and ins[2] == INT32


# ---- actions ---------------------------------------------------------------------------------

def _with_zero_points(g: _Graph, u: Unit) -> None:
    """onnxruntime's SetOptionalZeroPoint: a DQ or Q of the unit without a zero point gets an
    explicit one (int8 for a DQ of int8 values, else uint8)."""
    for n in u.dqs + u.qs:
        if len(n.input) > 2 and n.input[2]:
            continue
        signed = is_op(n, DQ_OP) and g.types.get(n.input[0]) == INT8
        zp = g.zero_point(INT8 if signed else UINT8)
        while len(n.input) < 3:
            n.input.append("")
        n.input[2] = zp


def _replace(g: _Graph, u: Unit, op_type: str, domain: str, inputs: list, outputs: list,
             attributes: list) -> None:
    """Remove the unit's nodes; the new node takes the target's name."""
    g.remove(u.dqs + u.qs + [u.target] + ([u.clip] if u.clip is not None else []))
    node = g.node(op_type, inputs, outputs, name=u.target.name, ms=domain == MS)
    node.attribute.extend(attributes)
    g.counts[f"{domain + '.' if domain else ''}{op_type}"] += 1


def _qparams(node) -> list:
    return list(node.input[1:3])


def _act_drop(g, u):
    target, q, dq = u.target, u.qs[0], u.dqs[0]
    inputs = [dq.input[0], *target.input[1:]]
    outputs = [q.output[0], *target.output[1:]]
    _replace(g, u, target.op_type, target.domain, inputs, outputs, list(target.attribute))


def _act_split(g, u):
    target, dq = u.target, u.dqs[0]
    by_name = {q.input[0]: q.output[0] for q in u.qs}
    inputs = [dq.input[0], *target.input[1:2]]
    _replace(g, u, "Split", target.domain, inputs, [by_name[o] for o in target.output],
             list(target.attribute))


def _act_drop_dq(g, u):
    target, dq = u.target, u.dqs[0]
    _replace(g, u, target.op_type, target.domain, [dq.input[0], *target.input[1:]],
             list(target.output), list(target.attribute))


def _act_unary(g, u):
    _with_zero_points(g, u)
    target, q, dq = u.target, u.qs[0], u.dqs[0]
    attrs = list(target.attribute)
    if target.op_type == "Softmax":
        attrs.append(helper.make_attribute("opset", g.since(target)))
    _replace(g, u, "QLinear" + target.op_type, MS, [*dq.input[:3], *_qparams(q)],
             list(q.output), attrs)


def _act_binary(g, u):
    _with_zero_points(g, u)
    target, q = u.target, u.qs[0]
    a, b = u.dqs
    _replace(g, u, "QLinear" + target.op_type, MS, [*a.input[:3], *b.input[:3], *_qparams(q)],
             list(q.output), list(target.attribute))


def _act_concat(g, u):
    _with_zero_points(g, u)
    target, q = u.target, u.qs[0]
    inputs = _qparams(q)
    for d in u.dqs:
        inputs += list(d.input[:3])
    _replace(g, u, "QLinearConcat", MS, inputs, list(q.output), list(target.attribute))


def _act_where(g, u):
    _with_zero_points(g, u)
    target, q = u.target, u.qs[0]
    x, y = u.dqs
    _replace(g, u, "QLinearWhere", MS, [target.input[0], *x.input[:3], *y.input[:3], *_qparams(q)],
             list(q.output), list(target.attribute))


def _act_conv(g, u):
    _with_zero_points(g, u)
    target, q = u.target, u.qs[0]
    x, w = u.dqs[0], u.dqs[1]
    inputs = [*x.input[:3], *w.input[:3], *_qparams(q)]
    if len(u.dqs) > 2:
        inputs.append(u.dqs[2].input[0])
    _replace(g, u, "QLinearConv", "", inputs, list(q.output), list(target.attribute))


def _act_matmul(g, u):
    _with_zero_points(g, u)
    target = u.target
    a, b = u.dqs
    if u.qs:
        q = u.qs[0]
        _replace(g, u, "QLinearMatMul", "", [*a.input[:3], *b.input[:3], *_qparams(q)],
                 list(q.output), [])
    else:
        inputs = [a.input[0], b.input[0], a.input[1], b.input[1], a.input[2], b.input[2]]
        _replace(g, u, "MatMulIntegerToFloat", MS, inputs, list(target.output), [])


def _act_gemm(g, u):
    _with_zero_points(g, u)
    target = u.target
    a, b = u.dqs[:2]
    inputs = [*a.input[:3], *b.input[:3]]
    bias = u.dqs[2].input[0] if len(u.dqs) > 2 else ""
    attrs = [a for a in target.attribute if a.name != "beta"]
    if u.qs:
        q = u.qs[0]
        _replace(g, u, "QGemm", MS, [*inputs, bias, *_qparams(q)], list(q.output), attrs)
    else:
        _replace(g, u, "QGemm", MS, [*inputs, bias], list(target.output), attrs)


@dataclass(frozen=True)
class Rule:
    """One of onnxruntime's selector/action pairs: the ops (and since-versions) it applies to."""
    name: str
    ops: tuple
    select: object
    action: object
    since: tuple = ()


RULES = (
    Rule("dropSplitQDQ", ("Split",), _select_split, _act_split),
    Rule("drop_no_int16_support", ("Resize",),
         lambda g, u: _select_drop(g, u, allow16=False), _act_drop),
    Rule("drop_no_int16_support_and_positive_scale", ("MaxPool",),
         lambda g, u: _select_drop(g, u, allow16=False, positive_scale=True), _act_drop, (12,)),
    Rule("drop_no_int16_support_and_positive_scale", ("ReduceMax", "ReduceMin"),
         lambda g, u: _select_drop(g, u, allow16=False, positive_scale=True), _act_drop),
    Rule("drop", ("Expand", "Flatten", "Gather", "GatherElements", "Reshape", "Slice", "Squeeze",
                  "Tile", "Transpose", "Unsqueeze"), _select_drop, _act_drop),
    Rule("dropDQ", ("ArgMax",), _select_drop_dq, _act_drop_dq),
    Rule("1DQ", ("AveragePool", "LeakyRelu", "GlobalAveragePool", "Sigmoid", "Softmax"),
         lambda g, u: _select_same_types(g, u, 1), _act_unary),
    Rule("2DQ", ("Add", "Mul"), _select_same_types, _act_binary),
    Rule("*DQ", ("Concat",), _select_same_types, _act_concat),
    Rule("Conv", ("Conv",), _select_conv, _act_conv),
    Rule("MatMul", ("MatMul",), _select_matmul, _act_matmul),
    Rule("Gemm", ("Gemm",), _select_gemm, _act_gemm),
    Rule("Where", ("Where",), lambda g, u: _select_same_types(g, u, 2), _act_where),
)
_BY_OP: dict = {}
for _rule in RULES:
    for _op in _rule.ops:
        _BY_OP.setdefault(_op, []).append(_rule)


# ---- the passes ------------------------------------------------------------------------------

def _eliminate_identity(g: _Graph) -> None:
    """Level-1 rewrite rule EliminateIdentity: an Identity's readers read its input instead; one
    that gives a graph output (and has no reader) hands that name to the node producing its
    input, when nothing else reads that value and it is not a graph output itself. The same
    values, one node fewer."""
    for node in list(g.nodes):
        if node.op_type != "Identity" or node.domain not in ("", "ai.onnx"):
            continue
        src, out = node.input[0], node.output[0]
        if g.is_output(out) and g.readers(out):
            continue
        if src in g.types:
            g.types.setdefault(out, g.types[src])
        if g.bypass(node):
            g.counts["Identity removed"] += 1


def _relu_clip_before_q(g: _Graph) -> None:
    """Level-1 rewrite rules ReluQuantFusion and ClipQuantFusion: a Relu or Clip whose only reader
    is a QuantizeLinear that clamps as much is removed (the Q reads the Relu's or Clip's input)."""
    f32 = np.float32
    for node in list(g.nodes):
        if node.domain not in ("", "ai.onnx") or node.op_type not in ("Relu", "Clip"):
            continue
        reads = g.edges(node.output[0])
        if len(reads) != 1 or reads[0][1] != 0 or g.is_output(node.output[0]):
            continue
        q = reads[0][0]
        if not is_op(q, Q_OP) or q.domain not in ("", "ai.onnx") or len(q.input) != 3:
            continue
        zp = g.constant(q.input[2])
        if zp is None or zp.size != 1 or zp.dtype not in (np.int8, np.uint8):
            continue
        lo, hi = TYPE_RANGE[INT8 if zp.dtype == np.int8 else UINT8]
        z = int(zp.reshape(-1)[0])
        if node.op_type == "Relu":
            if z != lo:
                continue
        else:
            if g.since(node) not in (1, 6, 11, 12, 13) or g.since(q) not in (10, 13):
                continue
            bounds, scale = _clip_bounds(g, node), g.constant(q.input[1])
            if (bounds is None or scale is None or scale.ndim != 0 or scale.dtype != f32
                    or zp.ndim != 0):
                continue
            lower, upper = scale * f32(lo - z), scale * f32(hi - z)
            eps = np.finfo(f32).eps
            if eps < f32(bounds[0]) - lower or eps < upper - f32(bounds[1]):
                continue
        q.input[0] = node.input[0]
        g.remove([node])
        g.counts[f"{node.op_type} before Q removed"] += 1


def _unique_dqs(g: _Graph) -> None:
    """EnsureUniqueDQForNodeUnit: one DQ per reading input (subgraph reads keep the original)."""
    for dq in [n for n in g.nodes if is_op(n, DQ_OP)]:
        reads = g.edges(dq.output[0])
        explicit = [(r, slot) for r, slot in reads if slot >= 0]
        keep_original = len(explicit) < len(reads) or g.is_output(dq.output[0])
        if not explicit or (len(reads) == 1 and not keep_original):
            continue
        for r, slot in explicit[0 if keep_original else 1:]:
            name = g.fresh(dq.output[0] + "/duplicated")
            copy = onnx.NodeProto()
            copy.CopyFrom(dq)
            copy.name = g.fresh((dq.name or dq.output[0]) + "/duplicated")
            copy.output[0] = name
            g.types[name] = g.types.get(dq.output[0])
            g.nodes.append(copy)
            r.input[slot] = name
        g.changed()
    g.toposort()


def _s8_to_u8(g: _Graph, weights_to_u8: bool) -> None:
    """QDQS8ToU8Transformer: int8 Q -> DQ pairs to uint8, and with ``weights_to_u8`` the DQs of
    constant int8 weights."""
    for node in list(g.nodes):
        if is_op(node, Q_OP):
            reads = g.edges(node.output[0])
            if len(reads) == 1 and not g.is_output(node.output[0]):
                r, slot = reads[0]
                if slot >= 0 and is_op(r, DQ_OP):
                    _pair_to_u8(g, node, r)
            continue
        # onnxruntime looks the DQ's readers up under the node's *name*, not its output's
        if weights_to_u8 and is_op(node, DQ_OP) and not any(
                is_op(r, t) for r in g.readers(node.name) for t in ("MatMul", "Conv", "Gemm")):
            _weight_to_u8(g, node)


def _pair_to_u8(g: _Graph, q, dq) -> None:
    if len(q.input) != 3 or len(dq.input) != 3:
        return
    qz, dz = g.constant(q.input[2]), g.constant(dq.input[2])
    if qz is None or dz is None or qz.size != 1 or dz.size != 1:
        return
    if qz.dtype != np.int8 or dz.dtype != np.int8 or qz.reshape(()) != dz.reshape(()):
        return
    zp = g.add_initializer(g.fresh("qdq_s8_to_u8_zp"),
                           np.array(int(qz.reshape(())) + 128, np.uint8))
    q.input[2] = dq.input[2] = zp
    g.changed()
    g.types[q.output[0]] = UINT8
    g.retyped.add(q.output[0])
    g.counts["QDQS8ToU8 pair"] += 1


def _weight_to_u8(g: _Graph, dq) -> None:
    w = g.constant(dq.input[0])
    if w is None or w.dtype != np.int8:
        return
    zp = None
    if len(dq.input) > 2 and dq.input[2]:
        zp = g.constant(dq.input[2])
        if zp is None or zp.dtype != np.int8:
            return
    if w.size == 0 or (int(w.min()) >= -64 and int(w.max()) <= 63):
        return            # every weight fits in 7 bits: onnxruntime keeps int8
    u8 = (w.astype(np.int16) + 128).astype(np.uint8)
    dq.input[0] = g.add_initializer(g.fresh(dq.input[0] + "_u8"), u8)
    zp_u8 = (np.zeros((), np.int16) if zp is None else zp.astype(np.int16)) + 128
    while len(dq.input) < 3:
        dq.input.append("")
    dq.input[2] = g.add_initializer(g.fresh((dq.input[2] or dq.input[0]) + "_zp_u8"),
                                    zp_u8.astype(np.uint8))
    g.counts["QDQS8ToU8 weight"] += 1
    g.changed()


def _selector_actions(g: _Graph) -> None:
    """QDQSelectorActionTransformer: each node in topological order against its op's rules (the
    nodes a replacement adds are not visited)."""
    for node in list(g.nodes):
        if not g.alive(node) or node.domain not in ("", "ai.onnx"):
            continue
        for rule in _BY_OP.get(node.op_type, ()):
            if rule.since and g.since(node) not in rule.since:
                continue
            u = _unit(g, node)
            if u is not None and rule.select(g, u):
                rule.action(g, u)
                break


def _final_cleanup(g: _Graph) -> None:
    """QDQFinalCleanupTransformer: DQ -> Q with equal scale and zero point is the identity on
    8-bit values; the pair goes, its readers read the DQ's input (a graph output gets an
    Identity)."""
    for dq in list(g.nodes):
        if not g.alive(dq) or not is_op(dq, DQ_OP) or g.is_output(dq.output[0]):
            continue
        reads = g.edges(dq.output[0])
        if len(reads) != 1 or reads[0][1] < 0:
            continue
        q = reads[0][0]
        if not is_op(q, Q_OP) or not _same_qparams(g, q, dq):
            continue
        out, later = q.output[0], g.edges(q.output[0])
        if g.is_output(out):
            if later:
                continue
            g.node("Identity", [dq.input[0]], [out], name=q.name)
        elif any(slot < 0 for _, slot in later):
            continue          # read inside a subgraph: renaming there is not done
        else:
            g.rename_input(out, dq.input[0])
        g.remove([dq, q])
        g.counts["DQ -> Q removed"] += 1


# ---- entry point -----------------------------------------------------------------------------

@dataclass
class Result:
    """What :func:`fuse_qdq` did: the model to run and a count per replacement made."""
    model: onnx.ModelProto
    counts: Counter


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in (Q_OP, DQ_OP) for n in model.graph.node)


def fuse_qdq(model: onnx.ModelProto, blobs: dict | None = None,
             weights_to_u8: bool = False) -> Result:
    """onnxruntime's level-2 QDQ rewrites of ``model``'s main graph (see the module docstring).
    ``model`` is not modified; weights read beside the proto (``blobs``, see
    :func:`refrt.graph.load_model`) stay there. ``weights_to_u8``: also turn constant int8
    weights into uint8, as onnxruntime does only in its AVX2 precision mode (session config
    ``session.x64quantprecision=1`` on a CPU whose u8 x s8 products saturate)."""
    from ..graph.required_ops import since_version

    if any((is_op(n, Q_OP) or is_op(n, DQ_OP)) and (len(n.input) < 2 or not n.input[1] or not n.output)
           for n in model.graph.node):
        # a Q or DQ without its scale (or output) is malformed: left as it is, for the planner
        # to name the node at fault
        return Result(model, Counter())
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    g = _Graph(model, blobs, lambda n: since_version(n.op_type, n.domain, opset))
    for n in g.nodes:       # a Q's output type is its zero point's
        if is_op(n, Q_OP) and n.output[0] not in g.types:
            g.types[n.output[0]] = _q_type(g, n)
    g.toposort()
    _eliminate_identity(g)
    _relu_clip_before_q(g)
    _unique_dqs(g)
    if not INT8_ACTIVATIONS_ALLOWED:
        _s8_to_u8(g, weights_to_u8)
    _selector_actions(g)
    _final_cleanup(g)
    g.toposort()

    out = g.to_model()
    keep = [vi for vi in out.graph.value_info if vi.name not in g.retyped]
    del out.graph.value_info[:]
    out.graph.value_info.extend(keep)
    return Result(out, g.counts)
