"""The background writer: the only thread that waits on state.db.

Owns the pending work and its life: ``submit()`` (called from the host's save)
puts a snapshot in a dict keyed by chat and returns; a daemon thread, started
on the first submit, gathers a burst for ``debounce_s``, groups it by state.db
and writes each group in short transactions through one long-lived handle per
database. A failed write keeps its snapshots pending and retries with capped,
jittered backoff; a newer snapshot of the same chat replaces an older one at
any point, and an older one is never written after a newer one.

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

from .diagnostics import RateLimitedLog, Stats, report_internal_error
from .profiles import InvalidProfile, state_db_path
from .sink import (
    FatalDBError,
    HermesStateUnavailable,
    StateDB,
    StateDBMissing,
    file_identity,
    hermes_state,
    is_retryable,
)
from .snapshot import UsageSnapshot, next_sequence

__all__ = ["WriterConfig", "Writer", "THREAD_NAME"]

THREAD_NAME = "webui-insights-writer"
Key = tuple[str | None, str]

# Handles a forked child inherited: kept referenced forever so that garbage
# collection never closes (or checkpoints) a connection the parent still uses.
_inherited_handles: list[Any] = []


@dataclass(slots=True)
class WriterConfig:
    debounce_s: float = 0.25
    max_pending: int = 1000
    idle_close_s: float = 30.0
    retry_base_s: float = 0.05
    retry_cap_s: float = 0.5
    fatal_recheck_s: float = 5.0
    exit_budget_s: float = 3.0
    transaction_budget_s: float = 0.03
    message_count: bool = True


@dataclass(slots=True)
class _Handle:
    db: StateDB
    last_used: float


class Writer:
    """Coalescing, retrying, fork-aware background writer.

    ``resolve`` maps a profile to its state.db path (raises InvalidProfile);
    ``on_dropped`` is told about every chat whose pending snapshot was given
    up, so the save gate lets the next save of that chat through again.
    """

    def __init__(
        self,
        stats: Stats,
        log: RateLimitedLog,
        config: WriterConfig | None = None,
        *,
        resolve: Callable[[str | None], Path] = state_db_path,
        on_dropped: Callable[[Key], None] | None = None,
        open_db: Callable[[Path], StateDB] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.config = config or WriterConfig()
        self._stats = stats
        self._log = log
        self._resolve = resolve
        self._on_dropped = on_dropped or (lambda key: None)
        self._open_db = open_db or (lambda path: StateDB(path, write_retries=1))
        self._on_start = on_start
        self._init_runtime_state()
        self._closed = False
        self._queued = stats.counter("snapshots_queued")
        self._coalesced = stats.counter("coalesced")
        self._fork_hook_registered = False
        self._exit_hook_registered = False

    def _init_runtime_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._stop = threading.Event()
        self._pending: dict[Key, UsageSnapshot] = {}
        self._inflight = 0
        self._written_seq: dict[Key, int] = {}
        self._handles: dict[Path, _Handle] = {}
        self._retry_at: dict[Path, float] = {}
        self._failures: dict[Path, int] = {}
        self._fatal: dict[Path, tuple[int, int] | None] = {}
        self._thread: threading.Thread | None = None
        # True while our thread runs its loop: the save path checks this flag
        # instead of Thread.is_alive(), which takes a lock.
        self._running = False

    # ------------------------------------------------------------ save path

    def submit(self, snapshot: UsageSnapshot) -> bool:
        """Queue ``snapshot``; never blocks on I/O. False when it was not kept."""
        if self._pid != os.getpid():
            self._after_fork_in_child()
        if self._closed:
            self._stats.drop("exit_timeout")
            return False
        if not snapshot.seq:
            snapshot = snapshot._replace(seq=next_sequence())
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
            self._drop(key, "thread_start_failed")
            return False
        if not self._wake.is_set():
            self._wake.set()
        return key in pending

    def _drop_oldest(self) -> None:
        dropped: list[Key] = []
        with self._lock:
            while len(self._pending) > self.config.max_pending:
                oldest = next(iter(self._pending))
                del self._pending[oldest]
                dropped.append(oldest)
        for key in dropped:
            self._drop(key, "queue_full")

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending) + self._inflight

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
                    self._changed.wait(min(remaining, 0.1))
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
                "`webui-insights verify --fix` or the next reconcile sweep repairs them",
                left,
            )
        if thread is None or not thread.is_alive():
            self._close_all_handles()
        return flushed and not left

    def retire(self) -> None:
        """Take no more work; the thread ends once what is pending has landed."""
        self._stop.set()
        self._hurry.set()
        self._wake.set()

    def restart(self) -> None:
        """Accept work again after shutdown() (used by install() after uninstall)."""
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
                self._log.warning("thread", "webui-insights: cannot start the writer thread: %s", exc)
                return False
            self._thread = thread
        self._register_hooks()
        return True

    def _register_hooks(self) -> None:
        ref = weakref.ref(self)
        if not self._exit_hook_registered:
            self._exit_hook_registered = True
            atexit.register(_shutdown_at_exit, ref)
        if not self._fork_hook_registered and hasattr(os, "register_at_fork"):
            self._fork_hook_registered = True
            os.register_at_fork(after_in_child=lambda: _reinit_in_child(ref))

    def _after_fork_in_child(self) -> None:
        """Fresh lock, queue and thread; the parent's handles are never touched."""
        _inherited_handles.extend(h.db for h in self._handles.values())
        self._init_runtime_state()
        self._closed = False

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
                if not self._hurry.is_set():
                    # Gather the rest of a streaming turn's saves.
                    self._hurry.wait(self.config.debounce_s)
                self._cycle()
            except Exception as exc:
                report_internal_error(self._stats, self._log, "writer loop", exc)
                self._stop.wait(0.1)
        self._close_all_handles()

    def _next_wakeup(self) -> float:
        now = time.monotonic()
        self._retry_at = {path: t for path, t in self._retry_at.items() if t > now}
        with self._lock:
            pending = bool(self._pending)
        if pending:
            # What is pending now waits for a database in backoff (anything
            # else was taken by the last cycle, or woke us on submit).
            return min(self._retry_at.values(), default=now) - now
        return self.config.idle_close_s if self._handles else 3600.0

    def _cycle(self) -> None:
        with self._lock:
            batch = list(self._pending.values())
            self._pending.clear()
            self._inflight += len(batch)
        try:
            now = time.monotonic()
            groups: dict[Path, list[UsageSnapshot]] = {}
            waiting: list[UsageSnapshot] = []
            for snap in batch:
                path = self._path_for(snap)
                if path is None:
                    continue
                if self._retry_at.get(path, 0.0) > now:
                    waiting.append(snap)
                else:
                    groups.setdefault(path, []).append(snap)
            self._requeue(waiting)
            for path, snaps in groups.items():
                self._write_group(path, snaps)
        finally:
            with self._changed:
                self._inflight -= len(batch)
                if not self._pending and not self._inflight:
                    self._hurry.clear()
                self._changed.notify_all()
        self._close_idle_handles()

    def _path_for(self, snap: UsageSnapshot) -> Path | None:
        """The chat's state.db; a refused profile is dropped, counted, logged."""
        try:
            return self._resolve(snap.profile)
        except InvalidProfile as exc:
            self._stats.skip("invalid_profile")
            self._log.warning("profile", "webui-insights: not mirroring a chat: %s", exc)
            return None

    def _write_group(self, path: Path, snaps: list[UsageSnapshot]) -> None:
        fresh = []
        for snap in snaps:
            if snap.seq <= self._written_seq.get(snap.key, 0):
                self._stats.skip("stale")
            else:
                fresh.append(snap)
        if not fresh:
            return
        try:
            handle = self._handle_for(path)
            result = handle.db.write(
                fresh,
                budget_s=self.config.transaction_budget_s,
                message_count=self.config.message_count,
            )
        except (HermesStateUnavailable, StateDBMissing) as exc:
            reason = "no_hermes_state" if isinstance(exc, HermesStateUnavailable) else "no_state_db"
            self._stats.skip(reason, len(fresh))
            self._log.warning(
                reason + str(path), "webui-insights: nothing mirrored for %d chat(s): %s", len(fresh), exc
            )
            for snap in fresh:
                self._on_dropped(snap.key)
            return
        except Exception as exc:
            self._failed(path, fresh, exc)
            return
        handle.last_used = time.monotonic()
        self._failures.pop(path, None)
        self._retry_at.pop(path, None)
        for snap in result.written:
            if snap.seq > self._written_seq.get(snap.key, 0):
                self._written_seq[snap.key] = snap.seq
        for snap in result.resync:
            self._stats.incr("transcript_resyncs")
            self._on_dropped(snap.key)  # the next save sends the whole transcript
        for snap, why in result.title_rejected:
            self._stats.skip("bad_value")
            self._log.warning("title", "webui-insights: chat %s only partly mirrored: %s", snap.session_id, why)
        self._stats.success(len(result.written), result.max_lock_hold_s)
        if result.transactions > 1:
            self._stats.incr("transactions", result.transactions - 1)

    def _handle_for(self, path: Path) -> _Handle:
        handle = self._handles.get(path)
        if handle is not None and not handle.db.is_same_file():
            # Deleted or replaced: this connection points at the old file.
            self._close_handle(path)
            handle = None
        if path in self._fatal:
            if file_identity(path) == self._fatal[path]:
                raise FatalDBError(f"{path} is still unusable")
            del self._fatal[path]
        if handle is None:
            if not path.is_file():
                raise StateDBMissing(f"no state.db at {path}")
            handle = _Handle(self._open_db(path), time.monotonic())
            self._handles[path] = handle
        return handle

    def _failed(self, path: Path, snaps: list[UsageSnapshot], exc: BaseException) -> None:
        retryable = is_retryable(exc)
        self._stats.error(f"{type(exc).__name__}: {exc}")
        count = self._failures.get(path, 0) + 1
        self._failures[path] = count
        if retryable:
            delay = min(self.config.retry_cap_s, self.config.retry_base_s * 2 ** min(count - 1, 16))
            delay *= random.uniform(0.5, 1.0)
            self._stats.incr("retried")
            self._log.warning(
                "retry:" + str(path),
                "webui-insights: %s busy or failing (%s); %d chat(s) kept pending, retrying",
                path,
                exc,
                len(snaps),
            )
        else:
            delay = self.config.fatal_recheck_s
            self._fatal[path] = file_identity(path)
            self._close_handle(path)
            self._log.emit(
                logging.ERROR,
                "fatal:" + str(path),
                "webui-insights: stopped writing to %s (%s); %d chat(s) held back until the file is replaced",
                path,
                exc,
                len(snaps),
            )
        self._retry_at[path] = time.monotonic() + delay
        self._requeue(snaps)

    def _requeue(self, snaps: list[UsageSnapshot]) -> None:
        """Put failed snapshots back, merged with any newer one of the same chat."""
        with self._lock:
            for snap in snaps:
                newer = self._pending.get(snap.key)
                self._pending[snap.key] = snap if newer is None else combine(snap, newer)
        self._drop_oldest()

    def _drop(self, key: Key, reason: str) -> None:
        self._stats.drop(reason)
        self._log.warning(
            "drop:" + reason,
            "webui-insights: dropped a pending update (%s); "
            "the reconcile sweep or `webui-insights verify --fix` repairs it",
            reason,
        )
        try:
            self._on_dropped(key)
        except Exception as exc:
            report_internal_error(self._stats, self._log, "on_dropped", exc)

    # -------------------------------------------------------------- handles

    def _close_handle(self, path: Path) -> None:
        handle = self._handles.pop(path, None)
        if handle is not None:
            try:
                handle.db.close()
            except Exception as exc:
                self._log.warning("close:" + str(path), "webui-insights: closing %s failed: %s", path, exc)

    def _close_idle_handles(self) -> None:
        limit = time.monotonic() - self.config.idle_close_s
        for path in [p for p, h in self._handles.items() if h.last_used < limit]:
            self._close_handle(path)

    def _close_all_handles(self) -> None:
        for path in list(self._handles):
            self._close_handle(path)


def combine(a: UsageSnapshot, b: UsageSnapshot) -> UsageSnapshot:
    """One snapshot standing for both: the newer usage, both transcript deltas in order."""
    older, newer = (a, b) if a.seq <= b.seq else (b, a)
    if older.transcript is None:
        return newer
    if newer.transcript is None:
        return newer._replace(transcript=older.transcript)
    return newer._replace(transcript=older.transcript.then(newer.transcript))


def _shutdown_at_exit(ref: weakref.ReferenceType[Writer]) -> None:
    writer = ref()
    if writer is not None:
        try:
            writer.shutdown()
        except Exception:
            pass


def _reinit_in_child(ref: weakref.ReferenceType[Writer]) -> None:
    writer = ref()
    if writer is not None:
        writer._after_fork_in_child()
