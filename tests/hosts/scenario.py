"""One scripted WebUI session on a real host, and everything it left behind.

Why one script: starting a real server and agent costs seconds, so a test run
drives each host × mode once and many assertions read the same result. The
script is the one issue #11 asks for, as a browser would do it:

- chat A "Plan the garden party": two streaming turns, one non-streaming turn
  (3 LLM calls), then a WebUI rename to ``RENAMED_IN_WEBUI``;
- chat B "Check my todo list": non-streaming only (on HEAD no one but the
  mirror writes its row); its first turn makes one tool call (``todo``), then
  ``hermes sessions rename B RENAMED_IN_CLI``, then another turn;
- chat C "Hello there": one streaming turn whose automatic title collides
  with a CLI session created beforehand (source ``cli``);
- a switch to profile ``work`` (created with ``hermes profile create``) and
  chat D there, one streaming turn; then back to ``default``;
- chat E "Start before the switch": its first streaming turn comes before
  everything else, its second after everything else. In mode ``checkbox``
  the checkbox is still off during the first (the Settings page turns it on
  right after, ``POST /api/settings``), so on HEAD hermes-agent has written
  E's row long before the mirror sees the chat: the mirror must move its
  ``started_at`` back and add the title, nothing else.

Then: the library's ``flush()``/``stats()`` inside the server, the server
stopped by PID, and the WebUI JSON files, every state.db row (root and
profile), ``hermes insights --days 1`` (all sources and ``--source webui``),
``hermes sessions list`` and ``SessionDB.resolve_session_by_title`` collected
into a :class:`ScenarioResult`. Modes:

- ``checkbox`` — settings.json ``sync_to_insights: true`` (the real
  configuration: the host's own bridge ``api/state_sync.py`` sees it too);
- ``env`` — ``WEBUI_INSIGHTS_ENABLED=1`` only;
- ``off`` — ``install()`` with nothing switched on (mirroring is off by default);
- ``control`` — no ``install()`` at all: what the host and hermes-agent write
  by themselves, the reference the other modes are compared with.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fake_llm import FakeLLM, Usage, title_for
from .host import (
    HermesWorld,
    HostServer,
    HostTraits,
    HttpError,
    Insights,
    copy_host,
    db_rows,
    host_id,
    insights,
    message_rows,
    parse_sessions_list,
    run_hermes,
    session_row,
    sessions_rename,
)

MODES = ("checkbox", "env", "off", "control")
MIRRORED_MODES = ("checkbox", "env")
MODEL = "fake-model"
PROFILE = "work"
RENAMED_IN_WEBUI = "Garden party plans"
RENAMED_IN_CLI = "Renamed in CLI"
WEBUI_COLLISION_SUFFIX = " (WebUI)"

A_TURNS = (("stream", "Plan the garden party"), ("stream", "What about music?"), ("sync", "And the food?"))
B_FIRST, B_SECOND = "Check my todo list", "Anything else to do?"
C_FIRST = "Hello there"
D_FIRST = "Profile work question"
E_FIRST, E_SECOND = "Start before the switch", "Back after the switch"
SETTINGS_TTL_S = 1.0  # how long the library may keep a settings.json answer (install(settings_ttl=...) default)


@dataclass
class Chat:
    """One WebUI chat of the script and what became of it."""

    key: str
    session_id: str
    profile: str | None  # the profile it was created in (None = default)
    first_message: str
    turns: list[str] = field(default_factory=list)  # "stream" | "sync", in order
    tool_calls: int = 0  # tool calls the fake LLM made in this chat
    llm_calls: int = 0  # chat-completion calls (title requests excluded)
    stream_calls: int = 0  # of which in streaming turns (the ones whose usage the WebUI records)
    unseen_calls: int = 0  # of which while mirroring was off (chat E's first turn in mode checkbox)
    streams: list[list[str]] = field(default_factory=list)  # SSE event names per streaming turn
    json: dict[str, Any] = field(default_factory=dict)  # final WebUI session file
    json_after_first_turn: dict[str, Any] = field(default_factory=dict)  # WebUI JSON after turn 1 (chat A)
    row_after_first_turn: dict[str, Any] | None = None  # its state.db row then, after a flush (chat A)
    row: dict[str, Any] | None = None  # its row in its own profile's state.db
    other_rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (db, row) elsewhere
    messages: list[dict[str, Any]] = field(default_factory=list)  # state.db messages rows


@dataclass
class ScenarioResult:
    host: str
    mode: str
    traits: HostTraits
    world: HermesWorld
    chats: dict[str, Chat]
    cli_session_id: str
    cli_title: str
    insights_all: Insights | None
    insights_webui: Insights | None
    sessions_list: list[dict[str, str]]
    sessions_list_text: str
    resolve_cli_title: str | None
    cli_rename: subprocess.CompletedProcess[str] | None
    stats: dict[str, Any]
    flushed: bool
    exit_code: int | None
    rows_root: list[dict[str, Any]]
    rows_profile: list[dict[str, Any]]
    usage: Usage
    started: float
    finished: float
    server_log: str
    server_errors: list[str] = field(default_factory=list)  # tracebacks / ERROR lines in the host's log
    errors: list[str] = field(default_factory=list)  # script steps that failed (kept to report, not raised)

    def webui_rows(self, profile: str | None = None) -> list[dict[str, Any]]:
        rows = self.rows_profile if profile == PROFILE else self.rows_root
        return [r for r in rows if r.get("source") == "webui"]


def expected_auto_title(traits: HostTraits, first_message: str) -> str:
    """The title a host gives a chat on its own: HEAD asks the LLM, v0.50.12 cuts the first message."""
    return title_for(first_message) if traits.llm_titles else first_message[:64]


def _create_cli_session(world: HermesWorld, title: str) -> str:
    """A session the hermes CLI made earlier today, holding ``title``."""
    from hermes_state import SessionDB

    db = SessionDB(world.state_db())
    try:
        sid = "cli_session_0001"
        db.create_session(sid, "cli", model=MODEL)
        db.set_session_title(sid, title)
    finally:
        db.close()
    return sid


def run_scenario(
    src: Path,
    mode: str,
    workdir: Path,
    *,
    debounce_s: float = 0.05,
) -> ScenarioResult:
    """Drive one host in one mode through the script; always stops what it starts.

    The server and the ``hermes`` CLI both run on this interpreter's
    environment (``sys.executable``): one hermes-agent for the whole run.
    """
    assert mode in MODES, mode
    started = time.time()
    errors: list[str] = []
    fake = FakeLLM(model=MODEL).start()
    server: HostServer | None = None
    try:
        world = HermesWorld(workdir / "world", fake.base_url, MODEL).create()
        copy = copy_host(src, workdir / "host")
        traits = HostTraits.read(copy)
        cli_title = expected_auto_title(traits, C_FIRST)
        cli_sid = _create_cli_session(world, cli_title)
        world.create_profile(PROFILE)
        server = HostServer(
            copy,
            world,
            workdir,
            install=mode != "control",
            extra_env={"WEBUI_INSIGHTS_ENABLED": "1"} if mode == "env" else {},
            debounce_s=debounce_s,
        )
        server.start()
        chats: dict[str, Chat] = {}

        def turn(chat: Chat, kind: str, message: str, tool: bool = False) -> None:
            before = fake.count("chat") + fake.count("tool_call")
            if tool:
                fake.queue_tool_call()
                chat.tool_calls += 1
            if kind == "stream":
                result = server.chat_stream(chat.session_id, message)
                chat.streams.append(result.names)
                if result.ended_by not in ("done", "stream_end"):
                    errors.append(f"chat {chat.key} stream ended by {result.ended_by}: {result.events[-1:]}")
            else:
                try:
                    server.chat_sync(chat.session_id, message)
                except HttpError as exc:
                    errors.append(f"chat {chat.key} /api/chat: {exc}")
            chat.turns.append(kind)
            calls = fake.count("chat") + fake.count("tool_call") - before
            chat.llm_calls += calls
            if kind == "stream":
                chat.stream_calls += calls

        def new_chat(key: str, first: str, profile: str | None = None) -> Chat:
            session = server.new_session()
            chat = Chat(key, session["session_id"], profile, first)
            chats[key] = chat
            return chat

        # chat E, first turn: in mode checkbox, before the checkbox is ticked
        e = new_chat("E", E_FIRST)
        turn(e, "stream", E_FIRST)
        if mode == "checkbox":
            e.unseen_calls = e.llm_calls  # nobody counted them but the WebUI's file
            server.request("POST", "/api/settings", {"sync_to_insights": True})  # what the Settings page sends
            time.sleep(SETTINGS_TTL_S + 0.5)

        # chat A: stream, stream, sync; WebUI rename
        a = new_chat("A", A_TURNS[0][1])
        turn(a, "stream", A_TURNS[0][1])
        a.json_after_first_turn = server.session_json(a.session_id)
        server.flush()
        a.row_after_first_turn = session_row(world.state_db(), a.session_id)
        for kind, message in A_TURNS[1:]:
            turn(a, kind, message)
        server.rename(a.session_id, RENAMED_IN_WEBUI)

        # chat B: sync with a tool call; CLI rename; another sync turn
        b = new_chat("B", B_FIRST)
        turn(b, "sync", B_FIRST, tool=True)
        server.flush()
        cli_rename = sessions_rename(world, b.session_id, RENAMED_IN_CLI)
        turn(b, "sync", B_SECOND)

        # chat C: its automatic title collides with the CLI session's
        c = new_chat("C", C_FIRST)
        turn(c, "stream", C_FIRST)

        # chat D in profile "work" (v0.50.12 refuses a switch while a stream is still registered: retry briefly)
        _switch_profile(server, PROFILE, errors)
        d = new_chat("D", D_FIRST, PROFILE)
        turn(d, "stream", D_FIRST)
        _switch_profile(server, "default", errors)

        # chat E, second turn
        turn(e, "stream", E_SECOND)

        flushed = server.flush(15.0)
        stats = server.stats()
        for chat in chats.values():
            chat.json = server.session_json(chat.session_id)
    finally:
        exit_code = server.stop() if server is not None else None
        fake.stop()

    # After the stop: nothing writes any more; read everything.
    for chat in chats.values():
        own = world.state_db(chat.profile)
        chat.row = session_row(own, chat.session_id)
        chat.messages = message_rows(own, chat.session_id)
        for other in (world.state_db(None), world.state_db(PROFILE)):
            if other != own and (row := session_row(other, chat.session_id)) is not None:
                chat.other_rows.append((str(other), row))
    rows_root = db_rows(world.state_db(), "SELECT * FROM sessions ORDER BY started_at")
    rows_profile = db_rows(world.state_db(PROFILE), "SELECT * FROM sessions ORDER BY started_at")

    insights_all = insights_webui = None
    try:
        insights_all = insights(world, days=1)
        insights_webui = insights(world, days=1, source="webui")
    except AssertionError as exc:
        errors.append(f"hermes insights: {exc}")
    listing = run_hermes(world, "sessions", "list")
    listing_text = listing.stdout + (listing.stderr if listing.returncode else "")

    from hermes_state import SessionDB

    db = SessionDB(world.state_db())
    try:
        resolved = db.resolve_session_by_title(cli_title)
    finally:
        db.close()

    return ScenarioResult(
        host=host_id(src),
        mode=mode,
        traits=traits,
        world=world,
        chats=chats,
        cli_session_id=cli_sid,
        cli_title=cli_title,
        insights_all=insights_all,
        insights_webui=insights_webui,
        sessions_list=parse_sessions_list(listing.stdout),
        sessions_list_text=listing_text,
        resolve_cli_title=resolved,
        cli_rename=cli_rename,
        stats=stats,
        flushed=flushed,
        exit_code=exit_code,
        rows_root=rows_root,
        rows_profile=rows_profile,
        usage=fake.usage,
        started=started,
        finished=time.time(),
        server_log=server.log_tail(400) if server is not None else "",
        server_errors=_log_errors(server.log_tail(100_000)) if server is not None else [],
        errors=errors,
    )


def _switch_profile(server: HostServer, name: str, errors: list[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.switch_profile(name)
            return
        except HttpError as exc:
            if exc.status != 409 or time.monotonic() > deadline:
                errors.append(f"switch to profile {name}: {exc}")
                return
            time.sleep(0.2)


def _log_errors(log: str) -> list[str]:
    """Lines of the host's log that mean something broke (tracebacks, ERROR lines, stream errors)."""
    marks = ("Traceback (most recent call last)", "[webui] ERROR", "stream error", "CRITICAL")
    return [line for line in log.splitlines() if any(m in line for m in marks)]
