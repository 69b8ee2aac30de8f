import copy
import math
import re
import sys
from contextlib import contextmanager
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

from multidb import (
    MasterSlaveRouter,
    PinningMasterSlaveRouter,
    PinningReplicaRouter,
    ReplicaRouter,
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
        if isinstance(value, property) and name != "REPLICA_DATABASES"
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
