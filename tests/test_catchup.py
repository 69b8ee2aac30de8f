"""Catch-up waits and monotonic reads where the database has no positions
(SQLite), and the catch-up watchers across ``fork``.  Their behaviour against
real replicas is tested in tests/postgres/test_waits.py."""

from __future__ import annotations

import pytest
from django.test import AsyncClient, Client, override_settings

from multidb import catchup
from multidb.middleware import pinning_cookie


class _Connection:
    def __init__(self) -> None:
        self.abandoned = False

    def abandon(self) -> None:
        self.abandoned = True


def test_after_fork_a_child_abandons_its_watchers_connections_and_starts_over(
    monkeypatch,
):
    connected, unconnected = catchup._Watcher("replica1"), catchup._Watcher("r2")
    connected.connection = _Connection()  # type: ignore[assignment]
    monkeypatch.setattr(
        catchup, "_watchers", {"replica1": connected, "r2": unconnected}
    )
    monkeypatch.setattr(catchup, "_changed", catchup._changed)
    monkeypatch.setattr(catchup, "_inherited", [])

    catchup._after_fork_in_child()

    assert catchup._watchers == {}
    assert connected.connection.abandoned  # type: ignore[union-attr]
    assert catchup._inherited == [connected.connection]


@pytest.mark.django_db(databases="__all__")
@override_settings(MULTIDB_MONOTONIC_READS=True)
def test_without_positions_monotonic_reads_set_no_cookie():
    response = Client().get("/read/")

    assert pinning_cookie() not in response.cookies


@pytest.mark.django_db(databases="__all__")
@pytest.mark.asyncio
@override_settings(MULTIDB_MONOTONIC_READS=True)
async def test_without_positions_monotonic_reads_set_no_cookie_under_asgi():
    response = await AsyncClient().get("/read/")

    assert pinning_cookie() not in response.cookies
