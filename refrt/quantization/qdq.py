"""The QDQ rewriter: float operators between QuantizeLinear -> DequantizeLinear pairs.

Work happens in two phases, as in onnxruntime:

1. **Mark.** Each node whose op type is to be quantized tells which of its tensors to quantize:
   activations (calibrated scale and zero point), weights (per tensor or per channel, from their
   own values), biases (int32 with scale input_scale * weight_scale), or outputs that *share*
   their input's parameters (Reshape, Transpose, MaxPool, ...: the values do not change).
2. **Insert.** Every marked activation gets ``Q -> DQ`` after its producer::

       x -> QuantizeLinear(x_scale, x_zp) -> x_QuantizeLinear_Output
         -> DequantizeLinear -> x_DequantizeLinear_Output -> (every consumer of x)

   every weight is stored quantized (``W_quantized``) behind a DequantizeLinear, every bias as
   int32 behind a DequantizeLinear whose output keeps the bias's name. A graph output keeps its
   name: its producer writes ``<name>_QuantizeLinear_Input`` and the DequantizeLinear writes
   ``<name>``. A Relu/Clip right after a quantized tensor is removed when activations are
   asymmetric: the calibrated range of its output already clips.

An op type without a rule of its own gets the generic treatment: all its float inputs and
outputs are quantized (e.g. Add, Mul, Softmax, Sigmoid, Concat in the default op list).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, numpy_helper

from . import model as M
from .base import QuantizedValue, QuantizerBase, QuantParams, warn
from .params import (
    bias_safe_weight_scale,
    data_range,
    quantize_bias,
    quantize_with,
    storage_dtype,
    weight_params,
)


@dataclass
class _Mark:
    """A tensor marked for quantization."""
    kind: str                     # "activation" or "weight"
    data_type: int | None         # the float type
    shares: tuple | None = None   # (input name, node name) whose parameters it reuses
    axis: int | None = None       # per-channel axis (weights)


@dataclass
class _BiasMark:
    node_name: str
    input_name: str
    weight_name: str
    beta: float


class QDQQuantizer(QuantizerBase):
    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        o = self.options
        self.exclude_output_ops = set(o.exclude_output_quantization)
        self.domain = M.MS_DOMAIN if o.use_qdq_contrib_ops else None
        if self.opset < 21 and self.domain is None:
            small = (TensorProto.UINT16, TensorProto.INT16, TensorProto.UINT4, TensorProto.INT4)
            if (self.activation_type in small or self.weight_type in small
                    or any(t.tensor_type in small for t in self.overrides.quant_types())):
                warn("QuantizeLinear/DequantizeLinear of 16-bit and 4-bit types need opset 21; "
                     "the com.microsoft domain is used for them")
                self.domain = M.MS_DOMAIN
        self.marks: dict[str, _Mark] = {}
        self.bias_marks: dict[str, _BiasMark] = {}
        self.nodes_to_remove: list = []
        self.receivers: dict[str, list] = {}
        self.produced_by_dq: dict[str, object] = {}
        self.quant_params = self.graph_quant_params()
        self.initializer_params: dict[str, QuantParams] = {}
        self.quantized: dict[str, QuantizedValue] = {}
        self._original_nodes = list(self.graph.node)     # held, so that id() stays valid
        self._considered: set[int] = set()     # ids of the nodes the rules looked at
        self._dequantized: set[str] = set()    # outputs of the DequantizeLinear nodes added

    # ---------------------------------------------------------------- the two phases
    def quantize_model(self):
        for node in self.graph.node:
            if self.should_quantize_node(node) and not self.in_existing_qdq(node):
                self._considered.add(id(node))
                RULES.get(node.op_type, generic)(self, node)
                for name in node.input:
                    self.receivers.setdefault(name, []).append(node)
            if node.op_type == "DequantizeLinear":
                for name in node.output:
                    self.produced_by_dq[name] = node
        self.initializer_params = self._initializer_params()
        self._fit_weight_scales_to_biases()
        self._insert_for_marked()
        self._insert_for_shared()
        if self.options.quantize_bias:
            self._insert_for_biases()
        self._note_quantized_nodes()
        for node in self.nodes_to_remove:
            self.graph.node.remove(node)
        if not self.options.add_qdq_pair_to_weight:
            M.remove_unused_initializers(self.graph)
        if self.domain == M.MS_DOMAIN:
            M.set_opset(self.model, M.MS_DOMAIN, 1)
        return self.model

    # ---------------------------------------------------------------- marking (phase 1)
    def _quantizable(self, name: str) -> bool:
        if name in self.initializers:
            return self.initializers[name].data_type in M.FLOAT_TYPES
        if name in self.value_types:
            return M.elem_type(self.value_types[name]) in M.FLOAT_TYPES
        warn(f"the type of tensor {name!r} is unknown (shape inference failed); not quantized")
        return False

    def _float_type(self, name: str):
        if name in self.initializers:
            return self.initializers[name].data_type
        return M.elem_type(self.value_types.get(name))

    def _mark(self, name: str, kind: str, shares: tuple | None = None) -> None:
        if not name or name in self.existing_dq_outputs or name in self.existing_q_inputs:
            return                     # already quantized by the model itself
        if not self._quantizable(name):
            return
        if shares is not None:
            self.marks[name] = _Mark(kind, self._float_type(name), shares)
        elif name not in self.marks:
            self.marks[name] = _Mark(kind, self._float_type(name))

    def mark_activation(self, name: str) -> None:
        self._mark(name, "activation")

    def mark_weight(self, name: str) -> None:
        self._mark(name, "weight")

    def mark_shared(self, output: str, input_name: str, node_name: str) -> None:
        """``output`` reuses the scale and zero point of ``input_name`` (as seen by node
        ``node_name``)."""
        self._mark(output, "activation", shares=(input_name, node_name))

    def mark_weight_per_channel(self, name: str, axis: int) -> None:
        t = self.initializers.get(name)
        if t is None:
            warn(f"per-channel quantization applies to initializers only; {name!r} is not one")
        elif t.data_type in M.FLOAT_TYPES:
            self.marks[name] = _Mark("weight", t.data_type, axis=axis)

    def is_marked(self, name: str) -> bool:
        return name in self.marks or name in self.bias_marks

    def mark_bias(self, node_name: str, bias: str, input_name: str, weight: str,
                  beta: float = 1.0) -> None:
        """An int32 bias (scale input_scale * weight_scale * beta). A bias shared by two nodes is
        copied (``<bias>0``, ...) since each node gives it its own scale."""
        if self.overrides.entries(bias):   # the user gave it parameters: it is a weight then
            per_channel, axis = self.per_channel_axis(bias, default_axis=0)
            if per_channel:
                self.mark_weight_per_channel(bias, axis)
            else:
                self.mark_weight(bias)
            return
        t = self.initializers.get(bias)
        if t is None:
            warn(f"bias {bias!r} is not an initializer; not quantized")
            return
        if t.data_type not in M.FLOAT_TYPES:
            return
        if bias in self.bias_marks:
            duplicate = TensorProto()
            duplicate.CopyFrom(t)
            duplicate.name = f"{bias}{_largest_suffix(self.initializers, bias) + 1}"
            self.add_initializer(duplicate)
            for node in self.graph.node:
                if node.name == node_name:
                    _replace_inputs(node, bias, duplicate.name)
            bias = duplicate.name
        self.bias_marks[bias] = _BiasMark(node_name, input_name, weight, beta)

    def per_channel_axis(self, name: str, default_axis: int, op_type: str | None = None):
        """(per channel?, axis) of weight ``name``: per_channel or per-channel overrides, the
        op's default axis unless QDQOpTypePerChannelSupportToAxis or an override says
        otherwise."""
        t = self.initializers.get(name)
        if t is None or (self.overrides.entries(name) and not self.overrides.is_per_channel(name)):
            return False, None
        has_overrides = self.overrides.is_per_channel(name)
        if not self.per_channel and not has_overrides:
            return False, None
        axis = (self.options.per_channel_axis_by_op.get(op_type, default_axis) if op_type
                else default_axis)
        if has_overrides:
            axis = self.overrides.entries(name)[0]["axis"]
        rank = len(t.dims)
        axis = axis + rank if axis < 0 else axis
        if not 0 <= axis < rank:
            warn(f"per-channel axis {axis} is out of range for {name!r} (rank {rank}); it is "
                 f"quantized per tensor")
            return False, None
        return True, axis

    def output_excluded(self, node) -> bool:
        return node.op_type in self.exclude_output_ops

    def try_replacing_upstream_output(self, upstream: str, output: str) -> bool:
        """Fold a Relu/Clip away: its producer writes the Relu's output directly, when the
        intermediate tensor has no other use and is not a graph input or output."""
        consumers = sum(1 for n in self.graph.node for i in n.input if i == upstream)
        graph_io = {vi.name for vi in self.graph.output} | {vi.name for vi in self.graph.input}
        if (output in self.quant_params and upstream in self.quant_params and consumers == 1
                and upstream not in graph_io):
            for node in self.graph.node:
                _replace_outputs(node, upstream, output)
            self.marks.pop(upstream, None)
            return True
        return False

    # ---------------------------------------------------------------- parameters
    def _initializer_params(self) -> dict:
        """Scale and zero point of every marked initializer, from its own values."""
        params = {}
        for name, mark in self.marks.items():
            t = self.initializers.get(name)
            if t is None:
                continue
            data = M.initializer_array(t)
            is_weight = mark.kind == "weight"
            qtype = self.weight_type if is_weight else self.activation_type
            entries = self.overrides.entries(name) or [{}]
            first = entries[0]
            if "quant_type" in first:
                qtype = first["quant_type"].tensor_type
            if "scale" in first and "zero_point" in first:      # fixed by the user
                if "axis" in first:
                    axis = first["axis"] + data.ndim if first["axis"] < 0 else first["axis"]
                    params[name] = QuantParams(
                        np.array([e["zero_point"] for e in entries], storage_dtype(qtype)),
                        np.array([e["scale"] for e in entries], data.dtype), qtype, axis)
                else:
                    params[name] = QuantParams(np.array(first["zero_point"], storage_dtype(qtype)),
                                               np.array(first["scale"], data.dtype), qtype)
                continue
            axis = first.get("axis", mark.axis)
            if axis is not None:
                axis = axis + data.ndim if axis < 0 else axis
            # per-channel weights are always symmetric: QLinear kernels need one zero point
            symmetric = first.get("symmetric", axis is not None or (
                self.is_weight_symmetric(qtype) if is_weight
                else self.options.activation_symmetric))
            reduce = first.get("reduce_range", self.reduce_range)
            if axis is None:
                rmin, rmax = first.get("rmin"), first.get("rmax")
            else:
                n = data.shape[axis]
                per = [entries[i] if i < len(entries) else {} for i in range(n)]
                lo, hi = data_range(data, axis)
                rmin = np.array([p.get("rmin", v) for p, v in zip(per, lo)], data.dtype)
                rmax = np.array([p.get("rmax", v) for p, v in zip(per, hi)], data.dtype)
            zp, scale = weight_params(data, qtype, symmetric, reduce,
                                      self.options.min_real_range, axis, rmin, rmax)
            params[name] = QuantParams(zp, scale, qtype, axis)
        return params

    def _fit_weight_scales_to_biases(self) -> None:
        """Enlarge symmetric int8/int16 weight scales whose bias would overflow int32."""
        if self.options.no_weight_adjust_for_int32_bias:
            return
        for bias, info in self.bias_marks.items():
            if (info.input_name not in self.quant_params or info.input_name not in self.marks
                    or info.weight_name not in self.initializer_params):
                continue
            wp = self.initializer_params[info.weight_name]
            if wp.quant_type not in (TensorProto.INT8, TensorProto.INT16) or wp.zero_point.any():
                continue
            input_scale = np.asarray(self.quant_params[info.input_name].scale)
            changed, scale = bias_safe_weight_scale(M.initializer_array(self.initializers[bias]),
                                                    input_scale, wp.scale, wp.axis is not None)
            if changed:
                wp.scale = scale

    # ---------------------------------------------------------------- inserting (phase 2)
    def _scale_zp_initializers(self, name: str, params: QuantParams, suffix: str = ""):
        zp_name, scale_name = name + "_zero_point" + suffix, name + "_scale" + suffix
        self.add_initializer(M.params_initializer(zp_name, params.quant_type, params.zero_point))
        scale = np.asarray(params.scale)
        elem = TensorProto.FLOAT16 if scale.dtype == np.float16 else TensorProto.FLOAT
        self.add_initializer(M.params_initializer(scale_name, elem, scale))
        return scale_name, zp_name

    def _q(self, x, y, name, scale, zp, axis=None):
        self.graph.node.append(M.make_node("QuantizeLinear", [x, scale, zp], [y], name,
                                           domain=self.domain, axis=axis))

    def _dq(self, x, y, name, scale, zp, axis=None):
        self.graph.node.append(M.make_node("DequantizeLinear", [x, scale, zp], [y], name,
                                           domain=self.domain, axis=axis))
        self._dequantized.add(y)

    def _insert_for_marked(self) -> None:
        """Q/DQ for every marked tensor with parameters of its own."""
        for name, mark in list(self.marks.items()):
            if mark.shares is not None or name in self.quantized:
                continue
            if name in self.initializers:
                self._insert_for_initializer(name)
            elif name in self.produced_by_dq:     # already dequantized by the model itself
                pass
            else:
                params = self.quant_params.get(name)
                if params is None:
                    raise ValueError(f"no quantization parameters for tensor {name!r}: static "
                                     f"quantization needs a calibrated range for every "
                                     f"quantized activation")
                scale, zp = self._scale_zp_initializers(name, _per_tensor(params))
                self._insert_pair(name, scale, zp)
            del self.marks[name]

    def _insert_for_shared(self) -> None:
        """Q/DQ for tensors reusing an upstream tensor's parameters, in waves: a tensor is done
        once the tensor it shares with is."""
        while self.marks:
            progressed = False
            for name, mark in list(self.marks.items()):
                source = mark.shares[0] if mark.shares else None
                if source not in self.quantized:
                    continue
                if name in self.initializers:
                    raise ValueError(f"{name!r}: an initializer cannot share parameters")
                del self.marks[name]
                qv = self.quantized[source]
                self._insert_pair(name, qv.scale_name, qv.zp_name)
                progressed = True
            if not progressed:
                raise ValueError(f"tensors {sorted(self.marks)} share quantization parameters "
                                 f"with tensors that are not quantized")

    def _insert_pair(self, name: str, scale: str, zp: str) -> None:
        receivers = self.receivers.get(name, [])
        if self.options.dedicated_qdq_pair and len(receivers) > 1:
            for i, node in enumerate(receivers, start=1):
                q_out = f"{name}{M.Q_OUTPUT_SUFFIX}_{i}"
                dq_out = f"{name}{M.DQ_OUTPUT_SUFFIX}_{i}"
                self._q(name, q_out, f"{name}{M.Q_NODE_SUFFIX}_{i}", scale, zp)
                self._dq(q_out, dq_out, f"{name}{M.DQ_NODE_SUFFIX}_{i}", scale, zp)
                _replace_inputs(node, name, dq_out)
                if i == 1:
                    self.quantized[name] = QuantizedValue(name, dq_out, scale, zp)
            return
        q_in, dq_out = name, name + M.DQ_OUTPUT_SUFFIX
        if any(vi.name == name for vi in self.graph.output):   # the output keeps its name
            q_in, dq_out = name + M.Q_INPUT_SUFFIX, name
            for node in self.graph.node:
                _replace_outputs(node, name, q_in)
        else:
            for node in self.graph.node:
                _replace_inputs(node, name, dq_out)
        q_out = name + M.Q_OUTPUT_SUFFIX
        self._q(q_in, q_out, name + M.Q_NODE_SUFFIX, scale, zp)
        self._dq(q_out, dq_out, name + M.DQ_NODE_SUFFIX, scale, zp)
        self.quantized[name] = QuantizedValue(name, dq_out, scale, zp)

    def _insert_for_initializer(self, name: str) -> None:
        """A weight stored quantized (``<W>_quantized``) behind a DequantizeLinear, or with
        AddQDQPairToWeight kept float behind Q -> DQ."""
        params = self.initializer_params[name]
        scale, zp = self._scale_zp_initializers(name, params)
        dq_out = name + M.DQ_OUTPUT_SUFFIX
        for node in self.graph.node:
            _replace_inputs(node, name, dq_out)
        q_name = None
        if self.options.add_qdq_pair_to_weight:
            q_out = name + M.Q_OUTPUT_SUFFIX
            self._q(name, q_out, name + M.Q_NODE_SUFFIX, scale, zp, params.axis)
            self._dq(q_out, dq_out, name + M.DQ_NODE_SUFFIX, scale, zp, params.axis)
        else:
            data = M.initializer_array(self.initializers[name])
            q = quantize_with(data, params.quant_type, params.scale, params.zero_point,
                              params.axis)
            q_name = name + M.QUANTIZED_SUFFIX
            self.add_initializer(M.data_initializer(q_name, params.quant_type, q))
            self._dq(q_name, dq_out, name + M.DQ_NODE_SUFFIX, scale, zp, params.axis)
        self.quantized[name] = QuantizedValue(name, q_name, scale, zp, axis=params.axis,
                                              is_initializer=True)

    def _scale_of(self, name: str) -> np.ndarray | None:
        """The scale a node sees for ``name``: from this run, or from the model's own DQ."""
        if name in self.quantized:
            init = self.initializers.get(self.quantized[name].scale_name)
        elif name in self.produced_by_dq:
            init = self.initializers.get(self.produced_by_dq[name].input[1])
        else:
            init = None
        return None if init is None else M.initializer_array(init)

    def _insert_for_biases(self) -> None:
        """Each marked bias becomes int32 ``<b>_quantized`` -> DequantizeLinear -> ``<b>``."""
        for bias, info in self.bias_marks.items():
            if bias in self.quantized:
                continue
            weight_scale = self._scale_of(info.weight_name)
            input_scale = self._scale_of(info.input_name)
            if weight_scale is None or input_scale is None:
                which = info.weight_name if weight_scale is None else info.input_name
                raise ValueError(f"no quantization scale for {which!r}, needed to quantize the "
                                 f"bias {bias!r} to int32")
            data = M.initializer_array(self.initializers[bias])
            beta = info.beta
            if beta == 0:
                data, beta = np.zeros_like(data), 1.0
            q, scale = quantize_bias(data, input_scale, weight_scale, beta)
            q_name = bias + M.QUANTIZED_SUFFIX
            self.add_initializer(numpy_helper.from_array(q.reshape(data.shape), q_name))
            self.add_initializer(numpy_helper.from_array(scale, q_name + "_scale"))
            if scale.size > 1:
                zp = numpy_helper.from_array(np.zeros(scale.shape, np.int32),
                                             q_name + "_zero_point")
            else:
                zp = M.scalar_initializer(q_name + "_zero_point", TensorProto.INT32, 0)
            self.add_initializer(zp)
            axis = 0 if scale.size > 1 else None
            self.quantized[bias] = QuantizedValue(bias, q_name, q_name + "_scale", zp.name,
                                                  axis=axis, is_initializer=True)
            self.remove_initializer(bias)
            self._dq(q_name, bias, bias + M.DQ_NODE_SUFFIX, q_name + "_scale", zp.name, axis)

    def _note_quantized_nodes(self) -> None:
        """For the summary: a node folded away was removed; a node to quantize that now reads a
        tensor dequantized here was quantized; other original nodes stay float."""
        removed = {id(n) for n in self.nodes_to_remove}
        for node in self._original_nodes:
            if id(node) in removed:
                self.removed_nodes.append(node)
            elif id(node) in self._considered and any(i in self._dequantized for i in node.input):
                self.quantized_nodes.append(node)
            else:
                self.float_nodes.append(node)

    def mark_all(self, node) -> None:
        """The generic rule: every input and (unless excluded) every output."""
        names = node.input if self.output_excluded(node) else itertools.chain(node.input,
                                                                              node.output)
        for name in names:
            self.mark_activation(name)


