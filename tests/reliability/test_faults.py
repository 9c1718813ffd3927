"""Each fault scenario of the reliability table, each in its own interpreter: 0 host errors, 0 lost after recovery."""

from __future__ import annotations

import pytest
import scenarios


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in scenarios.SLOW else n for n in scenarios.SCENARIOS],
)
def test_fault_never_reaches_the_host_and_nothing_is_lost_after_recovery(name: str) -> None:
    out = scenarios.run_isolated(name)
    assert out.injected > 0, f"the scenario injected nothing: {out}"
    assert (out.host_errors, out.lost, out.internal_errors, out.broken) == (0, 0, 0, ""), out


def test_a_broken_scenario_is_a_failed_row_not_a_crash() -> None:
    out = scenarios.run_isolated("no_such_scenario")
    assert not out.ok and "KeyError" in out.broken
