"""Shared fixtures: a temporary hermes home, a clean installation, no hidden bugs.

Fixtures only: the helpers they and the tests call live in ``tests/support``.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.lockholder import LockHolder

from webui_insights import diagnostics
from webui_insights.demo_host import TARGET
from webui_insights.engine.store import create_state_db
from webui_insights.hook import installer
from webui_insights.writer import WriterConfig

# Tests Ctrl-C the CLI and stop servers with SIGINT, as a terminal would. A suite
# started as a background job of a non-interactive shell (`bash .ci/run &`,
# nohup) begins with SIGINT ignored, and every child would inherit that: the CLI
# (rightly) keeps ignoring it and the servers never stop. A Python handler here
# is reset to the default on exec, so children start as they would from a shell.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def fail_on_swallowed_errors(request: pytest.FixtureRequest) -> Iterator[list[tuple[str, BaseException]]]:
    """Our guards keep the host alive; here they must not hide a bug.

    A test that injects a fault on purpose marks itself
    ``@pytest.mark.swallowed_errors_expected`` and inspects the list.
    """
    seen: list[tuple[str, BaseException]] = []

    def listener(where: str, exc: BaseException) -> None:
        seen.append((where, exc))

    diagnostics.add_internal_error_listener(listener)
    yield seen
    diagnostics.remove_internal_error_listener(listener)
    if seen and not request.node.get_closest_marker("swallowed_errors_expected"):
        where, exc = seen[0]
        pytest.fail(f"a guard swallowed an internal error in {where}: {exc!r}", pytrace=False)


@pytest.fixture(autouse=True)
def clean_installation() -> Iterator[None]:
    installer._reset_for_tests()
    yield
    installer._reset_for_tests()


@pytest.fixture
def hermes_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HERMES_HOME with an initialised state.db and a WebUI state dir."""
    home = tmp_path / "hermes"
    home.mkdir()
    monkeypatch.setenv("HERMES_HOME", str(home))
    monkeypatch.setenv("HERMES_WEBUI_STATE_DIR", str(home / "webui"))
    monkeypatch.delenv("WEBUI_INSIGHTS_ENABLED", raising=False)
    monkeypatch.delenv("HERMES_WEBUI_SETTINGS_FILE", raising=False)
    create_state_db(home / "state.db")
    return home


@pytest.fixture(scope="session")
def fresh_state_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state.db as hermes' first run leaves it, made once (making one takes ~50 ms)."""
    path = tmp_path_factory.mktemp("template") / "state.db"
    create_state_db(path)
    return path


@pytest.fixture
def db(tmp_path: Path, fresh_state_db: Path) -> Path:
    """A copy of it for one test (closed by hermes: the file is the whole database)."""
    path = tmp_path / "state.db"
    shutil.copyfile(fresh_state_db, path)
    return path


@pytest.fixture
def webui_dir(hermes_home: Path) -> Path:
    return hermes_home / "webui"


@pytest.fixture
def fast_writer() -> WriterConfig:
    """Writer settings that keep tests quick (short debounce and backoff)."""
    return WriterConfig(
        debounce_s=0.01, busy_retry_s=0.01, busy_retry_cap_s=0.05, error_backoff_s=0.1, error_backoff_cap_s=0.4
    )


@pytest.fixture
def mirror(hermes_home: Path, fast_writer: WriterConfig) -> Any:
    """install() on the demo host, enabled, with a fast writer."""
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer)
    return installer


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The ``webui_insights`` logger's records from INFO up."""
    caplog.set_level(logging.INFO, logger="webui_insights")
    return caplog


@pytest.fixture
def sqlite_sections(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The threads that entered ``forksafe.sqlite_section``, one entry per entry (the real section still runs)."""
    from webui_insights import forksafe

    entered: list[int] = []
    real = forksafe.sqlite_section

    def counting() -> Any:
        entered.append(threading.get_ident())
        return real()

    monkeypatch.setattr(forksafe, "sqlite_section", counting)
    return entered


@pytest.fixture
def lock_holder() -> Iterator[Any]:
    holders: list[LockHolder] = []

    def start(db_path: Path, seconds: float = 60.0) -> LockHolder:
        holder = LockHolder(db_path, seconds)
        holders.append(holder)
        return holder

    yield start
    for holder in holders:
        holder.release()
