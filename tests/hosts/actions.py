"""Every session action the WebUI offers, on one real server per host, and state.db after each.

Why one run: a server start costs seconds and CI runs the real-host tests
five times, so each host gets ONE server (mirroring on through the WebUI's
own checkbox, ``sync_to_insights`` in settings.json, as users run it) and
this script drives every action a browser can send — where the host has
the route (:meth:`HostTraits.has_route`) — over several chats. After each
action the library is flushed and a :class:`Step` keeps every state.db row
and every chat's WebUI file; the tests (``tests/test_real_host_actions.py``)
then judge each action from those steps. At the end, once: the server is
stopped, ``webui-insights backfill`` runs over the WebUI's folder (a sweep
must not bring anything back or count anything twice), and ``hermes
insights --days 1`` and ``hermes sessions list`` are read.

The LLM calls of every turn are taken from the fake's own log (kind,
usage reported, delivered or not) and credited to the chat that made them:
the tests compute each row's oracle from those, never from the library.

The chats (HEAD-only actions skipped on v0.50.12, with the reason kept):

- ``new``: ``/api/session/new`` and nothing else.
- ``stream``: two streaming turns (the "normal chat" of the quiet-start
  check); then rename, title regenerate (HEAD), pin, archive, move to a
  project — none of them activity; then it is the source of duplicate
  (HEAD's route; v0.50.12's front end: new + rename "X (copy)") and branch
  (HEAD); each copy gets a turn of its own; then manual compress (HEAD).
- ``sync``: ``/api/chat`` turns only; ``mixed``: a streaming turn, then an
  ``/api/chat`` turn.
- ``edits``: two turns, then retry, undo (HEAD) + a turn, truncate + a turn
  (edit and resend), regenerate (HEAD).
- ``clear``: a turn, then clear, then ``/api/sessions/cleanup`` and
  ``/api/sessions/cleanup_zero_message``.
- ``compress``: two turns, then a turn whose first call reports a prompt
  bigger than hermes-agent's compression threshold: the agent compresses
  (HEAD: rotates to a new session id, ``compression.in_place: false`` in
  this world's config.yaml), then one more turn in the continuation.
- ``cancel``: a turn, then a turn cancelled while its second LLM call
  hangs (the first, a tool call, was answered), then a turn.
- ``imported``: ``/api/session/import`` of an export (with token totals in
  it, which the hosts ignore), then a turn.
- ``cli``: a hermes CLI session opened with ``/api/session/import_cli``, a
  turn, ``hermes sessions delete``, another turn.
- ``deleted``: a turn, then ``/api/session/delete``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fake_llm import Call, FakeLLM, Usage
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
    parse_sessions_list,
    run_hermes,
    sessions_delete,
)

MODEL = "fake-model"
# A prompt over hermes-agent's compression threshold (75% of the fake's 200,000-token window).
BIG_PROMPT = Usage(prompt=160_000, cached=200, completion=56)
# Rotation on compression (a new session id with parent_session_id): hermes-agent's own
# default before 0.19; 0.19's config default compacts in place under the same id.
CONFIG_EXTRA = "compression:\n  in_place: false\n"
RENAMED = "Garden party plans"
CLI_SESSION_TITLE = "Fix the CLI build"
_WARNING = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")


@dataclass
class ActChat:
    """One chat of the script: its ids, and the LLM calls its turns made."""

    key: str
    session_id: str
    ids: list[str] = field(default_factory=list)  # every id it had (HEAD compression rotates it)
    calls: list[Call] = field(default_factory=list)  # chat/tool calls answered in full (usage delivered)
    cut_calls: list[Call] = field(default_factory=list)  # calls a cancel cut off (no usage delivered)
    turns: list[str] = field(default_factory=list)  # "stream" | "sync" | "cancelled" | "regenerate"
    turn_started: list[float] = field(default_factory=list)  # wall clock at each turn's request
    messages_added: int = 0  # messages the WebUI added over all its turns (never minus a removal)

    def calls_between(self, first: int, last: int | None = None) -> list[Call]:
        return self.calls[first:last]


@dataclass
class Step:
    """The world right after one action (and a flush of the library)."""

    action: str
    chat: str
    at: float
    rows: dict[str, dict[str, Any]]  # every sessions row of the root state.db, by id
    files: dict[str, dict[str, Any] | None]  # every chat's WebUI file by session id (None: no file)
    n_calls: dict[str, int]  # per chat: len(chat.calls) at this point
    n_added: dict[str, int]  # per chat: chat.messages_added at this point
    message_rows: dict[str, int]  # messages rows in state.db, by session id (hermes-agent's own record)
    note: Any = None

    def row(self, session_id: str) -> dict[str, Any] | None:
        return self.rows.get(session_id)


@dataclass
class ActionsResult:
    host: str
    traits: HostTraits
    world: HermesWorld
    chats: dict[str, ActChat]
    steps: list[Step]
    skipped: dict[str, str]  # action → why it was not driven on this host
    errors: list[str]
    usage: Usage
    pricing: dict[str, str]
    cli_session_id: str
    cli_seed: dict[str, Any]  # what the CLI session held before the WebUI opened it
    quiet_log: str  # the server's log after start-up and a normal chat (two streaming turns)
    server_log: str
    rows_before_backfill: dict[str, dict[str, Any]]
    rows_final: dict[str, dict[str, Any]]  # after the server stopped and a backfill ran
    backfill: subprocess.CompletedProcess[str] | None
    insights: Insights | None
    sessions_list: list[dict[str, str]]
    sessions_list_text: str
    timings: dict[str, float]
    compressed_child: str | None = None  # HEAD: the continuation's id after the rotation

    def step(self, action: str) -> Step:
        found = [s for s in self.steps if s.action == action]
        if not found:
            raise LookupError(f"{self.host}: no step {action!r} (skipped: {self.skipped.get(action)!r})")
        return found[-1]

    def before(self, action: str) -> Step:
        """The step just before ``action``'s."""
        index = self.steps.index(self.step(action))
        return self.steps[index - 1]

    def sid(self, key: str) -> str:
        return self.chats[key].session_id


