"""Sequence, optional, string, ai.onnx.ml and training ops: behaviour the ONNX backend suite does
not pin down."""

import sys

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

import refrt
from refrt.errors import NodeError
from refrt.ops import ml, optional, sequence, strings, training

from helpers import model, readonly, vi

BF16 = np.dtype(ml_dtypes.bfloat16)


def ml_model(node, inputs, outputs, ml_opset=3):
    return model([node], inputs, outputs, opset=19, extra_opsets=[("ai.onnx.ml", ml_opset)])


# ---------------------------------------------------------------- sequences

def test_sequence_insert_and_erase_build_new_lists():
    a, b = readonly(np.zeros(2, np.float32)), readonly(np.ones(2, np.float32))
    seq = [a]
    grown = sequence.sequence_insert(seq, b, np.array(0, np.int64))
    assert grown is not seq and len(seq) == 1 and grown[0] is b and grown[1] is a
    shrunk = sequence.sequence_erase(grown)
    assert len(grown) == 2 and len(shrunk) == 1 and shrunk[0] is b


def test_loop_carried_sequence_is_not_shared_between_consumers():
    # s2 = insert(s, x); s3 = insert(s, y): s must be unchanged for the second insert
    nodes = [helper.make_node("SequenceConstruct", ["x"], ["s"]),
             helper.make_node("SequenceInsert", ["s", "x"], ["s2"]),
             helper.make_node("SequenceInsert", ["s", "y"], ["s3"]),
             helper.make_node("SequenceLength", ["s3"], ["n"])]
    m = model(nodes, [vi("x", shape=[1]), vi("y", shape=[1])],
              [vi("n", TensorProto.INT64, []),
               helper.make_tensor_sequence_value_info("s2", TensorProto.FLOAT, None)])
    n, s2 = refrt.run(m, {"x": np.ones(1, np.float32), "y": np.zeros(1, np.float32)})
    assert int(n) == 2 and len(s2) == 2


def test_sequence_position_out_of_range_is_reported():
    with pytest.raises(ValueError, match=r"position 2 is out of range .* \[-2, 1\]"):
        sequence.sequence_at([np.zeros(1), np.zeros(1)], np.array(2, np.int64))
    with pytest.raises(TypeError, match="cannot put a float64 tensor"):
        sequence.sequence_insert([np.zeros(1, np.float32)], np.zeros(1))


def test_split_and_concat_keep_low_precision_dtypes():
    x = readonly(np.arange(6, dtype=np.float32).reshape(2, 3).astype(BF16))
    parts = sequence.split_to_sequence(x, np.array(2, np.int64), axis=1)
    assert [p.shape for p in parts] == [(2, 2), (2, 1)] and all(p.dtype == BF16 for p in parts)
    stacked = sequence.concat_from_sequence(parts[:1] * 3, axis=-1, new_axis=1)
    assert stacked.shape == (2, 2, 3) and stacked.dtype == BF16
    with pytest.raises(ValueError, match="sum to the size 3"):
        sequence.split_to_sequence(x, np.array([1, 1], np.int64), axis=1)


def test_sequence_map_with_empty_sequence_gives_empty_outputs():
    def body(a):
        return [a]
    body.n_outputs = 1
    assert sequence.sequence_map([], body=body) == ([],)


# ---------------------------------------------------------------- optionals

def test_optional_get_element_on_empty_optional_is_an_error():
    assert optional.optional(None, type=helper.make_tensor_type_proto(1, None)) is None
    assert not optional.optional_has_element(None)
    with pytest.raises(ValueError, match="empty optional"):
        optional.optional_get_element(None)
    with pytest.raises(TypeError, match="says tensor of float32"):
        optional.optional(np.zeros(1, np.int64), type=helper.make_tensor_type_proto(1, None))


# ---------------------------------------------------------------- strings

def test_string_normalizer_removes_whole_elements_ignoring_case():
    x = np.array(["Monday", "monday tuesday", "Straße", "İ"], object)
    y = strings.string_normalizer(x, stopwords=["MONDAY"], case_change_action="UPPER")
    # per-character case mapping: ß and İ have no single-character upper/lower form
    assert y.tolist() == ["MONDAY TUESDAY", "STRAßE", "İ"]
    empty = strings.string_normalizer(np.array([["a", "A"]], object), stopwords=["a"])
    assert empty.shape == (1, 1) and empty[0, 0] == ""
    with pytest.raises(ValueError, match=r"\[C\] or \[1, C\]"):
        strings.string_normalizer(np.array([["a"], ["b"]], object))


@pytest.mark.parametrize("pattern, text, expected", [
    (r"\d+", "١٢", False),            # RE2's \d is ASCII only
    (r"[[:alpha:]]+", "abc", True),   # POSIX class
    (r"a$", "a\n", False),            # $ is the end of text in RE2
    (r"\Qa.b\E", "a.b", True),
    (r"\Qa.b\E", "axb", False),
    (r"ab\z", "ab", True),
])
def test_regex_full_match_follows_re2(pattern, text, expected):
    y = strings.regex_full_match(np.array([text], object), pattern=pattern)
    assert y.dtype == bool and bool(y[0]) is expected


