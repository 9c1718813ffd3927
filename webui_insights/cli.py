"""``webui-insights`` command line: status, backfill, verify, demo.

The only place that configures logging output; the library itself adds no
handlers. Exit status: 0 all good, 1 something needs attention (the reason is
printed), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

__all__ = ["main", "build_parser", "BACKFILL_READERS"]

# The CLI is a process of its own: backfill parses the session files in
# forked reader processes first, then writes with the machine to itself
# (writing while they parse made each write-lock hold slower, measured).
BACKFILL_READERS = os.cpu_count() or 1

EXIT_OK = 0
EXIT_ATTENTION = 1
EXIT_INTERRUPTED = 130

_EPILOG = """\
Where things are read from:
  HERMES_HOME             hermes home of the default profile (default ~/.hermes)
  HERMES_WEBUI_STATE_DIR  WebUI state directory with sessions/ and settings.json
                          (default $HERMES_HOME/webui)
  WEBUI_INSIGHTS_ENABLED  1/0 overrides the WebUI setting sync_to_insights

Start with `webui-insights status`; after turning mirroring on, run
`webui-insights backfill` once to bring in older chats."""


def _since(text: str) -> float:
    """YYYY-MM-DD (local midnight) or an ISO date-time, as an epoch timestamp."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None


def _add_selection(parser: argparse.ArgumentParser, *, since: bool = True) -> None:
    parser.add_argument(
        "--profile", metavar="NAME", help="only chats of this hermes profile ('default' = chats without a profile)"
    )
    if since:
        parser.add_argument(
            "--since", metavar="DATE", type=_since, help="only chats created on or after DATE (YYYY-MM-DD, local time)"
        )
    parser.add_argument(
        "--webui-dir",
        metavar="DIR",
        type=Path,
        help="the WebUI state directory (default: $HERMES_WEBUI_STATE_DIR, else $HERMES_HOME/webui)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webui-insights",
        description="Mirror hermes-webui chat usage into hermes-agent's state.db, so `hermes insights` "
        "and `hermes sessions list` include WebUI chats, and check that it works.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the mirror does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = sub.add_parser(
        "status",
        help="say whether mirroring would work here, and why not",
        description="Check hermes-agent, each profile's state.db, the sync_to_insights setting and the WebUI "
        "sessions directory, and compare WebUI chats with the state.db rows that have source 'webui'. "
        "Exits 1 with the reason on the last line when mirroring would not work.",
    )
    status.add_argument("--profile", metavar="NAME", help="check only this hermes profile")
    status.add_argument("--webui-dir", metavar="DIR", type=Path, help="the WebUI state directory")
    status.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    status.set_defaults(handler=_cmd_status)

    backfill = sub.add_parser(
        "backfill",
        help="mirror the WebUI's existing chats into state.db (safe to repeat)",
        description="Mirror every existing WebUI chat into its own profile's state.db, dated by the chat's "
        "creation time so `hermes insights --days N` counts it on the right day. Chats already in state.db "
        "are left alone, so running it again changes nothing, and an interrupted run resumes when repeated. "
        "Unreadable session files are reported by name and skipped; the WebUI's files are never modified.",
    )
    _add_selection(backfill)
    backfill.add_argument("--dry-run", action="store_true", help="report what would be written, write nothing")
    backfill.add_argument(
        "--transcripts",
        action="store_true",
        help="also copy each chat's messages (their content) into state.db, so the agent's session search finds them",
    )
    backfill.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    backfill.set_defaults(handler=_cmd_backfill)

    verify = sub.add_parser(
        "verify",
        help="compare WebUI totals with state.db and list every difference",
        description="Compare each WebUI chat's tokens, cost, title and message count with its state.db row, "
        "print the differences per chat and exit 1 when there are any. A title renamed with the hermes CLI "
        "is not a difference: the mirror keeps such renames.",
    )
    _add_selection(verify)
    verify.add_argument("--fix", action="store_true", help="re-mirror the chats that differ, setting totals exactly")
    verify.add_argument(
        "--transcripts", action="store_true", help="also compare the mirrored messages (count and content fingerprint)"
    )
    verify.set_defaults(handler=_cmd_verify)

    demo = sub.add_parser(
        "demo",
        help="run a scripted WebUI chat in a temporary HERMES_HOME and print the real `hermes insights` report",
        description="Run a scripted three-turn WebUI chat through the wrapped save in a temporary "
        "HERMES_HOME, then print what `hermes insights --days 1 --source webui` shows.",
    )
    demo.add_argument("--keep", action="store_true", help="keep the temporary HERMES_HOME")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _sessions_dir(args: argparse.Namespace) -> Path | None:
    webui_dir: Path | None = getattr(args, "webui_dir", None)
    return webui_dir / "sessions" if webui_dir is not None else None


def _check_profile(name: str | None) -> str | None:
    from .profiles import DEFAULT_PROFILE, is_valid_profile_name

    if name is not None and name != DEFAULT_PROFILE and not is_valid_profile_name(name):
        raise SystemExit(f"webui-insights: not a hermes profile name: {name!r}")
    return name


# ------------------------------------------------------------------- status


def _cmd_status(args: argparse.Namespace) -> int:
    out = sys.stdout
    from .status import collect_status

    status = collect_status(profile=_check_profile(args.profile), sessions_dir=_sessions_dir(args))
    if args.json:
        json.dump(status.as_dict(), out, indent=2)
        out.write("\n")
    else:
        _print_status(status, out)
    return EXIT_OK if status.ok else EXIT_ATTENTION


