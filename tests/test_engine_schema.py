"""engine/schema.py on hermes' real schema: what a state.db has, and the usage row kept a copy of the totals.

``hermes insights`` reads a chat's ``session_model_usage`` rows before its
totals: a usage row that is not a copy of them shows the wrong spend. The
copy (``USAGE_DELETE_SQL`` then ``USAGE_COPY_SQL``, as ``apply`` runs them)
and the check (``USAGE_CHECK_SQL`` → ``usage_in_step``) must agree exactly:
"in step" means "the copy would change nothing".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.db import NEEDS_ACTIVE, NEEDS_USAGE

from webui_insights.engine.schema import (
    LAST_ACTIVITY,
    MODEL_USAGE,
    TITLE_SOURCE,
    USAGE_CHECK_SQL,
    USAGE_COPY_SQL,
    USAGE_DELETE_SQL,
    messages_have_active,
    probe,
    usage_in_step,
)
from webui_insights.engine.store import create_state_db

NOW = 1_800_000_000.0


def alter(db: Path, *statements: str) -> None:
    """Change the schema as a newer (or older) hermes release would have it."""
    conn = sqlite3.connect(db)
    try:
        for sql in statements:
            conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def probed(db: Path) -> frozenset[str]:
    conn = sqlite3.connect(db)
    try:
        return probe(conn)
    finally:
        conn.close()


# ------------------------------------------------------------------ probe

_PRE_V22_USAGE = (
    "DROP TABLE session_model_usage",
    "CREATE TABLE session_model_usage (session_id TEXT NOT NULL, model TEXT NOT NULL, "
    "billing_provider TEXT NOT NULL DEFAULT '', billing_base_url TEXT NOT NULL DEFAULT '', "
    "billing_mode TEXT NOT NULL DEFAULT '', api_call_count INTEGER NOT NULL DEFAULT 0, "
    "input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0, "
    "cache_read_tokens INTEGER NOT NULL DEFAULT 0, cache_write_tokens INTEGER NOT NULL DEFAULT 0, "
    "reasoning_tokens INTEGER NOT NULL DEFAULT 0, estimated_cost_usd REAL NOT NULL DEFAULT 0, "
    "actual_cost_usd REAL NOT NULL DEFAULT 0, cost_status TEXT, cost_source TEXT, first_seen REAL, last_seen REAL, "
    "PRIMARY KEY (session_id, model, billing_provider, billing_base_url, billing_mode))",
)


@NEEDS_USAGE
@pytest.mark.parametrize(
    ("statements", "found"),
    [
        pytest.param((), {MODEL_USAGE}, id="hermes-agent 0.19.0 has the usage table and neither newer column"),
        pytest.param(
            (
                f"ALTER TABLE sessions ADD COLUMN {LAST_ACTIVITY} REAL",
                f"ALTER TABLE sessions ADD COLUMN {TITLE_SOURCE} TEXT",
            ),
            {MODEL_USAGE, LAST_ACTIVITY, TITLE_SOURCE},
            id="upstream main adds last_activity_at and title_source",
        ),
        pytest.param(
            (f"ALTER TABLE sessions ADD COLUMN {TITLE_SOURCE} TEXT",),
            {MODEL_USAGE, TITLE_SOURCE},
            id="each newer column is found on its own",
        ),
        pytest.param(("DROP TABLE session_model_usage",), set(), id="a release before the usage table has none"),
        pytest.param(_PRE_V22_USAGE, set(), id="a usage table not yet keyed by task does not count"),
        pytest.param(
            ("ALTER TABLE sessions DROP COLUMN cost_source",),
            set(),
            id="a sessions table without a column the copy reads does not count",
        ),
    ],
)
def test_probe_finds_what_this_database_has(db: Path, statements: tuple[str, ...], found: set[str]) -> None:
    """Each column and table is filled only where the database has it: a write to one it lacks fails the chat."""
    alter(db, *statements)
    assert probed(db) == found


def test_probe_follows_a_database_upgraded_while_a_connection_is_open(db: Path) -> None:
    """hermes upgrades state.db under a long-running WebUI: the next transaction must see the new column."""
    conn = sqlite3.connect(db)
    try:
        assert LAST_ACTIVITY not in probe(conn)
        alter(db, f"ALTER TABLE sessions ADD COLUMN {LAST_ACTIVITY} REAL")
        assert LAST_ACTIVITY in probe(conn)
    finally:
        conn.close()


@NEEDS_ACTIVE
def test_superseded_messages_are_known_only_where_the_column_exists(db: Path, tmp_path: Path) -> None:
    """hermes-agent ≥ 0.18 keeps superseded messages (active = 0); before, every message counted."""
    conn = sqlite3.connect(db)
    try:
        assert messages_have_active(conn) is True
    finally:
        conn.close()
    older = sqlite3.connect(tmp_path / "older.db")
    try:
        older.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, session_id TEXT, role TEXT, content TEXT)")
        assert messages_have_active(older) is False
    finally:
        older.close()


# ----------------------------------------------------------- usage_in_step


@pytest.mark.parametrize(
    ("main_rows", "copies", "has_usage", "in_step"),
    [
        pytest.param(1, 1, 1, True, id="one main-loop row that is the copy is in step"),
        pytest.param(0, 0, 1, False, id="usage without its row is not"),
        pytest.param(1, 0, 1, False, id="one row that differs from the totals is not"),
        pytest.param(2, 1, 1, False, id="the copy beside a row of an old model is not"),
        pytest.param(0, 0, 0, True, id="no usage and no row is in step"),
        pytest.param(1, 0, 0, False, id="a row left over from usage that is gone is not"),
    ],
)
def test_usage_in_step(main_rows: int, copies: int, has_usage: int, in_step: bool) -> None:
    assert usage_in_step(main_rows, copies, has_usage) is in_step


# ------------------------------------------- copy and check, on hermes' table

_MAYBE_COUNT = st.one_of(st.none(), st.integers(min_value=0, max_value=10**7))
_MAYBE_COST = st.one_of(st.none(), st.integers(min_value=0, max_value=10**4).map(lambda n: n / 128))
sessions = st.fixed_dictionaries(
    {
        "model": st.one_of(st.none(), st.sampled_from(["test/model", "other/model"])),
        "billing_provider": st.one_of(st.none(), st.sampled_from(["", "openrouter"])),
        "billing_base_url": st.one_of(st.none(), st.just("https://example.invalid")),
        "billing_mode": st.one_of(st.none(), st.just("subscription")),
        "input_tokens": _MAYBE_COUNT,
        "output_tokens": _MAYBE_COUNT,
        "cache_read_tokens": _MAYBE_COUNT,
        "cache_write_tokens": _MAYBE_COUNT,
        "reasoning_tokens": _MAYBE_COUNT,
        "api_call_count": _MAYBE_COUNT,
        "estimated_cost_usd": _MAYBE_COST,
        "actual_cost_usd": _MAYBE_COST,
        "cost_status": st.one_of(st.none(), st.just("estimated")),
        "cost_source": st.one_of(st.none(), st.just("provider")),
        "ended_at": st.one_of(st.none(), st.just(NOW + 60)),
    }
)
# What the chat's usage rows held before: nothing, the copy (maybe since changed), rows of an old route.
befores = st.sampled_from(["nothing", "the copy", "the copy, one figure changed", "an old model's row", "both"])
# Every figure of a usage row, and a change to it someone else might make.
CHANGES = {
    **{
        name: f"{name} = {name} + 1"
        for name in (
            "api_call_count",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "estimated_cost_usd",
            "actual_cost_usd",
        )
    },
    "cost_status": "cost_status = 'actual'",
    "cost_source": "cost_source = COALESCE(cost_source, '') || 'x'",
}


@pytest.fixture(scope="module")
def usage_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    """hermes' real schema, one connection for every example (each rolled back)."""
    path = tmp_path_factory.mktemp("schema") / "state.db"
    create_state_db(path)
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    yield conn
    conn.close()


