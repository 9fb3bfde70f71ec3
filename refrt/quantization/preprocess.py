"""Pre-processing before quantization (onnxruntime's ``quant_pre_process``), readable.

Three steps, each optional:

1. **Fold constants**: a node whose inputs are all constants (initializers or Constant nodes) is
   computed once with refrt and replaced by an initializer holding its result.
2. **Fold BatchNormalization into Conv**: ``BN(Conv(x, W, b))`` with constant parameters becomes
   ``Conv(x, W * k, (b - mean) * k + beta)`` with ``k = gamma / sqrt(var + eps)`` per channel,
   computed in float64. Fewer tensors to quantize, and the folded weight is what gets quantized.
3. **Shape inference** (``onnx.shape_inference``): the quantizer only quantizes tensors whose
   type it knows.

The model is tagged ``onnx.quant.pre_process`` as onnxruntime's tool tags it. Steps 1 and 2
replace onnxruntime's graph optimizer (``skip_optimization``); refrt has no symbolic shape
inference (``skip_symbolic_shape`` is accepted and ignored).
"""

from __future__ import annotations

import copy
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..registry import is_default_domain
from . import model as M

_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli", "If", "Loop", "Scan", "QuantizeLinear",
               "DequantizeLinear", "DynamicQuantizeLinear"}


def quant_pre_process(input_model=None, output_model_path=None, skip_optimization: bool = False,
                      skip_onnx_shape: bool = False, skip_symbolic_shape: bool = False,
                      auto_merge: bool = False, int_max: int = 2**31 - 1,
                      guess_output_rank: bool = False, verbose: int = 0,
                      save_as_external_data: bool = False, all_tensors_to_one_file: bool = False,
                      external_data_location: str | None = None,
                      external_data_size_threshold: int = 1024, **deprecated_kwargs):
    """Fold constants and BatchNormalization, infer shapes, save to ``output_model_path``.
    Returns the processed ModelProto."""
    if input_model is None:
        input_model = deprecated_kwargs.pop("input_model_path", None)
    if input_model is None or output_model_path is None:
        raise ValueError("quant_pre_process needs input_model and output_model_path")
    model = M.load(input_model)
    if not skip_optimization:
        fold_constants(model)
        fold_batch_norm_into_conv(model)
    if not skip_onnx_shape:
        model = M.infer_shapes(model, inplace=True)
    props = {p.key: p.value for p in model.metadata_props}
    props["onnx.quant.pre_process"] = "onnxruntime.quant"
    helper.set_model_props(model, props)
    path = os.fspath(output_model_path)
    if save_as_external_data:
        onnx.save_model(model, path, save_as_external_data=True,
                        all_tensors_to_one_file=all_tensors_to_one_file,
                        location=external_data_location,
                        size_threshold=external_data_size_threshold)
    else:
        onnx.save_model(model, path)
    return model


def fold_constants(model: onnx.ModelProto) -> int:
    """Replace constant subexpressions by initializers; returns the number of nodes folded."""
    from ..session import InferenceSession

    graph = model.graph
    constants = {t.name for t in graph.initializer} - {vi.name for vi in graph.input}
    values = {}
    folded = []
    for node in graph.node:
        if node.op_type in _NOT_FOLDED or not is_default_domain(node.domain):
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):
            continue
        if not all(not name or name in constants for name in node.input):
            continue
        if node.op_type != "Constant" and not node.input:
            continue
        inputs = [name for name in node.input if name]
        inits = [numpy_helper.from_array(_value(model, values, name), name) for name in inputs]
        outputs = [helper.make_value_info(o, onnx.TypeProto()) for o in node.output if o]
        g = helper.make_graph([copy.deepcopy(node)], "fold", [], outputs, inits)
        one = helper.make_model(g, opset_imports=list(model.opset_import))
        one.ir_version = model.ir_version
        try:
            results = InferenceSession(one).run(None, {})
        except Exception:       # an op refrt cannot run: leave the node alone
            continue
        for name, value in zip([o for o in node.output if o], results):
            if not isinstance(value, np.ndarray):
                break
            values[name] = value
            constants.add(name)
        else:
            folded.append(node)
    if not folded:
        return 0
    used = {name for node in graph.node if node not in folded for name in node.input}
    used |= {vi.name for vi in graph.output}
    for node in folded:
        for name in node.output:
            if name in used:
                graph.initializer.append(numpy_helper.from_array(values[name], name))
        graph.node.remove(node)
    M.remove_unused_initializers(graph)
    return len(folded)


def _value(model, values, name):
    if name in values:
        return values[name]
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    raise KeyError(name)


def fold_batch_norm_into_conv(model: onnx.ModelProto) -> int:
    """Fold inference-mode BatchNormalization into the Conv feeding it (constant parameters,
    the Conv output used by nothing else); returns the number folded."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    outputs = {vi.name for vi in graph.output}
    producer = {o: n for n in graph.node for o in n.output}
    folded = 0
    for bn in list(graph.node):
        if bn.op_type != "BatchNormalization" or len([o for o in bn.output if o]) != 1:
            continue
        conv = producer.get(bn.input[0])
        if (conv is None or conv.op_type != "Conv" or uses.get(bn.input[0]) != 1
                or bn.input[0] in outputs or conv.input[1] not in inits
                or not all(name in inits for name in bn.input[1:5])
                or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits)):
            continue
        if M.attribute(bn, "training_mode", 0):
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64)
                                  for n in bn.input[1:5])
        eps = M.attribute(bn, "epsilon", 1e-5)
        w_tensor = inits[conv.input[1]]
        w = numpy_helper.to_array(w_tensor)
        k = gamma / np.sqrt(var + eps)
        has_bias = len(conv.input) > 2 and conv.input[2]
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_bias else 0.0
        new_w = (w.astype(np.float64) * k.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
        new_b = ((b - mean) * k + beta).astype(w.dtype)
        w_name = conv.input[1] + "_bn_folded"
        b_name = (conv.input[2] if has_bias else conv.output[0]) + "_bn_folded"
        graph.initializer.append(numpy_helper.from_array(new_w, w_name))
        graph.initializer.append(numpy_helper.from_array(new_b, b_name))
        conv.input[1] = w_name
        if has_bias:
            conv.input[2] = b_name
        else:
            conv.input.append(b_name)
        conv.output[0] = bn.output[0]
        graph.node.remove(bn)
        folded += 1
    if folded:
        M.remove_unused_initializers(graph)
    return folded
