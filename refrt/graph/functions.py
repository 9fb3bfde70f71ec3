"""Function inlining: a node that calls a function (a model-local FunctionProto, or the body an
ONNX schema defines for an op refrt does not implement) becomes a plain graph, attributes
substituted, that the planner plans like any other (:mod:`refrt.graph.plan`).
"""

from __future__ import annotations

import onnx

from ..errors import ModelError, node_label
from ..registry import proto_domain


def _substitute(nodes, attrs: dict) -> list:
    """Copy a function body, replacing attributes that refer to the caller's (ref_attr_name)."""
    out = []
    for node in nodes:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.attribute[:]
        for a in node.attribute:
            if a.ref_attr_name:
                if a.ref_attr_name in attrs:
                    b = onnx.AttributeProto()
                    b.CopyFrom(attrs[a.ref_attr_name])
                    b.name = a.name
                    new.attribute.append(b)
                # an unset reference means the attribute is absent
                continue
            b = new.attribute.add()
            b.CopyFrom(a)
            if a.type == onnx.AttributeProto.GRAPH:
                g = onnx.GraphProto()
                g.CopyFrom(a.g)
                del g.node[:]
                g.node.extend(_substitute(a.g.node, attrs))
                b.g.CopyFrom(g)
        out.append(new)
    return out


def function_graph(fproto, node) -> onnx.GraphProto:
    """A FunctionProto called by ``node`` as a plain graph, attributes substituted."""
    attrs = {a.name: a for a in fproto.attribute_proto}          # declared defaults
    attrs.update({a.name: a for a in node.attribute})
    g = onnx.GraphProto()
    g.name = fproto.name
    g.node.extend(_substitute(fproto.node, attrs))
    g.input.extend(onnx.helper.make_empty_tensor_value_info(n) for n in fproto.input)
    # only the outputs the caller asks for: a body may skip computing the others
    g.output.extend(onnx.helper.make_empty_tensor_value_info(n)
                    for n, want in zip(fproto.output, node.output) if want)
    return g


def check_attributes(node, fproto) -> None:
    """The node sets only attributes the function declares."""
    known = set(fproto.attribute) | {a.name for a in fproto.attribute_proto}
    for a in node.attribute:
        if a.name not in known:
            raise ModelError(f"node {node_label(node)!r} ({node.op_type}): unknown attribute "
                             f"{a.name!r}; function {fproto.name!r} takes: {sorted(known) or 'none'}")


def schema_of(node, domain: str, opset: int):
    """The ONNX schema of the node's op at ``opset``, or None."""
    try:
        return onnx.defs.get_schema(node.op_type, opset, proto_domain(domain))
    except Exception:
        return None


def schema_body(node, schema, opset: int) -> onnx.FunctionProto:
    """The function body of a schema with ``has_function``, as of ``opset``."""
    try:   # the body as of the model's opset (bytes), else the schema's default body
        data = schema.get_function_with_opset_version(opset)
    except Exception:
        data = b""
    fproto = _as_function(data) if data else schema.function_body
    return _with_signature(fproto, schema, node)


def context_dependent_body(node, schema, opset: int, input_types: list) -> onnx.FunctionProto:
    """The body of a schema with ``has_context_dependent_function`` for inputs of
    ``input_types`` (serialized TypeProtos of the inputs present)."""
    data = schema.get_context_dependent_function_with_opset_version(
        opset, node.SerializeToString(), input_types)
    return _with_signature(_as_function(data), schema, node)


def _as_function(data) -> onnx.FunctionProto:
    f = onnx.FunctionProto()
    f.ParseFromString(data if isinstance(data, bytes) else data.encode())
    return f


def _with_signature(fproto, schema, node):
    """Schema function bodies declare their formal attributes by name only; the defaults live in
    the schema. Give every attribute with a schema default that default."""
    f = onnx.FunctionProto()
    f.CopyFrom(fproto)
    with_default = {a.name for a in f.attribute_proto}
    names = list(f.attribute)
    del f.attribute[:]
    for name in dict.fromkeys(names + list(schema.attributes)):
        if name in with_default:
            continue
        attr = schema.attributes.get(name)
        if attr is not None and attr.default_value.type != onnx.AttributeProto.UNDEFINED:
            d = onnx.AttributeProto()
            d.CopyFrom(attr.default_value)
            d.name = name
            f.attribute_proto.append(d)
        else:
            f.attribute.append(name)
    return f
