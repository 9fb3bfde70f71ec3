"""Run drawn cases on a candidate, classify what differs, shrink failures to reproducers.

    report = fuzz("onnxruntime", ops=[("ai.onnx", "Add")], examples=50, out_dir="repros")

Failure classes (:data:`CLASSES`):

``crash``                 the candidate raised, died (a signal) or hung
``missing_kernel``        the candidate has no implementation for this op, version or type
``wrong_shape_or_dtype``  an output's count, shape or dtype differs
``nan_semantics``         NaN where refrt has none, or the reverse
``numeric``               a value beyond the op's tolerance (:mod:`refrt.testing.tolerance`)
``known``                 a difference docs/NUMERICS.md documents: the candidate matches refrt's
                          "ort" numerics (with this machine's onnxruntime GEMM behaviour) where it
                          misses "spec". Reported, not failed, unless ``strict``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from .. import registry
from .candidates import CandidateCrash, CandidateError, Isolated, make_candidate
from .data_sets import write_folder
from .strategies import Case, case_hash, describe, graph_cases, node_cases, run_refrt, size_of
from .tolerance import compare_output, needs_magnitude, tolerance_class

__all__ = ["CLASSES", "Outcome", "check", "fuzz", "fuzz_op", "write_reproducer", "rerun",
           "numerics_rows", "reduce_graph"]

CLASSES = ("crash", "missing_kernel", "wrong_shape_or_dtype", "nan_semantics", "numeric", "known")
_MISSING = re.compile(r"NOT_IMPLEMENTED|Could not find an implementation|not implemented|"
                      r"NotImplemented|is not a registered function/op|No Op registered|"
                      r"No opset import for domain|Unsupported|not supported|only supports", re.IGNORECASE)


@dataclass
class Outcome:
    cls: str                            # "pass", "skipped" (metamorphic mode: the reference
                                        # failed) or one of CLASSES
    detail: str = ""
    output: int | None = None           # which output differed
    error: float | None = None
    bound: float | None = None
    numerics_row: str | None = None     # for "known": the docs/NUMERICS.md row

    @property
    def failed(self) -> bool:
        return self.cls not in ("pass", "skipped")


# -- docs/NUMERICS.md rows ----------------------------------------------------------------------

def _numerics_doc() -> str | None:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(here, "docs", "NUMERICS.md")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    return None


def numerics_rows(op_type: str) -> list[str]:
    """The docs/NUMERICS.md table rows whose first cell names ``op_type`` (source checkouts)."""
    doc = _numerics_doc() or ""
    rows = []
    for line in doc.splitlines():
        if line.startswith("| ") and not line.startswith("| op ") and not line.startswith("|---"):
            first = line.split("|")[1]
            if re.search(rf"\b{re.escape(op_type)}\b", first):
                rows.append(line.strip())
    return rows


# -- checking one case --------------------------------------------------------------------------

def _magnitudes(case: Case) -> list | None:
    """refrt's outputs on the absolute values of the float inputs (the sum bound's M)."""
    feeds = {k: (np.abs(v) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
             for k, v in case.feeds.items()}
    try:
        return run_refrt(case.model, feeds)
    except Exception:   # noqa: BLE001 -- no magnitude: the scale bound applies
        return None


def _n_terms(case: Case) -> int:
    return max([size_of(v) for v in case.feeds.values()] + [1])


def compare(case: Case, got: list, expected: list | None = None) -> Outcome:
    """Compare ``got`` with ``expected`` (default: the case's refrt outputs) output by output."""
    expected = case.expected if expected is None else expected
    if len(got) != len(expected):
        return Outcome("wrong_shape_or_dtype", f"{len(got)} outputs, expected {len(expected)}")
    tol = tolerance_class(case.op_type, case.domain) if case.source != "graph" else "scale"
    if tol == "default":
        tol = "scale"
    mags = _magnitudes(case) if needs_magnitude(case.op_type, tol) else None
    n = _n_terms(case) if case.source != "graph" else _n_terms(case) * max(len(case.ops), 1)
    for i, (e, g) in enumerate(zip(expected, got)):
        m = compare_output(e, g, tol, mags[i] if mags else None, n)
        if m is not None:
            return Outcome(m.kind, f"output {i}: {m.detail}", i, m.error, m.bound)
    return Outcome("pass")


# ops whose onnxruntime results depend on its thread count (docs/NUMERICS.md): refrt's "ort"
# numerics are also tried with onnxruntime's default count (this machine's cores)
_THREAD_DEPENDENT = {"DynamicQuantizeLSTM"}


def _ort_numerics(case: Case) -> list:
    """refrt's "ort" outputs with this machine's onnxruntime GEMM behaviour: one list per
    setting worth trying."""
    from ..host import ort_matching_options
    settings_ = [ort_matching_options()]
    if case.op_type in _THREAD_DEPENDENT:
        settings_.append(dict(settings_[0], intra_op_num_threads=os.cpu_count() or 1))
    out = []
    for opts in settings_:
        try:
            out.append(run_refrt(case.model, case.feeds, numerics="ort", **opts))
        except Exception:   # noqa: BLE001 -- no "ort" reading: nothing is known
            pass
    return out


def check(case: Case, candidate, *, strict: bool = False, reference=None) -> Outcome:
    """Run ``case`` on ``candidate`` and classify the result against refrt's "spec" outputs, or
    against ``reference`` (another candidate: metamorphic mode). A documented difference is
    classified ``known`` either way; ``strict`` is for the caller (known then counts as failed)."""
    expected = None
    if reference is not None:
        try:
            expected = reference.run(case.model, case.feeds)
        except (CandidateError, CandidateCrash) as e:
            return Outcome("skipped", f"the reference failed: {e}")
    try:
        got = candidate.run(case.model, case.feeds)
    except CandidateCrash as e:
        return Outcome("crash", str(e))
    except CandidateError as e:
        cls = "missing_kernel" if _MISSING.search(e.message) or e.type_name in (
            "NotImplementedError", "NotImplemented") else "crash"
        return Outcome(cls, f"{e.type_name}: {e.message.strip()[:400]}")
    got = [np.asarray(g) if not isinstance(g, (list, type(None))) else g for g in got]
    out = compare(case, got, expected)
    if out.failed and reference is None:
        if any(not compare(case, got, e).failed for e in _ort_numerics(case)):
            rows = numerics_rows(case.op_type)
            out = Outcome("known", f"matches refrt's \"ort\" numerics; differs from \"spec\": "
                          f"{out.detail}", out.output, out.error, out.bound,
                          " / ".join(rows) if rows else f"docs/NUMERICS.md ({case.op_type})")
    return out


# -- reproducers ---------------------------------------------------------------------------------

def write_reproducer(case: Case, outcome: Outcome, candidate: str, out_dir: str) -> str:
    """``OUT/cases/test_<op>_<version>_<class>_<hash>/``: model.onnx, test_data_set_0/ with
    refrt's outputs, and README.md with the command that reruns it. Loads in onnx's backend
    runner (``onnx.backend.test.loader.load_model_tests(OUT, "cases")``) and onnxruntime's
    onnx_test_runner."""
    name = f"test_{case.op_type}_{case.since}_{outcome.cls}_{case_hash(case)}"
    folder = os.path.join(out_dir, "cases", name)
    write_folder(folder, case.model, case.feeds, case.expected)
    shapes = ", ".join(f"{k} {describe(v)}" for k, v in case.feeds.items())
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(f"# {case.key}: {outcome.cls} on {candidate}\n\n"
                f"{outcome.detail}\n\n"
                f"- model: one {case.op_type} node, opset {case.opset}"
                f"{' (ops: ' + ', '.join(case.ops) + ')' if case.ops else ''}\n"
                f"- inputs: {shapes}\n"
                f"- expected outputs: refrt, \"spec\" numerics (test_data_set_0/output_*.pb)\n"
                + (f"- documented in docs/NUMERICS.md: {outcome.numerics_row}\n"
                   if outcome.numerics_row else "")
                + f"\nRerun:\n\n    refrt fuzz --rerun {folder} --candidate {candidate}\n")
    return folder


def rerun(folder: str, candidate_spec: str, *, strict: bool = False, isolate: bool = True):
    """Check a reproducer folder (or any onnx test folder) on a candidate: (Case, Outcome)."""
    from .data_sets import read_folder
    from .strategies import case_from_model
    model, feeds, expected = read_folder(folder)
    case = case_from_model(model, feeds, expected)
    cand = Isolated(candidate_spec) if isolate else make_candidate(candidate_spec)
    try:
        return case, check(case, cand, strict=strict)
    finally:
        cand.close()


# -- shrinking graph cases by removing nodes -------------------------------------------------------

def reduce_graph(case: Case, still_fails) -> Case:
    """Remove nodes (each consumer rewired to the removed node's first input) while
    ``still_fails(case)`` holds; returns the smallest case found."""
    from .strategies import case_from_model
    changed = True
    while changed:
        changed = False
        m = onnx.load_from_string(case.model)
        for i in range(len(m.graph.node)):
            if len(m.graph.node) == 1:
                break
            trial = onnx.ModelProto()
            trial.CopyFrom(m)
            node = trial.graph.node[i]
            src, dst = node.input[0], node.output[0]
            del trial.graph.node[i]
            for n in trial.graph.node:
                for j, x in enumerate(n.input):
                    if x == dst:
                        n.input[j] = src
            for o in trial.graph.output:
                if o.name == dst:
                    o.name = src
            if src not in {x.name for x in trial.graph.input} and not any(
                    src in n.output for n in trial.graph.node):
                continue
            try:
                smaller = case_from_model(trial.SerializeToString(), case.feeds)
            except Exception:   # noqa: BLE001 -- not a valid model: keep the node
                continue
            smaller.source = "graph"
            if still_fails(smaller):
                case, changed = smaller, True
                break
    return case


# -- a fuzzing run -------------------------------------------------------------------------------

class _Found(Exception):
    pass


# one exception type per class, so that hypothesis shrinks each class's failure separately
_EXC = {c: type(f"{c.title().replace('_', '')}Finding", (_Found,), {}) for c in CLASSES}


@dataclass
class OpReport:
    key: str
    cases: int = 0
    classes: Counter = field(default_factory=Counter)
    coverage: Counter = field(default_factory=Counter)          # (version, types) -> cases
    findings: list = field(default_factory=list)                 # dicts
    acceptance: dict = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""


def _settings(examples: int, seed: int | None):
    return settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
                    suppress_health_check=list(HealthCheck), report_multiple_bugs=True,
                    phases=(Phase.explicit, Phase.generate, Phase.shrink), print_blob=False)


