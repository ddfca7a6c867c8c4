"""The bridge: UDP source -> decode -> route -> XMPP sink, and its counters.

Intake never waits on XMPP: a datagram is decoded, routed and queued in the
same callback, so the kernel buffer is emptied as fast as datagrams arrive.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field, fields, replace

from xmlrc.wire import Rejection, decode_datagram

from .config import BridgeConfig
from .httpd import OpsServer
from .metrics import PublishMetrics, make_registry
from .pubsub import PubSubPublisher
from .route import Router, RoutingError, UnknownWikiError
from .sink.xmpp import XmppSink
from .source.edge import IN_PENALTY_BOX, EdgeGuard
from .source.udp import UdpSource
from .subscribe import SubscriptionService
from .throttled_log import RateLimitedLog

log = logging.getLogger(__name__)


@dataclass
class BridgeStats:
    received: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


class Bridge:
    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.stats = BridgeStats()
        #: Allowlist, per-source rate limit and signatures, before anything is decoded.
        self.edge = EdgeGuard.from_settings(config.udp)
        self.publish_metrics = PublishMetrics()
        self.router = Router.from_settings(config.rooms)
        self.sink = XmppSink(
            config.xmpp,
            config.rooms,
            queue_size=config.delivery.queue_size,
            max_stanzas_per_second=config.delivery.max_stanzas_per_second,
            max_bytes_per_second=config.delivery.max_bytes_per_second,
            max_unconfirmed=config.delivery.max_unconfirmed,
            changes_per_stanza=config.delivery.changes_per_stanza,
            on_published=self.publish_metrics.on_published,
        )
        #: Personal watch lists ([subscriptions]) and PubSub nodes ([pubsub]); None when off.
        self.subscriptions = (
            SubscriptionService(
                config.subscriptions, self.sink, lambda: self.router, lambda: self.config.rooms
            )
            if config.subscriptions.enabled
            else None
        )
        self.pubsub = (
            PubSubPublisher(config.pubsub, self.sink, lambda wiki: self.router.wiki_room(wiki))
            if config.pubsub.enabled
            else None
        )
        self.sources = [
            UdpSource(
                host,
                port,
                self.on_datagram,
                receive_buffer=config.udp.receive_buffer,
                reuse_port=config.udp.reuse_port,
            )
            for host, port in config.udp.listen
        ]
        self.addresses: list[tuple[str, int]] = []
        #: This bridge's own Prometheus registry, and /metrics + /healthz when [http] is set.
        self.metrics = make_registry(self)
        self.http = (
            OpsServer(self, self.metrics, *config.http.listen) if config.http.listen else None
        )
        self.http_address: tuple[str, int] | None = None
        self._bad_input_log = RateLimitedLog(log)
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        if self.subscriptions is not None:
            self.subscriptions.open()  # the database lock first: one bridge per database
        await self.sink.start()
        if self.subscriptions is not None:
            await self.subscriptions.start()
        if self.pubsub is not None:
            await self.pubsub.start((*self.config.rooms.wikis, *self.config.rooms.routing.wikis))
        for room in self.router.static_rooms:
            self.sink.open_room(room)
        for source in self.sources:
            self.addresses.append(await source.start())
        if self.http is not None:
            self.http_address = await self.http.start()

    def on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.stats.received += 1
        payload = self.edge.admit(data, addr[0])
        if isinstance(payload, Rejection):
            self.stats.rejected[payload.reason.value] += 1
            if payload is not IN_PENALTY_BOX:  # one line when a source enters the box is enough
                self._bad_input_log.warning("dropped a datagram from %s: %s", addr[0], payload)
            return
        result = decode_datagram(payload, max_bytes=self.config.udp.max_datagram)
        if isinstance(result, Rejection):
            self.stats.rejected[result.reason.value] += 1
            self._bad_input_log.warning("dropped a datagram from %s: %s", addr[0], result)
            return
        try:
            change, rooms = self.router.route(result)
        except RoutingError as exc:  # UnknownWikiError too: reason "unknown_wiki"
            self.stats.rejected[exc.reason] += 1
            if not isinstance(exc, UnknownWikiError):  # dropping those is what was asked
                self._bad_input_log.warning("dropped a datagram from %s: %s", addr[0], exc)
            return
        self.stats.accepted += 1
        for room in rooms:
            self.sink.submit(room, change)
        if self.subscriptions is not None:
            self.subscriptions.on_change(change)
        if self.pubsub is not None:
            self.pubsub.on_change(change)

    def reload(self, config: BridgeConfig) -> None:
        """Route by `config` from now on ([rooms] and [wikis.*]); the connection stays up.

        Rooms the new config names are created and joined now; a room only an
        unknown wiki needs, on its first change. Rooms no longer routed to are
        kept (the bridge stays in them). Other sections need a restart.
        """
        router = Router.from_settings(config.rooms)
        ignored = [
            f.name
            for f in fields(config)
            if f.name not in ("rooms", "source")
            and getattr(config, f.name) != getattr(self.config, f.name)
        ]
        if config.rooms.nick != self.config.rooms.nick:
            ignored.append("rooms.nick")
        if ignored:
            log.warning("reload: changes to %s take effect after a restart", ", ".join(ignored))
        self.router = router
        self.config = replace(self.config, rooms=config.rooms, source=config.source)
        if self.pubsub is not None:  # node access follows the rooms' membership
            self.pubsub.reload((*config.rooms.wikis, *config.rooms.routing.wikis))
        for room in router.static_rooms:
            self.sink.open_room(room)
        log.info(
            "reloaded routing from %s: %d rooms in the config, %d filtered, unknown wikis: %s",
            config.source,
            len(router.static_rooms),
            len(router.filtered),
            router.unknown_wikis,
        )

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop intake, deliver what is queued (bounded by `drain_timeout`), disconnect."""
        for source in self.sources:
            source.close()
        for source in self.sources:
            await source.wait_closed()
        if self.sink.pending and not await self.sink.drain(drain_timeout):
            log.warning("stopping with %d changes undelivered", self.sink.pending)
        if self.subscriptions is not None:
            await self.subscriptions.stop(min(drain_timeout, 2.0))
        if self.pubsub is not None:
            await self.pubsub.stop(min(drain_timeout, 2.0))
        await self.sink.stop()
        if self.http is not None:
            await self.http.stop()
        self._stopped.set()
