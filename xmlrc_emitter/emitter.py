"""`Emitter`: send recent changes to a bridge as UDP datagrams.

    emitter = Emitter("127.0.0.1", 9390)
    emitter.send(change)                  # blocking, for any script
    await AsyncEmitter("127.0.0.1", 9390).send(change)   # from asyncio code

A datagram is fire-and-forget, as MediaWiki's own feed is: the bridge
answers nothing. One change per datagram; a change whose datagram would be
larger than UDP allows raises ``ValueError`` rather than being cut.
"""

from __future__ import annotations

import socket
from types import TracebackType

import asyncio_dgram

from .wire import MAX_DATAGRAM, DatagramFormat, RecentChange, encode_datagram


def _check_size(data: bytes) -> bytes:
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"datagram of {len(data)} bytes is larger than UDP allows")
    return data


class Emitter:
    """Blocking sender: one UDP socket, one datagram per change."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        fmt: DatagramFormat | str = DatagramFormat.XMLRC,
        prefix: str | None = None,
    ) -> None:
        self.address = (host, port)
        self.fmt = DatagramFormat(fmt)
        self.prefix = prefix
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_DGRAM)

    def encode(self, change: RecentChange) -> bytes:
        return _check_size(encode_datagram(change, self.fmt, prefix=self.prefix))

    def send(self, change: RecentChange) -> int:
        """Send one change; returns the datagram's size in bytes."""
        return self.send_raw(self.encode(change))

    def send_raw(self, data: bytes) -> int:
        return self._socket.sendto(_check_size(data), self.address)

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncEmitter:
    """The same for asyncio code (asyncio-dgram); connect lazily on first send."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        fmt: DatagramFormat | str = DatagramFormat.XMLRC,
        prefix: str | None = None,
    ) -> None:
        self.address = (host, port)
        self.fmt = DatagramFormat(fmt)
        self.prefix = prefix
        self._stream: asyncio_dgram.aio.DatagramClient | None = None

    async def send(self, change: RecentChange) -> int:
        data = _check_size(encode_datagram(change, self.fmt, prefix=self.prefix))
        await self.send_raw(data)
        return len(data)

    async def send_raw(self, data: bytes) -> None:
        if self._stream is None:
            self._stream = await asyncio_dgram.connect(self.address)
        await self._stream.send(_check_size(data))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    async def __aenter__(self) -> AsyncEmitter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
