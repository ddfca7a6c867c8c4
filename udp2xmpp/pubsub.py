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
members as node members for a members-only wiki. Node setup uses slixmpp's
XEP-0060 plugin; publishing writes ready-made IQ text through the fast path
(`send_texts`), at most ``window`` unanswered and ``max_per_second`` a
second, from its own bounded queue, so the rooms never wait on PubSub.
Errors are counted by condition; a node that vanished is set up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase

from xmlrc.wire import NAMESPACE, RecentChange
from xmlrc.wire.rcxml import change_to_xml_text, escape_attribute
from xmlrc.wire.safexml import xml_safe

from .config import PubSubSettings
from .route import RoomSpec, RoutingError
from xmlrc.xmpp.outbox import Pacer
from .throttled_log import RateLimitedLog

if TYPE_CHECKING:
    from .sink.xmpp import XmppSink

log = logging.getLogger(__name__)

PUBSUB_NS = "http://jabber.org/protocol/pubsub"
NODE_CONFIG_FORM = "http://jabber.org/protocol/pubsub#node_config"
#: Ids of our publish IQs; their answers are matched on it.
ID_PREFIX = "xmlrc-ps"
#: An unanswered publish older than this is given up (counted as a timeout).
ANSWER_TIMEOUT = 60.0
ALL_TITLE = "Recent changes of every wiki"


def publish_text(
    service: str, node: str, change: RecentChange, iq_id: str, sender: str | None = None
) -> str:
    """The publish IQ of one change, as text (pure)."""
    sender_attr = f' from="{escape_attribute(sender)}"' if sender else ""
    item_id = escape_attribute(xml_safe(change.stable_id))
    return (
        f'<iq type="set" to="{escape_attribute(service)}" id="{iq_id}"{sender_attr}>'
        f'<pubsub xmlns="{PUBSUB_NS}"><publish node="{escape_attribute(node)}">'
        f'<item id="{item_id}">{change_to_xml_text(change)}</item>'
        "</publish></pubsub></iq>"
    )


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
    published: int = 0
    confirmed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    dropped_overflow: int = 0
    node_setups: int = 0
    node_setup_failures: int = 0
    requeued: int = 0


class _IdPrefix(MatcherBase):
    """Matches our publish answers (result or error) by their id."""

    def match(self, stanza: Any) -> bool:
        return bool(
            stanza.name == "iq"
            and stanza["type"] in ("result", "error")
            and str(stanza["id"]).startswith(self._criteria)
        )


