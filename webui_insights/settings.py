"""The on/off switch: install() argument, then environment, then the WebUI setting.

Owns the answer to "should this save be mirrored?". The answer is cached for
``ttl`` seconds so a save never reads a file; toggling ``sync_to_insights``
in the WebUI takes effect within that time, without a restart. This module
never calls into the host's code (a save may run while the host holds its own
locks): it reads the same settings.json the host's ``load_settings()`` reads.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import forksafe
from .diagnostics import RateLimitedLog, Stats, describe_error

__all__ = [
    "ENV_ENABLED",
    "ENV_TRANSCRIPTS",
    "ENV_WEBUI_STATE_DIR",
    "ENV_WEBUI_SETTINGS_FILE",
    "SETTING_KEY",
    "Switch",
    "parse_env_flag",
    "webui_settings_file",
    "webui_sessions_dir",
    "webui_state_dir",
    "read_webui_setting",
]

ENV_ENABLED = "WEBUI_INSIGHTS_ENABLED"
ENV_TRANSCRIPTS = "WEBUI_INSIGHTS_TRANSCRIPTS"
ENV_WEBUI_STATE_DIR = "HERMES_WEBUI_STATE_DIR"
ENV_WEBUI_SETTINGS_FILE = "HERMES_WEBUI_SETTINGS_FILE"
SETTING_KEY = "sync_to_insights"
TRANSCRIPTS_SETTING_KEY = "sync_transcripts_to_state_db"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

Explicit = bool | Callable[[], Any] | None


def parse_env_flag(value: str | None) -> bool | None:
    """``1/true/yes/on`` → True, ``0/false/no/off`` → False, unset or other → None."""
    if value is None:
        return None
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


def webui_state_dir() -> Path:
    env = os.environ.get(ENV_WEBUI_STATE_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HERMES_HOME", "").strip()
    return (Path(home).expanduser() if home else Path.home() / ".hermes") / "webui"


def webui_sessions_dir() -> Path:
    """The WebUI's sessions directory: the host's own answer (``api.config.SESSION_DIR``) when loaded."""
    config = sys.modules.get("api.config")
    configured = getattr(config, "SESSION_DIR", None) if config is not None else None
    if isinstance(configured, (str, os.PathLike)):
        return Path(configured)
    return webui_state_dir() / "sessions"


def webui_settings_file() -> Path:
    """The file hermes-webui keeps its settings in.

    The host's own answer (``api.config.SETTINGS_FILE``) when the host is
    already loaded; we never import the host ourselves.
    """
    config = sys.modules.get("api.config")
    configured = getattr(config, "SETTINGS_FILE", None) if config is not None else None
    if isinstance(configured, (str, os.PathLike)):
        return Path(configured)
    env = os.environ.get(ENV_WEBUI_SETTINGS_FILE, "").strip()
    if env:
        return Path(env).expanduser()
    return webui_state_dir() / "settings.json"


class SettingsUnreadable(Exception):
    """settings.json exists but is not a JSON object (e.g. half written)."""


def read_webui_setting(key: str, path: Path | None = None) -> tuple[bool | None, str]:
    """Read one boolean setting: (value or None when absent/not a bool, why).

    Raises SettingsUnreadable when the file exists but cannot be parsed, so
    the caller can keep the last good value instead of flapping off.
    """
    path = path or webui_settings_file()
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"{path} (absent)"
    except UnicodeDecodeError as exc:
        raise SettingsUnreadable(f"{path}: not UTF-8 text") from exc
    except OSError as exc:
        raise SettingsUnreadable(f"{path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsUnreadable(f"{path}: invalid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise SettingsUnreadable(f"{path}: top level is {type(data).__name__}, not an object")
    value = data.get(key)
    if value is None and key not in data:
        return None, f"{path} ({key} not set)"
    if type(value) is not bool:
        return None, f"{path} ({key} is {type(value).__name__}, not true/false)"
    return value, str(path)


class Switch:
    """A cached boolean: explicit argument > env var > WebUI setting > off.

    ``enabled()`` is on the save path: when the cached answer is fresh it is a
    clock read and a comparison. A callable ``explicit`` is the caller's own
    switch and is called on every check; if it raises, the answer is off
    (logged with the exception, rate-limited, and counted in ``stats``
    under ``switch_errors`` when a ``Stats`` is given).
    """

    def __init__(
        self,
        explicit: Explicit = None,
        *,
        env_name: str = ENV_ENABLED,
        setting_key: str = SETTING_KEY,
        ttl: float = 1.0,
        log: RateLimitedLog | None = None,
        stats: Stats | None = None,
    ) -> None:
        self._explicit = explicit
        self._stats = stats
        self._env_name = env_name
        self._setting_key = setting_key
        self._ttl = ttl
        self._log = log or RateLimitedLog()
        self._lock = threading.Lock()
        self._value = False
        self._source = "default (off)"
        self._expires = 0.0
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def enabled(self) -> bool:
        explicit = self._explicit
        if explicit is not None:
            if type(explicit) is bool:
                return explicit
            try:
                return bool(explicit())
            except Exception as exc:
                return self._explicit_failed(exc)
        if time.monotonic() < self._expires:
            return self._value
        return self._refresh()

    def report_to(self, stats: Stats, log: RateLimitedLog) -> None:
        """Count and log this switch's failures there from now on (a decorator's switch follows the installation)."""
        self._stats, self._log = stats, log

    def _explicit_failed(self, exc: Exception) -> bool:
        if self._stats is not None:
            self._stats.incr("switch_errors")
        self._log.warning(
            "switch:" + type(exc).__name__,
            "webui-insights: the enabled() switch raised %s; not mirroring this save",
            describe_error(exc),
        )
        return False

    def invalidate(self) -> None:
        """Forget the cached answer: the next check reads env and settings again."""
        self._expires = 0.0

    def describe(self) -> tuple[bool, str]:
        """(value, where it came from), for ``status``."""
        value = self.enabled()
        if self._explicit is not None:
            return value, "install() argument"
        return value, self._source

    def _refresh(self) -> bool:
        with self._lock:
            value, source = self._decide()
            self._value, self._source = value, source
            self._expires = time.monotonic() + self._ttl
            return value

    def _decide(self) -> tuple[bool, str]:
        env_value = parse_env_flag(os.environ.get(self._env_name))
        if env_value is not None:
            return env_value, f"env {self._env_name}"
        raw_env = os.environ.get(self._env_name)
        if raw_env is not None and raw_env.strip():
            self._log.warning(
                "env:" + self._env_name,
                "webui-insights: ignoring %s=%r (expected 1/0, true/false)",
                self._env_name,
                raw_env[:20],
            )
        try:
            value, source = read_webui_setting(self._setting_key)
        except SettingsUnreadable as exc:
            # A half-written settings file must not switch mirroring off
            # (and on again) between two saves: keep the last good answer.
            self._log.warning(
                "settings:" + self._setting_key,
                "webui-insights: cannot read the WebUI setting %s, keeping %s: %s",
                self._setting_key,
                "on" if self._value else "off",
                exc,
            )
            return self._value, self._source
        if value is None:
            if "not true/false" in source:
                self._log.warning(
                    "settings-type:" + self._setting_key,
                    "webui-insights: WebUI setting %s is not a boolean; treating it as off (%s)",
                    self._setting_key,
                    source,
                )
            return False, f"WebUI setting {self._setting_key}: {source} → off"
        return value, f"WebUI setting {self._setting_key} in {source}"
