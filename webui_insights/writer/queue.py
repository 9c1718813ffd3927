"""The background writer: the only thread that waits on state.db.

Owns the pending work and its life: ``submit()`` (called from the host's
save) puts a snapshot in a dict keyed by chat and returns; a daemon thread,
started on the first submit, gathers a burst for ``debounce_s``, groups it
by state.db and hands each group to the engine (``engine.sync``), through
one long-lived handle per database. One writer serves the whole process,
whatever ``install()`` is called with later (``reconfigure``), so all writes
of a chat in a process pass through one queue: a newer state of a chat
replaces an older one at any point, and the engine's version check refuses
an older one anywhere else.

Failures have a class and a recovery each, and keep their work pending:

- busy (another writer holds the lock): retry soon, capped jittered backoff;
- anything else (a malformed or unreadable file, an ``OSError``, a
  ``RuntimeError`` from ``SessionDB()``): close the handle, back off from
  ``error_backoff_s`` doubling to ``error_backoff_cap_s``, then try again
  with a fresh handle — a fault repaired in place recovers within one step;
- no state.db, one hermes never initialised, no hermes-agent: nothing to
  write to; the chat is skipped (counted) and re-sent by its next save or
  the reconcile sweep.

Never: block ``submit()`` on anything but a short in-memory lock, start a
thread at import, touch a parent's SessionDB handle in a forked child, or let
interpreter exit wait longer than its budget.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import forksafe
from .diagnostics import RateLimitedLog, Stats, describe_error, report_internal_error
from .engine.chats import desired_from
from .engine.hermes import HermesStateUnavailable, hermes_state
from .engine.states import Desired
from .engine.store import StateDBMissing, StateDBUninitialised, StateStore, is_busy
from .engine.sync import SyncReport, sync
from .profiles import InvalidProfile
from .snapshot import UsageSnapshot

__all__ = ["WriterConfig", "Writer", "THREAD_NAME", "combine"]

THREAD_NAME = "webui-insights-writer"
Key = tuple[str | None, str]

# Handles a forked child inherited: kept referenced forever so that garbage
# collection never closes (or checkpoints) a connection the parent still uses.
_inherited_handles: list[Any] = []

# Failures that are bugs (ours, or a hermes-agent whose internals changed),
# not a state of the database: reported as internal errors besides the backoff.
_BUGS = (TypeError, AttributeError, NameError, KeyError, IndexError, AssertionError, ZeroDivisionError)


@dataclass(frozen=True, slots=True)
class WriterConfig:
    """Timing of the background writer (all in seconds except ``max_pending``)."""

    debounce_s: float = 0.25
    max_pending: int = 1000
    idle_close_s: float = 30.0
    busy_retry_s: float = 0.05
    busy_retry_cap_s: float = 0.5
    error_backoff_s: float = 1.0
    error_backoff_cap_s: float = 60.0
    exit_budget_s: float = 3.0
    # Work per write transaction before it commits. What a transaction holds beyond it (the
    # step under way, the COMMIT, hermes' full-text index merging inside it) stays under
    # the 50 ms other writers may wait: measured p99 52 ms at 30 ms on 2,000 transcripts.
    transaction_budget_s: float = 0.02


@dataclass(slots=True)
class _Database:
    """One state.db as the writer knows it: its handle and its health."""

    path: Path
    store: StateStore | None = None
    last_used: float = 0.0
    failures: int = 0  # in a row, of any class
    busy_streak: int = 0  # in a row, busy (paces the busy retry)
    error_streak: int = 0  # in a row, anything else (paces the back-off)
    retry_at: float = 0.0  # monotonic
    last_error: str | None = None
    last_error_at: float | None = None
    next_try_at: float | None = None  # wall clock, for status
    last_success_at: float | None = None

    def health(self) -> dict[str, Any]:
        return {
            "state_db": str(self.path),
            "open": self.store is not None,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "next_try_at": self.next_try_at,
            "last_success_at": self.last_success_at,
        }


def combine(older: UsageSnapshot, newer: UsageSnapshot) -> UsageSnapshot:
    """One snapshot standing for both: the newer state, both ledger increments, either agent flag."""
    if (older.updated_at or 0.0, older.observed) > (newer.updated_at or 0.0, newer.observed):
        older, newer = newer, older
    ledger = older.ledger
    if ledger is not None:
        ledger = ledger.plus(newer.ledger)
    else:
        ledger = newer.ledger
    if ledger is newer.ledger and not older.agent_writes:
        return newer
    return newer._replace(ledger=ledger, agent_writes=newer.agent_writes or older.agent_writes)

# Plans the writer keeps from a sync to name their chats in the log: records it cannot use.
_LEFT_ALONE = frozenset({"refused"})


class Writer:
    """Coalescing, retrying, fork-aware background writer.

    ``locate`` maps a profile to its state.db path (raises InvalidProfile);
    ``transcripts()`` says whether messages are mirrored too; ``on_dropped``
    is told about every chat whose pending snapshot was given up (its save
    gate lets the next save through, and its ledger is kept).
    """

    def __init__(
        self,
        stats: Stats,
        log: RateLimitedLog,
        config: WriterConfig | None = None,
        *,
        locate: Callable[[str | None], Path],
        transcripts: Callable[[], bool] = lambda: False,
        on_dropped: Callable[[UsageSnapshot], None] | None = None,
        open_store: Callable[[Path], StateStore] | None = None,
        on_start: Callable[[], None] | None = None,
        write_transcript: Any = None,
    ) -> None:
        self.config = config or WriterConfig()
        self._stats = stats
        self._log = log
        self._locate = locate
        self._transcripts = transcripts
        self._on_dropped = on_dropped or (lambda snapshot: None)
        self._open_store = open_store or (
            lambda path: StateStore(path, write_retries=1, section=forksafe.sqlite_section)
        )
        self._on_start = on_start
        self._write_transcript = write_transcript
        self._queued = stats.counter("snapshots_queued")
        self._coalesced = stats.counter("coalesced")
        self._exit_hook_registered = False
        self._closed = False
        self._init_runtime_state()
        forksafe.register(self)

    def _init_runtime_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._stop = threading.Event()
        self._pending: dict[Key, UsageSnapshot] = {}
        self._inflight = 0
        self._databases: dict[Path, _Database] = {}
        self._thread: threading.Thread | None = None
        # True while our thread runs its loop: the save path checks this flag
        # instead of Thread.is_alive(), which takes a lock.
        self._running = False

    def _after_fork_in_child(self) -> None:
        """Fresh locks, queue and thread; the parent's handles are set aside, never touched.

        What the parent had pending is the parent's to write.
        """
        _inherited_handles.extend(db.store for db in self._databases.values() if db.store is not None)
        self._init_runtime_state()
        self._closed = False

    def reconfigure(self, config: WriterConfig) -> None:
        """New timings for the same queue (pending work keeps its place and its order).

        A debounce already under way under the old timings is cut short.
        """
        self.config = config
        if self.pending_count():
            self._hurry.set()
        self._wake.set()

    # ------------------------------------------------------------ save path

    def submit(self, snapshot: UsageSnapshot) -> bool:
        """Queue ``snapshot``; never blocks on I/O. False when it was not kept."""
        if self._pid != os.getpid():  # a fork the hooks did not see (some servers skip them)
            self._after_fork_in_child()
        if self._closed:
            self._stats.drop("exit_timeout")
            return False
        key = (snapshot.profile, snapshot.session_id)
        pending = self._pending
        with self._lock:
            old = pending.pop(key, None)
            if old is not None:
                snapshot = combine(old, snapshot)
            pending[key] = snapshot
            overflow = len(pending) > self.config.max_pending
        next(self._queued)
        if old is not None:
            next(self._coalesced)
        if overflow:
            self._drop_oldest()
        if not self._running and not self._ensure_thread():
            with self._lock:
                if pending.get(key) is snapshot:
                    del pending[key]
            self._drop(snapshot, "thread_start_failed")
            return False
        if not self._wake.is_set():
            self._wake.set()
        return True

    def _drop_oldest(self) -> None:
        dropped: list[UsageSnapshot] = []
        with self._lock:
            while len(self._pending) > self.config.max_pending:
                oldest = next(iter(self._pending))
                dropped.append(self._pending.pop(oldest))
        for snapshot in dropped:
            self._drop(snapshot, "queue_full")

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending) + self._inflight

    def health(self) -> list[dict[str, Any]]:
        """Per state.db: open or not, failures in a row, last error and when, next try."""
        return [db.health() for db in list(self._databases.values())]

    # ------------------------------------------------------------ lifecycle

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is pending or ``timeout`` passed; never raises."""
        try:
            deadline = time.monotonic() + max(0.0, timeout)
            if self._pid != os.getpid():
                self._after_fork_in_child()
            with self._lock:
                if not self._pending and not self._inflight:
                    return True
            if not self._ensure_thread():
                return False
            self._hurry.set()
            self._wake.set()
            with self._changed:
                while self._pending or self._inflight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                        return False
                    self._changed.wait(min(remaining, 0.05))
            return True
        except Exception as exc:
            report_internal_error(self._stats, self._log, "flush", exc)
            return False

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` (default: the exit budget), stop the thread; idempotent."""
        budget = self.config.exit_budget_s if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, budget)
        flushed = self.flush(budget)
        self._closed = True
        self._stop.set()
        self._hurry.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        left = self.pending_count()
        if left:
            self._stats.drop("exit_timeout", left)
            self._log.warning(
                "exit",
                "webui-insights: %d chat(s) not mirrored before exit; "
                "the next reconcile sweep or `webui-insights backfill` repairs them",
                left,
            )
        if thread is None or not thread.is_alive():
            self._close_all_handles()
        return flushed and not left

    def restart(self) -> None:
        """Accept work again after shutdown() (install() after uninstall(), tests)."""
        if self._closed and (self._thread is None or not self._thread.is_alive()):
            self._closed = False
            self._stop.clear()
            self._hurry.clear()

    def _ensure_thread(self) -> bool:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return True
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return True
            thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # interpreter shutting down, or no threads left
                self._log.warning("thread", "webui-insights: cannot start the writer thread: %s", describe_error(exc))
                return False
            self._thread = thread
        if not self._exit_hook_registered:
            self._exit_hook_registered = True
            atexit.register(_shutdown_at_exit, weakref.ref(self))
        return True

    # ---------------------------------------------------------- the thread

    def _run(self) -> None:
        self._running = True
        try:
            self._loop()
        finally:
            self._running = False

    def _loop(self) -> None:
        try:
            # Import hermes-agent now, while the interpreter is far from
            # exit: during shutdown its import fails (it registers atexit work).
            hermes_state()
        except HermesStateUnavailable:
            pass
        if self._on_start is not None:
            try:
                self._on_start()
            except Exception as exc:
                report_internal_error(self._stats, self._log, "writer start hook", exc)
        while not (self._stop.is_set() and not self.pending_count()):
            try:
                self._wake.wait(self._next_wakeup())
                self._wake.clear()
                if not self._hurry.is_set() and not self._stop.is_set():
                    # Gather the rest of a streaming turn's saves.
                    self._hurry.wait(self.config.debounce_s)
                self._cycle()
            except Exception as exc:
                report_internal_error(self._stats, self._log, "writer loop", exc)
                self._stop.wait(0.1)
        self._close_all_handles()

    def _next_wakeup(self) -> float:
        now = time.monotonic()
        with self._lock:
            pending = bool(self._pending)
        if pending:
            # What is pending now waits for a database in backoff (anything
            # else was taken by the last cycle, or woke us on submit).
            waits = [db.retry_at for db in self._databases.values() if db.retry_at > now]
            return max(0.0, min(waits, default=now) - now)
        return self.config.idle_close_s if any(db.store for db in self._databases.values()) else 3600.0

    def _cycle(self) -> None:
        with self._lock:
            batch = list(self._pending.values())
            self._pending.clear()
            self._inflight += len(batch)
        try:
            now = time.monotonic()
            groups: dict[Path, list[UsageSnapshot]] = {}
            waiting: list[UsageSnapshot] = []
            for snapshot in batch:
                path = self._path_for(snapshot)
                if path is None:
                    continue
                database = self._databases.get(path)
                if database is not None and database.retry_at > now and not self._stop.is_set():
                    waiting.append(snapshot)
                else:
                    groups.setdefault(path, []).append(snapshot)
            self._requeue(waiting)
            for path, snapshots in groups.items():
                self._write_group(path, snapshots)
        finally:
            with self._changed:
                self._inflight -= len(batch)
                if not self._pending and not self._inflight:
                    self._hurry.clear()
                self._changed.notify_all()
        self._close_idle_handles()

    def _path_for(self, snapshot: UsageSnapshot) -> Path | None:
        """The chat's state.db; a refused profile is skipped, counted, logged."""
        try:
            return self._locate(snapshot.profile)
        except InvalidProfile as exc:
            self._stats.skip("invalid_profile")
            self._log.warning("profile", "webui-insights: not mirroring a chat: %s", exc)
            return None

    def _desired(self, snapshots: list[UsageSnapshot]) -> tuple[list[Desired], dict[str, UsageSnapshot]]:
        """Convert on this thread (tool calls, transcripts): the save path only took references."""
        wall = time.time()
        transcripts = self._transcripts()
        chats: list[Desired] = []
        by_id: dict[str, UsageSnapshot] = {}
        for snapshot in snapshots:
            try:
                desired, notes = desired_from(snapshot, now=wall, transcripts=transcripts)
            except Exception as exc:  # a message list the host changed under us, an odd value
                self._stats.skip("bad_value")
                self._log.warning(
                    "convert:" + type(exc).__name__,
                    "webui-insights: chat %s not mirrored: cannot read it: %s",
                    snapshot.session_id,
                    describe_error(exc),
                )
                continue
            for note in notes[len(snapshot.notes) :]:  # the capture counted the snapshot's own
                self._stats.incr("notes." + note)
            chats.append(desired)
            by_id[snapshot.session_id] = snapshot
        return chats, by_id

    def _write_group(self, path: Path, snapshots: list[UsageSnapshot]) -> None:
        chats, by_id = self._desired(snapshots)
        if not chats:
            return
        database = self._databases.setdefault(path, _Database(path))
        report = SyncReport()
        try:
            store = self._store_for(database)
            sync(
                store,
                chats,
                budget_s=self.config.transaction_budget_s,
                write_transcript=self._write_transcript,
                report=report,
                keep_plans=_LEFT_ALONE,
            )
        except (HermesStateUnavailable, StateDBMissing, StateDBUninitialised) as exc:
            self._count(report)
            reason = {
                HermesStateUnavailable: "no_hermes_state",
                StateDBMissing: "no_state_db",
                StateDBUninitialised: "uninitialised",
            }[type(exc)]
            committed = set(report.committed)
            left = [by_id[c.session_id] for c in chats if c.session_id not in committed]
            self._stats.skip(reason, len(left))
            self._log.warning(f"{reason}:{path}", "webui-insights: nothing mirrored for %d chat(s): %s", len(left), exc)
            self._close_handle(database)
            for snapshot in left:
                self._on_dropped(snapshot)
            return
        except Exception as exc:
            self._count(report)
            committed = set(report.committed)
            self._failed(database, [by_id[c.session_id] for c in chats if c.session_id not in committed], exc)
            if isinstance(exc, _BUGS):
                report_internal_error(self._stats, self._log, "writer", exc)
            return
        self._count(report)
        database.last_used = time.monotonic()
        database.last_success_at = time.time()
        database.failures = database.busy_streak = database.error_streak = 0
        database.retry_at = 0.0
        database.next_try_at = None

    def _count(self, report: SyncReport) -> None:
        for outcome, n in report.outcomes.items():
            self._stats.incr("chats." + outcome, n)
        for note, n in report.notes.items():
            self._stats.incr("notes." + note, n)
        for session_id, why in report.title_problems:
            self._log.warning("title:" + why, "webui-insights: chat %s: %s", session_id, why)
        for plan in report.plans:  # only those left alone (``_LEFT_ALONE``)
            why = ", ".join(plan.notes)
            self._log.warning(
                "record:" + why, "webui-insights: chat %s left alone: its record in state.db cannot be used (%s)",
                plan.session_id, why,
            )
        if report.transactions:
            self._stats.success(report.rows_written, report.transactions, report.max_lock_hold_s)

    def _store_for(self, database: _Database) -> StateStore:
        store = database.store
        if store is not None and not store.is_same_file():
            # Deleted or replaced: this connection points at the old file.
            self._close_handle(database)
            store = None
        if store is None:
            store = self._open_store(database.path)
            database.store = store
        return store

    def _failed(self, database: _Database, snapshots: list[UsageSnapshot], exc: BaseException) -> None:
        what = describe_error(exc)
        self._stats.error(f"{database.path}: {what}")
        database.failures += 1
        database.last_error = what
        database.last_error_at = time.time()
        config = self.config
        if is_busy(exc):
            database.busy_streak += 1
            delay = min(config.busy_retry_cap_s, config.busy_retry_s * 2 ** min(database.busy_streak - 1, 16))
            delay *= random.uniform(0.5, 1.0)
            self._stats.incr("retried")
            self._log.warning(
                f"busy:{database.path}",
                "webui-insights: %s is busy (%s); %d chat(s) kept pending, retrying",
                database.path,
                what,
                len(snapshots),
            )
        else:
            # Whatever it is (a malformed file, an I/O error, SessionDB() failing),
            # a fresh handle later may work: back off, keep the work.
            database.busy_streak = 0
            database.error_streak += 1
            delay = min(config.error_backoff_cap_s, config.error_backoff_s * 2 ** min(database.error_streak - 1, 16))
            self._stats.incr("retried")
            self._close_handle(database)
            self._log.emit(
                logging.ERROR,
                f"error:{database.path}:{type(exc).__name__}",
                "webui-insights: cannot write to %s (%s); %d chat(s) kept pending, next try in %.1f s",
                database.path,
                what,
                len(snapshots),
                delay,
            )
        database.retry_at = time.monotonic() + delay
        database.next_try_at = time.time() + delay
        self._requeue(snapshots)

    def _requeue(self, snapshots: list[UsageSnapshot]) -> None:
        """Put snapshots back, merged with any newer one of the same chat."""
        if not snapshots:
            return
        with self._lock:
            for snapshot in snapshots:
                key = (snapshot.profile, snapshot.session_id)
                newer = self._pending.get(key)
                self._pending[key] = snapshot if newer is None else combine(snapshot, newer)
        self._drop_oldest()

    def _drop(self, snapshot: UsageSnapshot, reason: str) -> None:
        self._stats.drop(reason)
        self._log.warning(
            "drop:" + reason,
            "webui-insights: dropped a pending update (%s); its next save or the reconcile sweep repairs it",
            reason,
        )
        try:
            self._on_dropped(snapshot)
        except Exception as exc:
            report_internal_error(self._stats, self._log, "on_dropped", exc)

    # -------------------------------------------------------------- handles

    def _close_handle(self, database: _Database) -> None:
        store, database.store = database.store, None
        if store is not None:
            try:
                store.close()
            except Exception as exc:
                self._log.warning(
                    f"close:{database.path}",
                    "webui-insights: closing %s failed: %s",
                    database.path,
                    describe_error(exc),
                )

    def _close_idle_handles(self) -> None:
        limit = time.monotonic() - self.config.idle_close_s
        for database in list(self._databases.values()):
            if database.store is not None and database.last_used < limit:
                self._close_handle(database)

    def _close_all_handles(self) -> None:
        for database in list(self._databases.values()):
            self._close_handle(database)


def _shutdown_at_exit(ref: weakref.ReferenceType[Writer]) -> None:
    writer = ref()
    if writer is not None and writer._pid == os.getpid():
        try:
            writer.shutdown()
        except Exception:
            pass
