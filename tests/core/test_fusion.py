"""Fused MatMulInteger -> Cast -> Mul -> Add chains: same bits as the separate nodes, same errors,
hooks still see every node, and no fusion where an intermediate value is observable."""

import importlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import refrt
from refrt.errors import NodeError

from helpers import F, const, model, vi

U8, I8, I32 = TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32


def chain_model(k, n, w, w_zp, scale, bias, scale_first=False, bias_first=False, heads=1,
                extra_outputs=(), extra_nodes=()):
    """x [M, K] float -> DynamicQuantizeLinear -> ``heads`` x (MatMulInteger -> Cast -> Mul(scale)
    -> Add(bias)), outputs y0..y{heads-1}; the quantized x is shared by every head, as Q/K/V are."""
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql")]
    inits = [const("w", w), const("w_zp", w_zp), const("w_s", scale)]
    if bias is not None:
        inits.append(const("bias", bias))
    outs = []
    for h in range(heads):
        nodes += [
            helper.make_node("Mul", ["xs", "w_s"], [f"s{h}"], name=f"scales{h}"),
            helper.make_node("MatMulInteger", ["xq", "w", "xz", "w_zp"], [f"c{h}"], name=f"mm{h}"),
            helper.make_node("Cast", [f"c{h}"], [f"cf{h}"], to=F, name=f"cast{h}"),
            helper.make_node("Mul", [f"s{h}", f"cf{h}"] if scale_first else [f"cf{h}", f"s{h}"],
                             [f"m{h}" if bias is not None else f"y{h}"], name=f"mul{h}"),
        ]
        if bias is not None:
            nodes.append(helper.make_node("Add", ["bias", f"m{h}"] if bias_first else [f"m{h}", "bias"],
                                          [f"y{h}"], name=f"add{h}"))
        outs.append(vi(f"y{h}", F, None))
    nodes += list(extra_nodes)
    return model(nodes, [vi("x", F, ["M", k])], outs + list(extra_outputs), inits)


def sessions(m, **options):
    off = refrt.SessionOptions()
    off.graph_optimization_level = refrt.GraphOptimizationLevel.ORT_DISABLE_ALL
    return refrt.InferenceSession(m, **options), refrt.InferenceSession(m, off, **options)


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


cases = st.fixed_dictionaries({
    # K a multiple of 64 (BERT's widths): the prepared GEMM of quant.matmul_integer_scaled
    "m": st.integers(1, 40), "k": st.one_of(st.integers(1, 200), st.sampled_from([64, 128, 192])),
    "n": st.integers(1, 70),
    "w_dtype": st.sampled_from([np.int8, np.uint8]),
    "per_column": st.booleans(), "with_bias": st.booleans(),
    "scale_first": st.booleans(), "bias_first": st.booleans(),
    "x_scale": st.sampled_from([1e-3, 1.0, 1e4]), "seed": st.integers(0, 2**31),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=cases)
def test_fused_chain_gives_the_same_bits_as_the_nodes(c):
    rng = np.random.default_rng(c["seed"])
    info = np.iinfo(c["w_dtype"])
    w = rng.integers(info.min, info.max, (c["k"], c["n"]), endpoint=True).astype(c["w_dtype"])
    w_zp = np.array(0 if c["w_dtype"] == np.int8 else 128, c["w_dtype"])
    scale = (rng.random(c["n"] if c["per_column"] else ()) * 0.02 + 1e-4).astype(np.float32)
    bias = (rng.standard_normal(c["n"]) * 10).astype(np.float32) if c["with_bias"] else None
    m = chain_model(c["k"], c["n"], w, w_zp, scale, bias, c["scale_first"], c["bias_first"])
    fused, plain = sessions(m)
    assert len(fused._plan.fused_steps) == len(fused._plan.steps) - (3 if bias is not None else 2)
    assert len(plain._plan.fused_steps) == len(plain._plan.steps)
    x = (rng.standard_normal((c["m"], c["k"])) * c["x_scale"]).astype(np.float32)
    x_before = x.copy()
    (y,) = fused.run(None, {"x": x})
    (y_plain,) = plain.run(None, {"x": x})
    assert same_bits(y, y_plain)
    assert np.array_equal(x, x_before)


def test_shared_input_and_moved_steps_keep_values_alive():
    # three heads read the same quantized x; each fused step runs where its Add was, after the
    # last MatMulInteger that reads x: x must still be there
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, (64, 48)).astype(np.int8)
    m = chain_model(64, 48, w, np.array(0, np.int8), np.full(48, 0.01, np.float32),
                    rng.standard_normal(48).astype(np.float32), heads=3)
    fused, plain = sessions(m)
    assert len(fused._plan.fused_steps) == len(fused._plan.steps) - 9
    x = rng.standard_normal((10, 64)).astype(np.float32)
    for a, b in zip(fused.run(None, {"x": x}), plain.run(None, {"x": x})):
        assert same_bits(a, b)


