"""Fault-injection scenarios: each attacks the mirror the way a real deployment does.

Every scenario runs a few chats through the demo host's real ``save()`` while a
fault is active, clears the fault, lets the layer recover, and reports:

- ``injected``: how many faults it injected;
- ``host errors``: exceptions that escaped the host's save, plus saves that
  stalled longer than ``STALL_S`` (a save must never wait on state.db);
- ``lost after recovery``: chats whose state.db row differs from the WebUI's
  totals after recovery.

Recovery is what a deployment gets for free: ``flush()``, then, for chats the
layer counted as dropped or skipped, their next save (the WebUI saves on every
turn; the save gate forgot the lost update, so an unchanged chat is queued
again). A loss that needs more than that shows up as a non-zero row.

Used by ``test_faults.py`` (pytest) and ``report.py`` (the table). Real faults
where the OS allows them; the seams in the brief (``sink.hermes_state``,
``StateDB.write``, ``SessionDB`` methods, ``Thread.start``) otherwise.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from webui_insights import installer, sink
from webui_insights.demo_host import TARGET, DemoSession
from webui_insights.reconcile import reconcile
from webui_insights.sink import create_state_db
from webui_insights.writer import WriterConfig

STALL_S = 0.5
CHATS = 5
LOCKHOLDER = Path(__file__).resolve().parent.parent / "lockholder.py"
# `report.py --full` holds the lock for the 30 s; pytest uses less.
LOCK_SECONDS = float(os.environ.get("WEBUI_INSIGHTS_RELIABILITY_LOCK_S", "3"))


@dataclass
class Outcome:
    scenario: str
    injected: int
    host_errors: int
    lost: int
    counted: str = ""
    internal_errors: int = 0

    @property
    def ok(self) -> bool:
        return self.injected > 0 and self.host_errors == 0 and self.lost == 0


@dataclass
class Lab:
    """A throw-away hermes home with the mirror installed on the demo host."""

    home: Path
    chats: list[DemoSession] = field(default_factory=list)
    injected: int = 0
    host_errors: int = 0

    @property
    def db(self) -> Path:
        return self.home / "state.db"

    @property
    def webui(self) -> Path:
        return self.home / "webui"

    def new_chats(self, n: int = CHATS) -> None:
        self.chats = [DemoSession(self.webui) for _ in range(n)]

    def save(self, chat: DemoSession) -> None:
        started = time.monotonic()
        try:
            chat.save()
        except Exception:
            self.host_errors += 1
            return
        if time.monotonic() - started > STALL_S:
            self.host_errors += 1

    def turn(self, tokens: int = 10) -> None:
        """One chat turn in every chat, saved twice as the WebUI does while streaming."""
        for i, chat in enumerate(self.chats):
            chat.add_turn("question", "answer", input_tokens=tokens + i, output_tokens=tokens // 2 + 1, cost=0.001)
            self.save(chat)
            self.save(chat)

    def resave(self) -> None:
        for chat in self.chats:
            self.save(chat)

    def lost(self) -> int:
        if not self.db.is_file():
            return len(self.chats)
        try:
            return sum(1 for chat in self.chats if not _row_matches(self.db, chat))
        except sqlite3.DatabaseError:
            return len(self.chats)

    def recover(self, timeout: float = 15.0) -> int:
        """flush; then the next save of every chat (a no-op for chats that landed); lost chats."""
        installer.flush(timeout)
        if self.lost():
            self.resave()
            installer.flush(timeout)
        return self.lost()


def _row_matches(db: Path, chat: DemoSession) -> bool:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM sessions WHERE id = ?", (chat.session_id,)).fetchone()
    finally:
        conn.close()
    if row is None:
        return False
    return (
        row["source"] == "webui"
        and row["input_tokens"] == chat.input_tokens
        and row["output_tokens"] == chat.output_tokens
        and row["cache_read_tokens"] == chat.cache_read_tokens
        and row["cache_write_tokens"] == chat.cache_write_tokens
        and row["message_count"] == len(chat.messages)
        and math.isclose(row["estimated_cost_usd"] or 0.0, chat.estimated_cost or 0.0, abs_tol=1e-9)
    )


FAST = WriterConfig(debounce_s=0.01, retry_base_s=0.01, retry_cap_s=0.05, fatal_recheck_s=0.2)

_ENV = ("HERMES_HOME", "HERMES_WEBUI_STATE_DIR", "WEBUI_INSIGHTS_ENABLED", "HERMES_WEBUI_SETTINGS_FILE")


@contextlib.contextmanager
def lab(*, create_db: bool = True, enabled: Any = True, settings_ttl: float = 1.0) -> Iterator[Lab]:
    saved = {name: os.environ.get(name) for name in _ENV}
    with tempfile.TemporaryDirectory(prefix="webui-insights-rel-") as tmp:
        home = Path(tmp) / "hermes"
        home.mkdir()
        os.environ["HERMES_HOME"] = str(home)
        os.environ["HERMES_WEBUI_STATE_DIR"] = str(home / "webui")
        os.environ.pop("WEBUI_INSIGHTS_ENABLED", None)
        os.environ.pop("HERMES_WEBUI_SETTINGS_FILE", None)
        if create_db:
            create_state_db(home / "state.db")
        installer._reset_for_tests()
        installer.install(target=TARGET, enabled=enabled, writer_config=FAST, settings_ttl=settings_ttl)
        try:
            yield Lab(home)
        finally:
            installer._reset_for_tests()
            sink.forget_hermes_state()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _counted() -> str:
    s = installer.stats()
    parts = [f"{k}={v}" for k, v in s["skipped"].items() if v and k not in ("unchanged",)]
    parts += [f"dropped.{k}={v}" for k, v in s["dropped"].items() if v]
    for name in ("retried", "failures"):
        if s[name]:
            parts.append(f"{name}={s[name]}")
    return ", ".join(parts)


def _finish(name: str, lb: Lab) -> Outcome:
    stats = installer.stats()
    lost = lb.recover()
    return Outcome(name, lb.injected, lb.host_errors, lost, _counted(), stats["internal_errors"])


def _replace_with(path: Path, data: bytes) -> None:
    """Swap ``path`` for a new file atomically; the live state.db is never opened as a file."""
    tmp = path.with_name(path.name + ".incoming")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _remove_db_files(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def _fresh_db_over(db: Path) -> None:
    """What an operator does to repair: a new, valid state.db moved into place."""
    fresh = db.with_name("restored.db")
    create_state_db(fresh)
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    os.replace(fresh, db)


# ------------------------------------------------------------------ scenarios


def hermes_state_not_importable() -> Outcome:
    with lab() as lb:
        original = sys.modules.get("hermes_state")
        sys.modules["hermes_state"] = None  # type: ignore[assignment]  # import now raises ImportError
        sink.forget_hermes_state()
        lb.injected = 1
        try:
            lb.new_chats()
            lb.turn()
            installer.flush(5)
        finally:
            sys.modules["hermes_state"] = original  # type: ignore[assignment]
            sink.forget_hermes_state()
        return _finish("hermes_state not importable", lb)


def sessiondb_raising() -> Outcome:
    with lab() as lb:
        cls = sink.hermes_state().SessionDB
        original = cls.__init__
        calls = {"n": 0}

        def failing(self: Any, *args: Any, **kwargs: Any) -> None:
            calls["n"] += 1
            raise sqlite3.OperationalError("unable to open database file")

        with mock.patch.object(cls, "__init__", failing):
            lb.new_chats()
            lb.turn()
            installer.flush(0.5)
        assert cls.__init__ is original
        lb.injected = calls["n"]
        return _finish("SessionDB() raising", lb)


def state_db_missing_then_created() -> Outcome:
    with lab(create_db=False) as lb:
        lb.injected = 1
        lb.new_chats()
        lb.turn()
        installer.flush(5)
        create_state_db(lb.db)
        return _finish("state.db missing, created later", lb)


def lock_held_by_another_process(seconds: float | None = None) -> Outcome:
    seconds = LOCK_SECONDS if seconds is None else seconds
    with lab() as lb:
        lb.new_chats()
        lb.turn()
        installer.flush(5)
        proc = subprocess.Popen(
            [sys.executable, str(LOCKHOLDER), str(lb.db), str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
            lb.injected = 1
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline - 0.2 and proc.poll() is None:
                lb.turn()
                time.sleep(min(0.5, seconds / 4))
            proc.wait(timeout=seconds + 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return _finish(f"another process holds the write lock {seconds:g} s", lb)


def garbage_replaces_state_db() -> Outcome:
    with lab() as lb:
        lb.new_chats()
        lb.turn()
        installer.flush(5)
        _replace_with(lb.db, b"this is not a database\0" * 256)
        lb.injected = 1
        lb.turn()
        installer.flush(1)
        _fresh_db_over(lb.db)
        return _finish("state.db replaced by garbage mid-run", lb)


def state_db_deleted_mid_run() -> Outcome:
    with lab() as lb:
        lb.new_chats()
        lb.turn()
        installer.flush(5)
        _remove_db_files(lb.db)
        lb.injected = 1
        lb.turn()
        installer.flush(5)
        create_state_db(lb.db)
        return _finish("state.db deleted mid-run", lb)


def _write_fails_with(message: str, times: int) -> Callable[..., Any]:
    original = sink.StateDB.write
    calls = {"n": 0}

    def write(self: Any, *args: Any, **kwargs: Any) -> Any:
        if calls["n"] < times:
            calls["n"] += 1
            raise sqlite3.OperationalError(message)
        return original(self, *args, **kwargs)

    write.calls = calls  # type: ignore[attr-defined]
    return write


def read_only(kind: str) -> Outcome:
    """chmod the file or directory read-only; as root chmod does not bind, so inject SQLite's error."""
    with lab() as lb:
        target = lb.db if kind == "file" else lb.home
        mode = target.stat().st_mode
        lb.new_chats()
        if os.geteuid() != 0:
            os.chmod(target, 0o444 if kind == "file" else 0o555)
            lb.injected = 1
            try:
                lb.turn()
                installer.flush(0.5)
            finally:
                os.chmod(target, mode)
            name = f"{kind} read-only (chmod)"
        else:
            write = _write_fails_with("attempt to write a readonly database", 5)
            with mock.patch.object(sink.StateDB, "write", write):
                lb.turn()
                installer.flush(2)
            lb.injected = write.calls["n"]  # type: ignore[attr-defined]
            name = f"{kind} read-only (injected: root ignores chmod)"
        return _finish(name, lb)


