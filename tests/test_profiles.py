"""Which state.db a profile name leads to, and which names lead nowhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from webui_insights.profiles import InvalidProfile, hermes_home, is_valid_profile_name, state_db_path


@pytest.mark.parametrize("name", ["default", "work", "a", "x-y_z", "0" * 64])
def test_valid_names(name: str) -> None:
    assert is_valid_profile_name(name)


@pytest.mark.parametrize(
    "name", ["", "Work", "work\n", "../x", "/tmp/x", "-x", "_x", "a" * 65, "a b", "a\x00", None, 1]
)
def test_invalid_names(name: object) -> None:
    assert not is_valid_profile_name(name)


def test_none_and_default_are_hermes_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_HOME", str(tmp_path))
    assert state_db_path(None) == tmp_path / "state.db"
    assert state_db_path("default") == tmp_path / "state.db"
    assert hermes_home() == tmp_path


def test_named_profile_lives_under_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_HOME", str(tmp_path))
    assert state_db_path("work") == tmp_path / "profiles" / "work" / "state.db"


def test_home_defaults_to_dot_hermes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HERMES_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hermes_home() == tmp_path / ".hermes"


def test_invalid_name_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_HOME", str(tmp_path))
    with pytest.raises(InvalidProfile):
        state_db_path("../escape")
