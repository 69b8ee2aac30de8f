"""Why the current context's reads go where they go: ``multidb.explain()``.

It inspects the state ``multidb.routers`` routes by (the blocks and pins of
``multidb.pinning``, the rotation, the positions the health prober has
seen) and changes none of it: it runs no query, picks no replica (the
round-robin does not move), and remembers nothing on the request.  So a
token that no replica is *known* to have replayed counts as waiting, even
where the request's one check (a query the next read may make) would find
a replica that has.

Only ``default``'s group is described, as ``DATABASE_ROUTERS`` reads it for
a model that lives there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from . import health, pinning, rotation, routers
from .conf import DEFAULT_DB_ALIAS, conf
from .pinning import TIME_PIN, RequestState, Scope
from .positions import format_lsn
from .tallies import Outcome, TokenCheck

__all__ = ["Explanation", "Outcome", "TokenCheck", "aexplain", "explain"]


@dataclass(frozen=True)
class Explanation:
    """Where the current context's reads of ``default``'s group go, and why.

    ``outcome`` names the one reason that decides; the fields say everything
    that applies, so that one reason hiding another still shows.
    """

    #: Inside a request (``PinningRouterMiddleware``, or ``read_after``).
    in_request: bool
    #: ``"primary"`` in ``use_primary_db``, ``db_write`` or after
    #: ``pin_this_thread()``; ``"replica"`` in ``use_replica`` (with or
    #: without a bound); else None.
    forced: Literal["primary", "replica"] | None
    #: The replica ``use_replica("alias")`` names (read whatever its state).
    forced_replica: str | None
    #: The staleness bound of a ``use_replica(max_lag=..., max_lag_bytes=...)``
    #: block, as ``(max_lag, max_lag_bytes)``.
    bound: tuple[float | None, int | None] | None
    #: The request's reads go to the primary for the rest of it.
    pinned_by_time: bool
    #: Why: ``"write"`` (the request wrote) or ``"request"`` (it came so: an
    #: unsafe method, a legacy or unverifiable pin cookie, or
    #: ``MULTIDB_PINNING_MODE = "time"``); None when not pinned by time.
    pinned_by: Literal["write", "request"] | None
    #: The position the request's token holds (waited on, or already
    #: proven on a replica), as an int and as PostgreSQL prints an LSN.
    token: int | None
    token_lsn: str | None
    #: The request waits on ``token``: no usable replica is known (or, at the
    #: end of a request, was found) to have replayed it, so reads go to the
    #: primary.  ``this_thread_is_pinned()`` is False meanwhile: no time pin.
    token_waiting: bool
    #: The usable replicas the health prober has already seen past ``token``.
    replicas_past_token: tuple[str, ...]
    #: How the router settled the token so far: ``"cached"`` (a replica the
    #: prober had seen past it), ``"queried"`` (a replica was asked and had
    #: replayed it), ``"behind"`` (none had: the primary); None if not yet.
    token_check: TokenCheck | None
    #: Inside an ``atomic()`` the application opened on the primary.
    in_atomic: bool
    #: Django runs the request's view in ``atomic()`` (``ATOMIC_REQUESTS``).
    #: That block alone sends no read to the primary; one the view opens
    #: itself does (``in_atomic``).
    atomic_requests: bool
    #: Replicas are configured but none is usable (or, in a bounded block,
    #: none is measured within the bound).
    no_replica: bool
    #: What reads do then (``MULTIDB_NO_REPLICA``): ``"error"`` raises
    #: ``multidb.NoReplicaAvailable`` instead of reading the primary.
    no_replica_policy: str
    #: The replica the request (or the ``use_replica`` block) reads from;
    #: None until its first read chooses one.
    replica: str | None
    #: Where the next read goes; None when that is the next replica in
    #: rotation, not chosen yet.
    read_alias: str | None
    #: ``this_thread_is_pinned()``: the 0.11 answer, a time pin or a block.
    thread_pinned: bool

    @property
    def outcome(self) -> Outcome:
        """The reason that decides where reads go, as routing checks them."""
        if self.forced == "primary":
            return "primary_forced"
        if self.forced == "replica" and self.bound is None:
            # A plain use_replica overrides pins and transactions.
            if self.no_replica and self.forced_replica is None:
                return "primary_no_replica"
            return "replica"
        if self.pinned_by_time:
            return "primary_pinned_time"
        if self.in_atomic:
            return "primary_atomic"
        if self.no_replica:
            return "primary_no_replica"
        if self.token_waiting:
            return "primary_token_waiting"
        return "replica"

    def __str__(self) -> str:
        parts = [f"{self.outcome} -> {self.read_alias or 'next replica'}"]
        if self.forced is not None:
            parts.append(f"forced to the {self.forced}")
        if self.pinned_by is not None:
            parts.append(f"pinned by {self.pinned_by}")
        if self.token_lsn is not None:
            past = ", ".join(self.replicas_past_token) or "none"
            state = "waiting on" if self.token_waiting else "token"
            parts.append(f"{state} {self.token_lsn} (replicas past it: {past})")
        if self.token_check is not None:
            parts.append(f"token check: {self.token_check}")
        if self.in_atomic:
            parts.append("in atomic()")
        if self.no_replica:
            parts.append(
                f"no replica usable (MULTIDB_NO_REPLICA={self.no_replica_policy!r})"
            )
        return "; ".join(parts)


def explain() -> Explanation:
    """Where the current context's reads go now, and why; no side effects."""
    return describe(pinning.current_scope())


