"""Focused checks of refrt/ops/contrib_quant.py that the onnxruntime comparison cannot make:
forms onnxruntime refuses (checked against their formulas), input immutability, error messages,
and the float helpers."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from onnx import helper

import refrt
from refrt.kernels.activations import mlas_logistic
from refrt.kernels.twins import fma32

MS = "com.microsoft"
F = np.float32


def run(op_type, inputs, attrs=None, n_outputs=1):
    names, infos, feeds = [], [], {}
    for i, v in enumerate(inputs):
        if v is None:
            names.append("")
            continue
        names.append(f"i{i}")
        infos.append(helper.make_tensor_value_info(
            f"i{i}", helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), np.shape(v)))
        feeds[f"i{i}"] = v
    outs = [f"o{i}" for i in range(n_outputs)]
    graph = helper.make_graph([helper.make_node(op_type, names, outs, domain=MS, **(attrs or {}))],
                              "g", infos, [helper.make_empty_tensor_value_info(o) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid(MS, 1)])
    return refrt.InferenceSession(model).run(None, feeds)


def test_fma32_rounds_once():
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(2000).astype(F) * F(s) for s in (1e3, 1e-3, 1.0))
    got = fma32(a, b, c)
    for x, y, z, r in zip(a[:300], b[:300], c[:300], got[:300]):
        exact = Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))
        lo, hi = np.nextafter(r, F(-np.inf)), np.nextafter(r, F(np.inf))
        err = abs(Fraction(float(r)) - exact)
        assert err <= abs(Fraction(float(lo)) - exact) and err <= abs(Fraction(float(hi)) - exact)
    # one rounding, not two: (1 + 2^-12)^2 - 1 = 2^-11 + 2^-24 exactly; mul then sub loses 2^-24
    assert fma32(F(1 + 2.0 ** -12), F(1 + 2.0 ** -12), F(-1)) == F(2.0 ** -11 + 2.0 ** -24)
    assert F(1 + 2.0 ** -12) * F(1 + 2.0 ** -12) - F(1) == F(2.0 ** -11)


def test_mlas_logistic_is_close_to_the_sigmoid():
    x = np.linspace(-20, 20, 4001, dtype=F)
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert np.abs(mlas_logistic(x) - exact).max() < 2e-7
    assert mlas_logistic(np.array([0], F))[0] == F(0.5)


def test_qlinear_add_without_zero_points_is_the_textbook_formula():
    """onnxruntime's type inference refuses omitted A / B zero points; refrt reads them as 0."""
    a = np.arange(-128, 128, dtype=np.int8)
    b = a[::-1].copy()
    (y,) = run("QLinearAdd", [a, F(0.5), None, b, F(0.25), None, F(0.5), None])
    expected = np.clip(np.rint((a.astype(np.float64) * 0.5 + b * 0.25) / 0.5), -128, 127)
    assert np.array_equal(y, expected.astype(np.int8))


def test_qgemm_and_matmul_integer_to_float_take_int8_a_with_uint8_b():
    """No onnxruntime kernel has int8 A with uint8 B; refrt computes the formula."""
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (3, 40)).astype(np.int8)
    b = rng.integers(0, 256, (40, 5)).astype(np.uint8)
    acc = (a.astype(np.int64) + 3) @ (b.astype(np.int64) - 7)
    (y,) = run("MatMulIntegerToFloat", [a, b, F(0.5), F(0.25), np.int8(-3), np.uint8(7)])
    assert np.array_equal(y, acc.astype(F) * F(0.125))
    (q,) = run("QGemm", [a, F(0.5), np.int8(-3), b, F(0.25), np.uint8(7), None, F(16.0),
                         np.int8(1)])
    assert np.array_equal(q, np.clip(np.rint(acc.astype(F) * F(0.5 * 0.25 / 16)) + 1, -128,
                                     127).astype(np.int8))


def test_read_only_inputs_are_not_mutated():
    a = np.arange(24, dtype=np.uint8).reshape(4, 6)
    b = np.arange(30, dtype=np.int8).reshape(6, 5)
    for v in (a, b):
        v.setflags(write=False)
    a0, b0 = a.copy(), b.copy()
    run("QGemm", [a, F(0.1), np.uint8(2), b, F(0.2), np.int8(1), None, F(0.3), np.uint8(4)])
    run("QLinearAdd", [a, F(0.1), np.uint8(2), a, F(0.2), np.uint8(3), F(0.3), np.uint8(4)])
    run("QLinearSoftmax", [a, F(0.1), np.uint8(0), F(1 / 256), np.uint8(0)], {"opset": 13})
    assert np.array_equal(a, a0) and np.array_equal(b, b0)


def test_errors_name_the_parameter():
    a = np.zeros((2, 3), np.uint8)
    with pytest.raises(Exception, match="A_scale"):
        run("QLinearMul", [a, np.ones(3, F), np.uint8(0), a, F(1), np.uint8(0), F(1), np.uint8(0)])
    with pytest.raises(Exception, match="same type"):
        run("QLinearAdd", [a, F(1), np.uint8(0), a.view(np.int8), F(1), np.int8(0), F(1),
                           np.uint8(0)])
    with pytest.raises(Exception, match="block_size"):
        run("MatMulNBits", [np.zeros((1, 32), F), np.zeros((2, 1, 16), np.uint8),
                            np.ones(2, F)], {"K": 32, "N": 2, "block_size": 24})
