"""engine/rows.py on the real SessionDB: what a ``sessions`` row reads as, and what tells hermes-agent's writes apart.

The rule (``plan``) decides ownership and spend from these values alone, so
each one read wrong is a row written wrong: a hermes-agent row mistaken for
this layer's is overwritten, a value another writer damaged is trusted.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.db import NEEDS_ACTIVE, NEEDS_USAGE, tamper

from webui_insights.engine.hermes import hermes_state
from webui_insights.engine.rows import read_rows
from webui_insights.engine.schema import LAST_ACTIVITY, TITLE_SOURCE
from webui_insights.engine.states import Desired, Row, Version
from webui_insights.engine.store import IN_CHUNK, StateStore, create_state_db, marks, open_read_only
from webui_insights.engine.sync import sync

NOW = time.time()


@pytest.fixture
def hermes(db: Path) -> Iterator[Any]:
    """hermes-agent's own handle on the database (what its agent and gateway write through)."""
    handle = hermes_state().SessionDB(db_path=db)
    yield handle
    handle.close()


def read(db: Path, ids: list[str], **kwargs: Any) -> dict[str, Row]:
    conn = open_read_only(db)
    try:
        return read_rows(conn, ids, **kwargs)
    finally:
        conn.close()


def mirror(db: Path, session_id: str, **fields: Any) -> None:
    """This layer writes the chat's row (one sync, as the writer or a backfill does)."""
    values: dict[str, Any] = {
        "title": "A chat",
        "model": "test/model",
        "input_tokens": 120,
        "output_tokens": 30,
        "message_count": 2,
        "created_at": NOW - 3600,
        "last_active_at": NOW - 60,
    }
    values.update(fields)
    store = StateStore(db)
    try:
        sync(store, [Desired.of(session_id, Version(NOW - 60, NOW - 60), **values)])
    finally:
        store.close()


# ---------------------------------------------------------------- which rows


def test_only_the_rows_that_exist_are_read_keyed_by_their_id(db: Path, hermes: Any) -> None:
    """A missing id is a chat with no row yet: the rule inserts it, so it must not appear as an empty row."""
    hermes.create_session("a", source="webui", model="m1")
    hermes.create_session("b", source="cli")
    rows = read(db, ["a", "missing", "b"])
    assert set(rows) == {"a", "b"}
    assert (rows["a"].source, rows["a"].model, rows["b"].source) == ("webui", "m1", "cli")


def test_no_ids_read_nothing(db: Path) -> None:
    assert read(db, []) == {}


def test_a_write_transaction_and_a_read_only_connection_read_the_same(db: Path, hermes: Any) -> None:
    """sync reads inside its write transaction; verify and dry runs read-only: both must see the same rows."""
    hermes.create_session("a", source="webui", model_config={"max_iterations": 90})
    hermes.append_message("a", role="user", content="hi")
    mirror(db, "b")
    store = StateStore(db)
    try:
        in_transaction = store.run(lambda conn: read_rows(conn, ["a", "b"]))
    finally:
        store.close()
    assert in_transaction == read(db, ["a", "b"])
    assert set(in_transaction) == {"a", "b"}


def test_ids_beyond_one_query_are_all_read(db: Path) -> None:
    """Backfill reads thousands of chats at once: a chat past the first chunk must not read as missing."""
    total = IN_CHUNK * 2 + 7
    ids = [f"chat{n:05d}" for n in range(total)]
    present = ids[::3]
    conn = sqlite3.connect(db)
    try:
        conn.executemany(
            "INSERT INTO sessions (id, source, started_at, input_tokens) VALUES (?, 'webui', ?, ?)",
            [(sid, NOW, n) for n, sid in enumerate(present)],
        )
        conn.executemany(
            "INSERT INTO messages (session_id, role, content, timestamp) VALUES (?, 'user', 'x', ?)",
            [(sid, NOW) for sid in present[-3:]],
        )
        conn.commit()
    finally:
        conn.close()
    rows = read(db, ids)
    assert set(rows) == set(present)
    assert [rows[sid].input_tokens for sid in present] == list(range(len(present)))
    assert [rows[sid].live_messages for sid in present[-4:]] == [0, 1, 1, 1]


