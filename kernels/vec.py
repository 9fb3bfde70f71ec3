"""A 16-lane float32 vector type for Numba kernels and the intrinsics that work on it.

``VEC`` is an LLVM ``<16 x float>`` held in SIMD registers (AVX-512: one zmm register; AVX2: two
ymm; SSE: four xmm). The intrinsics load and store it (whole, or the first ``count`` lanes with a
mask, so a row's partial last block touches no memory past the row's end), do one float32
operation per lane (``add``, ``mul``, ``fma``, ...), and combine the lanes in halves
(``lanes_sum``: lanes k and k + 8, then 4, 2 and 1 apart). The row kernels (``rows.py``) and the
float math kernels (``mathf.py``) are written with them, so that the order of every float32
operation, hence the rounding, is fixed and reproducible in NumPy; ``rows.py``'s docstring says
why that matters.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

__all__ = ["LANES", "VEC", "splat", "load", "load_halves", "load_first", "store", "store_first", "add", "sub",
           "mul", "div", "maximum", "minimum", "keep_nan", "fma", "lanes_sum", "lanes_max",
           "lanes_min", "horner", "pow2_of_rounded", "pow2_of_integer", "zero_where_below",
           "add_halves", "exp_scales", "keep_first", "mlas_fold", "square_halves", "lane"]

LANES = 16


class _Vec(types.Type):
    """16 float32 lanes, held in SIMD registers (LLVM ``<16 x float>``)."""

    def __init__(self):
        super().__init__(name=f"f32x{LANES}")


VEC = _Vec()
_LL_F32 = ir.FloatType()
_LL_I32 = ir.IntType(32)
_LL_VEC = ir.VectorType(_LL_F32, LANES)
_LL_IVEC = ir.VectorType(_LL_I32, LANES)
_LL_MASK = ir.VectorType(ir.IntType(1), LANES)
_LANE_INDEX = ir.Constant(_LL_IVEC, list(range(LANES)))


@register_model(_Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _LL_VEC)


def _broadcast(builder, value, vector_type):
    """An LLVM vector with ``value`` in every lane."""
    v = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value,
                               ir.Constant(_LL_I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(_LL_IVEC, [0] * LANES))


def _is_row(t, writable=False):
    """A 1-D C-contiguous float32 array (a row of a C-contiguous matrix)."""
    return (isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.float32
            and t.layout == "C" and (t.mutable or not writable))


def _address(context, builder, arytype, ary, index, indextype):
    """Pointer to ``ary[index]``, cast to a pointer to 16 floats."""
    data = context.make_array(arytype)(context, builder, ary).data
    i = context.cast(builder, index, indextype, types.intp)
    return builder.bitcast(builder.gep(data, [i]), _LL_VEC.as_pointer())


def _first_lanes(builder, count, counttype, context):
    """Mask: lanes 0 .. count - 1 on."""
    c = context.cast(builder, count, counttype, types.int32)
    return builder.icmp_signed("<", _LANE_INDEX, _broadcast(builder, c, _LL_IVEC))


@intrinsic
def splat(typingctx, x):
    """VEC with x in every lane."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return _broadcast(builder, args[0], _LL_VEC)

    return VEC(x), codegen


