"""Benchmarks of refrt against onnxruntime (measurement only). See bench/README.md.

Importing this package (which every script does before NumPy) sets the thread-pool wait
policies of the process: several runtimes share two cores here, and a pool that spin-waits after
its work (OpenBLAS, the OpenMP layer of Numba) keeps a core busy while the next runtime needs it.
Values already set in the environment win; ``common.ort_session`` does the same for onnxruntime
(``session.intra_op.allow_spinning``, override with BENCH_ORT_SPINNING=1).
"""

import os

WAIT_POLICY = {
    "OMP_WAIT_POLICY": "PASSIVE",        # Numba's OpenMP threading layer (GNU libgomp)
    "OPENBLAS_THREAD_TIMEOUT": "4",      # OpenBLAS workers sleep after 2**4 cycles, not 2**28
}
# refrt sets the same defaults when it is imported before NumPy (refrt/__init__.py); the
# benchmark sets them itself so that processes measuring only onnxruntime run alike.
for _k, _v in WAIT_POLICY.items():
    os.environ.setdefault(_k, _v)
