"""The bridge: UDP source -> decode -> route -> encode -> room sink, and its counters.

Intake never waits on XMPP: a datagram is checked at the edge, decoded,
routed, encoded once (the room-independent payload, whose size is checked
against the server's stanza limit here) and queued, in the same callback,
so the kernel buffer is emptied as fast as datagrams arrive. The XMPP
stream (`xmlrc.xmpp.Session`) and its one paced writer (`Outbox`) are made
here and shared by the room sink, the PubSub publisher and the watch service.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from typing import Any

from xmlrc.wire import RecentChange, Rejection, decode_datagram
from xmlrc.xmpp import Endpoint, Outbox, Session

from .config import BridgeConfig
from .httpd import OpsServer
from .metrics import PublishMetrics, make_registry
from .pubsub import PubSubPublisher
from .route import Router, RoutingError, UnknownWikiError
from .sink.outgoing import Outgoing
from .sink.rooms import RoomChannel, RoomSink
from .sink.stanza import envelope_size, payload_text
from .sink.xmpp import XmppLink
from .source.edge import IN_PENALTY_BOX, EdgeGuard
from .source.feed import Feed
from .source.udp import UdpSource
from .subscribe import SubscriptionService
from .throttled_log import RateLimitedLog

log = logging.getLogger(__name__)


@dataclass
class BridgeStats:
    """The bridge's intake counters: datagrams read, changes accepted, drops by reason."""

    received: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def make_feeds(config: BridgeConfig) -> list[Feed]:
    """The non-UDP sources the config turns on, in a fixed order."""
    feeds: list[Feed] = []
    if config.eventstreams is not None:
        from .source.eventstreams import EventStreamsFeed  # aiohttp's client: only when used

        feeds.append(EventStreamsFeed(config.eventstreams))
    if config.redis is not None:
        from .source.redis import RedisFeed  # the redis client is loaded only when used

        feeds.append(RedisFeed(config.redis))
    return feeds


