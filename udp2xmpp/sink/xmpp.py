"""`XmppLink`: the room sink's `Link` on a real stream (`xmlrc.xmpp`).

The only module of the sink that talks XMPP. Entering a room is where the
bridge holds its promises: it joins, then checks that it **owns** the room
and that the room is configured as required (moderated, so nobody else can
post changes; members-only for a private wiki), configures it and reads the
configuration back. A room that fails any of this is refused (`RoomRefused`):
the bridge does not publish there. A nick held by another occupant is its own,
alarming, refusal (``nick_taken``): someone may be impersonating the bridge.

In a bridge pair (``standby_nick`` set) the publisher's nick is the lock: the
room lets one occupant hold a nick, so one bridge publishes. A bridge that finds
the nick taken stands by under its own nick, owner all the same; it reads what
the publisher posts (the sink forgets those changes) and hears when it leaves,
then leaves and rejoins under the publisher's nick (`take_over`), and checks the
room's archive for what it may have missed (`published_recently`).

A publisher whose machine vanished keeps its nick until the server notices,
which can take many minutes: the standby pings it through the room
(`publisher_answers`) and, when it stops answering, bans its account from the
room (`fence`): the server removes it at once, and the nick is free. The new
publisher makes the bridges of the pair owners again when it configures the
room, so the old one can come back as the standby.

Only the first bridge of a pair (by JID order) creates rooms: on a cluster, two
joins of a new room through two nodes at once can make two rooms of one name.
The other waits for the room to exist, and creates it itself only after
`CREATION_GRACE` seconds (the first bridge may be down).
"""

from __future__ import annotations

import asyncio
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.xmlstream import NotConnectedError

from xmlrc.wire.rcxml import changes_in_message
from xmlrc.xmpp import JoinError, Occupancy, Outbox, PingResult, Session, muc
from xmlrc.xmpp.archive import query_page
from xmlrc.xmpp.selfping import self_ping

from ..config import DeliverySettings, settings_default
from ..route import RoomSpec
from .link import EnterFailed, LinkEvents, Role, RoomRefused, config_problems, wanted_config

__all__ = ["CREATION_GRACE", "SERVER_CHECK_TIMEOUT", "XmppLink", "self_ping"]

#: Seconds the second bridge of a pair waits for the first to create a room.
CREATION_GRACE = 30.0
#: Seconds to wait for the server's own answer once a room has not answered.
SERVER_CHECK_TIMEOUT = 5.0


class _NoEvents:
    def link_online(self, resumed: bool) -> None:
        pass

    def link_offline(self) -> None:
        pass

    def room_left(self, room: str) -> None:
        pass

    def message_refused(self, room: str, message_id: str, condition: str) -> None:
        pass

    def publisher_left(self, room: str) -> None:
        pass

    def published_by_peer(self, room: str, stable_ids: list[str]) -> None:
        pass


