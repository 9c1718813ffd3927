"""Opt-in transcripts: a chat's messages in hermes' ``messages`` table, so session search finds them.

Owns the conversion of the WebUI's message dicts into rows (role, content,
tool calls, tool name, timestamp) within size caps, and ``TranscriptWriter``,
which ``apply`` calls inside the engine's write transaction for every chat
that has a transcript. It decides from state.db itself, never from what this
process remembers sending:

- **What is there.** The chat's record (``transcript_count``,
  ``transcript_chain``) says how many live messages this layer wrote and a
  fingerprint chain of them; the row says how many live messages the chat
  has now. While the two counts agree and the chain still names the start
  of the WebUI's messages, only the new messages are inserted (the common
  case: an append). Anything else — an edit anywhere, a regenerated reply, a
  truncation, rows that vanished — reads the stored rows, keeps the common
  prefix, deletes the rest and inserts the WebUI's. When the same state is
  applied again (the reconcile sweep, ``verify --fix``, a second
  ``backfill``) and this process did not just write it, the stored rows are
  read and checked against the chain, so a changed message is repaired too.
- **Atomic where it matters.** A rewrite of up to ``ATOMIC_OPS`` rows
  (deletes plus inserts: an edit, a regenerate, a truncation of a normal
  chat) is done in one transaction, whatever the time budget says. Appends
  and larger rewrites go on over several short transactions (``False`` =
  call again; each does at least one chunk of ``_CHUNK`` rows), a rewrite
  deleting from the end first, then appending: between two of them state.db
  holds a prefix of the old transcript, then a prefix of the new one —
  never old and new mixed, never a duplicate. The record says where it got
  to (``"<kept>:<chain>"`` while the old tail is being deleted). A chat
  reached after the budget is spent waits for the next transaction (the
  first chat of a transaction always moves on).
- **Coexistence.** A chat whose messages hermes-agent writes itself
  (current WebUIs' streaming chats) is left alone (counted
  ``left_to_hermes``). If this layer had written messages before
  hermes-agent took the chat over, the ones hermes-agent wrote again (the
  tail of ours that its first rows repeat) are removed once hermes-agent
  has written them, with the message and tool-call counts they added, so
  no message is there or counted twice; the others stay (a chat mirrored
  long ago and resumed in hermes keeps its history).

Caps, counted in ``stats()["transcripts"]``: a message longer than
``MAX_MESSAGE_CHARS`` characters is cut (``messages_cut``); an inline
base64 ``data:`` URL (a pasted image or file) becomes
``ATTACHMENT_PLACEHOLDER`` (``attachments_omitted``); a chat's first
``MAX_MESSAGES_PER_CHAT`` messages are mirrored (``chats_capped``). Other
counters: ``messages_written``, ``messages_deleted``, ``rewrites``,
``repaired`` (stored rows that no longer matched what this layer wrote),
``continued`` (a write that went on in the next transaction),
``duplicates_removed``, ``handed_over``.

The only memory kept between calls is, per chat, (count, a quick hash of
the WebUI's messages, chain) of the messages last written: three values,
bounded to ``_MEMORY_LIMIT`` chats, no reference to the host's objects. It
only spares re-converting an unchanged prefix; without it (a restart,
another process) the chain is recomputed, with the same result.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..snapshot import scrub_surrogates
from .plan import Drift
from .states import same_state

if TYPE_CHECKING:
    from ..diagnostics import Stats
    from .plan import ChatPlan
    from .states import Desired, Record

__all__ = [
    "MessageRow",
    "TranscriptWriter",
    "to_row",
    "chain",
    "read_stored_rows",
    "MAX_MESSAGE_CHARS",
    "MAX_MESSAGES_PER_CHAT",
    "ATTACHMENT_PLACEHOLDER",
    "ATOMIC_OPS",
]

# A longer message is cut, and an inline data: URL (a pasted image or file)
# becomes a short placeholder: state.db is for search and counts, not for
# megabytes of base64.
MAX_MESSAGE_CHARS = 64_000
MAX_MESSAGES_PER_CHAT = 20_000
ATTACHMENT_PLACEHOLDER = "[inline attachment omitted]"
_DATA_URL = re.compile(r"data:[\w.+-]+/[\w.+-]+;base64,[A-Za-z0-9+/=]{256,}")
EMPTY_CHAIN = ""
# Rewrites of at most this many rows (deletes + inserts) are done in one
# transaction whatever the budget: an edit, a regenerate or a truncation of a
# chat of normal length is never visible half done. hermes' full-text
# triggers make a row cost ~0.07–0.15 ms here, so this is 15–30 ms of lock.
ATOMIC_OPS = 200
# Rows deleted or inserted between two looks at the transaction's time budget.
_CHUNK = 20
_MEMORY_LIMIT = 10_000
# How far back a duplicate of hermes-agent's first rows is looked for.
_HANDOVER_WINDOW = 200
_STORED_COLUMNS = "id, role, content, tool_calls, tool_call_id, tool_name"


class MessageRow(NamedTuple):
    """One message, as hermes' ``messages`` table keeps it."""

    role: str
    content: str | None
    tool_calls: str | None  # JSON text, as SessionDB stores it
    tool_call_id: str | None
    tool_name: str | None
    timestamp: float | None

    def as_message(self) -> dict[str, Any]:
        """The dict shape SessionDB's message writers take."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = json.loads(self.tool_calls)
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        if self.tool_name:
            message["tool_name"] = self.tool_name
        if self.timestamp is not None:
            message["timestamp"] = self.timestamp
        return message


# ------------------------------------------------------------------ conversion


def _text(value: Any, limit: int, notes: list[str] | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    text: str = value
    if not text.isascii():
        text = scrub_surrogates(text)
    if len(text) > 256 and "base64," in text:
        text, found = _DATA_URL.subn(ATTACHMENT_PLACEHOLDER, text)
        if found and notes is not None:
            notes.extend(["attachments_omitted"] * found)
    if len(text) > limit:
        text = text[:limit] + f" [… {len(text) - limit} characters omitted]"
        if notes is not None:
            notes.append("messages_cut")
    return text


def _content(content: Any, notes: list[str] | None) -> str | None:
    if isinstance(content, list):
        # Multi-part content: the text parts, and a name for each other part.
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type', 'attachment')}]")
            else:
                parts.append(str(part))
        content = "\n".join(parts)
    return _text(content, MAX_MESSAGE_CHARS, notes)


def _timestamp(message: dict[str, Any]) -> float | None:
    for key in ("timestamp", "created_at", "ts"):
        value = message.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def to_row(message: Any, notes: list[str] | None = None) -> MessageRow:
    """A WebUI message as a row; every message becomes exactly one row.

    ``notes`` collects the caps that applied ("messages_cut", "attachments_omitted").
    """
    if not isinstance(message, dict):
        return MessageRow("unknown", _text(message, MAX_MESSAGE_CHARS, notes), None, None, None, None)
    role = message.get("role")
    tool_calls = message.get("tool_calls")
    return MessageRow(
        role if isinstance(role, str) and role else "unknown",
        _content(message.get("content"), notes),
        json.dumps(tool_calls, default=str) if tool_calls else None,  # ASCII: escapes lone surrogates
        _text(message.get("tool_call_id"), 200),
        _text(message.get("name") or message.get("tool_name"), 200),
        _timestamp(message),
    )


def chain(rows: Iterable[Sequence[Any]], start: str = EMPTY_CHAIN) -> list[str]:
    """The fingerprint after each row: ``chain(rows)[k - 1]`` names ``rows[:k]``.

    A row is (role, content, tool_calls, tool_call_id, tool_name, ...): a
    ``MessageRow`` and a stored row's columns give the same links.
    """
    links = []
    current = start
    for row in rows:
        current = _link(current, row)
        links.append(current)
    return links


def _link(current: str, row: Sequence[Any]) -> str:
    digest = hashlib.blake2b(current.encode(), digest_size=16)
    digest.update(repr(tuple(row[:5])).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _chain_end(rows: Iterable[Sequence[Any]], start: str = EMPTY_CHAIN) -> str:
    current = start
    for row in rows:
        current = _link(current, row)
    return current


def _stored_chain(stored_rows: Iterable[Sequence[Any]]) -> str:
    """The chain of stored rows as ``read_stored_rows`` gives them (their id first)."""
    return _chain_end(row[1:6] for row in stored_rows)


def _quick_key(message: Any) -> Any:
    """A cheap per-message key (string hashes are cached): spots an unchanged prefix without converting it."""
    if type(message) is not dict:
        return repr(message)
    content = message.get("content")
    calls = message.get("tool_calls")
    return (
        message.get("role"),
        content if content is None or type(content) is str else repr(content),
        None if calls is None else repr(calls),
        message.get("tool_call_id"),
        message.get("name") or message.get("tool_name"),
    )


class _Quick:
    """Quick hashes of the prefixes of the WebUI's messages: one pass per call, only as far as asked."""

    __slots__ = ("messages", "hashes")

    def __init__(self, messages: Sequence[Any]) -> None:
        self.messages = messages
        self.hashes = [0]

    def of(self, count: int) -> int:
        """The quick hash of ``messages[:count]``."""
        hashes = self.hashes
        if count >= len(hashes):
            current = hashes[-1]
            for message in self.messages[len(hashes) - 1 : count]:
                current = hash((current, _quick_key(message)))
                hashes.append(current)
        return hashes[count]