class Bridge:
    """One bridge: its sources, edge guard, router, XMPP session and room sink, and the
    optional PubSub publisher, watch service and ops listener; `start` and `stop` them."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.stats = BridgeStats()
        #: Allowlist, per-source rate limit and signatures, before anything is decoded.
        self.edge = EdgeGuard.from_settings(config.udp)
        self.publish_metrics = PublishMetrics()
        self.router = Router.from_settings(config.rooms)
        xmpp, delivery = config.xmpp, config.delivery
        component = xmpp.mode == "component"
        self.session = Session(
            Endpoint(
                xmpp.jid,
                xmpp.password,
                xmpp.host,
                xmpp.port,
                xmpp.ca_file,
                xmpp.verify_tls,
                component=component,
                component_user=xmpp.component_user,
                alternates=xmpp.servers,
            ),
            # A pair's standby reads the room's archive (MAM, RSM) when it takes over.
            plugins=("xep_0030", "xep_0060")
            + (("xep_0059", "xep_0313") if config.pair.enabled else ()),
            stream_management=not component,
            # In a pair the publisher's nick must come free when this bridge dies, not
            # when the server gives up on resuming its stream.
            resumable=not config.pair.enabled,
            keepalive=xmpp.self_ping_interval,
            ping_timeout=xmpp.ping_timeout,
        )
        if not component:
            self.session.client.debounce_acks(0.05)
        self.outbox = Outbox(
            self.session.client, delivery.max_stanzas_per_second, delivery.max_bytes_per_second
        )
        self.sink = RoomSink(
            XmppLink(
                self.session,
                self.outbox,
                config.rooms.nick,
                timeout=xmpp.ping_timeout,
                max_in_flight=delivery.max_iq_in_flight,
                standby_nick=config.pair.standby_nick or None,
                peers=config.pair.peers,
            ),
            queue_size=delivery.queue_size,
            max_queued_bytes=delivery.max_queued_bytes,
            max_unconfirmed=delivery.max_unconfirmed,
            changes_per_stanza=delivery.changes_per_stanza,
            max_stanza_bytes=delivery.max_stanza_bytes,
            self_ping_interval=xmpp.self_ping_interval,
            dead_letter_file=delivery.dead_letter_file,
            pair_check_interval=config.pair.check_interval,
            pair_check_misses=config.pair.check_misses,
            on_published=self.publish_metrics.on_published,
            on_refused=self._on_room_refused,
        )
        #: Set when the bridge cannot keep its promises for a room the config names
        #: (someone else owns it, it is not moderated...): the program then exits.
        self.failure: str | None = None
        self.failed = asyncio.Event()
        #: Personal watch lists ([subscriptions]) and PubSub nodes ([pubsub]); None when off.
        self.subscriptions = (
            SubscriptionService(
                config.subscriptions,
                self.session,
                self.outbox,
                lambda: self.router,
                lambda: self.config.rooms,
            )
            if config.subscriptions.enabled
            else None
        )
        self.pubsub = (
            PubSubPublisher(
                config.pubsub,
                self.session,
                self.outbox,
                lambda wiki: self.router.wiki_room(wiki),
            )
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
        #: Sources beside UDP (EventStreams, Redis), each feeding `accept`.
        self.feeds: list[Feed] = make_feeds(config)
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
        await self.session.start()
        if self.subscriptions is not None:
            await self.subscriptions.start()
        if self.pubsub is not None:
            await self.pubsub.start((*self.config.rooms.wikis, *self.config.rooms.routing.wikis))
        for room in self.router.static_rooms:
            self.sink.open_room(room)
        for source in self.sources:
            self.addresses.append(await source.start())
        for feed in self.feeds:
            await feed.start(self.accept)
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
        self.accept(result, addr[0])

    def accept(self, change: RecentChange, origin: str) -> bool:
        """Route, encode and queue a decoded change from any source; False when refused
        (counted under its reason). `origin` names the sender in log lines: a source
        address, or a feed such as ``eventstreams``. Never blocks, never raises."""
        try:
            change, rooms = self.router.route(change)
        except RoutingError as exc:  # UnknownWikiError too: reason "unknown_wiki"
            self.stats.rejected[exc.reason] += 1
            if not isinstance(exc, UnknownWikiError):  # dropping those is what was asked
                self._bad_input_log.warning("dropped a change from %s: %s", origin, exc)
            return False
        # Encoded once for all its rooms; whatever intake accepts can be published.
        try:
            encoded = payload_text(change)
        except (ValueError, TypeError, RecursionError) as exc:
            self.stats.rejected["unencodable"] += 1
            self._bad_input_log.warning(
                "dropped a change from %s: cannot encode it: %s", origin, exc
            )
            return False
        size = len(encoded) if encoded.isascii() else len(encoded.encode())
        sender = self.sink.link.sender
        longest = max((room.jid for room in rooms), key=len, default="")
        if size + envelope_size(longest, change.stable_id, sender) > self.sink.max_stanza_bytes:
            self.stats.rejected["stanza_too_large"] += 1
            self._bad_input_log.warning(
                "dropped %s from %s: its message would be about %d bytes, over "
                "delivery.max_stanza_bytes",
                change.stable_id,
                origin,
                size,
            )
            return False
        sink = self.sink
        cap = self.config.rooms.max_unknown_rooms
        for room in rooms:
            if not sink.has_room(room.jid) and sink.dynamic_rooms >= cap:
                self.stats.rejected["too_many_rooms"] += 1
                self._bad_input_log.warning(
                    "dropped %s: %d rooms are open for unknown wikis (rooms.max_unknown_rooms)",
                    change.stable_id,
                    cap,
                )
                return False
        self.stats.accepted += 1
        for room in rooms:
            sink.submit(room, Outgoing(change, encoded, size))
        if self.subscriptions is not None:
            self.subscriptions.on_change(change)
        if self.pubsub is not None:
            self.pubsub.on_change(change)
        return True

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
            self.sink.reopen(room)  # a refused room gets another chance after a fix
        log.info(
            "reloaded routing from %s: %d rooms in the config, %d filtered, unknown wikis: %s",
            config.source,
            len(router.static_rooms),
            len(router.filtered),
            router.unknown_wikis,
        )

    def _on_room_refused(self, channel: RoomChannel) -> None:
        if channel.static and self.failure is None:
            self.failure = (
                f"refusing to run: {channel.refused_detail}. Let only the bridge create rooms "
                "on the MUC service (see the README), or remove the room, then start again"
            )
            log.critical("%s", self.failure)
            self.failed.set()

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop intake, deliver what is queued (bounded by `drain_timeout`), disconnect.

        Never raises: each part is stopped even if another fails."""
        steps: list[tuple[str, Any]] = []
        for source in self.sources:
            source.close()
        for source in self.sources:
            steps.append(("a UDP source", source.wait_closed()))
        for feed in self.feeds:
            steps.append((f"the {feed.name} feed", feed.stop()))
        await self._run_steps(steps)
        try:
            self.edge.close()  # writes the replay memory (udp.replay_state_file) one last time
        except Exception:
            log.exception("error while closing the edge")
        try:
            if self.sink.pending and not await self.sink.drain(drain_timeout):
                log.warning("stopping with %d changes undelivered", self.sink.pending)
        except Exception:
            log.exception("error while draining")
        steps = []
        if self.subscriptions is not None:
            steps.append(("the watch service", self.subscriptions.stop(min(drain_timeout, 2.0))))
        if self.pubsub is not None:
            steps.append(("the PubSub publisher", self.pubsub.stop(min(drain_timeout, 2.0))))
        steps.append(("the room sink", self.sink.stop()))
        steps.append(("the XMPP session", self.session.stop()))
        if self.http is not None:
            steps.append(("the ops listener", self.http.stop()))
        await self._run_steps(steps)
        self._stopped.set()

    @staticmethod
    async def _run_steps(steps: list[tuple[str, Any]]) -> None:
        for name, step in steps:
            try:
                await step
            except Exception:
                log.exception("error while stopping %s", name)
