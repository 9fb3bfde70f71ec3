"""A comparison as one self-contained HTML page: a plot of the error per node in graph order
(inline SVG, no scripts, no network) above the table of every node.

    page = to_html(result)          # or result.to_html("report.html")
"""

from __future__ import annotations

import html
import math

from .compare import metric_cells

__all__ = ["to_html"]

_COLORS = {"first": "#c0392b", "differs": "#e67e22", "match": "#27ae60", "missing": "#95a5a6"}


def _node_error(node) -> tuple[float, str]:
    """(largest max-abs error over the node's outputs, the node's tag)."""
    errs = [o.metrics.max_abs for o in node.outputs if o.metrics is not None]
    tag = "first" if node.first else node.status
    return (max(errs) if errs else float("nan")), tag


def _plot(nodes, width=900, height=260) -> str:
    left, right, top, bottom = 60, 10, 10, 40
    points = [(i, *_node_error(n)) for i, n in enumerate(nodes)]
    finite = [e for _, e, _ in points if e == e and e > 0 and e != float("inf")]
    lo = math.floor(math.log10(min(finite))) if finite else -8
    hi = math.ceil(math.log10(max(finite))) if finite else 0
    hi = max(hi, lo + 1)
    span_x = max(1, len(points) - 1)

    def x_of(i):
        return left + (width - left - right) * i / span_x

    def y_of(e):
        if not (e == e) or e <= 0:
            return height - bottom          # exact: on the axis
        e = min(e, 10.0 ** hi)
        return top + (height - top - bottom) * (hi - math.log10(e)) / (hi - lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">']
    for p in range(lo, hi + 1):
        y = y_of(10.0 ** p)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">1e{p}</text>')
    out.append(f'<text x="{left}" y="{height - 8}">node, in graph order; max abs error (on the axis: '
               f'exact). <tspan fill="{_COLORS["first"]}">&#9679; where a difference starts</tspan> '
               f'<tspan fill="{_COLORS["differs"]}">&#9679; differs</tspan> '
               f'<tspan fill="{_COLORS["match"]}">&#9679; matches</tspan></text>')
    for i, e, tag in points:
        label = html.escape(f"{nodes[i].label} ({nodes[i].op_type}): {e:.3g} [{tag}]")
        out.append(f'<circle cx="{x_of(i):.1f}" cy="{y_of(e):.1f}" r="3.5" fill="{_COLORS.get(tag, "#333")}">'
                   f'<title>{label}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def to_html(result) -> str:
    s = result.summary()
    esc = html.escape
    rows = []
    for n in result.nodes:
        for o in n.outputs:
            m = o.metrics
            tag = "first" if n.first and o.tag == "differs" else o.tag
            cells = [tag, n.label, n.op_type, o.name]
            if m is not None:
                cells += list(metric_cells(m))
            else:
                cells += ["", "", o.reason, "", ""]
            cells += [n.origin if o.tag == "differs" else "",
                      f"{n.cause.code}: {n.cause.sentence}" if n.cause and o.tag == "differs" else n.note]
            rows.append(f'<tr class="{tag}">' + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    head = ["tag", "node", "op", "output", "max abs", "max rel", "mismatched", "SQNR dB", "ULP", "origin",
            "cause"]
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>refrt compare: {esc(result.model)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
tr.first td {{ background: #f9d6d2; }} tr.differs td {{ background: #fdebd0; }}
tr.missing td {{ color: #888; }}
</style></head><body>
<h1>refrt vs {esc(result.reference)}</h1>
<p>Model <code>{esc(result.model)}</code>; tolerance atol {result.tolerance['atol']:g}, rtol
{result.tolerance['rtol']:g}; refrt options {esc(str(result.options))}.</p>
<p>{s['nodes']} nodes: {s['match']} match, {s['differs']} differ ({s['first']} where a difference starts;
{s['local']} local, {s['propagated']} propagated), {s['missing']} without a reference value.</p>
{_plot(result.nodes)}
<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>
{chr(10).join(rows)}
</table></body></html>
"""
