"""The only module that talks to hermes-agent's ``hermes_state``.

Owns how a usage snapshot becomes a ``sessions`` row: one row per chat with
source ``webui``, totals set (never added), ``started_at`` taken from the chat's
own creation time, the WebUI title written only where nobody renamed the row
elsewhere. Many snapshots go into one short ``BEGIN IMMEDIATE`` transaction,
run by ``SessionDB``'s own write helper (its retry, rollback and checkpoint
cadence), so the mirror costs the other hermes writers one brief lock hold
instead of four per chat.

Never: create a state.db that does not exist, open state.db or its ``-wal`` /
``-shm`` as plain files (closing such a descriptor drops the SQLite locks other
connections of this process hold), checkpoint or VACUUM on its own, or keep a
read transaction open.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .snapshot import DEFAULT_TITLE, UsageSnapshot
from .transcript import EMPTY_CHAIN, MessageRow, TranscriptDelta, chain

__all__ = [
    "HermesStateUnavailable",
    "StateDBMissing",
    "FatalDBError",
    "Capabilities",
    "WriteResult",
    "StateDB",
    "hermes_state",
    "hermes_agent_version",
    "is_retryable",
]

SOURCE = "webui"
# Our memory of what we last wrote, kept beside hermes' tables in the same
# database so it survives restarts and commits atomically with the row.
SYNC_TABLE = "webui_insights_sync"
_SYNC_TABLE_SQL = f"""CREATE TABLE IF NOT EXISTS {SYNC_TABLE} (
    session_id TEXT PRIMARY KEY,
    title_base TEXT,
    title_written TEXT,
    transcript_count INTEGER,
    transcript_hash TEXT,
    updated_at REAL
)"""
# Messages inserted between two looks at the transaction's time budget
# (hermes' full-text triggers make each insert cost ~0.15 ms here).
_MESSAGE_CHUNK = 50
_FALLBACK_MAX_TITLE = 100


class HermesStateUnavailable(ImportError):
    """hermes-agent is not installed (or its hermes_state does not import)."""


class StateDBMissing(FileNotFoundError):
    """No state.db at the resolved path; we never create one."""


class FatalDBError(Exception):
    """An error that retrying cannot fix: the file is not (or no longer) a database."""


_FATAL_MARKERS = ("file is not a database", "malformed", "database corrupt", "file is encrypted")


def is_retryable(exc: BaseException) -> bool:
    """Locked, busy, full, read-only, I/O: a later attempt may succeed."""
    if isinstance(exc, FatalDBError):
        return False
    if isinstance(exc, sqlite3.DatabaseError):
        text = str(exc).lower()
        return not any(marker in text for marker in _FATAL_MARKERS)
    return isinstance(exc, OSError)


_module_cache: dict[str, ModuleType | None] = {}


def hermes_state() -> ModuleType:
    """Import ``hermes_state`` once; raise HermesStateUnavailable if absent."""
    if "hermes_state" not in _module_cache:
        try:
            _module_cache["hermes_state"] = importlib.import_module("hermes_state")
        except ImportError:
            _module_cache["hermes_state"] = None
        except Exception as exc:
            # Not "absent": e.g. imported for the first time while the
            # interpreter shuts down. Say so, and let a later call try again.
            raise HermesStateUnavailable(f"hermes_state could not be imported: {type(exc).__name__}: {exc}") from exc
    module = _module_cache["hermes_state"]
    if module is None or not hasattr(module, "SessionDB"):
        raise HermesStateUnavailable("hermes-agent is not installed: pip install 'webui-insights[hermes]'")
    return module


def forget_hermes_state() -> None:
    """Let the next call import again (after installing hermes-agent, or in tests)."""
    _module_cache.clear()


def hermes_agent_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("hermes-agent")
    except Exception:
        return None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What this SessionDB offers; decided once per handle."""

    batched_write: bool
    sanitize_title: bool
    max_title_length: int
    degraded: tuple[str, ...] = ()

    @classmethod
    def detect(cls, db: Any) -> Capabilities:
        """What ``db`` (a SessionDB, or the SessionDB class itself) can do."""
        kind = db if isinstance(db, type) else type(db)
        degraded: list[str] = []
        execute_write = getattr(kind, "_execute_write", None)
        batched = callable(execute_write) and _takes_one_argument(execute_write, method=True)
        if not batched:
            degraded.append("no SessionDB._execute_write: one transaction per call, started_at/message_count not set")
        if not callable(getattr(kind, "_insert_message_rows", None)):
            degraded.append("no SessionDB._insert_message_rows (< 0.18.2): transcript rows use a plain INSERT")
        sanitize = callable(getattr(kind, "sanitize_title", None))
        if not sanitize:
            degraded.append("no SessionDB.sanitize_title: titles written as given")
        max_len = getattr(kind, "MAX_TITLE_LENGTH", _FALLBACK_MAX_TITLE)
        if not isinstance(max_len, int) or max_len <= 0:
            max_len = _FALLBACK_MAX_TITLE
        return cls(batched, sanitize, max_len, tuple(degraded))

    @classmethod
    def of_installed(cls) -> Capabilities:
        """The installed hermes-agent's SessionDB, without opening a database."""
        return cls.detect(hermes_state().SessionDB)


