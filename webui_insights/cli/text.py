"""Text lines more than one command prints: the home, the folder's files, each state.db, refused chats.

``status``, ``backfill`` and ``verify`` account for the same things (every
file once, every chat once, every state.db touched); they say it in the
same words, written here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ..commands.batch import DatabaseOutcome

__all__ = ["notes_text", "print_databases", "print_files", "print_home", "print_refused"]

_NOTES = {
    "future_created_at": "created_at in the future: counted from now",
    "future_last_active_at": "last activity in the future: ended now",
    "version_future": "updated_at in the future: not used to order saves",
    "version_missing": "no updated_at: ordered by file time",
    "version_invalid": "updated_at not a time: ordered by file time",
    "title_refused": "title hermes would not store (too long or empty after cleaning)",
    "version_recorded_future": "a version a clock ahead recorded: not used to order saves",
    "inherited_usage": "copied or imported chats: what they inherited is not their spend",
    "record_damaged": "webui-insights' record of the chat is damaged: chat left alone (delete that record to redo it)",
    "record_newer_release": "record written by a newer webui-insights: chat left alone (upgrade)",
    "row_value_invalid": "a value in the row was not of its type: set right where the row is webui-insights'",
}


def notes_text(notes: Mapping[str, int]) -> str:
    return ", ".join(f"{n} × {_NOTES.get(k, k.replace('_', ' '))}" for k, n in sorted(notes.items()) if n)


def print_home(home: str, out: TextIO) -> None:
    print(f"hermes home: {home} (default profile's state.db, other profiles under profiles/)", file=out)


def print_files(
    out: TextIO,
    quiet: bool,
    *,
    directory: str | Path,
    files: int,
    chats: int,
    blank: int,
    filtered: int,
    bad: list[tuple[str, str, str]],
    unread: int = 0,
) -> None:
    """The sessions folder read, and every file in it accounted for once."""
    kinds: dict[str, int] = {}
    for _name, kind, _reason in bad:
        kinds[kind] = kinds.get(kind, 0) + 1
    skipped = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    print(
        f"WebUI sessions: {directory}: {files} files = {chats} chats + {blank} blank + "
        f"{filtered} outside --since/--profile + {len(bad)} skipped"
        + (f" ({skipped})" if skipped else "")
        + (f" + {unread} not read (interrupted)" if unread else ""),
        file=out,
    )
    if not quiet:
        for name, _kind, reason in bad:
            print(f"  skipped {name}: {reason}", file=out)


def print_databases(databases: Sequence[DatabaseOutcome], out: TextIO, home: str | None) -> None:
    from ..commands.batch import nowhere

    for d in databases:
        profiles = ", ".join(d.profiles)
        counts = ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in sorted(d.outcomes.items()))
        ro = " (read-only)" if d.read_only else ""
        line = f"profile {profiles}: {d.state_db}{ro}: {d.chats} chats ({counts})"
        if d.status != "ok":
            line += f"; NOT MIRRORED: {d.problem}"
        notes = notes_text(d.notes)
        if notes:
            line += f"; {notes}"
        print(line, file=out)
    if nowhere(databases):
        print(
            f"NOT MIRRORED ANYWHERE: no profile of these chats has a state.db under {home}; "
            "run hermes once, or point HERMES_HOME at the right home",
            file=out,
        )


def print_refused(refused: Sequence[tuple[str, str]], out: TextIO) -> None:
    for session_id, reason in refused:
        print(f"not mirrored: {session_id}: {reason}", file=out)
