"""Prometheus metrics of one bridge, read from its plain counters at scrape time.

The hot path only bumps plain Python integers (`BridgeStats`, `SinkStats`);
`BridgeCollector` turns them into metric families when /metrics is scraped,
so counting costs nothing more than it did. Two things are recorded as
they happen, by the sink's ``on_published`` hook: the changes published per
room and the delay from a change's timestamp to its publication
(`PublishMetrics`). Each bridge has its own `CollectorRegistry`.

This module does not import the bridge (which imports it): the collector reads
an `Observed`, the few attributes of a bridge it needs, checked by type.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from xmlrc.wire import RecentChange, RejectReason
from xmlrc.xmpp import Session

from .route import RoutingError, UnknownWikiError
from .sink.rooms import RoomSink
from .source.edge import EdgeGuard
from .source.udp import UdpSource

#: The bridge's own intake reasons (kept here, not imported: bridge imports this module).
INTAKE_REASONS = ("unencodable", "stanza_too_large", "too_many_rooms")

#: Upper bounds (seconds) of the publish delay histogram. Wiki timestamps have
#: one-second resolution, so the finest buckets mostly show clock skew.
DELAY_BUCKETS: tuple[float, ...] = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600)
#: Connection states the sink reports; the gauge shows each, 1 for the current one.
XMPP_STATES = ("connecting", "online", "disconnected")
_PREFIX = "udp2xmpp"
_SINK_HELP = {
    "confirmed": "Changes the XMPP server confirmed it has.",
    "resent": "Changes sent again after a reconnection or rejoin.",
    "joins": "Times the bridge joined a room.",
    "join_failures": "Failed attempts to join a room.",
    "connections": "XMPP sessions established.",
    "self_ping_failures": "Room self-pings (XEP-0410) that failed.",
    "nick_conflicts": "Rooms where another occupant held the bridge's nick (impersonation?).",
    "takeovers": "Bridge pair: rooms this bridge took over when the publishing bridge left.",
    "fenced": "Bridge pair: times the publishing bridge stopped answering and was banned.",
    "published_by_peer": "Bridge pair: changes the other bridge published (not sent here).",
    "passed_by_peer": "Bridge pair: changes the other bridge went past without publishing.",
}


class DelayHistogram:
    """A histogram cheap enough for the publish path: one bisect, two additions."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = DELAY_BUCKETS) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """Buckets as Prometheus wants them: (upper bound, observations <= it), +Inf last."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class PublishMetrics:
    """The sink's ``on_published`` hook: per-room counts and the publish delay."""

    __slots__ = ("_clock", "delay", "per_room")

    def __init__(self, clock: Any = time.time) -> None:
        self.per_room: dict[str, int] = {}
        self.delay = DelayHistogram()
        self._clock = clock

    def on_published(self, room: Any, change: RecentChange) -> None:
        jid: str = getattr(room, "jid", room)  # a RoomSpec, or a bare JID
        per_room = self.per_room
        per_room[jid] = per_room.get(jid, 0) + 1
        delay = self._clock() - change.timestamp.timestamp()
        self.delay.observe(delay if delay > 0.0 else 0.0)


class IntakeCounts(Protocol):
    """The intake counters a collector reads (the bridge's `BridgeStats`)."""

    @property
    def received(self) -> int: ...
    @property
    def accepted(self) -> int: ...
    @property
    def rejected(self) -> Mapping[str, int]: ...


class MetricsSource(Protocol):
    """A part with counters of its own (the watch service, the PubSub publisher)."""

    def collect_metrics(self) -> Iterator[Metric]: ...


class Observed(Protocol):
    """What `BridgeCollector` reads of a bridge: its counters and parts, never changed."""

    @property
    def stats(self) -> IntakeCounts: ...
    @property
    def sink(self) -> RoomSink: ...
    @property
    def publish_metrics(self) -> PublishMetrics: ...
    @property
    def session(self) -> Session: ...
    @property
    def sources(self) -> Sequence[UdpSource]: ...
    @property
    def edge(self) -> EdgeGuard: ...
    @property
    def feeds(self) -> Sequence[MetricsSource]: ...
    @property
    def subscriptions(self) -> MetricsSource | None: ...
    @property
    def pubsub(self) -> MetricsSource | None: ...