# ------------------------------------------------------------------ state.db


def read_stored_rows(conn: sqlite3.Connection, session_id: str, active: bool) -> list[tuple[Any, ...]]:
    """(id, role, content, tool_calls, tool_call_id, tool_name) of a chat's live messages, in order."""
    live = " AND active = 1" if active else ""
    return conn.execute(
        f"SELECT {_STORED_COLUMNS} FROM messages WHERE session_id = ?{live} ORDER BY id", (session_id,)
    ).fetchall()


def _last_ids(conn: sqlite3.Connection, session_id: str, active: bool, n: int) -> list[int]:
    """The ids of a chat's ``n`` newest live messages, newest first."""
    live = " AND active = 1" if active else ""
    return [
        row[0]
        for row in conn.execute(
            f"SELECT id FROM messages WHERE session_id = ?{live} ORDER BY id DESC LIMIT ?", (session_id, n)
        )
    ]


def _insert(conn: sqlite3.Connection, db: Any, session_id: str, rows: Sequence[MessageRow]) -> None:
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


def _progress(text: str | None, count: int) -> tuple[int, str] | None:
    """The record's chain as (kept, chain of the first ``kept`` rows); None when it makes no sense.

    A plain chain names all ``count`` rows; ``"<kept>:<chain>"`` says the rows
    after the first ``kept`` are an old tail still being deleted.
    """
    text = text or EMPTY_CHAIN
    if ":" not in text:
        return count, text
    kept, _, rest = text.partition(":")
    if not kept.isdigit() or int(kept) > count:
        return None
    return int(kept), rest


