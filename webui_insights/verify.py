"""``verify``: does state.db say what the WebUI's session files say?

Owns the comparison between a chat's WebUI totals and its ``sessions`` row
(tokens, cost, title, message count), which ``backfill`` uses to skip rows
that are already right and the reconcile sweep uses to find rows that fell
behind. Rows are read in bulk through a short-lived read-only SQLite
connection: no SessionDB is opened (that would run its schema init, a write)
and no read transaction outlives the call. ``--fix`` re-mirrors drifted chats
through ``sink.StateDB`` with ``exact=True``.

Never: report a title that somebody renamed outside the WebUI as drift (the
mirror keeps such renames on purpose), or write anything without ``fix``.
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .profiles import InvalidProfile, state_db_path
from .sink import SYNC_TABLE, StateDBMissing
from .snapshot import DEFAULT_TITLE, UsageSnapshot
from .transcript import content_fingerprint

__all__ = [
    "Drift",
    "StoredRows",
    "VerifyReport",
    "compare",
    "group_by_state_db",
    "is_ahead",
    "read_rows",
    "verify",
]

# (field in the row, attribute of the snapshot); cost and title are special.
_COUNT_FIELDS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_tokens", "cache_read_tokens"),
    ("cache_write_tokens", "cache_write_tokens"),
    ("reasoning_tokens", "reasoning_tokens"),
    ("message_count", "message_count"),
)
_ROW_COLUMNS = (
    "id, source, title, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
    "reasoning_tokens, estimated_cost_usd, api_call_count, message_count, started_at"
)
_IN_CHUNK = 500  # stay well under SQLite's bound-parameter limit


@dataclass(frozen=True, slots=True)
class Drift:
    """One field that differs: what the WebUI has, what state.db has."""

    field: str
    webui: Any
    state_db: Any


@dataclass(slots=True)
class StoredRows:
    """The rows of some chats in one state.db, and the mirror's title memory."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    # session_id -> (title_base, title_written): what the mirror last wrote.
    titles: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    # session_id -> (live messages, content_fingerprint of them): read only when asked.
    transcripts: dict[str, tuple[int, str]] = field(default_factory=dict)

    def memory(self, session_id: str) -> tuple[tuple[str | None, str | None] | None, tuple[int, str] | None]:
        return self.titles.get(session_id), self.transcripts.get(session_id)


def _read_only(path: Path) -> sqlite3.Connection:
    # mode=ro: never creates the file; SQLite itself manages the descriptors,
    # so closing this connection does not drop locks other connections hold.
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, timeout=5.0)
    conn.row_factory = sqlite3.Row
    return conn


def read_rows(path: Path, session_ids: Iterable[str], *, transcripts: bool = False) -> StoredRows:
    """Rows for ``session_ids`` from the state.db at ``path`` (missing ones absent).

    ``transcripts`` also reads their live messages, for a content check.

    Raises StateDBMissing when there is no state.db, sqlite3.Error when it
    cannot be read.
    """
    if not Path(path).is_file():
        raise StateDBMissing(f"no state.db at {path}")
    ids = list(dict.fromkeys(session_ids))
    stored = StoredRows()
    conn = _read_only(path)
    try:
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT {_ROW_COLUMNS} FROM sessions WHERE id IN ({marks})", chunk):
                stored.rows[row["id"]] = dict(row)
        try:
            memory = conn.execute(f"SELECT session_id, title_base, title_written FROM {SYNC_TABLE}").fetchall()
        except sqlite3.OperationalError:
            memory = []  # nothing mirrored yet: the table does not exist
        wanted = stored.rows.keys()
        stored.titles = {r[0]: (r[1], r[2]) for r in memory if r[0] in wanted}
        if transcripts:
            stored.transcripts = _read_transcripts(conn, list(wanted))
    finally:
        conn.close()
    return stored


def _read_transcripts(conn: sqlite3.Connection, ids: list[str]) -> dict[str, tuple[int, str]]:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
    live = " AND active = 1" if "active" in columns else ""
    found: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        for session_id, role, content in conn.execute(
            f"SELECT session_id, role, content FROM messages WHERE session_id IN ({marks}){live} ORDER BY id", chunk
        ):
            found[session_id].append((role, content))
    return {sid: (len(found[sid]), content_fingerprint(found[sid])) for sid in ids}


