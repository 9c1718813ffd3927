"""One state.db's batch: every chat counted once, whatever the state.db lets the engine do."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from webui_insights.engine.batch import DatabaseOutcome, StateDbBatch, check_state_db, written
from webui_insights.engine.store import IN_CHUNK, create_state_db, in_chunks
from webui_insights.snapshot import UsageSnapshot

NOW = time.time()


def _chats(count: int, now: float = NOW) -> list[UsageSnapshot]:
    """The same chats on every call: states a second batch finds already applied."""
    return [
        UsageSnapshot(
            f"chat{i:04d}",
            title=f"Chat {i}",
            input_tokens=100 + i,
            output_tokens=10,
            message_count=2,
            created_at=now - 600,
            updated_at=now - 60,
        )
        for i in range(count)
    ]


def _batch(db: Path, **options: object) -> StateDbBatch:
    return StateDbBatch(DatabaseOutcome(str(db), ["default"]), chunk=3, **options)  # type: ignore[arg-type]


def test_written_counts_the_outcomes_that_change_a_row_and_nothing_else() -> None:
    outcomes = Counter(created=2, updated=3, restored=1, unchanged=7, stale=1, deleted=4, not_done=5)
    assert written(outcomes) == 6
    assert DatabaseOutcome("x", [], outcomes=outcomes).written == 6


def test_in_chunks_keeps_every_value_once_with_one_mark_each() -> None:
    values = [str(i) for i in range(IN_CHUNK * 2 + 1)]
    chunks = list(in_chunks(values))
    assert [len(chunk) for chunk, _ in chunks] == [IN_CHUNK, IN_CHUNK, 1]
    assert [v for chunk, _ in chunks for v in chunk] == values
    assert all(marks.count("?") == len(chunk) for chunk, marks in chunks)


def test_a_batch_applies_its_chats_chunk_by_chunk_and_counts_each_commit(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    create_state_db(db)
    committed: list[int] = []
    batch = _batch(db, counted=committed.append)
    assert batch.add(_chats(7)) and batch.add(_chats(7)[:2])
    batch.close_store()
    batch.outcome.count_not_done()
    assert committed == [3, 3, 1, 2]
    assert batch.outcome.chats == 9 and batch.outcome.outcomes == Counter(created=7, unchanged=2)


def test_between_chunks_saying_stop_leaves_the_rest_not_done(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    create_state_db(db)
    batch = _batch(db)
    assert not batch.add(_chats(7), between_chunks=lambda: False)
    batch.close_store()
    batch.outcome.count_not_done()
    assert batch.outcome.outcomes == Counter(created=3, not_done=4)


def test_a_missing_state_db_is_said_and_its_chats_are_not_done(tmp_path: Path) -> None:
    batch = _batch(tmp_path / "state.db")
    assert batch.add(_chats(4))
    batch.outcome.count_not_done()
    assert (batch.outcome.status, batch.outcome.outcomes) == ("missing", Counter(not_done=4))
    assert not (tmp_path / "state.db").exists()


def test_read_only_planning_counts_what_writing_would_do(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    create_state_db(db)
    batch = _batch(db)
    batch.add(_chats(2))
    batch.close_store()
    checked = check_state_db(DatabaseOutcome(str(db), ["default"]), _chats(5))
    assert checked.outcomes == Counter(unchanged=2, created=3) and checked.written == 3
    assert [p.session_id for p in checked.plans] == [f"chat{i:04d}" for i in range(5)]
