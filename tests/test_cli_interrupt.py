"""Ctrl-C anywhere: exit 130 within 2 s, one line on what was done, no process left, nothing half written.

The real console script backfills 20,000 chats; SIGINT lands while its
reader processes parse the files, or while it writes (rows are appearing
in state.db). Then the state.db passes ``PRAGMA integrity_check``, it
holds exactly what the line says was written, and a second backfill
completes the job.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.messy_home import child_pids, write_chat

from webui_insights.engine.store import create_state_db

pytestmark = pytest.mark.slow

CHATS = 20_000
SCRIPT = Path(sys.executable).with_name("webui-insights")


@pytest.fixture(scope="module")
def webui(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WebUI state dir with 20,000 chats (shared, only read)."""
    state_dir = tmp_path_factory.mktemp("webui20k")
    sessions = state_dir / "sessions"
    sessions.mkdir()
    for n in range(CHATS):
        write_chat(sessions, f"{n + 1:012x}", title=f"Chat {n}", turns=3, created_at=time.time() - n * 60)
    return state_dir


@pytest.fixture
def home(tmp_path: Path) -> Path:
    create_state_db(tmp_path / "state.db")
    return tmp_path


def _rows(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _interrupt(
    home: Path, webui: Path, args: list[str], when: Callable[[int], bool]
) -> tuple[int, float, str, set[int]]:
    """Run the script, SIGINT it once ``when(pid)`` holds; (exit, seconds to exit, stderr, every child seen)."""
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_WEBUI_STATE_DIR": str(webui)}
    proc = subprocess.Popen([str(SCRIPT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while not when(proc.pid):
            seen.update(child_pids(proc.pid))
            assert proc.poll() is None, f"finished before the moment came: {proc.communicate()}"
            assert time.monotonic() < deadline, "the moment never came"
            time.sleep(0.003)
        seen.update(child_pids(proc.pid))
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        while proc.poll() is None and time.monotonic() - sent < 10:
            seen.update(child_pids(proc.pid))
            time.sleep(0.01)
        took = time.monotonic() - sent
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode, took, err, seen


def _after(home: Path, webui: Path, code: int, took: float, err: str, seen: set[int]) -> int:
    """What every interruption must leave: returns the rows it says it wrote."""
    assert code == 130, err
    assert took < 2.0, f"exit took {took:.2f} s"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "nothing is half written" in lines[0], err
    assert [pid for pid in seen if _alive(pid)] == []  # no reader left behind
    conn = sqlite3.connect(home / "state.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    written = re.search(r"interrupted: (\d+) chats written and kept", lines[0])
    assert written is not None, lines[0]
    assert _rows(home / "state.db") == int(written.group(1))
    return int(written.group(1))


def _finish(home: Path, webui: Path, already: int) -> None:
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_WEBUI_STATE_DIR": str(webui)}
    done = subprocess.run([str(SCRIPT), "backfill", "-q"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"wrote {CHATS - already} chats ({CHATS - already} new" in done.stdout
    assert f"{already} already up to date" in done.stdout
    assert _rows(home / "state.db") == CHATS


def test_ctrl_c_while_the_readers_parse_exits_130_and_a_second_run_finishes(home: Path, webui: Path) -> None:
    result = _interrupt(home, webui, ["backfill"], lambda pid: len(child_pids(pid)) >= 1)
    assert result[3], "no reader process was seen"
    code, took, err, seen = result
    if "interrupted while listing" in err:
        # The readers start while the folder is still being listed: a Ctrl-C then stops the listing.
        assert (code, took < 2.0, err.strip().count("\n"), "nothing was written" in err) == (130, True, 0, True), err
        assert [pid for pid in seen if _alive(pid)] == [] and _rows(home / "state.db") == 0
        written = 0
    else:
        written = _after(home, webui, *result)
    assert written < CHATS
    _finish(home, webui, written)


def test_ctrl_c_while_rows_are_being_written_exits_130_and_a_second_run_finishes(home: Path, webui: Path) -> None:
    result = _interrupt(home, webui, ["backfill"], lambda pid: _rows(home / "state.db") > 0)
    written = _after(home, webui, *result)
    assert 0 < written < CHATS
    _finish(home, webui, written)


def test_ctrl_c_during_verify_exits_130_without_a_traceback(home: Path, webui: Path) -> None:
    code, took, err, seen = _interrupt(home, webui, ["verify"], lambda pid: len(child_pids(pid)) >= 1)
    assert (code, "Traceback" in err) == (130, False), err
    assert took < 2.0 and err.strip().count("\n") == 0 and "nothing was written" in err
    assert [pid for pid in seen if _alive(pid)] == []


def test_ctrl_c_pressed_again_while_it_stops_changes_nothing(home: Path, webui: Path) -> None:
    """Impatient users press Ctrl-C several times: the clean-up after the first is not interrupted."""
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_WEBUI_STATE_DIR": str(webui)}
    proc = subprocess.Popen(
        [str(SCRIPT), "backfill"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while _rows(home / "state.db") == 0:
            seen.update(child_pids(proc.pid))
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.003)
        sent = time.monotonic()
        for _ in range(40):  # one every 2 ms until it is gone
            if proc.poll() is not None:
                break
            seen.update(child_pids(proc.pid))
            proc.send_signal(signal.SIGINT)
            time.sleep(0.002)
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    written = _after(home, webui, proc.returncode, took, err, seen)
    _finish(home, webui, written)


def test_ctrl_c_while_waiting_for_a_state_db_another_process_locks(
    home: Path, tmp_path: Path, lock_holder: Any
) -> None:
    """hermes' own retry loop waits ~18 s for a locked state.db: Ctrl-C still ends it within 2 s."""
    webui = tmp_path / "webui"
    (webui / "sessions").mkdir(parents=True)
    for n in range(10):
        write_chat(webui / "sessions", f"{n + 1:012x}", title=f"Chat {n}")
    lock_holder(home / "state.db", 60.0)
    started = time.monotonic()
    code, took, err, seen = _interrupt(home, webui, ["backfill"], lambda pid: time.monotonic() - started > 2.0)
    assert (code, "Traceback" in err) == (130, False), err
    assert took < 2.0, f"exit took {took:.2f} s"
    assert err.strip().count("\n") == 0 and "nothing is half written" in err
    assert _rows(home / "state.db") == 0
