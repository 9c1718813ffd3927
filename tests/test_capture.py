"""The save path: the gate (nothing new, nothing sent), one order per chat, bounded memory, errors named.

``python tests/test_capture.py [CHATS]`` prints the bookkeeping bytes per chat
(``bookkeeping_bytes_per_chat``), the figure ``make bench`` reports.
"""

from __future__ import annotations

import gc
import random
import sys
import threading
import time
import tracemalloc
import types
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from support.chats import make_session, save_turn
from support.checks import log_lines, same_time
from support.db import read_row

import webui_insights
from webui_insights import snapshot as snapshot_module
from webui_insights.demo_host import TARGET, DemoSession
from webui_insights.diagnostics import RateLimitedLog, Stats
from webui_insights.engine import transcripts as transcripts_module
from webui_insights.engine.transcripts import TranscriptWriter
from webui_insights.hook import agent_usage as agent_usage_module
from webui_insights.hook import capture as capture_module
from webui_insights.hook import installer
from webui_insights.hook.adapter import webui_session_adapter
from webui_insights.hook.agent_usage import AgentUsage
from webui_insights.hook.capture import Capture
from webui_insights.snapshot import UsageSnapshot
from webui_insights.writer import WriterConfig


class BareSession:
    """hermes-webui's Session fields, no I/O."""

    def __init__(self, session_id: str, **values: Any) -> None:
        self.session_id = session_id
        self.profile = None
        self.model = "m"
        self.model_provider = None
        self.title = "A chat"
        self.messages: list[Any] = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        self.created_at = 1_700_000_000.0
        self.updated_at = 1_700_000_100.0
        self.input_tokens = 10
        self.output_tokens = 2
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.estimated_cost: Any = None
        self.__dict__.update(values)


class Agent:
    """hermes-agent's AIAgent counters (what the agent hook reads)."""

    def __init__(self, session_id: str, writes: bool) -> None:
        self.session_id = session_id
        self._session_db = object() if writes else None
        self.session_cache_read_tokens = 5
        self.session_cache_write_tokens = 1
        self.session_reasoning_tokens = 0
        self.session_api_calls = 1


def new_capture(adapter: Any = webui_session_adapter) -> Capture:
    stats, log = Stats(), RateLimitedLog()
    return Capture(stats, log, AgentUsage(stats, log), adapter)


# ------------------------------------------------------------------ the gate


def test_a_save_with_nothing_new_is_answered_by_the_gate() -> None:
    capture = new_capture()
    chat = BareSession("abcdefabcdef")
    assert capture.take(chat) is not None
    assert capture.take(chat) is None
    chat.input_tokens += 1
    assert capture.take(chat) is not None
    assert capture.take(chat) is None
    counts = capture.stats.as_dict()
    assert (counts["saves_seen"], counts["skipped"]["unchanged"]) == (4, 2)


def test_news_from_the_agent_opens_the_gate() -> None:
    capture = new_capture()
    chat = BareSession("abcdefabcdef")
    capture.take(chat)
    capture.agent.observe(Agent("abcdefabcdef", writes=False))
    snapshot = capture.take(chat)
    assert snapshot is not None and snapshot.ledger is not None and snapshot.ledger.cache_read_tokens == 5
    assert capture.take(chat) is None  # taken once


def test_the_gate_forgets_the_oldest_chats_past_its_limit_and_nothing_is_lost(
    mirror: Any, webui_dir: Path, hermes_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture_module, "GATE_LIMIT", 3)
    chats = [make_session(webui_dir) for _ in range(5)]
    for chat in chats:
        save_turn(chat, 4, 1)
    cap = installer._state.capture
    assert cap is not None and list(cap.gate) == [c.session_id for c in chats[2:]]
    chats[0].save()  # forgotten: captured again; the engine finds the row up to date
    assert webui_insights.flush(5)
    stats = webui_insights.stats()
    assert stats["snapshots_queued"] == 6 and stats["chats"]["unchanged"] == 1
    chats[4].save()  # remembered: answered by the gate
    assert webui_insights.stats()["snapshots_queued"] == 6
    for chat in chats:
        assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 4  # type: ignore[index]


def test_a_dropped_update_lets_the_next_unchanged_save_through_in_every_capture(
    hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig
) -> None:
    def adapter(session: Any) -> UsageSnapshot:
        return UsageSnapshot(session.session_id, input_tokens=session.input_tokens, message_count=1)

    installer.install(target=TARGET, enabled=True, writer_config=fast_writer)

    def save(session: Any) -> None:
        return None

    decorated = webui_insights.mirror_usage(adapter=adapter, enabled=True)(save)
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=3, output_tokens=1)
    chat.save()
    decorated(chat)
    state = installer._state
    assert all(chat.session_id in c.gate for c in state.captures.values())
    assert len(state.captures) == 2
    snapshot = state.capture.take(BareSession(chat.session_id, input_tokens=99)) if state.capture else None
    assert snapshot is not None
    state.forget(snapshot)  # what the writer calls when it gives an update up
    assert not any(chat.session_id in c.gate for c in state.captures.values())


