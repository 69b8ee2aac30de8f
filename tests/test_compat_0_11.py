"""The django-multidb-router 0.11 test suite, ported to pytest.

The imports are those a 0.11 user writes.  0.11's ``get_replica()`` was the
next replica in a global cycle, as ours is outside a request; so its
``db_for_read(None) == get_replica()`` assertions run with one replica.
"""

from threading import Lock, Thread
from unittest import mock

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import override_settings

import multidb
import multidb.pinning
from multidb import DEFAULT_DB_ALIAS, PinningReplicaRouter, ReplicaRouter, get_replica
from multidb.middleware import (
    PinningRouterMiddleware,
    pinning_cookie,
    pinning_cookie_httponly,
    pinning_cookie_samesite,
    pinning_cookie_secure,
    pinning_seconds,
)
from multidb.pinning import (
    db_write,
    pin_this_thread,
    this_thread_is_pinned,
    unpin_this_thread,
    use_primary_db,
)

REPLICAS = {"replica1", "replica2"}
one_replica = override_settings(REPLICA_DATABASES=["replica1"])


# --- ReplicaRouterTests ------------------------------------------------------


@one_replica
def test_db_for_read():
    assert ReplicaRouter().db_for_read(None) == get_replica()


def test_db_for_read_with_two_replicas_reads_a_replica():
    assert ReplicaRouter().db_for_read(None) in REPLICAS
    assert get_replica() in REPLICAS


def test_db_for_write():
    assert ReplicaRouter().db_for_write(None) == DEFAULT_DB_ALIAS


def test_allow_syncdb():
    router = ReplicaRouter()
    assert router.allow_syncdb(DEFAULT_DB_ALIAS, None)
    assert not router.allow_syncdb(get_replica(), None)


def test_allow_migrate():
    router = ReplicaRouter()
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "dummy")
    assert not router.allow_migrate(get_replica(), "dummy")


# --- SettingsTests -----------------------------------------------------------


def test_defaults():
    assert pinning_cookie() == "multidb_pin_writes"
    assert pinning_seconds() == 15
    assert pinning_cookie_secure() is False
    assert pinning_cookie_httponly() is False
    assert pinning_cookie_samesite() == "Lax"


@override_settings(MULTIDB_PINNING_COOKIE="override_pin_writes")
@override_settings(MULTIDB_PINNING_SECONDS=60)
@override_settings(MULTIDB_PINNING_COOKIE_SECURE=True)
@override_settings(MULTIDB_PINNING_COOKIE_HTTPONLY=True)
@override_settings(MULTIDB_PINNING_COOKIE_SAMESITE="Strict")
def test_overrides():
    assert pinning_cookie() == "override_pin_writes"
    assert pinning_seconds() == 60
    assert pinning_cookie_secure() is True
    assert pinning_cookie_httponly() is True
    assert pinning_cookie_samesite() == "Strict"


@override_settings(MULTIDB_PINNING_SECONDS="30")
def test_pinning_seconds_converts_a_string_to_int():
    assert pinning_seconds() == 30


# --- PinningTests ------------------------------------------------------------


def test_pinning_encapsulation():
    assert not this_thread_is_pinned(), "Thread started out pinned"
    pin_this_thread()
    assert this_thread_is_pinned(), "pin_this_thread() didn't pin the thread."
    unpin_this_thread()
    assert not this_thread_is_pinned(), "Thread remained pinned after unpinning."


@one_replica
def test_pinned_reads():
    router = PinningReplicaRouter()
    assert router.db_for_read(None) == get_replica()
    pin_this_thread()
    assert router.db_for_read(None) == DEFAULT_DB_ALIAS


@one_replica
def test_pinning_db_write_decorator():
    router = PinningReplicaRouter()
    seen = []

    def read_view(req):
        seen.append(router.db_for_read(None) == get_replica())
        return HttpResponse()

    @db_write
    def write_view(req):
        seen.append(router.db_for_read(None) == DEFAULT_DB_ALIAS)
        return HttpResponse()

    assert router.db_for_read(None) == get_replica()
    write_view(HttpRequest())
    read_view(HttpRequest())
    assert seen == [True, True]


