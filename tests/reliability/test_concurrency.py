"""Many host threads saving many chats at once: no deadlock, and every row ends equal to the WebUI."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
import scenarios
from support.chats import make_session

import webui_insights


def _hammer(webui_dir: Path, db: Path, threads: int, saves: int, chats: int) -> None:
    sessions = [make_session(webui_dir) for _ in range(chats)]
    locks = [threading.Lock() for _ in sessions]  # the WebUI serialises turns of one chat
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(saves):
            i = rng.randrange(chats)
            with locks[i]:
                chat = sessions[i]
                if rng.random() < 0.7:
                    chat.add_turn(
                        "q",
                        "a",
                        input_tokens=rng.randint(0, 500),
                        output_tokens=rng.randint(0, 50),
                        cost=rng.random() / 1000,
                    )
                    cached = rng.randint(0, 100)
                    chat.cache_read_tokens += cached
                    chat.input_tokens += cached  # the WebUI's input counts cached prompt tokens too
                try:
                    chat.save()
                except BaseException as exc:  # noqa: BLE001 - any escape is the failure we look for
                    errors.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    assert not any(t.is_alive() for t in workers), "deadlock: a host thread never returned from save()"
    assert not errors, errors[:3]
    assert webui_insights.flush(30)
    lost = [c.session_id for c in sessions if not scenarios.row_matches(db, c)]
    assert not lost, f"{len(lost)} chats differ from the WebUI after flush"


def test_four_threads_times_100_saves_over_20_chats(mirror, webui_dir: Path, hermes_home: Path) -> None:
    _hammer(webui_dir, hermes_home / "state.db", threads=4, saves=100, chats=20)


@pytest.mark.slow
def test_sixteen_threads_times_500_saves_over_100_chats(mirror, webui_dir: Path, hermes_home: Path) -> None:
    _hammer(webui_dir, hermes_home / "state.db", threads=16, saves=500, chats=100)
