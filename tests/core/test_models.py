"""Whole models against onnxruntime: a BERT-style encoder and the bundled digits CNN."""

import os

import numpy as np
import pytest

import refrt
from refrt.testing.models import bert_encoder, bert_feeds

ort = pytest.importorskip("onnxruntime")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ort_session(model, optimize=False):
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def rel_l2(a, b):
    return float(np.linalg.norm((a - b).ravel()) / np.linalg.norm(b.ravel()))


@pytest.mark.parametrize("batch, seq", [(1, 8), (3, 32)])
def test_bert_encoder_matches_ort(batch, seq):
    m = bert_encoder(layers=2, hidden=64, heads=4)
    feeds = bert_feeds(batch, seq)
    (ours,) = refrt.run(m, feeds)
    (theirs,) = ort_session(m).run(None, feeds)
    assert ours.shape == (batch, seq, 64) and ours.dtype == np.float32
    assert rel_l2(ours, theirs) < 1e-5
    # the optimized ORT graph (fused LayerNorm/Gelu/Attention) is close too
    (opt,) = ort_session(m, optimize=True).run(None, feeds)
    assert rel_l2(ours, opt) < 1e-4


def test_bert_padding_is_masked():
    """Changing the ids of padded positions leaves the other positions' outputs unchanged."""
    m = bert_encoder(layers=1, hidden=32, heads=2)
    feeds = bert_feeds(2, 16)
    sess = refrt.InferenceSession(m)
    (a,) = sess.run(None, feeds)
    ids = feeds["input_ids"].copy()
    ids[feeds["attention_mask"] == 0] = 7
    (b,) = sess.run(None, {**feeds, "input_ids": ids})
    keep = feeds["attention_mask"].astype(bool)
    np.testing.assert_allclose(a[keep], b[keep], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a[~keep], b[~keep])


def test_bundled_digits_model_matches_ort():
    path = os.path.join(ROOT, "refrt", "data", "digits_cnn.onnx")
    data = np.load(os.path.join(ROOT, "refrt", "data", "digits_test.npz"))
    (ours,) = refrt.InferenceSession(path).run(None, {"input": data["x"]})
    (theirs,) = ort_session(path).run(None, {"input": data["x"]})
    assert rel_l2(ours, theirs) < 1e-5
    assert (ours.argmax(1) == data["y"]).mean() >= 0.95
    assert (ours.argmax(1) == theirs.argmax(1)).all()
