"""What both rewriters share: the settings, which nodes to touch, and activation parameters.

:class:`QuantizerBase` holds the model being rewritten (shape-inferred), the user's choices, and
the calibrated ranges turned into (scale, zero point) per activation tensor. The two rewriters
built on it are :mod:`.qoperator` (dynamic and static QOperator format) and :mod:`.qdq`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto

from . import model as M
from .calibrate import TensorData
from .options import Options
from .overrides import TensorQuantOverrides
from .params import SIGNED, compute_scale_zp, quant_range, snap_zero_point_uint8, storage_dtype


@dataclass
class QuantParams:
    """Scale and zero point of one tensor (arrays: 0-d per tensor, 1-d per channel)."""
    zero_point: np.ndarray
    scale: np.ndarray
    quant_type: int                 # ONNX element type
    axis: int | None = None


@dataclass
class QuantizedValue:
    """Where a float tensor's quantized form lives: its name and the names of its scale and zero
    point (onnxruntime's ``QuantizedValue``)."""
    original: str
    q_name: str | None
    scale_name: str
    zp_name: str
    axis: int | None = None
    is_initializer: bool = False

    @property
    def qlinear_inputs(self) -> list[str]:
        """[quantized, scale, zero point]: how a QLinear op takes this value."""
        return [self.q_name, self.scale_name, self.zp_name]


@dataclass
class Summary:
    """What a quantization run did, read against the input and the output model: per op type of
    the input model, how many nodes were quantized, left in float, or removed (a Relu/Clip whose
    range the quantized output before it already clips); the op types the output model holds;
    the nodes the user excluded; and the size before and after."""
    mode: str = ""
    quantized: dict = field(default_factory=dict)    # input op type -> [node labels]
    float_nodes: dict = field(default_factory=dict)  # input op type -> [node labels]
    removed: dict = field(default_factory=dict)      # input op type -> [node labels]
    output_op_types: dict = field(default_factory=dict)   # output model: op type -> count
    excluded: list = field(default_factory=list)
    size_before: int = 0
    size_after: int = 0
    report: object = field(default=None, repr=False)   # CalibrationReport, when one was asked for

    def to_dict(self) -> dict:
        ops = sorted(set(self.quantized) | set(self.float_nodes) | set(self.removed))
        counts = {op: {"quantized": len(self.quantized.get(op, [])),
                       "float": len(self.float_nodes.get(op, [])),
                       "removed": len(self.removed.get(op, []))} for op in ops}
        for c in counts.values():
            c["nodes"] = c["quantized"] + c["float"] + c["removed"]
        return {"mode": self.mode, "op_types": counts,
                "output_op_types": dict(sorted(self.output_op_types.items())),
                "excluded": list(self.excluded),
                "size_before": self.size_before, "size_after": self.size_after,
                "ratio": self.size_before / self.size_after if self.size_after else None}


def node_label(node) -> str:
    return node.name or f"{node.op_type}->{node.output[0] if node.output else '?'}"


class QuantizerBase:
    def __init__(self, model, *, per_channel: bool, reduce_range: bool, weight_type: int,
                 activation_type: int, tensors_range, nodes_to_quantize, nodes_to_exclude,
                 op_types_to_quantize, options: Options):
        self.model = model
        self.graph = model.graph
        self.value_types = M.value_types(model)
        self.opset = M.opset_version(model)
        self.per_channel, self.reduce_range = per_channel, reduce_range
        self.weight_type, self.activation_type = weight_type, activation_type
        self.options = options
        self.nodes_to_quantize = set(nodes_to_quantize or ())
        self.nodes_to_exclude = set(nodes_to_exclude or ())
        self.user_excluded = sorted(self.nodes_to_exclude)
        self.op_types_to_quantize = set(op_types_to_quantize or ())
        self.tensors_range = tensors_range
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.overrides = TensorQuantOverrides(options.tensor_quant_overrides)
        self.overrides.validate(self.initializers, self.value_types.keys())
        # Tensors an existing QuantizeLinear/DequantizeLinear pair already handles (a model from
        # quantization-aware training): they are left as they are.
        self.existing_dq_outputs = {o for n in self.graph.node if n.op_type == "DequantizeLinear"
                                    for o in n.output}
        self.existing_q_inputs = {n.input[0] for n in self.graph.node
                                  if n.op_type == "QuantizeLinear" and n.input}
        self.quantized_nodes: list = []      # original nodes rewritten into quantized form
        self.float_nodes: list = []          # nodes left in float
        self.removed_nodes: list = []        # Relu/Clip folded into the quantized output before them
        self.origin: dict = {}               # a node's first output -> the input node it replaces

    # ---- which nodes
    def should_quantize_node(self, node) -> bool:
        if self.nodes_to_quantize and node.name not in self.nodes_to_quantize:
            return False
        if node.op_type not in self.op_types_to_quantize:
            return False
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            return False
        return node.name not in self.nodes_to_exclude

    def in_existing_qdq(self, node) -> bool:
        """True for a node the model already quantizes (quantization-aware training): its data
        input comes from a DequantizeLinear or an output goes to a QuantizeLinear. (Weights
        alone behind a DequantizeLinear do not count: onnxruntime quantizes around those.)"""
        return ((bool(node.input) and node.input[0] in self.existing_dq_outputs)
                or any(o in self.existing_q_inputs for o in node.output))

    # ---- tensors
    def is_initializer(self, name: str) -> bool:
        return name in self.initializers

    def is_float_initializer(self, name: str) -> bool:
        t = self.initializers.get(name)
        return t is not None and t.data_type in M.FLOAT_TYPES

    def add_initializer(self, tensor) -> None:
        """Add unless an initializer of that name exists (onnxruntime's ``add_initializer``)."""
        if tensor.name not in self.initializers:
            self.graph.initializer.append(tensor)
            self.initializers[tensor.name] = tensor

    def replace_initializer(self, tensor) -> None:
        self.remove_initializer(tensor.name)
        self.add_initializer(tensor)

    def remove_initializer(self, name: str) -> None:
        t = self.initializers.pop(name, None)
        if t is not None:
            self.graph.initializer.remove(t)
            for vi in [vi for vi in self.graph.input if vi.name == name]:
                self.graph.input.remove(vi)

    def is_weight_symmetric(self, qtype: int) -> bool:
        if self.options.weight_symmetric is not None:
            return self.options.weight_symmetric
        return qtype in SIGNED

    # ---- activation parameters from calibrated ranges
    def adjust_tensor_ranges(self) -> None:
        """A Relu/Clip input used only by it takes the Relu/Clip output's range (the activation
        can then disappear into the quantization); a Softmax output's range is [0, 1]."""
        if self.tensors_range is None:
            return
        consumers = {}
        for node in self.graph.node:
            for name in node.input:
                if name:
                    consumers[name] = consumers.get(name, 0) + 1
        for node in self.graph.node:
            if node.op_type in ("Clip", "Relu"):
                if not self.should_quantize_node(node) or consumers.get(node.input[0]) != 1:
                    continue
                if node.input[0] in self.tensors_range and node.output[0] in self.tensors_range:
                    self.tensors_range[node.input[0]] = self.tensors_range[node.output[0]]
            elif node.op_type == "Softmax" and self.should_quantize_node(node):
                self.tensors_range[node.output[0]] = TensorData(lowest=np.float32(0.0),
                                                                highest=np.float32(1.0))

    def activation_params(self, td: TensorData, overrides: dict) -> QuantParams:
        """(scale, zero point) of an activation from its calibrated range and overrides."""
        qtype = self.activation_type
        if "quant_type" in overrides:
            qtype = overrides["quant_type"].tensor_type
        if "scale" in overrides and "zero_point" in overrides:
            return QuantParams(np.asarray(overrides["zero_point"]),
                               np.asarray(overrides["scale"]), qtype)
        rmin = _float_value(overrides.get("rmin", td.range_value[0]))
        rmax = _float_value(overrides.get("rmax", td.range_value[1]))
        symmetric = overrides.get("symmetric", self.options.activation_symmetric)
        reduce = overrides.get("reduce_range", False)
        qmin, qmax = quant_range(qtype, reduce, symmetric)
        zp, scale = compute_scale_zp(rmin, rmax, qmin, qmax, symmetric,
                                     self.options.min_real_range, zp_dtype=storage_dtype(qtype))
        if (self.options.activation_restricted_asymmetric and qtype == TensorProto.UINT8
                and not symmetric):
            zp, scale = snap_zero_point_uint8(rmin, rmax, qmin, qmax, self.options.min_real_range)
        return QuantParams(zp, scale, qtype)

    def graph_quant_params(self) -> dict:
        """tensor name -> QuantParams for every calibrated tensor."""
        if self.tensors_range is None:
            return {}
        self.adjust_tensor_ranges()
        return {name: self.activation_params(td, self.overrides.per_tensor(name))
                for name, td in self.tensors_range.items()}

    # ---- reporting
    def summary(self, mode: str, output_model=None) -> Summary:
        """The run's Summary; nodes are counted under the input model's op type (a Gemm that
        dynamic mode turned into MatMul + Add counts once, as quantized if any part was)."""
        s = Summary(mode=mode)
        verdict = {}        # id(input node) -> (node, "quantized" | "float" | "removed")
        rank = {"float": 0, "removed": 1, "quantized": 2}
        for nodes, kind in ((self.float_nodes, "float"), (self.removed_nodes, "removed"),
                            (self.quantized_nodes, "quantized")):
            for node in nodes:
                original = self.origin.get(node.output[0] if node.output else None, node)
                old = verdict.get(id(original))
                if old is None or rank[kind] > rank[old[1]]:
                    verdict[id(original)] = (original, kind)
        for original, kind in verdict.values():
            target = {"quantized": s.quantized, "float": s.float_nodes, "removed": s.removed}[kind]
            target.setdefault(original.op_type, []).append(node_label(original))
        if output_model is not None:
            for node in output_model.graph.node:
                s.output_op_types[node.op_type] = s.output_op_types.get(node.op_type, 0) + 1
        s.excluded = list(self.user_excluded)
        return s


def _float_value(value) -> np.ndarray:
    """A range end as a float32 (or float16) numpy value."""
    value = np.asarray(value)
    return value if value.dtype in (np.float16, np.float32) else value.astype(np.float32)


def warn(message: str) -> None:
    """Tell the user something about the model (onnxruntime logs these as warnings too)."""
    logging.getLogger("refrt.quantization").warning(message)
