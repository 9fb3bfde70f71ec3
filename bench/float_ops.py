"""Float ops in "ort" numerics (onnxruntime's order of arithmetic), one node each, against onnxruntime.

    python -m bench.float_ops                       (or python bench/float_ops.py)
    python -m bench.float_ops --baseline DIR        (also time the refrt checked out in DIR)

Each case is a one-node float32 model (constant weights as initializers, as exporters write them)
run by refrt in its default numerics ("ort": MLAS's SGEMM order, MLAS's exp/logistic/tanh,
onnxruntime's reduction orders) and by onnxruntime with optimizations off (the results refrt
reproduces bit for bit), both on all cores, interleaved; medians over rounds. The last column says
whether the two outputs are bit-identical. ``--baseline DIR`` times the refrt of another checkout
(for example the commit before a numerics change, in a ``git worktree``) in a child process on the
same cases and shows its times beside: the check that matching onnxruntime's bits did not cost
speed.
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
from onnx import TensorProto

from bench import common as C

F = TensorProto.FLOAT


def _rng():
    return np.random.default_rng(7)


def _case(op, shapes, inits=None, attrs=None, out_shape=None, positive=False):
    """(model, feed): one float32 input per shape in ``shapes`` (named x0, x1, ...), initializers
    ``inits`` ({name: array}, inputs after the fed ones), one output."""
    rng = _rng()
    inits = inits or {}
    names = [f"x{i}" for i in range(len(shapes))]
    feed = {}
    for n, s in zip(names, shapes):
        a = rng.standard_normal(s).astype(np.float32)
        feed[n] = np.abs(a) + np.float32(0.01) if positive else a
    inputs = [(n, F, list(s)) for n, s in zip(names, shapes)]
    inputs += [(k, F, list(v.shape)) for k, v in inits.items()]
    model = C.one_node_model(op, inputs, [("y", F, out_shape)], initializers=inits, attrs=attrs)
    return model, feed


def _w(*shape, scale=0.05):
    return (_rng().standard_normal(shape) * scale).astype(np.float32)


def cases(quick: bool) -> dict:
    """{name: (model, feed)}."""
    n = 1 << 16 if quick else 1 << 20
    out = {
        "LayerNormalization 256×768": _case(
            "LayerNormalization", [(256, 768)], {"scale": _w(768, scale=1.0), "bias": _w(768)},
            {"axis": -1, "epsilon": 1e-5}),
        "Softmax 1536×128": _case("Softmax", [(1536, 128)], attrs={"axis": -1}),
        "MatMul 256×768 @ 768×3072 (B const)": _case("MatMul", [(256, 768)], {"B": _w(768, 3072)}),
        "Gemm 32×9216 @ 9216×128 (B const)": _case("Gemm", [(32, 9216)], {"B": _w(9216, 128)}),
        "Conv 64→64 3×3 @56²": _case("Conv", [(1, 64, 56, 56)], {"W": _w(64, 64, 3, 3), "b": _w(64)},
                                     {"pads": [1, 1, 1, 1]}),
        "Conv depthwise 96 3×3 @56²": _case("Conv", [(1, 96, 56, 56)], {"W": _w(96, 1, 3, 3), "b": _w(96)},
                                            {"pads": [1, 1, 1, 1], "group": 96}),
        "Conv pointwise 96→24 @56²": _case("Conv", [(1, 96, 56, 56)], {"W": _w(24, 96, 1, 1), "b": _w(24)}),
        "GlobalAveragePool 256×14²": _case("GlobalAveragePool", [(1, 256, 14, 14)]),
        "AveragePool 3×3 64×56²": _case("AveragePool", [(1, 64, 56, 56)],
                                       attrs={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
        "ReduceMean last axis 256×768": _case("ReduceMean", [(256, 768), ],
                                              {"axes": np.array([-1], np.int64)}),
        f"Exp {n:,}": _case("Exp", [(n,)]),
        f"Log {n:,}": _case("Log", [(n,)], positive=True),
        f"Sigmoid {n:,}": _case("Sigmoid", [(n,)]),
        f"Tanh {n:,}": _case("Tanh", [(n,)]),
    }
    import onnx

    import refrt

    digits = onnx.load(Path(refrt.__file__).parent / "data" / "digits_cnn.onnx")
    x = _rng().random((360, 1, 8, 8), dtype=np.float32)
    out["digits CNN, batch 360 (model)"] = (digits, {digits.graph.input[0].name: x})
    if quick:
        for k in ("MatMul 256×768 @ 768×3072 (B const)", "Conv 64→64 3×3 @56²"):
            out.pop(k)
    return out


def _refrt_times(quick: bool, repeats: int) -> dict:
    """{case: seconds} for the refrt found first on the path (for --child)."""
    import refrt

    fns = {}
    for name, (model, feed) in cases(quick).items():
        s = refrt.InferenceSession(model)
        fns[name] = lambda s=s, feed=feed: s.run(None, feed)
    return {k: t.median for k, t in C.measure(fns, repeats=repeats, warmup=3, min_sample=0.05).items()}


def main(argv=None):
    p = C.arg_parser(__doc__.splitlines()[0])
    p.add_argument("--baseline", help="a checkout of an earlier refrt to time beside this one")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    if args.child:   # time the refrt found first on the path (BENCH_BASELINE), print JSON
        import refrt
        assert Path(refrt.__file__).resolve().is_relative_to(os.environ["BENCH_BASELINE"])
        print(json.dumps(_refrt_times(args.quick, repeats)))
        return None
    import refrt
    from refrt import host

    threads = C.max_threads()
    C.set_threads(threads)
    load0 = C.settle(args)
    base = C.baseline_times(__file__, args.baseline, repeats) if args.baseline else None
    fns, same = {}, {}
    for name, (model, feed) in cases(args.quick).items():
        r = refrt.InferenceSession(model)
        o = C.ort_session(model, threads=threads, optimize=False)
        same[name] = all(np.array_equal(a, b) for a, b in zip(r.run(None, feed), o.run(None, feed)))
        fns[f"{name}|refrt"] = lambda s=r, feed=feed: s.run(None, feed)
        fns[f"{name}|ORT"] = lambda s=o, feed=feed: s.run(None, feed)
    t = C.measure(fns, repeats=repeats, warmup=3, min_sample=0.05)

    headers = ["case", "refrt", "ORT (no opt.)", "refrt / ORT", "bit-identical to ORT", "n"]
    if base:
        headers[2:2] = ["baseline refrt", "refrt / baseline"]
    rows, worse = [], []
    for name in same:
        tr, to = t[f"{name}|refrt"], t[f"{name}|ORT"]
        row = [name, C.fmt_time(tr.median), C.fmt_time(to.median), C.fmt_ratio(tr.median / to.median),
               "yes" if same[name] else "no", C.fmt_n(tr)]
        if base:
            b = base.get(name)
            row[2:2] = [C.fmt_time(b) if b else "", C.fmt_ratio(tr.median / b) if b else ""]
            if b and tr.median > 1.10 * b:
                worse.append(f"{name} ({C.fmt_ratio(tr.median / b)})")
        rows.append(row)
    C.print_table("float ops, one node each", headers, rows)
    body = "\n".join([
        f"CPU: {host.summary()}. {repeats} interleaved rounds, blocks >= 50 ms, medians (the "
        f"machine is shared: read differences under ~10 % as noise). Both runtimes on {threads} "
        f"threads; onnxruntime with optimizations off, whose outputs refrt's \"ort\" numerics "
        f"reproduce. At the start {load0}."
        + (f" `baseline refrt` is the checkout at `{base['commit']}`, timed in a child process in "
           f"the same run." if base else ""),
        "",
        C.md_table(headers, rows),
    ])
    targets = []
    if base:
        targets.append(C.target("float ops in \"ort\" numerics vs the baseline checkout",
                                "none > 1.1x slower", f"{len(rows)} cases",
                                f"{len(worse)} slower", not worse, "; ".join(worse)))
    if C.should_write(args):
        C.write_section("float_ops", body, targets)
    return body


if __name__ == "__main__":
    main()
