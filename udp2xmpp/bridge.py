"""The bridge: UDP source -> decode -> route -> XMPP sink, and its counters.

Intake never waits on XMPP: a datagram is decoded, routed and queued in the
same callback, so the kernel buffer is emptied as fast as datagrams arrive.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from xmlrc_emitter.wire import Rejection, decode_datagram

from .config import BridgeConfig
from .route import Router, RoutingError
from .sink.xmpp import XmppSink
from .source.udp import UdpSource

log = logging.getLogger(__name__)


@dataclass
class BridgeStats:
    received: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


class RateLimitedLog:
    """At most `burst` warnings per `period` seconds; the rest are counted, then summarised."""

    def __init__(self, logger: logging.Logger, burst: int = 10, period: float = 60.0) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self._window_start = 0.0
        self._count = 0
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.period:
            if self._suppressed:
                self.logger.warning("%d more similar warnings suppressed", self._suppressed)
            self._window_start, self._count, self._suppressed = now, 0, 0
        self._count += 1
        if self._count <= self.burst:
            self.logger.warning(message, *args)
        else:
            self._suppressed += 1


class Bridge:
    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.stats = BridgeStats()
        self.router = Router(config.rooms.service, config.rooms.room, config.rooms.description)
        self.sink = XmppSink(config.xmpp, config.rooms, queue_size=config.delivery.queue_size)
        self.sources = [
            UdpSource(host, port, self.on_datagram, receive_buffer=config.udp.receive_buffer)
            for host, port in config.udp.listen
        ]
        self.addresses: list[tuple[str, int]] = []
        self._bad_input_log = RateLimitedLog(log)
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        await self.sink.start()
        for wiki in self.config.rooms.wikis:
            self.sink.open_room(self.router.wiki_room(wiki))
        for source in self.sources:
            self.addresses.append(await source.start())

    def on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.stats.received += 1
        result = decode_datagram(data, max_bytes=self.config.udp.max_datagram)
        if isinstance(result, Rejection):
            self.stats.rejected[result.reason.value] += 1
            self._bad_input_log.warning("dropped a datagram from %s: %s", addr[0], result)
            return
        try:
            rooms = self.router.rooms_for(result)
        except RoutingError as exc:
            self.stats.rejected["bad_room"] += 1
            self._bad_input_log.warning("dropped a datagram from %s: %s", addr[0], exc)
            return
        self.stats.accepted += 1
        for room in rooms:
            self.sink.submit(room, result)

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop intake, deliver what is queued (bounded by `drain_timeout`), disconnect."""
        for source in self.sources:
            source.close()
        for source in self.sources:
            await source.wait_closed()
        if self.sink.pending and not await self.sink.drain(drain_timeout):
            log.warning("stopping with %d changes undelivered", self.sink.pending)
        await self.sink.stop()
        self._stopped.set()
