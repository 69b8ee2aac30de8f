"""Signals sent when a replica changes state.

Each is sent with ``sender=None`` and the keyword arguments ``alias`` (the
replica's alias) and ``reason`` (a short text for logs and alerts).
"""

from django.dispatch import Signal

#: A replica became unreachable or was promoted; it left the rotation.
replica_down = Signal()
#: A replica is usable again; it is back in the rotation.
replica_up = Signal()
#: A replica fell behind by more than the lag limits; it left the rotation.
replica_lagging = Signal()
