"""Small model builders shared by the tests."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def vi(name, elem=F, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes, inputs, outputs, initializers=(), opset=17, functions=(), extra_opsets=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    return helper.make_model(g, opset_imports=ops, functions=list(functions))


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def one_node(op_type, inputs, attrs=None, *, n_outputs=1, const=(), opset=17,
             domain="com.microsoft", out_types=None):
    """A one-node model and its feeds: ``inputs`` are arrays (None = an omitted optional input);
    the indices in ``const`` become initializers, the rest graph inputs; ``out_types`` (element
    types or None) declares the outputs' types where a test needs them."""
    names, infos, feeds, inits = [], [], {}, []
    for i, v in enumerate(inputs):
        if v is None:
            names.append("")
            continue
        name, v = f"i{i}", np.asarray(v)
        names.append(name)
        if i in const:
            inits.append(numpy_helper.from_array(v, name))
        else:
            infos.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape))
            feeds[name] = v
    while names and names[-1] == "":
        names.pop()
    outs = [f"o{i}" for i in range(n_outputs)]
    out_infos = [helper.make_empty_tensor_value_info(o) if not out_types or out_types[i] is None
                 else helper.make_tensor_value_info(o, out_types[i], None)
                 for i, o in enumerate(outs)]
    node = helper.make_node(op_type, names, outs, domain=domain, **(attrs or {}))
    graph = helper.make_graph([node], "g", infos, out_infos, initializer=inits)
    imports = [helper.make_opsetid("", opset)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    return model, feeds


DQL_KINDS = ("random", "zero", "positive", "negative", "ties")


def dql_input(rng, shape, kind, scales=(1e-3, 1.0, 50.0), offset=0.25):
    """float32 input for DynamicQuantizeLinear tests: normal values at one of ``scales``, then by
    ``kind``: all zero, all positive or all negative (at least ``offset`` from 0), or halves
    (rounding ties)."""
    x = np.asarray(rng.standard_normal(shape) * rng.choice(list(scales)), dtype=np.float32)
    if kind == "zero":
        x[...] = 0
    elif kind == "positive":
        x = np.abs(x) + np.float32(offset)
    elif kind == "negative":
        x = -np.abs(x) - np.float32(offset)
    elif kind == "ties" and x.size:
        x = (rng.integers(-255, 256, x.shape) * np.float32(0.5)).astype(np.float32)
    return x
