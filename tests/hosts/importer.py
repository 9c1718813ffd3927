"""Use a real host's ``api.models.Session`` in a clean interpreter.

Why a subprocess: importing hermes-webui's ``api`` package runs its module
level code — it reads ``HERMES_HOME`` and ``HERMES_WEBUI_STATE_DIR`` once,
patches paths, starts nothing but caches plenty — and two hosts (or a host
and our stand-in ``api`` package) cannot share one ``sys.modules``. A fresh
interpreter per call gives each test the real class with its own temporary
world, and nothing leaks into the pytest process.

How tests use it (see ``fixtures.py`` for the pytest fixture)::

    def test_something(host_import):              # parametrised over the hosts found
        out = host_import.run('''
            import webui_insights
            webui_insights.install(enabled=True)
            s = Session(title="Hi", model="fake-model", messages=[{"role": "user", "content": "hi"}])
            s.input_tokens = 10
            s.save()
            emit({"id": s.session_id, "flushed": webui_insights.flush(5)})
        ''')
        row = session_row(host_import.world.state_db(), out["id"])

The snippet runs with ``Session`` (the host's class), ``api`` (the host's
package), ``world`` paths (``HERMES_HOME``, ``STATE_DIR``) and ``emit(obj)``
(send one JSON value back) already defined; the working directory is the
host copy, as the server expects.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .host import HermesWorld

_MARK = "@@host-import-result@@"

_PRELUDE = """
import json, os, sys
sys.path.insert(0, {src!r})
os.chdir({src!r})
from pathlib import Path
HERMES_HOME = Path(os.environ["HERMES_HOME"])
STATE_DIR = Path(os.environ["HERMES_WEBUI_STATE_DIR"])
def emit(obj):
    print({mark!r} + json.dumps(obj, default=repr), flush=True)
import api.models
from api.models import Session
api = sys.modules["api"]
"""


@dataclass
class HostImport:
    """A host copy and a temporary world; ``run`` executes a snippet against the real class."""

    src: Path  # a writable copy of the host checkout
    world: HermesWorld
    python: str = sys.executable

    def run(self, snippet: str, *, env: dict[str, str] | None = None, timeout: float = 60.0) -> Any:
        """Run ``snippet`` in a fresh interpreter; return the last value it ``emit``-ed (None if none)."""
        code = _PRELUDE.format(src=str(self.src), mark=_MARK) + textwrap.dedent(snippet)
        done = subprocess.run(
            [self.python, "-c", code],
            env=self.world.env(env),
            cwd=str(self.src),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"host snippet failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        values = [line[len(_MARK) :] for line in done.stdout.splitlines() if line.startswith(_MARK)]
        return json.loads(values[-1]) if values else None
