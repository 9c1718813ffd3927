"""Mirror hermes-webui chat usage into hermes-agent's state.db, with one line.

hermes-webui (and custom chat frontends) call the agent directly and keep each
chat as a JSON file, so their token counts and costs never reach the
``state.db`` that ``hermes insights`` and ``hermes sessions list`` read.
``install()`` wraps the WebUI's ``Session.save()``; after each successful save
that carries new usage (or a new title, model or message count) a snapshot is
handed to a background writer, which mirrors it into the chat's own profile
state.db through hermes-agent's ``hermes_state.SessionDB``::

    import webui_insights
    webui_insights.install()          # at WebUI start-up, before or after api.models

Mirroring is off until switched on, most specific first:

======================================  =====================================
``install(enabled=True|False|fn)``      fixed, or a callable asked per save
``WEBUI_INSIGHTS_ENABLED=1|0``          environment
``sync_to_insights`` in settings.json   the WebUI's setting, re-read ≤ 1 s
======================================  =====================================

The host's save is never slowed by state.db, never fails because of us, and a
busy state.db only delays a write. ``flush()`` waits for pending writes,
``stats()`` says what happened, and failures are logged (rate-limited) on the
``webui_insights`` logger, which has no handlers of its own.
"""

from __future__ import annotations

from .decorator import mirror_usage
from .installer import DEFAULT_TARGET, TargetNotFound, capture, flush, install, is_installed, stats, uninstall
from .snapshot import InvalidSnapshot, UsageSnapshot, WebUISessionAdapter
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

__version__ = "0.1.0"
