"""The reconcile sweep: turn any lost update into a late one.

The WebUI's session files hold cumulative totals, so a chat whose file is
ahead of its state.db row (the writer dropped an update at its queue cap, the
process was killed, state.db was locked past the exit budget) is repaired by
mirroring the file again. ``reconcile()`` is one pass; ``ReconcileSweep`` runs
it in a low-priority daemon thread, the first pass soon after start, then
every ``interval_s``.

Writes go through the sink with forward-only totals (never ``exact``), on a
handle of their own: racing the live writer can never lower a total it wrote.

Never: run on the host's save path or at import time, start a thread before
``start()``, block interpreter exit (daemon thread, bounded join), or write
while mirroring is switched off.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .diagnostics import RateLimitedLog, Stats, logger, report_internal_error
from .sink import HermesStateUnavailable, StateDBMissing
from .verify import group_by_state_db, is_ahead, read_rows
from .webui_files import iter_chunks, scan_sessions

__all__ = ["ReconcileResult", "ReconcileSweep", "reconcile", "DEFAULT_INTERVAL_S", "DEFAULT_FIRST_DELAY_S"]

DEFAULT_INTERVAL_S = 15 * 60.0
DEFAULT_FIRST_DELAY_S = 30.0
# The sweep shares the host's GIL: write in small chunks and let the host run between them.
_CHUNK = 200
_PAUSE_S = 0.01
# A background pass must not wait ~18 s on a busy state.db: the next pass retries.
_WRITE_RETRIES = 2


@dataclass(slots=True)
class ReconcileResult:
    """One pass: chats checked, found ahead of state.db, and re-mirrored."""

    checked: int = 0
    ahead: int = 0
    written: int = 0
    bad_files: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (state.db, reason)
    duration_s: float = 0.0


def _default_open(path: Path) -> Any:
    from .backfill import open_state_db

    return open_state_db(path, write_retries=_WRITE_RETRIES)


def reconcile(
    sessions_dir: Path | None = None,
    *,
    open_db: Callable[[Path], Any] = _default_open,
    stop: threading.Event | None = None,
    pause_s: float = 0.0,
) -> ReconcileResult:
    """Re-mirror every chat whose WebUI totals are ahead of its state.db row.

    Expected trouble (no state.db, a busy or unreadable one, no hermes-agent)
    is recorded in ``errors`` per state.db; the other state.dbs still run.
    """
    started = time.perf_counter()
    result = ReconcileResult()
    scan = scan_sessions(sessions_dir)
    result.bad_files = len(scan.bad)
    groups, refused = group_by_state_db(scan.snapshots)
    result.errors.extend(refused)
    for path, snaps in groups.items():
        if stop is not None and stop.is_set():
            break
        try:
            stored = read_rows(path, (s.session_id for s in snaps))
            result.checked += len(snaps)
            ahead = [s for s in snaps if is_ahead(s, stored.rows.get(s.session_id))]
            result.ahead += len(ahead)
            if not ahead:
                continue
            db = open_db(path)
            try:
                for part in iter_chunks(ahead, _CHUNK):
                    result.written += len(db.write(part).written)
                    if stop is not None and stop.wait(pause_s):
                        break
            finally:
                db.close()
        except (StateDBMissing, HermesStateUnavailable, sqlite3.Error, OSError) as exc:
            result.errors.append((str(path), f"{type(exc).__name__}: {exc}"))
    result.duration_s = time.perf_counter() - started
    return result


def _lower_thread_priority() -> None:
    """Linux applies setpriority to one thread when given its id; elsewhere skip."""
    if sys.platform.startswith("linux") and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass


class ReconcileSweep:
    """A daemon thread that runs ``reconcile()`` now and then.

    ``start()`` is cheap and idempotent (call it from ``install()``); the
    first pass runs ``first_delay_s`` later, then every ``interval_s``.
    ``interval_s <= 0`` turns the sweep off. ``enabled`` is asked before each
    pass, so switching mirroring off in the WebUI stops repairs too. After
    ``os.fork()`` a child starts its own thread on its next ``start()``.
    """

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        enabled: Callable[[], bool],
        first_delay_s: float = DEFAULT_FIRST_DELAY_S,
        sessions_dir: Path | None = None,
        stats: Stats | None = None,
        log: RateLimitedLog | None = None,
        run_pass: Callable[..., ReconcileResult] = reconcile,
    ) -> None:
        self.interval_s = float(interval_s)
        self.first_delay_s = max(0.0, float(first_delay_s))
        self._enabled = enabled
        self._sessions_dir = sessions_dir
        self._stats = stats or Stats()
        self._log = log or RateLimitedLog()
        self._run_pass = run_pass
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.passes = 0
        self.last_result: ReconcileResult | None = None

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and self._pid == os.getpid()

    def start(self) -> bool:
        """Start the thread unless off, already running or stopped; True when started now."""
        if self.interval_s <= 0:
            return False
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the parent's thread does not exist here.
                self._pid, self._thread, self._lock = os.getpid(), None, threading.Lock()
            if self._stop.is_set() or (self._thread is not None and self._thread.is_alive()):
                return False
            thread = threading.Thread(target=self._run, name="webui-insights-reconcile", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # interpreter shutting down: no sweep, nothing else breaks
                self._log.warning("reconcile:start", "webui-insights: reconcile sweep not started: %s", exc)
                return False
            self._thread = thread
            return True

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the thread to finish and wait at most ``timeout``; True when it ended."""
        self._stop.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread() or self._pid != os.getpid():
            return True
        thread.join(max(0.0, timeout))
        return not thread.is_alive()

    def run_once(self) -> ReconcileResult | None:
        """One pass now, in the caller's thread (None when mirroring is off)."""
        if not self._enabled():
            return None
        result = self._run_pass(self._sessions_dir, stop=self._stop, pause_s=_PAUSE_S)
        self.passes += 1
        self.last_result = result
        if result.written:
            self._stats.incr("reconciled", result.written)
            logger.info("webui-insights: reconcile re-mirrored %d chats that were behind", result.written)
        for where, reason in result.errors:
            self._log.warning("reconcile:" + where, "webui-insights: reconcile skipped %s: %s", where, reason)
        return result

    def _run(self) -> None:
        _lower_thread_priority()
        delay = self.first_delay_s
        while not self._stop.wait(delay):
            try:
                self.run_once()
            except Exception as exc:  # a bug of ours: count it, keep the host and the next pass alive
                report_internal_error(self._stats, self._log, "reconcile", exc)
            delay = self.interval_s
        logger.debug("webui-insights: reconcile sweep stopped")
