"""Celery tasks read what the code that queued them wrote
(``multidb.contrib.celery``), run by a real worker process on kombu's
filesystem transport against the real primary and replicas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections

from multidb.testing.control import SiteCluster
from multidb.tokens import pin_for
from tests.app.models import Item
from tests.postgres import celery_app

ROOT = Path(__file__).resolve().parents[2]
#: How long a worker may take to start, and a task to report.
DEADLINE = 60.0

pytestmark = pytest.mark.django_db(transaction=True)


def _databases() -> dict[str, dict[str, Any]]:
    """The session's ``DATABASES`` as its connections use them now."""
    return {
        alias: {key: value for key, value in entry.items() if key != "TEST"}
        for alias, entry in connections.settings.items()
    }


@pytest.fixture(scope="module")
def celery_worker(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[Path]:
    """A Celery worker process (``--pool=solo``) on a filesystem broker in a
    temporary folder, with this session's databases; the test process
    publishes to the same folder."""
    folder = tmp_path_factory.mktemp("celery")
    celery_app.configure(folder)
    log = folder / "worker.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.postgres.worker_settings",
        "MULTIDB_TEST_CELERY_DIR": str(folder),
        "MULTIDB_TEST_DATABASES": json.dumps(_databases(), default=str),
        "MULTIDB_TEST_PG_PORTS": ",".join(map(str, settings.PG_PORTS)),
        "PYTHONPATH": str(ROOT),
    }
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "tests.postgres.celery_app",
                "worker", "--pool=solo", "--loglevel=INFO", "--without-heartbeat",
                "--without-mingle", "--without-gossip",
            ],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE
        while b" ready." not in log.read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Celery worker did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield folder
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def reports(path: Path, done: Any) -> list[dict[str, Any]]:
    """The task's reports in ``path``, once ``done(reports)`` holds."""
    deadline = time.monotonic() + DEADLINE
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        found = [json.loads(line) for line in lines]
        if found and done(found):
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"the task reported {found} in {DEADLINE} s")
        time.sleep(0.05)


def pause_replicas(faults: SiteCluster) -> None:
    for alias in settings.REPLICA_DATABASES:
        faults.pause(alias)


def resume_replicas(faults: SiteCluster) -> None:
    for alias in settings.REPLICA_DATABASES:
        faults.resume(alias)


def assert_read_on(line: dict[str, Any], alias_set: set[str]) -> None:
    assert line["found"], line
    assert line["db"] in alias_set, line
    assert line["port"] == settings.PG_NODE_PORTS[line["db"]], line


@pytest.mark.parametrize("view", ["create-and-enqueue", "async-create-and-enqueue"])
def test_a_task_queued_after_a_write_reads_it_from_the_primary_until_a_replica_has_it(
    client, faults, celery_worker, tmp_path, view
):
    """Replicas paused: the task's read goes to the primary (never stale);
    it retries, keeping its token, and once a replica has replayed the
    write its read goes there."""
    pause_replicas(faults)
    report = tmp_path / "report.jsonl"
    response = client.post(
        f"/celery/{view}/", {"name": "x", "report": str(report), "until_replica": "1"}
    )
    assert response.status_code == 200
    first = reports(report, lambda found: True)[0]
    assert_read_on(first, {"default"})
    token = first["token"]
    assert isinstance(pin_for(token), int)  # a position, not a time pin
    resume_replicas(faults)

    lines = reports(report, lambda found: found[-1]["db"] != "default")
    for line in lines:
        assert_read_on(line, {"default", *settings.REPLICA_DATABASES})
        assert line["token"] == token
    assert_read_on(lines[-1], set(settings.REPLICA_DATABASES))
    assert lines[-1]["retries"] >= 1


def test_a_task_queued_on_the_event_loop_after_a_write_reads_the_primary(
    client, faults, celery_worker, tmp_path
):
    """No position query on the loop's thread: the task carries a time pin."""
    pause_replicas(faults)
    report = tmp_path / "report.jsonl"
    response = client.post(
        "/celery/async-create-and-enqueue/?on_loop=1",
        {"name": "x", "report": str(report)},
    )
    assert response.status_code == 200
    [line] = reports(report, lambda found: True)
    assert_read_on(line, {"default"})
    assert line["token"] is not None
    assert pin_for(line["token"]) is not None and not isinstance(
        pin_for(line["token"]), int
    )


def test_a_task_queued_by_a_request_that_wrote_nothing_carries_no_token(
    client, pg_cluster, celery_worker, tmp_path
):
    Item.objects.create(name="x")
    pg_cluster.wait_caught_up()
    report = tmp_path / "report.jsonl"
    response = client.get(
        "/celery/create-and-enqueue/",
        {"name": "x", "report": str(report), "read_only": "1"},
    )
    assert response.status_code == 200
    [line] = reports(report, lambda found: True)
    assert line["token"] is None
    assert_read_on(line, set(settings.REPLICA_DATABASES))
