"""Replica groups against two independent primaries: ``default`` (replicas
``replica1`` and ``replica2``) and ``billing`` (``billing_r1``), where the
``billing`` app lives.

Every claim is judged by the server that answered (``inet_server_port()``),
never by the alias the router returned.
"""

from __future__ import annotations

import json
import time

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections, transaction
from django.test import Client, override_settings

from multidb import (
    PinningReplicaRouter,
    health,
    read_after,
    replica_status,
    rotation,
    tokens,
    use_primary_db,
    use_replica,
    write_token,
)
from multidb.conf import conf
from tests.app.models import Item
from tests.billing.models import Invoice

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

PORTS: dict[str, int] = settings.PG_NODE_PORTS
DEFAULT_REPLICAS = {PORTS["replica1"], PORTS["replica2"]}
ALL_REPLICAS = ("replica1", "replica2", "billing_r1")


def port_of(model: type[Item] | type[Invoice]) -> int:
    """The port of the server that answered a read of ``model``."""
    (row,) = model._default_manager.raw("SELECT inet_server_port() AS id")
    return int(row.pk)


def token_parts(client: Client) -> dict[str, str]:
    decoded = tokens._decode(client.cookies[conf.PINNING_COOKIE].value)
    assert decoded is not None
    return decoded[0]


def test_reads_spread_over_each_groups_replicas_and_never_cross(groups_cluster):
    client = Client()

    items = {client.get("/items/").json()["port"] for _ in range(20)}
    invoices = {client.get("/invoices/").json()["port"] for _ in range(20)}

    assert items == DEFAULT_REPLICAS
    assert invoices == {PORTS["billing_r1"]}


def test_writes_go_to_the_primary_each_model_lives_on(groups_cluster):
    item = Item.objects.create(name="on default")
    invoice = Invoice.objects.create(number=1)

    assert (item._state.db, invoice._state.db) == ("default", "billing")
    with connections["billing"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM billing_invoice WHERE id = %s", [invoice.pk]
        )
        assert cursor.fetchone() == (1,)


def test_a_write_to_billing_pins_only_billing_reads_for_the_rest_of_the_request(
    groups_cluster, settings
):
    # A POST would pin every group from its start.
    settings.MULTIDB_PIN_UNSAFE_METHODS = False
    body = Client().post("/invoices/create-then-read/").json()

    assert body["invoice"] == PORTS["billing"]
    assert body["item"] in DEFAULT_REPLICAS


def test_the_tokens_for_both_groups_round_trip_through_the_cookie(groups_cluster):
    for alias in ALL_REPLICAS:
        groups_cluster.pause(alias)
    client = Client()
    client.post("/invoices/create/", {"number": 2})
    after_billing = token_parts(client)
    client.post("/items/create/", {"name": "then on default"})
    after_both = token_parts(client)

    paused = client.get("/both/").json()
    for alias in ALL_REPLICAS:
        groups_cluster.resume(alias)
    groups_cluster.wait_caught_up()
    health.registry.probe()  # the prober has seen them replay: no query
    caught_up = client.get("/both/").json()

    assert set(after_billing) == {"billing"} and after_billing["billing"]
    # The billing position the cookie came with is carried on.
    assert after_both == {"default": after_both["default"], **after_billing}
    assert after_both["default"]
    assert paused == {"item": PORTS["default"], "invoice": PORTS["billing"]}
    assert caught_up["item"] in DEFAULT_REPLICAS
    assert caught_up["invoice"] == PORTS["billing_r1"]


def test_a_cookie_for_billing_alone_leaves_default_reads_on_the_replicas(
    groups_cluster,
):
    groups_cluster.pause("billing_r1")
    client = Client()
    client.post("/invoices/create/", {"number": 3})

    body = client.get("/both/").json()

    assert body == {"item": body["item"], "invoice": PORTS["billing"]}
    assert body["item"] in DEFAULT_REPLICAS


