"""Builders for the engine's values, shared by the engine tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from webui_insights.engine.hermes import Capabilities
from webui_insights.engine.plan import Context
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
