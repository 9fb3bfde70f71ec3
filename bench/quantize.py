"""QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear throughput: refrt vs onnxruntime.

    python -m bench.quantize        (or python bench/quantize.py)

1M and 16M elements (float32 [n / 1024, 1024]; uint8 per-tensor scale and zero point), 1 and 2
threads. Throughput is GB/s of float32 data (4 bytes per element: the input of Quantize and
DynamicQuantize, the output of Dequantize). Columns: refrt kernel (``refrt.kernels``
quantize_linear / dequantize_linear / dynamic_quantize_linear), refrt op (one-node model in
``refrt.InferenceSession``), ORT (the same model in onnxruntime), NumPy (the formula written
with NumPy array expressions, for scale). Outputs are checked against ORT's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import bench  # noqa: F401  (thread-pool wait policies, before NumPy is imported)

# isort: split
import numpy as np
from onnx import TensorProto

from bench import common as C

SIZES = [1 << 20, 1 << 24]
SCALE, ZP = np.float32(0.0213), np.uint8(117)
F32, U8 = TensorProto.FLOAT, TensorProto.UINT8


def models(shape):
    q = C.one_node_model("QuantizeLinear", [("x", F32, shape), ("s", F32, []), ("z", U8, [])],
                         [("y", U8, shape)], {"s": SCALE, "z": ZP}, opset=21)
    dq = C.one_node_model("DequantizeLinear", [("x", U8, shape), ("s", F32, []), ("z", U8, [])],
                          [("y", F32, shape)], {"s": SCALE, "z": ZP}, opset=21)
    dyn = C.one_node_model("DynamicQuantizeLinear", [("x", F32, shape)],
                           [("y", U8, shape), ("ys", F32, []), ("yz", U8, [])], opset=21)
    return {"QuantizeLinear": q, "DequantizeLinear": dq, "DynamicQuantizeLinear": dyn}


def numpy_twins():
    def quant(x):
        return (np.clip(np.rint(x / SCALE), -float(ZP), 255.0 - float(ZP)) + float(ZP)).astype(np.uint8)

    def dequant(q):
        return (q.astype(np.int32) - int(ZP)).astype(np.float32) * SCALE

    def dyn(x):
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        s = np.float32((np.float32(hi) - np.float32(lo)) / np.float32(255))
        z = np.float32(np.clip(np.rint(np.float32(0) - np.float32(lo) / s), 0, 255))
        return np.clip(np.rint(x / s) + z, 0, 255).astype(np.uint8), s, z

    return {"QuantizeLinear": quant, "DequantizeLinear": dequant, "DynamicQuantizeLinear": dyn}


def dyn_breakdown(x, repeats):
    """Time the two passes of refrt's DynamicQuantizeLinear separately (GB/s of float32)."""
    from refrt.kernels import quantize as Q

    flat = x.reshape(-1)
    out = np.empty(flat.shape, np.uint8)
    fns = {
        "min/max pass (NumPy x.min() and x.max())": lambda: (flat.min(), flat.max()),
        "quantize pass (_quantize_u8_kernel)": lambda: Q._quantize_u8_kernel(flat, np.float32(0.05), 120, out),
        "whole dynamic_quantize_linear": lambda: Q.dynamic_quantize_linear(x),
    }
    t = C.measure(fns, repeats=repeats, min_sample=0.02)
    return [[k, C.fmt_num(4.0 * flat.size / t[k].median / 1e9, 2), C.fmt_time(t[k].median)] for k in fns]


HEADERS = ["op", "elements", "refrt kernel", "refrt op", "ORT", "NumPy", "kernel/ORT", "op/ORT", "n"]


