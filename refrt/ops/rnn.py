"""Recurrent layers: RNN, GRU, LSTM.

The three share one driver, :func:`_recurrent`, which handles everything but the cell equations:
the ``layout`` attribute, shape checks, ``direction`` (forward, reverse, bidirectional),
``sequence_lens`` and the activation lists. Each op supplies a *step*: the cell equations for one
time step of one direction, given the precomputed ``X_t * W^T + Wb`` for that step.

Conventions shared by all three (onnxruntime's CPU kernels behave the same way):

* ``clip`` bounds the pre-activation value of every gate (after the biases and peepholes are added);
  LSTM's cell state is not clipped before ``h``.
* With ``sequence_lens``, batch entry ``b`` runs only its first ``len_b`` steps; the reverse
  direction reads ``X[len_b - 1], ..., X[0]``. ``Y`` is zero at steps ``t >= len_b`` and the final
  states are those after step ``len_b - 1`` (zero for an empty sequence).
* ``activation_alpha`` / ``activation_beta`` are consumed in order by the activations that take
  such a parameter (e.g. ``[Sigmoid, LeakyRelu, Tanh]`` with ``activation_alpha=[0.1]`` gives
  LeakyRelu alpha 0.1); a missing value takes the default of the ONNX operator of that name.
* Float16 and bfloat16 compute in float32, and the outputs are rounded back to X's type.

In the default "ort" numerics a float32 layer whose activations onnxruntime computes with its own
kernels (LSTM and GRU: Sigmoid, Tanh; RNN: Tanh, Sigmoid, Relu) runs as onnxruntime's DeepCPU
kernels do, bit for bit (``kernels/recurrent.py``: MLAS's products with its packing and thread
split, the biases pre-summed, MLAS's logistic/tanh, GRU's own polynomial, RNN's expf-based
functors), one compiled call per direction. Other activations, other types and "spec" numerics
use the NumPy steps below (exact sigmoid/tanh, NumPy's matmul).
"""

from __future__ import annotations

import numpy as np

from ..registry import op
from ._common import compute_dtype, once_per_session, ort_threads
from ._kernels import K
from .elementwise import (
    elu,
    hard_sigmoid,
    leaky_relu,
    relu,
    sigmoid,
    softplus,
    softsign,
    tanh,
    thresholded_relu,
)

# ---------------------------------------------------------------- gate activations

# lower-case name -> (fn(x, alpha, beta), default alpha, default beta); a default of None means the
# function takes no such parameter (and consumes no value from activation_alpha / _beta).
_ACTIVATIONS = {
    "relu": (lambda x, a, b: relu(x), None, None),
    "tanh": (lambda x, a, b: tanh(x), None, None),
    "sigmoid": (lambda x, a, b: sigmoid(x), None, None),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: leaky_relu(x, alpha=a), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: thresholded_relu(x, alpha=a), 1.0, None),
    "scaledtanh": (lambda x, a, b: a * tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: hard_sigmoid(x, alpha=a, beta=b), 0.2, 0.5),
    "elu": (lambda x, a, b: elu(x, alpha=a), 1.0, None),
    "softsign": (lambda x, a, b: softsign(x), None, None),
    "softplus": (lambda x, a, b: softplus(x), None, None),
}


def activation_functions(names, alphas, betas, dtype) -> list:
    """Activation names -> one-argument callables, with alpha/beta values bound in list order."""
    alphas, betas = list(alphas or []), list(betas or [])
    funcs = []
    for name in names:
        entry = _ACTIVATIONS.get(str(name).lower())
        if entry is None:
            raise ValueError(f"unknown activation {name!r}; expected one of "
                             f"{', '.join(sorted(_ACTIVATIONS))} (case-insensitive)")
        fn, alpha, beta = entry
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        a = None if alpha is None else dtype.type(alpha)
        b = None if beta is None else dtype.type(beta)
        funcs.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b))
    return funcs


