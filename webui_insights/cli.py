"""``webui-insights`` command line: status, backfill, verify, demo, run.

The only place that configures logging output or prints; the commands
themselves (``commands/``) return reports. Every command says which folder
it read and which state.db files it touched, prints one JSON object with
``--json``, shows a progress bar only on a terminal, and ends with a
documented exit status.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

__all__ = ["main", "build_parser", "BACKFILL_READERS", "EXIT_OK", "EXIT_ATTENTION", "EXIT_USAGE", "EXIT_INTERRUPTED"]

# The CLI is a process of its own: it parses the session files in forked
# reader processes while this one writes (a backfill writes each part while
# the next is parsed), so one CPU is left to the writer; with a single CPU,
# reading happens in-process. Measured on 2 CPUs: 1 reader beats 2 (same
# best rate, better median, shorter lock holds).
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
BACKFILL_READERS = max(0, _CPUS - 1)

EXIT_OK = 0
EXIT_ATTENTION = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_EPILOG = """\
exit status:
  0    all fine, nothing to act on (a profile without a state.db is
       reported, not a failure, as long as one profile has a state.db)
  1    something to act on, with the reason printed: drift (verify), chats
       not written or refused, a state.db that could not be read or written,
       mirroring that would not work (status)
  2    usage: a bad option, or no WebUI sessions folder at the path given;
       backfill and verify also when it holds no session files (status
       reports an empty folder: a new WebUI has saved no chat yet)
  130  interrupted (Ctrl-C): what committed is kept, nothing is half
       written; run the same command again to finish

Each command prints the folder it read and every state.db it touched;
--json prints one JSON object instead, with the exit status as exit_code.

where things are read from:
  HERMES_HOME             hermes root home: the default profile's state.db,
                          other profiles under profiles/<name> (default ~/.hermes)
  HERMES_WEBUI_STATE_DIR  WebUI state directory with sessions/ and settings.json
                          (default $HERMES_HOME/webui); or --webui-dir
  WEBUI_INSIGHTS_ENABLED  1/0 overrides the WebUI setting sync_to_insights

