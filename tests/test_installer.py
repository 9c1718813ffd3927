"""The wrapt hook and its lifecycle: what install()/uninstall() do to the host's class."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import wrapt
from conftest import make_session, read_row, save_turn

import webui_insights
from webui_insights import installer
from webui_insights.demo_host import TARGET, DemoSession


def test_failing_save_raises_the_same_exception_and_mirrors_nothing(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir, session_id="not-a-hex-id")
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    with pytest.raises(ValueError, match="unsafe session id") as raised:
        chat.save()
    assert raised.type is ValueError
    assert webui_insights.flush(5)
    assert webui_insights.stats()["snapshots_queued"] == 0
    assert read_row(hermes_home / "state.db", "not-a-hex-id") is None


def test_save_return_value_and_arguments_pass_through(
    hermes_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "returnapp.py").write_text(
        textwrap.dedent(
            """
            calls = []

            class Session:
                session_id = "abcdefabcdef"
                input_tokens = 1

                def save(self, touch_updated_at=True, skip_index=False):
                    calls.append((self, touch_updated_at, skip_index))
                    return "host result"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("returnapp")
    try:
        installer.install(target="returnapp:Session.save", enabled=True)
        chat = module.Session()
        assert chat.save(False, skip_index=True) == "host result"
        assert module.calls == [(chat, False, True)]
        assert webui_insights.stats()["snapshots_queued"] == 1
    finally:
        installer.uninstall()
        sys.modules.pop("returnapp", None)


def test_install_twice_keeps_one_wrapper(mirror, webui_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    wrapper = vars(DemoSession)["save"]
    assert installer.install(target=TARGET, enabled=True) is False
    assert vars(DemoSession)["save"] is wrapper
    assert not isinstance(wrapper.__wrapped__, wrapt.FunctionWrapper)
    assert "already installed" in caplog.text
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    chat.save()
    assert webui_insights.stats()["saves_seen"] == 1


def test_uninstall_restores_exactly_the_original(hermes_home: Path) -> None:
    original = vars(DemoSession)["save"]
    installer.install(target=TARGET, enabled=True)
    assert vars(DemoSession)["save"] is not original
    assert installer.uninstall() is True
    assert vars(DemoSession)["save"] is original
    assert installer.uninstall() is False


def test_uninstall_leaves_a_wrapper_someone_put_over_ours(hermes_home: Path) -> None:
    original = vars(DemoSession)["save"]
    installer.install(target=TARGET, enabled=True)
    ours = vars(DemoSession)["save"]
    theirs = wrapt.FunctionWrapper(ours, lambda wrapped, instance, args, kwargs: wrapped(*args, **kwargs))
    DemoSession.save = theirs  # type: ignore[method-assign]
    try:
        assert installer.uninstall() is False
        assert vars(DemoSession)["save"] is theirs
    finally:
        DemoSession.save = original  # type: ignore[method-assign]


def test_reinstall_after_uninstall_wraps_again(mirror, webui_dir: Path, hermes_home: Path, fast_writer) -> None:
    installer.uninstall()
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer)
    chat = make_session(webui_dir)
    save_turn(chat, 4, 1)
    assert read_row(hermes_home / "state.db", chat.session_id) is not None


