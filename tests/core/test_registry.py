"""Every registered op's signature agrees with its onnx.defs schema."""

import onnx
import pytest
from onnx import AttributeProto, helper

from refrt import registry
from refrt.registry import REQUIRED

IMPLS = [impl for table in registry.registered().values() for impl in table.values()]


def _schema(impl):
    try:
        s = onnx.defs.get_schema(impl.op_type, impl.since, registry.proto_domain(impl.domain))
    except onnx.defs.SchemaError:
        return None
    return s if s.since_version == impl.since else None


def _norm(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.qualname)
def test_attribute_defaults_match_schema(impl):
    schema = _schema(impl)
    if schema is None:
        if impl.domain == "ai.onnx" and (impl.op_type, impl.since) in registry.ORT_ONNX_DOMAIN_EXTRAS:
            pytest.skip("onnxruntime's own op in the ONNX domain (checked in tests/ops/test_contrib_vs_ort.py)")
        if impl.domain in ("ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"):
            pytest.fail(f"{impl.qualname}: onnx has no schema with since_version {impl.since}")
        pytest.skip(f"{impl.domain} has no schemas in onnx.defs (contrib op)")
    for name, attr in schema.attributes.items():
        assert name in impl.attrs, f"{impl.qualname} lacks attribute {name!r}"
        ours = impl.attrs[name]
        if attr.default_value.type != AttributeProto.UNDEFINED:
            spec = _norm(helper.get_attribute_value(attr.default_value))
            got = _norm(ours)
            if isinstance(spec, float):
                assert got == pytest.approx(spec, rel=1e-6), f"{impl.qualname}.{name}"
            else:
                assert got == spec, f"{impl.qualname}.{name}: {got!r} != spec {spec!r}"
        elif attr.required:
            assert ours is REQUIRED, f"{impl.qualname}.{name} is required by the spec"
        else:
            assert ours is None, f"{impl.qualname}.{name} has no spec default; use None"


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.qualname)
def test_inputs_match_schema(impl):
    schema = _schema(impl)
    if schema is None:
        pytest.skip("no schema")
    formal = schema.inputs
    variadic = bool(formal) and formal[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic
    assert impl.variadic == variadic or impl.variadic, f"{impl.qualname}: variadic input mismatch"
    if not variadic:   # one body may serve versions that added trailing optional inputs
        assert impl.n_inputs >= len(formal), (
            f"{impl.qualname}: {impl.n_inputs} positional inputs, schema has {len(formal)}")
    n_required = sum(f.option == onnx.defs.OpSchema.FormalParameterOption.Single for f in formal)
    assert impl.n_required <= n_required, (
        f"{impl.qualname}: requires {impl.n_required} inputs, schema requires {n_required}")


def test_every_registered_version_is_distinct_function_or_same():
    for (domain, op_type), table in registry.registered().items():
        for v, impl in table.items():
            assert impl.since == v and impl.op_type == op_type and impl.domain == domain


def test_registering_twice_is_refused():
    def f(x):
        return x

    def g(x):
        return x
    try:
        registry.op("TestOnlyOp", since=1, domain="com.example.test")(f)
        with pytest.raises(RuntimeError, match="registered twice"):
            registry.op("TestOnlyOp", since=1, domain="com.example.test")(g)
    finally:   # leave the registry as refrt built it (other tests walk every registered op)
        registry.registered().pop(("com.example.test", "TestOnlyOp"), None)


def test_resolution_picks_highest_version_not_above_opset():
    impl = registry.lookup("Relu", "", 13)
    assert impl is not None and impl.since <= 13
    assert registry.lookup("Relu", "", 14).since == 14


def test_every_op_states_its_formula():
    """The docstring of every registered op gives its formula (the code is the textbook)."""
    bare = sorted({impl.qualname for impl in IMPLS if not (impl.fn.__doc__ or "").strip()})
    assert not bare, f"ops without a docstring: {bare}"


def test_every_subpackage_is_packaged():
    """pyproject.toml lists refrt's packages by name: a subpackage missing there works in the
    editable checkout and is absent from an installed copy."""
    import os

    import refrt

    tomllib = pytest.importorskip("tomllib")      # Python 3.11+

    root = os.path.dirname(refrt.__file__)
    with open(os.path.join(os.path.dirname(root), "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = {"refrt." + d for d in os.listdir(root)
             if os.path.isfile(os.path.join(root, d, "__init__.py"))}
    assert found - listed == set()
