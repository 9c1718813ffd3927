"""The background writer: never blocks the save, coalesces, orders, recovers from faults, survives exit and fork."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.chats import make_session, save_turn
from support.checks import log_lines, wait_for
from support.db import read_row
from support.forks import INTERNAL_LOCK_NAMES, in_forked_child, internal_locks

import webui_insights
from webui_insights import forksafe
from webui_insights.demo_host import TARGET, DemoSession
from webui_insights.diagnostics import RateLimitedLog, Stats
from webui_insights.engine.hermes import HermesStateUnavailable
from webui_insights.engine.states import Ledger
from webui_insights.engine.store import (
    StateDBMissing,
    StateDBUninitialised,
    StateStore,
    Unwritable,
    create_state_db,
    unwritable,
)
from webui_insights.hook import installer
from webui_insights.snapshot import UsageSnapshot
from webui_insights.writer import THREAD_NAME, Writer, WriterConfig, combine
from webui_insights.writer.pool import Database

FAST: dict[str, Any] = {
    "debounce_s": 0.01,
    "busy_retry_s": 0.01,
    "busy_retry_cap_s": 0.05,
    "error_backoff_s": 0.1,
    "error_backoff_cap_s": 0.4,
}


@pytest.fixture
def writers() -> Iterator[Callable[..., Writer]]:
    """Writers built directly on a state.db (each one stands for a process); shut down after the test."""
    made: list[Writer] = []

    def make(db: Path, **config: Any) -> Writer:
        writer = Writer(Stats(), RateLimitedLog(), WriterConfig(**{**FAST, **config}), locate=lambda profile: db)
        made.append(writer)
        return writer

    yield make
    for writer in made:
        writer.shutdown(2)


def snap(session_id: str = "abcabcabcabc", updated_at: float = 1_700_000_000.0, **values: Any) -> UsageSnapshot:
    values.setdefault("message_count", 2)
    return UsageSnapshot(session_id=session_id, updated_at=updated_at, last_active_at=updated_at, **values)


class SessionDBFault:
    """``hermes_state.SessionDB()`` raising ``exc`` while set (the seam for faults the OS will not give us)."""

    def __init__(self) -> None:
        self.exc: BaseException | None = None
        self.calls = 0
        self.calls_after_clear = 0

    def clear(self) -> None:
        self.exc = None
        self.calls_after_clear = 0


@pytest.fixture
def sessiondb_fault(monkeypatch: pytest.MonkeyPatch) -> SessionDBFault:
    import hermes_state

    fault = SessionDBFault()
    original = hermes_state.SessionDB.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        fault.calls += 1
        if fault.exc is not None:
            raise fault.exc
        fault.calls_after_clear += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(hermes_state.SessionDB, "__init__", init)
    return fault


def health(db: Path) -> dict[str, Any]:
    entries: list[dict[str, Any]] = webui_insights.stats()["databases"]
    (entry,) = [h for h in entries if h["state_db"] == str(db)]
    return entry


# ------------------------------------------------------------- the save path


def test_save_returns_while_another_process_holds_the_lock_and_totals_land_after(
    mirror: Any, webui_dir: Path, hermes_home: Path, lock_holder: Any, log: pytest.LogCaptureFixture
) -> None:
    db = hermes_home / "state.db"
    holder = lock_holder(db)
    chats = [make_session(webui_dir) for _ in range(5)]
    for _ in range(4):
        for chat in chats:
            chat.add_turn("q", "a", input_tokens=10, output_tokens=1)
            chat.save()
    assert holder.holding  # every save above returned while the lock was held
    assert webui_insights.flush(0.2) is False
    # Busy: each attempt spends SQLite's own 1 s busy wait, then a short retry.
    assert wait_for(lambda: webui_insights.stats()["retried"] >= 2, timeout=20)
    stats = webui_insights.stats()
    assert stats["pending"] == 5 and stats["failures"] >= 2
    state = health(db)
    assert "OperationalError: database is locked" in state["last_error"]
    assert state["failures"] >= 2 and state["next_try_at"] is not None and state["last_error_at"] is not None
    assert log_lines(log, "is busy", "OperationalError: database is locked", "kept pending")
    assert all(read_row(db, c.session_id) is None for c in chats)
    holder.release()
    assert webui_insights.flush(10)
    for chat in chats:
        assert read_row(db, chat.session_id)["input_tokens"] == 40  # type: ignore[index]
    state = health(db)
    assert (state["failures"], state["next_try_at"]) == (0, None)
    assert state["last_error"] is not None  # the last error stays visible, with when it happened


def test_a_burst_of_saves_of_one_chat_is_one_write(hermes_home: Path, webui_dir: Path) -> None:
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(debounce_s=0.5))
    chat = make_session(webui_dir)
    for _ in range(50):
        chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
        chat.save()
    assert webui_insights.flush(10)
    stats = webui_insights.stats()
    assert stats["snapshots_queued"] == 50
    assert stats["coalesced"] >= 45
    assert stats["rows_written"] <= 5
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 50  # type: ignore[index]


def test_an_older_snapshot_never_overwrites_a_newer_one(hermes_home: Path, writers: Any) -> None:
    writer = writers(hermes_home / "state.db")
    writer.submit(snap(input_tokens=500, updated_at=1_700_000_020.0))
    writer.submit(snap(input_tokens=100, updated_at=1_700_000_010.0))  # queued after, read before: must lose
    assert writer.flush(5)
    assert read_row(hermes_home / "state.db", "abcabcabcabc")["input_tokens"] == 500  # type: ignore[index]
    writer.submit(snap(input_tokens=50, updated_at=1_700_000_015.0))
    assert writer.flush(5)
    assert read_row(hermes_home / "state.db", "abcabcabcabc")["input_tokens"] == 500  # type: ignore[index]
    assert writer._stats.as_dict()["chats"]["stale"] == 1


def test_equal_versions_are_ordered_by_capture_time(hermes_home: Path, writers: Any) -> None:
    writer = writers(hermes_home / "state.db")
    writer.submit(snap(title="Later", observed=2.0))
    assert writer.flush(5)
    writer.submit(snap(title="Earlier", observed=1.0))
    assert writer.flush(5)
    assert read_row(hermes_home / "state.db", "abcabcabcabc")["title"] == "Later"  # type: ignore[index]


def test_totals_only_move_forward_across_processes(hermes_home: Path, writers: Any) -> None:
    # Two writers, two handles: as two processes would (each its own order, one version rule in state.db).
    first, second = writers(hermes_home / "state.db"), writers(hermes_home / "state.db")
    first.submit(snap("aaaaaaaaaaaa", input_tokens=900, output_tokens=9, updated_at=1_700_000_002.0))
    assert first.flush(5)
    second.submit(snap("aaaaaaaaaaaa", input_tokens=100, output_tokens=1, updated_at=1_700_000_001.0))
    assert second.flush(5)
    row = read_row(hermes_home / "state.db", "aaaaaaaaaaaa")
    assert (row["input_tokens"], row["output_tokens"]) == (900, 9)  # type: ignore[index]


def test_combine_keeps_the_newer_state_and_both_ledgers_in_any_order() -> None:
    old = snap(input_tokens=1, updated_at=1.0, ledger=Ledger(1, 0, 0, 1))
    new = snap(input_tokens=2, updated_at=2.0, ledger=Ledger(0, 2, 0, 1), agent_writes=False)
    for a, b in ((old, new), (new, old)):
        both = combine(a, b)
        assert both.input_tokens == 2
        assert both.ledger == Ledger(1, 2, 0, 2)
    assert combine(old._replace(agent_writes=True), new).agent_writes is True
    tie_early, tie_late = snap(title="a", observed=1.0), snap(title="b", observed=2.0)
    assert combine(tie_late, tie_early).title == "b"


def test_flush_honours_its_timeout_while_the_database_is_locked(
    mirror: Any, webui_dir: Path, hermes_home: Path, lock_holder: Any
) -> None:
    lock_holder(hermes_home / "state.db")
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    started = time.monotonic()
    assert webui_insights.flush(0.5) is False
    assert time.monotonic() - started < 5.0  # bounded: flush returns, whatever the lock does
    assert webui_insights.stats()["pending"] == 1


def test_queue_cap_drops_the_oldest_and_counts_and_logs_it(
    hermes_home: Path, lock_holder: Any, writers: Any, log: pytest.LogCaptureFixture
) -> None:
    holder = lock_holder(hermes_home / "state.db")
    writer = writers(hermes_home / "state.db", max_pending=3)
    forgotten: list[str] = []
    writer.on_dropped = lambda snapshot: forgotten.append(snapshot.session_id)
    for n in range(5):
        writer.submit(snap(f"{n:012x}", input_tokens=n + 1))
    assert writer._stats.as_dict()["dropped"]["queue_full"] == 2
    assert forgotten == [f"{0:012x}", f"{1:012x}"]
    assert log_lines(log, "dropped a pending update (queue_full)")
    holder.release()
    assert writer.flush(10)
    assert read_row(hermes_home / "state.db", f"{0:012x}") is None
    assert read_row(hermes_home / "state.db", f"{4:012x}") is not None


def test_many_sessions_share_few_transactions(hermes_home: Path, writers: Any) -> None:
    writer = writers(hermes_home / "state.db", debounce_s=0.3)
    for n in range(200):
        writer.submit(snap(f"{n:012x}", input_tokens=n + 1, title=f"chat {n % 7}"))
    assert writer.flush(10)
    stats = writer._stats.as_dict()
    assert stats["chats"]["created"] == 200
    assert stats["transactions"] <= 10


def test_one_handle_per_database_is_reused_and_closed_when_idle(hermes_home: Path, writers: Any) -> None:
    writer = writers(hermes_home / "state.db", idle_close_s=0.3)
    opened: list[Path] = []

    def open_store(path: Path) -> StateStore:
        opened.append(path)
        return StateStore(path, write_retries=1)

    writer.pool.open_store = open_store
    for n in range(3):
        writer.submit(snap(input_tokens=n + 1, updated_at=1_700_000_000.0 + n))
        assert writer.flush(5)
    assert opened == [hermes_home / "state.db"]
    assert health_of(writer)["open"] is True
    assert wait_for(lambda: not health_of(writer)["open"], timeout=5)


def health_of(writer: Writer) -> dict[str, Any]:
    (entry,) = writer.health()
    return entry


def test_writer_thread_starts_lazily_with_its_name(hermes_home: Path, webui_dir: Path, fast_writer: Any) -> None:
    before = {t for t in threading.enumerate() if t.name == THREAD_NAME}
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer)
    chat = make_session(webui_dir, title="Untitled")
    chat.save()  # blank chat: nothing to write, so still no thread
    assert {t for t in threading.enumerate() if t.name == THREAD_NAME} == before
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    started = {t for t in threading.enumerate() if t.name == THREAD_NAME} - before
    assert len(started) == 1 and started.pop().daemon


def test_a_thread_that_cannot_start_leaves_save_working_and_counts_the_loss(
    mirror: Any, webui_dir: Path, hermes_home: Path, mocker: Any, log: pytest.LogCaptureFixture
) -> None:
    installer._reset_for_tests()  # no writer thread yet
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(**FAST))
    mocker.patch.object(
        threading.Thread, "start", side_effect=RuntimeError("can't create new thread at interpreter shutdown")
    )
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()  # returns: nothing of ours reached the host
    assert chat.path.exists()
    stats = webui_insights.stats()
    assert stats["dropped"]["thread_start_failed"] == 1
    assert stats["pending"] == 0
    assert log_lines(log, "cannot start the writer thread", "RuntimeError: can't create new thread")
    assert log_lines(log, "dropped a pending update (thread_start_failed)")
    mocker.stopall()
    chat.save()  # the gate forgot the lost update: the next save queues it again
    assert webui_insights.flush(5)
    assert read_row(hermes_home / "state.db", chat.session_id) is not None


def test_a_chat_that_cannot_be_converted_is_skipped_counted_and_logged(
    hermes_home: Path, writers: Any, log: pytest.LogCaptureFixture
) -> None:
    writer = writers(hermes_home / "state.db")
    writer.submit(snap("badbadbadbad", messages=object()))  # what validation would refuse
    writer.submit(snap("goodgoodgood", input_tokens=3))
    assert writer.flush(5)
    assert writer._stats.as_dict()["skipped"]["bad_value"] == 1
    assert log_lines(log, "chat badbadbadbad not mirrored: cannot read it: TypeError")
    assert read_row(hermes_home / "state.db", "goodgoodgood") is not None


# ---------------------------------------------------- failure classes, recovery


def test_deleted_then_recreated_state_db_gets_the_next_update(
    mirror: Any, webui_dir: Path, hermes_home: Path, log: pytest.LogCaptureFixture
) -> None:
    db = hermes_home / "state.db"
    chat = make_session(webui_dir)
    save_turn(chat, 1, 1)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (hermes_home / name).unlink(missing_ok=True)
    save_turn(chat, 1, 1)
    assert not db.exists()  # the mirror never creates one
    assert webui_insights.stats()["skipped"]["no_state_db"] == 1
    assert log_lines(log, "nothing mirrored for 1 chat(s)", "no state.db at")
    create_state_db(db)
    save_turn(chat, 1, 1)
    assert read_row(db, chat.session_id)["input_tokens"] == 3  # type: ignore[index]


def test_a_state_db_replaced_underneath_is_reopened(mirror: Any, webui_dir: Path, hermes_home: Path) -> None:
    db = hermes_home / "state.db"
    chat = make_session(webui_dir)
    save_turn(chat, 1, 1)
    fresh = hermes_home / "fresh.db"
    create_state_db(fresh)
    os.replace(fresh, db)  # what a restore from backup does: a new inode under the same name
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    save_turn(chat, 1, 1)
    assert read_row(db, chat.session_id)["input_tokens"] == 2  # type: ignore[index]


def test_a_file_that_is_not_a_hermes_state_db_is_left_untouched(
    mirror: Any, webui_dir: Path, hermes_home: Path, log: pytest.LogCaptureFixture
) -> None:
    db = hermes_home / "state.db"
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (hermes_home / name).unlink(missing_ok=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE unrelated (x)")
    conn.close()
    chat = make_session(webui_dir)
    save_turn(chat, 1, 1)
    assert webui_insights.stats()["skipped"]["uninitialised"] == 1
    assert log_lines(log, "nothing mirrored", "not a hermes state.db")
    conn = sqlite3.connect(db)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["unrelated"]
    conn.close()


def _rewrite_in_another_process(db: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes of state.db in place (same inode) from another process.

    Never with plain file I/O in this one: closing such a descriptor drops the
    SQLite locks this process's connections hold.
    """
    code = (
        "import sys; f = open(sys.argv[1], 'r+b'); f.seek(int(sys.argv[2])); "
        "f.write(bytes.fromhex(sys.argv[3])); f.close()"
    )
    subprocess.run([sys.executable, "-c", code, str(db), str(offset), data.hex()], check=True, timeout=30)


