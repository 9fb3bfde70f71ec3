"""End to end: BERT-base encoder (FP32 and dynamic INT8) and the bundled digits CNN (FP32 and
static INT8, QDQ and QOperator), refrt vs onnxruntime latency.

    python -m bench.end_to_end      (or python bench/end_to_end.py)

BERT-base: ``refrt.testing.models.bert_encoder(layers=12, hidden=768, heads=12, vocab=30522,
max_positions=512)`` with random weights, batch 1, sequence 128; INT8 models from
``onnxruntime.quantization.quantize_dynamic`` with weight_type QInt8 and QUInt8. Digits CNN:
``refrt/data/digits_cnn.onnx`` on the 360 test images, quantized with ``quantize_static``
(MinMax calibration on the 64 bundled calibration images) as QDQ (int8 activations and weights,
the tool's defaults) and as QOperator (uint8 activations, int8 weights).

Runtimes: refrt, ORT with all graph optimizations, ORT with optimizations disabled (op by op,
the numerics refrt follows). All threads of the machine. A model refrt cannot run yet is listed
as "unsupported: <op>". For the BERT models the time per op type is broken down for refrt (a
session hook, which runs every node unfused) and ORT (its profiler, optimizations disabled), and
refrt is also timed in child processes without the benchmark's thread-pool settings (importing
refrt first, then NumPy first). refrt is also timed without fusion
(graph_optimization_level=ORT_DISABLE_ALL; the outputs are checked to be the same bits) and, for
the BERT models, with OpenBLAS on 1 thread (Numba kernels keep all threads).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import bench  # noqa: F401  (thread-pool wait policies, before NumPy is imported)

# isort: split
import numpy as np

from bench import common as C

BERT = dict(layers=12, hidden=768, heads=12, vocab=30522, max_positions=512)
SEQ = 128
RUNTIMES = ("refrt", "ORT (all opt.)", "ORT (no opt.)")


def build_bert(folder: Path, small: bool) -> dict:
    """FP32 + quantize_dynamic QInt8/QUInt8 BERT files -> {label: path}."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from refrt.testing.models import bert_encoder

    cfg = dict(BERT, layers=2) if small else BERT
    fp32 = folder / "bert_fp32.onnx"
    onnx.save(bert_encoder(**cfg), fp32)
    paths = {"FP32": fp32}
    for wt in ("QInt8", "QUInt8"):
        out = folder / f"bert_int8_{wt}.onnx"
        quantize_dynamic(str(fp32), str(out), weight_type=getattr(QuantType, wt))
        paths[f"INT8 dynamic, {wt} weights"] = out
    return paths


class _Calib:
    def __init__(self, images, batch=16):
        self.batches = [images[i:i + batch] for i in range(0, len(images), batch)]

    def get_next(self):
        return {"input": self.batches.pop(0)} if self.batches else None

    def rewind(self):  # not used by MinMax, kept for the reader protocol
        pass


