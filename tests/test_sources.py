"""Reading the WebUI's session folder: which files are chats, and every kind of trouble skipped, counted, named."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.checks import same_time
from support.messy_home import child_pids, make_messy_home, write_chat

from webui_insights.demo_host import DemoSession
from webui_insights.hook.adapter import webui_session_adapter
from webui_insights.snapshot import WEBUI_FIELDS, from_webui
from webui_insights.sources import (
    BadSessionFile,
    Scan,
    SessionFiles,
    SessionsFolderError,
    SessionsFolderMissing,
    is_session_file_name,
    list_session_files,
    pool,
    read_session_file,
    scan_sessions,
    scanning,
    session_file,
)


def _chat(state_dir: Path, **kwargs: Any) -> DemoSession:
    chat = DemoSession(state_dir, **kwargs)
    chat.add_turn("q", "a", input_tokens=10, output_tokens=3, cost=0.5)
    chat.save()
    return chat


def _many(sessions: Path, count: int) -> list[str]:
    sessions.mkdir(parents=True, exist_ok=True)
    ids = [f"{n:012x}" for n in range(1, count + 1)]
    for session_id in ids:
        write_chat(sessions, session_id, title=f"Chat {session_id}")
    return ids


@pytest.fixture
def forked_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reader processes even for a handful of files, in parts of 5."""
    monkeypatch.setattr(scanning, "_PARALLEL_FROM", 1)
    monkeypatch.setattr(scanning, "PART_FILES", 5)


