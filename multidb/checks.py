"""System checks for the settings the routers rely on.

Each check is a pure function of the settings; ``check_settings`` runs them
all and is registered by ``multidb.apps.MultiDBConfig.ready()``.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from http.cookies import CookieError, Morsel
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error
from django.core.checks import Warning as CheckWarning
from django.utils.module_loading import import_string

from .conf import DEFAULT_DB_ALIAS, DEFAULTS, conf, configured, replica_weights
from .middleware import PinningRouterMiddleware
from .rotation import smooth_sequence
from .routers import PinningReplicaRouter
from .tokens import MAX_COOKIE_SECONDS, has_positions

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
        *check_replica_groups(),
        *check_primary_for(),
        *check_pinning_settings(),
        *check_health_settings(),
        *check_read_your_writes(),
        *check_consistency_settings(),
        *check_router_and_middleware(),
        *check_unknown_settings(),
    ]


def _raw_replicas() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return conf.REPLICA_DATABASES


def _group_setting(primary: str) -> str:
    return f"MULTIDB_REPLICA_GROUPS[{primary!r}]"


def _replica_settings() -> list[tuple[str, str, Any]]:
    """``(primary, the setting that lists its replicas, its value)`` for each
    group, ``default`` first, as ``multidb.groups`` reads them."""
    groups = configured("MULTIDB_REPLICA_GROUPS")
    if not isinstance(groups, Mapping):
        groups = {}  # check_replica_groups reports it
    if DEFAULT_DB_ALIAS in groups:
        found = [
            (
                DEFAULT_DB_ALIAS,
                _group_setting(DEFAULT_DB_ALIAS),
                groups[DEFAULT_DB_ALIAS],
            )
        ]
    else:
        found = [(DEFAULT_DB_ALIAS, "REPLICA_DATABASES", _raw_replicas())]
    found.extend(
        (primary, _group_setting(primary), replicas)
        for primary, replicas in groups.items()
        if isinstance(primary, str) and primary != DEFAULT_DB_ALIAS
    )
    return found


def _primaries() -> set[str]:
    """``default`` and every other primary of ``MULTIDB_REPLICA_GROUPS``."""
    groups = configured("MULTIDB_REPLICA_GROUPS")
    others = groups if isinstance(groups, Mapping) else ()
    return {DEFAULT_DB_ALIAS, *(key for key in others if isinstance(key, str))}


def _bad_replicas(name: str, problem: Exception) -> Error:
    if name == "REPLICA_DATABASES":
        message, check_id = str(problem), "multidb.E002"
    else:
        # replica_weights() and smooth_sequence() name the setting they were
        # written for; here the replicas come from another one.
        message = str(problem).replace("REPLICA_DATABASES", name, 1)
        check_id = SETTING_IDS["MULTIDB_REPLICA_GROUPS"]
    return Error(
        message,
        hint=f"Make {name} a list of aliases, or a dict {{alias: weight}} with "
        "integer weights (0 takes a replica out of rotation).",
        id=check_id,
    )


def check_replica_databases() -> list[CheckMessage]:
    """Every group's replicas: ``default``'s (``REPLICA_DATABASES``, or
    ``MULTIDB_REPLICA_GROUPS["default"]``), then each other primary's."""
    listed = _replica_settings()
    messages: list[CheckMessage] = []
    weights_of: dict[str, dict[str, int]] = {}
    for primary, name, raw in listed:
        try:
            weights = replica_weights(raw)
            smooth_sequence(weights)
        except (TypeError, ValueError) as exc:
            messages.append(_bad_replicas(name, exc))
        else:
            weights_of[primary] = weights
    if not messages and not any(any(w.values()) for w in weights_of.values()):
        # Not for each group: a primary of its own without replicas is fine.
        single = len(listed) == 1
        return [
            CheckWarning(
                "No replica databases are configured: every read goes to "
                + (f"{DEFAULT_DB_ALIAS!r}." if single else "a primary."),
                hint=f"List your replicas' aliases in {listed[0][1]}."
                if single
                else "List each primary's replicas in MULTIDB_REPLICA_GROUPS.",
                id="multidb.W001",
            )
        ]
    primaries = _primaries()
    #: Each replica seen so far: (its primary, the setting that lists it).
    first_seen: dict[str, tuple[str, str]] = {}
    for primary, name, _ in listed:
        for alias in weights_of.get(primary, {}):
            if alias in primaries:
                messages.append(_primary_as_replica(name, primary, alias))
                continue
            if alias in first_seen:
                other, other_name = first_seen[alias]
                messages.append(
                    Error(
                        f"{alias!r} is listed as a replica of both {other!r} "
                        f"and {primary!r}: a replica replicates one primary.",
                        hint=f"Remove {alias!r} from {other_name} or from {name}.",
                        id="multidb.E029",
                    )
                )
            else:
                first_seen[alias] = (primary, name)
            if alias not in settings.DATABASES:
                messages.append(
                    Error(
                        f"{name} names {alias!r}, which is not in DATABASES.",
                        hint=f"Add {alias!r} to DATABASES or remove it from {name}.",
                        id="multidb.E001",
                    )
                )
            elif not _test_mirror(alias):
                messages.append(
                    CheckWarning(
                        f"Replica {alias!r} is not a test mirror: under the test "
                        "runner, Django would try to create a test database on it.",
                        hint=f'Set DATABASES[{alias!r}]["TEST"] = '
                        f'{{"MIRROR": "{primary}"}}.',
                        id="multidb.W005",
                    )
                )
    return messages


