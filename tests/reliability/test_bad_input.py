"""Bad input from the host: any type, any title, any id, any profile. Nothing escapes, nothing strays.

Every save ends in exactly one counted outcome (queued, or skipped by a
reason), a refused chat is written nowhere, and no file appears outside the
hermes home. ``WEBUI_INSIGHTS_HYPOTHESIS_EXAMPLES`` scales the case count
(``make reliability`` runs several thousand).
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.chats import make_session

import webui_insights
from webui_insights.demo_host import TARGET, DemoSession
from webui_insights.engine.titles import is_candidate_of
from webui_insights.hook import installer
from webui_insights.writer import WriterConfig

EXAMPLES = int(os.environ.get("WEBUI_INSIGHTS_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

DANGEROUS_CHARS = (
    [chr(c) for c in range(0x20)]
    + ["\x7f", "\u0085", "\u00a0"]
    + ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]  # zero-width
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]  # direction overrides
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.from_regex(r"-?[0-9]{1,20}(\.[0-9]+)?", fullmatch=True)  # numbers as str
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
any_values = json_values | st.binary(max_size=10) | st.builds(PurePosixPath, st.text(max_size=10)) | st.builds(object)
titles = st.text(alphabet=st.sampled_from(DANGEROUS_CHARS) | st.characters(), max_size=200) | st.builds(
    lambda c, n: c * n, st.sampled_from(["x", "\u202e", "é", " "]), st.integers(9_990, 10_010)
)
bad_profile_strings = (
    st.sampled_from(
        [
            "..",
            "../evil",
            "../../etc",
            "a/b",
            "a\\b",
            "/abs",
            "a\x00b",
            "work\n",
            "\nwork",
            "Work",
            "WORK",
            "a" * 65,
            "-lead",
            "_lead",
            "a b",
            "é",
            ".",
        ]
    )
    | st.text(max_size=70)
    | json_values
)  # what the host can save as JSON
bad_profile_names = bad_profile_strings | any_values
session_ids = (
    st.from_regex(r"[0-9a-f]{12}", fullmatch=True)
    | st.sampled_from(["../../evil", "/etc/passwd", "a" * 10_000, "abc'; DROP TABLE sessions;--", "\x00" * 12])
    | st.builds(Path, st.text(max_size=20))
    | any_values
)
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "estimated_cost", "model")
# hermes-agent's profile id (hermes_cli.profiles), written out here: the test's oracle is not the code under test.
HERMES_PROFILE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class Chat:
    """A bare object with WebUI attribute names: the adapter must cope with anything on it."""


def _outcomes() -> int:
    s = installer.stats()
    return s["snapshots_queued"] + sum(s["skipped"].values()) + sum(s["dropped"].values())


def _tree(root: Path, skip: Path) -> set[Path]:
    return {p for p in root.rglob("*") if skip not in p.parents and p != skip}


@pytest.fixture
def returning_mirror(hermes_home: Path, fast_writer: WriterConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """conftest's ``mirror``, on a demo host whose save returns the path it wrote.

    The demo's (and hermes-webui's) save returns None, so "the wrapped save
    returns what the host's save returned" can only fail on a save that
    returns something.
    """
    real_save = DemoSession.save

    def save(self: DemoSession, *args: Any, **kwargs: Any) -> Path:
        real_save(self, *args, **kwargs)
        return self.path

    monkeypatch.setattr(DemoSession, "save", save)
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer)
    yield installer
    installer.uninstall()  # before monkeypatch puts the real save back


def _host_saved(chat: DemoSession, returned: Any) -> None:
    """The host's save ran to its end, untouched: its result came back, its file holds the chat as it is now."""
    assert returned == chat.path  # the host's own result, not ours
    assert chat.path.read_text(encoding="utf-8") == json.dumps(chat.to_dict())  # nothing changed on the chat


def _hermes_title(title: str) -> tuple[str | None, bool]:
    """What hermes-agent would store for ``title`` (its own sanitiser), and whether the title is refused."""
    from hermes_state import SessionDB

    if len(title) > 10_000:  # not even looked at (snapshot's _MAX_TITLE_LEN): refused, counted
        return None, True
    # Lone surrogates cannot be stored (sqlite3 cannot encode them): hermes-agent's sanitiser turns each
    # into U+FFFD first since 0.19.0; 0.13.0's leaves them, and its own write of such a title fails.
    title = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in title)
    try:
        clean = SessionDB.sanitize_title(title)
    except ValueError:  # too long after cleaning
        return None, True
    return (None if clean in (None, "Untitled", "New Chat") else clean), False


@pytest.fixture
def outside(tmp_path: Path, hermes_home: Path, monkeypatch: pytest.MonkeyPatch):
    """Everything under tmp_path except the hermes home; cwd inside it so relative paths are caught."""
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path, hermes_home)
    yield lambda: _tree(tmp_path, hermes_home) - before


