"""Recurrent, signal and random ops: behaviour the ONNX backend suite does not pin down."""

import warnings

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

import refrt
from refrt.errors import NodeError
from refrt.ops import random as rnd
from refrt.ops import rnn, signal
from refrt.registry import NodeContext

from helpers import model, readonly, vi

BF16 = np.dtype(ml_dtypes.bfloat16)


def ctx():
    return NodeContext(node_name="n", op_type="Random", domain="ai.onnx", opset=22, n_outputs=1)


def _weights(rng, gates, directions=1, batch=2, seq=4, inp=3, hidden=5, dtype=np.float32):
    x = rng.standard_normal((seq, batch, inp)).astype(dtype)
    w = (rng.standard_normal((directions, gates * hidden, inp)) * 0.5).astype(dtype)
    r = (rng.standard_normal((directions, gates * hidden, hidden)) * 0.5).astype(dtype)
    b = rng.standard_normal((directions, 2 * gates * hidden)).astype(dtype)
    return x, w, r, b


# ---------------------------------------------------------------- recurrent layers

def test_lstm_layout_1_is_layout_0_transposed_with_readonly_inputs():
    rng = np.random.default_rng(0)
    x, w, r, b = (readonly(a) for a in _weights(rng, 4, directions=2))
    h0 = readonly(rng.standard_normal((2, 2, 5)).astype(np.float32))
    c0 = readonly(rng.standard_normal((2, 2, 5)).astype(np.float32))
    p = readonly(rng.standard_normal((2, 15)).astype(np.float32))
    lens = readonly(np.array([4, 2], np.int32))
    seq_first = rnn.lstm(x, w, r, b, lens, h0, c0, p, direction="bidirectional")
    batch_first = rnn.lstm(x.swapaxes(0, 1), w, r, b, lens, h0.swapaxes(0, 1),
                           c0.swapaxes(0, 1), p, direction="bidirectional", layout=1)
    np.testing.assert_allclose(batch_first[0], seq_first[0].transpose(2, 0, 1, 3), rtol=1e-6)
    for a, bf in zip(seq_first[1:], batch_first[1:]):
        np.testing.assert_allclose(bf, a.swapaxes(0, 1), rtol=1e-6)


def test_sequence_lens_zero_pads_outputs_and_reverse_reads_only_valid_steps():
    rng = np.random.default_rng(1)
    x, w, r, b = _weights(rng, 3, batch=3)
    lens = np.array([4, 2, 0], np.int32)
    y, y_h = rnn.gru(x, w, r, b, lens, direction="reverse")
    assert not y[2:, 0, 1].any() and not y[:, 0, 2].any() and not y_h[0, 2].any()
    # batch entry 1 with length 2 equals a reverse GRU over its first two steps alone
    y_short, y_h_short = rnn.gru(x[:2, 1:2], w, r, b, direction="reverse")
    np.testing.assert_allclose(y[:2, :, 1:2], y_short, rtol=1e-6)
    np.testing.assert_allclose(y_h[:, 1], y_h_short[:, 0], rtol=1e-6)
    # the reverse direction's Y_h is its output at time 0
    np.testing.assert_allclose(y_h[0, 0], y[0, 0, 0])


def test_clip_bounds_every_gate_input():
    rng = np.random.default_rng(2)
    x, w, r, b = _weights(rng, 1)
    x *= 100
    y, _ = rnn.rnn(x, w, r, b, activations=["Affine"], activation_alpha=[1.0],
                   activation_beta=[0.0], clip=0.25)
    assert np.abs(y).max() <= np.float32(0.25) and np.abs(y).max() > 0.2


