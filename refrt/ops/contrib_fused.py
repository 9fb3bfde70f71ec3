"""onnxruntime's fused CPU ops: what its graph optimizer writes at the default level
(``ORT_ENABLE_ALL``, and ``convert_onnx_models_to_ort``'s default) in place of an op and the
activation or scale after it, and the channels-last forms its NHWC transformer writes for
quantized convolutions and max pools.

    FusedConv      Conv (+ Z, a fused Add) + activation      ConvActivationFusion,
                                                             ConvAddActivationFusion
    FusedGemm      Gemm + activation                         GemmActivationFusion
    FusedMatMul    alpha * op(A) @ op(B)                     MatMulScaleFusion,
                                                             MatMulTransposeFusion
    QLinearConv    ONNX QLinearConv, optionally NHWC         NhwcTransformer
    NhwcMaxPool    MaxPool over NHWC uint8 / int8            NhwcTransformer

onnx.defs has no schemas for these ops: the signatures carry onnxruntime's documented defaults
(``docs/ContribOperators.md``). The arithmetic is that of onnxruntime's CPU kernels, checked
bit for bit against onnxruntime 1.32 in ``tests/ops/test_contrib_fused_vs_ort.py``: each op
reuses the refrt op it extends (Conv, Gemm, MatMul, QLinearConv, MaxPool), which already runs
in onnxruntime's order, and applies the activation the way onnxruntime's kernel does.

FusedConv's activation is MLAS's (``MlasActivation``): bias and activation applied together
after the product, with SSE min/max semantics (a NaN passes through Relu and Clip). FusedGemm's
is onnxruntime's element-wise activation functor of that name, the same code as the standalone
op, so refrt runs its standalone op (and inherits its documented differences: Elu, Selu,
Softplus, ...).
"""

from __future__ import annotations

import numpy as np

from ..registry import op
from . import elementwise as _ew
from ._common import compute_dtype, f32, ort_threads, pool_window, window_taps
from ._kernels import K, sized_product, sized_threads
from .conv import conv_sum
from .nn import _mlas_float, _mlas_matmul, _mlas_packed, sgemm_scaled
from .nn import gemm as _onnx_gemm
from .quant import int8_operand
from .quant import qlinear_conv as _onnx_qlinear_conv

MS = "com.microsoft"
_F32 = np.float32


# ---------------------------------------------------------------- MLAS's fused activations

# activation -> number of activation_params onnxruntime requires (GetFusedActivationAttr);
# HardSwish takes none (ONNX fixes its alpha and beta) and ignores any given
_CONV_ACTIVATIONS = {"Relu": 0, "Tanh": 0, "Sigmoid": 0, "LeakyRelu": 1, "Clip": 2,
                     "HardSigmoid": 2, "HardSwish": None}


def _conv_activation(activation, params, name):
    """(kind, params as float32) of a FusedConv activation, checked as onnxruntime checks it."""
    if activation is None:
        return None, ()
    if activation not in _CONV_ACTIVATIONS:
        raise ValueError(f"{name}: unknown activation {activation!r}; onnxruntime's CPU kernel "
                         f"takes {', '.join(_CONV_ACTIVATIONS)}")
    count = _CONV_ACTIVATIONS[activation]
    params = [] if params is None else [_F32(v) for v in params]
    if count is not None and len(params) != count:
        raise ValueError(f"{name}: activation {activation} takes {count} activation_params, got "
                         f"{len(params)}")
    return activation, tuple(params)


def mlas_activation(y, kind, params, ctx=None):
    """``MlasActivation`` on float32 ``y`` (in place where possible): the SSE forms of MLAS's
    activation kernels, max/min returning their second operand when either is NaN
    (``maxps(0, v)``: Relu(NaN) is NaN, Relu(-0) is -0); HardSigmoid and HardSwish as a multiply
    and an add, each rounded; Tanh and Sigmoid MLAS's rational approximations (refrt's Tanh
    and Sigmoid ops). Other float types compute in float32 the same way."""
    if kind is None:
        return y
    zero, one = _F32(0), _F32(1)
    if y.dtype == np.float32 and kind in ("Relu", "Clip", "HardSigmoid"):
        # the same comparisons in one pass (kernels.activations.clamp_f32)
        lo, hi, affine = {"Relu": (zero, np.inf, ()), "Clip": (*params, ()),
                          "HardSigmoid": (zero, one, params)}[kind]
        return sized_threads(y.size, K.clamp_f32, y, lo, hi, *affine)
    if kind == "Relu":
        return np.where(zero > y, zero, y)
    if kind == "LeakyRelu":
        return np.where(zero <= y, y, y * params[0])
    if kind == "Clip":
        lo, hi = params
        y = np.where(lo > y, lo, y)
        return np.where(hi < y, hi, y)
    if kind == "HardSigmoid":
        alpha, beta = params
        v = y * alpha + beta
        v = np.where(one < v, one, v)
        return np.where(zero > v, zero, v)
    if kind == "HardSwish":
        v = y * _F32(1 / 6) + _F32(0.5)
        v = np.where(one < v, one, v)
        return y * np.where(zero > v, zero, v)
    if kind == "Tanh":
        return _ew.tanh(y, ctx=ctx)
    if kind == "Sigmoid":
        return _ew.sigmoid(y, ctx=ctx)
    raise ValueError(f"unknown activation {kind!r}")


