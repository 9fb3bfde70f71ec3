"""What calibration saw and what the quantized model keeps: one HTML page per quantization run.

    quantize_static("model.onnx", "model.qdq.onnx", reader, report="report.html")
    refrt quantize model.onnx model.qdq.onnx --mode static --calib-data calib.npz --report report.html

For every quantized activation tensor the page shows the histogram of the values the calibrator
collected, the range the written model represents and the share of values it clips, beside the
run's summary table. The range is read back from the output model's scale and zero point
initializers, not from the calibrator: it is the range QuantizeLinear really saturates to,

    low = (qmin - zero_point) * scale        high = (qmax - zero_point) * scale

with (qmin, qmax) the limits of the zero point's type. A value is *clipped* when it lies more
than half a step outside that range (it saturates instead of rounding to the nearest level), the
same definition as ``refrt compare --quantized``. The share is read from the histogram, counting
a bin that straddles a limit in proportion to the part of it outside (``clipped_bound`` is the
most that can be off by: the share in the straddling bins).

Pictures need matplotlib (``pip install 'refrt[report]'``); without it the page holds the tables
and says so. Each picture is inline SVG, so the page is one file with no scripts and no links.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from .model import Q_INPUT_SUFFIX

__all__ = ["Histogram", "TensorReport", "CalibrationReport", "build_report",
           "calibrator_histograms"]


@dataclass
class Histogram:
    """Counts of calibration values per bin; ``absolute``: a histogram of |x| (symmetric
    Percentile calibration keeps that one)."""
    counts: np.ndarray
    edges: np.ndarray
    absolute: bool = False

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def below(self, v: float) -> float:
        """How many values are below ``v`` (a straddling bin counts in proportion)."""
        e, c = self.edges, self.counts
        full = int(np.searchsorted(e, v, side="right")) - 1      # bins entirely below v
        if full < 0:
            return 0.0
        if full >= len(c):
            return float(c.sum())
        part = (v - e[full]) / (e[full + 1] - e[full]) if e[full + 1] > e[full] else 0.0
        return float(c[:full].sum() + c[full] * part)

    def share_outside(self, low: float, high: float) -> float:
        """Share of values below ``low`` or above ``high``. For a histogram of |x| the sign is
        lost: the share of |x| above ``max(-low, high)``, the values outside for sure."""
        if not self.total:
            return 0.0
        if self.absolute:
            return (self.total - self.below(max(-low, high))) / self.total
        return (self.below(low) + self.total - self.below(high)) / self.total

    def uncertainty(self, low: float, high: float) -> float:
        """The most :meth:`share_outside` can be off by: the share of values in the bins that
        contain a limit (for |x|, in every bin from ``min(-low, high)`` to ``max(-low, high)``)."""
        if not self.total:
            return 0.0

        def index(v):
            return int(np.searchsorted(self.edges, v, side="right")) - 1

        n = len(self.counts)
        if self.absolute:
            a, b = sorted((index(-low), index(high)))
            return int(self.counts[max(a, 0): max(min(b + 1, n), 0)].sum()) / self.total
        return sum(int(self.counts[i]) for i in {index(low), index(high)} if 0 <= i < n) / self.total


@dataclass
class TensorReport:
    """One quantized activation: its parameters as written, the range they represent, what the
    calibrator found and how much of it the range clips."""
    name: str
    producer: str                 # "Conv conv1", or "graph input"
    qtype: str                    # numpy name of the zero point's type: "uint8", "int8", ...
    scale: float
    zero_point: int
    low: float                    # (qmin - zero_point) * scale
    high: float                   # (qmax - zero_point) * scale
    calibrated: tuple | None      # (min, max) the calibrator returned, before the quantizer's
                                  # adjustments (a Relu folded into the op before it, Softmax)
    histogram: Histogram | None
    clipped: float | None         # share of calibration values beyond half a step outside
    clipped_bound: float | None   # how far ``clipped`` can be off (bins straddling a limit)

    def as_dict(self) -> dict:
        return {"name": self.name, "producer": self.producer, "qtype": self.qtype,
                "scale": self.scale, "zero_point": self.zero_point, "low": self.low,
                "high": self.high, "calibrated": self.calibrated, "clipped": self.clipped,
                "clipped_bound": self.clipped_bound}


@dataclass
class CalibrationReport:
    """The run's summary and one :class:`TensorReport` per quantized activation."""
    summary: object
    method: str | None
    tensors: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def to_html(self, path=None) -> str:
        """The page as a string; written to ``path`` as well when given."""
        page = _page(self)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(page)
        return page


# ---------------------------------------------------------------- building