# -------------------------------------------------------------- one order


def test_stamps_are_strictly_increasing_across_captures_and_threads() -> None:
    captures = [new_capture(), new_capture()]
    stamps: list[float] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        mine = []
        for i in range(300):
            snapshot = captures[n % 2].take(BareSession(f"{n:04x}{i:08x}"))
            assert snapshot is not None
            mine.append(snapshot.observed)
        assert mine == sorted(mine) and len(set(mine)) == len(mine)
        with lock:
            stamps.extend(mine)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(stamps)) == len(stamps) == 8 * 300  # no two states of the process share a stamp


def test_stamps_keep_increasing_when_the_wall_clock_stalls_or_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([1000.0, 1000.0, 999.0, 1000.5, 1000.5])
    monkeypatch.setattr(capture_module, "time", types.SimpleNamespace(time=lambda: next(readings)))
    monkeypatch.setattr(capture_module._order, "last", 0.0)
    capture = new_capture()
    stamps = []
    for n in range(5):
        snapshot = capture.take(BareSession(f"{n:012x}"))
        assert snapshot is not None
        stamps.append(snapshot.observed)
    assert all(a < b for a, b in zip(stamps, stamps[1:], strict=False)), stamps
    assert stamps[-1] == same_time(1000.5 + 1e-6, within=1e-9)


def test_a_clock_set_back_by_hours_is_followed_not_outrun(monkeypatch: pytest.MonkeyPatch) -> None:
    """A VM resumed with its clock 6 h ahead, then corrected: stamps come back to real time at once."""
    ahead = 1000.0 + 6 * 3600
    readings = iter([ahead, 1000.0, 1000.0, 1001.0])
    monkeypatch.setattr(capture_module, "time", types.SimpleNamespace(time=lambda: next(readings)))
    monkeypatch.setattr(capture_module._order, "last", 0.0)
    capture = new_capture()
    stamps = [capture.take(BareSession(f"{n:012x}")).observed for n in range(4)]  # type: ignore[union-attr]
    assert stamps == [ahead, 1000.0, same_time(1000.0 + 1e-6, within=1e-9), 1001.0]


