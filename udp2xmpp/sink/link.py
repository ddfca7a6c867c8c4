"""What the room sink needs from an XMPP stream: the `Link` interface, and its verdicts.

`RoomSink` (queueing, pacing, confirmation, resend) is written against this
interface, as httpx's client is against its transport: `XmppLink` is the
real one (`udp2xmpp.sink.xmpp`, on `xmlrc.xmpp`), `MemoryLink`
(`udp2xmpp.sink.memory`) an in-memory one for unit tests of the logic.
"""

from __future__ import annotations

from typing import Literal, Protocol

from xmlrc.xmpp import PingResult

from ..route import RoomSpec

__all__ = [
    "ROOM_CONFIG",
    "EnterFailed",
    "Link",
    "LinkEvents",
    "Role",
    "RoomRefused",
    "wanted_config",
]

#: What the bridge is in a room: the publisher (it holds the publisher's nick), or,
#: in a bridge pair, standing by while the other bridge holds it.
Role = Literal["active", "standby"]

#: Room configuration the bridge asks for; fields a server lacks are skipped.
ROOM_CONFIG: dict[str, bool | int | str] = {
    "muc#roomconfig_persistentroom": True,
    "muc#roomconfig_moderatedroom": True,  # only the bridge (owner) has voice
    "muc#roomconfig_publicroom": True,
    "muc#roomconfig_enablearchiving": True,  # Prosody's XEP-0313 switch
    "muc#roomconfig_enablelogging": True,
    "muc#roomconfig_changesubject": False,
    "muc#roomconfig_allowinvites": False,
    "muc#roomconfig_historylength": 50,
    "muc#roomconfig_defaulthistorymessages": 0,
    # ejabberd's own fields: its default gives every newcomer voice, moderated or not.
    "members_by_default": False,
    "allow_voice_requests": False,
}


def wanted_config(room: RoomSpec) -> dict[str, bool | int | str]:
    """The configuration of `room` as the bridge requires it (pure)."""
    wanted = dict(ROOM_CONFIG)
    wanted["muc#roomconfig_roomdesc"] = room.description
    wanted["muc#roomconfig_roomname"] = room.title
    wanted["muc#roomconfig_membersonly"] = room.members_only
    wanted["muc#roomconfig_publicroom"] = not room.members_only  # keep a private one unlisted
    return wanted


def config_problems(room: RoomSpec, fields: dict[str, list[str]]) -> list[str]:
    """What in a room's configuration (as read back) breaks the bridge's promises (pure):
    anyone could speak, or a private wiki's room admits non-members."""

    def flag(var: str) -> bool | None:
        values = fields.get(var)
        if not values:
            return None
        return values[0].strip().lower() in ("1", "true")

    problems = []
    if flag("muc#roomconfig_moderatedroom") is not True:
        problems.append("not moderated (anyone could post changes)")
    if flag("members_by_default") is True:  # ejabberd: newcomers would get voice
        problems.append("newcomers get voice (members_by_default): anyone could post changes")
    if room.members_only and flag("muc#roomconfig_membersonly") is not True:
        problems.append("not members-only (a private wiki's changes would be public)")
    return problems


class RoomRefused(Exception):
    """The bridge will not publish in this room: it does not own it, it is not configured
    as required, or another occupant holds the bridge's nick (``reason``)."""

    def __init__(self, room: str, reason: str, detail: str) -> None:
        self.room = room
        self.reason = reason
        super().__init__(f"{room}: {detail}")


class EnterFailed(Exception):
    """Entering the room failed for now (timeout, the connection went): try again."""


class LinkEvents(Protocol):
    """What a link reports to the sink."""

    def link_online(self, resumed: bool) -> None: ...
    def link_offline(self) -> None: ...
    def room_left(self, room: str) -> None: ...
    def message_refused(self, room: str, message_id: str, condition: str) -> None: ...
    # A bridge pair, in a room where this bridge stands by:
    def publisher_left(self, room: str) -> None: ...
    def published_by_peer(self, room: str, stable_ids: list[str]) -> None: ...


class Link(Protocol):
    """One stream as the room sink sees it."""

    @property
    def online(self) -> bool: ...
    @property
    def sender(self) -> str | None: ...
    def bind(self, events: LinkEvents) -> None: ...
    async def wait_online(self) -> None: ...
    def delay(self, size: int) -> float: ...
    def write(self, texts: list[str]) -> None: ...
    async def enter(self, room: RoomSpec) -> Role: ...
    async def take_over(self, room: RoomSpec) -> bool: ...
    async def published_recently(self, room: str, limit: int) -> list[str]: ...
    async def publisher_answers(self, room: str, timeout: float) -> bool: ...
    async def fence(self, room: str) -> bool: ...
    async def reconfigure(self, room: RoomSpec) -> None: ...
    async def self_ping(self, room: str) -> PingResult: ...
    def leave(self, room: str) -> None: ...
    def drop(self, reason: str) -> None: ...
    async def server_answers(self) -> bool: ...