async def aexplain() -> Explanation:
    """``explain()`` from async code.

    It is computed in place, on the event loop: it runs no query and blocks
    on nothing, and the routing state it reads lives in a context variable
    that the async ORM's worker threads share.  No ``atomic()`` can be open
    on the loop's thread (Django forbids it there), so none is reported.
    """
    return describe(pinning.current_scope())


def at_request_end(state: RequestState) -> Explanation:
    """Where ``state``'s request read, and why, as its middleware ends it.

    A token is waiting if the request checked it and no replica had it (its
    reads went to the primary), whatever the prober has seen since.
    """
    return describe(Scope(request=state), ended=True)


def token_outcome(
    state: RequestState, pinned: int, usable: frozenset[str], replica: str | None
) -> tuple[Outcome, str | None]:
    """The outcome and read alias, at its end, of a request with a position
    token (``pinned``), among the ``usable`` replicas (``replica`` is its
    own): the last of ``at_request_end``'s checks, as
    ``PinningRouterMiddleware`` makes them without building the record."""
    past = _known_past(sorted(usable), pinned)
    if not past or state.checked:
        return "primary_token_waiting", DEFAULT_DB_ALIAS
    return "replica", replica if replica in past else past[0]


def _known_past(aliases: list[str], position: int) -> list[str]:
    """Those of ``aliases`` the prober has seen replay ``position``, in order.

    Its own function: a comprehension over ``position`` in the caller
    would make every call of the caller build closure cells."""
    known = health.registry.replay_positions()
    return [a for a in aliases if known.get(a, -1) >= position]


def _holder_alias(holder: rotation.Sticky | pinning._Fixed) -> str | None:
    """The replica ``holder`` reads from, if it has chosen one (without
    choosing: a pick would move the round-robin)."""
    if isinstance(holder, pinning._Fixed):
        return holder.alias
    if not holder.rotation.current or holder.alias == DEFAULT_DB_ALIAS:
        return None
    return holder.alias


def describe(scope: Scope, ended: bool = False) -> Explanation:
    """The explanation of reads in ``scope`` (see ``explain``)."""
    request = scope.request
    bound = scope.bound
    holder: rotation.Sticky | pinning._Fixed | None = scope.replica
    if bound is not None:
        holder = scope.holder  # type: ignore[attr-defined]
    forced: Literal["primary", "replica"] | None = None
    if scope.primary:
        forced = "primary"
    elif holder is not None:
        forced = "replica"

    pinned_by: Literal["write", "request"] | None = None
    waiting_on: int | None = None
    token: int | None = None
    token_check = None
    if request is not None:
        token_check = request.token_check
        pinned = request.pinned
        token = pinned if type(pinned) is int else request.settled
        if not scope.unpinned:
            if pinned is TIME_PIN:
                pinned_by = "write" if request.wrote else "request"
            if bound is not None:
                # A bounded block holds a settled token to its bound too.
                waiting_on = token
            elif holder is None and type(pinned) is int:
                # (A plain use_replica block reads its replica regardless.)
                waiting_on = pinned

    usable = rotation.rotation().usable
    candidates = sorted(usable)
    no_replica = not usable
    if bound is not None and not no_replica:
        lags = health.registry.lags()
        candidates = sorted(
            (a for a in usable if a in lags and bound.allows(*lags[a])),
            key=lambda a: (routers._lag_key(lags[a]), a),
        )
        measured = conf.HEALTH_CHECK_INTERVAL is not None and health.registry.measured()
        no_replica = not (measured and candidates)
    past = tuple(_known_past(candidates, token)) if token is not None else ()
    waiting = waiting_on is not None and (
        not past or (ended and request is not None and request.checked)
    )

    # The block's replica, else the request's.
    chooser = holder if holder is not None else request
    replica = _holder_alias(chooser) if chooser is not None else None
    forced_replica = holder.alias if isinstance(holder, pinning._Fixed) else None
    explanation = Explanation(
        in_request=request is not None,
        forced=forced,
        forced_replica=forced_replica,
        bound=(bound.max_lag, bound.max_lag_bytes) if bound is not None else None,
        pinned_by_time=pinned_by is not None,
        pinned_by=pinned_by,
        token=token,
        token_lsn=format_lsn(token) if token is not None else None,
        token_waiting=waiting,
        replicas_past_token=tuple(sorted(past)),
        token_check=token_check,
        in_atomic=routers.app_in_atomic(request, note=False),
        atomic_requests=request is not None and request.atomic_view,
        no_replica=no_replica,
        no_replica_policy=conf.NO_REPLICA,
        replica=replica,
        read_alias=None,
        thread_pinned=pinning.this_thread_is_pinned(),
    )
    if explanation.outcome != "replica":
        alias: str | None = DEFAULT_DB_ALIAS
    else:
        # The replicas the next read may take, the one it prefers first.
        choices = list(past) if waiting_on is not None else candidates
        if forced_replica is not None or (replica is not None and replica in choices):
            alias = replica
        elif waiting_on is not None or bound is not None:
            alias = choices[0]
        else:
            alias = replica
    return replace(explanation, read_alias=alias)
