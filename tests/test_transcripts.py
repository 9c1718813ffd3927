"""Opt-in transcripts on the real SessionDB: what state.db's messages become, whoever writes them.

Every scenario runs twice: driving the engine directly (``sync`` with a
``TranscriptWriter``, as the writer thread, the sweep and the CLI do) and
through the live path (``install(transcripts=True)`` on a session class of
this module, then ``flush()``). The expectation is always the same: the
chat's live messages in state.db equal the WebUI's (order, role, content,
tool calls) after every flush — or, for a chat hermes-agent writes itself,
exactly what hermes-agent wrote.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.db import tamper
from support.engine import desired
from support.run_hermes import run_insights

import webui_insights
from webui_insights.demo_host import DemoSession
from webui_insights.diagnostics import Stats
from webui_insights.engine import transcripts
from webui_insights.engine.chats import count_tool_calls
from webui_insights.engine.hermes import hermes_state
from webui_insights.engine.records import TABLE
from webui_insights.engine.states import Desired
from webui_insights.engine.store import StateStore
from webui_insights.engine.sync import SyncReport, sync
from webui_insights.engine.transcripts import (
    ATTACHMENT_PLACEHOLDER,
    MAX_MESSAGE_CHARS,
    TranscriptWriter,
    to_row,
)
from webui_insights.hook import installer
from webui_insights.writer import THREAD_NAME, WriterConfig

TESTS = Path(__file__).resolve().parent
TARGET = f"{__name__}:Chat.save"


# ------------------------------------------------------------------ the host


class Chat(DemoSession):
    """A chat shaped like hermes-webui's ``api.models.Session``; ``save()`` writes its JSON file as the WebUI does.

    Its own ``save`` (the one the tests wrap) keeps ``updated_at`` strictly increasing, so
    two saves within one clock tick still order.
    """

    def __init__(self, state_dir: Path, session_id: str, *, title: str = "Transcript chat") -> None:
        super().__init__(state_dir, session_id=session_id, model="test/model", title=title, created_at=time.time() - 60)
        self.model_provider = "test"
        self.messages: list[Any] = []

    def save(self, touch_updated_at: bool = True, skip_index: bool = False) -> None:
        if touch_updated_at:
            self.updated_at = max(time.time(), self.updated_at + 0.001)
        super().save(touch_updated_at=False, skip_index=skip_index)

    def changed(self) -> None:
        """What every real change costs: tokens (so the save gate sees it even at the same length)."""
        self.input_tokens += 10
        self.output_tokens += 1

    def turn(self, user: str, assistant: str) -> None:
        now = time.time()
        self.messages += [
            {"role": "user", "content": user, "timestamp": now},
            {"role": "assistant", "content": assistant, "timestamp": now},
        ]
        self.changed()

    def tool_turn(self, user: str, answer: str) -> None:
        self.messages += [
            {"role": "user", "content": user},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "web_search", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "name": "web_search", "content": "results"},
            {"role": "assistant", "content": answer},
        ]
        self.changed()


def conversation(n: int, tag: str = "m") -> list[dict[str, Any]]:
    """``n`` messages, user and assistant in turn, each text unique."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{tag} {i} words"} for i in range(n)]


# ------------------------------------------------------------------ state.db


