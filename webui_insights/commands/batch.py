"""Running the engine over many chats, one state.db at a time.

``backfill``, ``verify`` and the reconcile sweep all read session files and
hand each profile's chats to the engine: ``write`` applies them
(``engine.sync``), ``check`` plans them on a read-only connection
(``engine.check``) for reports and dry runs. Outcomes are kept per state.db,
so a report can say, profile by profile, what was done and what could not
be (no state.db, one hermes never initialised, read-only, locked,
unreadable). Every chat handed in is counted once: per state.db the
outcomes add up to its chats (``not_done``: chats the command did not get
to — the state.db's status says why), and the refused ones (a profile name
that leads nowhere) are listed apart.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ..diagnostics import Stats
from ..engine.budget import BATCH_BUDGET_S, TRANSCRIPT_BUDGET_S
from ..engine.chats import desired_from
from ..engine.hermes import Capabilities, HermesStateUnavailable, hermes_state
from ..engine.plan import ChatPlan
from ..engine.states import Desired
from ..engine.store import StateDBMissing, StateDBUninitialised, StateStore, check_initialised, open_read_only
from ..engine.sync import SyncReport, check, sync
from ..engine.transcripts import TranscriptWriter
from ..profiles import DEFAULT_PROFILE, Homes, InvalidProfile
from ..snapshot import UsageSnapshot

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


def nowhere(databases: Sequence[DatabaseOutcome]) -> bool:
    """There were chats, and not one of their state.dbs exists: most likely the wrong HERMES_HOME.

    One profile without a state.db is only reported; all of them is a problem.
    """
    return bool(databases) and all(d.status == "missing" for d in databases)


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


def group_by_state_db(
    snapshots: Iterable[UsageSnapshot], homes: Homes
) -> tuple[dict[Path, list[UsageSnapshot]], dict[Path, list[str]], list[tuple[str, str]]]:
    """Snapshots by their profile's state.db, the profile names per state.db, and refused (session, reason)."""
    groups: dict[Path, list[UsageSnapshot]] = defaultdict(list)
    names: dict[Path, list[str]] = defaultdict(list)
    refused: list[tuple[str, str]] = []
    # Per profile: its state.db's group, or why it has none (resolved once per profile).
    targets: dict[str | None, list[UsageSnapshot] | str] = {}
    for snapshot in snapshots:
        profile = snapshot.profile
        target = targets.get(profile)
        if target is None:
            path = state_db_of(homes, profile)
            if isinstance(path, Path):
                names[path].append(profile or DEFAULT_PROFILE)
                target = groups[path]
            else:
                target = path
            targets[profile] = target
        if isinstance(target, str):
            refused.append((snapshot.session_id, target))
        else:
            target.append(snapshot)
    return dict(groups), dict(names), refused


def state_db_of(homes: Homes, profile: str | None) -> Path | str:
    """The profile's state.db, or why there is none: a bad name, or a profile folder that cannot be resolved."""
    try:
        return homes.state_db(profile)
    except InvalidProfile as exc:  # a bad name, a folder leading outside, a symlink loop
        return str(exc)


def _desired(snapshots: Sequence[UsageSnapshot], transcripts: bool, notes: Counter[str]) -> list[Desired]:
    now = time.time()
    chats = []
    for snapshot in snapshots:
        chat, found = desired_from(snapshot, now=now, transcripts=transcripts)
        if found:  # (Counter.update is Python code: not called for the usual nothing)
            notes.update(found)
        chats.append(chat)
    return chats


def _unreachable(outcome: DatabaseOutcome, exc: BaseException) -> None:
    if isinstance(exc, StateDBMissing):
        outcome.status, outcome.problem = "missing", f"no state.db at {outcome.state_db} (run hermes once there)"
    elif isinstance(exc, StateDBUninitialised):
        outcome.status, outcome.problem = "uninitialised", str(exc)
    elif isinstance(exc, HermesStateUnavailable):
        outcome.status, outcome.problem = "no_hermes_state", str(exc)
    else:
        outcome.status, outcome.problem = "error", f"{type(exc).__name__}: {exc}"


