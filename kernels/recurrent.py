"""Recurrent layers (LSTM, GRU, RNN) in onnxruntime's float32 order of operations, one compiled
call per layer and direction: the input projection and the whole time loop, with the gate
arithmetic and activations inline.

What onnxruntime's CPU kernels compute (ORT 1.32, read from its DeepCPU sources and checked bit
for bit against it):

* **The products** are MLAS SGEMMs with W and R transposed (``X W^T``, ``H R^T``). LSTM and GRU
  pack W and R when they are constant initializers (K blocks of 256); otherwise, and always for
  RNN, they are unpacked (MLAS's K blocking by the thread's column width, its M = 1 kernel with
  8 lanes for a single row). ``gemm_plan`` turns those rules into a list of (rows, columns,
  K block) pieces, each piece computed as ``sgemm.py`` describes: per K block a chain of fused
  multiply-adds from 0, the blocks added in turn to C (0 for the stride value means the M = 1
  transposed-B kernel). The input projection covers the steps up to the longest sequence
  (all steps for RNN); each step's ``H R^T`` is added into that step's rows (beta = 1), so a gate
  is ``(X W^T) + (H R^T)`` before its bias.
* **LSTM** (gates i, o, f, c): the biases are summed first (``Wb + Rb``); a gate is
  ``g + P (.) C`` (peepholes, the product rounded), then ``+ bias``, then clipped to
  [-clip, clip] (clip defaults to the largest float32), then MLAS's logistic or tanh;
  ``C = C * f + i * c`` (two rounded products, one sum), the output gate's peephole reads the new
  C, ``H = act(C) * o``. onnxruntime splits the batch between its threads (more than 4 rows, or
  2+ rows with H <= 256): each thread's rows are one product per step on one thread.
* **GRU** (gates z, r, h): ``Wb + Rb`` summed for z and r (and h unless linear_before_reset);
  ``H R_zr^T`` into the z, r columns; with linear_before_reset, ``Rbh + H R_h^T`` apart. The
  reset gate and the candidate use onnxruntime's own rational polynomial (the same coefficients
  as MLAS's tanh, evaluated without fused multiply-adds: sigmoid(x) = 0.5 (1 + tanh(x / 2)),
  inputs bounded to [-20, 20] and [-10, 10]); the update gate uses MLAS's logistic.
  ``H = (1 - z) * h + z * H_prev``.
* **RNN**: the bias ``Wb + Rb`` is C before ``X W^T`` is added into it; each step
  ``H R^T + (X W^T + b)``, clipped only when clip is given, then ``Tanh(x) = 2 sigmoid(2x) - 1``,
  ``sigmoid(x) = 1 / (1 + expf(-x))`` (``expf(x) / (1 + expf(x))`` below 0) in float32 with the C
  library's ``expf``, or Relu. The reverse direction walks all steps backwards; a step past a
  sequence's end carries the state through.

Every kernel here has a NumPy twin in ``twins.py`` (``lstm_layer_twin`` etc.) that gives the same
bits.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import vec as V
from .activations import _LOGISTIC, _LOGISTIC_Q, _TANH, _TANH_Q
from .mathf import fma
from .sgemm import PACKED_STRIDE_K, column_segments, k_stride, m1_value
from .vec import LANES

__all__ = ["gemm_plan", "lstm_layer", "gru_layer", "rnn_layer", "GRU_TANH", "GRU_TANH_Q",
           "SIGMOID", "TANH", "RELU"]

_F = np.float32
SIGMOID, TANH, RELU = 0, 1, 2

# onnxruntime's rnn_helpers polynomial (GRU's reset gate and candidate): MLAS's tanh coefficients,
# highest degree first, evaluated with separate multiplies and adds.
GRU_TANH = _TANH
GRU_TANH_Q = _TANH_Q


def gemm_plan(row_chunks, n: int, k: int, packed: bool) -> np.ndarray:
    """The pieces of one MLAS product with B transposed, as int64 rows (r0, r1, n0, n1, stride):
    ``row_chunks`` is [(r0, r1, threads), ...], the rows each call multiplies and the thread
    count it runs with; stride is the K block, or 0 for the M = 1 transposed-B kernel."""
    out = []
    for r0, r1, threads in row_chunks:
        m = r1 - r0
        if m <= 0:
            continue
        if packed:
            out.append((r0, r1, 0, n, PACKED_STRIDE_K))
        elif m == 1:
            out.append((r0, r1, 0, n, 0))
        else:
            for n0, n1 in column_segments(m, n, k, threads):
                out.append((r0, r1, n0, n1, k_stride(n1 - n0, k)))
    return np.array(out, dtype=np.int64).reshape(-1, 5)


# ---------------------------------------------------------------- the product pieces

@njit(cache=True)
def _gemm(a, a_off, lda, b_kn, ldb, b_nk, c, c_off, ldc, plan, accumulate):
    """c[r, n] (+)= a[r, :] . b[:, n] over ``plan``'s pieces, on flat float32 arrays (row r of A at
    a_off + r * lda, of C at c_off + r * ldc; b_kn is B [K, N] flat with row length ldb, b_nk
    B^T [N, K]); ``accumulate``: C holds the first addend (beta = 1), else the first K block is
    stored. Each output's K block is a chain of fused multiply-adds, 16 columns per vector."""
    kdim = b_nk.shape[1]
    zero = V.splat(_F(0.0))
    for p in range(plan.shape[0]):
        r0, r1, n0, n1, stride = plan[p, 0], plan[p, 1], plan[p, 2], plan[p, 3], plan[p, 4]
        if stride == 0:          # SgemmKernelM1TransposeB: one row, 8 lanes per output
            ar = a_off + r0 * lda
            cr = c_off + r0 * ldc
            row = a[ar:ar + kdim]
            for n in range(n0, n1):
                v = m1_value(row, b_nk[n], n - n0, n1 - n0)
                c[cr + n] = v + c[cr + n] if accumulate else v
            continue
        for r in range(r0, r1):
            ar = a_off + r * lda
            cr = c_off + r * ldc
            first = True
            for k0 in range(0, kdim, stride):
                k1 = min(kdim, k0 + stride)
                store_only = first and not accumulate
                n = n0
                while n + 4 * LANES <= n1:
                    s0, s1, s2, s3 = zero, zero, zero, zero
                    for kk in range(k0, k1):
                        av = V.splat(a[ar + kk])
                        bo = kk * ldb + n
                        s0 = V.fma(av, V.load(b_kn, bo), s0)
                        s1 = V.fma(av, V.load(b_kn, bo + LANES), s1)
                        s2 = V.fma(av, V.load(b_kn, bo + 2 * LANES), s2)
                        s3 = V.fma(av, V.load(b_kn, bo + 3 * LANES), s3)
                    _put(c, cr + n, LANES, s0, store_only)
                    _put(c, cr + n + LANES, LANES, s1, store_only)
                    _put(c, cr + n + 2 * LANES, LANES, s2, store_only)
                    _put(c, cr + n + 3 * LANES, LANES, s3, store_only)
                    n += 4 * LANES
                while n < n1:
                    width = min(LANES, n1 - n)
                    s0 = zero
                    for kk in range(k0, k1):
                        s0 = V.fma(V.splat(a[ar + kk]), V.load_first(b_kn, kk * ldb + n, width, _F(0.0)), s0)
                    _put(c, cr + n, width, s0, store_only)
                    n += width
                first = False


