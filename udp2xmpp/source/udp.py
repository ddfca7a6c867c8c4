"""UDP source: receive datagrams on one address and hand them over, never blocking.

The kernel receive buffer is raised to the configured size so a burst waits
in the kernel while the bridge works, instead of being dropped there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

import asyncio_dgram

log = logging.getLogger(__name__)

DatagramHandler = Callable[[bytes, tuple[str, int]], None]


class UdpSource:
    def __init__(
        self,
        host: str,
        port: int,
        handler: DatagramHandler,
        *,
        receive_buffer: int,
        reuse_port: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.receive_buffer = receive_buffer
        self.reuse_port = reuse_port
        self._stream: asyncio_dgram.aio.DatagramServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> tuple[str, int]:
        """Bind and start receiving; returns the address really bound (port 0 picks one)."""
        # SO_REUSEPORT lets a new bridge bind before the old one stops, so a
        # restart loses nothing (Linux only shares a port within one user).
        self._stream = await asyncio_dgram.bind(
            (self.host, self.port), reuse_port=self.reuse_port or None
        )
        sock: Any = self._stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if granted < self.receive_buffer:
            log.warning(
                "UDP receive buffer is %d bytes, asked for %d: raise net.core.rmem_max",
                granted,
                self.receive_buffer,
            )
        bound = sock.getsockname()
        self.host, self.port = bound[0], bound[1]
        self._task = asyncio.get_running_loop().create_task(
            self._receive(), name=f"udp {self.host}:{self.port}"
        )
        log.info("listening for datagrams on %s port %d", self.host, self.port)
        return self.host, self.port

    async def _receive(self) -> None:
        assert self._stream is not None
        recv = self._stream.recv
        handler = self.handler
        while True:
            data, addr = await recv()
            try:
                handler(data, addr)  # type: ignore[arg-type]  # always (host, port) for UDP
            except Exception:  # one datagram must never stop the intake
                log.exception("datagram handler failed")

    @property
    def listening(self) -> bool:
        """Whether datagrams are being received (bound, and the receive task alive)."""
        return self._task is not None and not self._task.done()

    def close(self) -> None:
        """Stop receiving (what the kernel still holds is not read)."""
        if self._task is not None:
            self._task.cancel()
        if self._stream is not None:
            self._stream.close()

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
