"""onnxruntime's Attention and EmbedLayerNormalization fusions: passes 8 and 9 of the transformer
optimizer (``transformer.py``), the two rules that replace the most nodes; and pass 6, which
gives the query Reshape the constant shape Attention reads the number of heads from.

They work as a pair. Attention needs the attention mask as a *mask index* (how many tokens of
each row are real, the rest being padding at the end: onnxruntime's ``MaskIndexEnd``, its default
for BERT), so the first Attention fusion adds ``Cast(mask, int32) -> ReduceSum(axis 1)`` and
every layer reads that. EmbedLayerNormalization then computes the same count as its second
output, so it takes the mask in, the ReduceSum goes, and every Attention reads the embedding's
mask index instead::

    attention_mask -> Cast(int32) ----------------+
    input_ids -> Cast(int32) --+                  v
    token_type_ids -> Cast ----+--> EmbedLayerNormalization --(mask index)--> Attention ...
    position ids -> Cast ------+          |                                     ^
                                          +-----------(hidden states)-----------+

A mask index describes right padding only: a mask with holes (or left padding) gives other
results after these fusions than before them, in onnxruntime as in refrt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from .rewrite import Graph, attr, is_op, other_input

DEFAULT_MASK_FILTER = -10000.0
HEADS_PERM, KEYS_PERM = [0, 2, 1, 3], [0, 2, 3, 1]


# ---- 6: Reshape shapes from the input's own dims (where Attention reads the heads) --------

def fuse_reshape_shape(r, reshape) -> None:
    """onnxruntime's ``FusionReshape``, its main case: a Reshape whose shape is built from the
    reshaped value's own first two dims and constants::

        x -> Shape -> Gather(0) -> Unsqueeze --+
        x -> Shape -> Gather(1) -> Unsqueeze --+--> Concat -> Reshape(x, .)
                         constant N, constant H --+

    gets the constant shape [0, 0, N, H] (0: keep that dim of x), which is also where the
    Attention rule reads the number of heads. (onnxruntime adds a Constant node; refrt an
    initializer.)"""
    g = r.g
    concat = g.parent(reshape, 1)
    if not is_op(concat, "Concat") or not 3 <= len(concat.input) <= 4:
        return
    shape = []
    for i in (0, 1):
        up = g.path(concat, [("Unsqueeze", i), ("Gather", 0), ("Shape", 0)])
        index = g.constant(up[1].input[1]) if up else None
        if up is None or index is None or index.size != 1 or int(index.reshape(-1)[0]) != i \
                or up[2].input[0] != reshape.input[0] or g.axes(up[0]) != [0]:
            return
        shape.append(0)
    for name in concat.input[2:]:
        value = g.constant(name)
        if value is None:
            return
        shape += value.reshape(-1).tolist()
    name = g.add_initializer(g.fresh_name("constant_shape"), np.array(shape, np.int64))
    reshape.input[1] = name
    g.changed()
    r.counts["Reshape shape"] += 1


# ---- 8: Attention ------------------------------------------------------------------------------

def fuse_attention(r, norm) -> None:
    """onnxruntime's ``FusionAttention``, found from the layer norm after the attention block
    (SkipLayerNormalization, or LayerNormalization after an Add)::

                      +-> MatMul(Wq) -> Add(bq) -> Reshape -> Transpose --+
                      |                                                   v
        root ---------+-> MatMul(Wk) -> Add(bk) -> Reshape -> Transpose -> MatMul -> Div or Mul
          |           |                                                               v
          |           |                    mask -> Unsqueeze -> Unsqueeze -> [Cast] -> Sub(1, .)
          |           |                                                   -> Mul(-10000) -> Add
          |           |                                                                   v
          |           +-> MatMul(Wv) -> Add(bv) -> Reshape -> Transpose --------> MatMul <- Softmax
          |                                                                        |
          |                          Transpose <-------------------------------------+
          v                              v
        SkipLayerNormalization <- Add <- MatMul <- Reshape

    becomes ``Attention(root, [Wq Wk Wv], [bq bk bv], mask_index, num_heads)`` in place of
    everything from the three MatMuls to the Reshape (the output projection stays). Without the
    mask Add (Softmax(Div(scores))) the Attention has no mask. The number of heads comes from a
    constant query Reshape shape [0, 0, heads, head_size] when there is one, else from the
    caller's ``num_heads``."""
    g = r.g
    start = norm
    if is_op(norm, "LayerNormalization"):
        add, _ = g.match_parent(norm, "Add", 0)
        if add is not None:
            start = add
        elif norm.input[0] not in g.inputs:
            return
    block = g.path(start, [("Add", None), ("MatMul", None), ("Reshape", 0), ("Transpose", 0),
                           ("MatMul", 0)])
    if block is None:
        return
    out_add, _, reshape_out, transpose_out, context = block
    root = _attention_root(g, start, out_add)
    if root is None or sum(is_op(c, "MatMul") for c in g.readers(root)) != 3:
        return
    v = g.path(context, [("Transpose", 1), ("Reshape", 0), ("Add", 0), ("MatMul", None)])
    which, scores = g.first_of_paths(context, [
        [("Softmax", 0), ("Add", 0), ("Div", None), ("MatMul", 0)],
        [("Softmax", 0), ("Add", 0), ("Mul", None), ("MatMul", 0)],
        [("Softmax", 0), ("Div", 0), ("MatMul", 0)]])
    if v is None or scores is None:
        return
    qk = scores[-1]
    q = g.path(qk, [("Transpose", 0), ("Reshape", 0), ("Add", 0), ("MatMul", None)])
    k = (g.path(qk, [("Transpose", 1), ("Reshape", 0), ("Add", 0), ("MatMul", None)])
         or g.path(qk, [("Transpose", 1), ("Transpose", 0), ("Reshape", 0), ("Add", 0),
                        ("MatMul", None)]))
    if q is None or k is None or any(m[-1].input[0] != root for m in (q, k, v)):
        return
    if not _attention_layout(r, transpose_out, q, k, v, scores[0]):
        return
    mask, filter_value = (None, DEFAULT_MASK_FILTER) if which == 2 else _mask(g, scores[1])
    if which < 2 and mask is None:
        return
    heads, hidden = _heads_and_hidden(r, q[1])
    if heads <= 0 or hidden <= 0:
        r.note("an attention block was found but the number of heads is unknown: pass num_heads "
               "and hidden_size")
        return
    packed = _packed_weights(r, q, k, v, heads)
    nodes = [reshape_out, transpose_out, context, *scores, *q, *k, *v]
    if packed is None or not g.safe_to_remove(nodes, keep=[reshape_out.output[0]]):
        return
    weight, bias, sizes, head_size = packed
    attrs = {"num_heads": heads}
    scale = _scale(g, scores[-2], head_size)
    if scale is None:
        return
    if filter_value != DEFAULT_MASK_FILTER:
        attrs["mask_filter_value"] = float(filter_value)
    if abs(scale - 1 / np.sqrt(head_size)) > 1e-6 / np.sqrt(head_size):
        attrs["scale"] = float(scale)
    if len(set(sizes)) > 1:
        attrs["qkv_hidden_sizes"] = sizes
    g.remove(nodes)
    name = g.fresh_name("Attention")
    g.add_initializer(f"{name}_qkv_weight", weight)
    g.add_initializer(f"{name}_qkv_bias", bias)
    inputs = [root, f"{name}_qkv_weight", f"{name}_qkv_bias", _mask_index(r, mask) if mask else ""]
    g.node("Attention", inputs, [reshape_out.output[0]], name, ms=True, **attrs)
    r.counts["Attention"] += 1


