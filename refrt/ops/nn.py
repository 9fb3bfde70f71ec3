"""Neural-network ops: Gemm, MatMul, Einsum, Det, Dropout, Attention, RotaryEmbedding, the
recurrent sequence mixers LinearAttention and CausalConvWithState, and the losses
NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Products go through one BLAS call each (``np.matmul``); float16 / bfloat16 inputs compute in
float32 and are cast back, as onnxruntime's CPU kernels do; float32 accumulates in float32.
"""

from __future__ import annotations

import numpy as np

from ..kernels.fma import fma32
from ..registry import op
from ._common import compute_dtype, np_dtype, once_per_session, ort_threads
from ._kernels import K, sized_product
from .elementwise import swish as _swish


def _as_compute(*arrays):
    """The arrays in their compute dtype (float32 for the 16-bit and 8-bit floats)."""
    ct = compute_dtype(arrays[0].dtype)
    return ct, [a.astype(ct, copy=False) for a in arrays]


# ---------------------------------------------------------------- products

@op("Gemm", since=(1, 6, 7, 9, 11, 13))
def gemm(a, b, c=None, *, alpha=1.0, beta=1.0, broadcast=0, transA=0, transB=0, ctx=None):
    """Y = alpha * A' @ B' + beta * C, A' = A.T if transA, B' = B.T if transB, C broadcast
    to (M, N) (the version 1 and 6 ``broadcast`` flag only allowed what broadcasting allows).

    float32 in the default numerics runs onnxruntime's order (``kernels/sgemm.py``): Y starts as
    beta * C, then MLAS's SGEMM adds the product into it, K blocked as MLAS blocks it (B counts
    as packed when it is a constant, as onnxruntime packs it); with alpha != 1 each K block's
    sum is scaled as MLAS's kernel does it (``sgemm_scaled``)."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"Gemm: A and B must be 2-D, got shapes {list(a.shape)} and "
                         f"{list(b.shape)}")
    ct, (a_, b_) = _as_compute(a, b)
    a_ = a_.T if transA else a_
    b_ = b_.T if transB else b_
    if a_.shape[1] != b_.shape[0]:
        raise ValueError(f"Gemm: inner dimensions differ: A' is {list(a_.shape)}, B' is "
                         f"{list(b_.shape)}")
    out_shape = (a_.shape[0], b_.shape[1])
    c_ = None
    if c is not None and beta != 0.0:
        try:
            c_ = np.broadcast_to(c.astype(ct, copy=False), out_shape)
        except ValueError:
            raise ValueError(f"Gemm: C of shape {list(c.shape)} does not broadcast to "
                             f"{list(out_shape)}") from None
    if _mlas_float(a, b, ctx):
        init = None if c_ is None else (c_ if beta == 1.0 else c_ * ct.type(beta))
        packed = ctx is not None and ctx.is_constant(1)   # onnxruntime packs a constant B
        if alpha == 1.0 and packed:
            return sized_product(a_.shape[0] * a_.shape[1] * b_.shape[1], K.matmul_packed_f32,
                                 np.ascontiguousarray(a_), _mlas_packed(ctx, b, bool(transB)),
                                 k_block=K.SGEMM_PACKED_STRIDE_K, init=init)
        if alpha == 1.0 and (init is None or beta == 1.0):
            return K.sgemm(a, b, init, trans_a=bool(transA), trans_b=bool(transB),
                           threads=ort_threads(ctx))
        # MLAS's M = 1 and N = 1 kernels take only alpha = 1 and beta = 0 or 1
        return sgemm_scaled(a_[None], b_[None], alpha, None if init is None else init[None],
                            trans_a=bool(transA), packed=packed, threads=ort_threads(ctx))[0]
    y = np.matmul(a_, b_)
    if alpha != 1.0:
        y = y * ct.type(alpha) if ct.kind == "f" else y * alpha
    if c_ is not None:
        y = y + (c_ * ct.type(beta) if ct.kind == "f" else c_ * beta)
    return np.asarray(y).astype(a.dtype, copy=False)


def sgemm_scaled(a_mk, b_kn, alpha, init=None, *, trans_a=False, packed=False, threads=1,
                 batch=1):
    """alpha * A @ B (+ init) for float32 stacks a_mk [S, M, K] and b_kn [S, K, N] as MLAS's
    general SGEMM kernel computes it (never its M = 1 / N = 1 kernels, which onnxruntime takes
    only for alpha = 1 and beta = 0 or 1): per thread's columns, K in blocks (MLAS's stride rule;
    ``trans_a``: A is given transposed, ``packed``: B was packed, K blocks of 256), each block a
    fresh chain of fused multiply-adds from 0; the first block stored as block * alpha, or, when
    the output holds ``init`` (beta * C, [S, M, N] or broadcastable), every block added as
    fma(block, alpha, C). ``batch``: how many products share the threads. -> [S, M, N]."""
    s, m, k = a_mk.shape
    n = b_kn.shape[2]
    out = np.zeros((s, m, n), np.float32)
    if init is not None:
        out[...] = init
    if out.size == 0 or k == 0:
        return out
    scale = np.float32(alpha)
    for n0, n1 in K.sgemm_column_segments(m, n, k, threads, batch):
        stride = K.sgemm_k_stride(n1 - n0, k, trans_a, packed)
        c = None if init is None else out[:, :, n0:n1]
        for k0 in range(0, k, stride):
            block = sized_product(s * m * (n1 - n0) * min(stride, k - k0), K.batched_matmul_f32,
                                  a_mk[:, :, k0:k0 + stride], b_kn[:, k0:k0 + stride, n0:n1])
            if alpha == 1.0:
                c = block if c is None else c + block
            else:
                c = block * scale if c is None else fma32(block, scale, c)
        out[:, :, n0:n1] = c
    return out


def _mlas_float(a, b, ctx) -> bool:
    """float32 operands in the default numerics: the product runs in onnxruntime's MLAS order."""
    return (a.dtype == np.float32 and b.dtype == np.float32
            and (ctx is None or getattr(ctx, "numerics", "ort") != "spec"))


