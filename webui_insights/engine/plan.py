"""The sync rule: what one chat's row should become. Pure: no I/O, no clock, no globals.

``plan_chat(desired, row, record, context)`` compares what the WebUI says
(``Desired``), what state.db holds (``Row``) and what this layer remembers
(``Record``), and returns a ``ChatPlan``: the outcome, the columns to
insert, update or add to, the title decision, the record to store, and the
drift (what differs, for ``verify``). Every writer — the live save path,
the reconcile sweep, ``backfill``, ``verify --fix`` — applies plans made
here, and ``verify`` and dry runs report them, so there is one rule.

The row shows what hermes-agent would have recorded had it run the chat
itself with a SessionDB. The rule, in order, each step decided from
evidence, never from a coincidence:

1. **Ledger.** Agent-reported usage increments add up whatever else happens.
2. **Ownership** (``_owner``). A row of another source is never written.
   A row carrying a mark only hermes-agent leaves (its ``create_session``
   fields, messages this layer did not write, the agent hook seeing it
   run with a SessionDB) is hermes-agent's: it only gets what hermes left
   out. Any other row is this layer's. A value that merely differs from
   what this layer wrote is drift, not a change of owner.
3. **Version.** A state older than the one recorded (``Version`` order)
   changes nothing: an old file, a late process, a stale CLI run never
   wins. A recorded version more than ``FUTURE_TOLERANCE_S`` ahead of the
   clock was stamped by a clock that ran ahead: it orders nothing. A new
   state stamped that far ahead cannot be placed either (``_unplaced``):
   it is read unordered, never dropped.
4. **Spend** (``_account``). The WebUI's figures are cumulative, but they
   are not always spend: what a chat inherited (messages older than the
   chat itself: a duplicate, an import) was spent elsewhere, and figures
   that go down (a turn removed, an agent rebuilt) leave what was spent.
   So the figures' growth is added up, state by state. The agent hook's
   count (the ledger) fills what the WebUI does not record (its
   non-streaming turns, v0.50.12's cache): the chat spent the larger of
   the growth and what the WebUI had counted before the ledger started
   plus the ledger. A state that grows anything since the state last
   seen is **activity** (a new turn) — while no recorded version can be
   trusted, only spend, the hook's count or a newer message is.
5. **Deletions.** A row this layer had and that is gone was deleted in
   hermes: it comes back only with activity.
6. **Fields.** Mirror-owned rows: spend in hermes' convention (input
   without cached prompt tokens), messages and tool calls ever added,
   model, started_at = the chat's creation, ended_at = its last activity.
   hermes-written rows: started_at moves back to the chat's creation when
   that is earlier (not for a continuation of another session), and the
   agent-counted turns hermes did not record (the WebUI's non-streaming
   path) are added to its totals, once.
7. **Title.** ``titles.decide_title``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .schema import LAST_ACTIVITY, MODEL_USAGE, TITLE_SOURCE, TITLE_SOURCE_WEBUI
from .states import STAMPED_AHEAD, ZERO, Counters, Desired, Ledger, Owner, Record, Row, Version, same_state
from .titles import TitleDecision, decide_title

if TYPE_CHECKING:
    from .transcripts import TranscriptPlan

__all__ = [
    "Context",
    "Drift",
    "ChatPlan",
    "plan_chat",
    "Outcome",
    "SOURCE",
    "END_REASON",
    "FUTURE_TOLERANCE_S",
    "COPY_TOLERANCE_S",
    "NO_ROW_OUTCOMES",
]

SOURCE = "webui"
# The source hermes-agent (≥ 0.18) gives a row its usage code makes for a session id
# that has none: the WebUI's agent still writing to a chat deleted in hermes. That
# row is hermes-agent's writing of this chat; it only lacks what the WebUI knows.
UNKNOWN_SOURCE = "unknown"
# The end_reason of rows this layer ends (ended_at = the chat's last
# activity, so insights counts its duration). hermes gives no meaning to it:
# its own reasons ("compression", "branched", "agent_close", ...) drive
# lineage and recovery, so a row that carries one of those is never touched,
# and a row hermes-agent takes over gets its ended_at back to NULL (hermes'
# end_session only writes where ended_at is NULL).
END_REASON = "webui_mirror"
# A clock a little ahead is normal; beyond this a timestamp is "in the future".
FUTURE_TOLERANCE_S = 300.0
# A message this much older than the chat that holds it was made in another
# chat (v0.50.12 stamps whole seconds, so a message of the chat's first
# second may read up to 1 s before it).
COPY_TOLERANCE_S = 1.0

# created, restored, updated, unchanged, stale, foreign, deleted,
# awaiting_hermes, no_turn (no turn of its own yet: new, copied or imported), refused (its record cannot be used)
Outcome = str
# Outcomes after which the chat has no row of this layer's to write to now.
NO_ROW_OUTCOMES = frozenset({"stale", "foreign", "deleted", "awaiting_hermes", "no_turn", "refused"})

_NO_RECORD = Record()
_TIME_COLUMNS = ("started_at", "ended_at", LAST_ACTIVITY)


@dataclass(frozen=True, slots=True)
class Context:
    """What the rule needs from outside: the time, and hermes' title form."""

    now: float
    sanitize_title: Any
    max_title_length: int
    # backfill --restore-deleted: bring back chats deleted in hermes without a new turn.
    restore_deleted: bool = False
    # What of hermes' newer schema the database has (``schema.probe``): filled only there.
    columns: frozenset[str] = frozenset()


