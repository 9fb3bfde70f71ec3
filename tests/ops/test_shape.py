"""Shape, indexing and image ops: behaviour the ONNX backend suite does not pin down."""

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

import refrt
from refrt.errors import NodeError
from refrt.ops import image, indexing, shape
from refrt.registry import NodeContext

from helpers import const, model, readonly, vi

BF16 = np.dtype(ml_dtypes.bfloat16)


def ctx(n_outputs):
    return NodeContext(node_name="n", op_type="Split", domain="ai.onnx", opset=18,
                       n_outputs=n_outputs)


# ---------------------------------------------------------------- inputs are never mutated

def test_scatter_ops_leave_readonly_inputs_untouched():
    data = readonly(np.zeros((3, 4), np.float32))
    idx = readonly(np.array([[1, -1]], np.int64))
    upd = readonly(np.array([[5.0, 7.0]], np.float32))
    out = indexing.scatter_elements(data, idx, upd, axis=1, reduction="add")
    assert out[0, 1] == 5.0 and out[0, 3] == 7.0
    out = indexing.scatter_nd(data, readonly(np.array([[2]], np.int64)),
                              readonly(np.ones((1, 4), np.float32)))
    assert out[2].tolist() == [1, 1, 1, 1]
    assert not data.any()


def test_tensor_scatter_and_reverse_sequence_copy_their_input():
    cache = readonly(np.zeros((2, 5, 3), np.float32))
    upd = readonly(np.ones((2, 2, 3), np.float32))
    out = indexing.tensor_scatter(cache, upd, readonly(np.array([4, 1], np.int64)),
                                  mode="circular", axis=1)
    assert out[0, [4, 0]].all() and out[1, [1, 2]].all() and out.sum() == 12
    seq = readonly(np.arange(6, dtype=np.float32).reshape(3, 2))
    rev = indexing.reverse_sequence(seq, np.array([3, 1], np.int64))
    assert rev[:, 0].tolist() == [4, 2, 0] and rev[:, 1].tolist() == [1, 3, 5]
    assert not cache.any() and seq[0, 0] == 0


# ---------------------------------------------------------------- dtypes are preserved

@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_low_precision_dtypes_are_preserved(dtype):
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4).astype(dtype)
    resized = image.resize(x, None, np.array([1, 1, 2, 0.5], np.float32), mode="linear")
    assert resized.dtype == dtype and resized.shape == (1, 1, 6, 2)
    padded = shape.pad(x, np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                       np.array(2, np.float32))
    assert padded.dtype == dtype and float(padded[0, 0, 0, 0]) == 2.0
    assert shape.trilu(x[0, 0]).dtype == dtype
    assert shape.range_(np.array(0, dtype), np.array(3, dtype), np.array(1, dtype)).dtype == dtype


def test_constant_of_shape_and_constant_types():
    out = shape.constant_of_shape(np.array([2, 0], np.int64),
                                  value=np.array([3], np.int8))
    assert out.dtype == np.int8 and out.shape == (2, 0)
    assert shape.constant_of_shape(np.array([], np.int64)).shape == ()
    assert shape.constant(value_ints=[1, 2]).dtype == np.int64
    assert shape.constant(value_float=1.5).dtype == np.float32
    strings = shape.constant(value_strings=["a", "bc"])
    assert strings.dtype == object and strings.tolist() == ["a", "bc"]


def test_integer_resize_truncates_like_onnxruntime():
    x = np.array([[[[0, 255]]]], np.uint8)
    out = image.resize(x, None, np.array([1, 1, 1, 2], np.float32), mode="linear",
                       coordinate_transformation_mode="asymmetric")
    assert out.dtype == np.uint8
    assert out.ravel().tolist() == [0, 127, 255, 255]      # 127.5 truncated, not rounded


# ---------------------------------------------------------------- indices: negative and invalid

def test_negative_indices_count_from_the_end():
    data = np.arange(12).reshape(3, 4)
    assert indexing.gather(data, np.array([-1, 0]), axis=1).tolist() == [[3, 0], [7, 4], [11, 8]]
    assert indexing.gather_nd(data, np.array([[-1, -2]])).tolist() == [10]
    assert indexing.gather_elements(data, np.array([[-3]]), axis=0).tolist() == [[0]]