def fuzz_op(op_type: str, domain: str, candidate, *, examples: int = 25, seed: int | None = None,
            strict: bool = False, reference=None, out_dir: str | None = None, edge_rate: float = 0.1,
            dtypes=None, graph: bool = False, max_nodes: int = 6) -> OpReport:
    """Draw ``examples`` cases of one op (or graph cases with ``graph``) and check each on
    ``candidate``; each failure class found is shrunk and (with ``out_dir``) written out."""
    from .strategies import _STATS
    key = "graph" if graph else (op_type if registry.canonical_domain(domain) == "ai.onnx"
                                 else f"{registry.canonical_domain(domain)}.{op_type}")
    rep = OpReport(key)
    found: dict[str, tuple] = {}
    known: dict[str, tuple] = {}
    limit = getattr(candidate, "opset_limit", None)
    strategy = (graph_cases(max_nodes=max_nodes, edge_rate=edge_rate) if graph else
                node_cases(op_type, domain, dtypes=dtypes, edge_rate=edge_rate, max_opset=limit))
    t0 = time.monotonic()

    @_settings(examples, seed)
    @given(strategy)
    def prop(case):
        out = check(case, candidate, strict=strict, reference=reference)
        rep.cases += 1
        rep.classes[out.cls] += 1
        rep.coverage[(case.since, case.types)] += 1
        if out.cls == "known":
            known.setdefault(out.numerics_row or "", (case, out))
        if out.failed and (out.cls != "known" or strict):
            found[out.cls] = (case, out)
            raise _EXC[out.cls](out.detail)

    if seed is not None:
        prop = hypothesis_seed(seed)(prop)
    before = dict(_STATS.get(key, {}))
    try:
        prop()
    except _Found:
        pass
    except BaseException as e:   # noqa: BLE001 -- ExceptionGroup of findings, or the strategy's
        if isinstance(e, KeyboardInterrupt):
            raise
        others = [x for x in _flatten(e) if not isinstance(x, _Found)]
        if others:
            x = others[0]
            rep.error = f"{type(x).__name__}: {str(x).splitlines()[0] if str(x) else ''}"
    after = _STATS.get(key, {})
    rep.acceptance = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    for cls, (case, out) in sorted(found.items()):
        if graph:
            case = reduce_graph(case, lambda c, cls=cls: check(
                c, candidate, strict=strict, reference=reference).cls == cls)
            out = check(case, candidate, strict=strict, reference=reference)
        rep.findings.append(_finding(case, out, candidate, out_dir))
    for row, (case, out) in known.items():
        if "known" not in found:
            rep.findings.append(_finding(case, out, candidate, out_dir))
    rep.seconds = time.monotonic() - t0
    return rep


