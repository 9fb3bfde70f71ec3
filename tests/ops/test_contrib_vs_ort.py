"""onnxruntime's fused transformer ops (refrt/ops/contrib.py) against onnxruntime's CPU provider.

Every case builds a one-node model and runs it in refrt and in onnxruntime with graph
optimizations disabled. Tolerance: float32 outputs must satisfy ``|refrt - ort| <= 1e-6 +
1e-5 * |ort|`` element-wise. onnxruntime uses MLAS's own exp/tanh/erf approximations and other
summation orders: over these cases, outputs above 0.1 in magnitude agreed within 3.5e-6
relative, and the largest error used 0.4 of the bound (in GELU's negative tail, where
1 + erf(x) cancels; the absolute term covers it). float16 outputs: within 2e-3 + 2e-3 relative
(both compute in float32 and round once; the largest error used 0.23 of that bound).

Where onnxruntime's CPU provider refuses a form that its documentation describes (a 4-D mask,
packed QKV / KV), the case runs the equivalent form through onnxruntime instead; BiasAdd, which
onnxruntime has on CUDA only, is compared with its formula.

The end-to-end test runs onnxruntime's transformer optimizer over ``bert_encoder`` and compares
the fused model in refrt and onnxruntime (relative L2 error below 1e-5).
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import refrt
from refrt.registry import REQUIRED, registered

from helpers import one_node
from ort_helpers import exporter_patterns, ort_optimize_bert

ort = pytest.importorskip("onnxruntime")

MS = "com.microsoft"
RTOL = {np.dtype(np.float32): (1e-5, 1e-6), np.dtype(np.float16): (2e-3, 2e-3)}
RNG = np.random.default_rng(20240611)


def rnd(*shape, dtype=np.float32, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def ort_session(model):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_both(op_type, inputs, attrs=None, domain=MS, n_outputs=1, opset=17, out_types=None,
             ort_inputs=None, ort_attrs=None):
    """(refrt outputs, onnxruntime outputs). ``ort_inputs`` / ``ort_attrs`` replace the inputs
    and attributes onnxruntime sees (for forms its CPU kernels refuse)."""
    model, feeds = one_node(op_type, inputs, attrs, domain=domain, n_outputs=n_outputs, opset=opset,
                            out_types=out_types)
    ours = refrt.InferenceSession(model).run(None, feeds)
    if ort_inputs is not None or ort_attrs is not None:
        model, feeds = one_node(op_type, inputs if ort_inputs is None else ort_inputs,
                                attrs if ort_attrs is None else ort_attrs, domain=domain,
                                n_outputs=n_outputs, opset=opset, out_types=out_types)
    theirs = ort_session(model).run(None, feeds)
    return ours, theirs


def assert_close(ours, theirs):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.dtype == b.dtype, f"output {i}: dtype {a.dtype} != onnxruntime's {b.dtype}"
        assert a.shape == b.shape, f"output {i}: shape {a.shape} != onnxruntime's {b.shape}"
        if b.dtype.kind in "iub":
            np.testing.assert_array_equal(a, b, err_msg=f"output {i}")
        else:
            # relative to each element and, for elements near zero (sums that cancel), to the
            # output's scale: summation orders differ by a few ulp of the largest terms
            rtol, atol = RTOL[b.dtype]
            finite = np.abs(b[np.isfinite(b)].astype(np.float32))
            atol = max(atol, rtol * float(finite.max())) if finite.size else atol
            np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=rtol,
                                       atol=atol, err_msg=f"output {i}")


def check(op_type, inputs, attrs=None, **kw):
    ours, theirs = run_both(op_type, inputs, attrs, **kw)
    assert_close(ours, theirs)
    return ours


DTYPES = [np.float32, np.float16]


# ---------------------------------------------------------------- signature defaults

@functools.lru_cache(maxsize=None)
def _ort_schemas():
    from onnxruntime.capi import _pybind_state as C
    return {(s.domain or "ai.onnx", s.name): s for s in C.get_all_operator_schema()
            if s.since_version == 1}


CONTRIB = [(d, name) for d, name in registered()
           if d == MS or (d, name) == ("ai.onnx", "SimplifiedLayerNormalization")]


@pytest.mark.parametrize("key", CONTRIB, ids=lambda k: f"{k[0]}.{k[1]}")
def test_signature_matches_onnxruntime_schema(key):
    """Every attribute of onnxruntime's schema is in the signature, required ones without a
    default, and defaults equal onnxruntime's where its schema states one."""
    schema = _ort_schemas().get(key)
    if schema is None:
        pytest.skip(f"onnxruntime has no schema for {key}")
    impl = registered()[key][1]
    for name, attr in schema.attributes.items():
        assert name in impl.attrs, f"{key}: attribute {name!r} missing from the signature"
        if attr.required:
            assert impl.attrs[name] is REQUIRED, f"{key}.{name} is required"
            continue
        raw = getattr(attr, "_default_value", b"")
        if not raw:
            continue
        spec = helper.get_attribute_value(onnx.AttributeProto.FromString(raw))
        spec = spec.decode() if isinstance(spec, bytes) else spec
        ours = impl.attrs[name]
        if isinstance(spec, float):
            assert ours == pytest.approx(spec, rel=1e-6), f"{key}.{name}"
        else:
            assert ours == spec, f"{key}.{name}: {ours!r} != onnxruntime's {spec!r}"
    assert impl.n_inputs >= len(schema.inputs), f"{key}: fewer inputs than onnxruntime's schema"


