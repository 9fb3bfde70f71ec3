"""Every intermediate tensor of a model, as a reference computes it.

    ref = reference_values(model, feeds, "onnxruntime")
    ref.values["conv1_out"]      the tensor, keyed by its name in the model
    ref.missing                  node outputs the reference did not give (fused away, not saved)

References (the ``against`` string):

* ``onnxruntime``: onnxruntime's CPU provider with graph optimizations off, so it runs the model's
  own nodes; every node output is added as a graph output (as onnxruntime's quantization debugger
  does).
* ``onnxruntime-optimized``: onnxruntime at its default level (ORT_ENABLE_ALL). Exposing a tensor
  as an output would stop the fusions that remove it, so the optimized model is saved first; the
  tensors that survive in it are exposed there, and the ones that do not are ``missing`` (fused
  away).
* ``spec``: refrt itself in its ``"spec"`` numerics mode.
* ``onnx-reference``: ``onnx.reference.ReferenceEvaluator`` with its intermediate results.
* ``saved:PATH``: values a user dumped from their own runtime: an ``.npz`` keyed by tensor name,
  a folder of ``NAME.npy`` files or serialized TensorProto ``.pb`` files (the name stored in the
  proto, else the file's stem), or a Polygraphy ``--save-outputs`` JSON (``saved:out.json`` or
  ``saved:out.json#RUNNER`` to pick a runner by part of its name).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import ModelProto, helper, numpy_helper

from ..errors import RefrtError

__all__ = ["Reference", "ReferenceUnavailable", "reference_values", "node_outputs", "load_saved", "load_polygraphy", "KINDS"]

KINDS = ("onnxruntime", "onnxruntime-optimized", "spec", "onnx-reference", "saved:PATH")


@dataclass
class Reference:
    name: str                          # the ``against`` string
    description: str
    values: dict = field(default_factory=dict)
    missing: dict = field(default_factory=dict)    # tensor name -> why the reference has none


def node_outputs(model: ModelProto) -> list[str]:
    """The main graph's node outputs, in node order."""
    return [o for node in model.graph.node for o in node.output if o]


class ReferenceUnavailable(RefrtError):
    """The reference could not compute the model (it lacks an operator, refuses an input, ...)."""


def reference_values(model: ModelProto, feeds: dict, against: str, **refrt_options) -> Reference:
    """Every node output of ``model`` on ``feeds`` as ``against`` computes it; a failure of the
    reference itself is a ReferenceUnavailable naming the reference and its message."""
    if not (against in KINDS[:-1] or against.startswith("saved:")):
        raise ValueError(f"unknown reference {against!r}: expected one of {', '.join(KINDS)}")
    try:
        return _reference_values(model, feeds, against, **refrt_options)
    except (RefrtError, OSError, ValueError):
        raise
    except Exception as e:   # a third-party runtime's own failure, whatever its type
        raise ReferenceUnavailable(f"the reference {against!r} cannot run this model: "
                                   f"{type(e).__name__}: {str(e).strip()[:500]}") from e


def _reference_values(model: ModelProto, feeds: dict, against: str, **refrt_options) -> Reference:
    """Every node output of ``model`` (weights included in the proto) on ``feeds`` as ``against``
    computes it (see the module docstring); ``refrt_options`` are session options for the
    ``spec`` reference."""
    if against == "onnxruntime":
        values = _ort_values(model, feeds)
        ref = Reference(against, "onnxruntime (CPU, graph optimizations off)", values)
    elif against == "onnxruntime-optimized":
        values, removed = ort_optimized_values(model, feeds)
        ref = Reference(against, "onnxruntime (CPU, all graph optimizations)", values,
                        {n: "removed by onnxruntime's graph optimizations" for n in removed})
    elif against == "spec":
        from .capture import capture_refrt

        options = dict(refrt_options, numerics="spec")
        ref = Reference(against, "refrt, numerics=\"spec\"", capture_refrt(model, feeds, **options))
    elif against == "onnx-reference":
        ref = Reference(against, "onnx.reference.ReferenceEvaluator", _onnx_reference_values(model, feeds))
    elif against.startswith("saved:"):
        path = against[len("saved:"):]
        ref = Reference(against, f"values saved in {path}", load_saved(path))
    else:
        raise ValueError(f"unknown reference {against!r}: expected one of {', '.join(KINDS)}")
    for name in node_outputs(model):
        if name not in ref.values and name not in ref.missing:
            ref.missing[name] = "not produced by the reference"
    return ref


# ---------------------------------------------------------------- onnxruntime

