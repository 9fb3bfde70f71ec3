"""Command line: ``refrt run`` and ``refrt demo``.

    refrt run MODEL [--input NAME=FILE.npy ...] [--random-inputs] [--dim NAME=SIZE ...]
                    [--range [NAME=]LO:HI ...] [--numerics ort|spec] [--emulate-avx2-u8s8]
                    [--trace] [--profile [PREFIX]] [--compare-ort] [--required-operators CONFIG]
                    [--json]
    refrt quantize IN OUT --mode dynamic|static [...]   (refrt quantize --help)
    refrt demo [--json]     the bundled digits CNN: refrt vs onnxruntime
    refrt compare MODEL --against REF [...]   every tensor vs a reference (refrt compare --help)
    refrt reduce MODEL --against REF --out SMALL.onnx   the smallest subgraph that still differs
    refrt host [--json]     this CPU, the kernels refrt picks, onnxruntime's int8 GEMM here
    refrt explain MODEL --node NAME [--at I,J,...]   one output element, step by step
    refrt ops-config MODEL... [--types] [--level disable|extended]
                                        onnxruntime's required_operators.config for the models
    refrt optimize MODEL OUT [--model-type bert] [--num-heads N --hidden-size H] [--json]
                                        onnxruntime's transformer fusions (refrt.optimize_model)

Every command prints refrt's errors as one line and exits with 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from .errors import NodeError, RefrtError
from .feeds import parse_ranges, random_feed, split_pair
from .session import InferenceSession

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


class Tracer:
    """A hook printing one line per node: its run time, the time Numba spent compiling for it,
    op, name, each output's dtype/shape/range, and the scale / zero point of the quantized
    tensors it reads or writes.

    Compile time is measured, not guessed: Numba compiles a kernel on the first call with each
    new argument signature (or loads that compile from its on-disk cache), holding its compiler
    lock meanwhile, and announces the lock's taking and release as events;
    ``refrt.profiling.CompileClock`` adds up the time inside. A node's ``ms`` is its wall time
    minus that ``jit ms``, so a first run's numbers are comparable with a warm run's. Creating a
    Tracer imports Numba (so that importing it is not counted as a node's time either).

    With ``session`` the name and op columns are as wide as the model's longest name and op
    type; without, they widen as longer ones come. Call :meth:`close` when done (it stops
    listening to Numba).
    """

    def __init__(self, out=sys.stdout, as_json=False, session=None):
        from .profiling import CompileClock

        self.out, self.as_json, self.records, self._t0 = out, as_json, [], 0.0
        self.clock = CompileClock().start()
        self._jit0, self._compiled0 = 0.0, 0
        self.op_width, self.name_width = 12, 12
        if session is not None:
            nodes = list(_all_nodes(session.model.graph))
            self.op_width = max([self.op_width] + [len(n.op_type) for n in nodes])
            self.name_width = max([self.name_width] + [len(n.name or "-") for n in nodes])
        self._header = False

    def before_node(self, node, inputs):
        self._jit0, self._compiled0 = self.clock.seconds, len(self.clock.compiled)
        self._t0 = time.perf_counter()

    def on_node(self, node, inputs, outputs):
        from .profiling import quant_params

        wall = time.perf_counter() - self._t0
        jit = self.clock.seconds - self._jit0
        rec = {"op": node.op_type, "name": node.name, "ms": (wall - jit) * 1e3,
               "compile_ms": jit * 1e3, "compiled": self.clock.compiled[self._compiled0:],
               "outputs": {n: stats(v) for n, v in zip(node.output, outputs) if n}}
        quant = quant_params(node, inputs, outputs)
        if quant:
            rec["quant"] = quant
        self.records.append(rec)
        if not self.as_json:
            self._print(node, rec)

    def _print(self, node, rec):
        self.op_width = max(self.op_width, len(node.op_type))
        self.name_width = max(self.name_width, len(node.name or "-"))
        if not self._header:
            self._header = True
            print(f"{'run ms':>9} {'jit ms':>9}  {'op':<{self.op_width}}  {'name':<{self.name_width}}"
                  f"  outputs [quantization: scale, zero point]", file=self.out)
        jit = f"{rec['compile_ms']:9.3f}" if rec["compile_ms"] else f"{'-':>9}"
        outs = "; ".join(f"{n}: {_fmt_stats(s)}" for n, s in rec["outputs"].items())
        if "quant" in rec:
            outs += "  [" + "; ".join(
                f"{q['tensor']}: s={q.get('scale', '-')} zp={q.get('zero_point', '-')}"
                for q in rec["quant"]) + "]"
        print(f"{rec['ms']:9.3f} {jit}  {node.op_type:<{self.op_width}}  "
              f"{node.name or '-':<{self.name_width}}  {outs}", file=self.out)

    def summary(self) -> str:
        """One line: total run time and Numba compile time over the traced nodes."""
        run = sum(r["ms"] for r in self.records)
        jit = sum(r["compile_ms"] for r in self.records)
        compiled = sum(len(r["compiled"]) for r in self.records)
        return (f"{len(self.records)} nodes: {run:.3f} ms running, {jit:.3f} ms in Numba's JIT "
                f"({compiled} kernel signature{'s' if compiled != 1 else ''} compiled, the rest "
                f"loaded from Numba's cache)" if jit else
                f"{len(self.records)} nodes: {run:.3f} ms running, no JIT compile")

    def close(self) -> None:
        self.clock.stop()


def _all_nodes(graph):
    """The nodes of a graph and of its subgraphs."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(g)


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

def _session_options(args) -> dict:
    options = {"numerics": args.numerics, "emulate_avx2_u8s8": args.emulate_avx2_u8s8}
    if getattr(args, "required_operators", None):
        options["required_operators"] = args.required_operators
    return options


def cmd_run(args) -> int:
    profiling = {}
    if args.profile is not None:
        profiling = {"enable_profiling": True, "profile_file_prefix": args.profile}
    sess = InferenceSession(args.model, **_session_options(args), **profiling)
    feeds = {}
    if args.random_inputs:
        dims = dict(split_pair(d, "--dim") for d in args.dim)
        feeds = random_feed(sess, dims, args.seed, parse_ranges(args.range))
    elif args.dim or args.range:
        raise RefrtError("--dim and --range shape the values of --random-inputs; add that flag")
    for item in args.input:
        name, path = split_pair(item, "--input")
        feeds[name] = np.load(path, allow_pickle=False)
    tracer = None
    if args.trace:
        tracer = Tracer(sys.stderr if args.json else sys.stdout, as_json=args.json, session=sess)
        sess.add_hook(tracer)
    t0 = time.perf_counter()
    try:
        outputs = sess.run(None, feeds)
    except NodeError as e:
        if args.random_inputs and any(np.asarray(v).dtype.kind in "iu" for v in feeds.values()):
            raise RefrtError(f"{e}\n(random integer inputs span their type's whole range; index-like "
                             "inputs need --range NAME=LO:HI)") from e
        raise
    finally:
        if tracer:
            tracer.close()
    elapsed = time.perf_counter() - t0
    profile = sess.end_profiling() if profiling else None
    names = [o.name for o in sess.get_outputs()]
    report = {"model": args.model, "seconds": elapsed, "numerics": args.numerics,
              "emulate_avx2_u8s8": args.emulate_avx2_u8s8,
              "outputs": {n: stats(v) for n, v in zip(names, outputs)}}
    if tracer:
        report["trace"] = tracer.records
    if profile:
        report["profile"] = profile
    if args.compare_ort:
        report.update(_compare_with_ort(args, sess, feeds, names, outputs))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if tracer:
        print(tracer.summary())
    print(f"ran {os.path.basename(args.model)} in {elapsed * 1e3:.2f} ms")
    if profile:
        print(f"profile (onnxruntime's format): {profile}")
    for n, s in report["outputs"].items():
        print(f"  {n}: {_fmt_stats(s)}")
    if args.compare_ort:
        print("vs onnxruntime (graph optimizations disabled):")
        _print_comparison(report["compare_ort"])
        if "compare_ort_emulated" in report:
            print("vs onnxruntime, refrt with --emulate-avx2-u8s8:")
            _print_comparison(report["compare_ort_emulated"])
        if report.get("hint"):
            print(report["hint"])
    return 0


def _print_comparison(comparison: dict) -> None:
    for n, c in comparison.items():
        if "shape_mismatch" in c:
            print(f"  {n}: SHAPE MISMATCH refrt {c['shape_mismatch'][0]} vs ort "
                  f"{c['shape_mismatch'][1]}")
        else:
            print(f"  {n}: max abs err {c['max_abs']:.3g}  max rel err {c['max_rel']:.3g}"
                  f"{'  (bit-identical)' if c['equal'] else ''}")


def _compare_with_ort(args, sess, feeds, names, outputs) -> dict:
    """Run onnxruntime on the same feeds. Where refrt and onnxruntime differ, the model has u8 x s8
    integer GEMMs and onnxruntime's saturates on this CPU, refrt runs again with the emulation
    switch and says whether that explains the difference."""
    from . import host

    try:
        # the graph refrt ran (a QDQ model after onnxruntime's QDQ fusions), optimizations off:
        # onnxruntime runs the same ops
        ort_out = _ort_session(sess.optimized_model.SerializeToString()).run(None, feeds)
    except RefrtError:
        raise
    except Exception as e:   # onnxruntime's own refusal, whatever its exception type
        raise RefrtError(f"onnxruntime cannot run this model (refrt can): {str(e).strip()[:500]}") from e
    result = {"compare_ort": {n: compare(a, b) for n, a, b in zip(names, outputs, ort_out)}}
    if all(c.get("equal") for c in result["compare_ort"].values()):
        return result
    gemm_ops = sorted({node.op_type for node in sess.optimized_model.graph.node} & host.U8S8_GEMM_OPS)
    if not gemm_ops or args.emulate_avx2_u8s8 or not host.ort_u8s8_saturates():
        return result
    info = host.info()
    emulated = InferenceSession(sess.model, numerics=args.numerics, emulate_avx2_u8s8=True).run(None, feeds)
    if all(np.array_equal(a, b) for a, b in zip(emulated, outputs)):
        return result     # no product saturates: the difference is elsewhere
    result["compare_ort_emulated"] = {n: compare(a, b) for n, a, b in zip(names, emulated, ort_out)}
    same = all(c.get("equal") for c in result["compare_ort_emulated"].values())
    result["hint"] = (
        f"note: on this CPU ({info.cpu_name}, {info.cpu_class}) onnxruntime's uint8 x int8 GEMM "
        f"({', '.join(gemm_ops)}) adds each pair of byte products in a saturating int16 "
        "(vpmaddubsw), so its integer sums are wrong where a pair exceeds 32767; refrt computes "
        "them exactly. "
        + ("With --emulate-avx2-u8s8 refrt reproduces onnxruntime bit for bit: the difference is "
           "that saturation." if same else
           "--emulate-avx2-u8s8 reproduces that saturation; a difference remains beyond it (above)."))
    return result


# ---------------------------------------------------------------- refrt host

def cmd_host(args) -> int:
    from . import host
    from .tuning import applied

    info = host.info()
    if args.json:
        print(json.dumps({**info.as_dict(), "process_tuning": applied()}, indent=2))
        return 0
    rows = [("CPU", f"{info.cpu_name} ({info.machine})"), ("class", info.cpu_class),
            ("features", " ".join(info.features) or "-"),
            ("int8 kernel", f"{info.int8_kernel} (runnable: {', '.join(info.int8_kernels)}; "
                            f"force one with REFRT_INT8_KERNEL)"),
            ("float32 MatMul", f"{info.float_matmul} (REFRT_FLOAT_MATMUL=blas forces the BLAS)"),
            ("onnxruntime u8 x s8", f"{info.ort_u8s8}, {info.ort_u8s8_source}"),
            ("process tuning", "; ".join(f"{k}: {v}" for k, v in applied().items())
             or "none (refrt.tune_process() was not called)")]
    for k, v in rows:
        print(f"{k:<20} {v}")
    if info.ort_u8s8 == "saturating":
        print("refrt reproduces onnxruntime here with emulate_avx2_u8s8=True (--emulate-avx2-u8s8)")
    return 0


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
    from . import host
    report = {"model": "digits_cnn.onnx (bundled; trained in NumPy on scikit-learn digits)",
              "test_images": int(len(y)), "rows": rows, "host": host.info().as_dict()}
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
    print(host.summary())
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
    if host.ort_u8s8_saturates():
        print("\n(onnxruntime's uint8 x int8 GEMM saturates int16 pairs on this CPU; refrt's INT8 "
              "column is exact. `refrt host` says more.)")
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


# ---------------------------------------------------------------- refrt ops-config

def cmd_ops_config(args) -> int:
    from .optimize.ops_config import required_operators_config

    text = required_operators_config(args.models, types=args.types, level=args.level)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


# ---------------------------------------------------------------- refrt optimize

def cmd_optimize(args) -> int:
    import onnx

    from .optimize.transformer import optimize_model

    result = optimize_model(args.model, model_type=args.model_type, num_heads=args.num_heads,
                            hidden_size=args.hidden_size)
    model = result.model
    if model.ByteSize() > (2 << 30) - 1:      # protobuf's limit: the weights go beside the file
        onnx.save_model(model, args.output, save_as_external_data=True,
                        location=os.path.basename(args.output) + ".data")
    else:
        onnx.save_model(model, args.output)
    if args.json:
        print(json.dumps({"model": args.model, "output": args.output,
                          "nodes_before": result.nodes_before, "nodes_after": result.nodes_after,
                          "fusions": dict(result.fusions), "fused_ops": result.fused_op_counts(),
                          "notes": result.notes}, indent=2))
        return 0
    print(f"{os.path.basename(args.model)} -> {args.output}")
    print(result.summary())
    return 0


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
    r.add_argument("--range", action="append", default=[], metavar="[NAME=]LO:HI",
                   help="random values in [LO, HI] for one input or all (default: integers over "
                        "their type's whole range, floats standard normal)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--numerics", choices=("ort", "spec"), default="ort",
                   help="ort: onnxruntime's CPU results where the spec leaves a choice (default); "
                        "spec: the ONNX specification literally")
    r.add_argument("--emulate-avx2-u8s8", action="store_true",
                   help="reproduce onnxruntime's int16 saturation in its AVX2 uint8 x int8 GEMM")
    r.add_argument("--trace", action="store_true",
                   help="one line per node: run time apart from Numba's compile time, outputs, "
                        "scale and zero point of quantized tensors")
    r.add_argument("--profile", nargs="?", const="onnxruntime_profile_", default=None,
                   metavar="PREFIX",
                   help="write a profile in onnxruntime's JSON format (Chrome trace events) to "
                        "PREFIX_<date>_<time>.json (default prefix: onnxruntime_profile_)")
    r.add_argument("--compare-ort", action="store_true",
                   help="run onnxruntime on the same feeds and report the error per output")
    r.add_argument("--required-operators", metavar="CONFIG",
                   help="refuse ops (and, if it has types, element types) this reduced-operator "
                        "config does not list; import only the op families the model needs")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_run)
    oc = sub.add_parser("ops-config", help="onnxruntime's reduced-build config "
                        "(required_operators.config) for models")
    oc.add_argument("models", nargs="+", metavar="MODEL")
    oc.add_argument("--types", action="store_true",
                    help="add the element types per op (onnxruntime's --enable_type_reduction)")
    oc.add_argument("--level", choices=("disable", "extended"), default="disable",
                    help="disable: the models' ops as written (onnxruntime's tool with "
                         "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL=disable; default); "
                         "extended: after onnxruntime's QDQ fusions, the graph a refrt session "
                         "runs at its default level")
    oc.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    oc.set_defaults(func=cmd_ops_config)
    op = sub.add_parser("optimize", help="onnxruntime's transformer fusions (Attention, "
                        "SkipLayerNormalization, ...) on a BERT-style model")
    op.add_argument("model", metavar="MODEL")
    op.add_argument("output", metavar="OUT", help="where the optimized model is written")
    op.add_argument("--model-type", default="bert",
                    help="the model family (onnxruntime's --model_type); supported: bert")
    op.add_argument("--num-heads", type=int, default=0,
                    help="attention heads (default 0: detect them from the graph)")
    op.add_argument("--hidden-size", type=int, default=0,
                    help="hidden size (default 0: detect it from the graph)")
    op.add_argument("--json", action="store_true")
    op.set_defaults(func=cmd_optimize)
    q = sub.add_parser("quantize", help="quantize a float model (dynamic or static)",
                       add_help=False)
    q.add_argument("args", nargs=argparse.REMAINDER)
    q.set_defaults(func=lambda a: _quantize_main(a.args))
    from .debug.cli import add_parser as add_compare
    add_compare(sub)
    from .testing.cli import add_parser as add_fuzz
    add_fuzz(sub)
    from .explainer.cli import add_parser as add_explain
    add_explain(sub)
    h = sub.add_parser("host", help="this CPU, the kernels refrt picks, onnxruntime's int8 GEMM here")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=cmd_host)
    d = sub.add_parser("demo", help="the bundled digits model: refrt vs onnxruntime")
    d.add_argument("--repeats", type=int, default=20)
    d.add_argument("--per-channel", action="store_true", help="quantize weights per channel")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["quantize"]:     # its own parser (refrt.quantization.cli) takes every flag
            return _quantize_main(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (RefrtError, OSError, ValueError) as e:
        if isinstance(e, BrokenPipeError):
            return _stdout_closed()
        print(f"refrt: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _stdout_closed() -> int:
    """The reader of our output went away (``refrt run --json | head``): stop quietly. Python's
    own flush at exit would fail again, so stdout goes to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
