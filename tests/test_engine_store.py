"""engine/store.py: the only ways this layer opens a state.db, on the real SessionDB.

A state.db is hermes' and may be anything: missing, not yet initialised,
not a database, locked by hermes' own writers, a read-only copy. What
matters is what the store never does to it (create it, touch a file hermes
did not initialise, drop another connection's lock) and that a failure is
classified the way the writer and the commands act on.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webui_insights.engine.hermes import HermesStateUnavailable, hermes_state
from webui_insights.engine.store import (
    IN_CHUNK,
    StateDBMissing,
    StateDBUninitialised,
    StateStore,
    Unwritable,
    check_initialised,
    file_identity,
    in_chunks,
    is_busy,
    marks,
    open_read_only,
    unwritable,
    writable,
)


@pytest.fixture
def store(db: Path) -> Iterator[StateStore]:
    handle = StateStore(db)
    yield handle
    handle.close()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file in ``folder`` with its bytes: what "left untouched" is checked against."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def session_ids(db: Path) -> list[str]:
    conn = open_read_only(db)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM sessions ORDER BY id")]
    finally:
        conn.close()


def insert_session(session_id: str) -> Callable[[sqlite3.Connection], str]:
    def write(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO sessions (id, source, started_at) VALUES (?, 'webui', 1)", (session_id,))
        return session_id

    return write


@contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Another writer (hermes' agent, say) holds state.db's write lock."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def real_busy_error(db: Path) -> sqlite3.OperationalError:
    """The error SQLite itself raises for a write while another connection holds the lock."""
    with write_lock(db):
        conn = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            return exc
        finally:
            conn.close()
    raise AssertionError("the write was not refused")


# ------------------------------------------------------------- never touched


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda path: None, id="no file at all"),
        pytest.param(lambda path: path.mkdir(), id="a folder where the file should be"),
    ],
)
def test_a_state_db_that_is_not_there_is_never_created(tmp_path: Path, make: Callable[[Path], None]) -> None:
    """hermes creates its state.db on its first run; one made by this layer would be an empty, wrong one."""
    path = tmp_path / "state.db"
    make(path)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(StateDBMissing) as raised:
        StateStore(path)
    assert unwritable(raised.value) is Unwritable.NO_STATE_DB
    assert sorted(tmp_path.iterdir()) == before


def test_a_sqlite_file_hermes_did_not_initialise_is_left_untouched(tmp_path: Path) -> None:
    """SessionDB on any other SQLite file would apply hermes' whole schema to it."""
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    before = snapshot(tmp_path)
    with pytest.raises(StateDBUninitialised) as raised:
        StateStore(path)
    assert unwritable(raised.value) is Unwritable.UNINITIALISED
    assert snapshot(tmp_path) == before


def test_a_file_that_is_no_database_is_left_untouched_and_counts_as_an_error(tmp_path: Path) -> None:
    """A damaged file may be repaired later: the work is kept (an error, not "nothing to write to")."""
    path = tmp_path / "state.db"
    path.write_bytes(b"not a database, " * 512)
    before = snapshot(tmp_path)
    with pytest.raises(sqlite3.DatabaseError) as raised:
        StateStore(path)
    assert unwritable(raised.value) is Unwritable.ERROR and unwritable(raised.value).retried
    assert snapshot(tmp_path) == before


def test_our_checks_never_drop_a_lock_another_connection_of_this_process_holds(db: Path) -> None:
    """Closing a plain descriptor on state.db's files drops every POSIX lock this process holds on that file.

    In WAL mode the write lock lives in ``-shm``: a check that read it with
    ``open()`` would let another process write in the middle of ours.
    """
    script = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
        "try:\n"
        "    conn.execute('BEGIN IMMEDIATE')\n"
        "except sqlite3.OperationalError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('acquired')\n"
    )
    with write_lock(db):
        file_identity(db)
        writable(db)
        probe = open_read_only(db)
        check_initialised(probe, db)
        probe.close()
        other_process = subprocess.run(
            [sys.executable, "-c", script, str(db)], capture_output=True, text=True, timeout=60, check=True
        )
    assert other_process.stdout.strip() == "database is locked"


