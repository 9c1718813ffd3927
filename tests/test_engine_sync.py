"""The engine on the real hermes_state.SessionDB: what a row becomes, whoever writes it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from support.checks import same_time
from support.db import read_row, tamper
from support.engine import desired, run

from webui_insights.engine.hermes import hermes_state
from webui_insights.engine.plan import END_REASON
from webui_insights.engine.records import LEGACY_TABLE, TABLE
from webui_insights.engine.states import Ledger, Version
from webui_insights.engine.store import StateDBUninitialised, StateStore, create_state_db, open_read_only

NOW = time.time()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    create_state_db(path)
    return path


def chat(session_id: str = "chat1", *, at: float | None = None, **fields):
    return desired(session_id, at=NOW - 100 if at is None else at, created_at=NOW - 3600, **fields)


def session_db(db: Path):
    return hermes_state().SessionDB(db_path=db)


# ------------------------------------------------------------------ mirror rows


def test_a_chat_becomes_one_complete_row_in_hermes_conventions(db: Path) -> None:
    report = run(
        db, chat(input_tokens=3702, cache_read_tokens=600, output_tokens=168, message_count=6, tool_call_count=2)
    )
    assert report.outcomes == {"created": 1}
    row = read_row(db, "chat1")
    assert row is not None
    assert (row["source"], row["title"], row["model"]) == ("webui", "A chat", "test/model")
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (3102, 600, 168)
    assert (row["message_count"], row["tool_call_count"]) == (6, 2)
    assert row["started_at"] == same_time(NOW - 3600)
    assert row["ended_at"] == same_time(NOW - 100) and row["end_reason"] == END_REASON
    assert row["estimated_cost_usd"] == pytest.approx(0.01)


def test_running_the_same_state_twice_writes_nothing(db: Path) -> None:
    run(db, chat())
    again = run(db, chat())
    assert again.outcomes == {"unchanged": 1}
    assert again.rows_written == 0


def test_each_new_state_sets_the_totals(db: Path) -> None:
    run(db, chat(at=NOW - 30, input_tokens=1000, cache_read_tokens=0))
    run(db, chat(at=NOW - 20, input_tokens=2000, cache_read_tokens=200))
    row = read_row(db, "chat1")
    assert row is not None and (row["input_tokens"], row["cache_read_tokens"]) == (1800, 200)


def test_figures_that_go_down_leave_what_was_spent_and_later_turns_add_to_it(db: Path) -> None:
    """A turn removed (a retry, an edit) was still spent; the agent rebuilt counts from zero again."""
    run(db, chat(at=NOW - 30, input_tokens=5000, cache_read_tokens=0, output_tokens=500, message_count=8))
    run(db, chat(at=NOW - 20, input_tokens=3000, cache_read_tokens=0, output_tokens=300, message_count=6))
    row = read_row(db, "chat1")
    assert row is not None and (row["input_tokens"], row["output_tokens"], row["message_count"]) == (5000, 500, 8)
    run(db, chat(at=NOW - 10, input_tokens=4000, cache_read_tokens=0, output_tokens=400, message_count=8))
    row = read_row(db, "chat1")
    # 5000 spent, then 1000 more after the drop; 8 messages, 2 of them removed, then 2 more added.
    assert row is not None and (row["input_tokens"], row["output_tokens"], row["message_count"]) == (6000, 600, 10)


# ------------------------------------------------------------- older vs newer


def test_a_stale_copy_never_overwrites_a_newer_state_from_another_process(db: Path) -> None:
    newer = chat(at=NOW - 10, title="Newer title", input_tokens=9000)
    stale = chat(at=NOW - 50, title="Older title", input_tokens=100)
    run(db, newer)  # the live writer of one process
    report = run(db, stale)  # a CLI run, the sweep or another process with an old file
    assert report.outcomes == {"stale": 1}
    row = read_row(db, "chat1")
    assert row is not None and (row["title"], row["input_tokens"]) == ("Newer title", 8800)


def test_a_newer_state_arriving_after_an_older_one_wins(db: Path) -> None:
    run(db, chat(at=NOW - 50, title="Older title"))
    run(db, chat(at=NOW - 10, title="Newer title"))
    row = read_row(db, "chat1")
    assert row is not None and row["title"] == "Newer title"


def test_of_one_batch_the_newest_state_of_a_chat_is_applied(db: Path) -> None:
    report = run(db, chat(at=NOW - 10, title="Newest"), chat(at=NOW - 30, title="Oldest"))
    assert report.chats == 1
    assert read_row(db, "chat1")["title"] == "Newest"  # type: ignore[index]


# ---------------------------------------------------------------- ownership


def test_another_sources_row_is_never_written(db: Path) -> None:
    hermes = session_db(db)
    try:
        hermes.create_session("tg1", source="telegram", model="m")
        hermes.update_token_counts("tg1", input_tokens=10, output_tokens=5)
        for n in range(3):
            hermes.append_message("tg1", role="user", content=f"m{n}")
    finally:
        hermes.close()
    before = read_row(db, "tg1")
    report = run(db, chat("tg1", message_count=2, title="Local copy of a Telegram chat"))
    assert report.outcomes == {"foreign": 1}
    assert read_row(db, "tg1") == before


def _hermes_writes(db: Path, session_id: str, calls: int = 3) -> None:
    """What hermes-agent does for a current WebUI's streaming chat (0.19.0 calls)."""
    hermes = session_db(db)
    try:
        hermes.create_session(session_id, source="webui", model="m", system_prompt="You are hermes.", model_config={})
        for n in range(calls):
            hermes.append_message(session_id, role="user", content=f"q{n}")
            hermes.update_token_counts(
                session_id, input_tokens=1034, output_tokens=56, cache_read_tokens=200, estimated_cost_usd=0.001
            )
            hermes.append_message(session_id, role="assistant", content=f"a{n}")
    finally:
        hermes.close()