def disk_full() -> Outcome:
    with lab() as lb:
        write = _write_fails_with("database or disk is full", 5)
        lb.new_chats()
        with mock.patch.object(sink.StateDB, "write", write):
            lb.turn()
            installer.flush(2)
        lb.injected = write.calls["n"]  # type: ignore[attr-defined]
        return _finish("database or disk is full", lb)


def settings_file_flaps() -> Outcome:
    """settings.json: good, invalid JSON, "yes", 1, null, then good again; never an error."""
    with lab(enabled=None, settings_ttl=0.0) as lb:
        settings = lb.webui / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"sync_to_insights": True}))
        lb.new_chats()
        lb.turn()
        for bad in (
            '{"sync_to_insights": tr',
            '{"sync_to_insights": "yes"}',
            '{"sync_to_insights": 1}',
            '{"sync_to_insights": null}',
            "[1, 2]",
            "",
        ):
            settings.write_text(bad)
            lb.injected += 1
            lb.turn()
        settings.write_text(json.dumps({"sync_to_insights": True}))
        return _finish('settings invalid JSON / "yes" / 1 / null', lb)


def thread_cannot_start() -> Outcome:
    with lab() as lb:
        lb.new_chats()
        with mock.patch.object(
            threading.Thread, "start", side_effect=RuntimeError("can't create new thread at interpreter shutdown")
        ) as start:
            lb.turn()
        lb.injected = start.call_count
        return _finish("writer thread cannot start", lb)


