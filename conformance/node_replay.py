"""Node replay against onnxruntime: every node, fed the exact inputs onnxruntime computed for it,
must give onnxruntime's bits.

For each model below, onnxruntime's CPU provider runs it with graph optimizations off and every
node output exposed; then each node is run alone in refrt ("ort" numerics) on onnxruntime's values
of its inputs, and its outputs are compared with onnxruntime's bit for bit. A node that differs
created its difference itself: its inputs were onnxruntime's.

    python -m conformance.node_replay            # print the per-op table
    python -m conformance.node_replay --write    # and put it into conformance/RESULTS.md

Models: the bundled digits CNN and its static QDQ/QOperator and dynamic forms from onnxruntime's
quantizer; a BERT-style encoder (``refrt.testing.models.bert_encoder``) and its dynamic INT8 form;
a MobileNetV3-style conv net (``mobilenet_like``) and its static QDQ/QOperator forms; a
bidirectional-LSTM + GRU speech model (``speech_rnn``) and its dynamic form.

``EXPECTED`` lists the (op, model) pairs known to differ, each with its reason; ``conformance/
test_node_replay.py`` fails on a difference not listed there.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "RESULTS.md")
DATA = os.path.join(HERE, os.pardir, "refrt", "data")
BEGIN, END = "<!-- node replay: begin -->", "<!-- node replay: end -->"

# (op_type, model name or "*") -> why refrt's node does not give onnxruntime's bits there.
EXPECTED: dict = {}


@dataclass
class OpStats:
    op: str
    nodes: int = 0
    identical: int = 0
    worst: float = 0.0              # error in float32 eps at the output's scale (0 for bit-equal)
    worst_node: str = ""
    models: set = field(default_factory=set)
    differing: list = field(default_factory=list)    # (model, node name, eps)


def _label(node) -> str:
    return node.name or f"{node.op_type}->{node.output[0]}"


def _same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8)))
    return bool(np.array_equal(a, b))


def _eps(got, ref) -> float:
    from refrt.debug.metrics import error_at_scale

    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return float("inf")
    if ref.dtype.kind not in "f":
        return float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()) if ref.size else 0.0
    return error_at_scale(got, ref)


def replay_model(name: str, model, feeds: dict, stats: dict) -> None:
    """Replay every main-graph node of ``model`` on onnxruntime's values; add to ``stats``."""
    from refrt.debug.references import reference_values
    from refrt.debug.replay import ReplayError, replay_node
    from refrt.host import ort_matching_options

    ref = reference_values(model, feeds, "onnxruntime")
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    values.update(feeds)
    values.update(ref.values)
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        outs = [o for o in node.output if o]
        if not outs or any(o not in ref.values for o in outs):
            continue
        inputs = [values.get(i) if i else None for i in node.input]
        s = stats.setdefault(key, OpStats(key))
        s.nodes += 1
        s.models.add(name)
        try:
            got = replay_node(model, node, inputs, numerics="ort", **ort_matching_options())
        except ReplayError as e:
            s.differing.append((name, _label(node), float("inf"), f"replay failed: {e}"))
            s.worst = float("inf")
            continue
        pairs = [(g, ref.values[o]) for g, o in zip(got, node.output) if o]
        if all(_same_bits(g, r) for g, r in pairs):
            s.identical += 1
            continue
        err = max(_eps(g, r) for g, r in pairs)
        s.differing.append((name, _label(node), err, ""))
        if err >= s.worst:
            s.worst, s.worst_node = err, f"{name}: {_label(node)}"


# ---------------------------------------------------------------- the models

class _Reader:
    def __init__(self, batches):
        self.batches = iter(batches)

    def get_next(self):
        return next(self.batches, None)


def _quantized(model, folder, label, kind, calibration=None, **kwargs):
    """``model`` through onnxruntime's quantizer: kind "dynamic", "QDQ" or "QOperator"."""
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    src, dst = os.path.join(folder, f"{label}.onnx"), os.path.join(folder, f"{label}_{kind}.onnx")
    onnx.save(model, src)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if kind == "dynamic":
            quantize_dynamic(src, dst, **kwargs)
        else:
            quantize_static(src, dst, _Reader(calibration), quant_format=getattr(QuantFormat, kind),
                            **kwargs)
    return onnx.load(dst)


