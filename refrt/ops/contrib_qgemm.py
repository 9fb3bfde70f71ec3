"""onnxruntime's quantized contrib ops (``com.microsoft``) built on an integer GEMM: what ORT's
graph optimizer fuses dynamic quantization into, and the QOperator GEMMs.

    y = float32(acc) * (a_scale * b_scale) (+ bias), or requantized as in QLinearMatMul;
    acc = exact int32 sum of (a - a_zp) * (b - b_zp)

DynamicQuantizeMatMul, MatMulIntegerToFloat, QGemm, QAttention, QEmbedLayerNormalization and
DynamicQuantizeLSTM. As in :mod:`refrt.ops.contrib_quant` (whose per-tensor parameter checks
these ops share), the semantics are those of onnxruntime's CPU kernels, checked against
onnxruntime 1.32 in ``tests/ops/test_contrib_quant_vs_ort.py``. Integer sums run on the Numba kernels
through ``quant.matmul_integer``; the session option ``emulate_avx2_u8s8`` switches their
u8 x s8 products to ORT's int16-saturating AVX2 arithmetic, as for MatMulInteger.
"""

from __future__ import annotations

import numpy as np

from ..kernels.activations import mlas_logistic, mlas_tanh
from ..registry import op
from ._common import f32, ort_threads
from ._kernels import K
from .contrib import attention as _ms_attention
from .contrib import embed_layer_normalization as _ms_embed_layer_normalization
from .contrib_quant import (
    MS,
    per_tensor,
    per_tensor_scale,
    per_tensor_zero_point,
)
from .quant import dequantize, gemm_for, int8_operand, matmul_integer, packed_matrices
from .rnn import activation_functions

_F32 = np.float32


# ---------------------------------------------------------------- integer GEMMs, float epilogue

def _float_epilogue(acc, multiplier, bias=None):
    """float32(acc) * multiplier (+ bias), two roundings, as MLAS's scale-bias output stage."""
    y = acc.astype(_F32) * np.asarray(multiplier, _F32)
    if bias is not None:
        y = y + np.asarray(bias, _F32)
    return y.astype(_F32, copy=False)


def _b_scale_layout(b_scale, b, what):
    """b_scale as an array broadcasting against the last two axes of A @ B: a scalar, one per
    column ([N] for a 2-D B, or [..., 1, N]), as onnxruntime accepts."""
    s = np.asarray(b_scale, _F32)
    n = b.shape[-1]
    if s.size == 1:
        return s.reshape(())
    if s.ndim == 1 and s.shape[0] == n:
        return s
    if s.ndim >= 2 and s.shape[-2] == 1 and s.shape[-1] == n:
        return s
    raise ValueError(f"{what} must be a scalar or hold one value per column of B ({n}), got "
                     f"shape {list(s.shape)}")


def _b_zero_point_layout(b_zp, b, what):
    if b_zp is None:
        return None
    z = np.asarray(b_zp)
    if z.dtype != b.dtype:
        raise TypeError(f"{what} must have B's type {b.dtype.name}, got {z.dtype.name}")
    if z.size == 1:
        return z.reshape(())
    return z


@op("DynamicQuantizeMatMul", domain=MS)
def dynamic_quantize_matmul(A, B, b_scale, b_zero_point=None, bias=None, *, ctx):
    """Y = (a_scale * b_scale) * ((A_q - a_zp) @ (B - b_zero_point)) + bias, with (A_q, a_scale,
    a_zp) = DynamicQuantizeLinear(A) (uint8)

    ORT: A is quantized as DynamicQuantizeLinear does; the int32 GEMM is exact (u8 x s8
    saturating under ``emulate_avx2_u8s8``); the epilogue is float32(acc) * float32(a_scale *
    b_scale) then + bias, two roundings. b_scale / b_zero_point per tensor or per column."""
    if A.dtype != _F32:
        raise TypeError(f"DynamicQuantizeMatMul: A must be float32, got {A.dtype.name}")
    b = int8_operand(B, "B")
    aq, a_scale, a_zp = K.dynamic_quantize_linear(A, mode="ort")
    acc = matmul_integer(aq, b, np.asarray(a_zp, np.uint8),
                         _b_zero_point_layout(b_zero_point, b, "b_zero_point"), ctx, b_input=1)
    mult = _F32(a_scale) * _b_scale_layout(b_scale, b, "b_scale")
    return _float_epilogue(acc, mult, bias)