def _mlas_packed(ctx, b, transposed: bool):
    """A constant B [K, N] (given as [N, K] when ``transposed``) packed once per session."""
    return once_per_session(ctx, ("mlas_packed_f32", transposed), [1],
                            lambda: K.pack_b_f32(np.ascontiguousarray(b.T if transposed else b)),
                            (b.shape, b.dtype.str))


def _mlas_matmul(a, b, ctx):
    """numpy.matmul semantics, each product in MLAS's order as onnxruntime's MatMul runs it: a
    2-D B (packed when constant) takes all of A's rows in one product; stacks of matrices run as
    one batch of products (the threads shared between them)."""
    threads = ort_threads(ctx)
    if b.ndim == 1 and a.ndim >= 2:
        # onnxruntime multiplies the vector from the left: y^T = b^T A^T, one row of M = 1
        rows = a.reshape(int(np.prod(a.shape[:-1])), a.shape[-1])
        y = K.sgemm(b[None, :], np.ascontiguousarray(rows.T), threads=threads)
        return y.reshape(a.shape[:-1])
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    m, k = a2.shape[-2:]
    n = b2.shape[-1]
    if b2.ndim == 2:
        rows = a2.reshape(int(np.prod(a2.shape[:-1])), k)
        if ctx is not None and b.ndim == 2 and ctx.is_constant(1):
            # onnxruntime packs a constant B once: K in blocks of 256, whatever the shapes
            y = sized_product(rows.size * n, K.matmul_packed_f32, rows, _mlas_packed(ctx, b, False),
                              k_block=K.SGEMM_PACKED_STRIDE_K)
        else:
            y = K.sgemm(rows, b2, threads=threads)
        y = y.reshape(a2.shape[:-1] + (n,))
    else:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        nb = int(np.prod(batch))
        one_block = all(K.sgemm_k_stride(n1 - n0, k) >= k
                        for n0, n1 in K.sgemm_column_segments(m, n, k, threads, nb))
        if one_block and m > 1 and n > 1 and nb:
            y = K.batched_matmul_f32(a2, b2)        # MLAS's order: one chain of fmas per output
        else:
            aa = np.broadcast_to(a2, batch + (m, k)).reshape(-1, m, k)
            bb = np.broadcast_to(b2, batch + (k, n)).reshape(-1, k, n)
            y = np.stack([K.sgemm(x, w, threads=threads, batch=nb) for x, w in zip(aa, bb)]
                         ) if nb else np.zeros((0, m, n), np.float32)
            y = y.reshape(batch + (m, n))
    if a.ndim == 1:
        y = y[..., 0, :]
    if b.ndim == 1:
        y = y[..., 0]
    return y


@op("MatMul", since=(1, 9, 13))
def matmul(a, b, *, ctx=None):
    """Y = A @ B with numpy.matmul semantics: batched over leading axes (broadcast), a 1-D A is
    a row and a 1-D B a column, the promoted axis removed from the result"""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("MatMul: inputs must have rank >= 1")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"MatMul: shapes {list(a.shape)} and {list(b.shape)} do not match "
                         f"({k_a} != {k_b})")
    if _mlas_float(a, b, ctx):
        return _mlas_matmul(a, b, ctx)
    if (a.dtype == np.float32 and b.dtype == np.float32 and a.ndim >= 2 and b.ndim >= 2
            and max(a.ndim, b.ndim) >= 3 and a.shape[-2] * b.shape[-1] * k_a <= _SMALL_MATMUL):
        try:
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            batch = None   # numpy.matmul below reports it
        if batch is not None and int(np.prod(batch)) >= 2:
            return K.batched_matmul_f32(a, b)
    packed = _packed_weights(a, b, ctx)
    if packed is not None:
        return sized_product(a.size * packed.n, K.matmul_packed_f32, a, packed)
    _, (a_, b_) = _as_compute(a, b)
    return np.asarray(np.matmul(a_, b_)).astype(a.dtype, copy=False)


