"""``webui-insights demo``: a scripted WebUI chat, mirrored, then the real insights report.

Runs entirely inside a temporary HERMES_HOME (its own state.db, its own WebUI
state dir) so it never touches a real installation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from . import installer as lifecycle
from .demo_host import TARGET, DemoSession
from .sink import HermesStateUnavailable, create_state_db

__all__ = ["run_demo", "hermes_command", "SCRIPT"]

# (user, assistant, input tokens, output tokens, cost) per turn.
SCRIPT = (
    ("What does webui-insights do?", "It mirrors WebUI usage into state.db.", 1200, 310, 0.0031),
    ("Does it slow down saving?", "No: a background thread writes.", 1650, 280, 0.0039),
    ("And if state.db is locked?", "The update waits and lands later.", 2100, 265, 0.0047),
)


def hermes_command() -> list[str] | None:
    """The ``hermes`` console script next to this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("hermes")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("hermes")
    return [found] if found else None


def run_demo(*, keep: bool = False, out: TextIO = sys.stdout) -> int:
    hermes = hermes_command()
    home = Path(tempfile.mkdtemp(prefix="webui-insights-demo-"))
    saved_env = {k: os.environ.get(k) for k in ("HERMES_HOME", "HERMES_WEBUI_STATE_DIR")}
    try:
        os.environ["HERMES_HOME"] = str(home)
        os.environ["HERMES_WEBUI_STATE_DIR"] = str(home / "webui")
        try:
            create_state_db(home / "state.db")
        except HermesStateUnavailable as exc:
            print(f"demo needs hermes-agent: {exc}", file=out)
            return 1
        print(f"HERMES_HOME={home}", file=out)
        lifecycle.install(target=TARGET, enabled=True)
        try:
            chat = DemoSession(home / "webui", title="Untitled")
            chat.save()
            for turn, (user, assistant, tokens_in, tokens_out, cost) in enumerate(SCRIPT, start=1):
                chat.add_turn(user, assistant, input_tokens=tokens_in, output_tokens=tokens_out, cost=cost)
                if turn == 1:
                    chat.title = "Demo chat"
                for _ in range(3):  # the WebUI saves several times per streamed turn
                    chat.save()
                print(
                    f"turn {turn}: saved {chat.path.name} — {chat.input_tokens} in / {chat.output_tokens} out, "
                    f"{len(chat.messages)} messages",
                    file=out,
                )
            landed = lifecycle.flush(10.0)
            stats = lifecycle.stats()
        finally:
            lifecycle.uninstall()
        print(
            f"mirrored: {landed} (saves seen {stats['saves_seen']}, snapshots queued {stats['snapshots_queued']}, "
            f"rows written {stats['rows_written']}, transactions {stats['transactions']})",
            file=out,
        )
        if hermes is None:
            print("`hermes` not found: install webui-insights[hermes] to see the insights report", file=out)
            return 1
        print(f"$ hermes insights --days 1 --source webui   (HERMES_HOME={home})", file=out)
        report = subprocess.run(
            [*hermes, "insights", "--days", "1", "--source", "webui"],
            env={**os.environ, "HERMES_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        print(report.stdout, file=out, end="")
        if report.returncode != 0 or "Sessions:" not in report.stdout:
            print(report.stderr, file=out)
            return 1
        return 0 if landed else 1
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
