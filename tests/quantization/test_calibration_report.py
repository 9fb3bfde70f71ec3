"""The quantize report: histograms of what calibration saw, the range the written model keeps and
the share it clips; every number checked against the model file and the raw calibration values."""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import refrt
import refrt.quantization as rq
from refrt.quantization import calibrate as C
from refrt.quantization.calibration_report import Histogram
from refrt.quantization.cli import main as cli_main

DATA = os.path.join(os.path.dirname(refrt.__file__), "data")
DIGITS = os.path.join(DATA, "digits_cnn.onnx")
CALIB = np.load(os.path.join(DATA, "digits_test.npz"))["calib"]
BATCH = 4


# ---------------------------------------------------------------- the streaming histogram

def test_growing_histogram_counts_every_value_in_its_bins():
    rng = np.random.default_rng(0)
    batches = [rng.normal(0, 1, 500), rng.normal(3, 0.1, 300), np.full(10, -40.0),
               np.array([np.nan, np.inf, 2.5]), rng.normal(100, 5, 50)]
    h = C.GrowingHistogram(64)
    for b in batches:
        h.add(b)
    values = np.concatenate(batches)
    values = values[np.isfinite(values)]
    assert h.counts.sum() == values.size
    assert h.edges[0] <= values.min() and values.max() <= h.edges[-1]
    expected, _ = np.histogram(values, bins=h.edges)
    np.testing.assert_array_equal(h.counts, expected)


def test_growing_histogram_starting_from_one_value():
    h = C.GrowingHistogram(8)
    h.add(np.zeros(5))
    h.add(np.array([3.0, -2.0]))
    assert h.counts.sum() == 7
    expected, _ = np.histogram([0, 0, 0, 0, 0, 3.0, -2.0], bins=h.edges)
    np.testing.assert_array_equal(h.counts, expected)


def test_minmax_ranges_do_not_depend_on_the_histogram():
    ranges = []
    for bins in (None, 2048):
        cal = rq.create_calibrator(DIGITS, ["Conv", "Gemm"], extra_options={"histogram_bins": bins})
        cal.collect_data(rq.NumpyDataReader({"input": CALIB}, BATCH))
        ranges.append({k: v.range_value for k, v in cal.compute_data().items()})
        assert bool(cal.histograms) == bool(bins)
    assert ranges[0].keys() == ranges[1].keys()
    for k in ranges[0]:
        np.testing.assert_array_equal(ranges[0][k], ranges[1][k])


def test_histogram_shares():
    h = Histogram(np.array([10, 20, 30, 40]), np.array([0.0, 1.0, 2.0, 3.0, 4.0]))
    assert h.share_outside(0.0, 4.0) == 0
    assert h.share_outside(1.5, 3.0) == pytest.approx((10 + 10 + 40) / 100)
    assert h.uncertainty(1.5, 3.5) == pytest.approx((20 + 40) / 100)


# ---------------------------------------------------------------- the report against the model

def calibration_values(names):
    """Every value each tensor took over the calibration batches, from a plain refrt run (a
    tensor read by several nodes counts once per batch)."""
    seen, batch = {n: [] for n in names}, {}
    sess = refrt.InferenceSession(DIGITS)

    def hook(node, inputs, outputs):
        for name, value in list(zip(node.input, inputs)) + list(zip(node.output, outputs)):
            if name in seen and isinstance(value, np.ndarray):
                batch.setdefault(name, value.ravel())

    sess.add_hook(hook)
    for start in range(0, len(CALIB), BATCH):
        batch.clear()
        sess.run(None, {"input": CALIB[start:start + BATCH]})
        for name, value in batch.items():
            seen[name].append(value)
    return {name: np.concatenate(lst).astype(np.float64) for name, lst in seen.items()}


