"""Where quantization loses accuracy: each float tensor against its quantized counterpart.

    loss = quant_loss("model.onnx", "model.int8.onnx", feeds)
    print(loss.table())          # the tensors that lose most first

Both models run on the same feeds (the quantized one in refrt, or in onnxruntime with
``runtime="onnxruntime"``). Each tensor of the float model is matched to the value that stands for
it in the quantized model, whatever format produced it:

* by the quantizer's naming (onnxruntime's, which refrt's quantizer writes too):
  ``T_DequantizeLinear_Output`` (QDQ), ``T_quantized`` with its scale and zero point (QOperator,
  dynamic), ``T`` itself where it stayed float;
* by structure: a QuantizeLinear reading ``T`` followed by a DequantizeLinear (QDQ from any tool);
  a quantized tensor's scale and zero point read from the node that produced it (QLinearConv's
  y_scale, ...), through the ops that pass 8-bit values along unchanged (MaxPool, Reshape, ...).

Weights are matched the same way (per channel along the DequantizeLinear's axis, or the axis
whose length is the number of scales). Per tensor: SQNR in dB (the float value as the signal),
the largest error, the share of float values outside the quantized range (clipped), and the scale
and zero point. ``drop_db`` is how much SQNR a node loses against its worst matched input: the
nodes that lose most are where to look first (``nodes_to_exclude`` candidates).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import numpy_helper

from .capture import capture_refrt
from .metrics import tensor_metrics

__all__ = ["quant_loss", "QuantLoss", "TensorLoss"]

# the scale and zero point input positions of each quantized op's output
Y_PARAMS = {"QuantizeLinear": (1, 2), "QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QGemm": (7, 8),
            "QLinearAdd": (6, 7), "QLinearMul": (6, 7), "QLinearSigmoid": (3, 4), "QLinearLeakyRelu": (3, 4),
            "QLinearAveragePool": (3, 4), "QLinearGlobalAveragePool": (3, 4), "QLinearSoftmax": (3, 4),
            "QLinearConcat": (0, 1), "QLinearWhere": (7, 8)}
PASSTHROUGH = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Resize", "Split",
               "Gather", "GatherElements", "Slice", "Pad", "DepthToSpace", "SpaceToDepth", "Identity",
               "Tile", "Expand", "ArgMax"}


@dataclass
class TensorLoss:
    name: str                  # in the float model
    kind: str                  # "activation" or "weight"
    counterpart: str           # in the quantized model
    how: str                   # how it was matched
    op_type: str               # the float node producing it ("" for a weight)
    node: str
    sqnr_db: float
    max_abs: float
    clipped: float | None      # share of float values outside the quantized range
    scale: list | None
    zero_point: list | None
    drop_db: float | None = None
    loss_node: str = ""        # the quantized node the drop belongs to (past a folded Relu/Clip)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        for k in ("sqnr_db", "drop_db"):
            if d[k] is not None and d[k] in (float("inf"), float("-inf")):
                d[k] = str(d[k])
        return d


@dataclass
class QuantLoss:
    float_model: str
    quantized_model: str
    runtime: str
    tensors: list = field(default_factory=list)
    unmatched: list = field(default_factory=list)   # float tensors with no quantized counterpart
    exclusions: list = field(default_factory=list)  # measured: {"node", "output_sqnr_db", "change_db"}

    def output_sqnr(self, outputs) -> float:
        """The lowest SQNR over the model outputs ``outputs`` (names)."""
        values = [t.sqnr_db for t in self.tensors if t.name in outputs]
        return min(values) if values else float("nan")

    def ranked(self) -> list:
        """Activations by SQNR, lowest first, then weights."""
        acts = sorted((t for t in self.tensors if t.kind == "activation"), key=lambda t: t.sqnr_db)
        return acts + sorted((t for t in self.tensors if t.kind == "weight"), key=lambda t: t.sqnr_db)

    def suggestions(self, count: int = 3) -> list:
        """The float nodes whose output loses most (over 1 dB) against their inputs."""
        acts = [t for t in self.tensors if t.kind == "activation" and t.drop_db is not None and t.loss_node
                and t.drop_db > 1.0]
        return [t.loss_node for t in sorted(acts, key=lambda t: -t.drop_db)[:count]]

    def to_dict(self) -> dict:
        return {"schema": "refrt.debug.quant_loss/1", "float_model": self.float_model,
                "quantized_model": self.quantized_model, "runtime": self.runtime,
                "tensors": [t.as_dict() for t in self.ranked()], "unmatched": self.unmatched,
                "nodes_to_exclude_candidates": self.suggestions(),
                "exclusions_measured": self.exclusions}

    def to_json(self, path=None) -> str:
        from .compare import dump_json

        return dump_json(self.to_dict(), path)

    def table(self, limit: int = 25) -> str:
        head = ("tensor", "kind", "op", "SQNR dB", "drop dB", "max abs", "clipped", "scale", "zp", "matched by")
        rows = []
        for t in self.ranked()[:limit]:
            rows.append((t.name[:30], t.kind, t.op_type, f"{t.sqnr_db:.1f}",
                         "" if t.drop_db is None else f"{t.drop_db:+.1f}", f"{t.max_abs:.3g}",
                         "" if t.clipped is None else f"{100 * t.clipped:.2f}%", _short_list(t.scale),
                         _short_list(t.zero_point), t.how))
        widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
        lines = [f"float {self.float_model} vs quantized {self.quantized_model} (run in {self.runtime})",
                 "  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        if len(self.tensors) > limit:
            lines.append(f"... {len(self.tensors) - limit} more (--json)")
        lines.append(f"{len(self.tensors)} tensors matched, {len(self.unmatched)} without a quantized counterpart"
                     + (f" ({', '.join(self.unmatched[:6])}{', ...' if len(self.unmatched) > 6 else ''})"
                        if self.unmatched else ""))
        sugg = self.suggestions()
        if sugg:
            lines.append("losing most against their inputs (candidates for nodes_to_exclude): " + ", ".join(sugg))
        for e in self.exclusions:
            lines.append(f"  re-quantized with nodes_to_exclude=[{e['node']!r}]: output SQNR "
                         f"{e['output_sqnr_db']:.1f} dB ({e['change_db']:+.1f} dB)")
        return "\n".join(lines)


def _short_list(v) -> str:
    if v is None:
        return ""
    v = list(v)
    if len(v) == 1:
        return f"{v[0]:.4g}" if isinstance(v[0], float) else str(v[0])
    return f"{len(v)} values"


class _Quantized:
    """The quantized model's graph and values, with the look-ups matching needs."""

    def __init__(self, proto, values):
        self.proto, self.values = proto, values
        self.inits = {t.name: t for t in proto.graph.initializer}
        self.producer = {o: n for n in proto.graph.node for o in n.output if o}
        self.consumers: dict = {}
        for n in proto.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self._arrays: dict = {}

    def value(self, name):
        if name in self.values:
            return self.values[name]
        if name in self.inits:
            if name not in self._arrays:
                self._arrays[name] = numpy_helper.to_array(self.inits[name])
            return self._arrays[name]
        return None

    def qparams(self, qname, depth=0):
        """(scale, zero point, axis) of a quantized tensor, from the node that made it."""
        node = self.producer.get(qname)
        if node is None or depth > 32:
            return None
        if node.op_type == "DynamicQuantizeLinear":
            return self.value(node.output[1]), self.value(node.output[2]), None
        if node.op_type in Y_PARAMS:
            i_s, i_z = Y_PARAMS[node.op_type]
            if len(node.input) > i_z:
                axis = next((a.i for a in node.attribute if a.name == "axis"), None) \
                    if node.op_type == "QuantizeLinear" else None
                return self.value(node.input[i_s]), self.value(node.input[i_z]), axis
            return None
        if node.op_type in PASSTHROUGH and node.input:
            return self.qparams(node.input[0], depth + 1)
        return None

    def dequantized(self, name):
        """(float value standing for float tensor ``name``, its name, how, (scale, zp, axis) or None)."""
        dq = f"{name}_DequantizeLinear_Output"
        if dq in self.values:
            return self.values[dq], dq, "QDQ naming", self._dq_params(dq)
        for q in self.consumers.get(name, []):           # structure: T -> Q -> DQ
            if q.op_type == "QuantizeLinear":
                for d in self.consumers.get(q.output[0], []):
                    if d.op_type == "DequantizeLinear" and d.output[0] in self.values:
                        return self.values[d.output[0]], d.output[0], "Q -> DQ structure", self._dq_params(d.output[0])
        qname = f"{name}_quantized"
        q = self.value(qname)
        if q is not None and np.asarray(q).dtype.kind in "iu":
            for d in self.consumers.get(qname, []):
                if d.op_type == "DequantizeLinear" and d.output[0] in self.values:
                    return self.values[d.output[0]], d.output[0], "DequantizeLinear", self._dq_params(d.output[0])
            params = self.qparams(qname) or self._named_params(name)
            if params is not None and params[0] is not None:
                return _dequantize(q, *params), qname, "quantized + scale/zero point", params
        v = self.values.get(name)
        if v is not None and np.asarray(v).dtype.kind == "f":
            return v, name, "same name", None
        return None

    def weight(self, name, shape):
        """(dequantized weight, its name, how, params) for float initializer ``name``."""
        qname = f"{name}_quantized"
        if qname not in self.inits:
            return None
        for d in self.consumers.get(qname, []):
            if d.op_type == "DequantizeLinear":
                s, z = self.value(d.input[1]), self.value(d.input[2]) if len(d.input) > 2 else None
                axis = next((a.i for a in d.attribute if a.name == "axis"), 1)
                return _dequantize(self.value(qname), s, z, axis), d.output[0], "DequantizeLinear", (s, z, axis)
        params = self._named_params(name)
        if params is None:
            return None
        s, z, _ = params
        q = self.value(qname)
        axis = None
        if np.asarray(s).size > 1:
            axes = [i for i, d in enumerate(q.shape) if d == np.asarray(s).size]
            axis = axes[0] if axes else None
            if axis is None:
                return None
        return _dequantize(q, s, z, axis), qname, "quantized + scale/zero point", (s, z, axis)

    def _named_params(self, name):
        s, z = self.value(f"{name}_scale"), self.value(f"{name}_zero_point")
        return (s, z, None) if s is not None else None

    def _dq_params(self, dq_output):
        d = self.producer.get(dq_output)
        if d is None or d.op_type != "DequantizeLinear":
            return None
        axis = next((a.i for a in d.attribute if a.name == "axis"), 1)
        return self.value(d.input[1]), self.value(d.input[2]) if len(d.input) > 2 else None, axis


