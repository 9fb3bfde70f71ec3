"""Focused tests of the neural-network op families (conv, pool, norm, nn) for behaviour the ONNX
backend suite does not pin down: naive references for Conv, adjointness of ConvTranspose,
onnxruntime's choices, dtypes, read-only inputs and error messages."""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

import refrt
from refrt.registry import NodeContext, lookup, registered

RNG = np.random.default_rng(1234)


def rnd(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def call(op_type, *inputs, opset=22, n_outputs=1, numerics=None, **attrs):
    """Call the registered implementation directly, as the executor would."""
    impl = lookup(op_type, "", opset)
    assert impl is not None, f"{op_type} is not registered at opset {opset}"
    if impl.wants_ctx:
        options = type("Options", (), {"numerics": numerics})() if numerics else None
        attrs["ctx"] = NodeContext("n", op_type, "", opset, n_outputs, options=options,
                                   outputs=tuple(f"o{i}" for i in range(n_outputs)))
    return impl.fn(*inputs, **attrs)


def run_node(op_type, inputs, n_outputs=1, opset=22, **attrs):
    """Run a one-node model through refrt.run."""
    names = [f"i{k}" for k in range(len(inputs))]
    outs = [f"o{k}" for k in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in zip(names, inputs)],
        [helper.make_empty_tensor_value_info(o) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return refrt.run(model, dict(zip(names, inputs)))


# ---------------------------------------------------------------- every schema version

MY_OPS = """Conv ConvTranspose DeformConv Col2Im MaxPool AveragePool GlobalAveragePool GlobalMaxPool
GlobalLpPool LpPool MaxRoiPool MaxUnpool BatchNormalization InstanceNormalization
LayerNormalization GroupNormalization RMSNormalization LRN MeanVarianceNormalization Gemm MatMul
Einsum Det Dropout Attention RotaryEmbedding NegativeLogLikelihoodLoss
SoftmaxCrossEntropyLoss""".split()


@pytest.mark.parametrize("op_type", MY_OPS)
def test_every_schema_version_is_registered(op_type):
    history = sorted({s.since_version for s in onnx.defs.get_all_schemas_with_history()
                      if s.name == op_type and s.domain == ""})
    from refrt.registry import ORT_ONNX_DOMAIN_EXTRAS
    ours = [v for v in registered()[("ai.onnx", op_type)] if (op_type, v) not in ORT_ONNX_DOMAIN_EXTRAS]
    assert sorted(ours) == history


# ---------------------------------------------------------------- Conv against a naive loop

def naive_conv(x, w, b, strides, dilations, pads, group):
    """Direct definition, one output element at a time (small shapes only)."""
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    k = w.shape[2:]
    n_sp = len(k)
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(pads[i], pads[n_sp + i])
                                                          for i in range(n_sp)])
    out = [(xp.shape[2 + i] - ((k[i] - 1) * dilations[i] + 1)) // strides[i] + 1
           for i in range(n_sp)]
    y = np.zeros((n, m, *out))
    for ni, mi in itertools.product(range(n), range(m)):
        gi = mi // (m // group)
        for o in itertools.product(*[range(v) for v in out]):
            acc = 0.0
            for ci in range(cg):
                for kk in itertools.product(*[range(v) for v in k]):
                    pos = tuple(o[i] * strides[i] + kk[i] * dilations[i] for i in range(n_sp))
                    acc += xp[(ni, gi * cg + ci) + pos] * w[(mi, ci) + kk]
            y[(ni, mi) + o] = acc + (b[mi] if b is not None else 0)
    return y


