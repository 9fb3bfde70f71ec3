"""Constant folding at plan time (refrt/graph/fold.py): Constant nodes and nodes of constants run
once when the session is built; results are bit for bit those of running them; hooks still see
every node; a failing node is left to fail at run time, naming itself."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import refrt
from refrt import registry
from refrt.errors import NodeError

from helpers import F, const, model, vi

I64 = TensorProto.INT64


def cnode(name, array):
    return helper.make_node("Constant", [], [name], name=f"const_{name}",
                            value=numpy_helper.from_array(np.asarray(array), name))


def folding_model():
    """x [2, 3, 4] -> (x * s + b) reshaped to [6, 4] -> + a constant row; s, b, the shape and the
    row come from Constant nodes and nodes computed from constants only (Cast, Mul, Concat,
    Shape, Sqrt, Unsqueeze) and from an initializer."""
    nodes = [
        cnode("s_half", np.array(0.5, np.float64)),
        helper.make_node("Cast", ["s_half"], ["s"], to=F, name="cast_s"),
        cnode("b0", np.linspace(-1, 1, 4, dtype=np.float32)),
        helper.make_node("Mul", ["b0", "w"], ["b"], name="scale_b"),          # w: initializer
        helper.make_node("Sqrt", ["b"], ["b_sqrt"], name="sqrt_b"),            # NaNs, quietly
        cnode("rows", np.array([6], np.int64)),
        helper.make_node("Shape", ["b0"], ["cols"], name="shape_b0"),
        helper.make_node("Concat", ["rows", "cols"], ["shape"], axis=0, name="concat_shape"),
        cnode("axes", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["b0", "axes"], ["row"], name="unsqueeze_row"),
        helper.make_node("Mul", ["x", "s"], ["xs"], name="mul_x"),
        helper.make_node("Add", ["xs", "b"], ["xb"], name="add_b"),
        helper.make_node("Reshape", ["xb", "shape"], ["x2"], name="reshape"),
        helper.make_node("Add", ["x2", "row"], ["y"], name="add_row"),
    ]
    return model(nodes, [vi("x", F, [2, 3, 4])], [vi("y", F, [6, 4]), vi("b_sqrt", F, [4]),
                                                  vi("shape", I64, [2])],
                 [const("w", np.array([3.0, -2.0, 0.25, 7.0], np.float32))])


FOLDED = {"const_s_half", "cast_s", "const_b0", "scale_b", "sqrt_b", "const_rows", "shape_b0",
          "concat_shape", "const_axes", "unsqueeze_row"}


def feed(seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((2, 3, 4)).astype(np.float32)}


def same_bits(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.dtype == v.dtype and u.shape == v.shape
        assert u.tobytes() == v.tobytes()


def test_folded_constants_give_the_unfolded_bits():
    m = folding_model()
    folded = refrt.InferenceSession(m)
    plain = refrt.InferenceSession(m, graph_optimization_level=0)   # every node on every run
    plan = folded._plan
    left = {s.node.name for s in plan.fused_steps}
    assert left == {"mul_x", "add_b", "reshape", "add_row"}
    assert {s.node.name for s in plan.steps} == left | FOLDED          # hooks see them all
    assert set(plan.folded) == {"s", "b", "b_sqrt", "shape", "row"}    # read at run time or outputs
    assert not plain._plan.folded and len(plain._plan.fused_steps) == len(m.graph.node)
    seen = []
    hooked = refrt.InferenceSession(m)
    hooked.add_hook(lambda node, inputs, outputs: seen.append(node.name))
    for seed in range(3):
        results = [s.run(None, feed(seed)) for s in (folded, plain, hooked)]
        same_bits(results[0], results[1])
        same_bits(results[0], results[2])
    assert set(seen) == left | FOLDED and len(seen) == 3 * len(m.graph.node)


def test_folded_values_are_read_only_and_outputs_are_the_callers():
    sess = refrt.InferenceSession(folding_model())
    assert all(not v.flags.writeable for v in sess._plan.folded.values())
    y, b_sqrt, shape = sess.run(None, feed())
    shape[:] = 0          # the caller's copy
    b_sqrt[:] = 1
    again = sess.run(None, feed())
    assert again[2].tolist() == [6, 4] and np.isnan(again[1]).sum() == 1


@pytest.fixture
def counted_constant(monkeypatch):
    """Every registered Constant function wrapped by a call counter."""
    calls = []
    for impl in registry.registered()[("ai.onnx", "Constant")].values():
        fn = impl.fn

        def counting(*args, _fn=fn, **kwargs):
            calls.append(1)
            return _fn(*args, **kwargs)
        monkeypatch.setattr(impl, "fn", counting)
    return calls


def test_a_constant_heavy_model_runs_its_constants_once(counted_constant):
    n = 120
    nodes, prev = [], "x"
    for i in range(n):
        nodes.append(cnode(f"c{i}", np.float32(1 + i / 1000)))
        nodes.append(helper.make_node("Mul" if i % 2 else "Add", [prev, f"c{i}"], [f"t{i}"],
                                      name=f"op{i}"))
        prev = f"t{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    m = model(nodes, [vi("x", F, [3])], [vi("y", F, [3])])
    sess = refrt.InferenceSession(m)
    assert len(counted_constant) == n          # once each, at plan time
    x = np.array([0.5, -1.0, 2.0], np.float32)
    first = sess.run(None, {"x": x})[0]
    for _ in range(4):
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], first)
    assert len(counted_constant) == n          # no run executed them again
    assert len(sess._plan.fused_steps) == n + 1
    # with a hook attached every node runs (and is seen) on every run
    seen = []
    sess.add_hook(lambda node, inputs, outputs: seen.append((node.op_type, outputs[0])))
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], first)
    assert len(counted_constant) == 2 * n
    constants = [out for op, out in seen if op == "Constant"]
    assert len(constants) == n and constants[7] == np.float32(1.007)
    plain = refrt.InferenceSession(m, graph_optimization_level=0)
    assert len(counted_constant) == 2 * n      # not folded: nothing run at plan time
    np.testing.assert_array_equal(plain.run(None, {"x": x})[0], first)
    assert len(counted_constant) == 3 * n


def bad_reshape_model():
    nodes = [cnode("data", np.arange(6, dtype=np.float32)),
             cnode("bad_shape", np.array([4, 2], np.int64)),
             helper.make_node("Reshape", ["data", "bad_shape"], ["r"], name="bad_reshape"),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    return model(nodes, [vi("x", F, [4, 2])], [vi("y", F, [4, 2])])


@pytest.mark.parametrize("hooked", [False, True])
def test_an_error_in_a_node_of_constants_still_names_the_node(hooked):
    sess = refrt.InferenceSession(bad_reshape_model())     # planning does not fail
    assert "bad_reshape" in {s.node.name for s in sess._plan.fused_steps}   # left to run
    assert {"const_data", "const_bad_shape"} <= {s.node.name for s in sess._plan.steps} - \
        {s.node.name for s in sess._plan.fused_steps}
    if hooked:
        sess.add_hook(lambda *a: None)
    with pytest.raises(NodeError, match="bad_reshape") as info:
        sess.run(None, {"x": np.zeros((4, 2), np.float32)})
    assert info.value.node_name == "bad_reshape" and info.value.op_type == "Reshape"


def test_random_ops_and_overridable_initializers_are_not_folded():
    nodes = [helper.make_node("RandomNormal", [], ["r"], shape=[4], name="rand"),
             helper.make_node("Mul", ["r", "zero"], ["r0"], name="times_zero"),
             helper.make_node("Add", ["w", "one"], ["w1"], name="w_plus_one"),
             helper.make_node("Add", ["x", "w1"], ["xw"], name="add_w"),
             helper.make_node("Add", ["xw", "r0"], ["y"], name="add_r"),
             helper.make_node("Identity", ["r"], ["noise"], name="noise")]
    # w is an initializer that is also a graph input: a feed may override it
    m = model(nodes, [vi("x", F, [4]), vi("w", F, [4])], [vi("y", F, [4]), vi("noise", F, [4])],
              [const("w", np.ones(4, np.float32)), const("one", np.ones(4, np.float32)),
               const("zero", np.zeros(4, np.float32))])
    sess = refrt.InferenceSession(m)
    assert not sess._plan.folded
    x = np.zeros(4, np.float32)
    y1, n1 = sess.run(None, {"x": x})
    y2, n2 = sess.run(None, {"x": x})
    assert not np.array_equal(n1, n2)                    # drawn on every run
    np.testing.assert_array_equal(y1, np.full(4, 2, np.float32))
    y3, _ = sess.run(None, {"x": x, "w": np.full(4, 5, np.float32)})
    np.testing.assert_array_equal(y3, np.full(4, 6, np.float32))


def test_constants_inside_a_subgraph_are_folded_in_its_plan():
    def branch(name, value):
        g = helper.make_graph([cnode(f"{name}_c", np.float32(value)),
                               helper.make_node("Mul", ["x", f"{name}_c"], [f"{name}_out"],
                                                name=f"{name}_mul")],
                              name, [], [vi(f"{name}_out", F, [3])])
        return g
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", 2.0),
                              else_branch=branch("else", -3.0), name="if")]
    m = model(nodes, [vi("cond", TensorProto.BOOL, []), vi("x", F, [3])], [vi("y", F, [3])])
    sess = refrt.InferenceSession(m)
    then_plan = sess._plan.steps[0].kwargs["then_branch"].plan
    assert set(then_plan.folded) == {"then_c"} and len(then_plan.fused_steps) == 1
    x = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(sess.run(None, {"cond": np.array(True), "x": x})[0], 2 * x)
    np.testing.assert_array_equal(sess.run(None, {"cond": np.array(False), "x": x})[0], -3 * x)


def test_twin_mode_folds_with_the_twins():
    m = model([cnode("v", np.linspace(-20, 20, 37, dtype=np.float32)),
               helper.make_node("Sigmoid", ["v"], ["s"], name="sig"),
               helper.make_node("Add", ["x", "s"], ["y"], name="add")],
              [vi("x", F, [37])], [vi("y", F, [37])])
    x = np.zeros(37, np.float32)
    a = refrt.InferenceSession(m, kernels="twins")
    b = refrt.InferenceSession(m)
    assert "s" in a._plan.folded
    same_bits(a.run(None, {"x": x}), b.run(None, {"x": x}))
