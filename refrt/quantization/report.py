"""FP32 vs INT8: what quantization costs in accuracy and buys in size.

    python scripts/accuracy_report.py [--json] [--per-channel]
    python -m refrt.quantization.report [--json] [--per-channel]

* The bundled digits CNN: test-set accuracy in FP32 and after dynamic, static QDQ and static
  QOperator quantization (calibrated on ``digits_test.npz["calib"]``), each INT8 model run in
  onnxruntime and in refrt. The refrt column says ``unsupported: <op>`` while refrt lacks an
  operator the quantized model uses.
* A BERT-style encoder (2 layers, hidden 256, 4 heads, vocabulary 1000, random weights): the
  cosine similarity between FP32 and INT8 ``last_hidden_state`` on held-out token batches, in
  both runtimes (each against its own FP32 output).
* Model sizes before and after (serialized bytes); the encoder's weights are mostly MatMul, so
  dynamic quantization should make it about 4x smaller.

onnxruntime runs with its default graph optimizations (what users run). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import warnings

import numpy as np
import onnx

import refrt
import refrt.quantization as rq
from refrt.testing.models import bert_encoder, bert_feeds

DATA = os.path.join(os.path.dirname(refrt.__file__), "data")
MODES = ("dynamic", "static QDQ", "static QOperator")


def ort_run(path, feeds):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def refrt_run(path, feeds):
    """The output, or ``"unsupported: <op>"`` when refrt lacks an operator of the model."""
    try:
        return refrt.InferenceSession(str(path)).run(None, feeds)[0]
    except refrt.errors.UnsupportedOpError as e:
        return f"unsupported: {e.op_type}"


def quantize(model, path, mode, calib, per_channel):
    if mode == "dynamic":
        return rq.quantize_dynamic(model, path, per_channel=per_channel)
    fmt = "QDQ" if mode.endswith("QDQ") else "QOperator"
    reader = rq.NumpyDataReader(calib, batch_size=16) if isinstance(calib, dict) else \
        iter_reader(calib)
    return rq.quantize_static(model, path, reader, quant_format=fmt, per_channel=per_channel,
                              activation_type="QUInt8", progress=False)


def iter_reader(batches):
    class Reader:
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)
    return Reader()


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def digits_rows(tmp, per_channel):
    model = onnx.load(os.path.join(DATA, "digits_cnn.onnx"))
    data = np.load(os.path.join(DATA, "digits_test.npz"))
    feeds, labels = {"input": data["x"]}, data["y"]
    accuracy = lambda out: float(np.mean(np.argmax(out, 1) == labels))  # noqa: E731
    fp32 = {"onnxruntime": accuracy(ort_run(os.path.join(DATA, "digits_cnn.onnx"), feeds)),
            "refrt": accuracy(refrt.run(model, feeds)[0])}
    rows = []
    for mode in MODES:
        path = os.path.join(tmp, f"digits.{mode.replace(' ', '_')}.onnx")
        summary = quantize(model, path, mode, {"input": data["calib"]}, per_channel)
        ref_out = refrt_run(path, feeds)
        rows.append({"model": "digits CNN", "mode": mode, "metric": "test accuracy",
                     "fp32": fp32, "int8": {"onnxruntime": accuracy(ort_run(path, feeds)),
                                            "refrt": ref_out if isinstance(ref_out, str)
                                            else accuracy(ref_out)},
                     "size_fp32": summary.size_before, "size_int8": summary.size_after})
    return rows


def bert_rows(tmp, per_channel):
    model = bert_encoder(layers=2, hidden=256, heads=4, vocab=1000)
    fp32_path = os.path.join(tmp, "bert.onnx")
    onnx.save(model, fp32_path)
    calib = [bert_feeds(batch=2, seq=32, vocab=1000, seed=s) for s in range(8)]
    tests = [bert_feeds(batch=2, seq=32, vocab=1000, seed=100 + s) for s in range(4)]
    fp32 = {"onnxruntime": [ort_run(fp32_path, f) for f in tests],
            "refrt": [refrt.run(model, f)[0] for f in tests]}
    rows = []
    for mode in MODES:
        path = os.path.join(tmp, f"bert.{mode.replace(' ', '_')}.onnx")
        summary = quantize(model, path, mode, calib, per_channel)
        int8 = {}
        for runtime, run in (("onnxruntime", ort_run), ("refrt", refrt_run)):
            outs = [run(path, f) for f in tests]
            bad = next((o for o in outs if isinstance(o, str)), None)
            int8[runtime] = bad or float(np.mean([cosine(a, b) for a, b in
                                                  zip(fp32[runtime], outs)]))
        rows.append({"model": "BERT-style encoder (2x256)", "mode": mode,
                     "metric": "cosine FP32 vs INT8", "fp32": {"onnxruntime": 1.0, "refrt": 1.0},
                     "int8": int8, "size_fp32": summary.size_before,
                     "size_int8": summary.size_after})
    return rows


def _fmt(v, metric):
    if isinstance(v, str):
        return v
    return f"{v:.6f}" if metric.startswith("cosine") else f"{100 * v:.2f} %"


def markdown(rows) -> str:
    lines = ["| model | quantization | metric | FP32 | INT8 onnxruntime | INT8 refrt | "
             "size FP32 | size INT8 | smaller |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['mode']} | {r['metric']} | "
                     f"{_fmt(r['fp32']['onnxruntime'], r['metric'])} | "
                     f"{_fmt(r['int8']['onnxruntime'], r['metric'])} | "
                     f"{_fmt(r['int8']['refrt'], r['metric'])} | {r['size_fp32'] / 1024:.1f} KB | "
                     f"{r['size_int8'] / 1024:.1f} KB | {r['size_fp32'] / r['size_int8']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    p.add_argument("--per-channel", action="store_true", help="quantize weights per channel")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="refrt.accuracy.") as tmp, \
            contextlib.redirect_stdout(io.StringIO()):
        rows = digits_rows(tmp, args.per_channel) + bert_rows(tmp, args.per_channel)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