def build_digits(folder: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    import refrt

    data_dir = Path(refrt.__file__).parent / "data"
    d = np.load(data_dir / "digits_test.npz")
    fp32 = data_dir / "digits_cnn.onnx"
    paths = {"FP32": fp32}
    qdq = folder / "digits_qdq.onnx"
    quantize_static(str(fp32), str(qdq), _Calib(d["calib"]), quant_format=QuantFormat.QDQ)
    paths["INT8 static QDQ (s8 act., s8 weights)"] = qdq
    qop = folder / "digits_qoperator.onnx"
    quantize_static(str(fp32), str(qop), _Calib(d["calib"]), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    paths["INT8 static QOperator (u8 act., s8 weights)"] = qop
    return paths, d["x"], d["y"]


def refrt_or_reason(path, feeds):
    """(session, None) or (None, 'unsupported: <op>' / 'error: ...')."""
    import refrt
    from refrt.errors import NodeError, UnsupportedOpError

    try:
        s = refrt.InferenceSession(str(path))
        s.run(None, feeds)
        return s, None
    except UnsupportedOpError as e:
        dom = "" if e.domain in ("", "ai.onnx") else f"{e.domain}."
        return None, f"unsupported: {dom}{e.op_type}"
    except NodeError as e:
        cause = e.__cause__
        if isinstance(cause, UnsupportedOpError):
            return None, f"unsupported: {cause.op_type}"
        return None, f"error: {str(e)[:120]}"
    except Exception as e:  # report, do not stop the other measurements
        return None, f"error: {type(e).__name__}: {str(e)[:120]}"


class OpTimer:
    """refrt session hook: wall time per op type."""

    def __init__(self):
        self.t0 = 0.0
        self.by_op: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def before_node(self, node, inputs):
        self.t0 = time.perf_counter()

    def on_node(self, node, inputs, outputs):
        dt = time.perf_counter() - self.t0
        self.by_op[node.op_type] = self.by_op.get(node.op_type, 0.0) + dt
        self.count[node.op_type] = self.count.get(node.op_type, 0) + 1


def refrt_op_breakdown(sess, feeds, runs=3):
    """Median over ``runs`` runs of the time per op type, and the node count per op type."""
    per_run, counts = [], {}
    for _ in range(runs):
        C.wait_briefly_for_quiet()
        timer = OpTimer()
        sess.add_hook(timer)
        try:
            sess.run(None, feeds)
        finally:
            sess.remove_hook(timer)
        per_run.append(timer.by_op)
        counts = timer.count
    return {op: statistics.median(r.get(op, 0.0) for r in per_run) for op in counts}, counts


def ort_op_breakdown(path, feeds, threads, runs=3) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", C.ORT_SPINNING)
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.gettempdir()) / "refrt_bench_ort_profile")
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        C.wait_briefly_for_quiet()
        s.run(None, feeds)
    prof = s.end_profiling()
    events = json.loads(Path(prof).read_text())
    os.unlink(prof)
    by_op: dict[str, list] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            by_op.setdefault(op, []).append(ev["dur"] * 1e-6)
    # every node appears runs + 1 times (the first run warms up): drop each node's slowest
    return {op: sum(sorted(ts)[:len(ts) * runs // (runs + 1)]) / runs for op, ts in by_op.items()}


def what_if(r_ops: dict, o_ops: dict) -> str:
    """How far refrt would get if its slowest op types ran at ORT's speed (sums over nodes)."""
    total_r, total_o = sum(r_ops.values()), sum(o_ops.values())
    order = [op for op in sorted(r_ops, key=r_ops.get, reverse=True) if o_ops.get(op)]
    lines, t = [], total_r
    for i, op in enumerate(order[:3]):
        t = t - r_ops[op] + o_ops[op]
        names = ", ".join(order[:i + 1])
        lines.append(f"{names} at ORT's speed: {C.fmt_time(t)} ({C.fmt_ratio(t / total_o)} ORT's sum)")
    return "What the per-op times imply (refrt's sum over nodes if its slowest op types ran as " \
           "fast as ORT's, everything else unchanged): " + "; ".join(lines) + "."


_CHILD = r"""
import json, os, sys, time, statistics
if sys.argv[3] == "numpy-first":
    import numpy as np
import refrt
if sys.argv[3] in ("refrt-first", "numpy-first"):
    refrt.tune_process()
import numpy as np
from refrt.testing.models import bert_feeds
feeds = bert_feeds(batch=1, seq=%d, vocab=%d)
if sys.argv[3] == "onnxruntime":
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
else:
    s = refrt.InferenceSession(sys.argv[1])
s.run(None, feeds); s.run(None, feeds)
ts = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); s.run(None, feeds); ts.append(time.perf_counter() - t)
print(json.dumps({"median": statistics.median(ts), "n": len(ts)}))
"""


def child_latency(path, env_overrides: dict, runs: int, numpy_first: bool = False,
                  runtime: str = "refrt", tuned: bool = True) -> dict | None:
    env = dict(os.environ)
    for k, v in env_overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    code = _CHILD % (SEQ, BERT["vocab"])
    C.wait_briefly_for_quiet(5.0)
    try:
        order = ("onnxruntime" if runtime == "onnxruntime" else "untuned" if tuned is False
                 else "numpy-first" if numpy_first else "refrt-first")
        out = subprocess.run([sys.executable, "-c", code, str(path), str(runs), order], env=env,
                             capture_output=True, text=True, timeout=600, cwd=str(C.ROOT))
        return json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as e:
        print("child run failed:", e, file=sys.stderr)
        return None


BLAS1 = "refrt, OpenBLAS 1 thread"
UNFUSED = "refrt, no fusion"   # graph_optimization_level ORT_DISABLE_ALL: every node its own step


def _blas_one_thread(fn):
    from threadpoolctl import threadpool_limits

    def run():
        with threadpool_limits(1, user_api="blas"):
            return fn()
    return run


def measure_models(paths: dict, feeds: dict, threads: int, repeats: int, budget: float,
                   blas1: bool = False) -> list:
    """-> rows [(label, {runtime: Timing or reason}, outputs, refrt session, path)]; with
    ``blas1`` refrt is also timed with OpenBLAS limited to 1 thread (Numba keeps all)."""
    results = []
    for label, path in paths.items():
        print(f"\n{label}: {path.name}", flush=True)
        r_sess, reason = refrt_or_reason(path, feeds)
        o_opt = C.ort_session(str(path), threads=threads, optimize=True)
        o_raw = C.ort_session(str(path), threads=threads, optimize=False)
        fns = {}
        if r_sess is not None:
            fns["refrt"] = lambda: r_sess.run(None, feeds)
        fns["ORT (all opt.)"] = lambda: o_opt.run(None, feeds)
        fns["ORT (no opt.)"] = lambda: o_raw.run(None, feeds)
        if blas1 and r_sess is not None and threads > 1:
            try:
                fns[BLAS1] = _blas_one_thread(lambda: r_sess.run(None, feeds))
            except ImportError:
                pass
        r_plain = None
        if r_sess is not None and len(r_sess._plan.fused_steps) != len(r_sess._plan.steps):
            import refrt

            so = refrt.SessionOptions()
            so.graph_optimization_level = refrt.GraphOptimizationLevel.ORT_DISABLE_ALL
            r_plain = refrt.InferenceSession(str(path), so)
            fns[UNFUSED] = lambda: r_plain.run(None, feeds)
        t = C.measure(fns, repeats=repeats, warmup=3, min_sample=0.05, budget=budget)
        res = {k: t.get(k) for k in (*RUNTIMES, BLAS1, UNFUSED)}
        if reason:
            res["refrt"] = reason
        outs = {"ORT (all opt.)": o_opt.run(None, feeds)[0], "ORT (no opt.)": o_raw.run(None, feeds)[0]}
        if r_sess is not None:
            outs["refrt"] = r_sess.run(None, feeds)[0]
        if r_plain is not None:
            same = np.array_equal(r_plain.run(None, feeds)[0].view(np.uint8), outs["refrt"].view(np.uint8))
            res["fusion same bits"] = same
        results.append((label, res, outs, r_sess, path))
        for k in (*RUNTIMES, BLAS1, UNFUSED):
            v = res[k]
            if v is None:
                continue
            print(f"  {k:16s} {C.fmt_time(v.median) + f' (n={C.fmt_n(v)})' if hasattr(v, 'median') else v}")
        # release the sessions before the next model (the timed lambdas close over them)
        o_opt = o_raw = r_plain = None
    return results


def latency_table(results, accuracy_labels=None):
    headers = ["model", "refrt", "ORT (all opt.)", "ORT (no opt.)", "refrt / ORT all opt.",
               "refrt / ORT no opt.", "max |refrt - ORT no opt.|", "n (refrt/ORT)"]
    if accuracy_labels is not None:
        headers.insert(-1, "accuracy refrt / ORT")
    with_blas1 = any(res.get(BLAS1) is not None for _, res, *_ in results)
    with_unfused = any(res.get(UNFUSED) is not None for _, res, *_ in results)
    if with_blas1:
        headers.insert(2, BLAS1)
    if with_unfused:
        headers.insert(2, UNFUSED)
    rows = []
    for label, res, outs, _, _ in results:
        r = res["refrt"]
        o1, o2 = res["ORT (all opt.)"], res["ORT (no opt.)"]
        if hasattr(r, "median"):
            row = [label, C.fmt_time(r.median), C.fmt_time(o1.median), C.fmt_time(o2.median),
                   C.fmt_ratio(r.median / o1.median), C.fmt_ratio(r.median / o2.median),
                   f"{float(np.abs(outs['refrt'].astype(np.float64) - outs['ORT (no opt.)']).max()):.3g}"]
        else:
            row = [label, r, C.fmt_time(o1.median), C.fmt_time(o2.median), "-", "-", "-"]
        if with_blas1:
            b1 = res.get(BLAS1)
            row.insert(2, C.fmt_time(b1.median) + f" ({C.fmt_ratio(b1.median / o1.median)})" if b1 else "-")
        if with_unfused:
            u = res.get(UNFUSED)
            same = {True: ", same bits", False: ", BITS DIFFER"}.get(res.get("fusion same bits"), "")
            row.insert(2, C.fmt_time(u.median) + f" ({C.fmt_ratio(u.median / o1.median)}{same})"
                       if u else "-")
        if accuracy_labels is not None:
            acc = {k: float((np.argmax(v, axis=1) == accuracy_labels).mean()) for k, v in outs.items()}
            row.append(f"{acc['refrt']:.3f} / {acc['ORT (no opt.)']:.3f}" if "refrt" in acc
                       else f"- / {acc['ORT (no opt.)']:.3f}")
        row.append(f"{C.fmt_n(r) if hasattr(r, 'repeats') else '-'} / {C.fmt_n(o1)}")
        rows.append(row)
    return headers, rows


def main(argv=None):
    p = C.arg_parser(__doc__.splitlines()[0])
    p.add_argument("--skip-bert", action="store_true", help="only the digits CNN")
    args = p.parse_args(argv)
    from refrt.testing.models import bert_feeds

    repeats = 3 if args.quick else args.repeats
    threads = C.max_threads()
    C.set_threads(threads)
    load0 = C.settle(args)
    t_start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="refrt_bench_")
    folder = Path(tmp.name)
    parts, targets = [], []

    if not args.skip_bert:
        t0 = time.perf_counter()
        paths = build_bert(folder, small=args.quick)
        print(f"built and quantized BERT in {time.perf_counter() - t0:.0f} s", flush=True)
        feeds = bert_feeds(batch=1, seq=SEQ, vocab=BERT["vocab"])
        bert = measure_models(paths, feeds, threads, repeats, budget=20.0, blas1=True)
        headers, rows = latency_table(bert)
        C.print_table("BERT-base, batch 1, seq 128", headers, rows)
        sizes = {label: os.path.getsize(path) / 1e6 for label, path in paths.items()}
        parts += [
            f"### BERT-base encoder (12 layers, hidden 768, 12 heads, seq {SEQ}, batch 1)\n",
            f"{threads} threads; medians of up to {repeats} interleaved rounds after 3 warm-up runs "
            f"(slow cells capped by a time budget; rounds disturbed by other processes dropped: "
            f"see n). Model sizes: "
            + ", ".join(f"{k} {v:.0f} MB" for k, v in sizes.items()) + ".\n",
            C.md_table(headers, rows), ""]

        # targets
        by_label = {label: res for label, res, *_ in bert}
        for label, goal_name in (("FP32", "FP32"), ("INT8 dynamic, QInt8 weights", "INT8 (QInt8)"),
                                 ("INT8 dynamic, QUInt8 weights", "INT8 (QUInt8)")):
            res = by_label.get(label)
            if res is None:
                continue
            r, o1, o2 = res["refrt"], res["ORT (all opt.)"], res["ORT (no opt.)"]
            b1 = res.get(BLAS1)
            if hasattr(r, "median"):
                ratio = r.median / o1.median
                extra = (f"; refrt with OpenBLAS on 1 thread {C.fmt_time(b1.median)}, "
                         f"{C.fmt_ratio(b1.median / o1.median)}" if b1 else "")
                targets.append(C.target(
                    f"BERT-base {goal_name} latency, batch 1, seq {SEQ}", "<= 1.5x ORT",
                    f"refrt {C.fmt_time(r.median)} vs ORT {C.fmt_time(o1.median)} (no opt. "
                    f"{C.fmt_time(o2.median)}, {C.fmt_ratio(r.median / o2.median)}{extra})",
                    C.fmt_ratio(ratio), ratio <= 1.5, "ratio vs ORT with all optimizations"))
            else:
                targets.append(C.target(f"BERT-base {goal_name} latency", "<= 1.5x ORT", r, "-", False))

        # where the time goes
        for label, res, outs, r_sess, path in bert:
            if r_sess is None:
                continue
            r_ops, r_count = refrt_op_breakdown(r_sess, feeds)
            o_ops = ort_op_breakdown(path, feeds, threads)
            total_r, total_o = sum(r_ops.values()), sum(o_ops.values())
            rows = []
            for op in sorted(r_ops, key=r_ops.get, reverse=True)[:10]:
                ot = o_ops.get(op)
                rows.append([op, r_count[op], C.fmt_time(r_ops[op]), f"{100 * r_ops[op] / total_r:.0f} %",
                             C.fmt_time(ot) if ot else "-", C.fmt_ratio(r_ops[op] / ot) if ot else "-"])
            C.print_table(f"{label}: time per op type", ["op", "nodes", "refrt", "share", "ORT no opt.", "refrt/ORT"], rows)
            parts += [f"#### {label}: time per op type (median of 3 runs; refrt by a session "
                      f"hook -- with a hook attached refrt runs every node on its own, unfused -- "
                      f"ORT no-opt. by its profiler)\n",
                      f"Sum over nodes: refrt {C.fmt_time(total_r)}, ORT {C.fmt_time(total_o)}. "
                      + "; ".join(f"{op}: {100 * r_ops[op] / total_r:.0f} % of refrt's time"
                                  + (f", {C.fmt_ratio(r_ops[op] / o_ops[op])} ORT's" if o_ops.get(op) else "")
                                  for op in sorted(r_ops, key=r_ops.get, reverse=True)[:3]) + ".\n",
                      C.md_table(["op", "nodes", "refrt", "share of refrt", "ORT (no opt.)",
                                  "refrt / ORT"], rows), "", what_if(r_ops, o_ops), ""]
        # refrt's own thread-pool defaults, and what happens when NumPy comes first
        int8_path = paths.get("INT8 dynamic, QInt8 weights")
        if int8_path is not None and not args.quick:
            runs = 5
            unset = {k: None for k in bench.WAIT_POLICY}
            refrt_first = child_latency(int8_path, unset, runs)
            numpy_first = child_latency(int8_path, unset, runs, numpy_first=True)
            untuned = child_latency(int8_path, unset, runs, tuned=False)
            ort_alone = child_latency(int8_path, {}, runs, runtime="onnxruntime")
            if refrt_first and numpy_first:
                ort_row = ([["onnxruntime alone in its process (all optimizations, no spinning)",
                             C.fmt_time(ort_alone["median"])]] if ort_alone else [])
                parts += [
                    "#### Thread-pool wait policy (INT8 QInt8 BERT, child processes without the "
                    f"benchmark's variables, median of {runs} runs after 2 warm-up runs)\n",
                    C.md_table(["process", "latency"], [
                        ["`refrt.tune_process()` before NumPy: "
                         + ", ".join(f"{k}={v}" for k, v in bench.WAIT_POLICY.items())
                         + ", glibc mmap threshold raised", C.fmt_time(refrt_first["median"])],
                        ["`import numpy` first, then `refrt.tune_process()`: OpenBLAS has read its "
                         "(unset) variable and spins; OMP_WAIT_POLICY and malloc still set",
                         C.fmt_time(numpy_first["median"])],
                    ] + ([["no tuning (`import refrt` alone changes nothing)",
                           C.fmt_time(untuned["median"])]] if untuned else []) + ort_row),
                    ("\nEach runtime alone in its own process, one after the other: refrt / "
                     f"onnxruntime {C.fmt_ratio(refrt_first['median'] / ort_alone['median'])} "
                     "(the table above interleaves both runtimes in one process, where each one's "
                     "run also evicts the other's weights from the caches).") if ort_alone else "",
                    "\nrefrt alternates Numba kernels (OpenMP pool) with NumPy/OpenBLAS calls; a "
                    "pool whose idle workers spin holds the cores the other pool needs next.", ""]
        del bert

    digits_paths, x, y = build_digits(folder)
    digits = measure_models(digits_paths, {"input": x}, threads, repeats, budget=10.0)
    headers, rows = latency_table(digits, accuracy_labels=y)
    C.print_table("digits CNN, batch 360", headers, rows)
    parts += ["### Digits CNN (refrt/data/digits_cnn.onnx), batch 360\n",
              f"{threads} threads; accuracy = argmax vs the 360 labels.\n",
              C.md_table(headers, rows), ""]

    elapsed = time.perf_counter() - t_start
    parts.insert(0, f"Section took {elapsed:.0f} s; at the start {load0}; "
                    f"load average at the end {C.load_text()}. Times are medians per run.\n")
    body = "\n".join(parts)
    tmp.cleanup()
    if C.should_write(args):
        C.write_section("end_to_end", body, targets)
    return body


if __name__ == "__main__":
    main()
