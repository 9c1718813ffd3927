"""@mirror_usage: install()'s guarantees on a save the user owns."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.checks import same_time
from support.db import read_row

import webui_insights
from webui_insights import UsageSnapshot
from webui_insights.demo_host import TARGET
from webui_insights.hook import installer
from webui_insights.hook.decorator import mirror_usage
from webui_insights.writer import THREAD_NAME


class Note:
    """A session of someone's own frontend: none of the WebUI's field names."""

    def __init__(self, key: str, *, used_in: int = 0, used_out: int = 0, label: str | None = None) -> None:
        self.key = key
        self.used_in = used_in
        self.used_out = used_out
        self.label = label
        self.born = time.time() - 60
        self.saved = 0


def note_usage(note: Note) -> UsageSnapshot:
    return UsageSnapshot(
        session_id=note.key,
        model="own/model",
        title=note.label,
        input_tokens=note.used_in,
        output_tokens=note.used_out,
        message_count=2,
        created_at=note.born,
    )


def decorated_note_class(**options: Any) -> Any:
    """A fresh class per test, so each test picks its own decorator options."""

    class SavedNote(Note):
        @mirror_usage(adapter=note_usage, **options)
        def save(self, suffix: str = "") -> str:
            self.saved += 1
            return f"saved {self.key}{suffix}"

    return SavedNote


# Defined once at import: must keep working across install()/uninstall() and
# the per-test reset of the installation state.
class ModuleLevelNote(Note):
    @mirror_usage(adapter=note_usage, enabled=True)
    def save(self) -> None:
        self.saved += 1


def db(home: Path) -> Path:
    return home / "state.db"


def row(home: Path, session_id: str) -> dict[str, Any]:
    found = read_row(db(home), session_id)
    assert found is not None, f"no row for {session_id}"
    return found


def test_mirror_usage_is_public_api() -> None:
    assert webui_insights.mirror_usage is mirror_usage
    assert "mirror_usage" in webui_insights.__all__


def test_decorated_method_mirrors_its_own_session(hermes_home: Path) -> None:
    note = decorated_note_class(enabled=True)("note-1", used_in=120, used_out=30, label="Own frontend")
    note.save()
    assert webui_insights.flush(5)
    row = read_row(db(hermes_home), "note-1")
    assert row is not None
    assert (row["source"], row["model"], row["title"]) == ("webui", "own/model", "Own frontend")
    assert (row["input_tokens"], row["output_tokens"], row["message_count"]) == (120, 30, 2)
    assert row["started_at"] == same_time(note.born)


def test_plain_function_mirrors_its_first_argument(hermes_home: Path) -> None:
    @mirror_usage(adapter=note_usage, enabled=True)
    def save_note(note: Note, where: str) -> str:
        return where

    assert save_note(Note("fn-note", used_in=5), "disk") == "disk"
    assert webui_insights.flush(5)
    assert row(hermes_home, "fn-note")["input_tokens"] == 5


def test_static_method_mirrors_its_first_argument(hermes_home: Path) -> None:
    class Store:
        @staticmethod
        @mirror_usage(adapter=note_usage, enabled=True)
        def save(note: Note) -> None:
            note.saved += 1

    Store.save(Note("static-1", used_in=3))
    Store().save(Note("static-2", used_in=4))
    assert webui_insights.flush(5)
    assert row(hermes_home, "static-1")["input_tokens"] == 3
    assert row(hermes_home, "static-2")["input_tokens"] == 4


def test_subclass_inheriting_the_save_is_mirrored_through_instance_and_class(hermes_home: Path) -> None:
    base = decorated_note_class(enabled=True)

    class Child(base):  # type: ignore[misc,valid-type]
        pass

    Child("child-a", used_in=7).save()
    base.save(Child("child-b", used_in=8))  # called through the class: self is still the session
    assert webui_insights.flush(5)
    assert row(hermes_home, "child-a")["input_tokens"] == 7
    assert row(hermes_home, "child-b")["input_tokens"] == 8


def test_override_calling_super_is_queued_once(hermes_home: Path) -> None:
    base = decorated_note_class(enabled=True)

    class Child(base):  # type: ignore[misc,valid-type]
        @mirror_usage(adapter=note_usage, enabled=True)
        def save(self, suffix: str = "") -> str:
            return str(super().save(suffix + "!"))

    note = Child("child-super", used_in=9)
    assert note.save() == "saved child-super!"
    assert webui_insights.flush(5)
    counts = webui_insights.stats()
    assert counts["saves_seen"] == 2
    assert counts["snapshots_queued"] == 1
    assert counts["skipped"]["unchanged"] == 1


def test_result_and_arguments_pass_through_unchanged(hermes_home: Path) -> None:
    note = decorated_note_class(enabled=True)("passthrough", used_in=1)
    assert note.save(suffix="?") == "saved passthrough?"
    assert note.saved == 1


def test_failing_save_raises_the_same_exception_and_mirrors_nothing(hermes_home: Path) -> None:
    failure = OSError("disk full")

    class Failing(Note):
        @mirror_usage(adapter=note_usage, enabled=True)
        def save(self) -> None:
            raise failure

    with pytest.raises(OSError) as raised:
        Failing("failing", used_in=10).save()
    assert raised.value is failure
    assert webui_insights.flush(5)
    assert webui_insights.stats()["saves_seen"] == 0
    assert read_row(db(hermes_home), "failing") is None


def test_adapter_that_raises_never_reaches_the_caller(hermes_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(note: Note) -> UsageSnapshot:
        raise KeyError("no such field")

    class Saved(Note):
        @mirror_usage(adapter=broken, enabled=True)
        def save(self) -> str:
            return "ok"

    caplog.set_level(logging.INFO, logger="webui_insights")
    assert Saved("broken", used_in=1).save() == "ok"
    stats = webui_insights.stats()
    assert stats["skipped"]["adapter_error"] == 1 and stats["internal_errors"] == 0
    assert any("the adapter failed on a Saved: KeyError: 'no such field'" in r.getMessage() for r in caplog.records)


@pytest.mark.swallowed_errors_expected
def test_a_bug_in_our_part_is_counted_and_never_reaches_the_caller(
    hermes_home: Path, monkeypatch: pytest.MonkeyPatch, fail_on_swallowed_errors: list[Any]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> bool:
        raise AttributeError("'NoneType' object has no attribute 'submit'")

    monkeypatch.setattr(installer, "_capture", broken)
    assert decorated_note_class(enabled=True)("bug", used_in=1).save() == "saved bug"
    assert [where for where, _ in fail_on_swallowed_errors] == ["mirror_usage"]
    assert webui_insights.stats()["internal_errors"] == 1


def test_adapter_returning_none_mirrors_nothing(hermes_home: Path) -> None:
    @mirror_usage(adapter=lambda session: None, enabled=True)
    def save(note: Note) -> None:
        pass

    save(Note("none-1", used_in=5))
    assert webui_insights.flush(5)
    assert webui_insights.stats()["skipped"]["blank"] == 1
    assert read_row(db(hermes_home), "none-1") is None


def test_unchanged_second_save_is_not_queued_again(hermes_home: Path) -> None:
    note = decorated_note_class(enabled=True)("twice", used_in=11)
    note.save()
    note.save()
    note.used_in = 12
    note.save()
    assert webui_insights.flush(5)
    counts = webui_insights.stats()
    assert (counts["saves_seen"], counts["snapshots_queued"], counts["skipped"]["unchanged"]) == (3, 2, 1)
    assert row(hermes_home, "twice")["input_tokens"] == 12


# ------------------------------------------------------------- the switch


def test_enabled_false_wins_over_install_and_env(
    hermes_home: Path, fast_writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "1")
    webui_insights.install(target=TARGET, enabled=True, writer_config=fast_writer)
    decorated_note_class(enabled=False)("off-1", used_in=1).save()
    assert webui_insights.flush(5)
    assert webui_insights.stats()["skipped"]["disabled"] == 1
    assert read_row(db(hermes_home), "off-1") is None


def test_enabled_true_wins_over_install_false(hermes_home: Path, fast_writer: Any) -> None:
    webui_insights.install(target=TARGET, enabled=False, writer_config=fast_writer)
    decorated_note_class(enabled=True)("on-1", used_in=2).save()
    assert webui_insights.flush(5)
    assert row(hermes_home, "on-1")["input_tokens"] == 2


def test_enabled_none_follows_an_active_install(
    hermes_home: Path, fast_writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "1")
    cls = decorated_note_class()
    webui_insights.install(target=TARGET, enabled=False, writer_config=fast_writer)
    cls("follow-off", used_in=1).save()
    assert webui_insights.flush(5)
    assert webui_insights.stats()["skipped"]["disabled"] == 1
    webui_insights.uninstall()
    webui_insights.install(target=TARGET, enabled=True)
    cls("follow-on", used_in=1).save()
    assert webui_insights.flush(5)
    assert read_row(db(hermes_home), "follow-off") is None
    assert read_row(db(hermes_home), "follow-on") is not None


def test_enabled_none_without_install_reads_the_env_and_starts_the_writer(
    hermes_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "1")
    before = {t for t in threading.enumerate() if t.name == THREAD_NAME}
    decorated_note_class()("env-on", used_in=4).save()
    assert {t for t in threading.enumerate() if t.name == THREAD_NAME} - before  # no install() needed
    assert webui_insights.flush(5)
    assert row(hermes_home, "env-on")["input_tokens"] == 4
    assert webui_insights.stats()["installed"] is False


def test_enabled_none_without_install_reads_the_webui_setting(hermes_home: Path, webui_dir: Path) -> None:
    webui_dir.mkdir(parents=True, exist_ok=True)
    (webui_dir / "settings.json").write_text(json.dumps({"sync_to_insights": True}))
    decorated_note_class()("setting-on", used_in=6).save()
    assert webui_insights.flush(5)
    assert row(hermes_home, "setting-on")["input_tokens"] == 6


def test_enabled_none_with_nothing_set_is_off(hermes_home: Path) -> None:
    decorated_note_class()("default-off", used_in=6).save()
    assert webui_insights.flush(5)
    assert webui_insights.stats()["skipped"]["disabled"] == 1
    assert read_row(db(hermes_home), "default-off") is None


def test_enabled_callable_is_asked_on_every_save(hermes_home: Path) -> None:
    answers = [False, True]
    cls = decorated_note_class(enabled=lambda: answers.pop(0))
    note = cls("asked", used_in=1)
    note.save()
    note.save()
    assert answers == []
    assert webui_insights.flush(5)
    counts = webui_insights.stats()
    assert (counts["skipped"]["disabled"], counts["snapshots_queued"]) == (1, 1)


def test_an_enabled_callable_that_raises_means_off_counted_and_logged(
    hermes_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def flag() -> bool:
        raise TimeoutError("flag service")

    caplog.set_level(logging.INFO, logger="webui_insights")
    assert decorated_note_class(enabled=flag)("flag", used_in=1).save() == "saved flag"
    stats = webui_insights.stats()
    assert (stats["switch_errors"], stats["skipped"]["disabled"]) == (1, 1)
    assert any("the enabled() switch raised TimeoutError: flag service" in r.getMessage() for r in caplog.records)


def test_class_method_mirrors_its_first_argument(hermes_home: Path) -> None:
    class Store:
        @classmethod
        @mirror_usage(adapter=note_usage, enabled=True)
        def save(cls, note: Note) -> str:
            return cls.__name__

    assert Store.save(Note("class-1", used_in=3)) == "Store"
    assert webui_insights.flush(5)
    assert row(hermes_home, "class-1")["input_tokens"] == 3


def test_decorator_defined_at_import_survives_uninstall_and_reset(hermes_home: Path, fast_writer: Any) -> None:
    webui_insights.install(target=TARGET, enabled=False, writer_config=fast_writer)
    webui_insights.uninstall()
    installer._reset_for_tests()
    ModuleLevelNote("module-level", used_in=13).save()
    assert webui_insights.flush(5)
    assert row(hermes_home, "module-level")["input_tokens"] == 13


# ------------------------------------------------------------- async, shape


def test_async_save_is_awaited_before_the_capture(hermes_home: Path) -> None:
    class AsyncNote(Note):
        @mirror_usage(adapter=note_usage, enabled=True)
        async def save(self) -> str:
            await asyncio.sleep(0)
            self.used_out = 99  # set by the save itself: the capture must see it
            return "async saved"

    assert inspect.iscoroutinefunction(AsyncNote.save)
    assert inspect.iscoroutinefunction(AsyncNote("x").save)
    assert asyncio.run(AsyncNote("async-1", used_in=1).save()) == "async saved"
    assert webui_insights.flush(5)
    assert row(hermes_home, "async-1")["output_tokens"] == 99


def test_async_save_that_raises_mirrors_nothing(hermes_home: Path) -> None:
    @mirror_usage(adapter=note_usage, enabled=True)
    async def save(note: Note) -> None:
        raise RuntimeError("remote store down")

    with pytest.raises(RuntimeError, match="remote store down"):
        asyncio.run(save(Note("async-fail", used_in=1)))
    assert webui_insights.stats()["saves_seen"] == 0


def test_wrapper_keeps_name_doc_and_signature() -> None:
    def save(note: Note, *, durable: bool = True) -> None:
        """Write the note."""

    wrapped = mirror_usage(adapter=note_usage)(save)
    assert wrapped.__name__ == "save"
    assert wrapped.__doc__ == "Write the note."
    assert inspect.signature(wrapped) == inspect.signature(save)


def test_bare_decorator_and_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="with parentheses"):
        mirror_usage(lambda note: None)
    with pytest.raises(TypeError, match="adapter must be callable"):
        mirror_usage(adapter="note_usage")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="enabled must be"):
        mirror_usage(adapter=note_usage, enabled="yes")  # type: ignore[arg-type]
