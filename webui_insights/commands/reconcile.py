"""One reconcile pass: every WebUI session file through the engine, quietly.

The WebUI's files hold each chat's latest state, so a chat whose row fell
behind (an update dropped at the queue cap, a process killed, state.db
locked past the exit budget) is repaired by running its file through the
same rule as a live save: the version check keeps a newer row, deletions
in hermes are respected, rows hermes-agent writes only get what it leaves
out. Used by the background sweep (``..sweep``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import forksafe
from ..engine.store import StateStore
from ..profiles import Homes
from ..sources import scan_sessions
from .batch import DatabaseOutcome, write

__all__ = ["ReconcileResult", "reconcile_pass"]

# The sweep shares the host's GIL: small chunks, a pause between them.
_CHUNK = 200
# A background pass must not wait ~18 s on a busy state.db: the next pass retries.
_WRITE_RETRIES = 2


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
    result = ReconcileResult()
    scan = scan_sessions(sessions_dir, keep_messages=transcripts)
    result.bad_files = len(scan.bad)
    result.checked = len(scan.snapshots)

    def between_chunks() -> bool:
        return not (stop is not None and stop.wait(pause_s))

    databases, refused = write(
        homes,
        scan.snapshots,
        transcripts=transcripts,
        open_store=open_store
        or (lambda path: StateStore(path, write_retries=_WRITE_RETRIES, section=forksafe.sqlite_section)),
        chunk=_CHUNK,
        between_chunks=between_chunks,
    )
    result.databases = databases
    result.refused = refused
    result.repaired = sum(
        d.outcomes.get("created", 0) + d.outcomes.get("updated", 0) + d.outcomes.get("restored", 0) for d in databases
    )
    result.duration_s = time.perf_counter() - started
    return result
