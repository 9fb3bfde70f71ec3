"""refrt's quantization ops against onnxruntime (CPU, graph optimizations off), op by op.

Each case is a one-node model (plus Cast nodes that carry int4/int2/float8 values in and out,
since onnxruntime's Python API cannot feed or fetch them), built with onnx.helper at the opset
the feature needs, and run by onnxruntime and by refrt in its default ("ort") numerics. Integer
outputs must agree exactly; float outputs bit for bit (NaN matches any NaN): every float result
here is one float32 (or float16) operation that both compute identically. Hypothesis draws
shapes, layouts (per tensor / per axis / blocked / per column / per channel), zero points
(including 0, 255, -128, 127), values with exact .5 ties (power-of-two scales), NaN and
infinities, K up to 3000 and M == K. Examples per test: see each ``@settings``.

Cases onnxruntime rejects or gets wrong are tested against the NumPy twins instead (``*_twin``):

* MatMulInteger with a per-row a_zero_point (1-D of length M, or [..., M, 1]): onnxruntime
  refuses it ("input1 zero point must be a scalar or 1D tensor of size 1"); the spec allows it.
* MatMulInteger / QLinearMatMul with a batched B and a 1-D per-column b zero point: onnxruntime
  wants [..., 1, N]; refrt broadcasts the 1-D one too.
* ConvInteger with per-output-channel w_zero_point, and ConvInteger / QLinearConv with
  dilations and auto_pad SAME_UPPER / SAME_LOWER: onnxruntime refuses them. (onnxruntime 1.32
  does take distinct per-channel weight zero points in QLinearConv; they are compared with it.)
* QLinearMatMul whose output type differs from a's, QuantizeLinear with int32 or bfloat16 input:
  onnxruntime has no kernel for them (nor for float4e2m1 / float6 outputs and float8
  QLinearMatMul, which test_quant_ops.py checks against their formulas).
* DequantizeLinear with a non-zero float8 zero point: onnxruntime refuses it.
* onnxruntime's non-saturating float -> float8 rounding (QuantizeLinear and Cast with
  saturate=0) is wrong next to the largest value: float8e4m3fn gives +-448 for |x| in [480, 496)
  (the spec: NaN, the value rounds past 448), float8e5m2 gives NaN for |x| in [61440, 65536)
  (the spec: +-inf). refrt follows the spec there; the float8 test accepts only those two
  departures.
* On AVX2 CPUs without VNNI (and AVX-512 without VNNI) onnxruntime's u8 x s8 MatMulInteger,
  QLinearMatMul, QLinearConv and ConvInteger (uint8 weights, int8 inputs) add int16-saturated
  pairs of products. Every refrt session here is built with ``refrt.host.ort_matching_options()``,
  which turns ``emulate_avx2_u8s8`` on exactly where this machine's onnxruntime saturates (it
  runs onnxruntime on a product that saturates to find out);
  ``test_avx2_emulation_matches_onnxruntime`` checks the switch under QEMU on other CPUs.
"""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import refrt
from refrt.kernels import twins as TW
from refrt.ops._common import window_geometry

from helpers import dql_input
from ort_helpers import avx2_ort_prefix, ort_session, refrt_like_ort, run_models_avx2

pytest.importorskip("onnxruntime")

TP = TensorProto
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

E = helper.np_dtype_to_tensor_dtype
SUB_BYTE = {TP.INT4: (np.int8, -8, 7), TP.UINT4: (np.uint8, 0, 15), TP.INT2: (np.int8, -2, 1),
            TP.UINT2: (np.uint8, 0, 3)}
FLOAT8 = (TP.FLOAT8E4M3FN, TP.FLOAT8E4M3FNUZ, TP.FLOAT8E5M2, TP.FLOAT8E5M2FNUZ)
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30], np.float32)
POW2_SCALES = np.array([0.125, 0.25, 0.5, 1.0, 2.0], np.float32)
ODD_SCALES = np.array([0.1, 0.37, 3.7, 1e-3, 0.0066], np.float32)


# ---------------------------------------------------------------- models and sessions

def vi(name, elem):
    return helper.make_tensor_value_info(name, elem, None)


