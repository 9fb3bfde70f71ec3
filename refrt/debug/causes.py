"""Why one node's result differs from the reference: re-run it under refrt's alternatives and name
the one that reproduces the reference.

``diagnose`` is called for a node whose error is *local* (refrt's node, fed the reference's own
inputs, still differs). Each check replays the node alone on those inputs:

| code | the check that names it |
|---|---|
| ``avx2_u8s8_saturation`` | a uint8 x int8 GEMM op; with ``emulate_avx2_u8s8`` (onnxruntime's int16 pair saturation on AVX2 CPUs without VNNI) refrt gives the reference's result |
| ``spec_choice`` | refrt's other numerics mode (``"ort"`` / ``"spec"``) gives it: a row of docs/NUMERICS.md covers the op |
| ``float16_in_float32`` | a float16 node; computing it in float32 and rounding once gives one side's result, not the other's |
| ``requantization_rounding`` | a requantizing op (QLinear*, QuantizeLinear) whose integer results differ by one step: a rounding tie resolved with another precision of the multiplier (onnx.reference uses float64) |
| ``transcendental_approximation`` | an op built on exp/log/tanh/erf/...: refrt and the reference are both within a few float epsilons (at the output's scale) of the float64 result: two approximations of one function (e.g. MLAS's exp vs the C library's) |
| ``accumulation_order`` | a summing op (MatMul, Conv, reductions, normalizations): both within a few epsilons of the float64 result: the same sum added in another order |
| ``reference_bug`` | refrt's two modes agree, refrt is within a few epsilons of float64, the reference is far from it |
| ``unexplained`` | none of the above |

``ort_graph_optimization`` (``optimizer_cause``, against ``onnxruntime-optimized``): onnxruntime's
own two levels differ at the tensor; bisecting its ``disabled_optimizers`` names the transformer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..host import U8S8_GEMM_OPS
from .metrics import is_float, tensor_metrics
from .replay import ReplayError, cast_floats, replay_node

__all__ = ["Cause", "diagnose", "CODES"]

CODES = ("avx2_u8s8_saturation", "ort_graph_optimization", "spec_choice", "float16_in_float32",
         "requantization_rounding", "transcendental_approximation", "accumulation_order",
         "reference_bug", "unexplained")

REQUANTIZING_OPS = {"QLinearMatMul", "QLinearConv", "QuantizeLinear", "QGemm", "QLinearAdd",
                    "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
                    "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "DynamicQuantizeLinear"}
TRANSCENDENTAL_OPS = {"Sigmoid", "Tanh", "Exp", "Log", "Erf", "Gelu", "FastGelu", "BiasGelu", "QuickGelu",
                      "Softplus", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh",
                      "Acosh", "Atanh", "Pow", "Elu", "Selu", "Celu", "Mish", "Softmax", "LogSoftmax",
                      "HardSwish", "Swish"}
ACCUMULATING_OPS = {"MatMul", "Gemm", "Conv", "FusedMatMul", "FusedGemm", "FusedConv",
                    "ConvTranspose", "ReduceSum", "ReduceMean", "ReduceSumSquare",
                    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceProd",
                    "GlobalAveragePool", "AveragePool", "LpPool", "GlobalLpPool", "LayerNormalization",
                    "SkipLayerNormalization", "SimplifiedLayerNormalization", "InstanceNormalization",
                    "BatchNormalization", "GroupNormalization", "Softmax", "LogSoftmax", "Einsum", "Sum",
                    "Mean", "CumSum", "LpNormalization", "MeanVarianceNormalization", "RNN", "GRU", "LSTM",
                    "Attention", "MultiHeadAttention", "FusedMatMul", "MatMulNBits", "DFT", "STFT",
                    "EmbedLayerNormalization", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
EPS_BUDGET = 64    # "a few epsilons": both sides within this many, at the output's scale, of float64


@dataclass
class Cause:
    code: str
    sentence: str
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _same(outs, refs, atol, rtol) -> bool:
    return all(r is None or (o is not None and tensor_metrics(o, r, atol, rtol).matches)
               for o, r in zip(outs, refs))


def _bitwise(outs, refs) -> bool:
    return all(r is None or (o is not None and tensor_metrics(o, r, 0, 0).equal) for o, r in zip(outs, refs))


def _try(model, node, inputs, **options):
    try:
        return replay_node(model, node, inputs, **options)
    except (ReplayError, ValueError, TypeError, NotImplementedError, RuntimeError):
        return None


def _eps_error(value, exact, dtype) -> float:
    """max |value - exact| in epsilons of ``dtype`` at the scale of ``exact``."""
    value, exact = np.asarray(value, np.float64), np.asarray(exact, np.float64)
    finite = np.isfinite(exact)
    if value.shape != exact.shape or (np.isnan(value) != np.isnan(exact)).any():
        return float("inf")
    if (~finite & (value != exact) & ~np.isnan(exact)).any():
        return float("inf")
    if not finite.any():
        return 0.0
    scale = float(np.abs(exact[finite]).max()) or 1.0
    return float(np.abs(value[finite] - exact[finite]).max() / (np.finfo(dtype).eps * scale))


def numerics_row(op_type: str) -> str:
    """The docs/NUMERICS.md row(s) that name ``op_type``, where the file is at hand."""
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "NUMERICS.md")
    try:
        with open(path, encoding="utf-8") as f:
            rows = [line.strip() for line in f if line.startswith("| ") and op_type in line.split("|")[1]]
    except OSError:
        return ""
    return "\n".join(rows)


def diagnose(model, node, inputs: list, ref_outputs: list, refrt_outputs: list, options: dict,
             atol: float, rtol: float) -> Cause:
    """Name the cause of a local difference (see the module docstring). ``inputs``: the
    reference's input values; ``refrt_outputs``: refrt's node replayed on them with ``options``."""
    op = node.op_type
    numerics = options.get("numerics", "ort")
    emulate = bool(options.get("emulate_avx2_u8s8", False))

    if op in U8S8_GEMM_OPS and not emulate:
        outs = _try(model, node, inputs, **dict(options, emulate_avx2_u8s8=True))
        if outs is not None and _same(outs, ref_outputs, atol, rtol) and not _bitwise(outs, refrt_outputs):
            how = "bit for bit" if _bitwise(outs, ref_outputs) else "within tolerance"
            return Cause("avx2_u8s8_saturation",
                         f"onnxruntime's uint8 x int8 GEMM on AVX2 CPUs without VNNI adds each pair of "
                         f"byte products in a saturating int16; refrt with emulate_avx2_u8s8 reproduces "
                         f"the reference {how} (refrt alone is exact).", {"reproduced": how})

    other = "spec" if numerics == "ort" else "ort"
    other_outs = _try(model, node, inputs, **dict(options, numerics=other))
    if other_outs is not None and _same(other_outs, ref_outputs, atol, rtol) \
            and not _bitwise(other_outs, refrt_outputs):
        row = numerics_row(op)
        return Cause("spec_choice",
                     f"refrt's numerics=\"{other}\" reproduces the reference: the spec leaves a choice "
                     f"here, or onnxruntime departs from it (docs/NUMERICS.md, {op}).",
                     {"numerics": other, "numerics_md": row})

    f16 = [v for v in list(inputs) + list(ref_outputs) if isinstance(v, np.ndarray) and v.dtype == np.float16]
    if f16:
        outs = _try(model, node, cast_floats(inputs, np.float16, np.float32), **options)
        if outs is not None:
            outs = [o.astype(np.float16) if isinstance(o, np.ndarray) and r is not None
                    and getattr(r, "dtype", None) == np.float16 else o for o, r in zip(outs, ref_outputs)]
            if _same(outs, ref_outputs, atol, rtol):
                return Cause("float16_in_float32",
                             "the reference computes this float16 node in float32 and rounds once; refrt "
                             "computes it otherwise.", {"reference": "float32 inside"})
            if _bitwise(outs, refrt_outputs):
                return Cause("float16_in_float32",
                             "refrt computes this float16 node in float32 and rounds once (as onnxruntime "
                             "does); the reference rounds to float16 along the way.",
                             {"refrt": "float32 inside"})

    if op in REQUANTIZING_OPS:
        steps = [tensor_metrics(o, r, 0, 0) for o, r in zip(refrt_outputs, ref_outputs)
                 if r is not None and o is not None and np.asarray(r).dtype.kind in "iu"]
        if steps and all(m.max_abs <= 1 for m in steps) and any(m.mismatched for m in steps):
            share = sum(m.mismatched for m in steps) / max(1, sum(m.size for m in steps))
            return Cause("requantization_rounding",
                         f"integer results differ by one step at {share:.3%} of the elements: rounding "
                         f"ties resolved with another precision of the requantization multiplier (refrt: "
                         f"float32 as onnxruntime; onnx.reference: float64).", {"share": share})

    wide = cast_floats(cast_floats(inputs, np.float32, np.float64), np.float16, np.float64)
    exact = _try(model, node, wide, **options)
    floats = [(o, r, e) for o, r, e in zip(refrt_outputs, ref_outputs, exact or [])
              if r is not None and o is not None and e is not None and is_float(np.asarray(r))
              and np.asarray(r).dtype.kind == "f"]
    if exact is not None and floats:
        e_refrt = max(_eps_error(o, e, np.asarray(r).dtype) for o, r, e in floats)
        e_ref = max(_eps_error(r, e, np.asarray(r).dtype) for o, r, e in floats)
        detail = {"refrt_eps_from_float64": e_refrt, "reference_eps_from_float64": e_ref,
                  "eps_budget": EPS_BUDGET}
        if e_refrt <= EPS_BUDGET and e_ref <= EPS_BUDGET:
            if op in TRANSCENDENTAL_OPS:
                return Cause("transcendental_approximation",
                             f"two approximations of one function: refrt is {e_refrt:.3g} and the reference "
                             f"{e_ref:.3g} float epsilons (at the output's scale) from the float64 result.",
                             detail)
            if op in ACCUMULATING_OPS:
                return Cause("accumulation_order",
                             f"the same sums added in another order: refrt is {e_refrt:.3g} and the reference "
                             f"{e_ref:.3g} float epsilons (at the output's scale) from the float64 result.",
                             detail)
        e_other = 0.0 if other_outs is None or _bitwise(other_outs, refrt_outputs) else max(
            (_eps_error(o, e, np.asarray(r).dtype) for o, r, e in zip(other_outs, ref_outputs, exact)
             if r is not None and o is not None and e is not None and np.asarray(r).dtype.kind == "f"),
            default=0.0)
        if e_refrt <= EPS_BUDGET < e_ref and e_other <= EPS_BUDGET:
            return Cause("reference_bug",
                         f"both of refrt's numerics modes are within {max(e_refrt, e_other):.3g} float "
                         f"epsilons of the float64 result; the reference is {e_ref:.3g} away: the "
                         f"reference looks wrong here.", detail)
        return Cause("unexplained", f"no alternative reproduces the reference (refrt {e_refrt:.3g}, reference "
                                    f"{e_ref:.3g} float epsilons from float64).", detail)
    return Cause("unexplained", "no alternative of refrt's reproduces the reference.")


# onnxruntime's graph transformers that rewrite arithmetic (names as its ``disabled_optimizers``
# takes them; a name it does not know changes nothing, so a wrong one is never blamed)
ORT_TRANSFORMERS = (
    "QDQSelectorActionTransformer", "QDQPropagationTransformer", "QDQS8ToU8Transformer",
    "QDQFinalCleanupTransformer", "DoubleQDQPairsRemover", "NchwcTransformer", "NhwcTransformer",
    "ConvActivationFusion", "ConvAddFusion", "ConvMulFusion", "ConvBNFusion", "GemmActivationFusion",
    "MatMulAddFusion", "MatMulScaleFusion", "MatMulIntegerToFloatFusion", "DynamicQuantizeMatMulFusion",
    "LayerNormFusion", "SimplifiedLayerNormFusion", "SkipLayerNormFusion", "EmbedLayerNormFusion",
    "AttentionFusion", "GeluFusion", "BiasGeluFusion", "FastGeluFusion", "QuickGeluFusion",
    "BiasSoftmaxFusion", "GemmSumFusion", "GemmTransposeFusion", "MatmulTransposeFusion",
    "ConstantFolding", "CommonSubexpressionElimination", "TransposeOptimizer", "ReshapeFusion")


def optimizer_cause(proto, feeds, node_result, ref, atol, rtol, memo: dict) -> Cause | None:
    """Against ``onnxruntime-optimized``: when onnxruntime's own two levels (optimizations off,
    all on) disagree at this node's tensors, the difference comes from a graph rewrite; bisect
    ``disabled_optimizers`` over ORT_TRANSFORMERS for the one whose absence restores the
    unoptimized values. None when the two levels agree."""
    from .references import ort_optimized_values, reference_values

    if "plain" not in memo:
        memo["plain"] = reference_values(proto, feeds, "onnxruntime").values
    plain = memo["plain"]
    names = [o.name for o in node_result.outputs if o.tag == "differs" and o.name in plain]
    if not names or all(tensor_metrics(ref.values[n], plain[n], atol, rtol).matches for n in names):
        return None

    def restored(disabled) -> bool:
        key = tuple(disabled)
        if key not in memo:
            memo[key] = ort_optimized_values(proto, feeds, disabled)[0]
        values = memo[key]
        return all(n in values and tensor_metrics(values[n], plain[n], atol, rtol).matches for n in names)

    found, pool = None, list(ORT_TRANSFORMERS)
    if restored(pool):
        while len(pool) > 1:                    # halve the set that still restores it
            half = pool[:len(pool) // 2]
            pool = half if restored(half) else pool[len(pool) // 2:]
        found = pool[0] if restored(pool) else None
    which = f"; disabling onnxruntime's {found} removes it" if found else \
        "; no single transformer of the list explains it"
    return Cause("ort_graph_optimization",
                 f"the difference comes from onnxruntime's graph optimizations: its own results with "
                 f"optimizations off and on disagree at this tensor{which}.",
                 {"transformer": found})
