"""The engine's writes on upstream hermes-agent main's state.db, checked at the schema level.

Upstream main (0.21.x, ``SCHEMA_VERSION = 30``) needs Python 3.14, which
cannot run here, so none of its code runs: the database is built from its
DDL (``tests/data/upstream_schema``, pinned commit in SOURCE.md), the
engine writes to it through the installed ``SessionDB`` (which leaves that
schema as it is), and upstream's readers are reproduced as SQL from what
ARCHITECTURE.md (*What upstream hermes-agent reads*) says they do:
``hermes insights`` (sessions by ``started_at``, usage rows, then the
positive residual), ``hermes sessions list`` (``started_at``), the pickers
and maintenance sweeps (freshest of ``last_activity_at``, the newest message,
else ``started_at``), and the listing filters (``archived = 0``,
``hidden = 0``). What this proves and what it does not: compat/RESULTS.md.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from support.engine import desired, run

from webui_insights.engine.hermes import Capabilities
from webui_insights.engine.schema import LAST_ACTIVITY, MODEL_USAGE, TITLE_SOURCE, probe
from webui_insights.engine.store import open_read_only
from webui_insights.engine.sync import check

UPSTREAM = Path(__file__).parent / "data" / "upstream_schema"
SCHEMA = (UPSTREAM / "schema_v30.sql", UPSTREAM / "schema_v30_fts.sql")
NOW = time.time()
DAY = 86400.0
TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "api_call_count")
# hermes' tables this layer writes (and its own); every other table must stay as it was.
WRITTEN = {"sessions", "session_model_usage", "messages", "webui_insights_chats"}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A state.db as a fresh upstream install makes it: its DDL, its full-text index, its schema_version row (30)."""
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    try:
        for script in SCHEMA:
            conn.executescript(script.read_text(encoding="utf-8"))
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(30,)]
    finally:
        conn.close()
    return path


def chat(session_id: str, *, created_days_ago: float, active_days_ago: float, **fields: Any) -> Any:
    """A WebUI chat created and last active that many days ago."""
    at = NOW - active_days_ago * DAY
    return desired(session_id, at=at, created_at=NOW - created_days_ago * DAY, **fields)


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    return conn


def session(path: Path, session_id: str) -> dict[str, Any]:
    conn = connect(path)
    try:
        found = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return dict(found)
    finally:
        conn.close()


def usage_rows(path: Path, session_id: str) -> list[dict[str, Any]]:
    conn = connect(path)
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM session_model_usage WHERE session_id = ?", (session_id,))]
    finally:
        conn.close()


# --- upstream's readers, reproduced as SQL (see the module docstring) --------------------------


def insights(path: Path, days: float, source: str = "webui") -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """``hermes insights``' per-model table and overview: usage rows first, then each session's positive residual.

    A usage row's cost counts as stored only with a cost_status or cost_source
    (else upstream re-prices its tokens): such rows are reported as cost None.
    """
    conn = connect(path)
    try:
        cutoff = NOW - days * DAY
        sessions = [
            dict(r)
            for r in conn.execute("SELECT * FROM sessions WHERE started_at >= ? AND source = ?", (cutoff, source))
        ]
        usage = conn.execute(
            "SELECT u.* FROM session_model_usage u JOIN sessions s ON s.id = u.session_id "
            "WHERE s.started_at >= ? AND s.source = ?",
            (cutoff, source),
        ).fetchall()
    finally:
        conn.close()
    models: dict[str, dict[str, Any]] = defaultdict(lambda: dict.fromkeys((*TOKENS, "cost"), 0))
    attributed: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys((*TOKENS, "cost"), 0))
    for u in usage:
        entry, seen = models[u["model"]], attributed[u["session_id"]]
        for key in TOKENS:
            entry[key] += u[key]
            seen[key] += u[key]
        stored = u["cost_status"] is not None or u["cost_source"] is not None
        entry["cost"] = None if not stored or entry["cost"] is None else entry["cost"] + u["estimated_cost_usd"]
        seen["cost"] += u["estimated_cost_usd"]
    for s in sessions:
        entry, seen = models[s["model"] or "unknown"], attributed[s["id"]]
        for key in TOKENS:
            entry[key] += max(0, (s[key] or 0) - seen[key])
        if entry["cost"] is not None:
            entry["cost"] += max(0.0, (s["estimated_cost_usd"] or 0.0) - seen["cost"])
    models = {m: e for m, e in models.items() if any(e[k] for k in TOKENS) or e["cost"]}
    overview = {key: sum(e[key] for e in models.values()) for key in TOKENS}
    return models, overview


