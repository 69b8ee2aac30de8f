import copy
import math
import re
import sys
from contextlib import contextmanager
from functools import cached_property
from http.cookies import CookieError
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.core import signing
from django.core.checks import Error, registry, run_checks
from django.core.checks import Warning as CheckWarning
from django.http import HttpResponse
from django.test import override_settings
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from multidb import (
    MasterSlaveRouter,
    PinningMasterSlaveRouter,
    PinningReplicaRouter,
    ReplicaRouter,
    groups,
)
from multidb.checks import (
    SETTING_IDS,
    check_consistency_settings,
    check_health_settings,
    check_pinning_settings,
    check_replica_databases,
    check_router_and_middleware,
    check_settings,
    check_unknown_settings,
    known_settings,
)
from multidb.conf import DEFAULTS, Settings
from multidb.middleware import PinningRouterMiddleware
from multidb.tokens import MAX_COOKIE_SECONDS
from tests.app.models import Item
from tests.conftest import reset_state

MIDDLEWARE = "multidb.middleware.PinningRouterMiddleware"
SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
PINNING_ROUTER = "multidb.PinningReplicaRouter"
REPLICA_ROUTER = "multidb.ReplicaRouter"


@contextmanager
def settings_without_signals(**values):
    """Override settings without sending ``setting_changed``.

    Django's own receivers would instantiate ``DATABASE_ROUTERS`` (failing on
    an unimportable path, warning for the deprecated routers) and warn about
    overriding ``DATABASES``; the checks only read the settings.
    """
    with override_settings():
        for name, value in values.items():
            setattr(settings, name, value)
        yield


def ids(messages):
    return [message.id for message in messages]


# --- registration ------------------------------------------------------------


def test_check_settings_is_registered_by_the_app_config():
    assert check_settings in registry.registry.registered_checks
    assert "multidb" in check_settings.tags


def test_run_checks_reports_multidb_messages():
    assert [m for m in run_checks() if m.id.startswith("multidb.")] == []
    with override_settings(REPLICA_DATABASES=["missing"]):
        assert ids(run_checks(tags=["multidb"])) == ["multidb.E001"]


def test_test_settings_produce_no_messages():
    assert check_settings() == []


def test_check_settings_runs_every_check():
    with override_settings(
        REPLICA_DATABASES=[],
        MULTIDB_PINNING_SECONDS=-1,
        MIDDLEWARE=[],
        MULTIDB_PINING_SECONDS=1,
    ):
        assert ids(check_settings()) == [
            "multidb.W001",
            "multidb.E005",
            "multidb.W002",
            "multidb.W007",
        ]


# --- REPLICA_DATABASES -------------------------------------------------------


@override_settings(REPLICA_DATABASES=["replica1", "missing", "gone"])
def test_e001_for_each_replica_not_in_databases():
    messages = check_replica_databases()
    assert ids(messages) == ["multidb.E001", "multidb.E001"]
    assert all(isinstance(m, Error) for m in messages)
    assert "'missing'" in messages[0].msg
    assert "'gone'" in messages[1].msg


@pytest.mark.parametrize(
    "value",
    [
        "replica1",
        5,
        [1],
        {"replica1": -1},
        {"replica1": 1.5},
        {"replica1": True},
        {"replica1": 10_000, "replica2": 1},
    ],
)
def test_e002_for_a_bad_replica_databases_value(value):
    with override_settings(REPLICA_DATABASES=value):
        messages = check_replica_databases()
    assert ids(messages) == ["multidb.E002"]
    assert isinstance(messages[0], Error)


@pytest.mark.parametrize("value", [[], {}, None, {"replica1": 0, "replica2": 0}])
def test_w001_when_no_replica_takes_reads(value):
    with override_settings(REPLICA_DATABASES=value):
        messages = check_replica_databases()
    assert ids(messages) == ["multidb.W001"]
    assert isinstance(messages[0], CheckWarning)


def test_w001_when_replica_databases_is_unset(settings):
    del settings.REPLICA_DATABASES
    assert ids(check_replica_databases()) == ["multidb.W001"]


@override_settings(REPLICA_DATABASES={"replica1": 2, "replica2": 0})
def test_weighted_replica_databases_passes():
    assert check_replica_databases() == []


@pytest.mark.parametrize(
    "value",
    [["default"], ["replica1", "default"], {"default": 1, "replica1": 1}],
)
def test_e009_when_replica_databases_lists_the_primary(value):
    with override_settings(REPLICA_DATABASES=value):
        messages = check_replica_databases()
    assert ids(messages) == ["multidb.E009"]
    assert isinstance(messages[0], Error)
    assert "REPLICA_DATABASES" in messages[0].hint


def test_w005_for_a_replica_that_is_not_a_test_mirror():
    databases = copy.deepcopy(settings.DATABASES)
    databases["replica1"]["TEST"] = {"NAME": "test_replica1"}
    del databases["replica2"]["TEST"]
    with settings_without_signals(DATABASES=databases):
        messages = check_replica_databases()
    assert ids(messages) == ["multidb.W005", "multidb.W005"]
    assert "'replica1'" in messages[0].msg
    assert "'replica2'" in messages[1].msg


def test_slave_databases_is_checked_without_leaking_a_deprecation_warning(settings):
    del settings.REPLICA_DATABASES
    settings.SLAVE_DATABASES = ["replica1", "missing"]
    assert ids(check_settings()) == ["multidb.E001"]


