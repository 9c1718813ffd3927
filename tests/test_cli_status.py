"""status: one line saying why mirroring would not work, and the exit code to match."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from webui_insights import installer, sink
from webui_insights.cli import main
from webui_insights.demo_host import TARGET, DemoSession


def _enable(webui_dir: Path, value: bool = True) -> None:
    webui_dir.mkdir(parents=True, exist_ok=True)
    (webui_dir / "settings.json").write_text(json.dumps({"sync_to_insights": value}))


def _last_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_all_good_exits_zero(hermes_home: Path, webui_dir: Path, capsys) -> None:
    _enable(webui_dir)
    chat = DemoSession(webui_dir, title="Hi")
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "OK: mirroring would work" in out
    assert f"WebUI setting sync_to_insights in {webui_dir / 'settings.json'}" in out
    assert "1 WebUI chats, 0 webui rows" in out


def test_setting_off_exits_non_zero_with_the_reason(hermes_home: Path, webui_dir: Path, capsys) -> None:
    _enable(webui_dir, False)
    assert main(["status"]) == 1
    assert _last_line(capsys).startswith("NOT MIRRORING: mirroring is switched off")


def test_env_override_is_named_as_the_source(hermes_home: Path, webui_dir: Path, monkeypatch, capsys) -> None:
    _enable(webui_dir, False)
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "1")
    assert main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["ok"], data["enabled"], data["enabled_source"]) == (True, True, "env WEBUI_INSIGHTS_ENABLED")


def test_no_state_db_exits_non_zero(hermes_home: Path, webui_dir: Path, capsys) -> None:
    _enable(webui_dir)
    for name in os.listdir(hermes_home):
        if name.startswith("state.db"):
            (hermes_home / name).unlink()
    assert main(["status"]) == 1
    assert "NOT MIRRORING: profile default: no state.db at" in _last_line(capsys)
    assert not (hermes_home / "state.db").exists()  # status never creates one


def test_no_hermes_agent_exits_non_zero(hermes_home: Path, webui_dir: Path, mocker, capsys) -> None:
    _enable(webui_dir)
    mocker.patch.object(sink, "hermes_state", side_effect=sink.HermesStateUnavailable("hermes-agent is not installed"))
    assert main(["status", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["hermes_agent"] is False
    assert data["problems"][0].startswith("hermes-agent is not importable")


def test_a_profile_state_db_that_is_not_writable_is_a_problem(hermes_home: Path, webui_dir: Path, capsys) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write anything")
    _enable(webui_dir)
    (hermes_home / "state.db").chmod(0o444)
    try:
        assert main(["status"]) == 1
        assert "not writable" in _last_line(capsys)
    finally:
        (hermes_home / "state.db").chmod(0o644)


def test_in_process_status_uses_the_installed_switch_and_shows_stats(hermes_home: Path, webui_dir: Path) -> None:
    from webui_insights.status import collect_status

    installer.install(target=TARGET, enabled=True)
    status = collect_status()
    assert status.in_process and status.enabled and status.enabled_source == "install() argument"
    assert status.stats is not None and "last_error" in status.stats


def test_help_texts_read_well(capsys) -> None:
    for argv in (["--help"], ["status", "--help"], ["backfill", "--help"], ["verify", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("backfill", "--dry-run", "--since DATE", "--fix", "--json", "HERMES_WEBUI_STATE_DIR"):
        assert phrase in text
