"""``status``: would mirroring work here, and is it keeping up?

Owns the checks a user runs when ``hermes insights`` does not show their
WebUI chats: hermes-agent importable, each profile's state.db present and
writable, the switch and where its value came from, the WebUI sessions
directory, chats on disk vs ``webui`` rows, and, inside a process that
called ``install()``, the writer's last error. ``problems`` lists every reason
mirroring would not work, most fundamental first.

Never: create or write state.db (rows are counted through a read-only SQLite
connection, no SessionDB is opened), or change a setting.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import installer, sink
from .profiles import DEFAULT_PROFILE, InvalidProfile, state_db_path
from .settings import ENV_TRANSCRIPTS, TRANSCRIPTS_SETTING_KEY, Switch
from .verify import count_webui_rows
from .webui_files import default_sessions_dir, scan_sessions

__all__ = ["ProfileStatus", "Status", "collect_status"]


@dataclass(slots=True)
class ProfileStatus:
    name: str
    state_db: str | None
    present: bool = False
    writable: bool = False
    webui_sessions: int = 0
    webui_rows: int | None = None
    problem: str | None = None


@dataclass(slots=True)
class Status:
    hermes_agent: bool
    hermes_agent_version: str | None
    hermes_agent_error: str | None
    enabled: bool
    enabled_source: str
    transcripts: bool
    transcripts_source: str
    degraded: list[str]
    sessions_dir: str
    sessions_dir_present: bool
    session_files: int
    bad_session_files: int
    profiles: list[ProfileStatus] = field(default_factory=list)
    in_process: bool = False
    stats: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _writable(path: Path) -> bool:
    # SQLite also creates -wal/-shm beside the file, so the directory counts too.
    return os.access(path, os.R_OK | os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def _profile_status(name: str, sessions: int) -> ProfileStatus:
    profile = None if name == DEFAULT_PROFILE else name
    try:
        path = state_db_path(profile)
    except InvalidProfile as exc:
        return ProfileStatus(name, None, webui_sessions=sessions, problem=str(exc))
    status = ProfileStatus(name, str(path), present=path.is_file(), webui_sessions=sessions)
    if not status.present:
        status.problem = f"no state.db at {path} (run `hermes` once for this profile; webui-insights never creates one)"
        return status
    status.writable = _writable(path)
    if not status.writable:
        status.problem = f"state.db at {path} is not writable by this user"
    try:
        status.webui_rows = count_webui_rows(path)
    except sqlite3.Error as exc:
        status.problem = status.problem or f"cannot read {path}: {exc}"
    return status


def collect_status(*, profile: str | None = None, sessions_dir: Path | None = None) -> Status:
    """Everything ``webui-insights status`` prints; ``profile`` limits it to one profile."""
    try:
        degraded = list(sink.Capabilities.of_installed().degraded)
        hermes_ok, hermes_error = True, None
    except sink.HermesStateUnavailable as exc:
        hermes_ok, hermes_error, degraded = False, str(exc), []
    in_process = installer.is_installed()
    # Inside the host, ask the installed switch (it may be an install() argument).
    switch = installer._state.switch if in_process else Switch(None)
    enabled, source = switch.describe()
    transcripts_switch = (
        installer._state.transcripts
        if in_process
        else Switch(None, env_name=ENV_TRANSCRIPTS, setting_key=TRANSCRIPTS_SETTING_KEY)
    )
    transcripts, transcripts_source = transcripts_switch.describe()

    directory = Path(sessions_dir) if sessions_dir is not None else default_sessions_dir()
    scan = scan_sessions(directory)
    per_profile = Counter(s.profile or DEFAULT_PROFILE for s in scan.snapshots)
    names = [profile] if profile else sorted({DEFAULT_PROFILE, *per_profile}, key=lambda n: (n != DEFAULT_PROFILE, n))
    status = Status(
        hermes_agent=hermes_ok,
        hermes_agent_version=sink.hermes_agent_version() if hermes_ok else None,
        hermes_agent_error=hermes_error,
        enabled=enabled,
        enabled_source=source,
        transcripts=transcripts,
        transcripts_source=transcripts_source,
        degraded=degraded,
        sessions_dir=str(directory),
        sessions_dir_present=directory.is_dir(),
        session_files=scan.files,
        bad_session_files=len(scan.bad),
        profiles=[_profile_status(name, per_profile.get(name, 0)) for name in names],
        in_process=in_process,
        stats=installer.stats() if in_process else None,
    )
    if not hermes_ok:
        status.problems.append(f"hermes-agent is not importable: {hermes_error}")
    if not enabled:
        status.problems.append(
            f"mirroring is switched off ({source}); set sync_to_insights or WEBUI_INSIGHTS_ENABLED=1"
        )
    for item in status.profiles:
        # A profile nobody chats in does not stop mirroring; the default profile does.
        if item.problem and (item.webui_sessions or item.name in (profile, DEFAULT_PROFILE)):
            status.problems.append(f"profile {item.name}: {item.problem}")
    return status