# --- MULTIDB_PINNING_* -------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("MULTIDB_PINNING_COOKIE", ""),
        ("MULTIDB_PINNING_COOKIE", 5),
        ("MULTIDB_PINNING_COOKIE", None),
        ("MULTIDB_PINNING_SECONDS", -1),
        ("MULTIDB_PINNING_SECONDS", "-1"),
        ("MULTIDB_PINNING_SECONDS", "abc"),
        ("MULTIDB_PINNING_SECONDS", "1.5"),
        ("MULTIDB_PINNING_SECONDS", None),
        ("MULTIDB_PINNING_SECONDS", True),
        ("MULTIDB_PINNING_SECONDS", math.nan),
        ("MULTIDB_PINNING_COOKIE_SECURE", "yes"),
        ("MULTIDB_PINNING_COOKIE_SECURE", 1),
        ("MULTIDB_PINNING_COOKIE_HTTPONLY", "no"),
        ("MULTIDB_PINNING_COOKIE_HTTPONLY", None),
        ("MULTIDB_PINNING_COOKIE_SAMESITE", "sometimes"),
        ("MULTIDB_PINNING_COOKIE_SAMESITE", 1),
        ("MULTIDB_PINNING_COOKIE_SAMESITE", True),
    ],
)
def test_each_bad_pinning_setting_gets_that_settings_own_id(setting, value):
    with override_settings(**{setting: value}):
        messages = check_pinning_settings()
    assert ids(messages) == [SETTING_IDS[setting]]
    assert setting in messages[0].msg


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("MULTIDB_PINNING_COOKIE", "pin"),
        ("MULTIDB_PINNING_SECONDS", 0),
        ("MULTIDB_PINNING_SECONDS", 60),
        ("MULTIDB_PINNING_SECONDS", "30"),
        ("MULTIDB_PINNING_COOKIE_SECURE", True),
        ("MULTIDB_PINNING_COOKIE_HTTPONLY", True),
        ("MULTIDB_PINNING_COOKIE_SAMESITE", None),
        ("MULTIDB_PINNING_COOKIE_SAMESITE", False),
        ("MULTIDB_PINNING_COOKIE_SAMESITE", "Strict"),
        ("MULTIDB_PINNING_COOKIE_SAMESITE", "LAX"),
    ],
)
def test_valid_pinning_setting_passes(setting, value):
    with override_settings(**{setting: value}):
        assert check_pinning_settings() == []


@override_settings(
    MULTIDB_PINNING_COOKIE="",
    MULTIDB_PINNING_SECONDS="x",
    MULTIDB_PINNING_COOKIE_SECURE="x",
    MULTIDB_PINNING_COOKIE_HTTPONLY="x",
    MULTIDB_PINNING_COOKIE_SAMESITE="x",
)
def test_one_message_for_each_bad_pinning_setting_with_its_own_id():
    assert ids(check_pinning_settings()) == [
        "multidb.E004", "multidb.E005", "multidb.E011", "multidb.E012", "multidb.E008",
    ]  # fmt: skip


@override_settings(MULTIDB_PINNING_SECONDS=math.inf)
def test_infinite_pinning_seconds_is_an_error():
    assert ids(check_pinning_settings()) == ["multidb.E005"]


# --- settings that used to pass the checks and fail at run time ---------------

#: Cookie names: (name, whether Django can set a cookie by that name).
COOKIE_NAMES = [
    ("multidb_pin_writes", True),
    ("pin-writes.v2", True),
    ("pin writes", False),
    ("pin;writes", False),
    ("pin=writes", False),
    ("pín", False),
    ("expires", False),
    ("Path", False),
    ("max-age", False),
]


@pytest.mark.parametrize(("name", "legal"), COOKIE_NAMES)
def test_e004_for_exactly_the_cookie_names_django_cannot_set(name, legal):
    try:
        HttpResponse().set_cookie(name, "y")
        settable = True
    except CookieError:
        settable = False
    with override_settings(MULTIDB_PINNING_COOKIE=name):
        messages = check_pinning_settings()

    assert settable == legal
    assert ids(messages) == ([] if legal else ["multidb.E004"])


@override_settings(MULTIDB_PINNING_COOKIE="pin writes")
def test_e004_names_the_setting_in_its_hint():
    (message,) = check_pinning_settings()
    assert isinstance(message, Error)
    assert "MULTIDB_PINNING_COOKIE" in message.hint


@pytest.mark.parametrize("value", [10**12, MAX_COOKIE_SECONDS + 1, str(10**12)])
def test_e005_for_pinning_seconds_beyond_400_days(value):
    with override_settings(MULTIDB_PINNING_SECONDS=value):
        messages = check_pinning_settings()
    assert ids(messages) == ["multidb.E005"]
    assert str(MAX_COOKIE_SECONDS) in messages[0].hint


def test_pinning_seconds_of_400_days_passes_and_django_sets_such_a_cookie():
    assert MAX_COOKIE_SECONDS == 34_560_000
    with override_settings(MULTIDB_PINNING_SECONDS=MAX_COOKIE_SECONDS):
        assert check_pinning_settings() == []
    response = HttpResponse()
    response.set_cookie("pin", "y", max_age=MAX_COOKIE_SECONDS)
    assert response.cookies["pin"]["max-age"] == MAX_COOKIE_SECONDS


@pytest.mark.parametrize("value", [math.inf, 3601, 1e10])
def test_e006_for_a_health_check_timeout_over_an_hour(value):
    with override_settings(MULTIDB_HEALTH_CHECK_TIMEOUT=value):
        messages = check_health_settings()
    assert ids(messages) == ["multidb.E006"]
    assert "MULTIDB_HEALTH_CHECK_TIMEOUT" in messages[0].hint
    assert "3600" in messages[0].hint


@pytest.mark.parametrize("value", [math.inf, 86401, 1e10])
def test_e007_for_a_health_check_interval_over_a_day(value):
    with override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=value):
        messages = check_health_settings()
    assert ids(messages) == ["multidb.E007"]
    assert "MULTIDB_HEALTH_CHECK_INTERVAL" in messages[0].hint
    assert "86400" in messages[0].hint


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MULTIDB_HEALTH_CHECK_TIMEOUT", 3600),
        ("MULTIDB_HEALTH_CHECK_TIMEOUT", 3600.0),
        ("MULTIDB_HEALTH_CHECK_INTERVAL", 86400),
        ("MULTIDB_HEALTH_CHECK_INTERVAL", None),
    ],
)
def test_health_timings_at_their_limits_pass(name, value):
    with override_settings(**{name: value}):
        assert check_health_settings() == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MULTIDB_REPLICA_MAX_LAG", math.inf),
        ("MULTIDB_REPLICA_MAX_LAG", math.nan),
        ("MULTIDB_REPLICA_MAX_LAG", -math.inf),
        ("MULTIDB_HEALTH_CHECK_INTERVAL", math.nan),
        ("MULTIDB_HEALTH_CHECK_INTERVAL", -math.inf),
        ("MULTIDB_HEALTH_CHECK_TIMEOUT", math.nan),
        ("MULTIDB_HEALTH_CHECK_TIMEOUT", -math.inf),
    ],
)
def test_a_health_setting_that_is_not_finite_is_an_error(name, value):
    with override_settings(**{name: value}):
        messages = check_health_settings()
    assert ids(messages) == [SETTING_IDS[name]]
    assert "finite" in messages[0].msg


