"""diagnostics.py: the counters behind ``stats()``, the rate-limited log, and the guard's report of our own bugs.

These run inside the host's process, on its save path: they must count
exactly (a dashboard reads them), never flood the host's log, never raise,
never add a logging handler, and keep working in a child the host forks.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.forks import in_forked_child

from webui_insights import diagnostics
from webui_insights.diagnostics import (
    CHAT_OUTCOMES,
    DROP_REASONS,
    NOTE_KINDS,
    SKIP_REASONS,
    RateLimitedLog,
    Stats,
    describe_error,
    report_internal_error,
)


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """What reaches the ``webui_insights`` logger, from DEBUG up (``logged.records``)."""
    caplog.set_level(logging.DEBUG, logger="webui_insights")
    return caplog


def lines(logged: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in logged.records]


# ------------------------------------------------------------ describe_error


@pytest.mark.parametrize(
    ("exc", "described"),
    [
        pytest.param(ValueError("bad cost"), "ValueError: bad cost", id="class and message"),
        pytest.param(ValueError(), "ValueError", id="the class alone when there is no message"),
        pytest.param(
            sqlite3.OperationalError("database is locked"),
            "OperationalError: database is locked",
            id="sqlite's errors by their own class name",
        ),
        pytest.param(KeyError("title"), "KeyError: 'title'", id="a KeyError as Python prints it"),
    ],
)
def test_every_failure_is_described_by_its_class_and_message(exc: BaseException, described: str) -> None:
    """A failure line without the exception's class cannot be searched for or reported upstream."""
    assert describe_error(exc) == described


# ------------------------------------------------------------ RateLimitedLog


def test_a_repeated_failure_is_logged_once_per_interval(logged: pytest.LogCaptureFixture) -> None:
    """A state.db failing on every save must leave one line, not one per save."""
    log = RateLimitedLog(interval=3600.0)
    assert log.warning("db:busy", "state.db busy: %s", "first") is True
    assert log.warning("db:busy", "state.db busy: %s", "second") is False
    assert log.warning("db:busy", "state.db busy: %s", "third") is False
    assert lines(logged) == ["state.db busy: first"]
    assert logged.records[0].levelno == logging.WARNING


def test_after_the_interval_the_next_line_says_how_many_were_suppressed(logged: pytest.LogCaptureFixture) -> None:
    """Nothing goes unreported: what was held back is counted on the next line of that kind."""
    log = RateLimitedLog(interval=0.05)
    log.warning("db:busy", "busy")
    log.warning("db:busy", "busy")
    log.warning("db:busy", "busy")
    time.sleep(0.08)
    assert log.warning("db:busy", "busy") is True
    time.sleep(0.08)
    log.warning("db:busy", "busy")
    assert lines(logged) == ["busy", "busy (2 similar messages suppressed)", "busy"]


def test_each_kind_of_failure_has_its_own_interval(logged: pytest.LogCaptureFixture) -> None:
    """A flood of one kind must not hide the first line of another."""
    log = RateLimitedLog(interval=3600.0)
    log.warning("db:busy", "busy")
    log.warning("db:busy", "busy")
    log.warning("db:malformed", "malformed")
    assert lines(logged) == ["busy", "malformed"]


