"""The background reconcile sweep: any lost update becomes a late one.

The WebUI's files hold each chat's latest state, so a chat whose row fell
behind (an update dropped at the queue cap, a process killed, state.db
locked past the exit budget) is repaired by running its file through the
same rule as a live save (``reconcile_pass``, through ``routing`` into
``engine.batch``): the version check keeps a newer row, deletions in hermes
are respected, rows hermes-agent writes only get what it leaves out.

A low-priority daemon thread runs ``reconcile_pass`` soon after start, then
every ``interval_s``. Under a pre-fork server every worker
installs the mirror, but only one process sweeps a sessions folder: the one
holding an advisory lock (``flock``) on a small file named after that
folder, in the system's temp directory. The lock is held for the life of
the sweeping process and is released by the kernel when it ends, so
another worker takes over at its next interval. ``start()`` again after
``stop()`` (a re-install) starts a new thread.

Never: run on the host's save path or at import time, start a thread before
``start()``, block interpreter exit (daemon thread, bounded join), write
while mirroring is switched off, or import the command layer (this runs in
the WebUI's process).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import forksafe
from .diagnostics import RateLimitedLog, Stats, logger, report_internal_error
from .engine.batch import DatabaseOutcome
from .engine.store import StateStore
from .profiles import Homes
from .routing import ProfileBatches, write_all
from .settings import webui_sessions_dir
from .sources import scan_sessions

__all__ = [
    "ReconcileSweep",
    "SweepLeader",
    "ReconcileResult",
    "reconcile_pass",
    "DEFAULT_INTERVAL_S",
    "DEFAULT_FIRST_DELAY_S",
]

DEFAULT_INTERVAL_S = 15 * 60.0
DEFAULT_FIRST_DELAY_S = 30.0
_PAUSE_S = 0.01
# The sweep shares the host's GIL: small chunks, a pause between them.
_CHUNK = 200
# A background pass must not wait ~18 s on a busy state.db: the next pass retries.
_WRITE_RETRIES = 2

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: every process sweeps
    fcntl = None  # type: ignore[assignment]


@dataclass(slots=True)
class ReconcileResult:
    """One pass: chats seen, the chats the engine changed, and what could not be reached."""

    checked: int = 0
    repaired: int = 0
    bad_files: int = 0
    databases: list[DatabaseOutcome] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def errors(self) -> list[tuple[str, str]]:
        return [(d.state_db, d.problem or d.status) for d in self.databases if not d.reachable]


def reconcile_pass(
    homes: Homes,
    sessions_dir: Path | None = None,
    *,
    transcripts: bool = False,
    stop: threading.Event | None = None,
    pause_s: float = 0.0,
    open_store: Callable[[Path], StateStore] | None = None,
) -> ReconcileResult:
    """Run every session file's chat through the engine; expected trouble is recorded per state.db."""
    started = time.perf_counter()
    scan = scan_sessions(sessions_dir, keep_messages=transcripts)

    def between_chunks() -> bool:
        return not (stop is not None and stop.wait(pause_s))

    batches = ProfileBatches(
        homes,
        chunk=_CHUNK,
        transcripts=transcripts,
        open_store=open_store
        or (lambda path: StateStore(path, write_retries=_WRITE_RETRIES, section=forksafe.sqlite_section)),
        between_chunks=between_chunks,
    )
    databases, refused = write_all(batches, scan.snapshots)
    return ReconcileResult(
        checked=len(scan.snapshots),
        repaired=sum(d.written for d in databases),
        bad_files=len(scan.bad),
        databases=databases,
        refused=refused,
        duration_s=time.perf_counter() - started,
    )


class SweepLeader:
    """Who sweeps a sessions folder: the holder of an exclusive ``flock`` on its lock file."""

    def __init__(self, sessions_dir: Path) -> None:
        digest = hashlib.sha1(str(Path(sessions_dir).resolve()).encode()).hexdigest()[:16]
        self.path = Path(tempfile.gettempdir()) / f"webui-insights-sweep-{digest}.lock"
        self._fd: int | None = None
        self._pid = os.getpid()
        forksafe.register(self)

    def acquire(self) -> bool:
        """True when this process sweeps (now or already); never blocks."""
        if self._pid != os.getpid():
            self._forget_inherited()
        if self._fd is not None:
            return True
        if fcntl is None:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return True  # cannot coordinate: sweeping twice is slower, never wrong
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _forget_inherited(self) -> None:
        """In a forked child: the parent's descriptor shares the parent's lock.

        Closing our copy leaves the parent's lock alone (a flock is released
        only when every descriptor of it is closed), and keeping it would
        hold the lock past the parent's release or exit. Never LOCK_UN here.
        """
        fd, self._fd, self._pid = self._fd, None, os.getpid()
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _after_fork_in_child(self) -> None:
        self._forget_inherited()

    def release(self) -> None:
        if self._pid != os.getpid():
            self._forget_inherited()
            return
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the lock


