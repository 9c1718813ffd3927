"""What newer hermes-agent schemas add that this layer fills, where a state.db has it.

hermes-agent's ``state.db`` grows columns and tables release by release
(ARCHITECTURE.md, *What upstream hermes-agent reads*): ``session_model_usage``
(0.19.0: per-model usage that ``hermes insights`` reads before the session
totals), and on upstream main ``sessions.last_activity_at`` (what listings
and the auto-archive/prune sweeps sort and age a row by) and
``sessions.title_source`` (whether hermes may replace a title). Each is
filled only where the database has it — found by looking at the database
itself (``probe``), never by the installed release's version, since one
state.db is opened by several hermes-agent releases over its life.

This module owns the probe and the SQL that keeps a mirror-owned chat's
usage row a copy of its ``sessions`` totals: both the copy ``apply`` runs
and the check ``rows`` reads use the same key expressions, so "in step"
means exactly "what the copy would write".

Never: write anything itself (``apply`` runs the statements), or touch a
usage row whose ``task`` is not the main loop's (``''``).
"""

from __future__ import annotations

import sqlite3

__all__ = [
    "LAST_ACTIVITY",
    "TITLE_SOURCE",
    "MODEL_USAGE",
    "TITLE_SOURCE_WEBUI",
    "probe",
    "messages_have_active",
    "USAGE_DELETE_SQL",
    "USAGE_COPY_SQL",
    "USAGE_CHECK_SQL",
    "usage_in_step",
]

# The names of what a database may have (``Context.columns``).
LAST_ACTIVITY = "last_activity_at"
TITLE_SOURCE = "title_source"
MODEL_USAGE = "session_model_usage"

# The provenance written with every title this layer writes. The WebUI's title
# is the user's choice (typed, or accepted from the WebUI's own titler), and on
# upstream only "user" is never replaced by hermes' derived/llm titler (NULL
# ranks as "user" too, but says nothing a reader can rely on).
TITLE_SOURCE_WEBUI = "user"

# The sessions columns the usage copy reads besides those the rule writes
# (present since hermes-agent 0.13.0; checked, not assumed).
_SESSION_COLUMNS_READ = frozenset(
    {"billing_base_url", "billing_mode", "actual_cost_usd", "cost_status", "cost_source", "api_call_count"}
)
_USAGE_COLUMNS = frozenset(
    {
        "session_id",
        "model",
        "billing_provider",
        "billing_base_url",
        "billing_mode",
        "task",
        "api_call_count",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "estimated_cost_usd",
        "actual_cost_usd",
        "cost_status",
        "cost_source",
        "first_seen",
        "last_seen",
    }
)


def probe(conn: sqlite3.Connection) -> frozenset[str]:
    """Which of ``LAST_ACTIVITY``, ``TITLE_SOURCE`` and ``MODEL_USAGE`` this database has.

    Two ``PRAGMA table_info`` reads (a few µs): cheap enough per transaction,
    so a database hermes upgrades while this process runs is followed
    without a restart. ``session_model_usage`` counts only in its keyed-by-
    task form (0.19.0's v22 and later): before that its primary key has no
    ``task`` and the upsert below would not match it.
    """
    sessions = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
    found = {name for name in (LAST_ACTIVITY, TITLE_SOURCE) if name in sessions}
    if _SESSION_COLUMNS_READ <= sessions:
        usage = {row[1] for row in conn.execute("PRAGMA table_info(session_model_usage)")}
        if _USAGE_COLUMNS <= usage:
            found.add(MODEL_USAGE)
    return frozenset(found)


def messages_have_active(conn: sqlite3.Connection) -> bool:
    """hermes-agent ≥ 0.18 keeps superseded messages with ``active = 0``."""
    return any(row[1] == "active" for row in conn.execute("PRAGMA table_info(messages)"))


