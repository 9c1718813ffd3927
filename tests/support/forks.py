"""fork() in tests: a body run in a forked child, and the mirror's locks that must survive a fork."""

from __future__ import annotations

import json
import os
import select
import signal
import time
import traceback
from typing import Any

from webui_insights.demo_host import DemoSession

__all__ = ["INTERNAL_LOCK_NAMES", "internal_locks", "in_forked_child"]

# Every lock the save path or the writer can hold: each must be safe across fork() (issue 15).
INTERNAL_LOCK_NAMES = (
    "installation",
    "capture stripe",
    "capture clock",
    "writer",
    "writer wake event",
    "writer hurry event",
    "writer stop event",
    "stats",
    "log",
    "switch",
    "agent usage",
    "sweep",
    "sqlite gate",
)


def internal_locks(chat: DemoSession) -> dict[str, Any]:
    """The installed mirror's locks by name (the capture stripe: the one ``chat`` hashes to)."""
    from webui_insights import forksafe
    from webui_insights.hook import capture, installer

    state, order = installer._state, capture._order
    writer = state.writer
    assert writer is not None and state.sweep is not None
    locks = {
        "installation": state.lock,
        "capture stripe": order.stripes[hash(chat.session_id) % len(order.stripes)],
        "capture clock": order.clock,
        "writer": writer._buffer.lock,
        "writer wake event": writer._wake._cond,  # type: ignore[attr-defined]
        "writer hurry event": writer._hurry._cond,  # type: ignore[attr-defined]
        "writer stop event": writer._stop._cond,  # type: ignore[attr-defined]
        "stats": state.stats._lock,
        "log": state.log._lock,
        "switch": state.switch._lock,
        "agent usage": state.agent._lock,
        "sweep": state.sweep._lock,
        "sqlite gate": forksafe._gate.cond,
    }
    assert tuple(locks) == INTERNAL_LOCK_NAMES
    return locks


def in_forked_child(body: Any, timeout: float = 30.0) -> Any:
    """Run ``body()`` in a forked child; its JSON-able result, or an AssertionError saying why not.

    The child always leaves through ``os._exit`` (never back into pytest);
    a child that does not answer within ``timeout`` is killed and reported
    as hung.
    """
    return timed_fork(body, timeout)[0]


def timed_fork(body: Any, timeout: float = 30.0) -> tuple[Any, float]:
    """``in_forked_child``, and how long ``os.fork()`` took in the parent (what a fork waits for)."""
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_fd)
            try:
                payload = {"ok": True, "result": body()}
            except BaseException:  # noqa: BLE001 - everything goes back to the parent
                payload = {"ok": False, "error": traceback.format_exc()}
            data = json.dumps(payload).encode()
            while data:
                data = data[os.write(write_fd, data) :]
            code = 0
        finally:
            os._exit(code)
    forked_in = time.monotonic() - started
    os.close(write_fd)
    chunks: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"forked child hung for {timeout} s")
            ready, _, _ = select.select([read_fd], [], [], remaining)
            if ready:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
    os.waitpid(pid, 0)
    if not chunks:
        raise AssertionError("forked child died without an answer")
    payload = json.loads(b"".join(chunks))
    if not payload["ok"]:
        raise AssertionError("forked child failed:\n" + payload["error"])
    return payload["result"], forked_in
