"""Shared fixtures: a temporary hermes home, a clean installation, no hidden bugs."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from webui_insights import diagnostics
from webui_insights.commands.demo import hermes_command
from webui_insights.demo_host import TARGET, DemoSession
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


def log_lines(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    """The log lines that contain every one of ``words``."""
    return [r.getMessage() for r in caplog.records if all(w in r.getMessage() for w in words)]


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


# Every lock the save path or the writer can hold: each must be safe across fork() (issue 15).
INTERNAL_LOCK_NAMES = (
    "installation",
    "capture stripe",
    "capture clock",
    "writer",
    "writer wake event",
    "writer hurry event",
    "writer stop event",
    "stats",
    "log",
    "switch",
    "agent usage",
    "sweep",
    "sqlite gate",
)


def internal_locks(chat: DemoSession) -> dict[str, Any]:
    """The installed mirror's locks by name (the capture stripe: the one ``chat`` hashes to)."""
    from webui_insights import forksafe
    from webui_insights.hook import capture

    state, order = installer._state, capture._order
    writer = state.writer
    assert writer is not None and state.sweep is not None
    locks = {
        "installation": state.lock,
        "capture stripe": order.stripes[hash(chat.session_id) % len(order.stripes)],
        "capture clock": order.clock,
        "writer": writer._buffer.lock,
        "writer wake event": writer._wake._cond,  # type: ignore[attr-defined]
        "writer hurry event": writer._hurry._cond,  # type: ignore[attr-defined]
        "writer stop event": writer._stop._cond,  # type: ignore[attr-defined]
        "stats": state.stats._lock,
        "log": state.log._lock,
        "switch": state.switch._lock,
        "agent usage": state.agent._lock,
        "sweep": state.sweep._lock,
        "sqlite gate": forksafe._gate.cond,
    }
    assert tuple(locks) == INTERNAL_LOCK_NAMES
    return locks


def make_session(webui_dir: Path, **kwargs: Any) -> DemoSession:
    return DemoSession(webui_dir, **kwargs)


def read_row(db_path: Path, session_id: str) -> dict[str, Any] | None:
    """Read a sessions row with a short-lived read-only connection (no SessionDB)."""
    conn = sqlite3.connect(Path(db_path).resolve().as_uri() + "?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return dict(row) if row else None
    finally:
        conn.close()


def count_rows(db_path: Path, where: str = "1", params: tuple[Any, ...] = ()) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM sessions WHERE {where}", params).fetchone()[0])
    finally:
        conn.close()


def run_insights(home: Path, days: int = 1, source: str = "webui") -> str:
    """The real `hermes insights` output for ``home``."""
    command = hermes_command()
    assert command is not None, "hermes console script not installed"
    done = subprocess.run(
        [*command, "insights", "--days", str(days), "--source", source],
        env={**os.environ, "HERMES_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Error generating insights" not in done.stdout, done.stdout
    return done.stdout


class LockHolder:
    """A real second process holding state.db's write lock until released."""

    def __init__(self, db_path: Path, seconds: float = 60.0) -> None:
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("lockholder.py")), str(db_path), str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "locked", line

    @property
    def holding(self) -> bool:
        return self.proc.poll() is None

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


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


def save_turn(chat: DemoSession, input_tokens: int = 1, output_tokens: int = 1) -> None:
    """One chat turn, saved through the (wrapped) save, and wait until it is mirrored."""
    import webui_insights

    chat.add_turn("q", "a", input_tokens=input_tokens, output_tokens=output_tokens)
    chat.save()
    assert webui_insights.flush(5)


def tamper(db_path: Path, sql: str, *params: Any) -> None:
    """Change state.db behind the mirror's back, the way another tool would."""
    conn = sqlite3.connect(db_path)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def wait_for(condition: Any, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` passed (a bounded wait, not a timing check)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def in_forked_child(body: Any, timeout: float = 30.0) -> Any:
    """Run ``body()`` in a forked child; its JSON-able result, or an AssertionError saying why not.

    The child always leaves through ``os._exit`` (never back into pytest);
    a child that does not answer within ``timeout`` is killed and reported
    as hung.
    """
    import json
    import select
    import signal
    import traceback

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_fd)
            try:
                payload = {"ok": True, "result": body()}
            except BaseException:  # noqa: BLE001 - everything goes back to the parent
                payload = {"ok": False, "error": traceback.format_exc()}
            data = json.dumps(payload).encode()
            while data:
                data = data[os.write(write_fd, data) :]
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks: list[bytes] = []
    try:
        import time

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"forked child hung for {timeout} s")
            ready, _, _ = select.select([read_fd], [], [], remaining)
            if ready:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
    os.waitpid(pid, 0)
    if not chunks:
        raise AssertionError("forked child died without an answer")
    payload = json.loads(b"".join(chunks))
    if not payload["ok"]:
        raise AssertionError("forked child failed:\n" + payload["error"])
    return payload["result"]


def same_time(seconds: float, within: float = 1e-3) -> Any:
    """``pytest.approx`` for a Unix timestamp: an absolute tolerance only.

    approx's default relative tolerance (1e-6) is half an hour at today's
    epoch, and ``math.isclose``'s (1e-9) almost two seconds: either would pass
    a timestamp that is simply wrong.
    """
    return pytest.approx(seconds, rel=0, abs=within)
