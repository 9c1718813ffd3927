"""A model of the world, as a test: random histories of WebUI chats against one oracle, on the real SessionDB.

The examples elsewhere are cases we thought of. Here hypothesis' stateful
testing (``RuleBasedStateMachine``) plays the world instead: its rules are
what happens to chats — WebUI turns (streaming or not, cached or not),
renames, edits that cut the chat short, clears, duplicates and imports;
what happens in hermes (``sessions delete``, ``rename``, ``rename ""``,
hermes-agent writing its own rows and messages); other writers (the
host's own bridge while mirroring is paused, a manual edit); process
events (a restart, a late process with an old copy of a chat, the clock
jumping forward and back, a state.db that is busy or broken for a while);
and this layer's own commands (the sweep, ``backfill``, ``verify --fix``).
After every step the writer is flushed and every chat's row is compared
with **the oracle**: what hermes-agent would have recorded had it run the
chat itself with a SessionDB —

- the row holds every LLM call the chat made, once: a turn removed in the
  WebUI was still spent, a copy spent nothing of what it copied;
- input tokens in hermes' convention (without cached ones);
- a row this layer writes: messages and tool calls ever added, started_at
  = the chat's creation, ended_at = its last activity, the WebUI's title
  unless hermes renamed (or cleared) it;
- a row hermes-agent writes (the "current" WebUI's streaming turns): its
  own messages, and its start moved back to the chat's creation;
- deleted in hermes: no row, until the chat's next turn;

or one of the documented exceptions, each a named clause below
(``_skip_times``, ``tampered``). The WebUI is a small host of the two
shapes hermes-webui has: "old" (v0.50.12: the agent never has a
SessionDB; the chat adds each streaming turn's usage, keeps no cache
counts, records nothing of a non-streaming turn) and "current" (HEAD:
streaming turns run an agent with a SessionDB, kept per chat, whose
counters the chat copies — so they start over when the agent is rebuilt
after an edit; non-streaming turns record nothing). The agent is a
stand-in with hermes-agent's counters that writes through the real
SessionDB exactly the calls hermes-agent makes.

``WEBUI_INSIGHTS_MODEL_EXAMPLES`` sets the number of histories (40 fixed
ones in ``make test``; 2000 new ones each ``make reliability``, with
``WEBUI_INSIGHTS_MODEL_RANDOM=1``); ``WEBUI_INSIGHTS_MODEL_STEPS`` their length.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sqlite3
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from support.db import read_row

import webui_insights
from webui_insights.commands.backfill import backfill
from webui_insights.commands.reconcile import reconcile_pass
from webui_insights.commands.verify import verify
from webui_insights.engine.hermes import hermes_state
from webui_insights.engine.plan import FUTURE_TOLERANCE_S
from webui_insights.engine.store import StateStore, create_state_db
from webui_insights.hook import installer
from webui_insights.profiles import Homes
from webui_insights.sources import scan_sessions
from webui_insights.writer import WriterConfig

EXAMPLES = int(os.environ.get("WEBUI_INSIGHTS_MODEL_EXAMPLES", "40"))
# The same histories on every run of ``make test`` (CI must not pass or fail by luck);
# ``make reliability`` searches afresh each time (WEBUI_INSIGHTS_MODEL_RANDOM=1).
RANDOM = os.environ.get("WEBUI_INSIGHTS_MODEL_RANDOM") == "1"

# One LLM call's usage, as a provider reports it (prompt tokens include the cached ones).
PROMPT, CACHED, OUTPUT, COST = 1000, 300, 40, 0.002

HOST_MODULE = """
import json, os, threading, time

class Session:
    \"\"\"A chat as hermes-webui keeps it; save() writes its JSON file (atomically) like the WebUI.\"\"\"

    def __init__(self, state_dir, session_id, created_at):
        self.state_dir = state_dir
        self.session_id = session_id
        self.profile = None
        self.title = "Untitled"
        self.model = "model/one"
        self.model_provider = "fake"
        self.messages = []
        self.created_at = created_at
        self.updated_at = created_at
        self.input_tokens = 0
        self.output_tokens = 0
        self.estimated_cost = None

    def to_dict(self):
        data = {k: v for k, v in vars(self).items() if k != "state_dir"}
        return data

    def save(self, touch_updated_at=True, skip_index=False):
        if touch_updated_at:
            self.updated_at = time.time()
        folder = os.path.join(self.state_dir, "sessions")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, self.session_id + ".json")
        tmp = path + ".tmp.%d.%d" % (os.getpid(), threading.get_ident())
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)
        os.replace(tmp, path)


class OldSession(Session):
    \"\"\"v0.50.12: no cache fields.\"\"\"


class CurrentSession(Session):
    \"\"\"HEAD: cache fields.\"\"\"

    def __init__(self, state_dir, session_id, created_at):
        super().__init__(state_dir, session_id, created_at)
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
"""

AGENT_MODULE = """
class AIAgent:
    \"\"\"hermes-agent's counters, and with a SessionDB the writes hermes-agent makes for each call.\"\"\"

    def __init__(self, session_id, model="model/one", session_db=None):
        self.session_id = session_id
        self.model = model
        self._session_db = session_db
        self._session_db_created = False
        self.session_prompt_tokens = 0
        self.session_completion_tokens = 0
        self.session_cache_read_tokens = 0
        self.session_cache_write_tokens = 0
        self.session_reasoning_tokens = 0
        self.session_api_calls = 0
        self.session_estimated_cost_usd = 0.0

    def _persist(self, write, *args, **kwargs):
        # hermes-agent logs a failed write at debug level and goes on (its row may be gone).
        try:
            write(*args, **kwargs)
        except Exception:
            pass

    def run_conversation(self, message, *, calls, prompt, cached, output, cost):
        db = self._session_db
        if db is not None and not self._session_db_created:
            db.create_session(self.session_id, "webui", model=self.model,
                              model_config={"max_iterations": 90}, system_prompt="You are hermes.")
            self._session_db_created = True
        if db is not None:
            self._persist(db.append_message, self.session_id, "user", message)
        for _ in range(calls):
            self.session_prompt_tokens += prompt
            self.session_cache_read_tokens += cached
            self.session_completion_tokens += output
            self.session_api_calls += 1
            self.session_estimated_cost_usd += cost
            if db is not None:
                self._persist(db.update_token_counts, self.session_id, input_tokens=prompt - cached,
                              output_tokens=output, cache_read_tokens=cached, estimated_cost_usd=cost,
                              model=self.model, api_call_count=1)
        if db is not None:
            self._persist(db.append_message, self.session_id, "assistant", "reply to " + message)
        return {"final_response": "reply to " + message}
"""


def _hermes_remakes_deleted_rows() -> bool:
    """Does this hermes-agent's update_token_counts make a row again for a session deleted meanwhile?"""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.db"
        db = hermes_state().SessionDB(db_path=path)
        try:
            db.create_session("probe", "webui")
            db.delete_session("probe")
            db.update_token_counts("probe", input_tokens=1)
            return db.get_session("probe") is not None
        finally:
            db.close()


