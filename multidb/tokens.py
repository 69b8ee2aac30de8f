"""Read-your-writes by position: signing and reading tokens.

After a write, the primary's position (PostgreSQL: its WAL LSN) goes into
the pin cookie as a signed token.  A later read carrying that token may use
any replica that has replayed the position, and goes to the primary only
while none has (``multidb.routers.read_alias_after`` decides).  Anything
that is not a valid token pins by time instead, exactly as
django-multidb-router 0.11 did, so nothing is less safe than it.
"""

from __future__ import annotations

import binascii
import functools
import logging
import math
import os
from typing import Any, Final

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signing
from django.core.signals import setting_changed
from django.db import DatabaseError, connections
from django.db.utils import load_backend
from django.dispatch import receiver
from django.utils.crypto import salted_hmac

from . import groups
from .conf import DEFAULT_DB_ALIAS, conf
from .pinning import (
    NO_PIN,
    TIME_PIN,
    Override,
    Pin,
    RequestState,
    Scope,
    TimePin,
    current_request,
    keep_bound,
    stricter,
)
from .positions import adapter

logger = logging.getLogger("multidb")

SALT: Final = "multidb.pin"
#: The pre-token cookie value, which pins by time.
LEGACY_VALUE: Final = "y"
#: Longer values are not even looked at: they pin by time.  A token for ten
#: primaries with long aliases, encrypted, stays well under it.
MAX_TOKEN_LENGTH: Final = 1024
#: Separates the positions of several primaries in one token: a character
#: a cookie value may hold unquoted (``;`` would be escaped as ``\073``).
SEPARATOR: Final = "|"

#: Browsers cap a cookie's lifetime at 400 days (and Python's dates end in
#: the year 9999): no cookie asks for longer.
MAX_COOKIE_SECONDS: Final = 400 * 24 * 3600

#: Starts the payload of a token whose position is encrypted.
SEALED: Final = "~"


@functools.cache
def _signer() -> signing.TimestampSigner:
    """The tokens' signer, made once (until ``SECRET_KEY`` or its fallbacks
    change): making one reads two settings through Django's lazy settings
    object, which cost a token read or signed a third of its time."""
    return signing.TimestampSigner(salt=SALT)


def sign(position: int, alias: str = DEFAULT_DB_ALIAS) -> str:
    """A token for ``position`` on ``alias``, signed with ``SECRET_KEY``;
    with ``MULTIDB_ENCRYPT_TOKENS``, the position is encrypted too."""
    # Plain hex, not PostgreSQL's "X/Y": a "/" would make the cookie quoted.
    payload = f"{alias}:{position:X}"
    if conf.ENCRYPT_TOKENS:
        payload = _seal(payload)
    return _signer().sign(payload)


@functools.lru_cache(maxsize=8)
def _cipher(secret: str) -> Any:
    """AES-256-GCM, keyed from ``secret`` for tokens alone."""
    # Imported here: cryptography is an optional extra, needed only for this.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = salted_hmac(SALT + ".encrypt", "", secret=secret, algorithm="sha256")
    return AESGCM(key.digest())


def _seal(payload: str) -> str:
    """``payload`` encrypted with a random nonce, so that two tokens for one
    position differ and none shows how far apart two positions are."""
    nonce = os.urandom(12)
    sealed = _cipher(settings.SECRET_KEY).encrypt(nonce, payload.encode(), None)
    return SEALED + signing.b64_encode(nonce + sealed).decode()


def _unseal(text: str) -> str:
    """The payload of a sealed token; ``ValueError`` if it does not open
    with ``SECRET_KEY`` or a fallback (or cryptography is not installed)."""
    try:
        from cryptography.exceptions import InvalidTag

        data = signing.b64_decode(text[len(SEALED) :].encode())
    except (ImportError, ValueError, binascii.Error) as error:
        raise ValueError(f"not a sealed token: {error}") from error
    for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS):
        try:
            return str(_cipher(secret).decrypt(data[:12], data[12:], None).decode())
        except (InvalidTag, ValueError):  # another key's, or garbage
            continue
    raise ValueError("not a sealed token: no key opens it")