def _flatten(e: BaseException) -> list:
    inner = getattr(e, "exceptions", None)
    return [y for x in inner for y in _flatten(x)] if inner else [e]


def _finding(case: Case, out: Outcome, candidate, out_dir) -> dict:
    d = {"op": case.key, "class": out.cls, "detail": out.detail, "error": out.error,
         "bound": out.bound, "numerics_row": out.numerics_row, "case": repr(case),
         "nodes": len(onnx.load_from_string(case.model).graph.node),
         "inputs": {k: describe(v) for k, v in case.feeds.items()},
         "input_elements": sum(size_of(v) for v in case.feeds.values())}
    if out_dir:
        d["reproducer"] = write_reproducer(case, out, candidate.name, out_dir)
        d["command"] = f"refrt fuzz --rerun {d['reproducer']} --candidate {candidate.name}"
    return d


def fuzz(candidate_spec: str, ops=None, *, examples: int = 25, seed: int | None = None,
         strict: bool = False, against: str | None = None, out_dir: str | None = None,
         isolate: bool = True, edge_rate: float = 0.1, dtypes=None, graphs: int = 0,
         progress=None) -> dict:
    """Fuzz ``ops`` ((domain, op_type) pairs; default: every op refrt implements) on a candidate.
    Returns a JSON-ready report."""
    from .strategies import implemented_ops
    ops = list(ops or implemented_ops())
    cand = Isolated(candidate_spec) if isolate else make_candidate(candidate_spec)
    ref = None
    if against:
        ref = Isolated(against) if isolate else make_candidate(against)
    reports = []
    t0 = time.monotonic()
    try:
        for i, (dom, op) in enumerate(ops):
            if progress:
                progress(i, len(ops), op)
            try:
                reports.append(fuzz_op(op, dom, cand, examples=examples, seed=seed,
                                       strict=strict, reference=ref, out_dir=out_dir,
                                       edge_rate=edge_rate, dtypes=dtypes))
            except Exception as e:   # noqa: BLE001 -- one op's trouble must not end the run
                rep = OpReport(op if dom == "ai.onnx" else f"{dom}.{op}")
                rep.error = f"kit error: {type(e).__name__}: {e}"
                reports.append(rep)
        if graphs:
            if progress:
                progress(len(ops), len(ops) + 1, "graphs")
            reports.append(fuzz_op("graph", "", cand, examples=graphs, seed=seed, strict=strict,
                                   reference=ref, out_dir=out_dir, graph=True))
    finally:
        cand.close()
        if ref is not None:
            ref.close()
    if progress:
        progress(len(ops), len(ops), "")
    return _report(candidate_spec, against, reports, examples, time.monotonic() - t0, strict)


