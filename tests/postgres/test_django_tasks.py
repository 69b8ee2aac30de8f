"""Django tasks read what the code that enqueued them wrote
(``multidb.contrib.tasks``), against the real primary and replicas.

The backend (``DummyBackend``) only stores a task; the test runs it as a
worker does: from what was stored (its path and JSON arguments), in a
thread of its own, outside the request that enqueued it.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.utils.module_loading import import_string

from tests.postgres.test_celery import assert_read_on

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def run_as_a_worker(stored: dict[str, Any]) -> dict[str, Any]:
    """Run the stored task in a new thread (a fresh context) and return
    where it read."""
    stored = json.loads(json.dumps(stored))
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            task = import_string(stored["path"])
            out["result"] = task.call(*stored["args"], **stored["kwargs"])
        finally:
            for connection in connections.all(initialized_only=True):
                connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    return out["result"]


@pytest.mark.parametrize("view", ["create-and-enqueue", "async-create-and-enqueue"])
def test_a_django_task_reads_its_write_from_the_primary_until_a_replica_has_it(
    client, faults, pg_cluster, view
):
    """Replicas paused: the task reads the primary (never stale); run again
    from what the backend stored (a retry), once the replicas have replayed
    the write, it reads a replica with the same token."""
    for alias in settings.REPLICA_DATABASES:
        faults.pause(alias)
    stored = client.post(f"/tasks/{view}/", {"name": "x"}).json()
    assert "multidb_token" in stored["kwargs"]
    assert_read_on(run_as_a_worker(stored), {"default"})

    for alias in settings.REPLICA_DATABASES:
        faults.resume(alias)
    pg_cluster.wait_caught_up()
    assert_read_on(run_as_a_worker(stored), set(settings.REPLICA_DATABASES))
