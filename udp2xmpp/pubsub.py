"""PubSub (XEP-0060): every change also published as an item on PubSub nodes.

With ``[pubsub] enabled = true`` each routed change is published on its
wiki's node (``pubsub.node``, ``{wiki}`` by default) and on the all-wikis
node (``pubsub.all_node``; never for a members-only wiki), as an item whose
id is the change's stable id and whose payload is the same ``<rc>`` the
rooms carry. Publishing an id again replaces the item, so a resend after a
reconnection never makes a duplicate.

The bridge creates and configures its nodes (it must be allowed to: in
Prosody, an admin of the PubSub service): items persisted, at most
``max_items`` kept, only the owner (the bridge) publishes, and the access
model of the wiki's room: ``open``, or ``whitelist`` with the room's
members as node members for a members-only wiki. It runs on the bridge's
`Session` and talks XMPP only through `xmlrc.xmpp.pubsub`: node setup as
IQs, publishing as ready-made IQ text written through the stream's one
`Outbox` (sharing its budget), at most ``window`` unanswered and
``max_per_second`` a second, from its own bounded queue, so the rooms never
wait on PubSub. Errors are counted by condition; a node that vanished is
set up again.

Private stays private: node names are reserved like room names. A known
wiki's node is only ever configured from that wiki's own settings, and an
unknown wiki whose node name would be a known wiki's (``SecretWiki`` beside
the members-only ``secretwiki``), or the all-wikis node, is refused and
counted. After a session that was not resumed every known node is set up
again, with its right access model, before anything is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from xmlrc.wire import NAMESPACE, RecentChange
from xmlrc.wire.rcxml import change_to_xml_text
from xmlrc.wire.safexml import xml_safe
from xmlrc.xmpp import pubsub as xep0060
from xmlrc.xmpp.outbox import Outbox, Pacer

from .config import PubSubSettings
from .route import RoomSpec, RoutingError
from .throttled_log import RateLimitedLog

if TYPE_CHECKING:
    from xmlrc.xmpp.session import Session

log = logging.getLogger(__name__)

PUBSUB_NS = xep0060.PUBSUB_NS
NODE_CONFIG_FORM = xep0060.NODE_CONFIG_FORM
#: Ids of our publish IQs; their answers are matched on it.
ID_PREFIX = "xmlrc-ps"
#: An unanswered publish older than this is given up (counted as a timeout).
ANSWER_TIMEOUT = 60.0
#: Seconds to wait for an answer to a node setup request.
SETUP_TIMEOUT = 20.0
ALL_TITLE = "Recent changes of every wiki"
#: Node names of unknown wikis remembered; wiki IDs come from the network.
_NODE_LIMIT = 10_000


def publish_text(
    service: str, node: str, change: RecentChange, iq_id: str, sender: str | None = None
) -> str:
    """The publish IQ of one change, as text (pure)."""
    payload = change_to_xml_text(change)
    return xep0060.publish_text(service, node, xml_safe(change.stable_id), payload, iq_id, sender)


def node_name(template: str, wiki: str) -> str:
    """The node a wiki's changes go to: the template, folded like room names (pure)."""
    return template.format(wiki=wiki).lower()


def node_config(
    settings: PubSubSettings, title: str, description: str, *, whitelist: bool
) -> dict[str, str]:
    """The node configuration the bridge asks for (XEP-0060 ``pubsub#node_config``; pure)."""
    return {
        "pubsub#title": title,
        "pubsub#description": description,
        "pubsub#type": NAMESPACE,
        "pubsub#max_items": str(settings.max_items),
        "pubsub#persist_items": "1" if settings.persist_items else "0",
        "pubsub#access_model": "whitelist" if whitelist else "open",
        "pubsub#publish_model": "publishers",  # the owner: the bridge
        "pubsub#send_last_published_item": "never",
        "pubsub#deliver_notifications": "1",
        "pubsub#deliver_payloads": "1",
        "pubsub#notify_retract": "0",
        "pubsub#notify_delete": "1",
    }


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node the bridge publishes to, and how it is configured."""

    name: str
    title: str
    description: str
    #: Bare JIDs allowed to subscribe; None: anyone (access model open).
    members: tuple[str, ...] | None = None


@dataclass
class PubSubStats:
    """The PubSub publisher's counters: items published, confirmed, failed, dropped; setups."""

    published: int = 0
    confirmed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    dropped_overflow: int = 0
    node_setups: int = 0
    node_setup_failures: int = 0
    requeued: int = 0
    #: Changes of unknown wikis whose node name is a known wiki's (or the all-wikis node).
    refused_reserved: int = 0


