"""``settings_readme``, with a health prober asked for, probing every 10 ms."""

from tests.seed_suite.settings_readme import *  # noqa: F403

MULTIDB_HEALTH_CHECK_INTERVAL = 0.01
