"""The save path: from a session object that was just saved to a queued snapshot.

Owns the two pieces of memory the save path keeps, both small and bounded:

- the **gate**: per chat, a hash of the fingerprint last captured; a save
  whose fingerprint hashes the same (nothing new) costs a few attribute
  reads, one uncontended lock and one dict lookup. Past ``GATE_LIMIT`` chats the least recently
  changed is forgotten — harmless: its next save is captured again, and the
  engine's version rule finds it unchanged.
- the **order** (shared by every capture of the process): every snapshot
  gets an ``observed`` stamp from a strictly increasing per-process clock,
  taken under the chat's stripe lock together with the read of the session,
  so two threads saving one chat get their states' order right (the engine
  breaks ties of ``updated_at`` with it).

Never: keep a host object (no session, no message list) after the call,
raise into the host, or do I/O.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .. import forksafe
from ..diagnostics import RateLimitedLog, Stats, describe_error
from ..engine.plan import FUTURE_TOLERANCE_S
from ..snapshot import InvalidSnapshot, UsageSnapshot, checked
from .adapter import WebUISessionAdapter
from .agent_usage import AgentUsage

__all__ = ["Capture", "GATE_LIMIT", "Adapter"]

GATE_LIMIT = 100_000
_STRIPES = 64

Adapter = Callable[[Any], "UsageSnapshot | None"]


def _snapshot_key(snapshot: UsageSnapshot) -> int:
    """The gate's hash for an adapter without a cheap fingerprint: everything but the bookkeeping."""
    return hash(snapshot[:14])


class _Order:
    """The process's one order of captured states: per-chat stripe locks and a strictly increasing clock.

    Shared by every ``Capture`` (``install()``'s, each decorator's, one
    rebuilt by a re-install), so two captures of one chat are serialised
    and ordered whichever path they took.
    """

    def __init__(self) -> None:
        self._init_locks()
        self.last = 0.0
        forksafe.register(self)

    def _init_locks(self) -> None:
        self.stripes = [threading.Lock() for _ in range(_STRIPES)]
        self.clock = threading.Lock()

    def _after_fork_in_child(self) -> None:
        self._init_locks()

    def stripe(self, session: Any) -> threading.Lock:
        """The lock of the chat's stripe: by session id when it has one, else by object."""
        sid = getattr(session, "session_id", None)
        return self.stripes[(hash(sid) if type(sid) is str else id(session)) % _STRIPES]

    def stamp(self) -> float:
        """Strictly increasing across small steps back of the wall clock; a large one (set right) is taken.

        After a clock that ran ahead is corrected, staying ahead of it would
        stamp every later state in the future until real time caught up; the
        engine distrusts versions that far ahead (``FUTURE_TOLERANCE_S``), and
        the chat's own ``updated_at`` went back with the clock anyway.
        """
        with self.clock:
            now = time.time()
            if self.last - FUTURE_TOLERANCE_S <= now <= self.last:
                now = self.last + 1e-6
            self.last = now
            return now


_order = _Order()


class Capture:
    """Turns a saved session into at most one snapshot per change."""

    def __init__(self, stats: Stats, log: RateLimitedLog, agent: AgentUsage, adapter: Adapter) -> None:
        self.stats = stats
        self.log = log
        self.agent = agent
        self.adapter = adapter
        self.fast = type(adapter) is WebUISessionAdapter
        self.gate: dict[str, int] = {}
        self.saves_seen = stats.counter("saves_seen")
        self.skipped_unchanged = stats.counter("skipped.unchanged")
        self.skipped_disabled = stats.counter("skipped.disabled")

    # ----------------------------------------------------------- the path

    def take(self, session: Any) -> UsageSnapshot | None:
        """The chat's snapshot if it changed since last captured (None: nothing to send).

        Under the chat's stripe lock, the session is read, compared with the
        gate and, when new, stamped: the order of two captures of one chat is
        the order of the states they read, and a state is never taken for
        "already sent" while another thread is sending an older one. With
        the default adapter a save with nothing new costs a fingerprint (a
        few attribute reads) and one dict lookup.
        """
        next(self.saves_seen)
        with _order.stripe(session):
            try:
                snapshot, key = self._read(session)
            except InvalidSnapshot as exc:
                self.stats.skip(exc.reason)
                self.log.warning(
                    "invalid:" + exc.reason, "webui-insights: not mirroring a chat (%s): %s", exc.reason, exc
                )
                return None
            if snapshot is None:
                return None
            sid = snapshot.session_id
            if not self.fast and key is not None and self._known(sid, key):
                return None
            if snapshot.is_blank and sid not in self.gate:
                # Nothing in it and never sent: a new chat's first saves (HEAD saves a
                # provisional title before its agent runs). A chat already sent is
                # followed through such a state (cleared, then renamed).
                self.stats.skip("blank")
                return None
            self._remember(sid, key)
            ledger, writes = self.agent.take(sid)
            snapshot = snapshot._replace(observed=_order.stamp(), ledger=ledger, agent_writes=writes)
        for note in snapshot.notes:
            self.stats.incr("notes." + note)
        return snapshot

    def _known(self, sid: Any, key: int) -> bool:
        """Nothing new: the gate holds this state's hash and the agent reported nothing since."""
        if self.gate.get(sid) == key and not self.agent.has_news(sid):
            next(self.skipped_unchanged)
            return True
        return False

    def _read(self, session: Any) -> tuple[UsageSnapshot | None, int | None]:
        """(snapshot, gate key); (None, None) when there is nothing to send (unchanged, an adapter error)."""
        adapter = self.adapter
        try:
            if self.fast:
                fingerprint = adapter.fingerprint(session)  # type: ignore[attr-defined]
                try:
                    key: int | None = hash(fingerprint)
                except TypeError:  # an unhashable value: the snapshot below refuses it
                    key = None
                if key is not None and self._known(fingerprint[0], key):
                    return None, None  # checked before any snapshot is built: the usual save
                snapshot = adapter.snapshot(session, fingerprint, 0.0)  # type: ignore[attr-defined]
                return snapshot, key
            raw = adapter(session)
        except InvalidSnapshot:
            raise
        except Exception as exc:
            # The adapter is the user's code (or, for the default one, the
            # host's session object: a property that raises): its failure is
            # theirs to see, with what went wrong, never the host's problem.
            self.stats.skip("adapter_error")
            self.log.warning(
                "adapter:" + type(exc).__name__,
                "webui-insights: the adapter failed on a %s: %s",
                type(session).__name__,
                describe_error(exc),
            )
            return None, None
        if raw is None:
            self.stats.skip("blank")  # the adapter says: nothing to mirror here
            return None, None
        snapshot = checked(raw)
        return snapshot, _snapshot_key(snapshot)

    def _remember(self, sid: str, key: int | None) -> None:
        gate = self.gate
        gate.pop(sid, None)
        if key is not None:
            gate[sid] = key
            if len(gate) > GATE_LIMIT:
                try:
                    del gate[next(iter(gate))]
                except (StopIteration, KeyError, RuntimeError):
                    pass

    def drop_agent_usage(self, session: Any) -> None:
        """A save while mirroring is off: what the agent counted for the chat goes with it, unrecorded.

        The usage the agent hook counts belongs to the save that follows the
        run: kept past that save, it would reach a later state whose figures
        (read from the file meanwhile) may already hold it.
        """
        sid = getattr(session, "session_id", None)
        if type(sid) is str and self.agent.has_news(sid):
            self.agent.take(sid)

    def forget_chat(self, session_id: str) -> None:
        """An update of this chat was given up: let its next save through, even if unchanged."""
        self.gate.pop(session_id, None)
