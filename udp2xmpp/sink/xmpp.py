"""`XmppLink`: the room sink's `Link` on a real stream (`xmlrc.xmpp`).

The only module of the sink that talks XMPP. Entering a room is where the
bridge holds its promises: it joins, then checks that it **owns** the room
and that the room is configured as required (moderated, so nobody else can
post changes; members-only for a private wiki), configures it and reads the
configuration back. A room that fails any of this is refused (`RoomRefused`):
the bridge does not publish there. A nick held by another occupant is its own,
alarming, refusal (``nick_taken``): someone may be impersonating the bridge.
"""

from __future__ import annotations

import asyncio
from typing import Any

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.xmlstream import NotConnectedError

from xmlrc.xmpp import JoinError, Outbox, PingResult, Session, muc
from xmlrc.xmpp.selfping import self_ping

from ..config import DeliverySettings, settings_default
from ..route import RoomSpec
from .link import EnterFailed, LinkEvents, RoomRefused, config_problems, wanted_config

__all__ = ["XmppLink", "self_ping"]


class _NoEvents:
    def link_online(self, resumed: bool) -> None:
        pass

    def link_offline(self) -> None:
        pass

    def room_left(self, room: str) -> None:
        pass

    def message_refused(self, room: str, message_id: str, condition: str) -> None:
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
    ) -> None:
        self.session = session
        self.outbox = outbox
        self.nick = nick
        self.timeout = timeout
        self._events: LinkEvents = _NoEvents()
        #: Pings and room entries in flight at once: a farm of rooms must not
        #: flood the server with IQs whose answers then time out.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        client = session.client
        client.add_event_handler("presence", self._on_presence)
        client.add_event_handler("message_error", self._on_message_error)
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

    def leave(self, room: str) -> None:
        muc.leave(self.session.client, room, self.nick, ifrom=self.sender)

    async def self_ping(self, room: str) -> PingResult:
        async with self._in_flight:  # the timeout starts when the ping is sent
            return await self_ping(
                self.session.client, f"{room}/{self.nick}", timeout=self.timeout, ifrom=self.sender
            )

    async def enter(self, room: RoomSpec) -> None:
        """Join `room`, make sure it is ours and configured as required, or raise."""
        client = self.session.client
        async with self._in_flight:
            try:
                occupancy = await muc.join(
                    client, room.jid, self.nick, timeout=self.timeout, ifrom=self.sender
                )
            except JoinError as exc:
                if exc.nick_taken:
                    raise RoomRefused(
                        room.jid,
                        "nick_taken",
                        f"another occupant holds the bridge's nick {self.nick!r}: "
                        "someone may be impersonating the bridge",
                    ) from None
                raise EnterFailed(str(exc)) from None
            except TimeoutError:
                raise EnterFailed(f"no answer joining {room.jid}") from None
            # Our own messages come back from the room; the fast path drops them unparsed.
            client.reflected_from.add(f"{room.jid}/{self.nick}")
            if not occupancy.owner:
                raise RoomRefused(
                    room.jid,
                    "not_owner",
                    f"the bridge is {occupancy.affiliation}, not the owner (someone else "
                    "created the room first?)",
                )
            await self._configure(room)

    async def reconfigure(self, room: RoomSpec) -> None:
        async with self._in_flight:
            await self._configure(room)

    async def _configure(self, room: RoomSpec) -> None:
        client = self.session.client
        options: dict[str, Any] = {"timeout": self.timeout, "ifrom": self.sender}
        try:
            fields = await muc.get_config(client, room.jid, **options)
            await muc.submit_config(client, room.jid, wanted_config(room), known=fields, **options)
            for member in room.members:
                await muc.set_affiliation(client, room.jid, member, "member", **options)
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
        if presence["type"] != "unavailable" or sender.resource != self.nick:
            return
        _aff, _role, _jid, codes = muc.occupant_item(presence.xml)
        if 303 in codes:
            return  # a nick change, not a departure
        self._events.room_left(str(sender.bare))

    def _on_message_error(self, message: Any) -> None:
        self._events.message_refused(
            str(message["from"].bare), message["id"], message["error"]["condition"]
        )