@pytest.mark.swallowed_errors_expected
@SETTINGS
@given(values=st.fixed_dictionaries({name: json_values for name in USAGE_FIELDS}), messages=json_values)
def test_session_attributes_of_any_json_type_never_break_save(
    returning_mirror, webui_dir: Path, outside, fail_on_swallowed_errors, values: dict[str, Any], messages: Any
) -> None:
    chat = make_session(webui_dir)
    for name, value in values.items():
        setattr(chat, name, value)
    chat.messages = messages
    before = _outcomes()
    _host_saved(chat, chat.save())  # nothing of ours escapes, changes the chat or replaces the host's result
    assert _outcomes() - before == 1  # every save is counted exactly once: queued or skipped by reason
    assert not fail_on_swallowed_errors, fail_on_swallowed_errors  # bad input is a refusal, not a bug
    assert not outside()


@SETTINGS
@given(session_id=session_ids, profile=st.none() | bad_profile_names, extra=any_values)
def test_capture_of_any_id_and_profile_never_raises_and_never_strays(
    mirror, hermes_home: Path, outside, session_id: Any, profile: Any, extra: Any
) -> None:
    chat = Chat()
    chat.session_id, chat.profile, chat.input_tokens, chat.title = session_id, profile, 5, extra  # type: ignore[attr-defined]
    before = _outcomes()
    installer.capture(chat)
    assert _outcomes() - before == 1
    assert webui_insights.flush(5)
    assert not outside()


@SETTINGS
@given(profile=bad_profile_strings)
def test_a_bad_profile_name_is_refused_counted_and_written_nowhere(
    mirror, webui_dir: Path, hermes_home: Path, outside, profile: Any
) -> None:
    chat = make_session(webui_dir, profile=profile)
    chat.add_turn("q", "a", input_tokens=3, output_tokens=1)
    refused = installer.stats()["skipped"]["invalid_profile"]
    chat.save()
    assert webui_insights.flush(5)
    if profile in (None, "", "default") or (type(profile) is str and HERMES_PROFILE_ID.fullmatch(profile)):
        # a name hermes accepts (the strategy finds some: "0", "a"): not refused
        assert installer.stats()["skipped"]["invalid_profile"] == refused
    else:
        assert installer.stats()["skipped"]["invalid_profile"] == refused + 1
        conn = sqlite3.connect(f"file:{hermes_home / 'state.db'}?mode=ro", uri=True)
        try:  # never falls back to the default profile's state.db
            assert conn.execute("SELECT 1 FROM sessions WHERE id = ?", (chat.session_id,)).fetchone() is None
        finally:
            conn.close()
    assert not outside()


@pytest.mark.parametrize("chars", ["control", "zero-width", "direction"])
def test_refusals_are_logged_with_a_reason(mirror, webui_dir: Path, caplog: pytest.LogCaptureFixture, chars) -> None:
    chat = make_session(webui_dir, profile="../" + chars)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    with caplog.at_level("DEBUG", logger="webui_insights"):
        chat.save()
        assert webui_insights.flush(5)
    assert any("invalid_profile" in r.getMessage() for r in caplog.records), caplog.text


@SETTINGS
@given(title=titles)
@example(title="\ud800")  # lone surrogates: written in the form hermes-agent stores (U+FFFD), never lost
@example(title="a\udc80b")
def test_titles_with_control_zero_width_direction_chars_or_10k_chars_are_sanitized_or_refused(
    returning_mirror, webui_dir: Path, hermes_home: Path, title: str
) -> None:
    chat = make_session(webui_dir, title=title)
    chat.add_turn("q", "a", input_tokens=2, output_tokens=1)
    refused = installer.stats()["notes"]["title_refused"]
    _host_saved(chat, chat.save())
    assert webui_insights.flush(5)
    conn = sqlite3.connect(f"file:{hermes_home / 'state.db'}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT title, input_tokens FROM sessions WHERE id = ?", (chat.session_id,)).fetchone()
    finally:
        conn.close()
    assert row is not None and row[1] == 2  # a bad title never costs the usage row
    stored = row[0]
    expected, too_long = _hermes_title(title)
    # Too long even after sanitizing: refused and counted, never truncated silently; otherwise hermes' own
    # form of the title ("X (WebUI)", "X (WebUI 2)" when an earlier example's chat holds it already).
    assert installer.stats()["notes"]["title_refused"] == refused + too_long
    if expected is None:
        assert stored is None, repr(stored)
    else:
        assert stored is not None and is_candidate_of(stored, expected, 100), (stored, expected)
        assert not any(c in stored for c in DANGEROUS_CHARS if c != " "), repr(stored)
        assert len(stored) <= 100


def test_non_finite_and_huge_numbers_are_refused_not_written(mirror, webui_dir: Path, hermes_home: Path) -> None:
    for value in (math.nan, math.inf, -1, 2**80, "12", True):
        chat = make_session(webui_dir)
        chat.input_tokens = value  # type: ignore[assignment]
        chat.messages = [{"role": "user", "content": "q"}]
        chat.save()
    for cost in (math.nan, math.inf, -0.5, 10**400, "cheap", True, [1]):
        chat = make_session(webui_dir)
        chat.estimated_cost = cost  # type: ignore[assignment]
        chat.messages = [{"role": "user", "content": "q"}]
        chat.save()
    assert webui_insights.flush(5)
    skipped = installer.stats()["skipped"]
    assert (skipped["bad_value"], skipped["bad_cost"]) == (6, 7)
    conn = sqlite3.connect(f"file:{hermes_home / 'state.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
    finally:
        conn.close()