def matmul_add(a, b, *, bias, ctx=None):
    """MatMul(a, b) followed by Add(., bias) as one step (``refrt.fusion``), or None where the
    packed kernel does not apply: a float32 ``bias`` [N] is added to each tile of the product
    while it is in cache, one float32 addition per output as the Add node does. In the default
    numerics the product must be MLAS's, so the step is None (the two nodes run)."""
    if _mlas_float(a, b, ctx):
        return None
    packed = _packed_weights(a, b, ctx)
    if (packed is None or not isinstance(bias, np.ndarray) or bias.dtype != np.float32
            or bias.shape != (packed.n,)):
        return None
    return sized_product(a.size * packed.n, K.matmul_packed_f32, a, packed, bias)


# a stack of float32 products this small (M * N * K each) runs in kernels/fgemm.py's register
# tiles: the BLAS, called once per matrix, spent most of its time starting and stopping threads
_SMALL_MATMUL = 1 << 21
# a float32 product with a constant 2-D B runs on B packed once into kernels/fgemm.py's panels
# (with AVX-512) when A has at least _PACKED_ROWS rows and M * N * K >= _PACKED_MATMUL: the BLAS
# re-packs B on every call. Fewer rows (matrix-vector) or smaller products are faster in the BLAS.
_PACKED_ROWS = 4
_PACKED_MATMUL = 1 << 22


def _packed_weights(a, b, ctx):
    """B packed once per session (``kernels.fgemm.pack_b_f32``) when the packed kernel applies:
    float32 A of at least _PACKED_ROWS rows and a constant float32 2-D B, a product of at least
    _PACKED_MATMUL, AVX-512."""
    if (ctx is None or a.dtype != np.float32 or b.dtype != np.float32 or b.ndim != 2
            or a.ndim < 1 or a.size < _PACKED_ROWS * b.shape[0]
            or a.size * b.shape[1] < _PACKED_MATMUL or not ctx.is_constant(1)):
        return None
    if not K.float_packed_available():
        return None
    return once_per_session(ctx, ("packed_f32",), [1], lambda: K.pack_b_f32(b),
                            (b.shape, b.dtype.str))


def _explicit_equation(equation: str) -> str:
    """Einsum equation with its output term written out: in implicit form the output is the
    letters that occur once, sorted by ASCII code (upper case first), after any ellipsis."""
    eq = equation.replace(" ", "")
    if "->" in eq:
        return eq
    letters = [ch for ch in eq if ch.isalpha()]
    once = sorted(ch for ch in set(letters) if letters.count(ch) == 1)
    return eq + "->" + ("..." if "..." in eq else "") + "".join(once)


@op("Einsum", since=(12, 28))
def einsum(*inputs, equation):
    """output[output-term] = sum over the other letters of prod_i input_i[term_i]"""
    if not inputs:
        raise ValueError("Einsum needs at least one input")
    _, arrays = _as_compute(*inputs)
    try:
        y = np.einsum(_explicit_equation(equation), *arrays, optimize=len(arrays) > 1)
    except ValueError as e:
        raise ValueError(f"Einsum equation {equation!r}: {e}") from None
    return np.asarray(y).astype(inputs[0].dtype, copy=False)


@op("Det", since=(11, 22))
def det(x):
    """Y[...] = det(X[..., :, :])"""
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"Det: input must be (..., M, M), got shape {list(x.shape)}")
    _, (xc,) = _as_compute(x)
    return np.asarray(np.linalg.det(xc)).astype(x.dtype, copy=False)


# ---------------------------------------------------------------- Dropout

