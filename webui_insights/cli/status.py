"""``webui-insights status``: whether mirroring would work here, per profile, and why not."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from .context import EXIT_ATTENTION, EXIT_OK, CommandRun, homes, read_folder
from .text import notes_text

if TYPE_CHECKING:
    from ..commands.status import ProfileStatus, Status

__all__ = ["command"]


def command(args: argparse.Namespace, run: CommandRun) -> int:
    from ..commands.status import collect_status

    home = homes()
    run.home = str(home.root)
    # An empty sessions folder is reported (a new WebUI has saved no chat yet); a missing one is not.
    scan = read_folder(args, run, require=False)
    run.phase = "checking each profile's state.db; nothing was written"
    status = collect_status(scan, home, profile=args.profile)
    code = EXIT_OK if status.ok else EXIT_ATTENTION
    if run.json:
        return run.emit(status.as_dict(), code)
    _print_status(status, run.home, run.out)
    return code


def _print_status(status: Status, home: str, out: TextIO) -> None:
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
        for label, text in _profile_lines(item):
            line(label, text)
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


def _profile_lines(item: ProfileStatus) -> list[tuple[str, str]]:
    """One profile's lines, (label, text): its state.db and chats, then what to know about them."""
    label = f"profile {item.name}"
    if item.state != "ok":
        return [(label, f"{item.state_db or '-'}: {item.state}: {item.problem}; {item.webui_chats} WebUI chats")]
    ro = " (read-only)" if item.read_only else ""
    lines = [
        (
            label,
            f"{item.state_db}{ro}: {item.webui_chats} WebUI chats: {item.up_to_date} up to date, {item.behind} behind, "
            f"{item.deleted_in_hermes} deleted in hermes; rows: {item.mirrored} mirrored, "
            f"{item.hermes_written} written by hermes-agent, {item.foreign} of other sources",
        )
    ]
    if item.titles_refused:
        lines.append(("", f"{item.titles_refused} titles hermes would not store (too long or empty after cleaning)"))
    notes = notes_text(item.notes)
    if notes:
        lines.append(("", notes))
    writer = item.writer
    if writer and writer.get("last_error"):
        when = datetime.fromtimestamp(writer["last_error_at"]).isoformat(timespec="seconds")
        nxt = writer.get("next_try_at")
        retry = f", next try {datetime.fromtimestamp(nxt).isoformat(timespec='seconds')}" if nxt else ""
        lines.append(("", f"last error {when}: {writer['last_error']}{retry}"))
    return lines


def _host_bridge_text(status: Status) -> str:
    """What happens to hermes-webui's own state.db bridge, which answers to the same checkbox."""
    text = (
        "hermes-webui's own api/state_sync.py is silenced in the WebUI's process while mirroring is on "
        "(one writer per chat); off, it works as before"
    )
    if status.in_process and status.stats is not None:
        text += f"; {status.stats.get('host_bridge_suppressed', 0)} of its calls skipped in this process"
    return text