def _per_tensor(params: QuantParams) -> QuantParams:
    """Activation parameters as 0-d arrays (calibrated ranges may come as shape [1])."""
    return QuantParams(np.asarray(params.zero_point).squeeze(), np.asarray(params.scale).squeeze(),
                       params.quant_type)


def _replace_inputs(node, old: str, new: str) -> None:
    for i, name in enumerate(node.input):
        if name == old:
            node.input[i] = new


def _replace_outputs(node, old: str, new: str) -> None:
    for i, name in enumerate(node.output):
        if name == old:
            node.output[i] = new


def _largest_suffix(initializers: dict, prefix: str) -> int:
    """The largest integer n such that ``prefix + str(n)`` names an initializer (-1 if none)."""
    largest = -1
    for name in initializers:
        if name.startswith(prefix):
            try:
                largest = max(largest, int(name[len(prefix):]))
            except ValueError:
                continue
    return largest


# ---------------------------------------------------------------- rules (phase 1 per op type)

def generic(q: QDQQuantizer, node) -> None:
    """Any op type without a rule of its own: all float inputs and outputs (QDQ's "generic
    wrapping": Add, Mul, Softmax, Sigmoid, Concat, CumSum, ...)."""
    q.mark_all(node)


def conv(q: QDQQuantizer, node) -> None:
    """Conv/ConvTranspose: input, output, weight (per channel along 0, ConvTranspose 1), bias."""
    q.mark_activation(node.input[0])
    if not q.output_excluded(node):
        q.mark_activation(node.output[0])
    per_channel, axis = q.per_channel_axis(node.input[1],
                                           default_axis=0 if node.op_type == "Conv" else 1)
    if per_channel:
        q.mark_weight_per_channel(node.input[1], axis)
    else:
        q.mark_weight(node.input[1])
    if len(node.input) == 3:
        q.mark_bias(node.name, node.input[2], node.input[0], node.input[1])


