"""backfill and verify: chats land once, on the right day, per profile; drift is every field; numbers add up.

Against the real ``hermes_state.SessionDB`` and the real ``hermes insights``;
mocks only where a fault is injected.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import hermes_state
import pytest
from support.checks import same_time
from support.db import count_rows, read_row, tamper
from support.messy_home import MessyHome, make_messy_home, write_chat
from support.run_hermes import run_insights

from webui_insights.cli import EXIT_ATTENTION, EXIT_OK, main
from webui_insights.commands import batch
from webui_insights.commands.backfill import BackfillReport, backfill
from webui_insights.commands.verify import verify
from webui_insights.demo_host import DemoSession
from webui_insights.engine import batch as engine_batch
from webui_insights.engine.store import create_state_db, open_read_only
from webui_insights.profiles import Homes
from webui_insights.sources import SessionFiles, scan_sessions, scanning

DAY = 86_400.0


def _chat(
    webui_dir: Path, *, days_ago: float = 1.0, title: str = "Chat", tokens: int = 100, **kwargs: Any
) -> DemoSession:
    chat = DemoSession(webui_dir, title=title, created_at=time.time() - days_ago * DAY, **kwargs)
    chat.add_turn("q", "a", input_tokens=tokens, output_tokens=tokens // 10, cost=0.01)
    chat.save()
    return chat


def _sessions(report: str) -> int:
    match = re.search(r"Sessions:\s+([\d,]+)", report)
    return int(match.group(1).replace(",", "")) if match else 0


def _backfill(home: Path, **kwargs: Any) -> BackfillReport:
    return backfill(SessionFiles(home / "webui" / "sessions"), Homes(home), **kwargs)


def adds_up(report: Any) -> None:
    """Every file counted once, every chat once, and each state.db's outcomes are its chats."""
    unread = getattr(report, "unread", 0)
    assert report.files == report.chats + report.blank + report.filtered + len(report.unreadable) + unread
    assert report.chats == len(report.refused) + sum(d.chats for d in report.databases)
    for database in report.databases:
        assert sum(database.outcomes.values()) == database.chats, database.as_dict()


# ------------------------------------------------------------- backfill


def test_real_insights_counts_backfilled_chats_on_the_day_they_happened(webui_dir: Path, hermes_home: Path) -> None:
    ages = [0.1, 3, 12, 29, 45, 90, 200, 300]
    chats = [_chat(webui_dir, days_ago=age, title=f"Chat {i}") for i, age in enumerate(ages)]
    (webui_dir / "sessions" / "aaaaaaaaaaaa.json").write_text('{"session_id": "aaaa')  # corrupt: skipped

    report = _backfill(hermes_home)

    assert report.written == len(chats) and [(n, k) for n, k, _ in report.unreadable] == [
        ("aaaaaaaaaaaa.json", "not_json")
    ]
    assert _sessions(run_insights(hermes_home, days=365)) == len(chats)
    assert _sessions(run_insights(hermes_home, days=30)) == sum(age < 30 for age in ages)
    row = read_row(hermes_home / "state.db", chats[-1].session_id)
    assert row is not None and row["started_at"] == same_time(chats[-1].created_at)


def test_a_second_run_changes_nothing(webui_dir: Path, hermes_home: Path) -> None:
    chats = [_chat(webui_dir, title="Same title") for _ in range(3)]
    _backfill(hermes_home)
    db = hermes_home / "state.db"
    before = {c.session_id: read_row(db, c.session_id) for c in chats}

    again = _backfill(hermes_home)

    assert (again.written, again.outcomes["unchanged"]) == (0, 3)
    assert sum(d.transactions for d in again.databases) <= 1  # at most one, writing no row
    assert {c.session_id: read_row(db, c.session_id) for c in chats} == before
    assert sorted(r["title"] for r in before.values() if r) == [
        "Same title",
        "Same title (WebUI 2)",
        "Same title (WebUI)",
    ]


def test_a_chat_that_grew_since_the_last_run_is_updated(webui_dir: Path, hermes_home: Path) -> None:
    chat = _chat(webui_dir, tokens=100)
    _backfill(hermes_home)
    chat.add_turn("q2", "a2", input_tokens=50, output_tokens=5)
    chat.save()
    report = _backfill(hermes_home)
    row = read_row(hermes_home / "state.db", chat.session_id)
    assert (report.outcomes["updated"], report.written) == (1, 1)
    assert row is not None and (row["input_tokens"], row["message_count"]) == (150, 4)


