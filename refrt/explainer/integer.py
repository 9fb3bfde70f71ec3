"""The integer products: MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv and
com.microsoft DynamicQuantizeMatMul / MatMulIntegerToFloat, one output element at a time.

Every one of them is a sum over k of (a_k - a_zp) * (b_k - b_zp), exact in int32. The steps show
it twice: as the formula says (zero points subtracted, products summed), and as the kernel
computes it (raw products, then the zero points folded in through a row sum and a column sum:
sum a*b - b_zp*sum a - a_zp*sum b + K*a_zp*b_zp). Where onnxruntime's AVX2 u8 x s8 GEMM adds
byte products in saturating int16 pairs (vpmaddubsw), the steps say what it would give.
"""

from __future__ import annotations

import numpy as np

from ..ops._common import window_geometry
from .arith import (
    F32,
    exact,
    fmt,
    fmt_exact,
    fmt_list,
    int_range,
    rint_even,
    round_f32,
    saturate,
    wrap_int32,
)
from .core import Context, explains
from .quant import dynamic_params

_I16 = (-32768, 32767)


# ---------------------------------------------------------------- operands

def _batch_index(batch: tuple, dims: tuple) -> tuple:
    """Index into an operand's leading (broadcast) dims for the output's batch index."""
    batch = batch[len(batch) - len(dims):] if dims else ()
    return tuple(i if d > 1 else 0 for i, d in zip(batch, dims))


def matmul_vectors(a, b, at):
    """(row of A, column of B, m, n, batch index) feeding output element ``at`` of matmul(a, b)."""
    idx = list(at)
    if b.ndim == 1:
        idx.append(0)
    if a.ndim == 1:
        idx.insert(len(idx) - 1, 0)
    a2 = a.reshape(1, -1) if a.ndim == 1 else a
    b2 = b.reshape(-1, 1) if b.ndim == 1 else b
    batch, m, n = tuple(idx[:-2]), idx[-2], idx[-1]
    row = a2[_batch_index(batch, a2.shape[:-2]) + (m, slice(None))]
    col = b2[_batch_index(batch, b2.shape[:-2]) + (slice(None), n)]
    return row, col, m, n, batch


def pick(param, batch, m, n, side: str):
    """The zero point or scale for row m (side "a": scalar, [M] or [..., M, 1]) or column n
    (side "b": scalar, [N] or [..., 1, N]) of a (batched) matmul."""
    if param is None:
        return None
    p = np.asarray(param)
    if p.size == 1:
        return p.reshape(-1)[0]
    if p.ndim == 1:
        return p[m if side == "a" else n]
    lead = _batch_index(batch, p.shape[:-2])
    return p[lead + ((m, 0) if side == "a" else (0, n))]


def _ints(values) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


# ---------------------------------------------------------------- the integer sum

def _gemm_kernel_name() -> str:
    try:
        from ..kernels import gemm
        return gemm.default_kernel()
    except Exception:   # Numba missing or refusing: the explanation does not need it
        return "portable"


