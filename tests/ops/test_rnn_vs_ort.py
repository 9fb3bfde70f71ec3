"""float32 LSTM, GRU and RNN against onnxruntime (CPU, graph optimizations off), bit for bit.

refrt's default ("ort") numerics run onnxruntime's DeepCPU arithmetic (``kernels/recurrent.py``):
MLAS's products (packed constant LSTM/GRU weights, unpacked graph-input weights, its M = 1
kernel and thread split), the biases summed first, MLAS's logistic/tanh, GRU's own polynomial,
RNN's expf-based functors. The grid covers hidden sizes below and above 128 and 256 (K blocking),
batch 1 (the M = 1 kernel) to 6 (LSTM's split of the batch between threads), every direction,
sequence_lens (with empty sequences), initial states, peepholes, clip, input_forget,
linear_before_reset and the activations refrt reproduces; then the kernels against their NumPy
twins. The FMA kernels need an x86 CPU with AVX2 and FMA (onnxruntime's MLAS picks them there).
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import refrt

ort = pytest.importorskip("onnxruntime")


def _fma_cpu() -> bool:
    try:
        import refrt.kernels.cpu as cpu

        return {"avx2", "fma"} <= set(cpu.features()[1])
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _fma_cpu(), reason="needs an x86 CPU with AVX2 and FMA "
                                "(onnxruntime's MLAS kernels reproduced here use them)")

F = np.float32
NAMES = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]


def _model(op, inputs, attrs, n_out, constant):
    feeds, inits, infos, names = {}, [], [], []
    for name, v in zip(NAMES, inputs):
        names.append(name if v is not None else "")
        if v is None:
            continue
        if name in constant:
            inits.append(numpy_helper.from_array(v, name))
        else:
            feeds[name] = v
            infos.append(helper.make_tensor_value_info(
                name, TensorProto.INT32 if v.dtype == np.int32 else TensorProto.FLOAT, v.shape))
    while names and names[-1] == "":
        names.pop()
    outs = ["Y", "Y_h", "Y_c"][:n_out]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph([node], "g", infos,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model.SerializeToString(), feeds


def _check(op, inputs, attrs, n_out, constant, kernels=None):
    model, feeds = _model(op, inputs, attrs, n_out, constant)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(None, feeds)
    ro = refrt.SessionOptions()
    if kernels:
        ro.kernels = kernels
    got = refrt.InferenceSession(model, ro).run(None, feeds)
    for name, g, w in zip(["Y", "Y_h", "Y_c"], got, want):
        assert g.shape == w.shape, (name, g.shape, w.shape)
        diff = np.nonzero(g.view(np.uint32) != w.view(np.uint32))
        assert not diff[0].size, (f"{op} {attrs} {name}: {diff[0].size} values differ, max "
                                  f"{np.abs(g - w).max():.3g}")


SHAPES = [(5, 1, 8, 16), (4, 3, 40, 32), (3, 2, 300, 160), (2, 6, 20, 300)]
DIRECTIONS = ["forward", "reverse", "bidirectional"]
CONSTANT = [("W", "R", "B", "P"), ()]


def _seed(*key) -> int:
    return zlib.crc32(repr(key).encode())


def _inputs(rng, shape, nd, gates):
    T, batch, n_in, hidden = shape

    def rnd(*s, scale=0.5):
        return (rng.standard_normal(s) * scale).astype(F)

    lens = rng.integers(0 if batch > 1 else 1, T + 1, batch).astype(np.int32)
    return dict(x=rnd(T, batch, n_in, scale=1.0), w=rnd(nd, gates * hidden, n_in),
                r=rnd(nd, gates * hidden, hidden), b=rnd(nd, 2 * gates * hidden),
                h0=rnd(nd, batch, hidden), c0=rnd(nd, batch, hidden), p=rnd(nd, 3 * hidden),
                lens=lens)


@pytest.mark.parametrize("shape,direction,constant", itertools.product(SHAPES, DIRECTIONS, CONSTANT))
def test_lstm_matches_onnxruntime(shape, direction, constant):
    rng = np.random.default_rng(_seed(shape, direction, constant))
    nd = 2 if direction == "bidirectional" else 1
    v = _inputs(rng, shape, nd, 4)
    for extra in (dict(), dict(clip=0.7), dict(input_forget=1),
                  dict(activations=["Tanh", "Sigmoid", "Sigmoid"] * nd)):
        attrs = dict(hidden_size=shape[3], direction=direction, **extra)
        for inputs in ([v["x"], v["w"], v["r"], v["b"], None, v["h0"], v["c0"]],
                       [v["x"], v["w"], v["r"], v["b"], v["lens"], v["h0"], v["c0"], v["p"]],
                       [v["x"], v["w"], v["r"]]):
            _check("LSTM", inputs, attrs, 3, constant)


@pytest.mark.parametrize("shape,direction,constant", itertools.product(SHAPES, DIRECTIONS, CONSTANT))
def test_gru_matches_onnxruntime(shape, direction, constant):
    rng = np.random.default_rng(_seed(shape, direction, constant, "gru"))
    nd = 2 if direction == "bidirectional" else 1
    v = _inputs(rng, shape, nd, 3)
    for lbr, extra in itertools.product((0, 1), (dict(), dict(clip=0.7),
                                                 dict(activations=["Tanh", "Sigmoid"] * nd))):
        attrs = dict(hidden_size=shape[3], direction=direction, linear_before_reset=lbr, **extra)
        for inputs in ([v["x"], v["w"], v["r"], v["b"], None, v["h0"]],
                       [v["x"], v["w"], v["r"], v["b"], v["lens"], v["h0"]],
                       [v["x"], v["w"], v["r"]]):
            _check("GRU", inputs, attrs, 2, constant)


@pytest.mark.parametrize("shape,direction,constant", itertools.product(SHAPES, DIRECTIONS, CONSTANT))
def test_rnn_matches_onnxruntime(shape, direction, constant):
    rng = np.random.default_rng(_seed(shape, direction, constant, "rnn"))
    nd = 2 if direction == "bidirectional" else 1
    v = _inputs(rng, shape, nd, 1)
    for extra in (dict(), dict(clip=0.7), dict(activations=["Sigmoid"] * nd),
                  dict(activations=["Relu"] * nd)):
        attrs = dict(hidden_size=shape[3], direction=direction, **extra)
        for inputs in ([v["x"], v["w"], v["r"], v["b"], None, v["h0"]],
                       [v["x"], v["w"], v["r"], v["b"], v["lens"], v["h0"]],
                       [v["x"], v["w"], v["r"]]):
            _check("RNN", inputs, attrs, 2, constant)


def test_extreme_gate_values_match_onnxruntime():
    """Large pre-activations: the clamps of MLAS's logistic/tanh and GRU's polynomial bounds."""
    rng = np.random.default_rng(7)
    v = _inputs(rng, (4, 3, 12, 20), 1, 4)
    v["x"] *= 40
    _check("LSTM", [v["x"], v["w"], v["r"], v["b"]], dict(hidden_size=20), 3, ("W", "R", "B"))
    g = _inputs(rng, (4, 3, 12, 20), 1, 3)
    g["x"] *= 40
    for lbr in (0, 1):
        _check("GRU", [g["x"], g["w"], g["r"], g["b"]],
               dict(hidden_size=20, linear_before_reset=lbr), 2, ("W", "R", "B"))
    r = _inputs(rng, (4, 3, 12, 20), 1, 1)
    r["x"] *= 40
    _check("RNN", [r["x"], r["w"], r["r"], r["b"]], dict(hidden_size=20), 2, ())


@pytest.mark.parametrize("op,gates,n_out", [("LSTM", 4, 3), ("GRU", 3, 2), ("RNN", 1, 2)])
@pytest.mark.parametrize("constant", CONSTANT)
def test_twins_match_onnxruntime(op, gates, n_out, constant):
    """The NumPy twins (twin mode) give onnxruntime's bits too, so kernel == twin."""
    rng = np.random.default_rng(11)
    for shape, direction in [((3, 1, 8, 12), "bidirectional"), ((3, 3, 10, 12), "reverse")]:
        nd = 2 if direction == "bidirectional" else 1
        v = _inputs(rng, shape, nd, gates)
        inputs = [v["x"], v["w"], v["r"], v["b"], v["lens"], v["h0"]]
        if op == "LSTM":
            inputs += [v["c0"], v["p"]]
        attrs = dict(hidden_size=shape[3], direction=direction)
        if op == "GRU":
            attrs["linear_before_reset"] = 1
        _check(op, inputs, attrs, n_out, constant, kernels="twins")