@njit(inline="always")
def _put(c, at, width, v, store_only):
    """c[at : at + width] = v, or += v (one float32 addition per lane)."""
    if not store_only:
        v = V.add(V.load_first(c, at, width, _F(0.0)), v)
    if width == LANES:
        V.store(c, at, v)
    else:
        V.store_first(c, at, width, v)


# ---------------------------------------------------------------- activations (scalars)

@njit(inline="always")
def _mlas_logistic(v):
    x = v if not (_F(-18.0) > v) else _F(-18.0)      # max(-18, v), NaN kept
    x = _F(18.0) if _F(18.0) < x else x               # min(18, x)
    x2 = x * x
    p = fma(x2, _LOGISTIC[0], _LOGISTIC[1])
    p = fma(p, x2, _LOGISTIC[2])
    p = fma(p, x2, _LOGISTIC[3])
    p = fma(p, x2, _LOGISTIC[4])
    q = fma(x2, _LOGISTIC_Q[0], _LOGISTIC_Q[1])
    q = fma(q, x2, _LOGISTIC_Q[2])
    q = fma(q, x2, _LOGISTIC_Q[3])
    q = fma(q, x2, _LOGISTIC_Q[4])
    q = fma(q, x2, _LOGISTIC_Q[5])
    r = (p * x) / q + _F(0.5)
    r = r if not (_F(0.0) > r) else _F(0.0)
    return _F(1.0) if _F(1.0) < r else r


