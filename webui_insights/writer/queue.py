"""The writer's queue and thread: the only thread that waits on state.db.

Shaped like OpenTelemetry's batch processor: ``submit()`` (called from the
host's save) puts a snapshot in a dict keyed by chat, bounded by
``max_pending``, and sets an ``Event``; a daemon thread, started on the first
submit, gathers a burst for ``debounce_s``, swaps the dict out under the lock
and, outside it, hands the batch to the ``Exporter`` (the call into the
engine). What a batch could not write comes back merged with anything newer.
``flush(timeout)`` and an idempotent ``shutdown(timeout)`` are bounded by
deadlines. One writer serves the whole process, whatever ``install()`` is
called with later (``reconfigure``), so all writes of a chat in a process pass
through one queue: a newer state of a chat replaces an older one at any point,
and the engine's version check refuses an older one anywhere else.

``locate`` (a profile's state.db) and ``transcripts()`` (mirror messages
too?) are the exporter's. ``on_dropped`` is told about every chat whose
pending snapshot was given up, so the capture's gate lets the chat's next
save through and its ledger is kept: a notice back to whoever submitted,
never a start of other work.

Never: block ``submit()`` on anything but a short in-memory lock, start a
thread at import, start any other layer's work, touch a parent's SessionDB
handle in a forked child, or let interpreter exit wait longer than its budget.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import forksafe
from ..diagnostics import RateLimitedLog, Stats, describe_error, report_internal_error
from ..engine.hermes import HermesStateUnavailable, hermes_state
from ..engine.store import StateStore
from ..snapshot import UsageSnapshot
from .buffer import Buffer
from .config import WriterConfig
from .export import Exporter
from .pool import DatabasePool

if TYPE_CHECKING:
    from ..engine.transcripts import TranscriptWriter

__all__ = ["Writer", "THREAD_NAME"]

THREAD_NAME = "webui-insights-writer"


class Writer:
    """Coalescing, fork-aware background writer: the queue and its thread (see the module docstring)."""

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
        write_transcript: TranscriptWriter | None = None,
    ) -> None:
        self.config = config or WriterConfig()
        self._stats = stats
        self._log = log
        self.on_dropped = on_dropped or (lambda snapshot: None)
        self.pool = DatabasePool(self.config, stats, log, open_store)
        self._exporter = Exporter(
            stats, log, self.pool, locate=locate, transcripts=transcripts, write_transcript=write_transcript
        )
        self._queued = stats.counter("snapshots_queued")
        self._coalesced = stats.counter("coalesced")
        self._exit_hook_registered = False
        self._closed = False
        self._init_runtime_state()
        forksafe.register(self)

    def _init_runtime_state(self) -> None:
        self.pid = os.getpid()
        self._buffer = Buffer()
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # True while our thread runs its loop: the save path checks this flag
        # instead of Thread.is_alive(), which takes a lock.
        self.running = False

    def _after_fork_in_child(self) -> None:
        """Fresh locks, queue and thread; the parent's handles and pending work stay the parent's."""
        self.pool.after_fork()
        self._init_runtime_state()
        self._closed = False

    def reconfigure(self, config: WriterConfig) -> None:
        """New timings for the same queue (pending work keeps its place and its order).

        A debounce already under way under the old timings is cut short.
        """
        self.config = self.pool.config = config
        if self.pending_count():
            self._hurry.set()
        self._wake.set()

    def submit(self, snapshot: UsageSnapshot) -> bool:
        """Queue ``snapshot``; never blocks on I/O. False when it was not kept."""
        if self.pid != os.getpid():  # a fork the hooks did not see (some servers skip them)
            self._after_fork_in_child()
        if self._closed:
            self._stats.drop("exit_timeout")
            return False
        snapshot, coalesced, overflow = self._buffer.put(snapshot, self.config.max_pending)
        next(self._queued)
        if coalesced:
            next(self._coalesced)
        if overflow:
            self._drop_oldest()
        if not self.running and not self._ensure_thread():
            self._buffer.withdraw(snapshot)
            self._drop(snapshot, "thread_start_failed")
            return False
        if not self._wake.is_set():
            self._wake.set()
        return True

    def _drop_oldest(self) -> None:
        for snapshot in self._buffer.trim(self.config.max_pending):
            self._drop(snapshot, "queue_full")

    def pending_count(self) -> int:
        return self._buffer.count()

    def health(self) -> list[dict[str, Any]]:
        """Per state.db: open or not, failures in a row, last error and when, next try."""
        return self.pool.health()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is pending or ``timeout`` passed; never raises."""
        try:
            deadline = time.monotonic() + max(0.0, timeout)
            if self.pid != os.getpid():
                self._after_fork_in_child()
            if not self._buffer.count():
                return True
            if not self._ensure_thread():
                return False
            self._hurry.set()
            self._wake.set()
            return self._buffer.wait_empty(deadline, self._thread_alive)
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
            self.pool.close_all()
        return flushed and not left

    def restart(self) -> None:
        """Accept work again after shutdown() (install() after uninstall(), tests)."""
        if self._closed and (self._thread is None or not self._thread.is_alive()):
            self._closed = False
            self._stop.clear()
            self._hurry.clear()

    def _thread_alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _ensure_thread(self) -> bool:
        if self._thread_alive():
            return True
        with self._buffer.lock:  # two first saves at once start one thread
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

    def _run(self) -> None:
        self.running = True
        try:
            # Import hermes-agent now, while the interpreter is far from
            # exit: during shutdown its import fails (it registers atexit work).
            hermes_state()
        except HermesStateUnavailable:
            pass
        try:
            self._loop()
        finally:
            self.running = False
            self.pool.close_all()

    def _loop(self) -> None:
        while not (self._stop.is_set() and not self.pending_count()):
            try:
                self._wake.wait(self.pool.next_wakeup(time.monotonic(), self._buffer.waiting()))
                self._wake.clear()
                if not self._hurry.is_set() and not self._stop.is_set():
                    # Gather the rest of a streaming turn's saves.
                    self._hurry.wait(self.config.debounce_s)
                self._cycle()
            except Exception as exc:
                report_internal_error(self._stats, self._log, "writer loop", exc)
                self._stop.wait(0.1)

    def _cycle(self) -> None:
        batch = self._buffer.take()
        try:
            groups, waiting = self._exporter.route(batch, ignore_back_off=self._stop.is_set())
            self._requeue(waiting)
            for path, snapshots in groups.items():
                exported = self._exporter.write(path, snapshots)
                self._requeue(exported.retry)
                for snapshot in exported.given_up:
                    self._forget(snapshot)
        finally:
            if self._buffer.finished(batch):
                self._hurry.clear()
        self.pool.close_idle()

    def _requeue(self, snapshots: list[UsageSnapshot]) -> None:
        if snapshots:
            self._buffer.put_back(snapshots)
            self._drop_oldest()

    def _drop(self, snapshot: UsageSnapshot, reason: str) -> None:
        self._stats.drop(reason)
        self._log.warning(
            "drop:" + reason,
            "webui-insights: dropped a pending update (%s); its next save or the reconcile sweep repairs it",
            reason,
        )
        self._forget(snapshot)

    def _forget(self, snapshot: UsageSnapshot) -> None:
        try:
            self.on_dropped(snapshot)
        except Exception as exc:
            report_internal_error(self._stats, self._log, "on_dropped", exc)


def _shutdown_at_exit(ref: weakref.ReferenceType[Writer]) -> None:
    writer = ref()
    if writer is not None and writer.pid == os.getpid():
        try:
            writer.shutdown()
        except Exception:
            pass