def integer_sum(ctx: Context, a, b, az: int, bz: int, *, a_name: str, b_name: str,
                avx2=None, direct: bool = False, kernel_roles=("A", "B")) -> int:
    """Steps for sum_k (a_k - az) * (b_k - bz); returns the int32 the node accumulates.

    ``avx2``: None, or (u8 values, s8 values, u8 zp, s8 zp, order, who) describing how
    onnxruntime's AVX2 GEMM would see this sum (``order``: the k order of its pairs; ``who``:
    which operand it takes as its uint8 A). ``direct``: the depthwise direct kernel's form
    (``sum (b - bz) * a - az * sum (b - bz)``) instead of the GEMM's row/column sums."""
    k = len(a)
    da = [x - az for x in a]
    db = [y - bz for y in b]
    ctx.step("subtract the zero points", [
        f"{a_name} - {az} = {fmt_list(da)}",
        f"{b_name} - {bz} = {fmt_list(db)}"])
    prods = [x * y for x, y in zip(da, db)]
    total = sum(prods)
    acc = wrap_int32(total)
    lines = [f"products: {fmt_list(prods)}",
             f"sum over k = 0..{k - 1} (K = {k}): {total}"]
    note = ""
    if acc != total:
        lines.append(f"int32 wrap-around: {acc}")
        note = "the exact sum does not fit int32: the accumulator wraps, as onnxruntime's does"
    ctx.step("the int32 dot product", lines, value=acc, note=note)

    ra, cb = sum(a), sum(b)
    raw = sum(x * y for x, y in zip(a, b))
    if direct:
        dw = sum(db)
        s1 = sum(x * y for x, y in zip(a, db))
        form = s1 - az * dw
        ctx.step("as the kernel computes it (depthwise direct kernel)", [
            f"sum (w - w_zp) * x  = {s1}   (raw x values, padding holds x_zp)",
            f"x_zp * sum (w - w_zp) = {az} * {dw} = {az * dw}",
            f"{s1} - {az * dw} = {form}"], value=wrap_int32(form),
            note="kernels/conv.py:_grouped_direct_kernel; the same exact sum")
    else:
        form = raw - bz * ra - az * cb + k * az * bz
        ra_n, cb_n = kernel_roles
        ctx.step("as the kernel computes it: raw products, zero points by row/column sums", [
            f"sum {a_name}*{b_name} = {raw}   (raw stored values, int16 dot products in int32)",
            f"row sum of {ra_n} ({a_name}) = {ra},  column sum of {cb_n} ({b_name}) = {cb}",
            f"{raw} - {bz}*{ra} - {az}*{cb} + {k}*{az}*{bz} = {form}"],
            value=wrap_int32(form),
            note=f"kernels/gemm.py:_gemm_dot_kernel (this CPU's default int8 kernel: "
                 f"{_gemm_kernel_name()}; every kernel gives the same exact sum)")
    assert wrap_int32(form) == acc

    if avx2 is not None:
        acc = _avx2_step(ctx, acc, *avx2)
    return acc


def _avx2_step(ctx: Context, acc: int, u, s, uz: int, sz: int, order, who: str) -> int:
    """onnxruntime's AVX2 (no VNNI) u8 x s8 arithmetic for this sum: raw byte products added in
    pairs (k, k+1) into a saturating int16, then zero points folded in exactly."""
    u = [u[i] for i in order]
    s = [s[i] for i in order]
    k = len(u)
    if k % 2:
        u, s = u + [0], s + [0]
    pairs = [u[i] * s[i] + u[i + 1] * s[i + 1] for i in range(0, len(u), 2)]
    clipped = [min(max(p, _I16[0]), _I16[1]) for p in pairs]
    bad = [(i, p) for i, p in enumerate(pairs) if p != clipped[i]]
    emulated = wrap_int32(sum(clipped) - sz * sum(u) - uz * sum(s) + k * uz * sz)
    lines = [f"uint8 operand: {who}; pairs (k, k+1) of raw byte products summed in int16"]
    if bad:
        shown = ", ".join(f"pair {i}: {p} -> {clipped[i]}" for i, p in bad[:4])
        lines.append(f"{len(bad)} of {len(pairs)} pair sums leave [-32768, 32767]: {shown}"
                     + (", ..." if len(bad) > 4 else ""))
        lines.append(f"ORT's AVX2 result: {emulated} (exact: {acc})")
    else:
        lines.append(f"no pair sum leaves [-32768, 32767] (largest |pair| "
                     f"{max((abs(p) for p in pairs), default=0)}): ORT's AVX2 path gives the same {acc}")
    if ctx.emulate_avx2_u8s8:
        note = ("this session emulates it (emulate_avx2_u8s8=True): the node's sum is the "
                "saturated one" if bad else "this session emulates it (emulate_avx2_u8s8=True)")
        ctx.step("onnxruntime's AVX2 u8 x s8 GEMM (vpmaddubsw), emulated", lines, value=emulated,
                 note=note)
        return emulated
    note = ("on AVX2 CPUs without VNNI onnxruntime computes this sum wrongly; refrt is exact "
            "(emulate_avx2_u8s8=True / --emulate-avx2-u8s8 reproduces ORT)" if bad else
            "refrt is exact; so is ORT here")
    ctx.step("what onnxruntime's AVX2 u8 x s8 GEMM (vpmaddubsw) would compute", lines,
             value=emulated, note=note)
    return acc


