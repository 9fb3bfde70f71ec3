"""The int8 GEMM kernels (amx, vnni, avx2, portable) and the blockwise int8 GEMM against their
NumPy twins, bit for bit; onnxruntime's AVX2 u8 x s8 saturation and its emulation."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_data import (
    FILLS,
    SETTINGS,
    K,
    T,
    gemm_cases,
    int_array,
    make_gemm_case,
    same_bits,
)

from ort_helpers import avx2_ort_prefix

# --------------------------------------------------------------------------- GEMM


def _vnni_available():
    return importlib.import_module(K.__name__ + ".vnni").available()


def _amx_available():
    return _vnni_available() and importlib.import_module(K.__name__ + ".amx").available()


NO_VNNI = "this CPU has no AVX512-VNNI (or Numba compiles for another CPU): the vnni kernel cannot run"
NO_AMX = ("this CPU has no AMX-INT8, the OS refused the tile state, or Numba compiles for another "
          "CPU: the amx kernel cannot run")
# every GEMM kernel refrt has; "vnni" and "amx" run only where the CPU has them
GEMM_KERNELS = [
    "portable",
    pytest.param("vnni", marks=pytest.mark.skipif(not _vnni_available(), reason=NO_VNNI)),
    pytest.param("amx", marks=pytest.mark.skipif(not _amx_available(), reason=NO_AMX)),
    pytest.param("avx2", marks=pytest.mark.skipif(
        not importlib.import_module(K.__name__ + ".avx2").available(),
        reason="this CPU has no AVX2 (or Numba compiles for a CPU without it): the avx2 kernel cannot run")),
]


@pytest.mark.parametrize("kernel", GEMM_KERNELS)
@SETTINGS
@given(case=gemm_cases)
def test_gemm_int8_matches_twin(kernel, case):
    a, b, az, bz = make_gemm_case(case)
    expected = T.gemm_int8_twin(a, b, az, bz)
    got = K.gemm_int8(a, b, az, bz, kernel=kernel)
    assert got.dtype == np.int32 and got.flags.c_contiguous and np.array_equal(got, expected)
    assert np.array_equal(K.gemm_int8(a, K.pack_b(b), az, bz, kernel=kernel), expected)  # packed once, reused
    bt = K.pack_b(np.ascontiguousarray(b.T), transposed=True)
    assert np.array_equal(K.gemm_int8(a, bt, az, bz, kernel=kernel), expected)


@pytest.mark.parametrize("kernel", GEMM_KERNELS)
@SETTINGS
@given(case=gemm_cases, per_column=st.booleans(), bias=st.booleans(), seed=st.integers(0, 2**31))
def test_gemm_int8_scaled_matches_twin(kernel, case, per_column, bias, seed):
    # the int32 product, then float32(c) * scale (+ bias): the same bits as the two twins
    a, b, az, bz = make_gemm_case(case)
    rng = np.random.default_rng(seed)
    n = b.shape[1]
    s = (rng.random(n if per_column else 1) * 10.0 ** rng.integers(-9, 2)).astype(np.float32)
    bb = (rng.standard_normal(n) * 100).astype(np.float32) if bias else None
    expected = T.scale_bias_int32_twin(T.gemm_int8_twin(a, b, az, bz), s, bb)
    got = K.gemm_int8_scaled(a, K.pack_b(b), az, bz, s, bb, kernel=kernel)
    assert got.dtype == np.float32 and got.flags.c_contiguous and same_bits(got, expected)


@pytest.mark.parametrize("kernel", GEMM_KERNELS)
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 15, 16, 17, 31, 32, 33, 47, 48, 64, 79])
def test_gemm_int8_row_tiles_and_column_panels(kernel, m):
    # every row-tile decomposition (AMX 32, 16; VNNI 8, 4, 2, 1; AVX2 6, 4, 2, 1), column counts
    # around the 32- and 16-wide panels, K around the 64-byte AMX tile rows and the AVX2 kernel's
    # 512-k blocks
    rng = np.random.default_rng(m)
    for n, k in [(31, 5), (32, 64), (33, 130), (96, 3), (1, 1), (40, 63), (17, 65), (64, 192), (15, 1025),
                 (16, 512), (5, 514)]:
        a = rng.integers(0, 256, (m, k)).astype(np.uint8)
        b = rng.integers(-128, 128, (k, n)).astype(np.int8)
        assert np.array_equal(K.gemm_int8(a, b, 7, -3, kernel=kernel), T.gemm_int8_twin(a, b, 7, -3))


@pytest.mark.parametrize("kernel", GEMM_KERNELS)
def test_gemm_int8_scalar_zero_points_and_wraparound(kernel):
    a = np.full((2, 3), 255, np.uint8)
    b = np.full((3, 2), -128, np.int8)
    assert np.array_equal(K.gemm_int8(a, b, 0, 0, kernel=kernel), np.full((2, 2), 3 * 255 * -128, np.int32))
    assert np.array_equal(K.gemm_int8(a, b, 255, 0, kernel=kernel), np.zeros((2, 2), np.int32))
    # 40,000 products of 255 * 255 overflow int32: the result wraps like an int32 accumulator
    big = K.gemm_int8(np.full((1, 40000), 255, np.uint8), np.full((40000, 1), 255, np.uint8), kernel=kernel)
    assert big[0, 0] == np.int64(40000 * 255 * 255).astype(np.int32)
    assert np.array_equal(big, T.gemm_int8_twin(np.full((1, 40000), 255, np.uint8),
                                                np.full((40000, 1), 255, np.uint8)))


def test_gemm_int8_rejects_bad_operands():
    a = np.zeros((2, 3), np.uint8)
    with pytest.raises(ValueError):
        K.gemm_int8(a, np.zeros((4, 2), np.int8))
    with pytest.raises(TypeError):
        K.gemm_int8(a.astype(np.int16), np.zeros((3, 2), np.int8))
    with pytest.raises(ValueError):
        K.gemm_int8(a, np.zeros((3, 2), np.int8), a_zp=[1, 2, 3])
    with pytest.raises(ValueError):
        K.gemm_int8(a, np.zeros((3, 2), np.int8), b_zp=[1, 2, 3])
    assert K.gemm_int8(np.zeros((0, 3), np.uint8), np.zeros((3, 2), np.int8)).shape == (0, 2)
    with pytest.raises(ValueError, match="kernel"):
        K.gemm_int8(a, np.zeros((3, 2), np.int8), kernel="sme")


@pytest.mark.skipif(not _vnni_available(), reason=NO_VNNI)
def test_vnni_kernel_is_vpdpbusd_register_tiles():
    V = importlib.import_module(K.__name__ + ".vnni")
    counts = V._instructions()
    # 8-row tile x 2 vectors: 16 vpdpbusd in the 8-row loop body, plus the 4-, 2- and 1-row tiles
    assert counts["vpdpbusd"] >= 16 + 8 + 4 + 2
    assert counts["vpmaddwd"] == 0 and counts["vpdpbusds"] == 0   # (vpmulld: the zero-point fold)


@SETTINGS
@given(m=st.integers(0, 50), n=st.integers(1, 50), per_column=st.booleans(), bias=st.booleans(),
       seed=st.integers(0, 2**31))
def test_scale_bias_int32_matches_twin(m, n, per_column, bias, seed):
    rng = np.random.default_rng(seed)
    c = rng.integers(-2**31, 2**31, (2, m, n)).astype(np.int32)
    s = (rng.random(n if per_column else 1) * 10.0 ** rng.integers(-8, 3)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) * 1e3 if bias else None
    b = np.where(rng.random(n) < 0.2, -0.0, b).astype(np.float32) if bias else None
    got = K.scale_bias_int32(c, s, b)
    assert same_bits(got, T.scale_bias_int32_twin(c, s, b))


@pytest.mark.skipif(not importlib.import_module(K.__name__ + ".avx2").available(),
                    reason="this CPU has no AVX2 (or Numba compiles for a CPU without it)")
def test_avx2_kernel_is_vpmaddwd_register_tiles():
    counts = importlib.import_module(K.__name__ + ".avx2")._instructions()
    # 6-row tile x 2 vectors: 12 pair products in the 6-row loop body, plus the 4-, 2- and 1-row
    # tiles, each once storing and once adding to C; on a VNNI CPU LLVM may merge a product and
    # its add into vpdpwssd
    assert counts["vpmaddwd"] + counts["vpdpwssd"] >= 2 * (12 + 8 + 4 + 2)
    assert counts["vpdpbusd"] == 0


@pytest.mark.skipif(not _amx_available(), reason=NO_AMX)
def test_amx_kernel_is_tile_products():
    A = importlib.import_module(K.__name__ + ".amx")
    counts = A._instructions()
    # 32-row block: 4 tdpbusd, 16-row block: 2; the K loop may be unrolled
    assert counts["tdpbusd"] >= 6 and counts["tileloadd"] >= 3 + 2 and counts["tilestored"] >= 6
    assert counts["ldtilecfg"] >= 1 and counts["tilerelease"] >= 1
    assert counts["vpdpbusd"] >= 8 + 4 + 2 + 1   # rows below one tile: the VNNI tiles


def test_amx_kernel_refuses_panels_not_padded_to_64():
    A = importlib.import_module(K.__name__ + ".amx")
    V = importlib.import_module(K.__name__ + ".vnni")
    bt = np.ones((4, 10), np.int8)
    with pytest.raises(ValueError, match="multiple of 64"):
        A.gemm(np.ones((16, 10), np.uint8), V.pack_b(bt, bt.sum(axis=1, dtype=np.int64)),
               np.zeros(16, np.int64), np.zeros(4, np.int64))


@SETTINGS
@given(gemm_cases)
def test_gemm_u8s8_avx2_saturating_matches_twin(case):
    case = dict(case, a_dtype=np.uint8, b_dtype=np.int8)
    a, b, az, bz = make_gemm_case(case)
    got = K.gemm_u8s8_avx2_saturating(a, b, az, bz)
    assert np.array_equal(got, T.gemm_u8s8_avx2_saturating_twin(a, b, az, bz))


@SETTINGS
@given(st.integers(1, 30), st.integers(1, 600), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_saturation_never_triggers_for_weights_in_minus64_63(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (m, k), endpoint=True).astype(np.uint8)
    b = rng.integers(-64, 63, (k, n), endpoint=True).astype(np.int8)
    az, bz = int(rng.integers(0, 256)), int(rng.integers(-128, 128))
    assert np.array_equal(K.gemm_u8s8_avx2_saturating(a, b, az, bz), K.gemm_int8(a, b, az, bz))


def test_saturation_pairs_k_with_k_plus_1():
    a = np.array([[255, 255, 255]], np.uint8)
    b = np.array([[127], [127], [127]], np.int8)
    # pair (0, 1): 2 * 32385 = 64770 -> 32767; k = 2 pairs with the zero padding: 32385
    assert K.gemm_u8s8_avx2_saturating(a, b)[0, 0] == 32767 + 32385
    assert K.gemm_int8(a, b)[0, 0] == 3 * 32385
    b = np.array([[127], [-128], [-128]], np.int8)  # opposite signs in the first pair: no saturation
    assert K.gemm_u8s8_avx2_saturating(a, b)[0, 0] == 255 * (127 - 128) + 255 * -128
    with pytest.raises(TypeError):
        K.gemm_u8s8_avx2_saturating(a.astype(np.int8), b)



# --- ORT's AVX2 u8 x s8 saturation -------------------------------------------------------------

_SAT_SHAPES = [(m, k, n) for m in (1, 7, 64) for k in (1, 3, 64, 255, 768) for n in (1, 5, 64)]

_ORT_MATMULINTEGER_SCRIPT = r'''
import sys
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

data = np.load(sys.argv[1])
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
results = {}
for i in range(int(data["count"])):
    a, b, az, bz = data[f"a{i}"], data[f"b{i}"], data[f"az{i}"], data[f"bz{i}"]
    for const_b in (False, True):
        vi = helper.make_tensor_value_info
        inputs = [vi("A", TensorProto.UINT8, list(a.shape)), vi("az", TensorProto.UINT8, []),
                  vi("bz", TensorProto.INT8, list(bz.shape))]
        inits = [numpy_helper.from_array(b, "B")] if const_b else []
        if not const_b:
            inputs.append(vi("B", TensorProto.INT8, list(b.shape)))
        graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B", "az", "bz"], ["Y"])], "g",
                                  inputs, [vi("Y", TensorProto.INT32, [a.shape[0], b.shape[1]])], initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feed = {"A": a, "az": az, "bz": bz}
        if not const_b:
            feed["B"] = b
        results[f"y{i}_{int(const_b)}"] = sess.run(None, feed)[0]
np.savez(sys.argv[2], **results)
'''


def _matmulinteger_cases():
    rng = np.random.default_rng(2024)
    cases = []
    for i, (m, k, n) in enumerate(_SAT_SHAPES):
        a = rng.integers(0, 255, (m, k), endpoint=True).astype(np.uint8)
        b = rng.integers(-128, 127, (k, n), endpoint=True).astype(np.int8)
        if i % 5 == 0:  # worst case for the int16 pairs
            a[:] = 255
            b[:] = rng.choice(np.array([-128, 127], np.int8), size=b.shape)
        az = np.array(rng.integers(0, 256), np.uint8)
        bz = (rng.integers(-128, 128, n).astype(np.int8) if i % 2 else np.array(rng.integers(-128, 128), np.int8))
        cases.append((a, b, az, bz))
    return cases


def test_avx2_saturation_emulation_matches_onnxruntime(tmp_path):
    """gemm_u8s8_avx2_saturating == ORT MatMulInteger (u8 x s8) bit for bit on a CPU without VNNI.

    On a VNNI CPU ORT's u8 x s8 GEMM is exact, so the comparison runs ORT under user-mode QEMU
    emulating a Haswell (AVX2, no VNNI) when qemu-x86_64 is installed, and is skipped otherwise.
    """
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    prefix, reason = avx2_ort_prefix()
    if prefix is None:
        pytest.skip(reason)
    cases = _matmulinteger_cases()
    np.savez(tmp_path / "in.npz", count=len(cases),
             **{f"{key}{i}": v for i, case in enumerate(cases) for key, v in zip(("a", "b", "az", "bz"), case)})
    (tmp_path / "run_ort.py").write_text(_ORT_MATMULINTEGER_SCRIPT)
    command = prefix + [sys.executable, str(tmp_path / "run_ort.py"), str(tmp_path / "in.npz"),
                        str(tmp_path / "out.npz")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    differing_from_exact = 0
    for i, (a, b, az, bz) in enumerate(cases):
        emulated = K.gemm_u8s8_avx2_saturating(a, b, int(az), bz.astype(np.int32))
        exact = K.gemm_int8(a, b, int(az), bz.astype(np.int32))
        for const_b in (0, 1):
            ort_y = out[f"y{i}_{const_b}"]
            assert np.array_equal(emulated, ort_y), (a.shape, b.shape, const_b)
        differing_from_exact += int((emulated != exact).sum())
    assert differing_from_exact > 0  # the cases do exercise saturation



# --------------------------------------------------------------------------- blockwise int8 (MatMulNBits)

KB = importlib.import_module(K.__name__ + ".blockwise")

blockwise_cases = st.fixed_dictionaries({
    "m": st.integers(1, 24),
    "k": st.one_of(st.integers(1, 300), st.integers(1000, 2500)),
    "n": st.integers(1, 24),
    "square": st.booleans(),  # M == K (catches row/column mix-ups)
    "block": st.one_of(st.sampled_from([16, 32, 64, 128, 256]), st.integers(16, 256)),
    "b_kind": st.sampled_from(["int4", "int8", "int8 - zp"]),
    "a_fill": st.sampled_from(FILLS),
    "b_fill": st.sampled_from(FILLS),
    "seed": st.integers(0, 2**32 - 1),
})


def make_blockwise_case(c):
    rng = np.random.default_rng(c["seed"])
    m, k, n, block = c["m"], c["k"], c["n"], c["block"]
    if c["square"]:
        m = k = min(k, 300)
    a = int_array(rng, (m, k), np.int8, c["a_fill"])
    if c["b_kind"] == "int4":        # 4-bit codes minus a 4-bit zero point: [-15, 15]
        b = (int_array(rng, (n, k), np.uint8, c["b_fill"]) % 16).astype(np.int16)
        b -= rng.integers(0, 16, (n, 1)).astype(np.int16)
    elif c["b_kind"] == "int8":
        b = int_array(rng, (n, k), np.int8, c["b_fill"])
    else:                            # uint8 codes minus a uint8 zero point: [-255, 255]
        b = int_array(rng, (n, k), np.uint8, c["b_fill"]).astype(np.int16)
        b -= rng.choice(np.array([0, 255, 128], np.int16), size=(n, 1))
    blocks = -(-k // block)
    a_scale = rng.choice(np.array([0, 1e-3, 0.5, 3.0], np.float32), size=(m, blocks))
    a_scale = np.where(rng.random((m, blocks)) < 0.5, rng.random((m, blocks)), a_scale)
    b_scale = (rng.standard_normal((n, blocks)) * 0.1).astype(np.float32)
    return a, a_scale.astype(np.float32), b, b_scale, block


@SETTINGS
@given(blockwise_cases)
def test_blockwise_matmul_int8_matches_twin(case):
    a, a_scale, b, b_scale, block = make_blockwise_case(case)
    expected = T.blockwise_matmul_int8_twin(a, a_scale, b, b_scale, block)
    got = KB.blockwise_matmul_int8(a, a_scale, b, b_scale, block)
    assert got.dtype == np.float32 and same_bits(got, expected)
    packed = KB.pack_blockwise_b(b, block)               # packed once, reused
    assert same_bits(KB.blockwise_matmul_int8(a, a_scale, packed, b_scale, block), expected)


def test_blockwise_matmul_int8_block_sums_are_exact_and_ordered():
    # one block of 256 products 127 * 255: 8,290,560, exact in int32 (and in float32)
    a = np.full((1, 256), 127, np.int8)
    b = np.full((1, 256), 255, np.int16)
    one = np.ones((1, 1), np.float32)
    assert KB.blockwise_matmul_int8(a, one, b, one, 256)[0, 0] == np.float32(256 * 127 * 255)
    # blocks are added left to right in float32: 2^24 + 1 - 1 loses the 1, 1 - 1 + 2^24 keeps
    a2, b2 = np.ones((1, 3), np.int8), np.ones((1, 3), np.int16)
    scales = np.array([[2.0 ** 24, 1.0, -1.0]], np.float32)
    ones3 = np.ones((1, 3), np.float32)
    assert KB.blockwise_matmul_int8(a2, scales, b2, ones3, 1)[0, 0] == np.float32(2.0 ** 24 - 1)
    assert KB.blockwise_matmul_int8(a2, scales[:, ::-1], b2, ones3, 1)[0, 0] == np.float32(2.0 ** 24)
    # K not a multiple of the block: the last block is zero-padded
    a3 = np.arange(1, 21, dtype=np.int8).reshape(1, 20)
    b3 = np.ones((2, 20), np.int16)
    s = np.array([[1.0, 10.0]], np.float32)
    y = KB.blockwise_matmul_int8(a3, s, b3, np.ones((2, 2), np.float32), 16)
    assert y.tolist() == [[136.0 + 10.0 * (17 + 18 + 19 + 20)] * 2]


def test_blockwise_matmul_int8_rejects_bad_operands():
    a = np.zeros((2, 40), np.int8)
    b = np.zeros((3, 40), np.int16)
    s2, s3 = np.ones((2, 3), np.float32), np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match="inner dimensions"):
        KB.blockwise_matmul_int8(a, s2, b[:, :39], s3, 16)
    with pytest.raises(ValueError, match="a_scale"):
        KB.blockwise_matmul_int8(a, s2[:, :2], b, s3, 16)
    with pytest.raises(ValueError, match="packed with block_size"):
        KB.blockwise_matmul_int8(a, s2, KB.pack_blockwise_b(b, 32), s3, 16)
    with pytest.raises(TypeError):
        KB.blockwise_matmul_int8(a.astype(np.float32), s2, b, s3, 16)
    with pytest.raises(ValueError, match="block_size"):
        KB.pack_blockwise_b(b, 0)
    assert KB.blockwise_matmul_int8(a[:0], s2[:0], b, s3, 16).shape == (0, 3)


def test_blockwise_kernel_uses_vpmaddwd():
    from refrt.kernels import cpu

    if not cpu.compiles_with_avx2():
        pytest.skip("needs Numba compiling for an x86 CPU with AVX2 (the VEX vpmaddwd)")
    counts = KB._vector_instructions()
    assert counts["vpmaddwd"] + counts["vpdpwssd"] > 0 and counts["vpmulld"] == 0
