"""Reading the WebUI's own session files into snapshots.

hermes-webui keeps each chat as ``<state dir>/sessions/<session_id>.json``
with cumulative totals: the ground truth that ``backfill``, ``verify`` and
the reconcile sweep mirror from. The package is split by concern:

- ``folder``: which entries of the folder are chats (``_index.json``,
  ``*.bak``, ``*.tmp.*`` and ``_``-prefixed names are not), walked safely
  on a real, messy home;
- ``session_file``: one file read, bounded, into a validated snapshot;
- ``scanning``: a pass over the folder, part by part, every file accounted
  for once (``scan_sessions``, ``Scan``, ``SessionFiles``);
- ``pool``: the forked reader processes a command line uses; loaded only
  when workers are asked for, never in a host.

Every unreadable, dangling, oversized, empty, non-UTF-8 or malformed file
becomes a skip with a reason — counted, named in reports, never a crash.

Never: write, rename or lock a WebUI file (they are only read), or put chat
text into a report (reasons name the file and the field, not its content).
"""

from __future__ import annotations

from .folder import (
    BadSessionFile,
    SessionsFolderError,
    SessionsFolderMissing,
    default_sessions_dir,
    is_session_file_name,
    list_session_files,
)
from .scanning import OnPart, Scan, SessionFiles, scan_sessions
from .session_file import MAX_FILE_BYTES, read_session_file, snapshot_from_dict

__all__ = [
    "BadSessionFile",
    "SessionsFolderError",
    "SessionsFolderMissing",
    "Scan",
    "SessionFiles",
    "OnPart",
    "MAX_FILE_BYTES",
    "is_session_file_name",
    "list_session_files",
    "read_session_file",
    "snapshot_from_dict",
    "scan_sessions",
    "default_sessions_dir",
]
