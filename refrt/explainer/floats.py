"""Float ops: MatMul, Gemm, Conv, Softmax and LayerNormalization, one output element at a time.

A float32 sum depends on the order of its additions. Where refrt's code fixes the order (its own
kernels: ``kernels/fgemm.py``'s sequential fused multiply-adds, ``kernels/rows.py``'s 16 lanes,
NumPy's pairwise summation), the steps follow it. Where a BLAS library computes the sum, the order
is the library's and not documented; the steps then use the order x86 BLAS micro-kernels use
for one output (k in order, a fused multiply-add per step), show the other usual orders beside
it, and the result says how many ULP apart the value is from the node's when they differ.
"""

from __future__ import annotations

import numpy as np

from ..ops._common import compute_dtype, normalize_axis, window_geometry
from .arith import (
    F32,
    dot_exact,
    dot_fma,
    dot_products_then_sum,
    exact,
    fma32,
    fmt,
    fmt_exact,
    fmt_list,
    numpy_sum,
    round_f32,
    same_bits,
    sum_left_to_right,
)
from .core import Context, explains
from .integer import matmul_vectors
from .qbinary import broadcast_at

_ORDERS = (("fma", "k in order, one fused multiply-add per step", dot_fma),
           ("plain", "each product rounded, then summed left to right", dot_products_then_sum),
           ("exact", "exact sum of the products, rounded once", dot_exact))


def float_dot(ctx: Context, a, b, *, where: str, known: bool, start_note: str = ""):
    """Steps for sum_k a_k * b_k in float32; returns the value of the primary order (k in order
    with fused multiply-adds)."""
    a = [F32(v) for v in np.asarray(a, np.float32).reshape(-1)]
    b = [F32(v) for v in np.asarray(b, np.float32).reshape(-1)]
    prods = [exact(x) * exact(y) for x, y in zip(a, b)]
    ctx.step("the exact products", [f"a = {fmt_list(a)}", f"b = {fmt_list(b)}",
                                    f"a*b = {fmt_list([float(p) for p in prods])}"])
    values = {key: fn(a, b) for key, _, fn in _ORDERS}
    # any order of a float32 sum of K terms is within (K - 1) * 2^-24 * sum |a_k b_k| of the
    # exact sum (each partial sum rounds once), so two orders differ by at most twice that
    ctx.order_bound = 2 * max(len(a) - 1, 1) * 2.0 ** -24 * float(sum(abs(p) for p in prods))
    primary = values["fma"]
    lines = [f"s = fma(a[k], b[k], s), s from 0, k = 0..{len(a) - 1}: {fmt_exact(primary)}"]
    note = where if known else (
        f"{where}: the library's order is its own (blocking, vector lanes, CPU); this is the "
        f"order of one output in x86 BLAS micro-kernels, not a documented fact")
    ctx.step("the float32 sum over k", lines, value=primary, note=note + start_note)
    return primary, values


def _report_orders(ctx: Context, values: dict, actual_sum, label="the node's sum"):
    """A step listing each summation order's value and whether it is the node's."""
    lines = []
    for key, text, _ in _ORDERS:
        v = values[key]
        mark = ""
        if actual_sum is not None:
            mark = "  = " + label if same_bits(v, actual_sum) else ""
        lines.append(f"{text}: {fmt(v)}{mark}")
    ctx.step("the same sum in other orders (float32 rounding depends on the order)", lines)


def _why_blas(ctx: Context, scale: float = 1.0, extra: float = 0.0):
    """Say why a BLAS result may differ, with the bound every summation order stays within."""
    ctx.order_bound = ctx.order_bound * scale + extra
    ctx.why_different = ("the product runs in the BLAS (numpy.matmul), which adds in an order of "
                         "its own: a rounding difference, not an error; any order stays within "
                         f"{ctx.order_bound:.3g} of any other here (2 (K - 1) 2^-24 sum |a b|)")


# ---------------------------------------------------------------- MLAS's order ("ort" numerics)

