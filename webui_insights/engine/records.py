"""This layer's memory of each chat, kept in state.db itself (table ``webui_insights_chats``).

The record has to commit atomically with the row it describes — the version
check and the version update run in the same transaction as the row change,
so two processes, a restart or a CLI run can never apply an older state
over a newer one — so it lives in the same database. One row per chat:
owner, version and digest of the state last applied, the chat's figures as
last seen and what it spent itself, when it last had activity, the title
last written (and the WebUI title it stands for), what was written of the
transcript, and the usage the agent reported (and how much of it is in the
row already).

``transcript_chain`` is the fingerprint chain of the messages written; while
a long rewrite is still deleting the old tail it reads ``"<kept>:<chain>"``
(``transcripts.TranscriptPlan``).

It is a table of its own that no hermes code reads: hermes' migrations
(``SessionDB`` opening a state.db of an older release), ``hermes sessions
delete/prune/rename/export`` and ``hermes insights`` ignore it (tested on
every supported release), and deleting a chat in hermes leaves its record,
which is how a deletion is told apart from a chat never mirrored.

Its form is versioned (``FORMAT``, per record): a record from an earlier
release gets the columns it lacks the first time a write transaction runs
(read as unknown until then); one written by a newer release, or whose
values are not of their type (edited or damaged by someone), is never
guessed at — the chat is left alone and the reason counted (``Record.problem``).
An earlier release kept title and transcript memory in
``webui_insights_sync``; it is folded in (owner "mirror") the first time a
write transaction runs, and read as a fallback until then.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from typing import Any, NamedTuple

from .states import Counters, Ledger, Record, Version
from .store import in_chunks

__all__ = [
    "TABLE",
    "LEGACY_TABLE",
    "FORMAT",
    "RecordTables",
    "ensure_table",
    "record_tables",
    "read_records",
    "write_records",
    "merge",
]

TABLE = "webui_insights_chats"
LEGACY_TABLE = "webui_insights_sync"
# The form of the records this release writes; an earlier release's are NULL (1) or lower.
FORMAT = 2
_OWNERS = frozenset({"mirror", "hermes", "foreign"})

# Every column, in the order this release reads and writes them, with its type.
_SCHEMA = (
    ("session_id", "TEXT PRIMARY KEY"),
    ("owner", "TEXT"),
    ("version_updated", "REAL"),
    ("version_observed", "REAL"),
    ("digest", "TEXT"),
    ("written", "TEXT"),  # an earlier release's; written NULL, which it reads as "nothing known"
    ("message_count", "INTEGER NOT NULL DEFAULT 0"),
    ("title_base", "TEXT"),
    ("title_written", "TEXT"),
    ("transcript_count", "INTEGER NOT NULL DEFAULT 0"),
    ("transcript_chain", "TEXT"),
    ("ledger_cache_read", "INTEGER NOT NULL DEFAULT 0"),
    ("ledger_cache_write", "INTEGER NOT NULL DEFAULT 0"),
    ("ledger_reasoning", "INTEGER NOT NULL DEFAULT 0"),
    ("ledger_api_calls", "INTEGER NOT NULL DEFAULT 0"),
    ("ledger_prompt", "INTEGER NOT NULL DEFAULT 0"),
    ("ledger_completion", "INTEGER NOT NULL DEFAULT 0"),
    ("ledger_cost", "REAL NOT NULL DEFAULT 0"),
    ("deleted_at", "REAL"),
    ("changed_at", "REAL"),
    # Added by FORMAT 2 (ALTER TABLE on a table an earlier release made).
    ("format", "INTEGER"),
    ("seen", "TEXT"),
    ("grown", "TEXT"),
    ("ledger_base", "TEXT"),
    ("state_growth", "TEXT"),
    ("active_at", "REAL"),
    ("ledger_applied", "TEXT"),
)
_NAMES = tuple(name for name, _ in _SCHEMA)
_ADDED = _NAMES[_NAMES.index("format") :]
_CREATE = f"CREATE TABLE IF NOT EXISTS {TABLE} (\n    " + ",\n    ".join(f"{n} {t}" for n, t in _SCHEMA) + "\n)"
_READ = tuple(name for name in _NAMES if name not in ("written", "changed_at"))
_WRITE = _READ + ("written", "changed_at")
_UPSERT = f"INSERT OR REPLACE INTO {TABLE} ({', '.join(_WRITE)}) VALUES ({', '.join('?' * len(_WRITE))})"


class RecordTables(NamedTuple):
    """Which of ``TABLE`` and ``LEGACY_TABLE`` a database has, and the columns of ``TABLE`` this release reads.

    Looked at once per transaction (or read-only pass) and handed to every
    chunk's ``read_records``: neither can change while it lasts.
    """

    present: frozenset[str]
    columns: tuple[str, ...] = ()  # of ``_READ``, those ``TABLE`` has (a table an earlier release made lacks some)


def _present(conn: sqlite3.Connection) -> frozenset[str]:
    return frozenset(
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)", (TABLE, LEGACY_TABLE)
        )
    )


def _columns(conn: sqlite3.Connection) -> frozenset[str]:
    return frozenset(row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})"))


def _read_of(have: frozenset[str]) -> tuple[str, ...]:
    return tuple(name for name in _READ if name in have)


def record_tables(conn: sqlite3.Connection) -> RecordTables:
    """Which of this layer's tables the database has, and the columns read from ``TABLE``."""
    present = _present(conn)
    if TABLE not in present:
        return RecordTables(present)
    return RecordTables(present, _read_of(_columns(conn)))


