"""The three views the sync rule compares, as plain immutable values.

- ``Desired``: what the WebUI says a chat is (from a live save or a session
  file), with its version;
- ``Row``: the chat's ``sessions`` row as state.db holds it now;
- ``Record``: what this layer remembers about the chat, kept in state.db
  beside the row (see ``records``): who writes the row, the version last
  applied, the chat's figures as last seen and what of them was spent in
  this chat (``Counters``), the title it last wrote, the transcript it
  wrote, and the usage the agent reported that the WebUI does not keep.

Nothing here does I/O; ``plan`` turns the three into the changes to make.
"""

from __future__ import annotations

import hashlib
import marshal
from typing import Any, Literal, NamedTuple

__all__ = [
    "Owner",
    "Version",
    "STAMPED_AHEAD",
    "Ledger",
    "Counters",
    "Desired",
    "Row",
    "Record",
    "OWNED_COLUMNS",
    "same_state",
]

# mirror: only this layer writes the row; hermes: hermes-agent writes it
# (a current WebUI's streaming chats) and this layer only fills what it
# leaves out; foreign: another source's row (cli, a gateway platform, ...)
# that this layer never writes.
Owner = Literal["mirror", "hermes", "foreign"]


class Version(NamedTuple):
    """Order of a chat's states: the chat's own clock, then when the state was observed.

    ``updated_at`` is the WebUI's (or an adapter's) last-change time: 0.0
    when unknown, so such a state never outranks a real one; ``STAMPED_AHEAD``
    when a clock far ahead stamped it, which outranks nothing either but is
    never dropped as older (the rule cannot place it: ``plan._unplaced``).
    ``observed`` breaks ties between two different states with the same
    ``updated_at`` (the WebUI saves a generated title without moving
    ``updated_at``): the capture time of a live save (taken after the save
    returned, under the capture lock) or the mtime of a session file (when
    the save that wrote it ran). A state read from a file is therefore
    older than any later capture and newer than any capture before the
    save that wrote it — in every process.
    """

    updated_at: float
    observed: float


# ``Version.updated_at`` of a state stamped more than ``plan.FUTURE_TOLERANCE_S`` ahead of now: below
# every real or unknown time, and known for what it is — it may be the newest state (a turn saved while
# the clock ran ahead) or an old copy, so the rule reads it unordered instead of ordering it.
STAMPED_AHEAD = -1.0


class Ledger(NamedTuple):
    """Usage hermes-agent itself counted for a chat, seen in the host's process.

    hermes-webui does not record everything the agent spends: v0.50.12 keeps
    no cache counts, and neither release adds the tokens of its
    non-streaming ``/api/chat`` turns to the chat. Cumulative per chat once
    stored in the record; as part of a live snapshot, the increments
    observed since the last one. Increments add up in any order, so they
    are applied whatever the version rule says about the rest of the
    snapshot. ``prompt_tokens`` include cached ones (the WebUI's convention).
    """

    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    api_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def plus(self, other: Ledger | None) -> Ledger:
        if other is None or not any(other):
            return self
        return Ledger._make(a + b for a, b in zip(self, other, strict=True))

    def beyond(self, other: Ledger) -> Ledger:
        """What this ledger holds beyond ``other`` (never negative): increments not yet accounted for."""
        return Ledger._make(max(0, a - b) for a, b in zip(self, other, strict=True))