def test_a_stamp_is_taken_before_the_chat_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture that is slow to stamp still orders before the next capture of the same chat."""
    capture = new_capture()
    chat = BareSession("abcdefabcdef", title="First")
    real_stamp = capture_module._order.stamp
    first_thread: list[threading.Thread] = []
    second_stamped = threading.Event()

    def stamp() -> float:
        if threading.current_thread() in first_thread:
            second_stamped.wait(0.5)  # give the second capture every chance to stamp first
            return real_stamp()
        value = real_stamp()
        second_stamped.set()
        return value

    monkeypatch.setattr(capture_module._order, "stamp", stamp)
    results: dict[str, Any] = {}
    first = threading.Thread(target=lambda: results.setdefault("first", capture.take(chat)))
    first_thread.append(first)
    first.start()
    time.sleep(0.1)  # the first capture has read "First" and waits in its stamp
    chat.title = "Second"
    results["second"] = capture.take(chat)
    first.join(5)
    assert results["first"].title == "First" and results["second"].title == "Second"
    assert results["first"].observed < results["second"].observed


class SlowModel(BareSession):
    """A session whose ``model`` read blocks in one chosen thread (the read is under way)."""

    block_in: threading.Thread | None = None
    reading = threading.Event()
    go_on = threading.Event()

    @property
    def model(self) -> str:
        if threading.current_thread() is type(self).block_in:
            type(self).reading.set()
            type(self).go_on.wait(10)
        return "m"

    @model.setter
    def model(self, value: str) -> None:
        pass


@pytest.fixture
def slow_model() -> Any:
    SlowModel.block_in = None
    SlowModel.reading = threading.Event()
    SlowModel.go_on = threading.Event()
    yield SlowModel
    SlowModel.go_on.set()


def test_the_read_and_the_stamp_of_a_chat_are_taken_together(slow_model: Any) -> None:
    capture = new_capture()
    chat = slow_model("abcdefabcdef", title="First")
    webui_session_adapter.fingerprint(chat)  # the adapter learns the class (one extra read) beforehand
    results: dict[str, Any] = {}

    def first() -> None:
        results["first"] = capture.take(chat)

    reader = threading.Thread(target=first)
    slow_model.block_in = reader
    reader.start()
    assert slow_model.reading.wait(5)  # "First" read, the read not finished
    chat.title = "Second"
    second = threading.Thread(target=lambda: results.setdefault("second", capture.take(chat)))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # waits for the first capture of the same chat to finish
    slow_model.go_on.set()
    reader.join(5)
    second.join(5)
    assert results["first"].title == "First" and results["second"].title == "Second"
    assert results["first"].observed < results["second"].observed  # the order of the states read


def test_the_fast_path_never_takes_a_state_for_sent_while_an_older_one_is_being_sent(slow_model: Any) -> None:
    capture = new_capture()
    chat = slow_model("abcdefabcdef", title="A")
    assert capture.take(chat) is not None  # "A" sent: the gate knows it
    chat.title = "B"
    results: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: results.setdefault("B", capture.take(chat)))
    slow_model.block_in = sender
    sender.start()
    assert slow_model.reading.wait(5)  # "B" read, about to be sent
    chat.title = "A"  # renamed back, and saved again: is "A" new?
    checker = threading.Thread(target=lambda: results.setdefault("A", capture.take(chat)))
    checker.start()
    checker.join(0.3)
    answered_early = not checker.is_alive()
    slow_model.go_on.set()
    sender.join(5)
    checker.join(5)
    assert not answered_early  # it waited for the capture of "B" to finish
    assert results["B"].title == "B"
    last = results["A"]  # "B" went out after "A" was first sent: "A" is new again
    assert last is not None and last.title == "A" and last.observed > results["B"].observed


class LockedSession(DemoSession):
    """A host whose save may run in many threads at once (its own lock around the file)."""

    file_lock = threading.Lock()

    def save(self, touch_updated_at: bool = True, skip_index: bool = False) -> None:
        with self.file_lock:
            super().save(touch_updated_at, skip_index)


def test_sixteen_threads_renaming_and_saving_one_chat_end_with_the_last_title(
    hermes_home: Path, webui_dir: Path
) -> None:
    installer.install(
        target=f"{__name__}:LockedSession.save", enabled=True, writer_config=WriterConfig(debounce_s=0.001)
    )
    db = hermes_home / "state.db"
    for round_ in range(3):
        chat = LockedSession(webui_dir)
        chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
        chat.save()
        start = threading.Barrier(16)
        errors: list[BaseException] = []

        def rename_and_save(
            n: int,
            chat: LockedSession = chat,
            start: threading.Barrier = start,
            round_: int = round_,
            errors: list[BaseException] = errors,
        ) -> None:
            rng = random.Random(n * 1000 + round_)
            start.wait()
            for i in range(20):
                chat.title = f"title {round_}-{n}-{i}"
                if rng.random() < 0.2:
                    time.sleep(0.0005)
                try:
                    chat.save(touch_updated_at=rng.random() < 0.5)  # a rename may keep updated_at
                except BaseException as exc:  # noqa: BLE001 - any escape is the failure we look for
                    errors.append(exc)

        threads = [threading.Thread(target=rename_and_save, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        assert webui_insights.flush(10)
        row = read_row(db, chat.session_id)
        assert row is not None and row["title"] == chat.title, (round_, row and row["title"], chat.title)


# ---------------------------------------------------------------- errors named


def test_an_adapter_that_raises_is_skipped_counted_and_logged_with_the_exception(
    log: pytest.LogCaptureFixture,
) -> None:
    def adapter(session: Any) -> UsageSnapshot:
        raise session.error

    capture = new_capture(adapter)
    for error in (ValueError("no usage field"), ValueError("again"), KeyError("title")):
        chat = BareSession("abcdefabcdef", error=error)
        assert capture.take(chat) is None
    assert capture.stats.as_dict()["skipped"]["adapter_error"] == 3
    assert capture.stats.as_dict()["internal_errors"] == 0
    # Rate-limited per kind: one line per exception class, each with its class and message.
    assert log_lines(log, "the adapter failed on a BareSession", "ValueError: no usage field")
    assert log_lines(log, "the adapter failed on a BareSession", "KeyError: 'title'")
    assert not log_lines(log, "again")


def test_a_session_attribute_that_raises_is_an_adapter_error_not_a_crash(log: pytest.LogCaptureFixture) -> None:
    class Broken(BareSession):
        @property
        def title(self) -> str:
            raise RuntimeError("lazy title failed to load")

        @title.setter
        def title(self, value: str) -> None:
            pass

    capture = new_capture()
    assert capture.take(Broken("abcdefabcdef")) is None
    assert capture.stats.as_dict()["skipped"]["adapter_error"] == 1
    assert log_lines(log, "the adapter failed on a Broken", "RuntimeError: lazy title failed to load")


@pytest.mark.parametrize(
    "values, reason, words",
    [
        ({"input_tokens": -1}, "bad_value", "input_tokens must be a non-negative integer, got int -1"),
        ({"title": 5}, "bad_value", "title must be a string, got int"),
        ({"estimated_cost": float("nan")}, "bad_cost", "estimated_cost_usd must be a finite non-negative number"),
        ({"estimated_cost": "cheap"}, "bad_cost", "got str"),
        ({"estimated_cost": Decimal("-0.5")}, "bad_cost", "got Decimal Decimal('-0.5')"),
        ({"session_id": "../etc"}, "invalid_session_id", "session_id must match"),
        ({"profile": "../away"}, "invalid_profile", "profile must be None or match"),
    ],
)
def test_a_refused_value_is_counted_and_logged_with_its_reason(
    values: dict[str, Any], reason: str, words: str, log: pytest.LogCaptureFixture
) -> None:
    capture = new_capture()
    session = BareSession("abcdefabcdef")
    session.__dict__.update(values)
    assert capture.take(session) is None
    assert capture.stats.as_dict()["skipped"][reason] == 1
    assert log_lines(log, f"not mirroring a chat ({reason})", words)


@pytest.mark.parametrize("cost", [Decimal("0.0123"), 1, 0.5, "0.25", " 3 ", "1e-3"])
def test_numeric_costs_of_every_kind_are_accepted(cost: Any) -> None:
    snapshot = new_capture().take(BareSession("abcdefabcdef", estimated_cost=cost))
    assert snapshot is not None and snapshot.estimated_cost_usd == pytest.approx(float(Decimal(str(cost).strip())))
    assert type(snapshot.estimated_cost_usd) is float


# ---------------------------------------------------------------- memory


def remember_transcript(writer: TranscriptWriter, session_id: str, messages: list[Any]) -> None:
    """What the transcript writer keeps after writing a chat's messages (its private memory, as it is now)."""
    quick = getattr(transcripts_module, "_Quick", None)  # newer engine: prefix hashes computed lazily
    writer._remember(session_id, quick(messages) if quick else messages, len(messages), "0" * 32)  # type: ignore[arg-type]


