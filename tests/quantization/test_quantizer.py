"""refrt.quantization: the arithmetic, calibration, options and tools, piece by piece.

Whole models against onnxruntime's quantizer are in test_quantization_parity.py.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import os
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

import refrt
import refrt.quantization as rq
from refrt.quantization import calibrate as C
from refrt.quantization import params as P
from refrt.quantization.cli import main as cli_main
from refrt.testing.models import bert_encoder

oq = pytest.importorskip("onnxruntime.quantization")
from onnxruntime.quantization import quant_utils as ou  # noqa: E402

DATA = os.path.join(os.path.dirname(refrt.__file__), "data")
DIGITS = os.path.join(DATA, "digits_cnn.onnx")
QTYPES = [T.INT8, T.UINT8, T.INT16, T.UINT16, T.INT4, T.UINT4]


class Reader:
    def __init__(self, feeds):
        self._it = iter(list(feeds))

    def get_next(self):
        return next(self._it, None)


def digits_calib(n=64, batch=16):
    calib = np.load(os.path.join(DATA, "digits_test.npz"))["calib"][:n]
    return [{"input": calib[i:i + batch]} for i in range(0, n, batch)]


def simple_model(nodes, inits, x_shape, opset=13, out_shape=None):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", T.FLOAT, out_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


@pytest.fixture(autouse=True)
def quiet():
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


# ---------------------------------------------------------------- scale and zero point

def test_scale_and_zero_point_of_the_worked_example():
    zp, scale = P.compute_scale_zp(np.float32(-0.7), np.float32(1.3), 0, 255)
    exact = (np.float64(np.float32(1.3)) - np.float64(np.float32(-0.7))) / 255   # float64
    assert scale.dtype == np.float32 and scale == np.float32(exact)
    assert abs(float(scale) - 2.0 / 255) < 1e-9 and int(zp) == 89
    zp, scale = P.compute_scale_zp(np.float32(-0.7), np.float32(1.3), -127, 127, symmetric=True)
    assert int(zp) == 0 and scale == np.float32(1.3 / 127)


def test_range_is_widened_to_include_zero_and_tiny_scales_become_one():
    zp, scale = P.compute_scale_zp(np.float32(0.5), np.float32(2.0), 0, 255)
    assert int(zp) == 0 and scale == np.float32(2.0 / 255)       # [0.5, 2] -> [0, 2]
    zp, scale = P.compute_scale_zp(np.float32(-3.0), np.float32(-1.0), 0, 255)
    assert int(zp) == 255                                         # [-3, -1] -> [-3, 0]
    zp, scale = P.compute_scale_zp(np.float32(0.0), np.float32(1e-40), -128, 127)
    assert scale == 1.0 and int(zp) == 0                          # below float32 tiny


def test_quantized_ranges():
    assert P.quant_range(T.INT8) == (-128, 127)
    assert P.quant_range(T.INT8, symmetric=True) == (-127, 127)
    assert P.quant_range(T.INT8, reduce_range=True) == (-64, 64)
    assert P.quant_range(T.UINT8, reduce_range=True) == (0, 127)
    assert P.quant_range(T.INT4) == (-8, 7) and P.quant_range(T.UINT16) == (0, 65535)
    with pytest.raises(ValueError, match="unsupported quantized type"):
        P.quant_range(T.FLOAT)


def test_compute_scale_zp_is_bit_identical_to_onnxruntime():
    rng = np.random.default_rng(0)
    ends = [0.0, 1e-42, 1e-30, 3e-8, 0.7, 1.3, 255.0, 1e30]
    cases = [(rng.standard_normal(2) * 10.0 ** rng.integers(-6, 6)).astype(np.float32)
             for _ in range(60)]
    cases += [np.array([-a, b], np.float32) for a in ends for b in ends]
    checked = 0
    for lo, hi in cases:
        lo, hi = min(lo, hi), max(lo, hi)
        for qtype in QTYPES:
            for symmetric in (False, True):
                for reduce in (False, True):
                    for min_range in (None, 0.25):
                        qmin, qmax = ou.get_qmin_qmax_for_qType(qtype, reduce, symmetric)
                        zp_o, s_o = ou.compute_scale_zp(np.float32(lo), np.float32(hi), qmin,
                                                        qmax, symmetric, min_range)
                        mine_qmin, mine_qmax = P.quant_range(qtype, reduce, symmetric)
                        assert (int(qmin), int(qmax)) == (mine_qmin, mine_qmax)
                        zp, s = P.compute_scale_zp(np.float32(lo), np.float32(hi), mine_qmin,
                                                   mine_qmax, symmetric, min_range)
                        assert np.asarray(s_o).tobytes() == s.tobytes(), (lo, hi, qtype)
                        assert int(zp_o) == int(zp), (lo, hi, qtype, symmetric, reduce)
                        checked += 1
    assert checked > 5000


def test_round_half_to_even_and_saturation():
    q = P.quantize_values(np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1000.0, -1000.0], np.float32),
                          T.INT8, np.float32(1.0), np.int8(0))
    assert q.tolist() == [0, 2, 2, 0, -2, 127, -128]
    q = P.quantize_values(np.array([0.5, 2.5], np.float32), T.UINT8, np.float32(1.0),
                          np.uint8(10))
    assert q.tolist() == [10, 12] and q.dtype == np.uint8


@pytest.mark.parametrize("qtype,symmetric,reduce", [(T.INT8, True, False), (T.UINT8, False, False),
                                                    (T.INT8, True, True), (T.UINT8, False, True),
                                                    (T.INT16, True, False)])
def test_weights_are_bit_identical_to_onnxruntime(qtype, symmetric, reduce):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((8, 5, 3)) * 0.1).astype(np.float32)
    w[0, 0, :] = [0.05, -0.05, 0.15]                     # ties after scaling are likely
    zp_o, s_o, q_o = ou.quantize_data(w.flatten(), qtype, symmetric, reduce)
    zp, s, q = P.quantize_weight(w, qtype, symmetric, reduce)
    assert s.tobytes() == np.asarray(s_o).tobytes() and int(zp) == int(zp_o)
    assert np.array_equal(q.ravel(), q_o)
    zp, s, q = P.quantize_weight(w, qtype, symmetric, reduce, axis=1)     # per channel
    for c in range(w.shape[1]):
        zp_c, s_c, q_c = ou.quantize_data(w[:, c].flatten(), qtype, symmetric, reduce)
        assert s[c] == s_c and int(zp[c]) == int(zp_c)
        assert np.array_equal(q[:, c].ravel(), q_c)


def test_int32_bias_matches_onnxruntime_and_saturates_with_a_warning():
    rng = np.random.default_rng(2)
    bias = rng.standard_normal(6).astype(np.float32)
    in_scale, w_scale = np.float32(0.013), rng.random(6).astype(np.float32) * 0.01
    q, scale = P.quantize_bias(bias, in_scale, w_scale)
    expected = np.round(bias.astype(np.float64) / (in_scale * w_scale).astype(np.float64))
    assert q.dtype == np.int32 and np.array_equal(q, expected.astype(np.int32))
    assert scale.dtype == np.float32 and np.array_equal(scale, in_scale * w_scale)
    with pytest.warns(UserWarning, match="int32"):
        q, _ = P.quantize_bias(np.array([1e6], np.float32), np.float32(1e-6), np.float32(1e-6))
    assert q[0] == np.iinfo(np.int32).max


def test_int4_values_pack_two_per_byte():
    assert P.pack_int4(np.array([1, -2, 7], np.int8)) == bytes([0xE1, 0x07])


# ---------------------------------------------------------------- thresholds and histograms

def test_percentile_and_entropy_thresholds_match_onnxruntime():
    from onnxruntime.quantization.calibrate import HistogramCollector
    rng = np.random.default_rng(3)
    for trial in range(6):
        x = (rng.standard_normal(20000) * (trial + 1) + trial).astype(np.float32)
        lo, hi = x.min(), x.max()
        t = np.array(max(abs(lo), abs(hi)), np.float32)
        hist, edges = np.histogram(x, 256, range=(-t, t))
        c = HistogramCollector("entropy", False, 256, 64, 99.9, "same")
        theirs = c.get_entropy_threshold((hist, edges, lo, hi, t), 64)
        ours = C.entropy_range(hist, edges, lo, hi, 64)
        assert np.float32(theirs[0]) == np.float32(ours[0])
        assert np.float32(theirs[1]) == np.float32(ours[1])
        for symmetric in (True, False):
            data = np.abs(x) if symmetric else x
            h, e = np.histogram(data, bins=512)
            e = e.astype(np.float32)
            c = HistogramCollector("percentile", symmetric, 512, 128, 99.5, "same")
            c.histogram_dict = {"t": (h, e, lo, hi)}
            with contextlib.redirect_stdout(io.StringIO()):
                theirs = c.compute_percentile()["t"]
            ours = C.percentile_range(h, e, lo, hi, 99.5, symmetric)
            assert (np.float32(theirs[0]), np.float32(theirs[1])) == \
                (np.float32(ours[0]), np.float32(ours[1]))


def test_streamed_histograms_count_exactly_what_a_one_shot_histogram_counts():
    rng = np.random.default_rng(4)
    batches = [(rng.standard_normal(1000) * s).astype(np.float32) for s in (1, 3, 0.5, 2)]
    stats = C._RangeStats()
    for b in batches:
        stats.add("t", b)
    everything = np.concatenate(batches)
    for hist_cls, data in ((C._ValueHistogram, everything), (C._AbsHistogram, np.abs(everything))):
        h = hist_cls(128)
        h.plan(stats, "t")
        for b in batches:
            h.add(b)
        h.finish(np.float32)
        if hist_cls is C._ValueHistogram:
            t = np.array(max(abs(everything.min()), abs(everything.max())), np.float32)
            counts, edges = np.histogram(data, 128, range=(-t, t))
        else:
            counts, edges = np.histogram(data, bins=128)
        assert np.array_equal(h.hist, counts) and np.array_equal(h.edges, edges)


def test_smoothing_moves_mass_to_zero_bins():
    p = C.smooth_distribution(np.array([0, 10, 0, 5]))
    assert p.dtype == np.float32 and np.all(p > 0)
    assert abs(float(p.sum()) - 15.0) < 1e-5
    assert C.smooth_distribution(np.zeros(4, np.int64)) is None


# ---------------------------------------------------------------- calibration

def _wide_model():
    """y = Relu(x) * 2 with a 1 MB activation per batch."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    return simple_model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                         helper.make_node("Mul", ["r", "two"], ["y"], name="mul")], [two],
                        [1, 64, 64, 64], out_shape=[1, 64, 64, 64])