def _dropout(data, ratio, training, seed, ctx, mask_dtype):
    """Inference (or ratio 0): Y = X, mask all true. Training: mask = uniform >= ratio,
    Y = X * mask / (1 - ratio). With a seed the uniforms come from NumPy's
    ``RandomState(seed)``, as in onnx.reference and the backend test data (onnxruntime's
    generator is its own and cannot be reproduced)."""
    want_mask = ctx.output_requested(1)
    if not training or ratio == 0:
        return data, (np.ones(data.shape, dtype=mask_dtype) if want_mask else None)
    if not 0 <= ratio <= 1:
        raise ValueError(f"Dropout: ratio must be in [0, 1], got {ratio}")
    ct = compute_dtype(data.dtype)
    if seed is None:
        draws = ctx.rng(None).random(data.shape)
    else:   # the generator the ONNX backend test data were drawn with
        draws = np.random.RandomState(int(seed) & 0xFFFFFFFF).uniform(0.0, 1.0, data.shape)
    keep = draws >= ratio
    scale = ct.type(1.0 / (1.0 - ratio)) if ratio < 1 else ct.type(0)
    y = np.where(keep, data.astype(ct, copy=False) * scale, ct.type(0)).astype(data.dtype)
    return y, keep.astype(mask_dtype, copy=False)


@op("Dropout", since=(12, 13, 22))
def dropout(data, ratio=None, training_mode=None, *, seed=None, ctx):
    """output = data when training_mode is false (the default), else data * mask / (1 - ratio)
    with mask ~ Bernoulli(1 - ratio) drawn from ``seed`` (random when absent)."""
    r = 0.5 if ratio is None else float(np.asarray(ratio))
    training = training_mode is not None and bool(np.asarray(training_mode))
    return _dropout(data, r, training, seed, ctx, np.bool_)


@op("Dropout", since=(1, 6, 7, 10))
def dropout_legacy(data, *, consumed_inputs=None, is_test=0, ratio=0.5, ctx):
    """output = data, mask all ones (bool from version 10, data's type before).

    These versions have no training switch an inference run could honour (version 1 and 6's
    is_test=0 means "training"); refrt runs them in test mode, as onnx.reference does
    (onnxruntime has no Dropout before version 7). onnxruntime's versions 7 and 10 return an
    all-zero mask; refrt returns ones (every element kept), as the later versions do."""
    mask_dtype = np.bool_ if ctx.opset >= 10 else data.dtype
    return _dropout(data, ratio, False, None, ctx, mask_dtype)


# ---------------------------------------------------------------- Attention

def split_heads(t, num_heads, name, op_type="Attention"):
    """(B, S, H * D) -> (B, H, S, D); 4-D inputs are already (B, H, S, D)."""
    if t.ndim == 4:
        return t
    if t.ndim != 3 or not num_heads or t.shape[2] % num_heads:
        raise ValueError(f"{op_type}: {name} of shape {list(t.shape)} needs to be 4-D, or 3-D "
                         f"with a hidden size divisible by its num_heads attribute ({num_heads})")
    b, s, hidden = t.shape
    return t.reshape(b, s, num_heads, hidden // num_heads).transpose(0, 2, 1, 3)


def _attention_bias(mask, q_len, kv_len, offset, is_causal, nonpad, left, right, ct):
    """Additive bias (broadcastable to (B, H, q, kv)): the float mask, or 0 / -inf for a bool
    mask (a short mask padded with -inf), plus -inf where is_causal, the window or nonpad
    forbid a key. ``offset`` (scalar or (B, 1, 1, 1)) aligns query i with absolute position
    i + offset (bottom-right causal alignment)."""
    bias = np.zeros((1, 1, q_len, kv_len), dtype=ct)
    if mask is not None:
        if mask.shape[-1] < kv_len:
            fill = False if mask.dtype == np.bool_ else -np.inf
            pad = [(0, 0)] * (mask.ndim - 1) + [(0, kv_len - mask.shape[-1])]
            mask = np.pad(mask, pad, constant_values=fill)
        if mask.dtype == np.bool_:
            mask = np.where(mask, ct.type(0), ct.type(-np.inf))
        bias = bias + mask.astype(ct, copy=False)
    i = np.arange(q_len).reshape(q_len, 1) + offset
    j = np.arange(kv_len)
    allowed = np.ones((1, 1, q_len, kv_len), dtype=bool)
    if is_causal:
        allowed = allowed & (j <= i)
    if left >= 0:
        allowed = allowed & (i - j <= left)
    if right >= 0:
        allowed = allowed & (j - i <= right)
    if nonpad is not None:
        allowed = allowed & (j < nonpad.reshape(-1, 1, 1, 1))
    if not allowed.all():
        bias = bias + np.where(allowed, ct.type(0), ct.type(-np.inf))
    return bias


def softmax_last_axis(scores):
    """Softmax over the last axis; a row that is all -inf gives zeros instead of NaN."""
    top = scores.max(axis=-1, keepdims=True)
    top = np.where(np.isneginf(top), 0, top)
    e = np.exp(scores - top)
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total == 0, 1, total)