@op("MatMulIntegerToFloat", domain=MS)
def matmul_integer_to_float(A, B, a_scale, b_scale, a_zero_point=None, b_zero_point=None,
                            bias=None, *, ctx):
    """Y = (a_scale * b_scale) * ((A - a_zero_point) @ (B - b_zero_point)) + bias

    ORT: exact int32 GEMM (u8 x s8 saturating under ``emulate_avx2_u8s8``), then float32(acc) *
    float32(a_scale * b_scale) + bias (two roundings). b_scale / b_zero_point per tensor or per
    column; a_zero_point per tensor. A non-scalar a_scale (per row, [..., M, 1]) is applied
    after the bias, as ORT does: Y = (float32(acc) * b_scale + bias) * a_scale."""
    a, b = int8_operand(A, "A"), int8_operand(B, "B")
    a_s = np.asarray(a_scale, _F32)
    acc = matmul_integer(a, b, None if a_zero_point is None else
                         per_tensor(a_zero_point, "a_zero_point", a.dtype),
                         _b_zero_point_layout(b_zero_point, b, "b_zero_point"), ctx, b_input=1)
    b_s = _b_scale_layout(b_scale, b, "b_scale")
    if a_s.size == 1:
        y = _float_epilogue(acc, a_s.reshape(()) * b_s, bias)
    else:
        y = (_float_epilogue(acc, b_s, bias) * a_s).astype(_F32, copy=False)
    # computed in float32; Y has the scales' type (T3: float32 or float16)
    return y.astype(np.asarray(a_scale).dtype, copy=False)


@op("QGemm", domain=MS)
def qgemm(A, a_scale, a_zero_point, B, b_scale, b_zero_point, C=None, y_scale=None,
          y_zero_point=None, *, alpha=1.0, transA=0, transB=0, ctx):
    """Y = alpha * (a_scale * b_scale) * ((A' - a_zp) @ (B' - b_zp) + C), float32, or
    quantized to (y_scale, y_zero_point)

    C is an int32 bias broadcast to (M, N) and added to the exact int32 accumulators (so it is in
    units of a_scale * b_scale). ORT's multiplier is float32((alpha * a_scale) * b_scale[n])
    (divided by y_scale when given), per column for per-column b parameters; the quantized
    output is float32(acc) * multiplier rounded half to even, plus y_zero_point, saturated;
    the float output is float32(acc) * multiplier. A y_scale without a y_zero_point gives a
    float output scaled by 1 / y_scale, as ORT does. u8 x s8 products saturate under
    ``emulate_avx2_u8s8``."""
    a, b = int8_operand(A, "A"), int8_operand(B, "B")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"QGemm: A and B must be 2-D, got {list(a.shape)} and {list(b.shape)}")
    a2 = a.T if transA else a
    b2 = b.T if transB else b
    m, n = a2.shape[0], b2.shape[1]
    az = per_tensor(a_zero_point, "a_zero_point", a.dtype)
    bz = np.asarray(b_zero_point)
    bs = np.asarray(b_scale, _F32)
    for name, v in (("b_scale", bs), ("b_zero_point", bz)):
        if v.ndim > 1 or (v.ndim == 1 and v.shape[0] not in (1, n)):
            raise ValueError(f"QGemm: {name} must be a scalar or 1-D of length 1 or N={n}, got "
                             f"shape {list(v.shape)}")
    if bs.shape != bz.shape:
        raise ValueError(f"QGemm: b_scale {list(bs.shape)} and b_zero_point {list(bz.shape)} "
                         f"must have the same shape")
    acc = matmul_integer(a2, np.ascontiguousarray(b2), az,
                         bz.reshape(()) if bz.size == 1 else bz, ctx, b_input=3)
    if C is not None:
        if C.dtype != np.int32:
            raise TypeError(f"QGemm: C must be int32, got {C.dtype.name}")
        try:
            acc = acc + np.broadcast_to(C, (m, n))
        except ValueError:
            raise ValueError(f"QGemm: C of shape {list(C.shape)} does not broadcast to "
                             f"{[m, n]}") from None
    mult = (_F32(alpha) * per_tensor_scale(a_scale, "a_scale")) * bs.reshape(-1)
    if y_scale is not None:
        mult = mult / per_tensor_scale(y_scale, "y_scale")
    mult = mult.reshape(()) if mult.size == 1 else mult
    if y_zero_point is None:
        return _float_epilogue(acc, mult)
    yz = per_tensor(y_zero_point, "y_zero_point")
    return K.requantize(acc, mult.astype(_F32), yz, out_dtype=yz.dtype, axis=-1)


