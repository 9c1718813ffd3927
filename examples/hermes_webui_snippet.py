"""Where the ``install()`` line goes in hermes-webui, and what switches it on.

1. Install into the Python environment hermes-webui runs in (the one that
   already has hermes-agent), from a clone or a git URL (not on PyPI yet)::

       pip install /path/to/webui-insights

2. In hermes-webui's ``server.py``, next to the other start-up code — before
   or after the ``from api... import`` lines, both work (if ``api.models`` is
   not imported yet, the wrap happens when it is)::

       import webui_insights
       webui_insights.install()   # wraps api.models:Session.save

   Nothing else in hermes-webui changes: no route, no streaming code.

3. Switch it on in the WebUI: Settings → the "sync to insights" checkbox
   (``settingsSyncInsights`` in the settings page). Saving the settings writes
   ``"sync_to_insights": true`` to ``<HERMES_WEBUI_STATE_DIR>/settings.json``
   (default ``~/.hermes/webui/settings.json``); the mirror re-reads that key
   at most once a second, so checking or unchecking it takes effect within
   about a second, without a restart. ``WEBUI_INSIGHTS_ENABLED=1|0`` in the
   server's environment overrides the checkbox; ``install(enabled=True)``
   overrides both.

4. Check it: ``hermes insights --days 1 --source webui`` lists the WebUI chats;
   ``webui_insights.stats()`` counts saves seen, rows written and anything
   skipped.

hermes-webui's own bridge (``api/state_sync.py``) answers to the same
checkbox; while webui-insights mirrors, that bridge is silenced (one writer
per chat), and it works as before once mirroring is off.

``enable_insights()`` below is the same two lines as a function, so the test
suite can run exactly what this file tells you to paste.
"""

from __future__ import annotations

import webui_insights


def enable_insights() -> bool:
    """What goes into hermes-webui's server.py (True when newly installed)."""
    return webui_insights.install()