def _attention_root(g: Graph, start, out_add) -> str | None:
    """The hidden states the block reads: ``start``'s one other input made by a node or given
    by the graph (the residual), or the layer norm reading it (pre-norm models), or the Mul
    before it (onnxruntime's Flaubert case)."""
    others = [x for x in start.input
              if (g.producer(x) is not None or x in g.inputs) and x != out_add.output[0]]
    if len(others) != 1:
        return None
    root = others[0]
    mul, _ = g.match_parent(start, "Mul", 0)
    if mul is not None:
        readers = g.readers(mul.output[0])
        if len(readers) == 2 and is_op(readers[1], "LayerNormalization"):
            root = readers[1].output[0]
        elif len(readers) == 5:
            root = mul.output[0]
        else:
            return None
    else:
        for child in g.readers(root):
            if is_op(child, "LayerNormalization"):
                root = child.output[0]
    p = g.producer(root)
    if is_op(p, "SkipLayerNormalization") and len(p.output) == 4:
        root = p.output[0]
    return root


def _attention_layout(r, transpose_out, q, k, v, softmax) -> bool:
    """refrt's own checks that the block computes attention: heads split as [B, N, S, h] (keys
    [B, N, h, S], directly or by two Transposes), merged back by [0, 2, 1, 3], and Softmax over
    the last axis. onnxruntime matches op types only."""
    def perm(node):
        return list(attr(node, "perm", []))

    keys_ok = (perm(k[0]) == KEYS_PERM if len(k) == 4
               else perm(k[0]) == [0, 1, 3, 2] and perm(k[1]) == HEADS_PERM)
    axis = attr(softmax, "axis", -1 if r.g.opset >= 13 else 1)
    return (keys_ok and all(perm(t) == HEADS_PERM for t in (transpose_out, q[0], v[0]))
            and axis in (-1, 3))


