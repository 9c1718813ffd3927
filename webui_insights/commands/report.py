"""What every command over the sessions folder reports: files, chats, and outcomes per state.db.

``backfill`` and ``verify`` extend it. Every session file is counted once
(``files`` = ``chats`` + ``blank`` + ``filtered`` + ``len(unreadable)`` +
whatever the command did not reach), every chat once (``chats`` =
``len(refused)`` + the chats of each state.db, whose outcomes add up to
them).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .batch import DatabaseOutcome, nowhere

__all__ = ["FolderReport"]


@dataclass(slots=True)
class FolderReport:
    sessions_dir: str
    files: int = 0
    chats: int = 0
    blank: int = 0
    filtered: int = 0
    unreadable: list[tuple[str, str, str]] = field(default_factory=list)  # (file, kind, reason)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (session_id, why)
    databases: list[DatabaseOutcome] = field(default_factory=list)

    @property
    def outcomes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for database in self.databases:
            total.update(database.outcomes)
        return total

    @property
    def notes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for database in self.databases:
            total.update(database.notes)
        return total

    @property
    def deleted_in_hermes(self) -> list[str]:
        return [p.session_id for d in self.databases for p in d.plans if p.outcome == "deleted"]

    @property
    def databases_fine(self) -> bool:
        """Nothing refused (a chat, or a record that cannot be used), every state.db reached.

        One without a state.db is only reported, unless all are.
        """
        return (
            not self.refused
            and all(d.status in ("ok", "missing") and not d.outcomes["refused"] for d in self.databases)
            and not nowhere(self.databases)
        )

    def common_dict(self, command: str) -> dict[str, Any]:
        """The part of ``--json`` every command shares."""
        return {
            "command": command,
            "sessions_dir": self.sessions_dir,
            "files": self.files,
            "chats": self.chats,
            "blank": self.blank,
            "filtered": self.filtered,
            "skipped": dict(Counter(kind for _, kind, _ in self.unreadable)),
            "unreadable": [{"file": n, "kind": k, "reason": r} for n, k, r in self.unreadable],
            "refused": [{"session_id": s, "reason": r} for s, r in self.refused],
            "outcomes": dict(self.outcomes),
            "notes": dict(self.notes),
            "deleted_in_hermes": self.deleted_in_hermes,
            "databases": [d.as_dict() for d in self.databases],
        }
