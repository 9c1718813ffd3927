"""Reading chats' ``sessions`` rows, with what tells hermes-agent's own writes apart.

Bulk reads (one query per few hundred chats) that work inside a write
transaction and on a read-only connection alike. Besides the columns the
rule compares, each row says whether hermes-agent's ``create_session``
marks are on it (``model_config`` / ``system_prompt``, which this layer
never sets; hermes' migrations' bookkeeping keys in ``model_config`` do not
count) and how many live messages it has.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from typing import Any

from .schema import (
    LAST_ACTIVITY,
    MODEL_USAGE,
    TITLE_SOURCE,
    USAGE_CHECK_SQL,
    messages_have_active,
    probe,
    usage_in_step,
)
from .states import Row
from .store import in_chunks, marks

__all__ = ["read_rows", "messages_have_active"]

# hermes-agent's create_session stores the agent's model_config (max_iterations,
# reasoning_config, ...) and system prompt. hermes' own v16 migration also writes
# model_config on old rows, with only its bookkeeping keys (_delegate_from,
# _branched_from): that is not a mark of hermes-agent writing the chat.
_AGENT_MARKS = (
    "(system_prompt IS NOT NULL OR CASE WHEN json_valid(model_config) THEN "
    "json_remove(model_config, '$._delegate_from', '$._branched_from') NOT IN ('{}', 'null') ELSE 0 END)"
)
# The columns read, in Row's field order after the id (the marks last).
_NAMES = (
    "id",
    "source",
    "title",
    "model",
    "billing_provider",
    "started_at",
    "ended_at",
    "end_reason",
    "message_count",
    "tool_call_count",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "estimated_cost_usd",
    "api_call_count",
)
assert _NAMES[1:] == Row._fields[: len(_NAMES) - 1]
assert Row._fields[len(_NAMES) - 1 :] == (
    "agent_marks",
    "live_messages",
    "bad_values",
    "last_activity_at",
    "title_source",
    "usage_in_step",
)
_COLUMNS = ", ".join(_NAMES) + f", {_AGENT_MARKS}"


def read_rows(
    conn: sqlite3.Connection,
    session_ids: Iterable[str],
    *,
    active: bool | None = None,
    columns: frozenset[str] | None = None,
) -> dict[str, Row]:
    """The rows of ``session_ids`` that exist, keyed by id.

    ``columns``: what ``schema.probe`` found in this database (probed when
    None); the newer columns are read where it has them.
    """
    ids = list(session_ids)
    live = " AND active = 1" if (messages_have_active(conn) if active is None else active) else ""
    if columns is None:
        columns = probe(conn)
    newer = ", ".join(name if name in columns else "NULL" for name in (LAST_ACTIVITY, TITLE_SOURCE))
    rows: dict[str, Row] = {}
    for chunk, in_chunk in in_chunks(ids):
        found = conn.execute(f"SELECT {_COLUMNS}, {newer} FROM sessions WHERE id IN ({in_chunk})", chunk).fetchall()
        if not found:
            continue
        present = [values[0] for values in found]
        in_present = marks(len(present))
        counts = dict(
            conn.execute(
                f"SELECT session_id, COUNT(*) FROM messages "
                f"WHERE session_id IN ({in_present}){live} GROUP BY session_id",
                present,
            ).fetchall()
        )
        usage: dict[str, bool] = {}
        if MODEL_USAGE in columns:
            checked = conn.execute(USAGE_CHECK_SQL.format(marks=in_present), present).fetchall()
            usage = {sid: usage_in_step(main, copies, has) for sid, main, copies, has in checked}
        for values in found:
            rows[values[0]] = _row(values, counts.get(values[0], 0), usage.get(values[0]))
    return rows


def _positions(*names: str) -> tuple[tuple[int, str], ...]:
    return tuple((_NAMES.index(name), name) for name in names)


# Columns by the type the rule reads them as.
_TEXT = _positions("source", "title", "model", "billing_provider", "end_reason")
_REALS = _positions("started_at", "ended_at", "estimated_cost_usd")
_COUNTS = _positions(
    "message_count",
    "tool_call_count",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "api_call_count",
)
_SOURCE = _NAMES.index("source")
_MARKS = len(_NAMES)


def _row(values: tuple[Any, ...], live_messages: int, usage_in_step: bool | None = None) -> Row:
    """A row as the rule reads it; a value not of its column's type (someone else wrote it) reads as unknown.

    Such a column is named in ``bad_values`` (the plan counts it): on a row
    this layer writes, the plan then sets it right; on hermes-agent's own
    rows it is left as it is (only ``started_at`` is ever written there).
    """
    clean = list(values)
    bad: list[str] = []
    for at, name in _TEXT:
        value = clean[at]
        if value is not None and type(value) is not str:
            clean[at] = None if at != _SOURCE else repr(value)  # a source that is not text is not "webui"
            bad.append(name)
    for at, name in _REALS:
        value = clean[at]
        if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
            clean[at] = None
            bad.append(name)
    for at, name in _COUNTS:
        value = clean[at]
        if value is None:
            clean[at] = 0
        elif type(value) is not int:
            clean[at] = 0
            bad.append(name)
    last_activity, title_source = clean[_MARKS + 1 : _MARKS + 3]
    if last_activity is not None and (type(last_activity) not in (int, float) or not math.isfinite(last_activity)):
        last_activity = None
        bad.append(LAST_ACTIVITY)
    if title_source is not None and type(title_source) is not str:
        title_source = None
        bad.append(TITLE_SOURCE)
    # In Row's field order: the columns, the marks, the counts, then the newer schema's.
    return Row._make(
        (*clean[1:_MARKS], bool(clean[_MARKS]), live_messages, tuple(bad), last_activity, title_source, usage_in_step)
    )