def test_activation_alpha_is_consumed_by_the_functions_that_take_one():
    rng = np.random.default_rng(3)
    x, w, r, b = _weights(rng, 3)
    ours = rnn.gru(x, w, r, b, activations=["Sigmoid", "LeakyRelu"], activation_alpha=[0.3])[0]
    same = rnn.gru(x, w, r, b, activations=["sigmoid", "leakyrelu"], activation_alpha=[0.3])[0]
    default = rnn.gru(x, w, r, b, activations=["Sigmoid", "LeakyRelu"])[0]
    np.testing.assert_array_equal(ours, same)
    assert not np.allclose(ours, default)   # 0.3 went to LeakyRelu, not to Sigmoid


def test_input_forget_couples_the_gates():
    rng = np.random.default_rng(4)
    x, w, r, b = _weights(rng, 4)
    coupled = rnn.lstm(x, w, r, b, input_forget=1)
    free = rnn.lstm(x, w, r, b)
    assert coupled[0].shape == free[0].shape and not np.allclose(coupled[0], free[0])


@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_recurrent_low_precision_dtype_is_preserved(dtype):
    rng = np.random.default_rng(5)
    x, w, r, b = _weights(rng, 4, dtype=dtype)
    outs = rnn.lstm(x, w, r, b)
    ref = rnn.lstm(*(a.astype(np.float32) for a in (x, w, r, b)))
    for got, want in zip(outs, ref):
        assert got.dtype == dtype
        np.testing.assert_allclose(got.astype(np.float32), want, atol=0.02)


def test_recurrent_shape_errors_are_clear():
    rng = np.random.default_rng(6)
    x, w, r, b = _weights(rng, 3)
    with pytest.raises(ValueError, match="W has shape"):
        rnn.gru(x, w[:, :-1], r, b)
    with pytest.raises(ValueError, match="hidden_size=4"):
        rnn.gru(x, w, r, b, hidden_size=4)
    with pytest.raises(ValueError, match="sequence_lens"):
        rnn.gru(x, w, r, b, np.array([5, 1], np.int32))
    with pytest.raises(ValueError, match="unknown activation 'Swish'"):
        rnn.gru(x, w, r, b, activations=["Sigmoid", "Swish"])


def test_gru_1_reads_the_schema_default_direction():
    rng = np.random.default_rng(7)
    x, w, r, b = _weights(rng, 3)
    np.testing.assert_array_equal(rnn.gru_1(x, w, r, b)[0], rnn.gru(x, w, r, b)[0])


# ---------------------------------------------------------------- signal

def _complex_parts(z):
    return np.stack([z.real, z.imag], axis=-1)


@pytest.mark.parametrize("length", [None, 5, 12])
def test_dft_matches_numpy_for_complex_input_with_dft_length(length):
    rng = np.random.default_rng(8)
    z = rng.standard_normal((2, 8, 3)) + 1j * rng.standard_normal((2, 8, 3))
    x = readonly(_complex_parts(z))
    got = signal.dft(x, None if length is None else np.array(length, np.int64),
                     np.array(1, np.int64))
    np.testing.assert_allclose(got, _complex_parts(np.fft.fft(z, n=length, axis=1)), atol=1e-12)
    inv = signal.dft_17(got, axis=1, inverse=1)
    np.testing.assert_allclose(inv, _complex_parts(np.fft.ifft(np.fft.fft(z, n=length, axis=1),
                                                               axis=1)), atol=1e-12)


def test_irfft_inverts_rfft_along_an_inner_axis():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 10, 4, 1)).astype(np.float32)
    spectrum = signal.dft(x, None, np.array(-3, np.int64), onesided=1)
    assert spectrum.shape == (3, 6, 4, 2) and spectrum.dtype == np.float32
    back = signal.dft(spectrum, None, np.array(1, np.int64), onesided=1, inverse=1)
    assert back.shape == x.shape
    np.testing.assert_allclose(back, x, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float16, BF16, np.float64])
def test_dft_keeps_the_input_type(dtype):
    x = np.arange(8, dtype=np.float32).reshape(1, 8, 1).astype(dtype)
    assert signal.dft(x).dtype == dtype
    assert signal.stft(x, np.array(2, np.int64), None, np.array(4, np.int64)).dtype == dtype


