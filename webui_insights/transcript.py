"""Opt-in transcript mirroring: which of a chat's messages go to state.db, and when.

Owns the conversion of the WebUI's message dicts into plain, immutable rows
(role, content, tool calls, tool name, timestamp) with a size cap, the
fingerprint chain that names an already-mirrored prefix, and the per-chat
tracker the save path uses to send only what is new. A row that crosses to
the writer thread holds strings and numbers only, never a dict the host may
still change. This module never touches state.db.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "MessageRow",
    "TranscriptDelta",
    "TranscriptTracker",
    "to_row",
    "chain",
    "content_fingerprint",
    "scrub_surrogates",
    "MAX_MESSAGE_CHARS",
]

# A longer message is cut, and an inline data: URL (a pasted image or file)
# becomes a short placeholder: state.db is for search and counts, not for
# megabytes of base64.
MAX_MESSAGE_CHARS = 64_000
_DATA_URL = re.compile(r"data:[\w.+-]+/[\w.+-]+;base64,[A-Za-z0-9+/=]{256,}")
EMPTY_CHAIN = ""


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


class TranscriptDelta(NamedTuple):
    """Keep the first ``keep`` mirrored messages, delete the rest, append ``rows``.

    ``prev_count``/``prev_chain`` are what the sender believes state.db holds;
    the writer applies the delta only if that is true, so a lost or reordered
    update can never leave a spliced transcript. ``full`` means ``rows`` is the
    whole transcript and nothing is assumed about state.db (first save after
    a start, or after a lost update): the writer keeps whatever prefix
    already matches and replaces the rest.
    """

    keep: int
    rows: tuple[MessageRow, ...]
    prev_count: int = 0
    prev_chain: str = EMPTY_CHAIN
    base_chain: str = EMPTY_CHAIN  # fingerprint of the first ``keep`` messages
    full: bool = False

    @property
    def is_noop(self) -> bool:
        return not self.full and not self.rows and self.keep == self.prev_count

    def then(self, newer: TranscriptDelta) -> TranscriptDelta:
        """This delta followed by ``newer`` (which was computed on top of it), as one."""
        if newer.full:
            return newer
        if self.full:
            return self._replace(rows=self.rows[: newer.keep] + newer.rows)
        if newer.keep >= self.keep:
            kept = self.rows[: newer.keep - self.keep]
            return self._replace(rows=kept + newer.rows)
        return newer._replace(prev_count=self.prev_count, prev_chain=self.prev_chain)

    def final_chain(self) -> str:
        """The fingerprint of the whole transcript once this delta is applied."""
        links = chain(self.rows, self.base_chain)
        return links[-1] if links else self.base_chain


def scrub_surrogates(value: str) -> str:
    """Lone surrogates (from pasted or scraped text) become U+FFFD, as hermes does: SQLite cannot store them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)
    return value


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    text: str = value
    if not text.isascii():
        text = scrub_surrogates(text)
    if len(text) > 256 and "base64," in text:
        text = _DATA_URL.sub("[inline attachment omitted]", text)
    if len(text) > limit:
        text = text[:limit] + f" [… {len(text) - limit} characters omitted]"
    return text


def _content(content: Any) -> str | None:
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
    return _text(content, MAX_MESSAGE_CHARS)


def _timestamp(message: dict[str, Any]) -> float | None:
    for key in ("timestamp", "created_at", "ts"):
        value = message.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def to_row(message: Any) -> MessageRow:
    """A WebUI message as a row; every message becomes exactly one row."""
    if not isinstance(message, dict):
        return MessageRow("unknown", _text(message, MAX_MESSAGE_CHARS), None, None, None, None)
    role = message.get("role")
    tool_calls = message.get("tool_calls")
    return MessageRow(
        role if isinstance(role, str) and role else "unknown",
        _content(message.get("content")),
        json.dumps(tool_calls, default=str) if tool_calls else None,  # ASCII: escapes lone surrogates
        _text(message.get("tool_call_id"), 200),
        _text(message.get("name") or message.get("tool_name"), 200),
        _timestamp(message),
    )


def chain(rows: Sequence[MessageRow], start: str = EMPTY_CHAIN) -> list[str]:
    """The fingerprint after each row: ``chain(rows)[k - 1]`` names ``rows[:k]``."""
    links = []
    current = start
    for row in rows:
        digest = hashlib.blake2b(current.encode(), digest_size=16)
        digest.update(repr(row[:5]).encode("utf-8", "surrogatepass"))
        current = digest.hexdigest()
        links.append(current)
    return links


def content_fingerprint(messages: Iterable[tuple[str, str | None]]) -> str:
    """Fingerprint of (role, content) pairs: what ``verify`` compares.

    Computed the same way from the WebUI's messages and from state.db's rows,
    so it checks what is actually stored, not what we remember writing.
    """
    digest = hashlib.blake2b(digest_size=16)
    for role, content in messages:
        digest.update(repr((role, content)).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


@dataclass(slots=True)
class _Seen:
    """One chat as last queued; only the tracker touches it, under its lock."""

    messages: list[Any]  # the host's message objects, to compare with
    rows: list[MessageRow]
    links: list[str]


class TranscriptTracker:
    """Remembers, per chat, which messages the save path has already queued.

    A save costs one comparison of the known messages (at C speed), a
    re-read of the last one (streaming edits it in place) and a conversion of
    the new ones. Anything else — fewer messages, an earlier message replaced
    — becomes a delta that keeps the unchanged prefix and replaces the rest.
    """

    def __init__(self) -> None:
        self._seen: dict[Any, _Seen] = {}
        # Deltas of one chat must be computed one after the other: each is
        # built on the one before. Held only for the comparison, no I/O.
        self.lock = threading.Lock()

    def forget(self, key: Any) -> None:
        self._seen.pop(key, None)

    def delta(self, key: Any, messages: Sequence[Any]) -> TranscriptDelta:
        """What to send for ``messages``; call with ``self.lock`` held."""
        current = list(messages)
        seen = self._seen.get(key)
        if seen is None:
            rows = [to_row(m) for m in current]
            self._seen[key] = _Seen(current, rows, chain(rows))
            return TranscriptDelta(0, tuple(rows), full=True)
        keep = _common_prefix(seen.messages, current)
        if keep and to_row(current[keep - 1]) != seen.rows[keep - 1]:
            keep -= 1  # the last known message was edited in place
        known = len(seen.rows)
        prev_chain = seen.links[-1] if seen.links else EMPTY_CHAIN
        seen.messages = current
        if keep == known == len(current):
            return TranscriptDelta(known, (), known, prev_chain, prev_chain)
        new_rows = [to_row(m) for m in current[keep:]]
        base = seen.links[keep - 1] if keep else EMPTY_CHAIN
        # In place: a long chat's lists are not copied on every turn.
        del seen.rows[keep:], seen.links[keep:]
        seen.rows += new_rows
        seen.links += chain(new_rows, base)
        return TranscriptDelta(keep, tuple(new_rows), known, prev_chain, base)


def _common_prefix(old: list[Any], new: list[Any]) -> int:
    """How many leading messages are unchanged (the same object, or equal).

    The usual case, messages appended, is one list comparison in C (it
    checks identity before equality); only a rewrite walks the lists here.
    Equal-but-new dicts count as unchanged, so a host that reloads a chat
    from its file does not make us resend it.
    """
    if len(new) >= len(old) and new[: len(old)] == old:
        return len(old)
    for index, (before, after) in enumerate(zip(old, new, strict=False)):
        if before is not after and before != after:
            return index
    return min(len(old), len(new))