def _primary_as_replica(name: str, primary: str, alias: str) -> Error:
    if alias == primary:
        return Error(
            f"{name} lists {primary!r}, the primary: reads would alternate "
            "between the primary and the replicas, and multidb_status would "
            "leave it out.",
            hint=f"Remove {primary!r} from {name}. For the primary to take a "
            "share of reads, add a second DATABASES alias with its settings "
            f'(and TEST {{"MIRROR": "{primary}"}}) and list that one.',
            id="multidb.E009",
        )
    return Error(
        f"{name} lists {alias!r}, which is a primary itself: reads of "
        f"{primary!r}'s data would go to another primary, which does not "
        "replicate it.",
        hint=f"Remove {alias!r} from {name}: a database is either a primary "
        "(a key of MULTIDB_REPLICA_GROUPS, or default) or a replica of one.",
        id="multidb.E031",
    )


def check_replica_groups() -> list[CheckMessage]:
    """``MULTIDB_REPLICA_GROUPS`` itself: a dict keyed by primaries in
    ``DATABASES`` (its groups' replicas are ``check_replica_databases``'s)."""
    groups = configured("MULTIDB_REPLICA_GROUPS")
    if groups is None:
        return []
    if not isinstance(groups, Mapping):
        return [
            _bad_value(
                "MULTIDB_REPLICA_GROUPS",
                groups,
                "a dict {primary alias: list of replica aliases or {alias: weight}}",
            )
        ]
    messages: list[CheckMessage] = []
    for primary in groups:
        if not isinstance(primary, str):
            messages.append(
                Error(
                    f"MULTIDB_REPLICA_GROUPS has the key {primary!r}, which is "
                    "not a database alias (a string).",
                    hint="Key MULTIDB_REPLICA_GROUPS by the aliases of the "
                    "primaries in DATABASES.",
                    id=SETTING_IDS["MULTIDB_REPLICA_GROUPS"],
                )
            )
        elif primary not in settings.DATABASES:
            messages.append(
                Error(
                    f"MULTIDB_REPLICA_GROUPS names the primary {primary!r}, "
                    "which is not in DATABASES.",
                    hint=f"Add {primary!r} to DATABASES or remove it from "
                    "MULTIDB_REPLICA_GROUPS.",
                    id="multidb.E030",
                )
            )
    if DEFAULT_DB_ALIAS in groups:
        for name in ("REPLICA_DATABASES", "SLAVE_DATABASES"):
            if hasattr(settings, name):
                messages.append(
                    Error(
                        f"Both {name} and MULTIDB_REPLICA_GROUPS"
                        f"[{DEFAULT_DB_ALIAS!r}] list the replicas of "
                        f"{DEFAULT_DB_ALIAS!r}: the routers would use the "
                        f"second and ignore {name}.",
                        hint=f"Remove {name}, or {DEFAULT_DB_ALIAS!r} from "
                        f"MULTIDB_REPLICA_GROUPS ({name} is its shorthand).",
                        id="multidb.E028",
                    )
                )
                break
    return messages