def ensure_table(conn: sqlite3.Connection) -> RecordTables:
    """Create the table or add the columns it lacks (inside the caller's write transaction), fold in the legacy one.

    Returns the tables now there (``TABLE`` alone).
    """
    present = _present(conn)
    if TABLE not in present:
        conn.execute(_CREATE)
        have = frozenset(_NAMES)
    else:
        have = _columns(conn)
        for name, kind in _SCHEMA:
            if name in _ADDED and name not in have:
                conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} {kind}")
        have |= frozenset(_ADDED)
    if LEGACY_TABLE in present:
        conn.execute(
            f"INSERT OR IGNORE INTO {TABLE} (session_id, owner, title_base, title_written, transcript_count, "
            f"transcript_chain, changed_at) SELECT session_id, 'mirror', title_base, title_written, "
            f"COALESCE(transcript_count, 0), transcript_hash, updated_at FROM {LEGACY_TABLE}"
        )
        conn.execute(f"DROP TABLE {LEGACY_TABLE}")
    return RecordTables(frozenset({TABLE}), _read_of(have))


class _Damaged(ValueError):
    """A stored value that is not of its column's type."""


def _real(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if type(value) in (int, float) and math.isfinite(value):
        return float(value)
    raise _Damaged(name)


def _count(value: Any, name: str) -> int:
    if value is None:
        return 0
    if type(value) is int and value >= 0:
        return value
    if type(value) is float and value.is_integer() and value >= 0:
        return int(value)
    raise _Damaged(name)


def _text(value: Any, name: str) -> str | None:
    if value is None or type(value) is str:
        return value
    raise _Damaged(name)


def encode_figures(values: tuple[Any, ...]) -> str:
    """Counters or a Ledger as one short text (``repr`` of a float round-trips exactly)."""
    return "|".join(map(repr, values))


def _encoded(values: tuple[Any, ...] | None) -> str | None:
    return None if values is None else encode_figures(values)


def _figures(kind: Any, text: Any, name: str) -> Any:
    """A ``Counters`` or ``Ledger`` from its text; None for NULL."""
    if text is None:
        return None
    if type(text) is not str:
        raise _Damaged(name)
    parts = text.split("|")
    if len(parts) != len(kind._fields):
        raise _Damaged(name)
    values: list[int | float] = []
    for part, default in zip(parts, kind._field_defaults.values(), strict=True):
        try:
            value: int | float = float(part) if type(default) is float else int(part)
        except ValueError:
            raise _Damaged(name) from None
        if not math.isfinite(value) or value < 0:
            raise _Damaged(name)
        values.append(value)
    return kind._make(values)


def _from_row(values: dict[str, Any]) -> Record:
    """A record from its stored values; a ``problem`` instead where they cannot be trusted."""
    fmt = values.get("format")
    if type(fmt) is int and fmt > FORMAT:
        return Record(problem="record_newer_release")
    try:
        owner = _text(values["owner"], "owner")
        if owner is not None and owner not in _OWNERS:
            raise _Damaged("owner")
        v_updated = _real(values["version_updated"], "version_updated")
        v_observed = _real(values["version_observed"], "version_observed")
        return Record(
            owner=owner,  # type: ignore[arg-type]
            version=Version(v_updated, v_observed) if v_updated is not None and v_observed is not None else None,
            digest=_text(values["digest"], "digest"),
            message_count=_count(values["message_count"], "message_count"),
            title_base=_text(values["title_base"], "title_base"),
            title_written=_text(values["title_written"], "title_written"),
            transcript_count=_count(values["transcript_count"], "transcript_count"),
            transcript_chain=_text(values["transcript_chain"], "transcript_chain"),
            ledger=Ledger(
                _count(values["ledger_cache_read"], "ledger"),
                _count(values["ledger_cache_write"], "ledger"),
                _count(values["ledger_reasoning"], "ledger"),
                _count(values["ledger_api_calls"], "ledger"),
                _count(values["ledger_prompt"], "ledger"),
                _count(values["ledger_completion"], "ledger"),
                _real(values["ledger_cost"], "ledger") or 0.0,
            ),
            deleted_at=_real(values["deleted_at"], "deleted_at"),
            seen=_figures(Counters, values.get("seen"), "seen"),
            grown=_figures(Counters, values.get("grown"), "grown"),
            ledger_base=_figures(Counters, values.get("ledger_base"), "ledger_base"),
            state_growth=_figures(Counters, values.get("state_growth"), "state_growth"),
            active_at=_real(values.get("active_at"), "active_at"),
            ledger_applied=_figures(Ledger, values.get("ledger_applied"), "ledger_applied"),
        )
    except _Damaged:
        return Record(problem="record_damaged")


def read_records(
    conn: sqlite3.Connection, session_ids: Iterable[str], tables: RecordTables | None = None
) -> dict[str, Record]:
    """The records of ``session_ids`` that exist (works on a read-only connection).

    ``tables``: ``record_tables(conn)`` or ``ensure_table(conn)`` when the
    caller knows it already (two queries fewer for each of a transaction's chunks).
    """
    ids = list(session_ids)
    present, names = record_tables(conn) if tables is None else tables
    found: dict[str, Record] = {}
    if TABLE in present:
        for chunk, marks in in_chunks(ids):
            query = f"SELECT {', '.join(names)} FROM {TABLE} WHERE session_id IN ({marks})"
            for values in conn.execute(query, chunk):
                stored = dict(zip(names, values, strict=True))
                found[stored["session_id"]] = _from_row(stored)
    if LEGACY_TABLE in present:
        missing = [i for i in ids if i not in found]
        for chunk, marks in in_chunks(missing):
            for sid, base, written, count, chain in conn.execute(
                f"SELECT session_id, title_base, title_written, transcript_count, transcript_hash "
                f"FROM {LEGACY_TABLE} WHERE session_id IN ({marks})",
                chunk,
            ):
                found[sid] = Record(
                    owner="mirror",
                    title_base=base,
                    title_written=written,
                    transcript_count=count or 0,
                    transcript_chain=chain,
                )
    return found


def merge(record: Record | None, changes: dict[str, Any]) -> Record:
    """``record`` with ``changes`` (field name → value) applied."""
    if record is None:  # a chat seen for the first time (every chat of a first backfill): no copy to make
        return Record(**changes)
    return record._replace(**changes)


def _stored(session_id: str, r: Record, now: float) -> tuple[Any, ...]:
    """A record's values in ``_WRITE``'s order."""
    version = r.version
    ledger = r.ledger
    return (
        session_id,
        r.owner,
        version.updated_at if version is not None else None,
        version.observed if version is not None else None,
        r.digest,
        r.message_count,
        r.title_base,
        r.title_written,
        r.transcript_count,
        r.transcript_chain,
        ledger.cache_read_tokens,
        ledger.cache_write_tokens,
        ledger.reasoning_tokens,
        ledger.api_calls,
        ledger.prompt_tokens,
        ledger.completion_tokens,
        ledger.cost_usd,
        r.deleted_at,
        FORMAT,
        _encoded(r.seen),
        _encoded(r.grown),
        _encoded(r.ledger_base),
        _encoded(r.state_growth),
        r.active_at,
        _encoded(r.ledger_applied),
        None,  # written
        now,
    )


def write_records(conn: sqlite3.Connection, records: Iterable[tuple[str, Record]], now: float) -> None:
    """Store whole records (inside the caller's write transaction, after ``ensure_table``)."""
    conn.executemany(_UPSERT, [_stored(session_id, r, now) for session_id, r in records])