@intrinsic
def load(typingctx, row, i):
    """row[i : i + 16] (the caller guarantees i + 16 <= len(row))."""
    if not (_is_row(row) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return builder.load(ptr, align=4)

    return VEC(row, i), codegen


@intrinsic
def load_halves(typingctx, row_a, i, row_b, j):
    """row_a[i : i + 8] in lanes 0-7 and row_b[j : j + 8] in lanes 8-15 (the caller guarantees
    both are inside their rows)."""
    if not (_is_row(row_a) and _is_row(row_b) and isinstance(i, types.Integer)
            and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        half = ir.VectorType(_LL_F32, LANES // 2)
        parts = []
        for a, at, idx, it in ((args[0], sig.args[0], args[1], sig.args[1]),
                               (args[2], sig.args[2], args[3], sig.args[3])):
            ptr = _address(context, builder, at, a, idx, it)
            parts.append(builder.load(builder.bitcast(ptr, half.as_pointer()), align=4))
        return builder.shuffle_vector(parts[0], parts[1], ir.Constant(_LL_IVEC, list(range(LANES))))

    return VEC(row_a, i, row_b, j), codegen


@intrinsic
def load_first(typingctx, row, i, count, fill):
    """Lanes k < count: row[i + k]; the other lanes: fill (their memory is not read)."""
    if not (_is_row(row) and isinstance(i, types.Integer) and isinstance(count, types.Integer)
            and fill == types.float32):
        return None

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        mask = _first_lanes(builder, args[2], sig.args[2], context)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_LL_VEC, [ptr.type, _LL_I32, _LL_MASK, _LL_VEC]),
            f"llvm.masked.load.v{LANES}f32.p0")
        return builder.call(fn, [ptr, ir.Constant(_LL_I32, 4), mask,
                                 _broadcast(builder, args[3], _LL_VEC)])

    return VEC(row, i, count, fill), codegen


@intrinsic
def store(typingctx, row, i, v):
    """row[i : i + 16] = v."""
    if not (_is_row(row, writable=True) and isinstance(i, types.Integer) and v == VEC):
        return None

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(args[2], ptr, align=4)
        return context.get_dummy_value()

    return types.none(row, i, v), codegen


@intrinsic
def store_first(typingctx, row, i, count, v):
    """row[i + k] = v[k] for lanes k < count (memory past them is not written)."""
    if not (_is_row(row, writable=True) and isinstance(i, types.Integer)
            and isinstance(count, types.Integer) and v == VEC):
        return None

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        mask = _first_lanes(builder, args[2], sig.args[2], context)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [_LL_VEC, ptr.type, _LL_I32, _LL_MASK]),
            f"llvm.masked.store.v{LANES}f32.p0")
        builder.call(fn, [args[3], ptr, ir.Constant(_LL_I32, 4), mask])
        return context.get_dummy_value()

    return types.none(row, i, count, v), codegen


def _lanewise(build, doc):
    """An intrinsic VEC (op) VEC -> VEC, one float32 operation per lane."""

    @intrinsic
    def fn(typingctx, a, b):
        if not (a == VEC and b == VEC):
            return None

        def codegen(context, builder, sig, args):
            return build(builder, *args)

        return VEC(a, b), codegen

    fn.__doc__ = doc
    return fn


def _greater(builder, a, b):
    return builder.select(builder.fcmp_ordered(">", a, b), a, b)


add = _lanewise(lambda b, x, y: b.fadd(x, y), "a + b per lane")
sub = _lanewise(lambda b, x, y: b.fsub(x, y), "a - b per lane")
mul = _lanewise(lambda b, x, y: b.fmul(x, y), "a * b per lane")
div = _lanewise(lambda b, x, y: b.fdiv(x, y), "a / b per lane")
maximum = _lanewise(_greater, "a if a > b else b per lane (vmaxps: a NaN in a gives b)")
minimum = _lanewise(lambda b, x, y: b.select(b.fcmp_ordered("<", x, y), x, y),
                    "a if a < b else b per lane (vminps: a NaN in a gives b)")
