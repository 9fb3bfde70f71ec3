"""QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear, one element at a time.

    quantize:    y = saturate(round_half_even(x / scale) + zero_point)
    dequantize:  y = (x - zero_point) * scale
    dynamic:     scale = (max(x, 0) - min(x, 0)) / 255, zero_point = round(-min(x, 0) / scale)
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..ops._common import normalize_axis
from .arith import F32, exact, fmt, fmt_exact, int_range, rint_even, round_f32, saturate, wrap_int32
from .core import Context, explains

_INT_RANGES = {np.dtype(ml_dtypes.int4): (-8, 7), np.dtype(ml_dtypes.uint4): (0, 15),
               np.dtype(ml_dtypes.int2): (-2, 1), np.dtype(ml_dtypes.uint2): (0, 3)}


def qrange(dtype) -> tuple[int, int] | None:
    """[qmin, qmax] of an integer quantized type, None for float types."""
    dtype = np.dtype(dtype)
    if dtype in _INT_RANGES:
        return _INT_RANGES[dtype]
    if dtype.kind in "iu":
        return int_range(dtype)
    return None


def param_at(param, x_shape, axis, block_size, at) -> tuple:
    """(value, where) of the scale or zero point that applies to element ``at`` of x."""
    if param is None:
        return None, "absent"
    p = np.asarray(param)
    if p.size == 1 and not block_size:
        return p.reshape(-1)[0], "per tensor"
    ax = normalize_axis(axis, len(x_shape))
    if block_size:
        idx = list(at)
        idx[ax] = at[ax] // block_size
        return p[tuple(idx)], (f"blocked: block {at[ax] // block_size} of {block_size} along "
                               f"axis {ax}, index {tuple(idx)}")
    return p[at[ax]], f"per axis {ax}: index {at[ax]}"


# ---------------------------------------------------------------- QuantizeLinear

def _element_and_params(ctx: Context) -> tuple:
    """x, its element at ``ctx.at`` and the (value, where) of the scale and of the zero point
    that apply to it (QuantizeLinear's and DequantizeLinear's inputs 0, 1, 2)."""
    x = ctx.input(0)
    axis = 1 if ctx.attrs.get("axis") is None else ctx.attrs["axis"]
    block = ctx.attrs.get("block_size", 0) or 0
    return (x, x[ctx.at], param_at(ctx.input(1), x.shape, axis, block, ctx.at),
            param_at(ctx.input(2), x.shape, axis, block, ctx.at))


def _division_dtype(ctx: Context, scale) -> tuple[np.dtype, str]:
    """The dtype refrt divides in, and why (the "ort"/"spec" rule of QuantizeLinear)."""
    if ctx.node.domain == "com.microsoft":
        return np.dtype(np.float32), "float32 (onnxruntime's contrib op divides in float32)"
    precision = ctx.attrs.get("precision", 0)
    sd = np.asarray(scale).dtype
    if precision:
        from ..ops._common import np_dtype
        return np.dtype(np_dtype(precision)), "the `precision` attribute"
    if sd == np.float32:
        return np.dtype(np.float32), "float32 (the scale's type)"
    if ctx.numerics == "spec" or ctx.opset >= 23:
        return np.dtype(sd), (f"{sd.name}, the scale's type (the spec; onnxruntime too from "
                              f"opset 23)")
    return np.dtype(np.float32), (f"float32: numerics 'ort' follows onnxruntime up to opset 21 "
                                  f"(the spec divides in the scale's type, {sd.name})")


@explains("QuantizeLinear")
@explains("QuantizeLinear", domain="com.microsoft")
def explain_quantize_linear(ctx: Context):
    x, xv, (s, s_where), (z, z_where) = _element_and_params(ctx)
    out_dtype = ctx.out.dtype
    zi = 0 if z is None else int(z) if np.asarray(z).dtype.kind in "iu" else z
    ctx.step("the element and its quantization parameters", [
        f"x{list(ctx.at)} = {fmt_exact(xv)}  ({x.dtype.name})",
        f"scale = {fmt_exact(s)}  ({np.asarray(s).dtype.name}, {s_where})",
        f"zero point = {fmt(zi) if z is not None else '0 (absent)'}  "
        f"({out_dtype.name}{'' if z is None else ', ' + z_where})"], value=xv)

    div_dtype, why = _division_dtype(ctx, ctx.input(1))
    qr = qrange(out_dtype)
    if div_dtype == np.float32:
        xf, sf = F32(xv), F32(s)
        with np.errstate(all="ignore"):
            q = round_f32(exact(xf) / exact(sf)) if np.isfinite(xf) and sf != 0 and np.isfinite(sf) \
                else F32(np.float64(xf) / np.float64(sf))
        conv = ""
        if x.dtype != np.float32:
            conv = f" (x converted to float32 first: {fmt(xf)})"
    else:
        with np.errstate(all="ignore"):
            q = (np.asarray(xv).astype(div_dtype) / np.asarray(s).astype(div_dtype))[()]
        conv = ""
    ctx.step(f"divide by the scale in {div_dtype.name}", [
        f"x / scale = {fmt(xv)} / {fmt(s)}{conv}",
        f"          = {fmt_exact(q)}  (the exact quotient rounded once to {div_dtype.name})"],
        value=q, note=f"division in {why}")

    if qr is None:      # float8 / float4 / float6 outputs: a rounding cast
        return _quantize_float(ctx, q, z, out_dtype)

    qmin, qmax = qr
    if np.isnan(q):
        ctx.step("NaN", [f"the quotient is NaN: refrt (and onnxruntime) give the type's minimum, "
                         f"{qmin}"], value=qmin, note="the spec says nothing about NaN")
        return np.asarray(qmin).astype(out_dtype)[()]
    if not np.isfinite(q):
        r, tie = (qmax - zi if q > 0 else qmin - zi) * 1, False
        ctx.step("round half to even", [f"the quotient is {fmt(q)}: it saturates whatever the "
                                        f"zero point"], value=r)
    else:
        r, tie = rint_even(q)
        frac = exact(q) - (exact(q).numerator // exact(q).denominator)
        lines = [f"round_half_even({fmt(q)}) = {r}"]
        note = ""
        if tie:
            lower = int(np.floor(float(q)))
            lines.append(f"{fmt(q)} is exactly halfway between {lower} and {lower + 1}: a tie, "
                         f"which goes to the even one, {r}")
            away = lower + 1 if q > 0 else lower
            note = (f"rounding half away from zero (C's round(), the textbook) would give "
                    f"{away}; ONNX and onnxruntime round half to even")
        elif frac != 0:
            lines.append(f"(fraction {float(frac):.6g}: not a tie)")
        ctx.step("round half to even", lines, value=r, note=note)
    v = r + zi
    ctx.step("add the zero point", [f"{r} + {zi} = {v}"], value=v)
    y, clipped = saturate(v, qmin, qmax)
    lines = [f"clamp({v}, {qmin}, {qmax}) = {y}" + ("  (saturated)" if clipped else "")]
    ctx.step(f"saturate to {out_dtype.name} [{qmin}, {qmax}]", lines, value=y,
             note=("the kernel clamps the quotient to [qmin - zp, qmax - zp] before rounding "
                   "(kernels/quantize.py:_quantize_value): the same integer") if clipped else "")
    return np.asarray(y).astype(out_dtype)[()]


def _quantize_float(ctx: Context, q, z, out_dtype):
    sat = ctx.attrs.get("saturate", 1)
    v = F32(q)
    lines = []
    if z is not None and (ctx.numerics == "spec" or out_dtype.name.startswith(("float4", "float6"))):
        v = F32(q + F32(np.asarray(z).astype(np.float32)))
        lines.append(f"+ zero point {fmt(z)} = {fmt(v)}")
    elif z is not None:
        lines.append("a float8 zero point is ignored in numerics 'ort' (onnxruntime does); "
                     "'spec' adds it")
    big = float(ml_dtypes.finfo(out_dtype).max)
    if sat and np.isfinite(v) and abs(float(v)) > big:
        v = F32(np.sign(v) * big)
        lines.append(f"saturate: beyond the largest {out_dtype.name} value, clamped to {fmt(v)}")
    y = np.asarray(v).astype(out_dtype)[()]
    lines.append(f"round to {out_dtype.name} (nearest, ties to even): {fmt(np.float32(y))}")
    ctx.step(f"cast to {out_dtype.name}", lines, value=y)
    return y


# ---------------------------------------------------------------- DequantizeLinear

@explains("DequantizeLinear")
@explains("DequantizeLinear", domain="com.microsoft")
def explain_dequantize_linear(ctx: Context):
    x, xv, (s, s_where), (z, z_where) = _element_and_params(ctx)
    out_dtype = ctx.out.dtype
    ctx.step("the element and its quantization parameters", [
        f"x{list(ctx.at)} = {fmt(xv)}  ({x.dtype.name})",
        f"scale = {fmt_exact(s)}  ({np.asarray(s).dtype.name}, {s_where})",
        f"zero point = {fmt(z) if z is not None else '0 (absent)'}"
        + ("" if z is None else f"  ({z_where})")], value=xv)
    is_int = x.dtype.kind in "iu" or x.dtype in _INT_RANGES
    if is_int:
        xi, zi = int(xv), 0 if z is None else int(z)
        d = xi - zi
        lines = [f"{xi} - {zi} = {d}  (exact integer)"]
        note = ""
        if x.dtype == np.int32 and zi and ctx.numerics != "spec":
            w = wrap_int32(d)
            if w != d:
                lines.append(f"int32 wrap-around: {w}")
                d = w
            note = ("int32 input with a zero point: 'ort' subtracts with int32 wrap-around as "
                    "onnxruntime does, 'spec' exactly")
        ctx.step("subtract the zero point", lines, value=d, note=note)
        df = F32(d)
        conv = f"float32({d}) = {fmt(df)}" + ("" if exact(df) == d else "  (rounded: |d| > 2^24)")
    else:
        zf = F32(0) if z is None else F32(np.asarray(z).astype(np.float32))
        df = F32(F32(np.asarray(xv).astype(np.float32)) - zf)
        conv = f"float32(x) - float32(zp) = {fmt(df)}"
        ctx.step("subtract the zero point (as float32)", [conv], value=df)
    narrow = out_dtype != np.float32 and ctx.numerics == "spec" and ctx.node.domain != "com.microsoft"
    if narrow:
        d_n = np.asarray(df).astype(out_dtype)[()]
        s_n = np.asarray(s).astype(out_dtype)[()]
        y = (np.asarray(d_n) * np.asarray(s_n))[()].astype(out_dtype)
        ctx.step(f"multiply in {out_dtype.name}", [
            f"{fmt(d_n)} * {fmt(s_n)} = {fmt(y)}  (operands rounded to {out_dtype.name} first)"],
            value=y, note="numerics 'spec': the output type sets the precision of the product; "
                          "'ort' multiplies in float32 and rounds once")
        return y
    sf = F32(np.asarray(s).astype(np.float32))
    y32 = round_f32(exact(df) * exact(sf)) if np.isfinite(df) and np.isfinite(sf) else F32(df * sf)
    lines = [conv, f"{fmt(df)} * {fmt(sf)} = {fmt_exact(y32)}  (float32 product, one rounding)"]
    note = ""
    if out_dtype != np.float32:
        y = np.asarray(y32).astype(out_dtype)[()]
        lines.append(f"rounded to {out_dtype.name}: {fmt(y)}")
        note = "float32 product rounded once to the output type (onnxruntime; 'spec' rounds the operands first)"
    else:
        y = y32
    ctx.step("multiply by the scale", lines, value=y, note=note)
    return y


# ---------------------------------------------------------------- DynamicQuantizeLinear

def dynamic_params(ctx: Context, x, what: str = "x"):
    """Steps for DynamicQuantizeLinear's scale and zero point of ``x``; returns (scale, zp)."""
    flat = np.asarray(x, np.float32).reshape(-1)
    lo_i = int(np.argmin(flat)) if flat.size else None
    hi_i = int(np.argmax(flat)) if flat.size else None
    lo = F32(min(flat[lo_i], F32(0))) if flat.size else F32(0)
    hi = F32(max(flat[hi_i], F32(0))) if flat.size else F32(0)

    def where(i):
        return "" if i is None else f" (at {list(np.unravel_index(i, np.shape(x)))})"
    ctx.step(f"the range of {what}, widened to include 0", [
        f"min({what}) = {fmt(flat[lo_i]) if flat.size else '-'}{where(lo_i)} -> min(min, 0) = {fmt(lo)}",
        f"max({what}) = {fmt(flat[hi_i]) if flat.size else '-'}{where(hi_i)} -> max(max, 0) = {fmt(hi)}"],
        value=hi)
    if hi == lo:
        s = F32(1) if ctx.numerics != "spec" else F32(0)
        ctx.step("scale and zero point of an empty range", [
            f"max == min == 0: scale = {fmt(s)}, zero point = 0"], value=s,
            note="numerics 'ort' gives scale 1 as onnxruntime; 'spec' (the function body's 0/0) "
                 "gives scale 0 and every y 0")
        return s, 0
    width = F32(hi - lo)
    s = round_f32(exact(width) / 255)
    ctx.step("scale = (max - min) / 255, float32", [
        f"{fmt(hi)} - ({fmt(lo)}) = {fmt(width)}",
        f"{fmt(width)} / 255 = {fmt_exact(s)}"], value=s)
    t = round_f32(exact(lo) / exact(s))
    z0 = F32(F32(0) - t)
    zc = min(max(z0, F32(0)), F32(255))
    zp, tie = rint_even(zc)
    ctx.step("zero point = round(clamp(0 - min / scale, 0, 255))", [
        f"{fmt(lo)} / {fmt(s)} = {fmt(t)};  0 - that = {fmt(z0)}",
        f"clamp to [0, 255]: {fmt(zc)}; round half to even: {zp}" + ("  (a tie)" if tie else "")],
        value=zp)
    return s, zp


