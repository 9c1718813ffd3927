"""Zero-code activation: ``webui-insights run -- COMMAND`` and the environment behind it.

Owns the contract between the launcher and the bootstrap ``sitecustomize``
(``_bootstrap/sitecustomize.py``): the folder that goes first on
``PYTHONPATH``, the activation variable, the module that triggers
``install()``. Three pieces:

- ``launch_env()`` / ``recipe()`` — the environment COMMAND gets: the
  bootstrap folder first on ``PYTHONPATH`` (the user's entries kept after
  it), ``WEBUI_INSIGHTS_AUTOINSTALL=1``, and the documented switches the
  options ask for. ``recipe()`` is the same as the variables to set by hand
  (systemd ``Environment=``, a Dockerfile ``ENV``), printed by
  ``webui-insights run --print-env``.
- ``exec_command()`` — replaces this process with COMMAND (``os.execvpe``):
  COMMAND *is* the process, so its exit status, the signals sent to it
  (Ctrl-C, SIGTERM from a supervisor) and its PID are those of the launcher,
  with nothing in between to forward or to leave behind.
- ``activate()`` — what the bootstrap calls in a process that has just
  imported hermes-webui's ``api.models``: ``install()`` with its defaults
  (the switches come from the environment and the WebUI's settings), unless
  the WebUI's own code installed it already.

Never: print (the CLI does), import the host, or let a failure of the
activation reach the host's import.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from .diagnostics import logger, report_internal_error
from .settings import ENV_ENABLED, ENV_TRANSCRIPTS

__all__ = [
    "ENV_AUTOINSTALL",
    "TRIGGER_MODULE",
    "BOOTSTRAP_DIR",
    "LaunchError",
    "recipe",
    "launch_env",
    "exec_command",
    "activate",
]

ENV_AUTOINSTALL = "WEBUI_INSIGHTS_AUTOINSTALL"
"""``1`` turns the bootstrap on; without it a ``PYTHONPATH`` that leaked elsewhere does nothing."""

TRIGGER_MODULE = "api.models"
"""hermes-webui's module whose import installs the mirror (it defines ``Session``)."""

BOOTSTRAP_DIR = Path(__file__).resolve().parent / "_bootstrap"
"""Holds the ``sitecustomize.py`` that goes first on ``PYTHONPATH``."""


class LaunchError(Exception):
    """COMMAND cannot be started (not found, not executable); nothing was run."""


def _flag(value: bool) -> str:
    return "1" if value else "0"


def recipe(*, enabled: bool | None = None, transcripts: bool | None = None) -> dict[str, str]:
    """The variables that activate webui-insights in every Python process of an environment.

    ``PYTHONPATH`` here is the bootstrap folder alone: a service that
    already sets ``PYTHONPATH`` puts its own entries after it (``:``-joined).
    """
    env = {"PYTHONPATH": str(BOOTSTRAP_DIR), ENV_AUTOINSTALL: "1"}
    if enabled is not None:
        env[ENV_ENABLED] = _flag(enabled)
    if transcripts is not None:
        env[ENV_TRANSCRIPTS] = _flag(transcripts)
    return env


def _same_path(a: str, b: str) -> bool:
    return bool(a) and os.path.realpath(a) == os.path.realpath(b)


def launch_env(
    environ: Mapping[str, str] | None = None, *, enabled: bool | None = None, transcripts: bool | None = None
) -> dict[str, str]:
    """``environ`` (default ``os.environ``) with ``recipe()`` applied, the user's PYTHONPATH kept after ours."""
    env = dict(os.environ if environ is None else environ)
    wanted = recipe(enabled=enabled, transcripts=transcripts)
    ours = wanted.pop("PYTHONPATH")
    # A launcher inside a launcher (or a recipe plus a launcher) lists the folder once. An empty
    # PYTHONPATH adds nothing (a trailing separator would put the current directory on sys.path).
    existing = env.get("PYTHONPATH", "")
    theirs = [p for p in existing.split(os.pathsep) if not _same_path(p, ours)] if existing else []
    env["PYTHONPATH"] = os.pathsep.join([ours, *theirs])
    env.update(wanted)
    return env


# Python ignores these at start-up and an exec keeps an ignored signal ignored; a shell starts
# COMMAND with them at their defaults (`yes | head -1` must end by SIGPIPE), so restore them.
_RESTORED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))


def exec_command(argv: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    """Replace this process with ``argv`` (looked up on ``env``'s PATH); LaunchError if it cannot start.

    A Python signal handler becomes the default again at exec; a signal this
    process inherited as ignored (SIGINT of a background job) stays ignored,
    as it would for COMMAND started from the same shell.
    """
    if not argv:
        raise LaunchError("no command to run")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    previous = {signum: signal.getsignal(signum) for signum in _RESTORED_SIGNALS}
    for signum in previous:
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execvpe(argv[0], list(argv), dict(env))
    except OSError as exc:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        raise LaunchError(_cannot_start(argv[0], exc)) from exc
    raise AssertionError("unreachable: execvpe returned")  # pragma: no cover


def _cannot_start(command: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        where = "no such file" if os.sep in command else "not found on PATH"
        return f"cannot run {command!r}: {where}"
    if isinstance(exc, PermissionError):
        return f"cannot run {command!r}: permission denied (not executable?)"
    return f"cannot run {command!r}: {exc.strerror or exc}"


def activate(module: object = None) -> bool:
    """``install()`` in a process that has just imported hermes-webui's ``api.models``; True when installed now.

    Called by the bootstrap ``sitecustomize`` inside the host's import
    (``module`` is the WebUI's ``api.models``, which install() finds by
    name), so it never raises. A WebUI whose own code already called
    ``install()`` keeps that installation (and its arguments), quietly.
    """
    from .hook import installer

    state = installer._state
    try:
        if state.target is not None:
            logger.debug("webui-insights: already installed on %s; the launcher leaves it", state.target)
            return False
        installed = installer.install()
        if installed:
            logger.debug("webui-insights: installed by the launcher in %s (pid %d)", sys.executable, os.getpid())
        return installed
    except Exception as exc:
        report_internal_error(state.stats, state.log, "launcher activation", exc)
        return False