def _mlas_on(ctx: Context, *arrays) -> bool:
    """refrt runs this float32 product in onnxruntime's MLAS order (kernels/sgemm.py)."""
    return ctx.numerics != "spec" and all(x.dtype == np.float32 for x in arrays if x is not None)


def _threads(ctx: Context) -> int:
    """onnxruntime's default intra-op thread count, which the explained session uses."""
    from ..ops._common import physical_cores

    return physical_cores()


_PLAN_TEXT = {
    "blocks": "K in blocks of {0} (MLAS's SGEMM): each block a chain of fused multiply-adds from 0, "
              "the blocks' sums added in turn",
    "m1": "MLAS's M = 1 kernel: groups of 4 rounded products added in order, each group's sum "
          "added to the output",
    "m1_tb": "MLAS's M = 1 kernel with B transposed: 8 lanes of rounded products (lane l: k = l, "
             "l + 8, ...), combined in the pattern of an output in a block of {0}",
}


def mlas_dot(ctx: Context, a, b, plan: tuple, init=None, where: str = ""):
    """Steps for one output of MLAS's SGEMM with ``plan`` (kernels/sgemm.py: element_plan) over
    the K values ``a`` and ``b``; ``init``: what the output held first (a bias). -> the value."""
    from ..kernels.sgemm import element_value

    a = [F32(v) for v in np.asarray(a, np.float32).reshape(-1)]
    b = [F32(v) for v in np.asarray(b, np.float32).reshape(-1)]
    ctx.step("the operand values", [f"a = {fmt_list(a)}", f"b = {fmt_list(b)}"])
    value, parts = element_value(a, b, plan, init=init, fma=fma32)
    arg = plan[1] if len(plan) > 1 else ""
    how = _PLAN_TEXT[plan[0]].format({"four": 4, "two": 2, "one": 1}.get(arg, arg))
    if plan[0] == "blocks" and plan[1] >= len(a):
        how = (f"MLAS's SGEMM blocks K by {plan[1]} here, so all K = {len(a)} values are one "
               f"block: one chain of fused multiply-adds from 0, k in order")
    label = {"blocks": "block sums", "m1": "group sums", "m1_tb": "lanes"}[plan[0]]
    lines = [f"{label} = {fmt_list(parts)}"]
    if init is not None:
        lines.append(f"starting from {fmt(F32(init))} (the output's initial value)")
    lines.append(f"result: {fmt_exact(value)}")
    ctx.step("the float32 sum over k, in onnxruntime's order", lines, value=value,
             note=how + (f"; {where}" if where else ""))
    return value


# ---------------------------------------------------------------- MatMul, Gemm

def _matmul_path(ctx: Context, a, b) -> tuple[bool, str]:
    """(is the order known, which code computes the element)."""
    k = a.shape[-1]
    if (a.dtype == np.float32 and b.dtype == np.float32 and a.ndim >= 2 and b.ndim >= 2
            and max(a.ndim, b.ndim) >= 3 and a.shape[-2] * b.shape[-1] * k <= (1 << 21)):
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        if int(np.prod(batch)) >= 2:
            return True, "kernels/fgemm.py:batched_matmul_f32 (sequential fused multiply-adds)"
    if (a.dtype == np.float32 and b.dtype == np.float32 and b.ndim == 2
            and a.size >= 4 * b.shape[0] and a.size * b.shape[1] >= (1 << 22)):
        try:
            from ..kernels import fgemm
            if fgemm.packed_available() and ctx.node.input[1] in ctx.constants:
                return True, ("kernels/fgemm.py:matmul_packed_f32 (constant B packed once; "
                              "sequential fused multiply-adds from 0)")
        except Exception:
            pass
    return False, "numpy.matmul (the BLAS)"


