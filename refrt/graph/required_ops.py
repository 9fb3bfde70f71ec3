"""The operators (and types) a model needs, in the terms of onnxruntime's reduced-build config.

onnxruntime's minimal build takes a ``required_operators.config``: one line per domain and
since-version, ``domain;since;Op1,Op2`` (``#`` starts a comment); with type reduction each op may
carry the element types its kernels must handle, as JSON, e.g.
``Gather{"inputs": {"0": ["float"], "1": ["int64_t"]}}``. This module reads such a config, lists
what a model uses in the same terms (:func:`model_operators`), and checks a model against a
config (:func:`check_model`) for a restricted session. ``refrt.optimize.ops_config`` writes
configs; the format and every rule below were learnt from the lines onnxruntime 1.32's
``convert_onnx_models_to_ort`` writes with its optimizations disabled:

* every node counts, including those of If/Loop/Scan bodies and of model-local functions (which
  onnxruntime inlines, so the call itself does not); Constant nodes do not (onnxruntime turns them
  into initializers when it loads the model);
* the version is the op schema's since-version at the model's opset for its domain
  (com.microsoft's ops are all version 1);
* only some ops have their types recorded, and only for some inputs/outputs (``TRACKED``);
  type names are onnxruntime's C++ names (``TYPE_NAMES``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import onnx
import onnx.inliner
from onnx import TensorProto

from ..errors import ModelError, OperatorNotInConfigError, TypeNotInConfigError, node_label
from ..registry import ORT_ONNX_DOMAIN_EXTRAS, canonical_domain, proto_domain

# ONNX element type -> the name onnxruntime's config uses
TYPE_NAMES = {
    TensorProto.FLOAT: "float", TensorProto.DOUBLE: "double", TensorProto.FLOAT16: "MLFloat16",
    TensorProto.BFLOAT16: "BFloat16", TensorProto.INT8: "int8_t", TensorProto.UINT8: "uint8_t",
    TensorProto.INT16: "int16_t", TensorProto.UINT16: "uint16_t", TensorProto.INT32: "int32_t",
    TensorProto.UINT32: "uint32_t", TensorProto.INT64: "int64_t", TensorProto.UINT64: "uint64_t",
    TensorProto.BOOL: "bool", TensorProto.STRING: "std::string",
}

# The ops whose kernels onnxruntime can reduce by type, and which of their inputs/outputs it
# records (measured with onnxruntime 1.32's tool on the ONNX backend node models and on models
# generated for refrt's contrib and ML ops). OneHot records the types of its three inputs
# together ("custom"). An op not listed here gets no type information.
_IN0 = {"inputs": (0,)}
TRACKED: dict[tuple[str, str], dict] = {
    **{("ai.onnx", op): _IN0 for op in (
        "Abs", "Add", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "BitShift", "Ceil",
        "Clip", "Concat", "Conv", "CumSum", "DequantizeLinear", "Div", "Equal", "Exp", "Expand",
        "Floor", "Gemm", "Greater", "IsNaN", "Less", "Log", "LogSoftmax", "LpNormalization",
        "MatMul", "Max", "MaxPool", "Mean", "Min", "Mul", "Neg", "NonZero", "Pad", "QLinearConv",
        "QLinearMatMul", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
        "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
        "ReduceSumSquare", "Relu", "Resize", "ReverseSequence", "Round", "Scatter",
        "ScatterElements", "ScatterND", "Shrink", "Sigmoid", "Sign", "Sin", "Slice", "Softmax",
        "Split", "SplitToSequence", "Sqrt", "Sub", "Sum", "Tanh", "TopK", "Transpose", "Unique")},
    ("ai.onnx", "Gather"): {"inputs": (0, 1)},
    ("ai.onnx", "GatherElements"): {"inputs": (0, 1)},
    ("ai.onnx", "Pow"): {"inputs": (0, 1)},
    ("ai.onnx", "Slice"): {"inputs": (0, 1)},
    ("ai.onnx", "Where"): {"inputs": (1,)},
    ("ai.onnx", "Cast"): {"inputs": (0,), "outputs": (0,)},
    **{("ai.onnx", op): {"outputs": (0,)} for op in (
        "ConstantOfShape", "DynamicQuantizeLinear", "QuantizeLinear", "Multinomial",
        "RandomNormalLike", "RandomUniformLike")},
    ("ai.onnx", "OneHot"): {"custom": (0, 1, 2)},
    ("com.microsoft", "QLinearAdd"): _IN0,
    ("com.microsoft", "QLinearMul"): _IN0,
}


@dataclass
class OpUse:
    """One (domain, since, op) of a model: the nodes that use it and, with types, the element
    types seen at its recorded inputs/outputs."""
    nodes: list = field(default_factory=list)           # (node label, model opset)
    inputs: dict = field(default_factory=dict)          # index -> set of type names
    outputs: dict = field(default_factory=dict)
    custom: set = field(default_factory=set)            # tuples of type names (OneHot)

    def merge(self, other: OpUse) -> None:
        self.nodes.extend(other.nodes)
        for mine, theirs in ((self.inputs, other.inputs), (self.outputs, other.outputs)):
            for i, ts in theirs.items():
                mine.setdefault(i, set()).update(ts)
        self.custom |= other.custom

    def type_info(self) -> dict | None:
        """The JSON object onnxruntime writes after the op's name, or None."""
        info: dict = {}
        if self.inputs:
            info["inputs"] = {str(i): sorted(self.inputs[i]) for i in sorted(self.inputs)}
        if self.outputs:
            info["outputs"] = {str(i): sorted(self.outputs[i]) for i in sorted(self.outputs)}
        if self.custom:
            info["custom"] = [list(t) for t in sorted(self.custom)]
        return info or None


