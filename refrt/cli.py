"""Command line: ``refrt run`` and ``refrt demo``.

    refrt run MODEL [--input NAME=FILE.npy ...] [--random-inputs] [--dim NAME=SIZE ...]
                    [--trace] [--compare-ort] [--json]
    refrt quantize IN OUT --mode dynamic|static [...]   (refrt quantize --help)
    refrt demo [--json]     the bundled digits CNN: refrt vs onnxruntime
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from .errors import RefrtError
from .session import InferenceSession
from .types import shape_of

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


# ---------------------------------------------------------------- helpers

def stats(x) -> dict:
    """dtype, shape and (for numeric arrays) min / max / mean of a value."""
    if x is None:
        return {"dtype": None, "shape": None}
    if isinstance(x, list):
        return {"dtype": "sequence", "shape": [len(x)]}
    a = np.asarray(x)
    d = {"dtype": str(a.dtype), "shape": list(a.shape)}
    numeric = a.dtype != object and (a.dtype.kind in "biuf" or a.dtype.name == "bfloat16")
    if a.size and numeric:
        f = a.astype(np.float64)
        d.update(min=float(np.nanmin(f)), max=float(np.nanmax(f)), mean=float(np.nanmean(f)))
    return d


def _fmt_stats(d: dict) -> str:
    s = f"{d['dtype']}{d['shape']}"
    if "min" in d:
        s += f" min {d['min']:.6g} max {d['max']:.6g} mean {d['mean']:.6g}"
    return s


def random_feed(sess, dims: dict, seed: int = 0) -> dict:
    """A random value for every input: symbolic dims from ``dims`` (default 1); floats
    standard normal, integers in [0, 2), booleans fair coins."""
    from .ops._common import np_dtype
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in sess._inputs:
        tp = vi.type
        if not tp.HasField("tensor_type"):
            raise RefrtError(f"--random-inputs cannot make a value for {vi.name!r} "
                             f"({tp.WhichOneof('value')}); pass it with --input")
        shape = [d if isinstance(d, int) and d > 0 else int(dims.get(d, 1))
                 for d in (shape_of(tp) or [])]
        dtype = np_dtype(tp.tensor_type.elem_type)
        if dtype.kind == "f" or dtype.name == "bfloat16":
            v = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            v = rng.random(shape) < 0.5
        elif dtype.kind in "iu":
            v = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            raise RefrtError(f"--random-inputs cannot make a value of {dtype} for {vi.name!r}")
        feeds[vi.name] = v
    return feeds


class Tracer:
    """A hook printing one line per node: op, name, output dtype/shape/range, time."""

    def __init__(self, out=sys.stdout, as_json=False):
        self.out, self.as_json, self.records, self._t0 = out, as_json, [], 0.0

    def before_node(self, node, inputs):
        self._t0 = time.perf_counter()

    def on_node(self, node, inputs, outputs):
        ms = (time.perf_counter() - self._t0) * 1e3
        rec = {"op": node.op_type, "name": node.name, "ms": ms,
               "outputs": {n: stats(v) for n, v in zip(node.output, outputs) if n}}
        self.records.append(rec)
        if not self.as_json:
            outs = "; ".join(f"{n}: {_fmt_stats(s)}" for n, s in rec["outputs"].items())
            print(f"{ms:9.3f} ms  {node.op_type:<20} {node.name or '-':<24} {outs}", file=self.out)


def _ort_session(model_bytes: bytes):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise RefrtError("--compare-ort needs onnxruntime (pip install onnxruntime)") from e
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def compare(a, b) -> dict:
    """Max abs and max rel error between two arrays (rel against max(|b|, tiny))."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return {"shape_mismatch": [list(a.shape), list(b.shape)]}
    if a.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0}
    diff = np.abs(a - b)
    rel = diff / np.maximum(np.abs(b), np.finfo(np.float32).tiny)
    return {"max_abs": float(np.nanmax(diff)), "max_rel": float(np.nanmax(rel)),
            "equal": bool(np.array_equal(a, b, equal_nan=True))}


# ---------------------------------------------------------------- refrt run

def cmd_run(args) -> int:
    sess = InferenceSession(args.model)
    feeds = {}
    if args.random_inputs:
        feeds = random_feed(sess, dict(_kv(d) for d in args.dim), args.seed)
    for item in args.input:
        name, path = _kv(item)
        feeds[name] = np.load(path, allow_pickle=False)
    tracer = None
    if args.trace:
        tracer = Tracer(sys.stderr if args.json else sys.stdout, as_json=args.json)
        sess.add_hook(tracer)
    t0 = time.perf_counter()
    outputs = sess.run(None, feeds)
    elapsed = time.perf_counter() - t0
    names = [o.name for o in sess.get_outputs()]
    report = {"model": args.model, "seconds": elapsed,
              "outputs": {n: stats(v) for n, v in zip(names, outputs)}}
    if tracer:
        report["trace"] = tracer.records
    if args.compare_ort:
        ort_sess = _ort_session(sess.model.SerializeToString())
        ort_out = ort_sess.run(None, feeds)
        report["compare_ort"] = {n: compare(a, b) for n, a, b in zip(names, outputs, ort_out)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"ran {os.path.basename(args.model)} in {elapsed * 1e3:.2f} ms")
    for n, s in report["outputs"].items():
        print(f"  {n}: {_fmt_stats(s)}")
    if args.compare_ort:
        print("vs onnxruntime (graph optimizations disabled):")
        for n, c in report["compare_ort"].items():
            if "shape_mismatch" in c:
                print(f"  {n}: SHAPE MISMATCH refrt {c['shape_mismatch'][0]} vs ort "
                      f"{c['shape_mismatch'][1]}")
            else:
                print(f"  {n}: max abs err {c['max_abs']:.3g}  max rel err {c['max_rel']:.3g}"
                      f"{'  (bit-identical)' if c['equal'] else ''}")
    return 0