@explains("MatMul")
def explain_matmul(ctx: Context):
    a, b = ctx.input(0), ctx.input(1)
    row, col, m, n, batch = matmul_vectors(a, b, ctx.at)
    ctx.step("the operands of this element", [
        (f"batch {list(batch)}, " if batch else "") + f"row m = {m} of A and column n = {n} of B, "
        f"K = {len(row)}" + ("" if a.dtype == np.float32 else f"; {a.dtype.name} computed in float32")])
    if _mlas_on(ctx, a, b):
        return _to_output(ctx, mlas_dot(ctx, row, col, _matmul_plan(ctx, a, b, m, n),
                                        where="kernels/sgemm.py, refrt/ops/nn.py:_mlas_matmul"))
    known, where = _matmul_path(ctx, a, b)
    v, values = float_dot(ctx, row, col, where=where, known=known)
    _report_orders(ctx, values, np.asarray(ctx.actual).astype(np.float32))
    if not known:
        _why_blas(ctx)
    return _to_output(ctx, v)


def _matmul_plan(ctx: Context, a, b, m: int, n: int) -> tuple:
    """kernels/sgemm.py's plan for MatMul's element (row m, column n), as
    refrt/ops/nn.py:_mlas_matmul runs it."""
    from ..kernels import sgemm

    k = a.shape[-1]
    threads = _threads(ctx)
    if b.ndim == 1 and a.ndim >= 2:
        return ("m1",)                          # b^T A^T: one row, the vector first
    rows = 1 if a.ndim == 1 else int(np.prod(a.shape[:-1]))
    ncol = 1 if b.ndim == 1 else b.shape[-1]
    if b.ndim <= 2:
        if b.ndim == 2 and ctx.node.input[1] in ctx.constants:
            return ("blocks", sgemm.PACKED_STRIDE_K)
        flat_row = int(np.ravel_multi_index(ctx.at[:-1], a.shape[:-1])) if a.ndim >= 2 else 0
        return sgemm.element_plan(rows, ncol, k, flat_row, n, threads=threads)
    mm = 1 if a.ndim == 1 else a.shape[-2]
    batch = np.broadcast_shapes(a.shape[:-2] if a.ndim > 2 else (), b.shape[:-2])
    nb = int(np.prod(batch))
    return sgemm.element_plan(mm, ncol, k, m, n, threads=threads, batch=nb)


def _to_output(ctx, v):
    out = ctx.out.dtype
    if out != np.float32:
        y = np.asarray(v).astype(out)[()]
        ctx.step(f"round to {out.name}", [f"{fmt(v)} -> {fmt(y)}"], value=y,
                 note=f"{out.name} inputs compute in float32 and round once, as onnxruntime")
        return y
    return v


@explains("Gemm")
def explain_gemm(ctx: Context):
    a, b, c = ctx.input(0), ctx.input(1), ctx.input(2)
    alpha = float(ctx.attrs.get("alpha", 1.0))
    beta = float(ctx.attrs.get("beta", 1.0))
    ta, tb = ctx.attrs.get("transA", 0), ctx.attrs.get("transB", 0)
    m, n = ctx.at
    row = a[:, m] if ta else a[m, :]
    col = b[n, :] if tb else b[:, n]
    ctx.step("the operands of this element", [
        f"row m = {m} of A' ({'column of A: transA=1' if ta else 'A'}), column n = {n} of B' "
        f"({'row of B: transB=1' if tb else 'B'}), K = {len(row)}"])
    if _mlas_on(ctx, a, b) and alpha == 1.0:
        return _to_output(ctx, _explain_gemm_mlas(ctx, a, b, c, beta, ta, tb, row, col, m, n))
    v, values = float_dot(ctx, row, col, where="numpy.matmul (the BLAS)", known=False)
    y = v
    if alpha != 1.0:
        y = round_f32(exact(v) * exact(F32(alpha)))
        ctx.step("times alpha", [f"{fmt(v)} * {fmt(F32(alpha))} = {fmt_exact(y)}"], value=y)
    actual_sum = None
    if c is not None and beta != 0.0:
        cv = F32(c[broadcast_at(c.shape, (a.shape[1] if ta else a.shape[0], b.shape[0] if tb else b.shape[1]), ctx.at)])
        ct = round_f32(exact(cv) * exact(F32(beta)))
        y2 = round_f32(exact(y) + exact(ct))
        ctx.step("plus beta * C", [f"beta * C = {fmt(F32(beta))} * {fmt(cv)} = {fmt(ct)}",
                                   f"{fmt(y)} + {fmt(ct)} = {fmt_exact(y2)}  (float32)"], value=y2)
        if alpha == 1.0:
            actual_sum = _undo_add(np.asarray(ctx.actual).astype(np.float32), ct, values)
        y = y2
    # alpha scales the sum's difference; alpha and C add a rounding each (an ULP of the result)
    _why_blas(ctx, scale=abs(alpha), extra=4 * 2.0 ** -24 * abs(float(y)))
    if c is None or beta == 0.0:
        if alpha == 1.0:
            actual_sum = np.asarray(ctx.actual).astype(np.float32)
    _report_orders(ctx, values, actual_sum, label="the node's (with C added)" if c is not None else
                   "the node's sum")
    return _to_output(ctx, y)


