"""The real-host launcher tests' own ``sitecustomize``, the one webui-insights' bootstrap hides.

The tests put this folder on ``PYTHONPATH``; ``webui-insights run`` puts its
bootstrap folder in front of it, so this file runs only if the bootstrap
chains to it — in every Python process of the run (the launcher, the
WebUI's ``bootstrap.py``, its probes, the server). It does two things:

- appends ``PID<TAB>argv`` to ``$WEBUI_INSIGHTS_TEST_SITE_LOG``: the test
  finds the server's PID there, which proves the chain reached the server;
- refuses every non-loopback connection in the process (``launcher.py``'s
  guard, before any DNS lookup): a test run never leaves the machine, as
  with the harness's own launcher.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

_log = os.environ.get("WEBUI_INSIGHTS_TEST_SITE_LOG", "").strip()
if _log:
    try:
        argv = Path("/proc/self/cmdline").read_bytes().split(b"\0")
        line = " ".join(a.decode(errors="replace") for a in argv if a)
    except OSError:
        line = "?"
    with open(_log, "a", encoding="utf-8") as log:
        log.write(f"{os.getpid()}\t{line}\n")

_spec = importlib.util.spec_from_file_location("_real_host_network_guard", Path(__file__).parents[1] / "launcher.py")
assert _spec is not None and _spec.loader is not None
_guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_guard)
_guard._loopback_only()
