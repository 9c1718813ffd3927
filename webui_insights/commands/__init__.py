"""The commands: thin callers of the engine over the WebUI's session files.

``batch`` runs the engine over many chats, one state.db at a time;
``backfill``, ``verify``, ``reconcile`` (the sweep's pass), ``status`` and
``demo`` are what the CLI and the background sweep call.
"""