def _u8s8(u_dtype, s_dtype) -> bool:
    return np.dtype(u_dtype) == np.uint8 and np.dtype(s_dtype) == np.int8


# ---------------------------------------------------------------- requantization

def requantize(ctx: Context, acc: int, sa, sw, sy, zy, out_dtype, *, sw_where="per tensor",
               names=("a_scale", "b_scale")):
    """Steps for y = saturate(rint(float32(acc) * float32(sa * sw / sy)) + zy); returns y."""
    sa, sw, sy = F32(sa), F32(sw), F32(sy)
    prod = round_f32(exact(sa) * exact(sw))
    m = round_f32(exact(prod) / exact(sy))
    ctx.step("the multiplier, float32 in onnxruntime's order", [
        f"{names[0]} * {names[1]} = {fmt(sa)} * {fmt(sw)} = {fmt(prod)}  ({names[1]} {sw_where})",
        f"/ y_scale = {fmt(prod)} / {fmt(sy)} = {fmt_exact(m)}"], value=m,
        note="kernels/quantize.py:requantize_multiplier; both numerics modes (the spec does not "
             "fix this arithmetic)")
    af = round_f32(exact(acc))
    v = round_f32(exact(af) * exact(m))
    lines = [f"float32({acc}) = {fmt(af)}" + ("" if exact(af) == acc else "  (rounded: |acc| > 2^24)"),
             f"{fmt(af)} * {fmt(m)} = {fmt_exact(v)}  (float32 product)"]
    ctx.step("scale the accumulator", lines, value=v)
    return _round_add_saturate(ctx, v, int(zy), out_dtype, float64=(acc, sa, sw, sy))


def _round_add_saturate(ctx: Context, v, zy: int, out_dtype, float64=None):
    r, tie = rint_even(v)
    ctx.step("round half to even", [f"round({fmt(v)}) = {r}" + ("  (a tie: to the even neighbour)" if tie else "")],
             value=r, note=("a rounding tie: rounding half away from zero would give "
                            f"{r + (1 if v > r else -1)}") if tie else "")
    lo, hi = int_range(out_dtype)
    y, clipped = saturate(r + zy, lo, hi)
    note = ""
    if float64 is not None:
        acc, sa, sw, sy = float64
        ref = rint_even(np.float64(acc) * (np.float64(sa) * np.float64(sw) / np.float64(sy)))[0] + zy
        ref = saturate(ref, lo, hi)[0]
        if ref != y:
            note = (f"in float64 (onnx.reference's arithmetic) the result would be {ref}: refrt "
                    f"follows onnxruntime's float32 multiplier")
    ctx.step(f"add the output zero point and saturate to {np.dtype(out_dtype).name} [{lo}, {hi}]", [
        f"{r} + {zy} = {r + zy}; clamp to [{lo}, {hi}]: {y}" + ("  (saturated)" if clipped else "")],
        value=y, note=note)
    return y


# ---------------------------------------------------------------- MatMulInteger, QLinearMatMul

def _matmul_sum(ctx: Context, a, b, a_zp, b_zp, a_label="a", b_label="b"):
    row, col, m, n, batch = matmul_vectors(a, b, ctx.at)
    az = pick(a_zp, batch, m, n, "a")
    bz = pick(b_zp, batch, m, n, "b")
    az = 0 if az is None else int(az)
    bz = 0 if bz is None else int(bz)
    bidx = f"batch {list(batch)}, " if batch else ""
    ctx.step("the operands of this element", [
        f"{bidx}row m = {m} of {a_label} ({a.dtype.name}): {fmt_list(_ints(row))}",
        f"{bidx}column n = {n} of {b_label} ({b.dtype.name}): {fmt_list(_ints(col))}",
        f"zero points: {a_label}_zp = {az}, {b_label}_zp = {bz}"])
    avx2 = None
    if _u8s8(a.dtype, b.dtype):
        avx2 = (_ints(row), _ints(col), az, bz, range(len(row)), f"{a_label} (its A), k in order")
    acc = integer_sum(ctx, _ints(row), _ints(col), az, bz, a_name=f"{a_label}[m, :]",
                      b_name=f"{b_label}[:, n]", avx2=avx2)
    return acc, m, n, batch


