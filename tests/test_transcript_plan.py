"""``transcripts.plan_transcript``: what a chat's messages need, decided without writing anything.

Table tests over a stand-in for the stored messages that counts what
planning read: the common case (an append the record vouches for) reads
nothing; anything the record cannot vouch for reads the rows.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

import pytest
from support.engine import desired, record, row

from webui_insights.engine.plan import ChatPlan
from webui_insights.engine.transcripts import StoredMessages, chain_end, plan_transcript, to_row


def talk(*texts: str) -> tuple[dict[str, Any], ...]:
    return tuple({"role": "user" if n % 2 == 0 else "assistant", "content": t} for n, t in enumerate(texts))


def chain_of(*texts: str) -> str:
    return chain_end(to_row(m) for m in talk(*texts))


class Stored:
    """The chat's stored messages (ids 1, 2, …), counting what planning read of them."""

    def __init__(self, *texts: str, messages: tuple[dict[str, Any], ...] = ()) -> None:
        converted = [to_row(m) for m in messages or talk(*texts)]
        self._rows = [
            (n, r.role, r.content, r.tool_calls, r.tool_call_id, r.tool_name) for n, r in enumerate(converted, 1)
        ]
        self.reads: list[str] = []

    def rows(self) -> list[tuple[Any, ...]]:
        self.reads.append("rows")
        return self._rows

    def newest_ids(self, n: int) -> list[int]:
        self.reads.append(f"ids {n}")
        return [r[0] for r in reversed(self._rows[-n:])] if n > 0 else []


@dataclass
class Case:
    name: str
    webui: tuple[str, ...]
    stored: tuple[str, ...]
    rec: dict[str, Any] | None  # the record's transcript columns (None: no record)
    want: dict[str, Any]  # fields of the plan made
    reads: list[str] = field(default_factory=list)
    outcome: str = "unchanged"
    exhaustive: bool = False


