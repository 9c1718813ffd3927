"""The sync rule: what one chat's row should become. Pure: no I/O, no clock, no globals.

``plan_chat(desired, row, record, context)`` compares what the WebUI says
(``Desired``), what state.db holds (``Row``) and what this layer remembers
(``Record``), and returns a ``ChatPlan``: the outcome, the columns to
insert or update, the title decision, the record to store, and the drift
(what differs, for ``verify``). Every writer — the live save path, the
reconcile sweep, ``backfill``, ``verify --fix`` — applies plans made here,
and ``verify`` and dry runs report them, so there is one rule.

The rule, in order:

1. **Ledger.** Agent-reported usage increments add up whatever else happens.
2. **Version.** A state older than the one recorded (``Version`` order)
   changes nothing: an old file, a late process, a stale CLI run never wins.
   The same state again (equal digest) may still repair drift.
3. **Ownership.** A row of another source is never written. A row
   hermes-agent writes itself (it holds its marks or messages this layer
   did not write, or values this layer did not write) only gets what
   hermes leaves out. Any other row is this layer's: every field follows
   the WebUI.
4. **Deletions.** A row that this layer had and that is gone was deleted
   in hermes: it comes back only with a new turn (more messages than when
   it was last applied).
5. **Fields.** Mirror-owned rows: tokens in hermes' convention (input
   without cached prompt tokens), cost, counters, model, started_at = the
   chat's creation, ended_at = its last activity. hermes-written rows:
   started_at moves back to the chat's creation when that is earlier.
6. **Title.** ``titles.decide_title``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .states import OWNED_COLUMNS, Desired, Ledger, Owner, Record, Row, Version, row_digest, same_state
from .titles import TitleDecision, decide_title

__all__ = ["Context", "Drift", "ChatPlan", "plan_chat", "Outcome", "SOURCE", "END_REASON", "FUTURE_TOLERANCE_S"]

SOURCE = "webui"
# The end_reason of rows this layer ends (ended_at = the chat's last
# activity, so insights counts its duration). hermes gives no meaning to it:
# its own reasons ("compression", "branched", "agent_close", ...) drive
# lineage and recovery, so a row that carries one of those is never touched,
# and a row hermes-agent takes over gets its ended_at back to NULL (hermes'
# end_session only writes where ended_at is NULL).
END_REASON = "webui_mirror"
# A clock a little ahead is normal; beyond this a timestamp is "in the future".
FUTURE_TOLERANCE_S = 300.0

Outcome = str  # created, restored, updated, unchanged, stale, foreign, deleted, awaiting_hermes

_NO_RECORD = Record()
_TIME_COLUMNS = ("started_at", "ended_at")


@dataclass(frozen=True, slots=True)
class Context:
    """What the rule needs from outside: the time, and hermes' title form."""

    now: float
    sanitize_title: Any
    max_title_length: int
    # backfill --restore-deleted: bring back chats deleted in hermes without a new turn.
    restore_deleted: bool = False


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
    title: TitleDecision = TitleDecision("none")
    record: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # counted in stats(): e.g. "future_created_at"
    desired: Desired | None = None
    row: Row | None = None  # as observed before the plan
    # Differences found beyond the row's columns (the transcript).
    extra_drift: list[Drift] = field(default_factory=list)

    @property
    def writes_row(self) -> bool:
        return self.insert is not None or bool(self.update) or self.title.action == "write"

    @property
    def drift(self) -> list[Drift]:
        """Every field that differs (what verify reports); built on demand, writers never need it."""
        row = self.row
        found = [Drift("row", "present", "missing")] if self.insert is not None else []
        if row is not None:
            found += [Drift(c, v, getattr(row, c)) for c, v in self.update.items()]
        if self.title.action == "write":
            found.append(Drift("title", self.title.base, row.title if row is not None else None))
        return found + self.extra_drift