def test_a_replica_death_in_billing_leaves_the_default_group_untouched(
    groups_cluster,
):
    health.registry.probe()
    groups_cluster.stop("billing_r1")

    down = {status.alias: status for status in health.registry.probe()}
    invoice_port = port_of(Invoice)
    item_ports = {port_of(Item) for _ in range(10)}
    groups_cluster.start("billing_r1")
    back = {status.alias: status for status in health.registry.probe()}

    assert (down["billing_r1"].state, down["billing_r1"].group) == ("down", "billing")
    assert [down[a].state for a in ("default", "billing", "replica1", "replica2")] == [
        "ok", "ok", "ok", "ok",
    ]  # fmt: skip
    assert invoice_port == PORTS["billing"]
    assert item_ports == DEFAULT_REPLICAS
    assert back["billing_r1"].state == "ok"
    assert port_of(Invoice) == PORTS["billing_r1"]


def test_each_replicas_lag_is_measured_against_its_own_primary(groups_cluster):
    health.registry.probe()
    groups_cluster.pause("billing_r1")
    for number in range(20):
        Invoice.objects.create(number=number)
    Item.objects.create(name="the default group keeps up")
    groups_cluster.wait_caught_up()  # skips the paused one

    statuses = {status.alias: status for status in health.registry.probe()}

    assert statuses["billing_r1"].lag_bytes > 0
    assert statuses["replica1"].lag_bytes == statuses["replica2"].lag_bytes == 0
    assert {s.alias: s.group for s in replica_status()} == {
        "replica1": "default", "replica2": "default", "billing_r1": "billing",
    }  # fmt: skip


def test_migrations_land_on_the_primary_each_app_lives_on():
    tables = {
        alias: set(connections[alias].introspection.table_names())
        for alias in ("default", "billing")
    }

    assert "billing_invoice" in tables["billing"]
    assert "billing_invoice" not in tables["default"]
    assert Item._meta.db_table in tables["default"]
    assert Item._meta.db_table not in tables["billing"]
    assert "django_content_type" not in tables["billing"]


def test_use_primary_db_with_an_alias_pins_that_group_alone():
    with use_primary_db("billing"):
        billing_only = (port_of(Item), port_of(Invoice))
    with use_primary_db("default"):
        default_only = (port_of(Item), port_of(Invoice))
    with use_primary_db:
        every_group = (port_of(Item), port_of(Invoice))

    assert billing_only[0] in DEFAULT_REPLICAS
    assert billing_only[1] == PORTS["billing"]
    assert default_only == (PORTS["default"], PORTS["billing_r1"])
    assert every_group == (PORTS["default"], PORTS["billing"])


def test_use_primary_db_refuses_an_alias_that_is_no_primary():
    with pytest.raises(ValueError, match="'billing_r1' is not a primary"):
        use_primary_db("billing_r1")


def test_use_replica_of_billing_forces_that_replica_for_billing_models_only():
    with use_primary_db, use_replica("billing_r1"):
        forced = (port_of(Item), port_of(Invoice))
    with use_primary_db, use_replica("replica2"):
        forced_default = (port_of(Item), port_of(Invoice))

    assert forced == (PORTS["default"], PORTS["billing_r1"])
    assert forced_default == (PORTS["replica2"], PORTS["billing"])


def test_use_replica_without_an_alias_reads_every_groups_replicas():
    with use_primary_db, use_replica():
        ports = (port_of(Item), port_of(Invoice))

    assert ports[0] in DEFAULT_REPLICAS
    assert ports[1] == PORTS["billing_r1"]


def test_reads_inside_an_atomic_block_on_billing_go_to_billing_alone():
    with transaction.atomic(using="billing"):
        inside = (port_of(Item), port_of(Invoice))
    with transaction.atomic():
        inside_default = (port_of(Item), port_of(Invoice))

    assert inside[0] in DEFAULT_REPLICAS
    assert inside[1] == PORTS["billing"]
    assert inside_default == (PORTS["default"], PORTS["billing_r1"])


def test_write_token_holds_each_primarys_position_and_read_after_honours_each(
    groups_cluster,
):
    for alias in ALL_REPLICAS:
        groups_cluster.pause(alias)
    Invoice.objects.create(number=4)
    Item.objects.create(name="written outside a request")
    token = write_token()
    assert token is not None

    with read_after(token):
        # The second read of each group asks no replica again.
        behind = (port_of(Item), port_of(Invoice), port_of(Item), port_of(Invoice))
    for alias in ALL_REPLICAS:
        groups_cluster.resume(alias)
    groups_cluster.wait_caught_up()
    with read_after(token):
        caught_up = (port_of(Item), port_of(Invoice))

    decoded = tokens._decode(token)
    assert decoded is not None and set(decoded[0]) == {"default", "billing"}
    assert behind == (PORTS["default"], PORTS["billing"]) * 2
    assert caught_up[0] in DEFAULT_REPLICAS
    assert caught_up[1] == PORTS["billing_r1"]


