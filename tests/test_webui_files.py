"""Which WebUI files are chats, and how a bad one is reported and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webui_insights.demo_host import DemoSession
from webui_insights.webui_files import BadSessionFile, is_session_file_name, read_session_file, scan_sessions


def _chat(state_dir: Path, **kwargs: object) -> DemoSession:
    chat = DemoSession(state_dir, **kwargs)  # type: ignore[arg-type]
    chat.add_turn("q", "a", input_tokens=10, output_tokens=3, cost=0.5)
    chat.save()
    return chat


@pytest.mark.parametrize(
    ("name", "is_chat"),
    [
        ("0123456789ab.json", True),
        ("_index.json", False),
        ("_anything.json", False),
        ("0123456789ab.json.bak", False),
        ("0123456789ab.bak.json", False),
        ("0123456789ab.json.tmp.123", False),
        ("0123456789ab.tmp.1.2.json", False),
        ("settings.txt", False),
    ],
)
def test_index_backup_temp_and_underscore_files_are_not_chats(name: str, is_chat: bool) -> None:
    assert is_session_file_name(name) is is_chat


def test_a_saved_chat_reads_back_as_its_usage(tmp_path: Path) -> None:
    chat = _chat(tmp_path, title="Hello", profile="work")
    snap = read_session_file(chat.path)
    assert (snap.session_id, snap.profile, snap.title) == (chat.session_id, "work", "Hello")
    assert (snap.input_tokens, snap.output_tokens, snap.message_count) == (10, 3, 2)
    assert snap.estimated_cost_usd == pytest.approx(0.5)
    assert snap.created_at == pytest.approx(chat.created_at)


def test_corrupt_truncated_and_wrongly_typed_files_are_reported_by_name_and_skipped(tmp_path: Path) -> None:
    good = _chat(tmp_path)
    sessions = tmp_path / "sessions"
    (sessions / "aaaaaaaaaaaa.json").write_text(good.path.read_text()[:40])  # truncated mid-write
    (sessions / "bbbbbbbbbbbb.json").write_bytes(b"\xff\xfe garbage")
    (sessions / "cccccccccccc.json").write_text(json.dumps({"session_id": "cccccccccccc", "input_tokens": "12"}))
    (sessions / "dddddddddddd.json").write_text(json.dumps({"session_id": "dddddddddddd", "messages": {"a": 1}}))
    (sessions / "eeeeeeeeeeee.json").write_text("[]")
    (sessions / "ffffffffffff.json").write_text("")
    (sessions / "_index.json").write_text("not json at all")
    (sessions / f"{good.session_id}.json.bak").write_text("{")

    scan = scan_sessions(sessions)

    assert [s.session_id for s in scan.snapshots] == [good.session_id]
    bad = dict(scan.bad)
    assert sorted(bad) == [f"{c * 12}.json" for c in "abcdef"]
    assert "not valid JSON" in bad["aaaaaaaaaaaa.json"]
    assert "input_tokens" in bad["cccccccccccc.json"]
    assert "messages is dict" in bad["dddddddddddd.json"]
    assert scan.files == 7


def test_a_file_named_after_another_chat_is_refused(tmp_path: Path) -> None:
    chat = _chat(tmp_path)
    copy = chat.path.with_name("0000aaaa0000.json")
    copy.write_text(chat.path.read_text())
    with pytest.raises(BadSessionFile, match="does not match the file name"):
        read_session_file(copy)


def test_blank_chats_are_counted_not_mirrored(tmp_path: Path) -> None:
    DemoSession(tmp_path).save()  # opened, never used, still "Untitled"
    scan = scan_sessions(tmp_path / "sessions")
    assert (scan.snapshots, scan.blank) == ([], 1)


def test_since_and_profile_select_chats(tmp_path: Path) -> None:
    old = _chat(tmp_path, created_at=1_600_000_000.0)
    new = _chat(tmp_path, profile="work")
    assert [s.session_id for s in scan_sessions(tmp_path / "sessions", since=1_700_000_000.0).snapshots] == [
        new.session_id
    ]
    assert [s.session_id for s in scan_sessions(tmp_path / "sessions", profile="default").snapshots] == [old.session_id]
    assert [s.session_id for s in scan_sessions(tmp_path / "sessions", profile="work").snapshots] == [new.session_id]


def test_reading_never_modifies_the_webui_files(tmp_path: Path) -> None:
    chat = _chat(tmp_path)
    (tmp_path / "sessions" / "aaaaaaaaaaaa.json").write_text("{")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "sessions").iterdir()}
    scan_sessions(tmp_path / "sessions")
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "sessions").iterdir()}
    assert before == after
    assert chat.path.exists()


def test_a_missing_created_at_falls_back_to_the_last_save(tmp_path: Path) -> None:
    chat = _chat(tmp_path)
    data = json.loads(chat.path.read_text())
    del data["created_at"]
    data["updated_at"] = 1_650_000_000.0
    chat.path.write_text(json.dumps(data))
    assert read_session_file(chat.path).created_at == 1_650_000_000.0


def test_parsing_in_worker_processes_gives_the_same_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import webui_insights.webui_files as webui_files
    from webui_insights.demo_host import DemoSession

    for n in range(30):
        chat = DemoSession(tmp_path, title=f"Chat {n}")
        chat.add_turn("q", "a", input_tokens=n + 1, output_tokens=1)
        chat.save()
    (tmp_path / "sessions" / "badbadbadbad.json").write_text("{not json")
    monkeypatch.setattr(webui_files, "_PARALLEL_FROM", 1)
    here = webui_files.scan_sessions(tmp_path / "sessions")
    forked = webui_files.scan_sessions(tmp_path / "sessions", workers=2)
    assert forked.files == here.files == 31
    assert forked.bad == here.bad and len(forked.bad) == 1
    assert [s[:12] for s in forked.snapshots] == [s[:12] for s in here.snapshots]
