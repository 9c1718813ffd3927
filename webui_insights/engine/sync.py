"""The engine's entry points: observe, plan, apply — for every writer alike.

``sync(store, chats)`` brings the rows of ``chats`` (all in one state.db) to
what the WebUI says, in short write transactions: each reads the rows and
records of a chunk, plans every chat with ``plan.plan_chat`` (and, given a
``TranscriptWriter``, its messages with ``transcripts.plan_transcript``,
where the stored messages can be read) and applies the plans before it
commits, so the version check and the write can never be separated by
another writer. The live writer, the reconcile sweep, ``backfill`` and
``verify --fix`` call it; ``check(conn, chats)`` makes the same plans on a
read-only connection for ``verify`` and dry runs.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .apply import ApplyResult, TranscriptBudget, apply_plans
from .budget import BATCH_BUDGET_S
from .hermes import Capabilities
from .plan import NO_ROW_OUTCOMES, ChatPlan, Context, plan_chat
from .records import RecordTables, ensure_table, read_records, record_tables
from .rows import messages_have_active, read_rows
from .schema import probe
from .states import Desired, Record
from .store import StateStore
from .transcripts import StoredMessages, TranscriptWriter, plan_transcript

__all__ = ["KeepPlans", "SyncReport", "sync", "check", "context_for"]

# Chats planned and applied between two looks at the transaction's time budget.
CHUNK = 100
# The same, for chats whose messages are written too: one transcript can take
# the whole budget, and chats planned but not reached are planned again in the
# next transaction.
TRANSCRIPT_CHUNK = 10

# Which plans a report keeps: all (True), none (False), or those with one of these outcomes.
KeepPlans = bool | frozenset[str]


@dataclass(slots=True)
class SyncReport:
    """What ``sync`` did: per-chat outcomes, counters, and the lock it held."""

    outcomes: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    plans: list[ChatPlan] = field(default_factory=list)
    rows_written: int = 0
    titles_written: int = 0
    title_problems: list[tuple[str, str]] = field(default_factory=list)
    transactions: int = 0
    max_lock_hold_s: float = 0.0
    # Chats whose transaction committed (on a failure, the rest were not applied).
    committed: list[str] = field(default_factory=list)

    @property
    def chats(self) -> int:
        return sum(self.outcomes.values())

    def add(self, plans: Sequence[ChatPlan], applied: ApplyResult | None, keep: KeepPlans) -> None:
        outcomes = self.outcomes
        for plan in plans:
            outcomes[plan.outcome] += 1
            if plan.notes:
                self.notes.update(plan.notes)
        if keep is True:
            self.plans.extend(plans)
        elif keep:
            self.plans.extend([plan for plan in plans if plan.outcome in keep])
        if applied is not None:
            self.rows_written += applied.rows_written
            self.titles_written += applied.titles_written
            self.title_problems.extend(applied.title_problems)


def context_for(capabilities: Capabilities, now: float | None = None, *, restore_deleted: bool = False) -> Context:
    return Context(
        now=time.time() if now is None else now,
        sanitize_title=capabilities.sanitize_title,
        max_title_length=capabilities.max_title_length,
        restore_deleted=restore_deleted,
    )


def _newest_per_chat(chats: Sequence[Desired]) -> list[Desired]:
    """One state per chat (the newest), in first-seen order."""
    newest: dict[str, Desired] = {}
    for chat in chats:
        known = newest.get(chat.session_id)
        if known is None or chat.version > known.version:
            newest[chat.session_id] = chat
    return list(newest.values()) if len(newest) != len(chats) else list(chats)


def _plan_chunk(
    conn: sqlite3.Connection, chunk: Sequence[Desired], context: Context, active: bool, tables: RecordTables
) -> tuple[list[ChatPlan], dict[str, Record]]:
    ids = [chat.session_id for chat in chunk]
    rows = read_rows(conn, ids, active=active, columns=context.columns)
    records = read_records(conn, ids, tables)
    plans = [plan_chat(chat, rows.get(chat.session_id), records.get(chat.session_id), context) for chat in chunk]
    return plans, records


def sync(
    store: StateStore,
    chats: Sequence[Desired],
    *,
    budget_s: float = BATCH_BUDGET_S,
    keep_plans: KeepPlans = False,
    write_transcript: TranscriptWriter | None = None,
    now: float | None = None,
    report: SyncReport | None = None,
    restore_deleted: bool = False,
) -> SyncReport:
    """Plan and apply ``chats`` in transactions of about ``budget_s`` each.

    ``write_transcript``: the writer's ``TranscriptWriter`` (its memory and
    counters), to plan and write the chats' messages too.
    ``keep_plans``: which plans the report keeps (``KeepPlans``). Raises
    what SessionDB raises; the transactions before the failing one stay
    committed, and a ``report`` passed in says which (``report.committed``):
    the caller retries only the rest.
    """
    report = report if report is not None else SyncReport()
    remaining = _newest_per_chat(chats)
    # Outcome of a carried chat's first plan: later ones see the row it wrote ("unchanged").
    carried: dict[str, str] = {}
    while remaining:
        context = context_for(store.capabilities, now, restore_deleted=restore_deleted)
        transaction = _Transaction(store, remaining, context, budget_s, write_transcript)
        store.run(transaction)
        report.transactions += 1
        report.max_lock_hold_s = max(report.max_lock_hold_s, transaction.held_s)
        done = transaction.done
        carry = set(transaction.applied.unfinished)
        # A long transcript goes on in the next transaction; its chat is
        # counted once, when it is complete, by what its first plan did.
        finished = []
        for plan in transaction.plans:
            if plan.session_id in carry:
                if carried.get(plan.session_id, "unchanged") == "unchanged":
                    carried[plan.session_id] = plan.outcome
                continue
            first = carried.pop(plan.session_id, "unchanged")
            if first != "unchanged":
                plan.outcome = first
            finished.append(plan)
        report.add(finished, transaction.applied, keep_plans)
        report.committed.extend(chat.session_id for chat in remaining[:done] if chat.session_id not in carry)
        remaining = [chat for chat in remaining[:done] if chat.session_id in carry] + remaining[done:]
    return report


class _Transaction:
    """The work of one write transaction: as many chunks of chats as fit its time budget.

    SessionDB calls it inside ``BEGIN IMMEDIATE`` and again from the start
    if it retries, so each call starts afresh.
    """

    def __init__(
        self,
        store: StateStore,
        chats: Sequence[Desired],
        context: Context,
        budget_s: float,
        write_transcript: TranscriptWriter | None,
    ) -> None:
        self.store = store
        self.chats = chats
        self.context = context
        self.budget_s = budget_s
        self.write_transcript = write_transcript
        self.done = 0
        self.plans: list[ChatPlan] = []
        self.applied = ApplyResult()
        self.held_s = 0.0

    def __call__(self, conn: sqlite3.Connection) -> None:
        started = time.perf_counter()
        deadline = started + self.budget_s
        self.done, self.plans, self.applied = 0, [], ApplyResult()
        budget = TranscriptBudget(deadline, self.store.db) if self.write_transcript is not None else None
        tables = ensure_table(conn)
        # Looked at in every transaction: hermes may upgrade the database while this process runs.
        context = self.context = replace(self.context, columns=probe(conn))
        store = self.store
        active = store.messages_have_active(conn)
        chats = self.chats
        while self.done < len(chats):
            chunk = chats[self.done : self.done + CHUNK]
            if self.write_transcript is not None and any(chat.transcript is not None for chat in chunk):
                chunk = chunk[:TRANSCRIPT_CHUNK]
            plans, records = _plan_chunk(conn, chunk, context, active, tables)
            chosen = [p for p in plans if p.writes_row or p.record or _has_transcript(p)]
            if self.write_transcript is not None:
                _plan_transcripts(conn, chosen, records, self.write_transcript, active)
            applied = apply_plans(
                conn,
                chosen,
                records,
                now=context.now,
                max_title_length=store.capabilities.max_title_length,
                transcripts=budget,
            )
            if self.write_transcript is not None:
                self.write_transcript.account(applied.transcripts)
            total = self.applied
            total.rows_written += applied.rows_written
            total.titles_written += applied.titles_written
            total.title_problems.extend(applied.title_problems)
            total.unfinished.extend(applied.unfinished)
            self.plans.extend(plans)
            self.done += len(chunk)
            if time.perf_counter() >= deadline:
                break
        self.held_s = time.perf_counter() - started


def _has_transcript(plan: ChatPlan) -> bool:
    return plan.desired is not None and plan.desired.transcript is not None and plan.owner == "mirror"


def _plan_transcripts(
    conn: sqlite3.Connection,
    plans: Sequence[ChatPlan],
    records: dict[str, Record],
    writer: TranscriptWriter,
    active: bool,
) -> None:
    """The messages of the chats ``apply`` will reach, planned from the rows state.db holds now.

    Not those without a row of this layer's to write to now (``NO_ROW_OUTCOMES``).
    """
    for plan in plans:
        desired = plan.desired
        if desired is not None and desired.transcript is not None and plan.outcome not in NO_ROW_OUTCOMES:
            writer.plan(plan, records.get(plan.session_id), StoredMessages(conn, plan.session_id, active))


def check(
    conn: sqlite3.Connection,
    chats: Sequence[Desired],
    capabilities: Capabilities,
    *,
    now: float | None = None,
    restore_deleted: bool = False,
    transcripts: bool = False,
) -> list[ChatPlan]:
    """The plans ``sync`` would make, on a read-only connection (``verify``, dry runs).

    ``transcripts``: compare a mirrored chat's stored messages with the
    WebUI's, every row (hermes-agent's own are its business).
    """
    context = replace(context_for(capabilities, now, restore_deleted=restore_deleted), columns=probe(conn))
    active = messages_have_active(conn)
    tables = record_tables(conn)
    plans: list[ChatPlan] = []
    unique = _newest_per_chat(chats)
    for start in range(0, len(unique), CHUNK):
        chunk_plans, records = _plan_chunk(conn, unique[start : start + CHUNK], context, active, tables)
        if transcripts:
            for plan in chunk_plans:
                if plan.owner == "mirror" and plan.row is not None:
                    stored = StoredMessages(conn, plan.session_id, active)
                    plan_transcript(plan, records.get(plan.session_id), stored, exhaustive=True)
        plans.extend(chunk_plans)
    return plans
