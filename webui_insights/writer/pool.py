"""The writer's state.db handles, and each database's health and back-off.

Owns one long-lived ``StateStore`` per state.db (opened on first use, reopened
when the file was replaced, closed when idle) and what the writer knows of
each database: failures in a row, the last error, when to try next. A
failure is classed once (``engine.store.Unwritable``) and paced by its class:

- busy (another writer holds the lock): retry soon, capped jittered back-off;
- an error (a malformed or unreadable file, an ``OSError``, ``SessionDB()``
  failing): close the handle, back off from ``error_backoff_s`` doubling to
  ``error_backoff_cap_s``; a fresh handle then picks up a fault repaired in place;
- nothing to write to (no hermes-agent, no state.db, one hermes never
  initialised): close the handle; the caller gives the work up.

Used by the writer thread only, so it takes no lock. Never: touch a handle a
forked child inherited (``after_fork`` sets them aside for good).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import forksafe
from ..diagnostics import RateLimitedLog, Stats, describe_error
from ..engine.store import StateStore, Unwritable, unwritable
from .config import WriterConfig

__all__ = ["Database", "DatabasePool"]

# Handles a forked child inherited: kept referenced forever so that garbage
# collection never closes (or checkpoints) a connection the parent still uses.
_inherited_handles: list[StateStore] = []


@dataclass(slots=True)
class Database:
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


def _open_store(path: Path) -> StateStore:
    # One retry inside SessionDB: a busy database is retried by the pool's pacing, off the lock.
    return StateStore(path, write_retries=1, section=forksafe.sqlite_section)


class DatabasePool:
    """The state.db handles of the writer thread, and when each database may be tried again."""

    def __init__(
        self,
        config: WriterConfig,
        stats: Stats,
        log: RateLimitedLog,
        open_store: Callable[[Path], StateStore] | None = None,
    ) -> None:
        self.config = config
        self._stats = stats
        self._log = log
        self.open_store = open_store or _open_store
        self.databases: dict[Path, Database] = {}

    def after_fork(self) -> None:
        """In a forked child: the parent's handles are set aside, never touched."""
        _inherited_handles.extend(db.store for db in self.databases.values() if db.store is not None)
        self.databases = {}

    def health(self) -> list[dict[str, Any]]:
        return [db.health() for db in list(self.databases.values())]

    def get(self, path: Path) -> Database:
        database = self.databases.get(path)
        if database is None:
            database = self.databases[path] = Database(path)
        return database

    def backing_off(self, path: Path, now: float) -> bool:
        database = self.databases.get(path)
        return database is not None and database.retry_at > now

    def next_wakeup(self, now: float, pending: bool) -> float:
        """Seconds until the thread has something to do: a retry falls due, or idle handles close."""
        if pending:
            # What is pending now waits for a database in back-off (anything
            # else was taken by the last cycle, or woke us on submit).
            waits = [db.retry_at for db in self.databases.values() if db.retry_at > now]
            return max(0.0, min(waits, default=now) - now)
        return self.config.idle_close_s if any(db.store for db in self.databases.values()) else 3600.0

    def store_for(self, database: Database) -> StateStore:
        store = database.store
        if store is not None and not store.is_same_file():
            # Deleted or replaced: this connection points at the old file.
            self.close(database)
            store = None
        if store is None:
            store = database.store = self.open_store(database.path)
        return store

    def succeeded(self, database: Database) -> None:
        database.last_used = time.monotonic()
        database.last_success_at = time.time()
        database.failures = database.busy_streak = database.error_streak = 0
        database.retry_at = 0.0
        database.next_try_at = None

    def unavailable(self, database: Database, reason: Unwritable, exc: BaseException, chats: int) -> None:
        """Nothing to write to: ``chats`` are skipped (counted, logged) and the handle closed."""
        self._stats.skip(reason.value, chats)
        self._log.warning(
            f"{reason.value}:{database.path}", "webui-insights: nothing mirrored for %d chat(s): %s", chats, exc
        )
        self.close(database)

    def failed(self, database: Database, exc: BaseException, chats: int) -> Unwritable:
        """A failure a later try may not meet: count it, schedule the next try by its class."""
        what = describe_error(exc)
        self._stats.error(f"{database.path}: {what}")
        self._stats.incr("retried")
        database.failures += 1
        database.last_error = what
        database.last_error_at = time.time()
        reason = unwritable(exc)
        if reason is Unwritable.BUSY:
            delay = self._busy(database, what, chats)
        else:
            delay = self._error(database, exc, what, chats)
        database.retry_at = time.monotonic() + delay
        database.next_try_at = time.time() + delay
        return reason

    def _busy(self, database: Database, what: str, chats: int) -> float:
        config = self.config
        database.busy_streak += 1
        delay = min(config.busy_retry_cap_s, config.busy_retry_s * 2 ** min(database.busy_streak - 1, 16))
        self._log.warning(
            f"busy:{database.path}",
            "webui-insights: %s is busy (%s); %d chat(s) kept pending, retrying",
            database.path,
            what,
            chats,
        )
        return delay * random.uniform(0.5, 1.0)

    def _error(self, database: Database, exc: BaseException, what: str, chats: int) -> float:
        # Whatever it is, a fresh handle later may work: back off, keep the work.
        config = self.config
        database.busy_streak = 0
        database.error_streak += 1
        delay = min(config.error_backoff_cap_s, config.error_backoff_s * 2 ** min(database.error_streak - 1, 16))
        self.close(database)
        self._log.emit(
            logging.ERROR,
            f"error:{database.path}:{type(exc).__name__}",
            "webui-insights: cannot write to %s (%s); %d chat(s) kept pending, next try in %.1f s",
            database.path,
            what,
            chats,
            delay,
        )
        return delay

    def close(self, database: Database) -> None:
        store, database.store = database.store, None
        if store is not None:
            try:
                store.close()
            except Exception as exc:
                what = describe_error(exc)
                self._log.warning(
                    f"close:{database.path}", "webui-insights: closing %s failed: %s", database.path, what
                )

    def close_idle(self) -> None:
        limit = time.monotonic() - self.config.idle_close_s
        for database in list(self.databases.values()):
            if database.store is not None and database.last_used < limit:
                self.close(database)

    def close_all(self) -> None:
        for database in list(self.databases.values()):
            self.close(database)
