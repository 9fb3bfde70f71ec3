"""Integer convolution on ResNet-50 and MobileNet shapes: refrt vs onnxruntime.

    python -m bench.conv            (or python bench/conv.py)

Batch 1, uint8 activations (zero point 119), int8 weights (zero point 0), 1 and 2 threads.
Columns (GOPS = 2 * M * C/group * prod(kernel) * prod(out spatial) / s):

* refrt kernel: ``refrt.kernels.conv_int8`` (im2col + packed GEMM; depthwise: direct kernel);
* refrt ConvInteger / refrt QLinearConv: a one-node model in ``refrt.InferenceSession``
  (only when refrt registers the op: ``refrt.registry.lookup("ConvInteger", "", 10)``);
* ORT ConvInteger / ORT QLinearConv: the same models in onnxruntime (QLinearConv with per-channel
  weight scales, scalar x/y parameters and an int32 bias, as quantize_static writes it);
* ORT Conv f32 and refrt Conv f32: the float32 convolution of the same shape, for scale.

refrt's integer outputs are compared with ORT's (ConvInteger exactly, QLinearConv by the largest
difference in quantized steps).
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

CASES = [  # name, C, M, H(=W), kernel, stride, pad, group
    ("ResNet-50 3x3 64->64 @56x56", 64, 64, 56, 3, 1, 1, 1),
    ("ResNet-50 1x1 256->64 @56x56", 256, 64, 56, 1, 1, 0, 1),
    ("ResNet-50 3x3/2 128->128 @28x28", 128, 128, 28, 3, 2, 1, 1),
    ("MobileNet dw 3x3 144 @56x56", 144, 144, 56, 3, 1, 1, 144),
    ("MobileNet dw 3x3 32 @112x112", 32, 32, 112, 3, 1, 1, 32),
]
X_ZP = 119
U8, I8, I32, F32 = TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, TensorProto.FLOAT


def make_case(c, m, h, k, stride, pad, group, rng):
    x = rng.integers(0, 256, (1, c, h, h), dtype=np.uint8)
    w = rng.integers(-127, 128, (m, c // group, k, k), dtype=np.int8)
    attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad] * 4, "group": group}
    oh = (h + 2 * pad - k) // stride + 1
    ops = 2 * m * (c // group) * k * k * oh * oh
    conv_integer = C.one_node_model(
        "ConvInteger", [("x", U8, [1, c, h, h]), ("w", I8, list(w.shape)), ("x_zp", U8, [])],
        [("y", I32, [1, m, oh, oh])], {"w": w, "x_zp": np.array(X_ZP, np.uint8)}, attrs, opset=17)

    # QLinearConv parameters: per-channel weight scales, output range from the float result
    from refrt.kernels import conv_int8

    x_scale = np.float32(0.02)
    w_scale = (0.002 + 0.004 * rng.random(m)).astype(np.float32)
    bias = rng.integers(-2000, 2000, m).astype(np.int32)
    acc = conv_int8(x, w, X_ZP, 0, group, [pad] * 4, [stride] * 2).astype(np.float64)
    real = (acc + bias[None, :, None, None]) * x_scale * w_scale[None, :, None, None]
    lo, hi = min(real.min(), 0.0), max(real.max(), 0.0)
    y_scale = np.float32((hi - lo) / 255)
    y_zp = np.uint8(np.clip(np.rint(-lo / y_scale), 0, 255))
    qlinear = C.one_node_model(
        "QLinearConv",
        [("x", U8, [1, c, h, h]), ("x_scale", F32, []), ("x_zp", U8, []), ("w", I8, list(w.shape)),
         ("w_scale", F32, [m]), ("w_zp", I8, [m]), ("y_scale", F32, []), ("y_zp", U8, []),
         ("B", I32, [m])],
        [("y", U8, [1, m, oh, oh])],
        {"x_scale": x_scale, "x_zp": np.array(X_ZP, np.uint8), "w": w, "w_scale": w_scale,
         "w_zp": np.zeros(m, np.int8), "y_scale": y_scale, "y_zp": y_zp, "B": bias},
        attrs, opset=17)
    wf = (w.astype(np.float32) * w_scale[:, None, None, None])
    conv_f32 = C.one_node_model(
        "Conv", [("x", F32, [1, c, h, h]), ("w", F32, list(w.shape))],
        [("y", F32, [1, m, oh, oh])], {"w": wf}, attrs, opset=17)
    xf = ((x.astype(np.float32) - X_ZP) * x_scale)
    return dict(x=x, w=w, xf=xf, attrs=attrs, ops=ops, conv_integer=conv_integer, qlinear=qlinear,
                conv_f32=conv_f32, pads=[pad] * 4, strides=[stride] * 2, group=group)


HEADERS = ["case", "refrt kernel", "refrt ConvInteger", "ORT ConvInteger", "kernel/ORT",
           "refrt QLinearConv", "ORT QLinearConv", "QLinearConv refrt/ORT", "refrt Conv f32",
           "ORT Conv f32", "n"]


def main(argv=None):
    args = C.arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    from refrt.kernels import conv_int8

    rng = np.random.default_rng(0)
    repeats = 3 if args.quick else args.repeats
    cases = CASES[:1] + CASES[3:4] if args.quick else CASES
    threads_list = sorted({1, min(2, C.max_threads())})
    have_ci = C.refrt_has_op("ConvInteger", "", 10)
    have_ql = C.refrt_has_op("QLinearConv", "", 10)
    load0 = C.settle(args)
    t_start = time.perf_counter()
    built = [(name, make_case(*spec, rng)) for name, *spec in cases]
    tables, checks = {}, {}
    for threads in threads_list:
        C.set_threads(threads)
        rows = tables.setdefault(threads, [])
        for name, cs in built:
            x, w, xf = cs["x"], cs["w"], cs["xf"]
            feed, feed_f = {"x": x}, {"x": xf}
            o_ci = C.ort_session(cs["conv_integer"], threads=threads)
            o_ql = C.ort_session(cs["qlinear"], threads=threads)
            o_f = C.ort_session(cs["conv_f32"], threads=threads)
            r_f = C.refrt_session(cs["conv_f32"])
            fns = {"refrt kernel": lambda: conv_int8(x, w, X_ZP, 0, cs["group"], cs["pads"],
                                                     cs["strides"])}
            r_ci = C.refrt_session(cs["conv_integer"]) if have_ci else None
            r_ql = C.refrt_session(cs["qlinear"]) if have_ql else None
            if r_ci is not None:
                fns["refrt ConvInteger"] = lambda: r_ci.run(None, feed)
            fns["ORT ConvInteger"] = lambda: o_ci.run(None, feed)
            if r_ql is not None:
                fns["refrt QLinearConv"] = lambda: r_ql.run(None, feed)
            fns["ORT QLinearConv"] = lambda: o_ql.run(None, feed)
            fns["refrt Conv f32"] = lambda: r_f.run(None, feed_f)
            fns["ORT Conv f32"] = lambda: o_f.run(None, feed_f)

            if threads == threads_list[0]:
                ref = o_ci.run(None, feed)[0]
                got = conv_int8(x, w, X_ZP, 0, cs["group"], cs["pads"], cs["strides"])
                chk = {"kernel vs ORT ConvInteger": int(np.count_nonzero(got != ref))}
                if r_ci is not None:
                    chk["refrt ConvInteger vs ORT"] = int(np.count_nonzero(r_ci.run(None, feed)[0] != ref))
                if r_ql is not None:
                    d = np.abs(r_ql.run(None, feed)[0].astype(np.int32)
                               - o_ql.run(None, feed)[0].astype(np.int32))
                    chk["QLinearConv max |refrt - ORT| (steps)"] = int(d.max())
                    chk["QLinearConv outputs differing"] = int(np.count_nonzero(d))
                checks[name] = chk

            t = C.measure(fns, repeats=repeats, min_sample=0.01)
            g = {k: cs["ops"] / t[k].median / 1e9 for k in fns}

            def cell(key):
                return C.fmt_num(g[key]) if key in g else "n/a"

            ql_ratio = (C.fmt_ratio(g["refrt QLinearConv"] / g["ORT QLinearConv"])
                        if "refrt QLinearConv" in g else "-")
            rows.append([name, cell("refrt kernel"), cell("refrt ConvInteger"), cell("ORT ConvInteger"),
                         C.fmt_ratio(g["refrt kernel"] / g["ORT ConvInteger"]),
                         cell("refrt QLinearConv"), cell("ORT QLinearConv"), ql_ratio,
                         cell("refrt Conv f32"), cell("ORT Conv f32"), C.fmt_n(t["refrt kernel"])])
        C.print_table(f"{threads} thread(s) [GOPS]", HEADERS, rows)
    elapsed = time.perf_counter() - t_start
    for name, chk in checks.items():
        print(name, chk)

    parts = [
        f"GOPS = 2·M·(C/group)·kh·kw·OH·OW / median time (batch 1); {repeats} interleaved rounds, "
        f"blocks >= 10 ms; section took {elapsed:.0f} s; at the start {load0}; "
        f"load average at the end {C.load_text()}. x uint8 (zero point {X_ZP}), w int8 "
        f"(zero point 0). refrt ConvInteger/QLinearConv run as one-node models through "
        f"`refrt.InferenceSession`"
        + ("." if have_ci and have_ql else
           f" (not registered in refrt yet: {', '.join(o for o, h in (('ConvInteger', have_ci), ('QLinearConv', have_ql)) if not h)}).")
        + " ratio columns are refrt / ORT throughput.",
        "",
    ]
    for threads, rows in tables.items():
        parts.append(f"### {threads} thread{'s' if threads > 1 else ''}\n")
        parts.append(C.md_table(HEADERS, rows))
        parts.append("")
    parts.append("### Agreement with ORT\n")
    parts.append(C.md_table(["case", "check", "value"],
                            [[n, k, v] for n, chk in checks.items() for k, v in chk.items()]))
    body = "\n".join(parts)
    if C.should_write(args):
        C.write_section("conv", body, [])
    return body


if __name__ == "__main__":
    main()
