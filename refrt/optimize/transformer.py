"""refrt's transformer optimizer: onnxruntime's BERT fusions, one small rule each.

    from refrt.optimize import optimize_model
    result = optimize_model("bert.onnx", model_type="bert", num_heads=12, hidden_size=768)
    onnx.save(result.model, "bert_opt.onnx")
    print(result.summary())

An exported BERT spells each of its layers out in dozens of small ONNX ops: a layer norm is nine
of them, GELU five, one attention head block about twenty. onnxruntime's transformer optimizer
(``onnxruntime.transformers.optimizer.optimize_model(model_type="bert")``) finds those spellings
and replaces each by one fused operator of its ``com.microsoft`` domain (Attention,
SkipLayerNormalization, ...), which its kernels run in one pass. This module makes the same
replacements, in the same order, under the same conditions, so that refrt's optimized model is
the one onnxruntime's optimizer writes (the same fused ops, the same Attention weights) and can
be run, and quantized, the same way.

The passes, in onnxruntime's order (``BertOnnxModel.optimize``), each a function below whose
docstring draws the pattern and names the onnxruntime fusion it mirrors:

==  ===========================  =====================================================
 1  remove Identity nodes         ``EliminateIdentity`` (level-1 rewrite rule)
 2  fold constants                ``ConstantFolding`` (level 1): constant-only nodes, and
                                  Shape/Size of statically known shapes
 3  remove useless Casts          ``OnnxModel.remove_useless_cast_nodes``
 4  LayerNormalization            ``FusionLayerNormalization``
 5  Gelu, FastGelu                ``FusionGelu``, ``FusionFastGelu``
 6  Reshape shapes                ``FusionReshape``: Concat(Shape dims, N, H) -> [0, 0, N, H]
                                  (``transformer_attention.py``, where the heads are read)
 7  SkipLayerNormalization        ``FusionSkipLayerNormalization``
 8  Attention                     ``FusionAttention`` (``transformer_attention.py``)
 9  EmbedLayerNormalization       ``FusionEmbedLayerNormalization`` (ditto)
10  remove useless Reshapes       ``FusionUtils.remove_useless_reshape_nodes``
11  prune                         ``OnnxModel.prune_graph``: nodes no output needs
12  BiasGelu / FastGelu(bias)     ``FusionBiasGelu``
13  SkipLayerNormalization(bias)  ``FusionBiasSkipLayerNormalization``
==  ===========================  =====================================================

Passes 1 and 2 are what onnxruntime's own graph optimizer does at ``ORT_ENABLE_BASIC`` before the
Python fusions run (``optimize_model``'s default ``opt_level=1``); on exported BERTs with symbolic
batch and sequence sizes nothing but Identity goes: the position ids' Shape -> Gather -> Range
-> Unsqueeze chain depends on the input's runtime shape and stays, as in onnxruntime's output.

Where this differs from onnxruntime, on purpose (each keeps the model's values where
onnxruntime's fusion would change them; none changes a count on the exported BERTs measured):

* matched intermediate values must not be graph outputs (onnxruntime checks other readers only);
* ReduceMean (LayerNormalization) and LayerNormalization (SkipLayerNormalization) must work on
  the last axis, Transposes around Attention must have attention's permutations, and an
  attention scale other than 1/sqrt(head_size) is written as Attention's ``scale`` attribute;
* a LayerNormalization without an ``epsilon`` attribute keeps its default 1e-5 in the fused
  node (onnxruntime writes 1e-12 there);
* the mask's Sub must subtract from 1 and its Unsqueezes give [batch, 1, 1, seq].

Not mirrored (onnxruntime fuses more there; refrt leaves the nodes as they are): LayerNorm
spellings with Casts inside (mixed precision), the TensorFlow LayerNorm spelling, QuickGelu and
the two FastGelu spellings of TensorFlow and Megatron, SimplifiedLayerNormalization (RMSNorm),
rotary embeddings, MultiHeadAttention, Attention with past state or a relative position bias
(DistilBERT's Where masks, ``path3``/``path4``), a query scaled before its MatMul, ALBERT's
Einsum, the SDPA spelling, FusionReshape's -1 forms, FusionShape, and the QOrdered* ops of
quantized models.

Shapes come from running the model (``rewrite.Shapes``) where onnxruntime uses symbolic shape
inference; a model refrt cannot run keeps its Add + LayerNormalization pairs and embeddings
unfused, with a note saying why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from ..errors import ModelError, RefrtError
from .rewrite import Graph, Shapes, attr, is_op, other_input

SUPPORTED_MODEL_TYPES = ("bert",)

# The fused ops onnxruntime's optimizer counts (``BertOnnxModel.get_fused_operator_statistics``).
FUSED_OPS = ("EmbedLayerNormalization", "Attention", "Gelu", "FastGelu", "BiasGelu",
             "LayerNormalization", "SkipLayerNormalization")


class OptimizeError(RefrtError, ValueError):
    """The optimizer was asked for a model type or sizes it does not support."""


@dataclass
class OptimizeResult:
    """What :func:`optimize_model` made: the optimized model, how many times each rule fired
    (``fusions``), the node counts before and after, and notes on what could not be done."""
    model: onnx.ModelProto
    fusions: Counter
    nodes_before: int
    nodes_after: int
    notes: list = field(default_factory=list)

    def op_counts(self) -> Counter:
        """Op type -> number of nodes in the optimized graph."""
        return Counter(n.op_type for n in self.model.graph.node)

    def fused_op_counts(self) -> dict:
        """The fused ops of the optimized graph, as onnxruntime's optimizer reports them."""
        counts = self.op_counts()
        return {op: counts[op] for op in FUSED_OPS}

    def summary(self) -> str:
        lines = [f"nodes: {self.nodes_before} -> {self.nodes_after}"]
        lines += [f"  {name}: {count}" for name, count in self.fusions.items() if count]
        if not any(self.fusions.values()):
            lines.append("  nothing fused")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


