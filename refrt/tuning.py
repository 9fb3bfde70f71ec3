"""Process tuning for running refrt fast on a few cores: explicit, never done on import.

    import refrt
    refrt.tune_process()        # before importing NumPy, for the OpenBLAS part to take effect
    import numpy as np

The ``refrt`` command calls it, and so do the benchmarks; a library or a test suite that merely
imports refrt keeps its process as it was. What it changes, each only where not already set:

* **Thread pools.** refrt alternates between NumPy's OpenBLAS (float Gemm, float MatMul without
  packed weights) and Numba's OpenMP kernels (int8 GEMM, quantization, packed float MatMul) on the
  same cores. Left at their defaults both pools spin for a while after their work, and the other
  pool's threads wait for a core (README, "Threads", has the measured cost).
  ``OMP_WAIT_POLICY=PASSIVE`` (libgomp reads it when Numba first starts its threads) and
  ``OPENBLAS_THREAD_TIMEOUT=4`` (OpenBLAS reads it when NumPy is first imported, so only before
  that) make idle pools sleep.
* **glibc's malloc** (Linux with glibc only). Every run allocates fresh output arrays of up to a
  few MB; with glibc's adaptive mmap threshold they can come as fresh mappings whose pages fault in
  on first touch. ``M_MMAP_THRESHOLD`` 32 MiB (glibc's largest adaptive value) and
  ``M_TRIM_THRESHOLD`` 64 MiB keep freed arrays in the heap for the next run (README, "Memory").
  Setting glibc's own ``MALLOC_MMAP_THRESHOLD_`` opts out.

``applied()`` reports what this process's call did (``refrt host`` prints it).
"""

from __future__ import annotations

import os
import sys

__all__ = ["tune_process", "applied", "WAIT_POLICY", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

WAIT_POLICY = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "OPENBLAS_THREAD_TIMEOUT": "4",      # idle OpenBLAS workers sleep after 2**4 cycles
}
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3    # glibc's mallopt parameter numbers

_APPLIED: dict = {}


def tune_process(threads: bool = True, malloc: bool = True) -> dict:
    """Tune this process for refrt (see the module docstring); returns what was done, one entry
    per setting: the value set, or why it was left alone."""
    done = {}
    if threads:
        for key, value in WAIT_POLICY.items():
            if key in os.environ:
                done[key] = f"left at {os.environ[key]!r} (already set)"
            elif key == "OPENBLAS_THREAD_TIMEOUT" and "numpy" in sys.modules:
                done[key] = "not set: NumPy was imported before, OpenBLAS has read its environment"
            else:
                os.environ[key] = value
                done[key] = value
    if malloc:
        done["malloc"] = _raise_mmap_threshold()
    _APPLIED.update(done)
    return done


def applied() -> dict:
    """What ``tune_process`` did in this process (empty if it was not called)."""
    return dict(_APPLIED)


def _raise_mmap_threshold() -> str:
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return "left alone (MALLOC_MMAP_THRESHOLD_ is set)"
    if not sys.platform.startswith("linux"):
        return "left alone (not Linux)"
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return "left alone (not glibc)"
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        # the trim threshold at twice the mmap threshold, as glibc's own adaptive rule would set
        # it (fixing one value turns the adaptation off)
        if libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD):
            return f"mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
        return "left alone (mallopt refused)"
    except (OSError, ValueError, AttributeError) as e:
        return f"left alone ({e})"
