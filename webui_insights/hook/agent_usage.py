"""What hermes-agent itself reports about a chat, seen from inside the host process.

hermes-webui creates an ``AIAgent`` per chat turn (v0.50.12) or per chat
(current releases) in the same process as its ``Session.save()``. Wrapping
``AIAgent.run_conversation`` (same ``install()`` line, no host edit) tells
two things the session object does not:

- whether the agent was handed a ``SessionDB`` (``_session_db``): then
  hermes-agent writes the chat's row itself, and the mirror only fills what
  it leaves out;
- the usage the agent counted, which the WebUI does not always keep — cache
  read and write tokens (v0.50.12's Session has no cache fields), reasoning
  tokens, API calls, and everything of a non-streaming ``/api/chat`` turn
  (the WebUI adds nothing of it to the chat). Each run's increments wait here for the chat's next save, go
  out with its snapshot, and are added to the chat's ledger in state.db in
  the same transaction as the row (``engine.states.Ledger``).

Bounded: at most ``LIMIT`` chats each in the two maps. Forgetting that
hermes-agent writes a chat is safe (the chat's record in state.db keeps its
owner); forgetting increments that waited for a save that never came loses
them, so it is counted (``stats()["dropped"]["agent_usage"]``) and logged.

Never: change the agent's behaviour, its return value or its exceptions;
keep an agent alive (weak references only); grow without bound.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from .. import forksafe
from ..diagnostics import RateLimitedLog, Stats
from ..engine.states import Ledger

__all__ = ["AgentUsage", "TARGET", "LIMIT"]

TARGET = "run_agent:AIAgent.run_conversation"
# In the order of engine.states.Ledger's fields.
_COUNTERS = (
    "session_cache_read_tokens",
    "session_cache_write_tokens",
    "session_reasoning_tokens",
    "session_api_calls",
    "session_prompt_tokens",
    "session_completion_tokens",
    "session_estimated_cost_usd",
)
_ZERO = (0,) * len(_COUNTERS)
LIMIT = 10_000  # chats per map (increments waiting for their next save; chats hermes-agent writes)


def _number(value: Any) -> int | float:
    """A counter's value; anything that is not a positive number (None, a mock, NaN) is 0."""
    return value if type(value) in (int, float) and value > 0 and value == value else 0


class AgentUsage:
    """Per chat: increments the agent reported since the chat's last capture, and who writes its row."""

    def __init__(self, stats: Stats | None = None, log: RateLimitedLog | None = None, limit: int | None = None) -> None:
        self._stats = stats or Stats()
        self._log = log or RateLimitedLog()
        self.limit = LIMIT if limit is None else limit
        self._lock = threading.Lock()
        self._pending: dict[str, Ledger] = {}
        self._agent_writes: dict[str, bool] = {}
        self._seen: weakref.WeakKeyDictionary[Any, tuple[int | float, ...]] = weakref.WeakKeyDictionary()
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def has_news(self, session_id: str) -> bool:
        """Something for this chat's next snapshot (read without the lock: a dict lookup)."""
        return session_id in self._pending

    def observe(self, agent: Any) -> None:
        """After a run: the agent's counters since we last looked at this agent object."""
        session_id = getattr(agent, "session_id", None)
        if type(session_id) is not str or not session_id:
            return
        writes = getattr(agent, "_session_db", None) is not None
        now = tuple(_number(getattr(agent, name, 0)) for name in _COUNTERS)
        evicted: str | None = None
        with self._lock:
            try:
                before = self._seen.get(agent, _ZERO)
                self._seen[agent] = now
            except TypeError:  # not weak-referenceable: every run counts from zero
                before = _ZERO
            delta = Ledger._make(max(0, a - b) for a, b in zip(now, before, strict=True))
            if writes:
                self._agent_writes.pop(session_id, None)  # most recently seen last
                self._agent_writes[session_id] = True
                if len(self._agent_writes) > self.limit:
                    del self._agent_writes[next(iter(self._agent_writes))]
            if any(delta) and not writes:
                evicted = self._add(session_id, delta)
        if evicted is not None:
            self._evicted(evicted)

    def _add(self, session_id: str, delta: Ledger) -> str | None:
        """Increments for the chat, which moves to the newest end; the chat forgotten past the limit, if any."""
        pending = self._pending
        known = pending.pop(session_id, None)
        pending[session_id] = delta if known is None else known.plus(delta)
        if len(pending) <= self.limit:
            return None
        oldest = next(iter(pending))
        del pending[oldest]
        return oldest

    def _evicted(self, session_id: str) -> None:
        self._stats.drop("agent_usage")
        self._log.warning(
            "agent_usage:evicted",
            "webui-insights: forgot the agent-reported usage of chat %s (more than %d chats waiting for a save)",
            session_id,
            self.limit,
        )

    def take(self, session_id: str) -> tuple[Ledger | None, bool]:
        """(increments waiting for this chat, whether hermes-agent writes its row)."""
        with self._lock:
            return self._pending.pop(session_id, None), self._agent_writes.get(session_id, False)

    def give_back(self, session_id: str, ledger: Ledger | None) -> None:
        """A snapshot carrying ``ledger`` was dropped: keep its increments for the next one."""
        if ledger is None or not any(ledger):
            return
        with self._lock:
            evicted = self._add(session_id, ledger)
        if evicted is not None:
            self._evicted(evicted)

    def sizes(self) -> tuple[int, int]:
        """(chats with increments waiting, chats known to be written by hermes-agent)."""
        return len(self._pending), len(self._agent_writes)
