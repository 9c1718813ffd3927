"""Opt-in transcripts: a chat's messages in hermes' ``messages`` table, so session search finds them.

Owns the conversion of the WebUI's message dicts into rows (role, content,
tool calls, tool name, timestamp) within size caps, and the plan for a
chat's messages (``plan_transcript``: what to delete, what to append, what
the record and the row's totals become), made by ``sync`` with the rest of
the chat's plan; ``apply`` executes it, ``verify`` reports its drift. Never
writes: nothing here changes a table. It decides from state.db itself,
never from what this process remembers sending:

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
  and larger rewrites go on over several short transactions (the plan is
  made again in the next; each does at least one chunk of ``_CHUNK`` rows), a rewrite
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

The only memory kept between calls (``TranscriptWriter``, one per writer) is, per chat, (count, a quick hash of
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
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from ..snapshot import scrub_surrogates
from .plan import Drift
from .states import same_state

if TYPE_CHECKING:
    from ..diagnostics import Stats
    from .plan import ChatPlan
    from .states import Desired, Record

__all__ = [
    "MessageRow",
    "StoredMessages",
    "StoredView",
    "TranscriptDone",
    "TranscriptPlan",
    "TranscriptWriter",
    "plan_transcript",
    "to_row",
    "chain",
    "chain_end",
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


def chain_end(rows: Iterable[Sequence[Any]], start: str = EMPTY_CHAIN) -> str:
    """The last link of ``chain(rows, start)``: what the record keeps after writing ``rows``."""
    current = start
    for row in rows:
        current = _link(current, row)
    return current


def _stored_chain(stored_rows: Iterable[Sequence[Any]]) -> str:
    """The chain of stored rows as ``read_stored_rows`` gives them (their id first)."""
    return chain_end(row[1:6] for row in stored_rows)


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


class StoredView(Protocol):
    """What planning reads of a chat's live rows in hermes' ``messages`` table."""

    def rows(self) -> list[tuple[Any, ...]]: ...

    def newest_ids(self, n: int) -> list[int]: ...


class StoredMessages:
    """A chat's live rows in hermes' ``messages`` table as planning sees them: read only when needed, once.

    The common case (an append the record vouches for) reads nothing.
    """

    __slots__ = ("_conn", "_session_id", "_active", "_rows")

    def __init__(self, conn: sqlite3.Connection, session_id: str, active: bool) -> None:
        self._conn = conn
        self._session_id = session_id
        self._active = active
        self._rows: list[tuple[Any, ...]] | None = None

    def rows(self) -> list[tuple[Any, ...]]:
        """Every live row, as ``read_stored_rows`` gives them."""
        if self._rows is None:
            self._rows = read_stored_rows(self._conn, self._session_id, self._active)
        return self._rows

    def newest_ids(self, n: int) -> list[int]:
        """The ids of the chat's ``n`` newest live messages, newest first."""
        if n <= 0:
            return []
        if self._rows is not None:
            return [row[0] for row in reversed(self._rows[-n:])]
        live = " AND active = 1" if self._active else ""
        return [
            row[0]
            for row in self._conn.execute(
                f"SELECT id FROM messages WHERE session_id = ?{live} ORDER BY id DESC LIMIT ?", (self._session_id, n)
            )
        ]


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


# ------------------------------------------------------------------ the plan

# What a chat's messages need: "mirror" (this layer writes them), "hand_over"
# (hermes-agent took the chat over: remove what it wrote again, forget ours),
# "left" (nothing now: hermes-agent writes them, or a hand-over waits for its rows).
TranscriptKind = Literal["mirror", "hand_over", "left"]


