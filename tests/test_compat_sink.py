"""The mirror against whichever hermes-agent release is installed.

``compat/run_matrix.py`` runs this file in one virtual environment per
hermes-agent release and wrapt major, so every test here goes through the
public API (``install`` / ``flush``, the demo host) and checks the result
through hermes-agent's *own* readers — ``SessionDB.get_session``,
``list_sessions_rich`` (what ``hermes sessions list`` shows), the profile
resolver and ``hermes insights`` — rather than through our own code. What
differs between releases (``set_auto_title_if_empty`` only in 0.19,
``profile_name`` only in 0.19, PASSIVE vs TRUNCATE checkpoint on close)
must not change any outcome below.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import hermes_state
import pytest
from conftest import make_session, run_insights

import webui_insights
from webui_insights.demo_host import DemoSession


@pytest.fixture
def hermes_db(hermes_home: Path) -> Iterator[Any]:
    """hermes-agent's own SessionDB on the test state.db, as the CLI would open it."""
    db = hermes_state.SessionDB(hermes_home / "state.db")
    yield db
    db.close()


def chat_with_usage(webui_dir: Path, **kwargs: Any) -> DemoSession:
    chat = make_session(webui_dir, **kwargs)
    chat.add_turn("q", "a", input_tokens=100, output_tokens=20, cost=0.01)
    return chat


def saved(chat: DemoSession) -> DemoSession:
    chat.save()
    assert webui_insights.flush(10), "mirror did not land within 10 s"
    return chat


def test_reports_the_hermes_agent_version_under_test() -> None:
    # Shows up in -v output and pins that the matrix really installed a release.
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version("hermes-agent"))


def test_row_is_readable_through_hermes_own_reader(mirror, webui_dir: Path, hermes_db: Any) -> None:
    chat = chat_with_usage(webui_dir, model="anthropic/claude-x", title="Compat chat")
    chat.cache_read_tokens, chat.cache_write_tokens = 64, 16
    saved(chat)
    row = hermes_db.get_session(chat.session_id)
    assert row is not None
    assert (row["source"], row["model"], row["title"]) == ("webui", "anthropic/claude-x", "Compat chat")
    assert (row["input_tokens"], row["output_tokens"]) == (100, 20)
    assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (64, 16)
    assert row["estimated_cost_usd"] == pytest.approx(0.01)
    assert hermes_db.get_session_title(chat.session_id) == "Compat chat"


def test_totals_are_set_not_added_over_many_saves(mirror, webui_dir: Path, hermes_db: Any) -> None:
    chat = make_session(webui_dir, title="Totals")
    for turn in range(3):
        chat.add_turn(f"q{turn}", f"a{turn}", input_tokens=1000, output_tokens=100, cost=0.5)
        for _ in range(3):
            chat.save()
        assert webui_insights.flush(10)
    row = hermes_db.get_session(chat.session_id)
    assert (row["input_tokens"], row["output_tokens"], row["message_count"]) == (3000, 300, 6)
    assert row["estimated_cost_usd"] == pytest.approx(1.5)


def test_session_is_listed_like_hermes_sessions_list_shows_it(mirror, webui_dir: Path, hermes_db: Any) -> None:
    chat = saved(chat_with_usage(webui_dir, title="Listed chat"))
    listed = {r["id"]: r for r in hermes_db.list_sessions_rich(source="webui")}
    assert chat.session_id in listed
    assert listed[chat.session_id]["title"] == "Listed chat"
    assert listed[chat.session_id]["message_count"] == 2


def test_started_at_is_the_chat_creation_time(mirror, webui_dir: Path, hermes_db: Any) -> None:
    created = time.time() - 2 * 86400
    chat = saved(chat_with_usage(webui_dir, created_at=created))
    assert hermes_db.get_session(chat.session_id)["started_at"] == pytest.approx(created)


