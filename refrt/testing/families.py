"""How a drawn case's inputs are made: the drawing context (hypothesis's ``draw``, a NumPy
generator seeded from it, the edge-case switches), the attribute rules, the input roles and one
function per shape family named in :mod:`refrt.testing.constraints`. Used by
:mod:`refrt.testing.strategies`."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from onnx import helper

EDGE_CLASSES = ("scalar", "zero_size", "special", "extreme_int", "strings")
MAX_DIM = 5
# dtypes the kit draws (refrt runs more, e.g. bfloat16 and float8, which NumPy cannot hold natively)
DRAWN_TYPES = ("float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16",
               "uint32", "uint64", "bool", "string")
_TYPE_STR = {f"tensor({'float' if t == 'float32' else 'double' if t == 'float64' else t})": t
             for t in DRAWN_TYPES}

# -- types ----------------------------------------------------------------------------------------------

def _unwrap(type_str: str) -> str:
    """``seq(tensor(float))`` and ``optional(tensor(float))`` -> ``tensor(float)``."""
    for w in ("seq(", "optional("):
        if type_str.startswith(w):
            return type_str[len(w):-1]
    return type_str


# -- the drawing context ----------------------------------------------------------------------------

class _Draw:
    """What the family rules share while drawing one case: hypothesis's ``draw``, a NumPy generator
    seeded from it, the edge-case switches, and the inputs made so far."""

    def __init__(self, draw, edge_rate: float, forced: frozenset, types: dict):
        self.draw = draw
        self.rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="value seed"))
        self.rate = int(round(edge_rate * 100))
        self.forced = forced
        self.edges: set = set()
        self.types = types
        self.inputs: list = []        # (name, array or None)
        self.attrs: dict = {}

    def edge(self, kind: str) -> bool:
        """Whether this draw uses the edge class ``kind`` (shrinks toward no)."""
        if kind in self.forced:
            hit = True
        else:
            hit = self.rate > 0 and self.draw(st.integers(0, 99), label=kind) >= 100 - self.rate
        if hit:
            self.edges.add(kind)
        return hit

    def integer(self, lo: int, hi: int, label: str = "int") -> int:
        return self.draw(st.integers(lo, hi), label=label)

    def choice(self, values, label: str = "choice"):
        return self.draw(st.sampled_from(list(values)), label=label)

    def shape(self, min_rank: int = 0, max_rank: int = 4, min_side: int = 1) -> tuple:
        min_rank = max(min_rank, 0)
        if min_rank == 0 and not self.edge("scalar"):
            min_rank = 1
        if min_rank == 0:
            return ()
        rank = self.integer(min_rank, max(min_rank, max_rank), "rank")
        dims = [self.integer(min_side, MAX_DIM, "dim") for _ in range(rank)]
        if min_side == 0 or self.edge("zero_size"):
            dims[self.integer(0, rank - 1, "zero dim")] = 0
        return tuple(dims)

    def add(self, array, name: str | None = None):
        name = name or f"in{len(self.inputs)}"
        self.inputs.append((name, array))
        return array

    def absent(self):
        self.inputs.append(("", None))

    # values ------------------------------------------------------------------------------------

    def values(self, dtype: str, shape, low: float | None = None, high: float | None = None):
        """Random values of ``dtype``; edge values injected when their class is drawn."""
        size = int(np.prod(shape, dtype=np.int64))
        if dtype == "string":
            pool = ["a", "b", "ab", "refrt", "Zz"]
            if self.edge("strings"):
                pool += ["", "é", "日本", " "]
            return np.array(self.rng.choice(pool, size=size).tolist(), dtype=object).reshape(shape)
        if dtype == "bool":
            return self.rng.integers(0, 2, size).astype(bool).reshape(shape)
        dt = np.dtype(dtype)
        if dt.kind == "f":
            lo, hi = (-4.0 if low is None else low), (4.0 if high is None else high)
            a = self.rng.uniform(lo, hi, size)
            if self.draw(st.booleans(), label="halves"):     # ties for the rounding ops
                a = np.round(a * 2) / 2
            a = a.astype(dt)
            if size and self.edge("special"):
                info = np.finfo(dt)
                specials = {"nan": [np.nan], "inf": [np.inf, -np.inf], "zero": [-0.0, 0.0],
                            "subnormal": [info.smallest_subnormal, -info.smallest_subnormal,
                                          info.tiny / 2],
                            "extreme": [info.max, -info.max, info.tiny]}
                kind = self.choice(list(specials) + ["mixed"], "special kind")
                pool = np.array(sum(specials.values(), []) if kind == "mixed" else specials[kind],
                                dtype=dt)
                k = self.integer(1, max(1, min(size, 4)), "specials")
                a[self.rng.choice(size, k, replace=False)] = self.rng.choice(pool, k)
            return a.reshape(shape)
        info = np.iinfo(dt)
        lo = max(info.min, -20 if low is None else int(low))
        hi = min(info.max, 20 if high is None else int(high))
        a = self.rng.integers(lo, hi, size, endpoint=True, dtype=np.int64 if dt != np.uint64 else
                              np.uint64).astype(dt)
        if size and self.edge("extreme_int"):
            k = self.integer(1, max(1, min(size, 3)), "extremes")
            a[self.rng.choice(size, k, replace=False)] = self.rng.choice(
                np.array([info.min, info.max], dtype=dt), k)
        return a.reshape(shape)


# -- attribute rules -------------------------------------------------------------------------------

def _attr_value(d: _Draw, rule, rank: int):
    if isinstance(rule, (list, tuple)):
        return d.choice(rule, "attr")
    if rule == "axis":
        return d.integer(-rank, rank - 1, "axis") if rank else 0
    if rule == "axis_incl":
        return d.integer(-rank, rank, "axis")
    if rule == "perm":
        return [int(i) for i in d.draw(st.permutations(list(range(rank))), label="perm")]
    if rule == "to_type":
        return int(helper.np_dtype_to_tensor_dtype(np.dtype(d.choice(
            [t for t in DRAWN_TYPES if t != "string"], "to"))))
    raise ValueError(f"unknown attribute rule {rule!r}")


def _draw_attrs(d: _Draw, spec: dict, rank: int, schema) -> dict:
    attrs = {}
    optional = set(spec.get("optional_attrs", ()))
    for name, rule in spec.get("attrs", {}).items():
        if schema is not None and name not in schema.attributes:
            continue                          # an attribute of another version of the op
        if name in optional and not d.draw(st.booleans(), label=f"set {name}"):
            continue
        attrs[name] = _attr_value(d, rule, rank)
    return attrs


# -- input roles -------------------------------------------------------------------------------------

def _axis(d: _Draw, rank: int) -> int:
    a = d.attrs.get("axis", 0)
    return a + rank if a < 0 else a


def _role(d: _Draw, role: str, x: np.ndarray, dtype: str):
    """The value of an input whose role is ``role``, given data input ``x``."""
    r, shape = x.ndim, x.shape
    i64 = np.int64
    if role == "scalar":
        return d.values(dtype, ())
    if role == "int_scalar":
        return np.array(d.integer(-3, 3, "k"), i64)
    if role == "axis_scalar":
        return np.array(d.integer(-r, r - 1, "axis") if r else 0, d.choice(["int64", "int32"]))
    if role == "like":
        return d.values(d.choice([t for t in DRAWN_TYPES if t != "string"], "like type"), ())
    if role == "axes":
        k = d.integer(0, r, "n axes")
        axes = d.draw(st.permutations(list(range(r))), label="axes")[:k]
        return np.array([a - r if d.draw(st.booleans(), label="neg") else a for a in axes], i64)
    if role == "new_axes":
        out_r = r + d.integer(1, 2, "n new")
        axes = d.draw(st.permutations(list(range(out_r))), label="axes")[:out_r - r]
        return np.array(axes, i64)
    if role == "reshape":
        target = list(d.rng.permutation(list(shape))) if d.draw(st.booleans(), label="permute") \
            else [int(np.prod(shape))]
        if target and d.draw(st.booleans(), label="infer"):
            target[d.integer(0, len(target) - 1, "minus one")] = -1
        return np.array(target, i64)
    if role == "expand":
        extra = [d.integer(1, 3, "dim") for _ in range(d.integer(0, 2, "extra rank"))]
        return np.array(extra + [s if d.draw(st.booleans(), label="keep") or s != 1
                                 else d.integer(1, 3, "dim") for s in shape], i64)
    if role == "repeats":
        return np.array([d.integer(0 if d.edge("zero_size") else 1, 3, "repeat")
                         for _ in range(r)], i64)
    if role == "pads":
        return np.array([d.integer(0, 2, "pad") for _ in range(2 * r)], i64)
    if role == "k":
        n = shape[_axis(d, r)] if r else 0
        return np.array([d.integer(0, n, "k")], i64)
    if role == "indices":
        n = shape[_axis(d, r)]
        if n == 0:
            return np.zeros((0,), i64)
        idx_shape = d.shape(0, 2)
        return d.rng.integers(-n, n, idx_shape).astype(d.choice(["int64", "int32"]))
    if role == "elem_indices":
        ax = _axis(d, r)
        ishape = tuple(d.integer(1, s, "dim") if s else 0 for s in shape)
        n = shape[ax]
        ishape = ishape[:ax] + (d.integer(0, 4, "dim") if n else 0,) + ishape[ax + 1:]
        if n == 0:                       # no index fits an empty axis: empty indices
            return np.zeros(ishape, i64)
        return d.rng.integers(-n, n, ishape).astype(i64)
    if role == "condition":
        n = shape[_axis(d, r)] if "axis" in d.attrs else int(np.prod(shape))
        return d.rng.integers(0, 2, d.integer(0, n, "len")).astype(bool)
    if role == "split":
        n = shape[_axis(d, r)]
        parts = d.integer(1, 3, "parts")
        cuts = sorted(d.rng.integers(0, n + 1, parts - 1).tolist())
        return np.diff([0] + cuts + [n]).astype(i64)
    if role in ("starts", "ends"):
        axes = d.attrs.setdefault("_slice_axes", list(range(r)))
        return np.array([d.integer(-shape[a] - 2, shape[a] + 2, role) for a in axes], i64)
    if role == "slice_axes":
        return np.array(d.attrs.get("_slice_axes", list(range(r))), i64)
    if role == "steps":
        return np.array([d.choice([1, 2, -1, -2], "step") for _ in d.attrs.get("_slice_axes", [])],
                        i64)
    if role == "shape_input":
        return np.array([d.integer(0, 6, "dim") for _ in range(r)], i64)
    if role == "depth":
        return np.array(d.integer(1, 6, "depth"), dtype)
    if role == "onehot_values":
        return d.values(dtype, (2,))
    if role == "zero_point":
        return d.values(dtype, (), low=-128, high=255)
    raise ValueError(f"unknown input role {role!r}")


# -- families: how the inputs' shapes relate -------------------------------------------------------

def _in_type(schema, i: int, d: _Draw) -> str:
    p = schema.inputs[min(i, len(schema.inputs) - 1)]
    return d.types.get(p.type_str) or _TYPE_STR.get(_unwrap(p.type_str), "int64")


def _trailing_roles(d: _Draw, spec: dict, schema, x, first: int):
    roles = spec.get("inputs", [])
    keep = len(roles) - (d.integer(0, spec.get("optional", 0), "omit") if spec.get("optional")
                         else 0)
    for j, role in enumerate(roles):
        if j >= keep:
            break
        d.add(_role(d, role, x, _in_type(schema, first + j, d)))


def _unary(d: _Draw, spec, schema):
    lo, hi = spec.get("rank", (0, 4))
    low, high = spec.get("range", (None, None))
    x = d.add(d.values(_in_type(schema, 0, d), d.shape(lo, hi), low=low, high=high))
    d.attrs.update(_draw_attrs(d, spec, x.ndim, schema))
    _trailing_roles(d, spec, schema, x, 1)


def _broadcast(d: _Draw, spec, schema):
    n = len(schema.inputs)
    if spec.get("variadic"):
        n = d.integer(1, 3, "n inputs")
    min_dims = 0 if d.edge("scalar") else 1
    shapes, _ = d.draw(mutually_broadcastable_shapes(num_shapes=n, min_dims=min_dims, max_dims=4,
                                                     min_side=1, max_side=4), label="shapes")
    shapes = list(shapes)
    if schema.since_version < spec.get("broadcast_since", 0):     # one shape for all inputs
        shapes = [shapes[0]] * n
    if d.edge("zero_size") and shapes[0]:
        # a zero last dimension everywhere it is not 1, so the shapes still broadcast
        zeroed = [s[:-1] + (0,) if s and s[-1] != 1 else s for s in shapes]
        if zeroed == shapes:
            zeroed[0] = shapes[0][:-1] + (0,)
        shapes = zeroed
    for i, s in enumerate(shapes):
        d.add(d.values(_in_type(schema, i, d), s, **_ranges(spec, schema, d, i)))
    d.attrs.update(_draw_attrs(d, spec, max(len(s) for s in shapes), schema))


def _ranges(spec, schema, d, i):
    if schema.name == "BitShift" and i == 1:
        return {"low": 0, "high": 8 * np.dtype(_in_type(schema, 1, d)).itemsize - 1}
    if schema.name == "Pow" and i == 1:
        return {"low": -3, "high": 3}
    return {}


def _concat(d: _Draw, spec, schema):
    base = d.shape(1, 4)
    d.attrs.update(_draw_attrs(d, spec, len(base), schema))
    ax = _axis(d, len(base))
    t = _in_type(schema, 0, d)
    for _ in range(d.integer(1, 3, "n inputs")):
        s = list(base)
        s[ax] = d.integer(0, 3, "dim")
        d.add(d.values(t, tuple(s)))


def _square(d: _Draw, spec, schema):
    n = d.integer(1, 4, "n")
    batch = d.shape(0, 2)
    d.add(d.values(_in_type(schema, 0, d), batch + (n, n)))


def _shape_only(d: _Draw, spec, schema):
    d.add(np.array(d.shape(1, 3), np.int64))


def _scale(d: _Draw, shape=()):
    return d.rng.uniform(0.01, 0.2, shape).astype(np.float32)


def _matmul(d: _Draw, spec, schema):
    m, k, n = (d.integer(1, MAX_DIM, "m"), d.integer(1, MAX_DIM, "k"), d.integer(1, MAX_DIM, "n"))
    if d.edge("zero_size"):
        m = 0
    batch = d.shape(0, 2)
    a_shape = (batch + (m, k)) if d.draw(st.booleans(), label="a batched") else (m, k)
    b_shape = (batch + (k, n)) if d.draw(st.booleans(), label="b batched") else (k, n)
    if d.edge("scalar"):     # 1-D operands
        a_shape = (k,)
    ta = _in_type(schema, 0, d)
    if spec.get("quant") == "qlinear":
        tb, ty = d.types.get("T2", ta), d.types.get("T3", ta)
        for shape, t in ((a_shape, ta), (b_shape, tb)):
            d.add(d.values(t, shape, low=-128, high=255))
            d.add(_scale(d))
            d.add(d.values(t, (), low=-128, high=255))
        d.add(_scale(d))
        d.add(d.values(ty, (), low=-128, high=255))
        return
    tb = _in_type(schema, 1, d)
    d.add(d.values(ta, a_shape, low=-128, high=255))
    d.add(d.values(tb, b_shape, low=-128, high=255))
    _trailing_roles(d, spec, schema, d.inputs[0][1], 2)


def _gemm(d: _Draw, spec, schema):
    d.attrs.update(_draw_attrs(d, spec, 2, schema))
    m, k, n = (d.integer(0 if d.edge("zero_size") else 1, MAX_DIM, "m"),
               d.integer(1, MAX_DIM, "k"), d.integer(1, MAX_DIM, "n"))
    t = _in_type(schema, 0, d)
    d.add(d.values(t, (k, m) if d.attrs.get("transA") else (m, k)))
    d.add(d.values(t, (n, k) if d.attrs.get("transB") else (k, n)))
    if d.draw(st.booleans(), label="C"):
        d.add(d.values(t, d.choice([(m, n), (n,), (1, n), (m, 1), ()], "C shape")))


def _spatial(d: _Draw, n_spatial: int):
    kernel = [d.integer(1, 3, "kernel") for _ in range(n_spatial)]
    strides = [d.integer(1, 2, "stride") for _ in range(n_spatial)]
    dil = [d.integer(1, 2, "dilation") for _ in range(n_spatial)]
    size = [d.integer((k - 1) * e + 1, (k - 1) * e + 4, "size") for k, e in zip(kernel, dil)]
    pads = [d.integer(0, k - 1, "pad") for k in kernel for _ in (0,)] * 2
    return kernel, strides, dil, size, pads


def _conv(d: _Draw, spec, schema):
    ns = d.integer(1, 2, "spatial rank")
    kernel, strides, dil, size, pads = _spatial(d, ns)
    group = d.integer(1, 2, "group")
    cg, mg = d.integer(1, 3, "cin/group"), d.integer(1, 3, "cout/group")
    batch = 0 if d.edge("zero_size") else d.integer(1, 2, "batch")
    d.attrs.update(strides=strides, dilations=dil, group=group)
    if d.draw(st.booleans(), label="kernel_shape"):
        d.attrs["kernel_shape"] = kernel
    pad_mode = d.choice(["pads", "NOTSET", "SAME_UPPER", "VALID"], "auto_pad")
    if pad_mode == "pads":
        d.attrs["pads"] = pads
    elif pad_mode != "NOTSET":
        d.attrs["auto_pad"] = pad_mode
    x_shape, w_shape = (batch, cg * group, *size), (mg * group, cg, *kernel)
    op = schema.name
    if op == "Conv":
        t = _in_type(schema, 0, d)
        d.add(d.values(t, x_shape))
        d.add(d.values(t, w_shape))
        if d.draw(st.booleans(), label="bias"):
            d.add(d.values(t, (mg * group,)))
    elif op == "ConvInteger":
        tx, tw = _in_type(schema, 0, d), _in_type(schema, 1, d)
        d.add(d.values(tx, x_shape, low=-128, high=255))
        d.add(d.values(tw, w_shape, low=-128, high=255))
        if d.draw(st.booleans(), label="zero points"):
            d.add(d.values(tx, (), low=-128, high=255))
            d.add(d.values(tw, (), low=-128, high=255))
    else:                                     # QLinearConv
        tx, tw, ty = _in_type(schema, 0, d), _in_type(schema, 3, d), _in_type(schema, 7, d)
        per_channel = d.draw(st.booleans(), label="per channel")
        d.add(d.values(tx, x_shape, low=-128, high=255))
        d.add(_scale(d))
        d.add(d.values(tx, (), low=-128, high=255))
        d.add(d.values(tw, w_shape, low=-127, high=127))
        d.add(_scale(d, (mg * group,) if per_channel else ()))
        d.add(np.zeros((mg * group,) if per_channel else (), tw))
        d.add(_scale(d))
        d.add(d.values(ty, (), low=-128, high=255))
        if d.draw(st.booleans(), label="bias"):
            d.add(d.rng.integers(-1000, 1000, mg * group).astype(np.int32))


def _pool(d: _Draw, spec, schema):
    ns = d.integer(1, 2, "spatial rank")
    kernel, strides, dil, size, pads = _spatial(d, ns)
    batch = 0 if d.edge("zero_size") else d.integer(1, 2, "batch")
    x = d.values(_in_type(schema, 0, d), (batch, d.integer(1, 3, "channels"), *size))
    d.add(x)
    d.attrs.update(kernel_shape=kernel, strides=strides)
    if "dilations" in schema.attributes and d.draw(st.booleans(), label="dilations"):
        d.attrs["dilations"] = dil
    pad_mode = d.choice(["pads", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"], "auto_pad")
    if pad_mode == "pads":
        d.attrs["pads"] = pads
    elif pad_mode != "NOTSET":
        d.attrs["auto_pad"] = pad_mode
    if "ceil_mode" in schema.attributes:
        d.attrs["ceil_mode"] = d.choice([0, 1], "ceil_mode")
    if "count_include_pad" in schema.attributes:
        d.attrs["count_include_pad"] = d.choice([0, 1], "count_include_pad")
    d.attrs.update(_draw_attrs(d, spec, x.ndim, schema))


def _reduce(d: _Draw, spec, schema):
    x = d.add(d.values(_in_type(schema, 0, d), d.shape(0, 4)))
    r = x.ndim
    d.attrs.update(_draw_attrs(d, spec, r, schema))
    k = d.integer(0, r, "n axes")
    axes = [int(a) for a in d.draw(st.permutations(list(range(r))), label="axes")[:k]]
    if len(schema.inputs) > 1:                # axes as an input (ReduceSum-13, the others from 18)
        if d.draw(st.booleans(), label="axes given"):
            d.add(np.array(axes, np.int64))
    elif axes or d.draw(st.booleans(), label="empty axes"):
        d.attrs["axes"] = axes
        d.attrs.pop("noop_with_empty_axes", None)


def _norm(d: _Draw, spec, schema):
    op = schema.name
    t = _in_type(schema, 0, d)
    eps = d.choice([1e-5, 1e-3], "epsilon")
    if op in ("BatchNormalization", "InstanceNormalization", "GroupNormalization"):
        x = d.values(t, (d.integer(0 if d.edge("zero_size") else 1, 2, "batch"),
                         d.integer(1, 4, "channels")) + d.shape(0, 2))
        c = x.shape[1]
        d.add(x)
        d.attrs["epsilon"] = eps
        tp = _in_type(schema, 1, d)
        if op == "BatchNormalization":
            d.add(d.values(tp, (c,)))
            d.add(d.values(_in_type(schema, 2, d), (c,)))
            d.add(d.values(_in_type(schema, 3, d), (c,)))
            tv = _in_type(schema, 4, d)
            d.add(np.abs(d.values(tv, (c,))) + np.asarray(0.5, tv))
        elif op == "InstanceNormalization":
            d.add(d.values(t, (c,)))
            d.add(d.values(t, (c,)))
        else:
            groups = d.choice([g for g in range(1, c + 1) if c % g == 0], "groups")
            d.attrs["num_groups"] = groups
            n = c if schema.since_version >= 21 else groups
            d.add(d.values(t, (n,)))
            d.add(d.values(t, (n,)))
        return
    x = d.add(d.values(t, d.shape(1, 4)))
    axis = d.integer(-x.ndim, x.ndim - 1, "axis")
    d.attrs.update(axis=axis, epsilon=eps)
    tail = x.shape[axis:]
    d.add(d.values(_in_type(schema, 1, d), tail))
    if op == "LayerNormalization" and d.draw(st.booleans(), label="bias"):
        d.add(d.values(t, tail))


def _quant(d: _Draw, spec, schema):
    op = schema.name
    x_t = _in_type(schema, 0, d)
    x = d.add(d.values(x_t, d.shape(0, 3), low=-300 if x_t.startswith("float") else None,
                       high=300 if x_t.startswith("float") else None))
    per_axis = x.ndim > 0 and "axis" in schema.attributes and d.draw(st.booleans(),
                                                                      label="per axis")
    shape = ()
    if per_axis:
        axis = d.integer(-x.ndim, x.ndim - 1, "axis")
        d.attrs["axis"] = axis
        shape = (x.shape[axis],)
    scale_t = _in_type(schema, 1, d)
    d.add(d.rng.uniform(0.01, 2.0, shape).astype(scale_t))
    if op == "QuantizeLinear":
        zp_t = _in_type(schema, 2, d)
        if d.draw(st.booleans(), label="zero point"):
            d.add(d.values(zp_t, shape, low=-128, high=255))
    elif d.draw(st.booleans(), label="zero point"):
        d.add(d.values(x_t, shape, low=-128, high=255))


def _roles(d: _Draw, spec, schema):
    """Every input by role (``spec["roles"]``): ``x`` the data input (rank from ``rank``),
    ``bx`` broadcastable with x, ``same`` x's shape, ``last`` 1-D of x's last dimension,
    ``w`` a (K, N) weight for x (..., K), ``n`` 1-D of N, ``scale`` a positive float32 scalar,
    ``zp`` a scalar zero point of the input's type; a trailing ``?`` marks an optional input."""
    lo, hi = spec.get("rank", (1, 4))
    roles = spec["roles"]
    x_shape = d.shape(lo, hi)
    n = d.integer(1, MAX_DIM, "n")
    d.attrs.update(_draw_attrs(d, spec, len(x_shape), schema))
    for i, role in enumerate(roles):
        optional = role.endswith("?")
        role = role.rstrip("?")
        if optional and not d.draw(st.booleans(), label=f"input {i}"):
            d.absent()
            continue
        t = _in_type(schema, i, d)
        if role == "x":
            d.add(d.values(t, x_shape, low=-128 if t in ("uint8", "int8") else None,
                           high=255 if t in ("uint8", "int8") else None))
        elif role == "bx":
            d.add(d.values(t, x_shape[d.integer(0, len(x_shape), "drop dims"):], low=-128,
                           high=255))
        elif role == "same":
            d.add(d.values(t, x_shape))
        elif role == "last":
            d.add(d.values(t, x_shape[-1:]))
        elif role == "w":
            d.add(d.values(t, (x_shape[-1] if x_shape else 1, n), low=-128, high=255))
        elif role == "n":
            d.add(d.values(t, (n,)))
        elif role == "scale":
            d.add(_scale(d).astype(t if t.startswith("float") else "float32"))
        elif role == "zp":
            d.add(d.values(t, (), low=-128, high=255))
        else:
            raise ValueError(f"unknown role {role!r}")


