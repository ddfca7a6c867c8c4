"""Personal watch over XMPP: commands in, notifications and digests out, bounces noticed.

Runs on the bridge's own stream (its `Session`), so a person talks to the
bridge's JID: in client mode its account (``rcbot@example.org``), in
component mode ``bridge@rc.example.org`` (`XmppSettings.component_user`,
`Session.sender`). Chat messages are commands (`commands`); the same
commands are XEP-0050 ad-hoc commands with forms (`adhoc`). Matching
changes, digests and replies go out as ready-made text through one bounded
queue, written through the stream's one `Outbox` (its shared budget) at our
own extra pace; digests go out when they are due. The sender and digest
loops are owned by a `Supervisor`: a failure is logged and the loop
restarted, instead of no watcher ever getting a digest again.

`SubscriptionService.open` takes the database lock and loads the
subscriptions before the bridge connects, so a second bridge on the same
database fails before it says anything to anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from slixmpp import JID
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from xmlrc.tasks import Supervisor
from xmlrc.wire import RecentChange
from xmlrc.xmpp.outbox import Outbox, Pacer

from ..config import RoomSettings, SubscriptionSettings
from ..route import RoomSpec, Router, RoutingError
from .adhoc import (
    COMMANDS_NS,
    NODES,
    Sessions,
    chosen_ids,
    command_element,
    command_from_form,
    form_values,
    mute_form,
    unwatch_form,
    watch_form,
)
from .adhoc import Session as CommandSession
from .commands import CommandError, ListCommand
from .limits import Digest
from .manager import WatchManager, WikiAccess
from .messages import NOTIFY_PREFIX, chat_text, digest_body, digest_text, notification_text
from .store import SubscriptionStore

if TYPE_CHECKING:
    from xmlrc.xmpp.session import Session

log = logging.getLogger(__name__)

#: Notifications and replies written at once, and the pace of all of them together
#: (per-user limits come first; this only keeps a flood from crowding the stream).
_BATCH = 64
NOTIFY_STANZAS_PER_SECOND = 500.0
NOTIFY_BYTES_PER_SECOND = 2_000_000.0
_Item = str | tuple[str, RecentChange]


@dataclass
class ServiceStats:
    """The watch service's sending counters: notifications, digests, replies, drops, ad-hoc."""

    notifications: int = 0
    digests: int = 0
    replies: int = 0
    dropped_overflow: int = 0
    adhoc: int = 0
    #: Digests that could not be built (and were dropped), so the others still go.
    digest_errors: int = 0


