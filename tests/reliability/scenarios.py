"""Fault-injection scenarios: each attacks the mirror the way a real deployment does, in its own interpreter.

Every scenario runs chats through the demo host's real ``save()`` while a
fault is active, clears the fault, lets the layer recover, and reports:

- ``injected``: how many faults it injected;
- ``host errors``: exceptions that escaped the host's save, plus saves that
  stalled longer than ``STALL_S`` (a save must never wait on state.db);
- ``lost after recovery``: chats whose state.db row differs from the WebUI's
  state after recovery;
- ``broken``: a rule of the scenario that did not hold (recovery later than
  one back-off step after the fault cleared, more than one sweeping worker).

Recovery is what a deployment gets for free. For faults of the database
(locked, malformed, ``OSError``, ``SessionDB()`` failing, disk full, replaced
by garbage) it is ``flush()`` alone: the writer keeps the work and tries
again. For updates the layer counted as dropped or skipped (no hermes-agent,
no state.db, no thread) it is the chat's next save (the save gate forgot the
lost update) or the reconcile sweep. A loss that needs more shows up as a
non-zero row.

``python scenarios.py NAME`` runs one scenario in this interpreter and prints
its outcome as JSON on the last line; ``run_isolated(NAME)`` does that in a
fresh interpreter (what ``report.py`` and ``test_faults.py`` call): a
scenario's patches, threads and forks never leak into the next.
Real faults where the OS allows them (a second process holding the lock,
bytes rewritten in place by another process, a file swapped, SIGKILL, fork);
the seams otherwise (``hermes_state.SessionDB`` methods, ``Thread.start``,
``sys.modules``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for support (run as a script too)

from support.forks import INTERNAL_LOCK_NAMES, in_forked_child, internal_locks  # noqa: E402
from support.lockholder import LockHolder  # noqa: E402

from webui_insights import forksafe  # noqa: E402
from webui_insights import sweep as sweep_module  # noqa: E402
from webui_insights.commands.reconcile import reconcile_pass  # noqa: E402
from webui_insights.demo_host import TARGET, DemoSession  # noqa: E402
from webui_insights.engine.hermes import forget_hermes_state, hermes_state  # noqa: E402
from webui_insights.engine.store import create_state_db  # noqa: E402
from webui_insights.hook import installer  # noqa: E402
from webui_insights.writer import WriterConfig  # noqa: E402

STALL_S = 0.5
CHATS = 5
# `report.py --full` holds the lock for the 30 s; pytest uses less.
LOCK_SECONDS = float(os.environ.get("WEBUI_INSIGHTS_RELIABILITY_LOCK_S", "3"))
# Slack on "recovered within one back-off step": the debounce, one transaction, a busy CI machine.
RECOVERY_SLACK_S = 2.0


@dataclass
class Outcome:
    scenario: str
    injected: int
    host_errors: int
    lost: int
    counted: str = ""
    internal_errors: int = 0
    broken: str = ""

    @property
    def ok(self) -> bool:
        return self.injected > 0 and self.host_errors == 0 and self.lost == 0 and not self.broken


FAST = WriterConfig(
    debounce_s=0.01, busy_retry_s=0.01, busy_retry_cap_s=0.05, error_backoff_s=0.1, error_backoff_cap_s=0.4
)
_ENV = ("HERMES_HOME", "HERMES_WEBUI_STATE_DIR", "WEBUI_INSIGHTS_ENABLED", "HERMES_WEBUI_SETTINGS_FILE")


@dataclass
class Lab:
    """A throw-away hermes home with the mirror installed on the demo host."""

    home: Path
    chats: list[DemoSession] = field(default_factory=list)
    injected: int = 0
    host_errors: int = 0
    notes: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.home / "state.db"

    @property
    def webui(self) -> Path:
        return self.home / "webui"

    def new_chats(self, n: int = CHATS, cls: type[DemoSession] = DemoSession) -> None:
        self.chats = [cls(self.webui) for _ in range(n)]

    def save(self, chat: DemoSession, **kwargs: Any) -> None:
        started = time.monotonic()
        try:
            chat.save(**kwargs)
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
            return sum(1 for chat in self.chats if not row_matches(self.db, chat))
        except sqlite3.DatabaseError:
            return len(self.chats)

    def recover(self, timeout: float = 15.0, resave: bool = True) -> int:
        """flush; then (``resave``) the next save of every chat (a no-op for chats that landed); lost chats."""
        installer.flush(timeout)
        if resave and self.lost():
            self.resave()
            installer.flush(timeout)
        return self.lost()

    def health(self) -> dict[str, Any]:
        writer = installer._state.writer
        entries = [h for h in (writer.health() if writer else []) if h["state_db"] == str(self.db)]
        return entries[0] if entries else {}

    def retry_at(self) -> float:
        """Monotonic time of the writer's next try on this state.db (now if none is scheduled)."""
        writer = installer._state.writer
        database = writer.pool.databases.get(self.db) if writer is not None else None
        return max(time.monotonic(), database.retry_at if database is not None else 0.0)

    def recover_within_one_step(self, clear: Callable[[], None], timeout: float = 90.0) -> int:
        """Clear the fault; the work must land by the writer's next try (no new save); lost chats."""
        due = self.retry_at()
        step = due - time.monotonic()
        cleared = time.monotonic()
        clear()
        flushed = installer.flush(timeout)
        landed = time.monotonic()
        self.notes.append(f"landed {landed - cleared:.1f} s after the fault cleared (next try was due in {step:.1f} s)")
        if not flushed or landed > due + RECOVERY_SLACK_S:
            self.broken.append(f"not recovered within one back-off step ({landed - cleared:.1f} s > {step:.1f} s)")
        return self.recover(resave=False)


