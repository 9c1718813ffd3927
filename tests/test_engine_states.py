"""engine/states.py: the values the rule compares — their arithmetic, their order and a state's digest.

The rule's guarantees rest on these: spend only ever adds up (``Ledger``,
``Counters``), states are ordered by the chat's clock (``Version``), and a
recorded digest names one chat state, also one an earlier release recorded.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webui_insights.engine.states import (
    OWNED_COLUMNS,
    Counters,
    Desired,
    Ledger,
    Record,
    Row,
    Version,
    same_state,
)
from webui_insights.engine.store import create_state_db

NOW = 1_800_000_000.0

# Costs as exact binary fractions: sums of them are exact, so the laws below hold with ==.
_COST = st.integers(min_value=0, max_value=10**6).map(lambda n: n / 64)
_COUNT = st.integers(min_value=0, max_value=10**9)
ledgers = st.builds(Ledger, _COUNT, _COUNT, _COUNT, _COUNT, _COUNT, _COUNT, _COST)
counters = st.builds(Counters, _COUNT, _COUNT, _COUNT, _COUNT, _COUNT, _COUNT, _COST, _COUNT, _COUNT)


def chat(**fields: Any) -> Desired:
    values: dict[str, Any] = {
        "model": "test/model",
        "billing_provider": "openrouter",
        "title": "A chat",
        "input_tokens": 1200,
        "output_tokens": 50,
        "cache_read_tokens": 200,
        "cache_write_tokens": 0,
        "reasoning_tokens": None,
        "estimated_cost_usd": 0.01,
        "message_count": 4,
        "tool_call_count": 1,
        "api_call_count": 2,
        "created_at": NOW - 3600,
        "last_active_at": NOW - 60,
    }
    version = fields.pop("version", Version(NOW - 60, NOW - 59))
    values.update(fields)
    return Desired.of("chat1", version, **values)


# ------------------------------------------------------------------- Ledger


@given(ledgers, ledgers, ledgers)
def test_ledger_increments_add_up_in_any_order(a: Ledger, b: Ledger, c: Ledger) -> None:
    """Live snapshots carry increments that may arrive in any order: the total must not depend on it."""
    assert a.plus(b) == b.plus(a)
    assert a.plus(b).plus(c) == a.plus(b.plus(c))


@given(ledgers)
def test_adding_no_increment_changes_nothing(a: Ledger) -> None:
    assert a.plus(None) == a
    assert a.plus(Ledger()) == a


@given(ledgers, ledgers)
def test_beyond_gives_back_the_increment_added(a: Ledger, b: Ledger) -> None:
    """What the row has not yet recorded is exactly what was added since: no double count, none lost."""
    assert a.plus(b).beyond(a) == b
    assert a.beyond(a) == Ledger()


@given(ledgers, ledgers)
def test_beyond_is_never_negative(a: Ledger, b: Ledger) -> None:
    """A ledger behind the row (a stale copy) takes nothing off the row."""
    assert all(value >= 0 for value in a.beyond(b))


# ----------------------------------------------------------------- Counters


def test_counters_of_a_chat_take_unknown_figures_as_zero() -> None:
    """The WebUI's None is "not known", never a figure: it must not make spend arithmetic fail."""
    desired = chat(cache_read_tokens=None, cache_write_tokens=None, estimated_cost_usd=None, tool_call_count=None)
    desired = desired._replace(api_call_count=None)
    assert Counters.of(desired) == Counters(
        prompt_tokens=1200, output_tokens=50, messages=4, cache_read_tokens=0, api_calls=0, cost_usd=0.0
    )


def test_counters_of_a_chat_take_each_figure_by_name() -> None:
    desired = chat(reasoning_tokens=7, cache_write_tokens=3)
    assert Counters.of(desired) == Counters(
        prompt_tokens=1200,
        output_tokens=50,
        cache_read_tokens=200,
        cache_write_tokens=3,
        reasoning_tokens=7,
        api_calls=2,
        cost_usd=0.01,
        messages=4,
        tool_calls=1,
    )


def test_counters_of_a_ledger_count_its_tokens_but_no_messages() -> None:
    """The agent counts calls and tokens, never the chat's messages."""
    ledger = Ledger(
        cache_read_tokens=1, cache_write_tokens=2, reasoning_tokens=3, api_calls=4, prompt_tokens=5, completion_tokens=6
    )
    assert Counters.of_ledger(ledger._replace(cost_usd=0.5)) == Counters(
        prompt_tokens=5,
        output_tokens=6,
        cache_read_tokens=1,
        cache_write_tokens=2,
        reasoning_tokens=3,
        api_calls=4,
        cost_usd=0.5,
    )


