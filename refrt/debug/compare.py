"""Compare every tensor of a model between refrt and a reference; find where they part and why.

    from refrt import debug
    result = debug.compare("model.onnx", {"x": x}, against="onnxruntime")
    print(result.table())
    result.first_divergences        # the nodes where a difference starts
    result.to_json("report.json")

The steps, in the order they run:

1. The reference computes every node output (``references.py``) and keeps them.
2. refrt runs the model with a hook; each node output is compared with the reference's as it is
   produced (``metrics.py``) and then dropped, so both runs' tensors are never all held at once
   (``keep=True`` keeps refrt's).
3. Each output is tagged ``match`` or ``differs`` (``atol``/``rtol``, per output overrides in
   ``tolerances``; integers exactly); a differing node whose inputs all match is a ``first``
   divergence: along that path, this is where the difference starts.
4. Each differing node is replayed alone in refrt on the reference's own inputs (``replay.py``).
   If it then matches, it only carries error from upstream (``propagated``); if not, it creates
   error of its own (``local``). Both errors are reported.
5. For local errors, ``causes.diagnose`` names the cause.

The JSON record (``to_json``; ``schema`` is ``refrt.debug.compare/1``, a new number whenever a
field changes meaning or goes away):

    schema, model, against, reference (in words), tolerance {atol, rtol, per_output}, refrt_options,
    host (CPU class and kernels), inputs {name: {dtype, shape}},
    summary {nodes, match, differs, first, local, propagated, missing, causes {code: count}},
    first_divergences [node labels],
    nodes [{index, name, label, op_type, domain, status ("match" | "differs" | "missing"), first,
            origin ("local" | "propagated" | "unknown" | null), cause {code, sentence, detail} | null,
            note, outputs [{name, tag, reason, metrics, local}]}]

    metrics / local: {shape_ref, shape_got, dtype_ref, dtype_got, equal, mismatched, size, max_abs,
                      max_rel, sqnr_db ("inf" when exact), max_ulp, note}

``local`` is refrt's node replayed on the reference's inputs.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from onnx import numpy_helper

from ..registry import canonical_domain
from .causes import Cause, diagnose, optimizer_cause
from .metrics import TensorMetrics, tensor_metrics
from .references import reference_values
from .replay import ReplayError, replay_node

__all__ = ["compare", "Comparison", "NodeResult", "OutputResult", "SCHEMA"]

SCHEMA = "refrt.debug.compare/1"


@dataclass
class OutputResult:
    name: str
    tag: str                           # "match", "differs", "missing" (no reference value), "skipped"
    metrics: TensorMetrics | None = None
    local: TensorMetrics | None = None   # refrt's node replayed on the reference's inputs
    reason: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "tag": self.tag, "reason": self.reason,
                "metrics": self.metrics.as_dict() if self.metrics else None,
                "local": self.local.as_dict() if self.local else None}


@dataclass
class NodeResult:
    index: int                         # position in the model's node list
    name: str
    op_type: str
    domain: str
    outputs: list = field(default_factory=list)
    first: bool = False                # differs while every input matches
    origin: str = ""                   # "local", "propagated", "unknown" (differing nodes only)
    cause: Cause | None = None
    note: str = ""

    @property
    def label(self) -> str:
        """The node's name, else its op type and first output."""
        first = next((o.name for o in self.outputs), "")
        return self.name or f"{self.op_type}->{first}"

    @property
    def status(self) -> str:
        tags = {o.tag for o in self.outputs}
        return "differs" if "differs" in tags else "missing" if tags <= {"missing", "skipped"} and tags else "match"

    def worst(self) -> TensorMetrics | None:
        ms = [o.metrics for o in self.outputs if o.metrics is not None and o.tag == "differs"]
        return max(ms, key=lambda m: (m.mismatched, m.max_abs)) if ms else None

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "label": self.label, "op_type": self.op_type,
                "domain": self.domain,
                "status": self.status, "first": self.first, "origin": self.origin or None,
                "cause": self.cause.as_dict() if self.cause else None, "note": self.note,
                "outputs": [o.as_dict() for o in self.outputs]}