def row_matches(db: Path, chat: DemoSession) -> bool:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM sessions WHERE id = ?", (chat.session_id,)).fetchone()
    finally:
        conn.close()
    if row is None:
        return False
    title = chat.title if chat.title not in ("Untitled", "New Chat") else None
    return (
        row["source"] == "webui"
        and row["input_tokens"] == chat.input_tokens - chat.cache_read_tokens - chat.cache_write_tokens
        and row["output_tokens"] == chat.output_tokens
        and row["message_count"] == len(chat.messages)
        and math.isclose(row["estimated_cost_usd"] or 0.0, chat.estimated_cost or 0.0, abs_tol=1e-9)
        and (title is None or row["title"] == title)
    )


@contextlib.contextmanager
def lab(
    *, create_db: bool = True, enabled: Any = True, settings_ttl: float = 1.0, config: WriterConfig = FAST, **kw: Any
) -> Iterator[Lab]:
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
        kw.setdefault("target", TARGET)
        installer.install(enabled=enabled, writer_config=config, settings_ttl=settings_ttl, **kw)
        try:
            yield Lab(home)
        finally:
            installer._reset_for_tests()
            forget_hermes_state()
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


def _finish(name: str, lb: Lab, lost: int | None = None, resave: bool = True) -> Outcome:
    lost = lb.recover(resave=resave) if lost is None else lost
    counted = "; ".join(filter(None, [_counted(), *lb.notes]))
    return Outcome(
        name, lb.injected, lb.host_errors, lost, counted, installer.stats()["internal_errors"], "; ".join(lb.broken)
    )