@given(counters, counters)
def test_growth_gives_back_what_was_added_and_never_goes_below_zero(before: Counters, added: Counters) -> None:
    """Figures that went down (a turn removed) add no spend; figures that grew add exactly their growth."""
    assert before.plus(added).growth(before) == added
    assert all(value >= 0 for value in before.growth(before.plus(added)))
    assert before.growth(before) == Counters()


@given(counters, counters)
def test_larger_is_the_figure_by_figure_maximum(a: Counters, b: Counters) -> None:
    """Merging two views of a chat's figures (a clock that ran ahead) must never lose spend either saw."""
    merged = a.larger(b)
    assert merged == b.larger(a) and merged.larger(merged) == merged
    assert all(m >= x and m >= y for m, x, y in zip(merged, a, b, strict=True))


@pytest.mark.parametrize(
    ("figure", "spends"),
    [
        pytest.param("prompt_tokens", True, id="prompt tokens are spend"),
        pytest.param("output_tokens", True, id="output tokens are spend"),
        pytest.param("cache_read_tokens", True, id="cache reads are spend"),
        pytest.param("cache_write_tokens", True, id="cache writes are spend"),
        pytest.param("reasoning_tokens", True, id="reasoning tokens are spend"),
        pytest.param("api_calls", True, id="an API call is spend"),
        pytest.param("cost_usd", True, id="a cost is spend"),
        pytest.param("messages", False, id="a message alone is no spend"),
        pytest.param("tool_calls", False, id="a tool call alone is no spend"),
    ],
)
def test_what_counts_as_spend(figure: str, spends: bool) -> None:
    """Spend is activity the rule dates the chat by; a copied message count is not."""
    assert Counters(**{figure: 1}).spends() is spends
    assert not Counters().spends()


# ------------------------------------------------------------------ Version


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        pytest.param(Version(100.0, 900.0), Version(200.0, 150.0), id="a later change wins whenever it was observed"),
        pytest.param(Version(100.0, 100.0), Version(100.0, 101.0), id="of one change time the later observation wins"),
        pytest.param(Version(0.0, 900.0), Version(1.0, 1.0), id="an unknown change time never outranks a real one"),
    ],
)
def test_versions_order_states_by_the_chats_clock_then_by_observation(older: Version, newer: Version) -> None:
    """An older state must never overwrite a newer one, in any process."""
    assert older < newer and not newer < older


# ------------------------------------------------------------------ digests


def test_desired_built_by_position_or_by_name_is_the_same_value() -> None:
    """The writer builds Desireds positionally for speed; any other caller by name: both must digest alike."""
    named = chat()
    positional = Desired.of(*named[:-1])
    assert positional == named
    assert named.digest == named.state_digest() != ""


def test_the_digest_names_the_state_not_its_version() -> None:
    """A save that changed nothing (the same state seen again later) must be recognised as unchanged."""
    assert chat(version=Version(NOW - 10, NOW - 5)).digest == chat(version=Version(NOW, NOW)).digest


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("model", "other/model", id="another model is another state"),
        pytest.param("billing_provider", "anthropic", id="another provider is another state"),
        pytest.param("title", "Renamed", id="a rename is another state"),
        pytest.param("input_tokens", 1201, id="one more input token is another state"),
        pytest.param("output_tokens", 51, id="one more output token is another state"),
        pytest.param("cache_read_tokens", None, id="a cache count no longer known is another state"),
        pytest.param("reasoning_tokens", 0, id="reasoning tokens now known as 0 is another state"),
        pytest.param("estimated_cost_usd", 0.02, id="another cost is another state"),
        pytest.param("message_count", 5, id="one more message is another state"),
        pytest.param("tool_call_count", 2, id="one more tool call is another state"),
        pytest.param("api_call_count", 3, id="one more API call is another state"),
        pytest.param("created_at", NOW - 7200, id="another creation time is another state"),
        pytest.param("last_active_at", NOW - 1, id="later activity is another state"),
    ],
)
def test_each_state_field_changes_the_digest(field: str, value: Any) -> None:
    """A change the digest missed would be taken for "unchanged" and never written."""
    assert chat(**{field: value}).digest != chat().digest


_TEXT = st.text(max_size=20)
_FLOAT = st.floats(allow_nan=False)


@given(
    st.tuples(
        st.one_of(st.none(), _TEXT),
        st.one_of(st.none(), _TEXT),
        st.integers(),
        st.integers(),
        st.one_of(st.none(), st.integers()),
        st.one_of(st.none(), _FLOAT),
        st.integers(),
    )
)
def test_equal_states_have_equal_digests_whichever_objects_hold_them(values: tuple[Any, ...]) -> None:
    """The same chat read in two processes (or a file and a live save) must digest alike."""
    name, provider, tokens, messages, calls, cost, created = values
    # One object for two fields here, and fresh objects of equal value there: only values may count.
    fields = dict(
        model=name,
        billing_provider=provider,
        title=name,
        input_tokens=tokens,
        message_count=messages,
        api_call_count=calls,
        estimated_cost_usd=cost,
        created_at=created,
    )
    copies = {k: fresh(v) for k, v in fields.items()}
    first = Desired.of("chat1", Version(NOW, NOW), **fields)
    assert Desired.of("chat1", Version(NOW + 1, NOW + 2), **copies).digest == first.digest