class Run:
    """One optimization: the graph, the sizes, the counts, the notes, and the model's shapes
    (observed on first use, see ``rewrite.Shapes``)."""

    def __init__(self, graph: Graph, num_heads: int, hidden_size: int):
        self.g, self.num_heads, self.hidden_size = graph, num_heads, hidden_size
        self.counts: Counter = Counter()
        self.notes: list = []
        self.masks: dict = {}          # 2-D attention mask -> its mask index (Attention input 3)
        self._shapes = None

    def shapes(self) -> Shapes:
        """The shapes of the model's values, observed on the model as given: rewrites keep the
        names of the values they do not remove (a folded constant, the output an Identity gave
        now given by its input's producer), so the model as given has them all."""
        if self._shapes is None:
            self._shapes = Shapes.observe(self.g.model)
            if not self._shapes:
                self.note(self._shapes.error + " (SkipLayerNormalization, EmbedLayerNormalization "
                          "and the rules that compare shapes are skipped)")
        return self._shapes

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def _sole_reader(g: Graph, name: str, op_type: str):
    """The one node reading ``name`` when it runs ``op_type``, else None."""
    readers = g.readers(name)
    return readers[0] if len(readers) == 1 and is_op(readers[0], op_type) else None


def _vector(g: Graph, name: str) -> bool:
    v = g.constant(name)
    return v is not None and v.ndim == 1


# ---- 1-3: what onnxruntime's basic level and the optimizer's clean-up do first -------------------

def remove_identity(r: Run) -> None:
    """``x -> Identity -> y``: readers of y read x (onnxruntime's ``EliminateIdentity``; one that
    gives a graph output hands that name to the node producing x, if x has no other reader)."""
    for node in r.g.nodes_of("Identity"):
        if r.g.bypass(node):
            r.counts["Identity removed"] += 1


def remove_useless_casts(r: Run) -> None:
    """``x -> Cast(to=type of x) -> y``: a Cast that changes nothing goes, as an Identity
    (onnxruntime's ``OnnxModel.remove_useless_cast_nodes``)."""
    casts = r.g.nodes_of("Cast")
    if not casts:
        return
    for node in casts:
        src = node.input[0]
        if src in r.g.inputs:
            have = r.g.inputs[src].type.tensor_type.elem_type
        elif src in r.g.inits:
            have = r.g.inits[src].data_type
        else:
            dtype = r.shapes().dtype(src)
            have = helper.np_dtype_to_tensor_dtype(dtype) if dtype is not None else None
        if have == attr(node, "to") and r.g.bypass(node):
            r.counts["Cast removed"] += 1


