"""backfill: existing WebUI chats land in state.db on the day they happened, once."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import count_rows, read_row, run_insights

from webui_insights import backfill as backfill_module
from webui_insights.backfill import backfill, open_state_db
from webui_insights.cli import main
from webui_insights.demo_host import DemoSession
from webui_insights.webui_files import scan_sessions

DAY = 86_400.0


def _chat(
    webui_dir: Path, *, days_ago: float = 0.0, title: str = "Chat", tokens: int = 100, **kwargs: object
) -> DemoSession:
    chat = DemoSession(webui_dir, title=title, created_at=time.time() - days_ago * DAY, **kwargs)  # type: ignore[arg-type]
    chat.add_turn("q", "a", input_tokens=tokens, output_tokens=tokens // 10, cost=0.01)
    chat.save()
    return chat


def _sessions(report: str) -> int:
    match = re.search(r"Sessions:\s+([\d,]+)", report)
    return int(match.group(1).replace(",", "")) if match else 0


def _run(webui_dir: Path, **kwargs: object) -> backfill_module.BackfillReport:
    return backfill(scan_sessions(webui_dir / "sessions"), **kwargs)  # type: ignore[arg-type]


def test_real_insights_counts_backfilled_chats_on_the_day_they_happened(webui_dir: Path, hermes_home: Path) -> None:
    ages = [0.1, 3, 12, 29, 45, 90, 200, 300]
    chats = [_chat(webui_dir, days_ago=age, title=f"Chat {i}") for i, age in enumerate(ages)]
    (webui_dir / "sessions" / "aaaaaaaaaaaa.json").write_text('{"session_id": "aaaa')  # corrupt: skipped

    report = _run(webui_dir)

    assert report.written == len(chats) and report.bad == [("aaaaaaaaaaaa.json", report.bad[0][1])]
    assert _sessions(run_insights(hermes_home, days=365)) == len(chats)
    assert _sessions(run_insights(hermes_home, days=30)) == sum(age < 30 for age in ages)
    row = read_row(hermes_home / "state.db", chats[-1].session_id)
    assert row is not None and row["started_at"] == pytest.approx(chats[-1].created_at)


def test_a_second_run_changes_nothing(webui_dir: Path, hermes_home: Path) -> None:
    chats = [_chat(webui_dir, title="Same title") for _ in range(3)]  # lineage titles "#2", "#3"
    _run(webui_dir)
    db = hermes_home / "state.db"
    before = {c.session_id: read_row(db, c.session_id) for c in chats}

    again = _run(webui_dir)

    assert (again.written, again.transactions, again.up_to_date) == (0, 0, 3)
    assert {c.session_id: read_row(db, c.session_id) for c in chats} == before
    assert count_rows(db) == 3
    assert sorted(r["title"] for r in before.values() if r) == ["Same title", "Same title #2", "Same title #3"]


def test_a_chat_that_grew_since_the_last_run_is_updated(webui_dir: Path, hermes_home: Path) -> None:
    chat = _chat(webui_dir, tokens=100)
    _run(webui_dir)
    chat.add_turn("q2", "a2", input_tokens=50, output_tokens=5)
    chat.save()
    report = _run(webui_dir)
    row = read_row(hermes_home / "state.db", chat.session_id)
    assert (report.new, report.updated, report.written) == (0, 1, 1)
    assert row is not None and (row["input_tokens"], row["message_count"]) == (150, 4)


@pytest.mark.parametrize("failure", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_an_interrupted_run_resumes_where_it_stopped(
    webui_dir: Path, hermes_home: Path, mocker, failure: BaseException
) -> None:
    chats = [_chat(webui_dir, title=f"Chat {i}", tokens=100 + i) for i in range(25)]
    real_write = backfill_module.StateDB.write
    calls = {"n": 0}

    def write_then_fail(self, snapshots, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise failure
        return real_write(self, snapshots, **kwargs)

    mocker.patch.object(backfill_module.StateDB, "write", write_then_fail)
    with pytest.raises(type(failure)):
        _run(webui_dir, chunk=5)
    db = hermes_home / "state.db"
    assert count_rows(db) == 10  # two chunks committed before the failure

    mocker.stopall()
    resumed = _run(webui_dir, chunk=5)

    assert (resumed.new, resumed.up_to_date, resumed.written) == (15, 10, 15)
    assert count_rows(db) == 25
    assert all(read_row(db, c.session_id)["input_tokens"] == c.input_tokens for c in chats)  # type: ignore[index]


def test_dry_run_writes_nothing(webui_dir: Path, hermes_home: Path) -> None:
    _chat(webui_dir)
    report = _run(webui_dir, dry_run=True)
    assert (report.new, report.written) == (1, 0)
    assert count_rows(hermes_home / "state.db") == 0


def test_each_chat_goes_to_its_own_profile_and_a_missing_state_db_is_reported(
    webui_dir: Path, hermes_home: Path
) -> None:
    work = hermes_home / "profiles" / "work"
    work.mkdir(parents=True)
    from webui_insights.sink import create_state_db

    create_state_db(work / "state.db")
    mine = _chat(webui_dir, profile="work")
    orphan = _chat(webui_dir, profile="nohome")
    default = _chat(webui_dir)

    report = _run(webui_dir)

    assert read_row(work / "state.db", mine.session_id) is not None
    assert read_row(hermes_home / "state.db", mine.session_id) is None
    assert read_row(hermes_home / "state.db", default.session_id) is not None
    assert read_row(hermes_home / "state.db", orphan.session_id) is None
    assert not (hermes_home / "profiles" / "nohome" / "state.db").exists()
    assert not report.complete and "nohome" in report.unreachable[0][0]


def test_lineage_title_lookup_treats_like_wildcards_literally(hermes_home: Path) -> None:
    """The indexed range look-up finds "base #N" only for this exact base."""
    handle = open_state_db(hermes_home / "state.db")
    try:

        def free(base: str, sid: str) -> str | None:
            results: list[str | None] = []
            handle.db._execute_write(lambda conn: results.append(handle._free_title(conn, base, sid)))
            return results[0]

        def put(sid: str, title: str) -> None:
            handle.db._execute_write(
                lambda conn: conn.execute(
                    "INSERT INTO sessions (id, source, started_at, title) VALUES (?, 'cli', 0, ?)", (sid, title)
                )
            )

        assert free("A_b%", "x") == "A_b%"
        for sid, title in [("1", "A_b%"), ("2", "A_b% #7"), ("3", "A_b% #x"), ("4", "AXb% #9"), ("5", "A_b% #10")]:
            put(sid, title)
        assert free("A_b%", "x") == "A_b% #11"
        assert free("A_b%", "1") == "A_b%"  # its own title is not a collision
    finally:
        handle.close()


def test_cli_backfill_prints_a_summary_and_plain_progress(webui_dir: Path, hermes_home: Path, capsys) -> None:
    for i in range(3):
        _chat(webui_dir, title=f"Chat {i}")
    (webui_dir / "sessions" / "aaaaaaaaaaaa.json").write_text("{")

    code = main(["backfill"])

    out, err = capsys.readouterr()
    assert code == 0
    assert "skipped aaaaaaaaaaaa.json: not valid JSON" in out
    assert "wrote 3 chats (3 new, 0 updated)" in out
    assert "backfill: 3/3 chats written" in err  # not a terminal: plain lines
    assert main(["backfill", "--dry-run"]) == 0
    assert "would write 0 chats" in capsys.readouterr().out


def test_cli_backfill_since_takes_only_newer_chats(webui_dir: Path, hermes_home: Path, capsys) -> None:
    old = _chat(webui_dir, days_ago=100)
    new = _chat(webui_dir, days_ago=1)
    since = time.strftime("%Y-%m-%d", time.localtime(time.time() - 10 * DAY))
    assert main(["backfill", "--since", since]) == 0
    assert read_row(hermes_home / "state.db", new.session_id) is not None
    assert read_row(hermes_home / "state.db", old.session_id) is None
