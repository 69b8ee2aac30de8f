from __future__ import annotations

from collections.abc import Iterator

import pytest

from multidb import pinning, replicas
from tests.app import routers


@pytest.fixture(autouse=True)
def _fresh_routing_state() -> Iterator[None]:
    """Each test starts unpinned, with a fresh rotation, and no recorded decisions."""
    token = pinning._scope.set(pinning._ROOT)
    replicas._invalidate()
    routers.decisions.clear()
    yield
    pinning._scope.reset(token)
    replicas._invalidate()


@pytest.fixture
def decisions() -> list[tuple[str, str, int]]:
    """The router's decisions, as ``(kind, alias, thread id)``, in order."""
    return routers.decisions