@njit(inline="always")
def _mlas_tanh(v):
    x = v if not (_F(-9.0) > v) else _F(-9.0)
    x = _F(9.0) if _F(9.0) < x else x
    x2 = x * x
    p = fma(x2, _TANH[0], _TANH[1])
    p = fma(p, x2, _TANH[2])
    p = fma(p, x2, _TANH[3])
    p = fma(p, x2, _TANH[4])
    p = fma(p, x2, _TANH[5])
    p = fma(p, x2, _TANH[6])
    q = fma(x2, _TANH_Q[0], _TANH_Q[1])
    q = fma(q, x2, _TANH_Q[2])
    q = fma(q, x2, _TANH_Q[3])
    return (x * p) / q


@njit(inline="always")
def _mlas(code, v):
    return _mlas_logistic(v) if code == SIGMOID else _mlas_tanh(v)


@njit(inline="always")
def _poly_tanh(x):
    """onnxruntime's rnn_helpers tanh polynomial (no bound; separate multiplies and adds)."""
    x2 = x * x
    p = x2 * GRU_TANH[0] + GRU_TANH[1]
    p = x2 * p + GRU_TANH[2]
    p = x2 * p + GRU_TANH[3]
    p = x2 * p + GRU_TANH[4]
    p = x2 * p + GRU_TANH[5]
    p = x2 * p + GRU_TANH[6]
    p = x * p
    q = x2 * GRU_TANH_Q[0] + GRU_TANH_Q[1]
    q = x2 * q + GRU_TANH_Q[2]
    q = x2 * q + GRU_TANH_Q[3]
    return p / q


@njit(inline="always")
def _bound(x, b):
    if x < -b:
        return -b
    if x > b:
        return b
    return x


@njit(inline="always")
def _clip_bias(x, bias, has_bias, clip):
    """clip_add_bias (x + b, then min(clip, .), max(-clip, .): NaN becomes clip) or
    clip_ignore_bias (x bounded, NaN kept)."""
    if has_bias:
        x = x + bias
        x = x if x < clip else clip
        return x if -clip < x else -clip
    if x > clip:
        return clip
    if x < -clip:
        return -clip
    return x


@njit(inline="always")
def _expf_sigmoid(x):
    if x >= _F(0.0):
        return _F(1.0) / (_F(1.0) + math.exp(-x))
    e = math.exp(x)
    return e / (_F(1.0) + e)


@njit(inline="always")
def _rnn_act(code, x):
    if code == TANH:
        return _F(2.0) * _expf_sigmoid(_F(2.0) * x) - _F(1.0)
    if code == SIGMOID:
        return _expf_sigmoid(x)
    return x if _F(0.0) < x else _F(0.0)


# ---------------------------------------------------------------- LSTM