def test_a_line_keeps_its_level_and_exception(logged: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(interval=3600.0)
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        log.emit(logging.ERROR, "internal", "failed: %s", "boom", exc_info=exc)
    assert logged.records[0].levelno == logging.ERROR
    assert logged.records[0].exc_info is not None and logged.records[0].exc_info[1].args == ("boom",)


class SlowKey(str):
    """A log key slow to look up: it widens the window between "when was this last logged" and "now"."""

    def __hash__(self) -> int:
        time.sleep(0.001)
        return str.__hash__(self)


def test_many_threads_failing_at_once_leave_one_line(logged: pytest.LogCaptureFixture) -> None:
    """The writer, the sweep and every save can fail together: the rate limit must hold under threads."""
    log = RateLimitedLog(interval=3600.0)
    key = SlowKey("db:busy")
    barrier = threading.Barrier(8)
    emitted: list[bool] = []

    def fail() -> None:
        barrier.wait()
        for _ in range(5):
            emitted.append(log.warning(key, "busy"))

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert emitted.count(True) == 1 and len(emitted) == 40
    assert lines(logged) == ["busy"]


@pytest.mark.swallowed_errors_expected
def test_the_log_never_adds_a_handler() -> None:
    """The host decides where log lines go: a handler of ours would print into its console or files."""
    before = (list(diagnostics.logger.handlers), list(logging.getLogger().handlers), diagnostics.logger.propagate)
    log, stats = RateLimitedLog(), Stats()
    log.warning("k", "a line")
    report_internal_error(stats, log, "test", ValueError("x"))
    after = (list(diagnostics.logger.handlers), list(logging.getLogger().handlers), diagnostics.logger.propagate)
    assert after == before


# ------------------------------------------------------------------- Stats


_NAMES = st.sampled_from(["saves_seen", "rows_written", "chats.created", "skipped.blank", "x"])


@given(st.lists(st.tuples(_NAMES, st.integers(min_value=-3, max_value=5)), max_size=40))
def test_counters_add_up_every_increment_and_only_increments(calls: list[tuple[str, int]]) -> None:
    """A counter that moved back or skipped an increment would show a dashboard a wrong rate."""
    stats = Stats()
    expected: dict[str, int] = {}
    for name, n in calls:
        stats.incr(name, n)
        expected[name] = expected.get(name, 0) + max(n, 0)
    for name, total in expected.items():
        assert stats.get(name) == total
        assert stats.get(name) == total  # reading does not advance it


def test_an_unknown_counter_reads_zero() -> None:
    assert Stats().get("never.counted") == 0


class CountWithoutPickling(itertools.count):  # type: ignore[misc]
    """``itertools.count`` as Python 3.14 has it: its pickle support (deprecated since 3.12) is gone."""

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle 'count' object")


def test_counters_are_read_without_itertools_pickle_support(monkeypatch: pytest.MonkeyPatch) -> None:
    """hermes-webui runs upstream hermes-agent, which needs Python 3.14: stats() must work there."""
    monkeypatch.setattr(itertools, "count", CountWithoutPickling)
    stats = Stats()
    stats.incr("saves_seen", 3)
    stats.skip("blank")
    assert stats.get("saves_seen") == 3
    assert stats.get("saves_seen") == 3
    result = stats.as_dict()
    assert (result["saves_seen"], result["skipped"]["blank"]) == (3, 1)


def test_counters_are_exact_under_threads() -> None:
    """The save path increments from the host's request threads without a lock of its own."""
    stats = Stats()
    barrier = threading.Barrier(8)

    def count() -> None:
        barrier.wait()
        for _ in range(2000):
            stats.incr("saves_seen")
        stats.incr("rows_written", 10)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert (stats.get("saves_seen"), stats.get("rows_written")) == (16000, 80)


def test_stats_always_list_every_known_key() -> None:
    """A dashboard reads ``stats()["chats"]["refused"]`` before anything was refused."""
    result = Stats().as_dict()
    assert tuple(result["chats"]) == CHAT_OUTCOMES and set(result["chats"].values()) == {0}
    assert tuple(result["skipped"]) == SKIP_REASONS
    assert tuple(result["notes"]) == NOTE_KINDS
    assert tuple(result["dropped"]) == DROP_REASONS
    assert result["transcripts"] == {}
    for name in ("saves_seen", "rows_written", "transactions", "failures", "internal_errors", "sweep_passes"):
        assert result[name] == 0
    assert (result["last_error"], result["last_error_at"], result["last_success_at"]) == (None, None, None)
    assert result["max_lock_hold_ms"] == 0.0
    json.dumps(result)  # what the CLI and the host's endpoints print


def test_skips_drops_and_new_kinds_land_in_their_groups() -> None:
    """A reason added later (or an adapter's own) must show up, not vanish because it was not listed."""
    stats = Stats()
    stats.skip("blank")
    stats.skip("a_new_reason", 2)
    stats.drop("queue_full", 3)
    stats.incr("chats.created")
    stats.incr("transcripts.appended", 4)
    result = stats.as_dict()
    assert (result["skipped"]["blank"], result["skipped"]["a_new_reason"]) == (1, 2)
    assert list(result["skipped"])[-1] == "a_new_reason"  # the known reasons first
    assert (result["dropped"]["queue_full"], result["chats"]["created"]) == (3, 1)
    assert result["transcripts"] == {"appended": 4}


def test_a_failure_is_counted_and_kept_as_the_last_error() -> None:
    stats = Stats()
    before = time.time()
    stats.error("OperationalError: database is locked")
    stats.error("DatabaseError: file is not a database")
    result = stats.as_dict()
    assert result["failures"] == 2
    assert result["last_error"] == "DatabaseError: file is not a database"
    assert before <= result["last_error_at"] <= time.time()


@given(st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=1, max_size=20))
def test_the_longest_lock_hold_is_kept(holds: list[float]) -> None:
    """The one figure that says whether we ever held hermes' write lock too long: it must never go down."""
    stats = Stats()
    for hold in holds:
        stats.success(rows=1, transactions=1, lock_hold_s=hold)
    result = stats.as_dict()
    assert result["max_lock_hold_ms"] == round(max(holds) * 1000.0, 3)
    assert (result["rows_written"], result["transactions"]) == (len(holds), len(holds))
    assert result["last_success_at"] is not None


# ------------------------------------------------------- report_internal_error


@pytest.mark.swallowed_errors_expected
def test_an_internal_error_is_counted_logged_and_passed_to_listeners(
    logged: pytest.LogCaptureFixture, fail_on_swallowed_errors: list[tuple[str, BaseException]]
) -> None:
    """A bug our guard swallowed must still be visible: in stats(), in the host's log, and to the test suite."""
    stats, log = Stats(), RateLimitedLog(interval=3600.0)
    exc = ValueError("bad snapshot")
    report_internal_error(stats, log, "capture", exc)
    result = stats.as_dict()
    assert (result["internal_errors"], result["failures"]) == (1, 1)
    assert result["last_error"] == "internal error in capture: ValueError: bad snapshot"
    assert lines(logged) == [
        "webui-insights: internal error in capture: ValueError: bad snapshot (the host's save was not affected)"
    ]
    assert logged.records[0].levelno == logging.ERROR and logged.records[0].exc_info is not None
    assert fail_on_swallowed_errors == [("capture", exc)]