def written_activation_params(path, fmt):
    """tensor -> (scale, zero point) of the quantized activations, read from the file."""
    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    float_tensors = {i.name for i in onnx.load(DIGITS).graph.input} | \
        {o for n in onnx.load(DIGITS).graph.node for o in n.output}
    if fmt == "QDQ":       # a graph output is renamed <name>_QuantizeLinear_Input before its Q
        return {n.input[0].removesuffix("_QuantizeLinear_Input"): (inits[n.input[1]],
                                                                   inits[n.input[2]])
                for n in model.graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    return {t: (inits[t + "_scale"], inits[t + "_zero_point"]) for t in float_tensors
            if t + "_scale" in inits and t + "_zero_point" in inits}


def figures(page):
    """tensor -> the caption of its picture (each figure must hold an inline SVG)."""
    found = re.findall(r'<figure class="histogram" data-tensor="([^"]+)">(.*?)</figure>', page,
                       re.S)
    for _, body in found:
        assert body.lstrip().startswith("<svg")
    return {name: re.search(r"<figcaption>(.*?)</figcaption>", body).group(1)
            for name, body in found}


CASES = {
    "minmax-moving-average-qdq": dict(quant_format=rq.QuantFormat.QDQ,
                                      extra_options={"CalibMovingAverage": True}),
    "entropy-qoperator": dict(quant_format=rq.QuantFormat.QOperator,
                              calibrate_method=rq.CalibrationMethod.Entropy,
                              activation_type=rq.QuantType.QUInt8),
    "percentile-qdq": dict(quant_format=rq.QuantFormat.QDQ,
                           calibrate_method=rq.CalibrationMethod.Percentile,
                           extra_options={"CalibPercentile": 99.0}),
}


@pytest.mark.parametrize("case", CASES)
def test_report_pictures_ranges_and_clipped_shares(tmp_path, case):
    pytest.importorskip("matplotlib")
    kwargs = CASES[case]
    out, page_path = tmp_path / "q.onnx", tmp_path / "report.html"
    summary = rq.quantize_static(DIGITS, str(out), rq.NumpyDataReader({"input": CALIB}, BATCH),
                                 report=str(page_path), **kwargs)
    assert page_path.is_file()
    page = page_path.read_text()
    fmt = "QDQ" if case.endswith("qdq") else "QOperator"
    params = written_activation_params(out, fmt)
    assert params, "the model quantizes activations"

    # one picture per quantized activation tensor, and a table row for each
    captions = figures(page)
    assert set(captions) == set(params), fmt
    assert {t.name for t in summary.report.tensors} == set(params)

    values = calibration_values(params)
    clipped_somewhere = False
    for t in summary.report.tensors:
        scale, zp = params[t.name]
        s, z = float(scale), int(zp)
        info = np.iinfo(zp.dtype)
        low, high = (info.min - z) * s, (info.max - z) * s
        assert (t.low, t.high) == (low, high), t.name
        assert f"range [{low:.6g}, {high:.6g}] from scale {s:.6g}, zero point {z}" in captions[t.name]
        assert f"<td>[{low:.6g}, {high:.6g}]</td>" in page

        v = values[t.name]
        assert t.histogram.total == v.size, t.name
        exact = float(np.mean((v < low - s / 2) | (v > high + s / 2)))
        clipped_somewhere |= exact > 0
        assert abs(t.clipped - exact) <= t.clipped_bound + 1e-12, (t.name, t.clipped, exact)
        assert f"clipped {100 * t.clipped:.3f} %" in captions[t.name]
    if case != "entropy-qoperator":
        assert clipped_somewhere, "the case is meant to clip some values"


def test_minmax_report_histogram_is_what_calibration_saw(tmp_path):
    """The MinMax histogram holds every calibration value of its tensor, in its bins."""
    summary = rq.quantize_static(DIGITS, str(tmp_path / "q.onnx"),
                                 rq.NumpyDataReader({"input": CALIB}, BATCH),
                                 report=str(tmp_path / "r.html"))
    values = calibration_values({t.name for t in summary.report.tensors})
    for t in summary.report.tensors:
        expected, _ = np.histogram(values[t.name], bins=t.histogram.edges)
        np.testing.assert_array_equal(t.histogram.counts, expected, err_msg=t.name)
        assert t.clipped == 0.0 and t.clipped_bound is not None    # MinMax keeps [min, max]


def test_report_without_matplotlib_has_the_tables(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # import matplotlib fails
    page_path = tmp_path / "r.html"
    rq.quantize_static(DIGITS, str(tmp_path / "q.onnx"),
                       rq.NumpyDataReader({"input": CALIB}, BATCH), report=str(page_path))
    page = page_path.read_text()
    assert "<svg" not in page
    assert "need matplotlib" in page
    assert "<td>relu1_out</td>" in page and "<th>clipped</th>" in page


def test_cli_report(tmp_path, capsys):
    np.savez(tmp_path / "calib.npz", calib=CALIB)
    page_path = tmp_path / "r.html"
    code = cli_main(["quantize", DIGITS, str(tmp_path / "q.onnx"), "--mode", "static",
                     "--calib-data", str(tmp_path / "calib.npz"), "--report", str(page_path)])
    assert code == 0
    assert f"report: {page_path}" in capsys.readouterr().out
    page = page_path.read_text()
    assert "<h2>Nodes</h2>" in page and "<td>Conv</td>" in page
    if "matplotlib" in sys.modules or _has_matplotlib():
        assert len(figures(page)) == len(written_activation_params(tmp_path / "q.onnx", "QDQ"))

    dyn = tmp_path / "dyn.html"
    assert cli_main([DIGITS, str(tmp_path / "d.onnx"), "--mode", "dynamic",
                     "--report", str(dyn)]) == 0
    assert "calibrates nothing" in dyn.read_text()


def test_report_from_a_calibration_cache_says_it_has_no_histograms(tmp_path):
    cache = tmp_path / "ranges.json"
    reader = rq.NumpyDataReader({"input": CALIB}, BATCH)
    rq.quantize_static(DIGITS, str(tmp_path / "a.onnx"), reader, calibration_cache_path=str(cache))
    summary = rq.quantize_static(DIGITS, str(tmp_path / "b.onnx"), None,
                                 calibration_cache_path=str(cache), report=str(tmp_path / "r.html"))
    assert summary.report.tensors and all(t.histogram is None for t in summary.report.tensors)
    assert "keeps no histograms" in (tmp_path / "r.html").read_text()


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
