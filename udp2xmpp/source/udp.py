"""UDP source: receive datagrams on one address and hand them over, never blocking.

The kernel receive buffer is raised to the configured size so a burst waits
in the kernel while the bridge works, instead of being dropped there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import asyncio_dgram

log = logging.getLogger(__name__)

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux

#: Datagrams read straight from the socket per wake-up of the receive task.
_BURST = 256

DatagramHandler = Callable[[bytes, tuple[str, int]], None]


class UdpSource:
    """Receives datagrams on one UDP address and hands each to the handler; owns its socket."""

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
        self._last_reader: socket.socket | None = None
        self._handed_over = 0

    async def start(self) -> tuple[str, int]:
        """Bind and start receiving; returns the address really bound (port 0 picks one)."""
        # SO_REUSEPORT lets a new bridge bind before the old one stops, so a
        # restart loses nothing (Linux only shares a port within one user).
        self._stream = await asyncio_dgram.bind(
            (self.host, self.port), reuse_port=self.reuse_port or None
        )
        sock: Any = self._stream.socket
        try:  # as root (or with CAP_NET_ADMIN) the size is not capped by net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.receive_buffer)
        except OSError:
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
        # asyncio reads one datagram per turn of the event loop, so a burst waits
        # in the kernel behind everything else the loop does. After each wake-up,
        # read what else is there straight from the socket (bounded, so the XMPP
        # side still gets its turn).
        burst = socket.socket(fileno=os.dup(self._stream.socket.fileno()))
        burst.setblocking(False)
        try:
            while True:
                data, addr = await recv()
                for more in range(_BURST, 0, -1):
                    try:
                        handler(data, addr)  # type: ignore[arg-type]  # (host, port) for UDP
                    except Exception:  # one datagram must never stop the intake
                        log.exception("datagram handler failed")
                    if more == 1:
                        break  # read no further than we will handle
                    try:
                        data, addr = burst.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
        finally:
            burst.close()

    @property
    def listening(self) -> bool:
        """Whether datagrams are being received (bound, and the receive task alive)."""
        return self._task is not None and not self._task.done()

    def close(self) -> None:
        """Stop receiving, but hand over every datagram that reached this socket.

        With SO_REUSEPORT a new bridge takes the port over; what the kernel had
        queued for this socket would die with it. So: what asyncio-dgram has
        buffered, then what the kernel holds, read through a duplicate of the
        socket. The duplicate keeps the socket open after asyncio closes its own
        descriptor; `wait_closed` reads it once more and closes it, leaving a
        window of microseconds instead of a loop iteration.
        """
        if self._task is not None:
            self._task.cancel()
        if self._stream is None:
            return
        queue: asyncio.Queue[tuple[bytes, Any]] = self._stream._recvq  # type: ignore[attr-defined]  # no public way
        while not queue.empty():
            data, addr = queue.get_nowait()
            if data is not None:  # None: asyncio-dgram's end-of-stream marker
                self._handed_over += self._hand_over(data, addr)
        self._last_reader = socket.socket(fileno=os.dup(self._stream.socket.fileno()))
        self._last_reader.setblocking(False)
        self._drain_last_reader()
        self._stream.close()
        self._stream = None

    def _drain_last_reader(self) -> None:
        assert self._last_reader is not None
        for _ in range(1_000_000):  # bounded: the kernel buffer is finite anyway
            try:
                data, addr = self._last_reader.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            self._handed_over += self._hand_over(data, addr)

    def _hand_over(self, data: bytes, addr: Any) -> int:
        try:
            self.handler(data, addr)
        except Exception:  # as in the receive loop: one datagram never stops the rest
            log.exception("datagram handler failed")
        return 1

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._last_reader is not None:
            await asyncio.sleep(0)  # asyncio closes its descriptor; ours keeps the socket
            self._drain_last_reader()
            self._last_reader.close()  # the last descriptor: the socket leaves the port now
            self._last_reader = None
            if self._handed_over:
                log.info("handed over %d datagrams received while closing", self._handed_over)