# ---------------------------------------------------------- write transactions


def test_a_transaction_commits_and_returns_what_it_computed(db: Path, store: StateStore) -> None:
    assert store.run(insert_session("chat1")) == "chat1"
    assert session_ids(db) == ["chat1"]


def test_a_failing_transaction_leaves_nothing_behind(db: Path, store: StateStore) -> None:
    """A plan half applied would leave a row without its record: all of it or nothing."""

    def half(conn: sqlite3.Connection) -> None:
        insert_session("chat1")(conn)
        raise ValueError("the plan failed midway")

    with pytest.raises(ValueError, match="midway"):
        store.run(half)
    assert session_ids(db) == []
    store.run(insert_session("chat2"))  # the handle is still usable
    assert session_ids(db) == ["chat2"]


def test_a_transaction_holds_the_write_lock_from_its_start(db: Path, store: StateStore) -> None:
    """Reads and writes of one plan must see one database: no other writer may slip in between (BEGIN IMMEDIATE)."""

    def other_writer_tries(conn: sqlite3.Connection) -> str:
        other = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            return str(exc)
        finally:
            other.close()
        return "acquired"

    assert store.run(other_writer_tries) == "database is locked"


@pytest.mark.slow
def test_a_locked_database_fails_fast_as_busy_with_few_retries(db: Path) -> None:
    """The background writer backs off itself (and can stop while it waits): SessionDB must not retry 15 times."""
    store = StateStore(db, write_retries=1)
    called: list[bool] = []
    try:
        with write_lock(db):
            started = time.monotonic()
            with pytest.raises(sqlite3.OperationalError) as raised:
                store.run(lambda conn: called.append(True))
            waited = time.monotonic() - started
    finally:
        store.close()
    assert is_busy(raised.value) and unwritable(raised.value) is Unwritable.BUSY
    assert called == []
    assert waited < 5.0  # one of SQLite's 1 s busy waits, not SessionDB's 15 tries


def test_write_retries_are_this_handles_only(db: Path) -> None:
    """hermes' own writers in this process keep their patience: only our handle fails fast."""
    store = StateStore(db, write_retries=3)
    hermes_own = hermes_state().SessionDB(db_path=db)
    try:
        assert store.db._WRITE_MAX_RETRIES == 3
        assert hermes_own._WRITE_MAX_RETRIES != 3  # hermes' default (15 on 0.19.0)
    finally:
        hermes_own.close()
        store.close()


def test_a_sessiondb_without_execute_write_is_never_written(db: Path, store: StateStore) -> None:
    """A hermes-agent too old to offer _execute_write: refuse, rather than write outside its locking."""
    store.capabilities = dataclasses.replace(store.capabilities, execute_write=False)
    with pytest.raises(RuntimeError, match="_execute_write"):
        store.run(insert_session("chat1"))
    assert session_ids(db) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fsync is skipped on Linux only")
