"""What a frontend says about one chat: the ``UsageSnapshot`` and its validation.

A snapshot is the only thing that crosses from the host's save to the
writer thread. It holds plain values and, at most, a reference to the
chat's message list (counted and converted later, on the writer thread, so
the save path stays cheap). Validation happens here, once: nothing
downstream ever sees a negative token count, a NaN cost or a profile name
with a slash in it. A bad value is refused with a reason (the ``stats()``
key) and a message that names the field, never the chat's text.

This module never touches state.db and never imports hermes-agent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from .profiles import is_valid_profile_name

__all__ = [
    "UsageSnapshot",
    "InvalidSnapshot",
    "PLACEHOLDER_TITLES",
    "build_snapshot",
    "checked",
    "check_session_id",
    "check_profile",
    "scrub_surrogates",
    "describe",
    "last_message_time",
    "earliest_message_time",
    "is_continuation",
    "WEBUI_FIELDS",
    "from_webui",
]

# What the WebUI shows before a chat has a real title (both hosts): never mirrored as a title.
PLACEHOLDER_TITLES = frozenset({"Untitled", "New Chat"})
# Usage columns in state.db are SQLite INTEGERs (signed 64-bit).
_MAX_INT = 2**63 - 1
# Session ids reach SQL only as bound parameters, but they also name files in
# the WebUI's state dir; refuse anything that could be a path.
_SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_MAX_TEXT_LEN = 256
_MAX_TITLE_LEN = 10_000  # hermes refuses > 100 after cleaning; beyond this we do not even look
_MAX_COST = 1e12

# Ids already matched against _SESSION_ID_RE: a chat is saved many times.
_checked_ids: set[str] = set()
_CHECKED_IDS_LIMIT = 4096


class InvalidSnapshot(ValueError):
    """A session value we refuse to mirror; ``reason`` is the stats() key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UsageSnapshot(NamedTuple):
    """One chat at one moment, as a frontend reports it.

    Totals are cumulative (what the chat has used so far), never deltas.
    ``input_tokens`` counts every prompt token, cached ones included (the
    OpenAI ``prompt_tokens`` convention, which hermes-webui follows); the
    mirror stores hermes' convention (input without cache read/write).
    ``None`` means "this frontend does not know": the cache split, reasoning
    tokens, the API-call count, the cost and the tool-call count are then
    taken from what the agent reported in this process, or left alone.

    ``updated_at`` is the chat's own clock (its last change); it orders the
    chat's states, so an older state never overwrites a newer one. Without
    it, states are ordered by when they were observed, and never outrank
    one that has it. ``last_active_at`` (default: ``updated_at``) becomes
    the row's ``ended_at``.

    ``messages`` may hold the chat's message list itself: it is only read on
    the writer thread (tool calls, transcripts), never kept afterwards.
    Immutable and without a ``__dict__``: a NamedTuple rather than a frozen
    slotted dataclass, because one is built on the host's save path and a
    NamedTuple is several times cheaper to build.
    """

    session_id: str
    profile: str | None = None
    model: str | None = None
    title: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    estimated_cost_usd: float | None = None
    message_count: int = 0
    tool_call_count: int | None = None
    api_call_count: int | None = None
    created_at: float | None = None
    updated_at: float | None = None
    last_active_at: float | None = None
    billing_provider: str | None = None
    messages: Sequence[Any] | None = None
    # Set by the capture: when this state was read (orders equal updated_at).
    observed: float = 0.0
    # Set by the capture from the agent hook: hermes-agent writes this chat's
    # row itself, and the usage it reported that the frontend does not keep.
    agent_writes: bool = False
    ledger: Any = None
    # Problems with values that did not refuse the snapshot (counted): e.g. "version_invalid".
    notes: tuple[str, ...] = ()
    # The oldest message's time, when known without ``messages`` (a session file read
    # without keeping them); otherwise the writer finds it in ``messages``.
    earliest_message_at: float | None = None
    # The chat continues another session under a new id (hermes' compression, see
    # ``is_continuation``): its spend before that is the other session's row.
    continuation: bool = False

    @property
    def key(self) -> tuple[str | None, str]:
        """Identity of the chat across profiles: (profile, session_id)."""
        return (self.profile, self.session_id)

    @property
    def has_usage(self) -> bool:
        return bool(
            self.input_tokens
            or self.output_tokens
            or self.cache_read_tokens
            or self.cache_write_tokens
            or self.reasoning_tokens
            or self.estimated_cost_usd
            or self.api_call_count
        )

    @property
    def is_blank(self) -> bool:
        """Nothing happened in it yet: no message, no usage (the WebUI makes many such chats).

        A title alone does not count: a current WebUI saves a new chat with
        its first message as a provisional title before the agent has run,
        and hermes-agent creates that chat's row itself moments later.
        Mirroring the title-only save would create the row first.
        """
        return not self.message_count and not self.has_usage


