"""onnxruntime's fused transformer ops: what its transformer optimizer writes into BERT/GPT-style
models. Attention, MultiHeadAttention, GroupQueryAttention, SkipLayerNormalization,
SkipSimplifiedLayerNormalization, EmbedLayerNormalization, RotaryEmbedding, Gelu, BiasGelu,
FastGelu, QuickGelu and BiasAdd live in the ``com.microsoft`` domain; SimplifiedLayerNormalization
is an op onnxruntime adds to the ONNX domain itself (its optimizer writes it there).

onnx.defs has no schemas for these ops, so the signatures carry onnxruntime's documented defaults
(``docs/ContribOperators.md``); the semantics are those of onnxruntime's CPU kernels, checked
against onnxruntime 1.32 (``tests/ops/test_contrib_vs_ort.py``). float16 and bfloat16 compute in float32
and are rounded once at the end, as those kernels do.

The attention ops share one core, :func:`_attend`: scores = scale * Q K^T, plus the key mask
(masked keys get ``mask_filter_value``), with causal positions set to the lowest float32, plus
``attention_bias``; softmax over the keys; times V. Where onnxruntime's CPU kernels refuse an
input form (a 4-D mask, packed QKV, buffer sharing), the docstring says what refrt does instead.
"""

from __future__ import annotations

import numpy as np

from ..registry import op
from ._common import compute_dtype, f32, normalize_axis
from .elementwise import gelu as _onnx_gelu
from .elementwise import swish as _swish
from .nn import rotary_embedding as _onnx_rotary_embedding
from .nn import softmax_last_axis, split_heads
from .norm import layer_normalization as _onnx_layer_normalization
from .norm import stash_dtype

MS = "com.microsoft"


def _check_bias(bias, size: int, what: str):
    """A 1-D bias of ``size`` entries (the hidden size the op adds it to)."""
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != size):
        raise ValueError(f"{what} must be 1-D of length {size}, got shape {list(bias.shape)}")


def _plus_bias(x, bias, what="bias"):
    """(X + bias) in X's compute dtype, bias 1-D along the last axis (or absent)."""
    ct = compute_dtype(x.dtype)
    xc = x.astype(ct, copy=False)
    if bias is None:
        return xc
    _check_bias(bias, x.shape[-1], what)
    return xc + bias.astype(ct, copy=False)


# ---------------------------------------------------------------- activations

@op("Gelu", domain=MS)
def gelu(x):
    """Y = X/2 * (1 + erf(X / sqrt(2))) (the ONNX Gelu with approximate="none")"""
    return _onnx_gelu(x)


@op("BiasGelu", domain=MS)
def bias_gelu(a, b):
    """C = Gelu(A + B), B 1-D along the last axis; the sum is not rounded to A's type first"""
    return _onnx_gelu(_plus_bias(a, b)).astype(a.dtype, copy=False)


@op("FastGelu", domain=MS)
def fast_gelu(x, bias=None):
    """Y = Z/2 * (1 + tanh(sqrt(2/pi) * (Z + 0.044715 Z^3))), Z = X + bias (bias optional)"""
    return _onnx_gelu(_plus_bias(x, bias), approximate="tanh").astype(x.dtype, copy=False)


@op("QuickGelu", domain=MS)
def quick_gelu(x, *, alpha=f32(1.702)):
    """Y = X * sigmoid(alpha * X)"""
    return _swish(x, alpha=alpha)


@op("BiasAdd", domain=MS)
def bias_add(x, bias, skip):
    """Y = X + bias + skip, X and skip (N, S, C), bias (C). (onnxruntime has this op on its CUDA
    provider only.)"""
    if x.ndim != 3 or skip.shape != x.shape:
        raise ValueError(f"BiasAdd: X and skip must both be (N, S, C), got {list(x.shape)} and "
                         f"{list(skip.shape)}")
    y = _plus_bias(x, bias) + skip.astype(compute_dtype(x.dtype), copy=False)
    return y.astype(x.dtype, copy=False)


# ---------------------------------------------------------------- layer normalizations

def _skip_sum(x, skip, bias, op_name):
    """input + skip (+ bias) in the compute dtype; skip is (B, S, H), (1, S, H) or (S, H)."""
    if x.ndim not in (2, 3):
        raise ValueError(f"{op_name}: input must be 2-D or 3-D, got shape {list(x.shape)}")
    ok = (skip.shape == x.shape or (x.ndim == 3 and skip.shape in ((1,) + x.shape[1:],
                                                                    x.shape[1:])))
    if not ok:
        raise ValueError(f"{op_name}: skip of shape {list(skip.shape)} does not fit input of "
                         f"shape {list(x.shape)} (expected the same shape, (1, S, H) or (S, H))")
    ct = compute_dtype(x.dtype)
    s = x.astype(ct, copy=False) + skip.astype(ct, copy=False)
    if bias is not None:
        _check_bias(bias, x.shape[-1], f"{op_name}: bias")
        s = s + bias.astype(ct, copy=False)
    return s