@pytest.mark.parametrize("w_dtype, w_zp, per_column", [(np.int8, 0, False), (np.uint8, 128, True),
                                                      (np.int8, 3, True)])
def test_fused_chain_runs_the_prepared_gemm(w_dtype, w_zp, per_column):
    rng = np.random.default_rng(4)
    info = np.iinfo(w_dtype)
    w = rng.integers(info.min, info.max, (128, 80), endpoint=True).astype(w_dtype)
    scale = np.full(80 if per_column else (), 0.01, np.float32)
    m = chain_model(128, 80, w, np.array(w_zp, w_dtype), scale, rng.standard_normal(80).astype(np.float32),
                    heads=2)
    fused, plain = sessions(m)
    for rows in (40, 3, 1, 0):     # AMX rows, VNNI rows (below one AMX tile), one, none
        x = rng.standard_normal((rows, 128)).astype(np.float32)
        for a, b in zip(fused.run(None, {"x": x}), plain.run(None, {"x": x})):
            assert same_bits(a, b)
    ctxs = [s.kwargs["ctx"] for s in fused._plan.steps if s.node.op_type == "MatMulInteger"]
    prepared = refrt.kernels.gemm.default_kernel() in ("amx", "vnni", "avx2")
    assert all((("scaled_gemm",) in c.cache) == prepared for c in ctxs)


def test_no_fusion_where_an_intermediate_is_observable():
    rng = np.random.default_rng(2)
    w = rng.integers(-128, 128, (8, 4)).astype(np.int8)
    args = (8, 4, w, np.array(0, np.int8), np.float32(0.1), np.ones(4, np.float32))
    # the Cast output is a graph output
    m = chain_model(*args, extra_outputs=[vi("cf0", F, None)])
    assert len(refrt.InferenceSession(m)._plan.fused_steps) == len(m.graph.node)
    # the int32 product has a second reader
    m = chain_model(*args, extra_nodes=[helper.make_node("Cast", ["c0"], ["c_again"], to=F)],
                    extra_outputs=[vi("c_again", F, None)])
    assert len(refrt.InferenceSession(m)._plan.fused_steps) == len(m.graph.node)
    # the product is cast to double, not float
    m = chain_model(*args)
    next(n for n in m.graph.node if n.name == "cast0").attribute[0].i = TensorProto.DOUBLE
    assert len(refrt.InferenceSession(m)._plan.fused_steps) == len(m.graph.node)
    # the Mul output (before Add) is read by a subgraph: Cast and Mul still fuse, the Add stays
    m = chain_model(*args)
    branch = helper.make_graph([helper.make_node("Identity", ["m0"], ["z"])], "b", [], [vi("z", F, None)])
    m.graph.node.append(helper.make_node("If", ["flag"], ["picked"], then_branch=branch, else_branch=branch))
    m.graph.input.append(vi("flag", TensorProto.BOOL, []))
    m.graph.output.append(vi("picked", F, None))
    sess = refrt.InferenceSession(m)
    assert len(sess._plan.fused_steps) == len(m.graph.node) - 2
    x = rng.standard_normal((3, 8)).astype(np.float32)
    y, picked = sess.run(None, {"x": x, "flag": np.array(True)})
    off = refrt.SessionOptions()
    off.graph_optimization_level = 0
    y0, picked0 = refrt.InferenceSession(m, off).run(None, {"x": x, "flag": np.array(True)})
    assert same_bits(y, y0) and same_bits(picked, picked0)