def _print_status(status: Any, out: TextIO) -> None:
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
    present = "" if status.sessions_dir_present else " (absent)"
    bad = f", {status.bad_session_files} unreadable" if status.bad_session_files else ""
    line("WebUI sessions", f"{status.sessions_dir}{present}: {status.session_files} files{bad}")
    for item in status.profiles:
        if item.state_db is None:
            line(f"profile {item.name}", f"refused: {item.problem}")
            continue
        where = "present" if item.present else "absent"
        if item.present:
            where += ", writable" if item.writable else ", NOT writable"
        rows = "?" if item.webui_rows is None else str(item.webui_rows)
        line(f"profile {item.name}", f"{item.state_db} ({where}); {item.webui_sessions} WebUI chats, {rows} webui rows")
    if status.in_process and status.stats is not None:
        stats = status.stats
        line("in this process", f"{stats['rows_written']} rows written, {stats['pending']} pending")
        if stats.get("last_error"):
            line("last error", str(stats["last_error"]))
    if status.ok:
        print("OK: mirroring would work", file=out)
    else:
        for extra in status.problems[1:]:
            print(f"also: {extra}", file=out)
        print(f"NOT MIRRORING: {status.problems[0]}", file=out)


# ----------------------------------------------------------------- backfill


class _ProgressBar:
    """A bar redrawn in place on a terminal; a plain line per chunk otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        self.done = done
        if self.tty:
            width = 30
            filled = width * done // max(total, 1)
            self.stream.write(f"\rbackfill [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            if done >= total:
                self.stream.write("\n")
        elif done:
            self.stream.write(f"backfill: {done}/{total} chats written\n")
        self.stream.flush()


def _cmd_backfill(args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    from .backfill import backfill
    from .sink import HermesStateUnavailable
    from .webui_files import scan_sessions

    scan = scan_sessions(
        _sessions_dir(args),
        since=args.since,
        profile=_check_profile(args.profile),
        transcripts=args.transcripts,
        workers=BACKFILL_READERS,
    )
    progress = _ProgressBar(err)
    try:
        report = backfill(scan, dry_run=args.dry_run, progress=None if args.json else progress)
    except KeyboardInterrupt:
        print(f"\nbackfill interrupted after {progress.done} chats; run the same command again to resume", file=err)
        return EXIT_INTERRUPTED
    except (HermesStateUnavailable, sqlite3.Error, OSError) as exc:
        print(
            f"backfill stopped after {progress.done} chats: {type(exc).__name__}: {exc}\n"
            "chats written so far are kept; run the same command again to resume",
            file=err,
        )
        return EXIT_ATTENTION
    if args.json:
        data = {name: getattr(report, name) for name in report.__slots__}
        data["complete"] = report.complete
        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        _print_backfill(report, out)
    return EXIT_OK if report.complete else EXIT_ATTENTION


def _print_backfill(report: Any, out: TextIO) -> None:
    for name, reason in report.bad:
        print(f"skipped {name}: {reason}", file=out)
    for where, reason in report.unreachable:
        print(f"not mirrored: {where}: {reason}", file=out)
    for session_id, reason in report.title_rejected:
        print(f"title not set for {session_id}: {reason}", file=out)
    print(
        f"{report.files} session files: {report.sessions} chats, {len(report.bad)} unreadable, "
        f"{report.blank} blank, {report.filtered} outside --since/--profile",
        file=out,
    )
    if report.dry_run:
        print(
            f"dry run: would write {report.to_write} chats ({report.new} new, {report.updated} updated); "
            f"{report.up_to_date} already up to date",
            file=out,
        )
        return
    rate = report.written / report.total_s if report.total_s > 0 else 0.0
    print(
        f"wrote {report.written} chats ({report.new} new, {report.updated} updated) in {report.transactions} "
        f"transactions; {report.up_to_date} already up to date",
        file=out,
    )
    if report.written:
        print(
            f"write time {report.write_s:.3f} s, longest lock hold {report.max_lock_hold_s * 1000:.1f} ms, "
            f"total {report.total_s:.3f} s ({rate:,.0f} chats/s)",
            file=out,
        )


# ------------------------------------------------------------------- verify


def _cmd_verify(args: argparse.Namespace) -> int:
    out = sys.stdout
    from .verify import verify
    from .webui_files import scan_sessions

    scan = scan_sessions(
        _sessions_dir(args),
        since=args.since,
        profile=_check_profile(args.profile),
        transcripts=args.transcripts,
        workers=os.cpu_count() or 1,  # the CLI is a process of its own: parse in parallel
    )
    report = verify(scan.snapshots, fix=args.fix)
    for name, reason in scan.bad:
        print(f"skipped {name}: {reason}", file=out)
    for snap, drift in report.drifted:
        where = f" (profile {snap.profile})" if snap.profile else ""
        details = "; ".join(f"{d.field} webui={d.webui!r} state.db={d.state_db!r}" for d in drift)
        print(f"{snap.session_id}{where}: {details}", file=out)
    for where, reason in [*report.unreachable, *report.fix_errors]:
        print(f"not checked: {where}: {reason}", file=out)
    fixed = f", {report.fixed} fixed" if args.fix else ""
    print(f"{report.checked} chats checked, {len(report.drifted)} differ{fixed}", file=out)
    if report.drifted and not args.fix:
        print("run `webui-insights verify --fix` to re-mirror them", file=out)
    return EXIT_OK if report.ok else EXIT_ATTENTION


# --------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(keep=args.keep)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    result: int = args.handler(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
