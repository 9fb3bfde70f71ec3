"""Helpers shared by the op families: dtypes, axes. Anything two families need lives here."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper


def np_dtype(elem_type: int) -> np.dtype:
    """ONNX TensorProto element type -> NumPy dtype (ml_dtypes for bfloat16, float8, int4, ...)."""
    if elem_type == TensorProto.STRING:
        return np.dtype(object)
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def onnx_elem_type(dtype) -> int:
    """NumPy dtype -> ONNX element type."""
    dtype = np.dtype(dtype)
    if dtype == object or dtype.kind in "SU":
        return TensorProto.STRING
    return helper.np_dtype_to_tensor_dtype(dtype)


def normalize_axis(axis: int, rank: int) -> int:
    """Map a possibly negative axis into [0, rank); raise ValueError when out of range."""
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for a tensor of rank {rank}")
    return axis + rank if axis < 0 else axis


def normalize_axes(axes, rank: int) -> tuple[int, ...]:
    return tuple(normalize_axis(int(a), rank) for a in axes)