@njit(cache=True)
def _lstm(x2, w_kn, w_nk, plan_x, r_kn, r_nk, plan_r, bias, has_bias, peep, has_peep, h0, c0,
          lens, steps, f_code, g_code, h_code, clip, input_forget, y, h_out, c_out):
    batch, hidden = h0.shape
    n_in = x2.shape[1]
    xwf = np.empty(steps * batch * 4 * hidden, _F)
    _gemm(x2.reshape(-1), 0, n_in, w_kn.reshape(-1), 4 * hidden, w_nk, xwf, 0, 4 * hidden, plan_x,
          False)
    xw = xwf.reshape(steps * batch, 4 * hidden)
    h = h0.copy()
    hf = h.reshape(-1)
    c = c0.copy()
    for t in range(steps):
        _gemm(hf, 0, hidden, r_kn.reshape(-1), 4 * hidden, r_nk, xwf, t * batch * 4 * hidden,
              4 * hidden, plan_r, True)
        gates = xw[t * batch:(t + 1) * batch]
        for b in range(batch):
            if t >= lens[b]:
                continue
            for j in range(hidden):
                cp = c[b, j]
                gi = gates[b, j]
                go = gates[b, hidden + j]
                gf = gates[b, 2 * hidden + j]
                gc = gates[b, 3 * hidden + j]
                if has_peep:
                    gi = gi + cp * peep[j]
                i = _mlas(f_code, _clip_bias(gi, bias[j], has_bias, clip))
                if input_forget:
                    f = _F(1.0) - i
                else:
                    if has_peep:
                        gf = gf + cp * peep[2 * hidden + j]
                    f = _mlas(f_code, _clip_bias(gf, bias[2 * hidden + j], has_bias, clip))
                g = _mlas(g_code, _clip_bias(gc, bias[3 * hidden + j], has_bias, clip))
                cn = cp * f + i * g
                if has_peep:
                    go = go + cn * peep[hidden + j]
                o = _mlas(f_code, _clip_bias(go, bias[hidden + j], has_bias, clip))
                c[b, j] = cn
                h[b, j] = _mlas(h_code, cn) * o
                y[t, b, j] = h[b, j]
    for b in range(batch):
        for j in range(hidden):
            h_out[b, j] = h[b, j] if lens[b] > 0 else _F(0.0)
            c_out[b, j] = c[b, j] if lens[b] > 0 else _F(0.0)


def lstm_layer(x, w_kn, w_nk, plan_x, r_kn, r_nk, plan_r, bias, peep, h0, c0, lens, acts,
               clip, input_forget):
    """One LSTM direction in onnxruntime's order. x [T, B, I] in the order the direction reads
    it; w_kn [I, 4H] = W^T and w_nk [4H, I] = W (likewise R); plans from ``gemm_plan`` (rows of
    the input projection: steps * B; of a step: B); bias [4H] (Wb + Rb) or None; peep [3H] or
    None; h0, c0 [B, H]; lens [B] int64; acts (f, g, h) codes (SIGMOID / TANH); clip a float32
    bound. Returns Y [T, B, H] (0 past each sequence's end), final H, final C."""
    seq, batch, _ = x.shape
    hidden = h0.shape[1]
    steps = int(lens.max()) if lens.size else 0
    y = np.zeros((seq, batch, hidden), _F)
    h_out = np.empty((batch, hidden), _F)
    c_out = np.empty((batch, hidden), _F)
    x2 = np.ascontiguousarray(x[:steps].reshape(steps * batch, -1), _F)
    _lstm(x2, w_kn, w_nk, plan_x, r_kn, r_nk, plan_r,
          np.zeros(4 * hidden, _F) if bias is None else bias, bias is not None,
          np.zeros(3 * hidden, _F) if peep is None else peep, peep is not None,
          h0, c0, lens, steps, acts[0], acts[1], acts[2], _F(clip), bool(input_forget),
          y, h_out, c_out)
    return y, h_out, c_out