def _rms_normalize(x, axis, epsilon, st):
    """X / sqrt(mean(X^2 over axes [axis, rank)) + epsilon) in ``st``, and that inverse root."""
    xc = x.astype(st, copy=False)
    mean_square = (xc * xc).mean(axis=tuple(range(axis, x.ndim)), keepdims=True)
    inv_std = 1 / np.sqrt(mean_square + st.type(epsilon))
    return xc * inv_std, inv_std


@op("SkipLayerNormalization", domain=MS)
def skip_layer_normalization(x, skip, gamma, beta=None, bias=None, *, epsilon=f32(1e-12)):
    """S = input + skip + bias; output = (S - mean) / sqrt(var + epsilon) * gamma + beta over the
    last axis. Further outputs: mean and inv_std_var (float32, (..., 1)) and S itself."""
    s = _skip_sum(x, skip, bias, "SkipLayerNormalization")
    _check_bias(gamma, x.shape[-1], "gamma")
    _check_bias(beta, x.shape[-1], "beta")
    ct = s.dtype
    y, mean, inv_std = _onnx_layer_normalization(
        s, gamma.astype(ct, copy=False), None if beta is None else beta.astype(ct, copy=False),
        axis=-1, epsilon=epsilon)
    return (y.astype(x.dtype, copy=False), mean, inv_std, s.astype(x.dtype, copy=False))


@op("SkipSimplifiedLayerNormalization", domain=MS)
def skip_simplified_layer_normalization(x, skip, gamma, bias=None, *, epsilon=f32(1e-12)):
    """S = input + skip + bias; output = S / sqrt(mean(S^2) + epsilon) * gamma over the last axis.
    Further outputs as SkipLayerNormalization; the mean output is all zeros, as onnxruntime
    writes it (this normalization subtracts no mean)."""
    s = _skip_sum(x, skip, bias, "SkipSimplifiedLayerNormalization")
    _check_bias(gamma, x.shape[-1], "gamma")
    normalized, inv_std = _rms_normalize(s, s.ndim - 1, epsilon, s.dtype)
    y = normalized * gamma.astype(s.dtype, copy=False)
    return (y.astype(x.dtype, copy=False), np.zeros_like(inv_std, dtype=np.float32),
            inv_std.astype(np.float32, copy=False), s.astype(x.dtype, copy=False))


# onnxruntime's LayerNormalization in the ONNX domain, older than the spec's opset-17 op (same
# semantics): its transformer optimizer writes it into models of any opset.
op("LayerNormalization", since=1)(_onnx_layer_normalization)


@op("SimplifiedLayerNormalization", since=1)
def simplified_layer_normalization(x, scale, *, axis=-1, epsilon=f32(1e-5), stash_type=1):
    """Y = X / sqrt(mean(X^2 over axes [axis, rank)) + epsilon) * scale (RMS normalization);
    inv_std_var (float32, reduced axes kept) is the 2nd output. Y has the type of scale, which
    may differ from X's. onnxruntime registers this op in the ONNX domain."""
    axis = normalize_axis(axis, x.ndim)
    normalized, inv_std = _rms_normalize(x, axis, epsilon, stash_dtype(x, stash_type))
    y = normalized * scale.astype(normalized.dtype, copy=False)
    return y.astype(scale.dtype, copy=False), inv_std


@op("EmbedLayerNormalization", domain=MS)
def embed_layer_normalization(input_ids, segment_ids=None, word_embedding=None,
                              position_embedding=None, segment_embedding=None, gamma=None,
                              beta=None, mask=None, position_ids=None, *, epsilon=f32(1e-12),
                              mask_index_type=None):
    """E = word_embedding[input_ids] + position_embedding[position_ids] +
    segment_embedding[segment_ids]; output = LayerNorm(E) * gamma + beta over the hidden axis.
    position_ids default to 0..S-1 and may be (1, S); the segment pair is optional together.
    mask_index (int32, (B,)) counts the entries of each mask row equal to 1 (zeros without a
    mask), as onnxruntime does; embedding_sum is E."""
    for name, value in (("word_embedding", word_embedding),
                        ("position_embedding", position_embedding), ("gamma", gamma),
                        ("beta", beta)):
        if value is None:
            raise ValueError(f"EmbedLayerNormalization: input {name!r} is required")
    if (segment_ids is None) != (segment_embedding is None):
        raise ValueError("EmbedLayerNormalization: segment_ids and segment_embedding go together")
    if input_ids.ndim != 2:
        raise ValueError(f"EmbedLayerNormalization: input_ids must be (B, S), got "
                         f"{list(input_ids.shape)}")
    batch, seq = input_ids.shape
    if position_ids is None:
        position_ids = np.arange(seq).reshape(1, seq)
    if position_ids.shape not in ((batch, seq), (1, seq)):
        raise ValueError(f"EmbedLayerNormalization: position_ids must be (B, S) or (1, S), got "
                         f"{list(position_ids.shape)}")
    ct = compute_dtype(word_embedding.dtype)

    def lookup(table, ids, what):
        ids = np.asarray(ids).astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
            raise ValueError(f"EmbedLayerNormalization: {what} out of range [0, "
                             f"{table.shape[0]})")
        return table.astype(ct, copy=False)[ids]

    emb = (lookup(word_embedding, input_ids, "input_ids")
           + lookup(position_embedding, position_ids, "position_ids"))
    if segment_ids is not None:
        if segment_ids.shape != input_ids.shape:
            raise ValueError(f"EmbedLayerNormalization: segment_ids shape {list(segment_ids.shape)}"
                             f" differs from input_ids shape {list(input_ids.shape)}")
        emb = emb + lookup(segment_embedding, segment_ids, "segment_ids")
    y = _onnx_layer_normalization(emb, gamma.astype(ct, copy=False), beta.astype(ct, copy=False),
                                  axis=-1, epsilon=epsilon)[0]
    if mask is None:
        mask_index = np.zeros(batch, dtype=np.int32)
    else:
        if mask.shape != input_ids.shape:
            raise ValueError(f"EmbedLayerNormalization: mask shape {list(mask.shape)} differs "
                             f"from input_ids shape {list(input_ids.shape)}")
        mask_index = (mask == 1).sum(axis=1).astype(np.int32)
    dtype = word_embedding.dtype
    return y.astype(dtype, copy=False), mask_index, emb.astype(dtype, copy=False)