def write_n_fails(forever: bool, sweep: int = 6) -> Outcome:
    """SQLite's own I/O-error method: the Nth write fails once (or from then on), for N = 1..sweep."""
    injected = host_errors = lost = internal = 0
    counted: list[str] = []
    for n in range(1, sweep + 1):
        with lab() as lb:
            original = sink.StateDB.write
            calls = {"n": 0, "failed": 0}

            def write(
                self: Any,
                *args: Any,
                _n: int = n,
                _calls: dict[str, int] = calls,
                _original: Any = original,
                **kwargs: Any,
            ) -> Any:
                _calls["n"] += 1
                if _calls["n"] == _n or (forever and _calls["n"] > _n):
                    _calls["failed"] += 1
                    raise sqlite3.OperationalError("disk I/O error")
                return _original(self, *args, **kwargs)

            lb.new_chats()
            with mock.patch.object(sink.StateDB, "write", write):
                for _ in range(3):
                    lb.turn()
                    installer.flush(0.3 if forever else 5)
            out = _finish("", lb)
            injected += calls["failed"]
            host_errors += out.host_errors
            lost += out.lost
            internal += out.internal_errors
            if out.lost:
                counted.append(f"N={n}: {out.counted}")
    name = f"write N fails {'forever' if forever else 'once'} (N=1..{sweep})"
    return Outcome(name, injected, host_errors, lost, "; ".join(counted) or "retried", internal)


