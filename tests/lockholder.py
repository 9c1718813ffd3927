"""A second process that holds state.db's write lock: ``python lockholder.py DB SECONDS``.

Prints ``locked`` once it holds ``BEGIN IMMEDIATE``, then releases after
SECONDS or as soon as its stdin is closed, whichever comes first.
"""

import select
import sqlite3
import sys
import time

db, seconds = sys.argv[1], float(sys.argv[2])
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