# ---------------------------------------------------------------- QAttention

@op("QAttention", domain=MS)
def qattention(input, weight, bias, input_scale, weight_scale, mask_index=None,
               input_zero_point=None, weight_zero_point=None, past=None, *,
               do_rotary=None, mask_filter_value=None, num_heads,
               past_present_share_buffer=None, scale=None, unidirectional=0, ctx):
    """QKV = float32(acc) * (input_scale * weight_scale) + bias, acc = (input - input_zp) @
    (weight - weight_zp) in int32; then com.microsoft Attention on QKV (mask, past, present,
    unidirectional, scale as there)

    ORT's projection epilogue is exactly that (two float32 roundings; weight_scale and
    weight_zero_point per tensor or per column, i.e. 3 * hidden); the rest is the float
    Attention kernel, which refrt's Attention reproduces within its stated tolerance. The
    epilogue is handed to Attention as its projection, the diagonal matrix of the multipliers
    (each output then takes exactly one rounded product), so that the whole attention part is
    Attention's own code. u8 x s8 products saturate under ``emulate_avx2_u8s8``."""
    x = int8_operand(input, "input")
    w = int8_operand(weight, "weight")
    if x.ndim != 3 or w.ndim != 2:
        raise ValueError(f"QAttention: input must be (B, S, D) and weight (D, 3 * hidden), got "
                         f"{list(x.shape)} and {list(w.shape)}")
    xz = None if input_zero_point is None else per_tensor(input_zero_point, "input_zero_point",
                                                       x.dtype)
    wz = _b_zero_point_layout(weight_zero_point, w, "weight_zero_point")
    acc = matmul_integer(x, w, xz, wz, ctx, b_input=1)
    mult = per_tensor_scale(input_scale, "input_scale") * _b_scale_layout(weight_scale, w,
                                                                      "weight_scale")
    projection = np.diag(np.broadcast_to(mult, (w.shape[1],)).astype(_F32))
    return _ms_attention(acc.astype(_F32), projection, bias, mask_index, past,
                         do_rotary=do_rotary or 0,
                         mask_filter_value=(f32(-10000.0) if mask_filter_value is None
                                            else mask_filter_value),
                         num_heads=num_heads,
                         past_present_share_buffer=past_present_share_buffer or 0,
                         scale=scale, unidirectional=unidirectional, ctx=ctx)


# ---------------------------------------------------------------- QEmbedLayerNormalization