@pytest.mark.parametrize("pattern", [r"(?=a)a", r"(a)\1", r"\pL"])
def test_regex_features_re2_lacks_are_refused(pattern):
    with pytest.raises(ValueError, match="not supported"):
        strings.regex_full_match(np.array(["a"], object), pattern=pattern)


def test_string_split_and_concat_shapes():
    y, z = strings.string_split(np.array([["a,b,,c", ""]], object), delimiter=",", maxsplit=2)
    assert y.shape == (1, 2, 3) and y[0, 0].tolist() == ["a", "b", ",c"]
    assert z.tolist() == [[3, 1]] and z.dtype == np.int64
    c = strings.string_concat(np.array("x", object), np.array(["1", "2"], object))
    assert c.dtype == object and c.tolist() == ["x1", "x2"]
    scalar = strings.string_concat(np.array("a", object), np.array("b", object))
    assert isinstance(scalar, np.ndarray) and scalar.shape == () and scalar[()] == "ab"


def test_tfidf_weights_belong_to_pool_ngrams():
    # pool unigrams [5, 7] -> output columns [1, 0]; weights follow the pool order
    kw = dict(max_gram_length=1, min_gram_length=1, max_skip_count=0, ngram_counts=[0],
              ngram_indexes=[1, 0], pool_int64s=[5, 7], weights=[0.25, 4.0])
    x = np.array([[5, 5, 7], [1, 2, 3]], np.int32)
    assert strings.tfidf_vectorizer(x, mode="TFIDF", **kw).tolist() == [[4.0, 0.5], [0, 0]]
    assert strings.tfidf_vectorizer(x, mode="IDF", **kw).tolist() == [[4.0, 0.25], [0, 0]]
    assert strings.tfidf_vectorizer(x[0], mode="TF", **kw).tolist() == [1.0, 2.0]


def test_image_decoder_names_pillow_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match="'Pillow'"):
        strings.image_decoder(np.zeros(4, np.uint8))


def test_image_decoder_gives_empty_image_for_garbage():
    pytest.importorskip("PIL")
    y = strings.image_decoder(np.frombuffer(b"not an image", np.uint8), pixel_format="Grayscale")
    assert y.shape == (0, 0, 1) and y.dtype == np.uint8


def test_image_decoder_channel_orders():
    pil = pytest.importorskip("PIL.Image")
    import io
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 200
    buf = io.BytesIO()
    pil.fromarray(rgb).save(buf, format="PNG")
    data = readonly(np.frombuffer(buf.getvalue(), np.uint8))
    assert strings.image_decoder(data)[0, 0].tolist() == [200, 0, 0]
    assert strings.image_decoder(data, pixel_format="BGR")[0, 0].tolist() == [0, 0, 200]
    assert strings.image_decoder(data, pixel_format="Grayscale").shape == (2, 3, 1)


# ---------------------------------------------------------------- ai.onnx.ml

def test_binarizer_maps_nan_to_zero_and_keeps_dtype():
    y = ml.binarizer(np.array([np.nan, 1.0, -1.0]), threshold=0.0)
    assert y.dtype == np.float64 and y.tolist() == [0.0, 1.0, 0.0]


def test_label_encoder_v4_last_duplicate_key_wins_and_nan_matches():
    y = ml.label_encoder(np.array([1, 2, 3]), keys_int64s=[1, 2, 1], values_int64s=[7, 8, 9])
    assert y.tolist() == [9, 8, -1] and y.dtype == np.int64
    keys = np.array([0.5, np.nan])
    values = np.array(["half", "nan"], object)
    y = ml.label_encoder(np.array([np.nan, 0.5, 2.0]), keys_tensor=keys, values_tensor=values)
    assert y.tolist() == ["nan", "half", "_Unused"]


def test_zipmap_and_dict_vectorizer_through_a_session():
    seq_map = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, None)))
    node = helper.make_node("ZipMap", ["x"], ["z"], domain="ai.onnx.ml",
                            classlabels_strings=["a", "b"])
    m = ml_model(node, [vi("x", shape=[None, 2])], [helper.make_value_info("z", seq_map)])
    (z,) = refrt.run(m, {"x": np.array([[0.25, 0.75]], np.float32)})
    assert z == [{"a": 0.25, "b": 0.75}]
    dmap = helper.make_map_type_proto(TensorProto.INT64,
                                      helper.make_tensor_type_proto(TensorProto.DOUBLE, None))
    node = helper.make_node("DictVectorizer", ["d"], ["y"], domain="ai.onnx.ml",
                            int64_vocabulary=[5, 3, 1])
    m = ml_model(node, [helper.make_value_info("d", dmap)], [vi("y", TensorProto.DOUBLE)])
    (y,) = refrt.run(m, {"d": {1: 4.0, 3: 8.0, 9: 1.0}})
    assert y.dtype == np.float64 and y.tolist() == [[0.0, 8.0, 4.0]]