def check_primary_for() -> list[CheckMessage]:
    target = configured("MULTIDB_PRIMARY_FOR")
    if target is None:
        return []
    if isinstance(target, str):
        return _check_chooser(target)
    if not isinstance(target, Mapping):
        return [_bad_value("MULTIDB_PRIMARY_FOR", target, _PRIMARY_FOR_VALUE)]
    primaries = _primaries()
    messages: list[CheckMessage] = []
    for key, alias in target.items():
        if not isinstance(key, str):
            messages.append(
                Error(
                    f"MULTIDB_PRIMARY_FOR has the key {key!r}, which is not an "
                    "app label or 'app_label.ModelName' (a string).",
                    hint="Key MULTIDB_PRIMARY_FOR by app labels, such as "
                    "'billing', or by 'app_label.ModelName'.",
                    id=SETTING_IDS["MULTIDB_PRIMARY_FOR"],
                )
            )
        if not isinstance(alias, str) or alias not in primaries:
            messages.append(
                Error(
                    f"MULTIDB_PRIMARY_FOR maps {key!r} to {alias!r}, which is "
                    f"not a primary: neither {DEFAULT_DB_ALIAS!r} nor a key of "
                    "MULTIDB_REPLICA_GROUPS.",
                    hint=f"Map {key!r} to one of {sorted(primaries)}, or add "
                    "that primary to MULTIDB_REPLICA_GROUPS with its replicas "
                    "(a list, empty if it has none).",
                    id="multidb.E033",
                )
            )
    return messages


_PRIMARY_FOR_VALUE = (
    "a dict {app label or 'app_label.ModelName': primary alias}, the dotted "
    "path of a callable (model, **hints) -> alias or None, or None"
)


def _check_chooser(path: str) -> list[CheckMessage]:
    try:
        chooser = import_string(path)
    except Exception as exc:  # importing runs the module: anything can fail
        problem = f"which cannot be imported ({type(exc).__name__}: {exc})"
    else:
        if callable(chooser):
            return []
        problem = f"which names {type(chooser).__name__} {chooser!r}, not a callable"
    return [
        Error(
            f"MULTIDB_PRIMARY_FOR is {path!r}, {problem}.",
            hint=f"Set MULTIDB_PRIMARY_FOR to {_PRIMARY_FOR_VALUE}.",
            id=SETTING_IDS["MULTIDB_PRIMARY_FOR"],
        )
    ]


def _test_mirror(alias: str) -> Any:
    test_settings: dict[str, Any] = settings.DATABASES[alias].get("TEST") or {}
    return test_settings.get("MIRROR")


#: One check ID per setting: whatever is wrong with that setting's value.
SETTING_IDS = {
    "MULTIDB_PINNING_COOKIE": "multidb.E004",
    "MULTIDB_PINNING_SECONDS": "multidb.E005",
    "MULTIDB_HEALTH_CHECK_TIMEOUT": "multidb.E006",
    "MULTIDB_HEALTH_CHECK_INTERVAL": "multidb.E007",
    "MULTIDB_PINNING_COOKIE_SAMESITE": "multidb.E008",
    "MULTIDB_ENCRYPT_TOKENS": "multidb.E010",
    "MULTIDB_PINNING_COOKIE_SECURE": "multidb.E011",
    "MULTIDB_PINNING_COOKIE_HTTPONLY": "multidb.E012",
    "MULTIDB_PINNING_MODE": "multidb.E013",
    "MULTIDB_PIN_UNSAFE_METHODS": "multidb.E014",
    "MULTIDB_PINNING_HEADER": "multidb.E015",
    "MULTIDB_INVALID_TOKEN": "multidb.E016",
    "MULTIDB_REPLICA_MAX_LAG": "multidb.E017",
    "MULTIDB_REPLICA_MAX_LAG_BYTES": "multidb.E018",
    "MULTIDB_HEALTH_MIN_REPLICAS": "multidb.E019",
    "MULTIDB_HEALTH_DETAILS": "multidb.E020",
    "MULTIDB_NO_REPLICA": "multidb.E021",
    "MULTIDB_MIN_SERVING_REPLICAS": "multidb.E022",
    "MULTIDB_CATCH_UP_WAIT": "multidb.E025",
    "MULTIDB_MONOTONIC_READS": "multidb.E026",
    "MULTIDB_REPLICA_GROUPS": "multidb.E027",
    "MULTIDB_PRIMARY_FOR": "multidb.E032",
}