@op("FusedConv", domain=MS)
def fused_conv(x, w, b=None, z=None, *, activation=None, activation_params=None,
               auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
               strides=None, ctx=None):
    """Y = activation(Conv(X, W) + Z + B): Conv, then the optional sum Z (the other input of an
    Add that onnxruntime fused, the output's shape), then B, then the activation (Relu, Tanh,
    Sigmoid, LeakyRelu [alpha], Clip [min, max], HardSigmoid [alpha, beta], HardSwish, with
    ``activation_params`` in brackets; none: identity).

    As onnxruntime's kernel (MLAS's convolution with beta = 1): Z is where the product
    accumulates, the first K block is added to Z, not Z to the finished product; then B and
    the activation together (``mlas_activation``)."""
    kind, params = _conv_activation(activation, activation_params, "FusedConv")
    y = conv_sum(x, w, b, z, auto_pad=auto_pad, dilations=dilations, group=group,
                 kernel_shape=kernel_shape, pads=pads, strides=strides, ctx=ctx,
                 name="FusedConv")
    ct = compute_dtype(y.dtype)
    return mlas_activation(y.astype(ct, copy=False), kind, params, ctx).astype(x.dtype, copy=False)


# ---------------------------------------------------------------- FusedGemm


def _ort_softplus(v):
    """onnxruntime's Softplus functor: X + log(e^-X + 1) for X > 0, else log(e^X + 1)."""
    with np.errstate(over="ignore"):
        return np.where(v > 0, v + np.log(np.exp(-v) + 1), np.log(np.exp(v) + 1)).astype(v.dtype)


# FusedGemm's activation: onnxruntime's element-wise functor of that name
# (ElementWiseRangedTransform::Create), with its parameters from the activation_* attributes,
# each one required as onnxruntime requires it.
_GEMM_ACTIVATIONS = {
    "Relu": ((), lambda v, p, ctx: _ew.relu(v)),
    "Tanh": ((), lambda v, p, ctx: _ew.tanh(v, ctx=ctx)),
    "Sigmoid": ((), lambda v, p, ctx: _ew.sigmoid(v, ctx=ctx)),
    "LeakyRelu": (("alpha",), lambda v, p, ctx: _ew.leaky_relu(v, alpha=p[0])),
    "HardSigmoid": (("alpha", "beta"), lambda v, p, ctx: _ew.hard_sigmoid(v, alpha=p[0], beta=p[1])),
    "Elu": (("alpha",), lambda v, p, ctx: _ew.elu(v, alpha=p[0])),
    "Selu": (("alpha", "gamma"), lambda v, p, ctx: _ew.selu(v, alpha=p[0], gamma=p[1])),
    "ThresholdedRelu": (("alpha",), lambda v, p, ctx: _ew.thresholded_relu(v, alpha=p[0])),
    "Softsign": ((), lambda v, p, ctx: v * (1 / (1 + np.abs(v)))),
    "Softplus": ((), lambda v, p, ctx: _ort_softplus(v)),
    "ParametricSoftplus": (("alpha", "beta"),
                           lambda v, p, ctx: v.dtype.type(p[0]) * _ort_softplus(v * v.dtype.type(p[1]))),
    "ScaledTanh": (("alpha", "beta"),
                   lambda v, p, ctx: v.dtype.type(p[0]) * _ew.tanh(v * v.dtype.type(p[1]), ctx=ctx)),
}


