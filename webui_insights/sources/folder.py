"""Walking the WebUI's sessions folder: which entries are chats, and which are refused.

The walk never follows a link out of the folder or into a loop and never
blocks on something that is not a regular file: a dangling link, a loop, a
link leading elsewhere, a directory or a FIFO named ``*.json`` becomes a
``BadSessionFile`` with a reason (counted and named in reports), never a
crash. Only the folder itself failing raises (``SessionsFolderError``).

Never: open a session file (``session_file`` reads them) or write anything.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..settings import webui_sessions_dir

__all__ = [
    "BadSessionFile",
    "SessionsFolderError",
    "SessionsFolderMissing",
    "default_sessions_dir",
    "is_session_file_name",
    "list_session_files",
    "refusal",
    "shown",
]


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


def shown(name: str) -> str:
    """A file name fit for a report line: undecodable bytes and control characters replaced."""
    if name.isprintable():
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:
            pass
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def refusal(name: str, exc: OSError, link: bool) -> BadSessionFile:
    """Why an entry could not be reached, as a skip: a loop, a dangling link, or the system's reason."""
    if exc.errno == errno.ELOOP:
        return BadSessionFile(shown(name), "link_loop", "a symbolic link loop")
    if link and exc.errno == errno.ENOENT:
        return BadSessionFile(shown(name), "dangling_link", "a link to nothing")
    return BadSessionFile(shown(name), "unreadable", f"cannot read: {exc.strerror or exc}")


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
        if not is_session_file_name(entry.name):
            continue
        why = _refused_entry(entry, root)
        if why is None:
            files.append(entry.path)
        else:
            refused.append(why)
    files.sort()
    return files, refused


def _refused_entry(entry: os.DirEntry[str], root: str) -> BadSessionFile | None:
    """None for a regular file in the folder (or a link to one there); otherwise why it is skipped."""
    name = entry.name
    link = False
    try:
        link = entry.is_symlink()
        if link:
            info = os.stat(entry.path)  # follows the link: ELOOP for a loop, ENOENT for nothing
            if os.path.dirname(os.path.realpath(entry.path)) != root:
                return BadSessionFile(shown(name), "link_outside", "a link to a file outside the folder")
            regular = stat.S_ISREG(info.st_mode)
        else:
            # From the directory entry's type, no system call (a stat only where the
            # filesystem does not say); the reader checks the opened file again.
            regular = entry.is_file(follow_symlinks=False)
    except OSError as exc:
        return refusal(name, exc, link)
    if not regular:
        return BadSessionFile(shown(name), "not_a_file", "not a regular file")
    return None