def fresh(value: Any) -> Any:
    """An equal value in a new object where Python would otherwise share one."""
    if type(value) is str:
        return ("#" + value)[1:]
    if type(value) is int:
        return int(str(value))
    return value


class Title(str):
    """An adapter's own type for a value (marshal cannot encode it)."""


def test_a_value_of_an_adapters_own_type_still_digests_by_its_value() -> None:
    """An adapter may hand over its own str subclass: that must neither fail nor make every save a new state."""
    assert chat(title=Title("A chat")).digest == chat(title=Title("A chat")).digest
    assert chat(title=Title("A chat")).digest != chat(title=Title("Renamed")).digest


def earlier_release_digest(desired: Desired) -> str:
    """The digest an earlier release recorded: blake2b (10 bytes) of the repr of the state fields, bare hex."""
    state = (
        desired.model,
        desired.billing_provider,
        desired.title,
        desired.input_tokens,
        desired.output_tokens,
        desired.cache_read_tokens,
        desired.cache_write_tokens,
        desired.reasoning_tokens,
        desired.estimated_cost_usd,
        desired.message_count,
        desired.tool_call_count,
        desired.api_call_count,
        desired.created_at,
        desired.last_active_at,
    )
    return hashlib.blake2b(repr(state).encode("utf-8"), digest_size=10).hexdigest()


@pytest.mark.parametrize(
    ("recorded", "same"),
    [
        pytest.param(lambda d: None, False, id="no recorded digest names no state"),
        pytest.param(lambda d: d.digest, True, id="the state's own digest names it"),
        pytest.param(lambda d: chat(title="Other").digest, False, id="another state's digest does not"),
        pytest.param(earlier_release_digest, True, id="an earlier release's digest of the state names it"),
        pytest.param(
            lambda d: earlier_release_digest(chat(title="Other")), False, id="an earlier release's digest of another"
        ),
    ],
)
def test_same_state(recorded: Any, same: bool) -> None:
    """Records an earlier release wrote must still match: else every chat would be rewritten after an upgrade."""
    desired = chat()
    assert same_state(recorded(desired), desired) is same


# ------------------------------------------------------------------ Record


@pytest.mark.parametrize(
    ("record", "growth_total", "applied", "title_memory"),
    [
        pytest.param(Record(), None, Ledger(), None, id="a fresh record has seen nothing and wrote no title"),
        pytest.param(
            Record(seen=Counters(prompt_tokens=5), ledger=Ledger(api_calls=2)),
            Counters(prompt_tokens=5),
            Ledger(api_calls=2),
            None,
            id="without a separate growth the figures seen are the growth and the whole ledger is applied",
        ),
        pytest.param(
            Record(
                seen=Counters(prompt_tokens=5),
                grown=Counters(prompt_tokens=9),
                ledger=Ledger(api_calls=2),
                ledger_applied=Ledger(api_calls=1),
            ),
            Counters(prompt_tokens=9),
            Ledger(api_calls=1),
            None,
            id="a recorded growth and applied ledger are taken as recorded",
        ),
        pytest.param(
            Record(title_base="Plan", title_written="Plan (WebUI)"),
            None,
            Ledger(),
            ("Plan", "Plan (WebUI)"),
            id="a title written is remembered with the title it came from",
        ),
        pytest.param(Record(title_base="Plan"), None, Ledger(), None, id="a base without a written title is no memory"),
    ],
)
def test_what_a_record_says(
    record: Record, growth_total: Counters | None, applied: Ledger, title_memory: tuple[str, str] | None
) -> None:
    assert (record.growth_total, record.applied, record.title_memory) == (growth_total, applied, title_memory)


# ------------------------------------------------------ against hermes' schema


def test_the_row_and_the_owned_columns_are_columns_of_hermes_sessions_table(tmp_path: Path) -> None:
    """Row mirrors hermes' sessions row and OWNED_COLUMNS are inserted by name: each must exist in the real table."""
    path = tmp_path / "state.db"
    create_state_db(path)
    conn = sqlite3.connect(path)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
    finally:
        conn.close()
    assert set(OWNED_COLUMNS) <= columns
    assert set(Row._fields[: Row._fields.index("agent_marks")]) <= columns