def fold_constants(r: Run) -> None:
    """Nodes whose inputs are all constant run once, now, and their outputs become initializers
    (onnxruntime's ``ConstantFolding``); so does ``Shape``/``Size`` of a value whose shape ONNX
    shape inference knows in full::

        [1, 128] input_ids -> Shape -> Gather(1) -> Range(0, ., 1) -> Unsqueeze   (all folded)
        [batch, seq] input_ids -> Shape -> ...                                    (all kept)

    Not folded, as in onnxruntime: random ops, DequantizeLinear (a QDQ weight keeps its node),
    nodes with subgraphs, and nodes giving a graph output."""
    from ..session import run

    g = r.g
    known = {name for name in g.inits if name not in g.inputs}
    static: dict | None = None
    folded, shape_values = [], {}
    for node in g.toposorted():
        if not _foldable(g, node):
            continue
        if node.op_type in ("Shape", "Size") and not all(x in known for x in node.input if x):
            if static is None:
                static = _static_shapes(g)
            dims = static.get(node.input[0])
            if dims is None:
                continue
            if node.op_type == "Size":
                shape_values[node.output[0]] = np.array(int(np.prod(dims)), np.int64)
            else:
                start, end = attr(node, "start", 0), attr(node, "end", len(dims))
                shape_values[node.output[0]] = np.array(dims[slice(start, end)], np.int64)
        elif not all(x in known for x in node.input if x):
            continue
        folded.append(node)
        known.update(o for o in node.output if o)
    ids = {id(n) for n in folded}
    needed = [o for n in folded for o in n.output
              if o and any(id(x) not in ids for x in g.readers(o))]
    body = [n for n in folded if n.output[0] not in shape_values]
    to_run = [name for name in needed if name not in shape_values]
    values = dict(shape_values)
    if to_run:
        reads = {x for n in body for x in n.input if x} - {o for n in body for o in n.output}
        inits = [g.inits[x] for x in sorted(reads) if x in g.inits]
        inits += [onnx.numpy_helper.from_array(v, k) for k, v in shape_values.items() if k in reads]
        sub = helper.make_graph(body, "constants", [], [helper.make_empty_tensor_value_info(n)
                                                        for n in to_run], inits)
        sub_model = helper.make_model(sub, opset_imports=list(g.model.opset_import))
        sub_model.ir_version = g.model.ir_version
        try:
            values.update(zip(to_run, run(sub_model, {}, to_run)))
        except Exception as e:   # the nodes stay: a run of the optimized model reports the error
            r.note(f"constant folding skipped: {e}")
            return
    if not needed or not all(isinstance(values[n], np.ndarray) for n in needed):
        return
    for name in needed:
        g.add_initializer(name, np.asarray(values[name]))
    g.remove(folded)
    r.counts["constants folded"] += len(folded)


def _foldable(g: Graph, node) -> bool:
    """An ONNX op that gives tensors (no sequence or optional), the same every run (no random
    op, no DequantizeLinear: a QDQ weight keeps its node in onnxruntime), has no subgraph, and
    gives no graph output."""
    from ..graph.fold import KEPT, NONDETERMINISTIC

    if (node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC
            or node.op_type in KEPT or any(g.is_output(o) for o in node.output)
            or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                   for a in node.attribute)):
        return False
    try:
        schema = onnx.defs.get_schema(node.op_type, g.opset, "")
    except onnx.defs.SchemaError:
        return False
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    return all(t.startswith("tensor(") for o in schema.outputs
               for t in allowed.get(o.type_str, [o.type_str]))


def _static_shapes(g: Graph) -> dict:
    """Value name -> dims, for the values whose shape ONNX shape inference knows in full (in the
    model as given, which has every name the rewrites keep)."""
    from ..quantization.model import infer_shapes

    try:
        model = infer_shapes(g.model)
    except Exception:        # inference refuses some graphs: then no shape is known statically
        return {}
    shapes = {}
    for vi in list(model.graph.input) + list(model.graph.value_info):
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.HasField("shape") and \
                all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[vi.name] = [d.dim_value for d in t.shape.dim]
    return shapes


