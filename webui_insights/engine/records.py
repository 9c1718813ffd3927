"""This layer's memory of each chat, kept in state.db itself (table ``webui_insights_chats``).

The record has to commit atomically with the row it describes — the version
check and the version update run in the same transaction as the row change,
so two processes, a restart or a CLI run can never apply an older state
over a newer one — so it lives in the same database. One row per chat:
owner, version and digest of the state last applied, a fingerprint of the
usage columns as last written, the title last written (and the WebUI title
it stands for), what was written of the transcript, and the usage the agent
reported that the WebUI does not keep.

``transcript_chain`` is the fingerprint chain of the messages written; while
a long rewrite is still deleting the old tail it reads ``"<kept>:<chain>"``
(``transcripts.TranscriptWriter``).

It is a table of its own that no hermes code reads: hermes' migrations
(``SessionDB`` opening a state.db of an older release), ``hermes sessions
delete/prune/rename/export`` and ``hermes insights`` ignore it (tested on
every supported release), and deleting a chat in hermes leaves its record,
which is how a deletion is told apart from a chat never mirrored.

An earlier release kept title and transcript memory in
``webui_insights_sync``; it is folded in (owner "mirror") the first time a
write transaction runs, and read as a fallback until then.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from .states import Ledger, Record, Version

__all__ = ["TABLE", "LEGACY_TABLE", "ensure_table", "record_tables", "read_records", "write_records", "merge"]

TABLE = "webui_insights_chats"
LEGACY_TABLE = "webui_insights_sync"
_CREATE = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    session_id TEXT PRIMARY KEY,
    owner TEXT,
    version_updated REAL,
    version_observed REAL,
    digest TEXT,
    written TEXT,
    message_count INTEGER NOT NULL DEFAULT 0,
    title_base TEXT,
    title_written TEXT,
    transcript_count INTEGER NOT NULL DEFAULT 0,
    transcript_chain TEXT,
    ledger_cache_read INTEGER NOT NULL DEFAULT 0,
    ledger_cache_write INTEGER NOT NULL DEFAULT 0,
    ledger_reasoning INTEGER NOT NULL DEFAULT 0,
    ledger_api_calls INTEGER NOT NULL DEFAULT 0,
    ledger_prompt INTEGER NOT NULL DEFAULT 0,
    ledger_completion INTEGER NOT NULL DEFAULT 0,
    ledger_cost REAL NOT NULL DEFAULT 0,
    deleted_at REAL,
    changed_at REAL
)"""
_COLUMNS = (
    "session_id, owner, version_updated, version_observed, digest, written, message_count, title_base, "
    "title_written, transcript_count, transcript_chain, ledger_cache_read, ledger_cache_write, "
    "ledger_reasoning, ledger_api_calls, ledger_prompt, ledger_completion, ledger_cost, deleted_at"
)
_UPSERT = (
    f"INSERT OR REPLACE INTO {TABLE} ({_COLUMNS}, changed_at) VALUES "
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The same for a record whose transcript, ledger and deletion are the
# columns' defaults (0 / NULL): the row is the same, with half the values.
_UPSERT_PLAIN = (
    f"INSERT OR REPLACE INTO {TABLE} (session_id, owner, version_updated, version_observed, digest, written, "
    "message_count, title_base, title_written, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_IN_CHUNK = 500  # well under SQLite's bound-parameter limit


def record_tables(conn: sqlite3.Connection) -> frozenset[str]:
    """Which of ``TABLE`` and ``LEGACY_TABLE`` the database has."""
    return frozenset(
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)", (TABLE, LEGACY_TABLE)
        )
    )


def ensure_table(conn: sqlite3.Connection) -> frozenset[str]:
    """Create the table (inside the caller's write transaction) and fold in the legacy one; the tables now there."""
    present = record_tables(conn)
    if TABLE not in present:
        conn.execute(_CREATE)
    if LEGACY_TABLE in present:
        conn.execute(
            f"INSERT OR IGNORE INTO {TABLE} (session_id, owner, title_base, title_written, transcript_count, "
            f"transcript_chain, changed_at) SELECT session_id, 'mirror', title_base, title_written, "
            f"COALESCE(transcript_count, 0), transcript_hash, updated_at FROM {LEGACY_TABLE}"
        )
        conn.execute(f"DROP TABLE {LEGACY_TABLE}")
    return frozenset({TABLE})


def _from_row(values: Sequence[Any]) -> Record:
    (
        _sid,
        owner,
        v_updated,
        v_observed,
        digest,
        written,
        message_count,
        title_base,
        title_written,
        transcript_count,
        transcript_chain,
        l_read,
        l_write,
        l_reasoning,
        l_calls,
        l_prompt,
        l_completion,
        l_cost,
        deleted_at,
    ) = values
    return Record(
        owner=owner,
        version=Version(v_updated, v_observed) if v_updated is not None and v_observed is not None else None,
        digest=digest,
        written=written,
        message_count=message_count or 0,
        title_base=title_base,
        title_written=title_written,
        transcript_count=transcript_count or 0,
        transcript_chain=transcript_chain,
        ledger=Ledger(
            l_read or 0, l_write or 0, l_reasoning or 0, l_calls or 0, l_prompt or 0, l_completion or 0, l_cost or 0.0
        ),
        deleted_at=deleted_at,
    )


def read_records(
    conn: sqlite3.Connection, session_ids: Iterable[str], tables: frozenset[str] | None = None
) -> dict[str, Record]:
    """The records of ``session_ids`` that exist (works on a read-only connection).

    ``tables``: ``record_tables(conn)`` when the caller knows it already (a
    query fewer for each of a transaction's chunks).
    """
    ids = list(session_ids)
    present = record_tables(conn) if tables is None else tables
    found: dict[str, Record] = {}
    if TABLE in present:
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for values in conn.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE session_id IN ({marks})", chunk):
                found[values[0]] = _from_row(values)
    if LEGACY_TABLE in present:
        missing = [i for i in ids if i not in found]
        for start in range(0, len(missing), _IN_CHUNK):
            chunk = missing[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
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


def write_records(conn: sqlite3.Connection, records: Iterable[tuple[str, Record]], now: float) -> None:
    """Store whole records (inside the caller's write transaction).

    Most records (every chat of a first backfill) have no transcript,
    ledger or deletion yet: those are written without the columns that
    keep their defaults, which binds half the values (a backfill writes
    tens of thousands a second).
    """
    plain: list[tuple[Any, ...]] = []
    full: list[tuple[Any, ...]] = []
    for session_id, r in records:
        version = r[1]
        # owner, version (2 columns), digest, written, message_count, title_base, title_written
        head = (session_id, r[0], *(version if version is not None else _NO_VERSION), *r[2:7])
        if r[7:] == _DEFAULT_TAIL:
            plain.append((*head, now))
        else:  # transcript_count, transcript_chain, the ledger (7 columns), deleted_at
            full.append((*head, r[7], r[8], *r[9], r[10], now))
    if plain:
        conn.executemany(_UPSERT_PLAIN, plain)
    if full:
        conn.executemany(_UPSERT, full)


_NO_VERSION = (None, None)
# transcript_count, transcript_chain, ledger, deleted_at as the table's defaults have them
_DEFAULT_TAIL = Record()[7:]