def _mask(g: Graph, add):
    """(the 2-D mask, the masking value) of ``(1 - float(mask[:, None, None, :])) * value``
    added to the scores, in onnxruntime's two spellings (with or without the Cast); (None, None)
    otherwise. The value must be a negative number."""
    which, found = g.first_of_paths(add, [
        [("Mul", None), ("Sub", 0), ("Cast", 1), ("Unsqueeze", 0), ("Unsqueeze", 0)],
        [("Mul", None), ("Sub", 0), ("Unsqueeze", 1), ("Unsqueeze", 0)]])
    if found is None:
        return None, None
    _, value = g.constant_input(found[0])
    if value is None or value.size != 1 or float(value.reshape(-1)[0]) >= 0:
        return None, None
    outer, inner = found[-2], found[-1]
    if g.find_constant(found[1], 1.0) != 0 or not (g.axes(inner) == [1] and g.axes(outer) == [2]):
        return None, None     # refrt: 1 - mask, and mask [B, S] -> [B, 1, 1, S]
    return inner.input[0], float(value.reshape(-1)[0])


def _heads_and_hidden(r, reshape_q) -> tuple[int, int]:
    """onnxruntime's ``get_num_heads_and_hidden_size``: from the query Reshape's constant shape
    [0, 0, heads, head_size], or a Concat of 4 pieces whose last two are constants, else the
    caller's values (0 when not given)."""
    g = r.g
    shape = g.constant(reshape_q.input[1])
    if shape is None:
        concat = g.parent(reshape_q, 1)
        if is_op(concat, "Concat") and len(concat.input) == 4:
            n, h = g.constant(concat.input[2]), g.constant(concat.input[3])
            if n is not None and h is not None and n.size == 1 and h.size == 1:
                n, h = int(n.reshape(-1)[0]), int(h.reshape(-1)[0])
                if n == -1 and r.num_heads > 0 and r.hidden_size == r.num_heads * h:
                    return r.num_heads, r.hidden_size
                return n, n * h
        return r.num_heads, r.hidden_size
    shape = shape.reshape(-1)
    if len(shape) != 4 or shape[2] <= 0 or shape[3] <= 0:
        return r.num_heads, r.hidden_size
    heads, hidden = int(shape[2]), int(shape[2] * shape[3])
    if (r.num_heads and heads != r.num_heads) or (r.hidden_size and hidden != r.hidden_size):
        r.note(f"num_heads={r.num_heads}, hidden_size={r.hidden_size} given, but the graph says "
               f"{heads} and {hidden}: the graph's values are used")
    return heads, hidden