class PubSubPublisher:
    def __init__(
        self,
        settings: PubSubSettings,
        sink: XmppSink,
        room_of: Callable[[str], RoomSpec],
    ) -> None:
        assert settings.service is not None  # the config requires it when enabled
        self.settings = settings
        self.service = settings.service
        self.sink = sink
        self._room_of = room_of
        self.stats = PubSubStats()
        #: (node, change, attempts) waiting to be published.
        self._queue: deque[tuple[NodeSpec, RecentChange, int]] = deque()
        #: iq id -> (node, change, attempts, sent at)
        self._inflight: dict[str, tuple[NodeSpec, RecentChange, int, float]] = {}
        self._ready: set[str] = set()
        self._wake = asyncio.Event()
        self._seq = 0
        self._pacer = Pacer(settings.max_per_second, 0.0)
        self._task: asyncio.Task[None] | None = None
        self._nodes: dict[str, NodeSpec] = {}
        self._to_prepare: dict[str, NodeSpec] = {}
        self._errors_log = RateLimitedLog(log)
        self._all = (
            NodeSpec(settings.all_node, ALL_TITLE, "Every change of every public wiki, from xmlrc")
            if settings.all_node
            else None
        )
        client = sink.client
        client.register_plugin("xep_0060")
        client.register_handler(
            Callback("xmlrc pubsub answers", _IdPrefix(ID_PREFIX), self._on_answer)
        )
        client.add_event_handler("session_start", self._on_session_start)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, wikis: Iterable[str] = ()) -> None:
        """Start publishing; the nodes of `wikis` (the known ones) and the all-wikis node are
        created at once, so subscribers can subscribe before the first change."""
        self.prepare(wikis)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pubsub publisher")

    def prepare(self, wikis: Iterable[str]) -> None:
        """Set up these wikis' nodes (and the all-wikis node) before their first change."""
        for wiki in wikis:
            node = self._nodes.get(wiki) or self._node_for(wiki)
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
        self.prepare(wikis)

    async def stop(self, timeout: float = 2.0) -> None:
        """Publish what is queued (while online, at most `timeout` s), then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (  # noqa: ASYNC110 - waits on the queue and the answers together
            (self._queue or self._inflight)
            and self._task is not None
            and self.sink.online
            and loop.time() < deadline
        ):
            await asyncio.sleep(0.02)
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
        try:
            room = self._room_of(wiki)
        except RoutingError:
            return None
        name = self.settings.node.format(wiki=wiki).lower()
        spec = NodeSpec(
            name=name,
            title=room.title,
            description=room.description,
            members=tuple(room.members) if room.members_only else None,
        )
        if len(self._nodes) < 10_000:  # wiki IDs come from the network
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
        while True:
            self._expire(loop.time())
            if self._to_prepare and self.sink.online:
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
            if not self.sink.online:
                with contextlib.suppress(TimeoutError):
                    await self.sink.wait_online(5.0)
                continue
            node = self._queue[0][0]
            if node.name not in self._ready:
                if not await self._setup(node):
                    await asyncio.sleep(5.0)
                continue
            batch: list[str] = []
            wait = 0.0
            sender = self.sink.sender
            while (
                self._queue
                and len(self._inflight) < self.settings.window
                and self._queue[0][0].name in self._ready
            ):
                wait = self._pacer.delay(0, loop.time())
                if wait:
                    break
                node, change, attempts = self._queue.popleft()
                self._seq += 1
                iq_id = f"{ID_PREFIX}{self._seq}"
                self._inflight[iq_id] = (node, change, attempts, loop.time())
                batch.append(publish_text(self.service, node.name, change, iq_id, sender))
            if batch:
                self.sink.client.send_texts(batch)
                self.stats.published += len(batch)
            await asyncio.sleep(wait)

    def _expire(self, now: float) -> None:
        if not self._inflight:
            return
        stale = [k for k, v in self._inflight.items() if now - v[3] > ANSWER_TIMEOUT]
        for iq_id in stale:
            del self._inflight[iq_id]
            self.stats.errors["timeout"] += 1

    def _on_answer(self, iq: Any) -> None:
        entry = self._inflight.pop(str(iq["id"]), None)
        if entry is None:
            return
        self._wake.set()
        if iq["type"] == "result":
            self.stats.confirmed += 1
            return
        node, change, attempts, _sent = entry
        condition = str(iq["error"]["condition"]) or "error"
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

    def _on_session_start(self, _event: Any) -> None:
        # A fresh session: what was in flight may never be answered; publish it again
        # (the same item id replaces the item, so nothing is duplicated). Nodes are
        # checked again too: the server may have lost them.
        for node, change, attempts, _sent in reversed(list(self._inflight.values())):
            self._queue.appendleft((node, change, attempts))
            self.stats.requeued += 1
        self._inflight.clear()
        self._ready.clear()
        self._wake.set()

    # -- node setup --------------------------------------------------------------------------

    async def _setup(self, node: NodeSpec) -> bool:
        """Create (or reconfigure) `node`; True when it can take items."""
        plugin = self.sink.client.plugin["xep_0060"]
        service = JID(self.service)
        ifrom = JID(self.sink.sender) if self.sink.sender else None
        whitelist = node.members is not None
        config = node_config(self.settings, node.title, node.description, whitelist=whitelist)
        timeout = self.sink.settings.ping_timeout
        try:
            try:
                await plugin.create_node(
                    service, node.name, config=self._form(config), ifrom=ifrom, timeout=timeout
                )
                created = True
            except IqError as exc:
                if exc.iq["error"]["condition"] != "conflict":
                    raise
                created = False
                form = self._form(config)
                form.add_field(var="FORM_TYPE", ftype="hidden", value=NODE_CONFIG_FORM)
                await plugin.set_node_config(service, node.name, form, ifrom=ifrom, timeout=timeout)
            if node.members:
                members = [(member, "member") for member in node.members]
                await plugin.modify_affiliations(
                    service, node.name, members, ifrom=ifrom, timeout=timeout
                )
        except (IqError, IqTimeout) as exc:
            self.stats.node_setup_failures += 1
            reason = exc.iq["error"]["condition"] if isinstance(exc, IqError) else "timeout"
            log.warning(
                "cannot set up pubsub node %s on %s: %s (is the bridge an admin of the "
                "PubSub service?); retrying",
                node.name,
                self.service,
                reason,
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

    def _form(self, values: dict[str, str]) -> Any:
        form = self.sink.client.plugin["xep_0004"].make_form(ftype="submit")
        for var, value in values.items():
            form.add_field(var=var, value=value)
        return form

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
            f"{prefix}_node_setup_failures",
            "Failed attempts to create or configure a node.",
            value=stats.node_setup_failures,
        )
        yield GaugeMetricFamily(
            f"{prefix}_pending", "Items queued or waiting for an answer.", value=self.pending
        )
