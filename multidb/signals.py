"""Signals sent when a replica changes state, when a probe round ends, and
when a request has been routed.

``replica_down``, ``replica_up`` and ``replica_lagging`` are sent with
``sender=None`` and the keyword arguments ``alias`` (the replica's alias) and
``reason`` (a short text for logs and alerts).
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
#: ``started`` and ``finished`` (aware UTC datetimes).
probe_finished = Signal()

#: A request's reads were routed: sent by ``PinningRouterMiddleware`` once at
#: the end of each request, only when the signal has receivers.
request_routed = Signal()
