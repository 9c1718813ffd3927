"""Validation of what adapters read: every bad value is refused with its reason, every good cost accepted."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webui_insights.hook.adapter import webui_session_adapter
from webui_insights.snapshot import InvalidSnapshot, UsageSnapshot, build_snapshot, checked


class Session:
    def __init__(self, **values: Any) -> None:
        self.session_id = "abcdefabcdef"
        self.messages: Any = []
        self.__dict__.update(values)


def test_default_adapter_reads_the_webui_fields() -> None:
    session = Session(
        profile="work",
        model="m",
        title="T",
        input_tokens=1,
        output_tokens=2,
        cache_read_tokens=3,
        cache_write_tokens=4,
        estimated_cost=0.5,
        messages=[{}, {}, {}],
        created_at=1_700_000_000.0,
        updated_at=1_700_000_100.0,
        model_provider="openrouter",
    )
    snap = webui_session_adapter(session)
    assert snap[:11] == ("abcdefabcdef", "work", "m", "T", 1, 2, 3, 4, None, 0.5, 3)
    assert (snap.api_call_count, snap.created_at, snap.billing_provider) == (None, 1_700_000_000.0, "openrouter")
    assert (snap.updated_at, snap.last_active_at) == (1_700_000_100.0, 1_700_000_100.0)


def test_a_session_class_without_cache_fields_reports_them_unknown() -> None:
    class Old:
        session_id = "abcdefabcdef"
        input_tokens = 5
        messages: list[Any] = []

    snap = webui_session_adapter(Old())
    assert (snap.cache_read_tokens, snap.cache_write_tokens) == (None, None)


def test_fingerprint_changes_with_usage_title_model_and_messages() -> None:
    session = Session(input_tokens=1, title="a", model="m")
    before = webui_session_adapter.fingerprint(session)
    assert webui_session_adapter.fingerprint(session) == before
    change: dict[str, Any]
    for change in ({"input_tokens": 2}, {"title": "b"}, {"model": "n"}, {"messages": [{}]}, {"estimated_cost": 0.1}):
        changed = Session(**{"input_tokens": 1, "title": "a", "model": "m", **change})
        assert webui_session_adapter.fingerprint(changed) != before, change


@pytest.mark.parametrize(
    "field, value",
    [
        ("input_tokens", -1),
        ("input_tokens", "12"),
        ("input_tokens", True),
        ("input_tokens", 2**63),
        ("input_tokens", math.nan),
        ("input_tokens", 1.5),
        ("output_tokens", math.inf),
        ("cache_read_tokens", [1]),
        ("title", 5),
        ("model", b"bytes"),
        ("model", "m" * 300),
        ("created_at", "yesterday"),
        ("created_at", -5.0),
        ("messages", 7),
    ],
)
def test_bad_values_are_refused_as_bad_value(field: str, value: Any) -> None:
    with pytest.raises(InvalidSnapshot) as raised:
        webui_session_adapter(Session(**{field: value}))
    assert raised.value.reason == "bad_value"


@pytest.mark.parametrize(
    "cost, expected",
    [
        (0.5, 0.5),
        (0, 0.0),
        (3, 3.0),
        (Decimal("0.0123"), 0.0123),
        (Decimal("0"), 0.0),
        ("0.25", 0.25),
        (" 1.5 ", 1.5),
        ("1e-3", 0.001),
        ("7", 7.0),
        (None, None),
    ],
)
def test_int_float_decimal_and_numeric_strings_are_accepted_as_cost(cost: Any, expected: float | None) -> None:
    snap = build_snapshot("abcdefabcdef", estimated_cost_usd=cost)
    assert snap.estimated_cost_usd == expected
    assert snap.estimated_cost_usd is None or type(snap.estimated_cost_usd) is float


def test_a_float_subclass_cost_is_accepted() -> None:
    class Float64(float):  # what numpy.float64 is
        pass

    assert build_snapshot("abcdefabcdef", estimated_cost_usd=Float64(0.75)).estimated_cost_usd == 0.75


@pytest.mark.parametrize(
    "cost",
    [
        math.nan,
        math.inf,
        -math.inf,
        -0.01,
        -1,
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("-2"),
        Decimal("1e400"),
        "nan",
        "inf",
        "-1",
        "cheap",
        "",
        "0x10",
        "1" * 300,
        10**400,  # an int too large for a float
        1e13,
        True,
        [0.1],
        b"0.1",
        Fraction(1, 3),
    ],
    ids=repr,
)
def test_nan_inf_negative_and_non_numeric_costs_are_refused_as_bad_cost(cost: Any) -> None:
    with pytest.raises(InvalidSnapshot) as raised:
        build_snapshot("abcdefabcdef", estimated_cost_usd=cost)
    assert raised.value.reason == "bad_cost"
    assert "estimated_cost_usd must be a finite non-negative number" in str(raised.value)


@given(st.one_of(st.floats(), st.integers(), st.decimals(), st.text(max_size=40), st.booleans(), st.none()))
def test_any_cost_is_either_a_finite_non_negative_float_or_refused_as_bad_cost(cost: Any) -> None:
    try:
        value = build_snapshot("abcdefabcdef", estimated_cost_usd=cost).estimated_cost_usd
    except InvalidSnapshot as exc:
        assert exc.reason == "bad_cost"
    else:  # kept as the number it is (no cost only for no cost), never silently dropped
        if cost is None:
            assert value is None
        else:
            assert type(value) is float and math.isfinite(value) and 0 <= value < 1e12, (cost, value)
            assert value == float(Decimal(cost.strip()) if isinstance(cost, str) else cost), (cost, value)


def test_integral_floats_and_none_counts_are_accepted() -> None:
    snap = build_snapshot("abcdefabcdef", input_tokens=12.0, output_tokens=None)
    assert (snap.input_tokens, snap.output_tokens) == (12, 0)
    assert type(snap.input_tokens) is int


@pytest.mark.parametrize("session_id", [None, 5, "", "../etc", "a/b", "a b", "x" * 129, b"abc", "é"])
def test_bad_session_ids_are_refused(session_id: Any) -> None:
    with pytest.raises(InvalidSnapshot) as raised:
        build_snapshot(session_id)
    assert raised.value.reason == "invalid_session_id"


@pytest.mark.parametrize("profile", ["../x", "work\n", "/tmp/x", "Work", "a" * 65, 3, "-x"])
def test_bad_profiles_are_refused(profile: Any) -> None:
    with pytest.raises(InvalidSnapshot) as raised:
        build_snapshot("abcdefabcdef", profile=profile)
    assert raised.value.reason == "invalid_profile"


@pytest.mark.parametrize("profile, expected", [(None, None), ("", None), ("default", None), ("work", "work")])
def test_the_default_profile_has_one_name(profile: Any, expected: str | None) -> None:
    assert build_snapshot("abcdefabcdef", profile=profile).profile == expected


def test_error_messages_never_carry_the_value_of_a_text_field() -> None:
    with pytest.raises(InvalidSnapshot) as raised:
        build_snapshot("abcdefabcdef", profile="../secret-place")
    assert "secret" not in str(raised.value)
    with pytest.raises(InvalidSnapshot) as raised:
        build_snapshot("abcdefabcdef", estimated_cost_usd="secret-cost")
    assert "secret" not in str(raised.value)


def test_a_wrong_version_is_noted_not_refused() -> None:
    assert build_snapshot("abcdefabcdef", updated_at="soon").notes == ("version_invalid",)
    assert build_snapshot("abcdefabcdef").notes == ("version_missing",)
    assert build_snapshot("abcdefabcdef", updated_at=5.0).notes == ()


def test_custom_adapter_output_is_checked() -> None:
    assert checked(UsageSnapshot("abcdefabcdef", input_tokens=3.0)).input_tokens == 3  # type: ignore[arg-type]
    assert checked(UsageSnapshot("abcdefabcdef", estimated_cost_usd=Decimal("0.5"))).estimated_cost_usd == 0.5  # type: ignore[arg-type]
    with pytest.raises(InvalidSnapshot):
        checked({"session_id": "abcdefabcdef"})
    with pytest.raises(InvalidSnapshot) as raised:
        checked(UsageSnapshot("abcdefabcdef", estimated_cost_usd=math.nan))
    assert raised.value.reason == "bad_cost"


def test_blank_means_no_message_and_no_usage_whatever_the_title() -> None:
    assert UsageSnapshot("abcdefabcdef", title="Untitled").is_blank
    assert UsageSnapshot("abcdefabcdef").is_blank
    assert UsageSnapshot("abcdefabcdef", title="Provisional title").is_blank
    assert not UsageSnapshot("abcdefabcdef", message_count=1).is_blank
    assert not UsageSnapshot("abcdefabcdef", cache_read_tokens=1).is_blank