def bookkeeping_bytes_per_chat(chats: int = 100_000) -> float:
    """Bytes the save path's memory keeps per chat once ``chats`` chats were each saved and run once.

    Everything the host owns (sessions, agents, message lists) is freed
    before measuring, so what remains is ours: the gate (ids and hashes),
    the agent-usage maps, the transcript writer's memory, the id cache.
    Half the chats are written by hermes-agent itself, half not.
    """
    gc.collect()
    tracemalloc.start()
    try:
        stats, log = Stats(), RateLimitedLog()
        agent = AgentUsage(stats, log)
        capture = Capture(stats, log, agent, webui_session_adapter)
        transcripts = TranscriptWriter(stats)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for n in range(chats):
            session = BareSession(f"{n:012x}")
            agent.observe(Agent(session.session_id, writes=n % 2 == 0))
            snapshot = capture.take(session)
            assert snapshot is not None
            remember_transcript(transcripts, session.session_id, session.messages)
            del snapshot, session
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return kept / chats


@pytest.mark.slow
def test_bookkeeping_stops_growing_at_its_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_module, "GATE_LIMIT", 2_000)
    monkeypatch.setattr(agent_usage_module, "LIMIT", 500)
    monkeypatch.setattr(transcripts_module, "_MEMORY_LIMIT", 500)
    monkeypatch.setattr(snapshot_module, "_CHECKED_IDS_LIMIT", 100)
    at_limit = bookkeeping_bytes_per_chat(2_000) * 2_000
    twice = bookkeeping_bytes_per_chat(8_000) * 8_000
    # Past every limit, four times the chats keep (about) the same memory.
    assert twice < at_limit * 1.3, (at_limit, twice)


def test_every_map_is_bounded(monkeypatch: pytest.MonkeyPatch, log: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(capture_module, "GATE_LIMIT", 50)
    monkeypatch.setattr(transcripts_module, "_MEMORY_LIMIT", 20)
    stats, rlog = Stats(), RateLimitedLog()
    agent = AgentUsage(stats, rlog, limit=30)
    capture = Capture(stats, rlog, agent, webui_session_adapter)
    transcripts = TranscriptWriter()
    for n in range(200):
        sid = f"{n:012x}"
        agent.observe(Agent(sid, writes=True))
        agent.observe(Agent(f"{n:011x}x", writes=False))  # increments never taken by a save
        capture.take(BareSession(sid))
        remember_transcript(transcripts, sid, [])
    assert len(capture.gate) == 50
    assert agent.sizes() == (30, 30)
    assert len(transcripts._memory) == 20
    # Increments forgotten before a save took them are counted and logged, not silent.
    assert stats.as_dict()["dropped"]["agent_usage"] == 170
    assert log_lines(log, "forgot the agent-reported usage of chat", "more than 30 chats")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(f"bookkeeping: {bookkeeping_bytes_per_chat(count):.0f} B per chat at {count:,} chats (goal <= 200 B)")
