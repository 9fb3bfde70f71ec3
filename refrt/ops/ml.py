"""The ai.onnx.ml domain: classic machine-learning operators.

Maps are Python dicts, a sequence of maps is a list of dicts (ZipMap's output). Most of these ops
take a batch ``X`` of shape [N, F] (a 1-D ``X`` is one row, [1, F]) and compute in float32 as
onnxruntime does; scores are float32. Score post-transforms (``post_transform``) follow
onnxruntime's ``ml_common.h``:

* with two or more scores per row: LOGISTIC ``1 / (1 + exp(-s))``, SOFTMAX, SOFTMAX_ZERO (a softmax
  that leaves exact zeros at zero), PROBIT ``sqrt(2) * erfinv(2s - 1)`` with onnxruntime's
  closed-form erfinv approximation (Winitzki, a = 0.147; absolute error up to 6e-3 on (0, 1));
* with one score per row only PROBIT is applied (onnxruntime leaves the score as it is for the
  other transforms), and the classifiers' binary cases are described at each op.
"""

from __future__ import annotations

import numpy as np

from ..registry import op
from ._common import np_dtype, to_str

ML = "ai.onnx.ml"
_F32 = np.float32


# ---------------------------------------------------------------- shared helpers

def _rows(X, what: str = "X", dtype=_F32) -> np.ndarray:
    """X as a 2-D [N, F] array of ``dtype``: a 1-D X is one row, higher ranks keep axis 0."""
    x = np.asarray(X)
    if x.dtype == object or x.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be a numeric tensor, got {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{what} must have at least one dimension")
    x2 = x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)
    return x2.astype(dtype, copy=False)


def _check_transform(name: str) -> None:
    if name not in ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"):
        raise ValueError(f"post_transform must be NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO or PROBIT, "
                         f"got {name!r}")