# ---------------------------------------------------------------- validation


def describe(value: Any) -> str:
    """Type and a short, content-free hint: log lines never carry chat text."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return f"{type(value).__name__} {value!r}"
    return type(value).__name__


def _count(name: str, value: Any) -> int:
    if type(value) is int:  # the common case first: this runs on the save path
        if 0 <= value <= _MAX_INT:
            return value
    elif type(value) is float and math.isfinite(value) and value.is_integer():
        if 0 <= value <= _MAX_INT:
            return int(value)
    elif value is None:
        return 0
    raise InvalidSnapshot("bad_value", f"{name} must be a non-negative integer, got {describe(value)}")


def _optional_count(name: str, value: Any) -> int | None:
    return None if value is None else _count(name, value)


def _cost(value: Any) -> float | None:
    """int, float, Decimal or a numeric string; finite, ≥ 0, < 1e12."""
    if value is None:
        return None
    if type(value) is float and 0.0 <= value < _MAX_COST:  # the usual case first: the save path
        return value
    number: float | None = None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)  # numpy's float64 is a float; an int past 1e308 overflows
        elif isinstance(value, Decimal):
            number = float(value) if value.is_finite() else math.nan
        elif isinstance(value, str) and len(value) <= _MAX_TEXT_LEN:
            number = float(Decimal(value.strip()))
    except (InvalidOperation, ValueError, OverflowError):
        number = None
    if number is None or not math.isfinite(number) or not 0 <= number < _MAX_COST:
        raise InvalidSnapshot(
            "bad_cost", f"estimated_cost_usd must be a finite non-negative number, got {describe(value)}"
        )
    return number


def scrub_surrogates(value: str) -> str:
    """Lone surrogates (pasted or scraped text) become U+FFFD, as hermes does: SQLite cannot store them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)
    return value