def gemm(q: QDQQuantizer, node) -> None:
    """Gemm: input, output, weight (per channel along 0 if transB else 1), constant bias (scale
    includes beta, which is then set to 1)."""
    q.mark_activation(node.input[0])
    if not q.output_excluded(node):
        q.mark_activation(node.output[0])
    trans_b = M.attribute(node, "transB", 0)
    per_channel, axis = q.per_channel_axis(node.input[1], default_axis=0 if trans_b else 1)
    if per_channel:
        q.mark_weight_per_channel(node.input[1], axis)
    else:
        q.mark_weight(node.input[1])
    if len(node.input) == 3:
        if node.input[2] in q.initializers:
            q.mark_bias(node.name, node.input[2], node.input[0], node.input[1],
                        M.attribute(node, "beta", 1.0))
            for a in node.attribute:
                if a.name == "beta":
                    a.f = 1.0
        else:
            warn(f"the bias of Gemm {node.name!r} is not constant; exclude the node for better "
                 f"performance")


def matmul(q: QDQQuantizer, node) -> None:
    """MatMul: constant inputs as weights (per channel along 1), the rest as activations."""
    names = node.input if q.output_excluded(node) else itertools.chain(node.input, node.output)
    for name in names:
        if name in q.initializers:
            per_channel, axis = q.per_channel_axis(name, default_axis=1, op_type=node.op_type)
            if per_channel:
                q.mark_weight_per_channel(name, axis)
            else:
                q.mark_weight(name)
        else:
            q.mark_activation(name)


