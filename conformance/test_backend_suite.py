"""The ONNX backend suite as pytest cases: an unexpected failure fails the run; an expected
failure (conformance/expected_failures.txt) is an xfail carrying its reason, and one that now
passes shows up as XPASS in the summary so its line can go."""

import pytest

from conformance.backend_suite import all_cases, expected_reason, load_expected_failures, run_case

RULES = load_expected_failures()
CASES = all_cases()


def _param(case):
    reason = expected_reason(case.name, RULES)
    marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
    return pytest.param(case, id=f"{case.kind}/{case.name}", marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_backend_case(case):
    run_case(case)


def test_suite_is_complete():
    """Every node case the installed onnx generates, and every data folder, is collected."""
    from onnx.backend.test.case.node import collect_testcases

    kinds = {c.kind for c in CASES}
    assert kinds == {"node", "simple", "pytorch-converted", "pytorch-operator", "light"}
    assert sum(c.kind == "node" for c in CASES) == len(collect_testcases(None))
    assert sum(c.kind == "light" for c in CASES) >= 8


def test_expected_failures_all_match_a_case():
    """A line in expected_failures.txt that matches no case is stale."""
    names = [c.name for c in CASES]
    stale = [p.pattern for p, _ in RULES if not any(p.fullmatch(n) for n in names)]
    assert not stale, f"expected_failures.txt lines matching no case: {stale}"