@pytest.fixture
def slow_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers that take 0.3 s for the first part and 5 s for each other: still at work when looked at."""
    real_read_chunk = session_file.read_chunk

    def slow(paths: list[str], keep_messages: bool) -> list[Any]:
        time.sleep(0.3 if paths[0].endswith("000000000001.json") else 5.0)
        return real_read_chunk(paths, keep_messages)

    monkeypatch.setattr(session_file, "read_chunk", slow)


# ------------------------------------------------------------------ names


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


# ------------------------------------------------------------- one file


def test_a_saved_chat_reads_back_as_its_usage(tmp_path: Path) -> None:
    chat = _chat(tmp_path, title="Hello", profile="work")
    snap = read_session_file(chat.path)
    assert (snap.session_id, snap.profile, snap.title) == (chat.session_id, "work", "Hello")
    assert (snap.input_tokens, snap.output_tokens, snap.message_count) == (10, 3, 2)
    assert snap.estimated_cost_usd == pytest.approx(0.5)
    assert snap.created_at == same_time(chat.created_at)
    assert snap.observed == same_time(chat.path.stat().st_mtime)


def test_a_missing_created_at_falls_back_to_the_last_save(tmp_path: Path) -> None:
    chat = _chat(tmp_path)
    data = json.loads(chat.path.read_text())
    del data["created_at"]
    data["updated_at"] = 1_650_000_000.0
    chat.path.write_text(json.dumps(data))
    assert read_session_file(chat.path).created_at == 1_650_000_000.0


def test_a_file_named_after_another_chat_is_refused(tmp_path: Path) -> None:
    chat = _chat(tmp_path)
    copy = chat.path.with_name("0000aaaa0000.json")
    copy.write_text(chat.path.read_text())
    with pytest.raises(BadSessionFile, match="does not match the file name"):
        read_session_file(copy)


def test_bytes_that_json_would_take_for_utf16_are_not_utf8(tmp_path: Path) -> None:
    """json.loads(bytes) guesses UTF-16 from a BOM; the WebUI only writes UTF-8."""
    path = tmp_path / "0000000016le.json"
    path.write_bytes('{"session_id": "0000000016le"}'.encode("utf-16"))
    with pytest.raises(BadSessionFile) as refused:
        read_session_file(path)
    assert refused.value.kind == "not_utf8"


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    chat = _chat(tmp_path)
    chat.path.write_bytes(b"\xef\xbb\xbf" + chat.path.read_bytes())
    assert read_session_file(chat.path).session_id == chat.session_id


def test_an_oversized_file_is_refused_without_reading_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chat = _chat(tmp_path)
    size = chat.path.stat().st_size
    monkeypatch.setattr(session_file, "MAX_FILE_BYTES", size - 1)
    reads: list[int] = []
    real_read = os.read
    monkeypatch.setattr(session_file.os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    with pytest.raises(BadSessionFile) as refused:
        read_session_file(chat.path)
    assert refused.value.kind == "too_large" and f"{size:,} bytes" in refused.value.reason
    assert reads == []


def test_a_fifo_swapped_in_after_the_walk_does_not_block_the_read(tmp_path: Path) -> None:
    fifo = tmp_path / "00000000f1f0.json"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: _catch(outcome, fifo), daemon=True)
    reader.start()
    reader.join(5.0)
    if reader.is_alive():  # unblock the stuck open() before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert isinstance(outcome[0], BadSessionFile) and outcome[0].kind == "not_a_file"


def _catch(outcome: list[BaseException], path: Path) -> None:
    try:
        read_session_file(path)
    except BaseException as exc:  # noqa: BLE001 - handed to the test
        outcome.append(exc)


# ----------------------------------------------------------- the folder


def test_every_kind_of_trouble_in_a_real_folder_is_skipped_with_its_reason(tmp_path: Path) -> None:
    home = make_messy_home(tmp_path, big_file_mb=40, premirror=False)
    try:
        scan = scan_sessions(home.sessions)
    finally:
        home.release()
    assert scan.files == home.files
    assert scan.skipped == Counter(home.bad.values())
    assert {name for name, _, _ in scan.bad} == set(home.bad)
    assert scan.blank == len(home.blank)
    chats = {s.session_id for s in scan.snapshots}
    assert chats == {sid for ids in home.chats.values() for sid in ids} | {home.tomorrow}
    assert scan.files == len(scan.snapshots) + scan.blank + scan.filtered + len(scan.bad) == scan.done
    for _name, _kind, reason in scan.bad:
        assert "question" not in reason and "answer" not in reason  # reasons never carry chat text


def test_a_link_to_a_chat_inside_the_folder_is_read_and_one_leading_out_is_not(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    write_chat(sessions, "00000000aaaa", title="Real")
    (sessions / "alias.json").symlink_to("00000000aaaa.json")
    outside = tmp_path / "other"
    outside.mkdir()
    write_chat(outside, "00000000bbbb", title="Elsewhere")
    (sessions / "00000000bbbb.json").symlink_to(outside / "00000000bbbb.json")
    files, refused = list_session_files(sessions)
    assert [os.path.basename(f) for f in files] == ["00000000aaaa.json", "alias.json"]
    assert [(r.name, r.kind) for r in refused] == [("00000000bbbb.json", "link_outside")]


def test_loops_and_dangling_links_are_skipped_whatever_python_raises_for_them(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    (sessions / "self.json").symlink_to("self.json")
    (sessions / "a.json").symlink_to("b.json")
    (sessions / "b.json").symlink_to("a.json")
    (sessions / "gone.json").symlink_to("nothing.json")
    files, refused = list_session_files(sessions)
    assert files == []
    assert sorted((r.name, r.kind) for r in refused) == [
        ("a.json", "link_loop"),
        ("b.json", "link_loop"),
        ("gone.json", "dangling_link"),
        ("self.json", "link_loop"),
    ]


def test_a_sessions_folder_that_is_a_link_loop_is_a_folder_error_not_a_crash(tmp_path: Path) -> None:
    loop = tmp_path / "sessions"
    loop.symlink_to("sessions")
    with pytest.raises(SessionsFolderError, match="symbolic link loop"):
        scan_sessions(loop)


def test_a_missing_folder_and_a_file_in_its_place_say_which(tmp_path: Path) -> None:
    with pytest.raises(SessionsFolderMissing) as missing:
        scan_sessions(tmp_path / "nope")
    assert isinstance(missing.value, FileNotFoundError)  # the sweep treats it as "no folder yet"
    (tmp_path / "file").write_text("x")
    with pytest.raises(SessionsFolderError) as not_a_folder:
        scan_sessions(tmp_path / "file")
    assert not isinstance(not_a_folder.value, SessionsFolderMissing)


def test_a_sessions_folder_reached_through_a_link_is_read(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "sessions"
    real.mkdir(parents=True)
    write_chat(real, "0000000011aa")
    (tmp_path / "linked").symlink_to(real)
    assert [s.session_id for s in scan_sessions(tmp_path / "linked").snapshots] == ["0000000011aa"]


def test_a_file_name_that_is_not_utf8_is_reported_printably(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    raw = os.path.join(os.fsencode(sessions), b"caf\xe9\n.json")
    with open(raw, "wb") as handle:
        handle.write(b"{}")
    scan = scan_sessions(sessions)
    (name, kind, _reason), *_ = scan.bad
    assert kind == "invalid_session_id" and name.isprintable()
    name.encode("utf-8")  # printable anywhere


def test_blank_chats_are_counted_not_mirrored(tmp_path: Path) -> None:
    DemoSession(tmp_path).save()  # opened, never used, still "Untitled"
    scan = scan_sessions(tmp_path / "sessions")
    assert (scan.snapshots, scan.blank, scan.files) == ([], 1, 1)


def test_since_and_profile_select_chats_and_count_the_rest(tmp_path: Path) -> None:
    old = _chat(tmp_path, created_at=1_600_000_000.0)
    new = _chat(tmp_path, profile="work")
    stamped = _chat(tmp_path, profile="default", created_at=1_650_000_000.0)
    sessions = tmp_path / "sessions"

    def ids(**kwargs: Any) -> set[str]:
        scan = scan_sessions(sessions, **kwargs)
        assert scan.filtered == 3 - len(scan.snapshots)
        return {s.session_id for s in scan.snapshots}

    assert ids(since=1_700_000_000.0) == {new.session_id}
    assert ids(profile="default") == {old.session_id, stamped.session_id}  # stamped "default" or not at all
    assert ids(profile="work") == {new.session_id}


def test_reading_never_modifies_the_webui_files(tmp_path: Path) -> None:
    chat = _chat(tmp_path)
    (tmp_path / "sessions" / "aaaaaaaaaaaa.json").write_text("{")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "sessions").iterdir()}
    scan_sessions(tmp_path / "sessions")
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "sessions").iterdir()}
    assert before == after
    assert chat.path.exists()


# ------------------------------------------------------ reader processes


def test_parsing_in_reader_processes_gives_the_same_scan(tmp_path: Path, forked_readers: None) -> None:
    sessions = tmp_path / "sessions"
    _many(sessions, 31)
    (sessions / "badbadbadbad.json").write_text("{not json")
    here = scan_sessions(sessions)
    forked = scan_sessions(sessions, workers=3)
    assert forked.files == here.files == 32
    assert forked.bad == here.bad and len(forked.bad) == 1
    assert forked.snapshots == here.snapshots
    assert child_pids(os.getpid()) == []


def test_each_part_reaches_the_caller_in_order_after_the_listing(tmp_path: Path, forked_readers: None) -> None:
    ids = _many(tmp_path / "sessions", 12)
    seen: list[tuple[int, int, list[str]]] = []

    def on_part(scan: Scan, chats: list[Any]) -> None:
        seen.append((scan.files, scan.done, [c.session_id for c in chats]))

    SessionFiles(tmp_path / "sessions", workers=2).read(on_part)
    assert seen == [(12, 0, []), (12, 5, ids[:5]), (12, 10, ids[5:10]), (12, 12, ids[10:])]


def test_parts_start_small_and_double_up_to_the_largest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scanning, "FIRST_PART_FILES", 10)
    paths = [f"{n:012x}.json" for n in range(1000)]
    pieces = scanning._pieces(paths, 100)
    assert [len(piece) for piece in pieces] == [10, 20, 40, 80] + [100] * 8 + [50]
    assert [path for piece in pieces for path in piece] == paths
    assert [len(piece) for piece in scanning._pieces(paths[:7], 5)] == [5, 2]  # a first part larger than the largest


def test_the_listing_reaches_the_caller_once_the_readers_are_at_work(
    tmp_path: Path, forked_readers: None, slow_readers: None
) -> None:
    """The caller gets ready (a backfill imports hermes-agent) while the first part is parsed, not before."""
    _many(tmp_path / "sessions", 12)
    readers_at_listing: list[int] = []

    def on_part(scan: Scan, chats: list[Any]) -> None:
        if not chats and not readers_at_listing:
            readers_at_listing.append(len(child_pids(os.getpid())))

    scan_sessions(tmp_path / "sessions", workers=2, on_part=on_part)
    assert readers_at_listing == [2]
    assert child_pids(os.getpid()) == []


def test_readers_ignore_ctrl_c_and_the_caller_stopping_early_leaves_none_behind(
    tmp_path: Path, forked_readers: None, slow_readers: None
) -> None:
    _many(tmp_path / "sessions", 40)
    seen: dict[int, int] = {}

    def on_part(scan: Scan, chats: list[Any]) -> None:
        if not chats:
            return
        for pid in child_pids(os.getpid()):
            with open(f"/proc/{pid}/status") as status:
                fields = dict(line.split(":\t", 1) for line in status.read().splitlines() if ":\t" in line)
            seen[pid] = int(fields["SigIgn"], 16)
        raise KeyboardInterrupt  # what Ctrl-C does in the parent while it handles a part

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as stopped:
        scan_sessions(tmp_path / "sessions", workers=2, on_part=on_part)
    # at once (a reader in the middle of a part is killed, not waited for), while the
    # exception and its traceback are still held
    assert time.monotonic() - started < 2.0
    assert child_pids(os.getpid()) == [], stopped.value
    assert len(seen) == 2
    assert all(mask & (1 << (signal.SIGINT - 1)) for mask in seen.values())


def test_a_reader_process_that_fails_is_an_error_not_a_hang(
    tmp_path: Path, forked_readers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _many(tmp_path / "sessions", 12)

    def broken(paths: list[str], keep_messages: bool) -> list[Any]:
        raise MemoryError("out of memory")

    monkeypatch.setattr(session_file, "read_chunk", broken)  # the forked readers run this copy
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="reader process failed: MemoryError"):
        scan_sessions(tmp_path / "sessions", workers=2)
    assert time.monotonic() - started < 10
    assert child_pids(os.getpid()) == []


def test_a_reader_killed_from_outside_is_an_error_not_a_hang(
    tmp_path: Path, forked_readers: None, slow_readers: None
) -> None:
    _many(tmp_path / "sessions", 30)

    def on_part(scan: Scan, chats: list[Any]) -> None:
        if chats:
            for pid in child_pids(os.getpid()):
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(RuntimeError, match="ended early"):
        scan_sessions(tmp_path / "sessions", workers=2, on_part=on_part)
    assert child_pids(os.getpid()) == []


def test_when_no_reader_can_be_forked_the_files_are_read_here(
    tmp_path: Path, forked_readers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _many(tmp_path / "sessions", 12)

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(pool.os, "fork", no_fork)
    assert [s.session_id for s in scan_sessions(tmp_path / "sessions", workers=2).snapshots] == ids


# ------------------------------------------------------- one field mapping


def test_the_webui_field_names_are_the_ones_from_webui_takes() -> None:
    parameters = list(inspect.signature(from_webui).parameters)
    assert tuple(parameters[: len(WEBUI_FIELDS)]) == WEBUI_FIELDS


def test_a_saved_chat_reads_the_same_from_its_file_as_from_the_live_session(tmp_path: Path) -> None:
    """The live adapter and the file reader share one mapping: same chat, same snapshot."""
    chat = _chat(tmp_path, title="Same chat")
    chat.add_turn("again", "more", input_tokens=7, output_tokens=2, cost=0.25)
    chat.save()
    live = webui_session_adapter(chat)
    read = read_session_file(chat.path)
    # What only one side knows: the file's time and the counts the reader takes at once.
    differ = {"observed", "tool_call_count", "earliest_message_at", "messages"}
    assert {k: v for k, v in live._asdict().items() if k not in differ} == {
        k: v for k, v in read._asdict().items() if k not in differ
    }
    assert live.input_tokens == 17 and live.estimated_cost_usd == 0.75 and live.title == "Same chat"


def test_reading_without_workers_never_loads_the_reader_pool(tmp_path: Path) -> None:
    """A host (the sweep) reads in its own process: the fork/pickle pool is not even imported."""
    _many(tmp_path / "sessions", 3)
    code = (
        "import sys; from webui_insights.sources import scan_sessions; "
        f"scan_sessions({str(tmp_path / 'sessions')!r}); print('webui_insights.sources.pool' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