keep_nan = _lanewise(lambda b, acc, x: b.select(b.fcmp_unordered("uno", x, x), x, acc),
                     "x where x is NaN, acc elsewhere, per lane (a NaN, once met, stays)")


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c per lane, rounded once (``llvm.fma``)."""
    if not (a == VEC and b == VEC and c == VEC):
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_LL_VEC, [_LL_VEC] * 3), f"llvm.fma.v{LANES}f32")
        return builder.call(fn, args)

    return VEC(a, b, c), codegen


def _halves(reduce_pair, doc):
    """An intrinsic VEC -> float32 combining lanes k and k + w/2 for w = 16, 8, 4, 2."""

    @intrinsic
    def fn(typingctx, v):
        if v != VEC:
            return None

        def codegen(context, builder, sig, args):
            x, width = args[0], LANES
            while width > 1:
                half = width // 2
                pick = ir.VectorType(_LL_I32, half)
                lo = builder.shuffle_vector(x, x, ir.Constant(pick, list(range(half))))
                hi = builder.shuffle_vector(x, x, ir.Constant(pick, list(range(half, width))))
                x, width = reduce_pair(builder, lo, hi), half
            return builder.extract_element(x, ir.Constant(_LL_I32, 0))

        return types.float32(v), codegen

    fn.__doc__ = doc
    return fn


lanes_sum = _halves(lambda b, lo, hi: b.fadd(lo, hi),
                    "the lanes' sum: v[k] + v[k + 8], then lanes 4, 2 and 1 apart")
lanes_max = _halves(_greater, "the lanes' maximum, combined in halves as lanes_sum")
lanes_min = _halves(lambda b, lo, hi: b.select(b.fcmp_ordered("<", lo, hi), lo, hi),
                    "the lanes' minimum, combined in halves as lanes_sum")


@njit(inline="always")
def horner(x, coeffs):
    """coeffs[0] x^(n-1) + ... + coeffs[n-1] per lane (coeffs a tuple of n float32), by Horner's
    rule in fused multiply-adds: one rounding per step, highest power first."""
    p = splat(coeffs[0])
    for i in range(1, len(coeffs)):
        p = fma(p, x, splat(coeffs[i]))
    return p


@intrinsic
def pow2_of_rounded(typingctx, t):
    """2^n per lane, for t = 1.5 * 2^23 + n with -126 <= n <= 127: the float32 whose exponent bits
    are n + 127, i.e. (bits(t) << 23) + bits(1.0) (bits(t) = 0x4B400000 + n, whose high part the
    shift pushes out)."""
    if t != VEC:
        return None

    def codegen(context, builder, sig, args):
        bits = builder.shl(builder.bitcast(args[0], _LL_IVEC), _broadcast(
            builder, ir.Constant(_LL_I32, 23), _LL_IVEC))
        bits = builder.add(bits, _broadcast(builder, ir.Constant(_LL_I32, 0x3F800000), _LL_IVEC))
        return builder.bitcast(bits, _LL_VEC)

    return VEC(t), codegen


@intrinsic
def zero_where_below(typingctx, x, bound, y):
    """y per lane, but 0 where x < bound (a NaN x keeps y)."""
    if not (x == VEC and bound == types.float32 and y == VEC):
        return None

    def codegen(context, builder, sig, args):
        below = builder.fcmp_ordered("<", args[0], _broadcast(builder, args[1], _LL_VEC))
        return builder.select(below, ir.Constant(_LL_VEC, [0.0] * LANES), args[2])

    return VEC(x, bound, y), codegen



@intrinsic
def pow2_of_integer(typingctx, m):
    """2^m per lane, for lanes holding integers -126 <= m <= 127: the float32 whose exponent bits
    are m + 127."""
    if m != VEC:
        return None

    def codegen(context, builder, sig, args):
        n = builder.fptosi(args[0], _LL_IVEC)
        n = builder.add(n, _broadcast(builder, ir.Constant(_LL_I32, 127), _LL_IVEC))
        bits = builder.shl(n, _broadcast(builder, ir.Constant(_LL_I32, 23), _LL_IVEC))
        return builder.bitcast(bits, _LL_VEC)

    return VEC(m), codegen


def _split_halves(builder, v):
    """(lanes 0..7 of v, lanes 8..15 of v), each moved to lanes 0..7 of a VEC whose lanes 8..15
    are 0."""
    zero = ir.Constant(_LL_VEC, [0.0] * LANES)
    half = LANES // 2
    lo = builder.shuffle_vector(v, zero, ir.Constant(_LL_IVEC, list(range(half)) + [LANES] * half))
    hi = builder.shuffle_vector(v, zero, ir.Constant(_LL_IVEC, list(range(half, LANES)) + [LANES] * half))
    return lo, hi


@intrinsic
def add_halves(typingctx, acc, v):
    """8-lane accumulation in a VEC: lanes k < 8 become (acc[k] + v[k]) + v[k + 8] (the low half
    of v added first, then the high half, as an 8-lane SIMD loop meets them); lanes 8..15 are 0."""
    if not (acc == VEC and v == VEC):
        return None

    def codegen(context, builder, sig, args):
        lo, hi = _split_halves(builder, args[1])
        return builder.fadd(builder.fadd(args[0], lo), hi)

    return VEC(acc, v), codegen


@intrinsic
def exp_scales(typingctx, biased, which):
    """MLAS's AVX2 exp splits 2^m into two factors, from t = 1.5 * 2^23 + m (lane bits b):
    shifted = b << 23, normal = clamp(shifted, -126 << 23, 127 << 23); ``which`` 0 gives the
    normal factor (normal + bits(1.0)), 1 the overflow factor (shifted - normal + bits(1.0)),
    per lane, in 32-bit integer arithmetic."""
    if not (biased == VEC and isinstance(which, types.IntegerLiteral)):
        return None
    want = which.literal_value

    def codegen(context, builder, sig, args):
        vec_i = lambda v: _broadcast(builder, ir.Constant(_LL_I32, v), _LL_IVEC)   # noqa: E731
        shifted = builder.shl(builder.bitcast(args[0], _LL_IVEC), vec_i(23))
        lo, hi, one = vec_i(-0x3F000000), vec_i(0x3F800000), vec_i(0x3F800000)
        normal = builder.select(builder.icmp_signed("<", shifted, lo), lo, shifted)
        normal = builder.select(builder.icmp_signed(">", normal, hi), hi, normal)
        if want == 0:
            bits = builder.add(normal, one)
        else:
            bits = builder.add(builder.sub(shifted, normal), one)
        return builder.bitcast(bits, _LL_VEC)

    return VEC(biased, which), codegen


@intrinsic
def keep_first(typingctx, v, count):
    """v with lanes count.. set to 0."""
    if not (v == VEC and isinstance(count, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        mask = _first_lanes(builder, args[1], sig.args[1], context)
        return builder.select(mask, args[0], ir.Constant(_LL_VEC, [0.0] * LANES))

    return VEC(v, count), codegen


@intrinsic
def mlas_fold(typingctx, acc, wide):
    """The sum of MLAS's softmax accumulator: with ``wide`` (16 lanes) s_k = acc[k + 8] + acc[k],
    else s_k = acc[k] (8 lanes); then ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))."""
    if not (acc == VEC and isinstance(wide, types.BooleanLiteral)):
        return None
    fold = wide.literal_value

    def codegen(context, builder, sig, args):
        lane = lambda i: builder.extract_element(args[0], ir.Constant(_LL_I32, i))   # noqa: E731
        s = [builder.fadd(lane(k + 8), lane(k)) if fold else lane(k) for k in range(8)]
        left = builder.fadd(builder.fadd(s[0], s[1]), builder.fadd(s[2], s[3]))
        right = builder.fadd(builder.fadd(s[4], s[5]), builder.fadd(s[6], s[7]))
        return builder.fadd(left, right)

    return types.float32(acc, wide), codegen


@intrinsic
def square_halves(typingctx, acc, d):
    """8-lane sum of squares in a VEC: lanes k < 8 become fma(d[k + 8], d[k + 8], fma(d[k], d[k],
    acc[k])) (the low half first, as an 8-lane SIMD loop meets them); lanes 8..15 stay 0."""
    if not (acc == VEC and d == VEC):
        return None

    def codegen(context, builder, sig, args):
        lo, hi = _split_halves(builder, args[1])
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_LL_VEC, [_LL_VEC] * 3), f"llvm.fma.v{LANES}f32")
        return builder.call(fn, [hi, hi, builder.call(fn, [lo, lo, args[0]])])

    return VEC(acc, d), codegen


@intrinsic
def lane(typingctx, v, k):
    """Lane ``k`` of v (a float32)."""
    if not (v == VEC and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], builder.trunc(args[1], _LL_I32)
                                       if sig.args[1].bitwidth > 32 else args[1])

    return types.float32(v, k), codegen
