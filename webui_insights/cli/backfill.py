"""``webui-insights backfill``: the WebUI's existing chats into state.db, and what was written where."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .context import (
    EXIT_ATTENTION,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CommandRun,
    Progress,
    UsageError,
    folder_problem,
    hint,
    homes,
    session_files,
)
from .text import print_databases, print_files, print_home, print_refused

if TYPE_CHECKING:
    from ..commands.backfill import BackfillReport

__all__ = ["command"]


def command(args: argparse.Namespace, run: CommandRun) -> int:
    from ..commands.backfill import backfill
    from ..commands.batch import hold_interrupt
    from ..sources import SessionsFolderError

    home = homes()
    run.home = str(home.root)
    run.hold_interrupt = hold_interrupt  # a Ctrl-C during a commit is raised once it is counted
    files = session_files(args, keep_messages=args.transcripts)
    run.phase = f"reading {files.directory}; nothing was written"
    progress = Progress("dry run" if args.dry_run else "backfill", enabled=run.progress)
    try:
        report = backfill(
            files,
            home,
            dry_run=args.dry_run,
            transcripts=args.transcripts,
            restore_deleted=args.restore_deleted,
            progress=progress,
        )
    except SessionsFolderError as exc:
        raise folder_problem(exc, files.directory) from None
    except KeyboardInterrupt as exc:
        progress.close()
        so_far: BackfillReport | None = getattr(exc, "report", None)
        if so_far is None:
            raise
        return _interrupted(so_far, run)
    finally:
        progress.close()
    if report.files == 0:
        raise UsageError(f"no WebUI session files in {files.directory}; {hint(files.directory)}")
    code = EXIT_OK if report.complete else EXIT_ATTENTION
    if run.json:
        return run.emit(report.as_dict(), code)
    _print(report, run)
    return code


def _interrupted(report: BackfillReport, run: CommandRun) -> int:
    """What a backfill stopped by Ctrl-C kept: one line on stderr, and the report with ``--json``."""
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


def _print(report: BackfillReport, run: CommandRun) -> None:
    out = run.out
    print_home(run.home or "", out)
    print_files(
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
    print_databases(report.databases, out, run.home)
    print_refused(report.refused, out)
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
    _print_written(report, run)


def _print_written(report: BackfillReport, run: CommandRun) -> None:
    """The summary: what was (or, in a dry run, would be) written, and with timings what it took."""
    out = run.out
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
