"""Control flow: If, Loop, Scan.

Their GRAPH attributes arrive as callables already bound to the enclosing scope:
``body(*inputs) -> list of outputs``. Sequences and optionals flow through them like any value.
"""

from __future__ import annotations

import numpy as np

from ..registry import op
from ._common import normalize_axis


def _scalar_bool(x, what: str) -> bool:
    arr = np.asarray(x)
    if arr.size != 1:
        raise ValueError(f"{what} must hold exactly one element, got shape {list(arr.shape)}")
    return bool(arr.reshape(-1)[0])


@op("If", since=(1, 11, 13, 16, 19, 21, 23, 24, 25))
def if_(cond, *, then_branch, else_branch):
    """outputs = then_branch() if cond else else_branch()"""
    branch = then_branch if _scalar_bool(cond, "If condition") else else_branch
    return tuple(branch())


@op("Loop", since=(1, 11, 13, 16, 19, 21, 23, 24, 25))
def loop(M=None, cond=None, *v_initial, body):
    """for i in range(M) while cond: (cond, v..., scan...) = body(i, cond, v...)

    The body returns the new condition, the N loop-carried values and K scan outputs; each scan
    output is stacked along a new first axis over the iterations that ran.
    """
    max_trip = None if M is None else int(np.asarray(M).reshape(-1)[0])
    keep_going = True if cond is None else _scalar_bool(cond, "Loop condition")
    carried = list(v_initial)
    n = len(carried)
    scans: list[list] = []
    i = 0
    while keep_going and (max_trip is None or i < max_trip):
        cond_in = np.array(keep_going)
        out = body(np.array(i, dtype=np.int64), cond_in, *carried)
        if len(out) < 1 + n:
            raise ValueError(f"Loop body returned {len(out)} values, expected at least {1 + n}")
        keep_going = _scalar_bool(out[0], "Loop body condition")
        carried = list(out[1:1 + n])
        scan_vals = out[1 + n:]
        if not scans:
            scans = [[] for _ in scan_vals]
        for acc, v in zip(scans, scan_vals):
            acc.append(v)
        i += 1
    stacked = []
    n_scan = body.n_outputs - 1 - n
    for k in range(n_scan):
        vals = scans[k] if k < len(scans) else []
        stacked.append(_stack(vals, body.output_infos[1 + n + k]))
    return tuple(carried) + tuple(stacked)


def _stack(values: list, info):
    """Stack per-iteration scan outputs; with zero iterations, an empty tensor of the declared
    element type (shape [0] followed by zero-length dims where unknown)."""
    if values:
        if isinstance(values[0], list):   # a sequence per iteration cannot be stacked
            return values
        return np.stack([np.asarray(v) for v in values])
    from ._common import np_dtype
    tt = info.type.tensor_type if info.type.HasField("tensor_type") else None
    dtype = np_dtype(tt.elem_type) if tt is not None and tt.elem_type else np.float32
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tt.shape.dim] if (
        tt is not None and tt.HasField("shape")) else []
    return np.zeros([0] + dims, dtype=dtype)


@op("Scan", since=(9, 11, 16, 19, 21, 23, 24, 25))
def scan(*inputs, body, num_scan_inputs, scan_input_axes=None, scan_input_directions=None,
         scan_output_axes=None, scan_output_directions=None):
    """for t: (state..., y_t...) = body(state..., x_t...); outputs = (final state, stacked y)."""
    n_scan = num_scan_inputs
    states = list(inputs[:len(inputs) - n_scan])
    xs = [np.asarray(x) for x in inputs[len(inputs) - n_scan:]]
    in_axes = [normalize_axis(a, x.ndim) for a, x in
               zip(scan_input_axes or [0] * n_scan, xs)]
    in_dirs = scan_input_directions or [0] * n_scan
    n_state = len(states)
    n_out = body.n_outputs - n_state
    lengths = {x.shape[a] for x, a in zip(xs, in_axes)}
    if len(lengths) != 1:
        raise ValueError(f"Scan inputs disagree on the sequence length: {sorted(lengths)}")
    T = lengths.pop()
    ys: list[list] = [[] for _ in range(n_out)]
    for t in range(T):
        slices = [np.take(x, T - 1 - t if d else t, axis=a) for x, a, d in zip(xs, in_axes, in_dirs)]
        out = body(*states, *slices)
        states = list(out[:n_state])
        for acc, y in zip(ys, out[n_state:]):
            acc.append(np.asarray(y))
    out_axes = scan_output_axes or [0] * n_out
    out_dirs = scan_output_directions or [0] * n_out
    results = []
    for k, acc in enumerate(ys):
        if out_dirs[k]:
            acc = acc[::-1]
        stacked = np.stack(acc) if acc else _stack([], body.output_infos[n_state + k])
        axis = normalize_axis(out_axes[k], stacked.ndim)
        results.append(np.moveaxis(stacked, 0, axis))
    return tuple(states) + tuple(results)


@op("Scan", since=8)
def scan8(sequence_lens=None, *inputs, body, num_scan_inputs, directions=None):
    """Scan-8: like Scan-9 but every input has a batch axis 0, and an optional sequence_lens
    gives each batch entry's length."""
    n_state = len(inputs) - num_scan_inputs
    batch = np.asarray(inputs[0]).shape[0]
    dirs = directions or [0] * num_scan_inputs
    per_batch = []
    for b in range(batch):
        states = [np.asarray(s)[b] for s in inputs[:n_state]]
        xs = [np.asarray(x)[b] for x in inputs[n_state:]]
        T = xs[0].shape[0]
        if sequence_lens is not None:
            T = int(np.asarray(sequence_lens).reshape(-1)[b])
        ys: list[list] = [[] for _ in range(body.n_outputs - n_state)]
        for t in range(T):
            out = body(*states, *[x[T - 1 - t] if d else x[t] for x, d in zip(xs, dirs)])
            states = list(out[:n_state])
            for acc, y in zip(ys, out[n_state:]):
                acc.append(np.asarray(y))
        per_batch.append(states + [np.stack(acc) for acc in ys])
    return tuple(np.stack([pb[k] for pb in per_batch]) for k in range(len(per_batch[0])))