# The usage row's key, from the session row: the same COALESCEs as hermes'
# own v20 seed, so the row it seeded from a chat's totals is the row rewritten here.
_KEY = (
    ("model", "COALESCE(s.model, 'unknown')"),
    ("billing_provider", "COALESCE(s.billing_provider, '')"),
    ("billing_base_url", "COALESCE(s.billing_base_url, '')"),
    ("billing_mode", "COALESCE(s.billing_mode, '')"),
)
# The figures, each equal to the session row's. The cost is the stored one:
# insights takes a usage row's cost as stored only when it has a cost_status
# or cost_source (else it re-prices the tokens), so the status says what the
# figure is — the WebUI's estimate, or none known ($0, as the residual gave).
_FIGURES = (
    ("api_call_count", "COALESCE(s.api_call_count, 0)"),
    ("input_tokens", "COALESCE(s.input_tokens, 0)"),
    ("output_tokens", "COALESCE(s.output_tokens, 0)"),
    ("cache_read_tokens", "COALESCE(s.cache_read_tokens, 0)"),
    ("cache_write_tokens", "COALESCE(s.cache_write_tokens, 0)"),
    ("reasoning_tokens", "COALESCE(s.reasoning_tokens, 0)"),
    ("estimated_cost_usd", "COALESCE(s.estimated_cost_usd, 0)"),
    ("actual_cost_usd", "COALESCE(s.actual_cost_usd, 0)"),
    (
        "cost_status",
        "COALESCE(s.cost_status, CASE WHEN s.estimated_cost_usd IS NULL THEN 'unknown' ELSE 'estimated' END)",
    ),
    ("cost_source", "s.cost_source"),
)
# A chat with no usage at all has no row (hermes' seed and its delta path alike
# record none), so it stays out of insights' per-model table as before.
_HAS_USAGE = (
    "(COALESCE(s.input_tokens, 0) + COALESCE(s.output_tokens, 0) + COALESCE(s.cache_read_tokens, 0)"
    " + COALESCE(s.cache_write_tokens, 0) + COALESCE(s.reasoning_tokens, 0) + COALESCE(s.api_call_count, 0) > 0"
    " OR COALESCE(s.estimated_cost_usd, 0) > 0)"
)


def _key_matches(table: str) -> str:
    return " AND ".join(f"{table}.{column} = {value}" for column, value in _KEY)


_FIGURES_MATCH = " AND ".join(f"u.{column} IS {value}" for column, value in _FIGURES)

# The three statements below each take the ids of many chats at once, bound in
# ``{marks}`` (``store.in_chunks``): the delete and the copy for a chunk of 100
# chats as one statement each cost less than half of the two run per chat
# (5.3 → 2.5 µs of CPU per chat in a 10,000-chat backfill).

# Per chat id (run before the copy): its main-loop rows other than the one the
# copy writes — a model or billing route it no longer has, or all of them when
# it has no usage. What remains is at most the copy's own row.
USAGE_DELETE_SQL = (
    "DELETE FROM session_model_usage WHERE session_id IN ({marks}) AND task = '' AND NOT EXISTS ("
    "SELECT 1 FROM sessions s WHERE s.id = session_model_usage.session_id AND "
    f"{_key_matches('session_model_usage')} AND {_HAS_USAGE})"
)
_ROUTE_COLUMNS = ", ".join(column for column, _ in _KEY)
_FIGURE_COLUMNS = ", ".join(column for column, _ in _FIGURES)
# Per chat id: the one main-loop row, set to the session row's totals (up or down).
USAGE_COPY_SQL = (
    f"INSERT INTO session_model_usage (session_id, {_ROUTE_COLUMNS}, task, {_FIGURE_COLUMNS}, first_seen, last_seen) "
    f"SELECT s.id, {', '.join(value for _, value in _KEY)}, '', {', '.join(value for _, value in _FIGURES)}, "
    "s.started_at, COALESCE(s.ended_at, s.started_at) "
    f"FROM sessions s WHERE s.id IN ({{marks}}) AND {_HAS_USAGE} "
    f"ON CONFLICT(session_id, {_ROUTE_COLUMNS}, task) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column, _ in _FIGURES)
    + ", last_seen = excluded.last_seen"
)
# For rows: (id, main-loop rows, of them the copy's, has usage) per session.
USAGE_CHECK_SQL = (
    "SELECT s.id, "
    "(SELECT COUNT(*) FROM session_model_usage u WHERE u.session_id = s.id AND u.task = ''), "
    "(SELECT COUNT(*) FROM session_model_usage u WHERE u.session_id = s.id AND u.task = ''"
    f" AND {_key_matches('u')} AND {_FIGURES_MATCH}), "
    f"{_HAS_USAGE} FROM sessions s WHERE s.id IN ({{marks}})"
)


def usage_in_step(main_rows: int, copies: int, has_usage: int) -> bool:
    """The chat's main-loop usage is what the copy would leave: one row equal to the totals, or none."""
    return (main_rows == 1 and copies == 1) if has_usage else main_rows == 0