def sign_time(alias: str = DEFAULT_DB_ALIAS) -> str:
    """A signed token that pins by time, for a write whose position is not
    known (the position query failed).  Unlike the legacy ``y`` it is valid
    under ``MULTIDB_INVALID_TOKEN = "ignore"``."""
    return _signer().sign(f"{alias}:")


def pin_for(value: str, invalid: Pin = TIME_PIN) -> Pin:
    """What a pin cookie (or header) value asks of the reads that carry it.

    A validly signed token gives the position to wait for, whatever its age:
    an old position costs nothing, since every replica past it qualifies.
    A signed token without a position, for another alias, or on a database
    without positions is a time pin that expires after
    ``MULTIDB_PINNING_SECONDS``.  Anything else (the legacy ``y``, a bad
    signature, garbage) gives ``invalid``: a time pin, as in 0.11, unless
    the caller chose to ignore such values.

    This is the pin of ``default``'s group; ``pins_for`` gives every group's.
    """
    decoded = _decode(value)
    if decoded is None:
        return invalid
    return _default_pin(*decoded, value, invalid)


def _default_pin(
    parts: dict[str, str], signer: signing.TimestampSigner, value: str, invalid: Pin
) -> Pin:
    lsn = parts.get(DEFAULT_DB_ALIAS)
    if lsn is None:
        if groups.active() and all(map(groups.is_primary, parts)):
            # A token for other primaries' groups only: nothing for this one.
            return NO_PIN
        logger.debug("pin token for %r: pinning by time", SEPARATOR.join(parts))
        return _time_pin_unless_expired(signer, value)
    return _part_pin(DEFAULT_DB_ALIAS, lsn, signer, value, invalid)


def read(value: str, invalid: Pin = TIME_PIN) -> tuple[Pin, dict[str, Pin]] | None:
    """Every group's pin in a valid token: ``default``'s, and the other
    primaries' as ``{primary: pin}``; None for a value that is not one."""
    decoded = _decode(value)
    if decoded is None:
        return None
    parts, signer = decoded
    others = {
        primary: _part_pin(primary, lsn, signer, value, invalid)
        for primary, lsn in parts.items()
        if primary != DEFAULT_DB_ALIAS and groups.is_primary(primary)
    }
    return _default_pin(parts, signer, value, invalid), others


def pins_for(
    value: str, invalid: Pin = TIME_PIN
) -> tuple[Pin, TimePin | dict[str, Pin]]:
    """``pin_for`` for every group: ``default``'s pin, and the other
    primaries' (``{primary: pin}``, or a time pin for all of them when the
    value is not a valid token and ``invalid`` is one)."""
    found = read(value, invalid)
    if found is None:
        return invalid, TIME_PIN if invalid is TIME_PIN else {}
    return found


def _decode(value: str) -> tuple[dict[str, str], signing.TimestampSigner] | None:
    """A valid token's positions by primary alias (``""``: a time pin), and
    the signer that read it; None for anything else."""
    if value == LEGACY_VALUE:
        return None
    if len(value) > MAX_TOKEN_LENGTH:
        logger.debug("pin token ignored: %d characters long", len(value))
        return None
    signer = _signer()
    try:
        raw = signer.unsign(value)
    except (signing.BadSignature, UnicodeEncodeError, ValueError):
        # UnicodeEncodeError: a string that is not even text (lone surrogates,
        # as JSON can carry them).  ValueError: signed with our key by a
        # signer without a timestamp.
        logger.debug("pin token ignored: bad signature")
        return None
    if raw.startswith(SEALED):
        try:
            raw = _unseal(raw)
        except ValueError:
            logger.debug("pin token ignored: it does not decrypt")
            return None
    parts: dict[str, str] = {}
    for part in raw.split(SEPARATOR):
        alias, _, lsn = part.rpartition(":")
        parts.setdefault(alias, lsn)
    return parts, signer