def _takes_one_argument(fn: Any, *, method: bool = False) -> bool:
    """``fn(x)`` is a valid call (``method``: ``fn(self, x)`` on the class)."""
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return False
    return len(params) == (2 if method else 1)


@dataclass(slots=True)
class WriteResult:
    """What one call to ``StateDB.write`` did."""

    written: list[UsageSnapshot] = field(default_factory=list)
    title_rejected: list[tuple[UsageSnapshot, str]] = field(default_factory=list)
    # Transcript deltas that did not fit what state.db holds (usage was written).
    resync: list[UsageSnapshot] = field(default_factory=list)
    transactions: int = 0
    max_lock_hold_s: float = 0.0


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path`` via stat(); never opens the file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class StateDB:
    """One long-lived ``SessionDB`` handle on an existing state.db.

    ``write_retries`` bounds SessionDB's own lock-retry loop for this handle
    only: the background writer wants to fail fast and back off itself (its
    sleep can be interrupted at shutdown), a CLI backfill can afford patience.
    """

    def __init__(self, path: Path, *, write_retries: int | None = None) -> None:
        module = hermes_state()
        self.path = Path(path)
        identity = file_identity(self.path)
        if identity is None or not self.path.is_file():
            raise StateDBMissing(f"no state.db at {self.path}")
        self.identity = identity
        try:
            self.db = module.SessionDB(db_path=self.path)
        except TypeError:
            self.db = module.SessionDB(self.path)
        if write_retries is not None and hasattr(type(self.db), "_WRITE_MAX_RETRIES"):
            self.db._WRITE_MAX_RETRIES = max(1, int(write_retries))
        self.capabilities = Capabilities.detect(self.db)
        self._sync_table_ready = False
        self._active_column: bool | None = None
        self._clean_titles: dict[str, str | None] = {}
        # Per transaction: title memory rows to write, last lineage number per base.
        self._memory: list[tuple[str, str, str, float]] = []
        self._lineage: dict[str, int] = {}

    # ------------------------------------------------------------ lifecycle

    def is_same_file(self) -> bool:
        """False once state.db was deleted or replaced behind our back."""
        return file_identity(self.path) == self.identity

    def close(self) -> None:
        db, self.db = self.db, None
        if db is not None:
            db.close()

    # ---------------------------------------------------------------- write

    def write(
        self,
        snapshots: Sequence[UsageSnapshot],
        *,
        exact: bool = False,
        message_count: bool = True,
        budget_s: float = 0.03,
    ) -> WriteResult:
        """Write all ``snapshots``, in as few short transactions as fit ``budget_s`` each.

        ``exact`` sets totals as given (repair); otherwise totals only move
        forward, so an older snapshot can never lower what a newer one wrote.
        Raises what SessionDB raised; snapshots of committed transactions are
        in ``result.written`` only if the call returns.
        """
        result = WriteResult()
        if not self.capabilities.batched_write:
            self._write_with_public_methods(snapshots, result)
            return result
        remaining = list(snapshots)
        while remaining:
            batch = _Transaction(self, remaining, exact=exact, message_count=message_count, budget_s=budget_s)
            self.db._execute_write(batch)
            self._sync_table_ready = True
            result.transactions += 1
            result.max_lock_hold_s = max(result.max_lock_hold_s, batch.held_s)
            result.written.extend(batch.done)
            result.title_rejected.extend(batch.rejected)
            result.resync.extend(batch.resync)
            remaining = remaining[len(batch.done) :]
            if batch.carry is not None:
                remaining.insert(0, batch.carry)
        return result

    def _write_row(
        self, conn: sqlite3.Connection, snap: UsageSnapshot, *, exact: bool, message_count: bool
    ) -> str | None:
        """Upsert one chat's row; returns why its title was refused, if it was."""
        set_count = message_count and snap.transcript is None  # with transcripts, the messages count
        clean, problem = self._wanted_title(snap)
        title = self._insert_if_new(conn, snap, clean, set_count)
        if title is not _EXISTS:
            if clean and title is None:  # another chat holds it: the next lineage title
                return self._take_title(conn, snap.session_id, clean, taken=True)
            if clean:
                self._remember_title(conn, snap.session_id, clean, clean)
            return problem
        row = conn.execute("SELECT title FROM sessions WHERE id = ?", (snap.session_id,)).fetchone()
        conn.execute(_EXACT_USAGE_SQL if exact else _FORWARD_USAGE_SQL, _usage_params(snap))
        if set_count:
            conn.execute("UPDATE sessions SET message_count = ? WHERE id = ?", (snap.message_count, snap.session_id))
        return self._write_title(conn, snap, row[0])

    def _insert_if_new(
        self, conn: sqlite3.Connection, snap: UsageSnapshot, title: str | None, set_count: bool
    ) -> str | None | object:
        """Insert a new chat with everything at once: its title (None if taken), or _EXISTS.

        The title goes in only when no other chat holds it; the INSERT does
        nothing when the chat is already there (rowcount 0). Measured here,
        ``RETURNING`` would make each INSERT about three times slower.
        """
        params = (
            snap.session_id,
            SOURCE,
            snap.model,
            snap.billing_provider,
            snap.created_at or time.time(),
            snap.input_tokens,
            snap.output_tokens,
            snap.cache_read_tokens,
            snap.cache_write_tokens,
            snap.reasoning_tokens,
            snap.estimated_cost_usd,
            snap.api_call_count or 0,
            snap.message_count if set_count else 0,
            title,
        )
        if (
            title is not None
            and conn.execute("SELECT 1 FROM sessions WHERE title = ? AND id != ?", (title, snap.session_id)).fetchone()
        ):
            params = params[:-1] + (None,)  # taken by another chat: the caller picks a lineage title
        if conn.execute(_INSERT_SQL, params).rowcount == 0:
            return _EXISTS
        return params[-1]

    def _write_transcript(
        self, conn: sqlite3.Connection, session_id: str, delta: TranscriptDelta, deadline: float, exact: bool = False
    ) -> tuple[bool, TranscriptDelta | None]:
        """Apply ``delta`` to the chat's live messages.

        Returns (fits, rest): ``fits`` is False when the delta does not start
        from what state.db holds; ``rest`` is what did not fit before
        ``deadline`` (a long transcript goes in over several short
        transactions, each leaving state.db consistent with its memory).
        """
        if delta.is_noop:
            return True, None
        memory = conn.execute(
            f"SELECT transcript_count, transcript_hash FROM {SYNC_TABLE} WHERE session_id = ?", (session_id,)
        ).fetchone()
        count, fingerprint = (memory[0] or 0, memory[1] or EMPTY_CHAIN) if memory else (0, EMPTY_CHAIN)
        if delta.full:
            links = chain(delta.rows)
            matches = 0 < count <= len(links) and links[count - 1] == fingerprint
            keep = count if matches and not exact else 0  # exact (a repair): rewrite it all
            rows = delta.rows[keep:]
            base = links[keep - 1] if keep else EMPTY_CHAIN
            if keep == 0:
                count = -1  # unknown: remove every live message before inserting
        else:
            if (count, fingerprint) != (delta.prev_count, delta.prev_chain):
                return False, None
            keep, rows, base = delta.keep, delta.rows, delta.base_chain
        live = " AND active = 1" if self._messages_have_active(conn) else ""
        if keep == 0 and count != 0:
            conn.execute(f"DELETE FROM messages WHERE session_id = ?{live}", (session_id,))
        elif keep < count:
            conn.execute(
                f"DELETE FROM messages WHERE session_id = ?{live} AND id > (SELECT id FROM messages "
                f"WHERE session_id = ?{live} ORDER BY id LIMIT 1 OFFSET ?)",
                (session_id, session_id, keep - 1),
            )
        done = 0
        while done < len(rows):
            piece = rows[done : done + _MESSAGE_CHUNK]
            self._insert_messages(conn, session_id, piece)
            done += len(piece)
            if time.perf_counter() >= deadline:
                break
        inserted = rows[:done]
        links = chain(inserted, base)
        final = links[-1] if links else base
        conn.execute(
            f"""UPDATE sessions SET
                message_count = (SELECT COUNT(*) FROM messages WHERE session_id = ?{live}),
                tool_call_count = (SELECT COALESCE(SUM(CASE
                    WHEN tool_calls IS NULL THEN 0
                    WHEN json_valid(tool_calls) AND json_type(tool_calls) = 'array' THEN json_array_length(tool_calls)
                    ELSE 1 END), 0) FROM messages WHERE session_id = ?{live})
                WHERE id = ?""",
            (session_id, session_id, session_id),
        )
        mirrored = keep + done
        conn.execute(
            f"INSERT INTO {SYNC_TABLE} (session_id, transcript_count, transcript_hash, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(session_id) DO UPDATE SET transcript_count = excluded.transcript_count, "
            "transcript_hash = excluded.transcript_hash, updated_at = excluded.updated_at",
            (session_id, mirrored, final, time.time()),
        )
        if done == len(rows):
            return True, None
        return True, TranscriptDelta(mirrored, tuple(rows[done:]), mirrored, final, final)

    def _messages_have_active(self, conn: sqlite3.Connection) -> bool:
        if self._active_column is None:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
            self._active_column = "active" in columns
        return self._active_column

    def _insert_messages(self, conn: sqlite3.Connection, session_id: str, rows: Sequence[MessageRow]) -> None:
        """Through SessionDB's own row encoder where it has one (0.18.2+)."""
        if not rows:
            return
        insert_rows = getattr(self.db, "_insert_message_rows", None)
        if callable(insert_rows):
            insert_rows(conn, session_id, [row.as_message() for row in rows])
            return
        now = time.time()
        conn.executemany(
            "INSERT INTO messages (session_id, role, content, tool_call_id, tool_calls, tool_name, timestamp) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    session_id,
                    r.role,
                    r.content,
                    r.tool_call_id,
                    r.tool_calls,
                    r.tool_name,
                    r.timestamp or now + i * 1e-6,
                )
                for i, r in enumerate(rows)
            ],
        )

    def _wanted_title(self, snap: UsageSnapshot) -> tuple[str | None, str | None]:
        """(the WebUI title as hermes would store it, or why it cannot be)."""
        wanted = snap.title
        if not wanted or wanted == DEFAULT_TITLE:
            return None, None
        try:
            return self._sanitize(wanted), None
        except ValueError as exc:
            return None, str(exc)

    def _write_title(self, conn: sqlite3.Connection, snap: UsageSnapshot, current: str | None) -> str | None:
        clean, problem = self._wanted_title(snap)
        if not clean:
            return problem
        self._flush_memory(conn)
        memory = conn.execute(
            f"SELECT title_base, title_written FROM {SYNC_TABLE} WHERE session_id = ?", (snap.session_id,)
        ).fetchone()
        last_base, last_written = (memory[0], memory[1]) if memory else (None, None)
        if current is not None and current != last_written:
            return None  # renamed outside the WebUI (hermes CLI): theirs wins
        if current is not None and last_base == clean:
            return None  # already there, possibly as "X #2"
        return self._take_title(conn, snap.session_id, clean)

    def _take_title(self, conn: sqlite3.Connection, session_id: str, clean: str, taken: bool = False) -> str | None:
        """Give the chat ``clean`` or its next free lineage title; why not, if it could not."""
        title = self._free_title(conn, clean, session_id, taken=taken)
        if title is None:
            return f"no free lineage title for a {len(clean)}-character title"
        try:
            conn.execute("UPDATE sessions SET title = ? WHERE id = ?", (title, session_id))
        except sqlite3.IntegrityError as exc:
            return f"title refused by state.db: {exc}"
        self._remember_title(conn, session_id, clean, title)
        return None

    def _remember_title(self, conn: sqlite3.Connection, session_id: str, base: str, written: str) -> None:
        """What we wrote, so a later rename elsewhere can be told apart from ours.

        Kept in a list and written with one executemany at the end of the
        transaction (or before the memory is next read).
        """
        self._memory.append((session_id, base, written, time.time()))

    def _flush_memory(self, conn: sqlite3.Connection) -> None:
        if self._memory:
            conn.executemany(
                f"INSERT INTO {SYNC_TABLE} (session_id, title_base, title_written, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(session_id) DO UPDATE SET title_base = excluded.title_base, "
                "title_written = excluded.title_written, updated_at = excluded.updated_at",
                self._memory,
            )
            self._memory.clear()

    def _sanitize(self, title: str) -> str | None:
        if (
            title.isascii()
            and title.isprintable()
            and "  " not in title
            and title[0] != " "
            and title[-1] != " "
            and len(title) <= self.capabilities.max_title_length
        ):
            # Nothing hermes' sanitize_title would change: no control,
            # zero-width or direction characters (all non-printable or
            # non-ASCII), no runs of spaces, nothing to strip, not too long.
            return title
        known = self._clean_titles.get(title, _EXISTS)
        if known is not _EXISTS:
            return known  # type: ignore[return-value]
        if self.capabilities.sanitize_title:
            cleaned: str | None = type(self.db).sanitize_title(title)
            if len(self._clean_titles) >= 4096:
                self._clean_titles.clear()
            self._clean_titles[title] = cleaned
            return cleaned
        cleaned = " ".join(title.split())
        if len(cleaned) > self.capabilities.max_title_length:
            raise ValueError(f"Title too long ({len(cleaned)} chars, max {self.capabilities.max_title_length})")
        return cleaned or None

    def _free_title(self, conn: sqlite3.Connection, base: str, session_id: str, taken: bool = False) -> str | None:
        """``base`` if no other session holds it, else the next "base #N".

        Both look-ups use the title index ("base #…" sorts between "base #"
        and "base $"), and the highest N is found by SQLite, so this stays
        cheap however many sessions and lineage titles state.db has.
        """
        if (
            not taken
            and not conn.execute("SELECT 1 FROM sessions WHERE title = ? AND id != ?", (base, session_id)).fetchone()
        ):
            return base
        prefix = base + " #"
        start = len(prefix) + 1  # substr() counts characters from 1
        (highest,) = conn.execute(
            "SELECT MAX(CAST(substr(title, ?) AS INTEGER)) FROM sessions "
            "WHERE title > ? AND title < ? AND id != ? AND substr(title, ?) NOT GLOB '*[^0-9]*'",
            (start, prefix, base + " $", session_id, start),
        ).fetchone()
        return self._lineage_title(base, max(1, highest or 1) + 1)

    def _lineage_title(self, base: str, number: int) -> str | None:
        title = f"{base} #{number}"
        if len(title) > self.capabilities.max_title_length:
            return None
        self._lineage[base] = number
        return title

    def _write_with_public_methods(self, snapshots: Iterable[UsageSnapshot], result: WriteResult) -> None:
        """Degraded path for a SessionDB without ``_execute_write``."""
        db = self.db
        for snap in snapshots:
            started = time.perf_counter()
            db.ensure_session(snap.session_id, source=SOURCE, model=snap.model)
            db.update_token_counts(snap.session_id, absolute=True, **_usage_kwargs(snap))
            result.transactions += 2
            if snap.title and snap.title != DEFAULT_TITLE and not db.get_session_title(snap.session_id):
                try:
                    db.set_session_title(snap.session_id, snap.title)
                    result.transactions += 1
                except ValueError as exc:
                    # hermes' message quotes the title; ours must not (no chat text in logs).
                    result.title_rejected.append(
                        (snap, f"refused by SessionDB.set_session_title ({type(exc).__name__})")
                    )
            result.max_lock_hold_s = max(result.max_lock_hold_s, time.perf_counter() - started)
            result.written.append(snap)