def _with_outputs(model: ModelProto, names) -> ModelProto:
    exposed = ModelProto()
    exposed.CopyFrom(model)
    have = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in have:
            exposed.graph.output.append(helper.make_empty_tensor_value_info(name))
            have.add(name)
    return exposed


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise RuntimeError("this reference needs onnxruntime (pip install onnxruntime)") from e
    return ort


def _ort_run(model: ModelProto, feeds: dict, level, save_to=None, disabled=()) -> dict:
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    if save_to:
        so.optimized_model_filepath = save_to
    with tempfile.TemporaryDirectory(prefix="refrt.debug.") as tmp:
        path = os.path.join(tmp, "model.onnx")
        large = model.ByteSize() > (1 << 30)      # protobuf's 2 GB limit: weights beside the model
        onnx.save(model, path, save_as_external_data=large)
        extra = {"disabled_optimizers": list(disabled)} if disabled else {}
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"], **extra)
        names = [o.name for o in sess.get_outputs()]
        wanted = {i.name for i in sess.get_inputs()}
        outs = sess.run(None, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, outs))


def _ort_values(model: ModelProto, feeds: dict) -> dict:
    level = _ort().GraphOptimizationLevel.ORT_DISABLE_ALL
    return _ort_run(_with_outputs(model, node_outputs(model)), feeds, level)


def ort_optimized_values(model: ModelProto, feeds: dict, disabled=()) -> tuple[dict, list]:
    """onnxruntime's tensors at its default optimization level, with the graph transformers named
    in ``disabled`` turned off -> (values of the tensors that survive, names fused away)."""
    ort = _ort()
    with tempfile.TemporaryDirectory(prefix="refrt.debug.") as tmp:
        saved = os.path.join(tmp, "optimized.onnx")
        _ort_run(model, feeds, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, save_to=saved, disabled=disabled)
        optimized = onnx.load(saved)
    produced = set(node_outputs(optimized))
    wanted = node_outputs(model)
    kept = [n for n in wanted if n in produced]
    values = _ort_run(_with_outputs(optimized, kept), feeds, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return {n: values[n] for n in kept if n in values}, [n for n in wanted if n not in produced]


# ---------------------------------------------------------------- onnx.reference

def _onnx_reference_values(model: ModelProto, feeds: dict) -> dict:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model)
    results = evaluator.run(None, feeds, intermediate=True)
    wanted = set(node_outputs(model))
    return {k: np.asarray(v) for k, v in results.items() if k in wanted and v is not None
            and not isinstance(v, list)}


# ---------------------------------------------------------------- saved values

def load_saved(path: str) -> dict:
    """Tensors from an ``.npz`` (keyed by name), or a folder of ``NAME.npy`` / TensorProto ``.pb``
    files."""
    if os.path.isdir(path):
        values = {}
        for entry in sorted(os.listdir(path)):
            full = os.path.join(path, entry)
            stem, ext = os.path.splitext(entry)
            if ext == ".npy":
                values[stem] = np.load(full, allow_pickle=False)
            elif ext == ".pb":
                proto = onnx.TensorProto()
                with open(full, "rb") as f:
                    proto.ParseFromString(f.read())
                values[proto.name or stem] = numpy_helper.to_array(proto)
        if not values:
            raise ValueError(f"{path}: no .npy or .pb files")
        return values
    base, _, runner = path.partition("#")
    if base.endswith(".json"):
        return load_polygraphy(base, runner)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no saved values at {path!r}")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_polygraphy_inputs(path: str) -> dict:
    """The first feed dict of a Polygraphy ``--save-inputs`` file."""
    import json

    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and "lst" in data:
        data = data["lst"]
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise ValueError(f"{path}: not a Polygraphy inputs file (a list of name -> array)")
    return {name: _polygraphy_array(v, path) for name, v in data[0].items()}


def _polygraphy_array(entry, path):
    import base64
    import io

    while isinstance(entry, dict) and "array" not in entry:
        entry = entry.get("values")
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: a value is not a saved array")
    return np.load(io.BytesIO(base64.b64decode(entry["array"])), allow_pickle=False)


def load_polygraphy(path: str, runner: str = "") -> dict:
    """The tensors of a Polygraphy ``--save-outputs`` file (RunResults JSON): the first iteration
    of the first runner whose name contains ``runner`` (``saved:outputs.json#trt``)."""
    import json

    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "lst" not in data:
        raise ValueError(f"{path}: not a Polygraphy RunResults file (no 'lst')")
    runs = [(name, iterations) for name, iterations in data["lst"] if runner in name]
    if not runs or not runs[0][1]:
        names = [name for name, _ in data["lst"]]
        raise ValueError(f"{path}: no runner matching {runner!r} with results (runners: {names})")

    return {name: _polygraphy_array(v, path) for name, v in runs[0][1][0]["outputs"].items()}
