"""The real ``hermes`` command line, run against a temporary HERMES_HOME (for tests that read what users see)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from webui_insights.commands.demo import hermes_command

__all__ = ["hermes", "run_insights"]


def hermes(home: Path, *args: str) -> str:
    """``hermes ARGS`` with ``HERMES_HOME=home``: its stdout; fails the test on an error or a traceback."""
    command = hermes_command()
    assert command is not None, "the hermes console script is not installed"
    done = subprocess.run(
        [*command, *args],
        env={**os.environ, "HERMES_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"hermes {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def run_insights(home: Path, days: int = 1, source: str = "webui") -> str:
    """The real `hermes insights` output for ``home``."""
    command = hermes_command()
    assert command is not None, "hermes console script not installed"
    done = subprocess.run(
        [*command, "insights", "--days", str(days), "--source", source],
        env={**os.environ, "HERMES_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Error generating insights" not in done.stdout, done.stdout
    return done.stdout
