"""Read-your-writes and offload in the configurations users run, on a real
primary and two replicas: asynchronous commit (for the role, the connection,
one transaction), ``ATOMIC_REQUESTS``, tokens older than the pin, and the two
races of the token path.

Each test reads through views that report the port of the server that
answered (``inet_server_port()``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connections
from django.test import AsyncClient, Client, override_settings

import multidb
from multidb import health, read_after, tokens
from multidb.checks import check_read_your_writes
from multidb.middleware import pinning_cookie
from multidb.pinning import begin_request, end_request
from multidb.testing.cluster import Cluster
from tests.app.models import Item
from tests.postgres.conftest import Faults, node_of, reset_connections
from tests.postgres.test_tokens import (
    PRIMARY,
    REPLICA_PORTS,
    find,
    port,
)
from tests.postgres.views import _lookup

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

USERS = 30


# --- asynchronous commit -----------------------------------------------------


@pytest.fixture(params=["role", "connection", "transaction"])
def async_commit(request: Any, pg_cluster: Cluster) -> Iterator[str]:
    """``synchronous_commit = off`` set one of three ways; the path of the view
    that writes under it."""
    how = request.param
    options = connections["default"].settings_dict["OPTIONS"]
    if how == "role":
        pg_cluster.primary.query("ALTER ROLE postgres SET synchronous_commit = off")
    elif how == "connection":
        options["options"] = "-c synchronous_commit=off"
    reset_connections("default")
    try:
        if how != "transaction":
            with connections["default"].cursor() as cursor:
                cursor.execute("SHOW synchronous_commit")
                assert cursor.fetchone()[0] == "off"
        yield "/create-async-commit/" if how == "transaction" else "/create/"
    finally:
        if how == "role":
            pg_cluster.primary.query("ALTER ROLE postgres RESET synchronous_commit")
        options.pop("options", None)
        reset_connections("default")


def test_under_asynchronous_commit_every_user_reads_their_own_write(async_commit):
    missed = []
    for user in range(USERS):
        client = Client()
        client.post(async_commit, {"name": f"async-{user}"})
        if not find(client, f"async-{user}")["found"]:
            missed.append(user)

    assert missed == []


# --- tokens: older than the pin, and the cookie's lifetime -------------------


@pytest.mark.parametrize(
    ("configured", "max_age"),
    [
        # The defaults: the lag limit (30 s) plus a probe round (1 + 2 x 1 s).
        ({"MULTIDB_HEALTH_CHECK_INTERVAL": 1.0}, 33),
        (
            {
                "MULTIDB_HEALTH_CHECK_INTERVAL": 0.5,
                "MULTIDB_REPLICA_MAX_LAG": 5,
                "MULTIDB_HEALTH_CHECK_TIMEOUT": 1,
                "MULTIDB_PINNING_SECONDS": 1,
            },
            8,
        ),
        ({"MULTIDB_HEALTH_CHECK_INTERVAL": 1.0, "MULTIDB_PINNING_SECONDS": 60}, 60),
        # Nothing bounds the lag (multidb.W006): the time rule.
        ({"MULTIDB_HEALTH_CHECK_INTERVAL": None}, 15),
        ({"MULTIDB_HEALTH_CHECK_INTERVAL": 1.0, "MULTIDB_REPLICA_MAX_LAG": None}, 15),
    ],
)
def test_a_token_cookie_outlives_the_lag_limit_plus_a_probe_round(configured, max_age):
    with override_settings(**configured):
        response = Client().post("/create/", {"name": "lifetime"})

    assert type(tokens.pin_for(response.cookies[pinning_cookie()].value)) is int
    assert response.cookies[pinning_cookie()]["max-age"] == max_age


@pytest.fixture
def delayed_replicas(pg_cluster: Cluster) -> Iterator[None]:
    """Both replicas apply WAL 3 s late (within a 10 s lag limit)."""
    nodes = [node_of(pg_cluster, alias) for alias in ("replica1", "replica2")]
    try:
        for node in nodes:
            pg_cluster.set_apply_delay(node, 3000)
        yield
    finally:
        for node in nodes:
            pg_cluster.set_apply_delay(node, 0)


@override_settings(MULTIDB_PINNING_SECONDS=1, MULTIDB_REPLICA_MAX_LAG=10)
def test_a_token_older_than_the_pin_still_reads_its_write_from_delayed_replicas(
    delayed_replicas,
):
    client = Client()
    client.post("/create/", {"name": "older-than-the-pin"})
    time.sleep(1.5)  # the token is now older than MULTIDB_PINNING_SECONDS

    answer = find(client, "older-than-the-pin")

    assert (answer["found"], answer["port"]) == (True, PRIMARY)


# --- two races of the token path -----------------------------------------------


def test_a_write_while_the_replica_is_asked_for_its_position_keeps_the_pin(
    pg_cluster,
):
    Item.objects.create(name="before")
    token = multidb.write_token()
    pg_cluster.wait_caught_up()
    health.registry.forget()  # so the read must ask a replica

    def write_meanwhile(execute, sql, params, many, context):
        if "pg_last_wal_replay_lsn" in sql:
            # Another thread of the same request writes while the replica
            # answers.
            Item.objects.create(name="meanwhile")
        return execute(sql, params, many, context)

    request = begin_request(tokens.pin_for(token), token)
    try:
        with (
            connections["replica1"].execute_wrapper(write_meanwhile),
            connections["replica2"].execute_wrapper(write_meanwhile),
        ):
            during = _lookup("before")
        after = _lookup("meanwhile")
    finally:
        end_request(request)

    assert (during["found"], during["port"]) == (True, PRIMARY)
    assert (after["found"], after["port"]) == (True, PRIMARY)


def test_read_after_an_older_token_never_reads_behind_the_requests_own_token(
    faults: Faults, pg_cluster: Cluster
):
    Item.objects.create(name="older")
    older = multidb.write_token()
    pg_cluster.wait_caught_up()
    faults.pause("replica1")
    Item.objects.create(name="newer")
    newer = multidb.write_token()
    pg_cluster.wait_caught_up(skip_paused=True)
    health.probe_now()  # replica1 has replayed `older`, replica2 `newer`

    request = begin_request(tokens.pin_for(newer), newer)
    try:
        settled = _lookup("newer")  # the request settles on replica2
        inside = []
        for _ in range(6):  # each block picks the next replica in rotation
            with read_after(older):
                inside.append(_lookup("newer"))
    finally:
        end_request(request)

    assert (settled["found"], settled["port"]) == (True, port("replica2"))
    assert port("replica1") not in {answer["port"] for answer in inside}
    assert all(answer["found"] for answer in inside)


# --- ATOMIC_REQUESTS -------------------------------------------------------------


@pytest.fixture
def atomic_requests(pg_cluster: Cluster) -> Iterator[None]:
    """``ATOMIC_REQUESTS = True`` on ``default``, and a replicated row."""
    Item.objects.create(name="replicated")
    pg_cluster.wait_caught_up()
    settings_dict = connections["default"].settings_dict
    settings_dict["ATOMIC_REQUESTS"] = True
    try:
        yield
    finally:
        settings_dict["ATOMIC_REQUESTS"] = False


def test_under_atomic_requests_a_reading_view_reads_a_replica(atomic_requests):
    answers = [find(Client(), "replicated") for _ in range(4)]

    assert {(a["found"], a["port"] in REPLICA_PORTS) for a in answers} == {(True, True)}


def test_under_atomic_requests_an_async_client_reads_a_replica(atomic_requests):
    async def get() -> Any:
        return await AsyncClient().get("/find/", {"name": "replicated"})

    answer = async_to_sync(get)().json()

    assert (answer["found"], answer["port"] in REPLICA_PORTS) == (True, True)


def test_under_atomic_requests_a_write_pins_the_rest_of_the_request(
    atomic_requests,
):
    answer = find(Client(), "written-in-view", path="/write-then-find/")

    assert (answer["found"], answer["port"]) == (True, PRIMARY)


def test_under_atomic_requests_the_views_own_transaction_reads_the_primary(
    atomic_requests,
):
    answer = find(Client(), "replicated", path="/find-in-own-transaction/")

    assert (answer["found"], answer["port"]) == (True, PRIMARY)


def test_a_view_opted_out_of_atomic_requests_reads_a_replica(atomic_requests):
    answer = find(Client(), "replicated", path="/find-non-atomic/")

    assert (answer["found"], answer["port"] in REPLICA_PORTS) == (True, True)


def test_under_atomic_requests_the_next_request_reads_its_write_by_token(
    atomic_requests, faults
):
    faults.pause("replica1")
    faults.pause("replica2")
    client = Client()
    client.post("/create/", {"name": "by-token"})

    mine = find(client, "by-token")
    other = find(Client(), "by-token")

    assert (mine["found"], mine["port"]) == (True, PRIMARY)
    assert (other["found"], other["port"] in REPLICA_PORTS) == (False, True)


# --- the check that the cookie can outlive the lag limit ----------------------------


@pytest.mark.parametrize(
    ("configured", "ids"),
    [
        (
            {"MULTIDB_HEALTH_CHECK_INTERVAL": 1.0, "MULTIDB_REPLICA_MAX_LAG": 30},
            [],
        ),
        ({"MULTIDB_HEALTH_CHECK_INTERVAL": None}, ["multidb.W006"]),
        (
            {"MULTIDB_HEALTH_CHECK_INTERVAL": 1.0, "MULTIDB_REPLICA_MAX_LAG": None},
            ["multidb.W006"],
        ),
        (
            {"MULTIDB_HEALTH_CHECK_INTERVAL": None, "MULTIDB_PINNING_MODE": "time"},
            [],
        ),
    ],
)
def test_a_primary_with_positions_and_nothing_bounding_lag_warns(configured, ids):
    with override_settings(**configured):
        found = check_read_your_writes()

    assert [message.id for message in found] == ids
