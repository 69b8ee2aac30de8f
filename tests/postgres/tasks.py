"""Celery tasks that report where their reads went (test_celery.py)."""

from __future__ import annotations

import json
from typing import Any

from multidb.contrib.celery import HEADER
from tests.app.models import Item
from tests.postgres.celery_app import app


@app.task(bind=True, max_retries=600)
def read_item(self: Any, name: str, report: str, until_replica: bool = False) -> None:
    """Read item ``name``; append where the read went to the file ``report``.

    With ``until_replica``, retry every 0.1 s while the read went to the
    primary.
    """
    from tests.postgres.views import server_port

    items = Item.objects.filter(name=name)
    found = items.exists()
    alias = items.db
    line = {
        "found": found,
        "db": alias,
        "port": server_port(alias),
        "token": getattr(self.request, HEADER, None),
        "retries": self.request.retries,
    }
    with open(report, "a") as file:
        file.write(json.dumps(line) + "\n")
    if until_replica and alias == "default":
        raise self.retry(countdown=0.1)
