"""This layer's own table in state.db: what it keeps, how an earlier release's table grows, what it refuses."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from support.db import read_row, tamper
from support.engine import desired, run

from webui_insights.engine.records import FORMAT, TABLE, ensure_table, read_records, write_records
from webui_insights.engine.states import Counters, Ledger, Record, Version
from webui_insights.engine.store import StateStore, create_state_db, open_read_only

NOW = time.time()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    create_state_db(path)
    return path


def stored(db: Path, session_id: str = "chat1") -> Record | None:
    conn = open_read_only(db)
    try:
        return read_records(conn, [session_id]).get(session_id)
    finally:
        conn.close()


@pytest.mark.parametrize(
    "record",
    [
        # what a backfill writes for most chats: figures seen, nothing else
        Record("mirror", Version(NOW - 5, NOW - 4), "m1", 6, "Plan", "Plan (WebUI 2)", seen=Counters(10, 2)),
        Record("hermes", None, None, 0, None, None, 3, "c0ffee", Ledger(1, 2, 3, 4, 5, 6, 0.25), NOW - 1),
        Record(
            "mirror",
            Version(NOW, NOW),
            "m2",
            2,
            "T",
            "T",
            deleted_at=NOW - 2,
            seen=Counters(1234, 56, 200, 0, 0, 1, 0.1 + 0.2, 2, 0),
            grown=Counters(),  # a copy: nothing of its own
            ledger_base=Counters(),
            state_growth=Counters(messages=2),
            active_at=NOW - 3,
            ledger_applied=Ledger(cost_usd=1e-7),
        ),
    ],
)
def test_a_record_reads_back_exactly_as_it_was_written(db: Path, record: Record) -> None:
    store = StateStore(db)
    try:
        store.run(lambda conn: (ensure_table(conn), write_records(conn, [("chat1", record)], NOW)))
        store.run(lambda conn: write_records(conn, [("chat1", record)], NOW))  # again: replaces, one row
    finally:
        store.close()
    assert stored(db) == record
    conn = open_read_only(db)
    try:
        assert conn.execute(f"SELECT COUNT(*), MIN(format) FROM {TABLE}").fetchone() == (1, FORMAT)
    finally:
        conn.close()


# The table as the previous release (0.x, record format 1) created it.
EARLIER_TABLE = f"""CREATE TABLE {TABLE} (
    session_id TEXT PRIMARY KEY, owner TEXT, version_updated REAL, version_observed REAL, digest TEXT,
    written TEXT, message_count INTEGER NOT NULL DEFAULT 0, title_base TEXT, title_written TEXT,
    transcript_count INTEGER NOT NULL DEFAULT 0, transcript_chain TEXT,
    ledger_cache_read INTEGER NOT NULL DEFAULT 0, ledger_cache_write INTEGER NOT NULL DEFAULT 0,
    ledger_reasoning INTEGER NOT NULL DEFAULT 0, ledger_api_calls INTEGER NOT NULL DEFAULT 0,
    ledger_prompt INTEGER NOT NULL DEFAULT 0, ledger_completion INTEGER NOT NULL DEFAULT 0,
    ledger_cost REAL NOT NULL DEFAULT 0, deleted_at REAL, changed_at REAL)"""


def test_an_earlier_releases_table_is_read_as_is_and_grows_its_new_columns_on_the_first_write(db: Path) -> None:
    first = desired("chat1", at=NOW - 50, created_at=NOW - 3600, message_count=2)
    tamper(db, EARLIER_TABLE)
    tamper(db, "INSERT INTO sessions (id, source, started_at, title, input_tokens) VALUES ('chat1', 'webui', ?, "
           "'A chat', 1034)", NOW - 3600)
    tamper(
        db,
        f"INSERT INTO {TABLE} (session_id, owner, version_updated, version_observed, digest, written, message_count, "
        "title_base, title_written) VALUES ('chat1', 'mirror', ?, ?, ?, '1034|56|200|0|0|0.010000000|0|2', 2, "
        "'A chat', 'A chat')",
        *first.version,
        first.digest,
    )
    known = stored(db)
    assert known is not None and known.problem is None
    assert (known.owner, known.version, known.seen, known.ledger_applied) == ("mirror", first.version, None, None)
    # A new turn: figures measured from what the earlier release knew (its message count).
    report = run(db, desired("chat1", at=NOW - 10, created_at=NOW - 3600, message_count=4, input_tokens=2468))
    assert report.outcomes == {"updated": 1}
    after = stored(db)
    assert after is not None and after.seen is not None and after.seen.messages == 4
    conn = sqlite3.connect(db)
    try:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")}
        written = conn.execute(f"SELECT written, format FROM {TABLE}").fetchone()
    finally:
        conn.close()
    assert {"format", "seen", "grown", "ledger_base", "state_growth", "active_at", "ledger_applied"} <= columns
    assert written == (None, FORMAT)  # NULL: what an earlier release reads as "nothing known" (never as a takeover)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("owner", "shared"),  # an owner this release does not know
        ("version_updated", "yesterday"),
        ("ledger_prompt", -5),
        ("ledger_cost", "a lot"),
        ("seen", "1|2|3"),  # too few figures
        ("seen", "1|2|x|0|0|0|0.0|2|0"),
        ("grown", 7),
        ("ledger_applied", "-1|0|0|0|0|0|0.0"),
        ("message_count", 2.5),
        ("title_written", b"bytes"),
    ],
)
def test_a_damaged_record_leaves_its_chat_alone_and_says_so(db: Path, column: str, value: object) -> None:
    run(db, desired("chat1", at=NOW - 50, created_at=NOW - 3600))
    row_before = read_row(db, "chat1")
    tamper(db, f"UPDATE {TABLE} SET {column} = ? WHERE session_id = 'chat1'", value)
    tamper(db, "INSERT INTO sessions (id, source, started_at) VALUES ('other', 'webui', ?)", NOW)
    report = run(
        db,
        desired("chat1", at=NOW - 10, created_at=NOW - 3600, input_tokens=99_999, title="New title"),
        desired("other", at=NOW - 10, created_at=NOW - 3600),
    )
    assert report.outcomes == {"refused": 1, "updated": 1}  # the other chat is written as usual
    assert report.notes["record_damaged"] == 1
    assert read_row(db, "chat1") == row_before  # not written, not deleted
    problem = stored(db)
    assert problem is not None and problem.problem == "record_damaged"


def test_a_record_from_a_newer_release_is_never_guessed_at(db: Path) -> None:
    run(db, desired("chat1", at=NOW - 50, created_at=NOW - 3600))
    row_before = read_row(db, "chat1")
    tamper(db, f"UPDATE {TABLE} SET format = ?, seen = 'a newer form' WHERE session_id = 'chat1'", FORMAT + 1)
    report = run(db, desired("chat1", at=NOW - 10, created_at=NOW - 3600, input_tokens=99_999))
    assert report.outcomes == {"refused": 1} and report.notes["record_newer_release"] == 1
    assert read_row(db, "chat1") == row_before
    conn = open_read_only(db)
    try:
        assert conn.execute(f"SELECT format, seen FROM {TABLE}").fetchone() == (FORMAT + 1, "a newer form")
    finally:
        conn.close()