@pytest.mark.parametrize("samesite", ["None", "none"])
def test_e008_for_samesite_none_without_secure(samesite):
    with override_settings(MULTIDB_PINNING_COOKIE_SAMESITE=samesite):
        messages = check_pinning_settings()
    assert ids(messages) == ["multidb.E008"]
    assert "MULTIDB_PINNING_COOKIE_SECURE" in messages[0].hint


@pytest.mark.parametrize("samesite", ["None", "none"])
def test_samesite_none_with_secure_passes(samesite):
    with override_settings(
        MULTIDB_PINNING_COOKIE_SAMESITE=samesite, MULTIDB_PINNING_COOKIE_SECURE=True
    ):
        assert check_pinning_settings() == []


# --- MULTIDB_INVALID_TOKEN, MULTIDB_HEALTH_DETAILS, MULTIDB_ENCRYPT_TOKENS ----------


@pytest.mark.parametrize(
    ("name", "value", "check"),
    [
        ("MULTIDB_INVALID_TOKEN", "drop", check_pinning_settings),
        ("MULTIDB_INVALID_TOKEN", None, check_pinning_settings),
        ("MULTIDB_INVALID_TOKEN", "PIN", check_pinning_settings),
        ("MULTIDB_HEALTH_DETAILS", "admins", check_health_settings),
        ("MULTIDB_HEALTH_DETAILS", True, check_health_settings),
        ("MULTIDB_HEALTH_DETAILS", None, check_health_settings),
    ],
)
def test_a_bad_invalid_token_or_health_details_setting_is_an_error(name, value, check):
    with override_settings(**{name: value}):
        messages = check()
    assert ids(messages) == [SETTING_IDS[name]]
    assert name in messages[0].msg


@pytest.mark.parametrize(
    ("name", "value", "check"),
    [
        ("MULTIDB_INVALID_TOKEN", "pin", check_pinning_settings),
        ("MULTIDB_INVALID_TOKEN", "ignore", check_pinning_settings),
        ("MULTIDB_HEALTH_DETAILS", "never", check_health_settings),
        ("MULTIDB_HEALTH_DETAILS", "staff", check_health_settings),
        ("MULTIDB_HEALTH_DETAILS", "always", check_health_settings),
    ],
)
def test_valid_invalid_token_and_health_details_settings_pass(name, value, check):
    with override_settings(**{name: value}):
        assert check() == []


@override_settings(MULTIDB_HEALTH_DETAILS="staff", INSTALLED_APPS=["multidb"])
def test_w008_for_staff_health_details_without_django_contrib_auth():
    messages = check_health_settings()
    assert ids(messages) == ["multidb.W008"]
    assert isinstance(messages[0], CheckWarning)
    assert "MULTIDB_HEALTH_DETAILS" in messages[0].hint


@pytest.mark.parametrize("details", ["never", "always"])
@override_settings(INSTALLED_APPS=["multidb"])
def test_health_details_other_than_staff_need_no_auth(details):
    with override_settings(MULTIDB_HEALTH_DETAILS=details):
        assert check_health_settings() == []


@override_settings(MULTIDB_INVALID_TOKEN="ignore", MULTIDB_PINNING_MODE="time")
def test_w009_for_ignoring_invalid_tokens_in_time_mode():
    messages = check_pinning_settings()
    assert ids(messages) == ["multidb.W009"]
    assert isinstance(messages[0], CheckWarning)
    assert "MULTIDB_INVALID_TOKEN" in messages[0].hint


@override_settings(MULTIDB_INVALID_TOKEN="pin", MULTIDB_PINNING_MODE="time")
def test_the_default_invalid_token_in_time_mode_passes():
    assert check_pinning_settings() == []


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_e010_for_an_encrypt_tokens_setting_that_is_not_a_bool(value):
    with override_settings(MULTIDB_ENCRYPT_TOKENS=value):
        messages = check_pinning_settings()
    assert ids(messages) == ["multidb.E010"]
    assert "MULTIDB_ENCRYPT_TOKENS" in messages[0].msg


@pytest.mark.parametrize("value", [True, False])
def test_encrypting_tokens_with_cryptography_installed_passes(value):
    with override_settings(MULTIDB_ENCRYPT_TOKENS=value):
        assert check_pinning_settings() == []


def test_e010_for_encrypted_tokens_without_cryptography(monkeypatch):
    from multidb import tokens

    monkeypatch.setitem(sys.modules, "cryptography", None)  # as if not installed
    with override_settings(MULTIDB_ENCRYPT_TOKENS=True):
        messages = check_pinning_settings()
        sealed = signing.TimestampSigner(salt=tokens.SALT).sign(tokens.SEALED + "AAAA")

        assert tokens.pin_for(sealed, tokens.NO_PIN) is tokens.NO_PIN
    assert ids(messages) == ["multidb.E010"]
    assert "django-replica-router[encrypt]" in messages[0].hint


# --- unknown MULTIDB_* settings ----------------------------------------------


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("MULTIDB_PINING_SECONDS", "MULTIDB_PINNING_SECONDS"),
        ("MULTIDB_HEALTH_CHECK_INTERVALL", "MULTIDB_HEALTH_CHECK_INTERVAL"),
        ("MULTIDB_REPLICA_MAXLAG", "MULTIDB_REPLICA_MAX_LAG"),
        ("MULTIDB_INVALID_TOKENS", "MULTIDB_INVALID_TOKEN"),
    ],
)
def test_w007_for_a_misspelt_setting_suggests_the_right_name(typo, meant):
    with override_settings(**{typo: 1}):
        messages = check_unknown_settings()
    assert ids(messages) == ["multidb.W007"]
    assert isinstance(messages[0], CheckWarning)
    assert typo in messages[0].msg
    assert messages[0].hint == f"Did you mean {meant}?"


@override_settings(MULTIDB_QQQQQQQQQQQQQQQQQQQQQQQQ=1)
def test_w007_for_an_unknown_setting_with_no_close_match_lists_the_settings():
    (message,) = check_unknown_settings()
    assert message.id == "multidb.W007"
    assert "MULTIDB_PINNING_SECONDS" in message.hint
    assert "Did you mean" not in message.hint


def test_w007_reports_each_unknown_setting_once_in_order():
    with override_settings(MULTIDB_PINING_MODE="time", MULTIDB_HEALTH_DETAIL="staff"):
        messages = check_unknown_settings()
    assert [m.msg.split()[0] for m in messages] == [
        "MULTIDB_HEALTH_DETAIL",
        "MULTIDB_PINING_MODE",
    ]