def _same_message(ours: tuple[Any, ...], theirs: tuple[Any, ...], partial: bool) -> bool:
    """(role, content) equal; ``partial``: our copy may be the start of a reply hermes-agent finished."""
    if ours[1] != theirs[1]:
        return False
    mine, full = ours[2] or "", theirs[2] or ""
    return mine == full or (partial and ours[1] == "assistant" and full.startswith(mine))


def _duplicated_tail(ours: Sequence[tuple[Any, ...]], theirs: Sequence[tuple[Any, ...]]) -> tuple[int, bool]:
    """How many of our last rows hermes-agent's first rows repeat; and whether to wait for more of its rows.

    Waiting: all of hermes-agent's rows so far repeat a stretch of ours that
    goes on (it is still writing the turn we had mirrored).
    """
    window = list(ours[-_HANDOVER_WINDOW:])
    n, m = len(window), len(theirs)
    for k in range(min(n, m), 0, -1):
        if all(_same_message(window[n - k + i], theirs[i], i == k - 1) for i in range(k)):
            return k, False
    for k in range(m + 1, n + 1):
        if all(_same_message(window[n - k + i], theirs[i], False) for i in range(m)):
            return 0, True
    return 0, False


# ------------------------------------------------------------------ writing


class TranscriptWriter:
    """Brings a mirror-owned chat's live messages to the WebUI's; called by ``apply`` in its transaction.

    One instance per writer (the live writer thread, one CLI run, one sweep
    pass); not shared between threads.
    """

    def __init__(self, stats: Stats | None = None) -> None:
        self._stats = stats
        # session id -> (count, quick hash of the WebUI's first `count` messages, chain)
        self._memory: OrderedDict[str, tuple[int, int, str]] = OrderedDict()
        self._deadline: float | None = None

    def _count(self, name: str, n: int = 1) -> None:
        if self._stats is not None and n:
            self._stats.incr("transcripts." + name, n)

    def __call__(
        self,
        conn: sqlite3.Connection,
        plan: ChatPlan,
        record: Record | None,
        changes: dict[str, Any],
        *,
        db: Any,
        active: bool,
        deadline: float,
    ) -> bool:
        """Write what the chat's messages need; False when the time budget cut it short (call again)."""
        desired = plan.desired
        if desired is None or desired.transcript is None:
            return True
        first_in_transaction = deadline != self._deadline
        self._deadline = deadline
        count = record.transcript_count if record is not None else 0
        if plan.owner == "hermes":
            if count and record is not None:
                self._hand_over(conn, plan, record, changes, active)
            else:
                self._count("left_to_hermes")
            return True
        if plan.owner != "mirror":
            return True
        if not first_in_transaction and time.perf_counter() >= deadline:
            return False  # the next transaction goes on with it (the first chat of one always moves)
        return self._mirror(conn, plan, record, changes, db=db, active=active, deadline=deadline)

    # ------------------------------------------------------------ mirror

    def _mirror(
        self,
        conn: sqlite3.Connection,
        plan: ChatPlan,
        record: Record | None,
        changes: dict[str, Any],
        *,
        db: Any,
        active: bool,
        deadline: float,
    ) -> bool:
        desired = plan.desired
        assert desired is not None and desired.transcript is not None
        session_id = desired.session_id
        messages: Sequence[Any] = desired.transcript
        if len(messages) > MAX_MESSAGES_PER_CHAT:
            messages = messages[:MAX_MESSAGES_PER_CHAT]
        count = record.transcript_count if record is not None else 0
        recorded = (record.transcript_chain if record is not None else None) or EMPTY_CHAIN
        stored = plan.row.live_messages if plan.row is not None else 0
        progress = _progress(recorded, count)
        stored_rows: list[tuple[Any, ...]] | None = None
        quick = _Quick(messages)

        trusted = progress is not None and stored == count
        if trusted and count and progress is not None and self._must_look(session_id, record, desired, progress):
            # The same state again, not just written by this process: check the rows themselves.
            stored_rows = read_stored_rows(conn, session_id, active)
            kept, kept_chain = progress
            trusted = len(stored_rows) == count and _stored_chain(stored_rows[:kept]) == kept_chain
            if not trusted:
                self._count("repaired")
        if (
            trusted
            and progress is not None
            and progress[0] <= len(messages)
            and self._prefix_chain(session_id, quick, progress[0]) == progress[1]
        ):
            keep, base = progress
            tail = count - keep  # an old tail still being deleted
        else:
            if stored_rows is None:
                stored_rows = read_stored_rows(conn, session_id, active)
            keep, base = _common_prefix(stored_rows, messages)
            tail = len(stored_rows) - keep
            stored = len(stored_rows)

        todo = len(messages) - keep
        if tail == 0 and todo == 0:
            self._remember(session_id, quick, keep, base)
            if (count, recorded) != (keep, base):
                changes.update(transcript_count=keep, transcript_chain=base)
            return True

        if len(desired.transcript) > MAX_MESSAGES_PER_CHAT:
            self._count("chats_capped")
        if tail:
            self._count("rewrites")
        # An append may stop after any chunk (state.db then holds a prefix of the WebUI's
        # messages); a rewrite that fits ATOMIC_OPS is never seen half done.
        bounded = tail == 0 or tail + todo > ATOMIC_OPS
        self._mark_written(plan, len(messages), stored)

        # Delete the old tail from the end: what stays is always a prefix of what was there.
        if tail:
            if stored_rows is not None:
                ids = [row[0] for row in reversed(stored_rows[keep:])]
            else:
                ids = _last_ids(conn, session_id, active, tail)
            deleted = 0
            while deleted < tail:
                piece = ids[deleted : deleted + _CHUNK]
                _delete(conn, piece)
                deleted += len(piece)
                if bounded and deleted < tail and time.perf_counter() >= deadline:
                    break
            self._count("messages_deleted", deleted)
            if deleted < tail:
                pending = f"{keep}:{base}"
                changes.update(transcript_count=keep + tail - deleted, transcript_chain=pending)
                self._remember(session_id, quick, keep, base)
                self._count("continued")
                return False

        # Then append the WebUI's messages after the common prefix, converting only what is inserted.
        done = 0
        current = base
        notes: list[str] = []
        while done < todo:
            start = keep + done
            rows = [to_row(m, notes) for m in messages[start : start + _CHUNK]]
            _insert(conn, db, session_id, rows)
            current = _chain_end(rows, current)
            done += len(rows)
            if bounded and done < todo and time.perf_counter() >= deadline:
                break
        for note in notes:
            self._count(note)
        self._count("messages_written", done)
        changes.update(transcript_count=keep + done, transcript_chain=current)
        self._remember(session_id, quick, keep + done, current)
        if done < todo:
            self._count("continued")
            return False
        return True

    def _must_look(self, session_id: str, record: Record | None, desired: Desired, progress: tuple[int, str]) -> bool:
        """Read the stored rows when re-applying a state this process did not just write."""
        if record is None or not same_state(record.digest, desired):
            return False  # a new state: the fast path's count and chain are enough
        known = self._memory.get(session_id)
        return known is None or (known[0], known[2]) != progress

    def _prefix_chain(self, session_id: str, quick: _Quick, count: int) -> str:
        """The chain of the WebUI's first ``count`` messages, from memory when that prefix is unchanged."""
        if count == 0:
            return EMPTY_CHAIN
        known = self._memory.get(session_id)
        if known is not None and known[0] == count and known[1] == quick.of(count):
            return known[2]
        return _chain_end(to_row(m) for m in quick.messages[:count])

    def _remember(self, session_id: str, quick: _Quick, count: int, final: str) -> None:
        memory = self._memory
        memory.pop(session_id, None)
        memory[session_id] = (count, quick.of(count), final)
        if len(memory) > _MEMORY_LIMIT:
            memory.popitem(last=False)

    @staticmethod
    def _mark_written(plan: ChatPlan, wanted: int, stored: int) -> None:
        """A chat whose messages change is a chat that is written (backfill and the sweep count it)."""
        plan.extra_drift.append(Drift("transcript", f"{wanted} messages", f"{stored} stored"))
        if plan.outcome == "unchanged":
            plan.outcome = "updated"

    # ------------------------------------------------------------ hand-over

    def _hand_over(
        self, conn: sqlite3.Connection, plan: ChatPlan, record: Record, changes: dict[str, Any], active: bool
    ) -> None:
        """hermes-agent writes this chat now: remove what of ours it wrote again, then forget ours."""
        session_id = plan.session_id
        count = record.transcript_count
        progress = _progress(record.transcript_chain, count)
        rows = read_stored_rows(conn, session_id, active)
        ours, theirs = rows[:count], rows[count:]
        verified = progress is not None and len(ours) == count and _stored_chain(ours[: progress[0]]) == progress[1]
        if verified and not theirs:
            return  # hermes-agent has not written yet: decide when it has
        duplicated = 0
        if verified:
            duplicated, wait = _duplicated_tail(ours, theirs)
            if wait:
                return
        if duplicated:
            removed = ours[count - duplicated :]
            _delete(conn, [row[0] for row in removed])
            # Each of those messages was counted twice: in the totals this layer set
            # and by hermes-agent's append_message; it is there once now.
            conn.execute(
                "UPDATE sessions SET message_count = MAX(0, message_count - ?), "
                "tool_call_count = MAX(0, tool_call_count - ?) WHERE id = ?",
                (duplicated, sum(_tool_calls_in(row[3]) for row in removed), session_id),
            )
            self._count("duplicates_removed", duplicated)
            self._mark_written(plan, len(rows) - duplicated, len(rows))
        self._memory.pop(session_id, None)
        self._count("handed_over")
        changes.update(transcript_count=0, transcript_chain=None)


def _tool_calls_in(stored: str | None) -> int:
    """Tool calls of a stored row, counted as hermes' append_message counts them."""
    if stored is None:
        return 0
    try:
        calls = json.loads(stored)
    except ValueError:
        return 1
    return len(calls) if isinstance(calls, list) else 1


def _common_prefix(stored_rows: Sequence[tuple[Any, ...]], messages: Sequence[Any]) -> tuple[int, str]:
    """How many stored rows match the WebUI's first messages, and their chain (converting only those)."""
    keep = 0
    current = EMPTY_CHAIN
    for have, message in zip(stored_rows, messages, strict=False):
        want = to_row(message)
        if tuple(have[1:6]) != tuple(want[:5]):
            break
        current = _link(current, want)
        keep += 1
    return keep, current
