"""Run one node of a model alone in refrt, on input values of our choosing.

Replaying a node on the *reference's* inputs separates the error a node creates from the error it
only carries (torch.ao's "shadow" idea): if refrt's node, fed what the reference's previous nodes
produced, gives the reference's output, the node is not where the difference starts.

    outputs = replay_node(model, node, [x, w, b], numerics="ort")
"""

from __future__ import annotations

import numpy as np
from onnx import ModelProto, helper, numpy_helper

from ..types import type_proto_of

__all__ = ["replay_node", "ReplayError"]


class ReplayError(Exception):
    """The node cannot run alone (a subgraph that reads outer values, a missing input, ...)."""


def one_node_model(model: ModelProto, node, inputs: list) -> ModelProto:
    """A model holding ``node`` alone, its inputs graph inputs typed from ``inputs`` (None for an
    omitted optional input), the model's opsets and local functions. Inputs that are
    initializers of ``model`` stay initializers (with the value given): runtimes treat constant
    weights differently (onnxruntime packs a constant GEMM operand, which changes its order of
    additions), so the node runs as it ran in the model."""
    constants = {t.name for t in model.graph.initializer}
    graph_inputs, initializers, seen = [], [], set()
    for name, value in zip(node.input, inputs):
        if not name or name in seen:
            continue
        seen.add(name)
        if value is None:
            raise ReplayError(f"no value for input {name!r}")
        if name in constants and isinstance(value, np.ndarray):
            initializers.append(numpy_helper.from_array(value, name))
        else:
            graph_inputs.append(helper.make_value_info(name, type_proto_of(value)))
    outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    graph = helper.make_graph([node], "replay", graph_inputs, outputs, initializers)
    one = helper.make_model(graph, opset_imports=list(model.opset_import))
    one.ir_version = model.ir_version
    one.functions.extend(model.functions)
    return one


def replay_node(model: ModelProto, node, inputs: list, **options) -> list:
    """``node``'s outputs computed by refrt alone from ``inputs`` (values in the node's input
    order; duplicates of one name must be the same value), with session ``options``."""
    from ..errors import RefrtError
    from ..session import InferenceSession

    one = one_node_model(model, node, inputs)
    constants = {t.name for t in one.graph.initializer}
    feeds = {name: value for name, value in zip(node.input, inputs) if name and name not in constants}
    try:
        sess = InferenceSession(one, **options)
        outs = sess.run(None, feeds)
    except RefrtError as e:
        raise ReplayError(str(e)) from e
    names = [o for o in node.output if o]
    by_name = dict(zip(names, outs))
    return [by_name.get(o) if o else None for o in node.output]


def cast_floats(inputs: list, source, target) -> list:
    """``inputs`` with every array of dtype ``source`` converted to ``target``."""
    return [v.astype(target) if isinstance(v, np.ndarray) and v.dtype == source else v for v in inputs]