class Drift(NamedTuple):
    """One field that differs: what it should be, what state.db has."""

    field: str
    want: Any
    have: Any


@dataclass(slots=True)
class ChatPlan:
    """What to do for one chat; ``apply`` executes it, ``verify`` reports it."""

    session_id: str
    outcome: Outcome
    owner: Owner | None = None
    insert: dict[str, Any] | None = None
    update: dict[str, Any] = field(default_factory=dict)
    # Amounts to add to hermes-agent's own totals (turns it did not record).
    add: dict[str, Any] = field(default_factory=dict)
    title: TitleDecision = TitleDecision("none")
    record: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # counted in stats(): e.g. "future_created_at"
    desired: Desired | None = None
    row: Row | None = None  # as observed before the plan
    # Differences found beyond the row's columns (the transcript).
    extra_drift: list[Drift] = field(default_factory=list)
    # Make the chat's session_model_usage row a copy of its totals (``_newer_schema``).
    usage: bool = False
    # The chat's messages (``transcripts.plan_transcript``, planned where state.db's messages can be read).
    transcript: TranscriptPlan | None = None

    @property
    def writes_row(self) -> bool:
        return (
            self.insert is not None or bool(self.update) or bool(self.add) or self.title.action == "write" or self.usage
        )

    @property
    def drift(self) -> list[Drift]:
        """Every field that differs (what verify reports); built on demand, writers never need it."""
        row = self.row
        found = [Drift("row", "present", "missing")] if self.insert is not None else []
        if row is not None:
            found += [Drift(c, v, getattr(row, c)) for c, v in self.update.items()]
            found += [Drift(c, (getattr(row, c) or 0) + v, getattr(row, c)) for c, v in self.add.items()]
        if self.title.action == "write":
            found.append(Drift("title", self.title.base, row.title if row is not None else None))
        return found + self.extra_drift


class _Account(NamedTuple):
    """The chat's spend after this state (``_account``)."""

    seen: Counters
    grown: Counters
    ledger_base: Counters | None
    state_growth: Counters | None
    active_at: float | None
    activity: bool  # spend or messages grew: the chat had a turn since the state last applied
    spent: Counters
    unrecorded: Counters  # of the ledger, what was not in the row yet (added to a row hermes-agent writes)


