"""Each fault scenario of the reliability table, as a test: 0 host errors, 0 lost after recovery."""

from __future__ import annotations

import pytest
import scenarios

SLOW = {"lock_held_by_another_process", "write_n_fails_forever"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in scenarios.SCENARIOS],
)
def test_fault_never_reaches_the_host_and_nothing_is_lost_after_recovery(name: str) -> None:
    out = scenarios.SCENARIOS[name]()
    assert out.injected > 0, "the scenario injected nothing"
    assert (out.host_errors, out.lost, out.internal_errors) == (0, 0, 0), out


def test_a_short_lock_hold_is_survived_in_the_fast_suite() -> None:
    out = scenarios.lock_held_by_another_process(seconds=1.5)
    assert (out.injected, out.host_errors, out.lost) == (1, 0, 0), out