def _dequantize(q, scale, zp, axis):
    q = np.asarray(q)
    s = np.asarray(scale, np.float64)
    z = np.zeros_like(s) if zp is None else np.asarray(zp, np.float64)
    if s.size > 1 and axis is not None:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = s.size
        s, z = s.reshape(shape), z.reshape(shape)
    return ((q.astype(np.float64) - z) * s).astype(np.float32)


def _clipped(f, params, qdtype) -> float | None:
    """Share of float values outside the range the quantized type covers with these params."""
    if params is None or params[0] is None or qdtype is None or np.dtype(qdtype).kind not in "iu":
        return None
    s, z, axis = params
    s = np.asarray(s, np.float64)
    z = np.zeros_like(s) if z is None else np.asarray(z, np.float64)
    f = np.asarray(f, np.float64)
    if s.size > 1 and axis is not None:
        shape = [1] * f.ndim
        shape[axis % f.ndim] = s.size
        s, z = s.reshape(shape), z.reshape(shape)
    info = np.iinfo(qdtype)
    lo, hi = (info.min - z) * s - s / 2, (info.max - z) * s + s / 2
    return float(np.mean((f < lo) | (f > hi))) if f.size else 0.0


def _qdtype(q: _Quantized, params, counterpart):
    for name in (counterpart, counterpart.replace("_DequantizeLinear_Output", "_QuantizeLinear_Output")):
        v = q.value(name)
        if v is not None and np.asarray(v).dtype.kind in "iu":
            return np.asarray(v).dtype
    if params is not None and params[1] is not None:
        return np.asarray(params[1]).dtype
    return None


