"""Validation of what adapters read: every bad value is refused with its reason."""

from __future__ import annotations

import math
from typing import Any

import pytest

from webui_insights.snapshot import InvalidSnapshot, UsageSnapshot, build_snapshot, checked, webui_session_adapter


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
        model_provider="openrouter",
    )
    snap = webui_session_adapter(session)
    assert snap is not None
    assert snap[:11] == ("abcdefabcdef", "work", "m", "T", 1, 2, 3, 4, 0, 0.5, 3)
    assert (snap.api_call_count, snap.created_at, snap.billing_provider) == (None, 1_700_000_000.0, "openrouter")
    assert snap.seq > 0


def test_fingerprint_changes_with_usage_title_model_and_messages() -> None:
    session = Session(input_tokens=1, title="a", model="m")
    before = webui_session_adapter.fingerprint(session)
    assert webui_session_adapter.fingerprint(session) == before
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
        ("estimated_cost", math.nan),
        ("estimated_cost", -0.01),
        ("estimated_cost", "0.1"),
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


def test_error_messages_never_carry_the_value_of_a_text_field() -> None:
    with pytest.raises(InvalidSnapshot) as raised:
        build_snapshot("abcdefabcdef", profile="../secret-place")
    assert "secret" not in str(raised.value)


def test_custom_adapter_output_is_checked() -> None:
    assert checked(UsageSnapshot("abcdefabcdef", input_tokens=3.0)).input_tokens == 3  # type: ignore[arg-type]
    with pytest.raises(InvalidSnapshot):
        checked({"session_id": "abcdefabcdef"})  # type: ignore[arg-type]


def test_blank_means_no_usage_and_no_real_title() -> None:
    assert UsageSnapshot("abcdefabcdef", title="Untitled").is_blank
    assert UsageSnapshot("abcdefabcdef").is_blank
    assert not UsageSnapshot("abcdefabcdef", title="Named").is_blank
    assert not UsageSnapshot("abcdefabcdef", cache_read_tokens=1).is_blank
