"""Twin mode: every Numba kernel replaced by its NumPy twin gives the same bits, output and
intermediate, on the models the tests use: the bundled digits CNN in float and quantized by refrt's
quantizer (dynamic, static QDQ, static QOperator), and the BERT-style encoder in float and
dynamically quantized."""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import numpy as np
import onnx
import pytest

import refrt
from refrt.ops import _kernels
from refrt.testing.models import bert_encoder, bert_feeds

DATA = os.path.join(os.path.dirname(refrt.__file__), "data")
MODES = ("dynamic", "static QDQ", "static QOperator")


class Capture:
    """A hook keeping a copy of every value every node produces, by output name."""

    def __init__(self):
        self.values = {}

    def on_node(self, node, inputs, outputs):
        for name, value in zip(node.output, outputs):
            if name:
                self.values[name] = _copy(value)


def _copy(v):
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return None if v is None else np.array(v, copy=True)


def same_bits(a, b) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        return (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)
                and all(same_bits(x, y) for x, y in zip(a, b)))
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return a.tolist() == b.tolist()
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def run_both_ways(model, feeds, **options):
    """Outputs (fused steps allowed) and every intermediate (hooks: node by node), once with the
    Numba kernels and once with the twins."""
    results = {}
    for path in ("numba", "twins"):
        plain = refrt.InferenceSession(model, kernels=path, **options)
        outputs = plain.run(None, feeds)
        watched = refrt.InferenceSession(model, kernels=path, **options)
        capture = Capture()
        watched.add_hook(capture)
        watched.run(None, feeds)
        results[path] = (outputs, capture.values)
    return results


def assert_same_bits(results):
    (out_n, mid_n), (out_t, mid_t) = results["numba"], results["twins"]
    assert len(out_n) == len(out_t)
    for i, (a, b) in enumerate(zip(out_n, out_t)):
        assert same_bits(a, b), f"output {i} differs between the Numba kernels and the twins"
    assert mid_n.keys() == mid_t.keys() and mid_n
    differ = [name for name in mid_n if not same_bits(mid_n[name], mid_t[name])]
    assert not differ, f"intermediates differ between the Numba kernels and the twins: {differ[:10]}"


@pytest.fixture
def door():
    """The kernel door's look-ups, fresh for this test: which names resolved on which side."""
    saved = _kernels._resolved
    _kernels._resolved = ({}, {})
    try:
        yield _kernels._resolved
    finally:
        _kernels._resolved = saved


def quantized(model, path, mode, calib):
    from refrt.quantization.report import quantize

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quantize(model, str(path), mode, calib, False)
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def digits():
    data = np.load(os.path.join(DATA, "digits_test.npz"))
    return onnx.load(os.path.join(DATA, "digits_cnn.onnx")), data


def test_digits_float_same_bits(digits, door):
    model, data = digits
    results = run_both_ways(model, {"input": data["x"][:16]})
    assert_same_bits(results)


@pytest.mark.parametrize("mode", MODES)
def test_digits_quantized_same_bits(digits, mode, tmp_path, door):
    model, data = digits
    q = quantized(model, tmp_path / "q.onnx", mode, {"input": data["calib"][:32]})
    results = run_both_ways(q, {"input": data["x"][:16]})
    assert_same_bits(results)
    numba_side, twin_side = door
    assert twin_side, "no kernel ran through the door in twin mode"
    expected = {"dynamic": {"dynamic_quantize_linear", "conv_int8"},
                "static QDQ": {"quantize_linear", "dequantize_linear"},
                "static QOperator": {"quantize_linear", "conv_int8", "requantize"}}[mode]
    assert expected <= twin_side.keys(), sorted(twin_side)
    # in twin mode the door handed out twins only (and plain NumPy helpers that have none)
    for name, (module, _) in twin_side.items():
        assert _kernels.KERNELS[name][1] is None or module.__name__.endswith(".twins"), name


def test_bert_float_same_bits(door):
    # big enough for the row kernels (layer norm, softmax), the batched attention products and
    # the MatMul layers in onnxruntime's SGEMM order
    model = bert_encoder(layers=1, hidden=128, heads=4)
    results = run_both_ways(model, bert_feeds(batch=2, seq=32))
    assert_same_bits(results)
    _, twin_side = door
    expected = {"layer_norm_rows", "softmax_rows", "batched_matmul_f32", "erf_f32", "pack_b_f32",
                "matmul_packed_f32"}
    assert expected <= twin_side.keys(), sorted(twin_side)


@pytest.mark.parametrize("mode", ["dynamic", "static QDQ"])
def test_bert_quantized_same_bits(mode, tmp_path, door):
    model = bert_encoder(layers=1, hidden=64, heads=4)
    calib = [bert_feeds(batch=2, seq=32, seed=s) for s in range(2)]
    q = quantized(model, tmp_path / "q.onnx", mode, calib)
    results = run_both_ways(q, bert_feeds(batch=2, seq=32, seed=7))
    assert_same_bits(results)
    _, twin_side = door
    assert twin_side


def test_twins_chosen_by_config_entry_and_environment(monkeypatch, digits, door):
    model, data = digits
    feeds = {"input": data["x"][:4]}
    so = refrt.SessionOptions()
    so.add_session_config_entry("refrt.kernels", "twins")
    assert refrt.InferenceSession(model, so)._twins
    monkeypatch.setenv("REFRT_KERNELS", "twins")
    sess = refrt.InferenceSession(model)
    assert sess._twins
    assert not refrt.InferenceSession(model, kernels="numba")._twins   # the option wins
    monkeypatch.setenv("REFRT_KERNELS", "nonsense")
    with pytest.raises(ValueError, match="REFRT_KERNELS"):
        refrt.InferenceSession(model)
    monkeypatch.delenv("REFRT_KERNELS")
    # the variable is read when the session is created, not later
    sess.run(None, feeds)
    assert sess._twins


def test_importing_refrt_leaves_the_environment_alone():
    import subprocess
    import sys

    code = ("import os; before = dict(os.environ); import refrt; "
            "assert dict(os.environ) == before; import sys; assert 'numba' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("mode", ["dynamic", "static QOperator"])
def test_avx2_saturation_emulation_same_bits(digits, mode, tmp_path, door):
    """The kernels that reproduce onnxruntime's int16 saturation (u8 x s8 GEMM and convolutions)
    against their twins."""
    model, data = digits
    q = quantized(model, tmp_path / "q.onnx", mode, {"input": data["calib"][:32]})
    # inputs scaled up so that pairs of byte products exceed int16 and saturate
    results = run_both_ways(q, {"input": data["x"][:16] * 4}, emulate_avx2_u8s8=True)
    assert_same_bits(results)
    _, twin_side = door
    assert "gemm_u8s8_avx2_saturating" in twin_side, sorted(twin_side)
    if mode == "static QOperator":      # uint8 activations x int8 weights: the saturating conv
        assert "conv_u8s8_avx2_saturating" in twin_side, sorted(twin_side)