def _explain_gemm_mlas(ctx, a, b, c, beta, ta, tb, row, col, m, n):
    """Gemm in onnxruntime's order: Y starts as beta * C, and MLAS's SGEMM adds the product."""
    from ..kernels import sgemm

    mm = a.shape[1] if ta else a.shape[0]
    nn = b.shape[0] if tb else b.shape[1]
    init = None
    if c is not None and beta != 0.0:
        cv = F32(c[broadcast_at(c.shape, (mm, nn), ctx.at)])
        init = cv if beta == 1.0 else round_f32(exact(cv) * exact(F32(beta)))
        ctx.step("the output starts as beta * C", [f"beta * C = {fmt(F32(beta))} * {fmt(cv)} = {fmt(init)}"],
                 value=init, note="onnxruntime writes beta * C into Y, then the SGEMM adds the "
                                  "product into it (beta = 1)")
    if ctx.node.input[1] in ctx.constants:
        plan = ("blocks", sgemm.PACKED_STRIDE_K)
    else:
        plan = sgemm.element_plan(mm, nn, len(row), m, n, trans_a=bool(ta), trans_b=bool(tb),
                                  threads=_threads(ctx))
    return mlas_dot(ctx, row, col, plan, init=init,
                    where="B packed once (a constant), as onnxruntime packs it"
                    if ctx.node.input[1] in ctx.constants else "")


def _undo_add(actual, term, values):
    """The candidate sum whose float32 sum with ``term`` gives ``actual`` (None if none does), so
    that the orders can be compared with the node through a bias addition."""
    for v in values.values():
        if same_bits(F32(v + term), actual):
            return v
    return None


# ---------------------------------------------------------------- Conv

