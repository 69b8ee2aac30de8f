"""``multidb.tallies``: request counts kept per thread without a lock."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

from multidb import tallies

KEY = ("replica", None, 0, "default")
OTHER = ("primary_pinned_time", None, 1, "default")


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
            tallies.add(KEY if n % 2 else OTHER)

    in_threads(8, count)

    after = tallies.totals()
    assert after[KEY] - before[KEY] == 20000
    assert after[OTHER] - before[OTHER] == 20000


def test_an_ended_threads_counts_are_kept_and_its_dict_is_let_go():
    before = tallies.totals()
    live = len(tallies._live)

    for _ in range(30):  # a server starting a thread per request
        in_threads(1, lambda: tallies.add(KEY))

    assert tallies.totals()[KEY] - before[KEY] == 30
    assert len(tallies._live) == live


@pytest.mark.usefixtures("fast_switching")
def test_totals_read_while_threads_add_new_keys():
    done = threading.Event()
    seen: list[int] = []

    def add() -> None:
        for n in range(3000):
            tallies.add(("replica", None, n, "default"))
        done.set()

    thread = threading.Thread(target=add)
    thread.start()
    while not done.is_set():
        seen.append(sum(tallies.totals().values()))
    thread.join()

    assert seen == sorted(seen)  # counts only grow


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