def _packed_weights(r, q, k, v, heads):
    """([Wq Wk Wv] side by side, [bq bk bv], the three output sizes, head size) for constant 2-D
    weights and vector biases (onnxruntime's ``create_attention_node``), else None."""
    g = r.g
    weights = [g.constant(path[-1].input[1]) for path in (q, k, v)]
    biases = [g.constant(other_input(path[-2], path[-1].output[0])) for path in (q, k, v)]
    if any(w is None or w.ndim != 2 for w in weights) or any(b is None or b.ndim != 1
                                                             for b in biases):
        return None
    sizes = [w.shape[1] for w in weights]
    if weights[0].shape != weights[1].shape or len({w.shape[0] for w in weights}) != 1 \
            or [b.size for b in biases] != sizes or any(s % heads for s in sizes):
        return None
    if r.hidden_size and r.hidden_size % heads:
        return None
    head_size = sizes[0] // heads
    shapes = r.shapes()
    if shapes:      # refrt: each Reshape splits the last axis into [heads, head_size]
        for path, size in zip((q, k, v), sizes):
            s = shapes.shape(path[-3].output[0])
            if s is None or len(s) != 4 or s[2:] != ((heads, heads), (size // heads,) * 2):
                return None
    dtype = weights[0].dtype
    return (np.concatenate(weights, axis=1).astype(dtype), np.concatenate(biases).astype(dtype),
            sizes, head_size)


def _scale(g: Graph, scaling, head_size: int) -> float | None:
    """The factor the scores are multiplied by: 1/c for Div(scores, c), c for Mul(scores, c);
    None unless c is a constant number."""
    c = g.constant(scaling.input[1])
    if c is None or c.size != 1 or float(c.reshape(-1)[0]) == 0:
        return None
    c = float(c.reshape(-1)[0])
    return 1 / c if scaling.op_type == "Div" else c


def _int32(r, name: str) -> str:
    """``name`` as int32: itself for an int32 graph input, else the output of a Cast to int32
    (one per value; a Cast's input is cast instead of its output, as onnxruntime does)."""
    g = r.g
    vi = g.inputs.get(name)
    if vi is not None and vi.type.tensor_type.elem_type == TensorProto.INT32:
        return name
    p = g.producer(name)
    source = p.input[0] if is_op(p, "Cast") else name
    out = f"{name}_int32"
    made = g.producer(out)
    if made is not None and is_op(made, "Cast") and made.input[0] == source \
            and attr(made, "to") == TensorProto.INT32:
        return out
    if made is not None or out in g.inputs or out in g.inits:
        out = g.fresh_name(out)
    g.node("Cast", [source], [out], g.fresh_name("CastToInt32"), to=TensorProto.INT32)
    return out


def _mask_index(r, mask: str) -> str:
    """The mask index of a 2-D 0/1 mask: ReduceSum(Cast(mask, int32), axis 1), made once per
    mask (onnxruntime's ``AttentionMask.process_mask``)."""
    if mask in r.masks:
        return r.masks[mask]
    g = r.g
    mask32 = _int32(r, mask)
    out = g.fresh_name("mask_index")
    if g.opset < 13:
        g.node("ReduceSum", [mask32], [out], g.fresh_name("MaskReduceSum"), axes=[1], keepdims=0)
    else:
        axes = "ort_const_1_reduce_sum_axes"
        if axes not in g.inits:
            g.add_initializer(axes, np.array([1], np.int64))
        g.node("ReduceSum", [mask32, axes], [out], g.fresh_name("MaskReduceSum"), keepdims=0)
    r.masks[mask] = out
    return out


# ---- 9: EmbedLayerNormalization ----------------------------------------------------------------

@dataclass
class Embedding:
    """What an embedding rule matched: the ids, the three Gathers (segment optional), explicit
    position ids (None: positions 0..S-1), the Attention reading the result, and the node and
    output index of an embedding sum read elsewhere."""
    ids: str
    word: object
    position: object
    segment: object = None
    position_ids: str | None = None
    attention: object = None
    sum_from: tuple | None = None


def fuse_embed_layer(r, norm) -> None:
    """onnxruntime's ``FusionEmbedLayerNormalization`` (with a mask index, its BERT default)::

        input_ids -> Gather(word table) ----+
        position ids -> Gather(positions) --+--> Add --> Add --> LayerNormalization
        token_type_ids -> Gather(types) ------------------^        (or SkipLayerNormalization)

    becomes ``EmbedLayerNormalization(int32 ids, int32 types, tables, gamma, beta, mask, int32
    position ids)``, when the layer norm feeds an Attention (or a block looking like one). Three
    layouts, as onnxruntime tries them: explicit position ids (its "gpt2" case, which
    ``bert_encoder`` and HF exports take), DistilBERT's (no token types), and older BERT exports
    whose positions are a Slice of a constant [1, max] 0, 1, 2, ... table or Range(0, S, 1); in
    the last two the fused op computes positions 0..S-1 itself. Then the Attention nodes read its
    mask index (see the module docstring)."""
    g = r.g
    if norm.output[0] in g.outputs:
        return
    if is_op(norm, "LayerNormalization"):
        add, _ = g.match_parent(norm, "Add", 0)
        segment = None
    else:
        g0, g1 = g.match_parent(norm, "Gather", 0)[0], g.match_parent(norm, "Gather", 1)[0]
        if (g0 is None) != (g1 is None):
            add, _ = g.match_parent(norm, "Add", 0 if g0 is None else 1)
            segment = g1 if g0 is None else g0
        else:
            add, segment = norm, None
    if add is None:
        return
    e = (_explicit_positions(r, norm, add, segment) or _distilbert(r, norm, add)
         or _bert(r, norm, add))
    if e is not None:
        _embed_node(r, norm, e)


def _two_gathers(g: Graph, node):
    a, b = g.parent(node, 0), g.parent(node, 1)
    return (a, b) if is_op(a, "Gather") and is_op(b, "Gather") else None


def _gathers_into_attention(r, norm, add, distilbert: bool):
    """(word Gather, position Gather, Attention or None) when ``add`` sums two Gathers and the
    layer norm's output goes to attention; else None."""
    two = _two_gathers(r.g, add)
    ok, attention = _feeds_attention(r.g, norm, distilbert) if two else (False, None)
    return (*two, attention) if ok else None


def _explicit_positions(r, norm, add, segment):
    g = r.g
    found = _gathers_into_attention(r, norm, add, distilbert=False)
    if found is None or not _tables_fit(r, found[0], segment, found[1]):   # refrt: segment too
        return None
    word, position, attention = found
    if is_op(norm, "SkipLayerNormalization"):
        needs_sum = len(norm.output) > 3 and bool(norm.output[3])
        sum_from = (norm, 3)
    else:
        k = 0 if is_op(add, "Add") else 3
        name = add.output[k] if len(add.output) > k else ""
        needs_sum = bool(name) and (not is_op(add, "Add") or name in g.outputs
                                    or len(g.readers(name)) > 1)
        sum_from = (add, k)
    return Embedding(word.input[1], word, position, segment, position.input[1], attention,
                     sum_from if needs_sum else None)


def _distilbert(r, norm, add):
    found = _gathers_into_attention(r, norm, add, distilbert=True)
    if found is None:
        return None
    word, position, attention = found
    if not _positions_count_up(r.g, position, word.input[1]) \
            or not _tables_fit(r, word, None, position):
        return None
    return Embedding(word.input[1], word, position, attention=attention)


def _bert(r, norm, add):
    g = r.g
    first, _ = g.match_parent(add, "Add", 0)
    two = _two_gathers(g, first) if first is not None else None
    if two is None:
        return None
    word, segment = two
    ok, attention = _feeds_attention(g, norm, distilbert=False)
    position, _ = g.match_parent(add, "Gather", 1)
    if not ok or position is None:
        return None
    ids = word.input[1]
    if not _positions_count_up(g, position, ids):
        if not _positions_count_up(g, segment, ids):
            return None
        position, segment = segment, position
    if not _tables_fit(r, word, segment, position):
        return None
    return Embedding(ids, word, position, segment, attention=attention)


def _feeds_attention(g: Graph, norm, distilbert: bool):
    """(the layer norm's output goes to attention, the Attention node or None): an Attention
    reads it, or (attention not fused) its readers are those of an attention block and a
    residual (onnxruntime's ``check_attention_subgraph``)."""
    attention = next((c for c in reversed(g.children(norm)) if is_op(c, "Attention")), None)
    if attention is not None:
        return True, attention
    readers = g.readers(norm.output[0])
    kinds = sorted(c.op_type for c in readers)
    if len(readers) == 1 and is_op(readers[0], "MatMul"):      # ALBERT: a projection first
        after = g.readers(readers[0].output[0])
        if len(after) == 1 and is_op(after[0], "Add"):
            nodes = g.readers(after[0].output[0])
            attention = next((n for n in nodes if is_op(n, "Attention")), None)
            if attention is not None:
                return True, attention
            kinds = sorted(n.op_type for n in nodes)
    mm = ["MatMul"] * 3
    allowed = ([mm + ["Shape", "SkipLayerNormalization"], ["Add"] + mm + ["Shape", "Shape"],
                ["Add"] + mm + ["Shape"]] if distilbert
               else [["Add"] + mm, mm + ["SkipLayerNormalization"]])
    return kinds in allowed, None


def _positions_count_up(g: Graph, gather, ids: str) -> bool:
    """The Gather's indices are 0, 1, ..., S-1 for S = input_ids' second dim: a Slice of a
    constant [1, max] table holding 0, 1, 2, ... (BERT), or Range(0, S, 1) expanded (DistilBERT).
    (refrt checks the table's values; onnxruntime its shape.)"""
    up = g.path(gather, [("Slice", 1), ("Unsqueeze", 2)])
    if up is not None:
        piece, unsqueeze = up
        table = g.constant(piece.input[0])
        if table is None or table.ndim != 2 or table.shape[0] != 1 \
                or not np.array_equal(table[0], np.arange(table.shape[1])) \
                or not _equals(g, piece.input[1], [0]) or not _equals(g, piece.input[3], [1]) \
                or not (len(piece.input) == 4 or _equals(g, piece.input[4], [1])) \
                or g.axes(unsqueeze) != [0]:
            return False
        n = g.parent(unsqueeze, 0)
        if is_op(n, "Add"):
            if not _equals(g, n.input[1], 0):
                return False
            n = g.parent(n, 0)
        return _second_dim_of(g, n, ids)
    up = g.path(gather, [("Expand", 1), ("Shape", 1)])
    if up is None or up[1].input[0] != ids:
        return False
    _, count = g.first_of_paths(up[0], [
        [("Unsqueeze", 0), ("Range", 0), ("Cast", 1), ("Gather", 0), ("Shape", 0)],
        [("Unsqueeze", 0), ("Range", 0), ("Gather", 1), ("Shape", 0)]])
    if count is None:
        return False
    positions = count[1]
    return (_equals(g, positions.input[0], 0) and _equals(g, positions.input[2], 1)
            and _second_dim_of(g, count[-2], ids))


def _second_dim_of(g: Graph, gather, ids: str) -> bool:
    """``gather`` is Gather(Shape(ids), 1)."""
    shape = g.parent(gather, 0) if is_op(gather, "Gather") else None
    return is_op(shape, "Shape") and _equals(g, gather.input[1], 1) and shape.input[0] == ids


def _equals(g: Graph, name: str, expected) -> bool:
    """``name`` is a constant holding ``expected`` (a number or a list)."""
    value = g.constant(name)
    return (value is not None and value.size == np.size(expected)
            and np.array_equal(value.reshape(-1), np.reshape(expected, -1)))


def _tables_fit(r, word, segment, position) -> bool:
    """onnxruntime's ``check_embedding``: ids and position ids 2-D with the same sequence
    length, token types shaped as the ids (shapes observed, see ``rewrite.Shapes``), and constant
    2-D tables of one width."""
    g, shapes = r.g, r.shapes()
    if not shapes:
        return False
    ids, pos = shapes.shape(word.input[1]), shapes.shape(position.input[1])
    if ids is None or pos is None or len(ids) != 2 or len(pos) != 2 or ids[1] != pos[1]:
        return False
    if segment is not None and shapes.shape(segment.input[1]) != ids:
        return False
    tables = [g.constant(n.input[0]) for n in (word, position, segment) if n is not None]
    return all(t is not None and t.ndim == 2 and t.shape[1] == tables[0].shape[1] for t in tables)


def _embed_node(r, norm, e: Embedding) -> None:
    g = r.g
    layer_norm = is_op(norm, "LayerNormalization")
    gamma, beta = (norm.input[1:3] if layer_norm else norm.input[2:4])
    if not beta:
        return
    name = g.fresh_name("EmbedLayerNormalization")
    inputs = [_int32(r, e.ids), _int32(r, e.segment.input[1]) if e.segment else "",
              e.word.input[0], e.position.input[0], e.segment.input[0] if e.segment else "",
              gamma, beta]
    if e.position_ids is not None:
        inputs += ["", _int32(r, e.position_ids)]
    outputs = [f"{name}_output", f"{name}_dummy_mask_index"]
    if e.sum_from is not None:       # the embedding sum is read elsewhere: this node gives it
        node, k = e.sum_from
        outputs.append(node.output[k])
        node.output[k] = f"{name}_unused_sum"
    epsilon = attr(norm, "epsilon", 1e-5 if layer_norm else 1e-12)
    embed = g.node("EmbedLayerNormalization", inputs, outputs, name, ms=True,
                   epsilon=float(epsilon))
    g.rename_input(norm.output[0], embed.output[0])
    r.counts["EmbedLayerNormalization"] += 1
    if e.attention is not None and len(e.attention.input) > 3 and e.attention.input[3]:
        _share_mask_index(r, embed, e.attention.input[3])


def _share_mask_index(r, embed, mask_index: str) -> None:
    """The Attention nodes reading ``mask_index`` read the embedding's mask index instead; the
    embedding takes the int32 mask (the ReduceSum's input), and the ReduceSum goes when only
    Attention nodes read it."""
    g = r.g
    readers = g.readers(mask_index)
    attentions = [n for n in readers if is_op(n, "Attention")]
    mask = mask_index
    if mask_index not in g.inputs:
        p = g.producer(mask_index)
        if not (is_op(p, "ReduceSum") or is_op(p, "Cast")):
            return
        if is_op(p, "ReduceSum"):
            mask = p.input[0]
            if len(attentions) == len(readers):
                g.remove([p])
    if len(embed.input) == 7:
        embed.input.append(mask)
    elif embed.input[7] == "":
        embed.input[7] = mask
    else:
        return
    for n in attentions:
        n.input[3] = embed.output[1]
    g.changed()