@explains("Conv")
def explain_conv(ctx: Context):
    x, w, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    n, m, o = ctx.at[0], ctx.at[1], ctx.at[2:]
    group = int(ctx.attrs.get("group", 1) or 1)
    cg, mg = x.shape[1] // group, w.shape[0] // group
    g = m // mg
    win = window_geometry(x.shape[2:], w.shape[2:], ctx.attrs.get("strides"),
                          ctx.attrs.get("dilations"), ctx.attrs.get("pads"),
                          ctx.attrs.get("auto_pad", "NOTSET") or "NOTSET")
    xs, ws, inside = [], [], 0
    for c in range(cg):
        for r in np.ndindex(*w.shape[2:]):
            pos = tuple(oi * s + ri * d - pb for oi, s, ri, d, pb in
                        zip(o, win.strides, r, win.dilations, win.pads_begin))
            ok = all(0 <= p < size for p, size in zip(pos, x.shape[2:]))
            inside += ok
            xs.append(F32(x[(n, g * cg + c) + pos]) if ok else F32(0))
            ws.append(F32(w[(m, c) + r]))
    ctx.step("the window of this output element", [
        f"image n = {n}, output channel m = {m}" + (f" (group {g} of {group})" if group > 1 else ""),
        f"kernel {list(w.shape[2:])}, strides {list(win.strides)}, dilations {list(win.dilations)}, "
        f"pads begin {list(win.pads_begin)} end {list(win.pads_end)}",
        f"{len(xs)} taps in im2col order (k = c * prod(kernel) + r): {inside} inside the image, "
        f"{len(xs) - inside} in the zero padding"])
    if _mlas_on(ctx, x, w):
        v = mlas_dot(ctx, ws, xs, _conv_plan(ctx, x, w, win, group, m - g * mg, o, len(xs)),
                     where="refrt/ops/conv.py:_mlas_conv")
        if bias is not None:
            bv = F32(bias[m])
            y = F32(v + bv)
            ctx.step("plus the bias", [f"{fmt(v)} + B[{m}] = {fmt(v)} + {fmt(bv)} = {fmt_exact(y)}  "
                                       "(float32)"], value=y)
            v = y
        return _to_output(ctx, v)
    v, values = float_dot(ctx, xs, ws, where="numpy.matmul over im2col columns (the BLAS)",
                          known=False)
    actual = np.asarray(ctx.actual).astype(np.float32)
    if bias is not None:
        bv = F32(bias[m])
        y = round_f32(exact(v) + exact(bv))
        ctx.step("plus the bias", [f"{fmt(v)} + B[{m}] = {fmt(v)} + {fmt(bv)} = {fmt_exact(y)}  (float32)"],
                 value=y)
        _report_orders(ctx, values, _undo_add(actual, bv, values), label="the node's (with B added)")
        v = y
    else:
        _report_orders(ctx, values, actual)
    _why_blas(ctx, extra=2 * 2.0 ** -24 * abs(float(v)))
    return _to_output(ctx, v)


# ---------------------------------------------------------------- Softmax

def _softmax_row(ctx: Context, x):
    """The values the element's softmax runs over, the position in them, and whether NumPy sums
    them contiguously (pairwise) or across rows (left to right)."""
    if ctx.opset < 13 or ctx.impl.since < 13:
        axis = normalize_axis(ctx.attrs.get("axis", 1), x.ndim)
        lead = int(np.prod(x.shape[:axis]))
        flat = x.reshape(lead, -1)
        i = int(np.ravel_multi_index(ctx.at, x.shape))
        r, j = divmod(i, flat.shape[1])
        return flat[r], j, True, f"axes {axis}..{x.ndim - 1} flattened (opset < 13)"
    axis = normalize_axis(ctx.attrs.get("axis", -1), x.ndim)
    idx = list(ctx.at)
    j = idx[axis]
    idx[axis] = slice(None)
    return x[tuple(idx)], j, axis == x.ndim - 1, f"axis {axis}"


def _mlas_exp(v, wide: bool):
    """MLAS's e^v for v = x - max <= 0, its steps as a dict (``kernels/rows.py``'s
    ``_mlas_exp_shifted``)."""
    from ..kernels.rows import MLAS_EXP as E

    lower = E.LOWER_WIDE if wide else E.LOWER
    c = F32(lower) if F32(lower) > v else F32(v)
    biased = fma32(c, E.LOG2E, E.ROUND)
    m = F32(biased - E.ROUND)
    r = fma32(m, E.LN2_HI, c)
    r = fma32(m, E.LN2_LO, r)
    p = E.POLY[0]
    for coeff in E.POLY[1:]:
        p = fma32(p, r, coeff)
    if wide:
        e = F32(np.ldexp(np.float64(p), int(m)))
    else:
        bits = (np.array(biased, F32).view(np.uint32) << np.uint32(23)) + np.uint32(0x3F800000)
        e = F32(p * bits.view(F32))
    return {"clamped": c, "m": m, "r": r, "p": p, "e": e}