# ---------------------------------------------------------------- attention

_LOWEST = np.finfo(np.float32).min


def _scale(scale, head_size):
    """The attribute, or 1/sqrt(head_size) when absent or 0 (onnxruntime reads 0 as unset)."""
    return 1.0 / np.sqrt(head_size) if not scale else scale


def _key_mask_bias(mask, batch, q_len, total_len, past_len, filter_value, what,
                   attention_forms=True):
    """Additive key mask (B, 1, S or 1, T) in float32 from the forms onnxruntime accepts:

    (B) key lengths (keys at or after the length are masked); (3B + 2) key lengths, then
    cumulative offsets that onnxruntime's CPU kernels ignore; (B, T) and (B, S, T) raw masks
    (0 masked, > 0 kept). Attention also takes (2B), end positions then start positions (keys
    outside [start, end) masked), and (B, 1, M, M), a Megatron-style raw mask whose rows
    P..P+S-1 and columns 0..T-1 apply (onnxruntime's CPU kernel refuses this form; its CUDA
    kernel takes it)."""
    if mask is None:
        return None
    if np.asarray(mask).dtype.kind not in "iub":
        raise TypeError(f"{what} must be an integer tensor, got {mask.dtype}")
    mask = np.asarray(mask).astype(np.int64)
    keys = np.arange(total_len).reshape(1, total_len)
    value = np.float32(filter_value)
    lengths = (batch, 2 * batch, 3 * batch + 2) if attention_forms else (batch, 3 * batch + 2)
    if mask.ndim == 1:
        if mask.shape[0] not in lengths:
            raise ValueError(f"{what} with 1-D data must have one of the lengths {lengths} "
                             f"(batch_size {batch}), got {mask.shape[0]}")
        end = mask[:batch]
        if (end < 0).any():
            raise ValueError(f"{what}: key lengths (end positions) must be non-negative, got "
                             f"{end.tolist()}")
        keep = keys < end.reshape(batch, 1)
        if mask.shape[0] == 2 * batch and attention_forms:
            keep &= keys >= mask[batch:].reshape(batch, 1)
        keep = keep.reshape(batch, 1, 1, total_len)
    elif mask.ndim == 2:
        if mask.shape != (batch, total_len):
            raise ValueError(f"{what} with 2-D data must be (batch_size, total_sequence_length) "
                             f"= {[batch, total_len]}, got {list(mask.shape)}")
        keep = (mask > 0).reshape(batch, 1, 1, total_len)
    elif mask.ndim == 3:
        if mask.shape != (batch, q_len, total_len):
            raise ValueError(f"{what} with 3-D data must be (batch_size, sequence_length, "
                             f"total_sequence_length) = {[batch, q_len, total_len]}, got "
                             f"{list(mask.shape)}")
        keep = (mask > 0).reshape(batch, 1, q_len, total_len)
    elif mask.ndim == 4 and attention_forms:
        if (mask.shape[0] != batch or mask.shape[1] != 1 or mask.shape[2] < past_len + q_len
                or mask.shape[3] < total_len):
            raise ValueError(f"{what} with 4-D data must be (batch_size, 1, max_sequence_length, "
                             f"max_sequence_length) covering {past_len + q_len} rows and "
                             f"{total_len} columns, got {list(mask.shape)}")
        keep = mask[:, :, past_len:past_len + q_len, :total_len] > 0
    else:
        raise ValueError(f"{what} must have 1 to {4 if attention_forms else 3} dimensions, got "
                         f"{mask.ndim}")
    return np.where(keep, np.float32(0), value)