def test_every_known_setting_set_at_once_passes():
    assert "MULTIDB_PINNING_SECONDS" in known_settings()
    with override_settings(**dict.fromkeys(known_settings())):
        assert check_unknown_settings() == []


def test_every_multidb_name_the_package_reads_is_known():
    package = Path(__file__).resolve().parent.parent / "multidb"
    used = {
        name
        for path in package.glob("*.py")
        for name in re.findall(r"\bMULTIDB_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
    }
    assert "MULTIDB_PINNING_SECONDS" in used
    assert used <= known_settings()


def test_every_setting_of_conf_settings_has_a_default_and_a_check_id():
    properties = {
        f"MULTIDB_{name}"
        for name, value in vars(Settings).items()
        if isinstance(value, (property, cached_property))
        and name != "REPLICA_DATABASES"
    }
    assert properties == known_settings() == set(DEFAULTS) == set(SETTING_IDS)
    assert len(set(SETTING_IDS.values())) == len(SETTING_IDS)


def test_settings_named_like_ours_in_lower_case_or_without_the_prefix_pass():
    with settings_without_signals(multidb_pining_seconds=1, PINING_SECONDS=1):
        assert check_unknown_settings() == []


# --- hints --------------------------------------------------------------------


@override_settings(
    REPLICA_DATABASES=["default", "missing"],
    MULTIDB_PINNING_COOKIE="",
    MULTIDB_PINNING_SECONDS="x",
    MULTIDB_PINNING_COOKIE_SECURE="x",
    MULTIDB_PINNING_COOKIE_HTTPONLY="x",
    MULTIDB_PINNING_COOKIE_SAMESITE="x",
    MULTIDB_PINNING_MODE="x",
    MULTIDB_PIN_UNSAFE_METHODS="x",
    MULTIDB_PINNING_HEADER="",
    MULTIDB_INVALID_TOKEN="x",
    MULTIDB_HEALTH_DETAILS="x",
    MULTIDB_HEALTH_CHECK_TIMEOUT=math.inf,
    MULTIDB_HEALTH_CHECK_INTERVAL=math.inf,
    MULTIDB_REPLICA_MAX_LAG=math.nan,
    MULTIDB_REPLICA_MAX_LAG_BYTES=-1,
    MULTIDB_HEALTH_MIN_REPLICAS="x",
    MULTIDB_PINING_SECONDS=1,
)
def test_every_hint_names_a_setting_and_none_points_to_the_readme():
    messages = check_settings()
    assert ids(messages) == [
        "multidb.E009",
        "multidb.E001",
        "multidb.E004",
        "multidb.E005",
        "multidb.E011",
        "multidb.E012",
        "multidb.E008",
        "multidb.E013",
        "multidb.E014",
        "multidb.E015",
        "multidb.E016",
        "multidb.E007",
        "multidb.E006",
        "multidb.E017",
        "multidb.E018",
        "multidb.E019",
        "multidb.E020",
        "multidb.W007",
    ]
    for message in messages:
        assert "README" not in message.hint, message.id
        names = re.findall(r"\b(?:MULTIDB_[A-Z_]+|REPLICA_DATABASES)\b", message.hint)
        assert names, message


@override_settings(MULTIDB_PINNING_SECONDS=-1)
def test_a_bad_value_hint_names_the_setting_the_fix_and_the_default():
    (message,) = check_pinning_settings()
    assert message.hint == (
        "Set MULTIDB_PINNING_SECONDS to a whole number of seconds >= 0, or "
        "remove it for the default, 15."
    )


@pytest.mark.parametrize(
    ("name", "value"), [("MULTIDB_PINNING_COOKIE", 5), ("MULTIDB_REPLICA_MAX_LAG", -1)]
)
def test_a_bad_value_message_names_the_setting_in_its_hint_too(name, value):
    with override_settings(**{name: value}):
        messages = [*check_pinning_settings(), *check_health_settings()]
    assert ids(messages) == [SETTING_IDS[name]]
    assert messages[0].hint.startswith(f"Set {name} to ")


# --- DATABASE_ROUTERS and MIDDLEWARE ----------------------------------------


@override_settings(DATABASE_ROUTERS=[PINNING_ROUTER], MIDDLEWARE=[SESSIONS, AUTH])
def test_w002_for_pinning_router_without_the_middleware():
    messages = check_router_and_middleware()
    assert ids(messages) == ["multidb.W002"]
    assert isinstance(messages[0], CheckWarning)


@override_settings(DATABASE_ROUTERS=[PINNING_ROUTER], MIDDLEWARE=None)
def test_w002_when_middleware_is_none():
    assert ids(check_router_and_middleware()) == ["multidb.W002"]


@override_settings(DATABASE_ROUTERS=[REPLICA_ROUTER], MIDDLEWARE=[MIDDLEWARE])
def test_w003_for_middleware_without_a_pinning_router():
    assert ids(check_router_and_middleware()) == ["multidb.W003"]


@override_settings(DATABASE_ROUTERS=[], MIDDLEWARE=[MIDDLEWARE])
def test_w003_for_middleware_without_any_router():
    assert ids(check_router_and_middleware()) == ["multidb.W003"]


@override_settings(DATABASE_ROUTERS=[REPLICA_ROUTER], MIDDLEWARE=[SESSIONS, AUTH])
def test_replica_router_without_middleware_passes():
    assert check_router_and_middleware() == []


@pytest.mark.parametrize(
    ("middleware", "after"),
    [
        ([SESSIONS, MIDDLEWARE, AUTH], [SESSIONS]),
        ([AUTH, MIDDLEWARE, SESSIONS], [AUTH]),
        ([SESSIONS, AUTH, MIDDLEWARE], [SESSIONS, AUTH]),
        ([AUTH, SESSIONS, MIDDLEWARE], [SESSIONS, AUTH]),
        ([MIDDLEWARE, SESSIONS, AUTH], []),
        ([MIDDLEWARE], []),
    ],
)
def test_w004_once_for_each_writing_middleware_before_the_pinning_one(
    middleware, after
):
    with override_settings(DATABASE_ROUTERS=[PINNING_ROUTER], MIDDLEWARE=middleware):
        messages = check_router_and_middleware()
    assert ids(messages) == ["multidb.W004"] * len(after)
    assert all(path in m.msg for m, path in zip(messages, after, strict=True))


class CustomSessionMiddleware(SessionMiddleware):
    pass


class CustomPinningMiddleware(PinningRouterMiddleware):
    pass


@override_settings(
    DATABASE_ROUTERS=[PINNING_ROUTER],
    MIDDLEWARE=[
        f"{__name__}.CustomSessionMiddleware",
        f"{__name__}.CustomPinningMiddleware",
    ],
)
def test_w004_sees_subclasses_of_both_middleware():
    assert ids(check_router_and_middleware()) == ["multidb.W004"]


@override_settings(
    DATABASE_ROUTERS=[PINNING_ROUTER], MIDDLEWARE=[SESSIONS, MIDDLEWARE, AUTH]
)
def test_w003_and_w004_together():
    with override_settings(DATABASE_ROUTERS=[REPLICA_ROUTER]):
        assert ids(check_router_and_middleware()) == ["multidb.W003", "multidb.W004"]


@pytest.mark.parametrize(
    "routers",
    [
        [PinningReplicaRouter],
        [PinningReplicaRouter()],
        ["tests.app.routers.RecordingPinningRouter"],
        [ReplicaRouter(), PinningReplicaRouter],
    ],
)
def test_routers_given_as_classes_instances_or_subclasses_are_recognised(routers):
    with override_settings(DATABASE_ROUTERS=routers, MIDDLEWARE=[]):
        assert ids(check_router_and_middleware()) == ["multidb.W002"]
    with override_settings(DATABASE_ROUTERS=routers, MIDDLEWARE=[MIDDLEWARE]):
        assert check_router_and_middleware() == []


@pytest.mark.parametrize(
    ("router", "expected"),
    [
        (PinningMasterSlaveRouter, ["multidb.W002"]),
        ("multidb.PinningMasterSlaveRouter", ["multidb.W002"]),
        (MasterSlaveRouter, []),
    ],
)
def test_deprecated_routers_are_recognised(router, expected):
    with settings_without_signals(DATABASE_ROUTERS=[router], MIDDLEWARE=[]):
        assert ids(check_router_and_middleware()) == expected


def test_middleware_given_as_a_class_is_recognised():
    with settings_without_signals(
        DATABASE_ROUTERS=[REPLICA_ROUTER], MIDDLEWARE=[PinningRouterMiddleware]
    ):
        assert ids(check_router_and_middleware()) == ["multidb.W003"]


@pytest.mark.parametrize(
    "path", ["no.such.module.Router", "multidb.NoSuchRouter", "notadottedpath"]
)
def test_an_unimportable_router_path_is_ignored(path):
    with settings_without_signals(
        DATABASE_ROUTERS=[path, PINNING_ROUTER], MIDDLEWARE=[]
    ):
        assert ids(check_router_and_middleware()) == ["multidb.W002"]
    with settings_without_signals(DATABASE_ROUTERS=[path], MIDDLEWARE=[MIDDLEWARE]):
        assert ids(check_router_and_middleware()) == ["multidb.W003"]


def test_a_middleware_that_fails_to_import_does_not_crash_the_checks(
    tmp_path, monkeypatch
):
    (tmp_path / "needs_missing_app.py").write_text(
        'raise RuntimeError("Model class X is not in INSTALLED_APPS.")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with override_settings(
        DATABASE_ROUTERS=[PINNING_ROUTER],
        MIDDLEWARE=[MIDDLEWARE, "needs_missing_app.Middleware"],
    ):
        assert check_router_and_middleware() == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MULTIDB_HEALTH_CHECK_INTERVAL", 0),
        ("MULTIDB_HEALTH_CHECK_INTERVAL", "1"),
        ("MULTIDB_HEALTH_CHECK_TIMEOUT", None),
        ("MULTIDB_HEALTH_CHECK_TIMEOUT", -1.0),
        ("MULTIDB_REPLICA_MAX_LAG", -5),
        ("MULTIDB_REPLICA_MAX_LAG", True),
        ("MULTIDB_REPLICA_MAX_LAG_BYTES", 1.5),
        ("MULTIDB_HEALTH_MIN_REPLICAS", None),
        ("MULTIDB_NO_REPLICA", "replica"),
        ("MULTIDB_NO_REPLICA", None),
        ("MULTIDB_MIN_SERVING_REPLICAS", -1),
        ("MULTIDB_MIN_SERVING_REPLICAS", 1.5),
        ("MULTIDB_MIN_SERVING_REPLICAS", True),
    ],
)
def test_a_bad_health_setting_gets_that_settings_own_id(name, value):
    with override_settings(**{name: value}):
        messages = check_health_settings()
    assert ids(messages) == [SETTING_IDS[name]]
    assert name in messages[0].msg


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MULTIDB_HEALTH_CHECK_INTERVAL", None),
        ("MULTIDB_HEALTH_CHECK_INTERVAL", 0.25),
        ("MULTIDB_HEALTH_CHECK_TIMEOUT", 2),
        ("MULTIDB_REPLICA_MAX_LAG", None),
        ("MULTIDB_REPLICA_MAX_LAG", 0),
        ("MULTIDB_REPLICA_MAX_LAG_BYTES", 16 * 1024 * 1024),
        ("MULTIDB_HEALTH_MIN_REPLICAS", 0),
        ("MULTIDB_NO_REPLICA", "primary"),
        ("MULTIDB_NO_REPLICA", "least-lagged"),
        ("MULTIDB_NO_REPLICA", "error"),
        ("MULTIDB_MIN_SERVING_REPLICAS", 2),
    ],
)
def test_valid_health_settings_pass(name, value):
    with override_settings(**{name: value}):
        assert check_health_settings() == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MULTIDB_PINNING_MODE", "lsn"),
        ("MULTIDB_PIN_UNSAFE_METHODS", "yes"),
        ("MULTIDB_PINNING_HEADER", ""),
        ("MULTIDB_PINNING_HEADER", 42),
    ],
)
def test_a_bad_position_pinning_setting_gets_that_settings_own_id(name, value):
    with override_settings(**{name: value}):
        messages = check_pinning_settings()
    assert ids(messages) == [SETTING_IDS[name]]
    assert name in messages[0].msg


