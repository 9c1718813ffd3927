"""``backfill``: mirror the WebUI's existing chats into each profile's state.db.

Owns turning a directory of session files into rows: each chat goes to its
own profile's state.db with ``started_at`` = the chat's ``created_at`` (the
sink sets it when it creates the row), so ``hermes insights --days N`` counts
it on the day it happened. Rows that already say what the file says are not
written again, so a second run changes nothing and an interrupted run is
resumed by running it again: every chunk commits on its own.

Never: create a state.db, modify a WebUI file, or hold state.db's write lock
for long (the sink splits the work into short transactions).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sink import StateDB, StateDBMissing
from .snapshot import UsageSnapshot
from .verify import compare, group_by_state_db, read_rows
from .webui_files import Scan, iter_chunks

__all__ = ["BackfillReport", "open_state_db", "backfill", "plan"]

# One StateDB.write call per chunk: a commit point for resuming and a tick
# for the progress bar. The sink splits each chunk into ~30 ms transactions.
CHUNK = 2000

Progress = Callable[[int, int], None]


def open_state_db(path: Path, *, write_retries: int | None = None) -> StateDB:
    """A StateDB for bulk work; default retries (patient), as a CLI can afford."""
    return StateDB(path, write_retries=write_retries)


@dataclass(slots=True)
class BackfillReport:
    """What a backfill found and did; the CLI prints it as the summary."""

    files: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    blank: int = 0
    filtered: int = 0
    sessions: int = 0
    new: int = 0
    updated: int = 0
    up_to_date: int = 0
    written: int = 0
    transactions: int = 0
    max_lock_hold_s: float = 0.0
    write_s: float = 0.0
    total_s: float = 0.0
    title_rejected: list[tuple[str, str]] = field(default_factory=list)
    unreachable: list[tuple[str, str]] = field(default_factory=list)  # (state.db or session, reason)
    dry_run: bool = False

    @property
    def to_write(self) -> int:
        return self.new + self.updated

    @property
    def complete(self) -> bool:
        """Every chat that could be read is in state.db (or would be, for a dry run)."""
        return not self.unreachable and (self.dry_run or self.written == self.to_write)


@dataclass(slots=True)
class _Plan:
    path: Path
    snapshots: list[UsageSnapshot]


def plan(scan: Scan, report: BackfillReport) -> list[_Plan]:
    """Which chats each state.db still needs; counts new / updated / up to date."""
    groups, refused = group_by_state_db(scan.snapshots)
    report.unreachable.extend(refused)
    plans = []
    for path, snaps in groups.items():
        try:
            stored = read_rows(path, (s.session_id for s in snaps), transcripts=any(s.transcript for s in snaps))
        except StateDBMissing:
            report.unreachable.append(
                (str(path), f"no state.db there; {len(snaps)} chats not mirrored (run hermes once)")
            )
            continue
        except sqlite3.Error as exc:
            report.unreachable.append((str(path), f"cannot read it ({exc}); {len(snaps)} chats not mirrored"))
            continue
        needed = []
        for snap in snaps:
            row = stored.rows.get(snap.session_id)
            if row is None:
                report.new += 1
            elif compare(snap, row, *stored.memory(snap.session_id)):
                report.updated += 1
            else:
                report.up_to_date += 1
                continue
            needed.append(snap)
        if needed:
            plans.append(_Plan(path, needed))
    return plans


def backfill(
    scan: Scan,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    open_db: Callable[[Path], Any] = open_state_db,
    chunk: int = CHUNK,
) -> BackfillReport:
    """Write the chats of ``scan`` that state.db does not have yet.

    ``progress(done, total)`` counts the chats written of those to write.
    Exceptions from state.db (locked past SessionDB's patience, hermes-agent
    missing) propagate after the chunks before them committed: a rerun
    resumes. A missing state.db is reported, not raised.
    """
    started = time.perf_counter()
    report = BackfillReport(
        files=scan.files,
        bad=list(scan.bad),
        blank=scan.blank,
        filtered=scan.filtered,
        sessions=len(scan.snapshots),
        dry_run=dry_run,
    )
    plans = plan(scan, report)
    total, done = report.to_write, 0
    if not dry_run and total:
        if progress:
            progress(0, total)
        for item in plans:
            db = open_db(item.path)
            try:
                for piece in iter_chunks(item.snapshots, chunk):
                    _write(db, piece, report)
                    done += len(piece)
                    if progress:
                        progress(done, total)
            finally:
                db.close()
    report.total_s = time.perf_counter() - started
    return report


def _write(db: Any, part: list[UsageSnapshot], report: BackfillReport) -> None:
    """One chunk, committed on its own, counted into ``report``."""
    write_started = time.perf_counter()
    result = db.write(part)
    report.write_s += time.perf_counter() - write_started
    report.written += len(result.written)
    report.transactions += result.transactions
    report.max_lock_hold_s = max(report.max_lock_hold_s, result.max_lock_hold_s)
    report.title_rejected.extend((s.session_id, why) for s, why in result.title_rejected)
