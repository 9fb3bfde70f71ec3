"""``refrt quantize``: quantize a model from the command line.

    refrt quantize IN OUT --mode dynamic|static [--format qdq|qoperator] [--per-channel]
                   [--calibrate minmax|percentile|entropy] [--calib-data FILE.npz|DIR]
                   [--calib-key NAME] [--batch-size N] [--exclude NODE ...] [--json]
                   [--report FILE.html]

Calibration data (static mode): an ``.npz`` whose arrays are named like the model's inputs (the
first axis indexes samples), or, for a one-input model, the array ``--calib-key`` names (default
``calib`` if present, else the only array); or a folder of ``.npz`` / ``.npy`` files, one batch
each, in name order. Prints the nodes quantized per op type, the excluded nodes and the size
before and after; ``--json`` prints the same as JSON. ``--report`` also writes an HTML page with
the calibration histogram of every quantized activation, its range and the share it clips
(pictures need matplotlib). Returns 0 on success, 1 on error, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from ..errors import RefrtError
from .calibrate import NumpyDataReader
from .model import load
from .options import CalibrationMethod, QuantFormat


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refrt quantize",
                                description="Quantize an ONNX model as onnxruntime's tool does.")
    p.add_argument("input", help="float model (.onnx)")
    p.add_argument("output", help="where to write the quantized model")
    p.add_argument("--mode", choices=("dynamic", "static"), required=True)
    p.add_argument("--format", choices=("qdq", "qoperator"), default="qdq",
                   help="static mode: Q/DQ pairs (default) or quantized operators")
    p.add_argument("--per-channel", action="store_true", help="one scale per output channel")
    p.add_argument("--calibrate", choices=("minmax", "percentile", "entropy"), default="minmax")
    p.add_argument("--calib-data", metavar="FILE.npz|DIR",
                   help="calibration inputs (static mode)")
    p.add_argument("--calib-key", metavar="NAME",
                   help="the .npz array to feed a one-input model")
    p.add_argument("--batch-size", type=int, default=8, help="samples per calibration batch")
    p.add_argument("--exclude", nargs="+", default=[], metavar="NODE",
                   help="node names to leave in float")
    p.add_argument("--default-tensor-type", choices=("float", "float16"),
                   help="the element type to assume where shape inference finds none (outputs of "
                        "com.microsoft ops such as an optimized transformer's Attention); "
                        "onnxruntime's extra option DefaultTensorType")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--report", metavar="FILE.html",
                   help="write an HTML report: the summary and, per quantized activation, its "
                        "calibration histogram, range and clipped share (pictures need matplotlib)")
    return p


def main(argv=None) -> int:
    """Run ``refrt quantize``; ``argv`` may start with the word ``quantize``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "quantize":
        argv = argv[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    try:
        summary = quantize_from_args(args)
    except (RefrtError, OSError, ValueError, NotImplementedError, RuntimeError, KeyError) as e:
        print(f"refrt quantize: error: {e}", file=sys.stderr)
        return 1
    try:
        if args.json:
            print(json.dumps(summary.to_dict(), indent=2))
        else:
            print(format_summary(summary, args))
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def quantize_from_args(args):
    """Quantize as the parsed command line (:func:`build_parser`) says; -> the Summary."""
    from onnx import TensorProto

    from .quantize import quantize_dynamic, quantize_static
    extra = {}
    if getattr(args, "default_tensor_type", None):
        extra["DefaultTensorType"] = {"float": TensorProto.FLOAT,
                                      "float16": TensorProto.FLOAT16}[args.default_tensor_type]
    if args.mode == "dynamic":
        if args.calib_data:
            print("note: --calib-data is not used by dynamic quantization", file=sys.stderr)
        return quantize_dynamic(args.input, args.output, nodes_to_exclude=args.exclude,
                                per_channel=args.per_channel, report=getattr(args, "report", None),
                                extra_options=extra)
    if not args.calib_data:
        raise ValueError("static quantization needs --calib-data FILE.npz|DIR")
    model = load(args.input, load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [vi.name for vi in model.graph.input if vi.name not in initializers]
    reader = calibration_reader(args.calib_data, inputs, args.calib_key, args.batch_size)
    fmt = QuantFormat.QDQ if args.format == "qdq" else QuantFormat.QOperator
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[args.calibrate]
    return quantize_static(args.input, args.output, reader, quant_format=fmt,
                           per_channel=args.per_channel, calibrate_method=method,
                           nodes_to_exclude=args.exclude, report=getattr(args, "report", None),
                           extra_options=extra)


def calibration_reader(path: str, inputs: list[str], key: str | None = None,
                       batch_size: int = 8):
    """A data reader over an .npz file or a folder of .npz/.npy batches."""
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith((".npz", ".npy")))
        if not files:
            raise ValueError(f"no .npz or .npy files in {path}")
        return _FolderReader([os.path.join(path, f) for f in files], inputs, key)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return NumpyDataReader(_feeds_from(arrays, inputs, key, path), batch_size)


def _feeds_from(arrays: dict, inputs: list[str], key: str | None, where: str) -> dict:
    if all(name in arrays for name in inputs):
        return {name: arrays[name] for name in inputs}
    if len(inputs) != 1:
        raise ValueError(f"{where} must hold one array per model input {inputs}; it has "
                         f"{sorted(arrays)}")
    if key is None:
        key = "calib" if "calib" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
    if key not in arrays:
        raise ValueError(f"{where}: say which array feeds input {inputs[0]!r} with --calib-key "
                         f"(arrays: {sorted(arrays)})")
    return {inputs[0]: arrays[key]}


class _FolderReader:
    def __init__(self, files, inputs, key):
        self.files, self.inputs, self.key, self.i = files, inputs, key, 0

    def get_next(self):
        if self.i >= len(self.files):
            return None
        path = self.files[self.i]
        self.i += 1
        if path.endswith(".npy"):
            if len(self.inputs) != 1:
                raise ValueError(f"{path}: a .npy batch only fits a one-input model")
            return {self.inputs[0]: np.load(path)}
        with np.load(path) as z:
            return _feeds_from({k: z[k] for k in z.files}, self.inputs, self.key, path)

    def __len__(self):
        return len(self.files)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def format_summary(summary, args=None) -> str:
    """The summary as a table: per op type of the input model, its nodes and how many were
    quantized, left in float or removed; then the output model's op types and the sizes."""
    d = summary.to_dict()
    lines = [f"quantized ({d['mode']}): {args.input} -> {args.output}" if args else
             f"quantized ({d['mode']})", ""]
    head = ("op type", "nodes", "quantized", "float", "removed")
    rows = [head] + [(op, *(str(v[k]) for k in head[1:])) for op, v in d["op_types"].items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for i, r in enumerate(rows):
        lines.append("  " + "  ".join(f"{c:<{w}}" if j == 0 else f"{c:>{w}}"
                                      for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    if any(v["removed"] for v in d["op_types"].values()):
        lines.append("  (removed: a Relu/Clip whose range the quantized output before it already clips)")
    lines.append("")
    lines.append("output model: " + ", ".join(f"{op} x{n}" for op, n in d["output_op_types"].items()))
    lines.append(f"excluded: {', '.join(d['excluded']) if d['excluded'] else 'none'}")
    lines.append(f"size: {_size(d['size_before'])} -> {_size(d['size_after'])}{_ratio(d['ratio'])}")
    if args is not None and getattr(args, "report", None):
        lines.append(f"report: {args.report}")
    return "\n".join(lines)


def _ratio(ratio) -> str:
    if not ratio:
        return ""
    if ratio >= 1:
        return f" ({ratio:.2f}x smaller)"
    return f" ({1 / ratio:.2f}x larger: the quantization parameters and added nodes outweigh the saved bytes)"


if __name__ == "__main__":
    sys.exit(main())
