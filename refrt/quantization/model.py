"""Small helpers for reading and rewriting a ModelProto during quantization.

The rewriters keep onnxruntime's names for everything they add, and save the nodes in the order
onnxruntime's quantizer does (:func:`sort_nodes`), so a model quantized by refrt and one quantized
by onnxruntime can be compared node by node.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from ..errors import ModelError
from ..registry import is_default_domain

FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)
MS_DOMAIN = "com.microsoft"

# Names onnxruntime gives to what it adds; refrt uses the same.
QUANTIZED_SUFFIX = "_quantized"                  # quantized initializer / QOperator tensor
Q_NODE_SUFFIX = "_QuantizeLinear"                # QuantizeLinear node
Q_INPUT_SUFFIX = "_QuantizeLinear_Input"         # a graph output's tensor before its Q
Q_OUTPUT_SUFFIX = "_QuantizeLinear_Output"       # QuantizeLinear output (QDQ)
DQ_NODE_SUFFIX = "_DequantizeLinear"             # DequantizeLinear node
DQ_OUTPUT_SUFFIX = "_DequantizeLinear_Output"    # DequantizeLinear output (QDQ)


def load(model, load_external_data: bool = True) -> onnx.ModelProto:
    """A private copy of ``model`` (path or ModelProto), external data loaded; a file that is not
    an ONNX model raises ModelError."""
    if isinstance(model, onnx.ModelProto):
        return copy.deepcopy(model)
    path = os.fspath(model)
    try:
        proto = onnx.load(path, load_external_data=load_external_data)
    except DecodeError as e:
        raise ModelError(f"{path!r}: not a valid ONNX model (malformed or truncated): {e}") from e
    except OSError as e:
        raise ModelError(f"cannot read model file {path!r}: {e.strerror or e}") from e
    if not proto.HasField("graph"):
        raise ModelError(f"{path!r}: not an ONNX model (it has no graph)")
    return proto


def infer_shapes(model: onnx.ModelProto, inplace: bool = False) -> onnx.ModelProto:
    """The model with ONNX shape inference's value_info (a copy unless ``inplace``).

    Inference runs on a light copy whose large float initializers keep only their type and dims
    (marked as external data): shapes never depend on weight values, and serializing the
    weights for the inference engine would cost more than the inference itself."""
    light = onnx.ModelProto()
    light.CopyFrom(_without_initializers(model))
    for t in model.graph.initializer:
        if t.data_type in FLOAT_TYPES and int(np.prod(t.dims)) > 1024:
            stub = light.graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
            stub.data_location = TensorProto.EXTERNAL
            stub.external_data.add(key="location", value="refrt-shape-inference")
        else:
            light.graph.initializer.append(t)
    inferred = onnx.shape_inference.infer_shapes(light)
    result = model if inplace else copy.deepcopy(model)
    result.graph.ClearField("value_info")
    result.graph.value_info.extend(inferred.graph.value_info)
    return result


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` without its top-level initializers (which can be gigabytes)."""
    shell = onnx.ModelProto()
    _copy_fields(model, shell, skip="graph")
    _copy_fields(model.graph, shell.graph, skip="initializer")
    return shell


def _copy_fields(source, target, skip: str) -> None:
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        repeated = getattr(field, "is_repeated", None)       # protobuf >= 6; else the label
        if repeated is None:
            repeated = field.label == field.LABEL_REPEATED
        if repeated or field.message_type is not None:
            getattr(target, field.name).MergeFrom(value)
        else:
            setattr(target, field.name, value)


def opset_version(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if is_default_domain(o.domain)]
    if len(versions) != 1:
        raise ValueError("the model must import the default ONNX domain exactly once")
    return versions[0]


def set_opset(model: onnx.ModelProto, domain: str, version: int) -> None:
    for o in model.opset_import:
        if o.domain == domain:
            o.version = version
            return
    model.opset_import.append(helper.make_opsetid(domain, version))


def value_types(model: onnx.ModelProto) -> dict:
    """tensor name -> TypeProto from value_info, graph outputs and inputs (inputs win)."""
    types = {vi.name: vi.type for vi in model.graph.value_info}
    types.update({vi.name: vi.type for vi in model.graph.output})
    types.update({vi.name: vi.type for vi in model.graph.input})
    return types


def elem_type(type_proto) -> int | None:
    if type_proto is not None and type_proto.HasField("tensor_type"):
        return type_proto.tensor_type.elem_type
    return None