def _kv(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise RefrtError(f"expected NAME=VALUE, got {item!r}")
    k, v = item.split("=", 1)
    return k, v


# ---------------------------------------------------------------- refrt demo

def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cmd_demo(args) -> int:
    model_path = os.path.join(DATA_DIR, "digits_cnn.onnx")
    data = np.load(os.path.join(DATA_DIR, "digits_test.npz"))
    x, y = data["x"], data["y"]
    rows = []
    sess = InferenceSession(model_path)
    name = sess.get_inputs()[0].name
    logits = sess.run(None, {name: x})[0]
    t = _median_time(lambda: sess.run(None, {name: x}), args.repeats)
    rows.append({"runtime": "refrt", "accuracy": float((logits.argmax(1) == y).mean()),
                 "ms": t * 1e3})
    report = {"model": "digits_cnn.onnx (bundled; trained in NumPy on scikit-learn digits)",
              "test_images": int(len(y)), "rows": rows}
    try:
        with open(model_path, "rb") as f:
            ort_sess = _ort_session(f.read())
    except RefrtError as e:
        report["onnxruntime"] = str(e)
    else:
        ort_logits = ort_sess.run(None, {name: x})[0]
        t = _median_time(lambda: ort_sess.run(None, {name: x}), args.repeats)
        rows.append({"runtime": "onnxruntime", "accuracy": float((ort_logits.argmax(1) == y).mean()),
                     "ms": t * 1e3})
        c = compare(logits, ort_logits)
        report["agreement"] = {"same_prediction": float((logits.argmax(1) == ort_logits.argmax(1)).mean()),
                               "max_abs_logit_diff": c["max_abs"], "max_rel_logit_diff": c["max_rel"]}
    report["quantized"] = _demo_quantized(args.per_channel)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['model']}: {report['test_images']} test images, batch of all, "
          f"median of {args.repeats} runs")
    print(f"{'runtime':<14}{'accuracy':>10}{'time (ms)':>12}")
    for r in rows:
        print(f"{r['runtime']:<14}{r['accuracy']:>10.4f}{r['ms']:>12.2f}")
    if "agreement" in report:
        a = report["agreement"]
        print(f"refrt vs onnxruntime: same prediction on {a['same_prediction']:.2%} of images, "
              f"max |logit diff| {a['max_abs_logit_diff']:.3g}, max rel {a['max_rel_logit_diff']:.3g}")
    else:
        print(report["onnxruntime"])
    from .quantization.report import markdown
    print(f"\nquantized with refrt.quantization ({'per-channel' if args.per_channel else 'per-tensor'}"
          f" weights; static modes calibrated on {len(np.load(os.path.join(DATA_DIR, 'digits_test.npz'))['calib'])}"
          f" training images), each INT8 model run in onnxruntime and in refrt:\n")
    print(markdown(report["quantized"]))
    return 0


def _demo_quantized(per_channel: bool) -> list:
    """The bundled model quantized dynamic, static QDQ and static QOperator (report rows)."""
    import contextlib
    import io
    import logging
    import tempfile
    import warnings

    from .quantization.report import digits_rows
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="refrt.demo.") as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return digits_rows(tmp, per_channel)


def _quantize_main(argv) -> int:
    from .quantization.cli import main as quantize_main
    return quantize_main(list(argv))


# ---------------------------------------------------------------- entry point

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="refrt", description="A readable ONNX reference interpreter")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a model and print its outputs")
    r.add_argument("model")
    r.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    r.add_argument("--random-inputs", action="store_true",
                   help="random values for inputs not given with --input")
    r.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                   help="size of a symbolic dimension for --random-inputs (default 1)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--trace", action="store_true", help="one line per node")
    r.add_argument("--compare-ort", action="store_true",
                   help="run onnxruntime on the same feeds and report the error per output")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_run)
    q = sub.add_parser("quantize", help="quantize a float model (dynamic or static)",
                       add_help=False)
    q.add_argument("args", nargs=argparse.REMAINDER)
    q.set_defaults(func=lambda a: _quantize_main(a.args))
    d = sub.add_parser("demo", help="the bundled digits model: refrt vs onnxruntime")
    d.add_argument("--repeats", type=int, default=20)
    d.add_argument("--per-channel", action="store_true", help="quantize weights per channel")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["quantize"]:     # its own parser (refrt.quantization.cli) takes every flag
        return _quantize_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RefrtError, OSError, ValueError) as e:
        print(f"refrt: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