@pytest.mark.parametrize("method", ["Percentile", "Entropy"])
def test_histogram_calibration_memory_does_not_grow_with_the_data(method):
    model = _wide_model()
    rng = np.random.default_rng(5)

    def peak(n_batches):
        feeds = [{"x": rng.standard_normal((1, 64, 64, 64)).astype(np.float32)}
                 for _ in range(n_batches)]
        reader = Reader(feeds)
        del feeds
        c = rq.create_calibrator(model, calibrate_method=method)
        tracemalloc.start()
        c.collect_data(reader)
        c.compute_data()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(3), peak(18)
    # keeping the activations (as onnxruntime does) would need 6x more for 6x the batches
    assert large < 1.5 * small, (small, large)


def test_moving_average_is_the_mean_of_the_batch_ranges():
    model = simple_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [], [1, 4])
    feeds = [{"x": np.array([[-1.0, 2.0, 0.0, 0.5]], np.float32) * s} for s in (1.0, 3.0, 0.5)]
    plain = rq.create_calibrator(model)
    plain.collect_data(Reader(feeds))
    avg = rq.create_calibrator(model, extra_options={"moving_average": True})
    avg.collect_data(Reader(feeds))
    x_plain, x_avg = plain.compute_data()["x"], avg.compute_data()["x"]
    assert float(x_plain.lowest[0]) == -3.0 and float(x_plain.highest[0]) == 6.0
    assert np.isclose(float(x_avg.lowest[0]), np.mean([-1.0, -3.0, -0.5]))
    assert np.isclose(float(x_avg.highest[0]), np.mean([2.0, 6.0, 1.0]))


