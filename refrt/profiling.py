"""Profiling a session the way onnxruntime does, and the pieces ``refrt run --trace`` shows.

* :class:`Profiler`: ``SessionOptions.enable_profiling = True`` gives the session one. It records
  Chrome trace events in onnxruntime's profile format (checked against the file onnxruntime 1.32
  writes for the same model) and ``InferenceSession.end_profiling()`` writes them to
  ``<profile_file_prefix>_<date>_<time>.json`` and returns that name:

  - ``"cat": "Session"`` events: ``model_loading_uri`` (a path) or ``model_loading_array`` (bytes or
    a ModelProto), ``session_initialization``, and per run ``model_run`` with
    ``SequentialExecutor::Execute`` inside it (the node loop);
  - one ``"cat": "Node"`` event per node run, named ``<node name>_kernel_time`` (an unnamed node
    is ``<op type>_<index in its graph>``, as onnxruntime names it), whose ``args``
    carry ``op_name``, ``provider``, ``node_index``, ``input_type_shape`` / ``output_type_shape``
    (``[{"float": [2, 64]}, ...]``), and ``activation_size``, ``parameter_size``, ``output_size``
    in bytes (as strings, as onnxruntime writes them).

  Every event has ``"ph": "X"`` (a complete event), ``ts`` and ``dur`` in microseconds from the
  session's creation, ``pid`` and ``tid``; the file loads in chrome://tracing, Perfetto, and the
  tools that read onnxruntime's profiles. What onnxruntime adds and refrt has no counterpart for
  (its memory arena's counters, thread-pool statistics) is left out. A profiled run sees every
  node: fused steps (``refrt.fusion``) run node by node, as with any hook.

  Without ``enable_profiling`` the session has no profiler and a run costs nothing more.

* :class:`CompileClock`: Numba's compiles, timed apart from the kernels' run time. Numba compiles
  a kernel for each new argument signature on its first call (or loads that compile from its
  on-disk cache); both happen while Numba holds its global compiler lock, and Numba announces
  taking and releasing that lock as ``numba:compiler_lock`` events. The clock listens to them and
  adds up the time spent inside (outermost acquisitions only), and names the kernels compiled
  from scratch (``numba:compile`` events). A node's run time is its wall time minus that.

* :func:`quant_params`: the scale and zero point of each quantized tensor a node reads or
  writes, taken from the node's own inputs (or outputs, for DynamicQuantizeLinear).
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import time

import numpy as np

PROVIDER = "CPUExecutionProvider"

def ort_type_name(dtype) -> str:
    """onnxruntime's name of an element type in input_type_shape: "float", "double", "string",
    else NumPy's ("uint8", "int64", "float16", "bool", ...)."""
    dt = np.dtype(dtype)
    if dt.kind in "UOS":
        return "string"
    return {"float32": "float", "float64": "double"}.get(dt.name, dt.name)


def _type_shape(value):
    """``{"float": [2, 3]}`` for an array; None for values that are not tensors."""
    if isinstance(value, np.ndarray):
        return {ort_type_name(value.dtype): list(value.shape)}
    if isinstance(value, np.generic):
        return {ort_type_name(value.dtype): []}
    return None


def _nbytes(value) -> int:
    return int(value.nbytes) if isinstance(value, (np.ndarray, np.generic)) else 0


def profile_file_name(prefix: str, when: datetime.datetime | None = None) -> str:
    """onnxruntime's name: ``<prefix>_<YYYY-MM-DD>_<HH-MM-SS>_<milliseconds>.json``."""
    when = when or datetime.datetime.now()
    return f"{prefix}_{when:%Y-%m-%d_%H-%M-%S}_{when.microsecond // 1000}.json"


