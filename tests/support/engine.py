"""Builders for the sync engine's values (chats, rows, records, one sync run), shared by the engine tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from webui_insights.engine.hermes import Capabilities
from webui_insights.engine.plan import ChatPlan, Context, plan_chat
from webui_insights.engine.records import merge
from webui_insights.engine.states import Desired, Ledger, Record, Row, Version
from webui_insights.engine.store import StateStore
from webui_insights.engine.sync import SyncReport, sync

NOW = 1_800_000_000.0
CAPS = Capabilities.of_installed()
CONTEXT = Context(now=NOW, sanitize_title=CAPS.sanitize_title, max_title_length=CAPS.max_title_length)


def desired(
    session_id: str = "chat1", *, at: float = NOW - 100, observed: float | None = None, **fields: Any
) -> Desired:
    """A chat as the WebUI has it; ``at`` is its updated_at (and, by default, when it was observed)."""
    values: dict[str, Any] = {
        "title": "A chat",
        "input_tokens": 1234,
        "output_tokens": 56,
        "cache_read_tokens": 200,
        "cache_write_tokens": 0,
        "message_count": 2,
        "tool_call_count": 0,
        "created_at": NOW - 3600,
        "last_active_at": at,
        "estimated_cost_usd": 0.01,
        "model": "test/model",
    }
    values.update(fields)
    return Desired.of(session_id, Version(at, observed if observed is not None else at), **values)


def row(**fields: Any) -> Row:
    values: dict[str, Any] = {
        "source": "webui",
        "title": None,
        "model": None,
        "billing_provider": None,
        "started_at": NOW - 10,
        "ended_at": None,
        "end_reason": None,
        "message_count": 0,
        "tool_call_count": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "estimated_cost_usd": None,
        "api_call_count": 0,
    }
    values.update(fields)
    return Row(**values)


def record(**fields: Any) -> Record:
    return Record(**fields)


def ledger(**fields: int) -> Ledger:
    return Ledger(**fields)


def run(db: Path, *chats: Desired, **kwargs: Any) -> SyncReport:
    """One ``sync`` on a fresh handle, as a CLI run or another process would."""
    store = StateStore(db)
    try:
        return sync(store, list(chats), keep_plans=True, **kwargs)
    finally:
        store.close()


def later(seconds: float = 1.0) -> float:
    return time.time() + seconds


class Applied:
    """One chat's row and record, with plans applied in memory the way ``apply`` writes them.

    For the pure rule's tests: a sequence of states (and events: a deletion
    in hermes, hermes-agent's own writes) without a database; the real
    SessionDB has its own tests.
    """

    def __init__(self, row: Row | None = None, record: Record | None = None, context: Context = CONTEXT) -> None:
        self.row = row
        self.record = record
        self.context = context

    def apply(self, chat: Desired) -> ChatPlan:
        plan = plan_chat(chat, self.row, self.record, self.context)
        title = plan.title.base if plan.title.action == "write" else None
        if plan.insert is not None:
            values = {k: v for k, v in plan.insert.items() if k in Row._fields}
            self.row = Row(**{**values, "title": title})
        elif self.row is not None:
            changes = dict(plan.update)
            changes.update({c: (getattr(self.row, c) or 0) + v for c, v in plan.add.items()})
            if title is not None:
                changes["title"] = title
            self.row = self.row._replace(**changes)
        changes = dict(plan.record or {})
        if title is not None:
            changes.update(title_base=title, title_written=title)
        if changes:
            self.record = merge(self.record, changes)
        return plan

    def delete_in_hermes(self) -> None:
        self.row = None

    def usage(self) -> tuple[int, ...]:
        """(input, output, cache read, messages) as the row holds them."""
        assert self.row is not None
        return (self.row.input_tokens, self.row.output_tokens, self.row.cache_read_tokens, self.row.message_count)