def test_a_malformed_state_db_backs_off_and_recovers_when_repaired_in_place(
    hermes_home: Path, webui_dir: Path, log: pytest.LogCaptureFixture
) -> None:
    db = hermes_home / "state.db"
    # A handle per cycle (idle_close_s=0): the open handle of a WAL database would not re-read the header.
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(**{**FAST, "idle_close_s": 0.0}))
    chat = make_session(webui_dir)
    save_turn(chat, 1, 1)
    inode = os.stat(db).st_ino
    _rewrite_in_another_process(db, 0, b"garbage garbage!")  # the 16-byte "SQLite format 3" header
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    assert wait_for(lambda: webui_insights.stats()["failures"] >= 2, timeout=10)  # backed off, tried again
    state = health(db)
    assert "DatabaseError: file is not a database" in state["last_error"]
    assert state["next_try_at"] is not None
    assert webui_insights.stats()["pending"] == 1  # kept, not dropped
    assert log_lines(log, "cannot write to", "DatabaseError: file is not a database", "kept pending", "next try in")
    _rewrite_in_another_process(db, 0, b"SQLite format 3\x00")  # repaired in place
    assert webui_insights.flush(5)  # within one back-off step (0.4 s at most here), no restart
    assert os.stat(db).st_ino == inode
    assert read_row(db, chat.session_id)["input_tokens"] == 2  # type: ignore[index]
    assert health(db)["failures"] == 0


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("SessionDB: migration in progress"),
        OSError(errno.EIO, "Input/output error"),
        PermissionError(errno.EACCES, "Permission denied"),
        sqlite3.OperationalError("database or disk is full"),
        sqlite3.DatabaseError("database disk image is malformed"),
    ],
    ids=lambda e: type(e).__name__ + ":" + str(e).split(":")[0][:20],
)
def test_an_error_opening_state_db_backs_off_keeps_the_work_and_recovers_at_the_next_try(
    mirror: Any,
    webui_dir: Path,
    hermes_home: Path,
    sessiondb_fault: SessionDBFault,
    log: pytest.LogCaptureFixture,
    exc: BaseException,
) -> None:
    db = hermes_home / "state.db"
    chat = make_session(webui_dir)
    save_turn(chat, 1, 1)
    writer = installer._state.writer
    assert writer is not None
    writer.pool.close_all()  # the next write opens a new handle
    sessiondb_fault.exc = exc
    inode = os.stat(db).st_ino
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    assert wait_for(lambda: sessiondb_fault.calls >= 3, timeout=10)  # backing off 0.1, 0.2, 0.4 s ...
    state = health(db)
    assert state["last_error"] == f"{type(exc).__name__}: {exc}"
    assert state["failures"] >= 2 and state["next_try_at"] > time.time() - 1
    stats = webui_insights.stats()
    assert stats["pending"] == 1 and stats["retried"] >= 2 and stats["failures"] >= 2
    assert stats["internal_errors"] == 0  # a state of the database, not a bug
    assert log_lines(log, "cannot write to", f"{type(exc).__name__}: {exc}", "next try in")
    sessiondb_fault.clear()
    assert webui_insights.flush(5)
    assert sessiondb_fault.calls_after_clear == 1  # the first try after the fault cleared worked
    assert os.stat(db).st_ino == inode
    assert read_row(db, chat.session_id)["input_tokens"] == 2  # type: ignore[index]