def sessions_list(path: Path) -> list[str]:
    """``hermes sessions list``: newest start first, archived and hidden rows left out."""
    conn = connect(path)
    try:
        found = conn.execute(
            "SELECT id FROM sessions WHERE archived = 0 AND hidden = 0 AND source != 'tool' "
            "ORDER BY started_at DESC, id DESC"
        ).fetchall()
        return [r["id"] for r in found]
    finally:
        conn.close()


def last_active(path: Path) -> dict[str, float]:
    """Each listed row's freshest of last_activity_at and its newest message, else its started_at."""
    conn = connect(path)
    try:
        found = conn.execute(
            "SELECT s.id, s.started_at, s.last_activity_at, "
            "(SELECT MAX(m.timestamp) FROM messages m WHERE m.session_id = s.id) AS newest "
            "FROM sessions s WHERE s.archived = 0 AND s.hidden = 0"
        ).fetchall()
    finally:
        conn.close()
    fresher = {r["id"]: [v for v in (r["last_activity_at"], r["newest"]) if v is not None] for r in found}
    return {r["id"]: max(fresher[r["id"]]) if fresher[r["id"]] else r["started_at"] for r in found}


def picker(path: Path) -> list[str]:
    """The session pickers' order: most recently active first."""
    active = last_active(path)
    started = {sid: session(path, sid)["started_at"] for sid in active}
    return sorted(active, key=lambda sid: (active[sid], started[sid], sid), reverse=True)