def test_readers_of_every_kind_work():
    model = simple_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [], [2, 3])
    data = np.arange(12, dtype=np.float32).reshape(4, 3) - 5

    class OrtReader(oq.CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": data[0:2]}, {"x": data[2:4]}])

        def get_next(self):
            return next(self.it, None)

    assert isinstance(Reader([]), rq.CalibrationDataReader)
    assert not isinstance(object(), rq.CalibrationDataReader)
    for reader in (Reader([{"x": data[0:2]}, {"x": data[2:4]}]), OrtReader(),
                   rq.NumpyDataReader({"x": data}, batch_size=2)):
        c = rq.create_calibrator(model)
        c.collect_data(reader)
        td = c.compute_data()["x"]
        assert (float(td.lowest[0]), float(td.highest[0])) == (-5.0, 6.0)
    with pytest.raises(ValueError, match="No data"):
        rq.create_calibrator(model).collect_data(Reader([]))


def test_calibration_cache_is_readable_by_onnxruntime(tmp_path):
    c = rq.create_calibrator(onnx.load(DIGITS), calibrate_method="Percentile")
    c.collect_data(Reader(digits_calib(32)))
    ranges = c.compute_data()
    rq.save_tensors_data(ranges, tmp_path / "cache.json")
    theirs = oq.load_tensors_data(tmp_path / "cache.json")
    assert theirs.calibration_method == oq.CalibrationMethod.Percentile
    for name, td in ranges.items():
        assert np.float32(theirs[name].range_value[1]) == np.float32(td.highest)
    again = rq.load_tensors_data(tmp_path / "cache.json")
    assert set(again.keys()) == set(ranges.keys())


def test_progress_bar_only_when_asked_or_on_a_terminal(capsys):
    stream = io.StringIO()
    bar = C.Progress("calibrating", total=3, enabled=True, stream=stream)
    for _ in range(3):
        bar.step()
    bar.close()
    assert "batch [####################] 3/3" in stream.getvalue()
    quiet_stream = io.StringIO()                     # not a terminal: nothing by default
    bar = C.Progress("calibrating", total=3, stream=quiet_stream)
    bar.step()
    bar.close()
    assert quiet_stream.getvalue() == ""
    rq.quantize_static(DIGITS, os.devnull, Reader(digits_calib(32)), progress=True)
    assert "calibrating (MinMax): batch" in capsys.readouterr().err


# ---------------------------------------------------------------- options and errors

def test_enums_carry_onnxruntime_names_and_values_and_accept_its_members(tmp_path):
    for ours, theirs in ((rq.QuantType, oq.QuantType), (rq.QuantFormat, oq.QuantFormat),
                         (rq.CalibrationMethod, oq.CalibrationMethod)):
        assert {m.name: m.value for m in ours} == {m.name: m.value for m in theirs}
    assert rq.QuantType.QInt4.tensor_type == T.INT4
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    rq.quantize_static(DIGITS, a, Reader(digits_calib(32)), quant_format=oq.QuantFormat.QOperator,
                       activation_type=oq.QuantType.QUInt8,
                       calibrate_method=oq.CalibrationMethod.MinMax)
    rq.quantize_static(DIGITS, b, Reader(digits_calib(32)), quant_format=rq.QuantFormat.QOperator,
                       activation_type="QUInt8")
    assert onnx.load(str(a)).SerializeToString() == onnx.load(str(b)).SerializeToString()


def test_quantize_takes_refrt_and_onnxruntime_config_objects(tmp_path):
    outputs = []
    for i, config in enumerate([
            rq.StaticQuantConfig(Reader(digits_calib(32)), quant_format=rq.QuantFormat.QOperator,
                                 activation_type=rq.QuantType.QUInt8, per_channel=True),
            oq.StaticQuantConfig(Reader(digits_calib(32)), quant_format=oq.QuantFormat.QOperator,
                                 activation_type=oq.QuantType.QUInt8, per_channel=True),
            rq.DynamicQuantConfig(nodes_to_exclude=["conv1"]),
            oq.DynamicQuantConfig(nodes_to_exclude=["conv1"])]):
        path = tmp_path / f"q{i}.onnx"
        summary = rq.quantize(DIGITS, path, config)
        assert summary.size_after > 0
        outputs.append(onnx.load(str(path)).SerializeToString())
    assert outputs[0] == outputs[1] and outputs[2] == outputs[3] and outputs[0] != outputs[2]
    with pytest.raises(TypeError, match="StaticQuantConfig or a DynamicQuantConfig"):
        rq.quantize(DIGITS, tmp_path / "q.onnx", object())


def test_op_lists_are_onnxruntimes_registries():
    from onnxruntime.quantization import registry
    assert set(rq.DYNAMIC_OP_TYPES) == set(registry.IntegerOpsRegistry)
    assert set(rq.QOPERATOR_OP_TYPES) == set(registry.QLinearOpsRegistry)
    assert set(rq.QDQ_OP_TYPES) == set(registry.QDQRegistry)


def test_bad_arguments_are_refused_with_clear_errors(tmp_path):
    out = tmp_path / "q.onnx"
    with pytest.raises(ValueError, match="QInt8 with weight_type=QUInt8"):
        rq.quantize_static(DIGITS, out, Reader(digits_calib(16)), activation_type="QInt8",
                           weight_type="QUInt8")
    with pytest.raises(ValueError, match="16-bit .*QDQ"):
        rq.quantize_static(DIGITS, out, Reader(digits_calib(16)), quant_format="QOperator",
                           activation_type="QUInt16")
    with pytest.raises(ValueError, match="4-bit .*QDQ"):
        rq.quantize_static(DIGITS, out, Reader(digits_calib(16)), quant_format="QOperator",
                           weight_type="QInt4")
    with pytest.raises(ValueError, match="calibration_data_reader"):
        rq.quantize_static(DIGITS, out)
    with pytest.raises(NotImplementedError, match="float8"):
        rq.quantize_dynamic(DIGITS, out, weight_type=rq.QuantType.QFLOAT8E4M3FN)
    with pytest.raises(NotImplementedError, match="SmoothQuant"):
        rq.quantize_dynamic(DIGITS, out, extra_options={"SmoothQuant": True})
    with pytest.warns(UserWarning, match="unknown extra option 'ActivationSymetric'"):
        rq.quantize_dynamic(DIGITS, out, extra_options={"ActivationSymetric": True})
    cache = tmp_path / "ranges.json"
    rq.quantize_static(DIGITS, out, Reader(digits_calib(16)), calibration_cache_path=cache)
    with pytest.raises(ValueError, match="holds MinMax ranges"):
        rq.quantize_static(DIGITS, out, calibration_cache_path=cache, calibrate_method="Entropy")


@pytest.mark.parametrize("overrides,error", [
    ({"nope": [{"symmetric": True}]}, "not in the model"),
    ({"relu1_out": [{"scale": np.float32(0.1)}]}, "both 'scale' and 'zero_point'"),
    ({"relu1_out": [{"axis": 0}]}, "not an initializer"),
    ({"conv1.weight": [{"axis": 5}]}, "out of range"),
    ({"relu1_out": [{"reduce_range": True}]}, "only applies to initializers"),
    ({"relu1_out": [{"convert": {"quant_type": rq.QuantType.QUInt16}}]}, "convert"),
])
def test_invalid_tensor_overrides_are_reported(tmp_path, overrides, error):
    with pytest.raises((ValueError, NotImplementedError), match=error):
        rq.quantize_static(DIGITS, tmp_path / "q.onnx", Reader(digits_calib(16)),
                           extra_options={"TensorQuantOverrides": overrides})


def test_fixed_scale_override_reaches_the_model(tmp_path):
    rq.quantize_static(DIGITS, tmp_path / "q.onnx", Reader(digits_calib(16)), extra_options={
        "TensorQuantOverrides": {"relu2_out": [{"scale": np.float32(0.125),
                                                "zero_point": np.int8(-3)}]}})
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "q.onnx")).graph
             .initializer}
    assert inits["relu2_out_scale"] == np.float32(0.125)
    assert int(inits["relu2_out_zero_point"]) == -3