def plan_chat(desired: Desired, row: Row | None, record: Record | None, context: Context) -> ChatPlan:
    """The rule for one chat (see the module docstring)."""
    rec = record or _NO_RECORD
    ledger = rec.ledger.plus(desired.ledger)
    plan = ChatPlan(desired.session_id, "unchanged", rec.owner, desired=desired, row=row)
    record_changes: dict[str, Any] = {}
    if ledger is not rec.ledger and ledger != rec.ledger:  # ``plus`` returns the same ledger for no increments
        record_changes["ledger"] = ledger

    # Who writes the row is a fact of the row (and of this process), whatever the state's version.
    owner = _owner(desired, row, rec)
    plan.owner = owner
    if row is not None and owner != rec.owner:
        record_changes["owner"] = owner  # without a row, only the insert below makes the chat anyone's

    recorded = _trusted_version(rec.version, context, plan.notes)
    same = same_state(rec.digest, desired)
    if not same and recorded is not None and desired.version <= recorded:
        plan.outcome = "stale"
        return _with_record(plan, rec, record_changes)
    new_state = not same or rec.digest != desired.digest or recorded is not rec.version
    if new_state:  # a new state, one recorded in an earlier release's form, or a version a bad clock stamped
        state_changes = {"version": desired.version, "digest": desired.digest, "message_count": desired.message_count}
    else:
        state_changes = {}
    if owner == "foreign":
        plan.outcome = "foreign"
        # Remembered as the WebUI had it, so that once the other source's row is
        # gone (deleted in hermes) only a new turn brings the chat in.
        record_changes.update(state_changes)
        return _with_record(plan, rec, record_changes)

    if row is None:
        # Known only as another source's chat (an earlier release kept no state
        # for those): this state is the one a new turn is measured from.
        no_baseline = rec.owner == "foreign" and rec.version is None
        if rec.owner is not None and not context.restore_deleted and (no_baseline or not _new_turn(desired, rec)):
            plan.outcome = "deleted"
            if rec.deleted_at is None:
                record_changes["deleted_at"] = context.now
            if no_baseline:
                record_changes.update(state_changes)
            return _with_record(plan, rec, record_changes)
        if owner is None:  # hermes-agent will create it: fill in once it has
            plan.outcome = "awaiting_hermes"
            return _with_record(plan, rec, record_changes)

    wanted = (
        _mirror_columns(desired, ledger, row, context, plan.notes)
        if owner == "mirror"
        else _hermes_fill_columns(desired, row, context, plan.notes)
    )
    title = decide_title(
        desired.title,
        row.title if row is not None else None,
        rec.title_memory if row is not None else None,  # a new row has no title anyone set
        context.sanitize_title,
        context.max_title_length,
    )
    plan.title = title
    if title.action == "refused":
        plan.notes.append("title_refused")

    # The owned columns as they will be (what the record keeps as written).
    if row is None:
        plan.outcome = "restored" if rec.owner is not None else "created"
        plan.insert = _new_row(desired, wanted, context)
        if rec.owner != owner:
            record_changes["owner"] = owner
        written = row_digest(plan.insert)
        record_changes["deleted_at"] = None
    else:
        plan.update = {c: v for c, v in wanted.items() if not _same(c, v, getattr(row, c))}
        written = row_digest({**row.owned_values(), **plan.update}) if plan.update else row.written_key()
        if plan.update:
            plan.outcome = "updated"
    if title.action == "write":
        if plan.outcome == "unchanged":
            plan.outcome = "updated"

    record_changes.update(state_changes)
    if owner == "mirror":
        if written != rec.written:
            record_changes["written"] = written
    elif rec.written is not None:
        record_changes["written"] = None
    if title.action == "adopt" and rec.title_memory != (title.base, row.title if row else None):
        record_changes.update(title_base=title.base, title_written=row.title if row else None)
    return _with_record(plan, rec, record_changes)


def _owner(desired: Desired, row: Row | None, rec: Record) -> Owner | None:
    """Who writes the row, from evidence only (None: nobody yet — hermes-agent is about to).

    hermes-agent writes a chat's row when one of its marks is there: the
    agent hook saw it run for this chat with a SessionDB (``agent_writes``,
    in this process), its ``create_session`` left ``model_config`` or
    ``system_prompt`` on the row, or the row has messages this layer did not
    write (its ``append_message``). Neither host's own bridge nor this layer
    sets any of them. A value that differs from what this layer wrote is not
    evidence (the host's bridge while mirroring was off, a manual edit, a
    restored backup): it is drift, and the next pass repairs it.
    """
    if row is None:
        if desired.agent_writes and rec.owner in (None, "hermes"):
            return None
        return "mirror"  # a new row, or one restored after a deletion: ours
    if row.source != SOURCE:
        return "foreign"
    if desired.agent_writes or row.agent_marks or row.live_messages > rec.transcript_count:
        return "hermes"
    return "mirror"  # a bare webui row (the host's own bridge, an earlier release) is adopted


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


def _new_turn(desired: Desired, rec: Record) -> bool:
    """The chat had a turn since the state last applied: messages that are new, or spend the agent reported."""
    if desired.ledger is not None and any(desired.ledger):
        return True
    return desired.message_count > rec.message_count


