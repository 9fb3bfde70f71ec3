#!/usr/bin/env python
"""Train a small CNN on scikit-learn's 8x8 digits and export it to ONNX.

Everything here is plain NumPy: the forward pass, the backward pass (the
gradients are derived by hand, layer by layer) and the Adam optimiser.  The
goal is readability, not speed -- the data set is tiny (1797 images of 8x8
pixels), so even a naive implementation trains in a few seconds.

Network (shapes for a batch of N images)::

    input   [N, 1, 8, 8]
    conv1   Conv 3x3, 1 -> 8 channels, padding 1    -> [N, 8, 8, 8]
    relu1
    pool1   MaxPool 2x2, stride 2                   -> [N, 8, 4, 4]
    conv2   Conv 3x3, 8 -> 16 channels, padding 1   -> [N, 16, 4, 4]
    relu2
    pool2   MaxPool 2x2, stride 2                   -> [N, 16, 2, 2]
    flatten                                         -> [N, 64]
    fc1     Gemm 64 -> 32
    relu3
    fc2     Gemm 32 -> 10                           -> logits [N, 10]

Outputs written to ``--out-dir`` (default ``refrt/data``):

* ``digits_cnn.onnx``  -- the trained model (opset 13, IR version 8).
* ``digits_test.npz``  -- the held-out test split (``x``, ``y``) and a small
  calibration set of training images (``calib``) for static quantization.

Usage::

    python scripts/train_digits.py [--out-dir refrt/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

REPO_ROOT = Path(__file__).resolve().parents[1]

SEED = 0
EPOCHS = 30
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
N_CALIB = 64

OPSET = 13
IR_VERSION = 8


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def load_data():
    """Return (x_train, y_train, x_test, y_test) as float32 NCHW / int64.

    Pixel values in the raw data set are integers 0..16; we scale them to
    [0, 1].  The split is stratified and seeded, so it is the same every run.
    """
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )
    return x_train, y_train, x_test, y_test


# ---------------------------------------------------------------------------
# Layers.  Each layer has a forward function that returns (output, cache) and
# a backward function that takes d(loss)/d(output) plus the cache and returns
# d(loss)/d(input) (and the parameter gradients, if the layer has any).
# ---------------------------------------------------------------------------


def im2col(x, kh, kw, pad):
    """Unfold every kh x kw patch of ``x`` into one row of a matrix.

    x: [N, C, H, W] -> cols: [N*H_out*W_out, C*kh*kw]  (stride 1)

    Row r of ``cols`` holds the input values that the output pixel r "sees";
    the columns are ordered (c, i, j), which is the same order as a flattened
    Conv weight of shape [F, C, kh, kw].  A convolution then becomes a single
    matrix product ``cols @ weight.reshape(F, -1).T``.
    """
    n, c, h, w = x.shape
    h_out = h + 2 * pad - kh + 1
    w_out = w + 2 * pad - kw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    # One shifted view of the padded input per kernel position (i, j).
    patches = np.stack(
        [xp[:, :, i : i + h_out, j : j + w_out] for i in range(kh) for j in range(kw)],
        axis=2,
    )  # [N, C, kh*kw, H_out, W_out]
    cols = patches.transpose(0, 3, 4, 1, 2).reshape(n * h_out * w_out, c * kh * kw)
    return cols


def col2im(dcols, x_shape, kh, kw, pad):
    """Inverse bookkeeping of :func:`im2col` for the backward pass.

    Every input pixel appears in up to kh*kw rows of ``cols``; its gradient is
    the sum of the gradients of all those copies.
    """
    n, c, h, w = x_shape
    h_out = h + 2 * pad - kh + 1
    w_out = w + 2 * pad - kw + 1
    dpatches = dcols.reshape(n, h_out, w_out, c, kh * kw).transpose(0, 3, 4, 1, 2)
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    for k in range(kh * kw):
        i, j = divmod(k, kw)
        dxp[:, :, i : i + h_out, j : j + w_out] += dpatches[:, :, k]
    return dxp[:, :, pad : pad + h, pad : pad + w]


def conv_forward(x, weight, bias, pad):
    """2-D convolution, stride 1.  weight: [F, C, kh, kw], bias: [F]."""
    n, _, h, w = x.shape
    f, _, kh, kw = weight.shape
    h_out = h + 2 * pad - kh + 1
    w_out = w + 2 * pad - kw + 1
    cols = im2col(x, kh, kw, pad)  # [N*H_out*W_out, C*kh*kw]
    out = cols @ weight.reshape(f, -1).T + bias  # [N*H_out*W_out, F]
    out = out.reshape(n, h_out, w_out, f).transpose(0, 3, 1, 2)  # -> NCHW
    return out, (x.shape, cols, weight, pad)


def conv_backward(dout, cache):
    x_shape, cols, weight, pad = cache
    f, _, kh, kw = weight.shape
    # Bring dout into the same [rows, F] layout as the forward matmul output.
    dout_mat = dout.transpose(0, 2, 3, 1).reshape(-1, f)
    dweight = (dout_mat.T @ cols).reshape(weight.shape)
    dbias = dout_mat.sum(axis=0)
    dcols = dout_mat @ weight.reshape(f, -1)
    dx = col2im(dcols, x_shape, kh, kw, pad)
    return dx, dweight, dbias


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dout, x):
    # The gradient flows only where the input was positive.
    return dout * (x > 0)


def maxpool_forward(x):
    """2x2 max pooling with stride 2 (H and W must be even)."""
    n, c, h, w = x.shape
    # Group each 2x2 window into the last axis: [N, C, H/2, W/2, 4].
    windows = (
        x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    )
    argmax = windows.argmax(axis=-1)
    out = np.take_along_axis(windows, argmax[..., None], axis=-1)[..., 0]
    return out, (x.shape, argmax)


def maxpool_backward(dout, cache):
    x_shape, argmax = cache
    n, c, h, w = x_shape
    # Only the winning element of each window receives the gradient.
    dwindows = np.zeros((n, c, h // 2, w // 2, 4), dtype=dout.dtype)
    np.put_along_axis(dwindows, argmax[..., None], dout[..., None], axis=-1)
    dx = dwindows.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(x_shape)
    return dx


def dense_forward(x, weight, bias):
    """Fully connected layer, y = x @ weight.T + bias with weight: [out, in].

    This is exactly ONNX ``Gemm`` with ``transB=1``.
    """
    return x @ weight.T + bias, (x, weight)


def dense_backward(dout, cache):
    x, weight = cache
    return dout @ weight, dout.T @ x, dout.sum(axis=0)


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy loss and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # numerical stability
    exp = np.exp(shifted)
    probs = exp / exp.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    loss = -np.log(probs[np.arange(n), labels] + 1e-12).mean()
    dlogits = probs.copy()
    dlogits[np.arange(n), labels] -= 1.0
    return loss, dlogits / n


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


def init_params(rng):
    """He-normal initialisation (suited to ReLU), zero biases, float32."""

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1.weight": he((8, 1, 3, 3), 1 * 9),
        "conv1.bias": np.zeros(8, np.float32),
        "conv2.weight": he((16, 8, 3, 3), 8 * 9),
        "conv2.bias": np.zeros(16, np.float32),
        "fc1.weight": he((32, 64), 64),
        "fc1.bias": np.zeros(32, np.float32),
        "fc2.weight": he((10, 32), 32),
        "fc2.bias": np.zeros(10, np.float32),
    }


def forward(params, x):
    """Run the network; return the logits and the caches needed by backward."""
    caches = {}
    h, caches["conv1"] = conv_forward(x, params["conv1.weight"], params["conv1.bias"], pad=1)
    h, caches["relu1"] = relu_forward(h)
    h, caches["pool1"] = maxpool_forward(h)
    h, caches["conv2"] = conv_forward(h, params["conv2.weight"], params["conv2.bias"], pad=1)
    h, caches["relu2"] = relu_forward(h)
    h, caches["pool2"] = maxpool_forward(h)
    caches["flatten"] = h.shape
    h = h.reshape(h.shape[0], -1)  # same C-order flattening as ONNX Flatten(axis=1)
    h, caches["fc1"] = dense_forward(h, params["fc1.weight"], params["fc1.bias"])
    h, caches["relu3"] = relu_forward(h)
    logits, caches["fc2"] = dense_forward(h, params["fc2.weight"], params["fc2.bias"])
    return logits, caches


def backward(dlogits, caches):
    """Walk the network in reverse, returning a gradient for every parameter."""
    grads = {}
    d, grads["fc2.weight"], grads["fc2.bias"] = dense_backward(dlogits, caches["fc2"])
    d = relu_backward(d, caches["relu3"])
    d, grads["fc1.weight"], grads["fc1.bias"] = dense_backward(d, caches["fc1"])
    d = d.reshape(caches["flatten"])
    d = maxpool_backward(d, caches["pool2"])
    d = relu_backward(d, caches["relu2"])
    d, grads["conv2.weight"], grads["conv2.bias"] = conv_backward(d, caches["conv2"])
    d = maxpool_backward(d, caches["pool1"])
    d = relu_backward(d, caches["relu1"])
    _, grads["conv1.weight"], grads["conv1.bias"] = conv_backward(d, caches["conv1"])
    return grads


def predict(params, x, batch_size=512):
    logits = [forward(params, x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(logits)


def accuracy(logits, labels):
    return float((logits.argmax(axis=1) == labels).mean())


class Adam:
    """The Adam optimiser (Kingma & Ba, 2015), applied parameter by parameter."""

    def __init__(self, params, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}  # 1st moment
        self.v = {k: np.zeros_like(v) for k, v in params.items()}  # 2nd moment
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        # Bias correction compensates for m and v starting at zero.
        correction1 = 1 - self.beta1**self.t
        correction2 = 1 - self.beta2**self.t
        for k in params:
            g = grads[k]
            self.m[k] = self.beta1 * self.m[k] + (1 - self.beta1) * g
            self.v[k] = self.beta2 * self.v[k] + (1 - self.beta2) * g * g
            m_hat = self.m[k] / correction1
            v_hat = self.v[k] / correction2
            params[k] -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(np.float32)


def train(x_train, y_train, epochs, rng):
    params = init_params(rng)
    opt = Adam(params, lr=LEARNING_RATE)
    n = len(x_train)
    for epoch in range(1, epochs + 1):
        # Cosine learning-rate decay towards zero smooths the final epochs.
        opt.lr = LEARNING_RATE * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / epochs))
        order = rng.permutation(n)
        total_loss = 0.0
        for start in range(0, n, BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            logits, caches = forward(params, x_train[idx])
            loss, dlogits = softmax_cross_entropy(logits, y_train[idx])
            grads = backward(dlogits.astype(np.float32), caches)
            opt.step(params, grads)
            total_loss += loss * len(idx)
        if epoch == 1 or epoch % 5 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}  loss {total_loss / n:.4f}  lr {opt.lr:.5f}")
    return params


# ---------------------------------------------------------------------------
# ONNX export
# ---------------------------------------------------------------------------


def export_onnx(params) -> onnx.ModelProto:
    """Build the ONNX graph node by node; weights become float32 initializers."""
    conv_attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    pool_attrs = dict(kernel_shape=[2, 2], strides=[2, 2])
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1_out"], name="conv1", **conv_attrs),
        helper.make_node("Relu", ["conv1_out"], ["relu1_out"], name="relu1"),
        helper.make_node("MaxPool", ["relu1_out"], ["pool1_out"], name="pool1", **pool_attrs),
        helper.make_node("Conv", ["pool1_out", "conv2.weight", "conv2.bias"], ["conv2_out"], name="conv2", **conv_attrs),
        helper.make_node("Relu", ["conv2_out"], ["relu2_out"], name="relu2"),
        helper.make_node("MaxPool", ["relu2_out"], ["pool2_out"], name="pool2", **pool_attrs),
        helper.make_node("Flatten", ["pool2_out"], ["flatten_out"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flatten_out", "fc1.weight", "fc1.bias"], ["fc1_out"], name="fc1", transB=1),
        helper.make_node("Relu", ["fc1_out"], ["relu3_out"], name="relu3"),
        helper.make_node("Gemm", ["relu3_out", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1),
    ]
    initializers = [numpy_helper.from_array(v.astype(np.float32), name=k) for k, v in params.items()]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=initializers,
        doc_string="Small CNN trained on scikit-learn's 8x8 digits (pixels scaled to [0, 1]).",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="refrt-train-digits",
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def check_with_onnxruntime(model_path, params, x_test, y_test):
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed; skipping the cross-check")
        return
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    ort_logits = sess.run(["logits"], {"input": x_test})[0]
    np_logits = predict(params, x_test)
    max_diff = float(np.abs(ort_logits - np_logits).max())
    print(f"onnxruntime vs NumPy logits: max abs diff {max_diff:.2e}")
    if max_diff >= 1e-4:
        raise SystemExit("onnxruntime output does not match the NumPy forward pass")
    print(f"onnxruntime test accuracy: {accuracy(ort_logits, y_test):.4f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "refrt" / "data")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(SEED)
    x_train, y_train, x_test, y_test = load_data()
    print(f"train {x_train.shape}, test {x_test.shape}")

    start = time.perf_counter()
    params = train(x_train, y_train, args.epochs, rng)
    elapsed = time.perf_counter() - start
    print(f"training took {elapsed:.1f} s")
    print(f"NumPy train accuracy: {accuracy(predict(params, x_train), y_train):.4f}")
    print(f"NumPy test accuracy:  {accuracy(predict(params, x_test), y_test):.4f}")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    model_path = args.out_dir / "digits_cnn.onnx"
    data_path = args.out_dir / "digits_test.npz"
    onnx.save(export_onnx(params), str(model_path))
    # train_test_split already shuffled the training set, so its first
    # images are a random (but fixed) sample for calibration.
    np.savez_compressed(
        data_path,
        x=x_test.astype(np.float32),
        y=y_test.astype(np.int64),
        calib=x_train[:N_CALIB].astype(np.float32),
    )
    print(f"wrote {model_path} ({model_path.stat().st_size} bytes)")
    print(f"wrote {data_path} ({data_path.stat().st_size} bytes)")

    check_with_onnxruntime(model_path, params, x_test, y_test)


if __name__ == "__main__":
    main()