_KILLED_CHILD = """
import os, signal
import hermes_state  # the WebUI runs the agent in-process
import webui_insights
from webui_insights.demo_host import TARGET, DemoSession
from webui_insights.writer import WriterConfig

webui_insights.install(target=TARGET, enabled=True, writer_config=WriterConfig(debounce_s=30.0))
for n in range({chats}):
    chat = DemoSession(os.environ["HERMES_WEBUI_STATE_DIR"], session_id=f"{{n + 0xdead00:012x}}")
    chat.add_turn("question", "answer", input_tokens=10 + n, output_tokens=6, cost=0.001)
    chat.save()  # written to its file; the mirror is still pending (30 s debounce)
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_then_reconciled() -> Outcome:
    """A WebUI process killed with pending work; the reconcile sweep's pass repairs it."""
    with lab() as lb:
        env = {**os.environ}
        done = subprocess.run(
            [sys.executable, "-c", _KILLED_CHILD.format(chats=CHATS)], env=env, capture_output=True, timeout=60
        )
        lb.injected = int(done.returncode == -signal.SIGKILL)
        lb.chats = []
        for n in range(CHATS):  # the same chats, as the parent sees them in their files
            chat = DemoSession(lb.webui, session_id=f"{n + 0xDEAD00:012x}")
            chat.add_turn("question", "answer", input_tokens=10 + n, output_tokens=6, cost=0.001)
            lb.chats.append(chat)
        before = lb.lost()
        result = reconcile(lb.webui / "sessions")
        outcome = Outcome(
            "process killed (SIGKILL) with pending work, then reconcile",
            lb.injected,
            lb.host_errors,
            lb.lost(),
            f"lost before reconcile={before}, reconciled={result.written}",
        )
        return outcome


SCENARIOS: dict[str, Callable[[], Outcome]] = {
    "hermes_state_not_importable": hermes_state_not_importable,
    "sessiondb_raising": sessiondb_raising,
    "state_db_missing_then_created": state_db_missing_then_created,
    "lock_held_by_another_process": lock_held_by_another_process,
    "garbage_replaces_state_db": garbage_replaces_state_db,
    "state_db_deleted_mid_run": state_db_deleted_mid_run,
    "file_read_only": lambda: read_only("file"),
    "directory_read_only": lambda: read_only("directory"),
    "disk_full": disk_full,
    "settings_file_flaps": settings_file_flaps,
    "thread_cannot_start": thread_cannot_start,
    "write_n_fails_once": lambda: write_n_fails(False),
    "write_n_fails_forever": lambda: write_n_fails(True),
    "killed_then_reconciled": killed_then_reconciled,
}
