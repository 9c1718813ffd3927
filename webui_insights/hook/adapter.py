"""Reading hermes-webui's ``api.models.Session``: the default adapter.

Both generations of hermes-webui keep a chat's usage on the session object
(``input_tokens`` counting cached prompt tokens too, ``output_tokens``,
``estimated_cost``, and since v0.50.13 ``cache_read_tokens`` /
``cache_write_tokens``). ``fingerprint()`` is the cheap pre-check run on
every save — a handful of attribute reads into a tuple — so a save with
nothing new costs about a microsecond; the snapshot is only built when the
fingerprint moved.

A session class without the cache fields (v0.50.12) reports them as
unknown (None), not zero: the agent hook then supplies them.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

from ..snapshot import InvalidSnapshot, UsageSnapshot, describe, from_webui

__all__ = ["WebUISessionAdapter", "webui_session_adapter"]

# hermes-webui's Session attribute names, in fingerprint order.
_FIELDS = (
    "session_id",
    "profile",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "estimated_cost",
    "title",
    "model",
)
_read_all = attrgetter(*_FIELDS)


def _slow_reader(session: Any) -> tuple[Any, ...]:
    return tuple(getattr(session, name, None) for name in _FIELDS)


class WebUISessionAdapter:
    """Default adapter: hermes-webui's ``api.models.Session`` attributes."""

    def __init__(self) -> None:
        # Per session class: all fields at once, or one by one with None for
        # the ones that class lacks (v0.50.12 has no cache fields).
        self._readers: dict[type, Callable[[Any], tuple[Any, ...]]] = {}

    def fingerprint(self, session: Any) -> tuple[Any, ...]:
        reader = self._readers.get(type(session))
        if reader is None:
            try:
                _read_all(session)
                reader = _read_all
            except AttributeError:
                reader = _slow_reader
            if len(self._readers) < 64:
                self._readers[type(session)] = reader
        try:
            values = reader(session)
        except AttributeError:
            values = _slow_reader(session)
        messages = getattr(session, "messages", None)
        if type(messages) is list:  # the usual case, without a try
            return values + (len(messages),)
        try:
            count = len(messages) if messages is not None else 0
        except TypeError:
            count = -1
        return values + (count,)

    def __call__(self, session: Any) -> UsageSnapshot:
        return self.snapshot(session, self.fingerprint(session), 0.0)

    def snapshot(self, session: Any, fingerprint: tuple[Any, ...], observed: float) -> UsageSnapshot:
        """The snapshot, reusing what ``fingerprint()`` already read."""
        session_id, profile, tokens_in, tokens_out, cache_read, cache_write, cost, title, model, count = fingerprint
        messages = getattr(session, "messages", None)
        if count < 0:
            raise InvalidSnapshot("bad_value", f"messages must be a list, got {describe(messages)}")
        # Positionally, in ``snapshot.WEBUI_FIELDS`` order: this runs on the host's save path.
        return from_webui(
            session_id,
            profile,
            model,
            title,
            tokens_in,
            tokens_out,
            cache_read,
            cache_write,
            getattr(session, "reasoning_tokens", None),
            cost,
            getattr(session, "api_call_count", None),
            getattr(session, "created_at", None),
            getattr(session, "updated_at", None),
            getattr(session, "model_provider", None),
            getattr(session, "parent_session_id", None),
            getattr(session, "session_source", None),
            messages,
            count,
            observed,
            messages if type(messages) is list else None,
            # tool calls and the earliest message: found on the writer thread, in ``messages``
        )


webui_session_adapter = WebUISessionAdapter()
