"""The Gradient operator against finite differences."""

import numpy as np
import pytest
from onnx import helper

import refrt
from refrt.errors import ModelError

from helpers import F, const, model, vi


def mlp_with_gradient(xs):
    """loss = ReduceMean(Tanh(x @ W + b) * Sigmoid(x @ W)); Gradient of loss w.r.t. xs."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("Tanh", ["hb"], ["t"]),
             helper.make_node("Sigmoid", ["h"], ["s"]),
             helper.make_node("Mul", ["t", "s"], ["p"]),
             helper.make_node("ReduceMean", ["p"], ["loss"], keepdims=0),
             helper.make_node("Gradient", xs, [f"d_{n}" for n in xs], domain="ai.onnx.preview.training",
                              xs=xs, y="loss")]
    rng = np.random.default_rng(0)
    inits = [const("W", rng.standard_normal((3, 4)).astype(np.float64)),
             const("b", rng.standard_normal(4).astype(np.float64))]
    D = 11  # TensorProto.DOUBLE
    return model(nodes, [vi("x", D, [2, 3])], [vi("loss", D, [])] + [vi(f"d_{n}", D, None) for n in xs],
                 inits, opset=17, extra_opsets=[("ai.onnx.preview.training", 1)])


def numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


def test_gradient_matches_finite_differences():
    x = np.random.default_rng(1).standard_normal((2, 3))
    m = mlp_with_gradient(["x", "W", "b"])
    sess = refrt.InferenceSession(m)
    loss, dx, dW, db = sess.run(None, {"x": x})
    W = next(t for t in m.graph.initializer if t.name == "W")
    from onnx import numpy_helper
    W = numpy_helper.to_array(W)
    b = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "b"))

    def f(x_, W_=W, b_=b):
        h = x_ @ W_
        return float(np.mean(np.tanh(h + b_) / (1 + np.exp(-h))))
    assert loss == pytest.approx(f(x))
    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(dW, numeric_grad(lambda w: f(x, w), W), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(db, numeric_grad(lambda v: f(x, W, v), b), rtol=1e-5, atol=1e-8)


def test_gradient_wrt_input_only_reads_weights_from_scope():
    x = np.ones((2, 3))
    (loss, dx) = refrt.run(mlp_with_gradient(["x"]), {"x": x})
    assert dx.shape == x.shape and np.isfinite(dx).all()


def test_gradient_through_unsupported_op_is_a_model_error():
    nodes = [helper.make_node("Floor", ["x"], ["y"]),
             helper.make_node("Gradient", ["x"], ["dx"], domain="ai.onnx.preview.training",
                              xs=["x"], y="y")]
    m = model(nodes, [vi("x", F, [2])], [vi("dx", F, [2])],
              extra_opsets=[("ai.onnx.preview.training", 1)])
    with pytest.raises(ModelError, match="cannot differentiate through Floor"):
        refrt.InferenceSession(m)
