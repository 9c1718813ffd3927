"""Wrapping someone else's function with wrapt, and putting it back.

One helper for the three things ``install()`` wraps (the session's save,
hermes-agent's ``AIAgent.run_conversation``, the host's own state.db
bridge). The original is resolved through the class ``__dict__`` along the
MRO (``wrapt.resolve_path``), kept in a ``Patch`` in module state (never as
a class attribute, where it would get bound), and restored only if the
attribute is still our wrapper — someone may have wrapped over us.
Post-import hooks cannot be unregistered, so each one checks that it is
still wanted before patching (a generation number).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wrapt

from ..diagnostics import RateLimitedLog, describe_error, logger

__all__ = ["Patch", "apply_patch", "restore_patch", "when_imported", "split_target", "MARK"]

MARK = "__webui_insights__"
WrapperFn = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclass(slots=True)
class Patch:
    parent: Any
    attribute: str
    original: Any
    wrapper: Any


def split_target(target: str) -> tuple[str, str]:
    module, sep, path = target.partition(":")
    if not sep or not module or not path:
        raise ValueError(f"target must look like 'package.module:Class.method', got {target!r}")
    return module, path


def _is_ours(value: Any) -> bool:
    wrapper = getattr(value, "_self_wrapper", None) if isinstance(value, wrapt.FunctionWrapper) else None
    return bool(getattr(wrapper, MARK, False))


def apply_patch(module: Any, path: str, wrapper_fn: WrapperFn) -> Patch | None:
    """Wrap ``path`` on ``module`` (None when it is ours already)."""
    parent, attribute, original = wrapt.resolve_path(module, path)
    if _is_ours(original):
        return None
    setattr(wrapper_fn, MARK, True)
    # Positional arguments: wrapt 2 renamed some keywords.
    wrapper = wrapt.FunctionWrapper(original, wrapper_fn)
    wrapt.apply_patch(parent, attribute, wrapper)
    return Patch(parent, attribute, original, wrapper)


def restore_patch(patch: Patch) -> bool:
    """Put the original back if the attribute is still our wrapper; False (logged) otherwise."""
    parent = patch.parent
    current = vars(parent).get(patch.attribute) if isinstance(parent, type) else getattr(parent, patch.attribute, None)
    if current is not patch.wrapper:
        logger.warning(
            "webui-insights: %s.%s was wrapped again after us; leaving it in place",
            getattr(parent, "__name__", parent),
            patch.attribute,
        )
        return False
    setattr(parent, patch.attribute, patch.original)
    return True


def when_imported(module_name: str, apply: Callable[[Any], None], log: RateLimitedLog, what: str) -> None:
    """Run ``apply(module)`` now if ``module_name`` is imported, else right after it is.

    ``apply`` must be tiny (no heavy imports, no threads: it may run inside
    the host's import) and is guarded: a failure is logged, never raised
    into the host's import.
    """

    def on_import(module: Any) -> None:
        try:
            apply(module)
        except Exception as exc:
            log.emit(logging.ERROR, "patch:" + what, "webui-insights: cannot wrap %s: %s", what, describe_error(exc))

    wrapt.register_post_import_hook(on_import, module_name)
    if module_name not in sys.modules:
        logger.debug("webui-insights: will wrap %s when %s is imported", what, module_name)
