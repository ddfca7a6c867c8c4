"""XMPP sink: per-room queues drained into MUC rooms over one connection.

The only module that talks XMPP. Per room it keeps a bounded queue of
changes, joins (and configures) the room before the first message, and
sends one groupchat message per change, paced under a global stanza and
byte budget.

Nothing accepted is lost to a connection drop, a server restart or a kick.
Every change sent stays *unconfirmed* until an XEP-0410 self-ping of its
room comes back: the server handles one stream in order, so a ping answer
from the room proves every earlier message reached it (and its archive).
If the answer says we are no longer in the room, or the connection goes,
the unconfirmed changes go back to the head of the room's queue and are
sent again after the rejoin; clients drop the rare duplicate by the stable
id. The same mechanism serves client mode (c2s with XEP-0198 resumption)
and XEP-0114 component mode, which has no stream management at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from xmlrc.wire import RecentChange

from ..config import RoomSettings, XmppSettings
from ..route import RoomSpec
from ..throttled_log import RateLimitedLog
from xmlrc.xmpp.outbox import Pacer
from .stanza import messages_text
from xmlrc.xmpp.fastpath import BridgeClient, BridgeComponent

log = logging.getLogger(__name__)

MUC_NS = "http://jabber.org/protocol/muc"
MUC_OWNER_NS = "http://jabber.org/protocol/muc#owner"
PING_NS = "urn:xmpp:ping"

#: Room configuration the bridge asks for; fields a server lacks are skipped.
ROOM_CONFIG: dict[str, Any] = {
    "muc#roomconfig_persistentroom": True,
    "muc#roomconfig_moderatedroom": True,  # only the bridge (owner) has voice
    "muc#roomconfig_publicroom": True,
    "muc#roomconfig_enablearchiving": True,  # Prosody's XEP-0313 switch
    "muc#roomconfig_enablelogging": True,
    "muc#roomconfig_changesubject": False,
    "muc#roomconfig_allowinvites": False,
    "muc#roomconfig_historylength": 50,
    "muc#roomconfig_defaulthistorymessages": 0,
}

# Self-ping answers that mean "you are not in this room" (XEP-0410).
_NOT_JOINED = {"not-acceptable", "item-not-found", "not-allowed", "remote-server-not-found"}


class JoinError(Exception):
    """The room refused us (the condition is in the message)."""


@dataclass
class SinkStats:
    published: int = 0
    confirmed: int = 0
    resent: int = 0
    dropped_overflow: int = 0
    #: Changes a room refused for good (an error other than "you are not in the room").
    dropped_refused: int = 0
    joins: int = 0
    join_failures: int = 0
    connections: int = 0
    self_ping_failures: int = 0


@dataclass(eq=False)
class RoomChannel:
    """One room: its queue, what was sent but not confirmed, and whether we are in it."""

    spec: RoomSpec
    queue: deque[RecentChange] = field(default_factory=deque)
    #: Sent but not yet confirmed, with the sequence number each went out with.
    unconfirmed: deque[tuple[int, RecentChange]] = field(default_factory=deque)
    sent_seq: int = 0
    joined: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent_since_ping: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when a self-ping answer confirmed something (room for more in flight).
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def jid(self) -> str:
        return self.spec.jid

    def requeue_unconfirmed(self) -> int:
        """Put what was sent but never confirmed back at the head, oldest first."""
        count = len(self.unconfirmed)
        while self.unconfirmed:
            self.queue.appendleft(self.unconfirmed.pop()[1])
        self.confirmed.set()  # nothing in flight any more: a waiting sender may go on
        return count

    def confirm_through(self, seq: int) -> int:
        """Everything sent up to `seq` reached the room; returns how many."""
        count = 0
        while self.unconfirmed and self.unconfirmed[0][0] <= seq:
            self.unconfirmed.popleft()
            count += 1
        return count

    def take_unconfirmed(self, message_id: str) -> list[RecentChange]:
        """Remove and return the unconfirmed changes a message carried (errors only).

        A message id is a change's stable id, or ``first-id+count`` for a
        message carrying several changes (sent together, so adjacent here).
        """
        first, plus, count_text = message_id.rpartition("+")
        if plus and count_text.isdigit():
            stable_id, count = first, int(count_text)
        else:
            stable_id, count = message_id, 1
        for index, (_seq, change) in enumerate(self.unconfirmed):
            if change.stable_id == stable_id:
                taken = [self.unconfirmed[index + n][1] for n in range(count)
                         if index + n < len(self.unconfirmed)]  # fmt: skip
                for _ in taken:
                    del self.unconfirmed[index]
                return taken
        return []


class XmppSink:
    """Publishes changes into rooms; owns the XMPP connection and the room tasks."""

    def __init__(
        self,
        xmpp: XmppSettings,
        rooms: RoomSettings,
        *,
        queue_size: int = 100_000,
        max_stanzas_per_second: float = 0.0,
        max_bytes_per_second: float = 0.0,
        max_unconfirmed: int = 1000,
        changes_per_stanza: int = 1,
        on_state: Callable[[str], None] | None = None,
        on_published: Callable[[RoomSpec, RecentChange], None] | None = None,
    ) -> None:
        self.settings = xmpp
        self.room_settings = rooms
        self.queue_size = queue_size
        self.max_unconfirmed = max_unconfirmed
        self.changes_per_stanza = changes_per_stanza
        self.stats = SinkStats()
        self.state = "disconnected"
        self._on_state = on_state or (lambda state: None)
        #: Called after each change is written to the stream (metrics hook; keep it cheap).
        self._on_published = on_published
        self._pacer = Pacer(max_stanzas_per_second, max_bytes_per_second)
        self._channels: dict[str, RoomChannel] = {}
        self._online = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._backoff = 1.0
        self._joins: dict[str, asyncio.Future[None]] = {}
        self._refused_log = RateLimitedLog(log)
        self._overflow_log = RateLimitedLog(log)
        self.component = xmpp.mode == "component"
        if self.component:
            self.sender: str | None = f"{xmpp.component_user}@{xmpp.jid}"
        else:
            self.sender = None
        self.client = self._make_client()

    # -- public ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect; returns at once, the connection is made (and remade) in the background."""
        self._connect()
        self._spawn(self._keepalive(), "xmpp keepalive")

    def submit(self, room: RoomSpec, change: RecentChange) -> None:
        """Queue `change` for `room` (never blocks; past the bound the oldest is dropped)."""
        channel = self._channels.get(room.jid)
        if channel is None:
            channel = self._open_channel(room)
        if len(channel.queue) >= self.queue_size:
            channel.queue.popleft()
            self.stats.dropped_overflow += 1
            self._overflow_log.warning("queue of %s full: dropped its oldest change", room.jid)
        channel.queue.append(change)
        channel.wake.set()

    def open_room(self, room: RoomSpec) -> None:
        """Join (and create) `room` now, before its first change arrives.

        For a room already open with other settings (a reload changed its title,
        description or membership), apply the new settings to it.
        """
        channel = self._channels.get(room.jid)
        if channel is None:
            self._open_channel(room).wake.set()
        elif channel.spec != room:
            channel.spec = room
            if channel.joined:
                self._spawn(self._configure(channel), f"reconfigure {room.jid}")

    def joined_rooms(self) -> list[str]:
        return [jid for jid, channel in self._channels.items() if channel.joined]

    @property
    def online(self) -> bool:
        return self._online.is_set()

    def queue_depths(self) -> dict[str, int]:
        return {jid: len(ch.queue) for jid, ch in self._channels.items()}

    @property
    def pending(self) -> int:
        """Changes queued, or sent but not yet confirmed."""
        return sum(len(ch.queue) + len(ch.unconfirmed) for ch in self._channels.values())

    async def wait_online(self, timeout: float) -> None:
        await asyncio.wait_for(self._online.wait(), timeout)

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued change is sent and confirmed, or `timeout` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pending and loop.time() < deadline:  # noqa: ASYNC110 - polls several rooms
            await asyncio.sleep(0.02)
        return self.pending == 0

    async def stop(self) -> None:
        """Leave the rooms, disconnect, and cancel every task this sink owns."""
        self._stopping = True
        tasks = list(self._tasks)
        for channel in self._channels.values():
            tasks.extend(channel.tasks)
        if self._reconnect_task is not None:
            tasks.append(self._reconnect_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._online.is_set():
            for channel in self._channels.values():
                if channel.joined:
                    self._presence(channel.jid, ptype="unavailable")
            self._online.clear()
            try:
                await asyncio.wait_for(self.client.disconnect(wait=2.0), 5)
            except TimeoutError:
                log.warning("disconnect timed out")
        self.client.abort()
        self._set_state("stopped")

    # -- connection -----------------------------------------------------------------

    def _make_client(self) -> BridgeClient | BridgeComponent:
        settings = self.settings
        client: BridgeClient | BridgeComponent
        if self.component:
            client = BridgeComponent(
                settings.jid, settings.password, settings.host or "127.0.0.1", settings.port
            )
        else:
            client = BridgeClient(settings.jid, settings.password)
            # Stream resumption keeps room membership across a short network blip.
            client.register_plugin("xep_0198", {"window": 100})
            client.enable_direct_tls = False  # STARTTLS on the c2s port
            client.enable_starttls = True
            if settings.ca_file:
                client.ca_certs = Path(settings.ca_file)
            if not settings.verify_tls:
                client.ssl_context.check_hostname = False
                client.ssl_context.verify_mode = ssl.CERT_NONE
            client.debounce_acks(0.05)
            client.add_event_handler("session_resumed", self._on_session_resumed)
            client.add_event_handler("failed_auth", self._on_failed_auth)
        client.register_plugin("xep_0004")
        client.register_plugin("xep_0199", {"keepalive": False})
        client.add_event_handler("session_start", self._on_session_start)
        client.add_event_handler("disconnected", self._on_disconnected)
        client.add_event_handler("connection_failed", self._on_connection_failed)
        client.add_event_handler("presence", self._on_presence)
        client.add_event_handler("message_error", self._on_message_error)
        return client

    def _connect(self) -> None:
        self._set_state("connecting")
        if self.component:
            self.client.connect()
        else:
            host = self.settings.host or slixmpp.JID(self.settings.jid).domain
            self.client.connect(host, self.settings.port)

    def _set_state(self, state: str) -> None:
        self.state = state
        self._on_state(state)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule_reconnect(self) -> None:
        if self._stopping or (self._reconnect_task and not self._reconnect_task.done()):
            return
        self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = self._backoff * random.uniform(0.5, 1.5)  # jitter: many bridges, one server
        self._backoff = min(self._backoff * 2, 60.0)
        log.info("reconnecting in %.1f s", delay)
        await asyncio.sleep(delay)
        if not self._stopping:
            self._connect()

    def _lost(self) -> None:
        """The connection is gone: nothing unconfirmed may be trusted to have arrived."""
        self._online.clear()
        for channel in self._channels.values():
            channel.joined = False
            self.stats.resent += channel.requeue_unconfirmed()
            channel.wake.set()
        for future in self._joins.values():
            if not future.done():
                future.set_exception(JoinError("connection lost"))
        self._joins.clear()

    def _on_session_start(self, _event: Any) -> None:
        self.stats.connections += 1
        self._backoff = 1.0
        self._lost()  # a fresh session: rooms must be rejoined, unconfirmed resent
        if not self.component:
            self.client.send_presence()
        self._online.set()
        self._set_state("online")
        log.info("connected as %s", self.sender or self.client.boundjid)

    def _on_session_resumed(self, _event: Any) -> None:
        # XEP-0198 resumed the stream: slixmpp resent what the server had not
        # acknowledged and our room membership survived.
        self._backoff = 1.0
        self._online.set()
        self._set_state("online")
        for channel in self._channels.values():
            channel.wake.set()
        log.info("stream resumed")

    def _on_disconnected(self, _event: Any) -> None:
        self._lost()
        if not self._stopping:
            self._set_state("disconnected")
            log.warning("disconnected from the XMPP server")
            self._schedule_reconnect()

    def _on_connection_failed(self, event: Any) -> None:
        # slixmpp would retry on its own schedule (no jitter, up to 5 minutes);
        # stop its attempt so there is only ever one, ours.
        self.client.cancel_connection_attempt()
        self._lost()
        self._set_state("disconnected")
        log.warning("cannot connect to the XMPP server: %s", event)
        self._schedule_reconnect()

    def _on_failed_auth(self, _event: Any) -> None:
        log.error("the XMPP server refused the password for %s", self.settings.jid)

    async def _keepalive(self) -> None:
        """Ping the server when idle, so a silently dead connection is noticed."""
        while True:
            await asyncio.sleep(self.settings.self_ping_interval)
            if not self._online.is_set():
                continue
            try:
                await self._ping(slixmpp.JID(self.client.boundjid.domain), server=True)
            except IqTimeout:
                log.warning("the server did not answer a ping: reconnecting")
                self.client.abort()
            except IqError:
                pass  # an answer, even an error, proves the link is alive

    # -- rooms ----------------------------------------------------------------------

    def _open_channel(self, room: RoomSpec) -> RoomChannel:
        channel = RoomChannel(spec=room)
        self._channels[room.jid] = channel
        loop = asyncio.get_running_loop()
        channel.tasks.append(loop.create_task(self._run_channel(channel), name=f"room {room.jid}"))
        channel.tasks.append(
            loop.create_task(self._confirm_loop(channel), name=f"confirm {room.jid}")
        )
        return channel

    async def _run_channel(self, channel: RoomChannel) -> None:
        while True:
            try:
                await self._drain_channel(channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not silence a room for good
                log.exception("room task for %s failed; restarting it", channel.jid)
                await asyncio.sleep(1.0)

    async def _drain_channel(self, channel: RoomChannel) -> None:
        retry = 1.0
        loop = asyncio.get_running_loop()
        while True:
            if not self._online.is_set():
                await self._online.wait()
                continue
            if not channel.joined:
                try:
                    await self._join(channel)
                    retry = 1.0
                except (JoinError, IqError, IqTimeout, TimeoutError) as exc:
                    self.stats.join_failures += 1
                    log.warning("cannot join %s: %s; retrying in %.0f s", channel.jid, exc, retry)
                    await asyncio.sleep(retry * random.uniform(0.5, 1.5))
                    retry = min(retry * 2, 60.0)
                continue
            if not channel.queue:
                channel.wake.clear()
                await channel.wake.wait()
                continue
            # Under load, write what has queued up as one batch: one TLS record and
            # one system call for many stanzas. At low rates a batch is one change.
            room_for = self.max_unconfirmed - len(channel.unconfirmed)
            if room_for <= 0:  # far enough ahead of the server: wait for a confirmation
                channel.confirmed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(channel.confirmed.wait(), self.settings.ping_timeout)
                continue
            batch: list[str] = []
            group: list[RecentChange] = []
            wait = 0.0
            taken = 0
            while channel.queue and taken < min(_BATCH, room_for):
                change = channel.queue[0]
                wait = self._pacer.delay(_size_estimate(change), loop.time())
                if wait:
                    break
                channel.queue.popleft()
                taken += 1
                group.append(change)
                # Several changes share a stanza only when they queued up anyway.
                if len(group) >= self.changes_per_stanza or not channel.queue:
                    batch.append(self._prepare(channel, group))
                    group = []
            if group:
                batch.append(self._prepare(channel, group))
            if batch:
                self.client.send_texts(batch)
                channel.sent_since_ping.set()
            await asyncio.sleep(wait)  # also lets intake, acks and other rooms run

    async def _confirm_loop(self, channel: RoomChannel) -> None:
        """Confirm sent changes with self-pings; notice when we are out of the room."""
        interval = self.settings.self_ping_interval
        while True:
            # Idle rooms are still pinged now and then (XEP-0410).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(channel.sent_since_ping.wait(), interval)
            if not (channel.joined and self._online.is_set()):
                channel.sent_since_ping.clear()
                await asyncio.sleep(0.05)
                continue
            channel.sent_since_ping.clear()
            mark = channel.sent_seq
            try:
                await self._ping(slixmpp.JID(f"{channel.jid}/{self.room_settings.nick}"))
            except IqTimeout:
                self.stats.self_ping_failures += 1
                log.warning("no answer to a self-ping of %s: reconnecting", channel.jid)
                self.client.abort()
                continue
            except IqError as exc:
                condition = exc.iq["error"]["condition"]
                if condition in _NOT_JOINED:
                    self.stats.self_ping_failures += 1
                    log.warning("no longer in %s (%s): rejoining", channel.jid, condition)
                    channel.joined = False
                    self.stats.resent += channel.requeue_unconfirmed()
                    channel.wake.set()
                    continue
                # Any other error comes from the room on our behalf: we are in it.
            except JoinError:
                continue  # the connection went while we waited; _lost() requeued
            self.stats.confirmed += channel.confirm_through(mark)
            channel.confirmed.set()
            # One ping covers everything sent meanwhile; a fifth of a second keeps
            # pings rare under a steady stream and confirmation prompt enough.
            await asyncio.sleep(0.2)

    async def _ping(self, jid: slixmpp.JID, *, server: bool = False) -> None:
        iq = self.client.make_iq_get(queryxmlns=None, ito=jid, ifrom=self._from_jid())
        iq.enable("ping")
        try:
            await iq.send(timeout=self.settings.ping_timeout)
        except IqError as exc:
            if server and exc.iq["error"]["condition"] != "remote-server-not-found":
                return
            raise

    def _from_jid(self) -> slixmpp.JID | None:
        return slixmpp.JID(f"{self.sender}/{self.room_settings.nick}") if self.sender else None

    def _presence(self, room: str, *, ptype: str | None = None, join: bool = False) -> None:
        presence = self.client.make_presence(
            pto=slixmpp.JID(f"{room}/{self.room_settings.nick}"), pfrom=self._from_jid()
        )
        if ptype:
            presence["type"] = ptype
        if join:
            x = presence.xml.makeelement(f"{{{MUC_NS}}}x", {})
            x.append(x.makeelement(f"{{{MUC_NS}}}history", {"maxstanzas": "0"}))
            presence.xml.append(x)
        presence.send()

    def _on_presence(self, presence: Any) -> None:
        sender = presence["from"]
        room = str(sender.bare)
        channel = self._channels.get(room)
        if channel is None or sender.resource != self.room_settings.nick or self._stopping:
            return
        future = self._joins.get(room)
        ptype = presence["type"]
        if ptype == "error":
            if future is not None and not future.done():
                future.set_exception(JoinError(presence["error"]["condition"] or "error"))
        elif ptype == "unavailable":
            if channel.joined:
                log.warning("removed from %s (kicked or room destroyed): rejoining", room)
                channel.joined = False
                self.stats.resent += channel.requeue_unconfirmed()
                channel.wake.set()
        elif future is not None and not future.done():
            future.set_result(None)

    def _on_message_error(self, message: Any) -> None:
        # Errors arrive before the answer to the next self-ping (one stream, in
        # order), so a refused change is still among the unconfirmed.
        channel = self._channels.get(str(message["from"].bare))
        if channel is None:
            return
        changes = channel.take_unconfirmed(message["id"])
        if not changes:
            return
        condition = message["error"]["condition"]
        if condition in _NOT_JOINED:
            channel.queue.extendleft(reversed(changes))
            self.stats.resent += len(changes)
            if channel.joined:
                log.warning("%s says we are not in it (%s): rejoining", channel.jid, condition)
                channel.joined = False
                self.stats.resent += channel.requeue_unconfirmed()
                channel.wake.set()
        else:
            self.stats.dropped_refused += len(changes)
            self._refused_log.warning("%s refused %s: %s", channel.jid, message["id"], condition)

    async def _join(self, channel: RoomChannel) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._joins[channel.jid] = future
        self._presence(channel.jid, join=True)
        try:
            await asyncio.wait_for(future, self.settings.ping_timeout)
        finally:
            self._joins.pop(channel.jid, None)
        self.stats.joins += 1
        # Our own messages come back from the room; drop them unparsed.
        self.client.reflected_from.add(f"{channel.jid}/{self.room_settings.nick}")
        await self._configure(channel)
        channel.joined = True
        channel.sent_since_ping.set()
        log.info("joined %s", channel.jid)

    async def _configure(self, channel: RoomChannel) -> None:
        wanted = dict(ROOM_CONFIG)
        wanted["muc#roomconfig_roomdesc"] = channel.spec.description
        wanted["muc#roomconfig_roomname"] = channel.spec.title
        wanted["muc#roomconfig_membersonly"] = channel.spec.members_only
        wanted["muc#roomconfig_publicroom"] = not channel.spec.members_only  # keep it unlisted
        room = slixmpp.JID(channel.jid)
        ifrom = self._from_jid()
        try:
            result = await self.client.make_iq_get(MUC_OWNER_NS, ito=room, ifrom=ifrom).send(
                timeout=self.settings.ping_timeout
            )
        except (IqError, IqTimeout) as exc:
            log.warning("cannot read the configuration of %s (not its owner?): %s", room, exc)
            return
        fields = _form_vars(result)
        submit = self.client.plugin["xep_0004"].make_form(ftype="submit")
        if "FORM_TYPE" in fields:
            submit.add_field(var="FORM_TYPE", value="http://jabber.org/protocol/muc#roomconfig")
        for var, value in wanted.items():
            if var in fields:
                text = ("1" if value else "0") if isinstance(value, bool) else str(value)
                submit.add_field(var=var, value=text)
        iq = self.client.make_iq_set(ito=room, ifrom=ifrom)
        query = iq.xml.makeelement(f"{{{MUC_OWNER_NS}}}query", {})
        query.append(submit.xml)
        iq.xml.append(query)
        try:
            await iq.send(timeout=self.settings.ping_timeout)
            for member in channel.spec.members:
                await self._set_member(room, member)
        except (IqError, IqTimeout) as exc:
            log.warning("cannot configure %s: %s", room, exc)

    async def _set_member(self, room: slixmpp.JID, member: str) -> None:
        iq = self.client.make_iq_set(ito=room, ifrom=self._from_jid())
        admin = "http://jabber.org/protocol/muc#admin"
        query = iq.xml.makeelement(f"{{{admin}}}query", {})
        query.append(
            query.makeelement(f"{{{admin}}}item", {"jid": member, "affiliation": "member"})
        )
        iq.xml.append(query)
        await iq.send(timeout=self.settings.ping_timeout)

    def _prepare(self, channel: RoomChannel, changes: list[RecentChange]) -> str:
        """The message for one change (or a few), now counted as sent and unconfirmed."""
        text = messages_text(changes, channel.jid, sender=self._from_jid_text)
        channel.sent_seq += 1
        for change in changes:
            channel.unconfirmed.append((channel.sent_seq, change))
            self.stats.published += 1
            if self._on_published is not None:
                self._on_published(channel.spec, change)
        return text

    @property
    def _from_jid_text(self) -> str | None:
        return f"{self.sender}/{self.room_settings.nick}" if self.sender else None


#: Most stanzas written at once; bounds the time one room holds the loop.
_BATCH = 128


def _size_estimate(change: RecentChange) -> int:
    # Body and <rc> both carry title and comment; the rest is about 700 bytes.
    return 700 + 2 * (len(change.title) + len(change.comment)) + len(change.user)


def _form_vars(result: Any) -> set[str]:
    query = result.xml.find(f"{{{MUC_OWNER_NS}}}query")
    if query is None:
        return set()
    return {f.get("var", "") for f in query.iter("{jabber:x:data}field") if f.get("var")}