@op("QEmbedLayerNormalization", domain=MS)
def qembed_layer_normalization(input_ids, segment_ids=None, word_embedding_quant=None,
                               position_embedding_quant=None, segment_embedding=None,
                               gamma_quant=None, beta_quant=None, mask=None,
                               word_embedding_scale=None, position_embedding_scale=None,
                               segment_embedding_scale=None, gamma_scale=None, beta_scale=None,
                               word_embedding_zero_point=None, position_embedding_zero_point=None,
                               segment_embedding_zero_point=None, gamma_zero_point=None,
                               beta_zero_point=None, *, epsilon=f32(1e-12)):
    """EmbedLayerNormalization on the dequantized tables: word / position / segment embeddings,
    gamma and beta each (q - zero_point) * scale (per tensor); outputs the normalized sum and
    mask_index

    ORT dequantizes the same way (float32) but runs its own layer normalization loop (sum,
    mean, centred sum of squares, x / sqrt(var + eps) * gamma + beta, left-to-right float32
    sums): results agree within a few float32 ULP, not bit for bit. Positions are 0..S-1.

    segment_ids, segment_embedding (with its scale and zero point) and mask are optional, as in
    onnxruntime's schema; inputs after an optional one have defaults here only so that Python
    accepts the signature, and the body checks the required ones."""
    def dq(q, s, z, name):
        if q is None:
            return None
        q = int8_operand(q, name)
        return dequantize(q, per_tensor_scale(s, f"{name} scale"), per_tensor_zero_point(z, q.dtype, name))

    for name, v in (("word_embedding_quant", word_embedding_quant),
                    ("position_embedding_quant", position_embedding_quant),
                    ("gamma_quant", gamma_quant), ("beta_quant", beta_quant)):
        if v is None:
            raise ValueError(f"QEmbedLayerNormalization: {name} is required")
    for name, v in (("word_embedding_scale", word_embedding_scale),
                    ("position_embedding_scale", position_embedding_scale),
                    ("gamma_scale", gamma_scale), ("beta_scale", beta_scale),
                    ("word_embedding_zero_point", word_embedding_zero_point),
                    ("position_embedding_zero_point", position_embedding_zero_point),
                    ("gamma_zero_point", gamma_zero_point),
                    ("beta_zero_point", beta_zero_point)):
        if v is None:
            raise ValueError(f"QEmbedLayerNormalization: {name} is required")
    y, mask_index, _ = _ms_embed_layer_normalization(
        input_ids, segment_ids,
        dq(word_embedding_quant, word_embedding_scale, word_embedding_zero_point, "word"),
        dq(position_embedding_quant, position_embedding_scale, position_embedding_zero_point,
           "position"),
        dq(segment_embedding, segment_embedding_scale, segment_embedding_zero_point, "segment"),
        dq(gamma_quant, gamma_scale, gamma_zero_point, "gamma"),
        dq(beta_quant, beta_scale, beta_zero_point, "beta"),
        mask, epsilon=epsilon)
    return y, mask_index


# ---------------------------------------------------------------- DynamicQuantizeLSTM

def _gate_params(q, scale, zp, name, num_dir):
    """W or R [num_dir, in, 4H] with its scale and zero point -> (q, per direction: the scale
    (float32) and the zero point (int64), each 0-d or one per column)."""
    q = int8_operand(q, name)
    if q.ndim != 3 or q.shape[0] != num_dir:
        raise ValueError(f"DynamicQuantizeLSTM: {name} must be [{num_dir}, in, 4 * hidden], got "
                         f"{list(q.shape)}")
    cols = q.shape[2]
    s = np.asarray(scale, _F32)
    z = np.asarray(zp)
    if z.dtype != q.dtype:
        raise TypeError(f"DynamicQuantizeLSTM: {name}per_tensor_zero_point must be {q.dtype.name}")
    shapes = ((num_dir,), (num_dir, 1), (num_dir, cols))
    if s.shape not in shapes or z.shape not in shapes:
        raise ValueError(f"DynamicQuantizeLSTM: {name}_scale / {name}per_tensor_zero_point must be "
                         f"[{num_dir}] or [{num_dir}, {cols}], got {list(s.shape)} and "
                         f"{list(z.shape)}")
    s, z = s.reshape(num_dir, -1), z.astype(np.int64).reshape(num_dir, -1)
    return (q, [v.reshape(()) if v.size == 1 else v for v in s],
            [v.reshape(()) if v.size == 1 else v for v in z])