@override_settings(
    MULTIDB_PINNING_MODE="time",
    MULTIDB_PIN_UNSAFE_METHODS=False,
    MULTIDB_PINNING_HEADER="X-Multidb-Token",
)
def test_valid_position_pinning_settings_pass():
    assert check_pinning_settings() == []


# --- MULTIDB_CATCH_UP_WAIT, MULTIDB_MONOTONIC_READS ------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MULTIDB_CATCH_UP_WAIT", -1),
        ("MULTIDB_CATCH_UP_WAIT", 10_001),
        ("MULTIDB_CATCH_UP_WAIT", math.inf),
        ("MULTIDB_CATCH_UP_WAIT", math.nan),
        ("MULTIDB_CATCH_UP_WAIT", None),
        ("MULTIDB_CATCH_UP_WAIT", True),
        ("MULTIDB_CATCH_UP_WAIT", "50"),
        ("MULTIDB_MONOTONIC_READS", 1),
        ("MULTIDB_MONOTONIC_READS", None),
        ("MULTIDB_MONOTONIC_READS", "yes"),
    ],
)
def test_a_bad_catch_up_wait_or_monotonic_reads_setting_is_an_error(name, value):
    with override_settings(**{name: value}):
        messages = check_consistency_settings()
        registered = [m for m in check_settings() if m.id == SETTING_IDS[name]]
    assert ids(messages) == [SETTING_IDS[name]]
    assert messages[0].hint.startswith(f"Set {name} to ")
    assert registered == messages


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MULTIDB_CATCH_UP_WAIT", 0),
        ("MULTIDB_CATCH_UP_WAIT", 0.5),
        ("MULTIDB_CATCH_UP_WAIT", 50),
        ("MULTIDB_CATCH_UP_WAIT", 10_000),
        ("MULTIDB_MONOTONIC_READS", True),
        ("MULTIDB_MONOTONIC_READS", False),
    ],
)
def test_valid_catch_up_wait_and_monotonic_reads_settings_pass(name, value):
    with override_settings(**{name: value}):
        assert check_consistency_settings() == []