@dataclass(frozen=True, slots=True)
class TranscriptPlan:
    """What a chat's messages need; ``apply`` executes it, ``verify`` reports its ``drift``.

    The rows ``delete`` go first (newest first, so what stays is a prefix of
    what was there), then the WebUI's ``messages[keep:]`` are appended after
    the ``keep`` rows kept (whose chain is ``base``).
    """

    session_id: str
    kind: TranscriptKind
    messages: Sequence[Any] = ()
    keep: int = 0
    base: str = EMPTY_CHAIN
    delete: tuple[int, ...] = ()
    # May stop after any chunk once the transaction's budget is spent; False: all in this transaction.
    bounded: bool = True
    # (messages, tool calls) to take off the row's totals: the hand-over's duplicates were counted twice.
    subtract: tuple[int, int] = (0, 0)
    # The record's transcript columns when nothing is appended (None: they stay).
    record: dict[str, Any] | None = None
    drift: Drift | None = None
    # Counters this plan accounts for once executed (``stats()["transcripts"]``).
    notes: tuple[str, ...] = ()
    quick: _Quick | None = field(default=None, compare=False, repr=False)

    @property
    def append(self) -> int:
        """How many of the WebUI's messages are appended."""
        return len(self.messages) - self.keep

    def deletions(self) -> Iterator[tuple[int, ...]]:
        """The ids to delete, a chunk at a time (the budget is looked at between two)."""
        for start in range(0, len(self.delete), _CHUNK):
            yield self.delete[start : start + _CHUNK]

    def insertions(self, notes: list[str]) -> Iterator[list[MessageRow]]:
        """The rows to append, a chunk at a time, each converted only when it is reached."""
        for start in range(self.keep, len(self.messages), _CHUNK):
            yield [to_row(m, notes) for m in self.messages[start : start + _CHUNK]]

    def after_deleting(self, deleted: int) -> dict[str, Any]:
        """The record's columns while the old tail is partly deleted: the rest of it is still there."""
        pending = f"{self.keep}:{self.base}"
        return {"transcript_count": self.keep + len(self.delete) - deleted, "transcript_chain": pending}

    def after_appending(self, written: int, current: str) -> dict[str, Any]:
        """The record's columns once ``written`` rows (chain ``current``) follow the kept ones."""
        return {"transcript_count": self.keep + written, "transcript_chain": current}


class TranscriptDone(NamedTuple):
    """What ``apply`` did of a ``TranscriptPlan`` in one transaction."""

    plan: TranscriptPlan
    deleted: int = 0
    written: int = 0
    # (how many of the WebUI's first messages state.db holds now, their chain); None: nothing mirrored.
    reached: tuple[int, str] | None = None
    notes: tuple[str, ...] = ()  # the caps that applied to the rows written
    finished: bool = True


def plan_transcript(
    chat: ChatPlan,
    record: Record | None,
    stored: StoredView,
    known: tuple[int, int, str] | None = None,
    *,
    exhaustive: bool = False,
) -> TranscriptPlan | None:
    """Plan ``chat``'s messages and set ``chat.transcript``; a chat whose messages change is a chat written.

    Decides from state.db and the record alone (reading ``stored`` only
    where the record cannot vouch for it); ``known`` is what a writer
    remembers of the chat (``TranscriptWriter``), which only spares work.
    ``exhaustive`` (verify): compare every stored row with the WebUI's
    messages, whatever the record says.
    """
    desired = chat.desired
    plan: TranscriptPlan | None = None
    if desired is None or desired.transcript is None:
        pass
    elif chat.owner == "mirror":
        plan = _plan_mirror(chat, desired, record, stored, known, exhaustive)
    elif chat.owner == "hermes" and record is not None and record.transcript_count:
        plan = _plan_hand_over(chat.session_id, record, stored)
    elif chat.owner == "hermes":
        plan = TranscriptPlan(chat.session_id, "left", notes=("left_to_hermes",))
    else:
        plan = TranscriptPlan(chat.session_id, "left")
    chat.transcript = plan
    if plan is not None and plan.drift is not None:
        chat.extra_drift.append(plan.drift)
        if chat.outcome == "unchanged":
            chat.outcome = "updated"
    return plan


