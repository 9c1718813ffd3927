"""What every presenter has to hand: exit statuses, the run being reported, the progress bar, the folder.

A presenter (``status``, ``backfill``, ``verify``, ``demo``, ``launch``)
turns a command's report into text or one JSON object; what they share is
here. The commands and the engine are imported inside the functions that
need them, so ``--help`` and ``run`` stay instant; the types they name are
imported for the type checker only.

Never: print anything but through ``CommandRun`` or the caller's stream.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from ..profiles import Homes
    from ..sources import Scan, SessionFiles

__all__ = [
    "BACKFILL_READERS",
    "EXIT_OK",
    "EXIT_ATTENTION",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "CommandRun",
    "Progress",
    "UsageError",
    "folder_problem",
    "hint",
    "homes",
    "read_folder",
    "session_files",
]

# The CLI is a process of its own: it parses the session files in forked
# reader processes while this one writes (a backfill writes each part while
# the next is parsed), so one CPU is left to the writer; with a single CPU,
# reading happens in-process. One reader for two CPUs, not two: a reader
# competing with the writer for the second CPU makes the writer's lock
# holds longer without reading any faster.
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
BACKFILL_READERS = max(0, _CPUS - 1)

EXIT_OK = 0
EXIT_ATTENTION = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Exit 2 with this message (and a hint)."""


class CommandRun:
    """One command's run: how it reports, and what to say if it is interrupted.

    ``hold_interrupt`` is the cancel hook of the work in progress: a
    command that commits in batches sets it (``commands.batch``'s), and the
    Ctrl-C handler asks it whether to raise now or let the batch raise once
    its commit is counted.
    """

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.command: str = args.command
        self.json: bool = bool(getattr(args, "json", False))
        self.quiet: bool = bool(getattr(args, "quiet", False))
        self.progress = not (self.quiet or self.json)
        self.out = out
        self.phase = "starting; nothing was written"
        self.home: str | None = None
        self.hold_interrupt: Callable[[], bool] | None = None

    def emit(self, data: Mapping[str, object], code: int) -> int:
        out = {**data, "exit_code": code}
        if self.home is not None:
            out.setdefault("hermes_home", self.home)
        json.dump(out, self.out, indent=2, default=str)
        self.out.write("\n")
        return code


class Progress:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise. Started at the first tick."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        if self._bar is None:
            if done == 0:
                return  # not before the first part: reader processes are forked without a thread running

            try:
                from rich.console import Console
                from rich.progress import Progress as RichProgress
            except ImportError:
                self.enabled = False
                return
            self._bar = RichProgress(console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=total)
        assert self._task is not None
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.stop()


def homes() -> Homes:
    from ..profiles import Homes

    return Homes.capture()


def _sessions_dir(args: argparse.Namespace) -> Path:
    from ..sources import default_sessions_dir

    webui_dir: Path | None = getattr(args, "webui_dir", None)
    return webui_dir / "sessions" if webui_dir is not None else default_sessions_dir()


def hint(directory: Path) -> str:
    """How to point the command at the right folder (and the likely mistake, if it looks like one)."""
    text = "set HERMES_WEBUI_STATE_DIR or pass --webui-dir DIR (the WebUI state directory that holds sessions/)"
    parent = directory.parent
    if directory.name == "sessions" and parent.name == "sessions" and parent.is_dir():
        text += f"; {parent} looks like the sessions folder itself: pass its parent, --webui-dir {parent.parent}"
    return text


def session_files(args: argparse.Namespace, *, keep_messages: bool = False) -> SessionFiles:
    from ..sources import SessionFiles

    return SessionFiles(
        _sessions_dir(args),
        since=getattr(args, "since", None),
        profile=args.profile,
        keep_messages=keep_messages,
        workers=BACKFILL_READERS,
    )


def folder_problem(exc: OSError, directory: Path) -> UsageError:
    """The sessions folder itself is missing or cannot be listed: a usage error naming it."""
    from ..sources import SessionsFolderMissing

    if isinstance(exc, SessionsFolderMissing):
        return UsageError(f"no WebUI sessions folder at {directory}; {hint(directory)}")
    return UsageError(f"cannot read the WebUI sessions folder {directory}: {exc.strerror or exc}; {hint(directory)}")


def read_folder(
    args: argparse.Namespace, run: CommandRun, *, keep_messages: bool = False, require: bool = True
) -> Scan:
    """Read the sessions folder; UsageError when it is missing or (``require``) holds no session files."""
    from ..sources import SessionsFolderError

    files = session_files(args, keep_messages=keep_messages)
    run.phase = f"reading the session files in {files.directory}; nothing was written"
    progress = Progress("reading", enabled=run.progress)
    try:
        scan = files.read(lambda so_far, _chats: progress(so_far.done, so_far.files))
    except SessionsFolderError as exc:
        raise folder_problem(exc, files.directory) from None
    finally:
        progress.close()
    if require and scan.files == 0:
        raise UsageError(f"no WebUI session files in {files.directory}; {hint(files.directory)}")
    return scan
