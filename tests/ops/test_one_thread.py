"""Small tensors run their parallel kernels on the calling thread (refrt.ops._kernels.one_thread):
the same bits as the parallel kernel, and Numba's thread count is left as it was."""

import numba
import numpy as np
import pytest

from refrt.kernels import activations, quantize
from refrt.ops import _kernels, elementwise, quant


@pytest.fixture
def rng():
    return np.random.default_rng(5)


def test_one_thread_restores_the_thread_count_even_on_error():
    before = numba.get_num_threads()
    seen = []
    _kernels.one_thread(lambda: seen.append(numba.get_num_threads()))
    assert seen == [1]
    assert numba.get_num_threads() == before

    def boom():
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        _kernels.one_thread(boom)
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("n", [1, 17, 64, 1000, 5000])
def test_small_activations_are_the_parallel_kernels_bits(rng, n):
    x = (rng.standard_normal(n) * 8).astype(np.float32)
    x[0] = np.nan
    assert n < _kernels.SERIAL_BELOW
    for op, kernel in ((elementwise.sigmoid, activations.logistic_f32),
                       (elementwise.tanh, activations.tanh_f32)):
        np.testing.assert_array_equal(op(x).view(np.uint32), kernel(x).view(np.uint32))


@pytest.mark.parametrize("shape", [(), (3,), (2, 16), (1, 64, 4, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_small_quantize_dequantize_are_the_parallel_kernels_bits(rng, shape, dtype):
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    scale, zp = np.float32(0.0173), np.array(3, dtype)
    q = quant.quantize(x, scale, zp)
    np.testing.assert_array_equal(q, quantize.quantize_linear(x, scale, zp))
    y = quant.dequantize(q, scale, zp)
    np.testing.assert_array_equal(y.view(np.uint32), quantize.dequantize_linear(q, scale, zp).view(np.uint32))