def _replace_with(path: Path, data: bytes) -> None:
    """Swap ``path`` for a new file atomically; the live state.db is never opened as a file here."""
    tmp = path.with_name(path.name + ".incoming")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _rewrite_in_place(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes of ``path`` (same inode) from another process: closing a descriptor on
    state.db in this one would drop the SQLite locks this process's connections hold."""
    code = "import sys; f = open(sys.argv[1], 'r+b'); f.seek(int(sys.argv[2])); f.write(bytes.fromhex(sys.argv[3]))"
    subprocess.run([sys.executable, "-c", code, str(path), str(offset), data.hex()], check=True, timeout=30)


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


class _Fault:
    """A seam that raises while ``active``; counts what it injected."""

    def __init__(self, exc: Callable[[], BaseException], times: int | None = None) -> None:
        self.exc = exc
        self.times = times
        self.active = True
        self.injected = 0

    def clear(self) -> None:
        self.active = False

    def hit(self) -> None:
        if self.active and (self.times is None or self.injected < self.times):
            self.injected += 1
            raise self.exc()


@contextlib.contextmanager
def _sessiondb_fault(method: str, fault: _Fault) -> Iterator[_Fault]:
    cls = hermes_state().SessionDB
    original = getattr(cls, method)

    def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
        fault.hit()
        return original(self, *args, **kwargs)

    def patched_write(self: Any, fn: Any) -> Any:  # the signature the engine checks for
        fault.hit()
        return original(self, fn)

    with mock.patch.object(cls, method, patched_write if method == "_execute_write" else patched):
        yield fault


def _close_handles() -> None:
    """The next write opens a new handle (a fault of SessionDB() shows on open)."""
    writer = installer._state.writer
    if writer is not None:
        writer.pool.close_all()


# ------------------------------------------------------------- the database


def hermes_state_not_importable() -> Outcome:
    with lab() as lb:
        original = sys.modules.get("hermes_state")
        sys.modules["hermes_state"] = None  # type: ignore[assignment]  # import now raises ImportError
        forget_hermes_state()
        lb.injected = 1
        try:
            lb.new_chats()
            lb.turn()
            installer.flush(5)
        finally:
            sys.modules["hermes_state"] = original  # type: ignore[assignment]
            forget_hermes_state()
        return _finish("hermes_state not importable", lb)


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
        holder = LockHolder(lb.db, seconds)
        try:
            lb.injected = 1
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline - 0.2 and holder.holding:
                lb.turn()
                time.sleep(min(0.5, seconds / 4))
            holder.proc.wait(timeout=seconds + 30)
        finally:
            holder.release()
        return _finish(f"another process holds the write lock {seconds:g} s", lb, resave=False)


def malformed_repaired_in_place() -> Outcome:
    # A handle per cycle: an open handle of a WAL database does not re-read the file header.
    with lab(config=WriterConfig(**{**asdict_config(FAST), "idle_close_s": 0.0})) as lb:
        lb.new_chats()
        lb.turn()
        installer.flush(5)
        inode = os.stat(lb.db).st_ino
        _rewrite_in_place(lb.db, 0, b"not a database!!")  # the 16-byte "SQLite format 3" header
        lb.injected = 1
        lb.turn()
        installer.flush(1)
        error = lb.health().get("last_error") or ""
        lb.notes.append(error)
        if "DatabaseError" not in error:
            lb.broken.append("the fault did not show")
        lost = lb.recover_within_one_step(lambda: _rewrite_in_place(lb.db, 0, b"SQLite format 3\x00"))
        if os.stat(lb.db).st_ino != inode:
            lb.broken.append("the inode changed")
        return _finish("state.db malformed, repaired in place (same inode)", lb, lost)


def asdict_config(config: WriterConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in WriterConfig.__dataclass_fields__}


def sessiondb_runtime_error_5s() -> Outcome:
    # The default back-off (1 s doubling): tries at about 0, 1, 3, 7 s; the fault clears at 5 s.
    with lab(config=WriterConfig(debounce_s=0.01)) as lb:
        lb.new_chats()
        lb.turn()
        installer.flush(5)
        _close_handles()
        fault = _Fault(lambda: RuntimeError("SessionDB: schema migration in progress"))
        with _sessiondb_fault("__init__", fault):
            cleared_at = time.monotonic() + 5.0
            while time.monotonic() < cleared_at:
                lb.turn()
                time.sleep(0.5)
            lb.notes.append(lb.health().get("last_error") or "no error recorded")
            lost = lb.recover_within_one_step(lambda: setattr(fault, "active", False), timeout=120)
        lb.injected = fault.injected
        return _finish("SessionDB() raising RuntimeError for 5 s", lb, lost)


def oserror_on_open() -> Outcome:
    with lab() as lb:
        lb.new_chats()
        lb.turn()
        installer.flush(5)
        _close_handles()
        fault = _Fault(lambda: OSError(errno.EIO, "Input/output error"))
        with _sessiondb_fault("__init__", fault):
            for _ in range(3):
                lb.turn()
                time.sleep(0.3)
            lb.notes.append(lb.health().get("last_error") or "no error recorded")
            lost = lb.recover_within_one_step(lambda: setattr(fault, "active", False))
        lb.injected = fault.injected
        return _finish("OSError opening state.db", lb, lost)


def sessiondb_raising_operational() -> Outcome:
    with lab() as lb:
        _close_handles()
        fault = _Fault(lambda: sqlite3.OperationalError("unable to open database file"))
        with _sessiondb_fault("__init__", fault):
            lb.new_chats()
            lb.turn()
            installer.flush(0.5)
            lost = lb.recover_within_one_step(lambda: setattr(fault, "active", False))
        lb.injected = fault.injected
        return _finish("SessionDB() raising OperationalError", lb, lost)


def garbage_replaces_state_db() -> Outcome:
    with lab() as lb:
        lb.new_chats()
        lb.turn()
        installer.flush(5)
        _replace_with(lb.db, b"this is not a database\0" * 256)
        lb.injected = 1
        lb.turn()
        installer.flush(1)
        lost = lb.recover_within_one_step(lambda: _fresh_db_over(lb.db))
        return _finish("state.db replaced by garbage mid-run (new inode)", lb, lost)


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


def _write_fails(message: str, times: int | None, label: str) -> Outcome:
    with lab() as lb:
        lb.new_chats()
        fault = _Fault(lambda: sqlite3.OperationalError(message), times)
        with _sessiondb_fault("_execute_write", fault):
            for _ in range(3):
                lb.turn()
                time.sleep(0.2)
            lb.notes.append(lb.health().get("last_error") or "no error recorded")
            lost = lb.recover_within_one_step(lambda: setattr(fault, "active", False))
        lb.injected = fault.injected
        return _finish(label, lb, lost)


def disk_full() -> Outcome:
    return _write_fails("database or disk is full", None, "database or disk is full")


def read_only(kind: str) -> Outcome:
    """chmod the file or directory read-only; as root chmod does not bind, so inject SQLite's error."""
    if os.geteuid() == 0:
        return _write_fails(
            "attempt to write a readonly database", None, f"{kind} read-only (injected: root ignores chmod)"
        )
    with lab() as lb:
        target = lb.db if kind == "file" else lb.home
        mode = target.stat().st_mode
        lb.new_chats()
        _close_handles()
        os.chmod(target, 0o444 if kind == "file" else 0o555)
        lb.injected = 1
        try:
            lb.turn()
            installer.flush(0.5)
        finally:
            lost = lb.recover_within_one_step(lambda: os.chmod(target, mode))
        return _finish(f"{kind} read-only (chmod)", lb, lost)


def write_n_fails(forever: bool, sweep: int = 6) -> Outcome:
    """SQLite's I/O error: the Nth write fails once (or from then on, until cleared), for N = 1..sweep."""
    injected = host_errors = lost = internal = 0
    broken: list[str] = []
    for n in range(1, sweep + 1):
        with lab() as lb:
            calls = {"n": 0}
            fault = _Fault(lambda: sqlite3.OperationalError("disk I/O error"))

            def hit(_n: int = n, _calls: dict[str, int] = calls, _fault: _Fault = fault) -> None:
                _calls["n"] += 1
                if _calls["n"] == _n or (forever and _calls["n"] > _n):
                    _fault.hit()

            class Seam:
                def hit(self) -> None:
                    hit()

            lb.new_chats()
            with _sessiondb_fault("_execute_write", Seam()):  # type: ignore[arg-type]
                for _ in range(3):
                    lb.turn()
                    installer.flush(0.3 if forever else 5)
                out_lost = lb.recover_within_one_step(fault.clear)
            out = _finish("", lb, out_lost)
            injected += fault.injected
            host_errors += out.host_errors
            lost += out.lost
            internal += out.internal_errors
            if out.broken:
                broken.append(f"N={n}: {out.broken}")
    name = f"write N fails {'until cleared' if forever else 'once'} (N=1..{sweep})"
    return Outcome(name, injected, host_errors, lost, "kept pending, retried", internal, "; ".join(broken))


# ------------------------------------------------------------- the process


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


def killed_then_swept() -> Outcome:
    """A WebUI process killed (SIGKILL) with pending work; the next process's sweep repairs it."""
    with lab() as lb:
        done = subprocess.run(
            [sys.executable, "-c", _KILLED_CHILD.format(chats=CHATS)],
            env={**os.environ},
            capture_output=True,
            timeout=60,
        )
        lb.injected = int(done.returncode == -signal.SIGKILL)
        for n in range(CHATS):  # the same chats, as the next process sees them in their files
            chat = DemoSession(lb.webui, session_id=f"{n + 0xDEAD00:012x}")
            chat.add_turn("question", "answer", input_tokens=10 + n, output_tokens=6, cost=0.001)
            lb.chats.append(chat)
        before = lb.lost()
        sweep = installer._state.sweep
        result = sweep.run_once() if sweep is not None else None
        lb.notes.append(f"lost before the sweep={before}, repaired={result.repaired if result else 'no sweep'}")
        return _finish("process killed (SIGKILL) with pending work, then the sweep", lb, lb.lost())


def fork_while_each_lock_is_held() -> Outcome:
    """A pre-fork server forks while another thread holds one of our locks; the child's save must return
    within 1 s and be mirrored, for every lock; the parent goes on working."""
    forksafe.FORK_WAIT_S = 0.5
    with lab(enabled=None, settings_ttl=0.0) as lb:
        os.environ["WEBUI_INSIGHTS_ENABLED"] = "1"  # the env switch, re-read on every save (its lock is taken)
        lb.new_chats(1)
        lb.turn()
        installer.flush(5)
        for name in INTERNAL_LOCK_NAMES:
            chat = DemoSession(lb.webui)
            lock = internal_locks(chat)[name]
            held, release = threading.Event(), threading.Event()

            def hold(lock: Any = lock, held: threading.Event = held, release: threading.Event = release) -> None:
                with lock:
                    held.set()
                    release.wait(60)

            holder = threading.Thread(target=hold, daemon=True)
            holder.start()
            held.wait(5)

            def child(chat: DemoSession = chat) -> dict[str, Any]:
                installer.install(target=TARGET, enabled=None, settings_ttl=0.0)  # a worker's app start
                chat.add_turn("question", "answer", input_tokens=7, output_tokens=2, cost=0.001)
                saver = threading.Thread(target=chat.save, daemon=True)
                saver.start()
                saver.join(1.0)
                return {"returned": not saver.is_alive(), "flushed": installer.flush(10)}

            lb.injected += 1
            try:
                result = in_forked_child(child, timeout=30)
            except AssertionError as exc:
                result = {"returned": False, "flushed": False}
                lb.notes.append(f"{name}: {str(exc).splitlines()[0]}")
            finally:
                release.set()
                holder.join(5)
            if not result["returned"]:
                lb.host_errors += 1
                lb.notes.append(f"{name}: the child's save hung")
            chat.add_turn("question", "answer", input_tokens=7, output_tokens=2, cost=0.001)  # as the child did
            if not row_matches(lb.db, chat):
                lb.notes.append(f"{name}: the child's chat was not mirrored")
            lb.chats.append(chat)
        lb.turn()  # the parent is unaffected
        lost = sum(1 for c in lb.chats if not row_matches(lb.db, c)) if installer.flush(10) else len(lb.chats)
        lb.notes.insert(0, f"{len(INTERNAL_LOCK_NAMES)} locks: {', '.join(INTERNAL_LOCK_NAMES)}")
        return _finish("fork while each internal lock is held (child saves, parent goes on)", lb, lost)


def fork_while_writing(forks: int = 60) -> Outcome:
    """Forks while the writer is inside SQLite (a busy WebUI under a pre-fork server that recycles
    workers): SQLite's own mutexes are not fork-safe, so a fork waits for our threads to leave it."""
    with lab(config=WriterConfig(debounce_s=0.0)) as lb:
        lb.new_chats(20)
        stop = threading.Event()

        def busy_host() -> None:
            while not stop.is_set():
                lb.turn(1)

        host = threading.Thread(target=busy_host, daemon=True)
        host.start()
        children: list[DemoSession] = []
        try:
            for _ in range(forks):
                chat = DemoSession(lb.webui)

                def child(chat: DemoSession = chat) -> dict[str, Any]:
                    chat.add_turn("question", "answer", input_tokens=9, output_tokens=3, cost=0.001)
                    started = time.monotonic()
                    chat.save()
                    return {"stalled": time.monotonic() - started > STALL_S, "flushed": installer.flush(10)}

                lb.injected += 1
                try:
                    result = in_forked_child(child, timeout=20)
                except AssertionError as exc:
                    result = {"stalled": True, "flushed": False}
                    lb.notes.append(str(exc).splitlines()[0])
                lb.host_errors += bool(result["stalled"])
                chat.add_turn("question", "answer", input_tokens=9, output_tokens=3, cost=0.001)
                children.append(chat)
                time.sleep(0.01)
        finally:
            stop.set()
            host.join(10)
        lost = lb.recover(resave=False)
        lost += sum(1 for chat in children if not row_matches(lb.db, chat))
        return _finish(f"{forks} forks while the writer is writing", lb, lost)


_OLDER_STATE_WRITER = """
import json, sys
from pathlib import Path
from webui_insights.diagnostics import RateLimitedLog, Stats
from webui_insights.snapshot import UsageSnapshot
from webui_insights.writer import Writer, WriterConfig

db, chats = Path(sys.argv[1]), json.loads(sys.argv[2])
writer = Writer(Stats(), RateLimitedLog(), WriterConfig(debounce_s=0.01), locate=lambda profile: db)
for sid, updated_at in chats:
    writer.submit(UsageSnapshot(sid, title="An older title", input_tokens=1, message_count=1,
                                updated_at=updated_at - 60, last_active_at=updated_at - 60))
print(writer.flush(10), writer._stats.as_dict()["chats"]["stale"])
"""


def reinstall_with_pending_work() -> Outcome:
    """install() again (new writer_config) while updates wait behind a lock: the newer state wins,
    in this process (one writer, one order) and against another process with an older state."""
    with lab() as lb:
        lb.new_chats()
        lb.turn()
        installer.flush(5)
        holder = LockHolder(lb.db, 60)
        try:
            for round_ in range(3):
                for chat in lb.chats:
                    chat.title = f"pending {round_} {chat.session_id}"
                lb.turn()  # pending behind the lock
                installer.uninstall()
                config = WriterConfig(**{**asdict_config(FAST), "debounce_s": 0.01 * (round_ + 1)})
                installer.install(target=TARGET, enabled=True, writer_config=config)
                lb.injected += 1
            for chat in lb.chats:
                chat.title = f"newest {chat.session_id}"
            lb.turn()
        finally:
            holder.release()
        lb.recover(resave=False)
        older = subprocess.run(
            [
                sys.executable,
                "-c",
                _OLDER_STATE_WRITER,
                str(lb.db),
                json.dumps([(c.session_id, c.updated_at) for c in lb.chats]),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        lb.injected += 1
        lb.notes.append(f"another process's older states refused as stale: {older.stdout.split()[-1:]}")
        if older.returncode != 0:
            lb.broken.append(f"the other process failed: {older.stderr.strip().splitlines()[-1:]}")
        return _finish("re-install with pending work (and an older state from another process)", lb, lb.lost())


class LockedSession(DemoSession):
    """A host whose save may run in many threads at once (its own lock around the file)."""

    file_lock = threading.Lock()

    def save(self, touch_updated_at: bool = True, skip_index: bool = False) -> None:
        with self.file_lock:
            super().save(touch_updated_at, skip_index)


def sixteen_threads_renaming_one_chat(rounds: int = 10) -> Outcome:
    with lab(target=f"{LockedSession.__module__}:LockedSession.save", config=WriterConfig(debounce_s=0.001)) as lb:
        for _ in range(rounds):
            chat = LockedSession(lb.webui)
            chat.add_turn("question", "answer", input_tokens=1, output_tokens=1)
            lb.save(chat)
            start = threading.Barrier(16)

            def rename_and_save(n: int, chat: LockedSession = chat, start: threading.Barrier = start) -> None:
                rng = random.Random(n)
                start.wait()
                for i in range(20):
                    chat.title = f"title {chat.session_id} {n}-{i}"
                    if rng.random() < 0.2:
                        time.sleep(0.0005)
                    lb.save(chat, touch_updated_at=rng.random() < 0.5)

            threads = [threading.Thread(target=rename_and_save, args=(n,)) for n in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            lb.injected += 16 * 20
            lb.chats.append(chat)
        return _finish("16 threads renaming and saving one chat (x10 chats)", lb, resave=False)


def _sweeping_workers(workers: int = 4, interval: float = 1.0, run_for: float = 4.5) -> Outcome:
    """A pre-fork server: the master preloads the app (install()), forks ``workers``; each saves chats."""
    passes_file = Path(tempfile.mkdtemp(prefix="webui-insights-passes-")) / "passes.log"
    real_pass = reconcile_pass

    def counting_pass(*args: Any, **kwargs: Any) -> Any:
        with open(passes_file, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
        return real_pass(*args, **kwargs)

    # Read by install() (this interpreter runs this scenario only).
    sweep_module.reconcile_pass = counting_pass  # type: ignore[attr-defined]
    sweep_module.DEFAULT_FIRST_DELAY_S = 0.2
    with lab(reconcile_interval=interval) as lb:

        def worker() -> dict[str, Any]:
            installer.install(target=TARGET, enabled=True, writer_config=FAST, reconcile_interval=interval)
            chats = [DemoSession(lb.webui) for _ in range(3)]
            errors = 0
            deadline = time.monotonic() + run_for
            while time.monotonic() < deadline:
                for chat in chats:
                    chat.add_turn("question", "answer", input_tokens=3, output_tokens=1, cost=0.001)
                    started = time.monotonic()
                    try:
                        chat.save()
                    except Exception:
                        errors += 1
                    if time.monotonic() - started > STALL_S:
                        errors += 1
                time.sleep(0.2)
            return {"errors": errors, "flushed": installer.flush(10), "chats": [c.session_id for c in chats]}

        results: list[dict[str, Any]] = []
        started = time.monotonic()
        threads = [threading.Thread(target=lambda: results.append(in_forked_child(worker, 60))) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        elapsed = time.monotonic() - started
        lb.injected = workers
        lb.host_errors = sum(r["errors"] for r in results) + (workers - len(results))
        sweepers = passes_file.read_text().split() if passes_file.exists() else []
        allowed = int(elapsed / interval) + 1
        lb.notes.append(f"{len(sweepers)} pass(es) by {len(set(sweepers))} worker(s) in {elapsed:.1f} s")
        if len(set(sweepers)) != 1 or len(sweepers) > allowed:
            lb.broken.append(f"{len(set(sweepers))} sweeping worker(s), {len(sweepers)} passes (at most {allowed})")
        # Each worker's chats, as the files say (the workers' objects died with them).
        from webui_insights.sources import read_session_file

        lost = 0
        for r in results:
            for sid in r["chats"]:
                snapshot = read_session_file(lb.webui / "sessions" / f"{sid}.json")
                chat = DemoSession(lb.webui, session_id=sid)
                chat.messages = [{}] * snapshot.message_count
                chat.input_tokens, chat.output_tokens = snapshot.input_tokens, snapshot.output_tokens
                chat.estimated_cost = snapshot.estimated_cost_usd
                chat.title = snapshot.title or "Untitled"
                lb.chats.append(chat)
                lost += not row_matches(lb.db, chat)
        return _finish(f"pre-fork server, {workers} workers: one sweep per interval", lb, lost)


SCENARIOS: dict[str, Callable[[], Outcome]] = {
    "hermes_state_not_importable": hermes_state_not_importable,
    "state_db_missing_then_created": state_db_missing_then_created,
    "lock_held_by_another_process": lock_held_by_another_process,
    "malformed_repaired_in_place": malformed_repaired_in_place,
    "sessiondb_runtime_error_5s": sessiondb_runtime_error_5s,
    "oserror_on_open": oserror_on_open,
    "sessiondb_raising_operational": sessiondb_raising_operational,
    "garbage_replaces_state_db": garbage_replaces_state_db,
    "state_db_deleted_mid_run": state_db_deleted_mid_run,
    "file_read_only": lambda: read_only("file"),
    "directory_read_only": lambda: read_only("directory"),
    "disk_full": disk_full,
    "write_n_fails_once": lambda: write_n_fails(False),
    "write_n_fails_until_cleared": lambda: write_n_fails(True),
    "settings_file_flaps": settings_file_flaps,
    "thread_cannot_start": thread_cannot_start,
    "killed_then_swept": killed_then_swept,
    "fork_while_each_lock_is_held": fork_while_each_lock_is_held,
    "reinstall_with_pending_work": reinstall_with_pending_work,
    "sixteen_threads_renaming_one_chat": sixteen_threads_renaming_one_chat,
    "prefork_server_one_sweep": _sweeping_workers,
    "fork_while_writing": fork_while_writing,
}

# Minutes rather than seconds: `make reliability` runs them; `make test` deselects them with -m "not slow".
SLOW = {
    "lock_held_by_another_process",
    "sessiondb_runtime_error_5s",
    "write_n_fails_until_cleared",
    "prefork_server_one_sweep",
    "fork_while_each_lock_is_held",
    "fork_while_writing",
}


def run_isolated(name: str, timeout: float = 300.0, env: dict[str, str] | None = None) -> Outcome:
    """``name`` in a fresh interpreter; a crash or a hang is a failed row, never a lost one."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), name],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired:
        return Outcome(name, 0, 1, 0, broken=f"hung for {time.monotonic() - started:.0f} s")
    last = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else []
    try:
        return Outcome(**json.loads(last[0]))
    except (IndexError, ValueError, TypeError):
        tail = textwrap.shorten(done.stderr.strip().replace("\n", " | ")[-600:], 600)
        return Outcome(name, 0, 1, 0, broken=f"exit {done.returncode}: {tail}")


def main(argv: list[str]) -> int:
    import logging

    # Our warnings are expected here (that is the fault); keep the output readable.
    logging.getLogger("webui_insights").setLevel(logging.CRITICAL)
    outcome = SCENARIOS[argv[0]]()
    print(json.dumps(asdict(outcome)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
