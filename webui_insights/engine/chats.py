"""From what a frontend reported (a ``UsageSnapshot``) to what the rule compares (a ``Desired``).

Runs on the writer thread (or in a reader process for session files), never
on the host's save path: it counts the chat's tool calls and, when
transcripts are mirrored, takes the messages the save counted — work the
save path left for later by passing the message list by reference. The
messages themselves are converted only if the chat's row is this layer's
(``transcripts.plan_transcript``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..snapshot import UsageSnapshot, earliest_message_time
from .plan import FUTURE_TOLERANCE_S
from .states import STAMPED_AHEAD, Desired, Version

__all__ = ["desired_from", "count_tool_calls"]


def count_tool_calls(messages: Sequence[Any]) -> int:
    """Tool calls the assistant made: OpenAI ``tool_calls`` entries and Anthropic ``tool_use`` parts."""
    total = 0
    for message in messages:
        if type(message) is not dict or message.get("role") != "assistant":
            continue
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            total += len(calls)
        content = message.get("content")
        if isinstance(content, list):
            total += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "tool_use")
    return total


def desired_from(snapshot: UsageSnapshot, *, now: float, transcripts: bool = False) -> tuple[Desired, tuple[str, ...]]:
    """The chat as the rule sees it, and notes on values that were dropped (to count)."""
    notes = snapshot.notes
    updated_at = snapshot.updated_at or 0.0
    if updated_at > now + FUTURE_TOLERANCE_S:
        # A clock far ahead would make this state outrank every real later one.
        updated_at = STAMPED_AHEAD
        notes = (*notes, "version_future")
    messages = snapshot.messages
    tool_calls = snapshot.tool_call_count
    earliest = snapshot.earliest_message_at
    transcript = None
    if messages is not None:
        # The host may have appended since the save: only what was counted then.
        visible = list(messages[: snapshot.message_count])
        if tool_calls is None:
            tool_calls = count_tool_calls(visible)
        if earliest is None:
            earliest = earliest_message_time(visible)
        if transcripts:
            transcript = tuple(visible)
    # Positional, in Desired's field order: backfill builds tens of thousands a second.
    desired = Desired.of(
        snapshot.session_id,
        tuple.__new__(Version, (updated_at, snapshot.observed)),  # Version(...) without its Python-level __new__
        snapshot.model,
        snapshot.billing_provider,
        snapshot.title,
        snapshot.input_tokens,
        snapshot.output_tokens,
        snapshot.cache_read_tokens,
        snapshot.cache_write_tokens,
        snapshot.reasoning_tokens,
        snapshot.estimated_cost_usd,
        snapshot.message_count,
        tool_calls,
        snapshot.api_call_count,
        snapshot.created_at,
        snapshot.last_active_at,
        snapshot.agent_writes,
        snapshot.ledger,
        transcript,
        earliest,
        snapshot.continuation,
    )
    return desired, notes