# ---- 4: LayerNormalization ---------------------------------------------------------------------

def fuse_layer_norm(r: Run, mean) -> None:
    """onnxruntime's ``FusionLayerNormalization``, from the first ReduceMean::

          +--------------------------+
          |                          v
        root -> ReduceMean -------> Sub -> Pow(2) -> ReduceMean -> Add(eps) -> Sqrt -> Div
                                     |                                               ^
                                     +-----------------------------------------------+
        Div -> Mul(gamma) -> Add(beta)   ==>   LayerNormalization(root, gamma, beta, epsilon)

    Older PyTorch exports compute ``root - mean`` twice (two Subs reading the ReduceMean):
    accepted, as by onnxruntime. eps must be in (0, 1e-4], gamma and beta constant vectors, and
    (refrt's own check) both ReduceMeans over the last axis with keepdims."""
    g = r.g
    root, subs = mean.input[0], g.readers(mean.output[0])
    if not 1 <= len(subs) <= 2 or not all(is_op(s, "Sub") and s.input[0] == root for s in subs):
        return
    div = None
    for s in subs:      # onnxruntime takes the last Div reading a Sub
        div = next((d for d in reversed(g.readers(s.output[0])) if is_op(d, "Div")), None)
        if div is not None:
            break
    if div is None:
        return
    up = g.path(div, [("Sqrt", 1), ("Add", 0), ("ReduceMean", 0), ("Pow", 0), ("Sub", 0)])
    if up is None or not any(up[-1] is s for s in subs):
        return
    sqrt, add_eps, mean_sq, power = up[:4]
    _, eps = g.constant_input(add_eps)
    if eps is None or eps.size != 1 or not 0 < float(eps.reshape(-1)[0]) <= 1e-4:
        return
    if g.find_constant(power, 2.0) != 1 or not (_last_axis_mean(r, mean)
                                                 and _last_axis_mean(r, mean_sq)):
        return
    mul = _sole_reader(g, div.output[0], "Mul")
    add = g.readers(mul.output[0]) if mul is not None else []
    if not add or not is_op(add[0], "Add"):
        return
    add = add[0]
    gamma, beta = other_input(mul, div.output[0]), other_input(add, mul.output[0])
    if not (_vector(g, gamma) and _vector(g, beta)):
        return
    nodes = [mean, *subs, sqrt, add_eps, mean_sq, power, div, mul, add]
    if not g.safe_to_remove(nodes, keep=[add.output[0]]):
        return
    g.remove(nodes)
    g.node("LayerNormalization", [root, gamma, beta], [add.output[0]],
           g.fresh_name("LayerNorm"), epsilon=float(eps.reshape(-1)[0]))
    r.counts["LayerNormalization"] += 1


def _last_axis_mean(r: Run, mean) -> bool:
    """A ReduceMean over the last axis only, keeping it (axes an attribute, or from opset 18 an
    input)."""
    axes = r.g.axes(mean)
    if attr(mean, "keepdims", 1) != 1 or axes is None or len(axes) != 1:
        return False
    if axes[0] == -1:
        return True
    rank = r.shapes().rank(mean.input[0])
    return rank is not None and axes[0] == rank - 1


# ---- 5: Gelu and FastGelu ----------------------------------------------------------------------

def fuse_gelu(r: Run, erf) -> None:
    """onnxruntime's ``FusionGelu``: exactly these three erf spellings become com.microsoft Gelu
    (constants may be either input of their node)::

        1 (PyTorch)     x -> Div(1.4142) -> Erf -> Add(1) -> Mul(x, .) -> Mul(0.5)
                        or                           Add(1) -> Mul(Mul(x, 0.5), .)
        2 (Keras)       x -> Div(1.4142 or Sqrt(2)) -> Erf -> Add(1) -> Mul(0.5) -> Mul(x, .)
        3 (TensorFlow)  x -> Mul(0.7071) -> Erf -> Add(1) -> Mul(0.5) -> Mul(x, .)

    Any other grouping, e.g. ``Mul(Mul(x, 0.5), Add(Erf(Mul(x, 0.7071)), 1))``, is left alone, as
    onnxruntime leaves it. In spellings 2 and 3, x must be a node's output (not a graph input)."""
    g = r.g
    add = _sole_reader(g, erf.output[0], "Add")
    if add is None or g.find_constant(add, 1.0) < 0:
        return
    mul = _sole_reader(g, add.output[0], "Mul")
    if mul is None:
        return
    _first_spelling(r, "Gelu", (_gelu_pytorch, _gelu_keras, _gelu_tensorflow), erf, add, mul)


