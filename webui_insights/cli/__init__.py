"""``webui-insights`` command line: status, backfill, verify, demo, run.

The only place that configures logging output or prints; the commands
themselves (``commands/``) return reports. Every command says which folder
it read and which state.db files it touched, prints one JSON object with
``--json``, shows a progress bar only on a terminal, and ends with a
documented exit status.

- ``parser``: the grammar, a sub-parser per command;
- ``status``, ``backfill``, ``verify``, ``demo``, ``launch`` (``run``): a
  presenter per command, turning its report into text or JSON;
- ``text``: the lines several commands print alike;
- ``context``: exit statuses, the run being reported, the progress bar,
  reading the sessions folder;
- ``entry``: ``main``, output set-up, Ctrl-C and the exit status of every
  way out.

Nothing heavier than ``argparse`` is imported until a command runs.
"""

from __future__ import annotations

from .context import BACKFILL_READERS, EXIT_ATTENTION, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .entry import main
from .parser import _EPILOG as _EPILOG  # tests check the help text against it
from .parser import build_parser

__all__ = ["main", "build_parser", "BACKFILL_READERS", "EXIT_OK", "EXIT_ATTENTION", "EXIT_USAGE", "EXIT_INTERRUPTED"]
