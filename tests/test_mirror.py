"""What users see in state.db after WebUI saves, against the real hermes_state.SessionDB."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from conftest import count_rows, make_session, read_row, run_insights, save_turn

import webui_insights
from webui_insights import installer, sink
from webui_insights.demo_host import TARGET, DemoSession


def _row(home: Path, chat: DemoSession) -> dict:
    row = read_row(home / "state.db", chat.session_id)
    assert row is not None, "no row mirrored"
    return row


def test_three_turn_chat_shows_in_real_hermes_insights(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir, title="Untitled")
    chat.save()
    for turn in range(3):
        chat.add_turn(f"q{turn}", f"a{turn}", input_tokens=1000 + turn, output_tokens=200 + turn)
        chat.save()
        chat.save()
    assert webui_insights.flush(10)

    report = run_insights(hermes_home, days=1, source="webui")

    assert re.search(r"Sessions:\s+1\s", report), report
    assert re.search(r"Input tokens:\s+3,003\s", report), report
    assert re.search(r"Output tokens:\s+603\b", report), report
    assert re.search(r"Messages:\s+6\b", report), report


def test_disabled_writes_no_row(hermes_home: Path, webui_dir: Path, fast_writer) -> None:
    installer.install(target=TARGET, enabled=False, writer_config=fast_writer)
    chat = make_session(webui_dir)
    save_turn(chat, 5, 5)
    assert read_row(hermes_home / "state.db", chat.session_id) is None
    assert webui_insights.stats()["skipped"]["disabled"] == 1


def test_enabled_writes_all_usage_columns(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir, model="openai/gpt-x")
    chat.model_provider = "openrouter"
    chat.add_turn("q", "a", input_tokens=120, output_tokens=30, cost=0.25)
    chat.cache_read_tokens = 64
    chat.cache_write_tokens = 16
    chat.api_call_count = 3  # type: ignore[attr-defined]  # custom frontends may keep it
    chat.save()
    assert webui_insights.flush(5)
    row = _row(hermes_home, chat)
    assert (row["source"], row["model"], row["billing_provider"]) == ("webui", "openai/gpt-x", "openrouter")
    assert (row["input_tokens"], row["output_tokens"]) == (120, 30)
    assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (64, 16)
    assert row["estimated_cost_usd"] == pytest.approx(0.25)
    assert row["api_call_count"] == 3
    assert row["message_count"] == 2


def test_totals_are_set_not_added(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir)
    for _ in range(4):
        save_turn(chat, 100, 10)
    assert _row(hermes_home, chat)["input_tokens"] == 400


def test_unchanged_second_save_writes_nothing(mirror, webui_dir: Path) -> None:
    chat = make_session(webui_dir)
    save_turn(chat, 10, 1)
    before = webui_insights.stats()
    chat.save()
    chat.save()
    assert webui_insights.flush(5)
    after = webui_insights.stats()
    assert after["snapshots_queued"] == before["snapshots_queued"]
    assert after["transactions"] == before["transactions"]
    assert after["skipped"]["unchanged"] == before["skipped"]["unchanged"] + 2


def test_blank_untitled_chat_is_not_mirrored(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir, title="Untitled")
    chat.save()
    assert webui_insights.flush(5)
    assert read_row(hermes_home / "state.db", chat.session_id) is None
    assert webui_insights.stats()["skipped"]["blank"] == 1


def test_rename_in_webui_reaches_the_row(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir, title="First name")
    save_turn(chat, 1, 1)
    chat.title = "Second name"
    chat.save()
    assert webui_insights.flush(5)
    assert _row(hermes_home, chat)["title"] == "Second name"


def test_rename_in_cli_is_never_overwritten(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir, title="WebUI title")
    save_turn(chat, 1, 1)
    db = sink.hermes_state().SessionDB(hermes_home / "state.db")
    try:
        db.set_session_title(chat.session_id, "Renamed in CLI")
    finally:
        db.close()
    chat.title = "WebUI rename"
    save_turn(chat, 1, 1)
    row = _row(hermes_home, chat)
    assert row["title"] == "Renamed in CLI"
    assert row["input_tokens"] == 2


def test_title_memory_survives_a_restart(hermes_home: Path, webui_dir: Path, fast_writer) -> None:
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer)
    chat = make_session(webui_dir, title="Before restart")
    save_turn(chat, 1, 1)
    installer._reset_for_tests()  # a new process: no in-memory state survives
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer)
    chat.title = "After restart"
    chat.save()
    assert webui_insights.flush(5)
    assert _row(hermes_home, chat)["title"] == "After restart"


def test_title_collision_gets_next_lineage_title(mirror, webui_dir: Path, hermes_home: Path) -> None:
    first = make_session(webui_dir, title="Same title")
    second = make_session(webui_dir, title="Same title")
    third = make_session(webui_dir, title="Same title")
    for chat in (first, second, third):
        save_turn(chat, 1, 1)
    titles = [_row(hermes_home, c)["title"] for c in (first, second, third)]
    assert titles == ["Same title", "Same title #2", "Same title #3"]
    # Saving again with the same WebUI title keeps the lineage title, it does not flap.
    save_turn(second, 1, 1)
    assert _row(hermes_home, second)["title"] == "Same title #2"


def test_title_is_sanitized_like_hermes_does(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir, title="  Tab\tand\u200b zero-width  ")
    save_turn(chat, 1, 1)
    assert _row(hermes_home, chat)["title"] == "Tab and zero-width"


def test_too_long_title_is_counted_and_usage_still_lands(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir, title="x" * 500)
    save_turn(chat, 7, 1)
    row = _row(hermes_home, chat)
    assert row["title"] is None and row["input_tokens"] == 7
    assert webui_insights.stats()["skipped"]["bad_value"] == 1


def test_started_at_is_the_webui_created_at(mirror, webui_dir: Path, hermes_home: Path) -> None:
    created = time.time() - 3 * 86400
    chat = make_session(webui_dir, created_at=created)
    save_turn(chat, 1, 1)
    assert _row(hermes_home, chat)["started_at"] == pytest.approx(created)
    assert re.search(r"Sessions:\s+1\s", run_insights(hermes_home, days=7))
    assert "No sessions found" in run_insights(hermes_home, days=1)


def test_profile_routes_to_that_profiles_state_db(mirror, webui_dir: Path, hermes_home: Path) -> None:
    work_home = hermes_home / "profiles" / "work"
    work_home.mkdir(parents=True)
    sink.create_state_db(work_home / "state.db")
    chat = make_session(webui_dir, profile="work")
    chat.add_turn("q", "a", input_tokens=9, output_tokens=1)
    chat.save()
    default_chat = make_session(webui_dir, profile="default")
    save_turn(default_chat, 3, 1)
    assert read_row(work_home / "state.db", chat.session_id)["input_tokens"] == 9  # type: ignore[index]
    assert read_row(hermes_home / "state.db", chat.session_id) is None
    assert read_row(hermes_home / "state.db", default_chat.session_id) is not None


@pytest.mark.parametrize("profile", ["../x", "work\n", "/tmp/x", "Work", "a" * 65, "wo rk", "w/x", "-x", "x\x00"])
def test_invalid_profile_is_refused_and_written_nowhere(
    mirror, webui_dir: Path, hermes_home: Path, profile: str, caplog: pytest.LogCaptureFixture
) -> None:
    chat = make_session(webui_dir, profile=profile)
    save_turn(chat, 1, 1)
    assert count_rows(hermes_home / "state.db") == 0
    assert {p.name for p in hermes_home.iterdir()} <= {"state.db", "state.db-wal", "state.db-shm", "webui"}
    assert webui_insights.stats()["skipped"]["invalid_profile"] == 1
    assert "invalid_profile" in caplog.text


def test_profile_symlinked_outside_the_home_is_refused(
    mirror, webui_dir: Path, hermes_home: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    sink.create_state_db(outside / "state.db")
    (hermes_home / "profiles").mkdir()
    (hermes_home / "profiles" / "evil").symlink_to(outside)
    chat = make_session(webui_dir, profile="evil")
    save_turn(chat, 1, 1)
    assert read_row(outside / "state.db", chat.session_id) is None
    assert webui_insights.stats()["skipped"]["invalid_profile"] == 1


def test_missing_state_db_is_never_created(mirror, webui_dir: Path, hermes_home: Path) -> None:
    (hermes_home / "state.db").unlink()
    for suffix in ("-wal", "-shm"):
        (hermes_home / f"state.db{suffix}").unlink(missing_ok=True)
    chat = make_session(webui_dir)
    save_turn(chat, 1, 1)
    assert not (hermes_home / "state.db").exists()
    assert webui_insights.stats()["skipped"]["no_state_db"] == 1


def test_missing_profile_state_db_does_not_fall_back_to_default(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir, profile="nosuchprofile")
    save_turn(chat, 1, 1)
    assert count_rows(hermes_home / "state.db") == 0
    assert not (hermes_home / "profiles").exists()


def test_without_hermes_agent_it_is_a_quiet_no_op(
    mirror, webui_dir: Path, hermes_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "hermes_state", None)  # import hermes_state → ImportError
    sink.forget_hermes_state()
    try:
        chat = make_session(webui_dir)
        save_turn(chat, 1, 1)
        assert chat.path.exists()
        assert webui_insights.stats()["skipped"]["no_hermes_state"] == 1
    finally:
        sink.forget_hermes_state()
    assert count_rows(hermes_home / "state.db") == 0


def test_settings_toggle_takes_effect_without_restart(hermes_home: Path, webui_dir: Path, fast_writer) -> None:
    settings = webui_dir / "settings.json"
    webui_dir.mkdir(exist_ok=True)
    settings.write_text(json.dumps({"sync_to_insights": False}))
    installer.install(target=TARGET, settings_ttl=0.05, writer_config=fast_writer)
    off = make_session(webui_dir)
    off.add_turn("q", "a", input_tokens=1, output_tokens=1)
    off.save()
    settings.write_text(json.dumps({"sync_to_insights": True, "theme": "dark"}))
    time.sleep(0.1)
    on = make_session(webui_dir)
    save_turn(on, 1, 1)
    assert read_row(hermes_home / "state.db", off.session_id) is None
    assert read_row(hermes_home / "state.db", on.session_id) is not None


def test_env_overrides_setting_and_argument_overrides_env(
    hermes_home: Path, webui_dir: Path, fast_writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    webui_dir.mkdir(exist_ok=True)
    (webui_dir / "settings.json").write_text(json.dumps({"sync_to_insights": True}))
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "0")
    installer.install(target=TARGET, writer_config=fast_writer)
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    assert webui_insights.stats()["skipped"]["disabled"] == 1
    installer._reset_for_tests()
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer)
    chat.save()
    assert webui_insights.flush(5)
    assert read_row(hermes_home / "state.db", chat.session_id) is not None


def test_plain_titles_skip_sanitizing_only_when_hermes_would_not_change_them(hermes_home: Path) -> None:
    hermes = sink.hermes_state().SessionDB
    handle = sink.StateDB(hermes_home / "state.db")
    try:
        for title in ["Plain title", "a", "x" * 100, " lead", "trail ", "two  spaces", "tab\there", "nl\n", "z\u200bw"]:
            try:
                expected = hermes.sanitize_title(title)
            except ValueError:
                expected = "ValueError"
            try:
                got = handle._sanitize(title)
            except ValueError:
                got = "ValueError"
            assert got == expected, title
    finally:
        handle.close()
