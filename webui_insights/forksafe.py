"""Keeping this package usable in a child forked from a threaded process.

A pre-fork server (gunicorn, uWSGI, multiprocessing) may fork while one of
our threads holds one of our locks, or is inside SQLite: the child would
hang on its first save, or its writer on its first write. Two defences:

- every object of this package that owns a lock registers here
  (``register``), and ``os.register_at_fork`` calls its
  ``_after_fork_in_child()`` in the child before any of the child's code
  runs: fresh locks, no inherited threads, state from the parent that must
  not be reused (SessionDB handles) set aside;
- every use of SQLite by our threads runs inside ``sqlite_section()``, and a
  fork waits (at most ``FORK_WAIT_S``) until none of our threads is inside
  one: SQLite's own mutexes are not fork-safe, and a child forked while
  another thread was in the middle of a SQLite call can hang in its first
  SQLite call. The wait is normally nothing (our threads are idle) and at
  most one short write transaction.

Registering the fork hooks at import starts no thread and costs nothing.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

__all__ = ["ForkAware", "register", "sqlite_section", "FORK_WAIT_S"]

# How long a fork waits for our threads to leave SQLite (one transaction is
# ~30 ms; a busy database can keep one in SQLite's 1 s busy wait).
FORK_WAIT_S = 2.0


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every child forked from now on."""
    _objects.add(obj)


class _Gate:
    """How many of our threads are inside SQLite; a fork waits for none."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.active = 0
        self.forking = False
        self.owners: dict[int, int] = {}  # thread id -> depth (a thread may nest sections)


_gate = _Gate()


@contextmanager
def sqlite_section() -> Iterator[None]:
    """Run the body (calls into SQLite) while no fork is in progress; a fork waits for it to end."""
    gate = _gate
    me = threading.get_ident()
    with gate.cond:
        if not gate.owners.get(me):
            while gate.forking:
                gate.cond.wait(0.1)
        gate.active += 1
        gate.owners[me] = gate.owners.get(me, 0) + 1
    try:
        yield
    finally:
        with gate.cond:
            gate.active -= 1
            depth = gate.owners.get(me, 1) - 1
            if depth:
                gate.owners[me] = depth
            else:
                gate.owners.pop(me, None)
            if not gate.active:
                gate.cond.notify_all()


def _before_fork() -> None:
    gate = _gate
    me = threading.get_ident()
    deadline = time.monotonic() + FORK_WAIT_S
    # Never block a fork for long: past the deadline it proceeds, as without the gate.
    if not gate.cond.acquire(timeout=FORK_WAIT_S):
        return
    try:
        gate.forking = True
        # The forking thread's own sections (if any) cannot end while it waits.
        while gate.active - gate.owners.get(me, 0) > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            gate.cond.wait(remaining)
    finally:
        gate.cond.release()


def _after_fork_in_parent() -> None:
    gate = _gate
    gate.forking = False
    if gate.cond.acquire(timeout=FORK_WAIT_S):
        try:
            gate.cond.notify_all()
        finally:
            gate.cond.release()


def _reinit_in_child() -> None:
    global _gate
    _gate = _Gate()  # the threads that were inside SQLite do not exist here
    for obj in list(_objects):
        try:
            obj._after_fork_in_child()
        except Exception:  # pragma: no cover - a broken object must not stop the others
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_reinit_in_child)
