"""Every ``MULTIDB_*`` setting and its default, read from ``django.conf``.

Each value is a property.  Values are cached, because reading a setting
that is not set costs about 2 µs (Django raises and catches AttributeError)
and the middleware reads several per request: most are a
``cached_property``, kept on ``conf`` itself, so that a read is an
attribute lookup.  The caches are cleared on ``setting_changed``, so
``override_settings`` takes effect at once.  Values
are returned as configured; ``multidb.checks`` reports bad ones.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any, Literal, TypeAlias, cast

from django.conf import settings
from django.core.signals import setting_changed

DEFAULT_DB_ALIAS = "default"

#: Names of the settings that define the replica set.
REPLICA_SETTINGS = frozenset({"REPLICA_DATABASES", "SLAVE_DATABASES", "DATABASES"})


_UNSET: Any = object()
#: What ``set_cookie(samesite=...)`` takes (any case, which the checks allow).
SameSite: TypeAlias = Literal["Lax", "Strict", "None", False] | None
#: Tells a setting left unset from one set to its default.
_ABSENT: Any = object()


def under_test_runner() -> bool:
    """Whether Django's test environment is set up (``manage.py test``,
    pytest-django): ``setup_test_environment()`` gives ``mail`` an outbox."""
    mail = sys.modules.get("django.core.mail")
    return mail is not None and hasattr(mail, "outbox")


#: Every ``MULTIDB_*`` setting, with its default.  ``MULTIDB_HEALTH_CHECK_INTERVAL``
#: unset is ``None`` under a test runner (see ``Settings``).  The system
#: checks read the same table.
DEFAULTS: dict[str, Any] = {
    "MULTIDB_PINNING_COOKIE": "multidb_pin_writes",
    "MULTIDB_PINNING_SECONDS": 15,
    "MULTIDB_PINNING_COOKIE_SECURE": False,
    "MULTIDB_PINNING_COOKIE_HTTPONLY": False,
    "MULTIDB_PINNING_COOKIE_SAMESITE": "Lax",
    "MULTIDB_PINNING_MODE": "auto",
    "MULTIDB_PIN_UNSAFE_METHODS": True,
    "MULTIDB_PINNING_HEADER": None,
    "MULTIDB_INVALID_TOKEN": "pin",
    "MULTIDB_ENCRYPT_TOKENS": False,
    "MULTIDB_HEALTH_CHECK_INTERVAL": 1.0,
    "MULTIDB_HEALTH_CHECK_TIMEOUT": 1.0,
    "MULTIDB_REPLICA_MAX_LAG": 30,
    "MULTIDB_REPLICA_MAX_LAG_BYTES": None,
    "MULTIDB_HEALTH_MIN_REPLICAS": 1,
    "MULTIDB_HEALTH_DETAILS": "never",
    "MULTIDB_NO_REPLICA": "primary",
    "MULTIDB_MIN_SERVING_REPLICAS": 0,
    "MULTIDB_CATCH_UP_WAIT": 0,
    "MULTIDB_MONOTONIC_READS": False,
    "MULTIDB_REPLICA_GROUPS": None,
    "MULTIDB_PRIMARY_FOR": None,
}


def configured(name: str) -> Any:
    """``settings.<name>`` as configured, or its default; never cached."""
    return getattr(settings, name, DEFAULTS[name])


_cache: dict[str, Any] = {}


def _setting(name: str, default: Any = _UNSET) -> Any:
    """``settings.<name>``, or ``default`` (the table's, unless given)."""
    try:
        return _cache[name]
    except KeyError:
        if default is _UNSET:
            default = DEFAULTS[name]
        value = _cache[name] = getattr(settings, name, default)
        return value


def _clear_cache(**kwargs: Any) -> None:
    _cache.clear()
    # The values ``cached_property`` keeps on ``conf``.
    vars(conf).clear()


setting_changed.connect(_clear_cache)


class Settings:
    """The package's settings with their defaults."""

    @property
    def REPLICA_DATABASES(self) -> Any:
        """The raw replica setting: a list of aliases or a dict ``{alias: weight}``.

        Falls back to the deprecated ``SLAVE_DATABASES``, with a warning.
        """
        if hasattr(settings, "REPLICA_DATABASES"):
            return settings.REPLICA_DATABASES
        if hasattr(settings, "SLAVE_DATABASES"):
            warnings.warn(
                "[multidb] The SLAVE_DATABASES setting has been deprecated. "
                "Please switch to the REPLICA_DATABASES setting.",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(settings, "SLAVE_DATABASES")  # noqa: B009
        return None

    @cached_property
    def PINNING_COOKIE(self) -> str:
        return cast("str", _setting("MULTIDB_PINNING_COOKIE"))

    @cached_property
    def PINNING_SECONDS(self) -> int:
        return int(_setting("MULTIDB_PINNING_SECONDS"))

    @cached_property
    def PINNING_COOKIE_SECURE(self) -> bool:
        return cast("bool", _setting("MULTIDB_PINNING_COOKIE_SECURE"))

    @cached_property
    def PINNING_COOKIE_HTTPONLY(self) -> bool:
        return cast("bool", _setting("MULTIDB_PINNING_COOKIE_HTTPONLY"))

    @cached_property
    def PINNING_COOKIE_SAMESITE(self) -> SameSite:
        return cast(SameSite, _setting("MULTIDB_PINNING_COOKIE_SAMESITE"))

    @cached_property
    def PINNING_MODE(self) -> str:
        """``"auto"``: pin by position where the primary has positions, else by
        time; ``"time"``: always by time, exactly as django-multidb-router."""
        return cast("str", _setting("MULTIDB_PINNING_MODE"))

    @cached_property
    def PIN_UNSAFE_METHODS(self) -> bool:
        return cast("bool", _setting("MULTIDB_PIN_UNSAFE_METHODS"))

    @cached_property
    def PINNING_HEADER(self) -> str | None:
        """A request header that may carry the token, e.g. ``"X-Multidb-Token"``."""
        return cast("str | None", _setting("MULTIDB_PINNING_HEADER"))

    @cached_property
    def INVALID_TOKEN(self) -> str:
        """What a pin cookie or header that is not a valid token asks, where
        the primary has positions: ``"pin"`` (by time, as 0.11 did) or
        ``"ignore"`` (nothing)."""
        return cast("str", _setting("MULTIDB_INVALID_TOKEN"))

    @cached_property
    def ENCRYPT_TOKENS(self) -> bool:
        """Encrypt the position in tokens (needs ``cryptography``), so that a
        visitor cannot read the primary's write volume off them."""
        return cast("bool", _setting("MULTIDB_ENCRYPT_TOKENS"))

    @property
    def HEALTH_CHECK_INTERVAL(self) -> float | None:
        """Seconds between background probes; ``None`` turns health checks off.

        Unset, it is 1 s, but ``None`` under a test runner: a prober would
        change routing at moments a test cannot see, and hold the test
        database open.  Tests that want one set it.
        """
        value = _setting("MULTIDB_HEALTH_CHECK_INTERVAL", _ABSENT)
        if value is _ABSENT:
            if under_test_runner():
                return None
            return cast("float", DEFAULTS["MULTIDB_HEALTH_CHECK_INTERVAL"])
        return cast("float | None", value)

    @cached_property
    def HEALTH_CHECK_TIMEOUT(self) -> float:
        return cast("float", _setting("MULTIDB_HEALTH_CHECK_TIMEOUT"))

    @cached_property
    def REPLICA_MAX_LAG(self) -> float | None:
        return cast("float | None", _setting("MULTIDB_REPLICA_MAX_LAG"))

    @cached_property
    def REPLICA_MAX_LAG_BYTES(self) -> int | None:
        return cast("int | None", _setting("MULTIDB_REPLICA_MAX_LAG_BYTES"))

    @cached_property
    def HEALTH_MIN_REPLICAS(self) -> int:
        """Usable replicas the health view needs to answer 200."""
        return cast("int", _setting("MULTIDB_HEALTH_MIN_REPLICAS"))

    @cached_property
    def HEALTH_DETAILS(self) -> str:
        """Who sees the health view's per-database details (hosts' states,
        positions, errors): ``"never"``, ``"staff"`` or ``"always"``."""
        return cast("str", _setting("MULTIDB_HEALTH_DETAILS"))

    @cached_property
    def NO_REPLICA(self) -> str:
        """Where a read goes when no replica is usable: ``"primary"``,
        ``"least-lagged"`` (the freshest reachable replica, whatever its
        lag) or ``"error"`` (``multidb.NoReplicaAvailable``)."""
        return cast("str", _setting("MULTIDB_NO_REPLICA"))

    @cached_property
    def MIN_SERVING_REPLICAS(self) -> int:
        """Reachable replicas kept serving however far behind they are."""
        return cast("int", _setting("MULTIDB_MIN_SERVING_REPLICAS"))

    @cached_property
    def CATCH_UP_WAIT(self) -> float:
        """Milliseconds a read whose token no replica has replayed may wait
        for one to replay it before it reads the primary; 0: no wait."""
        return cast("float", _setting("MULTIDB_CATCH_UP_WAIT"))

    @cached_property
    def MONOTONIC_READS(self) -> bool:
        """A user agent's reads never go back in time between requests."""
        return cast("bool", _setting("MULTIDB_MONOTONIC_READS"))

    @cached_property
    def REPLICA_GROUPS(self) -> Mapping[str, Any] | None:
        """``{primary alias: replicas}``: each primary's replicas, as a list
        or ``{alias: weight}``; ``REPLICA_DATABASES`` is the ``default``
        group's shorthand."""
        return cast("Mapping[str, Any] | None", _setting("MULTIDB_REPLICA_GROUPS"))

    @cached_property
    def PRIMARY_FOR(self) -> Mapping[str, str] | str | None:
        """Which primary a model lives on: ``{app_label or
        "app_label.ModelName": alias}``, or the dotted path of a callable
        ``(model, **hints) -> alias | None``."""
        return cast("Mapping[str, str] | str | None", _setting("MULTIDB_PRIMARY_FOR"))


conf = Settings()


def replica_weights(raw: Any) -> dict[str, int]:
    """Normalise ``REPLICA_DATABASES`` to ``{alias: weight}``, in order.

    A list (or any other iterable, as 0.11 accepted) gives every alias the
    weight 1. Raises ``TypeError`` or
    ``ValueError`` for a value the system checks would reject.
    """
    if raw is None:
        return {}
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (Mapping, Iterable)):
        raise TypeError(
            "REPLICA_DATABASES must be a list of database aliases or a dict "
            f"{{alias: weight}}, not {type(raw).__name__}."
        )
    items = raw.items() if isinstance(raw, Mapping) else ((alias, 1) for alias in raw)
    weights: dict[str, int] = {}
    for alias, weight in items:
        if not isinstance(alias, str):
            raise TypeError(f"REPLICA_DATABASES: alias {alias!r} is not a string.")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ValueError(
                f"REPLICA_DATABASES: the weight of {alias!r} must be an integer "
                f">= 0, not {weight!r}."
            )
        weights[alias] = weights.get(alias, 0) + weight
    return weights