def plan_chat(desired: Desired, row: Row | None, record: Record | None, context: Context) -> ChatPlan:
    """The rule for one chat (see the module docstring)."""
    rec = record or _NO_RECORD
    plan = ChatPlan(desired.session_id, "unchanged", rec.owner, desired=desired, row=row)
    if rec.problem is not None:
        # Damaged, or written by a newer release of this layer: nothing here is guessed at.
        plan.outcome = "refused"
        plan.notes.append(rec.problem)
        return plan
    if row is not None and row.bad_values:
        plan.notes.append("row_value_invalid")
    changes: dict[str, Any] = {}
    ledger = rec.ledger.plus(desired.ledger)
    if ledger is not rec.ledger and ledger != rec.ledger:  # ``plus`` returns the same ledger for no increments
        changes["ledger"] = ledger

    # Who writes the row is a fact of the row (and of this process), whatever the state's version.
    owner = _owner(desired, row, rec)
    plan.owner = owner
    if row is not None and owner != rec.owner:
        changes["owner"] = owner  # without a row, only an insert below makes the chat anyone's

    recorded = _trusted_version(rec.version, context, plan.notes)
    same = same_state(rec.digest, desired)
    unplaced = _unplaced(desired.version, rec.version)
    if not same and recorded is not None and not unplaced and desired.version <= recorded:
        plan.outcome = "stale"
        if "ledger" in changes and rec.ledger_applied is None:
            changes["ledger_applied"] = rec.ledger  # its increments wait for the next state applied
        return _with_record(plan, changes)

    ordered = recorded is rec.version and not unplaced
    account = _account(desired, rec, ledger, plan.notes, context.now, ordered=ordered, stamped_ahead=unplaced)
    if unplaced:
        pass  # the record goes on naming the last state placed in order: the next ones are ordered by it
    elif not same or rec.digest != desired.digest or recorded is not rec.version:
        # A new state, or one recorded in an earlier release's form. Against a version a bad clock
        # stamped, the later of the two stays: lowered, it would let an older copy outrank the states
        # saved while the clock was set back.
        version = desired.version
        if recorded is None and rec.version is not None:
            version = max(version, rec.version)
        changes.update(version=version, digest=desired.digest, message_count=desired.message_count)
    changes.update(_account_changes(account, rec))
    outcome = _no_row_outcome(owner, row, rec, account, context)
    if outcome is not None:
        plan.outcome = outcome
        if outcome == "deleted" and rec.deleted_at is None:
            changes["deleted_at"] = context.now
        return _with_record(plan, changes)
    _plan_row(plan, desired, rec, owner, account, context, changes)
    return _with_record(plan, changes)


def _account_changes(account: _Account, rec: Record) -> dict[str, Any]:
    """The record's accounting fields this state changes."""
    grown = None if account.grown == account.seen else account.grown
    changes = {}
    for name, value in (
        ("seen", account.seen),
        ("grown", grown),
        ("ledger_base", account.ledger_base),
        ("state_growth", account.state_growth),
        ("active_at", account.active_at),
        ("ledger_applied", None),  # all of it is in the spend now (or added to hermes-agent's row below)
    ):
        if value != getattr(rec, name):
            changes[name] = value
    return changes


def _no_row_outcome(owner: Owner | None, row: Row | None, rec: Record, account: _Account, context: Context) -> Outcome | None:
    """Why this chat gets no row written now, if it gets none (None: it does)."""
    if owner == "foreign":
        # Followed as the WebUI has it, so that once the other source's row is
        # gone (deleted in hermes) only a new turn brings the chat in.
        return "foreign"
    if row is not None:
        return None
    if rec.owner is not None and not context.restore_deleted and not account.activity:
        return "deleted"  # deleted in hermes: until the chat's next turn
    if owner is None:  # hermes-agent will create it: fill in once it has
        return "awaiting_hermes"
    if rec.owner is None and not any(account.spent):
        return "no_turn"  # nothing of its own yet: no row until it has a turn
    return None


def _plan_row(
    plan: ChatPlan,
    desired: Desired,
    rec: Record,
    owner: Owner | None,
    account: _Account,
    context: Context,
    changes: dict[str, Any],
) -> None:
    """The row's insert or update, its title and what newer schemas hold, into ``plan`` (record ``changes`` too)."""
    row = plan.row
    if owner == "mirror":
        wanted = _mirror_columns(desired, account, row, context, plan.notes)
    else:
        wanted = _hermes_fill_columns(desired, row, context, plan.notes)
        plan.add = _unrecorded_turns(account.unrecorded)
    created = desired.created_at
    started = created if created is not None and created <= context.now and not desired.continuation else None
    memory = _title_memory(rec, row, owner, wanted, started)
    title = decide_title(
        desired.title,
        row.title if row is not None else None,
        memory,
        context.sanitize_title,
        context.max_title_length,
    )
    plan.title = title
    if title.action == "refused":
        plan.notes.append("title_refused")

    if row is None:
        plan.outcome = "restored" if rec.owner is not None else "created"
        plan.insert = _new_row(desired, wanted, context)
        if rec.owner != owner:
            changes["owner"] = owner
        if rec.deleted_at is not None:
            changes["deleted_at"] = None
        if rec.title_memory is not None:
            # What it wrote went with the deleted row; a title written now is remembered by ``apply``.
            changes.update(title_base=None, title_written=None)
    else:
        plan.update = {c: v for c, v in wanted.items() if not _same(c, v, getattr(row, c))}
    if context.columns:
        _newer_schema(plan, row, memory, context.columns)
    if plan.outcome == "unchanged" and plan.writes_row:
        plan.outcome = "updated"
    if title.action == "adopt" and rec.title_memory != (title.base, row.title if row else None):
        changes.update(title_base=title.base, title_written=row.title if row else None)
    elif title.action == "kept" and memory is None and row is not None and row.title and row.title.strip():
        changes.update(title_base=None, title_written=row.title)  # met, set in hermes (``decide_title``)