@op("FusedGemm", domain=MS)
def fused_gemm(a, b, c=None, *, activation=None, activation_alpha=None, activation_beta=None,
               activation_gamma=None, alpha=1.0, beta=1.0, transA=0, transB=0, ctx=None):
    """Y = activation(alpha * A' @ B' + beta * C): the ONNX Gemm (refrt's, in onnxruntime's
    order), then onnxruntime's element-wise activation of that name: Relu, Tanh, Sigmoid,
    LeakyRelu (alpha), HardSigmoid (alpha, beta), Elu (alpha), Selu (alpha, gamma),
    ThresholdedRelu (alpha), Softsign, Softplus, ParametricSoftplus (alpha, beta), ScaledTanh
    (alpha, beta), the parameters from ``activation_alpha`` / ``_beta`` / ``_gamma``.

    As onnxruntime: an activation is required, and so is each parameter it uses (the fusion
    copies them from the activation node). Softsign is X * (1 / (1 + |X|)) and Softplus
    X + log(e^-X + 1) for X > 0, else log(e^X + 1), onnxruntime's formulas."""
    if activation not in _GEMM_ACTIVATIONS:
        raise ValueError(f"FusedGemm: unknown activation {activation!r}; onnxruntime takes "
                         f"{', '.join(_GEMM_ACTIVATIONS)}")
    names, fn = _GEMM_ACTIVATIONS[activation]
    given = {"alpha": activation_alpha, "beta": activation_beta, "gamma": activation_gamma}
    missing = [f"activation_{n}" for n in names if given[n] is None]
    if missing:
        raise ValueError(f"FusedGemm: activation {activation} needs the attribute(s) "
                         f"{', '.join(missing)}")
    y = _onnx_gemm(a, b, c, alpha=alpha, beta=beta, transA=transA, transB=transB, ctx=ctx)
    ct = compute_dtype(y.dtype)
    params = [f32(given[n]) for n in names]
    return np.asarray(fn(y.astype(ct, copy=False), params, ctx)).astype(y.dtype, copy=False)


# ---------------------------------------------------------------- FusedMatMul


def _mlas_fused_matmul(a2, b2, alpha, trans_a, trans_b, flat, packed, ctx):
    """onnxruntime's MatMul<float> with alpha and transposes (``MatMulComputeHelper``, then
    ``MlasGemmBatch``) on 2-D+ operands (a 1-D one already promoted). ``flat``: onnxruntime
    multiplies all of A's rows in one product (A and B given with rank >= 2, A's rank >= B's,
    B's leading dims all 1, no transA or batch transposes), B packed when it is a constant
    matrix; otherwise one product per broadcast batch entry, the threads shared between them.
    ``packed``: B is a constant matrix, which onnxruntime packs (K blocks of 256, no M = 1 or
    N = 1 kernels), whether or not the product is flat."""
    threads = ort_threads(ctx)
    a_mk = np.swapaxes(a2, -1, -2) if trans_a else a2
    b_kn = np.swapaxes(b2, -1, -2) if trans_b else b2
    m, k = a_mk.shape[-2:]
    n = b_kn.shape[-1]
    if flat:
        rows = a_mk.reshape(1, -1, k)
        bb = b_kn.reshape(1, k, n)
        nb, batch_shape, m_rows = 1, a_mk.shape[:-2], rows.shape[1]
    else:
        batch_shape = np.broadcast_shapes(a_mk.shape[:-2], b_kn.shape[:-2])
        nb = int(np.prod(batch_shape))
        rows = np.broadcast_to(a_mk, batch_shape + (m, k)).reshape(nb, m, k)
        bb = np.broadcast_to(b_kn, batch_shape + (k, n)).reshape(nb, k, n)
        m_rows = m
    if nb == 0 or m_rows == 0 or n == 0:
        y = np.zeros((nb, m_rows, n), _F32)
    elif k == 0:
        y = np.zeros((nb, m_rows, n), _F32)
    elif packed and alpha == 1.0 and flat:
        y = sized_product(rows.size * n, K.matmul_packed_f32, rows[0],
                          _mlas_packed(ctx, b2, trans_b), k_block=K.SGEMM_PACKED_STRIDE_K)[None]
    elif alpha == 1.0 and not packed and ((m_rows == 1 and not trans_a) or (n == 1 and not trans_b)):
        # MLAS's M = 1 / N = 1 kernels (only without alpha), one product at a time
        a_raw = np.swapaxes(rows, -1, -2) if trans_a else rows
        b_raw = np.swapaxes(bb, -1, -2) if trans_b else bb
        y = np.stack([K.sgemm(x, w, trans_a=trans_a, trans_b=trans_b, threads=threads, batch=nb)
                      for x, w in zip(a_raw, b_raw)])
    else:
        y = sgemm_scaled(rows, bb, alpha, trans_a=trans_a, packed=packed, threads=threads,
                         batch=nb)
    return y.reshape(tuple(batch_shape) + (m, n))