def _first_spelling(r: Run, op_type: str, spellings, *found_so_far) -> None:
    """The first of ``spellings`` that matches (each returns x and the matched nodes, the last
    giving the result) is replaced by ``op_type(x)``, when nothing else reads inside it."""
    g = r.g
    for spelling in spellings:
        found = spelling(g, *found_so_far)
        if found is not None:
            x, nodes = found
            out = nodes[-1].output[0]
            if g.safe_to_remove(nodes, keep=[out]):
                g.remove(nodes)
                g.node(op_type, [x], [out], g.fresh_name(op_type), ms=True)
                r.counts[op_type] += 1
            return


def _gelu_pytorch(g: Graph, erf, add, mul):
    div, _ = g.match_parent(erf, "Div", 0)
    if div is None or g.find_constant(div, 1.4142, delta=0.001) != 1:
        return None
    x = div.input[0]
    other = 1 if mul.input[0] == add.output[0] else 0
    if mul.input[other] == x:                                 # Mul(x, .) -> Mul(0.5)
        half = _sole_reader(g, mul.output[0], "Mul")
        if half is None or g.find_constant(half, 0.5) < 0:
            return None
        return x, [div, erf, add, mul, half]
    half, _ = g.match_parent(mul, "Mul", other)               # Mul(Mul(x, 0.5), .)
    if half is None or g.find_constant(half, 0.5) < 0 or x not in half.input:
        return None
    return x, [div, erf, add, half, mul]


def _gelu_keras(g: Graph, erf, add, half):
    if g.find_constant(half, 0.5) < 0:
        return None
    last = _sole_reader(g, half.output[0], "Mul")
    div, _ = g.match_parent(erf, "Div", 0)
    if last is None or div is None:
        return None
    nodes = [div, erf, add, half, last]
    if g.find_constant(div, 1.4142, delta=0.001) != 1:
        sqrt, _ = g.match_parent(div, "Sqrt", 1)
        if sqrt is None or g.find_constant(sqrt, 2.0) < 0:
            return None
        nodes.insert(0, sqrt)
    root = g.parent(div, 0)
    if root is None or root.output[0] != div.input[0] or div.input[0] not in last.input:
        return None
    return div.input[0], nodes


def _gelu_tensorflow(g: Graph, erf, add, half):
    if g.find_constant(half, 0.5) < 0:
        return None
    first, _ = g.match_parent(erf, "Mul", 0)
    if first is None:
        return None
    i = g.find_constant(first, 0.7071067690849304, delta=0.001)
    if i < 0:
        return None
    root = g.parent(first, 1 - i)
    last = _sole_reader(g, half.output[0], "Mul")
    if root is None or last is None or root.output[0] != first.input[1 - i] \
            or root.output[0] not in last.input:
        return None
    return root.output[0], [first, erf, add, half, last]


def fuse_fast_gelu(r: Run, tanh) -> None:
    """onnxruntime's ``FusionFastGelu``, its two PyTorch spellings of GELU's tanh approximation
    ``0.5 x (1 + tanh(0.7978845608 (x + 0.044715 x^3)))`` -> com.microsoft FastGelu::

        1 (HF gelu_new)  x -> Pow(3) -> Mul(0.0447) -> Add(x, .) -> Mul(0.7978) -> Tanh
                         -> Add(1) -> Mul(Mul(x, 0.5), .)
        4 (PyTorch tanh) x -> Mul(x, x) -> Mul(x, .) -> Mul(0.0447) -> Add(x, .) -> Mul(0.7978)
                         -> Tanh -> Add(1) -> Mul(x, .) -> Mul(0.5)
    """
    g = r.g
    add = _sole_reader(g, tanh.output[0], "Add")
    if add is None or g.find_constant(add, 1.0) < 0:
        return
    mul = _sole_reader(g, add.output[0], "Mul")
    pre, _ = g.match_parent(tanh, "Mul", 0)
    if mul is None or pre is None:
        return
    _first_spelling(r, "FastGelu", (_fast_gelu_hf, _fast_gelu_pytorch), tanh, add, mul, pre)