def models(folder: str, which=None):
    """(name, model, feeds) for every replayed model (``which``: names to keep)."""
    from refrt.testing.models import bert_encoder, bert_feeds, mobilenet_like, speech_rnn

    rng = np.random.default_rng(0)
    digits = onnx.load(os.path.join(DATA, "digits_cnn.onnx"))
    data = np.load(os.path.join(DATA, "digits_test.npz"))
    dname = digits.graph.input[0].name
    dcal = [{dname: data["calib"][i:i + 16]} for i in range(0, 64, 16)]
    dfeeds = {dname: data["x"][:32]}
    image = lambda n: rng.standard_normal((n, 3, 64, 64)).astype(np.float32)   # noqa: E731
    mobile = mobilenet_like()
    mcal = [{"image": image(4)} for _ in range(3)]
    mfeeds = {"image": image(2)}
    bert = bert_encoder(layers=2, hidden=64, heads=4)
    bfeeds = bert_feeds(batch=2, seq=16)
    speech = speech_rnn()
    sfeeds = {"frames": rng.standard_normal((30, 2, 40)).astype(np.float32)}
    table = [
        ("digits", lambda: digits, dfeeds),
        ("digits QDQ", lambda: _quantized(digits, folder, "digits", "QDQ", dcal), dfeeds),
        ("digits QOperator", lambda: _quantized(digits, folder, "digits", "QOperator", dcal,
                                                per_channel=True), dfeeds),
        ("digits dynamic", lambda: _quantized(digits, folder, "digits", "dynamic"), dfeeds),
        ("bert", lambda: bert, bfeeds),
        ("bert dynamic", lambda: _quantized(bert, folder, "bert", "dynamic"), bfeeds),
        ("mobilenet", lambda: mobile, mfeeds),
        ("mobilenet QDQ", lambda: _quantized(mobile, folder, "mobile", "QDQ", mcal, per_channel=True),
         mfeeds),
        ("mobilenet QOperator", lambda: _quantized(mobile, folder, "mobile", "QOperator", mcal),
         mfeeds),
        ("speech", lambda: speech, sfeeds),
        ("speech dynamic", lambda: _quantized(speech, folder, "speech", "dynamic"), sfeeds),
    ]
    for name, build, feeds in table:
        if which is None or name in which:
            yield name, build(), feeds


def replay_all(which=None, progress=None) -> dict:
    stats: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, model, feeds in models(folder, which):
            if progress:
                progress(name)
            replay_model(name, model, feeds, stats)
    return stats


def expected_reason(op: str, model: str) -> str | None:
    return EXPECTED.get((op, model)) or EXPECTED.get((op, "*"))


def unexpected(stats: dict) -> list:
    """(op, model, node, eps, note) for every differing node not in EXPECTED."""
    return [(s.op, m, n, e, note) for s in stats.values() for m, n, e, note in s.differing
            if expected_reason(s.op, m) is None]


def _fmt_eps(e: float) -> str:
    return "-" if e == 0 else "inf" if e == float("inf") else f"{e:.3g}"


def render(stats: dict, seconds: float) -> str:
    from refrt.host import summary

    total = sum(s.nodes for s in stats.values())
    same = sum(s.identical for s in stats.values())
    lines = [BEGIN, "",
             f"`python -m conformance.node_replay --write`: every node of the models below replayed "
             f"alone in refrt (\"ort\" numerics) on the inputs onnxruntime computed for it (CPU "
             f"provider, graph optimizations off), outputs compared bit for bit ({seconds:.0f} s). "
             f"Host: {summary()}.",
             "",
             f"**{same} of {total} nodes bit-identical** ({100 * same / max(total, 1):.1f}%). Worst: "
             "the largest difference in float32 epsilons at the output's scale (integer outputs: "
             "in units). Models: " + ", ".join(sorted({m for s in stats.values() for m in s.models})) + ".",
             "",
             "| op | bit-identical / nodes | worst | why not identical |",
             "|---|---|---|---|"]
    for key in sorted(stats):
        s = stats[key]
        reasons = sorted({expected_reason(s.op, m) or "**not expected**" for m, *_ in s.differing})
        lines.append(f"| {s.op} | {s.identical} / {s.nodes} | {_fmt_eps(s.worst)} | "
                     f"{'; '.join(reasons)} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write(text: str, path: str = RESULTS) -> None:
    from conformance.sections import put_section

    put_section(path, "## Node replay against onnxruntime", BEGIN, END, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="replay only these models (by name)")
    ap.add_argument("--write", action="store_true", help="put the table into conformance/RESULTS.md")
    ap.add_argument("--details", action="store_true", help="list every differing node")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    stats = replay_all(args.model, lambda name: print(f"replaying {name}", file=sys.stderr, flush=True))
    text = render(stats, time.monotonic() - t0)
    print(text)
    if args.details:
        for s in stats.values():
            for m, n, e, note in s.differing:
                print(f"{s.op:28} {m:20} {n:40} {_fmt_eps(e):>8} {note}")
    if args.write:
        write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