@explains("MatMulInteger")
def explain_matmul_integer(ctx: Context):
    a, b, a_zp, b_zp = (ctx.input(i) for i in range(4))
    acc, *_ = _matmul_sum(ctx, a, b, a_zp, b_zp, "A", "B")
    return np.int32(acc)


@explains("QLinearMatMul")
def explain_qlinear_matmul(ctx: Context):
    a, sa, za, b, sb, zb, sy, zy = (ctx.input(i) for i in range(8))
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        from .generic import explain_generic
        return explain_generic(ctx)
    acc, m, n, batch = _matmul_sum(ctx, a, b, za, zb)
    sw = pick(sb, batch, m, n, "b")
    where = "per tensor" if np.size(sb) == 1 else f"of column {n}"
    return np.asarray(requantize(ctx, acc, np.reshape(sa, -1)[0], sw, np.reshape(sy, -1)[0],
                                 np.reshape(zy, -1)[0], ctx.out.dtype, sw_where=where)).astype(ctx.out.dtype)[()]


# ---------------------------------------------------------------- ConvInteger, QLinearConv

def conv_window(x, w, at, attrs):
    """The taps of output element ``at`` = (n, m, *o): a list of (c, r, input position or None
    for padding) in channel-major order (k = c * prod(kernel) + r), with group facts."""
    n, m, o = at[0], at[1], at[2:]
    group = int(attrs.get("group", 1) or 1)
    cg, mg = x.shape[1] // group, w.shape[0] // group
    g = m // mg
    win = window_geometry(x.shape[2:], w.shape[2:], attrs.get("strides"), attrs.get("dilations"),
                          attrs.get("pads"), attrs.get("auto_pad", "NOTSET") or "NOTSET")
    taps = []
    for c in range(cg):
        for r in np.ndindex(*w.shape[2:]):
            pos = tuple(oi * s + ri * d - pb for oi, s, ri, d, pb in
                        zip(o, win.strides, r, win.dilations, win.pads_begin))
            inside = all(0 <= p < size for p, size in zip(pos, x.shape[2:]))
            taps.append((c, r, pos if inside else None))
    return taps, (n, m, g, cg, mg, group, win)


def _describe_window(ctx, taps, geo, x, w, padding_value):
    n, m, g, cg, mg, group, win = geo
    inside = sum(1 for t in taps if t[2] is not None)
    lines = [f"image n = {n}, output channel m = {m}" + (f" (group {g} of {group}: input channels "
                                                         f"{g * cg}..{g * cg + cg - 1})" if group > 1 else ""),
             f"kernel {list(w.shape[2:])}, strides {list(win.strides)}, dilations "
             f"{list(win.dilations)}, pads begin {list(win.pads_begin)} end {list(win.pads_end)}",
             f"{len(taps)} taps (channel c, kernel offset r -> input position), {inside} inside "
             f"the image, {len(taps) - inside} in the padding (read as {padding_value}):"]
    for c, r, pos in taps[:6]:
        xv = "pad" if pos is None else fmt(x[(n, g * cg + c) + pos])
        lines.append(f"  c={c} r={list(r)} -> {'padding' if pos is None else list(pos)}: x = {xv}, "
                     f"w = {fmt(w[(m, c) + r])}")
    if len(taps) > 6:
        lines.append(f"  ... {len(taps) - 6} more taps")
    ctx.step("the window of this output element", lines)