class PubSubPublisher:
    """Publishes every routed change on its wiki's node and the all-wikis node; owns the
    setup (and re-setup after a fresh session) of those nodes."""

    def __init__(
        self,
        settings: PubSubSettings,
        session: Session,
        outbox: Outbox,
        room_of: Callable[[str], RoomSpec],
    ) -> None:
        assert settings.service is not None  # the config requires it when enabled
        self.settings = settings
        self.service = settings.service
        self.session = session
        self.outbox = outbox
        self._room_of = room_of
        self.stats = PubSubStats()
        #: (node, change, attempts) waiting to be published.
        self._queue: deque[tuple[NodeSpec, RecentChange, int]] = deque()
        #: iq id -> (node, change, attempts, sent at)
        self._inflight: dict[str, tuple[NodeSpec, RecentChange, int, float]] = {}
        self._ready: set[str] = set()
        self._wake = asyncio.Event()
        self._seq = 0
        #: Our own pace, on top of the stream's shared budget (the outbox).
        self._pacer = Pacer(settings.max_per_second, 0.0)
        self._task: asyncio.Task[None] | None = None
        #: wiki ID -> its node (known wikis, and unknown ones seen, up to a bound).
        self._nodes: dict[str, NodeSpec] = {}
        #: The known wikis, and node name -> spec of every node the config owns: the
        #: only spec such a node is ever configured with.
        self._known: set[str] = set()
        self._reserved: dict[str, NodeSpec] = {}
        self._to_prepare: dict[str, NodeSpec] = {}
        self._errors_log = RateLimitedLog(log)
        self._refused_log = RateLimitedLog(log)
        self._all = (
            NodeSpec(settings.all_node, ALL_TITLE, "Every change of every public wiki, from xmlrc")
            if settings.all_node
            else None
        )
        if self._all is not None:
            self._reserved[self._all.name] = self._all
        xep0060.on_answers(session.client, ID_PREFIX, self._on_answer)
        session.on_online(self._on_online)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, wikis: Iterable[str] = ()) -> None:
        """Start publishing; the nodes of `wikis` (the known ones) and the all-wikis node are
        created at once, so subscribers can subscribe before the first change."""
        self.prepare(wikis)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pubsub publisher")

    def prepare(self, wikis: Iterable[str]) -> None:
        """`wikis` are known: reserve their node names and set the nodes (and the all-wikis
        node) up before their first change."""
        for wiki in wikis:
            self._known.add(wiki)
            self._nodes.pop(wiki, None)  # seen as unknown before? work it out as known
            node = self._node_for(wiki)
            if node is not None:
                self._to_prepare[node.name] = node
        if self._all is not None:
            self._to_prepare[self._all.name] = self._all
        self._wake.set()

    def reload(self, wikis: Iterable[str]) -> None:
        """The routing changed: work the node settings out again (room membership decides
        the access model) and apply them."""
        self._nodes.clear()
        self._ready.clear()
        self._known.clear()
        self._reserved = {self._all.name: self._all} if self._all is not None else {}
        self.prepare(wikis)

    async def stop(self, timeout: float = 2.0) -> None:
        """Publish what is queued (while online, at most `timeout` s), then stop. Never
        raises."""
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while (  # noqa: ASYNC110 - waits on the queue and the answers together
                (self._queue or self._inflight)
                and self._task is not None
                and not self._task.done()
                and self.session.online
                and loop.time() < deadline
            ):
                await asyncio.sleep(0.02)
        finally:
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
                self._task = None

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._inflight)

    # -- the hot path -----------------------------------------------------------------------

    def on_change(self, change: RecentChange) -> None:
        """Queue `change` for its wiki's node and the all-wikis node (never blocks)."""
        node = self._nodes.get(change.wiki)
        if node is None:
            node = self._node_for(change.wiki)
            if node is None:
                return
        self._put(node, change)
        if self._all is not None and node.members is None:
            self._put(self._all, change)
        self._wake.set()

    def _put(self, node: NodeSpec, change: RecentChange) -> None:
        if len(self._queue) >= self.settings.queue_size:
            self._queue.popleft()
            self.stats.dropped_overflow += 1
        self._queue.append((node, change, 0))

    def _node_for(self, wiki: str) -> NodeSpec | None:
        """The node of `wiki`; None when it has none (its room is refused, or it is an
        unknown wiki whose node name is reserved)."""
        name = node_name(self.settings.node, wiki)
        known = wiki in self._known
        if not known and name in self._reserved:
            # Wiki IDs are compared as the names they become: "SecretWiki" would publish
            # to (and, after a fresh session, reconfigure) secretwiki's private node.
            self.stats.refused_reserved += 1
            self._refused_log.warning(
                "refused a change of unknown wiki %r: its node %r is reserved", wiki[:60], name
            )
            return None
        try:
            room = self._room_of(wiki)
        except RoutingError:
            return None
        spec = NodeSpec(
            name=name,
            title=room.title,
            description=room.description,
            members=tuple(room.members) if room.members_only else None,
        )
        if known:
            first = self._reserved.setdefault(name, spec)
            if first != spec:  # two known wikis, one node: the stricter spec wins
                log.error("pubsub node %r is the node of two known wikis", name)
                spec = first if first.members is not None else spec
                self._reserved[name] = spec
        if known or len(self._nodes) < _NODE_LIMIT:
            self._nodes[wiki] = spec
        return spec

    # -- publishing --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._publish_some()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop publishing for good
                log.exception("the pubsub publisher failed; restarting it")
                await asyncio.sleep(1.0)

    async def _publish_some(self) -> None:
        loop = asyncio.get_running_loop()
        session = self.session
        while True:
            self._expire(loop.time())
            if self._to_prepare and session.online:
                # Before any item: a fresh session sets every known node up again first.
                name, node = next(iter(self._to_prepare.items()))
                if name in self._ready or await self._setup(node):
                    self._to_prepare.pop(name, None)
                else:
                    await asyncio.sleep(5.0)
                continue
            if not self._queue or len(self._inflight) >= self.settings.window:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 5.0)
                continue
            if not session.online:
                with contextlib.suppress(TimeoutError):
                    await session.wait_online(5.0)
                continue
            node = self._queue[0][0]
            if node.name not in self._ready:
                if not await self._setup(node):
                    await asyncio.sleep(5.0)
                continue
            batch: list[str] = []
            wait = 0.0
            sender = session.sender
            while (
                self._queue
                and len(self._inflight) < self.settings.window
                and self._queue[0][0].name in self._ready
            ):
                node, change, attempts = self._queue[0]
                iq_id = f"{ID_PREFIX}{self._seq + 1}"
                text = publish_text(self.service, node.name, change, iq_id, sender)
                # Our own pace first, then the stream's shared budget. When the outbox
                # says wait, our token was spent for nothing: a little under our rate.
                wait = self._pacer.delay(0, loop.time()) or self.outbox.delay(len(text))
                if wait:
                    break
                self._queue.popleft()
                self._seq += 1
                self._inflight[iq_id] = (node, change, attempts, loop.time())
                batch.append(text)
            if batch:
                self.outbox.write(batch)
                self.stats.published += len(batch)
            await asyncio.sleep(wait)

    def _expire(self, now: float) -> None:
        if not self._inflight:
            return
        stale = [k for k, v in self._inflight.items() if now - v[3] > ANSWER_TIMEOUT]
        for iq_id in stale:
            del self._inflight[iq_id]
            self.stats.errors["timeout"] += 1

    def _on_answer(self, iq_id: str, condition: str | None) -> None:
        entry = self._inflight.pop(iq_id, None)
        if entry is None:
            return
        self._wake.set()
        if condition is None:
            self.stats.confirmed += 1
            return
        node, change, attempts, _sent = entry
        self.stats.errors[condition] += 1
        if condition == "item-not-found" and attempts == 0:
            # The node is gone (deleted by an admin, or a server without its store):
            # set it up again and publish this change once more.
            self._ready.discard(node.name)
            self._queue.appendleft((node, change, 1))
            self.stats.requeued += 1
        self._errors_log.warning(
            "pubsub %s refused %s on node %s: %s",
            self.service,
            change.stable_id,
            node.name,
            condition,
        )

    def _on_online(self, resumed: bool) -> None:
        if resumed:
            return  # the stream survived: what is in flight will be answered
        # A fresh session: what was in flight may never be answered; publish it again
        # (the same item id replaces the item, so nothing is duplicated). Every known
        # node is set up again before any item (the server may have lost it, or someone
        # may have reconfigured it meanwhile).
        for node, change, attempts, _sent in reversed(list(self._inflight.values())):
            self._queue.appendleft((node, change, attempts))
            self.stats.requeued += 1
        self._inflight.clear()
        self._ready.clear()
        self._to_prepare.update(self._reserved)
        self._wake.set()

    # -- node setup --------------------------------------------------------------------------

    async def _setup(self, node: NodeSpec) -> bool:
        """Create (or reconfigure) `node`; True when it can take items."""
        # A node the config owns is configured from the config's spec, whatever queued it.
        node = self._reserved.get(node.name, node)
        whitelist = node.members is not None
        config = node_config(self.settings, node.title, node.description, whitelist=whitelist)
        try:
            created = await xep0060.prepare_node(
                self.session.client,
                self.service,
                node.name,
                config,
                node.members or (),
                ifrom=self.session.sender,
                timeout=SETUP_TIMEOUT,
            )
        except xep0060.PubSubError as exc:
            self.stats.node_setup_failures += 1
            self._errors_log.warning(
                "cannot set up pubsub node %s on %s: %s (is the bridge an admin of the "
                "PubSub service?); retrying",
                node.name,
                self.service,
                exc.condition,
            )
            return False
        self.stats.node_setups += 1
        self._ready.add(node.name)
        log.info(
            "pubsub node %s on %s %s (%s)",
            node.name,
            self.service,
            "created" if created else "configured",
            "whitelist" if whitelist else "open",
        )
        return True

    # -- metrics ----------------------------------------------------------------------------

    def collect_metrics(self) -> Iterator[Metric]:
        prefix = "udp2xmpp_pubsub"
        stats = self.stats
        yield CounterMetricFamily(
            f"{prefix}_published", "Items sent to the PubSub service.", value=stats.published
        )
        yield CounterMetricFamily(
            f"{prefix}_confirmed", "Items the PubSub service accepted.", value=stats.confirmed
        )
        errors = CounterMetricFamily(
            f"{prefix}_errors", "Items refused, by error condition.", labels=["condition"]
        )
        for condition, count in sorted(stats.errors.items()):
            errors.add_metric([condition], count)
        yield errors
        yield CounterMetricFamily(
            f"{prefix}_dropped",
            "Changes never published: the PubSub queue was full.",
            value=stats.dropped_overflow,
        )
        yield CounterMetricFamily(
            f"{prefix}_refused_reserved",
            "Changes of unknown wikis refused: their node is a known wiki's (or the all-wikis).",
            value=stats.refused_reserved,
        )
        yield CounterMetricFamily(
            f"{prefix}_node_setup_failures",
            "Failed attempts to create or configure a node.",
            value=stats.node_setup_failures,
        )
        yield GaugeMetricFamily(
            f"{prefix}_pending", "Items queued or waiting for an answer.", value=self.pending
        )
