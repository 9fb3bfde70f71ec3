"""Calibration: run the float model over sample inputs and find a range for every float tensor.

A calibrator watches the float model run in refrt (a hook called after every node sees each
tensor the moment it is computed) and keeps only a running statistic per tensor:

* **MinMax**: the smallest and largest value seen. With ``moving_average`` the per-batch minima
  and maxima are averaged instead (two floats per tensor per batch are kept for that). With
  ``histogram_bins`` it also keeps a histogram of the values (:class:`GrowingHistogram`), for
  pictures only: the range never depends on it.
* **Percentile**: a histogram of |x| (2048 bins by default); the range is [-t, t] with t the
  edge where the cumulative count reaches the percentile (99.999 %).
* **Entropy**: a histogram of x (128 bins by default); the threshold whose quantized distribution
  has the lowest KL divergence from the original.

Histograms stream: onnxruntime collects every tensor of every batch before binning (the
calibration of a BERT model with Percentile has been reported to need hundreds of GB). A histogram
over all the data needs the global range before the first bin can be filled, so refrt makes two
passes per ``collect_data`` call: the first finds each tensor's range, the second bins batch by
batch. The batches' inputs are spilled to a temporary folder between the passes, so memory holds
one batch's activations and the histograms, never the data. Because binning is element-wise, the
counts are exactly those of onnxruntime's one-shot histogram, and so are the thresholds.

Everything else follows onnxruntime's calibrators: which tensors are calibrated (inputs and
outputs of the nodes whose op type will be quantized, float per the shape inference, not
initializers), the chunking (each ``collect_data`` call, or ``max_intermediate_outputs`` batches,
is a chunk; chunks merge by min/max, by an exponential moving average, or by widening the
histogram), and the arithmetic of every threshold. ``runtime="onnxruntime"`` runs the float model in
onnxruntime instead, which makes the ranges bit-identical to onnxruntime's own calibrators (refrt's
float kernels may differ from onnxruntime's in the last bits of a sum).
"""

from __future__ import annotations

import abc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from . import model as M
from .options import CalibrationMethod, as_calibration_method

# ---------------------------------------------------------------- the data reader

class CalibrationDataReader(metaclass=abc.ABCMeta):
    """Anything with ``get_next()`` returning a feed dict, then None when done, is a reader
    (``isinstance(reader, CalibrationDataReader)`` is True for it, as in onnxruntime)."""

    @classmethod
    def __subclasshook__(cls, subclass):
        return (hasattr(subclass, "get_next") and callable(subclass.get_next)) or NotImplemented

    @abc.abstractmethod
    def get_next(self) -> dict:
        """The next feed dict (input name -> array), or None when there is no more data."""
        raise NotImplementedError

    def __iter__(self):
        return self

    def __next__(self):
        result = self.get_next()
        if result is None:
            raise StopIteration
        return result

    def __len__(self):
        raise NotImplementedError

    def set_range(self, start_index: int, end_index: int):
        raise NotImplementedError


