"""String ops: StringNormalizer, RegexFullMatch, StringSplit, StringConcat, TfIdfVectorizer; and
ImageDecoder (it turns a byte string into an image).

String tensors are numpy object arrays of Python ``str``; an element that arrives as UTF-8
``bytes`` is decoded first. String outputs are object arrays of ``str``.
"""

from __future__ import annotations

import io
import operator
import re

import numpy as np

from ..registry import op
from ._common import to_str as _text


def _strings(x, what: str = "X") -> np.ndarray:
    """A string tensor as an object array of str (same shape)."""
    arr = np.asarray(x)
    if arr.dtype != object and arr.dtype.kind not in "SU":
        raise TypeError(f"{what} must be a string tensor, got {arr.dtype}")
    out = np.empty(arr.shape, dtype=object)
    for i, s in enumerate(arr.reshape(-1)):
        out.reshape(-1)[i] = _text(s)
    return out


def _map_chars(s: str, fn) -> str:
    """Apply a case mapping one character at a time, keeping a character whose mapping is not a
    single character (``"ß".upper()`` is ``"SS"``): the per-character towupper/towlower of C."""
    out = []
    for c in s:
        m = fn(c)
        out.append(m if len(m) == 1 else c)
    return "".join(out)


# ---------------------------------------------------------------- StringNormalizer

@op("StringNormalizer", since=10)
def string_normalizer(X, *, case_change_action="NONE", is_case_sensitive=0, locale=None,
                      stopwords=None):
    """Y = [change_case(x) for x in X if x not in stopwords], for X of shape [C] or [1, C].

    Follows onnxruntime: stop words remove whole elements (not words inside an element); the
    comparison ignores case (by lowercasing both) unless ``is_case_sensitive``; case changes are
    per character (a character whose upper/lower form is several characters stays as it is).
    When every element is removed the output is one empty string, shape [1] or [1, 1].
    ``locale`` is accepted and ignored: Python's Unicode case mapping is locale independent.
    """
    x = _strings(X)
    if case_change_action not in ("NONE", "LOWER", "UPPER"):
        raise ValueError(f"case_change_action must be NONE, LOWER or UPPER, got "
                         f"{case_change_action!r}")
    if x.ndim == 2 and x.shape[0] == 1:
        values = list(x[0])
    elif x.ndim == 1:
        values = list(x)
    else:
        raise ValueError(f"StringNormalizer takes a [C] or [1, C] tensor, got shape "
                         f"{list(x.shape)}")
    if stopwords:
        if is_case_sensitive:
            stops = {_text(w) for w in stopwords}
            values = [v for v in values if v not in stops]
        else:
            stops = {_map_chars(_text(w), str.lower) for w in stopwords}
            values = [v for v in values if _map_chars(v, str.lower) not in stops]
    if case_change_action == "LOWER":
        values = [_map_chars(v, str.lower) for v in values]
    elif case_change_action == "UPPER":
        values = [_map_chars(v, str.upper) for v in values]
    if not values:
        values = [""]
    y = np.array(values, dtype=object)
    return y.reshape(1, -1) if x.ndim == 2 else y


# ---------------------------------------------------------------- RegexFullMatch

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z",
    "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z",
    "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}


