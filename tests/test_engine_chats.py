"""engine/chats.py: from what the WebUI reported (a ``UsageSnapshot``) to what the rule compares (a ``Desired``).

The conversion runs on the writer thread, after the host's save returned:
the host may have appended messages since, and a clock may have run ahead.
What it hands the rule must be the chat as it was saved, ordered by a
version that cannot outrank every later state.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webui_insights.engine.chats import count_tool_calls, desired_from
from webui_insights.engine.plan import FUTURE_TOLERANCE_S
from webui_insights.engine.states import STAMPED_AHEAD, Desired, Ledger, Version
from webui_insights.snapshot import UsageSnapshot

NOW = 1_800_000_000.0


def turn(n: int, *, at: float, tool_calls: int = 0) -> list[dict[str, Any]]:
    """One user message and the assistant's answer, ``tool_calls`` of them OpenAI-style."""
    calls = [{"id": f"call{n}.{i}", "type": "function"} for i in range(tool_calls)]
    answer: dict[str, Any] = {"role": "assistant", "content": f"answer {n}", "timestamp": at + 1}
    if calls:
        answer["tool_calls"] = calls
    return [{"role": "user", "content": f"question {n}", "timestamp": at}, answer]


def snapshot(**fields: Any) -> UsageSnapshot:
    values: dict[str, Any] = {
        "session_id": "chat1",
        "model": "test/model",
        "title": "A chat",
        "input_tokens": 1200,
        "output_tokens": 50,
        "message_count": 2,
        "created_at": NOW - 3600,
        "updated_at": NOW - 60,
        "observed": NOW - 59,
    }
    values.update(fields)
    return UsageSnapshot(**values)


# --------------------------------------------------------------- the fields


def test_every_field_the_webui_reported_reaches_the_rule() -> None:
    """A field dropped here is a column never written (or an agent's usage never counted)."""
    ledger = Ledger(cache_read_tokens=5, api_calls=1)
    snap = snapshot(
        billing_provider="openrouter",
        cache_read_tokens=100,
        cache_write_tokens=7,
        reasoning_tokens=9,
        estimated_cost_usd=0.25,
        tool_call_count=3,
        api_call_count=4,
        last_active_at=NOW - 61,
        agent_writes=True,
        ledger=ledger,
        earliest_message_at=NOW - 3500,
        continuation=True,
        notes=("version_invalid",),
    )
    desired, notes = desired_from(snap, now=NOW)
    assert desired == Desired.of(
        "chat1",
        Version(NOW - 60, NOW - 59),
        model="test/model",
        billing_provider="openrouter",
        title="A chat",
        input_tokens=1200,
        output_tokens=50,
        cache_read_tokens=100,
        cache_write_tokens=7,
        reasoning_tokens=9,
        estimated_cost_usd=0.25,
        message_count=2,
        tool_call_count=3,
        api_call_count=4,
        created_at=NOW - 3600,
        last_active_at=NOW - 61,
        agent_writes=True,
        ledger=ledger,
        earliest_message_at=NOW - 3500,
        continuation=True,
    )
    assert notes == ("version_invalid",)


@pytest.mark.parametrize(
    ("updated_at", "version", "notes"),
    [
        pytest.param(NOW - 60, NOW - 60, (), id="a change time in the past orders the state"),
        pytest.param(NOW + FUTURE_TOLERANCE_S, NOW + FUTURE_TOLERANCE_S, (), id="a clock a little ahead is tolerated"),
        pytest.param(
            NOW + FUTURE_TOLERANCE_S + 1,
            STAMPED_AHEAD,
            ("version_future",),
            id="a clock far ahead orders nothing, is known for what it is and is noted",
        ),
        pytest.param(None, 0.0, (), id="no change time never outranks a real one"),
    ],
)
def test_a_version_from_the_future_orders_nothing(
    updated_at: float | None, version: float, notes: tuple[str, ...]
) -> None:
    """A state stamped by a clock far ahead would outrank every real later state: none would be written."""
    desired, found = desired_from(snapshot(updated_at=updated_at), now=NOW)
    assert desired.version == Version(version, NOW - 59)
    assert found == notes


# -------------------------------------------------------------- the messages


def test_tool_calls_are_counted_from_the_messages_when_the_webui_does_not_say() -> None:
    messages = turn(1, at=NOW - 100, tool_calls=2) + turn(2, at=NOW - 50, tool_calls=1)
    desired, _ = desired_from(snapshot(messages=messages, message_count=4), now=NOW)
    assert desired.tool_call_count == 3


