"""``@mirror_usage``: the install() guarantees for a save method the user owns.

A custom frontend has its own session class and its own save; instead of
patching it by name, its author decorates it::

    @webui_insights.mirror_usage(adapter=my_adapter)
    def save(self) -> None: ...

The decorated call runs the original first and outside any guard (its result
and its exceptions reach the caller untouched); after a successful call, a
guarded capture goes through the same installation state as ``install()``:
the same save gate, counters, log and background writer (``flush()`` and
``stats()`` cover both).

Which switch decides, most specific first:

==============================  ==================================================
``mirror_usage(enabled=...)``   True/False/callable: this decorator only; it
                                overrides the environment, the WebUI setting and
                                ``install(enabled=...)`` alike
``enabled=None`` (default)      while ``install()`` is active: its switch (so one
                                ``install(enabled=False)`` turns off everything);
                                otherwise ``WEBUI_INSIGHTS_ENABLED``, then the
                                ``sync_to_insights`` setting, then off
==============================  ==================================================

No ``install()`` is needed: with the switch on (``enabled=True``, or
``WEBUI_INSIGHTS_ENABLED=1``, or the WebUI setting), the first mirrored save
starts the process's background writer, the same one ``install()`` would
use; ``flush()`` and ``stats()`` work the same.

Never: call the original inside the guard, raise into the caller because of
our own work, or bind the installation state at decoration time (it is looked
up on every call, so ``uninstall()`` and test resets do not strand a
decorator).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

import wrapt

from ..diagnostics import report_internal_error
from ..settings import Explicit, Switch
from ..snapshot import UsageSnapshot
from . import installer
from .adapter import webui_session_adapter

__all__ = ["mirror_usage"]

F = TypeVar("F", bound=Callable[..., Any])
AdapterFn = Callable[[Any], "UsageSnapshot | None"]


def _session_of(instance: Any, args: tuple[Any, ...]) -> Any:
    """A method's session is ``self``; a plain function's is its first argument."""
    if instance is not None and not isinstance(instance, type):
        return instance
    return args[0] if args else None


def _after_save(session: Any, explicit: Switch | None, adapter: AdapterFn) -> None:
    state = installer._state
    try:
        if explicit is not None and explicit._stats is not state.stats:
            explicit.report_to(state.stats, state.log)
        switch = explicit if explicit is not None else installer._default_switch(state)
        installer._capture(session, state, switch, state.capture_for(adapter))
    except Exception as exc:
        report_internal_error(state.stats, state.log, "mirror_usage", exc)


def mirror_usage(
    _func: Any = None,
    /,
    *,
    adapter: AdapterFn | None = None,
    enabled: Explicit = None,
) -> Callable[[F], F]:
    """Decorate your own save function or method so each successful call mirrors usage.

    ``adapter(session) -> UsageSnapshot | None`` reads your session object
    (default: hermes-webui's attribute names). The session is the bound
    instance for a method, else the first positional argument. Async
    functions are awaited before the capture. See the module docstring for
    how ``enabled`` combines with ``install()`` and the settings.
    """
    if _func is not None:
        raise TypeError("use @mirror_usage(...) with parentheses, e.g. @mirror_usage(adapter=my_adapter)")
    if adapter is None:
        adapter = webui_session_adapter
    elif not callable(adapter):
        raise TypeError(f"adapter must be callable, got {type(adapter).__name__}")
    if not (enabled is None or type(enabled) is bool or callable(enabled)):
        raise TypeError(f"enabled must be None, a bool or a callable, got {type(enabled).__name__}")
    explicit = Switch(enabled) if enabled is not None else None
    chosen: AdapterFn = adapter

    @wrapt.decorator
    def sync_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = wrapped(*args, **kwargs)
        _after_save(_session_of(instance, args), explicit, chosen)
        return result

    @wrapt.decorator
    async def async_wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        result = await wrapped(*args, **kwargs)
        _after_save(_session_of(instance, args), explicit, chosen)
        return result

    def decorate(func: F) -> F:
        # An async save must be awaited before we read the session; a sync
        # wrapper would capture before the save ran.
        target = func.__func__ if isinstance(func, (staticmethod, classmethod)) else func
        if inspect.iscoroutinefunction(target):
            wrapped_async = async_wrapper(func)
            _mark_coroutine(wrapped_async)
            return cast(F, wrapped_async)
        return cast(F, sync_wrapper(func))

    return decorate


def _mark_coroutine(obj: Any) -> None:
    """Let ``inspect.iscoroutinefunction`` see through the wrapper (wrapt 1.x does not)."""
    marker = getattr(inspect, "markcoroutinefunction", None)
    if marker is None or inspect.iscoroutinefunction(obj):
        return
    try:
        marker(obj)
    except (AttributeError, TypeError):
        pass
