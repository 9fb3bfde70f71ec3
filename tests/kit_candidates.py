"""Deliberately broken candidates for tests/testing/test_conformance_kit.py (``MODULE:FUNCTION`` specs):
each is refrt with one defect."""

import os
import signal

import numpy as np
import onnx

from refrt.testing.strategies import run_refrt


def _ops(model: bytes) -> set:
    return {n.op_type for n in onnx.load_from_string(model).graph.node}


def add_off_by_one_ulp(model, feeds):
    """Every float output of a model with an Add moved up by one ULP."""
    out = run_refrt(model, feeds)
    if "Add" not in _ops(model):
        return out
    return [np.nextafter(o, np.inf).astype(o.dtype) if o.dtype.kind == "f" else o for o in out]


def relu_drops_nan(model, feeds):
    """Relu that turns NaN into 0."""
    out = run_refrt(model, feeds)
    if "Relu" not in _ops(model):
        return out
    return [np.where(np.isnan(o), 0, o).astype(o.dtype) if o.dtype.kind == "f" else o for o in out]


def dies_on_zero_divisor(model, feeds):
    """Integer Mod that kills its process with SIGFPE on a zero divisor, as a C runtime would."""
    if "Mod" in _ops(model):
        b = list(feeds.values())[1]
        if b.dtype.kind in "iu" and (b == 0).any():
            os.kill(os.getpid(), signal.SIGFPE)
    return run_refrt(model, feeds)


def wrong_dtype(model, feeds):
    return [o.astype(np.float64) if o.dtype == np.float32 else o for o in run_refrt(model, feeds)]


def add_plus_one(model, feeds):
    """Any model with an Add: its float outputs plus one."""
    out = run_refrt(model, feeds)
    if "Add" not in _ops(model):
        return out
    return [(o + 1).astype(o.dtype) if o.dtype.kind == "f" else o for o in out]