def _logistic(s: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-s)), computed without overflow."""
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1 / (1 + e), e / (1 + e)).astype(s.dtype)


def _probit(s: np.ndarray) -> np.ndarray:
    """sqrt(2) * erfinv(2s - 1) with onnxruntime's float32 approximation of erfinv."""
    s = np.asarray(s, dtype=_F32)
    x = 2 * s - 1
    sign = np.where(x < 0, _F32(-1), _F32(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.log((1 - x) * (1 + x))
        v = _F32(2) / (_F32(3.14159) * _F32(0.147)) + _F32(0.5) * log
        v2 = _F32(1) / _F32(0.147) * log
        return (_F32(1.41421356) * sign * np.sqrt(-v + np.sqrt(v * v - v2))).astype(_F32)


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _softmax_zero(s: np.ndarray) -> np.ndarray:
    """Softmax over the entries with |s| > 1e-7; the others stay (close to) zero."""
    keep = np.abs(s) > _F32(1e-7)
    m = s.max(axis=1, keepdims=True)
    with np.errstate(over="ignore"):
        e = np.where(keep, np.exp(s - m), s * np.exp(-m))
    total = np.where(keep, e, 0).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (e / total).astype(s.dtype)


def _post_transform(scores: np.ndarray, name: str) -> np.ndarray:
    """Apply ``post_transform`` to a [N, K] float32 score matrix (see the module docstring)."""
    _check_transform(name)
    s = scores.astype(_F32, copy=False)
    if name == "PROBIT":
        return _probit(s)
    if s.shape[1] < 2 or name == "NONE":
        return s
    if name == "LOGISTIC":
        return _logistic(s)
    if name == "SOFTMAX":
        return _softmax(s)
    return _softmax_zero(s)


def _binary_scores(s: np.ndarray, post_transform: str, all_positive: bool) -> np.ndarray:
    """The [N, 2] scores of a binary classifier that computed one score s per row (onnxruntime's
    "second class"): with LOGISTIC, p = logistic(s) gives [1 - p, p]; otherwise [1 - s, s] when
    the model's weights are all >= 0 and [-s, s] when not. With PROBIT, p = probit(s) gives
    [1 - p, p] (onnxruntime 1.32 writes the probits of two rows into one row there)."""
    s = s.astype(_F32, copy=False)
    if post_transform in ("LOGISTIC", "PROBIT"):
        p = _logistic(s) if post_transform == "LOGISTIC" else _probit(s)
        return np.stack([1 - p, p], axis=1)
    return np.stack([1 - s, s] if all_positive else [-s, s], axis=1)


def _class_labels(classlabels_ints, classlabels_strings):
    """The class label list and the dtype of the label output."""
    if classlabels_strings:
        return [str(s) for s in classlabels_strings], np.dtype(object)
    if classlabels_ints:
        return [int(i) for i in classlabels_ints], np.dtype(np.int64)
    raise ValueError("the class labels are missing: give classlabels_strings or the integer "
                     "class label attribute")


def _label_array(values, dtype) -> np.ndarray:
    out = np.empty(len(values), dtype=dtype)
    out[:] = values
    return out


def _floats(values, what: str) -> np.ndarray:
    if values is None:
        raise ValueError(f"attribute {what!r} is required")
    return np.asarray(values, dtype=_F32).reshape(-1)


# ---------------------------------------------------------------- simple elementwise / layout ops

@op("ArrayFeatureExtractor", since=1, domain=ML)
def array_feature_extractor(X, Y):
    """Z = X[..., Y.flat] on the last axis; as in onnxruntime a 1-D X gives shape [1, len(Y)]."""
    x = np.asarray(X)
    idx = np.asarray(Y)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"Y must be an int64 tensor, got {idx.dtype}")
    idx = idx.reshape(-1).astype(np.int64)
    if x.ndim == 0:
        raise ValueError("X must have at least one dimension")
    n = x.shape[-1]
    bad = (idx < 0) | (idx >= n)
    if bad.any():
        raise ValueError(f"index {int(idx[bad][0])} in Y is out of range [0, {n}) for the last "
                         f"axis of X")
    z = x[..., idx]
    return z.reshape(1, -1) if x.ndim == 1 else z


@op("Binarizer", since=1, domain=ML)
def binarizer(X, *, threshold=0.0):
    """Y = 1 where X > threshold else 0, same dtype. NaN gives 0 (onnxruntime rejects NaN)."""
    x = np.asarray(X)
    return (x > threshold).astype(x.dtype)


@op("Imputer", since=1, domain=ML)
def imputer(X, *, imputed_value_floats=None, imputed_value_int64s=None, replaced_value_float=0.0,
            replaced_value_int64=0):
    """Y = X with every element equal to the replaced value (NaN matches NaN) set to the imputed
    value of its feature (last axis; one imputed value applies to all features)."""
    x = np.asarray(X)
    if x.dtype.kind == "f":
        values, replaced = imputed_value_floats, replaced_value_float
    elif x.dtype.kind in "iu":
        values, replaced = imputed_value_int64s, replaced_value_int64
    else:
        raise TypeError(f"X must be a float or integer tensor, got {x.dtype}")
    if not values:
        kind = "floats" if x.dtype.kind == "f" else "int64s"
        raise ValueError(f"Imputer on {x.dtype} input needs imputed_value_{kind}")
    fill = np.asarray(values).astype(x.dtype)
    if x.ndim == 0 or fill.size not in (1, x.shape[-1]):
        raise ValueError(f"{fill.size} imputed values for {x.shape[-1] if x.ndim else 0} features")
    hit = np.isnan(x) if (x.dtype.kind == "f" and np.isnan(replaced)) else (x == replaced)
    return np.where(hit, fill, x)


@op("Scaler", since=1, domain=ML)
def scaler(X, *, offset=None, scale=None):
    """Y = (X - offset) * scale in float32; offset and scale have one value per feature (last
    axis) or a single value."""
    x = np.asarray(X).astype(_F32)
    off = np.zeros(1, _F32) if offset is None else _floats(offset, "offset")
    sc = np.ones(1, _F32) if scale is None else _floats(scale, "scale")
    n = x.shape[-1] if x.ndim else 1
    for name, v in (("offset", off), ("scale", sc)):
        if v.size not in (1, n):
            raise ValueError(f"{name} has {v.size} values for {n} features")
    return ((x - off) * sc).astype(_F32)


@op("Normalizer", since=1, domain=ML)
def normalizer(X, *, norm="MAX"):
    """Y = X / max(X) (MAX), X / sum|X| (L1) or X / sqrt(sum X^2) (L2) per row, in float32; a row
    whose divisor is 0 is left as it is. As in onnxruntime, MAX divides by the largest value
    (not the largest magnitude) and L2 keeps the sign (the spec writes sqrt(X^2 / sum X^2))."""
    x = np.asarray(X)
    rows = _rows(x)
    if norm == "MAX":
        div = rows.max(axis=1, keepdims=True)
    elif norm == "L1":
        div = np.abs(rows).sum(axis=1, keepdims=True)
    elif norm == "L2":
        div = np.sqrt((rows * rows).sum(axis=1, keepdims=True))
    else:
        raise ValueError(f"norm must be MAX, L1 or L2, got {norm!r}")
    safe = np.where(div == 0, _F32(1), div)
    return (rows / safe).astype(_F32).reshape(x.shape)


@op("FeatureVectorizer", since=1, domain=ML)
def feature_vectorizer(*X, inputdimensions=None):
    """Y = concat(X_1[:, :d_1], X_2[:, :d_2], ...) in float32, each input cut or zero-padded to
    its entry d_i of ``inputdimensions`` (a 1-D input is one row; higher ranks are flattened per
    row)."""
    if not X:
        raise ValueError("FeatureVectorizer needs at least one input")
    dims = list(inputdimensions) if inputdimensions else [_rows(x).shape[1] for x in X]
    if len(dims) != len(X):
        raise ValueError(f"inputdimensions has {len(dims)} entries for {len(X)} inputs")
    parts = []
    n = None
    for x, d in zip(X, dims):
        r = _rows(x)
        if n is not None and r.shape[0] != n:
            raise ValueError(f"inputs disagree on the batch size: {n} and {r.shape[0]}")
        n = r.shape[0]
        part = np.zeros((n, int(d)), dtype=_F32)
        k = min(int(d), r.shape[1])
        part[:, :k] = r[:, :k]
        parts.append(part)
    return np.concatenate(parts, axis=1)


@op("OneHotEncoder", since=1, domain=ML)
def one_hot_encoder(X, *, cats_int64s=None, cats_strings=None, zeros=1):
    """Y[..., j] = 1.0 where X equals category j (float input is truncated to int64 first);
    shape X.shape + [n_categories]. A value in no category gives zeros, or an error when
    ``zeros=0``."""
    x = np.asarray(X)
    if cats_strings:
        if x.dtype != object and x.dtype.kind not in "SU":
            raise TypeError(f"X must be a string tensor with cats_strings, got {x.dtype}")
        index = {str(c): j for j, c in enumerate(cats_strings)}
        keys = [str(v) for v in x.reshape(-1)]
    elif cats_int64s:
        if x.dtype.kind not in "iuf":
            raise TypeError(f"X must be numeric with cats_int64s, got {x.dtype}")
        index = {int(c): j for j, c in enumerate(cats_int64s)}
        keys = x.reshape(-1).astype(np.int64).tolist()
    else:
        raise ValueError("OneHotEncoder needs cats_int64s or cats_strings")
    n = len(index)
    y = np.zeros((len(keys), n), dtype=_F32)
    for i, k in enumerate(keys):
        j = index.get(k)
        if j is not None:
            y[i, j] = 1
        elif not zeros:
            raise ValueError(f"value {k!r} is in no category and zeros=0")
    return y.reshape(x.shape + (n,))


# ---------------------------------------------------------------- maps and label mappings

def _map_value_dtype(ctx, values, default):
    """The element type of a map's values: the declared input type if known, else from the
    values themselves (numpy scalars keep their dtype; Python floats count as ``default``)."""
    tp = ctx.input_types[0] if ctx is not None and ctx.input_types else None
    if tp is not None and tp.HasField("map_type"):
        et = tp.map_type.value_type.tensor_type.elem_type
        if et:
            return np_dtype(et)
    if values and all(isinstance(v, np.generic) for v in values):
        return np.result_type(*values)
    if values and all(isinstance(v, str) for v in values):
        return np.dtype(object)
    if values and all(isinstance(v, (int, np.integer)) for v in values):
        return np.dtype(np.int64)
    return np.dtype(default)


def _check_map(X, what: str = "X") -> dict:
    if not isinstance(X, dict):
        raise TypeError(f"{what} must be a map (a dict), got {type(X).__name__}")
    return X


@op("CastMap", since=1, domain=ML)
def cast_map(X, *, cast_to="TO_FLOAT", map_form="DENSE", max_map=1):
    """Y[0, :] = the map's values in ascending key order, cast to float32, int64 or string.

    DENSE: one column per entry; SPARSE: ``max_map`` columns, the value of key k in column k and
    zeros elsewhere. Floats become strings as C's "%f" does ("1.500000"), strings become numbers
    by parsing; float to int64 truncates. Missing SPARSE entries are 0, 0.0 or "0.000000"
    (onnxruntime writes the string "0.f" there).
    """
    m = _check_map(X)
    keys = sorted(int(k) for k in m)
    converters = {
        "TO_FLOAT": (_F32, lambda v: _F32(float(v)), _F32(0)),
        "TO_INT64": (np.int64, lambda v: np.int64(int(float(v)) if isinstance(v, str) else int(v)),
                     np.int64(0)),
        "TO_STRING": (object, lambda v: v if isinstance(v, str) else f"{float(v):f}", "0.000000"),
    }
    if cast_to not in converters:
        raise ValueError(f"cast_to must be TO_FLOAT, TO_INT64 or TO_STRING, got {cast_to!r}")
    dtype, convert, zero = converters[cast_to]
    if map_form == "DENSE":
        y = np.empty((1, len(keys)), dtype=dtype)
        for j, k in enumerate(keys):
            y[0, j] = convert(m[k])
    elif map_form == "SPARSE":
        y = np.empty((1, max_map), dtype=dtype)
        y[:] = zero
        for k in keys:
            if not 0 <= k < max_map:
                raise ValueError(f"key {k} is out of range [0, {max_map}) for map_form SPARSE")
            y[0, k] = convert(m[k])
    else:
        raise ValueError(f"map_form must be DENSE or SPARSE, got {map_form!r}")
    return y


@op("DictVectorizer", since=1, domain=ML)
def dict_vectorizer(X, *, int64_vocabulary=None, string_vocabulary=None, ctx):
    """Y[0, i] = X[vocabulary[i]] (0 where the key is absent; keys outside the vocabulary are
    ignored), shape [1, len(vocabulary)] as in onnxruntime; a list of maps gives one row each.
    Y has the element type of the map's values."""
    if (int64_vocabulary is None) == (string_vocabulary is None):
        raise ValueError("DictVectorizer needs exactly one of int64_vocabulary and "
                         "string_vocabulary")
    vocab = ([str(s) for s in string_vocabulary] if string_vocabulary is not None
             else [int(i) for i in int64_vocabulary])
    maps = X if isinstance(X, list) else [X]
    for m in maps:
        _check_map(m)
    values = [v for m in maps for v in m.values()]
    dtype = _map_value_dtype(ctx, values, _F32)
    y = np.zeros((len(maps), len(vocab)), dtype=dtype)
    if dtype == object:
        y[:] = ""
    for r, m in enumerate(maps):
        for i, key in enumerate(vocab):
            if key in m:
                y[r, i] = m[key]
    return y


@op("ZipMap", since=1, domain=ML)
def zip_map(X, *, classlabels_int64s=None, classlabels_strings=None):
    """Z = [{label_j: X[i, j]} for each row i]: a sequence of maps from the class labels to the
    row's float values (Python floats)."""
    labels, _ = _class_labels(classlabels_int64s, classlabels_strings)
    rows = _rows(X)
    if rows.shape[1] != len(labels):
        raise ValueError(f"X has {rows.shape[1]} columns for {len(labels)} class labels")
    return [dict(zip(labels, (float(v) for v in row))) for row in rows]


@op("CategoryMapper", since=1, domain=ML)
def category_mapper(X, *, cats_int64s=None, cats_strings=None, default_int64=-1,
                    default_string="_Unused"):
    """Y = the integer of each string (string input) or the string of each integer (int64 input)
    in the parallel lists cats_strings / cats_int64s, the default when absent."""
    x = np.asarray(X)
    strings = [str(s) for s in (cats_strings or [])]
    ints = [int(i) for i in (cats_int64s or [])]
    if len(strings) != len(ints):
        raise ValueError(f"cats_strings has {len(strings)} entries, cats_int64s {len(ints)}")
    if x.dtype == object or x.dtype.kind in "SU":
        table = dict(zip(strings, ints))
        return _lookup(x, table, default_int64, np.dtype(np.int64))
    if x.dtype.kind in "iu":
        table = dict(zip(ints, strings))
        return _lookup(x, table, default_string, np.dtype(object))
    raise TypeError(f"X must be a string or int64 tensor, got {x.dtype}")


def _lookup(x: np.ndarray, table: dict, default, out_dtype, nan_value=None) -> np.ndarray:
    """Map every element of x through ``table`` (Python keys), ``default`` when absent; a NaN
    element maps to ``nan_value`` when given (NaN keys match any NaN)."""
    y = np.empty(x.shape, dtype=out_dtype)
    flat = y.reshape(-1)
    for i, v in enumerate(x.reshape(-1).tolist()):
        if isinstance(v, bytes):
            v = to_str(v)
        if nan_value is not None and isinstance(v, float) and v != v:
            flat[i] = nan_value
        else:
            flat[i] = table.get(v, default)
    return y


@op("LabelEncoder", since=1, domain=ML)
def label_encoder_v1(X, *, classes_strings=None, default_int64=-1, default_string="_Unused"):
    """String input: Y = index of x in classes_strings (default_int64 if absent); int64 input:
    Y = classes_strings[x] (default_string if out of range)."""
    x = np.asarray(X)
    classes = [str(s) for s in (classes_strings or [])]
    if x.dtype == object or x.dtype.kind in "SU":
        return _lookup(x, {s: i for i, s in reversed(list(enumerate(classes)))}, default_int64,
                       np.dtype(np.int64))
    if x.dtype.kind in "iu":
        return _lookup(x, dict(enumerate(classes)), default_string, np.dtype(object))
    raise TypeError(f"X must be a string or int64 tensor, got {x.dtype}")


def _tensor_list(arr: np.ndarray) -> tuple[list, np.dtype]:
    a = np.asarray(arr).reshape(-1)
    if a.dtype == object or a.dtype.kind in "SU":
        return [to_str(s) for s in a], np.dtype(object)
    return a.tolist(), a.dtype


@op("LabelEncoder", since=(2, 4), domain=ML)
def label_encoder(X, *, default_float=-0.0, default_int64=-1, default_string="_Unused",
                  default_tensor=None, keys_floats=None, keys_int64s=None, keys_strings=None,
                  keys_tensor=None, values_floats=None, values_int64s=None, values_strings=None,
                  values_tensor=None):
    """Y = values[i] where X == keys[i], else the default matching the values' type.

    Exactly one keys_* and one values_* attribute (``*_tensor`` from version 4: any of string,
    int64, int32, int16, float, double). A NaN key matches any NaN. If a key repeats, the last one
    wins (the version-4 spec; onnxruntime keeps the first). The default is ``default_tensor`` if
    given, else default_string / default_int64 / default_float by the values' type (integer values
    of other widths: -1; double values: -0.0).
    """
    keys_given = [(k, v) for k, v in (("floats", keys_floats), ("int64s", keys_int64s),
                                      ("strings", keys_strings), ("tensor", keys_tensor))
                  if v is not None]
    values_given = [(k, v) for k, v in (("floats", values_floats), ("int64s", values_int64s),
                                        ("strings", values_strings), ("tensor", values_tensor))
                    if v is not None]
    if len(keys_given) != 1 or len(values_given) != 1:
        raise ValueError("LabelEncoder needs exactly one keys_* and one values_* attribute")
    (kkind, kraw), (vkind, vraw) = keys_given[0], values_given[0]
    if kkind == "tensor":
        keys, key_dtype = _tensor_list(kraw)
    else:
        key_dtype = {"floats": np.dtype(_F32), "int64s": np.dtype(np.int64),
                     "strings": np.dtype(object)}[kkind]
        keys = [str(k) for k in kraw] if kkind == "strings" else list(kraw)
    if vkind == "tensor":
        values, out_dtype = _tensor_list(vraw)
    else:
        out_dtype = {"floats": np.dtype(_F32), "int64s": np.dtype(np.int64),
                     "strings": np.dtype(object)}[vkind]
        values = [str(v) for v in vraw] if vkind == "strings" else list(vraw)
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys and {len(values)} values")
    x = np.asarray(X)
    if (x.dtype == object or x.dtype.kind in "SU") != (key_dtype == object):
        keys_kind = "strings" if key_dtype == object else str(key_dtype)
        raise TypeError(f"X is {x.dtype} but the keys are {keys_kind}")
    if key_dtype.kind == "f":
        # compare at the keys' precision: a float32 key 0.1 matches a float32 input 0.1
        keys = np.asarray(keys, dtype=key_dtype).tolist()
        x = x.astype(key_dtype)
    if default_tensor is not None:
        default = np.asarray(default_tensor).reshape(-1)[0]
        default = to_str(default) if isinstance(default, (bytes, str)) else default
    elif out_dtype == object:
        default = default_string
    elif out_dtype.kind in "iu":
        default = default_int64 if out_dtype == np.int64 else -1
    else:
        default = default_float
    table = {}
    nan_value = None
    for k, v in zip(keys, values):
        if isinstance(k, float) and k != k:
            nan_value = v
        else:
            table[k] = v
    return _lookup(x, table, default, out_dtype,
                   nan_value=nan_value if nan_value is not None else
                   (default if key_dtype.kind == "f" else None))


# ---------------------------------------------------------------- linear models

@op("LinearRegressor", since=1, domain=ML)
def linear_regressor(X, *, coefficients=None, intercepts=None, post_transform="NONE", targets=1):
    """Y = post_transform(X @ W.T + b) in float32, W = coefficients as [targets, F]; shape
    [N, targets]."""
    x = _rows(X)
    w = _floats(coefficients, "coefficients")
    if w.size != targets * x.shape[1]:
        raise ValueError(f"{w.size} coefficients for {targets} targets and {x.shape[1]} features")
    y = x @ w.reshape(targets, x.shape[1]).T
    if intercepts is not None:
        y = y + _floats(intercepts, "intercepts")
    return _post_transform(y.astype(_F32), post_transform)


@op("LinearClassifier", since=1, domain=ML)
def linear_classifier(X, *, coefficients, classlabels_ints=None, classlabels_strings=None,
                      intercepts=None, multi_class=0, post_transform="NONE"):
    """scores = X @ W.T + b (float32, W = coefficients as [K, F]); label = the class of the largest
    score; Z = post_transform(scores).

    Binary form (K = 1, as onnxruntime does it): label = labels[1] if the score s > 0 else
    labels[0] (1 / 0, "1" / "0" without two labels); with two labels Z = [1 - p, p] where p is
    logistic(s) with LOGISTIC, probit(s) with PROBIT, else s itself; otherwise Z = [s].
    ``multi_class`` is accepted and has no effect, as in onnxruntime.
    """
    _check_transform(post_transform)
    labels, label_dtype = _class_labels(classlabels_ints, classlabels_strings)
    x = _rows(X)
    w = _floats(coefficients, "coefficients")
    if w.size % x.shape[1]:
        raise ValueError(f"{w.size} coefficients do not split into rows of {x.shape[1]} features")
    k = w.size // x.shape[1]
    scores = x @ w.reshape(k, x.shape[1]).T
    if intercepts is not None:
        b = _floats(intercepts, "intercepts")
        if b.size != k:
            raise ValueError(f"{b.size} intercepts for {k} classes")
        scores = scores + b
    scores = scores.astype(_F32)
    if k == 1:
        s = scores[:, 0]
        pos, neg = (labels[1], labels[0]) if len(labels) == 2 else (
            ("1", "0") if label_dtype == object else (1, 0))
        y = _label_array([pos if v > 0 else neg for v in s], label_dtype)
        if len(labels) == 2:
            return y, _binary_scores(s, post_transform, all_positive=True)
        return y, _post_transform(scores, post_transform)
    if k != len(labels):
        raise ValueError(f"{k} classes in coefficients but {len(labels)} class labels")
    y = _label_array([labels[i] for i in scores.argmax(axis=1)], label_dtype)
    return y, _post_transform(scores, post_transform)


# ---------------------------------------------------------------- support vector machines

def _kernel(x: np.ndarray, vectors: np.ndarray, kernel_type: str, params) -> np.ndarray:
    """K[n, v] = kernel(x_n, vectors_v) in float32: LINEAR x.v, POLY (gamma x.v + coef0)^degree,
    RBF exp(-gamma |x - v|^2), SIGMOID tanh(gamma x.v + coef0)."""
    gamma, coef0, degree = (_F32(p) for p in (list(params or []) + [0, 0, 0])[:3])
    if kernel_type == "LINEAR":
        return x @ vectors.T
    if kernel_type == "POLY":
        return ((gamma * (x @ vectors.T) + coef0) ** degree).astype(_F32)
    if kernel_type == "RBF":
        d = x[:, None, :] - vectors[None, :, :]
        return np.exp(-gamma * (d * d).sum(axis=2)).astype(_F32)
    if kernel_type == "SIGMOID":
        return np.tanh(gamma * (x @ vectors.T) + coef0).astype(_F32)
    raise ValueError(f"kernel_type must be LINEAR, POLY, RBF or SIGMOID, got {kernel_type!r}")


def _support_vectors(support_vectors, n: int, x: np.ndarray) -> np.ndarray:
    sv = _floats(support_vectors, "support_vectors")
    if sv.size != n * x.shape[1]:
        raise ValueError(f"{sv.size} support vector values for {n} vectors of {x.shape[1]} "
                         f"features")
    return sv.reshape(n, x.shape[1])


@op("SVMRegressor", since=1, domain=ML)
def svm_regressor(X, *, coefficients=None, kernel_params=None, kernel_type="LINEAR",
                  n_supports=0, one_class=0, post_transform="NONE", rho=None,
                  support_vectors=None):
    """Y = sum_v coef_v K(x, sv_v) + rho[0] with n_supports > 0, else x . coefficients + rho[0]
    (a linear model); one_class maps Y to +1 (Y > 0) / -1. Shape [N, 1], float32.
    ``post_transform`` is accepted and not applied, as in onnxruntime."""
    _check_transform(post_transform)
    x = _rows(X)
    coef = _floats(coefficients, "coefficients")
    r = _floats(rho, "rho")[0]
    if n_supports > 0:
        k = _kernel(x, _support_vectors(support_vectors, n_supports, x), kernel_type,
                    kernel_params)
        y = k @ coef[:n_supports] + r
    else:
        if coef.size != x.shape[1]:
            raise ValueError(f"{coef.size} coefficients for {x.shape[1]} features")
        y = x @ coef + r
    y = y.astype(_F32).reshape(-1, 1)
    if one_class:
        y = np.where(y > 0, _F32(1), _F32(-1))
    return y


def _multiclass_probability(k: int, r: np.ndarray) -> np.ndarray:
    """Pairwise coupling of libsvm (Wu, Lin and Weng 2004, method 2), as onnxruntime does it:
    class probabilities p from the pairwise probabilities r[i, j] = P(i | i or j)."""
    q = np.zeros((k, k), dtype=_F32)
    for i in range(k):
        for j in range(k):
            if j != i:
                q[i, i] += r[j, i] * r[j, i]
                q[i, j] = -r[j, i] * r[i, j]
    p = np.full(k, _F32(1) / _F32(k), dtype=_F32)
    eps = _F32(0.005) / _F32(k)
    for _ in range(100):
        qp = q @ p
        pqp = _F32(p @ qp)
        if np.max(np.abs(qp - pqp)) < eps:
            break
        for i in range(k):
            diff = (-qp[i] + pqp) / q[i, i]
            p[i] += diff
            pqp = (pqp + diff * (diff * q[i, i] + 2 * qp[i])) / (1 + diff) / (1 + diff)
            qp = (qp + diff * q[i, :]) / (1 + diff)
            p = p / (1 + diff)
    return p.astype(_F32)


@op("SVMClassifier", since=1, domain=ML)
def svm_classifier(X, *, classlabels_ints=None, classlabels_strings=None, coefficients=None,
                   kernel_params=None, kernel_type="LINEAR", post_transform="NONE", prob_a=None,
                   prob_b=None, rho=None, support_vectors=None, vectors_per_class=None):
    """Support vector classifier, following onnxruntime.

    With ``vectors_per_class`` (libsvm, one-vs-one): for every class pair (i, j), i < j,
    s_ij = sum over the support vectors of i and j of coef * K(x, sv) + rho_ij, a vote for i if
    s_ij > 0 else for j; label = the class with most votes. Z = the pairwise scores s_ij (K > 2)
    or, for two classes, [-s, s] (NONE), [1 - p, p] with p = logistic(s) (LOGISTIC) or
    probit(s) (PROBIT), else [1 - s, s]; or with prob_a /
    prob_b the class probabilities from pairwise coupling of 1 - logistic(A s_ij + B).
    Without it (liblinear): scores = X @ W.T + rho[0], label = largest score, Z = scores.
    Two classes without probabilities: label = labels[1] when the top score is >= 0.5 (all
    coefficients >= 0) or > 0 (otherwise), else the winning class.
    """
    _check_transform(post_transform)
    labels, label_dtype = _class_labels(classlabels_ints, classlabels_strings)
    n_cls = len(labels)
    x = _rows(X)
    coef = _floats(coefficients, "coefficients")
    rho_ = _floats(rho, "rho")
    have_proba = bool(prob_a)
    if have_proba and len(prob_a) != len(prob_b or []):
        raise ValueError("prob_a and prob_b must have the same length")
    all_positive = bool((coef >= 0).all())
    n_pairs = n_cls * (n_cls - 1) // 2
    per_class = [int(v) for v in (vectors_per_class or [])]
    if sum(per_class) > 0:
        if len(per_class) != n_cls:
            raise ValueError(f"vectors_per_class has {len(per_class)} entries for {n_cls} classes")
        n_sv = sum(per_class)
        k = _kernel(x, _support_vectors(support_vectors, n_sv, x), kernel_type, kernel_params)
        if coef.size < (n_cls - 1) * n_sv or rho_.size < n_pairs:
            raise ValueError("too few coefficients or rho values for the support vectors")
        coef2 = coef[:(n_cls - 1) * n_sv].reshape(n_cls - 1, n_sv)
        start = np.concatenate([[0], np.cumsum(per_class)])
        pair_scores = np.zeros((x.shape[0], n_pairs), dtype=_F32)
        votes = np.zeros((x.shape[0], n_cls), dtype=np.int64)
        p = 0
        for i in range(n_cls):
            for j in range(i + 1, n_cls):
                si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
                s = (k[:, si].astype(np.float64) @ coef2[j - 1, si]
                     + k[:, sj].astype(np.float64) @ coef2[i, sj] + rho_[p])
                pair_scores[:, p] = s
                votes[np.arange(len(s)), np.where(s > 0, i, j)] += 1
                p += 1
        winner = votes.argmax(axis=1)
        top = np.zeros(x.shape[0], dtype=_F32)
        if have_proba:
            a, b = _floats(prob_a, "prob_a"), _floats(prob_b, "prob_b")
            z = np.zeros((x.shape[0], n_cls), dtype=_F32)
            for r in range(x.shape[0]):
                pair = np.zeros((n_cls, n_cls), dtype=_F32)
                p = 0
                for i in range(n_cls):
                    for j in range(i + 1, n_cls):
                        v = 1 - _logistic(np.asarray(pair_scores[r, p] * a[p] + b[p], _F32))
                        v = np.clip(v, _F32(1e-7), _F32(1 - 1e-7))
                        pair[i, j], pair[j, i] = v, 1 - v
                        p += 1
                z[r] = _multiclass_probability(n_cls, pair)
            z = _post_transform(z, post_transform)
        elif n_cls <= 2:
            z = _binary_scores(pair_scores[:, 0], post_transform,
                               all_positive=post_transform != "NONE")
        else:
            z = _post_transform(pair_scores, post_transform)
    else:
        if coef.size != n_cls * x.shape[1]:
            raise ValueError(f"{coef.size} coefficients for {n_cls} classes and {x.shape[1]} "
                             f"features")
        scores = (x @ coef.reshape(n_cls, x.shape[1]).T + rho_[0]).astype(_F32)
        winner = scores.argmax(axis=1)
        top = scores.max(axis=1)
        z = _post_transform(scores, post_transform)
    if n_pairs == 1 and not have_proba:
        chosen = [1 if ((all_positive and t >= 0.5) or (t > 0 and not all_positive)) else w
                  for t, w in zip(top, winner)]
    else:
        chosen = winner
    return _label_array([labels[i] for i in chosen], label_dtype), z.astype(_F32)


# ---------------------------------------------------------------- tree ensembles

_MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ",
          "BRANCH_MEMBER")


