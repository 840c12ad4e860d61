"""The keyset codec (handles.keyset): any key it encodes decodes to the same values, and anything else
(garbled, tampered, foreign cursors) is refused with InvalidCursor, never handed to the database."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handles.keyset import InvalidCursor, Keyset
from handles.models import Handle
from tests.factories import HandleFactory, PrefixFactory

BY_HANDLE = Keyset.of(Handle, ["prefix_id", "suffix_key"])
BY_CHANGE = Keyset.of(Handle, ["-updated_at", "-pk"])
BY_ID = Keyset.of(Handle, ["pk"])

ids = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# What PostgreSQL stores as text: no NUL, no lone surrogates.
texts = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=255)
moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones())


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_keyset_types_come_from_the_model():
    assert BY_HANDLE.types == (int, str) and BY_CHANGE.types == (datetime, int)
    assert BY_CHANGE.reversed().order == ("updated_at", "pk")


@settings(max_examples=300)
@given(ids, texts)
def test_a_handle_key_round_trips(prefix_id, suffix_key):
    cursor = BY_HANDLE.encode([prefix_id, suffix_key])
    assert cursor.isascii() and "=" not in cursor
    assert BY_HANDLE.decode(cursor) == [prefix_id, suffix_key]


@settings(max_examples=300)
@given(moments, ids)
def test_a_change_key_round_trips_to_the_same_instant(when, pk):
    decoded = BY_CHANGE.decode(BY_CHANGE.encode([when, pk]))
    # Compared in UTC: Python never calls a wall time in a DST fold equal to a time in another zone.
    assert decoded == [when.astimezone(UTC), pk] and decoded[0].tzinfo is not None


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_any_text_is_a_key_or_refused_with_a_reason(cursor):
    for keyset in (BY_HANDLE, BY_CHANGE, BY_ID):
        try:
            values = keyset.decode(cursor)
        except InvalidCursor as exc:
            assert "start again without it" in str(exc)
        else:
            assert len(values) == len(keyset.types)


@pytest.mark.parametrize("cursor", [
    "%%%", "WzFd", "eyJhIjogMX0", "a" * 3000, "====", "é",
    _cursor([1]), _cursor([1, 2]), _cursor([True, "x"]), _cursor([1.5, "x"]), _cursor([2**63, "x"]),
    _cursor([1, "a\x00b"]), _cursor([1, None]), _cursor({"a": 1}),
    _cursor(["2026-02-31T00:00:00+00:00", 1]), _cursor(["yesterday", 1]), _cursor(["2026-01-01T00:00:00", 1]),
])
def test_garbage_and_tampered_cursors_are_refused(cursor):
    keyset = BY_CHANGE if "20" in cursor or "yesterday" in json.dumps(cursor) else BY_HANDLE
    for candidate in (keyset, BY_HANDLE):
        with pytest.raises(InvalidCursor):
            candidate.decode(cursor)


def test_a_cursor_of_another_order_is_refused():
    with pytest.raises(InvalidCursor, match="updated_at is not a datetime"):
        BY_CHANGE.decode(BY_HANDLE.encode([3, "ABC"]))


def test_encoding_refuses_values_of_the_wrong_type():
    with pytest.raises(TypeError):
        BY_HANDLE.encode(["3", "ABC"])
    with pytest.raises(ValueError):
        BY_HANDLE.encode([3])


@pytest.mark.django_db
def test_after_selects_the_rows_past_the_key_in_each_direction():
    prefix = PrefixFactory()
    handles = [HandleFactory(prefix=prefix, suffix=f"k{i}") for i in range(5)]
    middle = handles[2]
    rows = Handle.objects.filter(BY_HANDLE.after(BY_HANDLE.key(middle))).order_by(*BY_HANDLE.order)
    assert [h.suffix for h in rows] == ["k3", "k4"]
    backwards = BY_HANDLE.reversed()
    rows = Handle.objects.filter(backwards.after(BY_HANDLE.key(middle))).order_by(*backwards.order)
    assert [h.suffix for h in rows] == ["k1", "k0"]
    when = datetime(2026, 1, 1, tzinfo=UTC)
    Handle.objects.update(updated_at=when)  # equal first values: the primary key breaks the tie
    cursor = BY_CHANGE.encode([when, middle.pk])
    rows = Handle.objects.filter(BY_CHANGE.after(BY_CHANGE.decode(cursor))).order_by(*BY_CHANGE.order)
    assert [h.suffix for h in rows] == ["k1", "k0"]
