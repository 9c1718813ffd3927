"""One state.db, opened the only ways this layer may open it.

Owns the guard in front of every access: a state.db is written only when it
exists (this layer never creates one) and hermes has initialised it (it has
a ``schema_version`` table — opening ``SessionDB`` on any other SQLite file
would apply hermes' whole schema to it). Writes go through
``SessionDB._execute_write``: ``BEGIN IMMEDIATE``, SessionDB's own lock
retry and checkpoint cadence. Reads for ``verify``, ``status`` and dry runs
use a plain read-only SQLite connection (no schema init, no write), which
also works on a read-only copy where SQLite cannot create the ``-shm`` file.

Never: open state.db, ``-wal`` or ``-shm`` with plain file I/O (closing such
a descriptor drops the SQLite locks other connections of this process
hold), create a file, checkpoint or VACUUM on its own.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from .hermes import Capabilities, HermesStateUnavailable, hermes_state
from .schema import messages_have_active

__all__ = [
    "StateDBMissing",
    "StateDBUninitialised",
    "StateStore",
    "Unwritable",
    "unwritable",
    "file_identity",
    "open_read_only",
    "is_busy",
    "check_initialised",
    "create_state_db",
    "writable",
    "in_chunks",
    "marks",
]

T = TypeVar("T")

# Values per ``IN (…)``: well under SQLite's bound-parameter limit (999 before 3.32).
IN_CHUNK = 500


class StateDBMissing(FileNotFoundError):
    """No state.db at the resolved path; this layer never creates one."""


class StateDBUninitialised(Exception):
    """The file is not a hermes state.db (no ``schema_version`` table): never touched."""


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path`` via stat(); never opens the file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def is_busy(exc: BaseException) -> bool:
    """Another writer holds the lock: worth a quick retry (anything else backs off longer)."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "locked" in text or "busy" in text
    return False


class Unwritable(StrEnum):
    """Why a state.db could not be written: one vocabulary for the writer, the commands and status.

    The values are the keys ``stats()`` counts them under. The first three
    mean there is nothing to write to (the work is given up, the chat's next
    save or the reconcile sweep sends it again); ``BUSY`` and ``ERROR`` are
    states of a database a later try may find gone (the work is kept).
    """

    NO_HERMES_STATE = "no_hermes_state"  # hermes-agent not installed, or its hermes_state does not import
    NO_STATE_DB = "no_state_db"  # no file: this layer never creates one
    UNINITIALISED = "uninitialised"  # not a hermes state.db: never touched
    BUSY = "busy"  # another writer holds the lock
    ERROR = "error"  # anything else: a malformed or unreadable file, an OSError, SessionDB() failing

    @property
    def retried(self) -> bool:
        """A later try may succeed, so the work is kept; otherwise there is nothing to write to."""
        return self in (Unwritable.BUSY, Unwritable.ERROR)


def unwritable(exc: BaseException) -> Unwritable:
    """The class of a failure to write a state.db (see ``Unwritable``)."""
    if isinstance(exc, HermesStateUnavailable):
        return Unwritable.NO_HERMES_STATE
    if isinstance(exc, StateDBMissing):
        return Unwritable.NO_STATE_DB
    if isinstance(exc, StateDBUninitialised):
        return Unwritable.UNINITIALISED
    return Unwritable.BUSY if is_busy(exc) else Unwritable.ERROR