def _owner(desired: Desired, row: Row | None, rec: Record) -> Owner | None:
    """Who writes the row, from evidence only (None: nobody yet — hermes-agent is about to).

    hermes-agent writes a chat's row when one of its marks is on the row:
    its ``create_session`` left ``model_config`` or ``system_prompt``, or
    the row has messages this layer did not write (its ``append_message``).
    Neither host's own bridge nor this layer sets any of them. Before the
    row exists, the agent hook seeing hermes-agent run for the chat with a
    SessionDB (``agent_writes``, in this process) says the row is on its
    way; once a row is there, only the row's marks count (a row this layer
    brought back after a deletion stays this layer's until hermes-agent
    writes to it). A value that differs from what this layer wrote is not
    evidence (the host's bridge while mirroring was off, a manual edit, a
    restored backup): it is drift, and the next pass repairs it.
    """
    if row is None:
        if desired.agent_writes and rec.owner is None:
            return None  # a new chat hermes-agent is writing: its row is on the way
        # A new row, or one restored after a deletion: ours. (hermes-agent keeps its
        # session object after a deletion and does not create the row again; if it
        # does, or writes to the restored row, its marks hand the row back to it.)
        return "mirror"
    if row.source == UNKNOWN_SOURCE:
        return "hermes"  # hermes' own usage guard made it for this chat (below)
    if row.source != SOURCE:
        return "foreign"
    if row.agent_marks or row.live_messages > rec.transcript_count:
        return "hermes"
    return "mirror"  # a bare webui row (the host's own bridge, an earlier release) is adopted


def _title_memory(
    rec: Record, row: Row | None, owner: Owner | None, wanted: dict[str, Any], started: float | None
) -> tuple[str | None, str | None] | None:
    """What this layer knows it wrote as the row's title, if the row is the one it titled.

    ``started`` is the chat's creation time, when it is known and past.

    A new row has no title anyone set. A row someone made anew after a
    deletion this layer did not see (hermes-agent, at its own first call;
    the host's bridge, when it first wrote the chat) starts at another time
    than the chat (which this plan moves back): the memory speaks of the
    row that was deleted, and an empty title was never cleared by anyone.
    """
    if row is None:
        return None
    if owner == "hermes" and "started_at" in wanted and not _same("started_at", wanted["started_at"], row.started_at):
        return None
    if not (row.title or "").strip():
        if started is not None:
            # The chat's own time, when it is past (the one wanted may be clamped to the row's): the row
            # this layer wrote starts then, a row made anew does not.
            return rec.title_memory if _same("started_at", started, row.started_at) else None
        if owner == "hermes" and rec.owner == "mirror":
            # Nothing dates the row (a clock ahead made the chat): this layer's row, hermes-agent's now and
            # untitled, reads as made anew (hermes-agent's takeover keeps a title; a clear is not told apart).
            return None
    return rec.title_memory


def _trusted_version(version: Version | None, context: Context, notes: list[str]) -> Version | None:
    """The recorded version, unless a clock that ran ahead stamped it (then None: it orders nothing).

    An incoming version that far ahead is dropped before it is ever recorded
    (``chats.desired_from``); this catches the one a writer recorded while its
    own clock was ahead, once that clock is corrected. So a clock ahead by more
    than ``FUTURE_TOLERANCE_S`` holds no later state back; one ahead by less
    holds back only the states saved within its lead, until the chat's next
    change after it.
    """
    if version is not None and max(version) > context.now + FUTURE_TOLERANCE_S:
        notes.append("version_recorded_future")
        return None
    return version