def one_node_model(op_type, inputs, out_elem, opset, attrs=(), initializers=(), cast_in=(),
                   cast_out=None):
    """inputs: (node input name, elem type fed) pairs ('' for an omitted optional input);
    cast_in: {name: elem} inputs fed as their container type and Cast to elem in the graph;
    cast_out: Cast the node's output to this elem (None: none)."""
    cast_in = dict(cast_in)
    nodes, graph_inputs, names = [], [], []
    inits = {t.name for t in initializers}
    for name, elem in inputs:
        if not name:
            names.append("")
            continue
        if name in cast_in:
            nodes.append(helper.make_node("Cast", [name + "_c"], [name], to=cast_in[name]))
            graph_inputs.append(vi(name + "_c", elem))
        elif name not in inits:
            graph_inputs.append(vi(name, elem))
        names.append(name)
    out = "y0" if cast_out is not None else "y"
    nodes.append(helper.make_node(op_type, names, [out], **dict(attrs)))
    if cast_out is not None:
        nodes.append(helper.make_node("Cast", ["y0"], ["y"], to=cast_out))
    graph = helper.make_graph(nodes, "g", graph_inputs, [vi("y", cast_out or out_elem)],
                              initializer=list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10 if opset >= 21 else 8
    return m


class Pair:
    """The same model in onnxruntime and in refrt, refrt with the options that reproduce
    onnxruntime on this machine (``refrt.host.ort_matching_options``)."""

    def __init__(self, model):
        self.ort = ort_session(model)
        self.ref = refrt_like_ort(model)

    def run(self, feeds):
        return self.ort.run(None, feeds)[0], self.ref.run(None, feeds)[0]


@functools.lru_cache(maxsize=None)
def cached_pair(*key):
    """Sessions for models that take every tensor as a feed: one per op configuration."""
    builder, *args = key
    return Pair(*builder(*args))


def assert_same(expected, got):
    """Exact integers; floats bit for bit with any NaN equal to any NaN."""
    expected, got = np.asarray(expected), np.asarray(got)
    assert got.dtype == expected.dtype and got.shape == expected.shape, (got.dtype, got.shape,
                                                                         expected.dtype, expected.shape)
    if got.dtype.kind == "f":
        nan = np.isnan(expected)
        assert np.array_equal(nan, np.isnan(got))
        bits = f"u{got.dtype.itemsize}"
        assert np.array_equal(expected[~nan].view(bits), got[~nan].view(bits))
    else:
        assert np.array_equal(expected, got), int((expected != got).sum())


# ---------------------------------------------------------------- data

FILLS = ("random", "random", "random", "min", "max", "zero", "extremes")


def int_array(rng, shape, dtype, fill="random"):
    info = np.iinfo(dtype)
    if fill == "random":
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    if fill == "extremes":
        return rng.choice(np.array([info.min, info.max, 0, info.max // 2], dtype=dtype), size=shape)
    return np.full(shape, {"min": info.min, "max": info.max, "zero": 0}[fill], dtype=dtype)


def param_shape(x_shape, layout, axis, block):
    if layout == "tensor":
        return ()
    if layout == "tensor1":
        return (1,)
    if layout == "axis":
        return (x_shape[axis],)
    shape = list(x_shape)
    shape[axis] = -(-x_shape[axis] // block)
    return tuple(shape)


def broadcast_param(p, shape, axis, block):
    """A per-tensor / per-axis / blocked parameter as an array that broadcasts against x."""
    p = np.asarray(p)
    if p.size == 1 and not block:
        return p.reshape(())
    if block:
        return np.repeat(p, block, axis=axis).take(np.arange(shape[axis]), axis=axis)
    return p.reshape([-1 if d == axis else 1 for d in range(len(shape))])


def float_input(rng, shape, scale, axis, block, magnitude, dtype=np.float32):
    """Floats with exact .5 ties against (power-of-two) scales, and NaN / infinities / zeros."""
    x = (rng.standard_normal(shape) * magnitude).astype(np.float32)
    s = np.broadcast_to(broadcast_param(scale.astype(np.float32), shape, axis, block), shape)
    tie = rng.random(shape) < 0.3
    k = rng.integers(-300, 300, shape) + np.float32(0.5)
    x = np.where(tie, (k * s).astype(np.float32), x)
    x = np.where(rng.random(shape) < 0.1, rng.choice(SPECIALS, shape), x)
    with np.errstate(over="ignore"):
        return x.astype(dtype)


layouts = st.fixed_dictionaries({
    "shape": st.lists(st.integers(1, 6), min_size=1, max_size=4),
    "layout": st.sampled_from(["tensor", "tensor1", "axis", "block"]),
    "axis": st.integers(-4, 3),
    "block": st.integers(1, 4),
    "seed": st.integers(0, 2**32 - 1),
})


def draw_layout(c, opset):
    shape = tuple(c["shape"])
    axis = c["axis"] % len(shape)
    layout = c["layout"] if opset >= 21 or c["layout"] != "block" else "axis"
    if layout == "block" and int(np.prod(param_shape(shape, layout, axis, c["block"]))) == 1:
        layout = "tensor1"  # ORT takes a one-element scale as per tensor, without block_size
    return shape, axis, layout, c["block"] if layout == "block" else 0


# ---------------------------------------------------------------- QuantizeLinear

Q_TYPES = {13: (TP.UINT8, TP.INT8), 21: (TP.UINT8, TP.INT8, TP.UINT16, TP.INT16, TP.INT4, TP.UINT4),
           23: (TP.UINT8, TP.INT8, TP.INT16, TP.UINT4), 25: (TP.INT8, TP.UINT16, TP.INT2, TP.UINT2)}


def _quantize_model(opset, x_elem, s_elem, q_elem, with_zp, axis, block, precision):
    attrs = {"axis": axis}
    if block:
        attrs["block_size"] = block
    if not with_zp and q_elem != TP.UINT8:
        attrs["output_dtype"] = q_elem
    if precision:
        attrs["precision"] = precision
    container = SUB_BYTE[q_elem][0] if q_elem in SUB_BYTE else None
    zp_fed = E(np.dtype(container)) if container else q_elem
    inputs = [("x", x_elem), ("s", s_elem), ("z" if with_zp else "", zp_fed)]
    model = one_node_model("QuantizeLinear", inputs, q_elem, opset, attrs.items(),
                           cast_in={"z": q_elem} if container and with_zp else (),
                           cast_out=E(np.dtype(container)) if container else None)
    return (model,)


@settings(max_examples=300, **SETTINGS)
@given(layouts, st.sampled_from(sorted(Q_TYPES)), st.data())
def test_quantize_linear_matches_onnxruntime(c, opset, data):
    rng = np.random.default_rng(c["seed"])
    shape, axis, layout, block = draw_layout(c, opset)
    q_elem = data.draw(st.sampled_from(Q_TYPES[opset]))
    x_dt = data.draw(st.sampled_from([np.float32, np.float16] if opset >= 21 else [np.float32]))
    s_dt = x_dt if opset < 23 else data.draw(st.sampled_from([np.float32, np.float16]))
    precision = data.draw(st.sampled_from([0, 0, TP.FLOAT, TP.FLOAT16])) if opset >= 23 else 0
    with_zp = data.draw(st.booleans()) or (opset < 21 and q_elem != TP.UINT8)
    pshape = param_shape(shape, layout, axis, block)
    scale = rng.choice(np.concatenate([POW2_SCALES, ODD_SCALES]), pshape).astype(s_dt)
    if q_elem in SUB_BYTE:
        container, lo, hi = SUB_BYTE[q_elem]
        zp = rng.choice(np.array([lo, hi, 0, (lo + hi) // 2]), pshape).astype(container)
    else:
        zp = int_array(rng, pshape, helper.tensor_dtype_to_np_dtype(q_elem),
                       data.draw(st.sampled_from(["random", "extremes", "zero"])))
    magnitude = data.draw(st.sampled_from([1.0, 100.0, 1e4]))
    x = float_input(rng, shape, scale, axis, block, magnitude, x_dt)
    pair = cached_pair(_quantize_model, opset, E(np.dtype(x_dt)), E(np.dtype(s_dt)), q_elem, with_zp,
                       axis, block, precision)
    feeds = {"x": x, "s": scale}
    if with_zp:
        feeds["z_c" if q_elem in SUB_BYTE else "z"] = zp
    assert_same(*pair.run(feeds))


def _quantize_float8_model(opset, x_elem, q_elem, saturate, axis):
    inputs = [("x", x_elem), ("s", x_elem if opset < 23 else TP.FLOAT), ("z", TP.FLOAT)]
    return (one_node_model("QuantizeLinear", inputs, q_elem, opset,
                           {"saturate": saturate, "axis": axis}.items(), cast_in={"z": q_elem},
                           cast_out=TP.FLOAT),)  # exact; ORT cannot return the fnuz types


@settings(max_examples=100, **SETTINGS)
@given(layouts, st.sampled_from([21, 23]), st.sampled_from(FLOAT8), st.sampled_from([0, 1]),
       st.sampled_from([np.float32, np.float16]))
def test_quantize_linear_float8_matches_onnxruntime(c, opset, q_elem, saturate, x_dt):
    rng = np.random.default_rng(c["seed"])
    shape, axis, layout, block = draw_layout(c, 13)  # float8: per tensor or per axis
    pshape = param_shape(shape, layout, axis, 0)
    s_dt = x_dt if opset < 23 else np.float32
    scale = rng.choice(np.concatenate([POW2_SCALES, ODD_SCALES]), pshape).astype(s_dt)
    x = float_input(rng, shape, scale, axis, 0, rng.choice([1.0, 100.0, 1e5]), x_dt)
    pair = cached_pair(_quantize_float8_model, opset, E(np.dtype(x_dt)), q_elem, saturate, axis)
    expected, got = pair.run({"x": x, "s": scale, "z_c": np.zeros(pshape, np.float32)})
    if not saturate:  # ORT's float8 rounding bugs (module docstring): keep the spec's result there
        q = np.abs(x.astype(np.float32) / broadcast_param(scale.astype(np.float32), shape, axis, 0))
        ort_bug = ((q_elem == TP.FLOAT8E4M3FN) & np.isnan(got) & (np.abs(expected) == 448)
                   & (q >= 470) & (q < 500))
        ort_bug |= ((q_elem == TP.FLOAT8E5M2) & np.isinf(got) & np.isnan(expected)
                    & (q >= 61000) & (q < 66000))
        expected = np.where(ort_bug, got, expected)
    assert_same(expected, got)


# ---------------------------------------------------------------- DequantizeLinear

DQ_TYPES = {13: (TP.UINT8, TP.INT8, TP.INT32),
            21: (TP.UINT8, TP.INT8, TP.UINT16, TP.INT16, TP.INT32, TP.INT4, TP.UINT4),
            23: (TP.UINT8, TP.INT16, TP.INT4), 25: (TP.INT8, TP.UINT16, TP.INT2, TP.UINT2)}


def _dequantize_model(opset, q_elem, s_elem, with_zp, axis, block, out_elem):
    attrs = {"axis": axis}
    if block:
        attrs["block_size"] = block
    if out_elem is not None:
        attrs["output_dtype"] = out_elem
    sub = q_elem in SUB_BYTE
    fed = E(np.dtype(SUB_BYTE[q_elem][0])) if sub else q_elem
    inputs = [("x", fed), ("s", s_elem), ("z" if with_zp else "", fed)]
    cast_in = {"x": q_elem, "z": q_elem} if sub else {}
    return (one_node_model("DequantizeLinear", inputs, out_elem or s_elem, opset, attrs.items(),
                           cast_in=cast_in),)


@settings(max_examples=200, **SETTINGS)
@given(layouts, st.sampled_from(sorted(DQ_TYPES)), st.data())
def test_dequantize_linear_matches_onnxruntime(c, opset, data):
    rng = np.random.default_rng(c["seed"])
    shape, axis, layout, block = draw_layout(c, opset)
    q_elem = data.draw(st.sampled_from(DQ_TYPES[opset]))
    s_dt = data.draw(st.sampled_from([np.float32, np.float16] if opset >= 19 else [np.float32]))
    out_elem = data.draw(st.sampled_from([None, TP.FLOAT, TP.FLOAT16])) if opset >= 23 else None
    if q_elem == TP.INT32:
        layout, block = ("tensor", 0) if opset < 21 else (layout, block)
    pshape = param_shape(shape, layout, axis, block)
    with_zp = data.draw(st.booleans())
    if q_elem in SUB_BYTE:
        container, lo, hi = SUB_BYTE[q_elem]
        x = rng.integers(lo, hi, shape, endpoint=True).astype(container)
        zp = rng.integers(lo, hi, pshape, endpoint=True).astype(container)
    else:
        dt = helper.tensor_dtype_to_np_dtype(q_elem)
        x = int_array(rng, shape, dt, data.draw(st.sampled_from(FILLS)))
        zp = int_array(rng, pshape, dt, data.draw(st.sampled_from(["random", "extremes", "zero"])))
    scale = rng.choice(np.concatenate([POW2_SCALES, ODD_SCALES, [3e-5, 7.7]]), pshape).astype(s_dt)
    pair = cached_pair(_dequantize_model, opset, q_elem, E(np.dtype(s_dt)), with_zp, axis, block,
                       out_elem)
    sub = q_elem in SUB_BYTE
    feeds = {"x_c" if sub else "x": x, "s": scale}
    if with_zp:
        feeds["z_c" if sub else "z"] = zp
    assert_same(*pair.run(feeds))


def _dequantize_float8_model(q_elem, s_elem, axis):
    inputs = [("x", TP.FLOAT), ("s", s_elem), ("z", TP.FLOAT)]
    return (one_node_model("DequantizeLinear", inputs, s_elem, 21, {"axis": axis}.items(),
                           cast_in={"x": q_elem, "z": q_elem}),)


@settings(max_examples=60, **SETTINGS)
@given(layouts, st.sampled_from(FLOAT8), st.sampled_from([np.float32, np.float16]))
def test_dequantize_linear_float8_matches_onnxruntime(c, q_elem, s_dt):
    rng = np.random.default_rng(c["seed"])
    shape, axis, layout, _ = draw_layout(c, 13)
    pshape = param_shape(shape, layout, axis, 0)
    f8 = helper.tensor_dtype_to_np_dtype(q_elem)
    bits = rng.integers(0, 256, shape).astype(np.uint8).view(f8)
    x = bits.astype(np.float32)  # every float8 value, NaN included
    scale = rng.choice(np.concatenate([POW2_SCALES, ODD_SCALES]), pshape).astype(s_dt)
    pair = cached_pair(_dequantize_float8_model, q_elem, E(np.dtype(s_dt)), axis)
    assert_same(*pair.run({"x_c": x, "s": scale, "z_c": np.zeros(pshape, np.float32)}))


@pytest.mark.parametrize("opset", [10, 13, 19, 21])
@pytest.mark.parametrize("op_type", ["QuantizeLinear", "DequantizeLinear"])
def test_zero_d_input_keeps_its_shape(op_type, opset):
    """A 0-d input gives a 0-d output, as in onnxruntime and the spec (found in a PP-OCR model
    quantized to QDQ by onnxruntime's tool: 102 such nodes)."""
    x = np.array(1.7, np.float32) if op_type == "QuantizeLinear" else np.array(200, np.uint8)
    s, z = np.float32(0.25), np.uint8(3)
    inputs = [("x", E(x.dtype)), ("s", TP.FLOAT), ("z", TP.UINT8)]
    model = one_node_model(op_type, inputs, TP.UINT8 if op_type == "QuantizeLinear" else TP.FLOAT, opset,
                           initializers=[numpy_helper.from_array(np.asarray(s), "s"),
                                         numpy_helper.from_array(np.asarray(z), "z")])
    expected, got = Pair(model).run({"x": x})
    assert expected.shape == () and got.shape == ()
    assert_same(expected, got)


# ---------------------------------------------------------------- DynamicQuantizeLinear

@settings(max_examples=40, **SETTINGS)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=3),
       st.sampled_from(["random", "zero", "positive", "negative", "ties"]), st.integers(0, 2**32 - 1))
def test_dynamic_quantize_linear_matches_onnxruntime(shape, kind, seed):
    rng = np.random.default_rng(seed)
    x = dql_input(rng, shape, kind)
    if x.size == 0:
        return
    model = one_node_model("DynamicQuantizeLinear", [("x", TP.FLOAT)], TP.UINT8, 11)
    model.graph.node[0].output.extend(["s", "zp"])
    model.graph.output.extend([vi("s", TP.FLOAT), vi("zp", TP.UINT8)])
    ort_out = cached_ort(model.SerializeToString()).run(None, {"x": x})
    ref_out = refrt.run(model, {"x": x})
    for e, g in zip(ort_out, ref_out):
        assert_same(e, g)


@functools.lru_cache(maxsize=None)
def cached_ort(model_bytes):
    import onnx

    return ort_session(onnx.load_from_string(model_bytes))


# ---------------------------------------------------------------- MatMulInteger

gemm_cases = st.fixed_dictionaries({
    "m": st.integers(1, 24),
    "k": st.one_of(st.integers(1, 70), st.integers(1000, 3000)),
    "n": st.integers(1, 24),
    "square": st.booleans(),                                  # M == K
    "a_batch": st.sampled_from([(), (), (2,), (2, 3), (1, 2)]),
    "b_batch": st.sampled_from([(), (), (), (2,), (3, 1)]),
    "a_dtype": st.sampled_from([np.uint8, np.int8]),
    "b_dtype": st.sampled_from([np.uint8, np.int8]),
    "a_fill": st.sampled_from(FILLS),
    "b_fill": st.sampled_from(FILLS),
    "a_zp": st.sampled_from(["none", "scalar", "one"]),
    "b_zp": st.sampled_from(["none", "scalar", "column"]),
    "const_b": st.booleans(),
    "seed": st.integers(0, 2**32 - 1),
})


def make_gemm_case(c):
    rng = np.random.default_rng(c["seed"])
    m, k, n = c["m"], c["k"], c["n"]
    if c["square"]:
        m = k = min(k, 256)
    a_batch, b_batch = c["a_batch"], c["b_batch"]
    try:
        np.broadcast_shapes(a_batch, b_batch)
    except ValueError:
        b_batch = ()
    if c["k"] > 1000 and (a_batch or b_batch):  # keep batched large-K cases small
        m, n = min(m, 8), min(n, 8)
    a = int_array(rng, a_batch + (m, k), c["a_dtype"], c["a_fill"])
    b = int_array(rng, b_batch + (k, n), c["b_dtype"], c["b_fill"])
    az = {"none": None, "scalar": int_array(rng, (), c["a_dtype"], rng.choice(["random", "min", "max"])),
          "one": int_array(rng, (1,), c["a_dtype"])}[c["a_zp"]]
    bz = None
    if c["b_zp"] == "scalar":
        bz = int_array(rng, (), c["b_dtype"], rng.choice(["random", "min", "max"]))
    elif c["b_zp"] == "column":  # ORT's per-column layout: [N] for a 2-D B, [..., 1, N] batched
        bz = int_array(rng, b_batch + ((1, n) if b_batch else (n,)), c["b_dtype"])
    return a, b, az, bz


def _int_product_model(op_type, a, b, az, bz, const_b, opset=10):
    inits = [numpy_helper.from_array(b, "B")] if const_b else []
    inputs = [("A", E(a.dtype)), ("B", E(b.dtype)), ("az" if az is not None else "", E(a.dtype)),
              ("bz" if bz is not None else "", E(b.dtype))]
    return one_node_model(op_type, inputs, TP.INT32, opset, initializers=inits)


def _feeds(**arrays):
    return {k: v for k, v in arrays.items() if v is not None}


@settings(max_examples=150, **SETTINGS)
@given(gemm_cases)
def test_matmul_integer_matches_onnxruntime(c):
    a, b, az, bz = make_gemm_case(c)
    if c["const_b"]:
        pair = Pair(_int_product_model("MatMulInteger", a, b, az, bz, True))
        feeds = _feeds(A=a, az=az, bz=bz)
    else:
        pair = _cached_gemm_pair(a.dtype.str, b.dtype.str, az is not None, bz is not None)
        feeds = _feeds(A=a, B=b, az=az, bz=bz)
    assert_same(*pair.run(feeds))


@functools.lru_cache(maxsize=None)
def _cached_gemm_pair(a_dt, b_dt, has_az, has_bz):
    a, b = np.zeros((1, 1), a_dt), np.zeros((1, 1), b_dt)
    az = np.zeros((), a_dt) if has_az else None
    bz = np.zeros((), b_dt) if has_bz else None
    return Pair(_int_product_model("MatMulInteger", a, b, az, bz, False))


@settings(max_examples=40, **SETTINGS)
@given(gemm_cases)
def test_matmul_integer_per_row_a_zero_point_twin(c):
    """ORT refuses per-row a_zero_point: refrt against the NumPy twin, row by row."""
    a, b, _, _ = make_gemm_case(dict(c, a_batch=c["a_batch"][:1], b_batch=()))
    rng = np.random.default_rng(c["seed"] + 1)
    m, n = a.shape[-2], b.shape[-1]
    nd = c["a_zp"] == "scalar" and a.ndim == 3
    az = int_array(rng, a.shape[:-1] + (1,) if nd else (m,), a.dtype)
    bz = int_array(rng, (n,), b.dtype) if c["b_zp"] != "none" else None
    b_batched = np.broadcast_to(b, (2,) + b.shape) if c["const_b"] else b  # 1-D b_zp, batched B
    model = _int_product_model("MatMulInteger", a, b_batched, az, bz, False)
    (got,) = refrt.run(model, _feeds(A=a, B=np.ascontiguousarray(b_batched), az=az, bz=bz))
    a3 = a.reshape((-1,) + a.shape[-2:])
    az3 = az.reshape(a3.shape[0], m) if nd else np.broadcast_to(az, (a3.shape[0], m))
    expect = np.stack([TW.gemm_int8_twin(a3[i], b, az3[i], 0 if bz is None else bz)
                       for i in range(a3.shape[0])]).reshape(a.shape[:-1] + (n,))
    assert np.array_equal(got, np.broadcast_to(expect, got.shape))


# ---------------------------------------------------------------- ConvInteger / QLinearConv

conv_cases = st.fixed_dictionaries({
    "nd": st.sampled_from([1, 2, 2, 3]),
    "batch": st.integers(1, 2),
    "group": st.sampled_from([1, 1, 2, 3]),
    "cg": st.one_of(st.integers(1, 3), st.integers(8, 20)),
    "mg": st.integers(1, 3),
    "depthwise": st.booleans(),
    "x_dtype": st.sampled_from([np.uint8, np.int8]),
    "w_dtype": st.sampled_from([np.uint8, np.int8]),
    "x_fill": st.sampled_from(FILLS),
    "w_fill": st.sampled_from(FILLS),
    "auto_pad": st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
    "seed": st.integers(0, 2**32 - 1),
})


def make_conv_case(c, limit_weights=False, same_dilations=False):
    rng = np.random.default_rng(c["seed"])
    nd = c["nd"]
    group, cg, mg = c["group"], c["cg"], c["mg"]
    if c["depthwise"]:
        group, cg, mg = max(group, 1) * 2, 1, 1
    kernel = [int(rng.integers(1, 4 if nd < 3 else 3)) for _ in range(nd)]
    dil = [int(rng.integers(1, 3)) for _ in range(nd)]
    strides = [int(rng.integers(1, 3)) for _ in range(nd)]
    spatial = [int(rng.integers(dil[d] * (kernel[d] - 1) + 1, dil[d] * (kernel[d] - 1) + (9 if nd < 3 else 5)))
               for d in range(nd)]
    attrs = {"group": group, "strides": strides, "auto_pad": c["auto_pad"]}
    if c["auto_pad"] == "NOTSET":
        attrs["pads"] = [int(rng.integers(0, 3)) for _ in range(2 * nd)]
        attrs["dilations"] = dil
    elif c["auto_pad"] == "VALID" or same_dilations:  # ORT: no dilations with SAME_*
        attrs["dilations"] = dil
    x = int_array(rng, [c["batch"], group * cg] + spatial, c["x_dtype"], c["x_fill"])
    w = int_array(rng, [group * mg, cg] + kernel, c["w_dtype"], c["w_fill"])
    if limit_weights and c["x_dtype"] == np.uint8 and c["w_dtype"] == np.int8:
        w = np.clip(w, -64, 63).astype(np.int8)
    x_zp = int_array(rng, (), c["x_dtype"], rng.choice(["random", "min", "max", "zero"]))
    return rng, x, w, x_zp, attrs


@settings(max_examples=100, **SETTINGS)
@given(conv_cases, st.booleans())
def test_conv_integer_matches_onnxruntime(c, with_w_zp):
    rng, x, w, x_zp, attrs = make_conv_case(c)
    w_zp = int_array(rng, (), w.dtype) if with_w_zp else None
    inputs = [("x", E(x.dtype)), ("w", E(w.dtype)), ("xz", E(x.dtype)),
              ("wz" if with_w_zp else "", E(w.dtype))]
    model = one_node_model("ConvInteger", inputs, TP.INT32, 10, attrs.items(),
                           initializers=[numpy_helper.from_array(w, "w")])
    assert_same(*Pair(model).run(_feeds(x=x, xz=x_zp, wz=w_zp)))


@settings(max_examples=25, **SETTINGS)
@given(conv_cases)
def test_conv_integer_per_channel_w_zero_point_twin(c):
    """ORT refuses a per-output-channel w_zero_point for ConvInteger, and dilations with SAME_*
    padding: refrt against the twin."""
    rng, x, w, x_zp, attrs = make_conv_case(c, same_dilations=True)
    w_zp = int_array(rng, (w.shape[0],), w.dtype)
    model = one_node_model("ConvInteger", [("x", E(x.dtype)), ("w", E(w.dtype)), ("xz", E(x.dtype)),
                                           ("wz", E(w.dtype))], TP.INT32, 10, attrs.items())
    (got,) = refrt.run(model, {"x": x, "w": w, "xz": x_zp, "wz": w_zp})
    win = window_geometry(x.shape[2:], w.shape[2:], attrs["strides"], attrs.get("dilations"),
                          attrs.get("pads"), attrs["auto_pad"])
    expect = TW.conv_int8_twin(x, w, int(x_zp), w_zp, attrs["group"], list(win.pads_begin + win.pads_end),
                               list(win.strides), list(win.dilations))
    assert np.array_equal(got, expect)


def _requant_scales(rng, n_channels):
    """a/w/y scales whose float32 multiplier often makes exact .5 ties (powers of two), or not."""
    if rng.random() < 0.5:
        return (rng.choice(POW2_SCALES), rng.choice(POW2_SCALES, n_channels) / 64, rng.choice(POW2_SCALES) * 4)
    return (rng.choice(ODD_SCALES), rng.uniform(1e-4, 1e-2, n_channels), rng.uniform(0.01, 4))


@settings(max_examples=120, **SETTINGS)
@given(conv_cases, st.sampled_from(["scalar", "channel"]), st.sampled_from(["scalar", "equal", "channel"]),
       st.booleans(), st.booleans())
def test_qlinear_conv_matches_onnxruntime(c, w_scale_kind, w_zp_kind, with_bias, const_w):
    if c["x_dtype"] == np.int8:  # ORT: int8 x only with int8 w (and y of x's type)
        c = dict(c, w_dtype=np.int8)
    rng, x, w, x_zp, attrs = make_conv_case(c)
    m = w.shape[0]
    xs, ws, ys = (np.asarray(v, np.float32) for v in
                  _requant_scales(rng, m if w_scale_kind == "channel" else 1))
    ws = ws.reshape(-1 if w_scale_kind == "channel" else ())
    w_zp = {"scalar": int_array(rng, (), w.dtype), "equal": np.full(m, int_array(rng, (), w.dtype)),
            "channel": int_array(rng, (m,), w.dtype)}[w_zp_kind]
    y_zp = int_array(rng, (), x.dtype, rng.choice(["random", "min", "max"]))
    bias = rng.integers(-2**20, 2**20, m).astype(np.int32) if with_bias else None
    feeds = _feeds(x=x, xs=xs, xz=x_zp, w=w, ws=ws, wz=w_zp, ys=ys, yz=y_zp, B=bias)
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"] + (["B"] if with_bias else [])
    inits = [numpy_helper.from_array(np.asarray(feeds.pop(n)), n) for n in ("w", "wz", "ws")] if const_w else []
    inputs = [(n, E(np.asarray(v).dtype)) for n, v in
              zip(names, (x, xs, x_zp, w, ws, w_zp, ys, y_zp, bias))]
    model = one_node_model("QLinearConv", inputs, E(x.dtype), 10, attrs.items(), initializers=inits)
    assert_same(*Pair(model).run(feeds))


# ---------------------------------------------------------------- QLinearMatMul

@settings(max_examples=150, **SETTINGS)
@given(gemm_cases, st.sampled_from([10, 21]), st.sampled_from([np.float32, np.float16]),
       st.sampled_from(["scalar", "column"]))
def test_qlinear_matmul_matches_onnxruntime(c, opset, s_dt, b_kind):
    c = dict(c, a_zp="scalar", b_zp="scalar" if b_kind == "scalar" else "column")
    if c["a_dtype"] == np.int8:  # ORT: int8 a only with int8 b
        c["b_dtype"] = np.int8
    a, b, az, bz = make_gemm_case(c)
    s_dt = s_dt if opset >= 21 else np.float32
    rng = np.random.default_rng(c["seed"] + 7)
    a_s, b_s, y_s = _requant_scales(rng, bz.size)
    b_s = np.asarray(b_s).reshape(bz.shape).astype(s_dt)
    a_s, y_s = np.asarray(a_s, s_dt), np.asarray(y_s, s_dt)
    y_zp = int_array(rng, (), a.dtype, rng.choice(["random", "min", "max"]))
    names = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]
    values = [a, a_s, az, b, b_s, bz, y_s, y_zp]
    feeds = dict(zip(names, values))
    inits = [numpy_helper.from_array(feeds.pop("b"), "b")] if c["const_b"] else []
    model = one_node_model("QLinearMatMul", [(nm, E(v.dtype)) for nm, v in zip(names, values)],
                           E(a.dtype), opset, initializers=inits)
    assert_same(*Pair(model).run(feeds))


@settings(max_examples=30, **SETTINGS)
@given(gemm_cases)
def test_qlinear_matmul_other_output_type_twin(c):
    """ORT has no QLinearMatMul whose y type differs from a's: refrt against the twins."""
    a, b, az, bz = make_gemm_case(dict(c, a_zp="scalar", b_zp="scalar", a_batch=(), b_batch=()))
    y_dt = np.int8 if a.dtype == np.uint8 else np.uint8
    rng = np.random.default_rng(c["seed"] + 3)
    a_s, b_s, y_s = (np.float32(v) for v in (0.02, rng.uniform(1e-3, 1e-2), 0.5))
    y_zp = int_array(rng, (), y_dt)
    model = one_node_model("QLinearMatMul", [(n, E(np.asarray(v).dtype)) for n, v in
                                             zip(["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
                                                 [a, a_s, az, b, b_s, bz, y_s, y_zp])], E(np.dtype(y_dt)), 21)
    (got,) = refrt.run(model, {"a": a, "as": np.asarray(a_s), "az": az, "b": b, "bs": np.asarray(b_s),
                               "bz": bz, "ys": np.asarray(y_s), "yz": y_zp})
    acc = TW.gemm_int8_twin(a, b, int(az), int(bz))
    assert np.array_equal(got, TW.requantize_twin(acc, a_s * b_s / y_s, int(y_zp), out_dtype=y_dt))


# ---------------------------------------------------------------- beyond onnxruntime's kernels

@settings(max_examples=30, **SETTINGS)
@given(layouts, st.sampled_from([np.int32, ml_dtypes.bfloat16]), st.sampled_from([np.uint8, np.int8]))
def test_quantize_linear_int32_and_bfloat16_inputs_twin(c, x_dt, q_dt):
    """ORT has no QuantizeLinear for int32 or bfloat16 inputs: refrt against the twin (opset 21:
    float32 division in the default numerics)."""
    rng = np.random.default_rng(c["seed"])
    shape, axis, layout, block = draw_layout(c, 21)
    pshape = param_shape(shape, layout, axis, block)
    s_dt = np.float32 if x_dt == np.int32 else x_dt
    scale = rng.choice(POW2_SCALES, pshape).astype(s_dt)
    if x_dt == np.int32:
        x = rng.integers(-2**20, 2**20, shape).astype(np.int32)
    else:
        x = float_input(rng, shape, scale.astype(np.float32), axis, block, 100.0, x_dt)
    zp = int_array(rng, pshape, q_dt)
    model = one_node_model("QuantizeLinear", [("x", E(np.dtype(x_dt))), ("s", E(np.dtype(s_dt))),
                                              ("z", E(np.dtype(q_dt)))], E(np.dtype(q_dt)), 21,
                           {"axis": axis, "block_size": block}.items())
    (got,) = refrt.run(model, {"x": x, "s": scale, "z": zp})
    expect = TW.quantize_linear_twin(x.astype(np.float32), scale.astype(np.float32), zp, axis=axis,
                                     block_size=block)
    assert np.array_equal(got, expect)


@settings(max_examples=20, **SETTINGS)
@given(layouts, st.sampled_from(FLOAT8))
def test_dequantize_linear_float8_nonzero_zero_point_twin(c, q_elem):
    """ORT refuses non-zero float8 zero points: refrt computes (x - zp) * scale in float32."""
    rng = np.random.default_rng(c["seed"])
    shape, axis, layout, _ = draw_layout(c, 13)
    pshape = param_shape(shape, layout, axis, 0)
    f8 = helper.tensor_dtype_to_np_dtype(q_elem)
    x = rng.standard_normal(shape).astype(f8)
    zp = rng.standard_normal(pshape).astype(f8)
    scale = rng.choice(ODD_SCALES, pshape).astype(np.float32)
    (got,) = refrt.run(_dequantize_float8_model(q_elem, TP.FLOAT, axis)[0],
                       {"x_c": x.astype(np.float32), "s": scale, "z_c": zp.astype(np.float32)})
    s_b = broadcast_param(scale, shape, axis, 0)
    z_b = broadcast_param(zp.astype(np.float32), shape, axis, 0)
    assert np.array_equal((x.astype(np.float32) - z_b) * s_b, got, equal_nan=True)


# ---------------------------------------------------------------- AVX2 emulation

def test_avx2_emulation_matches_onnxruntime(tmp_path):
    """MatMulInteger, QLinearMatMul, ConvInteger and QLinearConv with ``emulate_avx2_u8s8`` reproduce
    onnxruntime's u8 x s8 results on an AVX2 CPU without VNNI bit for bit, saturation included:
    natively on such a CPU, under ``qemu-x86_64 -cpu Haswell`` elsewhere."""
    prefix, reason = avx2_ort_prefix()
    if prefix is None:
        pytest.skip(reason)
    rng = np.random.default_rng(7)
    runs = []
    for i, (batch, m, k, n) in enumerate([((), 16, 64, 8), ((2,), 5, 255, 7), ((), 9, 768, 33),
                                          ((3,), 4, 31, 16)]):
        a = rng.integers(0, 256, batch + (m, k)).astype(np.uint8)
        a[..., ::2, :] = 255  # worst case for the int16 pairs
        b = rng.choice(np.array([-128, 127, -100, 90], np.int8), size=(k, n))
        az = np.array(rng.integers(0, 256), np.uint8)
        bz = rng.integers(-128, 128, n).astype(np.int8) if i % 2 else np.array(rng.integers(-128, 128), np.int8)
        const_b = i % 2 == 0
        model = _int_product_model("MatMulInteger", a, b, az, bz, const_b, opset=10)
        runs.append((model, _feeds(A=a, B=None if const_b else b, az=az, bz=bz)))
        s = np.float32(2.0**-10)
        names = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]
        values = [a, s, az, b, s, bz, np.float32(2.0**-4), np.uint8(128)]
        inputs = [(nm, E(np.asarray(v).dtype)) for nm, v in zip(names, values)]
        qmodel = one_node_model("QLinearMatMul", inputs, TP.UINT8, 10,
                                initializers=[numpy_helper.from_array(b, "b")])
        runs.append((qmodel, {nm: np.asarray(v) for nm, v in zip(names, values) if nm != "b"}))
    # ConvInteger: onnxruntime multiplies uint8 weights (its GEMM's A) by int8 inputs
    for i, (group, cg, mg, kernel, spatial, pads) in enumerate([
            (1, 1, 1, [3], [9], [1, 1]), (1, 5, 4, [3, 3], [6, 7], [1, 0, 2, 1]),
            (2, 3, 2, [2, 2], [5, 5], [0, 0, 0, 0]), (1, 8, 3, [1, 1], [4, 4], [0, 0, 0, 0]),
            (3, 1, 1, [3, 3], [5, 4], [1, 1, 1, 1]), (1, 4, 1, [2, 2, 2], [3, 4, 3], [0] * 6)]):
        x = rng.choice(np.array([-128, 127, -100, 90], np.int8), size=[2, group * cg] + spatial)
        w = rng.integers(200, 256, [group * mg, cg] + kernel).astype(np.uint8)
        xz, wz = np.int8(rng.integers(-128, 128)), np.uint8(rng.integers(0, 256))
        inputs = [("x", TP.INT8), ("w", TP.UINT8), ("xz", TP.INT8), ("wz" if i % 2 else "", TP.UINT8)]
        model = one_node_model("ConvInteger", inputs, TP.INT32, 10, [("pads", pads), ("group", group)],
                               initializers=[numpy_helper.from_array(w, "w")] if i % 3 else [])
        runs.append((model, _feeds(x=x, w=None if i % 3 else w, xz=xz, wz=wz if i % 2 else None)))
    # QLinearConv: uint8 inputs x int8 weights; depthwise with distinct per-channel weight zero
    # points runs on onnxruntime's GEMM too (one value: its exact depthwise kernel)
    for group, cg, mg, w_zp in [(1, 5, 4, np.int8(3)), (4, 1, 1, np.array([0, 3, -2, 7], np.int8)),
                                (4, 1, 1, np.full(4, 2, np.int8)), (2, 3, 2, np.int8(0))]:
        x = rng.integers(200, 256, (1, group * cg, 6, 5)).astype(np.uint8)
        w = rng.choice(np.array([-128, 127, -120, 110], np.int8), size=(group * mg, cg, 3, 3))
        names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
        vals = [x, np.float32(1.0), np.uint8(0), w, np.float32(1.0), w_zp, np.float32(2048.0), np.uint8(128)]
        model = one_node_model("QLinearConv", [(nm, E(np.asarray(v).dtype)) for nm, v in zip(names, vals)],
                               TP.UINT8, 10, [("pads", [1, 1, 1, 1]), ("group", group)],
                               initializers=[numpy_helper.from_array(np.asarray(v), nm)
                                             for nm, v in zip(names, vals) if nm != "x"])
        runs.append((model, {"x": x}))
    ort_results = run_models_avx2(runs, tmp_path, prefix)
    saturated = {}
    for (model, feeds), (expected,) in zip(runs, ort_results):
        (emulated,) = refrt.run(model, feeds, emulate_avx2_u8s8=True)
        (exact,) = refrt.run(model, feeds)
        assert_same(expected, emulated)
        op_type = model.graph.node[-1].op_type
        saturated[op_type] = saturated.get(op_type, 0) + int((exact != emulated).sum())
    # the cases do exercise the saturation, for every op
    assert set(saturated) == {"MatMulInteger", "QLinearMatMul", "ConvInteger", "QLinearConv"}
    assert all(saturated.values()), saturated
