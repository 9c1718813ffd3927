"""state.db read and changed the way another process would: plain sqlite3, no SessionDB."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["read_row", "count_rows", "tamper"]


def read_row(db_path: Path, session_id: str) -> dict[str, Any] | None:
    """Read a sessions row with a short-lived read-only connection (no SessionDB)."""
    conn = sqlite3.connect(Path(db_path).resolve().as_uri() + "?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return dict(row) if row else None
    finally:
        conn.close()


def count_rows(db_path: Path, where: str = "1", params: tuple[Any, ...] = ()) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM sessions WHERE {where}", params).fetchone()[0])
    finally:
        conn.close()


def tamper(db_path: Path, sql: str, *params: Any) -> None:
    """Change state.db behind the mirror's back, the way another tool would."""
    conn = sqlite3.connect(db_path)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()
