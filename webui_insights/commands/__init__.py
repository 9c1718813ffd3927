"""The commands: thin callers of the engine over the WebUI's session files.

``batch`` adds what a command needs to the engine's batches (``routing``,
``engine.batch``): the commit chunk, progress, a Ctrl-C held while a commit
is counted; ``backfill``, ``verify``, ``status`` and ``demo`` are what the
CLI calls (``reconcile`` only re-exports the sweep's pass). Nothing here is
loaded in the WebUI's process.
"""
