"""The writer's call into the engine: a batch of snapshots in, outcomes counted.

Owns what the writer thread does with a batch it took from the queue: find
each chat's state.db, leave alone the chats of a database still backing off,
convert snapshots to the engine's ``Desired`` (here, off the save path: tool
calls and transcripts are read now), hand each database's chats to
``engine.sync`` through the pool's handle, and count the outcomes into
``stats()``. It says which snapshots to keep pending and which to give up;
the queue does both.

Never: decide a row (the engine does), or hold the queue's lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..diagnostics import RateLimitedLog, Stats, describe_error, report_internal_error
from ..engine.chats import desired_from
from ..engine.states import Desired
from ..engine.store import unwritable
from ..engine.sync import SyncReport, sync
from ..profiles import InvalidProfile
from ..snapshot import UsageSnapshot
from .pool import DatabasePool

if TYPE_CHECKING:
    from ..engine.transcripts import TranscriptWriter

__all__ = ["Exporter", "Exported"]

# Failures that are bugs (ours, or a hermes-agent whose internals changed),
# not a state of the database: reported as internal errors besides the back-off.
_BUGS = (TypeError, AttributeError, NameError, KeyError, IndexError, AssertionError, ZeroDivisionError)

# Plans the writer keeps from a sync to name their chats in the log: records it cannot use.
_LEFT_ALONE = frozenset({"refused"})


@dataclass(slots=True)
class Exported:
    """What became of a batch beyond what landed: snapshots to keep pending, and those given up."""

    retry: list[UsageSnapshot] = field(default_factory=list)
    given_up: list[UsageSnapshot] = field(default_factory=list)


class Exporter:
    """Writes batches of snapshots through the engine, one state.db at a time.

    ``locate`` maps a profile to its state.db path (raises InvalidProfile);
    ``transcripts()`` says whether messages are mirrored too.
    """

    def __init__(
        self,
        stats: Stats,
        log: RateLimitedLog,
        pool: DatabasePool,
        *,
        locate: Callable[[str | None], Path],
        transcripts: Callable[[], bool],
        write_transcript: TranscriptWriter | None,
    ) -> None:
        self._stats = stats
        self._log = log
        self._pool = pool
        self._locate = locate
        self._transcripts = transcripts
        self._write_transcript = write_transcript

    def route(
        self, batch: Iterable[UsageSnapshot], *, ignore_back_off: bool = False
    ) -> tuple[dict[Path, list[UsageSnapshot]], list[UsageSnapshot]]:
        """``batch`` by state.db, and the chats of a database still backing off (kept pending).

        ``ignore_back_off``: every database gets its try now (the writer is stopping).
        """
        now = time.monotonic()
        groups: dict[Path, list[UsageSnapshot]] = {}
        waiting: list[UsageSnapshot] = []
        for snapshot in batch:
            path = self._path_for(snapshot)
            if path is None:
                continue
            if not ignore_back_off and self._pool.backing_off(path, now):
                waiting.append(snapshot)
            else:
                groups.setdefault(path, []).append(snapshot)
        return groups, waiting

    def _path_for(self, snapshot: UsageSnapshot) -> Path | None:
        """The chat's state.db; a refused profile is skipped, counted, logged."""
        try:
            return self._locate(snapshot.profile)
        except InvalidProfile as exc:
            self._stats.skip("invalid_profile")
            self._log.warning("profile", "webui-insights: not mirroring a chat: %s", exc)
            return None

    def _desired(self, snapshots: list[UsageSnapshot]) -> tuple[list[Desired], dict[str, UsageSnapshot]]:
        """Convert on this thread (tool calls, transcripts): the save path only took references."""
        wall = time.time()
        transcripts = self._transcripts()
        chats: list[Desired] = []
        by_id: dict[str, UsageSnapshot] = {}
        for snapshot in snapshots:
            try:
                desired, notes = desired_from(snapshot, now=wall, transcripts=transcripts)
            except Exception as exc:  # a message list the host changed under us, an odd value
                self._stats.skip("bad_value")
                self._log.warning(
                    "convert:" + type(exc).__name__,
                    "webui-insights: chat %s not mirrored: cannot read it: %s",
                    snapshot.session_id,
                    describe_error(exc),
                )
                continue
            for note in notes[len(snapshot.notes) :]:  # the capture counted the snapshot's own
                self._stats.incr("notes." + note)
            chats.append(desired)
            by_id[snapshot.session_id] = snapshot
        return chats, by_id

    def write(self, path: Path, snapshots: list[UsageSnapshot]) -> Exported:
        """Write one state.db's chats; say which to keep pending and which are given up."""
        result = Exported()
        chats, by_id = self._desired(snapshots)
        if not chats:
            return result
        database = self._pool.get(path)
        report = SyncReport()
        try:
            sync(
                self._pool.store_for(database),
                chats,
                budget_s=self._pool.config.transaction_budget_s,
                write_transcript=self._write_transcript,
                report=report,
                keep_plans=_LEFT_ALONE,
            )
        except Exception as exc:
            self._count(report)
            # The transactions before the failing one stay committed: only the rest is left.
            committed = set(report.committed)
            left = [by_id[c.session_id] for c in chats if c.session_id not in committed]
            reason = unwritable(exc)
            if not reason.retried:
                self._pool.unavailable(database, reason, exc, len(left))
                result.given_up.extend(left)
                return result
            self._pool.failed(database, exc, len(left))
            result.retry.extend(left)
            if isinstance(exc, _BUGS):
                report_internal_error(self._stats, self._log, "writer", exc)
            return result
        self._count(report)
        self._pool.succeeded(database)
        return result

    def _count(self, report: SyncReport) -> None:
        for outcome, n in report.outcomes.items():
            self._stats.incr("chats." + outcome, n)
        for note, n in report.notes.items():
            self._stats.incr("notes." + note, n)
        for session_id, why in report.title_problems:
            self._log.warning("title:" + why, "webui-insights: chat %s: %s", session_id, why)
        for plan in report.plans:  # only those left alone (``_LEFT_ALONE``)
            why = ", ".join(plan.notes)
            self._log.warning(
                "record:" + why,
                "webui-insights: chat %s left alone: its record in state.db cannot be used (%s)",
                plan.session_id,
                why,
            )
        if report.transactions:
            self._stats.success(report.rows_written, report.transactions, report.max_lock_hold_s)
