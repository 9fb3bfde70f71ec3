"""refrt's com.microsoft quantization ops (refrt/ops/contrib_quant.py) against onnxruntime.

Every case is a one-node model run by onnxruntime's CPU provider (graph optimizations off) and
by refrt with the options that reproduce onnxruntime on this machine
(``refrt.host.ort_matching_options()``: ``emulate_avx2_u8s8`` where its u8 x s8 GEMM saturates). Cases are drawn from seeded generators: shapes (broadcasting, odd lengths, vector
tails), per-tensor and per-column parameters, uint8 and int8, full-range values (0, 255, -128,
127 included), power-of-two and odd scales (power-of-two scales make exact .5 ties in the
requantization), K up to 1,000.

Agreement demanded:

* integer outputs exactly, float outputs bit for bit: QuantizeLinear / DequantizeLinear,
  QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearSoftmax, QLinearConcat,
  QLinearWhere, QLinearAveragePool, QLinearGlobalAveragePool, DynamicQuantizeMatMul,
  MatMulIntegerToFloat, QGemm, DynamicQuantizeLSTM (onnxruntime run with 1, 2 and 3 intra-op
  threads, refrt given the same ``intra_op_num_threads``: ORT quantizes the hidden state per
  chunk of ceil(batch / threads) rows; sequence lengths, empty and short sequences, Y omitted,
  peepholes, initial states, clip, input_forget, per-column scales, other activations);
* QAttention: the projection is bit for bit, the attention part (MLAS exp, its summation
  order) within |d| <= 1e-6 + 1e-5 |ort| (observed <= 4e-7 relative);
* QEmbedLayerNormalization: ORT's own layer-norm loop (x / e * gamma + beta cancels where
  beta ~ -x / e * gamma), within 1e-5 |ort| + 1e-6 max|ort|;
* MatMulNBits: float32 sums in another order, within 2e-5 * max|y| (accuracy_level 0 and 4);
* MLAS's tanh (DynamicQuantizeLSTM's cells) against ORT's Tanh op: bit for bit.

Cases onnxruntime rejects (refrt runs them; tested against formulas in test_contrib_quant_ops):

* MatMulIntegerToFloat and QGemm with int8 A and uint8 B: no onnxruntime kernel;
* DynamicQuantizeLSTM with non-zero int8 weight zero points ("InputWeight zero point must be
  zero"), per-column uint8 zero points that are not all one value, in both directions ("must
  be constant"), or weights that are graph inputs; with Y omitted and an empty sequence ORT
  reads an uninitialized buffer as that row's hidden state (it still enters the quantization
  range of its batch chunk), so its results vary from run to run: not compared;
* MatMulNBits with 8-bit weights and float zero points; weight_prepacked=1 (refrt refuses);
* QLinearAdd / QLinearMul with an omitted A or B zero point: onnxruntime's type inference
  fails ("Input data type does not match"); an omitted C zero point is compared;
* QLinearSigmoid / QLinearLeakyRelu with constant scales and the trailing Y_zero_point
  omitted: onnxruntime 1.32 aborts the process (an out-of-range input index assertion);
* QLinearSoftmax results beyond the type's maximum saturate (ORT 1.32 and refrt agree).

With the session option ``emulate_avx2_u8s8`` the u8 x s8 products of DynamicQuantizeMatMul,
MatMulIntegerToFloat, QGemm, QAttention, DynamicQuantizeLSTM and (through the saturating
convolution kernel) QLinearConv match onnxruntime on an AVX2 CPU without VNNI bit for bit, checked under
``qemu-x86_64 -cpu Haswell`` (``test_avx2_emulation_of_contrib_gemms``).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import refrt
from refrt.kernels.activations import mlas_tanh
from refrt.kernels.conv import conv_u8s8_avx2_saturating

from helpers import one_node
from ort_helpers import avx2_ort_prefix, ort_session, refrt_like_ort, run_models_avx2

pytest.importorskip("onnxruntime")

MS = "com.microsoft"
F = np.float32
SCALES = np.array([0.5, 0.25, 2.0 ** -7, 0.1, 0.037, 0.3, 1 / 3, 0.02], F)
EXAMPLES: dict[str, int] = {}


def run_both(op_type, inputs, attrs=None, n_outputs=1, const=()):
    model, feeds = one_node(op_type, inputs, attrs, n_outputs=n_outputs, const=const, opset=13)
    EXAMPLES[op_type] = EXAMPLES.get(op_type, 0) + 1
    return refrt_like_ort(model).run(None, feeds), ort_session(model).run(None, feeds)


def assert_exact(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
        if a.dtype.kind == "f":
            assert np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}")), \
                f"{int((a != b).sum())} float values differ"
        else:
            assert np.array_equal(a, b), f"{int((a != b).sum())} of {a.size} values differ"


def assert_close(ours, theirs, rtol=1e-5, atol=1e-6):
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(a, b)


def check_exact(op_type, inputs, attrs=None, n_outputs=1, const=()):
    assert_exact(*run_both(op_type, inputs, attrs, n_outputs, const))


class Draw:
    """Seeded draws of codes, scales and zero points."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def codes(self, shape, dt):
        info = np.iinfo(dt)
        x = self.rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dt)
        if x.size > 4:   # the extremes, always
            flat = x.reshape(-1)
            flat[:4] = [info.min, info.max, 0, info.max // 2]
        return x

    def scale(self):
        return np.array(self.rng.choice(SCALES), F)

    def zp(self, dt):
        info = np.iinfo(dt)
        return np.array(self.rng.choice([info.min, info.max, 0, self.rng.integers(info.min,
                                                                               info.max)]), dt)

    def floats(self, *shape, scale=1.0):
        return (self.rng.standard_normal(shape) * scale).astype(F)


DTYPES = [np.uint8, np.int8]
BINARY_SHAPES = [((5, 7), (5, 7)), ((5, 1), (1, 7)), ((1,), (3, 4)), ((3, 4), ()),
                 ((2, 3, 40), (40,)), ((2, 1, 40), (2, 3, 40)), ((33,), (33,)), ((), ())]


# ---------------------------------------------------------------- element-wise and tables

@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("op_type", ["QLinearAdd", "QLinearMul"])
def test_qlinear_add_mul_bit_exact(op_type, seed):
    d = Draw(seed)
    dt = DTYPES[seed % 2]
    a_shape, b_shape = BINARY_SHAPES[seed % len(BINARY_SHAPES)]
    a, b = d.codes(a_shape, dt), d.codes(b_shape, dt)
    check_exact(op_type, [a, d.scale(), d.zp(dt), b, d.scale(), d.zp(dt), d.scale(), d.zp(dt)])
    check_exact(op_type, [a, d.scale(), d.zp(dt), b, d.scale(), d.zp(dt), d.scale(), None])


LARGE_SHAPES = [((300, 300), (300, 300)), ((1, 300), (400, 300)), ((400, 300), (1,)),
                ((2, 1, 256, 128), (2, 3, 256, 128))]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("op_type", ["QLinearAdd", "QLinearMul"])
def test_qlinear_add_mul_on_large_tensors_bit_exact(op_type, seed):
    """Large enough that refrt looks the results up in a table of the 65536 pairs of codes."""
    d = Draw(100 + seed)
    dt = DTYPES[seed % 2]
    a_shape, b_shape = LARGE_SHAPES[seed % len(LARGE_SHAPES)]
    a, b = d.codes(a_shape, dt), d.codes(b_shape, dt)
    check_exact(op_type, [a, d.scale(), d.zp(dt), b, d.scale(), d.zp(dt), d.scale(), d.zp(dt)])
    check_exact(op_type, [b, d.scale(), d.zp(dt), a, d.scale(), d.zp(dt), d.scale(), d.zp(dt)])


@pytest.mark.parametrize("seed", range(16))
def test_qlinear_lookup_ops_bit_exact(seed):
    d = Draw(seed)
    dt = DTYPES[seed % 2]
    x = np.arange(256, dtype=np.uint8).view(dt).reshape(4, 64)    # every code
    y_scale = np.array(1 / 256, F) if seed % 3 == 0 else d.scale()
    check_exact("QLinearSigmoid", [x, d.scale(), d.zp(dt), y_scale, d.zp(dt)])
    check_exact("QLinearLeakyRelu", [x, d.scale(), d.zp(dt), d.scale(), d.zp(dt)],
                {"alpha": float(d.rng.choice([0.01, 0.1, 0.3]))})
    check_exact("QLinearLeakyRelu", [x, d.scale(), None, d.scale(), d.zp(dt)], const=(1, 3, 4))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("opset,axis,shape", [(13, -1, (3, 4, 9)), (13, 0, (3, 4, 9)),
                                              (12, 1, (3, 4, 9)), (13, -1, (2, 300))])
def test_qlinear_softmax_bit_exact(opset, axis, shape, seed):
    d = Draw(seed)
    dt = DTYPES[seed % 2]
    yz = np.array(0 if dt == np.uint8 else -128, dt)
    y_scale = np.array(1 / 256, F) if seed % 4 else np.array(1 / 200, F)
    check_exact("QLinearSoftmax", [d.codes(shape, dt), d.scale(), d.zp(dt), y_scale, yz],
                {"opset": opset, "axis": axis})


@pytest.mark.parametrize("seed", range(12))
def test_qlinear_concat_and_where_bit_exact(seed):
    d = Draw(seed)
    dt = DTYPES[seed % 2]
    ys, yz = d.scale(), d.zp(dt)
    same = [d.codes((2, 3), dt), ys, yz]                            # copied as is
    check_exact("QLinearConcat", [ys, yz, *same, d.codes((2, 5), dt), d.scale(), d.zp(dt),
                                  d.codes((2, 1), dt), d.scale(), d.zp(dt)], {"axis": -1})
    cond = d.rng.random((3, 4)) < 0.5
    check_exact("QLinearWhere", [cond, d.codes((3, 4), dt), d.scale(), d.zp(dt),
                                 d.codes((4,), dt), d.scale(), d.zp(dt), d.scale(), d.zp(dt)])
    check_exact("QLinearWhere", [cond[:, :1], d.codes((1, 4), dt), d.scale(), d.zp(dt),
                                 d.codes((), dt), d.scale(), d.zp(dt), d.scale(), d.zp(dt)],
                const=(2, 3, 5, 6, 7, 8))


POOLS = [{"kernel_shape": [3, 3]},
         {"kernel_shape": [2, 3], "pads": [1, 1, 1, 0], "strides": [2, 1]},
         {"kernel_shape": [3, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1},
         {"kernel_shape": [3, 3], "ceil_mode": 1, "strides": [2, 2]},
         {"kernel_shape": [5, 6]},                                   # the global fallback
         {"kernel_shape": [2, 2], "channels_last": 1},
         {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"},
         {"kernel_shape": [3], "pads": [1, 1]}]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("attrs", POOLS, ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_qlinear_average_pool_bit_exact(attrs, seed):
    d = Draw(seed)
    dt = DTYPES[seed % 2]
    x = d.codes((2, 3, 5, 6), dt)
    if len(attrs["kernel_shape"]) == 1:
        x = x[:, :, 0]
    if attrs.get("channels_last"):
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    check_exact("QLinearAveragePool", [x, d.scale(), d.zp(dt), d.scale(), d.zp(dt)], attrs)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("channels_last", [0, 1])
def test_qlinear_global_average_pool_bit_exact(channels_last, seed):
    d = Draw(seed)
    dt = DTYPES[seed % 2]
    shape = [(2, 3, 5, 6), (1, 17, 9), (2, 8, 2, 3, 4)][seed % 3]
    check_exact("QLinearGlobalAveragePool", [d.codes(shape, dt), d.scale(), d.zp(dt),
                                             d.scale(), d.zp(dt)],
                {"channels_last": channels_last})


@pytest.mark.parametrize("seed", range(8))
def test_contrib_quantize_dequantize_bit_exact(seed):
    d = Draw(seed)
    dt = DTYPES[seed % 2]
    x = d.floats(2, 3, 10, scale=3.0)
    x.reshape(-1)[:4] = np.array([0.5, 1.5, -2.5, 3.5], F) * F(0.25)   # .5 ties
    check_exact("QuantizeLinear", [x, np.array(0.25, F), d.zp(dt)])
    check_exact("QuantizeLinear", [x, (d.rng.random(3) * 0.1 + 0.01).astype(F),
                                   d.codes((3,), dt)], {"axis": 1})
    check_exact("QuantizeLinear", [x.astype(np.float16), np.array(0.02, np.float16), d.zp(dt)])
    q = d.codes((2, 3, 10), dt)
    check_exact("DequantizeLinear", [q, d.scale(), d.zp(dt)])
    check_exact("DequantizeLinear", [q, np.array(0.02, np.float16), d.zp(dt)])
    check_exact("DequantizeLinear", [q, (d.rng.random(10) * 0.1).astype(F), d.codes((10,), dt)],
                {"axis": 2})


# ---------------------------------------------------------------- integer GEMMs

@pytest.mark.parametrize("seed", range(12))
def test_dynamic_quantize_matmul_and_matmul_integer_to_float_bit_exact(seed):
    d = Draw(seed)
    bt = DTYPES[seed % 2]
    k = [16, 1, 255, 1000][seed % 4]
    n = 7
    a = d.floats(2, 5, k, scale=2.0)
    b = d.codes((k, n), bt)
    per_col = seed % 3 == 1
    bs = (d.rng.random(n) * 0.05 + 1e-3).astype(F) if per_col else d.scale()
    bz = d.codes((n,), bt) if per_col else (None if seed % 3 == 2 else d.zp(bt))
    bias = d.floats(n) if seed % 2 else None
    check_exact("DynamicQuantizeMatMul", [a, b, bs, bz, bias], const=(1,) if seed % 4 else ())
    au = d.codes((3, k), np.uint8)
    check_exact("MatMulIntegerToFloat", [au, b, d.scale(), bs, d.zp(np.uint8), bz, bias])
    check_exact("MatMulIntegerToFloat", [d.codes((2, 3, k), np.int8), d.codes((k, n), np.int8),
                                         d.scale(), d.scale()], const=(1,))


@pytest.mark.parametrize("seed", range(12))
def test_qgemm_bit_exact(seed):
    d = Draw(seed)
    at, bt = [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)][seed % 3]
    m, k, n = 4, [16, 3, 300][seed % 3], 7
    trans_a, trans_b = seed % 2, (seed // 2) % 2
    a = d.codes((k, m) if trans_a else (m, k), at)
    b = d.codes((n, k) if trans_b else (k, n), bt)
    per_col = seed % 4 < 2
    bs = (d.rng.random(n) * 0.05 + 1e-3).astype(F) if per_col else d.scale()
    bz = d.codes((n,), bt) if per_col else d.zp(bt)
    c = [None, d.rng.integers(-5000, 5000, (n,)).astype(np.int32),
         d.rng.integers(-5000, 5000, (m, n)).astype(np.int32)][seed % 3]
    attrs = {"alpha": float(d.rng.choice([1.0, 0.7])), "transA": trans_a, "transB": trans_b}
    ins = [a, d.scale(), d.zp(at), b, bs, bz, c]
    check_exact("QGemm", ins, attrs, const=(3,) if seed % 2 else ())
    check_exact("QGemm", ins + [d.scale(), d.zp(at)], attrs)


@pytest.mark.parametrize("seed", range(8))
def test_qattention(seed):
    d = Draw(seed)
    wt = DTYPES[seed % 2]
    batch, seq, hidden_in, hidden, heads = 2, 5, 16, 12, 3
    x = d.codes((batch, seq, hidden_in), np.uint8)
    w = d.codes((hidden_in, 3 * hidden), wt)
    per_col = seed % 3 == 1
    ws = (d.rng.random(3 * hidden) * 0.02).astype(F) if per_col else np.array(0.01, F)
    wz = d.codes((3 * hidden,), wt) if per_col else d.zp(wt)
    mask = [None, np.array([5, 3], np.int32),
            (d.rng.random((batch, seq)) < 0.8).astype(np.int32)][seed % 3]
    ins = [x, w, d.floats(3 * hidden), np.array(0.05, F), ws, mask, d.zp(np.uint8), wz]
    assert_close(*run_both("QAttention", ins, {"num_heads": heads}, const=(1,) if seed % 2 else ()))
    past = d.floats(2, batch, heads, 4, hidden // heads)
    assert_close(*run_both("QAttention", ins[:5] + [None] + ins[6:] + [past],
                           {"num_heads": heads, "unidirectional": 1}, n_outputs=2))


@pytest.mark.parametrize("seed", range(6))
def test_qembed_layer_normalization(seed):
    d = Draw(seed)
    qt = DTYPES[seed % 2]
    vocab, positions, segments, hidden = 20, 8, 2, 16
    ids = d.rng.integers(0, vocab, (2, 6)).astype(np.int32)
    seg = d.rng.integers(0, segments, (2, 6)).astype(np.int32)
    mask = (d.rng.random((2, 6)) < 0.7).astype(np.int32)
    ins = [ids, seg, d.codes((vocab, hidden), qt), d.codes((positions, hidden), qt),
           d.codes((segments, hidden), qt), d.codes((hidden,), qt), d.codes((hidden,), qt), mask,
           d.scale(), d.scale(), d.scale(), d.scale(), d.scale(),
           d.zp(qt), d.zp(qt), d.zp(qt), d.zp(qt), d.zp(qt)]
    ours, theirs = run_both("QEmbedLayerNormalization", ins, n_outputs=2)
    assert_close(ours, theirs, rtol=1e-5, atol=1e-6 * float(np.abs(theirs[0]).max()))


@pytest.mark.parametrize("bits,k,block", [(4, 64, 32), (4, 80, 16), (4, 128, 64), (8, 80, 16),
                                          (8, 128, 64), (2, 64, 32), (2, 80, 16)])
@pytest.mark.parametrize("zp_kind", ["none", "uint8", "float"])
@pytest.mark.parametrize("accuracy_level", [0, 4])
def test_matmul_nbits(bits, k, block, zp_kind, accuracy_level):
    if bits == 8 and zp_kind == "float":
        pytest.skip("onnxruntime: no 8-bit kernel with float zero points")
    d = Draw(bits * 1000 + k)
    n, blocks = 6, -(-k // block)
    b = d.rng.integers(0, 256, (n, blocks, block * bits // 8)).astype(np.uint8)
    scales = (d.rng.random(n * blocks) * 0.1).astype(F)
    zp = {"none": None,
          "uint8": d.rng.integers(0, 256, n * -(-blocks * bits // 8)).astype(np.uint8),
          "float": (d.rng.random(n * blocks) * (1 << bits)).astype(F)}[zp_kind]
    ins = [d.floats(3, k), b, scales, zp, None, d.floats(n)]
    ours, theirs = run_both("MatMulNBits", ins, {"K": k, "N": n, "bits": bits,
                                                 "block_size": block,
                                                 "accuracy_level": accuracy_level},
                            const=(1, 2, 3))
    bound = 2e-5 * float(np.abs(theirs[0]).max())
    np.testing.assert_allclose(ours[0], theirs[0], rtol=0, atol=bound)


LSTM_CASES = [  # (seq, batch, input, hidden, options)
    (4, 3, 5, 6, ""), (4, 3, 5, 6, "lens"), (4, 3, 5, 6, "lens short"),
    (4, 3, 5, 6, "lens no-Y"), (1, 2, 5, 6, "lens short"), (4, 3, 5, 6, "peep init"),
    (4, 3, 5, 6, "clip per-column"), (4, 3, 5, 6, "input_forget no-bias"), (5, 7, 9, 8, "lens"),
    (3, 1, 40, 12, "init"), (3, 5, 40, 260, ""), (3, 3, 40, 260, "lens"),
    (9, 9, 50, 33, "lens peep init"), (4, 2, 5, 6, "activations"),
]


def dynamic_quantize_lstm_case(seed, seq, batch, n_in, hidden, options):
    """Inputs and attributes of a DynamicQuantizeLSTM node (weights in the forms onnxruntime
    accepts: int8 zero points 0, uint8 zero points one value)."""
    d = Draw(seed)
    wt = DTYPES[seed % 2]
    direction = ["forward", "reverse", "bidirectional"][seed % 3]
    nd = 2 if direction == "bidirectional" else 1
    w = d.codes((nd, n_in, 4 * hidden), wt)
    r = d.codes((nd, hidden, 4 * hidden), wt)
    zp = np.zeros((), wt) if wt == np.int8 else d.zp(wt)
    cols = (nd, 4 * hidden) if "per-column" in options else (nd,)
    lens = None
    if "lens" in options:   # empty sequences too, except without Y (see the module docstring)
        top = seq if "short" in options else seq + 1    # short: all shorter than X
        lens = d.rng.integers(1 if "no-Y" in options else 0, top, batch).astype(np.int32)
    ins = [d.floats(seq, batch, n_in), w, r,
           None if "no-bias" in options else d.floats(nd, 8 * hidden, scale=0.1), lens,
           d.floats(nd, batch, hidden, scale=0.5) if "init" in options else None,
           d.floats(nd, batch, hidden, scale=0.5) if "init" in options else None,
           d.floats(nd, 3 * hidden, scale=0.3) if "peep" in options else None,
           (d.rng.random(cols) * 0.02).astype(F), np.full(cols, zp),
           (d.rng.random(cols) * 0.02).astype(F), np.full(cols, zp)]
    attrs = {"hidden_size": hidden, "direction": direction}
    if "clip" in options:
        attrs["clip"] = 0.5
    if "input_forget" in options:
        attrs["input_forget"] = 1
    if "activations" in options:
        attrs["activations"] = ["HardSigmoid", "Tanh", "Sigmoid"] * nd
    return ins, attrs


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", LSTM_CASES, ids=lambda c: "-".join(map(str, c)).replace(" ", "+"))
@pytest.mark.parametrize("seed", range(3))
def test_dynamic_quantize_lstm_bit_exact(seed, case, threads):
    """Bit for bit with onnxruntime run with ``threads`` intra-op threads (its batch chunks)."""
    import onnxruntime as ort

    *shape, options = case
    ins, attrs = dynamic_quantize_lstm_case(seed + 10 * threads, *shape, options)
    model, feeds = one_node("DynamicQuantizeLSTM", ins, attrs, n_outputs=3, const=(1, 2, 9, 11),
                            opset=13)
    if "no-Y" in options:
        model.graph.node[0].output[0] = ""
        del model.graph.output[0]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    theirs = ort.InferenceSession(model.SerializeToString(), so,
                                  providers=["CPUExecutionProvider"]).run(None, feeds)
    ours = refrt_like_ort(model, sess_options=so).run(None, feeds)
    EXAMPLES["DynamicQuantizeLSTM"] = EXAMPLES.get("DynamicQuantizeLSTM", 0) + 1
    assert_exact(ours, theirs)


def test_dynamic_quantize_lstm_thread_chunks_matter():
    """onnxruntime quantizes H per chunk of ceil(batch / threads) rows: with 2 threads and
    batch 3 its results differ from the 1-thread ones, and refrt follows intra_op_num_threads
    (0, the default, is onnxruntime's default: the physical core count)."""
    from refrt.ops._common import physical_cores

    ins, attrs = dynamic_quantize_lstm_case(0, 4, 3, 5, 6, "")
    model, feeds = one_node("DynamicQuantizeLSTM", ins, attrs, n_outputs=3, const=(1, 2, 9, 11),
                            opset=13)
    one = refrt.InferenceSession(model, intra_op_num_threads=1).run(None, feeds)
    two = refrt.InferenceSession(model, intra_op_num_threads=2).run(None, feeds)
    default = refrt.InferenceSession(model).run(None, feeds)
    cores = refrt.InferenceSession(model, intra_op_num_threads=physical_cores()).run(None, feeds)
    assert_exact(default, cores)
    assert not np.array_equal(one[0], two[0])


def test_mlas_tanh_matches_onnxruntime_tanh():
    x = np.concatenate([np.linspace(-12, 12, 40001, dtype=F),
                        Draw(3).floats(20000, scale=3.0), np.array([0, -0.0, 9, -9, 1e-30], F)])
    model, feeds = one_node("Tanh", [x], domain="", opset=13)
    (expected,) = ort_session(model).run(None, feeds)
    got = mlas_tanh(x)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    exact = np.tanh(x.astype(np.float64)).astype(F)
    assert np.abs(got.view(np.int32).astype(np.int64) - exact.view(np.int32)).max() <= 4  # ULP


def test_dynamic_quantize_lstm_and_matmul_nbits_leave_inputs_alone():
    ins, attrs = dynamic_quantize_lstm_case(1, 4, 3, 5, 6, "lens peep init")
    for v in ins:
        if v is not None:
            v.setflags(write=False)
    before = [None if v is None else v.copy() for v in ins]
    model, feeds = one_node("DynamicQuantizeLSTM", ins, attrs, n_outputs=3, opset=13)
    refrt.InferenceSession(model).run(None, feeds)
    assert all(v is None or np.array_equal(v, b) for v, b in zip(ins, before))
    d = Draw(5)
    a = d.floats(2, 64)
    a.setflags(write=False)
    b = d.rng.integers(0, 256, (3, 2, 16)).astype(np.uint8)
    model, feeds = one_node("MatMulNBits", [a, b, np.ones(6, F)],
                            {"K": 64, "N": 3, "bits": 4, "block_size": 32, "accuracy_level": 4},
                            const=(1, 2), opset=13)
    sess = refrt.InferenceSession(model)
    first = sess.run(None, feeds)[0]
    assert np.array_equal(sess.run(None, feeds)[0], first)   # weights packed once, reused
    assert np.array_equal(a, Draw(5).floats(2, 64))


# ---------------------------------------------------------------- AVX2 saturation

def test_avx2_emulation_of_contrib_gemms(tmp_path):
    """With ``emulate_avx2_u8s8`` the u8 x s8 contrib GEMMs, DynamicQuantizeLSTM and the
    saturating convolution match onnxruntime on an AVX2 CPU without VNNI (natively or under
    QEMU) bit for bit, and the cases do saturate (the exact results differ)."""
    prefix, reason = avx2_ort_prefix()
    if prefix is None:
        pytest.skip(reason)
    d = Draw(99)
    k, n = 64, 8
    a_u8 = d.rng.integers(200, 256, (2, 6, k)).astype(np.uint8)
    b_s8 = d.rng.choice(np.array([-128, 127, -120, 110], np.int8), size=(k, n))
    af = (a_u8.astype(F) - 128) * F(0.03)
    af.reshape(-1)[0], af.reshape(-1)[1] = F(-0.1), F(4.0)
    cases = [
        ("DynamicQuantizeMatMul", [af, b_s8, np.array(0.01, F), None, d.floats(n)], {}, (1,)),
        ("MatMulIntegerToFloat", [a_u8, b_s8, np.array(0.02, F), np.array(0.01, F),
                                  np.array(3, np.uint8), np.array(0, np.int8)], {}, ()),
        ("QGemm", [a_u8[0], np.array(0.02, F), np.array(3, np.uint8), b_s8,
                   np.array(0.01, F), np.array(0, np.int8), None, np.array(64.0, F),
                   np.array(128, np.uint8)], {}, (3,)),
        ("QAttention", [a_u8, np.ascontiguousarray(np.tile(b_s8, (1, 3))[:, :24]),
                        d.floats(24), np.array(0.002, F), np.array(0.001, F), None,
                        np.array(3, np.uint8), np.array(0, np.int8)], {"num_heads": 2}, (1,)),
    ]
    runs = [one_node(op_type, ins, attrs, const=const, opset=13)
            for op_type, ins, attrs, const in cases]
    x = d.rng.integers(200, 256, (1, 5, 6, 6)).astype(np.uint8)
    w = d.rng.choice(np.array([-128, 127, -120, 110], np.int8), size=(4, 5, 3, 3))
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    vals = [x, F(1.0), np.uint8(0), w, F(1.0), np.int8(3), F(2048.0), np.uint8(128)]
    inits = [numpy_helper.from_array(np.asarray(v), nm) for nm, v in zip(names, vals) if nm != "x"]
    conv = helper.make_model(helper.make_graph(
        [helper.make_node("QLinearConv", names, ["y"], pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], initializer=inits),
        opset_imports=[helper.make_opsetid("", 13)])
    conv.ir_version = 8
    hidden = 8   # one batch row: onnxruntime's thread count does not matter
    lstm = one_node("DynamicQuantizeLSTM", [
        (d.rng.random((5, 1, 16)) * 4 - 0.05).astype(F),
        d.rng.choice(np.array([-128, 127, -120, 110], np.int8), size=(1, 16, 4 * hidden)),
        d.rng.choice(np.array([-128, 127, -120, 110], np.int8), size=(1, hidden, 4 * hidden)),
        d.floats(1, 8 * hidden, scale=0.1), None, None, None, None, np.array([0.002], F),
        np.zeros(1, np.int8), np.array([0.01], F), np.zeros(1, np.int8)],
        {"hidden_size": hidden}, n_outputs=3, const=(1, 2, 9, 11), opset=13)
    results = run_models_avx2(runs + [(conv, {"x": x}), lstm], tmp_path, prefix)
    emulated = refrt.InferenceSession(lstm[0], emulate_avx2_u8s8=True).run(None, lstm[1])
    assert_exact(emulated, results[-1])
    exact = refrt.InferenceSession(lstm[0]).run(None, lstm[1])
    assert not np.array_equal(exact[0], emulated[0])
    results = results[:-1]
    saturated = 0
    for (model, feeds), expected in zip(runs, results):
        emulated = refrt.InferenceSession(model, emulate_avx2_u8s8=True).run(None, feeds)
        exact = refrt.InferenceSession(model).run(None, feeds)
        assert_close(emulated, expected[:1], rtol=1e-5, atol=1e-6)
        saturated += int((exact[0] != emulated[0]).sum())
    acc = conv_u8s8_avx2_saturating(x, w, 0, 3, 1, [1, 1, 1, 1], [1, 1], [1, 1])
    y = np.clip(np.rint(acc.astype(F) * F(1 / 2048)) + 128, 0, 255).astype(np.uint8)
    assert np.array_equal(y, results[-1][0])
    assert saturated > 0