def _unplaced(incoming: Version, recorded: Version | None) -> bool:
    """A clock far ahead stamped the state, and the record has a version (trusted now or not).

    Such a state cannot be placed before or after the one on record: it may be
    the newest (a turn saved while the clock ran ahead) or an old copy (one
    saved before the clock was set back). It is not dropped as stale (its
    turn would be lost) but read unordered, like a state against a record a
    bad clock stamped (``_account``'s ``ordered``: its spend merges as the
    larger; as an old copy, its title may stand until the chat's next save),
    and never takes the recorded version's place: that keeps ordering the
    states after it.
    """
    return recorded is not None and incoming.updated_at == STAMPED_AHEAD


def _inherited(desired: Desired, now: float) -> bool:
    """Met for the first time, the chat's figures were spent elsewhere: it was made from another chat.

    The evidence: messages older than the chat itself (a duplicate and an
    import keep the original's). A copy of a chat without messages (HEAD
    duplicates a cleared chat's figures) shows none: its figures count as
    its own — the same as a cleared chat met for the first time, whose
    figures are its own. A chat created in the future was dated by a clock
    that ran ahead, so its messages being older says nothing; once real
    time has passed that date the two cannot be told apart (documented).
    """
    first, created = desired.earliest_message_at, desired.created_at
    if first is None or created is None or created > now + FUTURE_TOLERANCE_S:
        return False
    return first < created - COPY_TOLERANCE_S


def _account(
    desired: Desired, rec: Record, ledger: Ledger, notes: list[str], now: float, *, ordered: bool, stamped_ahead: bool
) -> _Account:
    """The chat's spend after this state, and whether the state shows activity.

    The figures' growth is added up (first sight measures it from zero —
    unless the chat inherited its messages: then the figures are what it
    inherited, and its growth starts at 0); a figure that went down adds
    nothing. The ledger starts with the first usage the agent hook reports
    for the chat: the growth counted before that (``ledger_base``, taken
    without the growth of the state that brings the report, which holds
    the reported run) is history the ledger never saw. Figure by figure,
    the chat spent the larger of the growth and base + ledger: both count
    the runs the hook saw and the WebUI recorded, each alone what the other
    missed — and two totals compared, whatever order the file reads and the
    live saves came in, never count a run twice.

    ``ordered`` is False while the recorded version cannot be trusted (a
    clock ran ahead): the state may then be an older one, so figures that
    went down are not taken for a fresh start — growing back to where they
    were would count it again. A state ``stamped_ahead`` (``_unplaced``) has
    its messages stamped by the same clock: a later message proves nothing.
    """
    figures = Counters.of(desired)
    counted = any(ledger)  # most chats: the agent hook never reported any
    total = Counters.of_ledger(ledger) if counted else ZERO
    news = desired.ledger is not None and any(desired.ledger)  # the agent hook counted a run: a turn
    seen = rec.seen
    if seen is None:
        grown, activity = _first_sight(desired, rec, figures, total, notes, now)
        growth = grown
    else:
        step = figures.growth(seen)
        # While the recorded version orders nothing (a clock was set back), this state may be an
        # older copy: more messages than last seen prove no turn then, spend or a later message does.
        later = not stamped_ahead and _later_message(desired, rec)
        activity = any(step) if ordered else news or step.spends() or later
        previous = rec.growth_total or ZERO
        grown = previous.plus(step) if activity else previous
        same_state = desired.digest == rec.digest
        growth = (rec.state_growth or ZERO).plus(step) if same_state else step
    activity = activity or news
    base = rec.ledger_base
    if base is None and any(total):
        base = grown.growth(growth)  # the growth before the state that brings the first report
    spent = grown if base is None else grown.larger(base.plus(total))
    return _Account(
        # The state applied again (its digest on record) is no fresh start either: what an unordered
        # read merged into ``seen`` stays.
        seen=figures if seen is None or (ordered and desired.digest != rec.digest) else figures.larger(seen),
        grown=grown,
        ledger_base=base,
        state_growth=growth if base is None and any(growth) else None,
        active_at=_active_at(desired, rec, activity, ordered),
        activity=activity,
        spent=spent,
        unrecorded=Counters.of_ledger(ledger.beyond(rec.applied)) if counted else ZERO,
    )


def _active_at(desired: Desired, rec: Record, activity: bool, ordered: bool) -> float | None:
    """The chat's last activity on record after this state.

    Read unordered, a state's message times come from a clock that may have
    been set back: the activity on record only moves later then, so a message
    older than a removed one (an edit after a turn saved under that clock) is
    never taken for a later one (``_later_message``).
    """
    if not activity:
        return rec.active_at
    if ordered or desired.last_active_at is None or rec.active_at is None:
        return desired.last_active_at
    return max(desired.last_active_at, rec.active_at)