def _causal_bias(bias, q_len, total_len, past_len):
    """``bias`` with the positions a causal mask hides set to the lowest float32.

    As onnxruntime's CPU kernels do: query row s < S - 1 sees keys 0..past + s; the last query row
    sees every key. With T = past + S (self-attention) that is the usual causal mask; when the
    keys outnumber past + S (cross-attention) the last row sees all of them."""
    rows = np.arange(q_len).reshape(q_len, 1)
    hidden = (np.arange(total_len) > past_len + rows) & (rows < q_len - 1)
    base = np.zeros((1, 1, 1, total_len), np.float32) if bias is None else bias
    return np.where(hidden, _LOWEST, base)


def _attend(q, k, v, *, scale, key_bias, causal, past_len, attention_bias):
    """softmax(scale * Q K^T + key_bias (+ causal) + attention_bias) V for Q (B, N, S, h),
    K (B, N, T, h), V (B, N, T, hv), all in the compute dtype -> (Y (B, S, N * hv), scores)."""
    q_len, total_len = q.shape[2], k.shape[2]
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    if causal:
        key_bias = _causal_bias(key_bias, q_len, total_len, past_len)
    if key_bias is not None:
        scores = scores + key_bias.astype(scores.dtype, copy=False)
    if attention_bias is not None:
        if (attention_bias.ndim != 4 or attention_bias.shape[0] not in (1, q.shape[0])
                or attention_bias.shape[1] not in (1, q.shape[1])
                or attention_bias.shape[2:] != (q_len, total_len)):
            raise ValueError(f"attention_bias must be (batch_size or 1, num_heads or 1, "
                             f"{q_len}, {total_len}), got {list(attention_bias.shape)}")
        scores = scores + attention_bias.astype(scores.dtype, copy=False)
    y = np.matmul(softmax_last_axis(scores), v)
    batch, heads = y.shape[:2]
    return y.transpose(0, 2, 1, 3).reshape(batch, q_len, heads * v.shape[3]), scores