def webui_insights_warnings(log: str) -> list[str]:
    """Lines of a server log where webui_insights says WARNING or worse."""
    return [
        line
        for line in log.splitlines()
        if ("webui_insights" in line or "webui-insights:" in line) and _WARNING.search(line)
    ]


def _create_cli_session(world: HermesWorld) -> tuple[str, dict[str, Any]]:
    """A session the hermes CLI made earlier today: two messages and their spend."""
    from hermes_state import SessionDB

    sid = time.strftime("%Y%m%d_%H%M%S_", time.localtime(time.time() - 600)) + "c1c1c1"
    seed = {"input_tokens": 5000, "output_tokens": 300, "cache_read_tokens": 1000, "api_call_count": 2}
    db = SessionDB(world.state_db())
    try:
        db.create_session(sid, "cli", model=MODEL)
        db.set_session_title(sid, CLI_SESSION_TITLE)
        db.append_message(sid, "user", "Why does the CLI build fail?")
        db.append_message(sid, "assistant", "A missing dependency.")
        db.update_token_counts(sid, model=MODEL, estimated_cost_usd=0.0123, **seed)
    finally:
        db.close()
    return sid, {**seed, "estimated_cost_usd": 0.0123}


class _Driver:
    def __init__(self, server: HostServer, fake: FakeLLM, world: HermesWorld) -> None:
        self.server = server
        self.fake = fake
        self.world = world
        self.chats: dict[str, ActChat] = {}
        self.steps: list[Step] = []
        self.errors: list[str] = []
        self.skipped: dict[str, str] = {}

    # ── chats and turns ───────────────────────────────────────────────────
    def new_chat(self, key: str) -> ActChat:
        session = self.server.new_session()
        return self.adopt(key, session["session_id"])

    def adopt(self, key: str, session_id: str) -> ActChat:
        chat = ActChat(key, session_id, [session_id])
        self.chats[key] = chat
        return chat

    def _length(self, chat: ActChat) -> int:
        try:
            return len(self.server.session_json(chat.session_id).get("messages") or [])
        except OSError:
            return 0

    def _credit(self, chat: ActChat, mark: int, before: int) -> None:
        for call in self.fake.calls_since(mark):
            (chat.calls if call.completed else chat.cut_calls).append(call)
        chat.messages_added += max(0, self._length(chat) - before)

    def turn(self, chat: ActChat, kind: str, message: str, *, tool: bool = False, usage: Usage | None = None) -> Any:
        """One turn: ``stream`` (``/api/chat/start`` + SSE) or ``sync`` (``/api/chat``)."""
        if tool or usage is not None:
            self.fake.queue_tool_call(usage=usage)
        before, mark = self._length(chat), self.fake.snapshot()
        chat.turn_started.append(time.time())
        result: Any = None
        try:
            if kind == "stream":
                result = self.server.chat_stream(chat.session_id, message, **self.server.model_fields())
                if result.ended_by not in ("done", "stream_end"):
                    self.errors.append(f"{chat.key}: stream ended by {result.ended_by}: {result.events[-2:]}")
            else:
                result = self.server.chat_sync(chat.session_id, message)
        except (HttpError, OSError) as exc:
            self.errors.append(f"{chat.key}: {kind} turn {message!r}: {exc}")
        chat.turns.append(kind)
        self._credit(chat, mark, before)
        return result

    def regenerate(self, chat: ActChat) -> None:
        before, mark = self._length(chat), self.fake.snapshot()
        chat.turn_started.append(time.time())
        result = self.server.regenerate(chat.session_id)
        if result.ended_by not in ("done", "stream_end"):
            self.errors.append(f"{chat.key}: regenerate ended by {result.ended_by}: {result.events[-2:]}")
        chat.turns.append("regenerate")
        # The host cut the last reply first: the regenerated reply is one added message.
        self._credit(chat, mark, before - 1)

    def cancelled_turn(self, chat: ActChat, message: str) -> dict[str, Any]:
        """A turn stopped by the Stop button while its second LLM call hangs (the first, a tool call, answered)."""
        self.fake.queue_tool_call()
        release = self.fake.hold_next_call(skip=1)
        before, mark = self._length(chat), self.fake.snapshot()
        chat.turn_started.append(time.time())
        stream_id = self.server.start_stream(chat.session_id, message, **self.server.model_fields())
        box: dict[str, Any] = {}

        def read() -> None:
            try:
                box["stream"] = self.server.read_stream(stream_id, timeout=60)
            except Exception as exc:  # reported below
                box["error"] = exc

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        note: dict[str, Any] = {}
        try:
            if not self.fake.holding.wait(30):
                self.errors.append(f"{chat.key}: the call to cancel never came")
            note["cancel"] = self.server.cancel(stream_id)
            reader.join(30)
        finally:
            release.set()
        deadline = time.monotonic() + 10
        while self.fake.holding.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the released handler finds its client gone
        stream = box.get("stream")
        note["events"] = stream.names if stream else repr(box.get("error"))
        chat.turns.append("cancelled")
        self._credit(chat, mark, before)
        return note

    # ── observing ─────────────────────────────────────────────────────────
    def snap(self, action: str, chat: str, note: Any = None) -> Step:
        if not self.server.flush(15.0):
            self.errors.append(f"after {action}: flush() returned False")
        rows = {r["id"]: r for r in db_rows(self.world.state_db(), "SELECT * FROM sessions")}
        files: dict[str, dict[str, Any] | None] = {}
        for c in self.chats.values():
            for sid in c.ids:
                try:
                    files[sid] = self.server.session_json(sid)
                except (OSError, ValueError):
                    files[sid] = None
        counted = db_rows(
            self.world.state_db(), "SELECT session_id AS id, COUNT(*) AS n FROM messages GROUP BY session_id"
        )
        step = Step(
            action,
            chat,
            time.time(),
            rows,
            files,
            {k: len(c.calls) for k, c in self.chats.items()},
            {k: c.messages_added for k, c in self.chats.items()},
            {r["id"]: int(r["n"]) for r in counted},
            note,
        )
        self.steps.append(step)
        return step

    def can(self, action: str, route: str, why: str = "") -> bool:
        if self.server.traits.has_route(route):
            return True
        self.skipped[action] = why or f"the host has no {route} route"
        return False

    def settle(self) -> None:
        """Let the clock move, so an action that wrongly counts as activity shows in ended_at."""
        time.sleep(0.05)