def _first_sight(
    desired: Desired, rec: Record, figures: Counters, total: Counters, notes: list[str], now: float
) -> tuple[Counters, bool]:
    """What a chat met for the first time (in this record's form) has grown, and whether that is activity."""
    if _inherited(desired, now):
        notes.append("inherited_usage")
        grown = ZERO
    elif rec.version is not None:
        # An earlier release's row held the larger of the figures and the whole ledger.
        grown = figures.larger(total)
    else:
        grown = figures
    if rec.version is not None:  # an earlier release applied states: it judged turns by the message count
        return grown, desired.message_count > rec.message_count
    if rec.owner is not None:  # known without any state (another source's chat, a title memory): the baseline
        return grown, False
    return grown, any(grown)


def _later_message(desired: Desired, rec: Record) -> bool:
    """The chat's newest message is newer than its activity on record (a turn, not an old copy's).

    A chat without messages (cleared) shows no such turn, whatever its
    ``updated_at`` (which then stands in for its last activity).
    """
    if desired.last_active_at is None or not desired.message_count:
        return False
    return rec.active_at is None or desired.last_active_at > rec.active_at


def _clamp_time(
    value: float | None, context: Context, notes: list[str], what: str, stored: float | None = None
) -> float | None:
    """``value``, unless it is after now: then what the row holds, and for a new row, now.

    So a chat dated in the future is written once, as of now, and then left
    alone — not moved to "now" on every pass, which verify would report as
    drift forever. Nor is a row's time ever moved to a "now" that may be
    wrong itself: a clock set back (or behind) finds every time "in the
    future".
    """
    if value is None:
        return None
    if value > context.now + FUTURE_TOLERANCE_S:
        notes.append(f"future_{what}")
    if value <= context.now:
        return value
    return stored if stored is not None else context.now


def _mirror_columns(
    desired: Desired, account: _Account, row: Row | None, context: Context, notes: list[str]
) -> dict[str, Any]:
    """Every field of a row only this layer writes: what the chat spent, in hermes' conventions."""
    spent = account.spent
    cost: float | None = spent.cost_usd
    if not cost and desired.estimated_cost_usd is None:
        cost = None  # nobody reported a cost: unknown, not free
    columns: dict[str, Any] = {
        # hermes counts input without cached prompt tokens; the WebUI with them.
        "input_tokens": max(0, spent.prompt_tokens - spent.cache_read_tokens - spent.cache_write_tokens),
        "output_tokens": spent.output_tokens,
        "cache_read_tokens": spent.cache_read_tokens,
        "cache_write_tokens": spent.cache_write_tokens,
        "reasoning_tokens": spent.reasoning_tokens,
        "api_call_count": spent.api_calls,
        "estimated_cost_usd": cost,
        "message_count": spent.messages,
        "tool_call_count": spent.tool_calls,
    }
    if desired.model is not None:
        columns["model"] = desired.model
    if desired.billing_provider is not None:
        columns["billing_provider"] = desired.billing_provider
    started = _clamp_time(desired.created_at, context, notes, "created_at", row.started_at if row else None)
    if started is not None:
        columns["started_at"] = started
    ended = _clamp_time(account.active_at, context, notes, "last_active_at", row.ended_at if row else None)
    if ended is not None and (row is None or row.end_reason in (None, END_REASON)):
        columns["ended_at"] = max(ended, started) if started is not None else ended
        columns["end_reason"] = END_REASON
    if ended is not None and LAST_ACTIVITY in context.columns:
        # Upstream lists, ages (auto-archive, auto-prune) and picks recent rows by it: the
        # chat's last activity, the same moment as ended_at (a row without it ages from its start).
        columns[LAST_ACTIVITY] = max(ended, started) if started is not None else ended
    return columns


