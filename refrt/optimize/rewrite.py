"""A model's main graph opened for rewriting, and the shapes its values take when it runs.

The transformer optimizer (``transformer.py``) reads a graph the way onnxruntime's fusion scripts
(``onnxruntime/transformers/fusion_*.py``) do: start at one node, walk up its inputs checking
op types ("input 0 comes from a Transpose, whose input 0 comes from a Reshape, ..."), look at
the constants met on the way, and when everything fits, remove the matched nodes and add the
fused one. :class:`Graph` holds what that needs:

* the nodes in a plain list that rules edit: a new node goes at the end (as onnxruntime's
  ``add_nodes`` puts it) and :meth:`Graph.toposort` restores a runnable order at the end;
* who produces and who reads each value, rebuilt after every edit;
* the constants: initializers that no graph input of the same name can override;
* path matching with the meaning of onnxruntime's ``OnnxModel.match_parent_path``
  (:meth:`Graph.path`).

**Shapes.** Some rules must know that two values have the same shape (SkipLayerNormalization
adds two tensors of one shape), where shapes are symbolic: ``[batch, seq, 768]``. onnxruntime
answers with its symbolic shape inference (sympy expressions, one rule per operator). refrt
*runs the model* instead (:class:`Shapes`): twice, on small made-up inputs, giving every
symbolic input dimension a different size in each run, and it records the shape of every value.
A dimension is recorded as the pair of its sizes in the two runs: ``(2, 3)`` is the batch,
``(64, 64)`` a constant 64. Two values have the same shape when their pairs agree. This needs no
shape rule per operator and sees what the runtime computes, at the price of two small runs
(a model refrt cannot run has no shapes: the rules that need them then leave the graph alone,
as onnxruntime's do when its shape inference fails).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..registry import tensor_to_array

MS = "com.microsoft"
STANDARD_DOMAINS = ("", "ai.onnx", MS)


def is_op(node, op_type: str) -> bool:
    """``node`` runs ``op_type`` of the ONNX or onnxruntime (com.microsoft) domain."""
    return node is not None and node.op_type == op_type and node.domain in STANDARD_DOMAINS


def attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def other_input(node, name: str) -> str | None:
    """The input of a two-input node that is not ``name`` (None unless exactly one is)."""
    if len(node.input) != 2 or (node.input[0] == name) == (node.input[1] == name):
        return None
    return node.input[1] if node.input[0] == name else node.input[0]


def subgraph_reads(node) -> set:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the graph around them."""
    from ..graph import free_names

    names: set = set()
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            names |= free_names(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            names = names.union(*(free_names(g) for g in a.graphs))
    return names


class Graph:
    """The main graph of a model, as a list of nodes that rules edit in place."""

    def __init__(self, model: onnx.ModelProto, blobs: dict | None = None):
        self.model = model
        self.blobs = blobs or {}     # initializers' bytes read beside the proto (load_model)
        g = model.graph
        self.nodes = []
        for n in g.node:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            self.nodes.append(c)
        self.inits = {t.name: t for t in g.initializer}
        self.inputs = {vi.name: vi for vi in g.input}
        self.outputs = [vi.name for vi in g.output]
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self._index = None
        self._suffix: dict = {}
        self._values: dict = {}

    # ---- who produces, who reads
    def changed(self) -> None:
        self._index = None

    def _build_index(self):
        producer, readers = {}, {}
        self._alive = {id(n) for n in self.nodes}
        for n in self.nodes:
            for name in n.output:
                if name:
                    producer[name] = n
            for name in list(n.input) + sorted(subgraph_reads(n)):
                if name:
                    readers.setdefault(name, [])
                    if not any(r is n for r in readers[name]):
                        readers[name].append(n)
        self._index = producer, readers

    def producer(self, name: str):
        if self._index is None:
            self._build_index()
        return self._index[0].get(name)

    def readers(self, name: str) -> list:
        """The nodes reading ``name`` (each once, in list order)."""
        if self._index is None:
            self._build_index()
        return self._index[1].get(name, [])

    def alive(self, node) -> bool:
        """``node`` is still in the graph (not removed by an earlier rewrite)."""
        if self._index is None:
            self._build_index()
        return id(node) in self._alive

    def children(self, node) -> list:
        """The readers of all of ``node``'s outputs."""
        out = []
        for name in node.output:
            out += [r for r in self.readers(name) if not any(r is o for o in out)]
        return out

    def nodes_of(self, op_type: str) -> list:
        return [n for n in self.nodes if is_op(n, op_type)]

    # ---- matching up the inputs
    def parent(self, node, i: int):
        """The node producing input ``i`` of ``node`` (None: no such input, or not a node's)."""
        if i >= len(node.input) or not node.input[i]:
            return None
        return self.producer(node.input[i])

    def match_parent(self, node, op_type: str, i: int | None = None, exclude=()):
        """(parent, input index): the producer of input ``i`` if it runs ``op_type``; with
        ``i=None`` the first input (in input order) whose producer does. (None, None) if none."""
        slots = range(len(node.input)) if i is None else [i]
        for k in slots:
            p = self.parent(node, k)
            if is_op(p, op_type) and not any(p is e for e in exclude):
                return p, k
        return None, None

    def path(self, node, steps, indices: list | None = None):
        """The nodes up a chain of inputs, or None: ``steps`` is ``[(op_type, input index or
        None), ...]`` from ``node`` upwards; ``None`` takes the first input whose producer runs
        that op (and does not try the next one if the chain fails higher up), as onnxruntime's
        ``match_parent_path`` does. ``indices`` (a list) receives the input index taken at each
        step."""
        found, current = [], node
        for op_type, i in steps:
            parent, k = self.match_parent(current, op_type, i)
            if parent is None:
                return None
            if indices is not None:
                indices.append(k)
            found.append(parent)
            current = parent
        return found

    def first_of_paths(self, node, paths):
        """(index of the first of ``paths`` that matches, its nodes), or (-1, None)."""
        for k, steps in enumerate(paths):
            found = self.path(node, steps)
            if found is not None:
                return k, found
        return -1, None

    # ---- constants
    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer no graph input overrides, else None."""
        if not name or name in self.inputs or name not in self.inits:
            return None
        if name not in self._values:
            self._values[name] = tensor_to_array(self.inits[name], self.blobs.get(name))
        return self._values[name]

    def constant_input(self, node):
        """(index, value) of ``node``'s first constant input, or (None, None)."""
        for i, name in enumerate(node.input):
            v = self.constant(name)
            if v is not None:
                return i, v
        return None, None

    def find_constant(self, node, expected: float, delta: float = 1e-6) -> int:
        """The index of ``node``'s first constant input when that is one number within
        ``delta`` of ``expected``, else -1 (onnxruntime's ``find_constant_input``: only the
        first constant input is looked at)."""
        i, v = self.constant_input(node)
        if v is not None and v.size == 1 and abs(float(v.reshape(-1)[0]) - expected) < delta:
            return i
        return -1

    def axes(self, node) -> list | None:
        """The axes of a ReduceMean/Unsqueeze/...: its attribute (older opsets) or its constant
        input 1 (newer ones); None when neither gives them."""
        axes = attr(node, "axes")
        if axes is None and len(node.input) > 1:
            value = self.constant(node.input[1])
            axes = None if value is None else value.reshape(-1).tolist()
        return None if axes is None else list(axes)

    def add_initializer(self, name: str, value: np.ndarray) -> str:
        self.inits[name] = numpy_helper.from_array(value, name)
        self._values[name] = value
        return name

    # ---- editing
    def fresh_name(self, prefix: str) -> str:
        """``prefix_0``, ``prefix_1``, ...: the first number no node name uses (onnxruntime's
        ``create_node_name``)."""
        prefix = prefix if prefix.endswith("_") else prefix + "_"
        if prefix not in self._suffix:
            taken = [n.name[len(prefix):] for n in self.nodes if n.name.startswith(prefix)]
            self._suffix[prefix] = max([int(t) + 1 for t in taken if t.isdigit()], default=0)
        k = self._suffix[prefix]
        self._suffix[prefix] = k + 1
        return f"{prefix}{k}"

    def node(self, op_type: str, inputs: list, outputs: list, name: str, ms: bool = False,
             **attrs):
        """A new node (com.microsoft with ``ms``), added at the end of the list."""
        n = helper.make_node(op_type, inputs, outputs, name=name, domain=MS if ms else None,
                             **attrs)
        self.nodes.append(n)
        self.changed()
        return n

    def remove(self, nodes) -> None:
        gone = {id(n) for n in nodes}
        self.nodes = [n for n in self.nodes if id(n) not in gone]
        self.changed()

    def is_output(self, name: str) -> bool:
        return name in self.outputs

    def safe_to_remove(self, nodes, keep=()) -> bool:
        """Removing ``nodes`` loses nothing: each of their outputs other than ``keep`` is read
        by none but them and is not a graph output (onnxruntime's ``is_safe_to_fuse_nodes``,
        which does not look at graph outputs)."""
        ids = {id(n) for n in nodes}
        for n in nodes:
            for name in n.output:
                if not name or name in keep:
                    continue
                if self.is_output(name) or any(id(r) not in ids for r in self.readers(name)):
                    return False
        return True

    def rename_input(self, old: str, new: str) -> None:
        """Every node reading ``old`` reads ``new`` instead."""
        for n in self.readers(old):
            for i, name in enumerate(n.input):
                if name == old:
                    n.input[i] = new
        self.changed()

    def bypass(self, node) -> bool:
        """Remove a node whose output equals its input 0 (Identity, a Cast to the same type, a
        Reshape to the same shape): its readers read the input instead. When its output is a
        graph output, the node producing its input gives that output in its place, if nothing
        else reads the input and it is no graph input or output itself. False: kept."""
        src, out = node.input[0], node.output[0]
        if any(subgraph_reads(r) & {out} for r in self.readers(out)):
            return False              # read inside a subgraph: renaming there is not done
        if not self.is_output(out):
            self.rename_input(out, src)
        else:
            p = self.producer(src)
            if (p is None or self.is_output(src) or src in self.inputs
                    or len(self.readers(src)) != 1):
                return False
            p.output[list(p.output).index(src)] = out
        self.remove([node])
        return True

    def prune(self) -> int:
        """Remove the nodes no graph output depends on, then the graph inputs and initializers
        nothing reads (onnxruntime's ``prune_graph`` and ``update_graph``). Returns how many
        nodes went."""
        needed = set(self.outputs)
        keep = []
        for n in reversed(self.toposorted()):
            if any(o in needed for o in n.output if o):
                keep.append(n)
                needed.update(x for x in n.input if x)
                needed |= subgraph_reads(n)
        removed = len(self.nodes) - len(keep)
        ids = {id(n) for n in keep}
        self.nodes = [n for n in self.nodes if id(n) in ids]
        self.inputs = {k: v for k, v in self.inputs.items() if k in needed}
        self.inits = {k: v for k, v in self.inits.items() if k in needed}
        self.changed()
        return removed

    def toposorted(self) -> list:
        """The nodes in topological order (Kahn's, ties in list order: the planner's)."""
        from ..graph.plan import toposort

        producer = {o: k for k, n in enumerate(self.nodes) for o in n.output if o}
        reads = [[x for x in list(n.input) + sorted(subgraph_reads(n)) if x] for n in self.nodes]
        return [self.nodes[k] for k in toposort(self.nodes, reads, producer)]

    def toposort(self) -> None:
        self.nodes = self.toposorted()
        self.changed()

    def to_model(self) -> onnx.ModelProto:
        """The rewritten model: the original's fields with this graph's nodes, initializers and
        inputs; value_info kept for the values that still exist; the com.microsoft opset
        imported when a node needs it."""
        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        g = out.graph
        del g.node[:]
        g.node.extend(self.nodes)
        del g.initializer[:]
        g.initializer.extend(self.inits.values())
        inputs = [vi for vi in g.input if vi.name in self.inputs]
        del g.input[:]
        g.input.extend(inputs)
        alive = {o for n in self.nodes for o in n.output}
        info = [vi for vi in g.value_info if vi.name in alive]
        del g.value_info[:]
        g.value_info.extend(info)
        if any(n.domain == MS for n in self.nodes) and \
                not any(o.domain == MS for o in out.opset_import):
            out.opset_import.append(helper.make_opsetid(MS, 1))
        return out


# ---- shapes seen by running the model ---------------------------------------------------------

# The sizes a symbolic input dimension takes in the two runs: the k-th symbol gets the k-th entry
# of each row (distinct primes, none 1, so that no size is mistaken for a broadcast dimension or
# for another symbol's, and small, so that position tables of any BERT cover the sequence).
RUN_SIZES = ((2, 3, 5, 7, 11, 13, 17, 19), (3, 5, 7, 11, 13, 17, 19, 23))


class Shapes:
    """The shape and element type of every main-graph value, observed in two runs of the model.
    A shape is a tuple of dims and a dim the pair (size in run 1, size in run 2); None where the
    value is unknown (never computed, or created by a rewrite after the runs)."""

    def __init__(self, shapes: dict, dtypes: dict, error: str = ""):
        self._shapes, self._dtypes, self.error = shapes, dtypes, error

    def __bool__(self) -> bool:
        return not self.error

    def shape(self, name: str):
        return self._shapes.get(name)

    def rank(self, name: str) -> int | None:
        s = self.shape(name)
        return None if s is None else len(s)

    def dtype(self, name: str):
        return self._dtypes.get(name)

    @classmethod
    def observe(cls, model: onnx.ModelProto) -> Shapes:
        """Run ``model`` twice in refrt (at ORT_ENABLE_BASIC, every node as written) on inputs of
        the sizes in ``RUN_SIZES``, integers in {0, 1} (valid ids and masks), floats in [0, 1)."""
        from ..errors import RefrtError
        from ..session import InferenceSession

        names = {o for n in model.graph.node for o in n.output if o}
        feeds, symbols = _feeds(model)
        if feeds is None:
            return cls({}, {}, symbols)
        seen = ({}, {})
        try:
            sess = InferenceSession(model, graph_optimization_level=1)
            for run in (0, 1):
                record = seen[run]

                def hook(node, inputs, outputs, record=record):
                    for name, value in zip(node.output, outputs):
                        if name in names and isinstance(value, np.ndarray):
                            record[name] = (value.shape, value.dtype)

                sess.add_hook(hook)
                try:
                    sess.run(None, feeds[run])
                finally:
                    sess.remove_hook(hook)
        except Exception as e:   # whatever stops the runs, the model just has no shapes here
            what = "" if isinstance(e, RefrtError) else f"{type(e).__name__}: "
            return cls({}, {}, f"refrt could not run the model to learn its shapes: {what}{e}")
        shapes, dtypes = {}, {}
        for name, (shape, dtype) in seen[0].items():
            other = seen[1].get(name)
            if other is not None and len(other[0]) == len(shape):
                shapes[name] = tuple(zip(shape, other[0]))
                dtypes[name] = dtype
        for name, value in feeds[0].items():
            shapes[name] = tuple(zip(value.shape, feeds[1][name].shape))
            dtypes[name] = value.dtype
        for t in model.graph.initializer:
            shapes.setdefault(t.name, tuple((d, d) for d in t.dims))
            dtypes.setdefault(t.name, helper.tensor_dtype_to_np_dtype(t.data_type))
        return cls(shapes, dtypes)


def _feeds(model):
    """(feeds of run 1, feeds of run 2) for the graph inputs no initializer gives, or (None,
    reason). Each distinct dim_param is one symbol; an unnamed dimension is a symbol of its own."""
    inits = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    symbols: list = []
    feeds: tuple = ({}, {})
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
            return None, f"input {vi.name!r} has no tensor shape to make a value for"
        shapes = ([], [])
        for axis, d in enumerate(t.shape.dim):
            if d.HasField("dim_value"):
                size = (d.dim_value, d.dim_value)
            else:
                key = d.dim_param or (vi.name, axis)
                if key not in symbols:
                    symbols.append(key)
                k = symbols.index(key)
                if k >= len(RUN_SIZES[0]):
                    return None, "too many symbolic input dimensions to make inputs for"
                size = (RUN_SIZES[0][k], RUN_SIZES[1][k])
            shapes[0].append(size[0])
            shapes[1].append(size[1])
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        for run in (0, 1):
            if dtype.kind in "iu":
                value = rng.integers(0, 2, size=shapes[run]).astype(dtype)
            elif dtype.kind == "b":
                value = rng.random(shapes[run]) < 0.5
            elif dtype.kind == "f":
                value = rng.random(shapes[run]).astype(dtype)
            else:
                return None, f"input {vi.name!r}: no made-up value of type {dtype}"
            feeds[run][vi.name] = value
    return feeds, ""