def test_per_channel_weights_get_one_scale_per_output_channel(tmp_path):
    rq.quantize_static(DIGITS, tmp_path / "q.onnx", Reader(digits_calib(16)), per_channel=True)
    m = onnx.load(str(tmp_path / "q.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    assert inits["conv2.weight_scale"].shape == (16,)
    assert not inits["conv2.weight_zero_point"].any()             # symmetric
    dq = next(n for n in m.graph.node if n.name == "fc1.weight_DequantizeLinear")
    assert {a.name: a.i for a in dq.attribute} == {"axis": 0}      # Gemm transB=1 -> axis 0
    assert inits["fc1.bias_quantized"].dtype == np.int32


# ---------------------------------------------------------------- models and behaviours

def _qat_model():
    rng = np.random.default_rng(6)
    f32 = lambda v, n: numpy_helper.from_array(np.array(v, np.float32), n)  # noqa: E731
    i8 = lambda v, n: numpy_helper.from_array(np.array(v, np.int8), n)      # noqa: E731
    inits = [i8(rng.integers(-100, 100, (4, 3, 3, 3)), "w_q"), f32(0.01, "w_s"), i8(0, "w_zp"),
             f32(0.02, "x_s"), i8(0, "x_zp"), f32(0.05, "y_s"), i8(0, "y_zp"),
             f32(rng.standard_normal(4), "b")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["x_q"], name="qx"),
             helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_zp"], ["x_dq"], name="dqx"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], name="dqw"),
             helper.make_node("Conv", ["x_dq", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "y_s", "y_zp"], ["c_q"], name="qc"),
             helper.make_node("DequantizeLinear", ["c_q", "y_s", "y_zp"], ["c_dq"], name="dqc"),
             helper.make_node("Relu", ["c_dq"], ["y"], name="relu")]
    return simple_model(nodes, inits, [1, 3, 8, 8]), [
        {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(2)]


@pytest.mark.parametrize("mode", ["dynamic", "QDQ", "QOperator"])
def test_a_model_with_qdq_pairs_is_left_as_it_is(tmp_path, mode):
    model, feeds = _qat_model()
    out = tmp_path / "q.onnx"
    if mode == "dynamic":
        rq.quantize_dynamic(model, out)
    else:
        rq.quantize_static(model, out, Reader(feeds), quant_format=mode)
    q = onnx.load(str(out))
    key = lambda n: (n.op_type, n.name, tuple(n.input), tuple(n.output))  # noqa: E731
    assert sorted(map(key, q.graph.node)) == sorted(map(key, model.graph.node))
    assert {t.name for t in q.graph.initializer} == {t.name for t in model.graph.initializer}


def test_an_excluded_gemm_stays_float_in_dynamic_mode(tmp_path):
    summary = rq.quantize_dynamic(DIGITS, tmp_path / "q.onnx", nodes_to_exclude=["fc2"])
    names = {n.name: n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert names["fc2_MatMul"] == "MatMul" and "fc2_MatMul_quant" not in names
    assert names["fc1_MatMul_quant"] == "MatMulInteger"
    assert summary.excluded == ["fc2"]


def test_summary_counts_quantized_nodes_and_sizes(tmp_path):
    s = rq.quantize_static(DIGITS, tmp_path / "q.onnx", Reader(digits_calib(16)),
                           quant_format="QOperator", activation_type="QUInt8")
    d = s.to_dict()
    assert d["mode"] == "static QOperator"
    assert d["op_types"]["Conv"] == {"nodes": 2, "quantized": 2, "float": 0, "removed": 0}
    assert d["op_types"]["Gemm"]["quantized"] == 2
    # the Relus are gone from the output model (their range is the QLinearConv/QGemm output's)
    assert d["op_types"]["Relu"] == {"nodes": 3, "quantized": 0, "float": 0, "removed": 3}
    out_ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node)
    assert d["output_op_types"] == dict(out_ops) and "Relu" not in out_ops
    assert d["size_after"] < d["size_before"]


def test_summary_reports_the_input_models_op_types_and_the_output_model(tmp_path):
    """Dynamic mode turns each Gemm into MatMul (+ Add) before quantizing it: the summary still
    speaks of the input model's Gemms, and lists what the output model holds."""
    d = rq.quantize_dynamic(DIGITS, tmp_path / "q.onnx").to_dict()
    inputs = collections.Counter(n.op_type for n in onnx.load(DIGITS).graph.node)
    assert {op: v["nodes"] for op, v in d["op_types"].items()} == dict(inputs)
    assert d["op_types"]["Gemm"] == {"nodes": 2, "quantized": 2, "float": 0, "removed": 0}
    assert "MatMul" not in d["op_types"] and "Add" not in d["op_types"]
    out_ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node)
    assert d["output_op_types"] == dict(out_ops) and out_ops["MatMulInteger"] == 2
    qdq = rq.quantize_static(DIGITS, tmp_path / "qdq.onnx", Reader(digits_calib(16))).to_dict()
    assert qdq["op_types"]["Relu"]["removed"] == 3
    assert "Relu" not in qdq["output_op_types"]


def test_transformer_weights_shrink_about_four_times(tmp_path):
    model = bert_encoder(layers=2, hidden=256, heads=4, vocab=1000)
    s = rq.quantize_dynamic(model, tmp_path / "q.onnx")
    on_disk = os.path.getsize(tmp_path / "q.onnx")
    assert s.size_before / s.size_after >= 3.9
    assert abs(on_disk - s.size_after) < 0.01 * on_disk


def test_static_quantized_model_classifies_like_the_float_one(tmp_path):
    data = np.load(os.path.join(DATA, "digits_test.npz"))
    rq.quantize_static(DIGITS, tmp_path / "q.onnx", Reader(digits_calib(64)))
    float_pred = refrt.run(DIGITS, {"input": data["x"]})[0].argmax(1)
    try:
        q_pred = refrt.run(str(tmp_path / "q.onnx"), {"input": data["x"]})[0].argmax(1)
    except refrt.errors.UnsupportedOpError as e:
        pytest.skip(f"refrt cannot run {e.op_type} yet")
    assert np.mean(q_pred == data["y"]) >= np.mean(float_pred == data["y"]) - 0.02


# ---------------------------------------------------------------- pre-processing

def test_pre_processing_folds_batch_norm_and_constants(tmp_path):
    rng = np.random.default_rng(7)
    f = lambda a, n: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    inits = [f(rng.standard_normal((4, 3, 3, 3)), "w"), f(rng.standard_normal(4), "b"),
             f(rng.random(4) + 0.5, "gamma"), f(rng.standard_normal(4), "beta"),
             f(rng.standard_normal(4), "mean"), f(rng.random(4) + 0.1, "var"),
             f([1.0, 2.0, 3.0, 4.0], "c1")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"],
                              name="bn", epsilon=1e-5),
             helper.make_node("Constant", [], ["k"], name="const",
                              value=numpy_helper.from_array(np.float32(2.0), "k")),
             helper.make_node("Mul", ["c1", "k"], ["scale"], name="fold_me"),
             helper.make_node("Unsqueeze", ["scale", "axes"], ["scale4"], name="unsq"),
             helper.make_node("Mul", ["n", "scale4"], ["y"], name="mul")]
    inits.append(numpy_helper.from_array(np.array([0, 2, 3], np.int64), "axes"))
    model = simple_model(nodes, inits, [1, 3, 6, 6])
    out = tmp_path / "pre.onnx"
    processed = rq.quant_pre_process(model, out)
    ops = [n.op_type for n in processed.graph.node]
    assert ops == ["Conv", "Mul"], ops
    assert {p.key: p.value for p in processed.metadata_props}["onnx.quant.pre_process"] == \
        "onnxruntime.quant"
    assert any(vi.name == "n" for vi in processed.graph.value_info)       # shapes inferred
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(refrt.run(str(out), {"x": x})[0], refrt.run(model, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- command line

def test_cli_dynamic_static_and_json(tmp_path, capsys):
    out = tmp_path / "dyn.onnx"
    assert cli_main(["quantize", DIGITS, str(out), "--mode", "dynamic", "--exclude", "conv1"]) == 0
    text = capsys.readouterr().out
    assert "MatMul" in text and "excluded: conv1" in text and "size:" in text
    assert out.exists()
    npz = os.path.join(DATA, "digits_test.npz")
    assert cli_main([DIGITS, str(tmp_path / "s.onnx"), "--mode", "static", "--format",
                     "qoperator", "--per-channel", "--calibrate", "percentile",
                     "--calib-data", npz, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "static QOperator" and summary["op_types"]["Conv"]["quantized"] == 2


def test_cli_default_tensor_type_quantizes_an_optimized_transformer(tmp_path, capsys):
    from refrt.testing.models import bert_encoder

    from ort_helpers import exporter_patterns

    src, out = tmp_path / "opt.onnx", tmp_path / "int8.onnx"
    onnx.save(refrt.optimize_model(exporter_patterns(bert_encoder()), num_heads=4,
                                   hidden_size=64).model, src)
    assert cli_main(["quantize", str(src), str(out), "--mode", "dynamic"]) == 1
    assert "--default-tensor-type" in capsys.readouterr().err
    assert cli_main(["quantize", str(src), str(out), "--mode", "dynamic",
                     "--default-tensor-type", "float"]) == 0
    assert "QAttention x2" in capsys.readouterr().out


def test_cli_reads_a_folder_of_batches_and_reports_errors(tmp_path, capsys):
    calib = np.load(os.path.join(DATA, "digits_test.npz"))["calib"]
    folder = tmp_path / "batches"
    folder.mkdir()
    for i in range(3):
        np.savez(folder / f"b{i}.npz", input=calib[8 * i: 8 * i + 8])
    assert cli_main([DIGITS, str(tmp_path / "s.onnx"), "--mode", "static",
                     "--calib-data", str(folder)]) == 0
    capsys.readouterr()
    assert cli_main([DIGITS, str(tmp_path / "s.onnx"), "--mode", "static"]) == 1
    assert "needs --calib-data" in capsys.readouterr().err
    with contextlib.redirect_stderr(io.StringIO()):
        assert cli_main([DIGITS, str(tmp_path / "s.onnx"), "--mode", "fast"]) == 2