# ------------------------------------------------------------- hermes' marks


def _created_with_model_config(hermes: Any, db: Path) -> None:
    hermes.create_session("chat", source="webui", model_config={"max_iterations": 90})


def _created_with_a_system_prompt(hermes: Any, db: Path) -> None:
    hermes.create_session("chat", source="webui")
    hermes.update_system_prompt("chat", "You are a helpful assistant.")


def _bare_row(hermes: Any, db: Path) -> None:
    hermes.create_session("chat", source="webui")


def _bookkeeping_only(hermes: Any, db: Path) -> None:
    hermes.create_session("chat", source="webui")
    bookkeeping = '{"_delegate_from": "x", "_branched_from": "y"}'
    tamper(db, "UPDATE sessions SET model_config = ? WHERE id = 'chat'", bookkeeping)


def _bookkeeping_and_a_setting(hermes: Any, db: Path) -> None:
    hermes.create_session("chat", source="webui")
    config = '{"_branched_from": "y", "max_iterations": 9}'
    tamper(db, "UPDATE sessions SET model_config = ? WHERE id = 'chat'", config)


def _not_json(hermes: Any, db: Path) -> None:
    hermes.create_session("chat", source="webui")
    tamper(db, "UPDATE sessions SET model_config = 'max_iterations=90' WHERE id = 'chat'")


def _this_layers_row(hermes: Any, db: Path) -> None:
    mirror(db, "chat")


@pytest.mark.parametrize(
    ("make", "marked"),
    [
        pytest.param(_created_with_model_config, True, id="hermes-agent created it with the agent's model_config"),
        pytest.param(_created_with_a_system_prompt, True, id="hermes-agent stored the chat's system prompt"),
        pytest.param(_bookkeeping_and_a_setting, True, id="a real setting beside hermes' bookkeeping keys is a mark"),
        pytest.param(_bare_row, False, id="a row with neither carries no mark"),
        pytest.param(_bookkeeping_only, False, id="hermes' v16 migration's bookkeeping keys alone are no mark"),
        pytest.param(_not_json, False, id="a model_config that is not JSON is no mark"),
        pytest.param(_this_layers_row, False, id="the row this layer wrote carries no mark"),
    ],
)
def test_agent_marks(make: Callable[[Any, Path], None], marked: bool, db: Path, hermes: Any) -> None:
    """The marks are how a row hermes-agent writes is told from this layer's: a wrong one hands the row over."""
    make(hermes, db)
    assert read(db, ["chat"])["chat"].agent_marks is marked


# ------------------------------------------------------------- live messages


@NEEDS_ACTIVE
def test_live_messages_leave_out_the_superseded_ones(db: Path, hermes: Any) -> None:
    """hermes ≥ 0.18 keeps superseded messages (active = 0): they are no message the chat has."""
    hermes.create_session("chat", source="webui")
    hermes.create_session("quiet", source="webui")
    for n in range(3):
        hermes.append_message("chat", role="user", content=f"m{n}")
    tamper(db, "UPDATE messages SET active = 0 WHERE id = (SELECT MIN(id) FROM messages WHERE session_id = 'chat')")
    rows = read(db, ["chat", "quiet"])
    assert (rows["chat"].live_messages, rows["quiet"].live_messages) == (2, 0)
    assert read(db, ["chat"], active=False)["chat"].live_messages == 3  # a database without the column


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("column", "stored", "field", "reads_as"),
    [
        pytest.param("title", b"\x00t", "title", None, id="a title that is not text reads as no title"),
        pytest.param("model", b"m", "model", None, id="a model that is not text reads as no model"),
        pytest.param("source", b"webui", "source", "b'webui'", id="a source that is not text is never webui"),
        pytest.param("started_at", "yesterday", "started_at", None, id="a start that is no number reads as unknown"),
        pytest.param("ended_at", b"\x01", "ended_at", None, id="an end that is no number reads as unknown"),
        pytest.param(
            "estimated_cost_usd", math.inf, "estimated_cost_usd", None, id="an infinite cost reads as unknown"
        ),
        pytest.param("input_tokens", "many", "input_tokens", 0, id="a token count that is text reads as zero"),
        pytest.param("message_count", 2.5, "message_count", 0, id="a fractional message count reads as zero"),
    ],
)
def test_a_value_not_of_its_columns_type_reads_as_unknown_and_is_named(
    column: str, stored: Any, field: str, reads_as: Any, db: Path, hermes: Any
) -> None:
    """Another writer's damage must neither be trusted nor pass unnoticed: the plan repairs what it names."""
    hermes.create_session("chat", source="webui", model="m")
    tamper(db, f"UPDATE sessions SET {column} = ? WHERE id = 'chat'", stored)
    row = read(db, ["chat"])["chat"]
    assert getattr(row, field) == reads_as
    assert row.bad_values == (column,)


