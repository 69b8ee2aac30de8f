"""The README's example: the site's own tests against real replication."""

import pytest
from notes.models import Note

# Committed writes (transaction=True) are what replicas receive; the replica
# aliases must be allowed in the test (databases="__all__").
pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_a_get_after_a_post_sees_the_write_while_replicas_are_paused(
    client, multidb_cluster
):
    for alias in multidb_cluster.replicas:
        multidb_cluster.pause(alias)

    assert client.post("/notes/", {"text": "hello"}).status_code == 201
    with multidb_cluster.record() as served:
        response = client.get("/notes/")

    assert response.json() == {"notes": ["hello"]}
    assert served.servers == {"default"}  # the primary answered


def test_a_visitor_who_wrote_nothing_reads_a_replica(client, multidb_cluster):
    Note.objects.create(text="old")
    multidb_cluster.wait_caught_up()

    with multidb_cluster.record() as served:
        response = client.get("/notes/")

    assert response.json() == {"notes": ["old"]}
    assert served.on_replicas and not served.on_primary