def run_actions(src: Path, workdir: Path, *, debounce_s: float = 0.05) -> ActionsResult:
    """Drive one host through every action; always stops what it starts."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    fake = FakeLLM(model=MODEL).start()
    server: HostServer | None = None
    d: _Driver | None = None
    world = HermesWorld(workdir / "world", fake.base_url, MODEL, config_extra=CONFIG_EXTRA)
    quiet_log = ""
    cli_sid, cli_seed = "", {}
    compressed_child: str | None = None
    try:
        world.create({"sync_to_insights": True})
        copy = copy_host(src, workdir / "host")
        cli_sid, cli_seed = _create_cli_session(world)
        server = HostServer(copy, world, workdir, debounce_s=debounce_s)
        t = time.monotonic()
        server.start()
        timings["server start"] = time.monotonic() - t
        d = _Driver(server, fake, world)
        traits = server.traits
        head_like = traits.agent_writes_state_db
        d.snap("start", "-")

        # new chat: nothing spent, nothing written
        d.new_chat("new")
        d.snap("new", "new")

        # a normal chat: two streaming turns (the quiet-start check reads the log up to here)
        s = d.new_chat("stream")
        d.turn(s, "stream", "Plan the garden party")
        d.turn(s, "stream", "What about music?")
        d.snap("stream", "stream")
        quiet_log = server.log_path.read_text(errors="replace")

        y = d.new_chat("sync")
        d.turn(y, "sync", "Check my todo list", tool=True)
        d.turn(y, "sync", "Anything else to do?")
        d.snap("sync", "sync")

        m = d.new_chat("mixed")
        d.turn(m, "stream", "Start with a stream")
        d.snap("mixed_stream", "mixed")
        d.turn(m, "sync", "Then a plain request")
        d.snap("mixed", "mixed")

        # not activity: rename, title regenerate, pin, archive, move
        d.settle()
        server.rename(s.session_id, RENAMED)
        d.snap("rename", "stream")
        if d.can("title_regenerate", "/api/session/title/regenerate"):
            d.settle()
            try:
                answer = server.title_regenerate(s.session_id)
                d.snap("title_regenerate", "stream", answer.get("title"))
            except HttpError as exc:
                d.errors.append(f"title regenerate: {exc}")
        d.settle()
        server.pin(s.session_id, True)
        d.snap("pin", "stream")
        d.settle()
        server.archive(s.session_id, True)
        d.snap("archive", "stream")
        server.archive(s.session_id, False)
        d.settle()
        project = server.create_project("Parties")
        server.move(s.session_id, project)
        d.snap("move", "stream")

        # duplicate: HEAD's route copies the totals; v0.50.12's front end makes an empty chat
        source_title = server.session_json(s.session_id).get("title") or RENAMED
        if traits.has_route("/api/session/duplicate"):
            copy_session = server.duplicate(s.session_id)
            dup = d.adopt("duplicate", copy_session["session_id"])
            d.snap("duplicate", "duplicate")
            d.turn(dup, "stream", "A question for the copy")
            d.snap("duplicate_turn", "duplicate")
        else:
            copy_session = server.duplicate_like_v0_50_12(s.session_id, source_title)
            d.adopt("duplicate", copy_session["session_id"])
            d.snap("duplicate", "duplicate")
            d.skipped["duplicate_turn"] = "v0.50.12's duplicate is an empty new chat: its turn is a new chat's"

        # branch (fork)
        if d.can("branch", "/api/session/branch"):
            d.settle()
            forked = server.branch(s.session_id, keep_count=2)
            f = d.adopt("branch", forked["session_id"])
            d.snap("branch", "branch")
            d.turn(f, "stream", "A question for the fork")
            d.snap("branch_turn", "branch")
        else:
            d.skipped["branch_turn"] = d.skipped["branch"]

        # retry / undo / truncate + edit-and-resend / regenerate
        e = d.new_chat("edits")
        d.turn(e, "stream", "Write a haiku")
        d.turn(e, "stream", "Make it about rain")
        d.snap("edits_base", "edits")
        if traits.has_route("/api/session/retry"):
            answer = server.retry(e.session_id)
            d.snap("retry_cut", "edits")
            d.turn(e, "stream", answer.get("last_user_text") or "Make it about rain")
        else:  # v0.50.12's front end: truncate to the last reply, send the same text again
            messages = server.session_json(e.session_id).get("messages") or []
            last_reply = max(i for i, msg in enumerate(messages) if msg.get("role") == "assistant")
            server.truncate(e.session_id, last_reply)
            d.snap("retry_cut", "edits")
            d.turn(e, "stream", "Make it about rain")
        d.snap("retry", "edits")
        if d.can("undo", "/api/session/undo"):
            server.undo(e.session_id)
            d.snap("undo", "edits")
            d.turn(e, "stream", "Make it about snow")
            d.snap("undo_turn", "edits")
        server.truncate(e.session_id, 2)
        d.snap("truncate", "edits")
        d.turn(e, "stream", "Make it about the sea")
        d.snap("edit", "edits")
        if head_like and traits.has_route("/api/session/retry"):  # the Regenerate button of HEAD's front end
            d.regenerate(e)
            d.snap("regenerate", "edits")
        else:
            d.skipped["regenerate"] = "v0.50.12 has no regenerate (its retry is truncate + send)"

        # clear, then the cleanup routes
        c = d.new_chat("clear")
        d.turn(c, "stream", "Remember the milk")
        d.snap("clear_base", "clear")
        server.clear(c.session_id)
        d.snap("clear", "clear")
        cleaned = server.cleanup(zero_message=False)
        cleaned_zero = server.cleanup(zero_message=True)
        d.snap("cleanup", "clear", {"cleanup": cleaned, "cleanup_zero_message": cleaned_zero})

        # automatic compression inside a turn
        z = d.new_chat("compress")
        d.turn(z, "stream", "Tell me about compression")
        d.turn(z, "stream", "And more")
        d.turn(z, "stream", "And even more")  # enough history for the compressor to cut something
        d.snap("compress_base", "compress")
        summaries = fake.snapshot()
        big = d.turn(z, "stream", "A huge question", usage=BIG_PROMPT)
        aux = fake.calls_since(summaries, ("aux",))  # the compressor's summary: hermes-agent records it apart
        compressed = big.data("compressed") if big is not None else None
        files = sorted((world.webui_state / "sessions").glob("*.json"))
        for path in files:  # HEAD: the continuation's file names the old id as its parent
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("parent_session_id") == z.session_id:
                compressed_child = str(data.get("session_id"))
        if compressed_child:
            z.ids.append(compressed_child)
        d.snap("compress", "compress", {"compressed_event": compressed, "child": compressed_child, "aux_calls": aux})
        if compressed_child:
            z.session_id = compressed_child
        d.turn(z, "stream", "After the compression")
        d.snap("compress_after", "compress")

        # manual compression (HEAD): a summary call nothing records
        if d.can("manual_compress", "/api/session/compress"):
            d.settle()
            mark = fake.snapshot()
            try:
                answer = server.compress(z.session_id)
                calls = [c.kind for c in fake.calls_since(mark, ("aux", "chat", "tool_call"))]
                d.snap("manual_compress", "compress", {"ok": answer.get("ok"), "llm_calls": calls})
            except HttpError as exc:
                d.errors.append(f"manual compress: {exc}")

        # cancel mid-stream
        k = d.new_chat("cancel")
        d.turn(k, "stream", "Count to three")
        d.snap("cancel_base", "cancel")
        note = d.cancelled_turn(k, "Count to a million")
        d.snap("cancel", "cancel", note)
        d.turn(k, "stream", "Just to five then")
        d.snap("cancel_after", "cancel")

        # import JSON (an export carrying totals the hosts ignore)
        long_ago = time.time() - 3 * 3600
        export = {
            "title": "Imported chat",
            "model": MODEL,
            "workspace": str(world.workspace),
            "messages": [
                {"role": "user", "content": "An old question", "timestamp": long_ago},
                {"role": "assistant", "content": "An old answer", "timestamp": long_ago + 5},
            ],
            "input_tokens": 50_000,
            "output_tokens": 900,
            "estimated_cost": 1.25,
        }
        imported = server.import_json(export)
        i = d.adopt("imported", imported["session_id"])
        d.snap("import", "imported")
        d.turn(i, "stream", "A new question on the import")
        d.snap("import_turn", "imported")

        # import_cli: the chat has the CLI session's id
        opened = server.import_cli(cli_sid)
        cli = d.adopt("cli", opened.get("session_id") or cli_sid)
        d.snap("import_cli", "cli")
        d.turn(cli, "stream", "Continue in the WebUI")
        d.snap("import_cli_turn", "cli")
        done = sessions_delete(world, cli_sid)
        d.snap("import_cli_deleted", "cli", (done.returncode, (done.stdout + done.stderr)[-300:]))
        d.turn(cli, "stream", "And once more")
        d.snap("import_cli_after_delete", "cli")

        # delete
        x = d.new_chat("deleted")
        d.turn(x, "stream", "Something to forget")
        d.snap("delete_base", "deleted")
        server.delete(x.session_id)
        d.snap("delete", "deleted")

        timings["actions"] = time.monotonic() - t0 - timings["server start"]
    finally:
        t = time.monotonic()
        if server is not None:
            server.stop()
        fake.stop()
        timings["server stop"] = time.monotonic() - t
    assert d is not None
    rows_before = {r["id"]: r for r in db_rows(world.state_db(), "SELECT * FROM sessions")}

    # once per host, at the end: a backfill over the WebUI's folder, then what hermes shows
    t = time.monotonic()
    backfill = subprocess.run(
        [sys.executable, "-m", "webui_insights", "backfill", "--json"],
        env=world.env(),
        cwd=str(world.workspace),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    timings["backfill"] = time.monotonic() - t
    rows_final = {r["id"]: r for r in db_rows(world.state_db(), "SELECT * FROM sessions")}
    t = time.monotonic()
    found: Insights | None = None
    try:
        found = insights(world, days=1)
    except AssertionError as exc:
        d.errors.append(f"hermes insights: {exc}")
    listing = run_hermes(world, "sessions", "list")
    timings["hermes CLI"] = time.monotonic() - t
    timings["total"] = time.monotonic() - t0
    return ActionsResult(
        host=host_id(src),
        traits=server.traits if server is not None else HostTraits.read(src),
        world=world,
        chats=d.chats,
        steps=d.steps,
        skipped=d.skipped,
        errors=d.errors,
        usage=fake.usage,
        pricing=dict(fake.pricing),
        cli_session_id=cli_sid,
        cli_seed=cli_seed,
        quiet_log=quiet_log,
        server_log=server.log_path.read_text(errors="replace") if server is not None else "",
        rows_before_backfill=rows_before,
        rows_final=rows_final,
        backfill=backfill,
        insights=found,
        sessions_list=parse_sessions_list(listing.stdout),
        sessions_list_text=listing.stdout + (listing.stderr if listing.returncode else ""),
        timings=timings,
        compressed_child=compressed_child,
    )
