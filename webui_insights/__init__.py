"""Mirror hermes-webui chats into hermes-agent's state.db, with one line.

hermes-webui (and custom chat frontends) keep each chat as a JSON file;
``hermes insights`` and ``hermes sessions list`` read only hermes-agent's
``state.db``. ``install()`` wraps the WebUI's ``Session.save()``; after each
successful save that changed something, a snapshot goes to a background
writer that brings the chat's row in its profile's state.db to the truth —
every field for chats only this layer writes, only what hermes leaves out
(title, real start) for chats hermes-agent writes itself::

    import webui_insights
    webui_insights.install()          # at WebUI start-up, before or after api.models

or, without a line of the WebUI changed, start it through the launcher,
which does the same in every Python process the command starts::

    webui-insights run --enabled -- python server.py     # or ./start.sh, python bootstrap.py

Mirroring is off until switched on, most specific first:

======================================  =====================================
``install(enabled=True|False|fn)``      fixed, or a callable asked per save
``WEBUI_INSIGHTS_ENABLED=1|0``          environment
``sync_to_insights`` in settings.json   the WebUI's setting, re-read ≤ 1 s
======================================  =====================================

The host's save is never slowed by state.db, never fails because of us, and
an older state of a chat never overwrites a newer one. ``flush()`` waits for
pending writes, ``stats()`` says what happened, and failures are logged
(rate-limited, with the exception's class and message) on the
``webui_insights`` logger, which has no handlers of its own.
"""

from __future__ import annotations

from .hook.adapter import WebUISessionAdapter
from .hook.decorator import mirror_usage
from .hook.installer import DEFAULT_TARGET, TargetNotFound, capture, flush, install, is_installed, stats, uninstall
from .snapshot import InvalidSnapshot, UsageSnapshot
from .writer import WriterConfig

__all__ = [
    "install",
    "uninstall",
    "flush",
    "stats",
    "capture",
    "mirror_usage",
    "is_installed",
    "UsageSnapshot",
    "InvalidSnapshot",
    "WebUISessionAdapter",
    "WriterConfig",
    "TargetNotFound",
    "DEFAULT_TARGET",
]

__version__ = "0.3.0"
