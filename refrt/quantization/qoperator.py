"""The operator-oriented rewriter: dynamic quantization and the static QOperator format.

The graph is rebuilt node by node, in file order. Each node whose op type has a handler (and
passes that handler's check) is replaced by its quantized form; any other node is kept in float,
with a DequantizeLinear put in front of each input that has only a quantized form by then.

Dynamic (``IntegerOps``), e.g. a MatMul with a constant weight W::

    x -> DynamicQuantizeLinear -> (x_q, x_scale, x_zp)
    MatMulInteger(x_q, W_q, x_zp, W_zp) -> Cast(float) -> Mul(x_scale * W_scale) -> y

Static QOperator (``QLinearOps``), with scales and zero points from calibration::

    x -> QuantizeLinear -> QLinearConv(x_q, ..., W_q, ..., y_scale, y_zp, bias_int32) -> y_q
      -> MaxPool (runs on y_q directly) -> ... -> DequantizeLinear -> output

Tensor and node names are onnxruntime's: ``<tensor>_quantized``, ``<tensor>_scale``,
``<tensor>_zero_point``, ``<node>_quant``, ``<tensor>_QuantizeLinear``, ...
"""

from __future__ import annotations

import logging

import numpy as np
from onnx import NodeProto, TensorProto, numpy_helper

from . import model as M
from .base import QuantizedValue, QuantizerBase, warn
from .params import bias_safe_weight_scale, quant_range, quantize_bias, quantize_with, storage_dtype
from .params import quantize_weight as quantize_weight_data

Q = M.QUANTIZED_SUFFIX
log = logging.getLogger(__name__)


