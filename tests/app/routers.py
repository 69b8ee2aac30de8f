"""Routers that record each routing decision, so tests can see what the
router answered in whichever thread Django asked it."""

from __future__ import annotations

import threading
from typing import Any

from multidb import PinningReplicaRouter, ReplicaRouter

#: (kind, alias, thread id) for every decision, in order.
decisions: list[tuple[str, str, int]] = []


class _Recording:
    def db_for_read(self, model: Any, **hints: Any) -> str:
        alias = super().db_for_read(model, **hints)  # type: ignore[misc]
        decisions.append(("read", alias, threading.get_ident()))
        return alias

    def db_for_write(self, model: Any, **hints: Any) -> str:
        alias = super().db_for_write(model, **hints)  # type: ignore[misc]
        decisions.append(("write", alias, threading.get_ident()))
        return alias


class RecordingPinningRouter(_Recording, PinningReplicaRouter):
    pass


class RecordingReplicaRouter(_Recording, ReplicaRouter):
    pass
