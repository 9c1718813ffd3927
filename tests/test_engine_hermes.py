"""engine/hermes.py: finding the installed hermes-agent, and what its SessionDB can do.

One state.db meets several hermes-agent releases, and the package must
import (and do nothing) without any: a missing release or method is
reported, never a crash, and titles are kept to hermes' own rules either way.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from webui_insights.engine.hermes import (
    Capabilities,
    HermesStateUnavailable,
    fallback_sanitize_title,
    forget_hermes_state,
    hermes_agent_version,
    hermes_state,
)


@pytest.fixture(autouse=True)
def fresh_import() -> Iterator[None]:
    """Each test finds hermes-agent anew, and leaves it found as the rest of the suite expects."""
    forget_hermes_state()
    yield
    forget_hermes_state()


@pytest.fixture
def session_db() -> Any:
    return hermes_state().SessionDB


# ------------------------------------------------------------ the module


def test_the_installed_hermes_state_is_found_once() -> None:
    module = hermes_state()
    assert hasattr(module, "SessionDB")
    assert hermes_state() is module


def test_without_hermes_agent_every_use_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer counts "no_hermes_state" and the CLI prints the hint: an ImportError must not escape as itself."""
    monkeypatch.setitem(sys.modules, "hermes_state", None)  # what `import hermes_state` meets when it is absent
    with pytest.raises(HermesStateUnavailable, match=r"pip install 'webui-insights\[hermes\]'"):
        hermes_state()
    with pytest.raises(ImportError):  # callers that catch ImportError still do
        hermes_state()


def test_absence_is_remembered_until_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer asks for every batch: a failed import each time would be slow (a later install: on request)."""
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "hermes_state", None)
        with pytest.raises(HermesStateUnavailable):
            hermes_state()
    with pytest.raises(HermesStateUnavailable):
        hermes_state()  # installed now, but not looked for again
    forget_hermes_state()
    assert hasattr(hermes_state(), "SessionDB")


def test_an_import_that_fails_for_another_reason_is_tried_again_later(mocker: Any) -> None:
    """Imported for the first time while the interpreter shuts down: that is no proof hermes-agent is absent."""
    failing = mocker.patch("importlib.import_module", side_effect=RuntimeError("cannot import during shutdown"))
    with pytest.raises(HermesStateUnavailable, match="RuntimeError: cannot import during shutdown"):
        hermes_state()
    assert failing.called
    mocker.stopall()
    assert hasattr(hermes_state(), "SessionDB")


def test_the_installed_release_is_named() -> None:
    assert hermes_agent_version() == importlib.metadata.version("hermes-agent")


def test_the_release_is_none_without_hermes_agent(mocker: Any) -> None:
    mocker.patch("importlib.metadata.version", side_effect=importlib.metadata.PackageNotFoundError("hermes-agent"))
    assert hermes_agent_version() is None


def test_importing_the_package_imports_no_hermes_agent() -> None:
    """The package is imported into every WebUI process; hermes-agent only when a state.db is written."""
    script = "import sys, webui_insights, webui_insights.engine.hermes\nprint('hermes_state' in sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


# -------------------------------------------------------------- capabilities


# hermes-agent before 0.18.2 has no _insert_message_rows (make test-compat runs 0.13.0).
HAS_ROW_INSERT = hasattr(importlib.import_module("hermes_state").SessionDB, "_insert_message_rows")


def test_the_installed_sessiondb_offers_everything(session_db: Any) -> None:
    caps = Capabilities.of_installed()
    assert (caps.execute_write, caps.insert_message_rows) == (True, HAS_ROW_INSERT)
    assert len(caps.degraded) == (0 if HAS_ROW_INSERT else 1)
    assert caps.max_title_length == session_db.MAX_TITLE_LENGTH
    assert caps.sanitize_title("  A\u200b plan\n") == session_db.sanitize_title("  A\u200b plan\n") == "A plan"
    assert Capabilities.detect(session_db) == caps  # the class or, as a store has it, an instance's class


def older(session_db: Any, **missing: Any) -> type:
    """hermes' SessionDB as a release without some of its methods had it."""
    return type("OlderSessionDB", (session_db,), missing)


def _two_arguments(self: Any, fn: Any, retries: int) -> Any:
    raise AssertionError("never called")


@pytest.mark.parametrize(
    ("missing", "execute_write", "insert_rows", "says"),
    [
        pytest.param(
            {"_execute_write": None}, False, True, "nothing can be written", id="no _execute_write: nothing is written"
        ),
        pytest.param(
            {"_execute_write": _two_arguments},
            False,
            True,
            "nothing can be written",
            id="an _execute_write of another shape is not used",
        ),
        pytest.param(
            {"_insert_message_rows": None},
            True,
            False,
            "plain INSERT",
            id="no _insert_message_rows: transcripts use a plain INSERT",
        ),
    ],
)
def test_a_release_without_a_method_is_degraded_and_says_so(
    session_db: Any, missing: dict[str, Any], execute_write: bool, insert_rows: bool, says: str
) -> None:
    """`status` prints what is degraded; calling a method a release lacks would fail every write."""
    caps = Capabilities.detect(older(session_db, **missing))
    insert_rows = insert_rows and HAS_ROW_INSERT
    assert (caps.execute_write, caps.insert_message_rows) == (execute_write, insert_rows)
    assert any(says in line for line in caps.degraded)
    if HAS_ROW_INSERT:
        assert len(caps.degraded) == 1


def test_a_release_without_hermes_title_rules_gets_the_same_rules(session_db: Any) -> None:
    """Titles must be stored as hermes would store them, or a title written would read back as a rename."""
    caps = Capabilities.detect(older(session_db, sanitize_title=None, MAX_TITLE_LENGTH=12))
    assert caps.max_title_length == 12
    assert caps.sanitize_title("  Weekly\t plan ") == "Weekly plan"
    with pytest.raises(ValueError, match="too long"):
        caps.sanitize_title("A title of more than twelve")
    assert any("sanitize_title" in note for note in caps.degraded)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(0, id="a zero limit"),
        pytest.param(-5, id="a negative limit"),
        pytest.param(True, id="a boolean for a limit"),
        pytest.param("100", id="a limit that is text"),
    ],
)
def test_a_nonsensical_title_limit_falls_back_to_hermes_own(session_db: Any, value: Any) -> None:
    caps = Capabilities.detect(older(session_db, MAX_TITLE_LENGTH=value))
    assert caps.max_title_length == 100


def test_reading_works_without_hermes_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify and status read state.db with plain SQLite: they must run, with hermes' title rules, without it."""
    monkeypatch.setitem(sys.modules, "hermes_state", None)
    caps = Capabilities.for_reading()
    assert (caps.execute_write, caps.insert_message_rows) == (False, False)
    assert caps.sanitize_title is fallback_sanitize_title and caps.max_title_length == 100
    assert caps.degraded == ("hermes-agent is not installed",)


def test_reading_with_hermes_agent_uses_its_rules() -> None:
    assert Capabilities.for_reading() == Capabilities.of_installed()
