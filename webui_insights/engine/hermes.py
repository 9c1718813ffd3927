"""What the installed hermes-agent offers: its ``hermes_state`` module and its capabilities.

The engine talks to hermes-agent only through ``hermes_state.SessionDB``.
This module imports it lazily (the package must import and do nothing
without hermes-agent), says which of the SessionDB methods the engine relies
on exist in the installed release, and gives hermes' own title sanitiser —
or the same rules where the release has none — so titles are compared and
written in the form hermes itself would store.

Never: import hermes-agent at import time, or open a database.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = [
    "HermesStateUnavailable",
    "Capabilities",
    "hermes_state",
    "hermes_agent_version",
    "forget_hermes_state",
    "fallback_sanitize_title",
]

_FALLBACK_MAX_TITLE = 100


class HermesStateUnavailable(ImportError):
    """hermes-agent is not installed (or its hermes_state does not import)."""


_module_cache: dict[str, ModuleType | None] = {}


def hermes_state() -> ModuleType:
    """Import ``hermes_state`` once; raise HermesStateUnavailable if absent."""
    if "hermes_state" not in _module_cache:
        try:
            _module_cache["hermes_state"] = importlib.import_module("hermes_state")
        except ImportError:
            _module_cache["hermes_state"] = None
        except Exception as exc:
            # Not "absent": e.g. imported for the first time while the
            # interpreter shuts down. Say so, and let a later call try again.
            raise HermesStateUnavailable(f"hermes_state could not be imported: {type(exc).__name__}: {exc}") from exc
    module = _module_cache["hermes_state"]
    if module is None or not hasattr(module, "SessionDB"):
        raise HermesStateUnavailable("hermes-agent is not installed: pip install 'webui-insights[hermes]'")
    return module


def forget_hermes_state() -> None:
    """Let the next call import again (after installing hermes-agent, or in tests)."""
    _module_cache.clear()


def hermes_agent_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("hermes-agent")
    except Exception:
        return None


# hermes-agent 0.19.0's sanitize_title rules, for releases without one.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_INVISIBLE = re.compile(r"[\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufffc\ufff9-\ufffb]")
_SPACES = re.compile(r"\s+")


def fallback_sanitize_title(title: str | None, max_length: int = _FALLBACK_MAX_TITLE) -> str | None:
    """hermes' title rules: control and invisible characters out, whitespace folded, length checked."""
    if not title:
        return None
    cleaned = _SPACES.sub(" ", _INVISIBLE.sub("", _CONTROL.sub("", title))).strip()
    if not cleaned:
        return None
    if len(cleaned) > max_length:
        raise ValueError(f"Title too long ({len(cleaned)} chars, max {max_length})")
    return cleaned


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the installed SessionDB offers; decided once per class."""

    execute_write: bool
    insert_message_rows: bool
    sanitize_title: Any  # the callable hermes stores titles through
    max_title_length: int
    degraded: tuple[str, ...] = ()

    @classmethod
    def detect(cls, kind: Any) -> Capabilities:
        """What ``kind`` (the SessionDB class, or an instance of it) can do."""
        kind = kind if isinstance(kind, type) else type(kind)
        degraded: list[str] = []
        execute_write = callable(getattr(kind, "_execute_write", None)) and _takes_one_argument(
            kind._execute_write, method=True
        )
        if not execute_write:
            degraded.append("no SessionDB._execute_write: nothing can be written (hermes-agent too old)")
        insert_rows = callable(getattr(kind, "_insert_message_rows", None))
        if not insert_rows:
            degraded.append("no SessionDB._insert_message_rows (< 0.18.2): transcript rows use a plain INSERT")
        max_len = getattr(kind, "MAX_TITLE_LENGTH", _FALLBACK_MAX_TITLE)
        if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len <= 0:
            max_len = _FALLBACK_MAX_TITLE
        sanitize = getattr(kind, "sanitize_title", None)
        if not callable(sanitize):
            degraded.append("no SessionDB.sanitize_title: hermes' rules applied by webui-insights")
            limit = max_len

            def sanitize(title: str | None) -> str | None:
                return fallback_sanitize_title(title, limit)

        return cls(execute_write, insert_rows, sanitize, max_len, tuple(degraded))

    @classmethod
    def of_installed(cls) -> Capabilities:
        """The installed hermes-agent's SessionDB, without opening a database."""
        return cls.detect(hermes_state().SessionDB)

    @classmethod
    def for_reading(cls) -> Capabilities:
        """The installed release's, or hermes' rules without it (reading needs no SessionDB)."""
        try:
            return cls.of_installed()
        except HermesStateUnavailable:
            return cls(False, False, fallback_sanitize_title, _FALLBACK_MAX_TITLE, ("hermes-agent is not installed",))


def _takes_one_argument(fn: Any, *, method: bool = False) -> bool:
    """``fn(x)`` is a valid call (``method``: ``fn(self, x)`` on the class)."""
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return False
    return len(params) == (2 if method else 1)