def test_a_tool_call_count_the_webui_keeps_wins() -> None:
    messages = turn(1, at=NOW - 100, tool_calls=2)
    desired, _ = desired_from(snapshot(messages=messages, tool_call_count=7), now=NOW)
    assert desired.tool_call_count == 7


def test_only_the_messages_the_save_counted_are_read() -> None:
    """The host appends to the same list after saving: a message of the next turn is not this state's."""
    messages = turn(1, at=NOW - 100, tool_calls=1)
    snap = snapshot(messages=messages, message_count=2)
    messages.extend(turn(2, at=NOW - 10_000, tool_calls=4))  # appended after the save, oddly stamped
    desired, _ = desired_from(snap, now=NOW, transcripts=True)
    assert desired.tool_call_count == 1
    assert desired.transcript == tuple(messages[:2])
    assert desired.earliest_message_at == NOW - 100


def test_the_transcript_is_taken_only_when_transcripts_are_mirrored_and_is_a_copy() -> None:
    """Most installations mirror usage only; a transcript kept by reference would change under the writer."""
    messages = turn(1, at=NOW - 100)
    off, _ = desired_from(snapshot(messages=messages), now=NOW)
    on, _ = desired_from(snapshot(messages=messages), now=NOW, transcripts=True)
    assert off.transcript is None
    messages.append({"role": "user", "content": "later"})
    assert on.transcript is not None and len(on.transcript) == 2


def test_the_oldest_message_dates_a_copied_chat() -> None:
    """A duplicated chat's messages predate it: its spend was someone else's (the rule's _inherited)."""
    desired, _ = desired_from(snapshot(messages=turn(1, at=NOW - 90_000), created_at=NOW - 60), now=NOW)
    assert desired.earliest_message_at == NOW - 90_000


def test_a_known_oldest_message_time_wins_over_the_messages() -> None:
    """A session file read without keeping its messages already found it."""
    snap = snapshot(messages=turn(1, at=NOW - 500), earliest_message_at=NOW - 900)
    assert desired_from(snap, now=NOW)[0].earliest_message_at == NOW - 900


def test_without_messages_nothing_is_counted_or_taken() -> None:
    desired, _ = desired_from(snapshot(), now=NOW, transcripts=True)
    assert (desired.tool_call_count, desired.transcript, desired.earliest_message_at) == (None, None, None)


# ---------------------------------------------------------- count_tool_calls


@pytest.mark.parametrize(
    ("messages", "count"),
    [
        pytest.param([{"role": "assistant", "tool_calls": [{}, {}]}], 2, id="OpenAI tool_calls are counted"),
        pytest.param(
            [{"role": "assistant", "content": [{"type": "text"}, {"type": "tool_use"}, {"type": "tool_use"}]}],
            2,
            id="Anthropic tool_use parts are counted",
        ),
        pytest.param(
            [{"role": "assistant", "tool_calls": [{}], "content": [{"type": "tool_use"}]}],
            2,
            id="both kinds in one message add up",
        ),
        pytest.param([{"role": "user", "tool_calls": [{}]}], 0, id="only the assistant makes tool calls"),
        pytest.param([{"role": "tool", "content": [{"type": "tool_use"}]}], 0, id="a tool's answer is no call"),
        pytest.param(
            [{"role": "assistant", "tool_calls": None}, {"role": "assistant", "tool_calls": {"a": 1}}],
            0,
            id="tool_calls that are not a list count nothing",
        ),
        pytest.param(
            [{"role": "assistant", "content": ["tool_use", None, {"type": "tool_use"}]}],
            1,
            id="content parts that are not objects are skipped",
        ),
        pytest.param(
            ["assistant", None, 3, [{"role": "assistant"}]], 0, id="messages that are not objects count nothing"
        ),
    ],
)
def test_count_tool_calls(messages: list[Any], count: int) -> None:
    """hermes insights reports tool calls per session: the WebUI keeps none of its own for most chats."""
    assert count_tool_calls(messages) == count


_PART = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "tool_use", "image"])}),
    st.none(),
    st.text(max_size=3),
)
_MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["assistant", "user", "tool"])},
        optional={
            "tool_calls": st.one_of(st.none(), st.lists(st.just({}), max_size=3)),
            "content": st.one_of(st.text(max_size=3), st.lists(_PART, max_size=4)),
        },
    ),
    st.none(),
    st.text(max_size=3),
)


@given(st.lists(_MESSAGE, max_size=8), st.lists(_MESSAGE, max_size=8))
def test_tool_calls_add_up_message_by_message(first: list[Any], second: list[Any]) -> None:
    """A chat's count is the sum of its messages': the count of a longer chat never goes down."""
    assert count_tool_calls(first + second) == count_tool_calls(first) + count_tool_calls(second)
    assert count_tool_calls(first) >= 0