def test_a_row_hermes_agent_writes_only_gets_what_hermes_leaves_out(db: Path) -> None:
    _hermes_writes(db, "live1")
    before = read_row(db, "live1")
    assert before is not None
    webui = chat(
        "live1", input_tokens=3702, cache_read_tokens=600, output_tokens=168, message_count=6, title="Trip plan"
    )
    webui = webui._replace(created_at=before["started_at"] - 30)
    webui = webui._replace(digest=webui.state_digest())
    report = run(db, webui)
    after = read_row(db, "live1")
    assert after is not None
    for column in (
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "estimated_cost_usd",
        "api_call_count",
        "message_count",
        "tool_call_count",
        "model",
        "ended_at",
    ):
        assert after[column] == before[column], column
    assert after["title"] == "Trip plan"
    assert after["started_at"] == same_time(before["started_at"] - 30)
    assert report.plans[0].owner == "hermes"


def test_hermes_agent_taking_over_our_row_keeps_its_own_counts(db: Path) -> None:
    run(db, chat("c1", message_count=2))
    hermes = session_db(db)
    try:  # a CLI resume, or hermes-agent handed a SessionDB
        hermes.update_token_counts("c1", input_tokens=500, output_tokens=50)
        hermes.append_message("c1", role="user", content="more")
    finally:
        hermes.close()
    taken = read_row(db, "c1")
    run(db, chat("c1", at=NOW - 5, message_count=4, input_tokens=99999))
    row = read_row(db, "c1")
    assert row is not None and taken is not None
    assert (row["input_tokens"], row["message_count"]) == (taken["input_tokens"], taken["message_count"])
    assert row["ended_at"] is None and row["end_reason"] is None  # hermes' end_session can write again


# ------------------------------------------------------------------ deletions


def test_a_deletion_in_hermes_is_respected_until_a_new_turn(db: Path) -> None:
    run(db, chat(message_count=4))
    hermes = session_db(db)
    try:
        hermes.delete_session("chat1")
    finally:
        hermes.close()
    assert run(db, chat(message_count=4)).outcomes == {"deleted": 1}
    assert run(db, chat(at=NOW - 5, message_count=4, title="Renamed")).outcomes == {"deleted": 1}
    assert read_row(db, "chat1") is None
    assert run(db, chat(at=NOW - 1, message_count=6)).outcomes == {"restored": 1}
    row = read_row(db, "chat1")
    assert row is not None and row["message_count"] == 6


# --------------------------------------------------------------------- titles


def test_a_title_taken_by_a_cli_session_becomes_the_webui_name_and_resume_still_finds_the_cli_session(
    db: Path,
) -> None:
    hermes = session_db(db)
    try:
        hermes.create_session("cli1", source="cli")
        hermes.set_session_title("cli1", "Weekly plan")
    finally:
        hermes.close()
    run(db, chat("w1", title="Weekly plan"), chat("w2", title="Weekly plan"), chat("w3", title="Weekly plan"))
    titles = [read_row(db, sid)["title"] for sid in ("w1", "w2", "w3")]  # type: ignore[index]
    assert titles == ["Weekly plan (WebUI)", "Weekly plan (WebUI 2)", "Weekly plan (WebUI 3)"]
    hermes = session_db(db)
    try:
        assert hermes.resolve_session_by_title("Weekly plan") == "cli1"
    finally:
        hermes.close()


def test_a_cli_rename_survives_later_turns_and_restarts(db: Path) -> None:
    run(db, chat(title="WebUI title"))
    hermes = session_db(db)
    try:
        hermes.set_session_title("chat1", "Renamed in CLI")
    finally:
        hermes.close()
    for n in range(1, 4):  # each run is a fresh handle: a restart
        run(db, chat(at=NOW - 50 + n, title="WebUI rename", input_tokens=1234 + n))
    assert read_row(db, "chat1")["title"] == "Renamed in CLI"  # type: ignore[index]


def test_a_webui_rename_propagates(db: Path) -> None:
    run(db, chat(at=NOW - 50, title="First"))
    run(db, chat(at=NOW - 40, title="Second"))
    assert read_row(db, "chat1")["title"] == "Second"  # type: ignore[index]