def _bad_value(name: str, value: Any, expected: str) -> Error:
    return Error(
        f"{name} must be {expected}, not {value!r}.",
        hint=f"Set {name} to {expected}, or remove it for the default, "
        f"{DEFAULTS[name]!r}.",
        id=SETTING_IDS[name],
    )


def _legal_cookie_name(name: str) -> bool:
    # Django's set_cookie() stores the cookie with Morsel.set(), which raises
    # CookieError for an illegal or reserved name.
    try:
        Morsel[str]().set(name, "", "")
    except CookieError:
        return False
    return True


def _whole_seconds(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def check_pinning_settings() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    cookie = configured("MULTIDB_PINNING_COOKIE")
    if not isinstance(cookie, str) or not cookie:
        messages.append(
            _bad_value("MULTIDB_PINNING_COOKIE", cookie, "a non-empty string")
        )
    elif not _legal_cookie_name(cookie):
        messages.append(
            Error(
                f"MULTIDB_PINNING_COOKIE is {cookie!r}, which is not a legal "
                "cookie name: every response that sets the pin cookie would "
                "raise CookieError.",
                hint="Set MULTIDB_PINNING_COOKIE to a name of letters, digits "
                "and !#$%&'*+-.^_`|~: (no spaces), other than a cookie "
                "attribute such as 'expires' or 'path'.",
                id="multidb.E004",
            )
        )
    seconds = configured("MULTIDB_PINNING_SECONDS")
    whole_seconds = _whole_seconds(seconds)
    if whole_seconds is None or whole_seconds < 0:
        messages.append(
            _bad_value(
                "MULTIDB_PINNING_SECONDS", seconds, "a whole number of seconds >= 0"
            )
        )
    elif whole_seconds > MAX_COOKIE_SECONDS:
        messages.append(
            Error(
                f"MULTIDB_PINNING_SECONDS is {seconds!r}, more than 400 days: "
                "browsers keep a cookie for 400 days at most, and set_cookie() "
                "fails outright on a lifetime past the year 9999.",
                hint=f"Set MULTIDB_PINNING_SECONDS to at most {MAX_COOKIE_SECONDS} "
                "(400 days); a few seconds is the usual value.",
                id="multidb.E005",
            )
        )
    secure = configured("MULTIDB_PINNING_COOKIE_SECURE")
    httponly = configured("MULTIDB_PINNING_COOKIE_HTTPONLY")
    for name, value in (
        ("MULTIDB_PINNING_COOKIE_SECURE", secure),
        ("MULTIDB_PINNING_COOKIE_HTTPONLY", httponly),
    ):
        if not isinstance(value, bool):
            messages.append(_bad_value(name, value, "True or False"))
    samesite = configured("MULTIDB_PINNING_COOKIE_SAMESITE")
    if samesite not in (None, False) and (
        not isinstance(samesite, str) or samesite.lower() not in _SAMESITE_VALUES
    ):
        messages.append(
            _bad_value(
                "MULTIDB_PINNING_COOKIE_SAMESITE",
                samesite,
                "'Lax', 'Strict', 'None', or None",
            )
        )
    elif isinstance(samesite, str) and samesite.lower() == "none" and not secure:
        messages.append(
            Error(
                f"MULTIDB_PINNING_COOKIE_SAMESITE is {samesite!r} but "
                "MULTIDB_PINNING_COOKIE_SECURE is not True: browsers drop a "
                "SameSite=None cookie that is not Secure, so a user would not "
                "read their own writes.",
                hint="Set MULTIDB_PINNING_COOKIE_SECURE = True (the site must "
                "be served over HTTPS), or MULTIDB_PINNING_COOKIE_SAMESITE = "
                "'Lax'.",
                id="multidb.E008",
            )
        )
    mode = configured("MULTIDB_PINNING_MODE")
    if mode not in ("auto", "time"):
        messages.append(_bad_value("MULTIDB_PINNING_MODE", mode, "'auto' or 'time'"))
    unsafe = configured("MULTIDB_PIN_UNSAFE_METHODS")
    if not isinstance(unsafe, bool):
        messages.append(
            _bad_value("MULTIDB_PIN_UNSAFE_METHODS", unsafe, "True or False")
        )
    header = configured("MULTIDB_PINNING_HEADER")
    if header is not None and (not isinstance(header, str) or not header):
        messages.append(
            _bad_value("MULTIDB_PINNING_HEADER", header, "a header name or None")
        )
    invalid = configured("MULTIDB_INVALID_TOKEN")
    if invalid not in ("pin", "ignore"):
        messages.append(
            _bad_value("MULTIDB_INVALID_TOKEN", invalid, "'pin' or 'ignore'")
        )
    elif invalid == "ignore" and mode == "time":
        messages.append(
            CheckWarning(
                "MULTIDB_INVALID_TOKEN = 'ignore' has no effect with "
                "MULTIDB_PINNING_MODE = 'time': time pinning never reads a "
                "position token.",
                hint="Remove MULTIDB_INVALID_TOKEN, or set MULTIDB_PINNING_MODE "
                "= 'auto' for it to apply.",
                id="multidb.W009",
            )
        )
    encrypt = configured("MULTIDB_ENCRYPT_TOKENS")
    if not isinstance(encrypt, bool):
        messages.append(_bad_value("MULTIDB_ENCRYPT_TOKENS", encrypt, "True or False"))
    elif encrypt and importlib.util.find_spec("cryptography") is None:
        messages.append(
            Error(
                "MULTIDB_ENCRYPT_TOKENS is True but the cryptography package "
                "is not installed: every position token would pin by time.",
                hint="pip install 'django-replica-router[encrypt]', or set "
                "MULTIDB_ENCRYPT_TOKENS = False.",
                id="multidb.E010",
            )
        )
    return messages


def _number(value: Any, *, allow_none: bool, integer: bool, positive: bool) -> bool:
    if value is None:
        return allow_none
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return value > 0 if positive else value >= 0


#: name: (allow None, whole number, must be > 0)
_HEALTH_SETTINGS = {
    "MULTIDB_HEALTH_CHECK_INTERVAL": (True, False, True),
    "MULTIDB_HEALTH_CHECK_TIMEOUT": (False, False, True),
    "MULTIDB_REPLICA_MAX_LAG": (True, False, False),
    "MULTIDB_REPLICA_MAX_LAG_BYTES": (True, True, False),
    "MULTIDB_HEALTH_MIN_REPLICAS": (False, True, False),
    "MULTIDB_MIN_SERVING_REPLICAS": (False, True, False),
}

#: name: (largest value, check ID, why it cannot be larger, hint)
_HEALTH_LIMITS = {
    "MULTIDB_HEALTH_CHECK_TIMEOUT": (
        3600,
        "multidb.E006",
        "a probe waits up to this long before it calls a database down, and "
        "an infinite timeout makes every probe fail",
        "Set MULTIDB_HEALTH_CHECK_TIMEOUT to a few seconds (at most 3600).",
    ),
    "MULTIDB_HEALTH_CHECK_INTERVAL": (
        86400,
        "multidb.E007",
        "the prober waits this long between rounds, and cannot wait forever",
        "Set MULTIDB_HEALTH_CHECK_INTERVAL to a few seconds (at most 86400), "
        "or to None to turn health checks off.",
    ),
}


def _too_large(value: Any, limit: float) -> bool:
    # +inf counts: it is a number, just too large; NaN is no number at all.
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value > limit
    )