def _attention(q, k, v, attn_mask, past_key, past_value, nonpad_kv_seqlen, *, is_causal,
               kv_num_heads, q_num_heads, qk_matmul_output_mode, scale, softcap,
               softmax_precision, left_window_size, right_window_size, ctx):
    if (past_key is None) != (past_value is None):
        raise ValueError("Attention: past_key and past_value must be given together")
    if nonpad_kv_seqlen is not None and past_key is not None:
        raise ValueError("Attention: nonpad_kv_seqlen cannot be combined with past_key/past_value")
    if not q.ndim == k.ndim == v.ndim:
        raise ValueError(f"Attention: Q, K, V ranks differ ({q.ndim}, {k.ndim}, {v.ndim})")
    ct = compute_dtype(q.dtype)
    q4 = split_heads(q, q_num_heads, "Q").astype(ct, copy=False)
    k4 = split_heads(k, kv_num_heads, "K")
    v4 = split_heads(v, kv_num_heads, "V")
    if past_key is not None:
        k4 = np.concatenate((past_key, k4), axis=2)
        v4 = np.concatenate((past_value, v4), axis=2)
    present_key, present_value = k4, v4
    hq, hkv = q4.shape[1], k4.shape[1]
    if hq % hkv or v4.shape[1] != hkv:
        raise ValueError(f"Attention: {hq} query heads cannot share {hkv} key / {v4.shape[1]} "
                         f"value heads")
    if hq != hkv:     # grouped-query attention: kv head i serves query heads [i*g, (i+1)*g)
        k4 = np.repeat(k4, hq // hkv, axis=1)
        v4 = np.repeat(v4, hq // hkv, axis=1)
    k4, v4 = k4.astype(ct, copy=False), v4.astype(ct, copy=False)
    q_len, kv_len = q4.shape[2], k4.shape[2]

    if scale is None:
        scale = 1.0 / np.sqrt(q4.shape[3])
    root = ct.type(np.sqrt(scale))               # Q and K are each scaled by sqrt(scale)
    qk = np.matmul(q4 * root, np.swapaxes(k4 * root, -1, -2))
    raw_qk = qk
    if softcap > 0:
        qk = ct.type(softcap) * np.tanh(qk / ct.type(softcap))
    capped = qk
    if past_key is not None:
        offset = past_key.shape[2]
    elif nonpad_kv_seqlen is not None:
        offset = nonpad_kv_seqlen.astype(np.int64).reshape(-1, 1, 1, 1) - q_len
    else:
        offset = 0
    nonpad = nonpad_kv_seqlen.astype(np.int64) if nonpad_kv_seqlen is not None else None
    bias = _attention_bias(attn_mask, q_len, kv_len, offset, is_causal, nonpad,
                           left_window_size, right_window_size, ct)
    scores = qk + bias
    if softmax_precision is not None:
        sp = np_dtype(softmax_precision)
        probs = softmax_last_axis(scores.astype(sp).astype(compute_dtype(sp))).astype(sp)
    else:
        probs = softmax_last_axis(scores)
    fully_masked = np.isneginf(bias.max(axis=-1, keepdims=True))
    probs = np.where(fully_masked, 0, probs).astype(ct, copy=False)
    y = np.matmul(probs, v4)
    if q.ndim == 3:
        y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], q_len, -1)
    out = ()
    if ctx.output_requested(3):
        chosen = {0: raw_qk, 1: capped, 2: scores, 3: probs}.get(qk_matmul_output_mode)
        if chosen is None:
            raise ValueError(f"Attention: qk_matmul_output_mode must be 0..3, got "
                             f"{qk_matmul_output_mode}")
        out = (np.broadcast_to(chosen, scores.shape).astype(q.dtype),)
    return (y.astype(q.dtype, copy=False), present_key.astype(k.dtype, copy=False),
            present_value.astype(v.dtype, copy=False)) + out


@op("Attention", since=(24, 25))
def attention(q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *,
              is_causal=0, kv_num_heads=None, left_window_size=-1, q_num_heads=None,
              qk_matmul_output_mode=0, right_window_size=-1, scale=None, softcap=0.0,
              softmax_precision=None, ctx):
    """Y = softmax(softcap(Q K^T * scale) + bias) V, per head (scale = 1/sqrt(head_size) by
    default, applied as sqrt(scale) on each of Q and K); bias = attn_mask (bool: 0 / -inf) plus
    -inf where is_causal (bottom-right aligned: key j <= query i + offset), the sliding window
    [p - left, p + right] (version 25) or nonpad_kv_seqlen forbid a key; a row with no allowed
    key gives 0. K and V are appended to past_key / past_value (present_*); with fewer KV heads
    than Q heads each KV head serves a contiguous group of query heads (GQA). Output 4
    (qk_matmul_output) by mode: 0 raw Q K^T, 1 after softcap, 2 with bias, 3 probabilities.

    refrt follows the spec where onnxruntime (1.32, opset 23) differs: with past_key and a
    single query token onnxruntime applies no causal mask at all, and its mode-2 output holds
    the lowest float32 instead of -inf where a bool mask forbids a key."""
    return _attention(q, k, v, attn_mask, past_key, past_value, nonpad_kv_seqlen,
                      is_causal=is_causal, kv_num_heads=kv_num_heads, q_num_heads=q_num_heads,
                      qk_matmul_output_mode=qk_matmul_output_mode, scale=scale, softcap=softcap,
                      softmax_precision=softmax_precision, left_window_size=left_window_size,
                      right_window_size=right_window_size, ctx=ctx)


