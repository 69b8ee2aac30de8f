"""Signals: a replica changed state, a probe round ended, and a request was
routed.

``replica_down``, ``replica_up`` and ``replica_lagging`` are sent with
``sender=None`` and the keyword arguments ``alias`` (the replica's alias) and
``reason`` (a short text for logs and alerts).

``request_routed`` is sent by ``PinningRouterMiddleware`` (the sender) once
at the end of each request, only while it has receivers, with the keyword
arguments ``outcome`` (why its reads went where they went; see
``multidb.explain``), ``read_alias`` (where ``default``'s group's reads
went; empty if the request read nothing and had no replica chosen yet),
``token_check`` (None, ``"cached"``, ``"queried"`` or ``"behind"``),
``position_queries`` (the primary-position queries run for its cookie) and
``group`` (the primary whose group the outcome describes: ``"default"``).
"""

from django.dispatch import Signal

#: A replica became unreachable or was promoted; it left the rotation.
replica_down = Signal()
#: A replica is usable again; it is back in the rotation.
replica_up = Signal()
#: A replica fell behind by more than the lag limits; it left the rotation.
replica_lagging = Signal()

#: A probe round ended (the prober's, or one run by ``probe_now()``, the
#: health view or ``multidb_status``).  Sent with ``sender=None`` and
#: ``statuses`` (the ``DatabaseStatus`` of every database, primaries first),
#: ``started`` and ``finished`` (aware UTC datetimes), only while it has
#: receivers.
probe_finished = Signal()

#: A request ended; where its reads went, and why.
request_routed = Signal()
