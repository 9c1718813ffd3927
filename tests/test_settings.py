"""The switch: argument > env > WebUI setting > off, cached, never flapping on a bad file."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from webui_insights.settings import Switch, parse_env_flag, webui_settings_file


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HERMES_WEBUI_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("HERMES_WEBUI_SETTINGS_FILE", raising=False)
    monkeypatch.delenv("WEBUI_INSIGHTS_ENABLED", raising=False)
    return tmp_path / "settings.json"


def test_off_by_default(settings_file: Path) -> None:
    assert Switch().enabled() is False


def test_setting_true_turns_it_on(settings_file: Path) -> None:
    settings_file.write_text(json.dumps({"sync_to_insights": True}))
    switch = Switch()
    assert switch.enabled() is True
    assert "sync_to_insights" in switch.describe()[1]


@pytest.mark.parametrize("value", ["yes", 1, None, "true", [True]])
def test_non_boolean_setting_is_off(settings_file: Path, value: object) -> None:
    settings_file.write_text(json.dumps({"sync_to_insights": value}))
    assert Switch().enabled() is False


def test_invalid_json_keeps_the_last_good_value(settings_file: Path) -> None:
    settings_file.write_text(json.dumps({"sync_to_insights": True}))
    switch = Switch(ttl=0)
    assert switch.enabled() is True
    settings_file.write_text('{"sync_to_insights": tr')
    assert switch.enabled() is True
    settings_file.write_text("[1, 2]")
    assert switch.enabled() is True
    settings_file.write_text(json.dumps({"sync_to_insights": False}))
    assert switch.enabled() is False


def test_the_file_is_not_read_again_within_the_ttl(settings_file: Path, mocker: Any) -> None:
    settings_file.write_text(json.dumps({"sync_to_insights": True}))
    switch = Switch(ttl=60)
    read = mocker.spy(Path, "read_text")
    for _ in range(100):
        assert switch.enabled() is True
    assert read.call_count == 1
    switch.invalidate()
    switch.enabled()
    assert read.call_count == 2


def test_env_overrides_the_setting(settings_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_file.write_text(json.dumps({"sync_to_insights": True}))
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "0")
    assert Switch().enabled() is False
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "on")
    settings_file.write_text(json.dumps({"sync_to_insights": False}))
    assert Switch().enabled() is True


def test_argument_overrides_env_and_a_callable_is_asked_each_time(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "1")
    assert Switch(False).enabled() is False
    answers = iter([True, False])
    switch = Switch(lambda: next(answers))
    assert (switch.enabled(), switch.enabled()) == (True, False)


@pytest.mark.parametrize(
    "text, expected", [("1", True), (" TRUE ", True), ("off", False), ("maybe", None), (None, None)]
)
def test_parse_env_flag(text: str | None, expected: bool | None) -> None:
    assert parse_env_flag(text) is expected


def test_the_hosts_own_settings_file_wins_when_it_is_loaded(
    settings_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = types.ModuleType("api.config")
    config.SETTINGS_FILE = tmp_path / "elsewhere.json"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "api.config", config)
    assert webui_settings_file() == tmp_path / "elsewhere.json"
    monkeypatch.delitem(sys.modules, "api.config")
    assert webui_settings_file() == settings_file


def test_a_setting_that_is_not_a_boolean_is_off_and_logged(
    settings_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="webui_insights")
    settings_file.write_text(json.dumps({"sync_to_insights": "yes"}))
    assert Switch().enabled() is False
    assert "WebUI setting sync_to_insights is not a boolean; treating it as off" in caplog.text
    assert "(sync_to_insights is str, not true/false)" in caplog.text


def test_an_unreadable_settings_file_is_logged_with_why(settings_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="webui_insights")
    settings_file.write_bytes(b"\xff\xfe not utf-8")
    assert Switch().enabled() is False
    assert "cannot read the WebUI setting sync_to_insights, keeping off" in caplog.text
    assert "not UTF-8 text" in caplog.text


def test_an_env_value_that_is_not_a_flag_is_ignored_and_logged(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="webui_insights")
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "maybe")
    settings_file.write_text(json.dumps({"sync_to_insights": True}))
    assert Switch().enabled() is True  # falls through to the setting
    assert "ignoring WEBUI_INSIGHTS_ENABLED='maybe' (expected 1/0, true/false)" in caplog.text


def test_a_callable_that_raises_is_off_counted_and_logged(
    settings_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from webui_insights.diagnostics import Stats

    caplog.set_level("INFO", logger="webui_insights")
    stats = Stats()

    def flag() -> bool:
        raise ConnectionError("flags unreachable")

    switch = Switch(flag, stats=stats)
    assert (switch.enabled(), switch.enabled()) == (False, False)
    assert stats.get("switch_errors") == 2
    assert caplog.text.count("the enabled() switch raised ConnectionError: flags unreachable") == 1  # rate-limited


def test_the_hosts_own_sessions_dir_wins_when_it_is_loaded(
    settings_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webui_insights.settings import webui_sessions_dir

    assert webui_sessions_dir() == tmp_path / "sessions"
    config = types.ModuleType("api.config")
    config.SESSION_DIR = str(tmp_path / "elsewhere")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "api.config", config)
    assert webui_sessions_dir() == tmp_path / "elsewhere"