Start with `webui-insights status`; after turning mirroring on, run
`webui-insights backfill` once to bring in older chats."""


class UsageError(Exception):
    """Exit 2 with this message (and a hint)."""


class _BadArguments(Exception):
    """argparse refused the command line; raised instead of its exit so ``--json`` still gets its object."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are raised (``_BadArguments``), not printed and exited on.

    Subcommand parsers are made of the same class (argparse's default), so
    an error in any of them reaches ``main``, which prints argparse's usage
    and message as before and, with ``--json``, the error object every
    other failure prints.
    """

    def error(self, message: str) -> NoReturn:
        raise _BadArguments(self, message)


def _since(text: str) -> float:
    """YYYY-MM-DD (local midnight) or an ISO date-time, as an epoch timestamp."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None


def _profile(text: str) -> str:
    from .profiles import DEFAULT_PROFILE, is_valid_profile_name

    if text != DEFAULT_PROFILE and not is_valid_profile_name(text):
        raise argparse.ArgumentTypeError(f"not a hermes profile name: {text!r}")
    return text


def _version() -> str:
    from . import __version__

    return f"webui-insights {__version__}"


def _common(parser: argparse.ArgumentParser, *, since: bool = True) -> None:
    parser.add_argument(
        "--profile",
        metavar="NAME",
        type=_profile,
        help="only chats of this hermes profile ('default': chats stamped 'default' or none)",
    )
    if since:
        parser.add_argument(
            "--since", metavar="DATE", type=_since, help="only chats created on or after DATE (YYYY-MM-DD, local time)"
        )
    parser.add_argument(
        "--webui-dir",
        metavar="DIR",
        type=Path,
        help="the WebUI state directory holding sessions/ (default: $HERMES_WEBUI_STATE_DIR, else $HERMES_HOME/webui)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress and no per-chat lines; summary only")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="webui-insights",
        description="Mirror hermes-webui chats into hermes-agent's state.db, so `hermes insights` "
        "and `hermes sessions list` include them, and check that it works.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the mirror does (to stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = sub.add_parser(
        "status",
        help="say whether mirroring would work here, per profile, and why not",
        description="Check hermes-agent, the switch, the WebUI sessions folder and each profile's state.db, "
        "and count each profile's chats by what the engine would do (up to date, behind, deleted in hermes, "
        "written by hermes-agent itself). Exits 1 with the reason when mirroring would not work.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(status, since=False)
    status.set_defaults(handler=_cmd_status)

    backfill = sub.add_parser(
        "backfill",
        help="bring the WebUI's existing chats into state.db (safe to repeat)",
        description="Run every existing WebUI chat through the same rule as a live save, into its own "
        "profile's state.db, dated by the chat's creation so `hermes insights --days N` counts it on the "
        "right day. Chats already right are left alone (a second run writes nothing); an interrupted run "
        "resumes when repeated. Chats deleted in hermes are listed, not restored (see --restore-deleted). "
        "The WebUI's files are never modified.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(backfill)
    backfill.add_argument(
        "--dry-run", action="store_true", help="report what would be written; open state.db read-only"
    )
    backfill.add_argument(
        "--transcripts",
        action="store_true",
        help="also copy each chat's messages (their content) into state.db, so the agent's session search finds them",
    )
    backfill.add_argument(
        "--restore-deleted", action="store_true", help="also bring back chats that were deleted in hermes"
    )
    backfill.set_defaults(handler=_cmd_backfill)

    verify = sub.add_parser(
        "verify",
        help="compare the WebUI's chats with state.db, field by field, in hermes' terms",
        description="Plan every chat with the engine, read-only, and list each field state.db would need "
        "to change: tokens (hermes' convention: input without cached tokens), cache, cost, model, title (as "
        "hermes stores it), started_at, ended_at, message and tool-call counts. A title renamed in hermes, a "
        "chat deleted in hermes, a row hermes-agent writes itself are not differences.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(verify)
    verify.add_argument(
        "--fix", action="store_true", help="apply the engine to the chats that differ, then check again"
    )
    verify.add_argument("--transcripts", action="store_true", help="also compare the mirrored messages")
    verify.set_defaults(handler=_cmd_verify)

    demo = sub.add_parser(
        "demo",
        help="a scripted WebUI chat in a temporary HERMES_HOME, then the real `hermes insights` report",
        description="Run a scripted three-turn chat through the wrapped save in a temporary HERMES_HOME, "
        "then print what `hermes insights --days 1 --source webui` shows.",
    )
    demo.add_argument("--keep", action="store_true", help="keep the temporary HERMES_HOME")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    demo.set_defaults(handler=_cmd_demo, quiet=False)

    run = sub.add_parser(
        "run",
        help="run a command (the WebUI's start.sh, bootstrap.py, server.py) with install() active in it",
        usage="webui-insights run [--enabled | --no-enabled] [--transcripts | --no-transcripts] [--json] -- "
        "COMMAND [ARG...]\n       webui-insights run --print-env [--enabled ...] [--json]",
        description="Replace this process with COMMAND, with webui_insights.install() active in every Python "
        "process it starts (hermes-webui's server included, whether COMMAND execs or spawns it), without a "
        "line of the WebUI changed: the package's bootstrap folder goes first on PYTHONPATH (a sitecustomize "
        "that installs the mirror when the WebUI's api.models is imported, and then runs any sitecustomize it "
        "hides), and WEBUI_INSIGHTS_AUTOINSTALL=1 turns it on. COMMAND's Python must be one where "
        "webui-insights is installed. COMMAND becomes this process: its exit status, its PID and the "
        "signals sent to it (Ctrl-C, SIGTERM) are the launcher's. Exit status 2 when COMMAND is missing or "
        "cannot be started.",
        epilog="--print-env prints the same variables for a service's environment (systemd Environment=, a "
        "Dockerfile ENV): see README, Turn it on.",
    )
    run.add_argument(
        "--enabled",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mirroring on/off in COMMAND (WEBUI_INSIGHTS_ENABLED=1/0); default: the WebUI's setting sync_to_insights",
    )
    run.add_argument(
        "--transcripts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also copy messages into state.db (WEBUI_INSIGHTS_TRANSCRIPTS=1/0); default: the WebUI's setting",
    )
    run.add_argument(
        "--print-env", action="store_true", help="print the variables that do the same, one KEY=VALUE a line, and exit"
    )
    run.add_argument("--json", action="store_true", help="errors and --print-env as one JSON object")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help=argparse.SUPPRESS)
    run.set_defaults(handler=_cmd_run, quiet=False)
    return parser


# ------------------------------------------------------------------ helpers


def _homes() -> Any:
    from .profiles import Homes

    return Homes.capture()


def _sessions_dir(args: argparse.Namespace) -> Path:
    from .sources import default_sessions_dir

    webui_dir: Path | None = getattr(args, "webui_dir", None)
    return webui_dir / "sessions" if webui_dir is not None else default_sessions_dir()


def _hint(directory: Path) -> str:
    hint = "set HERMES_WEBUI_STATE_DIR or pass --webui-dir DIR (the WebUI state directory that holds sessions/)"
    parent = directory.parent
    if directory.name == "sessions" and parent.name == "sessions" and parent.is_dir():
        hint += f"; {parent} looks like the sessions folder itself: pass its parent, --webui-dir {parent.parent}"
    return hint


def _session_files(args: argparse.Namespace, *, keep_messages: bool = False) -> Any:
    from .sources import SessionFiles

    return SessionFiles(
        _sessions_dir(args),
        since=getattr(args, "since", None),
        profile=args.profile,
        keep_messages=keep_messages,
        workers=BACKFILL_READERS,
    )


def _folder_problem(exc: OSError, directory: Path) -> UsageError:
    """The sessions folder itself is missing or cannot be listed: a usage error naming it."""
    from .sources import SessionsFolderMissing

    if isinstance(exc, SessionsFolderMissing):
        return UsageError(f"no WebUI sessions folder at {directory}; {_hint(directory)}")
    return UsageError(f"cannot read the WebUI sessions folder {directory}: {exc.strerror or exc}; {_hint(directory)}")


def _read(args: argparse.Namespace, run: _Run, *, keep_messages: bool = False, require: bool = True) -> Any:
    """Read the sessions folder; UsageError when it is missing or (``require``) holds no session files."""
    from .sources import SessionsFolderError

    files = _session_files(args, keep_messages=keep_messages)
    run.phase = f"reading the session files in {files.directory}; nothing was written"
    progress = _Progress("reading", enabled=run.progress)
    try:
        scan = files.read(lambda so_far, _chats: progress(so_far.done, so_far.files))
    except SessionsFolderError as exc:
        raise _folder_problem(exc, files.directory) from None
    finally:
        progress.close()
    if require and scan.files == 0:
        raise UsageError(f"no WebUI session files in {files.directory}; {_hint(files.directory)}")
    return scan


class _Run:
    """One command's run: how it reports, and what to say if it is interrupted."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.command: str = args.command
        self.json: bool = bool(getattr(args, "json", False))
        self.quiet: bool = bool(getattr(args, "quiet", False))
        self.progress = not (self.quiet or self.json)
        self.out = out
        self.phase = "starting; nothing was written"
        self.home: str | None = None

    def emit(self, data: dict[str, Any], code: int) -> int:
        data = {**data, "exit_code": code}
        if self.home is not None:
            data.setdefault("hermes_home", self.home)
        json.dump(data, self.out, indent=2, default=str)
        self.out.write("\n")
        return code


class _Progress:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise. Started at the first tick."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        if self._bar is None:
            if done == 0:
                return  # not before the first part: reader processes are forked without a thread running

            try:
                from rich.console import Console
                from rich.progress import Progress
            except ImportError:
                self.enabled = False
                return
            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=total)
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.stop()


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


def _notes_text(notes: Any) -> str:
    return ", ".join(f"{n} × {_NOTES.get(k, k.replace('_', ' '))}" for k, n in sorted(notes.items()) if n)


def _print_home(home: str, out: TextIO) -> None:
    print(f"hermes home: {home} (default profile's state.db, other profiles under profiles/)", file=out)


def _print_files(
    out: TextIO,
    quiet: bool,
    *,
    directory: Any,
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


def _print_databases(databases: Any, out: TextIO, home: str | None) -> None:
    from .commands.batch import nowhere

    for d in databases:
        profiles = ", ".join(d.profiles)
        counts = ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in sorted(d.outcomes.items()))
        ro = " (read-only)" if d.read_only else ""
        line = f"profile {profiles}: {d.state_db}{ro}: {d.chats} chats ({counts})"
        if d.status != "ok":
            line += f"; NOT MIRRORED: {d.problem}"
        notes = _notes_text(d.notes)
        if notes:
            line += f"; {notes}"
        print(line, file=out)
    if nowhere(databases):
        print(
            f"NOT MIRRORED ANYWHERE: no profile of these chats has a state.db under {home}; "
            "run hermes once, or point HERMES_HOME at the right home",
            file=out,
        )


def _print_refused(refused: Any, out: TextIO) -> None:
    for session_id, reason in refused:
        print(f"not mirrored: {session_id}: {reason}", file=out)


# ------------------------------------------------------------------- status


def _cmd_status(args: argparse.Namespace, run: _Run) -> int:
    from .commands.status import collect_status

    homes = _homes()
    run.home = str(homes.root)
    # An empty sessions folder is reported (a new WebUI has saved no chat yet); a missing one is not.
    scan = _read(args, run, require=False)
    run.phase = "checking each profile's state.db; nothing was written"
    status = collect_status(scan, homes, profile=args.profile)
    code = EXIT_OK if status.ok else EXIT_ATTENTION
    if run.json:
        return run.emit(status.as_dict(), code)
    _print_status(status, run.home, run.out)
    return code


def _print_status(status: Any, home: str, out: TextIO) -> None:
    def line(label: str, text: str) -> None:
        print(f"{label:<18}{text}", file=out)

    if status.hermes_agent:
        line("hermes-agent", f"{status.hermes_agent_version or 'unknown version'} (importable)")
    else:
        line("hermes-agent", f"NOT importable: {status.hermes_agent_error}")
    line("mirroring", f"{'on' if status.enabled else 'off'} ({status.enabled_source})")
    line("transcripts", f"{'on' if status.transcripts else 'off'} ({status.transcripts_source})")
    for note in status.degraded:
        line("degraded", note)
    line("hermes home", f"{home} (other profiles under profiles/)")
    skipped = ", ".join(f"{n} {k}" for k, n in sorted(status.skipped_files.items()))
    line(
        "WebUI sessions",
        f"{status.sessions_dir}: {status.session_files} files" + (f" ({skipped} skipped)" if skipped else ""),
    )
    if status.session_files == 0:
        line("", "no WebUI chats saved here yet (run backfill once there are)")
    for item in status.profiles:
        label = f"profile {item.name}"
        if item.state != "ok":
            line(label, f"{item.state_db or '-'}: {item.state}: {item.problem}; {item.webui_chats} WebUI chats")
            continue
        ro = " (read-only)" if item.read_only else ""
        line(
            label,
            f"{item.state_db}{ro}: {item.webui_chats} WebUI chats: {item.up_to_date} up to date, {item.behind} behind, "
            f"{item.deleted_in_hermes} deleted in hermes; rows: {item.mirrored} mirrored, "
            f"{item.hermes_written} written by hermes-agent, {item.foreign} of other sources",
        )
        if item.titles_refused:
            line("", f"{item.titles_refused} titles hermes would not store (too long or empty after cleaning)")
        notes = _notes_text(item.notes)
        if notes:
            line("", notes)
        writer = item.writer
        if writer and writer.get("last_error"):
            when = datetime.fromtimestamp(writer["last_error_at"]).isoformat(timespec="seconds")
            nxt = writer.get("next_try_at")
            retry = f", next try {datetime.fromtimestamp(nxt).isoformat(timespec='seconds')}" if nxt else ""
            line("", f"last error {when}: {writer['last_error']}{retry}")
    line("host bridge", _host_bridge_text(status))
    if status.in_process and status.stats is not None:
        stats = status.stats
        line("in this process", f"{stats['rows_written']} rows written, {stats['pending']} pending")
    if status.ok:
        print("OK: mirroring would work", file=out)
    else:
        for extra in status.problems[1:]:
            print(f"also: {extra}", file=out)
        print(f"NOT MIRRORING: {status.problems[0]}", file=out)


def _host_bridge_text(status: Any) -> str:
    """What happens to hermes-webui's own state.db bridge, which answers to the same checkbox."""
    text = (
        "hermes-webui's own api/state_sync.py is silenced in the WebUI's process while mirroring is on "
        "(one writer per chat); off, it works as before"
    )
    if status.in_process and status.stats is not None:
        text += f"; {status.stats.get('host_bridge_suppressed', 0)} of its calls skipped in this process"
    return text


# ----------------------------------------------------------------- backfill


def _cmd_backfill(args: argparse.Namespace, run: _Run) -> int:
    from .commands.backfill import backfill
    from .sources import SessionsFolderError

    homes = _homes()
    run.home = str(homes.root)
    files = _session_files(args, keep_messages=args.transcripts)
    run.phase = f"reading {files.directory}; nothing was written"
    progress = _Progress("dry run" if args.dry_run else "backfill", enabled=run.progress)
    try:
        report = backfill(
            files,
            homes,
            dry_run=args.dry_run,
            transcripts=args.transcripts,
            restore_deleted=args.restore_deleted,
            progress=progress,
        )
    except SessionsFolderError as exc:
        raise _folder_problem(exc, files.directory) from None
    except KeyboardInterrupt as exc:
        progress.close()
        so_far = getattr(exc, "report", None)
        if so_far is None:
            raise
        return _backfill_interrupted(so_far, run)
    finally:
        progress.close()
    if report.files == 0:
        raise UsageError(f"no WebUI session files in {files.directory}; {_hint(files.directory)}")
    code = EXIT_OK if report.complete else EXIT_ATTENTION
    if run.json:
        return run.emit(report.as_dict(), code)
    _print_backfill(report, run)
    return code


def _backfill_interrupted(report: Any, run: _Run) -> int:
    if report.dry_run:
        line = "interrupted: dry run, nothing was written"
    elif report.files == 0:
        line = f"interrupted while listing {report.sessions_dir}: nothing was written"
    else:
        line = (
            f"interrupted: {report.written} chats written and kept; {report.unread} of {report.files} files "
            f"not read, {report.outcomes.get('not_done', 0)} chats read but not written; nothing is half written, "
            "run the same command again to finish"
        )
    line = f"webui-insights backfill: {line}"
    print(line, file=sys.stderr)
    if run.json:
        run.emit({**report.as_dict(), "message": line}, EXIT_INTERRUPTED)
    return EXIT_INTERRUPTED


def _print_backfill(report: Any, run: _Run) -> None:
    out = run.out
    _print_home(run.home or "", out)
    _print_files(
        out,
        run.quiet,
        directory=report.sessions_dir,
        files=report.files,
        chats=report.chats,
        blank=report.blank,
        filtered=report.filtered,
        bad=report.unreadable,
        unread=report.unread,
    )
    _print_databases(report.databases, out, run.home)
    _print_refused(report.refused, out)
    deleted = report.deleted_in_hermes
    if deleted:
        print(
            f"{len(deleted)} chats were deleted in hermes and are left out (--restore-deleted brings them back)"
            + ("" if run.quiet else ": " + ", ".join(deleted[:20]) + (" …" if len(deleted) > 20 else "")),
            file=out,
        )
    for database in report.databases:
        for session_id, why in database.title_problems:
            print(f"title not set for {session_id}: {why}", file=out)
    outcomes = report.outcomes
    if report.dry_run:
        print(
            f"dry run: would write {report.written} chats ({outcomes['created']} new, {outcomes['updated']} updated, "
            f"{outcomes['restored']} restored); {outcomes['unchanged']} already up to date; nothing was written",
            file=out,
        )
        return
    transactions = sum(d.transactions for d in report.databases)
    hold = max((d.max_lock_hold_s for d in report.databases), default=0.0)
    write_s = sum(d.write_s for d in report.databases)
    rate = report.chats / report.total_s if report.total_s > 0 else 0.0
    print(
        f"wrote {report.written} chats ({outcomes['created']} new, {outcomes['updated']} updated, "
        f"{outcomes['restored']} restored) in {transactions} transactions; {outcomes['unchanged']} already up to date",
        file=out,
    )
    if not run.quiet:
        print(
            f"write time {write_s:.3f} s, longest lock hold {hold * 1000:.1f} ms, total {report.total_s:.3f} s "
            f"({rate:,.0f} chats/s)",
            file=out,
        )


# ------------------------------------------------------------------- verify


def _cmd_verify(args: argparse.Namespace, run: _Run) -> int:
    from .commands.verify import verify

    homes = _homes()
    run.home = str(homes.root)
    scan = _read(args, run, keep_messages=args.transcripts)
    run.phase = (
        "comparing or fixing: the chats fixed so far are kept, nothing is half written"
        if args.fix
        else "comparing with state.db; nothing was written"
    )
    report = verify(scan, homes, fix=args.fix, transcripts=args.transcripts)
    code = EXIT_OK if report.ok else EXIT_ATTENTION
    if run.json:
        return run.emit(report.as_dict(), code)
    _print_verify(report, scan, run, args.fix)
    return code


def _print_verify(report: Any, scan: Any, run: _Run, fix: bool) -> None:
    out = run.out
    _print_home(run.home or "", out)
    _print_files(
        out,
        run.quiet,
        directory=scan.directory,
        files=scan.files,
        chats=len(scan.snapshots),
        blank=scan.blank,
        filtered=scan.filtered,
        bad=scan.bad,
    )
    _print_databases(report.databases, out, run.home)
    _print_refused(report.refused, out)
    drifted = report.drifted
    if not run.quiet:
        for plan in drifted:
            details = "; ".join(
                f"{d.field} webui={_shown(d.field, d.want)} state.db={_shown(d.field, d.have)}" for d in plan.drift
            )
            print(f"{plan.session_id} ({plan.owner or 'new'}): {details}", file=out)
    for where, reason in report.fix_problems:
        print(f"not fixed: {where}: {reason}", file=out)
    deleted = report.deleted_in_hermes
    if deleted:
        print(f"{len(deleted)} chats were deleted in hermes (kept deleted; not a difference)", file=out)
    if fix:
        still = f", {len(drifted)} still differ" if drifted else ""
        print(f"{report.chats} chats checked, {report.differed} differed, {report.fixed} fixed{still}", file=out)
    else:
        print(f"{report.chats} chats checked, {len(drifted)} differ", file=out)
        if drifted:
            print("run `webui-insights verify --fix` to apply them", file=out)


def _shown(field: str, value: Any) -> str:
    """A drift value for a text line: times as local date-times, everything else as Python shows it."""
    if field.endswith("_at") and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value).isoformat(timespec="seconds")
        except (OverflowError, OSError, ValueError):
            pass
    return repr(value)


# --------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace, run: _Run) -> int:
    from .commands.demo import run_demo

    run.phase = "running the demo in a temporary HERMES_HOME (removed)"
    return run_demo(keep=args.keep, as_json=args.json, out=run.out)


# ---------------------------------------------------------------------- run


def _cmd_run(args: argparse.Namespace, run: _Run) -> int:
    """Thin: the launcher (``launcher.py``) builds the environment and execs; here only arguments and output."""
    from .launcher import LaunchError, exec_command, launch_env, recipe

    unknown: list[str] = getattr(args, "unknown", [])
    if unknown:
        run.json = run.json or "--json" in unknown  # ``--json run ...``: the error object as everywhere else
        raise UsageError(f"unknown option {unknown[0]!r}; options go before --, COMMAND after it (see run -h)")
    command = list(args.argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if args.print_env:
        if command:
            raise UsageError("--print-env takes no COMMAND")
        env = recipe(enabled=args.enabled, transcripts=args.transcripts)
        if run.json:
            return run.emit({"command": "run", "env": env}, EXIT_OK)
        for key, value in env.items():
            print(f"{key}={shlex.quote(value)}", file=run.out)
        return EXIT_OK
    if not command:
        raise UsageError("no command to run: webui-insights run [options] -- COMMAND [ARG...]")
    try:
        exec_command(command, launch_env(enabled=args.enabled, transcripts=args.transcripts))
    except LaunchError as exc:
        raise UsageError(str(exc)) from None


# --------------------------------------------------------------------- main


def _on_sigint(signum: int, frame: Any) -> None:
    # The first Ctrl-C interrupts; the clean-up after it (bounded) is not interrupted again.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    batch = sys.modules.get("webui_insights.commands.batch")
    if batch is not None and batch.hold_interrupt():
        return  # a commit is being counted: raised right after (commands.batch._Hold)
    raise KeyboardInterrupt


# Commands that go through every chat of a home (tens of thousands of small objects a second).
_BULK_COMMANDS = frozenset({"status", "backfill", "verify"})


@contextmanager
def _cycle_collector_paused(command: str) -> Iterator[None]:
    """Python's cycle collector off while a bulk command runs, back on (if it was) afterwards.

    A backfill makes and drops tens of thousands of snapshots, plans and
    rows a second, none of them in reference cycles (reference counting
    frees them); the collector's passes over them took about a tenth of
    the run (10,000 chats, 6 alternating runs each: 18.4k → 20.5k chats/s
    median). Only the command line does this, for its own command: the
    library never touches the collector of a host's process.
    """
    if command not in _BULK_COMMANDS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_COMMANDS = ("status", "backfill", "verify", "demo", "run")


def _bad_arguments(exc: _BadArguments, argv: Sequence[str]) -> int:
    """argparse's usage and message on stderr, as argparse prints them; the error object too with ``--json``."""
    exc.parser.print_usage(sys.stderr)
    print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
    words = list(argv)
    if "--json" in (words[: words.index("--")] if "--" in words else words):
        prog = exc.parser.prog.split()
        # An error of a command's own parser names it; one found by the top parser
        # (arguments left over) belongs to the first word that is a command.
        command = prog[1] if len(prog) > 1 else next((w for w in words if w in _COMMANDS), None)
        json.dump({"command": command, "error": exc.message, "exit_code": EXIT_USAGE}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown and args.command != "run":  # run's own options are its to report (its --json object)
            parser.error("unrecognized arguments: " + " ".join(unknown))
    except _BadArguments as exc:
        return _bad_arguments(exc, sys.argv[1:] if argv is None else argv)
    args.unknown = unknown
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")  # a title in any script never fails a print
    # Only a process's own Ctrl-C handling is replaced (not an embedding application's).
    own_sigint = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if own_sigint:
        signal.signal(signal.SIGINT, _on_sigint)
    run = _Run(args, sys.stdout)
    try:
        with _cycle_collector_paused(args.command):
            result: int = args.handler(args, run)
        return result
    except UsageError as exc:
        print(f"webui-insights {args.command}: {exc}", file=sys.stderr)
        if run.json:
            run.emit({"command": args.command, "error": str(exc)}, EXIT_USAGE)
        return EXIT_USAGE
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        line = f"webui-insights {args.command}: interrupted while {run.phase}"
        print(line, file=sys.stderr)
        if run.json:
            run.emit({"command": args.command, "interrupted": True, "error": line}, EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`| head`): nothing more to say, to anyone.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ATTENTION
    except Exception as exc:
        if args.verbose:
            logging.getLogger("webui_insights").exception("webui-insights %s failed", args.command)
        print(
            f"webui-insights {args.command}: failed: {type(exc).__name__}: {exc}"
            + ("" if args.verbose else " (-v shows where)"),
            file=sys.stderr,
        )
        if run.json:
            run.emit({"command": args.command, "error": f"{type(exc).__name__}: {exc}"}, EXIT_ATTENTION)
        return EXIT_ATTENTION
    finally:
        # After a Ctrl-C the process is leaving: more Ctrl-C must not kill it on its way out
        # (it exits 130, not by SIGINT). Called with argv (tests, other code), restore.
        if own_sigint and (argv is not None or signal.getsignal(signal.SIGINT) is _on_sigint):
            signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
