"""onnxruntime measured against refrt with the conformance kit, op by op.

    python -m conformance.ort_differences [--examples 25] [--write]

Runs ``refrt.testing.fuzz`` over every op refrt can draw cases for, on the installed onnxruntime
(CPU provider, default optimizations, in a child process), and with ``--write`` rewrites
conformance/ORT_DIFFERENCES.md and the small reproducer folders under
conformance/ort_reproducers/. Time: about 90 s on 2 cores at 25 examples per op.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
REPORT = os.path.join(HERE, "ORT_DIFFERENCES.md")
REPROS = os.path.join(HERE, "ort_reproducers")

_ABOUT = {
    "crash": "onnxruntime raised (or died) on a model refrt runs",
    "missing_kernel": "onnxruntime has no kernel for this op version or type",
    "wrong_shape_or_dtype": "an output's shape or type differs",
    "nan_semantics": "NaN where refrt has none, or the reverse",
    "numeric": "values beyond the op's tolerance",
    "known": "documented in docs/NUMERICS.md (onnxruntime matches refrt's \"ort\" numerics)",
}


# What each finding is, worked out by rerunning its reproducer on onnxruntime alone and reading the
# spec: "op:class" -> (kind, explanation). Kinds: onnxruntime bug (a crash, or a valid model
# refused or computed wrongly), onnxruntime limitation (refused on purpose, with a message),
# spec silent (both readings defensible; docs/NUMERICS.md says what refrt does), spec
# inconsistency (the schema contradicts itself), environment (this machine, not the runtime).
TRIAGE = {
    "InstanceNormalization:crash": (
        "onnxruntime bug", "float16 input with a zero-size spatial dimension ([1, 1, 0]): the "
        "process dies with SIGSEGV (also with a plain `InferenceSession.run`, outside the kit). The "
        "spec's result is the empty tensor refrt returns."),
    "com.microsoft.QLinearSigmoid:crash": (
        "onnxruntime bug", "the optional zero points left out (inputs `X, X_scale, '', Y_scale`): "
        "onnxruntime aborts (SIGABRT, a `std::vector` bounds assertion while it reads the missing "
        "input's NodeArg) instead of using zero points of 0 as its schema allows."),
    "com.microsoft.QLinearLeakyRelu:crash": (
        "onnxruntime bug", "the same abort as QLinearSigmoid when the optional zero points are "
        "left out."),
    "com.microsoft.QLinearAdd:crash": (
        "onnxruntime bug", "optional zero points left out: the model is refused by onnxruntime's "
        "own type inference (\"Input data type does not match\"), although its schema marks them "
        "optional."),
    "com.microsoft.QLinearMul:crash": (
        "onnxruntime bug", "as QLinearAdd: optional zero points left out, the model is refused."),
    "com.microsoft.QLinearAveragePool:crash": (
        "onnxruntime bug", "as QLinearAdd: optional zero points left out, the model is refused."),
    "com.microsoft.EmbedLayerNormalization:crash": (
        "onnxruntime bug", "with one output declared (the schema makes mask_index optional) "
        "onnxruntime's type inference writes output 1 and refuses the model (\"output index 1 is "
        "out of range\")."),
    "com.microsoft.MatMulIntegerToFloat:numeric": (
        "onnxruntime bug", "an empty reduction dimension (A [0] as a vector of K = 0, B [0, 1]): "
        "the result is a sum of no terms, 0; onnxruntime returns uninitialized memory (300 runs "
        "of one session in one process gave 72 different values, from -8.07e32 to 1.4e-45)."),
    "com.microsoft.DynamicQuantizeMatMul:numeric": (
        "onnxruntime bug", "as MatMulIntegerToFloat: with K = 0 the output is uninitialized "
        "memory instead of 0."),
    "MaxPool:crash": (
        "onnxruntime bug", "`auto_pad=SAME_UPPER` with a stride larger than the kernel (kernel 1, "
        "stride 2, 2 rows): the SAME padding `max((out - 1) * stride + k - in, 0)` is 0, "
        "onnxruntime computes -1 and fails with \"padding values must be non-negative\"."),
    "MaxPool:nan_semantics": (
        "onnxruntime bug", "a window holding only NaN gives -inf (MaxPool's start value) instead "
        "of NaN; windows mixing NaN and numbers ignore the NaN. The spec is silent on NaN; -inf "
        "is not a value in the window."),
    "LpPool:wrong_shape_or_dtype": (
        "onnxruntime bug", "`auto_pad=SAME_UPPER` with dilations: onnxruntime pads for the "
        "undilated kernel, so the output has fewer rows than the input (2 for 3 at stride 1); "
        "SAME keeps ceil(in / stride) rows."),
    "GroupNormalization:crash": (
        "onnxruntime bug", "opset-18 GroupNormalization (deprecated) on an input with a "
        "zero-size dimension: onnxruntime's function expansion fails in a Reshape."),
    "GroupNormalization:numeric": (
        "not yet explained", "opset-18 GroupNormalization (deprecated; scale and bias per group), "
        "float32: onnxruntime's function expansion differs by about 1e-5 at magnitude 0.8, above "
        "the normalization bound."),
    "MeanVarianceNormalization:crash": (
        "onnxruntime bug", "float16 input: onnxruntime's function expansion binds Pow's type "
        "parameter to float16 and float32 and refuses the model; the schema allows float16."),
    "RMSNormalization:crash": (
        "onnxruntime bug", "X float16 with Scale float32 (the schema's T and V): onnxruntime's "
        "function expansion multiplies the two types and refuses the model."),
    "LayerNormalization:crash": (
        "onnxruntime bug", "onnxruntime's own LayerNormalization-1 in the ONNX domain at opset 7 "
        "expands through a Flatten with axis -1, which opset-7 Flatten does not allow."),
    "ReduceLogSum:crash": (
        "spec inconsistency", "uint32 (allowed by the schema's type constraint): the spec's own "
        "function body applies Log to the uint32 sum, which Log's schema forbids; onnxruntime "
        "expands the function and refuses the model."),
    "ReduceLogSum:numeric": (
        "spec silent", "int64 with the type's extremes: the integer sum overflows. refrt's "
        "\"spec\" numerics wrap (docs/NUMERICS.md, integer reductions), so log of a negative "
        "sum; onnxruntime gives 43 (log of the clamped sum)."),
    "ReduceLogSumExp:numeric": (
        "spec silent", "int64 with the type's extremes: as ReduceLogSum, an overflowing "
        "integer intermediate."),
    "Div:crash": (
        "onnxruntime limitation", "integer division by zero: onnxruntime fails the run (\"Integer "
        "division by zero\"); the spec does not define the result; refrt returns 0 there (NumPy's "
        "integer division)."),
    "Mod:crash": (
        "onnxruntime limitation", "integer modulo by zero: onnxruntime fails the run; the spec "
        "does not define the result (refrt returns 0, NumPy's)."),
    "StringNormalizer:crash": (
        "environment", "onnxruntime's StringNormalizer needs the en_US.UTF-8 locale, which this "
        "machine lacks; not a defect of either runtime."),
    "ai.onnx.ml.SVMClassifier:crash": (
        "onnxruntime bug", "onnxruntime requires an attribute the schema makes optional "
        "(\"No attribute with this name is defined\" at initialization) for a model with the "
        "schema's required attributes only."),
    "ai.onnx.ml.SVMRegressor:crash": (
        "onnxruntime bug", "as SVMClassifier: an optional attribute is required."),
    "Gather:numeric": (
        "onnxruntime bug", "strings, a 0-d index on axis 0 of a [1, 1, 1, 2] tensor: onnxruntime "
        "returns [['Zz', '']], losing the second string; the result is [['Zz', 'refrt']]."),
    "Shrink:numeric": (
        "onnxruntime bug", "float64: onnxruntime computes in float32 (1.0956934985716344 comes "
        "back as 1.0956934690475464, its float32 rounding, with lambd 0.5 and bias 0 where the "
        "result is the input itself)."),
    "com.microsoft.FastGelu:numeric": (
        "onnxruntime limitation", "float64: onnxruntime's result has float32 precision (about "
        "1.4e-8 off at 0.95)."),
    "DFT:nan_semantics": (
        "spec silent", "a NaN in the signal: onnxruntime makes every bin of that transform NaN; "
        "refrt's FFT (NumPy's) keeps the DC bin's imaginary part 0. IEEE arithmetic on the "
        "definition gives either, depending on how the complex products are written."),
    "STFT:nan_semantics": (
        "spec silent", "as DFT: NaN in a frame spreads to every bin in onnxruntime."),
    "com.microsoft.MultiHeadAttention:nan_semantics": (
        "spec silent", "an infinite key makes a query's scores all -inf: onnxruntime's softmax "
        "computes 0/0 and returns NaN; refrt's attention softmax gives such a row zeros (as "
        "ONNX Attention-23 defines for fully masked rows), in both numerics modes. onnxruntime's "
        "documentation of the contrib op does not say."),
    "ScatterND:nan_semantics": (
        "spec silent", "`reduction=max` with NaN in the updates: onnxruntime's std::max drops "
        "the NaN, refrt (np.maximum) keeps it, as ReduceMax does."),
    "DeformConv:nan_semantics": (
        "spec silent", "+inf and -inf in one sum: the order of the additions decides between "
        "-inf and NaN."),
    "ai.onnx.ml.TreeEnsembleClassifier:numeric": (
        "not yet explained", "two classes, one tree with one leaf per class: onnxruntime's scores "
        "have the opposite sign (its binary-classification convention); the spec does not "
        "describe that case."),
}


def _rel(path: str) -> str:
    return os.path.relpath(path, os.path.dirname(HERE))


def render(report: dict) -> str:
    from refrt.testing.runner import CLASSES
    ops = report["ops"]
    tot = report["totals"]
    lines = [
        "# onnxruntime measured against refrt",
        "",
        f"`python -m conformance.ort_differences --examples {report['examples_per_op']} --write` "
        f"(the conformance kit, `refrt.testing`): onnxruntime {report['onnxruntime']} "
        f"(CPU provider, default optimizations, in a child process), onnx {report['onnx']}, "
        f"{report['examples_per_op']} drawn cases per op (shrinking adds more), "
        f"{len(ops)} ops, {report['seconds']:.0f} s.",
        "",
        f"Host: {report['host']}.",
        "",
        "The expected values are refrt's in \"spec\" numerics; the tolerance is the op's class "
        "(`refrt/testing/tolerance.py`: exact for integer and data-movement ops, 0 ulp for single "
        "IEEE operations, 4 ulp for math-library functions, the a-priori sum bound for products "
        "and reductions, a scale bound for normalizations). A difference onnxruntime shares with "
        "refrt's \"ort\" numerics is `known` (its docs/NUMERICS.md row is named).",
        "",
        "Totals: " + ", ".join(f"{tot.get(c, 0)} {c}" for c in ("pass",) + CLASSES) + " (cases).",
        "",
        "## Findings",
        "",
        "One per op and class: the shrunk case, what differs, and the command that reruns it "
        "(the folder holds `model.onnx` and `test_data_set_0/` with refrt's outputs; onnx's "
        "backend runner and onnxruntime's `onnx_test_runner` load it too).",
        "",
    ]
    by_class = defaultdict(list)
    for f in report["findings"]:
        by_class[f["class"]].append(f)
    kinds = defaultdict(list)
    for f in report["findings"]:
        if f["class"] not in ("missing_kernel", "known"):
            op = f["op"].rsplit("-", 1)[0]
            kinds[TRIAGE.get(f"{op}:{f['class']}", ("not triaged", ""))[0]].append(f["op"])
    lines[lines.index("## Findings"):lines.index("## Findings")] = [
        "## Summary", ""] + [f"- {kind}: {len(set(ops))} ops ({', '.join(sorted(set(ops)))})"
                             for kind, ops in sorted(kinds.items())] + [
        f"- missing kernels (an op version or type onnxruntime does not run): "
        f"{len(by_class.get('missing_kernel', []))} ops",
        f"- documented differences (`known`): {len(by_class.get('known', []))} ops", ""]
    for cls in CLASSES:
        found = by_class.get(cls, [])
        if not found:
            continue
        lines += [f"### {cls}: {_ABOUT[cls]} ({len(found)} ops)", ""]
        if cls == "missing_kernel":
            lines += ["| op | first case without a kernel | onnxruntime says |", "|---|---|---|"]
            for f in found:
                msg = f["detail"].split(":")[-1].strip()[:90].replace("|", "/")
                lines.append(f"| {f['op']} | `{f['case'].split(' inputs')[0]}` | {msg} |")
            lines.append("")
            continue
        for f in found:
            op = f["op"].rsplit("-", 1)[0]
            kind, why = (("documented", "") if cls == "known" else
                         TRIAGE.get(f"{op}:{cls}", ("not triaged", "")))
            lines.append(f"- **{f['op']}** ({kind}) `{f['case']}`  ")
            if why:
                lines.append(f"  {why}  ")
            lines.append(f"  measured: {f['detail'][:400]}  ")
            if f.get("numerics_row"):
                lines.append(f"  documented: {f['numerics_row'][:200]}  ")
            if f.get("reproducer"):
                lines.append(f"  `refrt fuzz --rerun {_rel(f['reproducer'])} --candidate "
                             f"onnxruntime`")
            lines.append("")
    lines += ["## Per op", "",
              "`drawn` counts the strategy's draws and how many of them were valid (accepted: "
              "the schema, onnx's shape inference and refrt all took them); `cases` counts the "
              "cases run on onnxruntime, shrinking included.", "",
              "| op | drawn (valid) | cases | pass | " + " | ".join(CLASSES) + " | note |",
              "|---|---|---|---|" + "---|" * len(CLASSES) + "---|"]
    for key, r in ops.items():
        c, acc = r["classes"], r.get("acceptance", {})
        lines.append(f"| {key} | {acc.get('drawn', 0)} ({acc.get('accepted', 0)}) | "
                     f"{r['cases']} | {c.get('pass', 0)} | "
                     + " | ".join(str(c.get(k, 0)) for k in CLASSES)
                     + f" | {r['error'][:80] if r['error'] else ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from refrt.testing.runner import fuzz
    from refrt.testing.strategies import implemented_ops
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=25)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--op", action="append", default=[], help="only these ops (default all)")
    ap.add_argument("--render", action="store_true", help="rewrite ORT_DIFFERENCES.md from the "
                    "last run's ort_reproducers/report.json (after editing TRIAGE)")
    args = ap.parse_args(argv)
    if args.render:
        import json
        with open(os.path.join(REPROS, "report.json"), encoding="utf-8") as f:
            text = render(json.load(f))
        with open(REPORT, "w", encoding="utf-8") as f:
            f.write(text)
        return 0
    ops = [(d, o) for d, o in implemented_ops() if not args.op or o in args.op]
    out = REPROS if args.write else os.path.join(HERE, ".ort_reproducers")
    shutil.rmtree(out, ignore_errors=True)

    def progress(i, n, op):
        if op:
            print(f"[{i + 1}/{n}] {op}", file=sys.stderr, flush=True)
    report = fuzz("onnxruntime", ops, examples=args.examples, out_dir=out, progress=progress)
    for f in report["findings"]:      # only the reproducers worth keeping in the repository
        if f["class"] == "missing_kernel" and f.get("reproducer"):
            shutil.rmtree(f.pop("reproducer"), ignore_errors=True)
            f.pop("command", None)
    text = render(report)
    if args.write:
        with open(REPORT, "w", encoding="utf-8") as f:
            f.write(text)
        from refrt.testing.runner import save_json
        save_json(report, os.path.join(REPROS, "report.json"))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
