"""``webui-insights verify``: the WebUI's chats compared with state.db, field by field; ``--fix`` applies."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING

from .context import EXIT_ATTENTION, EXIT_OK, CommandRun, homes, read_folder
from .text import print_databases, print_files, print_home, print_refused

if TYPE_CHECKING:
    from ..commands.verify import VerifyReport
    from ..sources import Scan

__all__ = ["command"]


def command(args: argparse.Namespace, run: CommandRun) -> int:
    from ..commands.batch import hold_interrupt
    from ..commands.verify import verify

    home = homes()
    run.home = str(home.root)
    run.hold_interrupt = hold_interrupt  # --fix commits: a Ctrl-C during one is raised once it is counted
    scan = read_folder(args, run, keep_messages=args.transcripts)
    run.phase = (
        "comparing or fixing: the chats fixed so far are kept, nothing is half written"
        if args.fix
        else "comparing with state.db; nothing was written"
    )
    report = verify(scan, home, fix=args.fix, transcripts=args.transcripts)
    code = EXIT_OK if report.ok else EXIT_ATTENTION
    if run.json:
        return run.emit(report.as_dict(), code)
    _print(report, scan, run, args.fix)
    return code


def _print(report: VerifyReport, scan: Scan, run: CommandRun, fix: bool) -> None:
    out = run.out
    print_home(run.home or "", out)
    print_files(
        out,
        run.quiet,
        directory=scan.directory,
        files=scan.files,
        chats=len(scan.snapshots),
        blank=scan.blank,
        filtered=scan.filtered,
        bad=scan.bad,
    )
    print_databases(report.databases, out, run.home)
    print_refused(report.refused, out)
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


def _shown(field: str, value: object) -> str:
    """A drift value for a text line: times as local date-times, everything else as Python shows it."""
    if field.endswith("_at") and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value).isoformat(timespec="seconds")
        except (OverflowError, OSError, ValueError):
            pass
    return repr(value)