HERMES_REMAKES_ROWS = _hermes_remakes_deleted_rows()


class Clock:
    """The machine's wall clock, which the world may set wrong (a VM resumed ahead) and right again.

    Each step of the world also takes a few seconds (``tick``): a user reads
    a reply before duplicating the chat.
    """

    def __init__(self) -> None:
        self.real = time.time
        self.offset = 0.0  # how wrong the clock is
        self.elapsed = 0.0  # the world's own time, on top of the real one

    def __call__(self) -> float:
        return self.real() + self.elapsed + self.offset

    def tick(self) -> None:
        self.elapsed += 3.0


@dataclass(frozen=True)
class Turn:
    """One turn of a chat, and who could count it."""

    calls: int
    cached: bool
    recorded_by_webui: bool  # the WebUI's figures hold it (v0.50.12's streaming turns, HEAD's)
    recorded_by_hermes: bool  # hermes-agent wrote it itself (HEAD's streaming turns)
    counted_by_hook: bool  # the agent hook's count reached this layer (not while mirroring was off)
    figures_cache: bool  # the WebUI keeps the cache count (HEAD)

    def usage(self, hermes_row: bool) -> dict[str, Any]:
        """What the row holds of this turn: everything, or what the WebUI's figures alone say.

        A row this layer brought back after a deletion knows hermes-agent's
        turns only from the WebUI's figures (they keep no API-call count).
        """
        prompt, cached = PROMPT * self.calls, CACHED * self.calls if self.cached else 0
        if (self.recorded_by_hermes and hermes_row) or self.counted_by_hook:
            return {"input_tokens": prompt - cached, "cache_read_tokens": cached, "output_tokens": OUTPUT * self.calls,
                    "api_call_count": self.calls, "cost": COST * self.calls}
        if self.recorded_by_webui or self.recorded_by_hermes:  # no cache split without the cache count; no API calls
            kept = cached if self.figures_cache else 0
            return {"input_tokens": prompt - kept, "cache_read_tokens": kept, "output_tokens": OUTPUT * self.calls,
                    "api_call_count": 0, "cost": COST * self.calls}
        return {"input_tokens": 0, "cache_read_tokens": 0, "output_tokens": 0, "api_call_count": 0, "cost": 0.0}


@dataclass
class Truth:
    """What hermes should show for one chat (the oracle), kept by the model as the world acts."""

    session: Any
    host: str
    number: int
    turns: list[Turn] = field(default_factory=list)  # every turn the chat had itself
    # Turns before hermes-agent made the chat's row anew after a deletion: not in that row.
    base_turns: int = 0
    # Turns before a deletion in hermes: a row this layer brings back knows hermes-agent's of them only
    # from the WebUI's figures (no API-call count), also once hermes-agent writes into that row again.
    figures_only: int = 0
    messages_added: int = 0  # messages ever added (by this chat itself, not copied)
    hermes_title: tuple[str | None] | None = None  # set when renamed (or cleared) in hermes
    last_activity: float | None = None
    copied_messages: bool = False  # its messages came from another chat (a duplicate, an import)
    agent: Any = None  # the current host's agent for this chat (its streaming turns), while cached
    hermes_writes: bool = False  # hermes-agent writes the row (its marks are on it)
    hermes_messages: int | None = 0  # message_count of a row hermes-agent writes (None: not followed)
    deleted: bool = False  # deleted in hermes, no turn since
    row_expected: bool = False
    tampered: bool = False  # someone else wrote the row; right again after this layer's next pass over it
    odd_clock: bool = False  # touched while the clock was wrong (time columns not compared)
    # First seen by this layer while the clock was wrong: its messages may read as older than the
    # chat (the evidence of a copy), so what it spent is not compared (documented).
    first_seen_odd: bool = False
    stamped_odd: bool = False  # holds messages stamped while the clock was wrong
    # First seen after messages were removed unseen: its last activity is not in the chat any more.
    activity_unknown: bool = False
    # First seen with turns it never saw and a turn the agent hook counted: the larger of the two counts
    # is all it can tell (documented), so what it spent is not compared.
    usage_unknown: bool = False
    # Someone else's values were in the row when hermes-agent took it over: they stay (documented).
    others_values: bool = False
    # Messages removed while states could not be ordered (a clock set back): the count of messages
    # ever added may miss the ones that only refill the removed count (documented).
    count_unordered: bool = False
    # Turns only the WebUI counted (made while mirroring was off) and turns only the agent hook counted
    # (non-streaming) in one chat: the larger of the two counts is all it can tell (documented).
    mixed_counts: bool = False
    webui_only_turn: bool = False
    hook_only_turn: bool = False
    title_seen: str | None = None  # the latest real title among the states this layer saw
    bridge_title: str | None = None  # the title the host's own bridge put on the row
    captured: tuple[Any, ...] | None = None  # what the capture's gate last let through
    sent_here: bool = False  # this process's capture sent the chat (it follows it through blank states)
    layer_titled: bool = False  # this layer wrote (or took as its own) the row's title
    late_copy_may_win: bool = False  # an old copy applied while no version could be trusted (title not compared)
    # Cleared in hermes on a row whose start time a wrong clock set: made anew or this layer's, nothing
    # tells (documented): the row holds no title or the WebUI's.
    clear_unsure: bool = False
    unseen_turns: int = 0  # turns since this layer last saw the chat
    # This layer's view: messages it saw added (None: it never saw the chat), and their count last seen.
    seen_messages: int | None = None
    last_count: int = 0
    old_files: list[dict[str, Any]] = field(default_factory=list)  # earlier states of its file
    seen_file: int = -1  # which of them this layer saw last
    # Saved while the clock was set back, and not seen by this layer while it still was: once the clock is
    # right, that state reads as older than the one on record, like an old copy (nothing tells them apart),
    # so its turn waits for the chat's next save (documented): until then the row is a bound.
    saved_behind_unseen: bool = False
    behind_pending: bool = False

    @property
    def session_id(self) -> str:
        return str(self.session.session_id)

    def spent(self, *, in_full: bool = False) -> dict[str, Any]:
        """What the row holds: every turn since the row began, as far as anyone could count it."""
        total = {"input_tokens": 0, "cache_read_tokens": 0, "output_tokens": 0, "api_call_count": 0, "cost": 0.0}
        for number, turn in enumerate(self.turns[self.base_turns :], start=self.base_turns):
            counted = dataclasses.replace(turn, counted_by_hook=True) if in_full else turn
            for name, value in counted.usage(self.hermes_writes and number >= self.figures_only).items():
                total[name] += value
        return total


