"""Taking over the host's own state.db bridge while the mirror is on.

Both hermes-webui generations ship an opt-in bridge, ``api/state_sync.py``,
that answers to the same ``sync_to_insights`` checkbox as this layer (and
on current releases syncs titles even without it). Two writers of one row
disagree: the bridge counts cached tokens in ``input_tokens``, sets the
title on every turn (over a rename made in hermes, after which this layer
reads the title as someone else's), resets ``api_call_count``, and creates
rows with the wrong start time. So while mirroring is enabled, the bridge's
entry points return without doing anything (counted as
``host_bridge_suppressed``); switched off or uninstalled, the bridge works
exactly as before. A function a host generation does not have (v0.50.12's
bridge has no ``sync_session_title``) is simply not wrapped: normal, logged
at debug only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..diagnostics import Stats
from .patching import WrapperFn

__all__ = ["BRIDGE_MODULE", "BRIDGE_FUNCTIONS", "make_bridge_wrapper"]

BRIDGE_MODULE = "api.state_sync"
BRIDGE_FUNCTIONS = ("sync_session_start", "sync_session_usage", "sync_session_title")


def make_bridge_wrapper(enabled: Callable[[], bool], stats: Stats) -> WrapperFn:
    """A wrapper that skips the bridge call while ``enabled()`` (our switch) says on."""
    suppressed = stats.counter("host_bridge_suppressed")

    def bridge_wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            ours = enabled()
        except Exception:
            ours = False  # our switch failing must not silence the host's own bridge
        if ours:
            next(suppressed)
            return None
        return wrapped(*args, **kwargs)

    return bridge_wrapper
