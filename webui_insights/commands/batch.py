"""The commands' batches: the engine over a sessions folder, with the CLI's Ctrl-C accounting.

``backfill``, ``verify`` and ``status`` hand each profile's chats to the
engine through ``routing`` (``write``: applied, ``engine.batch``;
``check_all``: planned read-only). What this module adds is the commands'
own: the chunk that is a commit point and a progress tick, and a Ctrl-C
that lands between a commit and its accounting held until the commit is
counted, so "N chats written" is never short of the truth.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..engine.batch import WRITING_OUTCOMES, DatabaseOutcome
from ..engine.hermes import HermesStateUnavailable, hermes_state
from ..engine.store import StateStore, writable
from ..profiles import Homes
from ..routing import ProfileBatches, check_all, group_by_state_db, state_db_of, write_all
from ..snapshot import UsageSnapshot

if TYPE_CHECKING:
    from ..diagnostics import Stats

__all__ = [
    "DatabaseOutcome",
    "BatchWriter",
    "group_by_state_db",
    "write",
    "check_all",
    "writable",
    "nowhere",
    "state_db_of",
    "hold_interrupt",
    "CHUNK",
    "WRITING_OUTCOMES",
]

# One engine call per chunk: a commit point for resuming and a tick for the
# progress bar (the engine splits each into ~30 ms transactions).
CHUNK = 2000

Progress = Callable[[int], None]


def nowhere(databases: Sequence[DatabaseOutcome]) -> bool:
    """There were chats, and not one of their state.dbs exists: most likely the wrong HERMES_HOME.

    One profile without a state.db is only reported; all of them is a problem.
    """
    return bool(databases) and all(d.status == "missing" for d in databases)


class _Hold:
    """A Ctrl-C between a commit and its accounting, held until the accounting is done.

    SIGINT can land while SQLite commits (a C call of a few ms): Python then
    raises KeyboardInterrupt after the commit, so the transaction is in but
    not counted, and "N chats written" would be short of the truth. The
    CLI's SIGINT handler asks ``hold_interrupt()``: from the end of a
    transaction's work to the point where the engine has counted it, the
    interrupt is held and raised there instead. Only the CLI's handler
    consults this; anywhere else Ctrl-C raises as usual.
    """

    active = False
    pending = False


_hold = _Hold()


def hold_interrupt() -> bool:
    """For a SIGINT handler: True when the interrupt is held (raised at the next safe point)."""
    if _hold.active:
        _hold.pending = True
        return True
    return False


def _raise_held() -> None:
    _hold.active = False
    if _hold.pending:
        _hold.pending = False
        raise KeyboardInterrupt


class _HeldStore:
    """A StateStore whose transactions hold Ctrl-C from the end of their work until they are counted.

    ``engine.sync`` counts a transaction right after ``run`` returns, before
    the next ``run``: the hold ends at the next ``run`` or, after the last
    one, when the writer has added the report up (``_raise_held``).
    """

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        _raise_held()  # the transaction before this one has been counted

        def then_hold(conn: sqlite3.Connection) -> Any:
            _raise_held()  # SessionDB retrying after a failed commit: stop here instead (rolled back)
            result = fn(conn)
            _hold.active = True  # commit, and the engine counting it, are not cut apart
            return result

        try:
            return self._store.run(then_hold)
        except BaseException:
            _raise_held()  # rolled back: nothing to count; a held Ctrl-C wins over the error
            raise


class BatchWriter(ProfileBatches):
    """``routing.ProfileBatches`` for a command: Ctrl-C held while a commit is counted, progress per chunk.

    KeyboardInterrupt propagates after the chunks before it committed (a
    transaction is either in or not); ``close()`` then counts the rest as
    ``not_done``. ``progress(n)``: ``n`` more chats committed.
    """

    def __init__(
        self,
        homes: Homes,
        *,
        transcripts: bool = False,
        restore_deleted: bool = False,
        open_store: Callable[[Path], StateStore] = StateStore,
        progress: Progress | None = None,
        chunk: int = CHUNK,
        keep_outcomes: frozenset[str] = frozenset(),
        between_chunks: Callable[[], bool] | None = None,
        stats: Stats | None = None,
    ) -> None:
        def counted(committed: int) -> None:
            if progress is not None:
                progress(committed)
            _raise_held()  # everything committed is counted: a held Ctrl-C may stop us now

        super().__init__(
            homes,
            chunk=chunk,
            transcripts=transcripts,
            restore_deleted=restore_deleted,
            open_store=lambda path: cast(StateStore, _HeldStore(open_store(path))),
            keep_outcomes=keep_outcomes,
            between_chunks=between_chunks,
            counted=counted,
            stats=stats,
        )

    def get_ready(self) -> None:
        """Import hermes-agent's state module now, not when the first state.db is opened.

        A backfill calls this once the folder is listed: importing takes
        about as long as its readers take to parse the first part, which it
        would otherwise wait for first. Nothing is opened.
        """
        try:
            hermes_state()
        except HermesStateUnavailable:
            pass  # said where a state.db is opened


def write(
    homes: Homes, snapshots: Sequence[UsageSnapshot], **options: Any
) -> tuple[list[DatabaseOutcome], list[tuple[str, str]]]:
    """Apply the engine to every chat at once: ``BatchWriter(homes, **options)``, one ``add``, ``close``.

    Per state.db outcomes, and refused chats.
    """
    return write_all(BatchWriter(homes, **options), snapshots)