def _tanh_argument(g: Graph, pre, delta: float):
    """The Add of ``x + 0.0447 x^3`` under ``pre`` = Mul(0.7978, .), or None."""
    i = g.find_constant(pre, 0.7978, delta=delta)
    if i < 0:
        return None
    return g.match_parent(pre, "Add", 1 - i)[0]


def _fast_gelu_hf(g: Graph, tanh, add, mul, pre):
    half, _ = g.match_parent(mul, "Mul")
    i = g.find_constant(half, 0.5) if half is not None else -1
    if i < 0:
        return None
    x = half.input[1 - i]
    inner = _tanh_argument(g, pre, 0.0001)
    root = g.producer(x)
    scaled, _ = (g.match_parent(inner, "Mul", exclude=[root] if root else ())
                 if inner is not None else (None, None))
    k = g.find_constant(scaled, 0.0447, delta=0.0001) if scaled is not None else -1
    if k < 0 or other_input(inner, scaled.output[0]) != x:    # refrt: x + 0.0447 x^3
        return None
    power, _ = g.match_parent(scaled, "Pow", 1 - k)
    if power is None or g.find_constant(power, 3.0) < 0 or power.input[0] != x:
        return None
    return x, [power, scaled, inner, pre, tanh, add, half, mul]


def _fast_gelu_pytorch(g: Graph, tanh, add, mul, pre):
    half = _sole_reader(g, mul.output[0], "Mul")
    if half is None or g.find_constant(half, 0.5) < 0:
        return None
    x = mul.input[0 if mul.input[1] == add.output[0] else 1]
    inner = _tanh_argument(g, pre, 0.01)
    if inner is None or x not in inner.input:
        return None
    scaled, _ = g.match_parent(inner, "Mul", 1 if inner.input[0] == x else 0)
    k = g.find_constant(scaled, 0.0447, delta=0.01) if scaled is not None else -1
    if k < 0:
        return None
    cube, _ = g.match_parent(scaled, "Mul", 1 - k)
    if cube is None or x not in cube.input:
        return None
    square, _ = g.match_parent(cube, "Mul", 1 if cube.input[0] == x else 0)
    if square is None or list(square.input) != [x, x]:
        return None
    return x, [square, cube, scaled, inner, pre, tanh, add, mul, half]


# ---- 7: SkipLayerNormalization -----------------------------------------------------------------

def fuse_skip_layer_norm(r: Run, ln) -> None:
    """onnxruntime's ``FusionSkipLayerNormalization``: a residual connection and its layer norm::

        Add(a, b) -> LayerNormalization(., gamma, beta)  ==>  SkipLayerNormalization(a, b, gamma,
                                                               beta)

    a and b must have one shape of rank 3, or b (the skip) be (1, S, H) or (S, H) for an a of
    (B, S, H), and neither be an initializer; an embedding sum (a Gather of ids that are not a
    graph input) is left to EmbedLayerNormalization. When the sum is read elsewhere too, the
    fused node gives it as its 4th output."""
    g = r.g
    add = g.parent(ln, 0)
    if not is_op(add, "Add") or len(add.input) != 2 or any(x in g.inits for x in add.input):
        return
    shapes = r.shapes()
    if not shapes:
        return
    skip, broadcast = _skip_index(shapes, add)
    if skip < 0:
        return
    gather, _ = g.match_parent(add, "Gather")
    if gather is not None and gather.input[1] not in g.inputs \
            and g.path(gather, [("ConstantOfShape", 1)]) is None:
        return
    if broadcast and any(is_op(g.parent(add, i), "Gather") for i in (0, 1)):
        return
    rank, axis = shapes.rank(ln.input[0]), attr(ln, "axis", -1)
    if axis not in (-1, (rank or 0) - 1):
        return
    shared = g.is_output(add.output[0]) or len(g.readers(add.output[0])) > 1
    keep = [ln.output[0]] + ([add.output[0]] if shared else [])
    if not g.safe_to_remove([add, ln], keep=keep):
        return
    g.remove([add, ln])
    outputs = [ln.output[0]] + (["", "", add.output[0]] if shared else [])
    inputs = [add.input[1 - skip], add.input[skip], ln.input[1],
              ln.input[2] if len(ln.input) > 2 else ""]
    g.node("SkipLayerNormalization", inputs, outputs, g.fresh_name("SkipLayerNorm"), ms=True,
           epsilon=float(attr(ln, "epsilon", 1e-5)))
    r.counts["SkipLayerNormalization"] += 1


