"""Where a profile's state.db is.

Owns the one rule that decides which file a chat's row may reach:
"default" or no profile → the hermes root home, any other valid profile
name → ``<root>/profiles/<name>``. The root is captured once (``install()``
captures it at start-up, the CLI when it starts): hermes-webui switches
profiles by rewriting ``HERMES_HOME`` for the whole process, so "the current
HERMES_HOME" at write time may be another profile's home.

It never creates a directory or a file, and it refuses, rather than
guesses, any profile name that is not exactly a hermes profile id: a
refused name is written nowhere, and never falls back to the default
profile's state.db.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PROFILE_NAME_PATTERN",
    "DEFAULT_PROFILE",
    "InvalidProfile",
    "Homes",
    "is_valid_profile_name",
    "hermes_root",
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


def hermes_root() -> Path:
    """The hermes root home (default profile, parent of ``profiles/``), from the environment now.

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


@dataclass(frozen=True, slots=True)
class Homes:
    """The hermes homes of one installation, fixed when captured."""

    root: Path

    @classmethod
    def capture(cls) -> Homes:
        return cls(hermes_root())

    def home(self, profile: str | None) -> Path:
        """The hermes home of ``profile``; raises InvalidProfile for a bad name."""
        if profile is None or profile == DEFAULT_PROFILE:
            return self.root
        if not is_valid_profile_name(profile):
            raise InvalidProfile(f"not a hermes profile name: {profile!r}")
        profiles_dir = self.root / "profiles"
        home = profiles_dir / profile
        try:
            resolved = home.resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError up to Python 3.12)
            raise InvalidProfile(f"profile {profile!r}: its folder cannot be resolved ({exc})") from exc
        try:
            resolved.relative_to(profiles_dir.resolve())
        except (ValueError, OSError, RuntimeError) as exc:
            raise InvalidProfile(f"profile {profile!r} resolves outside {profiles_dir}") from exc
        return home

    def state_db(self, profile: str | None) -> Path:
        return self.home(profile) / STATE_DB_NAME

    def profile_names(self) -> list[str]:
        """ "default" and every valid profile directory under ``<root>/profiles``."""
        names = [DEFAULT_PROFILE]
        try:
            with os.scandir(self.root / "profiles") as entries:
                names += sorted(e.name for e in entries if is_valid_profile_name(e.name) and e.is_dir())
        except OSError:
            pass
        return names