def test_only_this_handles_commits_skip_the_fsync(db: Path) -> None:
    """A power cut may lose our last transactions (the sweep redoes them), never hermes' own."""
    hermes_before = hermes_state().SessionDB(db_path=db)
    store = StateStore(db)
    hermes_after = hermes_state().SessionDB(db_path=db)
    try:
        ours = store.run(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        theirs = [h._conn.execute("PRAGMA synchronous").fetchone()[0] for h in (hermes_before, hermes_after)]
    finally:
        for handle in (store, hermes_before, hermes_after):
            handle.close()
    assert ours == 1  # NORMAL
    assert theirs == [2, 2]  # FULL, as hermes opened them


def test_section_wraps_opening_every_transaction_and_closing(db: Path) -> None:
    """The host passes forksafe's section: a fork must wait for each of these, so each must be inside one."""
    events: list[str] = []

    @contextmanager
    def section() -> Iterator[None]:
        events.append("enter")
        yield
        events.append("exit")

    store = StateStore(db, section=section)
    assert events == ["enter", "exit"]
    store.run(lambda conn: events.append("transaction"))
    assert events[2:] == ["enter", "transaction", "exit"]
    store.close()
    assert events[5:] == ["enter", "exit"]
    store.close()  # a second close does nothing
    assert len(events) == 7


# ------------------------------------------------------------- the same file


def test_a_handle_knows_when_state_db_was_replaced_or_deleted(db: Path, store: StateStore) -> None:
    """A restored backup or a new hermes home: the writer must reopen, not write into the old file's inode."""
    assert store.is_same_file()
    copy = db.with_name("copy.db")
    copy.write_bytes(db.read_bytes())
    os.replace(copy, db)
    assert not store.is_same_file()
    db.unlink()
    assert not store.is_same_file()


def test_file_identity(db: Path, tmp_path: Path) -> None:
    st_ = os.stat(db)
    assert file_identity(db) == (st_.st_dev, st_.st_ino)
    assert file_identity(tmp_path / "missing.db") is None


# ------------------------------------------------------------------ reading


def test_a_read_only_connection_reads_and_cannot_write(db: Path, store: StateStore) -> None:
    """verify, status and dry runs must be unable to change hermes' database, by construction."""
    store.run(insert_session("chat1"))
    conn = open_read_only(db)
    try:
        assert conn.execute("SELECT id FROM sessions").fetchall() == [("chat1",)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM sessions")
    finally:
        conn.close()
    assert session_ids(db) == ["chat1"]


def test_reading_a_missing_or_broken_state_db_says_which(tmp_path: Path) -> None:
    with pytest.raises(StateDBMissing):
        open_read_only(tmp_path / "state.db")
    (tmp_path / "state.db").write_bytes(b"x" * 4096)
    with pytest.raises(sqlite3.DatabaseError):
        open_read_only(tmp_path / "state.db").execute("SELECT * FROM sessions")


def unwritable_copy(db: Path) -> None:
    """A WAL state.db with frames in its -wal and a -shm SQLite can neither open nor create (a read-only mount)."""
    script = (
        "import os, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "conn.execute('PRAGMA wal_autocheckpoint=0')\n"
        "conn.execute(\"INSERT INTO sessions (id, source, started_at) VALUES ('in-wal', 'cli', 1)\")\n"
        "conn.commit()\n"
        "os._exit(0)\n"  # no close: the frames stay in the -wal
    )
    subprocess.run([sys.executable, "-c", script, str(db)], check=True, timeout=60)
    shm = db.with_name(db.name + "-shm")
    shm.unlink(missing_ok=True)
    shm.symlink_to(db.parent / "no-such-folder" / "state.db-shm")


def test_a_copy_where_sqlite_cannot_make_its_shm_file_is_read_as_it_is(db: Path) -> None:
    """A backup or a mounted copy must still be verifiable: its main file is read as is (the -wal cannot be)."""
    store = StateStore(db)
    store.run(insert_session("in-main-file"))
    store.close()  # checkpointed into the main file
    unwritable_copy(db)
    assert not writable(db)
    assert session_ids(db) == ["in-main-file"]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda db: None, True, id="a state.db in a writable folder is writable"),
        pytest.param(lambda db: db.with_name("state.db-shm").write_bytes(b""), True, id="an ordinary -shm is fine"),
        pytest.param(lambda db: db.with_name("state.db-shm").mkdir(), False, id="a -shm that is a folder is not"),
        pytest.param(
            lambda db: db.with_name("state.db-shm").symlink_to(db.parent / "gone" / "x"),
            False,
            id="a -shm that points nowhere is not",
        ),
        pytest.param(lambda db: db.unlink(), False, id="no state.db is not writable"),
    ],
)
def test_writable(db: Path, make: Callable[[Path], Any], expected: bool) -> None:
    """status and verify say "read-only" from this, without opening the database."""
    make(db)
    assert writable(db) is expected


