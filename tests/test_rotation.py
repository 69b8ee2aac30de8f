import copy
import random
import threading
from collections import Counter
from itertools import pairwise

import pytest
from django.conf import settings
from django.test import override_settings

from multidb import PinningReplicaRouter, ReplicaRouter, rotation, use_replica
from multidb.conf import replica_weights
from multidb.rotation import MAX_ROTATION_LENGTH, Rotation, Sticky, smooth_sequence


def reads(count, router=None):
    router = router or PinningReplicaRouter()
    return [router.db_for_read(None) for _ in range(count)]


def windows(sequence, size):
    """Every cyclic window of ``size`` consecutive items of ``sequence``."""
    doubled = sequence + sequence
    return [doubled[start : start + size] for start in range(len(sequence))]


# --- smooth_sequence ---------------------------------------------------------


def test_smooth_sequence_interleaves_light_replicas_with_the_heavy_one():
    assert smooth_sequence({"a": 5, "b": 1, "c": 1}) == list("aabacaa")


def test_smooth_sequence_period_has_each_alias_as_often_as_its_weight():
    sequence = smooth_sequence({"a": 5, "b": 1, "c": 1})
    assert Counter(sequence) == {"a": 5, "b": 1, "c": 1}


def test_smooth_sequence_never_puts_two_light_replicas_side_by_side():
    sequence = smooth_sequence({"a": 5, "b": 1, "c": 1})
    assert all("a" in pair for pair in windows(sequence, 2)), sequence


def test_smooth_sequence_reduces_weights_by_their_gcd():
    assert smooth_sequence({"a": 20, "b": 10}) == smooth_sequence({"a": 2, "b": 1})
    assert len(smooth_sequence({"a": 20, "b": 10})) == 3


def test_smooth_sequence_leaves_out_zero_weights():
    assert smooth_sequence({"a": 0, "b": 3}) == ["b"]


@pytest.mark.parametrize("weights", [{}, {"a": 0, "b": 0}])
def test_smooth_sequence_is_empty_without_positive_weights(weights):
    assert smooth_sequence(weights) == []


def test_smooth_sequence_two_to_one_reads_a_b_a():
    assert smooth_sequence({"a": 2, "b": 1}) == ["a", "b", "a"]


def test_smooth_sequence_equal_weights_alternate():
    assert smooth_sequence({"a": 1, "b": 1}) == ["a", "b"]


def test_smooth_sequence_accepts_exactly_the_maximum_length():
    sequence = smooth_sequence({"a": MAX_ROTATION_LENGTH - 1, "b": 1})
    assert len(sequence) == MAX_ROTATION_LENGTH


def test_smooth_sequence_rejects_weights_that_need_too_many_slots():
    with pytest.raises(ValueError, match="10001 slots"):
        smooth_sequence({"a": MAX_ROTATION_LENGTH, "b": 1})


# --- replica_weights ---------------------------------------------------------


def test_replica_weights_gives_each_listed_alias_weight_one():
    assert replica_weights(["replica1", "replica2"]) == {"replica1": 1, "replica2": 1}
    assert replica_weights(("replica1",)) == {"replica1": 1}


def test_replica_weights_keeps_dict_weights_in_order():
    weights = replica_weights({"replica2": 3, "replica1": 0})
    assert list(weights.items()) == [("replica2", 3), ("replica1", 0)]


def test_replica_weights_counts_a_duplicated_alias_twice():
    assert replica_weights(["replica1", "replica2", "replica1"]) == {
        "replica1": 2,
        "replica2": 1,
    }


def test_replica_weights_accepts_any_iterable_of_aliases_as_0_11_did():
    assert replica_weights({"replica1"}) == {"replica1": 1}
    assert replica_weights(alias for alias in ["replica1", "replica2"]) == {
        "replica1": 1,
        "replica2": 1,
    }


def test_replica_weights_of_none_is_empty():
    assert replica_weights(None) == {}


@pytest.mark.parametrize("raw", ["replica1", b"replica1", 5, object()])
def test_replica_weights_rejects_a_value_that_is_not_a_list_or_dict(raw):
    with pytest.raises(TypeError, match="must be a list of database aliases"):
        replica_weights(raw)


