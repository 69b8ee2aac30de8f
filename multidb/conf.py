"""Every ``MULTIDB_*`` setting and its default, read from ``django.conf``.

Each value is a property.  Values are cached, because reading a setting
that is not set costs about 2 µs (Django raises and catches AttributeError)
and the middleware reads several per request; the cache is cleared on
``setting_changed``, so ``override_settings`` takes effect at once.  Values
are returned as configured; ``multidb.checks`` reports bad ones.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, cast

from django.conf import settings
from django.core.signals import setting_changed

DEFAULT_DB_ALIAS = "default"

#: Names of the settings that define the replica set.
REPLICA_SETTINGS = frozenset({"REPLICA_DATABASES", "SLAVE_DATABASES", "DATABASES"})


T = TypeVar("T")

_UNSET: Any = object()


def under_test_runner() -> bool:
    """Whether Django's test environment is set up (``manage.py test``,
    pytest-django): ``setup_test_environment()`` gives ``mail`` an outbox."""
    mail = sys.modules.get("django.core.mail")
    return mail is not None and hasattr(mail, "outbox")


_cache: dict[str, Any] = {}


def _setting(name: str, default: T) -> T:
    """``settings.<name>``, or ``default``; the caller's type, unchecked."""
    try:
        return cast(T, _cache[name])
    except KeyError:
        value = _cache[name] = getattr(settings, name, default)
        return cast(T, value)


def _clear_cache(**kwargs: Any) -> None:
    _cache.clear()


setting_changed.connect(_clear_cache)


class Settings:
    """The package's settings with their defaults."""

    @property
    def REPLICA_DATABASES(self) -> Any:  # noqa: N802
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

    @property
    def PINNING_COOKIE(self) -> str:  # noqa: N802
        return _setting("MULTIDB_PINNING_COOKIE", "multidb_pin_writes")

    @property
    def PINNING_SECONDS(self) -> int:  # noqa: N802
        return int(_setting("MULTIDB_PINNING_SECONDS", 15))

    @property
    def PINNING_COOKIE_SECURE(self) -> bool:  # noqa: N802
        return _setting("MULTIDB_PINNING_COOKIE_SECURE", False)

    @property
    def PINNING_COOKIE_HTTPONLY(self) -> bool:  # noqa: N802
        return _setting("MULTIDB_PINNING_COOKIE_HTTPONLY", False)

    @property
    def PINNING_COOKIE_SAMESITE(self) -> str | None:  # noqa: N802
        return _setting("MULTIDB_PINNING_COOKIE_SAMESITE", "Lax")

    @property
    def PINNING_MODE(self) -> str:  # noqa: N802
        """``"auto"``: pin by position where the primary has positions, else by
        time; ``"time"``: always by time, exactly as django-multidb-router."""
        return _setting("MULTIDB_PINNING_MODE", "auto")

    @property
    def PIN_UNSAFE_METHODS(self) -> bool:  # noqa: N802
        return _setting("MULTIDB_PIN_UNSAFE_METHODS", True)

    @property
    def PINNING_HEADER(self) -> str | None:  # noqa: N802
        """A request header that may carry the token, e.g. ``"X-Multidb-Token"``."""
        return _setting("MULTIDB_PINNING_HEADER", None)

    @property
    def INVALID_TOKEN(self) -> str:  # noqa: N802
        """What a pin cookie or header that is not a valid token asks, where
        the primary has positions: ``"pin"`` (by time, as 0.11 did) or
        ``"ignore"`` (nothing)."""
        return _setting("MULTIDB_INVALID_TOKEN", "pin")

    @property
    def ENCRYPT_TOKENS(self) -> bool:  # noqa: N802
        """Encrypt the position in tokens (needs ``cryptography``), so that a
        visitor cannot read the primary's write volume off them."""
        return _setting("MULTIDB_ENCRYPT_TOKENS", False)

    @property
    def HEALTH_CHECK_INTERVAL(self) -> float | None:  # noqa: N802
        """Seconds between background probes; ``None`` turns health checks off.

        Unset, it is 1 s, but ``None`` under a test runner: a prober would
        change routing at moments a test cannot see, and hold the test
        database open.  Tests that want one set it.
        """
        value = _setting("MULTIDB_HEALTH_CHECK_INTERVAL", _UNSET)
        if value is _UNSET:
            return None if under_test_runner() else 1.0
        return cast("float | None", value)

    @property
    def HEALTH_CHECK_TIMEOUT(self) -> float:  # noqa: N802
        return _setting("MULTIDB_HEALTH_CHECK_TIMEOUT", 1.0)

    @property
    def REPLICA_MAX_LAG(self) -> float | None:  # noqa: N802
        return _setting("MULTIDB_REPLICA_MAX_LAG", 30)

    @property
    def REPLICA_MAX_LAG_BYTES(self) -> int | None:  # noqa: N802
        return _setting("MULTIDB_REPLICA_MAX_LAG_BYTES", None)

    @property
    def HEALTH_MIN_REPLICAS(self) -> int:  # noqa: N802
        """Usable replicas the health view needs to answer 200."""
        return _setting("MULTIDB_HEALTH_MIN_REPLICAS", 1)

    @property
    def HEALTH_DETAILS(self) -> str:  # noqa: N802
        """Who sees the health view's per-database details (hosts' states,
        positions, errors): ``"never"``, ``"staff"`` or ``"always"``."""
        return _setting("MULTIDB_HEALTH_DETAILS", "never")


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