def test_backoff_doubles_to_its_cap(hermes_home: Path, writers: Any, sessiondb_fault: SessionDBFault) -> None:
    writer = writers(hermes_home / "state.db", error_backoff_s=0.05, error_backoff_cap_s=0.2)
    sessiondb_fault.exc = RuntimeError("down")
    delays: list[float] = []
    original = writer.pool.failed

    def failed(database: Any, exc: BaseException, chats: int) -> Any:
        reason = original(database, exc, chats)
        delays.append(round(database.retry_at - time.monotonic(), 2))
        return reason

    writer.pool.failed = failed  # type: ignore[method-assign]
    writer.submit(snap())
    assert wait_for(lambda: len(delays) >= 5, timeout=10)
    sessiondb_fault.clear()
    assert [min(d, 0.2) for d in delays[:5]] == pytest.approx([0.05, 0.1, 0.2, 0.2, 0.2], abs=0.03)
    assert writer.flush(5)


def test_busy_retries_soon_other_errors_back_off(hermes_home: Path, writers: Any) -> None:
    writer = writers(
        hermes_home / "state.db",
        busy_retry_s=0.01,
        busy_retry_cap_s=0.02,
        error_backoff_s=5.0,
        error_backoff_cap_s=60.0,
    )
    database = Database(hermes_home / "state.db")
    for _ in range(5):
        assert writer.pool.failed(database, sqlite3.OperationalError("database is locked"), 0) is Unwritable.BUSY
        assert database.retry_at - time.monotonic() <= 0.02
    assert writer.pool.failed(database, sqlite3.OperationalError("disk I/O error"), 0) is Unwritable.ERROR
    # The error back-off's first step (busy retries before it do not count).
    assert 4.0 < database.retry_at - time.monotonic() <= 5.0
    assert database.failures == 6


