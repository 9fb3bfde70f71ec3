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

from ..ops._common import ROW_KERNEL_MIN_SIZE, compute_dtype, normalize_axis, window_geometry
from .arith import (
    F32,
    dot_exact,
    dot_fma,
    dot_products_then_sum,
    exact,
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
    known, where = _matmul_path(ctx, a, b)
    v, values = float_dot(ctx, row, col, where=where, known=known)
    _report_orders(ctx, values, np.asarray(ctx.actual).astype(np.float32))
    if not known:
        _why_blas(ctx)
    return _to_output(ctx, v)


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


@explains("Softmax")
def explain_softmax(ctx: Context):
    x = ctx.input(0)
    ct = compute_dtype(x.dtype)
    native = x.dtype == np.float16 and ctx.numerics == "spec"
    work = np.dtype(x.dtype if native else ct)
    row, j, contiguous, what = _softmax_row(ctx, x)
    row = np.asarray(row).astype(work)
    row_kernel = (x.dtype == np.float32 and contiguous and x.size >= ROW_KERNEL_MIN_SIZE
                  and ctx.numerics != "spec" and (ctx.opset < 13 or
                                                  normalize_axis(ctx.attrs.get("axis", -1), x.ndim) == x.ndim - 1))
    ctx.step("the values softmax runs over", [f"{what}: {len(row)} values, this element is number {j}",
                                              f"x = {fmt_list(row)}"])
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
    if row_kernel:
        ctx.why_different = ("this row runs in kernels/rows.py:softmax_rows (4096+ float32 "
                             "elements, numerics 'ort'): a float32 polynomial e^x and 1/sum "
                             "multiplied in, as onnxruntime does; the steps above are the NumPy path")
        ctx.note(ctx.why_different)
    return np.asarray(y).astype(ctx.out.dtype)[()]


# ---------------------------------------------------------------- LayerNormalization

def _lanes16(values, neutral) -> np.float32:
    """kernels/rows.py's sum: lane k adds elements k, k+16, ... left to right (a partial last
    block padded with ``neutral``), then lanes combined in halves (k + 8, k + 4, k + 2, k + 1)."""
    v = [F32(x) for x in values]
    while len(v) % 16:
        v.append(F32(neutral))
    lanes = [F32(0)] * 16
    for i in range(0, len(v), 16):
        lanes = [F32(lanes[k] + v[i + k]) for k in range(16)]
    width = 8
    while width:
        lanes = [F32(lanes[k] + lanes[k + width]) for k in range(width)]
        width //= 2
    return lanes[0]


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
    row_kernel = (axis == x.ndim - 1 and x.size >= ROW_KERNEL_MIN_SIZE and ctx.numerics != "spec"
                  and all(p is None or (p.dtype == np.float32 and p.size == n) for p in (scale, bias)))
    ctx.step("the values normalized together", [
        f"X{list(lead)} over axes {axis}..{x.ndim - 1}: {n} values"
        + (f", this element is number {j}" if ctx.out_index == 0 else ""),
        f"x = {fmt_list(row)}"])
    if row_kernel:
        s = _lanes16(row, 0.0)
        mean = F32(s / F32(n))
        how = "kernels/rows.py: 16 lanes, combined in halves; / n in float32"
    else:
        s = numpy_sum(row)
        mean = F32(np.float64(s) / np.float64(n))
        how = "NumPy's mean: pairwise sum, / n"
    ctx.step("mean", [f"sum = {fmt(s)};  mean = {fmt_exact(mean)}"], value=mean, note=how)
    d = [F32(v - mean) for v in row]
    sq = [F32(t * t) for t in d]
    if row_kernel:
        ss = _lanes16(sq, 0.0)
        var = F32(ss / F32(n))
    else:
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
    t1 = F32(d[j] * inv)
    t2 = F32(t1 * sv)
    lines = [f"(x - mean) = {fmt(row[j])} - {fmt(mean)} = {fmt(d[j])}",
             f"* inv_std = {fmt(t1)};  * scale {fmt(sv)} = {fmt(t2)}"]
    y = t2
    if bias is not None:
        bv = F32(bias[broadcast_at(bias.shape, xs, sub)])
        y = F32(t2 + bv)
        lines.append(f"+ bias {fmt(bv)} = {fmt_exact(y)}")
    ctx.step("normalize, scale and shift this element (float32, one rounding per operation)",
             lines, value=y)
    return np.asarray(y).astype(ctx.out.dtype)[()]
