"""Every op refrt implements, drawn with each edge class forced: what refrt runs and what it refuses.

    python -m conformance.edge_sweep [--examples 10] [--write]

For each op and each edge class of ``refrt.testing.strategies.EDGE_CLASSES`` (0-d inputs,
zero-size dimensions, NaN/inf/-0.0/subnormals/extreme floats, extreme integers, odd strings), the
conformance kit draws cases that contain that class (where the op's types allow it) and runs them
in refrt's "spec" numerics, then again in "ort" numerics. A draw the schema or onnx's shape
inference call invalid is not counted. Counted: cases refrt ran in both modes, and cases refrt
refused with a typed error, by the error (a refused case is a valid model by the schema and
onnx's inference that refrt declined: an input value out of range, a shape the op cannot take).
``--write`` puts the table into conformance/RESULTS.md between its edge-sweep markers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "RESULTS.md")
BEGIN, END = "<!-- edge sweep: begin -->", "<!-- edge sweep: end -->"


def sweep(examples: int, ops=None, progress=None) -> dict:
    from hypothesis import HealthCheck, given, settings

    from refrt.testing import strategies as S

    results: dict = {}
    every = ops or S.implemented_ops()
    for i, (dom, op) in enumerate(every):
        key = op if dom == "ai.onnx" else f"{dom}.{op}"
        if progress:
            progress(i, len(every), key)
        row = {}
        for cls in S.EDGE_CLASSES:
            before = Counter(S.acceptance().get(key, {}))
            ran, ort_failed = [0], Counter()

            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(S.node_cases(op, dom, edges={cls}, edge_rate=0.0))
            def one(case):
                if cls not in case.edges:
                    return                      # the op's types cannot hold this class
                ran[0] += 1
                try:
                    S.run_refrt(case.model, case.feeds, numerics="ort")
                except Exception as e:   # noqa: BLE001 -- counted, not raised
                    ort_failed[type(e).__name__] += 1

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    one()
            except Exception:   # noqa: BLE001 -- no valid draw for this class
                pass
            after = Counter(S.acceptance().get(key, {}))
            refused = {k[len("rejected: "):]: after[k] - before.get(k, 0) for k in after
                       if k.startswith("rejected: ") and after[k] > before.get(k, 0)
                       and ("Error" in k)}
            row[cls] = {"ran": ran[0], "refused": refused, "ort_failed": dict(ort_failed)}
        results[key] = row
    return results


def render(results: dict, examples: int, seconds: float) -> str:
    from refrt.testing.strategies import EDGE_CLASSES
    lines = [BEGIN, "",
             f"`python -m conformance.edge_sweep --examples {examples} --write`: every op, each "
             f"edge class forced, up to {examples} drawn cases per op and class ({seconds:.0f} s). "
             "A cell is the number of cases refrt ran in both numerics modes; `+N refused` counts "
             "valid models (by the schema and onnx's shape inference) that refrt declined with a "
             "typed error, `!N` runs that failed in \"ort\" numerics only; `-` means the op's "
             "types cannot hold the class.", "",
             "| op | " + " | ".join(EDGE_CLASSES) + " |", "|---|" + "---|" * len(EDGE_CLASSES)]
    totals, refusals = Counter(), Counter()
    for key, row in results.items():
        cells = []
        for cls in EDGE_CLASSES:
            r = row[cls]
            n_ref = sum(r["refused"].values())
            n_ort = sum(r["ort_failed"].values())
            if not r["ran"] and not n_ref:
                cells.append("-")
                continue
            totals[cls] += r["ran"]
            for reason, n in r["refused"].items():
                refusals[f"{key}: {reason}"] += n
            cells.append(f"{r['ran']}" + (f" +{n_ref} refused" if n_ref else "")
                         + (f" !{n_ort}" if n_ort else ""))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "Totals (cases run): " + ", ".join(f"{c} {totals[c]}" for c in EDGE_CLASSES)
              + ".", ""]
    if refusals:
        lines += ["Refusals, by op and error. Each was read: they are results the spec leaves "
                  "undefined and refrt refuses by name (a quantization range with NaN or inf, "
                  "Bernoulli or Multinomial inputs that are not probabilities, ArgMax or "
                  "GlobalMaxPool over an empty axis, reflect/edge/wrap padding of an empty axis, "
                  "sampling positions or scales that are NaN or infinite, a sample count beyond "
                  "the tensor limit, InstanceNormalization of a rank-2 input, which onnxruntime "
                  "refuses too), or draws whose values the schema and onnx's shape inference "
                  "cannot reject (a Reshape target or a Split that does not fit, channels not "
                  "divisible by the block size, a PRelu slope that does not broadcast, "
                  "MeanVarianceNormalization's default axes on a rank-3 input, a string that is "
                  "not a number).", ""]
        lines += [f"- {k}: {n}" for k, n in sorted(refusals.items())]
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=10)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.monotonic()

    def progress(i, n, key):
        print(f"[{i + 1}/{n}] {key}", file=sys.stderr, flush=True)
    results = sweep(args.examples, progress=progress)
    text = render(results, args.examples, time.monotonic() - t0)
    if not args.write:
        print(text)
        return 0
    from conformance.sections import put_section

    put_section(RESULTS, "## Edge cases, op by op", BEGIN, END, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