def attributes(node) -> dict:
    """A node's attributes as make_node keyword arguments."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def attribute(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def make_node(op_type, inputs, outputs, name="", domain=None, **attrs):
    """helper.make_node, dropping attributes whose value is None (as onnxruntime's tool does)."""
    attrs = {k: v for k, v in attrs.items() if v is not None}
    return helper.make_node(op_type, list(inputs), list(outputs), name=name,
                            domain=domain or None, **attrs)


def scalar_initializer(name: str, elem: int, value) -> TensorProto:
    """A 0-d initializer (onnx packs int4 values itself)."""
    return helper.make_tensor(name, elem, [], [value])


def params_initializer(name: str, elem: int, values) -> TensorProto:
    """A scale or zero-point initializer (values listed, shape kept; int4 packed by onnx)."""
    values = np.asarray(values)
    return helper.make_tensor(name, elem, list(values.shape), values.reshape(-1).tolist())


def data_initializer(name: str, elem: int, values) -> TensorProto:
    """A quantized tensor stored as raw bytes (int4/uint4 packed two per byte)."""
    values = np.asarray(values)
    if elem in (TensorProto.INT4, TensorProto.UINT4):
        from .params import pack_int4
        return helper.make_tensor(name, elem, list(values.shape), pack_int4(values), raw=True)
    return numpy_helper.from_array(values.astype(helper.tensor_dtype_to_np_dtype(elem)), name)


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Put the nodes in the order onnxruntime's quantizer saves them: Kahn's algorithm where the
    nodes without inputs come first (in file order), then the nodes made ready by each graph input
    or initializer taken in sorted name order, then breadth first from there."""
    nodes = list(graph.node)
    pending = [sum(1 for name in node.input if name) for node in nodes]
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        if pending[i]:
            for name in node.input:
                if name:
                    consumers.setdefault(name, []).append(i)
    order = [i for i, count in enumerate(pending) if count == 0]

    def release(name):
        for i in consumers.get(name, ()):
            pending[i] -= 1
            if pending[i] == 0:
                order.append(i)

    sources = {t.name for t in graph.initializer} | {vi.name for vi in graph.input}
    for name in sorted(sources):
        release(name)
    k = 0
    while k < len(order):
        for name in nodes[order[k]].output:
            release(name)
        k += 1
    if len(order) != len(nodes):
        stuck = [nodes[i].name or nodes[i].op_type for i in range(len(nodes)) if pending[i]]
        raise ValueError(f"the quantized graph is not a DAG or reads undefined tensors "
                         f"(nodes never ready: {stuck[:5]})")
    graph.ClearField("node")
    graph.node.extend(nodes[i] for i in order)


def remove_unused_initializers(graph: onnx.GraphProto) -> None:
    """Drop initializers (and their graph inputs) that no node, subgraph or output reads."""
    used = {g.name for g in graph.output}
    for node in graph.node:
        used.update(node.input)
        used.update(_subgraph_reads(node))
    unused = [t for t in graph.initializer if t.name not in used]
    names = {t.name for t in unused}
    for t in unused:
        graph.initializer.remove(t)
    for vi in [vi for vi in graph.input if vi.name in names]:
        graph.input.remove(vi)


def _subgraph_reads(node) -> set:
    reads = set()
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in graphs:
            for n in g.node:
                reads.update(n.input)
                reads.update(_subgraph_reads(n))
    return reads


def prune_value_info(graph: onnx.GraphProto) -> None:
    """Keep value_info only for tensors some node still produces."""
    produced = {o for n in graph.node for o in n.output}
    keep = [vi for vi in graph.value_info if vi.name in produced]
    graph.ClearField("value_info")
    graph.value_info.extend(keep)


def save(model: onnx.ModelProto, path, use_external_data_format: bool = False) -> None:
    """Save with the nodes in onnxruntime's order; external data for models over 2 GB."""
    sort_nodes(model.graph)
    path = os.fspath(path)
    if use_external_data_format or model_size(model) >= 2**31 - 1:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data", convert_attribute=True)
    else:
        onnx.save_model(model, path)


def initializer_array(tensor: TensorProto) -> np.ndarray:
    return numpy_helper.to_array(tensor)


def model_size(model: onnx.ModelProto) -> int:
    """Bytes of the serialized model (initializer data included)."""
    return model.ByteSize()
