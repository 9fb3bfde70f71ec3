"""Node replay against onnxruntime (conformance/node_replay.py): every node of the replayed models,
fed onnxruntime's own inputs, gives onnxruntime's bits, except the differences listed with their
reasons in ``EXPECTED``."""

from __future__ import annotations

import importlib

import pytest

pytest.importorskip("onnxruntime")

from conformance import node_replay  # noqa: E402


def _mlas_float_kernels_run_here() -> bool:
    cpu = importlib.import_module("refrt.kernels.cpu")
    return {"avx2", "fma"} <= cpu.features()[1]


@pytest.fixture(scope="module")
def stats():
    return node_replay.replay_all()


@pytest.mark.skipif(not _mlas_float_kernels_run_here(),
                    reason="refrt's \"ort\" numerics reproduce onnxruntime's MLAS AVX2/AVX-512 float "
                           "kernels, which onnxruntime runs only on CPUs with AVX2 and FMA")
def test_every_replayed_node_is_bit_identical_or_expected(stats):
    surprises = node_replay.unexpected(stats)
    assert not surprises, "\n".join(f"{op} in {model}, node {node}: {eps:.3g} eps {note}"
                                    for op, model, node, eps, note in surprises)


def test_replay_covers_the_models_and_their_ops(stats):
    models = {m for s in stats.values() for m in s.models}
    assert {"digits", "bert", "mobilenet", "speech", "mobilenet QDQ", "bert dynamic"} <= models
    assert {"Conv", "MatMul", "LayerNormalization", "Softmax", "LSTM", "QLinearConv", "MatMulInteger",
            "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"} <= set(stats)
    assert sum(s.nodes for s in stats.values()) > 500
