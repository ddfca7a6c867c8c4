"""XMPP sink: per-room queues drained into MUC rooms over one client connection.

The only module that talks XMPP. It keeps, per room, a bounded queue of
changes, joins (and configures) the room before the first message, and
sends one groupchat message per change. Nothing accepted is lost to a
connection drop: every sent change stays "in flight" until the server
acknowledges it (XEP-0198); a resumed stream resends what slixmpp holds,
a fresh session puts what is still in flight back at the head of its
room's queue. Clients drop the rare duplicate by the stable id.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout, PresenceError
from slixmpp.stanza import Message

from xmlrc_emitter.wire import RecentChange

from ..config import RoomSettings, XmppSettings
from ..route import RoomSpec
from .stanza import build_message

log = logging.getLogger(__name__)

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


@dataclass
class SinkStats:
    published: int = 0
    resent: int = 0
    dropped_overflow: int = 0
    joins: int = 0
    join_failures: int = 0
    connections: int = 0


@dataclass(eq=False)
class RoomChannel:
    """One room: its queue and whether we are in it on the current session."""

    spec: RoomSpec
    queue: deque[RecentChange] = field(default_factory=deque)
    joined: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def jid(self) -> str:
        return self.spec.jid


class XmppSink:
    """Publishes changes into rooms; owns the XMPP client and one task per room."""

    def __init__(
        self,
        xmpp: XmppSettings,
        rooms: RoomSettings,
        *,
        queue_size: int = 100_000,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = xmpp
        self.room_settings = rooms
        self.queue_size = queue_size
        self.stats = SinkStats()
        self._on_state = on_state or (lambda state: None)
        self._channels: dict[str, RoomChannel] = {}
        self._inflight: dict[int, tuple[Message, RoomChannel, RecentChange]] = {}
        self._online = asyncio.Event()
        self._stopping = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._backoff = 1.0
        self.client = self._make_client()

    # -- public ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect; returns at once, the connection is made (and remade) in the background."""
        self._connect()

    def submit(self, room: RoomSpec, change: RecentChange) -> None:
        """Queue `change` for `room` (never blocks; past the bound the oldest is dropped)."""
        channel = self._channels.get(room.jid)
        if channel is None:
            channel = self._open_channel(room)
        if len(channel.queue) >= self.queue_size:
            channel.queue.popleft()
            self.stats.dropped_overflow += 1
            log.warning("queue of %s full: dropped its oldest change", room.jid)
        channel.queue.append(change)
        channel.wake.set()

    def open_room(self, room: RoomSpec) -> None:
        """Join (and create) `room` now, before its first change arrives."""
        if room.jid not in self._channels:
            self._open_channel(room).wake.set()

    def joined_rooms(self) -> list[str]:
        return [jid for jid, channel in self._channels.items() if channel.joined]

    @property
    def online(self) -> bool:
        return self._online.is_set()

    def queue_depths(self) -> dict[str, int]:
        return {jid: len(ch.queue) for jid, ch in self._channels.items()}

    @property
    def pending(self) -> int:
        """Changes queued or sent but not yet acknowledged by the server."""
        return sum(len(ch.queue) for ch in self._channels.values()) + len(self._inflight)

    async def wait_online(self, timeout: float) -> None:
        await asyncio.wait_for(self._online.wait(), timeout)

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued change is sent and acknowledged, or `timeout` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pending and loop.time() < deadline:
            if self._online.is_set() and self._inflight:
                self.client.plugin["xep_0198"].request_ack()
            await asyncio.sleep(0.05)
        return self.pending == 0

    async def stop(self) -> None:
        """Leave the rooms, disconnect, and cancel every task this sink owns."""
        self._stopping = True
        tasks = [ch.task for ch in self._channels.values() if ch.task is not None]
        if self._reconnect_task is not None:
            tasks.append(self._reconnect_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._online.is_set():
            for channel in self._channels.values():
                if channel.joined:
                    self.client.plugin["xep_0045"].leave_muc(
                        slixmpp.JID(channel.jid), self.room_settings.nick
                    )
            self._online.clear()
            try:
                await asyncio.wait_for(self.client.disconnect(wait=2.0), 5)
            except TimeoutError:
                log.warning("disconnect timed out")
        else:
            self.client.abort()

    # -- connection -----------------------------------------------------------------

    def _make_client(self) -> slixmpp.ClientXMPP:
        client = slixmpp.ClientXMPP(self.settings.jid, self.settings.password)
        for plugin in ("xep_0030", "xep_0004", "xep_0045", "xep_0359"):
            client.register_plugin(plugin)
        client.register_plugin("xep_0198", {"window": 50})
        client.register_plugin("xep_0199", {"keepalive": True, "interval": 60, "timeout": 20})
        client.enable_direct_tls = False  # STARTTLS on the c2s port
        client.enable_starttls = True
        if self.settings.ca_file:
            client.ca_certs = Path(self.settings.ca_file)
        if not self.settings.verify_tls:
            client.ssl_context.check_hostname = False
            client.ssl_context.verify_mode = ssl.CERT_NONE
        client.add_event_handler("session_start", self._on_session_start)
        client.add_event_handler("session_resumed", self._on_session_resumed)
        client.add_event_handler("disconnected", self._on_disconnected)
        client.add_event_handler("connection_failed", self._on_connection_failed)
        client.add_event_handler("failed_auth", self._on_failed_auth)
        client.add_event_handler("stanza_acked", self._on_stanza_acked)
        client.add_event_handler("groupchat_presence", self._on_room_presence)
        return client

    def _connect(self) -> None:
        host = self.settings.host or slixmpp.JID(self.settings.jid).domain
        self._on_state("connecting")
        self.client.connect(host, self.settings.port)

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

    def _on_session_start(self, _event: Any) -> None:
        self.stats.connections += 1
        self._backoff = 1.0
        # A fresh session: the server forgot everything unacknowledged. Put it back
        # at the head of its queue, oldest first, to go out again after the rejoin.
        requeue = list(self._inflight.values())
        self._inflight.clear()
        for _stanza, channel, change in reversed(requeue):
            channel.queue.appendleft(change)
        self.stats.resent += len(requeue)
        if requeue:
            log.info("resending %d changes the server had not acknowledged", len(requeue))
        for channel in self._channels.values():
            channel.joined = False
            channel.wake.set()
        self.client.send_presence()
        self._online.set()
        self._on_state("online")
        log.info("connected as %s", self.client.boundjid)

    def _on_session_resumed(self, _event: Any) -> None:
        # slixmpp resent its unacknowledged stanzas; room membership survived.
        self._backoff = 1.0
        self._online.set()
        self._on_state("online")
        for channel in self._channels.values():
            channel.wake.set()
        log.info("stream resumed")

    def _on_disconnected(self, _event: Any) -> None:
        self._online.clear()
        self._on_state("disconnected")
        if not self._stopping:
            log.warning("disconnected from the XMPP server")
            self._schedule_reconnect()

    def _on_connection_failed(self, event: Any) -> None:
        self._online.clear()
        self._on_state("disconnected")
        log.warning("cannot connect to the XMPP server: %s", event)
        self._schedule_reconnect()

    def _on_failed_auth(self, _event: Any) -> None:
        log.error("the XMPP server refused the password for %s", self.settings.jid)

    def _on_stanza_acked(self, stanza: Any) -> None:
        self._inflight.pop(id(stanza), None)

    def _on_room_presence(self, presence: Any) -> None:
        # Kicked, or the room went away: rejoin before sending more.
        if presence["type"] != "unavailable":
            return
        room = presence["from"].bare
        channel = self._channels.get(room)
        if channel is not None and presence["from"].resource == self.room_settings.nick:
            log.warning("left %s (kicked or room destroyed): rejoining", room)
            channel.joined = False
            channel.wake.set()

    # -- rooms ----------------------------------------------------------------------

    def _open_channel(self, room: RoomSpec) -> RoomChannel:
        channel = RoomChannel(spec=room)
        self._channels[room.jid] = channel
        channel.task = asyncio.get_running_loop().create_task(
            self._run_channel(channel), name=f"room {room.jid}"
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
        while True:
            if not self._online.is_set():
                await self._online.wait()
                continue
            if not channel.joined:
                try:
                    await self._join(channel)
                    retry = 1.0
                except (PresenceError, IqError, IqTimeout, TimeoutError) as exc:
                    self.stats.join_failures += 1
                    log.warning("cannot join %s: %s; retrying in %.0f s", channel.jid, exc, retry)
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, 60.0)
                continue
            if not channel.queue:
                channel.wake.clear()
                await channel.wake.wait()
                continue
            sent = 0
            while channel.queue and channel.joined and self._online.is_set():
                change = channel.queue.popleft()
                self._send(channel, change)
                sent += 1
                if sent % 64 == 0:
                    await asyncio.sleep(0)  # let intake and acks run
            await asyncio.sleep(0)

    async def _join(self, channel: RoomChannel) -> None:
        muc = self.client.plugin["xep_0045"]
        await muc.join_muc_wait(
            slixmpp.JID(channel.jid), self.room_settings.nick, maxstanzas=0, timeout=20
        )
        self.stats.joins += 1
        await self._configure(channel)
        channel.joined = True
        log.info("joined %s", channel.jid)

    async def _configure(self, channel: RoomChannel) -> None:
        muc = self.client.plugin["xep_0045"]
        wanted = dict(ROOM_CONFIG)
        wanted["muc#roomconfig_roomdesc"] = channel.spec.description
        wanted["muc#roomconfig_roomname"] = channel.spec.title
        wanted["muc#roomconfig_membersonly"] = channel.spec.members_only
        try:
            form = await muc.get_room_config(channel.jid, timeout=20)
        except (IqError, IqTimeout, ValueError) as exc:
            log.warning(
                "cannot read the configuration of %s (not its owner?): %s", channel.jid, exc
            )
            return
        submit = self.client.plugin["xep_0004"].make_form(ftype="submit")
        fields = form.get_fields()
        for var, value in wanted.items():
            if var in fields:
                text = ("1" if value else "0") if isinstance(value, bool) else str(value)
                submit.add_field(var=var, value=text)
        if "FORM_TYPE" in fields:
            submit.add_field(var="FORM_TYPE", value="http://jabber.org/protocol/muc#roomconfig")
        try:
            await muc.set_room_config(channel.jid, submit, timeout=20)
            for member in channel.spec.members:
                await muc.set_affiliation(
                    channel.jid, "member", jid=slixmpp.JID(member), timeout=20
                )
        except (IqError, IqTimeout) as exc:
            log.warning("cannot configure %s: %s", channel.jid, exc)

    def _send(self, channel: RoomChannel, change: RecentChange) -> None:
        element: ET.Element = build_message(change, channel.jid)
        stanza = Message(self.client, xml=element)
        if self.client.plugin["xep_0198"].enabled_out:
            # Only a stream with acknowledgements can tell us what arrived.
            self._inflight[id(stanza)] = (stanza, channel, change)
        self.client.send(stanza)
        self.stats.published += 1