@op("Attention", domain=MS)
def attention(x, weights, bias=None, mask_index=None, past=None, attention_bias=None,
              past_sequence_length=None, *, do_rotary=0, mask_filter_value=f32(-10000.0),
              num_heads, past_present_share_buffer=0, qkv_hidden_sizes=None,
              rotary_embedding_dim=0, scale=None, unidirectional=0, ctx):
    """Q, K, V = split(input @ weights + bias) by qkv_hidden_sizes (equal thirds by default),
    then multi-head attention: softmax(scale * Q K^T + mask) V, heads merged back. past
    (2, B, N, P, h) is prepended to K and V; present = (K, V) stacked. The mask_index forms are
    those of :func:`_key_mask_bias`; unidirectional=1 hides later keys (bottom-right aligned).

    As onnxruntime's CPU kernel does, a past input needs the present output. do_rotary and
    past_present_share_buffer are refused: onnxruntime's CPU kernel supports neither (rotary
    embedding goes through MultiHeadAttention + RotaryEmbedding there)."""
    if do_rotary:
        raise ValueError("Attention: do_rotary=1 is not supported (as in onnxruntime's CPU "
                         "kernel); use MultiHeadAttention with RotaryEmbedding")
    if past_present_share_buffer or past_sequence_length is not None:
        raise ValueError("Attention: past_present_share_buffer / past_sequence_length are not "
                         "supported (as in onnxruntime's CPU kernel)")
    if x.ndim != 3 or weights.ndim != 2 or weights.shape[0] != x.shape[2]:
        raise ValueError(f"Attention: input must be (B, S, D) and weights (D, Hq + Hk + Hv), got "
                         f"{list(x.shape)} and {list(weights.shape)}")
    sizes = list(qkv_hidden_sizes) if qkv_hidden_sizes else [weights.shape[1] // 3] * 3
    if (len(sizes) != 3 or sum(sizes) != weights.shape[1] or sizes[0] != sizes[1]
            or any(s <= 0 or s % num_heads for s in sizes)):
        raise ValueError(f"Attention: qkv_hidden_sizes {sizes} must be three sizes divisible by "
                         f"num_heads={num_heads}, Q and K equal, summing to weights' "
                         f"{weights.shape[1]} columns")
    ct = compute_dtype(x.dtype)
    qkv = np.matmul(x.astype(ct, copy=False), weights.astype(ct, copy=False))
    if bias is not None:
        _check_bias(bias, weights.shape[1], "Attention: bias")
        qkv = qkv + bias.astype(ct, copy=False)
    hq, hk = sizes[0], sizes[1]
    q = split_heads(qkv[..., :hq], num_heads, "Q")
    k = split_heads(qkv[..., hq:hq + hk], num_heads, "K")
    v = split_heads(qkv[..., hq + hk:], num_heads, "V")
    past_len = 0
    if past is not None:
        if not ctx.output_requested(1):
            raise ValueError("Attention: a past input needs the present output (as in "
                             "onnxruntime)")
        if past.ndim != 5 or past.shape[0] != 2 or past.shape[1:3] != k.shape[:2] or \
                past.shape[4] != k.shape[3] or k.shape != v.shape:
            raise ValueError(f"Attention: past must be (2, B, N, P, head_size) = (2, "
                             f"{k.shape[0]}, {k.shape[1]}, P, {k.shape[3]}) with equal K and V "
                             f"sizes, got {list(past.shape)}")
        past_len = past.shape[3]
        k = np.concatenate((past[0].astype(ct, copy=False), k), axis=2)
        v = np.concatenate((past[1].astype(ct, copy=False), v), axis=2)
    batch, q_len, total_len = x.shape[0], x.shape[1], k.shape[2]
    key_bias = _key_mask_bias(mask_index, batch, q_len, total_len, past_len, mask_filter_value,
                              "Attention: mask_index")
    y, _ = _attend(q, k, v, scale=_scale(scale, q.shape[3]), key_bias=key_bias,
                   causal=bool(unidirectional), past_len=past_len, attention_bias=attention_bias)
    if not ctx.output_requested(1):
        return y.astype(x.dtype, copy=False)
    if k.shape != v.shape:
        raise ValueError(f"Attention: the present output needs equal K and V hidden sizes, got "
                         f"{sizes[1]} and {sizes[2]}")
    return y.astype(x.dtype, copy=False), np.stack((k, v)).astype(x.dtype, copy=False)


def _mha_inputs(query, key, value, bias, num_heads):
    """Q (B, N, S, h), K, V (B, N, L, h) in the compute dtype from MultiHeadAttention's forms:
    separate (B, S, H) / (B, L, H) inputs; packed QKV (B, S, N, 3, h) in query; packed KV
    (B, L, N, 2, h) in key; or K and V already split into heads (B, N, L, h), to which the bias
    is not added."""
    ct = compute_dtype(query.dtype)
    packed = query.ndim == 5 or (key is not None and key.ndim == 5)
    if query.ndim == 5:
        if key is not None or value is not None or query.shape[3] != 3:
            raise ValueError(f"MultiHeadAttention: packed QKV query must be (B, S, N, 3, h) with "
                             f"no key and value, got {list(query.shape)}")
        parts = [query[:, :, :, i] for i in range(3)]
    elif packed:
        if value is not None or key.shape[3] != 2:
            raise ValueError(f"MultiHeadAttention: packed KV key must be (B, L, N, 2, h) with no "
                             f"value, got {list(key.shape)}")
        parts = [query, key[:, :, :, 0], key[:, :, :, 1]]
    elif key is None or value is None:
        raise ValueError("MultiHeadAttention: key and value are required unless query holds "
                         "packed QKV")
    else:
        parts = [query, key, value]
    parts = [p.astype(ct, copy=False) for p in parts]
    if packed:                                    # (B, L, N, h) -> (B, L, N * h)
        parts = [p.reshape(p.shape[0], p.shape[1], -1) for p in parts]
    heads_first = parts[1].ndim == 4
    if heads_first and parts[2].ndim != 4:
        raise ValueError("MultiHeadAttention: key and value must both be (B, N, L, h) or both "
                         "(B, L, H)")
    if bias is not None:
        hq = parts[0].shape[2]
        hv = parts[2].shape[1] * parts[2].shape[3] if heads_first else parts[2].shape[2]
        _check_bias(bias, 2 * hq + hv, "MultiHeadAttention: bias")
        bias = bias.astype(ct, copy=False)
        parts[0] = parts[0] + bias[:hq]
        if not heads_first:
            parts[1] = parts[1] + bias[hq:2 * hq]
            parts[2] = parts[2] + bias[2 * hq:]
    return [split_heads(p, num_heads, name) for p, name in zip(parts, "QKV")]


@op("MultiHeadAttention", domain=MS)
def multi_head_attention(query, key=None, value=None, bias=None, key_padding_mask=None,
                         attention_bias=None, past_key=None, past_value=None,
                         past_sequence_length=None, cache_indirection=None, *,
                         mask_filter_value=f32(-10000.0), num_heads, scale=None,
                         unidirectional=0, ctx):
    """softmax(scale * Q K^T + mask + attention_bias) V per head, heads merged, after adding the
    projection bias to Q, K and V (see :func:`_mha_inputs` for the input forms). past_key /
    past_value (B, N, P, h) are prepended to K / V and returned as present_key / present_value;
    key_padding_mask takes the forms of :func:`_key_mask_bias`; output 4 (qk) holds the scores
    that enter the softmax. unidirectional=1 is onnxruntime's causal mask (:func:`_causal_bias`).

    onnxruntime's CPU kernel refuses packed QKV / KV (refrt unpacks them) and, given past_key
    without the present outputs requested, returns values computed from neither; refrt uses
    the past. past_sequence_length and cache_indirection (buffer sharing, beam search) are
    refused."""
    if past_sequence_length is not None or cache_indirection is not None:
        raise ValueError("MultiHeadAttention: past_sequence_length / cache_indirection (shared "
                         "KV buffers, beam search) are not supported")
    if query.ndim not in (3, 5):
        raise ValueError(f"MultiHeadAttention: query must be (B, S, H) or packed (B, S, N, 3, h), "
                         f"got {list(query.shape)}")
    q, k, v = _mha_inputs(query, key, value, bias, num_heads)
    ct = q.dtype
    if (past_key is None) != (past_value is None):
        raise ValueError("MultiHeadAttention: past_key and past_value go together")
    past_len = 0
    if past_key is not None:
        if key is not None and key.ndim == 4:
            raise ValueError("MultiHeadAttention: past_key cannot be combined with a key that is "
                             "already split into heads")
        if past_key.ndim != 4 or past_key.shape[:2] != k.shape[:2] or \
                past_key.shape[3] != k.shape[3] or past_value.shape[:3] != past_key.shape[:3] or \
                past_value.shape[3] != v.shape[3]:
            raise ValueError(f"MultiHeadAttention: past_key / past_value must be (B, N, P, h), got "
                             f"{list(past_key.shape)} and {list(past_value.shape)}")
        past_len = past_key.shape[2]
        k = np.concatenate((past_key.astype(ct, copy=False), k), axis=2)
        v = np.concatenate((past_value.astype(ct, copy=False), v), axis=2)
    batch, q_len, total_len = q.shape[0], q.shape[2], k.shape[2]
    key_bias = _key_mask_bias(key_padding_mask, batch, q_len, total_len, past_len,
                              mask_filter_value, "MultiHeadAttention: key_padding_mask",
                              attention_forms=False)
    y, scores = _attend(q, k, v, scale=_scale(scale, q.shape[3]), key_bias=key_bias,
                        causal=bool(unidirectional), past_len=past_len,
                        attention_bias=attention_bias)
    dtype = query.dtype
    return (y.astype(dtype, copy=False), k.astype(dtype, copy=False), v.astype(dtype, copy=False),
            scores.astype(dtype, copy=False))


# ---------------------------------------------------------------- rotary embedding

@op("RotaryEmbedding", domain=MS)
def rotary_embedding(x, position_ids, cos_cache, sin_cache, *, interleaved=0,
                     is_packed_batching=0, num_heads=0, rotary_embedding_dim=0, scale=1.0):
    """Rotate pairs (x1, x2) of the first rotary_embedding_dim features of each head by the
    angle of its position: (x1 cos - x2 sin, x1 sin + x2 cos), pairs being the two halves of those
    features or, interleaved, the even and odd ones. Input (B, S, N * h) or (B, N, S, h);
    position_ids (B, S), or one start offset p (positions p..p+S-1). The ONNX RotaryEmbedding
    with onnxruntime's input order. ``scale`` is ignored, as onnxruntime's CPU kernel does."""
    if is_packed_batching:
        raise ValueError("RotaryEmbedding: is_packed_batching=1 is not supported")
    if x.ndim not in (3, 4):
        raise ValueError(f"RotaryEmbedding: input must be (B, S, H) or (B, N, S, h), got "
                         f"{list(x.shape)}")
    batch, seq = x.shape[0], x.shape[1] if x.ndim == 3 else x.shape[2]
    max_len = cos_cache.shape[0]
    pos = np.asarray(position_ids).astype(np.int64)
    if pos.size == 1 and pos.ndim <= 1:
        start = int(pos.reshape(()))
        if start < 0 or start + seq > max_len:
            raise ValueError(f"RotaryEmbedding: position_ids start {start} with sequence length "
                             f"{seq} exceeds the cos/sin cache range [0, {max_len})")
        pos = np.broadcast_to(np.arange(start, start + seq), (batch, seq))
    elif pos.shape != (batch, seq):
        raise ValueError(f"RotaryEmbedding: position_ids must be (B, S) = {[batch, seq]} or hold "
                         f"one start offset, got {list(pos.shape)}")
    elif pos.size and (pos.min() < 0 or pos.max() >= max_len):
        raise ValueError(f"RotaryEmbedding: position_ids out of the cos/sin cache range "
                         f"[0, {max_len})")
    heads = num_heads
    if x.ndim == 3 and not heads:
        head_size = rotary_embedding_dim or 2 * cos_cache.shape[1]
        if x.shape[2] % head_size:
            raise ValueError(f"RotaryEmbedding: hidden size {x.shape[2]} is not a multiple of "
                             f"the head size {head_size}; give num_heads")
        heads = x.shape[2] // head_size
    return _onnx_rotary_embedding(x, cos_cache, sin_cache, pos, interleaved=interleaved,
                                  num_heads=heads or None,
                                  rotary_embedding_dim=rotary_embedding_dim)


# ---------------------------------------------------------------- GroupQueryAttention

def _gqa_inputs(query, key, value, num_heads, kv_num_heads):
    """Q (B, N, S, h), K and V (B, N_kv, S, h) in the compute dtype, from separate inputs or
    from one packed query (B, S, (N + 2 N_kv) h)."""
    ct = compute_dtype(query.dtype)
    if query.ndim != 3:
        raise ValueError(f"GroupQueryAttention: query must be (B, S, hidden), got "
                         f"{list(query.shape)}")
    if key is None and value is None:
        width = query.shape[2]
        if width % (num_heads + 2 * kv_num_heads):
            raise ValueError(f"GroupQueryAttention: packed QKV width {width} is not a multiple of "
                             f"num_heads + 2 * kv_num_heads = {num_heads + 2 * kv_num_heads}")
        head_size = width // (num_heads + 2 * kv_num_heads)
        q_width, kv_width = num_heads * head_size, kv_num_heads * head_size
        query, key, value = (query[..., :q_width], query[..., q_width:q_width + kv_width],
                             query[..., q_width + kv_width:])
    elif key is None or value is None:
        raise ValueError("GroupQueryAttention: key and value go together")
    if key.shape[:2] != query.shape[:2] or value.shape != key.shape:
        raise ValueError(f"GroupQueryAttention: key and value must be (B, S, kv_hidden) with the "
                         f"query's B and S, got {list(key.shape)} and {list(value.shape)}")
    return [split_heads(t.astype(ct, copy=False), n, name) for t, n, name in
            ((query, num_heads, "query"), (key, kv_num_heads, "key"),
             (value, kv_num_heads, "value"))]


@op("GroupQueryAttention", domain=MS)
def group_query_attention(query, key=None, value=None, past_key=None, past_value=None,
                          seqlens_k=None, total_sequence_length=None, cos_cache=None,
                          sin_cache=None, position_ids=None, attention_bias=None, head_sink=None,
                          k_scale=None, v_scale=None, q_norm_weight=None, k_norm_weight=None,
                          query_seqlens=None, *, causal=1, do_rotary=0, k_norm_epsilon=None,
                          k_quant_type="NONE", kv_cache_bit_width=None, kv_num_heads,
                          local_window_size=-1, num_heads, q_norm_epsilon=None,
                          qk_norm_epsilon=f32(1e-6), qk_output=0, rotary_interleaved=0,
                          scale=None, sliding_window_cache=0, smooth_softmax=-1, softcap=0.0,
                          v_quant_type="NONE"):
    """Grouped-query attention with a KV cache, per batch entry b with T = seqlens_k[b] + 1 keys
    after this step, of which P = T - min(S, T) were cached (past_key / past_value, (B, N_kv,
    cache, h)): the S new keys and values are written at rows P.. of present_key /
    present_value (length max(cache, total_sequence_length), zeros elsewhere); query row s sits
    at position P + s. Q and the new K are rotated first when do_rotary (positions P + s or
    position_ids). Scores = softcap(scale * Q K^T) + attention_bias; query head n uses KV head
    n // (N / N_kv); keys after the query's position (causal), before position -
    local_window_size + 1 (local_window_size > 0) or at T and beyond are dropped; softmax has an
    extra logit head_sink[n] (or 0 with smooth_softmax=1) in its denominator. Rows at or past
    T - P are padding and hold unspecified values. qk_output 1 / 2 returns the scores / the
    probabilities (B, N, S, present length), 0 where dropped (checked against onnxruntime for
    prompts; decoding from a cache, onnxruntime 1.32 returns it with another shape).

    Quantized caches, per-head Q/K norms, query_seqlens and sliding_window_cache are refused."""
    if seqlens_k is None or total_sequence_length is None:
        raise ValueError("GroupQueryAttention: seqlens_k and total_sequence_length are required")
    for name, value_ in (("k_scale", k_scale), ("v_scale", v_scale),
                         ("q_norm_weight", q_norm_weight), ("k_norm_weight", k_norm_weight),
                         ("query_seqlens", query_seqlens)):
        if value_ is not None:
            raise ValueError(f"GroupQueryAttention: input {name} is not supported")
    if k_quant_type != "NONE" or v_quant_type != "NONE" or sliding_window_cache:
        raise ValueError("GroupQueryAttention: quantized and window-sized KV caches are not "
                         "supported")
    if num_heads <= 0 or kv_num_heads <= 0 or num_heads % kv_num_heads:
        raise ValueError(f"GroupQueryAttention: num_heads={num_heads} must be a positive "
                         f"multiple of kv_num_heads={kv_num_heads}")
    q, k, v = _gqa_inputs(query, key, value, num_heads, kv_num_heads)
    ct = q.dtype
    batch, seq, head_size = q.shape[0], q.shape[2], q.shape[3]
    totals = np.asarray(seqlens_k).astype(np.int64).reshape(-1) + 1
    if totals.shape != (batch,) or (totals < 1).any():
        raise ValueError(f"GroupQueryAttention: seqlens_k must hold batch_size={batch} values "
                         f">= 0, got {np.asarray(seqlens_k).tolist()}")
    total_len = int(np.asarray(total_sequence_length).reshape(()))
    if (past_key is None) != (past_value is None):
        raise ValueError("GroupQueryAttention: past_key and past_value go together")
    cache_len = 0 if past_key is None else past_key.shape[2]
    if past_key is not None and (past_key.shape != (batch, kv_num_heads, cache_len, head_size)
                                 or past_value.shape != past_key.shape):
        raise ValueError(f"GroupQueryAttention: past_key / past_value must be (B, N_kv, cache, "
                         f"h) = {[batch, kv_num_heads, 'cache', head_size]}, got "
                         f"{list(past_key.shape)} and {list(past_value.shape)}")
    present_len = max(cache_len, total_len)
    pasts = totals - np.minimum(seq, totals)
    if (totals > present_len).any() or (pasts > cache_len).any():
        raise ValueError(f"GroupQueryAttention: seqlens_k {(totals - 1).tolist()} do not fit a "
                         f"cache of {cache_len} and total_sequence_length {total_len}")
    positions = pasts.reshape(batch, 1) + np.arange(seq)
    if do_rotary:
        if cos_cache is None or sin_cache is None:
            raise ValueError("GroupQueryAttention: do_rotary=1 needs cos_cache and sin_cache")
        rot_pos = positions if position_ids is None else np.asarray(position_ids).astype(np.int64)
        if rot_pos.size and (rot_pos.min() < 0 or rot_pos.max() >= cos_cache.shape[0]):
            raise ValueError(f"GroupQueryAttention: positions out of the cos/sin cache range "
                             f"[0, {cos_cache.shape[0]})")

        def rotate(t):
            merged = t.transpose(0, 2, 1, 3).reshape(batch, seq, -1)
            out = _onnx_rotary_embedding(merged, cos_cache.astype(ct), sin_cache.astype(ct),
                                         np.broadcast_to(rot_pos, (batch, seq)),
                                         interleaved=rotary_interleaved, num_heads=t.shape[1],
                                         rotary_embedding_dim=2 * cos_cache.shape[1])
            return out.reshape(batch, seq, t.shape[1], head_size).transpose(0, 2, 1, 3)

        q, k = rotate(q), rotate(k)
    present_k = np.zeros((batch, kv_num_heads, present_len, head_size), ct)
    present_v = np.zeros_like(present_k)
    for b in range(batch):
        p = int(pasts[b])
        if p:
            present_k[b, :, :p] = past_key[b, :, :p]
            present_v[b, :, :p] = past_value[b, :, :p]
        end = min(p + seq, present_len)
        present_k[b, :, p:end] = k[b, :, :end - p]
        present_v[b, :, p:end] = v[b, :, :end - p]
    group = num_heads // kv_num_heads
    keys = np.repeat(present_k, group, axis=1)
    scores = np.matmul(q, np.swapaxes(keys, -1, -2)) * ct.type(_scale(scale, head_size))
    if softcap > 0:
        scores = ct.type(softcap) * np.tanh(scores / ct.type(softcap))
    if attention_bias is not None:
        if (attention_bias.ndim != 4 or attention_bias.shape[0] not in (1, batch)
                or attention_bias.shape[1] not in (1, num_heads) or attention_bias.shape[2] != seq
                or attention_bias.shape[3] < totals.max()):
            raise ValueError(f"GroupQueryAttention: attention_bias must be (B or 1, N or 1, {seq}, "
                             f"total_sequence_length), got {list(attention_bias.shape)}")
        width = min(present_len, attention_bias.shape[3])
        bias = np.zeros(attention_bias.shape[:3] + (present_len,), ct)
        bias[..., :width] = attention_bias[..., :width]
        scores = scores + bias
    cols = np.arange(present_len).reshape(1, 1, 1, present_len)
    rows = positions.reshape(batch, 1, seq, 1)
    keep = cols < totals.reshape(batch, 1, 1, 1)
    if causal:
        keep = keep & (cols <= rows)
    if local_window_size > 0:
        keep = keep & (cols > rows - local_window_size)
    masked = np.where(keep, scores, ct.type(-np.inf))
    if head_sink is not None or smooth_softmax == 1:
        sink = (np.zeros(num_heads, ct) if head_sink is None else head_sink.astype(ct))
        extra = np.broadcast_to(sink.reshape(1, num_heads, 1, 1), (batch, num_heads, seq, 1))
        probs = softmax_last_axis(np.concatenate((masked, extra), axis=-1))[..., :-1]
    else:
        probs = softmax_last_axis(masked)
    y = np.matmul(probs, np.repeat(present_v, group, axis=1))
    y = y.transpose(0, 2, 1, 3).reshape(batch, seq, num_heads * head_size)
    dtype = query.dtype
    outputs = (y.astype(dtype, copy=False), present_k.astype(dtype, copy=False),
               present_v.astype(dtype, copy=False))
    if qk_output in (1, 2):
        qk = np.where(keep, scores if qk_output == 1 else probs, ct.type(0))
        outputs += (qk.astype(dtype, copy=False),)
    elif qk_output:
        raise ValueError(f"GroupQueryAttention: qk_output must be 0, 1 or 2, got {qk_output}")
    return outputs