class WorldModel(RuleBasedStateMachine):
    """The world (a WebUI, hermes, other writers, processes, clocks) against the oracle."""

    chats = Bundle("chats")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(TMP.mkdtemp())
        self.home = self.tmp / "home"
        self.home.mkdir()
        self.webui = self.home / "webui"
        (self.webui / "sessions").mkdir(parents=True)  # the WebUI's folder, before any chat
        self.db = self.home / "state.db"
        create_state_db(self.db)
        self.clock = Clock()
        self.saved_time = time.time
        time.time = self.clock  # type: ignore[assignment]  # the machine's clock: every reader of it
        os.environ["HERMES_HOME"] = str(self.home)
        os.environ["HERMES_WEBUI_STATE_DIR"] = str(self.webui)
        self.truths: dict[str, Truth] = {}
        self.numbers = iter(range(1, 10_000))
        self.enabled = True
        self.faults: list[BaseException] = []
        self.hermes = hermes_state().SessionDB(db_path=self.db)
        (self.tmp / "modelwebui.py").write_text(textwrap.dedent(HOST_MODULE))
        (self.tmp / "run_agent.py").write_text(textwrap.dedent(AGENT_MODULE))
        self.saved_modules = {n: sys.modules.pop(n) for n in ("run_agent", "modelwebui") if n in sys.modules}
        sys.path.insert(0, str(self.tmp))
        self.host = importlib.import_module("modelwebui")
        self.agents = importlib.import_module("run_agent")
        self.kind = "old"
        self.real_run = StateStore.run
        faults = self.faults

        def run_with_faults(store: StateStore, work: Any) -> Any:  # the seam: state.db refuses a live write
            if faults and threading.current_thread() is not threading.main_thread():
                raise faults.pop()
            return self.real_run(store, work)

        StateStore.run = run_with_faults  # type: ignore[method-assign]
        self._install()

    # ------------------------------------------------------------------ plumbing

    def _install(self) -> None:
        installer.install(
            target="modelwebui:Session.save",
            enabled=lambda: self.enabled,
            writer_config=WriterConfig(
                debounce_s=0.0, busy_retry_s=0.01, busy_retry_cap_s=0.02, error_backoff_s=0.02, error_backoff_cap_s=0.05
            ),
            reconcile_interval=0,
            take_over_host_bridge=False,
        )

    def teardown(self) -> None:
        try:
            installer._reset_for_tests()
        finally:
            StateStore.run = self.real_run  # type: ignore[method-assign]
            self.hermes.close()
            time.time = self.saved_time  # type: ignore[assignment]
            sys.path.remove(str(self.tmp))
            for name in ("run_agent", "modelwebui"):
                sys.modules.pop(name, None)
            sys.modules.update(self.saved_modules)

    def _new_session(self, created_at: float | None = None) -> Any:
        self.clock.tick()
        number = next(self.numbers)
        cls = self.host.OldSession if self.kind == "old" else self.host.CurrentSession
        session = cls(str(self.webui), f"{number:012x}", self.clock() if created_at is None else created_at)
        return number, session

    def _save(self, truth: Truth, *, hook_counted: bool = False) -> None:
        self.clock.tick()
        truth.session.save()
        truth.old_files.append(json.loads((self.webui / "sessions" / f"{truth.session_id}.json").read_text()))
        if self.clock.offset:
            truth.odd_clock = True
        if self.clock.offset < 0:
            truth.saved_behind_unseen = True
        s = truth.session
        key = (s.title, s.model, s.input_tokens, s.output_tokens, s.estimated_cost, len(s.messages))
        if self.enabled and (key != truth.captured or hook_counted):
            # The capture's gate lets a save through when something it reads changed (or the agent counted).
            truth.captured = key
            self._observed(truth, hook_counted=hook_counted)

    def _observed(self, truth: Truth, *, hook_counted: bool = False, live: bool = True) -> bool:
        """This layer sees the chat as it is now (a capture, or one of its passes over the files)."""
        s = truth.session
        count = len(s.messages)
        if not (count or s.input_tokens or s.output_tokens or s.estimated_cost) and not (live and truth.sent_here):
            return False  # blank: the file readers skip it, and the capture unless it sent the chat before
        truth.sent_here = truth.sent_here or live
        if self.clock.offset:
            truth.odd_clock = True
        if truth.seen_messages is None:
            # What it copied is not its own; what was added and removed unseen is not known (documented).
            truth.seen_messages = 0 if truth.copied_messages else count
            # Messages stamped by a clock set wrong may read as older than the chat: the evidence of a copy.
            truth.first_seen_odd = self.clock.offset != 0 or truth.stamped_odd
            unseen = len(truth.turns) - (1 if hook_counted else 0)
            truth.usage_unknown = hook_counted and unseen > 0
            renamed = s.title not in ("Untitled", truth.bridge_title)  # "Untitled" is no title, not a rename
            if truth.bridge_title is not None and renamed and truth.hermes_title is None:
                # The host's bridge titled the row before this layer met the chat, and the WebUI renamed it
                # since: a title set elsewhere, kept like a rename in hermes (documented).
                truth.hermes_title = (truth.bridge_title,)
        else:
            truth.seen_messages += max(0, count - truth.last_count)
        if truth.unseen_turns:
            # Its last activity is dated by its last message, if the chat still holds it.
            truth.activity_unknown = count < 2 or s.messages[-1].get("timestamp") != truth.last_activity
            truth.unseen_turns = 0
        if s.title != "Untitled":
            truth.title_seen = s.title
            if truth.hermes_title == (s.title,):
                # The row's title kept as set elsewhere is the WebUI's now: taken as this layer's own, as any
                # title already there ("adopt"), so a later WebUI rename is followed.
                truth.hermes_title = None
            # A chat deleted in hermes has no row: no title of this layer's is on one until it is back.
            truth.layer_titled = truth.layer_titled or (
                truth.row_expected and not truth.deleted and truth.hermes_title is None
            )
        truth.last_count = count
        truth.seen_file = len(truth.old_files) - 1
        if self.clock.offset < 0 or live:
            truth.saved_behind_unseen = truth.behind_pending = False  # read unordered, or a newer state
        elif truth.saved_behind_unseen:
            truth.behind_pending = True
        # A state read as older than the one on record changes nothing, someone else's values in the row
        # included: they are repaired with the chat's next save (documented).
        truth.tampered = truth.tampered and truth.behind_pending
        truth.late_copy_may_win = False
        return True

    def _passed_over_all(self) -> None:
        for truth in self.truths.values():
            truth.odd_clock = truth.odd_clock or self.clock.offset != 0
            self._observed(truth, live=False)

    # ------------------------------------------------------------------- WebUI

    @initialize(kind=st.sampled_from(["old", "current"]))
    def choose_host(self, kind: str) -> None:
        self.kind = kind

    @rule(target=chats)
    def new_chat(self) -> Truth:
        number, session = self._new_session()
        truth = Truth(session, self.kind, number, odd_clock=self.clock.offset != 0)
        self.truths[truth.session_id] = truth
        truth.session.save()  # v0.50.12 saves a new chat at once: blank, nothing to mirror
        return truth

    @rule(truth=chats, streaming=st.booleans(), cached=st.booleans(), calls=st.integers(1, 2))
    def turn(self, truth: Truth, streaming: bool, cached: bool, calls: int) -> None:
        session = truth.session
        self.clock.tick()
        message = f"question {truth.messages_added}"
        hermes_agent = self.kind == "current" and streaming
        if hermes_agent:
            if truth.agent is None:  # HEAD keeps one agent per chat, with a SessionDB
                truth.agent = self.agents.AIAgent(truth.session_id, session_db=self.hermes)
            agent = truth.agent
        else:
            agent = self.agents.AIAgent(truth.session_id)  # a fresh agent, no SessionDB
        before = (agent.session_prompt_tokens, agent.session_completion_tokens, agent.session_estimated_cost_usd)
        created_before = agent._session_db_created
        agent.run_conversation(
            message, calls=calls, prompt=PROMPT, cached=CACHED if cached else 0, output=OUTPUT, cost=COST
        )
        now = self.clock()
        session.messages += [
            {"role": "user", "content": message, "timestamp": now},
            {"role": "assistant", "content": "reply", "timestamp": now},
        ]
        if streaming and self.kind == "old":  # v0.50.12 adds each streaming turn's usage
            session.input_tokens += agent.session_prompt_tokens - before[0]
            session.output_tokens += agent.session_completion_tokens - before[1]
            session.estimated_cost = (session.estimated_cost or 0.0) + agent.session_estimated_cost_usd - before[2]
        elif streaming:  # HEAD copies its agent's cumulative counters
            session.input_tokens = agent.session_prompt_tokens
            session.output_tokens = agent.session_completion_tokens
            session.cache_read_tokens = agent.session_cache_read_tokens
            session.estimated_cost = agent.session_estimated_cost_usd
        if session.title == "Untitled":
            session.title = f"Chat {truth.number}"
        row_there = truth.row_expected and not truth.deleted
        if hermes_agent and truth.deleted and (self.clock.offset or truth.odd_clock):
            # Made anew under a wrong clock, the row's start cannot tell it from this layer's own (documented).
            truth.clear_unsure = True
        if hermes_agent and truth.deleted:
            if not created_before:  # a new agent: its create_session makes a row of its own
                truth.base_turns = len(truth.turns)
                truth.hermes_writes, truth.hermes_messages, row_there = True, 0, True
            elif HERMES_REMAKES_ROWS:  # a live agent: its usage guard makes one, source "unknown"
                truth.base_turns = len(truth.turns)
                truth.hermes_writes, truth.hermes_messages, row_there = True, None, True
            # else it writes nowhere: this layer brings the row back, whole, as its own
        elif hermes_agent and not truth.hermes_writes:
            # Into this layer's row (its create_session marks it), or a row of its own for a new chat.
            # What this layer could tell of the turns before stays in the row (a bound, when counted apart).
            truth.mixed_counts = truth.mixed_counts or self._counted_apart(truth)
            truth.hermes_messages = (truth.seen_messages or 0) if row_there else 0
            if row_there and truth.count_unordered:
                truth.hermes_messages = None  # it counts on from the row's count, itself a bound (documented)
            truth.hermes_writes = row_there = True
            if truth.tampered:  # someone else's values, now in hermes-agent's own row: its business (documented)
                truth.others_values = True
                truth.hermes_messages = None
        turn = Turn(
            calls=calls,
            cached=cached,
            recorded_by_webui=streaming,
            recorded_by_hermes=hermes_agent and row_there,
            counted_by_hook=self.enabled and not hermes_agent,
            figures_cache=self.kind == "current",
        )
        truth.turns.append(turn)
        truth.webui_only_turn |= turn.recorded_by_webui and not turn.counted_by_hook and not hermes_agent
        truth.hook_only_turn |= turn.counted_by_hook and not turn.recorded_by_webui
        truth.mixed_counts = truth.mixed_counts or (truth.webui_only_turn and truth.hook_only_turn)
        truth.messages_added += 2
        truth.last_activity = now
        if hermes_agent and row_there and truth.hermes_messages is not None:
            truth.hermes_messages += 2
        # An agent created before a deletion writes nowhere: this layer brings the row back, whole.
        truth.row_expected = True
        truth.deleted = False
        truth.stamped_odd = truth.stamped_odd or self.clock.offset != 0
        truth.unseen_turns += 1
        truth.activity_unknown = False
        self._save(truth, hook_counted=self.enabled and not hermes_agent)

    @rule(truth=chats, title=st.sampled_from(["Renamed", "Plans", "Untitled"]))
    def rename(self, truth: Truth, title: str) -> None:
        truth.session.title = f"{title} {truth.number}" if title != "Untitled" else title
        self._save(truth)

    @rule(truth=chats, keep=st.integers(0, 3))
    def edit_or_truncate(self, truth: Truth, keep: int) -> None:
        """Truncate (an edit, a retry, an undo); HEAD then rebuilds the chat's agent."""
        session = truth.session
        if len(session.messages) > 2 * keep and (self.clock.offset or truth.odd_clock):
            truth.count_unordered = True
        session.messages = session.messages[: 2 * keep]
        truth.agent = None
        self._save(truth)

    @rule(truth=chats)
    def clear(self, truth: Truth) -> None:
        if truth.session.messages and (self.clock.offset or truth.odd_clock):
            truth.count_unordered = True
        truth.session.messages = []
        truth.session.title = "Untitled"
        truth.agent = None
        self._save(truth)

    @rule(target=chats, truth=chats, keep_figures=st.booleans())
    def duplicate_or_import(self, truth: Truth, keep_figures: bool) -> Truth:
        """HEAD's Duplicate copies messages and figures; an import copies the messages only.

        A copy of a chat with no message (cleared) has nothing to show it is one:
        its copied figures count as its own (documented); not generated here.
        """
        source = truth.session
        if keep_figures and not source.messages:
            keep_figures = False
        number, session = self._new_session()
        session.messages = [dict(m) for m in source.messages]
        session.title = f"Copy {number}"
        if keep_figures:
            for name in ("input_tokens", "output_tokens", "estimated_cost", "cache_read_tokens"):
                if hasattr(source, name):
                    setattr(session, name, getattr(source, name))
        copy = Truth(session, self.kind, number, copied_messages=bool(source.messages), stamped_odd=truth.stamped_odd)
        self.truths[copy.session_id] = copy
        self._save(copy)
        return copy

    @rule(truth=chats)
    def pin(self, truth: Truth) -> None:
        truth.session.pinned = True  # a save that touches updated_at: no activity
        self._save(truth)

    # ------------------------------------------------------------------- hermes

    @rule(truth=chats)
    def hermes_delete(self, truth: Truth) -> None:
        if self.hermes.delete_session(truth.session_id):
            self._deleted_in_hermes(truth)

    @rule()
    def hermes_prune(self) -> None:
        """``hermes sessions prune --older-than 0``: every ended session started before now goes."""
        conn = sqlite3.connect(self.db)
        with conn:
            ended = {r[0] for r in conn.execute(
                "SELECT id FROM sessions WHERE ended_at IS NOT NULL AND started_at < ?", (self.clock(),)
            )}
        conn.close()
        self.hermes.prune_sessions(older_than_days=0)
        for sid in ended:
            if sid in self.truths and read_row(self.db, sid) is None:
                self._deleted_in_hermes(self.truths[sid])

    def _deleted_in_hermes(self, truth: Truth) -> None:
        truth.hermes_writes = False
        truth.hermes_title = truth.bridge_title = truth.title_seen = None  # its title went with the row
        truth.layer_titled = False
        truth.base_turns = 0  # restored by this layer: whole again
        truth.figures_only = len(truth.turns)
        if truth.seen_messages is None or truth.unseen_turns:
            # A turn this layer has not seen yet (mirroring paused) reads as one after the deletion,
            # and a chat it never knew has no deletion to keep: its next pass brings the row (documented).
            truth.tampered = True
        else:
            truth.deleted = True

    @rule(truth=chats, title=st.sampled_from(["From hermes", ""]))
    def hermes_rename(self, truth: Truth, title: str) -> None:
        if read_row(self.db, truth.session_id) is None:
            return
        self.hermes.set_session_title(truth.session_id, f"{title} {truth.number}" if title else "")
        # A rename in hermes is kept whatever the clocks; a clear under a wrong one may not be told (documented).
        truth.clear_unsure = not title and (truth.clear_unsure or truth.odd_clock or self.clock.offset != 0)
        if not title and truth.seen_messages is None:
            # A clear on a row this layer never met reads as a row never titled: the WebUI's fills it (documented).
            truth.hermes_title = truth.bridge_title = None
        elif title or truth.layer_titled or truth.hermes_title is not None:
            # A rename in hermes, or a clear of a title this layer wrote or one kept as set in hermes: kept.
            truth.hermes_title = (f"{title} {truth.number}" if title else None,)
        else:  # the host's bridge's title (never kept as hermes'), cleared: the WebUI's fills it, if it has one
            truth.bridge_title = None
            if truth.session.title == "Untitled":
                truth.title_seen = None  # it has none now (cleared): the row stays empty until a title is set

    # ------------------------------------------------------------ other writers

    @precondition(lambda self: self.kind == "old")
    @rule(truth=chats)
    def host_bridge_while_paused(self, truth: Truth) -> None:
        """Mirroring paused; v0.50.12's own bridge writes a turn (absolute WebUI totals, cache inside input)."""
        self.enabled = False
        try:
            self.turn(truth, streaming=True, cached=False, calls=1)
            s = truth.session
            self.hermes.ensure_session(truth.session_id, source="webui", model=s.model)
            self.hermes.update_token_counts(
                truth.session_id, input_tokens=s.input_tokens, output_tokens=s.output_tokens,
                estimated_cost_usd=s.estimated_cost, model=s.model, absolute=True,
            )
            if truth.hermes_title is None:
                self.hermes.set_session_title(truth.session_id, s.title)
                truth.bridge_title = s.title
            conn = sqlite3.connect(self.db)
            with conn:
                conn.execute("UPDATE sessions SET message_count = ? WHERE id = ?", (len(s.messages), truth.session_id))
            conn.close()
            truth.tampered = True
        finally:
            self.enabled = True

    @rule(truth=chats)
    def manual_edit(self, truth: Truth) -> None:
        if truth.hermes_writes or read_row(self.db, truth.session_id) is None:
            return  # hermes-agent's own rows are hermes' business
        conn = sqlite3.connect(self.db)
        with conn:
            conn.execute("UPDATE sessions SET input_tokens = input_tokens + 777 WHERE id = ?", (truth.session_id,))
        conn.close()
        truth.tampered = True

    # --------------------------------------------------------------- processes

    @rule()
    def restart(self) -> None:
        installer.uninstall()
        assert webui_insights.flush(10)
        installer._reset_for_tests()  # a new process: its capture remembers nothing
        self._install()
        for truth in self.truths.values():
            truth.captured = None
            truth.sent_here = False

    @rule(truth=chats)
    def late_process_with_an_old_copy(self, truth: Truth) -> None:
        """Another process applies an earlier state of the chat, late (backfill from an old folder)."""
        if len(truth.old_files) < 2 or truth.odd_clock or self.clock.offset:
            # While a recorded version cannot be trusted (a clock ahead stamped it, or the clock is set back
            # now), an old copy may be applied: its title may win until the chat's next save (documented),
            # and messages removed since it read as seen: added back, they count once (documented).
            truth.late_copy_may_win = True
            if len(truth.old_files) >= 2 and len(truth.old_files[-2].get("messages") or []) > len(truth.session.messages):
                truth.count_unordered = True
            if len(truth.old_files) < 2:
                return
        folder = Path(TMP.mkdtemp()) / "sessions"
        folder.mkdir()
        (folder / f"{truth.session_id}.json").write_text(json.dumps(truth.old_files[-2]))
        row_before = read_row(self.db, truth.session_id)
        backfill(scan_sessions(folder), Homes(self.home))
        if truth.seen_file == len(truth.old_files) - 2 and row_before is not None and truth.old_files[-2]["title"] != "Untitled":
            # The state this layer saw last: its pass repairs the row as a sweep would, and takes the
            # title it finds there (the host's bridge's, the same text) as its own.
            truth.layer_titled = truth.layer_titled or (truth.row_expected and truth.hermes_title is None)
        elif (
            truth.seen_messages is None
            and row_before is not None
            and truth.hermes_title is None
            and truth.bridge_title is not None
            and truth.old_files[-2]["title"] == truth.bridge_title
        ):
            # This layer meets the chat in the copy, with the title the host's bridge put on the row:
            # the same text, taken as its own (a later WebUI rename is followed, not kept out).
            truth.bridge_title = None
            truth.layer_titled = True

    @rule(hours=st.sampled_from([6.0, -6.0, 0.0]))
    def clock_jump(self, hours: float) -> None:
        self.clock.offset = hours * 3600

    @rule(kind=st.sampled_from(["busy", "broken"]), times=st.integers(1, 2))
    def fault_then_recovery(self, kind: str, times: int) -> None:
        """state.db refuses the next writes (locked, or an I/O error), then works again."""
        busy = sqlite3.OperationalError("database is locked")
        self.faults[:] = [busy if kind == "busy" else sqlite3.DatabaseError("disk I/O error")] * times

    # ------------------------------------------------------- our own commands

    @rule()
    def sweep(self) -> None:
        reconcile_pass(Homes(self.home), self.webui / "sessions")
        self._passed_over_all()

    @rule()
    def run_backfill(self) -> None:
        backfill(scan_sessions(self.webui / "sessions"), Homes(self.home))
        self._passed_over_all()

    @rule()
    def verify_fix(self) -> None:
        verify(scan_sessions(self.webui / "sessions"), Homes(self.home), fix=True)
        self._passed_over_all()

    # ---------------------------------------------------------------- oracle

    @invariant()
    def rows_show_the_truth(self) -> None:
        assert webui_insights.flush(20), installer.stats()
        for truth in self.truths.values():
            self._check(truth)

    @staticmethod
    def _counted_apart(truth: Truth) -> bool:
        """Turns only the WebUI counted and turns only the hook counted, in a row this layer writes (documented)."""
        if truth.hermes_writes:
            return False
        turns = truth.turns[truth.base_turns :]
        webui_only = any((t.recorded_by_webui or t.recorded_by_hermes) and not t.counted_by_hook for t in turns)
        hook_only = any(t.counted_by_hook and not t.recorded_by_webui for t in turns)
        return webui_only and hook_only

    def _check(self, truth: Truth) -> None:
        row = read_row(self.db, truth.session_id)
        sid = truth.session_id
        if truth.tampered:
            return  # someone else's values stay until this layer's next pass over the chat (documented)
        if truth.first_seen_odd:
            # Messages stamped by a clock set back read as older than the chat: the evidence of a copy
            # is wrong then (documented); only its title and owner are compared.
            if row is not None and truth.hermes_title is None and truth.title_seen and not truth.late_copy_may_win:
                assert row["title"] in (truth.title_seen, truth.bridge_title), sid
            return
        if truth.deleted or not truth.row_expected or truth.seen_messages is None:
            assert row is None, f"{sid}: a row that should not be there: {row}"
            return
        if row is None and truth.behind_pending:
            return  # deleted before the turn stamped behind, which waits for the chat's next save
        assert row is not None, f"{sid}: no row"
        assert row["source"] == "webui"
        if truth.others_values:
            pass  # hermes-agent's row with someone else's values in it: its business (documented)
        elif truth.usage_unknown or truth.mixed_counts or truth.behind_pending or self._counted_apart(truth):
            # What it can tell is bounded: never more than every turn, counted in full (never twice).
            full = truth.spent(in_full=True)
            assert (row["estimated_cost_usd"] or 0.0) <= full.pop("cost") + 1e-9, sid
            for column, value in full.items():
                assert row[column] <= value, f"{sid}: {column} = {row[column]}, more than spent ({value})"
        elif not truth.first_seen_odd:
            spent = truth.spent()
            assert (row["estimated_cost_usd"] or 0.0) == pytest.approx(spent.pop("cost"), abs=1e-9), sid
            for column, value in spent.items():
                assert row[column] == value, f"{sid}: {column} = {row[column]}, spent {value}"
            if truth.hermes_writes:
                if truth.hermes_messages is not None:
                    assert row["message_count"] == truth.hermes_messages, f"{sid}: hermes-agent's message count"
            elif not truth.count_unordered:
                assert row["message_count"] == truth.seen_messages, f"{sid}: messages ever added"
        title = truth.hermes_title[0] if truth.hermes_title is not None else (truth.title_seen or truth.bridge_title)
        if truth.bridge_title is not None and truth.hermes_title is None and title != truth.bridge_title:
            title = None  # seen only after the bridge's title: the row may hold either (the bridge wrote it)
        if truth.clear_unsure and not truth.late_copy_may_win:
            assert row["title"] in (None, truth.title_seen), f"{sid}: title {row['title']!r}"
        elif (title is not None or truth.hermes_title is not None) and not truth.late_copy_may_win:
            assert row["title"] == title, f"{sid}: title {row['title']!r}, want {title!r}"
        if not truth.odd_clock and self.clock.offset == 0:
            assert abs(row["started_at"] - truth.session.created_at) < 1e-3, f"{sid}: started_at"
            if not truth.hermes_writes and not truth.activity_unknown:
                assert truth.last_activity is not None
                assert abs(row["ended_at"] - truth.last_activity) < 1e-3, f"{sid}: ended_at = its last activity"


