"""System checks for the settings the routers rely on.

Each check is a pure function of the settings; ``check_settings`` runs them
all and is registered by ``multidb.apps.MultiDBConfig.ready()``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error
from django.core.checks import Warning as CheckWarning
from django.db import connections
from django.utils.module_loading import import_string

from .conf import DEFAULT_DB_ALIAS, conf, replica_weights
from .positions import adapter
from .replicas import smooth_sequence

MIDDLEWARE_PATH = "multidb.middleware.PinningRouterMiddleware"

#: Middleware that may write to the database while handling a request.
WRITING_MIDDLEWARE = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
)

_SAMESITE_VALUES = {"lax", "strict", "none"}


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    return [
        *check_replica_databases(),
        *check_pinning_settings(),
        *check_health_settings(),
        *check_read_your_writes(),
        *check_router_and_middleware(),
    ]


def _raw_replicas() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return conf.REPLICA_DATABASES


def check_replica_databases() -> list[CheckMessage]:
    raw = _raw_replicas()
    try:
        weights = replica_weights(raw)
        smooth_sequence(weights)
    except (TypeError, ValueError) as exc:
        return [
            Error(
                str(exc),
                hint="Use a list of aliases, or a dict {alias: weight} with "
                "integer weights (0 takes a replica out of rotation).",
                id="multidb.E002",
            )
        ]
    if not any(weights.values()):
        return [
            CheckWarning(
                "No replica databases are configured: every read goes to "
                f"'{DEFAULT_DB_ALIAS}'.",
                hint="List your replicas' aliases in REPLICA_DATABASES.",
                id="multidb.W001",
            )
        ]
    messages: list[CheckMessage] = []
    for alias in weights:
        if alias not in settings.DATABASES:
            messages.append(
                Error(
                    f"REPLICA_DATABASES names {alias!r}, which is not in DATABASES.",
                    hint=f"Add {alias!r} to DATABASES or remove it from "
                    "REPLICA_DATABASES.",
                    id="multidb.E001",
                )
            )
        elif alias != DEFAULT_DB_ALIAS and not _test_mirror(alias):
            messages.append(
                CheckWarning(
                    f"Replica {alias!r} is not a test mirror: under the test "
                    "runner, Django would try to create a test database on it.",
                    hint=f'Set DATABASES[{alias!r}]["TEST"] = '
                    f'{{"MIRROR": "{DEFAULT_DB_ALIAS}"}}.',
                    id="multidb.W005",
                )
            )
    return messages


def _test_mirror(alias: str) -> Any:
    test_settings: dict[str, Any] = settings.DATABASES[alias].get("TEST") or {}
    return test_settings.get("MIRROR")


def check_pinning_settings() -> list[CheckMessage]:
    problems = []
    cookie = getattr(settings, "MULTIDB_PINNING_COOKIE", "multidb_pin_writes")
    if not isinstance(cookie, str) or not cookie:
        problems.append(
            f"MULTIDB_PINNING_COOKIE must be a non-empty string, not {cookie!r}."
        )
    seconds = getattr(settings, "MULTIDB_PINNING_SECONDS", 15)
    try:
        valid_seconds = not isinstance(seconds, bool) and int(seconds) >= 0
    except (TypeError, ValueError, OverflowError):
        valid_seconds = False
    if not valid_seconds:
        problems.append(
            f"MULTIDB_PINNING_SECONDS must be a whole number of seconds >= 0, "
            f"not {seconds!r}."
        )
    for name in ("MULTIDB_PINNING_COOKIE_SECURE", "MULTIDB_PINNING_COOKIE_HTTPONLY"):
        value = getattr(settings, name, False)
        if not isinstance(value, bool):
            problems.append(f"{name} must be True or False, not {value!r}.")
    samesite = getattr(settings, "MULTIDB_PINNING_COOKIE_SAMESITE", "Lax")
    if samesite not in (None, False) and (
        not isinstance(samesite, str) or samesite.lower() not in _SAMESITE_VALUES
    ):
        problems.append(
            "MULTIDB_PINNING_COOKIE_SAMESITE must be 'Lax', 'Strict', 'None', "
            f"or None, not {samesite!r}."
        )
    mode = getattr(settings, "MULTIDB_PINNING_MODE", "auto")
    if mode not in ("auto", "time"):
        problems.append(f"MULTIDB_PINNING_MODE must be 'auto' or 'time', not {mode!r}.")
    unsafe = getattr(settings, "MULTIDB_PIN_UNSAFE_METHODS", True)
    if not isinstance(unsafe, bool):
        problems.append(
            f"MULTIDB_PIN_UNSAFE_METHODS must be True or False, not {unsafe!r}."
        )
    header = getattr(settings, "MULTIDB_PINNING_HEADER", None)
    if header is not None and (not isinstance(header, str) or not header):
        problems.append(
            f"MULTIDB_PINNING_HEADER must be a header name or None, not {header!r}."
        )
    return [
        Error(problem, hint="See the settings table in README.rst.", id="multidb.E003")
        for problem in problems
    ]


def _number(value: Any, *, allow_none: bool, integer: bool, positive: bool) -> bool:
    if value is None:
        return allow_none
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        return False
    return value > 0 if positive else value >= 0


#: name: (default, allow None, whole number, must be > 0)
_HEALTH_SETTINGS = {
    "MULTIDB_HEALTH_CHECK_INTERVAL": (1.0, True, False, True),
    "MULTIDB_HEALTH_CHECK_TIMEOUT": (1.0, False, False, True),
    "MULTIDB_REPLICA_MAX_LAG": (30, True, False, False),
    "MULTIDB_REPLICA_MAX_LAG_BYTES": (None, True, True, False),
    "MULTIDB_HEALTH_MIN_REPLICAS": (1, False, True, False),
}


def check_health_settings() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for name, (default, allow_none, integer, positive) in _HEALTH_SETTINGS.items():
        value = getattr(settings, name, default)
        if not _number(
            value, allow_none=allow_none, integer=integer, positive=positive
        ):
            kind = "a whole number" if integer else "a number"
            bound = "> 0" if positive else ">= 0"
            none = " or None" if allow_none else ""
            messages.append(
                Error(
                    f"{name} must be {kind} {bound}{none}, not {value!r}.",
                    hint="See the settings table in README.rst.",
                    id="multidb.E003",
                )
            )
    return messages


def check_read_your_writes() -> list[CheckMessage]:
    """A position token outlives the lag limit only if there is one, and probes
    that enforce it (see ``multidb.tokens.cookie_seconds``)."""
    if getattr(settings, "MULTIDB_PINNING_MODE", "auto") != "auto":
        return []
    if not adapter(connections[DEFAULT_DB_ALIAS].vendor).has_positions:
        return []
    missing = [
        name
        for name in ("MULTIDB_REPLICA_MAX_LAG", "MULTIDB_HEALTH_CHECK_INTERVAL")
        if getattr(settings, name, _HEALTH_SETTINGS[name][0]) is None
    ]
    if not missing:
        return []
    return [
        CheckWarning(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            "None: a replica any amount behind stays in rotation, so a user "
            "reads their own writes only for MULTIDB_PINNING_SECONDS after "
            "each write.",
            hint="Set MULTIDB_REPLICA_MAX_LAG and MULTIDB_HEALTH_CHECK_INTERVAL: "
            "the pin cookie then lives as long as the lag limit plus a probe "
            "round (see 'Read-your-writes by position' in README.rst).",
            id="multidb.W006",
        )
    ]


def _classes(entries: Iterable[Any]) -> list[type | None]:
    """The class behind each router or middleware entry; None if unimportable."""
    found: list[type | None] = []
    for entry in entries:
        if isinstance(entry, str):
            try:
                entry = import_string(entry)
            except Exception:  # Django reports unimportable entries itself.
                found.append(None)
                continue
        found.append(entry if isinstance(entry, type) else type(entry))
    return found


def _index(classes: list[type | None], base: type) -> int | None:
    for index, cls in enumerate(classes):
        if cls is not None and issubclass(cls, base):
            return index
    return None


def _writer_index(classes: list[type | None], path: str) -> int | None:
    # Compared by name: importing auth's middleware needs auth installed.
    for index, cls in enumerate(classes):
        if cls is not None and any(
            f"{base.__module__}.{base.__qualname__}" == path for base in cls.__mro__
        ):
            return index
    return None


def check_router_and_middleware() -> list[CheckMessage]:
    from .middleware import PinningRouterMiddleware
    from .routers import PinningReplicaRouter

    routers = _classes(getattr(settings, "DATABASE_ROUTERS", ()))
    middleware = _classes(getattr(settings, "MIDDLEWARE", None) or ())
    has_router = _index(routers, PinningReplicaRouter) is not None
    position = _index(middleware, PinningRouterMiddleware)

    if has_router and position is None:
        return [
            CheckWarning(
                "PinningReplicaRouter is in DATABASE_ROUTERS but "
                "PinningRouterMiddleware is not in MIDDLEWARE: a user's reads "
                "will not follow their own writes across requests.",
                hint=f"Add {MIDDLEWARE_PATH!r} near the top of MIDDLEWARE.",
                id="multidb.W002",
            )
        ]
    if position is None:
        return []
    messages: list[CheckMessage] = []
    if not has_router:
        messages.append(
            CheckWarning(
                "PinningRouterMiddleware is in MIDDLEWARE but no "
                "PinningReplicaRouter is in DATABASE_ROUTERS, so its pins "
                "have no effect.",
                hint="Add 'multidb.PinningReplicaRouter' to DATABASE_ROUTERS.",
                id="multidb.W003",
            )
        )
    for path in WRITING_MIDDLEWARE:
        writer = _writer_index(middleware, path)
        if writer is not None and writer < position:
            messages.append(
                CheckWarning(
                    f"PinningRouterMiddleware comes after {path}, which can "
                    "write to the database; its writes will not pin the user.",
                    hint=f"Move {MIDDLEWARE_PATH!r} above {path!r} in MIDDLEWARE.",
                    id="multidb.W004",
                )
            )
    return messages
