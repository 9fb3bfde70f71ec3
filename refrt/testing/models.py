"""Model builders for tests and benchmarks: plain ONNX graphs made with ``onnx.helper``.

``bert_encoder`` builds a BERT-style encoder the way exporters write it (embeddings with Gather,
LayerNormalization, multi-head attention spelled out with MatMul/Reshape/Transpose/Softmax, an
attention mask turned into an additive bias with Where, Erf-GELU), with random weights.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


class _Builder:
    def __init__(self, rng):
        self.nodes, self.inits, self.rng, self.n = [], [], rng, 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, prefix, array):
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, prefix, shape, scale=0.02):
        return self.const(prefix, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op, inputs, n_out=1, name=None, **attrs):
        name = name or self.name(op.lower())
        outs = [f"{name}_out{i}" if n_out > 1 else f"{name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def linear(self, x, d_in, d_out, prefix):
        w = self.weight(f"{prefix}.weight", (d_in, d_out))
        b = self.weight(f"{prefix}.bias", (d_out,))
        return self.node("Add", [self.node("MatMul", [x, w], name=f"{prefix}.matmul"), b],
                         name=f"{prefix}.bias_add")

    def layer_norm(self, x, hidden, prefix):
        scale = self.const(f"{prefix}.gamma", (1 + self.rng.standard_normal(hidden) * 0.05)
                           .astype(np.float32))
        bias = self.weight(f"{prefix}.beta", (hidden,))
        return self.node("LayerNormalization", [x, scale, bias], name=prefix, axis=-1,
                         epsilon=1e-12)

    def gelu(self, x, prefix):
        """x * 0.5 * (1 + erf(x / sqrt(2)))"""
        inv_sqrt2 = self.const("inv_sqrt2", np.array(1 / np.sqrt(2), np.float32))
        e = self.node("Erf", [self.node("Mul", [x, inv_sqrt2])], name=f"{prefix}.erf")
        one = self.const("one", np.array(1.0, np.float32))
        half = self.const("half", np.array(0.5, np.float32))
        return self.node("Mul", [self.node("Mul", [x, half]), self.node("Add", [e, one])],
                         name=f"{prefix}.gelu")


def bert_encoder(layers: int = 2, hidden: int = 64, heads: int = 4, intermediate: int | None = None,
                 vocab: int = 100, max_positions: int = 64, type_vocab: int = 2, seed: int = 0,
                 opset: int = 17):
    """A BERT-style encoder: inputs input_ids, attention_mask, token_type_ids (int64 [batch, seq]);
    output last_hidden_state (float32 [batch, seq, hidden])."""
    if hidden % heads:
        raise ValueError("hidden must be a multiple of heads")
    intermediate = intermediate or 4 * hidden
    head_dim = hidden // heads
    b = _Builder(np.random.default_rng(seed))
    i64 = lambda *v: b.const("shape", np.array(v, np.int64))   # noqa: E731

    # Embeddings: word + position (positions from the runtime sequence length) + token type.
    ids_shape = b.node("Shape", ["input_ids"], name="ids_shape")
    seq_len = b.node("Gather", [ids_shape, b.const("one_i", np.array(1, np.int64))],
                     name="seq_len", axis=0)
    positions = b.node("Range", [b.const("zero_i", np.array(0, np.int64)), seq_len,
                                 b.const("step_i", np.array(1, np.int64))], name="positions")
    positions = b.node("Unsqueeze", [positions, i64(0)], name="positions_2d")
    words = b.node("Gather", [b.weight("word_embeddings", (vocab, hidden)), "input_ids"],
                   name="word_embeddings.gather")
    pos = b.node("Gather", [b.weight("position_embeddings", (max_positions, hidden)), positions],
                 name="position_embeddings.gather")
    types = b.node("Gather", [b.weight("token_type_embeddings", (type_vocab, hidden)),
                              "token_type_ids"], name="token_type_embeddings.gather")
    x = b.node("Add", [b.node("Add", [words, pos]), types], name="embeddings.sum")
    x = b.layer_norm(x, hidden, "embeddings.layer_norm")

    # Attention mask [B, S] -> additive bias [B, 1, 1, S]: 0 where attended, -10000 elsewhere.
    masked = b.node("Equal", ["attention_mask", b.const("zero_mask", np.array(0, np.int64))],
                    name="mask.is_padding")
    bias = b.node("Where", [masked, b.const("neg", np.array(-10000.0, np.float32)),
                            b.const("zero_f", np.array(0.0, np.float32))], name="mask.bias")
    bias = b.node("Unsqueeze", [bias, i64(1, 2)], name="mask.bias_4d")

    # [B, S] from the runtime shape, used by every reshape.
    batch_seq = b.node("Slice", [b.node("Shape", [x], name="hidden_shape"), i64(0), i64(2)],
                       name="batch_seq")
    heads_shape = b.node("Concat", [batch_seq, i64(heads, head_dim)], name="heads_shape", axis=0)
    merged_shape = b.node("Concat", [batch_seq, i64(hidden)], name="merged_shape", axis=0)
    scale = b.const("attn_scale", np.array(1 / np.sqrt(head_dim), np.float32))

    for layer in range(layers):
        p = f"layer{layer}"

        def split_heads(t, perm, name):
            r = b.node("Reshape", [t, heads_shape], name=f"{name}.reshape")
            return b.node("Transpose", [r], name=f"{name}.transpose", perm=perm)

        q = split_heads(b.linear(x, hidden, hidden, f"{p}.query"), [0, 2, 1, 3], f"{p}.q")
        k = split_heads(b.linear(x, hidden, hidden, f"{p}.key"), [0, 2, 3, 1], f"{p}.k")
        v = split_heads(b.linear(x, hidden, hidden, f"{p}.value"), [0, 2, 1, 3], f"{p}.v")
        scores = b.node("Mul", [b.node("MatMul", [q, k], name=f"{p}.qk"), scale],
                        name=f"{p}.scale")
        scores = b.node("Add", [scores, bias], name=f"{p}.mask_add")
        probs = b.node("Softmax", [scores], name=f"{p}.softmax", axis=-1)
        ctx = b.node("MatMul", [probs, v], name=f"{p}.context")
        ctx = b.node("Transpose", [ctx], name=f"{p}.context.transpose", perm=[0, 2, 1, 3])
        ctx = b.node("Reshape", [ctx, merged_shape], name=f"{p}.context.reshape")
        attn = b.linear(ctx, hidden, hidden, f"{p}.attention.output")
        x = b.layer_norm(b.node("Add", [attn, x], name=f"{p}.attention.residual"), hidden,
                         f"{p}.attention.layer_norm")
        h = b.gelu(b.linear(x, hidden, intermediate, f"{p}.intermediate"), f"{p}.intermediate")
        h = b.linear(h, intermediate, hidden, f"{p}.output")
        x = b.layer_norm(b.node("Add", [h, x], name=f"{p}.output.residual"), hidden,
                         f"{p}.output.layer_norm")

    b.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                        ["batch", "seq", hidden])
    graph = helper.make_graph(b.nodes, "bert_encoder", ints, [out], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="refrt.testing")
    model.ir_version = 8
    return model


def bert_feeds(batch: int = 2, seq: int = 16, vocab: int = 100, seed: int = 0) -> dict:
    """Random token ids, a mask with padding at the end of each row but the first, token types."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    for row in range(1, batch):
        mask[row, seq - row * max(1, seq // (2 * batch)):] = 0
    types = np.zeros((batch, seq), np.int64)
    types[:, seq // 2:] = 1
    return {"input_ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64),
            "attention_mask": mask, "token_type_ids": types}


def mobilenet_like(channels: tuple = (16, 24, 32), classes: int = 10, seed: int = 0,
                   opset: int = 17):
    """A MobileNetV3-style conv net: input ``image`` (float32 [batch, 3, H, W], H and W multiples of
    8), output ``probs`` (float32 [batch, classes]).

    A 3x3 stride-2 stem with hard-swish; then per stage a depthwise 3x3 (or 5x5, stride 2)
    convolution, a squeeze-and-excitation block (GlobalAveragePool, two 1x1 convolutions, Relu,
    HardSigmoid, Mul), a pointwise 1x1 convolution, Clip(0, 6) or a residual Add; an AveragePool,
    a ConvTranspose back up and a Sigmoid/Tanh pair; GlobalAveragePool, Flatten, Gemm and Softmax
    at the head. Batch normalization is folded into the weights, as exporters leave it."""
    b = _Builder(np.random.default_rng(seed))

    def conv(x, c_in, c_out, k, stride=1, group=1, prefix="conv"):
        fan_in = c_in // group * k * k
        w = b.weight(f"{prefix}.weight", (c_out, c_in // group, k, k), scale=1 / np.sqrt(fan_in))
        bias = b.weight(f"{prefix}.bias", (c_out,), scale=0.1)
        return b.node("Conv", [x, w, bias], name=prefix, kernel_shape=[k, k], strides=[stride] * 2,
                      pads=[k // 2] * 4, group=group)

    def hard_swish(x, prefix):
        gate = b.node("HardSigmoid", [x], name=f"{prefix}.hsig", alpha=1 / 6, beta=0.5)
        return b.node("Mul", [x, gate], name=f"{prefix}.hswish")

    def squeeze_excite(x, c, prefix):
        s = b.node("GlobalAveragePool", [x], name=f"{prefix}.pool")
        s = b.node("Relu", [conv(s, c, max(4, c // 2), 1, prefix=f"{prefix}.reduce")],
                   name=f"{prefix}.relu")
        s = conv(s, max(4, c // 2), c, 1, prefix=f"{prefix}.expand")
        gate = b.node("HardSigmoid", [s], name=f"{prefix}.gate", alpha=0.2, beta=0.5)
        return b.node("Mul", [x, gate], name=f"{prefix}.scale")

    x = hard_swish(conv("image", 3, channels[0], 3, stride=2, prefix="stem"), "stem")
    c = channels[0]
    for i, c_out in enumerate(channels):
        p = f"block{i}"
        k, stride = (5, 2) if i % 2 else (3, 1)
        d = conv(x, c, c, k, stride=stride, group=c, prefix=f"{p}.depthwise")
        d = b.node("Relu", [d], name=f"{p}.relu") if i % 2 == 0 else hard_swish(d, p)
        d = squeeze_excite(d, c, f"{p}.se")
        d = conv(d, c, c_out, 1, prefix=f"{p}.pointwise")
        if stride == 1 and c_out == c:
            x = b.node("Add", [x, d], name=f"{p}.residual")
        else:
            x = b.node("Clip", [d, b.const("zero", np.array(0, np.float32)),
                                b.const("six", np.array(6, np.float32))], name=f"{p}.clip")
        c = c_out

    pooled = b.node("AveragePool", [x], name="avgpool", kernel_shape=[2, 2], strides=[2, 2])
    w_up = b.weight("up.weight", (c, c, 2, 2), scale=1 / np.sqrt(4 * c))
    up = b.node("ConvTranspose", [pooled, w_up], name="up", kernel_shape=[2, 2], strides=[2, 2])
    mixed = b.node("Mul", [b.node("Sigmoid", [up], name="up.sigmoid"),
                           b.node("Tanh", [x], name="x.tanh")], name="mix")
    x = b.node("Add", [x, mixed], name="mix.add")
    spread = b.node("ReduceMean", [x], name="channel_mean", axes=[1], keepdims=1)
    x = b.node("Sub", [x, spread], name="center")
    feats = b.node("Flatten", [b.node("GlobalAveragePool", [x], name="head.pool")], name="flatten")
    logits = b.node("Gemm", [feats, b.weight("fc.weight", (classes, c), scale=1 / np.sqrt(c)),
                             b.weight("fc.bias", (classes,), scale=0.1)], name="fc", transB=1)
    b.nodes.append(helper.make_node("Softmax", [logits], ["probs"], name="softmax", axis=-1))
    graph = helper.make_graph(
        b.nodes, "mobilenet_like",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="refrt.testing")
    model.ir_version = 8
    return model


def speech_rnn(features: int = 40, hidden: int = 32, classes: int = 12, seed: int = 0,
               opset: int = 17):
    """A small speech-style recurrent model: input ``frames`` (float32 [time, batch, features]),
    output ``log_probs`` (float32 [time, batch, classes]).

    A bidirectional LSTM, a GRU over its concatenated directions, a per-frame MatMul + Add,
    LogSoftmax; with the shape plumbing exporters write (Shape, Gather, Constant, Concat,
    Reshape) and a ReduceSum/Div frame normalization."""
    b = _Builder(np.random.default_rng(seed))
    scale = 1 / np.sqrt(hidden)
    x = "frames"
    # Per-utterance normalization over time: x - mean_t(x).
    total = b.node("ReduceSum", [x, b.const("axis0", np.array([0], np.int64))], name="norm.sum",
                   keepdims=1)
    t = b.node("Cast", [b.node("Gather", [b.node("Shape", [x], name="norm.shape"),
                                          b.const("zero_i", np.array(0, np.int64))],
                               name="norm.time")], name="norm.time_f", to=TensorProto.FLOAT)
    x = b.node("Sub", [x, b.node("Div", [total, t], name="norm.mean")], name="norm.center")

    lstm_w = b.weight("lstm.W", (2, 4 * hidden, features), scale=scale)
    lstm_r = b.weight("lstm.R", (2, 4 * hidden, hidden), scale=scale)
    lstm_b = b.weight("lstm.B", (2, 8 * hidden), scale=scale)
    y, _, _ = b.node("LSTM", [x, lstm_w, lstm_r, lstm_b], n_out=3, name="lstm",
                     hidden_size=hidden, direction="bidirectional")
    # Y is [T, 2, B, H]: directions next to each other per frame, [T, B, 2H].
    y = b.node("Transpose", [y], name="lstm.transpose", perm=[0, 2, 1, 3])
    shape = b.node("Concat", [b.node("Slice", [b.node("Shape", [y], name="lstm.shape"),
                                               b.const("s0", np.array([0], np.int64)),
                                               b.const("s2", np.array([2], np.int64))],
                                     name="lstm.batch_dims"),
                              b.const("width", np.array([2 * hidden], np.int64))],
                   name="lstm.new_shape", axis=0)
    y = b.node("Reshape", [y, shape], name="lstm.merge")
    gru_w = b.weight("gru.W", (1, 3 * hidden, 2 * hidden), scale=scale)
    gru_r = b.weight("gru.R", (1, 3 * hidden, hidden), scale=scale)
    gru_b = b.weight("gru.B", (1, 6 * hidden), scale=scale)
    g, _ = b.node("GRU", [y, gru_w, gru_r, gru_b], n_out=2, name="gru", hidden_size=hidden,
                  linear_before_reset=1)
    g = b.node("Squeeze", [g, b.const("axis1", np.array([1], np.int64))], name="gru.squeeze")
    logits = b.linear(g, hidden, classes, "classifier")
    b.nodes.append(helper.make_node("LogSoftmax", [logits], ["log_probs"], name="log_softmax",
                                    axis=-1))
    graph = helper.make_graph(
        b.nodes, "speech_rnn",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["time", "batch", features])],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["time", "batch", classes])],
        b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="refrt.testing")
    model.ir_version = 8
    return model