# --- MULTIDB_REPLICA_GROUPS, MULTIDB_PRIMARY_FOR ---------------------------------

_SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
#: A second primary and its replicas, for the groups' tests.
BILLING_DATABASES = {
    "billing": dict(_SQLITE),
    "billing_r1": {**_SQLITE, "TEST": {"MIRROR": "billing"}},
    "billing_r2": {**_SQLITE, "TEST": {"MIRROR": "billing"}},
}
TWO_GROUPS = {
    "default": ["replica1", "replica2"],
    "billing": {"billing_r1": 2, "billing_r2": 1},
}


@contextmanager
def grouped(*, replica_databases=True, **values):
    """``values`` set, and ``billing`` with its replicas in ``DATABASES``;
    ``REPLICA_DATABASES`` kept or removed.  Without ``setting_changed`` (see
    ``settings_without_signals``): Django warns about overriding ``DATABASES``,
    and the checks only read the settings."""
    databases = copy.deepcopy({**settings.DATABASES, **BILLING_DATABASES})
    with settings_without_signals(DATABASES=databases, **values):
        if not replica_databases:
            del settings.REPLICA_DATABASES
        yield


def choose_billing(model, **hints):
    return "billing"


@pytest.mark.parametrize(
    ("replica_databases", "groups", "primary_for"),
    [
        (False, TWO_GROUPS, {"app": "billing", "auth.User": "default"}),
        (True, {"billing": TWO_GROUPS["billing"]}, {"app.item": "billing"}),
        (False, TWO_GROUPS, f"{__name__}.choose_billing"),
        (True, {"billing": []}, {"app": "billing"}),
    ],
)
def test_a_valid_two_group_configuration_produces_no_messages(
    replica_databases, groups, primary_for
):
    with grouped(
        replica_databases=replica_databases,
        MULTIDB_REPLICA_GROUPS=groups,
        MULTIDB_PRIMARY_FOR=primary_for,
    ):
        assert check_settings() == []


@pytest.mark.parametrize(
    "groups",
    [
        ["default", "billing"],
        "billing",
        {1: ["billing_r1"]},
        {("billing",): ["billing_r1"]},
        {"billing": "billing_r1"},
        {"billing": 3},
        {"billing": [1]},
        {"billing": {"billing_r1": -1}},
        {"billing": {"billing_r1": 1.5}},
        {"billing": {"billing_r1": True}},
        {"billing": {"billing_r1": 10_000, "billing_r2": 1}},
    ],
)
def test_e027_for_replica_groups_that_are_not_a_dict_of_aliases_to_replicas(groups):
    with grouped(MULTIDB_REPLICA_GROUPS=groups):
        messages = check_settings()
    assert ids(messages) == ["multidb.E027"]
    assert isinstance(messages[0], Error)
    assert "MULTIDB_REPLICA_GROUPS" in messages[0].msg
    assert "REPLICA_DATABASES" not in messages[0].msg
    assert "MULTIDB_REPLICA_GROUPS" in messages[0].hint


def test_e027_names_the_group_whose_replicas_are_bad():
    with grouped(
        replica_databases=False,
        MULTIDB_REPLICA_GROUPS={"default": "replica1", "billing": ["billing_r1", 2]},
    ):
        messages = check_settings()
    assert ids(messages) == ["multidb.E027", "multidb.E027"]
    assert messages[0].msg.startswith("MULTIDB_REPLICA_GROUPS['default'] must be")
    assert messages[1].msg == (
        "MULTIDB_REPLICA_GROUPS['billing']: alias 2 is not a string."
    )


@pytest.mark.parametrize("shorthand", ["REPLICA_DATABASES", "SLAVE_DATABASES"])
def test_e028_for_default_replicas_in_both_the_shorthand_and_the_groups(shorthand):
    with grouped(replica_databases=False, MULTIDB_REPLICA_GROUPS=TWO_GROUPS):
        setattr(settings, shorthand, ["replica1"])
        messages = check_settings()
    assert ids(messages) == ["multidb.E028"]
    assert shorthand in messages[0].msg
    assert "MULTIDB_REPLICA_GROUPS['default']" in messages[0].msg


def test_with_both_the_replicas_checked_for_default_are_the_groups():
    with grouped(
        REPLICA_DATABASES=["missing"],
        MULTIDB_REPLICA_GROUPS={"default": ["replica1", "gone"]},
    ):
        messages = check_settings()
    assert ids(messages) == ["multidb.E001", "multidb.E028"]
    assert messages[0].msg == (
        "MULTIDB_REPLICA_GROUPS['default'] names 'gone', which is not in DATABASES."
    )