# --- MiddlewareTests ---------------------------------------------------------


@pytest.fixture
def request_():
    return HttpRequest()


@pytest.fixture
def middleware():
    return PinningRouterMiddleware(mock.MagicMock())


def test_pin_on_cookie(request_, middleware):
    request_.COOKIES[pinning_cookie()] = "y"
    middleware.process_request(request_)
    assert this_thread_is_pinned()


def test_unpin_on_no_cookie(request_, middleware):
    pin_this_thread()
    request_.method = "GET"
    middleware.process_request(request_)
    assert not this_thread_is_pinned()


def test_pin_on_post(request_, middleware):
    request_.method = "POST"
    middleware.process_request(request_)
    assert this_thread_is_pinned()


def test_process_response(request_, middleware):
    request_.method = "GET"
    response = middleware.process_response(request_, HttpResponse())
    assert pinning_cookie() not in response.cookies

    request_.method = "POST"
    response = middleware.process_response(request_, HttpResponse())
    assert pinning_cookie() in response.cookies
    cookie = response.cookies[pinning_cookie()]
    assert cookie["max-age"] == pinning_seconds()
    assert cookie["samesite"] == pinning_cookie_samesite()
    assert cookie["httponly"] == (pinning_cookie_httponly() or "")
    assert cookie["secure"] == (pinning_cookie_secure() or "")


def test_attribute(request_, middleware):
    res = HttpResponse()
    res._db_write = True
    response = middleware.process_response(request_, res)
    assert pinning_cookie() in response.cookies


def test_middleware_db_write_decorator(request_, middleware):
    request_.method = "GET"

    def view(req):
        return HttpResponse()

    response = middleware.process_response(request_, view(request_))
    assert pinning_cookie() not in response.cookies

    @db_write
    def write_view(req):
        return HttpResponse()

    response = middleware.process_response(request_, write_view(request_))
    assert pinning_cookie() in response.cookies


# --- UsePrimaryDBTests -------------------------------------------------------


def test_decorator():
    @use_primary_db
    def check():
        return this_thread_is_pinned()

    unpin_this_thread()
    assert not this_thread_is_pinned()
    assert check()
    assert not this_thread_is_pinned()


def test_decorator_resets():
    @use_primary_db
    def check():
        return this_thread_is_pinned()

    pin_this_thread()
    assert this_thread_is_pinned()
    assert check()
    assert this_thread_is_pinned()


def test_context_manager():
    unpin_this_thread()
    assert not this_thread_is_pinned()
    with use_primary_db:
        assert this_thread_is_pinned()
    assert not this_thread_is_pinned()


def test_context_manager_resets():
    pin_this_thread()
    assert this_thread_is_pinned()
    with use_primary_db:
        assert this_thread_is_pinned()
    assert this_thread_is_pinned()


def test_context_manager_exception():
    unpin_this_thread()
    assert not this_thread_is_pinned()
    with pytest.raises(ValueError), use_primary_db:
        assert this_thread_is_pinned()
        raise ValueError
    assert not this_thread_is_pinned()


def test_multithreaded_unpinning():
    thread1_lock = Lock()
    thread2_lock = Lock()
    thread1_lock.acquire()
    thread2_lock.acquire()
    orchestrator = Lock()
    orchestrator.acquire()

    pinned = {}

    def thread1_worker():
        with use_primary_db:
            orchestrator.release()
            thread1_lock.acquire()

        pinned[1] = this_thread_is_pinned()

    def thread2_worker():
        pin_this_thread()
        with use_primary_db:
            orchestrator.release()
            thread2_lock.acquire()

        pinned[2] = this_thread_is_pinned()
        orchestrator.release()

    thread1 = Thread(target=thread1_worker)
    thread2 = Thread(target=thread2_worker)

    thread1.start()
    orchestrator.acquire()

    thread2.start()
    orchestrator.acquire()

    thread2_lock.release()
    thread2.join()
    assert pinned[2] is True

    thread1_lock.release()
    thread1.join()
    assert pinned[1] is False


# --- DeprecationTestCase -----------------------------------------------------