class _Forest:
    """Trees as flat arrays, evaluated for a whole batch at once.

    Node i compares ``x[feature[i]]`` with ``split[i]`` (or tests membership in ``members[i]``)
    under ``mode[i]`` (an index into _MODES) and goes to ``true_next[i]`` or ``false_next[i]``;
    a negative next value -(k + 1) means leaf k. A NaN feature follows the true branch when
    ``nan_true[i]``, else the comparison's own result (false, or true for BRANCH_NEQ).
    """

    def __init__(self, feature, mode, split, true_next, false_next, nan_true, roots, members):
        self.feature = np.asarray(feature, dtype=np.int64)
        self.mode = np.asarray(mode, dtype=np.int64)
        self.split = split
        self.true_next = np.asarray(true_next, dtype=np.int64)
        self.false_next = np.asarray(false_next, dtype=np.int64)
        self.nan_true = np.asarray(nan_true, dtype=bool)
        self.roots = list(roots)
        self.members = members

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """The leaf reached in every tree: int array [N, n_trees]."""
        n = x.shape[0]
        out = np.empty((n, len(self.roots)), dtype=np.int64)
        rows = np.arange(n)
        if n and self.feature.size and int(self.feature.max()) >= x.shape[1]:
            raise ValueError(f"a tree node reads feature {int(self.feature.max())}, X has "
                             f"{x.shape[1]} features")
        for t, root in enumerate(self.roots):
            cur = np.full(n, root, dtype=np.int64)
            for _ in range(len(self.mode) + 1):
                inner = cur >= 0
                if not inner.any():
                    break
                r, node = rows[inner], cur[inner]
                v = x[r, self.feature[node]]
                th = self.split[node]
                mode = self.mode[node]
                go = np.select(
                    [mode == 0, mode == 1, mode == 2, mode == 3, mode == 4, mode == 5],
                    [v <= th, v < th, v >= th, v > th, v == th, v != th], default=False)
                if self.members:
                    for i in np.unique(node[mode == 6]):
                        sel = node == i
                        go[sel] = np.isin(v[sel], self.members[int(i)])
                go |= np.isnan(v) & self.nan_true[node]
                cur[inner] = np.where(go, self.true_next[node], self.false_next[node])
            else:
                raise ValueError("a tree has a cycle")
            out[:, t] = -cur - 1
        return out


