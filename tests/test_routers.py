from itertools import pairwise

import pytest
from django.apps import apps
from django.db import router as django_router
from django.db import transaction
from django.test import override_settings

from multidb import (
    PinningReplicaRouter,
    ReplicaRouter,
    get_replica,
    use_primary_db,
    use_replica,
)
from multidb.pinning import pin_this_thread
from tests.app.models import Item

REPLICAS = {"replica1", "replica2"}

both_routers = pytest.mark.parametrize(
    "router_class", [ReplicaRouter, PinningReplicaRouter]
)
on_all_databases = pytest.mark.django_db(transaction=True, databases="__all__")


def reads(router, count=4):
    return [router.db_for_read(Item) for _ in range(count)]


@both_routers
def test_writes_always_go_to_default(router_class):
    router = router_class()
    assert router.db_for_write(Item) == "default"
    with use_replica("replica2"):
        assert router.db_for_write(Item) == "default"
    pin_this_thread()
    assert router.db_for_write(Item) == "default"


@both_routers
def test_migrations_are_only_allowed_on_default(router_class):
    router = router_class()
    assert router.allow_migrate("default", "app")
    assert router.allow_migrate("default", "app", model_name="item")
    assert not router.allow_migrate("replica1", "app")
    assert not router.allow_migrate("replica2", "app", model_name="item")


@both_routers
def test_syncdb_is_only_allowed_on_default(router_class):
    router = router_class()
    assert router.allow_syncdb("default", Item)
    assert not router.allow_syncdb("replica1", Item)


@both_routers
def test_relations_are_always_allowed(router_class):
    assert router_class().allow_relation(Item(name="a"), Item(name="b")) is True


@both_routers
def test_reads_round_robin_over_replicas_outside_a_request(router_class):
    picked = reads(router_class(), 6)
    assert set(picked) == REPLICAS
    assert all(a != b for a, b in pairwise(picked))


def test_pinning_router_reads_from_default_when_pinned():
    router = PinningReplicaRouter()
    pin_this_thread()
    assert set(reads(router)) == {"default"}


def test_pinning_router_reads_from_default_inside_use_primary_db():
    router = PinningReplicaRouter()
    with use_primary_db:
        assert set(reads(router)) == {"default"}
    assert set(reads(router)) == REPLICAS


def test_replica_router_ignores_pins():
    router = ReplicaRouter()
    with use_primary_db:
        assert set(reads(router)) == REPLICAS
    pin_this_thread()
    assert set(reads(router)) == REPLICAS


@both_routers
@on_all_databases
def test_reads_inside_atomic_on_default_go_to_default(router_class):
    router = router_class()
    assert set(reads(router)) == REPLICAS
    with transaction.atomic():
        assert set(reads(router)) == {"default"}
        with transaction.atomic():
            assert router.db_for_read(Item) == "default"
    assert set(reads(router)) == REPLICAS


@both_routers
@on_all_databases
def test_reads_inside_atomic_on_a_replica_still_go_to_replicas(router_class):
    with transaction.atomic(using="replica1"):
        assert set(reads(router_class())) == REPLICAS


@both_routers
def test_use_replica_forces_reads_to_that_replica_even_when_pinned(router_class):
    router = router_class()
    pin_this_thread()
    with use_replica("replica2"):
        assert set(reads(router)) == {"replica2"}
        with use_primary_db, use_replica("replica2"):
            assert set(reads(router)) == {"replica2"}


@both_routers
@on_all_databases
def test_use_replica_forces_reads_to_that_replica_inside_atomic(router_class):
    router = router_class()
    with transaction.atomic(), use_replica("replica1"):
        assert set(reads(router)) == {"replica1"}


@both_routers
@override_settings(REPLICA_DATABASES=[])
def test_reads_go_to_default_with_a_warning_when_replica_databases_is_empty(
    router_class,
):
    router = router_class()
    with pytest.warns(UserWarning, match="No replica databases are configured"):
        assert router.db_for_read(Item) == "default"
    assert set(reads(router)) == {"default"}


@both_routers
def test_reads_go_to_default_with_a_warning_when_replica_databases_is_unset(
    router_class, settings
):
    del settings.REPLICA_DATABASES
    router = router_class()
    with pytest.warns(UserWarning, match="No replica databases are configured"):
        assert router.db_for_read(Item) == "default"
    assert set(reads(router)) == {"default"}


@override_settings(
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django.contrib.sessions",
        "tests.app",
    ]
)
def test_routers_work_without_multidb_in_installed_apps():
    assert not apps.is_installed("multidb")
    assert set(reads(ReplicaRouter())) == REPLICAS
    assert set(reads(django_router)) == REPLICAS
    assert django_router.db_for_write(Item) == "default"
    with use_primary_db:
        assert django_router.db_for_read(Item) == "default"


def test_django_router_routes_through_the_pinning_router(decisions):
    assert set(reads(django_router)) == REPLICAS
    assert django_router.db_for_write(Item) == "default"
    assert django_router.allow_migrate_model("default", Item)
    assert not django_router.allow_migrate_model("replica1", Item)
    assert django_router.allow_relation(Item(name="a"), Item(name="b"))
    with use_primary_db:
        assert django_router.db_for_read(Item) == "default"
    assert [kind for kind, _, _ in decisions] == ["read"] * 4 + ["write", "read"]


@override_settings(DATABASE_ROUTERS=["multidb.ReplicaRouter"])
def test_django_router_routes_through_the_replica_router():
    assert isinstance(django_router.routers[0], ReplicaRouter)
    assert set(reads(django_router)) == REPLICAS
    assert django_router.db_for_write(Item) == "default"
    with use_primary_db:
        assert django_router.db_for_read(Item) in REPLICAS


@on_all_databases
def test_orm_reads_go_to_replicas_and_writes_to_default(decisions):
    assert {Item.objects.all().db for _ in range(4)} == REPLICAS
    decisions.clear()
    Item.objects.create(name="written")
    assert ("write", "default") in [(kind, alias) for kind, alias, _ in decisions]
    decisions.clear()
    assert Item.objects.count() == 1
    [(kind, alias, _)] = decisions
    assert kind == "read"
    assert alias in REPLICAS


@on_all_databases
def test_orm_reads_inside_atomic_go_to_default(decisions):
    with transaction.atomic():
        Item.objects.create(name="written")
        assert Item.objects.all().db == "default"
        assert Item.objects.get().name == "written"
    assert Item.objects.all().db in REPLICAS


def test_get_replica_is_the_next_replica_outside_a_block():
    picked = [get_replica() for _ in range(4)]
    assert set(picked) == REPLICAS
    assert picked[0] != picked[1]


def test_get_replica_is_the_replica_of_a_use_replica_block():
    with use_replica("replica2"):
        assert {get_replica() for _ in range(3)} == {"replica2"}
    with use_replica:
        assert len({get_replica() for _ in range(3)}) == 1
