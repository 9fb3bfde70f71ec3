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