CASES = [
    Case(
        "a new chat: everything appended, nothing read",
        ("q1", "a1"),
        (),
        None,
        {"keep": 0, "delete": (), "append": 2, "drift": ("2 messages", "0 stored")},
        outcome="updated",
    ),
    Case(
        "an append the record vouches for: only the new messages, nothing read",
        ("q1", "a1", "q2", "a2"),
        ("q1", "a1"),
        {"transcript_count": 2, "transcript_chain": chain_of("q1", "a1")},
        {"keep": 2, "base": chain_of("q1", "a1"), "delete": (), "append": 2, "bounded": True},
        outcome="updated",
    ),
    Case(
        "an edit: the rows are read, the common prefix kept, the rest rewritten in one go",
        ("q1", "a1 edited", "q2"),
        ("q1", "a1", "q2"),
        {"transcript_count": 3, "transcript_chain": chain_of("q1", "a1", "q2")},
        {"keep": 1, "delete": (3, 2), "append": 2, "bounded": False, "notes": ("rewrites",)},
        reads=["rows"],
        outcome="updated",
    ),
    Case(
        "rows that vanished: read, and the missing ones appended",
        ("q1", "a1", "q2"),
        ("q1",),
        {"transcript_count": 3, "transcript_chain": chain_of("q1", "a1", "q2")},
        {"keep": 1, "delete": (), "append": 2, "drift": ("3 messages", "1 stored")},
        reads=["rows"],
        outcome="updated",
    ),
    Case(
        "an old tail still being deleted: its ids, newest first",
        ("q1",),
        ("q1", "x", "y"),
        {"transcript_count": 3, "transcript_chain": f"1:{chain_of('q1')}"},
        {"keep": 1, "delete": (3, 2), "append": 0},
        reads=["ids 2"],
        outcome="updated",
    ),
    Case(
        "nothing to do: no work, no drift, the chat stays unchanged",
        ("q1", "a1"),
        ("q1", "a1"),
        {"transcript_count": 2, "transcript_chain": chain_of("q1", "a1")},
        {"keep": 2, "delete": (), "append": 0, "record": None, "drift": None},
    ),
    Case(
        "verify compares every row and says where they part",
        ("q1", "a1 edited", "q2"),
        ("q1", "a1", "q2"),
        {"transcript_count": 3, "transcript_chain": chain_of("q1", "a1", "q2")},
        {"keep": 1, "drift": ("3 messages", "differs from message 2")},
        reads=["rows"],
        outcome="updated",
        exhaustive=True,
    ),
    Case(
        "verify: a stored prefix is reported by its length",
        ("q1", "a1", "q2"),
        ("q1",),
        {"transcript_count": 1, "transcript_chain": chain_of("q1")},
        {"keep": 1, "drift": ("3 messages", "1 stored")},
        reads=["rows"],
        outcome="updated",
        exhaustive=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_plan_of_a_mirrored_chats_messages(case: Case) -> None:
    stored = Stored(*case.stored)
    chat = ChatPlan(
        "chat1",
        "unchanged",
        owner="mirror",
        desired=desired("chat1", transcript=talk(*case.webui)),
        row=row(live_messages=len(case.stored)),
    )
    rec = record(**case.rec) if case.rec is not None else None
    plan = plan_transcript(chat, rec, stored, exhaustive=case.exhaustive)
    assert plan is not None and chat.transcript is plan
    for name, value in case.want.items():
        if name == "drift":
            got = None if plan.drift is None else (plan.drift.want, plan.drift.have)
            assert got == value, name
        else:
            assert getattr(plan, name) == value, name
    assert stored.reads == case.reads
    assert chat.outcome == case.outcome
    assert (plan.drift in chat.extra_drift) == (plan.drift is not None)


def test_a_chat_hermes_agent_writes_is_left_to_it() -> None:
    chat = ChatPlan("chat1", "updated", owner="hermes", desired=desired("chat1", transcript=talk("q1")))
    plan = plan_transcript(chat, None, Stored())
    assert plan is not None and (plan.kind, plan.notes, plan.delete) == ("left", ("left_to_hermes",), ())


def test_a_hand_over_removes_what_hermes_agent_wrote_again_and_its_counts() -> None:
    stored = Stored("q1", "a1", "q1", "a1")  # ours: the first two; hermes-agent repeated them
    chat = ChatPlan("chat1", "unchanged", owner="hermes", desired=desired("chat1", transcript=talk("q1", "a1")))
    rec = record(transcript_count=2, transcript_chain=chain_of("q1", "a1"))
    plan = plan_transcript(chat, rec, stored)
    assert plan is not None and plan.kind == "hand_over"
    assert (plan.delete, plan.subtract) == ((1, 2), (2, 0))
    assert plan.record == {"transcript_count": 0, "transcript_chain": None}
    assert chat.outcome == "updated"


def test_the_duplicates_tool_calls_come_off_the_rows_count_too() -> None:
    turn = (
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "tool_calls": [{"id": 1}, {"id": 2}]},
    )
    chat = ChatPlan("chat1", "unchanged", owner="hermes", desired=desired("chat1", transcript=turn))
    rec = record(transcript_count=2, transcript_chain=chain_end(to_row(m) for m in turn))
    plan = plan_transcript(chat, rec, Stored(messages=turn + turn))
    assert plan is not None and (plan.delete, plan.subtract) == ((1, 2), (2, 2))


@pytest.mark.parametrize(
    "stored",
    [("q1", "a1"), ("q1", "a1", "q2", "a2", "q1")],
    ids=["hermes-agent has not written", "hermes-agent is still writing the turn we mirrored"],
)
def test_a_hand_over_waits(stored: tuple[str, ...]) -> None:
    ours = stored[:2] if len(stored) == 2 else stored[:4]
    chat = ChatPlan("chat1", "unchanged", owner="hermes", desired=desired("chat1", transcript=talk(*ours)))
    rec = record(transcript_count=len(ours), transcript_chain=chain_of(*ours))
    plan = plan_transcript(chat, rec, Stored(*stored))
    assert plan is not None and (plan.kind, plan.notes, plan.delete, plan.record) == ("left", (), (), None)
    assert chat.transcript is plan and chat.outcome == "unchanged"


def test_without_messages_there_is_no_plan() -> None:
    chat = ChatPlan("chat1", "unchanged", owner="mirror", desired=desired("chat1"))
    assert plan_transcript(chat, None, Stored()) is None


def test_the_stored_view_reads_the_rows_once() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, session_id, role, content, tool_calls, "
        "tool_call_id, tool_name, active DEFAULT 1)"
    )
    conn.executemany(
        "INSERT INTO messages (session_id, role, content) VALUES ('c', ?, ?)", [("user", "a"), ("user", "b")]
    )
    view = StoredMessages(conn, "c", active=True)
    assert view.newest_ids(1) == [2]  # read from the table while the rows were not needed
    assert [r[2] for r in view.rows()] == ["a", "b"]
    conn.execute("DELETE FROM messages")
    assert [r[2] for r in view.rows()] == ["a", "b"] and view.newest_ids(2) == [2, 1]