def test_title_at_hermes_limit_is_kept_and_one_over_is_refused(mirror, webui_dir: Path, hermes_db: Any) -> None:
    limit = hermes_state.SessionDB.MAX_TITLE_LENGTH
    fits = saved(chat_with_usage(webui_dir, title="t" * limit))
    too_long = saved(chat_with_usage(webui_dir, title="u" * (limit + 1)))
    assert hermes_db.get_session_title(fits.session_id) == "t" * limit
    refused = hermes_db.get_session(too_long.session_id)
    assert refused["title"] is None
    assert refused["input_tokens"] == 100  # the usage still landed


def test_title_renamed_with_hermes_is_never_overwritten(mirror, webui_dir: Path, hermes_db: Any) -> None:
    chat = saved(chat_with_usage(webui_dir, title="From the WebUI"))
    assert hermes_db.set_session_title(chat.session_id, "Renamed in the CLI")
    chat.title = "Renamed in the WebUI"
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    saved(chat)
    row = hermes_db.get_session(chat.session_id)
    assert row["title"] == "Renamed in the CLI"
    assert row["input_tokens"] == 101


def test_title_collision_takes_the_lineage_title_hermes_would_pick(mirror, webui_dir: Path, hermes_db: Any) -> None:
    first = saved(chat_with_usage(webui_dir, title="Shared title"))
    expected = hermes_db.get_next_title_in_lineage("Shared title")
    second = saved(chat_with_usage(webui_dir, title="Shared title"))
    assert hermes_db.get_session_title(first.session_id) == "Shared title"
    assert hermes_db.get_session_title(second.session_id) == expected == "Shared title #2"


def test_profile_goes_to_the_state_db_hermes_resolves_for_it(
    mirror, webui_dir: Path, hermes_home: Path, hermes_db: Any
) -> None:
    from hermes_cli.profiles import get_profile_dir

    work_home = Path(get_profile_dir("work"))
    work_home.mkdir(parents=True)
    hermes_state.SessionDB(work_home / "state.db").close()
    chat = saved(chat_with_usage(webui_dir, profile="work"))
    work_db = hermes_state.SessionDB(work_home / "state.db")
    try:
        assert work_db.get_session(chat.session_id)["input_tokens"] == 100
    finally:
        work_db.close()
    assert hermes_db.get_session(chat.session_id) is None


def test_hermes_writing_and_closing_meanwhile_does_not_disturb_the_mirror(
    mirror, webui_dir: Path, hermes_home: Path
) -> None:
    # Our writer keeps its handle open; the CLI opens, writes and closes its
    # own (a PASSIVE checkpoint up to 0.15, TRUNCATE from 0.16 on).
    chat = saved(chat_with_usage(webui_dir, title="Long-lived handle"))
    cli = hermes_state.SessionDB(hermes_home / "state.db")
    cli.ensure_session("cli-session-1", source="cli", model="cli/model")
    cli.update_token_counts("cli-session-1", input_tokens=5, output_tokens=5)
    cli.close()
    chat.add_turn("q", "a", input_tokens=50, output_tokens=5)
    saved(chat)
    check = hermes_state.SessionDB(hermes_home / "state.db")
    try:
        assert check.get_session(chat.session_id)["input_tokens"] == 150
        assert check.get_session("cli-session-1")["source"] == "cli"
    finally:
        check.close()


def test_hermes_insights_reports_the_webui_session(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir, title="Insights chat")
    for turn in range(2):
        chat.add_turn(f"q{turn}", f"a{turn}", input_tokens=1500, output_tokens=250)
        chat.save()
    assert webui_insights.flush(10)
    report = run_insights(hermes_home, days=1, source="webui")
    assert re.search(r"Sessions:\s+1\s", report), report
    assert re.search(r"Input tokens:\s+3,000\s", report), report
    assert re.search(r"Output tokens:\s+500\b", report), report
    assert re.search(r"Messages:\s+4\b", report), report