@pytest.mark.swallowed_errors_expected
def test_a_bug_in_the_write_path_is_reported_as_internal_and_the_work_kept(
    hermes_home: Path, writers: Any, mocker: Any, fail_on_swallowed_errors: list[tuple[str, BaseException]]
) -> None:
    writer = writers(hermes_home / "state.db")
    calls = {"n": 0}
    import webui_insights.writer.export as writer_module

    real_sync = writer_module.sync

    def buggy(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TypeError("unsupported operand")
        return real_sync(*args, **kwargs)

    mocker.patch.object(writer_module, "sync", buggy)
    writer.submit(snap(input_tokens=7))
    assert writer.flush(5)
    assert [(where, type(e)) for where, e in fail_on_swallowed_errors] == [("writer", TypeError)]
    assert writer._stats.as_dict()["internal_errors"] == 1
    assert read_row(hermes_home / "state.db", "abcabcabcabc")["input_tokens"] == 7  # type: ignore[index]


def test_rate_limited_log_repeats_each_kind_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="webui_insights")
    log = RateLimitedLog(interval=0.2)
    for _ in range(3):
        log.warning("a", "webui-insights: kind a")
        log.warning("b", "webui-insights: kind b")
    assert [r.getMessage() for r in caplog.records] == ["webui-insights: kind a", "webui-insights: kind b"]
    time.sleep(0.25)
    log.warning("a", "webui-insights: kind a")
    assert caplog.records[-1].getMessage() == "webui-insights: kind a (2 similar messages suppressed)"


