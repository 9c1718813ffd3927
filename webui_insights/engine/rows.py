"""Reading chats' ``sessions`` rows, with what tells hermes-agent's own writes apart.

Bulk reads (one query per few hundred chats) that work inside a write
transaction and on a read-only connection alike. Besides the columns the
rule compares, each row says whether hermes-agent's ``create_session``
marks are on it (``model_config`` / ``system_prompt``, which this layer
never sets; hermes' migrations' bookkeeping keys in ``model_config`` do not
count) and how many live messages it has.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from .states import Row

__all__ = ["read_rows", "messages_have_active"]

# hermes-agent's create_session stores the agent's model_config (max_iterations,
# reasoning_config, ...) and system prompt. hermes' own v16 migration also writes
# model_config on old rows, with only its bookkeeping keys (_delegate_from,
# _branched_from): that is not a mark of hermes-agent writing the chat.
_AGENT_MARKS = (
    "(system_prompt IS NOT NULL OR CASE WHEN json_valid(model_config) THEN "
    "json_remove(model_config, '$._delegate_from', '$._branched_from') NOT IN ('{}', 'null') ELSE 0 END)"
)
_COLUMNS = (
    "id, source, title, model, billing_provider, started_at, ended_at, end_reason, message_count, tool_call_count, "
    "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, "
    f"estimated_cost_usd, api_call_count, {_AGENT_MARKS}"
)
_IN_CHUNK = 500


def messages_have_active(conn: sqlite3.Connection) -> bool:
    """hermes-agent ≥ 0.18 keeps superseded messages with ``active = 0``."""
    return any(row[1] == "active" for row in conn.execute("PRAGMA table_info(messages)"))


def read_rows(conn: sqlite3.Connection, session_ids: Iterable[str], *, active: bool | None = None) -> dict[str, Row]:
    """The rows of ``session_ids`` that exist, keyed by id."""
    ids = list(session_ids)
    live = " AND active = 1" if (messages_have_active(conn) if active is None else active) else ""
    rows: dict[str, Row] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        found = conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id IN ({marks})", chunk).fetchall()
        if not found:
            continue
        present = [values[0] for values in found]
        marks = ",".join("?" * len(present))
        counts = dict(
            conn.execute(
                f"SELECT session_id, COUNT(*) FROM messages WHERE session_id IN ({marks}){live} GROUP BY session_id",
                present,
            ).fetchall()
        )
        for values in found:
            rows[values[0]] = Row(
                source=values[1],
                title=values[2],
                model=values[3],
                billing_provider=values[4],
                started_at=values[5],
                ended_at=values[6],
                end_reason=values[7],
                message_count=values[8] or 0,
                tool_call_count=values[9] or 0,
                input_tokens=values[10] or 0,
                output_tokens=values[11] or 0,
                cache_read_tokens=values[12] or 0,
                cache_write_tokens=values[13] or 0,
                reasoning_tokens=values[14] or 0,
                estimated_cost_usd=values[15],
                api_call_count=values[16] or 0,
                agent_marks=bool(values[17]),
                live_messages=counts.get(values[0], 0),
            )
    return rows