@pytest.mark.parametrize(
    ("column", "field", "reads_as"),
    [
        pytest.param("input_tokens", "input_tokens", 0, id="a count never written reads as zero"),
        pytest.param("estimated_cost_usd", "estimated_cost_usd", None, id="a cost never written reads as unknown"),
        pytest.param("title", "title", None, id="a title never written reads as none"),
    ],
)
def test_null_is_no_bad_value(column: str, field: str, reads_as: Any, db: Path, hermes: Any) -> None:
    """NULL is what a fresh row has: counting it as damage would report every row hermes creates."""
    hermes.create_session("chat", source="webui")
    tamper(db, f"UPDATE sessions SET {column} = NULL WHERE id = 'chat'")
    row = read(db, ["chat"])["chat"]
    assert (getattr(row, field), row.bad_values) == (reads_as, ())


# The columns read and, for the property below, the type the rule reads each as.
_TEXT = ("title", "model", "billing_provider", "end_reason", TITLE_SOURCE)
_REAL = ("ended_at", "estimated_cost_usd", LAST_ACTIVITY)
_COUNT = (
    "message_count",
    "tool_call_count",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "api_call_count",
)
_NOT_NULL = ("source", "started_at")
_ANY_VALUE = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
    st.binary(max_size=4),
)


@pytest.fixture(scope="module")
def newest_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    """hermes' real schema with upstream's newer columns added (one database for every example)."""
    path = tmp_path_factory.mktemp("rows") / "state.db"
    create_state_db(path)
    conn = sqlite3.connect(path)
    conn.execute(f"ALTER TABLE sessions ADD COLUMN {LAST_ACTIVITY} REAL")
    conn.execute(f"ALTER TABLE sessions ADD COLUMN {TITLE_SOURCE} TEXT")
    conn.commit()
    yield conn
    conn.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.fixed_dictionaries(
        {},
        optional={
            **{name: _ANY_VALUE for name in (*_TEXT, *_REAL, *_COUNT)},
            **{name: _ANY_VALUE.filter(lambda v: v is not None) for name in _NOT_NULL},
        },
    )
)
def test_every_value_reads_as_stored_or_is_named(newest_schema: sqlite3.Connection, values: dict[str, Any]) -> None:
    """Whatever another writer stored, each field has the type the rule reads, and is named exactly when altered."""
    conn, sid = newest_schema, "fuzzed"
    values = {"source": "webui", "started_at": NOW, **values}
    names = ", ".join(values)
    try:  # each example in a transaction rolled back: titles are unique
        conn.execute(f"INSERT INTO sessions (id, {names}) VALUES (?, {marks(len(values))})", [sid, *values.values()])
        raw = conn.execute(f"SELECT {names} FROM sessions WHERE id = ?", (sid,)).fetchone()
        stored = dict(zip(values, raw, strict=True))
        row = read_rows(conn, [sid])[sid]
    finally:
        conn.rollback()
    for name, raw in stored.items():
        read_as = getattr(row, name)
        if name in (*_TEXT, "source"):
            assert read_as is None or type(read_as) is str
        elif name in (*_REAL, "started_at"):
            assert read_as is None or (type(read_as) in (int, float) and math.isfinite(read_as))
        else:
            assert type(read_as) is int
        altered = read_as != raw and not (raw is None and name in _COUNT and read_as == 0)
        assert (name in row.bad_values) is altered, (name, raw, read_as)
    assert row.source != "webui" or stored["source"] == "webui"


