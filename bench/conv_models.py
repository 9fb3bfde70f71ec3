"""Conv-heavy models: a MobileNetV3-style net in FP32 and statically quantized (QDQ and QOperator),
refrt vs onnxruntime latency.

    python -m bench.conv_models          (or python bench/conv_models.py)

Model: ``refrt.testing.models.mobilenet_like()`` (a 3x3/2 stem with hard-swish, three stages of
depthwise 3x3 or 5x5/2 convolution, squeeze-and-excitation and pointwise 1x1 convolution, an
AveragePool, a ConvTranspose, Sigmoid/Tanh, GlobalAveragePool, Gemm, Softmax: 46 nodes, 13 Conv).
Inputs: batch 1 at 224 x 224 (latency) and batch 8 at 64 x 64 (small images, several at once),
random values. INT8 models from onnxruntime's ``quantize_static`` (MinMax calibration on 8 random
images of the input's size): QDQ with the tool's defaults (int8 activations and weights), and
QOperator with uint8 activations and int8 weights (the form the tool recommends on x64).

Runtimes: refrt, ORT with all graph optimizations, ORT with optimizations disabled (op by op,
the numerics refrt follows), and refrt without fusion (graph_optimization_level=ORT_DISABLE_ALL;
the outputs are checked to be the same bits). All threads of the machine. Then the time per op
type of refrt's run at batch 1 (a session hook: every node on its own, unfused).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import bench  # noqa: F401  (thread-pool wait policies, before NumPy is imported)

# isort: split
import numpy as np

from bench import common as C
from bench import end_to_end as E

INPUTS = {"batch 1, 224x224": (1, 224), "batch 8, 64x64": (8, 64)}


class _Calib:
    def __init__(self, size, count=8):
        rng = np.random.default_rng(1)
        self.items = [{"image": rng.standard_normal((1, 3, size, size)).astype(np.float32)}
                      for _ in range(count)]

    def get_next(self):
        return self.items.pop(0) if self.items else None


def build(folder: Path, size: int) -> dict:
    """FP32 + static QDQ / QOperator mobilenet_like files (calibrated at ``size``) -> {label: path}."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from refrt.testing.models import mobilenet_like

    fp32 = folder / "mobilenet_fp32.onnx"
    onnx.save(mobilenet_like(), fp32)
    paths = {"FP32": fp32}
    qdq = folder / f"mobilenet_qdq_{size}.onnx"
    quantize_static(str(fp32), str(qdq), _Calib(size), quant_format=QuantFormat.QDQ)
    paths["INT8 static QDQ (s8 act., s8 weights)"] = qdq
    qop = folder / f"mobilenet_qop_{size}.onnx"
    quantize_static(str(fp32), str(qop), _Calib(size), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    paths["INT8 static QOperator (u8 act., s8 weights)"] = qop
    return paths


def main(argv=None):
    p = C.arg_parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    from refrt import host

    C.set_threads(C.max_threads())
    load0 = C.settle(args)
    threads = C.max_threads()
    inputs = dict(list(INPUTS.items())[:1]) if args.quick else INPUTS
    body, ratios, breakdowns = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for title, (batch, size) in inputs.items():
            folder = Path(tmp) / str(size)
            folder.mkdir()
            paths = build(folder, size)
            feeds = {"image": np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)}
            results = E.measure_models(paths, feeds, threads, repeats, budget=3.0 if args.quick else 15.0)
            headers, rows = E.latency_table(results)
            C.print_table(f"mobilenet_like, {title}", headers, rows)
            body += [f"### mobilenet_like, {title}", "", C.md_table(headers, rows), ""]
            for label, res, _, sess, _ in results:
                r, o = res["refrt"], res["ORT (all opt.)"]
                if hasattr(r, "median"):
                    ratios[(title, label)] = r.median / o.median
                if batch == 1 and sess is not None:
                    by_op, counts = E.refrt_op_breakdown(sess, feeds, runs=3 if args.quick else 5)
                    total = sum(by_op.values()) or 1.0
                    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:8]
                    breakdowns.append((f"{label}, {title}", [
                        [op, counts[op], C.fmt_time(t), f"{100 * t / total:.0f} %"] for op, t in top]))
    for name, rows in breakdowns:
        C.print_table(f"refrt per op type: {name}", ["op", "nodes", "time per run", "share"], rows)
    body += ["### Where refrt's time goes (batch 1, 224x224; a hook times every node, unfused)", ""]
    for name, rows in breakdowns:
        body += [f"{name}:", "", C.md_table(["op", "nodes", "time per run", "share"], rows), ""]
    info = C.machine_info()
    body.insert(0, f"int8 kernel: `{host.info().int8_kernel}`; {threads} threads; {load0}.\n")
    targets = []
    for (title, label), ratio in ratios.items():
        targets.append(C.target(f"MobileNet-style {label}, {title}, vs ORT", "<= 2x",
                                f"refrt / ORT all opt. = {C.fmt_ratio(ratio)}", C.fmt_ratio(ratio),
                                ratio <= 2))
    if C.should_write(args):
        C.write_section("conv_models", "\n".join(body), targets, info)
    return ratios


if __name__ == "__main__":
    main()