def re2_to_python(pattern: str) -> str:
    """Translate an RE2 pattern into an equivalent Python ``re`` pattern (used with re.ASCII).

    Translated: ``\\z`` (end of text) -> ``\\Z``; ``\\Q...\\E`` literal text; POSIX classes
    ``[[:alpha:]]``; named groups ``(?<name>...)`` -> ``(?P<name>...)``; ``$`` outside multi-line
    mode (end of text in RE2, also before a final newline in Python) -> ``\\Z``.
    Refused with ValueError, because RE2 rejects them: backreferences (``\\1``, ``(?P=name)``),
    lookaround (``(?=``, ``(?!``, ``(?<=``, ``(?<!``), atomic groups, conditionals; and
    because Python cannot express them: ``\\pN`` / ``\\p{Greek}`` Unicode classes, ``\\C``,
    the ungreedy flag ``(?U)``.
    """
    out: list[str] = []
    multiline = bool(re.search(r"\(\?[a-zA-Z]*m", pattern))
    i, n = 0, len(pattern)

    def refuse(what: str):
        raise ValueError(f"regex pattern {pattern!r}: {what} is not supported")

    def escape(j: int, in_class: bool) -> tuple[str, int]:
        """Translate the escape starting at pattern[j] == '\\' -> (text, next index)."""
        if j + 1 >= n:
            refuse("a trailing backslash")
        c = pattern[j + 1]
        if c == "Q":
            end = pattern.find("\\E", j + 2)
            literal = pattern[j + 2:] if end < 0 else pattern[j + 2:end]
            return re.escape(literal), (n if end < 0 else end + 2)
        if c in "pP":
            refuse("a Unicode class (\\p, \\P)")
        if c == "C":
            refuse("\\C (any byte)")
        if c.isdigit() and c != "0" and not in_class:
            refuse("a backreference (RE2 has none)")
        if c == "z" and not in_class:
            return r"\Z", j + 2
        if c == "Z" and not in_class:
            refuse("\\Z (RE2 has only \\z)")
        return pattern[j:j + 2], j + 2

    while i < n:
        ch = pattern[i]
        if ch == "\\":
            text, i = escape(i, in_class=False)
            out.append(text)
        elif ch == "[":
            j = i + 1
            body = ["["]
            if j < n and pattern[j] == "^":
                body.append("^")
                j += 1
            if j < n and pattern[j] == "]":
                body.append(r"\]")
                j += 1
            while j < n and pattern[j] != "]":
                if pattern[j] == "\\":
                    text, j = escape(j, in_class=True)
                    body.append(text)
                elif pattern.startswith("[:", j):
                    end = pattern.find(":]", j + 2)
                    name = pattern[j + 2:end] if end > 0 else ""
                    if name.startswith("^"):
                        refuse(f"the negated POSIX class [:{name}:]")
                    if name not in _POSIX_CLASSES:
                        refuse(f"the POSIX class [:{name}:]")
                    body.append(_POSIX_CLASSES[name])
                    j = end + 2
                elif pattern[j] == "[":
                    body.append(r"\[")
                    j += 1
                else:
                    body.append(pattern[j])
                    j += 1
            if j >= n:
                refuse("an unterminated character class")
            body.append("]")
            out.append("".join(body))
            i = j + 1
        elif ch == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2:]
            if rest.startswith(("=", "!", "<=", "<!")):
                refuse("lookaround (RE2 has none)")
            if rest.startswith(("P=", ">", "(")):
                refuse("a backreference, atomic group or conditional (RE2 has none)")
            if rest.startswith("<"):
                out.append("(?P<")
                i += 3
                continue
            flags = re.match(r"-?[a-zA-Z]*(-[a-zA-Z]*)?[:)]", rest)
            if flags and "U" in flags.group(0):
                refuse("the ungreedy flag (?U)")
            out.append("(?")
            i += 2
        elif ch == "$" and not multiline:
            out.append(r"\Z")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


@op("RegexFullMatch", since=20)
def regex_full_match(X, *, pattern=None):
    """Y = (the whole of x matches ``pattern``) for every element, RE2 syntax.

    Runs on Python's ``re`` after :func:`re2_to_python`, with ``re.ASCII`` so that ``\\w``, ``\\d``,
    ``\\s`` and ``\\b`` are ASCII-only as in RE2. Remaining differences: case-insensitive
    matching ``(?i)`` folds ASCII letters only (RE2 folds Unicode); ``\\s`` also matches ``\\v``;
    Python 3.11 needs inline flags such as ``(?i)`` at the start of the pattern (RE2 allows them
    anywhere); ``x{,n}`` is a repetition in Python and literal text in RE2.
    """
    if pattern is None:
        raise ValueError("RegexFullMatch needs the 'pattern' attribute")
    try:
        regex = re.compile(re2_to_python(pattern), re.ASCII)
    except re.error as e:
        raise ValueError(f"invalid regex pattern {pattern!r}: {e}") from e
    x = _strings(X)
    y = np.zeros(x.shape, dtype=bool)
    for i, s in enumerate(x.reshape(-1)):
        y.reshape(-1)[i] = regex.fullmatch(s) is not None
    return y


# ---------------------------------------------------------------- StringSplit, StringConcat

@op("StringSplit", since=20)
def string_split(X, *, delimiter=None, maxsplit=None):
    """Y[..., :k] = x.split(delimiter, maxsplit) padded with "" to the longest; Z = counts.

    An absent or empty delimiter splits on runs of whitespace and drops leading and trailing
    whitespace (Python's ``str.split()``); otherwise consecutive delimiters delimit empty strings.
    Python's rules throughout, as onnx.reference; onnxruntime differs in two corners: its
    whitespace is the space character only (not tabs or newlines), and it splits an empty string
    into no substrings where Python gives one empty substring.
    """
    x = _strings(X)
    sep = delimiter if delimiter else None
    limit = -1 if maxsplit is None else int(maxsplit)
    if maxsplit is not None and limit < 0:
        raise ValueError(f"maxsplit must be non-negative, got {maxsplit}")
    parts = [s.split(sep, limit) for s in x.reshape(-1)]
    counts = np.array([len(p) for p in parts], dtype=np.int64).reshape(x.shape)
    width = max((len(p) for p in parts), default=0)
    y = np.full((len(parts), width), "", dtype=object)
    for i, p in enumerate(parts):
        y[i, :len(p)] = p
    return y.reshape(x.shape + (width,)), counts


_concat = np.frompyfunc(operator.add, 2, 1)


@op("StringConcat", since=20)
def string_concat(X, Y):
    """Z = X + Y elementwise (string concatenation), NumPy broadcasting."""
    z = _concat(_strings(X), _strings(Y, "Y"))
    return np.asarray(z, dtype=object)


# ---------------------------------------------------------------- TfIdfVectorizer