def test_only_a_database_hermes_initialised_passes_the_check(db: Path, tmp_path: Path) -> None:
    conn = open_read_only(db)
    try:
        check_initialised(conn, db)  # create_state_db made it the way a first hermes run does
    finally:
        conn.close()
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    conn = sqlite3.connect(other)
    try:
        with pytest.raises(StateDBUninitialised, match="untouched"):
            check_initialised(conn, other)
    finally:
        conn.close()


# ------------------------------------------------------------ classification


def test_sqlites_own_lock_error_is_busy(db: Path) -> None:
    """The words SQLite really uses: a busy database retried quickly, everything else backed off longer."""
    exc = real_busy_error(db)
    assert is_busy(exc)
    assert unwritable(exc) is Unwritable.BUSY


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        pytest.param(HermesStateUnavailable("no module"), Unwritable.NO_HERMES_STATE, id="no hermes-agent"),
        pytest.param(StateDBMissing("no file"), Unwritable.NO_STATE_DB, id="no state.db"),
        pytest.param(StateDBUninitialised("no schema"), Unwritable.UNINITIALISED, id="not hermes' database"),
        pytest.param(sqlite3.OperationalError("database is locked"), Unwritable.BUSY, id="a locked database is busy"),
        pytest.param(sqlite3.OperationalError("database table is locked"), Unwritable.BUSY, id="a locked table too"),
        pytest.param(sqlite3.OperationalError("database is busy"), Unwritable.BUSY, id="a busy database too"),
        pytest.param(sqlite3.OperationalError("disk I/O error"), Unwritable.ERROR, id="an I/O error is an error"),
        pytest.param(sqlite3.DatabaseError("database is locked"), Unwritable.ERROR, id="only OperationalError is busy"),
        pytest.param(OSError("read-only file system"), Unwritable.ERROR, id="an OSError is an error"),
    ],
)
def test_why_a_state_db_could_not_be_written(exc: BaseException, reason: Unwritable) -> None:
    assert unwritable(exc) is reason
    assert is_busy(exc) is (reason is Unwritable.BUSY)


@pytest.mark.parametrize(
    ("reason", "retried"),
    [
        pytest.param(Unwritable.BUSY, True, id="a busy database is tried again"),
        pytest.param(Unwritable.ERROR, True, id="a failing database is tried again"),
        pytest.param(Unwritable.NO_HERMES_STATE, False, id="without hermes-agent the work is given up"),
        pytest.param(Unwritable.NO_STATE_DB, False, id="without a state.db the work is given up"),
        pytest.param(Unwritable.UNINITIALISED, False, id="a foreign file's work is given up"),
    ],
)
def test_which_failures_keep_the_work(reason: Unwritable, retried: bool) -> None:
    """Kept work comes back on the next try; given-up work comes back with the chat's next save or the sweep."""
    assert reason.retried is retried


# ------------------------------------------------------------------ chunks


@given(st.lists(st.integers(), max_size=IN_CHUNK * 3 + 5))
def test_chunks_hold_every_value_once_in_order_each_with_its_placeholders(values: list[int]) -> None:
    """A value lost between chunks is a chat never read; one too many ``?`` is an SQL error."""
    chunks = list(in_chunks(values))
    assert [v for chunk, _ in chunks for v in chunk] == values
    for chunk, placeholders in chunks:
        assert 0 < len(chunk) <= IN_CHUNK
        assert placeholders == marks(len(chunk))


@given(st.integers(min_value=0, max_value=IN_CHUNK))
def test_marks_bind_exactly_that_many_values(count: int) -> None:
    conn = sqlite3.connect(":memory:")
    try:
        sql = f"SELECT 1 WHERE 0 IN ({marks(count)})" if count else "SELECT 1"
        conn.execute(sql, list(range(count)))
    finally:
        conn.close()
