"""``webui-insights demo``: a scripted WebUI chat, mirrored, then the real insights report.

Runs entirely inside a temporary HERMES_HOME (its own state.db, its own
WebUI state dir) so it never touches a real installation. The chat is saved
the way hermes-webui saves one — several times per turn, cumulative totals,
cached prompt tokens counted inside ``input_tokens`` — through the wrapped
``save()``; the report is hermes' own ``hermes insights``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ..demo_host import TARGET, DemoSession
from ..engine.hermes import HermesStateUnavailable
from ..engine.store import create_state_db
from ..hook import installer

__all__ = ["run_demo", "hermes_command", "SCRIPT"]

# (user, assistant, prompt tokens incl. cached, cached prompt tokens, output tokens, cost) per turn.
SCRIPT = (
    ("What does webui-insights do?", "It mirrors WebUI chats into state.db.", 1200, 0, 310, 0.0031),
    ("Does it slow down saving?", "No: a background thread writes.", 1650, 1024, 280, 0.0022),
    ("And if state.db is locked?", "The update waits and lands later.", 2100, 1536, 265, 0.0027),
)


def hermes_command() -> list[str] | None:
    """The ``hermes`` console script next to this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("hermes")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("hermes")
    return [found] if found else None


def _row(db: Path, session_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute(
            "SELECT source, title, input_tokens, cache_read_tokens, output_tokens, estimated_cost_usd, "
            "message_count, started_at, ended_at FROM sessions WHERE id = ?",
            (session_id,),
        ).fetchone()
        return dict(row) if row else {}
    finally:
        conn.close()


def _fail(message: str, as_json: bool, out: TextIO) -> int:
    if as_json:
        json.dump({"command": "demo", "error": message, "exit_code": 1}, out, indent=2)
        out.write("\n")
    else:
        print(message, file=out)
    return 1


def run_demo(*, keep: bool = False, as_json: bool = False, out: TextIO = sys.stdout) -> int:
    """Save a scripted chat through the wrapped ``save()`` in a throwaway home, then run ``hermes insights``."""
    hermes = hermes_command()
    home = Path(tempfile.mkdtemp(prefix="webui-insights-demo-"))
    saved_env = {k: os.environ.get(k) for k in ("HERMES_HOME", "HERMES_WEBUI_STATE_DIR")}

    def say(text: str) -> None:
        if not as_json:
            print(text, file=out)

    try:
        os.environ["HERMES_HOME"] = str(home)
        os.environ["HERMES_WEBUI_STATE_DIR"] = str(home / "webui")
        try:
            create_state_db(home / "state.db")
        except HermesStateUnavailable as exc:
            return _fail(f"demo needs hermes-agent: {exc}", as_json, out)
        say(f"HERMES_HOME={home}")
        chat, landed, stats = _save_chat(home, say)
        row = _row(home / "state.db", chat.session_id)
        say(
            f"mirrored: {landed} (saves seen {stats['saves_seen']}, snapshots queued {stats['snapshots_queued']}, "
            f"rows written {stats['rows_written']}, transactions {stats['transactions']})"
        )
        say(
            f"state.db row: source {row.get('source')}, title {row.get('title')!r}, input {row.get('input_tokens')} "
            f"+ cache read {row.get('cache_read_tokens')} (hermes counts them apart), "
            f"output {row.get('output_tokens')}, {row.get('message_count')} messages"
        )
        if hermes is None:
            return _fail("`hermes` not found: install webui-insights[hermes] to see the insights report", as_json, out)
        say(f"$ hermes insights --days 1 --source webui   (HERMES_HOME={home})")
        report = subprocess.run(
            [*hermes, "insights", "--days", "1", "--source", "webui"],
            env={**os.environ, "HERMES_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        return _show_insights(report, landed=landed, row=row, stats=stats, as_json=as_json, out=out)
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


def _save_chat(home: Path, say: Callable[[str], None]) -> tuple[DemoSession, bool, dict[str, Any]]:
    """The scripted chat, saved the way the WebUI saves it with mirroring installed; landed, and the stats."""
    installer.install(target=TARGET, enabled=True)
    try:
        # Started twelve minutes ago: insights counts its duration (started_at → ended_at).
        chat = DemoSession(home / "webui", title="Untitled", created_at=time.time() - 720)
        chat.save()
        for turn, (user, assistant, prompt, cached, completion, cost) in enumerate(SCRIPT, start=1):
            chat.add_turn(user, assistant, input_tokens=prompt, output_tokens=completion, cost=cost, cached=cached)
            if turn == 1:
                chat.title = "Demo chat"
            for _ in range(3):  # the WebUI saves several times per streamed turn
                chat.save()
            say(
                f"turn {turn}: saved {chat.path.name}: {chat.input_tokens} prompt tokens "
                f"({chat.cache_read_tokens} cached), {chat.output_tokens} out, {len(chat.messages)} messages"
            )
        landed = installer.flush(10.0)
        return chat, landed, installer.stats()
    finally:
        installer.uninstall()


def _show_insights(
    report: subprocess.CompletedProcess[str],
    *,
    landed: bool,
    row: dict[str, Any],
    stats: dict[str, Any],
    as_json: bool,
    out: TextIO,
) -> int:
    """Print hermes' report (or the whole demo as JSON); 0 when the chat landed and insights counted it."""
    insights_ok = report.returncode == 0 and "Sessions:" in report.stdout
    code = 0 if landed and insights_ok else 1
    if as_json:
        json.dump(
            {
                "command": "demo",
                "landed": landed,
                "row": row,
                "stats": stats,
                "insights": report.stdout,
                "insights_error": None if insights_ok else report.stderr,
                "exit_code": code,
            },
            out,
            indent=2,
            default=str,
        )
        out.write("\n")
    else:
        print(report.stdout, file=out, end="")
        if not insights_ok:
            print(report.stderr, file=out)
    return code