# ---------------------------------------------------------------- activations

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (2, 3, 16), (4, 33)])
def test_gelu_family(shape, dtype):
    x = rnd(*shape, dtype=dtype, scale=3.0)
    bias = rnd(shape[-1], dtype=dtype)
    check("Gelu", [x])
    check("BiasGelu", [x, bias])
    check("FastGelu", [x])
    check("FastGelu", [x, bias])
    check("QuickGelu", [x])
    check("QuickGelu", [x], {"alpha": 1.3})


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=3),
       st.floats(-8, 8, width=32), st.floats(0.125, 4, width=32))
def test_fast_gelu_and_bias_gelu_property(shape, shift, scale):
    x = (rnd(*shape) * np.float32(scale) + np.float32(shift)).astype(np.float32)
    bias = rnd(shape[-1])
    check("FastGelu", [x, bias])
    check("BiasGelu", [x, bias])


def test_bias_add_matches_its_formula():
    """onnxruntime has BiasAdd on CUDA only: compare with X + bias + skip."""
    x, skip, bias = rnd(2, 5, 8), rnd(2, 5, 8), rnd(8)
    model, feeds = one_node("BiasAdd", [x, bias, skip])
    (y,) = refrt.InferenceSession(model).run(None, feeds)
    np.testing.assert_allclose(y, x + bias + skip, rtol=1e-6, atol=1e-6)
    x16 = x.astype(np.float16)
    model, feeds = one_node("BiasAdd", [x16, bias.astype(np.float16), skip.astype(np.float16)])
    (y16,) = refrt.InferenceSession(model).run(None, feeds)
    assert y16.dtype == np.float16


# ---------------------------------------------------------------- layer normalizations

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("skip_shape", ["same", "1SH", "SH", "2d"])
@pytest.mark.parametrize("with_beta,with_bias", [(True, True), (True, False), (False, True),
                                                  (False, False)])