class NumpyDataReader(CalibrationDataReader):
    """Feeds ``{input_name: batch}`` from arrays, ``batch_size`` rows at a time.

    ``arrays`` maps input names to arrays whose first axis indexes samples."""

    def __init__(self, arrays: dict, batch_size: int = 1):
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"calibration arrays disagree on the number of samples: {lengths}")
        self.arrays, self.batch_size, self.n = arrays, max(1, int(batch_size)), lengths.pop()
        self.start = 0

    def get_next(self):
        if self.start >= self.n:
            return None
        stop = min(self.start + self.batch_size, self.n)
        feeds = {k: v[self.start:stop] for k, v in self.arrays.items()}
        self.start = stop
        return feeds

    def __len__(self):
        return -(-self.n // self.batch_size)

    def rewind(self):
        self.start = 0


# ---------------------------------------------------------------- ranges

class TensorData:
    """The calibration result of one tensor: ``lowest``/``highest`` (float32 arrays) and, for
    histogram methods, ``hist`` (counts) and ``bins`` (edges)."""
    _allowed = frozenset(["avg", "std", "lowest", "highest", "hist", "hist_edges", "bins"])
    _floats = frozenset(["avg", "std", "lowest", "highest", "hist_edges"])

    def __init__(self, **kwargs):
        self._attrs = list(kwargs)
        for k, v in kwargs.items():
            if k not in TensorData._allowed:
                raise ValueError(f"unexpected TensorData field {k!r}; allowed: "
                                 f"{sorted(TensorData._allowed)}")
            if k in TensorData._floats:
                if not hasattr(v, "dtype") or v.dtype not in (np.float16, np.float32):
                    raise ValueError(f"TensorData.{k} must be a float32/float16 numpy value, "
                                     f"not {type(v).__name__} {getattr(v, 'dtype', '')}")
            setattr(self, k, v)

    @property
    def range_value(self):
        return (self.lowest, self.highest)

    @property
    def avg_std(self):
        return (self.avg, self.std)

    def to_dict(self) -> dict:
        data = {k: getattr(self, k) for k in self._attrs}
        data["CLS"] = type(self).__name__
        return data

    @classmethod
    def from_dict(cls, d: dict) -> "TensorData":
        kwargs = {}
        for k, v in d.items():
            if k == "CLS":
                continue
            if isinstance(v, dict) and v.get("CLS") == "numpy.array":
                v = np.array(v["data"], dtype=np.dtype(v["dtype"]))
            elif k in cls._floats and isinstance(v, (int, float)):
                v = np.array(v, dtype=np.float32)
            kwargs[k] = v
        return cls(**kwargs)

    def __repr__(self):
        return f"TensorData(lowest={self.lowest!r}, highest={self.highest!r})"


class TensorsData:
    """tensor name -> :class:`TensorData`, plus the method that produced them."""

    def __init__(self, calibration_method, data: dict):
        self.calibration_method = as_calibration_method(calibration_method)
        self.data = {}
        for k, v in data.items():
            if isinstance(v, tuple):
                if len(v) == 2:
                    v = TensorData(lowest=v[0], highest=v[1])
                elif len(v) == 4:
                    v = TensorData(lowest=v[0], highest=v[1], hist=v[2], bins=v[3])
                else:
                    raise TypeError(f"range of {k!r}: expected 2 or 4 values, got {len(v)}")
            if not isinstance(v, TensorData):
                raise TypeError(f"range of {k!r} must be a TensorData, not {type(v).__name__}")
            self.data[k] = v

    def __iter__(self):
        return iter(self.data)

    def __contains__(self, key):
        return key in self.data

    def __getitem__(self, key):
        return self.data[key]

    def __setitem__(self, key, value):
        if key not in self.data:
            raise RuntimeError(f"only an existing tensor's range can be replaced; {key!r} has "
                               f"none")
        self.data[key] = value

    def __len__(self):
        return len(self.data)

    def keys(self):
        return self.data.keys()

    def values(self):
        return self.data.values()

    def items(self):
        return self.data.items()

    def to_dict(self):
        return {"CLS": type(self).__name__, "data": self.data,
                "calibration_method": self.calibration_method}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorsData":
        method = d["calibration_method"]
        if isinstance(method, dict):
            method = method["value"].split(".")[-1]
        return cls(CalibrationMethod[method] if isinstance(method, str) else method,
                   {k: TensorData.from_dict(v) for k, v in d["data"].items()})


class _CacheEncoder(json.JSONEncoder):
    def default(self, obj):
        if isinstance(obj, (TensorData, TensorsData)):
            return obj.to_dict()
        if isinstance(obj, np.ndarray):
            return {"data": obj.tolist(), "dtype": str(obj.dtype), "CLS": "numpy.array"}
        if isinstance(obj, CalibrationMethod):
            return {"CLS": "CalibrationMethod", "value": f"CalibrationMethod.{obj.name}"}
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        return super().default(obj)


def save_tensors_data(tensors_data: TensorsData, path, *, smooth_quant: bool = False) -> None:
    """Write ranges as JSON in onnxruntime's calibration cache format (readable by its
    ``quantize_static(calibration_cache_path=...)`` and by refrt's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = tensors_data.to_dict()
    payload["smooth_quant"] = smooth_quant
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, cls=_CacheEncoder))
    os.replace(tmp, path)


def load_tensors_data(path) -> TensorsData:
    """Ranges from a calibration cache written by refrt or onnxruntime."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration cache not found: {path}")
    return TensorsData.from_dict(json.loads(path.read_text()))


# ---------------------------------------------------------------- progress

