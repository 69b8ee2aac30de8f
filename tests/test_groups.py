"""Replica groups, the pure routing: which primary a model lives on, which
alias a read or a write is sent to, and what the tokens carry.

``auth``'s models live on ``billing`` here (``MULTIDB_PRIMARY_FOR``), so no
table is needed: the routers answer without touching a database.  What the
servers do is proven in tests/groups, against two real primaries.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import connections, transaction
from django.test import RequestFactory, override_settings

from multidb import (
    NoReplicaAvailable,
    PinningReplicaRouter,
    ReplicaRouter,
    groups,
    pinning,
    read_after,
    rotation,
    routers,
    tokens,
    use_primary_db,
    use_replica,
)
from multidb.middleware import PinningRouterMiddleware
from multidb.pinning import (
    NO_PIN,
    TIME_PIN,
    current_request,
    pin_this_thread,
    unpin_this_thread,
)
from tests.app.models import Item
from tests.conftest import request_scope, respond, run_middleware, token_for

GROUPS = {"default": ["replica1", "replica2"], "billing": ["billing_r1"]}
WEIGHTED = {
    "default": ["replica1", "replica2"],
    "billing": {"billing_r1": 2, "billing_r2": 1},
}
DEFAULT_REPLICAS = {"replica1", "replica2"}


@pytest.fixture(autouse=True)
def _two_groups(settings: Any) -> None:
    """``default`` and ``billing``, where ``auth``'s models live (a test's
    own ``override_settings`` applies over this)."""
    settings.REPLICA_DATABASES = None
    settings.MULTIDB_REPLICA_GROUPS = GROUPS
    settings.MULTIDB_PRIMARY_FOR = {"auth": "billing"}


def primary_for_tests(model: Any, **hints: Any) -> str | None:
    """A ``MULTIDB_PRIMARY_FOR`` callable: ``auth`` on billing, by model or
    (for ``allow_migrate``) by app label."""
    label = model._meta.app_label if model is not None else hints.get("app_label")
    return "billing" if label == "auth" else None


def pinning_router() -> PinningReplicaRouter:
    return PinningReplicaRouter()


# --- which primary a model lives on -----------------------------------------------


@override_settings(MULTIDB_REPLICA_GROUPS=None, MULTIDB_PRIMARY_FOR=None)
def test_a_site_without_groups_keeps_the_single_group_methods():
    PinningReplicaRouter()

    assert PinningReplicaRouter.db_for_read is routers.route_read
    assert ReplicaRouter.db_for_read is routers.route_read_ignoring_pins
    assert ReplicaRouter.db_for_write is routers.route_write
    assert not groups.active()


def test_a_site_with_groups_routes_through_the_grouped_methods():
    PinningReplicaRouter()

    assert PinningReplicaRouter.db_for_read is routers.route_read_grouped
    assert ReplicaRouter.db_for_write is routers.route_write_grouped
    assert groups.groups() == {
        "default": {"replica1": 1, "replica2": 1},
        "billing": {"billing_r1": 1},
    }


@override_settings(MULTIDB_REPLICA_GROUPS=None, MULTIDB_PRIMARY_FOR={"auth": "default"})
def test_a_mapping_onto_default_alone_leaves_groups_off():
    assert not groups.active()


@override_settings(MULTIDB_REPLICA_GROUPS=None, REPLICA_DATABASES=["replica2"])
def test_replica_databases_is_the_default_groups_shorthand():
    assert groups.groups() == {"default": {"replica2": 1}}
    assert groups.primary_of("replica2") == "default"
    assert groups.primary_of("billing_r1") is None


@override_settings(MULTIDB_PRIMARY_FOR={"auth": "billing", "auth.Group": "default"})
def test_a_model_label_in_the_mapping_wins_over_its_app_label():
    router = pinning_router()

    assert router.db_for_write(User) == "billing"
    assert router.db_for_write(Group) == "default"
    assert groups.primary_for(object()) == "default"


@override_settings(MULTIDB_PRIMARY_FOR="tests.test_groups.primary_for_tests")
def test_a_callable_places_models_and_migrations():
    router = pinning_router()

    assert router.db_for_write(User) == "billing"
    assert router.db_for_write(Item) == "default"
    assert router.allow_migrate("billing", "auth", "user") is True
    assert router.allow_migrate("default", "auth", "user") is False
    assert router.allow_migrate("default", "app", "item", model=Item) is True


def test_migrations_go_to_the_primary_an_app_or_model_maps_to():
    router = pinning_router()

    assert router.allow_migrate("billing", "auth", "user") is True
    assert router.allow_migrate("default", "auth") is False
    assert router.allow_migrate("billing_r1", "auth") is False
    assert router.allow_migrate("default", "app", "item") is True


def test_relations_are_allowed_within_one_group_only():
    router = pinning_router()

    assert router.allow_relation(User(), User()) is True
    assert router.allow_relation(User(), Item()) is False
    item = Item()
    item._state.db = "replica1"  # read from a replica of its group
    assert router.allow_relation(item, Item()) is True


# --- reads ---------------------------------------------------------------------------


@override_settings(MULTIDB_REPLICA_GROUPS=WEIGHTED)
def test_outside_a_request_reads_follow_each_groups_weights():
    router = pinning_router()

    billing = Counter(router.db_for_read(User) for _ in range(30))
    default = {router.db_for_read(Item) for _ in range(10)}

    assert billing == {"billing_r1": 20, "billing_r2": 10}
    assert default == DEFAULT_REPLICAS


def test_a_request_reads_one_replica_per_group():
    router = pinning_router()
    with request_scope(NO_PIN):
        items = {router.db_for_read(Item) for _ in range(5)}
        users = {router.db_for_read(User) for _ in range(5)}

    assert len(items) == 1 and items <= DEFAULT_REPLICAS
    assert users == {"billing_r1"}


def test_with_no_usable_replica_in_billing_its_reads_go_to_billing():
    router = pinning_router()
    rotation.exclude({"billing_r1"})

    assert router.db_for_read(User) == "billing"
    assert router.db_for_read(Item) in DEFAULT_REPLICAS
    with request_scope(NO_PIN):
        assert router.db_for_read(User) == "billing"


@override_settings(MULTIDB_NO_REPLICA="error")
def test_with_no_usable_replica_in_billing_and_no_replica_error_its_reads_raise():
    rotation.exclude({"billing_r1"})

    with pytest.raises(NoReplicaAvailable):
        pinning_router().db_for_read(User)


@pytest.mark.django_db(databases=["billing"])
def test_a_write_to_billing_in_a_request_pins_billing_reads_only():
    router = pinning_router()
    with request_scope(NO_PIN) as request:
        # As the ORM does before a write: routing it watches the connection.
        assert router.db_for_write(User) == "billing"
        with connections["billing"].cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE t (x int)")
            cursor.execute("INSERT INTO t VALUES (1)")
        state = request.group("billing")

        assert (state.wrote, state.pinned) == (True, TIME_PIN)
        assert request.groups_written() == ["billing"]
        assert router.db_for_read(User) == "billing"
        assert router.db_for_read(Item) in DEFAULT_REPLICAS
        assert not request.wrote


def _run_on_billing(sql: str) -> None:
    """``sql`` shown to the billing primary's statement watcher, not run
    (SQLite has no ``FOR UPDATE``; tests/groups runs it on PostgreSQL)."""
    context = {"connection": connections["billing"]}
    pinning._note_group_use(lambda *args: None, sql, None, False, context)


@pytest.mark.django_db(transaction=True, databases=["billing"])
def test_a_locking_read_on_billing_pins_billing_when_its_transaction_commits():
    router = pinning_router()
    with request_scope(NO_PIN) as request:
        with transaction.atomic(using="billing"):
            _run_on_billing("SELECT 1 FOR UPDATE")
            pinned_inside = request.group("billing").pinned
        after = request.group("billing").pinned

        assert (pinned_inside, after) == (NO_PIN, TIME_PIN)
        assert router.db_for_read(User) == "billing"
    with request_scope(NO_PIN) as request:
        _run_on_billing("SELECT 1 FOR UPDATE")
        assert request.group("billing").pinned is TIME_PIN
        _run_on_billing("SELECT 1")  # pinned already: not even looked at
    _run_on_billing("INSERT INTO t VALUES (1)")  # outside a request: nothing


def test_a_request_pinned_by_time_reads_every_groups_primary():
    router = pinning_router()
    with request_scope(TIME_PIN) as request:
        request.group_pins = TIME_PIN

        assert (router.db_for_read(Item), router.db_for_read(User)) == (
            "default",
            "billing",
        )


def test_pin_this_thread_pins_every_group_and_unpin_frees_them():
    router = pinning_router()
    pin_this_thread()
    pinned = (router.db_for_read(Item), router.db_for_read(User))
    unpin_this_thread()

    assert pinned == ("default", "billing")
    assert router.db_for_read(User) == "billing_r1"


def test_blocks_for_one_group_keep_other_blocks_in_force():
    router = pinning_router()
    with use_primary_db("billing"):
        pin_this_thread()
        everything = (router.db_for_read(Item), router.db_for_read(User))
    with use_primary_db("default"), use_primary_db("billing"):
        both = (router.db_for_read(Item), router.db_for_read(User))
    with use_replica("replica1"), use_primary_db("billing"):
        forced = (router.db_for_read(Item), router.db_for_read(User))

    assert everything == ("default", "billing")
    assert both == ("default", "billing")
    assert forced == ("replica1", "billing")


def test_unpin_in_a_billing_block_frees_default_and_keeps_the_block():
    router = pinning_router()
    with request_scope(TIME_PIN) as request:
        request.group_pins = TIME_PIN
        with use_primary_db("billing"):
            unpin_this_thread()
            freed = (router.db_for_read(Item), router.db_for_read(User))

    assert freed[0] in DEFAULT_REPLICAS
    assert freed[1] == "billing"


def test_use_replica_with_a_billing_replica_outside_a_request():
    router = pinning_router()
    with use_primary_db, use_replica("billing_r1"):
        assert router.db_for_read(User) == "billing_r1"
        assert router.db_for_read(Item) == "default"
    with use_primary_db, use_replica():
        assert router.db_for_read(User) == "billing_r1"


def test_use_replica_refuses_a_primary():
    with (
        pytest.raises(ValueError, match="'billing' is not in REPLICA_DATABASES"),
        use_replica("billing"),
    ):
        pass


def test_the_replica_router_ignores_pins_for_every_group():
    router = ReplicaRouter()
    with use_primary_db:
        assert router.db_for_read(User) == "billing_r1"
        assert router.db_for_read(Item) in DEFAULT_REPLICAS
    with request_scope(TIME_PIN) as request:
        request.group_pins = TIME_PIN
        assert router.db_for_read(User) == "billing_r1"
    with use_replica(max_lag=5):
        assert router.db_for_read(User) == "billing"  # nothing measured


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_reads_in_an_atomic_block_on_billing_go_to_billing():
    router = pinning_router()
    with transaction.atomic(using="billing"):
        assert router.db_for_read(User) == "billing"
        assert router.db_for_read(Item) in DEFAULT_REPLICAS
        with use_replica(max_lag=5):
            assert router.db_for_read(User) == "billing"


def test_a_bounded_block_without_health_checks_reads_billing_and_says_why(caplog):
    router = pinning_router()
    with caplog.at_level(logging.WARNING, "multidb"), use_replica(max_lag=5):
        assert router.db_for_read(User) == "billing"

    assert "health checks are off" in caplog.text


def test_a_bounded_block_in_a_request_pinned_on_billing_reads_billing():
    router = pinning_router()
    with request_scope(NO_PIN) as request:
        request.group("billing").pinned = TIME_PIN
        with use_replica(max_lag=5):
            assert router.db_for_read(User) == "billing"


# --- tokens --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["garbage", "y"])
def test_an_invalid_value_pins_every_group_by_time_or_none(value):
    assert tokens.pins_for(value) == (TIME_PIN, TIME_PIN)
    assert tokens.pins_for(value, NO_PIN) == (NO_PIN, {})
    assert tokens.read(value) is None


@override_settings(MULTIDB_REPLICA_GROUPS=None, MULTIDB_PRIMARY_FOR=None)
def test_without_groups_a_token_for_billing_alone_pins_default_by_time():
    token = token_for(billing=32)

    assert tokens.pin_for(token) is TIME_PIN


def test_read_after_nested_in_a_request_keeps_the_requests_billing_pin():
    with request_scope(NO_PIN) as request:
        request.group("billing").pinned = TIME_PIN
        with read_after(None), read_after(tokens.sign(5)):
            inner = current_request()
            assert inner is not None and inner.group("billing").pinned is TIME_PIN


# --- the middleware ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "cookie", "billing"),
    [("POST", None, TIME_PIN), ("GET", None, NO_PIN), ("GET", "garbage", TIME_PIN)],
)
def test_an_unsafe_method_or_a_garbled_cookie_pins_every_group(method, cookie, billing):
    state, _ = run_middleware(method, cookie)

    assert state.group("billing").pinned == billing


def test_a_get_that_wrote_to_billing_alone_sets_the_cookie():
    def wrote(state: Any) -> None:
        state.group("billing").wrote = True

    _, response = run_middleware("GET", after=wrote)
    _, untouched = run_middleware("GET")

    # SQLite has no positions: the legacy time pin (tests/groups has them).
    assert response.cookies["multidb_pin_writes"].value == tokens.LEGACY_VALUE
    assert "multidb_pin_writes" not in untouched.cookies


def test_the_middleware_notes_atomic_requests_on_each_primary():
    billing = connections.settings["billing"]
    billing["ATOMIC_REQUESTS"] = True
    try:
        middleware = PinningRouterMiddleware(respond)
        request = RequestFactory().get("/")
        from multidb.middleware import _begin, end_request

        token = _begin(request)
        try:
            middleware.process_view(request, respond)
            state = current_request()
            assert state is not None
            assert state.atomic_groups == frozenset({"billing"})
            assert state.group("billing").atomic_view
            assert not state.atomic_view
        finally:
            end_request(token)
    finally:
        billing["ATOMIC_REQUESTS"] = False


# --- corners ---------------------------------------------------------------------


@override_settings(MULTIDB_REPLICA_GROUPS=5)
def test_a_bad_groups_setting_fails_no_connection_and_no_router():
    PinningReplicaRouter()  # the checks report it (multidb.E027)

    created = SimpleNamespace(alias="billing", execute_wrappers=[])
    pinning._watch_primary(None, created)  # connection_created

    assert PinningReplicaRouter.db_for_read is routers.route_read
    assert created.execute_wrappers == []


def test_a_request_keeps_a_state_for_each_primary_it_uses(settings):
    settings.MULTIDB_REPLICA_GROUPS = {**GROUPS, "tenant": []}
    with request_scope(NO_PIN) as request:
        billing, tenant = request.group("billing"), request.group("tenant")

        assert request.group("billing") is billing
        assert (billing.primary, tenant.primary) == ("billing", "tenant")
        assert tenant.pick() == "tenant"  # no replicas: its primary


def test_a_position_settles_no_replica_once_the_request_wrote_meanwhile():
    state = pinning.GroupState("billing", TIME_PIN)
    current = rotation.group_rotation("billing")

    assert routers._settle_group(state, "billing_r1", current, 5) == "billing"
    assert state.settled is None


@pytest.mark.django_db(transaction=True, databases=["default"])
def test_in_a_request_reads_in_an_atomic_block_on_default_go_to_default():
    router = pinning_router()
    with request_scope(NO_PIN), transaction.atomic():
        assert router.db_for_read(Item) == "default"
        assert router.db_for_read(User) == "billing_r1"


def test_routing_a_billing_write_on_an_event_loop_opens_no_connection():
    async def write() -> str:
        return pinning_router().db_for_write(User)

    with request_scope(NO_PIN):
        assert asyncio.run(write()) == "billing"


def test_a_bounded_block_before_any_probe_reads_billing(settings):
    router = pinning_router()
    rotation.group_rotation("billing")  # built: no prober starts below
    settings.MULTIDB_HEALTH_CHECK_INTERVAL = 60
    with use_replica(max_lag=5):
        assert router.db_for_read(User) == "billing"