# ------------------------------------------------------------ newer schemas


def test_the_newer_columns_read_as_none_where_the_database_has_none(db: Path, hermes: Any) -> None:
    """hermes-agent 0.19.0 has neither column: reading them must not fail there."""
    hermes.create_session("chat", source="webui")
    row = read(db, ["chat"])["chat"]
    assert (row.last_activity_at, row.title_source) == (None, None)


def test_the_newer_columns_are_read_where_the_database_has_them(db: Path, hermes: Any) -> None:
    """Upstream's pickers sort by last_activity_at and keep a user's title by title_source: the rule compares both."""
    hermes.create_session("chat", source="webui")
    tamper(db, f"ALTER TABLE sessions ADD COLUMN {LAST_ACTIVITY} REAL")
    tamper(db, f"ALTER TABLE sessions ADD COLUMN {TITLE_SOURCE} TEXT")
    tamper(db, f"UPDATE sessions SET {LAST_ACTIVITY} = ?, {TITLE_SOURCE} = 'llm' WHERE id = 'chat'", NOW - 5)
    row = read(db, ["chat"])["chat"]
    assert (row.last_activity_at, row.title_source) == (NOW - 5, "llm")
    # What the caller's probe found decides: a transaction that found neither reads neither.
    row = read(db, ["chat"], columns=frozenset())["chat"]
    assert (row.last_activity_at, row.title_source) == (None, None)


# ------------------------------------------------------------ usage in step


def test_usage_in_step_is_unknown_without_a_usage_table(db: Path) -> None:
    """hermes-agent before 0.19.0 keeps no per-model usage: nothing to keep in step there."""
    mirror(db, "chat")
    assert read(db, ["chat"], columns=frozenset())["chat"].usage_in_step is None


@NEEDS_USAGE
def test_usage_rows_this_layer_wrote_are_in_step_until_someone_changes_them(db: Path) -> None:
    """insights reads the usage row first: one that no longer equals the totals must be seen, to be rewritten."""
    mirror(db, "chat")
    assert read(db, ["chat"])["chat"].usage_in_step is True
    tamper(db, "UPDATE session_model_usage SET input_tokens = input_tokens + 1 WHERE session_id = 'chat'")
    assert read(db, ["chat"])["chat"].usage_in_step is False


@NEEDS_USAGE
def test_a_chat_without_usage_is_in_step_only_without_usage_rows(db: Path, hermes: Any) -> None:
    """A chat that spent nothing has no usage row, as hermes' own seed leaves it: one left over is out of step."""
    hermes.create_session("chat", source="webui")
    assert read(db, ["chat"])["chat"].usage_in_step is True
    tamper(
        db,
        "INSERT INTO session_model_usage (session_id, model, task, input_tokens) VALUES ('chat', 'old/model', '', 5)",
    )
    assert read(db, ["chat"])["chat"].usage_in_step is False


@NEEDS_USAGE
def test_a_chat_with_usage_but_no_usage_row_is_out_of_step(db: Path) -> None:
    """Totals without their usage row: insights would count them only as the residual on the session's model."""
    mirror(db, "chat")
    tamper(db, "DELETE FROM session_model_usage WHERE session_id = 'chat'")
    assert read(db, ["chat"])["chat"].usage_in_step is False


@NEEDS_USAGE
def test_a_usage_row_of_another_task_leaves_the_main_loop_in_step(db: Path) -> None:
    """hermes' auxiliary tasks (titling, compression) keep rows of their own: they are not this layer's copy."""
    mirror(db, "chat")
    tamper(
        db,
        "INSERT INTO session_model_usage (session_id, model, task, input_tokens) VALUES ('chat', 'aux', 'title', 9)",
    )
    assert read(db, ["chat"])["chat"].usage_in_step is True
