"""CausalConvWithState, LinearAttention (opset 27) and SwiGLU (opset 28): the native bodies against
the schemas' own function bodies on random inputs, against naive references, prefill against
token-by-token decoding, and the behaviour the backend suite does not pin down (types kept, inputs
left untouched, error messages)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

import refrt
from refrt import registry
from refrt.ops._common import onnx_elem_type

RNG = np.random.default_rng(27)
BF16 = np.dtype(ml_dtypes.bfloat16)
OPSET = {"CausalConvWithState": 27, "LinearAttention": 27, "SwiGLU": 28}


def rnd(*shape, dtype=np.float32, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def one_node_model(op_type, inputs, n_outputs, **attrs):
    """A model of one ``op_type`` node; ``inputs`` is a list of arrays, None for an omitted one."""
    names = [f"i{k}" if a is not None else "" for k, a in enumerate(inputs)]
    while names and names[-1] == "":
        names.pop()
    outs = [f"o{k}" for k in range(n_outputs)]
    graph_in = [helper.make_tensor_value_info(n, onnx_elem_type(a.dtype), list(a.shape))
                for n, a in zip(names, inputs) if n]
    graph_out = [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in outs]
    g = helper.make_graph([helper.make_node(op_type, names, outs, **attrs)], "g", graph_in,
                          graph_out)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET[op_type])])
    feeds = {n: a for n, a in zip(names, inputs) if n}
    return m, feeds


def run_native(op_type, inputs, n_outputs=1, **attrs):
    m, feeds = one_node_model(op_type, inputs, n_outputs, **attrs)
    return refrt.run(m, feeds)


def run_function_body(monkeypatch, op_type, inputs, n_outputs=1, **attrs):
    """The same node with refrt's own body hidden, so the schema's function body runs."""
    m, feeds = one_node_model(op_type, inputs, n_outputs, **attrs)
    real_lookup = registry.lookup
    with monkeypatch.context() as mp:
        mp.setattr(registry, "lookup", lambda t, d, o: None if t == op_type else real_lookup(t, d, o))
        sess = refrt.InferenceSession(m)
        assert [s.node.op_type for s in sess._plan.steps] == [op_type]
        return sess.run(None, feeds)


def assert_same(native, reference, rtol, atol):
    assert len(native) == len(reference)
    for a, b in zip(native, reference):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=rtol, atol=atol)


def impl(op_type):
    found = registry.lookup(op_type, "", OPSET[op_type])
    assert found is not None
    return found.fn


# ---------------------------------------------------------------- native == function body

CONV_SHAPES = [(2, 4, 8, 4), (1, 3, 1, 3), (2, 5, 2, 5), (1, 2, 6, 1), (3, 1, 7, 2)]


@pytest.mark.parametrize("shape", CONV_SHAPES)
@pytest.mark.parametrize("with_bias, with_past, activation", [
    (False, False, "none"), (True, False, "silu"), (False, True, "swish"), (True, True, "none"),
    (True, True, "silu"), (False, True, "none")])
def test_causal_conv_matches_function_body(monkeypatch, shape, with_bias, with_past, activation):
    b, c, length, k = shape
    inputs = [rnd(b, c, length), rnd(c, 1, k), rnd(c) if with_bias else None,
              rnd(b, c, k - 1) if with_past else None]
    native = run_native("CausalConvWithState", inputs, 2, activation=activation)
    body = run_function_body(monkeypatch, "CausalConvWithState", inputs, 2, activation=activation)
    assert_same(native, body, rtol=1e-5, atol=1e-5)
    assert native[1].shape == (b, c, k - 1)


@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_causal_conv_sixteen_bit_matches_function_body(monkeypatch, dtype):
    inputs = [rnd(2, 3, 6, dtype=dtype), rnd(3, 1, 3, dtype=dtype), rnd(3, dtype=dtype),
              rnd(2, 3, 2, dtype=dtype)]
    native = run_native("CausalConvWithState", inputs, 2, activation="silu")
    body = run_function_body(monkeypatch, "CausalConvWithState", inputs, 2, activation="silu")
    assert native[0].dtype == native[1].dtype == dtype
    assert_same(native, body, rtol=1e-2, atol=1e-2)
    np.testing.assert_array_equal(native[1], body[1])      # the state is copied, not computed


def linear_attention_inputs(b, t, hq, hkv, dk, dv, rule, with_past, per_key_decay=True,
                            shared_beta=False, dtype=np.float32, state_dtype=None):
    key = rnd(b, t, hkv, dk)
    key = (key / np.linalg.norm(key, axis=-1, keepdims=True)).reshape(b, t, hkv * dk)
    decay = beta = None
    if rule in ("gated", "gated_delta"):
        decay = -np.abs(rnd(b, t, hkv * dk if per_key_decay else hkv, scale=0.3))
    if rule in ("delta", "gated_delta"):
        beta = RNG.random((b, t, 1 if shared_beta else hkv)).astype(np.float32)
    past = rnd(b, hkv, dk, dv, scale=0.2) if with_past else None
    cast = [x if x is None else x.astype(dtype) for x in (rnd(b, t, hq * dk), key,
                                                           rnd(b, t, hkv * dv), decay, beta)]
    if past is not None:
        past = past.astype(state_dtype or dtype)
    return cast[:3] + [past] + cast[3:]


LA_CASES = [
    # (b, t, hq, hkv, dk, dv, rule, with_past, per_key_decay, shared_beta, scale)
    (2, 5, 2, 2, 4, 3, "linear", False, True, False, 0.0),
    (1, 3, 4, 2, 3, 5, "linear", True, True, False, 0.5),
    (2, 4, 2, 1, 4, 4, "gated", False, True, False, 0.0),
    (1, 6, 3, 3, 2, 4, "gated", True, False, False, 0.0),
    (2, 4, 4, 4, 4, 2, "delta", False, True, False, 0.0),
    (1, 1, 4, 2, 4, 4, "delta", True, True, True, 0.25),
    (2, 4, 4, 2, 4, 3, "gated_delta", False, True, False, 0.0),
    (1, 3, 2, 2, 3, 3, "gated_delta", True, False, True, 0.0),
    (2, 1, 6, 3, 4, 4, "gated_delta", True, True, False, 2.0),
]


@pytest.mark.parametrize("case", LA_CASES, ids=lambda c: f"{c[6]}-t{c[1]}-hq{c[2]}-hkv{c[3]}"
                         f"-{'past' if c[7] else 'nopast'}")
def test_linear_attention_matches_function_body(monkeypatch, case):
    b, t, hq, hkv, dk, dv, rule, with_past, per_key, shared_beta, scale = case
    inputs = linear_attention_inputs(b, t, hq, hkv, dk, dv, rule, with_past, per_key, shared_beta)
    attrs = dict(q_num_heads=hq, kv_num_heads=hkv, update_rule=rule, scale=scale)
    native = run_native("LinearAttention", inputs, 2, **attrs)
    body = run_function_body(monkeypatch, "LinearAttention", inputs, 2, **attrs)
    assert_same(native, body, rtol=1e-5, atol=1e-5)
    assert native[0].shape == (b, t, hq * dv) and native[1].shape == (b, hkv, dk, dv)


def test_linear_attention_float16_with_float32_state_matches_function_body(monkeypatch):
    inputs = linear_attention_inputs(2, 3, 4, 2, 4, 4, "gated_delta", True, dtype=np.float16,
                                     state_dtype=np.float32)
    attrs = dict(q_num_heads=4, kv_num_heads=2)
    native = run_native("LinearAttention", inputs, 2, **attrs)
    body = run_function_body(monkeypatch, "LinearAttention", inputs, 2, **attrs)
    assert native[0].dtype == np.float16 and native[1].dtype == np.float32
    assert_same(native, body, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape", [(2, 3), (4,), (2, 3, 5), ()])
@pytest.mark.parametrize("alpha", [1.0, 0.5, 1.702])
def test_swiglu_matches_function_body(monkeypatch, shape, alpha):
    a, b = rnd(*shape, scale=3.0), rnd(*shape)
    native = run_native("SwiGLU", [a, b], alpha=alpha)
    body = run_function_body(monkeypatch, "SwiGLU", [a, b], alpha=alpha)
    assert_same(native, body, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, BF16, np.float64])
def test_swiglu_other_types_match_function_body_and_round_once(monkeypatch, dtype):
    a, b = rnd(3, 7, dtype=dtype, scale=3.0), rnd(3, 7, dtype=dtype)
    native = run_native("SwiGLU", [a, b])
    body = run_function_body(monkeypatch, "SwiGLU", [a, b])
    assert native[0].dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 2e-2        # the body rounds the gate first
    assert_same(native, body, rtol=tol, atol=tol)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    once = impl("SwiGLU")(a32, b32).astype(dtype)
    if dtype != np.float64:
        np.testing.assert_array_equal(native[0], once)


# ---------------------------------------------------------------- naive references, decoding

def test_causal_conv_is_conv_with_left_zero_padding():
    x, w, bias = rnd(2, 3, 9), rnd(3, 1, 4), rnd(3)
    y, state = impl("CausalConvWithState")(x, w, bias)
    conv = registry.lookup("Conv", "", 22).fn
    np.testing.assert_allclose(y, conv(x, w, bias, group=3, pads=[3, 0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(state, x[:, :, -3:])


def test_causal_conv_short_input_keeps_zeros_and_past_in_state():
    x, w, past = rnd(1, 2, 2), rnd(2, 1, 5), rnd(1, 2, 4)
    fn = impl("CausalConvWithState")
    np.testing.assert_array_equal(fn(x, w)[1], np.concatenate((np.zeros((1, 2, 2)), x), 2))
    np.testing.assert_array_equal(fn(x, w, None, past)[1], np.concatenate((past[:, :, 2:], x), 2))
    y, state = fn(x, rnd(2, 1, 1))                                 # k = 1: no state at all
    assert y.shape == x.shape and state.shape == (1, 2, 0)


@pytest.mark.parametrize("activation", ["none", "silu"])
def test_causal_conv_prefill_equals_token_by_token_decoding(activation):
    x, w, bias, past = rnd(2, 3, 7), rnd(3, 1, 4), rnd(3), rnd(2, 3, 3)
    fn = impl("CausalConvWithState")
    y, final = fn(x, w, bias, past, activation=activation)
    state, steps = past, []
    for i in range(7):
        y_i, state = fn(x[:, :, i:i + 1], w, bias, state, activation=activation)
        steps.append(y_i)
    np.testing.assert_allclose(np.concatenate(steps, axis=2), y, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(state, final)


def test_linear_rule_is_causal_unnormalized_attention():
    """o_t = scale * sum_{s <= t} (q_t . k_s) v_s, per head, with GQA head sharing."""
    b, t, hq, hkv, d = 1, 5, 4, 2, 3
    q, k, v = rnd(b, t, hq * d), rnd(b, t, hkv * d), rnd(b, t, hkv * d)
    y, state = impl("LinearAttention")(q, k, v, q_num_heads=hq, kv_num_heads=hkv,
                                       update_rule="linear")
    q4, k4, v4 = (a.reshape(b, t, -1, d).astype(np.float64) for a in (q, k, v))
    expect = np.zeros((b, t, hq, d))
    for h in range(hq):
        g = h // (hq // hkv)
        scores = np.tril(q4[0, :, h] @ k4[0, :, g].T)              # (t, t), causal
        expect[0, :, h] = scores @ v4[0, :, g] / np.sqrt(d)
    np.testing.assert_allclose(y, expect.reshape(b, t, hq * d), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state[0], np.einsum("tgk,tgv->gkv", k4[0], v4[0]), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("rule", ["gated", "delta", "gated_delta"])
def test_linear_attention_prefill_equals_token_by_token_decoding(rule):
    q, k, v, past, decay, beta = linear_attention_inputs(2, 6, 4, 2, 3, 4, rule, True)
    fn = impl("LinearAttention")
    attrs = dict(q_num_heads=4, kv_num_heads=2, update_rule=rule)
    y, final = fn(q, k, v, past, decay, beta, **attrs)
    state, steps = past, []
    for i in range(6):
        one = [a if a is None else a[:, i:i + 1] for a in (q, k, v, decay, beta)]
        y_i, state = fn(one[0], one[1], one[2], state, one[3], one[4], **attrs)
        steps.append(y_i)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state, final, rtol=1e-5, atol=1e-6)


def test_linear_attention_chunk_size_changes_nothing():
    inputs = linear_attention_inputs(1, 9, 2, 2, 4, 4, "gated_delta", False)
    fn = impl("LinearAttention")
    a = fn(*inputs, q_num_heads=2, kv_num_heads=2)
    b = fn(*inputs, q_num_heads=2, kv_num_heads=2, chunk_size=2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- types, inputs, errors

@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_sixteen_bit_floats_keep_their_type(dtype):
    y, state = impl("CausalConvWithState")(rnd(1, 2, 5, dtype=dtype), rnd(2, 1, 3, dtype=dtype))
    assert y.dtype == state.dtype == dtype
    inputs = linear_attention_inputs(1, 2, 2, 2, 4, 4, "gated_delta", False, dtype=dtype)
    y, state = impl("LinearAttention")(*inputs, q_num_heads=2, kv_num_heads=2)
    assert y.dtype == state.dtype == dtype      # no past_state: the state takes query's type
    assert impl("SwiGLU")(rnd(4, dtype=dtype), rnd(4, dtype=dtype)).dtype == dtype


def test_read_only_inputs_are_left_untouched():
    conv_in = [readonly(rnd(2, 3, 4)), readonly(rnd(3, 1, 3)), readonly(rnd(3)),
               readonly(rnd(2, 3, 2))]
    la_in = [readonly(a) for a in linear_attention_inputs(2, 3, 2, 2, 4, 4, "gated_delta", True)]
    sw_in = [readonly(rnd(5)), readonly(rnd(5))]
    before = [a.copy() for a in conv_in + la_in + sw_in]
    y, state = impl("CausalConvWithState")(*conv_in, activation="silu")
    state[...] = 0                      # the state is a fresh array, not a view of an input
    impl("LinearAttention")(*la_in, q_num_heads=2, kv_num_heads=2)[1][...] = 0
    impl("SwiGLU")(*sw_in)
    for a, b in zip(conv_in + la_in + sw_in, before):
        np.testing.assert_array_equal(a, b)


def la_error(**over):
    q, k, v, past, decay, beta = linear_attention_inputs(1, 2, 4, 2, 3, 3, "gated_delta", True)
    args = dict(query=q, key=k, value=v, past_state=past, decay=decay, beta=beta)
    attrs = dict(q_num_heads=4, kv_num_heads=2)
    for name, value in over.items():
        (attrs if name in ("q_num_heads", "kv_num_heads", "update_rule") else args)[name] = value
    return lambda: impl("LinearAttention")(*args.values(), **attrs)


@pytest.mark.parametrize("call, message", [
    (lambda: impl("CausalConvWithState")(rnd(1, 2, 4), rnd(2, 1, 3), activation="gelu"),
     "activation must be"),
    (lambda: impl("CausalConvWithState")(rnd(1, 2, 4), rnd(3, 1, 3)), "do not fit"),
    (lambda: impl("CausalConvWithState")(rnd(1, 2, 4), rnd(2, 1, 3), rnd(3)), "bias"),
    (lambda: impl("CausalConvWithState")(rnd(1, 2, 4), rnd(2, 1, 3), None, rnd(1, 2, 3)),
     r"past_state .* must be \(B, C, k - 1\)"),
    (la_error(update_rule="softmax"), "update_rule must be one of"),
    (la_error(decay=None), "needs the decay input"),
    (la_error(beta=None), "needs the beta input"),
    (la_error(q_num_heads=3), "multiple of kv_num_heads"),
    (la_error(decay=rnd(1, 2, 5)), "decay of shape"),
    (la_error(beta=rnd(1, 2, 3)), "beta of shape"),
    (la_error(past_state=rnd(1, 2, 3, 4)), "past_state of shape"),
    (la_error(query=rnd(1, 2, 4, 3)), "must be \\(B, T, H \\* D\\)"),
    (la_error(key=rnd(1, 2, 8)), "key head size"),
    (lambda: impl("SwiGLU")(rnd(2, 3), rnd(3)), "same shape"),
    (lambda: impl("SwiGLU")(rnd(3), rnd(3, dtype=np.float16)), "same shape and type"),
])
def test_errors_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_node_error_names_the_node():
    m, feeds = one_node_model("LinearAttention", [rnd(1, 2, 4), rnd(1, 2, 4), rnd(1, 2, 4)], 2,
                              q_num_heads=2, kv_num_heads=2, update_rule="gated")
    m.graph.node[0].name = "mixer7"
    with pytest.raises(Exception, match="mixer7") as info:
        refrt.run(m, feeds)
    assert "decay" in str(info.value)