def test_skip_layer_normalization(dtype, skip_shape, with_beta, with_bias):
    b, s, h = 2, 3, 32
    x = rnd(s, h, dtype=dtype) if skip_shape == "2d" else rnd(b, s, h, dtype=dtype)
    skip = {"same": rnd(b, s, h), "1SH": rnd(1, s, h), "SH": rnd(s, h),
            "2d": rnd(s, h)}[skip_shape].astype(dtype)
    gamma, beta, bias = rnd(h, dtype=dtype), rnd(h, dtype=dtype), rnd(h, dtype=dtype)
    inputs = [x, skip, gamma, beta if with_beta else None, bias if with_bias else None]
    check("SkipLayerNormalization", inputs, n_outputs=4)
    check("SkipLayerNormalization", inputs[:3], {"epsilon": 1e-5}, n_outputs=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_skip_simplified_layer_normalization(dtype, with_bias):
    x, skip, gamma, bias = (rnd(2, 4, 16, dtype=dtype), rnd(2, 4, 16, dtype=dtype),
                            rnd(16, dtype=dtype), rnd(16, dtype=dtype))
    check("SkipSimplifiedLayerNormalization", [x, skip, gamma, bias if with_bias else None],
          n_outputs=4)
    check("SkipSimplifiedLayerNormalization", [x[0], skip[0], gamma], {"epsilon": 1e-3},
          n_outputs=3)


@pytest.mark.parametrize("x_dtype,scale_dtype", [(np.float32, np.float32),
                                                 (np.float16, np.float16),
                                                 (np.float16, np.float32)])
@pytest.mark.parametrize("axis", [-1, 1])
def test_simplified_layer_normalization_in_onnx_domain(x_dtype, scale_dtype, axis):
    x = rnd(2, 3, 8, dtype=x_dtype)
    scale = rnd(*x.shape[axis % 3:], dtype=scale_dtype)
    ours = check("SimplifiedLayerNormalization", [x, scale], {"axis": axis, "epsilon": 1e-6},
                 domain="", n_outputs=2)
    assert ours[0].dtype == scale_dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("segments", [True, False])
@pytest.mark.parametrize("mask", [None, "binary", "other values"])
@pytest.mark.parametrize("positions", [None, "1S", "BS"])
def test_embed_layer_normalization(dtype, segments, mask, positions):
    b, s, h, vocab = 3, 6, 16, 20
    ids = RNG.integers(0, vocab, (b, s)).astype(np.int32)
    seg = RNG.integers(0, 2, (b, s)).astype(np.int32)
    masks = {None: None, "binary": (np.arange(s) < np.array([[6], [4], [1]])).astype(np.int32),
             "other values": RNG.integers(-1, 3, (b, s)).astype(np.int32)}
    pos = {None: None, "1S": RNG.permutation(s).reshape(1, s).astype(np.int32),
           "BS": RNG.integers(0, 9, (b, s)).astype(np.int32)}[positions]
    inputs = [ids, seg if segments else None, rnd(vocab, h, dtype=dtype), rnd(9, h, dtype=dtype),
              rnd(2, h, dtype=dtype) if segments else None, rnd(h, dtype=dtype),
              rnd(h, dtype=dtype), masks[mask], pos]
    check("EmbedLayerNormalization", inputs, n_outputs=3)


def test_embed_layer_normalization_refuses_out_of_range_ids():
    ids = np.array([[1, 25]], np.int32)
    model, feeds = one_node("EmbedLayerNormalization",
                            [ids, None, rnd(20, 8), rnd(4, 8), None, rnd(8), rnd(8)], n_outputs=2)
    with pytest.raises(refrt.errors.RefrtError, match="out of range"):
        refrt.InferenceSession(model).run(None, feeds)
    with pytest.raises(Exception, match="out of range"):
        ort_session(model).run(None, feeds)


# ---------------------------------------------------------------- Attention

def _attention_inputs(b, s, d, heads, sizes=None, dtype=np.float32, with_bias=True):
    width = sum(sizes) if sizes else 3 * d
    return (rnd(b, s, d, dtype=dtype), rnd(d, width, dtype=dtype, scale=0.4),
            rnd(width, dtype=dtype) if with_bias else None)


ATTENTION_MASKS = ["none", "1d lengths", "1d end+start", "1d 3b+2", "2d raw",
                   "2d raw, other values", "3d raw"]


def make_mask(form, b, s, total):
    """A key mask of ``form`` for batch b, S queries and T = ``total`` keys (int32)."""
    if form == "none":
        return None
    if form == "1d lengths":
        return RNG.integers(1, total + 1, b).astype(np.int32)
    if form == "1d end+start":
        end = RNG.integers(1, total + 1, b)
        return np.concatenate([end, RNG.integers(0, end)]).astype(np.int32)
    if form == "1d 3b+2":
        return np.concatenate([RNG.integers(1, total + 1, b),
                               np.zeros(2 * b + 2, np.int64)]).astype(np.int32)
    if form == "2d raw":
        return (np.arange(total) < RNG.integers(1, total + 1, (b, 1))).astype(np.int32)
    if form == "2d raw, other values":
        return RNG.integers(-1, 3, (b, total)).astype(np.int32)
    return RNG.integers(0, 2, (b, s, total)).astype(np.int32)


@pytest.mark.parametrize("mask", ATTENTION_MASKS)
@pytest.mark.parametrize("past_len", [0, 3])
@pytest.mark.parametrize("unidirectional", [0, 1])
def test_attention_masks_past_and_causality(mask, past_len, unidirectional):
    b, s, d, heads = 2, 4, 16, 4
    x, w, bias = _attention_inputs(b, s, d, heads)
    mask_index = make_mask(mask, b, s, s + past_len)
    past = rnd(2, b, heads, past_len, d // heads) if past_len else None
    attrs = {"num_heads": heads, "unidirectional": unidirectional}
    check("Attention", [x, w, bias, mask_index, past], attrs, n_outputs=2 if past_len else 1)


@pytest.mark.parametrize("attrs", [{"mask_filter_value": -3.0}, {"scale": 0.3},
                                   {"qkv_hidden_sizes": [8, 8, 12]},
                                   {"qkv_hidden_sizes": [12, 12, 8], "unidirectional": 1}])
def test_attention_attributes(attrs):
    b, s, d, heads = 2, 5, 16, 4
    x, w, bias = _attention_inputs(b, s, d, heads, attrs.get("qkv_hidden_sizes"))
    mask = (np.arange(s) < np.array([[5], [2]])).astype(np.int32)
    check("Attention", [x, w, bias, mask], {"num_heads": heads, **attrs})


@pytest.mark.parametrize("bias_shape", [(1, 4, 3, 3), (2, 1, 3, 3), (2, 4, 3, 3), (1, 1, 3, 3)])
def test_attention_bias_input(bias_shape):
    x, w, bias = _attention_inputs(2, 3, 16, 4)
    check("Attention", [x, w, bias, None, None, rnd(*bias_shape)], {"num_heads": 4})
    check("Attention", [x, w, None, np.array([2, 3], np.int32), None, rnd(*bias_shape)],
          {"num_heads": 4})


def test_attention_float16():
    x, w, bias = _attention_inputs(2, 4, 16, 2, dtype=np.float16)
    check("Attention", [x, w, bias, np.array([4, 2], np.int32)], {"num_heads": 2})


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.sampled_from([1, 2, 4]), st.integers(1, 4),
       st.integers(0, 3), st.booleans())
def test_attention_property(b, s, heads, head_size, past_len, unidirectional):
    d = heads * head_size
    x, w, bias = _attention_inputs(b, s, d, heads)
    past = rnd(2, b, heads, past_len, head_size) if past_len else None
    lengths = RNG.integers(1, s + past_len + 1, b).astype(np.int32)
    check("Attention", [x, w, bias, lengths, past],
          {"num_heads": heads, "unidirectional": int(unidirectional)},
          n_outputs=2 if past_len else 1)


@pytest.mark.parametrize("past_len", [0, 2])
def test_attention_4d_mask_is_the_3d_mask_at_rows_past_onwards(past_len):
    """onnxruntime's CPU kernel refuses the (B, 1, M, M) Megatron mask: it must equal the 3-D
    mask made of its rows past..past+S-1 and first T columns."""
    b, s, d, heads, m = 2, 3, 8, 2, 7
    x, w, bias = _attention_inputs(b, s, d, heads)
    mask4 = RNG.integers(0, 2, (b, 1, m, m)).astype(np.int32)
    mask4[:, :, :, 0] = 1
    mask3 = np.ascontiguousarray(mask4[:, 0, past_len:past_len + s, :past_len + s])
    past = rnd(2, b, heads, past_len, d // heads) if past_len else None
    ours, theirs = run_both("Attention", [x, w, bias, mask4, past], {"num_heads": heads},
                            n_outputs=2 if past_len else 1,
                            ort_inputs=[x, w, bias, mask3, past])
    assert_close(ours, theirs)


@pytest.mark.parametrize("inputs,attrs,message", [
    ("past without present", {"num_heads": 2}, "present"),
    ("negative length", {"num_heads": 2}, "non-negative"),
    ("do_rotary", {"num_heads": 2, "do_rotary": 1}, "otary"),
])
def test_attention_errors_where_onnxruntime_errs(inputs, attrs, message):
    x, w, bias = _attention_inputs(2, 3, 8, 2)
    args = {"past without present": [x, w, bias, None, rnd(2, 2, 2, 1, 4)],
            "negative length": [x, w, bias, np.array([-1, 2], np.int32)],
            "do_rotary": [x, w, bias]}[inputs]
    model, feeds = one_node("Attention", args, attrs)
    with pytest.raises(refrt.errors.RefrtError, match=message):
        refrt.InferenceSession(model).run(None, feeds)
    with pytest.raises(Exception):
        ort_session(model).run(None, feeds)


# ---------------------------------------------------------------- MultiHeadAttention

QK = [None, None, None, TensorProto.FLOAT]


def _mha_qkv(b, s, kv_len, heads, head_size, dtype=np.float32):
    h = heads * head_size
    return rnd(b, s, h, dtype=dtype), rnd(b, kv_len, h, dtype=dtype), rnd(b, kv_len, h,
                                                                          dtype=dtype)


@pytest.mark.parametrize("mask", [m for m in ATTENTION_MASKS if m != "1d end+start"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("kv_len", [3, 5])
def test_multi_head_attention_masks(mask, with_bias, kv_len):
    b, s, heads, hs = 2, 3, 2, 4
    q, k, v = _mha_qkv(b, s, kv_len, heads, hs)
    bias = rnd(3 * heads * hs) if with_bias else None
    key_mask = make_mask(mask, b, s, kv_len)
    check("MultiHeadAttention", [q, k, v, bias, key_mask], {"num_heads": heads}, n_outputs=4,
          out_types=QK)


@pytest.mark.parametrize("kv_len", [3, 5])
@pytest.mark.parametrize("past_len", [0, 2])
@pytest.mark.parametrize("unidirectional", [0, 1])
def test_multi_head_attention_past_and_causality(kv_len, past_len, unidirectional):
    b, s, heads, hs = 2, 3, 2, 4
    if past_len:
        kv_len = s
    q, k, v = _mha_qkv(b, s, kv_len, heads, hs)
    past = [rnd(b, heads, past_len, hs), rnd(b, heads, past_len, hs)] if past_len else [None,
                                                                                        None]
    mask = (np.arange(kv_len + past_len) < np.array([[kv_len + past_len], [2]])).astype(np.int32)
    check("MultiHeadAttention", [q, k, v, rnd(3 * heads * hs), mask, rnd(1, heads, s,
                                                                         kv_len + past_len)]
          + past, {"num_heads": heads, "unidirectional": unidirectional, "scale": 0.4},
          n_outputs=4, out_types=QK)


def test_multi_head_attention_keys_split_into_heads_get_no_bias():
    b, s, heads, hs, kv_len = 2, 3, 2, 4, 5
    q = rnd(b, s, heads * hs)
    k, v = rnd(b, heads, kv_len, hs), rnd(b, heads, kv_len, hs)
    check("MultiHeadAttention", [q, k, v, rnd(3 * heads * hs)], {"num_heads": heads},
          n_outputs=3)


@pytest.mark.parametrize("with_bias", [False, True])
def test_multi_head_attention_packed_forms_equal_separate_inputs(with_bias):
    """onnxruntime's CPU kernel refuses packed QKV and KV: they must equal the separate form."""
    b, s, heads, hs = 2, 4, 2, 4
    q, k, v = _mha_qkv(b, s, s, heads, hs)
    bias = rnd(3 * heads * hs) if with_bias else None
    split = lambda t: t.reshape(b, s, heads, hs)  # noqa: E731
    packed_qkv = np.stack([split(q), split(k), split(v)], axis=3)
    packed_kv = np.stack([split(k), split(v)], axis=3)
    mask = np.array([4, 2], np.int32)
    for inputs in ([packed_qkv, None, None, bias, mask], [q, packed_kv, None, bias, mask]):
        ours, theirs = run_both("MultiHeadAttention", inputs, {"num_heads": heads},
                                ort_inputs=[q, k, v, bias, mask])
        assert_close(ours, theirs)


def test_multi_head_attention_float16():
    q, k, v = _mha_qkv(2, 3, 4, 2, 4, dtype=np.float16)
    check("MultiHeadAttention", [q, k, v, None, np.array([4, 1], np.int32)], {"num_heads": 2},
          n_outputs=3)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.sampled_from([1, 2, 3]),
       st.integers(1, 4), st.booleans())
def test_multi_head_attention_property(b, s, kv_len, heads, head_size, with_bias):
    q, k, v = _mha_qkv(b, s, kv_len, heads, head_size)
    bias = rnd(3 * heads * head_size) if with_bias else None
    mask = RNG.integers(0, 2, (b, kv_len)).astype(np.int32)
    check("MultiHeadAttention", [q, k, v, bias, mask], {"num_heads": heads}, n_outputs=3)


# ---------------------------------------------------------------- RotaryEmbedding

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["BSH", "BNSH"])
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rotary_dim", [0, 4])
@pytest.mark.parametrize("positions", ["start offset", "BS"])
def test_rotary_embedding(dtype, layout, interleaved, rotary_dim, positions):
    b, s, heads, hs, max_len = 2, 3, 2, 8, 10
    half = (rotary_dim or hs) // 2
    x = rnd(b, s, heads * hs, dtype=dtype)
    if layout == "BNSH":
        x = np.ascontiguousarray(x.reshape(b, s, heads, hs).transpose(0, 2, 1, 3))
    pos = (np.array([4], np.int64) if positions == "start offset"
           else RNG.integers(0, max_len, (b, s)).astype(np.int64))
    attrs = {"interleaved": interleaved}
    if rotary_dim:
        attrs.update(rotary_embedding_dim=rotary_dim, num_heads=heads)
    check("RotaryEmbedding", [x, pos, rnd(max_len, half, dtype=dtype),
                              rnd(max_len, half, dtype=dtype)], attrs)


# ---------------------------------------------------------------- GroupQueryAttention

def _gqa_case(b, s, heads, kv_heads, hs, dtype=np.float32):
    return (rnd(b, s, heads * hs, dtype=dtype), rnd(b, s, kv_heads * hs, dtype=dtype),
            rnd(b, s, kv_heads * hs, dtype=dtype))


def _gqa_check(inputs, attrs, n_outputs=3, valid_rows=None, **kw):
    """Compare, leaving out the padding query rows GroupQueryAttention leaves unspecified."""
    ours, theirs = run_both("GroupQueryAttention", inputs, attrs, n_outputs=n_outputs, **kw)
    if valid_rows is not None:
        for n, rows in enumerate(valid_rows):
            ours[0][n, rows:] = theirs[0][n, rows:]
    assert_close(ours, theirs)


GQA_ATTRS = [{}, {"local_window_size": 2}, {"softcap": 1.5}, {"smooth_softmax": 1},
             {"causal": 0}, {"scale": 0.2}]


@pytest.mark.parametrize("attrs", GQA_ATTRS, ids=str)
@pytest.mark.parametrize("packed", [False, True])
def test_group_query_attention_prompt(attrs, packed):
    b, s, heads, kv_heads, hs = 2, 5, 4, 2, 8
    q, k, v = _gqa_case(b, s, heads, kv_heads, hs)
    seqlens = np.array([s - 1, 2], np.int32)
    qkv = [np.concatenate([q, k, v], axis=-1), None, None] if packed else [q, k, v]
    _gqa_check(qkv + [None, None, seqlens, np.array(s, np.int32)],
               {"num_heads": heads, "kv_num_heads": kv_heads, **attrs}, valid_rows=[s, 3])


@pytest.mark.parametrize("attrs", GQA_ATTRS, ids=str)
@pytest.mark.parametrize("cache", [5, 9])
@pytest.mark.parametrize("new_tokens", [1, 2])
def test_group_query_attention_with_cache(attrs, cache, new_tokens):
    """Decoding: cached tokens in past_key / past_value (a buffer of ``cache`` rows, possibly
    larger than needed), ragged lengths across the batch."""
    b, heads, kv_heads, hs = 2 if new_tokens == 1 else 1, 4, 2, 8
    q, k, v = _gqa_case(b, new_tokens, heads, kv_heads, hs)
    past = [rnd(b, kv_heads, cache, hs), rnd(b, kv_heads, cache, hs)]
    seqlens = np.array([5, 3][:b], np.int32) + new_tokens - 1
    total = np.array(int(seqlens.max()) + 1, np.int32)
    _gqa_check([q, k, v] + past + [seqlens, total],
               {"num_heads": heads, "kv_num_heads": kv_heads, **attrs})


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rotary_dim", [16, 32])
@pytest.mark.parametrize("position_ids", [False, True])
def test_group_query_attention_rotary(interleaved, rotary_dim, position_ids):
    b, heads, kv_heads, hs, max_len = 2, 4, 2, 32, 16
    cos, sin = rnd(max_len, rotary_dim // 2), rnd(max_len, rotary_dim // 2)
    attrs = {"num_heads": heads, "kv_num_heads": kv_heads, "do_rotary": 1,
             "rotary_interleaved": interleaved}
    q, k, v = _gqa_case(b, 3, heads, kv_heads, hs)
    _gqa_check([q, k, v, None, None, np.array([2, 2], np.int32), np.array(3, np.int32), cos,
                sin], attrs)
    q, k, v = _gqa_case(b, 1, heads, kv_heads, hs)
    past = [rnd(b, kv_heads, 6, hs), rnd(b, kv_heads, 6, hs)]
    pos = np.array([[9], [4]], np.int64) if position_ids else None
    _gqa_check([q, k, v] + past + [np.array([6, 3], np.int32), np.array(7, np.int32), cos, sin,
                                   pos], attrs)


def test_group_query_attention_bias_sink_qk_output_and_float16():
    b, s, heads, kv_heads, hs = 2, 4, 4, 1, 8
    q, k, v = _gqa_case(b, s, heads, kv_heads, hs)
    lens, total = np.array([s - 1, s - 1], np.int32), np.array(s, np.int32)
    attrs = {"num_heads": heads, "kv_num_heads": kv_heads}
    bias, sink = rnd(1, heads, s, s), rnd(heads)
    _gqa_check([q, k, v, None, None, lens, total, None, None, None, bias], {**attrs,
                                                                           "softcap": 2.0})
    _gqa_check([q, k, v, None, None, lens, total, None, None, None, None, sink], attrs)
    for mode in (1, 2):
        _gqa_check([q, k, v, None, None, lens, total, None, None, None, bias],
                   {**attrs, "qk_output": mode}, n_outputs=4)
    q, k, v = (t.astype(np.float16) for t in (q, k, v))
    _gqa_check([q, k, v, None, None, lens, total], attrs)


# ---------------------------------------------------------------- end to end

def _op_counts(model):
    return collections.Counter(f"{n.domain or 'ai.onnx'}.{n.op_type}" for n in model.graph.node)


@pytest.mark.parametrize("patterns", ["as built", "exporter patterns"])
def test_bert_encoder_optimized_by_onnxruntime_runs_the_same(tmp_path, patterns):
    from refrt.testing.models import bert_encoder, bert_feeds
    model = bert_encoder(layers=2, hidden=64, heads=4)
    if patterns == "exporter patterns":
        model = exporter_patterns(model)
    optimized = ort_optimize_bert(model, tmp_path, "bert")
    counts = _op_counts(optimized)
    contrib = {k: v for k, v in counts.items() if k.startswith(MS)}
    assert all(registered().get(tuple(k.rsplit(".", 1))) for k in counts), counts
    if patterns == "as built":
        # With models.py as written only SkipLayerNormalization fuses: its mask (Equal / Where),
        # score scaling (Mul by 1/sqrt(d)) and GELU (x * 0.5 times 1 + erf) are not patterns the
        # fusions know (see ort_helpers.exporter_patterns).
        assert contrib.get(f"{MS}.SkipLayerNormalization", 0) >= 4
    else:
        assert contrib == {f"{MS}.EmbedLayerNormalization": 1, f"{MS}.Attention": 2,
                           f"{MS}.SkipLayerNormalization": 4, f"{MS}.BiasGelu": 2}
    feeds = bert_feeds(batch=3, seq=16)
    ours = refrt.InferenceSession(optimized).run(None, feeds)[0]
    theirs = ort_session(optimized).run(None, feeds)[0]
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 1e-5
    unfused = ort_session(model).run(None, feeds)[0]
    assert np.linalg.norm(ours - unfused) / np.linalg.norm(unfused) < 1e-5