@pytest.mark.parametrize(
    ("replica_databases", "groups"),
    [
        (True, {"billing": ["billing_r1", "replica2"]}),
        (False, {"default": ["replica1", "replica2"], "billing": {"replica2": 1}}),
    ],
)
def test_e029_for_a_replica_listed_in_two_groups(replica_databases, groups):
    with grouped(replica_databases=replica_databases, MULTIDB_REPLICA_GROUPS=groups):
        messages = check_settings()
    assert ids(messages) == ["multidb.E029"]
    assert messages[0].msg.startswith(
        "'replica2' is listed as a replica of both 'default' and 'billing'"
    )


def test_e030_for_a_group_primary_not_in_databases():
    with grouped(MULTIDB_REPLICA_GROUPS={"ledger": ["billing_r1"]}):
        messages = check_settings()
    assert ids(messages) == ["multidb.E030"]
    assert "'ledger'" in messages[0].msg
    assert "DATABASES" in messages[0].hint


def test_e001_for_each_group_replica_not_in_databases():
    with grouped(
        REPLICA_DATABASES=["replica1", "gone"],
        MULTIDB_REPLICA_GROUPS={"billing": ["billing_r1", "missing"]},
    ):
        messages = check_settings()
    assert ids(messages) == ["multidb.E001", "multidb.E001"]
    assert (
        messages[0].msg == "REPLICA_DATABASES names 'gone', which is not in DATABASES."
    )
    assert messages[1].msg == (
        "MULTIDB_REPLICA_GROUPS['billing'] names 'missing', which is not in DATABASES."
    )
    assert "MULTIDB_REPLICA_GROUPS['billing']" in messages[1].hint


def test_e009_for_a_group_that_lists_its_own_primary():
    with grouped(MULTIDB_REPLICA_GROUPS={"billing": ["billing", "billing_r1"]}):
        messages = check_settings()
    assert ids(messages) == ["multidb.E009"]
    assert "MULTIDB_REPLICA_GROUPS['billing'] lists 'billing'" in messages[0].msg
    assert '"MIRROR": "billing"' in messages[0].hint


def test_w005_for_a_group_replica_that_is_not_a_test_mirror_names_its_primary():
    with grouped(MULTIDB_REPLICA_GROUPS={"billing": ["billing_r1", "billing_r2"]}):
        del settings.DATABASES["billing_r2"]["TEST"]
        messages = check_settings()
    assert ids(messages) == ["multidb.W005"]
    assert messages[0].hint == (
        'Set DATABASES[\'billing_r2\']["TEST"] = {"MIRROR": "billing"}.'
    )


@pytest.mark.parametrize(
    ("replica_databases", "groups", "listed", "by"),
    [
        (True, {"billing": ["billing_r1", "default"]}, "'default'", "'billing'"),
        (
            True,
            {"billing": ["billing_r1"], "ledger": ["billing"]},
            "'billing'",
            "'ledger'",
        ),
        (False, {"default": ["billing"], "billing": []}, "'billing'", "'default'"),
    ],
)
def test_e031_for_a_primary_listed_as_a_replica_of_another_group(
    replica_databases, groups, listed, by
):
    with grouped(replica_databases=replica_databases, MULTIDB_REPLICA_GROUPS=groups):
        settings.DATABASES["ledger"] = dict(_SQLITE)
        messages = check_settings()
    assert ids(messages) == ["multidb.E031"]
    assert f"lists {listed}, which is a primary itself" in messages[0].msg
    assert f"reads of {by}'s data" in messages[0].msg


def test_e031_for_a_primary_listed_in_replica_databases():
    with grouped(
        REPLICA_DATABASES=["replica1", "billing"],
        MULTIDB_REPLICA_GROUPS={"billing": ["billing_r1"]},
    ):
        messages = check_settings()
    assert ids(messages) == ["multidb.E031"]
    assert messages[0].msg.startswith("REPLICA_DATABASES lists 'billing'")


@pytest.mark.parametrize(
    "primary_for",
    [
        {"app": "replica1"},
        {"app": "missing"},
        {"app": "ledger"},
        {"app": None},
        {"app": ["billing"]},
        {"app": "Billing"},
    ],
)
def test_e033_for_primary_for_naming_an_alias_that_is_no_primary(primary_for):
    with grouped(
        MULTIDB_REPLICA_GROUPS={"billing": []}, MULTIDB_PRIMARY_FOR=primary_for
    ):
        settings.DATABASES["ledger"] = dict(_SQLITE)
        messages = check_settings()
    assert ids(messages) == ["multidb.E033"]
    assert "MULTIDB_PRIMARY_FOR maps 'app' to " in messages[0].msg
    assert "['billing', 'default']" in messages[0].hint


def test_e033_for_primary_for_naming_another_primary_without_groups():
    with grouped(MULTIDB_PRIMARY_FOR={"app": "billing"}):
        assert ids(check_settings()) == ["multidb.E033"]


@pytest.mark.parametrize("key", [1, None, ("app", "Item")])
def test_e032_for_a_primary_for_key_that_is_not_a_string(key):
    with grouped(MULTIDB_PRIMARY_FOR={key: "default"}):
        messages = check_settings()
    assert ids(messages) == ["multidb.E032"]
    assert "MULTIDB_PRIMARY_FOR has the key" in messages[0].msg


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("no.such.module.choose", "cannot be imported (ModuleNotFoundError"),
        (f"{__name__}.no_such_chooser", "cannot be imported (ImportError"),
        ("choose_billing", "cannot be imported (ImportError"),
        ("", "cannot be imported (ImportError"),
        ("multidb.conf.DEFAULT_DB_ALIAS", "names str 'default', not a callable"),
        ("multidb.conf", "names module"),
    ],
)
def test_e032_for_a_primary_for_path_that_is_not_an_importable_callable(path, problem):
    with grouped(MULTIDB_PRIMARY_FOR=path):
        messages = check_settings()
    assert ids(messages) == ["multidb.E032"]
    assert problem in messages[0].msg
    assert messages[0].hint.startswith("Set MULTIDB_PRIMARY_FOR to a dict")


