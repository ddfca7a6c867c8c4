"""`Emitter`: send recent changes to a bridge as UDP datagrams.

    emitter = Emitter("127.0.0.1", 9390)
    emitter.send(change)                  # blocking, for any script
    await AsyncEmitter("127.0.0.1", 9390).send(change)   # from asyncio code
    Emitter("127.0.0.1", 9390, secret="...")  # signed (HMAC-SHA256, see wire.signing)

A datagram is fire-and-forget, as MediaWiki's own feed is: the bridge
answers nothing. One change per datagram; a change whose datagram would be
larger than UDP allows raises ``ValueError`` rather than being cut.
"""

from __future__ import annotations

import socket
import time
from types import TracebackType

import asyncio_dgram

from xmlrc.wire import MAX_DATAGRAM, DatagramFormat, RecentChange, encode_datagram
from xmlrc.wire.signing import secret_bytes, sign


def _check_size(data: bytes) -> bytes:
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"datagram of {len(data)} bytes is larger than UDP allows")
    return data


def _encode(
    change: RecentChange, fmt: DatagramFormat, prefix: str | None, key: bytes | None
) -> bytes:
    data = encode_datagram(change, fmt, prefix=prefix)
    if key is not None:
        data = sign(data, key, time.time())
    return _check_size(data)


class Emitter:
    """Blocking sender: one UDP socket, one datagram per change."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        fmt: DatagramFormat | str = DatagramFormat.XMLRC,
        prefix: str | None = None,
        secret: str | bytes | None = None,
    ) -> None:
        self.address = (host, port)
        self.fmt = DatagramFormat(fmt)
        self.prefix = prefix
        #: With a secret, every change is sent signed (the bridge's udp.secret).
        self._key = None if secret is None else secret_bytes(secret)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_DGRAM)

    def encode(self, change: RecentChange) -> bytes:
        """The datagram for `change` (signed now, when there is a secret)."""
        return _encode(change, self.fmt, self.prefix, self._key)

    def send(self, change: RecentChange) -> int:
        """Send one change; returns the datagram's size in bytes."""
        return self.send_raw(self.encode(change))

    def send_raw(self, data: bytes) -> int:
        """Send `data` as it is (never signed)."""
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
        secret: str | bytes | None = None,
    ) -> None:
        self.address = (host, port)
        self.fmt = DatagramFormat(fmt)
        self.prefix = prefix
        #: With a secret, every change is sent signed (the bridge's udp.secret).
        self._key = None if secret is None else secret_bytes(secret)
        self._stream: asyncio_dgram.aio.DatagramServer | None = None

    async def send(self, change: RecentChange) -> int:
        data = _encode(change, self.fmt, self.prefix, self._key)
        await self.send_raw(data)
        return len(data)

    async def send_raw(self, data: bytes) -> None:
        """Send `data` as it is (never signed)."""
        if self._stream is None:
            # An unconnected socket: a connected one turns an ICMP "port unreachable"
            # (no bridge listening yet) into an error on the next send, and loses it.
            local = ("::", 0) if ":" in self.address[0] else ("0.0.0.0", 0)  # noqa: S104
            self._stream = await asyncio_dgram.bind(local)
        await self._stream.send(_check_size(data), self.address)

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
