"""Reading the WebUI's own session files into usage snapshots.

hermes-webui keeps each chat as ``<state dir>/sessions/<session_id>.json`` with
cumulative totals, so these files are the ground truth that ``backfill``,
``verify`` and the reconcile sweep mirror from. This module owns which files
are sessions (``_index.json``, ``*.bak``, ``*.tmp.*`` and ``_``-prefixed names
are not) and how one becomes a validated snapshot. A corrupt, truncated or
wrongly typed file is reported by name and skipped; it never aborts a scan.

Never: write, rename or lock a WebUI file (they are only read), or put chat
text into a report (reasons name the file and the field, not its content).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import webui_state_dir
from .snapshot import InvalidSnapshot, UsageSnapshot, build_snapshot
from .transcript import TranscriptDelta, to_row

__all__ = [
    "BadSessionFile",
    "Scan",
    "default_sessions_dir",
    "is_session_file_name",
    "iter_session_files",
    "read_session_file",
    "scan_sessions",
]


class BadSessionFile(ValueError):
    """A file in the sessions directory that cannot be read as a session."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason

    def __reduce__(self) -> tuple[type[BadSessionFile], tuple[str, str]]:
        return (BadSessionFile, (self.name, self.reason))  # crosses from a reader process


def default_sessions_dir() -> Path:
    """``<HERMES_WEBUI_STATE_DIR>/sessions`` (default ``~/.hermes/webui/sessions``)."""
    return webui_state_dir() / "sessions"


def is_session_file_name(name: str) -> bool:
    """True for ``<id>.json``; the WebUI's index, backups and temp files are not chats."""
    return name.endswith(".json") and not name.startswith("_") and ".tmp." not in name and ".bak" not in name


def iter_session_files(directory: Path) -> list[str]:
    """Paths (as strings: pathlib costs more than the JSON) of session files, sorted by name."""
    try:
        with os.scandir(directory) as entries:
            names = [e.path for e in entries if is_session_file_name(e.name) and e.is_file()]
    except FileNotFoundError:
        return []
    names.sort()
    return names


def _message_count(name: str, messages: Any) -> int:
    if messages is None:
        return 0
    if type(messages) is not list:
        raise BadSessionFile(name, f"messages is {type(messages).__name__}, not a list")
    return len(messages)


def snapshot_from_dict(name: str, data: Any, *, mtime: float | None = None, transcripts: bool = False) -> UsageSnapshot:
    """Validate one decoded session file; raises BadSessionFile with a content-free reason."""
    if type(data) is not dict:
        raise BadSessionFile(name, f"top level is {type(data).__name__}, not an object")
    stem = name[: -len(".json")] if name.endswith(".json") else name
    session_id = data.get("session_id", stem)
    if session_id != stem:
        # A copy under another name would mirror the same chat twice.
        raise BadSessionFile(name, "session_id does not match the file name")
    created_at = data.get("created_at")
    if created_at is None:
        # Some old files lack created_at; the last save is the closest we know.
        created_at = data.get("updated_at", mtime)
    try:
        snapshot = build_snapshot(
            session_id,
            profile=data.get("profile"),
            model=data.get("model"),
            title=data.get("title"),
            input_tokens=data.get("input_tokens", 0),
            output_tokens=data.get("output_tokens", 0),
            cache_read_tokens=data.get("cache_read_tokens", 0),
            cache_write_tokens=data.get("cache_write_tokens", 0),
            reasoning_tokens=data.get("reasoning_tokens", 0),
            estimated_cost_usd=data.get("estimated_cost"),
            message_count=_message_count(name, data.get("messages")),
            api_call_count=data.get("api_call_count"),
            created_at=created_at,
            billing_provider=data.get("model_provider"),
        )
    except InvalidSnapshot as exc:
        raise BadSessionFile(name, str(exc)) from None
    if transcripts:
        # The whole transcript: the sink keeps what already matches state.db.
        rows = tuple(to_row(message) for message in data.get("messages") or ())
        snapshot = snapshot._replace(transcript=TranscriptDelta(0, rows, full=True))
    return snapshot


def read_session_file(path: Path | str, *, transcripts: bool = False) -> UsageSnapshot:
    """One session file as a validated snapshot; raises BadSessionFile."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
            mtime = os.fstat(handle.fileno()).st_mtime
    except OSError as exc:
        raise BadSessionFile(name, f"cannot read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise BadSessionFile(name, "empty file")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and undecodable bytes.
        detail = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise BadSessionFile(name, f"not valid JSON (truncated or corrupt){detail}") from None
    return snapshot_from_dict(name, data, mtime=mtime, transcripts=transcripts)


@dataclass(slots=True)
class Scan:
    """What a pass over the sessions directory found."""

    directory: Path
    files: int = 0
    snapshots: list[UsageSnapshot] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    blank: int = 0
    filtered: int = 0


def scan_sessions(
    directory: Path | None = None,
    *,
    since: float | None = None,
    profile: str | None = None,
    keep: Callable[[UsageSnapshot], bool] | None = None,
    transcripts: bool = False,
    workers: int = 0,
) -> Scan:
    """Read every session file; bad ones are listed in ``bad``, blank chats counted.

    ``since`` keeps chats created at or after that epoch time; ``profile``
    keeps one profile's chats ("default" is the chats with no profile);
    ``transcripts`` also reads each chat's messages (for transcript mirroring).
    ``workers`` ≥ 1 parses in that many forked processes (JSON decoding is
    most of a backfill's reading). Forking is only for a process of its own,
    such as the CLI: never inside a host that runs threads.
    """
    directory = Path(directory) if directory is not None else default_sessions_dir()
    result = Scan(directory)
    wanted_profile = None if profile == "default" else profile
    for items in _read_parts(iter_session_files(directory), transcripts, workers, chunk=1000):
        result.files += len(items)
        for item in items:
            if isinstance(item, BadSessionFile):
                result.bad.append((item.name, item.reason))
            elif item.is_blank:
                result.blank += 1  # the live mirror skips these too
            elif (
                (profile is not None and item.profile != wanted_profile)
                or (since is not None and (item.created_at or 0.0) < since)
                or (keep is not None and not keep(item))
            ):
                result.filtered += 1
            else:
                result.snapshots.append(item)
    return result


# Below this many files, starting worker processes costs more than it saves.
_PARALLEL_FROM = 2000


def _read_chunk(paths: list[str], transcripts: bool) -> list[UsageSnapshot | BadSessionFile]:
    out: list[UsageSnapshot | BadSessionFile] = []
    for path in paths:
        try:
            out.append(read_session_file(path, transcripts=transcripts))
        except BadSessionFile as exc:
            out.append(exc)
    return out


def _read_parts(
    paths: list[str], transcripts: bool, workers: int, chunk: int
) -> Iterator[list[UsageSnapshot | BadSessionFile]]:
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    workers = min(workers, os.cpu_count() or 1)
    if workers < 1 or len(paths) < _PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
        for part in chunks:
            yield _read_chunk(part, transcripts)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        yield from pool.map(_read_chunk, chunks, [transcripts] * len(chunks))


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
