"""Counters behind ``stats()``, rate-limited logging, and the internal-error guard.

Owns every way the mirror reports on itself. It must never raise into the
caller and never add logging handlers: the host decides where log lines go.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["Stats", "RateLimitedLog", "logger"]

logger = logging.getLogger("webui_insights")

# Names of the "skipped" reasons; stats() always lists them so a dashboard
# can rely on the keys being present.
SKIP_REASONS = (
    "unchanged",
    "disabled",
    "blank",
    "no_hermes_state",
    "no_state_db",
    "invalid_profile",
    "invalid_session_id",
    "bad_value",
    "stale",
)
DROP_REASONS = ("queue_full", "thread_start_failed", "exit_timeout", "fatal_db")


class RateLimitedLog:
    """Log each distinct message key at most once per ``interval`` seconds.

    A failing state.db can fail on every save; one line per interval, with the
    number of suppressed repeats, keeps the host's log readable.
    """

    def __init__(self, log: logging.Logger = logger, interval: float = 60.0) -> None:
        self._log = log
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def emit(self, level: int, key: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] += 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg = msg + " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._log.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args: Any) -> bool:
        return self.emit(logging.WARNING, key, msg, *args)

    def reset(self) -> None:
        with self._lock:
            self._last.clear()
            self._suppressed.clear()


class Stats:
    """Thread-safe counters; ``as_dict()`` is what ``webui_insights.stats()`` returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._skipped: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_success_at: float | None = None
        self.max_lock_hold_s: float = 0.0

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def skip(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._skipped[reason] += n

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._dropped[reason] += n

    def error(self, description: str) -> None:
        with self._lock:
            self._counts["failures"] += 1
            self.last_error = description
            self.last_error_at = time.time()

    def success(self, rows: int, lock_hold_s: float) -> None:
        with self._lock:
            self._counts["rows_written"] += rows
            self._counts["transactions"] += 1
            self.last_success_at = time.time()
            if lock_hold_s > self.max_lock_hold_s:
                self.max_lock_hold_s = lock_hold_s

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def as_dict(self, pending: int = 0) -> dict[str, Any]:
        with self._lock:
            counts = self._counts
            return {
                "saves_seen": counts["saves_seen"],
                "snapshots_queued": counts["snapshots_queued"],
                "coalesced": counts["coalesced"],
                "rows_written": counts["rows_written"],
                "transactions": counts["transactions"],
                "retried": counts["retried"],
                "failures": counts["failures"],
                "internal_errors": counts["internal_errors"],
                "skipped": {r: self._skipped[r] for r in (*SKIP_REASONS, *self._skipped)},
                "dropped": {r: self._dropped[r] for r in (*DROP_REASONS, *self._dropped)},
                "pending": pending,
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
                "last_success_at": self.last_success_at,
                "max_lock_hold_ms": round(self.max_lock_hold_s * 1000.0, 3),
            }

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._skipped.clear()
            self._dropped.clear()
            self.last_error = self.last_error_at = self.last_success_at = None
            self.max_lock_hold_s = 0.0


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
        stats.error(f"internal error in {where}: {type(exc).__name__}: {exc}")
        log.emit(
            logging.ERROR,
            "internal:" + where,
            "webui-insights: internal error in %s (the host's save was not affected)",
            where,
            exc_info=exc,
        )
        for listener in list(_internal_error_listeners):
            listener(where, exc)
    except Exception:  # pragma: no cover - last line of defence
        pass