def _conv_sum(ctx: Context, x, w, x_zp, w_zp, ort_op: str) -> tuple[int, tuple]:
    taps, geo = conv_window(x, w, ctx.at, ctx.attrs)
    n, m, g, cg, mg, group, win = geo
    xz = 0 if x_zp is None else int(np.reshape(x_zp, -1)[0])
    wz_all = np.zeros(w.shape[0], np.int64) if w_zp is None else \
        np.broadcast_to(np.asarray(w_zp, np.int64).reshape(-1), (w.shape[0],))
    wz = int(wz_all[m])
    _describe_window(ctx, taps, geo, x, w, f"x_zp = {xz}")
    xs = [xz if pos is None else int(x[(n, g * cg + c) + pos]) for c, r, pos in taps]
    ws = [int(w[(m, c) + r]) for c, r, pos in taps]
    kk = int(np.prod(w.shape[2:]))
    direct = group > 1 and cg * kk <= 64
    avx2 = None
    if ort_op == "ConvInteger" and _u8s8(w.dtype, x.dtype):
        avx2 = (ws, xs, wz, xz, range(len(ws)), "w (ConvInteger's GEMM takes the weights as A), "
                                                "k = c * KK + r")
    elif ort_op == "QLinearConv" and _u8s8(x.dtype, w.dtype):
        if not (cg == 1 and mg == 1 and np.unique(wz_all).size == 1):
            order = [c * kk + r for r in range(kk) for c in range(cg)]    # tap-major
            avx2 = (xs, ws, xz, wz, order, "x, channels-last columns, k = r * Cg + c")
        else:
            ctx.note("depthwise: onnxruntime runs its exact depthwise kernel here, no int16 "
                     "saturation")
    acc = integer_sum(ctx, xs, ws, xz, wz, a_name="x window", b_name="w[m]", avx2=avx2,
                      direct=direct, kernel_roles=("the patch", "the weights"))
    return acc, geo


@explains("ConvInteger")
def explain_conv_integer(ctx: Context):
    x, w, x_zp, w_zp = (ctx.input(i) for i in range(4))
    acc, _ = _conv_sum(ctx, x, w, x_zp, w_zp, "ConvInteger")
    return np.int32(acc)


@explains("QLinearConv")
def explain_qlinear_conv(ctx: Context):
    x, sx, zx, w, sw, zw, sy, zy = (ctx.input(i) for i in range(8))
    bias = ctx.input(8)
    acc, geo = _conv_sum(ctx, x, w, zx, zw, "QLinearConv")
    m = geo[1]
    if bias is not None:
        bm = int(bias[m])
        total = wrap_int32(acc + bm)
        ctx.step("add the int32 bias", [f"{acc} + B[{m}] = {acc} + {bm} = {total}"], value=total,
                 note="B is in units of x_scale * w_scale, added to the exact accumulator")
        acc = total
    swm = np.reshape(sw, -1)[m if np.size(sw) > 1 else 0]
    where = "per tensor" if np.size(sw) == 1 else f"of output channel {m}"
    y = requantize(ctx, acc, np.reshape(sx, -1)[0], swm, np.reshape(sy, -1)[0],
                   np.reshape(zy, -1)[0], ctx.out.dtype, sw_where=where,
                   names=("x_scale", "w_scale"))
    return np.asarray(y).astype(ctx.out.dtype)[()]


# ---------------------------------------------------------------- com.microsoft, float outputs

def _float_epilogue(ctx: Context, acc: int, mult, bias_v, mult_lines, bias_name="bias"):
    af = round_f32(exact(acc))
    y = round_f32(exact(af) * exact(mult))
    lines = list(mult_lines) + [
        f"float32({acc}) = {fmt(af)}" + ("" if exact(af) == acc else "  (rounded: |acc| > 2^24)"),
        f"{fmt(af)} * {fmt(mult)} = {fmt_exact(y)}  (float32 product)"]
    ctx.step("scale the accumulator", lines, value=y)
    if bias_v is not None:
        yb = round_f32(exact(y) + exact(F32(bias_v)))
        ctx.step(f"add the {bias_name}", [f"{fmt(y)} + {fmt(bias_v)} = {fmt_exact(yb)}  (float32)"],
                 value=yb, note="two roundings (product, then sum), no fused multiply-add, as MLAS")
        y = yb
    return y


