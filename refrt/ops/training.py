"""Optimizer ops of the ai.onnx.preview.training domain: Adagrad, Adam, Momentum.

Each takes the learning rate R, the update count T and then n tensors to optimize followed by
their per-tensor state, grouped by kind: X_1..X_n, G_1..G_n, then H_1..H_n (and V_1..V_n for
Adam, before H). The outputs are grouped the same way: X_new_1..X_new_n, then the new states. The
scalar coefficients (learning rate after decay / bias correction) are computed in double
precision; the elementwise update runs in the dtype of X.

Gradient (same domain) is not implemented: it differentiates the enclosing graph, which an op
does not see.
"""

from __future__ import annotations

import math

import numpy as np

from ..registry import op
from ._common import as_scalar, f32

TRAINING = "ai.onnx.preview.training"


def _scalar(v, what: str) -> float:
    return as_scalar(v, what, kinds="iuf")


def _groups(inputs, kinds: str) -> list[tuple]:
    """Split X_1..X_n, G_1..G_n, ... (len(kinds) groups) into n per-tensor tuples (X, G, ...)."""
    k = len(kinds)
    if not inputs or len(inputs) % k:
        raise ValueError(f"expected {k}*n tensor inputs ({', '.join(kinds)} per optimized "
                         f"tensor) after R and T, got {len(inputs)}")
    n = len(inputs) // k
    per_tensor = []
    for i in range(n):
        group = tuple(np.asarray(inputs[j * n + i]) for j in range(k))
        for name, arr in zip(kinds[1:], group[1:]):
            if arr.shape != group[0].shape:
                raise ValueError(f"{name}_{i + 1} has shape {list(arr.shape)}, X_{i + 1} has "
                                 f"{list(group[0].shape)}")
        per_tensor.append(group)
    return per_tensor


def _cast(arr, like) -> np.ndarray:
    return np.asarray(arr).astype(like.dtype, copy=False)


@op("Adagrad", since=1, domain=TRAINING)
def adagrad(R, T, *inputs, decay_factor=0.0, epsilon=f32(1e-6), norm_coefficient=0.0):
    """r = R / (1 + T*decay); G' = norm*X + G; H' = H + G'^2; X' = X - r * G' / (sqrt(H') + eps)."""
    r = _scalar(R, "R") / (1 + _scalar(T, "T") * decay_factor)
    new_x, new_h = [], []
    for x, g, h in _groups(inputs, "XGH"):
        g_reg = norm_coefficient * x + g
        h_new = h + g_reg * g_reg
        new_x.append(_cast(x - r * g_reg / (np.sqrt(h_new) + epsilon), x))
        new_h.append(_cast(h_new, h))
    return tuple(new_x + new_h)


@op("Adam", since=1, domain=TRAINING)
def adam(R, T, *inputs, alpha=f32(0.9), beta=f32(0.999), epsilon=f32(1e-6),
         norm_coefficient=0.0, norm_coefficient_post=0.0):
    """G' = norm*X + G; V' = a*V + (1-a)*G'; H' = b*H + (1-b)*G'^2;
    r = R*sqrt(1-b^T)/(1-a^T) if T > 0 else R; X' = (1 - norm_post) * (X - r*V'/(sqrt(H')+eps))."""
    t = _scalar(T, "T")
    r = _scalar(R, "R")
    if t > 0:
        r = r * math.sqrt(1 - beta ** t) / (1 - alpha ** t)
    new_x, new_v, new_h = [], [], []
    for x, g, v, h in _groups(inputs, "XGVH"):
        g_reg = norm_coefficient * x + g
        v_new = alpha * v + (1 - alpha) * g_reg
        h_new = beta * h + (1 - beta) * (g_reg * g_reg)
        x_new = x - r * (v_new / (np.sqrt(h_new) + epsilon))
        new_x.append(_cast((1 - norm_coefficient_post) * x_new, x))
        new_v.append(_cast(v_new, v))
        new_h.append(_cast(h_new, h))
    return tuple(new_x + new_v + new_h)


@op("Momentum", since=1, domain=TRAINING)
def momentum(R, T, *inputs, alpha, beta, mode, norm_coefficient):
    """G' = norm*X + G; V' = alpha*V + (beta if T > 0 else 1)*G';
    standard: X' = X - R*V'; nesterov: X' = X - R*(G' + alpha*V')."""
    if mode not in ("standard", "nesterov"):
        raise ValueError(f"mode must be 'standard' or 'nesterov', got {mode!r}")
    r = _scalar(R, "R")
    beta_t = beta if _scalar(T, "T") > 0 else 1.0
    new_x, new_v = [], []
    for x, g, v in _groups(inputs, "XGV"):
        g_reg = norm_coefficient * x + g
        v_new = alpha * v + beta_t * g_reg
        step = v_new if mode == "standard" else g_reg + alpha * v_new
        new_x.append(_cast(x - r * step, x))
        new_v.append(_cast(v_new, v))
    return tuple(new_x + new_v)
