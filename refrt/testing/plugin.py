"""The pytest plugin: property-based conformance tests of a runtime against refrt, generated per op.

Off unless asked. In any folder, with or without test files of your own:

    pytest --refrt-candidate onnxruntime --refrt-ops Relu,Add,MatMulInteger --refrt-examples 100

Each op becomes one test item, ``refrt[OP]``, which draws cases (:func:`refrt.testing.strategies.
node_cases`), runs them on the candidate and fails with the shrunk case of each failure class found
(:mod:`refrt.testing.runner`); documented differences (``known``) pass unless ``--refrt-strict``.

``--refrt-xfail FILE``: expected failures, one per line, ``OP_GLOB [CLASS ...]  # reason``; the
reason is required. An op whose findings are all covered is reported as xfailed with the reason.

The terminal summary ends with the coverage matrix (op, versions, dtypes drawn, cases) and
``--refrt-report FILE.json`` writes the whole run as JSON (the ``refrt fuzz --json`` format).
"""

from __future__ import annotations

import fnmatch
import os

import pytest

_STATE_KEY = "_refrt_kit"


def pytest_addoption(parser):
    g = parser.getgroup("refrt", "conformance testing against refrt (refrt.testing)")
    g.addoption("--refrt-candidate", metavar="SPEC", help="the runtime to test: onnxruntime[:LEVEL]"
                "[@PROVIDER], refrt[:ort|spec], onnx.reference, backend:MODULE:CLASS or "
                "MODULE:FUNCTION; turns the plugin on")
    g.addoption("--refrt-against", metavar="SPEC", help="metamorphic mode: compare with this "
                "candidate instead of refrt")
    g.addoption("--refrt-ops", metavar="OPS", default="", help="comma-separated [DOMAIN:]OP list "
                "(default: every op refrt implements)")
    g.addoption("--refrt-examples", type=int, default=25, help="cases per op (default 25)")
    g.addoption("--refrt-dtypes", metavar="DTYPES", default="", help="comma-separated dtypes to draw")
    g.addoption("--refrt-seed", type=int, help="random seed (default: derandomized)")
    g.addoption("--refrt-edge-rate", type=float, default=0.15, help="edge-case rate per class")
    g.addoption("--refrt-strict", action="store_true", help="documented differences fail too")
    g.addoption("--refrt-xfail", metavar="FILE", help="expected failures: OP_GLOB [CLASS ...]  # reason")
    g.addoption("--refrt-report", metavar="FILE.json", help="write the run as JSON")
    g.addoption("--refrt-out", metavar="DIR", help="write a reproducer folder per finding")
    g.addoption("--refrt-graphs", type=int, default=0, metavar="N",
                help="also one item of N multi-node graph cases")
    g.addoption("--refrt-no-isolate", action="store_true",
                help="run the candidate in the pytest process")


def _enabled(config) -> bool:
    return bool(config.getoption("--refrt-candidate"))


def parse_xfail(path: str) -> list[tuple[str, tuple, str]]:
    """(op glob, classes or (), reason) per line of an xfail file."""
    from .runner import CLASSES
    entries = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            body, sep, reason = line.partition("#")
            if not body.strip():
                continue
            if not sep or not reason.strip():
                raise pytest.UsageError(f"{path}:{n}: every expected failure needs a reason "
                                        f"after '#'")
            pattern, *classes = body.split()
            bad = [c for c in classes if c not in CLASSES]
            if bad:
                raise pytest.UsageError(f"{path}:{n}: unknown class {bad[0]!r}; classes are "
                                        f"{', '.join(CLASSES)}")
            entries.append((pattern, tuple(classes), reason.strip()))
    return entries


class _Kit:
    """Session state: the candidate (one child process for the whole run), the reports."""

    def __init__(self, config):
        from .candidates import Isolated, make_candidate
        opt = config.getoption
        self.config = config
        self.spec = opt("--refrt-candidate")
        isolate = not opt("--refrt-no-isolate")
        self.candidate = Isolated(self.spec) if isolate else make_candidate(self.spec)
        against = opt("--refrt-against")
        self.reference = None
        if against:
            self.reference = Isolated(against) if isolate else make_candidate(against)
        self.xfail = parse_xfail(opt("--refrt-xfail")) if opt("--refrt-xfail") else []
        self.reports = []

    def close(self):
        self.candidate.close()
        if self.reference is not None:
            self.reference.close()


def _ops(config) -> list[tuple[str, str]]:
    from .strategies import implemented_ops
    every = implemented_ops()
    names = [x.strip() for x in config.getoption("--refrt-ops").split(",") if x.strip()]
    if not names:
        return every
    out = []
    for name in names:
        dom, _, op = name.rpartition(":")
        found = [(d, o) for d, o in every if o == op and (not dom or d == dom)]
        if not found:
            raise pytest.UsageError(f"--refrt-ops: refrt does not implement {name!r}")
        out.append(found[0])
    return out


