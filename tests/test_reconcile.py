"""The reconcile sweep: chats whose WebUI totals are ahead of state.db are re-mirrored."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import read_row, tamper

from webui_insights.backfill import backfill
from webui_insights.demo_host import DemoSession
from webui_insights.reconcile import ReconcileResult, ReconcileSweep, reconcile
from webui_insights.webui_files import scan_sessions


def _chat(webui_dir: Path, tokens: int = 100, title: str = "Chat") -> DemoSession:
    chat = DemoSession(webui_dir, title=title)
    chat.add_turn("q", "a", input_tokens=tokens, output_tokens=tokens // 10)
    chat.save()
    return chat


def test_a_lost_update_and_a_missing_row_are_re_mirrored(webui_dir: Path, hermes_home: Path) -> None:
    behind, in_sync, missing = _chat(webui_dir, 100, "A"), _chat(webui_dir, 200, "B"), _chat(webui_dir, 300, "C")
    backfill(scan_sessions(webui_dir / "sessions"))
    db = hermes_home / "state.db"
    tamper(db, "DELETE FROM sessions WHERE id = ?", missing.session_id)
    behind.add_turn("q2", "a2", input_tokens=50, output_tokens=5)  # saved, but the writer dropped it
    behind.save()

    result = reconcile(webui_dir / "sessions")

    assert (result.checked, result.ahead, result.written, result.errors) == (3, 2, 2, [])
    assert read_row(db, behind.session_id)["input_tokens"] == 150  # type: ignore[index]
    assert read_row(db, missing.session_id) is not None
    assert read_row(db, in_sync.session_id)["input_tokens"] == 200  # type: ignore[index]


def test_a_row_ahead_of_the_file_is_never_lowered(webui_dir: Path, hermes_home: Path) -> None:
    chat = _chat(webui_dir, 100)
    backfill(scan_sessions(webui_dir / "sessions"))
    tamper(hermes_home / "state.db", "UPDATE sessions SET input_tokens = 999 WHERE id = ?", chat.session_id)
    assert reconcile(webui_dir / "sessions").ahead == 0
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 999  # type: ignore[index]


def test_a_profile_without_state_db_is_an_error_entry_not_a_crash(webui_dir: Path, hermes_home: Path) -> None:
    chat = DemoSession(webui_dir, profile="ghost", title="x")
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    result = reconcile(webui_dir / "sessions")
    assert result.written == 0 and "ghost" in result.errors[0][0]
    assert not (hermes_home / "profiles" / "ghost" / "state.db").exists()


def _recording_pass(calls: list[float], done: threading.Event, after: int = 1):
    def run_pass(sessions_dir, **kwargs) -> ReconcileResult:
        calls.append(time.monotonic())
        if len(calls) >= after:
            done.set()
        return ReconcileResult()

    return run_pass


def test_sweep_runs_soon_after_start_then_every_interval(hermes_home: Path) -> None:
    calls: list[float] = []
    done = threading.Event()
    sweep = ReconcileSweep(0.05, enabled=lambda: True, first_delay_s=0.01, run_pass=_recording_pass(calls, done, 3))
    assert sweep.start() is True
    assert sweep.start() is False  # idempotent: one thread
    try:
        assert done.wait(5)
    finally:
        assert sweep.stop(timeout=2)
    assert len(calls) >= 3 and sweep.passes >= 3
    names = [t.name for t in threading.enumerate()]
    assert "webui-insights-reconcile" not in names


def test_sweep_does_nothing_while_mirroring_is_off(hermes_home: Path) -> None:
    calls: list[float] = []
    sweep = ReconcileSweep(
        0.01, enabled=lambda: False, first_delay_s=0.0, run_pass=_recording_pass(calls, threading.Event())
    )
    sweep.start()
    time.sleep(0.1)
    assert sweep.stop(timeout=2)
    assert calls == []


def test_interval_zero_turns_the_sweep_off(hermes_home: Path) -> None:
    sweep = ReconcileSweep(0, enabled=lambda: True)
    assert sweep.start() is False and not sweep.running


def test_stop_is_bounded_even_during_a_slow_pass(hermes_home: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_pass(sessions_dir, **kwargs) -> ReconcileResult:
        entered.set()
        release.wait(10)
        return ReconcileResult()

    sweep = ReconcileSweep(60, enabled=lambda: True, first_delay_s=0.0, run_pass=slow_pass)
    sweep.start()
    assert entered.wait(5)
    started = time.monotonic()
    assert sweep.stop(timeout=0.2) is False  # still in its pass: we did not wait for it
    assert time.monotonic() - started < 1.0
    release.set()


def test_first_pass_waits_for_the_delay(hermes_home: Path) -> None:
    calls: list[float] = []
    sweep = ReconcileSweep(
        60, enabled=lambda: True, first_delay_s=30, run_pass=_recording_pass(calls, threading.Event())
    )
    sweep.start()
    time.sleep(0.1)
    assert sweep.stop(timeout=2)
    assert calls == []  # nothing at start-up: the host's start is not slowed


@pytest.mark.swallowed_errors_expected
def test_a_bug_in_a_pass_is_reported_and_the_sweep_survives(hermes_home: Path, fail_on_swallowed_errors) -> None:
    calls: list[int] = []
    done = threading.Event()

    def buggy(sessions_dir, **kwargs) -> ReconcileResult:
        calls.append(1)
        if len(calls) >= 2:
            done.set()
        raise KeyError("bug")

    sweep = ReconcileSweep(0.01, enabled=lambda: True, first_delay_s=0.0, run_pass=buggy)
    sweep.start()
    try:
        assert done.wait(5)
    finally:
        sweep.stop(timeout=2)
    assert fail_on_swallowed_errors and fail_on_swallowed_errors[0][0] == "reconcile"


def test_sweep_end_to_end_repairs_state_db(webui_dir: Path, hermes_home: Path) -> None:
    chat = _chat(webui_dir, 100)
    sweep = ReconcileSweep(60, enabled=lambda: True, first_delay_s=0.0, sessions_dir=webui_dir / "sessions")
    sweep.start()
    deadline = time.monotonic() + 10
    while sweep.last_result is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sweep.stop(timeout=5)
    assert sweep.last_result is not None and sweep.last_result.written == 1
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 100  # type: ignore[index]
