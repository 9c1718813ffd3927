"""Zero edits: each snapshot's own start paths behind ``webui-insights run``, end to end.

For each host found and each way its users start it — ``python server.py``,
``python bootstrap.py --foreground`` (execs ``server.py``; HEAD only) and
``python bootstrap.py`` (spawns ``server.py`` detached, waits for /health and
exits) — the launcher starts the WebUI with ``--enabled``; one streaming
chat turn goes over HTTP against the fake LLM; then:

- the chat's row in state.db is right (tokens in hermes' convention, the
  WebUI's title and start, its messages counted) and webui-insights' own
  record of it exists: the mirror ran inside the server, put there by the
  launcher's ``PYTHONPATH`` alone;
- the test's own ``sitecustomize`` (``hosts/guard_site``, behind the
  bootstrap on ``PYTHONPATH``) ran in the server: the bootstrap chains;
- no file of the WebUI copy changed (sha256 of every file, before/after);
- the launcher's PID is the server's (exec paths) and stopping the launcher
  by PID stops the server, leaving no process behind; a detached server
  (``bootstrap.py`` without ``--foreground``, by the WebUI's design) is
  stopped by its own PID, and is gone.

One fake LLM serves the whole module; each test has its own world and port.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hosts.fake_llm import DEFAULT_MODEL, FakeLLM
from hosts.host import HermesWorld, HostTraits, copy_host, db_rows, host_id, host_sources, session_row
from hosts.launched import EXECS, START_PATHS, LaunchedServer, processes_running, tree_digest, wait_gone

HOSTS = host_sources()
# A line of ours: every message starts "webui-insights: "; a host's log format may show the logger's name.
OUR_LOG_LINE = re.compile(
    r"webui-insights: "
    r"|\bwebui_insights\b.*\b(WARNING|ERROR|CRITICAL)\b"
    r"|\b(WARNING|ERROR|CRITICAL)\b.*\bwebui_insights\b"
)
pytestmark = pytest.mark.real_host if HOSTS else pytest.mark.real_host_hint


def _cases() -> list[Any]:
    if not HOSTS:
        from hosts.host import SKIP_HINT

        return [pytest.param(None, None, id="no-host", marks=pytest.mark.skip(reason=SKIP_HINT))]
    cases = []
    for src in HOSTS:
        for path in START_PATHS:
            marks = []
            if path == "bootstrap-foreground" and "--foreground" not in (src / "bootstrap.py").read_text():
                marks.append(
                    pytest.mark.skip(
                        reason=f"{src.name}'s bootstrap.py has no --foreground: it can only spawn server.py "
                        "(covered by bootstrap-spawn)"
                    )
                )
            cases.append(pytest.param(src, path, id=f"{host_id(src)}-{path}", marks=marks))
    return cases


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    llm = FakeLLM(model=DEFAULT_MODEL).start()
    try:
        yield llm
    finally:
        llm.stop()


@pytest.fixture
def launched(tmp_path: Path, fake: FakeLLM) -> Iterator[Any]:
    """``launched(src, path)`` → a started LaunchedServer on a fresh copy and world; all stopped at teardown."""
    servers: list[LaunchedServer] = []

    def start(src: Path, path: str) -> LaunchedServer:
        copy = copy_host(src, tmp_path / "host")
        world = HermesWorld(tmp_path / "world", fake.base_url, DEFAULT_MODEL).create()
        server = LaunchedServer(copy, world, tmp_path, path=path)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize(("src", "path"), _cases())
def test_the_webui_started_through_the_launcher_mirrors_a_chat_and_stops_with_it(
    src: Path, path: str, launched: Any, fake: FakeLLM
) -> None:
    traits = HostTraits.read(src)
    before = tree_digest(src)  # the copy is made from it: same files, same bytes
    server = launched(src, path)
    assert tree_digest(server.src) == before

    if path in EXECS:
        assert server.server_pid == server.proc.pid  # exec all the way: the launcher *is* the server
    else:
        assert server.launcher_exit == 0, server.log_tail()  # bootstrap.py returned once /health answered
        assert server.server_pid != server.proc.pid

    session_id = server.new_session()["session_id"]
    calls_before = fake.count("chat")
    result = server.chat_stream(session_id, "Launched without an edit")
    assert result.ended_by in ("done", "stream_end"), result.events[-3:]
    calls = fake.count("chat") - calls_before

    # Stop as a supervisor would: the launcher's PID; a detached server, its own PID.
    pid = server.server_pid
    assert pid is not None
    if path in EXECS:
        code = server.stop_launcher()
        assert code in (0, -int(server.stop_signal)), server.log_tail()
    else:
        assert server.stop_launcher() is None  # it ended by itself, long ago
        server.stop()
    assert wait_gone([pid], 20) == [], f"server {pid} still running:\n{server.log_tail()}"
    assert processes_running(server.server_py) == [], "a server process outlived the launcher"

    ran_in = server.site_log_processes()
    assert any(
        p == pid and cmdline.split()[1:2] in (["server.py"], [str(server.server_py)]) for p, cmdline in ran_in
    ), f"the sitecustomize the bootstrap hides did not run in the server (pid {pid}): {ran_in}"
    ours = [line for line in server.log_tail(100_000).splitlines() if OUR_LOG_LINE.search(line)]
    assert ours == [], "a normal start logs nothing of ours at WARNING or above"
    assert tree_digest(server.src) == before, "a file of the WebUI changed"

    chat = server.session_json(session_id)
    db = server.world.state_db()
    row = session_row(db, session_id)
    assert row is not None, f"no row for the chat in {db}:\n{server.log_tail()}"
    tables = {r["name"] for r in db_rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    record = (
        db_rows(db, "SELECT * FROM webui_insights_chats WHERE session_id = ?", (session_id,))
        if "webui_insights_chats" in tables
        else []
    )
    assert record, "webui-insights never handled the chat: the launcher did not install it"
    usage = fake.usage
    assert row["source"] == "webui"
    assert row["title"] == chat["title"]
    assert math.isclose(row["started_at"], chat["created_at"], abs_tol=1e-3)
    assert row["input_tokens"] == (usage.prompt - usage.cached) * calls
    assert row["cache_read_tokens"] == usage.cached * calls
    assert row["output_tokens"] == usage.completion * calls
    assert row["message_count"] == 2
    owner = record[0]["owner"]
    assert owner == ("hermes" if traits.agent_writes_state_db else "mirror"), record[0]
