import pytest
from django.test import override_settings

from multidb.conf import conf


def test_pinning_settings_defaults():
    assert conf.PINNING_COOKIE == "multidb_pin_writes"
    assert conf.PINNING_SECONDS == 15
    assert conf.PINNING_COOKIE_SECURE is False
    assert conf.PINNING_COOKIE_HTTPONLY is False
    assert conf.PINNING_COOKIE_SAMESITE == "Lax"


@pytest.mark.parametrize(
    ("setting", "attribute", "value"),
    [
        ("MULTIDB_PINNING_COOKIE", "PINNING_COOKIE", "override_pin_writes"),
        ("MULTIDB_PINNING_SECONDS", "PINNING_SECONDS", 60),
        ("MULTIDB_PINNING_SECONDS", "PINNING_SECONDS", 0),
        ("MULTIDB_PINNING_COOKIE_SECURE", "PINNING_COOKIE_SECURE", True),
        ("MULTIDB_PINNING_COOKIE_HTTPONLY", "PINNING_COOKIE_HTTPONLY", True),
        ("MULTIDB_PINNING_COOKIE_SAMESITE", "PINNING_COOKIE_SAMESITE", "Strict"),
        ("MULTIDB_PINNING_COOKIE_SAMESITE", "PINNING_COOKIE_SAMESITE", None),
    ],
)
def test_pinning_setting_override_is_read_live(setting, attribute, value):
    with override_settings(**{setting: value}):
        assert getattr(conf, attribute) == value
    assert getattr(conf, attribute) != value


@override_settings(MULTIDB_PINNING_SECONDS="30")
def test_pinning_seconds_given_as_string_is_converted_to_int():
    assert conf.PINNING_SECONDS == 30
    assert isinstance(conf.PINNING_SECONDS, int)


@pytest.mark.parametrize(
    "value", [["replica2"], ("replica1",), {"replica1": 2, "replica2": 1}, []]
)
def test_replica_databases_is_returned_as_configured(value):
    with override_settings(REPLICA_DATABASES=value):
        assert conf.REPLICA_DATABASES is value


def test_replica_databases_defaults_to_the_test_settings():
    assert conf.REPLICA_DATABASES == ["replica1", "replica2"]


def test_replica_databases_is_none_when_unset(settings):
    del settings.REPLICA_DATABASES
    assert conf.REPLICA_DATABASES is None


def test_replica_databases_falls_back_to_slave_databases_with_deprecation_warning(
    settings,
):
    del settings.REPLICA_DATABASES
    settings.SLAVE_DATABASES = ["replica2"]
    with pytest.warns(DeprecationWarning, match="SLAVE_DATABASES setting"):
        assert conf.REPLICA_DATABASES == ["replica2"]


@override_settings(SLAVE_DATABASES=["replica2"])
def test_replica_databases_wins_over_slave_databases_without_warning():
    assert conf.REPLICA_DATABASES == ["replica1", "replica2"]