# ------------------------------------------------------------ one order per process


def test_one_writer_per_process_whatever_install_is_called_with(hermes_home: Path, fast_writer: Any) -> None:
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(debounce_s=1.0))
    first = installer._state.get_writer()
    installer.uninstall()
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer)
    assert installer._state.get_writer() is first
    assert first.config == fast_writer


def test_reinstall_with_pending_work_lands_it(hermes_home: Path, webui_dir: Path) -> None:
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(debounce_s=5.0))
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=5, output_tokens=1)
    chat.save()
    installer.uninstall()
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(**FAST))
    assert webui_insights.flush(5)
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 5  # type: ignore[index]


def test_reinstall_with_pending_work_the_newer_state_wins(hermes_home: Path, webui_dir: Path, lock_holder: Any) -> None:
    db = hermes_home / "state.db"
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(**FAST))
    chat = make_session(webui_dir, title="Old title")
    save_turn(chat, 1, 1)
    holder = lock_holder(db)
    chat.title = "Older pending"
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()  # pending behind the lock
    installer.uninstall()
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(**{**FAST, "debounce_s": 0.2}))
    chat.title = "Newest"
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    installer.uninstall()
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(**FAST))
    holder.release()
    assert webui_insights.flush(10)
    row = read_row(db, chat.session_id)
    assert row is not None and (row["title"], row["input_tokens"]) == ("Newest", 3)


