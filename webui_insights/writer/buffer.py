"""What waits to be written: one snapshot per chat, newest state wins, in arrival order.

Owns the pending snapshots and the count of those the writer thread took and
has not finished (in flight), behind one lock held only to put a snapshot in,
take the whole batch out or put some back: no I/O and no engine call ever
happens under it, so the host's save never waits on the writer's work.

Never: drop anything by itself (``trim`` says what is over the cap; the queue
drops and reports it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from ..snapshot import UsageSnapshot

__all__ = ["Buffer", "combine"]

Key = tuple[str | None, str]


def combine(older: UsageSnapshot, newer: UsageSnapshot) -> UsageSnapshot:
    """One snapshot standing for both: the newer state, both ledger increments, either agent flag."""
    if (older.updated_at or 0.0, older.observed) > (newer.updated_at or 0.0, newer.observed):
        older, newer = newer, older
    ledger = older.ledger
    if ledger is not None:
        ledger = ledger.plus(newer.ledger)
    else:
        ledger = newer.ledger
    if ledger is newer.ledger and not older.agent_writes:
        return newer
    return newer._replace(ledger=ledger, agent_writes=newer.agent_writes or older.agent_writes)


class Buffer:
    """The coalescing buffer (see the module docstring); ``changed`` is notified as batches finish."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self._snapshots: dict[Key, UsageSnapshot] = {}
        self._inflight = 0

    def put(self, snapshot: UsageSnapshot, cap: int) -> tuple[UsageSnapshot, bool, bool]:
        """Keep ``snapshot`` (merged with the chat's pending one): (what is kept, merged?, over ``cap``?)."""
        key = (snapshot.profile, snapshot.session_id)
        snapshots = self._snapshots
        with self.lock:
            old = snapshots.pop(key, None)  # popped, so the chat moves to the end: the newest
            if old is not None:
                snapshot = combine(old, snapshot)
            snapshots[key] = snapshot
            return snapshot, old is not None, len(snapshots) > cap

    def withdraw(self, snapshot: UsageSnapshot) -> None:
        """Take back ``snapshot`` if it is still the one kept for its chat."""
        key = (snapshot.profile, snapshot.session_id)
        with self.lock:
            if self._snapshots.get(key) is snapshot:
                del self._snapshots[key]

    def put_back(self, snapshots: Iterable[UsageSnapshot]) -> None:
        """Return snapshots a batch could not write, merged with any newer one of the same chat."""
        with self.lock:
            for snapshot in snapshots:
                key = (snapshot.profile, snapshot.session_id)
                newer = self._snapshots.get(key)
                self._snapshots[key] = snapshot if newer is None else combine(snapshot, newer)

    def trim(self, cap: int) -> list[UsageSnapshot]:
        """Remove and return the oldest snapshots beyond ``cap``."""
        over: list[UsageSnapshot] = []
        with self.lock:
            while len(self._snapshots) > cap:
                over.append(self._snapshots.pop(next(iter(self._snapshots))))
        return over

    def take(self) -> list[UsageSnapshot]:
        """Swap everything out as one batch, in flight until ``finished``."""
        with self.lock:
            batch = list(self._snapshots.values())
            self._snapshots.clear()
            self._inflight += len(batch)
        return batch

    def finished(self, batch: list[UsageSnapshot]) -> bool:
        """``batch`` is done (written, put back or given up); True when nothing is left."""
        with self.changed:
            self._inflight -= len(batch)
            self.changed.notify_all()
            return not self._snapshots and not self._inflight

    def waiting(self) -> bool:
        """Anything not yet taken."""
        with self.lock:
            return bool(self._snapshots)

    def count(self) -> int:
        """Pending and in flight."""
        with self.lock:
            return len(self._snapshots) + self._inflight

    def wait_empty(self, deadline: float, alive: Callable[[], bool]) -> bool:
        """Wait until nothing is pending or in flight; False at ``deadline`` or once ``alive()`` is False."""
        with self.changed:
            while self._snapshots or self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not alive():
                    return False
                self.changed.wait(min(remaining, 0.05))
        return True