@op("Attention", since=23)
def attention_23(q, k, v, attn_mask=None, past_key=None, past_value=None, *, is_causal=0,
                 kv_num_heads=None, q_num_heads=None, qk_matmul_output_mode=0, scale=None,
                 softcap=0.0, softmax_precision=None, ctx):
    """Attention-23: Attention-24 without the nonpad_kv_seqlen input."""
    return _attention(q, k, v, attn_mask, past_key, past_value, None,
                      is_causal=is_causal, kv_num_heads=kv_num_heads, q_num_heads=q_num_heads,
                      qk_matmul_output_mode=qk_matmul_output_mode, scale=scale, softcap=softcap,
                      softmax_precision=softmax_precision, left_window_size=-1,
                      right_window_size=-1, ctx=ctx)


@op("RotaryEmbedding", since=23)
def rotary_embedding(x, cos_cache, sin_cache, position_ids=None, *, interleaved=0, num_heads=None,
                     rotary_embedding_dim=0):
    """Rotate pairs (x1, x2) of the first rotary_embedding_dim features of each head:
    (x1 cos - x2 sin, x1 sin + x2 cos); pairs are the two halves, or even/odd features when
    interleaved; cos/sin are indexed by position_ids when given."""
    if x.ndim == 4:                                 # (B, H, S, D) -> (B, S, H, D)
        xs = x.transpose(0, 2, 1, 3)
    elif x.ndim == 3 and num_heads and x.shape[2] % num_heads == 0:
        xs = x.reshape(x.shape[0], x.shape[1], num_heads, -1)
    else:
        raise ValueError(f"RotaryEmbedding: X of shape {list(x.shape)} must be 4-D, or 3-D with "
                         f"a hidden size divisible by num_heads ({num_heads})")
    ct, (xs, cos, sin) = _as_compute(xs, cos_cache, sin_cache)
    dim = rotary_embedding_dim or xs.shape[3]
    if dim % 2 or dim > xs.shape[3]:
        raise ValueError(f"RotaryEmbedding: rotary dimension {dim} must be even and at most the "
                         f"head size {xs.shape[3]}")
    if position_ids is not None:
        cos, sin = cos[position_ids], sin[position_ids]
    if cos.shape[-1] != dim // 2 or sin.shape[-1] != dim // 2:
        raise ValueError(f"RotaryEmbedding: cos/sin caches end in {cos.shape[-1]}/"
                         f"{sin.shape[-1]}, expected rotary dimension / 2 = {dim // 2}")
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]   # (B, S, 1, dim / 2)
    rot = xs[..., :dim]
    x1, x2 = (rot[..., 0::2], rot[..., 1::2]) if interleaved else (rot[..., :dim // 2],
                                                                 rot[..., dim // 2:])
    real, imag = x1 * cos - x2 * sin, x1 * sin + x2 * cos
    if interleaved:
        rotated = np.stack((real, imag), axis=-1).reshape(rot.shape)
    else:
        rotated = np.concatenate((real, imag), axis=-1)
    y = np.concatenate((rotated, xs[..., dim:]), axis=-1)
    y = y.transpose(0, 2, 1, 3) if x.ndim == 4 else y.reshape(x.shape)
    return y.astype(x.dtype, copy=False)


# ---------------------------------------------------------------- recurrent sequence mixers

# update_rule -> (gated: decay the state by exp(decay), delta: write beta * (v - S^T k))
_LINEAR_ATTENTION_RULES = {"linear": (False, False), "gated": (True, False),
                           "delta": (False, True), "gated_delta": (True, True)}


def _gate_per_head(t, name, b, s, allowed, per_head):
    """A packed (B, T, X) gate input -> float32 (B, X / per_head, T, per_head) after checking X."""
    if t.ndim != 3 or t.shape[:2] != (b, s) or t.shape[2] not in allowed:
        raise ValueError(f"LinearAttention: {name} of shape {list(t.shape)} must be ({b}, {s}, X) "
                         f"with X in {sorted(set(allowed))}")
    return t.reshape(b, s, -1, per_head).transpose(0, 2, 1, 3).astype(np.float32)


@op("LinearAttention", since=27)
def linear_attention(query, key, value, past_state=None, decay=None, beta=None, *, chunk_size=64,
                     kv_num_heads, q_num_heads, scale=0.0, update_rule="gated_delta"):
    """Per token t and KV head: S = exp(g_t) * S (gated rules), then S += k_t (x) v'_t with
    v'_t = beta_t * (v_t - S^T k_t) (delta rules) or v_t; o_t = scale * q_t^T S for each query
    head of the KV head's group (scale 0 means 1/sqrt(d_k)); present_state is the final S.

    Runs the recurrence token by token in float32 (the spec's function body does the same),
    whatever the input type; chunk_size is a tuning hint and changes nothing. A decay or beta input
    the update rule does not use is ignored, as the function body ignores it."""
    rule = _LINEAR_ATTENTION_RULES.get(update_rule)
    if rule is None:
        raise ValueError(f"LinearAttention: update_rule must be one of "
                         f"{', '.join(_LINEAR_ATTENTION_RULES)}, got {update_rule!r}")
    gated, delta = rule
    for needed, given, name in ((gated, decay, "decay"), (delta, beta, "beta")):
        if needed and given is None:
            raise ValueError(f"LinearAttention: update_rule {update_rule!r} needs the {name} input")
    if q_num_heads < 1 or kv_num_heads < 1 or q_num_heads % kv_num_heads:
        raise ValueError(f"LinearAttention: q_num_heads ({q_num_heads}) must be a positive "
                         f"multiple of kv_num_heads ({kv_num_heads})")
    if not query.ndim == key.ndim == value.ndim == 3 or not \
            query.shape[:2] == key.shape[:2] == value.shape[:2]:
        raise ValueError(f"LinearAttention: query, key and value must be (B, T, H * D) with the "
                         f"same B and T, got {list(query.shape)}, {list(key.shape)}, "
                         f"{list(value.shape)}")
    b, s = query.shape[:2]
    q = split_heads(query, q_num_heads, "query", "LinearAttention").astype(np.float32)
    k = split_heads(key, kv_num_heads, "key", "LinearAttention").astype(np.float32)
    v = split_heads(value, kv_num_heads, "value", "LinearAttention").astype(np.float32)
    hkv, dk, dv = kv_num_heads, q.shape[3], v.shape[3]
    if k.shape[3] != dk:
        raise ValueError(f"LinearAttention: key head size {k.shape[3]} differs from query head "
                         f"size {dk}")
    if past_state is None:
        state = np.zeros((b, hkv, dk, dv), np.float32)
    elif past_state.shape != (b, hkv, dk, dv):
        raise ValueError(f"LinearAttention: past_state of shape {list(past_state.shape)} must be "
                         f"(B, kv_num_heads, d_k, d_v) = {[b, hkv, dk, dv]}")
    else:
        state = past_state.astype(np.float32, copy=True)
    if gated:
        per_key = decay.ndim == 3 and decay.shape[2] == hkv * dk
        gate = np.exp(_gate_per_head(decay, "decay", b, s, (hkv, hkv * dk), dk if per_key else 1))
    if delta:
        rate = _gate_per_head(beta, "beta", b, s, (hkv, 1), 1)      # (B, Hkv or 1, T, 1)
    qg = q.reshape(b, hkv, q_num_heads // hkv, s, dk)     # query heads grouped by their KV head
    out = np.empty(qg.shape[:4] + (dv,), np.float32)
    for t in range(s):
        k_t, v_t = k[:, :, t], v[:, :, t]
        if gated:
            state *= gate[:, :, t, :, None]
        if delta:
            v_t = rate[:, :, t] * (v_t - np.matmul(k_t[:, :, None, :], state)[:, :, 0])
        state += k_t[..., :, None] * v_t[..., None, :]
        out[:, :, :, t] = np.matmul(qg[:, :, :, t], state)
    out *= np.float32(scale if scale != 0.0 else 1.0 / np.sqrt(np.float32(dk)))
    y = out.reshape(b, q_num_heads, s, dv).transpose(0, 2, 1, 3).reshape(b, s, q_num_heads * dv)
    state_dtype = query.dtype if past_state is None else past_state.dtype
    return y.astype(query.dtype), state.astype(state_dtype, copy=False)


@op("CausalConvWithState", since=27)
def causal_conv_with_state(x, weight, bias=None, past_state=None, *, activation="none"):
    """P = concat(past_state or zeros (B, C, k - 1), X) along length; Y[b, c, l] =
    sum_j W[c, 0, j] * P[b, c, l + j] + B[c] (depthwise valid Conv), then Y * sigmoid(Y) for
    activation 'silu'/'swish'; present_state = the last k - 1 positions of P.

    As in the spec's function body the convolution result is rounded to the input type before the
    activation, which float16 / bfloat16 compute in float32."""
    if activation not in ("none", "silu", "swish"):
        raise ValueError(f"CausalConvWithState: activation must be 'none', 'silu' or 'swish', "
                         f"got {activation!r}")
    if x.ndim != 3 or weight.ndim != 3 or weight.shape[:2] != (x.shape[1], 1) \
            or weight.shape[2] < 1:
        raise ValueError(f"CausalConvWithState: input (B, C, L) and weight (C, 1, k) do not fit: "
                         f"{list(x.shape)} and {list(weight.shape)}")
    (b, c, length), k = x.shape, weight.shape[2]
    if bias is not None and bias.shape != (c,):
        raise ValueError(f"CausalConvWithState: bias of shape {list(bias.shape)} must be ({c},)")
    if past_state is None:
        past_state = np.zeros((b, c, k - 1), x.dtype)
    elif past_state.shape != (b, c, k - 1):
        raise ValueError(f"CausalConvWithState: past_state of shape {list(past_state.shape)} must "
                         f"be (B, C, k - 1) = {[b, c, k - 1]}")
    padded = np.concatenate((past_state.astype(x.dtype, copy=False), x), axis=2)
    ct = compute_dtype(x.dtype)
    taps, w = padded.astype(ct, copy=False), weight[:, 0].astype(ct, copy=False)   # w: (C, k)
    y = taps[:, :, :length] * w[:, :1]
    for j in range(1, k):                     # one vector multiply-add per kernel tap
        y += taps[:, :, j:j + length] * w[:, j:j + 1]
    if bias is not None:
        y += bias.astype(ct, copy=False)[:, None]
    y = y.astype(x.dtype, copy=False)
    if activation != "none":
        y = _swish(y)
    return y, padded[:, :, padded.shape[2] - (k - 1):]


# ---------------------------------------------------------------- losses

def _nll(log_p, target, weight, ignore_index, reduction, ct):
    """loss[n, d] = -log_p[n, target[n, d], d] * w[target[n, d]] (0 where target == ignore_index);
    'mean' divides the sum by the sum of the weights that were used."""
    if log_p.ndim < 2 or target.shape != (log_p.shape[0],) + log_p.shape[2:]:
        raise ValueError(f"input of shape {list(log_p.shape)} (N, C, d...) and target of shape "
                         f"{list(target.shape)} (N, d...) do not fit")
    target = target.astype(np.int64)
    n_classes = log_p.shape[1]
    keep = np.ones(target.shape, dtype=bool) if ignore_index is None else target != ignore_index
    safe = np.where(keep, target, 0)
    if safe.size and (safe.min() < 0 or safe.max() >= n_classes):
        raise ValueError(f"a target is outside [0, {n_classes}) and is not ignore_index")
    picked = np.take_along_axis(log_p, safe[:, None], axis=1)[:, 0]
    w = (weight.astype(ct)[safe] if weight is not None else np.ones(safe.shape, dtype=ct))
    w = np.where(keep, w, ct.type(0))
    loss = -picked * w
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.asarray(loss.sum(dtype=ct))
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(loss.sum(dtype=ct) / w.sum(dtype=ct))
    raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")


@op("NegativeLogLikelihoodLoss", since=(12, 13, 22))
def negative_log_likelihood_loss(x, target, weight=None, *, ignore_index=None, reduction="mean"):
    """loss = -input[n, target[n, d], d] * weight[target[n, d]], reduced by 'none', 'sum' or
    'mean' (weighted mean: sum / sum of the weights used); ignore_index contributes nothing"""
    ct, (xc,) = _as_compute(x)
    return _nll(xc, target, weight, ignore_index, reduction, ct).astype(x.dtype, copy=False)


@op("SoftmaxCrossEntropyLoss", since=(12, 13))
def softmax_cross_entropy_loss(scores, labels, weights=None, *, ignore_index=None,
                               reduction="mean"):
    """log_prob = log_softmax(scores, axis=1); output = NegativeLogLikelihoodLoss(log_prob,
    labels, weights) with the same reduction and ignore_index; log_prob is the 2nd output"""
    ct, (sc,) = _as_compute(scores)
    if sc.ndim < 2:
        raise ValueError(f"SoftmaxCrossEntropyLoss: scores must be (N, C, ...), got "
                         f"{list(scores.shape)}")
    shifted = sc - sc.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = _nll(log_prob, labels, weights, ignore_index, reduction, ct)
    return loss.astype(scores.dtype, copy=False), log_prob.astype(scores.dtype, copy=False)