class _Transaction:
    """The work of one ``BEGIN IMMEDIATE``: as many rows as fit its time budget.

    SessionDB calls it with the connection inside its own transaction, and
    calls it again from the start if it retries, so each call starts afresh.
    """

    def __init__(
        self, owner: StateDB, snapshots: Sequence[UsageSnapshot], *, exact: bool, message_count: bool, budget_s: float
    ) -> None:
        self.owner = owner
        self.snapshots = snapshots
        self.exact = exact
        self.message_count = message_count
        self.budget_s = budget_s
        self.done: list[UsageSnapshot] = []
        self.rejected: list[tuple[UsageSnapshot, str]] = []
        self.resync: list[UsageSnapshot] = []
        self.carry: UsageSnapshot | None = None
        self.held_s = 0.0

    def __call__(self, conn: sqlite3.Connection) -> None:
        self.done, self.rejected, self.resync, self.carry = [], [], [], None
        started = time.perf_counter()
        deadline = started + self.budget_s
        self.owner._memory.clear()
        self.owner._lineage.clear()
        if not self.owner._sync_table_ready:
            conn.execute(_SYNC_TABLE_SQL)
        for snap in self.snapshots:
            owner = self.owner
            try:
                problem = owner._write_row(conn, snap, exact=self.exact, message_count=self.message_count)
            except _VALUE_ERRORS as exc:
                # A value SQLite will not bind (snapshots are validated, so
                # this is a last line of defence): refuse this chat, not the batch.
                self.done.append(snap)
                self.rejected.append((snap, f"value refused by SQLite ({type(exc).__name__})"))
                continue
            if snap.transcript is not None:
                fits, rest = owner._write_transcript(conn, snap.session_id, snap.transcript, deadline, self.exact)
                if not fits:
                    self.resync.append(snap)
                elif rest is not None:
                    self.carry = snap._replace(transcript=rest)  # the next transaction goes on
            self.done.append(snap)
            if problem:
                self.rejected.append((snap, problem))
            if self.carry is not None or time.perf_counter() >= deadline:
                break
        self.owner._flush_memory(conn)
        self.held_s = time.perf_counter() - started


