"""What SECURITY.md promises, pinned: no state.db created, no path outside the home, no chat text in logs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from support.chats import make_session
from support.db import read_row

import webui_insights
from webui_insights.engine import hermes
from webui_insights.engine.store import create_state_db

SECRET = "SECRET-7f3a"


def test_the_mirror_never_creates_a_state_db(mirror, webui_dir: Path, hermes_home: Path) -> None:
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (hermes_home / name).unlink(missing_ok=True)
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    assert webui_insights.flush(5)
    assert not (hermes_home / "state.db").exists()
    assert webui_insights.stats()["skipped"]["no_state_db"] == 1


def test_a_profile_dir_symlinked_outside_the_home_is_refused(
    mirror, webui_dir: Path, hermes_home: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    create_state_db(elsewhere / "state.db")
    (hermes_home / "profiles").mkdir()
    os.symlink(elsewhere, hermes_home / "profiles" / "work")
    chat = make_session(webui_dir, profile="work")
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    assert webui_insights.flush(5)
    assert read_row(elsewhere / "state.db", chat.session_id) is None
    assert read_row(hermes_home / "state.db", chat.session_id) is None  # no fallback to the default profile
    assert webui_insights.stats()["skipped"]["invalid_profile"] == 1


def _chat_with_secrets(webui_dir: Path, title: str, **kw) -> None:
    chat = make_session(webui_dir, title=title, **kw)
    chat.add_turn(f"user {SECRET} question", f"assistant {SECRET} answer", input_tokens=5, output_tokens=2)
    chat.save()


def _assert_no_secret_at_info(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            text = record.getMessage() + (caplog.text if record.exc_info else "")
            assert SECRET not in text, f"{record.levelname}: {text}"


def test_no_title_or_message_text_is_logged_at_info_or_above(
    mirror, webui_dir: Path, hermes_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="webui_insights"):
        _chat_with_secrets(webui_dir, f"{SECRET} title")
        _chat_with_secrets(webui_dir, f"{SECRET} title")  # duplicate title: lineage
        _chat_with_secrets(webui_dir, SECRET * 2000)  # too long: refused and logged
        _chat_with_secrets(webui_dir, f"{SECRET} bad profile", profile=f"../{SECRET}")
        chat = make_session(webui_dir, title=f"{SECRET} t")
        chat.input_tokens = f"{SECRET}"  # type: ignore[assignment]  # wrong type: refused and logged
        chat.save()
        assert webui_insights.flush(5)
    assert caplog.records  # the refusals above were logged
    _assert_no_secret_at_info(caplog)


def test_degraded_write_path_does_not_log_titles(
    mirror, webui_dir: Path, hermes_home: Path, caplog: pytest.LogCaptureFixture, mocker
) -> None:
    # A hermes-agent without sanitize_title or _insert_message_rows: this layer applies hermes' rules itself.
    mocker.patch.object(
        hermes.Capabilities,
        "detect",
        classmethod(lambda cls, db: cls(True, False, hermes.fallback_sanitize_title, 100, ("test: degraded",))),
    )
    with caplog.at_level(logging.DEBUG, logger="webui_insights"):
        _chat_with_secrets(webui_dir, f"{SECRET} same title")
        assert webui_insights.flush(5)
        _chat_with_secrets(webui_dir, f"{SECRET} same title")
        assert webui_insights.flush(5)
    _assert_no_secret_at_info(caplog)
