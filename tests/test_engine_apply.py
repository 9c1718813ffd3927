"""``engine/apply.py`` on the real hermes_state.SessionDB schema: what it executes for a given plan.

The plans are written by hand, as tables: each says what ``apply_plans``
must leave in ``sessions``, ``messages`` and the record table, and nothing
else (apply decides nothing; ``plan`` and ``transcripts.plan_transcript``
did).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.engine import NOW, desired

from webui_insights.engine.apply import ApplyResult, TranscriptBudget, apply_plans
from webui_insights.engine.hermes import hermes_state
from webui_insights.engine.plan import ChatPlan
from webui_insights.engine.records import ensure_table, read_records
from webui_insights.engine.states import Record
from webui_insights.engine.store import create_state_db
from webui_insights.engine.titles import TitleDecision
from webui_insights.engine.transcripts import EMPTY_CHAIN, TranscriptPlan, chain_end, to_row

MAX_TITLE = 100
# Far in the future / long past: the budget never / always ran out.
NEVER, SPENT = float("inf"), 0.0


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = tmp_path / "state.db"
    create_state_db(path)
    connection = sqlite3.connect(path, isolation_level=None)
    ensure_table(connection)
    yield connection
    connection.close()


def add_session(conn: sqlite3.Connection, session_id: str, **columns: Any) -> None:
    values = {"id": session_id, "source": "webui", "started_at": NOW - 10, **columns}
    names = ", ".join(values)
    conn.execute(f"INSERT INTO sessions ({names}) VALUES ({', '.join('?' * len(values))})", tuple(values.values()))


def add_messages(conn: sqlite3.Connection, session_id: str, *texts: str) -> list[int]:
    ids = []
    for n, text in enumerate(texts):
        role = "user" if n % 2 == 0 else "assistant"
        cursor = conn.execute(
            "INSERT INTO messages (session_id, role, content, timestamp) VALUES (?, ?, ?, ?)",
            (session_id, role, text, NOW + n),
        )
        ids.append(int(cursor.lastrowid or 0))
    return ids


def contents(conn: sqlite3.Connection, session_id: str) -> list[str]:
    return [c for (c,) in conn.execute("SELECT content FROM messages WHERE session_id = ? ORDER BY id", (session_id,))]


def session(conn: sqlite3.Connection, session_id: str, *columns: str) -> tuple[Any, ...] | None:
    return conn.execute(f"SELECT {', '.join(columns)} FROM sessions WHERE id = ?", (session_id,)).fetchone()


def talk(*texts: str) -> tuple[dict[str, Any], ...]:
    """A WebUI conversation: user and assistant take turns."""
    return tuple({"role": "user" if n % 2 == 0 else "assistant", "content": t} for n, t in enumerate(texts))


def apply(
    conn: sqlite3.Connection,
    *plans: ChatPlan,
    records: dict[str, Record] | None = None,
    budget: TranscriptBudget | None = None,
) -> ApplyResult:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = apply_plans(conn, plans, records or {}, now=NOW, max_title_length=MAX_TITLE, transcripts=budget)
    finally:
        conn.execute("COMMIT")
    return result


# ------------------------------------------------------------------ rows


@dataclass
class RowCase:
    name: str
    plan: dict[str, Any]
    before: dict[str, Any] | None  # the chat's row before (None: none)
    after: dict[str, Any]  # columns of the chat's row after
    rows_written: int
    title_problems: list[str] = field(default_factory=list)


NEW_ROW = {
    "id": "chat1",
    "source": "webui",
    "model": "m",
    "billing_provider": None,
    "started_at": NOW - 100,
    "ended_at": NOW - 1,
    "end_reason": "webui_session",
    "input_tokens": 10,
    "output_tokens": 5,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "reasoning_tokens": 0,
    "estimated_cost_usd": 0.5,
    "api_call_count": 1,
    "message_count": 2,
    "tool_call_count": 0,
}

ROW_CASES = [
    RowCase(
        "insert with its title",
        {"outcome": "created", "insert": dict(NEW_ROW), "title": TitleDecision("write", "Hello")},
        None,
        {"title": "Hello", "input_tokens": 10, "message_count": 2, "model": "m"},
        1,
    ),
    RowCase(
        "insert whose title another session holds gets the first collision name",
        {"outcome": "created", "insert": dict(NEW_ROW), "title": TitleDecision("write", "Taken")},
        None,
        {"title": "Taken (WebUI)"},
        1,
    ),
    RowCase(
        "update sets exactly the planned columns",
        {"outcome": "updated", "update": {"input_tokens": 40, "model": "n"}},
        {"input_tokens": 10, "output_tokens": 5, "model": "m"},
        {"input_tokens": 40, "output_tokens": 5, "model": "n"},
        1,
    ),
    RowCase(
        "add grows hermes-agent's own totals, a NULL counting as 0",
        {"outcome": "updated", "owner": "hermes", "add": {"input_tokens": 7, "reasoning_tokens": 3}},
        {"input_tokens": 10, "reasoning_tokens": None},
        {"input_tokens": 17, "reasoning_tokens": 3},
        1,
    ),
    RowCase(
        "a title alone is a row written",
        {"outcome": "updated", "title": TitleDecision("write", "Renamed")},
        {"title": "Old"},
        {"title": "Renamed"},
        1,
    ),
    RowCase(
        "a refused title writes nothing and says why",
        {"outcome": "unchanged", "title": TitleDecision("refused", "x", "too long")},
        {"title": "Old"},
        {"title": "Old"},
        0,
        ["title too long"],
    ),
    RowCase(
        "nothing planned, nothing written",
        {"outcome": "unchanged"},
        {"input_tokens": 10},
        {"input_tokens": 10},
        0,
    ),
]


@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: c.name)
def test_apply_executes_a_rows_plan_and_nothing_else(conn: sqlite3.Connection, case: RowCase) -> None:
    add_session(conn, "other", title="Taken", input_tokens=99)
    if case.before is not None:
        add_session(conn, "chat1", **case.before)
    fields = dict(case.plan)
    plan = ChatPlan("chat1", fields.pop("outcome"), owner=fields.pop("owner", "mirror"), **fields)
    result = apply(conn, plan)
    assert session(conn, "chat1", *case.after) == tuple(case.after.values())
    assert session(conn, "other", "title", "input_tokens") == ("Taken", 99)
    assert result.rows_written == case.rows_written
    assert [why for _, why in result.title_problems] == case.title_problems


def test_a_chats_record_holds_its_planned_changes_and_the_name_it_got(conn: sqlite3.Connection) -> None:
    add_session(conn, "other", title="Taken")
    plan = ChatPlan(
        "chat1",
        "created",
        owner="mirror",
        insert=dict(NEW_ROW),
        title=TitleDecision("write", "Taken"),
        record={"owner": "mirror"},
    )
    result = apply(conn, plan)
    record = read_records(conn, ["chat1"])["chat1"]
    assert (record.owner, record.title_base, record.title_written) == ("mirror", "Taken", "Taken (WebUI)")
    assert result.records_written == 1


# ------------------------------------------------------------------ messages


def mirror_chat(
    transcript: TranscriptPlan, messages: tuple[dict[str, Any], ...], outcome: str = "unchanged"
) -> ChatPlan:
    chat = desired(transcript.session_id, transcript=messages)
    return ChatPlan(transcript.session_id, outcome, owner="mirror", desired=chat, transcript=transcript)


def chain_of(*texts: str) -> str:
    return chain_end(to_row(m) for m in talk(*texts))


@dataclass
class MessageCase:
    name: str
    stored: tuple[str, ...]  # the chat's messages before
    plan: dict[str, Any]  # TranscriptPlan fields; "delete": indexes into ``stored`` (newest first)
    deadline: float
    after: list[str]
    record: tuple[int, str | None] | None  # (transcript_count, transcript_chain); None: no record
    finished: bool


ALL = ["q1", "a1", "q2", "a2"]
W = talk(*ALL)

MESSAGE_CASES = [
    MessageCase(
        "append after the kept rows",
        ("q1", "a1"),
        {"kind": "mirror", "messages": W, "keep": 2, "base": chain_of("q1", "a1")},
        NEVER,
        ALL,
        (4, chain_of(*ALL)),
        True,
    ),
    MessageCase(
        "rewrite: the old tail deleted, then the WebUI's appended",
        ("q1", "old", "old2"),
        {"kind": "mirror", "messages": W, "keep": 1, "base": chain_of("q1"), "delete": (2, 1), "bounded": False},
        SPENT,
        ALL,
        (4, chain_of(*ALL)),
        True,
    ),
    MessageCase(
        "nothing to do: the record's change alone",
        ("q1", "a1", "q2", "a2"),
        {
            "kind": "mirror",
            "messages": W,
            "keep": 4,
            "base": chain_of(*ALL),
            "record": {"transcript_count": 4, "transcript_chain": "x"},
        },
        NEVER,
        ALL,
        (4, "x"),
        True,
    ),
    MessageCase(
        "hermes-agent writes the chat: nothing written",
        ("q1", "a1"),
        {"kind": "left"},
        NEVER,
        ["q1", "a1"],
        None,
        True,
    ),
]


@pytest.mark.parametrize("case", MESSAGE_CASES, ids=lambda c: c.name)
def test_apply_executes_a_transcript_plan(conn: sqlite3.Connection, case: MessageCase) -> None:
    add_session(conn, "chat1")
    ids = add_messages(conn, "chat1", *case.stored)
    fields = dict(case.plan)
    fields["delete"] = tuple(ids[i] for i in fields.get("delete", ()))
    transcript = TranscriptPlan("chat1", **fields)
    result = apply(conn, mirror_chat(transcript, W), budget=TranscriptBudget(case.deadline, db=None))
    assert contents(conn, "chat1") == case.after
    record = read_records(conn, ["chat1"]).get("chat1")
    assert (None if record is None else (record.transcript_count, record.transcript_chain)) == case.record
    assert (result.unfinished == []) == case.finished


def test_an_append_stops_after_a_chunk_once_the_budget_is_spent(conn: sqlite3.Connection) -> None:
    add_session(conn, "chat1")
    long = talk(*(f"m{n}" for n in range(50)))
    transcript = TranscriptPlan("chat1", "mirror", long, 0, EMPTY_CHAIN)
    result = apply(conn, mirror_chat(transcript, long), budget=TranscriptBudget(SPENT, db=None))
    written = contents(conn, "chat1")
    assert written == [f"m{n}" for n in range(20)]  # one chunk: the first chat of a transaction always moves
    record = read_records(conn, ["chat1"])["chat1"]
    assert (record.transcript_count, record.transcript_chain) == (20, chain_of(*written))
    assert result.unfinished == ["chat1"] and result.transcripts[0].written == 20


def test_a_rewrite_cut_short_leaves_a_prefix_of_the_old_rows_and_says_so(conn: sqlite3.Connection) -> None:
    add_session(conn, "chat1")
    old = [f"old{n}" for n in range(300)]
    ids = add_messages(conn, "chat1", *old)
    transcript = TranscriptPlan("chat1", "mirror", talk("new"), 0, EMPTY_CHAIN, tuple(reversed(ids)), bounded=True)
    result = apply(conn, mirror_chat(transcript, talk("new")), budget=TranscriptBudget(SPENT, db=None))
    assert contents(conn, "chat1") == old[:280]
    record = read_records(conn, ["chat1"])["chat1"]
    assert (record.transcript_count, record.transcript_chain) == (280, f"0:{EMPTY_CHAIN}")
    assert result.unfinished == ["chat1"]


def test_a_second_chat_waits_once_the_budget_is_spent(conn: sqlite3.Connection) -> None:
    plans = []
    for sid in ("chat1", "chat2"):
        add_session(conn, sid)
        plans.append(mirror_chat(TranscriptPlan(sid, "mirror", W, 0, EMPTY_CHAIN), W))
    result = apply(conn, *plans, budget=TranscriptBudget(SPENT, db=None))
    assert (contents(conn, "chat1"), contents(conn, "chat2")) == (["q1", "a1", "q2", "a2"], [])
    assert result.unfinished == ["chat2"]
    assert read_records(conn, ["chat2"]) == {}


def test_a_hand_over_removes_the_duplicates_and_their_counts(conn: sqlite3.Connection) -> None:
    add_session(conn, "chat1", message_count=6, tool_call_count=3)
    ids = add_messages(conn, "chat1", "q1", "a1", "q1", "a1")
    chat = desired("chat1", transcript=W)
    transcript = TranscriptPlan(
        "chat1",
        "hand_over",
        delete=tuple(ids[:2]),
        subtract=(2, 1),
        record={"transcript_count": 0, "transcript_chain": None},
    )
    plan = ChatPlan("chat1", "updated", owner="hermes", desired=chat, transcript=transcript)
    apply(conn, plan, budget=TranscriptBudget(NEVER, db=None))
    assert contents(conn, "chat1") == ["q1", "a1"]
    assert session(conn, "chat1", "message_count", "tool_call_count") == (4, 2)
    record = read_records(conn, ["chat1"])["chat1"]
    assert (record.transcript_count, record.transcript_chain) == (0, None)


def test_a_chat_whose_messages_wait_still_takes_the_transactions_first_turn(conn: sqlite3.Connection) -> None:
    add_session(conn, "chat1")
    add_session(conn, "chat2")
    waiting = ChatPlan("chat1", "updated", owner="hermes", desired=desired("chat1", transcript=W))
    waiting.transcript = TranscriptPlan("chat1", "left")
    mirrored = mirror_chat(TranscriptPlan("chat2", "mirror", W, 0, EMPTY_CHAIN), W)
    result = apply(conn, waiting, mirrored, budget=TranscriptBudget(SPENT, db=None))
    assert contents(conn, "chat2") == [] and result.unfinished == ["chat2"]


def test_without_a_budget_no_message_is_written(conn: sqlite3.Connection) -> None:
    add_session(conn, "chat1")
    apply(conn, mirror_chat(TranscriptPlan("chat1", "mirror", W, 0, EMPTY_CHAIN), W))
    assert contents(conn, "chat1") == []


def test_rows_go_through_sessiondbs_own_encoder(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = hermes_state().SessionDB(db_path=path)
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        ensure_table(conn)
        add_session(conn, "chat1")
        messages = ({"role": "assistant", "content": "x", "tool_calls": [{"id": "t1"}]},)
        transcript = TranscriptPlan("chat1", "mirror", messages, 0, EMPTY_CHAIN)
        apply(conn, mirror_chat(transcript, messages), budget=TranscriptBudget(time.perf_counter() + 5, db=db))
        stored = db.get_messages("chat1")
        assert [(m["role"], m["content"]) for m in stored] == [("assistant", "x")]
        assert stored[0]["tool_calls"] == [{"id": "t1"}]
        conn.close()
    finally:
        db.close()