@dataclass
class Comparison:
    model: str
    against: str
    reference: str                     # what the reference is, in words
    tolerance: dict
    options: dict                      # refrt's session options
    inputs: dict                       # name -> dtype and shape of the feeds
    nodes: list = field(default_factory=list)
    kept: dict = field(default_factory=dict)   # refrt's tensors, with keep=True
    batch: int = 0                     # with a data reader: which batch this is (from 0)
    batches: int = 1                   # and how many were compared

    @property
    def differing(self) -> list:
        return [n for n in self.nodes if n.status == "differs"]

    @property
    def first_divergences(self) -> list:
        return [n for n in self.nodes if n.first]

    @property
    def matches(self) -> bool:
        return not self.differing

    def summary(self) -> dict:
        diff = self.differing
        return {"nodes": len(self.nodes), "match": sum(n.status == "match" for n in self.nodes),
                "differs": len(diff), "first": len(self.first_divergences),
                "local": sum(n.origin == "local" for n in diff),
                "propagated": sum(n.origin == "propagated" for n in diff),
                "missing": sum(n.status == "missing" for n in self.nodes),
                "causes": _count(n.cause.code for n in diff if n.cause)}

    def to_dict(self) -> dict:
        from .. import host

        return {"schema": SCHEMA, "model": self.model, "against": self.against,
                "reference": self.reference, "tolerance": self.tolerance, "refrt_options": self.options,
                "host": host.summary(), "inputs": self.inputs, "batch": self.batch, "batches": self.batches,
                "summary": self.summary(),
                "first_divergences": [n.label for n in self.first_divergences],
                "nodes": [n.as_dict() for n in self.nodes]}

    def to_json(self, path=None) -> str:
        return dump_json(self.to_dict(), path)

    def to_html(self, path=None) -> str:
        """A self-contained page: the error per node plotted in graph order, and every node."""
        from .html import to_html

        page = to_html(self)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(page)
        return page

    def table(self, limit: int = 30, show_all: bool = False) -> str:
        """A terminal table: first divergences on top, then the other differing nodes (and with
        ``show_all`` every node), then a summary line."""
        order = self.first_divergences + [n for n in self.differing if not n.first]
        if show_all:
            order += [n for n in self.nodes if n.status != "differs"]
        head = ("", "node", "op", "output", "max abs", "max rel", "mismatch", "SQNR dB", "ULP",
                "origin", "cause")
        rows = []
        for n in order[:limit]:
            for o in n.outputs:
                m = o.metrics
                mark = "FIRST" if n.first and o.tag == "differs" else o.tag if o.tag != "differs" else "differs"
                rows.append((mark, _short(n.label, 28), _short(n.op_type, 16), _short(o.name, 24),
                             *(metric_cells(m) if m else ("-", "-", o.reason or "-", "-", "-")),
                             n.origin if o.tag == "differs" else "",
                             n.cause.code if n.cause and o.tag == "differs" else ""))
        widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
        lines = [f"refrt vs {self.reference} (atol {self.tolerance['atol']:g}, rtol {self.tolerance['rtol']:g})"]
        if rows:
            lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
            lines.append("  ".join("-" * w for w in widths))
            lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        if len(order) > limit:
            lines.append(f"... {len(order) - limit} more nodes (--limit, --json)")
        s = self.summary()
        if self.batches > 1 or self.batch:
            lines.append(f"batch {self.batch} of the {self.batches} compared"
                         + (" (the first that differs)" if not self.matches else " (all match)"))
        lines.append(f"{s['nodes']} nodes: {s['match']} match, {s['differs']} differ ({s['first']} where a "
                     f"difference starts; {s['local']} local, {s['propagated']} propagated)"
                     + (f", {s['missing']} without a reference value" if s["missing"] else ""))
        for n in self.first_divergences[:5]:
            if n.cause:
                lines.append(f"  {n.label}: {n.cause.code}: {n.cause.sentence}")
            elif n.note:
                lines.append(f"  {n.label}: {n.note}")
        return "\n".join(lines)


def dump_json(record: dict, path=None) -> str:
    """``record`` as indented JSON, also written to ``path`` when given."""
    text = json.dumps(record, indent=2)
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return text


