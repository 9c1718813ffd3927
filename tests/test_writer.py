"""The background writer: never blocks the save, coalesces, orders, retries, survives exit and fork."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import make_session, read_row, save_turn

import webui_insights
from webui_insights import installer
from webui_insights.demo_host import TARGET, DemoSession
from webui_insights.diagnostics import RateLimitedLog, Stats
from webui_insights.snapshot import UsageSnapshot
from webui_insights.writer import THREAD_NAME, Writer, WriterConfig


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def _writer(home: Path, **config: float) -> Writer:
    settings = {"debounce_s": 0.01, "retry_base_s": 0.01, "retry_cap_s": 0.05, **config}
    return Writer(Stats(), RateLimitedLog(), WriterConfig(**settings), resolve=lambda profile: home / "state.db")  # type: ignore[arg-type]


def test_save_returns_while_another_process_holds_the_lock_and_totals_land_after(
    mirror, webui_dir: Path, hermes_home: Path, lock_holder
) -> None:
    holder = lock_holder(hermes_home / "state.db")
    chats = [make_session(webui_dir) for _ in range(5)]
    for _ in range(4):
        for chat in chats:
            chat.add_turn("q", "a", input_tokens=10, output_tokens=1)
            chat.save()
    assert holder.holding  # every save above returned while the lock was held
    assert webui_insights.flush(0.2) is False
    # Each attempt spends SQLite's own 1 s busy wait, then backs off and retries.
    assert _wait_for(lambda: webui_insights.stats()["retried"] >= 2, timeout=20)
    assert all(read_row(hermes_home / "state.db", c.session_id) is None for c in chats)
    holder.release()
    assert webui_insights.flush(10)
    for chat in chats:
        assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 40  # type: ignore[index]


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


def test_an_older_snapshot_never_overwrites_a_newer_one(hermes_home: Path) -> None:
    writer = _writer(hermes_home)
    newer = UsageSnapshot(session_id="abcabcabcabc", input_tokens=500, seq=20)
    older = UsageSnapshot(session_id="abcabcabcabc", input_tokens=100, seq=10)
    writer.submit(newer)
    writer.submit(older)  # queued after, read before: must lose
    assert writer.flush(5)
    assert read_row(hermes_home / "state.db", "abcabcabcabc")["input_tokens"] == 500  # type: ignore[index]
    writer.submit(UsageSnapshot(session_id="abcabcabcabc", input_tokens=50, seq=15))
    assert writer.flush(5)
    assert read_row(hermes_home / "state.db", "abcabcabcabc")["input_tokens"] == 500  # type: ignore[index]
    assert writer._stats.as_dict()["skipped"]["stale"] == 1
    writer.shutdown(1)


def test_totals_only_move_forward_even_across_writers(hermes_home: Path) -> None:
    first, second = _writer(hermes_home), _writer(hermes_home)
    first.submit(UsageSnapshot(session_id="aaaaaaaaaaaa", input_tokens=900, output_tokens=9, seq=2))
    assert first.flush(5)
    second.submit(UsageSnapshot(session_id="aaaaaaaaaaaa", input_tokens=100, output_tokens=1, seq=1))
    assert second.flush(5)
    row = read_row(hermes_home / "state.db", "aaaaaaaaaaaa")
    assert (row["input_tokens"], row["output_tokens"]) == (900, 9)  # type: ignore[index]
    first.shutdown(1)
    second.shutdown(1)


def test_flush_honours_its_timeout_while_the_database_is_locked(
    mirror, webui_dir: Path, hermes_home: Path, lock_holder
) -> None:
    lock_holder(hermes_home / "state.db")
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    started = time.monotonic()
    assert webui_insights.flush(0.5) is False
    # Generous bound: the point is that flush returns, not how fast.
    assert time.monotonic() - started < 5.0
    assert webui_insights.stats()["pending"] == 1


def test_queue_cap_drops_the_oldest_and_counts_it(hermes_home: Path, lock_holder) -> None:
    holder = lock_holder(hermes_home / "state.db")
    writer = _writer(hermes_home, max_pending=3)
    forgotten: list[object] = []
    writer._on_dropped = forgotten.append
    for n in range(5):
        writer.submit(UsageSnapshot(session_id=f"{n:012x}", input_tokens=n + 1))
    stats = writer._stats.as_dict(writer.pending_count())
    assert stats["dropped"]["queue_full"] == 2
    assert forgotten == [(None, f"{0:012x}"), (None, f"{1:012x}")]
    holder.release()
    assert writer.flush(10)
    assert read_row(hermes_home / "state.db", f"{0:012x}") is None
    assert read_row(hermes_home / "state.db", f"{4:012x}") is not None
    writer.shutdown(1)


def test_many_sessions_share_few_transactions(hermes_home: Path) -> None:
    writer = _writer(hermes_home, debounce_s=0.3)
    for n in range(200):
        writer.submit(UsageSnapshot(session_id=f"{n:012x}", input_tokens=n + 1, title=f"chat {n % 7}"))
    assert writer.flush(10)
    stats = writer._stats.as_dict()
    assert stats["rows_written"] == 200
    assert stats["transactions"] <= 10
    writer.shutdown(1)


def test_one_handle_per_database_is_reused_and_closed_when_idle(hermes_home: Path, mocker) -> None:
    opened = mocker.spy(Writer, "_handle_for")
    writer = _writer(hermes_home, idle_close_s=0.2)
    for n in range(3):
        writer.submit(UsageSnapshot(session_id="abcdefabcdef", input_tokens=n + 1))
        assert writer.flush(5)
    assert opened.call_count == 3
    assert len(writer._handles) == 1
    deadline = time.monotonic() + 5
    while writer._handles and time.monotonic() < deadline:
        writer._wake.set()
        time.sleep(0.05)
    assert not writer._handles
    writer.shutdown(1)


def test_writer_thread_starts_lazily_with_its_name(hermes_home: Path, webui_dir: Path, fast_writer) -> None:
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
    mirror, webui_dir: Path, hermes_home: Path, mocker
) -> None:
    mocker.patch.object(
        threading.Thread, "start", side_effect=RuntimeError("can't create new thread at interpreter shutdown")
    )
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    assert chat.save() is None
    assert chat.path.exists()
    stats = webui_insights.stats()
    assert stats["dropped"]["thread_start_failed"] == 1
    assert stats["pending"] == 0
    mocker.stopall()
    chat.save()  # the gate forgot the lost update: the next save queues it again
    assert webui_insights.flush(5)
    assert read_row(hermes_home / "state.db", chat.session_id) is not None


def test_deleted_then_recreated_state_db_gets_the_next_update(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir)
    save_turn(chat, 1, 1)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (hermes_home / name).unlink(missing_ok=True)
    save_turn(chat, 1, 1)
    assert not (hermes_home / "state.db").exists()
    from webui_insights.sink import create_state_db

    create_state_db(hermes_home / "state.db")
    save_turn(chat, 1, 1)
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 3  # type: ignore[index]


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


def test_first_save_right_before_exit_without_hermes_loaded_is_reported_not_silent(hermes_home: Path) -> None:
    script = _child_script(
        """
        webui_insights.install(target=TARGET, enabled=True)
        chat = DemoSession(os.environ["HERMES_WEBUI_STATE_DIR"], session_id="e2e2e2e2e2e2")
        chat.add_turn("q", "a", input_tokens=5, output_tokens=1)
        chat.save()
        """
    ).replace("import hermes_state  #", "#")
    done, _ = _run_child(script, hermes_home)
    assert done.returncode == 0, done.stderr
    if read_row(hermes_home / "state.db", "e2e2e2e2e2e2") is None:
        assert "nothing mirrored for 1 chat(s)" in done.stderr, done.stderr


@pytest.mark.slow
def test_exit_while_another_process_holds_the_lock_ends_within_the_budget(hermes_home: Path, lock_holder) -> None:
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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_mirrors_its_own_sessions_only(mirror, webui_dir: Path, hermes_home: Path) -> None:
    parent_chat = make_session(webui_dir)
    save_turn(parent_chat, 11, 1)
    pending_chat = make_session(webui_dir)
    pending_chat.add_turn("q", "a", input_tokens=22, output_tokens=2)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_fd)
            child_chat = DemoSession(webui_dir)
            child_chat.add_turn("q", "a", input_tokens=33, output_tokens=3)
            child_chat.save()
            ok = webui_insights.flush(10)
            os.write(write_fd, f"{child_chat.session_id} {ok} {webui_insights.stats()['pending']}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    message = os.read(read_fd, 1024).decode().split()
    os.close(read_fd)
    assert status == 0 and message[1] == "True", message
    assert read_row(hermes_home / "state.db", message[0])["input_tokens"] == 33  # type: ignore[index]
    # The parent still works after its child exited, with its own handle.
    pending_chat.save()
    assert webui_insights.flush(5)
    assert read_row(hermes_home / "state.db", pending_chat.session_id)["input_tokens"] == 22  # type: ignore[index]


def test_reinstalling_with_a_new_writer_still_lands_the_old_writers_work(hermes_home: Path, webui_dir: Path) -> None:
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(debounce_s=1.0))
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=5, output_tokens=1)
    chat.save()
    installer.uninstall()
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(debounce_s=0.01))
    assert webui_insights.flush(5)
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 5  # type: ignore[index]


def test_lone_surrogates_in_text_fields_are_replaced_like_hermes_does(
    mirror, webui_dir: Path, hermes_home: Path
) -> None:
    odd = make_session(webui_dir, title="scraped \udc15 title", model="m\udc15")
    odd.add_turn("q", "a", input_tokens=5, output_tokens=1)
    odd.save()
    good = make_session(webui_dir, title="fine")
    save_turn(good, 7, 1)
    row = read_row(hermes_home / "state.db", odd.session_id)
    assert row is not None and (row["title"], row["model"]) == ("scraped \ufffd title", "m\ufffd")
    assert read_row(hermes_home / "state.db", good.session_id)["input_tokens"] == 7  # type: ignore[index]


def test_the_sink_refuses_one_unbindable_row_and_writes_the_rest(hermes_home: Path) -> None:
    from webui_insights.sink import StateDB

    db = StateDB(hermes_home / "state.db")
    try:
        unvalidated = UsageSnapshot("aaaaaaaaaaa1", model="m\udc15", input_tokens=1)  # bypasses validation
        result = db.write([unvalidated, UsageSnapshot("aaaaaaaaaaa2", input_tokens=2)])
    finally:
        db.close()
    assert [why for _, why in result.title_rejected] == ["value refused by SQLite (UnicodeEncodeError)"]
    assert read_row(hermes_home / "state.db", "aaaaaaaaaaa2")["input_tokens"] == 2  # type: ignore[index]
