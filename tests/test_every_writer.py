"""One rule for every writer: the live save, the sweep, backfill, verify --fix and other processes.

Each test puts the same situation in front of every path that writes and
checks that all of them give the engine's answer, on the real SessionDB and
the real console scripts (``webui-insights``, ``hermes``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.db import read_row
from support.messy_home import write_chat

import webui_insights
from webui_insights.cli import main
from webui_insights.commands.demo import hermes_command
from webui_insights.commands.reconcile import reconcile_pass
from webui_insights.engine.hermes import hermes_state
from webui_insights.profiles import Homes

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "webui_insights"]


@pytest.fixture
def sessions(webui_dir: Path) -> Path:
    folder = webui_dir / "sessions"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _another_process(home: Path, code: str) -> None:
    """Run ``code`` in a new interpreter (another WebUI worker, another tool) with this home."""
    env = {
        **os.environ,
        "HERMES_HOME": str(home),
        "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERMES_HOME": str(home)}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def _newer_state_from_another_process(home: Path, session_id: str, at: float) -> None:
    """A live writer elsewhere applied a newer state of the chat than the file on disk holds."""
    _another_process(
        home,
        "import time; from pathlib import Path\n"
        "from support.engine import desired, run\n"
        f"run(Path({str(home / 'state.db')!r}), desired({session_id!r}, at={at!r}, created_at={at - 3600!r},"
        " title='Newer title', input_tokens=9000, cache_read_tokens=0, message_count=8))\n",
    )


def test_a_stale_session_file_loses_against_a_newer_state_on_every_path(hermes_home: Path, sessions: Path) -> None:
    """The file says an older thing; every writer leaves the newer row alone."""
    now = time.time()
    write_chat(sessions, "0000000000aa", title="Older title", created_at=now - 3600, updated_at=now - 600, turns=2)
    _newer_state_from_another_process(hermes_home, "0000000000aa", now - 60)
    db = hermes_home / "state.db"

    def newer_kept() -> None:
        row = read_row(db, "0000000000aa")
        assert row is not None
        assert (row["title"], row["input_tokens"], row["message_count"]) == ("Newer title", 9000, 8)

    assert main(["backfill", "--quiet"]) == 0
    newer_kept()
    assert main(["verify", "--fix", "--quiet"]) == 0  # not drift: state.db holds a newer state
    newer_kept()
    result = reconcile_pass(Homes(hermes_home), sessions)
    assert result.repaired == 0
    newer_kept()
    _another_process(  # a second WebUI process saving the old state it still has in memory
        hermes_home,
        "import time; from pathlib import Path\n"
        "from support.engine import desired, run\n"
        f"run(Path({str(db)!r}), desired('0000000000aa', at={now - 600!r}, title='Older title', input_tokens=1))\n",
    )
    newer_kept()


def test_totals_that_went_down_in_the_webui_leave_the_spend_for_backfill_and_the_sweep_alike(
    hermes_home: Path, sessions: Path
) -> None:
    now = time.time()
    write_chat(sessions, "0000000000bb", created_at=now - 3600, updated_at=now - 600, turns=4, tokens=1000)
    assert main(["backfill", "--quiet"]) == 0
    spent = read_row(hermes_home / "state.db", "0000000000bb")
    assert spent is not None and (spent["message_count"], spent["input_tokens"]) == (8, 3000)
    # The WebUI's figures go down (its agent rebuilt after an edit): what was spent stays spent.
    write_chat(sessions, "0000000000bb", created_at=now - 3600, updated_at=now - 60, turns=2, tokens=1000)
    reconcile_pass(Homes(hermes_home), sessions)
    assert read_row(hermes_home / "state.db", "0000000000bb") == spent
    assert main(["verify", "--quiet"]) == 0  # not drift: the row is the spend
    # The next turn adds to it (one turn of 1000 prompt tokens, 250 of them cached).
    write_chat(sessions, "0000000000bb", created_at=now - 3600, updated_at=now - 30, turns=3, tokens=1000)
    assert main(["backfill", "--quiet"]) == 0
    row = read_row(hermes_home / "state.db", "0000000000bb")
    assert row is not None and (row["message_count"], row["input_tokens"], row["cache_read_tokens"]) == (10, 3750, 1250)


def test_a_version_in_the_future_is_counted_and_never_outranks_a_real_one(hermes_home: Path, sessions: Path) -> None:
    """A state a clock far ahead stamped may be the newest or an old copy: it loses no spend, orders nothing."""
    now = time.time()
    db = hermes_home / "state.db"
    _newer_state_from_another_process(hermes_home, "0000000000cc", now - 60)
    before = read_row(db, "0000000000cc")
    write_chat(sessions, "0000000000cc", title="From a clock ahead", created_at=now - 3600, updated_at=now + 86400)
    report = json.loads(_cli(hermes_home, "backfill", "--json").stdout)
    assert report["notes"]["version_future"] == 1
    row = read_row(db, "0000000000cc")
    assert before is not None and row is not None
    # Its spend merged figure by figure as the larger: the prompt tokens on record, the file's cache reads.
    assert (row["input_tokens"] + row["cache_read_tokens"], row["cache_read_tokens"]) == (9000, 25)
    # The real version on record still orders what comes next: an older real state is stale,
    write_chat(sessions, "0000000000cc", title="Older", created_at=now - 3600, updated_at=now - 120)
    assert json.loads(_cli(hermes_home, "backfill", "--json").stdout)["outcomes"] == {"stale": 1}
    # and a newer one is applied.
    write_chat(sessions, "0000000000cc", title="Newest", created_at=now - 3600, updated_at=now - 30)
    assert json.loads(_cli(hermes_home, "backfill", "--json").stdout)["outcomes"] == {"updated": 1}
    assert read_row(db, "0000000000cc")["title"] == "Newest"  # type: ignore[index]


def test_a_state_db_hermes_never_initialised_keeps_its_schema_through_every_path(
    hermes_home: Path, sessions: Path, fast_writer: Any
) -> None:
    db = hermes_home / "state.db"
    db.unlink()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE other_app (x INTEGER)")
    conn.commit()
    schema = conn.execute("SELECT * FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    write_chat(sessions, "0000000000dd")

    from webui_insights.demo_host import TARGET, DemoSession

    webui_insights.install(target=TARGET, enabled=True, writer_config=fast_writer)
    chat = DemoSession(hermes_home / "webui")
    chat.add_turn("q", "a", input_tokens=10, output_tokens=1)
    chat.save()
    assert webui_insights.flush(5)
    assert webui_insights.stats()["skipped"]["uninitialised"] == 1
    reconcile_pass(Homes(hermes_home), sessions)
    for command in (["backfill"], ["backfill", "--dry-run"], ["verify"], ["verify", "--fix"], ["status"]):
        done = _cli(hermes_home, *command)
        assert "Traceback" not in done.stderr, command
        assert "not a hermes state.db" in done.stdout + done.stderr, command
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT * FROM sqlite_master ORDER BY name").fetchall() == schema
    finally:
        conn.close()


def _resolve_like_hermes_resume(home: Path, title: str) -> str:
    """What ``hermes --resume TITLE`` opens: hermes' own resolver, in a process of its own."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from hermes_cli.main import _resolve_session_by_name_or_id as r; print(r(sys.argv[1]))",
            title,
        ],
        env={**os.environ, "HERMES_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_hermes_resume_still_opens_the_cli_session_whose_title_a_webui_chat_shares(
    hermes_home: Path, sessions: Path
) -> None:
    hermes = hermes_state().SessionDB(db_path=hermes_home / "state.db")
    try:
        hermes.create_session("cli_20260101_000000", source="cli")
        hermes.set_session_title("cli_20260101_000000", "Weekly plan")
    finally:
        hermes.close()
    write_chat(sessions, "0000000000ee", title="Weekly plan")
    write_chat(sessions, "0000000000ef", title="Weekly plan")
    assert main(["backfill", "--quiet"]) == 0
    titles = {read_row(hermes_home / "state.db", s)["title"] for s in ("0000000000ee", "0000000000ef")}  # type: ignore[index]
    assert titles == {"Weekly plan (WebUI)", "Weekly plan (WebUI 2)"}
    assert _resolve_like_hermes_resume(hermes_home, "Weekly plan") == "cli_20260101_000000"