def test_hooks_see_every_node_and_intermediate():
    rng = np.random.default_rng(3)
    w = rng.integers(-128, 128, (16, 8)).astype(np.int8)
    m = chain_model(16, 8, w, np.array(0, np.int8), np.float32(0.05), np.ones(8, np.float32))
    sess = refrt.InferenceSession(m)
    seen = {}
    sess.add_hook(lambda node, inputs, outputs: seen.update({node.name: outputs}))
    x = rng.standard_normal((4, 16)).astype(np.float32)
    (y_hooked,) = sess.run(None, {"x": x})
    assert set(seen) == {n.name for n in m.graph.node}
    assert seen["mm0"][0].dtype == np.int32 and seen["cast0"][0].dtype == np.float32
    sess._hooks.clear()
    sess._split = ((), ())
    (y,) = sess.run(None, {"x": x})
    assert same_bits(y, y_hooked)


def test_scale_the_kernel_does_not_cover_runs_the_nodes():
    # a per-row scale [M, 1] broadcasts across columns: the nodes' own code runs, same bits
    rng = np.random.default_rng(4)
    w = rng.integers(-128, 128, (16, 8)).astype(np.int8)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "w", "xz"], ["c"], name="mm"),
             helper.make_node("Cast", ["c"], ["cf"], to=F),
             helper.make_node("Mul", ["cf", "row_scale"], ["y"])]
    m = model(nodes, [vi("x", F, ["M", 16]), vi("row_scale", F, ["M", 1])], [vi("y", F, None)],
              [const("w", w)])
    fused, plain = sessions(m)
    assert len(fused._plan.fused_steps) == 2
    feeds = {"x": rng.standard_normal((5, 16)).astype(np.float32),
             "row_scale": rng.random((5, 1)).astype(np.float32)}
    assert same_bits(fused.run(None, feeds)[0], plain.run(None, feeds)[0])


def test_a_failing_member_is_named():
    rng = np.random.default_rng(5)
    w = rng.integers(-128, 128, (16, 8)).astype(np.int8)
    m = chain_model(16, 8, w, np.array(0, np.int8), np.float32(0.05), np.ones(8, np.float32))
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "K"   # K no longer checked by feeds
    sess = refrt.InferenceSession(m)
    with pytest.raises(NodeError) as e:
        sess.run(None, {"x": np.ones((2, 5), np.float32)})
    assert "mm0" in str(e.value) and "MatMulInteger" in str(e.value)


# ---------------------------------------------------------------- GELU (erf form)

def gelu_model(form, divide, swap, dtype=F):
    """y = GELU(x) written as exporters do: u = x / sqrt(2) (Div) or x * (1/sqrt(2)) (Mul),
    a = erf(u) + 1, then ``form``; ``swap`` flips the operands of every commutative node."""
    def mul(a, b, out):
        return helper.make_node("Mul", [b, a] if swap else [a, b], [out])

    c = np.float32(np.sqrt(2.0)) if divide else np.float32(1 / np.sqrt(2.0))
    nodes = [helper.make_node("Div", ["x", "c"], ["u"]) if divide else mul("x", "c", "u"),
             helper.make_node("Erf", ["u"], ["e"], name="erf"),
             helper.make_node("Add", ["one", "e"] if swap else ["e", "one"], ["a"])]
    if form == "(x*a)*h":
        nodes += [mul("x", "a", "t"), mul("t", "half", "y")]
    elif form == "(x*h)*a":
        nodes += [mul("x", "half", "h"), mul("h", "a", "y")]
    else:
        nodes += [mul("a", "half", "h"), mul("x", "h", "y")]
    inits = [const("c", c), const("one", np.float32(1)), const("half", np.float32(0.5))]
    if dtype != F:
        inits = [const(t.name, onnx_to(t, dtype)) for t in inits]
    return model(nodes, [vi("x", dtype, None)], [vi("y", dtype, None)], inits, opset=17)


def onnx_to(t, dtype):
    from onnx import numpy_helper
    from onnx.helper import tensor_dtype_to_np_dtype
    return numpy_helper.to_array(t).astype(tensor_dtype_to_np_dtype(dtype))


