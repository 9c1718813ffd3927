"""The reconcile sweep: lost updates become late ones, once per process group, never on the save path."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.checks import wait_for
from support.db import read_row, tamper
from support.forks import in_forked_child

import webui_insights
from webui_insights import sweep as sweep_module
from webui_insights.commands.reconcile import ReconcileResult, reconcile_pass
from webui_insights.demo_host import TARGET, DemoSession
from webui_insights.profiles import Homes
from webui_insights.sweep import ReconcileSweep, SweepLeader
from webui_insights.writer import WriterConfig

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _chat(webui_dir: Path, tokens: int = 100, title: str = "Chat") -> DemoSession:
    chat = DemoSession(webui_dir, title=title)
    chat.add_turn("q", "a", input_tokens=tokens, output_tokens=tokens // 10)
    chat.save()
    return chat


def _sweep(hermes_home: Path, interval: float = 60, **kwargs: Any) -> ReconcileSweep:
    kwargs.setdefault("enabled", lambda: True)
    kwargs.setdefault("sessions_dir", hermes_home / "webui" / "sessions")
    return ReconcileSweep(interval, homes=Homes(hermes_home), **kwargs)


# ------------------------------------------------------------------ one pass


def test_a_lost_update_and_a_never_mirrored_chat_are_repaired(webui_dir: Path, hermes_home: Path) -> None:
    homes, sessions = Homes(hermes_home), webui_dir / "sessions"
    behind, in_sync = _chat(webui_dir, 100, "A"), _chat(webui_dir, 200, "B")
    reconcile_pass(homes, sessions)
    never = _chat(webui_dir, 300, "C")
    behind.add_turn("q2", "a2", input_tokens=50, output_tokens=5)  # saved, but the writer lost it
    behind.save()

    result = reconcile_pass(homes, sessions)

    db = hermes_home / "state.db"
    assert (result.checked, result.repaired, result.errors) == (3, 2, [])
    assert read_row(db, behind.session_id)["input_tokens"] == 150  # type: ignore[index]
    assert read_row(db, never.session_id) is not None
    assert read_row(db, in_sync.session_id)["input_tokens"] == 200  # type: ignore[index]


def test_a_row_deleted_in_hermes_stays_deleted(webui_dir: Path, hermes_home: Path) -> None:
    chat = _chat(webui_dir, 100)
    reconcile_pass(Homes(hermes_home), webui_dir / "sessions")
    tamper(hermes_home / "state.db", "DELETE FROM sessions WHERE id = ?", chat.session_id)
    assert reconcile_pass(Homes(hermes_home), webui_dir / "sessions").repaired == 0
    assert read_row(hermes_home / "state.db", chat.session_id) is None


def test_a_profile_without_state_db_is_an_error_entry_not_a_crash(webui_dir: Path, hermes_home: Path) -> None:
    chat = DemoSession(webui_dir, profile="ghost", title="x")
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    result = reconcile_pass(Homes(hermes_home), webui_dir / "sessions")
    assert result.repaired == 0 and "ghost" in result.errors[0][0]
    assert not (hermes_home / "profiles" / "ghost" / "state.db").exists()


def test_the_pass_uses_sqlite_only_inside_fork_safe_sections(
    webui_dir: Path, hermes_home: Path, sqlite_sections: list[int]
) -> None:
    _chat(webui_dir, 10)
    assert reconcile_pass(Homes(hermes_home), webui_dir / "sessions").repaired == 1
    assert len(sqlite_sections) >= 3  # open, the write transaction, close


# ----------------------------------------------------------------- the thread


def _recording_pass(calls: list[float], done: threading.Event, after: int = 1) -> Callable[..., ReconcileResult]:
    def run_pass(homes: Homes, sessions_dir: Path, **kwargs: Any) -> ReconcileResult:
        calls.append(time.monotonic())
        if len(calls) >= after:
            done.set()
        return ReconcileResult()

    return run_pass


def test_sweep_runs_soon_after_start_then_every_interval(hermes_home: Path) -> None:
    calls: list[float] = []
    done = threading.Event()
    sweep = _sweep(hermes_home, 0.05, first_delay_s=0.01, run_pass=_recording_pass(calls, done, 3))
    assert sweep.start() is True
    assert sweep.start() is False  # idempotent: one thread
    try:
        assert done.wait(5)
    finally:
        assert sweep.stop(timeout=2)
    assert len(calls) >= 3 and sweep.passes >= 3
    assert "webui-insights-reconcile" not in [t.name for t in threading.enumerate()]
    assert sweep.describe()["leader"] is False  # released on stop


def test_sweep_does_nothing_while_mirroring_is_off(hermes_home: Path) -> None:
    calls: list[float] = []
    sweep = _sweep(
        hermes_home, 0.01, enabled=lambda: False, first_delay_s=0.0, run_pass=_recording_pass(calls, threading.Event())
    )
    sweep.start()
    time.sleep(0.1)
    assert sweep.stop(timeout=2)
    assert calls == []


def test_interval_zero_turns_the_sweep_off(hermes_home: Path) -> None:
    sweep = _sweep(hermes_home, 0)
    assert sweep.start() is False and not sweep.running


def test_stop_is_bounded_even_during_a_slow_pass(hermes_home: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_pass(homes: Homes, sessions_dir: Path, **kwargs: Any) -> ReconcileResult:
        entered.set()
        release.wait(10)
        return ReconcileResult()

    sweep = _sweep(hermes_home, 60, first_delay_s=0.0, run_pass=slow_pass)
    sweep.start()
    assert entered.wait(5)
    started = time.monotonic()
    assert sweep.stop(timeout=0.2) is False  # still in its pass: we did not wait for it
    assert time.monotonic() - started < 1.0
    release.set()


def test_first_pass_waits_for_the_delay(hermes_home: Path) -> None:
    calls: list[float] = []
    sweep = _sweep(hermes_home, 60, first_delay_s=30, run_pass=_recording_pass(calls, threading.Event()))
    sweep.start()
    time.sleep(0.1)
    assert sweep.stop(timeout=2)
    assert calls == []  # nothing at start-up: the host's start is not slowed


@pytest.mark.swallowed_errors_expected
def test_a_bug_in_a_pass_is_reported_and_the_sweep_survives(
    hermes_home: Path, fail_on_swallowed_errors: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    done = threading.Event()

    def buggy(homes: Homes, sessions_dir: Path, **kwargs: Any) -> ReconcileResult:
        calls.append(1)
        if len(calls) >= 2:
            done.set()
        raise KeyError("bug")

    sweep = _sweep(hermes_home, 0.01, first_delay_s=0.0, run_pass=buggy)
    sweep.start()
    try:
        assert done.wait(5)
    finally:
        sweep.stop(timeout=2)
    assert fail_on_swallowed_errors and fail_on_swallowed_errors[0][0] == "reconcile"
    assert "internal error in reconcile: KeyError: 'bug'" in caplog.text


def test_an_unreachable_state_db_is_logged_with_why(
    webui_dir: Path, hermes_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chat = DemoSession(webui_dir, profile="ghost", title="x")
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    sweep = _sweep(hermes_home)
    result = sweep.run_once()
    assert result is not None and result.errors
    assert "reconcile skipped" in caplog.text and "ghost" in caplog.text


def test_sweep_end_to_end_repairs_state_db(webui_dir: Path, hermes_home: Path) -> None:
    chat = _chat(webui_dir, 100)
    sweep = _sweep(hermes_home, 60, first_delay_s=0.0)
    sweep.start()
    try:
        assert wait_for(lambda: sweep.last_result is not None, timeout=10)
    finally:
        assert sweep.stop(timeout=5)
    assert sweep.last_result is not None and sweep.last_result.repaired == 1
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 100  # type: ignore[index]


# --------------------------------------------------------------- one leader


def test_one_leader_per_sessions_folder(tmp_path: Path) -> None:
    first, second = SweepLeader(tmp_path / "a"), SweepLeader(tmp_path / "a")
    other = SweepLeader(tmp_path / "b")
    try:
        assert first.acquire() is True
        assert first.acquire() is True  # already
        assert second.acquire() is False
        assert other.acquire() is True  # another folder, another leader
        first.release()
        assert second.acquire() is True
    finally:
        for leader in (first, second, other):
            leader.release()


@needs_fork
def test_a_leader_that_exits_hands_over(tmp_path: Path) -> None:
    def lead_and_exit() -> bool:
        return SweepLeader(tmp_path / "s").acquire()  # the child leads, then exits without releasing

    assert in_forked_child(lead_and_exit) is True
    leader = SweepLeader(tmp_path / "s")
    try:
        assert leader.acquire() is True
    finally:
        leader.release()


@needs_fork
def test_a_forked_child_neither_leads_nor_keeps_the_parents_lock(tmp_path: Path) -> None:
    leader = SweepLeader(tmp_path / "s")
    assert leader.acquire() is True
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            child_leads = leader.acquire()
            os.write(ready_w, b"1" if child_leads else b"0")
            os.read(done_r, 1)  # alive (with whatever it inherited) until the parent is done
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        assert os.read(ready_r, 1) == b"0"  # the parent leads; the child does not
        leader.release()
        successor = SweepLeader(tmp_path / "s")
        try:
            assert successor.acquire() is True  # the child's inherited descriptor does not hold the lock
        finally:
            successor.release()
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


@needs_fork
@pytest.mark.slow
@pytest.mark.parametrize("master_installs", [False, True], ids=["workers-install", "master-preloads"])
def test_a_pre_fork_server_sweeps_once_per_interval_in_one_worker(
    master_installs: bool, hermes_home: Path, webui_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes_file = tmp_path / "passes.log"
    real_pass = reconcile_pass

    def counting_pass(*args: Any, **kwargs: Any) -> ReconcileResult:
        with open(passes_file, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {time.time()}\n")
        return real_pass(*args, **kwargs)

    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "1")
    monkeypatch.setattr(sweep_module, "reconcile_pass", counting_pass)
    monkeypatch.setattr(sweep_module, "DEFAULT_FIRST_DELAY_S", 0.2)
    interval, run_for = 1.0, 3.6
    options: dict[str, Any] = {"target": TARGET, "reconcile_interval": interval, "writer_config": WriterConfig(0.01)}
    if master_installs:
        webui_insights.install(**options)  # gunicorn --preload: the app (and install()) loaded before the fork

    def worker() -> dict[str, Any]:
        webui_insights.install(**options)  # each worker's app start (a no-op after a preload)
        chat = DemoSession(webui_dir)
        deadline = time.monotonic() + run_for
        while time.monotonic() < deadline:
            chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
            chat.save()
            time.sleep(0.2)
        return {"flushed": webui_insights.flush(10), "sid": chat.session_id}

    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(in_forked_child(worker, timeout=60))) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    elapsed = time.monotonic() - started
    assert len(results) == 4 and all(r["flushed"] for r in results)
    passes = passes_file.read_text().split("\n")[:-1] if passes_file.exists() else []
    pids = {line.split()[0] for line in passes}
    assert len(pids) == 1, passes  # one worker sweeps the folder
    assert 1 <= len(passes) <= int(elapsed / interval) + 1, (passes, elapsed)
    for r in results:
        assert read_row(hermes_home / "state.db", r["sid"]) is not None
