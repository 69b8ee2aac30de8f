"""The router of the consistency benchmark's row o0: ours, pinning a
request whenever Django routes a query through ``db_for_write``, as the
package did before it pinned on writes that happen.  Row o, the same
workload with ``multidb.PinningReplicaRouter``, shows what that change
gains."""

from __future__ import annotations

from typing import Any

from multidb import PinningReplicaRouter, pinning


class PinOnWriteRouting(PinningReplicaRouter):
    def db_for_write(self, model: Any, **hints: Any) -> str:
        pinning.note_write(pinning.current_request())
        return super().db_for_write(model, **hints)