Key = tuple  # (domain, since, op_type)


# ---------------------------------------------------------------- what a model uses

def since_version(op_type: str, domain: str, opset: int) -> int:
    """The since-version onnxruntime records for ``op_type`` at ``opset`` of ``domain``."""
    domain = canonical_domain(domain)
    if domain == "com.microsoft":
        return 1
    try:
        return int(onnx.defs.get_schema(op_type, opset, proto_domain(domain)).since_version)
    except onnx.defs.SchemaError:
        pass
    if domain == "ai.onnx":
        extras = [v for op, v in ORT_ONNX_DOMAIN_EXTRAS if op == op_type and v <= opset]
        if extras:
            return max(extras)
    return opset


def _subgraphs(node):
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _walk(nodes, opsets: dict, functions: dict, stack: tuple = ()):
    """(node, canonical domain, opset) for every node that runs, through subgraphs and calls of
    model-local functions; Constant nodes left out."""
    for node in nodes:
        domain = canonical_domain(node.domain)
        fn = functions.get((domain, node.op_type))
        if fn is not None:
            key = (domain, node.op_type)
            if key in stack:
                raise ModelError(f"model-local function {node.op_type!r} calls itself")
            inner = {canonical_domain(o.domain): int(o.version) for o in fn.opset_import}
            inner.update(opsets)
            yield from _walk(fn.node, inner, functions, stack + (key,))
            continue
        if domain == "ai.onnx" and node.op_type == "Constant":
            continue
        yield node, domain, opsets.get(domain)
        for g in _subgraphs(node):
            yield from _walk(g.node, opsets, functions, stack)


def model_operators(model: onnx.ModelProto, types: bool = False) -> dict[Key, OpUse]:
    """{(domain, since, op_type): OpUse} for every node of ``model`` that onnxruntime keeps
    (see the module docstring); with ``types``, the element types at the recorded inputs and
    outputs, from ONNX type inference (and a few rules for com.microsoft ops, whose schemas
    the onnx package does not have)."""
    model, elem = _typed(model) if types else (model, {})
    opsets = {canonical_domain(o.domain): int(o.version) for o in model.opset_import}
    functions = {(canonical_domain(f.domain), f.name): f for f in model.functions}
    uses: dict[Key, OpUse] = {}
    for node, domain, opset in _walk(model.graph.node, opsets, functions):
        if opset is None:
            raise ModelError(f"node {node_label(node)!r} ({node.op_type}) uses domain {domain!r}, "
                             f"which the model does not import (opset_import)")
        key = (domain, since_version(node.op_type, domain, opset), node.op_type)
        use = uses.setdefault(key, OpUse())
        use.nodes.append((node_label(node), opset))
        if types:
            _record_types(use, node, domain, elem)
    return uses


def node_types(node, domain: str, elem: dict) -> OpUse:
    use = OpUse()
    _record_types(use, node, domain, elem)
    return use


def _record_types(use: OpUse, node, domain: str, elem: dict) -> None:
    tracked = TRACKED.get((domain, node.op_type))
    if not tracked:
        return
    for kind, names in (("inputs", node.input), ("outputs", node.output)):
        for i in tracked.get(kind, ()):
            t = TYPE_NAMES.get(elem.get(names[i])) if i < len(names) and names[i] else None
            if t is not None:
                getattr(use, kind).setdefault(i, set()).add(t)
    if "custom" in tracked:
        ts = tuple(TYPE_NAMES.get(elem.get(node.input[i])) if i < len(node.input) else None
                   for i in tracked["custom"])
        if None not in ts:
            use.custom.add(ts)


