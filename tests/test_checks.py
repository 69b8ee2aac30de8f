import copy
import math
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.checks import Error, registry, run_checks
from django.core.checks import Warning as CheckWarning
from django.test import override_settings

from multidb import (
    MasterSlaveRouter,
    PinningMasterSlaveRouter,
    PinningReplicaRouter,
    ReplicaRouter,
)
from multidb.checks import (
    check_health_settings,
    check_pinning_settings,
    check_replica_databases,
    check_router_and_middleware,
    check_settings,
)
from multidb.middleware import PinningRouterMiddleware

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
        REPLICA_DATABASES=[], MULTIDB_PINNING_SECONDS=-1, MIDDLEWARE=[]
    ):
        assert ids(check_settings()) == ["multidb.W001", "multidb.E003", "multidb.W002"]


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


@override_settings(REPLICA_DATABASES=["default"])
def test_default_as_a_replica_needs_no_test_mirror():
    assert check_replica_databases() == []


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
def test_e003_for_each_bad_pinning_setting(setting, value):
    with override_settings(**{setting: value}):
        messages = check_pinning_settings()
    assert ids(messages) == ["multidb.E003"]
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
        ("MULTIDB_PINNING_COOKIE_SAMESITE", "none"),
        ("MULTIDB_PINNING_COOKIE_SAMESITE", "None"),
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
def test_e003_once_for_each_bad_pinning_setting():
    assert ids(check_pinning_settings()) == ["multidb.E003"] * 5


@override_settings(MULTIDB_PINNING_SECONDS=math.inf)
def test_e003_for_infinite_pinning_seconds():
    assert ids(check_pinning_settings()) == ["multidb.E003"]


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
    ],
)
def test_e003_for_a_bad_health_setting(name, value):
    with override_settings(**{name: value}):
        messages = check_health_settings()
    assert ids(messages) == ["multidb.E003"]
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
def test_e003_for_a_bad_position_pinning_setting(name, value):
    with override_settings(**{name: value}):
        messages = check_pinning_settings()
    assert ids(messages) == ["multidb.E003"]
    assert name in messages[0].msg


@override_settings(
    MULTIDB_PINNING_MODE="time",
    MULTIDB_PIN_UNSAFE_METHODS=False,
    MULTIDB_PINNING_HEADER="X-Multidb-Token",
)
def test_valid_position_pinning_settings_pass():
    assert check_pinning_settings() == []