def _clamp_time(
    value: float | None, context: Context, notes: list[str], what: str, stored: float | None = None
) -> float | None:
    """``value``, never after now: a later one keeps what the row holds (clamped on an earlier run).

    So a chat dated in the future is written once, as of now, and then left
    alone — not moved to "now" on every pass, which verify would report as
    drift forever.
    """
    if value is None:
        return None
    if value > context.now + FUTURE_TOLERANCE_S:
        notes.append(f"future_{what}")
    if value <= context.now:
        return value
    return stored if stored is not None and stored <= context.now else context.now


def _mirror_columns(
    desired: Desired, ledger: Ledger, row: Row | None, context: Context, notes: list[str]
) -> dict[str, Any]:
    """Every field of a row only this layer writes, in hermes' conventions.

    Where the agent reported usage for the chat in this layer's process (the
    ledger), each total is the larger of what the WebUI and the agent
    counted: the WebUI may not record a turn at all (its non-streaming path)
    or a part of it (v0.50.12 keeps no cache counts), and history from
    before the agent was observed is only in the WebUI's totals.
    """
    cache_read: int | None
    cache_write: int | None
    reasoning: int | None
    api_calls: int | None
    if ledger.api_calls > 0:  # the agent reported usage for this chat
        cache_read = _larger(desired.cache_read_tokens, ledger.cache_read_tokens)
        cache_write = _larger(desired.cache_write_tokens, ledger.cache_write_tokens)
        prompt = _larger(desired.input_tokens, ledger.prompt_tokens)
        output = _larger(desired.output_tokens, ledger.completion_tokens)
        reasoning = _larger(desired.reasoning_tokens, ledger.reasoning_tokens)
        api_calls = _larger(desired.api_call_count, ledger.api_calls)
        cost = desired.estimated_cost_usd
        if ledger.cost_usd > (cost or 0.0):
            cost = ledger.cost_usd
    else:
        cache_read, cache_write = desired.cache_read_tokens, desired.cache_write_tokens
        prompt, output, reasoning = desired.input_tokens, desired.output_tokens, desired.reasoning_tokens
        api_calls, cost = desired.api_call_count, desired.estimated_cost_usd
    # hermes counts input without cached prompt tokens; the WebUI with them.
    columns: dict[str, Any] = {
        "input_tokens": max(0, (prompt or 0) - (cache_read or 0) - (cache_write or 0)),
        "output_tokens": output,
        "message_count": desired.message_count,
    }
    if cache_read is not None:
        columns["cache_read_tokens"] = cache_read
    if cache_write is not None:
        columns["cache_write_tokens"] = cache_write
    if reasoning is not None:
        columns["reasoning_tokens"] = reasoning
    if api_calls is not None:
        columns["api_call_count"] = api_calls
    if cost is not None:
        columns["estimated_cost_usd"] = cost
    if desired.tool_call_count is not None:
        columns["tool_call_count"] = desired.tool_call_count
    if desired.model is not None:
        columns["model"] = desired.model
    if desired.billing_provider is not None:
        columns["billing_provider"] = desired.billing_provider
    started = _clamp_time(desired.created_at, context, notes, "created_at", row.started_at if row else None)
    if started is not None:
        columns["started_at"] = started
    ended = _clamp_time(desired.last_active_at, context, notes, "last_active_at", row.ended_at if row else None)
    if ended is not None and (row is None or row.end_reason in (None, END_REASON)):
        columns["ended_at"] = max(ended, started) if started is not None else ended
        columns["end_reason"] = END_REASON
    return columns


def _larger(webui: int | None, agent: int) -> int:
    return agent if webui is None else max(webui, agent)


def _hermes_fill_columns(desired: Desired, row: Row | None, context: Context, notes: list[str]) -> dict[str, Any]:
    """What hermes-agent leaves out of the rows it writes: the chat's real start.

    ended_at is hermes' to set on these rows (its end_session writes only
    where it is NULL, and its reasons carry lineage); one this layer set
    before hermes-agent took the chat over is cleared.
    """
    columns: dict[str, Any] = {}
    if row is None:
        return columns
    if row.end_reason == END_REASON:
        columns.update(ended_at=None, end_reason=None)
    started = _clamp_time(desired.created_at, context, notes, "created_at")
    if started is not None and (row.started_at is None or started < row.started_at):
        columns["started_at"] = started
    return columns


# Every column a new row is inserted with but its title (apply adds the name it gives), before the chat's own values.
_NEW_ROW = {
    **{column: 0 for column in OWNED_COLUMNS},
    "tool_call_count": 0,
    "estimated_cost_usd": None,
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


def _with_record(plan: ChatPlan, rec: Record, changes: dict[str, Any]) -> ChatPlan:
    if changes:
        plan.record = changes
    return plan