def _count(codes) -> dict:
    out: dict = {}
    for c in codes:
        out[c] = out.get(c, 0) + 1
    return out


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 1] + "~"


def metric_cells(m: TensorMetrics) -> tuple:
    """max abs, max rel, mismatched/size, SQNR dB, ULP as table cells."""
    if m.note and m.note.startswith("shape"):
        return ("-", "-", m.note, "-", "-")
    sq = "inf" if m.sqnr_db == float("inf") else f"{m.sqnr_db:.1f}"
    return (f"{m.max_abs:.3g}", f"{m.max_rel:.3g}", f"{m.mismatched}/{m.size}", sq, str(m.max_ulp))


class _Progress:
    """A one-line progress display on stderr, only on a terminal."""

    def __init__(self, total: int, label: str, enabled: bool | None = None):
        self.total, self.label, self.last = total, label, 0.0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.2 or done == self.total):
            self.last = now
            sys.stderr.write(f"\r{self.label} {done}/{self.total}")
            if done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def compare(model, feeds: dict | None = None, against: str = "onnxruntime", *, atol: float = 1e-5,
            rtol: float = 1e-5, tolerances: dict | None = None, numerics: str = "ort",
            emulate_avx2_u8s8: bool = False, keep: bool = False, explain: bool = True,
            random_inputs: bool = False, seed: int = 0, dims: dict | None = None,
            ranges: dict | None = None, progress: bool | None = None) -> Comparison:
    """Compare every node output of ``model`` (path, bytes or ModelProto) between refrt and
    ``against`` (see ``references.py``) on ``feeds`` (or random feeds: ``random_inputs``,
    ``seed``, ``dims``, ``ranges`` as ``refrt run``). ``tolerances``: {output name: (atol,
    rtol)} overrides. ``explain=False`` skips the replays and causes.

    ``feeds`` may also be a data reader (``get_next()`` returning a feed dict, then None, as
    onnxruntime's CalibrationDataReader): the batches are compared in turn and the first one
    where something differs is reported (``batch``, ``batches``), or the last when all match."""
    if feeds is not None and hasattr(feeds, "get_next"):
        kwargs = dict(atol=atol, rtol=rtol, tolerances=tolerances, numerics=numerics,
                      emulate_avx2_u8s8=emulate_avx2_u8s8, keep=keep, explain=explain, progress=progress)
        result, count = None, 0
        while (batch := feeds.get_next()) is not None:
            result = compare(model, batch, against, **kwargs)
            result.batch, result.batches = count, count + 1
            count += 1
            if not result.matches:
                break
        if result is None:
            raise ValueError("the data reader gave no batch")
        return result
    from ..feeds import random_feed
    from ..session import InferenceSession
    from .capture import AS_WRITTEN

    options = {"numerics": numerics, "emulate_avx2_u8s8": emulate_avx2_u8s8, **AS_WRITTEN}
    sess = InferenceSession(model, **options)
    proto = sess.model
    if feeds is None:
        if not random_inputs:
            raise ValueError("give feeds, or random_inputs=True")
        feeds = random_feed(sess, dims or {}, seed, ranges)
    feeds = dict(feeds)
    missing = [vi.name for vi in sess._inputs if vi.name not in feeds]
    if missing:
        from ..errors import InputError
        raise InputError(f"missing input(s) {missing}; the model's inputs are "
                         f"{[vi.name for vi in sess._inputs]}")
    tolerances = tolerances or {}
    ref = reference_values(proto, feeds, against, **options)
    label = model if isinstance(model, str) else (proto.graph.name or "model")
    result = Comparison(str(label), against, ref.description, {"atol": atol, "rtol": rtol,
                                                               "per_output": {k: list(v) for k, v in tolerances.items()}},
                        options, {k: {"dtype": str(np.asarray(v).dtype), "shape": list(np.shape(v))}
                                  for k, v in feeds.items()})
    nodes = [NodeResult(i, n.name, n.op_type, canonical_domain(n.domain)) for i, n in enumerate(proto.graph.node)]
    result.nodes = nodes
    tick = _Progress(len(nodes), "refrt", progress)

    def on_output(i, node, name, value, inputs):
        tol = tolerances.get(name, (atol, rtol))
        if name not in ref.values:
            nodes[i].outputs.append(OutputResult(name, "missing", reason=ref.missing.get(name, "")))
        elif not isinstance(value, np.ndarray):
            nodes[i].outputs.append(OutputResult(name, "skipped", reason="not a tensor"))
        else:
            m = tensor_metrics(value, ref.values[name], *tol)
            nodes[i].outputs.append(OutputResult(name, "match" if m.matches else "differs", m))
        if keep and isinstance(value, np.ndarray):
            result.kept[name] = value.copy()
        tick(i + 1)

    from .capture import MainGraphHook

    sess.add_hook(MainGraphHook(proto, on_output).on_node)
    sess.run(None, feeds)

    differs = {o.name for n in nodes for o in n.outputs if o.tag == "differs"}
    for n in nodes:
        node = proto.graph.node[n.index]
        if n.status == "differs":
            n.first = not any(name in differs for name in node.input if name)
            unknown = [name for name in node.input if name in ref.missing]
            if n.first and unknown:
                n.note = f"the reference has no value for input(s) {', '.join(unknown)}"
    if explain:
        _explain(proto, feeds, ref, result, options, atol, rtol, tolerances, progress)
    return result