def _text(name: str, value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        raise InvalidSnapshot("bad_value", f"{name} must be a string, got {describe(value)}")
    text: str = value
    if len(text) > limit:
        raise InvalidSnapshot("bad_value", f"{name} is {len(text)} characters long (max {limit})")
    return text if text.isascii() else scrub_surrogates(text)


def _created_at(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) in (int, float) and math.isfinite(value) and value > 0:
        return float(value)
    raise InvalidSnapshot("bad_value", f"created_at must be an epoch timestamp, got {describe(value)}")


def _soft_timestamp(value: Any) -> float | None:
    """A timestamp that must not refuse the chat when wrong (the version): None, counted later."""
    if type(value) in (int, float) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def last_message_time(messages: Any) -> float | None:
    """When the last message was written (``timestamp`` or ``_ts``), if the WebUI stamped it."""
    if type(messages) is not list or not messages:
        return None
    last = messages[-1]
    if type(last) is not dict:
        return None
    value = last.get("timestamp") or last.get("_ts")
    return value if type(value) in (int, float) else None


def earliest_message_time(messages: Any) -> float | None:
    """When the oldest stamped message was written (``timestamp`` or ``_ts``), if any is stamped."""
    if type(messages) is not list:
        return None
    earliest: float | None = None
    for message in messages:
        if type(message) is dict:
            value = message.get("timestamp") or message.get("_ts")
            if type(value) in (int, float) and value > 0 and (earliest is None or value < earliest):
                earliest = value
    return earliest


def is_continuation(parent_session_id: Any, session_source: Any) -> bool:
    """hermes-webui's mark of a chat that continues another session under a new id (hermes' compression).

    Its ``parent_session_id`` names the session it continues; a fork (its
    ``session_source`` is ``"fork"``) names its parent too, but starts
    anew (with nothing spent).
    """
    return type(parent_session_id) is str and bool(parent_session_id) and session_source != "fork"


def check_session_id(value: Any) -> str:
    if type(value) is str and value in _checked_ids:
        return value
    if type(value) is str and _SESSION_ID_RE.fullmatch(value):
        if len(_checked_ids) >= _CHECKED_IDS_LIMIT:
            _checked_ids.clear()
        _checked_ids.add(value)
        return value
    raise InvalidSnapshot(
        "invalid_session_id", f"session_id must match {_SESSION_ID_RE.pattern}, got {describe(value)}"
    )


def check_profile(value: Any) -> str | None:
    """A hermes profile name, or None for the default profile ("default", "" or None alike)."""
    if value is None or value == "" or value == "default":
        return None
    if is_valid_profile_name(value):
        return str(value)
    raise InvalidSnapshot(
        "invalid_profile",
        f"profile must be None or match [a-z0-9][a-z0-9_-]{{0,63}}, got {describe(value)} of length "
        f"{len(value) if isinstance(value, str) else '?'}",
    )


def _counts(input_tokens: Any, output_tokens: Any, message_count: Any) -> tuple[int, int, int]:
    """The three counts every snapshot has, checked; raise InvalidSnapshot for the first bad one.

    This runs on the save path: the usual case (three plain non-negative
    ints) is checked in one expression, anything else field by field.
    """
    if (
        type(input_tokens) is int
        and type(output_tokens) is int
        and type(message_count) is int
        and 0 <= input_tokens <= _MAX_INT
        and 0 <= output_tokens <= _MAX_INT
        and 0 <= message_count <= _MAX_INT
    ):
        return input_tokens, output_tokens, message_count
    return (
        _count("input_tokens", input_tokens),
        _count("output_tokens", output_tokens),
        _count("message_count", message_count),
    )


def _dropped(
    updated_at: Any, last_active_at: Any, title: Any
) -> tuple[float | None, float | None, Any, tuple[str, ...]]:
    """(version, last activity, title, notes): what a snapshot takes of these, bad values dropped and noted.

    A version (``updated_at``, ``last_active_at``) that is not a plausible
    number becomes None (the last activity then defaults to the version);
    a title string past ``_MAX_TITLE_LEN`` becomes None (the row keeps
    whatever title it has). Any other title is checked with the rest.
    """
    notes: tuple[str, ...] = ()
    version = _soft_timestamp(updated_at)
    if version is None:
        notes = ("version_missing",) if updated_at is None else ("version_invalid",)
    active = _soft_timestamp(last_active_at)
    if type(title) is str and len(title) > _MAX_TITLE_LEN:
        title = None
        notes = (*notes, "title_refused")
    return version, active if active is not None else version, title, notes


def build_snapshot(
    session_id: Any,
    profile: Any = None,
    model: Any = None,
    title: Any = None,
    input_tokens: Any = 0,
    output_tokens: Any = 0,
    cache_read_tokens: Any = None,
    cache_write_tokens: Any = None,
    reasoning_tokens: Any = None,
    estimated_cost_usd: Any = None,
    message_count: Any = 0,
    tool_call_count: Any = None,
    api_call_count: Any = None,
    created_at: Any = None,
    updated_at: Any = None,
    last_active_at: Any = None,
    billing_provider: Any = None,
    messages: Sequence[Any] | None = None,
    observed: float = 0.0,
    earliest_message_at: Any = None,
    continuation: bool = False,
) -> UsageSnapshot:
    """Validate raw values and build the snapshot once; raise InvalidSnapshot.

    A title or model of the wrong type refuses the whole snapshot:
    mirroring half a chat would hide the problem. A title string too long
    for hermes ever to take and a version that is not a plausible number
    are dropped and noted instead (``_dropped``): the chat's usage is still
    worth mirroring.
    """
    input_tokens, output_tokens, message_count = _counts(input_tokens, output_tokens, message_count)
    version, active, title, notes = _dropped(updated_at, last_active_at, title)
    return UsageSnapshot(
        check_session_id(session_id),
        check_profile(profile),
        _text("model", model, _MAX_TEXT_LEN),
        _text("title", title, _MAX_TITLE_LEN),
        input_tokens,
        output_tokens,
        _optional_count("cache_read_tokens", cache_read_tokens),
        _optional_count("cache_write_tokens", cache_write_tokens),
        _optional_count("reasoning_tokens", reasoning_tokens),
        _cost(estimated_cost_usd),
        message_count,
        _optional_count("tool_call_count", tool_call_count),
        _optional_count("api_call_count", api_call_count),
        _created_at(created_at),
        version,
        active,
        _text("billing_provider", billing_provider, _MAX_TEXT_LEN),
        messages,
        observed,
        False,
        None,
        notes,
        _soft_timestamp(earliest_message_at),
        continuation is True,
    )


# A hermes-webui chat's own fields, under the WebUI's names: the live ``Session``
# object's attributes (``hook/adapter.py``) and its session file's keys
# (``sources``) alike. ``from_webui`` takes them in this order and is the one
# place that says which becomes which snapshot field.
WEBUI_FIELDS = (
    "session_id",
    "profile",
    "model",
    "title",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "estimated_cost",
    "api_call_count",
    "created_at",
    "updated_at",
    "model_provider",
    "parent_session_id",
    "session_source",
)


def from_webui(
    session_id: object,
    profile: object,
    model: object,
    title: object,
    input_tokens: object,
    output_tokens: object,
    cache_read_tokens: object,
    cache_write_tokens: object,
    reasoning_tokens: object,
    estimated_cost: object,
    api_call_count: object,
    created_at: object,
    updated_at: object,
    model_provider: object,
    parent_session_id: object,
    session_source: object,
    messages: object,
    message_count: int,
    observed: float,
    keep: Sequence[Any] | None,
    *,
    tool_call_count: int | None = None,
    earliest_message_at: float | None = None,
) -> UsageSnapshot:
    """The snapshot of a hermes-webui chat, from its fields as read (``WEBUI_FIELDS``); raises InvalidSnapshot.

    ``messages`` is the chat's message list as read (its last message
    dates the last activity); ``keep`` the messages the snapshot carries,
    if any. What only one reader knows cheaply is passed in: a live save
    leaves counting tool calls to the writer thread, a reader process
    counts them at once and drops the messages. The live adapter calls
    this positionally, on the host's save path (keywords would cost it
    about a microsecond).
    """
    return build_snapshot(
        session_id,
        profile,
        model,
        title,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
        reasoning_tokens,
        estimated_cost,  # estimated_cost_usd
        message_count,
        tool_call_count,
        api_call_count,
        created_at,
        updated_at,
        last_message_time(messages) or updated_at,  # last_active_at
        model_provider,  # billing_provider
        keep,
        observed,
        earliest_message_at,
        is_continuation(parent_session_id, session_source),
    )


def checked(snapshot: Any) -> UsageSnapshot:
    """A validated, normalised copy of what a custom adapter returned."""
    if not isinstance(snapshot, UsageSnapshot):
        raise InvalidSnapshot("bad_value", f"adapter returned {describe(snapshot)}, expected UsageSnapshot")
    messages = snapshot.messages
    if messages is not None and not isinstance(messages, (list, tuple)):
        raise InvalidSnapshot("bad_value", f"messages must be a list, got {describe(messages)}")
    return build_snapshot(
        snapshot.session_id,
        snapshot.profile,
        snapshot.model,
        snapshot.title,
        snapshot.input_tokens,
        snapshot.output_tokens,
        snapshot.cache_read_tokens,
        snapshot.cache_write_tokens,
        snapshot.reasoning_tokens,
        snapshot.estimated_cost_usd,
        snapshot.message_count if messages is None or snapshot.message_count else len(messages),
        snapshot.tool_call_count,
        snapshot.api_call_count,
        snapshot.created_at,
        snapshot.updated_at,
        snapshot.last_active_at,
        snapshot.billing_provider,
        messages,
        snapshot.observed,
        snapshot.earliest_message_at,
        snapshot.continuation,
    )
