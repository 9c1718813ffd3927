"""Reading one WebUI session file into a validated snapshot.

hermes-webui keeps each chat as ``<state dir>/sessions/<session_id>.json``
with cumulative totals. A file is read with one bounded read (never past
``MAX_FILE_BYTES``, never blocking on something swapped in for it), decoded
as UTF-8 JSON and made a snapshot by ``snapshot.from_webui``, the mapping
of the WebUI's fields the live adapter uses too.
Every unreadable, oversized, empty, non-UTF-8 or malformed file raises
``BadSessionFile`` with a reason that names the file and the field.

Never: write, rename or lock the file, or put chat text into a reason.
"""

from __future__ import annotations

import codecs
import json
import os
import stat
from pathlib import Path
from typing import Any

from ..engine.chats import count_tool_calls
from ..snapshot import WEBUI_FIELDS, InvalidSnapshot, UsageSnapshot, earliest_message_time, from_webui
from .folder import BadSessionFile, refusal, shown

__all__ = ["MAX_FILE_BYTES", "read_session_file", "read_chunk", "snapshot_from_dict"]

# Real chats are a few MB at most (5,000 messages); past this a file is not read.
MAX_FILE_BYTES = 32 * 1024 * 1024
# O_NONBLOCK: something swapped in for a file after the walk (a FIFO) never blocks the open.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def _messages(name: str, messages: object) -> list[Any]:
    if messages is None:
        return []
    if type(messages) is not list:
        raise BadSessionFile(name, "bad_value", f"messages is {type(messages).__name__}, not a list")
    return messages


def snapshot_from_dict(
    name: str, data: object, *, mtime: float | None = None, keep_messages: bool = False
) -> UsageSnapshot:
    """Validate one decoded session file; raises BadSessionFile with a content-free reason."""
    if type(data) is not dict:
        raise BadSessionFile(name, "bad_value", f"top level is {type(data).__name__}, not an object")
    stem = name[: -len(".json")] if name.endswith(".json") else name
    if data.get("session_id", stem) != stem:
        # A copy under another name would mirror the same chat twice.
        raise BadSessionFile(name, "bad_value", "session_id does not match the file name")
    messages = _messages(name, data.get("messages"))
    fields = {name: data.get(name) for name in WEBUI_FIELDS}
    fields["session_id"] = data.get("session_id", stem)
    # As files were always read: a count that is null, "" or false is none used.
    fields["input_tokens"] = fields["input_tokens"] or 0
    fields["output_tokens"] = fields["output_tokens"] or 0
    if fields["created_at"] is None:
        # Some old files lack created_at; the last save is the closest we know.
        updated_at = fields["updated_at"]
        fields["created_at"] = updated_at if updated_at is not None else mtime
    try:
        return from_webui(
            **fields,
            messages=messages,
            message_count=len(messages),
            observed=mtime or 0.0,
            keep=messages if keep_messages else None,
            # Counted here, in the reader, so the messages can be dropped at once.
            tool_call_count=count_tool_calls(messages),
            earliest_message_at=earliest_message_time(messages),
        )
    except InvalidSnapshot as exc:
        raise BadSessionFile(name, exc.reason, str(exc)) from None


def _read_bytes(fd: int, name: str) -> tuple[bytes, float]:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise BadSessionFile(name, "not_a_file", "not a regular file")
    size = info.st_size
    if size > MAX_FILE_BYTES:
        raise BadSessionFile(name, "too_large", f"{size:,} bytes (over {MAX_FILE_BYTES:,}); not read")
    # One read of the size fstat gave (a bigger buffer costs more than the parse).
    raw = os.read(fd, size + 1)
    if len(raw) != size:  # a short read, or the file grew meanwhile: read on to its end, bounded
        parts, total = [raw], len(raw)
        while total <= MAX_FILE_BYTES:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            parts.append(block)
            total += len(block)
        if total > MAX_FILE_BYTES:
            raise BadSessionFile(name, "too_large", f"over {MAX_FILE_BYTES:,} bytes; not read")
        raw = b"".join(parts)
    return raw, info.st_mtime


def read_session_file(path: Path | str, *, keep_messages: bool = False) -> UsageSnapshot:
    """One session file as a validated snapshot; raises BadSessionFile."""
    name = os.path.basename(path)
    display = shown(name)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise refusal(name, exc, os.path.islink(path)) from None
    try:
        raw, mtime = _read_bytes(fd, display)
    except OSError as exc:
        raise BadSessionFile(display, "unreadable", f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    if not raw.strip():
        raise BadSessionFile(display, "empty", "empty file")
    try:
        text = raw.decode("utf-8")  # the WebUI writes UTF-8; json would guess UTF-16 from some bytes
    except UnicodeDecodeError as exc:
        raise BadSessionFile(display, "not_utf8", f"not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        detail = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise BadSessionFile(display, "not_json", f"not valid JSON (truncated or corrupt){detail}") from None
    return snapshot_from_dict(display, data, mtime=mtime, keep_messages=keep_messages)


def read_chunk(paths: list[str], keep_messages: bool) -> list[UsageSnapshot | BadSessionFile]:
    """Each file as its snapshot or the reason it was skipped, in order (a part of the folder)."""
    out: list[UsageSnapshot | BadSessionFile] = []
    for path in paths:
        try:
            out.append(read_session_file(path, keep_messages=keep_messages))
        except BadSessionFile as exc:
            out.append(exc)
    return out