class Progress:
    """``label: batch 12/64`` on stderr, redrawn in place. Shown when stderr is a terminal or when
    ``enabled`` is True; ``enabled=False`` silences it."""

    def __init__(self, label: str, total: int | None = None, enabled: bool | None = None,
                 stream=None):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled, self.label, self.total, self.count = enabled, label, total, 0
        self._last = 0.0

    def step(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.count == self.total):
            self._last = now
            self._draw()

    def _draw(self):
        if self.total:
            done = int(20 * self.count / self.total)
            bar = f" [{'#' * done}{'.' * (20 - done)}] {self.count}/{self.total}"
        else:
            bar = f" {self.count}"
        self.stream.write(f"\r{self.label}: batch{bar}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.count:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


def _reader_length(reader) -> int | None:
    try:
        n = len(reader)
    except Exception:
        return None
    return n if isinstance(n, int) and n >= 0 else None


# ---------------------------------------------------------------- which tensors, and seeing them

def select_tensors_to_calibrate(model: onnx.ModelProto, op_types=None) -> set[str]:
    """Float inputs and outputs of the nodes whose op type is in ``op_types`` (all nodes if
    empty), known to shape inference, not initializers."""
    types = M.value_types(model)
    initializers = {t.name for t in model.graph.initializer}
    chosen = set()
    for node in model.graph.node:
        if op_types and node.op_type not in op_types:
            continue
        for name in list(node.input) + list(node.output):
            if (name in types and name not in initializers
                    and M.elem_type(types[name]) in M.FLOAT_TYPES):
                chosen.add(name)
    return chosen


class _TensorWatcher:
    """Runs the float model on one batch and calls ``on_tensor(name, array)`` once for each
    watched tensor, as soon as it exists."""

    def __init__(self, model: onnx.ModelProto, names: set[str], runtime: str = "refrt",
                 providers=None):
        self.names, self.runtime = names, runtime
        self._on_tensor = None
        self._seen: set[str] = set()
        if runtime == "refrt":
            from ..session import InferenceSession
            self.session = InferenceSession(model)
            self.session.add_hook(self._hook)
        else:
            self.session, self.outputs = _ort_session_with_outputs(model, names, providers)

    def _hook(self, node, inputs, outputs):
        for name, value in zip(node.input, inputs):
            self._see(name, value)
        for name, value in zip(node.output, outputs):
            self._see(name, value)

    def _see(self, name, value):
        if name in self.names and name not in self._seen and isinstance(value, np.ndarray):
            self._seen.add(name)
            self._on_tensor(name, value)

    def run(self, feeds: dict, on_tensor) -> None:
        self._on_tensor, self._seen = on_tensor, set()
        if self.runtime == "refrt":
            self.session.run(None, feeds)
            return
        for name, value in zip(self.outputs, self.session.run(self.outputs, feeds)):
            on_tensor(name, value)


def _ort_session_with_outputs(model, names, providers):
    """An onnxruntime session (optimizations off) whose outputs include every watched tensor."""
    import onnxruntime as ort
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    types = M.value_types(model)
    present = {o.name for o in augmented.graph.output}
    for name in sorted(names - present):
        augmented.graph.output.append(helper.make_value_info(name, types[name]))
    outputs = [o.name for o in augmented.graph.output if o.name in names]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory(prefix="refrt.calib.") as tmp:
        path = os.path.join(tmp, "augmented.onnx")
        onnx.save_model(augmented, path, save_as_external_data=augmented.ByteSize() > 2**30)
        session = ort.InferenceSession(path, so, providers=providers or ["CPUExecutionProvider"])
    return session, outputs


class _FeedSpill:
    """Keeps the batches of one pass on disk so that a second pass can replay them."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="refrt.calib.")
        self._batches: list[tuple[str, list[str]]] = []

    def add(self, feeds: dict) -> None:
        names = list(feeds)
        path = os.path.join(self._dir.name, f"{len(self._batches)}.npz")
        np.savez(path, *[np.asarray(feeds[n]) for n in names])
        self._batches.append((path, names))

    def __len__(self):
        return len(self._batches)

    def __iter__(self):
        for path, names in self._batches:
            with np.load(path) as z:
                yield {n: z[f"arr_{i}"] for i, n in enumerate(names)}

    def close(self):
        self._dir.cleanup()


# ---------------------------------------------------------------- calibrators

class CalibraterBase:
    """Common ground of the calibrators: the model (shape-inferred), the tensors to watch, and the
    loop over a reader's batches. ``augmented_model_path`` and ``use_external_data_format`` are
    accepted for onnxruntime compatibility; refrt writes no augmented model."""

    method: CalibrationMethod

    def __init__(self, model, op_types_to_calibrate=None, augmented_model_path=None,
                 symmetric: bool = False, use_external_data_format: bool = False,
                 per_channel: bool = False, *, runtime: str = "refrt", providers=None,
                 progress: bool | None = None):
        if per_channel:
            raise NotImplementedError("per-channel calibration is not implemented in refrt")
        if isinstance(model, onnx.ModelProto) and len(model.graph.value_info):
            self.model = model            # already shape-inferred; the calibrator only reads it
        else:
            loaded = model if isinstance(model, onnx.ModelProto) else M.load(model)
            self.model = M.infer_shapes(loaded, inplace=loaded is not model)
        self.op_types_to_calibrate = op_types_to_calibrate
        self.symmetric = symmetric
        self.tensors_to_calibrate = select_tensors_to_calibrate(self.model, op_types_to_calibrate)
        self.runtime, self.providers, self.progress = runtime, providers, progress
        self._watcher = None

    def _watch(self) -> _TensorWatcher:
        if self._watcher is None:
            self._watcher = _TensorWatcher(self.model, self.tensors_to_calibrate, self.runtime,
                                           self.providers)
        return self._watcher

    def _batches(self, batches, label: str, total: int | None):
        bar = Progress(label, total, self.progress)
        try:
            for feeds in batches:
                yield feeds
                bar.step()
        finally:
            bar.close()

    @staticmethod
    def _read(reader):
        while True:
            feeds = reader.get_next()
            if not feeds:
                return
            yield feeds

    def collect_data(self, data_reader) -> None:
        raise NotImplementedError

    def compute_data(self) -> TensorsData:
        raise NotImplementedError


class MinMaxCalibrater(CalibraterBase):
    """Range = (min, max) over the data. A *chunk* (one ``collect_data`` call, or
    ``max_intermediate_outputs`` batches) reduces its batches by min/max, or by their mean with
    ``moving_average``; chunks then merge by min/max, or by ``old + c * (new - old)``."""

    method = CalibrationMethod.MinMax

    def __init__(self, model, op_types_to_calibrate=None, augmented_model_path=None,
                 symmetric: bool = False, use_external_data_format: bool = False,
                 moving_average: bool = False, averaging_constant: float = 0.01,
                 max_intermediate_outputs: int | None = None, per_channel: bool = False,
                 *, histogram_bins: int | None = None, **kwargs):
        super().__init__(model, op_types_to_calibrate, augmented_model_path, symmetric,
                         use_external_data_format, per_channel, **kwargs)
        if moving_average and not 0 <= averaging_constant <= 1:
            raise ValueError("averaging_constant must be in [0, 1]")
        # With ``histogram_bins``, a histogram of every value seen is kept beside the range, for
        # pictures (``refrt quantize --report``); the ranges do not depend on it.
        self.histograms: dict[str, GrowingHistogram] = {}
        self.histogram_bins = histogram_bins
        self.moving_average, self.averaging_constant = moving_average, averaging_constant
        self.max_intermediate_outputs = max_intermediate_outputs
        self.calibrate_tensors_range: TensorsData | None = None
        self._chunk: dict[str, tuple[list, list]] = {}   # name -> (batch minima, batch maxima)
        self._chunk_batches = 0

    def collect_data(self, data_reader) -> None:
        watcher = self._watch()
        for feeds in self._batches(self._read(data_reader), "calibrating (MinMax)",
                                   _reader_length(data_reader)):
            watcher.run(feeds, self._record)
            self._chunk_batches += 1
            if self._chunk_batches == self.max_intermediate_outputs:
                self._close_chunk()
        if not self._chunk_batches and self.calibrate_tensors_range is None:
            raise ValueError("No data is collected.")
        self._close_chunk()

    def _record(self, name: str, value: np.ndarray) -> None:
        if value.size == 0:
            return
        if self.histogram_bins:
            if name not in self.histograms:
                self.histograms[name] = GrowingHistogram(self.histogram_bins)
            self.histograms[name].add(value)
        mins, maxs = self._chunk.setdefault(name, ([], []))
        batch_min, batch_max = value.min().reshape(1), value.max().reshape(1)
        if self.moving_average:           # the chunk's value is the mean over its batches
            mins.append(batch_min)
            maxs.append(batch_max)
        elif mins:                        # keep only the running extremes
            mins[0] = np.fmin(mins[0], batch_min)
            maxs[0] = np.fmax(maxs[0], batch_max)
        else:
            mins.append(batch_min)
            maxs.append(batch_max)

    def _close_chunk(self) -> None:
        if not self._chunk_batches:
            return
        ranges = {}
        for name, (mins, maxs) in self._chunk.items():
            if self.moving_average:
                lo, hi = np.nanmean(mins, axis=0), np.nanmean(maxs, axis=0)
            else:
                lo, hi = np.nanmin(mins, axis=0), np.nanmax(maxs, axis=0)
            if self.symmetric:
                absmax = np.nanmax([np.abs(lo), np.abs(hi)], axis=0)
                lo, hi = -absmax, absmax
            ranges[name] = TensorData(lowest=lo, highest=hi)
        self._chunk, self._chunk_batches = {}, 0
        if self.calibrate_tensors_range is not None:     # merge into the previous chunks
            for name, old in self.calibrate_tensors_range.items():
                new = ranges.get(name, old)
                if self.moving_average:
                    c = self.averaging_constant
                    lo = old.lowest + c * (new.lowest - old.lowest)
                    hi = old.highest + c * (new.highest - old.highest)
                else:
                    lo = np.minimum(old.lowest, new.lowest)
                    hi = np.maximum(old.highest, new.highest)
                ranges[name] = TensorData(lowest=lo, highest=hi)
        self.calibrate_tensors_range = TensorsData(CalibrationMethod.MinMax, ranges)

    def compute_data(self) -> TensorsData:
        self._close_chunk()
        if self.calibrate_tensors_range is None:
            raise ValueError("No data is collected.")
        return self.calibrate_tensors_range


class GrowingHistogram:
    """A histogram of x filled batch by batch when the range is not known in advance (MinMax
    calibration makes one pass). The first batch sets the bins over its [min, max]; a value
    outside them doubles the bin width, adding adjacent pairs of counts and keeping every other
    edge, and extends the range on the side that needs it, until the value fits. Counts stay
    exact (a value v is counted in the bin [a, b) with a <= v < b, as ``np.histogram`` counts
    it; every value is below the last edge); only the bins widen. Non-finite values are left
    out."""

    def __init__(self, num_bins: int = 2048):
        if num_bins < 2 or num_bins % 2:
            raise ValueError(f"num_bins must be even and at least 2, got {num_bins}")
        self.num_bins = num_bins
        self.counts: np.ndarray | None = None
        self.edges: np.ndarray | None = None

    def add(self, value: np.ndarray) -> None:
        x = np.asarray(value, np.float64).ravel()
        x = x[np.isfinite(x)]
        if not x.size:
            return
        lo, hi = float(x.min()), float(x.max())
        n, half = self.num_bins, self.num_bins // 2
        if self.counts is None:
            self.counts = np.zeros(n, np.int64)
            if hi > lo:             # bins are [a, b): the last edge lies just above the max
                self.edges = np.linspace(lo, np.nextafter(hi, np.inf), n + 1)
            else:                   # one value so far: a narrow window around it
                width = max(abs(lo), 1.0) * 2.0 ** -20
                self.edges = lo + width * np.arange(-half, half + 1, dtype=np.float64)
        while lo < self.edges[0] or hi >= self.edges[-1]:
            pairs = self.counts.reshape(half, 2).sum(axis=1)
            kept = self.edges[::2]                   # the old edges that stay edges
            step = 2 * (self.edges[1] - self.edges[0])
            self.counts = np.zeros_like(self.counts)
            if lo < self.edges[0]:  # the old range becomes the upper half
                self.counts[half:] = pairs
                self.edges = np.concatenate([kept[0] - step * np.arange(half, 0, -1), kept])
            else:                   # ... or the lower half
                self.counts[:half] = pairs
                self.edges = np.concatenate([kept, kept[-1] + step * np.arange(1, half + 1)])
        index = np.searchsorted(self.edges, x, side="right") - 1
        self.counts += np.bincount(index, minlength=n)


class _RangeStats:
    """Pass 1 of a histogram chunk: each tensor's min, max and the min/max of |x|."""

    def __init__(self):
        self.lo, self.hi, self.abs_lo, self.abs_hi, self.dtype = {}, {}, {}, {}, {}

    def add(self, name, value):
        if value.size == 0 or np.all(np.isnan(value)):
            self.dtype.setdefault(name, value.dtype)
            return
        lo, hi = np.nanmin(value), np.nanmax(value)
        absolute = np.abs(value)
        a_lo, a_hi = np.nanmin(absolute), np.nanmax(absolute)
        if name in self.lo:
            lo, hi = np.fmin(self.lo[name], lo), np.fmax(self.hi[name], hi)
            a_lo, a_hi = np.fmin(self.abs_lo[name], a_lo), np.fmax(self.abs_hi[name], a_hi)
        self.lo[name], self.hi[name], self.abs_lo[name], self.abs_hi[name] = lo, hi, a_lo, a_hi
        self.dtype[name] = value.dtype

    def minmax(self, name):
        if name in self.lo:
            return self.lo[name], self.hi[name]
        zero = np.zeros((), self.dtype.get(name, np.float32))
        return zero, zero


class _AbsHistogram:
    """Histogram of |x| (Percentile, symmetric). The first chunk bins [min|x|, max|x|] into
    ``num_bins``; a later chunk keeps the bin width and appends bins when its max|x| is beyond
    the last edge (values below the first edge are dropped, as onnxruntime does)."""

    def __init__(self, num_bins: int):
        self.num_bins = num_bins
        self.hist = self.edges = self.min_value = self.max_value = None
        self._bins = self._counts = self._edges = None

    def plan(self, stats: _RangeStats, name: str):
        lo, hi = stats.minmax(name)
        a_lo, a_hi = (stats.abs_lo[name], stats.abs_hi[name]) if name in stats.abs_lo else (lo, hi)
        if self.hist is None:
            self._bins = dict(bins=self.num_bins, range=(a_lo, a_hi))
            self.min_value, self.max_value = lo, hi
        else:
            edges = self.edges
            if a_hi > edges[-1]:
                width = edges[1] - edges[0]
                edges = np.hstack((edges, np.arange(edges[-1] + width, a_hi + width, width)))
            self._bins = dict(bins=edges)
            self.min_value, self.max_value = min(self.min_value, lo), max(self.max_value, hi)
        self._counts, self._edges = None, None

    def add(self, value: np.ndarray):
        counts, edges = np.histogram(np.abs(value.ravel()), **self._bins)
        self._counts = counts if self._counts is None else self._counts + counts
        self._edges = edges.astype(value.dtype)

    def finish(self, dtype):
        if self._counts is None:      # the tensor never had data in this chunk
            self.add(np.zeros(0, dtype))
        counts = self._counts
        if self.hist is not None:
            counts[: len(self.hist)] += self.hist
        self.hist, self.edges = counts, self._edges


class _ValueHistogram:
    """Histogram of x over [-t, t], t = max(|min|, |max|) (Entropy, and Percentile when not
    symmetric). A later chunk merges as onnxruntime merges it: if its t is not larger it is binned
    into the old bins; if the old t was 0 it is binned over its own [-t, t] and the old counts are
    added bin by bin; otherwise whole bins of the old width are added on both sides until t fits."""

    def __init__(self, num_bins: int):
        self.num_bins = num_bins
        self.hist = self.edges = self.min_value = self.max_value = self.threshold = None
        self._bins = self._counts = self._edges = None
        self._old_at = None          # where the old counts go in the chunk's bins (None: nowhere)

    def plan(self, stats: _RangeStats, name: str):
        lo, hi = stats.minmax(name)
        t = np.array(max(abs(lo), abs(hi)), dtype=np.asarray(lo).dtype)
        if self.hist is None:
            self._bins, self._old_at = dict(bins=self.num_bins, range=(-t, t)), None
            self.min_value, self.max_value = lo, hi
        else:
            n_old = len(self.hist)
            if t <= self.threshold:
                t = self.threshold
                self._bins, self._old_at = dict(bins=n_old, range=(-t, t)), 0
            elif self.threshold == 0:
                self._bins, self._old_at = dict(bins=n_old, range=(-t, t)), 0
            else:
                stride = 2 * self.threshold / n_old
                half = int((t - self.threshold) // stride + 1)
                t = half * stride + self.threshold
                self._bins, self._old_at = dict(bins=n_old + 2 * half, range=(-t, t)), half
            self.min_value, self.max_value = min(self.min_value, lo), max(self.max_value, hi)
        self.threshold = t
        self._counts = None

    def add(self, value: np.ndarray):
        counts, self._edges = np.histogram(value.ravel(), **self._bins)
        self._counts = counts if self._counts is None else self._counts + counts

    def finish(self, dtype):
        if self._counts is None:      # the tensor never had data in this chunk
            self.add(np.zeros(0, dtype))
        counts = self._counts
        if self._old_at is not None:
            counts[self._old_at: len(counts) - self._old_at] += self.hist
        self.hist, self.edges = counts, self._edges


class HistogramCalibrater(CalibraterBase):
    """Base of the Percentile and Entropy calibrators (two passes per ``collect_data`` call)."""

    def __init__(self, model, op_types_to_calibrate=None, augmented_model_path=None,
                 use_external_data_format: bool = False, method: str = "percentile",
                 symmetric: bool = False, num_bins: int = 128, num_quantized_bins: int = 2048,
                 percentile: float = 99.999, scenario: str = "same", **kwargs):
        super().__init__(model, op_types_to_calibrate, augmented_model_path, symmetric,
                         use_external_data_format, **kwargs)
        self.num_bins, self.num_quantized_bins = num_bins, num_quantized_bins
        self.percentile = percentile
        self.histograms: dict = {}
        self._absolute = method == "percentile" and symmetric

    def collect_data(self, data_reader) -> None:
        watcher = self._watch()
        stats, spill = _RangeStats(), _FeedSpill()
        label = f"calibrating ({self.method.name})"
        try:
            total = _reader_length(data_reader)
            for feeds in self._batches(self._read(data_reader), f"{label}, pass 1/2", total):
                spill.add(feeds)
                watcher.run(feeds, stats.add)
            if not len(spill):
                raise ValueError("No data is collected.")
            names = sorted(self.tensors_to_calibrate & set(stats.dtype))
            for name in names:
                if name not in self.histograms:
                    self.histograms[name] = (_AbsHistogram if self._absolute
                                             else _ValueHistogram)(self.num_bins)
                self.histograms[name].plan(stats, name)

            planned = set(names)

            def add(name, value):
                if name in planned:
                    self.histograms[name].add(value)

            for feeds in self._batches(spill, f"{label}, pass 2/2", len(spill)):
                watcher.run(feeds, add)
            for name in names:
                self.histograms[name].finish(stats.dtype[name])
        finally:
            spill.close()

    def compute_data(self) -> TensorsData:
        if not self.histograms:
            raise ValueError("Histogram has not been collected. Please run collect_data() first.")
        ranges = {}
        for name, h in self.histograms.items():
            if self.method is CalibrationMethod.Percentile:
                lo, hi = percentile_range(h.hist, h.edges, h.min_value, h.max_value,
                                          self.percentile, symmetric=self._absolute)
            else:
                lo, hi = entropy_range(h.hist, h.edges, h.min_value, h.max_value,
                                       self.num_quantized_bins)
            ranges[name] = TensorData(lowest=np.asarray(lo), highest=np.asarray(hi),
                                      hist=h.hist, bins=h.edges)
        return TensorsData(self.method, ranges)


class PercentileCalibrater(HistogramCalibrater):
    method = CalibrationMethod.Percentile

    def __init__(self, model, op_types_to_calibrate=None, augmented_model_path=None,
                 use_external_data_format: bool = False, method: str = "percentile",
                 symmetric: bool = False, num_bins: int = 2048, percentile: float = 99.999,
                 **kwargs):
        super().__init__(model, op_types_to_calibrate, augmented_model_path,
                         use_external_data_format, method=method, symmetric=symmetric,
                         num_bins=num_bins, percentile=percentile, **kwargs)


class EntropyCalibrater(HistogramCalibrater):
    method = CalibrationMethod.Entropy

    def __init__(self, model, op_types_to_calibrate=None, augmented_model_path=None,
                 use_external_data_format: bool = False, method: str = "entropy",
                 symmetric: bool = False, num_bins: int = 128, num_quantized_bins: int = 128,
                 **kwargs):
        super().__init__(model, op_types_to_calibrate, augmented_model_path,
                         use_external_data_format, method=method, symmetric=symmetric,
                         num_bins=num_bins, num_quantized_bins=num_quantized_bins, **kwargs)


def create_calibrator(model, op_types_to_calibrate=None, augmented_model_path=None,
                      calibrate_method=CalibrationMethod.MinMax,
                      use_external_data_format: bool = False, providers=None,
                      extra_options: dict | None = None, *, runtime: str = "refrt",
                      progress: bool | None = None) -> CalibraterBase:
    """A calibrator for ``calibrate_method`` with onnxruntime's defaults; ``extra_options`` takes
    onnxruntime's calibrator keys (symmetric, moving_average, averaging_constant,
    max_intermediate_outputs, num_bins, num_quantized_bins, percentile) and refrt's
    ``histogram_bins`` (MinMax: also keep a histogram of the values, for reports)."""
    x = dict(extra_options or {})
    method = as_calibration_method(calibrate_method)
    common = dict(runtime=runtime, providers=providers, progress=progress)
    if method is CalibrationMethod.MinMax:
        return MinMaxCalibrater(model, op_types_to_calibrate, augmented_model_path,
                                symmetric=x.get("symmetric", False),
                                moving_average=x.get("moving_average", False),
                                averaging_constant=x.get("averaging_constant", 0.01),
                                max_intermediate_outputs=x.get("max_intermediate_outputs"),
                                per_channel=x.get("per_channel", False),
                                histogram_bins=x.get("histogram_bins"), **common)
    if method is CalibrationMethod.Entropy:
        return EntropyCalibrater(model, op_types_to_calibrate, augmented_model_path,
                                 symmetric=x.get("symmetric", False),
                                 num_bins=x.get("num_bins", 128),
                                 num_quantized_bins=x.get("num_quantized_bins", 128), **common)
    return PercentileCalibrater(model, op_types_to_calibrate, augmented_model_path,
                                symmetric=x.get("symmetric", True),
                                num_bins=x.get("num_bins", 2048),
                                percentile=x.get("percentile", 99.999), **common)


# ---------------------------------------------------------------- thresholds

def percentile_range(hist, edges, min_value, max_value, percentile: float, symmetric: bool):
    """The range keeping ``percentile`` % of the values: from the histogram's cumulative
    distribution, the edge where it reaches the percentile (both tails when not symmetric),
    never outside the data's [min, max]."""
    if not 0 <= percentile <= 100:
        raise ValueError("percentile must be in [0, 100]")
    cdf = np.cumsum(hist / hist.sum())
    if symmetric:                         # the histogram is of |x|
        edge = np.array(edges[np.searchsorted(cdf, percentile / 100.0)], dtype=edges.dtype)
        lo, hi = -edge, edge
    else:
        tail = (100.0 - percentile) / 200.0
        lo = np.array(edges[np.searchsorted(cdf, tail)], dtype=edges.dtype)
        hi = np.array(edges[np.searchsorted(cdf, 1.0 - tail)], dtype=edges.dtype)
    if lo < min_value:
        lo = min_value
    if hi > max_value:
        hi = max_value
    return lo, hi


def smooth_distribution(p: np.ndarray, eps: float = 0.0001):
    """p (counts) as float32 with every zero replaced by ``eps`` and the same mass taken evenly
    from the non-zero entries; None when p is all zeros."""
    is_zero = p == 0
    n_zeros = float(np.count_nonzero(is_zero))
    n_nonzeros = p.size - n_zeros
    if not n_nonzeros:
        return None
    eps1 = eps * n_zeros / n_nonzeros
    if eps1 >= 1.0:
        raise ValueError(f"cannot smooth a distribution with {int(n_zeros)} zeros and "
                         f"{int(n_nonzeros)} non-zeros")
    return p.astype(np.float32) + np.where(is_zero, np.float32(eps), np.float32(-eps1))


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.float32:
    """sum(p * log(p / q)) of the normalized float32 distributions p and q."""
    p = p.astype(np.float32)
    p = p / np.sum(p, axis=0, keepdims=True)
    q = q.astype(np.float32)
    q = q / np.sum(q, axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = p * np.log(p / q)
    terms[(p == 0) & (q >= 0)] = 0
    terms[~((p > 0) & (q > 0))] = np.inf
    return np.sum(terms, axis=0).astype(np.float32)


def entropy_range(hist, edges, min_value, max_value, num_quantized_bins: int = 128):
    """The symmetric threshold [edges[start], edges[end]] around the zero bin whose
    ``num_quantized_bins``-level quantization loses the least information (lowest KL divergence
    between the clipped distribution p and its quantized expansion q), within [min, max].

    The details follow onnxruntime: p folds the outliers into its first and last bins; q spreads
    each quantized bin's count evenly (truncated to an integer) over the merged bins that are
    non-zero in p; bins left over after the last full merge group count in the last quantized
    bin but are left at zero in q; both are smoothed before the divergence."""
    num_bins = hist.size
    zero_bin = num_bins // 2
    half_q = num_quantized_bins // 2
    divergences = np.zeros(zero_bin - half_q + 1)
    thresholds = []
    for i in range(half_q, zero_bin + 1):
        start, end = zero_bin - i, min(zero_bin + i + 1, num_bins)
        thresholds.append((edges[start], edges[end]))
        sliced = hist[start:end]
        p = sliced.copy()
        p[0] += hist[:start].sum()
        p[-1] += hist[end:].sum()
        nonzero = p != 0
        merged = sliced.size // num_quantized_bins
        used = merged * num_quantized_bins
        quantized = sliced[:used].reshape(num_quantized_bins, merged).sum(axis=1)
        quantized[-1] += sliced[used:].sum()
        q = np.zeros(p.size, dtype=np.int64)
        if merged:
            norms = nonzero[:used].reshape(num_quantized_bins, merged).sum(axis=1)
            spread = np.zeros(num_quantized_bins, dtype=np.int64)
            has = norms != 0
            spread[has] = (quantized[has] / norms[has]).astype(np.int64)   # truncated
            q[:used] = np.where(np.repeat(has, merged), np.repeat(spread, merged), 0)
        p_s, q_s = smooth_distribution(p), smooth_distribution(q)
        if p_s is None or q_s is None:
            divergences[i - half_q] = np.inf
        else:
            divergences[i - half_q] = kl_divergence(p_s, q_s)
    lo, hi = thresholds[int(np.argmin(divergences))]
    if lo < min_value:
        lo = min_value
    if hi > max_value:
        hi = max_value
    return lo, hi
