"""Executing plans: the only code that writes hermes' tables.

Runs inside one write transaction (``SessionDB._execute_write`` gives it
``BEGIN IMMEDIATE`` and SessionDB's own retry): new rows in one
``executemany``, updates grouped by the columns they set, additions to
hermes-agent's own totals, titles with their collision names resolved
against hermes' unique title index, then each chat's messages
(``plan.transcript``) in chunks under the transaction's time budget, and
the records last, so a chat's row, its messages and its record commit
together or not at all.

Never: decide anything (``plan`` and ``transcripts.plan_transcript`` did),
write a column a plan did not ask for, or leave a title another session
holds (the index would refuse it).
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from .plan import ChatPlan
from .records import merge, write_records
from .schema import LAST_ACTIVITY, TITLE_SOURCE, USAGE_COPY_SQL, USAGE_DELETE_SQL
from .states import OWNED_COLUMNS, Record
from .store import in_chunks
from .titles import candidate
from .transcripts import MessageRow, TranscriptDone, TranscriptPlan, chain_end

__all__ = ["ApplyResult", "TitleAllocator", "TranscriptBudget", "apply_plans"]

_INSERT_COLUMNS = (
    "id",
    "source",
    "model",
    "billing_provider",
    "started_at",
    "ended_at",
    "end_reason",
    *OWNED_COLUMNS,
    "tool_call_count",
    "title",
)
# A new row's values in the insert's order (``plan._new_row`` holds every column, the title is added here).
_insert_values = itemgetter(*_INSERT_COLUMNS)
_INSERT_SQL = (
    f"INSERT INTO sessions ({', '.join(_INSERT_COLUMNS)}) VALUES ({', '.join('?' * len(_INSERT_COLUMNS))}) "
    "ON CONFLICT(id) DO NOTHING"
)
# Columns of hermes' newer schema a new row may carry besides those (where the database has them).
_NEWER_COLUMNS = (LAST_ACTIVITY, TITLE_SOURCE)
_MAX_COLLISION_NAMES = 10_000
# hermes-agent's append_message counted again what this layer had counted for the messages it wrote again.
_SUBTRACT_SQL = (
    "UPDATE sessions SET message_count = MAX(0, message_count - ?), "
    "tool_call_count = MAX(0, tool_call_count - ?) WHERE id = ?"
)


def _insert_sql(newer: tuple[str, ...]) -> str:
    """The insert of a new row with ``newer`` columns too (none: the plain one)."""
    if not newer:
        return _INSERT_SQL
    names = (*_INSERT_COLUMNS, *newer)
    marks = ", ".join("?" * len(names))
    return f"INSERT INTO sessions ({', '.join(names)}) VALUES ({marks}) ON CONFLICT(id) DO NOTHING"


@dataclass(slots=True)
class ApplyResult:
    """What one transaction changed."""

    rows_written: int = 0
    titles_written: int = 0
    # (session_id, why) for chats whose title could not be given
    title_problems: list[tuple[str, str]] = field(default_factory=list)
    records_written: int = 0
    # Chats whose transcript did not fit this transaction's time budget (the next one goes on).
    unfinished: list[str] = field(default_factory=list)
    # What was done of each chat's messages (the writer counts and remembers it).
    transcripts: list[TranscriptDone] = field(default_factory=list)


class TitleAllocator:
    """Gives chats free names within one transaction's batch of writes.

    Names given earlier in the batch are not in the database yet (writes
    run at the batch's end), so they are ``claimed`` here; the highest
    collision number handed out per base title is remembered, so many chats
    sharing a title cost one range query, not a scan per chat. The names
    most batches need are looked up for the whole batch at once: each base
    title, then the first collision name of those another chat needs too
    (held already, or wanted twice in the batch).
    """

    def __init__(self, conn: sqlite3.Connection, max_length: int) -> None:
        self.conn = conn
        self.max_length = max_length
        self.claimed: set[str] = set()
        self.holders: dict[str, str] = {}  # title -> id, for prefetched names
        self.prefetched: set[str] = set()
        self.highest: dict[str, int] = {}

    def prefetch(self, bases: Sequence[str]) -> None:
        seen: set[str] = set()
        twice: set[str] = set()
        for base in bases:
            (twice if base in seen else seen).add(base)
        self._look_up(list(seen))
        holders = self.holders
        self._look_up([candidate(base, 1, self.max_length) for base in seen if base in twice or base in holders])

    def _look_up(self, names: Sequence[str]) -> None:
        for chunk, marks in in_chunks(names):
            self.holders.update(
                self.conn.execute(f"SELECT title, id FROM sessions WHERE title IN ({marks})", chunk).fetchall()
            )
            self.prefetched.update(chunk)

    def taken(self, name: str, session_id: str) -> bool:
        if name in self.claimed:
            return True
        if name in self.prefetched:
            holder = self.holders.get(name)
            return holder is not None and holder != session_id
        found = self.conn.execute("SELECT 1 FROM sessions WHERE title = ? AND id != ?", (name, session_id)).fetchone()
        return found is not None

    def give(self, base: str, session_id: str) -> str | None:
        """``base``, or its first collision name no other session holds (None: none left); claimed."""
        name = self._free(base, session_id)
        if name is not None:
            self.claimed.add(name)
        return name

    def _free(self, base: str, session_id: str) -> str | None:
        for n in (0, 1):
            name = candidate(base, n, self.max_length)
            if not self.taken(name, session_id):
                return name
        start = self.highest.get(base)
        if start is None:
            start = self._highest_in_db(base, session_id)
        for n in range(start + 1, start + _MAX_COLLISION_NAMES):
            name = candidate(base, n, self.max_length)
            if not self.taken(name, session_id):
                self.highest[base] = n
                return name
        return None

    def _highest_in_db(self, base: str, session_id: str) -> int:
        """The highest n of "base (WebUI n)" another session holds (1 if none), found by SQLite."""
        stem = candidate(base, 2, self.max_length)[: -len("2)")]
        start = len(stem) + 1  # substr() counts characters from 1
        (highest,) = self.conn.execute(
            "SELECT MAX(CAST(substr(title, ?, length(title) - ? - 1) AS INTEGER)) FROM sessions "
            "WHERE title > ? AND title < ? AND id != ? AND title GLOB '*)' "
            "AND substr(title, ?, length(title) - ? - 1) NOT GLOB '*[^0-9]*'",
            (start, start - 1, stem, stem + "\uffff", session_id, start, start - 1),
        ).fetchone()
        return max(1, highest or 1)


class _RowWrites:
    """The row statements of a batch, grouped so each kind runs as one ``executemany``."""

    def __init__(self) -> None:
        self.inserts: dict[tuple[str, ...], list[tuple[Any, ...]]] = defaultdict(list)
        self.updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = defaultdict(list)
        self.additions: dict[tuple[str, ...], list[tuple[Any, ...]]] = defaultdict(list)
        self.usage: list[str] = []  # ids of the chats whose usage row is rewritten

    def add(self, plan: ChatPlan, title: str | None, result: ApplyResult) -> None:
        """The statements ``plan`` needs, its title given as ``title`` (None: none written)."""
        if plan.insert is not None:
            plan.insert["title"] = title
            if title is None:
                plan.insert.pop(TITLE_SOURCE, None)  # no name could be given: no provenance either
            newer = tuple(name for name in _NEWER_COLUMNS if name in plan.insert)
            self.inserts[newer].append((*_insert_values(plan.insert), *(plan.insert[name] for name in newer)))
            result.rows_written += 1
        elif plan.update or plan.add or title is not None or plan.usage:
            columns = dict(plan.update)
            if title is not None:
                columns["title"] = title
            elif plan.title.action == "write":
                columns.pop(TITLE_SOURCE, None)  # no name could be given: no provenance either
            if columns:
                self.updates[tuple(columns)].append((*columns.values(), plan.session_id))
            if plan.add:
                self.additions[tuple(plan.add)].append((*plan.add.values(), plan.session_id))
            result.rows_written += 1
        if title is not None:
            result.titles_written += 1
        if plan.usage:
            self.usage.append(plan.session_id)

    def execute(self, conn: sqlite3.Connection) -> None:
        for newer, params in self.inserts.items():
            conn.executemany(_insert_sql(newer), params)
        for names, params in self.updates.items():
            assignments = ", ".join(f"{name} = ?" for name in names)
            conn.executemany(f"UPDATE sessions SET {assignments} WHERE id = ?", params)
        for names, params in self.additions.items():
            assignments = ", ".join(f"{name} = COALESCE({name}, 0) + ?" for name in names)
            conn.executemany(f"UPDATE sessions SET {assignments} WHERE id = ?", params)
        # After the rows: each usage row is a copy of its row as written above.
        for chunk, marks in in_chunks(self.usage):
            conn.execute(USAGE_DELETE_SQL.format(marks=marks), chunk)
            conn.execute(USAGE_COPY_SQL.format(marks=marks), chunk)


def apply_plans(
    conn: sqlite3.Connection,
    plans: Sequence[ChatPlan],
    records: dict[str, Record],
    *,
    now: float,
    max_title_length: int,
    transcripts: TranscriptBudget | None = None,
) -> ApplyResult:
    """Execute ``plans`` on ``conn`` (inside the caller's transaction): rows, then messages, records last.

    ``transcripts``: write the chats' messages too (``plan.transcript``), under that budget.
    """
    result = ApplyResult()
    record_changes: dict[str, dict[str, Any]] = {}
    rows = _RowWrites()
    titles = TitleAllocator(conn, max_title_length)
    titles.prefetch([p.title.base for p in plans if p.title.action == "write" and p.title.base is not None])
    for plan in plans:
        changes = dict(plan.record or {})
        rows.add(plan, _resolve_title(plan, titles, result, changes), result)
        if changes:
            record_changes[plan.session_id] = changes
    rows.execute(conn)
    if transcripts is not None:
        _apply_transcripts(conn, plans, transcripts, record_changes, result)
    if record_changes:
        write_records(conn, ((sid, merge(records.get(sid), changes)) for sid, changes in record_changes.items()), now)
        result.records_written = len(record_changes)
    return result


def _resolve_title(plan: ChatPlan, titles: TitleAllocator, result: ApplyResult, changes: dict[str, Any]) -> str | None:
    """The name to write for a "write" decision, remembered in the record; None otherwise."""
    decision = plan.title
    if decision.action == "refused":
        result.title_problems.append((plan.session_id, f"title {decision.reason}"))
        return None
    if decision.action != "write" or decision.base is None:
        return None
    name = titles.give(decision.base, plan.session_id)
    if name is None:
        result.title_problems.append((plan.session_id, "no free collision name for its title"))
        return None
    changes.update(title_base=decision.base, title_written=name)
    return name


# ------------------------------------------------------------------ messages


@dataclass(slots=True)
class TranscriptBudget:
    """The time budget one write transaction writes messages under (shared by its chunks).

    ``db`` is hermes' ``SessionDB``: its own row encoder inserts the rows where it has one.
    """

    deadline: float
    db: object
    # A chat's messages were reached in this transaction: later ones wait once the budget is spent.
    started: bool = False


def _apply_transcripts(
    conn: sqlite3.Connection,
    plans: Sequence[ChatPlan],
    budget: TranscriptBudget,
    record_changes: dict[str, dict[str, Any]],
    result: ApplyResult,
) -> None:
    """Each chat's messages, after its row exists; a mirrored chat reached once the budget is spent
    waits for the next transaction (the first chat of a transaction always moves on)."""
    for plan in plans:
        transcript = plan.transcript
        if transcript is None:
            continue
        first, budget.started = not budget.started, True
        if transcript.kind == "mirror" and not first and time.perf_counter() >= budget.deadline:
            result.unfinished.append(plan.session_id)
            continue
        done, changes = _execute_transcript(conn, transcript, budget)
        result.transcripts.append(done)
        if changes:
            record_changes.setdefault(plan.session_id, {}).update(changes)
        if not done.finished:
            result.unfinished.append(plan.session_id)


def _execute_transcript(
    conn: sqlite3.Connection, plan: TranscriptPlan, budget: TranscriptBudget
) -> tuple[TranscriptDone, dict[str, Any] | None]:
    """What was done, and the record's transcript columns after it (None: they stay)."""
    if plan.kind == "left":
        return TranscriptDone(plan), None
    if plan.kind == "hand_over":
        _delete(conn, plan.delete)
        if plan.subtract[0]:
            conn.execute(_SUBTRACT_SQL, (*plan.subtract, plan.session_id))
        return TranscriptDone(plan, deleted=len(plan.delete)), plan.record
    if not plan.delete and not plan.append:
        return TranscriptDone(plan, reached=(plan.keep, plan.base)), plan.record
    deleted = _delete_tail(conn, plan, budget.deadline)
    if deleted < len(plan.delete):
        done = TranscriptDone(plan, deleted, reached=(plan.keep, plan.base), finished=False)
        return done, plan.after_deleting(deleted)
    written, current, notes = _append(conn, plan, budget)
    done = TranscriptDone(plan, deleted, written, (plan.keep + written, current), notes, written == plan.append)
    return done, plan.after_appending(written, current)


def _delete_tail(conn: sqlite3.Connection, plan: TranscriptPlan, deadline: float) -> int:
    """From the end: what stays is always a prefix of what was there."""
    deleted = 0
    for piece in plan.deletions():
        _delete(conn, piece)
        deleted += len(piece)
        if plan.bounded and deleted < len(plan.delete) and time.perf_counter() >= deadline:
            break
    return deleted


def _append(
    conn: sqlite3.Connection, plan: TranscriptPlan, budget: TranscriptBudget
) -> tuple[int, str, tuple[str, ...]]:
    """The WebUI's messages after the kept rows: (rows written, their chain, the caps that applied)."""
    written = 0
    current = plan.base
    notes: list[str] = []
    for rows in plan.insertions(notes):
        _insert(conn, budget.db, plan.session_id, rows)
        current = chain_end(rows, current)
        written += len(rows)
        if plan.bounded and written < plan.append and time.perf_counter() >= budget.deadline:
            break
    return written, current, tuple(notes)


def _insert(conn: sqlite3.Connection, db: object, session_id: str, rows: Sequence[MessageRow]) -> None:
    """Through SessionDB's own row encoder where it has one (0.18.2+); it leaves the session's counters alone."""
    insert_rows = getattr(db, "_insert_message_rows", None)
    if callable(insert_rows):
        insert_rows(conn, session_id, [row.as_message() for row in rows])
        return
    now = time.time()
    conn.executemany(
        "INSERT INTO messages (session_id, role, content, tool_call_id, tool_calls, tool_name, timestamp) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (session_id, r.role, r.content, r.tool_call_id, r.tool_calls, r.tool_name, r.timestamp or now + i * 1e-6)
            for i, r in enumerate(rows)
        ],
    )


def _delete(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    conn.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids])
