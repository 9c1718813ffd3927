"""A batch of chats into one state.db: applied plans, and every chat counted once.

What ``backfill``, ``verify --fix`` and the reconcile sweep share: a
``StateDbBatch`` opens one state.db, converts the frontend's snapshots
(``chats.desired_from``) and hands them to ``sync`` a chunk at a time — the
same entry the live writer calls — and adds the reports up in a
``DatabaseOutcome``. A state.db that cannot be opened for writing (a
read-only copy, a directory where SQLite cannot create its ``-shm``) is
planned read-only instead: fine when nothing there needs writing
(``read_only``), otherwise a problem naming how many chats could not be
written. ``check_state_db`` makes the same plans read-only for reports and
dry runs. Per state.db the outcomes add up to its chats (``not_done``: chats
not got to — the status says why).

Never: create a state.db, resolve a profile or read a session file (the caller
routes chats to their state.db), or print.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..snapshot import UsageSnapshot
from .budget import BATCH_BUDGET_S, TRANSCRIPT_BUDGET_S
from .chats import desired_from
from .hermes import Capabilities, HermesStateUnavailable
from .plan import ChatPlan
from .states import Desired
from .store import StateDBMissing, StateDBUninitialised, StateStore, check_initialised, open_read_only, writable
from .sync import SyncReport, check, sync
from .transcripts import TranscriptWriter

if TYPE_CHECKING:
    from ..diagnostics import Stats

__all__ = [
    "WRITING_OUTCOMES",
    "DatabaseOutcome",
    "StateDbBatch",
    "check_state_db",
    "desired_chats",
    "unreachable",
]

# The outcomes where the engine changes the row (for verify: drift).
WRITING_OUTCOMES = frozenset({"created", "updated", "restored"})


@dataclass(slots=True)
class DatabaseOutcome:
    """What happened to the chats of one state.db."""

    state_db: str
    profiles: list[str]
    chats: int = 0
    # "ok", or why (some) chats were not done: "missing", "uninitialised",
    # "no_hermes_state", "read_only" (chats needed writing), "error"
    status: str = "ok"
    problem: str | None = None
    # Could not be opened for writing; planned read-only instead.
    read_only: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    plans: list[ChatPlan] = field(default_factory=list)
    rows_written: int = 0
    transactions: int = 0
    max_lock_hold_s: float = 0.0
    write_s: float = 0.0
    title_problems: list[tuple[str, str]] = field(default_factory=list)
    committed: int = 0

    @property
    def reachable(self) -> bool:
        return self.status == "ok"

    @property
    def written(self) -> int:
        """Chats whose row the engine changed (or, planned read-only, would change)."""
        return written(self.outcomes)

    def count_not_done(self) -> None:
        """Chats handed in but not given an outcome: ``not_done``, so the outcomes add up to the chats."""
        rest = self.chats - sum(self.outcomes.values())
        if rest > 0:
            self.outcomes["not_done"] += rest

    def add(self, report: SyncReport) -> None:
        self.outcomes.update(report.outcomes)
        self.notes.update(report.notes)
        self.plans.extend(report.plans)  # only those of ``keep_outcomes`` were kept
        self.rows_written += report.rows_written
        self.transactions += report.transactions
        self.max_lock_hold_s = max(self.max_lock_hold_s, report.max_lock_hold_s)
        self.title_problems.extend(report.title_problems)
        self.committed += len(report.committed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state_db": self.state_db,
            "profiles": self.profiles,
            "chats": self.chats,
            "status": self.status,
            "problem": self.problem,
            "read_only": self.read_only,
            "outcomes": dict(self.outcomes),
            "notes": dict(self.notes),
            "rows_written": self.rows_written,
            "transactions": self.transactions,
            "max_lock_hold_ms": round(self.max_lock_hold_s * 1000, 3),
            "title_problems": [{"session_id": s, "reason": r} for s, r in self.title_problems],
        }


def written(outcomes: Counter[str]) -> int:
    """Of these outcomes, the chats whose row was written: the one place "written" is defined."""
    return sum(outcomes[outcome] for outcome in WRITING_OUTCOMES)


def desired_chats(snapshots: Sequence[UsageSnapshot], transcripts: bool, notes: Counter[str]) -> list[Desired]:
    """The chats as the rule sees them; notes on dropped values are counted into ``notes``."""
    now = time.time()
    chats = []
    for snapshot in snapshots:
        chat, found = desired_from(snapshot, now=now, transcripts=transcripts)
        if found:  # (Counter.update is Python code: not called for the usual nothing)
            notes.update(found)
        chats.append(chat)
    return chats


def unreachable(outcome: DatabaseOutcome, exc: BaseException) -> None:
    """Say in ``outcome`` why its state.db could not be used."""
    if isinstance(exc, StateDBMissing):
        outcome.status, outcome.problem = "missing", f"no state.db at {outcome.state_db} (run hermes once there)"
    elif isinstance(exc, StateDBUninitialised):
        outcome.status, outcome.problem = "uninitialised", str(exc)
    elif isinstance(exc, HermesStateUnavailable):
        outcome.status, outcome.problem = "no_hermes_state", str(exc)
    else:
        outcome.status, outcome.problem = "error", f"{type(exc).__name__}: {exc}"


class StateDbBatch:
    """The chats of one state.db, applied as they come (see the module docstring).

    The state.db is opened on the first ``add`` and stays open until
    ``close_store()``; ``outcome.count_not_done()`` then completes the
    count. Each ``add`` goes to ``sync`` ``chunk`` chats at a time (a commit
    point). ``counted(n)`` is called after each chunk once its report is
    added up (``n`` chats committed), even when the chunk failed; a chunk's
    failure ends the writing here (the outcome says why), other state.dbs
    are the caller's.
    """

    def __init__(
        self,
        outcome: DatabaseOutcome,
        *,
        open_store: Callable[[Path], StateStore] = StateStore,
        transcripts: bool = False,
        restore_deleted: bool = False,
        chunk: int,
        keep_outcomes: frozenset[str] = frozenset(),
        counted: Callable[[int], None] | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.outcome = outcome
        self.path = Path(outcome.state_db)
        self.open_store = open_store
        self.transcripts = transcripts
        self.restore_deleted = restore_deleted
        self.chunk = chunk
        self.keep_outcomes = keep_outcomes
        self.counted = counted
        self._store: StateStore | None = None
        self._opened = False
        self._write_error: str | None = None
        self._blocked = 0
        self._transcripts = TranscriptWriter(stats) if transcripts else None

    def add(self, snapshots: Sequence[UsageSnapshot], between_chunks: Callable[[], bool] | None = None) -> bool:
        """Apply these chats; False when ``between_chunks()``, asked after each chunk, said stop."""
        self.outcome.chats += len(snapshots)
        if not self._opened:
            self._opened = True
            self._store = self._open()
        if self._store is not None:
            return self._write(self._store, snapshots, between_chunks)
        if self.outcome.read_only:
            self._check_read_only(snapshots)
        return True

    def _open(self) -> StateStore | None:
        try:
            return self.open_store(self.path)
        except (StateDBMissing, StateDBUninitialised, HermesStateUnavailable) as exc:
            unreachable(self.outcome, exc)
        except Exception as exc:
            # Perhaps only writing is impossible: plan read-only, a problem only if something needs writing.
            self.outcome.read_only = True
            self._write_error = f"{type(exc).__name__}: {exc}"
        return None

    def _write(
        self, store: StateStore, snapshots: Sequence[UsageSnapshot], between_chunks: Callable[[], bool] | None
    ) -> bool:
        outcome = self.outcome
        for start in range(0, len(snapshots), self.chunk):
            report = SyncReport()
            started = time.perf_counter()
            try:
                sync(
                    store,
                    desired_chats(snapshots[start : start + self.chunk], self.transcripts, outcome.notes),
                    budget_s=TRANSCRIPT_BUDGET_S if self.transcripts else BATCH_BUDGET_S,
                    keep_plans=self.keep_outcomes,
                    write_transcript=self._transcripts,
                    report=report,
                    restore_deleted=self.restore_deleted,
                )
            except Exception as exc:
                unreachable(outcome, exc)
                self.close_store()
                return True  # the other state.dbs go on
            finally:
                outcome.write_s += time.perf_counter() - started
                outcome.add(report)
                if self.counted is not None:
                    self.counted(len(report.committed))
            if between_chunks is not None and not between_chunks():
                return False
        return True

    def _check_read_only(self, snapshots: Sequence[UsageSnapshot]) -> None:
        outcome = self.outcome
        plans = _plan_read_only(
            self.path, snapshots, outcome, transcripts=self.transcripts, restore_deleted=self.restore_deleted
        )
        if plans is None:
            outcome.read_only = False
            return
        blocked = 0
        for plan in plans:
            outcome.notes.update(plan.notes)
            if plan.outcome in WRITING_OUTCOMES:
                blocked += 1  # counted as not_done once the batch is done
            else:
                outcome.outcomes[plan.outcome] += 1
                if plan.outcome in self.keep_outcomes:
                    outcome.plans.append(plan)
        if blocked:
            self._blocked += blocked
            outcome.status = "read_only"
            outcome.problem = f"cannot write {self.path} ({self._write_error}); {self._blocked} chats need writing"

    def close_store(self) -> None:
        """Close the state.db (then ``outcome.count_not_done()`` completes the count)."""
        store, self._store = self._store, None
        if store is not None:
            store.close()


def _plan_read_only(
    path: Path,
    snapshots: Sequence[UsageSnapshot],
    outcome: DatabaseOutcome,
    *,
    transcripts: bool,
    restore_deleted: bool,
    note_writable: bool = False,
) -> list[ChatPlan] | None:
    """The plans on a read-only connection; None (and why in ``outcome``) when it cannot be read.

    ``note_writable``: once the file opens, ``outcome.read_only`` says whether a writer could open it.
    """
    try:
        conn = open_read_only(path)
    except Exception as exc:
        unreachable(outcome, exc)
        return None
    if note_writable:
        outcome.read_only = not writable(path)
    try:
        check_initialised(conn, path)
        chats = desired_chats(snapshots, transcripts, outcome.notes)
        return check(conn, chats, Capabilities.for_reading(), restore_deleted=restore_deleted, transcripts=transcripts)
    except (sqlite3.Error, StateDBUninitialised) as exc:
        unreachable(outcome, exc)
        return None
    finally:
        conn.close()


def check_state_db(
    outcome: DatabaseOutcome,
    snapshots: Sequence[UsageSnapshot],
    *,
    transcripts: bool = False,
    restore_deleted: bool = False,
) -> DatabaseOutcome:
    """The plans the engine would make for these chats, read-only (``verify``, ``status``, dry runs)."""
    outcome.chats += len(snapshots)
    plans = _plan_read_only(
        Path(outcome.state_db),
        snapshots,
        outcome,
        transcripts=transcripts,
        restore_deleted=restore_deleted,
        note_writable=True,
    )
    if plans is not None:
        for plan in plans:
            outcome.outcomes[plan.outcome] += 1
            outcome.notes.update(plan.notes)
        outcome.plans = plans
    outcome.count_not_done()
    return outcome
