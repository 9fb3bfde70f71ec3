"""Cases where refrt is right and onnx.reference (the spec's Python oracle) is not.

refrt is a second oracle: where the two disagree, one of them is wrong, and the right answer can
be worked out independently (the spec's formula in float64, or onnxruntime). Each finding is a
one-node model, the value the spec's formula gives (computed here, not by refrt), and what the
oracle does instead. ``check()`` runs them all: refrt must give the expected value and
onnx.reference must still disagree (or raise); ``conformance/RESULTS.md`` lists them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from onnx import helper


@dataclass
class Finding:
    name: str
    op_type: str
    inputs: list
    attrs: dict
    opset: int
    expected: np.ndarray          # from the spec's formula, worked out independently of refrt
    oracle_does: str              # what onnx.reference gives instead

    def model(self):
        names = [f"i{k}" for k in range(len(self.inputs))]
        node = helper.make_node(self.op_type, names, ["y"], **self.attrs)
        graph = helper.make_graph([node], self.name, [helper.make_tensor_value_info(
            n, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)) for n, v in zip(names, self.inputs)],
            [helper.make_empty_tensor_value_info("y")])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 9
        return m, dict(zip(names, self.inputs))


def _avg_pool_dilated_valid():
    x = np.arange(49, dtype=np.float32).reshape(1, 1, 7, 7)
    # VALID: out = floor((7 - (3 - 1) * 2 - 1) / 1) + 1 = 3 per axis; window taps rows/cols i, i+2, i+4
    y = np.array([[x[0, 0, i:i + 5:2, j:j + 5:2].mean() for j in range(3)] for i in range(3)], np.float32)
    return y.reshape(1, 1, 3, 3)


FINDINGS = [
    Finding("averagepool_dilations_valid", "AveragePool", [np.arange(49, dtype=np.float32).reshape(1, 1, 7, 7)],
            {"kernel_shape": [3, 3], "dilations": [2, 2], "auto_pad": "VALID"}, 19, _avg_pool_dilated_valid(),
            "a 5 x 5 output (the undilated kernel's size), zeros where the dilated windows do not fit"),
    Finding("erf_float64_tiny", "Erf", [np.array([9e-247], np.float64)], {}, 13,
            np.array([2 / math.sqrt(math.pi) * 9e-247], np.float64),
            "0 (the exact value, 2x / sqrt(pi), is a normal float64)"),
    Finding("reducel2_float16_small", "ReduceL2", [np.array([1e-05], np.float16)], {"keepdims": 0}, 18,
            np.array(np.float16(1e-05)),
            "0 (the square 1e-10 underflows in float16 before the square root)"),
]


def check(finding: Finding) -> tuple[bool, str]:
    """-> (refrt gives the expected value, what onnx.reference gives now)."""
    import refrt

    model, feeds = finding.model()
    (got,) = refrt.run(model, feeds, numerics="spec")
    refrt_ok = got.shape == finding.expected.shape and np.allclose(got, finding.expected, rtol=1e-6, atol=0)
    try:
        from onnx.reference import ReferenceEvaluator
        (theirs,) = ReferenceEvaluator(model).run(None, feeds)
        theirs = np.asarray(theirs)
        if theirs.shape == finding.expected.shape and np.allclose(theirs, finding.expected, rtol=1e-6, atol=0):
            oracle = "agrees now"
        else:
            oracle = f"gives shape {list(theirs.shape)}, first values {theirs.ravel()[:3].tolist()}"
    except Exception as e:   # the oracle's own failure is part of the finding
        oracle = f"raises {type(e).__name__}"
    return refrt_ok, oracle


def markdown() -> list[str]:
    lines = ["", "## Where refrt is right and onnx.reference is not", "",
             "refrt is a second oracle. Each case: the spec's formula worked out independently, refrt's "
             "result (numerics \"spec\") and onnx.reference's (`conformance/oracle_findings.py`; tested "
             "in `conformance/test_oracle_findings.py`).", "",
             "| case | op | refrt | onnx.reference |", "|---|---|---|---|"]
    for f in FINDINGS:
        ok, oracle = check(f)
        lines.append(f"| `{f.name}` | {f.op_type} | {'the expected value' if ok else '**differs**'} | "
                     f"{f.oracle_does} ({oracle}) |")
    return lines
