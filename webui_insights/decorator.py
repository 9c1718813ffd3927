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

from . import installer
from .diagnostics import report_internal_error
from .settings import Explicit, Switch
from .snapshot import UsageSnapshot, webui_session_adapter

__all__ = ["mirror_usage"]

F = TypeVar("F", bound=Callable[..., Any])
AdapterFn = Callable[[Any], "UsageSnapshot | None"]


class _SwitchedState:
    """The installation state, seen through another switch.

    ``installer._capture`` asks ``state.switch``; everything else (gate,
    counters, log, writer) must stay the shared installation's, so only
    ``switch`` is replaced and every other attribute is read through.
    """

    __slots__ = ("_base", "switch")

    def __init__(self, base: Any, switch: Switch) -> None:
        self._base = base
        self.switch = switch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


class _DefaultSwitch:
    """One env-then-setting switch for all ``enabled=None`` decorators.

    The WebUI setting is process-wide, so one cached answer serves every
    decorator; it is rebuilt when the installation state is replaced.
    """

    def __init__(self) -> None:
        self._owner: Any = None
        self._switch: Switch | None = None

    def for_state(self, state: Any) -> Switch:
        switch = self._switch
        if switch is None or self._owner is not state:
            switch = Switch(None, log=state.log)
            self._owner, self._switch = state, switch
        return switch


_default_switch = _DefaultSwitch()


def _state_for(explicit: Switch | None) -> Any:
    state = installer._state
    if explicit is not None:
        return _SwitchedState(state, explicit)
    if state.target is not None:
        return state  # install() is active: its switch decides
    return _SwitchedState(state, _default_switch.for_state(state))


def _session_of(instance: Any, args: tuple[Any, ...]) -> Any:
    """A method's session is ``self``; a plain function's is its first argument."""
    if instance is not None and not isinstance(instance, type):
        return instance
    return args[0] if args else None


def _after_save(session: Any, explicit: Switch | None, adapter: AdapterFn) -> None:
    try:
        state = _state_for(explicit)
        installer._capture(session, state, adapter)
    except Exception as exc:
        base = installer._state
        report_internal_error(base.stats, base.log, "mirror_usage", exc)


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