# ---------------------------------------------------------------- GRU

@njit(cache=True)
def _gru(x2, w_kn, w_nk, plan_x, rzr_kn, rzr_nk, plan_zr, rh_kn, rh_nk, plan_h, bias_zr,
         bias_h, rbh, has_bias, lbr, h0, lens, steps, f_code, g_code, clip, y, h_out):
    batch, hidden = h0.shape
    n_in = x2.shape[1]
    g3 = 3 * hidden
    xwf = np.empty(steps * batch * g3, _F)
    _gemm(x2.reshape(-1), 0, n_in, w_kn.reshape(-1), g3, w_nk, xwf, 0, g3, plan_x, False)
    xw = xwf.reshape(steps * batch, g3)
    h = h0.copy()
    hf = h.reshape(-1)
    lin = np.empty((batch, hidden), _F)
    cur = np.empty((batch, hidden), _F)
    rzr = rzr_kn.reshape(-1)
    rh = rh_kn.reshape(-1)
    for t in range(steps):
        rows = xw[t * batch:(t + 1) * batch]
        _gemm(hf, 0, hidden, rzr, 2 * hidden, rzr_nk, xwf, t * batch * g3, g3, plan_zr, True)
        if lbr:
            for b in range(batch):
                for j in range(hidden):
                    lin[b, j] = rbh[j]
            _gemm(hf, 0, hidden, rh, hidden, rh_nk, lin.reshape(-1), 0, hidden, plan_h, has_bias)
        for b in range(batch):
            for j in range(hidden):
                r = _clip_bias(rows[b, hidden + j], bias_zr[hidden + j], has_bias, clip)
                if f_code == SIGMOID:
                    r = _F(0.5) * (_F(1.0) + _poly_tanh(_F(0.5) * _bound(r, _F(20.0))))
                else:
                    r = _poly_tanh(_bound(r, _F(10.0)))
                cur[b, j] = (lin[b, j] if lbr else h[b, j]) * r
        if lbr:
            for b in range(batch):
                for j in range(hidden):
                    rows[b, 2 * hidden + j] = rows[b, 2 * hidden + j] + cur[b, j]
        else:
            _gemm(cur.reshape(-1), 0, hidden, rh, hidden, rh_nk, xwf, t * batch * g3 + 2 * hidden,
                  g3, plan_h, True)
        for b in range(batch):
            if t >= lens[b]:
                continue
            for j in range(hidden):
                z = _mlas(f_code, _clip_bias(rows[b, j], bias_zr[j], has_bias, clip))
                v = _clip_bias(rows[b, 2 * hidden + j], bias_h[j], has_bias, clip)
                if g_code == SIGMOID:
                    s = _poly_tanh(_F(0.5) * _bound(v, _F(20.0)))
                    hn = ((_F(1.0) - z) * _F(0.5)) * (_F(1.0) + s) + z * h[b, j]
                else:
                    hn = (_F(1.0) - z) * _poly_tanh(_bound(v, _F(10.0))) + z * h[b, j]
                h[b, j] = hn
                y[t, b, j] = hn
    for b in range(batch):
        for j in range(hidden):
            h_out[b, j] = h[b, j] if lens[b] > 0 else _F(0.0)