def _mlas_lane_total(e, lanes: int):
    """The sum as MLAS adds it: lane k adds e[k], e[k + lanes], ... left to right; 16 lanes are
    folded to 8; then ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)). -> (lane sums, total)."""
    acc = [F32(0)] * lanes
    for i, t in enumerate(e):
        acc[i % lanes] = F32(acc[i % lanes] + t)
    s = [F32(acc[k + 8] + acc[k]) for k in range(8)] if lanes == 16 else list(acc)
    total = F32(F32(F32(s[0] + s[1]) + F32(s[2] + s[3])) + F32(F32(s[4] + s[5]) + F32(s[6] + s[7])))
    return acc, total


def _explain_softmax_mlas(ctx: Context, row, j):
    from ..ops._common import mlas_wide_kernels

    wide = mlas_wide_kernels()
    mx = row.max()
    negmax = F32(-mx)
    ctx.step("the maximum, negated", [f"max = {fmt(mx)};  -max = {fmt(negmax)}"], value=mx)
    steps = [_mlas_exp(F32(v + negmax), wide) for v in row]
    e = [s["e"] for s in steps]
    sj = steps[j]
    lower = "-103.97 (AVX-512F kernel)" if wide else "-88.38 (AVX2/FMA3 kernel)"
    ctx.step("MLAS's e^(x - max) for this element (float32, each multiply-add fused)", [
        f"v = x - max = {fmt(F32(row[j] + negmax))}, clamped below at {lower}: {fmt(sj['clamped'])}",
        f"m = round(v / ln 2) (fma with 1.5 * 2^23) = {fmt(sj['m'])}",
        f"r = v - m ln 2 (two fmas, ln 2 in two parts) = {fmt(sj['r'])}",
        f"p = e^r by a degree-6 polynomial in fmas = {fmt(sj['p'])}",
        f"e = p * 2^m = {fmt_exact(sj['e'])}" + ("  (exact scaling, vscalefps)" if wide else
                                                 "  (2^m from exponent bits)")],
        value=sj["e"], note="kernels/rows.py: _mlas_exp_shifted (MLAS_EXP holds the constants)")
    lanes = 16 if wide else 8
    acc, total = _mlas_lane_total(e, lanes)
    ctx.step(f"the sum of all e, in {lanes} SIMD lanes as MLAS adds them", [
        f"e = {fmt_list(e)}", f"lane sums = {fmt_list(acc)}", f"total = {fmt_exact(total)}"],
        value=total, note=("16 lanes folded to 8 (k + 8), then ((0+1)+(2+3))+((4+5)+(6+7))" if wide
                           else "((0+1)+(2+3))+((4+5)+(6+7))"))
    inv = F32(F32(1) / total)
    y = F32(e[j] * inv)
    ctx.step("times 1 / sum (float32)", [f"1 / {fmt(total)} = {fmt(inv)}",
                                         f"{fmt(e[j])} * {fmt(inv)} = {fmt_exact(y)}"], value=y)
    return np.asarray(y).astype(ctx.out.dtype)[()]


