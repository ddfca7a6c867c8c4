"""xmlrc_emitter: build and send recent-change datagrams.

It also holds the wire format (`xmlrc_emitter.wire`) that every package of
xmlrc uses: the event model and its codecs, pure code without I/O.
"""

from .emitter import AsyncEmitter, Emitter
from .wire import DatagramFormat, RecentChange

__all__ = ["AsyncEmitter", "DatagramFormat", "Emitter", "RecentChange"]
