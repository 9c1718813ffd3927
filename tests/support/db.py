"""state.db read and changed the way another process would: plain sqlite3, no SessionDB."""

from __future__ import annotations

import functools
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest

__all__ = ["read_row", "count_rows", "tamper", "installed_schema_has", "NEEDS_USAGE", "NEEDS_ACTIVE"]


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


@functools.cache
def installed_schema_has(table: str, column: str | None = None) -> bool:
    """Whether a state.db the installed hermes-agent makes has ``table`` (and ``column`` in it).

    Tests of newer tables (``session_model_usage``: 0.19.0; ``messages.active``:
    0.18) skip on the oldest release ``make test-compat`` runs (0.13.0).
    """
    from webui_insights.engine.store import create_state_db

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.db"
        create_state_db(path)
        conn = sqlite3.connect(path)
        try:
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        finally:
            conn.close()
    return bool(columns) and (column is None or column in columns)


# Tests of newer hermes-agent tables: skipped on the oldest release make test-compat runs (0.13.0).
NEEDS_USAGE = pytest.mark.skipif(
    not installed_schema_has("session_model_usage"), reason="hermes-agent before 0.19 has no session_model_usage"
)
NEEDS_ACTIVE = pytest.mark.skipif(
    not installed_schema_has("messages", "active"), reason="hermes-agent before 0.18 has no messages.active"
)