def test_cast_map_sparse_and_string_forms():
    y = ml.cast_map({3: 1.5, 0: -2.0}, cast_to="TO_STRING", map_form="SPARSE", max_map=4)
    assert y.tolist() == [["-2.000000", "0.000000", "0.000000", "1.500000"]]
    with pytest.raises(ValueError, match="out of range"):
        ml.cast_map({7: 1.0}, map_form="SPARSE", max_map=4)


def test_linear_classifier_binary_scores():
    x = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)
    y, z = ml.linear_classifier(x, coefficients=[2.0, 0.0], classlabels_ints=[3, 7],
                                post_transform="LOGISTIC")
    p = 1 / (1 + np.exp(-2.0))
    assert y.tolist() == [7, 3]
    np.testing.assert_allclose(z, [[1 - p, p], [p, 1 - p]], rtol=1e-6)


def test_tree_ensemble_v5_keeps_float16_and_averages():
    kw = dict(tree_roots=[0, 1], nodes_modes=np.array([0, 0], np.uint8), nodes_featureids=[0, 0],
              nodes_splits=np.array([0.5, 0.0], np.float16), nodes_truenodeids=[0, 2],
              nodes_trueleafs=[1, 1], nodes_falsenodeids=[1, 3], nodes_falseleafs=[1, 1],
              leaf_targetids=[0, 0, 0, 0], leaf_weights=np.array([1, 3, 10, 20], np.float16),
              n_targets=1, aggregate_function=0)
    y = ml.tree_ensemble(readonly(np.array([[0.25], [1.0]], np.float16)), **kw)
    assert y.dtype == np.float16 and y.tolist() == [[10.5], [11.5]]


def test_tree_ensemble_regressor_missing_values_follow_tracks():
    attrs = dict(nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
                 nodes_values=[0.0, 0, 0], nodes_modes=["BRANCH_LT", "LEAF", "LEAF"],
                 nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
                 target_treeids=[0, 0], target_nodeids=[1, 2], target_ids=[0, 0],
                 target_weights=[-1.0, 1.0], n_targets=1)
    x = np.array([[np.nan], [-1.0]], np.float32)
    assert ml.tree_ensemble_regressor(x, **attrs).tolist() == [[1.0], [-1.0]]
    tracked = ml.tree_ensemble_regressor(x, nodes_missing_value_tracks_true=[1, 0, 0], **attrs)
    assert tracked.tolist() == [[-1.0], [-1.0]]


def test_ml_op_errors_name_the_problem():
    node = helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], domain="ai.onnx.ml")
    m = ml_model(node, [vi("x"), vi("i", TensorProto.INT64)], [vi("y")])
    with pytest.raises(NodeError, match=r"index 4 in Y is out of range \[0, 3\)"):
        refrt.run(m, {"x": np.zeros((2, 3), np.float32), "i": np.array([4], np.int64)})


@pytest.mark.parametrize("post_transform", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_svm_classifier_matches_onnxruntime(post_transform):
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    attrs = dict(vectors_per_class=[2, 1, 2], support_vectors=rng.normal(size=20).tolist(),
                 coefficients=rng.normal(size=10).tolist(), rho=rng.normal(size=3).tolist(),
                 prob_a=[-1.0, -2.0, -0.5], prob_b=[0.1, 0.0, -0.1], kernel_type="RBF",
                 kernel_params=[0.3, 0.0, 0.0], classlabels_ints=[4, 5, 6],
                 post_transform=post_transform)
    node = helper.make_node("SVMClassifier", ["x"], ["y", "z"], domain="ai.onnx.ml", **attrs)
    m = ml_model(node, [vi("x", shape=[None, 4])], [vi("y", TensorProto.INT64), vi("z")], 1)
    x = rng.normal(size=(7, 4)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})
    got = refrt.run(m, {"x": x})
    assert got[0].tolist() == want[0].tolist()
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- training

def test_adam_keeps_double_and_groups_several_tensors():
    x = [np.array([1.0, 2.0]), np.array([3.0])]
    g = [np.array([0.5, -0.5]), np.array([1.0])]
    v = [np.zeros(2), np.zeros(1)]
    h = [np.zeros(2), np.zeros(1)]
    out = training.adam(np.array(0.1), np.array(0, np.int64), *x, *g, *v, *h)
    assert len(out) == 6 and all(o.dtype == np.float64 for o in out)
    assert out[0].shape == (2,) and out[1].shape == (1,)
    assert out[2][0] == pytest.approx(0.05) and out[3][0] == pytest.approx(0.1)   # V' = 0.1 G
    with pytest.raises(ValueError, match=r"expected 4\*n tensor inputs"):
        training.adam(np.array(0.1), np.array(0, np.int64), *x, *g, *v)


def test_momentum_first_step_ignores_beta():
    x, g, v = np.array([1.0], np.float32), np.array([2.0], np.float32), np.zeros(1, np.float32)
    x_new, v_new = training.momentum(np.array(0.5, np.float32), np.array(0, np.int64), x, g, v,
                                     alpha=0.9, beta=0.1, mode="standard", norm_coefficient=0.0)
    assert v_new.tolist() == [2.0] and x_new.tolist() == [0.0] and x_new.dtype == np.float32