def check_health_settings() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for name, (allow_none, integer, positive) in _HEALTH_SETTINGS.items():
        value = configured(name)
        if name in _HEALTH_LIMITS and _too_large(value, _HEALTH_LIMITS[name][0]):
            limit, check_id, why, hint = _HEALTH_LIMITS[name]
            messages.append(
                Error(
                    f"{name} must be finite and at most {limit} seconds, not "
                    f"{value!r}: {why}.",
                    hint=hint,
                    id=check_id,
                )
            )
        elif not _number(
            value, allow_none=allow_none, integer=integer, positive=positive
        ):
            kind = "a whole number" if integer else "a finite number"
            bound = "> 0" if positive else ">= 0"
            none = " or None" if allow_none else ""
            messages.append(_bad_value(name, value, f"{kind} {bound}{none}"))
    no_replica = configured("MULTIDB_NO_REPLICA")
    if no_replica not in ("primary", "least-lagged", "error"):
        messages.append(
            _bad_value(
                "MULTIDB_NO_REPLICA", no_replica, "'primary', 'least-lagged' or 'error'"
            )
        )
    details = configured("MULTIDB_HEALTH_DETAILS")
    if details not in ("never", "staff", "always"):
        messages.append(
            _bad_value(
                "MULTIDB_HEALTH_DETAILS", details, "'never', 'staff' or 'always'"
            )
        )
    elif details == "staff" and not apps.is_installed("django.contrib.auth"):
        messages.append(
            CheckWarning(
                "MULTIDB_HEALTH_DETAILS is 'staff' but django.contrib.auth is "
                "not installed: no request comes from a staff user, so the "
                "health view never shows its details.",
                hint="Add 'django.contrib.auth' to INSTALLED_APPS, or set "
                "MULTIDB_HEALTH_DETAILS to 'never' or 'always'.",
                id="multidb.W008",
            )
        )
    return messages


