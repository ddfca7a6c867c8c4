"""xmlrc_emitter: build and send recent-change datagrams (`Emitter`, `AsyncEmitter`,
``xmlrc-emit``). The wire format itself lives in the core package, `xmlrc.wire`."""

from xmlrc.wire import DatagramFormat, RecentChange

from .emitter import AsyncEmitter, Emitter

__all__ = ["AsyncEmitter", "DatagramFormat", "Emitter", "RecentChange"]
