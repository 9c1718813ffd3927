"""Counters behind ``stats()``, rate-limited logging, and the guard around our own work.

Owns every way the mirror reports on itself. It must never raise into the
caller and never add logging handlers: the host decides where log lines go.
Every log line about a failure names the exception's class and message;
repeats of one kind of failure are rate-limited per kind, with a count of
what was suppressed, so a state.db that fails on every save leaves a
readable log and nothing goes unreported.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from . import forksafe

__all__ = ["Stats", "RateLimitedLog", "logger", "report_internal_error", "describe_error"]

logger = logging.getLogger("webui_insights")

# Keys stats() always lists, so a dashboard can rely on them being present.
CHAT_OUTCOMES = (
    "created",
    "updated",
    "unchanged",
    "restored",
    "stale",
    "foreign",
    "deleted",
    "awaiting_hermes",
    "no_turn",
    "refused",
)
SKIP_REASONS = (
    "disabled",
    "unchanged",
    "blank",
    "invalid_profile",
    "invalid_session_id",
    "bad_value",
    "bad_cost",
    "adapter_error",
    "no_hermes_state",
    "no_state_db",
    "uninitialised",
)
NOTE_KINDS = (
    "version_missing",
    "version_invalid",
    "version_future",
    "future_created_at",
    "future_last_active_at",
    "title_refused",
    "version_recorded_future",
    "inherited_usage",
    "record_damaged",
    "record_newer_release",
    "row_value_invalid",
)
DROP_REASONS = ("queue_full", "thread_start_failed", "exit_timeout", "agent_usage")


def describe_error(exc: BaseException) -> str:
    """``Class: message`` — what every failure line carries."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RateLimitedLog:
    """Log each distinct message key at most once per ``interval`` seconds.

    A failing state.db can fail on every save; one line per interval and
    kind, with the number of suppressed repeats, keeps the host's log
    readable.
    """

    def __init__(self, log: logging.Logger = logger, interval: float = 60.0) -> None:
        self._log = log
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def emit(self, level: int, key: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] += 1
                return False
            if len(self._last) > 1000:  # keys embed paths and classes: keep the map bounded
                self._last.clear()
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg = msg + " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._log.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args: Any) -> bool:
        return self.emit(logging.WARNING, key, msg, *args)


class Stats:
    """Thread-safe counters; ``as_dict()`` is what ``webui_insights.stats()`` returns.

    Each counter is an ``itertools.count``: ``next()`` on it is atomic under
    the GIL and costs tens of nanoseconds, which matters on the save path.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, itertools.count[int]] = {}
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_success_at: float | None = None
        self.max_lock_hold_s: float = 0.0
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def counter(self, name: str) -> itertools.count[int]:
        """The counter itself: ``next(stats.counter("x"))`` is the cheapest increment."""
        counter = self._counters.get(name)
        if counter is None:
            with self._lock:
                counter = self._counters.setdefault(name, itertools.count())
        return counter

    def incr(self, name: str, n: int = 1) -> None:
        counter = self._counters.get(name) or self.counter(name)
        if n == 1:
            next(counter)
        elif n > 1:
            for _ in range(n):
                next(counter)

    def skip(self, reason: str, n: int = 1) -> None:
        self.incr("skipped." + reason, n)

    def drop(self, reason: str, n: int = 1) -> None:
        self.incr("dropped." + reason, n)

    def error(self, description: str) -> None:
        self.incr("failures")
        with self._lock:
            self.last_error = description
            self.last_error_at = time.time()

    def success(self, rows: int, transactions: int, lock_hold_s: float) -> None:
        self.incr("rows_written", rows)
        self.incr("transactions", transactions)
        with self._lock:
            self.last_success_at = time.time()
            if lock_hold_s > self.max_lock_hold_s:
                self.max_lock_hold_s = lock_hold_s

    def get(self, name: str) -> int:
        counter = self._counters.get(name)
        if counter is None:
            return 0
        # repr(count) is "count(next_value)": read without advancing. (count.__reduce__,
        # the other way, is deprecated since Python 3.12 and gone in 3.14.)
        text = repr(counter)
        return int(text[text.index("(") + 1 : -1])

    def group(self, prefix: str, known: tuple[str, ...] = ()) -> dict[str, int]:
        """Counters named ``prefix + name``, the ``known`` names always present."""
        names = list(known) + [n[len(prefix) :] for n in list(self._counters) if n.startswith(prefix)]
        return {name: self.get(prefix + name) for name in dict.fromkeys(names)}

    def as_dict(self) -> dict[str, Any]:
        names = (
            "saves_seen",
            "snapshots_queued",
            "coalesced",
            "rows_written",
            "transactions",
            "retried",
            "failures",
            "internal_errors",
            "reconciled",
            "host_bridge_suppressed",
            "switch_errors",
            "sweep_passes",
        )
        result: dict[str, Any] = {name: self.get(name) for name in names}
        result["chats"] = self.group("chats.", CHAT_OUTCOMES)
        result["skipped"] = self.group("skipped.", SKIP_REASONS)
        result["notes"] = self.group("notes.", NOTE_KINDS)
        result["dropped"] = self.group("dropped.", DROP_REASONS)
        result["transcripts"] = self.group("transcripts.")
        with self._lock:
            result.update(
                last_error=self.last_error,
                last_error_at=self.last_error_at,
                last_success_at=self.last_success_at,
                max_lock_hold_ms=round(self.max_lock_hold_s * 1000.0, 3),
            )
        return result


# Test suites register a listener here so an exception that a guard swallowed
# still fails the test that caused it ("never crash" must not hide bugs).
_internal_error_listeners: list[Callable[[str, BaseException], None]] = []


def add_internal_error_listener(fn: Callable[[str, BaseException], None]) -> None:
    _internal_error_listeners.append(fn)


def remove_internal_error_listener(fn: Callable[[str, BaseException], None]) -> None:
    try:
        _internal_error_listeners.remove(fn)
    except ValueError:
        pass


def report_internal_error(stats: Stats, log: RateLimitedLog, where: str, exc: BaseException) -> None:
    """Count and log a bug of ours that a guard caught; never raises."""
    try:
        stats.incr("internal_errors")
        what = describe_error(exc)
        stats.error(f"internal error in {where}: {what}")
        log.emit(
            logging.ERROR,
            f"internal:{where}:{type(exc).__name__}",
            "webui-insights: internal error in %s: %s (the host's save was not affected)",
            where,
            what,
            exc_info=exc,
        )
        for listener in list(_internal_error_listeners):
            listener(where, exc)
    except Exception:  # pragma: no cover - last line of defence
        pass