GELU_INPUTS = np.concatenate([np.linspace(-12, 12, 4001, dtype=np.float32),
                              np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 3.4e38])])


@pytest.mark.parametrize("form", ["(x*a)*h", "(x*h)*a", "x*(a*h)"])
@pytest.mark.parametrize("divide", [True, False])
@pytest.mark.parametrize("swap", [False, True])
def test_gelu_fused_gives_the_same_bits_as_the_nodes(form, divide, swap):
    m = gelu_model(form, divide, swap)
    fused, plain = sessions(m)
    assert len(fused._plan.fused_steps) == 1 and len(plain._plan.fused_steps) == 5
    rng = np.random.default_rng(7)
    x = np.concatenate([GELU_INPUTS, (rng.standard_normal(20001) * 3).astype(np.float32)]).reshape(2, -1)
    assert same_bits(fused.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])


def test_gelu_outside_the_kernel_runs_the_nodes():
    # float16 x and numerics="spec" (float64 erf) are not the kernel's: same bits as the nodes
    m16 = gelu_model("(x*a)*h", True, False, dtype=TensorProto.FLOAT16)
    fused, plain = sessions(m16)
    assert len(fused._plan.fused_steps) == 1
    x16 = np.linspace(-6, 6, 999).astype(np.float16)
    assert np.array_equal(fused.run(None, {"x": x16})[0].view(np.uint16),
                          plain.run(None, {"x": x16})[0].view(np.uint16))
    m = gelu_model("(x*h)*a", False, True)
    spec = refrt.InferenceSession(m, numerics="spec")
    off = refrt.SessionOptions()
    off.graph_optimization_level = refrt.GraphOptimizationLevel.ORT_DISABLE_ALL
    spec_plain = refrt.InferenceSession(m, off, numerics="spec")
    x = GELU_INPUTS.reshape(1, -1)
    assert same_bits(spec.run(None, {"x": x})[0], spec_plain.run(None, {"x": x})[0])
    # ... and they differ from the default numerics somewhere (the erf is another function)
    assert not same_bits(spec.run(None, {"x": x})[0], sessions(m)[0].run(None, {"x": x})[0])


def test_gelu_not_fused_when_an_intermediate_is_read_elsewhere():
    m = gelu_model("(x*a)*h", True, False)
    m.graph.output.append(vi("e", F, None))
    assert len(refrt.InferenceSession(m)._plan.fused_steps) == 5


# ---------------------------------------------------------------- Add -> LayerNormalization

def add_ln_model(shape, b_shape, bias=True, swap=False, axis=-1, outputs=("y",)):
    n = shape[-1] if axis == -1 else int(np.prod(shape[axis:]))
    rng = np.random.default_rng(1)
    inits = [const("g", (rng.random(shape[axis:]) + 0.5).astype(np.float32))]
    ln_inputs = ["s", "g"]
    if bias:
        inits.append(const("beta", rng.standard_normal(shape[axis:]).astype(np.float32)))
        ln_inputs.append("beta")
    assert n > 0
    nodes = [helper.make_node("Add", ["b", "a"] if swap else ["a", "b"], ["s"]),
             helper.make_node("LayerNormalization", ln_inputs, list(outputs), axis=axis, epsilon=1e-5)]
    return model(nodes, [vi("a", F, list(shape)), vi("b", F, list(b_shape))],
                 [vi(o, F, None) for o in outputs if o], inits, opset=17)