class RefrtOpItem(pytest.Item):
    def __init__(self, *, domain: str, op_type: str, graph: int = 0, **kw):
        super().__init__(**kw)
        self.domain, self.op_type, self.graph = domain, op_type, graph
        self.add_marker(pytest.mark.refrt)

    def runtest(self):
        from .runner import fuzz_op
        kit: _Kit = self.config.stash[_KIT]
        opt = self.config.getoption
        dtypes = [d for d in opt("--refrt-dtypes").split(",") if d] or None
        rep = fuzz_op(self.op_type, self.domain, kit.candidate,
                      examples=self.graph or opt("--refrt-examples"), seed=opt("--refrt-seed"),
                      strict=opt("--refrt-strict"), reference=kit.reference,
                      out_dir=opt("--refrt-out"), edge_rate=opt("--refrt-edge-rate"),
                      dtypes=dtypes, graph=bool(self.graph))
        kit.reports.append(rep)
        failing = [f for f in rep.findings if f["class"] != "known" or opt("--refrt-strict")]
        if rep.error and not failing:
            raise RefrtKitError(f"{rep.key}: {rep.error}")
        if not failing:
            return
        covered = [self._xfail_reason(kit, f["class"]) for f in failing]
        if all(covered):
            pytest.xfail("; ".join(sorted(set(covered))))
        raise RefrtFindings(rep.key, failing)

    def _xfail_reason(self, kit: _Kit, cls: str) -> str | None:
        key = self.name[len("refrt["):-1]
        for pattern, classes, reason in kit.xfail:
            if fnmatch.fnmatchcase(key, pattern) and (not classes or cls in classes):
                return reason
        return None

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, RefrtFindings):
            lines = [f"{excinfo.value.key} on {self.config.getoption('--refrt-candidate')}:"]
            for f in excinfo.value.findings:
                lines.append(f"  {f['class']}: {f['case']}")
                lines.append(f"    {f['detail']}")
                if f.get("command"):
                    lines.append(f"    rerun: {f['command']}")
            return "\n".join(lines)
        if isinstance(excinfo.value, RefrtKitError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return "refrt", None, self.name


class RefrtFindings(Exception):
    def __init__(self, key, findings):
        self.key, self.findings = key, findings
        super().__init__(f"{key}: {len(findings)} finding(s)")


class RefrtKitError(Exception):
    pass


_KIT = pytest.StashKey[_Kit]()


def pytest_configure(config):
    config.addinivalue_line("markers", "refrt: a conformance test generated by refrt's plugin")
    if _enabled(config):
        config.stash[_KIT] = _Kit(config)


def pytest_collection_modifyitems(session, config, items):
    if not _enabled(config):
        return
    for dom, op in _ops(config):
        key = op if dom == "ai.onnx" else f"{dom}.{op}"
        items.append(RefrtOpItem.from_parent(session, name=f"refrt[{key}]", domain=dom,
                                             op_type=op))
    n = config.getoption("--refrt-graphs")
    if n:
        items.append(RefrtOpItem.from_parent(session, name="refrt[graph]", domain="",
                                             op_type="graph", graph=n))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _enabled(config) or _KIT not in config.stash:
        return
    kit = config.stash[_KIT]
    tr = terminalreporter
    tr.section(f"refrt conformance: {kit.spec} against "
               f"{config.getoption('--refrt-against') or 'refrt (spec numerics)'}")
    tr.write_line(f"{'op':30s} {'version':>8s}  {'dtypes':40s} {'cases':>5s}  outcome")
    for rep in kit.reports:
        if not rep.coverage:
            tr.write_line(f"{rep.key:30s} {'-':>8s}  {'(no valid case drawn)':40s} {0:5d}  "
                          f"{rep.error or ''}")
        for (since, types), n in sorted(rep.coverage.items()):
            outcome = ", ".join(f"{k} {v}" for k, v in sorted(rep.classes.items()))
            tr.write_line(f"{rep.key:30s} {since:>8}  {types[:40]:40s} {n:5d}  {outcome}")
    path = config.getoption("--refrt-report")
    if path:
        from .runner import _report, save_json
        report = _report(kit.spec, config.getoption("--refrt-against"), kit.reports,
                         config.getoption("--refrt-examples"), sum(r.seconds for r in kit.reports),
                         config.getoption("--refrt-strict"))
        save_json(report, path)
        tr.write_line(f"report: {os.path.abspath(path)}")


def pytest_unconfigure(config):
    if _KIT in config.stash:
        config.stash[_KIT].close()
