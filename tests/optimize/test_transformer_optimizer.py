"""refrt's transformer optimizer (refrt/optimize/transformer.py) against onnxruntime's.

Each rule is tested on the unfused pattern it replaces: the fused op appears (or, for spellings
onnxruntime does not fuse, does not), the optimized model gives the unfused model's outputs
within 1e-5 relative, and where onnxruntime's optimizer can run on the pattern, refrt's graph has
the op types onnxruntime's has, as many of each. Then whole encoders (``bert_encoder`` as written,
in PyTorch's export spelling, and with its layer norms decomposed) against onnxruntime's optimizer:
the same op counts, and refrt's optimized model run in refrt and in onnxruntime gives the unfused
model's outputs; and refrt's optimized model quantized by onnxruntime's ``quantize_dynamic``.
"""

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import refrt
from refrt.optimize import OptimizeError, optimize_model
from refrt.testing.models import bert_encoder, bert_feeds, mobilenet_like

from ort_helpers import exporter_patterns, ort_optimize_bert, ort_session

RNG = np.random.default_rng(0)


# ---- building small patterns ----------------------------------------------------------------

class Pattern:
    """A small graph: float input ``x`` [batch, seq, width] (and more inputs if asked),
    constants by value, one output ``y``."""

    def __init__(self, width=8, inputs=None):
        self.nodes, self.inits, self.n = [], [], 0
        self.inputs = inputs or [h.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", width])]

    def c(self, value, dtype=np.float32):
        self.n += 1
        name = f"c{self.n}"
        self.inits.append(nh.from_array(np.asarray(value, dtype), name))
        return name

    def w(self, *shape):
        return self.c(RNG.standard_normal(shape) * 0.3)

    def op(self, op_type, *inputs, out=None, **attrs):
        self.n += 1
        out = out or f"t{self.n}"
        self.nodes.append(h.make_node(op_type, list(inputs), [out], name=f"{op_type}_{self.n}",
                                      **attrs))
        return out

    def model(self, *outputs, opset=17):
        outputs = outputs or ("y",)
        graph = h.make_graph(self.nodes, "pattern", self.inputs,
                             [h.make_tensor_value_info(o, T.FLOAT, None) for o in outputs],
                             self.inits)
        m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
        m.ir_version = 8
        return m


def feeds_for(model, batch=2, seq=5):
    out = {}
    for vi in model.graph.input:
        shape = [batch if d.dim_param == "batch" else seq if d.dim_param == "seq" else d.dim_value
                 for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.elem_type == T.FLOAT:
            out[vi.name] = RNG.standard_normal(shape).astype(np.float32)
        else:                    # an attention mask: right padding in all rows but the first
            mask = np.ones(shape, np.int64)
            mask[1:, -2:] = 0
            out[vi.name] = mask
    return out


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def assert_same_outputs(unfused, fused, feeds, ort_too=False):
    """The fused model's outputs are the unfused model's within 1e-5 relative (refrt; and
    onnxruntime running the fused model with ``ort_too``). Returns the largest error."""
    ref = refrt.InferenceSession(unfused).run(None, {**feeds_for(unfused), **feeds})
    runs = [refrt.InferenceSession(fused).run(None, feeds)]
    if ort_too:
        runs.append(ort_session(fused).run(None, feeds))
    worst = 0.0
    for outs in runs:
        for a, b in zip(outs, ref):
            err = rel_err(a, b)
            assert err < 1e-5, err
            worst = max(worst, err)
    return worst


def ops(model):
    return Counter(n.op_type for n in model.graph.node)


def same_counts_as_ort(model, refrt_model, tmp_path, name):
    """onnxruntime's optimizer on ``model`` gives refrt's op types and counts."""
    theirs = ops(ort_optimize_bert(model, tmp_path, name))
    assert ops(refrt_model) == theirs, (ops(refrt_model), theirs)


def gelu_pattern(spelling):
    """x -> Neg -> GELU written as ``spelling`` -> y (Neg: a node makes x, as spellings 2 and 3
    of onnxruntime's FusionGelu require)."""
    p = Pattern()
    x = p.op("Neg", "x")
    one, half = p.c(1.0), p.c(0.5)
    if spelling == "pytorch":          # Div -> Erf -> Add -> Mul(x, .) -> Mul(0.5)
        a = p.op("Add", p.op("Erf", p.op("Div", x, p.c(np.sqrt(2)))), one)
        p.op("Mul", p.op("Mul", x, a), half, out="y")
    elif spelling == "pytorch_half_first":   # Mul(Mul(x, 0.5), Div -> Erf -> Add)
        a = p.op("Add", p.op("Erf", p.op("Div", x, p.c(np.sqrt(2)))), one)
        p.op("Mul", p.op("Mul", x, half), a, out="y")
    elif spelling == "keras":          # Div -> Erf -> Add -> Mul(0.5) -> Mul(x, .)
        a = p.op("Add", one, p.op("Erf", p.op("Div", x, p.c(np.sqrt(2)))))
        p.op("Mul", x, p.op("Mul", a, half), out="y")
    elif spelling == "tensorflow":     # Mul(0.7071) -> Erf -> Add -> Mul(0.5) -> Mul(x, .)
        a = p.op("Add", p.op("Erf", p.op("Mul", p.c(1 / np.sqrt(2)), x)), one)
        p.op("Mul", p.op("Mul", a, half), x, out="y")
    elif spelling == "bert_encoder":   # Mul(Mul(x, 0.5), Add(Erf(Mul(x, 0.7071)), 1)): not fused
        a = p.op("Add", p.op("Erf", p.op("Mul", x, p.c(1 / np.sqrt(2)))), one)
        p.op("Mul", p.op("Mul", x, half), a, out="y")
    return p.model()


def tanh_gelu_pattern(spelling, p=None, x=None):
    """GELU's tanh approximation: HF's gelu_new (Pow) or PyTorch's approximate='tanh'."""
    p = p or Pattern()
    x = x or p.op("Neg", "x")
    if spelling == "hf":
        inner = p.op("Add", x, p.op("Mul", p.op("Pow", x, p.c(3.0)), p.c(0.044715)))
        t = p.op("Tanh", p.op("Mul", inner, p.c(np.sqrt(2 / np.pi))))
        return p, p.op("Mul", p.op("Mul", x, p.c(0.5)), p.op("Add", t, p.c(1.0)), out="y")
    cube = p.op("Mul", x, p.op("Mul", x, x))
    inner = p.op("Add", x, p.op("Mul", p.c(0.044715), cube))
    t = p.op("Tanh", p.op("Mul", p.c(np.sqrt(2 / np.pi)), inner))
    return p, p.op("Mul", p.op("Mul", x, p.op("Add", t, p.c(1.0))), p.c(0.5), out="y")


def layer_norm(p, x, width, eps=1e-12, axes=(-1,), two_subs=False, out=None):
    """The decomposed layer norm of exporters (two Subs: older PyTorch)."""
    mean = p.op("ReduceMean", x, axes=list(axes))
    d = p.op("Sub", x, mean)
    d2 = p.op("Sub", x, mean) if two_subs else d
    var = p.op("ReduceMean", p.op("Pow", d, p.c(2.0)), axes=list(axes))
    std = p.op("Sqrt", p.op("Add", var, p.c(eps)))
    norm = p.op("Div", d2, std)
    return p.op("Add", p.op("Mul", norm, p.c(1 + 0.1 * RNG.standard_normal(width))),
                p.c(0.1 * RNG.standard_normal(width)), out=out)


def decompose_layer_norms(model):
    """``model`` with each LayerNormalization node written out as its nine-node spelling."""
    g = model.graph
    p = Pattern()
    p.n = 10_000
    for n in g.node:
        if n.op_type != "LayerNormalization":
            p.nodes.append(n)
            continue
        x, gamma, beta = n.input
        eps = next(a.f for a in n.attribute if a.name == "epsilon")
        mean = p.op("ReduceMean", x, axes=[-1])
        d = p.op("Sub", x, mean)
        std = p.op("Sqrt", p.op("Add", p.op("ReduceMean", p.op("Pow", d, p.c(2.0)), axes=[-1]),
                                p.c(eps)))
        p.op("Add", p.op("Mul", p.op("Div", d, std), gamma), beta, out=n.output[0])
    g.ClearField("node")
    g.node.extend(p.nodes)
    g.initializer.extend(p.inits)
    onnx.checker.check_model(model)
    return model


def attention_block(heads=2, head_size=4, mask=True, scale_op="Div", scale=None,
                    constant_shapes=True):
    """One post-norm attention block on x [batch, seq, heads * head_size] with a 0/1 mask,
    spelled as PyTorch exports BERT, then the residual Add and its LayerNormalization."""
    hidden = heads * head_size
    p = Pattern(hidden, inputs=[h.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", hidden]),
                                h.make_tensor_value_info("mask", T.INT64, ["batch", "seq"])])
    if constant_shapes:
        split, merge = p.c([0, 0, heads, head_size], np.int64), p.c([0, 0, hidden], np.int64)
    else:
        batch_seq = p.op("Slice", p.op("Shape", "x"), p.c([0], np.int64), p.c([2], np.int64))
        split = p.op("Concat", batch_seq, p.c([heads, head_size], np.int64), axis=0)
        merge = p.op("Concat", batch_seq, p.c([hidden], np.int64), axis=0)

    def project(name, perm):
        y = p.op("Add", p.op("MatMul", "x", p.w(hidden, hidden)), p.w(hidden))
        return p.op("Transpose", p.op("Reshape", y, split), perm=perm)

    q, k, v = project("q", [0, 2, 1, 3]), project("k", [0, 2, 3, 1]), project("v", [0, 2, 1, 3])
    scores = p.op("MatMul", q, k)
    factor = scale if scale is not None else 1 / np.sqrt(head_size)
    scores = p.op(scale_op, scores, p.c(1 / factor if scale_op == "Div" else factor))
    if mask:
        m = p.op("Cast", p.op("Unsqueeze", p.op("Unsqueeze", "mask", p.c([1], np.int64)),
                               p.c([2], np.int64)), to=T.FLOAT)
        scores = p.op("Add", scores, p.op("Mul", p.op("Sub", p.c(1.0), m), p.c(-10000.0)))
    ctx = p.op("MatMul", p.op("Softmax", scores, axis=-1), v)
    ctx = p.op("Reshape", p.op("Transpose", ctx, perm=[0, 2, 1, 3]), merge)
    out = p.op("Add", p.op("MatMul", ctx, p.w(hidden, hidden)), p.w(hidden))
    p.op("LayerNormalization", p.op("Add", out, "x"), p.c(np.ones(hidden)), p.c(np.zeros(hidden)),
         out="y", epsilon=1e-12)
    return p.model()


# ---- rules, one by one --------------------------------------------------------------------

def test_identity_and_constant_folding():
    """A shape computation on a static shape folds into an initializer; the same on a symbolic
    shape stays; an Identity before the output goes."""
    def model(shape):
        p = Pattern(inputs=[h.make_tensor_value_info("x", T.FLOAT, shape)])
        n = p.op("Gather", p.op("Shape", "x"), p.c(1, np.int64), axis=0)
        r = p.op("Cast", p.op("Range", p.c(0, np.int64), n, p.c(1, np.int64)), to=T.FLOAT)
        p.op("Identity", p.op("Add", "x", r), out="y")
        return p.model()

    static, dynamic = model([2, 3]), model(["batch", "seq"])
    res = optimize_model(static)
    assert ops(res.model) == {"Add": 1} and res.fusions["constants folded"] == 4
    assert res.fusions["Identity removed"] == 1 and res.model.graph.node[0].output[0] == "y"
    assert_same_outputs(static, res.model, feeds_for(static))
    res = optimize_model(dynamic)
    assert ops(res.model) == {"Shape": 1, "Gather": 1, "Range": 1, "Cast": 1, "Add": 1}
    assert "constants folded" not in res.fusions


def test_constant_sequences_are_not_folded():
    """SequenceEmpty has no inputs, but a sequence is no initializer: it stays a node."""
    p = Pattern()
    p.nodes.append(h.make_node("SequenceEmpty", [], ["s"], dtype=T.FLOAT))
    p.op("ConcatFromSequence", p.op("SequenceInsert", "s", "x"), out="y", axis=0)
    model = p.model()
    res = optimize_model(model)
    assert ops(res.model) == ops(model) and not res.fusions
    assert_same_outputs(model, res.model, feeds_for(model))


def test_useless_cast_goes():
    p = Pattern()
    p.op("Relu", p.op("Cast", p.op("Neg", "x"), to=T.FLOAT), out="y")
    res = optimize_model(p.model())
    assert ops(res.model) == {"Neg": 1, "Relu": 1} and res.fusions["Cast removed"] == 1


@pytest.mark.parametrize("two_subs", [False, True], ids=["one_sub", "two_subs"])
def test_layer_norm(tmp_path, two_subs):
    p = Pattern()
    layer_norm(p, p.op("Neg", "x"), 8, two_subs=two_subs, out="y")
    model = p.model()
    res = optimize_model(model)
    assert ops(res.model) == {"Neg": 1, "LayerNormalization": 1}
    assert_same_outputs(model, res.model, feeds_for(model), ort_too=True)
    same_counts_as_ort(model, res.model, tmp_path, "ln")


@pytest.mark.parametrize("case", ["eps_too_large", "middle_axis"])
def test_layer_norm_left_alone(case):
    """epsilon above 1e-4 (onnxruntime's condition), or moments over an axis other than the last
    (refrt's: onnxruntime does not look at the axes, and its fused node would normalize over the
    last axis instead)."""
    p = Pattern()
    layer_norm(p, p.op("Neg", "x"), 8, eps=1e-3 if case == "eps_too_large" else 1e-12,
               axes=[-1] if case == "eps_too_large" else [1], out="y")
    res = optimize_model(p.model())
    assert "LayerNormalization" not in ops(res.model) and not res.fusions


@pytest.mark.parametrize("spelling,fused", [("pytorch", True), ("pytorch_half_first", True),
                                            ("keras", True), ("tensorflow", True),
                                            ("bert_encoder", False)])
def test_gelu(tmp_path, spelling, fused):
    """onnxruntime's three erf spellings become Gelu; bert_encoder's grouping does not, in
    onnxruntime as in refrt."""
    model = gelu_pattern(spelling)
    res = optimize_model(model)
    assert ops(res.model)["Gelu"] == int(fused) and ("Erf" in ops(res.model)) != fused
    assert_same_outputs(model, res.model, feeds_for(model), ort_too=True)
    same_counts_as_ort(model, res.model, tmp_path, spelling)


@pytest.mark.parametrize("spelling", ["hf", "pytorch"])
def test_fast_gelu(tmp_path, spelling):
    p, _ = tanh_gelu_pattern(spelling)
    model = p.model()
    res = optimize_model(model)
    assert ops(res.model) == {"Neg": 1, "FastGelu": 1}
    assert_same_outputs(model, res.model, feeds_for(model), ort_too=True)
    same_counts_as_ort(model, res.model, tmp_path, "fastgelu_" + spelling)


@pytest.mark.parametrize("activation", ["gelu", "fast_gelu"])
def test_bias_into_gelu(tmp_path, activation):
    """MatMul -> Add(bias) -> Gelu becomes MatMul -> BiasGelu; before FastGelu the bias becomes
    FastGelu's second input."""
    if activation == "gelu":
        p = Pattern()
        x = p.op("Add", p.op("MatMul", "x", p.w(8, 16)), p.w(16))
        one, half = p.c(1.0), p.c(0.5)
        a = p.op("Add", p.op("Erf", p.op("Div", x, p.c(np.sqrt(2)))), one)
        p.op("Mul", p.op("Mul", x, a), half, out="y")
        expected = {"MatMul": 1, "BiasGelu": 1}
    else:
        p = Pattern()
        p, _ = tanh_gelu_pattern("hf", p, p.op("Add", p.op("MatMul", "x", p.w(8, 16)), p.w(16)))
        expected = {"MatMul": 1, "FastGelu": 1}
    model = p.model()
    res = optimize_model(model)
    assert ops(res.model) == expected
    assert len(next(n for n in res.model.graph.node if n.op_type != "MatMul").input) == 2
    assert_same_outputs(model, res.model, feeds_for(model), ort_too=True)
    same_counts_as_ort(model, res.model, tmp_path, "bias_" + activation)


@pytest.mark.parametrize("shared_sum", [False, True], ids=["sum_inside", "sum_also_output"])
def test_skip_layer_norm_with_bias(tmp_path, shared_sum):
    """Linear -> Add(residual) -> LayerNormalization: SkipLayerNormalization, then the linear's
    bias goes in as its 5th input. When the sum is also a graph output, the fused node gives it as
    its 4th output."""
    p = Pattern()
    lin = p.op("Add", p.op("MatMul", "x", p.w(8, 8)), p.w(8))
    s = p.op("Add", lin, "x", out="s")
    p.op("LayerNormalization", s, p.c(np.ones(8)), p.c(np.zeros(8)), out="y", epsilon=1e-5)
    model = p.model(*(("y", "s") if shared_sum else ("y",)))
    res = optimize_model(model)
    assert ops(res.model) == {"MatMul": 1, "SkipLayerNormalization": 1}
    sln = next(n for n in res.model.graph.node if n.op_type == "SkipLayerNormalization")
    assert len(sln.input) == 5 and list(sln.output) == (["y", "", "", "s"] if shared_sum else ["y"])
    assert_same_outputs(model, res.model, feeds_for(model), ort_too=True)
    same_counts_as_ort(model, res.model, tmp_path, "sln")


def test_skip_layer_norm_not_for_constant_addend():
    """Add(x, constant) -> LayerNormalization is a bias, not a residual: no fusion (as in
    onnxruntime)."""
    p = Pattern()
    p.op("LayerNormalization", p.op("Add", "x", p.w(8)), p.c(np.ones(8)), p.c(np.zeros(8)),
         out="y")
    res = optimize_model(p.model())
    assert ops(res.model) == {"Add": 1, "LayerNormalization": 1}


def test_reshape_shape_from_own_dims():
    """Reshape(x, Concat(x's dim 0, x's dim 1, 2, 4)) gets the constant shape [0, 0, 2, 4]
    (onnxruntime's FusionReshape); the shape computation goes."""
    p = Pattern()
    dims = [p.op("Unsqueeze", p.op("Gather", p.op("Shape", "x"), p.c(i, np.int64), axis=0),
                 p.c([0], np.int64)) for i in (0, 1)]
    p.op("Reshape", "x", p.op("Concat", *dims, p.c([2], np.int64), p.c([4], np.int64), axis=0),
         out="y")
    model = p.model()
    res = optimize_model(model)
    assert ops(res.model) == {"Reshape": 1}
    shape = next(t for t in res.model.graph.initializer
                 if t.name == res.model.graph.node[0].input[1])
    assert nh.to_array(shape).tolist() == [0, 0, 2, 4]
    assert_same_outputs(model, res.model, feeds_for(model))


def test_useless_reshape_goes():
    p = Pattern()
    p.op("Relu", p.op("Reshape", p.op("Neg", "x"), p.c([0, 0, 8], np.int64)), out="y")
    res = optimize_model(p.model())
    assert ops(res.model) == {"Neg": 1, "Relu": 1}


def test_attention(tmp_path):
    """One attention block (PyTorch's spelling, mask included) -> Attention with the weights
    side by side, the mask turned into a mask index (Cast -> ReduceSum), the heads read from the
    constant query shape."""
    model = attention_block()
    res = optimize_model(model)
    assert ops(res.model) == {"Attention": 1, "MatMul": 1, "SkipLayerNormalization": 1,
                              "Cast": 1, "ReduceSum": 1}
    att = next(n for n in res.model.graph.node if n.op_type == "Attention")
    assert h.get_attribute_value(att.attribute[0]) == 2 and len(att.attribute) == 1
    inits = {t.name: nh.to_array(t) for t in model.graph.initializer}
    fused = {t.name: nh.to_array(t) for t in res.model.graph.initializer}
    q, k, v = (inits[n.input[1]] for n in model.graph.node if n.op_type == "MatMul"
               and n.input[0] == "x")
    assert np.array_equal(fused[att.input[1]], np.concatenate([q, k, v], axis=1))
    assert fused[att.input[2]].shape == (24,)
    assert_same_outputs(model, res.model, feeds_for(model), ort_too=True)
    same_counts_as_ort(model, res.model, tmp_path, "attention")


@pytest.mark.parametrize("variant", ["no_mask", "other_scale"])
def test_attention_variants(tmp_path, variant):
    """Without a mask (Softmax(Div(scores))): no mask input, and the mask input of the graph,
    now read by nothing, goes (as onnxruntime's pruning does). Scores divided by 4 rather than
    sqrt(head_size) = 2: written as Attention's scale attribute (refrt; onnxruntime's node would
    use 1/sqrt(head_size))."""
    model = attention_block(mask=variant == "other_scale",
                            scale=0.25 if variant == "other_scale" else None)
    res = optimize_model(model)
    att = next(n for n in res.model.graph.node if n.op_type == "Attention")
    attrs = {a.name: h.get_attribute_value(a) for a in att.attribute}
    assert attrs == ({"num_heads": 2, "scale": 0.25} if variant == "other_scale" else
                     {"num_heads": 2})
    assert (att.input[3] == "") == (variant == "no_mask")
    feeds = feeds_for(model)
    if variant == "no_mask":
        assert [vi.name for vi in res.model.graph.input] == ["x"]
        feeds.pop("mask")
    assert_same_outputs(model, res.model, feeds, ort_too=True)
    same_counts_as_ort(model, res.model, tmp_path, variant)


def test_attention_scaled_by_mul_before_the_mask_as_onnxruntime(tmp_path):
    """Mul(scores, 1/sqrt(h)) + Mul(1 - mask, -10000): onnxruntime looks for the mask at the
    first input of the Add made by a Mul, which is the scores' Mul, and fuses nothing; refrt
    neither."""
    model = attention_block(scale_op="Mul")
    res = optimize_model(model)
    assert "Attention" not in ops(res.model)
    same_counts_as_ort(model, res.model, tmp_path, "mul_scale")


def test_attention_needs_num_heads():
    """The heads come from a Concat'ed shape here: without num_heads no Attention, and a note
    says what to pass; with it, the block fuses."""
    model = attention_block(constant_shapes=False)
    res = optimize_model(model)
    assert "Attention" not in ops(res.model)
    assert any("num_heads" in note for note in res.notes)
    res = optimize_model(model, num_heads=2, hidden_size=8)
    assert ops(res.model)["Attention"] == 1 and not res.notes
    assert_same_outputs(model, res.model, feeds_for(model))


def test_embed_layer_bert_positions(tmp_path):
    """An older BERT export's embeddings: positions as a Slice of a constant [1, max] 0, 1, ...
    table, Add(Add(word, token type), position) -> LayerNormalization, read by an unfused
    attention block (three MatMuls and the residual Add): EmbedLayerNormalization without
    position ids (it counts 0..S-1 itself) and without a mask."""
    hidden = 8
    p = Pattern(inputs=[h.make_tensor_value_info(n, T.INT64, ["batch", "seq"])
                        for n in ("ids", "types")])
    seq = p.op("Unsqueeze", p.op("Gather", p.op("Shape", "ids"), p.c(1, np.int64), axis=0),
               p.c([0], np.int64))
    positions = p.op("Slice", p.c(np.arange(16)[None], np.int64), p.c([0], np.int64), seq,
                     p.c([1], np.int64), p.c([1], np.int64))
    s = p.op("Add", p.op("Gather", p.w(20, hidden), "ids"), p.op("Gather", p.w(2, hidden), "types"))
    e = p.op("Add", s, p.op("Gather", p.w(16, hidden), positions))
    ln = p.op("LayerNormalization", e, p.c(np.ones(hidden)), p.c(np.zeros(hidden)), epsilon=1e-12)
    q, k, v = (p.op("MatMul", ln, p.w(hidden, hidden)) for _ in range(3))
    p.op("Add", p.op("Add", p.op("Add", q, k), v), p.op("Add", ln, p.w(hidden)), out="y")
    model = p.model()
    res = optimize_model(model)
    assert ops(res.model)["EmbedLayerNormalization"] == 1 and "Slice" not in ops(res.model)
    embed = next(n for n in res.model.graph.node if n.op_type == "EmbedLayerNormalization")
    assert len(embed.input) == 7
    feeds = {"ids": RNG.integers(0, 20, (2, 5)), "types": RNG.integers(0, 2, (2, 5))}
    assert_same_outputs(model, res.model, feeds, ort_too=True)
    same_counts_as_ort(model, res.model, tmp_path, "embed_bert")


def test_embed_layer_distilbert_positions(tmp_path):
    """DistilBERT's embeddings: positions Range(0, S, 1) expanded to the ids' shape, no token
    types; the layer norm read as by an unfused attention block of DistilBERT's export (three
    MatMuls, the residual Add, a Shape)."""
    hidden = 8
    p = Pattern(inputs=[h.make_tensor_value_info("ids", T.INT64, ["batch", "seq"])])
    shape = p.op("Shape", "ids")
    count = p.op("Range", p.c(0, np.int64), p.op("Gather", shape, p.c(1, np.int64), axis=0),
                 p.c(1, np.int64))
    positions = p.op("Expand", p.op("Unsqueeze", count, p.c([0], np.int64)), shape)
    e = p.op("Add", p.op("Gather", p.w(20, hidden), "ids"),
             p.op("Gather", p.w(16, hidden), positions))
    ln = p.op("LayerNormalization", e, p.c(np.ones(hidden)), p.c(np.zeros(hidden)), epsilon=1e-12)
    q, k, v = (p.op("MatMul", ln, p.w(hidden, hidden)) for _ in range(3))
    size = p.op("Cast", p.op("ReduceSum", p.op("Shape", ln), keepdims=0), to=T.FLOAT)
    p.op("Add", p.op("Add", p.op("Add", q, k), v), p.op("Add", p.op("Add", ln, p.w(hidden)), size),
         out="y")
    model = p.model()
    res = optimize_model(model)
    assert ops(res.model)["EmbedLayerNormalization"] == 1 and "Range" not in ops(res.model)
    feeds = {"ids": RNG.integers(0, 20, (2, 5))}
    assert_same_outputs(model, res.model, feeds, ort_too=True)
    same_counts_as_ort(model, res.model, tmp_path, "embed_distilbert")


def test_embed_layer_shares_the_mask_index():
    """bert_encoder in PyTorch's spelling, one layer: EmbedLayerNormalization takes the int32
    mask, the Attention reads its mask index, and the ReduceSum is gone."""
    model = exporter_patterns(bert_encoder(layers=1, hidden=16, heads=2))
    res = optimize_model(model, num_heads=2, hidden_size=16)
    embed = next(n for n in res.model.graph.node if n.op_type == "EmbedLayerNormalization")
    att = next(n for n in res.model.graph.node if n.op_type == "Attention")
    assert att.input[3] == embed.output[1] and embed.input[7] == "attention_mask_int32"
    assert "ReduceSum" not in ops(res.model) and ops(res.model)["Cast"] == 4
    assert_same_outputs(model, res.model, bert_feeds(batch=3, seq=8, vocab=100), ort_too=True)


# ---- whole encoders against onnxruntime's optimizer ------------------------------------------

ENCODERS = {
    # bert_encoder as written: onnxruntime recognizes neither its Where mask nor its GELU grouping
    "plain": lambda: bert_encoder(layers=2, hidden=64, heads=4),
    # PyTorch's export spelling: everything fuses
    "hf": lambda: exporter_patterns(bert_encoder(layers=2, hidden=64, heads=4)),
    # both with their layer norms written out in nine nodes each
    "plain_decomposed": lambda: decompose_layer_norms(bert_encoder(layers=2, hidden=64, heads=4)),
    "hf_decomposed": lambda: decompose_layer_norms(
        exporter_patterns(bert_encoder(layers=2, hidden=64, heads=4))),
}
# node counts before -> after, measured with onnxruntime 1.32's optimizer
EXPECTED = {"plain": (86, 76), "hf": (88, 23), "plain_decomposed": (126, 76),
            "hf_decomposed": (128, 23)}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoder_against_onnxruntime(tmp_path, name):
    model = ENCODERS[name]()
    res = optimize_model(model, num_heads=4, hidden_size=64)
    theirs = ort_optimize_bert(model, tmp_path, name)
    assert ops(res.model) == ops(theirs), (ops(res.model), ops(theirs))
    assert (res.nodes_before, res.nodes_after) == EXPECTED[name]
    worst = assert_same_outputs(model, res.model, bert_feeds(batch=3, seq=16), ort_too=True)
    print(f"\n{name}: {res.nodes_before} -> {res.nodes_after} nodes, max rel err {worst:.2e}, "
          f"fused {res.fused_op_counts()}")
    if name.startswith("hf"):
        att = [n for n in res.model.graph.node if n.op_type == "Attention"]
        ort_att = [n for n in theirs.graph.node if n.op_type == "Attention"]
        weights = {t.name: nh.to_array(t) for t in res.model.graph.initializer}
        ort_weights = {t.name: nh.to_array(t) for t in theirs.graph.initializer}
        for a, b in zip(att, ort_att):        # the node onnxruntime writes, weights and all
            assert list(a.input) == list(b.input) and a.attribute == b.attribute
            assert all(np.array_equal(weights[x], ort_weights[x]) for x in a.input[1:3])


def test_encoder_without_num_heads_as_onnxruntime(tmp_path):
    """Without num_heads (the heads are not in a constant shape here) onnxruntime fuses all but
    Attention and EmbedLayerNormalization: so does refrt, with a note."""
    model = exporter_patterns(bert_encoder(layers=2, hidden=64, heads=4))
    res = optimize_model(model)
    theirs = ort_optimize_bert(model, tmp_path, "no_heads", num_heads=0, hidden_size=0)
    assert ops(res.model) == ops(theirs) and "Attention" not in ops(res.model)
    assert res.nodes_after == 68 and any("num_heads" in n for n in res.notes)


def shapes_from_own_dims(model):
    """``model`` (bert_encoder) with each Reshape's shape built as older PyTorch exports build
    it: Concat(Unsqueeze(Gather(Shape(x), 0)), Unsqueeze(Gather(Shape(x), 1)), constants)."""
    g = model.graph
    made_by = {o: n for n in g.node for o in n.output}
    p = Pattern()
    for n in g.node:
        if n.name in ("heads_shape", "merged_shape", "batch_seq", "hidden_shape"):
            continue
        if n.op_type == "Reshape":
            x = n.input[0]
            dims = [p.op("Unsqueeze", p.op("Gather", p.op("Shape", x), p.c(i, np.int64), axis=0),
                         p.c([0], np.int64)) for i in (0, 1)]
            tail = ([4], [16]) if made_by[n.input[1]].name == "heads_shape" else ([64],)
            shape = p.op("Concat", *dims, *(p.c(t, np.int64) for t in tail), axis=0)
            n = h.make_node("Reshape", [x, shape], list(n.output), name=n.name)
        p.nodes.append(n)
    g.ClearField("node")
    g.node.extend(p.nodes)
    g.initializer.extend(p.inits)
    onnx.checker.check_model(model)
    return model


def test_encoder_heads_from_the_graph_as_onnxruntime(tmp_path):
    """With Reshape shapes built from the input's own dims, the Reshape rule turns them into
    constants [0, 0, 4, 16] and both optimizers find the heads without being told."""
    model = shapes_from_own_dims(exporter_patterns(bert_encoder(layers=2, hidden=64, heads=4)))
    res = optimize_model(model)
    theirs = ort_optimize_bert(model, tmp_path, "own_dims", num_heads=0, hidden_size=0)
    assert ops(res.model) == ops(theirs) and res.fusions["Attention"] == 2
    assert (res.nodes_before, res.nodes_after) == (140, 23) and not res.notes
    assert_same_outputs(model, res.model, bert_feeds(batch=3, seq=16), ort_too=True)


def test_optimized_encoder_quantizes_to_qattention(tmp_path):
    """onnxruntime's quantize_dynamic turns refrt's optimized encoder into QAttention and
    QEmbedLayerNormalization, as it does onnxruntime's optimized one (the same ops), and refrt
    runs the result as onnxruntime does."""
    from onnxruntime.quantization import quantize_dynamic

    from ort_helpers import refrt_like_ort
    model = exporter_patterns(bert_encoder(layers=2, hidden=64, heads=4))
    quantized = {}
    for who, fused in (("refrt", optimize_model(model, num_heads=4, hidden_size=64).model),
                       ("ort", ort_optimize_bert(model, tmp_path, "q"))):
        src, dst = tmp_path / f"{who}.onnx", tmp_path / f"{who}_q.onnx"
        onnx.save(fused, src)
        quantize_dynamic(str(src), str(dst), extra_options={"DefaultTensorType": T.FLOAT})
        quantized[who] = onnx.load(dst)
    assert ops(quantized["refrt"]) == ops(quantized["ort"])
    assert {"QAttention", "QEmbedLayerNormalization"} <= set(ops(quantized["refrt"]))
    feeds = bert_feeds(batch=3, seq=16)
    ours = refrt_like_ort(quantized["refrt"]).run(None, feeds)[0]
    theirs = ort_session(quantized["refrt"]).run(None, feeds)[0]
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 1e-5


# ---- what it refuses ------------------------------------------------------------------------

def test_unknown_model_type():
    with pytest.raises(OptimizeError, match="supports bert"):
        optimize_model(bert_encoder(), model_type="gpt2")


@pytest.mark.parametrize("heads,hidden", [(4, 0), (0, 64), (5, 64), (-1, -4)])
def test_bad_sizes(heads, hidden):
    with pytest.raises(OptimizeError, match="num_heads"):
        optimize_model(bert_encoder(), num_heads=heads, hidden_size=hidden)


def test_not_a_bert_is_left_alone():
    model = mobilenet_like()
    res = optimize_model(model)
    assert not res.fusions and res.nodes_before == res.nodes_after
    assert [n.SerializeToString() for n in res.model.graph.node] == \
        [n.SerializeToString() for n in model.graph.node]


def test_model_refrt_cannot_run():
    """A node of an unknown domain: no shapes, so no SkipLayerNormalization (as onnxruntime when
    its shape inference fails), a note saying why, and the rest as usual."""
    p = Pattern()
    lin = p.op("Add", p.op("MatMul", "x", p.w(8, 8)), p.w(8))
    p.nodes.append(h.make_node("Mystery", [lin], ["m"], domain="example.custom"))
    p.op("LayerNormalization", p.op("Add", "m", "x"), p.c(np.ones(8)), p.c(np.zeros(8)), out="y")
    model = p.model()
    model.opset_import.append(h.make_opsetid("example.custom", 1))
    res = optimize_model(model)
    assert "SkipLayerNormalization" not in ops(res.model)
    assert any("could not run" in n for n in res.notes)


def test_not_a_model(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a model at all")
    with pytest.raises(refrt.ModelError):
        optimize_model(str(path))
    with pytest.raises(refrt.ModelError):
        optimize_model(tmp_path / "missing.onnx")
    with pytest.raises(refrt.ModelError):
        optimize_model(42)
    model = gelu_pattern("pytorch")
    assert ops(optimize_model(model.SerializeToString()).model)["Gelu"] == 1


# ---- the command line ---------------------------------------------------------------------

def test_cli(tmp_path, capsys):
    from refrt.cli import main

    src, out = tmp_path / "bert.onnx", tmp_path / "bert_opt.onnx"
    onnx.save(exporter_patterns(bert_encoder(layers=2, hidden=64, heads=4)), src)
    assert main(["optimize", str(src), str(out), "--model-type", "bert", "--num-heads", "4",
                 "--hidden-size", "64"]) == 0
    printed = capsys.readouterr().out
    assert "nodes: 88 -> 23" in printed and "Attention: 2" in printed
    assert ops(onnx.load(out))["Attention"] == 2
    assert main(["optimize", str(src), str(out), "--model-type", "gpt2"]) == 1
    assert "supports bert" in capsys.readouterr().err