@op("FusedMatMul", domain=MS)
def fused_matmul(a, b, *, alpha=1.0, transA=0, transB=0, transBatchA=0, transBatchB=0, ctx=None):
    """Y = alpha * op(A) @ op(B), numpy.matmul semantics: op transposes the last two axes when
    transA / transB (ignored for a 1-D operand); transBatchA / transBatchB first move the
    leading axis of A / B to just before the last one (both inputs then of one rank >= 3), the
    layout onnxruntime's MatMulTransposeFusion folds a Transpose into.

    float32 in the default numerics: onnxruntime's MatMul kernel with alpha (MLAS's SGEMM
    multiplies each K block's sum by alpha: the first rounded, the next ones added by a fused
    multiply-add); with alpha = 1 and no transposes this is refrt's MatMul."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("FusedMatMul: inputs must have rank >= 1")
    trans_batch = bool(transBatchA or transBatchB)
    if trans_batch:
        if a.ndim != b.ndim or a.ndim < 3:
            raise ValueError(f"FusedMatMul: transBatchA / transBatchB need A and B of the same "
                             f"rank >= 3, got shapes {list(a.shape)} and {list(b.shape)}")
        a = np.moveaxis(a, 0, -2) if transBatchA else a
        b = np.moveaxis(b, 0, -2) if transBatchB else b
    trans_a, trans_b = bool(transA) and a.ndim > 1, bool(transB) and b.ndim > 1
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    k_a = a2.shape[-2] if trans_a else a2.shape[-1]
    k_b = b2.shape[-1] if trans_b else b2.shape[-2]
    if k_a != k_b:
        raise ValueError(f"FusedMatMul: shapes {list(a.shape)} and {list(b.shape)} do not match "
                         f"with transA={transA}, transB={transB} ({k_a} != {k_b})")
    a_batch = a2.shape[:-2]
    b_batch = b2.shape[:-2]
    try:
        np.broadcast_shapes(a_batch, b_batch)
    except ValueError:
        raise ValueError(f"FusedMatMul: batch dims {list(a_batch)} and {list(b_batch)} do not "
                         f"broadcast") from None
    if _mlas_float(a, b, ctx):
        if alpha == 1.0 and not (trans_a or trans_b or trans_batch):
            return _mlas_matmul(a, b, ctx)
        flat = (not trans_a and not trans_batch and a.ndim >= b.ndim >= 2
                and int(np.prod(b.shape[:-2])) == 1)
        packed = ctx is not None and b.ndim == 2 and ctx.is_constant(1)
        y = _mlas_fused_matmul(a2, b2, float(alpha), trans_a, trans_b, flat, packed, ctx)
    else:
        ct = compute_dtype(a.dtype)
        am = a2.astype(ct, copy=False)
        bm = b2.astype(ct, copy=False)
        y = np.matmul(np.swapaxes(am, -1, -2) if trans_a else am,
                      np.swapaxes(bm, -1, -2) if trans_b else bm)
        if alpha != 1.0:
            y = y * ct.type(alpha)
    if a.ndim == 1:
        y = y[..., 0, :]
    if b.ndim == 1:
        y = y[..., 0]
    return np.asarray(y).astype(a.dtype, copy=False)


# ---------------------------------------------------------------- channels-last quantized ops


def _to_channels_first(x, name):
    if x.ndim < 3:
        raise ValueError(f"{name}: X must have rank >= 3 (N, spatial..., C), got shape "
                         f"{list(x.shape)}")
    return np.moveaxis(x, -1, 1)


@op("QLinearConv", domain=MS)
def ms_qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point,
                    B=None, *, auto_pad="NOTSET", channels_last=0, dilations=None, group=1,
                    kernel_shape=None, pads=None, strides=None, ctx=None):
    """The ONNX QLinearConv (refrt's, see ``refrt.ops.quant.qlinear_conv``); with
    ``channels_last`` X is (N, spatial..., C) and Y (N, spatial..., M), the layout onnxruntime's
    NHWC transformer gives a quantized convolution (W stays (M, C/group, kernel...)). The
    integer sums are exact and the requantization is the ONNX op's, so the results are the
    same bits in either layout."""
    xc = _to_channels_first(x, "QLinearConv") if channels_last else x
    y = _onnx_qlinear_conv(xc, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale,
                           y_zero_point, B, auto_pad=auto_pad, dilations=dilations, group=group,
                           kernel_shape=kernel_shape, pads=pads, strides=strides, ctx=ctx)
    return np.ascontiguousarray(np.moveaxis(y, 1, -1)) if channels_last else y


@op("NhwcMaxPool", domain=MS)
def nhwc_max_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape,
                  pads=None, strides=None):
    """Y[n, o, c] = max_k X[n, o * s - pb + k * d, c] over uint8 / int8 X in (N, spatial..., C)
    layout: the ONNX MaxPool (without its Indices output) in the layout onnxruntime's NHWC
    transformer gives it next to a channels-last QLinearConv. Pads never win."""
    x = int8_operand(x, "X")
    xc = _to_channels_first(x, "NhwcMaxPool")
    win = pool_window(xc, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    y = window_taps(xc, win, np.iinfo(x.dtype).min).max(axis=0)     # (N, C, *out)
    return np.ascontiguousarray(np.moveaxis(y, 1, -1))