@op("TfIdfVectorizer", since=9)
def tfidf_vectorizer(X, *, max_gram_length, max_skip_count, min_gram_length, mode, ngram_counts,
                     ngram_indexes, pool_int64s=None, pool_strings=None, weights=None):
    """Y[row, ngram_indexes[i]] = weighted count of pool n-gram i in the row (1-D or 2-D X).

    The pool holds, for n = 1, 2, ..., the n-grams of length n from offset ngram_counts[n-1];
    n-grams with n outside [min_gram_length, max_gram_length] are not counted. An n-gram is
    X[s], X[s+d], ..., X[s+(n-1)d] for every skip distance d in [1, max_skip_count + 1]; unigrams
    are counted once (not once per d). TF: the counts; IDF: weight if count > 0; TFIDF: weight *
    count; weights[i] belongs to pool n-gram i (1 without ``weights``).
    """
    if (pool_int64s is None) == (pool_strings is None):
        raise ValueError("TfIdfVectorizer needs exactly one of pool_int64s and pool_strings")
    if mode not in ("TF", "IDF", "TFIDF"):
        raise ValueError(f"mode must be TF, IDF or TFIDF, got {mode!r}")
    pool = [_text(s) for s in pool_strings] if pool_strings is not None else list(pool_int64s)
    # n-gram tuple -> pool n-gram number, for the lengths that are counted
    table: dict[tuple, int] = {}
    number = 0
    for k, start in enumerate(ngram_counts):
        n = k + 1
        end = ngram_counts[k + 1] if k + 1 < len(ngram_counts) else len(pool)
        for j in range(start, end - n + 1, n):
            if min_gram_length <= n <= max_gram_length:
                table[tuple(pool[j:j + n])] = number
            number += 1
    if number != len(ngram_indexes):
        raise ValueError(f"the pool holds {number} n-grams but ngram_indexes has "
                         f"{len(ngram_indexes)} entries")
    width = max(ngram_indexes) + 1

    x = np.asarray(X)
    if x.ndim not in (1, 2):
        raise ValueError(f"TfIdfVectorizer takes a [C] or [N, C] tensor, got shape {list(x.shape)}")
    if pool_strings is not None:
        x = _strings(x)
    elif x.dtype.kind not in "iu":
        raise TypeError(f"X must be an integer tensor with pool_int64s, got {x.dtype}")
    rows = x[None, :] if x.ndim == 1 else x
    counts = np.zeros((rows.shape[0], width), dtype=np.int64)
    for r, row in enumerate(rows):
        row = row.tolist()
        for d in range(1, max_skip_count + 2):
            lo = min_gram_length if d == 1 else max(min_gram_length, 2)
            for s in range(len(row)):
                for n in range(lo, max_gram_length + 1):
                    if s + (n - 1) * d >= len(row):
                        break
                    i = table.get(tuple(row[s:s + (n - 1) * d + 1:d]))
                    if i is not None:
                        counts[r, ngram_indexes[i]] += 1
    w = np.ones(width, dtype=np.float32)
    if weights is not None:
        if len(weights) != len(ngram_indexes):
            raise ValueError(f"weights has {len(weights)} entries, ngram_indexes "
                             f"{len(ngram_indexes)}")
        w[np.asarray(ngram_indexes, dtype=np.int64)] = np.asarray(weights, dtype=np.float32)
    if mode == "TF":
        y = counts.astype(np.float32)
    elif mode == "IDF":
        y = np.where(counts > 0, w, np.float32(0)).astype(np.float32)
    else:
        y = (counts * w).astype(np.float32)
    return y.reshape(width) if x.ndim == 1 else y


# ---------------------------------------------------------------- ImageDecoder

@op("ImageDecoder", since=20)
def image_decoder(encoded_stream, *, pixel_format="RGB"):
    """image = decode(bytes) as uint8 (H, W, 3) in RGB or BGR order, or (H, W, 1) Grayscale.

    Decodes with Pillow (an optional dependency: ``pip install Pillow``); JPEG goes through
    libjpeg's default "fancy" chroma upsampling, which is what the spec asks for. Grayscale is
    Pillow's ITU-R 601-2 luma. As the spec says, a stream that cannot be decoded gives an empty
    image, shape (0, 0, channels).
    """
    if pixel_format not in ("RGB", "BGR", "Grayscale"):
        raise ValueError(f"pixel_format must be RGB, BGR or Grayscale, got {pixel_format!r}")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise ImportError("ImageDecoder needs the optional dependency 'Pillow' "
                          "(pip install Pillow)") from e
    data = np.asarray(encoded_stream)
    if data.dtype != np.uint8:
        raise TypeError(f"encoded_stream must be a uint8 tensor, got {data.dtype}")
    channels = 1 if pixel_format == "Grayscale" else 3
    try:
        with Image.open(io.BytesIO(data.tobytes())) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            pixels = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return np.zeros((0, 0, channels), dtype=np.uint8)
    if channels == 1:
        return np.ascontiguousarray(pixels[:, :, None])
    return np.ascontiguousarray(pixels[:, :, ::-1] if pixel_format == "BGR" else pixels)