def _lower_thread_priority() -> None:
    """Linux applies setpriority to one thread when given its id; elsewhere skip."""
    if sys.platform.startswith("linux") and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass


class ReconcileSweep:
    """A daemon thread that runs a reconcile pass now and then (see the module docstring).

    ``enabled`` is asked before each pass, so switching mirroring off in
    the WebUI stops repairs too. ``interval_s <= 0`` turns the sweep off.
    """

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        enabled: Callable[[], bool],
        homes: Homes,
        first_delay_s: float | None = None,
        sessions_dir: Path | None = None,
        stats: Stats | None = None,
        log: RateLimitedLog | None = None,
        transcripts: Callable[[], bool] = lambda: False,
        run_pass: Callable[..., ReconcileResult] | None = None,
    ) -> None:
        self.interval_s = float(interval_s)
        # Module defaults are read now, not at import: a test (or a host) may set them before install().
        self.first_delay_s = max(0.0, float(DEFAULT_FIRST_DELAY_S if first_delay_s is None else first_delay_s))
        self._enabled = enabled
        self._homes = homes
        self._sessions_dir = sessions_dir
        self._stats = stats or Stats()
        self._log = log or RateLimitedLog()
        self._transcripts = transcripts
        self._run_pass = run_pass or reconcile_pass
        self._leader: SweepLeader | None = None
        self.passes = 0
        self.last_result: ReconcileResult | None = None
        self._init_runtime_state()
        forksafe.register(self)

    def _init_runtime_state(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here; the child's writer starts its own sweep.
        self._init_runtime_state()

    def sessions_dir(self) -> Path:
        return self._sessions_dir or webui_sessions_dir()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and self._pid == os.getpid()

    def describe(self) -> dict[str, Any]:
        leader = self._leader
        return {
            "interval_s": self.interval_s,
            "running": self.running,
            "leader": leader is not None and leader._fd is not None,
            "passes": self.passes,
        }

    def start(self) -> bool:
        """Start the thread unless off or already running; True when started now."""
        if self.interval_s <= 0:
            return False
        with self._lock:
            if self._pid != os.getpid():
                self._init_runtime_state()
            if self._thread is not None and self._thread.is_alive():
                return False
            self._stop.clear()
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
        if self._leader is not None:
            self._leader.release()
        if thread is None or thread is threading.current_thread() or self._pid != os.getpid():
            return True
        thread.join(max(0.0, timeout))
        return not thread.is_alive()

    def run_once(self) -> ReconcileResult | None:
        """One pass now, in the caller's thread (None when off, or another process sweeps)."""
        if not self._enabled():
            return None
        directory = self.sessions_dir()
        if self._leader is None:
            self._leader = SweepLeader(directory)
        if not self._leader.acquire():
            logger.debug("webui-insights: another process sweeps %s", directory)
            return None
        result = self._run_pass(
            self._homes, directory, transcripts=self._transcripts(), stop=self._stop, pause_s=_PAUSE_S
        )
        self.passes += 1
        self._stats.incr("sweep_passes")
        self.last_result = result
        if result.repaired:
            self._stats.incr("reconciled", result.repaired)
            logger.info("webui-insights: reconcile brought %d chats up to date", result.repaired)
        for where, reason in result.errors:
            self._log.warning("reconcile:" + where, "webui-insights: reconcile skipped %s: %s", where, reason)
        return result

    def _run(self) -> None:
        _lower_thread_priority()
        delay = self.first_delay_s
        while not self._stop.wait(delay):
            try:
                self.run_once()
            except FileNotFoundError:
                logger.debug("webui-insights: no WebUI sessions folder yet")
            except Exception as exc:  # a bug of ours: count it, keep the host and the next pass alive
                report_internal_error(self._stats, self._log, "reconcile", exc)
            delay = self.interval_s
        logger.debug("webui-insights: reconcile sweep stopped")