def _aggregate(leaves: np.ndarray, leaf_votes: list, n_out: int, how: str, dtype):
    """Per row and output: combine the (output, weight) votes of the leaves reached, tree by tree.

    Returns (scores [N, n_out], has_score [N, n_out]); SUM / AVERAGE add (AVERAGE then divides
    by the number of trees), MIN / MAX keep the extreme vote; an output without votes scores 0."""
    n_leaves = len(leaf_votes)
    value = np.zeros((n_leaves, n_out), dtype=dtype)
    voted = np.zeros((n_leaves, n_out), dtype=bool)
    for leaf, votes in enumerate(leaf_votes):
        for target, w in votes:
            if not 0 <= target < n_out:
                raise ValueError(f"a leaf votes for output {target}, there are {n_out}")
            old = value[leaf, target]
            if how in ("SUM", "AVERAGE"):
                value[leaf, target] = old + w
            elif not voted[leaf, target]:
                value[leaf, target] = w
            else:
                value[leaf, target] = min(old, w) if how == "MIN" else max(old, w)
            voted[leaf, target] = True
    n = leaves.shape[0]
    scores = np.zeros((n, n_out), dtype=dtype)
    has = np.zeros((n, n_out), dtype=bool)
    for t in range(leaves.shape[1]):
        v, h = value[leaves[:, t]], voted[leaves[:, t]]
        if how in ("SUM", "AVERAGE"):
            scores += v
        else:
            better = np.minimum(scores, v) if how == "MIN" else np.maximum(scores, v)
            scores = np.where(h, np.where(has, better, v), scores)
        has |= h
    if how == "AVERAGE" and leaves.shape[1]:
        scores = scores / np.asarray(leaves.shape[1], dtype=dtype)
    return scores.astype(dtype), has