def usage_rows(conn: sqlite3.Connection, task: str | None = "") -> list[dict[str, Any]]:
    where = "task = ?" if task is not None else "task != ?"
    found = conn.execute(
        f"SELECT * FROM session_model_usage WHERE session_id = 'chat' AND {where} ORDER BY model, task", ("",)
    )
    return [dict(row) for row in found]


def add_usage_row(conn: sqlite3.Connection, model: str, task: str, input_tokens: int) -> None:
    conn.execute(
        "INSERT INTO session_model_usage (session_id, model, task, input_tokens) VALUES ('chat', ?, ?, ?)",
        (model, task, input_tokens),
    )


def copy(conn: sqlite3.Connection) -> None:
    """What apply runs for a mirror-owned chat, after writing its row."""
    conn.execute(USAGE_DELETE_SQL.format(marks="?"), ("chat",))
    conn.execute(USAGE_COPY_SQL.format(marks="?"), ("chat",))


def check(conn: sqlite3.Connection) -> bool:
    (_, main, copies, has), *rest = conn.execute(USAGE_CHECK_SQL.format(marks="?"), ("chat",)).fetchall()
    assert rest == []
    return usage_in_step(main, copies, has)


def figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows without first_seen/last_seen (dates the copy refreshes; insights sums figures)."""
    return [{k: v for k, v in row.items() if k not in ("first_seen", "last_seen")} for row in rows]


@NEEDS_USAGE
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(session=sessions, before=befores, changed=st.sampled_from(sorted(CHANGES)), aux=st.booleans())
def test_the_copy_leaves_one_row_equal_to_the_totals_and_the_check_agrees(
    usage_db: sqlite3.Connection, session: dict[str, Any], before: str, changed: str, aux: bool
) -> None:
    """After the copy the check says "in step"; before it, "in step" exactly when the copy would change nothing."""
    conn = usage_db
    try:
        names = ", ".join(session)
        conn.execute(
            f"INSERT INTO sessions (id, source, started_at, {names}) VALUES ('chat', 'webui', ?, "
            f"{', '.join('?' * len(session))})",
            (NOW, *session.values()),
        )
        if before in ("the copy", "the copy, one figure changed", "both"):
            copy(conn)
            if before == "the copy, one figure changed":
                conn.execute(f"UPDATE session_model_usage SET {CHANGES[changed]} WHERE session_id = 'chat'")
        if before in ("an old model's row", "both"):
            add_usage_row(conn, "old/model", "", 7)
        if aux:  # hermes' auxiliary task (titling) keeps its own row: never this layer's
            add_usage_row(conn, "aux", "title", 3)
        others = usage_rows(conn, task=None)
        main_before, in_step_before = usage_rows(conn), check(conn)

        copy(conn)
        main = usage_rows(conn)
        assert check(conn) is True
        assert (figures(main) == figures(main_before)) is in_step_before
        assert usage_rows(conn, task=None) == others

        totals = dict(conn.execute("SELECT * FROM sessions WHERE id = 'chat'").fetchone())
        has_usage = any(session[k] for k in session if k.endswith("_tokens") or k in ("api_call_count",)) or bool(
            session["estimated_cost_usd"]
        )
        if not has_usage:
            assert main == []  # no spend, no row: it stays out of insights' per-model table
        else:
            (row,) = main
            assert row["model"] == (totals["model"] or "unknown")
            assert row["billing_provider"] == (totals["billing_provider"] or "")
            for name in ("input_tokens", "output_tokens", "cache_read_tokens", "api_call_count", "estimated_cost_usd"):
                assert row[name] == (totals[name] or 0), name
            status = totals["cost_status"] or ("unknown" if totals["estimated_cost_usd"] is None else "estimated")
            assert row["cost_status"] == status  # insights takes the cost as stored only with a status

        copy(conn)  # again: nothing changes
        assert usage_rows(conn) == main
    finally:
        conn.rollback()


@NEEDS_USAGE
@pytest.mark.parametrize("figure", sorted(CHANGES), ids=lambda f: f"a usage row whose {f} was changed is out of step")
def test_a_change_to_any_figure_of_the_copy_is_seen_and_undone(usage_db: sqlite3.Connection, figure: str) -> None:
    """insights sums each of these figures (the cost as stored only with a status or source): none may drift unseen."""
    conn = usage_db
    try:
        conn.execute(
            "INSERT INTO sessions (id, source, started_at, model, input_tokens, output_tokens, cache_read_tokens, "
            "cache_write_tokens, reasoning_tokens, api_call_count, estimated_cost_usd, actual_cost_usd, cost_status, "
            "cost_source) VALUES ('chat', 'webui', ?, 'test/model', 10, 20, 30, 40, 50, 6, 0.5, 0.25, 'estimated', "
            "'provider')",
            (NOW,),
        )
        copy(conn)
        assert check(conn) is True
        copied = usage_rows(conn)
        conn.execute(f"UPDATE session_model_usage SET {CHANGES[figure]} WHERE session_id = 'chat'")
        assert check(conn) is False
        copy(conn)
        assert (check(conn), usage_rows(conn)) == (True, copied)
    finally:
        conn.rollback()
