"""forksafe.py with real forks: a child of a threaded host starts with working locks and no thread inside SQLite.

A pre-fork server (gunicorn, uWSGI) forks whenever it likes. If one of our
threads holds a lock or is inside SQLite at that moment, the child inherits
a lock nobody will release and hangs on its first save; if a fork waited on
us without bound, the host would hang instead. Each test here forks for
real; the child answers through a pipe and always leaves with ``os._exit``.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.forks import timed_fork

from webui_insights import forksafe

pytestmark = pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="needs os.fork and its hooks")


def fork(body: Callable[[], Any], timeout: float = 10.0) -> tuple[Any, float]:
    """``body()``'s JSON-able result in a forked child, and how long ``os.fork()`` took in the parent."""
    return timed_fork(body, timeout)


@pytest.fixture
def fork_wait(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Set how long a fork waits for our threads (the default 2 s would make a failing test slow)."""

    def set_wait(seconds: float) -> None:
        monkeypatch.setattr(forksafe, "FORK_WAIT_S", seconds)

    return set_wait


@pytest.fixture(autouse=True)
def no_section_left_behind() -> Iterator[None]:
    """Every test here leaves no thread of its own inside a section (a later fork would wait for it)."""
    yield
    _, forked_in = fork(lambda: None)
    assert forked_in < 1.0


class Section:
    """A thread of ours inside ``sqlite_section`` until told to leave."""

    def __init__(self, linger: float = 0.0) -> None:
        self.inside, self.leave = threading.Event(), threading.Event()
        self.left = False
        self.linger = linger
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with forksafe.sqlite_section():
            self.inside.set()
            self.leave.wait(30)
            time.sleep(self.linger)
            self.left = True

    def __enter__(self) -> Section:
        self.thread.start()
        assert self.inside.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave.set()
        self.thread.join(5)


def within(seconds: float, body: Callable[[], Any]) -> Any:
    """``body()`` on a thread of its own, or an AssertionError if it is still blocked after ``seconds``."""
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(body()), daemon=True)
    thread.start()
    thread.join(seconds)
    if not results:
        raise AssertionError(f"still blocked after {seconds} s")
    return results[0]


# ----------------------------------------------------------------- register


class Flag:
    """An object of ours that owns state a child must not reuse."""

    def __init__(self) -> None:
        self.reset_in_child = False

    def _after_fork_in_child(self) -> None:
        self.reset_in_child = True


class Broken:
    def _after_fork_in_child(self) -> None:
        raise RuntimeError("cannot reset")


def test_a_registered_object_is_reset_in_the_child_before_the_childs_code_runs() -> None:
    """The child's first save must find fresh locks, not the parent's (possibly held) ones."""
    flag = Flag()
    forksafe.register(flag)
    result, _ = fork(lambda: flag.reset_in_child)
    assert result is True
    assert flag.reset_in_child is False  # the parent keeps its state


def test_one_object_failing_its_reset_does_not_stop_the_others() -> None:
    flags = [Flag() for _ in range(5)]
    broken = Broken()
    forksafe.register(broken)
    for flag in flags:
        forksafe.register(flag)
    result, _ = fork(lambda: [flag.reset_in_child for flag in flags])
    assert result == [True] * 5


def test_registering_does_not_keep_an_object_alive() -> None:
    """Every install() registers its objects: the registry must not keep old installations' alive."""
    flag = Flag()
    forksafe.register(flag)
    gone = weakref.ref(flag)
    del flag
    gc.collect()
    assert gone() is None
    result, _ = fork(lambda: "forked")
    assert result == "forked"


def test_importing_the_module_starts_no_thread() -> None:
    """The fork hooks are registered at import, in every host process: that must cost nothing."""
    script = (
        "import threading\n"
        "before = threading.active_count()\n"
        "import webui_insights.forksafe\n"
        "print(threading.active_count() - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "0"


# ------------------------------------------------------------ sqlite_section


def test_a_fork_waits_until_our_thread_has_left_sqlite() -> None:
    """A child forked mid-call inherits SQLite's mutexes held: its first SQLite call could hang."""
    with Section(linger=0.1) as section:
        section.leave.set()  # it leaves 0.1 s from now; the fork is asked for at once
        seen_in_child, _ = fork(lambda: section.left)
    assert seen_in_child is True


def test_a_fork_waits_no_longer_than_its_budget(fork_wait: Callable[[float], None]) -> None:
    """A thread stuck in SQLite (a 1 s busy wait, a bug) must not hang the host's fork."""
    fork_wait(0.15)
    with Section():
        result, forked_in = fork(lambda: "forked")
    assert result == "forked"
    assert 0.1 <= forked_in < 2.0


def test_the_child_of_a_fork_past_its_budget_can_use_sqlite_sections(fork_wait: Callable[[float], None]) -> None:
    """The thread that was inside does not exist in the child: its section must not block the child's own."""
    fork_wait(0.1)

    def child() -> str:
        with forksafe.sqlite_section():  # the worker's first write, on its main thread
            return "entered"

    with Section():
        result, _ = fork(child, timeout=3.0)
        assert result == "entered"


def test_after_a_fork_the_parents_threads_enter_sections_again(fork_wait: Callable[[float], None]) -> None:
    fork_wait(0.1)
    with Section():
        fork(lambda: None)
        done = threading.Event()

        def enter() -> None:
            with forksafe.sqlite_section():
                done.set()

        threading.Thread(target=enter, daemon=True).start()
        assert done.wait(2)


def test_no_new_section_starts_while_a_fork_waits() -> None:
    """Else a steady stream of our transactions could keep a fork waiting until its budget runs out."""
    entered_at: list[float] = []

    def newcomer() -> None:
        with forksafe.sqlite_section():
            entered_at.append(time.monotonic())

    with Section(linger=0.4) as section:
        section.leave.set()  # it leaves in 0.4 s; the newcomer comes 0.1 s into the fork's wait
        timer = threading.Timer(0.1, newcomer)
        timer.daemon = True
        timer.start()
        newcomer_inside_at_fork, _ = fork(lambda: bool(entered_at))
    deadline = time.monotonic() + 2
    while not entered_at and time.monotonic() < deadline:
        time.sleep(0.01)
    assert newcomer_inside_at_fork is False
    assert entered_at  # and it got in once the fork was done


def test_the_forking_threads_own_section_does_not_make_it_wait(fork_wait: Callable[[float], None]) -> None:
    """A thread that forks from inside a section (a subprocess started mid-transaction) would wait for itself."""
    fork_wait(1.5)

    def fork_inside() -> tuple[Any, float]:
        with forksafe.sqlite_section():
            return fork(lambda: "forked")

    result, forked_in = within(5.0, fork_inside)
    assert result == "forked"
    assert forked_in < 1.0


def test_a_thread_inside_a_section_can_nest_one_while_a_fork_waits(fork_wait: Callable[[float], None]) -> None:
    """The fork waits for that thread, so that thread must not wait for the fork: each would wait for the other."""
    fork_wait(1.5)
    inside, nested_done = threading.Event(), threading.Event()

    def outer() -> None:
        with forksafe.sqlite_section():
            inside.set()
            time.sleep(0.2)  # the fork is waiting by now
            with forksafe.sqlite_section():
                nested_done.set()

    thread = threading.Thread(target=outer, daemon=True)
    thread.start()
    assert inside.wait(5)
    result, forked_in = fork(lambda: nested_done.is_set())
    thread.join(5)
    assert result is True
    assert forked_in < 1.0


def test_a_section_left_by_an_exception_no_longer_holds_a_fork(fork_wait: Callable[[float], None]) -> None:
    """A failing transaction (busy, malformed) must not leave the gate counting it as inside."""
    fork_wait(1.5)

    def failing() -> None:
        with forksafe.sqlite_section():
            raise RuntimeError("database is locked")

    thread_errors: list[BaseException] = []

    def run() -> None:
        try:
            failing()
        except RuntimeError as exc:
            thread_errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    assert len(thread_errors) == 1  # the exception went through the section
    _, forked_in = fork(lambda: None)
    assert forked_in < 1.0
