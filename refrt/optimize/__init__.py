"""Rewrites and summaries of a model before it runs: reduced-operator configs (``ops_config``),
onnxruntime's QDQ fusions (``qdq``), and onnxruntime's transformer optimizer for BERT-style models
(``transformer``: :func:`optimize_model`). Each module is imported when first used: a session
that applies the QDQ fusions does not load the transformer optimizer."""

import importlib

_WHERE = {"required_operators_config": "ops_config", "write_required_operators": "ops_config",
          "optimize_model": "transformer", "OptimizeResult": "transformer",
          "OptimizeError": "transformer"}


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


__all__ = ["required_operators_config", "write_required_operators", "optimize_model",
           "OptimizeResult", "OptimizeError"]
