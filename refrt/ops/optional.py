"""Optional ops: Optional, OptionalHasElement, OptionalGetElement.

An optional value is either its element (a tensor or a sequence) or ``None`` when it is empty, so
a non-empty optional and a plain tensor look the same at run time. That is exactly what opset 18
made legal: OptionalHasElement and OptionalGetElement accept plain tensors and sequences too, and
an omitted input counts as an empty optional.
"""

from __future__ import annotations

import numpy as np
from onnx import TypeProto

from ..registry import op
from ._common import np_dtype


@op("Optional", since=(15, 28))
def optional(input=None, *, type=None):
    """O = input, or an empty optional (None) of element type ``type`` when input is absent."""
    if input is None and type is None:
        raise ValueError("Optional without an input needs the 'type' attribute")
    if input is not None and isinstance(type, TypeProto) and type.HasField("tensor_type"):
        want = type.tensor_type.elem_type
        if want and (isinstance(input, list) or np.asarray(input).dtype != np_dtype(want)):
            got = "a sequence" if isinstance(input, list) else str(np.asarray(input).dtype)
            raise TypeError(f"the 'type' attribute says tensor of {np_dtype(want)}, the input is "
                            f"{got}")
    return input


@op("OptionalHasElement", since=(15, 18, 28))
def optional_has_element(input=None):
    """B = input is a non-empty optional, a tensor or a sequence (False when absent or empty)."""
    return np.array(input is not None)


@op("OptionalGetElement", since=(15, 18, 28))
def optional_get_element(input):
    """V = the element of the optional (or the tensor / sequence itself); an empty optional is an
    error (the spec leaves it undefined)."""
    if input is None:
        raise ValueError("OptionalGetElement on an empty optional")
    return input