def _per_direction(activations, defaults, num_directions, alphas, betas, dtype) -> list[list]:
    """Split the ``activations`` attribute into one list of callables per direction.

    Accepted lengths: n * num_directions (the spec), n for a bidirectional layer (the same functions
    in both directions), or 2n for a one-directional layer (the first n are used: RNN's schema
    default is [Tanh, Tanh] whatever the direction)."""
    n = len(defaults)
    names = list(activations) if activations is not None else list(defaults) * num_directions
    funcs = activation_functions(names, alphas, betas, dtype)
    if len(funcs) == n * num_directions or (num_directions == 1 and len(funcs) == 2 * n):
        return [funcs[d * n:(d + 1) * n] for d in range(num_directions)]
    if len(funcs) == n:
        return [funcs] * num_directions
    raise ValueError(f"activations has {len(names)} entries, expected {n * num_directions} "
                     f"({n} per direction)")


# ---------------------------------------------------------------- the shared driver

def _check_shape(name, arr, expected):
    if arr is not None and tuple(arr.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {tuple(expected)}")


def _checked_lengths(x, w, r, b, sequence_lens, initial_states, n_gates, num_dir, hidden_size):
    """Check a layer's operands against X [seq, batch, input] (time-major) and R's hidden size
    H; returns the sequence lengths [batch] as int64 (all ``seq`` without ``sequence_lens``)."""
    seq_len, batch, input_size = x.shape
    H = r.shape[-1]
    if hidden_size is not None and hidden_size != H:
        raise ValueError(f"hidden_size={hidden_size} does not match R's last dimension {H}")
    _check_shape("W", w, (num_dir, n_gates * H, input_size))
    _check_shape("R", r, (num_dir, n_gates * H, H))
    _check_shape("B", b, (num_dir, 2 * n_gates * H))
    for i, s in enumerate(initial_states):
        _check_shape("initial_c" if i else "initial_h", s, (num_dir, batch, H))
    if sequence_lens is None:
        return np.full(batch, seq_len, dtype=np.int64)
    lens = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
    _check_shape("sequence_lens", lens, (batch,))
    if ((lens < 0) | (lens > seq_len)).any():
        raise ValueError(f"sequence_lens {lens.tolist()} must lie in [0, {seq_len}]")
    return lens


def _recurrent(step, n_gates, default_activations, x, w, r, b, sequence_lens, initial_states, *,
               hidden_size, direction, layout, activations, activation_alpha, activation_beta,
               clip):
    """Run one recurrent layer; returns (Y, *final_states) in the layout the node asked for.

    ``step(d, xw_t, states, r_d, rb_d, acts, clip) -> new states`` computes one time step of
    direction ``d`` for the whole batch; ``states[0]`` is the hidden state H.
    """
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"direction must be forward, reverse or bidirectional, got {direction!r}")
    if layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1, got {layout}")
    if x.ndim != 3:
        raise ValueError(f"X must have rank 3, got shape {x.shape}")
    num_dir = 2 if direction == "bidirectional" else 1
    if layout == 1:   # [batch, seq, ...] -> [seq, batch, ...]; states [batch, dir, H] -> [dir, batch, H]
        x = x.swapaxes(0, 1)
        initial_states = [None if s is None else s.swapaxes(0, 1) for s in initial_states]
    seq_len, batch, input_size = x.shape
    H = r.shape[-1]
    lens = _checked_lengths(x, w, r, b, sequence_lens, initial_states, n_gates, num_dir, hidden_size)

    out_dtype, ct = x.dtype, compute_dtype(x.dtype)
    x, w, r = (a.astype(ct, copy=False) for a in (x, w, r))
    b = np.zeros((num_dir, 2 * n_gates * H), ct) if b is None else b.astype(ct, copy=False)
    acts = _per_direction(activations, default_activations, num_dir, activation_alpha,
                          activation_beta, ct)

    # time index per (step, batch entry): identity for forward, the reversal of the first len_b
    # steps for reverse; it is its own inverse, so it also puts the outputs back in place.
    t = np.arange(seq_len)[:, None]
    reverse_index = np.where(t < lens, lens - 1 - t, t)
    cols = np.arange(batch)[None, :]
    valid = (t < lens)[..., None]                                   # [seq, batch, 1]

    ys, finals = [], []
    for d in range(num_dir):
        backwards = direction == "reverse" or d == 1
        xs = x[reverse_index, cols] if backwards else x
        xw = xs @ w[d].T + b[d, :n_gates * H]                          # [seq, batch, G*H]
        states = tuple(np.zeros((batch, H), ct) if s is None else s[d].astype(ct)
                       for s in initial_states)
        y = np.zeros((seq_len, batch, H), ct)
        for i in range(seq_len):
            new = step(d, xw[i], states, r[d], b[d, n_gates * H:], acts[d], clip)
            states = tuple(np.where(valid[i], n, s) for n, s in zip(new, states))
            y[i] = np.where(valid[i], states[0], 0)
        ys.append(y[reverse_index, cols] if backwards else y)
        finals.append([np.where((lens == 0)[:, None], 0, s) for s in states])

    y = np.stack(ys, axis=1)                                         # [seq, dir, batch, H]
    final = [np.stack([f[k] for f in finals]) for k in range(len(initial_states))]
    if layout == 1:
        y = y.transpose(2, 0, 1, 3)
        final = [s.swapaxes(0, 1) for s in final]
    return tuple(a.astype(out_dtype, copy=False) for a in (y, *final))


