"""A real, messy hermes home, generated for tests: what users' homes look like after a year or two.

``make_messy_home(base)`` builds, under ``base``:

- ``hermes/`` — HERMES_HOME: the default profile's state.db, ``profiles/work``
  (a state.db), ``profiles/ghost`` (a profile folder hermes never ran in: no
  state.db), ``profiles/backup`` (a state.db that cannot be written: a WAL
  database whose ``-shm`` cannot be created, and, for non-root users, no
  write permission on the file or its folder), and chats stamped
  ``nohome`` (no profile folder at all);
- ``hermes/webui/sessions/`` — the WebUI's session files: good chats of every
  profile (stamped "default" and unstamped alike), a chat dated tomorrow,
  a blank chat, the WebUI's own non-chat files (``_index.json``, backups,
  temp files), and the trouble a real folder collects: a symbolic link
  loop, a two-link cycle, a dangling link, a link to a file outside the
  folder, a 0-byte file, a 50 MB file, a non-UTF-8 file, a truncated file,
  a directory and a FIFO named ``*.json``, values of the wrong type, a copy
  under another chat's name, a profile name that is not one.

Everything a test needs to check the outcome is in the returned
``MessyHome``: the environment for a subprocess, every chat id by profile,
and the skip reason expected for each bad file. ``premirror`` backfills
the read-only profile before it is made read-only, so it is up to date
(a backup taken after a backfill); ``big_file_mb`` sizes the oversized file.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui_insights.engine.store import create_state_db

__all__ = ["MessyHome", "make_messy_home", "write_chat", "child_pids", "DAY"]

DAY = 86_400.0
_READ_ONLY_FILE = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
_READ_ONLY_DIR = _READ_ONLY_FILE | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


@dataclass
class MessyHome:
    base: Path
    root: Path  # HERMES_HOME
    webui: Path  # HERMES_WEBUI_STATE_DIR
    sessions: Path
    chats: dict[str, list[str]] = field(default_factory=dict)  # profile ("default" for none) -> session ids
    tomorrow: str = ""
    blank: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)  # file name -> expected skip kind
    not_chats: list[str] = field(default_factory=list)  # the WebUI's own files, never counted
    read_only_db: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment a subprocess needs to see this home (mirroring switched on)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("HERMES_WEBUI_SETTINGS_FILE", "WEBUI_INSIGHTS_TRANSCRIPTS", "COLUMNS")
        }
        env.update(
            HERMES_HOME=str(self.root),
            HERMES_WEBUI_STATE_DIR=str(self.webui),
            WEBUI_INSIGHTS_ENABLED="1",
            PYTHONIOENCODING="utf-8",
        )
        return env

    @property
    def files(self) -> int:
        """Entries the sessions folder holds that are named like chats (every one is accounted for)."""
        return sum(len(ids) for ids in self.chats.values()) + 1 + len(self.blank) + len(self.bad)

    def state_db(self, profile: str) -> Path:
        return self.root / "state.db" if profile == "default" else self.root / "profiles" / profile / "state.db"

    def release(self) -> None:
        """Give write permission back, so the temporary folder can be removed."""
        if self.read_only_db is not None:
            os.chmod(self.read_only_db.parent, 0o755)
            for name in ("state.db", "state.db-wal"):
                path = self.read_only_db.parent / name
                if path.exists():
                    os.chmod(path, 0o644)


def write_chat(
    sessions: Path,
    session_id: str,
    *,
    profile: str | None = None,
    title: str = "Chat",
    created_at: float | None = None,
    updated_at: float | None = None,
    turns: int = 1,
    tokens: int = 100,
    model: str = "messy/model-1",
) -> dict[str, Any]:
    """One session file the way hermes-webui writes it (cumulative usage, cached tokens inside input)."""
    now = time.time()
    created = now - DAY if created_at is None else created_at
    updated = max(created, now) if updated_at is None else updated_at
    messages = []
    for turn in range(turns):
        stamp = created + 60 * (turn + 1) if created > now else min(updated, created + 60 * (turn + 1))
        messages.append({"role": "user", "content": f"question {turn}", "timestamp": stamp})
        messages.append({"role": "assistant", "content": f"answer {turn}", "timestamp": stamp})
    data = {
        "session_id": session_id,
        "title": title,
        "model": model,
        "model_provider": "messy",
        "profile": profile,
        "messages": messages,
        "created_at": created,
        "updated_at": updated,
        "input_tokens": tokens * turns,
        "output_tokens": tokens // 10 * turns,
        "cache_read_tokens": tokens // 4 * turns,
        "cache_write_tokens": 0,
        "estimated_cost": 0.001 * turns,
    }
    (sessions / f"{session_id}.json").write_text(json.dumps(data), encoding="utf-8")
    return data


def _make_unwritable(db: Path) -> None:
    """A WAL state.db with content in its -wal and a -shm that cannot be created (as on a read-only mount).

    The -wal gets content from a process that exits without checkpointing;
    the -shm becomes a link into a folder that does not exist, so SQLite can
    neither open nor create it. Permissions are also taken away (binding
    for everyone but root).
    """
    script = (
        "import os, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "conn.execute('PRAGMA wal_autocheckpoint=0')\n"
        "conn.execute(\"INSERT INTO sessions (id, source, started_at) VALUES ('cli-after-backup', 'cli', 1)\")\n"
        "conn.commit()\n"
        "os._exit(0)\n"  # no close: the WAL keeps its frames
    )
    subprocess.run([sys.executable, "-c", script, str(db)], check=True, timeout=60)
    shm = db.with_name(db.name + "-shm")
    if shm.exists() or shm.is_symlink():
        shm.unlink()
    shm.symlink_to(db.parent / "no-such-folder" / "state.db-shm")
    for name in ("state.db", "state.db-wal"):
        os.chmod(db.with_name(name), _READ_ONLY_FILE)
    os.chmod(db.parent, _READ_ONLY_DIR)


def make_messy_home(base: Path, *, big_file_mb: int = 50, premirror: bool = True) -> MessyHome:
    root = base / "hermes"
    webui = root / "webui"
    sessions = webui / "sessions"
    sessions.mkdir(parents=True)
    home = MessyHome(base, root, webui, sessions)
    now = time.time()

    create_state_db(root / "state.db")
    for name in ("work", "backup"):
        (root / "profiles" / name).mkdir(parents=True)
        create_state_db(root / "profiles" / name / "state.db")
    (root / "profiles" / "ghost").mkdir(parents=True)  # a profile hermes never ran in

    counter = iter(range(1, 10_000))

    def chat(profile: str | None, **kwargs: Any) -> str:
        session_id = f"{next(counter):012x}"
        write_chat(sessions, session_id, profile=profile, **kwargs)
        home.chats.setdefault(profile or "default", []).append(session_id)
        return session_id

    for i in range(4):
        chat(None, title=f"Unstamped {i}", created_at=now - (i + 1) * 7 * DAY, turns=i + 1)
    for i in range(3):
        chat("default", title=f"Stamped default {i}", created_at=now - (i + 2) * DAY)
    chat(None, title="Same title", created_at=now - 3 * DAY)
    chat(None, title="Same title", created_at=now - 2 * DAY)  # a title another chat holds
    for i in range(3):
        chat("work", title=f"Work {i}", created_at=now - (i + 1) * DAY)
    for i in range(2):
        chat("ghost", title=f"Ghost {i}")
    chat("nohome", title="No home")
    for i in range(2):
        chat("backup", title=f"Backup {i}", created_at=now - (i + 5) * DAY)

    # Dated tomorrow: a clock far ahead on the machine that saved it.
    home.tomorrow = f"{next(counter):012x}"
    write_chat(sessions, home.tomorrow, title="From tomorrow", created_at=now + DAY, updated_at=now + DAY + 60)

    # Opened and never used (the WebUI makes many): counted as blank.
    blank = f"{next(counter):012x}"
    (sessions / f"{blank}.json").write_text(
        json.dumps({"session_id": blank, "title": "Untitled", "messages": [], "created_at": now}), encoding="utf-8"
    )
    home.blank.append(blank)

    # The WebUI's own files: not chats, not counted.
    for name in ("_index.json", f"{home.chats['default'][0]}.json.bak", f"{blank}.json.tmp.4242"):
        (sessions / name).write_text("{not a chat", encoding="utf-8")
        home.not_chats.append(name)

    def bad(name: str, kind: str) -> Path:
        home.bad[name] = kind
        return sessions / name

    bad("loop.json", "link_loop").symlink_to("loop.json")
    bad("cycle-a.json", "link_loop").symlink_to("cycle-b.json")
    bad("cycle-b.json", "link_loop").symlink_to("cycle-a.json")
    bad("dangling.json", "dangling_link").symlink_to("deleted-long-ago.json")
    outside = base / "elsewhere"
    outside.mkdir()
    write_chat(outside, "0000000e1se0", title="Elsewhere")
    bad("0000000e1se0.json", "link_outside").symlink_to(outside / "0000000e1se0.json")
    bad("000000000e00.json", "empty").write_bytes(b"")
    big = bad("0000000b1600.json", "too_large")
    with open(big, "wb") as handle:
        handle.write(b'{"session_id": "0000000b1600", "messages": [{"role": "user", "content": "')
        block = b"x" * (1 << 20)
        for _ in range(big_file_mb):
            handle.write(block)
        handle.write(b'"}]}')
    bad("0000000a7100.json", "not_utf8").write_bytes(
        '{"session_id": "0000000a7100", "title": "caf\u00e9", "messages": []}'.encode("latin-1")
    )
    bad("00000000c0de.json", "not_json").write_text('{"session_id": "00000000c0de", "messages": [{"ro', "utf-8")
    bad("000000000d1e.json", "not_a_file").mkdir()
    os.mkfifo(bad("00000000f1f0.json", "not_a_file"))
    bad("0000000bad0e.json", "bad_value").write_text(
        json.dumps({"session_id": "0000000bad0e", "input_tokens": "12", "messages": []}), "utf-8"
    )
    copy = bad("0000000c0b1e.json", "bad_value")  # a copy of another chat under a new name
    copy.write_text((sessions / f"{home.chats['work'][0]}.json").read_text("utf-8"), "utf-8")
    bad("00000000e111.json", "invalid_profile").write_text(
        json.dumps({"session_id": "00000000e111", "profile": "../../etc", "title": "Escape", "messages": []}), "utf-8"
    )

    backup_db = root / "profiles" / "backup" / "state.db"
    if premirror:
        from webui_insights.commands.backfill import backfill
        from webui_insights.profiles import Homes
        from webui_insights.sources import scan_sessions

        scan = scan_sessions(sessions, profile="backup")
        report = backfill(scan, Homes(root))
        assert report.written == len(home.chats["backup"]), report.as_dict()
    _make_unwritable(backup_db)
    home.read_only_db = backup_db
    return home


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid`` (what ``ps --ppid PID`` lists), read from /proc; zombies excluded."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found