def _writes(plan: ChatPlan) -> bool:
    return plan.outcome in WRITING_OUTCOMES


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


class BatchWriter:
    """Applies the engine to chats as they come, each into its profile's state.db.

    ``add(chats)`` may be called many times (a backfill writes each part of
    the sessions folder while the next is read); every state.db is opened
    once and stays open until ``close()``. A state.db that cannot be opened
    for writing (a read-only copy, a directory where SQLite cannot create
    its ``-shm``) is planned read-only instead: when nothing there needs
    writing it is fine (``read_only``), otherwise it is a problem naming
    how many chats could not be written.

    ``between_chunks()`` is asked after each chunk; False stops (the sweep's
    stop event). KeyboardInterrupt propagates after the chunks before it
    committed (a transaction is either in or not); ``close()`` then counts
    the rest as ``not_done``.
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
        self.homes = homes
        self.transcripts = transcripts
        self.restore_deleted = restore_deleted
        self.open_store = open_store
        self.progress = progress
        self.chunk = chunk
        self.keep_outcomes = keep_outcomes
        self.between_chunks = between_chunks
        self.databases: dict[Path, DatabaseOutcome] = {}
        self.refused: list[tuple[str, str]] = []
        self.stopped = False
        self._stores: dict[Path, StateStore | None] = {}
        self._write_errors: dict[Path, str] = {}
        self._blocked: Counter[Path] = Counter()
        self._transcripts = TranscriptWriter(stats) if transcripts else None

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

    def add(self, snapshots: Sequence[UsageSnapshot]) -> bool:
        """Write these chats; False once ``between_chunks`` said stop (later calls do nothing)."""
        if self.stopped:
            return False
        groups, names, refused = group_by_state_db(snapshots, self.homes)
        self.refused.extend(refused)
        for path, group in groups.items():
            outcome = self.databases.get(path)
            if outcome is None:
                outcome = self.databases[path] = DatabaseOutcome(str(path), [])
            outcome.profiles.extend(n for n in names.get(path, []) if n not in outcome.profiles)
            outcome.chats += len(group)
            if path not in self._stores:
                self._stores[path] = self._open(path, outcome)
            store = self._stores[path]
            if store is None:
                if outcome.read_only:
                    self._check_read_only(path, group, outcome)
                continue
            if not self._write(store, group, outcome):
                self.stopped = True
                return False
        return True

    def _open(self, path: Path, outcome: DatabaseOutcome) -> StateStore | None:
        try:
            return cast(StateStore, _HeldStore(self.open_store(path)))
        except (StateDBMissing, StateDBUninitialised, HermesStateUnavailable) as exc:
            _unreachable(outcome, exc)
        except Exception as exc:
            # Perhaps only writing is impossible: plan read-only, a problem only if something needs writing.
            outcome.read_only = True
            self._write_errors[path] = f"{type(exc).__name__}: {exc}"
        return None

    def _check_read_only(self, path: Path, group: Sequence[UsageSnapshot], outcome: DatabaseOutcome) -> None:
        try:
            conn = open_read_only(path)
        except Exception as exc:
            outcome.read_only = False
            _unreachable(outcome, exc)
            return
        try:
            check_initialised(conn, path)
            plans = check(
                conn,
                _desired(group, self.transcripts, outcome.notes),
                Capabilities.for_reading(),
                restore_deleted=self.restore_deleted,
            )
        except (sqlite3.Error, StateDBUninitialised) as exc:
            outcome.read_only = False
            _unreachable(outcome, exc)
            return
        finally:
            conn.close()
        blocked = 0
        for plan in plans:
            outcome.notes.update(plan.notes)
            if _writes(plan):
                blocked += 1  # counted as not_done by close()
            else:
                outcome.outcomes[plan.outcome] += 1
                if plan.outcome in self.keep_outcomes:
                    outcome.plans.append(plan)
        if blocked:
            self._blocked[path] += blocked
            outcome.status = "read_only"
            outcome.problem = (
                f"cannot write {path} ({self._write_errors.get(path)}); {self._blocked[path]} chats need writing"
            )

    def _write(self, store: StateStore, group: Sequence[UsageSnapshot], outcome: DatabaseOutcome) -> bool:
        for start in range(0, len(group), self.chunk):
            part = group[start : start + self.chunk]
            report = SyncReport()
            started = time.perf_counter()
            try:
                sync(
                    store,
                    _desired(part, self.transcripts, outcome.notes),
                    budget_s=TRANSCRIPT_BUDGET_S if self.transcripts else BATCH_BUDGET_S,
                    keep_plans=self.keep_outcomes,
                    write_transcript=self._transcripts,
                    report=report,
                    restore_deleted=self.restore_deleted,
                )
            except Exception as exc:
                _unreachable(outcome, exc)
                self._close_store(Path(outcome.state_db))
                return True  # the other state.dbs go on
            finally:
                outcome.write_s += time.perf_counter() - started
                _add(outcome, report)
                if self.progress is not None:
                    self.progress(len(report.committed))
                _raise_held()  # everything committed is counted: a held Ctrl-C may stop us now
            if self.between_chunks is not None and not self.between_chunks():
                return False
        return True

    def _close_store(self, path: Path) -> None:
        store = self._stores.get(path)
        self._stores[path] = None
        if store is not None:
            store.close()

    def close(self) -> tuple[list[DatabaseOutcome], list[tuple[str, str]]]:
        """Close every state.db; the outcomes (chats not reached counted as ``not_done``) and refused chats."""
        try:
            for path in list(self._stores):
                self._close_store(path)
        finally:
            for outcome in self.databases.values():
                rest = outcome.chats - sum(outcome.outcomes.values())
                if rest > 0:
                    outcome.outcomes["not_done"] += rest
        return list(self.databases.values()), self.refused


def write(
    homes: Homes, snapshots: Sequence[UsageSnapshot], **options: Any
) -> tuple[list[DatabaseOutcome], list[tuple[str, str]]]:
    """Apply the engine to every chat at once: ``BatchWriter(homes, **options)``, one ``add``, ``close``.

    Per state.db outcomes, and refused chats.
    """
    writer = BatchWriter(homes, **options)
    try:
        writer.add(snapshots)
    finally:
        results = writer.close()
    return results


def _add(outcome: DatabaseOutcome, report: SyncReport) -> None:
    outcome.outcomes.update(report.outcomes)
    outcome.notes.update(report.notes)
    outcome.plans.extend(report.plans)  # only those of ``keep_outcomes`` were kept
    outcome.rows_written += report.rows_written
    outcome.transactions += report.transactions
    outcome.max_lock_hold_s = max(outcome.max_lock_hold_s, report.max_lock_hold_s)
    outcome.title_problems.extend(report.title_problems)
    outcome.committed += len(report.committed)


def check_all(
    homes: Homes,
    snapshots: Sequence[UsageSnapshot],
    *,
    transcripts: bool = False,
    restore_deleted: bool = False,
) -> tuple[list[DatabaseOutcome], list[tuple[str, str]]]:
    """The plans the engine would make for every chat, read-only (verify, dry runs)."""
    groups, names, refused = group_by_state_db(snapshots, homes)
    capabilities = Capabilities.for_reading()
    results = []
    for path, group in groups.items():
        outcome = DatabaseOutcome(str(path), names.get(path, []), chats=len(group))
        results.append(outcome)
        try:
            conn = open_read_only(path)
        except Exception as exc:
            _unreachable(outcome, exc)
            continue
        outcome.read_only = not writable(path)
        try:
            check_initialised(conn, path)
            chats = _desired(group, transcripts, outcome.notes)
            plans = check(conn, chats, capabilities, restore_deleted=restore_deleted, transcripts=transcripts)
            for plan in plans:
                outcome.outcomes[plan.outcome] += 1
                outcome.notes.update(plan.notes)
            outcome.plans = plans
        except (sqlite3.Error, StateDBUninitialised) as exc:
            _unreachable(outcome, exc)
        finally:
            conn.close()
    for outcome in results:
        rest = outcome.chats - sum(outcome.outcomes.values())
        if rest > 0:
            outcome.outcomes["not_done"] += rest
    return results, refused
