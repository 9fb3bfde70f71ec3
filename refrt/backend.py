"""``onnx.backend.base.Backend`` for refrt, as onnxruntime ships ``onnxruntime.backend``:

    import refrt.backend as backend
    rep = backend.prepare(model)
    outputs = rep.run([x])
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from .errors import RefrtError
from .session import InferenceSession
from .types import type_proto_of


class RefrtBackendRep(BackendRep):
    def __init__(self, session: InferenceSession):
        self.session = session

    def run(self, inputs, **kwargs):
        names = [i.name for i in self.session.get_inputs()]
        if isinstance(inputs, dict):
            feeds = inputs
        elif isinstance(inputs, (list, tuple)):
            feeds = dict(zip(names, inputs))
        else:
            feeds = {names[0]: inputs}
        return tuple(self.session.run(None, feeds))


class RefrtBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        try:
            InferenceSession(model)
        except RefrtError:
            return False
        return cls.supports_device(device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper().startswith("CPU")

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> RefrtBackendRep:
        if not cls.supports_device(device):
            raise ValueError(f"refrt runs on the CPU only, not {device!r}")
        return RefrtBackendRep(InferenceSession(model, **kwargs))

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        """Run one NodeProto on ``inputs`` (a list in the node's input order)."""
        opset = kwargs.pop("opset_version", onnx.defs.onnx_opset_version())
        names = [n for n in node.input if n]
        graph_inputs = [onnx.helper.make_value_info(n, type_proto_of(np.asarray(x)
                        if not isinstance(x, list) else x)) for n, x in zip(names, inputs)]
        graph_outputs = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o]
        graph = onnx.helper.make_graph([node], "run_node", graph_inputs, graph_outputs)
        opsets = [onnx.helper.make_opsetid("", opset)]
        if node.domain:
            opsets.append(onnx.helper.make_opsetid(node.domain, 1))
        model = onnx.helper.make_model(graph, opset_imports=opsets)
        return cls.prepare(model, device, **kwargs).run(list(inputs))


prepare = RefrtBackend.prepare
run_model = RefrtBackend.run_model
run_node = RefrtBackend.run_node
supports_device = RefrtBackend.supports_device
is_compatible = RefrtBackend.is_compatible