@pytest.mark.parametrize("raw", [[1], {None: 1}, [("replica1", 1)]])
def test_replica_weights_rejects_an_alias_that_is_not_a_string(raw):
    with pytest.raises(TypeError, match="is not a string"):
        replica_weights(raw)


@pytest.mark.parametrize("weight", [-1, True, False, 1.0, 0.5, "1", None])
def test_replica_weights_rejects_a_weight_that_is_not_a_non_negative_int(weight):
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        replica_weights({"replica1": weight})


# --- the rotation ------------------------------------------------------------


def test_reads_round_robin_over_equally_weighted_replicas():
    picked = reads(10)
    assert Counter(picked) == {"replica1": 5, "replica2": 5}
    assert all(a != b for a, b in pairwise(picked))


@override_settings(REPLICA_DATABASES={"replica1": 3, "replica2": 1})
def test_dict_replica_databases_gives_weighted_round_robin():
    picked = reads(400)
    assert Counter(picked) == {"replica1": 300, "replica2": 100}
    for period in windows(picked[:4], 4):
        assert Counter(period) == {"replica1": 3, "replica2": 1}
    assert picked[4:] == picked[:4] * 99


@override_settings(REPLICA_DATABASES={"replica1": 1, "replica2": 0})
def test_weight_zero_takes_replica_out_of_rotation():
    assert set(reads(20)) == {"replica1"}


@override_settings(REPLICA_DATABASES={"replica1": 1, "replica2": 0})
def test_weight_zero_replica_stays_usable_with_use_replica():
    with use_replica("replica2"):
        assert set(reads(3)) == {"replica2"}
    assert set(reads(3)) == {"replica1"}


@override_settings(REPLICA_DATABASES=["replica1", "replica2", "replica1"])
def test_list_with_duplicated_alias_sends_it_twice_the_reads():
    assert Counter(reads(300)) == {"replica1": 200, "replica2": 100}


@override_settings(REPLICA_DATABASES=("replica2",))
def test_tuple_replica_databases_is_accepted():
    assert set(reads(5)) == {"replica2"}


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (0, ["replica1", "replica2", "replica1"]),
        (1, ["replica2", "replica1", "replica2"]),
    ],
)
def test_rotation_starts_at_a_random_point(monkeypatch, offset, expected):
    monkeypatch.setattr(rotation._random, "randrange", lambda n: offset)
    assert reads(3) == expected


def test_rotation_is_built_once_and_cached():
    first = rotation.rotation()
    assert rotation.rotation() is first
    assert first.current
    assert first.weights == {"replica1": 1, "replica2": 1}
    assert first.usable == {"replica1", "replica2"}


def test_next_replica_is_rebound_to_the_rotation_iterator():
    rotation.next_replica()
    assert rotation.next_replica is rotation.rotation().next


def test_rotation_is_rebuilt_when_replica_databases_changes():
    before = rotation.rotation()
    assert set(reads(4)) == {"replica1", "replica2"}
    with override_settings(REPLICA_DATABASES=["replica2"]):
        assert not before.current
        assert set(reads(4)) == {"replica2"}
    assert set(reads(4)) == {"replica1", "replica2"}


def test_rotation_is_rebuilt_when_slave_databases_changes():
    before = rotation.rotation()
    with override_settings(SLAVE_DATABASES=["replica2"]):
        assert not before.current
        assert rotation.rotation() is not before


def test_rotation_survives_unrelated_setting_changes():
    before = rotation.rotation()
    with override_settings(MULTIDB_PINNING_SECONDS=1):
        assert rotation.rotation() is before
    assert before.current


def test_rotation_without_replicas_always_gives_default():
    rotation = Rotation({"replica1": 1}, excluded=["replica1"])
    assert rotation.usable == frozenset()
    assert [rotation.next() for _ in range(3)] == ["default"] * 3


