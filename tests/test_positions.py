"""Write positions: PostgreSQL LSN text to integers and back, and the adapter
each vendor gets.  What a real server reports is checked in
tests/postgres/test_health.py."""

from __future__ import annotations

import pytest
from django.db import connections
from hypothesis import given
from hypothesis import strategies as st

from multidb.positions import (
    PostgreSQL,
    ReachabilityOnly,
    ReplicaState,
    adapter,
    format_lsn,
    parse_lsn,
    record_end,
)


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("0/0", 0),
        ("0/3000148", 0x3000148),
        ("16/B374D848", 0x16_B374D848),
        ("16/b374d848", 0x16_B374D848),
        ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
        ("1/0", 2**32),
    ],
)
def test_parse_lsn_reads_the_high_and_low_halves_as_one_64_bit_number(text, position):
    assert parse_lsn(text) == position


@pytest.mark.parametrize(
    ("position", "text"),
    [(0, "0/0"), (0x3000148, "0/3000148"), (0x16_B374D848, "16/B374D848")],
)
def test_format_lsn_writes_postgresqls_own_spelling(position, text):
    assert format_lsn(position) == text


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_format_then_parse_gives_the_position_back(position):
    assert parse_lsn(format_lsn(position)) == position


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(0, 2**64 - 1))
def test_parsed_lsns_order_as_the_positions_do(a, b):
    assert (parse_lsn(format_lsn(a)) < parse_lsn(format_lsn(b))) == (a < b)


@pytest.mark.parametrize(
    "text",
    [
        *("", "0", "16B374D848", "/0", "0/", "1/2/3", "123456789/0", "0/123456789"),
        # int(..., 16) alone would take these:
        *("G/0", "0/-1", "+1/0", " 1/0", "1/0\n", "0x1/0", "1_0/0", "１/0"),
    ],
)
def test_parse_lsn_rejects_what_is_not_an_lsn(text):
    with pytest.raises(ValueError):
        parse_lsn(text)


def test_parse_lsn_names_the_bad_text():
    with pytest.raises(ValueError, match=r"^not a PostgreSQL LSN: '16B374D848'$"):
        parse_lsn("16B374D848")


def test_postgresql_gets_positions_and_other_vendors_reachability_only():
    assert isinstance(adapter("postgresql"), PostgreSQL)
    assert adapter("postgresql").has_positions is True
    for vendor in ("sqlite", "mysql", "oracle", "microsoft"):
        assert isinstance(adapter(vendor), ReachabilityOnly)
        assert adapter(vendor).has_positions is False


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_reachability_only_runs_a_query_and_reports_no_position():
    reachability = adapter("sqlite")

    with connections["default"].cursor() as cursor:
        position = reachability.primary_position(cursor)
    with connections["replica1"].cursor() as cursor:
        state = reachability.replica_state(cursor)

    assert position is None
    assert state == ReplicaState(is_replica=True, replay_position=None)


@pytest.mark.parametrize(
    ("insert", "segment_offset", "end"),
    [
        (0x3000148, 0x148, 0x3000148),  # inside a page
        (0x3002018, 0x2018, 0x3002000),  # just past a page header
        (0x3000028, 0x28, 0x3000000),  # just past a segment's long header
        (0x3002028, 0x2028, 0x3002028),  # 40 bytes into a page: a record ended there
        (0x3002020, 0x2020, 0x3002020),
    ],
)
def test_a_token_at_a_page_start_is_the_end_of_the_record_before_the_header(
    insert, segment_offset, end
):
    assert record_end(insert, segment_offset) == end
