"""What a backfill of 10,000 WebUI chats costs (issue: CLI).

Generates 10,000 session files the way the WebUI saves them (a few messages
each) in a temporary WebUI state dir, then runs the real backfill into a
fresh state.db: end-to-end rate (reading files, comparing with state.db,
writing), write time, transactions and the longest write-lock hold. A second
run over the same files shows the cost of "nothing to do".
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from webui_insights import sink
from webui_insights.backfill import backfill
from webui_insights.cli import BACKFILL_READERS as READERS
from webui_insights.webui_files import scan_sessions

from .table import Row

SESSIONS = 10_000
MESSAGES_PER_CHAT = 6
_DAY = 86_400.0


def _write_sessions(sessions_dir: Path, count: int) -> None:
    sessions_dir.mkdir(parents=True)
    now = time.time()
    for i in range(count):
        session_id = f"{i:012x}"
        data = {
            "session_id": session_id,
            # One chat in 20 repeats an earlier title (lineage titles "X #2").
            "title": f"Bench chat {i - 1 if i % 20 == 19 else i}",
            "model": "bench/model-1",
            "model_provider": "bench",
            "profile": None,
            "messages": [
                {"role": "user", "content": f"question {i}", "timestamp": now},
                {"role": "assistant", "content": f"answer {i}", "timestamp": now},
            ]
            * (MESSAGES_PER_CHAT // 2),
            "created_at": now - (i % 365) * _DAY,
            "updated_at": now,
            "input_tokens": 1000 + i,
            "output_tokens": 200 + i,
            "cache_read_tokens": i % 300,
            "cache_write_tokens": i % 50,
            "estimated_cost": 0.001 * (i % 97),
        }
        (sessions_dir / f"{session_id}.json").write_text(json.dumps(data), encoding="utf-8")


def run() -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="webui-insights-bench-backfill-"))
    saved = {k: os.environ.get(k) for k in ("HERMES_HOME", "HERMES_WEBUI_STATE_DIR")}
    try:
        os.environ["HERMES_HOME"] = str(root)
        os.environ["HERMES_WEBUI_STATE_DIR"] = str(root / "webui")
        sink.create_state_db(root / "state.db")
        sessions_dir = root / "webui" / "sessions"
        _write_sessions(sessions_dir, SESSIONS)

        workers = READERS  # as `webui-insights backfill` does it
        started = time.perf_counter()
        scan = scan_sessions(sessions_dir, workers=workers)
        read_s = time.perf_counter() - started
        first = backfill(scan)
        end_to_end_s = time.perf_counter() - started
        assert first.written == SESSIONS, first

        started = time.perf_counter()
        second = backfill(scan_sessions(sessions_dir, workers=workers))
        rerun_s = time.perf_counter() - started
        assert second.written == 0 and second.up_to_date == SESSIONS, second

        # Transcripts too, into a fresh state.db: the same files, 6 messages each.
        (root / "state.db").unlink()
        for suffix in ("-wal", "-shm"):
            (root / f"state.db{suffix}").unlink(missing_ok=True)
        sink.create_state_db(root / "state.db")
        started = time.perf_counter()
        with_messages = backfill(scan_sessions(sessions_dir, workers=workers, transcripts=True))
        transcripts_s = time.perf_counter() - started
        messages = SESSIONS * MESSAGES_PER_CHAT
        assert with_messages.written == SESSIONS, with_messages

        rate = SESSIONS / end_to_end_s
        hold_ms = first.max_lock_hold_s * 1000.0
        transcript_hold_ms = with_messages.max_lock_hold_s * 1000.0
        return [
            Row(f"backfill {SESSIONS:,} chats: end to end", f"{rate:,.0f}/s", "≥ 20,000/s", rate >= 20_000),
            Row(f"  of which reading the files ({workers} reader processes)", f"{read_s:.3f} s", "", None),
            Row("  write time (state.db transactions)", f"{first.write_s:.3f} s", "≤ 0.5 s", first.write_s <= 0.5),
            Row("  write transactions", f"{first.transactions}", "", None),
            Row("  longest write-lock hold", f"{hold_ms:.1f} ms", "≤ 50 ms", hold_ms <= 50.0),
            Row("backfill again (all up to date)", f"{rerun_s:.3f} s", "", None),
            Row(
                f"backfill --transcripts: {messages:,} messages",
                f"{messages / transcripts_s:,.0f} msg/s",
                "",
                None,
            ),
            Row("  longest write-lock hold", f"{transcript_hold_ms:.1f} ms", "≤ 50 ms", transcript_hold_ms <= 50.0),
        ]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    from .table import render

    print(render("backfill", run()))