def _bias_at(bias, n):
    if bias is None:
        return None
    b = np.asarray(bias)
    return b.reshape(-1)[0] if b.size == 1 else b[..., n].reshape(-1)[0]


@explains("DynamicQuantizeMatMul", domain="com.microsoft")
def explain_dynamic_quantize_matmul(ctx: Context):
    A, B, b_scale, b_zp, bias = (ctx.input(i) for i in range(5))
    s, zp = dynamic_params(ctx, A, what="A")
    row, col, m, n, batch = matmul_vectors(A, B, ctx.at)
    q = []
    for v in np.asarray(row, np.float32):
        r = rint_even(round_f32(exact(v) / exact(s)))[0] if s != 0 else 0
        q.append(saturate(r + zp, 0, 255)[0])
    ctx.step("quantize row m of A with that scale and zero point", [
        f"A[m = {m}, :] = {fmt_list(row)}",
        f"saturate(round_half_even(A / {fmt(s)}) + {zp}) = {fmt_list(q)}  (uint8)"],
        note="the whole of A shares one scale and zero point (DynamicQuantizeLinear)")
    bz = pick(b_zp, batch, m, n, "b")
    bz = 0 if bz is None else int(bz)
    colv = _ints(col)
    ctx.step("column n of B", [f"B[:, n = {n}] = {fmt_list(colv)}  ({B.dtype.name}, zero point {bz})"])
    avx2 = (q, colv, zp, bz, range(len(q)), "A quantized, k in order") if B.dtype == np.int8 else None
    acc = integer_sum(ctx, q, colv, zp, bz, a_name="A_q[m, :]", b_name="B[:, n]", avx2=avx2)
    bs = pick(b_scale, batch, m, n, "b")
    mult = round_f32(exact(F32(s)) * exact(F32(bs)))
    y = _float_epilogue(ctx, acc, mult, _bias_at(bias, n),
                        [f"multiplier a_scale * b_scale = {fmt(s)} * {fmt(bs)} = {fmt_exact(mult)}  (float32)"])
    return y


@explains("MatMulIntegerToFloat", domain="com.microsoft")
def explain_matmul_integer_to_float(ctx: Context):
    A, B, a_scale, b_scale, a_zp, b_zp, bias = (ctx.input(i) for i in range(7))
    acc, m, n, batch = _matmul_sum(ctx, A, B, a_zp, b_zp, "A", "B")
    bs = F32(pick(np.asarray(b_scale, np.float32), batch, m, n, "b"))
    bias_v = _bias_at(bias, n)
    if np.size(a_scale) == 1:
        sa = F32(np.reshape(a_scale, -1)[0])
        mult = round_f32(exact(sa) * exact(bs))
        y = _float_epilogue(ctx, acc, mult, bias_v,
                            [f"multiplier a_scale * b_scale = {fmt(sa)} * {fmt(bs)} = {fmt_exact(mult)}  (float32)"])
    else:
        sa = F32(pick(np.asarray(a_scale, np.float32), batch, m, n, "a"))
        y = _float_epilogue(ctx, acc, bs, bias_v, [f"b_scale = {fmt(bs)}"])
        y2 = round_f32(exact(y) * exact(sa))
        ctx.step("times the row's a_scale", [f"{fmt(y)} * {fmt(sa)} = {fmt_exact(y2)}"], value=y2,
                 note="a per-row a_scale is applied after the bias, as onnxruntime does")
        y = y2
    out = ctx.out.dtype
    if out != np.float32:
        yo = np.asarray(y).astype(out)[()]
        ctx.step(f"round to {out.name}", [f"{fmt(y)} -> {fmt(yo)}"], value=yo,
                 note="computed in float32, Y has the scales' type")
        return yo
    return y
