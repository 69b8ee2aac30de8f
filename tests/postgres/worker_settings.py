"""Settings of a Celery worker that the task tests start (test_celery.py):
tests.postgres.settings, with the test session's ``DATABASES`` (its test
database, and PgBouncer's ports under ``route_via``) from
``MULTIDB_TEST_DATABASES``."""

import json
import os

from tests.postgres.settings import *  # noqa: F403

DATABASES = json.loads(os.environ["MULTIDB_TEST_DATABASES"])
