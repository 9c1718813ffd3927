"""Opt-in transcript mirroring, against the real SessionDB, its search and `hermes insights`."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import read_row, run_insights

import webui_insights
from webui_insights import installer, sink
from webui_insights.demo_host import TARGET, DemoSession
from webui_insights.transcript import TranscriptDelta, TranscriptTracker, to_row


@pytest.fixture
def transcripts(hermes_home: Path, fast_writer) -> Any:
    installer.install(target=TARGET, enabled=True, transcripts=True, writer_config=fast_writer)
    return installer


def _messages(db_path: Path, session_id: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        # hermes-agent < 0.16 has no "active" column: every row is live there.
        live = " AND active = 1" if "active" in {r[1] for r in conn.execute("PRAGMA table_info(messages)")} else ""
        return conn.execute(
            f"SELECT role, content, tool_name FROM messages WHERE session_id = ?{live} ORDER BY id",
            (session_id,),
        ).fetchall()
    finally:
        conn.close()


def _tool_turn(chat: DemoSession, question: str, answer: str) -> None:
    now = time.time()
    chat.messages += [
        {"role": "user", "content": question, "timestamp": now},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "web_search", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "web_search", "content": "results"},
        {"role": "assistant", "content": answer},
    ]
    chat.input_tokens += 100
    chat.output_tokens += 10


def _chat(webui_dir: Path) -> DemoSession:
    chat = DemoSession(webui_dir, title="Transcript chat")
    chat.add_turn("first question", "first answer", input_tokens=50, output_tokens=5)
    chat.save()
    _tool_turn(chat, "look up the zanzibarian weather", "it is sunny")
    chat.save()
    chat.add_turn("thanks", "you are welcome", input_tokens=50, output_tokens=5)
    chat.save()
    return chat


def test_three_turns_with_a_tool_call_become_messages_rows_in_order(
    transcripts, webui_dir: Path, hermes_home: Path
) -> None:
    chat = _chat(webui_dir)
    assert webui_insights.flush(5)
    rows = _messages(hermes_home / "state.db", chat.session_id)
    assert [r[0] for r in rows] == ["user", "assistant", "user", "assistant", "tool", "assistant", "user", "assistant"]
    assert rows[2][1] == "look up the zanzibarian weather"
    assert rows[4][2] == "web_search"
    row = read_row(hermes_home / "state.db", chat.session_id)
    assert row is not None
    assert (row["message_count"], row["tool_call_count"]) == (8, 1)


def test_hermes_session_search_finds_a_word_said_only_in_the_webui(
    transcripts, webui_dir: Path, hermes_home: Path
) -> None:
    chat = _chat(webui_dir)
    assert webui_insights.flush(5)
    db = sink.hermes_state().SessionDB(hermes_home / "state.db")
    try:
        hits = db.search_messages("zanzibarian")
    finally:
        db.close()
    assert [h["session_id"] for h in hits] == [chat.session_id]


def test_real_insights_shows_user_messages_and_the_tool(transcripts, webui_dir: Path, hermes_home: Path) -> None:
    _chat(webui_dir)
    assert webui_insights.flush(5)
    report = run_insights(hermes_home, days=1)
    assert re.search(r"Messages:\s+8\b", report), report
    assert re.search(r"User messages:\s+3\b", report), report
    assert re.search(r"Tool calls:\s+1\s", report), report
    assert re.search(r"web_search\s+\d+", report), report


def test_an_edit_of_an_earlier_message_is_mirrored_exactly(transcripts, webui_dir: Path, hermes_home: Path) -> None:
    chat = _chat(webui_dir)
    assert webui_insights.flush(5)
    # Edit-and-resend: the WebUI replaces message 2 and drops what followed.
    chat.messages = chat.messages[:2] + [{"role": "user", "content": "an edited question"}]
    chat.messages.append({"role": "assistant", "content": "a new answer"})
    chat.input_tokens += 1
    chat.save()
    assert webui_insights.flush(5)
    mirrored = _messages(hermes_home / "state.db", chat.session_id)
    assert [(r[0], r[1]) for r in mirrored] == [(to_row(m).role, to_row(m).content) for m in chat.messages]
    assert read_row(hermes_home / "state.db", chat.session_id)["message_count"] == 4  # type: ignore[index]


def test_streaming_edit_of_the_last_message_replaces_only_it(transcripts, webui_dir: Path, hermes_home: Path) -> None:
    chat = DemoSession(webui_dir, title="Streaming")
    chat.add_turn("q", "partial", input_tokens=5, output_tokens=1)
    chat.save()
    assert webui_insights.flush(5)
    chat.messages[-1]["content"] = "partial and then the rest"
    chat.output_tokens += 5
    chat.save()
    assert webui_insights.flush(5)
    mirrored = _messages(hermes_home / "state.db", chat.session_id)
    assert [r[1] for r in mirrored] == ["q", "partial and then the rest"]


def test_transcripts_off_writes_no_messages(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = _chat(webui_dir)
    assert webui_insights.flush(5)
    assert _messages(hermes_home / "state.db", chat.session_id) == []
    assert read_row(hermes_home / "state.db", chat.session_id)["message_count"] == 8  # type: ignore[index]


def test_a_restart_appends_without_duplicating(hermes_home: Path, webui_dir: Path, fast_writer) -> None:
    installer.install(target=TARGET, enabled=True, transcripts=True, writer_config=fast_writer)
    chat = _chat(webui_dir)
    assert webui_insights.flush(5)
    installer._reset_for_tests()
    installer.install(target=TARGET, enabled=True, transcripts=True, writer_config=fast_writer)
    chat.add_turn("after restart", "still here", input_tokens=1, output_tokens=1)
    chat.save()
    assert webui_insights.flush(5)
    mirrored = _messages(hermes_home / "state.db", chat.session_id)
    assert len(mirrored) == 10 and mirrored[-2][1] == "after restart"


def test_a_5000_message_chat_then_one_turn_is_one_small_transaction(
    transcripts, webui_dir: Path, hermes_home: Path
) -> None:
    chat = DemoSession(webui_dir, title="Long chat")
    for n in range(2500):
        chat.messages.append({"role": "user", "content": f"question {n}"})
        chat.messages.append({"role": "assistant", "content": f"answer {n}"})
    chat.input_tokens = 10
    chat.save()
    assert webui_insights.flush(30)
    before = webui_insights.stats()
    chat.add_turn("one more", "done", input_tokens=1, output_tokens=1)
    chat.save()
    assert webui_insights.flush(5)
    after = webui_insights.stats()
    assert after["transactions"] - before["transactions"] == 1
    row = read_row(hermes_home / "state.db", chat.session_id)
    assert row is not None and row["message_count"] == 5002


def test_inline_images_become_a_placeholder() -> None:
    image = "data:image/png;base64," + "A" * 200_000
    row = to_row(
        {"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": image}]}
    )
    assert row.content == "see\n[image_url]"
    row = to_row({"role": "user", "content": f"inline {image} end"})
    assert row.content == "inline [inline attachment omitted] end"
    assert len(to_row({"role": "user", "content": "x" * 200_000}).content or "") < 70_000


def test_a_lost_update_resyncs_the_whole_transcript(transcripts, webui_dir: Path, hermes_home: Path) -> None:
    chat = _chat(webui_dir)
    assert webui_insights.flush(5)
    conn = sqlite3.connect(hermes_home / "state.db")
    conn.execute("UPDATE webui_insights_sync SET transcript_count = 99")  # state.db changed behind our back
    conn.commit()
    conn.close()
    chat.add_turn("next", "reply", input_tokens=1, output_tokens=1)
    chat.save()
    assert webui_insights.flush(5)
    assert webui_insights.stats()["transcript_resyncs"] == 1
    chat.input_tokens += 1
    chat.save()  # the next save sends the whole transcript
    assert webui_insights.flush(5)
    mirrored = _messages(hermes_home / "state.db", chat.session_id)
    assert [r[1] for r in mirrored] == [to_row(m).content for m in chat.messages]


def test_tracker_sends_only_new_messages_and_nothing_when_unchanged() -> None:
    tracker = TranscriptTracker()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "a"}]
    first = tracker.delta("k", messages)
    assert first.full and len(first.rows) == 1
    messages.append({"role": "assistant", "content": "b"})
    second = tracker.delta("k", messages)
    assert (second.keep, len(second.rows), second.full) == (1, 1, False)
    assert tracker.delta("k", messages).is_noop


def test_deltas_combine_in_order() -> None:
    tracker = TranscriptTracker()
    messages: list[dict[str, Any]] = [{"role": "user", "content": str(n)} for n in range(3)]
    tracker.delta("k", messages)
    messages.append({"role": "assistant", "content": "3"})
    one = tracker.delta("k", messages)
    messages[:] = messages[:2] + [{"role": "user", "content": "x"}]
    two = tracker.delta("k", messages)
    merged: TranscriptDelta = one.then(two)
    assert (merged.keep, [r.content for r in merged.rows]) == (2, ["x"])
    assert (merged.prev_count, merged.prev_chain) == (one.prev_count, one.prev_chain)


def test_backfill_transcripts_makes_old_chats_searchable_and_verify_repairs_drift(
    hermes_home: Path, webui_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from webui_insights.cli import main

    chats = [DemoSession(webui_dir, title=f"Old chat {n}") for n in range(3)]
    for n, chat in enumerate(chats):
        chat.add_turn(f"tell me about quokkaland {n}", "a small island", input_tokens=10, output_tokens=2)
        chat.save()  # not installed: these chats predate the mirror
    assert main(["backfill", "--transcripts"]) == 0
    db = hermes_home / "state.db"
    assert [len(_messages(db, c.session_id)) for c in chats] == [2, 2, 2]
    hermes = sink.hermes_state().SessionDB(db)
    try:
        assert {h["session_id"] for h in hermes.search_messages("quokkaland")} == {c.session_id for c in chats}
    finally:
        hermes.close()
    capsys.readouterr()
    assert main(["backfill", "--transcripts", "--json"]) == 0
    assert '"written": 0' in capsys.readouterr().out  # idempotent
    assert main(["verify", "--transcripts"]) == 0

    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE messages SET content = 'tampered' WHERE session_id = ? AND role = 'user'", (chats[1].session_id,)
    )
    conn.commit()
    conn.close()
    assert main(["verify", "--transcripts"]) == 1
    assert "transcript" in capsys.readouterr().out
    assert main(["verify", "--transcripts", "--fix"]) == 0
    assert [r[1] for r in _messages(db, chats[1].session_id)] == ["tell me about quokkaland 1", "a small island"]
    assert main(["verify", "--transcripts"]) == 0


def test_status_names_the_transcripts_switch(
    hermes_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from webui_insights.cli import main

    monkeypatch.setenv("WEBUI_INSIGHTS_TRANSCRIPTS", "1")
    main(["status"])
    assert re.search(r"transcripts\s+on \(env WEBUI_INSIGHTS_TRANSCRIPTS\)", capsys.readouterr().out)


def test_lone_surrogates_in_messages_are_replaced_not_fatal(transcripts, webui_dir: Path, hermes_home: Path) -> None:
    chat = DemoSession(webui_dir, title="Scraped")
    chat.add_turn("scraped \udc15 text", "ok", input_tokens=1, output_tokens=1)
    chat.save()
    assert webui_insights.flush(5)
    assert [r[1] for r in _messages(hermes_home / "state.db", chat.session_id)] == ["scraped \ufffd text", "ok"]


def test_a_chat_reloaded_from_its_file_is_not_resent() -> None:
    import copy

    tracker = TranscriptTracker()
    messages: list[dict[str, Any]] = [{"role": "user", "content": str(n)} for n in range(50)]
    tracker.delta("k", messages)
    reloaded = copy.deepcopy(messages) + [{"role": "assistant", "content": "new"}]  # equal, not the same objects
    delta = tracker.delta("k", reloaded)
    assert (delta.keep, [r.content for r in delta.rows]) == (50, ["new"])