def quantize_u8(ctx: Context, xv, s, zp, what: str = "x") -> int:
    """Steps for one uint8 element of DynamicQuantizeLinear; returns the code."""
    if s == 0:
        ctx.step(f"quantize {what}", ["scale 0 ('spec', all-zero input): y = 0"], value=0)
        return 0
    q = round_f32(exact(F32(xv)) / exact(s))
    r, tie = rint_even(q)
    v = r + zp
    y, clipped = saturate(v, 0, 255)
    ctx.step(f"quantize {what} = {fmt(xv)}", [
        f"{fmt(xv)} / {fmt(s)} = {fmt_exact(q)}  (float32)",
        f"round half to even: {r}" + ("  (a tie: to the even neighbour)" if tie else ""),
        f"+ zero point {zp} = {v}; saturate to [0, 255]: {y}" + ("  (saturated)" if clipped else "")],
        value=y)
    return y


@explains("DynamicQuantizeLinear")
def explain_dynamic_quantize_linear(ctx: Context):
    x = ctx.input(0)
    s, zp = dynamic_params(ctx, x)
    if ctx.out_index == 1:
        return F32(s)
    if ctx.out_index == 2:
        return np.uint8(zp)
    return np.uint8(quantize_u8(ctx, x[ctx.at], s, zp, what=f"x{list(ctx.at)}"))
