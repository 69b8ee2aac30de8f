"""``multidb.tallies``: request counts kept without a lock."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

from multidb import tallies
from tests.conftest import tally

REPLICA = ("outcome", "replica")
PINNED = ("outcome", "primary_pinned_time")
CACHED = ("token_check", "cached")
QUERIES = ("position_queries", "")


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch every microsecond: a read-modify-write shared by two
    threads would lose counts."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def in_threads(count: int, target) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.usefixtures("fast_switching")
def test_threads_counting_at_once_lose_no_count():
    before = tallies.totals()
    start = threading.Barrier(8)

    def count() -> None:
        start.wait()
        for n in range(5000):
            if n % 2:
                tally("replica", "cached", 0)
            else:
                tally("primary_pinned_time", None, 1)

    in_threads(8, count)

    after = tallies.totals()
    after.subtract(before)
    assert after[REPLICA] == after[PINNED] == after[CACHED] == 20000
    assert after[QUERIES] == 20000


def test_each_count_adds_its_outcome_token_check_and_position_queries():
    before = tallies.totals()

    tally("replica", None, 0)
    tally("replica", "queried", 2)
    tally("primary_token_waiting", "behind", 1)

    after = tallies.totals()
    after.subtract(before)
    assert +after == {
        REPLICA: 2,
        ("outcome", "primary_token_waiting"): 1,
        ("token_check", "queried"): 1,
        ("token_check", "behind"): 1,
        QUERIES: 3,
    }


def test_an_ended_threads_counts_are_kept():
    before = tallies.totals()

    for _ in range(30):  # a server starting a thread per request
        in_threads(1, lambda: tally("replica", None, 0))

    assert tallies.totals()[REPLICA] - before[REPLICA] == 30


@pytest.mark.usefixtures("fast_switching")
def test_totals_read_while_threads_count_only_grow():
    done = threading.Event()
    seen: list[int] = []

    def count() -> None:
        for n in range(3000):
            tally("replica" if n % 2 else "primary_forced", None, n % 3)
        done.set()

    thread = threading.Thread(target=count)
    thread.start()
    try:
        while not done.is_set():
            seen.append(sum(tallies.totals().values()))
    finally:
        thread.join()

    assert seen == sorted(seen)


def test_counting_is_on_while_one_start_is_not_stopped():
    base = tallies.counting
    tallies.start()
    tallies.start()
    tallies.stop()
    assert tallies.counting == base + 1

    tallies.stop()
    assert tallies.counting == base


def test_a_stop_too_many_leaves_counting_off():
    base = tallies.counting
    for _ in range(base + 1):
        tallies.stop()
    try:
        assert tallies.counting == 0
    finally:
        for _ in range(base):
            tallies.start()