class SubscriptionService:
    """The watch service on the bridge's stream: takes commands (chat and ad-hoc), sends
    notifications and digests, notices bounces; owns its sender and digest tasks."""

    def __init__(
        self,
        settings: SubscriptionSettings,
        session: Session,
        outbox: Outbox,
        router: Callable[[], Router],
        rooms: Callable[[], RoomSettings],
        *,
        clock: Callable[[], float] = time.time,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.outbox = outbox
        self._router = router
        self._rooms = rooms
        self.clock = clock
        self.stats = ServiceStats()
        self.manager: WatchManager | None = None
        self._queue: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._digest_wake = asyncio.Event()
        self.supervisor = supervisor or Supervisor()
        self._running = False
        self._stopped = False
        self._sessions = Sessions()
        self._pacer = Pacer(NOTIFY_STANZAS_PER_SECOND, NOTIFY_BYTES_PER_SECOND)
        self._seq = 0
        self._disco_done: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Lock and load the database, and listen on the connection (before it connects).

        Raises `StoreError` (an `OSError`): the database is locked by another
        bridge, unreadable, or from a newer version.
        """
        assert self.settings.database is not None  # the config requires it when enabled
        store = SubscriptionStore.open(self.settings.database)
        try:
            self.manager = WatchManager(self.settings, store, self._access, clock=self.clock)
        except BaseException:
            store.close()
            raise
        client = self.session.client
        if not self.session.endpoint.component:
            # Accept presence subscriptions, so clients see the bridge's resource (ad-hoc
            # commands go to it), but do not ask for theirs: we need no one's presence.
            client.auto_authorize = True
            client.auto_subscribe = False
        client.add_event_handler("message", self._on_message)
        client.add_event_handler("message_error", self._on_message_error)
        self.session.on_online(self._on_online)
        if self.session.online:  # opened on a stream already up
            self._on_online(False)
        client.register_handler(
            Callback(
                "xmlrc ad-hoc commands",
                MatchXPath(f"{{{client.default_ns}}}iq/{{{COMMANDS_NS}}}command"),
                self._on_command,
            )
        )
        index = self.manager.index
        log.info("watch subscriptions: %d of %d users, from %s", len(index), index.jids, store.path)

    async def start(self) -> None:
        """Start the sender and digest loops (restarted when they fail)."""
        self._running = True
        self.supervisor.spawn(self._send_loop, "watch notifications")
        self.supervisor.spawn(self._digest_loop, "watch digests")

    async def stop(self, timeout: float = 2.0) -> None:
        """Send pending digests and what is queued (while online, at most `timeout` s), then
        cancel the tasks and close the database. Never raises: a shutdown must finish."""
        manager = self.manager
        try:
            if manager is not None:
                for digest in manager.limiter.flush_all():
                    self._enqueue_digest(digest)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while (  # noqa: ASYNC110 - waits on the queue and the stream together
                self._queue
                and self._running
                and len(self.supervisor)
                and self.session.online
                and loop.time() < deadline
            ):
                await asyncio.sleep(0.02)
        except Exception:
            log.exception("error while sending the last watch notifications")
        self._running = False
        self._stopped = True
        await self.supervisor.close()
        if manager is not None:
            try:
                manager.store.close()
            except Exception:
                log.exception("error while closing the subscriptions database")
            self.manager = None

    # -- the hot path -----------------------------------------------------------------------

    def on_change(self, change: RecentChange) -> None:
        """A routed change: notify who watches it (now, or in a digest)."""
        manager = self.manager
        if manager is None:
            return
        pending = manager.limiter.pending
        for jid, item in manager.on_change(change):
            self._enqueue((jid, item))
        if manager.limiter.pending != pending:
            self._digest_wake.set()

    # -- sending ----------------------------------------------------------------------------

    def _enqueue(self, item: _Item) -> None:
        if len(self._queue) >= self.settings.queue_size:
            self._queue.popleft()
            self.stats.dropped_overflow += 1
        self._queue.append(item)
        self._wake.set()

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq}"

    def _render(self, item: _Item) -> str:
        if isinstance(item, str):
            return item
        jid, change = item
        self.stats.notifications += 1
        return notification_text(change, jid, self._next_id(NOTIFY_PREFIX), self.session.sender)

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        session, outbox = self.session, self.outbox
        while True:
            if not queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not session.online:
                with contextlib.suppress(TimeoutError):
                    await session.wait_online(5.0)
                continue
            batch: list[str] = []
            wait = 0.0
            while queue and len(batch) < _BATCH:
                item = queue[0]
                size = len(item) if isinstance(item, str) else 1500
                # Our own pace first (a flood of notifications must not crowd the rooms
                # out), then the stream's shared budget.
                wait = self._pacer.delay(size, loop.time()) or outbox.delay(size)
                if wait:
                    break
                queue.popleft()
                batch.append(self._render(item))
            if batch:
                outbox.write(batch)
            await asyncio.sleep(wait)

    async def _digest_loop(self) -> None:
        manager = self.manager
        assert manager is not None
        while True:
            for digest in manager.due_digests():
                self._enqueue_digest(digest)
            self._digest_wake.clear()
            due = manager.limiter.next_due()
            timeout = None if due is None else max(0.0, due - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._digest_wake.wait(), timeout)

    def _enqueue_digest(self, digest: Digest[RecentChange]) -> None:
        """Queue one digest; one that cannot be built is logged and dropped, the rest go."""
        try:
            text = self._digest_text(digest)
        except Exception:
            self.stats.digest_errors += 1
            log.exception("cannot build a digest of %d changes; dropped", digest.total)
            return
        self._enqueue(text)

    def _digest_text(self, digest: Digest[RecentChange]) -> str:
        self.stats.digests += 1
        since = datetime.fromtimestamp(digest.started, UTC).strftime("%H:%M UTC")
        body = digest_body(
            digest.items,
            digest.more,
            digest.over_volume,
            since=since,
            daily_limit=self.settings.daily_limit,
        )
        msg_id = self._next_id(NOTIFY_PREFIX)
        return digest_text(digest.items, body, digest.jid, msg_id, self.session.sender)

    def _reply(self, to: str, body: str) -> None:
        self.stats.replies += 1
        self._enqueue(chat_text(to, body, self._next_id("xmlrc-r"), self.session.sender))

    # -- who may watch what -------------------------------------------------------------------

    def _access(self, wiki: str) -> WikiAccess:
        rooms = self._rooms()
        router = self._router()
        known = wiki in rooms.wikis or wiki in rooms.routing.wikis
        outsiders = router.unknown_wikis != "drop"  # what a made-up wiki gets
        if not known and not outsiders:
            return WikiAccess(False)
        try:
            spec = router.wiki_room(wiki)
        except RoutingError:
            return WikiAccess(False)
        return _access_of(spec, outsiders)

    # -- incoming ---------------------------------------------------------------------------

    def _own_bare(self) -> str:
        return self.session.sender or str(self.session.client.boundjid.bare)

    def _from_user(self, sender: Any, to: Any) -> str | None:
        """The bare JID of a person writing to us, or None for anything else."""
        if self.session.endpoint.component and str(to.bare) != self.session.sender:
            return None
        jid = str(sender.bare)
        if not sender.user or jid == self._own_bare():
            return None
        if sender.domain == self._rooms().service:  # a room, or a private message in one
            return None
        return jid

    def _on_message(self, msg: Any) -> None:
        manager = self.manager
        if manager is None or msg["type"] not in ("chat", "normal"):
            return
        jid = self._from_user(msg["from"], msg["to"])
        body = msg["body"]
        if jid is None or not body.strip():
            return
        verdict = manager.admit_command(jid)
        if verdict is None:
            return
        self._reply(str(msg["from"]), verdict or manager.handle_text(jid, body))

    def _on_message_error(self, msg: Any) -> None:
        manager = self.manager
        if manager is None or not str(msg["id"]).startswith(NOTIFY_PREFIX):
            return
        manager.on_bounce(str(msg["from"].bare), str(msg["error"]["condition"]))

    def _on_online(self, resumed: bool) -> None:
        if self._stopped:
            return
        if not resumed and not self.session.endpoint.component:
            # Available, so chat to our bare JID reaches this resource (with no available
            # resource the server stores or bounces it); one stanza, before any reply.
            self.outbox.write(["<presence/>"])
        self.supervisor.spawn(self._announce, "watch commands disco", restart=False)

    async def _announce(self) -> None:
        """Announce the ad-hoc commands (XEP-0030) on the JID we now have."""
        client = self.session.client
        jid = JID(self.session.sender or client.boundjid.full)
        if jid.full in self._disco_done:
            return
        self._disco_done.add(jid.full)
        disco = client.plugin["xep_0030"]
        await disco.add_feature(COMMANDS_NS, jid=jid)
        await disco.add_identity(
            "automation", "command-list", "Commands", node=COMMANDS_NS, jid=jid
        )
        for node, name in NODES.items():
            await disco.add_item(jid=jid.full, name=name, node=COMMANDS_NS, subnode=node, ijid=jid)
            await disco.add_identity("automation", "command-node", name, node=node, jid=jid)
            await disco.add_feature(COMMANDS_NS, node=node, jid=jid)
            await disco.add_feature("jabber:x:data", node=node, jid=jid)

    def _on_command(self, iq: Any) -> None:
        """An XEP-0050 request: start a command (a form), take a submitted form, or cancel."""
        if iq["type"] != "set":
            return
        manager = self.manager
        sender = iq["from"]
        jid = self._from_user(sender, iq["to"])
        command = iq.xml.find(f"{{{COMMANDS_NS}}}command")
        node = command.get("node", "") if command is not None else ""
        if manager is None or jid is None or command is None or node not in NODES:
            self._iq_error(iq, "item-not-found", "No such command.")
            return
        verdict = manager.admit_command(jid)
        if verdict is None or verdict:
            self._iq_error(iq, "resource-constraint", verdict or "Too many commands.", "wait")
            return
        self.stats.adhoc += 1
        action = command.get("action") or "execute"
        sid = command.get("sessionid")
        now = self.clock()
        if action == "cancel":
            if sid:
                self._sessions.take(sid, jid, now)
            self._iq_result(iq, command_element(node, sid or "", "canceled"))
            return
        if sid is None:
            self._start_command(iq, manager, jid, node, now)
            return
        session = self._sessions.take(sid, jid, now)
        values = form_values(command)
        if session is None or session.node != node or values is None:
            self._iq_error(iq, "bad-request", "This form expired, or was answered: start again.")
            return
        if node == "unwatch":
            text, kind = manager.remove_ids(jid, chosen_ids(values, session.offered)), "info"
        else:
            try:
                text, kind = manager.execute(jid, command_from_form(node, values)), "info"
            except CommandError as exc:
                text, kind = str(exc), "error"
        self._iq_result(iq, command_element(node, sid, "completed", note=(kind, text)))

    def _start_command(
        self, iq: Any, manager: WatchManager, jid: str, node: str, now: float
    ) -> None:
        if node == "list":
            text = manager.execute(jid, ListCommand())
            self._iq_result(iq, command_element(node, "-", "completed", note=("info", text)))
            return
        offered: tuple[int, ...] = ()
        if node == "watch":
            rooms = self._rooms()
            known = sorted({*rooms.wikis, *rooms.routing.wikis})
            form = watch_form([w for w in known if _may_watch(self._access(w), jid)])
        elif node == "unwatch":
            subs = manager.index.of(jid)
            if not subs:
                note = ("info", "You watch nothing.")
                self._iq_result(iq, command_element(node, "-", "completed", note=note))
                return
            offered = tuple(sub.id for sub in subs)
            form = unwatch_form(subs)
        else:
            form = mute_form()
        sid = self._sessions.open(CommandSession(jid, node, now, offered))
        self._iq_result(iq, command_element(node, sid, "executing", form=form))

    def _iq_result(self, iq: Any, payload: ET.Element) -> None:
        reply = iq.reply(clear=True)
        reply.xml.append(payload)
        self._enqueue(str(reply))  # through the outbox, like everything we write

    def _iq_error(self, iq: Any, condition: str, text: str, etype: str = "cancel") -> None:
        reply = iq.reply(clear=True)
        reply["type"] = "error"
        reply["error"]["type"] = etype
        reply["error"]["condition"] = condition
        reply["error"]["text"] = text
        self._enqueue(str(reply))

    # -- metrics ----------------------------------------------------------------------------

    def collect_metrics(self) -> Iterator[Metric]:
        """The watch counters, for /metrics (no JID, no subscription ever appears)."""
        prefix = "udp2xmpp_watch"
        stats = self.stats
        manager = self.manager
        yield CounterMetricFamily(
            f"{prefix}_notifications", "Changes sent to a watcher one by one.",
            value=stats.notifications,
        )  # fmt: skip
        yield CounterMetricFamily(
            f"{prefix}_digests", "Digest messages sent (changes gathered over the rate limit).",
            value=stats.digests,
        )  # fmt: skip
        yield CounterMetricFamily(f"{prefix}_replies", "Replies to commands.", value=stats.replies)
        yield CounterMetricFamily(
            f"{prefix}_digest_errors",
            "Digests that could not be built (logged and dropped; the others still go).",
            value=stats.digest_errors,
        )
        dropped = CounterMetricFamily(
            f"{prefix}_dropped",
            "Matching changes a watcher did not get, by reason.",
            labels=["reason"],
        )
        dropped.add_metric(["overflow"], stats.dropped_overflow)
        if manager is None:
            yield dropped
            return
        limits = manager.limiter.stats
        mstats = manager.stats
        dropped.add_metric(["muted"], mstats.muted)
        dropped.add_metric(["daily_limit"], limits.over_volume)
        dropped.add_metric(["not_member"], mstats.not_member)
        yield dropped
        yield CounterMetricFamily(
            f"{prefix}_digested", "Changes put into digests.", value=limits.digested
        )
        yield CounterMetricFamily(
            f"{prefix}_commands", "Commands received (chat and ad-hoc).", value=mstats.commands
        )
        yield CounterMetricFamily(
            f"{prefix}_command_errors", "Commands not understood.", value=mstats.command_errors
        )
        yield CounterMetricFamily(
            f"{prefix}_commands_limited", "Commands ignored: the sender was over its rate.",
            value=mstats.commands_limited,
        )  # fmt: skip
        yield CounterMetricFamily(
            f"{prefix}_bounces", "Notifications that came back as errors.", value=mstats.bounces
        )
        removed = CounterMetricFamily(
            f"{prefix}_removed", "Subscriptions removed, by reason.", labels=["reason"]
        )
        removed.add_metric(["bounced"], mstats.removed_bounced)
        removed.add_metric(["user"], mstats.removed - mstats.removed_bounced)
        yield removed
        yield CounterMetricFamily(
            f"{prefix}_jids_removed", "JIDs whose subscriptions were removed after bounces.",
            value=mstats.jids_removed_bounced,
        )  # fmt: skip
        yield GaugeMetricFamily(
            f"{prefix}_subscriptions", "Subscriptions in force.", value=len(manager.index)
        )
        yield GaugeMetricFamily(
            f"{prefix}_users", "JIDs with at least one subscription.", value=manager.index.jids
        )
        yield GaugeMetricFamily(
            f"{prefix}_queue_depth", "Notifications waiting to be sent.", value=len(self._queue)
        )


def _may_watch(access: WikiAccess, jid: str) -> bool:
    return access.allowed and (access.members is None or jid in access.members)


@functools.lru_cache(maxsize=1024)
def _access_of(spec: RoomSpec, outsiders: bool) -> WikiAccess:
    if not spec.members_only:
        return WikiAccess(outsiders=outsiders)
    members = frozenset(member.lower() for member in spec.members)
    return WikiAccess(members=members, outsiders=outsiders)
