"""Loading a model and planning its graphs, one module per job:

- :mod:`refrt.graph.load`: a path, bytes or ModelProto -> the proto, its folder, and the weights
  read beside the protobuf;
- :mod:`refrt.graph.ort_format`: an ORT format model (``.ort``, FlatBuffers) -> the same proto;
- :mod:`refrt.graph.plan`: a graph -> a :class:`Plan` (nodes in topological order with their
  resolved ops, liveness, fused chains), subgraphs and function calls planned alike;
- :mod:`refrt.graph.functions`: a node that calls a function -> the plain graph to plan.
"""

from .functions import function_graph
from .load import load_model
from .plan import Plan, PlanContext, Step, Subgraph, build_plan, free_names, opset_map

__all__ = ["Plan", "PlanContext", "Step", "Subgraph", "build_plan", "free_names",
           "function_graph", "load_model", "opset_map"]
