"""Transcripts under any sequence of WebUI changes, restarts, cut transactions and hermes-side deletions.

Generated sequences of appends, edits anywhere, regenerated replies,
truncations, a restarted process (no memory), a time budget of zero (every
transaction cut short), a changed stored message and ``hermes sessions
delete`` then a new turn: after every sync, the chat's live messages in
state.db are the WebUI's — or, after a deletion without a new turn, none.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.engine import desired

from webui_insights.engine.hermes import hermes_state
from webui_insights.engine.store import StateStore, create_state_db
from webui_insights.engine.sync import sync
from webui_insights.engine.transcripts import TranscriptWriter, to_row

EXAMPLES = int(os.environ.get("WEBUI_INSIGHTS_HYPOTHESIS_EXAMPLES", "40"))
SID = "c0ffee00a001"

texts = st.sampled_from(["hi", "hello", "thanks", "ok", "", "again", "zebra"])
message = st.one_of(
    st.builds(lambda r, t: {"role": r, "content": t}, st.sampled_from(["user", "assistant"]), texts),
    st.builds(
        lambda t: {"role": "assistant", "content": t, "tool_calls": [{"id": "c1", "function": {"name": "f"}}]}, texts
    ),
    st.builds(lambda t: {"role": "tool", "tool_call_id": "c1", "name": "f", "content": t}, texts),
)
step = st.one_of(
    st.tuples(st.just("append"), st.lists(message, min_size=1, max_size=30)),
    st.tuples(st.just("edit"), st.tuples(st.integers(0, 10_000), message)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000)),
    st.tuples(st.just("regenerate"), message),
    st.tuples(st.just("restart"), st.none()),
    st.tuples(st.just("tamper"), st.integers(0, 10_000)),
    st.tuples(st.just("delete_in_hermes"), st.none()),
    st.tuples(st.just("no_budget"), st.booleans()),
)


def live_rows(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        active = any(r[1] == "active" for r in conn.execute("PRAGMA table_info(messages)"))
        return conn.execute(
            "SELECT role, content, tool_calls, tool_call_id, tool_name FROM messages WHERE session_id = ?"
            + (" AND active = 1" if active else "")
            + " ORDER BY id",
            (SID,),
        ).fetchall()
    finally:
        conn.close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=10))
def test_after_every_sync_state_db_holds_the_webuis_messages(steps: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "state.db"
        create_state_db(db)
        store = StateStore(db)
        writer = TranscriptWriter()
        messages: list[dict[str, Any]] = [{"role": "user", "content": "start"}]
        budget = 0.03
        deleted = False
        seen = 0  # the message count of the state last synced: a deleted chat comes back with a new message
        at = time.time() - 10_000
        chat = desired(SID, at=at, message_count=len(messages), transcript=tuple(messages))
        try:
            sync(store, [chat], write_transcript=writer, budget_s=budget)
            seen = len(messages)
            for kind, arg in steps:
                if kind == "append":
                    messages = messages + arg
                elif kind == "edit" and messages:
                    index, replacement = arg
                    index %= len(messages)
                    messages = messages[:index] + [replacement] + messages[index + 1 :]
                elif kind == "truncate":
                    messages = messages[: arg % (len(messages) + 1)]
                elif kind == "regenerate" and messages:
                    messages = messages[:-1] + [arg]
                elif kind == "restart":
                    store.close()
                    store = StateStore(db)
                    writer = TranscriptWriter()
                elif kind == "tamper":
                    # Someone changes a stored message; the next pass over the same state
                    # (the sweep, verify --fix: another writer, no memory) repairs it.
                    conn = sqlite3.connect(db)
                    conn.execute(
                        "UPDATE messages SET content = 'tampered' WHERE id = "
                        "(SELECT id FROM messages WHERE session_id = ? ORDER BY id LIMIT 1 OFFSET ?)",
                        (SID, arg % 5),
                    )
                    conn.commit()
                    conn.close()
                    sync(store, [chat], write_transcript=TranscriptWriter(), budget_s=budget)
                    check(db, [] if deleted else chat.transcript or ())
                    continue
                elif kind == "delete_in_hermes":
                    handle = hermes_state().SessionDB(db_path=db)
                    try:
                        deleted = handle.delete_session(SID) or deleted
                    finally:
                        handle.close()
                elif kind == "no_budget":
                    budget = 0.0 if arg else 0.03
                at += 1.0
                chat = desired(SID, at=at, message_count=len(messages), transcript=tuple(messages))
                sync(store, [chat], write_transcript=writer, budget_s=budget)
                if deleted and len(messages) > seen:
                    deleted = False  # a new message (a turn) brings a chat deleted in hermes back
                seen = len(messages)  # seen while deleted too: the rule measures growth from the last state
                check(db, [] if deleted else messages)
        finally:
            store.close()


def check(db: Path, messages: Any) -> None:
    assert live_rows(db) == [tuple(to_row(m)[:5]) for m in messages]
