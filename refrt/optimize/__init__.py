"""Rewrites and summaries of a model before it runs: reduced-operator configs (``ops_config``),
onnxruntime's QDQ fusions (``qdq``), and onnxruntime's transformer optimizer for BERT-style models
(``transformer``: :func:`optimize_model`)."""

from .ops_config import required_operators_config, write_required_operators
from .transformer import OptimizeError, OptimizeResult, optimize_model

__all__ = ["required_operators_config", "write_required_operators", "optimize_model",
           "OptimizeResult", "OptimizeError"]
