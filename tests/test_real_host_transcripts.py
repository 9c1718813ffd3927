"""Transcripts on the real hermes-webui server, with the real hermes-agent (``make test-host``).

One script per host, run twice — mirror with transcripts on, and a control
run without the library — against the fake LLM on 127.0.0.1:

- chat S: two streaming turns, then one ``/api/chat`` turn;
- chat N: ``/api/chat`` only, the first turn with a tool call.

On HEAD, hermes-agent writes a streaming chat's messages itself: with
transcripts on, that chat has exactly the messages hermes-agent wrote in the
control run (none of ours, none twice). On v0.50.12 nobody but the mirror
writes, so every chat has the WebUI's messages. A non-streaming chat has the
WebUI's messages on both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hosts.fake_llm import FakeLLM
from hosts.host import SKIP_HINT, HermesWorld, HostServer, copy_host, host_id, host_sources, message_rows

from webui_insights.engine.transcripts import to_row

HOSTS = host_sources()
pytestmark = pytest.mark.real_host
HOST_PARAMS = (
    [pytest.param(src, id=host_id(src)) for src in HOSTS]
    if HOSTS
    else [pytest.param(None, id="no-host", marks=pytest.mark.skip(reason=SKIP_HINT))]
)
MODEL = "fake-model"
TRANSCRIPTS_ON = {"WEBUI_INSIGHTS_ENABLED": "1", "WEBUI_INSIGHTS_TRANSCRIPTS": "1"}


@dataclass
class Run:
    agent_writes: bool  # the host hands streaming chats' agents a SessionDB
    stream_chat: str
    sync_chat: str
    db: Path
    webui: dict[str, list[dict[str, Any]]]  # session id -> the WebUI's messages
    stored: dict[str, list[dict[str, Any]]]  # session id -> state.db's messages rows
    stats: dict[str, Any]
    flushed: bool


def run_script(src: Path, workdir: Path, *, install: bool) -> Run:
    """The script on one host; stops what it starts, by PID."""
    fake = FakeLLM(model=MODEL).start()
    server: HostServer | None = None
    try:
        world = HermesWorld(workdir / "world", fake.base_url, MODEL).create({})
        copy = copy_host(src, workdir / "host")
        server = HostServer(copy, world, workdir, install=install, extra_env=TRANSCRIPTS_ON if install else {})
        server.start()
        stream_chat = server.new_session()["session_id"]
        for message in ("Plan the garden party", "What about music?"):
            ended = server.chat_stream(stream_chat, message).ended_by
            assert ended in ("done", "stream_end"), ended
        server.chat_sync(stream_chat, "And the food?")
        sync_chat = server.new_session()["session_id"]
        fake.queue_tool_call()
        server.chat_sync(sync_chat, "Check my todo list")
        server.chat_sync(sync_chat, "Anything else to do?")
        flushed = server.flush(30.0)
        stats = server.stats()
        webui = {sid: server.session_json(sid).get("messages", []) for sid in (stream_chat, sync_chat)}
    finally:
        if server is not None:
            server.stop()
        fake.stop()
    db = world.state_db()
    stored = {sid: message_rows(db, sid) for sid in (stream_chat, sync_chat)}
    return Run(server.traits.agent_writes_state_db, stream_chat, sync_chat, db, webui, stored, stats, flushed)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[Path, bool], Run]]:
    cache: dict[tuple[Path, bool], Run] = {}
    yield cache


def get_run(cache: dict[tuple[Path, bool], Run], src: Path, install: bool, tmp: pytest.TempPathFactory) -> Run:
    key = (src, install)
    if key not in cache:
        name = f"{host_id(src)}-{'mirror' if install else 'control'}"
        cache[key] = run_script(src, tmp.mktemp(name), install=install)
    return cache[key]


def content(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What a message is, as stored: role, content, tool calls, tool call id, tool name."""
    return [(r["role"], r["content"], r["tool_calls"], r["tool_call_id"], r["tool_name"]) for r in rows]


def live(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("active", 1) == 1]


@pytest.mark.parametrize("src", HOST_PARAMS)
def test_a_streaming_chat_has_exactly_the_messages_hermes_agent_writes_none_twice(
    src: Path, runs: dict[tuple[Path, bool], Run], tmp_path_factory: pytest.TempPathFactory
) -> None:
    mirror = get_run(runs, src, True, tmp_path_factory)
    assert mirror.flushed
    rows = mirror.stored[mirror.stream_chat]
    if mirror.agent_writes:
        control = get_run(runs, src, False, tmp_path_factory)
        theirs = control.stored[control.stream_chat]
        assert content(rows) == content(theirs) and len(rows) == 4  # the two streaming turns, as hermes wrote them
        assert mirror.stats["transcripts"].get("messages_written", 0) == len(
            mirror.webui[mirror.sync_chat]
        )  # only the other chat's
        assert mirror.stats["transcripts"]["left_to_hermes"] >= 1
    else:
        # Nobody else writes this host's chats: the WebUI's messages, all three turns.
        want = [tuple(to_row(m)[:5]) for m in mirror.webui[mirror.stream_chat]]
        assert [t[:5] for t in content(live(rows))] == want and len(want) == 6
    assert len({r["id"] for r in rows}) == len(rows)


@pytest.mark.parametrize("src", HOST_PARAMS)
def test_a_non_streaming_chat_gets_the_webuis_messages_with_its_tool_call(
    src: Path, runs: dict[tuple[Path, bool], Run], tmp_path_factory: pytest.TempPathFactory
) -> None:
    mirror = get_run(runs, src, True, tmp_path_factory)
    rows = live(mirror.stored[mirror.sync_chat])
    want = [tuple(to_row(m)[:5]) for m in mirror.webui[mirror.sync_chat]]
    assert content(rows) == want
    assert any(r["tool_calls"] for r in rows) and any(r["role"] == "tool" for r in rows)
    assert mirror.stats["internal_errors"] == 0  # (a busy state.db while hermes-agent writes is a retry, not this)
