"""Span attributes for each request, and a span for each probe round."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from opentelemetry import trace

from ... import __version__, signals
from ...health import DatabaseStatus

__all__ = ["install", "uninstall"]

_UID = "multidb.contrib.opentelemetry"
#: Each status field that becomes a probe span attribute, when not None.
_FIELDS = ("role", "state", "lag_seconds", "lag_bytes", "replay_position", "reason")

#: The tracer provider spans go to; None: the global one.
_provider: trace.TracerProvider | None = None


def annotate_request(
    sender: Any,
    outcome: str,
    read_alias: str,
    token_check: str | None = None,
    **kwargs: Any,
) -> None:
    """``request_routed``: tell the request's span where its reads went."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute("multidb.outcome", outcome)
    if read_alias:  # empty: the request read nothing, no replica was chosen
        span.set_attribute("multidb.read_alias", read_alias)
    if token_check is not None:
        span.set_attribute("multidb.token_check", token_check)


def trace_probe(
    sender: Any,
    statuses: list[DatabaseStatus],
    started: datetime,
    finished: datetime,
    **kwargs: Any,
) -> None:
    """``probe_finished``: the round as a ``multidb.probe`` span."""
    tracer = trace.get_tracer("multidb", __version__, tracer_provider=_provider)
    attributes: dict[str, Any] = {}
    for status in statuses:
        prefix = f"multidb.db.{status.alias}."
        for field in _FIELDS:
            value = getattr(status, field)
            if value is not None and value != "":
                attributes[prefix + field] = value
    span = tracer.start_span(
        "multidb.probe", start_time=_nanoseconds(started), attributes=attributes
    )
    span.end(end_time=_nanoseconds(finished))


def _nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def install(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Connect the receivers; probe spans go to ``tracer_provider`` (by
    default, the global one)."""
    global _provider
    _provider = tracer_provider
    signals.request_routed.connect(annotate_request, dispatch_uid=_UID, weak=False)
    signals.probe_finished.connect(trace_probe, dispatch_uid=_UID, weak=False)


def uninstall() -> None:
    """Undo ``install()``."""
    global _provider
    _provider = None
    signals.request_routed.disconnect(dispatch_uid=_UID)
    signals.probe_finished.disconnect(dispatch_uid=_UID)
