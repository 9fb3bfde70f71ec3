"""Focused tests of the com.microsoft transformer ops (refrt/ops/contrib.py) for behaviour the
comparison with onnxruntime (tests/ops/test_contrib_vs_ort.py) does not pin down: inputs left untouched,
16-bit float types kept, naive references, and error messages."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from refrt.registry import NodeContext, lookup

RNG = np.random.default_rng(7)
BF16 = np.dtype(ml_dtypes.bfloat16)


def rnd(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def call(op_type, *inputs, domain="com.microsoft", n_outputs=1, **attrs):
    impl = lookup(op_type, domain, 17)
    assert impl is not None, f"{domain}.{op_type} is not registered"
    if impl.wants_ctx:
        attrs["ctx"] = NodeContext("n", op_type, domain, 1, n_outputs,
                                   outputs=tuple(f"o{i}" for i in range(n_outputs)))
    return impl.fn(*inputs, **attrs)


def naive_attention(q, k, v, bias):
    """softmax(q k^T / sqrt(d) + bias) v for one head, row by row in float64."""
    out = np.zeros((q.shape[0], v.shape[1]))
    for i in range(q.shape[0]):
        s = np.array([q[i] @ k[j] for j in range(k.shape[0])]) / np.sqrt(q.shape[1]) + bias[i]
        p = np.exp(s - s.max())
        out[i] = (p / p.sum()) @ v
    return out


def test_inputs_are_left_untouched():
    x, skip, gamma, beta = (readonly(rnd(2, 3, 8)) for _ in range(4))
    before = [a.copy() for a in (x, skip, gamma, beta)]
    call("SkipLayerNormalization", x, skip, gamma[0, 0], beta[0, 0], n_outputs=4)
    w, past = readonly(rnd(8, 24)), readonly(rnd(2, 2, 2, 3, 4))
    call("Attention", x, w, None, readonly(np.array([2, 1], np.int32)), past, num_heads=2,
         n_outputs=2)
    call("MultiHeadAttention", x, skip, beta, None, None, None, readonly(rnd(2, 2, 1, 4)),
         readonly(rnd(2, 2, 1, 4)), num_heads=2, n_outputs=3)
    for a, b in zip((x, skip, gamma, beta), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_sixteen_bit_floats_keep_their_type(dtype):
    x, b = rnd(2, 3, 8, dtype=dtype), rnd(8, dtype=dtype)
    assert call("BiasGelu", x, b).dtype == dtype
    assert call("FastGelu", x, b).dtype == dtype
    assert call("QuickGelu", x).dtype == dtype
    y, mean, inv_std, s = call("SkipLayerNormalization", x, x, b, b, b, n_outputs=4)
    assert y.dtype == s.dtype == dtype and mean.dtype == inv_std.dtype == np.float32
    w = rnd(8, 24, dtype=dtype)
    y, _ = call("Attention", x, w, None, num_heads=2, n_outputs=2)
    assert y.dtype == dtype
    y32 = call("Attention", x.astype(np.float32), w.astype(np.float32), None, num_heads=2)
    np.testing.assert_array_equal(y, y32.astype(dtype))   # computed in float32, rounded once


def test_attention_matches_a_naive_loop_with_past_mask_and_causality():
    b, s, d, heads, past_len = 2, 3, 8, 2, 2
    hs = d // heads
    x, w, bias, past = rnd(b, s, d), rnd(d, 3 * d), rnd(3 * d), rnd(2, b, heads, past_len, hs)
    lengths = np.array([5, 3], np.int32)
    y, present = call("Attention", x, w, bias, lengths, past, num_heads=heads, unidirectional=1,
                      n_outputs=2)
    qkv = x.astype(np.float64) @ w + bias
    for n in range(b):
        for h in range(heads):
            q = qkv[n, :, h * hs:(h + 1) * hs]
            k = np.concatenate([past[0, n, h], qkv[n, :, d + h * hs:d + (h + 1) * hs]])
            v = np.concatenate([past[1, n, h], qkv[n, :, 2 * d + h * hs:2 * d + (h + 1) * hs]])
            np.testing.assert_allclose(present[0, n, h], k, rtol=1e-5, atol=1e-5)
            keys, rows = np.arange(past_len + s), np.arange(s)[:, None] + past_len
            mask = np.where(keys < lengths[n], 0.0, -10000.0) + np.where(keys > rows, -1e30, 0)
            ref = naive_attention(q, k, v, mask)
            np.testing.assert_allclose(y[n, :, h * hs:(h + 1) * hs], ref, rtol=1e-4, atol=1e-5)


def test_multi_head_attention_causal_cross_attention_last_row_sees_every_key():
    """onnxruntime's causal mask hides keys > past + s from rows s < S - 1 only."""
    q, k, v = rnd(1, 2, 4), rnd(1, 5, 4), rnd(1, 5, 4)
    y = call("MultiHeadAttention", q, k, v, num_heads=1, unidirectional=1)[0]
    full = call("MultiHeadAttention", q, k, v, num_heads=1)[0]
    first = call("MultiHeadAttention", q, k[:, :1], v[:, :1], num_heads=1)[0]
    np.testing.assert_allclose(y[0, 1], full[0, 1], rtol=1e-6)
    np.testing.assert_allclose(y[0, 0], first[0, 0], rtol=1e-6)


def test_embed_layer_normalization_mask_index_counts_ones():
    ids = np.zeros((2, 4), np.int32)
    mask = np.array([[1, 1, 0, 1], [2, 1, -1, 0]], np.int32)
    _, mask_index, _ = call("EmbedLayerNormalization", ids, None, rnd(3, 8), rnd(4, 8), None,
                            rnd(8), rnd(8), mask, n_outputs=3)
    np.testing.assert_array_equal(mask_index, [3, 1])
    assert mask_index.dtype == np.int32


@pytest.mark.parametrize("op_type,inputs,attrs,message", [
    ("Attention", lambda: [rnd(2, 3, 8), rnd(8, 24), None, np.ones(5, np.int32)],
     {"num_heads": 2}, "lengths"),
    ("Attention", lambda: [rnd(2, 3, 8), rnd(8, 24), rnd(23)], {"num_heads": 2}, "bias"),
    ("Attention", lambda: [rnd(2, 3, 8), rnd(8, 24)], {"num_heads": 5}, "divisible"),
    ("MultiHeadAttention", lambda: [rnd(2, 3, 8), rnd(2, 4, 8), rnd(2, 4, 8), None,
                                    np.ones(4, np.int32)], {"num_heads": 2}, "lengths"),
    ("SkipLayerNormalization", lambda: [rnd(2, 3, 8), rnd(2, 8), rnd(8)], {}, "skip"),
    ("RotaryEmbedding", lambda: [rnd(1, 3, 8), np.array([8]), rnd(10, 4), rnd(10, 4)], {},
     "cache range"),
])
def test_errors_name_the_problem(op_type, inputs, attrs, message):
    with pytest.raises(ValueError, match=message):
        call(op_type, *inputs(), n_outputs=1, **attrs)
