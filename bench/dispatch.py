"""Per-node dispatch overhead: a chain of 1000 cheap nodes on a 1-element tensor.

    python -m bench.dispatch        (or python bench/dispatch.py)

The chain repeats Add(constant), Neg, Add(constant), Identity on a float32 [1] tensor. Per-node
cost = chain run time / 1000; the marginal cost subtracts a one-node model's run time (the fixed
cost of a run: feed checks, plan set-up, output copies) and divides by 999. refrt vs ORT with
optimizations disabled (every node runs) and with all optimizations (ORT may drop the Identity
nodes). Then refrt's run is profiled with cProfile and the top entries are reported per node.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import bench  # noqa: F401  (thread-pool wait policies, before NumPy is imported)

# isort: split
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from bench import common as C

N_NODES = 1000
PATTERN = ("Add", "Neg", "Add", "Identity")


def chain_model(n: int):
    nodes, inits = [], [numpy_helper.from_array(np.array([0.5], np.float32), "c")]
    prev = "x"
    for i in range(n):
        op = PATTERN[i % len(PATTERN)]
        out = "y" if i == n - 1 else f"t{i}"
        inputs = [prev, "c"] if op == "Add" else [prev]
        nodes.append(helper.make_node(op, inputs, [out], name=f"n{i}"))
        prev = out
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _category(filename: str, func: str) -> str:
    f = filename.replace("\\", "/")
    if "/refrt/executor.py" in f:
        return "executor loop"
    if "/refrt/ops/" in f:
        return "op bodies"
    if "/refrt/session.py" in f or "/refrt/types.py" in f:
        return "session: feed validation, output copies"
    if "/refrt/" in f:
        return "other refrt"
    if "_ufunc_config.py" in f or "_make_extobj" in func or "ContextVar" in func:
        return "np.errstate enter/exit (called by op bodies)"
    if f == "~":
        return "built-ins / C methods (isinstance, astype, asarray, dict ops, ...)"
    return "other Python (NumPy's Python layer, ...)"


def profile_refrt(sess, feed, runs: int):
    by_cat, entries = C.profile_runs(sess, feed, runs, _category)
    total_nodes = runs * N_NODES
    rows = [[f"`{name}`", f"{nc / total_nodes:.2f}", f"{tt / total_nodes * 1e6:.2f}",
             f"{ct / total_nodes * 1e6:.2f}"] for tt, ct, nc, name in entries[:14]]
    total = sum(by_cat.values())
    cats = [[c, f"{t / total_nodes * 1e6:.2f}", f"{100 * t / total:.0f} %"]
            for c, t in sorted(by_cat.items(), key=lambda kv: -kv[1])]
    return rows, cats, total / total_nodes


def main(argv=None):
    args = C.arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    C.set_threads(C.max_threads())
    load0 = C.settle(args)
    chain, single = chain_model(N_NODES), chain_model(1)
    feed = {"x": np.array([1.0], np.float32)}
    sessions = {
        "refrt": C.refrt_session(chain),
        "ORT (no opt.)": C.ort_session(chain, threads=1, optimize=False),
        "ORT (all opt.)": C.ort_session(chain, threads=1, optimize=True),
    }
    singles = {
        "refrt": C.refrt_session(single),
        "ORT (no opt.)": C.ort_session(single, threads=1, optimize=False),
        "ORT (all opt.)": C.ort_session(single, threads=1, optimize=True),
    }
    expected = sessions["ORT (no opt.)"].run(None, feed)[0]
    agree = all(np.array_equal(s.run(None, feed)[0], expected) for s in sessions.values())
    fns = {f"{k} chain": (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}
    fns.update({f"{k} 1 node": (lambda s=s: s.run(None, feed)) for k, s in singles.items()})
    t = C.measure(fns, repeats=repeats, warmup=3, min_sample=0.05)
    rows, per_node = [], {}
    for k in sessions:
        tc, t1 = t[f"{k} chain"].median, t[f"{k} 1 node"].median
        per_node[k] = (tc / N_NODES, (tc - t1) / (N_NODES - 1))
        rows.append([k, C.fmt_time(tc), C.fmt_time(t1), f"{tc / N_NODES * 1e6:.2f}",
                     f"{(tc - t1) / (N_NODES - 1) * 1e6:.2f}", C.fmt_n(t[f"{k} chain"])])
    headers = ["runtime", "1000-node run", "1-node run", "µs per node", "marginal µs per node", "n"]
    C.print_table("dispatch overhead", headers, rows)

    runs = 20 if args.quick else 100
    prof_rows, cats, prof_per_node = profile_refrt(sessions["refrt"], feed, runs)
    prof_headers = ["function", "calls per node", "own µs per node", "cumulative µs per node"]
    C.print_table(f"cProfile of refrt ({runs} runs)", prof_headers, prof_rows)
    C.print_table("by category", ["category", "own µs per node", "share"], cats)

    r_raw, r_marg = per_node["refrt"]
    o_raw = per_node["ORT (no opt.)"][0]
    body = "\n".join([
        f"Chain of {N_NODES} nodes ({', '.join(PATTERN)}, repeated) on a float32 [1] tensor; "
        f"{repeats} interleaved rounds, blocks >= 50 ms; at the start {load0}. ORT on 1 intra-op "
        f"thread (nothing to parallelise). Outputs of all runtimes "
        f"{'agree' if agree else 'DISAGREE'}.",
        "",
        C.md_table(headers, rows),
        "",
        f"### Where refrt's time per node goes (cProfile, {runs} runs of the chain)\n",
        f"cProfile adds its own cost per call: profiled total {prof_per_node * 1e6:.2f} µs per node "
        f"vs {r_raw * 1e6:.2f} µs unprofiled. Own time = time in the function itself, excluding "
        f"the functions it calls.\n",
        C.md_table(["category", "own µs per node", "share"], cats),
        "",
        C.md_table(prof_headers, prof_rows),
    ])
    targets = [C.target("dispatch overhead per node", "<= 5 µs",
                        f"refrt {r_marg * 1e6:.2f} µs marginal ({r_raw * 1e6:.2f} µs incl. the run's "
                        f"fixed cost); ORT no opt. {o_raw * 1e6:.2f} µs",
                        f"{r_marg * 1e6 / 5:.2f}x of budget", r_marg <= 5e-6,
                        f"refrt / ORT: {C.fmt_ratio(r_raw / o_raw)}")]
    if C.should_write(args):
        C.write_section("dispatch", body, targets)
    return body


if __name__ == "__main__":
    main()