def _eval(expr, env: dict, d: _Draw):
    """A table expression over the drawn dimensions; ``floats(n)`` and ``ints(n, lo, hi)`` draw
    attribute values."""
    if not isinstance(expr, str):
        return expr
    names = {"range": range, "list": list, "min": min, "max": max, "len": len,
             "floats": lambda n: [round(float(x), 3) for x in d.rng.uniform(-2, 2, n)],
             "ints": lambda n, lo, hi: [int(x) for x in d.rng.integers(lo, hi, n, endpoint=True)]}
    return eval(expr, {"__builtins__": {}, **names}, env)   # noqa: S307 -- table data, not input


def _shapes(d: _Draw, spec, schema):
    """Inputs with symbolic shapes: ``dims`` (name -> [lo, hi]) are drawn, ``let`` derives more,
    each input is ``[kind, shape, dtype?]`` (kind ``data``, ``pos``, ``prob``, ``scale``, ``zp``,
    ``bool``, ``int:LO:HI``, ``rois``, ``seq:COUNT``; ``?`` marks an optional input), or
    ``["repeat", COUNT, [input, ...]]``; attributes ``"=EXPR"`` are expressions."""
    env: dict = {}
    for name, (lo, hi) in spec.get("dims", {}).items():
        env[name] = d.integer(lo, hi, name)
    for name, expr in spec.get("let", {}).items():
        env[name] = _eval(expr, env, d)
    for name, v in spec.get("attrs", {}).items():
        if isinstance(v, str) and v.startswith("="):
            d.attrs[name] = _eval(v[1:], env, d)
        elif isinstance(v, list):
            v = d.choice(v, name)
            d.attrs[name] = _eval(v[1:], env, d) if isinstance(v, str) and v[:1] == "=" else v
        else:
            d.attrs[name] = v
    items = []
    for item in spec["inputs"]:
        if item[0] == "repeat":
            items += list(item[2]) * _eval(item[1], env, d)
        else:
            items.append(item)
    for i, item in enumerate(items):
        kind, shape = item[0], item[1]
        if kind.endswith("?"):
            kind = kind[:-1]
            if not d.draw(st.booleans(), label=f"input {i}"):
                d.absent()
                continue
        shp = tuple(int(_eval(x, env, d)) for x in shape)
        t = item[2] if len(item) > 2 else _in_type(schema, min(i, len(schema.inputs) - 1), d)
        value = _kind_value(d, kind, t, shp, env)
        if value is None:
            d.absent()
        else:
            d.add(value)


