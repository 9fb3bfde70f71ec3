"""Tools for testing other runtimes against refrt: the conformance kit.

* :mod:`refrt.testing.strategies`: hypothesis strategies of valid one-node models (``node_cases``)
  and small graphs (``graph_cases``), with refrt's outputs;
* :mod:`refrt.testing.tolerance`: how far a candidate may be from refrt, per op and dtype;
* :mod:`refrt.testing.candidates`: onnxruntime, refrt, onnx.reference, Backend classes and
  ``module:function`` runtimes, optionally in a restartable child process;
* :mod:`refrt.testing.runner`: failure classes, shrinking, reproducer folders, ``fuzz``;
* :mod:`refrt.testing.plugin`: the pytest plugin (``--refrt-candidate``);
* :mod:`refrt.testing.models`, :mod:`refrt.testing.mutate`: model builders and mutants.

Nothing is imported here, so ``import refrt.testing`` stays cheap (the pytest plugin is loaded
in every pytest session).
"""
