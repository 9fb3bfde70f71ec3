"""Operator families. Each module registers its ops with :mod:`refrt.registry` when imported;
there is no hand-kept list to forget a line in. Importing this package imports none of them:
:func:`load_all` imports every family (what a session does on its first op lookup), and a
session restricted to a reduced-operator config imports only the families its ops live in
(``refrt/ops/_index.py``, kept current by a test)."""

import importlib
import pkgutil


def families() -> list[str]:
    """The names of the op family modules (``elementwise``, ``nn``, ...)."""
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


def load_all() -> None:
    for name in families():
        importlib.import_module(f"{__name__}.{name}")
