"""Rewrites and summaries of a model before it runs: reduced-operator configs (``ops_config``)."""

from .ops_config import required_operators_config, write_required_operators

__all__ = ["required_operators_config", "write_required_operators"]
