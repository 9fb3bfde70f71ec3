"""Signal processing: DFT, STFT, the cosine-sum windows and MelWeightMatrix.

Complex tensors are real tensors with a trailing dimension of 2 (real, imaginary); a trailing
dimension of 1 holds a real signal. Transforms run NumPy's pocketfft in the input's precision:
complex64 for float32 (and for float16 / bfloat16, rounded back at the end), complex128 for double,
as onnxruntime computes in the input's type and as the backend test data were made.
"""

from __future__ import annotations

import math

import numpy as np

from ..registry import op
from ._common import as_scalar, compute_dtype, normalize_axis, np_dtype

# ---------------------------------------------------------------- complex <-> [..., 2]


def _complex_dtype(dtype) -> np.dtype:
    return np.dtype(np.complex128 if compute_dtype(dtype) == np.float64 else np.complex64)


def _to_complex(x: np.ndarray, what: str = "input") -> np.ndarray:
    """[..., 1] (real) or [..., 2] (real, imaginary) -> complex array without the last axis."""
    if x.ndim < 2 or x.shape[-1] not in (1, 2):
        raise ValueError(f"{what} must have rank >= 2 and a last dimension of 1 (real) or 2 "
                         f"(complex), got shape {x.shape}")
    parts = x.astype(compute_dtype(x.dtype))
    z = parts[..., 0].astype(_complex_dtype(x.dtype))
    if x.shape[-1] == 2:
        z.imag = parts[..., 1]
    return z


def _from_complex(z: np.ndarray, dtype) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1).astype(dtype)


# ---------------------------------------------------------------- DFT

