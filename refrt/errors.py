"""Typed errors. Every message names the node, op or input at fault and what was expected.

    RefrtError
    ├── ModelError          the model itself is malformed (bad bytes, cycles, duplicate names,
    │   │                   missing initializer, unknown attribute, unsafe external data path)
    │   ├── UnsupportedOpError   no implementation for (domain, op_type, opset)
    │   └── OperatorNotInConfigError   a restricted session's config does not list the op
    │       └── TypeNotInConfigError   ... or the element type at one of its inputs/outputs
    ├── InputError          the caller's feeds: missing/unknown name, wrong dtype, rank or dim
    ├── RunAborted          RunOptions.terminate was set, or the run's time limit passed
    ├── NodeError           an op failed while running; wraps the cause, names node and op
    └── ExplainError        ``refrt explain`` was asked for a node or element the model lacks
"""

from __future__ import annotations


class RefrtError(Exception):
    """Base class of every error refrt raises on purpose."""


class ModelError(RefrtError, ValueError):
    """The model is malformed or uses something refrt refuses to run."""


class UnsupportedOpError(ModelError, NotImplementedError):
    """No implementation for an operator at the model's opset."""

    def __init__(self, op_type: str, domain: str, opset: int | None, available: list[int],
                 node: str = ""):
        self.op_type, self.domain, self.opset, self.available = op_type, domain, opset, available
        where = f" (node {node!r})" if node else ""
        dom = domain or "ai.onnx"
        if available:
            have = f"refrt implements versions {', '.join(map(str, available))}"
        else:
            have = "refrt has no implementation of it"
        super().__init__(
            f"unsupported operator {dom}.{op_type}{where} at model opset {opset} for domain "
            f"{dom!r}: {have}")


class OperatorNotInConfigError(ModelError):
    """A session restricted to a reduced-operator config (``required_operators=``) met a node
    whose op the config does not list: names the node, op, domain, the model's opset for the
    domain and the op's since-version there (the version a config line names)."""

    def __init__(self, node: str, op_type: str, domain: str, opset: int, since: int,
                 listed: list | None = None, config: str = "", message: str | None = None):
        self.node, self.op_type, self.domain, self.opset, self.since = node, op_type, domain, opset, since
        self.config = config
        if message is None:
            where = f" ({config})" if config else ""
            also = (f"; it lists {op_type} at version(s) {', '.join(map(str, listed))}" if listed
                    else "")
            message = (f"node {node!r}: operator {domain}.{op_type} (opset {opset} of {domain!r}, "
                       f"since-version {since}) is not in the required operators config{where}; "
                       f"the config needs the line '{domain};{since};{op_type}'{also}")
        super().__init__(message)


class TypeNotInConfigError(OperatorNotInConfigError):
    """A restricted session's config lists the op with its types, but not the element type the
    node has at one of its inputs or outputs."""

    def __init__(self, node: str, op_type: str, domain: str, opset: int, since: int, where: str,
                 type_name: str, allowed: list, config: str = ""):
        self.where, self.type_name, self.allowed = where, type_name, allowed
        src = f" ({config})" if config else ""
        super().__init__(
            node, op_type, domain, opset, since, config=config,
            message=(f"node {node!r}: operator {domain}.{op_type} (opset {opset} of {domain!r}, "
                     f"since-version {since}) has type {type_name} at {where}, which the required "
                     f"operators config{src} does not list (it lists {', '.join(allowed) or 'none'})"))


class InputError(RefrtError, ValueError):
    """A feed does not fit the model's declared inputs."""


class RunAborted(RefrtError, RuntimeError):
    """A run stopped on request (``RunOptions.terminate``) or at its time limit; names the node
    that was about to run."""


class NodeError(RefrtError, RuntimeError):
    """An operator raised while running; the original exception is the __cause__."""

    def __init__(self, node_name: str, op_type: str, message: str):
        self.node_name, self.op_type = node_name, op_type
        super().__init__(f"node {node_name!r} ({op_type}): {message}")


class ExplainError(RefrtError, ValueError):
    """``refrt.explain`` names a node the model does not have, or an element outside the node's
    output (the message says which node and shape); ``node`` is the name asked for."""

    def __init__(self, message: str, node: str = ""):
        self.node = node
        super().__init__(message)


def node_error(label: str, op_type: str, error: Exception) -> NodeError:
    """The NodeError an op's exception becomes (raise it ``from`` the exception): a refrt error
    keeps its message, any other is prefixed with its type's name."""
    message = str(error) if isinstance(error, RefrtError) else f"{type(error).__name__}: {error}"
    return NodeError(label, op_type, message)


def node_label(node) -> str:
    """A readable name for a NodeProto: its name, else its op type and first output."""
    if node.name:
        return node.name
    first = next((o for o in node.output if o), "?")
    return f"{node.op_type}->{first}"