def test_kernels_equal_twins_directly():
    """recurrent.lstm_layer / gru_layer / rnn_layer and their twins on the same arguments."""
    from refrt.kernels import recurrent, twins

    rng = np.random.default_rng(3)
    T, batch, n_in, hidden = 4, 3, 9, 20
    x = rng.standard_normal((T, batch, n_in)).astype(F)
    lens = np.array([4, 0, 2], np.int64)
    h0 = rng.standard_normal((batch, hidden)).astype(F)
    c0 = rng.standard_normal((batch, hidden)).astype(F)
    for packed in (True, False):
        for gates in (4, 3, 1):
            w = (rng.standard_normal((gates * hidden, n_in)) * 0.4).astype(F)
            r = (rng.standard_normal((gates * hidden, hidden)) * 0.4).astype(F)
            args_w = (np.ascontiguousarray(w.T), w)
            args_r = (np.ascontiguousarray(r.T), r)
            rows = [(0, 2, 1), (2, 3, 1)]
            plan_x = recurrent.gemm_plan([(0, T * batch, 2)], gates * hidden, n_in, packed)
            if gates == 4:
                plan_r = recurrent.gemm_plan(rows, 4 * hidden, hidden, packed)
                bias = rng.standard_normal(4 * hidden).astype(F)
                peep = rng.standard_normal(3 * hidden).astype(F)
                args = (x, *args_w, plan_x, *args_r, plan_r, bias, peep, h0, c0, lens, (0, 1, 1),
                        np.float32(0.8), 0)
                a, b = recurrent.lstm_layer(*args), twins.lstm_layer_twin(*args)
            elif gates == 3:
                plan_zr = recurrent.gemm_plan([(0, batch, 2)], 2 * hidden, hidden, packed)
                plan_h = recurrent.gemm_plan([(0, batch, 2)], hidden, hidden, packed)
                b6 = rng.standard_normal(6 * hidden).astype(F)
                args = (x, *args_w, plan_x, *args_r, plan_zr, plan_h, b6, h0, lens, (0, 1),
                        np.finfo(F).max, 1)
                a, b = recurrent.gru_layer(*args), twins.gru_layer_twin(*args)
            else:
                plan_r = recurrent.gemm_plan([(0, batch, 2)], hidden, hidden, False)
                bias = rng.standard_normal(hidden).astype(F)
                args = (x, *args_w, plan_x, *args_r, plan_r, bias, h0, lens, True, 1, -1.0)
                a, b = recurrent.rnn_layer(*args), twins.rnn_layer_twin(*args)
            for u, t in zip(a, b):
                np.testing.assert_array_equal(u.view(np.uint32), t.view(np.uint32))


def test_speech_model_matches_onnxruntime():
    """The bundled speech model (bidirectional LSTM + GRU) end to end: every LSTM/GRU output is
    onnxruntime's (the rest of the graph too)."""
    from refrt.testing.models import speech_rnn

    model = speech_rnn()
    x = np.random.default_rng(0).standard_normal((30, 2, 40)).astype(F)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, {"frames": x})[0]
    got = refrt.InferenceSession(model).run(None, {"frames": x})[0]
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
