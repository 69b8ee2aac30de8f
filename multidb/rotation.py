"""The replica set: which replicas take reads, and in what order.

The rotation is a smooth weighted round-robin over ``REPLICA_DATABASES``,
built once and rebuilt only when the setting changes or a replica is taken
out of (or put back into) rotation.  Picking the next replica is one
``next()`` on a precomputed cycle, so it is cheap enough for every query.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import threading
import warnings
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from . import groups
from .conf import DEFAULT_DB_ALIAS

#: Above this many slots, a rotation is too long to precompute.
MAX_ROTATION_LENGTH = 10_000


def smooth_sequence(weights: dict[str, int]) -> list[str]:
    """One period of smooth weighted round-robin, as nginx does it.

    ``{"a": 5, "b": 1, "c": 1}`` gives ``a a b a c a a``: heavy replicas are
    interleaved with light ones instead of being picked in bursts.
    """
    weights = {alias: w for alias, w in weights.items() if w > 0}
    if not weights:
        return []
    divisor = math.gcd(*weights.values())
    weights = {alias: w // divisor for alias, w in weights.items()}
    total = sum(weights.values())
    if total > MAX_ROTATION_LENGTH:
        raise ValueError(
            f"REPLICA_DATABASES weights add up to {total} slots after reduction; "
            f"keep them under {MAX_ROTATION_LENGTH} (for example, use percentages)."
        )
    current = dict.fromkeys(weights, 0)
    sequence = []
    for _ in range(total):
        for alias, weight in weights.items():
            current[alias] += weight
        chosen = max(current, key=current.__getitem__)
        current[chosen] -= total
        sequence.append(chosen)
    return sequence


class Rotation:
    """A snapshot of the replicas in rotation; replaced, never changed.

    ``current`` is cleared when a newer rotation replaces this one, which
    tells holders of this snapshot to look again.
    """

    __slots__ = ("weights", "usable", "next", "current", "primary")

    def __init__(
        self,
        weights: dict[str, int],
        excluded: Iterable[str] = (),
        primary: str = DEFAULT_DB_ALIAS,
    ) -> None:
        self.weights = weights
        #: The primary of this group of replicas.
        self.primary = primary
        excluded = frozenset(excluded)
        sequence = smooth_sequence(
            {alias: w for alias, w in weights.items() if alias not in excluded}
        )
        #: The aliases that can take reads now.
        self.usable: frozenset[str] = frozenset(sequence)
        self.current = True
        if sequence:
            # Start each process at a random point so that a fleet of fresh
            # workers does not send its first reads to the same replica.
            offset = _random.randrange(len(sequence))
            sequence = sequence[offset:] + sequence[:offset]
            self.next: Callable[[], str] = itertools.cycle(sequence).__next__
        elif any(weights.values()):
            # Replicas are configured, but none is usable now.
            self.next = partial(_none_usable, primary)
        else:
            self.next = itertools.repeat(primary).__next__


#: Where a read of a group goes when it has replicas but none is usable,
#: given the group's primary: the primary itself (``str`` of an alias), until
#: ``multidb.routers`` installs its policy (``MULTIDB_NO_REPLICA``) here.
when_none_usable: Callable[[str], str] = str


def _none_usable(primary: str) -> str:
    return when_none_usable(primary)


_lock = threading.Lock()
_rotation: Rotation | None = None
#: Not the application's ``random``: drawing from it would change the state
#: that the application (or Hypothesis, in its tests) relies on.
_random = random.Random()
_excluded: frozenset[str] = frozenset()


def configured() -> dict[str, int]:
    """The ``default`` group's replicas as ``{alias: weight}`` (from
    ``REPLICA_DATABASES``); empty when unset."""
    return groups.replicas_of(DEFAULT_DB_ALIAS)


def rotation() -> Rotation:
    """The current rotation, built on first use."""
    return _rotation or _rebuild()


def _first_replica() -> str:
    return _rebuild().next()


#: The next replica alias in rotation, or ``default`` when none can read.
#: Rebound to the rotation's own iterator on every rebuild, so that a call
#: costs one C-level ``next()``: always call it as ``rotation.next_replica()``.
next_replica: Callable[[], str] = _first_replica


def _rebuild() -> Rotation:
    global _rotation, next_replica
    with _lock:
        weights = configured()
        if not any(weights.values()):
            warnings.warn(
                "[multidb] No replica databases are configured! "
                "You can configure them with the REPLICA_DATABASES setting.",
                UserWarning,
                stacklevel=4,
            )
        built = _rotation = Rotation(weights, _excluded)
        next_replica = built.next
    # Rebuilding is rare (first use, settings, health changes): a cheap
    # place to make sure the health prober runs.
    for hook in on_rebuild:
        hook()
    return built


#: Called after every rebuild; ``multidb.health`` adds the start of its
#: prober (the rotation is below health: it must not import it).
on_rebuild: list[Callable[[], None]] = []


def _invalidate() -> None:
    global _rotation, next_replica
    if _rotation is not None:
        _rotation.current = False
    _rotation = None
    next_replica = _first_replica
    for built in _group_rotations.values():
        built.current = False
    _group_rotations.clear()


# --- the other groups' rotations (``MULTIDB_REPLICA_GROUPS``) ----------------

#: ``{primary: rotation}`` for every primary but ``default``, built on use.
_group_rotations: dict[str, Rotation] = {}


def group_rotation(primary: str) -> Rotation:
    """The current rotation of another primary's replicas than ``default``'s,
    built on first use."""
    try:
        return _group_rotations[primary]
    except KeyError:
        pass
    with _lock:
        built = _group_rotations[primary] = Rotation(
            groups.replicas_of(primary), _excluded, primary
        )
    for hook in on_rebuild:
        hook()
    return built


def exclude(aliases: Iterable[str]) -> None:
    """Take ``aliases`` out of rotation (and put every other one back)."""
    global _excluded
    aliases = frozenset(aliases)
    # Under the lock, so that a rebuild running meanwhile cannot install a
    # rotation that still holds an excluded replica.
    with _lock:
        if aliases != _excluded:
            _excluded = aliases
            _invalidate()


def after_fork() -> None:
    """In a forked child: a fresh lock, and a rotation rebuilt on next use."""
    global _lock
    _lock = threading.Lock()
    # Forked workers would otherwise all start the rotation at one replica.
    _random.seed()
    _invalidate()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=after_fork)


class Sticky:
    """Holds the replica one request (or one ``use_replica`` block) reads from.

    ``alias`` is valid while ``rotation.current`` is true; the router reads
    both directly on its fast path.
    """

    __slots__ = ("alias", "rotation")

    def __init__(self) -> None:
        self.alias = DEFAULT_DB_ALIAS
        self.rotation = STALE

    def pick(self) -> str:
        """This holder's replica, chosen on first use and kept while usable."""
        current = _rotation or _rebuild()
        if self.alias not in current.usable:
            self.alias = current.next()
        self.rotation = current
        return self.alias


class GroupSticky(Sticky):
    """A ``Sticky`` over the replicas of another primary than ``default``."""

    __slots__ = ("primary",)

    def __init__(self, primary: str) -> None:
        super().__init__()
        self.primary = primary
        self.alias = primary

    def pick(self) -> str:
        current = self.rotation
        if not current.current:
            current = group_rotation(self.primary)
        if self.alias not in current.usable:
            self.alias = current.next()
        self.rotation = current
        return self.alias


#: The rotation of a holder that has not picked yet: never current.
STALE = Rotation({})
STALE.current = False


@receiver(setting_changed)
def _reset_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    if setting in groups.GROUP_SETTINGS:
        with _lock:
            _invalidate()
