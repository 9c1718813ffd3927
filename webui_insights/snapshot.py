"""What we read from a chat session: the immutable usage snapshot and its adapters.

A snapshot is the only thing that crosses from the host's save to the writer
thread, so it is frozen and holds plain values: no session object, no list of
messages. Validation happens here, once, so that nothing downstream ever sees
a negative token count, a NaN cost or a profile name with a slash in it.
This module never touches state.db and never imports hermes-agent.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from operator import attrgetter
from typing import Any, NamedTuple, Protocol

from .profiles import is_valid_profile_name
from .transcript import TranscriptDelta, scrub_surrogates

__all__ = [
    "UsageSnapshot",
    "InvalidSnapshot",
    "Adapter",
    "WebUISessionAdapter",
    "webui_session_adapter",
    "checked",
    "build_snapshot",
    "DEFAULT_TITLE",
]

DEFAULT_TITLE = "Untitled"
# Usage columns in state.db are SQLite INTEGERs (signed 64-bit).
_MAX_INT = 2**63 - 1
# Session ids reach SQL only as bound parameters, but they also name files in
# the WebUI's state dir; refuse anything that could be a path.
_SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_MAX_MODEL_LEN = 256

# Ids already matched against _SESSION_ID_RE: a chat is saved many times.
_checked_ids: set[str] = set()
# Before this (2100-01-01), a float created_at needs no clock read to be plausible.
_SANE_TIMESTAMP = 4_102_444_800.0

# Per-process order of snapshots: a later read of a session always has a
# higher number, which is how the writer refuses to write an older state.
_sequence = itertools.count(1)


def next_sequence() -> int:
    return next(_sequence)


class InvalidSnapshot(ValueError):
    """A session value we refuse to mirror; ``reason`` is the stats() key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UsageSnapshot(NamedTuple):
    """Cumulative usage of one chat session at one moment.

    Token counts and cost are totals (what the chat has used so far), never
    deltas. ``api_call_count`` and ``estimated_cost_usd`` may be None when the
    frontend does not track them; the stored value is then left alone.

    Immutable and without a ``__dict__``, so it can cross to the writer
    thread safely. It is a NamedTuple rather than a frozen dataclass because
    one is built on the save path: measured here, a frozen slotted dataclass
    of these 15 fields takes ~2.8 µs to construct, a NamedTuple ~0.4 µs.
    """

    session_id: str
    profile: str | None = None
    model: str | None = None
    title: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated_cost_usd: float | None = None
    message_count: int = 0
    api_call_count: int | None = None
    created_at: float | None = None
    billing_provider: str | None = None
    seq: int = 0
    # Set only when transcript mirroring is on: the messages to add or replace.
    transcript: TranscriptDelta | None = None

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
        """No usage and no real title: a chat that was opened and never used."""
        return not self.has_usage and (not self.title or self.title == DEFAULT_TITLE)

    def fingerprint(self) -> tuple[Any, ...]:
        """Everything whose change is worth a write (not seq, not created_at)."""
        return (
            self.session_id,
            self.profile,
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
            self.estimated_cost_usd,
            self.title,
            self.model,
            self.message_count,
            self.api_call_count,
        )


class Adapter(Protocol):
    """Reads a snapshot from a host's session object (None: nothing to mirror)."""

    def __call__(self, session: Any) -> UsageSnapshot | None: ...


# ---------------------------------------------------------------- validation


def _count(name: str, value: Any) -> int:
    if type(value) is int:  # the common case first: this runs on the save path
        if 0 <= value <= _MAX_INT:
            return value
    elif type(value) is float and math.isfinite(value) and value.is_integer():
        if 0 <= value <= _MAX_INT:
            return int(value)
    elif value is None:
        return 0
    raise InvalidSnapshot("bad_value", f"{name} must be a non-negative integer, got {_describe(value)}")


def _optional_count(name: str, value: Any) -> int | None:
    return None if value is None else _count(name, value)


def _cost(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) in (int, float) and math.isfinite(value) and 0 <= value < 1e12:
        return float(value)
    raise InvalidSnapshot(
        "bad_value", f"estimated_cost_usd must be a finite non-negative number, got {_describe(value)}"
    )


def _text(name: str, value: Any, limit: int | None = None) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        raise InvalidSnapshot("bad_value", f"{name} must be a string, got {_describe(value)}")
    text: str = value
    if limit is not None and len(text) > limit:
        raise InvalidSnapshot("bad_value", f"{name} is {len(text)} characters long (max {limit})")
    return text if text.isascii() else scrub_surrogates(text)


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) is float and 0.0 < value < _SANE_TIMESTAMP:  # the usual case: no clock read
        return value
    if type(value) in (int, float) and math.isfinite(value) and 0 < value <= time.time() + 86400:
        return float(value)
    raise InvalidSnapshot("bad_value", f"created_at must be an epoch timestamp, got {_describe(value)}")


