"""Where a profile's state.db is.

Owns the one rule that decides which file a session's usage may reach. It
never creates a directory or a file, and it refuses, rather than guesses, any
profile name that is not exactly a hermes profile id: a refused name is
written nowhere, and never falls back to the default profile's state.db.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "PROFILE_NAME_PATTERN",
    "InvalidProfile",
    "is_valid_profile_name",
    "hermes_home",
    "hermes_root",
    "profile_home",
    "state_db_path",
]

# hermes-agent checks names with re.match and a "$" anchor, which lets a
# trailing newline through; fullmatch does not.
PROFILE_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
STATE_DB_NAME = "state.db"
DEFAULT_PROFILE = "default"


class InvalidProfile(ValueError):
    """The profile name is not a hermes profile id, or leads outside the home."""


def is_valid_profile_name(name: Any) -> bool:
    return type(name) is str and PROFILE_NAME_PATTERN.fullmatch(name) is not None


def hermes_home() -> Path:
    """The process's hermes home: ``HERMES_HOME``, else ``~/.hermes``."""
    env = os.environ.get("HERMES_HOME", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".hermes"


def hermes_root() -> Path:
    """The directory that holds ``profiles/``.

    hermes-agent's own answer when it is importable; otherwise the same rule:
    ``~/.hermes`` when HERMES_HOME is inside it (or unset), the parent of a
    ``profiles/<name>`` HERMES_HOME, else HERMES_HOME itself.
    """
    try:
        from hermes_constants import get_default_hermes_root
    except Exception:
        pass
    else:
        try:
            return Path(get_default_hermes_root())
        except Exception:
            pass
    native = Path.home() / ".hermes"
    env = os.environ.get("HERMES_HOME", "").strip()
    if not env:
        return native
    home = Path(env).expanduser()
    try:
        home.resolve().relative_to(native.resolve())
        return native
    except ValueError:
        pass
    if home.parent.name == "profiles":
        return home.parent.parent
    return home


def profile_home(profile: str | None) -> Path:
    """The hermes home of ``profile``; raises InvalidProfile for a bad name.

    None and "default" are the process's HERMES_HOME. Any other name is
    ``<root>/profiles/<name>``, and must stay there after symlinks resolve.
    """
    if profile is None or profile == DEFAULT_PROFILE:
        return hermes_home()
    if not is_valid_profile_name(profile):
        raise InvalidProfile(f"not a hermes profile name: {profile!r}")
    profiles_dir = hermes_root() / "profiles"
    home = profiles_dir / profile
    try:
        resolved = home.resolve()
        resolved.relative_to(profiles_dir.resolve())
    except (ValueError, OSError) as exc:
        raise InvalidProfile(f"profile {profile!r} resolves outside {profiles_dir}") from exc
    return home


def state_db_path(profile: str | None) -> Path:
    return profile_home(profile) / STATE_DB_NAME
