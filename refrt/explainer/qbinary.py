"""com.microsoft QLinearAdd and QLinearMul, one output element at a time, in onnxruntime's float32
arithmetic (the fused multiply-adds of its AVX2 QLinearAdd kernel are computed exactly and
rounded once here, see :func:`refrt.explainer.arith.fma32`)."""

from __future__ import annotations

import numpy as np

from .arith import F32, exact, fma32, fmt, fmt_exact, int_range, rint_even, round_f32, saturate
from .core import Context, explains


def broadcast_at(shape, out_shape, at) -> tuple:
    """The index into an input of ``shape`` that feeds output element ``at`` (numpy broadcasting)."""
    lead = len(out_shape) - len(shape)
    return tuple(0 if d == 1 else at[lead + i] for i, d in enumerate(shape))


def _scalar(v, default=0):
    return default if v is None else np.asarray(v).reshape(-1)[0]


def _operands(ctx: Context):
    a, sa, za, b, sb, zb, sc, zc = (ctx.input(i) for i in range(8))
    ia, ib = broadcast_at(a.shape, ctx.out.shape, ctx.at), broadcast_at(b.shape, ctx.out.shape, ctx.at)
    av, bv = int(a[ia]), int(b[ib])
    sa, sb, sc = F32(_scalar(sa)), F32(_scalar(sb)), F32(_scalar(sc))
    za, zb, zc = int(_scalar(za)), int(_scalar(zb)), int(_scalar(zc))
    ctx.step("the elements and their quantization parameters", [
        f"A{list(ia)} = {av}  (scale {fmt(sa)}, zero point {za})",
        f"B{list(ib)} = {bv}  (scale {fmt(sb)}, zero point {zb})",
        f"C: scale {fmt(sc)}, zero point {zc}  ({ctx.out.dtype.name})"])
    return a, b, av, bv, sa, sb, sc, za, zb, zc


def _finish(ctx: Context, v, textbook=None):
    r, tie = rint_even(v)
    lo, hi = int_range(ctx.out.dtype)
    y, clipped = saturate(r, lo, hi)
    note = ""
    if textbook is not None and textbook != y:
        note = (f"the textbook formula in exact arithmetic gives {textbook}: onnxruntime's float32 "
                f"steps land on the other side of a rounding boundary")
    ctx.step("round half to even and saturate", [
        f"round({fmt(v)}) = {r}" + ("  (a tie: to the even neighbour)" if tie else ""),
        f"clamp to [{lo}, {hi}]: {y}" + ("  (saturated)" if clipped else "")], value=y, note=note)
    return np.asarray(y).astype(ctx.out.dtype)[()]


def _textbook(ctx, exact_value, zc):
    """round half to even of an exact rational + zc, saturated: the formula without float32."""
    r = rint_even_fraction(exact_value)
    lo, hi = int_range(ctx.out.dtype)
    return saturate(r + zc, lo, hi)[0]


def rint_even_fraction(q) -> int:
    lower = q.numerator // q.denominator
    frac = q - lower
    if frac * 2 < 1:
        return int(lower)
    if frac * 2 > 1:
        return int(lower + 1)
    return int(lower if lower % 2 == 0 else lower + 1)


@explains("QLinearAdd", domain="com.microsoft")
def explain_qlinear_add(ctx: Context):
    a, b, av, bv, sa, sb, sc, za, zb, zc = _operands(ctx)
    ra = round_f32(exact(sa) / exact(sc))
    rb = round_f32(exact(sb) / exact(sc))
    ctx.step("the two ratios, float32", [f"rA = A_scale / C_scale = {fmt_exact(ra)}",
                                         f"rB = B_scale / C_scale = {fmt_exact(rb)}"])
    from ..ops.contrib_quant import _a_is_span_scalar  # loads Numba: only when needed
    swapped = _a_is_span_scalar(a.shape, b.shape, ctx.out.shape)
    # onnxruntime folds the second operand's zero point into the constant and adds the
    # second operand first; with `swapped`, B is the first operand and A the second
    first, second = ("A", av, ra, za), ("B", bv, rb, zb)
    if swapped:
        first, second = second, first
    (n1, x1, r1, z1), (n2, x2, r2, z2) = first, second
    t = round_f32(exact(r2) * z2)
    fixed = round_f32(zc - exact(fma32(r1, F32(z1), t)))
    inner = fma32(F32(x2), r2, fixed)
    v = fma32(F32(x1), r1, inner)
    lines = [f"r{n2} * {n2}_zp = {fmt(t)};  F = C_zp - fma(r{n1}, {n1}_zp, that) = {zc} - "
             f"{fmt(fma32(r1, F32(z1), t))} = {fmt(fixed)}",
             f"fma({n2}, r{n2}, F) = {x2} * {fmt(r2)} + {fmt(fixed)} = {fmt(inner)}",
             f"fma({n1}, r{n1}, that) = {x1} * {fmt(r1)} + {fmt(inner)} = {fmt_exact(v)}"]
    ctx.step("onnxruntime's float32 formula with fused multiply-adds", lines, value=v,
             note=("A is a scalar per span of the broadcast: onnxruntime swaps the operands"
                   if swapped else "each fma rounds once (MLAS's AVX2 kernel)"))
    textbook = _textbook(ctx, (av - za) * exact(sa) / exact(sc) + (bv - zb) * exact(sb) / exact(sc), zc)
    return _finish(ctx, v, textbook)


@explains("QLinearMul", domain="com.microsoft")
def explain_qlinear_mul(ctx: Context):
    a, b, av, bv, sa, sb, sc, za, zb, zc = _operands(ctx)
    p = (av - za) * (bv - zb)
    ctx.step("the integer product", [f"({av} - {za}) * ({bv} - {zb}) = {av - za} * {bv - zb} = {p}"],
             value=p)
    ab = round_f32(exact(sa) * exact(sb))
    ratio = round_f32(exact(ab) / exact(sc))
    ctx.step("the ratio, float32 in that order", [
        f"A_scale * B_scale = {fmt(ab)};  / C_scale = {fmt_exact(ratio)}"], value=ratio)
    pf = round_f32(exact(p))
    prod = round_f32(exact(pf) * exact(ratio))
    v = round_f32(exact(prod) + zc)
    ctx.step("scale and add the output zero point, float32", [
        f"float32({p}) * {fmt(ratio)} = {fmt(prod)}",
        f"+ C_zp {zc} = {fmt_exact(v)}"], value=v, note="two roundings, no fused multiply-add")
    textbook = _textbook(ctx, p * exact(sa) * exact(sb) / exact(sc), zc)
    return _finish(ctx, v, textbook)
