"""hermes' own commands on a state.db this layer writes to: nothing of hermes breaks.

The engine keeps its records in a table of its own beside hermes' tables
(``webui_insights_chats``). These tests run the real ``hermes`` console
script — list, rename, delete, prune, export, insights — on such a
state.db, and check that the mirror then respects what the command did.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from support.db import read_row
from support.engine import desired, run
from support.run_hermes import hermes

from webui_insights.engine.records import TABLE
from webui_insights.engine.store import create_state_db

NOW = time.time()
DAY = 86400.0



@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "hermes"
    home.mkdir()
    create_state_db(home / "state.db")
    return home


def mirrored(home: Path, session_id: str, title: str, *, days_ago: float = 0.0, **fields) -> None:
    at = NOW - days_ago * DAY
    run(home / "state.db", desired(session_id, at=at, created_at=at - 600, title=title, **fields))


def test_sessions_list_shows_mirrored_chats_with_their_titles(home: Path) -> None:
    mirrored(home, "aaa111", "Trip to Lisbon")
    mirrored(home, "bbb222", "Tax questions")
    listing = hermes(home, "sessions", "list")
    assert "Trip to Lisbon" in listing and "Tax questions" in listing


def test_sessions_rename_works_and_the_mirror_keeps_the_new_title(home: Path) -> None:
    mirrored(home, "aaa111", "WebUI title")
    hermes(home, "sessions", "rename", "aaa111", "Renamed", "in", "hermes")
    mirrored(home, "aaa111", "WebUI title again", input_tokens=5000)
    assert read_row(home / "state.db", "aaa111")["title"] == "Renamed in hermes"  # type: ignore[index]


def test_sessions_delete_works_and_the_mirror_respects_it(home: Path) -> None:
    mirrored(home, "aaa111", "Doomed", message_count=4)
    hermes(home, "sessions", "delete", "aaa111", "--yes")
    assert read_row(home / "state.db", "aaa111") is None
    mirrored(home, "aaa111", "Doomed", message_count=4)  # the sweep, an unchanged save
    assert read_row(home / "state.db", "aaa111") is None
    conn = sqlite3.connect(home / "state.db")
    try:  # the record outlives the row: that is how the deletion is known
        assert conn.execute(f"SELECT COUNT(*) FROM {TABLE} WHERE session_id = 'aaa111'").fetchone()[0] == 1
    finally:
        conn.close()


def test_sessions_prune_removes_old_mirrored_chats_for_good(home: Path) -> None:
    mirrored(home, "old111", "Old chat", days_ago=100)
    mirrored(home, "new222", "New chat", days_ago=1)
    hermes(home, "sessions", "prune", "--older-than", "30", "--yes")
    assert read_row(home / "state.db", "old111") is None
    assert read_row(home / "state.db", "new222") is not None
    mirrored(home, "old111", "Old chat", days_ago=100)
    assert read_row(home / "state.db", "old111") is None


def test_sessions_export_exports_mirrored_chats(home: Path, tmp_path: Path) -> None:
    mirrored(home, "aaa111", "Exported chat")
    out = tmp_path / "export.jsonl"
    hermes(home, "sessions", "export", str(out), "--session-id", "aaa111")
    exported = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert [e["id"] for e in exported] == ["aaa111"]
    assert exported[0]["title"] == "Exported chat"


def test_insights_counts_mirrored_chats_once_in_hermes_convention(home: Path) -> None:
    mirrored(home, "aaa111", "One", input_tokens=3702, cache_read_tokens=600, output_tokens=168, message_count=6)
    mirrored(home, "bbb222", "Two", input_tokens=1234, cache_read_tokens=200, output_tokens=56, message_count=2)
    report = hermes(home, "insights", "--days", "1", "--source", "webui")
    assert re.search(r"Sessions:\s+2\s", report), report
    assert re.search(r"Input tokens:\s+4,136\s", report), report
    assert re.search(r"Messages:\s+8\b", report), report
    assert re.search(r"Active time:\s+~\d+m", report), report


OLD_PYTHON = os.environ.get("WEBUI_INSIGHTS_OLD_HERMES_PYTHON")


@pytest.mark.skipif(
    not OLD_PYTHON,
    reason="set WEBUI_INSIGHTS_OLD_HERMES_PYTHON to a python with hermes-agent 0.13.0 (make test-compat does)",
)
def test_a_state_db_made_by_the_oldest_release_migrates_with_our_table(tmp_path: Path) -> None:
    """0.13.0 creates the state.db and the mirror writes to it there; this release then opens it."""
    assert OLD_PYTHON is not None
    home = tmp_path / "hermes"
    home.mkdir()
    script = (
        "import sys, time; from pathlib import Path; sys.path.insert(0, sys.argv[2])\n"
        "from support.engine import desired, run\n"
        "from webui_insights.engine.store import create_state_db\n"
        "db = Path(sys.argv[1]); create_state_db(db)\n"
        "now = time.time()\n"
        "run(db, desired('old013', at=now - 60, created_at=now - 600, title='Made under 0.13', message_count=4))\n"
    )
    done = subprocess.run(
        [OLD_PYTHON, "-c", script, str(home / "state.db"), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    listing = hermes(home, "sessions", "list")  # this release opens it: its migrations run
    assert "Made under 0.13" in listing
    assert (
        run(
            home / "state.db",
            desired("old013", at=NOW - 60, created_at=NOW - 600, title="Made under 0.13", message_count=4),
        ).rows_written
        == 0
    )
    report = hermes(home, "insights", "--days", "1", "--source", "webui")
    assert re.search(r"Sessions:\s+1\s", report), report
