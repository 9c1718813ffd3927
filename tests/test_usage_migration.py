"""0.19.0's v20 migration seeds usage rows from the totals; the mirror keeps them equal to the rows afterwards.

A state.db made with hermes-agent 0.13.0 (no ``session_model_usage``) and
mirrored into is opened by 0.19.0, whose v20 migration copies every
session's totals into a usage row once. ``hermes insights`` reads those rows
first and adds only what a session's totals hold beyond them, so a seeded
row that stays as it was would keep showing totals that have since gone
down. The real ``hermes insights`` must show what each row holds.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.engine import desired, run
from support.run_hermes import hermes

from webui_insights.engine.hermes import hermes_state
from webui_insights.engine.schema import MODEL_USAGE, probe

OLD_PYTHON = os.environ.get("WEBUI_INSIGHTS_OLD_HERMES_PYTHON")
NOW = time.time()


def _installed_has_usage_rows() -> bool:
    """The installed hermes-agent keeps session_model_usage by task (0.19.0 and later: schema 22)."""
    try:
        return int(getattr(hermes_state(), "SCHEMA_VERSION", 0)) >= 22
    except ImportError:
        return False


pytestmark = [
    pytest.mark.skipif(
        not OLD_PYTHON,
        reason="set WEBUI_INSIGHTS_OLD_HERMES_PYTHON to a python with hermes-agent 0.13.0 (make test-compat does)",
    ),
    pytest.mark.skipif(
        not _installed_has_usage_rows(), reason="needs hermes-agent >= 0.19.0 installed (its v20 usage migration)"
    ),
]

# Both chats' states: (updated_at, figures). "grows" gets a new turn after the migration; "drops"
# had its totals written by the host's own bridge (the WebUI's convention: input with cached
# tokens) while mirroring was off, and the mirror brings them back down afterwards.
GROWS: dict[str, Any] = {"model": "test/model", "input_tokens": 1500, "output_tokens": 500, "cache_read_tokens": 200}
GROWN: dict[str, Any] = {
    "model": "test/model",
    "input_tokens": 4200,
    "output_tokens": 900,
    "cache_read_tokens": 400,
    "message_count": 4,
}
DROPS: dict[str, Any] = {"model": "test/model", "input_tokens": 2200, "output_tokens": 400, "cache_read_tokens": 200}
_BEFORE_0_19 = f"""
import sys, time
from pathlib import Path
from typing import Any
sys.path.insert(0, sys.argv[2])
from support.engine import desired, run
from webui_insights.engine.store import StateStore, create_state_db
db = Path(sys.argv[1]); create_state_db(db)
now = {NOW!r}
run(db, desired("grows", at=now - 3000, created_at=now - 7200, title="Grows", **{GROWS!r}))
run(db, desired("drops", at=now - 2000, created_at=now - 6000, title="Drops", **{DROPS!r}))
store = StateStore(db)  # the WebUI's own bridge, mirroring off: its absolute update, cached input included
store.db.update_token_counts("drops", input_tokens=2200, output_tokens=400, cache_read_tokens=200, absolute=True)
store.close()
"""



def figures(db: Path, sql: str) -> dict[str, tuple[int, int, int]]:
    conn = sqlite3.connect(db)
    try:
        return {sid: (i, o, c) for sid, i, o, c in conn.execute(sql)}
    finally:
        conn.close()


def rows(db: Path) -> dict[str, tuple[int, int, int]]:
    return figures(db, "SELECT id, input_tokens, output_tokens, cache_read_tokens FROM sessions")


def usage(db: Path) -> dict[str, tuple[int, int, int]]:
    return figures(db, "SELECT session_id, input_tokens, output_tokens, cache_read_tokens FROM session_model_usage")


def reported(report: str, label: str) -> int:
    found = re.search(rf"{label}:\s+([\d,]+)\s", report)
    assert found, report
    return int(found.group(1).replace(",", ""))


def test_insights_shows_each_rows_totals_after_the_v20_seed_grown_and_gone_down(tmp_path: Path) -> None:
    assert OLD_PYTHON is not None
    home = tmp_path / "hermes"
    home.mkdir()
    db = home / "state.db"
    done = subprocess.run(
        [OLD_PYTHON, "-c", _BEFORE_0_19, str(db), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    before = rows(db)
    assert before == {"grows": (1300, 500, 200), "drops": (2200, 400, 200)}

    hermes_state().SessionDB(db_path=db).close()  # 0.19.0 opens it: the v20 migration seeds the usage rows
    conn = sqlite3.connect(db)
    try:
        assert MODEL_USAGE in probe(conn)
    finally:
        conn.close()
    assert usage(db) == before

    run(db, desired("grows", at=NOW - 60, created_at=NOW - 7200, title="Grows", **GROWN))
    run(db, desired("drops", at=NOW - 2000, created_at=NOW - 6000, title="Drops", **DROPS))
    after = rows(db)
    assert after == {"grows": (3800, 900, 400), "drops": (2000, 400, 200)}  # one grew, one went down

    report = hermes(home, "insights", "--days", "1", "--source", "webui")
    # With drops' seeded row frozen at 2,200, insights would say 6,000: the residual is never negative.
    assert reported(report, "Input tokens") == sum(i for i, _, _ in after.values()) == 5800
    assert reported(report, "Output tokens") == sum(o for _, o, _ in after.values()) == 1300
    total = sum(sum(values) for values in after.values())
    assert reported(report, "Total tokens") == total == 7700  # input, output and cache read
    # The per-model table (usage rows, then the residual) and the Platforms table (the rows) agree.
    assert re.search(rf"\n\s*model\s+2\s+{total:,}\s", report), report
    assert re.search(rf"\n\s*webui\s+2\s+6\s+{total:,}\s", report), report
    assert re.search(r"Sessions:\s+2\s", report), report
    assert usage(db) == after