def _typed(model: onnx.ModelProto):
    """(the model without initializer data, functions inlined; name -> ONNX element type of
    every tensor value in it, subgraphs included)."""
    light = _shell(model)
    if light.functions:
        light = onnx.inliner.inline_local_functions(light)
    return light, _value_types(light)


def _value_types(light: onnx.ModelProto) -> dict[str, int]:
    for _ in range(64):   # infer; give com.microsoft outputs their types; infer again
        inferred = onnx.shape_inference.infer_shapes(light)
        elem = _collect_types(inferred.graph)
        added = _contrib_types(inferred.graph, elem)
        if not added:
            return elem
        light.graph.value_info.extend(
            onnx.helper.make_tensor_value_info(name, t, None) for name, t in added.items())
    return elem


def _shell(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its initializers' data left out (types need only their element types)."""
    shell = onnx.ModelProto(ir_version=model.ir_version)
    shell.opset_import.extend(model.opset_import)
    shell.functions.extend(model.functions)
    g = shell.graph
    g.name = model.graph.name
    for name in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(g, name).extend(getattr(model.graph, name))
    for t in model.graph.initializer:
        shell.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    # an initializer may also be listed as an input already: keep one of each name
    seen, unique = set(), []
    for vi in shell.graph.input:
        if vi.name not in seen:
            seen.add(vi.name)
            unique.append(vi)
    del shell.graph.input[:]
    shell.graph.input.extend(unique)
    return shell


def _collect_types(graph, elem: dict | None = None) -> dict[str, int]:
    elem = {} if elem is None else elem
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.WhichOneof("value") == "tensor_type" and vi.type.tensor_type.elem_type:
            elem.setdefault(vi.name, vi.type.tensor_type.elem_type)
    for t in graph.initializer:
        elem.setdefault(t.name, t.data_type)
    for node in graph.node:
        if node.op_type == "Constant" and not node.domain:
            for a in node.attribute:
                if a.name == "value":
                    elem.setdefault(node.output[0], a.t.data_type)
        for g in _subgraphs(node):
            _collect_types(g, elem)
    return elem


def _contrib_types(graph, elem: dict) -> dict[str, int]:
    """Output types of com.microsoft nodes whose inputs' types are known: ONNX type inference
    does not know these ops."""
    added: dict[str, int] = {}
    for node in graph.node:
        for g in _subgraphs(node):
            added.update(_contrib_types(g, elem))
        if canonical_domain(node.domain) != "com.microsoft":
            continue
        for i, name in enumerate(node.output):
            if name and name not in elem and name not in added:
                t = _contrib_output_type(node, i, elem)
                if t:
                    added[name] = t
    return added


def _contrib_output_type(node, i: int, elem: dict) -> int | None:
    def of(k):
        return elem.get(node.input[k]) if k < len(node.input) and node.input[k] else None
    op = node.op_type
    if op == "DequantizeLinear":
        return of(1)
    if op == "QuantizeLinear":
        return of(2) or TensorProto.UINT8
    if op == "MatMulIntegerToFloat":
        return of(2)
    if op == "QAttention":
        return of(3)
    if op == "QGemm":
        return of(8) or of(1)
    if op == "QLinearConcat":
        return of(1)
    if op == "EmbedLayerNormalization":
        return TensorProto.INT32 if i == 1 else of(2)
    return of(0)


# ---------------------------------------------------------------- configs

@dataclass
class OperatorsConfig:
    """A reduced-build config: {(domain, since): {op: type info or None}}."""
    ops: dict = field(default_factory=dict)
    globally_allowed_types: frozenset | None = None
    source: str = ""

    @property
    def has_types(self) -> bool:
        return self.globally_allowed_types is not None or any(
            info is not None for table in self.ops.values() for info in table.values())

    def op_keys(self) -> set[tuple[str, str]]:
        """(domain, op_type) of every op listed."""
        return {(d, op) for (d, _), table in self.ops.items() for op in table}


def parse_config(text: str, source: str = "") -> OperatorsConfig:
    """Read onnxruntime's config format (see the module docstring); ``source`` names the file in
    errors."""
    cfg = OperatorsConfig(source=source)
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        where = f"{source or 'config'}, line {number}"
        if line.startswith("!"):
            name, _, value = line[1:].partition(";")
            if name.strip() == "globally_allowed_types":
                cfg.globally_allowed_types = frozenset(t.strip() for t in value.split(",") if t.strip())
            elif name.strip() != "no_ops_specified_means_all_ops_are_required":
                raise ModelError(f"{where}: unknown directive {name.strip()!r}")
            continue
        parts = line.split(";", 2)
        if len(parts) != 3:
            raise ModelError(f"{where}: expected 'domain;opset;Op1,Op2,...', got {raw.strip()!r}")
        domain, opsets, ops = parts
        try:
            versions = [int(v) for v in opsets.split(",")]
        except ValueError:
            raise ModelError(f"{where}: opset {opsets!r} is not a number") from None
        for op, info in _split_ops(ops, where):
            for v in versions:
                table = cfg.ops.setdefault((canonical_domain(domain.strip()), v), {})
                table[op] = _merge_info(table.get(op), info) if op in table else info
    return cfg


def _split_ops(text: str, where: str):
    depth, start = 0, 0
    pieces = []
    for i, ch in enumerate(text):
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        brace = piece.find("{")
        if brace < 0:
            yield piece, None
            continue
        try:
            info = json.loads(piece[brace:])
        except json.JSONDecodeError as e:
            raise ModelError(f"{where}: the type information of {piece[:brace]!r} is not valid "
                             f"JSON: {e}") from None
        yield piece[:brace].strip(), info


def _merge_info(a, b):
    if a is None or b is None:
        return a or b
    merged = json.loads(json.dumps(a))
    for kind, value in b.items():
        if kind == "custom":
            merged["custom"] = merged.get("custom", []) + [t for t in value if t not in merged.get("custom", [])]
        else:
            for i, ts in value.items():
                merged.setdefault(kind, {}).setdefault(i, [])
                merged[kind][i] = sorted(set(merged[kind][i]) | set(ts))
    return merged


def read_config(path) -> OperatorsConfig:
    with open(path, encoding="utf-8") as f:
        return parse_config(f.read(), os.fspath(path))


def as_config(config) -> OperatorsConfig:
    """A path, a config's text (containing a newline or ';') or an OperatorsConfig."""
    if isinstance(config, OperatorsConfig):
        return config
    if isinstance(config, str) and ("\n" in config or ";" in config) and not os.path.exists(config):
        return parse_config(config)
    return read_config(config)


# ---------------------------------------------------------------- a model against a config

def check_model(model: onnx.ModelProto, config: OperatorsConfig) -> set[tuple[str, str]]:
    """Raise OperatorNotInConfigError for the first node whose op (domain, since-version) the
    config does not list, TypeNotInConfigError (when the config has types) for the first node
    whose element types at a recorded input/output it does not list. Returns the (domain,
    op_type) pairs the model runs."""
    uses = model_operators(model, types=config.has_types)
    for (domain, since, op), use in uses.items():
        table = config.ops.get((domain, since), {})
        label, opset = use.nodes[0]
        if op not in table:
            listed = sorted(v for (d, v), t in config.ops.items() if d == domain and op in t)
            raise OperatorNotInConfigError(label, op, domain, opset, since, listed,
                                           config.source)
    if config.has_types:
        _check_types(model, uses, config)
    return {(d, op) for d, _, op in uses}


def _check_types(model, uses: dict, config: OperatorsConfig) -> None:
    model, elem = _typed(model)
    opsets = {canonical_domain(o.domain): int(o.version) for o in model.opset_import}
    functions = {(canonical_domain(f.domain), f.name): f for f in model.functions}
    allowed_all = config.globally_allowed_types
    for node, domain, opset in _walk(model.graph.node, opsets, functions):
        since = since_version(node.op_type, domain, opset)
        info = config.ops[(domain, since)][node.op_type]
        seen = node_types(node, domain, elem)
        for kind in ("inputs", "outputs"):
            for i, ts in getattr(seen, kind).items():
                allowed = (info or {}).get(kind, {}).get(str(i))
                for t in ts:
                    if (allowed is not None and t not in allowed) or \
                            (allowed_all is not None and t not in allowed_all):
                        raise TypeNotInConfigError(
                            node_label(node), node.op_type, domain, opset, since,
                            f"{kind[:-1]} {i}", t, sorted(allowed or allowed_all), config.source)
        custom = (info or {}).get("custom")
        for t in seen.custom:
            if custom is not None and list(t) not in custom:
                raise TypeNotInConfigError(node_label(node), node.op_type, domain, opset, since,
                                           "inputs", "/".join(t),
                                           ["/".join(c) for c in custom], config.source)