_INSERT_SQL = """INSERT INTO sessions (
    id, source, model, billing_provider, started_at, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, reasoning_tokens, estimated_cost_usd,
    api_call_count, message_count, title
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO NOTHING"""
_EXISTS = object()  # _insert_if_new: the chat was already there
# Errors about one row's values, as opposed to the database's state.
_VALUE_ERRORS = (UnicodeError, ValueError, TypeError, OverflowError, sqlite3.InterfaceError, sqlite3.ProgrammingError)

# Totals move forward only: MAX() so that a late, older snapshot (another
# process, a backfill racing the live writer) can never lower them.
_FORWARD_USAGE_SQL = """UPDATE sessions SET
    input_tokens = MAX(COALESCE(input_tokens, 0), ?),
    output_tokens = MAX(COALESCE(output_tokens, 0), ?),
    cache_read_tokens = MAX(COALESCE(cache_read_tokens, 0), ?),
    cache_write_tokens = MAX(COALESCE(cache_write_tokens, 0), ?),
    reasoning_tokens = MAX(COALESCE(reasoning_tokens, 0), ?),
    estimated_cost_usd = CASE WHEN ? IS NULL THEN estimated_cost_usd
        ELSE MAX(COALESCE(estimated_cost_usd, 0), ?) END,
    api_call_count = CASE WHEN ? IS NULL THEN api_call_count
        ELSE MAX(COALESCE(api_call_count, 0), ?) END,
    model = COALESCE(model, ?),
    billing_provider = COALESCE(billing_provider, ?)
    WHERE id = ?"""