class OperatorQuantizer(QuantizerBase):
    """Rewrites ``model`` (shape-inferred, owned by the caller) in operator-oriented form.

    ``static=False`` is dynamic quantization (activation scales computed at run time);
    ``static=True`` uses ``tensors_range`` (calibrated ranges) for activations."""

    def __init__(self, model, *, static: bool, **kwargs):
        user_excluded = sorted(kwargs.get("nodes_to_exclude") or ())
        origin = {}
        if not static:          # dynamic mode turns every plain Gemm into MatMul (+ Add) first
            model, replaced, origin = _gemm_to_matmul(model, kwargs["options"])
            for key in ("nodes_to_exclude", "nodes_to_quantize"):   # names follow the Gemm
                names = set(kwargs.get(key) or ())
                kwargs[key] = names | {new for gemm in names for new in replaced.get(gemm, ())}
        super().__init__(model, **kwargs)
        self.origin = origin
        self.user_excluded = user_excluded
        self.static = static
        self.handlers = QLINEAR_OPS if static else INTEGER_OPS
        self.fuse_dynamic_quant = self.opset > 10
        self.tensor_names = ({vi.name for vi in self.graph.output}
                             | {vi.name for vi in self.graph.input}
                             | {o for n in self.graph.node for o in n.output})
        self.quant_params = self.graph_quant_params() if static else None
        self.quantized: dict[str, QuantizedValue] = {}
        self.new_nodes: list = []
        self.generated = {vi.name for vi in self.graph.input} - set(self.initializers)

    # ---------------------------------------------------------------- the main loop
    def quantize_model(self):
        if self.existing_dq_outputs or self.existing_q_inputs:
            warn("the model already has QuantizeLinear/DequantizeLinear nodes; the nodes around "
                 "them are left as they are")
        for node in list(self.graph.node):
            start = len(self.new_nodes)
            rule = self.handlers.get(node.op_type)
            if rule is not None and rule.check(self, node) and not self.in_existing_qdq(node):
                rule.handler(self, node)
            else:
                self.keep_float(node)
            for new in self.new_nodes[start:]:
                self.generated.update(new.output)
        for output in self.graph.output:
            dq = self.dequantize_value(output.name)
            if dq is not None:
                self.new_nodes.append(dq)
        self.graph.ClearField("node")
        self.graph.node.extend(self.new_nodes)
        M.remove_unused_initializers(self.graph)
        if any(n.domain == M.MS_DOMAIN for n in self.new_nodes):
            if not any(o.domain == M.MS_DOMAIN for o in self.model.opset_import):
                M.set_opset(self.model, M.MS_DOMAIN, 1)
        return self.model

    def emit(self, node, nodes: list) -> None:
        """Add a quantized replacement of ``node`` (the list of new nodes, in order)."""
        self.new_nodes.extend(nodes)
        self.quantized_nodes.append(node)

    def keep_float(self, node) -> None:
        """Keep ``node`` as it is, dequantizing any input that exists only in quantized form."""
        for name in node.input:
            dq = self.dequantize_value(name)
            if dq is not None:
                self.new_nodes.append(dq)
        self.new_nodes.append(node)
        self.float_nodes.append(node)

    def dequantize_value(self, name: str):
        """A DequantizeLinear restoring float ``name`` from its quantized form, or None when
        ``name`` is not quantized or a node already produces it."""
        if name not in self.quantized or name in self.generated:
            return None
        if any(n.name == name + M.DQ_NODE_SUFFIX for n in self.new_nodes):
            return None
        qv = self.quantized[name]
        return M.make_node("DequantizeLinear", [qv.q_name, qv.scale_name, qv.zp_name], [name],
                           name + M.DQ_NODE_SUFFIX, axis=qv.axis)

    # ---------------------------------------------------------------- tensors
    def is_float_tensor(self, name: str) -> bool:
        if name in self.initializers:
            return self.is_float_initializer(name)
        if name in self.value_types:
            if M.elem_type(self.value_types[name]) in M.FLOAT_TYPES:
                return True
            log.info("tensor %r is not float; not quantized", name)
            return False
        warn(f"shape inference did not find the type of tensor {name!r}; it is not quantized")
        return False

    def tensor_type(self, name: str) -> int:
        if name in self.initializers:
            return self.initializers[name].data_type
        elem = M.elem_type(self.value_types.get(name))
        if not elem:
            if self.options.default_tensor_type:       # onnxruntime's DefaultTensorType
                return int(self.options.default_tensor_type)
            raise RuntimeError(f"unable to find the element type of tensor {name!r}: shape "
                               f"inference failed for it (an operator of an unknown domain, or "
                               f"a model that is already quantized?); the extra option "
                               f"DefaultTensorType (e.g. TensorProto.FLOAT; refrt quantize "
                               f"--default-tensor-type float) names the type to assume")
        return elem

    def output_params(self, name: str, use_scale=None, use_zero_point=None):
        """(found, scale name, zero point name) of a calibrated tensor, creating the
        ``<name>_scale`` and ``<name>_zero_point`` initializers. ``use_scale``/``use_zero_point``
        replace the calibrated values (Softmax, NNAPI Sigmoid)."""
        params = (self.quant_params or {}).get(name)
        if params is None:
            log.info("no quantization parameters for tensor %r", name)
            return False, "", ""
        if use_scale is None:
            zp, scale, qtype = params.zero_point, params.scale, params.quant_type
        else:
            zp, qtype = np.asarray(use_zero_point), self.activation_type
            scale = np.asarray(use_scale, dtype=params.scale.dtype)
        scale_name, zp_name = name + "_scale", name + "_zero_point"
        self.add_initializer(M.scalar_initializer(zp_name, qtype, int(np.ravel(zp)[0])))
        self.add_initializer(M.scalar_initializer(scale_name, _float_elem(scale),
                                                  float(np.ravel(scale)[0])))
        return True, scale_name, zp_name

    def quantize_input_nodes(self, node, index: int, qtype: int, scale_name=None, zp_name=None,
                             initial_type=None):
        """Nodes quantizing activation ``node.input[index]``: a QuantizeLinear with calibrated
        (or given) parameters, or, in dynamic mode, a DynamicQuantizeLinear. None in static mode
        when the tensor has no parameters."""
        name = node.input[index]
        q_name, q_node_name = name + Q, name + M.Q_NODE_SUFFIX
        nodes = []
        if scale_name is None or zp_name is None:
            found, scale_name, zp_name = self.output_params(name)
        else:
            found = True
        if found:
            q_node = M.make_node("QuantizeLinear", [name, scale_name, zp_name], [q_name],
                                 q_node_name)
        elif self.static:
            return None
        elif self.fuse_dynamic_quant and qtype == TensorProto.UINT8:
            scale_name, zp_name = name + "_scale", name + "_zero_point"
            q_node = M.make_node("DynamicQuantizeLinear", [name], [q_name, scale_name, zp_name],
                                 q_node_name)
        else:
            scale_name, zp_name, nodes = self._dynamic_params_uint8(name, qtype, initial_type)
            q_node = M.make_node("QuantizeLinear", [name, scale_name, zp_name], [q_name],
                                 q_node_name)
        self.quantized[name] = QuantizedValue(name, q_name, scale_name, zp_name)
        return nodes + [q_node]

    def _dynamic_params_uint8(self, name, qtype, initial_type):
        """Scale and zero point computed in the graph (opset 10 has no DynamicQuantizeLinear):
        scale = (max - min) / 255, zero point = cast(floor((0 - min) / scale))."""
        if qtype != TensorProto.UINT8:
            raise NotImplementedError("dynamic quantization of activations is uint8 only")
        qmin, qmax = quant_range(qtype)
        self.add_initializer(M.scalar_initializer("fixed_quantization_range_uint8", initial_type,
                                                  float(qmax - qmin)))
        self.add_initializer(M.scalar_initializer("fixed_zero", initial_type, 0.0))
        lo, hi = name + "_ReduceMin", name + "_ReduceMax"
        scale_name, zp_name = name + "_scale", name + "_zero_point"
        nodes = [
            M.make_node("ReduceMin", [name], [lo + ":0"], lo, keepdims=0),
            M.make_node("ReduceMax", [name], [hi + ":0"], hi, keepdims=0),
            M.make_node("Sub", [hi + ":0", lo + ":0"], [name + "_scale_Sub:0"],
                        name + "_scale_Sub"),
            M.make_node("Div", [name + "_scale_Sub:0", "fixed_quantization_range_uint8"],
                        [scale_name], name + "_scale_Div"),
            M.make_node("Sub", ["fixed_zero", lo + ":0"], [name + "_zero_point_Sub:0"],
                        name + "_zero_point_Sub"),
            M.make_node("Div", [name + "_zero_point_Sub:0", scale_name],
                        [name + "_zero_point_Div:0"], name + "_zero_point_Div"),
            M.make_node("Floor", [name + "_zero_point_Div:0"], [name + "_zero_point_Floor:0"],
                        name + "_zero_point_Floor"),
            M.make_node("Cast", [name + "_zero_point_Floor:0"], [zp_name],
                        name + "_zero_point_Cast", to=qtype),
        ]
        return scale_name, zp_name, nodes

    def quantize_inputs(self, node, indices, *, as_weight: bool, reduce_range: bool = False,
                        per_channel: bool = False, axis: int = -1):
        """(a QuantizedValue per given input of ``node``, the new nodes); initializers are
        quantized in place (weight type if ``as_weight``, else the activation type), activations
        get a QuantizeLinear / DynamicQuantizeLinear (shared by every consumer). The values are
        None when an activation has no parameters (static)."""
        values, nodes = [], []
        for index in indices:
            name = node.input[index]
            if name in self.quantized:
                values.append(self.quantized[name])
                continue
            if not name:                           # an omitted optional input
                values.append(QuantizedValue("", "", "", ""))
                continue
            if name in self.initializers:
                qtype = self.weight_type if as_weight else self.activation_type
                if self.per_channel and per_channel:
                    values.append(self.quantize_weight_per_channel(name, qtype, axis,
                                                                   reduce_range))
                else:
                    values.append(self.quantize_initializer(name, qtype, reduce_range))
            elif name in self.tensor_names or name in self.value_types or name in self.generated:
                initial_type = M.elem_type(self.value_types.get(name))
                new = self.quantize_input_nodes(node, index, self.activation_type,
                                                initial_type=initial_type)
                if new is None:
                    return None, []
                nodes.extend(new)
                last = new[-1]
                if last.op_type == "QuantizeLinear":      # (x, scale, zp) -> q
                    scale, zp = last.input[1], last.input[2]
                else:                                     # DynamicQuantizeLinear -> q, scale, zp
                    scale, zp = last.output[1], last.output[2]
                values.append(QuantizedValue(name, last.output[0], scale, zp))
            else:
                raise ValueError(f"cannot quantize {name!r}: it is not a tensor of the graph")
        return values, nodes

    def quantize_activation(self, node, indices):
        return self.quantize_inputs(node, indices, as_weight=False)

    def quantize_weight(self, node, indices, reduce_range=False, per_channel=False, axis=-1):
        return self.quantize_inputs(node, indices, as_weight=True, reduce_range=reduce_range,
                                    per_channel=per_channel, axis=axis)

    # ---------------------------------------------------------------- weights and biases
    def quantize_initializer(self, name: str, qtype: int, reduce_range: bool = False):
        """The QuantizedValue of initializer ``name`` quantized per tensor: ``<name>_quantized``,
        ``<name>_zero_point``, ``<name>_scale``."""
        if name in self.quantized:
            return self.quantized[name]
        weight = self.initializers[name]
        data = M.initializer_array(weight)
        ov = self.overrides.per_tensor(name)
        if "quant_type" in ov:
            qtype = ov["quant_type"].tensor_type
        if "scale" in ov and "zero_point" in ov:
            zp = np.asarray(ov["zero_point"], dtype=storage_dtype(qtype))
            scale = np.asarray(ov["scale"])
            q = quantize_with(data, qtype, scale, zp)
        else:
            symmetric = (self.is_weight_symmetric(qtype) if qtype == self.weight_type
                         else self.options.activation_symmetric)
            zp, scale, q = quantize_weight_data(
                data, qtype, ov.get("symmetric", symmetric),
                ov.get("reduce_range", self.reduce_range and reduce_range),
                self.options.min_real_range, rmin=ov.get("rmin"), rmax=ov.get("rmax"))
        q_name, zp_name, scale_name = name + Q, name + "_zero_point", name + "_scale"
        self._append(M.scalar_initializer(scale_name, weight.data_type, float(scale)))
        self._append(M.scalar_initializer(zp_name, qtype, int(zp)))
        self._append(M.data_initializer(q_name, qtype, q.reshape(data.shape)))
        qv = self.quantized[name] = QuantizedValue(name, q_name, scale_name, zp_name,
                                                   is_initializer=True)
        return qv

    def quantize_weight_per_channel(self, name: str, qtype: int, axis: int,
                                    reduce_range: bool = True, data: np.ndarray | None = None):
        """Like :meth:`quantize_initializer`, one scale and zero point per index of ``axis``
        (``data`` replaces the initializer's values, e.g. a reshaped LSTM weight)."""
        if name in self.quantized:
            return self.quantized[name]
        weight = self.initializers[name]
        data = M.initializer_array(weight) if data is None else data
        rank = data.ndim
        norm_axis = axis + rank if axis < 0 else axis
        if not 0 <= norm_axis < rank:
            raise ValueError(f"per-channel axis {axis} is out of range for weight {name!r} of "
                             f"rank {rank}")
        channels = self.overrides.entries(name) or [{"axis": norm_axis}]
        if "axis" not in channels[0]:
            raise ValueError(f"tensor {name!r} has per-tensor overrides where per-channel ones "
                             f"were expected")
        if len(channels) not in (1, data.shape[norm_axis]):
            raise ValueError(f"per-channel overrides of {name!r} must have 1 or "
                             f"{data.shape[norm_axis]} entries")
        first = channels[0]
        over_axis = first["axis"] + rank if first["axis"] < 0 else first["axis"]
        if over_axis != norm_axis:
            raise ValueError(f"overrides of {name!r} use axis {first['axis']}, the operator "
                             f"needs axis {norm_axis}")
        if "quant_type" in first:
            qtype = first["quant_type"].tensor_type
        zp, scale, q = _per_channel(data, qtype, norm_axis, channels,
                                    first.get("symmetric", self.is_weight_symmetric(qtype)),
                                    first.get("reduce_range", self.reduce_range and reduce_range),
                                    self.options.min_real_range)
        q_name, zp_name, scale_name = name + Q, name + "_zero_point", name + "_scale"
        self._append(M.params_initializer(scale_name, weight.data_type, scale.astype(data.dtype)))
        self._append(M.params_initializer(zp_name, qtype, zp))
        self._append(M.data_initializer(q_name, qtype, q))
        qv = self.quantized[name] = QuantizedValue(name, q_name, scale_name, zp_name, axis=axis,
                                                   is_initializer=True)
        return qv

    def _append(self, tensor) -> None:
        """Add an initializer without the duplicate-name check (onnxruntime's
        ``initializer_extend``): a later one of the same name replaces it in the lookup."""
        self.graph.initializer.append(tensor)
        self.initializers[tensor.name] = tensor

    def quantize_bias_static(self, bias: str, input_name: str, weight: str,
                             beta: float = 1.0) -> str:
        """``<bias>_quantized``: int32 with scale input_scale * weight_scale * beta, zero point 0.
        When that scale is too small for the int32 range, the (symmetric int8) weight's scale is
        enlarged first and the weight quantized again."""
        if bias in self.quantized:
            return self.quantized[bias].q_name
        w_scale = M.initializer_array(self.initializers[self.quantized[weight].scale_name])
        if input_name in self.quantized:
            in_scale_name = self.quantized[input_name].scale_name
        elif self.quant_params and input_name in self.quant_params:
            _, in_scale_name, _ = self.output_params(input_name)
        else:
            raise ValueError(f"{input_name!r} has no quantization parameters (static mode)")
        in_scale = M.initializer_array(self.initializers[in_scale_name])
        w_zp_init = self.initializers.get(self.quantized[weight].zp_name)
        w_zp = M.initializer_array(w_zp_init) if w_zp_init is not None else None
        bias_data = M.initializer_array(self.initializers[bias])
        if (w_zp is not None and w_zp.size and not w_zp.any()
                and self.weight_type == TensorProto.INT8):
            changed, new_scale = bias_safe_weight_scale(bias_data, in_scale, w_scale,
                                                        self.per_channel)
            if changed:
                self._requantize_weight(weight, new_scale)
                w_scale = new_scale
        if beta == 0:
            bias_data, beta = np.zeros_like(bias_data), 1.0
        q, bias_scale = quantize_bias(bias_data, in_scale, w_scale, beta)
        q_name = bias + Q
        self._append(numpy_helper.from_array(q.reshape(bias_data.shape), q_name))
        self._append(numpy_helper.from_array(bias_scale, q_name + "_scale"))
        if bias_scale.size > 1:
            self._append(numpy_helper.from_array(np.zeros(bias_scale.shape, np.int32),
                                                 q_name + "_zero_point"))
        else:
            self._append(M.scalar_initializer(q_name + "_zero_point", TensorProto.INT32, 0))
        self.quantized[bias] = QuantizedValue(bias, q_name, q_name + "_scale",
                                              q_name + "_zero_point",
                                              axis=0 if bias_scale.size > 1 else None,
                                              is_initializer=True)
        return q_name

    def _requantize_weight(self, weight: str, new_scale: np.ndarray) -> None:
        qv = self.quantized[weight]
        float_weight = self.initializers[weight]
        old_scale = self.initializers[qv.scale_name]
        zp = M.initializer_array(self.initializers[qv.zp_name])
        scale = np.asarray(new_scale, dtype=M.initializer_array(float_weight).dtype)
        self.remove_initializer(qv.scale_name)
        self.remove_initializer(qv.q_name)
        self.add_initializer(numpy_helper.from_array(scale.reshape(old_scale.dims), qv.scale_name))
        data = M.initializer_array(float_weight)
        axis = None if qv.axis is None else (qv.axis + data.ndim if qv.axis < 0 else qv.axis)
        q = quantize_with(data, self.weight_type, scale, zp, axis)
        self.add_initializer(M.data_initializer(qv.q_name, self.weight_type, q))