def _part_pin(
    alias: str,
    lsn: str,
    signer: signing.TimestampSigner,
    value: str,
    invalid: Pin,
) -> Pin:
    """The pin one primary's part of a valid token asks."""
    if not lsn or not has_positions(alias):
        logger.debug("pin token for %r: pinning by time", alias)
        return _time_pin_unless_expired(signer, value)
    try:
        return _parse_hex(lsn)
    except ValueError:
        return invalid


def invalid_pin() -> Pin:
    """What an incoming value that is not a valid token asks: nothing under
    ``MULTIDB_INVALID_TOKEN = "ignore"`` where the primary has positions,
    else a time pin."""
    if conf.INVALID_TOKEN == "ignore" and has_positions():
        return NO_PIN
    return TIME_PIN


def _time_pin_unless_expired(signer: signing.TimestampSigner, value: str) -> Pin:
    try:
        signer.unsign(value, max_age=conf.PINNING_SECONDS)
    except signing.SignatureExpired:
        return NO_PIN
    return TIME_PIN


def cookie_seconds() -> int:
    """The ``max-age`` of a position token's cookie.

    A browser drops the cookie after ``max-age``, and a replica stays in
    rotation until the prober sees it more than ``MULTIDB_REPLICA_MAX_LAG``
    behind: the cookie must outlive the lag limit plus one probe round
    (an interval, and a timeout for the primary and for the replicas), or a
    user whose replicas are just within the limit would miss their own
    write.  Without a lag limit or without probes no lifetime is enough;
    ``multidb.W006`` says so, and the time rule applies.
    """
    seconds = min(conf.PINNING_SECONDS, MAX_COOKIE_SECONDS)
    max_lag, interval = conf.REPLICA_MAX_LAG, conf.HEALTH_CHECK_INTERVAL
    if max_lag is None or interval is None:
        return seconds
    probe_round = interval + 2 * conf.HEALTH_CHECK_TIMEOUT
    try:
        return max(seconds, min(math.ceil(max_lag + probe_round), MAX_COOKIE_SECONDS))
    except (OverflowError, ValueError):  # infinite or NaN: multidb.E017 says so
        return MAX_COOKIE_SECONDS


def _parse_hex(text: str) -> int:
    if not 0 < len(text) <= 16 or text.strip("0123456789ABCDEF"):
        raise ValueError(f"not a position: {text!r}")
    return int(text, 16)