class _Start(NamedTuple):
    """Where state.db's rows and the WebUI's messages part."""

    keep: int
    base: str
    delete: list[int]  # the rows after ``keep``, newest first
    stored: int  # live rows, as far as planning knows


def _plan_mirror(
    chat: ChatPlan,
    desired: Desired,
    record: Record | None,
    stored: StoredView,
    known: tuple[int, int, str] | None,
    exhaustive: bool,
) -> TranscriptPlan:
    messages: Sequence[Any] = desired.transcript or ()
    if len(messages) > MAX_MESSAGES_PER_CHAT:
        messages = messages[:MAX_MESSAGES_PER_CHAT]
    quick = _Quick(messages)
    notes: list[str] = []
    if exhaustive:
        start = _from_rows(stored.rows(), messages)
    else:
        start = _trusted_start(chat, desired, record, stored, known, quick, notes)
    keep, base, delete, live = start
    todo = len(messages) - keep
    if not delete and todo == 0:
        count = record.transcript_count if record is not None else 0
        recorded = (record.transcript_chain if record is not None else None) or EMPTY_CHAIN
        changes = None if (count, recorded) == (keep, base) else {"transcript_count": keep, "transcript_chain": base}
        return TranscriptPlan(
            chat.session_id, "mirror", messages, keep, base, record=changes, notes=tuple(notes), quick=quick
        )
    if len(messages) < len(desired.transcript or ()):
        notes.append("chats_capped")
    if delete:
        notes.append("rewrites")
    if exhaustive and delete and todo:
        where = f"differs from message {keep + 1}"
    else:
        where = f"{live} stored"
    return TranscriptPlan(
        chat.session_id,
        "mirror",
        messages,
        keep,
        base,
        tuple(delete),
        # An append may stop after any chunk (state.db then holds a prefix of the WebUI's
        # messages); a rewrite that fits ATOMIC_OPS is never seen half done.
        bounded=not delete or len(delete) + todo > ATOMIC_OPS,
        drift=Drift("transcript", f"{len(messages)} messages", where),
        notes=tuple(notes),
        quick=quick,
    )


def _trusted_start(
    chat: ChatPlan,
    desired: Desired,
    record: Record | None,
    stored: StoredView,
    known: tuple[int, int, str] | None,
    quick: _Quick,
    notes: list[str],
) -> _Start:
    """From the record's count and chain while state.db agrees with them; else from the stored rows."""
    count = record.transcript_count if record is not None else 0
    recorded = (record.transcript_chain if record is not None else None) or EMPTY_CHAIN
    live = chat.row.live_messages if chat.row is not None else 0
    progress = _progress(recorded, count)
    if progress is None or live != count:
        return _from_rows(stored.rows(), quick.messages)
    keep, kept_chain = progress
    if count and _must_look(record, desired, progress, known):
        # The same state again, not just written by this process: check the rows themselves.
        rows = stored.rows()
        if len(rows) != count or _stored_chain(rows[:keep]) != kept_chain:
            notes.append("repaired")
            return _from_rows(rows, quick.messages)
    if keep <= len(quick.messages) and _prefix_chain(quick, keep, known) == kept_chain:
        tail = stored.newest_ids(count - keep) if count > keep else []  # an old tail still being deleted
        return _Start(keep, kept_chain, tail, live)
    return _from_rows(stored.rows(), quick.messages)


def _from_rows(rows: Sequence[tuple[Any, ...]], messages: Sequence[Any]) -> _Start:
    keep, base = _common_prefix(rows, messages)
    return _Start(keep, base, [row[0] for row in reversed(rows[keep:])], len(rows))


def _must_look(
    record: Record | None, desired: Desired, progress: tuple[int, str], known: tuple[int, int, str] | None
) -> bool:
    """Read the stored rows when re-applying a state this process did not just write."""
    if record is None or not same_state(record.digest, desired):
        return False  # a new state: the fast path's count and chain are enough
    return known is None or (known[0], known[2]) != progress