def _float_elem(scale: np.ndarray) -> int:
    return TensorProto.FLOAT16 if np.asarray(scale).dtype == np.float16 else TensorProto.FLOAT


def _per_channel(data, qtype, axis, channels, symmetric, reduce_range, min_real_range):
    """Per-channel (zero points, scales, quantized data) honouring per-channel overrides."""
    n = data.shape[axis]
    per = [channels[i] if len(channels) > 1 else channels[0] for i in range(n)]
    if all("scale" in c and "zero_point" in c for c in per):
        zp = np.array([c["zero_point"] for c in per], dtype=storage_dtype(qtype))
        scale = np.array([c["scale"] for c in per], dtype=data.dtype)
        return zp, scale, quantize_with(data, qtype, scale, zp, axis)
    rmin = [c.get("rmin") for c in per]
    rmax = [c.get("rmax") for c in per]
    zp, scale, q = quantize_weight_data(
        data, qtype, symmetric, reduce_range, min_real_range, axis=axis,
        rmin=None if any(r is None for r in rmin) else rmin,
        rmax=None if any(r is None for r in rmax) else rmax)
    return zp, scale, q


# ---------------------------------------------------------------- dynamic-mode preparation

def _gemm_to_matmul(model, options):
    """Gemm with alpha = beta = 1 and no transA becomes MatMul (+ Add for the bias); a
    transposed constant B is stored transposed as ``<B>_Transposed``, a computed one gets a
    Transpose. Overrides of B follow to the transposed copy (with the axis flipped).

    Returns the model, {Gemm name: names of the nodes replacing it} (an excluded Gemm keeps its
    replacement in float; onnxruntime quantizes it anyway) and {first output of a new node: the
    Gemm it replaces}."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    names = set(inits) | {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    transposed: dict[str, str] = {}
    new_nodes, replaced, origin = [], {}, {}
    for node in graph.node:
        attrs = M.attributes(node)
        if node.op_type != "Gemm" or attrs.get("alpha", 1.0) != 1.0 or \
                attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
            new_nodes.append(node)
            continue
        b, first = node.input[1], len(new_nodes)
        if attrs.get("transB", 0):
            if b in inits:
                if b not in transposed:
                    t_name, k = b + "_Transposed", 0
                    suffixes = ("", "_quantized", "_scale", "_zero_point")
                    while any(t_name + s in names for s in suffixes):
                        k += 1
                        t_name = f"{b}_Transposed_{k}"
                    names.update(t_name + s for s in suffixes)
                    graph.initializer.append(numpy_helper.from_array(
                        M.initializer_array(inits[b]).T, t_name))
                    transposed[b] = t_name
                b = transposed[b]
            else:
                t_out = b + "_Transposed"
                new_nodes.append(M.make_node("Transpose", [node.input[1]], [t_out],
                                             node.name + "_Transpose" if node.name else ""))
                b = t_out
        has_bias = len(node.input) > 2
        mm_out = node.output[0] + ("_MatMul" if has_bias else "")
        new_nodes.append(M.make_node("MatMul", [node.input[0], b], [mm_out],
                                     node.name + "_MatMul" if node.name else ""))
        if has_bias:
            new_nodes.append(M.make_node("Add", [mm_out, node.input[2]], list(node.output),
                                         node.name + "_Add" if node.name else ""))
        if node.name:
            replaced[node.name] = [node.name + s for s in ("_Transpose", "_MatMul", "_Add")]
        gemm = NodeProto()
        gemm.CopyFrom(node)
        origin.update((n.output[0], gemm) for n in new_nodes[first:])
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    overrides = options.tensor_quant_overrides
    if transposed and overrides:
        overrides = {k: [dict(d) for d in v] for k, v in overrides.items()}
        for source, t_name in transposed.items():
            if source in overrides:
                flipped = [dict(d) for d in overrides[source]]
                for d in flipped:
                    if "axis" in d:
                        d["axis"] = 1 - (d["axis"] % 2)
                overrides[t_name] = flipped
        options.tensor_quant_overrides = overrides
    return M.infer_shapes(model, inplace=True), replaced, origin


# ---------------------------------------------------------------- handlers
#
# A handler gets the quantizer and one node; it either emits the quantized replacement
# (``q.emit``) or falls back to ``q.keep_float``. ``check`` decides whether the handler runs at
# all (onnxruntime's ``should_quantize``).

class Rule:
    def __init__(self, handler, check=None):
        self.handler = handler
        self.check = check or _float_input

    def __repr__(self):
        return f"Rule({self.handler.__name__})"


def _float_input(q, node) -> bool:
    return q.should_quantize_node(node) and q.is_float_tensor(node.input[0])


def _matmul_check(q, node) -> bool:
    """MatMul/Gemm: some input is float; with MatMulConstBOnly, B must be an initializer."""
    if not q.should_quantize_node(node):
        return False
    if not (q.is_float_tensor(node.input[1]) or q.is_float_tensor(node.input[0])):
        return False
    return not (q.options.matmul_const_b_only and node.input[1] not in q.initializers)


def _gather_check(q, node) -> bool:
    return q.should_quantize_node(node) and q.is_float_initializer(node.input[0])


def _node_check(q, node) -> bool:
    return q.should_quantize_node(node)


def _quant_name(node) -> str:
    return node.name + "_quant" if node.name else ""


def _integer_then_scale(q, node, op_type, inputs_q, weight_q, attrs):
    """``op_type`` (MatMulInteger/ConvInteger) then Cast to float then Mul by the product of the
    two scales: the dynamic-mode body shared by MatMul and Conv. Returns the new nodes and the
    name of the scaled output."""
    (x, w), nodes = inputs_q[0] + weight_q[0], inputs_q[1] + weight_q[1]
    out = node.output[0]
    int_out = out + "_output_quantized"
    name = _quant_name(node)
    nodes.append(M.make_node(op_type, [x.q_name, w.q_name, x.zp_name, w.zp_name], [int_out], name,
                             **attrs))
    scales = [x.scale_name, w.scale_name]
    cast_out = int_out + "_cast_output"
    nodes.append(M.make_node("Cast", [int_out], [cast_out], int_out + "_cast",
                             to=q.tensor_type(out)))
    scales_mul = name + "_scales_mul" if name else f"{scales[0]}_{scales[1]}_mul"
    if not any(n.name == scales_mul for n in q.new_nodes):
        nodes.append(M.make_node("Mul", scales, [scales_mul + ":0"], scales_mul))
    return nodes, cast_out, scales_mul + ":0", name


def matmul_integer(q, node):
    """MatMul (dynamic) -> DynamicQuantizeLinear, MatMulInteger, Cast, Mul(scales)."""
    nodes, cast_out, scales_out, name = _integer_then_scale(
        q, node, "MatMulInteger", q.quantize_activation(node, [0]),
        q.quantize_weight(node, [1], reduce_range=True, per_channel=True), {})
    nodes.append(M.make_node("Mul", [cast_out, scales_out], [node.output[0]],
                             name + "_output_scale_mul" if name else ""))
    q.emit(node, nodes)


def conv_integer(q, node):
    """Conv (dynamic) -> DynamicQuantizeLinear, ConvInteger, Cast, Mul(scales) [, + bias]."""
    nodes, cast_out, scales_out, name = _integer_then_scale(
        q, node, "ConvInteger", q.quantize_activation(node, [0]),
        q.quantize_weight(node, [1], reduce_range=q.reduce_range), M.attributes(node))
    out = node.output[0]
    has_bias = len(node.input) == 3 and node.input[2]
    scaled = out + "quant_scaled_output" if has_bias else out
    nodes.append(M.make_node("Mul", [cast_out, scales_out], [scaled],
                             name + "_output_scale_mul" if name else ""))
    if has_bias:      # the float bias, reshaped to [1, C, 1, ...], added after scaling
        weight = q.initializers.get(node.input[1])
        if weight is None:
            raise ValueError(f"Conv {node.name!r}: the weight {node.input[1]!r} must be an "
                             f"initializer")
        shape = np.ones(len(weight.dims), dtype=np.int64)
        shape[1] = -1
        q.add_initializer(numpy_helper.from_array(shape, out + "_bias_reshape_shape"))
        nodes.append(M.make_node("Reshape", [node.input[2], out + "_bias_reshape_shape"],
                                 [out + "_bias_reshape_output"]))
        nodes.append(M.make_node("Add", [scaled, out + "_bias_reshape_output"], [out],
                                 out + "_bias_add"))
    q.emit(node, nodes)


def _register_output(q, node, scale_name, zp_name, out_index=0, suffix=Q) -> str:
    out = node.output[out_index]
    q.quantized[out] = QuantizedValue(out, out + suffix, scale_name, zp_name)
    return out + suffix


def qlinear_matmul(q, node):
    """MatMul (static) -> QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp)."""
    xs, nodes = q.quantize_activation(node, [0])
    ws, w_nodes = q.quantize_weight(node, [1], reduce_range=True, per_channel=True)
    found, y_scale, y_zp = q.output_params(node.output[0])
    if not found or xs is None or ws is None:
        return q.keep_float(node)
    nodes += w_nodes
    inputs = [*xs[0].qlinear_inputs, *ws[0].qlinear_inputs, y_scale, y_zp]
    out = _register_output(q, node, y_scale, y_zp)
    nodes.append(M.make_node("QLinearMatMul", inputs, [out], _quant_name(node)))
    q.emit(node, nodes)


def qlinear_conv(q, node):
    """Conv (static) -> QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias).
    Per channel, the weight is always int8 along axis 0 (onnxruntime hard-codes both)."""
    found, y_scale, y_zp = q.output_params(node.output[0])
    xs, nodes = q.quantize_activation(node, [0])
    if node.input[1] in q.initializers and q.per_channel:
        ws, w_nodes = [q.quantize_weight_per_channel(node.input[1], TensorProto.INT8, 0)], []
    else:
        ws, w_nodes = q.quantize_weight(node, [1], reduce_range=q.reduce_range)
    if not found or xs is None or ws is None:
        return q.keep_float(node)
    nodes += w_nodes
    inputs = [*xs[0].qlinear_inputs, *ws[0].qlinear_inputs, y_scale, y_zp]
    if len(node.input) == 3:
        inputs.append(q.quantize_bias_static(node.input[2], node.input[0], node.input[1]))
    out = _register_output(q, node, y_scale, y_zp)
    nodes.append(M.make_node("QLinearConv", inputs, [out], _quant_name(node),
                             **M.attributes(node)))
    q.emit(node, nodes)


def qgemm(q, node):
    """Gemm (static) -> com.microsoft QGemm(a, ..., b, ..., bias_int32, y_scale, y_zp)."""
    found, y_scale, y_zp = q.output_params(node.output[0])
    trans_b = M.attribute(node, "transB", 0)
    xs, nodes = q.quantize_activation(node, [0])
    if node.input[1] in q.initializers and q.per_channel:
        ws, w_nodes = [q.quantize_weight_per_channel(node.input[1], q.weight_type,
                                                     0 if trans_b else 1)], []
    else:
        ws, w_nodes = q.quantize_weight(node, [1], reduce_range=q.reduce_range)
    if not found or xs is None or ws is None:
        return q.keep_float(node)
    nodes += w_nodes
    bias = ""
    if len(node.input) == 3:
        if node.input[2] not in q.initializers:
            return q.keep_float(node)
        bias = q.quantize_bias_static(node.input[2], node.input[0], node.input[1],
                                      M.attribute(node, "beta", 1.0))
    attrs = {k: v for k, v in M.attributes(node).items() if k != "beta"}
    inputs = [*xs[0].qlinear_inputs, *ws[0].qlinear_inputs, bias, y_scale, y_zp]
    out = _register_output(q, node, y_scale, y_zp)
    nodes.append(M.make_node("QGemm", inputs, [out], _quant_name(node), domain=M.MS_DOMAIN,
                             **attrs))
    q.emit(node, nodes)


def qlinear_binary(q, node):
    """Add/Mul -> com.microsoft QLinearAdd/QLinearMul; constant operands are quantized with the
    activation type."""
    found, y_scale, y_zp = q.output_params(node.output[0])
    xs, nodes = q.quantize_activation(node, [0, 1])
    if not found or xs is None:
        return q.keep_float(node)
    inputs = [*xs[0].qlinear_inputs, *xs[1].qlinear_inputs, y_scale, y_zp]
    out = _register_output(q, node, y_scale, y_zp)
    nodes.append(M.make_node("QLinear" + node.op_type, inputs, [out], _quant_name(node),
                             domain=M.MS_DOMAIN, **M.attributes(node)))
    q.emit(node, nodes)


def qlinear_activation(q, node):
    """Relu/Clip after a quantized op disappear: their range was already folded into the
    producer's output parameters (asymmetric activations only). LeakyRelu/Sigmoid become
    com.microsoft QLinearLeakyRelu/QLinearSigmoid."""
    if node.op_type in ("Relu", "Clip"):
        if node.input[0] not in q.quantized or q.options.activation_symmetric:
            return q.keep_float(node)
        q.quantized[node.output[0]] = q.quantized[node.input[0]]
        q.removed_nodes.append(node)
        return
    nnapi = node.op_type == "Sigmoid" and q.options.sigmoid_nnapi
    _qlinear_single_input(q, node, 1 / 256.0 if nnapi else None, 0 if nnapi else None)


def _qlinear_single_input(q, node, fixed_scale=None, fixed_zp=None):
    """op(x) -> com.microsoft QLinear<op>(x, x_scale, x_zp, y_scale, y_zp), same attributes."""
    found, y_scale, y_zp = q.output_params(node.output[0], fixed_scale, fixed_zp)
    xs, nodes = q.quantize_activation(node, [0])
    if not found or xs is None:
        return q.keep_float(node)
    out = _register_output(q, node, y_scale, y_zp)
    nodes.append(M.make_node("QLinear" + node.op_type, [*xs[0].qlinear_inputs, y_scale, y_zp],
                             [out], _quant_name(node), domain=M.MS_DOMAIN, **M.attributes(node)))
    q.emit(node, nodes)


def direct_8bit(q, node):
    """Reshape, Transpose, Squeeze, Unsqueeze, Flatten (and MaxPool, Resize) run on the
    quantized tensor unchanged; the output shares the input's scale and zero point. Only when
    the input is already quantized -- or, with ForceQuantizeNoInputCheck, when input 0 is a float
    initializer (onnxruntime's rule for this format)."""
    if not q.options.force_quantize_no_input_check:
        qv = q.quantized.get(node.input[0])
        if qv is None:
            return q.keep_float(node)
        out = _register_output(q, node, qv.scale_name, qv.zp_name)
        node.input[0] = qv.q_name
        node.output[0] = out
        return q.emit(node, [node])
    if not q.is_float_initializer(node.input[0]):
        return q.keep_float(node)
    xs, nodes = q.quantize_activation(node, [0])
    if xs is None:
        return q.keep_float(node)
    out = _register_output(q, node, xs[0].scale_name, xs[0].zp_name)
    node.input[0] = xs[0].q_name
    node.output[0] = out
    q.emit(node, nodes + [node])


def qmaxpool(q, node):
    if q.opset < 12:        # MaxPool has no 8-bit version before opset 12
        return q.keep_float(node)
    direct_8bit(q, node)


def qresize(q, node):
    if q.opset < 11:
        return q.keep_float(node)
    direct_8bit(q, node)


def gather(q, node):
    """Gather from a constant table: the table is quantized (activation type) and gathered as
    integers; the output shares its parameters."""
    xs, nodes = q.quantize_activation(node, [0])
    if xs is None:
        return q.keep_float(node)
    out = _register_output(q, node, xs[0].scale_name, xs[0].zp_name)
    node.output[0] = out
    node.input[0] = xs[0].q_name
    q.emit(node, nodes + [node])


def argmax(q, node):
    """ArgMax reads the quantized input directly (the order of values is unchanged)."""
    qv = q.quantized.get(node.input[0])
    if qv is None:
        return q.keep_float(node)
    node.input[0] = qv.q_name
    q.emit(node, [node])


def qglobal_average_pool(q, node):
    """GlobalAveragePool -> com.microsoft QLinearGlobalAveragePool (the input's parameters for
    the output when the output was not calibrated)."""
    qv = q.quantized.get(node.input[0])
    if qv is None:
        return q.keep_float(node)
    found, y_scale, y_zp = q.output_params(node.output[0])
    if not found:
        y_scale, y_zp = qv.scale_name, qv.zp_name
    out = _register_output(q, node, y_scale, y_zp)
    q.emit(node, [M.make_node("QLinearGlobalAveragePool",
                              [qv.q_name, qv.scale_name, qv.zp_name, y_scale, y_zp], [out],
                              _quant_name(node), domain=M.MS_DOMAIN,
                              **{**M.attributes(node), "channels_last": 0})])


def qlinear_pool(q, node):
    """AveragePool -> com.microsoft QLinearAveragePool."""
    _qlinear_single_input(q, node)


def split(q, node):
    """Split of a quantized tensor: every output shares the input's parameters (outputs are
    named ``<output>quantized``, without the underscore, as onnxruntime names them)."""
    xs, nodes = q.quantize_activation(node, [0])
    if xs is None:
        return q.keep_float(node)
    outputs = [_register_output(q, node, xs[0].scale_name, xs[0].zp_name, i, suffix="quantized")
               for i in range(len(node.output))]
    nodes.append(M.make_node(node.op_type, [xs[0].q_name, *node.input[1:]], outputs,
                             _quant_name(node), **M.attributes(node)))
    q.emit(node, nodes)


def pad(q, node):
    """Pad of a quantized tensor: the padding value becomes the quantized value of the float
    one (the zero point for 0)."""
    qv = q.quantized.get(node.input[0])
    if q.opset < 11 or qv is None:
        return q.keep_float(node)
    nodes = []
    if M.attribute(node, "mode", b"constant") == b"constant":
        if len(node.input) > 2 and node.input[2]:
            zp_init, scale_init = q.initializers.get(qv.zp_name), q.initializers.get(qv.scale_name)
            if zp_init is None or scale_init is None:
                return q.keep_float(node)
            const = q.initializers.get(node.input[2])
            if const is not None:
                scale = float(np.ravel(M.initializer_array(scale_init))[0])
                zp = int(np.ravel(M.initializer_array(zp_init))[0])
                value = quantize_with(M.initializer_array(const), q.activation_type,
                                      np.float32(scale), zp)
                q.remove_initializer(const.name)
                q.add_initializer(numpy_helper.from_array(value, node.input[2] + Q))
                node.input[2] = node.input[2] + Q
            else:
                nodes = q.quantize_input_nodes(node, 2, q.activation_type, qv.scale_name,
                                               qv.zp_name, initial_type=scale_init.data_type)
                node.input[2] = nodes[0].output[0]
        elif len(node.input) == 2:
            node.input.append(qv.zp_name)
        else:
            node.input[2] = qv.zp_name
    out = _register_output(q, node, qv.scale_name, qv.zp_name)
    node.input[0] = qv.q_name
    node.output[0] = out
    q.emit(node, nodes + [node])


def qlinear_concat(q, node):
    """Concat -> com.microsoft QLinearConcat(y_scale, y_zp, x0, s0, zp0, x1, s1, zp1, ...)."""
    found, y_scale, y_zp = q.output_params(node.output[0])
    xs, nodes = q.quantize_activation(node, range(len(node.input)))
    if not found or xs is None:
        return q.keep_float(node)
    inputs = [y_scale, y_zp]
    for x in xs:
        inputs.extend(x.qlinear_inputs)
    out = _register_output(q, node, y_scale, y_zp)
    nodes.append(M.make_node("QLinearConcat", inputs, [out], _quant_name(node),
                             domain=M.MS_DOMAIN, **M.attributes(node)))
    q.emit(node, nodes)


def qlinear_softmax(q, node):
    """Softmax -> com.microsoft QLinearSoftmax; the output is in [0, 1], so its scale is fixed
    at 1/256 with zero point 0 (uint8) or -128 (int8)."""
    zp = 0 if q.activation_type == TensorProto.UINT8 else -128
    found, y_scale, y_zp = q.output_params(node.output[0], 1 / 256.0, zp)
    xs, nodes = q.quantize_activation(node, [0])
    if not found or xs is None:
        return q.keep_float(node)
    out = _register_output(q, node, y_scale, y_zp)
    nodes.append(M.make_node("QLinearSoftmax", [*xs[0].qlinear_inputs, y_scale, y_zp],
                             [out], _quant_name(node), domain=M.MS_DOMAIN,
                             **{**M.attributes(node), "opset": q.opset}))
    q.emit(node, nodes)


def qlinear_where(q, node):
    """Where -> com.microsoft QLinearWhere, only with ForceQuantizeNoInputCheck."""
    if not q.options.force_quantize_no_input_check:
        return q.keep_float(node)
    found, y_scale, y_zp = q.output_params(node.output[0])
    xs, nodes = q.quantize_activation(node, [1, 2])
    if not found or xs is None:
        return q.keep_float(node)
    inputs = [node.input[0], *xs[0].qlinear_inputs, *xs[1].qlinear_inputs, y_scale, y_zp]
    out = _register_output(q, node, y_scale, y_zp)
    nodes.append(M.make_node("QLinearWhere", inputs, [out], _quant_name(node),
                             domain=M.MS_DOMAIN, **M.attributes(node)))
    q.emit(node, nodes)


def attention(q, node):
    """com.microsoft Attention (dynamic) -> QAttention with quantized input and weight."""
    if M.attribute(node, "qkv_hidden_sizes") is not None:
        return q.keep_float(node)
    xs, nodes = q.quantize_activation(node, [0])
    ws, w_nodes = q.quantize_weight(node, [1], reduce_range=True, per_channel=True)
    if xs is None or ws is None:
        return q.keep_float(node)
    nodes += w_nodes
    (x, w), (mask, past) = xs + ws, (node.input[i] if len(node.input) > i else "" for i in (3, 4))
    # QAttention(input, weight, bias, input_scale, weight_scale, mask_index, input_zero_point,
    #            weight_zero_point, past)
    inputs = [x.q_name, w.q_name, node.input[2], x.scale_name, w.scale_name, mask, x.zp_name,
              w.zp_name, past]
    nodes.append(M.make_node("QAttention", inputs, list(node.output), _quant_name(node),
                             domain=M.MS_DOMAIN, **M.attributes(node)))
    q.emit(node, nodes)


def embed_layer_norm(q, node):
    """com.microsoft EmbedLayerNormalization -> QEmbedLayerNormalization: the three embedding
    tables, gamma and beta quantized (activation type); ids and mask stay as they are."""
    if len(node.output) > 2:
        return q.keep_float(node)
    xs, nodes = q.quantize_activation(node, [2, 3, 4, 5, 6])
    if xs is None:
        return q.keep_float(node)
    mask = node.input[7] if len(node.input) > 7 else ""
    # the five quantized tensors, the mask, their five scales, their five zero points
    inputs = [node.input[0], node.input[1], *(x.q_name for x in xs), mask,
              *(x.scale_name for x in xs), *(x.zp_name for x in xs)]
    nodes.append(M.make_node("QEmbedLayerNormalization", inputs, list(node.output),
                             _quant_name(node), domain=M.MS_DOMAIN, **M.attributes(node)))
    q.emit(node, nodes)


def lstm(q, node):
    """LSTM (dynamic) -> com.microsoft DynamicQuantizeLSTM: W and R quantized to int8 per
    direction (per gate row with per_channel) and stored transposed ([dirs, in, 4*hidden])."""
    w_name, r_name = node.input[1], node.input[2]
    if not (q.is_float_initializer(w_name) and q.is_float_initializer(r_name)):
        return q.keep_float(node)
    W = M.initializer_array(q.initializers[w_name])
    R = M.initializer_array(q.initializers[r_name])
    if W.ndim != 3 or R.ndim != 3:
        return q.keep_float(node)
    quantized = []
    for name, data in ((w_name, W), (r_name, R)):
        dirs, rows, cols = data.shape
        flat = data.reshape(dirs * rows, cols) if q.per_channel else data
        qv = q.quantize_weight_per_channel(name, TensorProto.INT8, 0, data=flat)
        values = M.initializer_array(q.initializers[qv.q_name]).reshape(dirs, rows, cols)
        q.replace_initializer(numpy_helper.from_array(values.transpose(0, 2, 1), qv.q_name))
        if q.per_channel:
            for param in (qv.zp_name, qv.scale_name):
                q.initializers[param].dims[:] = [dirs, rows]
        quantized.append(qv)
    w, r = quantized
    optional = [node.input[i] if len(node.input) > i else "" for i in range(3, 8)]
    inputs = [node.input[0], w.q_name, r.q_name, *optional, w.scale_name, w.zp_name, r.scale_name,
              r.zp_name]
    attrs = {k: v for k, v in M.attributes(node).items() if k != "layout"}
    nodes = [M.make_node("DynamicQuantizeLSTM", inputs, list(node.output), _quant_name(node),
                         domain=M.MS_DOMAIN, **attrs)]
    dq = q.dequantize_value(node.input[0])
    if dq is not None:
        nodes.append(dq)
    q.emit(node, nodes)


# ---------------------------------------------------------------- the registries

_COMMON = {
    "Gather": Rule(gather, _gather_check),
    "Transpose": Rule(direct_8bit),
    "EmbedLayerNormalization": Rule(embed_layer_norm, _node_check),
}

#: Dynamic quantization (onnxruntime's IntegerOpsRegistry).
INTEGER_OPS = {
    "Conv": Rule(conv_integer),
    "MatMul": Rule(matmul_integer, _matmul_check),
    "Attention": Rule(attention, _node_check),
    "LSTM": Rule(lstm),
    **_COMMON,
}

#: Static QOperator format (onnxruntime's QLinearOpsRegistry).
QLINEAR_OPS = {
    "ArgMax": Rule(argmax),
    "Conv": Rule(qlinear_conv),
    "Gemm": Rule(qgemm, _matmul_check),
    "MatMul": Rule(qlinear_matmul, _matmul_check),
    "Add": Rule(qlinear_binary),
    "Mul": Rule(qlinear_binary),
    "Relu": Rule(qlinear_activation),
    "Clip": Rule(qlinear_activation),
    "LeakyRelu": Rule(qlinear_activation),
    "Sigmoid": Rule(qlinear_activation),
    "MaxPool": Rule(qmaxpool),
    "GlobalAveragePool": Rule(qglobal_average_pool),
    "Split": Rule(split),
    "Pad": Rule(pad),
    "Reshape": Rule(direct_8bit),
    "Squeeze": Rule(direct_8bit),
    "Unsqueeze": Rule(direct_8bit),
    "Flatten": Rule(direct_8bit),
    "Resize": Rule(qresize),
    "AveragePool": Rule(qlinear_pool),
    "Concat": Rule(qlinear_concat),
    "Softmax": Rule(qlinear_softmax),
    "Where": Rule(qlinear_where, _node_check),
    **_COMMON,
}