class Counters(NamedTuple):
    """A chat's cumulative figures as the WebUI keeps them (prompt tokens include cached ones).

    The record keeps the figures as last seen and how far they grew in
    the chat, so that a row only ever shows spend (see ``plan``): figures
    that go down (a turn removed, an agent rebuilt) leave what was spent;
    figures a chat inherited (a duplicate, an import) were spent elsewhere.
    ``None`` in the WebUI ("not known") counts as 0 here.
    """

    prompt_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    api_calls: int = 0
    cost_usd: float = 0.0
    messages: int = 0
    tool_calls: int = 0

    @classmethod
    def of(cls, desired: Desired) -> Counters:
        return tuple.__new__(
            cls,
            (
                desired.input_tokens,
                desired.output_tokens,
                desired.cache_read_tokens or 0,
                desired.cache_write_tokens or 0,
                desired.reasoning_tokens or 0,
                desired.api_call_count or 0,
                desired.estimated_cost_usd or 0.0,
                desired.message_count,
                desired.tool_call_count or 0,
            ),
        )

    @classmethod
    def of_ledger(cls, ledger: Ledger) -> Counters:
        """What the agent counted, as the same figures (it counts no messages)."""
        return tuple.__new__(
            cls,
            (
                ledger.prompt_tokens,
                ledger.completion_tokens,
                ledger.cache_read_tokens,
                ledger.cache_write_tokens,
                ledger.reasoning_tokens,
                ledger.api_calls,
                ledger.cost_usd,
                0,
                0,
            ),
        )

    def growth(self, before: Counters) -> Counters:
        """How much each figure grew since ``before`` (never negative): also, each less ``before``'s, floored at 0."""
        return Counters._make(max(0, a - b) for a, b in zip(self, before, strict=True))

    def spends(self) -> bool:
        """Any usage figure is above zero (the message and tool-call counts are no spend)."""
        return any(self[:7])

    def larger(self, other: Counters) -> Counters:
        return Counters._make(max(a, b) for a, b in zip(self, other, strict=True))

    def plus(self, other: Counters) -> Counters:
        return Counters._make(a + b for a, b in zip(self, other, strict=True))


ZERO = Counters()


class Desired(NamedTuple):
    """A chat as the WebUI has it. Token counts follow the WebUI: input includes cached prompt tokens.

    ``None`` means "the WebUI does not know" (the stored value, or the
    ledger's, is used instead), never zero. A NamedTuple: backfill builds
    tens of thousands per second.
    """

    session_id: str
    version: Version
    model: str | None = None
    billing_provider: str | None = None
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
    last_active_at: float | None = None
    # In-process knowledge: hermes-agent was handed a SessionDB for this chat.
    agent_writes: bool = False
    ledger: Ledger | None = None
    # The chat's messages (as the WebUI keeps them), when transcripts are mirrored.
    transcript: tuple[Any, ...] | None = None
    # The oldest message's time: a chat whose messages predate it (created_at) was
    # made from another chat's (a duplicate, an import): their spend is not its own.
    earliest_message_at: float | None = None
    # The chat continues another session (hermes' compression gave it a new id):
    # its row starts at its own first call, not at the chat's creation.
    continuation: bool = False
    # Names the state (not its version): equal digests are the same chat state. Set by ``of``.
    digest: str = ""

    @classmethod
    def of(cls, *fields: Any, **named: Any) -> Desired:
        """A Desired with its digest (the way to build one): the fields, without ``digest``."""
        if named or len(fields) != _FIELDS_BEFORE_DIGEST:
            fields = tuple(cls(*fields, **named)[:-1])
        # Built once, positionally: backfill makes tens of thousands a second.
        return tuple.__new__(cls, (*fields, _digest(fields)))

    def state_digest(self) -> str:
        return _digest(self)


_FIELDS_BEFORE_DIGEST = len(Desired._fields) - 1
# Digests start with this; an earlier release's (``_repr_digest``) are 20 bare hex digits.
_DIGEST_MARK = "m"


def _digest(fields: Any) -> str:
    """The digest of a Desired's state fields (model … last_active_at).

    The bytes are ``marshal`` format 2 — by value only (no references, so
    equal states give equal bytes whichever objects hold them; format 3 and
    later may refer back to an object seen before), unchanged across Python 3
    releases so far, and three times faster than ``repr`` (backfill digests
    tens of thousands of chats a second). A value marshal does not know (an
    adapter's own type) is digested by its ``repr`` instead.
    """
    state = tuple(fields[2:16])
    try:
        data = marshal.dumps(state, 2)
    except ValueError:
        data = b"r" + repr(state).encode("utf-8", "surrogatepass")  # never equal to marshal's b"(..."
    return _DIGEST_MARK + hashlib.blake2b(data, digest_size=10).hexdigest()


