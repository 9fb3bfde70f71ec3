"""Edge cases where refrt failed or had to choose: zero-size inputs, 0-d NonZero, precision near
zero, NaN in ArgMax/ArgMin, integer overflow, integer Shrink, string padding, Split's chunk rule.

Each case runs in refrt's two numerics modes and, where they have a kernel, in onnxruntime and
onnx.reference: "ort" must give onnxruntime's result, "spec" the spec's (docs/NUMERICS.md says
which choice each mode makes where the spec is silent).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import refrt

ort = pytest.importorskip("onnxruntime")


def model(op_type, inputs, attrs=None, opset=18, n_out=1):
    names = [f"i{k}" for k in range(len(inputs))]
    node = helper.make_node(op_type, names, [f"o{k}" for k in range(n_out)], **(attrs or {}))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        n, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)) for n, v in zip(names, inputs)],
        [helper.make_empty_tensor_value_info(f"o{k}") for k in range(n_out)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m, dict(zip(names, inputs))


def run_ort(m, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def run_reference(m, feeds):
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(m).run(None, feeds)


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and (a.dtype.kind == "O" or a.dtype == b.dtype) and np.array_equal(a, b, equal_nan=True)


# ---------------------------------------------------------------- refrt's defects, fixed

@pytest.mark.parametrize("op_type, attrs, shape", [
    ("Softmax", {}, (0, 3)), ("Softmax", {}, (2, 0)), ("LogSoftmax", {}, (2, 0)), ("Hardmax", {}, (2, 0)),
    ("Softmax", {"axis": 0}, (0, 3)),
    ("MaxPool", {"kernel_shape": [2, 2]}, (0, 1, 4, 4)), ("AveragePool", {"kernel_shape": [2, 2]}, (0, 2, 4, 4)),
    ("LpPool", {"kernel_shape": [2, 2]}, (0, 1, 4, 4)), ("GlobalAveragePool", {}, (0, 3, 4, 4))])
def test_zero_size_inputs_give_empty_outputs_like_onnxruntime(op_type, attrs, shape):
    m, feeds = model(op_type, [np.zeros(shape, np.float32)], attrs)
    (expected,) = run_ort(m, feeds)
    for numerics in ("ort", "spec"):
        (got,) = refrt.run(m, feeds, numerics=numerics)
        assert got.shape == expected.shape and got.dtype == expected.dtype


@pytest.mark.parametrize("value", [3.0, 0.0])
def test_nonzero_of_a_scalar(value):
    m, feeds = model("NonZero", [np.array(value, np.float32)], opset=13)
    assert same(refrt.run(m, feeds)[0], run_ort(m, feeds)[0])             # onnxruntime: (1, n)
    assert refrt.run(m, feeds, numerics="spec")[0].shape == (0, int(value != 0))   # the spec: (rank, n)


@pytest.mark.parametrize("op_type, attrs", [("Elu", {}), ("Celu", {}), ("Selu", {}), ("Elu", {"alpha": 0.5}),
                                            ("Celu", {"alpha": 2.0})])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elu_family_keeps_precision_near_zero(op_type, attrs, dtype):
    x = -np.concatenate([2.0 ** -np.arange(1, 60), np.linspace(1e-7, 3, 50)]).astype(dtype)
    m, feeds = model(op_type, [x], attrs)
    got = refrt.run(m, feeds)[0]
    assert same(got, refrt.run(m, feeds, numerics="spec")[0])
    alpha = attrs.get("alpha", 1.0)
    if op_type == "Selu":
        exact = 1.05070102214813232421875 * 1.67326319217681884765625 * np.expm1(x.astype(np.float64))
    elif op_type == "Celu":
        exact = alpha * np.expm1(x.astype(np.float64) / alpha)
    else:
        exact = alpha * np.expm1(x.astype(np.float64))
    # within 2 units in the last place everywhere, where exp(x) - 1 lost up to 2^40 of them
    assert np.max(np.abs(got - exact) / np.spacing(np.abs(exact).astype(dtype))) <= 2
    if dtype == np.float32 and op_type == "Elu" and not attrs:
        # x = -2^-8: the correctly rounded value is -0.0038986306; NumPy's float32 expm1 is a
        # SIMD routine chosen by CPU (AVX-512 gives -0.0038986304): within 1 ULP of it
        assert abs(got[7] - np.float32(-0.0038986306)) <= np.spacing(np.float32(0.0038986306))


def test_mish_float16_follows_its_function_body():
    x = np.concatenate([np.linspace(-20, 20, 4001), [-13, -2 ** -8, 0, 1e-4]]).astype(np.float16)
    m, feeds = model("Mish", [x])
    (got,) = refrt.run(m, feeds)
    assert same(got, run_reference(m, feeds)[0])
    assert got[-4] == np.float16(-2.9445e-05)                          # x = -13, as onnxruntime too
    assert run_ort(m, feeds)[0][-4] == got[-4]


# ---------------------------------------------------------------- where the spec is silent: refrt's choices

NAN_ROWS = np.array([[1, np.nan, 3, 5], [2, 1, np.nan, np.nan], [np.nan, 4, 4, 1]], np.float32)


@pytest.mark.parametrize("op_type", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
def test_argmax_argmin_with_nan(op_type, last):
    m, feeds = model(op_type, [NAN_ROWS], {"axis": 1, "select_last_index": last}, opset=13)
    assert same(refrt.run(m, feeds)[0], run_ort(m, feeds)[0])                     # NaN never wins
    if not last:   # onnx.reference ignores select_last_index with NaN; NumPy's first NaN otherwise
        assert same(refrt.run(m, feeds, numerics="spec")[0], run_reference(m, feeds)[0])
    spec = refrt.run(m, feeds, numerics="spec")[0].ravel().tolist()
    assert spec == ([1, 3, 0] if last else [1, 2, 0])                            # the NaN is the extreme


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
@pytest.mark.parametrize("bias", [0.5, 7.4e-07, 2.25])
def test_shrink_on_integers_computes_in_float32_like_onnxruntime(dtype, bias):
    x = np.array([17, -17, 3, 0, 1, -2, 100], dtype)
    m, feeds = model("Shrink", [x], {"bias": bias, "lambd": 1.0}, opset=9)
    expected = run_ort(m, feeds)[0]
    for numerics in ("ort", "spec"):
        assert same(refrt.run(m, feeds, numerics=numerics)[0], expected)


OVERFLOWS = [("ReduceSum", np.array([[2 ** 30, 2 ** 30, 2 ** 30]], np.int32)),
             ("ReduceSum", np.array([[-2 ** 30, -2 ** 30, -2 ** 30]], np.int32)),
             ("ReduceSum", np.array([[2 ** 30, 2 ** 30, -2 ** 30]], np.int32)),     # partial sums only
             ("ReduceSum", np.array([[2 ** 62, 2 ** 62]], np.int64)),
             ("ReduceSumSquare", np.array([[60000, 60000, 60000]], np.int32)),
             ("ReduceL1", np.array([[-2 ** 30, 2 ** 30, 2 ** 30]], np.int32)),
             ("ReduceProd", np.array([[2 ** 16, 2 ** 16, 3]], np.int32))]


@pytest.mark.parametrize("op_type, x", OVERFLOWS)
def test_integer_reductions_out_of_range(op_type, x):
    m, feeds = model(op_type, [x, np.array([1], np.int64)] if op_type == "ReduceSum" else [x],
                     {"keepdims": 0}, opset=13 if op_type == "ReduceSum" else 18)
    assert same(refrt.run(m, feeds)[0], run_ort(m, feeds)[0])                       # clamped
    wrapped = refrt.run(m, feeds, numerics="spec")[0]
    exact = int(np.sum(x.astype(object)) if op_type in ("ReduceSum",) else
                np.sum(x.astype(object) ** 2) if op_type == "ReduceSumSquare" else
                np.sum(np.abs(x.astype(object))) if op_type == "ReduceL1" else np.prod(x.astype(object)))
    bits = x.dtype.itemsize * 8
    assert int(wrapped.reshape(-1)[0]) == (exact + 2 ** (bits - 1)) % 2 ** bits - 2 ** (bits - 1)   # wraps


@pytest.mark.parametrize("op_type", ["ReduceL2", "ReduceMean"])
def test_integer_mean_and_l2_are_the_mathematical_value(op_type):
    x = np.array([[60000, 60000, 60000]] if op_type == "ReduceL2" else [[2 ** 30, 2 ** 30, 2 ** 30]], np.int32)
    m, feeds = model(op_type, [x], {"keepdims": 0})
    expected = run_ort(m, feeds)[0]
    for numerics in ("ort", "spec"):
        assert same(refrt.run(m, feeds, numerics=numerics)[0], expected)
    assert not same(run_reference(m, feeds)[0], expected)        # onnx.reference wraps the inner sum


@pytest.mark.parametrize("base, exponent, dtype", [(5, 14, np.int32), (3, 20, np.int32), (2, 31, np.int32),
                                                   (-2, 31, np.int32), (7, 3, np.int32), (5, 30, np.int64),
                                                   (3, 35, np.int64)])
def test_integer_pow_out_of_range(base, exponent, dtype):
    m, feeds = model("Pow", [np.array([base], dtype), np.array([exponent], dtype)], opset=15)
    assert same(refrt.run(m, feeds)[0], run_ort(m, feeds)[0])                  # float64, then the minimum
    exact = base ** exponent
    bits = np.dtype(dtype).itemsize * 8
    assert int(refrt.run(m, feeds, numerics="spec")[0][0]) == (exact + 2 ** (bits - 1)) % 2 ** bits - 2 ** (bits - 1)


def test_strings_are_padded_with_the_empty_string():
    m, feeds = model("Pad", [np.array(["a", "b"], dtype=object), np.array([1, 1], np.int64)])
    assert refrt.run(m, feeds)[0].tolist() == ["", "a", "b", ""]
    m, feeds = model("Trilu", [np.array([["a", "b"], ["c", "d"]], dtype=object)], opset=14)
    assert refrt.run(m, feeds)[0].tolist() == [["a", "b"], ["", "d"]]


def test_split_into_more_chunks_than_the_rule_allows_is_refused_like_onnxruntime():
    m, feeds = model("Split", [np.arange(5, dtype=np.float32)], {"num_outputs": 4, "axis": 0}, n_out=4)
    with pytest.raises(Exception):
        run_ort(m, feeds)
    with pytest.raises(refrt.NodeError, match=r"ceil\(5/4\) = 2 leave a negative last one"):
        refrt.run(m, feeds)


# ---------------------------------------------------------------- zero-size sweep

def _float_ops_without_required_attributes():
    from onnx import defs
    latest = {}
    for s in defs.get_all_schemas_with_history():
        if s.domain == "" and not s.deprecated and (s.name not in latest or s.since_version > latest[s.name].since_version):
            latest[s.name] = s
    required = defs.OpSchema.FormalParameterOption.Optional
    out = []
    for name, s in sorted(latest.items()):
        inputs = [i for i in s.inputs if i.option != required]
        if (not any(a.required for a in s.attributes.values()) and 0 < len(inputs) <= 3
                and all("tensor(float)" in i.types for i in inputs)):
            out.append((name, len(inputs), max(1, len([o for o in s.outputs if o.option != required]))))
    return out


# (op, reason): onnxruntime runs these on the sweep's inputs, refrt refuses them on purpose
SWEEP_EXPECTED = {"MeanVarianceNormalization": "its default axes [0, 2, 3] need rank 4; refrt refuses "
                                               "axes beyond the rank, onnxruntime runs rank-2 inputs"}


@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (0,)])
def test_zero_size_sweep_over_float_ops_matches_onnxruntime(shape):
    """Every default-domain op that takes float tensors and needs no attribute, fed zero-size
    inputs: where onnxruntime gives a result, refrt gives one of the same shapes."""
    checked, failures = 0, []
    for name, n_in, n_out in _float_ops_without_required_attributes():
        feeds = {f"i{k}": np.zeros(shape, np.float32) for k in range(n_in)}
        m, _ = model(name, list(feeds.values()), opset=21, n_out=n_out)
        m.ir_version = 10
        try:
            expected = run_ort(m, feeds)
        except Exception:
            continue                      # onnxruntime refuses it too
        checked += 1
        try:
            got = refrt.run(m, feeds)
        except refrt.errors.RefrtError as e:
            if name not in SWEEP_EXPECTED:
                failures.append(f"{name}: {e}")
            continue
        if [np.shape(x) for x in got] != [np.shape(x) for x in expected]:
            failures.append(f"{name}: shapes {[np.shape(x) for x in got]} vs {[np.shape(x) for x in expected]}")
    assert checked > 60 and not failures, failures


# -- output types as the schemas' type constraints bind them ----------------------------------------

def _one_node(op, inputs, feeds, domain="", opset=23, **attrs):
    from onnx import TensorProto, helper

    import refrt
    vi = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
          for n, v in feeds.items()]
    g = helper.make_graph([helper.make_node(op, inputs, ["y"], domain=domain, **attrs)], "g", vi,
                          [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    m = helper.make_model(g, opset_imports=imports)
    return refrt.InferenceSession(m.SerializeToString()).run(None, feeds)[0]


def test_rms_normalization_output_has_the_scale_type():
    x = np.array([[1.0, 2.0, 3.0]], np.float16)
    y = _one_node("RMSNormalization", ["x", "s"], {"x": x, "s": np.ones(3, np.float32)})
    assert y.dtype == np.float32                   # the schema: Y is V, Scale's type
    ref = x.astype(np.float32) / np.sqrt((x.astype(np.float32) ** 2).mean() + np.float32(1e-5))
    np.testing.assert_allclose(y, ref, rtol=1e-6)


def test_layer_normalization_1_output_has_the_scale_type():
    x = np.array([[1.0, 2.0, 4.0]], np.float16)
    y = _one_node("LayerNormalization", ["x", "s"], {"x": x, "s": np.ones(3, np.float32)}, opset=11)
    assert y.dtype == np.float32


def test_matmul_integer_to_float_float16_scales_give_float16():
    a = np.array([[1, 2]], np.uint8)
    b = np.array([[3], [4]], np.int8)
    feeds = {"a": a, "b": b, "sa": np.array(0.5, np.float16), "sb": np.array(0.25, np.float16)}
    y = _one_node("MatMulIntegerToFloat", ["a", "b", "sa", "sb"], feeds, domain="com.microsoft",
                  opset=17)
    assert y.dtype == np.float16 and float(y[0, 0]) == 11 * 0.125


def test_squeeze_with_empty_axes_per_numerics():
    x = np.array([[5]], np.uint8)
    feeds = {"x": x, "axes": np.zeros(0, np.int64)}
    from onnx import TensorProto, helper

    import refrt
    g = helper.make_graph([helper.make_node("Squeeze", ["x", "axes"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1]),
                           helper.make_tensor_value_info("axes", TensorProto.INT64, [0])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    assert refrt.InferenceSession(m).run(None, feeds)[0].shape == ()               # as ORT
    assert refrt.InferenceSession(m, numerics="spec").run(None, feeds)[0].shape == (1, 1)


def test_string_outputs_are_object_arrays_even_0d():
    from onnx import TensorProto, helper

    import refrt
    g = helper.make_graph([helper.make_node("Gather", ["x", "i"], ["y"], axis=0)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.STRING, [2]),
                           helper.make_tensor_value_info("i", TensorProto.INT64, [])],
                          [helper.make_tensor_value_info("y", TensorProto.STRING, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    y = refrt.InferenceSession(m).run(None, {"x": np.array(["ab", "c"], object),
                                             "i": np.array(1, np.int64)})[0]
    assert isinstance(y, np.ndarray) and y.dtype == object and y.shape == () and y.item() == "c"


@pytest.mark.parametrize("op", ["ConvInteger", "QLinearConv", "GroupNormalization"])
def test_zero_batch_gives_an_empty_result(op):
    from onnx import TensorProto, helper

    import refrt
    x_t = np.uint8 if op != "GroupNormalization" else np.float32
    feeds = {"x": np.zeros((0, 2, 3, 3), x_t)}
    if op == "ConvInteger":
        feeds["w"] = np.ones((4, 2, 2, 2), np.int8)
        names, attrs, opset = ["x", "w"], {}, 10
    elif op == "QLinearConv":
        feeds.update(xs=np.array(0.1, np.float32), xz=np.array(0, np.uint8),
                     w=np.ones((4, 2, 2, 2), np.int8), ws=np.array(0.1, np.float32),
                     wz=np.array(0, np.int8), ys=np.array(0.2, np.float32),
                     yz=np.array(0, np.uint8))
        names, attrs, opset = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], {}, 10
    else:
        feeds.update(s=np.ones(2, np.float32), b=np.zeros(2, np.float32))
        names, attrs, opset = ["x", "s", "b"], {"num_groups": 2}, 21
    vi = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
          for n, v in feeds.items()]
    g = helper.make_graph([helper.make_node(op, names, ["y"], **attrs)], "g", vi,
                          [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    y = refrt.InferenceSession(m.SerializeToString()).run(None, feeds)[0]
    assert y.shape[0] == 0 and y.size == 0
    assert y.shape[1] == (4 if op != "GroupNormalization" else 2)


def _run_one(op, feeds, domain="", opset=17, **attrs):
    from onnx import TensorProto, helper

    import refrt
    vi = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
          for n, v in feeds.items()]
    g = helper.make_graph([helper.make_node(op, list(feeds), ["y"], domain=domain, **attrs)], "g",
                          vi, [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    m = helper.make_model(g, opset_imports=imports)
    return refrt.InferenceSession(m.SerializeToString()).run(None, feeds)[0]


@pytest.mark.parametrize("op,domain", [("MatMulInteger", ""), ("MatMulIntegerToFloat", "com.microsoft"),
                                       ("DynamicQuantizeMatMul", "com.microsoft")])
def test_an_empty_reduction_dimension_gives_zeros(op, domain):
    feeds = {"a": np.zeros((2, 0), np.float32 if op == "DynamicQuantizeMatMul" else np.uint8),
             "b": np.ones((0, 3), np.int8)}
    if op == "MatMulIntegerToFloat":
        feeds.update(sa=np.array(0.5, np.float32), sb=np.array(0.5, np.float32))
    if op == "DynamicQuantizeMatMul":
        feeds.update(sb=np.array(0.5, np.float32))
    y = _run_one(op, feeds, domain)
    assert y.shape == (2, 3) and not y.any()


def test_qlinear_global_average_pool_zero_batch():
    feeds = {"x": np.zeros((0, 2, 3, 3), np.uint8), "xs": np.array(0.1, np.float32),
             "xz": np.array(0, np.uint8), "ys": np.array(0.1, np.float32),
             "yz": np.array(0, np.uint8)}
    assert _run_one("QLinearGlobalAveragePool", feeds, "com.microsoft").shape == (0, 2, 1, 1)


def test_nan_sampling_positions_and_scales_are_named():
    import refrt
    x = np.ones((1, 1, 3, 3), np.float32)
    grid = np.zeros((1, 2, 2, 2), np.float32)
    grid[0, 1, 1, 0] = np.nan
    with pytest.raises(refrt.errors.NodeError, match="grid holds 1 NaN or infinite"):
        _run_one("GridSample", {"x": x, "grid": grid}, opset=20)
    rois = np.array([[0, 0, np.inf, 2]], np.float32)
    with pytest.raises(refrt.errors.NodeError, match="rois holds 1 NaN or infinite"):
        _run_one("RoiAlign", {"x": x, "rois": rois, "bi": np.zeros(1, np.int64)}, opset=16)
    with pytest.raises(refrt.errors.NodeError, match="finite positive"):
        _run_one("Upsample", {"x": x, "s": np.array([1, 1, np.inf, 2], np.float32)}, opset=9)


def test_dynamic_quantization_of_an_infinity_is_refused_by_name():
    import refrt
    x = np.array([[1.0, np.inf]], np.float32)
    with pytest.raises(refrt.errors.NodeError, match="contains an infinity"):
        _run_one("DynamicQuantizeMatMul", {"a": x, "b": np.ones((2, 2), np.int8),
                                           "sb": np.array(0.5, np.float32)}, "com.microsoft")


def test_unique_of_string_slices_along_an_axis():
    x = np.array([["b", "a"], ["a", "b"], ["b", "a"]], object)
    for ascending in (1, 0):
        y, first, inverse, counts = [np.asarray(v) for v in _run_unique(x, ascending)]
        order = [("a", "b"), ("b", "a")] if ascending else [("b", "a"), ("a", "b")]
        assert [tuple(r) for r in y.tolist()] == order
        assert first.tolist() == ([1, 0] if ascending else [0, 1])
        assert inverse.tolist() == ([1, 0, 1] if ascending else [0, 1, 0])
        assert counts.tolist() == ([1, 2] if ascending else [2, 1])


def _run_unique(x, ascending):
    from onnx import TensorProto, helper

    import refrt
    outs = ["y", "first", "inverse", "counts"]
    g = helper.make_graph([helper.make_node("Unique", ["x"], outs, axis=0, sorted=ascending)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.STRING, x.shape)],
                          [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                           for o in outs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    return refrt.InferenceSession(m.SerializeToString()).run(None, {"x": x})


def test_roi_align_far_outside_samples_count_as_outside():
    import refrt
    x = np.ones((1, 1, 4, 4), np.float32)
    feeds = {"x": x, "rois": np.array([[0, 0, 3e38, 3e38]], np.float32),
             "bi": np.zeros(1, np.int64)}
    y = _run_one("RoiAlign", feeds, opset=16, sampling_ratio=2)
    assert y.shape == (1, 1, 1, 1) and np.isfinite(y).all()
    # the adaptive sampling ratio of that roi asks for ~1e77 samples: refused by name
    with pytest.raises(refrt.errors.NodeError, match="RoiAlign samples of roi 0"):
        _run_one("RoiAlign", feeds, opset=16)