def open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection; on a copy where ``-shm`` cannot be created, an immutable one.

    Raises StateDBMissing when there is no file, sqlite3.Error when it is not a database.
    """
    path = Path(path)
    if not path.is_file():
        raise StateDBMissing(f"no state.db at {path}")
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=5.0)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc).lower() or "busy" in str(exc).lower():
            raise
    # A WAL database in a directory we cannot write: SQLite cannot make the
    # -shm it needs for a normal read. immutable=1 reads the main file as is
    # (what a backup or a mounted copy holds).
    return sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, timeout=5.0)


def writable(path: Path) -> bool:
    """Whether a writer could open ``path``, judged without opening the database.

    The file and its directory (SQLite creates ``-wal``/``-shm`` there),
    and an existing ``-shm`` that is not a regular file (a copy on which
    SQLite cannot create one opens read-only at best).
    """
    if not (os.access(path, os.R_OK | os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
        return False
    shm = path.with_name(path.name + "-shm")
    return not os.path.lexists(shm) or (os.path.isfile(shm) and os.access(shm, os.R_OK | os.W_OK))


def marks(count: int) -> str:
    """The ``?`` placeholders of an ``IN (…)`` of ``count`` values."""
    return ",".join("?" * count)


def in_chunks(values: Sequence[T]) -> Iterator[tuple[Sequence[T], str]]:
    """``values`` in slices that fit one ``IN (…)``, each with its placeholders."""
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start : start + IN_CHUNK]
        yield chunk, marks(len(chunk))


def check_initialised(conn: sqlite3.Connection, path: Path) -> None:
    """Raise StateDBUninitialised unless hermes has initialised this database."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if found is None:
        raise StateDBUninitialised(f"{path} is not a hermes state.db (no schema_version table); left untouched")


class StateStore:
    """A long-lived ``SessionDB`` handle on an existing, hermes-initialised state.db.

    ``write_retries`` bounds SessionDB's own lock-retry loop for this handle
    only: the background writer wants to fail fast and back off itself (its
    sleep can be interrupted at shutdown), a CLI backfill can afford patience.
    ``section`` wraps opening, each transaction and closing (the host side
    passes ``forksafe.sqlite_section``: a fork waits for them to end).
    """

    def __init__(
        self,
        path: Path,
        *,
        write_retries: int | None = None,
        section: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        self._section = section
        with section():
            self._open(Path(path), write_retries)

    def _open(self, path: Path, write_retries: int | None) -> None:
        self.path = path
        identity = file_identity(self.path)
        if identity is None or not self.path.is_file():
            raise StateDBMissing(f"no state.db at {self.path}")
        probe = open_read_only(self.path)
        try:
            check_initialised(probe, self.path)
        finally:
            probe.close()
        module = hermes_state()
        self.identity = identity
        self.db: Any = module.SessionDB(db_path=self.path)
        if write_retries is not None and hasattr(type(self.db), "_WRITE_MAX_RETRIES"):
            self.db._WRITE_MAX_RETRIES = max(1, int(write_retries))
        self.capabilities = Capabilities.detect(self.db)
        self._active: bool | None = None
        conn = getattr(self.db, "_conn", None)
        if conn is not None and sys.platform.startswith("linux"):
            # This handle's commits skip the fsync (WAL + NORMAL): the database
            # stays consistent whatever happens, a power cut may lose its last
            # few transactions, which the reconcile sweep derives again from
            # the WebUI's files. A commit's fsync is most of a short
            # transaction's lock hold, and most of a backfill's wait. Only this
            # connection: hermes' own keep their setting. (hermes forces FULL
            # on macOS against a corruption there; so do we, by not asking.)
            conn.execute("PRAGMA synchronous=NORMAL")

    def is_same_file(self) -> bool:
        """False once state.db was deleted or replaced behind this handle."""
        return file_identity(self.path) == self.identity

    def messages_have_active(self, conn: sqlite3.Connection) -> bool:
        if self._active is None:
            self._active = messages_have_active(conn)
        return self._active

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` in one write transaction (re-run from the start if SessionDB retries)."""
        if not self.capabilities.execute_write:
            raise RuntimeError("this hermes-agent's SessionDB has no _execute_write; cannot write")
        with self._section():
            result: T = self.db._execute_write(fn)
        return result

    def close(self) -> None:
        db, self.db = self.db, None
        if db is not None:
            with self._section():
                db.close()


def create_state_db(path: Path) -> None:
    """Create an empty state.db the way a first ``hermes`` run does.

    Only the demo and tests call this; the mirror itself never creates one.
    """
    hermes_state().SessionDB(db_path=Path(path)).close()
