"""engine/budget.py: how long one write transaction may work, every budget in one place.

hermes' own writers wait about 50 ms for state.db's write lock; each budget
bounds our work inside the lock and must leave room under that for what
no budget sees (the step under way, the COMMIT, an index merge). How long
transactions really hold the lock is ``make bench``'s to measure; this
checks the budgets themselves and that they are the ones in use.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from webui_insights.engine import budget
from webui_insights.engine.budget import BATCH_BUDGET_S, LIVE_BUDGET_S, TRANSCRIPT_BUDGET_S
from webui_insights.engine.sync import sync
from webui_insights.writer import WriterConfig

HERMES_LOCK_WAIT_S = 0.05


@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(LIVE_BUDGET_S, id="the live writer's budget leaves room under hermes' lock wait"),
        pytest.param(BATCH_BUDGET_S, id="the commands' budget leaves room under hermes' lock wait"),
        pytest.param(TRANSCRIPT_BUDGET_S, id="the transcript copy's budget leaves room under hermes' lock wait"),
    ],
)
def test_every_budget_leaves_room_under_hermes_lock_wait(seconds: float) -> None:
    """A transaction working up to its budget must still commit before hermes' agent gives up on the lock."""
    assert 0 < seconds < HERMES_LOCK_WAIT_S


def test_copying_messages_keeps_about_half_the_room() -> None:
    """One message insert can merge hermes' full-text index for tens of ms inside the lock, unforeseeably."""
    assert TRANSCRIPT_BUDGET_S <= HERMES_LOCK_WAIT_S / 2
    assert TRANSCRIPT_BUDGET_S < min(LIVE_BUDGET_S, BATCH_BUDGET_S)


def test_the_budgets_are_the_ones_in_use() -> None:
    """One place to tune them: a writer defaulting to a figure of its own would escape what is tuned here."""
    assert WriterConfig().transaction_budget_s == LIVE_BUDGET_S
    assert inspect.signature(sync).parameters["budget_s"].default == BATCH_BUDGET_S


def test_the_module_imports_nothing() -> None:
    """The writer, the engine and the commands all read it: an import here could close an import cycle."""
    tree = ast.parse(Path(budget.__file__).read_text(encoding="utf-8"))
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert all(isinstance(node, ast.ImportFrom) and node.module == "__future__" for node in imports)
