"""Chats of many profiles, each to its profile's state.db and that state.db's engine batch.

``backfill``, ``verify``, ``status`` and the reconcile sweep hand over the
chats of a whole sessions folder; each chat goes to the state.db of its
profile (``profiles.Homes``), and each state.db's chats to one
``engine.batch.StateDbBatch`` (or, read-only, ``check_state_db``). A chat
whose profile name leads nowhere is refused and listed apart; every other
chat is counted once, in its state.db's outcome.

Never: read session files, print, or import the command layer (the sweep
runs this inside the WebUI's process).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .engine.batch import DatabaseOutcome, StateDbBatch, check_state_db
from .engine.store import StateStore
from .profiles import DEFAULT_PROFILE, Homes, InvalidProfile
from .snapshot import UsageSnapshot

if TYPE_CHECKING:
    from .diagnostics import Stats

__all__ = ["ProfileBatches", "check_all", "group_by_state_db", "state_db_of", "write_all"]

# (session_id, why) of chats no state.db may receive.
Refused = list[tuple[str, str]]


def state_db_of(homes: Homes, profile: str | None) -> Path | str:
    """The profile's state.db, or why there is none: a bad name, or a profile folder that cannot be resolved."""
    try:
        return homes.state_db(profile)
    except InvalidProfile as exc:  # a bad name, a folder leading outside, a symlink loop
        return str(exc)


def group_by_state_db(
    snapshots: Iterable[UsageSnapshot], homes: Homes
) -> tuple[dict[Path, list[UsageSnapshot]], dict[Path, list[str]], Refused]:
    """Snapshots by their profile's state.db, the profile names per state.db, and refused (session, reason)."""
    groups: dict[Path, list[UsageSnapshot]] = defaultdict(list)
    names: dict[Path, list[str]] = defaultdict(list)
    refused: Refused = []
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


class ProfileBatches:
    """Applies the engine to chats as they come, each into its profile's state.db.

    ``add(chats)`` may be called many times (a backfill writes each part of
    the sessions folder while the next is read); every state.db is opened
    once and stays open until ``close()``. ``between_chunks()`` is asked
    after each chunk; False stops (the sweep's stop event), and later
    ``add`` calls do nothing. ``close()`` counts the chats not reached as
    ``not_done``. The options are ``StateDbBatch``'s.
    """

    def __init__(
        self,
        homes: Homes,
        *,
        chunk: int,
        transcripts: bool = False,
        restore_deleted: bool = False,
        open_store: Callable[[Path], StateStore] = StateStore,
        keep_outcomes: frozenset[str] = frozenset(),
        between_chunks: Callable[[], bool] | None = None,
        counted: Callable[[int], None] | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.homes = homes
        self.between_chunks = between_chunks
        self.refused: Refused = []
        self.stopped = False
        self._batches: dict[Path, StateDbBatch] = {}

        def new_batch(path: Path) -> StateDbBatch:
            return StateDbBatch(
                DatabaseOutcome(str(path), []),
                open_store=open_store,
                transcripts=transcripts,
                restore_deleted=restore_deleted,
                chunk=chunk,
                keep_outcomes=keep_outcomes,
                counted=counted,
                stats=stats,
            )

        self._new_batch = new_batch

    def add(self, snapshots: Sequence[UsageSnapshot]) -> bool:
        """Write these chats; False once ``between_chunks`` said stop (later calls do nothing)."""
        if self.stopped:
            return False
        groups, names, refused = group_by_state_db(snapshots, self.homes)
        self.refused.extend(refused)
        for path, group in groups.items():
            batch = self._batches.get(path)
            if batch is None:
                batch = self._batches[path] = self._new_batch(path)
            profiles = batch.outcome.profiles
            profiles.extend(n for n in names.get(path, []) if n not in profiles)
            if not batch.add(group, self.between_chunks):
                self.stopped = True
                return False
        return True

    def close(self) -> tuple[list[DatabaseOutcome], Refused]:
        """Close every state.db; the outcomes (chats not reached counted as ``not_done``) and refused chats."""
        batches = list(self._batches.values())
        try:
            for batch in batches:
                batch.close_store()
        finally:
            for batch in batches:
                batch.outcome.count_not_done()
        return [batch.outcome for batch in batches], self.refused


def write_all(batches: ProfileBatches, snapshots: Sequence[UsageSnapshot]) -> tuple[list[DatabaseOutcome], Refused]:
    """Apply the engine to every chat at once: one ``add``, then ``close`` whatever happened."""
    try:
        batches.add(snapshots)
    finally:
        results = batches.close()
    return results


def check_all(
    homes: Homes,
    snapshots: Sequence[UsageSnapshot],
    *,
    transcripts: bool = False,
    restore_deleted: bool = False,
) -> tuple[list[DatabaseOutcome], Refused]:
    """The plans the engine would make for every chat, read-only (verify, status, dry runs)."""
    groups, names, refused = group_by_state_db(snapshots, homes)
    results = [
        check_state_db(
            DatabaseOutcome(str(path), names.get(path, [])),
            group,
            transcripts=transcripts,
            restore_deleted=restore_deleted,
        )
        for path, group in groups.items()
    ]
    return results, refused
