"""Operator families. Importing this package imports every module in it, which registers its ops
with :mod:`refrt.registry`; there is no hand-kept list to forget a line in."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
