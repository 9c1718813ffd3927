"""``backfill``: bring the WebUI's existing chats into each profile's state.db.

Runs every session file through the engine (the same rule as a live save),
dated by the chat's creation time so ``hermes insights --days N`` counts it
on the day it happened. Chats already right are "unchanged", so a second run
writes nothing, and an interrupted run is resumed by running it again: each
transaction commits on its own. Chats deleted in hermes are listed and left
out unless ``restore_deleted``. Given ``SessionFiles`` rather than a finished
``Scan``, each part of the folder is written as soon as it is read, while
reader processes parse the next. A dry run plans on read-only connections.

Never: create a state.db, modify a WebUI file, or hold state.db's write lock
for long (the engine splits the work into short transactions).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.batch import written
from ..engine.store import StateStore
from ..profiles import Homes
from ..snapshot import UsageSnapshot
from ..sources import Scan, SessionFiles
from .batch import CHUNK, BatchWriter, check_all
from .report import FolderReport

__all__ = ["BackfillReport", "backfill"]

# progress(files done, files in the folder)
Progress = Callable[[int, int], None]


@dataclass(slots=True)
class BackfillReport(FolderReport):
    """What a backfill found and did; the CLI prints it and its ``--json``.

    ``unread``: session files not reached before an interruption (they
    complete the count of files, see ``FolderReport``).
    """

    unread: int = 0
    dry_run: bool = False
    interrupted: bool = False
    total_s: float = 0.0

    @property
    def written(self) -> int:
        return written(self.outcomes)

    @property
    def complete(self) -> bool:
        """Every readable chat reached its state.db and none was refused (see ``databases_fine``)."""
        return not self.interrupted and self.databases_fine

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.common_dict("backfill"),
            "dry_run": self.dry_run,
            "unread": self.unread,
            "written": self.written,
            "complete": self.complete,
            "interrupted": self.interrupted,
            "total_s": round(self.total_s, 3),
        }


def backfill(
    source: Scan | SessionFiles,
    homes: Homes,
    *,
    dry_run: bool = False,
    transcripts: bool = False,
    restore_deleted: bool = False,
    progress: Progress | None = None,
    open_store: Callable[[Path], StateStore] = StateStore,
    chunk: int = CHUNK,
) -> BackfillReport:
    """Run the chats of ``source`` through the engine (or, ``dry_run``, plan them read-only).

    ``source`` is a finished ``Scan``, or ``SessionFiles`` to read now
    (their parts written while the next are read). ``progress(done,
    total)`` counts session files. KeyboardInterrupt propagates with the
    report so far as its ``.report`` attribute: what committed before it
    is in, nothing is half written.
    """
    started = time.perf_counter()
    if isinstance(source, SessionFiles) and transcripts and not source.keep_messages:
        source = dataclasses.replace(source, keep_messages=True)
    report = BackfillReport(sessions_dir=str(source.directory), dry_run=dry_run)
    writer = (
        None
        if dry_run
        else BatchWriter(
            homes,
            transcripts=transcripts,
            restore_deleted=restore_deleted,
            open_store=open_store,
            chunk=chunk,
            keep_outcomes=frozenset({"deleted"}),
        )
    )
    run = _Run(report, writer, progress, source)
    try:
        run.read(source)
        if dry_run and run.scan is not None:
            report.databases, report.refused = check_all(
                homes, run.scan.snapshots, transcripts=transcripts, restore_deleted=restore_deleted
            )
    except KeyboardInterrupt as exc:
        report.interrupted = True
        _count_files(report, run.scan)
        report.total_s = time.perf_counter() - started
        exc.report = report  # type: ignore[attr-defined]
        raise
    _count_files(report, run.scan)
    report.total_s = time.perf_counter() - started
    return report


class _Run:
    """One backfill's reading and writing: each part of the folder is written as soon as it is read."""

    def __init__(
        self, report: BackfillReport, writer: BatchWriter | None, progress: Progress | None, source: Scan | SessionFiles
    ) -> None:
        self.report = report
        self.writer = writer
        self.progress = progress
        # The folder as read so far: what the report counts, even after an interruption.
        self.scan = source if isinstance(source, Scan) else None

    def read(self, source: Scan | SessionFiles) -> None:
        """Read (or take) the chats and write them; the writer's outcomes go to the report whatever happens."""
        writer = self.writer
        try:
            if isinstance(source, SessionFiles):
                self.scan = source.read(self.on_part)
            elif writer is not None:
                self.on_part(source, source.snapshots)
        finally:
            if writer is not None:
                self.report.databases, self.report.refused = writer.close()

    def on_part(self, so_far: Scan, chats: list[UsageSnapshot]) -> None:
        self.scan = so_far
        if self.writer is not None:
            if chats:
                self.writer.add(chats)
            else:  # listed (the readers parse the first part meanwhile), or a part of blank chats
                self.writer.get_ready()
        if self.progress is not None:
            self.progress(so_far.done, so_far.files)


def _count_files(report: BackfillReport, scan: Scan | None) -> None:
    """The file counts of ``scan`` (so far): after an interruption, what was not reached is ``unread``."""
    if scan is None:
        return
    report.files, report.blank, report.filtered = scan.files, scan.blank, scan.filtered
    report.unreadable = list(scan.bad)
    if report.interrupted:
        report.chats = len(report.refused) + sum(d.chats for d in report.databases)
    else:
        report.chats = len(scan.snapshots)
    report.unread = report.files - report.chats - report.blank - report.filtered - len(report.unreadable)