def _pick(values, as_tensor, what: str, required: bool = True):
    """An attribute given either as FLOATS or as its ``*_as_tensor`` (double) form."""
    if as_tensor is not None:
        return np.asarray(as_tensor, dtype=np.float64).reshape(-1)
    if values is not None:
        return np.asarray(values, dtype=_F32).reshape(-1)
    if required:
        raise ValueError(f"attribute {what!r} (or {what}_as_tensor) is required")
    return None


def _legacy_forest(nodes_treeids, nodes_nodeids, nodes_featureids, nodes_modes, nodes_values,
                   nodes_truenodeids, nodes_falsenodeids, nodes_missing_value_tracks_true,
                   leaf_treeids, leaf_nodeids, leaf_ids, leaf_weights, split_dtype):
    """The (tree id, node id) node lists of TreeEnsembleRegressor / Classifier -> (_Forest, the
    votes of every leaf). A tree's root is its node that no other node points to."""
    n = len(nodes_nodeids)
    for name, v in (("nodes_treeids", nodes_treeids), ("nodes_featureids", nodes_featureids),
                    ("nodes_modes", nodes_modes), ("nodes_values", nodes_values),
                    ("nodes_truenodeids", nodes_truenodeids),
                    ("nodes_falsenodeids", nodes_falsenodeids)):
        if v is None or len(v) != n:
            raise ValueError(f"{name} must have one entry per node ({n})")
    position = {}
    for i, key in enumerate(zip(nodes_treeids, nodes_nodeids)):
        if key in position:
            raise ValueError(f"node {key[1]} of tree {key[0]} is defined twice")
        position[key] = i
    leaf_number = {}
    for i, m in enumerate(nodes_modes):
        if m == "LEAF":
            leaf_number[i] = len(leaf_number)
        elif m not in _MODES[:6]:
            raise ValueError(f"unknown node mode {m!r}")

    def target(tree, node_id):
        i = position.get((tree, node_id))
        if i is None:
            raise ValueError(f"tree {tree} has no node {node_id}")
        return -(leaf_number[i] + 1) if i in leaf_number else i

    inner = [i for i in range(n) if i not in leaf_number]
    index = {i: k for k, i in enumerate(inner)}

    def remap(t):
        return t if t < 0 else index[t]

    tracks = list(nodes_missing_value_tracks_true or [])
    true_next = [remap(target(nodes_treeids[i], nodes_truenodeids[i])) for i in inner]
    false_next = [remap(target(nodes_treeids[i], nodes_falsenodeids[i])) for i in inner]
    children = {(nodes_treeids[i], nodes_truenodeids[i]) for i in inner}
    children |= {(nodes_treeids[i], nodes_falsenodeids[i]) for i in inner}
    roots, seen = [], set()
    for i in range(n):
        tree = nodes_treeids[i]
        if tree not in seen and (tree, nodes_nodeids[i]) not in children:
            seen.add(tree)
            roots.append(-(leaf_number[i] + 1) if i in leaf_number else index[i])
    forest = _Forest(
        feature=[nodes_featureids[i] for i in inner],
        mode=[_MODES.index(nodes_modes[i]) for i in inner],
        split=np.asarray([nodes_values[i] for i in inner], dtype=split_dtype),
        true_next=true_next, false_next=false_next,
        nan_true=[bool(tracks[i]) if i < len(tracks) else False for i in inner],
        roots=roots, members=None)
    votes = [[] for _ in leaf_number]
    if not (len(leaf_treeids or []) == len(leaf_nodeids or []) == len(leaf_ids or [])
            == len(leaf_weights)):
        raise ValueError("the leaf vote attributes (*_treeids, *_nodeids, *_ids, *_weights) must "
                         "have the same length")
    for t, nd, target_id, w in zip(leaf_treeids, leaf_nodeids, leaf_ids, leaf_weights):
        i = position.get((t, nd))
        if i is None or i not in leaf_number:
            raise ValueError(f"a vote names node {nd} of tree {t}, which is not a leaf")
        votes[leaf_number[i]].append((int(target_id), w))
    return forest, votes