def removable_activation(q: QDQQuantizer, node) -> None:
    """Relu/Clip: nothing unless the input is quantized; then, with asymmetric activations, the
    node is removed (its output range clips already), else it is wrapped."""
    if not q.is_marked(node.input[0]):
        return
    if (not q.options.activation_symmetric and not q.options.keep_removable_activations
            and q.try_replacing_upstream_output(node.input[0], node.output[0])):
        q.nodes_to_remove.append(node)
    else:
        q.mark_activation(node.input[0])
    if not q.output_excluded(node):
        q.mark_activation(node.output[0])


def direct(q: QDQQuantizer, node) -> None:
    """Reshape, Transpose, Squeeze, Unsqueeze, Flatten, AveragePool, Slice, TopK (and MaxPool,
    Resize): the output shares the input's parameters; the input is quantized only if it
    already is, or with ForceQuantizeNoInputCheck."""
    if q.options.force_quantize_no_input_check:
        q.mark_activation(node.input[0])
        if not q.output_excluded(node):
            q.mark_shared(node.output[0], node.input[0], node.name)
    elif q.is_marked(node.input[0]) and not q.output_excluded(node):
        q.mark_shared(node.output[0], node.input[0], node.name)


def maxpool(q: QDQQuantizer, node) -> None:
    if q.opset >= 12:           # no 8-bit MaxPool before opset 12
        direct(q, node)


