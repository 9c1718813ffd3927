"""The background writer: a queue of snapshots and the one thread that writes them to state.db.

Four parts, one job each: ``buffer`` (what waits: one snapshot per chat,
the newest wins), ``queue`` (``Writer``: the thread — submit, debounce,
flush and shutdown with deadlines, fork safety), ``pool`` (the state.db
handles, each database's health and back-off) and ``export`` (the call into
the engine: convert, ``sync``, count outcomes). ``config`` holds
``WriterConfig``, the timings.

Failures keep their work pending, paced by their class (``pool``); a chat
with nothing to write to (no hermes-agent, no state.db, one never
initialised) is given up, counted, and re-sent by its next save or the
reconcile sweep.
"""

from __future__ import annotations

from .buffer import combine
from .config import WriterConfig
from .queue import THREAD_NAME, Writer

__all__ = ["WriterConfig", "Writer", "THREAD_NAME", "combine"]