def _describe(value: Any) -> str:
    """Type and a short, content-free hint: log lines never carry chat text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{type(value).__name__} {value!r}"
    return type(value).__name__


def check_session_id(value: Any) -> str:
    if type(value) is str and value in _checked_ids:
        return value
    if type(value) is str and _SESSION_ID_RE.fullmatch(value):
        if len(_checked_ids) >= 4096:
            _checked_ids.clear()
        _checked_ids.add(value)
        return value
    raise InvalidSnapshot(
        "invalid_session_id", f"session_id must match {_SESSION_ID_RE.pattern}, got {_describe(value)}"
    )


def check_profile(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if is_valid_profile_name(value):
        return str(value)
    raise InvalidSnapshot(
        "invalid_profile",
        f"profile must be None or match [a-z0-9][a-z0-9_-]{{0,63}}, got {_describe(value)} of length "
        f"{len(value) if isinstance(value, str) else '?'}",
    )


def build_snapshot(
    session_id: Any,
    profile: Any = None,
    model: Any = None,
    title: Any = None,
    input_tokens: Any = 0,
    output_tokens: Any = 0,
    cache_read_tokens: Any = 0,
    cache_write_tokens: Any = 0,
    reasoning_tokens: Any = 0,
    estimated_cost_usd: Any = None,
    message_count: Any = 0,
    api_call_count: Any = None,
    created_at: Any = None,
    billing_provider: Any = None,
    seq: int = 0,
) -> UsageSnapshot:
    """Validate raw values and build the snapshot once; raise InvalidSnapshot.

    A title or model of the wrong type refuses the whole snapshot: mirroring
    half a session would hide the problem.
    """
    # This runs on the save path: the usual case (six plain non-negative
    # ints) is checked in one expression, anything else field by field.
    if not (
        type(input_tokens) is int
        and type(output_tokens) is int
        and type(cache_read_tokens) is int
        and type(cache_write_tokens) is int
        and type(reasoning_tokens) is int
        and type(message_count) is int
        and min(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, message_count)
        >= 0
        and max(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, message_count)
        <= _MAX_INT
    ):
        input_tokens = _count("input_tokens", input_tokens)
        output_tokens = _count("output_tokens", output_tokens)
        cache_read_tokens = _count("cache_read_tokens", cache_read_tokens)
        cache_write_tokens = _count("cache_write_tokens", cache_write_tokens)
        reasoning_tokens = _count("reasoning_tokens", reasoning_tokens)
        message_count = _count("message_count", message_count)
    return UsageSnapshot(
        check_session_id(session_id),
        check_profile(profile),
        _text("model", model, _MAX_MODEL_LEN),
        _text("title", title),
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
        reasoning_tokens,
        _cost(estimated_cost_usd),
        message_count,
        None if api_call_count is None else _count("api_call_count", api_call_count),
        _timestamp(created_at),
        _text("billing_provider", billing_provider, _MAX_MODEL_LEN),
        seq or next_sequence(),
    )


def checked(snapshot: UsageSnapshot) -> UsageSnapshot:
    """A validated, normalised copy of what a custom adapter returned."""
    if not isinstance(snapshot, UsageSnapshot):
        raise InvalidSnapshot("bad_value", f"adapter returned {_describe(snapshot)}, expected UsageSnapshot")
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
        snapshot.message_count,
        snapshot.api_call_count,
        snapshot.created_at,
        snapshot.billing_provider,
        snapshot.seq,
    )


# ------------------------------------------------------- the WebUI's session

# hermes-webui's api.models.Session attribute names, in fingerprint order.
_WEBUI_FIELDS = (
    "session_id",
    "profile",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "estimated_cost",
    "title",
    "model",
)
_read_webui_fields = attrgetter(*_WEBUI_FIELDS)


class WebUISessionAdapter:
    """Default adapter: hermes-webui's ``api.models.Session`` attributes.

    ``fingerprint()`` is the cheap pre-check run on every save: a handful of
    attribute reads and a tuple, so a save with nothing new costs about a
    microsecond. The full snapshot is only built when the fingerprint moved.
    """

    def fingerprint(self, session: Any) -> tuple[Any, ...]:
        try:
            values = _read_webui_fields(session)
        except AttributeError:
            values = tuple(getattr(session, name, None) for name in _WEBUI_FIELDS)
        messages = getattr(session, "messages", None)
        if type(messages) is list:  # the usual case, without a try
            return values + (len(messages), getattr(session, "api_call_count", None))
        try:
            count = len(messages) if messages is not None else 0
        except TypeError:
            count = -1
        return values + (count, getattr(session, "api_call_count", None))

    def __call__(self, session: Any) -> UsageSnapshot | None:
        return self.snapshot(session, self.fingerprint(session))

    def snapshot(self, session: Any, fingerprint: tuple[Any, ...]) -> UsageSnapshot:
        """The snapshot, reusing what ``fingerprint()`` already read."""
        session_id, profile, tokens_in, tokens_out, cache_read, cache_write, cost, title, model, count, calls = (
            fingerprint
        )
        if count < 0:
            messages = getattr(session, "messages", None)
            raise InvalidSnapshot("bad_value", f"messages must be a list, got {_describe(messages)}")
        return build_snapshot(
            session_id,
            profile,
            model,
            title,
            tokens_in,
            tokens_out,
            cache_read,
            cache_write,
            getattr(session, "reasoning_tokens", 0),
            cost,
            count,
            calls,
            getattr(session, "created_at", None),
            getattr(session, "model_provider", None),
        )


webui_session_adapter = WebUISessionAdapter()
