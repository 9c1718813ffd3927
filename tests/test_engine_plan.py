"""The sync rule, pure: every case of version, ownership, deletion, fields and ledger, without I/O."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.engine import CONTEXT, NOW, Applied, desired, ledger, record, row

from webui_insights.engine.plan import END_REASON, FUTURE_TOLERANCE_S, plan_chat
from webui_insights.engine.states import STAMPED_AHEAD, Counters, Ledger, Row, Version


def up_to_date(chat):
    """The row and record a chat has once this layer applied it (nothing left to do)."""
    plan = plan_chat(chat, None, None, CONTEXT)
    assert plan.insert is not None and plan.record is not None
    current = row(**{k: v for k, v in plan.insert.items() if k in Row._fields}, title=plan.title.base)
    known = record(**plan.record, title_base=plan.title.base, title_written=plan.title.base)
    assert plan_chat(chat, current, known, CONTEXT).outcome == "unchanged"
    return current, known


def applied(chat, owner="mirror", **fields):
    """The record after ``chat`` was applied by this layer."""
    values = {"owner": owner, "version": chat.version, "digest": chat.digest, "message_count": chat.message_count}
    values.update(fields)
    return record(**values)


# ---------------------------------------------------------------- new rows


def test_new_chat_becomes_a_complete_mirror_row() -> None:
    chat = desired(input_tokens=3702, cache_read_tokens=600, output_tokens=168, message_count=6, tool_call_count=2)
    plan = plan_chat(chat, None, None, CONTEXT)
    assert (plan.outcome, plan.owner) == ("created", "mirror")
    new = plan.insert
    assert new is not None
    assert new["source"] == "webui"
    assert (new["input_tokens"], new["cache_read_tokens"], new["output_tokens"]) == (3102, 600, 168)
    assert (new["message_count"], new["tool_call_count"]) == (6, 2)
    assert new["started_at"] == chat.created_at
    assert new["ended_at"] == chat.last_active_at and new["end_reason"] == END_REASON
    assert new["estimated_cost_usd"] == pytest.approx(0.01)
    assert plan.title.action == "write"
    assert plan.record is not None and plan.record["owner"] == "mirror"
    assert plan.record["version"] == chat.version


def test_input_tokens_never_go_below_zero() -> None:
    plan = plan_chat(desired(input_tokens=100, cache_read_tokens=80, cache_write_tokens=50), None, None, CONTEXT)
    assert plan.insert is not None and plan.insert["input_tokens"] == 0


def test_unknown_cache_split_keeps_the_total_in_input() -> None:
    plan = plan_chat(desired(input_tokens=1234, cache_read_tokens=None, cache_write_tokens=None), None, None, CONTEXT)
    assert plan.insert is not None
    assert (plan.insert["input_tokens"], plan.insert["cache_read_tokens"]) == (1234, 0)


def test_agent_reported_cache_splits_input_when_the_webui_keeps_none() -> None:
    chat = desired(
        input_tokens=3702,
        cache_read_tokens=None,
        cache_write_tokens=None,
        ledger=Ledger(cache_read_tokens=600, api_calls=3),
    )
    plan = plan_chat(chat, None, None, CONTEXT)
    assert plan.insert is not None
    assert (plan.insert["input_tokens"], plan.insert["cache_read_tokens"], plan.insert["api_call_count"]) == (
        3102,
        600,
        3,
    )
    assert plan.record is not None and plan.record["ledger"] == Ledger(cache_read_tokens=600, api_calls=3)


def test_the_agents_cache_count_stays_when_a_file_without_cache_fields_is_read_later() -> None:
    no_cache = dict(input_tokens=3702, cache_read_tokens=None, cache_write_tokens=None, message_count=6)
    chat = Applied()
    chat.apply(desired(at=NOW - 20, **no_cache, ledger=Ledger(cache_read_tokens=600, api_calls=3)))
    assert chat.usage() == (3102, 56, 600, 6)
    # backfill or the sweep reads the v0.50.12 file: no cache fields, no ledger with it
    assert chat.apply(desired(at=NOW - 20, observed=NOW - 30, **no_cache)).outcome == "unchanged"
    assert chat.apply(desired(at=NOW - 10, **{**no_cache, "title": "Renamed"})).outcome == "updated"
    assert chat.usage() == (3102, 56, 600, 6)


def test_future_created_at_is_clamped_to_now_and_noted() -> None:
    plan = plan_chat(desired(created_at=NOW + 86400, last_active_at=NOW + 86400), None, None, CONTEXT)
    assert plan.insert is not None and plan.insert["started_at"] == NOW
    assert "future_created_at" in plan.notes


def test_agent_written_chat_is_not_created_before_hermes_agent_does() -> None:
    plan = plan_chat(desired(agent_writes=True), None, None, CONTEXT)
    assert plan.outcome == "awaiting_hermes"
    assert plan.insert is None and not plan.update


# ------------------------------------------------------------------ versions


def test_older_state_changes_nothing() -> None:
    newer = desired(at=NOW - 10, title="Newer")
    older = desired(at=NOW - 20, title="Older", input_tokens=1)
    plan = plan_chat(older, row(title="Newer"), applied(newer), CONTEXT)
    assert plan.outcome == "stale"
    assert plan.insert is None and not plan.update and plan.title.action == "none"


def test_equal_updated_at_is_ordered_by_observation() -> None:
    # The WebUI saves a generated title without moving updated_at.
    first = desired(at=NOW - 10, observed=NOW - 9, title="Untitled")
    titled = desired(at=NOW - 10, observed=NOW - 8, title="Generated title")
    assert plan_chat(titled, row(), applied(first), CONTEXT).title.base == "Generated title"
    assert plan_chat(first, row(title="Generated title"), applied(titled), CONTEXT).outcome == "stale"


def test_same_state_again_repairs_drift() -> None:
    chat = desired()
    drifted = row(input_tokens=1, output_tokens=2, message_count=2, title="A chat")
    plan = plan_chat(chat, drifted, applied(chat, title_base="A chat", title_written="A chat"), CONTEXT)
    assert plan.outcome == "updated"
    assert plan.update["input_tokens"] == 1034
    assert {d.field for d in plan.drift} >= {"input_tokens", "output_tokens"}


def test_same_state_older_copy_still_counts_as_the_same_state() -> None:
    chat = desired(at=NOW - 10, observed=NOW - 5)
    copy = chat._replace(version=Version(NOW - 10, NOW - 7))  # the file, written before the capture
    plan = plan_chat(copy, row(), applied(chat), CONTEXT)
    assert plan.outcome != "stale"


def test_a_record_from_the_earlier_release_names_the_same_state_and_is_rewritten_once() -> None:
    """Its digest (of the state's repr) still matches, so a same-version copy repairs drift; then the new form."""
    import hashlib

    chat = desired()
    earlier = hashlib.blake2b(repr(tuple(chat[2:16])).encode(), digest_size=10).hexdigest()
    assert earlier != chat.digest
    drifted = row(input_tokens=1, output_tokens=2, message_count=2, title="A chat")
    known = applied(chat, digest=earlier, title_base="A chat", title_written="A chat")
    plan = plan_chat(chat, drifted, known, CONTEXT)
    assert plan.outcome == "updated" and plan.update["input_tokens"] == 1034
    assert plan.record is not None and plan.record["digest"] == chat.digest
    # A different state's earlier digest is not taken for this one: same version, different state → stale.
    other = hashlib.blake2b(repr(tuple(desired(title="Other")[2:16])).encode(), digest_size=10).hexdigest()
    assert plan_chat(chat, drifted, applied(chat, digest=other), CONTEXT).outcome == "stale"


def test_equal_states_have_equal_digests_whichever_objects_hold_them() -> None:
    """The digest is of values: a title built at run time, an interned one, an equal copy — one digest."""
    import sys

    built = "".join(["A ", "chat"])
    assert built is not sys.intern("A chat")
    digests = {
        desired(title=built, model=built).digest,
        desired(title=sys.intern("A chat"), model=sys.intern("A chat")).digest,
        desired(title="A chat", model=b"A chat".decode()).digest,
    }
    assert len(digests) == 1
    assert desired(title="A chat").digest != desired(title="A chat ").digest
    assert desired(input_tokens=1).digest != desired(input_tokens=True).digest  # 1 and True are told apart
    assert desired(estimated_cost_usd=0.0).digest != desired(estimated_cost_usd=-0.0).digest


def test_a_value_marshal_cannot_encode_still_gets_a_digest() -> None:
    from decimal import Decimal

    assert desired(model=Decimal("1.5")).digest != desired(model=Decimal("2.5")).digest
    assert desired(model=Decimal("1.5")).digest == desired(model=Decimal("1.5")).digest


HOURS_AHEAD = 6 * 3600.0


def known_after(plan):
    """The record once ``plan`` was applied."""
    assert plan.record is not None
    return record(**plan.record)


def test_a_version_recorded_while_the_clock_ran_ahead_holds_no_later_state_back() -> None:
    # First turn saved while the clock was 6 h ahead; the clock is corrected; the next turn comes.
    ahead = desired(at=NOW + HOURS_AHEAD, message_count=2, created_at=NOW - 60)
    later = desired(at=NOW - 5, message_count=4, created_at=NOW - 60, input_tokens=2468)
    plan = plan_chat(later, row(message_count=2), applied(ahead), CONTEXT)
    assert plan.outcome == "updated" and plan.update["message_count"] == 4
    assert "version_recorded_future" in plan.notes
    # The later version stays on record, ordering nothing until the clock passes it: lowered to the new
    # state's, it would let an old copy outrank the states saved while the clock is set back.
    assert plan.record is not None and plan.record["version"] == ahead.version
    next_turn = desired(at=NOW - 3, message_count=6, created_at=NOW - 60, input_tokens=3702)
    assert plan_chat(next_turn, row(message_count=4), known_after(plan), CONTEXT).outcome == "updated"
    # The same state again, with the bad version recorded: the record is put right, nothing else.
    current, known = up_to_date(ahead)
    again = plan_chat(ahead._replace(version=Version(NOW - 5, NOW - 5)), current, known, CONTEXT)
    assert again.outcome in ("unchanged", "updated")


@pytest.mark.parametrize(
    ("lead", "outcome"),
    [
        (HOURS_AHEAD, "updated"),  # far ahead: distrusted
        (FUTURE_TOLERANCE_S + 1, "updated"),
        (FUTURE_TOLERANCE_S - 1, "stale"),  # within the tolerance: the documented bound (held until its next change)
        (0.0, "stale"),  # a real newer state
    ],
)
def test_how_far_ahead_a_recorded_version_may_be(lead: float, outcome: str) -> None:
    recorded = desired(at=NOW + lead, observed=NOW + lead, message_count=2)
    incoming = desired(at=NOW - 5, message_count=4)
    assert plan_chat(incoming, row(message_count=2), applied(recorded), CONTEXT).outcome == outcome


def test_missing_version_never_outranks_a_real_one() -> None:
    real = desired(at=NOW - 10)
    unversioned = desired(at=0.0, observed=NOW, input_tokens=1)
    assert plan_chat(unversioned, row(), applied(real), CONTEXT).outcome == "stale"


def test_a_state_stamped_ahead_adds_its_spend_but_not_its_version() -> None:
    """A clock far ahead stamped it: the newest state (a turn made then) or an old copy, nothing tells which."""
    current, known = up_to_date(desired(at=NOW - 10, title="On record", input_tokens=1000))
    ahead = desired(at=STAMPED_AHEAD, observed=NOW, title="Stamped ahead", input_tokens=1500, message_count=4)
    plan = plan_chat(ahead, current, known, CONTEXT)
    assert plan.outcome == "updated"  # not "stale": its turn would be lost
    assert plan.update["input_tokens"] == 1500 - 200
    assert plan.record is not None and {"version", "digest"}.isdisjoint(plan.record)  # the record's still order
    after = known._replace(**plan.record)
    assert plan_chat(desired(at=NOW - 20, input_tokens=1), current, after, CONTEXT).outcome == "stale"


def test_a_state_stamped_ahead_brings_back_a_deleted_chat_it_shows_a_turn_of() -> None:
    _, known = up_to_date(desired(at=NOW - 10, input_tokens=1000))
    deleted = known._replace(deleted_at=NOW - 5)
    ahead = desired(at=STAMPED_AHEAD, observed=NOW, input_tokens=1500, message_count=4, last_active_at=NOW + 6 * 3600)
    plan = plan_chat(ahead, None, deleted, CONTEXT)
    assert plan.outcome == "restored"
    assert plan.insert is not None and plan.insert["input_tokens"] == 1500 - 200


@given(
    st.floats(min_value=0, max_value=NOW, allow_nan=False),
    st.floats(min_value=0, max_value=NOW, allow_nan=False),
    st.floats(min_value=0, max_value=NOW, allow_nan=False),
    st.floats(min_value=0, max_value=NOW, allow_nan=False),
)
def test_of_two_different_states_only_the_newer_is_applied(
    a_at: float, a_seen: float, b_at: float, b_seen: float
) -> None:
    a = desired(at=a_at, observed=a_seen, title="A", input_tokens=10)
    b = desired(at=b_at, observed=b_seen, title="B", input_tokens=20)
    if a.version == b.version:
        return
    newer, older = (a, b) if a.version > b.version else (b, a)
    assert plan_chat(older, row(), applied(newer), CONTEXT).outcome == "stale"
    assert plan_chat(newer, row(), applied(older), CONTEXT).outcome != "stale"


# ----------------------------------------------------------------- ownership


def test_row_of_another_source_is_never_written() -> None:
    telegram = row(source="telegram", message_count=3, input_tokens=999, title="From Telegram")
    plan = plan_chat(desired(message_count=2, title="Local copy"), telegram, None, CONTEXT)
    assert (plan.outcome, plan.owner) == ("foreign", "foreign")
    assert not plan.update and plan.title.action == "none" and plan.insert is None
    assert plan.record is not None and plan.record["owner"] == "foreign"
    assert plan.record["message_count"] == 2  # the state a new turn is measured from, once that row is gone


@pytest.mark.parametrize(
    ("known", "chat", "outcome"),
    [
        # Seen while the other source held the id: a new turn since brings the chat in, as this layer's.
        (dict(owner="foreign", message_count=4), dict(message_count=6), "restored"),
        (dict(owner="foreign", message_count=4), dict(message_count=4, ledger=Ledger(api_calls=1)), "restored"),
        # No new turn: the deletion in hermes stands, as for any chat.
        (dict(owner="foreign", message_count=4), dict(message_count=4, title="Renamed"), "deleted"),
        (dict(owner="foreign", message_count=6), dict(message_count=4), "deleted"),
    ],
)
def test_a_foreign_row_that_goes_away_follows_the_deletion_rule(known, chat, outcome) -> None:
    before = desired(at=NOW - 20, message_count=known["message_count"])
    plan = plan_chat(desired(at=NOW - 10, **chat), None, applied(before, **known), CONTEXT)
    assert plan.outcome == outcome
    assert (plan.insert is not None) == (outcome == "restored")
    if outcome == "restored":
        assert plan.owner == "mirror" and plan.record is not None and plan.record["owner"] == "mirror"


def test_a_foreign_chat_known_from_an_earlier_release_starts_its_count_when_its_row_is_gone() -> None:
    # An earlier release kept only owner "foreign": nothing to measure a new turn from yet.
    plan = plan_chat(desired(message_count=9), None, record(owner="foreign"), CONTEXT)
    assert plan.outcome == "deleted" and plan.insert is None
    assert plan.record is not None and plan.record["message_count"] == 9 and plan.record["deleted_at"] == NOW
    turn = desired(at=NOW + 1, message_count=11)
    assert plan_chat(turn, None, record(**{"owner": "foreign", **plan.record}), CONTEXT).outcome == "restored"


@pytest.mark.parametrize(
    "observed",
    [
        {"agent_marks": True},
        {"live_messages": 4},
    ],
)
def test_row_hermes_agent_writes_keeps_its_usage(observed) -> None:
    hermes_row = row(input_tokens=3102, cache_read_tokens=600, output_tokens=168, message_count=6, **observed)
    plan = plan_chat(desired(input_tokens=3702, cache_read_tokens=600, message_count=6), hermes_row, None, CONTEXT)
    assert plan.owner == "hermes"
    assert set(plan.update) <= {"started_at"}
    assert plan.title.action == "write"  # what hermes leaves out


def test_only_the_rows_marks_say_hermes_agent_writes_an_existing_row() -> None:
    # The agent hook saw a SessionDB for the chat (before a deletion in hermes): the row this
    # layer brought back is its own until hermes-agent writes to it.
    assert plan_chat(desired(agent_writes=True), row(), None, CONTEXT).owner == "mirror"
    assert plan_chat(desired(agent_writes=True), row(agent_marks=True), None, CONTEXT).owner == "hermes"
    assert plan_chat(desired(agent_writes=True), None, None, CONTEXT).outcome == "awaiting_hermes"


def test_hermes_row_gets_the_earlier_creation_time_only() -> None:
    chat = desired(created_at=NOW - 3600)
    plan = plan_chat(chat, row(agent_marks=True, started_at=NOW - 60), None, CONTEXT)
    assert plan.update == {"started_at": NOW - 3600}
    later = plan_chat(desired(created_at=NOW - 30), row(agent_marks=True, started_at=NOW - 60), None, CONTEXT)
    assert "started_at" not in later.update


def test_mirror_row_taken_over_by_hermes_agent_gets_its_ended_at_back() -> None:
    ours = row(ended_at=NOW - 50, end_reason=END_REASON, agent_marks=True, message_count=2)
    plan = plan_chat(desired(), ours, record(owner="mirror", message_count=2), CONTEXT)
    assert plan.owner == "hermes"
    assert plan.update["ended_at"] is None and plan.update["end_reason"] is None
    assert plan.record is not None and plan.record["owner"] == "hermes"


@pytest.mark.parametrize("recorded_owner", ["mirror", "hermes"])
@pytest.mark.parametrize(
    "touched",
    [
        dict(input_tokens=1534),  # the host's own bridge wrote a turn while mirroring was off
        dict(output_tokens=5, message_count=1),  # a manual edit
        dict(input_tokens=0, output_tokens=0, cache_read_tokens=0, message_count=0, estimated_cost_usd=None),  # backup
    ],
)
def test_values_someone_else_wrote_are_drift_not_evidence_of_hermes_agent(recorded_owner, touched) -> None:
    chat = desired()
    ours, known = up_to_date(chat)
    assert (ours.input_tokens, ours.output_tokens, ours.message_count) == (1034, 56, 2)
    # An earlier release recorded "hermes" on such values: without a mark of hermes-agent it is ours again.
    known = known._replace(owner=recorded_owner)
    plan = plan_chat(chat, ours._replace(**touched), known, CONTEXT)
    assert plan.owner == "mirror"
    assert plan.update == {column: getattr(ours, column) for column in touched}
    assert {d.field for d in plan.drift} == set(touched)


def test_bare_webui_row_is_adopted() -> None:
    # Made by the host's own bridge or an earlier release: no agent marks, no messages.
    plan = plan_chat(desired(), row(input_tokens=1234), None, CONTEXT)
    assert plan.owner == "mirror"
    assert plan.update["input_tokens"] == 1034


def test_hermes_set_end_reason_is_never_touched() -> None:
    ended = row(ended_at=NOW - 500, end_reason="compression", title="A chat")
    plan = plan_chat(desired(), ended, record(owner="mirror", message_count=2), CONTEXT)
    assert "ended_at" not in plan.update and "end_reason" not in plan.update


def test_a_title_cleared_in_hermes_stays_cleared_but_a_restored_row_is_titled() -> None:
    chat = desired(title="A chat")
    current, known = up_to_date(chat)
    cleared = current._replace(title=None)
    assert plan_chat(chat, cleared, known, CONTEXT).title.action == "kept"
    assert plan_chat(chat, cleared, known, CONTEXT).drift == []  # verify: not a difference
    renamed = desired(at=NOW - 1, title="Renamed in the WebUI")
    assert plan_chat(renamed, cleared, known, CONTEXT).title.action == "kept"
    # Deleted in hermes, back with a new turn: a new row, titled.
    turn = desired(at=NOW - 1, message_count=4, title="A chat")
    restored = plan_chat(turn, None, known, CONTEXT)
    assert restored.outcome == "restored" and restored.title.action == "write"
    # Back without a title (the chat was cleared): the memory of the deleted row's title goes with it,
    # so a later WebUI title fills the restored row instead of being taken for one cleared in hermes.
    untitled = plan_chat(turn._replace(title=None), None, known, CONTEXT)
    assert untitled.record is not None and untitled.record["title_written"] is None
    # Deleted unseen and made anew by someone else (it starts at another time): its empty title was never
    # cleared by anyone, whatever this layer remembers of the row that was deleted.
    remade = cleared._replace(started_at=NOW - 5)
    assert plan_chat(chat, remade, known, CONTEXT).title.action == "write"


@pytest.mark.parametrize(
    ("created", "row_started", "action"),
    [
        # The row starts when the chat was made: this layer's row, its title cleared in hermes, then
        # taken over by hermes-agent (its marks on it): the clear stays.
        (NOW - 600, NOW - 600, "kept"),
        # It starts later: hermes-agent made it anew after a deletion this layer did not see.
        (NOW - 600, NOW - 5, "write"),
        # The chat's creation is in the future (a clock ran ahead): nothing dates the row, and an untitled
        # row hermes-agent writes reads as made anew (documented: a clear is not told apart then).
        (NOW + 3600, NOW - 5, "write"),
    ],
)
def test_an_untitled_row_hermes_agent_took_over_is_dated_by_its_start(created, row_started, action) -> None:
    chat = desired(title="A chat", created_at=created)
    current, known = up_to_date(chat)
    taken_over = current._replace(title=None, agent_marks=True, started_at=row_started)
    plan = plan_chat(desired(at=NOW - 1, title="A chat", created_at=created), taken_over, known, CONTEXT)
    assert plan.owner == "hermes"
    assert plan.title.action == action


# ----------------------------------------------------------------- deletions


def test_deleted_in_hermes_stays_deleted_without_a_new_turn() -> None:
    chat = desired(message_count=4)
    plan = plan_chat(chat, None, applied(chat, message_count=4), CONTEXT)
    assert plan.outcome == "deleted"
    assert plan.insert is None
    assert plan.record is not None and plan.record["deleted_at"] == NOW
    renamed = desired(at=NOW - 1, message_count=4, title="Renamed")
    assert plan_chat(renamed, None, applied(chat, message_count=4, deleted_at=NOW), CONTEXT).outcome == "deleted"


def test_a_new_turn_brings_a_deleted_chat_back() -> None:
    before = desired(at=NOW - 20, message_count=4)
    turn = desired(at=NOW - 10, message_count=6)
    plan = plan_chat(turn, None, applied(before, message_count=4, deleted_at=NOW - 15), CONTEXT)
    assert (plan.outcome, plan.owner) == ("restored", "mirror")
    assert plan.insert is not None and plan.insert["message_count"] == 6
    assert plan.record is not None and plan.record["deleted_at"] is None


def test_restore_deleted_flag_brings_it_back_without_a_turn() -> None:
    chat = desired(message_count=4)
    context = dataclasses.replace(CONTEXT, restore_deleted=True)
    assert plan_chat(chat, None, applied(chat, message_count=4), context).outcome == "restored"


# -------------------------------------------------------------------- ledger


def test_ledger_increments_add_up_even_for_a_stale_state() -> None:
    newer = desired(at=NOW - 10)
    stale = desired(at=NOW - 20, ledger=ledger(cache_read_tokens=200, api_calls=1))
    known = applied(newer, ledger=Ledger(cache_read_tokens=400, api_calls=2))
    plan = plan_chat(stale, row(), known, CONTEXT)
    assert plan.outcome == "stale"
    # Kept, and marked as not in the row yet: the next state applied counts them.
    assert plan.record == {
        "ledger": Ledger(cache_read_tokens=600, api_calls=3),
        "ledger_applied": Ledger(cache_read_tokens=400, api_calls=2),
    }


def test_increments_of_a_stale_state_are_counted_with_the_next_state_applied() -> None:
    chat = Applied()
    chat.apply(desired(at=NOW - 10, cache_read_tokens=None, api_call_count=None))
    assert chat.row is not None and (chat.row.cache_read_tokens, chat.row.api_call_count) == (0, 0)
    chat.apply(desired(at=NOW - 20, ledger=ledger(cache_read_tokens=200, api_calls=1)))  # stale
    assert (chat.row.cache_read_tokens, chat.row.api_call_count) == (0, 0)
    chat.apply(desired(at=NOW - 5, title="Later", cache_read_tokens=None, api_call_count=None))
    assert (chat.row.cache_read_tokens, chat.row.api_call_count) == (200, 1)


# --------------------------------------------------------------------- drift


def test_an_up_to_date_row_plans_nothing() -> None:
    chat = desired()
    current, known = up_to_date(chat)
    again = plan_chat(chat, current, known, CONTEXT)
    assert (again.outcome, again.update, again.add, again.drift, again.record) == ("unchanged", {}, {}, [], None)


def test_turns_the_webui_did_not_record_count_from_the_agents_own_accounting() -> None:
    # hermes-webui's /api/chat adds nothing to the chat's totals; the agent counted the turn.
    chat = desired(
        input_tokens=0,
        output_tokens=0,
        cache_read_tokens=0,
        estimated_cost_usd=None,
        ledger=Ledger(cache_read_tokens=600, api_calls=3, prompt_tokens=3702, completion_tokens=168, cost_usd=0.0081),
    )
    plan = plan_chat(chat, None, None, CONTEXT)
    assert plan.insert is not None
    new = plan.insert
    assert (new["input_tokens"], new["cache_read_tokens"], new["output_tokens"]) == (3102, 600, 168)
    assert (new["api_call_count"], new["estimated_cost_usd"]) == (3, pytest.approx(0.0081))


def test_history_from_before_the_agent_was_observed_keeps_the_webuis_larger_totals() -> None:
    chat = desired(
        input_tokens=10_000,
        output_tokens=900,
        cache_read_tokens=None,
        cache_write_tokens=None,
        ledger=Ledger(cache_read_tokens=200, api_calls=1, prompt_tokens=1234, completion_tokens=56),
    )
    plan = plan_chat(chat, None, None, CONTEXT)
    assert plan.insert is not None
    assert (plan.insert["input_tokens"], plan.insert["output_tokens"]) == (9800, 900)


# --------------------------------------------------------------------- spend
#
# Each case is a history of the WebUI's figures for one chat, applied in order;
# the row must show what was spent: (input without cache, output, cache read, messages).


def figures(at: float, prompt: int, output: int, cached: int, messages: int, **fields) -> object:
    return desired(
        at=at,
        input_tokens=prompt,
        output_tokens=output,
        cache_read_tokens=cached,
        message_count=messages,
        created_at=NOW - 3600,
        **fields,
    )


@pytest.mark.parametrize(
    ("history", "spent"),
    [
        # turns only add
        ([(1000, 10, 0, 2), (2000, 20, 100, 4)], (1900, 20, 100, 4)),
        # a retry or an edit removes a turn (the figures of v0.50.12 stay; HEAD's agent rebuilt counts anew)
        ([(3000, 30, 0, 6), (1000, 10, 0, 2)], (3000, 30, 0, 6)),
        # ... and the next turn adds to what was spent
        ([(3000, 30, 0, 6), (1000, 10, 0, 2), (2000, 20, 0, 4)], (4000, 40, 0, 8)),
        # clear: no messages, the figures kept
        ([(3000, 30, 0, 6), (3000, 30, 0, 0), (4000, 40, 0, 2)], (4000, 40, 0, 8)),
        # the same state again changes nothing
        ([(1000, 10, 0, 2), (1000, 10, 0, 2)], (1000, 10, 0, 2)),
    ],
)
def test_the_row_shows_what_was_spent_whatever_the_figures_did(history, spent) -> None:
    chat = Applied()
    for n, (prompt, output, cached, messages) in enumerate(history):
        chat.apply(figures(NOW - 100 + n, prompt, output, cached, messages))
    assert chat.usage() == spent


@pytest.mark.parametrize("inherited_prompt", [0, 2468])
def test_a_copy_spent_nothing_and_gets_a_row_only_with_a_turn_of_its_own(inherited_prompt: int) -> None:
    """HEAD's Duplicate copies the figures; an import copies the messages (figures 0): both predate the copy."""
    copied_messages = {"earliest_message_at": NOW - 7200}  # older than the copy's created_at (NOW - 3600)
    chat = Applied()
    plan = chat.apply(figures(NOW - 100, inherited_prompt, 112, 400 if inherited_prompt else 0, 4, **copied_messages))
    assert (plan.outcome, plan.insert, chat.row) == ("no_turn", None, None)
    assert "inherited_usage" in plan.notes
    # A rename of the copy is not a turn either.
    renamed = figures(NOW - 90, inherited_prompt, 112, 400 if inherited_prompt else 0, 4, title="Mine now")
    assert chat.apply(renamed._replace(earliest_message_at=NOW - 7200)).outcome == "no_turn"
    # Its own turn (1234 prompt, 200 cached, 56 out): only that is spent here.
    own = figures(NOW - 80, inherited_prompt + 1234, 168, (400 if inherited_prompt else 0) + 200, 6, **copied_messages)
    assert chat.apply(own).outcome == "created"
    assert chat.usage() == (1034, 56, 200, 2)


def test_a_chat_whose_messages_start_with_it_is_no_copy() -> None:
    # v0.50.12 stamps whole seconds: the first message may read up to a second before created_at.
    chat = Applied()
    plan = chat.apply(figures(NOW - 100, 1234, 56, 200, 2, earliest_message_at=NOW - 3600.9))
    assert plan.outcome == "created" and chat.usage() == (1034, 56, 200, 2)


@pytest.mark.parametrize(
    ("after_deletion", "outcome"),
    [
        # a rename, a pin, a truncation: not a turn
        (dict(title="Renamed"), "deleted"),
        (dict(messages=6), "deleted"),
        # a turn: more messages, or usage that grew, or the agent reported a run
        (dict(messages=12), "restored"),
        # edit message 3 of 10 and resend three times: 8 messages, 3,000 more input tokens
        (dict(messages=8, prompt=13_000), "restored"),
        (dict(messages=10, ledger=Ledger(prompt_tokens=1234, api_calls=1)), "restored"),
    ],
)
def test_only_a_new_turn_brings_a_chat_deleted_in_hermes_back(after_deletion: dict, outcome: str) -> None:
    chat = Applied()
    chat.apply(figures(NOW - 100, 10_000, 100, 0, 10))
    chat.delete_in_hermes()
    state = {"prompt": 10_000, "messages": 10, **after_deletion}
    extra = {k: v for k, v in state.items() if k in ("title", "ledger")}
    plan = chat.apply(figures(NOW - 50, state["prompt"], 100, 0, state["messages"], **extra))
    assert plan.outcome == outcome
    if outcome == "restored":  # whole: everything the chat spent, before the deletion too
        assert chat.row is not None and chat.row.input_tokens == max(state["prompt"], 10_000 + 1234 * ("ledger" in state))


def test_a_truncation_then_a_resend_after_a_deletion_is_a_turn() -> None:
    chat = Applied()
    chat.apply(figures(NOW - 100, 10_000, 100, 0, 10))
    chat.delete_in_hermes()
    assert chat.apply(figures(NOW - 90, 10_000, 100, 0, 2)).outcome == "deleted"  # message 3 edited: cut to 2
    assert chat.apply(figures(NOW - 80, 10_000, 100, 0, 4)).outcome == "restored"  # resent: 2 new messages
    assert chat.usage() == (10_000, 100, 0, 12)


@pytest.mark.parametrize("change", [dict(title="Renamed"), dict(model="other/model")])
def test_ended_at_moves_only_with_activity(change: dict) -> None:
    """A rename, a pin or a move touches the WebUI's updated_at: the chat's last activity stays."""
    chat = Applied()
    chat.apply(figures(NOW - 100, 1000, 10, 0, 2))
    assert chat.row is not None and chat.row.ended_at == NOW - 100
    chat.apply(figures(NOW - 50, 1000, 10, 0, 2, **change))
    assert chat.row.ended_at == NOW - 100
    chat.apply(figures(NOW - 20, 2000, 20, 0, 4))
    assert chat.row.ended_at == NOW - 20


# ------------------------------------------------------------- hermes-agent's rows


def hermes_row(**fields) -> Row:
    values = dict(agent_marks=True, input_tokens=1034, output_tokens=56, cache_read_tokens=200, message_count=2)
    values.update(fields)
    return row(**values)


def test_a_turn_hermes_agent_did_not_record_is_added_to_its_row_once() -> None:
    """HEAD: /api/chat runs the agent without a SessionDB; the agent hook counted it."""
    unrecorded = Ledger(prompt_tokens=1234, cache_read_tokens=200, completion_tokens=56, api_calls=1, cost_usd=0.0027)
    chat = Applied(row=hermes_row(estimated_cost_usd=0.0027, api_call_count=1))
    plan = chat.apply(figures(NOW - 50, 1234, 56, 200, 4, ledger=unrecorded))
    assert plan.owner == "hermes"
    assert plan.add == {
        "input_tokens": 1034,
        "output_tokens": 56,
        "cache_read_tokens": 200,
        "api_call_count": 1,
        "estimated_cost_usd": pytest.approx(0.0027),
    }
    assert chat.row is not None and chat.row.input_tokens == 2068
    assert chat.row.estimated_cost_usd == pytest.approx(0.0054)
    # Again (a sweep, verify --fix): nothing more.
    again = chat.apply(figures(NOW - 50, 1234, 56, 200, 4))
    assert again.add == {} and chat.row.input_tokens == 2068


def test_what_this_layers_row_held_when_hermes_agent_took_it_over_is_not_added_again() -> None:
    """HEAD: a non-streaming first turn (this layer's row), then a streaming one (hermes-agent adds to that row)."""
    first = Ledger(prompt_tokens=1234, cache_read_tokens=200, completion_tokens=56, api_calls=1)
    chat = Applied()
    chat.apply(figures(NOW - 100, 0, 0, 0, 2, ledger=first))
    assert chat.row is not None and chat.row.input_tokens == 1034
    # hermes-agent's create_session marks the row and adds its own call.
    chat.row = chat.row._replace(agent_marks=True, input_tokens=2068, output_tokens=112, live_messages=2)
    taken = chat.apply(figures(NOW - 90, 1234, 56, 200, 4, agent_writes=True))
    assert (taken.owner, taken.add) == ("hermes", {})
    assert chat.row.input_tokens == 2068
    # A later non-streaming turn: added.
    chat.apply(figures(NOW - 80, 1234, 56, 200, 6, ledger=first))
    assert chat.row.input_tokens == 3102


def test_a_continuation_keeps_the_start_hermes_gave_it() -> None:
    """HEAD compression: a new id, created_at of the first one; its row starts at its own first call."""
    chat = Applied(row=hermes_row(started_at=NOW - 60))
    plan = chat.apply(figures(NOW - 50, 5000, 200, 0, 8, continuation=True))
    assert "started_at" not in plan.update
    first = Applied(row=hermes_row(started_at=NOW - 60))
    assert first.apply(figures(NOW - 50, 5000, 200, 0, 8)).update["started_at"] == NOW - 3600


# ---------------------------------------------------------------- bad input


def test_values_of_the_wrong_type_in_a_mirrored_row_are_counted_and_set_right() -> None:
    chat = desired()
    current, known = up_to_date(chat)
    damaged = current._replace(input_tokens=0, started_at=None, bad_values=("input_tokens", "started_at"))
    plan = plan_chat(chat, damaged, known, CONTEXT)
    assert "row_value_invalid" in plan.notes
    assert plan.update == {"input_tokens": current.input_tokens, "started_at": current.started_at}


@given(
    st.lists(
        st.tuples(
            st.integers(0, 10_000), st.integers(0, 1_000), st.integers(0, 1_000), st.integers(0, 40)
        ),
        min_size=1,
        max_size=8,
    )
)
def test_spend_is_the_sum_of_what_each_state_added(history: list[tuple[int, int, int, int]]) -> None:
    """Whatever the figures do, the row holds the first state plus every increase since; it never goes down."""
    chat = Applied()
    want = None
    before: tuple[int, ...] | None = None
    for n, (prompt, output, cached, messages) in enumerate(history):
        if not (prompt or output or cached or messages) and chat.row is None:
            continue  # a blank chat is never captured
        now = (prompt, output, cached, messages)
        want = now if want is None else tuple(w + max(0, a - b) for w, a, b in zip(want, now, before, strict=True))
        before = now
        shown_before = chat.usage() if chat.row is not None else None
        chat.apply(figures(NOW - 1000 + n, prompt, output, cached, messages))
        assert chat.row is not None
        if shown_before is not None:
            assert all(a >= b for a, b in zip(chat.usage(), shown_before, strict=True)) or chat.row.cache_read_tokens
    if want is not None:
        prompt, output, cached, messages = want
        assert chat.usage() == (max(0, prompt - cached), output, cached, messages)
