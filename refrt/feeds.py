"""Feeds for a model: random values that exercise it (the CLI's ``--random-inputs``, the
debugger's), with sizes for symbolic dimensions and value ranges.

    feeds = random_feed(session, dims={"N": 4}, seed=0, ranges={None: (0, 999)})
"""

from __future__ import annotations

import numpy as np

from .errors import RefrtError
from .types import shape_of

__all__ = ["random_feed", "parse_ranges", "symbolic_dims", "split_pair"]


def symbolic_dims(sess) -> list[str]:
    """The names of the symbolic dimensions of the model's inputs, in order of appearance."""
    names = []
    for vi in sess._inputs:
        for d in shape_of(vi.type) or []:
            if isinstance(d, str) and d and d not in names:
                names.append(d)
    return names


def split_pair(item: str, what: str = "") -> tuple[str, str]:
    """``NAME=VALUE`` (a command-line item) -> (NAME, VALUE)."""
    if "=" not in item:
        raise RefrtError(f"{what + ': ' if what else ''}expected NAME=VALUE, got {item!r}")
    name, value = item.split("=", 1)
    return name, value


def parse_ranges(items) -> dict:
    """``--range`` values: ``LO:HI`` for every input, ``NAME=LO:HI`` for one -> {name or None:
    (lo, hi)}."""
    ranges = {}
    for item in items:
        name, _, bounds = item.rpartition("=")
        lo, sep, hi = bounds.partition(":")
        try:
            lo, hi = float(lo), float(hi)
        except ValueError:
            lo = None
        if not sep or lo is None or not lo <= hi:
            raise RefrtError(f"--range {item!r}: expected [NAME=]LO:HI with LO <= HI")
        ranges[name or None] = (lo, hi)
    return ranges


def random_feed(sess, dims: dict, seed: int = 0, ranges: dict | None = None) -> dict:
    """A random value for every input.

    Symbolic dims take their size from ``dims`` (default 1; a name the model does not have is an
    error). Values: integers uniform over their type's whole range (0 and 1 only would hide every
    integer mismatch), floats standard normal, booleans fair coins; ``ranges`` ({input name or
    None for all: (lo, hi)}) sets integers uniform in [lo, hi] and floats uniform in [lo, hi)."""
    from .ops._common import np_dtype

    known = symbolic_dims(sess)
    unknown = [d for d in dims if d not in known]
    if unknown:
        raise RefrtError(f"--dim {', '.join(unknown)}: the model has no such symbolic dimension; its "
                         f"inputs' symbolic dimensions are {', '.join(known) if known else '(none)'}")
    ranges = ranges or {}
    names = [vi.name for vi in sess._inputs]
    stray = [n for n in ranges if n is not None and n not in names]
    if stray:
        raise RefrtError(f"--range {', '.join(stray)}: no such input; the model's inputs are "
                         f"{', '.join(names)}")
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in sess._inputs:
        tp = vi.type
        if not tp.HasField("tensor_type"):
            raise RefrtError(f"--random-inputs cannot make a value for {vi.name!r} "
                             f"({tp.WhichOneof('value')}); pass it with --input")
        shape = [d if isinstance(d, int) and d >= 0 else int(dims.get(d, 1))
                 for d in (shape_of(tp) or [])]
        dtype = np_dtype(tp.tensor_type.elem_type)
        span = ranges.get(vi.name, ranges.get(None))
        if dtype.kind == "f" or dtype.name == "bfloat16":
            v = rng.standard_normal(shape) if span is None else rng.uniform(*span, size=shape)
            v = v.astype(dtype)
        elif dtype.kind == "b":
            v = rng.random(shape) < 0.5
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            lo, hi = (info.min, info.max) if span is None else (int(np.ceil(span[0])), int(np.floor(span[1])))
            if lo < info.min or hi > info.max or lo > hi:
                raise RefrtError(f"--range for {vi.name!r}: [{lo}, {hi}] is not inside {dtype.name}'s "
                                 f"range [{info.min}, {info.max}]")
            v = rng.integers(lo, hi, size=shape, dtype=dtype, endpoint=True)
        else:
            raise RefrtError(f"--random-inputs cannot make a value of {dtype} for {vi.name!r}")
        feeds[vi.name] = v
    return feeds