@pytest.mark.parametrize("shape", [(8, 768), (3, 5, 301), (1, 4096)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("swap", [False, True])
def test_add_layer_norm_fused_gives_the_same_bits_as_the_nodes(shape, bias, swap):
    m = add_ln_model(shape, shape, bias, swap)
    fused, plain = sessions(m)
    assert len(fused._plan.fused_steps) == 1 and len(plain._plan.fused_steps) == 2
    rng = np.random.default_rng(3)
    feeds = {"a": (rng.standard_normal(shape) * 5 + 3).astype(np.float32),
             "b": rng.standard_normal(shape).astype(np.float32)}
    before = {k: v.copy() for k, v in feeds.items()}
    assert same_bits(fused.run(None, feeds)[0], plain.run(None, feeds)[0])
    assert all(np.array_equal(feeds[k], before[k]) for k in feeds)


def test_add_layer_norm_outside_the_kernel_runs_the_nodes():
    rng = np.random.default_rng(4)
    cases = [add_ln_model((8, 768), (768,)),            # broadcast residual: the nodes' own code
             add_ln_model((8, 4, 300), (8, 4, 300), axis=-2)]   # normalized over two axes
    for m in cases:
        fused, plain = sessions(m)
        assert len(fused._plan.fused_steps) == 1
        feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
                 for i in m.graph.input}
        assert same_bits(fused.run(None, feeds)[0], plain.run(None, feeds)[0])
    # Mean and InvStdDev requested: the chain is not fused (the fused step has one output)
    m = add_ln_model((8, 768), (8, 768), outputs=("y", "mean", "inv"))
    assert len(refrt.InferenceSession(m)._plan.fused_steps) == 2


# ---------------------------------------------------------------- MatMul -> Add

@pytest.mark.parametrize("a_shape, w_shape, c_shape, dtype", [
    ((5, 7), (7, 3), (3,), np.float32),
    ((2, 4, 5, 7), (2, 4, 7, 6), (1, 1, 1, 6), np.float32),    # an attention mask's shape
    ((5, 7), (7, 3), (3,), np.float64),
    ((5, 7), (7, 3), (4, 5, 3), np.float32),    # the bias widens the result: the Add node runs
    ((5, 7), (7, 3), (3,), np.float16),         # float16: the Add node runs
    ((64, 768), (768, 96), (96,), np.float32),  # big enough for the packed weights (AVX-512)
    ((2, 24, 256), (256, 350), (350,), np.float32),   # packed, a 30-column tail panel
    ((64, 768), (768, 96), (1, 96), np.float32),      # packed product, the Add node adds
])
def test_matmul_add_fused_gives_the_same_bits_as_the_nodes(a_shape, w_shape, c_shape, dtype):
    t = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    rng = np.random.default_rng(8)
    m = model([helper.make_node("MatMul", ["a", "w"], ["p"]), helper.make_node("Add", ["c", "p"], ["y"])],
              [vi("a", t, list(a_shape))], [vi("y", t, None)],
              [const("w", rng.standard_normal(w_shape).astype(dtype)),
               const("c", rng.standard_normal(c_shape).astype(dtype))])
    fused, plain = sessions(m)
    assert len(fused._plan.fused_steps) == 1
    a = rng.standard_normal(a_shape).astype(dtype)
    y, y0 = fused.run(None, {"a": a})[0], plain.run(None, {"a": a})[0]
    assert y.dtype == y0.dtype and y.shape == y0.shape
    assert np.array_equal(y.view(np.uint8), y0.view(np.uint8))
    (again,) = fused.run(None, {"a": a})   # the weights were not written into
    assert np.array_equal(again.view(np.uint8), y0.view(np.uint8))


def test_matmul_with_constant_weights_runs_on_the_packed_kernel():
    # numerics="spec" multiplies in refrt's own order: the packed kernel (AVX-512), and the
    # MatMul -> Add pair as one step
    fgemm = importlib.import_module(refrt.kernels.__name__ + ".fgemm")
    if not fgemm.packed_available():
        pytest.skip("the packed float32 kernel needs AVX-512; this CPU uses the BLAS")
    rng = np.random.default_rng(9)
    w = rng.standard_normal((768, 96)).astype(np.float32)
    c = rng.standard_normal(96).astype(np.float32)
    m = model([helper.make_node("MatMul", ["a", "w"], ["p"]), helper.make_node("Add", ["p", "c"], ["y"])],
              [vi("a", TensorProto.FLOAT, [64, 768])], [vi("y", TensorProto.FLOAT, None)],
              [const("w", w), const("c", c)])
    fused, plain = sessions(m, numerics="spec")
    a = rng.standard_normal((64, 768)).astype(np.float32)
    y = fused.run(None, {"a": a})[0]
    plain.run(None, {"a": a})
    ctx = plain._plan.steps[0].kwargs["ctx"]
    assert ("packed_f32",) in ctx.cache                  # packed once, kept for the next runs
    want = fgemm.matmul_packed_f32(a, fgemm.pack_b_f32(w)) + c
    assert same_bits(y, want)
    np.testing.assert_allclose(y, a @ w + c, rtol=1e-4, atol=1e-4)
    # the default numerics multiply in onnxruntime's order (kernels/sgemm.py, B packed as a
    # constant: K in blocks of 256) and then add, fused or not
    sgemm = importlib.import_module(refrt.kernels.__name__ + ".sgemm")
    from refrt.ops._common import physical_cores

    want = sgemm.sgemm(a, w, packed=True, threads=physical_cores()) + c
    for sess in sessions(m):
        assert same_bits(sess.run(None, {"a": a})[0], want)


# ---------------------------------------------------------------- Mul/Div -> Add(mask) -> Softmax

def scaled_softmax_model(x_shape, mask_shape, op="Mul", scalar_first=False, opset=17, axis=-1):
    c = np.float32(0.125 if op == "Mul" else 8.0)
    pre = ["c", "x"] if scalar_first else ["x", "c"]
    nodes = [helper.make_node(op, pre, ["s"]), helper.make_node("Add", ["s", "mask"], ["t"]),
             helper.make_node("Softmax", ["t"], ["y"], axis=axis)]
    return model(nodes, [vi("x", TensorProto.FLOAT, list(x_shape)), vi("mask", TensorProto.FLOAT, list(mask_shape))],
                 [vi("y", TensorProto.FLOAT, None)], [const("c", np.array(c, np.float32))], opset=opset)


@pytest.mark.parametrize("x_shape, mask_shape, op, scalar_first, opset, axis", [
    ((1, 12, 128, 128), (1, 1, 1, 128), "Mul", False, 17, -1),   # BERT's attention
    ((2, 4, 64, 100), (2, 1, 1, 100), "Div", False, 17, 3),      # one mask row per batch, a tail
    ((2, 4, 64, 100), (100,), "Mul", True, 17, -1),
    ((3, 64, 70), (3, 64, 70), "Mul", False, 11, 2),             # opset 11: flattened at the last axis
    ((2, 4, 64, 100), (2, 4, 1, 1), "Mul", False, 17, -1),       # mask rows are not contiguous: the nodes
    ((4, 8, 8), (1, 1, 8), "Mul", False, 17, -1),                # too small for the row kernel: the nodes
    ((2, 4, 64, 100), (2, 4, 64, 100), "Mul", False, 17, 2),     # not the last axis: the nodes
])
def test_scale_mask_softmax_fused_gives_the_same_bits_as_the_nodes(x_shape, mask_shape, op, scalar_first,
                                                                   opset, axis):
    rng = np.random.default_rng(12)
    m = scaled_softmax_model(x_shape, mask_shape, op, scalar_first, opset, axis)
    fused, plain = sessions(m)
    assert len(fused._plan.fused_steps) == 1
    x = (rng.standard_normal(x_shape) * 4).astype(np.float32)
    mask = np.where(rng.random(mask_shape) < 0.3, np.float32(-10000), np.float32(0)).astype(np.float32)
    x_before, mask_before = x.copy(), mask.copy()
    y, y0 = fused.run(None, {"x": x, "mask": mask})[0], plain.run(None, {"x": x, "mask": mask})[0]
    assert same_bits(y, y0)
    assert same_bits(x, x_before) and same_bits(mask, mask_before)


def test_scale_mask_softmax_fused_uses_the_row_kernel(monkeypatch):
    rows = importlib.import_module(refrt.kernels.__name__ + ".rows")
    calls = []
    real = rows.scale_add_softmax_rows
    monkeypatch.setattr(rows, "scale_add_softmax_rows", lambda *a: calls.append(1) or real(*a))
    fused, _ = sessions(scaled_softmax_model((1, 12, 128, 128), (1, 1, 1, 128)))
    x = np.random.default_rng(3).standard_normal((1, 12, 128, 128)).astype(np.float32)
    y = fused.run(None, {"x": x, "mask": np.zeros((1, 1, 1, 128), np.float32)})[0]
    assert calls == [1]
    np.testing.assert_allclose(y.sum(axis=-1), 1, rtol=1e-5)
