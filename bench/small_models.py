"""Small models with many nodes: the speech RNN, and the same with 100+ Constant nodes feeding tiny ops.

    python -m bench.small_models                       (or python bench/small_models.py)
    python -m bench.small_models --baseline DIR        (also time the refrt checked out in DIR)

Models (``frames`` float32 [30, 2, 40]):

* ``speech_rnn``: ``refrt.testing.models.speech_rnn()``: a bidirectional LSTM, a GRU, shape
  plumbing (Shape, Gather, Slice, Concat, Reshape), MatMul + Add, LogSoftmax; 17 nodes.
* ``speech_rnn + constants``: the same with every initializer written as a Constant node (as
  exporters do without constant folding) and a tail of 24 blocks on the [30, 2, 12] output,
  each five Constant nodes (a scale, a bias row, three reshape dims), a Concat of the dims and
  Mul, Add, Reshape on the data: 134 Constant nodes, 247 nodes in all.

refrt (constants folded at plan time) and refrt at ``ORT_DISABLE_ALL`` (every node on every
run, as before folding) against onnxruntime with all optimizations and with none, in the same
process, interleaved; medians over rounds. ``--baseline DIR`` times the refrt of another
checkout (e.g. an earlier commit in a ``git worktree``) in a child process on the same models
and shows its times beside. Then refrt's run is profiled with cProfile and the time per run is
split by where it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
if "--child" in sys.argv:   # the baseline's refrt before anything imports refrt
    sys.path.insert(0, os.environ["BENCH_BASELINE"])

import bench  # noqa: F401  (thread-pool wait policies, before NumPy is imported)

# isort: split
import numpy as np
from onnx import helper, numpy_helper

from bench import common as C

FRAMES = (30, 2, 40)
BLOCKS = 24


def speech_model():
    from refrt.testing.models import speech_rnn

    return speech_rnn()


def constant_heavy_model(blocks: int = BLOCKS):
    """speech_rnn with its initializers as Constant nodes and ``blocks`` tail blocks of Constant
    nodes feeding Mul, Add, Concat and Reshape on tiny tensors (see the module docstring)."""
    m = speech_model()
    g = m.graph
    nodes = [helper.make_node("Constant", [], [t.name], name=f"const.{t.name}", value=t)
             for t in g.initializer]
    del g.initializer[:]
    body = list(g.node)
    for n in body:        # the model's output becomes the tail's input
        for i, o in enumerate(n.output):
            if o == "log_probs":
                n.output[i] = "log_probs.0"
    nodes += body
    rng = np.random.default_rng(1)
    classes = g.output[0].type.tensor_type.shape.dim[2].dim_value
    prev = "log_probs.0"

    def const(name, array):
        nodes.append(helper.make_node("Constant", [], [name], name=f"const.{name}",
                                      value=numpy_helper.from_array(np.asarray(array), name)))
        return name

    for k in range(blocks):
        scale = const(f"t{k}.scale", np.float32(1 + 1e-3 * (k % 5)))
        bias = const(f"t{k}.bias", (rng.standard_normal(classes) * 1e-3).astype(np.float32))
        dims = [const(f"t{k}.d{j}", np.array([v], np.int64)) for j, v in enumerate((0, 0, classes))]
        nodes.append(helper.make_node("Concat", dims, [f"t{k}.shape"], axis=0, name=f"t{k}.concat"))
        nodes.append(helper.make_node("Mul", [prev, scale], [f"t{k}.m"], name=f"t{k}.mul"))
        nodes.append(helper.make_node("Add", [f"t{k}.m", bias], [f"t{k}.a"], name=f"t{k}.add"))
        out = "log_probs" if k == blocks - 1 else f"t{k}.y"
        nodes.append(helper.make_node("Reshape", [f"t{k}.a", f"t{k}.shape"], [out], name=f"t{k}.reshape"))
        prev = out
    del g.node[:]
    g.node.extend(nodes)
    return m


MODELS = {"speech_rnn": speech_model, "speech_rnn + constants": constant_heavy_model}


def feeds():
    return {"frames": np.random.default_rng(0).standard_normal(FRAMES).astype(np.float32)}


def _category(filename: str, func: str) -> str:
    f = filename.replace("\\", "/")
    if "/refrt/ops/rnn.py" in f:
        return "RNN cell loop (refrt/ops/rnn.py)"
    if "/kernels/" in f:
        return "kernels/ (Numba kernels and their Python wrappers)"
    if "/numba/" in f:
        return "Numba's dispatch and thread control"
    if "/refrt/ops/" in f:
        return "other op bodies (refrt/ops)"
    if "/refrt/executor.py" in f:
        return "executor loop"
    if "/refrt/session.py" in f or "/refrt/types.py" in f:
        return "session: feed checks, output copies"
    if "/refrt/" in f:
        return "other refrt"
    if f == "~":
        return "built-ins and C methods (NumPy ufuncs, reshape, dict ops, ...)"
    return "other Python (NumPy's Python layer, ...)"


def profile(sess, feed, runs: int) -> tuple[list, list, float]:
    by_cat, entries = C.profile_runs(sess, feed, runs, _category)
    total = sum(by_cat.values())
    cats = [[c, f"{t / runs * 1e3:.3f}", f"{100 * t / total:.0f} %"]
            for c, t in sorted(by_cat.items(), key=lambda kv: -kv[1])]
    top = [[f"`{name}`", f"{nc / runs:.0f}", f"{tt / runs * 1e3:.3f}", f"{ct / runs * 1e3:.3f}"]
           for tt, ct, nc, name in entries[:12]]
    return cats, top, total / runs


def _refrt_times(repeats: int) -> dict:
    """{model: {"refrt": s, "refrt (ORT_DISABLE_ALL)": s}} in this process (for --child)."""
    import refrt

    feed = feeds()
    fns = {}
    for name, make in MODELS.items():
        m = make()
        fast = refrt.InferenceSession(m)
        plain = refrt.InferenceSession(m, graph_optimization_level=0)
        fns[f"{name}|refrt"] = lambda s=fast: s.run(None, feed)
        fns[f"{name}|refrt (ORT_DISABLE_ALL)"] = lambda s=plain: s.run(None, feed)
    t = C.measure(fns, repeats=repeats, warmup=3, min_sample=0.05)
    out: dict = {}
    for key, timing in t.items():
        model, runtime = key.split("|")
        out.setdefault(model, {})[runtime] = timing.median
    return out


def main(argv=None):
    p = C.arg_parser(__doc__.splitlines()[0])
    p.add_argument("--baseline", help="a checkout of an earlier refrt to time beside this one")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    if args.child:   # time the refrt found first on the path (BENCH_BASELINE), print JSON
        import refrt
        assert Path(refrt.__file__).resolve().is_relative_to(os.environ["BENCH_BASELINE"])
        print(json.dumps(_refrt_times(repeats)))
        return None
    import refrt
    from refrt import host

    C.set_threads(C.max_threads())
    load0 = C.settle(args)
    base = C.baseline_times(__file__, args.baseline, repeats) if args.baseline else None
    feed = feeds()
    threads = C.max_threads()
    fns, sessions, agree, sizes = {}, {}, {}, {}
    for name, make in MODELS.items():
        m = make()
        sizes[name] = (len(m.graph.node), sum(n.op_type == "Constant" for n in m.graph.node))
        runtimes = {
            "refrt": refrt.InferenceSession(m),
            "refrt (ORT_DISABLE_ALL)": refrt.InferenceSession(m, graph_optimization_level=0),
            "ORT (all opt.)": C.ort_session(m, threads=threads, optimize=True),
            "ORT (no opt.)": C.ort_session(m, threads=threads, optimize=False),
        }
        sessions[name] = runtimes
        outs = {k: s.run(None, feed)[0] for k, s in runtimes.items()}
        ref = outs["ORT (no opt.)"]
        agree[name] = (np.array_equal(outs["refrt"], outs["refrt (ORT_DISABLE_ALL)"]),
                       max(float(np.abs(v - ref).max()) for v in outs.values()))
        for k, s in runtimes.items():
            fns[f"{name}|{k}"] = lambda s=s: s.run(None, feed)
    t = C.measure(fns, repeats=repeats, warmup=3, min_sample=0.05)

    headers = ["model", "nodes (Constant)", "runtime", "median", "vs ORT all opt.", "n"]
    if base:
        headers.insert(4, "baseline refrt")
    rows, ratios = [], {}
    for name in MODELS:
        o = t[f"{name}|ORT (all opt.)"].median
        for k in sessions[name]:
            tk = t[f"{name}|{k}"]
            row = [name, f"{sizes[name][0]} ({sizes[name][1]})", k, C.fmt_time(tk.median),
                   C.fmt_ratio(tk.median / o), C.fmt_n(tk)]
            if base:
                b = base.get(name, {}).get(k)
                row.insert(4, C.fmt_time(b) + f" ({C.fmt_ratio(b / o)})" if b else "")
            rows.append(row)
        ratios[name] = t[f"{name}|refrt"].median / o
    C.print_table("small models", headers, rows)

    runs = 20 if args.quick else 100
    prof_parts = []
    for name in MODELS:
        cats, top, per_run = profile(sessions[name]["refrt"], feed, runs)
        C.print_table(f"cProfile of refrt, {name} ({runs} runs)", ["category", "own ms per run", "share"], cats)
        C.print_table("top functions", ["function", "calls per run", "own ms per run", "cum. ms per run"], top)
        prof_parts += [
            f"#### {name}: refrt's run under cProfile ({runs} runs; {per_run * 1e3:.2f} ms per "
            f"profiled run, cProfile's own cost included)\n",
            C.md_table(["where (own time)", "ms per run", "share"], cats), "",
            C.md_table(["function", "calls per run", "own ms per run", "cum. ms per run"], top), ""]

    note_agree = "; ".join(
        f"{name}: refrt folded vs unfolded {'bit-identical' if same else 'DIFFERENT'}, "
        f"max |refrt - ORT| {err:.1e}" for name, (same, err) in agree.items())
    body = "\n".join([
        f"CPU: {host.summary()}. Frames float32 {list(FRAMES)}; {repeats} interleaved rounds, "
        f"blocks >= 50 ms, medians (the machine is shared by other jobs: read differences under "
        f"~10 % as noise). ORT on {threads} intra-op threads. At the start {load0}. {note_agree}.",
        "",
        "`refrt (ORT_DISABLE_ALL)` runs every node on every run (no folding, no fused chains), as "
        "refrt ran Constant nodes before plan-time folding."
        + (f" `baseline refrt` is the checkout at `{base['commit']}`, timed in a child process "
           f"in the same run (its ratio against this run's ORT)." if base else ""),
        "",
        C.md_table(headers, rows),
        "",
        *prof_parts,
    ])
    targets = [C.target("small LSTM model (speech_rnn) vs ORT", "<= 3x",
                        f"refrt {C.fmt_time(t['speech_rnn|refrt'].median)}, ORT "
                        f"{C.fmt_time(t['speech_rnn|ORT (all opt.)'].median)}",
                        C.fmt_ratio(ratios["speech_rnn"]), ratios["speech_rnn"] <= 3,
                        f"with {sizes['speech_rnn + constants'][1]} Constant nodes: "
                        f"{C.fmt_ratio(ratios['speech_rnn + constants'])}")]
    if C.should_write(args):
        C.write_section("small_models", body, targets)
    return body


if __name__ == "__main__":
    main()
