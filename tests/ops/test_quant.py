"""Focused tests of the quantization ops (refrt/ops/quant.py): errors, read-only inputs, packing of
constant weights, the AVX2 emulation switch, zero-point axes, numerics modes and small types.

Differential tests against onnxruntime live in test_quant_vs_ort.py.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

import refrt
from refrt import kernels as K
from refrt.kernels import twins as T
from refrt.ops import quant
from refrt.registry import NodeContext, lookup
from refrt.session import SessionOptions

from helpers import const, model, readonly, vi

TP = TensorProto
RNG = np.random.default_rng(2024)


def ctx_for(op_type, opset=21, numerics="ort", emulate=False, constant=()):
    opts = SessionOptions(numerics=numerics, emulate_avx2_u8s8=emulate)
    return NodeContext("n", op_type, "ai.onnx", opset, 1, options=opts, constant_inputs=constant)


def call(op_type, *inputs, opset=21, numerics="ort", emulate=False, **attrs):
    """The registered implementation at ``opset``, called as the executor calls it."""
    impl = lookup(op_type, "", opset)
    assert impl is not None, f"{op_type} is not registered at opset {opset}"
    if impl.wants_ctx:
        attrs["ctx"] = ctx_for(op_type, opset, numerics, emulate)
    return impl.fn(*inputs, **attrs)


def one_node(op_type, inputs, outputs, opset=21, initializers=(), **attrs):
    """A one-node model; inputs: (name, elem type, shape) for graph inputs."""
    names = [n for n, *_ in inputs] + [t.name for t in initializers]
    node = helper.make_node(op_type, [n for n in names], [o for o, _ in outputs], **attrs)
    return model([node], [vi(n, e, s) for n, e, s in inputs], [vi(o, e) for o, e in outputs],
                 initializers=initializers, opset=opset)


# ---------------------------------------------------------------- errors with clear messages

def test_quantize_rejects_mismatched_zero_point_shapes_and_types():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="zero point shape"):
        call("QuantizeLinear", x, np.ones(3, np.float32), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"x.shape\[1\] = 3"):
        call("QuantizeLinear", x, np.ones(4, np.float32), np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="blocks of 2"):
        call("QuantizeLinear", x, np.ones((2, 3, 3), np.float32), np.zeros((2, 3, 3), np.uint8),
             axis=2, block_size=2)
    with pytest.raises(TypeError, match="output_dtype"):
        call("QuantizeLinear", x, np.float32(1), np.uint8(0), output_dtype=TP.INT8)
    with pytest.raises(ValueError, match="before opset 13"):
        call("QuantizeLinear", x, np.ones(3, np.float32), np.zeros(3, np.uint8), opset=10)
    with pytest.raises(TypeError, match="zero point type"):
        call("DequantizeLinear", np.zeros(3, np.uint8), np.float32(1), np.int8(0))
    with pytest.raises(TypeError, match="output_dtype"):
        call("DequantizeLinear", np.zeros(3, np.uint8), np.array(2, ml_dtypes.float8_e8m0fnu),
             opset=24)


def test_integer_products_reject_bad_zero_points():
    a = np.zeros((3, 4), np.uint8)
    b = np.zeros((4, 5), np.int8)
    with pytest.raises(TypeError, match=r"type of its input \(uint8\)"):
        call("MatMulInteger", a, b, np.int8(0))
    with pytest.raises(ValueError, match="one per column"):
        call("MatMulInteger", a, b, None, np.zeros(4, np.int8))
    with pytest.raises(ValueError, match="one per row"):
        call("MatMulInteger", a, b, np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 1\]"):
        call("MatMulInteger", a, b, np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="inner dimensions"):
        call("MatMulInteger", a, np.zeros((3, 5), np.int8))
    x = np.zeros((1, 2, 5, 5), np.uint8)
    w = np.zeros((4, 2, 3, 3), np.int8)
    with pytest.raises(ValueError, match="x_zero_point must be a scalar"):
        call("ConvInteger", x, w, np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="one value per output channel"):
        call("ConvInteger", x, w, None, np.zeros(3, np.int8))
    f = np.float32(0.5)
    with pytest.raises(ValueError, match="a_scale must be a scalar"):
        call("QLinearMatMul", a, np.ones(3, np.float32), np.uint8(0), b, f, np.int8(0), f, np.uint8(0))
    with pytest.raises(ValueError, match="B must be int32"):
        call("QLinearConv", x, f, np.uint8(0), w, f, np.int8(0), f, np.uint8(0), np.zeros(3, np.int32))
    with pytest.raises(TypeError, match="y_zero_point must be"):
        call("QLinearConv", x, f, np.uint8(0), w, f, np.int8(0), f, np.int32(0))


def test_errors_name_the_node_in_a_session():
    m = one_node("MatMulInteger", [("A", TP.UINT8, [2, 2]), ("B", TP.INT8, [2, 2]),
                                   ("az", TP.INT8, [])], [("Y", TP.INT32)], opset=10)
    with pytest.raises(refrt.errors.RefrtError, match="MatMulInteger.*a_zero_point"):
        refrt.run(m, {"A": np.zeros((2, 2), np.uint8), "B": np.zeros((2, 2), np.int8),
                      "az": np.array(0, np.int8)})


# ---------------------------------------------------------------- read-only inputs

def test_read_only_inputs_are_not_mutated():
    a = readonly(RNG.integers(0, 256, (2, 3, 4)).astype(np.uint8))
    b = readonly(RNG.integers(-128, 128, (4, 5)).astype(np.int8))
    az, bz = readonly(np.array(7, np.uint8)), readonly(np.arange(5).astype(np.int8))
    before = [v.copy() for v in (a, b, az, bz)]
    y = call("MatMulInteger", a, b, az, bz)
    assert np.array_equal(y, T.gemm_int8_twin(a.reshape(-1, 4), b, 7, bz).reshape(2, 3, 5))
    s = readonly(np.float32(0.05))
    q = call("QLinearMatMul", a, s, az, b, s, readonly(np.int8(0)), s, readonly(np.uint8(9)))
    assert q.dtype == np.uint8 and q.flags.writeable
    x = readonly(RNG.integers(0, 256, (1, 2, 5, 5)).astype(np.uint8))
    w = readonly(RNG.integers(-128, 128, (4, 2, 3, 3)).astype(np.int8))
    bias = readonly(np.array([1, -2, 3, 2**31 - 1], np.int32))
    yc = call("QLinearConv", x, s, az, w, readonly(np.full(4, 0.01, np.float32)),
              readonly(np.int8(1)), s, readonly(np.uint8(3)), bias, pads=[1, 1, 1, 1])
    assert yc.shape == (1, 4, 5, 5)
    xf = readonly(RNG.standard_normal((2, 3)).astype(np.float32))
    call("QuantizeLinear", xf, readonly(np.full(3, 0.1, np.float32)), readonly(np.zeros(3, np.int8)))
    call("DequantizeLinear", a, readonly(np.full(3, 0.1, np.float32)), readonly(np.zeros(3, np.uint8)))
    call("DynamicQuantizeLinear", xf)
    for v, v0 in zip((a, b, az, bz), before):
        assert np.array_equal(v, v0)


# ---------------------------------------------------------------- constant B packing

def test_constant_b_is_packed_once_per_session(monkeypatch):
    calls = []
    real = K.pack_b
    monkeypatch.setattr(quant.K, "pack_b", lambda b, *a, **k: calls.append(b.shape) or real(b, *a, **k))
    b = RNG.integers(-128, 128, (2, 6, 5)).astype(np.int8)  # batched: one pack per matrix
    m = one_node("MatMulInteger", [("A", TP.UINT8, [2, 3, 6])], [("Y", TP.INT32)], opset=10,
                 initializers=[const("B", b)])
    sess = refrt.InferenceSession(m)
    for _ in range(3):
        a = RNG.integers(0, 256, (2, 3, 6)).astype(np.uint8)
        (y,) = sess.run(None, {"A": a})
        assert np.array_equal(y, np.stack([T.gemm_int8_twin(a[i], b[i]) for i in range(2)]))
    assert calls == [(6, 5), (6, 5)]
    calls.clear()
    m = one_node("MatMulInteger", [("A", TP.UINT8, [3, 6]), ("B", TP.INT8, [6, 5])],
                 [("Y", TP.INT32)], opset=10)
    sess = refrt.InferenceSession(m)
    for _ in range(3):
        sess.run(None, {"A": np.zeros((3, 6), np.uint8), "B": b[0]})
    assert len(calls) == 3  # a B that is fed is packed on every run


def test_constant_b_cache_of_qlinear_matmul_uses_input_3():
    b = RNG.integers(0, 256, (6, 5)).astype(np.uint8)
    c = ctx_for("QLinearMatMul", constant=(False, False, False, True))
    a = RNG.integers(0, 256, (3, 6)).astype(np.uint8)
    s = np.float32(0.02)
    impl = lookup("QLinearMatMul", "", 21)
    y1 = impl.fn(a, s, np.uint8(1), b, s, np.uint8(2), s, np.uint8(3), ctx=c)
    assert ("packed_b", 3) in c.cache
    y2 = impl.fn(a, s, np.uint8(1), b, s, np.uint8(2), s, np.uint8(3), ctx=c)
    assert np.array_equal(y1, y2)


# ---------------------------------------------------------------- AVX2 emulation switch

def test_emulation_switch_changes_full_range_u8s8_only():
    a = np.full((4, 64), 255, np.uint8)
    b = RNG.choice(np.array([-128, 127], np.int8), size=(64, 8))
    exact = call("MatMulInteger", a, b)
    emulated = call("MatMulInteger", a, b, emulate=True)
    assert np.array_equal(exact, T.gemm_int8_twin(a, b))
    assert np.array_equal(emulated, T.gemm_u8s8_avx2_saturating_twin(a, b))
    assert (emulated != exact).any()
    small = RNG.integers(-64, 64, (64, 8)).astype(np.int8)  # [-64, 63]: pairs never saturate
    ra = RNG.integers(0, 256, (4, 64)).astype(np.uint8)
    assert np.array_equal(call("MatMulInteger", ra, small, np.uint8(3), np.int8(-5), emulate=True),
                          call("MatMulInteger", ra, small, np.uint8(3), np.int8(-5)))
    # u8 x u8 and s8 x s8 are never emulated
    bu = b.view(np.uint8)
    assert np.array_equal(call("MatMulInteger", a, bu, emulate=True), T.gemm_int8_twin(a, bu))


def test_emulation_switch_through_a_session():
    a = np.full((2, 16), 255, np.uint8)
    b = np.full((16, 3), 127, np.int8)
    m = one_node("MatMulInteger", [("A", TP.UINT8, [2, 16])], [("Y", TP.INT32)], opset=10,
                 initializers=[const("B", b)])
    (exact,) = refrt.run(m, {"A": a})
    (emul,) = refrt.run(m, {"A": a}, emulate_avx2_u8s8=True)
    assert exact[0, 0] == 16 * 255 * 127 and emul[0, 0] == 8 * 32767


# ---------------------------------------------------------------- zero-point axes

def test_per_row_a_zero_point_subtracts_along_rows_when_m_equals_k():
    k = 7
    a = RNG.integers(0, 256, (k, k)).astype(np.uint8)
    b = RNG.integers(-128, 128, (k, 5)).astype(np.int8)
    az = RNG.permutation(np.arange(10, 10 + k)).astype(np.uint8)
    y = call("MatMulInteger", a, b, az)
    rows = (a.astype(np.int64) - az[:, None]) @ b
    cols = (a.astype(np.int64) - az[None, :]) @ b  # onnx.reference's mistake
    assert np.array_equal(y, rows) and not np.array_equal(y, cols)
    # batched: [..., M, 1] zero points per matrix and row; [..., 1, N] per matrix and column
    a3 = RNG.integers(0, 256, (2, k, k)).astype(np.uint8)
    az3 = RNG.integers(0, 256, (2, k, 1)).astype(np.uint8)
    bz3 = RNG.integers(-128, 128, (2, 1, 5)).astype(np.int8)
    y3 = call("MatMulInteger", a3, b, az3, bz3)
    expect = (a3.astype(np.int64) - az3) @ (b.astype(np.int64) - bz3)
    assert np.array_equal(y3, expect)


def test_matmul_integer_broadcasting_and_vectors():
    a = RNG.integers(-128, 128, (3, 1, 2, 6)).astype(np.int8)
    b = RNG.integers(-128, 128, (4, 6, 5)).astype(np.int8)
    y = call("MatMulInteger", a, b, np.int8(3), np.int8(-1))
    assert y.shape == (3, 4, 2, 5)
    assert np.array_equal(y, (a.astype(np.int64) - 3) @ (b.astype(np.int64) + 1))
    v = a[0, 0, 0]
    assert np.array_equal(call("MatMulInteger", v, b), v.astype(np.int64) @ b)
    assert np.array_equal(call("MatMulInteger", a, b[0, :, 0]), a.astype(np.int64) @ b[0, :, 0])


def test_qlinear_conv_per_channel_zero_points_and_bias():
    x = RNG.integers(0, 256, (2, 4, 6, 6)).astype(np.uint8)
    w = RNG.integers(-128, 128, (6, 2, 3, 3)).astype(np.int8)
    wz = RNG.integers(-10, 10, 6).astype(np.int8)
    ws = RNG.uniform(0.001, 0.01, 6).astype(np.float32)
    bias = RNG.integers(-5000, 5000, 6).astype(np.int32)
    xs, ys = np.float32(0.02), np.float32(0.07)
    y = call("QLinearConv", x, xs, np.uint8(128), w, ws, wz, ys, np.uint8(120), bias, group=2,
             auto_pad="SAME_UPPER", strides=[2, 1])
    acc = T.conv_int8_twin(x, w, 128, wz, 2, [0, 1, 1, 1], [2, 1], [1, 1])  # SAME_UPPER pads
    acc = acc + bias.reshape(6, 1, 1)
    expect = T.requantize_twin(acc, K.requantize_multiplier(xs, ws, ys), 120, axis=1)
    assert y.shape == (2, 6, 3, 6) and np.array_equal(y, expect)


# ---------------------------------------------------------------- numerics modes

def test_quantize_float16_division_follows_onnxruntime_per_opset():
    x = (RNG.standard_normal(2000) * 100).astype(np.float16)
    s = np.float16(0.37)
    q32 = np.rint(x.astype(np.float32) / np.float32(s))   # float32 division
    q16 = np.rint((x / s).astype(np.float32))             # float16 division
    assert (q32 != q16).sum() > 10
    zp = np.int16(0)
    assert np.array_equal(call("QuantizeLinear", x, s, zp, opset=21), q32)
    assert np.array_equal(call("QuantizeLinear", x, s, zp, opset=23), q16)
    assert np.array_equal(call("QuantizeLinear", x, s, zp, opset=21, numerics="spec"), q16)
    # precision (opset 23+): the division runs in the type it names
    assert np.array_equal(call("QuantizeLinear", x, s, zp, opset=23, precision=TP.FLOAT), q32)
    x32 = x.astype(np.float32) * np.float32(1.001)
    assert np.array_equal(call("QuantizeLinear", x32, np.float32(s), zp, opset=23, precision=TP.FLOAT16),
                          np.rint((x32.astype(np.float16) / s).astype(np.float32)))


def test_dequantize_float16_output_modes():
    x = np.array([2049, 1, -3], np.int16)
    s = np.float16(3)
    ort = call("DequantizeLinear", x, s, np.int16(0))
    spec = call("DequantizeLinear", x, s, np.int16(0), numerics="spec")
    assert ort.dtype == spec.dtype == np.float16
    assert ort.tolist() == [6148.0, 3.0, -9.0]   # float32 product rounded once
    assert spec.tolist() == [6144.0, 3.0, -9.0]  # 2049 -> 2048 in float16 first


def test_dynamic_quantize_all_zero_modes():
    x = np.zeros((2, 3), np.float32)
    y, s, z = call("DynamicQuantizeLinear", x)
    assert s.dtype == np.float32 and s.shape == () and s == 1 and z.dtype == np.uint8 and z == 0
    y, s, z = call("DynamicQuantizeLinear", x, numerics="spec")
    assert s == 0 and z == 0 and not y.any()
    with pytest.raises(TypeError, match="float32"):
        call("DynamicQuantizeLinear", x.astype(np.float16))


def test_float8_zero_point_modes():
    x = np.array([1.0, -3.0, 1e6, np.nan], np.float32)
    zp = np.array(1, ml_dtypes.float8_e4m3fn)
    ort = call("QuantizeLinear", x, np.float32(0.5), zp)
    spec = call("QuantizeLinear", x, np.float32(0.5), zp, numerics="spec")
    assert ort.dtype == ml_dtypes.float8_e4m3fn
    assert ort.astype(np.float32)[:3].tolist() == [2.0, -6.0, 448.0]
    assert spec.astype(np.float32)[:3].tolist() == [3.0, -5.0, 448.0]
    assert np.isnan(ort.astype(np.float32)[3])
    nosat = call("QuantizeLinear", x, np.float32(0.5), zp, saturate=0)
    assert np.isnan(nosat.astype(np.float32)[2])  # e4m3fn has no infinity


# ---------------------------------------------------------------- types

@pytest.mark.parametrize("dtype, lo, hi", [(ml_dtypes.int4, -8, 7), (ml_dtypes.uint4, 0, 15),
                                           (ml_dtypes.int2, -2, 1), (ml_dtypes.uint2, 0, 3)])
def test_sub_byte_types_saturate_and_round_trip(dtype, lo, hi):
    x = np.array([[-100.0, -2.5, -0.5, 0.5, 1.5, 100.0, np.nan]], np.float32)
    y = call("QuantizeLinear", x, np.float32(1), np.array(0, dtype), opset=25)
    assert y.dtype == dtype
    expect = np.where(np.isnan(x), lo, np.clip(np.rint(x), lo, hi))
    assert np.array_equal(y.astype(np.float32), expect)
    back = call("DequantizeLinear", y, np.float32(2), np.array(lo + 1, dtype), opset=25)
    assert np.array_equal(back, (expect - (lo + 1)) * 2)


def test_blocked_int4_with_a_remainder_block():
    x = RNG.standard_normal((2, 7)).astype(np.float32) * 10
    s = RNG.uniform(0.5, 2, (2, 3)).astype(np.float32)
    zp = RNG.integers(-3, 3, (2, 3)).astype(ml_dtypes.int4)
    y = call("QuantizeLinear", x, s, zp, axis=1, block_size=3)
    expect = T.quantize_linear_twin(x, s, zp.astype(np.int8), axis=1, block_size=3, qmin=-8, qmax=7,
                                    out_dtype=np.int8)
    assert np.array_equal(y.astype(np.int8), expect)
    back = call("DequantizeLinear", y, s, zp, axis=1, block_size=3)
    assert np.array_equal(back, T.dequantize_linear_twin(y.astype(np.int8), s, zp.astype(np.int8),
                                                         axis=1, block_size=3))


def test_output_types_follow_scale_and_output_dtype():
    x = np.array([1, 200], np.uint8)
    for sdt in (np.float16, ml_dtypes.bfloat16, np.float32):
        y = call("DequantizeLinear", x, np.array(0.5, sdt), np.uint8(100))
        assert y.dtype == sdt and y.astype(np.float32).tolist() == [-49.5, 50.0]
    y = call("DequantizeLinear", x, np.float32(0.5), np.uint8(100), output_dtype=TP.FLOAT16, opset=23)
    assert y.dtype == np.float16
    y = call("DequantizeLinear", x, np.array(0.5, ml_dtypes.float8_e8m0fnu), np.uint8(100),
             output_dtype=TP.FLOAT, opset=24)
    assert y.dtype == np.float32 and y.tolist() == [-49.5, 50.0]
    q = call("QuantizeLinear", np.array([1.0, -1.0], np.float32), np.float32(0.5),
             output_dtype=TP.INT16)
    assert q.dtype == np.int16 and q.tolist() == [2, -2]
    assert call("QuantizeLinear", np.array([3.0], np.float32), np.float32(1)).dtype == np.uint8
    xi = np.array([2**24 + 1, -7], np.int32)  # int32 input: the division runs in float32
    assert call("QuantizeLinear", xi, np.float32(2**20), np.int8(0)).tolist() == [16, 0]
    assert call("DequantizeLinear", xi, np.float32(1)).tolist() == [2**24, -7]


@pytest.mark.parametrize("elem", [TP.FLOAT4E2M1, TP.FLOAT6E2M3, TP.FLOAT6E3M2])
def test_small_float_outputs_saturate(elem):
    from refrt.ops._common import np_dtype

    dt = np_dtype(elem)
    x = np.array([0.3, -0.7, 2.6, 1e4, -1e4], np.float32)
    y = call("QuantizeLinear", x, np.float32(1), np.array(0, dt), opset=28)
    top = float(ml_dtypes.finfo(dt).max)
    assert y.dtype == dt
    assert y.astype(np.float32).tolist() == np.clip(x, -top, top).astype(dt).astype(np.float32).tolist()
    assert call("DequantizeLinear", y, np.float32(2), opset=28).tolist() == (y.astype(np.float32) * 2).tolist()


def test_qlinear_matmul_float8_is_dequantize_matmul_quantize():
    f8 = ml_dtypes.float8_e4m3fn
    a = (RNG.standard_normal((3, 4)) * 4).astype(f8)
    b = (RNG.standard_normal((4, 2)) * 4).astype(f8)
    z = np.array(0, f8)
    y = call("QLinearMatMul", a, np.float32(0.5), z, b, np.float32(0.25), z, np.float32(2), z)
    expect = ((a.astype(np.float32) * 0.5) @ (b.astype(np.float32) * 0.25) / 2).astype(f8)
    assert y.dtype == f8 and np.array_equal(y.astype(np.float32), expect.astype(np.float32))