# ---------------------------------------------------------------- exit


def _child_script(body: str) -> str:
    return textwrap.dedent(
        """
        import os
        import hermes_state  # the WebUI runs the agent in-process: hermes-agent is loaded
        import webui_insights
        from webui_insights.demo_host import DemoSession, TARGET
        from webui_insights.writer import WriterConfig
        """
    ) + textwrap.dedent(body)


def _run_child(script: str, home: Path, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_WEBUI_STATE_DIR": str(home / "webui")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


def test_a_process_that_exits_normally_with_pending_work_lands_it(hermes_home: Path) -> None:
    script = _child_script(
        """
        webui_insights.install(target=TARGET, enabled=True, writer_config=WriterConfig(debounce_s=5.0))
        chat = DemoSession(os.environ["HERMES_WEBUI_STATE_DIR"], session_id="e0e0e0e0e0e0")
        chat.add_turn("q", "a", input_tokens=77, output_tokens=7)
        chat.save()
        print(webui_insights.stats()["pending"])
        """
    )
    done, _ = _run_child(script, hermes_home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"  # still pending when the script ended
    assert read_row(hermes_home / "state.db", "e0e0e0e0e0e0")["input_tokens"] == 77  # type: ignore[index]


@pytest.mark.slow
def test_exit_while_another_process_holds_the_lock_ends_within_the_budget(hermes_home: Path, lock_holder: Any) -> None:
    holder = lock_holder(hermes_home / "state.db", seconds=30)
    script = _child_script(
        """
        config = WriterConfig(debounce_s=0.01, exit_budget_s=1.0)
        webui_insights.install(target=TARGET, enabled=True, writer_config=config)
        chat = DemoSession(os.environ["HERMES_WEBUI_STATE_DIR"], session_id="e1e1e1e1e1e1")
        chat.add_turn("q", "a", input_tokens=5, output_tokens=1)
        chat.save()
        """
    )
    done, elapsed = _run_child(script, hermes_home)
    assert done.returncode == 0, done.stderr
    assert holder.holding
    assert elapsed < 15, elapsed  # 30 s lock, 1 s budget: the exit did not wait for the lock
    assert "not mirrored before exit" in done.stderr


def test_shutdown_is_idempotent_and_later_submits_are_counted(hermes_home: Path, writers: Any) -> None:
    writer = writers(hermes_home / "state.db")
    writer.submit(snap())
    assert writer.shutdown(2) is True
    assert writer.shutdown(2) is True
    assert writer.submit(snap(updated_at=1_700_000_001.0)) is False
    assert writer._stats.as_dict()["dropped"]["exit_timeout"] == 1
    writer.restart()
    assert writer.submit(snap(updated_at=1_700_000_002.0)) is True
    assert writer.flush(5)


# ---------------------------------------------------------------- fork


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@needs_fork
def test_forked_child_mirrors_its_own_sessions_and_the_parent_is_unaffected(
    mirror: Any, webui_dir: Path, hermes_home: Path
) -> None:
    parent_chat = make_session(webui_dir)
    save_turn(parent_chat, 11, 1)
    pending_chat = make_session(webui_dir)
    pending_chat.add_turn("q", "a", input_tokens=22, output_tokens=2)

    def child() -> dict[str, Any]:
        chat = DemoSession(webui_dir)
        chat.add_turn("q", "a", input_tokens=33, output_tokens=3)
        chat.save()
        return {
            "sid": chat.session_id,
            "flushed": webui_insights.flush(10),
            "pending": webui_insights.stats()["pending"],
        }

    result = in_forked_child(child)
    assert result["flushed"] and result["pending"] == 0
    assert read_row(hermes_home / "state.db", result["sid"])["input_tokens"] == 33  # type: ignore[index]
    # The parent still works after its child exited, with its own handle and thread.
    pending_chat.save()
    assert webui_insights.flush(5)
    assert read_row(hermes_home / "state.db", pending_chat.session_id)["input_tokens"] == 22  # type: ignore[index]


@needs_fork
@pytest.mark.parametrize("name", INTERNAL_LOCK_NAMES)
def test_a_fork_while_an_internal_lock_is_held_leaves_the_child_working(
    name: str, hermes_home: Path, webui_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Env switch re-read on every save (the switch's lock is taken), a sweep (its lock, on writer start).
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "1")
    monkeypatch.setattr(forksafe, "FORK_WAIT_S", 0.3)
    installer.install(target=TARGET, enabled=None, settings_ttl=0.0, writer_config=WriterConfig(**FAST))
    save_turn(make_session(webui_dir), 1, 1)  # the writer and its thread exist
    chat = make_session(webui_dir)
    lock = internal_locks(chat)[name]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)

    def child() -> dict[str, Any]:
        # What a pre-fork server's worker does: install() (again), save, and a refused chat (logged).
        webui_insights.install(target=TARGET, enabled=None, settings_ttl=0.0)
        chat.add_turn("q", "a", input_tokens=5, output_tokens=1)
        saver = threading.Thread(target=chat.save, daemon=True)
        saver.start()
        saver.join(1.0)
        returned = not saver.is_alive()
        bad = DemoSession(webui_dir, profile="../elsewhere")
        bad.add_turn("q", "a", input_tokens=1, output_tokens=1)
        bad.save()
        return {"returned": returned, "flushed": webui_insights.flush(10)}

    try:
        result = in_forked_child(child, timeout=30)
    finally:
        release.set()
        holder.join(5)
    assert result == {"returned": True, "flushed": True}
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 5  # type: ignore[index]
    # The parent is unaffected: its own saves still land.
    parent_chat = make_session(webui_dir)
    save_turn(parent_chat, 2, 1)
    assert read_row(hermes_home / "state.db", parent_chat.session_id) is not None


@needs_fork
def test_a_fork_the_fork_hooks_did_not_see_is_noticed_on_the_next_submit(
    mirror: Any, webui_dir: Path, hermes_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some servers fork without running os.register_at_fork hooks: the writer checks its pid on submit.
    save_turn(make_session(webui_dir), 1, 1)
    writer = installer._state.writer
    assert writer is not None
    monkeypatch.setattr(forksafe, "_objects", type(forksafe._objects)())  # no object re-created by the hook
    chat = make_session(webui_dir)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with writer._buffer.lock:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)

    def child() -> dict[str, Any]:
        chat.add_turn("q", "a", input_tokens=4, output_tokens=1)
        saver = threading.Thread(target=chat.save, daemon=True)
        saver.start()
        saver.join(1.0)
        return {"returned": not saver.is_alive(), "flushed": webui_insights.flush(10)}

    try:
        result = in_forked_child(child, timeout=30)
    finally:
        release.set()
        holder.join(5)
    assert result == {"returned": True, "flushed": True}
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 4  # type: ignore[index]


@needs_fork
def test_a_fork_waits_for_our_threads_to_leave_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    inside, leave = threading.Event(), threading.Event()
    left_at: list[float] = []

    def in_sqlite() -> None:
        with forksafe.sqlite_section():
            inside.set()
            leave.wait(10)
            time.sleep(0.1)  # still inside when the fork is asked for
            left_at.append(time.monotonic())

    thread = threading.Thread(target=in_sqlite)
    thread.start()
    assert inside.wait(5)
    leave.set()
    in_forked_child(lambda: None)
    forked_at = time.monotonic()
    thread.join(5)
    assert left_at and left_at[0] <= forked_at  # the fork waited for the section to end


@needs_fork
def test_a_fork_never_waits_longer_than_its_budget_for_a_stuck_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forksafe, "FORK_WAIT_S", 0.2)
    inside, leave = threading.Event(), threading.Event()

    def stuck() -> None:
        with forksafe.sqlite_section():
            inside.set()
            leave.wait(30)

    thread = threading.Thread(target=stuck, daemon=True)
    thread.start()
    assert inside.wait(5)
    try:
        assert in_forked_child(lambda: "forked", timeout=10) == "forked"
        # New sections in the parent are not blocked after the fork.
        done = threading.Event()

        def enter() -> None:
            with forksafe.sqlite_section():
                done.set()

        threading.Thread(target=enter, daemon=True).start()
        assert done.wait(2)
    finally:
        leave.set()
        thread.join(5)


def test_notes_on_a_snapshot_are_counted_once(hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig) -> None:
    def adapter(session: Any) -> UsageSnapshot:  # no updated_at: ordered by capture time only (a note)
        return UsageSnapshot(session.session_id, input_tokens=session.input_tokens, message_count=1)

    installer.install(target=TARGET, enabled=True, adapter=adapter, writer_config=fast_writer)
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=3, output_tokens=1)
    chat.save()
    assert webui_insights.flush(5)
    assert webui_insights.stats()["notes"]["version_missing"] == 1