def _report(candidate, against, reports, examples, seconds, strict) -> dict:
    from .. import host
    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    totals = Counter()
    for r in reports:
        totals.update(r.classes)
    return {
        "schema": "refrt.testing.fuzz/1",
        "candidate": candidate, "against": against or "refrt (spec numerics)", "strict": strict,
        "examples_per_op": examples, "seconds": round(seconds, 1),
        "host": host.summary(), "onnx": onnx.__version__, "onnxruntime": ort_version,
        "totals": dict(totals),
        "ops": {r.key: {"cases": r.cases, "classes": dict(r.classes), "seconds": round(r.seconds, 2),
                        "coverage": [[v, t, n] for (v, t), n in sorted(r.coverage.items())],
                        "acceptance": r.acceptance, "error": r.error}
                for r in reports},
        "findings": [f for r in reports for f in r.findings],
    }


def failed(report: dict) -> bool:
    return any(f["class"] != "known" or report.get("strict") for f in report["findings"])


def summary_table(report: dict) -> str:
    """One line per op: cases, passes, and each class's count."""
    lines = [f"{'op':34s} {'cases':>5s} {'pass':>5s} " + " ".join(f"{c[:8]:>8s}" for c in CLASSES)]
    for key, r in report["ops"].items():
        c = r["classes"]
        mark = "" if not r["error"] else f"  ({r['error'][:60]})"
        lines.append(f"{key:34s} {r['cases']:5d} {c.get('pass', 0):5d} "
                     + " ".join(f"{c.get(k, 0):8d}" for k in CLASSES) + mark)
    return "\n".join(lines)


def save_json(report: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, default=str)