@explains("Softmax")
def explain_softmax(ctx: Context):
    x = ctx.input(0)
    ct = compute_dtype(x.dtype)
    native = x.dtype == np.float16 and ctx.numerics == "spec"
    work = np.dtype(x.dtype if native else ct)
    row, j, contiguous, what = _softmax_row(ctx, x)
    row = np.asarray(row).astype(work)
    ctx.step("the values softmax runs over", [f"{what}: {len(row)} values, this element is number {j}",
                                              f"x = {fmt_list(row)}"])
    if x.dtype == np.float32 and ctx.numerics != "spec":
        return _explain_softmax_mlas(ctx, row, j)
    mx = row.max()
    shifted = (row - mx).astype(work)
    ctx.step("subtract the maximum", [f"max = {fmt(mx)}", f"x - max = {fmt_list(shifted)}"], value=mx)
    e = np.exp(shifted).astype(work)
    ctx.step(f"exponentials ({work.name}, NumPy's exp)", [f"e = {fmt_list(e)}",
                                                          f"e[{j}] = {fmt_exact(e[j])}"], value=e[j])
    total = numpy_sum(e) if contiguous and work == np.float32 else \
        (sum_left_to_right(e) if work == np.float32 else np.sum(e))
    order = ("NumPy's pairwise summation (contiguous values)" if contiguous else
             "left to right (the values are strided: NumPy adds whole rows in order)")
    ctx.step("their sum", [f"sum(e) = {fmt_exact(total)}"], value=total, note=order)
    y = (np.asarray(e[j], work) / np.asarray(total, work))[()]
    ctx.step("divide", [f"{fmt(e[j])} / {fmt(total)} = {fmt_exact(y)}  ({work.name})"], value=y)
    return np.asarray(y).astype(ctx.out.dtype)[()]


# ---------------------------------------------------------------- LayerNormalization

def _mlas_layer_norm_stats(row, eps):
    """onnxruntime's AVX2 layer-norm statistics (``kernels/rows.py``'s ``_layer_norm_row``):
    -> (float64 sum, mean, sum of squared deviations, 8 lane sums, inv_std)."""
    n = len(row)
    xd = [np.float64(v) for v in row]
    full4 = n - n % 4
    lanes4 = [np.float64(0)] * 4
    for i in range(full4):
        lanes4[i % 4] += xd[i]
    total = (lanes4[0] + lanes4[2]) + (lanes4[1] + lanes4[3])
    for i in range(full4, n):
        total += xd[i]
    mean = F32(total / n)
    d = [F32(v - mean) for v in row]
    full8 = n - n % 8
    acc = [F32(0)] * 8
    for i in range(full8):
        acc[i % 8] = fma32(d[i], d[i], acc[i % 8])
    half = [F32(acc[k] + acc[k + 4]) for k in range(4)]
    sq = F32(F32(half[0] + half[2]) + F32(half[1] + half[3]))
    for i in range(full8, n):
        sq = fma32(d[i], d[i], sq)
    inv = F32(F32(1) / np.sqrt(F32(F32(sq / F32(n)) + eps)))
    return total, mean, sq, acc, inv