def test_the_writer_uses_sqlite_only_inside_fork_safe_sections(
    hermes_home: Path, writers: Any, sqlite_sections: list[int]
) -> None:
    writer = writers(hermes_home / "state.db")
    writer.submit(snap())
    assert writer.flush(5)
    writer.shutdown(2)
    assert len(sqlite_sections) >= 3  # open, the write transaction, close


# ------------------------------------------------------------ the writer's parts


def test_the_writer_thread_starts_no_other_layer(
    hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The installer starts the sweep beside the writer; the writer thread only writes."""
    from webui_insights.sweep import ReconcileSweep

    starters: list[str] = []
    real_start = ReconcileSweep.start

    def start(self: ReconcileSweep) -> bool:
        starters.append(threading.current_thread().name)
        return real_start(self)

    monkeypatch.setattr(ReconcileSweep, "start", start)
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer, reconcile_interval=3600)
    assert starters == []  # nothing saved yet: no threads
    chat = make_session(webui_dir)
    save_turn(chat, 1, 1)
    save_turn(chat, 2, 1)
    assert starters == [threading.current_thread().name]  # once, by the first queued save's thread
    assert THREAD_NAME not in starters


@pytest.mark.parametrize(
    ("exc", "reason", "retried"),
    [
        (sqlite3.OperationalError("database is locked"), Unwritable.BUSY, True),
        (sqlite3.OperationalError("database table is busy"), Unwritable.BUSY, True),
        (sqlite3.DatabaseError("file is not a database"), Unwritable.ERROR, True),
        (OSError(errno.EIO, "I/O error"), Unwritable.ERROR, True),
        (RuntimeError("SessionDB failed"), Unwritable.ERROR, True),
        (StateDBMissing("no state.db"), Unwritable.NO_STATE_DB, False),
        (StateDBUninitialised("no schema_version"), Unwritable.UNINITIALISED, False),
        (HermesStateUnavailable("no hermes_state"), Unwritable.NO_HERMES_STATE, False),
    ],
    ids=["locked", "busy", "not_a_database", "io_error", "sessiondb", "missing", "uninitialised", "no_hermes"],
)
def test_each_failure_has_one_class_and_the_class_says_whether_the_work_is_kept(
    exc: BaseException, reason: Unwritable, retried: bool
) -> None:
    assert unwritable(exc) is reason
    assert reason.retried is retried
    assert reason.value in Stats().as_dict()["skipped"] or retried  # given-up classes are stats keys


def test_the_buffer_keeps_one_snapshot_per_chat_newest_last_and_reports_what_is_over_its_cap() -> None:
    from webui_insights.writer.buffer import Buffer

    buffer = Buffer()
    first = snap("000000000001", input_tokens=1, updated_at=1.0)
    kept, merged, over = buffer.put(first, cap=2)
    assert (kept, merged, over) == (first, False, False)
    buffer.put(snap("000000000002"), cap=2)
    newer = snap("000000000001", input_tokens=2, updated_at=2.0)
    kept, merged, over = buffer.put(newer, cap=2)
    assert kept.input_tokens == 2 and merged and not over
    buffer.put(snap("000000000003"), cap=2)
    assert [s.session_id for s in buffer.trim(2)] == ["000000000002"]  # the oldest chat, not the oldest save
    batch = buffer.take()
    assert [s.session_id for s in batch] == ["000000000001", "000000000003"] and buffer.count() == 2
    buffer.put_back(batch[:1])
    assert buffer.finished(batch) is False and buffer.count() == 1