@pytest.mark.parametrize("call", [
    lambda d: indexing.gather(d, np.array([3]), axis=0),
    lambda d: indexing.gather(d, np.array([-4]), axis=0),
    lambda d: indexing.gather_elements(d, np.array([[4]]), axis=1),
    lambda d: indexing.gather_nd(d, np.array([[0, 9]])),
    lambda d: indexing.scatter_elements(d, np.array([[-5]]), np.array([[1]]), axis=1),
    lambda d: indexing.scatter_nd(d, np.array([[3]]), np.ones((1, 4), d.dtype)),
], ids=["gather", "gather-neg", "gather_elements", "gather_nd", "scatter_elements", "scatter_nd"])
def test_out_of_range_indices_raise_value_error(call):
    with pytest.raises(ValueError, match="out of range"):
        call(np.zeros((3, 4), np.int64))


def test_out_of_range_gather_in_a_model_names_the_node():
    node = helper.make_node("Gather", ["x", "i"], ["y"], name="lookup")
    m = model([node], [vi("x", TensorProto.FLOAT, [3])], [vi("y", TensorProto.FLOAT, None)],
              [const("i", np.array([5], np.int64))], opset=13)
    with pytest.raises(NodeError, match=r"lookup.*out of range"):
        refrt.run(m, {"x": np.zeros(3, np.float32)})


def test_onehot_out_of_range_index_gives_an_off_row():
    out = indexing.one_hot(np.array([1, -1, 7]), np.array(3), np.array([0, 9]), axis=0)
    assert out.T.tolist() == [[0, 9, 0], [0, 0, 9], [0, 0, 0]]


# ---------------------------------------------------------------- errors name what is wrong

def test_bad_axis_and_shapes_raise_clear_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        shape.concat(x, x, axis=2)
    with pytest.raises(ValueError, match="cannot squeeze axis 1 of size 3"):
        shape.squeeze(x, np.array([1], np.int64))
    with pytest.raises(ValueError, match="not a permutation"):
        shape.transpose(x, perm=[0, 0])
    with pytest.raises(ValueError, match="cannot reshape"):
        shape.reshape(x, np.array([4, 2], np.int64))
    with pytest.raises(TypeError, match="different dtypes"):
        shape.concat(x, x.astype(np.float64), axis=0)


# ---------------------------------------------------------------- spec corners

def test_slice_negative_step_clamps_start_to_zero():
    x = np.arange(5)
    # start -100 clamps to 0 (not to "before the start" as Python slicing would)
    out = shape.slice_(x, np.array([-100]), np.array([-200]), np.array([0]), np.array([-1]))
    assert out.tolist() == [0]
    out = shape.slice_(x, np.array([2**63 - 1]), np.array([-2**63]), None, np.array([-2]))
    assert out.tolist() == [4, 2, 0]


def test_shape_start_end_are_clamped():
    x = np.zeros((2, 3, 4))
    assert shape.shape(x, start=-10, end=10).tolist() == [2, 3, 4]
    assert shape.shape(x, start=2, end=1).tolist() == []
    assert shape.shape(x, start=-1).dtype == np.int64


def test_split_num_outputs_makes_the_last_chunk_smaller():
    parts = shape.split_(np.arange(7), num_outputs=3, ctx=ctx(3))
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="equal parts"):
        shape.split_(np.arange(7), ctx=ctx(2))


def test_resize_output_size_uses_a_float32_product():
    # float64 gives 10 * float32(0.7) = 6.99999988 -> 6 outputs; onnxruntime (float32) gives 7
    out = image.resize(np.zeros((1, 10), np.float32), None, np.array([1, 0.7], np.float32))
    assert out.shape == (1, 7)


def test_unique_unsorted_keeps_first_occurrence_order():
    y, first, inverse, counts = indexing.unique(np.array([2, 1, 1, 3, 2]), sorted=0)
    assert y.tolist() == [2, 1, 3] and first.tolist() == [0, 1, 3]
    assert inverse.tolist() == [0, 1, 1, 2, 0] and counts.tolist() == [2, 2, 1]


def test_pad_negative_pads_crop_before_padding():
    x = np.arange(5)
    assert shape.pad(x, np.array([-1, 2]), mode="wrap").tolist() == [1, 2, 3, 4, 1, 2]
    with pytest.raises(ValueError, match="reflect pads"):
        shape.pad(x, np.array([5, 0]), mode="reflect")


def test_identity_passes_sequences_and_optionals_through():
    seq = [np.zeros(2), np.ones(3)]
    assert shape.identity(seq) is seq
    assert shape.identity(None) is None


def test_nms_keeps_the_best_box_of_overlapping_pairs():
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 2, 1, 3]]], np.float32)
    scores = np.array([[[0.8, 0.9, 0.1]]], np.float32)
    out = image.non_max_suppression(boxes, scores, np.array([10]), np.array([0.5], np.float32),
                                    np.array([0.05], np.float32))
    assert out.tolist() == [[0, 0, 1], [0, 0, 2]] and out.dtype == np.int64