@settings(max_examples=25, deadline=None)
@given(n_sp=st.integers(1, 3), group=st.sampled_from([1, 2, 3]), data=st.data())
def test_conv_matches_naive_definition(n_sp, group, data):
    k = data.draw(st.lists(st.integers(1, 3), min_size=n_sp, max_size=n_sp))
    strides = data.draw(st.lists(st.integers(1, 3), min_size=n_sp, max_size=n_sp))
    dilations = data.draw(st.lists(st.integers(1, 2), min_size=n_sp, max_size=n_sp))
    pads = data.draw(st.lists(st.integers(0, 2), min_size=2 * n_sp, max_size=2 * n_sp))
    size = [(kk - 1) * d + 1 + data.draw(st.integers(0, 3)) for kk, d in zip(k, dilations)]
    cg, mg = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    x = rnd(2, cg * group, *size)
    w = rnd(mg * group, cg, *k)
    b = rnd(mg * group) if data.draw(st.booleans()) else None
    got = call("Conv", x, w, b, strides=strides, dilations=dilations, pads=pads, group=group)
    want = naive_conv(x, w, b, strides, dilations, pads, group)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(n_sp=st.integers(1, 2), group=st.sampled_from([1, 2]), data=st.data())
def test_conv_transpose_is_the_adjoint_of_conv(n_sp, group, data):
    """<Conv(x), y> == <x, ConvTranspose(y)> for the same weights, strides, dilations, pads."""
    k = data.draw(st.lists(st.integers(1, 3), min_size=n_sp, max_size=n_sp))
    strides = data.draw(st.lists(st.integers(1, 3), min_size=n_sp, max_size=n_sp))
    dilations = data.draw(st.lists(st.integers(1, 2), min_size=n_sp, max_size=n_sp))
    pads = [data.draw(st.integers(0, kk - 1)) for kk in k + k]
    size = [(kk - 1) * d + 1 + data.draw(st.integers(0, 4)) for kk, d in zip(k, dilations)]
    c, m = 2 * group, group
    x = rnd(1, c, *size).astype(np.float64)
    w = rnd(m, c // group, *k).astype(np.float64)
    y_shape = call("Conv", x, w, strides=strides, dilations=dilations, pads=pads,
                   group=group).shape
    y = RNG.standard_normal(y_shape)
    # Conv's W (M, C/group, k...) is read by ConvTranspose as (C_in=M, C_out/group, k...)
    # output_padding recovers rows of x that no window reached
    natural = [s * (o - 1) + (kk - 1) * d + 1 - pads[i] - pads[n_sp + i]
               for i, (s, o, kk, d) in enumerate(zip(strides, y_shape[2:], k, dilations))]
    out_pad = [size[i] - natural[i] for i in range(n_sp)]
    xt = call("ConvTranspose", y, w, strides=strides, dilations=dilations, pads=pads,
              group=group, output_padding=out_pad)
    assert xt.shape == x.shape
    lhs = np.vdot(call("Conv", x, w, strides=strides, dilations=dilations, pads=pads,
                       group=group), y)
    np.testing.assert_allclose(lhs, np.vdot(x, xt), rtol=1e-9)


def test_conv_same_lower_puts_the_odd_pad_first():
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
    w = np.ones((1, 1, 2), dtype=np.float32)
    upper = call("Conv", x, w, auto_pad="SAME_UPPER")
    lower = call("Conv", x, w, auto_pad="SAME_LOWER")
    np.testing.assert_array_equal(upper[0, 0], [1, 3, 5, 3])
    np.testing.assert_array_equal(lower[0, 0], [0, 1, 3, 5])


def test_conv_transpose_same_never_pads_negatively():
    """onnxruntime: a SAME total padding below 0 becomes 0 (output smaller than in * stride)."""
    x = np.array([[[1, 2, 3]]], dtype=np.float32)
    w = np.ones((1, 1, 1), dtype=np.float32)
    y = call("ConvTranspose", x, w, strides=[2], auto_pad="SAME_UPPER")
    np.testing.assert_array_equal(y[0, 0], [1, 0, 2, 0, 3])


# ---------------------------------------------------------------- pools

def test_average_pool_ceil_mode_overhang_is_not_counted():
    """count_include_pad counts the declared pads but not the ceil_mode overhang (onnxruntime)."""
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 5)
    y = call("AveragePool", x, kernel_shape=[2], strides=[2], pads=[1, 0], ceil_mode=1,
             count_include_pad=1)
    # windows: [pad, 1], [2, 3], [4, 5] -> (0 + 1) / 2, 5 / 2, 9 / 2
    np.testing.assert_allclose(y[0, 0], [0.5, 2.5, 4.5])
    y = call("AveragePool", x, kernel_shape=[3], strides=[3], ceil_mode=1, count_include_pad=1)
    np.testing.assert_allclose(y[0, 0], [2.0, 4.5])   # last window [4, 5, overhang]