def _clip(v, clip):
    """Bound a gate's pre-activation value to [-clip, clip] (no bound when clip is None)."""
    return v if clip is None else np.clip(v, -clip, clip)


# ---------------------------------------------------------------- the ops

@op("RNN", since=(1, 7, 14, 22))
def rnn(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
        activation_beta=None, activations=("Tanh", "Tanh"), clip=None, direction="forward",
        hidden_size=None, layout=0, output_sequence=0, ctx=None):
    """Ht = f(Xt*(Wi^T) + Ht-1*(Ri^T) + Wbi + Rbi); outputs (Y, Y_h).
    ``output_sequence`` (opset 1) only said whether Y is wanted: Y is always computed."""
    fast = _ort_layers("RNN", X, W, R, B, sequence_lens, [initial_h], ctx, activations=activations,
                       clip=clip, direction=direction, layout=layout, hidden_size=hidden_size)
    if fast is not None:
        return fast

    def step(d, xw, states, r, rb, acts, clip):
        (h,) = states
        return (acts[0](_clip(xw + h @ r.T + rb, clip)),)

    return _recurrent(step, 1, ("Tanh",), X, W, R, B, sequence_lens, [initial_h],
                      hidden_size=hidden_size, direction=direction, layout=layout,
                      activations=activations, activation_alpha=activation_alpha,
                      activation_beta=activation_beta, clip=clip)