def _prefix_chain(quick: _Quick, count: int, known: tuple[int, int, str] | None) -> str:
    """The chain of the WebUI's first ``count`` messages, from memory when that prefix is unchanged."""
    if count == 0:
        return EMPTY_CHAIN
    if known is not None and known[0] == count and known[1] == quick.of(count):
        return known[2]
    return chain_end(to_row(m) for m in quick.messages[:count])


def _plan_hand_over(session_id: str, record: Record, stored: StoredView) -> TranscriptPlan:
    """hermes-agent writes this chat now: remove what of ours it wrote again, then forget ours.

    Or wait ("left"): hermes-agent has not written yet, or is still writing the turn we had mirrored.
    """
    count = record.transcript_count
    progress = _progress(record.transcript_chain, count)
    rows = stored.rows()
    ours, theirs = rows[:count], rows[count:]
    verified = progress is not None and len(ours) == count and _stored_chain(ours[: progress[0]]) == progress[1]
    if verified and not theirs:
        return TranscriptPlan(session_id, "left")  # hermes-agent has not written yet: decide when it has
    duplicated = 0
    if verified:
        duplicated, wait = _duplicated_tail(ours, theirs)
        if wait:
            return TranscriptPlan(session_id, "left")
    removed = ours[count - duplicated :] if duplicated else []
    drift = Drift("transcript", f"{len(rows) - duplicated} messages", f"{len(rows)} stored") if duplicated else None
    return TranscriptPlan(
        session_id,
        "hand_over",
        delete=tuple(row[0] for row in removed),
        # Each of those messages was counted twice: in the totals this layer set
        # and by hermes-agent's append_message; it is there once now.
        subtract=(duplicated, sum(_tool_calls_in(row[3]) for row in removed)),
        record={"transcript_count": 0, "transcript_chain": None},
        drift=drift,
        notes=("duplicates_removed",) * duplicated + ("handed_over",),
    )


# ------------------------------------------------------------------ memory


class TranscriptWriter:
    """One writer's transcript memory and counters: plans each chat's messages, accounts for what apply did.

    One instance per writer (the live writer thread, one CLI run, one sweep
    pass); not shared between threads.
    """

    def __init__(self, stats: Stats | None = None) -> None:
        self._stats = stats
        # session id -> (count, quick hash of the WebUI's first `count` messages, chain)
        self._memory: OrderedDict[str, tuple[int, int, str]] = OrderedDict()

    def plan(self, chat: ChatPlan, record: Record | None, stored: StoredView) -> TranscriptPlan | None:
        """``plan_transcript`` with what this writer remembers of the chat."""
        return plan_transcript(chat, record, stored, self._memory.get(chat.session_id))

    def account(self, done: Iterable[TranscriptDone]) -> None:
        """Count what apply did and remember where each chat's messages got to."""
        for item in done:
            plan = item.plan
            for note in (*plan.notes, *item.notes):
                self._count(note)
            if plan.kind == "hand_over":
                self._memory.pop(plan.session_id, None)
                continue
            self._count("messages_deleted", item.deleted)
            self._count("messages_written", item.written)
            if not item.finished:
                self._count("continued")
            if item.reached is not None and plan.quick is not None:
                self._remember(plan.session_id, plan.quick, *item.reached)

    def _count(self, name: str, n: int = 1) -> None:
        if self._stats is not None and n:
            self._stats.incr("transcripts." + name, n)

    def _remember(self, session_id: str, quick: _Quick, count: int, final: str) -> None:
        memory = self._memory
        memory.pop(session_id, None)
        memory[session_id] = (count, quick.of(count), final)
        if len(memory) > _MEMORY_LIMIT:
            memory.popitem(last=False)


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
