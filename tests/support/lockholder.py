"""A second process that holds state.db's write lock: ``LockHolder(db)``, or ``python lockholder.py DB SECONDS``.

Run as a script (what ``LockHolder`` starts, and ``benchmarks/common.py`` by
this file's path), it prints ``locked`` once it holds ``BEGIN IMMEDIATE``,
then releases after SECONDS or as soon as its stdin is closed, whichever
comes first. The script part needs only the standard library.
"""

from __future__ import annotations

import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["LockHolder"]

SCRIPT = Path(__file__).resolve()


class LockHolder:
    """A real second process holding state.db's write lock until released."""

    def __init__(self, db_path: Path, seconds: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(db_path), str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "locked", line

    @property
    def holding(self) -> bool:
        return self.proc.poll() is None

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def hold(db: str, seconds: float) -> None:
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sys.stdin], [], [], max(0.0, min(0.2, deadline - time.monotonic())))
        if ready and not sys.stdin.readline():
            break
    conn.execute("ROLLBACK")
    conn.close()


if __name__ == "__main__":
    hold(sys.argv[1], float(sys.argv[2]))