def live(db: Path, session_id: str) -> list[tuple[Any, ...]]:
    """(id, role, content, tool_calls, tool_call_id, tool_name) of the chat's live messages, in order."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        has_active = any(r[1] == "active" for r in conn.execute("PRAGMA table_info(messages)"))
        return conn.execute(
            "SELECT id, role, content, tool_calls, tool_call_id, tool_name FROM messages WHERE session_id = ?"
            + (" AND active = 1" if has_active else "")
            + " ORDER BY id",
            (session_id,),
        ).fetchall()
    finally:
        conn.close()


def ids(db: Path, session_id: str) -> list[int]:
    return [row[0] for row in live(db, session_id)]


def wanted(messages: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [tuple(to_row(m)[:5]) for m in messages]


def assert_mirrors(db: Path, chat: Chat) -> None:
    """state.db's live messages are the WebUI's: order, role, content, tool calls, tool name."""
    assert [tuple(row[1:6]) for row in live(db, chat.session_id)] == wanted(chat.messages)


def record(db: Path, session_id: str) -> dict[str, Any] | None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        found = conn.execute(f"SELECT * FROM {TABLE} WHERE session_id = ?", (session_id,)).fetchone()
        return dict(found) if found else None
    except sqlite3.OperationalError as exc:  # before the first transaction made the table
        if "no such table" not in str(exc):
            raise
        return None
    finally:
        conn.close()


def session_db(db: Path) -> Any:
    return hermes_state().SessionDB(db_path=db)


def hermes_writes(db: Path, session_id: str, messages: Sequence[dict[str, Any]], *, create: bool = True) -> list[int]:
    """What hermes-agent does for a chat it was handed a SessionDB for: create_session, then append_message."""
    handle = session_db(db)
    try:
        if create:
            handle.create_session(session_id, "webui", model="test/model", system_prompt="You are hermes.")
        return [
            handle.append_message(session_id, m["role"], m.get("content"), tool_calls=m.get("tool_calls"))
            for m in messages
        ]
    finally:
        handle.close()


# ------------------------------------------------------------------ drivers


def desired_of(chat: Chat, **fields: Any) -> Desired:
    values: dict[str, Any] = {
        "at": chat.updated_at,
        "title": chat.title,
        "input_tokens": chat.input_tokens,
        "output_tokens": chat.output_tokens,
        "cache_read_tokens": 0,
        "message_count": len(chat.messages),
        "tool_call_count": count_tool_calls(chat.messages),  # what desired_from gives the engine
        "created_at": chat.created_at,
        "estimated_cost_usd": None,
        "transcript": tuple(chat.messages),
    }
    values.update(fields)
    return desired(chat.session_id, **values)


class EngineDriver:
    """The engine alone, as the writer thread drives it: one long-lived handle, one TranscriptWriter."""

    name = "engine"

    def __init__(self, home: Path) -> None:
        self.db = home / "state.db"
        self.stats = Stats()
        self.writer = TranscriptWriter(self.stats)
        self.store = StateStore(self.db)
        self.reports: list[SyncReport] = []

    def save(self, chat: Chat, **kwargs: Any) -> SyncReport:
        chat.updated_at = max(time.time(), chat.updated_at + 0.001)
        report = sync(self.store, [desired_of(chat)], write_transcript=self.writer, **kwargs)
        self.reports.append(report)
        return report

    def counters(self) -> dict[str, int]:
        return self.stats.group("transcripts.")

    def close(self) -> None:
        self.store.close()


class LiveDriver:
    """``install(transcripts=True)`` on ``Chat.save``, then ``flush()``."""

    name = "live"

    def __init__(self, home: Path, writer_config: WriterConfig) -> None:
        self.db = home / "state.db"
        installer.install(
            target=TARGET, enabled=True, transcripts=True, writer_config=writer_config, reconcile_interval=0
        )

    def save(self, chat: Chat, **kwargs: Any) -> None:
        chat.save()
        assert webui_insights.flush(30)

    def counters(self) -> dict[str, int]:
        return dict(webui_insights.stats()["transcripts"])

    def close(self) -> None:
        pass


Driver = EngineDriver | LiveDriver


@pytest.fixture(params=["engine", "live"])
def driver(request: pytest.FixtureRequest, hermes_home: Path, fast_writer: WriterConfig) -> Iterator[Driver]:
    made: Driver = EngineDriver(hermes_home) if request.param == "engine" else LiveDriver(hermes_home, fast_writer)
    yield made
    made.close()


@pytest.fixture
def chat(webui_dir: Path) -> Chat:
    return Chat(webui_dir, "c0ffee000001")


def ten_messages(chat: Chat) -> None:
    """Three turns, the second with a tool call, then one more: ten messages."""
    chat.turn("first question", "first answer")
    chat.tool_turn("look up the zanzibarian weather", "it is sunny")
    chat.turn("thanks", "you are welcome")
    chat.turn("more", "sure")
    assert len(chat.messages) == 10


# ------------------------------------------------------------------ mirror-owned chats


def test_a_chat_only_this_layer_writes_gets_the_webuis_messages_with_tool_calls(driver: Driver, chat: Chat) -> None:
    ten_messages(chat)
    chat.messages.append(
        {"role": "user", "content": [{"type": "text", "text": "see this"}, {"type": "image_url", "image_url": "x"}]}
    )
    driver.save(chat)
    assert_mirrors(driver.db, chat)
    rows = live(driver.db, chat.session_id)
    assert [r[1] for r in rows[:6]] == ["user", "assistant", "user", "assistant", "tool", "assistant"]
    assert json.loads(rows[3][3])[0]["function"]["name"] == "web_search"
    assert (rows[4][4], rows[4][5]) == ("call_1", "web_search")
    assert rows[-1][2] == "see this\n[image_url]"
    assert driver.counters()["messages_written"] == 11


def test_a_new_turn_is_appended_and_the_rows_already_there_keep_their_ids(driver: Driver, chat: Chat) -> None:
    ten_messages(chat)
    driver.save(chat)
    before = ids(driver.db, chat.session_id)
    chat.turn("one more", "here")
    driver.save(chat)
    assert_mirrors(driver.db, chat)
    assert ids(driver.db, chat.session_id)[:10] == before
    assert driver.counters().get("messages_deleted", 0) == 0


def test_an_edit_of_message_3_of_10_replaces_it_and_what_follows(driver: Driver, chat: Chat) -> None:
    ten_messages(chat)
    driver.save(chat)
    kept = ids(driver.db, chat.session_id)[:2]
    # Edit-and-resend: the WebUI replaces message 3 and everything after it.
    chat.messages = chat.messages[:2] + [
        {"role": "user", "content": "an edited third message"},
        {"role": "assistant", "content": "an answer to the edit"},
    ]
    chat.changed()
    driver.save(chat)
    assert_mirrors(driver.db, chat)
    assert ids(driver.db, chat.session_id)[:2] == kept
    assert driver.counters()["messages_deleted"] == 8
    assert driver.counters()["rewrites"] == 1


def test_an_in_place_edit_of_an_earlier_message_is_mirrored(driver: Driver, chat: Chat) -> None:
    ten_messages(chat)
    driver.save(chat)
    chat.messages[2] = {**chat.messages[2], "content": "the third message, corrected"}
    chat.changed()
    driver.save(chat)
    assert_mirrors(driver.db, chat)
    assert live(driver.db, chat.session_id)[2][2] == "the third message, corrected"


def test_a_regenerated_last_reply_replaces_only_that_row(driver: Driver, chat: Chat) -> None:
    ten_messages(chat)
    driver.save(chat)
    before = ids(driver.db, chat.session_id)
    chat.messages[-1] = {"role": "assistant", "content": "a regenerated reply"}
    chat.changed()
    driver.save(chat)
    assert_mirrors(driver.db, chat)
    after = ids(driver.db, chat.session_id)
    assert after[:9] == before[:9] and after[9] != before[9]


def test_a_truncated_chat_loses_its_tail(driver: Driver, chat: Chat) -> None:
    ten_messages(chat)
    driver.save(chat)
    chat.messages = chat.messages[:4]
    chat.changed()
    driver.save(chat)
    assert_mirrors(driver.db, chat)
    rec = record(driver.db, chat.session_id)
    assert rec is not None and rec["transcript_count"] == 4


def test_a_chat_deleted_in_hermes_comes_back_whole_with_its_next_turn(driver: Driver, chat: Chat) -> None:
    ten_messages(chat)
    driver.save(chat)
    handle = session_db(driver.db)
    try:
        assert handle.delete_session(chat.session_id)
    finally:
        handle.close()
    chat.title = "Renamed"  # a save without a new turn: the deletion is respected
    driver.save(chat)
    assert live(driver.db, chat.session_id) == []
    chat.turn("after the deletion", "a new turn")
    driver.save(chat)
    assert_mirrors(driver.db, chat)


def test_transcripts_off_writes_no_messages(hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig) -> None:
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer, reconcile_interval=0)
    chat = Chat(webui_dir, "c0ffee000002")
    ten_messages(chat)
    chat.save()
    assert webui_insights.flush(10)
    assert live(hermes_home / "state.db", chat.session_id) == []


@pytest.mark.parametrize("switch", ["env", "setting"])
def test_the_environment_or_the_webui_setting_switches_transcripts_on(
    switch: str, hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    if switch == "env":
        monkeypatch.setenv("WEBUI_INSIGHTS_TRANSCRIPTS", "1")
    else:
        webui_dir.mkdir(parents=True, exist_ok=True)
        (webui_dir / "settings.json").write_text(json.dumps({"sync_transcripts_to_state_db": True}))
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer, reconcile_interval=0)
    chat = Chat(webui_dir, "c0ffee000003")
    ten_messages(chat)
    chat.save()
    assert webui_insights.flush(10)
    assert_mirrors(hermes_home / "state.db", chat)


def test_hermes_session_search_finds_a_word_said_only_in_the_webui(driver: Driver, chat: Chat) -> None:
    ten_messages(chat)
    driver.save(chat)
    handle = session_db(driver.db)
    try:
        hits = handle.search_messages("zanzibarian")
    finally:
        handle.close()
    assert [hit["session_id"] for hit in hits] == [chat.session_id]


def test_real_insights_counts_the_user_messages_and_the_tool(driver: Driver, chat: Chat, hermes_home: Path) -> None:
    ten_messages(chat)
    driver.save(chat)
    report = run_insights(hermes_home, days=1)
    assert re.search(r"Messages:\s+10\b", report), report
    assert re.search(r"User messages:\s+4\b", report), report
    assert re.search(r"web_search\s+\d+", report), report


def test_lone_surrogates_in_messages_are_replaced_not_fatal(driver: Driver, chat: Chat) -> None:
    chat.turn("scraped \udc15 text", "ok")
    driver.save(chat)
    assert [row[2] for row in live(driver.db, chat.session_id)] == ["scraped \ufffd text", "ok"]


def test_status_names_the_transcripts_switch(
    webui_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from webui_insights.cli import main

    (webui_dir / "sessions").mkdir(parents=True)
    monkeypatch.setenv("WEBUI_INSIGHTS_TRANSCRIPTS", "1")
    main(["status"])
    assert re.search(r"transcripts\s+on \(env WEBUI_INSIGHTS_TRANSCRIPTS\)", capsys.readouterr().out)


def test_a_restart_appends_without_duplicating(hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig) -> None:
    installer.install(target=TARGET, enabled=True, transcripts=True, writer_config=fast_writer, reconcile_interval=0)
    chat = Chat(webui_dir, "c0ffee000004")
    ten_messages(chat)
    chat.save()
    assert webui_insights.flush(10)
    installer._reset_for_tests()  # a new process: no memory of what was written
    installer.install(target=TARGET, enabled=True, transcripts=True, writer_config=fast_writer, reconcile_interval=0)
    chat.turn("after the restart", "still here")
    chat.save()
    assert webui_insights.flush(10)
    assert_mirrors(hermes_home / "state.db", chat)
    assert webui_insights.stats()["transcripts"].get("messages_deleted", 0) == 0


# ------------------------------------------------------------------ chats hermes-agent writes


def test_a_chat_hermes_agent_writes_is_left_exactly_as_hermes_wrote_it(driver: Driver, chat: Chat) -> None:
    chat.turn("Plan the garden party", "reply 1")
    chat.turn("What about music?", "reply 2")
    written = hermes_writes(driver.db, chat.session_id, chat.messages)
    before = live(driver.db, chat.session_id)
    driver.save(chat)
    chat.turn("And the food?", "reply 3")  # a non-streaming turn hermes-agent does not write
    driver.save(chat)
    assert live(driver.db, chat.session_id) == before
    assert ids(driver.db, chat.session_id) == written
    assert driver.counters()["left_to_hermes"] == 2
    assert driver.counters().get("messages_written", 0) == 0


def test_messages_mirrored_before_hermes_agent_took_the_chat_over_are_not_left_twice(
    driver: Driver, chat: Chat
) -> None:
    chat.messages = [{"role": "user", "content": "Plan the garden party"}]
    chat.changed()
    driver.save(chat)  # the WebUI saved the question before the agent ran
    assert len(live(driver.db, chat.session_id)) == 1
    chat.messages.append({"role": "assistant", "content": "reply 1"})
    written = hermes_writes(driver.db, chat.session_id, chat.messages)
    chat.changed()
    driver.save(chat)
    assert ids(driver.db, chat.session_id) == written
    assert_mirrors(driver.db, chat)
    assert driver.counters()["duplicates_removed"] == 1


def test_a_partial_reply_mirrored_before_hermes_agent_finished_it_is_not_left_twice(driver: Driver, chat: Chat) -> None:
    chat.messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hel"}]
    chat.changed()
    driver.save(chat)
    hermes_writes(driver.db, chat.session_id, [{"role": "user", "content": "hello"}])
    chat.changed()
    driver.save(chat)  # hermes-agent is still writing the turn: nothing to decide yet
    assert len(live(driver.db, chat.session_id)) == 3
    chat.messages[-1] = {"role": "assistant", "content": "Hello there!"}
    written = hermes_writes(driver.db, chat.session_id, chat.messages[-1:], create=False)
    chat.changed()
    driver.save(chat)
    assert_mirrors(driver.db, chat)
    assert ids(driver.db, chat.session_id)[-1:] == written


def test_a_chat_mirrored_long_ago_and_resumed_in_hermes_keeps_its_history(driver: Driver, chat: Chat) -> None:
    ten_messages(chat)
    driver.save(chat)
    ours = live(driver.db, chat.session_id)
    cli_turn = [{"role": "user", "content": "a question from the CLI"}, {"role": "assistant", "content": "answer"}]
    written = hermes_writes(driver.db, chat.session_id, cli_turn)  # `hermes --resume` on the chat
    chat.turn("back in the WebUI", "hello again")
    driver.save(chat)
    assert live(driver.db, chat.session_id)[:10] == ours
    assert ids(driver.db, chat.session_id)[10:] == written
    assert driver.counters().get("duplicates_removed", 0) == 0


def test_messages_and_tool_calls_hermes_agent_took_over_are_counted_once(driver: Driver, chat: Chat) -> None:
    chat.tool_turn("look something up", "found it")
    driver.save(chat)  # mirrored before the agent's SessionDB writes came in
    hermes_writes(driver.db, chat.session_id, chat.messages)
    chat.changed()
    driver.save(chat)
    conn = sqlite3.connect(f"file:{driver.db}?mode=ro", uri=True)
    counts = conn.execute(
        "SELECT message_count, tool_call_count FROM sessions WHERE id = ?", (chat.session_id,)
    ).fetchone()
    conn.close()
    assert len(live(driver.db, chat.session_id)) == 4
    assert counts == (4, 1)


# ------------------------------------------------------------------ long chats, several transactions


class WatchedStore(StateStore):
    """A StateStore that looks at the chat's live messages after every transaction (from another connection)."""

    def __init__(self, path: Path, session_id: str, fail_after: int | None = None) -> None:
        super().__init__(path)
        self.session_id = session_id
        self.seen: list[list[tuple[Any, ...]]] = []
        self.fail_after = fail_after

        self.totals: list[int] = []  # live messages of every chat, after each transaction

    def run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise KeyboardInterrupt("killed between two transactions")
        result = super().run(fn)
        self.seen.append([tuple(r[1:6]) for r in live(self.path, self.session_id)])
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            self.totals.append(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        finally:
            conn.close()
        return result


def is_prefix(part: Sequence[Any], whole: Sequence[Any]) -> bool:
    return len(part) <= len(whole) and list(whole[: len(part)]) == list(part)


def test_a_5000_message_chat_is_written_in_short_transactions_each_a_prefix_of_it(
    hermes_home: Path, webui_dir: Path
) -> None:
    chat = Chat(webui_dir, "c0ffee000006")
    chat.messages = conversation(5000)
    store = WatchedStore(hermes_home / "state.db", chat.session_id)
    try:
        # No time budget at all: every transaction does the least it may (one chunk), so each lock hold is short.
        report = sync(store, [desired_of(chat)], write_transcript=TranscriptWriter(), budget_s=0.0)
    finally:
        store.close()
    want = wanted(chat.messages)
    steps = [len(b) - len(a) for a, b in zip([[]] + store.seen, store.seen, strict=False)]
    assert report.transactions == len(steps) > 20
    assert max(steps) <= transcripts._CHUNK  # one chunk under each lock hold
    assert all(is_prefix(seen, want) for seen in store.seen)
    assert_mirrors(hermes_home / "state.db", chat)
    assert report.outcomes == {"created": 1}


def test_a_5000_message_chat_saved_live_ends_complete_and_its_next_turn_is_one_transaction(
    hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig
) -> None:
    installer.install(target=TARGET, enabled=True, transcripts=True, writer_config=fast_writer, reconcile_interval=0)
    chat = Chat(webui_dir, "c0ffee00000b")
    chat.messages = conversation(5000)
    chat.changed()
    chat.save()
    assert webui_insights.flush(60)
    assert_mirrors(hermes_home / "state.db", chat)
    first = webui_insights.stats()
    assert first["transactions"] > 1
    chat.turn("one more", "done")
    chat.save()
    assert webui_insights.flush(10)
    assert webui_insights.stats()["transactions"] - first["transactions"] == 1
    assert_mirrors(hermes_home / "state.db", chat)


@pytest.mark.parametrize("change", ["edit message 3", "regenerate", "truncate"])
def test_a_rewrite_of_a_normal_chat_is_one_transaction_even_without_time_left(
    change: str, hermes_home: Path, webui_dir: Path
) -> None:
    chat = Chat(webui_dir, "c0ffee00000c")
    chat.messages = conversation(80)  # a rewrite here is more than one chunk of rows, less than ATOMIC_OPS
    db = hermes_home / "state.db"
    writer = TranscriptWriter()
    store = StateStore(db)
    sync(store, [desired_of(chat)], write_transcript=writer)
    store.close()
    if change == "edit message 3":
        chat.messages = chat.messages[:2] + conversation(78, tag="edited")
    elif change == "regenerate":
        chat.messages = chat.messages[:-1] + [{"role": "assistant", "content": "regenerated"}]
    else:
        chat.messages = chat.messages[:7]
    chat.changed()
    chat.updated_at += 1
    store = WatchedStore(db, chat.session_id)
    try:
        report = sync(store, [desired_of(chat)], write_transcript=TranscriptWriter(), budget_s=0.0)
    finally:
        store.close()
    assert report.transactions == 1
    assert store.seen == [wanted(chat.messages)]


def test_a_big_rewrite_over_several_transactions_never_mixes_old_and_new(hermes_home: Path, webui_dir: Path) -> None:
    chat = Chat(webui_dir, "c0ffee000007")
    chat.messages = conversation(600)
    db = hermes_home / "state.db"
    writer = TranscriptWriter()
    store = StateStore(db)
    try:
        sync(store, [desired_of(chat)], write_transcript=writer)
    finally:
        store.close()
    old = wanted(chat.messages)
    chat.messages = chat.messages[:2] + conversation(598, tag="edited")
    chat.changed()
    chat.updated_at += 1
    store = WatchedStore(db, chat.session_id)
    try:
        report = sync(store, [desired_of(chat)], write_transcript=writer, budget_s=0.0)
    finally:
        store.close()
    new = wanted(chat.messages)
    assert report.transactions > 2
    assert all(is_prefix(seen, old) or is_prefix(seen, new) for seen in store.seen)
    assert all(len(seen) >= 2 for seen in store.seen)  # the common prefix is never touched
    assert_mirrors(db, chat)
    assert report.outcomes == {"updated": 1}


@pytest.mark.parametrize("stop_after", [3, 12])
def test_a_long_write_cut_between_transactions_is_finished_by_the_next_run(
    stop_after: int, hermes_home: Path, webui_dir: Path
) -> None:
    chat = Chat(webui_dir, "c0ffee000008")
    chat.messages = conversation(800)
    db = hermes_home / "state.db"
    store = StateStore(db)
    sync(store, [desired_of(chat)], write_transcript=TranscriptWriter())
    store.close()
    chat.messages = conversation(300) + conversation(700, tag="regenerated")  # shorter tail replaced, longer chat
    chat.changed()
    chat.updated_at += 1
    store = WatchedStore(db, chat.session_id, fail_after=stop_after)
    with pytest.raises(KeyboardInterrupt):
        sync(store, [desired_of(chat)], write_transcript=TranscriptWriter(), budget_s=0.0)
    store.close()
    assert [tuple(r[1:6]) for r in live(db, chat.session_id)] != wanted(chat.messages)
    # Another process (no memory of the first): the same state again.
    store = StateStore(db)
    try:
        sync(store, [desired_of(chat)], write_transcript=TranscriptWriter())
    finally:
        store.close()
    assert_mirrors(db, chat)


def test_chats_carried_to_a_later_transaction_are_counted_by_what_happened_to_them(
    hermes_home: Path, webui_dir: Path
) -> None:
    chats = []
    for n in range(30):
        chat = Chat(webui_dir, f"c0ffee1{n:05d}")
        chat.messages = conversation(60)
        chats.append(chat)
    store = WatchedStore(hermes_home / "state.db", chats[0].session_id)
    try:
        report = sync(store, [desired_of(c) for c in chats], write_transcript=TranscriptWriter(), budget_s=0.0)
    finally:
        store.close()
    # With no time left, each transaction writes one chunk of one chat's messages and carries the others.
    steps = [b - a for a, b in zip([0] + store.totals, store.totals, strict=False)]
    assert max(steps) <= transcripts._CHUNK and sum(steps) == 30 * 60
    assert report.outcomes == {"created": 30}
    assert sorted(report.committed) == sorted(c.session_id for c in chats)
    for chat in chats:
        assert_mirrors(hermes_home / "state.db", chat)


def test_chats_waiting_for_their_transcript_are_not_planned_again_and_again(
    hermes_home: Path, webui_dir: Path, mocker: Any
) -> None:
    from webui_insights.engine import sync as sync_module

    chats = []
    for n in range(120):
        chat = Chat(webui_dir, f"c0ffee2{n:05d}")
        chat.messages = conversation(40)
        chats.append(chat)
    planned = mocker.spy(sync_module, "plan_chat")
    store = StateStore(hermes_home / "state.db")
    try:
        # No time left in any transaction: each writes one chat's messages and carries the rest.
        report = sync(store, [desired_of(c) for c in chats], write_transcript=TranscriptWriter(), budget_s=0.0)
    finally:
        store.close()
    assert report.outcomes == {"created": 120}
    assert planned.call_count <= 25 * len(chats)  # not ~200 plans (a whole chunk) per chat written


# ------------------------------------------------------------------ repair: sweep, verify, backfill


def test_a_stored_message_changed_behind_our_back_is_repaired_when_the_state_is_applied_again(
    hermes_home: Path, webui_dir: Path
) -> None:
    chat = Chat(webui_dir, "c0ffee000009")
    ten_messages(chat)
    db = hermes_home / "state.db"
    state = desired_of(chat)
    store = StateStore(db)
    sync(store, [state], write_transcript=TranscriptWriter())
    store.close()
    stats = Stats()
    store = StateStore(db)
    try:
        sync(store, [state], write_transcript=TranscriptWriter(stats))  # looked at, found right
    finally:
        store.close()
    assert stats.get("transcripts.repaired") == 0
    tamper(db, "UPDATE messages SET content = 'tampered' WHERE session_id = ? AND role = 'tool'", chat.session_id)
    store = StateStore(db)
    try:
        report = sync(store, [state], write_transcript=TranscriptWriter(stats))
    finally:
        store.close()
    assert_mirrors(db, chat)
    assert stats.get("transcripts.repaired") == 1
    assert report.outcomes == {"updated": 1}


def test_an_appended_turn_does_not_read_the_stored_transcript(hermes_home: Path, webui_dir: Path, mocker: Any) -> None:
    driver = EngineDriver(hermes_home)
    chat = Chat(webui_dir, "c0ffee00000a")
    chat.messages = conversation(400)
    driver.save(chat)
    reads = mocker.spy(transcripts, "read_stored_rows")
    for _ in range(3):
        chat.turn("again", "and again")
        driver.save(chat)
    driver.close()
    assert reads.call_count == 0
    assert_mirrors(driver.db, chat)


def test_verify_finds_no_drift_after_a_flush_and_finds_and_fixes_a_tampered_message(
    hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    from webui_insights.cli import main

    installer.install(target=TARGET, enabled=True, transcripts=True, writer_config=fast_writer, reconcile_interval=0)
    db = hermes_home / "state.db"
    chats = [Chat(webui_dir, f"c0ffee00010{n}") for n in range(3)]
    for chat in chats:
        ten_messages(chat)
        chat.save()
    theirs = Chat(webui_dir, "c0ffee000109")  # hermes-agent writes this one; the WebUI has a turn more
    theirs.turn("streamed", "by hermes")
    hermes_writes(db, theirs.session_id, theirs.messages)
    theirs.turn("not streamed", "not in hermes")
    theirs.save()
    assert webui_insights.flush(10)
    assert main(["verify", "--transcripts", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["drifted"] == []

    tamper(db, "UPDATE messages SET content = 'tampered' WHERE session_id = ? AND role = 'user'", chats[1].session_id)
    assert main(["verify", "--transcripts", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [d["session_id"] for d in report["drifted"]] == [chats[1].session_id]
    assert [f["field"] for f in report["drifted"][0]["drift"]] == ["transcript"]

    assert main(["verify", "--transcripts", "--fix"]) == 0
    capsys.readouterr()
    assert_mirrors(db, chats[1])
    assert main(["verify", "--transcripts"]) == 0


def test_backfill_transcripts_twice_writes_nothing_the_second_time(
    hermes_home: Path, webui_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from webui_insights.cli import main

    chats = [Chat(webui_dir, f"c0ffee00020{n}") for n in range(3)]
    for n, chat in enumerate(chats):
        chat.turn(f"tell me about quokkaland {n}", "a small island")
        chat.save()  # not installed: chats from before the mirror
    assert main(["backfill", "--transcripts", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["written"] == 3
    db = hermes_home / "state.db"
    before = {c.session_id: live(db, c.session_id) for c in chats}
    assert main(["backfill", "--transcripts", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["written"] == 0
    assert {c.session_id: live(db, c.session_id) for c in chats} == before
    handle = session_db(db)
    try:
        found = {hit["session_id"] for hit in handle.search_messages("quokkaland")}
    finally:
        handle.close()
    assert found == {c.session_id for c in chats}


def test_backfill_transcripts_adds_messages_to_chats_backfilled_without_them(
    hermes_home: Path, webui_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from webui_insights.cli import main

    chat = Chat(webui_dir, "c0ffee000301")
    ten_messages(chat)
    chat.save()
    assert main(["backfill"]) == 0
    assert live(hermes_home / "state.db", chat.session_id) == []
    capsys.readouterr()
    assert main(["backfill", "--transcripts", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 1
    assert_mirrors(hermes_home / "state.db", chat)


# ------------------------------------------------------------------ kill -9, then the sweep

_CHILD = """
import os, sys, time
sys.path.insert(0, {tests!r})
import webui_insights
from webui_insights.hook import installer
from webui_insights.writer import WriterConfig
from test_transcripts import Chat, ten_messages

webui_insights.install(target="test_transcripts:Chat.save", enabled=True, transcripts=True,
                       writer_config=WriterConfig(debounce_s=0.01), reconcile_interval=0)
chat = Chat(os.environ["HERMES_WEBUI_STATE_DIR"], {sid!r})
ten_messages(chat)
chat.save()
assert webui_insights.flush(20)
print("flushed", flush=True)
# From now on the writer waits an hour before each write: the next save stays pending.
installer._state.get_writer().reconfigure(WriterConfig(debounce_s=3600))
time.sleep(0.3)
chat.messages[2] = dict(chat.messages[2], content="edited before the crash")
chat.turn("a turn nobody mirrored", "and its answer")
chat.save()
print("pending", webui_insights.stats()["pending"], flush=True)
time.sleep(120)
"""


def test_a_process_killed_with_a_transcript_pending_is_repaired_by_the_reconcile_pass(
    hermes_home: Path, webui_dir: Path
) -> None:
    from webui_insights.commands.reconcile import reconcile_pass
    from webui_insights.profiles import Homes

    sid = "c0ffee000401"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(tests=str(TESTS), sid=sid)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        lines = _read_lines(child, 2, timeout=60)
        assert lines == ["flushed", "pending 1"], (lines, _stderr(child))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    db = hermes_home / "state.db"
    on_disk = json.loads((webui_dir / "sessions" / f"{sid}.json").read_text())
    assert [tuple(r[1:6]) for r in live(db, sid)] != wanted(on_disk["messages"])  # the edit was lost with the process

    result = reconcile_pass(Homes(hermes_home), webui_dir / "sessions", transcripts=True)
    assert result.errors == []
    assert [tuple(r[1:6]) for r in live(db, sid)] == wanted(on_disk["messages"])
    again = reconcile_pass(Homes(hermes_home), webui_dir / "sessions", transcripts=True)
    assert again.repaired == 0


_CHILD_LONG = """
import os, sys, time
sys.path.insert(0, {tests!r})
import webui_insights
from webui_insights.engine.store import StateStore
from webui_insights.writer import WriterConfig
from test_transcripts import Chat, conversation

run = StateStore.run
def slower(self, fn):  # a busy machine: a pause after each transaction, so the kill lands in the middle
    result = run(self, fn)
    time.sleep(0.02)
    return result
StateStore.run = slower

webui_insights.install(target="test_transcripts:Chat.save", enabled=True, transcripts=True,
                       writer_config=WriterConfig(debounce_s=0.01), reconcile_interval=0)
chat = Chat(os.environ["HERMES_WEBUI_STATE_DIR"], {sid!r})
chat.messages = conversation(3000)
chat.changed()
chat.save()
print("saved", flush=True)
time.sleep(120)
"""


def test_a_process_killed_in_the_middle_of_a_long_transcript_is_finished_by_the_reconcile_pass(
    hermes_home: Path, webui_dir: Path
) -> None:
    from webui_insights.commands.reconcile import reconcile_pass
    from webui_insights.profiles import Homes

    sid = "c0ffee000402"
    db = hermes_home / "state.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_LONG.format(tests=str(TESTS), sid=sid)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    written = 0
    try:
        assert _read_lines(child, 1, timeout=60) == ["saved"], _stderr(child)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not 300 <= written < 2500:
            rec = record(db, sid)
            written = rec["transcript_count"] if rec else 0
            time.sleep(0.005)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert 300 <= written < 2500, f"the kill did not land mid-write ({written} written)"
    assert 0 < len(live(db, sid)) < 3000
    result = reconcile_pass(Homes(hermes_home), webui_dir / "sessions", transcripts=True)
    assert result.errors == []
    on_disk = json.loads((webui_dir / "sessions" / f"{sid}.json").read_text())
    assert [tuple(r[1:6]) for r in live(db, sid)] == wanted(on_disk["messages"])


def _read_lines(proc: subprocess.Popen[str], n: int, timeout: float) -> list[str]:
    """``n`` lines from ``proc``'s stdout, or fewer when it exits or ``timeout`` passes (a thread bounds the wait)."""
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for _ in range(n):
            line = proc.stdout.readline()
            if not line:
                return
            lines.append(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return lines


def _stderr(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        return "(still running)"
    return proc.stderr.read() if proc.stderr else ""


# ------------------------------------------------------------------ caps


def test_a_long_message_is_cut_and_an_inline_attachment_becomes_a_placeholder_both_counted(
    driver: Driver, chat: Chat
) -> None:
    image = "data:image/png;base64," + "A" * 200_000
    chat.messages = [
        {"role": "user", "content": f"look {image} here"},
        {"role": "assistant", "content": "x" * 200_000},
        {"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": image}]},
    ]
    chat.changed()
    driver.save(chat)
    rows = live(driver.db, chat.session_id)
    assert rows[0][2] == f"look {ATTACHMENT_PLACEHOLDER} here"
    assert rows[1][2].startswith("x" * MAX_MESSAGE_CHARS) and len(rows[1][2]) < MAX_MESSAGE_CHARS + 100
    assert rows[2][2] == "see\n[image_url]"
    counters = driver.counters()
    assert (counters["attachments_omitted"], counters["messages_cut"]) == (1, 1)
    chat.turn("next", "reply")
    driver.save(chat)  # the capped rows are not converted and counted again
    assert (driver.counters()["attachments_omitted"], driver.counters()["messages_cut"]) == (1, 1)


def test_a_chat_longer_than_the_cap_mirrors_its_first_messages_counted(
    driver: Driver, chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transcripts, "MAX_MESSAGES_PER_CHAT", 6)
    ten_messages(chat)
    driver.save(chat)
    assert [tuple(r[1:6]) for r in live(driver.db, chat.session_id)] == wanted(chat.messages[:6])
    assert driver.counters()["chats_capped"] == 1


# ------------------------------------------------------------------ the save path and the bookkeeping


def test_the_save_path_only_passes_a_reference_and_converts_nothing(
    hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig, mocker: Any
) -> None:
    installer.install(target=TARGET, enabled=True, transcripts=True, writer_config=fast_writer, reconcile_interval=0)
    chat = Chat(webui_dir, "c0ffee000501")
    chat.messages = conversation(500)
    chat.changed()
    converted_on = set()
    real_to_row = transcripts.to_row

    def spy(message: Any, notes: list[str] | None = None) -> Any:
        converted_on.add(threading.current_thread().name)
        return real_to_row(message, notes)

    mocker.patch.object(transcripts, "to_row", spy)
    submitted = mocker.spy(installer._state.get_writer(), "submit")
    chat.save()
    assert webui_insights.flush(10)
    assert submitted.call_args.args[0].messages is chat.messages
    assert converted_on == {THREAD_NAME}
    assert_mirrors(hermes_home / "state.db", chat)


def test_the_bookkeeping_is_a_few_numbers_per_chat_and_bounded(
    hermes_home: Path, webui_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transcripts, "_MEMORY_LIMIT", 5)
    writer = TranscriptWriter()
    chats = [Chat(webui_dir, f"c0ffee0006{n:02d}") for n in range(8)]
    for chat in chats:
        chat.messages = conversation(20)
    store = StateStore(hermes_home / "state.db")
    try:
        sync(store, [desired_of(c) for c in chats], write_transcript=writer)
    finally:
        store.close()
    memory = writer._memory
    assert len(memory) == 5
    assert all(
        type(count) is int and type(quick) is int and type(final) is str for count, quick, final in memory.values()
    )
