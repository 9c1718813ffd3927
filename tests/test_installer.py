"""The wrapt hook and its lifecycle: what install()/uninstall() do to the host's class, and capture() without them."""

from __future__ import annotations

import importlib
import logging
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wrapt
from support.chats import make_session, save_turn
from support.checks import log_lines, wait_for
from support.db import read_row

import webui_insights
from webui_insights import sweep as sweep_module
from webui_insights.demo_host import TARGET, DemoSession
from webui_insights.hook import installer
from webui_insights.writer import THREAD_NAME, WriterConfig


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """conftest's ``log``, from DEBUG up: install reports what it wrapped at that level."""
    caplog.set_level(logging.DEBUG, logger="webui_insights")
    return caplog


@pytest.fixture
def host_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Write small host modules into a temp dir on sys.path; forget them afterwards."""
    written: list[str] = []

    def write(name: str, source: str) -> str:
        path = tmp_path.joinpath(*name.split("."))
        if "." in name:
            package = path.parent
            package.mkdir(parents=True, exist_ok=True)
            (package / "__init__.py").touch()
        path.with_suffix(".py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    installer.uninstall()
    for name in list(sys.modules):
        if any(name == w or name == w.split(".")[0] or name.startswith(w + ".") for w in written):
            sys.modules.pop(name, None)


# ------------------------------------------------------------ the host's call


def test_failing_save_raises_the_same_exception_and_mirrors_nothing(
    mirror: Any, webui_dir: Path, hermes_home: Path
) -> None:
    chat = make_session(webui_dir, session_id="not-a-hex-id")
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    with pytest.raises(ValueError, match="unsafe session id") as raised:
        chat.save()
    assert raised.type is ValueError
    assert webui_insights.flush(5)
    assert webui_insights.stats()["snapshots_queued"] == 0
    assert read_row(hermes_home / "state.db", "not-a-hex-id") is None


def test_save_return_value_and_arguments_pass_through(hermes_home: Path, host_package: Any) -> None:
    name = host_package(
        "returnapp",
        """
        calls = []

        class Session:
            session_id = "abcdefabcdef"
            input_tokens = 1

            def save(self, touch_updated_at=True, skip_index=False):
                calls.append((self, touch_updated_at, skip_index))
                return "host result"
        """,
    )
    module = importlib.import_module(name)
    installer.install(target="returnapp:Session.save", enabled=True)
    chat = module.Session()
    assert chat.save(False, skip_index=True) == "host result"
    assert module.calls == [(chat, False, True)]
    assert webui_insights.stats()["snapshots_queued"] == 1


# -------------------------------------------------------------- lifecycle


def test_install_twice_keeps_one_wrapper_and_warns(mirror: Any, webui_dir: Path, log: pytest.LogCaptureFixture) -> None:
    wrapper = vars(DemoSession)["save"]
    assert installer.install(target=TARGET, enabled=True) is False
    assert vars(DemoSession)["save"] is wrapper
    assert not isinstance(wrapper.__wrapped__, wrapt.FunctionWrapper)
    assert log_lines(log, "already installed")
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    assert webui_insights.stats()["saves_seen"] == 1


def test_uninstall_restores_exactly_the_original_and_is_idempotent(hermes_home: Path) -> None:
    original = vars(DemoSession)["save"]
    installer.install(target=TARGET, enabled=True)
    assert vars(DemoSession)["save"] is not original
    assert installer.is_installed()
    assert installer.uninstall() is True
    assert vars(DemoSession)["save"] is original
    assert installer.uninstall() is False
    assert not installer.is_installed()


def test_uninstall_leaves_a_wrapper_someone_put_over_ours(hermes_home: Path, log: pytest.LogCaptureFixture) -> None:
    original = vars(DemoSession)["save"]
    installer.install(target=TARGET, enabled=True)
    ours = vars(DemoSession)["save"]
    theirs = wrapt.FunctionWrapper(ours, lambda wrapped, instance, args, kwargs: wrapped(*args, **kwargs))
    DemoSession.save = theirs  # type: ignore[method-assign]
    try:
        assert installer.uninstall() is False
        assert vars(DemoSession)["save"] is theirs
        assert log_lines(log, "was wrapped again after us; leaving it in place")
    finally:
        DemoSession.save = original  # type: ignore[method-assign]


def test_reinstall_after_uninstall_wraps_again(
    mirror: Any, webui_dir: Path, hermes_home: Path, fast_writer: WriterConfig
) -> None:
    installer.uninstall()
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer)
    chat = make_session(webui_dir)
    save_turn(chat, 4, 1)
    assert read_row(hermes_home / "state.db", chat.session_id) is not None


def test_install_before_the_target_module_is_imported(
    hermes_home: Path, host_package: Any, fast_writer: WriterConfig
) -> None:
    host_package(
        "lateapp.models",
        """
        from webui_insights.demo_host import DemoSession

        class Session(DemoSession):
            def save(self, touch_updated_at=True, skip_index=False):
                return super().save(touch_updated_at, skip_index)
        """,
    )
    assert "lateapp.models" not in sys.modules
    installer.install(target="lateapp.models:Session.save", enabled=True, writer_config=fast_writer)
    module = importlib.import_module("lateapp.models")
    assert isinstance(vars(module.Session)["save"], wrapt.FunctionWrapper)
    chat = module.Session(hermes_home / "webui")
    save_turn(chat, 2, 1)
    assert read_row(hermes_home / "state.db", chat.session_id) is not None
    assert installer.uninstall() is True
    assert not isinstance(vars(module.Session)["save"], wrapt.FunctionWrapper)


def test_hook_registered_before_import_stays_inert_after_uninstall(hermes_home: Path, host_package: Any) -> None:
    host_package("inertapp.models", "class Session:\n    def save(self):\n        return 1\n")
    installer.install(target="inertapp.models:Session.save", enabled=True)
    installer.uninstall()
    module = importlib.import_module("inertapp.models")
    assert not isinstance(vars(module.Session)["save"], wrapt.FunctionWrapper)


def test_a_target_missing_from_a_module_imported_later_is_logged_and_the_import_works(
    hermes_home: Path, host_package: Any, log: pytest.LogCaptureFixture
) -> None:
    host_package("renamedapp.models", "class Conversation:\n    def save(self):\n        return 1\n")
    installer.install(target="renamedapp.models:Session.save", enabled=True)
    module = importlib.import_module("renamedapp.models")  # the host's import is not broken
    assert module.Conversation().save() == 1
    # wrapt 1.x says AttributeError, 2.x PathResolutionError: the class and its message, either way.
    assert log_lines(log, "cannot wrap renamedapp.models:Session.save: ", "Error: ", "'Session'")


def test_a_subclass_and_calls_through_the_class_are_mirrored(mirror: Any, webui_dir: Path, hermes_home: Path) -> None:
    class Inherits(DemoSession):
        pass

    class Overrides(DemoSession):
        def save(self, touch_updated_at: bool = True, skip_index: bool = False) -> None:
            super().save(touch_updated_at, skip_index)

    chats = [Inherits(webui_dir), Overrides(webui_dir)]
    for chat in chats:
        chat.add_turn("q", "a", input_tokens=3, output_tokens=1)
        chat.save()
    through_class = DemoSession(webui_dir)
    through_class.add_turn("q", "a", input_tokens=5, output_tokens=1)
    DemoSession.save(through_class)
    assert webui_insights.flush(5)
    for chat in (*chats, through_class):
        assert read_row(hermes_home / "state.db", chat.session_id) is not None
    assert webui_insights.stats()["snapshots_queued"] == 3  # the override's super() call is not queued twice


def test_static_and_class_method_saves_mirror_their_session_argument(
    hermes_home: Path, host_package: Any, fast_writer: WriterConfig
) -> None:
    host_package(
        "storeapp",
        """
        from webui_insights.demo_host import DemoSession

        class Store:
            @staticmethod
            def save_static(session):
                session.save()
                return "static"

            @classmethod
            def save_class(cls, session):
                session.save()
                return cls.__name__
        """,
    )
    module = importlib.import_module("storeapp")
    installer.install(target="storeapp:Store.save_static", enabled=True, writer_config=fast_writer)
    chats = [DemoSession(hermes_home / "webui") for _ in range(4)]
    for chat in chats:
        chat.add_turn("q", "a", input_tokens=2, output_tokens=1)
    assert module.Store.save_static(chats[0]) == "static"
    assert module.Store().save_static(chats[1]) == "static"
    installer.uninstall()
    installer.install(target="storeapp:Store.save_class", enabled=True, writer_config=fast_writer)
    assert module.Store.save_class(chats[2]) == "Store"
    assert module.Store().save_class(chats[3]) == "Store"
    assert webui_insights.flush(5)
    for chat in chats:
        assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 2  # type: ignore[index]


def test_the_wrapper_is_built_with_positional_arguments_only(
    mirror: Any, monkeypatch: pytest.MonkeyPatch, hermes_home: Path
) -> None:
    # wrapt 2 renamed keywords of FunctionWrapper (opentelemetry-python-contrib #4442): positional works on 1.x and 2.x.
    calls: list[tuple[int, tuple[str, ...]]] = []

    class PositionalOnly(wrapt.FunctionWrapper):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            calls.append((len(args), tuple(kwargs)))
            if kwargs:
                raise TypeError(f"keywords passed to FunctionWrapper: {sorted(kwargs)}")
            super().__init__(*args)

    monkeypatch.setattr(wrapt, "FunctionWrapper", PositionalOnly)
    installer.uninstall()
    installer.install(target=TARGET, enabled=True)
    assert installer.is_installed()
    assert calls and all(kw == () for _, kw in calls)


def test_missing_target_is_quiet_unless_strict(hermes_home: Path, log: pytest.LogCaptureFixture) -> None:
    assert installer.install(target="webui_insights.demo_host:NoSuchClass.save") is True
    assert log_lines(log, "cannot wrap webui_insights.demo_host:NoSuchClass.save: ", "Error: ", "'NoSuchClass'")
    installer.uninstall()
    with pytest.raises(installer.TargetNotFound, match="NoSuchClass"):
        installer.install(target="webui_insights.demo_host:NoSuchClass.save", strict=True)
    with pytest.raises(installer.TargetNotFound):
        installer.install(target="no_such_module_anywhere:Session.save", strict=True)
    assert installer.install(target=TARGET, strict=True) is True


def test_malformed_target_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="package.module:Class.method"):
        installer.install(target="api.models.Session.save")


# ------------------------------------------------------------ adapters, switch


def test_an_adapter_that_raises_never_reaches_the_save(
    hermes_home: Path, webui_dir: Path, log: pytest.LogCaptureFixture
) -> None:
    def broken(session: Any) -> None:
        raise RuntimeError("adapter bug")

    installer.install(target=TARGET, enabled=True, adapter=broken)
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()  # returns: nothing of ours reached the host
    assert chat.path.exists()
    stats = webui_insights.stats()
    assert stats["skipped"]["adapter_error"] == 1 and stats["internal_errors"] == 0
    assert log_lines(log, "the adapter failed on a DemoSession", "RuntimeError: adapter bug")


def test_custom_adapter_and_stats_shape(hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig) -> None:
    def adapter(session: DemoSession) -> webui_insights.UsageSnapshot:
        return webui_insights.UsageSnapshot(session_id=session.session_id, input_tokens=42, title="From adapter")

    installer.install(target=TARGET, enabled=True, adapter=adapter, writer_config=fast_writer)
    chat = make_session(webui_dir)
    chat.save()
    chat.save()
    assert webui_insights.flush(5)
    row = read_row(hermes_home / "state.db", chat.session_id)
    assert row is not None and row["input_tokens"] == 42 and row["title"] == "From adapter"
    stats = webui_insights.stats()
    assert stats["skipped"]["unchanged"] == 1
    for key in ("saves_seen", "snapshots_queued", "rows_written", "failures", "pending", "databases", "sweep"):
        assert key in stats
    for reason in ("unchanged", "disabled", "no_hermes_state", "no_state_db", "invalid_profile", "bad_cost"):
        assert reason in stats["skipped"]
    assert set(stats["dropped"]) >= {"queue_full", "thread_start_failed", "exit_timeout", "agent_usage"}


def test_an_enabled_callable_that_raises_means_off_and_is_logged_and_counted(
    hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig, log: pytest.LogCaptureFixture
) -> None:
    def switch() -> bool:
        raise LookupError("feature flag service down")

    installer.install(target=TARGET, enabled=switch, writer_config=fast_writer)
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()  # returns: nothing of ours reached the host
    stats = webui_insights.stats()
    assert stats["switch_errors"] == 1 and stats["skipped"]["disabled"] == 1 and stats["internal_errors"] == 0
    assert log_lines(log, "the enabled() switch raised LookupError: feature flag service down")


def test_flush_and_stats_without_install() -> None:
    assert webui_insights.flush(0.01) is True
    stats = webui_insights.stats()
    assert stats["installed"] is False and stats["databases"] == [] and stats["sweep"] is None


# ----------------------------------------------------- capture() without install()


def test_capture_without_install_works_when_the_env_switch_is_on(
    hermes_home: Path, webui_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "1")
    before = {t for t in threading.enumerate() if t.name == THREAD_NAME}
    chat = make_session(webui_dir, title="No install")
    chat.add_turn("q", "a", input_tokens=6, output_tokens=1)
    chat.save()  # not wrapped: the frontend calls capture() itself
    assert installer._state.writer is None  # nothing started before the first mirrored save
    assert webui_insights.capture(chat) is True
    assert {t for t in threading.enumerate() if t.name == THREAD_NAME} - before  # started lazily
    assert webui_insights.flush(5)
    row = read_row(hermes_home / "state.db", chat.session_id)
    assert row is not None and (row["input_tokens"], row["title"]) == (6, "No install")
    assert webui_insights.stats()["installed"] is False


def test_capture_without_install_follows_the_webui_setting(hermes_home: Path, webui_dir: Path) -> None:
    webui_dir.mkdir(parents=True, exist_ok=True)
    (webui_dir / "settings.json").write_text('{"sync_to_insights": true}')
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=2, output_tokens=1)
    assert webui_insights.capture(chat) is True
    assert webui_insights.flush(5)
    assert read_row(hermes_home / "state.db", chat.session_id) is not None


def test_capture_without_install_and_without_a_switch_is_off(hermes_home: Path, webui_dir: Path) -> None:
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=2, output_tokens=1)
    assert webui_insights.capture(chat) is False
    assert webui_insights.stats()["skipped"]["disabled"] == 1
    assert installer._state.writer is None  # no thread for nothing


def test_capture_follows_install_while_installed(hermes_home: Path, webui_dir: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "1")
    installer.install(target=TARGET, enabled=False)
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=2, output_tokens=1)
    assert webui_insights.capture(chat) is False
    installer.uninstall()
    assert webui_insights.capture(chat) is True


@pytest.mark.swallowed_errors_expected
def test_a_bug_in_capture_is_counted_logged_and_never_raised(
    hermes_home: Path, monkeypatch: pytest.MonkeyPatch, fail_on_swallowed_errors: list[Any], log: Any
) -> None:
    def broken(*args: Any) -> bool:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(installer, "_capture", broken)
    assert webui_insights.capture(object()) is False
    assert [where for where, _ in fail_on_swallowed_errors] == ["capture"]
    assert webui_insights.stats()["internal_errors"] == 1
    assert log_lines(log, "internal error in capture: ZeroDivisionError: division by zero")


# ---------------------------------------------------------------- the sweep


def test_reconcile_sweep_starts_with_the_writer_and_repairs_a_lost_update(
    hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig
) -> None:
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer, reconcile_interval=3600)
    sweep = installer._state.sweep
    assert sweep is not None and not sweep.running  # nothing saved yet: no threads
    chat = make_session(webui_dir)
    save_turn(chat, 5, 1)
    assert wait_for(lambda: sweep.running, timeout=5)
    # An update the writer never saw (say, lost to a kill -9): the file is ahead.
    chat.add_turn("q", "a", input_tokens=5, output_tokens=1)
    vars(DemoSession)["save"].__wrapped__(chat)
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 5  # type: ignore[index]
    result = sweep.run_once()
    assert result is not None and result.repaired == 1
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 10  # type: ignore[index]
    stats = webui_insights.stats()
    assert stats["reconciled"] == 1 and stats["sweep_passes"] == 1
    installer.uninstall()
    assert installer._state.sweep is None and not sweep.running


def test_the_sweep_starts_again_after_a_reinstall(
    hermes_home: Path, webui_dir: Path, fast_writer: WriterConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep_module, "DEFAULT_FIRST_DELAY_S", 0.0)
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer, reconcile_interval=3600)
    save_turn(make_session(webui_dir), 1, 1)
    first = installer._state.sweep
    assert first is not None and wait_for(lambda: first.passes == 1, timeout=10)
    installer.uninstall()
    assert not first.running
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer, reconcile_interval=3600)
    second = installer._state.sweep
    assert second is not None and second is not first
    assert wait_for(lambda: second.running and second.passes == 1, timeout=10)  # no new save needed
    assert first.passes == 1


def test_no_reconcile_sweep_for_a_custom_adapter_unless_asked(hermes_home: Path) -> None:
    installer.install(target=TARGET, enabled=True, adapter=lambda s: None)
    assert installer._state.sweep is None
    installer.uninstall()
    installer.install(target=TARGET, enabled=True, adapter=lambda s: None, reconcile_interval=60)
    assert installer._state.sweep is not None


def test_writer_config_changes_keep_pending_work_in_one_queue(hermes_home: Path, webui_dir: Path) -> None:
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(debounce_s=30.0))
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    writer = installer._state.writer
    installer.uninstall()
    installer.install(target=TARGET, enabled=True, writer_config=WriterConfig(debounce_s=0.01))
    assert installer._state.writer is writer
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    assert webui_insights.flush(5)
    assert webui_insights.stats()["chats"]["stale"] == 0
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 2  # type: ignore[index]
