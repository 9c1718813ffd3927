"""The command line's grammar: one ``argparse`` parser, a sub-parser per command.

Each command's options are declared in a function of its own; the handler
a sub-parser names is that command's presenter (``status``, ``backfill``,
``verify``, ``demo``, ``launch``). Usage errors are raised
(``BadArguments``), never printed and exited on here: ``entry.main`` prints
them, and with ``--json`` the error object every other failure prints.

Never: import the commands or the engine (a ``--help`` stays instant).
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from . import backfill, demo, launch, status, verify

__all__ = ["BadArguments", "COMMANDS", "build_parser"]

COMMANDS = ("status", "backfill", "verify", "demo", "run")

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


class BadArguments(Exception):
    """argparse refused the command line; raised instead of its exit so ``--json`` still gets its object."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are raised (``BadArguments``), not printed and exited on.

    Subcommand parsers are made of the same class (argparse's default), so
    an error in any of them reaches ``main``, which prints argparse's usage
    and message as before and, with ``--json``, the error object every
    other failure prints.
    """

    def error(self, message: str) -> NoReturn:
        raise BadArguments(self, message)


def _since(text: str) -> float:
    """YYYY-MM-DD (local midnight) or an ISO date-time, as an epoch timestamp."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None


def _profile(text: str) -> str:
    from ..profiles import DEFAULT_PROFILE, is_valid_profile_name

    if text != DEFAULT_PROFILE and not is_valid_profile_name(text):
        raise argparse.ArgumentTypeError(f"not a hermes profile name: {text!r}")
    return text


def _version() -> str:
    from .. import __version__

    return f"webui-insights {__version__}"


def _common(parser: argparse.ArgumentParser, *, since: bool = True) -> None:
    """The options of every command over the sessions folder (status, backfill, verify)."""
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


def _folder_command(
    sub: argparse._SubParsersAction[_Parser], name: str, *, help: str, description: str, since: bool = True
) -> argparse.ArgumentParser:
    """A command over the sessions folder: the exit statuses in its help, and the options they share."""
    parser = sub.add_parser(
        name, help=help, description=description, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _common(parser, since=since)
    return parser


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
    _add_status(sub)
    _add_backfill(sub)
    _add_verify(sub)
    _add_demo(sub)
    _add_run(sub)
    return parser


def _add_status(sub: argparse._SubParsersAction[_Parser]) -> None:
    parser = _folder_command(
        sub,
        "status",
        help="say whether mirroring would work here, per profile, and why not",
        description="Check hermes-agent, the switch, the WebUI sessions folder and each profile's state.db, "
        "and count each profile's chats by what the engine would do (up to date, behind, deleted in hermes, "
        "written by hermes-agent itself). Exits 1 with the reason when mirroring would not work.",
        since=False,
    )
    parser.set_defaults(handler=status.command)


def _add_backfill(sub: argparse._SubParsersAction[_Parser]) -> None:
    parser = _folder_command(
        sub,
        "backfill",
        help="bring the WebUI's existing chats into state.db (safe to repeat)",
        description="Run every existing WebUI chat through the same rule as a live save, into its own "
        "profile's state.db, dated by the chat's creation so `hermes insights --days N` counts it on the "
        "right day. Chats already right are left alone (a second run writes nothing); an interrupted run "
        "resumes when repeated. Chats deleted in hermes are listed, not restored (see --restore-deleted). "
        "The WebUI's files are never modified.",
    )
    parser.add_argument("--dry-run", action="store_true", help="report what would be written; open state.db read-only")
    parser.add_argument(
        "--transcripts",
        action="store_true",
        help="also copy each chat's messages (their content) into state.db, so the agent's session search finds them",
    )
    parser.add_argument(
        "--restore-deleted", action="store_true", help="also bring back chats that were deleted in hermes"
    )
    parser.set_defaults(handler=backfill.command)


def _add_verify(sub: argparse._SubParsersAction[_Parser]) -> None:
    parser = _folder_command(
        sub,
        "verify",
        help="compare the WebUI's chats with state.db, field by field, in hermes' terms",
        description="Plan every chat with the engine, read-only, and list each field state.db would need "
        "to change: tokens (hermes' convention: input without cached tokens), cache, cost, model, title (as "
        "hermes stores it), started_at, ended_at, message and tool-call counts. A title renamed in hermes, a "
        "chat deleted in hermes, a row hermes-agent writes itself are not differences.",
    )
    parser.add_argument(
        "--fix", action="store_true", help="apply the engine to the chats that differ, then check again"
    )
    parser.add_argument("--transcripts", action="store_true", help="also compare the mirrored messages")
    parser.set_defaults(handler=verify.command)


def _add_demo(sub: argparse._SubParsersAction[_Parser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="a scripted WebUI chat in a temporary HERMES_HOME, then the real `hermes insights` report",
        description="Run a scripted three-turn chat through the wrapped save in a temporary HERMES_HOME, "
        "then print what `hermes insights --days 1 --source webui` shows.",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary HERMES_HOME")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(handler=demo.command, quiet=False)


def _add_run(sub: argparse._SubParsersAction[_Parser]) -> None:
    parser = sub.add_parser(
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
    parser.add_argument(
        "--enabled",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mirroring on/off in COMMAND (WEBUI_INSIGHTS_ENABLED=1/0); default: the WebUI's setting sync_to_insights",
    )
    parser.add_argument(
        "--transcripts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also copy messages into state.db (WEBUI_INSIGHTS_TRANSCRIPTS=1/0); default: the WebUI's setting",
    )
    parser.add_argument(
        "--print-env", action="store_true", help="print the variables that do the same, one KEY=VALUE a line, and exit"
    )
    parser.add_argument("--json", action="store_true", help="errors and --print-env as one JSON object")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help=argparse.SUPPRESS)
    parser.set_defaults(handler=launch.command, quiet=False)
