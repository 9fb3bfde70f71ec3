"""``refrt fuzz``: property-based conformance testing of a runtime against refrt.

    refrt fuzz --candidate onnxruntime --op Add --op MatMulInteger --examples 100 --out repros
    refrt fuzz --candidate onnxruntime --all --examples 25 --json report.json
    refrt fuzz --rerun repros/cases/test_Mod_13_crash_1a2b3c4d --candidate onnxruntime

Exit status: 0 when nothing but passes and documented (``known``) differences were found, 1 when
a finding was (with ``--strict``, known ones too), 2 on a usage error.
"""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("fuzz", help="draw valid one-node models per op, run them on a candidate "
                       "runtime, report and shrink every difference from refrt",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--candidate", default="onnxruntime", metavar="SPEC",
                   help="onnxruntime[:disable|basic|extended|all][@PROVIDER], refrt[:ort|spec], "
                        "onnx.reference, backend:MODULE:CLASS or MODULE:FUNCTION (default "
                        "onnxruntime)")
    p.add_argument("--against", metavar="SPEC", help="metamorphic mode: compare the candidate "
                   "with this one (e.g. onnxruntime:disable against onnxruntime:all) instead of "
                   "refrt")
    p.add_argument("--op", action="append", default=[], metavar="[DOMAIN:]OP",
                   help="an op to fuzz (repeatable; comma-separated lists too)")
    p.add_argument("--all", action="store_true", help="every op refrt implements")
    p.add_argument("--graphs", type=int, default=0, metavar="N",
                   help="also N multi-node graph cases (element-wise chains)")
    p.add_argument("--examples", type=int, default=25, help="cases per op (default 25)")
    p.add_argument("--seed", type=int, help="random seed (default: derandomized, the same cases "
                   "every run)")
    p.add_argument("--dtype", action="append", default=[], help="draw only these dtypes "
                   "(repeatable)")
    p.add_argument("--edge-rate", type=float, default=0.15,
                   help="chance of each edge class (0-d, zero-size, NaN/inf, extreme integers, "
                        "odd strings) per case (default 0.15)")
    p.add_argument("--strict", action="store_true",
                   help="documented differences (known) fail too")
    p.add_argument("--out", metavar="DIR", help="write a reproducer folder per finding")
    p.add_argument("--json", metavar="FILE", help="write the whole report as JSON")
    p.add_argument("--no-isolate", action="store_true",
                   help="run the candidate in this process (a crash of the candidate ends the run)")
    p.add_argument("--rerun", metavar="FOLDER", help="check one reproducer folder and exit")
    p.set_defaults(func=run)


def _ops(args) -> list:
    from .strategies import implemented_ops
    every = implemented_ops()
    if args.all:
        return every
    names = [x for item in args.op for x in item.split(",") if x]
    if not names:
        raise ValueError("say which ops: --op OP (repeatable) or --all")
    out = []
    for name in names:
        dom, _, op = name.rpartition(":")
        matches = [(d, o) for d, o in every if o == op and (not dom or d == dom or
                                                           (dom in ("", "ai.onnx") and d == "ai.onnx"))]
        if not matches:
            raise ValueError(f"refrt does not implement {name!r}")
        out.append(matches[0])
    return out


def _progress(i: int, n: int, op: str) -> None:
    if not sys.stderr.isatty():
        if op:
            print(f"[{i + 1}/{n}] {op}", file=sys.stderr, flush=True)
        return
    width = 30
    done = int(width * i / max(n, 1))
    print(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {op:30s}", end="" if op else "\n",
          file=sys.stderr, flush=True)


def run(args) -> int:
    from .runner import CLASSES, failed, fuzz, rerun, save_json, summary_table
    if args.rerun:
        case, out = rerun(args.rerun, args.candidate, strict=args.strict,
                          isolate=not args.no_isolate)
        print(f"{case.key} on {args.candidate}: {out.cls}" + (f" -- {out.detail}" if out.detail else ""))
        if out.numerics_row:
            print(f"documented: {out.numerics_row}")
        return 1 if out.failed and (out.cls != "known" or args.strict) else 0
    report = fuzz(args.candidate, _ops(args), examples=args.examples, seed=args.seed,
                  strict=args.strict, against=args.against, out_dir=args.out,
                  isolate=not args.no_isolate, edge_rate=args.edge_rate,
                  dtypes=args.dtype or None, graphs=args.graphs, progress=_progress)
    print(f"refrt fuzz: {args.candidate} against {report['against']} on {report['host']}")
    print(summary_table(report))
    totals = report["totals"]
    print("total: " + ", ".join(f"{totals.get(c, 0)} {c}" for c in ("pass", "skipped") + CLASSES)
          + f" in {report['seconds']} s")
    for f in report["findings"]:
        print(f"\n{f['class']}: {f['case']}\n  {f['detail']}")
        if f.get("numerics_row"):
            print(f"  documented: {f['numerics_row'][:160]}")
        if f.get("command"):
            print(f"  rerun: {f['command']}")
    if args.json:
        save_json(report, args.json)
    return 1 if failed(report) else 0


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(prog="refrt")
    add_parser(ap.add_subparsers(dest="command", required=True))
    a = ap.parse_args(["fuzz"] + sys.argv[1:])
    sys.exit(a.func(a))