@explains("LayerNormalization")
def explain_layer_normalization(ctx: Context):
    x, scale, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    axis = normalize_axis(ctx.attrs.get("axis", -1), x.ndim)
    eps = F32(ctx.attrs.get("epsilon", 1e-5))
    if x.dtype != np.float32 or ctx.attrs.get("stash_type", 1) != 1:
        from .generic import explain_generic
        return explain_generic(ctx)
    lead = ctx.at[:axis] if ctx.out_index == 0 else ctx.at[:axis]
    row = np.asarray(x[lead], np.float32).reshape(-1)
    n = row.size
    j = int(np.ravel_multi_index(ctx.at[axis:], x.shape[axis:])) if ctx.out_index == 0 else 0
    kernel = ctx.numerics != "spec" and all(p is None or (p.dtype == np.float32 and p.size == n)
                                            for p in (scale, bias))
    ctx.step("the values normalized together", [
        f"X{list(lead)} over axes {axis}..{x.ndim - 1}: {n} values"
        + (f", this element is number {j}" if ctx.out_index == 0 else ""),
        f"x = {fmt_list(row)}"])
    if kernel:
        total, mean, ss, lanes, inv = _mlas_layer_norm_stats(row, eps)
        ctx.step("mean", [f"sum = {total!r} (float64);  mean = sum / n = {fmt_exact(mean)}"],
                 value=mean, note="onnxruntime's AVX2 kernel: the row summed in float64 (4 lanes), "
                                  "/ n, rounded to float32")
        ctx.step("sum of squared deviations", [
            f"d = x - mean (float32);  8 lanes of fused d * d + acc: {fmt_list(lanes)}",
            f"lanes folded (k + 4, then (0+2)+(1+3)), then the last {n % 8} values one fma each: "
            f"{fmt_exact(ss)}"], value=ss)
        var = F32(ss / F32(n))
        ctx.step("inv_std = 1 / sqrt(sum / n + epsilon)", [
            f"sum / n = {fmt(var)};  + {fmt(eps)} = {fmt(F32(var + eps))};  "
            f"sqrt = {fmt(np.sqrt(F32(var + eps)))};  1 / that = {fmt_exact(inv)}"], value=inv)
    else:
        s_ = numpy_sum(row)
        mean = F32(np.float64(s_) / np.float64(n))
        ctx.step("mean", [f"sum = {fmt(s_)};  mean = {fmt_exact(mean)}"], value=mean,
                 note="NumPy's mean: pairwise sum, / n (numerics 'spec')")
        sq = [F32(F32(v - mean) * F32(v - mean)) for v in row]
        ss = numpy_sum(sq)
        var = F32(np.float64(ss) / np.float64(n))
        ctx.step("variance: the mean of the squared deviations", [
            f"(x - mean)^2 = {fmt_list(sq)}", f"sum = {fmt(ss)};  var = {fmt_exact(var)}"], value=var)
        inv = F32(F32(1) / np.sqrt(F32(var + eps)))
        ctx.step("inv_std = 1 / sqrt(var + epsilon)", [
            f"var + {fmt(eps)} = {fmt(F32(var + eps))};  sqrt = {fmt(np.sqrt(F32(var + eps)))};  "
            f"1 / that = {fmt_exact(inv)}"], value=inv)
    if ctx.out_index == 1:
        return mean
    if ctx.out_index == 2:
        return inv
    xs = x.shape[axis:]
    sub = ctx.at[axis:]
    sv = F32(scale[broadcast_at(scale.shape, xs, sub)])
    dj = F32(row[j] - mean)
    t1 = F32(dj * inv)
    lines = [f"(x - mean) = {fmt(row[j])} - {fmt(mean)} = {fmt(dj)}", f"* inv_std = {fmt(t1)}"]
    if bias is not None:
        bv = F32(bias[broadcast_at(bias.shape, xs, sub)])
        if kernel:
            y = fma32(t1, sv, bv)
            lines.append(f"fused * scale {fmt(sv)} + bias {fmt(bv)} (one rounding) = {fmt_exact(y)}")
        else:
            t2 = F32(t1 * sv)
            y = F32(t2 + bv)
            lines.append(f"* scale {fmt(sv)} = {fmt(t2)};  + bias {fmt(bv)} = {fmt_exact(y)}")
    else:
        y = F32(t1 * sv)
        lines.append(f"* scale {fmt(sv)} = {fmt_exact(y)}")
    ctx.step("normalize, scale and shift this element (float32)", lines, value=y)
    return np.asarray(y).astype(ctx.out.dtype)[()]


def _conv_plan(ctx, x, w, win, group, row, o, k) -> tuple:
    """kernels/sgemm.py's plan for output (filter ``row`` of its group, position ``o``), as
    refrt/ops/conv.py:_mlas_conv runs the convolution."""
    from ..kernels import sgemm

    n = x.shape[0]
    mg = w.shape[0] // group
    p = int(np.prod(win.out))
    col = int(np.ravel_multi_index(tuple(o), win.out))
    direct = (all(s == 1 for s in win.strides) and not any(win.pads_begin) and not any(win.pads_end)
              and int(np.prod(win.kernel)) == 1)
    if direct or mg > p:
        return sgemm.element_plan(mg, p, k, row, col, threads=_threads(ctx))
    if mg == 1:
        return ("m1", sgemm.k_stride(p, k))
    segments = sgemm.conv_segments(mg, p, k, _threads(ctx)) if n * group == 1 else [(0, p)]
    p0, p1 = next((s, e) for s, e in segments if s <= col < e)
    return ("blocks", sgemm.k_stride(p1 - p0, k))