def _dft(x, dft_length, axis: int, inverse: int, onesided: int) -> np.ndarray:
    """The DFT of ``x`` along signal ``axis`` (any axis but the last, complex one).

    forward: y[k] = sum_n x[n] e^(-2 pi j k n / N); onesided (RFFT, real input only) keeps k in
    [0, N // 2]. inverse: x[n] = 1/N sum_k y[k] e^(2 pi j k n / N); with onesided (IRFFT, complex
    input only) the input holds the first N // 2 + 1 bins of a Hermitian spectrum and the output is
    the real signal [..., 1]. N = dft_length, by default the axis' size (2 * (size - 1) for IRFFT);
    the signal is zero-padded or truncated to N (for IRFFT: the bins, as numpy.fft.irfft and
    onnx.reference do; onnxruntime 1.32 gives other values when N != 2 * (size - 1))."""
    rank = x.ndim
    axis = normalize_axis(axis, rank)
    if axis == rank - 1:
        raise ValueError(f"axis {axis} is the last (real/imaginary) dimension; the DFT axis must "
                         f"be in [-{rank}, -2] or [0, {rank - 2}]")
    z = _to_complex(x)
    if onesided and x.shape[-1] != (2 if inverse else 1):
        raise ValueError("onesided=1 needs " + ("complex input (last dimension 2) for the inverse "
                         "transform" if inverse else "real input (last dimension 1)"))
    size = z.shape[axis]
    if dft_length is None:
        n = 2 * (size - 1) if inverse and onesided else size
    else:
        n = as_scalar(dft_length, "dft_length")
    if n < 1:
        raise ValueError(f"dft_length must be positive, got {n}")
    if inverse and onesided:
        return np.fft.irfft(z, n=n, axis=axis)[..., None].astype(x.dtype)
    y = np.fft.ifft(z, n=n, axis=axis) if inverse else np.fft.fft(z, n=n, axis=axis)
    if onesided:
        y = np.take(y, np.arange(n // 2 + 1), axis=axis)
    return _from_complex(y, x.dtype)


@op("DFT", since=17)
def dft_17(x, dft_length=None, *, axis=1, inverse=0, onesided=0):
    """DFT with the axis as an attribute (default 1, the first axis after the batch axis)."""
    return _dft(x, dft_length, axis, inverse, onesided)


@op("DFT", since=20)
def dft(x, dft_length=None, axis=None, *, inverse=0, onesided=0):
    """DFT with the axis as an optional scalar input (default -2, the last signal axis)."""
    axis = -2 if axis is None else as_scalar(axis, "axis")
    return _dft(x, dft_length, axis, inverse, onesided)


# ---------------------------------------------------------------- STFT

@op("STFT", since=17)
def stft(signal, frame_step, window=None, frame_length=None, *, onesided=1):
    """out[b, f, k] = sum_n window[n] signal[b, f * frame_step + n] e^(-2 pi j k n / frame_length),
    frames = (signal_length - frame_length) // frame_step + 1; onesided keeps k <= frame_length // 2.
    The spec calls onesided output impossible for a complex signal; refrt then keeps the first
    frame_length // 2 + 1 bins of the full spectrum, as onnxruntime does."""
    if signal.ndim != 3:
        raise ValueError(f"signal must have shape [batch, length, 1 or 2], got {signal.shape}")
    z = _to_complex(signal, "signal")
    step = as_scalar(frame_step, "frame_step")
    if window is not None and window.ndim != 1:
        raise ValueError(f"window must be 1-D, got shape {window.shape}")
    if frame_length is not None:
        length = as_scalar(frame_length, "frame_length")
        if window is not None and window.shape[0] != length:
            raise ValueError(f"window has {window.shape[0]} values but frame_length is {length}")
    else:
        length = window.shape[0] if window is not None else z.shape[1]
    if step < 1 or length < 1 or length > z.shape[1]:
        raise ValueError(f"frame_step {step} and frame_length {length} must be positive, and "
                         f"frame_length at most the signal length {z.shape[1]}")
    frames = np.lib.stride_tricks.sliding_window_view(z, length, axis=1)[:, ::step]
    if window is not None:
        frames = frames * window.astype(compute_dtype(signal.dtype))
    spectrum = np.fft.fft(frames, axis=-1)
    if onesided:
        spectrum = spectrum[..., :length // 2 + 1]
    return _from_complex(spectrum, signal.dtype)


# ---------------------------------------------------------------- windows

def _cosine_sum_window(size, periodic: int, output_datatype: int, coefficients) -> np.ndarray:
    """w[n] = sum_k (-1)^k a_k cos(2 pi k n / N), N = size (periodic) or size - 1 (symmetric).

    A symmetric window of length 1 is [1] (N would be 0). Computed in float64 and converted to
    ``output_datatype`` (integer types truncate, as onnxruntime's static_cast does)."""
    size = as_scalar(size, "size")
    if size < 0:
        raise ValueError(f"size must be non-negative, got {size}")
    dtype = np_dtype(output_datatype)
    denominator = size if periodic else size - 1
    if denominator <= 0:
        return np.ones(size, dtype=dtype)
    phase = 2 * math.pi * np.arange(size, dtype=np.float64) / denominator
    terms = [a * np.cos(k * phase) for k, a in enumerate(coefficients)]
    # even terms minus odd terms: Blackman's ends come out exactly 0 and its peak exactly 1
    w = sum(terms[0::2]) - sum(terms[1::2])
    return np.asarray(w, dtype=np.float64).astype(dtype)


@op("HannWindow", since=17)
def hann_window(size, *, output_datatype=1, periodic=1):
    """w[n] = 0.5 - 0.5 cos(2 pi n / N)"""
    return _cosine_sum_window(size, periodic, output_datatype, (0.5, 0.5))


@op("HammingWindow", since=17)
def hamming_window(size, *, output_datatype=1, periodic=1):
    """w[n] = 25/46 - 21/46 cos(2 pi n / N)"""
    return _cosine_sum_window(size, periodic, output_datatype, (25 / 46, 21 / 46))


@op("BlackmanWindow", since=17)
def blackman_window(size, *, output_datatype=1, periodic=1):
    """w[n] = 0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N)"""
    return _cosine_sum_window(size, periodic, output_datatype, (0.42, 0.5, 0.08))


# ---------------------------------------------------------------- MelWeightMatrix

@op("MelWeightMatrix", since=17)
def mel_weight_matrix(num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz,
                      *, output_datatype=1):
    """out[j, i] = triangle i (peak 1) at spectrogram bin j; shape [dft_length // 2 + 1, num_mel_bins].

    mel(f) = 2595 log10(1 + f / 700). The spec leaves the band edges open; refrt follows
    onnxruntime (and onnx.reference): num_mel_bins + 2 edge points p_m = mel^-1(mel(lower) + m *
    step) with step = (mel(upper) - mel(lower)) / (num_mel_bins + 2), each snapped to the bin
    floor((dft_length + 1) * p_m / sample_rate). Triangle i rises linearly from edge i to edge
    i + 1 and falls to edge i + 2 (a zero-width rise gives a single 1 at its centre)."""
    n_mel = as_scalar(num_mel_bins, "num_mel_bins")
    n_fft = as_scalar(dft_length, "dft_length")
    rate = as_scalar(sample_rate, "sample_rate")
    lower = as_scalar(lower_edge_hertz, "lower_edge_hertz", "f")
    upper = as_scalar(upper_edge_hertz, "upper_edge_hertz", "f")
    if n_mel < 0 or n_fft < 1 or rate < 1:
        raise ValueError(f"num_mel_bins ({n_mel}) must be >= 0, dft_length ({n_fft}) and "
                         f"sample_rate ({rate}) positive")
    n_bins = n_fft // 2 + 1
    for name, hz in (("lower_edge_hertz", lower), ("upper_edge_hertz", upper)):
        if not 0 <= math.floor((n_fft + 1) * hz / rate) < n_bins:
            raise ValueError(f"{name}={hz} lies outside the {n_bins} spectrogram bins of a "
                             f"{n_fft}-point DFT at sample_rate {rate}")

    def mel(hz):
        return 2595 * np.log10(1 + hz / 700)

    mel_lo, mel_hi = mel(lower), mel(upper)
    points = mel_lo + np.arange(n_mel + 2) * ((mel_hi - mel_lo) / (n_mel + 2))
    hz = 700 * (np.power(10.0, points / 2595) - 1)
    edges = np.floor((n_fft + 1) * hz / rate).astype(np.int64)

    out = np.zeros((n_bins, n_mel), dtype=np.float64)
    for i in range(n_mel):
        left, centre, right = edges[i], edges[i + 1], edges[i + 2]
        if centre == left:
            out[centre, i] = 1
        else:
            j = np.arange(left, centre + 1)
            out[j, i] = (j - left) / (centre - left)
        if right > centre:
            j = np.arange(centre, right)
            out[j, i] = (right - j) / (right - centre)
    return out.astype(np_dtype(output_datatype))