@pytest.mark.parametrize(
    "title",
    [
        "  Leading and trailing  ",
        "Tabs\tand\nnewlines",
        "Zero\u200bwidth and \u202eoverride",
        "Control\x07bell",
        "x" * 101,
        "   ",
        "Untitled",
    ],
)
def test_every_title_hermes_changes_or_refuses_reaches_a_fixed_point(
    hermes_home: Path, sessions: Path, title: str
) -> None:
    write_chat(sessions, "0000000000f0", title=title)
    first = json.loads(_cli(hermes_home, "backfill", "--json").stdout)
    assert first["written"] == 1
    second = json.loads(_cli(hermes_home, "backfill", "--json").stdout)
    assert second["written"] == 0
    verify = json.loads(_cli(hermes_home, "verify", "--json").stdout)
    assert verify["drifted"] == [] and verify["exit_code"] == 0
    assert reconcile_pass(Homes(hermes_home), sessions).repaired == 0


def test_title_rules_hold_across_processes(hermes_home: Path, sessions: Path) -> None:
    """WebUI title from one process, a CLI rename from hermes, a later WebUI rename from another process."""
    db = hermes_home / "state.db"
    start = time.time() - 100
    for step, title in enumerate(("First title", "Second title")):
        _another_process(
            hermes_home,
            "from pathlib import Path\nfrom support.engine import desired, run\n"
            f"run(Path({str(db)!r}), desired('0000000001aa', at={start + step!r}, title={title!r}))\n",
        )
    assert read_row(db, "0000000001aa")["title"] == "Second title"  # type: ignore[index]
    command = hermes_command()
    assert command is not None
    subprocess.run(
        [*command, "sessions", "rename", "0000000001aa", "Renamed", "in", "hermes"],
        env={**os.environ, "HERMES_HOME": str(hermes_home)},
        capture_output=True,
        timeout=120,
        check=True,
    )
    _another_process(
        hermes_home,
        "from pathlib import Path\nfrom support.engine import desired, run\n"
        f"run(Path({str(db)!r}), desired('0000000001aa', at={start + 5!r}, title='Third title', input_tokens=5000))\n",
    )
    row = read_row(db, "0000000001aa")
    assert row is not None and (row["title"], row["input_tokens"]) == ("Renamed in hermes", 4800)  # 200 cached