class _TempDirs:
    """Temporary folders for the histories (pytest's tmp_path is per test, a history is per example)."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.count = 0

    def mkdtemp(self) -> str:
        assert self.root is not None
        self.count += 1
        path = self.root / f"world-{self.count}"
        path.mkdir()
        return str(path)


TMP = _TempDirs()


@pytest.fixture
def world_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    TMP.root = tmp_path
    monkeypatch.setenv("HERMES_HOME", str(tmp_path))  # restored after the test (each world sets its own)
    monkeypatch.setenv("HERMES_WEBUI_STATE_DIR", str(tmp_path / "webui"))
    monkeypatch.delenv("WEBUI_INSIGHTS_ENABLED", raising=False)
    return tmp_path


@pytest.mark.slow
def test_every_history_leaves_rows_that_show_the_truth(world_dirs: Path) -> None:
    WorldModel.TestCase.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=int(os.environ.get("WEBUI_INSIGHTS_MODEL_STEPS", "30")),
        deadline=None,
        derandomize=not RANDOM,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    WorldModel.TestCase().runTest()


# Histories the model found, shrunk, kept as plain regression tests (each failed before its fix).


def _replay(host: str, script: list[tuple[str, dict[str, Any]]]) -> None:
    """Play one history and check the oracle after each step.

    Each step is a rule's name and its arguments; ``truth`` names a chat: ``None`` the latest new chat,
    a number the chats in the order they were made (new chats and copies alike; 0 is the first).
    """
    world = WorldModel()
    try:
        world.choose_host(kind=host)
        chats: list[Truth] = []
        latest: Truth | None = None
        for name, step in script:
            kwargs = dict(step)
            if "truth" in kwargs:
                kwargs["truth"] = latest if step["truth"] is None else chats[step["truth"]]
            made = getattr(world, name)(**kwargs)
            if isinstance(made, Truth):
                chats.append(made)
                latest = made if name == "new_chat" else latest
            try:
                world.rows_show_the_truth()
            except AssertionError as exc:
                raise AssertionError(f"after {name}{step or ''}: {exc}") from exc
    finally:
        world.teardown()


TURN = ("turn", {"truth": None, "cached": False, "calls": 1, "streaming": False})
STREAMING_TURN = ("turn", {"truth": None, "cached": False, "calls": 1, "streaming": True})


@pytest.mark.parametrize(
    ("host", "script"),
    [
        pytest.param(  # its messages read as older than the chat: taken for a copy, nothing counted
            "old",
            [("clock_jump", {"hours": 6.0}), ("new_chat", {}), ("sweep", {}), ("clock_jump", {"hours": 0.0}), TURN],
            id="created-while-the-clock-ran-ahead",
        ),
        pytest.param(  # the title the host's bridge wrote, cleared in hermes: expected back
            "old",
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": None}), ("clear", {"truth": None}),
             ("hermes_rename", {"truth": None, "title": ""})],
            id="bridge-title-cleared-in-hermes",
        ),
        pytest.param(  # an old copy applied while the clock was set back brought the pruned chat back
            "old",
            [("new_chat", {}), TURN, ("hermes_prune", {}), ("clear", {"truth": None}),
             ("clock_jump", {"hours": -6.0}), ("late_process_with_an_old_copy", {"truth": None})],
            id="pruned-then-an-old-copy-under-a-clock-set-back",
        ),
        pytest.param(  # a turn under a clock set back: its messages were not counted
            "old",
            [("new_chat", {}), TURN, ("run_backfill", {}), ("clock_jump", {"hours": -6.0}), TURN],
            id="a-turn-while-the-clock-is-set-back",
        ),
        pytest.param(  # restored after a deletion, then hermes-agent's live agent writes into it again
            "current",
            [("new_chat", {}), STREAMING_TURN, ("hermes_delete", {"truth": None}), TURN, STREAMING_TURN],
            id="deleted-restored-then-hermes-agent-writes-again",
        ),
        pytest.param(  # a cleared chat read while the clock was set back: no message counted as a turn
            "old",
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": None}), ("rename", {"truth": None, "title": "Renamed"}),
             ("hermes_prune", {}), ("clear", {"truth": None}), ("clock_jump", {"hours": -6.0}), ("run_backfill", {})],
            id="pruned-cleared-then-backfilled-under-a-clock-set-back",
        ),
        pytest.param(  # a title renamed in hermes, then cleared there: stays empty
            "old",
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": None}),
             ("hermes_rename", {"truth": None, "title": "From hermes"}), TURN, ("hermes_rename", {"truth": None, "title": ""})],
            id="renamed-then-cleared-in-hermes",
        ),
        pytest.param(  # a manual edit, then hermes-agent takes the row over: its values stay (documented)
            "current",
            [("new_chat", {}), TURN, ("manual_edit", {"truth": None}), STREAMING_TURN],
            id="manual-edit-then-hermes-agent-takes-over",
        ),
        pytest.param(  # a turn saved while the clock ran ahead, then pruned: dropped as stale, never restored
            "old",
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": None}), ("edit_or_truncate", {"truth": None, "keep": 0}),
             ("clock_jump", {"hours": 6.0}), ("host_bridge_while_paused", {"truth": None}), ("clock_jump", {"hours": 0.0}),
             ("hermes_prune", {}), ("verify_fix", {})],
            id="a-turn-stamped-ahead-then-pruned",
        ),
        pytest.param(  # pruned, then made anew by the host's bridge, cleared in hermes: our old title's memory
            "old",  # spoke of the pruned row, and kept the bridge's cleared title empty
            [("new_chat", {}), ("turn", {**TURN[1], "cached": True, "calls": 2, "streaming": True}), ("hermes_prune", {}),
             ("host_bridge_while_paused", {"truth": None}), ("hermes_rename", {"truth": None, "title": ""}), ("verify_fix", {})],
            id="pruned-made-anew-by-the-bridge-then-cleared-in-hermes",
        ),
        pytest.param(  # the same, with this layer's pass over the bridge's row first: the title is its own then
            "old",
            [("new_chat", {}), ("turn", {**TURN[1], "cached": True, "calls": 2, "streaming": True}), ("hermes_prune", {}),
             ("host_bridge_while_paused", {"truth": None}), ("late_process_with_an_old_copy", {"truth": None}),
             ("hermes_rename", {"truth": None, "title": ""}), ("verify_fix", {})],
            id="pruned-made-anew-by-the-bridge-adopted-then-cleared-in-hermes",
        ),
        pytest.param(  # renamed in hermes before this layer met the chat, then cleared there: filled again
            "old",
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": None}),
             ("hermes_rename", {"truth": None, "title": "From hermes"}), ("run_backfill", {}),
             ("hermes_rename", {"truth": None, "title": ""}), ("run_backfill", {})],
            id="a-hermes-title-met-then-cleared-in-hermes",
        ),
        pytest.param(  # an old copy read while the clock is set back: its message, stamped before, read as a turn
            "old",  # and brought the deleted chat back
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": None}), ("run_backfill", {}),
             ("clock_jump", {"hours": -6.0}), ("turn", {**TURN[1], "cached": True, "calls": 2, "streaming": True}),
             ("hermes_delete", {"truth": None}), ("late_process_with_an_old_copy", {"truth": None})],
            id="deleted-then-an-old-copy-while-the-clock-is-set-back",
        ),
        pytest.param(  # a turn saved while the clock was set back, read after it ran ahead (a bound until next save)
            "old",
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": None}), ("edit_or_truncate", {"truth": None, "keep": 0}),
             ("clock_jump", {"hours": -6.0}), ("host_bridge_while_paused", {"truth": None}), ("clock_jump", {"hours": 6.0}),
             ("hermes_prune", {}), ("run_backfill", {}), TURN],
            id="a-turn-stamped-behind-read-after-the-clock-ran-ahead",
        ),
        pytest.param(  # an old copy read twice after the clock ran ahead and back: the second read took its
            "old",  # figures for a fresh start, and the newest state (stamped ahead) counted its turn again
            [("new_chat", {}), ("turn", {**TURN[1], "calls": 2, "streaming": True}), ("clock_jump", {"hours": 6.0}),
             STREAMING_TURN, ("clock_jump", {"hours": 0.0}), ("late_process_with_an_old_copy", {"truth": None}),
             ("late_process_with_an_old_copy", {"truth": None}), ("sweep", {})],
            id="an-old-copy-read-twice-after-the-clock-ran-ahead",
        ),
        pytest.param(  # an old copy stamped ahead took the record's digest: the current state read as stale,
            "old",  # and a manual edit was never repaired
            [("new_chat", {}), ("turn", {**TURN[1], "cached": True, "calls": 2, "streaming": True}),
             ("clock_jump", {"hours": 6.0}), STREAMING_TURN, ("clock_jump", {"hours": 0.0}),
             ("edit_or_truncate", {"truth": None, "keep": 1}), ("late_process_with_an_old_copy", {"truth": None}),
             ("manual_edit", {"truth": None}), ("sweep", {})],
            id="an-old-copy-stamped-ahead-then-a-manual-edit",
        ),
        pytest.param(  # renamed while the clock ran ahead, an old copy after it was set right: the sweep
            "old",  # must bring the rename back
            [("new_chat", {}), ("turn", {**TURN[1], "cached": True, "calls": 2, "streaming": True}),
             ("clock_jump", {"hours": 6.0}), ("rename", {"truth": None, "title": "Renamed"}), ("clock_jump", {"hours": 0.0}),
             ("late_process_with_an_old_copy", {"truth": None}), ("sweep", {})],
            id="renamed-while-the-clock-ran-ahead-then-an-old-copy",
        ),
        pytest.param(  # the clock set back, a turn, the clock ahead, an old copy: the lowered record let the
            "old",  # copy outrank the turn saved while the clock was set back (its spend counted twice after)
            [("new_chat", {}), TURN, ("clock_jump", {"hours": -6.0}), TURN, ("clock_jump", {"hours": 6.0}),
             ("late_process_with_an_old_copy", {"truth": None}), ("manual_edit", {"truth": None}), ("sweep", {}), TURN],
            id="an-old-copy-after-the-clock-was-set-back-then-ahead",
        ),
        pytest.param(  # the same with a deletion in hermes: the copy brought the deleted chat back
            "old",
            [("new_chat", {}), TURN, ("clock_jump", {"hours": -6.0}), TURN, ("clock_jump", {"hours": 6.0}),
             ("hermes_delete", {"truth": None}), ("late_process_with_an_old_copy", {"truth": None}),
             ("rename", {"truth": None, "title": "Renamed"})],
            id="deleted-then-an-old-copy-after-the-clock-was-set-back-then-ahead",
        ),
        pytest.param(  # an edit under a clock set back, after a deletion: the message left, stamped before the
            "old",  # clock was set back, read as later than the removed turn's and brought the chat back
            [("new_chat", {}), TURN, ("clock_jump", {"hours": -6.0}), TURN, ("hermes_delete", {"truth": None}),
             ("edit_or_truncate", {"truth": None, "keep": 1})],
            id="deleted-then-edited-under-a-clock-set-back",
        ),
        pytest.param(  # cleared under a clock set back, then hermes-agent takes the row over (model: its count
            "current",  # starts from the row's, a bound)
            [("new_chat", {}), TURN, ("clock_jump", {"hours": -6.0}), ("clear", {"truth": None}), TURN, STREAMING_TURN],
            id="cleared-under-a-clock-set-back-then-hermes-agent-writes",
        ),
        pytest.param(  # created while the clock ran ahead, pruned, made anew by hermes-agent: the start time
            "current",  # clamped to the row's hid that the row was made anew (its empty title read as cleared)
            [("clock_jump", {"hours": 6.0}), ("new_chat", {}), ("clock_jump", {"hours": 0.0}), TURN, ("hermes_prune", {}),
             STREAMING_TURN],
            id="created-ahead-pruned-then-made-anew-by-hermes-agent",
        ),
        pytest.param(  # created while the clock ran ahead (its row dated now), cleared in hermes: kept cleared
            "old",
            [("clock_jump", {"hours": 6.0}), ("new_chat", {}), ("clock_jump", {"hours": 0.0}), TURN,
             ("hermes_rename", {"truth": None, "title": ""}), ("run_backfill", {})],
            id="created-ahead-then-cleared-in-hermes",
        ),
        pytest.param(  # restored untitled (cleared) after a prune: the deleted row's title memory made the
            "old",  # next WebUI title read as cleared in hermes
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": None}), ("run_backfill", {}),
             ("host_bridge_while_paused", {"truth": None}), ("hermes_prune", {}), ("clear", {"truth": None}),
             ("rename", {"truth": None, "title": "Renamed"})],
            id="restored-untitled-then-renamed",
        ),
        pytest.param(  # the bridge's row of a copy, written under a clock set back and read after it was set
            "old",  # right: the state reads as older than the one on record, so the bridge's figures (the
            # copied ones with them) stay until the chat's next save (the model expected them repaired)
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": 0}),
             ("duplicate_or_import", {"truth": 0, "keep_figures": True}), ("clock_jump", {"hours": -6.0}),
             ("host_bridge_while_paused", {"truth": 1}), ("clock_jump", {"hours": 6.0}), ("run_backfill", {})],
            id="a-copy-the-bridge-wrote-under-a-clock-set-back",
        ),
        pytest.param(  # the same with a manual edit: it stays until the chat's next save (input 2777, 2000 spent)
            "old",
            [("new_chat", {}), STREAMING_TURN, ("clock_jump", {"hours": -6.0}),
             ("host_bridge_while_paused", {"truth": None}), ("clock_jump", {"hours": 0.0}),
             ("manual_edit", {"truth": None}), ("sweep", {})],
            id="a-manual-edit-while-a-state-saved-under-a-clock-set-back-waits",
        ),
        pytest.param(  # the bridge's title on a copy, the copy cleared in the WebUI, the title cleared in
            "old",  # hermes: the WebUI has no title to fill it with (the model expected the copy's old one)
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": 0}),
             ("duplicate_or_import", {"truth": 0, "keep_figures": False}), ("host_bridge_while_paused", {"truth": 1}),
             ("clear", {"truth": 1}), ("hermes_rename", {"truth": 1, "title": ""})],
            id="a-copy-titled-by-the-bridge-cleared-in-the-webui-then-in-hermes",
        ),
        pytest.param(  # a title cleared in hermes on this layer's row, then hermes-agent takes the row over:
            "current",  # its empty title was read as a row made anew, and the WebUI's title filled it again
            [("new_chat", {}), TURN, ("hermes_rename", {"truth": None, "title": ""}), STREAMING_TURN],
            id="cleared-in-hermes-then-hermes-agent-takes-over",
        ),
        pytest.param(  # renamed in the WebUI while pruned (no row to title), the host's bridge makes the row
            "old",  # anew with that title, cleared in hermes: the WebUI's fills it (the model took the rename
            # for a title of this layer's, and its clear for one to keep)
            [("new_chat", {}), TURN, ("hermes_prune", {}), ("rename", {"truth": None, "title": "Renamed"}),
             ("host_bridge_while_paused", {"truth": None}), ("hermes_rename", {"truth": None, "title": ""}),
             ("run_backfill", {})],
            id="renamed-while-pruned-made-anew-by-the-bridge-then-cleared-in-hermes",
        ),
        pytest.param(  # the host's bridge titled the row, the WebUI's title reset to "Untitled" before this
            "old",  # layer met the chat: no rename (the model kept the bridge's title as one set elsewhere)
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": None}),
             ("rename", {"truth": None, "title": "Untitled"}), ("host_bridge_while_paused", {"truth": None}),
             ("verify_fix", {}), ("rename", {"truth": None, "title": "Renamed"})],
            id="bridge-titled-then-untitled-in-the-webui-before-this-layer-met-it",
        ),
        pytest.param(  # this layer first meets a chat the host's bridge titled in an old copy with that same
            "old",  # title (it takes the title as its own), then the WebUI renames it: followed (the model
            # took the bridge's title for one set elsewhere, to keep)
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": None}),
             ("host_bridge_while_paused", {"truth": None}), ("late_process_with_an_old_copy", {"truth": None}),
             ("rename", {"truth": None, "title": "Plans"})],
            id="met-in-an-old-copy-with-the-bridges-title-then-renamed",
        ),
        pytest.param(  # the bridge's title, kept as set elsewhere, becomes the WebUI's own again (a turn titles
            "old",  # an untitled chat the same): taken as this layer's, so the next WebUI rename is followed
            [("new_chat", {}), ("host_bridge_while_paused", {"truth": None}),
             ("rename", {"truth": None, "title": "Renamed"}), ("rename", {"truth": None, "title": "Untitled"}),
             TURN, ("rename", {"truth": None, "title": "Renamed"})],
            id="the-bridges-title-kept-then-the-webuis-again-then-renamed",
        ),
    ],
)
def test_a_history_the_model_found(world_dirs: Path, host: str, script: list[tuple[str, dict[str, Any]]]) -> None:
    _replay(host, script)
