"""Reading the WebUI's own session files into snapshots.

hermes-webui keeps each chat as ``<state dir>/sessions/<session_id>.json``
with cumulative totals: the ground truth that ``backfill``, ``verify`` and
the reconcile sweep mirror from. This module owns which files are chats
(``_index.json``, ``*.bak``, ``*.tmp.*`` and ``_``-prefixed names are not),
how the folder is walked on a real, messy home, and how one file becomes a
validated snapshot. Each file's state is ordered by its ``updated_at`` and,
for equal ones, its mtime (when the save that wrote it ran).

The walk never follows a link out of the folder or into a loop, never
reads a file larger than ``MAX_FILE_BYTES``, never blocks on something that
is not a regular file, and turns every unreadable, dangling, oversized,
empty, non-UTF-8 or malformed file into a skip with a reason — counted,
named in reports, never a crash. Reading in forked processes stops at once
on Ctrl-C or any other exit from the caller: the readers are killed and
reaped, none is left behind.

Never: write, rename or lock a WebUI file (they are only read), or put chat
text into a report (reasons name the file and the field, not its content).
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import pickle
import signal
import stat
import struct
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, cast

from .engine.chats import count_tool_calls
from .settings import webui_sessions_dir
from .snapshot import (
    InvalidSnapshot,
    UsageSnapshot,
    build_snapshot,
    earliest_message_time,
    is_continuation,
    last_message_time,
)

__all__ = [
    "BadSessionFile",
    "SessionsFolderError",
    "SessionsFolderMissing",
    "Scan",
    "SessionFiles",
    "MAX_FILE_BYTES",
    "is_session_file_name",
    "list_session_files",
    "read_session_file",
    "snapshot_from_dict",
    "scan_sessions",
    "default_sessions_dir",
]

# Real chats are a few MB at most (5,000 messages); past this a file is not read.
MAX_FILE_BYTES = 32 * 1024 * 1024
# Files per piece of work: a reader process parses one piece at a time, and
# a caller's ``on_part`` gets the chats of one piece while the next are read.
# The first piece is small and each next one twice as large, up to
# ``PART_FILES``: the caller (a backfill's writer) starts after a few
# milliseconds instead of waiting for a whole piece, and the readers stay
# ahead of it from then on.
FIRST_PART_FILES = 100
PART_FILES = 1000
# Below this many files, starting reader processes costs more than it saves.
_PARALLEL_FROM = 2000
_LENGTH = struct.Struct("<Q")
# O_NONBLOCK: something swapped in for a file after the walk (a FIFO) never blocks the open.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


class BadSessionFile(ValueError):
    """A file in the sessions folder that cannot be read as a chat; ``kind`` is the count's key."""

    def __init__(self, name: str, kind: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.kind = kind
        self.reason = reason

    def __reduce__(self) -> tuple[type[BadSessionFile], tuple[str, str, str]]:
        return (BadSessionFile, (self.name, self.kind, self.reason))  # crosses from a reader process


class SessionsFolderError(OSError):
    """The sessions folder itself cannot be listed (not a folder, no permission, a link loop)."""


class SessionsFolderMissing(FileNotFoundError, SessionsFolderError):
    """There is no sessions folder at the path (the WebUI never saved a chat there, or a wrong path)."""


def default_sessions_dir() -> Path:
    return webui_sessions_dir()


def is_session_file_name(name: str) -> bool:
    """True for ``<id>.json``; the WebUI's index, backups and temp files are not chats."""
    return name.endswith(".json") and not name.startswith("_") and ".tmp." not in name and ".bak" not in name


def _shown(name: str) -> str:
    """A file name fit for a report line: undecodable bytes and control characters replaced."""
    if name.isprintable():
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:
            pass
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _folder_error(directory: Path, exc: OSError) -> SessionsFolderError:
    why = exc.strerror or str(exc)
    if exc.errno == errno.ELOOP:
        why = "a symbolic link loop"
    if isinstance(exc, FileNotFoundError):
        return SessionsFolderMissing(exc.errno, why, str(directory))
    return SessionsFolderError(exc.errno, why, str(directory))


def list_session_files(directory: Path) -> tuple[list[str], list[BadSessionFile]]:
    """Session files directly in ``directory`` (sorted paths), and the entries refused while walking.

    A link is followed only to a regular file inside the same folder; a
    dangling link, a loop, a link leading elsewhere, a directory or FIFO
    named ``*.json`` are refused. Raises SessionsFolderMissing (a
    FileNotFoundError) or SessionsFolderError for the folder itself.
    """
    try:
        root = os.path.realpath(directory, strict=True)
        entries = list(os.scandir(root))
    except OSError as exc:
        raise _folder_error(Path(directory), exc) from None
    files: list[str] = []
    refused: list[BadSessionFile] = []
    for entry in entries:
        name = entry.name
        if not is_session_file_name(name):
            continue
        link = False
        try:
            link = entry.is_symlink()
            if link:
                info = os.stat(entry.path)  # follows the link: ELOOP for a loop, ENOENT for nothing
                if os.path.dirname(os.path.realpath(entry.path)) != root:
                    refused.append(BadSessionFile(_shown(name), "link_outside", "a link to a file outside the folder"))
                    continue
                regular = stat.S_ISREG(info.st_mode)
            else:
                # From the directory entry's type, no system call (a stat only where the
                # filesystem does not say); the reader checks the opened file again.
                regular = entry.is_file(follow_symlinks=False)
        except OSError as exc:
            refused.append(_refusal(name, exc, link))
            continue
        if not regular:
            refused.append(BadSessionFile(_shown(name), "not_a_file", "not a regular file"))
            continue
        files.append(entry.path)
    files.sort()
    return files, refused


def _refusal(name: str, exc: OSError, link: bool) -> BadSessionFile:
    if exc.errno == errno.ELOOP:
        return BadSessionFile(_shown(name), "link_loop", "a symbolic link loop")
    if link and exc.errno == errno.ENOENT:
        return BadSessionFile(_shown(name), "dangling_link", "a link to nothing")
    return BadSessionFile(_shown(name), "unreadable", f"cannot read: {exc.strerror or exc}")


def _messages(name: str, messages: Any) -> list[Any]:
    if messages is None:
        return []
    if type(messages) is not list:
        raise BadSessionFile(name, "bad_value", f"messages is {type(messages).__name__}, not a list")
    return messages


def snapshot_from_dict(
    name: str, data: Any, *, mtime: float | None = None, keep_messages: bool = False
) -> UsageSnapshot:
    """Validate one decoded session file; raises BadSessionFile with a content-free reason."""
    if type(data) is not dict:
        raise BadSessionFile(name, "bad_value", f"top level is {type(data).__name__}, not an object")
    stem = name[: -len(".json")] if name.endswith(".json") else name
    session_id = data.get("session_id", stem)
    if session_id != stem:
        # A copy under another name would mirror the same chat twice.
        raise BadSessionFile(name, "bad_value", "session_id does not match the file name")
    messages = _messages(name, data.get("messages"))
    updated_at = data.get("updated_at")
    created_at = data.get("created_at")
    if created_at is None:
        # Some old files lack created_at; the last save is the closest we know.
        created_at = updated_at if updated_at is not None else mtime
    try:
        snapshot = build_snapshot(
            session_id,
            profile=data.get("profile"),
            model=data.get("model"),
            title=data.get("title"),
            input_tokens=data.get("input_tokens") or 0,
            output_tokens=data.get("output_tokens") or 0,
            cache_read_tokens=data.get("cache_read_tokens"),
            cache_write_tokens=data.get("cache_write_tokens"),
            reasoning_tokens=data.get("reasoning_tokens"),
            estimated_cost_usd=data.get("estimated_cost"),
            message_count=len(messages),
            tool_call_count=count_tool_calls(messages),
            api_call_count=data.get("api_call_count"),
            created_at=created_at,
            updated_at=updated_at,
            last_active_at=last_message_time(messages) or updated_at,
            billing_provider=data.get("model_provider"),
            messages=messages if keep_messages else None,
            observed=mtime or 0.0,
            earliest_message_at=earliest_message_time(messages),
            continuation=is_continuation(data.get("parent_session_id"), data.get("session_source")),
        )
    except InvalidSnapshot as exc:
        raise BadSessionFile(name, exc.reason, str(exc)) from None
    return snapshot


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
    shown = _shown(name)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise _refusal(name, exc, os.path.islink(path)) from None
    try:
        raw, mtime = _read_bytes(fd, shown)
    except OSError as exc:
        raise BadSessionFile(shown, "unreadable", f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    if not raw.strip():
        raise BadSessionFile(shown, "empty", "empty file")
    try:
        text = raw.decode("utf-8")  # the WebUI writes UTF-8; json would guess UTF-16 from some bytes
    except UnicodeDecodeError as exc:
        raise BadSessionFile(shown, "not_utf8", f"not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        detail = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise BadSessionFile(shown, "not_json", f"not valid JSON (truncated or corrupt){detail}") from None
    return snapshot_from_dict(shown, data, mtime=mtime, keep_messages=keep_messages)


@dataclass(slots=True)
class Scan:
    """What a pass over the sessions folder found.

    ``files`` = ``len(snapshots)`` + ``blank`` + ``filtered`` + ``len(bad)``:
    every file is accounted for once. ``done`` counts the files dealt with
    so far (all of them once the scan returns).
    """

    directory: Path
    files: int = 0
    snapshots: list[UsageSnapshot] = field(default_factory=list)
    bad: list[tuple[str, str, str]] = field(default_factory=list)  # (name, kind, reason)
    blank: int = 0
    filtered: int = 0
    done: int = 0

    @property
    def skipped(self) -> Counter[str]:
        return Counter(kind for _, kind, _ in self.bad)


# on_part(scan so far, the chats of the part just read)
OnPart = Callable[[Scan, list[UsageSnapshot]], None]


def scan_sessions(
    directory: Path | None = None,
    *,
    since: float | None = None,
    profile: str | None = None,
    keep: Callable[[UsageSnapshot], bool] | None = None,
    keep_messages: bool = False,
    workers: int = 0,
    on_part: OnPart | None = None,
) -> Scan:
    """Read every session file; refused ones are listed in ``bad``, blank chats counted.

    ``since`` keeps chats created at or after that epoch time; ``profile``
    keeps one profile's chats ("default": the chats stamped "default" or
    none); ``keep_messages`` keeps each chat's messages (for transcripts).
    ``workers`` ≥ 1 parses in that many forked processes (JSON decoding is
    most of a backfill's reading) — only for a process of its own, such as
    the CLI: never inside a host that runs threads. ``on_part(scan, chats)``
    is called once the folder is listed and the readers are started (no
    chats yet; ``scan.files`` is known: the caller may get ready while the
    first part is parsed), then with the chats of each part as soon as it
    is read, while the readers go on with the next parts (a backfill writes
    meanwhile).

    Raises SessionsFolderMissing / SessionsFolderError for the folder
    itself. Any exception out of here — KeyboardInterrupt, or one raised by
    ``on_part`` — stops the readers at once: no process is left behind.
    """
    directory = Path(directory) if directory is not None else default_sessions_dir()
    result = Scan(directory)
    paths, refused = list_session_files(directory)
    result.files = len(paths) + len(refused)
    result.done = len(refused)
    result.bad.extend((b.name, b.kind, b.reason) for b in refused)
    wanted_profile = None if profile in (None, "default") else profile
    parts = _read_parts(paths, keep_messages, workers, PART_FILES)
    try:
        next(parts)  # the readers start on the first parts
        if on_part is not None:
            on_part(result, [])  # listed: the caller knows how many files there are
        for items in cast(Iterator[list[UsageSnapshot | BadSessionFile]], parts):
            kept: list[UsageSnapshot] = []
            for item in items:
                if isinstance(item, BadSessionFile):
                    result.bad.append((item.name, item.kind, item.reason))
                elif item.is_blank:
                    result.blank += 1  # the live mirror skips these too
                elif (
                    (profile is not None and item.profile != wanted_profile)
                    or (since is not None and (item.created_at or 0.0) < since)
                    or (keep is not None and not keep(item))
                ):
                    result.filtered += 1
                else:
                    kept.append(item)
            result.snapshots.extend(kept)
            result.done += len(items)
            if on_part is not None:
                on_part(result, kept)
    finally:
        parts.close()  # on any way out: stop the readers now, not when the generator is collected
    return result


@dataclass(frozen=True, slots=True)
class SessionFiles:
    """Which session files to read and how; ``read()`` scans them (see ``scan_sessions``).

    Handed to a command instead of a finished ``Scan`` when it should work
    on each part as soon as it is read (a backfill writes while the rest is
    still being parsed).
    """

    directory: Path
    since: float | None = None
    profile: str | None = None
    keep_messages: bool = False
    workers: int = 0

    def read(self, on_part: OnPart | None = None) -> Scan:
        return scan_sessions(
            self.directory,
            since=self.since,
            profile=self.profile,
            keep_messages=self.keep_messages,
            workers=self.workers,
            on_part=on_part,
        )


def _read_chunk(paths: list[str], keep_messages: bool) -> list[UsageSnapshot | BadSessionFile]:
    out: list[UsageSnapshot | BadSessionFile] = []
    for path in paths:
        try:
            out.append(read_session_file(path, keep_messages=keep_messages))
        except BadSessionFile as exc:
            out.append(exc)
    return out


@contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold SIGINT back while readers are forked: a child must never run the parent's handler.

    A Ctrl-C meanwhile reaches this process as soon as the readers exist (and ignore it).
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _reader(fd: int, chunks: list[list[str]], keep_messages: bool) -> NoReturn:
    """A forked reader's whole life: parse its chunks, send each as a length-prefixed pickle, exit."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the process group: the parent stops us
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        for part in chunks:
            _send(fd, pickle.dumps(_read_chunk(part, keep_messages), protocol=pickle.HIGHEST_PROTOCOL))
        code = 0
    except BrokenPipeError:
        code = 0  # the parent stopped reading: nothing more to do
    except BaseException as exc:  # a bug or MemoryError: say so, the parent raises it
        try:
            _send(fd, pickle.dumps(RuntimeError(f"reader process failed: {type(exc).__name__}: {exc}")))
        except BaseException:
            pass
        code = 1
    os._exit(code)  # no atexit handlers, no flushing of the parent's buffers


def _send(fd: int, blob: bytes) -> None:
    view = memoryview(_LENGTH.pack(len(blob)) + blob)
    while view:
        view = view[os.write(fd, view) :]


def _receive(fd: int) -> Any:
    (size,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size))
    item = pickle.loads(_read_exactly(fd, size))
    if isinstance(item, RuntimeError):
        raise item
    return item


def _read_exactly(fd: int, size: int) -> bytes:
    data = os.read(fd, size)
    if len(data) == size:
        return data
    parts, got = [data], len(data)
    while got < size:
        block = os.read(fd, size - got)
        if not block:
            raise RuntimeError("a reader process ended early")
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _read_parts(
    paths: list[str], keep_messages: bool, workers: int, chunk: int
) -> Generator[list[UsageSnapshot | BadSessionFile] | None, None, None]:
    """None once the readers are started, then each chunk's results, in order.

    With ``workers``, the chunks are parsed in that many forked reader processes.

    Reader k parses chunks k, k + workers, ... and writes each result into
    its own pipe, so the parent's read order is the chunks' order and a
    full pipe makes a reader wait (memory stays bounded). The parent only
    reads pipes — no thread of its own shares its GIL with the caller's
    work. On any way out, readers still running are killed and every one
    is reaped.
    """
    chunks = _pieces(paths, chunk)
    workers = min(workers, len(chunks))
    if workers < 1 or len(paths) < _PARALLEL_FROM or not hasattr(os, "fork"):
        yield None
        for part in chunks:
            yield _read_chunk(part, keep_messages)
        return
    readers: list[tuple[int, int]] = []  # (pid, read end)
    try:
        with _sigint_held():
            for k in range(workers):
                read_end, write_end = os.pipe()
                try:
                    pid = os.fork()
                except BaseException as exc:
                    os.close(read_end)
                    os.close(write_end)
                    if readers or not isinstance(exc, OSError):
                        raise
                    break  # cannot fork at all (a process limit): read here instead
                if pid == 0:  # pragma: no cover - runs in the child, which never returns
                    os.close(read_end)
                    for _, other in readers:
                        os.close(other)
                    _reader(write_end, chunks[k::workers], keep_messages)
                os.close(write_end)
                readers.append((pid, read_end))
        yield None
        for index in range(len(chunks)):
            yield _receive(readers[index % workers][1]) if readers else _read_chunk(chunks[index], keep_messages)
    finally:
        _stop_readers(readers)


def _pieces(paths: list[str], largest: int) -> list[list[str]]:
    """``paths`` in pieces of ``FIRST_PART_FILES``, then twice as many each time, up to ``largest``."""
    pieces: list[list[str]] = []
    start, size = 0, max(1, min(FIRST_PART_FILES, largest))
    while start < len(paths):
        pieces.append(paths[start : start + size])
        start += size
        size = min(size * 2, largest)
    return pieces


def _stop_readers(readers: list[tuple[int, int]]) -> None:
    """Kill what still runs and reap every reader (a finished one is reaped at once)."""
    for pid, _ in readers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid, read_end in readers:
        os.close(read_end)
        while True:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            except InterruptedError:  # pragma: no cover - Python retries EINTR itself
                continue
            break
