"""The Celery app of the task tests (test_celery.py): kombu's filesystem
transport, so a real worker process needs no broker server.

The test process calls ``configure(folder)``; a worker started by the
``celery_worker`` fixture finds the folder in ``MULTIDB_TEST_CELERY_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

import multidb.contrib.celery

app = Celery("multidb_tests", include=["tests.postgres.tasks"])
multidb.contrib.celery.install()


def configure(folder: Path) -> None:
    queue, processed = folder / "queue", folder / "processed"
    queue.mkdir(parents=True, exist_ok=True)
    processed.mkdir(parents=True, exist_ok=True)
    app.conf.update(
        broker_url="filesystem://",
        broker_transport_options={
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(processed),
            "control_folder": str(folder / "control"),
            "polling_interval": 0.05,
        },
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=1,
    )


if "MULTIDB_TEST_CELERY_DIR" in os.environ:
    configure(Path(os.environ["MULTIDB_TEST_CELERY_DIR"]))