_EXACT_USAGE_SQL = """UPDATE sessions SET
    input_tokens = ?,
    output_tokens = ?,
    cache_read_tokens = ?,
    cache_write_tokens = ?,
    reasoning_tokens = ?,
    estimated_cost_usd = CASE WHEN ? IS NULL THEN estimated_cost_usd ELSE ? END,
    api_call_count = CASE WHEN ? IS NULL THEN api_call_count ELSE ? END,
    model = COALESCE(model, ?),
    billing_provider = COALESCE(billing_provider, ?)
    WHERE id = ?"""


def _usage_params(snap: UsageSnapshot) -> tuple[Any, ...]:
    return (
        snap.input_tokens,
        snap.output_tokens,
        snap.cache_read_tokens,
        snap.cache_write_tokens,
        snap.reasoning_tokens,
        snap.estimated_cost_usd,
        snap.estimated_cost_usd,
        snap.api_call_count,
        snap.api_call_count,
        snap.model,
        snap.billing_provider,
        snap.session_id,
    )


def _usage_kwargs(snap: UsageSnapshot) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "input_tokens": snap.input_tokens,
        "output_tokens": snap.output_tokens,
        "cache_read_tokens": snap.cache_read_tokens,
        "cache_write_tokens": snap.cache_write_tokens,
        "reasoning_tokens": snap.reasoning_tokens,
        "estimated_cost_usd": snap.estimated_cost_usd,
        "model": snap.model,
    }
    if snap.api_call_count is not None:
        kwargs["api_call_count"] = snap.api_call_count
    return kwargs


def create_state_db(path: Path) -> None:
    """Create an empty state.db the way a first ``hermes`` run does.

    Only the demo and tests call this; the mirror itself never creates one.
    """
    db = hermes_state().SessionDB(Path(path))
    db.close()
