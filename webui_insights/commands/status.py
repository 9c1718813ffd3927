"""``status``: would mirroring work here, is it keeping up, and why not where it does not.

Owns the checks a user runs when ``hermes insights`` does not show their
WebUI chats: hermes-agent importable (and which of its capabilities are
degraded), the switch and where its value came from, the WebUI sessions
folder, and per profile: its state.db (absent, not a hermes state.db,
read-only), its chats by what the engine would do (up to date, behind,
deleted in hermes, written by hermes-agent itself, mirrored, another
source's, title refused), and — inside a process that called
``install()`` — the writer's last error per state.db and its next try, and
how often the host's own bridge was silenced.

Never: create or write state.db (the engine plans on read-only
connections), or change a setting.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..engine.batch import DatabaseOutcome
from ..engine.hermes import Capabilities, HermesStateUnavailable, hermes_agent_version, hermes_state
from ..engine.store import StateDBUninitialised, check_initialised, open_read_only, writable
from ..hook.installer import current_state
from ..profiles import DEFAULT_PROFILE, Homes
from ..routing import check_all, state_db_of
from ..sources import Scan

__all__ = ["ProfileStatus", "Status", "collect_status"]


@dataclass(slots=True)
class ProfileStatus:
    name: str
    state_db: str | None
    # ok, missing, uninitialised, unreadable, refused (bad name), no_hermes_state
    state: str = "ok"
    problem: str | None = None
    read_only: bool = False
    webui_chats: int = 0
    up_to_date: int = 0
    behind: int = 0
    deleted_in_hermes: int = 0
    hermes_written: int = 0
    mirrored: int = 0
    foreign: int = 0
    titles_refused: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    writer: dict[str, Any] | None = None


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
    skipped_files: dict[str, int]
    profiles: list[ProfileStatus] = field(default_factory=list)
    in_process: bool = False
    stats: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["command"] = "status"
        data["ok"] = self.ok
        return data


def collect_status(scan: Scan, homes: Homes, *, profile: str | None = None) -> Status:
    """Everything ``webui-insights status`` prints; ``profile`` limits it to one profile."""
    status = _process_status(scan)
    per_profile = Counter(s.profile or DEFAULT_PROFILE for s in scan.snapshots)
    names = (
        [profile]
        if profile
        else sorted({*homes.profile_names(), *per_profile}, key=lambda n: (n != DEFAULT_PROFILE, n))
    )
    databases, _ = check_all(homes, scan.snapshots)
    by_path = {d.state_db: d for d in databases}
    health = {h["state_db"]: h for h in (status.stats or {}).get("databases", [])}
    for name in names:
        item = ProfileStatus(name, None, webui_chats=per_profile.get(name, 0))
        status.profiles.append(item)
        path = state_db_of(homes, None if name == DEFAULT_PROFILE else name)
        if isinstance(path, str):
            item.state, item.problem = "refused", path
            continue
        item.state_db = str(path)
        item.writer = health.get(str(path))
        _profile_state(item, path, by_path.get(str(path)))
    _problems(status, profile)
    return status


def _process_status(scan: Scan) -> Status:
    """hermes-agent, the switches, this process's mirroring, and the sessions folder."""
    try:
        hermes_state()
        degraded = list(Capabilities.of_installed().degraded)
        hermes_ok, hermes_error = True, None
    except HermesStateUnavailable as exc:
        hermes_ok, hermes_error, degraded = False, str(exc), []
    here = current_state()
    return Status(
        hermes_agent=hermes_ok,
        hermes_agent_version=hermes_agent_version() if hermes_ok else None,
        hermes_agent_error=hermes_error,
        enabled=here.enabled,
        enabled_source=here.enabled_source,
        transcripts=here.transcripts,
        transcripts_source=here.transcripts_source,
        degraded=degraded,
        sessions_dir=str(scan.directory),
        sessions_dir_present=scan.directory.is_dir(),
        session_files=scan.files,
        skipped_files=dict(scan.skipped),
        in_process=here.installed,
        stats=here.stats,
    )


def _profile_state(item: ProfileStatus, path: Path, database: DatabaseOutcome | None) -> None:
    """The profile's state.db and its chats by what the engine would do (``database``: their plans)."""
    if database is not None and not database.reachable:
        item.state, item.problem = database.status, database.problem
    elif database is None:
        item.state, item.problem = _probe(path)
    if item.state != "ok":
        return
    item.read_only = not writable(path)
    if database is None:
        return
    # Who writes each row, as the engine decides it from the row's evidence now
    # (not what an earlier pass recorded): deleted and not-yet-created rows are no one's.
    owners = Counter(p.owner for p in database.plans if p.row is not None)
    item.mirrored, item.hermes_written, item.foreign = owners["mirror"], owners["hermes"], owners["foreign"]
    outcomes = database.outcomes
    item.outcomes = dict(outcomes)
    item.behind = database.written
    item.up_to_date = outcomes["unchanged"] + outcomes["stale"]
    item.deleted_in_hermes = outcomes["deleted"]
    item.titles_refused = database.notes.get("title_refused", 0)
    item.notes = {k: v for k, v in database.notes.items() if k != "title_refused"}


def _probe(path: Path) -> tuple[str, str | None]:
    """A profile with no chats: is its state.db there and hermes'?"""
    try:
        conn = open_read_only(path)
    except FileNotFoundError:
        return "missing", f"no state.db at {path} (run hermes once there)"
    except sqlite3.Error as exc:
        return "unreadable", f"{type(exc).__name__}: {exc}"
    try:
        check_initialised(conn, path)
        return "ok", None
    except StateDBUninitialised as exc:
        return "uninitialised", str(exc)
    except sqlite3.Error as exc:
        return "unreadable", f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def _problems(status: Status, profile: str | None) -> None:
    """Every reason mirroring would not work, most fundamental first."""
    if not status.hermes_agent:
        status.problems.append(f"hermes-agent is not importable: {status.hermes_agent_error}")
    if not status.enabled:
        status.problems.append(
            f"mirroring is switched off ({status.enabled_source}); set sync_to_insights or WEBUI_INSIGHTS_ENABLED=1"
        )
    for item in status.profiles:
        # A profile without a state.db is reported, not a failure (hermes was never run there);
        # one that cannot be read, or a refused name with chats, is.
        if item.state in ("unreadable", "uninitialised", "no_hermes_state", "error") or (
            item.state == "refused" and item.webui_chats
        ):
            status.problems.append(f"profile {item.name}: {item.problem}")
        elif item.state == "ok" and item.read_only and item.webui_chats:
            status.problems.append(f"profile {item.name}: {item.state_db} is read-only; nothing can be mirrored there")
        if item.outcomes.get("refused"):
            status.problems.append(
                f"profile {item.name}: {item.outcomes['refused']} chats left alone: webui-insights' record of them "
                f"is damaged or from a newer release (see notes)"
            )
    if status.profiles and all(item.state == "missing" for item in status.profiles):
        # Not one profile was ever run: most likely the wrong HERMES_HOME.
        where = (
            f"profile {status.profiles[0].name} has no state.db at {status.profiles[0].state_db}"
            if profile
            else f"no profile has a state.db (looked for {status.profiles[0].state_db} and under profiles/)"
        )
        status.problems.append(f"{where}: run hermes once, or point HERMES_HOME at the right home")