def _kind_value(d: _Draw, kind: str, t: str, shp: tuple, env: dict):
    if kind == "data":
        return d.values(t, shp)
    if kind == "pos":
        return np.abs(d.values(t, shp)) + np.asarray(0.25, t)
    if kind == "prob":
        return d.rng.uniform(0.05, 1, shp).astype(t)
    if kind == "scale":
        return _scale(d, shp)
    if kind == "absent":
        return None
    if kind == "zp":
        return d.values(t, shp, low=-128, high=255)
    if kind == "bool":
        return d.rng.integers(0, 2, shp).astype(bool)
    if kind.startswith("int:"):
        lo, hi = (int(_eval(x, env, d)) for x in kind[4:].split(":"))
        return d.rng.integers(lo, hi, shp, endpoint=True).astype(t)
    if kind == "rois":                  # [batch index, x1, y1, x2, y2] inside the image
        n, h, w = env["N"], env["H"], env["W"]
        r = np.empty(shp, t)
        for row in r:
            x1, y1 = d.rng.integers(0, w), d.rng.integers(0, h)
            row[:] = (d.rng.integers(0, n), x1, y1, d.rng.integers(x1, w), d.rng.integers(y1, h))
        return r
    if kind.startswith("map:"):         # {key: value}, keys 0..K-1 shuffled
        _, kt, vt = kind.split(":")
        keys = d.rng.permutation(shp[0]).tolist()
        vals = d.values(vt, (shp[0],)).tolist()
        return {(k if kt == "int64" else str(k)): v for k, v in zip(keys, vals)}
    if kind.startswith("seq:"):
        return [d.values(t, shp) for _ in range(int(_eval(kind[4:], env, d)))]
    raise ValueError(f"unknown input kind {kind!r}")


def _seed(d: _Draw, spec, schema):  # handled by _seed_case; here only for the FAMILIES table
    raise NotImplementedError


FAMILIES = {"unary": _unary, "broadcast": _broadcast, "concat": _concat, "square": _square,
            "shape_only": _shape_only, "matmul": _matmul, "gemm": _gemm, "conv": _conv,
            "pool": _pool, "reduce": _reduce, "norm": _norm, "quant": _quant, "roles": _roles,
            "shapes": _shapes, "seed": _seed}