def _tree_input(X):
    """X as [N, F] in the precision the trees compare in: double stays double, the rest float32."""
    x = np.asarray(X)
    return _rows(x, dtype=np.float64 if x.dtype == np.float64 else _F32)


@op("TreeEnsembleRegressor", since=(1, 3), domain=ML)
def tree_ensemble_regressor(X, *, aggregate_function="SUM", base_values=None,
                            base_values_as_tensor=None, n_targets=None, nodes_falsenodeids=None,
                            nodes_featureids=None, nodes_hitrates=None,
                            nodes_hitrates_as_tensor=None, nodes_missing_value_tracks_true=None,
                            nodes_modes=None, nodes_nodeids=None, nodes_treeids=None,
                            nodes_truenodeids=None, nodes_values=None,
                            nodes_values_as_tensor=None, post_transform="NONE", target_ids=None,
                            target_nodeids=None, target_treeids=None, target_weights=None,
                            target_weights_as_tensor=None):
    """Y[n, t] = aggregate over the trees of the leaf weights for target t (+ base_values[t]),
    then post_transform; float32 [N, n_targets]. AVERAGE divides the sum by the number of trees;
    MIN / MAX take the extreme leaf weight; a target no leaf votes for gets 0 (+ its base value).

    Matches onnxruntime except where it departs from the spec: with a single target it uses only
    the first vote of a leaf that has several, and it outputs 0 (dropping the base value) for a
    target that no leaf reached votes for."""
    _check_transform(post_transform)
    if aggregate_function not in ("SUM", "AVERAGE", "MIN", "MAX"):
        raise ValueError(f"aggregate_function must be SUM, AVERAGE, MIN or MAX, got "
                         f"{aggregate_function!r}")
    x = _tree_input(X)
    forest, votes = _legacy_forest(
        nodes_treeids, nodes_nodeids, nodes_featureids, nodes_modes,
        _pick(nodes_values, nodes_values_as_tensor, "nodes_values"), nodes_truenodeids,
        nodes_falsenodeids, nodes_missing_value_tracks_true, target_treeids, target_nodeids,
        target_ids, _pick(target_weights, target_weights_as_tensor, "target_weights"), x.dtype)
    n_out = int(n_targets) if n_targets is not None else 1
    scores, _ = _aggregate(forest.leaves(x), votes, n_out, aggregate_function, x.dtype)
    base = _pick(base_values, base_values_as_tensor, "base_values", required=False)
    if base is not None and base.size:
        if base.size != n_out:
            raise ValueError(f"{base.size} base_values for {n_out} targets")
        scores = scores + base
    return _post_transform(scores.astype(_F32), post_transform)


