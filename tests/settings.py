"""Settings for the routing unit tests: SQLite, one primary and two replicas.

The replicas are test mirrors of ``default``; the real-replication tests use
PostgreSQL instead.
"""

from typing import Any

import django

SECRET_KEY = "multidb-tests"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

_SQLITE: dict[str, Any] = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
DATABASES: dict[str, dict[str, Any]] = {
    "default": dict(_SQLITE),
    "replica1": {**_SQLITE, "TEST": {"MIRROR": "default"}},
    "replica2": {**_SQLITE, "TEST": {"MIRROR": "default"}},
    # A second primary and its replicas, for the replica-group unit tests
    # (MULTIDB_REPLICA_GROUPS is set only where a test sets it).
    "billing": dict(_SQLITE),
    "billing_r1": {**_SQLITE, "TEST": {"MIRROR": "billing"}},
    "billing_r2": {**_SQLITE, "TEST": {"MIRROR": "billing"}},
}
REPLICA_DATABASES = ["replica1", "replica2"]
DATABASE_ROUTERS = ["tests.app.routers.RecordingPinningRouter"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "multidb",
    "tests.app",
]
MIDDLEWARE = [
    "multidb.middleware.PinningRouterMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.urls"
ALLOWED_HOSTS = ["*"]
MULTIDB_HEALTH_CHECK_INTERVAL = None  # the unit tests probe explicitly

# Django's tasks framework (multidb.contrib.tasks; the django-tasks backport
# before Django 6.0): tasks are stored, not run; a test runs them the way a
# worker does (tests/postgres/test_django_tasks.py).
TASKS = {
    "default": {
        "BACKEND": ("django.tasks" if django.VERSION >= (6, 0) else "django_tasks")
        + ".backends.dummy.DummyBackend"
    }
}