class Profiler:
    """The events of one session's profile (see the module docstring). A hook: the session
    attaches it for each run while profiling is on."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.start_ns = time.time_ns()          # wall clock, as get_profiling_start_time_ns()
        self._t0 = time.perf_counter_ns()
        self.pid = os.getpid()
        self.events: list[dict] = []
        self.node_index: dict[int, int] = {}    # id(NodeProto) -> its index in its graph
        self.parameters: frozenset = frozenset()  # initializer names (parameter_size)
        self._node_start = 0
        self.ended = False

    # ---- clock
    def now(self) -> int:
        """Microseconds since the profiler started."""
        return (time.perf_counter_ns() - self._t0) // 1000

    def event(self, cat: str, name: str, start_us: int, args: dict | None = None) -> None:
        """A complete ("X") event from ``start_us`` until now."""
        self.events.append({"cat": cat, "pid": self.pid, "tid": threading.get_native_id(),
                            "dur": max(0, self.now() - start_us), "ts": start_us, "ph": "X",
                            "name": name, "args": args if args is not None else {}})

    def index_nodes(self, graph) -> None:
        """Number the nodes of ``graph`` and of its subgraphs (each in its own graph's order)."""
        for i, node in enumerate(graph.node):
            self.node_index[id(node)] = i
            for attr in node.attribute:
                if attr.HasField("g"):
                    self.index_nodes(attr.g)
                for g in attr.graphs:
                    self.index_nodes(g)

    # ---- the hook
    def before_node(self, node, inputs) -> None:
        self._node_start = self.now()

    def on_node(self, node, inputs, outputs) -> None:
        start = self._node_start
        index = self.node_index.get(id(node), -1)
        names = list(node.input)
        activation = sum(_nbytes(v) for n, v in zip(names, inputs) if n and n not in self.parameters)
        parameter = sum(_nbytes(v) for n, v in zip(names, inputs) if n and n in self.parameters)
        args = {
            "op_name": node.op_type,
            "provider": PROVIDER,
            "node_index": str(index),
            "activation_size": str(activation),
            "parameter_size": str(parameter),
            "output_size": str(sum(_nbytes(v) for v in outputs)),
            "input_type_shape": [t for t in map(_type_shape, inputs) if t is not None],
            "output_type_shape": [t for t in map(_type_shape, outputs) if t is not None],
        }
        # an unnamed node is "<op type>_<index>", the name onnxruntime gives it
        self.event("Node", f"{node.name or f'{node.op_type}_{index}'}_kernel_time", start, args)

    # ---- the file
    def write(self) -> str:
        """Write the events as onnxruntime does (a JSON array, one event per line); return the
        file name. Later calls write nothing and return "" (as onnxruntime's end_profiling)."""
        if self.ended:
            return ""
        self.ended = True
        name = profile_file_name(self.prefix)
        with open(name, "w", encoding="utf-8") as f:
            f.write("[\n" + ",\n".join(json.dumps(e) for e in self.events) + "\n]\n")
        return name


# ---------------------------------------------------------------- Numba's compile time


class CompileClock:
    """Adds up the time Numba spends compiling (or loading compiled kernels from its cache), from
    its ``numba:compiler_lock`` events, and lists the kernels compiled from scratch. Installed
    with :meth:`start` (which imports Numba), removed with :meth:`stop`."""

    def __init__(self):
        self.seconds = 0.0
        self.compiled: list[str] = []     # "kernel(signature)" of each compile from scratch
        self._depth = 0
        self._t = 0.0
        self._listeners = ()

    def start(self) -> CompileClock:
        try:
            from numba.core import event
        except ImportError:               # no Numba: nothing ever compiles
            return self
        clock = self

        class _Lock(event.Listener):
            def on_start(self, ev):
                clock._depth += 1
                if clock._depth == 1:
                    clock._t = time.perf_counter()

            def on_end(self, ev):
                clock._depth -= 1
                if clock._depth == 0:
                    clock.seconds += time.perf_counter() - clock._t

        class _Compile(event.Listener):
            def on_start(self, ev):
                pass

            def on_end(self, ev):
                data = ev.data or {}
                fn = getattr(data.get("dispatcher"), "py_func", None)
                name = getattr(fn, "__name__", "?")
                types = ", ".join(str(t) for t in data.get("args", ()))
                clock.compiled.append(f"{name}({types})")

        self._listeners = (("numba:compiler_lock", _Lock()), ("numba:compile", _Compile()))
        for kind, listener in self._listeners:
            event.register(kind, listener)
        return self

    def stop(self) -> None:
        if self._listeners:
            from numba.core import event

            for kind, listener in self._listeners:
                event.unregister(kind, listener)
            self._listeners = ()


# ---------------------------------------------------------------- quantization parameters

# op type -> the quantized tensors it touches: (tensor, scale, zero point) as ("i", n) for input
# n or ("o", n) for output n; a zero point slot may be None (absent in the op)
_QUANT_SLOTS = {
    "QuantizeLinear": [(("o", 0), ("i", 1), ("i", 2))],
    "DequantizeLinear": [(("i", 0), ("i", 1), ("i", 2))],
    "DynamicQuantizeLinear": [(("o", 0), ("o", 1), ("o", 2))],
    "QLinearConv": [(("i", 0), ("i", 1), ("i", 2)), (("i", 3), ("i", 4), ("i", 5)),
                    (("o", 0), ("i", 6), ("i", 7))],
    "QLinearMatMul": [(("i", 0), ("i", 1), ("i", 2)), (("i", 3), ("i", 4), ("i", 5)),
                      (("o", 0), ("i", 6), ("i", 7))],
    "MatMulInteger": [(("i", 0), None, ("i", 2)), (("i", 1), None, ("i", 3))],
    "ConvInteger": [(("i", 0), None, ("i", 2)), (("i", 1), None, ("i", 3))],
    "QLinearAdd": [(("i", 0), ("i", 1), ("i", 2)), (("i", 3), ("i", 4), ("i", 5)),
                   (("o", 0), ("i", 6), ("i", 7))],
    "QLinearMul": [(("i", 0), ("i", 1), ("i", 2)), (("i", 3), ("i", 4), ("i", 5)),
                   (("o", 0), ("i", 6), ("i", 7))],
    "QGemm": [(("i", 0), ("i", 1), ("i", 2)), (("i", 3), ("i", 4), ("i", 5)),
              (("o", 0), ("i", 7), ("i", 8))],
    "QLinearSigmoid": [(("i", 0), ("i", 1), ("i", 2)), (("o", 0), ("i", 3), ("i", 4))],
    "QLinearLeakyRelu": [(("i", 0), ("i", 1), ("i", 2)), (("o", 0), ("i", 3), ("i", 4))],
    "QLinearSoftmax": [(("i", 0), ("i", 1), ("i", 2)), (("o", 0), ("i", 3), ("i", 4))],
    "QLinearAveragePool": [(("i", 0), ("i", 1), ("i", 2)), (("o", 0), ("i", 3), ("i", 4))],
    "QLinearGlobalAveragePool": [(("i", 0), ("i", 1), ("i", 2)), (("o", 0), ("i", 3), ("i", 4))],
    "DynamicQuantizeMatMul": [(("i", 1), ("i", 2), ("i", 3))],
    "MatMulIntegerToFloat": [(("i", 0), ("i", 2), ("i", 4)), (("i", 1), ("i", 3), ("i", 5))],
}


def _slot(node, inputs, outputs, slot):
    """(name, value) at a slot, or (None, None) where the node has nothing there."""
    if slot is None:
        return None, None
    kind, i = slot
    names, values = (node.input, inputs) if kind == "i" else (node.output, outputs)
    if i >= len(names) or not names[i] or i >= len(values):
        return None, None
    return names[i], values[i]


def _fmt_param(v) -> str:
    a = np.asarray(v)
    if a.size == 1:
        x = a.reshape(-1)[0]
        return f"{x:.6g}" if a.dtype.kind == "f" else str(int(x))
    if a.size == 0:
        return "[]"
    lo, hi = a.min(), a.max()
    fmt = (lambda x: f"{x:.4g}") if a.dtype.kind == "f" else (lambda x: str(int(x)))
    return f"[{a.size}: {fmt(lo)}..{fmt(hi)}]"


def quant_params(node, inputs, outputs) -> list[dict]:
    """``[{"tensor": name, "scale": ..., "zero_point": ...}, ...]`` for the quantized tensors of
    a node of a known quantized op type (values as short strings: a scalar, or
    ``[count: min..max]`` per channel); [] for other nodes."""
    found = []
    for tensor, scale, zp in _QUANT_SLOTS.get(node.op_type, ()):
        name, _ = _slot(node, inputs, outputs, tensor)
        if name is None:
            continue
        entry = {"tensor": name}
        _, s = _slot(node, inputs, outputs, scale)
        _, z = _slot(node, inputs, outputs, zp)
        if s is not None:
            entry["scale"] = _fmt_param(s)
        if z is not None:
            entry["zero_point"] = _fmt_param(z)
        if len(entry) > 1:
            found.append(entry)
    return found
