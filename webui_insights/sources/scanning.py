"""A pass over the sessions folder: every file read, filtered and accounted for once.

The folder is listed (``folder``), cut into parts and each part read
(``session_file``) — in this process, or by the reader pool (``pool``) when
the caller asks for workers and there are enough files to pay for forking.
The caller gets each part's chats as soon as it is read (``on_part``), so
a backfill writes while the rest is parsed. Each file's state is ordered by
its ``updated_at`` and, for equal ones, its mtime (when the save that wrote
it ran).

Never: start reader processes unless asked (``workers``), or leave one
behind on any way out.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

from ..snapshot import UsageSnapshot
from . import session_file
from .folder import BadSessionFile, default_sessions_dir, list_session_files

__all__ = ["FIRST_PART_FILES", "PART_FILES", "OnPart", "Scan", "SessionFiles", "scan_sessions"]

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

Part = list[UsageSnapshot | BadSessionFile]


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


def _wanted(
    since: float | None, profile: str | None, keep: Callable[[UsageSnapshot], bool] | None
) -> Callable[[UsageSnapshot], bool]:
    """Whether a chat passes ``scan_sessions``' filters (``since``, ``profile``, ``keep``)."""
    wanted_profile = None if profile in (None, "default") else profile

    def wanted(chat: UsageSnapshot) -> bool:
        return not (
            (profile is not None and chat.profile != wanted_profile)
            or (since is not None and (chat.created_at or 0.0) < since)
            or (keep is not None and not keep(chat))
        )

    return wanted


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
    ``workers`` ≥ 1 parses in that many forked processes (``pool``) — only
    for a process of its own, such as the CLI: never inside a host that
    runs threads. ``on_part(scan, chats)`` is called once the folder is
    listed and the readers are started (no chats yet; ``scan.files`` is
    known: the caller may get ready while the first part is parsed), then
    with the chats of each part as soon as it is read, while the readers go
    on with the next parts (a backfill writes meanwhile).

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
    wanted = _wanted(since, profile, keep)
    parts = _read_parts(paths, keep_messages, workers)
    try:
        next(parts)  # the readers start on the first parts
        if on_part is not None:
            on_part(result, [])  # listed: the caller knows how many files there are
        for items in parts:
            kept = _sort(result, items or [], wanted)
            if on_part is not None:
                on_part(result, kept)
    finally:
        parts.close()  # on any way out: stop the readers now, not when the generator is collected
    return result


def _sort(result: Scan, items: Part, wanted: Callable[[UsageSnapshot], bool]) -> list[UsageSnapshot]:
    """Count one part's files into ``result``; the chats kept (also added to ``result.snapshots``)."""
    kept: list[UsageSnapshot] = []
    for item in items:
        if isinstance(item, BadSessionFile):
            result.bad.append((item.name, item.kind, item.reason))
        elif item.is_blank:
            result.blank += 1  # the live mirror skips these too
        elif not wanted(item):
            result.filtered += 1
        else:
            kept.append(item)
    result.snapshots.extend(kept)
    result.done += len(items)
    return kept


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


def _read_parts(paths: list[str], keep_messages: bool, workers: int) -> Generator[Part | None, None, None]:
    """None once reading has started, then each part's results, in order: here, or by the reader pool."""
    chunks = _pieces(paths, PART_FILES)
    workers = min(workers, len(chunks))
    if workers >= 1 and len(paths) >= _PARALLEL_FROM and hasattr(os, "fork"):
        from .pool import read_parts_forked  # only a process of its own asks for workers: a host never loads it

        return read_parts_forked(chunks, keep_messages, workers)
    return _read_here(chunks, keep_messages)


def _read_here(chunks: list[list[str]], keep_messages: bool) -> Generator[Part | None, None, None]:
    yield None
    for part in chunks:
        yield session_file.read_chunk(part, keep_messages)


def _pieces(paths: list[str], largest: int) -> list[list[str]]:
    """``paths`` in pieces of ``FIRST_PART_FILES``, then twice as many each time, up to ``largest``."""
    pieces: list[list[str]] = []
    start, size = 0, max(1, min(FIRST_PART_FILES, largest))
    while start < len(paths):
        pieces.append(paths[start : start + size])
        start += size
        size = min(size * 2, largest)
    return pieces