def test_e032_for_a_primary_for_path_whose_module_fails_to_import(
    tmp_path, monkeypatch
):
    (tmp_path / "chooser_needing_an_app.py").write_text(
        'raise RuntimeError("Model class X is not in INSTALLED_APPS.")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with grouped(MULTIDB_PRIMARY_FOR="chooser_needing_an_app.choose"):
        messages = check_settings()
    assert ids(messages) == ["multidb.E032"]
    assert "RuntimeError: Model class X is not in INSTALLED_APPS." in messages[0].msg


@pytest.mark.parametrize("primary_for", [5, ["billing"], True, b"app"])
def test_e032_for_primary_for_of_another_type(primary_for):
    with grouped(MULTIDB_PRIMARY_FOR=primary_for):
        messages = check_settings()
    assert ids(messages) == ["multidb.E032"]
    assert messages[0].hint.startswith("Set MULTIDB_PRIMARY_FOR to a dict")
    assert messages[0].hint.endswith("or remove it for the default, None.")


def test_w001_only_when_no_group_has_replicas():
    with grouped(replica_databases=False, MULTIDB_REPLICA_GROUPS={"billing": []}):
        messages = check_settings()
    assert ids(messages) == ["multidb.W001"]
    assert messages[0].msg.endswith("every read goes to a primary.")
    assert "MULTIDB_REPLICA_GROUPS" in messages[0].hint
    with grouped(replica_databases=False, MULTIDB_REPLICA_GROUPS={"default": []}):
        (message,) = check_settings()
    assert (
        message.hint
        == "List your replicas' aliases in MULTIDB_REPLICA_GROUPS['default']."
    )


# --- the groups' checks on any value ----------------------------------------------

_ALIASES = ["default", "replica1", "replica2", *BILLING_DATABASES, "missing", ""]
aliases = st.sampled_from(_ALIASES)
#: Anything hashable that is no alias: a dict key or a list item.
not_text = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=4),
    st.tuples(aliases),
)
junk = not_text | st.text(max_size=8)
#: Replicas as the settings take them.
well_formed_replicas = st.lists(aliases, max_size=3) | st.dictionaries(
    aliases, st.integers(0, 3), max_size=3
)
#: Mostly the replicas in DATABASES (so that some examples pass the checks).
listed = st.sampled_from(["replica1", "replica2", "billing_r1", "billing_r2"]) | aliases
primaries = st.sampled_from(["default", "billing"]) | aliases
replicas = st.one_of(
    well_formed_replicas,
    st.lists(aliases | junk, max_size=4),
    st.dictionaries(
        aliases | junk, st.integers(-1, 3) | st.just(10_000) | junk, max_size=4
    ),
    junk,
)
#: Importing arbitrary names runs arbitrary modules: only these.
CHOOSERS = [
    f"{__name__}.choose_billing",
    f"{__name__}.no_such_chooser",
    "no.such.module.choose",
    "multidb.conf.DEFAULT_DB_ALIAS",
    "multidb.conf",
    "",
    "choose_billing",
]
MODEL_KEYS = ["app", "app.item", "APP.Item", "auth"]
#: The errors that mean the routers could not use the groups as configured.
GROUP_ERRORS = {"multidb.E001", "multidb.E002", "multidb.E009"} | {
    f"multidb.E0{n}" for n in range(27, 34)
}
fuzz_settings = hypothesis_settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@contextmanager
def fuzzed(replica_databases, replica_groups, primary_for):
    """The example's settings, read afresh on the way in and out."""
    with grouped(
        replica_databases=replica_databases is not None,
        MULTIDB_REPLICA_GROUPS=replica_groups,
        MULTIDB_PRIMARY_FOR=primary_for,
    ):
        if replica_databases is not None:
            settings.REPLICA_DATABASES = replica_databases
        reset_state()
        try:
            yield
        finally:
            reset_state()


@fuzz_settings
@given(
    replica_databases=st.none() | replicas,
    replica_groups=st.one_of(
        st.none(),
        st.dictionaries(aliases | junk, replicas, max_size=4),
        st.lists(aliases, max_size=3),
        junk,
    ),
    primary_for=st.one_of(
        st.none(),
        st.dictionaries(st.sampled_from(MODEL_KEYS) | junk, aliases | junk, max_size=3),
        st.sampled_from(CHOOSERS),
        not_text,
    ),
)
def test_the_checks_never_raise_on_any_replica_groups_or_primary_for(
    replica_databases, replica_groups, primary_for
):
    with fuzzed(replica_databases, replica_groups, primary_for):
        messages = check_settings()
    assert all(message.id.startswith("multidb.") for message in messages)


@st.composite
def replica_layouts(draw):
    """``(REPLICA_DATABASES, MULTIDB_REPLICA_GROUPS)`` as a site writes them:
    aliases dealt out to the primaries, so that now and then a replica lands
    in two groups, or a primary or an unknown alias among the replicas."""
    keys = draw(st.lists(primaries, max_size=3, unique=True))
    shorthand = draw(st.booleans())
    places = [*keys, *(["REPLICA_DATABASES"] * shorthand)]
    dealt = {place: {} for place in places}
    for alias in draw(st.lists(listed, max_size=6)) if places else ():
        dealt[draw(st.sampled_from(places))][alias] = draw(st.integers(0, 3))
    as_lists = draw(st.booleans())

    def shaped(weights):
        return list(weights) if as_lists else weights

    replica_databases = shaped(dealt.pop("REPLICA_DATABASES")) if shorthand else None
    groups = {key: shaped(weights) for key, weights in dealt.items()}
    return replica_databases, groups if keys or draw(st.booleans()) else None


@fuzz_settings
@example(layout=(["replica1"], {"billing": ["replica1"]}), primary_for=None)
@example(layout=(None, {"default": ["billing"], "billing": []}), primary_for=None)
@given(
    layout=replica_layouts(),
    primary_for=st.none()
    | st.dictionaries(st.sampled_from(MODEL_KEYS), aliases, max_size=2),
)
def test_groups_that_pass_the_checks_are_groups_the_routers_can_use(
    layout, primary_for
):
    with fuzzed(*layout, primary_for):
        passed = not GROUP_ERRORS.intersection(ids(check_settings()))
        event("passed the checks" if passed else "failed the checks")
        if passed:
            primary_of = {}
            for primary, weights in groups.groups().items():
                assert primary in settings.DATABASES
                # With every weight 0 (W001), no alias is checked: none is used.
                for alias in (alias for alias, w in weights.items() if w):
                    assert alias in settings.DATABASES
                    assert alias not in primary_of, (alias, primary_of)
                    primary_of[alias] = primary
            assert not set(groups.groups()).intersection(primary_of)
            assert groups.is_primary(groups.primary_for(Item))