@functools.cache
def has_positions(alias: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether ``alias``'s backend has positions.

    Read from its ``DatabaseWrapper`` class, once: ``connections[alias]``
    would build a wrapper for every request on an event loop's thread (each
    request's context has a connection storage of its own there), which
    cost an ASGI POST more than the rest of the middleware.
    """
    engine = connections.settings[alias]["ENGINE"]
    return adapter(load_backend(engine).DatabaseWrapper.vendor).has_positions


@receiver(setting_changed)
def _forget_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == "DATABASES":
        has_positions.cache_clear()
    elif setting in ("SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        _signer.cache_clear()


#: The last position query failed; the next failure is not logged again.
_position_failing = False


def primary_position(alias: str = DEFAULT_DB_ALIAS) -> int | None:
    """The primary's current position, or None without position support.

    Errors give None too: a failed lookup must not fail the response.  The
    first failure of an outage is logged as a warning, the rest only at
    debug level, and the first success after it at info.
    """
    global _position_failing
    connection = connections[alias]
    positions = adapter(connection.vendor)
    if not positions.has_positions:
        return None
    try:
        with connection.cursor() as cursor:
            position = positions.primary_position(cursor)
    except DatabaseError:
        if _position_failing:
            logger.debug("could not read the primary's position", exc_info=True)
        else:
            _position_failing = True
            logger.warning("could not read the primary's position", exc_info=True)
        return None
    if _position_failing:
        _position_failing = False
        logger.info("the primary's position can be read again")
    return position


def position_token() -> str:
    """A token for the primary's position now (one query); if that fails, a
    signed time pin."""
    position = primary_position()
    return sign_time() if position is None else sign(position)


def groups_token(
    carried: list[str], written: list[str], position_of: Any = None
) -> str | None:
    """One token for several primaries: the positions (and unexpired time
    pins) of the valid tokens among ``carried``, with the position now of
    each primary in ``written`` (one query each; a time pin where that
    fails).

    Its payload is ``default:LSN|billing:LSN``; None when it would be empty.
    """
    position_of = position_of or primary_position
    parts: dict[str, Pin] = {}
    for value in carried:
        found = read(value, NO_PIN)
        if found is None:
            continue
        first, others = found
        for alias, pin in ((DEFAULT_DB_ALIAS, first), *others.items()):
            parts[alias] = stricter(parts.get(alias), pin)
    for alias in written:
        position = position_of(alias)
        pin = TIME_PIN if position is None else position
        parts[alias] = stricter(parts.get(alias), pin)
    order = list(groups.groups())
    payload = SEPARATOR.join(
        f"{alias}:" if isinstance(pin, TimePin) else f"{alias}:{pin:X}"
        for alias, pin in sorted(parts.items(), key=lambda kv: _rank(order, kv[0]))
        if pin is not NO_PIN
    )
    if not payload:
        return None
    if conf.ENCRYPT_TOKENS:
        payload = _seal(payload)
    return _signer().sign(payload)


def _rank(order: list[str], alias: str) -> int:
    """Where ``alias`` goes in a token: in the groups' order, unknown last."""
    return order.index(alias) if alias in order else len(order)


def _group_writes(request: RequestState) -> list[str]:
    written = [DEFAULT_DB_ALIAS] if request.wrote else []
    return written + request.groups_written()


def write_token() -> str | None:
    """A token for what the current context has written, or None.

    In a request that wrote, or outside a request, it holds the primary's
    position now (one query).  In a request that did not write, it is the
    token the request came with, if any.  Hand it to an API client (say in
    a header) or to a background job (``read_after``).

    With replica groups it holds a position for each primary the request
    wrote to, with those of the token it came with; outside a request, for
    ``default`` and each other primary this context has a connection to.
    """
    request = current_request()
    if groups.active():
        if request is None:
            written = [DEFAULT_DB_ALIAS] + [
                alias
                for alias in groups.groups()
                if alias != DEFAULT_DB_ALIAS
                and connections[alias].connection is not None
            ]
            return groups_token([], written)
        carried = [request.incoming] if request.incoming else []
        return groups_token(carried, _group_writes(request))
    if request is not None and not request.wrote:
        return request.incoming
    position = primary_position()
    return None if position is None else sign(position)


async def awrite_token() -> str | None:
    """``write_token`` for async code."""
    return await sync_to_async(write_token)()


class ReadAfter(Override):
    """Read only what has replayed ``token``: a replica that has, else the primary.

    ``with read_after(token):`` or ``@read_after(token)`` on a sync or async
    function.  ``None`` changes nothing; an invalid token reads the primary.
    """

    def __init__(self, token: str | None) -> None:
        self.token = token

    def _child(self, scope: Scope) -> Scope:
        if self.token is None:
            return keep_bound(
                scope,
                Scope(
                    scope.primary, scope.replica, scope.request, scope, scope.unpinned
                ),
            )
        pinned, group_pins = pins_for(self.token)
        outer = scope.request
        if outer is not None and not scope.unpinned:
            # Never less fresh than the enclosing request: its own write (or
            # time pin, or token, even one its replica has already replayed)
            # still counts inside the block.
            pinned = stricter(pinned, outer.pinned)
            if outer.settled is not None:
                pinned = stricter(pinned, outer.settled)
        state = RequestState(pinned, outer=scope.request)
        if group_pins:
            state.group_pins = group_pins
        # The token replaces a forced replica (the innermost block wins), but
        # never a forced primary: the block must not read less fresh data.
        return keep_bound(scope, Scope(scope.primary, None, state, scope))

    def __call__(self, func: Any) -> Any:
        return self._decorate(func)


def read_after(token: str | None) -> ReadAfter:
    return ReadAfter(token)


__all__ = [
    "read_after",
    "write_token",
    "awrite_token",
    "sign",
    "pin_for",
    "pins_for",
    "groups_token",
    "read",
]