def _newer_schema(
    plan: ChatPlan, row: Row | None, memory: tuple[str | None, str | None] | None, columns: frozenset[str]
) -> None:
    """What hermes' newer schema reads beyond the row's own columns, where the database has it.

    ``title_source`` "user" goes with every title this layer writes or
    adopts, and onto a row still holding the title it wrote (a row written
    before the column existed): on any row, since the title is this layer's;
    a title anyone else set keeps its provenance. For rows only this layer
    writes, the ``session_model_usage`` row is rewritten whenever the row
    changes or it is out of step: insights reads usage rows first and adds
    only a positive residual, so a row that stayed behind (0.19.0's v20 seed
    froze every chat's totals when it ran) would keep a total that went
    down. Rows hermes-agent writes keep hermes' own usage rows.
    """
    title = plan.title
    if TITLE_SOURCE in columns and (
        title.action in ("write", "adopt")
        or (row is not None and row.title is not None and memory is not None and memory[0] is not None
            and row.title == memory[1])
    ):
        if plan.insert is not None:
            plan.insert[TITLE_SOURCE] = TITLE_SOURCE_WEBUI
        elif row is not None and row.title_source != TITLE_SOURCE_WEBUI:
            plan.update[TITLE_SOURCE] = TITLE_SOURCE_WEBUI
    if MODEL_USAGE in columns and plan.owner == "mirror" and plan.outcome not in NO_ROW_OUTCOMES:
        if plan.insert is not None or plan.update or row is None:
            plan.usage = True
        elif not row.usage_in_step:
            plan.usage = True
            plan.extra_drift.append(Drift(MODEL_USAGE, "the row's totals", "other figures"))


def _hermes_fill_columns(desired: Desired, row: Row | None, context: Context, notes: list[str]) -> dict[str, Any]:
    """What hermes-agent leaves out of the rows it writes: the chat's real start (and source).

    Not for a continuation: hermes' compression gave it a row of its own,
    which starts when it did (the chat's creation is the first row's).
    ended_at is hermes' to set on these rows (its end_session writes only
    where it is NULL, and its reasons carry lineage); one this layer set
    before hermes-agent took the chat over is cleared.
    """
    columns: dict[str, Any] = {}
    if row is None:
        return columns
    if row.source == UNKNOWN_SOURCE:
        columns["source"] = SOURCE
    if row.end_reason == END_REASON:
        columns.update(ended_at=None, end_reason=None)
    if desired.continuation:
        return columns
    started = desired.created_at
    if started is not None and started > context.now:
        _clamp_time(started, context, notes, "created_at")  # noted; a start in the future is never moved to
    elif started is not None and (row.started_at is None or started < row.started_at):
        columns["started_at"] = started
    return columns


def _unrecorded_turns(unrecorded: Counters) -> dict[str, Any]:
    """Turns the agent ran without a SessionDB (the WebUI's non-streaming path): added to hermes-agent's totals.

    Its row holds what it recorded itself; the agent hook counted the rest
    (the ledger), and the record says how much of that is in the row
    already — counted into the spend of this layer's own row before
    hermes-agent took it over, or added here before. Added in the same
    transaction as the record that says so: once.
    """
    values = (
        ("input_tokens", max(0, unrecorded.prompt_tokens - unrecorded.cache_read_tokens - unrecorded.cache_write_tokens)),
        ("output_tokens", unrecorded.output_tokens),
        ("cache_read_tokens", unrecorded.cache_read_tokens),
        ("cache_write_tokens", unrecorded.cache_write_tokens),
        ("reasoning_tokens", unrecorded.reasoning_tokens),
        ("api_call_count", unrecorded.api_calls),
        ("estimated_cost_usd", unrecorded.cost_usd),
    )
    return {column: value for column, value in values if value}


# Every column a new row is inserted with but its title (apply adds the name it gives), before the chat's own values.
_NEW_ROW = {
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "reasoning_tokens": 0,
    "estimated_cost_usd": None,
    "api_call_count": 0,
    "message_count": 0,
    "tool_call_count": 0,
    "model": None,
    "billing_provider": None,
    "ended_at": None,
    "end_reason": None,
}


def _new_row(desired: Desired, columns: dict[str, Any], context: Context) -> dict[str, Any]:
    return {**_NEW_ROW, "started_at": context.now, **columns, "id": desired.session_id, "source": SOURCE}


def _same(column: str, want: Any, have: Any) -> bool:
    if want == have:
        return True
    if want is None or have is None:
        return False
    if column in _TIME_COLUMNS:
        return abs(float(want) - float(have)) < 1e-3
    if column == "estimated_cost_usd":
        return math.isclose(float(want), float(have), rel_tol=1e-9, abs_tol=1e-12)
    return False


def _with_record(plan: ChatPlan, changes: dict[str, Any]) -> ChatPlan:
    if changes:
        plan.record = changes
    return plan