def gru_layer(x, w_kn, w_nk, plan_x, r_kn, r_nk, plan_zr, plan_h, b, h0, lens, acts, clip,
              linear_before_reset):
    """One GRU direction in onnxruntime's order (arguments as ``lstm_layer``; b [6H] = Wb, Rb
    as the node's B, or None; plans for the z, r columns (N = 2H) and the h columns (N = H)).
    Returns Y [T, B, H], final H."""
    seq, batch, _ = x.shape
    hidden = h0.shape[1]
    steps = int(lens.max()) if lens.size else 0
    y = np.zeros((seq, batch, hidden), _F)
    h_out = np.empty((batch, hidden), _F)
    if b is None:
        bias_zr = np.zeros(2 * hidden, _F)
        bias_h = rbh = np.zeros(hidden, _F)
    else:
        bias_zr = (b[:2 * hidden] + b[3 * hidden:5 * hidden]).astype(_F)
        rbh = np.ascontiguousarray(b[5 * hidden:], _F)
        bias_h = (np.ascontiguousarray(b[2 * hidden:3 * hidden], _F) if linear_before_reset
                  else (b[2 * hidden:3 * hidden] + b[5 * hidden:]).astype(_F))
    x2 = np.ascontiguousarray(x[:steps].reshape(steps * batch, -1), _F)
    _gru(x2, w_kn, w_nk, plan_x, np.ascontiguousarray(r_kn[:, :2 * hidden]),
         np.ascontiguousarray(r_nk[:2 * hidden]), plan_zr,
         np.ascontiguousarray(r_kn[:, 2 * hidden:]), np.ascontiguousarray(r_nk[2 * hidden:]),
         plan_h, bias_zr, bias_h, rbh, b is not None, bool(linear_before_reset), h0, lens,
         steps, acts[0], acts[1], _F(clip), y, h_out)
    return y, h_out


# ---------------------------------------------------------------- RNN

@njit(cache=True)
def _rnn(x2, w_kn, w_nk, plan_x, r_kn, r_nk, plan_r, bias, h0, has_h0, lens, reverse, code,
         clip, y, h_out):
    seq, batch, hidden = y.shape
    xw = np.empty((seq * batch, hidden), _F)
    for i in range(seq * batch):
        for j in range(hidden):
            xw[i, j] = bias[j]
    _gemm(x2.reshape(-1), 0, x2.shape[1], w_kn.reshape(-1), hidden, w_nk, xw.reshape(-1), 0,
          hidden, plan_x, True)
    h = h0.copy()
    hf = h.reshape(-1)
    frame = np.empty((batch, hidden), _F)
    rk = r_kn.reshape(-1)
    for s in range(seq):
        t = seq - 1 - s if reverse else s
        if s == 0 and not has_h0:
            for b in range(batch):
                for j in range(hidden):
                    frame[b, j] = _F(0.0)
        else:
            _gemm(hf, 0, hidden, rk, hidden, r_nk, frame.reshape(-1), 0, hidden, plan_r, False)
        for b in range(batch):
            if t >= lens[b]:
                continue            # the state passes through; Y is 0 there
            for j in range(hidden):
                v = frame[b, j] + xw[t * batch + b, j]
                if clip >= _F(0.0):
                    v = v if not (clip < v) else clip
                    v = -clip if v < -clip else v
                h[b, j] = _rnn_act(code, v)
                y[t, b, j] = h[b, j]
    for b in range(batch):
        for j in range(hidden):
            h_out[b, j] = h[b, j] if lens[b] > 0 else _F(0.0)


def rnn_layer(x, w_kn, w_nk, plan_x, r_kn, r_nk, plan_r, bias, h0, lens, reverse, act, clip):
    """One RNN direction in onnxruntime's order: x [T, B, I] in time order (``reverse`` walks it
    backwards); plan_x over all T * B rows; bias [H] (Wb + Rb) or None; h0 [B, H] or None;
    act a code (TANH, SIGMOID, RELU); clip < 0: none. Returns Y [T, B, H], final H."""
    seq, batch, _ = x.shape
    hidden = r_nk.shape[1]
    y = np.zeros((seq, batch, hidden), _F)
    h_out = np.empty((batch, hidden), _F)
    x2 = np.ascontiguousarray(x.reshape(seq * batch, -1), _F)
    _rnn(x2, w_kn, w_nk, plan_x, r_kn, r_nk, plan_r,
         np.zeros(hidden, _F) if bias is None else bias,
         np.zeros((batch, hidden), _F) if h0 is None else h0, h0 is not None, lens,
         bool(reverse), act, _F(clip), y, h_out)
    return y, h_out
