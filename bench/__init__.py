"""Benchmarks of refrt against onnxruntime (measurement only). See bench/README.md.

Importing this package (which every script does before NumPy) tunes the process as the ``refrt``
command does (``refrt.tune_process()``: idle thread pools sleep, glibc keeps freed arrays in the
heap): several runtimes share two cores here, and a pool that spin-waits after its work
(OpenBLAS, the OpenMP layer of Numba) keeps a core busy while the next runtime needs it. Values
already set in the environment win; ``common.ort_session`` does the same for onnxruntime
(``session.intra_op.allow_spinning``, override with BENCH_ORT_SPINNING=1).
"""

from refrt.tuning import WAIT_POLICY, tune_process

TUNING = tune_process()

__all__ = ["WAIT_POLICY", "TUNING"]