@op("TreeEnsembleClassifier", since=(1, 3), domain=ML)
def tree_ensemble_classifier(X, *, base_values=None, base_values_as_tensor=None, class_ids=None,
                             class_nodeids=None, class_treeids=None, class_weights=None,
                             class_weights_as_tensor=None, classlabels_int64s=None,
                             classlabels_strings=None, nodes_falsenodeids=None,
                             nodes_featureids=None, nodes_hitrates=None,
                             nodes_hitrates_as_tensor=None, nodes_missing_value_tracks_true=None,
                             nodes_modes=None, nodes_nodeids=None, nodes_treeids=None,
                             nodes_truenodeids=None, nodes_values=None,
                             nodes_values_as_tensor=None, post_transform="NONE"):
    """scores[n, c] = sum over the trees of the leaf weights for class c (+ base_values[c]);
    label = the class with the largest score among those with a vote or a base value;
    Z = post_transform(scores).

    Binary case (two labels, every vote for the same class id c), as onnxruntime does it for the
    models converters write: s = the votes (+ base_values[c], or the single base value); label =
    labels[1] if s > 0.5 (all weights >= 0) or s > 0 (otherwise), else labels[0]. With c = 0,
    Z = [1 - p, p] with p = logistic(s) (LOGISTIC), else [1 - s, s] (all weights >= 0) or
    [-s, s] (PROBIT: p = probit(s)); with c = 1, Z = post_transform([0, s]). A single class
    label: Z = [s] and label 1 if s > 0 else 0 (integer labels only, as onnxruntime).
    Where onnxruntime 1.32 departs from this, refrt keeps the rules above: with two classes that
    both get votes its label is 1 whenever the second score is > 0; in the binary case it gives
    no usable scores with PROBIT and drops or misplaces base values.
    """
    _check_transform(post_transform)
    labels, label_dtype = _class_labels(classlabels_int64s, classlabels_strings)
    n_cls = len(labels)
    x = _tree_input(X)
    weights = _pick(class_weights, class_weights_as_tensor, "class_weights")
    forest, votes = _legacy_forest(
        nodes_treeids, nodes_nodeids, nodes_featureids, nodes_modes,
        _pick(nodes_values, nodes_values_as_tensor, "nodes_values"), nodes_truenodeids,
        nodes_falsenodeids, nodes_missing_value_tracks_true, class_treeids, class_nodeids,
        class_ids, weights, x.dtype)
    scores, has = _aggregate(forest.leaves(x), votes, n_cls, "SUM", x.dtype)
    scores = scores.astype(_F32)
    base = _pick(base_values, base_values_as_tensor, "base_values", required=False)
    base = np.zeros(0, _F32) if base is None else base.astype(_F32)
    voted = sorted(set(int(c) for c in (class_ids or [])))
    all_positive = bool((weights >= 0).all())

    if n_cls == 1:
        if label_dtype == object:
            raise ValueError("a TreeEnsembleClassifier with a single string label is not supported")
        s = scores[:, 0] + (base[0] if base.size else _F32(0))
        return (np.where(s > 0, 1, 0).astype(np.int64),
                _post_transform(s[:, None], post_transform))
    if n_cls == 2 and len(voted) == 1:
        c = voted[0]
        s = scores[:, c] + (base[c] if base.size == 2 else base[0] if base.size == 1 else _F32(0))
        s = s.astype(_F32)
        positive = s > (_F32(0.5) if all_positive else _F32(0))
        y = _label_array([labels[1] if p else labels[0] for p in positive], label_dtype)
        if c == 0:
            return y, _binary_scores(s, post_transform, all_positive)
        return y, _post_transform(np.stack([np.zeros_like(s), s], axis=1), post_transform)
    if base.size:
        if base.size != n_cls:
            raise ValueError(f"{base.size} base_values for {n_cls} classes")
        scores = scores + base
        has[:] = True
    masked = np.where(has, scores, -np.inf)
    winner = np.where(has.any(axis=1), masked.argmax(axis=1), scores.argmax(axis=1))
    y = _label_array([labels[i] for i in winner], label_dtype)
    return y, _post_transform(scores, post_transform)