class BridgeCollector(Collector):
    """Everything the bridge counts, as metric families, computed when scraped."""

    def __init__(self, bridge: Observed) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator[Metric]:
        bridge = self.bridge
        stats = bridge.stats
        sink = bridge.sink
        yield CounterMetricFamily(
            f"{_PREFIX}_datagrams_received",
            "Datagrams read from the UDP sockets, whatever became of them.",
            value=stats.received,
        )
        yield CounterMetricFamily(
            f"{_PREFIX}_changes_accepted",
            "Datagrams decoded into a change and routed to at least one room.",
            value=stats.accepted,
        )
        rejected = CounterMetricFamily(
            f"{_PREFIX}_datagrams_rejected",
            "Datagrams dropped at intake, by reason (source, signature, decoding, routing).",
            labels=["reason"],
        )
        reasons = dict.fromkeys((r.value for r in RejectReason), 0)
        reasons.update(dict.fromkeys((RoutingError.reason, UnknownWikiError.reason), 0))
        reasons.update(dict.fromkeys(INTAKE_REASONS, 0))
        reasons.update(stats.rejected)
        for reason, count in sorted(reasons.items()):
            rejected.add_metric([reason], count)
        yield rejected

        published = CounterMetricFamily(
            f"{_PREFIX}_published",
            "Changes sent into each room (a change resent after a reconnection counts again).",
            labels=["room"],
        )
        for room, count in sorted(bridge.publish_metrics.per_room.items()):
            published.add_metric([room], count)
        yield published

        sink_stats = sink.stats
        dropped = CounterMetricFamily(
            f"{_PREFIX}_dropped",
            "Accepted changes that will never be published, by reason (overflow: a full queue).",
            labels=["reason"],
        )
        for field in dataclasses.fields(sink_stats):
            value = getattr(sink_stats, field.name)
            if not isinstance(value, int) or field.name == "published":
                continue
            if field.name.startswith("dropped_"):
                dropped.add_metric([field.name.removeprefix("dropped_")], value)
            else:
                yield CounterMetricFamily(
                    f"{_PREFIX}_xmpp_{field.name}",
                    _SINK_HELP.get(field.name, f"XMPP sink counter {field.name}."),
                    value=value,
                )
        yield dropped

        depth = GaugeMetricFamily(
            f"{_PREFIX}_queue_depth",
            "Changes waiting in each room's queue (not yet sent).",
            labels=["room"],
        )
        for room, count in sorted(sink.queue_depths().items()):
            depth.add_metric([room], count)
        yield depth
        refused = GaugeMetricFamily(
            f"{_PREFIX}_rooms_refused",
            "Rooms the bridge will not publish in, by reason: not its owner, not configured "
            "as required (moderated, members-only), or its nick held by another occupant.",
            labels=["reason"],
        )
        refusals = dict.fromkeys(("not_owner", "misconfigured", "nick_taken"), 0)
        for reason in sink.refused_rooms().values():
            refusals[reason] = refusals.get(reason, 0) + 1
        for reason, count in sorted(refusals.items()):
            refused.add_metric([reason], count)
        yield refused
        yield GaugeMetricFamily(
            f"{_PREFIX}_rooms_standby",
            "Bridge pair: rooms where the other bridge publishes and this one stands by.",
            value=len(sink.standby_rooms()),
        )
        yield GaugeMetricFamily(
            f"{_PREFIX}_queued_bytes",
            "Bytes of encoded changes queued or unconfirmed, all rooms (bounded by "
            "delivery.max_queued_bytes).",
            value=sink.queued_bytes,
        )
        yield GaugeMetricFamily(
            f"{_PREFIX}_pending_changes",
            "Changes queued, or sent and not yet confirmed by the server, in all rooms.",
            value=sink.pending,
        )

        yield GaugeMetricFamily(
            f"{_PREFIX}_asyncio_tasks",
            "Tasks alive in the bridge's event loop (flat over time: nothing leaks).",
            value=_task_count(),
        )
        yield GaugeMetricFamily(
            f"{_PREFIX}_xmpp_connected",
            "1 while the bridge has a working XMPP session, else 0.",
            value=1 if sink.online else 0,
        )
        current = bridge.session.state
        state = GaugeMetricFamily(
            f"{_PREFIX}_xmpp_state",
            "The XMPP connection state: 1 for the current one.",
            labels=["state"],
        )
        for name in sorted({*XMPP_STATES, current}):
            state.add_metric([name], 1 if name == current else 0)
        yield state

        yield GaugeMetricFamily(
            f"{_PREFIX}_udp_listening",
            "UDP sockets receiving datagrams.",
            value=sum(1 for source in bridge.sources if source.listening),
        )
        limiter = bridge.edge.limiter
        if limiter is not None:
            yield CounterMetricFamily(
                f"{_PREFIX}_rate_limit_penalties",
                "Times a source went over its rate limit and into the penalty box.",
                value=limiter.penalties,
            )
            yield GaugeMetricFamily(
                f"{_PREFIX}_rate_limit_sources",
                "Source addresses the rate limiter remembers.",
                value=len(limiter),
            )

        histogram = bridge.publish_metrics.delay
        yield HistogramMetricFamily(
            f"{_PREFIX}_publish_delay_seconds",
            "From a change's timestamp (the wiki's clock) to its publication in a room.",
            buckets=histogram.cumulative(),
            sum_value=histogram.sum,
        )
        # Personal watch lists and PubSub, when they are on: their own counters.
        for extra in (*bridge.feeds, bridge.subscriptions, bridge.pubsub):
            if extra is not None:
                yield from extra.collect_metrics()


def make_registry(bridge: Observed) -> CollectorRegistry:
    """A registry of the bridge's own (not the global one), with the process metrics."""
    registry = CollectorRegistry()
    registry.register(BridgeCollector(bridge))
    ProcessCollector(registry=registry)
    return registry


def _task_count() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # scraped outside the loop (tests calling collect directly)
        return 0
