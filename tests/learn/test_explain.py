"""refrt.explain / `refrt explain`: the value the steps compute is the node's output element.

On the bundled digits CNN and its quantized forms (dynamic, static QDQ, static QOperator per
tensor and per channel), plus one-node models for the ops the digits model lacks. Float sums the
BLAS computes may come out in another order: there the test checks the reported difference is
within the bound any summation order stays within, and that the verdict says so.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os

import numpy as np
import onnx
import pytest

import refrt
from refrt.errors import ExplainError, InputError
from refrt.explainer import Explanation

from helpers import one_node

DATA = os.path.join(os.path.dirname(refrt.__file__), "data")
DIGITS = os.path.join(DATA, "digits_cnn.onnx")


@pytest.fixture(scope="module")
def images():
    return np.load(os.path.join(DATA, "digits_test.npz"))["x"][:3].copy()


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """The digits model quantized four ways: {form: path}."""
    import refrt.quantization as rq

    logging.disable(logging.WARNING)
    tmp = tmp_path_factory.mktemp("digits")
    model = onnx.load(DIGITS)
    calib = {"input": np.load(os.path.join(DATA, "digits_test.npz"))["calib"][:64]}
    paths = {f: str(tmp / f"{f}.onnx") for f in ("dynamic", "qdq", "qop", "qop_channel")}
    rq.quantize_dynamic(model, paths["dynamic"])
    for form, fmt, per_channel in (("qdq", "QDQ", False), ("qop", "QOperator", False),
                                   ("qop_channel", "QOperator", True)):
        rq.quantize_static(model, paths[form], rq.NumpyDataReader(calib, batch_size=16),
                           quant_format=fmt, per_channel=per_channel, activation_type="QUInt8",
                           progress=False)
    logging.disable(logging.NOTSET)
    return paths


def check(e: Explanation, op_type: str | None = None):
    """The explanation's value is the node's element, bit for bit; its text says so."""
    assert isinstance(e, Explanation)
    if op_type:
        assert e.op_type == op_type
    assert e.match is True, e.render()
    assert np.asarray(e.value).tobytes() == np.asarray(e.actual).tobytes()
    text = str(e)
    assert "equal: the steps above give the node's output bit for bit" in text
    assert e.steps and e.code and e.formula
    return e


def check_float(e: Explanation):
    """A float op whose sum the BLAS computes: equal, or a difference within the order bound
    that the verdict names in ULP. In the default numerics float32 products run in MLAS's
    order, which the steps follow: equal."""
    if e.numerics != "spec" and e.op_type in ("MatMul", "Gemm", "Conv"):
        check(e)
        assert "onnxruntime's order" in str(e)
        return e
    if e.match:
        return check(e)
    assert e.order_bound is not None and e.order_bound > 0
    diff = abs(float(e.value) - float(e.actual))
    assert diff <= e.order_bound, e.render()
    assert "ULP apart" in e.verdict and "order" in e.verdict
    return e


def run_node(model, feeds, **options):
    return refrt.InferenceSession(model, **options).run(None, feeds)


# ---------------------------------------------------------------- the digits model and its forms

@pytest.mark.parametrize("node, at", [("conv1", (0, 0, 0, 0)), ("conv1", (2, 7, 7, 3)),
                                      ("conv2", (1, 15, 3, 0)), ("fc1", (0, 31)),
                                      ("fc2", (2, 9))])
def test_float_conv_and_gemm_on_digits(images, node, at):
    e = refrt.explain(DIGITS, node, at=at, inputs={"input": images})
    check_float(e)
    assert e.op_type in ("Conv", "Gemm")


@pytest.mark.parametrize("at", [(0, 0, 0, 0), (1, 0, 3, 7), (2, 0, 7, 7)])
def test_dynamic_quantize_linear_on_dynamic_digits(quantized, images, at):
    for output in (0, 1, 2):
        e = refrt.explain(quantized["dynamic"], "input_QuantizeLinear",
                          at=at if output == 0 else (), inputs={"input": images}, output=output)
        check(e, "DynamicQuantizeLinear")
    assert any("scale = (max - min) / 255" in s.title for s in e.steps)


@pytest.mark.parametrize("node, at", [("conv1_quant", (0, 0, 0, 0)), ("conv1_quant", (2, 5, 7, 4)),
                                      ("conv2_quant", (1, 9, 0, 3)), ("conv2_quant", (0, 15, 3, 3))])
def test_conv_integer_on_dynamic_digits(quantized, images, node, at):
    e = check(refrt.explain(quantized["dynamic"], node, at=at, inputs={"input": images}),
              "ConvInteger")
    titles = [s.title for s in e.steps]
    assert "the int32 dot product" in titles
    assert any("row/column sums" in t for t in titles)


@pytest.mark.parametrize("node, at", [("fc1_MatMul_quant", (0, 0)), ("fc1_MatMul_quant", (2, 31)),
                                      ("fc2_MatMul_quant", (1, 4))])
def test_matmul_integer_on_dynamic_digits(quantized, images, node, at):
    e = check(refrt.explain(quantized["dynamic"], node, at=at, inputs={"input": images}),
              "MatMulInteger")
    assert any("vpmaddubsw" in s.title for s in e.steps) == (e.inputs[1].dtype == "int8")


@pytest.mark.parametrize("form", ["qop", "qop_channel"])
@pytest.mark.parametrize("node, at", [("conv1_quant", (0, 3, 0, 0)), ("conv1_quant", (2, 7, 7, 7)),
                                      ("conv2_quant", (1, 2, 1, 2)), ("conv2_quant", (0, 11, 3, 0))])
def test_qlinear_conv_on_qoperator_digits(quantized, images, form, node, at):
    e = check(refrt.explain(quantized[form], node, at=at, inputs={"input": images}), "QLinearConv")
    assert any(s.title.startswith("the multiplier") for s in e.steps)
    assert any("saturate" in s.title for s in e.steps)


@pytest.mark.parametrize("node, at", [("input_QuantizeLinear", (0, 0, 0, 0)),
                                      ("input_QuantizeLinear", (1, 0, 4, 5)),
                                      ("relu1_out_QuantizeLinear", (2, 6, 3, 3)),
                                      ("input_DequantizeLinear", (0, 0, 2, 2)),
                                      ("conv2.weight_DequantizeLinear", (15, 7, 2, 1)),
                                      ("fc1.bias_DequantizeLinear", (17,)),
                                      ("conv1", (1, 4, 5, 5)), ("fc1", (2, 7))])
def test_qdq_digits(quantized, images, node, at):
    e = refrt.explain(quantized["qdq"], node, at=at, inputs={"input": images})
    if e.op_type in ("Conv", "Gemm"):
        check_float(e)
    else:
        check(e)


def test_quantize_and_dequantize_linear_on_qoperator_digits(quantized, images):
    check(refrt.explain(quantized["qop"], "input_QuantizeLinear", at=(1, 0, 2, 3),
                        inputs={"input": images}), "QuantizeLinear")
    check(refrt.explain(quantized["qop"], "logits_DequantizeLinear", at=(2, 8),
                        inputs={"input": images}), "DequantizeLinear")


def test_generic_fallback_shows_the_value_and_does_not_claim_a_match(images):
    e = refrt.explain(DIGITS, "relu1", at=(0, 1, 2, 3), inputs={"input": images})
    assert e.match is None and e.value is None
    assert "not recomputed" in e.verdict
    assert "conv1_out[0, 1, 2, 3]" in str(e)      # the elementwise input that feeds the element
    e = refrt.explain(DIGITS, "pool1", at=(0, 0, 1, 1), inputs={"input": images})
    assert e.match is None and "MaxPool" in str(e) and "the node's value" in str(e)


# ---------------------------------------------------------------- one-node models

def _u8(rng, shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _s8(rng, shape):
    return rng.integers(-128, 128, shape, dtype=np.int8)


def explain_one(model, feeds, at, **kw):
    return refrt.explain(model, model.graph.node[0].output[0], at=at, inputs=feeds, **kw)


def test_quantize_linear_rounding_ties_and_saturation():
    x = np.array([[0.5, 1.5, 2.5, -2.5, 1000.0, -1000.0, 0.49999997, np.nan]], np.float32)
    for zp, scale in ((np.uint8(128), np.float32(1.0)), (np.int8(-3), np.float32(0.5))):
        model, feeds = one_node("QuantizeLinear", [x, scale, zp], domain="", opset=19,
                                const=(1, 2))
        actual = run_node(model, feeds)[0]
        for j in range(x.shape[1]):
            e = check(explain_one(model, feeds, (0, j)), "QuantizeLinear")
            assert e.actual == actual[0, j]
    model, feeds = one_node("QuantizeLinear", [x, np.float32(1.0), np.uint8(128)], domain="",
                            opset=19, const=(1, 2))
    tie = explain_one(model, feeds, (0, 2))                       # 2.5 -> 2 (even) + 128
    assert int(tie.value) == 130 and "a tie" in str(tie) and "half away from zero" in str(tie)
    sat = explain_one(model, feeds, (0, 4))                       # 1000 + 128 -> 255
    assert int(sat.value) == 255 and "(saturated)" in str(sat)


def test_quantize_linear_per_axis_and_blocked():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32) * 4
    scale = np.array([0.1, 0.02, 0.3], np.float32)
    zp = np.array([0, -5, 7], np.int8)
    model, feeds = one_node("QuantizeLinear", [x, scale, zp], {"axis": 1}, domain="", opset=19,
                            const=(1, 2))
    for at in ((0, 0, 0), (1, 1, 3), (1, 2, 2)):
        e = check(explain_one(model, feeds, at))
        assert f"per axis 1: index {at[1]}" in str(e)
    bscale = np.abs(rng.standard_normal((2, 3, 2))).astype(np.float32) + 0.05
    model, feeds = one_node("QuantizeLinear", [x, bscale], {"axis": 2, "block_size": 2},
                            domain="", opset=21, const=(1,))
    for at in ((0, 0, 0), (1, 2, 3)):
        assert "blocked" in str(check(explain_one(model, feeds, at)))


def test_dequantize_linear_per_axis_and_float16_modes():
    x = np.array([[-128, 0, 127], [5, -7, 100]], np.int8)
    scale = np.array([0.5, 0.25], np.float32)
    zp = np.array([3, -2], np.int8)
    model, feeds = one_node("DequantizeLinear", [x, scale, zp], {"axis": 0}, domain="", opset=19)
    for at in ((0, 0), (1, 2)):
        check(explain_one(model, feeds, at), "DequantizeLinear")
    xi = np.array([2049, -3000], np.int16)
    s16 = np.array(3.0, np.float16)
    model, feeds = one_node("DequantizeLinear", [xi, s16], domain="", opset=21)
    for numerics in ("ort", "spec"):
        e = check(explain_one(model, feeds, (0,), numerics=numerics))
        assert e.numerics == numerics
    assert float(explain_one(model, feeds, (0,), numerics="spec").value) == 6144.0


def test_dynamic_quantize_linear_all_zero_in_both_modes():
    x = np.zeros((2, 3), np.float32)
    model, feeds = one_node("DynamicQuantizeLinear", [x], domain="", opset=13, n_outputs=3)
    for numerics, scale in (("ort", 1.0), ("spec", 0.0)):
        e = check(refrt.explain(model, "o1", at=(), inputs=feeds, numerics=numerics, output=1))
        assert float(e.value) == scale
        assert "empty range" in str(e)


def test_matmul_integer_avx2_saturation_is_named_and_emulated():
    a = np.full((2, 4), 255, np.uint8)
    b = np.full((4, 3), 127, np.int8)                      # every pair 2 * 255 * 127 > 32767
    b[:, 2] = 1
    model, feeds = one_node("MatMulInteger", [a, b, np.uint8(3), np.int8(-1)], domain="",
                            opset=13, const=(1, 3))
    e = check(explain_one(model, feeds, (1, 0)), "MatMulInteger")
    assert "pair sums leave [-32768, 32767]" in str(e) and "ORT's AVX2 result" in str(e)
    emulated = check(explain_one(model, feeds, (1, 0), emulate_avx2_u8s8=True))
    assert int(emulated.value) != int(e.value)            # the node itself saturated
    assert int(emulated.value) == run_node(model, feeds, emulate_avx2_u8s8=True)[0][1, 0]
    assert "no pair sum leaves" in str(explain_one(model, feeds, (0, 2)))


def test_matmul_integer_batched_with_per_row_and_per_column_zero_points():
    rng = np.random.default_rng(2)
    a, b = _u8(rng, (2, 3, 5)), _u8(rng, (5, 4))
    model, feeds = one_node("MatMulInteger", [a, b, _u8(rng, (3,)), _u8(rng, (4,))], domain="",
                            opset=13)
    for at in ((0, 0, 0), (1, 2, 3), (1, 1, 0)):
        check(explain_one(model, feeds, at))


@pytest.mark.parametrize("emulate", [False, True])
def test_qlinear_matmul(emulate):
    rng = np.random.default_rng(3)
    a, b = _u8(rng, (3, 40)), _s8(rng, (40, 5))
    b_scale = np.array([0.01, 0.02, 0.005, 0.03, 0.001], np.float32)
    model, feeds = one_node("QLinearMatMul", [a, np.float32(0.02), np.uint8(120), b, b_scale,
                                              np.zeros(5, np.int8), np.float32(0.5), np.uint8(128)],
                            domain="", opset=21, const=(1, 2, 3, 4, 5, 6, 7))
    for at in ((0, 0), (2, 4), (1, 2)):
        e = check(explain_one(model, feeds, at, emulate_avx2_u8s8=emulate), "QLinearMatMul")
    assert "round half to even" in str(e) and "the multiplier" in str(e)


def test_qlinear_conv_depthwise_and_grouped_one_node():
    rng = np.random.default_rng(4)
    x, w = _u8(rng, (1, 4, 5, 5)), _s8(rng, (4, 1, 3, 3))
    inputs = [x, np.float32(0.05), np.uint8(100), w, np.float32(0.01), np.int8(0),
              np.float32(0.2), np.uint8(10), rng.integers(-500, 500, 4).astype(np.int32)]
    model, feeds = one_node("QLinearConv", inputs, {"group": 4, "pads": [1, 1, 1, 1],
                                                    "strides": [2, 2]}, domain="", opset=13,
                            const=(1, 2, 3, 4, 5, 6, 7, 8))
    for at in ((0, 0, 0, 0), (0, 3, 2, 1)):
        e = check(explain_one(model, feeds, at), "QLinearConv")
        assert "depthwise direct kernel" in str(e)


def test_conv_integer_padding_and_dilation_one_node():
    rng = np.random.default_rng(5)
    x, w = _u8(rng, (2, 3, 6, 6)), _u8(rng, (4, 3, 2, 2))
    model, feeds = one_node("ConvInteger", [x, w, np.uint8(7), np.uint8(9)],
                            {"pads": [1, 0, 2, 1], "dilations": [2, 1]}, domain="", opset=13,
                            const=(1, 3))
    out = run_node(model, feeds)[0]
    for at in ((0, 0, 0, 0), (1, 3, out.shape[2] - 1, out.shape[3] - 1)):
        e = check(explain_one(model, feeds, at), "ConvInteger")
    assert "in the padding" in str(e)


def test_dynamic_quantize_matmul_and_matmul_integer_to_float():
    rng = np.random.default_rng(6)
    A = rng.standard_normal((3, 16)).astype(np.float32)
    B = _s8(rng, (16, 6))
    b_scale = (np.abs(rng.standard_normal(6)) * 0.01 + 1e-3).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    model, feeds = one_node("DynamicQuantizeMatMul", [A, B, b_scale, np.zeros(6, np.int8), bias],
                            const=(1, 2, 3, 4))
    for at in ((0, 0), (2, 5)):
        check(explain_one(model, feeds, at), "DynamicQuantizeMatMul")
    Aq = _u8(rng, (2, 3, 16))
    model, feeds = one_node("MatMulIntegerToFloat",
                            [Aq, B, np.float32(0.03), b_scale, np.uint8(128), None, bias],
                            const=(1, 3, 6))
    for at in ((0, 0, 0), (1, 2, 5)):
        check(explain_one(model, feeds, at), "MatMulIntegerToFloat")


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("a_shape, b_shape", [((2, 5), (2, 5)), ((1,), (2, 5)), ((2, 1), (1, 5))])
def test_qlinear_add_and_mul(op, a_shape, b_shape):
    rng = np.random.default_rng(7)
    a, b = _u8(rng, a_shape), _u8(rng, b_shape)
    model, feeds = one_node(op, [a, np.float32(0.07), np.uint8(120), b, np.float32(0.03),
                                 np.uint8(130), np.float32(0.09), np.uint8(125)],
                            const=(1, 2, 4, 5, 6, 7))
    for at in ((0, 0), (1, 4), (1, 2)):
        check(explain_one(model, feeds, at), op)


def test_float_matmul_2d_and_batched():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((3, 7)).astype(np.float32), rng.standard_normal((7, 4)).astype(np.float32)
    model, feeds = one_node("MatMul", [a, b], domain="", opset=13)
    for at in ((0, 0), (2, 3)):
        check_float(explain_one(model, feeds, at))
    for at in ((0, 0), (2, 3)):           # spec numerics: numpy.matmul, within the order bound
        check_float(explain_one(model, feeds, at, numerics="spec"))
    a3 = rng.standard_normal((4, 3, 9)).astype(np.float32)
    b3 = rng.standard_normal((4, 9, 5)).astype(np.float32)
    model, feeds = one_node("MatMul", [a3, b3], domain="", opset=13)
    for at in ((0, 0, 0), (3, 2, 4)):             # kernels/fgemm.py: the order is known
        e = check(explain_one(model, feeds, at), "MatMul")
        assert "fgemm" in str(e)


@pytest.mark.parametrize("opset, axis, shape", [(13, -1, (3, 10)), (13, 0, (4, 6)),
                                                (11, 1, (2, 3, 4)), (13, -1, (4, 1100))])
def test_softmax(opset, axis, shape):
    rng = np.random.default_rng(9)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    model, feeds = one_node("Softmax", [x], {"axis": axis}, domain="", opset=opset)
    at = tuple(d - 1 for d in shape)
    e = check(explain_one(model, feeds, at), "Softmax")      # MLAS's exp and lane order, step by step
    assert "MLAS's e^(x - max)" in str(e)
    spec = refrt.explain(model, "o0", at=at, inputs=feeds, numerics="spec")
    check(spec, "Softmax")
    assert "NumPy's exp" in str(spec)


@pytest.mark.parametrize("shape, axis", [((3, 10), -1), ((2, 3, 4), 1), ((2, 4096), -1)])
def test_layer_normalization(shape, axis):
    rng = np.random.default_rng(10)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    norm_shape = shape[axis:]
    scale = rng.standard_normal(norm_shape).astype(np.float32)
    bias = rng.standard_normal(norm_shape).astype(np.float32)
    model, feeds = one_node("LayerNormalization", [x, scale, bias], {"axis": axis}, domain="",
                            opset=17, n_outputs=3, const=(1, 2))
    for at in ((0,) * len(shape), tuple(d - 1 for d in shape)):
        check(explain_one(model, feeds, at), "LayerNormalization")
        check(refrt.explain(model, "o0", at=at, inputs=feeds, numerics="spec"), "LayerNormalization")
    lead = tuple(d - 1 for d in shape[:len(shape) + axis if axis < 0 else axis])
    for output in (1, 2):
        check(refrt.explain(model, f"o{output}", at=lead + (0,) * len(norm_shape), inputs=feeds,
                            output=output))


# ---------------------------------------------------------------- text, code, CLI, errors

def test_text_names_formula_code_and_inputs(quantized, images):
    e = refrt.explain(quantized["qop"], "conv1_quant", at=(0, 1, 2, 3), inputs={"input": images})
    text = e.render()
    for part in ("formula", "x_scale * w_scale / y_scale", "code", "refrt/ops/quant.py:",
                 "kernels/twins.py:", "kernels/conv.py:", "inputs", "x_zero_point", "steps",
                 "result"):
        assert part in text, part
    root = os.path.dirname(os.path.dirname(refrt.__file__))
    for ref in e.code:
        path = ref.file if os.path.isabs(ref.file) else os.path.join(root, ref.file)
        with open(path) as f:
            line = f.readlines()[ref.line - 1]
        assert line.lstrip().startswith("def "), (ref, line)
    d = e.as_dict()
    assert json.loads(json.dumps(d))["match"] is True and d["at"] == [0, 1, 2, 3]


def test_inputs_are_not_modified(images):
    before = images.copy()
    refrt.explain(DIGITS, "conv1", at=(0, 0, 1, 1), inputs={"input": images})
    assert np.array_equal(images, before)


def test_cli(quantized, images, tmp_path):
    from refrt.cli import main

    path = tmp_path / "x.npy"
    np.save(path, images)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["explain", quantized["dynamic"], "--node", "fc1_MatMul_quant", "--at", "1,7",
                   "--input", f"input={path}"])
    assert rc == 0
    assert "MatMulInteger node 'fc1_MatMul_quant'" in out.getvalue()
    assert "equal: the steps above give the node's output bit for bit" in out.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["explain", DIGITS, "--node", "conv1", "--at", "0,2,3,4", "--random-inputs",
                   "--json"])
    assert rc == 0 and json.loads(out.getvalue())["op_type"] == "Conv"


def test_cli_errors(capsys):
    from refrt.cli import main

    assert main(["explain", DIGITS, "--node", "conv9", "--random-inputs"]) == 1
    err = capsys.readouterr().err
    assert "no node named 'conv9'" in err and "'conv1'" in err
    assert main(["explain", DIGITS, "--node", "fc2", "--at", "0,10", "--random-inputs"]) == 1
    assert "[1, 10]" in capsys.readouterr().err


def test_errors_are_typed_and_name_the_fault(images):
    with pytest.raises(ExplainError, match="no node named 'conv3'") as info:
        refrt.explain(DIGITS, "conv3", inputs={"input": images})
    assert info.value.node == "conv3"
    with pytest.raises(ExplainError, match=r"out of range for output 'logits' of shape \[3, 10\]"):
        refrt.explain(DIGITS, "fc2", at=(0, 10), inputs={"input": images})
    with pytest.raises(ExplainError, match=r"shape \[3, 10\] \(rank 2\)"):
        refrt.explain(DIGITS, "fc2", at=(0, 1, 2), inputs={"input": images})
    with pytest.raises(ExplainError, match="no output number 3"):
        refrt.explain(DIGITS, "fc2", output=3, inputs={"input": images})
    with pytest.raises(InputError, match="'input'"):
        refrt.explain(DIGITS, "fc2")


def test_node_found_by_output_name_and_negative_index(images):
    e = refrt.explain(DIGITS, "logits", at=(-1, -1), inputs={"input": images})
    assert e.node == "fc2" and e.at == (2, 9)


def test_explain_is_importable_both_ways():
    from refrt.explainer import explain
    assert refrt.explain is explain
    model, feeds = one_node("QLinearMul", [np.array([3], np.uint8), np.float32(1), np.uint8(0),
                                           np.array([4], np.uint8), np.float32(1), np.uint8(0),
                                           np.float32(1), np.uint8(0)])
    assert int(refrt.explain(model, "o0", at=(0,), inputs=feeds).value) == 12
    assert int(explain(model, "o0", at=(0,), inputs=feeds).value) == 12


def test_float_products_in_mlas_order_step_by_step():
    """Each of MLAS's paths (K blocks of a packed weight, the M = 1 kernels, a depthwise and a
    segmented convolution): the explained element is the node's, bit for bit."""
    rng = np.random.default_rng(11)
    cases = []
    a, b = rng.standard_normal((5, 300)).astype(np.float32), rng.standard_normal((300, 7)).astype(np.float32)
    cases.append((one_node("MatMul", [a, b], domain="", opset=13, const=(1,)), [(0, 0), (4, 6)]))
    cases.append((one_node("MatMul", [a, b[:, 0].copy()], domain="", opset=13), [(3,)]))
    cases.append((one_node("Gemm", [a[:1], np.ascontiguousarray(b.T)], {"transB": 1}, domain="",
                           opset=13), [(0, 5)]))
    cases.append((one_node("Gemm", [a, b, rng.standard_normal(7).astype(np.float32)], domain="",
                           opset=13, const=(1, 2)), [(2, 3)]))
    x = rng.standard_normal((1, 8, 9, 9)).astype(np.float32)
    cases.append((one_node("Conv", [x, rng.standard_normal((8, 1, 3, 3)).astype(np.float32)],
                           {"group": 8, "pads": [1, 1, 1, 1]}, domain="", opset=13, const=(1,)),
                  [(0, 3, 4, 4), (0, 7, 0, 8)]))
    xs = rng.standard_normal((1, 32, 20, 20)).astype(np.float32)
    cases.append((one_node("Conv", [xs, rng.standard_normal((16, 32, 3, 3)).astype(np.float32)],
                           {"pads": [1, 1, 1, 1]}, domain="", opset=13, const=(1,)),
                  [(0, 5, 19, 19), (0, 0, 0, 0)]))
    for (model, feeds), ats in cases:
        for at in ats:
            check_float(explain_one(model, feeds, at))