def test_dft_rejects_the_complex_axis_and_mismatched_onesided_input():
    x = np.zeros((2, 8, 2), np.float32)
    with pytest.raises(ValueError, match="last .*dimension"):
        signal.dft(x, None, np.array(-1, np.int64))
    with pytest.raises(ValueError, match="onesided=1 needs real input"):
        signal.dft(x, onesided=1)
    with pytest.raises(ValueError, match="complex input"):
        signal.dft(x[..., :1], onesided=1, inverse=1)


def test_stft_of_complex_signal_matches_framed_fft():
    rng = np.random.default_rng(10)
    z = rng.standard_normal((2, 20)) + 1j * rng.standard_normal((2, 20))
    window = rng.random(6)
    got = signal.stft(_complex_parts(z), np.array(4, np.int64), window, onesided=0)
    frames = np.stack([z[:, i:i + 6] * window for i in range(0, 15, 4)], axis=1)
    assert got.shape == (2, 4, 6, 2)
    np.testing.assert_allclose(got, _complex_parts(np.fft.fft(frames, axis=-1)), atol=1e-12)
    with pytest.raises(ValueError, match="window has 6 values but frame_length is 5"):
        signal.stft(_complex_parts(z), np.array(4, np.int64), window, np.array(5, np.int64))


def test_windows_output_types_and_degenerate_sizes():
    w = signal.hann_window(np.array(8, np.int32), output_datatype=TensorProto.DOUBLE, periodic=0)
    np.testing.assert_allclose(w, np.hanning(8), atol=1e-15)
    np.testing.assert_allclose(signal.blackman_window(np.array(9), periodic=0),
                               np.blackman(9), atol=1e-7)
    peak = signal.blackman_window(np.array(10), output_datatype=TensorProto.INT32)
    assert peak.dtype == np.int32 and peak.tolist() == [0] * 5 + [1] + [0] * 4
    assert signal.hamming_window(np.array(1), periodic=0).tolist() == [1.0]
    assert signal.hamming_window(np.array(0)).shape == (0,)


def test_mel_weight_matrix_triangles_peak_at_one():
    m = signal.mel_weight_matrix(np.array(10), np.array(64), np.array(16000),
                                 np.array(300, np.float32), np.array(7000, np.float32),
                                 output_datatype=TensorProto.DOUBLE)
    assert m.shape == (33, 10) and m.dtype == np.float64
    assert (m.max(axis=0) == 1).all() and (m >= 0).all()
    with pytest.raises(ValueError, match="upper_edge_hertz"):
        signal.mel_weight_matrix(np.array(10), np.array(64), np.array(16000),
                                 np.array(0, np.float32), np.array(9000, np.float32))


# ---------------------------------------------------------------- random

def test_random_normal_moments_dtype_and_seed():
    a = rnd.random_normal(shape=[200, 500], mean=2.0, scale=3.0, seed=1.5, ctx=ctx())
    assert a.dtype == np.float32 and a.shape == (200, 500)
    assert abs(a.mean() - 2.0) < 0.05 and abs(a.std() - 3.0) < 0.05
    np.testing.assert_array_equal(a, rnd.random_normal(shape=[200, 500], mean=2.0, scale=3.0,
                                                       seed=1.5, ctx=ctx()))
    assert not np.array_equal(a, rnd.random_normal(shape=[200, 500], mean=2.0, scale=3.0,
                                                   seed=2.5, ctx=ctx()))
    assert rnd.random_normal(shape=[3], dtype=TensorProto.DOUBLE, ctx=ctx()).dtype == np.float64


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.FLOAT])
def test_random_uniform_stays_in_range(dtype):
    u = rnd.random_uniform(shape=[100000], dtype=dtype, low=-1.0, high=3.0, seed=0.0, ctx=ctx())
    f = u.astype(np.float64)
    assert f.min() >= -1 and f.max() < 3 and abs(f.mean() - 1) < 0.03
    assert abs(f.var() - 16 / 12) < 0.05
    with pytest.raises(ValueError, match="high"):
        rnd.random_uniform(shape=[2], low=1.0, high=0.0, ctx=ctx())