def resize(q: QDQQuantizer, node) -> None:
    if q.opset >= 11:
        direct(q, node)


def pad(q: QDQQuantizer, node) -> None:
    """Pad: all inputs; the output shares the input's parameters when the padding values are
    values of the input (reflect/edge/wrap) or 0 (always representable), else its own."""
    for name in node.input:
        q.mark_activation(name)
    if q.output_excluded(node):
        return
    mode = M.attribute(node, "mode", b"constant")
    same = mode in (b"reflect", b"edge", b"wrap")
    if mode == b"constant":
        value = _pad_value(q, node)
        same = value is not None and value.dtype in (np.float32, np.float16) and \
            float(value.item()) == 0
    if same:
        q.mark_shared(node.output[0], node.input[0], node.name)
    else:
        q.mark_activation(node.output[0])


def _pad_value(q, node):
    elem = M.elem_type(q.value_types.get(node.input[0]))
    if not elem:
        return None
    dtype = M.helper.tensor_dtype_to_np_dtype(elem)
    if q.opset < 11:
        return np.array(M.attribute(node, "value", 0), dtype=dtype)
    if len(node.input) >= 3 and node.input[2]:
        for n in q.graph.node:
            if n.op_type == "Constant" and n.output[0] == node.input[2]:
                value = M.attribute(n, "value")
                if value is not None:
                    return numpy_helper.to_array(value)
        t = q.initializers.get(node.input[2])
        return None if t is None else M.initializer_array(t)
    return np.array(0, dtype=dtype)


