"""Run without --multidb-cluster: the plugin changes nothing."""

import sys

from django.conf import settings


def test_the_sites_settings_are_untouched_and_no_cluster_code_is_loaded():
    assert settings.DATABASES["default"]["HOST"] == "primary.db.invalid"
    assert "multidb.testing.cluster" not in sys.modules