def _explain(proto, feeds, ref, result, options, atol, rtol, tolerances, progress) -> None:
    inits = {t.name: t for t in proto.graph.initializer}
    arrays: dict = {}

    def value_of(name):
        if not name:
            return None
        if name in ref.values:
            return ref.values[name]
        if name in feeds:
            return np.asarray(feeds[name])
        if name in inits:
            if name not in arrays:
                arrays[name] = numpy_helper.to_array(inits[name])
            return arrays[name]
        raise ReplayError(f"the reference has no value for input {name!r}")

    todo = result.differing
    memo: dict = {}
    tick = _Progress(len(todo), "replay", progress)
    for k, n in enumerate(todo, 1):
        node = proto.graph.node[n.index]
        try:
            inputs = [value_of(name) for name in node.input]
            local = replay_node(proto, node, inputs, **options)
        except ReplayError as e:
            n.origin, n.note = "unknown", n.note or f"cannot replay alone: {e}"
            if result.against == "onnxruntime-optimized":
                n.cause = optimizer_cause(proto, feeds, n, ref, atol, rtol, memo)
            tick(k)
            continue
        ref_outs, is_local = [], False
        for out_name, value in zip(node.output, local):
            ref_outs.append(ref.values.get(out_name))
            o = next((o for o in n.outputs if o.name == out_name), None)
            if o is None or o.tag not in ("differs", "match") or value is None:
                continue
            o.local = tensor_metrics(value, ref.values[out_name], *tolerances.get(out_name, (atol, rtol)))
            is_local |= not o.local.matches
        n.origin = "local" if is_local else "propagated"
        if is_local and result.against == "onnxruntime-optimized":
            n.cause = optimizer_cause(proto, feeds, n, ref, atol, rtol, memo)
        if n.first and not is_local:
            # every input matched within tolerance, yet the node differs only because of them:
            # name the inputs that differ below the tolerance
            below = _below_tolerance(result, node)
            if below:
                n.note = ("its inputs match within tolerance, but " + "; ".join(below)
                          + " differ below it, and this node turns that into a difference "
                            "(rerun with --atol 0 --rtol 0 to see where it starts)")
        if is_local and n.cause is None:
            n.cause = diagnose(proto, node, inputs, ref_outs, local, options, atol, rtol)
        tick(k)


def _below_tolerance(result, node) -> list:
    """'name (max abs x)' for each input of ``node`` that matched within tolerance but not bit for
    bit."""
    by_output = {o.name: o for n in result.nodes for o in n.outputs}
    out = []
    for name in node.input:
        o = by_output.get(name)
        if o is not None and o.metrics is not None and o.tag == "match" and not o.metrics.equal:
            out.append(f"{name} (max abs {o.metrics.max_abs:.3g})")
    return out
