"""The three views the sync rule compares, as plain immutable values.

- ``Desired``: what the WebUI says a chat is (from a live save or a session
  file), with its version;
- ``Row``: the chat's ``sessions`` row as state.db holds it now;
- ``Record``: what this layer remembers about the chat, kept in state.db
  beside the row (see ``records``): who writes the row, the version last
  applied, the title it last wrote, the transcript it wrote, and the usage
  the agent reported that the WebUI does not keep.

Nothing here does I/O; ``plan`` turns the three into the changes to make.
"""

from __future__ import annotations

import hashlib
import marshal
from typing import Any, Literal, NamedTuple

__all__ = [
    "Owner",
    "Version",
    "Ledger",
    "Desired",
    "Row",
    "Record",
    "OWNED_COLUMNS",
    "row_digest",
    "same_state",
]

# mirror: only this layer writes the row; hermes: hermes-agent writes it
# (a current WebUI's streaming chats) and this layer only fills what it
# leaves out; foreign: another source's row (cli, a gateway platform, ...)
# that this layer never writes.
Owner = Literal["mirror", "hermes", "foreign"]


class Version(NamedTuple):
    """Order of a chat's states: the chat's own clock, then when the state was observed.

    ``updated_at`` is the WebUI's (or an adapter's) last-change time, 0.0
    when unknown or implausible, so such a state never outranks a real one.
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


# The columns a mirror-owned row gets from the chat, and whose values the
# record keeps as written: a row whose values differ from them was written
# by someone else (hermes-agent took the chat over).
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


def written_key(
    input_tokens: Any,
    output_tokens: Any,
    cache_read_tokens: Any,
    cache_write_tokens: Any,
    reasoning_tokens: Any,
    estimated_cost_usd: Any,
    api_call_count: Any,
    message_count: Any,
) -> str:
    """The owned columns' values as one short string (what the record keeps; REAL noise rounded away)."""
    cost = float(estimated_cost_usd or 0.0)
    return (
        f"{input_tokens or 0}|{output_tokens or 0}|{cache_read_tokens or 0}|{cache_write_tokens or 0}|"
        f"{reasoning_tokens or 0}|{cost:.9f}|{api_call_count or 0}|{message_count or 0}"
    )


def row_digest(values: dict[str, Any]) -> str:
    """``written_key`` of a dict of column values (a new row, or a row with its updates)."""
    get = values.get
    cost = float(get("estimated_cost_usd") or 0.0)
    return (
        f"{get('input_tokens') or 0}|{get('output_tokens') or 0}|{get('cache_read_tokens') or 0}|"
        f"{get('cache_write_tokens') or 0}|{get('reasoning_tokens') or 0}|{cost:.9f}|"
        f"{get('api_call_count') or 0}|{get('message_count') or 0}"
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

    def owned_values(self) -> dict[str, Any]:
        return {column: getattr(self, column) for column in OWNED_COLUMNS}

    def written_key(self) -> str:
        return written_key(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
            self.estimated_cost_usd,
            self.api_call_count,
            self.message_count,
        )


class Record(NamedTuple):
    """What this layer remembers of one chat (a row of its own table in the same state.db)."""

    owner: Owner | None = None
    version: Version | None = None
    digest: str | None = None  # Desired.digest() of the state last applied
    written: str | None = None  # written_key of the owned columns as last written
    message_count: int = 0  # the WebUI's message count last applied
    title_base: str | None = None
    title_written: str | None = None
    transcript_count: int = 0
    transcript_chain: str | None = None
    ledger: Ledger = Ledger()
    deleted_at: float | None = None

    @property
    def title_memory(self) -> tuple[str | None, str | None] | None:
        if self.title_written is None:
            return None
        return (self.title_base, self.title_written)
