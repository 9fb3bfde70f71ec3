"""Structure-aware mutations of ONNX models, and the harness that holds refrt to its promise on them:
every outcome is a result or a ``refrt.errors`` exception -- never another exception, never a hang,
never a changed feed.

    mutant, what = mutate(model_bytes, random.Random(seed))
    outcome = try_model(mutant)          # "result", "ModelError", ..., or "untyped: ..." / "hang"

Mutations (``KINDS``): bit flips in the serialized bytes, and field edits a careless exporter or a
hostile file makes: an op type swapped, an input renamed to nothing or to the node's own output
(a cycle), an attribute's type or value changed, an initializer's dims, type or data changed, an
opset version changed, an output removed, a node removed or duplicated.
"""

from __future__ import annotations

import random
import signal
import threading
from contextlib import contextmanager

import numpy as np
import onnx
from onnx import AttributeProto, ModelProto, TensorProto

__all__ = ["mutate", "try_model", "KINDS", "feeds_for"]

KINDS = ("bitflip", "op_type", "input_rename", "cycle", "attribute", "initializer", "opset",
         "drop_output", "drop_node", "duplicate_node")
_OPS = ("Relu", "Add", "MatMul", "Conv", "Reshape", "Gather", "Loop", "If", "Softmax", "Concat",
        "Split", "Slice", "Resize", "TopK", "NonZero", "Pad", "Tile", "Expand", "QuantizeLinear",
        "DequantizeLinear", "MatMulInteger", "Unknown")
_TYPES = (0, 1, 2, 3, 6, 7, 9, 10, 11, 16, 33, 99)


def mutate(model: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutant of ``model`` (serialized ModelProto) and a description of the mutation."""
    kind = rng.choice(KINDS)
    if kind == "bitflip":
        data = bytearray(model)
        flips = []
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
            flips.append(i)
        return bytes(data), f"bitflip at {flips}"
    m = ModelProto()
    m.ParseFromString(model)
    g = m.graph
    nodes = list(g.node)
    what = kind
    if kind == "op_type" and nodes:
        n = rng.choice(nodes)
        n.op_type = rng.choice(_OPS)
        what = f"{kind}: {n.name or n.output[0]} -> {n.op_type}"
    elif kind == "input_rename" and nodes:
        n = rng.choice(nodes)
        if n.input:
            n.input[rng.randrange(len(n.input))] = rng.choice(["", "nowhere", g.input[0].name if g.input else ""])
    elif kind == "cycle" and nodes:
        n = rng.choice(nodes)
        if n.input and n.output:
            n.input[0] = n.output[0]
    elif kind == "attribute" and nodes:
        n = rng.choice(nodes)
        if n.attribute:
            a = rng.choice(list(n.attribute))
            choice = rng.randrange(4)
            if choice == 0:
                a.type = rng.choice([AttributeProto.FLOAT, AttributeProto.INT, AttributeProto.STRING,
                                     AttributeProto.INTS, AttributeProto.TENSOR, AttributeProto.GRAPH])
            elif choice == 1:
                a.i = rng.choice([-1, 0, 2 ** 31, -2 ** 62, 10 ** 12])
            elif choice == 2:
                del a.ints[:]
                a.ints.extend(rng.choice([[], [0], [-1, -1], [10 ** 9, 10 ** 9], [1] * 9]))
            else:
                a.name = "bogus"
        else:
            n.attribute.add().CopyFrom(onnx.helper.make_attribute("axis", rng.randint(-9, 9)))
    elif kind == "initializer" and g.initializer:
        t = rng.choice(list(g.initializer))
        choice = rng.randrange(4)
        if choice == 0:
            del t.dims[:]
            t.dims.extend(rng.choice([[], [0], [-1], [2, -2], [10 ** 6, 10 ** 6], [1] * 40]))
        elif choice == 1:
            t.data_type = rng.choice(_TYPES)
        elif choice == 2:
            t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data) + 1)] if t.raw_data else b"\x01"
        else:
            t.data_location = TensorProto.EXTERNAL
            e = t.external_data.add()
            e.key, e.value = "location", rng.choice(["../x.bin", "/etc/passwd", "missing.bin", ""])
    elif kind == "opset" and m.opset_import:
        m.opset_import[0].version = rng.choice([0, 1, 6, 7, 9, 13, 99, -1])
    elif kind == "drop_output" and g.output:
        del g.output[rng.randrange(len(g.output))]
    elif kind == "drop_node" and nodes:
        del g.node[rng.randrange(len(nodes))]
    elif kind == "duplicate_node" and nodes:
        g.node.append(rng.choice(nodes))
    return m.SerializeToString(), what


def feeds_for(sess, rng: np.random.Generator) -> dict:
    """Small values for every input of a session: symbolic dims 2, floats normal, integers in
    [0, 4), booleans fair coins; None where no value can be made."""
    from ..types import shape_of

    feeds = {}
    for vi in sess._inputs:
        if not vi.type.HasField("tensor_type"):
            return None
        from ..ops._common import np_dtype
        try:
            dtype = np_dtype(vi.type.tensor_type.elem_type)
        except (KeyError, ValueError, TypeError):
            return None
        shape = [d if isinstance(d, int) and 0 <= d <= 64 else 2 for d in (shape_of(vi.type) or [])]
        if dtype.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[vi.name] = rng.integers(0, 4, shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[vi.name] = rng.random(shape) < 0.5
        else:
            return None
    return feeds


class _Hang(Exception):
    pass


@contextmanager
def _alarm(seconds: float):
    """SIGALRM-based timeout (main thread, POSIX); a no-op elsewhere."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum, frame):
        raise _Hang()

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def try_model(data: bytes, seed: int = 0, timeout: float = 20.0, time_limit: float = 5.0,
              max_tensor_bytes: int = 1 << 28) -> str:
    """Load and run a (mutated) model; the outcome class: "result", the name of a refrt error,
    "untyped: Type: message", "hang", or "feed changed"."""
    import refrt
    from refrt.errors import RefrtError

    feeds = before = None

    def changed() -> bool:
        return feeds is not None and any(not np.array_equal(before[k], feeds[k], equal_nan=True) for k in feeds)

    try:
        with _alarm(timeout):
            sess = refrt.InferenceSession(data, max_tensor_bytes=max_tensor_bytes)
            feeds = feeds_for(sess, np.random.default_rng(seed))
            if feeds is None:
                return "result"          # loaded; no feed can be made for its inputs
            before = {k: v.copy() for k, v in feeds.items()}
            sess.run(None, feeds, refrt.RunOptions(time_limit=time_limit))
        return "feed changed" if changed() else "result"
    except _Hang:
        return "hang"
    except RefrtError as e:
        return "feed changed" if changed() else type(e).__name__
    except Exception as e:   # the finding this harness exists for
        return f"untyped: {type(e).__name__}: {str(e)[:200]}"