def test_relations_are_allowed_within_one_group_only():
    router = PinningReplicaRouter()
    item, other = Item.objects.create(name="a"), Item.objects.create(name="b")
    invoice = Invoice.objects.create(number=5)

    assert router.allow_relation(item, other) is True
    assert router.allow_relation(item, invoice) is False
    assert router.allow_relation(Invoice(number=6), invoice) is True


def test_the_health_view_reports_each_group(groups_cluster, settings):
    settings.MULTIDB_HEALTH_DETAILS = "always"
    ok = Client().get("/health/db/")
    groups_cluster.stop("billing_r1")
    health.registry.probe()
    failing = Client().get("/health/db/")

    assert ok.status_code == 200
    assert {g: v["usable_replicas"] for g, v in ok.json()["groups"].items()} == {
        "default": 2,
        "billing": 1,
    }
    assert failing.status_code == 503
    assert failing.json()["groups"]["billing"]["status"] == "fail"
    assert failing.json()["groups"]["default"]["status"] == "ok"


def test_multidb_status_lists_each_group(capsys):
    call_command("multidb_status", "--json")
    statuses = json.loads(capsys.readouterr().out)
    call_command("multidb_status")
    table = capsys.readouterr().out

    assert [(s["alias"], s["role"], s["group"]) for s in statuses] == [
        ("default", "primary", "default"),
        ("replica1", "replica", "default"),
        ("replica2", "replica", "default"),
        ("billing", "primary", "billing"),
        ("billing_r1", "replica", "billing"),
    ]
    assert table.splitlines()[0].split()[:2] == ["GROUP", "ALIAS"]


@override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=60)
def test_a_request_failing_on_billings_replica_takes_that_replica_out_alone(
    groups_cluster, wait_until
):
    # The first routing starts the prober, which probes once and then sleeps
    # for a minute: what changes after that comes from the failing request.
    rotation.rotation()
    wait_until(lambda: all(s.state == "ok" for s in health.registry.statuses()))
    groups_cluster.stop("billing_r1")

    # It reads a default replica, then billing_r1, which is down.
    response = Client(raise_request_exception=False).get("/both/")
    states = {s.alias: s.state for s in health.registry.statuses()}

    assert response.status_code == 500
    assert states["billing_r1"] == "down"
    assert states["replica1"] == states["replica2"] == "ok"


@override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=60, MULTIDB_REPLICA_MAX_LAG=None)
def test_a_staleness_bound_holds_for_each_group_by_its_own_lag(groups_cluster):
    health.registry.probe()
    groups_cluster.pause("billing_r1")
    Invoice.objects.create(number=8)
    time.sleep(1.2)
    health.registry.probe()  # billing_r1 is now over a second behind

    with use_replica(max_lag=1):
        bounded = (port_of(Item), port_of(Invoice))
    with use_replica(max_lag=60):
        loose = port_of(Invoice)

    assert bounded[0] in DEFAULT_REPLICAS
    assert bounded[1] == PORTS["billing"]
    assert loose == PORTS["billing_r1"]


@override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=60, MULTIDB_REPLICA_MAX_LAG=None)
def test_a_staleness_bound_with_a_billing_token_needs_a_replica_past_both(
    groups_cluster,
):
    Invoice.objects.create(number=9)
    token = write_token()
    groups_cluster.wait_caught_up()
    health.registry.probe()  # billing_r1 seen past the token, 0 behind
    with read_after(token), use_replica(max_lag=60):
        past = port_of(Invoice)
    groups_cluster.pause("billing_r1")
    Invoice.objects.create(number=10)
    later = write_token()
    health.registry.probe()  # within 60 s, but not past the later token
    with read_after(later), use_replica(max_lag=60):
        behind = port_of(Invoice)

    assert past == PORTS["billing_r1"]
    assert behind == PORTS["billing"]