def count_webui_rows(path: Path) -> int:
    """How many rows with source ``webui`` the state.db at ``path`` holds."""
    conn = _read_only(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM sessions WHERE source = 'webui'").fetchone()[0])
    finally:
        conn.close()


def _same_cost(webui: float | None, stored: Any) -> bool:
    if webui is None:
        return True  # the mirror leaves the stored cost alone when the WebUI has none
    if stored is None:
        return webui == 0.0
    return math.isclose(webui, float(stored), rel_tol=1e-9, abs_tol=1e-12)


def _title_drift(snap: UsageSnapshot, row: dict[str, Any], memory: tuple[str | None, str | None] | None) -> bool:
    wanted = snap.title
    if not wanted or wanted == DEFAULT_TITLE:
        return False
    current = row.get("title")
    if current == wanted:
        return False
    base, written = memory if memory else (None, None)
    if current is None:
        return True
    if current != written:
        return False  # renamed outside the WebUI (or titled by hermes): theirs wins
    # Ours: right if it is the WebUI's title, possibly as a lineage "X #2".
    return base != " ".join(wanted.split())


def compare(
    snap: UsageSnapshot,
    row: dict[str, Any] | None,
    memory: tuple[str | None, str | None] | None = None,
    transcript: tuple[int, str] | None = None,
) -> list[Drift]:
    """Every field where state.db does not say what the WebUI says ([] when in sync).

    When ``snap`` carries its transcript and ``transcript`` says what
    state.db holds (count, content fingerprint), the messages are compared too.
    """
    if row is None:
        return [Drift("row", "present", "missing")]
    drift = []
    for column, attribute in _COUNT_FIELDS:
        webui = getattr(snap, attribute)
        stored = row.get(column) or 0
        if webui != stored:
            drift.append(Drift(column, webui, stored))
    if snap.api_call_count is not None and snap.api_call_count != (row.get("api_call_count") or 0):
        drift.append(Drift("api_call_count", snap.api_call_count, row.get("api_call_count")))
    if not _same_cost(snap.estimated_cost_usd, row.get("estimated_cost_usd")):
        drift.append(Drift("estimated_cost_usd", snap.estimated_cost_usd, row.get("estimated_cost_usd")))
    if _title_drift(snap, row, memory):
        drift.append(Drift("title", snap.title, row.get("title")))
    if snap.transcript is not None and transcript is not None:
        rows = snap.transcript.rows
        if (len(rows), content_fingerprint((r.role, r.content) for r in rows)) != transcript:
            what = "content differs" if len(rows) == transcript[0] else f"{transcript[0]} messages"
            drift.append(Drift("transcript", f"{len(rows)} messages", what))
    return drift


def is_ahead(snap: UsageSnapshot, row: dict[str, Any] | None) -> bool:
    """True when the WebUI has more than state.db: a write was lost or is late."""
    if row is None:
        return True
    for column, attribute in _COUNT_FIELDS:
        if getattr(snap, attribute) > (row.get(column) or 0):
            return True
    if snap.api_call_count is not None and snap.api_call_count > (row.get("api_call_count") or 0):
        return True
    cost = snap.estimated_cost_usd
    if (
        cost is not None
        and cost > float(row.get("estimated_cost_usd") or 0.0)
        and not _same_cost(cost, row.get("estimated_cost_usd"))
    ):
        return True
    title = snap.title
    return bool(title and title != DEFAULT_TITLE and row.get("title") is None)


def group_by_state_db(
    snapshots: Sequence[UsageSnapshot],
) -> tuple[dict[Path, list[UsageSnapshot]], list[tuple[str, str]]]:
    """Snapshots by their profile's state.db path, and (session, reason) for refused profiles."""
    groups: dict[Path, list[UsageSnapshot]] = defaultdict(list)
    refused: list[tuple[str, str]] = []
    paths: dict[str | None, Path | None] = {}
    for snap in snapshots:
        if snap.profile not in paths:
            try:
                paths[snap.profile] = state_db_path(snap.profile)
            except InvalidProfile as exc:
                paths[snap.profile] = None
                refused.append((snap.session_id, str(exc)))
                continue
        path = paths[snap.profile]
        if path is None:
            refused.append((snap.session_id, f"invalid profile {snap.profile!r}"))
            continue
        groups[path].append(snap)
    return dict(groups), refused


@dataclass(slots=True)
class VerifyReport:
    """Per chat, what differs; plus what could not be checked."""

    checked: int = 0
    drifted: list[tuple[UsageSnapshot, list[Drift]]] = field(default_factory=list)
    unreachable: list[tuple[str, str]] = field(default_factory=list)  # (state.db or session, reason)
    fixed: int = 0
    fix_errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drifted and not self.unreachable and not self.fix_errors


def verify(
    snapshots: Sequence[UsageSnapshot],
    *,
    fix: bool = False,
    open_db: Callable[[Path], Any] | None = None,
) -> VerifyReport:
    """Compare each chat with its row; with ``fix``, re-mirror drifted chats exactly.

    After a fix the rows are read again, so ``drifted`` lists only what is
    still wrong (e.g. a title state.db refused).
    """
    report = VerifyReport()
    with_transcripts = any(s.transcript is not None for s in snapshots)
    groups, refused = group_by_state_db(snapshots)
    report.unreachable.extend(refused)
    for path, snaps in groups.items():
        try:
            stored = read_rows(path, (s.session_id for s in snaps), transcripts=with_transcripts)
        except (StateDBMissing, sqlite3.Error) as exc:
            report.unreachable.append((str(path), f"{exc} ({len(snaps)} chats not checked)"))
            continue
        report.checked += len(snaps)
        drifted = [
            (s, d) for s in snaps if (d := compare(s, stored.rows.get(s.session_id), *stored.memory(s.session_id)))
        ]
        if fix and drifted:
            drifted = _fix(path, drifted, report, open_db)
        report.drifted.extend(drifted)
    return report


def _fix(
    path: Path,
    drifted: list[tuple[UsageSnapshot, list[Drift]]],
    report: VerifyReport,
    open_db: Callable[[Path], Any] | None,
) -> list[tuple[UsageSnapshot, list[Drift]]]:
    from .backfill import open_state_db  # the patient CLI handle

    opener = open_db or open_state_db
    snaps = [s for s, _ in drifted]
    try:
        db = opener(path)
        try:
            db.write(snaps, exact=True)
        finally:
            db.close()
    except Exception as exc:  # locked for good, read-only, hermes-agent gone: say so, keep the drift
        report.fix_errors.append((str(path), f"{type(exc).__name__}: {exc}"))
        return drifted
    stored = read_rows(path, (s.session_id for s in snaps), transcripts=any(s.transcript for s in snaps))
    still = [(s, d) for s in snaps if (d := compare(s, stored.rows.get(s.session_id), *stored.memory(s.session_id)))]
    report.fixed += len(snaps) - len(still)
    return still
