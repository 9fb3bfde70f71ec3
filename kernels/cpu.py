"""What this CPU can run, and which kernel refrt picks on it -- the one place that knows.

Every kernel choice in ``kernels/`` asks this module; nothing else reads CPU features.

* ``features()``: the host's CPU name and the features that matter here, as LLVM (and so Numba)
  sees them.
* ``runnable_int8_kernels()``: the int8 GEMM kernels this process can execute, fastest first:
  "amx" (AMX-INT8 tiles, and the OS granted the tile state), "vnni" (AVX512-VNNI), "avx2"
  (AVX2), "portable" (any x86-64 or other CPU).
* ``int8_kernel()``: the one ``gemm_int8(kernel="auto")`` runs -- the first runnable one, unless
  the environment variable ``REFRT_INT8_KERNEL`` names another runnable one.
* ``float_matmul()``: "packed" (refrt's AVX-512 register tiles for float32 MatMul with constant
  weights) or "blas" (NumPy's BLAS); ``REFRT_FLOAT_MATMUL=blas`` forces the BLAS.

Forcing is how one machine checks the code paths of the CPU classes below it (CI runs the kernel
tests once per kernel this CPU can execute), and how a user reproduces what refrt does on another
machine. Every kernel gives the same exact int8 results; the float32 paths differ in summation
order (docs/NUMERICS.md).

A kernel is runnable only when Numba compiles for this host (``NUMBA_CPU_NAME`` /
``NUMBA_CPU_FEATURES`` unset): code compiled for another CPU may lack the instructions. The avx2
kernel also runs when ``NUMBA_CPU_NAME`` names an AVX2 CPU (that is how it is checked under
emulation).
"""

from __future__ import annotations

import functools
import os

__all__ = ["features", "compiles_for_host", "runnable_int8_kernels", "int8_kernel", "float_matmul",
           "pick", "INT8_KERNELS", "FLOAT_MATMULS", "INT8_ENV", "FLOAT_ENV", "KernelUnavailable"]

INT8_KERNELS = ("amx", "vnni", "avx2", "portable")   # fastest first
FLOAT_MATMULS = ("packed", "blas")
INT8_ENV = "REFRT_INT8_KERNEL"
FLOAT_ENV = "REFRT_FLOAT_MATMUL"

# LLVM feature names refrt (or onnxruntime's int8 GEMM, see refrt/host.py) decides on
FEATURES = ("sse4.1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl",
            "avx512vnni", "avxvnni", "avxvnniint8", "amx-tile", "amx-int8")

# LLVM CPU names with AVX2 that NUMBA_CPU_NAME may name (compiling for another CPU than this one)
AVX2_CPU_NAMES = frozenset({
    "haswell", "broadwell", "skylake", "skylake-avx512", "cascadelake", "cooperlake", "cannonlake",
    "icelake-client", "icelake-server", "tigerlake", "alderlake", "raptorlake", "meteorlake",
    "sapphirerapids", "emeraldrapids", "graniterapids", "znver1", "znver2", "znver3", "znver4",
    "znver5", "x86-64-v3", "x86-64-v4"})


class KernelUnavailable(RuntimeError):
    """A forced or requested kernel this CPU (or this process) cannot execute."""


@functools.cache
def features() -> tuple[str, frozenset]:
    """(LLVM's name for the host CPU, the set of FEATURES it has)."""
    import llvmlite.binding as llvm

    have = llvm.get_host_cpu_features()
    return llvm.get_host_cpu_name(), frozenset(f for f in FEATURES if have.get(f, False))


def compiles_for_host() -> bool:
    """True unless Numba is told to compile for another CPU."""
    return not (os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES"))


def compiles_with_avx2() -> bool:
    """Does Numba emit AVX2 code in this process? For this host, if it has AVX2; for a CPU named
    in NUMBA_CPU_NAME, if that CPU has it (NUMBA_CPU_FEATURES, when not empty, decides)."""
    feats = os.environ.get("NUMBA_CPU_FEATURES")
    if feats:
        return "+avx2" in feats.split(",")
    name = os.environ.get("NUMBA_CPU_NAME")
    if name and name != "host":
        return name in AVX2_CPU_NAMES
    return "avx2" in features()[1]


@functools.cache
def runnable_int8_kernels() -> tuple[str, ...]:
    """The int8 GEMM kernels this process can execute, fastest first ("portable" always)."""
    _, have = features()
    runnable = []
    if compiles_for_host() and "avx512vnni" in have:
        if {"amx-tile", "amx-int8"} <= have:
            from .amx import tile_permission

            if tile_permission():
                runnable.append("amx")
        runnable.append("vnni")
    cpu_name = os.environ.get("NUMBA_CPU_NAME")
    if "avx2" in have and not os.environ.get("NUMBA_CPU_FEATURES") and (
            cpu_name in (None, "", "host") or cpu_name in AVX2_CPU_NAMES):
        runnable.append("avx2")
    runnable.append("portable")
    return tuple(runnable)


def pick(runnable, forced: str | None, choices, env: str) -> str:
    """The first of ``runnable``, or ``forced`` (a value of the variable ``env``) when it is one
    of ``choices`` and runnable; a typed error otherwise."""
    if not forced:
        return runnable[0]
    forced = forced.strip().lower()
    if forced not in choices:
        raise KernelUnavailable(f"{env}={forced!r}: expected one of {', '.join(choices)}")
    if forced not in runnable:
        raise KernelUnavailable(f"{env}={forced!r}: this CPU (or this process) cannot run it; "
                                f"it can run {', '.join(runnable)}")
    return forced


@functools.cache
def int8_kernel() -> str:
    """The int8 GEMM kernel refrt runs by default (``REFRT_INT8_KERNEL`` forces one)."""
    return pick(runnable_int8_kernels(), os.environ.get(INT8_ENV), INT8_KERNELS, INT8_ENV)


@functools.cache
def float_matmul() -> str:
    """"packed" where refrt's float32 register tiles run (AVX-512: 32 vector registers hold the
    8 x 32 tile's accumulators), else "blas"; ``REFRT_FLOAT_MATMUL`` forces one."""
    runnable = ("blas",)
    if compiles_for_host() and "avx512f" in features()[1]:
        runnable = ("packed", "blas")
    return pick(runnable, os.environ.get(FLOAT_ENV), FLOAT_MATMULS, FLOAT_ENV)


def reset() -> None:
    """Forget every cached answer (after changing the variables above, e.g. in a test)."""
    for fn in (features, runnable_int8_kernels, int8_kernel, float_matmul):
        fn.cache_clear()