@pytest.mark.swallowed_errors_expected
def test_repeated_internal_errors_are_all_counted_but_logged_once(logged: pytest.LogCaptureFixture) -> None:
    """Every save may hit the same bug: count each, log one line per place and kind."""
    stats, log = Stats(), RateLimitedLog(interval=3600.0)
    for _ in range(3):
        report_internal_error(stats, log, "capture", ValueError("again"))
    report_internal_error(stats, log, "capture", KeyError("other kind"))
    report_internal_error(stats, log, "writer", ValueError("other place"))
    assert stats.get("internal_errors") == 5
    assert len(logged.records) == 3


def _failing_listener(where: str, exc: BaseException) -> None:
    raise RuntimeError("a broken listener")


@pytest.mark.swallowed_errors_expected
@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(
            lambda stats, log, mocker: diagnostics.add_internal_error_listener(_failing_listener),
            id="a listener raises",
        ),
        pytest.param(
            lambda stats, log, mocker: mocker.patch.object(log, "emit", side_effect=OSError("log file gone")),
            id="the log raises",
        ),
        pytest.param(
            lambda stats, log, mocker: mocker.patch.object(stats, "error", side_effect=MemoryError()),
            id="the counters raise",
        ),
    ],
)
def test_reporting_an_internal_error_never_raises(break_it: Callable[..., Any], mocker: Any) -> None:
    """The report runs inside the guard around the host's save: raising there would break the save after all."""
    stats, log = Stats(), RateLimitedLog()
    break_it(stats, log, mocker)
    try:
        report_internal_error(stats, log, "capture", ValueError("x"))
    finally:
        diagnostics.remove_internal_error_listener(_failing_listener)


@pytest.mark.swallowed_errors_expected
def test_a_removed_listener_hears_nothing_and_removing_twice_is_harmless() -> None:
    heard: list[str] = []

    def listener(where: str, exc: BaseException) -> None:
        heard.append(where)

    diagnostics.add_internal_error_listener(listener)
    report_internal_error(Stats(), RateLimitedLog(), "capture", ValueError("x"))
    diagnostics.remove_internal_error_listener(listener)
    diagnostics.remove_internal_error_listener(listener)
    report_internal_error(Stats(), RateLimitedLog(), "writer", ValueError("y"))
    assert heard == ["capture"]


# -------------------------------------------------------------------- fork


def in_child(body: Callable[[], Any], timeout: float = 5.0) -> Any:
    """``body()``'s JSON-able result in a forked child (killed and reported if it hangs)."""
    return in_forked_child(body, timeout)


class Stuck:
    """A value whose use blocks the thread using it until released: a thread caught inside our code at a fork."""

    def __init__(self) -> None:
        self.inside, self.release = threading.Event(), threading.Event()

    def block(self) -> None:
        self.inside.set()
        self.release.wait(30)


class StuckKey(str):
    """A log key: looking it up (under the log's lock) blocks."""

    stuck: Stuck

    def __hash__(self) -> int:
        self.stuck.block()
        return str.__hash__(self)


class StuckHold(float):
    """A lock hold: comparing it with the longest so far (under the counters' lock) blocks."""

    stuck: Stuck

    def __gt__(self, other: object) -> bool:
        self.stuck.block()
        return float(self) > float(other)  # type: ignore[arg-type]


needs_fork = pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="needs os.fork and its hooks")


@needs_fork
@pytest.mark.parametrize(
    "caught_inside",
    [
        pytest.param("log", id="a fork while a thread logs leaves the child a working log"),
        pytest.param("stats", id="a fork while a thread counts leaves the child working counters"),
    ],
)
def test_a_child_forked_mid_call_can_log_and_count(caught_inside: str) -> None:
    """A pre-fork server forks whenever it likes: the child's first save must not wait on a lock nobody holds."""
    stats, log = Stats(), RateLimitedLog(interval=0.0)
    stuck = Stuck()
    if caught_inside == "log":
        key = StuckKey("db:busy")
        key.stuck = stuck
        target: Callable[[], Any] = lambda: log.warning(key, "busy")  # noqa: E731
    else:
        hold = StuckHold(0.5)
        hold.stuck = stuck
        target = lambda: stats.success(1, 1, hold)  # noqa: E731
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert stuck.inside.wait(5)

    def child() -> list[Any]:
        stats.incr("saves_seen")
        stats.error("OperationalError: database is locked")
        return [log.warning("other", "a line from the child"), stats.as_dict()["failures"]]

    try:
        assert in_child(child) == [True, 1]
    finally:
        stuck.release.set()
        thread.join(5)