def main(argv=None):
    args = C.arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    from refrt import kernels as K

    repeats = 3 if args.quick else args.repeats
    sizes = SIZES[:1] if args.quick else SIZES
    threads_list = sorted({1, min(2, C.max_threads())})
    rng = np.random.default_rng(0)
    twins = numpy_twins()
    have = {op: C.refrt_has_op(op, "", 21) for op in
            ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")}
    load0 = C.settle(args)
    t_start = time.perf_counter()
    tables, checks, breakdown = {}, [], {}
    for threads in threads_list:
        C.set_threads(threads)
        rows = tables.setdefault(threads, [])
        for n in sizes:
            shape = [n // 1024, 1024]
            x = (rng.standard_normal(shape) * 2.5 + 0.7).astype(np.float32)
            q = rng.integers(0, 256, shape, dtype=np.uint8)
            ms = models(shape)
            kernel_fns = {
                "QuantizeLinear": lambda: K.quantize_linear(x, SCALE, ZP),
                "DequantizeLinear": lambda: K.dequantize_linear(q, SCALE, ZP),
                "DynamicQuantizeLinear": lambda: K.dynamic_quantize_linear(x),
            }
            for op, model in ms.items():
                inp = q if op == "DequantizeLinear" else x
                feed = {"x": inp}
                o = C.ort_session(model, threads=threads)
                r = C.refrt_session(model) if have[op] else None
                fns = {"refrt kernel": kernel_fns[op]}
                if r is not None:
                    fns["refrt op"] = lambda: r.run(None, feed)
                fns["ORT"] = lambda: o.run(None, feed)
                twin = twins[op]
                fns["NumPy"] = lambda: twin(inp)
                if threads == threads_list[0]:
                    ref = o.run(None, feed)
                    got = kernel_fns[op]()
                    got = got if isinstance(got, tuple) else (got,)
                    same = all(np.array_equal(np.asarray(g), np.asarray(e)) for g, e in zip(got, ref))
                    line = [op, n, "identical" if same else "DIFFERS"]
                    if r is not None:
                        rr = r.run(None, feed)
                        same_op = all(np.array_equal(np.asarray(g), np.asarray(e)) for g, e in zip(rr, ref))
                        line.append("identical" if same_op else "DIFFERS")
                    else:
                        line.append("n/a")
                    checks.append(line)
                t = C.measure(fns, repeats=repeats, min_sample=0.02)
                gbs = {k: 4.0 * n / t[k].median / 1e9 for k in fns}
                rows.append([op, f"{n // (1 << 20)}M", C.fmt_num(gbs["refrt kernel"], 2),
                             C.fmt_num(gbs["refrt op"], 2) if "refrt op" in gbs else "n/a",
                             C.fmt_num(gbs["ORT"], 2), C.fmt_num(gbs["NumPy"], 2),
                             C.fmt_ratio(gbs["refrt kernel"] / gbs["ORT"]),
                             C.fmt_ratio(gbs["refrt op"] / gbs["ORT"]) if "refrt op" in gbs else "-",
                             C.fmt_n(t["refrt kernel"])])
                # release the sessions before the next op (the timed lambdas close over them)
                o = r = None
            if n == sizes[-1]:
                breakdown[threads] = dyn_breakdown(x, repeats)
        C.print_table(f"{threads} thread(s) [GB/s of float32]", HEADERS, rows)
    elapsed = time.perf_counter() - t_start
    for c in checks:
        print(*c)

    parts = [
        f"GB/s = 4 bytes x elements / median time; {repeats} interleaved rounds, blocks >= 20 ms; "
        f"section took {elapsed:.0f} s; at the start {load0}; load average at the "
        f"end {C.load_text()}. Input N(0.7, 2.5) float32 (Quantize, DynamicQuantize) or uniform uint8 "
        f"(Dequantize); scale {float(SCALE):.4g}, zero point {ZP}.",
        "",
    ]
    for threads, rows in tables.items():
        parts.append(f"### {threads} thread{'s' if threads > 1 else ''}\n")
        parts.append(C.md_table(HEADERS, rows))
        parts.append("")
    for threads, rows in breakdown.items():
        parts.append(f"### refrt DynamicQuantizeLinear, pass by pass ({sizes[-1] // (1 << 20)}M elements, "
                     f"{threads} thread{'s' if threads > 1 else ''})\n")
        parts.append(C.md_table(["part", "GB/s", "time"], rows))
        parts.append("")
    parts.append(
        "Reading: the min/max pass uses NumPy's SIMD `min()` and `max()` (a Numba loop "
        "`if v < lo: lo = v` stays scalar: LLVM does not reorder float compares unless NaN "
        "handling is relaxed); the quantize pass is a vectorized (`vdivps`, `vroundps`) Numba "
        "kernel split over the threads.\n")
    parts.append("### Agreement with ORT (all outputs, bit for bit)\n")
    parts.append(C.md_table(["op", "elements", "refrt kernel", "refrt op"], checks))
    body = "\n".join(parts)
    if C.should_write(args):
        C.write_section("quantize", body, [])
    return body


if __name__ == "__main__":
    main()