def calibrator_histograms(calibrator) -> dict:
    """tensor name -> :class:`Histogram` of what ``calibrator`` collected (MinMax keeps one only
    when made with ``histogram_bins``)."""
    out = {}
    for name, h in getattr(calibrator, "histograms", {}).items():
        if hasattr(h, "hist"):            # Percentile / Entropy
            if h.hist is None:
                continue
            # a histogram of |x| is one of x when no value was negative
            absolute = bool(getattr(calibrator, "_absolute", False)) and not h.min_value >= 0
            out[name] = Histogram(np.asarray(h.hist, np.int64), np.asarray(h.edges, np.float64),
                                  absolute=absolute)
        elif h.counts is not None:        # MinMax's GrowingHistogram
            out[name] = Histogram(h.counts.copy(), h.edges.copy(), absolute=False)
    return out


def quantized_activations(model: onnx.ModelProto, candidates) -> dict:
    """tensor name -> (scale, zero point) arrays for every float tensor of ``candidates`` that
    the model quantizes: the input of a QuantizeLinear (QDQ format, graph inputs; a graph
    output's is named ``<name>_QuantizeLinear_Input``), or a tensor with ``<name>_scale`` and
    ``<name>_zero_point`` initializers (QOperator format)."""
    inits = {t.name: t for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        name = node.input[0]
        if name.endswith(Q_INPUT_SUFFIX):      # a graph output, renamed before its Q/DQ pair
            name = name[: -len(Q_INPUT_SUFFIX)]
        if (name in candidates and name not in inits and name not in found
                and node.input[1] in inits and node.input[2] in inits):
            found[name] = (numpy_helper.to_array(inits[node.input[1]]),
                           numpy_helper.to_array(inits[node.input[2]]))
    for name in candidates:
        s, z = inits.get(name + "_scale"), inits.get(name + "_zero_point")
        if name not in found and s is not None and z is not None:
            found[name] = (numpy_helper.to_array(s), numpy_helper.to_array(z))
    return found


def build_report(quantized_model: onnx.ModelProto, float_model: onnx.ModelProto, summary,
                 histograms: dict | None, calibrated: dict | None, method=None,
                 notes=()) -> CalibrationReport:
    """The report of one run. ``histograms``: tensor -> :class:`Histogram`; ``calibrated``:
    tensor -> (min, max) as calibrated; both may be None (dynamic mode, a calibration cache)."""
    histograms, calibrated = histograms or {}, calibrated or {}
    producers = {o: f"{n.op_type} {n.name}".strip() for n in float_model.graph.node for o in n.output}
    order = [i.name for i in float_model.graph.input] + \
        [o for n in float_model.graph.node for o in n.output]
    params = quantized_activations(quantized_model, set(histograms) | set(calibrated))
    report = CalibrationReport(summary, getattr(method, "name", method), notes=list(notes))
    for name in sorted(params, key=lambda t: order.index(t) if t in order else len(order)):
        scale, zp = params[name]
        if scale.size != 1 or zp.size != 1:
            continue                  # per-channel activations are not produced by calibration
        s, z = float(scale.ravel()[0]), int(zp.ravel()[0])
        info = np.iinfo(zp.dtype)
        low, high = (info.min - z) * s, (info.max - z) * s
        hist = histograms.get(name)
        clipped = bound = None
        if hist is not None:
            clipped = hist.share_outside(low - s / 2, high + s / 2)
            bound = hist.uncertainty(low - s / 2, high + s / 2)
        lohi = calibrated.get(name)
        report.tensors.append(TensorReport(
            name, producers.get(name, "graph input"), zp.dtype.name, s, z, low, high,
            None if lohi is None else tuple(float(np.ravel(v)[0]) for v in lohi), hist, clipped, bound))
    return report


# ---------------------------------------------------------------- the page

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #8a4b00; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.9em; max-width: 560px; }
"""


def _g(v) -> str:
    return "" if v is None else f"{v:.6g}"


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.3f} %"


def _table(head, rows) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    return "\n".join(out) + "</table>"


def _summary_table(summary) -> str:
    d = summary.to_dict()
    rows = [(op, v["nodes"], v["quantized"], v["float"], v["removed"])
            for op, v in d["op_types"].items()]
    size = (f"<p>Size: {d['size_before']:,} bytes &rarr; {d['size_after']:,} bytes"
            + (f" ({d['ratio']:.2f}x smaller)" if d["ratio"] and d["ratio"] >= 1 else "") + ". "
            f"Excluded: {html.escape(', '.join(d['excluded']) or 'none')}.</p>")
    return _table(("op type", "nodes", "quantized", "float", "removed"), rows) + size


def _tensor_table(tensors) -> str:
    rows = [(t.name, t.producer, t.qtype, _g(t.scale), t.zero_point,
             "" if t.calibrated is None else f"[{_g(t.calibrated[0])}, {_g(t.calibrated[1])}]",
             f"[{_g(t.low)}, {_g(t.high)}]", _pct(t.clipped)) for t in tensors]
    return _table(("tensor", "produced by", "type", "scale", "zero point", "calibrated range",
                   "quantized range", "clipped"), rows)


def _coarser(counts, edges, most: int = 256):
    """At most ``most`` bins for drawing (adjacent bins added; the numbers use all of them)."""
    k = -(-len(counts) // most)
    if k <= 1:
        return counts, edges
    pad = -len(counts) % k
    counts = np.concatenate([counts, np.zeros(pad, counts.dtype)]).reshape(-1, k).sum(axis=1)
    width = edges[1] - edges[0] if len(edges) > 1 else 0.0
    edges = np.concatenate([edges, edges[-1] + width * np.arange(1, pad + 1)])[::k]
    return counts, edges


def _figure_svg(t: TensorReport) -> str:
    """The histogram of ``t`` with its range, as an inline <svg> element."""
    import matplotlib
    from matplotlib.figure import Figure

    h = t.histogram
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "refrt",
                                "font.size": 8}):
        fig = Figure(figsize=(5.6, 2.3))
        ax = fig.add_subplot()
        counts, edges = _coarser(h.counts, h.edges)
        ax.stairs(counts, edges, fill=True, color="#4a78b0")
        ax.set_yscale("symlog", linthresh=1)
        low, high = (0.0, min(-t.low, t.high)) if h.absolute else (t.low, t.high)
        used = np.flatnonzero(h.counts)      # the bins may reach beyond the data
        left, right = float(h.edges[used[0]]), float(h.edges[used[-1] + 1])
        span = max(right, high) - min(left, low) or 1.0
        x0, x1 = min(left, low) - 0.03 * span, max(right, high) + 0.03 * span
        if low > x0 and not h.absolute:
            ax.axvspan(x0, low, color="#c0392b", alpha=0.12, lw=0)
        if high < x1:
            ax.axvspan(high, x1, color="#c0392b", alpha=0.12, lw=0)
        for v in ((high,) if h.absolute else (low, high)):
            ax.axvline(v, color="#c0392b", lw=1)
        ax.set_xlim(x0, x1)
        ax.set_xlabel("|value|" if h.absolute else "value")
        ax.set_ylabel("count")
        ax.set_title(f"{t.name}: clipped {_pct(t.clipped)}", fontsize=9)
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _figures(report: CalibrationReport) -> str:
    drawn = [t for t in report.tensors if t.histogram is not None and t.histogram.total]
    if not drawn:
        return ""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ('<p class="note">The calibration histograms need matplotlib: '
                "<code>pip install 'refrt[report]'</code> (or <code>pip install matplotlib</code>)"
                "; the tables above are complete without it.</p>")
    out = ["<h2>Calibration histograms</h2>",
           "<p>Counts on a logarithmic scale; the red lines are the quantized range, the shaded "
           "parts are clipped.</p>"]
    for t in drawn:
        caption = (f"{t.name} ({t.producer}): {t.histogram.total:,} values"
                   f"{' (of |x|)' if t.histogram.absolute else ''}; range [{_g(t.low)}, "
                   f"{_g(t.high)}] from scale {_g(t.scale)}, zero point {t.zero_point}; "
                   f"clipped {_pct(t.clipped)}")
        out.append(f'<figure class="histogram" data-tensor="{html.escape(t.name)}">'
                   f"{_figure_svg(t)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    return "\n".join(out)


def _page(report: CalibrationReport) -> str:
    mode = html.escape(getattr(report.summary, "mode", "") or "")
    method = f", calibrated with {html.escape(report.method)}" if report.method else ""
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in report.notes)
    tensors = (_tensor_table(report.tensors) if report.tensors else
               "<p>No activation tensor carries calibrated parameters.</p>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>refrt quantize report</title><style>{_STYLE}</style></head><body>\n"
            f"<h1>Quantization report</h1>\n<p>Mode: {mode}{method}.</p>{notes}\n"
            f"<h2>Nodes</h2>\n{_summary_table(report.summary)}\n"
            "<h2>Quantized activations</h2>\n<p>Quantized range: what the written scale and zero "
            "point represent, (qmin &minus; zero point) &times; scale to (qmax &minus; zero point)"
            " &times; scale. Clipped: share of calibration values more than half a step outside "
            "it. A tensor that fed a Relu or Clip folded into its producer takes the activation's "
            "range, so the values the activation would have zeroed count as clipped."
            f"</p>\n{tensors}\n{_figures(report)}\n</body></html>\n")