class XmppLink:
    """Rooms over one `Session`, written through its `Outbox` (see the module docstring)."""

    def __init__(
        self,
        session: Session,
        outbox: Outbox,
        nick: str,
        *,
        timeout: float,
        max_in_flight: int = settings_default(DeliverySettings, "max_iq_in_flight"),
        standby_nick: str | None = None,
        peers: tuple[str, ...] = (),
    ) -> None:
        """``standby_nick``: a bridge pair (the module docstring); ``peers``: the other
        bridges' bare JIDs, made owners of every room so that they can take over."""
        self.session = session
        self.outbox = outbox
        self.nick = nick
        self.standby_nick = standby_nick
        self.peers = peers
        self.timeout = timeout
        #: Our nick in each room we are in (the publisher's, or the standby one).
        self._nicks: dict[str, str] = {}
        #: A pair: whether this bridge creates rooms (the first JID of the pair), and
        #: since when each missing room has been waited for.
        own = str(session.client.boundjid.bare).lower()
        self.creates_rooms = standby_nick is None or all(own < p.lower() for p in peers)
        self._awaited: dict[str, float] = {}
        #: A pair: the account behind the publisher's nick in each room (a standby
        #: is an owner, so it sees real JIDs), to fence it out when it stops answering.
        self._publisher_jids: dict[str, str] = {}
        self._events: LinkEvents = _NoEvents()
        #: Pings and room entries in flight at once: a farm of rooms must not
        #: flood the server with IQs whose answers then time out.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        client = session.client
        client.add_event_handler("presence", self._on_presence)
        client.add_event_handler("message_error", self._on_message_error)
        if standby_nick is not None:
            client.add_event_handler("message", self._on_groupchat)
        session.on_online(lambda resumed: self._events.link_online(resumed))
        session.on_offline(lambda: self._events.link_offline())

    def bind(self, events: LinkEvents) -> None:
        self._events = events

    @property
    def online(self) -> bool:
        # The socket can be gone a moment before the session notices (an abort).
        return self.session.online and self.session.client.transport is not None

    @property
    def sender(self) -> str | None:
        """Our occupant's full JID in component mode (it must name itself), else None."""
        sender = self.session.sender
        return f"{sender}/{self.nick}" if sender else None

    async def wait_online(self) -> None:
        while not self.online:
            await self.session.wait_online()
            if not self.online:  # the socket went and the session has not noticed yet
                await asyncio.sleep(0.05)

    def delay(self, size: int) -> float:
        return self.outbox.delay(size)

    def write(self, texts: list[str]) -> None:
        try:
            self.outbox.write(texts)
        except NotConnectedError as exc:
            raise ConnectionError("the XMPP stream is closed") from exc

    def drop(self, reason: str) -> None:
        self.session.drop(reason)

    async def server_answers(self) -> bool:
        # Asked after a room timed out: a live server answers in milliseconds, and a
        # dead one should not cost a second full timeout.
        return await self.session.server_answers(min(self.timeout, SERVER_CHECK_TIMEOUT))

    def leave(self, room: str) -> None:
        nick = self._nicks.pop(room, self.nick)
        muc.leave(self.session.client, room, nick, ifrom=self.sender)

    async def self_ping(self, room: str) -> PingResult:
        nick = self._nicks.get(room, self.nick)
        async with self._in_flight:  # the timeout starts when the ping is sent
            return await self_ping(
                self.session.client, f"{room}/{nick}", timeout=self.timeout, ifrom=self.sender
            )

    async def enter(self, room: RoomSpec) -> Role:
        """Join `room`, make sure it is ours and configured as required, or raise.

        In a pair, a room whose publisher's nick is taken is entered under the
        standby nick: "standby". Otherwise "active"."""
        async with self._in_flight:
            if not self.creates_rooms:
                await self._await_creation(room.jid)
            role: Role = "active"
            try:
                occupancy = await self._join(room.jid, self.nick)
            except RoomRefused:
                if self.standby_nick is None:
                    raise
                occupancy = await self._join(room.jid, self.standby_nick)
                role = "standby"
            if not occupancy.owner:
                if role == "standby":
                    # The active bridge makes its peers owners; until it has, wait.
                    self.leave(room.jid)
                    raise EnterFailed(
                        f"{room.jid}: standing by, but not an owner yet (the active "
                        "bridge makes the bridges of its pair owners)"
                    )
                raise RoomRefused(
                    room.jid,
                    "not_owner",
                    f"the bridge is {occupancy.affiliation}, not the owner (someone else "
                    "created the room first?)",
                )
            await self._configure(room, write=role == "active")
            return role

    async def _await_creation(self, room: str) -> None:
        """EnterFailed (try again later) while a room the first bridge of the pair
        should create does not exist yet, for up to `CREATION_GRACE` seconds."""
        try:
            await muc.room_info(self.session.client, room, timeout=self.timeout)
        except IqError as exc:
            if exc.iq["error"]["condition"] != "item-not-found":
                return  # it exists, or the service will not say: join and see
            loop = asyncio.get_running_loop()
            since = self._awaited.setdefault(room, loop.time())
            if loop.time() - since < CREATION_GRACE:
                raise EnterFailed(
                    f"{room} does not exist yet: waiting for the first bridge of the pair "
                    "to create it"
                ) from None
            return  # the first bridge is not coming: create it ourselves
        except IqTimeout:
            raise EnterFailed(f"no answer about {room}") from None
        self._awaited.pop(room, None)

    async def take_over(self, room: RoomSpec) -> bool:
        """Publish in a room we stand by in: rejoin under the publisher's nick. False
        when another bridge got it first (we stand by again); raises as `enter`."""
        async with self._in_flight:
            standby = self._nicks.pop(room.jid, self.standby_nick or "")
            muc.leave(self.session.client, room.jid, standby, ifrom=self.sender)
            try:
                occupancy = await self._join(room.jid, self.nick)
            except RoomRefused:
                assert self.standby_nick is not None
                await self._join(room.jid, self.standby_nick)
                return False
            if not occupancy.owner:
                raise RoomRefused(
                    room.jid, "not_owner", f"the bridge is {occupancy.affiliation} after all"
                )
            await self._configure(room, write=True)
            return True

    async def published_recently(self, room: str, limit: int) -> list[str]:
        """The stable ids of the publisher's last `limit` or so messages in `room`'s
        archive, oldest first; none when the room keeps no archive."""
        client = self.session.client
        pages: list[list[str]] = []
        before, seen = "", 0
        try:
            while seen < limit:
                page = await query_page(
                    client, room, timeout=self.timeout, page_size=100, before=before
                )
                ids = [
                    change.stable_id
                    for stored in page.messages
                    if stored.message.get("from", "").endswith(f"/{self.nick}")
                    for change in changes_in_message(stored.message)
                ]
                pages.append(ids)
                seen += len(page.messages)
                if page.complete or not page.messages or page.messages[0].archive_id is None:
                    break
                before = page.messages[0].archive_id
        except IqError:
            return []  # no archive here: what we read live is all we know
        except IqTimeout:
            raise EnterFailed(f"no answer from the archive of {room}") from None
        return [stable_id for ids in reversed(pages) for stable_id in ids]

    async def publisher_answers(self, room: str, timeout: float) -> bool:
        """Whether the publisher's occupant answers a ping through the room within
        `timeout` seconds (an error is an answer too)."""
        client = self.session.client
        iq = client.make_iq_get(queryxmlns=None, ito=f"{room}/{self.nick}", ifrom=self.sender)
        iq.enable("ping")
        async with self._in_flight:
            try:
                await iq.send(timeout=timeout)
            except IqTimeout:
                return False
            except IqError as exc:
                if exc.iq["error"]["condition"] == "item-not-found":
                    self._events.publisher_left(room)  # already gone
        return True

    async def fence(self, room: str) -> bool:
        """Ban the unanswering publisher's account from `room` (the server removes its
        occupant, freeing the nick); False if we cannot tell whom, or may not."""
        jid = self._publisher_jids.get(room) or (self.peers[0] if len(self.peers) == 1 else None)
        if jid is None:
            return False
        try:
            async with self._in_flight:
                await muc.set_affiliation(
                    self.session.client,
                    room,
                    jid,
                    "outcast",
                    timeout=self.timeout,
                    ifrom=self.sender,
                )
        except (IqError, IqTimeout):
            return False
        return True

    async def _join(self, room: str, nick: str) -> Occupancy:
        client = self.session.client
        try:
            occupancy = await muc.join(client, room, nick, timeout=self.timeout, ifrom=self.sender)
        except JoinError as exc:
            if exc.nick_taken:
                raise RoomRefused(
                    room,
                    "nick_taken",
                    f"another occupant holds the bridge's nick {nick!r}: "
                    "someone may be impersonating the bridge",
                ) from None
            raise EnterFailed(str(exc)) from None
        except TimeoutError:
            raise EnterFailed(f"no answer joining {room}") from None
        self._nicks[room] = nick
        # Our own messages come back from the room; the fast path drops them unparsed.
        # A standby reads the publisher's instead.
        publisher = f"{room}/{self.nick}"
        if nick == self.nick:
            client.reflected_from.add(publisher)
        else:
            client.reflected_from.discard(publisher)
        return occupancy

    async def reconfigure(self, room: RoomSpec) -> None:
        async with self._in_flight:
            await self._configure(room, write=self._nicks.get(room.jid) == self.nick)

    async def _configure(self, room: RoomSpec, *, write: bool = True) -> None:
        """Configure the room as required (``write``: the publisher does, a standby only
        checks) and read the configuration back."""
        client = self.session.client
        options: dict[str, Any] = {"timeout": self.timeout, "ifrom": self.sender}
        try:
            if write:
                fields = await muc.get_config(client, room.jid, **options)
                await muc.submit_config(
                    client, room.jid, wanted_config(room), known=fields, **options
                )
                for member in room.members:
                    await muc.set_affiliation(client, room.jid, member, "member", **options)
                for peer in self.peers:
                    await muc.set_affiliation(client, room.jid, peer, "owner", **options)
            problems = config_problems(room, await muc.get_config(client, room.jid, **options))
        except IqError as exc:
            condition = exc.iq["error"]["condition"]
            if condition in ("forbidden", "not-allowed", "not-authorized"):
                raise RoomRefused(
                    room.jid, "not_owner", f"the room refuses its configuration ({condition})"
                ) from None
            raise EnterFailed(f"cannot configure {room.jid}: {condition}") from None
        except IqTimeout:
            raise EnterFailed(f"no answer configuring {room.jid}") from None
        if problems:
            raise RoomRefused(room.jid, "misconfigured", "; ".join(problems))

    # -- events from the stream ---------------------------------------------------------

    def _on_presence(self, presence: Any) -> None:
        sender = presence["from"]
        room = str(sender.bare)
        mine = self._nicks.get(room)
        if mine is None:
            return
        _aff, _role, real_jid, codes = muc.occupant_item(presence.xml)
        if presence["type"] != "unavailable":
            if sender.resource == self.nick and mine != self.nick and real_jid:
                self._publisher_jids[room] = str(slixmpp.JID(real_jid).bare)
            return
        if 303 in codes:
            return  # a nick change, not a departure
        if sender.resource == mine:
            self._nicks.pop(room, None)
            self._events.room_left(room)
        elif sender.resource == self.nick:  # we stand by: the publisher went
            self._events.publisher_left(room)

    def _on_groupchat(self, message: Any) -> None:
        """A standby reads the publisher's changes: the sink forgets them."""
        sender = message["from"]
        room = str(sender.bare)
        if (
            message["type"] != "groupchat"
            or sender.resource != self.nick
            or self._nicks.get(room, self.nick) == self.nick
        ):
            return
        ids = [change.stable_id for change in changes_in_message(message.xml)]
        if ids:
            self._events.published_by_peer(room, ids)

    def _on_message_error(self, message: Any) -> None:
        self._events.message_refused(
            str(message["from"].bare), message["id"], message["error"]["condition"]
        )