@op("GRU", since=(3, 7, 14, 22))
def gru(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
        activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None,
        layout=0, linear_before_reset=0, output_sequence=0, ctx=None):
    """zt = f(Xt*Wz^T + Ht-1*Rz^T + Wbz + Rbz), rt = f(... r ...),
    ht = g(Xt*Wh^T + (rt (.) Ht-1)*Rh^T + Rbh + Wbh)  (linear_before_reset: rt (.) (Ht-1*Rh^T + Rbh)),
    Ht = (1 - zt) (.) ht + zt (.) Ht-1; gates in W, R, B are ordered z, r, h; outputs (Y, Y_h)."""
    fast = _ort_layers("GRU", X, W, R, B, sequence_lens, [initial_h], ctx, activations=activations,
                       clip=clip, direction=direction, layout=layout, hidden_size=hidden_size,
                       linear_before_reset=linear_before_reset)
    if fast is not None:
        return fast

    def step(d, xw, states, r, rb, acts, clip):
        (h,) = states
        f, g = acts
        xz, xr, xh = np.split(xw, 3, axis=-1)
        rz, rr, rh = np.split(r, 3)
        bz, br, bh = np.split(rb, 3)
        z = f(_clip(xz + h @ rz.T + bz, clip))
        reset = f(_clip(xr + h @ rr.T + br, clip))
        if linear_before_reset:
            candidate = g(_clip(xh + reset * (h @ rh.T + bh), clip))
        else:
            candidate = g(_clip(xh + (reset * h) @ rh.T + bh, clip))
        return ((1 - z) * candidate + z * h,)

    return _recurrent(step, 3, ("Sigmoid", "Tanh"), X, W, R, B, sequence_lens, [initial_h],
                      hidden_size=hidden_size, direction=direction, layout=layout,
                      activations=activations, activation_alpha=activation_alpha,
                      activation_beta=activation_beta, clip=clip)


@op("GRU", since=1)
def gru_1(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
          activation_beta=None, activations=None, clip=None, direction="foward", hidden_size=None,
          output_sequence=0, ctx=None):
    """GRU-1: GRU-3 without linear_before_reset. The schema's default direction is spelled
    "foward"; refrt reads that spelling as "forward"."""
    return gru(X, W, R, B, sequence_lens, initial_h, activation_alpha=activation_alpha,
               activation_beta=activation_beta, activations=activations, clip=clip,
               direction="forward" if direction == "foward" else direction,
               hidden_size=hidden_size, ctx=ctx)


@op("LSTM", since=(1, 7, 14, 22))
def lstm(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, *,
         activation_alpha=None, activation_beta=None, activations=None, clip=None,
         direction="forward", hidden_size=None, input_forget=0, layout=0, output_sequence=0,
         ctx=None):
    """it = f(Xt*Wi^T + Ht-1*Ri^T + Pi (.) Ct-1 + Wbi + Rbi), ft likewise with Pf (ft = 1 - it with
    input_forget), ct = g(Xt*Wc^T + Ht-1*Rc^T + Wbc + Rbc), Ct = ft (.) Ct-1 + it (.) ct,
    ot = f(Xt*Wo^T + Ht-1*Ro^T + Po (.) Ct + Wbo + Rbo), Ht = ot (.) h(Ct);
    gates in W, R, B are ordered i, o, f, c and peepholes in P i, o, f; outputs (Y, Y_h, Y_c)."""
    H = R.shape[-1]
    num_dir = 2 if direction == "bidirectional" else 1
    _check_shape("P", P, (num_dir, 3 * H))
    fast = _ort_layers("LSTM", X, W, R, B, sequence_lens, [initial_h, initial_c], ctx,
                       activations=activations, clip=clip, direction=direction, layout=layout,
                       hidden_size=hidden_size, input_forget=input_forget, P=P)
    if fast is not None:
        return fast
    peep = None if P is None else np.split(P.astype(compute_dtype(X.dtype)), 3, axis=-1)

    def step(d, xw, states, r, rb, acts, clip):
        h, c = states
        f, g, h_act = acts
        gi, go, gf, gc = np.split(xw + h @ r.T + rb, 4, axis=-1)
        pi, po, pf = (0, 0, 0) if peep is None else (peep[0][d], peep[1][d], peep[2][d])
        i = f(_clip(gi + pi * c, clip))
        forget = 1 - i if input_forget else f(_clip(gf + pf * c, clip))
        c_new = forget * c + i * g(_clip(gc, clip))
        o = f(_clip(go + po * c_new, clip))
        return o * h_act(c_new), c_new

    return _recurrent(step, 4, ("Sigmoid", "Tanh", "Tanh"), X, W, R, B, sequence_lens,
                      [initial_h, initial_c], hidden_size=hidden_size, direction=direction,
                      layout=layout, activations=activations, activation_alpha=activation_alpha,
                      activation_beta=activation_beta, clip=clip)