def test_max_pool_indices_storage_order_and_unpool_round_trip():
    x = np.abs(rnd(2, 3, 4, 6)) + 0.1          # positive, so zeros never win a re-pooling
    y, idx = call("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2], n_outputs=2)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(x.ravel()[idx], y)
    _, idx_f = call("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2], storage_order=1,
                    n_outputs=2)
    plane = idx_f % (4 * 6)
    h, w = plane % 4, plane // 4                    # column major within the (n, c) plane
    np.testing.assert_array_equal((idx_f // 24) * 24 + h * 6 + w, idx)
    up = call("MaxUnpool", y, idx, kernel_shape=[2, 2], strides=[2, 2])
    assert up.shape == x.shape
    np.testing.assert_array_equal(up[up != 0], x[up != 0])
    np.testing.assert_array_equal(call("MaxPool", up, kernel_shape=[2, 2], strides=[2, 2]), y)


def test_max_unpool_output_shape_indexes_the_output_like_onnxruntime():
    x = np.array([[[[5, 6], [7, 8]]]], dtype=np.float32)
    idx = np.array([[[[5, 7], [13, 15]]]], dtype=np.int64)
    shape = np.array([1, 1, 5, 5], dtype=np.int64)
    ort_like = call("MaxUnpool", x, idx, shape, kernel_shape=[2, 2], strides=[2, 2])
    assert ort_like[0, 0, 1, 0] == 5 and ort_like[0, 0, 1, 2] == 6    # flat 5, 7 in 5x5
    spec = call("MaxUnpool", x, idx, shape, kernel_shape=[2, 2], strides=[2, 2],
                numerics="spec")
    assert spec[0, 0, 1, 1] == 5 and spec[0, 0, 1, 3] == 6            # flat 5, 7 in 4x4


def test_max_pool_int8_pads_with_the_type_minimum():
    x = np.full((1, 1, 3, 3), -128, dtype=np.int8)
    y = call("MaxPool", x, kernel_shape=[2, 2], pads=[1, 1, 1, 1])
    assert y.dtype == np.int8 and (y == -128).all()


def test_max_roi_pool_rounds_halves_away_from_zero():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    rois = np.array([[0, 1, 1, 1, 1]], dtype=np.float32)
    # scale 0.5: corner 0.5 rounds to 1 (C round), not 0 (numpy's round half to even)
    y = call("MaxRoiPool", x, rois, pooled_shape=[1, 1], spatial_scale=0.5)
    assert y[0, 0, 0, 0] == x[0, 0, 1, 1]


# ---------------------------------------------------------------- normalizations

def test_batch_norm_legacy_training_outputs_follow_onnxruntime():
    """Before version 14, five outputs mean training; saved_var is 1 / sqrt(var + eps)."""
    x, scale, b, mean, var = rnd(4, 3, 5), rnd(3), rnd(3), rnd(3), np.abs(rnd(3)) + 1
    y, run_mean, run_var, saved_mean, saved_var = call(
        "BatchNormalization", x, scale, b, mean, var, opset=9, n_outputs=5, momentum=0.75)
    batch_mean, batch_var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    np.testing.assert_allclose(saved_mean, batch_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(saved_var, 1 / np.sqrt(batch_var + 1e-5), rtol=1e-5)
    np.testing.assert_allclose(run_mean, 0.75 * mean + 0.25 * batch_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run_var, 0.75 * var + 0.25 * batch_var, rtol=1e-5)
    # a single output is inference with the given statistics
    y1 = call("BatchNormalization", x, scale, b, mean, var, opset=9)
    want = (x - mean[:, None]) / np.sqrt(var[:, None] + 1e-5) * scale[:, None] + b[:, None]
    np.testing.assert_allclose(y1, want, rtol=1e-5, atol=1e-5)


def test_layer_norm_bad_axis_names_the_axis():
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        call("LayerNormalization", rnd(2, 3, 4), rnd(4), axis=3, opset=17)


def test_conv_group_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="group=2"):
        call("Conv", rnd(1, 3, 5, 5), rnd(4, 1, 3, 3), group=2)


@pytest.mark.parametrize("kernel,group,attrs", [
    (3, 1, {"pads": [1, 1, 1, 1]}), (3, 8, {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    (1, 1, {}), (1, 2, {})], ids=["3x3", "depthwise", "pointwise", "pointwise-groups"])
def test_conv_session_keeps_one_plan_per_shape(kernel, group, attrs):
    # a session settles a Conv's window and product once per input shape (the node's cache):
    # runs on changing shapes, and back, must each give what a fresh call computes
    w, b = rnd(8, 8 // group, kernel, kernel), rnd(8)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=group, **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 8, "h", "w"])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(b, "b")])
    sess = refrt.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    for shape in [(1, 8, 12, 12), (2, 8, 9, 7), (1, 8, 1, 1), (1, 8, 12, 12), (3, 8, 5, 16)]:
        x = rnd(*shape)
        got = sess.run(None, {"x": x})[0]
        want = call("Conv", x, w, b, group=group, kernel_shape=[kernel, kernel], **attrs)
        assert got.shape == want.shape and np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_group_norm_18_takes_one_scale_per_group():
    x = rnd(2, 4, 3)
    g18 = call("GroupNormalization", x, np.array([2, 3], np.float32),
               np.array([1, -1], np.float32), num_groups=2, opset=18)
    g21 = call("GroupNormalization", x, np.array([2, 2, 3, 3], np.float32),
               np.array([1, 1, -1, -1], np.float32), num_groups=2, opset=21)
    np.testing.assert_allclose(g18, g21, rtol=1e-6)


# ---------------------------------------------------------------- dtypes and read-only inputs

HALF_TYPES = [np.float16, ml_dtypes.bfloat16]


@pytest.mark.parametrize("dtype", HALF_TYPES)
def test_half_precision_in_half_precision_out(dtype):
    x = rnd(1, 2, 5, 5).astype(dtype)
    cases = [
        ("Conv", (x, rnd(3, 2, 3, 3).astype(dtype), rnd(3).astype(dtype)), {}),
        ("ConvTranspose", (x, rnd(2, 3, 2, 2).astype(dtype)), {}),
        ("MaxPool", (x,), {"kernel_shape": [2, 2]}),
        ("AveragePool", (x,), {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1]}),
        ("GlobalAveragePool", (x,), {}),
        ("LRN", (x,), {"size": 3}),
        ("InstanceNormalization", (x, rnd(2).astype(dtype), rnd(2).astype(dtype)), {}),
        ("MatMul", (rnd(3, 4).astype(dtype), rnd(4, 2).astype(dtype)), {"opset": 13}),
        ("Gemm", (rnd(3, 4).astype(dtype), rnd(4, 2).astype(dtype), rnd(2).astype(dtype)),
         {"opset": 13, "alpha": 0.5}),
        ("LayerNormalization", (x, rnd(5).astype(dtype)), {"opset": 17}),
    ]
    for op_type, inputs, attrs in cases:
        out = call(op_type, *inputs, **attrs)
        out = out[0] if isinstance(out, tuple) else out
        assert out.dtype == np.dtype(dtype), op_type
        # and close to the float32 result
        ref = call(op_type, *[i.astype(np.float32) for i in inputs], **attrs)
        ref = ref[0] if isinstance(ref, tuple) else ref
        np.testing.assert_allclose(out.astype(np.float32), ref, rtol=0.05, atol=0.05,
                                   err_msg=op_type)


def test_layer_norm_stash_outputs_are_float32_for_float16():
    _, mean, inv_std = call("LayerNormalization", rnd(2, 3).astype(np.float16),
                            rnd(3).astype(np.float16), opset=17, n_outputs=3)
    assert mean.dtype == np.float32 and inv_std.dtype == np.float32
    assert mean.shape == (2, 1)


def _frozen(*arrays):
    out = []
    for a in arrays:
        a = a.copy()
        a.flags.writeable = False
        out.append(a)
    return out


def test_read_only_inputs_are_not_mutated():
    x, w, b = _frozen(rnd(1, 2, 6, 6), rnd(4, 2, 3, 3), rnd(4))
    s, bb, m, v = _frozen(rnd(2), rnd(2), rnd(2), np.abs(rnd(2)) + 1)
    before = [a.copy() for a in (x, w, b, s, bb, m, v)]
    call("Conv", x, w, b, pads=[1, 1, 1, 1])
    call("ConvTranspose", x, w.swapaxes(0, 1).copy(), strides=[2, 2])
    call("MaxPool", x, kernel_shape=[3, 3], pads=[1, 1, 1, 1], n_outputs=2)
    call("AveragePool", x, kernel_shape=[3, 3], ceil_mode=1, strides=[2, 2])
    call("BatchNormalization", x, s, bb, m, v, opset=15)
    call("BatchNormalization", x, s, bb, m, v, opset=15, training_mode=1, n_outputs=3)
    call("LayerNormalization", x, *_frozen(rnd(6)), opset=17)
    call("LRN", x, size=3)
    call("Gemm", x[0, 0], x[0, 1], b[:1], transB=1, opset=13)
    call("Dropout", x, np.array(0.5, np.float32), np.array(True), seed=3, n_outputs=2)
    for a, a0 in zip((x, w, b, s, bb, m, v), before):
        np.testing.assert_array_equal(a, a0)


# ---------------------------------------------------------------- nn

def test_matmul_promotes_1d_operands_and_broadcasts_batches():
    a, b = rnd(2, 1, 3, 4), rnd(5, 4, 2)
    assert call("MatMul", a, b, opset=13).shape == (2, 5, 3, 2)
    assert call("MatMul", rnd(4), rnd(3, 4, 2), opset=13).shape == (3, 2)
    assert call("MatMul", rnd(3, 4), rnd(4), opset=13).shape == (3,)
    with pytest.raises(ValueError, match="do not match"):
        call("MatMul", rnd(3, 4), rnd(5, 2), opset=13)


def test_gemm_legacy_broadcast_and_integer_types():
    a, b, c = rnd(3, 4), rnd(2, 4), rnd(2)
    y = call("Gemm", a, b, c, transB=1, broadcast=1, alpha=2.0, beta=0.5, opset=6)
    np.testing.assert_allclose(y, 2 * a @ b.T + 0.5 * c, rtol=1e-5, atol=1e-5)
    ai, bi = np.arange(6, dtype=np.int32).reshape(2, 3), np.ones((3, 2), np.int32)
    yi = call("Gemm", ai, bi, np.array([1, 2], np.int32), opset=13)
    assert yi.dtype == np.int32
    np.testing.assert_array_equal(yi, ai @ bi + [1, 2])


def test_einsum_implicit_output_sorts_upper_case_first():
    a, b = rnd(2, 3), rnd(3, 4)
    y = call("Einsum", a, b, equation="bA,Ac", opset=12)   # implicit output "bc"
    np.testing.assert_allclose(y, a @ b, rtol=1e-5)
    y = call("Einsum", a, b, equation="Ba,aC", opset=12)   # implicit output "BC"
    np.testing.assert_allclose(y, a @ b, rtol=1e-5)


def test_dropout_training_is_seeded_and_scaled():
    x = np.ones((64, 64), np.float32)
    ratio, train = np.array(0.25, np.float32), np.array(True)
    y1, m1 = call("Dropout", x, ratio, train, seed=7, n_outputs=2)
    y2, m2 = call("Dropout", x, ratio, train, seed=7, n_outputs=2)
    np.testing.assert_array_equal(y1, y2)
    assert m1.dtype == np.bool_ and 0.65 < m1.mean() < 0.85
    np.testing.assert_allclose(y1[m1], 1 / 0.75)
    assert (y1[~m1] == 0).all()
    y, mask = call("Dropout", x, n_outputs=2, opset=13)              # inference
    assert y is x or np.array_equal(y, x)
    assert mask.all()
    _, mask7 = call("Dropout", x, n_outputs=2, opset=7)
    assert mask7.dtype == np.float32                                 # mask was T before 10


def test_attention_gqa_matches_repeated_heads_and_masked_rows_are_zero():
    q, k, v = rnd(1, 4, 3, 8), rnd(1, 2, 5, 8), rnd(1, 2, 5, 6)
    gqa = call("Attention", q, k, v, opset=23, n_outputs=1)[0]
    mha = call("Attention", q, np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1), opset=23)[0]
    np.testing.assert_allclose(gqa, mha, rtol=1e-6)
    mask = np.ones((3, 5), bool)
    mask[1] = False
    y = call("Attention", q, k, v, mask, opset=23)[0]
    assert np.isfinite(y).all() and (y[:, :, 1] == 0).all()


def test_attention_3d_with_past_and_causal_bottom_right():
    b, s, heads, d = 1, 2, 2, 4
    q, k, v = rnd(b, s, heads * d), rnd(b, s, heads * d), rnd(b, s, heads * d)
    past_k, past_v = rnd(b, heads, 3, d), rnd(b, heads, 3, d)
    y, pk, pv, probs = call("Attention", q, k, v, None, past_k, past_v, opset=23, n_outputs=4,
                            is_causal=1, q_num_heads=heads, kv_num_heads=heads,
                            qk_matmul_output_mode=3)
    assert y.shape == (b, s, heads * d) and pk.shape == (b, heads, 5, d)
    # query i sees keys j <= i + 3 (three cached keys)
    np.testing.assert_array_equal(probs[0, 0] > 0, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


def test_softmax_cross_entropy_ignore_index_and_weights():
    scores, labels = rnd(4, 3), np.array([0, 2, -1, 1], np.int64)
    weights = np.array([1.0, 2.0, 0.5], np.float32)
    loss, log_prob = call("SoftmaxCrossEntropyLoss", scores, labels, weights, opset=13,
                          n_outputs=2, ignore_index=-1)
    lp = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    keep = labels != -1
    w = weights[labels[keep]]
    want = -(lp[keep, labels[keep]] * w).sum() / w.sum()
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(log_prob, lp, rtol=1e-5, atol=1e-6)
    assert loss.shape == () and loss.dtype == np.float32


def test_one_node_models_run_end_to_end():
    x = rnd(1, 3, 8, 8)
    y = run_node("Conv", [x, rnd(4, 3, 3, 3)], pads=[1, 1, 1, 1], strides=[2, 2])[0]
    assert y.shape == (1, 4, 4, 4)
    y, idx = run_node("MaxPool", [x], n_outputs=2, kernel_shape=[2, 2], strides=[2, 2])
    assert y.shape == idx.shape == (1, 3, 4, 4)