def _repr_digest(fields: Any) -> str:
    """The digest an earlier release recorded (of the ``repr`` of the same fields)."""
    text = repr(tuple(fields[2:16]))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


def same_state(recorded: str | None, desired: Desired) -> bool:
    """True when ``recorded`` (a record's digest) names the state ``desired`` is, in either release's form."""
    if recorded is None:
        return False
    if recorded == desired.digest:
        return True
    return not recorded.startswith(_DIGEST_MARK) and recorded == _repr_digest(desired)


# The usage columns of a row, in the order a new row is inserted with them.
OWNED_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "estimated_cost_usd",
    "api_call_count",
    "message_count",
)


class Row(NamedTuple):
    """A ``sessions`` row as read, plus what tells hermes-agent's own writes apart."""

    source: str
    title: str | None
    model: str | None
    billing_provider: str | None
    started_at: float | None
    ended_at: float | None
    end_reason: str | None
    message_count: int
    tool_call_count: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    estimated_cost_usd: float | None
    api_call_count: int
    # hermes-agent's create_session sets these; this layer never does.
    agent_marks: bool = False
    # Live messages in the messages table for this chat.
    live_messages: int = 0
    # Columns whose stored value was not of their type (written by someone else): read as unknown.
    bad_values: tuple[str, ...] = ()
    # Where the database has them (``schema.probe``); None otherwise.
    last_activity_at: float | None = None
    title_source: str | None = None
    # The chat's main-loop ``session_model_usage`` rows are what ``schema.USAGE_COPY_SQL``
    # would leave (None: no such table).
    usage_in_step: bool | None = None


class Record(NamedTuple):
    """What this layer remembers of one chat (a row of its own table in the same state.db)."""

    owner: Owner | None = None
    version: Version | None = None
    digest: str | None = None  # Desired.digest() of the state last applied
    message_count: int = 0  # the WebUI's message count last applied (what an earlier release judged turns by)
    title_base: str | None = None
    title_written: str | None = None
    transcript_count: int = 0
    transcript_chain: str | None = None
    ledger: Ledger = Ledger()
    deleted_at: float | None = None
    # The chat's figures as last seen (None: not yet, or kept by an earlier release that did not).
    seen: Counters | None = None
    # How far the figures grew in this chat, every growth added (None: the same as ``seen``, as for
    # most chats): what the WebUI says it spent, a drop or what it inherited not taken off.
    grown: Counters | None = None
    # ``grown`` when the agent hook first reported usage for the chat (None: it has not): what the
    # WebUI counted before the ledger did. The chat spent the larger of ``grown`` and this + ledger.
    ledger_base: Counters | None = None
    # What the state last applied grew by, while the ledger has not started (it may bring that state's run).
    state_growth: Counters | None = None
    # When the chat last had activity (spend or messages that grew): the row's ended_at.
    active_at: float | None = None
    # The part of the ledger already in the row (None: all of it). Only a row hermes-agent writes
    # (and a stale state's increments) leaves some out: what it did not record is added to it.
    ledger_applied: Ledger | None = None
    # Why this record cannot be used (damaged, or written by a newer release): the chat is left alone.
    problem: str | None = None

    @property
    def growth_total(self) -> Counters | None:
        return self.seen if self.grown is None else self.grown

    @property
    def applied(self) -> Ledger:
        return self.ledger if self.ledger_applied is None else self.ledger_applied

    @property
    def title_memory(self) -> tuple[str | None, str | None] | None:
        if self.title_written is None:
            return None
        return (self.title_base, self.title_written)