def split(q: QDQQuantizer, node) -> None:
    if not q.is_marked(node.input[0]):
        q.mark_activation(node.input[0])
    if not q.output_excluded(node):
        for output in node.output:
            q.mark_shared(output, node.input[0], node.name)


def gather(q: QDQQuantizer, node) -> None:
    """Gather/GatherElements from a constant table (or any table with ForceQuantizeNoInputCheck):
    the table is quantized and the output shares its parameters."""
    if q.is_float_initializer(node.input[0]) or q.options.force_quantize_no_input_check:
        q.mark_activation(node.input[0])
        q.mark_shared(node.output[0], node.input[0], node.name)
    elif q.is_marked(node.input[0]):
        q.mark_shared(node.output[0], node.input[0], node.name)


def where(q: QDQQuantizer, node) -> None:
    if q.options.force_quantize_no_input_check:
        for name in node.input[1:3]:
            if not q.is_marked(name):
                q.mark_activation(name)
        if not q.output_excluded(node):
            for output in node.output:
                q.mark_activation(output)
    elif q.is_marked(node.input[1]) and q.is_marked(node.input[2]) and \
            not q.output_excluded(node):
        for output in node.output:
            q.mark_activation(output)


def normalization(q: QDQQuantizer, node) -> None:
    """Instance/Layer/BatchNormalization: input, scale (weight, per channel along 1 when
    possible), bias (int32 with input_scale * scale_scale), outputs."""
    q.mark_activation(node.input[0])
    per_channel, axis = q.per_channel_axis(node.input[1], default_axis=1, op_type=node.op_type)
    if per_channel:
        q.mark_weight_per_channel(node.input[1], axis)
    elif node.input[1] in q.initializers:
        q.mark_weight(node.input[1])
    else:
        q.mark_activation(node.input[1])
    if len(node.input) > 2 and node.input[2]:
        q.mark_bias(node.name, node.input[2], node.input[0], node.input[1])
    if not q.output_excluded(node):
        for output in node.output:
            q.mark_activation(output)


#: onnxruntime's QDQRegistry; other op types get :func:`generic`.
RULES = {
    "Conv": conv, "ConvTranspose": conv, "Gemm": gemm,
    "Clip": removable_activation, "Relu": removable_activation,
    "Reshape": direct, "Transpose": direct, "Squeeze": direct, "Unsqueeze": direct,
    "Flatten": direct, "AveragePool": direct, "Slice": direct, "TopK": direct,
    "Resize": resize, "MaxPool": maxpool, "Pad": pad, "MatMul": matmul, "Split": split,
    "Gather": gather, "GatherElements": gather, "Where": where,
    "InstanceNormalization": normalization, "LayerNormalization": normalization,
    "BatchNormalization": normalization, "CumSum": generic,
}