def test_like_ops_follow_the_input_shape_and_type():
    x = readonly(np.zeros((4, 5), np.float16))
    assert rnd.random_normal_like(x, ctx=ctx()).dtype == np.float16
    y = rnd.random_uniform_like(x, dtype=TensorProto.DOUBLE, seed=3.0, ctx=ctx())
    assert y.dtype == np.float64 and y.shape == (4, 5)
    with pytest.raises(TypeError, match="float16, float, double or bfloat16"):
        rnd.random_uniform_like(np.zeros(3, np.int64), ctx=ctx())


def test_multinomial_frequencies_follow_softmax():
    logits = np.log(np.array([[0.1, 0.6, 0.3], [1.0, 0.0, 0.0]], np.float32) + 1e-30)
    s = rnd.multinomial(logits, sample_size=20000, seed=4.0, ctx=ctx())
    assert s.dtype == np.int32 and s.shape == (2, 20000)
    freq = np.bincount(s[0], minlength=3) / 20000
    np.testing.assert_allclose(freq, [0.1, 0.6, 0.3], atol=0.015)
    assert (s[1] == 0).all()
    assert rnd.multinomial(logits, dtype=TensorProto.INT64, ctx=ctx()).dtype == np.int64
    np.testing.assert_array_equal(s, rnd.multinomial(logits, sample_size=20000, seed=4.0,
                                                     ctx=ctx()))


def test_bernoulli_mean_and_dtype():
    p = readonly(np.full((50000,), 0.3, np.float64))
    y = rnd.bernoulli(p, seed=0.0, ctx=ctx())
    assert y.dtype == np.float64 and set(np.unique(y)) <= {0.0, 1.0}
    assert abs(y.mean() - 0.3) < 0.01
    assert rnd.bernoulli(p, dtype=TensorProto.BOOL, ctx=ctx()).dtype == np.bool_
    assert not np.array_equal(y, rnd.bernoulli(p, seed=1.0, ctx=ctx()))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rnd.bernoulli(np.array([1.5]), ctx=ctx())


def test_random_backend_cases_match_in_shape_dtype_and_value_set():
    """The backend's random cases (all Bernoulli draws) cannot match by value; all else must."""
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [c for c in collect_testcases(None)
                 if c.name.startswith(("test_bernoulli", "test_random", "test_multinomial"))]
    assert len(cases) >= 6
    for case in cases:
        names = [i.name for i in refrt.InferenceSession(case.model).get_inputs()]
        seeded = any(a.name == "seed" for n in case.model.graph.node for a in n.attribute)
        for inputs, expected in case.data_sets:
            got = refrt.run(case.model, dict(zip(names, inputs)))
            again = refrt.run(case.model, dict(zip(names, inputs)))
            for g, a, e in zip(got, again, expected):
                assert g.shape == e.shape and g.dtype == e.dtype, case.name
                assert set(np.unique(g)) <= {0, 1}, case.name
                if seeded:
                    np.testing.assert_array_equal(g, a)


def test_seeded_random_node_is_deterministic_through_a_session():
    node = helper.make_node("RandomUniform", [], ["y"], shape=[64], seed=7.0)
    m = model([node], [], [vi("y")], opset=22)
    first, = refrt.run(m, {})
    second, = refrt.run(m, {})
    np.testing.assert_array_equal(first, second)
    bad = model([helper.make_node("Multinomial", ["x"], ["y"], dtype=TensorProto.FLOAT)],
                [vi("x")], [vi("y", TensorProto.INT32)], opset=22)
    with pytest.raises(NodeError, match="int32 or int64"):
        refrt.run(bad, {"x": np.zeros((1, 3), np.float32)})