def _skip_index(shapes: Shapes, add) -> tuple[int, bool]:
    """(which input of ``add`` is the skip, whether it broadcasts), or (-1, False)."""
    a, b = shapes.shape(add.input[0]), shapes.shape(add.input[1])
    if a is None or b is None:
        return -1, False
    if a == b:
        return (1, False) if len(a) == 3 else (-1, False)

    def broadcast_skip(x, s):
        one = (1, 1)
        return len(x) == 3 and (s == (one,) + x[1:] or s == x[1:])

    if broadcast_skip(a, b):
        return 1, True
    if broadcast_skip(b, a):
        return 0, True
    return -1, False


# ---- 10-13: clean-up and the bias folds ---------------------------------------------------------

def remove_useless_reshapes(r: Run) -> None:
    """A Reshape whose output has its input's shape (in both observed runs) goes
    (onnxruntime's ``remove_useless_reshape_nodes``)."""
    reshapes = r.g.nodes_of("Reshape")
    if not reshapes or not r.shapes():
        return
    for node in reshapes:
        before, after = r.shapes().shape(node.input[0]), r.shapes().shape(node.output[0])
        if before is not None and before == after and r.g.bypass(node):
            r.counts["Reshape removed"] += 1


def fuse_bias_gelu(r: Run, gelu) -> None:
    """onnxruntime's ``FusionBiasGelu``: the bias Add of a MatMul goes into the activation::

        MatMul -> Add(., bias) -> Gelu       ==>  MatMul -> BiasGelu(., bias)
        MatMul -> Add(., bias) -> FastGelu   ==>  MatMul -> FastGelu(., bias)

    bias: the first initializer input of the Add, a vector (refrt: as long as the MatMul's
    output rows, when its weight is constant)."""
    g = r.g
    if len(gelu.input) != 1:
        return
    up = g.path(gelu, [("Add", 0), ("MatMul", None)])
    if up is None:
        return
    add, matmul = up
    bias = next((x for x in add.input if x in g.inits), None)
    if bias is None or not _vector(g, bias) or not _fits(g, matmul, bias):
        return
    if not g.safe_to_remove([gelu, add], keep=[gelu.output[0]]):
        return
    g.remove([gelu, add])
    fused = "BiasGelu" if gelu.op_type == "Gelu" else "FastGelu"
    g.node(fused, [matmul.output[0], bias], [gelu.output[0]],
           g.fresh_name(f"{gelu.op_type}_AddBias"), ms=True)
    r.counts[f"{fused} (bias)" if fused == "FastGelu" else fused] += 1


def _fits(g: Graph, matmul, bias: str) -> bool:
    w = g.constant(matmul.input[1])
    return w is None or (w.ndim >= 1 and w.shape[-1] == g.constant(bias).size)


