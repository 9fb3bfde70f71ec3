"""Loading a large model without copying its weights three times.

``onnx.load`` reads the file into one ``bytes`` object, protobuf's parser copies every tensor's
``raw_data`` out of it, and ``numpy_helper.to_array`` copies each one again into an array. For a
BERT-base model (436 MB) those three copies took most of a second. This module instead walks
the protobuf wire format of the file just far enough to find each main-graph initializer's
``raw_data`` field, hands protobuf a *skeleton* of the model without those bytes, and reads each
tensor's bytes once, straight from the file into an aligned NumPy buffer.

Wire format, as far as it is needed here (field number, wire type):

* ``ModelProto.graph`` = (7, length-delimited)
* ``GraphProto.initializer`` = (5, length-delimited), repeated
* ``TensorProto.name`` = (8, length-delimited), ``TensorProto.raw_data`` = (9, length-delimited)

Every other field is copied into the skeleton byte for byte, in its original order, so protobuf
parses the skeleton exactly as it would have parsed the file (repeated occurrences of a message
field still merge). Anything unexpected (a truncated length, a deprecated group, two initializers
with one name) makes :func:`split_model` return ``None`` and the caller parses the whole file the
ordinary way, which then reports the error in its own words.
"""

from __future__ import annotations

import numpy as np

GRAPH_FIELD = 7          # ModelProto.graph
INITIALIZER_FIELD = 5    # GraphProto.initializer
NAME_FIELD = 8           # TensorProto.name
RAW_DATA_FIELD = 9       # TensorProto.raw_data
MIN_SPLIT_BYTES = 1024   # smaller raw_data stays in the skeleton (not worth a separate read)


class _Malformed(Exception):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf, pos: int, end: int):
    """Yield (field number, wire type, start of the field's tag, start of its payload, end)."""
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
            yield number, wire, start, pos, pos
            continue
        if wire == 2:
            length, pos = _varint(buf, pos, end)
            payload, pos = pos, pos + length
        elif wire == 1:
            payload, pos = pos, pos + 8
        elif wire == 5:
            payload, pos = pos, pos + 4
        else:   # groups (3, 4) are deprecated and never used by ONNX
            raise _Malformed
        if pos > end:
            raise _Malformed
        yield number, wire, start, payload, pos


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _split_tensor(buf, pos: int, end: int):
    """One TensorProto -> (its bytes without raw_data, name, (offset, length) of raw_data) or
    None when it has no raw_data worth splitting off."""
    name, raw, kept = None, None, []
    for number, wire, start, payload, stop in _fields(buf, pos, end):
        if number == RAW_DATA_FIELD and wire == 2:
            raw = (payload, stop - payload)   # the last occurrence wins, as in protobuf
            continue
        if number == NAME_FIELD and wire == 2:
            name = bytes(buf[payload:stop]).decode("utf-8", errors="strict")
        kept.append((start, stop))
    if raw is None or raw[1] < MIN_SPLIT_BYTES or name is None:
        return None
    return b"".join(bytes(buf[a:b]) for a, b in kept), name, raw


def _split_graph(buf, pos: int, end: int, blobs: dict) -> bytes:
    parts = []
    for number, wire, start, payload, stop in _fields(buf, pos, end):
        if number == INITIALIZER_FIELD and wire == 2:
            split = _split_tensor(buf, payload, stop)
            if split is not None:
                tensor, name, raw = split
                if name in blobs:
                    raise _Malformed   # a duplicate name: the ordinary path reports it
                blobs[name] = raw
                parts.append(_length_delimited(INITIALIZER_FIELD, tensor))
                continue
        parts.append(bytes(buf[start:stop]))
    return b"".join(parts)


def split_model(buf) -> tuple[bytes, dict[str, tuple[int, int]]] | None:
    """Serialized ModelProto (bytes, mmap, memoryview) -> (skeleton bytes, {initializer name:
    (offset, length) of its raw_data in ``buf``}), or None if the bytes are not a well-formed
    model in the parts this walk reads."""
    blobs: dict[str, tuple[int, int]] = {}
    parts = []
    try:
        for number, wire, start, payload, stop in _fields(buf, 0, len(buf)):
            if number == GRAPH_FIELD and wire == 2:
                parts.append(_length_delimited(GRAPH_FIELD, _split_graph(buf, payload, stop, blobs)))
            else:
                parts.append(bytes(buf[start:stop]))
    except (_Malformed, UnicodeDecodeError):
        return None
    return b"".join(parts), blobs


def read_blob(f, offset: int, length: int, out: np.ndarray | None = None) -> np.ndarray:
    """``length`` bytes at ``offset`` of an open binary file, read straight into ``out`` (or a
    new uint8 array)."""
    if out is None:
        out = np.empty(length, np.uint8)
    f.seek(offset)
    view = memoryview(out)
    got = 0
    while got < length:
        n = f.readinto(view[got:])
        if not n:
            raise EOFError(f"file ends {length - got} bytes early")
        got += n
    return out


ALIGN = 64


def read_blobs(f, where: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Read every (offset, length) of ``where`` from an open file, in file order, into one
    arena: a single large allocation (which NumPy backs with huge pages where the OS offers
    them) faults in far fewer pages than one array per tensor. Each tensor's slice starts on
    a 64-byte boundary."""
    order = sorted(where.items(), key=lambda kv: kv[1][0])
    starts, total = {}, 0
    for name, (_, length) in order:
        starts[name] = total
        total += -(-length // ALIGN) * ALIGN
    arena = np.empty(total + ALIGN, np.uint8)
    base = (-arena.ctypes.data) % ALIGN
    out = {}
    for name, (offset, length) in order:
        s = base + starts[name]
        out[name] = read_blob(f, offset, length, arena[s:s + length])
    return out
