"""What the kernel tests share: the kernels package (loaded on its own if the rest of refrt
is unavailable) and its twins, hypothesis settings, integer fills, zero points, bit-for-bit
comparison, GEMM cases, and one-node onnxruntime sessions."""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

try:
    from refrt import kernels as K
except ImportError:  # rest of the package unavailable: load the kernels folder on its own
    _root = pathlib.Path(__file__).resolve().parents[2] / "kernels"
    _spec = importlib.util.spec_from_file_location("refrt_kernels", _root / "__init__.py",
                                                   submodule_search_locations=[str(_root)])
    K = importlib.util.module_from_spec(_spec)
    sys.modules["refrt_kernels"] = K
    _spec.loader.exec_module(K)
T = importlib.import_module(K.__name__ + ".twins")

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT8 = (np.uint8, np.int8)


# --------------------------------------------------------------------------- data helpers

FILLS = ("random", "random", "random", "min", "max", "zero", "extremes")


def int_array(rng, shape, dtype, fill):
    """Integer array of `dtype`: random full range, all min, all max, all 0, or a mix of min/max/0."""
    info = np.iinfo(dtype)
    if fill == "random":
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    if fill == "extremes":
        return rng.choice(np.array([info.min, info.max, 0, 0 if info.min else 1], dtype=dtype), size=shape)
    value = {"min": info.min, "max": info.max, "zero": 0}[fill]
    return np.full(shape, value, dtype=dtype)


def zero_points(rng, draw_kind, n, lo=-300, hi=300):
    """Per-tensor (length 1) or per-row/column (length n) int32 zero points, incl. edges."""
    if draw_kind == "scalar":
        return np.array([rng.choice([0, lo, hi, rng.integers(lo, hi)])], dtype=np.int32)
    return rng.integers(lo, hi, size=n, endpoint=True).astype(np.int32)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        a.view(np.uint8 if a.dtype.itemsize == 1 else f"u{a.dtype.itemsize}"),
        b.view(np.uint8 if b.dtype.itemsize == 1 else f"u{b.dtype.itemsize}"))


gemm_cases = st.fixed_dictionaries({
    "m": st.integers(1, 40),
    "k": st.one_of(st.integers(1, 80), st.integers(1000, 3000)),
    "n": st.integers(1, 40),
    "square": st.booleans(),  # M == K (catches row/column mix-ups)
    "a_dtype": st.sampled_from(INT8),
    "b_dtype": st.sampled_from(INT8),
    "a_fill": st.sampled_from(FILLS),
    "b_fill": st.sampled_from(FILLS),
    "a_zp": st.sampled_from(["scalar", "vector"]),
    "b_zp": st.sampled_from(["scalar", "vector"]),
    "seed": st.integers(0, 2**32 - 1),
})


def make_gemm_case(c):
    rng = np.random.default_rng(c["seed"])
    m, k, n = c["m"], c["k"], c["n"]
    if c["square"]:
        m = k = min(k, 300)
    a = int_array(rng, (m, k), c["a_dtype"], c["a_fill"])
    b = int_array(rng, (k, n), c["b_dtype"], c["b_fill"])
    return a, b, zero_points(rng, c["a_zp"], m), zero_points(rng, c["b_zp"], n)




def _ort_session(model):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _model(nodes, inputs, outputs, opset=13, initializers=()):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model