def check_read_your_writes() -> list[CheckMessage]:
    """A position token outlives the lag limit only if there is one, and probes
    that enforce it (see ``multidb.tokens.cookie_seconds``)."""
    if configured("MULTIDB_PINNING_MODE") != "auto":
        return []
    if not has_positions():
        return []
    missing = [
        name
        for name in ("MULTIDB_REPLICA_MAX_LAG", "MULTIDB_HEALTH_CHECK_INTERVAL")
        if configured(name) is None
    ]
    if not missing:
        return []
    return [
        CheckWarning(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            "None: a replica any amount behind stays in rotation, so a user "
            "reads their own writes only for MULTIDB_PINNING_SECONDS after "
            "each write.",
            hint="Set MULTIDB_REPLICA_MAX_LAG to a number of seconds and "
            "MULTIDB_HEALTH_CHECK_INTERVAL to a number of seconds (not None): "
            "the pin cookie then lives as long as the lag limit plus a probe "
            "round.",
            id="multidb.W006",
        )
    ]


#: The longest catch-up wait, in milliseconds.
MAX_CATCH_UP_WAIT = 10_000


def check_consistency_settings() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    wait = configured("MULTIDB_CATCH_UP_WAIT")
    if not _number(wait, allow_none=False, integer=False, positive=False) or (
        wait > MAX_CATCH_UP_WAIT
    ):
        messages.append(
            _bad_value(
                "MULTIDB_CATCH_UP_WAIT",
                wait,
                f"a number of milliseconds from 0 to {MAX_CATCH_UP_WAIT}",
            )
        )
    monotonic = configured("MULTIDB_MONOTONIC_READS")
    if not isinstance(monotonic, bool):
        messages.append(
            _bad_value("MULTIDB_MONOTONIC_READS", monotonic, "True or False")
        )
    return messages


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


def known_settings() -> frozenset[str]:
    """Every ``MULTIDB_*`` setting the package reads."""
    return frozenset(DEFAULTS)


def check_unknown_settings() -> list[CheckMessage]:
    known = sorted(known_settings())
    messages: list[CheckMessage] = []
    for name in sorted(dir(settings)):
        if not name.startswith("MULTIDB_") or not name.isupper() or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        messages.append(
            CheckWarning(
                f"{name} is not a setting of multidb, which ignores it.",
                hint=f"Did you mean {close[0]}?"
                if close
                else f"Remove {name}, or rename it to one of: {', '.join(known)}.",
                id="multidb.W007",
            )
        )
    return messages
