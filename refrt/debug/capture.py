"""refrt's side: run a model with a hook and see every node's outputs as they are produced.

A session with a hook runs every node on its own (no fused chains), so each node output exists
and is exactly what the node computes. Nodes inside subgraphs (If, Loop, Scan bodies) are not
reported: only the main graph's nodes, which is what a reference can expose too.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AS_WRITTEN", "MainGraphHook", "capture_refrt", "main_graph_index"]

# The debugger looks at the model as written: every one of its nodes runs and has its outputs.
# ORT_ENABLE_BASIC keeps every node (refrt's bit-identical fusions are off while hooks watch);
# above it onnxruntime's QDQ fusions would replace DequantizeLinear -> op -> QuantizeLinear
# units by single quantized ops. What those fusions change is measured by comparing against
# "onnxruntime-optimized" instead.
AS_WRITTEN = {"graph_optimization_level": 1}


def main_graph_index(model) -> dict:
    """(op_type, outputs) of each main-graph node -> its index in ``model.graph.node``."""
    return {(n.op_type, tuple(n.output)): i for i, n in enumerate(model.graph.node)}


class MainGraphHook:
    """Calls ``on_output(index, node, name, value, inputs)`` for each output of each main-graph
    node (``index`` in the model's node list, ``inputs`` the node's input values)."""

    def __init__(self, model, on_output):
        self._index = main_graph_index(model)
        self._seen: set = set()
        self._on_output = on_output

    def on_node(self, node, inputs, outputs):
        i = self._index.get((node.op_type, tuple(node.output)))
        if i is None or i in self._seen:
            return
        self._seen.add(i)
        for name, value in zip(node.output, outputs):
            if name:
                self._on_output(i, node, name, value, inputs)


def capture_refrt(model, feeds: dict, **options) -> dict:
    """Every main-graph node output of ``model`` run by refrt with session ``options``."""
    from ..session import InferenceSession

    values = {}
    sess = InferenceSession(model, **{**AS_WRITTEN, **options})
    sess.add_hook(MainGraphHook(model, lambda i, node, name, value, inputs: values.__setitem__(
        name, value.copy() if isinstance(value, np.ndarray) else value)).on_node)
    sess.run(None, feeds)
    return values
