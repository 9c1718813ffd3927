"""``verify``: does state.db say what the WebUI's session files say — in hermes' terms?

Plans every chat with the engine on read-only connections and reports the
drift the engine would repair: every field the mirror writes or fills
(tokens in hermes' convention, cache, cost, model, title in the form hermes
stores, started_at, ended_at, message_count, tool_call_count, and with
``transcripts`` the messages). What the engine would rightly leave alone is
not drift: a title renamed in hermes, a chat deleted in hermes (listed), a
row newer than the file, another source's row, what hermes-agent writes
itself. ``fix`` applies the same plans, then checks again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.plan import ChatPlan
from ..engine.store import StateStore
from ..profiles import Homes
from ..sources import Scan
from .batch import WRITING_OUTCOMES, check_all, write
from .report import FolderReport

__all__ = ["VerifyReport", "verify", "WRITING_OUTCOMES"]


@dataclass(slots=True)
class VerifyReport(FolderReport):
    """Per state.db, the chats that differ and why; what was fixed; what could not be checked."""

    # Chats that differed when first compared (before ``fix``); ``drifted`` is what differs now.
    differed: int = 0
    fixed: int = 0
    fix_problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def drifted(self) -> list[ChatPlan]:
        return [p for d in self.databases for p in d.plans if p.outcome in WRITING_OUTCOMES and p.drift]

    @property
    def ok(self) -> bool:
        """No drift, nothing refused, nothing that failed (see ``databases_fine``)."""
        return not self.drifted and not self.fix_problems and self.databases_fine

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.common_dict("verify"),
            "drifted": [
                {
                    "session_id": p.session_id,
                    "owner": p.owner,
                    "drift": [{"field": d.field, "webui": _plain(d.want), "state_db": _plain(d.have)} for d in p.drift],
                }
                for p in self.drifted
            ],
            "differed": self.differed,
            "fixed": self.fixed,
            "fix_problems": [{"where": w, "reason": r} for w, r in self.fix_problems],
            "ok": self.ok,
        }


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)


def verify(
    scan: Scan,
    homes: Homes,
    *,
    fix: bool = False,
    transcripts: bool = False,
    open_store: Callable[[Path], StateStore] = StateStore,
) -> VerifyReport:
    """Compare each chat with its row through the engine; with ``fix``, apply and check again."""
    report = VerifyReport(
        sessions_dir=str(scan.directory),
        files=scan.files,
        chats=len(scan.snapshots),
        blank=scan.blank,
        filtered=scan.filtered,
        unreadable=list(scan.bad),
    )
    report.databases, report.refused = check_all(homes, scan.snapshots, transcripts=transcripts)
    drifted = {p.session_id for p in report.drifted}
    report.differed = len(drifted)
    if fix and drifted:
        targets = [s for s in scan.snapshots if s.session_id in drifted]
        written, _ = write(homes, targets, transcripts=transcripts, open_store=open_store)
        for database in written:
            if not database.reachable:
                report.fix_problems.append((database.state_db, database.problem or database.status))
        report.databases, report.refused = check_all(homes, scan.snapshots, transcripts=transcripts)
        report.fixed = len(drifted - {p.session_id for p in report.drifted})
    return report
