"""verify: drift between the WebUI's files and state.db is found, listed and repaired."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import read_row, tamper

from webui_insights.backfill import backfill
from webui_insights.cli import main
from webui_insights.demo_host import DemoSession
from webui_insights.snapshot import build_snapshot
from webui_insights.verify import compare, verify
from webui_insights.webui_files import scan_sessions


def _chat(webui_dir: Path, title: str = "Chat", tokens: int = 100) -> DemoSession:
    chat = DemoSession(webui_dir, title=title, created_at=time.time() - 3600)
    chat.add_turn("q", "a", input_tokens=tokens, output_tokens=7, cost=0.25)
    chat.save()
    return chat


@pytest.fixture
def mirrored(webui_dir: Path, hermes_home: Path) -> list[DemoSession]:
    chats = [_chat(webui_dir, title=f"Chat {i}", tokens=100 + i) for i in range(3)]
    assert backfill(scan_sessions(webui_dir / "sessions")).written == 3
    return chats


def test_in_sync_chats_verify_clean(mirrored: list[DemoSession], capsys) -> None:
    assert main(["verify"]) == 0
    assert "3 chats checked, 0 differ" in capsys.readouterr().out


def test_a_row_changed_behind_its_back_is_reported_and_fix_repairs_it(
    mirrored: list[DemoSession], hermes_home: Path, capsys
) -> None:
    db = hermes_home / "state.db"
    victim = mirrored[1]
    tamper(
        db,
        "UPDATE sessions SET input_tokens = 5, estimated_cost_usd = 9.5, message_count = 40 WHERE id = ?",
        victim.session_id,
    )

    assert main(["verify"]) == 1
    out = capsys.readouterr().out
    assert f"{victim.session_id}: input_tokens webui=101 state.db=5" in out
    assert "estimated_cost_usd webui=0.25 state.db=9.5" in out
    assert "message_count webui=2 state.db=40" in out
    assert "1 differ" in out

    assert main(["verify", "--fix"]) == 0  # exact: lowers too, unlike the forward-only mirror
    assert "1 fixed" in capsys.readouterr().out
    row = read_row(db, victim.session_id)
    assert row is not None
    assert (row["input_tokens"], row["message_count"], row["estimated_cost_usd"]) == (101, 2, pytest.approx(0.25))
    assert main(["verify"]) == 0


def test_a_missing_row_and_a_lost_title_are_drift(mirrored: list[DemoSession], hermes_home: Path) -> None:
    db = hermes_home / "state.db"
    tamper(db, "DELETE FROM sessions WHERE id = ?", mirrored[0].session_id)
    tamper(db, "UPDATE sessions SET title = NULL WHERE id = ?", mirrored[2].session_id)
    report = verify(scan_sessions(hermes_home / "webui" / "sessions").snapshots)
    fields = {snap.session_id: [d.field for d in drift] for snap, drift in report.drifted}
    assert fields == {mirrored[0].session_id: ["row"], mirrored[2].session_id: ["title"]}

    fixed = verify(scan_sessions(hermes_home / "webui" / "sessions").snapshots, fix=True)
    assert (fixed.fixed, fixed.drifted) == (2, [])
    assert read_row(db, mirrored[2].session_id)["title"] == "Chat 2"  # type: ignore[index]


def test_a_rename_in_the_hermes_cli_is_not_drift(mirrored: list[DemoSession], hermes_home: Path) -> None:
    tamper(hermes_home / "state.db", "UPDATE sessions SET title = 'Renamed by me' WHERE id = ?", mirrored[0].session_id)
    assert verify(scan_sessions(hermes_home / "webui" / "sessions").snapshots).drifted == []


def test_a_rename_in_the_webui_that_did_not_arrive_is_drift(mirrored: list[DemoSession], hermes_home: Path) -> None:
    chat = mirrored[0]
    chat.title = "New name"
    chat.save()
    snap = next(
        s for s in scan_sessions(hermes_home / "webui" / "sessions").snapshots if s.session_id == chat.session_id
    )
    report = verify([snap], fix=True)
    assert report.fixed == 1
    assert read_row(hermes_home / "state.db", chat.session_id)["title"] == "New name"  # type: ignore[index]


def test_compare_ignores_a_cost_the_webui_does_not_track(mirrored: list[DemoSession]) -> None:
    snap = scan_sessions(mirrored[0].path.parent).snapshots[0]
    row = {
        "input_tokens": snap.input_tokens,
        "output_tokens": 7,
        "message_count": 2,
        "estimated_cost_usd": 3.0,
        "title": snap.title,
    }
    no_cost = build_snapshot(
        snap.session_id, title=snap.title, input_tokens=snap.input_tokens, output_tokens=7, message_count=2
    )
    assert compare(no_cost, row) == []
    assert [d.field for d in compare(snap, row)] == ["estimated_cost_usd"]


def test_verify_reports_a_profile_without_state_db(webui_dir: Path, hermes_home: Path, capsys) -> None:
    chat = DemoSession(webui_dir, profile="ghost", title="Lost")
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    assert main(["verify"]) == 1
    assert "no state.db" in capsys.readouterr().out