def recent_candidates(path: Path, limit: int) -> list[str]:
    """The session-search browse preselect: by COALESCE(last_activity_at, started_at), messages not looked at."""
    conn = connect(path)
    try:
        found = conn.execute(
            "SELECT id FROM sessions WHERE archived = 0 AND hidden = 0 "
            "ORDER BY COALESCE(last_activity_at, started_at) DESC, started_at DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [r["id"] for r in found]
    finally:
        conn.close()


def dump(path: Path, *, skip: set[str]) -> dict[str, Any]:
    """Every table's rows (but ``skip``'s) and the schema of everything but this layer's own table."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        found: dict[str, Any] = {
            "schema": conn.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE tbl_name != 'webui_insights_chats' ORDER BY name"
            ).fetchall()
        }
        for table in tables:
            if table not in skip:
                found[table] = sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
        return found
    finally:
        conn.close()


# --- the tests -------------------------------------------------------------------------------


def test_the_database_is_upstreams_v30_and_has_every_column_filled(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert probe(conn) == {LAST_ACTIVITY, TITLE_SOURCE, MODEL_USAGE}
    finally:
        conn.close()
    run(db, chat("c1", created_days_ago=1, active_days_ago=0.5))
    conn = sqlite3.connect(db)
    try:
        # The installed SessionDB opened it and left upstream's schema as it was.
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(30,)]
    finally:
        conn.close()


def test_writes_are_valid_and_hermes_other_tables_stay_as_they_were(db: Path) -> None:
    conn = sqlite3.connect(db)
    with conn:  # what hermes itself holds: settings, a prompt, a CLI session with its usage and messages
        conn.execute("INSERT INTO state_meta (key, value) VALUES ('fts_storage_version', '3')")
        conn.execute("INSERT INTO system_prompts (hash, prompt) VALUES ('h1', 'You are hermes.')")
        conn.execute(
            "INSERT INTO sessions (id, source, model, started_at, input_tokens, title, title_source, last_activity_at) "
            "VALUES ('cli1', 'cli', 'm/cli', ?, 500, 'A CLI session', 'llm', ?)",
            (NOW - 2 * DAY, NOW - DAY),
        )
        conn.execute(
            "INSERT INTO session_model_usage (session_id, model, input_tokens, cost_status) "
            "VALUES ('cli1', 'm/cli', 500, 'estimated')"
        )
        conn.execute(
            "INSERT INTO messages (session_id, role, content, timestamp) VALUES ('cli1', 'user', 'hi', ?)", (NOW,)
        )
    conn.close()
    before = dump(db, skip=WRITTEN)
    cli_before = (session(db, "cli1"), usage_rows(db, "cli1"))

    run(db, chat("new", created_days_ago=3, active_days_ago=2, title="New chat"))
    run(db, chat("turns", created_days_ago=2, active_days_ago=1, title="More turns"))
    run(
        db,
        chat("turns", created_days_ago=2, active_days_ago=0.5, title="More turns", input_tokens=5000, message_count=6),
    )
    run(
        db,
        chat("retry", created_days_ago=1, active_days_ago=0.4, title="Retried", input_tokens=3000, output_tokens=900),
    )
    run(
        db, chat("retry", created_days_ago=1, active_days_ago=0.3, title="Retried", input_tokens=400, output_tokens=200)
    )
    run(db, chat("renamed", created_days_ago=1, active_days_ago=0.2, title="Before"))
    run(db, chat("renamed", created_days_ago=1, active_days_ago=0.1, title="After"))

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []  # no usage row without its session
        assert conn.execute("SELECT COUNT(*) FROM sessions WHERE source = 'webui'").fetchone() == (4,)
    finally:
        conn.close()
    assert dump(db, skip=WRITTEN) == before
    assert (session(db, "cli1"), usage_rows(db, "cli1")) == cli_before
    for sid in ("new", "turns", "retry", "renamed"):
        row = session(db, sid)
        # Left to hermes and its users: never archived, pinned or hidden by the mirror.
        assert (row["archived"], row["pinned"], row["hidden"]) == (0, 0, 0)
        assert row["last_activity_description"] is None and row["last_activity_provenance"] is None


def test_insights_counts_every_mirrored_chat_at_its_row_totals(db: Path) -> None:
    """session_model_usage: one main-loop row per chat, equal to its totals, whatever they did."""
    run(db, chat("grew", created_days_ago=2, active_days_ago=1, model="m/a"))
    run(db, chat("grew", created_days_ago=2, active_days_ago=0.5, model="m/a", input_tokens=9000, output_tokens=700))
    # A retry: the WebUI's figures go down; the row keeps what was spent, the usage row with it.
    run(db, chat("retry", created_days_ago=1, active_days_ago=0.4, model="m/a", input_tokens=3000, output_tokens=900))
    run(db, chat("retry", created_days_ago=1, active_days_ago=0.3, model="m/a", input_tokens=400, output_tokens=200))
    # Switched model: one row, under the model the row now names.
    run(db, chat("switch", created_days_ago=1, active_days_ago=0.3, model="m/a", input_tokens=800))
    run(db, chat("switch", created_days_ago=1, active_days_ago=0.2, model="m/b", input_tokens=1600))
    # No usage at all: no usage row (as hermes' own seed and delta path), so not in the per-model table.
    run(
        db,
        chat(
            "idle",
            created_days_ago=1,
            active_days_ago=0.2,
            input_tokens=0,
            output_tokens=0,
            cache_read_tokens=0,
            estimated_cost_usd=None,
        ),
    )
    # A total that went down: the host's own bridge wrote larger totals while mirroring was off
    # (absolute, usage rows untouched); the mirror brings the row back down, and the usage row.
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE sessions SET input_tokens = 50000, output_tokens = 5000 WHERE id = 'retry'")
    conn.close()
    run(db, chat("retry", created_days_ago=1, active_days_ago=0.3, model="m/a", input_tokens=400, output_tokens=200))

    models, overview = insights(db, days=30)
    rows = {sid: session(db, sid) for sid in ("grew", "retry", "switch", "idle")}
    assert rows["retry"]["input_tokens"] < 50000  # it did go down
    want: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys((*TOKENS, "cost"), 0))
    for row in rows.values():
        if row["input_tokens"] or row["output_tokens"]:
            for key in TOKENS:
                want[row["model"]][key] += row[key]
            want[row["model"]]["cost"] += row["estimated_cost_usd"] or 0.0
    assert {m: {k: pytest.approx(v) for k, v in e.items()} for m, e in want.items()} == models
    assert overview == {key: sum(row[key] for row in rows.values()) for key in TOKENS}
    for sid, row in rows.items():
        found = usage_rows(db, sid)
        if sid == "idle":
            assert found == []
            continue
        assert len(found) == 1, found
        (usage,) = found
        assert usage["task"] == "" and usage["model"] == row["model"]
        assert {k: usage[k] for k in TOKENS} == {k: row[k] for k in TOKENS}
        assert usage["estimated_cost_usd"] == pytest.approx(row["estimated_cost_usd"])
        assert usage["cost_status"] == "estimated"  # the WebUI's cost, taken as stored


def test_the_usage_rows_of_many_chats_written_together_are_each_its_own(db: Path) -> None:
    """One chunk's usage rows are rewritten by one statement over its ids: each chat still gets its own."""
    first = [
        chat("a", created_days_ago=2, active_days_ago=1, model="m/a", input_tokens=1000),
        chat("b", created_days_ago=2, active_days_ago=1, model="m/a", input_tokens=2000),
        chat("c", created_days_ago=2, active_days_ago=1, model="m/b", input_tokens=3000),
    ]
    run(db, *first)
    later_states = [
        chat("a", created_days_ago=2, active_days_ago=0.5, model="m/a", input_tokens=1500),
        chat("b", created_days_ago=2, active_days_ago=0.5, model="m/c", input_tokens=2500),  # switched model
        chat("c", created_days_ago=2, active_days_ago=1, model="m/b", input_tokens=3000),  # unchanged
        chat(
            "d",
            created_days_ago=1,
            active_days_ago=0.5,
            input_tokens=0,
            output_tokens=0,
            cache_read_tokens=0,
            estimated_cost_usd=None,
        ),  # no usage: no row
        chat("e", created_days_ago=1, active_days_ago=0.5, model="m/a", input_tokens=700),
    ]
    assert run(db, *later_states).transactions == 1
    for sid in ("a", "b", "c", "e"):
        row, found = session(db, sid), usage_rows(db, sid)
        assert [(u["model"], {k: u[k] for k in TOKENS}) for u in found] == [
            (row["model"], {k: row[k] for k in TOKENS})
        ], sid
    assert usage_rows(db, "d") == []


def test_a_usage_row_out_of_step_is_drift_that_verify_reports_and_a_pass_repairs(db: Path) -> None:
    state = chat("c1", created_days_ago=1, active_days_ago=0.5)
    run(db, state)
    conn = sqlite3.connect(db)
    with conn:  # frozen at older figures, as 0.19.0's v20 seed leaves a chat's row
        conn.execute("UPDATE session_model_usage SET input_tokens = 99999 WHERE session_id = 'c1'")
    conn.close()
    ro = open_read_only(db)
    try:
        (plan,) = check(ro, [state], Capabilities.of_installed())
    finally:
        ro.close()
    assert [d.field for d in plan.drift] == ["session_model_usage"]
    assert run(db, state).outcomes == {"updated": 1}
    assert usage_rows(db, "c1")[0]["input_tokens"] == session(db, "c1")["input_tokens"]
    assert run(db, state).outcomes == {"unchanged": 1}


def test_sessions_list_shows_mirrored_chats_by_the_day_they_started(db: Path) -> None:
    run(
        db,
        chat("older", created_days_ago=5, active_days_ago=0.1, title="Older"),
        chat("newer", created_days_ago=1, active_days_ago=0.9, title="Newer"),
    )
    assert sessions_list(db) == ["newer", "older"]
    models, _ = insights(db, days=2)  # insights' window is by started_at too
    assert sum(e["input_tokens"] for e in models.values()) == session(db, "newer")["input_tokens"]


def test_pickers_and_recent_browse_order_mirrored_chats_by_their_last_activity(db: Path) -> None:
    """last_activity_at: a long chat active today is recent, though it started days ago and has no messages."""
    run(
        db,
        chat("long", created_days_ago=10, active_days_ago=0.01, title="Long, active today"),
        chat("short", created_days_ago=1, active_days_ago=0.9, title="Short, idle since yesterday"),
    )
    row = session(db, "long")
    assert row["last_activity_at"] == row["ended_at"] == pytest.approx(NOW - 0.01 * DAY)
    assert picker(db) == ["long", "short"]
    assert recent_candidates(db, limit=1) == ["long"]


def test_a_chat_active_lately_is_not_aged_out_by_the_day_it_started(db: Path) -> None:
    """Auto-prune (ended rows, default 90 days) and the idle archive age a row by its last activity."""
    run(db, chat("kept", created_days_ago=120, active_days_ago=1, title="Started long ago"))
    assert session(db, "kept")["ended_at"] is not None  # ended: prune would consider it
    assert last_active(db)["kept"] >= NOW - 90 * DAY
    assert last_active(db)["kept"] >= NOW - 3 * DAY  # nor idle for the archive sweep's 3 days


def test_titles_the_mirror_writes_carry_user_provenance(db: Path) -> None:
    """title_source 'user': hermes' titler never replaces it (NULL would rank as user too, but says nothing)."""
    run(db, chat("c1", created_days_ago=1, active_days_ago=0.5, title="First name"))
    assert (session(db, "c1")["title"], session(db, "c1")["title_source"]) == ("First name", "user")
    run(db, chat("c1", created_days_ago=1, active_days_ago=0.4, title="Renamed in the WebUI"))
    assert (session(db, "c1")["title"], session(db, "c1")["title_source"]) == ("Renamed in the WebUI", "user")
    # A row titled before the column existed (or by an earlier release): filled on the next pass.
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE sessions SET title_source = NULL WHERE id = 'c1'")
    conn.close()
    run(db, chat("c1", created_days_ago=1, active_days_ago=0.4, title="Renamed in the WebUI"))
    assert session(db, "c1")["title_source"] == "user"
    # A title hermes set itself keeps its provenance: the row is not titled by the mirror.
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE sessions SET title = 'Named by hermes', title_source = 'llm' WHERE id = 'c1'")
    conn.close()
    run(db, chat("c1", created_days_ago=1, active_days_ago=0.3, title="Renamed in the WebUI", message_count=4))
    assert (session(db, "c1")["title"], session(db, "c1")["title_source"]) == ("Named by hermes", "llm")


def test_rows_hermes_agent_writes_get_only_what_it_left_out(db: Path) -> None:
    """A row with hermes-agent's marks: the mirror adds the title (and its provenance), nothing of hermes' own."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO sessions (id, source, model, model_config, started_at, input_tokens, output_tokens, "
            "last_activity_at) VALUES ('h1', 'webui', 'm/h', '{\"max_iterations\": 90}', ?, 700, 70, ?)",
            (NOW - 0.5 * DAY, NOW - 0.2 * DAY),
        )
        conn.execute(
            "INSERT INTO session_model_usage (session_id, model, input_tokens, output_tokens, api_call_count) "
            "VALUES ('h1', 'm/h', 700, 70, 2)"
        )
    conn.close()
    usage_before = usage_rows(db, "h1")
    run(db, chat("h1", created_days_ago=1, active_days_ago=0.1, title="Titled in the WebUI"))
    row = session(db, "h1")
    assert (row["title"], row["title_source"]) == ("Titled in the WebUI", "user")
    assert row["last_activity_at"] == pytest.approx(NOW - 0.2 * DAY)  # hermes' own heartbeat, untouched
    assert (row["input_tokens"], row["output_tokens"]) == (700, 70)
    assert usage_rows(db, "h1") == usage_before