def test_install_before_the_target_module_is_imported(
    hermes_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_writer
) -> None:
    package = tmp_path / "lateapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        textwrap.dedent(
            """
            from webui_insights.demo_host import DemoSession

            class Session(DemoSession):
                def save(self, touch_updated_at=True, skip_index=False):
                    return super().save(touch_updated_at, skip_index)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "lateapp.models" not in sys.modules
    installer.install(target="lateapp.models:Session.save", enabled=True, writer_config=fast_writer)
    try:
        module = importlib.import_module("lateapp.models")
        assert isinstance(vars(module.Session)["save"], wrapt.FunctionWrapper)
        chat = module.Session(hermes_home / "webui")
        save_turn(chat, 2, 1)
        assert read_row(hermes_home / "state.db", chat.session_id) is not None
    finally:
        installer.uninstall()
        sys.modules.pop("lateapp.models", None)
        sys.modules.pop("lateapp", None)


def test_hook_registered_before_import_stays_inert_after_uninstall(
    hermes_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "inertapp"
    package.mkdir()
    (package / "__init__.py").write_text("class Session:\n    def save(self):\n        return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    installer.install(target="inertapp:Session.save", enabled=True)
    installer.uninstall()
    try:
        module = importlib.import_module("inertapp")
        assert not isinstance(vars(module.Session)["save"], wrapt.FunctionWrapper)
    finally:
        sys.modules.pop("inertapp", None)


def test_a_subclass_of_the_session_class_is_mirrored(mirror, webui_dir: Path, hermes_home: Path) -> None:
    class Inherits(DemoSession):
        pass

    class Overrides(DemoSession):
        def save(self, touch_updated_at: bool = True, skip_index: bool = False) -> None:
            super().save(touch_updated_at, skip_index)

    chats = [Inherits(webui_dir), Overrides(webui_dir)]
    for chat in chats:
        chat.add_turn("q", "a", input_tokens=3, output_tokens=1)
        chat.save()
    called_through_class = DemoSession(webui_dir)
    called_through_class.add_turn("q", "a", input_tokens=5, output_tokens=1)
    DemoSession.save(called_through_class)
    assert webui_insights.flush(5)
    for chat in (*chats, called_through_class):
        assert read_row(hermes_home / "state.db", chat.session_id) is not None


def test_missing_target_is_quiet_unless_strict(hermes_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert installer.install(target="webui_insights.demo_host:NoSuchClass.save") is True
    assert "cannot wrap" in caplog.text
    installer.uninstall()
    with pytest.raises(installer.TargetNotFound, match="NoSuchClass"):
        installer.install(target="webui_insights.demo_host:NoSuchClass.save", strict=True)
    with pytest.raises(installer.TargetNotFound):
        installer.install(target="no_such_module_anywhere:Session.save", strict=True)
    assert installer.install(target=TARGET, strict=True) is True


def test_malformed_target_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="package.module:Class.method"):
        installer.install(target="api.models.Session.save")


@pytest.mark.swallowed_errors_expected
def test_an_adapter_that_raises_never_reaches_the_save(
    hermes_home: Path, webui_dir: Path, fail_on_swallowed_errors: list[tuple[str, BaseException]]
) -> None:
    def broken(session: Any) -> None:
        raise RuntimeError("adapter bug")

    installer.install(target=TARGET, enabled=True, adapter=broken)
    chat = make_session(webui_dir)
    chat.add_turn("q", "a", input_tokens=1, output_tokens=1)
    assert chat.save() is None
    assert chat.path.exists()
    assert [type(e) for _, e in fail_on_swallowed_errors] == [RuntimeError]
    stats = webui_insights.stats()
    assert stats["internal_errors"] == 1 and "adapter bug" in stats["last_error"]


def test_custom_adapter_and_stats_shape(hermes_home: Path, webui_dir: Path, fast_writer) -> None:
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
    for key in ("saves_seen", "snapshots_queued", "rows_written", "failures", "pending", "skipped", "dropped"):
        assert key in stats
    for reason in ("unchanged", "disabled", "no_hermes_state", "no_state_db", "invalid_profile", "bad_value"):
        assert reason in stats["skipped"]


def test_flush_without_install_returns_true_and_never_raises() -> None:
    assert webui_insights.flush(0.01) is True
    assert webui_insights.stats()["installed"] is False


def test_reconcile_sweep_starts_with_the_writer_and_repairs_a_lost_update(
    hermes_home: Path, webui_dir: Path, fast_writer
) -> None:
    installer.install(target=TARGET, enabled=True, writer_config=fast_writer, reconcile_interval=3600)
    sweep = installer._state.sweep
    assert sweep is not None and not sweep.running  # nothing saved yet: no threads
    chat = make_session(webui_dir)
    save_turn(chat, 5, 1)
    assert sweep.running
    # An update the writer never saw (say, lost to a kill -9): the file is ahead.
    chat.add_turn("q", "a", input_tokens=5, output_tokens=1)
    vars(DemoSession)["save"].__wrapped__(chat)
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 5  # type: ignore[index]
    result = sweep.run_once()
    assert result is not None and result.written == 1
    assert read_row(hermes_home / "state.db", chat.session_id)["input_tokens"] == 10  # type: ignore[index]
    assert webui_insights.stats()["reconciled"] == 1
    installer.uninstall()
    assert installer._state.sweep is None and not sweep.running


def test_no_reconcile_sweep_for_a_custom_adapter_unless_asked(hermes_home: Path) -> None:
    installer.install(target=TARGET, enabled=True, adapter=lambda s: None)
    assert installer._state.sweep is None