def _dynamic_projection(pack, zp, scale, gemm):
    """v [rows, K] -> float32(acc) * float32(v_scale * scale), acc the int32 product of v
    quantized as one tensor (DynamicQuantizeLinear's uint8 formula: ORT's
    GetQuantizationParameter + MlasQuantizeLinear) with the packed weights."""
    def project(v):
        vq, v_scale, v_zp = K.dynamic_quantize_linear(v, mode="ort")
        return _float_epilogue(gemm(vq, pack, v_zp, zp), _F32(v_scale) * scale)
    return project


def _ort_lstm_activations(activations, alphas, betas, num_dir):
    """[f, g, h] per direction; Sigmoid and Tanh are MLAS's (mlas_logistic, mlas_tanh) as in
    ORT's LSTM cells, the other names refrt's LSTM functions (alpha / beta bound in order)."""
    names = (list(activations) if activations is not None
             else ["Sigmoid", "Tanh", "Tanh"] * num_dir)
    if len(names) not in (3, 3 * num_dir):
        raise ValueError(f"DynamicQuantizeLSTM: activations must hold {3 * num_dir} names (3 per "
                         f"direction), got {len(names)}")
    funcs = activation_functions(names, alphas, betas, np.dtype(_F32))
    mlas = {"sigmoid": mlas_logistic, "tanh": mlas_tanh}
    funcs = [mlas.get(str(name).lower(), fn) for name, fn in zip(names, funcs)]
    funcs = funcs * (3 * num_dir // len(funcs))
    return [funcs[3 * d:3 * d + 3] for d in range(num_dir)]


def _ort_gate(v, extra, bias, clip):
    """A gate's pre-activation as ORT forms it: (v + extra) + bias, clipped to [-clip, clip]
    with its comparisons (std::min then std::max with a bias, where NaN becomes clip)."""
    if extra is not None:
        v = v + extra
    if bias is None:
        return np.where(v > clip, clip, np.where(v < -clip, -clip, v))
    v = v + bias
    v = np.where(v < clip, v, clip)
    return np.where(-clip < v, v, -clip)


def _ort_lstm_cell(gates, c_prev, bias, peep, acts, clip, input_forget):
    """One step of ORT's LSTM cell on gates = X W + H R ([rows, 4H], order i, o, f, c):
    i = f(gi + Pi C), forget = f(gf + Pf C) (1 - i with input_forget), C' = C forget + i g(gc),
    o = f(go + Po C'), H' = h(C') o; each gate's bias Wb + Rb added after the peephole, then
    clipped (float32, one rounding per operation, no fused multiply-add)."""
    f, g, h = acts
    gi, go, gf, gc = np.split(gates, 4, axis=-1)
    bi, bo, bf, bc = bias if bias is not None else (None,) * 4
    pi, po, pf = peep if peep is not None else (None,) * 3

    def peephole(p, c):
        return None if p is None else c * p

    i = f(_ort_gate(gi, peephole(pi, c_prev), bi, clip))
    forget = _F32(1) - i if input_forget else f(_ort_gate(gf, peephole(pf, c_prev), bf, clip))
    c = c_prev * forget + i * g(_ort_gate(gc, None, bc, clip))
    o = f(_ort_gate(go, peephole(po, c), bo, clip))
    return h(c) * o, c


def _ort_lstm_direction(xs, lens, x_proj, h_proj, h0, c0, cell, chunk, zero_finished):
    """One direction in ORT's order -> (y [seq, batch, H], final C). xs is already in the
    direction's time order. X W for the first max(lens) steps is one GEMM (one quantization);
    then each chunk of ``chunk`` batch rows runs its steps, quantizing its own H rows per step.
    A finished row keeps its C; its H reads as 0 when Y is produced (``zero_finished``), else
    keeps its last value (ORT's buffers); either way it still counts in its chunk's range."""
    seq, batch = xs.shape[:2]
    steps = int(lens.max(initial=0))
    y = np.zeros((seq, batch, h0.shape[-1]), _F32)
    h, c = h0.copy(), c0.copy()
    if steps == 0:
        return y, c
    x_gates = x_proj(xs[:steps].reshape(steps * batch, -1)).reshape(steps, batch, -1)
    for start in range(0, batch, chunk):
        rows = slice(start, start + chunk)
        for t in range(steps):
            live = (t < lens[rows])[:, None]
            h_new, c_new = cell(x_gates[t, rows] + h_proj(h[rows]), c[rows])
            y[t, rows] = np.where(live, h_new, 0)
            c[rows] = np.where(live, c_new, c[rows])
            h[rows] = y[t, rows] if zero_finished else np.where(live, h_new, h[rows])
    return y, c


def _ort_lstm_chunk(batch, hidden, ctx):
    """Batch rows whose H ORT quantizes together: its LSTM splits the batch into chunks of
    ceil(batch / threads) rows (threads = the session's intra-op threads) when batch > 4 or
    (batch >= 2 and hidden <= 256), else one chunk. refrt reads ``intra_op_num_threads``;
    its default 0 means onnxruntime's default, the number of physical cores (``ort_threads``)."""
    threads = ort_threads(ctx)
    if batch > 4 or (batch >= 2 and hidden <= 256):
        return max(1, -(-batch // threads))
    return max(1, batch)


@op("DynamicQuantizeLSTM", domain=MS)
def dynamic_quantize_lstm(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None,
                          P=None, W_scale=None, W_zero_point=None, R_scale=None,
                          R_zero_point=None, *, activation_alpha=None, activation_beta=None,
                          activations=None, clip=None, direction="forward", hidden_size=None,
                          input_forget=0, ctx):
    """LSTM (gates i, o, f, c; outputs Y, Y_h, Y_c) whose X W and H R products are integer
    GEMMs: W [D, in, 4H] and R [D, H, 4H] (transposed against LSTM's) int8/uint8 with a scale
    and zero point per direction or per column; X and H quantized dynamically to uint8.

    onnxruntime's kernel (DeepCPU LSTM), reproduced bit for bit (both numerics modes):

    * X W: for each direction, the first max(sequence_lens) steps of X (in the direction's time
      order) are quantized as ONE tensor with DynamicQuantizeLinear's formula (float32 scale
      (max(0, max) - min(0, min)) / 255, zero point rounded half to even, x / scale rounded
      half to even); gates = float32(acc) * float32(x_scale * w_scale).
    * H R: at every step, H_{t-1} is quantized the same way, per chunk of batch rows (see
      :func:`_ort_lstm_chunk`: the whole batch unless ORT runs several intra-op threads; set
      ``intra_op_num_threads`` as in ORT), and gates += float32(acc) * float32(h_scale *
      r_scale) (a product, then a sum: two roundings).
    * each gate: ((gates + P (.) C) + (Wb + Rb)) clipped, Wb + Rb summed first; the
      activations Sigmoid and Tanh are MLAS's approximations (:func:`mlas_logistic`,
      :func:`mlas_tanh`), also for h(C); C' = C f + i g, H' = h(C') o (:func:`_ort_lstm_cell`).
    * rows past their sequence length keep C, give Y = 0; Y_h / Y_c are the states after each
      sequence's last step (0 for an empty sequence).

    ORT refuses non-zero int8 weight zero points and per-column uint8 ones that differ;
    refrt computes them exactly. ORT reads uninitialized memory when Y is omitted and some
    sequence is empty (its results then vary from run to run); refrt reads zeros there. u8 x
    s8 products saturate under ``emulate_avx2_u8s8``."""
    for name, v in (("W_scale", W_scale), ("W_zero_point", W_zero_point), ("R_scale", R_scale),
                    ("R_zero_point", R_zero_point)):
        if v is None:
            raise ValueError(f"DynamicQuantizeLSTM: {name} is required")
    if X.dtype != _F32 or X.ndim != 3:
        raise TypeError(f"DynamicQuantizeLSTM: X must be float32 [seq, batch, in], got "
                        f"{X.dtype.name} {list(X.shape)}")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"DynamicQuantizeLSTM: direction must be forward, reverse or "
                         f"bidirectional, got {direction!r}")
    num_dir = 2 if direction == "bidirectional" else 1
    w, w_scale, w_zp = _gate_params(W, W_scale, W_zero_point, "W", num_dir)
    r, r_scale, r_zp = _gate_params(R, R_scale, R_zero_point, "R", num_dir)
    seq, batch, n_in = X.shape
    H = r.shape[1]
    if r.shape[2] != 4 * H or w.shape[1:] != (n_in, 4 * H) or hidden_size not in (None, H):
        raise ValueError(f"DynamicQuantizeLSTM: W must be [{num_dir}, {n_in}, 4H] and R "
                         f"[{num_dir}, H, 4H] (hidden_size {hidden_size}), got "
                         f"{list(w.shape)} and {list(r.shape)}")
    states = []
    for name, v, shape in (("B", B, (num_dir, 8 * H)), ("P", P, (num_dir, 3 * H)),
                           ("initial_h", initial_h, (num_dir, batch, H)),
                           ("initial_c", initial_c, (num_dir, batch, H))):
        if v is not None and tuple(v.shape) != shape:
            raise ValueError(f"DynamicQuantizeLSTM: {name} must be {list(shape)}, got "
                             f"{list(v.shape)}")
        states.append(None if v is None else np.asarray(v, _F32))
    b, p, h0, c0 = states
    if sequence_lens is None:
        lens = np.full(batch, seq, np.int64)
    else:
        lens = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
        if lens.shape != (batch,) or ((lens < 0) | (lens > seq)).any():
            raise ValueError(f"DynamicQuantizeLSTM: sequence_lens must hold {batch} lengths in "
                             f"[0, {seq}], got {lens.tolist()}")
    acts = _ort_lstm_activations(activations, activation_alpha, activation_beta, num_dir)
    clip_value = _F32(np.finfo(_F32).max if clip is None else clip)
    chunk = _ort_lstm_chunk(batch, H, ctx)
    gemm_w, gemm_r = gemm_for(np.uint8, w.dtype, ctx), gemm_for(np.uint8, r.dtype, ctx)
    packs_w, packs_r = packed_matrices(w, ctx, 1), packed_matrices(r, ctx, 2)

    t = np.arange(seq)[:, None]
    reverse_index = np.where(t < lens, lens - 1 - t, t)    # its own inverse
    cols = np.arange(batch)[None, :]
    y = np.zeros((seq, num_dir, batch, H), _F32)
    y_h = np.zeros((num_dir, batch, H), _F32)
    y_c = np.zeros((num_dir, batch, H), _F32)
    for d in range(num_dir):
        backwards = direction == "reverse" or d == 1
        bias = None if b is None else np.split(b[d, :4 * H] + b[d, 4 * H:], 4)
        peep = None if p is None else np.split(p[d], 3)

        def cell(gates, c_prev, bias=bias, peep=peep, acts=acts[d]):
            return _ort_lstm_cell(gates, c_prev, bias, peep, acts, clip_value, input_forget)

        yd, cd = _ort_lstm_direction(
            X[reverse_index, cols] if backwards else X, lens,
            _dynamic_projection(packs_w[d], w_zp[d], w_scale[d], gemm_w),
            _dynamic_projection(packs_r[d], r_zp[d], r_scale[d], gemm_r),
            np.zeros((batch, H), _F32) if h0 is None else h0[d],
            np.zeros((batch, H), _F32) if c0 is None else c0[d],
            cell, chunk, zero_finished=ctx is None or ctx.output_requested(0))
        y[:, d] = yd[reverse_index, cols] if backwards else yd
        last = np.maximum(lens - 1, 0)
        y_h[d] = np.where((lens > 0)[:, None], yd[last, np.arange(batch)], 0)
        y_c[d] = np.where((lens > 0)[:, None], cd, 0)
    return y, y_h, y_c
