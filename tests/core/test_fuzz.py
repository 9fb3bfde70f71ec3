"""The fuzz campaign that stays in CI: structure-aware mutants of real models
(``refrt.testing.mutate``: bit flips, op types, renamed inputs, cycles, attribute and initializer
edits, opsets, dropped outputs and nodes). Every outcome must be a result or a ``refrt.errors``
exception: never another exception, never a hang (per-case timeout), never a changed feed. The
deeper run is ``python scripts/fuzz.py`` (README, "Reliability")."""

from __future__ import annotations

import random

import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import refrt
from refrt.testing.mutate import KINDS, mutate, try_model


def _seeds() -> list[bytes]:
    digits = open(f"{refrt.__path__[0]}/data/digits_cnn.onnx", "rb").read()
    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Add", ["v", "one"], ["v2"]), helper.make_node("Less", ["v2", "ten"], ["c2"])],
        "b", [vi("i", TensorProto.INT64, []), vi("c", TensorProto.BOOL, []), vi("v", TensorProto.FLOAT, [])],
        [vi("c2", TensorProto.BOOL, []), vi("v2", TensorProto.FLOAT, [])],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]), helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0])])
    loop = helper.make_model(helper.make_graph(
        [helper.make_node("Loop", ["M", "cond", "v0"], ["vout"], body=body),
         helper.make_node("Reshape", ["vout", "shape"], ["r"]),
         helper.make_node("Gather", ["table", "idx"], ["g"], axis=0)], "loop",
        [vi("M", TensorProto.INT64, []), vi("cond", TensorProto.BOOL, []), vi("v0", TensorProto.FLOAT, []),
         vi("idx", TensorProto.INT64, ["n"])],
        [vi("r", TensorProto.FLOAT, None), vi("g", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(onnx.numpy_helper.to_array(helper.make_tensor("s", TensorProto.INT64, [1], [1])), "shape"),
         numpy_helper.from_array(onnx.numpy_helper.to_array(helper.make_tensor("t", TensorProto.FLOAT, [4, 2], [0.5] * 8)), "table")]),
        opset_imports=[helper.make_opsetid("", 17)])
    loop.ir_version = 8
    return [digits, loop.SerializeToString()]


SEEDS = _seeds()


def test_the_seeds_run():
    assert all(try_model(s) == "result" for s in SEEDS)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2 ** 32 - 1))
def test_every_mutant_gives_a_result_or_a_refrt_error(seed):
    rng = random.Random(seed)
    data, what = mutate(rng.choice(SEEDS), rng)
    outcome = try_model(data, seed=seed, timeout=30)
    assert outcome == "result" or outcome in ("ModelError", "UnsupportedOpError", "InputError", "NodeError",
                                              "RunAborted"), (what, outcome)


def test_every_kind_of_mutation_is_exercised():
    seen = set()
    for seed in range(400):
        _, what = mutate(SEEDS[0], random.Random(seed))
        seen.add(what.split(":")[0].split(" ")[0])
    assert seen == set(KINDS)