@pytest.mark.parametrize("failure", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_an_interrupted_run_resumes_where_it_stopped(
    webui_dir: Path, hermes_home: Path, mocker: Any, failure: BaseException
) -> None:
    chats = [_chat(webui_dir, title=f"Chat {i}", tokens=100 + i) for i in range(25)]
    real_sync = engine_batch.sync
    calls = {"n": 0}

    def sync_then_fail(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise failure
        return real_sync(*args, **kwargs)

    mocker.patch.object(engine_batch, "sync", sync_then_fail)
    db = hermes_home / "state.db"
    if isinstance(failure, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt) as stopped:
            _backfill(hermes_home, chunk=5)
        report = stopped.value.report  # type: ignore[attr-defined]
        assert report.interrupted and not report.complete
    else:
        report = _backfill(hermes_home, chunk=5)
        (database,) = report.databases
        assert database.status == "error" and "disk on fire" in (database.problem or "")
        assert not report.complete
    assert (report.written, report.outcomes["not_done"]) == (10, 15)  # two chunks committed before the failure
    adds_up(report)
    assert count_rows(db) == 10
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)

    mocker.stopall()
    resumed = _backfill(hermes_home, chunk=5)

    assert (resumed.outcomes["created"], resumed.outcomes["unchanged"]) == (15, 10)
    assert count_rows(db) == 25
    assert all(read_row(db, c.session_id)["input_tokens"] == c.input_tokens for c in chats)  # type: ignore[index]


def test_dry_run_writes_nothing(webui_dir: Path, hermes_home: Path) -> None:
    _chat(webui_dir)
    mtime = (hermes_home / "state.db").stat().st_mtime_ns
    report = _backfill(hermes_home, dry_run=True)
    assert (report.outcomes["created"], report.written) == (1, 1)  # written: what it would write
    assert count_rows(hermes_home / "state.db") == 0
    assert (hermes_home / "state.db").stat().st_mtime_ns == mtime


def test_each_chat_goes_to_its_own_profile_and_a_missing_state_db_is_only_reported(
    webui_dir: Path, hermes_home: Path
) -> None:
    work = hermes_home / "profiles" / "work"
    work.mkdir(parents=True)
    create_state_db(work / "state.db")
    mine = _chat(webui_dir, profile="work")
    orphan = _chat(webui_dir, profile="nohome")
    default = _chat(webui_dir)

    report = _backfill(hermes_home)

    assert read_row(work / "state.db", mine.session_id) is not None
    assert read_row(hermes_home / "state.db", mine.session_id) is None
    assert read_row(hermes_home / "state.db", default.session_id) is not None
    assert read_row(hermes_home / "state.db", orphan.session_id) is None
    assert not (hermes_home / "profiles" / "nohome").exists()
    assert report.complete
    (missing,) = [d for d in report.databases if d.status != "ok"]
    assert (missing.status, missing.profiles, dict(missing.outcomes)) == ("missing", ["nohome"], {"not_done": 1})


def test_a_profile_folder_leading_outside_the_home_is_refused_and_exits_one(
    webui_dir: Path, hermes_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    create_state_db(elsewhere / "state.db")
    (hermes_home / "profiles").mkdir()
    (hermes_home / "profiles" / "evil").symlink_to(elsewhere)
    chat = _chat(webui_dir, profile="evil")
    assert main(["backfill"]) == EXIT_ATTENTION
    assert f"not mirrored: {chat.session_id}: profile 'evil' resolves outside" in capsys.readouterr().out
    assert count_rows(elsewhere / "state.db") == 0


def test_a_profile_folder_in_a_symlink_loop_refuses_its_chats_without_a_crash(
    webui_dir: Path, hermes_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (hermes_home / "profiles").mkdir()
    (hermes_home / "profiles" / "loopy").symlink_to("loopy")
    chat = _chat(webui_dir, profile="loopy")
    fine = _chat(webui_dir)
    for command in (["backfill"], ["verify"], ["status"]):
        assert main(command) == EXIT_ATTENTION, command
        assert "folder cannot be resolved" in capsys.readouterr().out
    assert read_row(hermes_home / "state.db", fine.session_id) is not None
    assert main(["backfill", "--json"]) == EXIT_ATTENTION
    refused = json.loads(capsys.readouterr().out)["refused"]
    assert [r["session_id"] for r in refused] == [chat.session_id]


def test_backfill_since_takes_only_newer_chats(webui_dir: Path, hermes_home: Path) -> None:
    old = _chat(webui_dir, days_ago=100)
    new = _chat(webui_dir, days_ago=1)
    since = time.strftime("%Y-%m-%d", time.localtime(time.time() - 10 * DAY))
    assert main(["backfill", "--since", since]) == EXIT_OK
    assert read_row(hermes_home / "state.db", new.session_id) is not None
    assert read_row(hermes_home / "state.db", old.session_id) is None


def _read_in_parts(monkeypatch: pytest.MonkeyPatch, hermes_home: Path, chats: int, part_files: int) -> Path:
    """A sessions folder of ``chats`` chats that reader processes read in parts of ``part_files``."""
    monkeypatch.setattr(scanning, "_PARALLEL_FROM", 1)
    monkeypatch.setattr(scanning, "PART_FILES", part_files)
    sessions = hermes_home / "webui" / "sessions"
    sessions.mkdir(parents=True)
    for n in range(chats):
        write_chat(sessions, f"{n + 1:012x}", title=f"Chat {n % 50}", turns=1 + n % 3)
    return sessions


def test_reading_and_writing_overlap_with_reader_processes(
    tmp_path: Path, hermes_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parts written while others are read land exactly as a two-phase run would write them."""
    sessions = _read_in_parts(monkeypatch, hermes_home, 60, 7)
    streamed = backfill(SessionFiles(sessions, workers=2), Homes(hermes_home))
    assert streamed.written == 60 and streamed.complete
    adds_up(streamed)
    rows = _rows(hermes_home / "state.db")
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (hermes_home / name).unlink(missing_ok=True)
    create_state_db(hermes_home / "state.db")
    backfill(scan_sessions(sessions), Homes(hermes_home))
    assert _rows(hermes_home / "state.db") == rows


def test_a_backfill_names_the_chats_deleted_in_hermes_and_keeps_no_other_plan(
    webui_dir: Path, hermes_home: Path
) -> None:
    chats = [_chat(webui_dir, title=f"Chat {n}") for n in range(3)]
    _backfill(hermes_home)
    tamper(hermes_home / "state.db", "DELETE FROM sessions WHERE id = ?", chats[1].session_id)
    report = _backfill(hermes_home)
    assert report.deleted_in_hermes == [chats[1].session_id]
    assert [len(d.plans) for d in report.databases] == [1]  # not a plan per chat held for the whole run
    assert (report.outcomes["unchanged"], report.written) == (2, 0)
    remembered = _deletion_record(hermes_home / "state.db", chats[1].session_id)
    assert remembered[0] is not None  # when the deletion was first seen
    assert _backfill(hermes_home).deleted_in_hermes == [chats[1].session_id]
    assert _deletion_record(hermes_home / "state.db", chats[1].session_id) == remembered  # not written again


def _deletion_record(db: Path, session_id: str) -> tuple[Any, Any]:
    conn = open_read_only(db)
    try:
        found = conn.execute(
            "SELECT deleted_at, changed_at FROM webui_insights_chats WHERE session_id = ?", (session_id,)
        ).fetchone()
    finally:
        conn.close()
    return tuple(found)


def test_the_writer_is_ready_before_the_first_part_arrives(
    tmp_path: Path, hermes_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hermes-agent is imported while the readers parse the first part, not after it arrived."""
    from webui_insights.engine import hermes
    from webui_insights.engine.store import StateStore

    sessions = _read_in_parts(monkeypatch, hermes_home, 12, 5)
    imported_when_opened: list[bool] = []

    def open_store(path: Path) -> StateStore:
        imported_when_opened.append(hermes._module_cache.get("hermes_state") is not None)
        return StateStore(path)

    hermes.forget_hermes_state()
    report = backfill(SessionFiles(sessions, workers=2), Homes(hermes_home), open_store=open_store)
    assert report.written == 12 and imported_when_opened == [True]


def test_getting_ready_without_hermes_agent_is_left_to_opening(hermes_home: Path, mocker: Any) -> None:
    from webui_insights.engine.hermes import HermesStateUnavailable

    importing = mocker.patch.object(batch, "hermes_state", side_effect=HermesStateUnavailable("not installed"))
    batch.BatchWriter(Homes(hermes_home)).get_ready()  # no exception: opening a state.db says it
    assert importing.call_count == 1  # it did try to import hermes-agent early


def _rows(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT id, title, input_tokens, output_tokens, cache_read_tokens, message_count, started_at "
            "FROM sessions ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


# ------------------------------------------------- a messy home, by the API


@pytest.fixture
def messy(tmp_path: Path) -> Any:
    home = make_messy_home(tmp_path, big_file_mb=33)
    yield home
    home.release()


def test_the_numbers_of_every_report_add_up_on_a_messy_home(messy: MessyHome) -> None:
    homes = Homes(messy.root)
    files = SessionFiles(messy.sessions)
    dry = backfill(files, homes, dry_run=True)
    written = backfill(files, homes)
    checked = verify(scan_sessions(messy.sessions), homes)
    for report in (dry, written, checked):
        adds_up(report)
        assert report.files == messy.files
        assert {d.state_db for d in report.databases} == {
            str(messy.state_db(p)) for p in ("default", "work", "ghost", "nohome", "backup")
        }
    assert written.complete
    assert written.outcomes["created"] == 13 and written.outcomes["not_done"] == 3


def test_an_interrupted_report_still_adds_up(messy: MessyHome, mocker: Any) -> None:
    real_add = batch.BatchWriter.add
    calls = {"n": 0}

    def add_then_stop(self: batch.BatchWriter, chats: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 2:  # the second part: the first is written
            raise KeyboardInterrupt
        return real_add(self, chats)

    mocker.patch.object(batch.BatchWriter, "add", add_then_stop)
    mocker.patch.object(scanning, "PART_FILES", 10)
    with pytest.raises(KeyboardInterrupt) as stopped:
        backfill(SessionFiles(messy.sessions), Homes(messy.root))
    report = stopped.value.report  # type: ignore[attr-defined]
    adds_up(report)
    assert report.interrupted and 0 < report.unread < report.files


# ----------------------------------------------------- a read-only state.db


def test_a_state_db_whose_shm_cannot_be_created_opens_read_only(messy: MessyHome) -> None:
    db = messy.read_only_db
    assert db is not None
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True).execute("SELECT 1 FROM sessions").fetchall()
    conn = open_read_only(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM sessions WHERE source = 'webui'").fetchone() == (2,)
    finally:
        conn.close()


def test_status_verify_and_a_dry_run_work_on_a_read_only_state_db(
    messy: MessyHome, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in messy.env.items():
        if name.startswith(("HERMES", "WEBUI")):
            monkeypatch.setenv(name, value)
    backup = str(messy.read_only_db)
    assert main(["status", "--profile", "backup"]) == EXIT_ATTENTION  # the live mirror could not write there
    out = capsys.readouterr().out
    assert f"{backup} (read-only): 2 WebUI chats: 2 up to date" in out
    assert main(["verify", "--profile", "backup"]) == EXIT_OK
    assert "2 chats checked, 0 differ" in capsys.readouterr().out
    assert main(["backfill", "--dry-run", "--profile", "backup"]) == EXIT_OK
    assert main(["backfill", "--profile", "backup"]) == EXIT_OK  # nothing needed writing
    assert f"{backup} (read-only): 2 chats (2 unchanged)" in capsys.readouterr().out


def test_chats_that_need_writing_into_a_read_only_state_db_are_a_failure(
    messy: MessyHome, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in messy.env.items():
        if name.startswith(("HERMES", "WEBUI")):
            monkeypatch.setenv(name, value)
    write_chat(messy.sessions, "0000000ba0c1", profile="backup", title="After the backup")
    assert main(["backfill", "--profile", "backup"]) == EXIT_ATTENTION
    out = capsys.readouterr().out
    assert "3 chats (1 not done, 2 unchanged); NOT MIRRORED: cannot write" in out
    assert "1 chats need writing" in out
    assert main(["verify", "--fix", "--profile", "backup"]) == EXIT_ATTENTION
    assert f"not fixed: {messy.read_only_db}" in capsys.readouterr().out


# ------------------------------------------------------------- verify


@pytest.fixture
def mirrored(webui_dir: Path, hermes_home: Path) -> list[DemoSession]:
    chats = [_chat(webui_dir, title=f"Chat {i}", tokens=100 + i) for i in range(3)]
    for chat in chats:
        chat.messages[-1]["tool_calls"] = [{"id": "t1", "function": {"name": "x", "arguments": "{}"}}]
        chat.cache_write_tokens = 7
        chat.model_provider = "demo-provider"
        chat.save()
    assert _backfill(hermes_home).written == 3
    return chats


def _drift(hermes_home: Path) -> dict[str, dict[str, tuple[Any, Any]]]:
    report = verify(scan_sessions(hermes_home / "webui" / "sessions"), Homes(hermes_home))
    return {p.session_id: {d.field: (d.want, d.have) for d in p.drift} for p in report.drifted}


def test_in_sync_chats_verify_clean(mirrored: list[DemoSession], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify"]) == EXIT_OK
    assert "3 chats checked, 0 differ" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("started_at", 1_000_000_000.0),
        ("ended_at", 1_000_000_000.0),
        ("model", "someone/else"),
        ("billing_provider", "elsewhere"),
        ("tool_call_count", 99),
    ],
)
def test_a_column_changed_behind_its_back_is_drift_and_fix_repairs_it(
    mirrored: list[DemoSession], hermes_home: Path, column: str, value: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = mirrored[1]
    tamper(hermes_home / "state.db", f"UPDATE sessions SET {column} = ? WHERE id = ?", value, victim.session_id)
    drift = _drift(hermes_home)
    assert list(drift) == [victim.session_id] and drift[victim.session_id][column][1] == value
    assert main(["verify"]) == EXIT_ATTENTION
    assert f"{victim.session_id} (mirror): {column} webui=" in capsys.readouterr().out
    assert main(["verify", "--fix"]) == EXIT_OK
    assert "3 chats checked, 1 differed, 1 fixed\n" in capsys.readouterr().out
    assert _drift(hermes_home) == {}


def test_every_usage_field_the_webui_changed_is_drift_in_hermes_convention(
    mirrored: list[DemoSession], hermes_home: Path
) -> None:
    chat = mirrored[0]
    chat.add_turn("q2", "a2", input_tokens=1000, output_tokens=50, cost=0.5, cached=600)
    chat.cache_write_tokens += 100
    chat.model = "demo/model-2"
    chat.title = "Renamed in the WebUI"
    chat.save()
    drift = _drift(hermes_home)[chat.session_id]
    row = read_row(hermes_home / "state.db", chat.session_id)
    assert row is not None
    expected_input = chat.input_tokens - chat.cache_read_tokens - chat.cache_write_tokens  # hermes' convention
    assert drift["input_tokens"] == (expected_input, row["input_tokens"])
    assert drift["output_tokens"][0] == chat.output_tokens
    assert drift["cache_read_tokens"][0] == chat.cache_read_tokens
    assert drift["cache_write_tokens"][0] == chat.cache_write_tokens
    assert drift["estimated_cost_usd"][0] == pytest.approx(chat.estimated_cost)
    assert drift["message_count"] == (4, 2)
    assert drift["model"] == ("demo/model-2", "demo/model-1")
    assert drift["title"] == ("Renamed in the WebUI", "Chat 0")
    assert "ended_at" in drift


def test_a_rename_in_hermes_a_deletion_in_hermes_and_a_newer_row_are_not_drift(
    mirrored: list[DemoSession], hermes_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = hermes_home / "state.db"
    tamper(db, "UPDATE sessions SET title = 'Renamed by me' WHERE id = ?", mirrored[0].session_id)
    tamper(db, "DELETE FROM sessions WHERE id = ?", mirrored[1].session_id)
    assert _drift(hermes_home) == {}
    assert main(["verify"]) == EXIT_OK
    assert "1 chats were deleted in hermes (kept deleted; not a difference)" in capsys.readouterr().out


@pytest.mark.parametrize("recorded_owner", ["mirror", "hermes"])
def test_usage_another_writer_put_on_a_mirrored_row_is_drift_that_every_command_sees_and_fixes(
    mirrored: list[DemoSession],
    hermes_home: Path,
    recorded_owner: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host's own bridge wrote a turn while mirroring was off (or someone edited the row, or restored a backup).

    It is not hermes-agent: no mark of it is on the row. An earlier release of
    this layer recorded such a chat as hermes-agent's ("hermes") for good.
    """
    db = hermes_home / "state.db"
    chat = mirrored[0]
    want = read_row(db, chat.session_id)
    assert want is not None
    tamper(db, "UPDATE sessions SET input_tokens = 3000, output_tokens = 300, message_count = 6 WHERE id = ?",
           chat.session_id)
    tamper(db, "UPDATE webui_insights_chats SET owner = ? WHERE session_id = ?", recorded_owner, chat.session_id)
    drift = _drift(hermes_home)[chat.session_id]
    assert drift == {
        "input_tokens": (want["input_tokens"], 3000),
        "output_tokens": (want["output_tokens"], 300),
        "message_count": (want["message_count"], 6),
    }
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "1")
    assert main(["status", "--json"]) == EXIT_OK
    profile = json.loads(capsys.readouterr().out)["profiles"][0]
    assert (profile["mirrored"], profile["hermes_written"], profile["behind"]) == (3, 0, 1)
    assert main(["backfill"]) == EXIT_OK  # the same rule as verify --fix and the next save
    assert read_row(db, chat.session_id) == want
    assert _drift(hermes_home) == {}


def test_a_row_hermes_agent_writes_itself_only_drifts_in_what_it_leaves_out(
    mirrored: list[DemoSession], hermes_home: Path
) -> None:
    chat = mirrored[2]
    db = hermes_home / "state.db"
    # hermes-agent took the chat over: its create_session marks, its own token counts
    tamper(db, "UPDATE sessions SET system_prompt = 'x', input_tokens = 5 WHERE id = ?", chat.session_id)
    # its tokens are not drift; the end this layer had set is hermes' to set now
    assert _drift(hermes_home) == {
        chat.session_id: {
            "ended_at": (None, same_time(chat.updated_at, within=5)),
            "end_reason": (None, "webui_mirror"),
        }
    }
    assert main(["verify", "--fix"]) == EXIT_OK
    assert read_row(db, chat.session_id)["input_tokens"] == 5  # type: ignore[index]
    assert _drift(hermes_home) == {}
    tamper(db, "UPDATE sessions SET started_at = started_at + 3600 WHERE id = ?", chat.session_id)
    assert list(_drift(hermes_home)[chat.session_id]) == ["started_at"]  # the real start: this layer fills it


# ------------------------------------------------------ future timestamps


def test_a_chat_dated_tomorrow_is_counted_from_now_and_the_report_says_so(
    webui_dir: Path, hermes_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sessions = webui_dir / "sessions"
    sessions.mkdir(parents=True)
    tomorrow = time.time() + DAY
    write_chat(sessions, "00000000f00d", title="From tomorrow", created_at=tomorrow, updated_at=tomorrow + 60)
    before = time.time()
    assert main(["backfill"]) == EXIT_OK
    after = time.time()
    out = capsys.readouterr().out
    assert "1 × created_at in the future: counted from now" in out
    row = read_row(hermes_home / "state.db", "00000000f00d")
    assert row is not None and before <= row["started_at"] <= after
    assert main(["backfill", "--dry-run", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["notes"]["future_created_at"] == 1


def test_a_chat_dated_tomorrow_is_written_once_and_then_left_alone(webui_dir: Path, hermes_home: Path) -> None:
    sessions = webui_dir / "sessions"
    sessions.mkdir(parents=True)
    tomorrow = time.time() + DAY
    write_chat(sessions, "00000000f00d", title="From tomorrow", created_at=tomorrow, updated_at=tomorrow + 60)
    assert _backfill(hermes_home).written == 1
    time.sleep(0.01)
    assert _backfill(hermes_home).written == 0
    assert _drift(hermes_home) == {}


def test_ctrl_c_landing_right_after_a_commit_is_counted_with_it(
    webui_dir: Path, hermes_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGINT during SQLite's commit (a C call) surfaces just after it: the line still counts that transaction."""
    sessions = webui_dir / "sessions"
    sessions.mkdir(parents=True)
    for n in range(1500):
        write_chat(sessions, f"{n + 1:012x}", title=f"Chat {n}")
    real_checkpoint = hermes_state.SessionDB._try_wal_checkpoint
    fired: list[bool] = []

    def checkpoint_then_ctrl_c(self: Any) -> None:
        # runs inside SessionDB._execute_write right after a commit, before it returns
        if not fired and self._conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        real_checkpoint(self)

    monkeypatch.setattr(hermes_state.SessionDB, "_CHECKPOINT_EVERY_N_WRITES", 1)
    monkeypatch.setattr(hermes_state.SessionDB, "_try_wal_checkpoint", checkpoint_then_ctrl_c)
    assert main(["backfill"]) == 130
    written = re.search(r"interrupted: (\d+) chats written and kept", capsys.readouterr().err)
    assert fired and written is not None
    assert int(written.group(1)) == count_rows(hermes_home / "state.db") > 0