def quant_loss(float_model, quantized_model, feeds: dict, runtime: str = "refrt") -> QuantLoss:
    """Match and measure (see the module docstring); ``runtime`` runs the quantized model:
    "refrt" or "onnxruntime" (optimizations off)."""
    from ..session import InferenceSession
    from .references import reference_values

    fproto = InferenceSession(float_model).model
    qproto = InferenceSession(quantized_model).model
    fvalues = {**{k: np.asarray(v) for k, v in feeds.items()}, **capture_refrt(fproto, feeds)}
    if runtime == "refrt":
        qvalues = capture_refrt(qproto, feeds)
    elif runtime == "onnxruntime":
        qvalues = reference_values(qproto, feeds, "onnxruntime").values
    else:
        raise ValueError(f"runtime must be 'refrt' or 'onnxruntime', not {runtime!r}")
    q = _Quantized(qproto, {**qvalues, **{k: np.asarray(v) for k, v in feeds.items()}})
    label = lambda m: m if isinstance(m, str) else (m.graph.name or "model")   # noqa: E731
    result = QuantLoss(label(float_model), label(quantized_model), runtime)
    producer = {o: n for n in fproto.graph.node for o in n.output if o}
    by_name = {}
    for name, value in fvalues.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            continue
        found = q.dequantized(name)
        if found is None:
            result.unmatched.append(name)
            continue
        qv, cname, how, params = found
        m = tensor_metrics(np.asarray(qv).astype(value.dtype), value, 0, 0)
        if m.note:
            result.unmatched.append(name)
            continue
        node = producer.get(name)
        t = TensorLoss(name, "activation", cname, how, node.op_type if node else "", node.name if node else "",
                       m.sqnr_db, m.max_abs, _clipped(value, params, _qdtype(q, params, cname)),
                       _as_list(params[0]) if params else None, _as_list(params[1]) if params else None)
        result.tensors.append(t)
        by_name[name] = t
    # A Relu/Clip folded into the quantized op before it: that op's quantized output stands for
    # the Relu's output (its range starts at 0), not for the op's own float output.
    for node in fproto.graph.node:
        if node.op_type in ("Relu", "Clip") and node.output[0] in result.unmatched and node.input[0] in by_name:
            t = by_name.pop(node.input[0])
            result.tensors.remove(t)
            result.unmatched.append(node.input[0])
            result.unmatched.remove(node.output[0])
            value = fvalues[node.output[0]]
            qv = q.dequantized(node.input[0])[0]
            m = tensor_metrics(np.asarray(qv).astype(value.dtype), value, 0, 0)
            params = (t.scale, t.zero_point, None) if t.scale is not None else None
            folded = TensorLoss(node.output[0], "activation", t.counterpart, t.how + f" (the {node.op_type} folded "
                                f"into {t.op_type})", node.op_type, node.name, m.sqnr_db, m.max_abs,
                                _clipped(value, params, _qdtype(q, params, t.counterpart)), t.scale, t.zero_point)
            result.tensors.append(folded)
            by_name[node.output[0]] = folded
    for init in fproto.graph.initializer:
        if init.data_type not in (1, 10):       # float, float16
            continue
        w = numpy_helper.to_array(init)
        found = q.weight(init.name, w.shape)
        if found is None:
            continue
        qv, cname, how, params = found
        m = tensor_metrics(np.asarray(qv).astype(w.dtype), w, 0, 0)
        if m.note:
            continue
        qdt = np.asarray(q.value(f"{init.name}_quantized")).dtype
        result.tensors.append(TensorLoss(init.name, "weight", cname, how, "", "", m.sqnr_db, m.max_abs,
                                         _clipped(w, params, qdt), _as_list(params[0]), _as_list(params[1])))
    for t in by_name.values():                   # how much each node loses against its inputs
        node = producer.get(t.name)
        while node is not None and node.op_type in ("Relu", "Clip") and node.input[0] not in by_name:
            node = producer.get(node.input[0])     # a folded Relu: the quantized op before it
        inputs = [by_name[i].sqnr_db for i in (node.input if node else []) if i in by_name]
        t.loss_node = node.name if node is not None else ""
        if inputs and t.sqnr_db != float("inf"):
            worst = min(inputs)
            t.drop_db = (worst - t.sqnr_db) if worst != float("inf") else None
    return result


def _as_list(v):
    if v is None:
        return None
    return [x.item() if hasattr(x, "item") else x for x in np.asarray(v).reshape(-1)]


def measure_exclusions(float_model, feeds: dict, quantize, loss: QuantLoss, count: int = 3,
                       runtime: str = "refrt") -> list:
    """Re-quantize with each of the ``count`` top candidates excluded and measure the model
    outputs' SQNR against the float model's. ``quantize(output_path, nodes_to_exclude)`` writes a
    quantized model the way the one under study was made. Fills and returns ``loss.exclusions``."""
    import os
    import tempfile

    import onnx

    outputs = [o.name for o in (float_model if isinstance(float_model, onnx.ModelProto)
                                else onnx.load(float_model, load_external_data=False)).graph.output]
    before = loss.output_sqnr(outputs)
    with tempfile.TemporaryDirectory(prefix="refrt.exclude.") as tmp:
        for node in loss.suggestions(count):
            path = os.path.join(tmp, "q.onnx")
            quantize(path, [node])
            after = quant_loss(float_model, path, feeds, runtime).output_sqnr(outputs)
            loss.exclusions.append({"node": node, "output_sqnr_db": after, "change_db": after - before})
    return loss.exclusions
