"""webui-insights' ``sitecustomize``: ``install()`` in a WebUI nobody edited.

``webui-insights run`` (or the environment recipe in README) puts this
file's folder first on ``PYTHONPATH``; Python's ``site`` then imports it,
as ``sitecustomize``, at the start of every Python process started under
that environment — the WebUI's server whether a script execs it or spawns
it, and every other Python process too. So in every process it:

1. when ``WEBUI_INSIGHTS_AUTOINSTALL`` is on, puts a finder in front of
   ``sys.meta_path`` that watches for one module, hermes-webui's
   ``api.models``. Right after that module has run (and only if it defines
   a ``Session`` class with a ``save``: another application's ``api.models``
   is left alone), it imports webui_insights and calls ``install()`` — the
   documented one line, at the moment the WebUI would run it. Then the
   finder leaves ``sys.meta_path``. A process that never imports the WebUI
   pays for reading this file and one string comparison per import: no
   webui_insights, no wrapt (whose import alone costs tens of ms), no
   thread, no file opened.
2. runs the ``sitecustomize`` this one hides — the next one on ``sys.path``,
   a user's or the distribution's — as ``sitecustomize``, so it keeps
   working; its errors reach ``site`` exactly as they would without us.

Never raises into the process: a failure of its own is one line on the
``webui_insights`` logger (at most once per process: the finder fires
once). Every Python that inherits ``PYTHONPATH`` reads this file, whatever
its version or environment, so it imports only the standard library at
start-up and keeps to syntax old Pythons accept.
"""

from __future__ import annotations

import os
import sys

# Mirrors webui_insights.launcher (ENV_AUTOINSTALL, TRIGGER_MODULE, the flag words of
# webui_insights.settings); this file cannot import them. tests/test_launcher.py checks they agree.
_ACTIVATION_ENV = "WEBUI_INSIGHTS_AUTOINSTALL"
_TRIGGER = "api.models"
_ON = ("1", "true", "yes", "on")
_HERE = os.path.dirname(os.path.abspath(__file__))


def _warn(message: str, *args: object) -> None:
    try:
        import logging

        logging.getLogger("webui_insights").warning(message, *args)
    except Exception:
        pass


def _activate(module: object) -> None:
    """``api.models`` has just run: install the mirror if it is hermes-webui's."""
    try:
        session = getattr(module, "Session", None)
        if not isinstance(session, type) or not callable(getattr(session, "save", None)):
            return  # another application's api.models
        try:
            from webui_insights.launcher import activate
        except ImportError as exc:
            _warn(
                "webui-insights: not mirroring this WebUI: %s cannot import webui_insights.launcher (%s: %s); "
                "install webui-insights into the environment that runs the WebUI",
                sys.executable,
                type(exc).__name__,
                exc,
            )
            return
        activate(module)
    except Exception as exc:
        _warn("webui-insights: not mirroring this WebUI: %s: %s", type(exc).__name__, exc)


class _Loader:
    """The real loader of ``api.models``, then ``_activate``; otherwise invisible."""

    def __init__(self, loader: object, finder: _Finder) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: object) -> object:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: object) -> None:
        # The module shows its real loader (introspection, reloads), as if we were never there.
        try:
            if getattr(module, "__loader__", None) is self:
                module.__loader__ = self._loader  # type: ignore[attr-defined]
            spec = getattr(module, "__spec__", None)
            if spec is not None and spec.loader is self:
                spec.loader = self._loader
        except Exception:
            pass
        self._loader.exec_module(module)  # type: ignore[attr-defined]  # the host's code: unguarded
        self._finder.leave()
        _activate(module)

    def __getattr__(self, name: str) -> object:
        # get_source, get_filename, is_package, ... of the real loader.
        if name == "_loader":
            raise AttributeError(name)
        return getattr(self._loader, name)


class _Finder:
    """A ``sys.meta_path`` finder that only ever answers for ``api.models``."""

    def __init__(self) -> None:
        self._searching: set[int] = set()

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname != _TRIGGER:
            return None
        try:
            import _thread

            me = _thread.get_ident()
            if me in self._searching:
                return None
            self._searching.add(me)
            try:
                spec = None
                finders: list[object] = list(sys.meta_path)
                for finder in finders:
                    find_spec = getattr(finder, "find_spec", None)
                    if finder is self or find_spec is None:
                        continue
                    spec = find_spec(fullname, path, target)
                    if spec is not None:
                        break
            finally:
                self._searching.discard(me)
            loader = getattr(spec, "loader", None)
            if loader is None or not hasattr(loader, "exec_module"):
                return None  # nothing we can follow: the import system goes on as without us
            spec.loader = _Loader(loader, self)  # type: ignore[union-attr]
            return spec
        except Exception as exc:
            _warn("webui-insights: not watching for the WebUI: %s: %s", type(exc).__name__, exc)
            self.leave()
            return None

    def leave(self) -> None:
        try:
            sys.meta_path.remove(self)  # type: ignore[arg-type]
        except ValueError:
            pass

    def invalidate_caches(self) -> None:
        pass


def _watch() -> None:
    try:
        if os.environ.get(_ACTIVATION_ENV, "").strip().lower() in _ON and _TRIGGER not in sys.modules:
            sys.meta_path.insert(0, _Finder())  # type: ignore[arg-type]
    except Exception as exc:
        _warn("webui-insights: not watching for the WebUI: %s: %s", type(exc).__name__, exc)


def _real(entry: object) -> str | None:
    try:
        return os.path.realpath(entry or os.curdir) if isinstance(entry, str) else None
    except Exception:
        return None


def _chain() -> None:
    """Run the ``sitecustomize`` further down ``sys.path``, in our place in ``sys.modules``."""
    try:
        import importlib.machinery
        import importlib.util

        here = _real(_HERE)
        search = [entry for entry in sys.path if isinstance(entry, str) and _real(entry) != here]
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", search)
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)
    except Exception as exc:
        _warn("webui-insights: cannot look for another sitecustomize: %s: %s", type(exc).__name__, exc)
        return
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)  # theirs: its errors reach `site` as they would without us


_watch()
_chain()