def test_a_lineage_name_an_earlier_release_chose_is_renamed_once(db: Path) -> None:
    run(db, chat("other", title="Plan"))
    tamper(db, "INSERT INTO sessions (id, source, started_at, title) VALUES ('old', 'webui', ?, 'Plan #2')", NOW)
    tamper(
        db,
        f"CREATE TABLE {LEGACY_TABLE} (session_id TEXT PRIMARY KEY, title_base TEXT, title_written TEXT, "
        "transcript_count INTEGER, transcript_hash TEXT, updated_at REAL)",
    )
    tamper(db, f"INSERT INTO {LEGACY_TABLE} VALUES ('old', 'Plan', 'Plan #2', 0, NULL, ?)", NOW)
    run(db, chat("old", title="Plan"))
    assert read_row(db, "old")["title"] == "Plan (WebUI)"  # type: ignore[index]
    assert run(db, chat("old", title="Plan")).rows_written == 0


def test_a_hermes_lineage_row_is_left_as_hermes_named_it(db: Path) -> None:
    tamper(db, "INSERT INTO sessions (id, source, started_at, title) VALUES ('cont', 'webui', ?, 'Plan #2')", NOW)
    run(db, chat("cont", title="Plan"))
    assert read_row(db, "cont")["title"] == "Plan #2"  # type: ignore[index]


def test_a_title_hermes_refuses_is_counted_and_not_retried(db: Path) -> None:
    report = run(db, chat(title="x" * 150))
    assert report.notes["title_refused"] == 1
    assert read_row(db, "chat1")["title"] is None  # type: ignore[index]
    again = run(db, chat(title="x" * 150))
    assert again.rows_written == 0 and again.outcomes == {"unchanged": 1}


# ---------------------------------------------------------------- the ledger


def test_agent_reported_cache_is_kept_across_states_and_runs(db: Path) -> None:
    no_cache = {"cache_read_tokens": None, "cache_write_tokens": None}
    run(db, chat(at=NOW - 30, input_tokens=1234, ledger=Ledger(cache_read_tokens=200, api_calls=1), **no_cache))
    run(db, chat(at=NOW - 20, input_tokens=2468, ledger=Ledger(cache_read_tokens=200, api_calls=1), **no_cache))
    # A later run from the session file alone (no agent in that process).
    run(db, chat(at=NOW - 10, input_tokens=2468, title="Renamed", **no_cache))
    row = read_row(db, "chat1")
    assert row is not None
    assert (row["input_tokens"], row["cache_read_tokens"], row["api_call_count"]) == (2068, 400, 2)


# --------------------------------------------------------- what we leave alone


def test_a_sqlite_file_hermes_never_initialised_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE other_app (x INTEGER)")
    conn.commit()
    schema = conn.execute("SELECT * FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    with pytest.raises(StateDBUninitialised):
        StateStore(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT * FROM sqlite_master ORDER BY name").fetchall() == schema
    finally:
        conn.close()


def test_the_earlier_releases_memory_is_folded_into_the_record_table(db: Path) -> None:
    tamper(db, "INSERT INTO sessions (id, source, started_at, title) VALUES ('c', 'webui', ?, 'Ours')", NOW)
    tamper(
        db,
        f"CREATE TABLE {LEGACY_TABLE} (session_id TEXT PRIMARY KEY, title_base TEXT, title_written TEXT, "
        "transcript_count INTEGER, transcript_hash TEXT, updated_at REAL)",
    )
    tamper(db, f"INSERT INTO {LEGACY_TABLE} VALUES ('c', 'Ours', 'Ours', 0, NULL, ?)", NOW)
    run(db, chat("c", title="Ours renamed in the WebUI"))
    assert read_row(db, "c")["title"] == "Ours renamed in the WebUI"  # type: ignore[index]
    conn = sqlite3.connect(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert TABLE in tables and LEGACY_TABLE not in tables
    finally:
        conn.close()


def test_version_is_recorded_in_the_same_transaction_as_the_row(db: Path) -> None:
    run(db, chat(at=NOW - 10))
    conn = sqlite3.connect(db)
    try:
        updated, observed = conn.execute(
            f"SELECT version_updated, version_observed FROM {TABLE} WHERE session_id = 'chat1'"
        ).fetchone()
    finally:
        conn.close()
    assert Version(updated, observed) == Version(NOW - 10, NOW - 10)


def test_many_chats_sharing_a_title_get_distinct_names_across_batches(db: Path) -> None:
    run(db, *(chat(f"a{n}", title="Hello") for n in range(30)))
    run(db, *(chat(f"b{n}", title="Hello") for n in range(30)))
    conn = sqlite3.connect(db)
    try:
        titles = [t for (t,) in conn.execute("SELECT title FROM sessions")]
    finally:
        conn.close()
    assert len(titles) == len(set(titles)) == 60
    expected = {"Hello", "Hello (WebUI)", *(f"Hello (WebUI {n})" for n in range(2, 60))}
    assert set(titles) == expected