# ---------------------------------------------------------------- onnxruntime's kernels ("ort")

# activation name -> kernel code (kernels/recurrent.py: 0 sigmoid, 1 tanh, 2 relu) for the
# activations onnxruntime computes with kernels of its own that refrt reproduces
_ORT_CODES = {"LSTM": {"sigmoid": 0, "tanh": 1}, "GRU": {"sigmoid": 0, "tanh": 1},
              "RNN": {"sigmoid": 0, "tanh": 1, "relu": 2}}
_DEFAULTS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _ort_codes(kind, activations, num_dir):
    """Per direction, the kernel codes of the activations, or None where one is not covered."""
    n = len(_DEFAULTS[kind])
    names = list(activations) if activations is not None else list(_DEFAULTS[kind]) * num_dir
    codes = [_ORT_CODES[kind].get(str(a).lower()) for a in names]
    if any(c is None for c in codes):
        return None
    if len(codes) == n * num_dir or (num_dir == 1 and len(codes) == 2 * n):
        return [codes[d * n:(d + 1) * n] for d in range(num_dir)]
    if len(codes) == n:
        return [codes] * num_dir
    return None


def _plans(kind, seq, batch, input_size, H, G, steps, threads, packed_w, packed_r, lens):
    """(plan of the input projection, of the recurrent product (LSTM, RNN) or its two parts
    (GRU: z and r, then h), the order a reversed direction reads the steps in, or None when
    every sequence is full)."""
    plan_x = K.rnn_gemm_plan([(0, steps * batch, threads)], G * H, input_size, packed_w)
    if kind == "LSTM" and (batch > 4 or (batch >= 2 and H <= 256)):
        chunk = -(-batch // max(1, threads))       # onnxruntime's rows per thread
        rows = [(r0, min(batch, r0 + chunk), 1) for r0 in range(0, batch, chunk)]
    else:
        rows = [(0, batch, threads)]
    plan_r = plan_zr = plan_h = None
    if kind == "GRU":
        plan_zr = K.rnn_gemm_plan(rows, 2 * H, H, packed_r)
        plan_h = K.rnn_gemm_plan(rows, H, H, packed_r)
    else:
        plan_r = K.rnn_gemm_plan(rows, G * H, H, packed_r)
    reverse_index = None
    if lens is not None:
        t = np.arange(seq)[:, None]
        reverse_index = np.where(t < lens, lens - 1 - t, t)
    return plan_x, plan_r, plan_zr, plan_h, reverse_index


def _ort_layers(kind, x, w, r, b, sequence_lens, initial_states, ctx, *, activations, clip,
                direction, layout, hidden_size, linear_before_reset=0, input_forget=0, P=None):
    """The layer as onnxruntime's CPU kernels compute it, or None where refrt does not reproduce
    them (see the module docstring): then the caller's NumPy steps run."""
    if ctx is None or ctx.numerics != "ort" or x.dtype != np.float32 or x.ndim != 3:
        return None
    if direction not in ("forward", "reverse", "bidirectional") or layout not in (0, 1):
        return None
    if any(a is not None and a.dtype != np.float32 for a in (w, r, b, P, *initial_states)):
        return None
    num_dir = 2 if direction == "bidirectional" else 1
    codes = once_per_session(ctx, ("rnn-codes",), [], lambda: _ort_codes(kind, activations, num_dir),
                             signature=direction)
    if codes is None:
        return None
    G = _GATES[kind]
    if layout == 1:
        x = x.swapaxes(0, 1)
        initial_states = [None if s is None else s.swapaxes(0, 1) for s in initial_states]
    seq, batch, input_size = x.shape
    H = r.shape[-1]
    if seq == 0 or batch == 0 or input_size == 0 or H == 0:
        return None
    _check_shape("P", P, (num_dir, 3 * H))
    lens = _checked_lengths(x, w, r, b, sequence_lens, initial_states, G, num_dir, hidden_size)

    threads = ort_threads(ctx)
    rnn = kind == "RNN"
    packed_w = not rnn and ctx.is_constant(1)      # onnxruntime packs constant LSTM/GRU weights
    packed_r = not rnn and ctx.is_constant(2)

    def layouts(arr, index):
        return once_per_session(ctx, ("rnn-weights", index), [index], lambda: [
            (np.ascontiguousarray(arr[d]), np.ascontiguousarray(arr[d].T)) for d in range(num_dir)],
            signature=arr.shape)

    w_l, r_l = layouts(w, 1), layouts(r, 2)
    full = bool((lens == seq).all())
    steps = seq if rnn or full else int(lens.max())
    # the products' plans and the reversed reading order depend on the shapes, the thread count
    # and the lengths only: kept while those stay the same (as they do from run to run, usually)
    plan_x, plan_r, plan_zr, plan_h, reverse_index = once_per_session(
        ctx, ("rnn-plans",), [],
        lambda: _plans(kind, seq, batch, input_size, H, G, steps, threads, packed_w, packed_r,
                       None if full else lens),
        signature=(x.shape, H, threads, packed_w, packed_r, None if full else lens.tobytes()))
    cols = np.arange(batch)[None, :]
    fmax = np.finfo(np.float32).max
    y_all = np.empty((seq, num_dir, batch, H), np.float32)
    finals = [np.empty((num_dir, batch, H), np.float32) for _ in initial_states]
    for d in range(num_dir):
        backwards = direction == "reverse" or d == 1
        (w_nk, w_kn), (r_nk, r_kn) = w_l[d], r_l[d]
        init = [None if s is None else np.ascontiguousarray(s[d]) for s in initial_states]
        zeros = np.zeros((batch, H), np.float32)
        if rnn:
            bias = None if b is None else (b[d, :H] + b[d, H:]).astype(np.float32)
            y, h = K.rnn_layer(x, w_kn, w_nk, plan_x, r_kn, r_nk, plan_r, bias, init[0], lens,
                               backwards, codes[d][0], -1.0 if clip is None else clip)
            y_all[:, d] = y
            finals[0][d] = h
            continue
        if not backwards:
            xs = x
        elif reverse_index is None:        # every sequence full: read from the end
            xs = x[::-1]
        else:
            xs = x[reverse_index, cols]
        xs = np.ascontiguousarray(xs)
        h0 = zeros if init[0] is None else init[0]
        clip_v = fmax if clip is None else clip
        if kind == "LSTM":
            bias = None if b is None else (b[d, :4 * H] + b[d, 4 * H:]).astype(np.float32)
            peep = None if P is None else np.ascontiguousarray(P[d])
            c0 = zeros if init[1] is None else init[1]
            out = K.lstm_layer(xs, w_kn, w_nk, plan_x, r_kn, r_nk, plan_r, bias, peep, h0, c0,
                               lens, codes[d], clip_v, input_forget)
        else:
            out = K.gru_layer(xs, w_kn, w_nk, plan_x, r_kn, r_nk, plan_zr, plan_h,
                              None if b is None else np.ascontiguousarray(b[d]), h0, lens,
                              codes[d], clip_v, linear_before_reset)
        y = out[0]
        if not backwards:
            y_all[:, d] = y
        elif reverse_index is None:
            y_all[:, d] = y[::-1]
        else:
            y_all[:, d] = y[reverse_index, cols]
        for k, f in enumerate(finals):
            f[d] = out[1 + k]
    y, final = y_all, finals
    if layout == 1:
        y = y.transpose(2, 0, 1, 3)
        final = [s.swapaxes(0, 1) for s in final]
    return (y, *final)