@op("TreeEnsemble", since=5, domain=ML)
def tree_ensemble(X, *, aggregate_function=1, leaf_targetids, leaf_weights,
                  membership_values=None, n_targets=None, nodes_falseleafs, nodes_falsenodeids,
                  nodes_featureids, nodes_hitrates=None, nodes_missing_value_tracks_true=None,
                  nodes_modes, nodes_splits, nodes_trueleafs, nodes_truenodeids,
                  post_transform=0, tree_roots):
    """Y[n, t] = aggregate over the trees of the weights of the leaves reached for target t, then
    post_transform; [N, n_targets] in the dtype of X (float16 compares and sums in float32).

    Node modes 0..6: LEQ, LT, GTE, GT, EQ, NEQ, MEMBER (x in the node's set; the sets are
    ``membership_values`` split at NaNs, in the order of the MEMBER nodes). aggregate_function:
    0 AVERAGE (sum / number of trees), 1 SUM, 2 MIN, 3 MAX; post_transform: 0 NONE, 1 SOFTMAX,
    2 LOGISTIC, 3 SOFTMAX_ZERO, 4 PROBIT. A target no leaf votes for gets 0.
    onnxruntime 1.32 reads post_transform 1 as LOGISTIC and 2 as SOFTMAX (its own enum order);
    refrt follows the spec.
    """
    aggregations = {0: "AVERAGE", 1: "SUM", 2: "MIN", 3: "MAX"}
    transforms = {0: "NONE", 1: "SOFTMAX", 2: "LOGISTIC", 3: "SOFTMAX_ZERO", 4: "PROBIT"}
    if aggregate_function not in aggregations:
        raise ValueError(f"aggregate_function must be 0..3, got {aggregate_function}")
    if post_transform not in transforms:
        raise ValueError(f"post_transform must be 0..4, got {post_transform}")
    xin = np.asarray(X)
    if xin.dtype.kind != "f":
        raise TypeError(f"X must be a float tensor, got {xin.dtype}")
    work = np.float64 if xin.dtype == np.float64 else _F32
    x = _rows(xin, dtype=work)
    modes = np.asarray(nodes_modes).reshape(-1).astype(np.int64)
    n = modes.size
    for name, v in (("nodes_featureids", nodes_featureids), ("nodes_splits", nodes_splits),
                    ("nodes_truenodeids", nodes_truenodeids), ("nodes_trueleafs", nodes_trueleafs),
                    ("nodes_falsenodeids", nodes_falsenodeids),
                    ("nodes_falseleafs", nodes_falseleafs)):
        if np.asarray(v).size != n:
            raise ValueError(f"{name} must have one entry per node ({n})")
    if ((modes < 0) | (modes > 6)).any():
        raise ValueError("nodes_modes values must be in 0..6")
    members = {}
    if (modes == 6).any():
        if membership_values is None:
            raise ValueError("BRANCH_MEMBER nodes need membership_values")
        values = np.asarray(membership_values, dtype=work).reshape(-1)
        cuts = np.flatnonzero(np.isnan(values))
        sets = np.split(values, cuts)
        sets = [s[~np.isnan(s)] for s in sets][:len(cuts)]
        member_nodes = np.flatnonzero(modes == 6)
        if len(sets) < len(member_nodes):
            raise ValueError(f"membership_values has {len(sets)} sets for {len(member_nodes)} "
                             f"BRANCH_MEMBER nodes")
        members = {int(i): s for i, s in zip(member_nodes, sets)}

    def nexts(ids, leafs):
        return [-(int(i) + 1) if lf else int(i) for i, lf in zip(ids, leafs)]

    n_leaves = len(leaf_targetids)
    forest = _Forest(feature=nodes_featureids, mode=modes,
                     split=np.asarray(nodes_splits, dtype=work).reshape(-1),
                     true_next=nexts(nodes_truenodeids, nodes_trueleafs),
                     false_next=nexts(nodes_falsenodeids, nodes_falseleafs),
                     nan_true=(np.asarray(nodes_missing_value_tracks_true).reshape(-1).astype(bool)
                               if nodes_missing_value_tracks_true is not None
                               else np.zeros(n, bool)),
                     roots=[int(r) for r in tree_roots], members=members)
    for t in (forest.true_next, forest.false_next):
        if (t >= n).any() or (t < -n_leaves).any():
            raise ValueError("a node points to a node or leaf that does not exist")
    w = np.asarray(leaf_weights, dtype=work).reshape(-1)
    if w.size != n_leaves:
        raise ValueError(f"{w.size} leaf_weights for {n_leaves} leaves")
    votes = [[(int(t), wt)] for t, wt in zip(leaf_targetids, w)]
    n_out = int(n_targets) if n_targets is not None else 1 + max(leaf_targetids, default=0)
    scores, _ = _aggregate(forest.leaves(x), votes, n_out, aggregations[aggregate_function], work)
    y = scores
    if transforms[post_transform] != "NONE":
        y = _post_transform(scores.astype(_F32), transforms[post_transform])
    return y.astype(xin.dtype)