def fuse_bias_skip_layer_norm(r: Run, sln) -> None:
    """onnxruntime's ``FusionBiasSkipLayerNormalization``: the bias Add of a MatMul feeding a
    SkipLayerNormalization becomes its 5th input::

        MatMul -> Add(., bias) -> SkipLayerNormalization(., skip, gamma, beta)
            ==>  MatMul -> SkipLayerNormalization(., skip, gamma, beta, bias)

    The Add is the first of the node's two inputs made by an Add, the MatMul the first input of
    that Add made by a MatMul; bias a vector initializer."""
    g = r.g
    if len(sln.input) != 4:
        return
    slots: list = []
    up = g.path(sln, [("Add", None), ("MatMul", None)], slots)
    if up is None or slots[0] >= 2:
        return
    add = up[0]
    x, bias, skip = add.input[slots[1]], add.input[1 - slots[1]], sln.input[1 - slots[0]]
    if bias not in g.inits or not _vector(g, bias) or not _fits(g, up[1], bias):
        return
    if not g.safe_to_remove([sln, add], keep=list(sln.output)):
        return
    g.remove([sln, add])
    g.node("SkipLayerNormalization", [x, skip, sln.input[2], sln.input[3], bias], list(sln.output),
           g.fresh_name("SkipLayerNorm_AddBias"), ms=True,
           epsilon=float(attr(sln, "epsilon", 1e-12)))
    r.counts["SkipLayerNormalization (bias)"] += 1


# ---- the pipeline -------------------------------------------------------------------------------

def _each(r: Run, op_types, rule) -> None:
    """``rule(r, node)`` on every node of ``op_types`` present now, in list order, that no
    earlier application removed (onnxruntime's ``Fusion.apply``)."""
    for op_type in op_types:
        for node in r.g.nodes_of(op_type):
            if r.g.alive(node):
                rule(r, node)


def optimize_model(model, model_type: str = "bert", num_heads: int = 0,
                   hidden_size: int = 0) -> OptimizeResult:
    """onnxruntime's ``optimize_model(model, model_type="bert", num_heads, hidden_size)`` done by
    refrt: ``model`` (a ModelProto, its bytes or its path; not modified) -> :class:`OptimizeResult`.

    ``num_heads``/``hidden_size`` 0: detected from the graph where onnxruntime detects them (a
    constant Reshape shape [0, 0, heads, head_size] on the query); where they cannot be, Attention
    is not fused and a note says so."""
    from .transformer_attention import fuse_attention, fuse_embed_layer, fuse_reshape_shape

    if model_type not in SUPPORTED_MODEL_TYPES:
        raise OptimizeError(f"unknown model type {model_type!r}: refrt's transformer optimizer "
                            f"supports {', '.join(SUPPORTED_MODEL_TYPES)}")
    if num_heads < 0 or hidden_size < 0 or (num_heads == 0) != (hidden_size == 0) \
            or (num_heads and hidden_size % num_heads):
        raise OptimizeError(f"num_heads={num_heads}, hidden_size={hidden_size}: give both "
                            "(hidden_size a multiple of num_heads) or neither (0: detect them)")
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = _load(model)     # a path, or the serialized model
    if not isinstance(model, onnx.ModelProto) or not model.HasField("graph"):
        raise ModelError("optimize_model needs an ONNX ModelProto with a graph, or its path")
    g = Graph(model)
    r = Run(g, num_heads, hidden_size)
    before = len(g.nodes)
    remove_identity(r)
    fold_constants(r)
    remove_useless_casts(r)
    _each(r, ["ReduceMean"], fuse_layer_norm)
    _each(r, ["Erf"], fuse_gelu)
    _each(r, ["Tanh"], fuse_fast_gelu)
    _each(r, ["Reshape"], fuse_reshape_shape)
    if r.counts["Reshape shape"]:
        g.prune()
    _each(r, ["LayerNormalization"], fuse_skip_layer_norm)
    _each(r, ["SkipLayerNormalization", "LayerNormalization"], fuse_attention)
    if r.counts["Attention"]:
        g.prune()
    _each(r, ["LayerNormalization", "SkipLayerNormalization"], fuse_embed_layer)
    remove_useless_reshapes(r)
    g.prune()
    _each(r, ["FastGelu", "Gelu"], fuse_bias_gelu)
    _each(r, ["SkipLayerNormalization"], fuse_bias_skip_layer_norm)
    g.toposort()
    return OptimizeResult(g.to_model(), r.counts, before, len(g.nodes), r.notes)


def _load(path) -> onnx.ModelProto:
    try:
        return onnx.load_from_string(path) if isinstance(path, bytes) else onnx.load(path)
    except OSError as e:
        raise ModelError(f"cannot read model file {path!r}: {e.strerror or e}") from e
    except Exception as e:
        raise ModelError(f"{path!r}: not a valid ONNX model: {e}") from e
