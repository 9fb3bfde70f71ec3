"""What ``refrt.explain`` returns: an :class:`Explanation` made of :class:`Step` s, printable
(``str()`` / ``render()``) and serializable (``as_dict()`` for ``--json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .arith import fmt, same_bits, ulp_distance


@dataclass
class Step:
    """One step of the computation: a title, the lines with the actual numbers, the value the step
    ends with (a scalar, or None) and an optional note (where onnxruntime and the spec differ,
    where ORT's AVX2 path would saturate, a rounding tie, ...)."""
    title: str
    lines: list[str] = field(default_factory=list)
    value: Any = None
    note: str = ""


@dataclass
class CodeRef:
    """Where a piece of the computation lives: its role ("op", "kernel", "twin", ...), the
    qualified name and ``file:line``."""
    role: str
    name: str
    file: str
    line: int
    detail: str = ""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class InputInfo:
    """One input of the node: its position, name in the graph, parameter name in the op's
    signature, dtype, shape and (small tensors) values."""
    index: int
    name: str
    param: str
    dtype: str | None
    shape: list | None
    summary: str


@dataclass
class Explanation:
    """One output element of one node, computed step by step.

    ``value`` is what the steps computed, ``actual`` the element the node produced; ``match`` is
    True only when the two are the same bits (None where the explanation could not recompute the
    element: the generic fallback); ``verdict`` says it in words (and, where they differ, by how
    many ULP and why)."""
    node: str
    op_type: str
    domain: str
    since: int
    opset: int
    numerics: str
    emulate_avx2_u8s8: bool
    output: str
    output_index: int
    output_dtype: str
    output_shape: list
    at: tuple
    formula: str
    doc: str
    code: list[CodeRef]
    inputs: list[InputInfo]
    attributes: dict
    steps: list[Step]
    value: Any
    actual: Any
    match: bool | None
    verdict: str
    notes: list[str] = field(default_factory=list)
    order_bound: float | None = None

    @property
    def final_value(self):
        return self.value

    @property
    def node_value(self):
        return self.actual

    # ---- text
    def render(self) -> str:
        out = []
        dom = "" if self.domain == "ai.onnx" else f"{self.domain}."
        out.append(f"{dom}{self.op_type} node {self.node!r}  ({self.domain} {self.op_type}-"
                   f"{self.since} at opset {self.opset}; numerics {self.numerics!r}"
                   f"{', emulate_avx2_u8s8' if self.emulate_avx2_u8s8 else ''})")
        idx = ", ".join(str(i) for i in self.at)
        out.append(f"element {self.output}[{idx}] of output {self.output_index} "
                   f"{self.output!r}: {self.output_dtype}{self.output_shape}")
        out.append("")
        out.append("formula")
        for line in self.formula.splitlines():
            out.append(f"  {line}")
        if self.code:
            out.append("")
            out.append("code")
            width = max(len(c.where) for c in self.code)
            for c in self.code:
                extra = f"  ({c.detail})" if c.detail else ""
                out.append(f"  {c.role:<8} {c.where:<{width}}  {c.name}{extra}")
        out.append("")
        out.append("inputs")
        if self.inputs:
            width = max(len(i.param) for i in self.inputs)
            for i in self.inputs:
                out.append(f"  {i.param:<{width}}  {i.name!r}: {i.summary}")
        else:
            out.append("  (none)")
        if self.attributes:
            out.append("attributes")
            out.append("  " + ", ".join(f"{k}={v!r}" for k, v in self.attributes.items()))
        out.append("")
        out.append("steps")
        for n, s in enumerate(self.steps, 1):
            out.append(f"  {n}. {s.title}")
            for line in s.lines:
                out.append(f"       {line}")
            if s.note:
                first, *rest = s.note.splitlines()
                out.append(f"       note: {first}")
                out.extend(f"             {r}" for r in rest)
        out.append("")
        out.append("result")
        out.append(f"  computed here: {fmt(self.value) if self.value is not None else '-'}")
        out.append(f"  node output:   {fmt(self.actual)}")
        out.append(f"  {self.verdict}")
        for note in self.notes:
            out.append(f"  note: {note}")
        return "\n".join(out)

    __str__ = render

    # ---- machines
    def as_dict(self) -> dict:
        def scalar(v):
            if v is None:
                return None
            a = np.asarray(v)
            if a.dtype.kind in "iub":
                return int(a)
            try:
                return float(a)
            except (TypeError, ValueError):
                return str(v)

        return {
            "node": self.node, "op_type": self.op_type, "domain": self.domain,
            "since": self.since, "opset": self.opset, "numerics": self.numerics,
            "emulate_avx2_u8s8": self.emulate_avx2_u8s8,
            "output": self.output, "output_index": self.output_index,
            "output_dtype": self.output_dtype, "output_shape": self.output_shape,
            "at": list(self.at), "formula": self.formula,
            "code": [{"role": c.role, "name": c.name, "file": c.file, "line": c.line,
                      "detail": c.detail} for c in self.code],
            "inputs": [{"index": i.index, "name": i.name, "param": i.param, "dtype": i.dtype,
                        "shape": i.shape, "summary": i.summary} for i in self.inputs],
            "attributes": {k: (v if isinstance(v, (int, float, str, list)) else repr(v))
                           for k, v in self.attributes.items()},
            "steps": [{"title": s.title, "lines": s.lines, "value": scalar(s.value),
                       "note": s.note} for s in self.steps],
            "value": scalar(self.value), "actual": scalar(self.actual), "match": self.match,
            "verdict": self.verdict, "notes": self.notes, "order_bound": self.order_bound,
        }


def verdict(value, actual, why_different: str = "") -> tuple[bool, str]:
    """(match, sentence) comparing the recomputed value with the node's element."""
    if value is None:
        return None, "not recomputed here (generic explanation): the value above is the node's"
    v, a = np.asarray(value), np.asarray(actual)
    if v.dtype != a.dtype:
        v = v.astype(a.dtype)
    if same_bits(v, a):
        return True, "equal: the steps above give the node's output bit for bit"
    if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
        ulps = ulp_distance(v, a)
        how = f"{ulps} ULP" if ulps is not None else "NaN against a number"
        diff = float(np.float64(v) - np.float64(a)) if ulps is not None else float("nan")
        text = f"DIFFERENT: {how} apart (computed - node = {diff:.3g})"
    else:
        text = f"DIFFERENT: {int(v) - int(a):+d} from the node's value"
    if why_different:
        text += f"; {why_different}"
    return False, text