def test_masterslaverouter():
    with pytest.warns(DeprecationWarning, match="MasterSlaveRouter") as record:
        router = multidb.MasterSlaveRouter()
    assert isinstance(router, ReplicaRouter)
    assert len(record) == 1


def test_pinningmasterslaverouter():
    with pytest.warns(DeprecationWarning, match="PinningMasterSlaveRouter") as record:
        router = multidb.PinningMasterSlaveRouter()
    assert isinstance(router, PinningReplicaRouter)
    assert len(record) == 1


def test_use_master():
    assert isinstance(multidb.pinning.use_master, use_primary_db.__class__)
    with (
        pytest.warns(DeprecationWarning, match="use_master") as record,
        multidb.pinning.use_master,
    ):
        pass
    assert len(record) == 1


# --- the deprecated names still work -----------------------------------------


def test_get_slave_warns_once_and_returns_a_replica():
    with pytest.warns(DeprecationWarning, match="get_replica") as record:
        assert multidb.get_slave() in REPLICAS
    assert len(record) == 1


def test_use_master_pins_and_restores():
    with pytest.warns(DeprecationWarning), multidb.pinning.use_master:
        assert this_thread_is_pinned()
        assert PinningReplicaRouter().db_for_read(None) == DEFAULT_DB_ALIAS
    assert not this_thread_is_pinned()


def test_use_master_as_a_decorator_warns_on_each_call():
    @multidb.pinning.use_master
    def check():
        return this_thread_is_pinned()

    for _ in range(2):
        with pytest.warns(DeprecationWarning, match="use_master"):
            assert check()
    assert not this_thread_is_pinned()


def test_masterslaverouter_routes_like_replicarouter():
    with pytest.warns(DeprecationWarning):
        router = multidb.MasterSlaveRouter()
    assert router.db_for_write(None) == DEFAULT_DB_ALIAS
    pin_this_thread()
    assert {router.db_for_read(None) for _ in range(4)} == REPLICAS
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "dummy")
    assert not router.allow_migrate("replica1", "dummy")


def test_pinningmasterslaverouter_routes_like_pinningreplicarouter():
    with pytest.warns(DeprecationWarning):
        router = multidb.PinningMasterSlaveRouter()
    assert {router.db_for_read(None) for _ in range(4)} == REPLICAS
    pin_this_thread()
    assert router.db_for_read(None) == DEFAULT_DB_ALIAS
    assert router.db_for_write(None) == DEFAULT_DB_ALIAS


def test_slave_databases_setting_still_works(settings):
    del settings.REPLICA_DATABASES
    settings.SLAVE_DATABASES = ["replica2"]
    router = PinningReplicaRouter()
    with pytest.warns(DeprecationWarning, match="SLAVE_DATABASES"):
        assert router.db_for_read(None) == "replica2"
    assert {router.db_for_read(None) for _ in range(3)} == {"replica2"}
    assert get_replica() == "replica2"


def test_module_exports_of_0_11():
    for name in (
        "DEFAULT_DB_ALIAS",
        "ReplicaRouter",
        "PinningReplicaRouter",
        "MasterSlaveRouter",
        "PinningMasterSlaveRouter",
        "DeprecationMixin",
        "get_replica",
        "get_slave",
        "this_thread_is_pinned",
        "db_write",
    ):
        assert hasattr(multidb, name), name
    for name in (
        "pin_this_thread",
        "unpin_this_thread",
        "use_primary_db",
        "use_master",
        "db_write",
        "this_thread_is_pinned",
    ):
        assert name in multidb.pinning.__all__
    assert multidb.VERSION[:3] == (1, 0, 0)
    assert multidb.__version__.startswith("1.0.0")


def test_resetting_the_0_11_replicas_global_does_not_break_routing(monkeypatch):
    """0.11 test suites reset its cached cycle with ``multidb.replicas = None``."""
    monkeypatch.setattr(multidb, "replicas", None)
    with override_settings(REPLICA_DATABASES=["replica2"]):
        assert PinningReplicaRouter().db_for_read(None) == "replica2"
        assert get_replica() == "replica2"
