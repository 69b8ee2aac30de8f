"""``multidb.contrib``: optional integrations cost nothing unless enabled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from multidb.contrib import tasks
from tests.app import jobs
from tests.app.jobs import read_item

ROOT = Path(__file__).resolve().parents[1]

SERVE_A_REQUEST = """
import sys
import django
django.setup()
import multidb
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
Client().get("/")
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in {"celery", "kombu", "django_tasks"}
    or name.startswith("multidb.contrib")
)
print(loaded)
"""


def test_importing_multidb_and_serving_a_request_imports_no_integration():
    result = subprocess.run(
        [sys.executable, "-c", SERVE_A_REQUEST],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_task_made_here_is_a_carrying_task_with_djangos_options():
    made = tasks.task(priority=3)(jobs.where)
    assert isinstance(made, tasks.CarryingTask)
    assert made.priority == 3
    assert isinstance(made.using(priority=1), tasks.CarryingTask)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_task_enqueued_with_nothing_to_carry_stores_its_arguments_unchanged():
    # SQLite has no positions: outside a request there is no token.
    result = read_item.enqueue("x")
    assert result.kwargs == {}
    assert result.args == ["x"]
