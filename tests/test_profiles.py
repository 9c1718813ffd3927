"""Which state.db a profile name leads to, and which names lead nowhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from webui_insights.profiles import Homes, InvalidProfile, hermes_root, is_valid_profile_name


@pytest.mark.parametrize("name", ["default", "work", "a", "x-y_z", "0" * 64])
def test_valid_names(name: str) -> None:
    assert is_valid_profile_name(name)


@pytest.mark.parametrize(
    "name", ["", "Work", "work\n", "../x", "/tmp/x", "-x", "_x", "a" * 65, "a b", "a\x00", None, 1]
)
def test_invalid_names(name: object) -> None:
    assert not is_valid_profile_name(name)


def test_none_and_default_are_the_root_home(tmp_path: Path) -> None:
    homes = Homes(tmp_path)
    assert homes.state_db(None) == tmp_path / "state.db"
    assert homes.state_db("default") == tmp_path / "state.db"


def test_named_profile_lives_under_the_root(tmp_path: Path) -> None:
    assert Homes(tmp_path).state_db("work") == tmp_path / "profiles" / "work" / "state.db"


@pytest.mark.parametrize("name", ["../escape", "work\n", "Work", "a/b"])
def test_invalid_name_raises_and_never_falls_back_to_default(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidProfile):
        Homes(tmp_path).state_db(name)


def test_a_profile_dir_linked_outside_the_root_is_refused(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "profiles").mkdir(parents=True)
    elsewhere.mkdir()
    os.symlink(elsewhere, root / "profiles" / "work")
    with pytest.raises(InvalidProfile, match="resolves outside"):
        Homes(root).state_db("work")


def test_the_root_is_captured_once_whatever_hermes_home_becomes_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERMES_HOME", str(tmp_path))
    homes = Homes.capture()
    monkeypatch.setenv("HERMES_HOME", str(tmp_path / "profiles" / "work"))  # the WebUI switched profile
    assert homes.state_db(None) == tmp_path / "state.db"


def test_root_is_hermes_home_or_dot_hermes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_HOME", str(tmp_path / "custom"))
    assert hermes_root() == tmp_path / "custom"
    monkeypatch.delenv("HERMES_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hermes_root() == tmp_path / ".hermes"


def test_profile_names_lists_default_and_valid_profile_dirs(tmp_path: Path) -> None:
    for name in ("work", "Bad Name", "home"):
        (tmp_path / "profiles" / name).mkdir(parents=True)
    (tmp_path / "profiles" / "file").write_text("")
    assert Homes(tmp_path).profile_names() == ["default", "home", "work"]