def test_routing_never_mutates_settings_databases():
    """0.11 wrote ``TEST["MIRROR"]`` into each replica's settings at runtime."""
    databases = copy.deepcopy(settings.DATABASES)
    databases["replica1"]["TEST"] = {"NAME": "test_replica1"}
    with override_settings():
        settings.DATABASES = databases
        snapshot = copy.deepcopy(databases)
        reads(5)
        reads(5, ReplicaRouter())
        with use_replica("replica2"):
            reads(2)
        rotation.exclude(["replica1"])
        reads(2)
        assert snapshot == settings.DATABASES


# --- exclude -----------------------------------------------------------------


def test_exclude_takes_replicas_out_of_rotation_and_puts_them_back():
    rotation.exclude(["replica1"])
    assert set(reads(6)) == {"replica2"}
    rotation.exclude([])
    assert set(reads(6)) == {"replica1", "replica2"}


def test_excluding_every_replica_sends_reads_to_default():
    rotation.exclude(["replica1", "replica2"])
    assert set(reads(4)) == {"default"}


def test_exclude_replaces_the_previous_exclusions():
    rotation.exclude(["replica1"])
    rotation.exclude(["replica2"])
    assert set(reads(4)) == {"replica1"}


def test_exclude_invalidates_the_current_rotation():
    before = rotation.rotation()
    rotation.exclude(["replica2"])
    assert not before.current
    assert rotation.rotation().usable == {"replica1"}


def test_excluding_the_same_aliases_again_keeps_the_rotation():
    rotation.exclude(["replica2"])
    before = rotation.rotation()
    rotation.exclude(("replica2",))
    assert rotation.rotation() is before
    assert before.current


def test_exclude_during_a_concurrent_rebuild_is_not_lost(monkeypatch):
    build_sequence = rotation.smooth_sequence
    excluder = threading.Thread(target=rotation.exclude, args=(["replica1"],))

    def sequence_while_another_thread_excludes(weights):
        sequence = build_sequence(weights)
        if not excluder.is_alive() and excluder.ident is None:
            excluder.start()
            excluder.join(timeout=0.5)
        return sequence

    monkeypatch.setattr(
        rotation, "smooth_sequence", sequence_while_another_thread_excludes
    )
    rotation.rotation()
    excluder.join()
    monkeypatch.undo()
    assert "replica1" not in rotation.rotation().usable


# --- Sticky ------------------------------------------------------------------


def test_sticky_starts_stale_and_picks_a_replica_on_first_use():
    sticky = Sticky()
    assert not sticky.rotation.current
    alias = sticky.pick()
    assert alias in {"replica1", "replica2"}
    assert sticky.alias == alias
    assert sticky.rotation is rotation.rotation()


def test_sticky_keeps_its_replica_while_usable():
    sticky = Sticky()
    alias = sticky.pick()
    assert {sticky.pick() for _ in range(5)} == {alias}


def test_sticky_repicks_when_its_replica_is_excluded():
    sticky = Sticky()
    alias = sticky.pick()
    other = ({"replica1", "replica2"} - {alias}).pop()
    rotation.exclude([alias])
    assert not sticky.rotation.current
    assert sticky.pick() == other
    rotation.exclude([])
    assert sticky.pick() == other


def test_stickies_spread_over_the_replicas():
    assert {Sticky().pick() for _ in range(4)} == {"replica1", "replica2"}


def test_sticky_gives_default_when_every_replica_is_excluded():
    rotation.exclude(["replica1", "replica2"])
    assert Sticky().pick() == "default"


@override_settings(REPLICA_DATABASES=[])
def test_sticky_without_replicas_warns_and_gives_default():
    with pytest.warns(UserWarning, match="No replica databases are configured"):
        assert Sticky().pick() == "default"


def test_configured_reads_replica_databases_as_weights():
    assert rotation.configured() == {"replica1": 1, "replica2": 1}
    with override_settings(REPLICA_DATABASES={"replica2": 4}):
        assert rotation.configured() == {"replica2": 4}


def test_building_a_rotation_leaves_the_applications_random_state_alone():
    state = random.getstate()
    for _ in range(5):
        rotation._invalidate()
        rotation.rotation()

    assert random.getstate() == state


def test_a_forked_child_draws_its_rotation_start_afresh():
    before = rotation._random.getstate()
    rotation.after_fork()

    assert rotation._random.getstate() != before
